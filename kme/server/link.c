/* The KME-to-KME link: one mutual-TLS connection per direction of key
 * flow. The master-side KME (whose SAEs call enc_keys) connects to the
 * peer's link listener and streams (1) the simulated QKD key material it
 * generated, once, and (2) reservations: "bytes [off, off+len) of the
 * stream are key_ID X of master M for slaves S". The peer answers with
 * cumulative acks of what it has committed. Newline-delimited JSON; the
 * protocol is specified in kme/README.md ("Link protocol").
 *
 * Sender states:   CONNECTING -> HANDSHAKE -> HELLO -> READY
 * Receiver states: HANDSHAKE -> HELLO -> READY
 * Any error closes the connection; the sender retries every second and
 * the hello exchange resynchronises both ends from their durable state. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

#define MAX_LINE (64 * 1024)
#define MATERIAL_CHUNK 3072        /* bytes per "m" message (4 KiB base64) */
#define SEND_HIGH_WATER (256 * 1024)
#define RETRY_MS 1000
#define PING_MS 10000              /* sender pings an idle link */
#define LINK_TIMEOUT_MS 30000      /* no input for this long: link dead */

enum lo_state { LO_CONNECTING, LO_HANDSHAKE, LO_HELLO, LO_READY };
static const char *const lo_names[] = {"CONNECTING", "HANDSHAKE", "HELLO",
                                       "READY"};
enum li_state { LI_HANDSHAKE, LI_HELLO, LI_READY };
static const char *const li_names[] = {"HANDSHAKE", "HELLO", "READY"};

struct link_out {
    struct kme *k;
    net_conn *conn;
    enum lo_state state;
    char *host;
    uint64_t sent_material;  /* material sent up to this offset */
    uint64_t sent_reserve;   /* reservations sent up to this offset */
    uint64_t last_write;     /* uv_now() of the last message sent */
};

struct link_in {
    struct kme *k;
    struct link_in *next;    /* k->li_all */
    net_conn *conn;
    enum li_state state;
    uint64_t acked_tail, acked_head; /* last ack sent */
    uint64_t peer_pool;      /* the sender's pool bound (bytes) */
};

static void lo_enter(struct link_out *lo, enum lo_state st)
{
    qlog_debug("kme %s link to %s: %s -> %s", lo->k->cfg.kme_id,
               lo->k->cfg.peer_kme_id, lo_names[lo->state], lo_names[st]);
    lo->state = st;
}

static void li_enter(struct link_in *li, enum li_state st)
{
    qlog_debug("kme %s link from %s: %s -> %s", li->k->cfg.kme_id,
               li->k->cfg.peer_kme_id, li_names[li->state], li_names[st]);
    li->state = st;
}

static void lo_close(struct link_out *lo, const char *why)
{
    struct kme *k = lo->k;
    /* Log each outage once, not every reconnect attempt. */
    if (why != NULL && !k->stopping && (lo->state == LO_READY || !k->link_down_logged))
        qlog_warn("kme %s: link to %s %s: %s", k->cfg.kme_id, k->cfg.peer_kme_id,
                  lo->state == LO_READY ? "lost" : "not established (retrying "
                  "every second)", why);
    if (why != NULL)
        k->link_down_logged = true;
    net_conn_close(&lo->conn);
    free(lo->host);
    free(lo);
    k->lo = NULL;
    k->link_retry_ms = uv_now(k->loop) + RETRY_MS;
}

static void li_close(struct link_in *li, const char *why)
{
    struct kme *k = li->k;
    if (why != NULL && !k->stopping)
        qlog_warn("kme %s: link from %s closed: %s", k->cfg.kme_id,
                  k->cfg.peer_kme_id, why);
    net_conn_close(&li->conn);
    for (struct link_in **pp = &k->li_all; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == li) {
            *pp = li->next;
            break;
        }
    }
    if (k->li == li)
        k->li = NULL;
    free(li);
}

