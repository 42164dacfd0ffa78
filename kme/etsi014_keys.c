/* etsi014: Key request (6.2) with its validation, Key container (6.3) and
 * Key IDs (6.4). */
#include "etsi014.h"
#include "etsi014_internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on decoded arrays (the HTTP body limit bounds them too). */
#define MAX_ADDITIONAL_IDS 1024
#define MAX_KEYS 100000

static bool all_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isspace((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* ---- Key request ------------------------------------------------------- */

static int opt_int(json_t *root, const char *name, bool *has, int64_t *out,
                   char **error_r)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "%s shall be an integer", name);
    *has = true;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

int etsi014_key_request_decode(const char *body, size_t len,
                               struct etsi014_key_request *req,
                               char **error_r)
{
    memset(req, 0, sizeof(*req));
    if (error_r != NULL)
        *error_r = NULL;
    if (body == NULL || all_space(body, len))
        return 0;
    json_t *root;
    int ret = etsi014_load_object(body, len, &root, error_r);
    if (ret < 0)
        return ret;
    ret = opt_int(root, "number", &req->has_number, &req->number, error_r);
    if (ret == 0)
        ret = opt_int(root, "size", &req->has_size, &req->size, error_r);
    json_t *add = json_object_get(root, "additional_slave_SAE_IDs");
    if (ret == 0 && add != NULL) {
        if (!json_is_array(add) || json_array_size(add) > MAX_ADDITIONAL_IDS) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "additional_slave_SAE_IDs shall be an array of "
                               "strings");
        } else if (json_array_size(add) > 0) {
            req->additional_slave_sae_ids =
                calloc(json_array_size(add), sizeof(char *));
            if (req->additional_slave_sae_ids == NULL)
                ret = ETSI014_ENOMEM;
        }
        size_t i;
        json_t *e;
        json_array_foreach(add, i, e) {
            if (ret < 0)
                break;
            if (!json_is_string(e) || json_string_length(e) > ETSI014_ID_MAX ||
                strlen(json_string_value(e)) != json_string_length(e)) {
                ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                                   "additional_slave_SAE_IDs shall be an array "
                                   "of SAE ID strings");
                break;
            }
            req->additional_slave_sae_ids[i] = strdup(json_string_value(e));
            if (req->additional_slave_sae_ids[i] == NULL) {
                ret = ETSI014_ENOMEM;
                break;
            }
            req->additional_count = i + 1;
        }
    }
    if (ret == 0)
        ret = etsi014_opt_object_array(root, "extension_mandatory",
                                       &req->extension_mandatory, error_r);
    if (ret == 0)
        ret = etsi014_opt_object_array(root, "extension_optional",
                                       &req->extension_optional, error_r);
    json_decref(root);
    if (ret < 0)
        etsi014_key_request_clear(req);
    return ret;
}

int etsi014_key_request_from_query(const char *query, size_t len,
                                   struct etsi014_key_request *req,
                                   char **error_r)
{
    memset(req, 0, sizeof(*req));
    if (error_r != NULL)
        *error_r = NULL;
    if (query == NULL)
        return 0;
    const char *p = query, *end = query + len;
    char *name, *value;
    int r;
    while ((r = etsi014_query_next(&p, end, &name, &value)) > 0) {
        bool *has = NULL;
        int64_t *out = NULL;
        if (strcmp(name, "number") == 0) {
            has = &req->has_number;
            out = &req->number;
        } else if (strcmp(name, "size") == 0) {
            has = &req->has_size;
            out = &req->size;
        }
        int ret = 0;
        if (has == NULL)
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "unknown query parameter; the GET form of "
                               "enc_keys takes only number and size");
        else if (*has)
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "%s is given more than once", name);
        else if (etsi014_parse_int(value, out) < 0)
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "%s shall be an integer", name);
        else
            *has = true;
        free(name);
        free(value);
        if (ret < 0) {
            memset(req, 0, sizeof(*req));
            return ret;
        }
    }
    if (r < 0) {
        memset(req, 0, sizeof(*req));
        return etsi014_fail(error_r, ETSI014_EFORMAT, "malformed query string");
    }
    return 0;
}

