/* policy module internals shared by its files; not a public header. */
#ifndef QUMAIL_POLICY_INTERNAL_H
#define QUMAIL_POLICY_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* ---- string arena: every string of a snapshot, freed at once ---- */
struct pol_chunk;
struct pol_arena {
    struct pol_chunk *head;
};
char *pol_arena_strndup(struct pol_arena *a, const char *s, size_t n);
void pol_arena_free(struct pol_arena *a);

/* ---- string -> pointer hash table (open addressing, linear probing) ----
 * Keys are borrowed (they live in the arena); built once, then read-only. */
struct pol_slot {
    const char *key;
    const void *val;
    uint64_t hash;
};
struct pol_table {
    struct pol_slot *slots;
    size_t cap; /* power of two, 0 when empty */
    size_t n;
};
uint64_t pol_hash(const char *s, size_t n);
/* Sizes the table for n keys (load <= 1/2). -1 when out of memory. */
int pol_table_init(struct pol_table *t, size_t n);
/* Inserts; returns the value already stored under key (nothing inserted)
 * or NULL when inserted. The table must have been sized for it. */
const void *pol_table_put(struct pol_table *t, const char *key, const void *val);
const void *pol_table_get(const struct pol_table *t, const char *key, size_t n);
void pol_table_free(struct pol_table *t);

/* One side's rules (recipients or senders) indexed by pattern kind. */
struct pol_index {
    struct pol_table address, domain, suffix;
    const void *def; /* the "*" rule or NULL */
};

struct policy {
    atomic_uint refs;
    char *source;
    struct pol_arena arena;
    struct policy_rule *rules;
    size_t n_rules;
    struct policy_sender_rule *senders;
    size_t n_senders;
    struct pol_index rcpt, sender;
    struct policy_rule builtin; /* no match: refuse */
};

/* Parses text into a new snapshot (refs = 1). Errors are appended to
 * *error_r as for policy_load_buffer. */
int pol_parse(const char *name, const char *text, size_t len,
              const char *const *links, policy **pol_r, char **error_r);
void pol_destroy(policy *pol);

#endif
