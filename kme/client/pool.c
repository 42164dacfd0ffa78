/* Keep-alive HTTPS connections to one KME and the FIFO of HTTP exchanges
 * waiting for one.
 *
 * Connection states (one transition function, conn_enter):
 *   CONNECTING -> HANDSHAKING -> IDLE <-> BUSY, and any -> CLOSED.
 * Each connection has one timer: the connect timeout while CONNECTING or
 * HANDSHAKING, the idle timeout while IDLE. An exchange is QUEUED (in the
 * FIFO) or ACTIVE (on one BUSY connection). Every exchange has the same
 * timeout from its submission, so deadlines grow in submission order: all
 * outstanding exchanges sit in one list in that order and one pool timer
 * is armed for the oldest (no timer per request).
 *
 * Completions are never reported from inside kme_pool_submit(): pump()
 * only hands exchanges to connections and opens connections; failures are
 * reported from libuv callbacks. Callbacks may free the pool: every place
 * that calls out checks the "gone" flag before touching it again. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

enum pconn_state { PC_CONNECTING, PC_HANDSHAKING, PC_IDLE, PC_BUSY, PC_CLOSED };

static const char *const pconn_state_names[] = {
    [PC_CONNECTING] = "connecting",
    [PC_HANDSHAKING] = "handshaking",
    [PC_IDLE] = "idle",
    [PC_BUSY] = "busy",
    [PC_CLOSED] = "closed",
};

struct pconn {
    kme_pool *pool;
    net_conn *nc;
    enum pconn_state state;
    kme_timer *timer;          /* connect or idle timeout, by state */
    struct kme_http_req *req;  /* the exchange while BUSY */
    struct kme_http_resp resp; /* parser of req's response */
    uint64_t exchanges;        /* completed on this connection */
    struct pconn *prev, *next;
    struct pconn *idle_prev, *idle_next; /* links in pool->idle while IDLE */
};

enum req_state { RQ_QUEUED, RQ_ACTIVE };

struct kme_http_req {
    kme_pool *pool;
    enum req_state state;
    char *wire;                /* request bytes (owned, wiped) */
    size_t wire_len;
    kme_http_done_cb done;
    void *arg;
    uint64_t deadline;         /* uv_now() value of the request timeout */
    struct pconn *conn;        /* while ACTIVE */
    bool replayed;             /* resent once after a stale connection */
    struct kme_http_req *prev, *next; /* FIFO links while QUEUED */
    struct kme_http_req *aprev, *anext; /* pool->all links (outstanding) */
};

struct kme_pool {
    uv_loop_t *loop;
    struct kme_pool_config cfg; /* pointers borrowed from the client */
    struct pconn *conns;
    unsigned nconns;
    struct pconn *idle;   /* IDLE connections, most recently used first */
    unsigned nopening;    /* connections in CONNECTING or HANDSHAKING */
    struct kme_http_req *qhead, *qtail;
    size_t queued;
    struct kme_http_req *ahead, *atail; /* outstanding, oldest first */
    kme_timer *deadline_timer;          /* armed for ahead's deadline */
    struct kme_client_stats stats;
    bool *gone; /* set to true when the pool is freed inside a callback */
};

static void pump(kme_pool *p);
static void conn_cb(net_conn *nc, enum net_event ev, void *arg);

/* ---- queue -------------------------------------------------------------- */

static void queue_unlink(kme_pool *p, struct kme_http_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        p->qhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        p->qtail = r->prev;
    r->prev = r->next = NULL;
    p->queued--;
}

static void queue_push(kme_pool *p, struct kme_http_req *r, bool front)
{
    r->state = RQ_QUEUED;
    r->conn = NULL;
    if (front) {
        r->prev = NULL;
        r->next = p->qhead;
        if (p->qhead)
            p->qhead->prev = r;
        else
            p->qtail = r;
        p->qhead = r;
    } else {
        r->next = NULL;
        r->prev = p->qtail;
        if (p->qtail)
            p->qtail->next = r;
        else
            p->qhead = r;
        p->qtail = r;
    }
    p->queued++;
}

static void deadline_arm(kme_pool *p)
{
    if (p->ahead == NULL) {
        kme_timer_stop(p->deadline_timer);
        return;
    }
    uint64_t now = uv_now(p->loop);
    kme_timer_restart(p->deadline_timer,
                      p->ahead->deadline > now ? p->ahead->deadline - now : 0);
}