char *etsi014_key_request_encode(const struct etsi014_key_request *req,
                                 size_t *len_r)
{
    json_t *root = json_object();
    if (root == NULL)
        return NULL;
    int bad = 0;
    if (req->has_number)
        bad |= json_object_set_new(root, "number", json_integer(req->number));
    if (req->has_size)
        bad |= json_object_set_new(root, "size", json_integer(req->size));
    if (req->additional_count > 0) {
        json_t *a = json_array();
        for (size_t i = 0; a != NULL && i < req->additional_count; i++)
            bad |= json_array_append_new(
                a, json_string(req->additional_slave_sae_ids[i]));
        bad |= json_object_set_new(root, "additional_slave_SAE_IDs", a);
    }
    if (req->extension_mandatory != NULL)
        bad |= json_object_set(root, "extension_mandatory",
                               req->extension_mandatory);
    if (req->extension_optional != NULL)
        bad |= json_object_set(root, "extension_optional",
                               req->extension_optional);
    char *text = bad == 0 ? etsi014_dump(root, len_r) : NULL;
    json_decref(root);
    return text;
}

bool etsi014_key_request_is_simple(const struct etsi014_key_request *req)
{
    return req->additional_count == 0 && req->extension_mandatory == NULL &&
           req->extension_optional == NULL;
}

void etsi014_key_request_clear(struct etsi014_key_request *req)
{
    for (size_t i = 0; i < req->additional_count; i++)
        free(req->additional_slave_sae_ids[i]);
    free(req->additional_slave_sae_ids);
    json_decref(req->extension_mandatory);
    json_decref(req->extension_optional);
    memset(req, 0, sizeof(*req));
}

int etsi014_key_request_validate(const struct etsi014_key_request *req,
                                 const struct etsi014_limits *lim,
                                 const char *master_sae_id,
                                 const char *slave_sae_id,
                                 int64_t *number_r, int64_t *size_r,
                                 char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    if (etsi014_id_blank(slave_sae_id))
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "slave_SAE_ID shall not be blank");
    if (etsi014_id_blank(master_sae_id))
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "master_SAE_ID shall not be blank");
    if (strcmp(master_sae_id, slave_sae_id) == 0)
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "slave_SAE_ID shall differ from master_SAE_ID");

    int64_t number = req->has_number ? req->number : 1;
    if (number <= 0)
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "number shall be a positive integer");
    if (number > lim->max_key_per_request)
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "number shall not exceed max_key_per_request "
                            "(%" PRId64 ")", lim->max_key_per_request);

    int64_t size = req->has_size ? req->size : lim->key_size;
    if (size <= 0)
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "size shall be a positive integer");
    if (lim->multiple_of_8_only && size % 8 != 0)
        return etsi014_fail(error_r, ETSI014_EINVAL, "%s",
                            ETSI014_MSG_SIZE_MULTIPLE_OF_8);
    if (size < lim->min_key_size || size > lim->max_key_size)
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "size shall be between min_key_size (%" PRId64
                            ") and max_key_size (%" PRId64 ")",
                            lim->min_key_size, lim->max_key_size);

    if (req->additional_count > 0) {
        if ((int64_t)req->additional_count > lim->max_sae_id_count)
            return etsi014_fail(error_r, ETSI014_EINVAL,
                                "additional_slave_SAE_IDs shall not list more "
                                "than max_SAE_ID_count (%" PRId64 ") SAE IDs",
                                lim->max_sae_id_count);
        for (size_t i = 0; i < req->additional_count; i++) {
            const char *id = req->additional_slave_sae_ids[i];
            if (etsi014_id_blank(id))
                return etsi014_fail(error_r, ETSI014_EINVAL,
                                    "additional_slave_SAE_IDs shall not "
                                    "contain a blank SAE ID");
            if (strcmp(id, master_sae_id) == 0 || strcmp(id, slave_sae_id) == 0)
                return etsi014_fail(error_r, ETSI014_EINVAL,
                                    "additional_slave_SAE_IDs shall not "
                                    "contain the master or slave SAE ID");
            for (size_t j = 0; j < i; j++) {
                if (strcmp(id, req->additional_slave_sae_ids[j]) == 0)
                    return etsi014_fail(error_r, ETSI014_EINVAL,
                                        "additional_slave_SAE_IDs shall not "
                                        "contain duplicates");
            }
        }
    }

    /* This KME defines no extension parameters: any mandatory one is
     * unsupported; optional ones are ignored (clause 6.2 allows a 200). */
    if (req->extension_mandatory != NULL) {
        size_t i;
        json_t *e;
        json_array_foreach(req->extension_mandatory, i, e) {
            if (json_object_size(e) > 0)
                return etsi014_fail(error_r, ETSI014_EUNSUPPORTED, "%s",
                                    ETSI014_MSG_EXT_MANDATORY_UNSUPPORTED);
        }
    }
    *number_r = number;
    *size_r = size;
    return 0;
}

