/* Shared between the settings files (settings*.c); not a public header.
 *
 *   settings.c         built-in and derived defaults, freeing, lookups
 *   settings_read.c    the file: top level, kme_links, kme_simulator
 *   settings_common.c  what every protocol section has: listeners,
 *                      upstream, connection limits; value checks
 *   settings_smtp.c    the smtp section
 *   settings_imap.c    the imap section */
#ifndef QUMAIL_SETTINGS_INTERNAL_H
#define QUMAIL_SETTINGS_INTERNAL_H

#include "settings.h"

#define SEC 1000ull
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

/* The reading context of one file. */
struct qumail_rd {
    struct qcfg *doc;
    struct qumail_config *cfg;
    bool oom;
};

/* Built-in defaults; with_listener adds the default SMTP listener (a file
 * that lists its own listeners replaces it). Call qumail_config__finish()
 * once the file has been read. */
struct qumail_config *qumail_config__new_defaults(bool with_listener);
/* Fills the defaults that depend on other settings (paths under
 * state_dir, the upstream ports, server_name). -1 when out of memory. */
int qumail_config__finish(struct qumail_config *cfg);
char *qumail_config__dup(bool *oom, const char *s);
bool qumail_config__is_loopback(const char *address);
void qumail_config__free_link(struct qumail_kme_link *link);
void qumail_config__free_listener(struct qumail_listener *l);
void qumail_config__free_upstream(struct qumail_upstream *u);

/* Value checks. */
bool qumail_config__numeric_ip(const char *s);
bool qumail_config__valid_host(const char *s);
bool qumail_config__valid_name(const char *s);
/* An integer in [min, max] stored as uint32_t. */
void qumail_config__u32(qcfg_node *n, int64_t min, int64_t max, uint32_t *out);
/* "'key' is required <why>" at the member (or at obj when absent). */
void qumail_config__need(struct qumail_rd *r, qcfg_node *obj, const char *key,
                         const char *val, const char *why);

/* Reads "listeners" of a protocol section (replacing the defaults when the
 * key is present). */
void qumail_config__read_listeners(struct qumail_rd *r, qcfg_node *section,
                                   struct qumail_listener **listeners,
                                   size_t *n_listeners);
/* Reads an "upstream" object; tls_names maps the accepted "tls" strings
 * (NULL-terminated) to tls_values; with_trust_id accepts "trust_id". The
 * caller calls qcfg_done(o). */
void qumail_config__read_upstream(struct qumail_rd *r, qcfg_node *o,
                                  struct qumail_upstream *u,
                                  const char *const *tls_names,
                                  const enum qumail_upstream_tls *tls_values,
                                  bool with_trust_id);
/* Reads max_connections, max_connections_per_address and listen_backlog
 * from a "limits" object. */
void qumail_config__read_conn_limits(struct qumail_rd *r, qcfg_node *limits,
                                     struct qumail_conn_limits *l);

void qumail_config__read_smtp(struct qumail_rd *r, qcfg_node *smtp);
void qumail_config__read_imap(struct qumail_rd *r, qcfg_node *imap);
/* settings_admin.c: the admin section (present: enabled). */
void qumail_config__read_admin(struct qumail_rd *r, qcfg_node *admin);
/* The imap section's defaults (enabled false, no listeners yet). */
void qumail_config__imap_defaults(struct qumail_config *c, bool *oom);
/* Adds the default IMAP listener when the section was given without
 * "listeners". */
void qumail_config__imap_finish(struct qumail_config *c, bool *oom);

extern const char *const qumail_config__listen_tls_names[];
extern const char *const qumail_config__upstream_tls_names[];
extern const char *const qumail_config__mode_names[];
extern const char *const qumail_config__log_level_names[];

#endif
