/* Reading a document: structure (members, elements, unknown keys) and
 * typed values with range checks. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qcfg_internal.h"

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

static void err(const qcfg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void err(const qcfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qcfg_verror_at(n->doc, n, fmt, ap);
    va_end(ap);
}

static void type_err(const qcfg_node *n, const char *expected)
{
    err(n, "expected %s, got %s", expected, type_name(n->json));
}

/* Looks the node's path up in a position map. */
static bool lookup_pos(json_t *map, const char *path, unsigned *line, unsigned *col)
{
    json_t *p = json_object_get(map, path);
    if (!p)
        return false;
    qcfg__unpack(json_integer_value(p), line, col);
    return true;
}

static qcfg_node *child_new(qcfg_node *parent, json_t *json, const char *key,
                            size_t index)
{
    struct qcfg *doc = parent->doc;
    qcfg_node *n = qcfg__node_new(doc);
    if (!n)
        return NULL;
    struct qcfg_buf b = {0};
    qcfg__buf_add(&b, parent->path, strlen(parent->path));
    if (key)
        qcfg__path_key(&b, key);
    else
        qcfg__path_index(&b, index);
    if (b.failed || (key && !(n->key = strdup(key)))) {
        free(b.s);
        return NULL; /* stays on doc->nodes, freed with the document */
    }
    n->path = b.s;
    n->json = json;
    n->index = index;
    /* absent members point at their object */
    if (!json || !lookup_pos(doc->vpos, n->path, &n->line, &n->col)) {
        n->line = parent->line;
        n->col = parent->col;
    }
    if (!json || !lookup_pos(doc->kpos, n->path, &n->kline, &n->kcol)) {
        n->kline = n->line;
        n->kcol = n->col;
    }
    n->next_sibling = parent->children;
    parent->children = n;
    return n;
}

static qcfg_node *find_child(qcfg_node *parent, const char *key, size_t index)
{
    for (qcfg_node *c = parent->children; c; c = c->next_sibling) {
        if (key ? (c->key && strcmp(c->key, key) == 0)
                : (!c->key && c->index == index))
            return c;
    }
    return NULL;
}

qcfg_node *qcfg_object(qcfg_node *node)
{
    if (!node)
        return NULL;
    if (!json_is_object(node->json)) {
        type_err(node, "an object");
        return NULL;
    }
    return node;
}

qcfg_node *qcfg_array(qcfg_node *node)
{
    if (!node)
        return NULL;
    if (!json_is_array(node->json)) {
        type_err(node, "an array");
        return NULL;
    }
    return node;
}

qcfg_node *qcfg_member(qcfg_node *obj, const char *key, unsigned flags)
{
    if (!obj || !json_is_object(obj->json))
        return NULL;
    qcfg_node *c = find_child(obj, key, 0);
    if (!c) {
        /* absent members are remembered too: qcfg_done suggests them */
        c = child_new(obj, json_object_get(obj->json, key), key, 0);
        if (!c)
            return NULL;
    }
    if (!c->json) {
        if (flags & QCFG_REQUIRED)
            err(c, "missing required key");
        return NULL;
    }
    return c;
}

qcfg_node *qcfg_object_next(qcfg_node *obj, size_t *iter, const char **key_r)
{
    if (!obj || !json_is_object(obj->json))
        return NULL;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(obj->json, key, val) {
        if (i++ < *iter)
            continue;
        *iter = i;
        qcfg_node *c = qcfg_member(obj, key, 0);
        if (key_r)
            *key_r = c ? c->key : key;
        return c;
    }
    return NULL;
}

size_t qcfg_object_size(const qcfg_node *obj)
{
    return obj && json_is_object(obj->json) ? json_object_size(obj->json) : 0;
}

/* Levenshtein distance, capped: only short keys are compared. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            if (up + 1 < best)
                best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

size_t qcfg_done(qcfg_node *obj)
{
    if (!obj || !json_is_object(obj->json))
        return 0;
    size_t unknown = 0;
    const char *key;
    json_t *val;
    json_object_foreach(obj->json, key, val) {
        if (find_child(obj, key, 0))
            continue;
        unknown++;
        /* a throw-away node gives the key's position and path */
        qcfg_node *c = child_new(obj, val, key, 0);
        if (!c)
            continue;
        const char *best = NULL;
        size_t best_d = 3;
        for (qcfg_node *k = obj->children; k; k = k->next_sibling) {
            if (k == c || !k->key || k->json)
                continue; /* suggest only known keys that are absent */
            size_t d = edit_distance(key, k->key);
            if (d < best_d) {
                best_d = d;
                best = k->key;
            }
        }
        if (best)
            qcfg_error_at_key(obj->doc, c, "unknown key (did you mean '%s'?)", best);
        else
            qcfg_error_at_key(obj->doc, c, "unknown key");
    }
    return unknown;
}