static int send_json(net_conn *conn, json_t *msg)
{
    if (msg == NULL)
        return -1;
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL)
        return -1;
    int rc = net_conn_printf(conn, "%s\n", text);
    free(text);
    return rc;
}

static bool peer_is(net_conn *conn, const char *kme_id)
{
    char cn[ETSI014_ID_MAX + 1];
    return net_conn_peer_subject(conn, "CN", cn, sizeof(cn)) > 0 &&
           strcmp(cn, kme_id) == 0;
}

/* Reads the next line as a JSON object; 1 got one, 0 need more, -1 bad. */
static int read_msg(net_conn *conn, json_t **msg_r)
{
    *msg_r = NULL;
    size_t n = net_conn_line_len(conn);
    if (n == 0) {
        size_t have;
        net_conn_input(conn, &have);
        return have >= MAX_LINE ? -1 : 0;
    }
    size_t len;
    const char *data = net_conn_input(conn, &len);
    json_t *msg = json_loadb(data, n, JSON_REJECT_DUPLICATES, NULL);
    net_conn_consume(conn, n);
    if (!json_is_object(msg)) {
        json_decref(msg);
        return -1;
    }
    *msg_r = msg;
    return 1;
}

static bool get_u64(json_t *msg, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(msg, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* ==== sender (master side) ================================================= */

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

static void lo_pump(struct link_out *lo)
{
    struct kme *k = lo->k;
    if (lo->state != LO_READY ||
        net_conn_output_pending(lo->conn) > SEND_HIGH_WATER)
        return;
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
        lo_close(lo, "write failed");
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
        !get_u64(msg, "material", &material) || !get_u64(msg, "applied", &applied)) {
        lo_close(lo, "bad hello from the peer");
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
        lo_close(lo, NULL);
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
    lo_pump(lo);
}

static void lo_on_ack(struct link_out *lo, json_t *msg)
{
    struct kme *k = lo->k;
    uint64_t material, applied;
    if (!get_u64(msg, "material", &material) || !get_u64(msg, "applied", &applied) ||
        material > lo->sent_material || applied > lo->sent_reserve) {
        lo_close(lo, "bad ack from the peer");
        return;
    }
    if (material > k->out_acked)
        k->out_acked = material;
    if (applied > k->out_applied) {
        k->out_applied = applied;
        kme_outbox_drop_until(&k->outbox, applied);
    }
    if (kme_batch(k) != NULL)
        kme_flush(k);
}

static void lo_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct link_out *lo = arg;
    struct kme *k = lo->k;
    switch (ev) {
    case NET_EV_CONNECTED:
        lo_enter(lo, LO_HANDSHAKE);
        if (net_conn_start_tls(conn, k->tls_client, lo->host) < 0)
            lo_close(lo, "TLS start failed");
        return;
    case NET_EV_TLS_READY:
        if (!peer_is(conn, k->cfg.peer_kme_id)) {
            lo_close(lo, "the peer's certificate does not name peer_kme_id");
            return;
        }
        lo_enter(lo, LO_HELLO);
        net_conn_set_max_input(conn, 2 * MAX_LINE);
        if (send_json(conn, json_pack("{s:s, s:s, s:s, s:I}", "t", "hello",
                                      "from", k->cfg.kme_id, "to",
                                      k->cfg.peer_kme_id, "pool",
                                      (json_int_t)kme_cfg_pool_bytes(&k->cfg))) < 0)
            lo_close(lo, "write failed");
        return;
    case NET_EV_READ:
        for (;;) {
            json_t *msg;
            int r = read_msg(conn, &msg);
            if (r == 0)
                return;
            if (r < 0) {
                lo_close(lo, "malformed message from the peer");
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
                lo_close(lo, "unexpected message from the peer");
            json_decref(msg);
            if (k->lo != self)
                return; /* closed */
        }
    case NET_EV_DRAINED:
        lo_pump(lo);
        return;
    case NET_EV_EOF:
        lo_close(lo, "the peer closed the link");
        return;
    case NET_EV_TIMEOUT:
        lo_close(lo, "timeout");
        return;
    case NET_EV_ERROR:
        lo_close(lo, net_conn_error(conn));
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
            lo_close(lo, "write failed");
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

/* ==== receiver (slave side) ================================================ */

static void li_send_ack(struct link_in *li)
{
    struct kme *k = li->k;
    if (li->state != LI_READY ||
        (li->acked_tail == k->in_committed_tail &&
         li->acked_head == k->in_committed_head))
        return;
    li->acked_tail = k->in_committed_tail;
    li->acked_head = k->in_committed_head;
    char line[96];
    int n = snprintf(line, sizeof(line),
                     "{\"t\":\"ack\",\"material\":%" PRIu64 ",\"applied\":%" PRIu64
                     "}\n", li->acked_tail, li->acked_head);
    if (net_conn_write(li->conn, line, (size_t)n) < 0)
        li_close(li, "write failed");
}

/* "m" messages carry key material, so they are parsed by hand straight
 * from the input buffer: jansson would leave an unwiped copy on the heap.
 * The form is fixed (we write it): {"t":"m","off":<digits>,"data":"<b64>"}
 * followed by LF. */
static int parse_material(const char *line, size_t n, uint64_t *off_r,
                          const char **b64_r, size_t *blen_r)
{
    static const char pre[] = "{\"t\":\"m\",\"off\":";
    static const char mid[] = ",\"data\":\"";
    static const char end[] = "\"}\n";
    size_t i = sizeof(pre) - 1;
    if (n < i || memcmp(line, pre, i) != 0)
        return -1;
    uint64_t off = 0;
    size_t digits = 0;
    for (; i < n && line[i] >= '0' && line[i] <= '9'; i++, digits++) {
        if (digits >= 18)
            return -1;
        off = off * 10 + (uint64_t)(line[i] - '0');
    }
    if (digits == 0 || n - i < sizeof(mid) - 1 ||
        memcmp(line + i, mid, sizeof(mid) - 1) != 0)
        return -1;
    i += sizeof(mid) - 1;
    size_t start = i;
    while (i < n && line[i] != '"')
        i++;
    if (n - i != sizeof(end) - 1 || memcmp(line + i, end, sizeof(end) - 1) != 0)
        return -1;
    *off_r = off;
    *b64_r = line + start;
    *blen_r = i - start;
    return 0;
}

static int li_on_material(struct link_in *li, uint64_t off, const char *b64,
                          size_t blen)
{
    struct kme *k = li->k;
    if (blen % 4 != 0 || blen > MAX_LINE)
        return -1;
    for (size_t i = 0; i < blen; i++) {
        unsigned char c = (unsigned char)b64[i];
        if (!(isalnum(c) || c == '+' || c == '/' || (c == '=' && i + 2 >= blen)))
            return -1;
    }
    uint8_t *data = malloc(blen / 4 * 3 + 1);
    if (data == NULL)
        return -1;
    int n = EVP_DecodeBlock(data, (const unsigned char *)b64, (int)blen);
    if (n >= 0 && blen > 0 && b64[blen - 1] == '=')
        n -= blen > 1 && b64[blen - 2] == '=' ? 2 : 1;
    int ret = -1;
    if (n >= 0 && off <= k->in.tail) {
        /* Skip what we already have (a resend after reconnect). */
        size_t skip = (size_t)(k->in.tail - off);
        ret = 0;
        if (skip < (size_t)n) {
            size_t len = (size_t)n - skip;
            uint64_t limit = 2 * li->peer_pool + 16 * 1024 * 1024;
            struct kme_batch *b = kme_batch(k);
            struct kme_op *op = b != NULL ? kme_batch_op(b, KME_OP_IN_MATERIAL) : NULL;
            uint8_t *copy = malloc(len);
            if (kme_stream_len(&k->in) + len > limit || op == NULL || copy == NULL) {
                if (op != NULL)
                    b->op_count--;
                free(copy);
                ret = -1;
            } else {
                memcpy(copy, data + skip, len);
                op->off = k->in.tail;
                op->data = copy;
                op->len = len;
                ret = kme_stream_append(&k->in, k->in.tail, data + skip, len);
            }
        }
    }
    OPENSSL_cleanse(data, blen / 4 * 3 + 1);
    free(data);
    return ret;
}

static int li_on_reservation(struct link_in *li, json_t *msg)
{
    struct kme *k = li->k;
    uint64_t off, len;
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *master = json_string_value(json_object_get(msg, "master"));
    json_t *slaves = json_object_get(msg, "slaves");
    if (!get_u64(msg, "off", &off) || !get_u64(msg, "len", &len) || id == NULL ||
        !etsi014_uuid_valid(id, strlen(id)) || master == NULL ||
        !json_is_array(slaves) || json_array_size(slaves) == 0 ||
        json_array_size(slaves) > 65 || len == 0 || len > (1u << 24))
        return -1;
    if (off + len <= k->in.head)
        return 0; /* already applied (resend after reconnect) */
    if (off != k->in.head || off + len > k->in.tail)
        return -1;
    size_t ns = json_array_size(slaves);
    const char *names[65];
    for (size_t i = 0; i < ns; i++) {
        names[i] = json_string_value(json_array_get(slaves, i));
        if (names[i] == NULL)
            return -1;
    }
    if (kme_held_find(&k->held, id) != NULL)
        return -1;
    uint64_t expires = k->cfg.key_expiry_ms > 0 ? kme_now_ms() + k->cfg.key_expiry_ms : 0;
    const uint8_t *bytes = kme_stream_at(&k->in, off, (size_t)len);
    struct kme_held *h = kme_held_new(id, master, names, ns, bytes, (size_t)len,
                                      expires);
    struct kme_batch *b = kme_batch(k);
    char **strs = calloc(3 * ns, sizeof(char *));
    bool ok = h != NULL && b != NULL && strs != NULL &&
              kme_batch_reserve(b, ns) == 0;
    for (size_t i = 0; ok && i < ns; i++) {
        strs[3 * i] = strdup(names[i]);
        strs[3 * i + 1] = strdup(master);
        strs[3 * i + 2] = malloc((size_t)len);
        ok = strs[3 * i] && strs[3 * i + 1] && strs[3 * i + 2];
    }
    if (!ok) {
        for (size_t i = 0; strs != NULL && i < 3 * ns; i++)
            free(strs[i]);
        free(strs);
        if (h != NULL)
            kme_held_free(h);
        return -1;
    }
    for (size_t i = 0; i < ns; i++) {
        struct kme_op *op = kme_batch_op(b, KME_OP_HELD_ADD);
        memcpy(op->key_id, h->key_id, sizeof(op->key_id));
        op->slave = strs[3 * i];
        op->master = strs[3 * i + 1];
        op->data = (uint8_t *)strs[3 * i + 2];
        memcpy(op->data, bytes, (size_t)len);
        op->len = (size_t)len;
        op->expires_ms = expires;
    }
    free(strs);
    kme_held_insert(&k->held, h);
    kme_stream_take(&k->in, (size_t)len, NULL);
    return 0;
}

static void li_on_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct link_in *li = arg;
    struct kme *k = li->k;
    switch (ev) {
    case NET_EV_TLS_READY:
        if (!peer_is(conn, k->cfg.peer_kme_id)) {
            li_close(li, "the connecting KME's certificate does not name "
                         "peer_kme_id");
            return;
        }
        if (k->li != NULL && k->li != li)
            li_close(k->li, "replaced by a new link connection");
        k->li = li;
        net_conn_set_timeout(conn, LINK_TIMEOUT_MS); /* sender pings */
        li_enter(li, LI_HELLO);
        net_conn_set_max_input(conn, 2 * MAX_LINE);
        /* input may already be buffered */
        __attribute__((fallthrough));
    case NET_EV_READ: {
        bool changed = false, ping = false;
        for (;;) {
            size_t n = net_conn_line_len(conn), have;
            const char *line = net_conn_input(conn, &have);
            if (n > 8 && li->state == LI_READY && memcmp(line, "{\"t\":\"m\"", 8) == 0) {
                uint64_t off;
                const char *b64;
                size_t blen;
                int ret = parse_material(line, n, &off, &b64, &blen) == 0
                              ? li_on_material(li, off, b64, blen) : -1;
                net_conn_consume(conn, n);
                changed = true;
                if (ret < 0) {
                    kme_flush(k);
                    li_close(li, "protocol error from the peer (material)");
                    return;
                }
                continue;
            }
            json_t *msg;
            int r = read_msg(conn, &msg);
            if (r == 0)
                break;
            if (r < 0) {
                li_close(li, "malformed message from the peer");
                return;
            }
            const char *t = json_string_value(json_object_get(msg, "t"));
            int ret = -1;
            if (t != NULL && li->state == LI_HELLO && strcmp(t, "hello") == 0) {
                const char *from = json_string_value(json_object_get(msg, "from"));
                const char *to = json_string_value(json_object_get(msg, "to"));
                if (from != NULL && to != NULL &&
                    strcmp(from, k->cfg.peer_kme_id) == 0 &&
                    strcmp(to, k->cfg.kme_id) == 0 &&
                    get_u64(msg, "pool", &li->peer_pool) &&
                    li->peer_pool <= (UINT64_C(1) << 32)) {
                    /* Report what is durable; anything newer in memory is
                     * deduplicated when the peer resends it. */
                    li->acked_tail = k->in_committed_tail;
                    li->acked_head = k->in_committed_head;
                    ret = send_json(conn, json_pack(
                        "{s:s, s:s, s:I, s:I}", "t", "hello", "from",
                        k->cfg.kme_id, "material", (json_int_t)li->acked_tail,
                        "applied", (json_int_t)li->acked_head));
                    li_enter(li, LI_READY);
                }
            } else if (t != NULL && li->state == LI_READY && strcmp(t, "ping") == 0) {
                ping = true;
                ret = 0;
            } else if (t != NULL && li->state == LI_READY && strcmp(t, "r") == 0) {
                ret = li_on_reservation(li, msg);
                changed = true;
            }
            json_decref(msg);
            if (ret < 0) {
                if (changed)
                    kme_flush(k);
                li_close(li, "protocol error from the peer");
                return;
            }
        }
        if (changed) {
            kme_flush(k);
            kme_api_wake(k, false);
        }
        if (ping) {
            li->acked_tail = UINT64_MAX; /* force an ack out: the pong */
            li_send_ack(li);
        }
        return;
    }
    case NET_EV_CONNECTED:
    case NET_EV_DRAINED:
        return;
    case NET_EV_EOF:
        li_close(li, k->stopping ? NULL : "the peer closed the link");
        return;
    case NET_EV_TIMEOUT:
        li_close(li, "timeout");
        return;
    case NET_EV_ERROR:
        li_close(li, net_conn_error(conn));
        return;
    }
}

void kme_link_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct kme *k = arg;
    (void)l;
    struct link_in *li = k->stopping ? NULL : calloc(1, sizeof(*li));
    if (li == NULL) {
        net_conn_close(&conn);
        return;
    }
    li->k = k;
    li->conn = conn;
    li->state = LI_HANDSHAKE;
    li->next = k->li_all;
    k->li_all = li;
    net_conn_set_cb(conn, li_on_event, li);
    net_conn_set_timeout(conn, 30000); /* handshake and hello */
    if (net_conn_start_tls(conn, k->tls_server, NULL) < 0)
        li_close(li, "TLS start failed");
}

void kme_link_kick(struct kme *k)
{
    if (k->lo != NULL)
        lo_pump(k->lo);
    if (k->li != NULL)
        li_send_ack(k->li);
}

void kme_link_close_all(struct kme *k)
{
    if (k->lo != NULL)
        lo_close(k->lo, NULL);
    while (k->li_all != NULL)
        li_close(k->li_all, NULL);
}
