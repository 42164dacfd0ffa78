/* The 004 client's connections: up to max_connections TLS connections to
 * one KME, one request in flight on each (004 frames carry no request ID:
 * an answer belongs to the request before it), a FIFO queue for the rest.
 *
 * Connection states: CONNECTING -> HANDSHAKE -> IDLE <-> BUSY; any failure
 * -> CLOSED (freed). Deadlines: connect + handshake within
 * connect_timeout; an exchange within request_timeout plus the time the
 * KME may block for it (wait_ms); an idle connection closes after
 * idle_timeout. A timed-out exchange closes its connection (a late answer
 * would be taken for the next request's). A request that meets a reused
 * connection closed by the KME before any answer byte is sent once more
 * on a new connection (the KME closes idle connections too). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4c_internal.h"

enum pc_state { PC_CONNECTING, PC_HANDSHAKE, PC_IDLE, PC_BUSY, PC_CLOSED };

struct pconn {
    struct pconn *next;
    struct e4c_pool *pool;
    net_conn *conn;
    enum pc_state state;
    struct e4c_req *req;       /* in flight */
    kme_timer *timer;          /* the current phase's deadline */
    bool used;                 /* carried an exchange before */
    bool got_bytes;            /* the answer has begun */
};

struct e4c_pool {
    uv_loop_t *loop;
    struct e4c_pool_config cfg;
    char *host, *server_name, *expect;
    struct pconn *conns;
    unsigned n_conns;
    struct e4c_req *queue, **queue_tail;
    kme_timer *kick;           /* dispatch on the next loop turn */
    char kme_id[ETSI014_ID_MAX + 1];
    bool freeing;
};

void e4c_req_free(struct e4c_req *req)
{
    if (req == NULL)
        return;
    etsi004_free_secret(req->frame, req->frame_len);
    free(req);
}

static void dispatch(struct e4c_pool *p);

static void kick_cb(void *arg)
{
    dispatch(arg);
}

static void kick(struct e4c_pool *p)
{
    if (p->kick != NULL)
        kme_timer_restart(p->kick, 0);
}

/* Completes req (error or answer) and frees it. */
static void finish(struct e4c_req *req, int error, uint8_t service, const uint8_t *payload,
                   size_t len, const char *detail)
{
    if (!req->cancelled)
        req->done(req, error, service, payload, len, detail);
    e4c_req_free(req);
}

/* Closes and frees a connection that is in no list any more. */
static void pc_destroy(struct pconn *pc)
{
    kme_timer_free(&pc->timer);
    net_conn_close(&pc->conn);
    free(pc);
}

static void pc_free(struct pconn *pc)
{
    struct e4c_pool *p = pc->pool;
    for (struct pconn **pp = &p->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == pc) {
            *pp = pc->next;
            p->n_conns--;
            break;
        }
    }
    pc_destroy(pc);
}

static void queue_front(struct e4c_pool *p, struct e4c_req *req)
{
    req->next = p->queue;
    p->queue = req;
    if (p->queue_tail == &p->queue)
        p->queue_tail = &req->next;
}

static struct e4c_req *queue_pop(struct e4c_pool *p)
{
    struct e4c_req *r = p->queue;
    if (r != NULL) {
        p->queue = r->next;
        if (p->queue == NULL)
            p->queue_tail = &p->queue;
        r->next = NULL;
    }
    return r;
}

/* The connection failed (error, detail): its request fails, or is sent
 * again once when a reused connection was closed before any answer byte;
 * a connection that never got ready fails the oldest queued request (so a
 * dead KME is reported, not retried forever). */
static void pc_fail(struct pconn *pc, int error, const char *detail)
{
    struct e4c_pool *p = pc->pool;
    struct e4c_req *req = pc->req;
    bool connecting = pc->state == PC_CONNECTING || pc->state == PC_HANDSHAKE;
    bool reused = pc->used && !pc->got_bytes;
    pc->req = NULL;
    pc->state = PC_CLOSED;
    char text[256];
    snprintf(text, sizeof(text), "%s", detail != NULL ? detail : "connection failed");
    pc_free(pc); /* detail may have pointed into it */
    kick(p);
    if (req != NULL && reused && error == KME_EIO && !req->cancelled) {
        req->in_flight = false;
        queue_front(p, req);
        return;
    }
    if (req == NULL && connecting)
        req = queue_pop(p);
    /* Last: the callback may free the client (and this pool). */
    if (req != NULL)
        finish(req, error, 0, NULL, 0, text);
}

