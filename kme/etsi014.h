/* etsi014: the ETSI GS QKD 014 V1.1.1 wire model.
 *
 * Plain C structs for the five JSON data formats of clause 6 (Status, Key
 * request, Key container, Key IDs, Error), their encoders and decoders
 * (jansson), the spec's validation rules and exact 400 messages, UUID
 * key_IDs and the request paths of clause 5. No I/O. Used by the KME
 * simulator (server side) and the KME client (decoding responses).
 *
 * Conventions
 * - Sizes on the wire are in BITS (key_size, size, min/max_key_size); key
 *   bytes in structs are bytes (key_len). Only whole bytes are produced.
 * - Decoders ignore unknown JSON members, reject wrong types, and return 0
 *   or a negative ETSI014_E* code with *error_r (caller frees, may be NULL)
 *   set to a message. For request decoders (what a KME receives) that
 *   message is exactly what a 400 response carries, e.g. the spec's
 *   "size shall be a multiple of 8".
 * - Encoders return a malloc'd, NUL-terminated compact JSON text and its
 *   length, or NULL when out of memory. Texts that carry key material must
 *   be released with etsi014_free_secret().
 * - *_clear() releases what a struct owns (wiping key bytes) and zeroes it;
 *   clearing a zeroed struct is a no-op. Every decoder clears its output
 *   first and leaves it cleared on failure.
 * - json_t members (extensions, details) are owned references or NULL. */
#ifndef QUMAIL_ETSI014_H
#define QUMAIL_ETSI014_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "550e8400-e29b-41d4-a716-446655440000": 36 characters. */
#define ETSI014_UUID_LEN 36
/* Longest SAE or KME ID accepted (bytes, after URL decoding). */
#define ETSI014_ID_MAX 255

enum {
    ETSI014_OK = 0,
    ETSI014_EJSON = -1,    /* not JSON text, or not a JSON object */
    ETSI014_EFORMAT = -2,  /* a member has the wrong type or an invalid value */
    ETSI014_EINVAL = -3,   /* valid format but refused by the rules (400) */
    ETSI014_EUNSUPPORTED = -4, /* extension_mandatory not supported (400) */
    ETSI014_ENOMEM = -5,
};
const char *etsi014_strerror(int code);

/* The spec's exact error messages (clause 6.2, 6.4). */
#define ETSI014_MSG_SIZE_MULTIPLE_OF_8 "size shall be a multiple of 8"
#define ETSI014_MSG_EXT_MANDATORY_UNSUPPORTED \
    "not all extension_mandatory parameters are supported"
#define ETSI014_MSG_EXT_MANDATORY_UNMET \
    "not all extension_mandatory request options could be met"
#define ETSI014_MSG_EXT_OPTIONAL_UNHANDLED \
    "not all extension_optional request options handled"
#define ETSI014_MSG_KEYS_NOT_FOUND \
    "one or more keys specified are not found on KME"

/* ---- UUID key_IDs ------------------------------------------------------ */

/* True for the 8-4-4-4-12 hex form (either case), exactly len bytes. */
bool etsi014_uuid_valid(const char *s, size_t len);
/* Writes a random (version 4) lowercase UUID and a NUL. 0, or -1 when the
 * random generator failed. */
int etsi014_uuid_generate(char out[ETSI014_UUID_LEN + 1]);

/* ---- SAE IDs and paths (clause 5.1, Table 2) --------------------------- */

enum etsi014_endpoint {
    ETSI014_EP_STATUS,   /* /api/v1/keys/{slave_SAE_ID}/status */
    ETSI014_EP_ENC_KEYS, /* /api/v1/keys/{slave_SAE_ID}/enc_keys */
    ETSI014_EP_DEC_KEYS, /* /api/v1/keys/{master_SAE_ID}/dec_keys */
};
const char *etsi014_endpoint_name(enum etsi014_endpoint ep);

