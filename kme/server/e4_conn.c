/* Connections of the KME's 004 listener: mutual TLS (net_conn), the
 * caller's SAE ID from its certificate, frames read with
 * etsi004_frame_parse() (bounded: a length above ETSI004_MAX_REQUEST is
 * refused at once), one request at a time per connection (pipelined
 * frames wait in the input buffer), one log line per request.
 *
 * Deadlines: a TLS handshake must end within handshake_timeout, a frame
 * must be complete within handshake_timeout of its first byte, and a
 * connection idle for idle_timeout is closed (not while its request
 * waits). At most max_connections authenticated connections and as many
 * handshakes; beyond, the newcomer is closed. An unknown service type, a
 * malformed payload or an oversized length closes the connection (the
 * framing has no error frame; closing is the only answer that cannot be
 * misread).
 *
 * States: HANDSHAKE --tls ready--> READY --frame--> BUSY --answer--> READY;
 * any --error/eof/close--> CLOSED (freed, or when an answer is still
 * waiting for its commit: freed when that completes). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "log.h"

#define OUTPUT_HIGH ((size_t)256 << 10) /* stop reading requests above this */

enum e4c_state { E4C_HANDSHAKE, E4C_READY, E4C_BUSY, E4C_CLOSED };
static const char *const e4c_names[] = {"HANDSHAKE", "READY", "BUSY", "CLOSED"};

struct e4_conn {
    struct kme *k;
    struct e4_conn *prev, *next;
    net_conn *conn;
    uint64_t id;
    enum e4c_state state;
    bool counted;             /* holds one of max_connections */
    char sae[ETSI014_ID_MAX + 1];
    char name[80];
    bool in_frame;            /* a frame has begun: its deadline runs */
    struct e4_wait *wait;     /* the request's waiter, while it waits */
    bool answer_pending;      /* an answer waits for its commit */
    bool in_handle;           /* inside e4_handle: freed after it returns */
    uint8_t service;          /* request in progress, for the log */
    uint64_t t0;
};

const char *e4_conn_name(const struct e4_conn *c)
{
    return c->name;
}

static void enter(struct e4_conn *c, enum e4c_state st)
{
    qlog_debug("kme %s 004 %s: %s -> %s", c->k->cfg.kme_id, c->name, e4c_names[c->state],
               e4c_names[st]);
    c->state = st;
}

static void conn_free(struct e4_conn *c)
{
    struct kme_e4 *e = c->k->e4;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (e->conns == c)
        e->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->counted)
        e->conn_count--;
    free(c);
}

static void conn_close(struct e4_conn *c)
{
    struct kme_e4 *e = c->k->e4;
    if (c->state == E4C_CLOSED)
        return;
    if (c->state == E4C_HANDSHAKE)
        e->hs_count--;
    if (c->conn != NULL)
        net_conn_close(&c->conn);
    if (c->wait != NULL) {
        e4_wait_orphan(c->wait);
        c->wait = NULL;
    }
    enter(c, E4C_CLOSED);
    if (!c->answer_pending && !c->in_handle)
        conn_free(c);
}

void e4_conn_set_wait(struct e4_conn *c, struct e4_wait *w)
{
    if (c != NULL)
        c->wait = w;
}

/* ---- requests ------------------------------------------------------------------ */

