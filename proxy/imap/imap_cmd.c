/* Client command model: verbs, tags, sequence sets, FETCH attributes,
 * LOGIN / AUTHENTICATE / ID arguments. */
#include "imap_cmd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static const char *const verb_names[IMAP_CMD_COUNT_] = {
    [IMAP_CMD_UNKNOWN] = "?",
    [IMAP_CMD_CAPABILITY] = "CAPABILITY", [IMAP_CMD_NOOP] = "NOOP",
    [IMAP_CMD_LOGOUT] = "LOGOUT", [IMAP_CMD_ID] = "ID",
    [IMAP_CMD_STARTTLS] = "STARTTLS", [IMAP_CMD_AUTHENTICATE] = "AUTHENTICATE",
    [IMAP_CMD_LOGIN] = "LOGIN", [IMAP_CMD_ENABLE] = "ENABLE",
    [IMAP_CMD_SELECT] = "SELECT", [IMAP_CMD_EXAMINE] = "EXAMINE",
    [IMAP_CMD_CREATE] = "CREATE", [IMAP_CMD_DELETE] = "DELETE",
    [IMAP_CMD_RENAME] = "RENAME", [IMAP_CMD_SUBSCRIBE] = "SUBSCRIBE",
    [IMAP_CMD_UNSUBSCRIBE] = "UNSUBSCRIBE", [IMAP_CMD_LIST] = "LIST",
    [IMAP_CMD_LSUB] = "LSUB", [IMAP_CMD_NAMESPACE] = "NAMESPACE",
    [IMAP_CMD_STATUS] = "STATUS", [IMAP_CMD_APPEND] = "APPEND", [IMAP_CMD_IDLE] = "IDLE",
    [IMAP_CMD_GETQUOTA] = "GETQUOTA", [IMAP_CMD_GETQUOTAROOT] = "GETQUOTAROOT",
    [IMAP_CMD_SETQUOTA] = "SETQUOTA", [IMAP_CMD_GETACL] = "GETACL",
    [IMAP_CMD_SETACL] = "SETACL", [IMAP_CMD_DELETEACL] = "DELETEACL",
    [IMAP_CMD_LISTRIGHTS] = "LISTRIGHTS", [IMAP_CMD_MYRIGHTS] = "MYRIGHTS",
    [IMAP_CMD_GETMETADATA] = "GETMETADATA", [IMAP_CMD_SETMETADATA] = "SETMETADATA",
    [IMAP_CMD_CHECK] = "CHECK", [IMAP_CMD_CLOSE] = "CLOSE", [IMAP_CMD_UNSELECT] = "UNSELECT",
    [IMAP_CMD_EXPUNGE] = "EXPUNGE", [IMAP_CMD_SEARCH] = "SEARCH", [IMAP_CMD_FETCH] = "FETCH",
    [IMAP_CMD_STORE] = "STORE", [IMAP_CMD_COPY] = "COPY", [IMAP_CMD_MOVE] = "MOVE",
    [IMAP_CMD_SORT] = "SORT", [IMAP_CMD_THREAD] = "THREAD",
    [IMAP_CMD_CANCELUPDATE] = "CANCELUPDATE",
    [IMAP_CMD_COMPRESS] = "COMPRESS", [IMAP_CMD_NOTIFY] = "NOTIFY",
    [IMAP_CMD_URLFETCH] = "URLFETCH", [IMAP_CMD_GENURLAUTH] = "GENURLAUTH",
    [IMAP_CMD_RESETKEY] = "RESETKEY", [IMAP_CMD_REPLACE] = "REPLACE",
    [IMAP_CMD_XLIST] = "XLIST", [IMAP_CMD_CONVERT] = "CONVERT",
};

const char *imap_verb_name(enum imap_verb v)
{
    return (unsigned)v < IMAP_CMD_COUNT_ && verb_names[v] ? verb_names[v] : "?";
}

enum imap_verb imap_verb_lookup(const char *s, size_t len)
{
    for (unsigned v = 1; v < IMAP_CMD_COUNT_; v++)
        if (strlen(verb_names[v]) == len && strncasecmp(verb_names[v], s, len) == 0)
            return (enum imap_verb)v;
    return IMAP_CMD_UNKNOWN;
}