bool qcfg_is_string(const qcfg_node *node)
{
    return node && node->json && json_is_string(node->json);
}

size_t qcfg_array_len(const qcfg_node *arr)
{
    return arr && json_is_array(arr->json) ? json_array_size(arr->json) : 0;
}

qcfg_node *qcfg_array_at(qcfg_node *arr, size_t index)
{
    if (!arr || !json_is_array(arr->json) || index >= json_array_size(arr->json))
        return NULL;
    qcfg_node *c = find_child(arr, NULL, index);
    return c ? c : child_new(arr, json_array_get(arr->json, index), NULL, index);
}

/* ---- typed values ---- */

static int check_string(qcfg_node *node, unsigned flags, const char **s_r)
{
    if (!json_is_string(node->json)) {
        type_err(node, "a string");
        return -1;
    }
    const char *s = json_string_value(node->json);
    if ((flags & QCFG_NONEMPTY) && !*s) {
        err(node, "must not be empty");
        return -1;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            err(node, "control characters are not allowed");
            return -1;
        }
    }
    *s_r = s;
    return 0;
}

static int store_string(qcfg_node *node, char **out, const char *s)
{
    char *copy = strdup(s);
    if (!copy) {
        err(node, "out of memory");
        return -1;
    }
    free(*out);
    *out = copy;
    return 1;
}

int qcfg_string(qcfg_node *node, unsigned flags, char **out)
{
    const char *s;
    if (!node)
        return 0;
    if (check_string(node, flags, &s) < 0)
        return -1;
    return store_string(node, out, s);
}

int qcfg_path(qcfg_node *node, unsigned flags, char **out)
{
    const char *s;
    if (!node)
        return 0;
    if (check_string(node, flags | QCFG_NONEMPTY, &s) < 0)
        return -1;
    const char *base = node->doc->base_dir;
    if (s[0] == '/' || !base)
        return store_string(node, out, s);
    const char *rel = s;
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    char *joined = NULL;
    if (asprintf(&joined, "%s/%s", base, *rel ? rel : ".") < 0) {
        err(node, "out of memory");
        return -1;
    }
    if (strlen(joined) >= PATH_MAX) {
        free(joined);
        err(node, "path longer than %d bytes", PATH_MAX - 1);
        return -1;
    }
    free(*out);
    *out = joined;
    return 1;
}

int qcfg_bool(qcfg_node *node, bool *out)
{
    if (!node)
        return 0;
    if (!json_is_boolean(node->json)) {
        type_err(node, "true or false");
        return -1;
    }
    *out = json_is_true(node->json);
    return 1;
}

int qcfg_int(qcfg_node *node, int64_t min, int64_t max, int64_t *out)
{
    if (!node)
        return 0;
    if (!json_is_integer(node->json)) {
        type_err(node, "an integer");
        return -1;
    }
    json_int_t v = json_integer_value(node->json);
    if (v < min || v > max) {
        err(node, "%" PRId64 " is out of range (%" PRId64 "..%" PRId64 ")",
            (int64_t)v, min, max);
        return -1;
    }
    *out = v;
    return 1;
}

int qcfg_port(qcfg_node *node, unsigned flags, uint16_t *out)
{
    if (!node)
        return 0;
    if (!json_is_integer(node->json)) {
        type_err(node, "a port number");
        return -1;
    }
    json_int_t v = json_integer_value(node->json);
    json_int_t lo = (flags & QCFG_ZERO_OK) ? 0 : 1;
    if (v < lo || v > 65535) {
        err(node, "port %" PRId64 " is out of range (%d..65535)", (int64_t)v, (int)lo);
        return -1;
    }
    *out = (uint16_t)v;
    return 1;
}

int qcfg_enum(qcfg_node *node, const char *const *names, int *out)
{
    if (!node)
        return 0;
    if (json_is_string(node->json)) {
        const char *s = json_string_value(node->json);
        for (int i = 0; names[i]; i++) {
            if (strcmp(s, names[i]) == 0) {
                *out = i;
                return 1;
            }
        }
    }
    char list[512];
    size_t off = 0;
    list[0] = '\0';
    for (int i = 0; names[i] && off < sizeof(list); i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                i ? ", " : "", names[i]);
    if (json_is_string(node->json))
        err(node, "'%s' is not one of: %s", json_string_value(node->json), list);
    else
        err(node, "expected one of: %s (a string), got %s", list, type_name(node->json));
    return -1;
}

