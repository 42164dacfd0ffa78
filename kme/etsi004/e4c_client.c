/* The 004 client's primitives: OPEN_CONNECT, GET_KEY, CLOSE over the
 * connection pool (e4c_pool.c); configuration and identities. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4c_internal.h"

#define DEFAULT_WAIT_MS 60000 /* an OPEN_CONNECT with Timeout 0: the KME chooses */


int etsi004_parse_address(const char *text, char **host_r, uint16_t *port_r)
{
    *host_r = NULL;
    const char *p = text;
    if (p == NULL)
        return KME_EINVAL;
    if (strncmp(p, "etsi004://", 10) == 0)
        p += 10;
    const char *end;
    const char *host = p;
    size_t hlen;
    if (*p == '[') {
        end = strchr(p, ']');
        if (end == NULL)
            return KME_EINVAL;
        host = p + 1;
        hlen = (size_t)(end - host);
        p = end + 1;
    } else {
        end = strchr(p, ':');
        hlen = end != NULL ? (size_t)(end - p) : strlen(p);
        p += hlen;
    }
    if (hlen == 0 || hlen > 253)
        return KME_EINVAL;
    unsigned long port = ETSI004_DEFAULT_PORT;
    if (*p == ':') {
        char *e;
        port = strtoul(p + 1, &e, 10);
        if (e == p + 1 || *e != '\0' || port == 0 || port > 65535)
            return KME_EINVAL;
    } else if (*p != '\0' && !(*p == '/' && p[1] == '\0')) {
        return KME_EINVAL;
    }
    *host_r = strndup(host, hlen);
    if (*host_r == NULL)
        return KME_ENOMEM;
    *port_r = (uint16_t)port;
    return KME_OK;
}

/* Our SAE ID: the CN of our certificate (what the KME will see). */
static void read_sae_id(const char *cert_file, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(cert_file, "r");
    if (f == NULL)
        return;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return;
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out,
                                      (int)cap);
    if (n < 0)
        out[0] = '\0';
    X509_free(x);
}

etsi004_client *etsi004_client_new(uv_loop_t *loop, const struct etsi004_client_config *cfg,
                                   char **error_r)
{
    if (error_r != NULL)
        *error_r = NULL;
    if (cfg->host == NULL || cfg->cert_file == NULL || cfg->key_file == NULL) {
        if (error_r != NULL)
            *error_r = strdup("host, cert_file and key_file are required");
        return NULL;
    }
    etsi004_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    struct net_tls_config tc = {.server = false, .cert_file = cfg->cert_file,
                                .key_file = cfg->key_file, .ca_file = cfg->ca_file,
                                .verify_peer = true};
    c->tls = net_tls_new(&tc, error_r);
    if (c->tls == NULL) {
        free(c);
        return NULL;
    }
    read_sae_id(cfg->cert_file, c->sae_id, sizeof(c->sae_id));
    struct e4c_pool_config pc = {
        .host = cfg->host,
        .port = cfg->port ? cfg->port : ETSI004_DEFAULT_PORT,
        .tls = c->tls,
        .server_name = cfg->server_name,
        .expect_kme_id = cfg->expect_kme_id,
        .max_connections = cfg->max_connections ? cfg->max_connections : 2,
        .connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 5000,
        .request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 10000,
        .idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : 60000,
    };
    c->pool = e4c_pool_new(loop, &pc);
    if (c->pool == NULL) {
        net_tls_free(&c->tls);
        free(c);
        return NULL;
    }
    return c;
}

void etsi004_client_free(etsi004_client **cp)
{
    etsi004_client *c = *cp;
    if (c == NULL || c->freeing)
        return;
    *cp = NULL;
    c->freeing = true;
    e4c_pool_free(&c->pool); /* every op completes with KME_ECANCELLED */
    net_tls_free(&c->tls);
    free(c);
}

const char *etsi004_client_kme_id(const etsi004_client *c)
{
    return c->pool != NULL ? e4c_pool_kme_id(c->pool) : NULL;
}

