/* proxy_daemon: the qumail proxy process.
 *
 * Owns the loop's long-lived parts: the SMTP listeners of the
 * configuration (plain, STARTTLS, implicit TLS), the TLS contexts (listener
 * certificates, upstream verification and client certificate), one
 * kme_client per configured KME link, the embedded KME simulator when the
 * configuration enables it, the policy store, and the live sessions.
 * Signals: SIGHUP re-reads the configuration and the policy file
 * (listeners reconciled, new settings for new sessions; sessions in flight
 * keep what they started with; KME links need a restart); SIGINT/SIGTERM
 * stop accepting, close the sessions and let the loop end.
 *
 * The per-message pipeline (pipeline.c): recipients grouped by policy and
 * key link, Bcc recipients each in a copy of their own, keys fetched per
 * copy (exactly the bits needed, never reused), encryption on the thread
 * pool, then the upstream transactions through the session. */
#ifndef QUMAIL_PROXY_DAEMON_H
#define QUMAIL_PROXY_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "settings.h"

typedef struct proxy_daemon proxy_daemon;

/* Sets everything up on loop (binds listeners, loads the policy, starts the
 * simulator). cfg->file is re-read on SIGHUP. NULL + *error_r (caller
 * frees) on failure. cfg must outlive the daemon; configurations loaded by
 * reloads are the daemon's own. */
proxy_daemon *proxy_daemon_new(uv_loop_t *loop, const struct qumail_config *cfg,
                               char **error_r);
/* Port of the i-th listener (useful with port 0), 0 when out of range. */
uint16_t proxy_daemon_listener_port(const proxy_daemon *d, size_t i);
/* Stops: closes listeners, sessions, KME clients, simulator, signal
 * handles. The loop then ends by itself. */
void proxy_daemon_stop(proxy_daemon *d);
/* Frees after the loop has ended. Clears *d. */
void proxy_daemon_free(proxy_daemon **d);
/* Reloads the configuration and policy now (what SIGHUP does). 0, or -1
 * when refused (logged; nothing changed). */
int proxy_daemon_reload(proxy_daemon *d);

#endif
