/* service_env: what `qumail proxy` does for its service manager and its files
 * before and while it serves (no libsystemd: the protocol is one datagram).
 */
#ifndef QUMAIL_SERVICE_ENV_H
#define QUMAIL_SERVICE_ENV_H

/* Creates the state folder (and missing parents) with mode 0700 when it
 * does not exist, so a first start needs no manual mkdir; an existing one
 * is left as it is. Returns 0, or -1 with *error_r (caller frees). */
int service_prepare_state_dir(const char *path, char **error_r);

/* sd_notify(3) without libsystemd: sends `state` ("READY=1",
 * "STOPPING=1", "STATUS=...") as one datagram to $NOTIFY_SOCKET (a path or
 * an abstract "@name"). Returns 1 sent, 0 when not run by systemd with
 * Type=notify (no NOTIFY_SOCKET), -1 on error. */
int service_notify(const char *state);

#endif