/* True when id is empty or only white space ("blank SAE ID"). */
bool etsi014_id_blank(const char *id);

/* Builds "/api/v1/keys/<URL-encoded sae_id>/<endpoint>" (malloc'd), with
 * "?<query>" appended when query is not NULL. NULL when out of memory. */
char *etsi014_path(enum etsi014_endpoint ep, const char *sae_id,
                   const char *query);

/* Splits a request target (path and optional query) into endpoint, the
 * URL-decoded SAE ID (malloc'd into *sae_id_r) and the query (pointer into
 * target, or NULL; *query_len_r its length). Returns 0, or -1 when the path
 * is not one of the three endpoints (-> 404) with nothing allocated. An SAE
 * ID that decodes to NUL bytes or exceeds ETSI014_ID_MAX is not a match. */
int etsi014_path_parse(const char *target, size_t len,
                       enum etsi014_endpoint *ep_r, char **sae_id_r,
                       const char **query_r, size_t *query_len_r);

/* ---- Status (clause 6.1) ----------------------------------------------- */

struct etsi014_status {
    char *source_kme_id;
    char *target_kme_id;
    char *master_sae_id;
    char *slave_sae_id;
    int64_t key_size;            /* bits */
    int64_t stored_key_count;
    int64_t max_key_count;
    int64_t max_key_per_request;
    int64_t max_key_size;        /* bits */
    int64_t min_key_size;        /* bits */
    int64_t max_sae_id_count;    /* 0: no multicast */
    json_t *status_extension;    /* optional object */
};

int etsi014_status_decode(const char *json, size_t len,
                          struct etsi014_status *st, char **error_r);
char *etsi014_status_encode(const struct etsi014_status *st, size_t *len_r);
void etsi014_status_clear(struct etsi014_status *st);

/* ---- Key request (clause 6.2) ------------------------------------------ */

struct etsi014_key_request {
    bool has_number;
    int64_t number;                  /* valid when has_number */
    bool has_size;
    int64_t size;                    /* bits; valid when has_size */
    char **additional_slave_sae_ids; /* additional_count strings */
    size_t additional_count;
    json_t *extension_mandatory;     /* array of objects, or NULL */
    json_t *extension_optional;      /* array of objects, or NULL */
};

/* POST body; an empty or absent body (len 0 or only white space) is the
 * empty Key request (all defaults). Wrong member types are
 * ETSI014_EFORMAT with a message naming the member ("number shall be an
 * integer"); range checks are left to etsi014_key_request_validate(). */
int etsi014_key_request_decode(const char *body, size_t len,
                               struct etsi014_key_request *req,
                               char **error_r);
/* GET form: query "number=3&size=1024" (either, both or none; values are
 * decimal strings). Any other parameter, a repeated one or a malformed
 * value is ETSI014_EFORMAT. query may be NULL. */
int etsi014_key_request_from_query(const char *query, size_t len,
                                   struct etsi014_key_request *req,
                                   char **error_r);
/* Body for POST. */
char *etsi014_key_request_encode(const struct etsi014_key_request *req,
                                 size_t *len_r);
/* True when the request may be sent as GET (only number and/or size). */
bool etsi014_key_request_is_simple(const struct etsi014_key_request *req);
void etsi014_key_request_clear(struct etsi014_key_request *req);

/* What a KME offers one master/slave pair (from its Status). */
struct etsi014_limits {
    int64_t key_size;            /* default size, bits */
    int64_t min_key_size;
    int64_t max_key_size;
    int64_t max_key_per_request;
    int64_t max_sae_id_count;    /* 0: multicast refused */
    bool multiple_of_8_only;     /* the KME serves whole bytes only */
};

