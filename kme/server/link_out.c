/* The link's sender (the master side of one direction of key flow): connects
 * to the peer's link listener, streams the generated key material once and
 * the committed reservations, follows the peer's cumulative acks, pings an
 * idle link, reconnects every second while down.
 *
 * States: CONNECTING -> HANDSHAKE -> HELLO -> READY; any error closes. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"
#include "log.h"

enum lo_state { LO_CONNECTING, LO_HANDSHAKE, LO_HELLO, LO_READY };
static const char *const lo_names[] = {"CONNECTING", "HANDSHAKE", "HELLO",
                                       "READY"};
struct link_out {
    struct kme *k;
    net_conn *conn;
    enum lo_state state;
    char *host;
    uint64_t sent_material;  /* material sent up to this offset */
    uint64_t sent_reserve;   /* reservations sent up to this offset */
    uint64_t last_write;     /* uv_now() of the last message sent */
};


static void lo_enter(struct link_out *lo, enum lo_state st)
{
    qlog_debug("kme %s link to %s: %s -> %s", lo->k->cfg.kme_id,
               lo->k->cfg.peer_kme_id, lo_names[lo->state], lo_names[st]);
    lo->state = st;
}

void link_out_close(struct link_out *lo, const char *why)
{
    struct kme *k = lo->k;
    /* Log each outage once, not every reconnect attempt. */
    if (why != NULL && !k->stopping && (lo->state == LO_READY || !k->link_down_logged))
        qlog_warn("kme %s: link to %s %s: %s", k->cfg.kme_id, k->cfg.peer_kme_id,
                  lo->state == LO_READY ? "lost" : "not established (retrying "
                  "every second)", why);
    if (why != NULL)
        k->link_down_logged = true;
    kme_e4_link_down(k);
    net_conn_close(&lo->conn);
    free(lo->host);
    free(lo);
    k->lo = NULL;
    k->link_retry_ms = uv_now(k->loop) + RETRY_MS;
}

