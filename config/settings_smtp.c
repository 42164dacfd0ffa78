/* The smtp section of the daemon configuration (config/README.md). */
#include <stdlib.h>

#include "settings_internal.h"

static const char *const smtp_upstream_tls_names[] = {
    "none", "starttls", "starttls-opportunistic", "implicit", NULL};
static const enum qumail_upstream_tls smtp_upstream_tls_values[] = {
    QUMAIL_UPSTREAM_TLS_NONE, QUMAIL_UPSTREAM_TLS_STARTTLS,
    QUMAIL_UPSTREAM_TLS_STARTTLS_OPPORTUNISTIC, QUMAIL_UPSTREAM_TLS_IMPLICIT};

static void read_limits(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_smtp_limits *l = &r->cfg->smtp.limits;
    qumail_config__read_conn_limits(r, o, &l->conn);
    qcfg_size(qcfg_member(o, "max_message_size", 0), 1024, 1ull << 32, &l->max_message_size);
    qumail_config__u32(qcfg_member(o, "max_recipients", 0), 1, 100000, &l->max_recipients);
    qumail_config__u32(qcfg_member(o, "max_line_length", 0), 1000, 1 << 20,
                       &l->max_line_length);
    qcfg_duration(qcfg_member(o, "command_timeout", 0), 1 * SEC, 1 * HOUR,
                  &l->command_timeout_ms);
    qcfg_duration(qcfg_member(o, "data_timeout", 0), 1 * SEC, 1 * HOUR, &l->data_timeout_ms);
    qcfg_done(o);
}

static void read_trusted(struct qumail_rd *r, qcfg_node *arr)
{
    struct qumail_smtp *s = &r->cfg->smtp;
    size_t n = qcfg_array_len(arr);
    if (n > 1024) {
        qcfg_error_at(r->doc, arr, "at most 1024 networks");
        return;
    }
    free(s->trusted_networks);
    s->n_trusted_networks = 0;
    s->trusted_networks = calloc(n ? n : 1, sizeof(*s->trusted_networks));
    if (!s->trusted_networks) {
        r->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char *text = NULL;
        qcfg_node *e = qcfg_array_at(arr, i);
        if (qcfg_string(e, QCFG_NONEMPTY, &text) != 1)
            continue;
        const char *why;
        if (qumail_cidr_parse(text, &s->trusted_networks[s->n_trusted_networks], &why) < 0)
            qcfg_error_at(r->doc, e, "'%s': %s", text, why);
        else
            s->n_trusted_networks++;
        free(text);
    }
}

void qumail_config__read_smtp(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_smtp *s = &r->cfg->smtp;
    int mode = s->mode;
    if (qcfg_enum(qcfg_member(o, "mode", 0), qumail_config__mode_names, &mode) == 1)
        s->mode = (enum qumail_smtp_mode)mode;
    qcfg_node *hn = qcfg_member(o, "hostname", 0);
    if (qcfg_string(hn, QCFG_NONEMPTY, &s->hostname) == 1 &&
        !qumail_config__valid_host(s->hostname))
        qcfg_error_at(r->doc, hn, "'%s' is not a host name", s->hostname);
    qumail_config__read_listeners(r, o, &s->listeners, &s->n_listeners);
    qcfg_node *up = qcfg_object(qcfg_member(o, "upstream", 0));
    if (up) {
        qumail_config__read_upstream(r, up, &s->upstream, smtp_upstream_tls_names,
                                     smtp_upstream_tls_values, false);
        qcfg_done(up);
    }
    qcfg_node *tn = qcfg_array(qcfg_member(o, "trusted_networks", 0));
    if (tn)
        read_trusted(r, tn);
    qcfg_node *lim = qcfg_object(qcfg_member(o, "limits", 0));
    if (lim)
        read_limits(r, lim);
    qcfg_bool(qcfg_member(o, "trace_header", 0), &s->trace_header);
    qcfg_done(o);
}