bool imap_verb_uid_ok(enum imap_verb v)
{
    switch (v) {
    case IMAP_CMD_FETCH: case IMAP_CMD_STORE: case IMAP_CMD_COPY: case IMAP_CMD_MOVE:
    case IMAP_CMD_SEARCH: case IMAP_CMD_SORT: case IMAP_CMD_THREAD: case IMAP_CMD_EXPUNGE:
        return true;
    default:
        return false;
    }
}

bool imap_tag_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '(' || c == ')' || c == '{' || c == '%' ||
            c == '*' || c == '"' || c == '\\' || c == '+')
            return false;
    }
    return true;
}

/* ---- sequence sets --------------------------------------------------------- */

static bool seq_number(const char **p, const char *end, uint32_t *n_r)
{
    if (*p < end && **p == '*') {
        (*p)++;
        *n_r = IMAP_SEQ_STAR;
        return true;
    }
    if (*p == end || **p < '1' || **p > '9')
        return false; /* nz-number */
    uint64_t n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        n = n * 10 + (uint64_t)(**p - '0');
        if (n >= UINT32_MAX)
            return false;
        (*p)++;
    }
    *n_r = (uint32_t)n;
    return true;
}

int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set_r, const char **error_r)
{
    memset(set_r, 0, sizeof(*set_r));
    if (len == 1 && s[0] == '$') {
        set_r->saved = true;
        return 0;
    }
    const char *p = s, *end = s + len;
    size_t cap = 0;
    for (;;) {
        uint32_t a, b;
        if (!seq_number(&p, end, &a))
            goto invalid;
        b = a;
        if (p < end && *p == ':') {
            p++;
            if (!seq_number(&p, end, &b))
                goto invalid;
        }
        if (set_r->count == cap) {
            cap = cap ? cap * 2 : 4;
            struct imap_seq_range *nr = realloc(set_r->ranges, cap * sizeof(*nr));
            if (!nr) {
                imap_seqset_free(set_r);
                *error_r = "Out of memory";
                return -1;
            }
            set_r->ranges = nr;
        }
        set_r->ranges[set_r->count].lo = a < b ? a : b;
        set_r->ranges[set_r->count].hi = a < b ? b : a;
        set_r->count++;
        if (p == end)
            return 0;
        if (*p != ',')
            goto invalid;
        p++;
    }
invalid:
    imap_seqset_free(set_r);
    *error_r = "Invalid messageset";
    return -1;
}

void imap_seqset_free(struct imap_seqset *set)
{
    free(set->ranges);
    memset(set, 0, sizeof(*set));
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n, uint32_t star)
{
    for (size_t i = 0; i < set->count; i++) {
        uint32_t lo = set->ranges[i].lo == IMAP_SEQ_STAR ? star : set->ranges[i].lo;
        uint32_t hi = set->ranges[i].hi == IMAP_SEQ_STAR ? star : set->ranges[i].hi;
        if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
        }
        if (n >= lo && n <= hi)
            return true;
    }
    return false;
}

/* ---- FETCH ----------------------------------------------------------------- */

static const char *const att_names[] = {
    [IMAP_FA_FLAGS] = "FLAGS", [IMAP_FA_UID] = "UID", [IMAP_FA_INTERNALDATE] = "INTERNALDATE",
    [IMAP_FA_RFC822_SIZE] = "RFC822.SIZE", [IMAP_FA_ENVELOPE] = "ENVELOPE",
    [IMAP_FA_BODY] = "BODY", [IMAP_FA_BODYSTRUCTURE] = "BODYSTRUCTURE",
    [IMAP_FA_RFC822] = "RFC822", [IMAP_FA_RFC822_HEADER] = "RFC822.HEADER",
    [IMAP_FA_RFC822_TEXT] = "RFC822.TEXT", [IMAP_FA_BODY_SECTION] = "BODY[]",
    [IMAP_FA_BINARY] = "BINARY[]", [IMAP_FA_BINARY_SIZE] = "BINARY.SIZE[]",
    [IMAP_FA_MODSEQ] = "MODSEQ", [IMAP_FA_EMAILID] = "EMAILID", [IMAP_FA_THREADID] = "THREADID",
    [IMAP_FA_SAVEDATE] = "SAVEDATE", [IMAP_FA_PREVIEW] = "PREVIEW", [IMAP_FA_OTHER] = "?",
};