static void timer_cb(void *arg)
{
    struct pconn *pc = arg;
    if (pc->state == PC_IDLE) {
        pc->state = PC_CLOSED;
        pc_free(pc);
        return;
    }
    pc_fail(pc, KME_ETIMEDOUT, pc->state == PC_BUSY ? "no answer from the KME in time"
                                                    : "connect/TLS handshake timed out");
}

/* false when the write failed: pc is gone, its request finished (and the
 * pool may be gone with it: the callback may free the client). */
static bool send_req(struct pconn *pc, struct e4c_req *req)
{
    struct e4c_pool *p = pc->pool;
    pc->req = req;
    pc->state = PC_BUSY;
    pc->got_bytes = false;
    req->in_flight = true;
    net_conn_set_timeout(pc->conn, 0);
    kme_timer_restart(pc->timer, p->cfg.request_timeout_ms + req->wait_ms);
    if (net_conn_write(pc->conn, req->frame, req->frame_len) < 0) {
        pc_fail(pc, KME_EIO, "write failed");
        return false;
    }
    return true;
}

static void answer(struct pconn *pc)
{
    struct e4c_pool *p = pc->pool;
    for (;;) {
        size_t have;
        const uint8_t *in = (const uint8_t *)net_conn_input(pc->conn, &have);
        if (have == 0)
            return;
        if (pc->state != PC_BUSY) {
            pc_fail(pc, KME_EBADRESPONSE, "data from the KME without a request");
            return;
        }
        pc->got_bytes = true;
        struct etsi004_header h;
        int rc = etsi004_frame_parse(in, have, ETSI004_MAX_GET_RESPONSE, &h);
        if (rc < 0) {
            pc_fail(pc, KME_EBADRESPONSE, "answer longer than any 004 answer");
            return;
        }
        if (rc == 0)
            return;
        struct e4c_req *req = pc->req;
        if (h.service != req->want) {
            pc_fail(pc, KME_EBADRESPONSE, "answer of another service type");
            return;
        }
        /* The answer may hold key bytes: a private copy, wiped after the
         * callback; the connection is ready for the next request first,
         * since the callback may free the client (and this pool). */
        uint8_t *copy = malloc(h.length ? h.length : 1);
        if (copy == NULL) {
            pc_fail(pc, KME_ENOMEM, "out of memory");
            return;
        }
        memcpy(copy, in + ETSI004_HEADER_LEN, h.length);
        net_conn_consume(pc->conn, ETSI004_HEADER_LEN + h.length);
        pc->req = NULL;
        pc->state = PC_IDLE;
        pc->used = true;
        kme_timer_restart(pc->timer, p->cfg.idle_timeout_ms);
        kick(p);
        finish(req, KME_OK, h.service, copy, h.length, NULL);
        etsi004_free_secret(copy, h.length);
        return; /* one answer per request: more bytes are unsolicited */
    }
}

static void on_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct pconn *pc = arg;
    struct e4c_pool *p = pc->pool;
    (void)conn;
    switch (ev) {
    case NET_EV_CONNECTED:
        pc->state = PC_HANDSHAKE;
        if (net_conn_start_tls(pc->conn, p->cfg.tls, p->server_name) < 0)
            pc_fail(pc, KME_ETLS, "TLS could not start");
        return;
    case NET_EV_TLS_READY: {
        char cn[ETSI014_ID_MAX + 1];
        int n = net_conn_peer_subject(pc->conn, "CN", cn, sizeof(cn));
        if (p->expect != NULL && (n <= 0 || strcmp(cn, p->expect) != 0)) {
            pc_fail(pc, KME_ETLS, "the KME certificate does not name the expected KME ID");
            return;
        }
        if (n > 0)
            memcpy(p->kme_id, cn, (size_t)n + 1);
        pc->state = PC_IDLE;
        kme_timer_restart(pc->timer, p->cfg.idle_timeout_ms);
        net_conn_set_max_input(pc->conn, ETSI004_HEADER_LEN + ETSI004_MAX_GET_RESPONSE);
        dispatch(p);
        return;
    }
    case NET_EV_READ:
        answer(pc);
        return;
    case NET_EV_DRAINED:
        return;
    case NET_EV_EOF:
        pc_fail(pc, KME_EIO, "the KME closed the connection");
        return;
    case NET_EV_TIMEOUT:
        pc_fail(pc, KME_ETIMEDOUT, "connection timed out");
        return;
    case NET_EV_ERROR:
        pc_fail(pc, kme_map_net_error(net_conn_error_code(pc->conn),
                                      pc->state == PC_CONNECTING || pc->state == PC_HANDSHAKE),
                net_conn_error(pc->conn));
        return;
    }
}

