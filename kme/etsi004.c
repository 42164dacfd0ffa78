/* The ETSI GS QKD 004 wire model: frames, payloads, KSIDs (etsi004.h). */
#include "etsi004.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *etsi004_service_name(uint8_t service)
{
    switch (service) {
    case ETSI004_OPEN_CONNECT_REQ: return "OPEN_CONNECT";
    case ETSI004_OPEN_CONNECT_RESP: return "OPEN_CONNECT response";
    case ETSI004_GET_KEY_REQ: return "GET_KEY";
    case ETSI004_GET_KEY_RESP: return "GET_KEY response";
    case ETSI004_CLOSE_REQ: return "CLOSE";
    case ETSI004_CLOSE_RESP: return "CLOSE response";
    default: return NULL;
    }
}

const char *etsi004_status_name(uint32_t status)
{
    static const char *const names[] = {
        "SUCCESS",          "PEER_NOT_CONNECTED", "INSUFFICIENT_KEY",
        "PEER_APP_NOT_CONNECTED", "NO_QKD_CONNECTION", "KSID_IN_USE",
        "TIMEOUT",          "QOS_NOT_MET",        "METADATA_TOO_SMALL",
    };
    return status < sizeof(names) / sizeof(names[0]) ? names[status] : "UNKNOWN";
}