const char *imap_fetch_att_name(enum imap_fetch_att a)
{
    return (unsigned)a < sizeof(att_names) / sizeof(att_names[0]) ? att_names[a] : "?";
}

bool imap_fetch_att_is_content(enum imap_fetch_att a)
{
    switch (a) {
    case IMAP_FA_FLAGS: case IMAP_FA_UID: case IMAP_FA_INTERNALDATE: case IMAP_FA_MODSEQ:
    case IMAP_FA_EMAILID: case IMAP_FA_THREADID: case IMAP_FA_SAVEDATE:
        return false;
    default:
        return true;
    }
}

struct simple_att {
    const char *name;
    enum imap_fetch_att att;
};

static const struct simple_att simple_atts[] = {
    {"FLAGS", IMAP_FA_FLAGS},
    {"UID", IMAP_FA_UID},
    {"INTERNALDATE", IMAP_FA_INTERNALDATE},
    {"RFC822.SIZE", IMAP_FA_RFC822_SIZE},
    {"ENVELOPE", IMAP_FA_ENVELOPE},
    {"BODY", IMAP_FA_BODY},
    {"BODYSTRUCTURE", IMAP_FA_BODYSTRUCTURE},
    {"RFC822", IMAP_FA_RFC822},
    {"RFC822.HEADER", IMAP_FA_RFC822_HEADER},
    {"RFC822.TEXT", IMAP_FA_RFC822_TEXT},
    {"MODSEQ", IMAP_FA_MODSEQ},
    {"EMAILID", IMAP_FA_EMAILID},
    {"THREADID", IMAP_FA_THREADID},
    {"SAVEDATE", IMAP_FA_SAVEDATE},
    {"PREVIEW", IMAP_FA_PREVIEW},
    {"SNIPPET", IMAP_FA_PREVIEW},
};

struct name_buf {
    char s[1100];
    size_t n;
    bool overflow;
};

static void nb_add(struct name_buf *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (b->n + 1 >= sizeof(b->s)) {
            b->overflow = true;
            return;
        }
        b->s[b->n++] = (char)toupper((unsigned char)s[i]);
    }
    b->s[b->n] = '\0';
}

/* Part numbers and specifier of a section text (between '[' and ']'). */
static bool parse_section(const char *s, size_t len, bool binary, struct imap_fetch_section *sec,
                          bool *wants_fields)
{
    memset(sec, 0, sizeof(*sec));
    *wants_fields = false;
    size_t i = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (s[i] == '0')
            return false; /* nz-number */
        uint64_t n = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            n = n * 10 + (uint64_t)(s[i] - '0');
            if (n >= UINT32_MAX)
                return false;
            i++;
        }
        if (sec->n_parts == IMAP_MAX_PARTS)
            return false;
        sec->parts[sec->n_parts++] = (uint32_t)n;
        if (i == len)
            return true;
        if (s[i] != '.')
            return false;
        i++;
        if (i == len)
            return false; /* trailing '.' */
    }
    if (i == len)
        return true;
    if (binary)
        return false; /* BINARY takes part numbers only */
    const char *spec = s + i;
    size_t sl = len - i;
#define IS(lit) (sl == sizeof(lit) - 1 && strncasecmp(spec, lit, sl) == 0)
    if (IS("HEADER"))
        sec->spec = IMAP_SEC_HEADER;
    else if (IS("HEADER.FIELDS"))
        sec->spec = IMAP_SEC_HEADER_FIELDS;
    else if (IS("HEADER.FIELDS.NOT"))
        sec->spec = IMAP_SEC_HEADER_FIELDS_NOT;
    else if (IS("TEXT"))
        sec->spec = IMAP_SEC_TEXT;
    else if (IS("MIME") && sec->n_parts > 0)
        sec->spec = IMAP_SEC_MIME;
    else
        return false;
#undef IS
    *wants_fields = sec->spec == IMAP_SEC_HEADER_FIELDS || sec->spec == IMAP_SEC_HEADER_FIELDS_NOT;
    return true;
}

