/* The admin section: the operator's HTTP listener (proxy/admin). */
#include <stdlib.h>
#include <string.h>

#include "settings_internal.h"

void qumail_config__read_admin(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_admin *a = &r->cfg->admin;
    a->enabled = true;
    a->port = 9587;
    a->address = qumail_config__dup(&r->oom, "127.0.0.1");
    qcfg_node *addr = qcfg_member(o, "address", 0);
    if (qcfg_string(addr, QCFG_NONEMPTY, &a->address) == 1 &&
        !qumail_config__numeric_ip(a->address))
        qcfg_error_at(r->doc, addr, "'%s' is not a numeric IP address", a->address);
    qcfg_port(qcfg_member(o, "port", 0), QCFG_ZERO_OK, &a->port);
    qcfg_node *host = qcfg_member(o, "mail_host", 0);
    if (qcfg_string(host, QCFG_NONEMPTY, &a->mail_host) == 1 &&
        !qumail_config__valid_host(a->mail_host))
        qcfg_error_at(r->doc, host, "'%s' is not a host name or IP address", a->mail_host);
    qcfg_done(o);
}
