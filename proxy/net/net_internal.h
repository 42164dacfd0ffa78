/* Shared between the net module's own files; not for other modules. */
#ifndef QUMAIL_NET_INTERNAL_H
#define QUMAIL_NET_INTERNAL_H

#include <openssl/ssl.h>

#include "net.h"

SSL_CTX *net_tls_ctx(const net_tls *tls);
bool net_tls_is_server(const net_tls *tls);
bool net_tls_verifies(const net_tls *tls);

/* Formats prefix followed by OpenSSL's queued errors into buf. */
void net_ssl_errors(char *buf, size_t buflen, const char *prefix);

/* Wraps a freshly accepted TCP handle owner (listener side). */
net_conn *net_conn_new_accepted(uv_loop_t *loop, uv_stream_t *server, int *err_r);

#endif
