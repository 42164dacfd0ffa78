/* Parsing a policy file into a snapshot: lines and words, patterns,
 * settings, inheritance from the "*" rules, validation, indexes.
 *
 * Every problem is collected (up to POLICY_MAX_ERRORS listed) as
 * "FILE:LINE: message", sorted by line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcfg.h" /* qcfg_parse_size */
#include "internal.h"

#define MAX_WORDS 32
#define MAX_PLACEHOLDER 200
#define MAX_SAE_ID 255
#define DEFAULT_PLACEHOLDER "Protected message"
#define DEFAULT_OTP_MAX ((uint64_t)64 << 10)

/* ---- errors ---- */

struct perr {
    unsigned line;
    size_t seq;
    char *text;
};

struct parser {
    const char *name;
    const char *const *links;
    size_t n_links;
    policy *pol;
    struct perr *errs;
    size_t n_errs, cap_errs, n_dropped;
    bool oom;
    /* the rule being built */
    struct rawrule *rules;
    size_t n_rules, cap_rules;
};

static void perror_at(struct parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perror_at(struct parser *p, unsigned line, const char *fmt, ...)
{
    if (p->n_errs >= POLICY_MAX_ERRORS) {
        p->n_dropped++;
        return;
    }
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *text = NULL;
    if ((line ? asprintf(&text, "%s:%u: %s", p->name, line, msg)
              : asprintf(&text, "%s: %s", p->name, msg)) < 0) {
        p->oom = true;
        return;
    }
    if (p->n_errs == p->cap_errs) {
        size_t cap = p->cap_errs ? p->cap_errs * 2 : 16;
        struct perr *e = realloc(p->errs, cap * sizeof(*e));
        if (!e) {
            free(text);
            p->oom = true;
            return;
        }
        p->errs = e;
        p->cap_errs = cap;
    }
    p->errs[p->n_errs] = (struct perr){.line = line, .seq = p->n_errs, .text = text};
    p->n_errs++;
}

static int cmp_err(const void *a, const void *b)
{
    const struct perr *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static char *join_errors(struct parser *p)
{
    qsort(p->errs, p->n_errs, sizeof(*p->errs), cmp_err);
    size_t total = 1;
    for (size_t i = 0; i < p->n_errs; i++)
        total += strlen(p->errs[i].text) + 1;
    total += 64 + strlen(p->name);
    char *out = malloc(total);
    if (!out)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < p->n_errs; i++)
        off += (size_t)snprintf(out + off, total - off, "%s%s", i ? "\n" : "", p->errs[i].text);
    if (p->n_dropped)
        snprintf(out + off, total - off, "\n%s: %zu more errors not shown", p->name,
                 p->n_dropped);
    return out;
}

/* ---- rules being parsed ---- */

enum field {
    F_ACTION,
    F_LEVEL,
    F_OTP_MAX,
    F_LINK,
    F_SLAVE_SAE,
    F_MASTER_SAE,
    F_SUBJECT,
    F_PLACEHOLDER,
    F_ON_NO_KEY,
    F_COUNT
};

struct rawrule {
    bool sender;
    unsigned line;
    unsigned field_line[F_COUNT]; /* 0: not set on this rule */
    enum policy_kind kind;
    char *pattern;   /* arena: as written, lower-cased */
    char *key;       /* arena: the index key (suffix without "*.") */
    struct policy_rule r;
    const char *master_sae;
    bool bad;        /* pattern invalid: not indexed */
    bool bad_setting; /* a setting was refused: skip the checks that
                         would only repeat that error */
};

static const char *const action_names[] = {"require", "prefer", "none", "refuse", NULL};
static const char *const level_names[] = {"aes", "otp", "auto", NULL};
static const char *const on_no_key_names[] = {"defer", "refuse", NULL};
static const char *const subject_names[] = {"keep", "protect", NULL};

static const struct setting {
    const char *name;
    enum field field;
    bool recipient, sender;
} settings[] = {
    {"action", F_ACTION, true, false},
    {"level", F_LEVEL, true, false},
    {"otp_max", F_OTP_MAX, true, false},
    {"link", F_LINK, true, true},
    {"slave_sae", F_SLAVE_SAE, true, false},
    {"master_sae", F_MASTER_SAE, false, true},
    {"subject", F_SUBJECT, true, false},
    {"placeholder", F_PLACEHOLDER, true, false},
    {"on_no_key", F_ON_NO_KEY, true, false},
};

static int find_name(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

static void list_names(const char *const *names, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", names[i]);
}

static bool enum_value(struct parser *p, unsigned line, const char *key,
                       const char *v, const char *const *names, int *out)
{
    int i = find_name(names, v);
    if (i < 0) {
        char list[128];
        list_names(names, list, sizeof(list));
        perror_at(p, line, "%s: '%s' is not one of: %s", key, v, list);
        return false;
    }
    *out = i;
    return true;
}

/* SAE IDs travel in URL paths (ETSI 014 .../keys/{SAE_ID}/enc_keys):
 * unreserved URL characters only. */
static bool valid_sae_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_SAE_ID)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~'))
            return false;
    }
    return true;
}