static size_t outbox_find(struct kme_outbox *q, uint64_t off)
{
    size_t lo = 0, hi = q->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kme_outbox_at(q, mid)->off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Output of one pump, written with one net_conn_write (it may hold key
 * material: wiped after use). */
struct obuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static char *ob_room(struct obuf *b, size_t more)
{
    if (b->failed)
        return NULL;
    if (b->len + more > b->cap) {
        size_t cap = (b->len + more) * 2;
        char *n = malloc(cap);
        if (n == NULL) {
            b->failed = true;
            return NULL;
        }
        if (b->p != NULL) {
            memcpy(n, b->p, b->len);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
        b->p = n;
        b->cap = cap;
    }
    return b->p + b->len;
}

static void ob_free(struct obuf *b)
{
    if (b->p != NULL) {
        OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    memset(b, 0, sizeof(*b));
}

/* Appends s as a JSON string literal. */
static void ob_json_string(struct obuf *b, const char *s)
{
    char *o = ob_room(b, strlen(s) * 6 + 2);
    if (o == NULL)
        return;
    size_t n = 0;
    o[n++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)sprintf(o + n, "\\u%04x", c);
        } else {
            o[n++] = (char)c;
        }
    }
    o[n++] = '"';
    b->len += n;
}

static void ob_add(struct obuf *b, const char *s, size_t len)
{
    char *o = ob_room(b, len);
    if (o == NULL)
        return;
    memcpy(o, s, len);
    b->len += len;
}

static void add_material(struct obuf *b, const uint8_t *data, uint64_t off,
                         size_t len)
{
    char *o = ob_room(b, 64 + (len + 2) / 3 * 4);
    if (o == NULL)
        return;
    int n = sprintf(o, "{\"t\":\"m\",\"off\":%" PRIu64 ",\"data\":\"", off);
    n += EVP_EncodeBlock((unsigned char *)o + n, data, (int)len);
    memcpy(o + n, "\"}\n", 3);
    b->len += (size_t)n + 3;
}

static void add_reservation(struct obuf *b, const struct kme_reservation *r)
{
    if (r->e4) { /* an ETSI 004 chunk: its own line (e4_link.c) */
        char line[256];
        size_t n = kme_e4_reservation_line(r, line, sizeof(line));
        if (n == 0)
            b->failed = true;
        else
            ob_add(b, line, n);
        return;
    }
    char head[160];
    int n = snprintf(head, sizeof(head),
                     "{\"t\":\"r\",\"off\":%" PRIu64 ",\"len\":%u,\"id\":\"%s\","
                     "\"master\":", r->off, (unsigned)r->len, r->key_id);
    ob_add(b, head, (size_t)n);
    ob_json_string(b, r->master);
    ob_add(b, ",\"slaves\":", 10);
    ob_add(b, r->slaves_json, strlen(r->slaves_json)); /* JSON we wrote */
    ob_add(b, "}\n", 2);
}

void link_out_pump(struct link_out *lo)
{
    struct kme *k = lo->k;
    if (lo->state != LO_READY ||
        net_conn_output_pending(lo->conn) > SEND_HIGH_WATER)
        return;
    kme_e4_link_pump(k, lo->conn); /* 004 stream messages first */
    struct obuf b = {0};
    /* Reservations first: they are what slave SAEs wait for. Only what is
     * committed here may leave (else a crash could re-draw those bytes). */
    struct kme_outbox *q = &k->outbox;
    for (size_t i = outbox_find(q, lo->sent_reserve);
         i < q->count && b.len < SEND_HIGH_WATER; i++) {
        struct kme_reservation *r = kme_outbox_at(q, i);
        if (r->off + r->len > k->out_head_committed)
            break;
        add_reservation(&b, r);
        lo->sent_reserve = r->off + r->len;
    }
    while (lo->sent_material < k->out_committed && b.len < SEND_HIGH_WATER) {
        uint64_t off = lo->sent_material;
        if (off < k->out.head)
            off = k->out.head; /* cannot happen: drawn bytes were acked */
        uint64_t left = k->out_committed - off;
        size_t n = left > MATERIAL_CHUNK ? MATERIAL_CHUNK : (size_t)left;
        const uint8_t *data = kme_stream_at(&k->out, off, n);
        if (data == NULL) {
            b.failed = true;
            break;
        }
        add_material(&b, data, off, n);
        lo->sent_material = off + n;
    }
    if (b.len > 0)
        lo->last_write = uv_now(k->loop);
    if (b.failed || (b.len > 0 && net_conn_write(lo->conn, b.p, b.len) < 0)) {
        ob_free(&b);
        link_out_close(lo, "write failed");
        return;
    }
    ob_free(&b);
}

static void lo_on_hello(struct link_out *lo, json_t *msg)
{
    struct kme *k = lo->k;
    uint64_t material, applied;
    const char *from = json_string_value(json_object_get(msg, "from"));
    if (from == NULL || strcmp(from, k->cfg.peer_kme_id) != 0 ||
        !link_get_u64(msg, "material", &material) || !link_get_u64(msg, "applied", &applied)) {
        link_out_close(lo, "bad hello from the peer");
        return;
    }
    if (material < k->out_acked || applied < k->out_applied ||
        material > k->out_committed || applied > k->out_head_committed ||
        applied > material) {
        qlog_error("kme %s: link to %s: the peer's state (material %" PRIu64
                   ", applied %" PRIu64 ") does not match ours (acked %" PRIu64
                   ", applied %" PRIu64 ", generated %" PRIu64 ", drawn %" PRIu64
                   "): was a database replaced? Not linking.",
                   k->cfg.kme_id, k->cfg.peer_kme_id, material, applied,
                   k->out_acked, k->out_applied, k->out_committed,
                   k->out_head_committed);
        link_out_close(lo, NULL);
        k->link_retry_ms = uv_now(k->loop) + 30 * RETRY_MS;
        return;
    }
    k->out_acked = material;
    k->out_applied = applied;
    kme_outbox_drop_until(&k->outbox, applied);
    lo->sent_material = material;
    lo->sent_reserve = applied;
    k->link_down_logged = false;
    qlog_info("kme %s: link to %s up (peer has %" PRIu64 " bytes of material, "
              "%zu reservations to resend)", k->cfg.kme_id, k->cfg.peer_kme_id,
              material, k->outbox.count);
    if (kme_batch(k) != NULL)
        kme_flush(k);
    lo_enter(lo, LO_READY);
    kme_e4_link_up(k);
    if (k->lo == lo)
        link_out_pump(lo);
}

bool kme_link_out_ready(const struct kme *k)
{
    return k->lo != NULL && k->lo->state == LO_READY;
}

static void lo_on_ack(struct link_out *lo, json_t *msg)
{
    struct kme *k = lo->k;
    uint64_t material, applied;
    if (!link_get_u64(msg, "material", &material) || !link_get_u64(msg, "applied", &applied) ||
        material > lo->sent_material || applied > lo->sent_reserve) {
        link_out_close(lo, "bad ack from the peer");
        return;
    }
    if (material > k->out_acked)
        k->out_acked = material;
    if (applied > k->out_applied) {
        k->out_applied = applied;
        kme_outbox_drop_until(&k->outbox, applied);
    }
    if (kme_batch(k) != NULL)
        kme_flush_lazy(k);
}

static void lo_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct link_out *lo = arg;
    struct kme *k = lo->k;
    switch (ev) {
    case NET_EV_CONNECTED:
        lo_enter(lo, LO_HANDSHAKE);
        if (net_conn_start_tls(conn, k->tls_client, lo->host) < 0)
            link_out_close(lo, "TLS start failed");
        return;
    case NET_EV_TLS_READY:
        if (!link_peer_is(conn, k->cfg.peer_kme_id)) {
            link_out_close(lo, "the peer's certificate does not name peer_kme_id");
            return;
        }
        lo_enter(lo, LO_HELLO);
        net_conn_set_max_input(conn, 2 * MAX_LINE);
        if (link_send_json(conn, json_pack("{s:s, s:s, s:s, s:I}", "t", "hello",
                                      "from", k->cfg.kme_id, "to",
                                      k->cfg.peer_kme_id, "pool",
                                      (json_int_t)kme_cfg_pool_bytes(&k->cfg))) < 0)
            link_out_close(lo, "write failed");
        return;
    case NET_EV_READ:
        for (;;) {
            json_t *msg;
            int r = link_read_msg(conn, &msg);
            if (r == 0)
                return;
            if (r < 0) {
                link_out_close(lo, "malformed message from the peer");
                return;
            }
            const char *t = json_string_value(json_object_get(msg, "t"));
            bool hello = t != NULL && strcmp(t, "hello") == 0;
            bool ack = t != NULL && strcmp(t, "ack") == 0;
            struct link_out *self = lo;
            if (hello && lo->state == LO_HELLO)
                lo_on_hello(lo, msg);
            else if (ack && lo->state == LO_READY)
                lo_on_ack(lo, msg);
            else
                link_out_close(lo, "unexpected message from the peer");
            json_decref(msg);
            if (k->lo != self)
                return; /* closed */
        }
    case NET_EV_DRAINED:
        link_out_pump(lo);
        return;
    case NET_EV_EOF:
        link_out_close(lo, "the peer closed the link");
        return;
    case NET_EV_TIMEOUT:
        link_out_close(lo, "timeout");
        return;
    case NET_EV_ERROR:
        link_out_close(lo, net_conn_error(conn));
        return;
    }
}