const char *etsi004_client_sae_id(const etsi004_client *c)
{
    return c->sae_id[0] != '\0' ? c->sae_id : NULL;
}

uv_loop_t *etsi004_client_loop(const etsi004_client *c)
{
    return c->loop;
}

int etsi004_status_error(uint32_t status)
{
    switch (status) {
    case ETSI004_SUCCESS: return KME_OK;
    case ETSI004_INSUFFICIENT_KEY: return KME_ESERVER;
    case ETSI004_TIMEOUT: return KME_ETIMEDOUT;
    case ETSI004_PEER_NOT_CONNECTED:
    case ETSI004_PEER_APP_NOT_CONNECTED:
    case ETSI004_NO_QKD_CONNECTION: return KME_ENOTFOUND;
    case ETSI004_KSID_IN_USE: return KME_EUNAUTHORIZED;
    case ETSI004_QOS_NOT_MET: return KME_ELIMITS;
    default: return KME_EBADRESPONSE;
    }
}

/* ---- operations --------------------------------------------------------------- */

static void op_unlink(struct op *o)
{
    for (struct op **pp = &o->c->ops; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            return;
        }
    }
}

static void fail_cb(struct op *o, int error, const char *message)
{
    struct etsi004_result r = {.error = error, .message = message ? message : "failed"};
    switch (o->service) {
    case ETSI004_OPEN_CONNECT_REQ: o->cb.open(&r, NULL, NULL, o->arg); break;
    case ETSI004_GET_KEY_REQ: o->cb.get(&r, NULL, o->arg); break;
    default: o->cb.close(&r, o->arg); break;
    }
}

static void done(struct e4c_req *req, int error, uint8_t service, const uint8_t *p,
                 size_t n, const char *detail)
{
    struct op *o = req->op;
    (void)service;
    op_unlink(o);
    if (error != KME_OK) {
        fail_cb(o, error, detail);
        free(o);
        return;
    }
    struct etsi004_result r = {.error = KME_OK, .message = "ok"};
    if (o->service == ETSI004_OPEN_CONNECT_REQ) {
        struct etsi004_open_resp resp;
        if (etsi004_open_resp_decode(p, n, &resp) < 0) {
            fail_cb(o, KME_EBADRESPONSE, "malformed OPEN_CONNECT answer");
        } else {
            r.status = resp.status;
            r.message = etsi004_status_name(resp.status);
            o->cb.open(&r, resp.has_qos ? &resp.qos : NULL, resp.has_qos ? resp.ksid : NULL,
                       o->arg);
        }
    } else if (o->service == ETSI004_GET_KEY_REQ) {
        struct etsi004_get_resp resp;
        if (etsi004_get_resp_decode(p, n, &resp) < 0) {
            fail_cb(o, KME_EBADRESPONSE, "malformed GET_KEY answer");
        } else {
            struct etsi004_chunk ch = {.index = resp.index, .key = resp.key,
                                       .len = resp.key_len,
                                       .metadata = (const char *)resp.metadata,
                                       .metadata_len = resp.metadata_len,
                                       .metadata_needed = resp.metadata_needed};
            r.status = resp.status;
            r.message = etsi004_status_name(resp.status);
            o->cb.get(&r, resp.status == ETSI004_SUCCESS ||
                              resp.status == ETSI004_METADATA_TOO_SMALL ? &ch : NULL,
                      o->arg);
        }
    } else {
        uint32_t st;
        if (etsi004_close_resp_decode(p, n, &st) < 0) {
            fail_cb(o, KME_EBADRESPONSE, "malformed CLOSE answer");
        } else {
            r.status = st;
            r.message = etsi004_status_name(st);
            o->cb.close(&r, o->arg);
        }
    }
    free(o);
}

/* Queues the frame for the operation tmpl describes (service, callback,
 * arg); the frame is taken over. */