static bool valid_utf8_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        size_t extra;
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0 && c >= 0xc2) {
            extra = 1;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2;
        } else if ((c & 0xf8) == 0xf0 && c <= 0xf4) {
            extra = 3;
        } else {
            return false;
        }
        p++;
        for (size_t i = 0; i < extra; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

static bool link_known(struct parser *p, const char *name)
{
    if (!p->links)
        return true;
    for (size_t i = 0; i < p->n_links; i++)
        if (strcmp(p->links[i], name) == 0)
            return true;
    return false;
}

static void apply_setting(struct parser *p, struct rawrule *rr, unsigned line,
                          const char *word)
{
    const char *eq = strchr(word, '=');
    if (!eq || eq == word) {
        perror_at(p, line, "expected key=value, got '%s'", word);
        rr->bad_setting = true;
        return;
    }
    size_t klen = (size_t)(eq - word);
    const char *v = eq + 1;
    const struct setting *st = NULL;
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (strlen(settings[i].name) == klen && strncmp(settings[i].name, word, klen) == 0)
            st = &settings[i];
    }
    if (!st) {
        perror_at(p, line, "unknown setting '%.*s'", (int)klen, word);
        rr->bad_setting = true;
        return;
    }
    if (rr->sender ? !st->sender : !st->recipient) {
        perror_at(p, line, "'%s' is not a %s setting", st->name,
                  rr->sender ? "sender" : "recipient");
        rr->bad_setting = true;
        return;
    }
    if (rr->field_line[st->field]) {
        perror_at(p, line, "'%s' is set twice", st->name);
        rr->bad_setting = true;
        return;
    }
    if (!*v && st->field != F_PLACEHOLDER) {
        perror_at(p, line, "%s: empty value", st->name);
        rr->bad_setting = true;
        return;
    }
    int e;
    bool ok = true;
    struct policy_rule *r = &rr->r;
    switch (st->field) {
    case F_ACTION:
        if ((ok = enum_value(p, line, st->name, v, action_names, &e)))
            r->action = (enum policy_action)e;
        break;
    case F_LEVEL:
        if ((ok = enum_value(p, line, st->name, v, level_names, &e)))
            r->level = (enum policy_level)e;
        break;
    case F_ON_NO_KEY:
        if ((ok = enum_value(p, line, st->name, v, on_no_key_names, &e)))
            r->on_no_key = (enum policy_on_no_key)e;
        break;
    case F_SUBJECT:
        if ((ok = enum_value(p, line, st->name, v, subject_names, &e)))
            r->protect_subject = e == 1;
        break;
    case F_OTP_MAX: {
        uint64_t sz;
        const char *why = "";
        if (qcfg_parse_size(v, &sz, &why) < 0) {
            perror_at(p, line, "otp_max: '%s': %s", v, why);
            ok = false;
        } else if (sz > (1ull << 30)) {
            perror_at(p, line, "otp_max: '%s' is more than 1G", v);
            ok = false;
        } else {
            r->otp_max = sz;
        }
        break;
    }
    case F_LINK:
        if (!link_known(p, v)) {
            char list[256] = "";
            size_t off = 0;
            for (size_t i = 0; i < p->n_links && off < sizeof(list); i++)
                off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                        i ? ", " : "", p->links[i]);
            perror_at(p, line, "link: '%s' is not a configured KME link (%s%s)", v,
                      p->n_links ? "configured: " : "none configured", list);
            ok = false;
        } else if (!(r->link = pol_arena_strndup(&p->pol->arena, v, strlen(v)))) {
            p->oom = true;
        }
        break;
    case F_SLAVE_SAE:
    case F_MASTER_SAE:
        if (!valid_sae_id(v)) {
            perror_at(p, line, "%s: '%s' is not a valid SAE ID (letters, digits, "
                      "'-', '_', '.', '~'; at most %d)", st->name, v, MAX_SAE_ID);
            ok = false;
            break;
        }
        {
            const char *copy = pol_arena_strndup(&p->pol->arena, v, strlen(v));
            if (!copy)
                p->oom = true;
            else if (st->field == F_SLAVE_SAE)
                r->slave_sae = copy;
            else
                rr->master_sae = copy;
        }
        break;
    case F_PLACEHOLDER:
        if (!*v || strlen(v) > MAX_PLACEHOLDER || !valid_utf8_text(v)) {
            perror_at(p, line, "placeholder: must be 1 to %d bytes of UTF-8 text "
                      "without control characters", MAX_PLACEHOLDER);
            ok = false;
        } else if (!(r->placeholder = pol_arena_strndup(&p->pol->arena, v, strlen(v)))) {
            p->oom = true;
        }
        break;
    case F_COUNT:
        break;
    }
    if (ok)
        rr->field_line[st->field] = line;
    else
        rr->bad_setting = true;
}

