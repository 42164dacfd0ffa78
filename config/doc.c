/* Loading a document, the error list, and small string helpers. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qcfg_internal.h"

const char *qcfg_strerror(int code)
{
    switch (code) {
    case QCFG_OK: return "ok";
    case QCFG_EIO: return "cannot read file";
    case QCFG_ESYNTAX: return "JSON syntax error";
    case QCFG_ENOMEM: return "out of memory";
    case QCFG_EINVALID: return "invalid configuration";
    default: return "unknown error";
    }
}

/* ---- strings ---- */

void qcfg__buf_add(struct qcfg_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (n > SIZE_MAX - b->len - 1) {
        b->failed = true;
        return;
    }
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void qcfg__buf_trunc(struct qcfg_buf *b, size_t len)
{
    if (b->s && len <= b->len) {
        b->len = len;
        b->s[len] = '\0';
    }
}

static bool plain_word(const char *key)
{
    if (!*key)
        return false;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

void qcfg__path_key(struct qcfg_buf *b, const char *key)
{
    if (plain_word(key)) {
        if (b->len > 0)
            qcfg__buf_add(b, ".", 1);
        qcfg__buf_add(b, key, strlen(key));
        return;
    }
    qcfg__buf_add(b, "[\"", 2);
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            qcfg__buf_add(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            qcfg__buf_add(b, esc, 6);
        } else {
            qcfg__buf_add(b, (const char *)p, 1);
        }
    }
    qcfg__buf_add(b, "\"]", 2);
}

void qcfg__path_index(struct qcfg_buf *b, size_t index)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "[%zu]", index);
    qcfg__buf_add(b, tmp, (size_t)n);
}

/* ---- errors ---- */

void qcfg__error_pos(struct qcfg *doc, unsigned line, unsigned col,
                     const char *path, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char *text = NULL;
    int n;
    if (line == 0)
        n = path && *path ? asprintf(&text, "%s: key '%s': %s", doc->name, path, msg)
                          : asprintf(&text, "%s: %s", doc->name, msg);
    else if (path && *path)
        n = asprintf(&text, "%s:%u:%u: key '%s': %s", doc->name, line, col, path, msg);
    else
        n = asprintf(&text, "%s:%u:%u: %s", doc->name, line, col, msg);
    if (n < 0)
        return; /* out of memory: the count stays honest below */
    if (doc->nerrs == doc->errs_cap) {
        size_t cap = doc->errs_cap ? doc->errs_cap * 2 : 8;
        struct qcfg_err *e = realloc(doc->errs, cap * sizeof(*e));
        if (!e) {
            free(text);
            return;
        }
        doc->errs = e;
        doc->errs_cap = cap;
    }
    /* keep file order: insert after every error at or before this spot */
    size_t at = doc->nerrs;
    while (at > 0 && (doc->errs[at - 1].line > line ||
                      (doc->errs[at - 1].line == line && doc->errs[at - 1].col > col)))
        at--;
    memmove(&doc->errs[at + 1], &doc->errs[at], (doc->nerrs - at) * sizeof(*doc->errs));
    doc->errs[at] = (struct qcfg_err){.line = line, .col = col, .text = text};
    doc->nerrs++;
}

void qcfg_verror_at(struct qcfg *doc, const qcfg_node *node, const char *fmt,
                    va_list ap)
{
    if (!doc)
        return;
    if (!node) {
        qcfg__error_pos(doc, 0, 0, NULL, fmt, ap);
        return;
    }
    qcfg__error_pos(doc, node->line, node->col, node->path, fmt, ap);
}

void qcfg_error_at(struct qcfg *doc, const qcfg_node *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qcfg_verror_at(doc, node, fmt, ap);
    va_end(ap);
}

void qcfg_error_at_key(struct qcfg *doc, const qcfg_node *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!node)
        qcfg__error_pos(doc, 0, 0, NULL, fmt, ap);
    else
        qcfg__error_pos(doc, node->kline, node->kcol, node->path, fmt, ap);
    va_end(ap);
}

size_t qcfg_error_count(const struct qcfg *doc)
{
    return doc ? doc->nerrs : 0;
}

const char *qcfg_error(const struct qcfg *doc, size_t i)
{
    return doc && i < doc->nerrs ? doc->errs[i].text : NULL;
}

char *qcfg_errors_join(const struct qcfg *doc)
{
    if (!doc || doc->nerrs == 0)
        return NULL;
    struct qcfg_buf b = {0};
    for (size_t i = 0; i < doc->nerrs; i++) {
        if (i > 0)
            qcfg__buf_add(&b, "\n", 1);
        qcfg__buf_add(&b, doc->errs[i].text, strlen(doc->errs[i].text));
    }
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- loading ---- */

static char *dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *d = dirname(copy);
    char *abs = realpath(d, NULL);
    char *res = abs ? abs : strdup(d);
    free(copy);
    return res;
}