/* "<o.n>" or "<o>" (the latter accepted as Dovecot does not mind). */
static bool parse_partial(const char *s, size_t len, struct imap_fetch_item *it)
{
    if (len < 3 || s[0] != '<' || s[len - 1] != '>')
        return false;
    uint64_t o = 0, n = 0;
    size_t i = 1;
    if (s[i] < '0' || s[i] > '9')
        return false;
    while (i < len - 1 && s[i] >= '0' && s[i] <= '9') {
        if (o > (UINT64_MAX - 9) / 10)
            return false;
        o = o * 10 + (uint64_t)(s[i++] - '0');
    }
    if (i == len - 1) {
        it->partial_offset = o;
        it->partial_length = UINT64_MAX;
        it->has_partial = true;
        return true;
    }
    if (s[i] != '.' || s[i + 1] < '1' || s[i + 1] > '9')
        return false; /* nz-number */
    i++;
    while (i < len - 1 && s[i] >= '0' && s[i] <= '9') {
        if (n > (UINT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (uint64_t)(s[i++] - '0');
    }
    if (i != len - 1)
        return false;
    it->partial_offset = o;
    it->partial_length = n;
    it->has_partial = true;
    return true;
}

static void item_name_partial(struct name_buf *nb, const struct imap_fetch_item *it)
{
    if (!it->has_partial)
        return;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "<%llu>", (unsigned long long)it->partial_offset);
    nb_add(nb, tmp, (size_t)n);
}

/* Parses one item starting at args[*i]; advances *i past it. */
static int parse_item(const struct imap_arg *args, size_t count, size_t *i,
                      struct imap_fetch_item *it, const char **error_r)
{
    memset(it, 0, sizeof(*it));
    const struct imap_arg *a = &args[*i];
    if (a->type != IMAP_ARG_ATOM) {
        *error_r = "Invalid fetch item";
        return -1;
    }
    it->raw_off = a->raw_off;
    const char *s = a->str;
    size_t len = a->len;
    const char *lb = memchr(s, '[', len);
    struct name_buf nb = {.n = 0};
    if (!lb) {
        it->att = IMAP_FA_OTHER;
        for (size_t k = 0; k < sizeof(simple_atts) / sizeof(simple_atts[0]); k++) {
            if (strlen(simple_atts[k].name) == len &&
                strncasecmp(simple_atts[k].name, s, len) == 0) {
                it->att = simple_atts[k].att;
                break;
            }
        }
        if (it->att == IMAP_FA_RFC822 || it->att == IMAP_FA_RFC822_TEXT)
            it->sets_seen = true;
        nb_add(&nb, s, len);
        (*i)++;
        /* PREVIEW (LAZY) and the like: a modifier list follows */
        if (it->att == IMAP_FA_PREVIEW && *i < count && args[*i].type == IMAP_ARG_LIST)
            (*i)++;
        it->raw_len = args[*i - 1].raw_off + args[*i - 1].raw_len - it->raw_off;
        it->response_name = strdup(nb.s);
        if (!it->response_name) {
            *error_r = "Out of memory";
            return -1;
        }
        return 0;
    }
    /* name[section]<partial> */
    size_t base = (size_t)(lb - s);
    bool binary = false;
#define BASE(lit) (base == sizeof(lit) - 1 && strncasecmp(s, lit, base) == 0)
    if (BASE("BODY")) {
        it->att = IMAP_FA_BODY_SECTION;
    } else if (BASE("BODY.PEEK")) {
        it->att = IMAP_FA_BODY_SECTION;
        it->peek = true;
    } else if (BASE("BINARY")) {
        it->att = IMAP_FA_BINARY;
        binary = true;
    } else if (BASE("BINARY.PEEK")) {
        it->att = IMAP_FA_BINARY;
        it->peek = true;
        binary = true;
    } else if (BASE("BINARY.SIZE")) {
        it->att = IMAP_FA_BINARY_SIZE;
        it->peek = true;
        binary = true;
    } else {
        *error_r = "Invalid fetch item";
        return -1;
    }
#undef BASE
    it->has_section = true;
    nb_add(&nb, it->att == IMAP_FA_BODY_SECTION ? "BODY[" : it->att == IMAP_FA_BINARY
                                                                 ? "BINARY["
                                                                 : "BINARY.SIZE[",
           it->att == IMAP_FA_BODY_SECTION ? 5 : it->att == IMAP_FA_BINARY ? 7 : 12);
    const char *sec = lb + 1;
    const char *rb = memchr(sec, ']', len - base - 1);
    size_t sec_len = rb ? (size_t)(rb - sec) : len - base - 1;
    bool wants_fields;
    if (!parse_section(sec, sec_len, binary, &it->section, &wants_fields)) {
        *error_r = "Invalid BODY[..] parameter";
        return -1;
    }
    nb_add(&nb, sec, sec_len);
    const char *after; /* what follows ']' */
    size_t after_len;
    if (wants_fields) {
        /* "BODY[HEADER.FIELDS" (fields) "]<...>" */
        if (rb || *i + 2 >= count || args[*i + 1].type != IMAP_ARG_LIST ||
            args[*i + 2].type != IMAP_ARG_ATOM || args[*i + 2].str[0] != ']' ||
            args[*i + 1].count == 0) {
            *error_r = "Invalid BODY[..] parameter";
            return -1;
        }
        const struct imap_arg *fl = &args[*i + 1];
        nb_add(&nb, " (", 2);
        for (size_t k = 0; k < fl->count; k++) {
            if (!imap_arg_is_astring(&fl->list[k])) {
                *error_r = "Invalid BODY[..] parameter";
                return -1;
            }
            if (k)
                nb_add(&nb, " ", 1);
            nb_add(&nb, fl->list[k].str, fl->list[k].len);
        }
        nb_add(&nb, ")", 1);
        it->section.fields = fl->list;
        it->section.n_fields = fl->count;
        after = args[*i + 2].str + 1;
        after_len = args[*i + 2].len - 1;
        *i += 3;
    } else {
        if (!rb) {
            *error_r = "Invalid BODY[..] parameter";
            return -1;
        }
        after = rb + 1;
        after_len = len - (size_t)(after - s);
        *i += 1;
    }
    nb_add(&nb, "]", 1);
    if (after_len > 0) {
        if (it->att == IMAP_FA_BINARY_SIZE || !parse_partial(after, after_len, it)) {
            *error_r = "Invalid partial";
            return -1;
        }
    }
    item_name_partial(&nb, it);
    if (nb.overflow) {
        *error_r = "Fetch item too long";
        return -1;
    }
    it->sets_seen = !it->peek && it->att != IMAP_FA_BINARY_SIZE;
    it->raw_len = args[*i - 1].raw_off + args[*i - 1].raw_len - it->raw_off;
    it->response_name = strdup(nb.s);
    if (!it->response_name) {
        *error_r = "Out of memory";
        return -1;
    }
    return 0;
}

static int push_item(struct imap_fetch *f, size_t *cap, const struct imap_fetch_item *it)
{
    if (f->n_items == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct imap_fetch_item *ni = realloc(f->items, nc * sizeof(*ni));
        if (!ni)
            return -1;
        f->items = ni;
        *cap = nc;
    }
    f->items[f->n_items++] = *it;
    return 0;
}

static int add_macro(struct imap_fetch *f, size_t *cap, const struct imap_arg *a)
{
    static const char *const fast[] = {"FLAGS", "INTERNALDATE", "RFC822.SIZE", NULL};
    static const char *const all[] = {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", NULL};
    static const char *const full[] = {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
                                       "BODY", NULL};
    const char *const *list = strcasecmp(a->str, "FAST") == 0  ? fast
                              : strcasecmp(a->str, "ALL") == 0 ? all
                                                               : full;
    for (size_t k = 0; list[k]; k++) {
        struct imap_fetch_item it = {0};
        for (size_t j = 0; j < sizeof(simple_atts) / sizeof(simple_atts[0]); j++)
            if (strcmp(simple_atts[j].name, list[k]) == 0)
                it.att = simple_atts[j].att;
        it.from_macro = true;
        it.raw_off = a->raw_off;
        it.raw_len = a->raw_len;
        it.response_name = strdup(list[k]);
        if (!it.response_name || push_item(f, cap, &it) < 0) {
            free(it.response_name);
            return -1;
        }
    }
    return 0;
}

static bool is_macro(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM &&
           (strcasecmp(a->str, "FAST") == 0 || strcasecmp(a->str, "ALL") == 0 ||
            strcasecmp(a->str, "FULL") == 0);
}

static int parse_modifiers(const struct imap_arg *m, struct imap_fetch *f, const char **error_r)
{
    for (size_t k = 0; k < m->count; k++) {
        const struct imap_arg *a = &m->list[k];
        if (imap_arg_atom_eq(a, "CHANGEDSINCE") && k + 1 < m->count &&
            m->list[k + 1].type == IMAP_ARG_ATOM) {
            char *end;
            const char *v = m->list[k + 1].str;
            if (!*v || *v < '0' || *v > '9') {
                *error_r = "Invalid CHANGEDSINCE modseq";
                return -1;
            }
            f->changedsince_modseq = strtoull(v, &end, 10);
            if (*end) {
                *error_r = "Invalid CHANGEDSINCE modseq";
                return -1;
            }
            f->changedsince = true;
            k++;
        } else if (imap_arg_atom_eq(a, "VANISHED")) {
            f->vanished = true;
        } else {
            *error_r = "Unknown FETCH modifier";
            return -1;
        }
    }
    return 0;
}

int imap_fetch_parse(const struct imap_arg *args, size_t count, bool uid,
                     struct imap_fetch *f, const char **error_r)
{
    memset(f, 0, sizeof(*f));
    f->uid = uid;
    if (count < 2 || args[0].type != IMAP_ARG_ATOM) {
        *error_r = "Invalid arguments.";
        return -1;
    }
    if (imap_seqset_parse(args[0].str, args[0].len, &f->set, error_r) < 0)
        return -1;
    f->set_arg = &args[0];
    size_t cap = 0;
    size_t next;
    f->items_arg = &args[1];
    if (args[1].type == IMAP_ARG_LIST) {
        f->list_form = true;
        const struct imap_arg *l = args[1].list;
        size_t n = args[1].count, i = 0;
        if (n == 0) {
            *error_r = "Invalid arguments.";
            goto fail;
        }
        while (i < n) {
            struct imap_fetch_item it;
            if (parse_item(l, n, &i, &it, error_r) < 0)
                goto fail;
            if (push_item(f, &cap, &it) < 0) {
                free(it.response_name);
                *error_r = "Out of memory";
                goto fail;
            }
        }
        next = 2;
    } else if (is_macro(&args[1])) {
        if (add_macro(f, &cap, &args[1]) < 0) {
            *error_r = "Out of memory";
            goto fail;
        }
        next = 2;
    } else {
        size_t i = 1;
        struct imap_fetch_item it;
        if (parse_item(args, count, &i, &it, error_r) < 0)
            goto fail;
        if (push_item(f, &cap, &it) < 0) {
            free(it.response_name);
            *error_r = "Out of memory";
            goto fail;
        }
        next = i;
    }
    if (next < count) {
        if (args[next].type != IMAP_ARG_LIST || next + 1 != count) {
            *error_r = "Invalid arguments.";
            goto fail;
        }
        if (parse_modifiers(&args[next], f, error_r) < 0)
            goto fail;
    }
    return 0;
fail:
    imap_fetch_free(f);
    return -1;
}

void imap_fetch_free(struct imap_fetch *f)
{
    for (size_t i = 0; i < f->n_items; i++)
        free(f->items[i].response_name);
    free(f->items);
    imap_seqset_free(&f->set);
    memset(f, 0, sizeof(*f));
}

/* ---- LOGIN, AUTHENTICATE, SASL, ID ------------------------------------------- */

int imap_login_parse(const struct imap_arg *args, size_t count, char *user, size_t user_size,
                     const char **error_r)
{
    if (count != 2 || !imap_arg_is_astring(&args[0]) || !imap_arg_is_astring(&args[1])) {
        *error_r = "Invalid arguments.";
        return -1;
    }
    if (!imap_arg_copy(&args[0], user, user_size)) {
        *error_r = "Invalid user name";
        return -1;
    }
    return 0;
}

int imap_authenticate_parse(const struct imap_arg *args, size_t count, char *mech,
                            size_t mech_size, const struct imap_arg **ir_r, const char **error_r)
{
    *ir_r = NULL;
    if (count < 1 || count > 2 || args[0].type != IMAP_ARG_ATOM ||
        (count == 2 && args[1].type != IMAP_ARG_ATOM)) {
        *error_r = "Invalid arguments.";
        return -1;
    }
    if (!imap_arg_copy(&args[0], mech, mech_size)) {
        *error_r = "Unsupported authentication mechanism.";
        return -1;
    }
    for (char *p = mech; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    if (count == 2)
        *ir_r = &args[1];
    return 0;
}

/* Decodes base64 (no line breaks) into out; returns length or -1. */
static int b64_decode(const char *in, size_t len, unsigned char *out, size_t out_size)
{
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > out_size || len > INT32_MAX)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (in[len - 1] == '=')
        n--;
    if (in[len - 2] == '=')
        n--;
    return n;
}

static bool copy_user(const unsigned char *s, size_t len, char *user, size_t size)
{
    if (len == 0 || len >= size || memchr(s, '\0', len))
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f)
            return false;
    memcpy(user, s, len);
    user[len] = '\0';
    return true;
}

bool imap_sasl_user(const char *mech, const char *b64, size_t b64_len, char *user,
                    size_t user_size)
{
    unsigned char buf[4096];
    int n = b64_decode(b64, b64_len, buf, sizeof(buf));
    bool ok = false;
    if (n <= 0)
        goto out;
    size_t len = (size_t)n;
    if (strcmp(mech, "PLAIN") == 0) {
        /* authzid NUL authcid NUL passwd */
        unsigned char *z1 = memchr(buf, '\0', len);
        if (!z1)
            goto out;
        unsigned char *authc = z1 + 1;
        unsigned char *z2 = memchr(authc, '\0', len - (size_t)(authc - buf));
        if (!z2)
            goto out;
        if (z1 > buf)
            ok = copy_user(buf, (size_t)(z1 - buf), user, user_size);
        else
            ok = copy_user(authc, (size_t)(z2 - authc), user, user_size);
    } else if (strcmp(mech, "LOGIN") == 0) {
        ok = copy_user(buf, len, user, user_size);
    } else if (strcmp(mech, "XOAUTH2") == 0) {
        /* "user=" U ^A "auth=Bearer " T ^A ^A */
        if (len > 5 && memcmp(buf, "user=", 5) == 0) {
            unsigned char *e = memchr(buf + 5, 1, len - 5);
            if (e)
                ok = copy_user(buf + 5, (size_t)(e - buf - 5), user, user_size);
        }
    } else if (strcmp(mech, "OAUTHBEARER") == 0) {
        /* gs2-header: "n,a=U," or "y,a=U," ... ^A */
        unsigned char *comma = memchr(buf, ',', len);
        if (comma && comma + 3 < buf + len && comma[1] == 'a' && comma[2] == '=') {
            unsigned char *s = comma + 3;
            unsigned char *e = memchr(s, ',', len - (size_t)(s - buf));
            if (e) {
                /* saslname: "=2C" is ',' and "=3D" is '=' (RFC 5801) */
                char tmp[512];
                size_t k = 0;
                for (unsigned char *q = s; q < e && k + 1 < sizeof(tmp); q++) {
                    if (*q == '=' && e - q >= 3) {
                        if (q[1] == '2' && (q[2] == 'C' || q[2] == 'c')) {
                            tmp[k++] = ',';
                            q += 2;
                            continue;
                        }
                        if (q[1] == '3' && (q[2] == 'D' || q[2] == 'd')) {
                            tmp[k++] = '=';
                            q += 2;
                            continue;
                        }
                    }
                    tmp[k++] = (char)*q;
                }
                ok = copy_user((const unsigned char *)tmp, k, user, user_size);
                OPENSSL_cleanse(tmp, sizeof(tmp));
            }
        }
    }
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

int imap_id_parse(const struct imap_arg *args, size_t count,
                  void (*cb)(void *ctx, const struct imap_arg *key, const struct imap_arg *value),
                  void *ctx, const char **error_r)
{
    if (count != 1) {
        *error_r = "Invalid ID parameters";
        return -1;
    }
    if (args[0].type == IMAP_ARG_NIL)
        return 0;
    if (args[0].type != IMAP_ARG_LIST || args[0].count % 2 != 0) {
        *error_r = "Invalid ID parameters";
        return -1;
    }
    const struct imap_arg *l = args[0].list;
    for (size_t i = 0; i < args[0].count; i += 2) {
        if (!imap_arg_is_astring(&l[i]) ||
            (!imap_arg_is_astring(&l[i + 1]) && l[i + 1].type != IMAP_ARG_NIL)) {
            *error_r = "Invalid ID parameters";
            return -1;
        }
    }
    for (size_t i = 0; i < args[0].count; i += 2)
        cb(ctx, &l[i], l[i + 1].type == IMAP_ARG_NIL ? NULL : &l[i + 1]);
    return 0;
}