/* Removes r from the outstanding list and frees it. */
static void req_free(kme_pool *p, struct kme_http_req *r)
{
    bool was_head = p->ahead == r;
    if (r->aprev)
        r->aprev->anext = r->anext;
    else
        p->ahead = r->anext;
    if (r->anext)
        r->anext->aprev = r->aprev;
    else
        p->atail = r->aprev;
    if (was_head)
        deadline_arm(p);
    if (r->wire != NULL) {
        OPENSSL_cleanse(r->wire, r->wire_len);
        free(r->wire);
    }
    free(r);
}

/* Frees r (already detached from queue and connection) and reports the
 * outcome. Returns true when the pool was freed by the callback. */
static bool req_complete(kme_pool *p, struct kme_http_req *r, int error, int status,
                         const char *body, size_t len, const char *detail)
{
    kme_http_done_cb done = r->done;
    void *arg = r->arg;
    req_free(p, r);
    if (done == NULL)
        return false; /* cancelled while in flight: the answer is dropped */
    bool gone = false;
    bool *outer = p->gone;
    /* Only for the callback's duration: restored below, or the pool is
     * gone (freed by the callback) and with it the pointer. */
    // cppcheck-suppress autoVariables
    p->gone = &gone;
    done(error, status, body != NULL ? body : "", len, detail, arg);
    if (gone) {
        if (outer != NULL)
            *outer = true;
        return true;
    }
    p->gone = outer;
    return false;
}

/* ---- connections -------------------------------------------------------- */

static void conn_timer_cb(void *arg);

static bool opening(enum pconn_state st)
{
    return st == PC_CONNECTING || st == PC_HANDSHAKING;
}

/* The one place where connection states change; keeps the timers, the idle
 * list and the count of opening connections in step. */
static void conn_enter(struct pconn *c, enum pconn_state next)
{
    kme_pool *p = c->pool;
    enum pconn_state prev = c->state;
    (void)pconn_state_names;
    if (prev == next)
        return;
    c->state = next;
    if (opening(prev) && !opening(next))
        p->nopening--;
    if (prev == PC_IDLE) {
        if (c->idle_prev)
            c->idle_prev->idle_next = c->idle_next;
        else
            p->idle = c->idle_next;
        if (c->idle_next)
            c->idle_next->idle_prev = c->idle_prev;
        c->idle_prev = c->idle_next = NULL;
    }
    if ((prev == PC_IDLE || opening(prev)) && next != PC_HANDSHAKING)
        kme_timer_stop(c->timer);
    if (next == PC_IDLE) {
        c->idle_next = p->idle;
        if (p->idle)
            p->idle->idle_prev = c;
        p->idle = c;
        if (p->cfg.idle_timeout_ms > 0)
            kme_timer_restart(c->timer, p->cfg.idle_timeout_ms);
    }
}

/* Unlinks and closes a connection; its exchange (if any) must have been
 * detached already. */
