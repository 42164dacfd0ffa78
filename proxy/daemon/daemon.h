/* proxy_daemon: the qumail proxy process.
 *
 * Owns the loop's long-lived parts: the SMTP listeners of the
 * configuration (plain, STARTTLS, implicit TLS), the TLS contexts (listener
 * certificates, upstream verification and client certificate), one
 * kme_client per configured KME link, the embedded KME simulator when the
 * configuration enables it, the policy store, and the live sessions.
 * Signals: SIGHUP reloads the policy file (sessions in flight keep the
 * snapshot they started with); SIGINT/SIGTERM stop accepting, close the
 * sessions and let the loop end.
 *
 * The per-message pipeline (pipeline.c): recipients grouped by policy and
 * key link, Bcc recipients each in a copy of their own, keys fetched per
 * copy (exactly the bits needed, never reused), encryption on the thread
 * pool, then the upstream transactions through the session. */
#ifndef QUMAIL_PROXY_DAEMON_H
#define QUMAIL_PROXY_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct proxy_daemon proxy_daemon;

/* Sets everything up on loop (binds listeners, loads the policy, starts the
 * simulator). config_path is kept for SIGHUP. NULL + *error_r (caller
 * frees) on failure. The configuration must outlive the daemon. */
proxy_daemon *proxy_daemon_new(uv_loop_t *loop, const struct qumail_config *cfg,
                               char **error_r);
/* Port of the i-th listener (useful with port 0), 0 when out of range. */
uint16_t proxy_daemon_listener_port(const proxy_daemon *d, size_t i);
/* Stops: closes listeners, sessions, KME clients, simulator, signal
 * handles. The loop then ends by itself. */
void proxy_daemon_stop(proxy_daemon *d);
/* Frees after the loop has ended. Clears *d. */
void proxy_daemon_free(proxy_daemon **d);
/* Reloads the policy file now (what SIGHUP does). 0 or -1 (logged). */
int proxy_daemon_reload(proxy_daemon *d);

#endif
