/* etsi014: UUIDs, IDs, paths, query strings, Status and Error formats.
 * The request formats (Key request, Key IDs) and the Key container are in
 * etsi014_keys.c; shared helpers in etsi014_internal.h. */
#include "etsi014.h"
#include "etsi014_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *etsi014_strerror(int code)
{
    switch (code) {
    case ETSI014_OK: return "success";
    case ETSI014_EJSON: return "not a JSON object";
    case ETSI014_EFORMAT: return "invalid member";
    case ETSI014_EINVAL: return "request refused";
    case ETSI014_EUNSUPPORTED: return "extension not supported";
    case ETSI014_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

/* ---- errors ------------------------------------------------------------ */

int etsi014_fail(char **error_r, int code, const char *fmt, ...)
{
    if (error_r != NULL) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = NULL;
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        va_end(ap);
        *error_r = msg;
    }
    return code;
}

void etsi014_free_secret(char *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* ---- JSON helpers ------------------------------------------------------ */

int etsi014_load_object(const char *json, size_t len, json_t **root_r,
                        char **error_r)
{
    json_error_t jerr;
    *root_r = NULL;
    json_t *root = json_loadb(json != NULL ? json : "", json != NULL ? len : 0,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return etsi014_fail(error_r, ETSI014_EJSON,
                            "request body is not valid JSON: %s", jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return etsi014_fail(error_r, ETSI014_EJSON,
                            "request body is not a JSON object");
    }
    *root_r = root;
    return 0;
}

char *etsi014_dump(const json_t *root, size_t *len_r)
{
    char *text = json_dumps(root, JSON_COMPACT);
    if (text != NULL && len_r != NULL)
        *len_r = strlen(text);
    return text;
}

/* Optional object member: absent/null -> NULL, object -> new reference. */
int etsi014_opt_object(json_t *root, const char *name, json_t **out,
                       char **error_r)
{
    json_t *v = json_object_get(root, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "%s shall be an object", name);
    *out = json_incref(v);
    return 0;
}

/* Optional array-of-objects member. */
int etsi014_opt_object_array(json_t *root, const char *name, json_t **out,
                             char **error_r)
{
    json_t *v = json_object_get(root, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "%s shall be an array of objects", name);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_object(e))
            return etsi014_fail(error_r, ETSI014_EFORMAT,
                                "%s shall be an array of objects", name);
    }
    *out = json_incref(v);
    return 0;
}

/* ---- UUIDs ------------------------------------------------------------- */

bool etsi014_uuid_valid(const char *s, size_t len)
{
    if (s == NULL || len != ETSI014_UUID_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

int etsi014_uuid_generate(char out[ETSI014_UUID_LEN + 1])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0x0f];
    }
    out[o] = '\0';
    return 0;
}