/* ---- patterns ---- */

static bool valid_domain(const char *d)
{
    size_t n = strlen(d);
    if (n == 0 || n > 253)
        return false;
    if (d[0] == '[') /* address literal: [192.0.2.1], [IPv6:...] */
        return n > 2 && d[n - 1] == ']' && !strchr(d + 1, '[') && strchr(d, ']') == d + n - 1;
    size_t label = 0;
    for (const char *p = d;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63)
                return false;
            if (c == '\0')
                return true;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c >= 0x80))
            return false;
        label++;
    }
}

static bool parse_pattern(struct parser *p, struct rawrule *rr, const char *word)
{
    size_t n = strlen(word);
    char *low = pol_arena_strndup(&p->pol->arena, word, n);
    if (!low) {
        p->oom = true;
        return false;
    }
    for (char *c = low; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    if (n > 2 && low[n - 1] == '.' && low[n - 2] != '.' && low[n - 2] != '*')
        low[--n] = '\0'; /* example.org. */
    rr->pattern = low;
    if (strcmp(low, "*") == 0) {
        rr->kind = POLICY_KIND_DEFAULT;
        rr->key = low;
        return true;
    }
    if (low[0] == '*' && low[1] == '.') {
        rr->kind = POLICY_KIND_SUFFIX;
        rr->key = low + 2;
        if (!valid_domain(rr->key)) {
            perror_at(p, rr->line, "'%s' is not a valid domain pattern", word);
            return false;
        }
        return true;
    }
    if (strchr(low, '*')) {
        perror_at(p, rr->line, "'%s': '*' is only allowed as '*' or at the start of "
                  "'*.domain'", word);
        return false;
    }
    const char *at = strchr(low, '@');
    if (!at) {
        rr->kind = POLICY_KIND_DOMAIN;
        rr->key = low;
        if (!valid_domain(low)) {
            perror_at(p, rr->line, "'%s' is not a valid domain", word);
            return false;
        }
        return true;
    }
    if (at == low) {
        perror_at(p, rr->line, "'%s': write the domain alone ('%s')", word, at + 1);
        return false;
    }
    if (strchr(at + 1, '@')) {
        perror_at(p, rr->line, "'%s': more than one '@'", word);
        return false;
    }
    if (at - low > 64 || !valid_domain(at + 1)) {
        perror_at(p, rr->line, "'%s' is not a valid address", word);
        return false;
    }
    rr->kind = POLICY_KIND_ADDRESS;
    rr->key = low;
    return true;
}

/* ---- words of a line ---- */

struct word {
    char *text; /* malloc'd, unquoted */
    unsigned line;
};

struct logical {
    struct word words[MAX_WORDS];
    size_t n;
    unsigned line;
    bool too_many;
};

static void logical_clear(struct logical *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->words[i].text);
    l->n = 0;
    l->too_many = false;
}

