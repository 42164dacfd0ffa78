/* protect_mailboxes: configured names, SPECIAL-USE attributes learned from
 * LIST, "all". See mailboxes.h. */
#include "mailboxes.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 6154 attributes, one bit each. */
static const char *const use_names[] = {
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
};
#define N_USES (sizeof(use_names) / sizeof(use_names[0]))

struct protect_mailboxes_config {
    bool all;
    unsigned uses;   /* bit i: use_names[i] protects */
    char **names;    /* owned */
    size_t n_names;
};

struct learned {
    char *name;      /* owned */
    unsigned uses;
};

struct protect_mailboxes {
    const struct protect_mailboxes_config *cfg; /* borrowed */
    struct learned *learned;                   /* owned */
    size_t n_learned, cap_learned;
};

static int use_lookup(const char *s, size_t len)
{
    for (size_t i = 0; i < N_USES; i++)
        if (strlen(use_names[i]) == len && strncasecmp(use_names[i], s, len) == 0)
            return (int)i;
    return -1;
}

/* "INBOX" is case-insensitive as a whole name or as the first level. */
static bool names_equal(const char *a, const char *b)
{
    if (strncasecmp(a, "INBOX", 5) == 0 && strncasecmp(b, "INBOX", 5) == 0) {
        char ca = a[5], cb = b[5];
        bool inbox_a = ca == '\0' || ca == '/' || ca == '.';
        bool inbox_b = cb == '\0' || cb == '/' || cb == '.';
        if (inbox_a && inbox_b)
            return strcmp(a + 5, b + 5) == 0;
    }
    return strcmp(a, b) == 0;
}

__attribute__((format(printf, 2, 3)))
static int set_error(char **error_r, const char *fmt, ...)
{
    if (error_r != NULL) {
        va_list ap;
        va_start(ap, fmt);
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) < 0)
            s = NULL;
        va_end(ap);
        *error_r = s;
    }
    return PROTECT_MAILBOXES_EINVAL;
}

static int config_add(struct protect_mailboxes_config *c, const char *s, size_t len,
                      char **error_r)
{
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0;
    if (len > PROTECT_MAILBOXES_MAX_NAME)
        return set_error(error_r, "mailbox entry longer than %d bytes", PROTECT_MAILBOXES_MAX_NAME);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return set_error(error_r, "control character in mailbox entry");
    }
    if (len == 3 && strncasecmp(s, "all", 3) == 0) {
        c->all = true;
        return 0;
    }
    if (s[0] == '\\') {
        int u = use_lookup(s, len);
        if (u < 0) {
            return set_error(error_r,
                             "unknown SPECIAL-USE attribute \"%.*s\" (RFC 6154: \\All "
                             "\\Archive \\Drafts \\Flagged \\Junk \\Sent \\Trash)",
                             (int)len, s);
        }
        c->uses |= 1u << u;
        return 0;
    }
    if (c->n_names >= PROTECT_MAILBOXES_MAX_ENTRIES)
        return set_error(error_r, "more than %d mailbox entries", PROTECT_MAILBOXES_MAX_ENTRIES);
    char **nn = realloc(c->names, (c->n_names + 1) * sizeof(*nn));
    if (nn == NULL)
        return PROTECT_MAILBOXES_ENOMEM;
    c->names = nn;
    char *copy = strndup(s, len);
    if (copy == NULL)
        return PROTECT_MAILBOXES_ENOMEM;
    c->names[c->n_names++] = copy;
    return 0;
}

int protect_mailboxes_config_parse(const char *const *entries, size_t n,
                                   struct protect_mailboxes_config **cfg_r, char **error_r)
{
    static const char *const defaults[] = {PROTECT_MAILBOXES_DEFAULT};
    if (cfg_r == NULL)
        return PROTECT_MAILBOXES_EINVAL;
    *cfg_r = NULL;
    if (entries == NULL || n == 0) {
        entries = defaults;
        n = 1;
    }
    struct protect_mailboxes_config *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return PROTECT_MAILBOXES_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *e = entries[i] != NULL ? entries[i] : "";
        /* A comma-separated list in one string; names with commas are
         * rare enough that the list form wins (documented). */
        while (true) {
            const char *comma = strchr(e, ',');
            size_t len = comma != NULL ? (size_t)(comma - e) : strlen(e);
            int r = config_add(c, e, len, error_r);
            if (r < 0) {
                protect_mailboxes_config_free(&c);
                return r;
            }
            if (comma == NULL)
                break;
            e = comma + 1;
        }
    }
    *cfg_r = c;
    return 0;
}

