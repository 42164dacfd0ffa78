/* Policy snapshots: loading, lookups, references, the reloadable store. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define MAX_ADDRESS 512 /* longer addresses match only the "*" rule */

const char *policy_strerror(int code)
{
    switch (code) {
    case POLICY_OK: return "ok";
    case POLICY_EIO: return "cannot read policy file";
    case POLICY_EINVALID: return "invalid policy";
    case POLICY_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

int policy_load_buffer(const char *name, const char *text, size_t len,
                       const char *const *links, policy **pol_r, char **error_r)
{
    return pol_parse(name, text, len, links, pol_r, error_r);
}

int policy_load_file(const char *path, const char *const *links, policy **pol_r,
                     char **error_r)
{
    *pol_r = NULL;
    if (error_r)
        *error_r = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;
    const char *why = NULL;
    if (!f)
        why = strerror(errno);
    else if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((uintmax_t)st.st_size > POLICY_MAX_FILE_SIZE)
        why = "file too large";
    if (why || !f) {
        if (error_r && asprintf(error_r, "%s: %s", path, why ? why : "cannot open") < 0)
            *error_r = NULL;
        if (f)
            fclose(f);
        return POLICY_EIO;
    }
    size_t cap = (size_t)st.st_size + 1;
    char *text = malloc(cap);
    if (!text) {
        fclose(f);
        return POLICY_ENOMEM;
    }
    size_t len = fread(text, 1, cap, f);
    bool err = ferror(f);
    fclose(f);
    if (err || len == cap) {
        free(text);
        if (error_r && asprintf(error_r, "%s: %s", path,
                                err ? "read error" : "file changed while reading") < 0)
            *error_r = NULL;
        return POLICY_EIO;
    }
    int rc = pol_parse(path, text, len, links, pol_r, error_r);
    free(text);
    return rc;
}

void pol_destroy(policy *pol)
{
    if (!pol)
        return;
    pol_table_free(&pol->rcpt.address);
    pol_table_free(&pol->rcpt.domain);
    pol_table_free(&pol->rcpt.suffix);
    pol_table_free(&pol->sender.address);
    pol_table_free(&pol->sender.domain);
    pol_table_free(&pol->sender.suffix);
    free(pol->rules);
    free(pol->senders);
    pol_arena_free(&pol->arena);
    free(pol->source);
    free(pol);
}

policy *policy_ref(policy *pol)
{
    if (pol)
        atomic_fetch_add_explicit(&pol->refs, 1, memory_order_relaxed);
    return pol;
}

void policy_unref(policy **polp)
{
    policy *pol = polp ? *polp : NULL;
    if (!pol)
        return;
    *polp = NULL;
    if (atomic_fetch_sub_explicit(&pol->refs, 1, memory_order_acq_rel) == 1)
        pol_destroy(pol);
}

/* Most specific first: address, domain, longest *.suffix, "*". */
static const void *lookup(const struct pol_index *ix, const char *address)
{
    char buf[MAX_ADDRESS + 1];
    size_t n = strlen(address);
    if (n > MAX_ADDRESS)
        return ix->def;
    for (size_t i = 0; i < n; i++) {
        char c = address[i];
        buf[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    if (n > 1 && buf[n - 1] == '.')
        n--;
    buf[n] = '\0';
    const void *hit = pol_table_get(&ix->address, buf, n);
    if (hit)
        return hit;
    const char *at = strrchr(buf, '@');
    if (!at)
        return ix->def;
    const char *dom = at + 1;
    size_t dlen = (size_t)(buf + n - dom);
    if ((hit = pol_table_get(&ix->domain, dom, dlen)))
        return hit;
    /* a.b.example.org: try *.b.example.org, *.example.org, *.org */
    for (const char *d = dom; (d = memchr(d, '.', (size_t)(buf + n - d)));) {
        d++;
        if ((hit = pol_table_get(&ix->suffix, d, (size_t)(buf + n - d))))
            return hit;
    }
    return ix->def;
}

const struct policy_rule *policy_lookup(const policy *pol, const char *address)
{
    const struct policy_rule *r = lookup(&pol->rcpt, address ? address : "");
    return r ? r : &pol->builtin;
}

const struct policy_sender_rule *policy_lookup_sender(const policy *pol, const char *address)
{
    return lookup(&pol->sender, address ? address : "");
}

bool policy_rule_protects(const struct policy_rule *rule)
{
    return rule->action == POLICY_REQUIRE || rule->action == POLICY_PREFER;
}

bool policy_rule_uses_otp(const struct policy_rule *rule, uint64_t message_size)
{
    return rule->level == POLICY_LEVEL_OTP ||
           (rule->level == POLICY_LEVEL_AUTO && message_size <= rule->otp_max);
}

const char *policy_source(const policy *pol)
{
    return pol->source;
}

size_t policy_rule_count(const policy *pol)
{
    return pol->n_rules;
}

const struct policy_rule *policy_rule_at(const policy *pol, size_t i)
{
    return i < pol->n_rules ? &pol->rules[i] : NULL;
}

size_t policy_sender_rule_count(const policy *pol)
{
    return pol->n_senders;
}

const char *policy_action_name(enum policy_action a)
{
    static const char *const n[] = {"require", "prefer", "none", "refuse"};
    return (unsigned)a < 4 ? n[a] : "?";
}

const char *policy_level_name(enum policy_level l)
{
    static const char *const n[] = {"aes", "otp", "auto"};
    return (unsigned)l < 3 ? n[l] : "?";
}

const char *policy_on_no_key_name(enum policy_on_no_key o)
{
    static const char *const n[] = {"defer", "refuse"};
    return (unsigned)o < 2 ? n[o] : "?";
}

const char *policy_kind_name(enum policy_kind k)
{
    static const char *const n[] = {"address", "domain", "suffix", "default", "builtin"};
    return (unsigned)k < 5 ? n[k] : "?";
}

/* ---- the store ---- */

struct policy_store {
    pthread_mutex_t lock;
    policy *current;
};

policy_store *policy_store_new(policy *initial)
{
    policy_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->current = initial;
    return s;
}

void policy_store_free(policy_store **storep)
{
    policy_store *s = storep ? *storep : NULL;
    if (!s)
        return;
    *storep = NULL;
    policy_unref(&s->current);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

policy *policy_store_get(policy_store *s)
{
    pthread_mutex_lock(&s->lock);
    policy *p = policy_ref(s->current);
    pthread_mutex_unlock(&s->lock);
    return p;
}

void policy_store_set(policy_store *s, policy *pol)
{
    pthread_mutex_lock(&s->lock);
    policy *old = s->current;
    s->current = pol;
    pthread_mutex_unlock(&s->lock);
    policy_unref(&old); /* sessions holding it keep it alive */
}

int policy_store_reload(policy_store *s, const char *path, const char *const *links,
                        char **error_r)
{
    policy *fresh = NULL;
    int rc = policy_load_file(path, links, &fresh, error_r);
    if (rc < 0)
        return rc; /* the current snapshot stays in force */
    policy_store_set(s, fresh);
    return 0;
}
