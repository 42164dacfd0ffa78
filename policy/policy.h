/* policy: the per-recipient protection table (and per-sender key links).
 *
 * A policy file is a line-oriented table, like a Postfix lookup table:
 *
 *     # pattern            settings (key=value words)
 *     alice@example.org    action=require level=otp link=site-b slave_sae=SAE_B
 *     example.org          action=require link=site-b slave_sae=SAE_B
 *     *.example.org        action=prefer  link=site-b slave_sae=SAE_B
 *     *                    action=none
 *     sender *.example.org link=site-b master_sae=SAE_B
 *
 * Most specific match wins: exact address > exact domain > longest
 * "*.suffix" > "*". Settings a rule leaves out come from the "*" rule, then
 * from the built-in defaults. A recipient no rule matches (and no "*"
 * rule) is refused. Every setting and default: policy/README.md.
 *
 * A loaded policy is an immutable snapshot with a reference count: the
 * daemon keeps the current one in a policy_store; each SMTP session takes
 * a reference for its lifetime, so a reload (SIGHUP) swaps the store's
 * snapshot while sessions in flight keep theirs. Lookups cost O(number of
 * labels in the domain) hash probes, independent of the number of rules.
 *
 * Thread-safety: snapshots are read-only and may be shared by threads;
 * references are atomic; a store's get/replace are mutually exclusive. */
#ifndef QUMAIL_POLICY_H
#define QUMAIL_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    POLICY_OK = 0,
    POLICY_EIO = -1,      /* file could not be read (or is too large) */
    POLICY_EINVALID = -2, /* one or more errors in the file */
    POLICY_ENOMEM = -3
};
const char *policy_strerror(int code);

enum policy_action {
    POLICY_REQUIRE = 0, /* "require": protect, or do not send (on_no_key) */
    POLICY_PREFER,      /* "prefer": protect when keys are available,
                           else send as it is */
    POLICY_NONE,        /* "none": never protect */
    POLICY_REFUSE       /* "refuse": refuse the recipient (550 at RCPT) */
};

enum policy_level {
    POLICY_LEVEL_AES = 0, /* "aes": AES-256-GCM, 256 key bits per message */
    POLICY_LEVEL_OTP,     /* "otp": one-time pad, key bits = message bits */
    POLICY_LEVEL_AUTO     /* "auto": OTP up to otp_max bytes, AES above */
};

enum policy_on_no_key {
    POLICY_DEFER = 0, /* "defer": 4xx, the client retries later */
    POLICY_FAIL       /* "refuse": 5xx, permanent */
};

enum policy_kind {
    POLICY_KIND_ADDRESS = 0, /* user@example.org */
    POLICY_KIND_DOMAIN,      /* example.org */
    POLICY_KIND_SUFFIX,      /* *.example.org (subdomains only) */
    POLICY_KIND_DEFAULT,     /* * */
    POLICY_KIND_BUILTIN      /* no rule matched and there is no "*" */
};

/* The resolved settings of one recipient rule (inheritance applied).
 * Owned by its snapshot; valid while a reference to it is held. */
struct policy_rule {
    const char *pattern;     /* as written, lower-cased; "" for BUILTIN */
    enum policy_kind kind;
    unsigned line;           /* line in the policy file; 0 for BUILTIN */
    enum policy_action action;
    enum policy_level level;
    uint64_t otp_max;        /* bytes; for level auto */
    const char *link;        /* kme_links name; NULL when not protecting */
    const char *slave_sae;   /* SAE ID of the receiving side (enc_keys) */
    bool protect_subject;    /* subject=protect (true) or keep */
    const char *placeholder; /* visible Subject when protected */
    enum policy_on_no_key on_no_key;
};

/* A sender rule: which link and master SAE decrypt mail from a sender. */
struct policy_sender_rule {
    const char *pattern;
    enum policy_kind kind;
    unsigned line;
    const char *link;
    const char *master_sae;  /* SAE ID of the sending side (dec_keys) */
};

typedef struct policy policy;

/* Limits on input. */
#define POLICY_MAX_FILE_SIZE ((size_t)64 << 20)
#define POLICY_MAX_LINE 8192   /* bytes per physical line */
#define POLICY_MAX_ERRORS 100  /* further errors are counted, not listed */

/* Loads a policy file. links: the names of the configured KME links
 * (NULL-terminated); every link= must be one of them, and when there is
 * exactly one it is the default link. links NULL: link names are not
 * checked and there is no default link.
 * On failure returns a negative code, *pol_r is NULL and *error_r (caller
 * frees) lists every problem, one "FILE:LINE: message" per line. */
int policy_load_file(const char *path, const char *const *links,
                     policy **pol_r, char **error_r);
/* The same for text in memory; name stands for the file in messages. */
int policy_load_buffer(const char *name, const char *text, size_t len,
                       const char *const *links, policy **pol_r,
                       char **error_r);

/* References. policy_unref clears *pol and frees the snapshot with the
 * last reference. */
policy *policy_ref(policy *pol);
void policy_unref(policy **pol);

/* The rule for a recipient address ("user@example.org"; matching ignores
 * case and a trailing dot of the domain). Never NULL: when nothing matches
 * it is the built-in rule (kind BUILTIN, action refuse). */
const struct policy_rule *policy_lookup(const policy *pol, const char *address);
/* The rule for a sender address, or NULL when no sender rule matches. */
const struct policy_sender_rule *policy_lookup_sender(const policy *pol,
                                                      const char *address);

/* Protecting is wanted: action require or prefer. */
bool policy_rule_protects(const struct policy_rule *rule);
/* OTP for this message size? (level otp, or auto with size <= otp_max) */
bool policy_rule_uses_otp(const struct policy_rule *rule, uint64_t message_size);

const char *policy_source(const policy *pol);   /* file name */
size_t policy_rule_count(const policy *pol);    /* recipient rules */
/* The i-th recipient rule in file order (i < policy_rule_count), resolved
 * like a lookup result: for listing which links and SAEs are in use. */
const struct policy_rule *policy_rule_at(const policy *pol, size_t i);
size_t policy_sender_rule_count(const policy *pol);

const char *policy_action_name(enum policy_action a);
const char *policy_level_name(enum policy_level l);
const char *policy_on_no_key_name(enum policy_on_no_key o);
const char *policy_kind_name(enum policy_kind k);

/* ---- the daemon's current policy ---- */

typedef struct policy_store policy_store;

/* Takes over the caller's reference to `initial` (not NULL). */
policy_store *policy_store_new(policy *initial);
void policy_store_free(policy_store **store);
/* A new reference to the current snapshot (release with policy_unref). */
policy *policy_store_get(policy_store *store);
/* Loads path; on success it becomes current (sessions holding the old one
 * keep it) and 0 is returned. On failure the current one stays in force
 * and the reason comes back as for policy_load_file. */
int policy_store_reload(policy_store *store, const char *path,
                        const char *const *links, char **error_r);
/* Replaces the current snapshot, taking over the caller's reference. */
void policy_store_set(policy_store *store, policy *pol);

#endif