void protect_mailboxes_config_free(struct protect_mailboxes_config **cfg)
{
    if (cfg == NULL || *cfg == NULL)
        return;
    for (size_t i = 0; i < (*cfg)->n_names; i++)
        free((*cfg)->names[i]);
    free((*cfg)->names);
    free(*cfg);
    *cfg = NULL;
}

bool protect_mailboxes_config_all(const struct protect_mailboxes_config *cfg)
{
    return cfg != NULL && cfg->all;
}

struct protect_mailboxes *protect_mailboxes_new(const struct protect_mailboxes_config *cfg)
{
    if (cfg == NULL)
        return NULL;
    struct protect_mailboxes *m = calloc(1, sizeof(*m));
    if (m != NULL)
        m->cfg = cfg;
    return m;
}

void protect_mailboxes_free(struct protect_mailboxes **m)
{
    if (m == NULL || *m == NULL)
        return;
    for (size_t i = 0; i < (*m)->n_learned; i++)
        free((*m)->learned[i].name);
    free((*m)->learned);
    free(*m);
    *m = NULL;
}

static struct learned *learned_find(const struct protect_mailboxes *m, const char *name)
{
    for (size_t i = 0; i < m->n_learned; i++)
        if (names_equal(m->learned[i].name, name))
            return &m->learned[i];
    return NULL;
}

int protect_mailboxes_learn(struct protect_mailboxes *m, const char *name,
                            const char *const *attributes, size_t n_attributes)
{
    if (m == NULL || name == NULL || strlen(name) > PROTECT_MAILBOXES_MAX_NAME)
        return PROTECT_MAILBOXES_EINVAL;
    unsigned uses = 0;
    for (size_t i = 0; i < n_attributes; i++) {
        if (attributes[i] == NULL)
            continue;
        int u = use_lookup(attributes[i], strlen(attributes[i]));
        if (u >= 0)
            uses |= 1u << u;
    }
    struct learned *l = learned_find(m, name);
    if (l != NULL) {
        l->uses = uses;
        return 0;
    }
    if (m->n_learned >= PROTECT_MAILBOXES_MAX_LEARNED)
        return PROTECT_MAILBOXES_ELIMIT;
    if (m->n_learned == m->cap_learned) {
        size_t cap = m->cap_learned != 0 ? m->cap_learned * 2 : 16;
        struct learned *nl = realloc(m->learned, cap * sizeof(*nl));
        if (nl == NULL)
            return PROTECT_MAILBOXES_ENOMEM;
        m->learned = nl;
        m->cap_learned = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return PROTECT_MAILBOXES_ENOMEM;
    m->learned[m->n_learned].name = copy;
    m->learned[m->n_learned].uses = uses;
    m->n_learned++;
    return 0;
}

int protect_mailboxes_renamed(struct protect_mailboxes *m, const char *old_name,
                              const char *new_name, char sep)
{
    if (m == NULL || old_name == NULL || new_name == NULL)
        return PROTECT_MAILBOXES_EINVAL;
    size_t old_len = strlen(old_name);
    for (size_t i = 0; i < m->n_learned; i++) {
        struct learned *l = &m->learned[i];
        const char *rest = NULL;
        if (names_equal(l->name, old_name))
            rest = "";
        else if (sep != 0 && strncmp(l->name, old_name, old_len) == 0 &&
                 l->name[old_len] == sep)
            rest = l->name + old_len;
        if (rest == NULL)
            continue;
        size_t n = strlen(new_name) + strlen(rest) + 1;
        if (n > PROTECT_MAILBOXES_MAX_NAME + 1)
            return PROTECT_MAILBOXES_EINVAL;
        char *nn = malloc(n);
        if (nn == NULL)
            return PROTECT_MAILBOXES_ENOMEM;
        (void)snprintf(nn, n, "%s%s", new_name, rest);
        free(l->name);
        l->name = nn;
    }
    return 0;
}

static bool match_by_name(const struct protect_mailboxes_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_names; i++)
        if (names_equal(c->names[i], name))
            return true;
    return false;
}

bool protect_mailboxes_match(const struct protect_mailboxes *m, const char *name)
{
    if (m == NULL || name == NULL)
        return false;
    const struct protect_mailboxes_config *c = m->cfg;
    if (c->all || match_by_name(c, name))
        return true;
    if (c->uses == 0)
        return false;
    const struct learned *l = learned_find(m, name);
    return l != NULL && (l->uses & c->uses) != 0;
}

bool protect_mailboxes_needs_list(const struct protect_mailboxes *m, const char *name)
{
    if (m == NULL || name == NULL)
        return false;
    const struct protect_mailboxes_config *c = m->cfg;
    if (c->all || c->uses == 0 || match_by_name(c, name))
        return false;
    return learned_find(m, name) == NULL;
}
