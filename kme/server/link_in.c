/* The link's receiver (the slave side): accepts the peer's sender, appends
 * its key material to our copy of its stream, turns its reservations into
 * keys held for our slave SAEs, and acknowledges what is committed.
 *
 * States: HANDSHAKE -> HELLO -> READY; any error closes. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"
#include "log.h"

enum li_state { LI_HANDSHAKE, LI_HELLO, LI_READY };
static const char *const li_names[] = {"HANDSHAKE", "HELLO", "READY"};

struct link_in {
    struct kme *k;
    struct link_in *next;    /* k->li_all */
    net_conn *conn;
    enum li_state state;
    uint64_t acked_tail, acked_head; /* last ack sent */
    uint64_t peer_pool;      /* the sender's pool bound (bytes) */
};

static void li_enter(struct link_in *li, enum li_state st)
{
    qlog_debug("kme %s link from %s: %s -> %s", li->k->cfg.kme_id,
               li->k->cfg.peer_kme_id, li_names[li->state], li_names[st]);
    li->state = st;
}

void link_in_close(struct link_in *li, const char *why)
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

void link_in_send_ack(struct link_in *li)
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
        link_in_close(li, "write failed");
}

/* "m" messages carry key material, so they are parsed by hand straight
 * from the input buffer: jansson would leave an unwiped copy on the heap.
 * The form is fixed (we write it): {"t":"m","off":<digits>,"data":"<b64>"}
 * followed by LF. */
int link_parse_material(const char *line, size_t n, uint64_t *off_r,
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
            uint64_t limit = 2 * li->peer_pool + ((uint64_t)16 << 20);
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
    size_t ns = json_is_array(slaves) ? json_array_size(slaves) : 0;
    if (!link_get_u64(msg, "off", &off) || !link_get_u64(msg, "len", &len) || id == NULL ||
        !etsi014_uuid_valid(id, strlen(id)) || master == NULL || ns == 0 || ns > 65 ||
        len == 0 || len > (1u << 24))
        return -1;
    if (off + len <= k->in.head)
        return 0; /* already applied (resend after reconnect) */
    if (off != k->in.head || off + len > k->in.tail)
        return -1;
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
    if (h != NULL)
        h->off = off;
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
        op->off = off;
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
        if (!link_peer_is(conn, k->cfg.peer_kme_id)) {
            link_in_close(li, "the connecting KME's certificate does not name "
                         "peer_kme_id");
            return;
        }
        if (k->li != NULL && k->li != li)
            link_in_close(k->li, "replaced by a new link connection");
        k->li = li;
        net_conn_set_timeout(conn, LINK_TIMEOUT_MS); /* sender pings */
        li_enter(li, LI_HELLO);
        net_conn_set_max_input(conn, 2 * MAX_LINE);
        /* input may already be buffered */
        __attribute__((fallthrough));
    case NET_EV_READ: {
        bool changed = false, ping = false, hello = false;
        for (;;) {
            size_t n = net_conn_line_len(conn), have;
            const char *line = net_conn_input(conn, &have);
            if (n > 8 && li->state == LI_READY && memcmp(line, "{\"t\":\"m\"", 8) == 0) {
                uint64_t off;
                const char *b64;
                size_t blen;
                int ret = link_parse_material(line, n, &off, &b64, &blen) == 0
                              ? li_on_material(li, off, b64, blen) : -1;
                net_conn_consume(conn, n);
                changed = true;
                if (ret < 0) {
                    kme_flush(k);
                    link_in_close(li, "protocol error from the peer (material)");
                    return;
                }
                continue;
            }
            json_t *msg;
            int r = link_read_msg(conn, &msg);
            if (r == 0)
                break;
            if (r < 0) {
                link_in_close(li, "malformed message from the peer");
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
                    link_get_u64(msg, "pool", &li->peer_pool) &&
                    li->peer_pool <= (UINT64_C(1) << 32)) {
                    /* Report what is durable; anything newer in memory is
                     * deduplicated when the peer resends it. */
                    li->acked_tail = k->in_committed_tail;
                    li->acked_head = k->in_committed_head;
                    ret = link_send_json(conn, json_pack(
                        "{s:s, s:s, s:I, s:I}", "t", "hello", "from",
                        k->cfg.kme_id, "material", (json_int_t)li->acked_tail,
                        "applied", (json_int_t)li->acked_head));
                    li_enter(li, LI_READY);
                    hello = true;
                }
            } else if (t != NULL && li->state == LI_READY && strcmp(t, "ping") == 0) {
                ping = true;
                ret = 0;
            } else if (t != NULL && li->state == LI_READY && strcmp(t, "r") == 0) {
                ret = li_on_reservation(li, msg);
                changed = true;
            } else if (t != NULL && li->state == LI_READY) {
                /* ETSI 004 stream messages (e4_link.c); 0: unknown type */
                int r4 = kme_e4_link_msg(k, t, msg, &changed);
                ret = r4 > 0 ? 0 : -1;
            }
            json_decref(msg);
            if (ret < 0) {
                if (changed)
                    kme_flush(k);
                link_in_close(li, "protocol error from the peer");
                return;
            }
        }
        if (hello)
            kme_e4_link_up(k);
        if (changed) {
            kme_api_wake(k, false); /* a woken dec_keys commits at once */
            kme_e4_wake(k);
            kme_flush_lazy(k);
        }
        if (ping) {
            li->acked_tail = UINT64_MAX; /* force an ack out: the pong */
            link_in_send_ack(li);
        }
        return;
    }
    case NET_EV_CONNECTED:
    case NET_EV_DRAINED:
        return;
    case NET_EV_EOF:
        link_in_close(li, k->stopping ? NULL : "the peer closed the link");
        return;
    case NET_EV_TIMEOUT:
        link_in_close(li, "timeout");
        return;
    case NET_EV_ERROR:
        link_in_close(li, net_conn_error(conn));
        return;
    }
}

bool kme_link_in_ready(const struct kme *k)
{
    return k->li != NULL && k->li->state == LI_READY;
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
        link_in_close(li, "TLS start failed");
}

