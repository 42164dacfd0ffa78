/* qcfg: the generic reader of JSON configuration files, with positions.
 *
 * Used by the daemon's settings (config/settings.h) and by the KME
 * simulator's own file. A file is parsed with jansson (duplicate keys
 * rejected, NUL in strings rejected, at most QCFG_MAX_FILE_SIZE bytes) and
 * then scanned once more by a small scanner that records the line:column
 * of every key and value (jansson keeps no positions after parsing). The
 * caller reads it like a schema, top-down:
 *
 *     struct qcfg *doc;
 *     if (qcfg_load_file(path, &doc, &err) < 0) ...          // syntax error
 *     qcfg_node *root = qcfg_object(qcfg_root(doc));
 *     qcfg_string(qcfg_member(root, "host", QCFG_REQUIRED), &s->host);
 *     qcfg_port(qcfg_member(root, "port", 0), 0, &s->port);
 *     qcfg_node *l = qcfg_array(qcfg_member(root, "listeners", 0));
 *     for (size_t i = 0; i < qcfg_array_len(l); i++) {
 *         qcfg_node *e = qcfg_object(qcfg_array_at(l, i));
 *         ...
 *         qcfg_done(e);                          // unknown keys are errors
 *     }
 *     qcfg_done(root);
 *     if (qcfg_error_count(doc) > 0) ...         // every problem, in order
 *
 * A node stands for one JSON value. NULL is the "absent" node: every
 * function accepts it and does nothing (typed readers return 0), so
 * optional sections need no branches. Typed readers store into *out only
 * when the value is present and valid; pre-fill the defaults. On a bad
 * value they record an error and leave *out untouched. Nodes belong to the
 * document and live until qcfg_free().
 *
 * Every problem is recorded, not just the first, as
 *     FILE:LINE:COL: key 'a.b[2].c': message
 * Keys in paths that are not plain words ([A-Za-z0-9_-]) are written
 * ["quoted"]. Lines and columns start at 1; columns count characters
 * (UTF-8 code points), like jansson's own syntax errors. */
#ifndef QUMAIL_QCFG_H
#define QUMAIL_QCFG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCFG_MAX_FILE_SIZE ((size_t)4 << 20)

/* Return codes of the loaders. */
enum {
    QCFG_OK = 0,
    QCFG_EIO = -1,     /* file could not be read (or is too large) */
    QCFG_ESYNTAX = -2, /* not valid JSON, or a duplicate key */
    QCFG_ENOMEM = -3,
    QCFG_EINVALID = -4 /* loaded, but the reader recorded errors */
};
const char *qcfg_strerror(int code);

struct qcfg;                  /* a loaded document and its error list */
typedef struct qcfg_node qcfg_node; /* one JSON value of a document */

/* Loads and parses a file. On failure returns a negative code, *doc_r is
 * NULL and *error_r (caller frees) is "FILE:LINE:COL: message" for syntax
 * errors or "FILE: message" for I/O errors. */
int qcfg_load_file(const char *path, struct qcfg **doc_r, char **error_r);
/* The same for text in memory; name is used in messages in place of a file
 * name, and relative paths (qcfg_path) resolve against base_dir (NULL: the
 * current directory). */
int qcfg_load_buffer(const char *name, const char *base_dir, const char *text,
                     size_t len, struct qcfg **doc_r, char **error_r);
void qcfg_free(struct qcfg **doc);

const char *qcfg_file_name(const struct qcfg *doc);

/* The top-level value (never NULL for a loaded document). */
qcfg_node *qcfg_root(struct qcfg *doc);

/* ---- structure ---- */

/* Type assertions: return the node when it is of that type; otherwise
 * record "expected an object" (etc.) and return NULL. NULL in, NULL out. */
qcfg_node *qcfg_object(qcfg_node *node);
qcfg_node *qcfg_array(qcfg_node *node);

enum {
    QCFG_REQUIRED = 1u << 0, /* qcfg_member: absent is an error */
    QCFG_NONEMPTY = 1u << 1, /* strings and paths: "" is an error */
    QCFG_ZERO_OK = 1u << 2   /* qcfg_port: accept 0 (pick a free port) */
};

/* The member `key` of an object node (which must have passed qcfg_object,
 * or be NULL). Marks the key as known for qcfg_done(). Absent: NULL, and
 * with QCFG_REQUIRED an error "missing required key" at the object. The
 * same node is returned when a member is asked for twice. */