/* Applies every rule of clause 6.2 to a decoded request of master for
 * slave: number and size positive, within the limits, size a multiple of 8
 * (ETSI014_MSG_SIZE_MULTIPLE_OF_8); master != slave, neither blank;
 * additional_slave_SAE_IDs within max_SAE_ID_count, not blank, no
 * duplicates, none equal to master or slave; extension_mandatory with any
 * parameter -> ETSI014_EUNSUPPORTED with ETSI014_MSG_EXT_MANDATORY_UNSUPPORTED
 * (this KME supports none); extension_optional ignored. On success stores
 * the effective number and size (defaults applied). */
int etsi014_key_request_validate(const struct etsi014_key_request *req,
                                 const struct etsi014_limits *lim,
                                 const char *master_sae_id,
                                 const char *slave_sae_id,
                                 int64_t *number_r, int64_t *size_r,
                                 char **error_r);

/* ---- Key container (clause 6.3) ---------------------------------------- */

struct etsi014_key {
    char key_id[ETSI014_UUID_LEN + 1];  /* lowercase UUID */
    unsigned char *key;                  /* key bytes (owned, wiped) */
    size_t key_len;                      /* bytes */
    json_t *key_id_extension;            /* optional */
    json_t *key_extension;               /* optional */
};

struct etsi014_key_container {
    struct etsi014_key *keys;
    size_t count;
    json_t *key_container_extension;     /* optional */
};

/* Decodes "keys" (required, array of objects with UUID key_ID and base64
 * key). An empty array is accepted (count 0). key_IDs are lowercased. */
int etsi014_key_container_decode(const char *json, size_t len,
                                 struct etsi014_key_container *kc,
                                 char **error_r);
/* The result holds key material: release with etsi014_free_secret(). */
char *etsi014_key_container_encode(const struct etsi014_key_container *kc,
                                   size_t *len_r);
/* Allocates count zeroed keys (kc cleared first). 0 or ETSI014_ENOMEM. */
int etsi014_key_container_alloc(struct etsi014_key_container *kc,
                                size_t count);
void etsi014_key_container_clear(struct etsi014_key_container *kc);

/* ---- Key IDs (clause 6.4) ---------------------------------------------- */

struct etsi014_key_ids {
    char (*key_ids)[ETSI014_UUID_LEN + 1]; /* count lowercase UUIDs */
    size_t count;
    json_t *key_ids_extension;             /* optional */
};

/* POST body: "key_IDs" required, a non-empty array of objects whose
 * "key_ID" is a UUID; a repeated key_ID is refused. At most max_count IDs
 * (0: no limit). */
int etsi014_key_ids_decode(const char *body, size_t len,
                           struct etsi014_key_ids *ids, size_t max_count,
                           char **error_r);
/* GET form: exactly one "key_ID=<uuid>" parameter. */
int etsi014_key_ids_from_query(const char *query, size_t len,
                               struct etsi014_key_ids *ids, char **error_r);
char *etsi014_key_ids_encode(const struct etsi014_key_ids *ids, size_t *len_r);
/* Allocates count zeroed IDs (ids cleared first). 0 or ETSI014_ENOMEM. */
int etsi014_key_ids_alloc(struct etsi014_key_ids *ids, size_t count);
void etsi014_key_ids_clear(struct etsi014_key_ids *ids);

/* ---- Error (clause 6.5) ------------------------------------------------ */

struct etsi014_error {
    char *message;
    json_t *details;  /* optional array of objects */
};

/* Fails with ETSI014_EJSON on a non-JSON body (peers send those; callers
 * fall back to the HTTP status). */
int etsi014_error_decode(const char *json, size_t len,
                         struct etsi014_error *err, char **error_r);
/* {"message": message[, "details": details]}; details may be NULL. */
char *etsi014_error_encode(const char *message, const json_t *details,
                           size_t *len_r);
void etsi014_error_clear(struct etsi014_error *err);

/* ---- helpers ----------------------------------------------------------- */

/* Wipes len bytes of p (OPENSSL_cleanse) and frees it; NULL is a no-op. */
void etsi014_free_secret(char *p, size_t len);

#endif