const char *etsi004_strerror(int code)
{
    switch (code) {
    case ETSI004_OK: return "success";
    case ETSI004_ETOOBIG: return "frame length above the limit";
    case ETSI004_EFORMAT: return "payload does not match the service's layout";
    case ETSI004_ESERVICE: return "unexpected service type";
    case ETSI004_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

/* ---- big-endian integers ------------------------------------------------------ */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* ---- frames -------------------------------------------------------------------- */

int etsi004_frame_parse(const uint8_t *buf, size_t len, uint32_t max_payload,
                        struct etsi004_header *h)
{
    if (len < ETSI004_HEADER_LEN)
        return 0;
    memcpy(h->version, buf, 3);
    h->service = buf[3];
    h->length = get32(buf + 4);
    if (h->length > max_payload)
        return ETSI004_ETOOBIG;
    return len - ETSI004_HEADER_LEN >= h->length ? 1 : 0;
}

/* A frame buffer with its header written; the payload follows at +8. */
static uint8_t *frame_new(uint8_t service, size_t payload, size_t *len_r)
{
    if (payload > UINT32_MAX - ETSI004_HEADER_LEN)
        return NULL;
    uint8_t *f = malloc(ETSI004_HEADER_LEN + payload);
    if (f == NULL)
        return NULL;
    f[0] = ETSI004_VERSION_0;
    f[1] = ETSI004_VERSION_1;
    f[2] = ETSI004_VERSION_2;
    f[3] = service;
    put32(f + 4, (uint32_t)payload);
    *len_r = ETSI004_HEADER_LEN + payload;
    return f;
}

void etsi004_free_secret(uint8_t *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* ---- QoS ------------------------------------------------------------------------ */

static void qos_decode(const uint8_t *p, struct etsi004_qos *q)
{
    q->key_chunk_size = get32(p);
    q->max_bps = get32(p + 4);
    q->min_bps = get32(p + 8);
    q->jitter = get32(p + 12);
    q->priority = get32(p + 16);
    q->timeout = get32(p + 20);
    q->ttl = get32(p + 24);
    /* Up to the first NUL; 256 bytes without one are taken whole. */
    const uint8_t *m = p + 28;
    size_t n = 0;
    while (n < ETSI004_MIMETYPE_LEN && m[n] != 0)
        n++;
    memcpy(q->metadata_mimetype, m, n);
    q->metadata_mimetype[n] = '\0';
}

static uint8_t *qos_encode(uint8_t *p, const struct etsi004_qos *q)
{
    p = put32(p, q->key_chunk_size);
    p = put32(p, q->max_bps);
    p = put32(p, q->min_bps);
    p = put32(p, q->jitter);
    p = put32(p, q->priority);
    p = put32(p, q->timeout);
    p = put32(p, q->ttl);
    size_t n = strnlen(q->metadata_mimetype, ETSI004_MIMETYPE_LEN);
    memset(p, 0, ETSI004_MIMETYPE_LEN);
    memcpy(p, q->metadata_mimetype, n);
    return p + ETSI004_MIMETYPE_LEN;
}

/* ---- OPEN_CONNECT ----------------------------------------------------------------- */

/* A NUL-terminated string of at most max bytes at p (n bytes left);
 * returns its length or -1. */
static long cstring(const uint8_t *p, size_t n, size_t max)
{
    const uint8_t *z = memchr(p, 0, n < max + 1 ? n : max + 1);
    return z != NULL ? (long)(z - p) : -1;
}

int etsi004_open_req_decode(const uint8_t *p, size_t n, struct etsi004_open_req *r)
{
    memset(r, 0, sizeof(*r));
    long sl = cstring(p, n, ETSI004_URI_MAX);
    if (sl < 0)
        return ETSI004_EFORMAT;
    size_t off = (size_t)sl + 1;
    long dl = cstring(p + off, n - off, ETSI004_URI_MAX);
    if (dl < 0)
        return ETSI004_EFORMAT;
    off += (size_t)dl + 1;
    if (n - off != ETSI004_QOS_LEN + ETSI004_KSID_LEN)
        return ETSI004_EFORMAT;
    r->source = (const char *)p;
    r->destination = (const char *)p + sl + 1;
    qos_decode(p + off, &r->qos);
    memcpy(r->ksid, p + off + ETSI004_QOS_LEN, ETSI004_KSID_LEN);
    return ETSI004_OK;
}

uint8_t *etsi004_open_req_encode(const char *source, const char *destination,
                                 const struct etsi004_qos *qos,
                                 const uint8_t ksid[ETSI004_KSID_LEN],
                                 size_t *len_r)
{
    size_t sl = strlen(source), dl = strlen(destination);
    if (sl > ETSI004_URI_MAX || dl > ETSI004_URI_MAX)
        return NULL;
    uint8_t *f = frame_new(ETSI004_OPEN_CONNECT_REQ,
                           sl + 1 + dl + 1 + ETSI004_QOS_LEN + ETSI004_KSID_LEN, len_r);
    if (f == NULL)
        return NULL;
    uint8_t *p = f + ETSI004_HEADER_LEN;
    memcpy(p, source, sl + 1);
    p += sl + 1;
    memcpy(p, destination, dl + 1);
    p += dl + 1;
    p = qos_encode(p, qos);
    memcpy(p, ksid, ETSI004_KSID_LEN);
    return f;
}

int etsi004_open_resp_decode(const uint8_t *p, size_t n, struct etsi004_open_resp *r)
{
    memset(r, 0, sizeof(*r));
    if (n < 4)
        return ETSI004_EFORMAT;
    r->status = get32(p);
    if (n == 4)
        return ETSI004_OK;
    if (n != 4 + ETSI004_QOS_LEN + ETSI004_KSID_LEN)
        return ETSI004_EFORMAT;
    r->has_qos = true;
    qos_decode(p + 4, &r->qos);
    memcpy(r->ksid, p + 4 + ETSI004_QOS_LEN, ETSI004_KSID_LEN);
    return ETSI004_OK;
}

uint8_t *etsi004_open_resp_encode(const struct etsi004_open_resp *r, size_t *len_r)
{
    size_t payload = 4 + (r->has_qos ? ETSI004_QOS_LEN + ETSI004_KSID_LEN : 0);
    uint8_t *f = frame_new(ETSI004_OPEN_CONNECT_RESP, payload, len_r);
    if (f == NULL)
        return NULL;
    uint8_t *p = put32(f + ETSI004_HEADER_LEN, r->status);
    if (r->has_qos) {
        p = qos_encode(p, &r->qos);
        memcpy(p, r->ksid, ETSI004_KSID_LEN);
    }
    return f;
}

/* ---- GET_KEY ---------------------------------------------------------------------- */

int etsi004_get_req_decode(const uint8_t *p, size_t n, struct etsi004_get_req *r)
{
    memset(r, 0, sizeof(*r));
    if (n != ETSI004_KSID_LEN + 8)
        return ETSI004_EFORMAT;
    memcpy(r->ksid, p, ETSI004_KSID_LEN);
    r->index = get32(p + ETSI004_KSID_LEN);
    r->metadata_size = get32(p + ETSI004_KSID_LEN + 4);
    return ETSI004_OK;
}

uint8_t *etsi004_get_req_encode(const struct etsi004_get_req *r, size_t *len_r)
{
    uint8_t *f = frame_new(ETSI004_GET_KEY_REQ, ETSI004_KSID_LEN + 8, len_r);
    if (f == NULL)
        return NULL;
    uint8_t *p = f + ETSI004_HEADER_LEN;
    memcpy(p, r->ksid, ETSI004_KSID_LEN);
    p = put32(p + ETSI004_KSID_LEN, r->index);
    put32(p, r->metadata_size);
    return f;
}

int etsi004_get_resp_decode(const uint8_t *p, size_t n, struct etsi004_get_resp *r)
{
    memset(r, 0, sizeof(*r));
    if (n < 4)
        return ETSI004_EFORMAT;
    r->status = get32(p);
    if (r->status == ETSI004_METADATA_TOO_SMALL) {
        if (n < 8)
            return ETSI004_EFORMAT;
        r->metadata_needed = get32(p + 4);
        return ETSI004_OK;
    }
    if (r->status != ETSI004_SUCCESS)
        return ETSI004_OK;
    if (n < 12)
        return ETSI004_EFORMAT;
    r->index = get32(p + 4);
    r->key_len = get32(p + 8);
    if (r->key_len > n - 12 || n - 12 - r->key_len < 4)
        return ETSI004_EFORMAT;
    r->key = p + 12;
    size_t off = 12 + (size_t)r->key_len;
    r->metadata_len = get32(p + off);
    off += 4;
    if (r->metadata_len != n - off)
        return ETSI004_EFORMAT;
    r->metadata = r->metadata_len > 0 ? p + off : NULL;
    return ETSI004_OK;
}

uint8_t *etsi004_get_resp_encode(const struct etsi004_get_resp *r, size_t *len_r)
{
    size_t payload;
    if (r->status == ETSI004_SUCCESS)
        payload = 12 + (size_t)r->key_len + 4 + r->metadata_len;
    else if (r->status == ETSI004_METADATA_TOO_SMALL)
        payload = 8;
    else
        payload = 4;
    uint8_t *f = frame_new(ETSI004_GET_KEY_RESP, payload, len_r);
    if (f == NULL)
        return NULL;
    uint8_t *p = put32(f + ETSI004_HEADER_LEN, r->status);
    if (r->status == ETSI004_METADATA_TOO_SMALL) {
        put32(p, r->metadata_needed);
    } else if (r->status == ETSI004_SUCCESS) {
        p = put32(p, r->index);
        p = put32(p, r->key_len);
        if (r->key_len > 0)
            memcpy(p, r->key, r->key_len);
        p = put32(p + r->key_len, r->metadata_len);
        if (r->metadata_len > 0)
            memcpy(p, r->metadata, r->metadata_len);
    }
    return f;
}

/* ---- CLOSE ---------------------------------------------------------------------- */

int etsi004_close_req_decode(const uint8_t *p, size_t n,
                             uint8_t ksid_r[ETSI004_KSID_LEN])
{
    if (n != ETSI004_KSID_LEN)
        return ETSI004_EFORMAT;
    memcpy(ksid_r, p, ETSI004_KSID_LEN);
    return ETSI004_OK;
}

uint8_t *etsi004_close_req_encode(const uint8_t ksid[ETSI004_KSID_LEN], size_t *len_r)
{
    uint8_t *f = frame_new(ETSI004_CLOSE_REQ, ETSI004_KSID_LEN, len_r);
    if (f != NULL)
        memcpy(f + ETSI004_HEADER_LEN, ksid, ETSI004_KSID_LEN);
    return f;
}

int etsi004_close_resp_decode(const uint8_t *p, size_t n, uint32_t *status_r)
{
    if (n < 4)
        return ETSI004_EFORMAT;
    *status_r = get32(p);
    return ETSI004_OK;
}

uint8_t *etsi004_close_resp_encode(uint32_t status, size_t *len_r)
{
    uint8_t *f = frame_new(ETSI004_CLOSE_RESP, 4, len_r);
    if (f != NULL)
        put32(f + ETSI004_HEADER_LEN, status);
    return f;
}

/* ---- KSIDs --------------------------------------------------------------------- */

bool etsi004_ksid_is_null(const uint8_t ksid[ETSI004_KSID_LEN])
{
    uint8_t any = 0;
    for (size_t i = 0; i < ETSI004_KSID_LEN; i++)
        any |= ksid[i];
    return any == 0;
}

void etsi004_ksid_to_text(const uint8_t ksid[ETSI004_KSID_LEN],
                          char out[ETSI004_KSID_TEXT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < ETSI004_KSID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[ksid[i] >> 4];
        out[o++] = hex[ksid[i] & 15];
    }
    out[o] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int etsi004_ksid_from_text(const char *text, uint8_t ksid_r[ETSI004_KSID_LEN])
{
    if (text == NULL || strlen(text) != ETSI004_KSID_TEXT_LEN)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < ETSI004_KSID_TEXT_LEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hexval(text[i]), lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        ksid_r[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

int etsi004_ksid_generate(uint8_t ksid_r[ETSI004_KSID_LEN])
{
    if (RAND_bytes(ksid_r, ETSI004_KSID_LEN) != 1)
        return -1;
    ksid_r[6] = (uint8_t)((ksid_r[6] & 0x0f) | 0x40); /* version 4 */
    ksid_r[8] = (uint8_t)((ksid_r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    return 0;
}

size_t etsi004_metadata_json(uint32_t age_ms, uint32_t hops,
                             char out[ETSI004_METADATA_JSON_MAX + 1])
{
    int n = snprintf(out, ETSI004_METADATA_JSON_MAX + 1, "{\"age\":%u,\"hops\":%u}",
                     (unsigned)age_ms, (unsigned)hops);
    return n > 0 ? (size_t)n : 0;
}