static int submit(etsi004_client *c, const struct op *tmpl, uint8_t want, uint8_t *frame,
                  size_t len, uint64_t wait_ms)
{
    if (frame == NULL)
        return KME_ENOMEM;
    struct op *o = calloc(1, sizeof(*o));
    struct e4c_req *req = calloc(1, sizeof(*req));
    if (o == NULL || req == NULL || c->freeing) {
        free(o);
        free(req);
        etsi004_free_secret(frame, len);
        return c->freeing ? KME_ECANCELLED : KME_ENOMEM;
    }
    *o = *tmpl;
    o->c = c;
    o->req = req;
    void *arg = o->arg;
    req->frame = frame;
    req->frame_len = len;
    req->want = want;
    req->wait_ms = wait_ms;
    req->done = done;
    req->op = o;
    req->arg = arg;
    o->next = c->ops;
    c->ops = o;
    e4c_pool_submit(c->pool, req);
    return KME_OK;
}

int etsi004_client_open(etsi004_client *c, const char *source, const char *destination,
                        const struct etsi004_qos *qos, const uint8_t *ksid, uint64_t wait_ms,
                        etsi004_open_cb cb, void *arg)
{
    static const uint8_t null_ksid[ETSI004_KSID_LEN];
    if (c == NULL || source == NULL || destination == NULL || qos == NULL || cb == NULL ||
        strlen(source) > ETSI004_URI_MAX || strlen(destination) > ETSI004_URI_MAX)
        return KME_EINVAL;
    size_t len = 0;
    uint8_t *f = etsi004_open_req_encode(source, destination, qos,
                                         ksid != NULL ? ksid : null_ksid, &len);
    if (wait_ms == 0)
        wait_ms = qos->timeout != 0 ? qos->timeout : DEFAULT_WAIT_MS;
    struct op t = {.service = ETSI004_OPEN_CONNECT_REQ, .arg = arg, .cb.open = cb};
    return submit(c, &t, ETSI004_OPEN_CONNECT_RESP, f, len, wait_ms);
}

int etsi004_client_get_key(etsi004_client *c, const uint8_t *ksid, uint32_t index,
                           uint32_t metadata_size, uint64_t wait_ms, etsi004_get_cb cb,
                           void *arg)
{
    if (c == NULL || ksid == NULL || cb == NULL)
        return KME_EINVAL;
    struct etsi004_get_req r = {.index = index, .metadata_size = metadata_size};
    memcpy(r.ksid, ksid, ETSI004_KSID_LEN);
    size_t len = 0;
    uint8_t *f = etsi004_get_req_encode(&r, &len);
    struct op t = {.service = ETSI004_GET_KEY_REQ, .arg = arg, .cb.get = cb};
    return submit(c, &t, ETSI004_GET_KEY_RESP, f, len, wait_ms ? wait_ms : DEFAULT_WAIT_MS);
}

int etsi004_client_close(etsi004_client *c, const uint8_t *ksid, etsi004_close_cb cb,
                         void *arg)
{
    if (c == NULL || ksid == NULL || cb == NULL)
        return KME_EINVAL;
    size_t len = 0;
    uint8_t *f = etsi004_close_req_encode(ksid, &len);
    struct op t = {.service = ETSI004_CLOSE_REQ, .arg = arg, .cb.close = cb};
    return submit(c, &t, ETSI004_CLOSE_RESP, f, len, 0);
}

size_t etsi004_client_cancel(etsi004_client *c, void *arg)
{
    if (c == NULL || c->freeing)
        return 0;
    size_t n = e4c_batches_cancel(c, arg);
    struct op **pp = &c->ops;
    while (*pp != NULL) {
        struct op *o = *pp;
        if (o->arg != arg) {
            pp = &o->next;
            continue;
        }
        *pp = o->next;
        e4c_pool_cancel(c->pool, o->req);
        fail_cb(o, KME_ECANCELLED, "cancelled");
        free(o);
        n++;
        pp = &c->ops; /* the callback may have changed the list */
    }
    return n;
}