static void process_input(struct e4_conn *c)
{
    struct kme *k = c->k;
    while (c->state == E4C_READY) {
        if (net_conn_output_pending(c->conn) > OUTPUT_HIGH)
            return; /* resumed on NET_EV_DRAINED */
        size_t have;
        const uint8_t *in = (const uint8_t *)net_conn_input(c->conn, &have);
        struct etsi004_header h;
        int rc = etsi004_frame_parse(in, have, ETSI004_MAX_REQUEST, &h);
        if (rc < 0) {
            qlog_warn("kme %s 004 %s sae=%s: frame length %u above %u: closing",
                      k->cfg.kme_id, c->name, c->sae, (unsigned)h.length,
                      (unsigned)ETSI004_MAX_REQUEST);
            conn_close(c);
            return;
        }
        if (rc == 0) {
            if (have > 0 && !c->in_frame) { /* it must be complete in time */
                c->in_frame = true;
                net_conn_set_deadline(c->conn, k->cfg.e4.handshake_timeout_ms);
            }
            return;
        }
        if (c->in_frame) {
            c->in_frame = false;
            net_conn_set_deadline(c->conn, 0);
        }
        if (h.service != ETSI004_OPEN_CONNECT_REQ && h.service != ETSI004_GET_KEY_REQ &&
            h.service != ETSI004_CLOSE_REQ) {
            qlog_warn("kme %s 004 %s sae=%s: service type 0x%02x is not a request: "
                      "closing", k->cfg.kme_id, c->name, c->sae, h.service);
            conn_close(c);
            return;
        }
        c->service = h.service;
        c->t0 = uv_now(k->loop);
        enter(c, E4C_BUSY);
        net_conn_set_timeout(c->conn, 0); /* the request may wait */
        /* an answer given at once may close (and would free) c: not here */
        c->in_handle = true;
        int ret = e4_handle(k, c, c->sae, h.service, in + ETSI004_HEADER_LEN, h.length);
        c->in_handle = false;
        if (c->state == E4C_CLOSED) {
            if (!c->answer_pending)
                conn_free(c);
            return;
        }
        net_conn_consume(c->conn, ETSI004_HEADER_LEN + h.length);
        if (ret < 0) {
            qlog_warn("kme %s 004 %s sae=%s: malformed %s payload (%u bytes): closing",
                      k->cfg.kme_id, c->name, c->sae, etsi004_service_name(h.service),
                      (unsigned)h.length);
            conn_close(c);
            return;
        }
        /* The answer (now or later) brings the connection back to READY;
         * further frames are read after its write drained. */
        return;
    }
}

struct reply {
    struct kme *k;
    struct e4_conn *c;
    uint8_t *frame;
    size_t len;
    bool secret;
    const char *what;
};

static void reply_free(struct reply *r)
{
    if (r->secret)
        etsi004_free_secret(r->frame, r->len);
    else
        free(r->frame);
    free(r);
}