void etsi014_uuid_lower(char *s)
{
    for (; *s != '\0'; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* ---- IDs and paths ----------------------------------------------------- */

bool etsi014_id_blank(const char *id)
{
    if (id == NULL)
        return true;
    for (; *id != '\0'; id++) {
        if (!isspace((unsigned char)*id))
            return false;
    }
    return true;
}

static const char *const endpoint_names[] = {
    [ETSI014_EP_STATUS] = "status",
    [ETSI014_EP_ENC_KEYS] = "enc_keys",
    [ETSI014_EP_DEC_KEYS] = "dec_keys",
};

const char *etsi014_endpoint_name(enum etsi014_endpoint ep)
{
    if ((unsigned)ep < sizeof(endpoint_names) / sizeof(endpoint_names[0]))
        return endpoint_names[ep];
    return "?";
}

char *etsi014_url_decode(const char *s, size_t len, bool plus_is_space,
                         size_t max_len)
{
    if (len > max_len * 3)
        return NULL;
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = OPENSSL_hexchar2int((unsigned char)s[i + 1])) < 0 ||
                (lo = OPENSSL_hexchar2int((unsigned char)s[i + 2])) < 0) {
                free(out);
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0') {
            free(out);
            return NULL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    if (o > max_len) {
        free(out);
        return NULL;
    }
    return out;
}

char *etsi014_path(enum etsi014_endpoint ep, const char *sae_id,
                   const char *query)
{
    static const char unreserved[] = "-._~";
    size_t id_len = strlen(sae_id);
    size_t qlen = query != NULL ? strlen(query) + 1 : 0;
    if (id_len > SIZE_MAX / 4)
        return NULL;
    size_t cap = sizeof("/api/v1/keys/") + id_len * 3 + 1 +
                 strlen(etsi014_endpoint_name(ep)) + qlen + 1;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t o = (size_t)snprintf(out, cap, "/api/v1/keys/");
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < id_len; i++) {
        unsigned char c = (unsigned char)sae_id[i];
        if (isalnum(c) || strchr(unreserved, c) != NULL) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    snprintf(out + o, cap - o, "/%s%s%s", etsi014_endpoint_name(ep),
             query != NULL ? "?" : "", query != NULL ? query : "");
    return out;
}

int etsi014_path_parse(const char *target, size_t len,
                       enum etsi014_endpoint *ep_r, char **sae_id_r,
                       const char **query_r, size_t *query_len_r)
{
    static const char prefix[] = "/api/v1/keys/";
    const size_t plen = sizeof(prefix) - 1;
    *sae_id_r = NULL;
    *query_r = NULL;
    *query_len_r = 0;
    const char *q = memchr(target, '?', len);
    size_t path_len = q != NULL ? (size_t)(q - target) : len;
    if (path_len <= plen || memcmp(target, prefix, plen) != 0)
        return -1;
    const char *id = target + plen;
    const char *slash = memchr(id, '/', path_len - plen);
    if (slash == NULL || slash == id)
        return -1;
    const char *name = slash + 1;
    size_t name_len = (size_t)(target + path_len - name);
    int ep = -1;
    for (size_t i = 0; i < sizeof(endpoint_names) / sizeof(endpoint_names[0]); i++) {
        if (strlen(endpoint_names[i]) == name_len &&
            memcmp(endpoint_names[i], name, name_len) == 0)
            ep = (int)i;
    }
    if (ep < 0)
        return -1;
    char *sae = etsi014_url_decode(id, (size_t)(slash - id), false,
                                   ETSI014_ID_MAX);
    if (sae == NULL)
        return -1;
    *ep_r = (enum etsi014_endpoint)ep;
    *sae_id_r = sae;
    if (q != NULL) {
        *query_r = q + 1;
        *query_len_r = len - path_len - 1;
    }
    return 0;
}

/* ---- query strings ----------------------------------------------------- */

int etsi014_query_next(const char **p, const char *end, char **name_r,
                       char **value_r)
{
    *name_r = NULL;
    *value_r = NULL;
    while (*p < end && **p == '&')
        (*p)++;
    if (*p >= end)
        return 0;
    const char *amp = memchr(*p, '&', (size_t)(end - *p));
    const char *pe = amp != NULL ? amp : end;
    const char *eq = memchr(*p, '=', (size_t)(pe - *p));
    const char *ne = eq != NULL ? eq : pe;
    *name_r = etsi014_url_decode(*p, (size_t)(ne - *p), true, 64);
    *value_r = eq != NULL ? etsi014_url_decode(eq + 1, (size_t)(pe - eq - 1),
                                               true, 256)
                          : strdup("");
    *p = pe;
    if (*name_r == NULL || *value_r == NULL) {
        free(*name_r);
        free(*value_r);
        *name_r = *value_r = NULL;
        return -1;
    }
    return 1;
}

int etsi014_parse_int(const char *s, int64_t *out)
{
    /* Optional sign and digits only: "3", "-8"; no spaces, no "0x". */
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (*p == '\0')
        return -1;
    for (const char *d = p; *d != '\0'; d++) {
        if (!isdigit((unsigned char)*d))
            return -1;
    }
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* ---- Status ------------------------------------------------------------ */

static int get_string(json_t *root, const char *name, char **out,
                      char **error_r)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL)
        return etsi014_fail(error_r, ETSI014_EFORMAT, "%s is missing", name);
    if (!json_is_string(v))
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "%s shall be a string", name);
    *out = strndup(json_string_value(v), json_string_length(v));
    return *out != NULL ? 0 : ETSI014_ENOMEM;
}

static int get_int(json_t *root, const char *name, int64_t *out, char **error_r)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL)
        return etsi014_fail(error_r, ETSI014_EFORMAT, "%s is missing", name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "%s shall be a non-negative integer", name);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