void kme_link_tick(struct kme *k)
{
    struct link_out *lo = k->lo;
    if (lo != NULL && lo->state == LO_READY &&
        uv_now(k->loop) - lo->last_write >= PING_MS) {
        /* Keeps an idle link provably alive: the receiver answers with an
         * ack, which re-arms our input timeout. */
        lo->last_write = uv_now(k->loop);
        if (net_conn_write(lo->conn, "{\"t\":\"ping\"}\n", 13) < 0)
            link_out_close(lo, "write failed");
    }
    if (k->lo != NULL || k->stopping || k->failed)
        return;
    if (uv_now(k->loop) < k->link_retry_ms)
        return;
    const char *host = k->cfg.peer_host;
    uint16_t port = k->cfg.peer_port;
    if (host == NULL)
        kme_server_peer_addr(k->server, k->cfg.peer_kme_id, &host, &port);
    if (host == NULL || port == 0)
        return;
    lo = calloc(1, sizeof(*lo));
    if (lo == NULL)
        return;
    lo->k = k;
    lo->host = strdup(host);
    lo->conn = net_connect(k->loop, host, port, lo_on_event, lo);
    if (lo->conn == NULL || lo->host == NULL) {
        net_conn_close(&lo->conn);
        free(lo->host);
        free(lo);
        return;
    }
    lo->state = LO_CONNECTING;
    lo->last_write = uv_now(k->loop);
    net_conn_set_timeout(lo->conn, LINK_TIMEOUT_MS);
    k->lo = lo;
}