/* Splits one physical line into words; "..." quotes (with \" and \\)
 * keep blanks inside a word; an unquoted '#' at a word start begins a
 * comment. */
static void split_words(struct parser *p, struct logical *l, const char *s, size_t len,
                        unsigned line)
{
    size_t i = 0;
    char *buf = malloc(len + 1);
    if (!buf) {
        p->oom = true;
        return;
    }
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i >= len || s[i] == '#')
            break;
        size_t o = 0;
        bool bad = false;
        while (i < len && s[i] != ' ' && s[i] != '\t') {
            if (s[i] == '"') {
                i++;
                while (i < len && s[i] != '"') {
                    if (s[i] == '\\' && i + 1 < len && (s[i + 1] == '"' || s[i + 1] == '\\'))
                        i++;
                    buf[o++] = s[i++];
                }
                if (i >= len) {
                    perror_at(p, line, "unterminated quoted string");
                    bad = true;
                    break;
                }
                i++; /* closing quote */
            } else {
                buf[o++] = s[i++];
            }
        }
        if (bad)
            break;
        if (l->n >= MAX_WORDS) {
            if (!l->too_many)
                perror_at(p, line, "more than %d words in one rule", MAX_WORDS);
            l->too_many = true;
            continue;
        }
        char *w = strndup(buf, o);
        if (!w) {
            p->oom = true;
            break;
        }
        l->words[l->n++] = (struct word){.text = w, .line = line};
    }
    free(buf);
}

static struct rawrule *new_rule(struct parser *p)
{
    if (p->n_rules == p->cap_rules) {
        size_t cap = p->cap_rules ? p->cap_rules * 2 : 64;
        struct rawrule *r = realloc(p->rules, cap * sizeof(*r));
        if (!r) {
            p->oom = true;
            return NULL;
        }
        p->rules = r;
        p->cap_rules = cap;
    }
    struct rawrule *rr = &p->rules[p->n_rules++];
    memset(rr, 0, sizeof(*rr));
    return rr;
}

static void finish_logical(struct parser *p, struct logical *l)
{
    if (l->n == 0)
        return;
    size_t w = 0;
    bool sender = false;
    if (strcmp(l->words[0].text, "sender") == 0 || strcmp(l->words[0].text, "recipient") == 0) {
        sender = l->words[0].text[0] == 's';
        w = 1;
        if (l->n < 2) {
            perror_at(p, l->line, "'%s' needs a pattern", l->words[0].text);
            logical_clear(l);
            return;
        }
    }
    struct rawrule *rr = new_rule(p);
    if (!rr) {
        logical_clear(l);
        return;
    }
    rr->sender = sender;
    rr->line = l->line;
    if (strchr(l->words[w].text, '=')) {
        perror_at(p, l->line, "a rule starts with a pattern, got '%s'", l->words[w].text);
        rr->bad = true;
    } else if (!parse_pattern(p, rr, l->words[w].text)) {
        rr->bad = true;
    }
    if (w + 1 == l->n && !rr->bad)
        perror_at(p, l->line, "rule '%s' has no settings", l->words[w].text);
    for (size_t i = w + 1; i < l->n; i++)
        apply_setting(p, rr, l->words[i].line, l->words[i].text);
    logical_clear(l);
}

static void parse_lines(struct parser *p, const char *text, size_t len)
{
    struct logical l = {0};
    unsigned line = 0;
    for (size_t pos = 0; pos < len && !p->oom;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (n > POLICY_MAX_LINE) {
            perror_at(p, line, "line longer than %d bytes", POLICY_MAX_LINE);
            continue;
        }
        bool ctl = false;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
                ctl = true;
        if (ctl) {
            perror_at(p, line, "control character in line");
            continue;
        }
        size_t i = 0;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == n || s[i] == '#')
            continue; /* blank or comment */
        if (i > 0) {
            /* continuation of the rule above (Postfix style) */
            if (l.n == 0) {
                perror_at(p, line, "continuation line (starts with a blank) without a rule");
                continue;
            }
        } else {
            finish_logical(p, &l);
            l.line = line;
        }
        split_words(p, &l, s, n, line);
    }
    finish_logical(p, &l);
    logical_clear(&l);
}

/* ---- inheritance, validation, indexes ---- */

