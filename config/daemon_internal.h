/* Shared between daemon.c and daemon_read.c; not a public header. */
#ifndef QUMAIL_CONFIG_DAEMON_INTERNAL_H
#define QUMAIL_CONFIG_DAEMON_INTERNAL_H

#include "config.h"

/* Built-in defaults; with_listener adds the default SMTP listener (a file
 * that lists its own listeners replaces it). Call qumail_config__finish()
 * once the file has been read. */
struct qumail_config *qumail_config__new_defaults(bool with_listener);
/* Fills the defaults that depend on other settings (paths under
 * state_dir, the upstream port, server_name). -1 when out of memory. */
int qumail_config__finish(struct qumail_config *cfg);
char *qumail_config__dup(struct qumail_config *cfg, bool *oom, const char *s);
bool qumail_config__is_loopback(const char *address);
void qumail_config__free_link(struct qumail_kme_link *link);

extern const char *const qumail_config__listen_tls_names[];
extern const char *const qumail_config__upstream_tls_names[];
extern const char *const qumail_config__mode_names[];
extern const char *const qumail_config__log_level_names[];

#endif