static void conn_destroy(struct pconn *c)
{
    kme_pool *p = c->pool;
    conn_enter(c, PC_CLOSED);
    kme_timer_free(&c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    p->nconns--;
    net_conn_close(&c->nc);
    kme_http_resp_clear(&c->resp);
    free(c);
}

static bool conn_open(kme_pool *p)
{
    struct pconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return false;
    c->pool = p;
    c->state = PC_CONNECTING;
    c->timer = kme_timer_new(p->loop, conn_timer_cb, c);
    if (c->timer == NULL) {
        free(c);
        return false;
    }
    c->nc = net_connect(p->loop, p->cfg.url->host, p->cfg.url->port, conn_cb, c);
    if (c->nc == NULL) {
        kme_timer_free(&c->timer);
        free(c);
        return false;
    }
    kme_timer_restart(c->timer, p->cfg.connect_timeout_ms);
    p->nopening++;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
    p->stats.connections_opened++;
    return true;
}

/* Puts an exchange on an idle connection. false when the write failed (the
 * connection is gone and the exchange back at the queue's head). */
static bool conn_assign(struct pconn *c, struct kme_http_req *r)
{
    kme_pool *p = c->pool;
    queue_unlink(p, r);
    kme_http_resp_init(&c->resp, p->cfg.max_response_bytes);
    c->req = r;
    r->conn = c;
    r->state = RQ_ACTIVE;
    conn_enter(c, PC_BUSY);
    if (net_conn_write(c->nc, r->wire, r->wire_len) < 0) {
        c->req = NULL;
        queue_push(p, r, true);
        conn_destroy(c);
        return false;
    }
    p->stats.http_requests++;
    if (c->exchanges > 0)
        p->stats.reused++;
    return true;
}

static void pump(kme_pool *p)
{
    /* p->idle holds exactly the IDLE connections: conn_assign moves the
     * head out of it (conn_enter) before it can be destroyed. The analyzer
     * does not know the state of the head and reports a use after free. */
    while (p->qhead != NULL && p->idle != NULL)
        conn_assign(p->idle, p->qhead); // NOLINT(clang-analyzer-unix.Malloc)
    unsigned pending = p->nopening;
    while (pending < p->queued && p->nconns < p->cfg.max_connections) {
        if (!conn_open(p))
            break; /* out of memory: the request timers report it */
        pending++;
    }
}

/* A connection could not be established: the oldest waiting exchange
 * fails with the reason (each waiting exchange had a connection opened for
 * it, so a dead KME fails them one by one, each with its own cause). */
static void connect_failed(struct pconn *c, int error, const char *detail)
{
    kme_pool *p = c->pool;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", detail);
    conn_destroy(c);
    struct kme_http_req *r = p->qhead;
    if (r != NULL) {
        queue_unlink(p, r);
        if (req_complete(p, r, error, 0, NULL, 0, msg))
            return;
    }
    pump(p);
}

static void conn_timer_cb(void *arg)
{
    struct pconn *c = arg;
    if (c->state == PC_IDLE) {
        conn_destroy(c);
        return;
    }
    if (!opening(c->state))
        return;
    char msg[128];
    snprintf(msg, sizeof(msg), "connection to the KME not established within %llu ms",
             (unsigned long long)c->pool->cfg.connect_timeout_ms);
    connect_failed(c, KME_ETIMEDOUT, msg);
}

/* The exchange on c ended without a response (EOF or error). A request
 * sent on a reused connection that got no byte back met a connection the
 * KME had already closed: send it once more on a fresh connection. */
static void busy_conn_lost(struct pconn *c, int error, const char *detail)
{
    kme_pool *p = c->pool;
    struct kme_http_req *r = c->req;
    c->req = NULL;
    bool stale = !c->resp.started && c->exchanges > 0 && !r->replayed && r->done != NULL;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", detail);
    conn_destroy(c);
    if (stale) {
        r->replayed = true;
        queue_push(p, r, true);
        pump(p);
        return;
    }
    if (req_complete(p, r, error, 0, NULL, 0, msg))
        return;
    pump(p);
}

/* A whole response arrived on c. */
static void conn_response(struct pconn *c, bool leftover)
{
    kme_pool *p = c->pool;
    struct kme_http_req *r = c->req;
    c->req = NULL;
    int status = c->resp.status;
    char *body = c->resp.body;
    size_t len = c->resp.body_len, cap = c->resp.body_cap;
    bool keep = c->resp.keep_alive && !leftover;
    c->resp.body = NULL; /* ownership moves here */
    kme_http_resp_clear(&c->resp);
    c->exchanges++;
    if (keep)
        conn_enter(c, PC_IDLE);
    else
        conn_destroy(c);
    bool gone = req_complete(p, r, 0, status, body, len, NULL);
    if (body != NULL) {
        OPENSSL_cleanse(body, cap + 1);
        free(body);
    }
    if (!gone)
        pump(p);
}

static void conn_read(struct pconn *c)
{
    size_t len;
    const char *in = net_conn_input(c->nc, &len);
    if (c->state != PC_BUSY) {
        /* unsolicited bytes: the connection is out of step */
        net_conn_consume(c->nc, len);
        conn_destroy(c);
        return;
    }
    size_t used = 0;
    int rc = kme_http_resp_feed(&c->resp, in, len, &used);
    net_conn_consume(c->nc, len);
    if (rc == 0)
        return;
    if (rc == 1) {
        conn_response(c, used < len);
        return;
    }
    kme_pool *p = c->pool;
    struct kme_http_req *r = c->req;
    c->req = NULL;
    char msg[256];
    snprintf(msg, sizeof(msg), "malformed HTTP response: %s",
             c->resp.error ? c->resp.error : "parse error");
    conn_destroy(c);
    if (!req_complete(p, r, KME_EBADRESPONSE, 0, NULL, 0, msg))
        pump(p);
}

static void conn_tls_ready(struct pconn *c)
{
    kme_pool *p = c->pool;
    if (p->cfg.expect_kme_id != NULL) {
        char cn[256];
        int n = net_conn_peer_subject(c->nc, "CN", cn, sizeof(cn));
        if (n < 0 || strcmp(cn, p->cfg.expect_kme_id) != 0) {
            char msg[400];
            snprintf(msg, sizeof(msg), "KME certificate CN '%.255s' is not the expected KME ID",
                     n < 0 ? "" : cn);
            connect_failed(c, KME_ETLS, msg);
            return;
        }
    }
    conn_enter(c, PC_IDLE);
    pump(p);
}

static void conn_cb(net_conn *nc, enum net_event ev, void *arg)
{
    struct pconn *c = arg;
    (void)nc;
    switch (ev) {
    case NET_EV_CONNECTED: {
        const char *name = c->pool->cfg.server_name ? c->pool->cfg.server_name
                                                     : c->pool->cfg.url->host;
        conn_enter(c, PC_HANDSHAKING);
        int rc = net_conn_start_tls(c->nc, c->pool->cfg.tls, name);
        if (rc < 0)
            connect_failed(c, KME_ETLS, net_strerror(rc));
        return;
    }
    case NET_EV_TLS_READY:
        conn_tls_ready(c);
        return;
    case NET_EV_READ:
        conn_read(c);
        return;
    case NET_EV_DRAINED:
        return;
    case NET_EV_EOF:
        if (c->state == PC_BUSY) {
            if (kme_http_resp_eof(&c->resp) == 1) {
                conn_response(c, false);
                return;
            }
            busy_conn_lost(c, KME_EIO, c->resp.error ? c->resp.error : "connection closed");
        } else if (c->state == PC_CONNECTING || c->state == PC_HANDSHAKING) {
            connect_failed(c, KME_ETLS, "connection closed during the TLS handshake");
        } else {
            conn_destroy(c);
        }
        return;
    case NET_EV_TIMEOUT:
        return; /* net idle timeout unused: our own timers rule */
    case NET_EV_ERROR: {
        const char *err = net_conn_error(c->nc);
        if (c->state == PC_CONNECTING || c->state == PC_HANDSHAKING)
            connect_failed(c, kme_map_net_error(net_conn_error_code(c->nc), true), err);
        else if (c->state == PC_BUSY)
            busy_conn_lost(c, kme_map_net_error(net_conn_error_code(c->nc), false), err);
        else
            conn_destroy(c);
        return;
    }
    }
}

/* ---- exchanges ---------------------------------------------------------- */

/* Expires one exchange. Returns true when the pool was freed. */
static bool request_expire(kme_pool *p, struct kme_http_req *r)
{
    char msg[128];
    if (r->state == RQ_QUEUED) {
        queue_unlink(p, r);
        snprintf(msg, sizeof(msg),
                 p->nopening > 0 ? "connection to the KME not established within %llu ms"
                                 : "no connection to the KME became free within %llu ms",
                 (unsigned long long)p->cfg.request_timeout_ms);
    } else {
        struct pconn *c = r->conn;
        c->req = NULL;
        conn_destroy(c);
        snprintf(msg, sizeof(msg), "no response from the KME within %llu ms",
                 (unsigned long long)p->cfg.request_timeout_ms);
    }
    return req_complete(p, r, KME_ETIMEDOUT, 0, NULL, 0, msg);
}

static void deadline_cb(void *arg)
{
    kme_pool *p = arg;
    uint64_t now = uv_now(p->loop);
    /* req_free unlinks the head (which has no aprev) and moves p->ahead on;
     * the analyzer assumes a head with an aprev and reports a use after
     * free. */
    // NOLINTNEXTLINE(clang-analyzer-unix.Malloc)
    while (p->ahead != NULL && p->ahead->deadline <= now)
        if (request_expire(p, p->ahead))
            return;
    deadline_arm(p);
    pump(p);
}

struct kme_http_req *kme_pool_submit(kme_pool *p, const char *method,
                                     const char *path, const char *body,
                                     size_t body_len, kme_http_done_cb done,
                                     void *arg)
{
    struct kme_http_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->pool = p;
    r->done = done;
    r->arg = arg;
    char head[1024];
    int hn;
    if (body != NULL)
        hn = snprintf(head, sizeof(head),
                      "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: qumail\r\n"
                      "Accept: application/json\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      method, p->cfg.url->prefix, path, p->cfg.url->host_header, body_len);
    else
        hn = snprintf(head, sizeof(head),
                      "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: qumail\r\n"
                      "Accept: application/json\r\n\r\n",
                      method, p->cfg.url->prefix, path, p->cfg.url->host_header);
    if (hn < 0 || (size_t)hn >= sizeof(head) || (body != NULL && body_len > SIZE_MAX - (size_t)hn)) {
        free(r);
        return NULL;
    }
    r->wire_len = (size_t)hn + (body != NULL ? body_len : 0);
    r->wire = malloc(r->wire_len);
    if (r->wire == NULL) {
        free(r);
        return NULL;
    }
    r->deadline = uv_now(p->loop) + p->cfg.request_timeout_ms;
    r->aprev = p->atail;
    if (p->atail)
        p->atail->anext = r;
    else
        p->ahead = r;
    p->atail = r;
    if (p->ahead == r)
        deadline_arm(p);
    memcpy(r->wire, head, (size_t)hn);
    if (body != NULL && body_len > 0)
        memcpy(r->wire + hn, body, body_len);
    queue_push(p, r, false);
    pump(p);
    return r;
}

void kme_pool_cancel(kme_pool *p, struct kme_http_req *r)
{
    if (r->state == RQ_QUEUED) {
        queue_unlink(p, r);
        req_free(p, r);
        return;
    }
    /* In flight: let the answer arrive and drop it (wiped with the body),
     * so the keep-alive connection survives; the request timer still
     * bounds the wait. */
    r->done = NULL;
    r->arg = NULL;
}

kme_pool *kme_pool_new(uv_loop_t *loop, const struct kme_pool_config *cfg)
{
    kme_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->cfg = *cfg;
    p->deadline_timer = kme_timer_new(loop, deadline_cb, p);
    if (p->deadline_timer == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

void kme_pool_free(kme_pool **pp)
{
    kme_pool *p = *pp;
    *pp = NULL;
    if (p == NULL)
        return;
    if (p->gone != NULL)
        *p->gone = true;
    /* Detach everything first: the callbacks below may do anything except
     * use this pool (it is being freed). */
    struct kme_http_req *cancelled = NULL;
    /* conn_destroy unlinks c from c->pool->conns, and c->pool is p: the
     * analyzer does not know the back pointer (use after free reported at
     * c->req). */
    while (p->conns != NULL) {
        struct pconn *c = p->conns;
        if (c->req != NULL) { // NOLINT(clang-analyzer-unix.Malloc)
            c->req->next = cancelled;
            cancelled = c->req;
            c->req = NULL;
        }
        conn_destroy(c);
    }
    while (p->qhead != NULL) {
        struct kme_http_req *r = p->qhead;
        queue_unlink(p, r);
        r->next = cancelled;
        cancelled = r;
    }
    /* A request is on one connection or in the queue, never both: the list
     * has no cycle (the analyzer cannot tell, and reports r as freed). */
    while (cancelled != NULL) {
        struct kme_http_req *r = cancelled;
        cancelled = r->next; // NOLINT(clang-analyzer-unix.Malloc)
        kme_http_done_cb done = r->done;
        void *arg = r->arg;
        req_free(p, r);
        if (done != NULL)
            done(KME_ECANCELLED, 0, "", 0, "cancelled: the client was freed", arg);
    }
    kme_timer_free(&p->deadline_timer);
    free(p);
}

void kme_pool_stats(const kme_pool *p, struct kme_client_stats *st)
{
    st->connections_opened = p->stats.connections_opened;
    st->http_requests = p->stats.http_requests;
    st->reused = p->stats.reused;
    st->queued = p->queued;
}