static void resolve_recipient(struct parser *p, struct rawrule *rr, const struct rawrule *def)
{
    struct policy_rule *r = &rr->r;
    const char *only_link = p->links && p->n_links == 1 ? p->links[0] : NULL;
#define INHERIT(f, member, builtin)                         \
    if (!rr->field_line[f]) {                               \
        if (def && def->field_line[f])                      \
            r->member = def->r.member;                      \
        else                                                \
            r->member = (builtin);                          \
    }
    INHERIT(F_ACTION, action, POLICY_REQUIRE)
    INHERIT(F_LEVEL, level, POLICY_LEVEL_AES)
    INHERIT(F_OTP_MAX, otp_max, DEFAULT_OTP_MAX)
    INHERIT(F_LINK, link, only_link)
    INHERIT(F_SLAVE_SAE, slave_sae, NULL)
    INHERIT(F_SUBJECT, protect_subject, true)
    INHERIT(F_PLACEHOLDER, placeholder, DEFAULT_PLACEHOLDER)
    INHERIT(F_ON_NO_KEY, on_no_key, POLICY_DEFER)
#undef INHERIT
    r->pattern = rr->pattern;
    r->kind = rr->kind;
    r->line = rr->line;
    if (rr->bad_setting)
        return;
    if (r->action == POLICY_REQUIRE || r->action == POLICY_PREFER) {
        bool own = rr->field_line[F_ACTION] != 0;
        if (!r->link && !r->slave_sae)
            perror_at(p, rr->line, "action=%s needs link= and slave_sae= (on this rule "
                      "or on the '*' rule)%s", policy_action_name(r->action),
                      own ? "" : "; action=require is the default");
        else if (!r->link)
            perror_at(p, rr->line, "action=%s needs link= (on this rule or on the '*' rule)",
                      policy_action_name(r->action));
        else if (!r->slave_sae)
            perror_at(p, rr->line, "action=%s needs slave_sae= (on this rule or on the "
                      "'*' rule)", policy_action_name(r->action));
    }
    if (rr->field_line[F_OTP_MAX] && r->level != POLICY_LEVEL_AUTO)
        perror_at(p, rr->field_line[F_OTP_MAX], "otp_max applies to level=auto only "
                  "(level is %s)", policy_level_name(r->level));
    if (rr->field_line[F_PLACEHOLDER] && !r->protect_subject)
        perror_at(p, rr->field_line[F_PLACEHOLDER],
                  "placeholder applies to subject=protect only");
}

static void resolve_sender(struct parser *p, struct rawrule *rr, const struct rawrule *def)
{
    const char *only_link = p->links && p->n_links == 1 ? p->links[0] : NULL;
    if (!rr->field_line[F_LINK])
        rr->r.link = def && def->field_line[F_LINK] ? def->r.link : only_link;
    if (!rr->field_line[F_MASTER_SAE])
        rr->master_sae = def && def->field_line[F_MASTER_SAE] ? def->master_sae : NULL;
    if (rr->bad_setting)
        return;
    if (!rr->r.link)
        perror_at(p, rr->line, "sender rule needs link= (on this rule or on 'sender *')");
    if (!rr->master_sae)
        perror_at(p, rr->line, "sender rule needs master_sae= (on this rule or on 'sender *')");
}

static int index_init(struct pol_index *ix, size_t n_addr, size_t n_dom, size_t n_suf)
{
    return pol_table_init(&ix->address, n_addr) < 0 || pol_table_init(&ix->domain, n_dom) < 0 ||
                   pol_table_init(&ix->suffix, n_suf) < 0
               ? -1
               : 0;
}

static const char *kind_word(enum policy_kind k)
{
    return k == POLICY_KIND_SUFFIX ? "suffix" : k == POLICY_KIND_DEFAULT ? "default" : "pattern";
}

/* Inserts one rule into its side's index; reports duplicates. */
static void index_put(struct parser *p, struct pol_index *ix, const struct rawrule *rr,
                      const void *val, unsigned (*line_of)(const void *))
{
    struct pol_table *t = rr->kind == POLICY_KIND_ADDRESS ? &ix->address
                          : rr->kind == POLICY_KIND_DOMAIN ? &ix->domain
                                                           : &ix->suffix;
    const void *prev;
    if (rr->kind == POLICY_KIND_DEFAULT) {
        prev = ix->def;
        if (!prev)
            ix->def = val;
    } else {
        prev = pol_table_put(t, rr->key, val);
    }
    if (prev)
        perror_at(p, rr->line, "duplicate %s%s '%s' (first at line %u)",
                  rr->sender ? "sender " : "", kind_word(rr->kind), rr->pattern,
                  line_of(prev));
}