int etsi014_status_decode(const char *json, size_t len,
                          struct etsi014_status *st, char **error_r)
{
    memset(st, 0, sizeof(*st));
    if (error_r != NULL)
        *error_r = NULL;
    json_t *root;
    int ret = etsi014_load_object(json, len, &root, error_r);
    if (ret < 0)
        return ret;
    struct {
        const char *name;
        char **out;
    } strs[] = {
        {"source_KME_ID", &st->source_kme_id},
        {"target_KME_ID", &st->target_kme_id},
        {"master_SAE_ID", &st->master_sae_id},
        {"slave_SAE_ID", &st->slave_sae_id},
    };
    struct {
        const char *name;
        int64_t *out;
    } ints[] = {
        {"key_size", &st->key_size},
        {"stored_key_count", &st->stored_key_count},
        {"max_key_count", &st->max_key_count},
        {"max_key_per_request", &st->max_key_per_request},
        {"max_key_size", &st->max_key_size},
        {"min_key_size", &st->min_key_size},
        {"max_SAE_ID_count", &st->max_sae_id_count},
    };
    for (size_t i = 0; ret == 0 && i < sizeof(strs) / sizeof(strs[0]); i++)
        ret = get_string(root, strs[i].name, strs[i].out, error_r);
    for (size_t i = 0; ret == 0 && i < sizeof(ints) / sizeof(ints[0]); i++)
        ret = get_int(root, ints[i].name, ints[i].out, error_r);
    if (ret == 0)
        ret = etsi014_opt_object(root, "status_extension",
                                 &st->status_extension, error_r);
    json_decref(root);
    if (ret < 0)
        etsi014_status_clear(st);
    return ret;
}

char *etsi014_status_encode(const struct etsi014_status *st, size_t *len_r)
{
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "source_KME_ID", st->source_kme_id ? st->source_kme_id : "",
        "target_KME_ID", st->target_kme_id ? st->target_kme_id : "",
        "master_SAE_ID", st->master_sae_id ? st->master_sae_id : "",
        "slave_SAE_ID", st->slave_sae_id ? st->slave_sae_id : "",
        "key_size", (json_int_t)st->key_size,
        "stored_key_count", (json_int_t)st->stored_key_count,
        "max_key_count", (json_int_t)st->max_key_count,
        "max_key_per_request", (json_int_t)st->max_key_per_request,
        "max_key_size", (json_int_t)st->max_key_size,
        "min_key_size", (json_int_t)st->min_key_size,
        "max_SAE_ID_count", (json_int_t)st->max_sae_id_count);
    if (root == NULL)
        return NULL;
    if (st->status_extension != NULL &&
        json_object_set(root, "status_extension", st->status_extension) < 0) {
        json_decref(root);
        return NULL;
    }
    char *text = etsi014_dump(root, len_r);
    json_decref(root);
    return text;
}

void etsi014_status_clear(struct etsi014_status *st)
{
    free(st->source_kme_id);
    free(st->target_kme_id);
    free(st->master_sae_id);
    free(st->slave_sae_id);
    json_decref(st->status_extension);
    memset(st, 0, sizeof(*st));
}

/* ---- Error ------------------------------------------------------------- */

int etsi014_error_decode(const char *json, size_t len,
                         struct etsi014_error *err, char **error_r)
{
    memset(err, 0, sizeof(*err));
    if (error_r != NULL)
        *error_r = NULL;
    json_t *root;
    int ret = etsi014_load_object(json, len, &root, error_r);
    if (ret < 0)
        return ret;
    ret = get_string(root, "message", &err->message, error_r);
    if (ret == 0)
        ret = etsi014_opt_object_array(root, "details", &err->details, error_r);
    json_decref(root);
    if (ret < 0)
        etsi014_error_clear(err);
    return ret;
}

char *etsi014_error_encode(const char *message, const json_t *details,
                           size_t *len_r)
{
    json_t *root = json_pack("{s:s}", "message", message);
    if (root == NULL)
        return NULL;
    if (details != NULL &&
        json_object_set(root, "details", (json_t *)details) < 0) {
        json_decref(root);
        return NULL;
    }
    char *text = etsi014_dump(root, len_r);
    json_decref(root);
    return text;
}

void etsi014_error_clear(struct etsi014_error *err)
{
    free(err->message);
    json_decref(err->details);
    memset(err, 0, sizeof(*err));
}
