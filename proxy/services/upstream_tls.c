/* See upstream_tls.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "upstream_tls.h"

net_tls *services_upstream_tls_new(const struct qumail_upstream *u, const char *what,
                                   const char *verify_key, char **error_r)
{
    struct net_tls_config tc = {
        .server = false,
        .cert_file = u->client_cert_file,
        .key_file = u->client_key_file,
        .ca_file = u->ca_file,
        .verify_peer = u->verify,
    };
    char *err = NULL;
    net_tls *tls = net_tls_new(&tc, &err);
    if (!tls) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s TLS: %s", what, err ? err : "TLS setup failed");
        free(err);
        *error_r = strdup(msg);
        return NULL;
    }
    if (!u->verify)
        qlog_warn("%s TLS certificate verification is OFF (%s)", what, verify_key);
    return tls;
}