static unsigned rcpt_line(const void *v)
{
    return ((const struct policy_rule *)v)->line;
}

static unsigned sender_line(const void *v)
{
    return ((const struct policy_sender_rule *)v)->line;
}

static void build(struct parser *p)
{
    policy *pol = p->pol;
    size_t cnt[2][3] = {{0}};
    size_t n_side[2] = {0};
    const struct rawrule *def[2] = {NULL, NULL};
    for (size_t i = 0; i < p->n_rules; i++) {
        struct rawrule *rr = &p->rules[i];
        if (rr->bad)
            continue;
        n_side[rr->sender]++;
        if (rr->kind == POLICY_KIND_DEFAULT) {
            if (!def[rr->sender])
                def[rr->sender] = rr;
        } else {
            cnt[rr->sender][rr->kind]++;
        }
    }
    pol->rules = calloc(n_side[0] ? n_side[0] : 1, sizeof(*pol->rules));
    pol->senders = calloc(n_side[1] ? n_side[1] : 1, sizeof(*pol->senders));
    if (!pol->rules || !pol->senders ||
        index_init(&pol->rcpt, cnt[0][0], cnt[0][1], cnt[0][2]) < 0 ||
        index_init(&pol->sender, cnt[1][0], cnt[1][1], cnt[1][2]) < 0) {
        p->oom = true;
        return;
    }
    for (size_t i = 0; i < p->n_rules; i++) {
        struct rawrule *rr = &p->rules[i];
        if (rr->bad)
            continue;
        if (!rr->sender) {
            resolve_recipient(p, rr, def[0]);
            struct policy_rule *r = &pol->rules[pol->n_rules++];
            *r = rr->r;
            index_put(p, &pol->rcpt, rr, r, rcpt_line);
        } else {
            resolve_sender(p, rr, def[1]);
            struct policy_sender_rule *s = &pol->senders[pol->n_senders++];
            *s = (struct policy_sender_rule){
                .pattern = rr->pattern, .kind = rr->kind, .line = rr->line,
                .link = rr->r.link, .master_sae = rr->master_sae,
            };
            index_put(p, &pol->sender, rr, s, sender_line);
        }
    }
}

int pol_parse(const char *name, const char *text, size_t len,
              const char *const *links, policy **pol_r, char **error_r)
{
    *pol_r = NULL;
    if (error_r)
        *error_r = NULL;
    struct parser p = {.name = name, .links = links};
    while (links && links[p.n_links])
        p.n_links++;
    p.pol = calloc(1, sizeof(*p.pol));
    if (!p.pol || !(p.pol->source = strdup(name))) {
        free(p.pol);
        return POLICY_ENOMEM;
    }
    atomic_init(&p.pol->refs, 1);
    p.pol->builtin = (struct policy_rule){
        .pattern = "", .kind = POLICY_KIND_BUILTIN, .action = POLICY_REFUSE,
        .level = POLICY_LEVEL_AES, .otp_max = DEFAULT_OTP_MAX,
        .protect_subject = true, .placeholder = DEFAULT_PLACEHOLDER,
        .on_no_key = POLICY_DEFER,
    };
    if (len > POLICY_MAX_FILE_SIZE)
        perror_at(&p, 0, "larger than %zu bytes", POLICY_MAX_FILE_SIZE);
    else
        parse_lines(&p, text, len);
    if (!p.oom)
        build(&p);
    free(p.rules);
    int rc = POLICY_OK;
    if (p.oom) {
        rc = POLICY_ENOMEM;
        if (error_r)
            *error_r = strdup("out of memory");
    } else if (p.n_errs > 0 || p.n_dropped > 0) {
        rc = POLICY_EINVALID;
        if (error_r)
            *error_r = join_errors(&p);
    }
    for (size_t i = 0; i < p.n_errs; i++)
        free(p.errs[i].text);
    free(p.errs);
    if (rc != POLICY_OK)
        pol_destroy(p.pol);
    else
        *pol_r = p.pol;
    return rc;
}
