/* Helpers shared by etsi014.c and etsi014_keys.c (not public). */
#ifndef QUMAIL_ETSI014_INTERNAL_H
#define QUMAIL_ETSI014_INTERNAL_H

#include "etsi014.h"

/* Sets *error_r (when not NULL) to a formatted message; returns code. */
int etsi014_fail(char **error_r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Parses a JSON object (duplicates rejected) into a new reference. */
int etsi014_load_object(const char *json, size_t len, json_t **root_r,
                        char **error_r);
char *etsi014_dump(const json_t *root, size_t *len_r);
int etsi014_opt_object(json_t *root, const char *name, json_t **out,
                       char **error_r);
int etsi014_opt_object_array(json_t *root, const char *name, json_t **out,
                             char **error_r);
void etsi014_uuid_lower(char *s);
/* Percent-decoding; NULL when malformed, when it yields a NUL byte or more
 * than max_len bytes, or when out of memory. */
char *etsi014_url_decode(const char *s, size_t len, bool plus_is_space,
                         size_t max_len);
/* Next "name=value" pair of a query in [*p, end): 1 with both decoded
 * (caller frees), 0 at the end, -1 when malformed. */
int etsi014_query_next(const char **p, const char *end, char **name_r,
                       char **value_r);
/* Strict decimal integer ("12", "-8"); 0 or -1. */
int etsi014_parse_int(const char *s, int64_t *out);

#endif