/* ---- base64 ------------------------------------------------------------ */

static bool b64_char(unsigned char c)
{
    return isalnum(c) || c == '+' || c == '/';
}

/* Strict standard base64 with padding; returns bytes written or -1. */
static int b64_decode(const char *in, size_t len, unsigned char **out_r,
                      size_t *out_len_r)
{
    *out_r = NULL;
    *out_len_r = 0;
    if (len % 4 != 0 || len > (size_t)INT32_MAX)
        return -1;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '=') {
            if (i < len - 2)
                return -1;
            pad++;
        } else if (!b64_char(c) || pad > 0) {
            return -1;
        }
    }
    size_t n = len / 4 * 3;
    unsigned char *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return -1;
    if (len > 0 && EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len) < 0) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        return -1;
    }
    *out_r = buf;
    *out_len_r = n - pad;
    return 0;
}

/* ---- Key container ----------------------------------------------------- */

int etsi014_key_container_alloc(struct etsi014_key_container *kc, size_t count)
{
    memset(kc, 0, sizeof(*kc));
    if (count == 0)
        return 0;
    kc->keys = calloc(count, sizeof(*kc->keys));
    if (kc->keys == NULL)
        return ETSI014_ENOMEM;
    kc->count = count;
    return 0;
}

void etsi014_key_container_clear(struct etsi014_key_container *kc)
{
    for (size_t i = 0; i < kc->count; i++) {
        struct etsi014_key *k = &kc->keys[i];
        if (k->key != NULL) {
            OPENSSL_cleanse(k->key, k->key_len);
            free(k->key);
        }
        json_decref(k->key_id_extension);
        json_decref(k->key_extension);
    }
    free(kc->keys);
    json_decref(kc->key_container_extension);
    memset(kc, 0, sizeof(*kc));
}

int etsi014_key_container_decode(const char *json, size_t len,
                                 struct etsi014_key_container *kc,
                                 char **error_r)
{
    memset(kc, 0, sizeof(*kc));
    if (error_r != NULL)
        *error_r = NULL;
    json_t *root;
    int ret = etsi014_load_object(json, len, &root, error_r);
    if (ret < 0)
        return ret;
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys) || json_array_size(keys) > MAX_KEYS) {
        json_decref(root);
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "keys shall be an array of objects");
    }
    ret = etsi014_key_container_alloc(kc, json_array_size(keys));
    size_t i;
    json_t *e;
    json_array_foreach(keys, i, e) {
        if (ret < 0)
            break;
        struct etsi014_key *k = &kc->keys[i];
        json_t *id = json_is_object(e) ? json_object_get(e, "key_ID") : NULL;
        json_t *key = json_is_object(e) ? json_object_get(e, "key") : NULL;
        if (!json_is_string(id) ||
            !etsi014_uuid_valid(json_string_value(id), json_string_length(id))) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "keys[%zu].key_ID shall be a UUID", i);
            break;
        }
        memcpy(k->key_id, json_string_value(id), ETSI014_UUID_LEN + 1);
        etsi014_uuid_lower(k->key_id);
        if (!json_is_string(key) ||
            b64_decode(json_string_value(key), json_string_length(key),
                       &k->key, &k->key_len) < 0) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "keys[%zu].key shall be base64", i);
            break;
        }
        ret = etsi014_opt_object(e, "key_ID_extension", &k->key_id_extension,
                                 error_r);
        if (ret == 0)
            ret = etsi014_opt_object(e, "key_extension", &k->key_extension,
                                     error_r);
    }
    if (ret == 0)
        ret = etsi014_opt_object(root, "key_container_extension",
                                 &kc->key_container_extension, error_r);
    json_decref(root);
    if (ret < 0)
        etsi014_key_container_clear(kc);
    return ret;
}

/* Growable text buffer; the old block is wiped when it moves (it holds key
 * material). */
struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_reserve(struct sbuf *b, size_t more)
{
    if (b->failed)
        return;
    if (more > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = (b->len + more + 1) * 2;
    char *n = malloc(cap);
    if (n == NULL) {
        b->failed = true;
        return;
    }
    if (b->p != NULL) {
        memcpy(n, b->p, b->len);
        etsi014_free_secret(b->p, b->cap);
    }
    b->p = n;
    b->cap = cap;
}

static void sb_add(struct sbuf *b, const char *s, size_t len)
{
    sb_reserve(b, len);
    if (b->failed)
        return;
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_json(struct sbuf *b, const char *name, const json_t *v)
{
    if (v == NULL)
        return;
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (t == NULL) {
        b->failed = true;
        return;
    }
    sb_str(b, ",\"");
    sb_str(b, name);
    sb_str(b, "\":");
    sb_str(b, t);
    free(t);
}

char *etsi014_key_container_encode(const struct etsi014_key_container *kc,
                                   size_t *len_r)
{
    /* Written by hand so that the key text lives in one buffer we wipe
     * (jansson would keep unwiped copies). key_IDs are UUIDs and base64 has
     * no characters that need JSON escaping. */
    struct sbuf b = {0};
    sb_str(&b, "{\"keys\":[");
    for (size_t i = 0; i < kc->count && !b.failed; i++) {
        const struct etsi014_key *k = &kc->keys[i];
        if (k->key_len > (size_t)INT32_MAX / 2) {
            b.failed = true;
            break;
        }
        sb_str(&b, i > 0 ? ",{\"key_ID\":\"" : "{\"key_ID\":\"");
        sb_str(&b, k->key_id);
        sb_str(&b, "\"");
        sb_json(&b, "key_ID_extension", k->key_id_extension);
        sb_str(&b, ",\"key\":\"");
        size_t enc = (k->key_len + 2) / 3 * 4;
        sb_reserve(&b, enc + 1);
        if (b.failed)
            break;
        b.len += (size_t)EVP_EncodeBlock((unsigned char *)b.p + b.len, k->key,
                                         (int)k->key_len);
        b.p[b.len] = '\0';
        sb_str(&b, "\"");
        sb_json(&b, "key_extension", k->key_extension);
        sb_str(&b, "}");
    }
    sb_str(&b, "]");
    sb_json(&b, "key_container_extension", kc->key_container_extension);
    sb_str(&b, "}");
    if (b.failed) {
        etsi014_free_secret(b.p, b.cap);
        return NULL;
    }
    if (len_r != NULL)
        *len_r = b.len;
    return b.p;
}

/* ---- Key IDs ----------------------------------------------------------- */

int etsi014_key_ids_alloc(struct etsi014_key_ids *ids, size_t count)
{
    memset(ids, 0, sizeof(*ids));
    if (count == 0)
        return 0;
    ids->key_ids = calloc(count, sizeof(*ids->key_ids));
    if (ids->key_ids == NULL)
        return ETSI014_ENOMEM;
    ids->count = count;
    return 0;
}

void etsi014_key_ids_clear(struct etsi014_key_ids *ids)
{
    free(ids->key_ids);
    json_decref(ids->key_ids_extension);
    memset(ids, 0, sizeof(*ids));
}

static int cmp_ids(const void *a, const void *b)
{
    return memcmp(a, b, ETSI014_UUID_LEN);
}

int etsi014_key_ids_decode(const char *body, size_t len,
                           struct etsi014_key_ids *ids, size_t max_count,
                           char **error_r)
{
    memset(ids, 0, sizeof(*ids));
    if (error_r != NULL)
        *error_r = NULL;
    json_t *root;
    int ret = etsi014_load_object(body, len, &root, error_r);
    if (ret < 0)
        return ret;
    json_t *arr = json_object_get(root, "key_IDs");
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > MAX_KEYS) {
        json_decref(root);
        return etsi014_fail(error_r, ETSI014_EFORMAT,
                            "key_IDs shall be a non-empty array of objects");
    }
    if (max_count > 0 && json_array_size(arr) > max_count) {
        json_decref(root);
        return etsi014_fail(error_r, ETSI014_EINVAL,
                            "key_IDs shall not list more than %zu keys",
                            max_count);
    }
    ret = etsi014_key_ids_alloc(ids, json_array_size(arr));
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        if (ret < 0)
            break;
        json_t *id = json_is_object(e) ? json_object_get(e, "key_ID") : NULL;
        if (!json_is_object(e) || !json_is_string(id)) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "key_IDs shall be an array of objects with a "
                               "key_ID string");
            break;
        }
        if (!etsi014_uuid_valid(json_string_value(id), json_string_length(id))) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "key_ID shall be a UUID");
            break;
        }
        json_t *ext = json_object_get(e, "key_ID_extension");
        if (ext != NULL && !json_is_object(ext)) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "key_ID_extension shall be an object");
            break;
        }
        memcpy(ids->key_ids[i], json_string_value(id), ETSI014_UUID_LEN + 1);
        etsi014_uuid_lower(ids->key_ids[i]);
    }
    if (ret == 0)
        ret = etsi014_opt_object(root, "key_IDs_extension",
                                 &ids->key_ids_extension, error_r);
    json_decref(root);
    if (ret == 0 && ids->count > 1) {
        char (*sorted)[ETSI014_UUID_LEN + 1] =
            malloc(ids->count * sizeof(*sorted));
        if (sorted == NULL) {
            ret = ETSI014_ENOMEM;
        } else {
            memcpy(sorted, ids->key_ids, ids->count * sizeof(*sorted));
            qsort(sorted, ids->count, sizeof(*sorted), cmp_ids);
            for (size_t j = 1; j < ids->count && ret == 0; j++) {
                if (cmp_ids(sorted[j - 1], sorted[j]) == 0)
                    ret = etsi014_fail(error_r, ETSI014_EINVAL,
                                       "key_IDs shall not repeat a key_ID");
            }
            free(sorted);
        }
    }
    if (ret < 0)
        etsi014_key_ids_clear(ids);
    return ret;
}

