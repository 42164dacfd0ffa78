/* config module internals shared by its files; not a public header. */
#ifndef QUMAIL_QCFG_INTERNAL_H
#define QUMAIL_QCFG_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "qcfg.h"

struct qcfg_err {
    unsigned line, col; /* 0:0 for document-level errors */
    char *text;         /* full line "FILE:L:C: ..." (owned) */
};

struct qcfg {
    char *name;      /* file name as given, used in messages */
    char *base_dir;  /* directory relative paths resolve against (or NULL) */
    json_t *root;    /* the parsed document (owned) */
    json_t *vpos;    /* path -> packed line:col of the value */
    json_t *kpos;    /* path -> packed line:col of the member's key */
    qcfg_node *root_node;
    qcfg_node *nodes; /* every node, for freeing (linked by next_alloc) */
    struct qcfg_err *errs; /* sorted by position (stable) */
    size_t nerrs, errs_cap;
};

struct qcfg_node {
    struct qcfg *doc;
    json_t *json;         /* borrowed from doc->root; NULL: absent member */
    char *path;           /* display path (owned) */
    char *key;            /* member key (owned), NULL for elements / root */
    size_t index;         /* array index for elements */
    unsigned line, col;   /* of the value (or of the parent when absent) */
    unsigned kline, kcol; /* of the key (== value position otherwise) */
    qcfg_node *children;  /* members / elements asked for so far */
    qcfg_node *next_sibling;
    qcfg_node *next_alloc;
};

/* Growable string. */
struct qcfg_buf {
    char *s;
    size_t len, cap;
    bool failed; /* out of memory happened */
};
void qcfg__buf_add(struct qcfg_buf *b, const char *s, size_t n);
void qcfg__buf_trunc(struct qcfg_buf *b, size_t len);
/* Appends the display form of a member key / an element index. */
void qcfg__path_key(struct qcfg_buf *b, const char *key);
void qcfg__path_index(struct qcfg_buf *b, size_t index);

static inline json_int_t qcfg__pack(unsigned line, unsigned col)
{
    return ((json_int_t)line << 32) | (json_int_t)col;
}
static inline void qcfg__unpack(json_int_t v, unsigned *line, unsigned *col)
{
    *line = (unsigned)(v >> 32);
    *col = (unsigned)(v & 0xffffffff);
}

/* Walks the text (already accepted by jansson) and fills doc->vpos and
 * doc->kpos; records "duplicate key" errors. Returns 0 or QCFG_ENOMEM. */
int qcfg__scan(struct qcfg *doc, const char *text, size_t len);

/* A new node owned by doc (freed by qcfg_free), or NULL. */
qcfg_node *qcfg__node_new(struct qcfg *doc);

/* Records an error at an explicit position (0:0 = none). */
void qcfg__error_pos(struct qcfg *doc, unsigned line, unsigned col,
                     const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

#endif