static struct pconn *pc_open(struct e4c_pool *p)
{
    struct pconn *pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        return NULL;
    pc->pool = p;
    pc->timer = kme_timer_new(p->loop, timer_cb, pc);
    pc->conn = net_connect(p->loop, p->host, p->cfg.port, on_event, pc);
    if (pc->timer == NULL || pc->conn == NULL) {
        kme_timer_free(&pc->timer);
        net_conn_close(&pc->conn);
        free(pc);
        return NULL;
    }
    pc->state = PC_CONNECTING;
    kme_timer_restart(pc->timer, p->cfg.connect_timeout_ms);
    pc->next = p->conns;
    p->conns = pc;
    p->n_conns++;
    return pc;
}

static void dispatch(struct e4c_pool *p)
{
    if (p->freeing)
        return;
    /* Idle connections take queued requests first. */
    for (struct pconn *pc = p->conns; pc != NULL && p->queue != NULL; pc = pc->next)
        if (pc->state == PC_IDLE && !send_req(pc, queue_pop(p)))
            return; /* the rest on the next turn (pc_fail kicked) */
    /* Then one new connection per request still waiting, within the limit. */
    unsigned opening = 0;
    for (struct pconn *pc = p->conns; pc != NULL; pc = pc->next)
        opening += pc->state == PC_CONNECTING || pc->state == PC_HANDSHAKE;
    unsigned waiting = 0;
    for (struct e4c_req *r = p->queue; r != NULL; r = r->next)
        waiting++;
    while (waiting > opening && p->n_conns < p->cfg.max_connections) {
        if (pc_open(p) == NULL) {
            kick(p); /* the others on the next turn: the callback may free us */
            finish(queue_pop(p), KME_ENOMEM, 0, NULL, 0, "out of memory");
            return;
        }
        opening++;
    }
}

struct e4c_pool *e4c_pool_new(uv_loop_t *loop, const struct e4c_pool_config *cfg)
{
    struct e4c_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->cfg = *cfg;
    p->host = strdup(cfg->host);
    p->server_name = strdup(cfg->server_name != NULL ? cfg->server_name : cfg->host);
    p->expect = cfg->expect_kme_id != NULL ? strdup(cfg->expect_kme_id) : NULL;
    p->queue_tail = &p->queue;
    p->kick = kme_timer_new(loop, kick_cb, p);
    if (p->host == NULL || p->server_name == NULL || p->kick == NULL ||
        (cfg->expect_kme_id != NULL && p->expect == NULL)) {
        e4c_pool_free(&p);
        return NULL;
    }
    return p;
}

void e4c_pool_free(struct e4c_pool **pp)
{
    struct e4c_pool *p = *pp;
    if (p == NULL)
        return;
    *pp = NULL;
    p->freeing = true;
    /* Requests in flight join the queue's head; every connection closes;
     * then each request is cancelled (the callbacks may not submit: the
     * client is being freed). */
    while (p->conns != NULL) {
        struct pconn *pc = p->conns;
        p->conns = pc->next;
        p->n_conns--;
        if (pc->req != NULL) {
            pc->req->in_flight = false;
            queue_front(p, pc->req);
            pc->req = NULL;
        }
        pc->state = PC_CLOSED;
        pc_destroy(pc);
    }
    struct e4c_req *r;
    while ((r = queue_pop(p)) != NULL)
        finish(r, KME_ECANCELLED, 0, NULL, 0, "cancelled");
    kme_timer_free(&p->kick);
    free(p->host);
    free(p->server_name);
    free(p->expect);
    free(p);
}

void e4c_pool_submit(struct e4c_pool *p, struct e4c_req *req)
{
    req->next = NULL;
    *p->queue_tail = req;
    p->queue_tail = &req->next;
    kick(p);
}

void e4c_pool_cancel(struct e4c_pool *p, struct e4c_req *req)
{
    if (req->in_flight) {
        req->cancelled = true;
        return;
    }
    for (struct e4c_req **rp = &p->queue; *rp != NULL; rp = &(*rp)->next) {
        if (*rp == req) {
            *rp = req->next;
            if (*rp == NULL)
                p->queue_tail = rp;
            e4c_req_free(req);
            return;
        }
    }
}

const char *e4c_pool_kme_id(const struct e4c_pool *p)
{
    return p->kme_id[0] != '\0' ? p->kme_id : NULL;
}