static void set_error(char **error_r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(char **error_r, const char *fmt, ...)
{
    if (!error_r)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
}

qcfg_node *qcfg__node_new(struct qcfg *doc)
{
    qcfg_node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->doc = doc;
    n->next_alloc = doc->nodes;
    doc->nodes = n;
    return n;
}

int qcfg_load_buffer(const char *name, const char *base_dir, const char *text,
                     size_t len, struct qcfg **doc_r, char **error_r)
{
    *doc_r = NULL;
    if (error_r)
        *error_r = NULL;
    if (len > QCFG_MAX_FILE_SIZE) {
        set_error(error_r, "%s: larger than %zu bytes", name, QCFG_MAX_FILE_SIZE);
        return QCFG_EIO;
    }
    json_error_t jerr;
    /* Duplicate keys are found by the scanner (all of them, with both
     * positions) rather than by JSON_REJECT_DUPLICATES (first only). */
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!root) {
        set_error(error_r, "%s:%d:%d: %s", name, jerr.line,
                  jerr.column > 0 ? jerr.column : 1, jerr.text);
        return QCFG_ESYNTAX;
    }
    struct qcfg *doc = calloc(1, sizeof(*doc));
    if (!doc) {
        json_decref(root);
        set_error(error_r, "%s: out of memory", name);
        return QCFG_ENOMEM;
    }
    doc->root = root;
    doc->name = strdup(name);
    doc->base_dir = base_dir ? strdup(base_dir) : NULL;
    doc->vpos = json_object();
    doc->kpos = json_object();
    doc->root_node = qcfg__node_new(doc);
    if (!doc->name || (base_dir && !doc->base_dir) || !doc->vpos || !doc->kpos ||
        !doc->root_node || !(doc->root_node->path = strdup("")) ||
        qcfg__scan(doc, text, len) < 0) {
        qcfg_free(&doc);
        set_error(error_r, "%s: out of memory", name);
        return QCFG_ENOMEM;
    }
    qcfg_node *r = doc->root_node;
    r->json = root;
    json_t *p = json_object_get(doc->vpos, "");
    if (p)
        qcfg__unpack(json_integer_value(p), &r->line, &r->col);
    else
        r->line = r->col = 1;
    r->kline = r->line;
    r->kcol = r->col;
    *doc_r = doc;
    return QCFG_OK;
}

int qcfg_load_file(const char *path, struct qcfg **doc_r, char **error_r)
{
    *doc_r = NULL;
    if (error_r)
        *error_r = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_error(error_r, "%s: %s", path, strerror(errno));
        return QCFG_EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        set_error(error_r, "%s: not a regular file", path);
        fclose(f);
        return QCFG_EIO;
    }
    if ((uintmax_t)st.st_size > QCFG_MAX_FILE_SIZE) {
        set_error(error_r, "%s: larger than %zu bytes", path, QCFG_MAX_FILE_SIZE);
        fclose(f);
        return QCFG_EIO;
    }
    size_t cap = (size_t)st.st_size + 1;
    char *text = malloc(cap);
    if (!text) {
        fclose(f);
        set_error(error_r, "%s: out of memory", path);
        return QCFG_ENOMEM;
    }
    /* read up to the limit even if the file grew since fstat */
    size_t len = fread(text, 1, cap, f);
    bool err = ferror(f);
    fclose(f);
    if (err || len == cap) {
        free(text);
        set_error(error_r, "%s: %s", path, err ? "read error" : "file changed while reading");
        return QCFG_EIO;
    }
    char *base = dir_of(path);
    int rc = qcfg_load_buffer(path, base, text, len, doc_r, error_r);
    free(base);
    free(text);
    return rc;
}

void qcfg_free(struct qcfg **docp)
{
    struct qcfg *doc = docp ? *docp : NULL;
    if (!doc)
        return;
    *docp = NULL;
    for (qcfg_node *n = doc->nodes, *next; n; n = next) {
        next = n->next_alloc;
        free(n->path);
        free(n->key);
        free(n);
    }
    for (size_t i = 0; i < doc->nerrs; i++)
        free(doc->errs[i].text);
    free(doc->errs);
    json_decref(doc->vpos);
    json_decref(doc->kpos);
    json_decref(doc->root);
    free(doc->name);
    free(doc->base_dir);
    free(doc);
}

const char *qcfg_file_name(const struct qcfg *doc)
{
    return doc ? doc->name : NULL;
}

qcfg_node *qcfg_root(struct qcfg *doc)
{
    return doc ? doc->root_node : NULL;
}