qcfg_node *qcfg_member(qcfg_node *obj, const char *key, unsigned flags);

/* Iterates over every member of an object (for maps with names chosen by
 * the user, e.g. "kme_links": {"site-b": {...}}). Marks each as known.
 * Start with *iter = 0; returns NULL at the end. */
qcfg_node *qcfg_object_next(qcfg_node *obj, size_t *iter, const char **key_r);
size_t qcfg_object_size(const qcfg_node *obj);

/* Records "unknown key" for every member of obj not asked for with
 * qcfg_member/qcfg_object_next. Returns the number of unknown keys. */
size_t qcfg_done(qcfg_node *obj);

size_t qcfg_array_len(const qcfg_node *arr);
/* True when node is present and a JSON string (for keys that take a
 * string or an array of strings); records nothing. */
bool qcfg_is_string(const qcfg_node *node);
qcfg_node *qcfg_array_at(qcfg_node *arr, size_t index);

/* ---- typed values. Return 1 stored, 0 absent (node NULL), -1 invalid
 * (error recorded, *out untouched). ---- */

/* A JSON string. *out (heap, or NULL) is freed and replaced by a copy. */
int qcfg_string(qcfg_node *node, unsigned flags, char **out);
/* A file or directory path: a non-empty string; a relative path is
 * resolved against the directory of the configuration file. Stored like
 * qcfg_string. */
int qcfg_path(qcfg_node *node, unsigned flags, char **out);
int qcfg_bool(qcfg_node *node, bool *out);
/* A JSON integer (not 1.0, not "1") within [min, max]. */
int qcfg_int(qcfg_node *node, int64_t min, int64_t max, int64_t *out);
/* A TCP port 1..65535 (0 too with QCFG_ZERO_OK). */
int qcfg_port(qcfg_node *node, unsigned flags, uint16_t *out);
/* One of the strings in `names` (NULL-terminated); stores its index. */
int qcfg_enum(qcfg_node *node, const char *const *names, int *out);
/* A duration: an integer number of seconds, or a string of a number and a
 * unit: "250ms", "30s", "5m", "2h", "1d". Stored in milliseconds, checked
 * against [min_ms, max_ms]. */
int qcfg_duration(qcfg_node *node, uint64_t min_ms, uint64_t max_ms,
                  uint64_t *out_ms);
/* A size: an integer number of bytes, or a string of a number and a unit:
 * "512", "64k", "10M", "1G" (K/M/G powers of 1024; case-insensitive,
 * optionally followed by "B" or "iB": "10MiB", "64KB"). Checked against
 * [min, max]. */
int qcfg_size(qcfg_node *node, uint64_t min, uint64_t max, uint64_t *out);

/* The unit parsers behind qcfg_duration/qcfg_size, for other callers
 * (command-line options). Return 0, or -1 with a static reason. */
int qcfg_parse_duration(const char *text, uint64_t *ms_r, const char **why_r);
int qcfg_parse_size(const char *text, uint64_t *bytes_r, const char **why_r);

/* ---- positions and errors ---- */

/* "listeners[0].port"; "" for the root. */
const char *qcfg_node_path(const qcfg_node *node);
/* Position of the value (and of its key, for object members; the value's
 * position otherwise). */
void qcfg_node_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r);
void qcfg_node_key_pos(const qcfg_node *node, unsigned *line_r, unsigned *col_r);

/* Records a caller's own error at a node ("FILE:L:C: key 'path': ...").
 * node NULL: at the document ("FILE: ..."). */
void qcfg_error_at(struct qcfg *doc, const qcfg_node *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void qcfg_verror_at(struct qcfg *doc, const qcfg_node *node, const char *fmt,
                    va_list ap) __attribute__((format(printf, 3, 0)));
/* The same, but pointing at the node's key rather than its value. */
void qcfg_error_at_key(struct qcfg *doc, const qcfg_node *node,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct qcfg *qcfg_node_doc(const qcfg_node *node);

size_t qcfg_error_count(const struct qcfg *doc);
/* The i-th error line, in the order found (borrowed). */
const char *qcfg_error(const struct qcfg *doc, size_t i);
/* All errors joined with '\n' (caller frees); NULL when there are none. */
char *qcfg_errors_join(const struct qcfg *doc);

#endif
