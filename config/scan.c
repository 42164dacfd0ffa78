/* The position scanner: a second pass over JSON text that jansson has
 * already accepted, recording where every key and value starts.
 *
 * jansson gives positions only for syntax errors, so this walk mirrors the
 * document structure, builds each value's display path ("a.b[2].c") and
 * stores line:column in two jansson objects used as maps (path -> packed
 * position). Because the text is known to be valid JSON the scanner only
 * has to find token boundaries; it still never reads past the end. It also
 * finds duplicate keys itself (jansson would stop at the first one), so all
 * of them are reported with both positions. */
#include <stdarg.h>
#include <string.h>

#include "qcfg_internal.h"

struct scan {
    struct qcfg *doc;
    const char *p, *end;
    unsigned line, col;
    struct qcfg_buf path;
    int depth;
    bool oom;
};

#define SCAN_MAX_DEPTH 4096 /* jansson stops at 2048 */

static void adv(struct scan *s)
{
    unsigned char c = (unsigned char)*s->p++;
    if (c == '\n') {
        s->line++;
        s->col = 1;
    } else if ((c & 0xc0) != 0x80) { /* count code points, not bytes */
        s->col++;
    }
}

static void skip_ws(struct scan *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        adv(s);
}

/* At an opening quote: moves past the string. Returns its raw bytes
 * (without quotes) through start/len and whether it holds escapes. */
static void skip_string(struct scan *s, const char **start, size_t *len,
                        bool *escaped)
{
    *escaped = false;
    adv(s); /* '"' */
    *start = s->p;
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\') {
            *escaped = true;
            adv(s);
            if (s->p >= s->end)
                break;
        }
        adv(s);
    }
    *len = (size_t)(s->p - *start);
    if (s->p < s->end)
        adv(s); /* closing '"' */
}

static void record(struct scan *s, json_t *map, unsigned line, unsigned col)
{
    if (s->path.failed || json_object_set_new(map, s->path.s ? s->path.s : "",
                                              json_integer(qcfg__pack(line, col))) < 0)
        s->oom = true;
}

static void doc_error(struct scan *s, unsigned line, unsigned col,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void doc_error(struct scan *s, unsigned line, unsigned col,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qcfg__error_pos(s->doc, line, col, s->path.s ? s->path.s : "", fmt, ap);
    va_end(ap);
}

static void scan_value(struct scan *s, bool check_dups);

static void scan_object(struct scan *s, bool check_dups)
{
    adv(s); /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        adv(s);
        return;
    }
    size_t base = s->path.len;
    while (s->p < s->end && !s->oom) {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return; /* cannot happen for jansson-accepted text */
        unsigned kl = s->line, kc = s->col;
        const char *raw;
        size_t rawlen;
        bool escaped;
        const char *qstart = s->p;
        skip_string(s, &raw, &rawlen, &escaped);

        json_t *decoded = NULL;
        const char *key;
        char *plain = NULL;
        if (escaped) {
            /* Let jansson decode the escapes of the quoted token. */
            decoded = json_loadb(qstart, (size_t)(s->p - qstart),
                                 JSON_DECODE_ANY, NULL);
            key = json_is_string(decoded) ? json_string_value(decoded) : "";
        } else {
            plain = strndup(raw, rawlen);
            if (!plain) {
                s->oom = true;
                return;
            }
            key = plain;
        }
        qcfg__path_key(&s->path, key);
        json_decref(decoded);
        free(plain);

        bool dup_here = false;
        if (check_dups && !s->path.failed) {
            json_t *prev = json_object_get(s->doc->kpos, s->path.s);
            if (prev) {
                unsigned pl, pc;
                qcfg__unpack(json_integer_value(prev), &pl, &pc);
                doc_error(s, kl, kc, "duplicate key (first defined at %u:%u)",
                          pl, pc);
                dup_here = true;
            }
        }
        record(s, s->doc->kpos, kl, kc);

        skip_ws(s);
        if (s->p < s->end && *s->p == ':')
            adv(s);
        /* Inside a duplicated member every nested key would look
         * duplicated too: report the outer one only. */
        scan_value(s, check_dups && !dup_here);
        qcfg__buf_trunc(&s->path, base);
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            adv(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}')
            adv(s);
        return;
    }
}

static void scan_array(struct scan *s, bool check_dups)
{
    adv(s); /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        adv(s);
        return;
    }
    size_t base = s->path.len;
    for (size_t i = 0; s->p < s->end && !s->oom; i++) {
        qcfg__path_index(&s->path, i);
        scan_value(s, check_dups);
        qcfg__buf_trunc(&s->path, base);
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            adv(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']')
            adv(s);
        return;
    }
}

static void scan_value(struct scan *s, bool check_dups)
{
    skip_ws(s);
    if (s->p >= s->end || s->oom)
        return;
    if (s->depth >= SCAN_MAX_DEPTH)
        return;
    record(s, s->doc->vpos, s->line, s->col);
    if (!s->path.s || s->path.len == 0) {
        /* the root value's key position is its own */
        record(s, s->doc->kpos, s->line, s->col);
    }
    s->depth++;
    switch (*s->p) {
    case '{':
        scan_object(s, check_dups);
        break;
    case '[':
        scan_array(s, check_dups);
        break;
    case '"': {
        const char *raw;
        size_t len;
        bool esc;
        skip_string(s, &raw, &len, &esc);
        break;
    }
    default: /* number, true, false, null */
        while (s->p < s->end && !strchr(",]} \t\r\n", *s->p))
            adv(s);
        break;
    }
    s->depth--;
}

int qcfg__scan(struct qcfg *doc, const char *text, size_t len)
{
    struct scan s = {
        .doc = doc, .p = text, .end = text + len, .line = 1, .col = 1,
    };
    qcfg__buf_add(&s.path, "", 0);
    scan_value(&s, true);
    bool oom = s.oom || s.path.failed;
    free(s.path.s);
    return oom ? QCFG_ENOMEM : 0;
}
