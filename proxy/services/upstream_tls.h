/* The TLS client context towards a protocol's upstream server, made from
 * its upstream settings (smtp.upstream, imap.upstream) once per
 * configuration generation by smtp_service.c and imap_service.c. */
#ifndef QUMAIL_SERVICES_UPSTREAM_TLS_H
#define QUMAIL_SERVICES_UPSTREAM_TLS_H

#include "net.h"
#include "settings.h"

/* A client context with u's client certificate, CA file and verification.
 * what names the upstream in messages ("upstream", "imap upstream"),
 * verify_key the setting that turns verification off (logged as a
 * warning when it is). NULL on failure with *error_r = "<what> TLS: why"
 * (malloc'ed, the caller frees it). */
net_tls *services_upstream_tls_new(const struct qumail_upstream *u, const char *what,
                                   const char *verify_key, char **error_r);

#endif
