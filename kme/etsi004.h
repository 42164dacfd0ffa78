/* etsi004: the ETSI GS QKD 004 V2.1.1 wire model.
 *
 * The spec defines three primitives (OPEN_CONNECT, GET_KEY, CLOSE) and their
 * parameters but no wire format. This is the de-facto framing of the public
 * implementations derived from the ETSI forge C code (kme/ETSI004.md has
 * the byte layout and the variants accepted from peers):
 *
 *   frame   = version[3] service[1] length[4] payload[length]
 *   every integer a 32-bit unsigned big-endian value;
 *   services 0x02/0x03 OPEN_CONNECT request/response, 0x04/0x05 GET_KEY,
 *   0x08/0x09 CLOSE.
 *
 * Frames are parsed from bytes with no I/O: etsi004_frame_parse() says
 * "done / need more / error" for a buffer that may hold a partial frame,
 * and the payload decoders take exactly one payload. Encoders return a
 * whole frame (header included) in a malloc'd buffer.
 *
 * Conventions
 * - KSIDs are 16 bytes in the usual UUID byte order (the text form's hex
 *   digits left to right); 16 zero bytes are the NULL KSID ("assign one").
 * - Decoders return 0 or a negative ETSI004_E* code, never allocate except
 *   where a struct says it owns a string, and leave pointers into the
 *   payload where a field says "borrowed".
 * - Frames that carry key bytes (GET_KEY responses) must be released with
 *   etsi004_free_secret(), which wipes them. */
#ifndef QUMAIL_ETSI004_H
#define QUMAIL_ETSI004_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETSI004_DEFAULT_PORT 25575
#define ETSI004_HEADER_LEN 8
#define ETSI004_KSID_LEN 16
#define ETSI004_KSID_TEXT_LEN 36   /* 8-4-4-4-12 lowercase hex */
#define ETSI004_MIMETYPE_LEN 256   /* NUL-padded on the wire */
#define ETSI004_QOS_LEN (7 * 4 + ETSI004_MIMETYPE_LEN) /* 284 */
#define ETSI004_URI_MAX 1024       /* longest source/destination URI taken */
/* Largest request payload a server needs to accept: two URIs with their
 * NULs, the QoS and the KSID (OPEN_CONNECT is the largest request). */
#define ETSI004_MAX_REQUEST (2 * (ETSI004_URI_MAX + 1) + ETSI004_QOS_LEN + \
                             ETSI004_KSID_LEN)
/* Largest Key_chunk_size this code produces or accepts (bytes). */
#define ETSI004_MAX_CHUNK 65536
/* Largest metadata this code produces or accepts (bytes). */
#define ETSI004_MAX_METADATA 4096
#define ETSI004_MAX_GET_RESPONSE (16u + ETSI004_MAX_CHUNK + ETSI004_MAX_METADATA)

/* GET_KEY index asking the KME to choose: the next index never handed out
 * in the stream (spec 6.1: "the QKD key manager peer shall return an index
 * value, or allow the application to specify the position"). The response
 * carries the index chosen. An extension of this implementation: a peer
 * KME without it serves position 2^32-1 instead. */
#define ETSI004_INDEX_NEXT UINT32_MAX

/* The version bytes this implementation writes (V2.1.1). Readers accept
 * any version bytes (peers differ). */
#define ETSI004_VERSION_0 2
#define ETSI004_VERSION_1 1
#define ETSI004_VERSION_2 1

enum etsi004_service {
    ETSI004_OPEN_CONNECT_REQ = 0x02,
    ETSI004_OPEN_CONNECT_RESP = 0x03,
    ETSI004_GET_KEY_REQ = 0x04,
    ETSI004_GET_KEY_RESP = 0x05,
    ETSI004_CLOSE_REQ = 0x08,
    ETSI004_CLOSE_RESP = 0x09,
};
/* "OPEN_CONNECT", "GET_KEY response", ... or NULL for an unknown type. */
const char *etsi004_service_name(uint8_t service);

/* Status values of the spec (clause 6.1, Table 2). */
enum etsi004_status {
    ETSI004_SUCCESS = 0,
    ETSI004_PEER_NOT_CONNECTED = 1,       /* success, peer not connected */
    ETSI004_INSUFFICIENT_KEY = 2,         /* GET_KEY */
    ETSI004_PEER_APP_NOT_CONNECTED = 3,   /* GET_KEY */
    ETSI004_NO_QKD_CONNECTION = 4,
    ETSI004_KSID_IN_USE = 5,              /* OPEN_CONNECT */
    ETSI004_TIMEOUT = 6,
    ETSI004_QOS_NOT_MET = 7,              /* OPEN_CONNECT, counter-proposal */
    ETSI004_METADATA_TOO_SMALL = 8,       /* GET_KEY, size needed returned */
};
/* "SUCCESS", "PEER_NOT_CONNECTED", ...; "UNKNOWN" for other values. */
const char *etsi004_status_name(uint32_t status);

enum {
    ETSI004_OK = 0,
    ETSI004_ETOOBIG = -1,    /* length field above the limit */
    ETSI004_EFORMAT = -2,    /* payload does not have the service's layout */
    ETSI004_ESERVICE = -3,   /* service type not the one expected */
    ETSI004_ENOMEM = -4,
};
const char *etsi004_strerror(int code);

/* ---- frame header ------------------------------------------------------ */

struct etsi004_header {
    uint8_t version[3];
    uint8_t service;
    uint32_t length;         /* payload bytes */
};