static uint32_t frame_status(const struct reply *r)
{
    const uint8_t *p = r->frame + ETSI004_HEADER_LEN;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void reply_send(struct reply *r, int status)
{
    struct e4_conn *c = r->c;
    c->answer_pending = false;
    if (c->state == E4C_CLOSED) {
        if (!c->in_handle)
            conn_free(c);
        reply_free(r);
        return;
    }
    if (status != 0) {
        /* Not committed: the change it reports does not exist. */
        qlog_error("kme %s 004 %s sae=%s: %s not answered: key store failure",
                   r->k->cfg.kme_id, c->name, c->sae, r->what);
        reply_free(r);
        conn_close(c);
        return;
    }
    uint32_t st = frame_status(r);
    qlog_info("kme %s 004 %s sae=%s %s status=%u (%s) in %llu ms", r->k->cfg.kme_id,
              c->name, c->sae, r->what, (unsigned)st, etsi004_status_name(st),
              (unsigned long long)(uv_now(r->k->loop) - c->t0));
    struct kme *k = r->k;
    int wr = net_conn_write(c->conn, r->frame, r->len);
    reply_free(r);
    if (wr < 0) {
        conn_close(c);
        return;
    }
    enter(c, E4C_READY);
    net_conn_set_timeout(c->conn, k->cfg.e4.idle_timeout_ms);
    /* Pipelined frames are read on NET_EV_DRAINED: never from inside the
     * code that produced this answer. */
}

static void reply_done(void *arg, int status)
{
    reply_send(arg, status);
}

void e4_conn_answer(struct kme *k, struct e4_conn *c, uint8_t *frame, size_t len,
                    bool secret, const char *what)
{
    struct reply *r = calloc(1, sizeof(*r));
    if (r == NULL || frame == NULL || c == NULL || c->state != E4C_BUSY) {
        if (frame != NULL && secret)
            etsi004_free_secret(frame, len);
        else
            free(frame);
        free(r);
        if (c != NULL && c->state == E4C_BUSY)
            conn_close(c); /* out of memory: no answer can be given */
        return;
    }
    *r = (struct reply){.k = k, .c = c, .frame = frame, .len = len, .secret = secret,
                        .what = what};
    c->wait = NULL;
    c->answer_pending = true;
    /* Anything not yet durable (this request's change or another's it
     * observed) is committed before the answer leaves. */
    if (k->pending != NULL || k->in_commit > 0) {
        struct kme_batch *b = kme_batch(k);
        if (b != NULL && kme_batch_on_done(b, reply_done, r) == 0) {
            kme_flush(k);
            return;
        }
        c->answer_pending = false;
        reply_free(r);
        conn_close(c);
        return;
    }
    reply_send(r, 0);
}

/* ---- events and accept ------------------------------------------------------------ */

static bool sae_allowed(const struct kme *k, const char *sae)
{
    if (k->cfg.sae_count == 0)
        return true;
    for (size_t i = 0; i < k->cfg.sae_count; i++)
        if (strcmp(k->cfg.sae_ids[i], sae) == 0)
            return true;
    return false;
}

static void on_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct e4_conn *c = arg;
    struct kme *k = c->k;
    struct kme_e4 *e = k->e4;
    (void)conn;
    switch (ev) {
    case NET_EV_TLS_READY:
        e->hs_count--;
        net_conn_set_deadline(c->conn, 0);
        if (e->conn_count >= k->cfg.e4.max_connections) {
            qlog_warn("kme %s 004 %s: refused after TLS: %zu connections "
                      "(max_connections)", k->cfg.kme_id, c->name, e->conn_count);
            c->state = E4C_READY; /* hs_count already counted down */
            conn_close(c);
            return;
        }
        e->conn_count++;
        c->counted = true;
        if (net_conn_peer_subject(c->conn, k->cfg.sae_id_field, c->sae, sizeof(c->sae)) <= 0 ||
            !sae_allowed(k, c->sae)) {
            qlog_warn("kme %s 004 %s: client certificate names no SAE allowed here: "
                      "closing", k->cfg.kme_id, c->name);
            c->state = E4C_READY;
            conn_close(c);
            return;
        }
        enter(c, E4C_READY);
        net_conn_set_timeout(c->conn, k->cfg.e4.idle_timeout_ms);
        process_input(c);
        return;
    case NET_EV_READ:
    case NET_EV_DRAINED:
        if (c->state == E4C_READY)
            process_input(c);
        return;
    case NET_EV_CONNECTED:
        return;
    case NET_EV_TIMEOUT:
        if (c->state == E4C_BUSY)
            return;
        if (net_conn_error_code(c->conn) == NET_EDEADLINE)
            qlog_info("kme %s 004 %s: %s not done in time: closing", k->cfg.kme_id, c->name,
                      c->state == E4C_HANDSHAKE ? "TLS handshake" : "frame");
        conn_close(c);
        return;
    case NET_EV_ERROR:
        if (c->state == E4C_HANDSHAKE)
            qlog_info("kme %s 004 %s: TLS rejected: %s", k->cfg.kme_id, c->name,
                      net_conn_error(c->conn));
        conn_close(c);
        return;
    case NET_EV_EOF:
        conn_close(c);
        return;
    }
}

void e4_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct kme *k = arg;
    struct kme_e4 *e = k->e4;
    (void)l;
    if (k->stopping || e->hs_count >= k->cfg.e4.max_connections) {
        qlog_warn("kme %s 004: refusing a connection from %s (%s)", k->cfg.kme_id,
                  net_conn_peer_addr(conn), k->stopping ? "stopping" : "too many handshakes");
        net_conn_close(&conn);
        return;
    }
    struct e4_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        net_conn_close(&conn);
        return;
    }
    c->k = k;
    c->conn = conn;
    c->id = ++e->next_conn_id;
    snprintf(c->name, sizeof(c->name), "conn=%llu %s", (unsigned long long)c->id,
             net_conn_peer_addr(conn));
    c->state = E4C_HANDSHAKE;
    e->hs_count++;
    c->next = e->conns;
    if (e->conns != NULL)
        e->conns->prev = c;
    e->conns = c;
    net_conn_set_cb(conn, on_event, c);
    net_conn_set_timeout(conn, k->cfg.e4.handshake_timeout_ms);
    net_conn_set_deadline(conn, k->cfg.e4.handshake_timeout_ms); /* slowloris */
    net_conn_set_max_input(conn, ETSI004_HEADER_LEN + ETSI004_MAX_REQUEST);
    if (net_conn_start_tls(conn, k->tls_server, NULL) < 0)
        conn_close(c);
}

void e4_conn_close_all(struct kme *k)
{
    struct e4_conn *c = k->e4->conns;
    while (c != NULL) {
        struct e4_conn *next = c->next;
        conn_close(c);
        c = next;
    }
}