/* Parses "<digits><unit>" where the unit is looked up in a table. */
struct unit {
    const char *name;
    uint64_t mult;
};

static int parse_units(const char *text, const struct unit *units,
                       uint64_t *val_r, const char **why_r)
{
    const char *p = text;
    uint64_t v = 0;
    if (*p < '0' || *p > '9') {
        *why_r = "must start with a number";
        return -1;
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            *why_r = "number too large";
            return -1;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    for (const struct unit *u = units; u->name; u++) {
        if (strcasecmp(p, u->name) != 0)
            continue;
        if (u->mult && v > UINT64_MAX / u->mult) {
            *why_r = "number too large";
            return -1;
        }
        *val_r = v * u->mult;
        return 0;
    }
    *why_r = "unknown unit";
    return -1;
}

int qcfg_parse_duration(const char *text, uint64_t *ms_r, const char **why_r)
{
    static const struct unit units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000},
        {"h", 3600000}, {"d", 86400000}, {NULL, 0},
    };
    const char *why = NULL;
    int rc = parse_units(text, units, ms_r, &why);
    if (rc < 0 && why_r)
        *why_r = strcmp(why, "unknown unit") == 0
                     ? "unknown unit (use ms, s, m, h or d)" : why;
    return rc;
}

int qcfg_parse_size(const char *text, uint64_t *bytes_r, const char **why_r)
{
    static const struct unit units[] = {
        {"", 1}, {"b", 1},
        {"k", 1ull << 10}, {"kb", 1ull << 10}, {"kib", 1ull << 10},
        {"m", 1ull << 20}, {"mb", 1ull << 20}, {"mib", 1ull << 20},
        {"g", 1ull << 30}, {"gb", 1ull << 30}, {"gib", 1ull << 30},
        {NULL, 0},
    };
    const char *why = NULL;
    int rc = parse_units(text, units, bytes_r, &why);
    if (rc < 0 && why_r)
        *why_r = strcmp(why, "unknown unit") == 0
                     ? "unknown unit (use k, M or G, optionally with B or iB)" : why;
    return rc;
}

static int number_with_unit(qcfg_node *node, bool duration, uint64_t min,
                            uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (json_is_integer(node->json)) {
        json_int_t i = json_integer_value(node->json);
        if (i < 0) {
            err(node, "must not be negative");
            return -1;
        }
        v = (uint64_t)i;
        if (duration) {
            if (v > UINT64_MAX / 1000) {
                err(node, "number too large");
                return -1;
            }
            v *= 1000;
        }
    } else if (json_is_string(node->json)) {
        const char *why = "invalid";
        int rc = duration ? qcfg_parse_duration(json_string_value(node->json), &v, &why)
                          : qcfg_parse_size(json_string_value(node->json), &v, &why);
        if (rc < 0) {
            err(node, "invalid %s '%s': %s", duration ? "duration" : "size",
                json_string_value(node->json), why);
            return -1;
        }
    } else {
        type_err(node, duration ? "a duration (seconds, or a string like \"30s\")"
                                : "a size (bytes, or a string like \"10M\")");
        return -1;
    }
    if (v < min || v > max) {
        if (duration)
            err(node, "duration out of range (%" PRIu64 "ms..%" PRIu64 "ms)", min, max);
        else
            err(node, "size out of range (%" PRIu64 "..%" PRIu64 " bytes)", min, max);
        return -1;
    }
    *out = v;
    return 1;
}

int qcfg_duration(qcfg_node *node, uint64_t min_ms, uint64_t max_ms, uint64_t *out_ms)
{
    return node ? number_with_unit(node, true, min_ms, max_ms, out_ms) : 0;
}

int qcfg_size(qcfg_node *node, uint64_t min, uint64_t max, uint64_t *out)
{
    return node ? number_with_unit(node, false, min, max, out) : 0;
}

/* ---- positions ---- */

const char *qcfg_node_path(const qcfg_node *node)
{
    return node ? node->path : "";
}

void qcfg_node_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r)
{
    *line_r = node ? node->line : 0;
    *col_r = node ? node->col : 0;
}

void qcfg_node_key_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r)
{
    *line_r = node ? node->kline : 0;
    *col_r = node ? node->kcol : 0;
}

struct qcfg *qcfg_node_doc(const qcfg_node *node)
{
    return node ? node->doc : NULL;
}