/* Looks at the start of buf. Returns 1 when a whole frame is there
 * (*h filled, the frame is ETSI004_HEADER_LEN + h->length bytes), 0 when
 * more bytes are needed (*h filled once the 8 header bytes are in), or
 * ETSI004_ETOOBIG when the length field exceeds max_payload (decided as
 * soon as the header is in: never wait for an oversized frame). */
int etsi004_frame_parse(const uint8_t *buf, size_t len, uint32_t max_payload,
                        struct etsi004_header *h);

/* ---- QoS ----------------------------------------------------------------- */

/* Zero in a field means "the system chooses" on input (spec 6.1 NOTE). */
struct etsi004_qos {
    uint32_t key_chunk_size;  /* bytes */
    uint32_t max_bps;
    uint32_t min_bps;
    uint32_t jitter;
    uint32_t priority;
    uint32_t timeout;         /* milliseconds */
    uint32_t ttl;             /* seconds */
    /* Up to the first NUL of the 256 bytes on the wire; "" = no metadata. */
    char metadata_mimetype[ETSI004_MIMETYPE_LEN + 1];
};

/* ---- OPEN_CONNECT ------------------------------------------------------------ */

struct etsi004_open_req {
    const char *source;        /* borrowed from the payload (NUL-terminated) */
    const char *destination;   /* borrowed */
    struct etsi004_qos qos;
    uint8_t ksid[ETSI004_KSID_LEN]; /* all zero: assign one */
};
/* URIs: up to ETSI004_URI_MAX bytes each, NUL-terminated in the payload;
 * then exactly the QoS and the KSID. */
int etsi004_open_req_decode(const uint8_t *p, size_t n,
                            struct etsi004_open_req *r);
uint8_t *etsi004_open_req_encode(const char *source, const char *destination,
                                 const struct etsi004_qos *qos,
                                 const uint8_t ksid[ETSI004_KSID_LEN],
                                 size_t *len_r);

struct etsi004_open_resp {
    uint32_t status;
    bool has_qos;              /* QoS and KSID follow the status */
    struct etsi004_qos qos;
    uint8_t ksid[ETSI004_KSID_LEN];
};
/* Writers send QoS and KSID with status 0, 1 and 7. Readers accept them
 * with any status, and a bare status with any status. */
int etsi004_open_resp_decode(const uint8_t *p, size_t n,
                             struct etsi004_open_resp *r);
uint8_t *etsi004_open_resp_encode(const struct etsi004_open_resp *r,
                                  size_t *len_r);

/* ---- GET_KEY ------------------------------------------------------------------ */

struct etsi004_get_req {
    uint8_t ksid[ETSI004_KSID_LEN];
    uint32_t index;
    uint32_t metadata_size;    /* the caller's buffer; 0: no metadata */
};
int etsi004_get_req_decode(const uint8_t *p, size_t n, struct etsi004_get_req *r);
uint8_t *etsi004_get_req_encode(const struct etsi004_get_req *r, size_t *len_r);

struct etsi004_get_resp {
    uint32_t status;
    /* status 0: */
    uint32_t index;
    uint32_t key_len;          /* Key_chunk_size */
    const uint8_t *key;        /* borrowed from the payload: wipe it */
    uint32_t metadata_len;
    const uint8_t *metadata;   /* borrowed; not NUL-terminated */
    /* status 8: */
    uint32_t metadata_needed;
};
/* Status 0: status, index, Key_chunk_size, key, metadata length, metadata
 * (exactly); status 8: status and the size needed; any other status: the
 * status alone (readers ignore trailing bytes after a non-zero status). */
int etsi004_get_resp_decode(const uint8_t *p, size_t n,
                            struct etsi004_get_resp *r);
/* The frame holds key bytes: release it with etsi004_free_secret(). */
uint8_t *etsi004_get_resp_encode(const struct etsi004_get_resp *r,
                                 size_t *len_r);

/* ---- CLOSE --------------------------------------------------------------------- */

int etsi004_close_req_decode(const uint8_t *p, size_t n,
                             uint8_t ksid_r[ETSI004_KSID_LEN]);
uint8_t *etsi004_close_req_encode(const uint8_t ksid[ETSI004_KSID_LEN],
                                  size_t *len_r);
/* Readers accept a status with trailing bytes. */
int etsi004_close_resp_decode(const uint8_t *p, size_t n, uint32_t *status_r);
uint8_t *etsi004_close_resp_encode(uint32_t status, size_t *len_r);

/* ---- KSIDs and helpers ---------------------------------------------------------- */

bool etsi004_ksid_is_null(const uint8_t ksid[ETSI004_KSID_LEN]);
/* Lowercase 8-4-4-4-12 text and a NUL. */
void etsi004_ksid_to_text(const uint8_t ksid[ETSI004_KSID_LEN],
                          char out[ETSI004_KSID_TEXT_LEN + 1]);
/* Either case; exactly 36 characters. 0 or -1. */
int etsi004_ksid_from_text(const char *text, uint8_t ksid_r[ETSI004_KSID_LEN]);
/* A random version 4 KSID. 0, or -1 when the random generator failed. */
int etsi004_ksid_generate(uint8_t ksid_r[ETSI004_KSID_LEN]);

/* The metadata of a chunk as this implementation writes it (application/
 * json): {"age":<ms>,"hops":<n>}. Returns the length written (at most
 * ETSI004_METADATA_JSON_MAX) without a NUL. */
#define ETSI004_METADATA_JSON_MAX 40
size_t etsi004_metadata_json(uint32_t age_ms, uint32_t hops,
                             char out[ETSI004_METADATA_JSON_MAX + 1]);

/* Wipes and frees a frame (or any buffer) of len bytes; NULL is fine. */
void etsi004_free_secret(uint8_t *p, size_t len);

#endif