int etsi014_key_ids_from_query(const char *query, size_t len,
                               struct etsi014_key_ids *ids, char **error_r)
{
    memset(ids, 0, sizeof(*ids));
    if (error_r != NULL)
        *error_r = NULL;
    const char *p = query, *end = query != NULL ? query + len : NULL;
    char *name = NULL, *value = NULL, *id = NULL;
    int r = 0, ret = 0, seen = 0;
    while (query != NULL && (r = etsi014_query_next(&p, end, &name, &value)) > 0) {
        if (strcmp(name, "key_ID") != 0 || seen++ > 0) {
            ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                               "the GET form of dec_keys takes exactly one "
                               "key_ID query parameter");
        } else {
            id = value;
            value = NULL;
        }
        free(name);
        free(value);
        if (ret < 0)
            break;
    }
    if (ret == 0 && query != NULL && r < 0)
        ret = etsi014_fail(error_r, ETSI014_EFORMAT, "malformed query string");
    if (ret == 0 && id == NULL)
        ret = etsi014_fail(error_r, ETSI014_EFORMAT,
                           "the GET form of dec_keys takes exactly one key_ID "
                           "query parameter");
    /* id is not NULL here: etsi014_fail returns its code (< 0) above, which
     * the analyzer cannot see across files. */
    // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker)
    if (ret == 0 && !etsi014_uuid_valid(id, strlen(id)))
        ret = etsi014_fail(error_r, ETSI014_EFORMAT, "key_ID shall be a UUID");
    if (ret == 0)
        ret = etsi014_key_ids_alloc(ids, 1);
    if (ret == 0) {
        memcpy(ids->key_ids[0], id, ETSI014_UUID_LEN + 1);
        etsi014_uuid_lower(ids->key_ids[0]);
    }
    free(id);
    return ret;
}

char *etsi014_key_ids_encode(const struct etsi014_key_ids *ids, size_t *len_r)
{
    json_t *root = json_object();
    json_t *arr = json_array();
    int bad = root == NULL || arr == NULL;
    for (size_t i = 0; !bad && i < ids->count; i++)
        bad |= json_array_append_new(arr, json_pack("{s:s}", "key_ID",
                                                    ids->key_ids[i]));
    if (!bad)
        bad |= json_object_set(root, "key_IDs", arr);
    if (!bad && ids->key_ids_extension != NULL)
        bad |= json_object_set(root, "key_IDs_extension",
                               ids->key_ids_extension);
    char *text = bad ? NULL : etsi014_dump(root, len_r);
    json_decref(arr);
    json_decref(root);
    return text;
}
