/* 004 stream messages between the two KMEs, carried by the existing link
 * (one JSON object per line, each KME's messages on its own sending
 * connection). kme/ETSI004.md, "Between the KMEs", specifies them.
 *
 * The owner (registers streams, allocates chunks) sends:
 *   c   a chunk reservation, in the ordered reservation flow (outbox):
 *       {"t":"c","off":N,"len":L,"ksid":K,"idx":I,"at":MS,"exp":MS}
 *   s   a stream's committed state: {"t":"s","ksid":K,"qos":[..],"src":..,
 *       "dst":..,"owner":E,"peer":E,"owner_sae":..,"peer_sae":..,"next":N}
 *       or {"t":"s","ksid":K,"gone":true}
 *   sa, se   around a full sync of every stream (after the link comes up)
 *   or  the answer to an open: {"t":"or","req":R,"ksid":K,"status":S,
 *       "qos":[..]}
 *   a   the answer to a chunk request: {"t":"a","req":R,"ksid":K,"idx":I,
 *       "status":S}
 * The other KME sends:
 *   o   open its end: {"t":"o","req":R,"ksid":K,"sae":..,"qos":[..],
 *       "src":..,"dst":..,"assign":B}
 *   x   its end closed: {"t":"x","ksid":K,"sae":..}
 *   n   a chunk for its application: {"t":"n","req":R,"ksid":K,"idx":I}
 *       (idx -1: the next index never handed out)
 * Requests are resent whenever the link comes up (both directions), so a
 * lost answer is answered again; the owner remembers its answers to
 * "next" requests so that a resent one allocates nothing new. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e4_internal.h"
#include "link_internal.h"
#include "log.h"

#define CTL_MAX_BYTES ((size_t)4 << 20) /* queued lines beyond: dropped */
#define PUMP_HIGH_WATER ((size_t)256 << 10)

struct e4_ctl {
    struct e4_ctl *next;
    size_t len;
    char line[];
};

void e4_ctl_clear(struct kme_e4 *e)
{
    while (e->ctl_first != NULL) {
        struct e4_ctl *c = e->ctl_first;
        e->ctl_first = c->next;
        free(c);
    }
    e->ctl_tail = &e->ctl_first;
    e->ctl_bytes = 0;
}

void e4_ctl_send(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    char *text = msg != NULL ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    /* Nothing is lost by dropping: whatever is not answered is asked
     * again when the link comes up, and the owner resyncs every stream. */
    if (text == NULL || !kme_link_out_ready(k) || e->ctl_bytes > CTL_MAX_BYTES) {
        free(text);
        return;
    }
    size_t n = strlen(text);
    struct e4_ctl *c = malloc(sizeof(*c) + n + 2);
    if (c != NULL) {
        memcpy(c->line, text, n);
        c->line[n] = '\n';
        c->line[n + 1] = '\0';
        c->len = n + 1;
        c->next = NULL;
        *e->ctl_tail = c;
        e->ctl_tail = &c->next;
        e->ctl_bytes += c->len;
    }
    free(text);
    kme_link_kick(k);
}

size_t kme_e4_reservation_line(const struct kme_reservation *r, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     "{\"t\":\"c\",\"off\":%" PRIu64 ",\"len\":%u,\"ksid\":\"%s\","
                     "\"idx\":%u,\"at\":%" PRIu64 ",\"exp\":%" PRIu64 "}\n",
                     r->off, (unsigned)r->len, r->key_id, (unsigned)r->e4_index,
                     r->e4_at, r->e4_exp);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- what each side sends ------------------------------------------------------ */

static json_t *state_msg(const struct e4_stream *s)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:i, s:i, s:s?, s:s?, s:I}", "t", "s",
                     "ksid", s->text, "qos", e4_qos_to_json(&s->qos), "src",
                     s->src ? s->src : "", "dst", s->dst ? s->dst : "", "owner",
                     (int)s->sent_end[E4_HERE], "peer", (int)s->sent_end[E4_THERE],
                     "owner_sae", s->sae[E4_HERE], "peer_sae", s->sae[E4_THERE], "next",
                     (json_int_t)s->sent_next);
}

void e4_ask_owner(struct kme *k, struct e4_wait *w)
{
    struct kme_e4 *e = k->e4;
    if (!kme_link_out_ready(k))
        return; /* asked when the link is up */
    if (w->req == 0)
        w->req = ++e->next_req;
    char text[ETSI004_KSID_TEXT_LEN + 1];
    etsi004_ksid_to_text(w->ksid, text);
    json_t *m;
    if (w->service == ETSI004_OPEN_CONNECT_REQ)
        m = json_pack("{s:s, s:I, s:s, s:s, s:o, s:s, s:s, s:b}", "t", "o", "req",
                      (json_int_t)w->req, "ksid", text, "sae", w->sae, "qos",
                      e4_qos_to_json(&w->qos), "src", w->src, "dst", w->dst, "assign",
                      w->assigned);
    else
        m = json_pack("{s:s, s:I, s:s, s:I}", "t", "n", "req", (json_int_t)w->req, "ksid",
                      text, "idx",
                      w->index == ETSI004_INDEX_NEXT ? (json_int_t)-1
                                                     : (json_int_t)w->index);
    w->asked = m != NULL;
    e4_ctl_send(k, m);
}

void kme_e4_link_pump(struct kme *k, net_conn *conn)
{
    struct kme_e4 *e = k->e4;
    if (e == NULL)
        return;
    while (e->ctl_first != NULL && net_conn_output_pending(conn) < PUMP_HIGH_WATER) {
        struct e4_ctl *c = e->ctl_first;
        if (net_conn_write(conn, c->line, c->len) < 0)
            return;
        e->ctl_first = c->next;
        if (e->ctl_first == NULL)
            e->ctl_tail = &e->ctl_first;
        e->ctl_bytes -= c->len;
        free(c);
    }
    if (e->owner && e->sync_pending) {
        e->sync_pending = false;
        e->sync_open = true;
        if (net_conn_write(conn, "{\"t\":\"sa\"}\n", 11) < 0)
            return;
    }
    while (e->dirty_first != NULL && net_conn_output_pending(conn) < PUMP_HIGH_WATER) {
        struct e4_stream *s = e->dirty_first;
        e->dirty_first = s->dirty_next;
        if (e->dirty_first == NULL)
            e->dirty_tail = &e->dirty_first;
        s->dirty = false;
        json_t *m = NULL;
        if (e->owner)
            m = state_msg(s);
        else if (s->sent_end[E4_HERE] == E4_END_CLOSED &&
                 s->owner_view_here != E4_END_CLOSED && s->sae[E4_HERE] != NULL)
            m = json_pack("{s:s, s:s, s:s}", "t", "x", "ksid", s->text, "sae",
                          s->sae[E4_HERE]);
        if (m != NULL && link_send_json(conn, m) < 0)
            return;
    }
    if (e->owner && e->sync_open && e->dirty_first == NULL) {
        e->sync_open = false;
        net_conn_write(conn, "{\"t\":\"se\"}\n", 11);
    }
}

void kme_e4_link_up(struct kme *k)
{
    struct kme_e4 *e = k->e4;
    if (e == NULL)
        return;
    if (e->owner) {
        e->sync_pending = true;
        for (size_t i = 0; i < e->bucket_count; i++)
            for (struct e4_stream *s = e->buckets[i]; s != NULL; s = s->next)
                e4_dirty_push(e, s);
    } else {
        for (size_t i = 0; i < e->bucket_count; i++)
            for (struct e4_stream *s = e->buckets[i]; s != NULL; s = s->next)
                if (s->sent_end[E4_HERE] == E4_END_CLOSED)
                    e4_dirty_push(e, s);
        /* Every request still waiting for the owner is asked again. */
        for (struct e4_wait *w = e->waits; w != NULL; w = w->next) {
            if (w->conn != NULL && w->asked && !w->answered) {
                w->asked = false;
                e4_ask_owner(k, w);
            }
        }
    }
    kme_link_kick(k);
    e4_wake(k, false);
}

void kme_e4_link_down(struct kme *k)
{
    if (k->e4 != NULL) {
        e4_ctl_clear(k->e4);
        k->e4->sync_open = false;
    }
}

/* ---- helpers for incoming messages ---------------------------------------------- */

static bool get_ksid(json_t *msg, uint8_t ksid[ETSI004_KSID_LEN])
{
    const char *t = json_string_value(json_object_get(msg, "ksid"));
    return t != NULL && etsi004_ksid_from_text(t, ksid) == 0;
}

static bool get_u32(json_t *msg, const char *name, uint32_t *out)
{
    uint64_t v;
    if (!link_get_u64(msg, name, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static const char *get_id(json_t *msg, const char *name)
{
    const char *s = json_string_value(json_object_get(msg, name));
    return s != NULL && s[0] != '\0' && strlen(s) <= ETSI014_ID_MAX ? s : NULL;
}

static int set_str(char **dst, const char *src)
{
    if (src == NULL)
        return 0;
    char *n = strdup(src);
    if (n == NULL)
        return -1;
    free(*dst);
    *dst = n;
    return 0;
}

static struct e4_wait *find_wait(struct kme_e4 *e, uint64_t req)
{
    for (struct e4_wait *w = e->waits; w != NULL; w = w->next)
        if (w->req == req && w->conn != NULL)
            return w;
    return NULL;
}

/* An answer queued after the commit of the current batch (the owner
 * answers only what is durable). */
struct deferred {
    struct kme *k;
    json_t *msg;
};

static void deferred_done(void *arg, int status)
{
    struct deferred *d = arg;
    if (status == 0)
        e4_ctl_send(d->k, d->msg);
    else
        json_decref(d->msg);
    free(d);
}

static void send_after_commit(struct kme *k, json_t *msg)
{
    struct deferred *d = calloc(1, sizeof(*d));
    struct kme_batch *b = kme_batch(k);
    if (msg == NULL || d == NULL || b == NULL || kme_batch_on_done(b, deferred_done, d) < 0) {
        json_decref(msg);
        free(d);
        return;
    }
    d->k = k;
    d->msg = msg;
}

/* ---- the owner: requests from the other KME --------------------------------------- */

static int on_open(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    uint8_t ksid[ETSI004_KSID_LEN];
    uint64_t req;
    const char *sae = get_id(msg, "sae");
    const char *src = json_string_value(json_object_get(msg, "src"));
    const char *dst = json_string_value(json_object_get(msg, "dst"));
    struct etsi004_qos asked; /* as the application asked: zeros allowed */
    if (!get_ksid(msg, ksid) || !link_get_u64(msg, "req", &req) || sae == NULL ||
        src == NULL || dst == NULL || strlen(src) > ETSI004_URI_MAX ||
        strlen(dst) > ETSI004_URI_MAX ||
        e4_qos_from_json(json_object_get(msg, "qos"), &asked, true) < 0)
        return -1;
    bool assign = json_is_true(json_object_get(msg, "assign"));

    uint32_t status;
    struct etsi004_qos q = asked;
    struct e4_stream *s = e4_stream_find(e, ksid);
    if (s == NULL) {
        status = e4_qos_negotiate(&k->cfg.e4, k->cfg.rate_bps, &asked, &q);
        if (status == ETSI004_SUCCESS && e->count >= k->cfg.e4.max_streams)
            status = ETSI004_NO_QKD_CONNECTION;
        if (status == ETSI004_SUCCESS) {
            s = e4_stream_add(e, ksid);
            if (s == NULL)
                return 0; /* out of memory: asked again later */
            s->qos = q;
            s->registered = true;
            set_str(&s->src, src);
            set_str(&s->dst, dst);
            s->end[E4_THERE] = E4_END_OPEN;
            set_str(&s->sae[E4_THERE], sae);
            s->last_ms = e4_now();
            e4_stream_save(k, s);
            e4_stream_changed(k, s);
            status = ETSI004_PEER_NOT_CONNECTED;
            qlog_info("kme %s: 004 stream %s registered by %s at %s", k->cfg.kme_id,
                      s->text, sae, k->cfg.peer_kme_id);
        }
    } else if (!assign && s->end[E4_THERE] == E4_END_OPEN && s->sae[E4_THERE] != NULL &&
               strcmp(s->sae[E4_THERE], sae) == 0) {
        status = s->end[E4_HERE] == E4_END_OPEN ? ETSI004_SUCCESS
                                                : ETSI004_PEER_NOT_CONNECTED;
    } else if (!assign && s->end[E4_THERE] == E4_END_NONE) {
        s->end[E4_THERE] = E4_END_OPEN;
        set_str(&s->sae[E4_THERE], sae);
        s->last_ms = e4_now();
        e4_stream_save(k, s);
        e4_stream_changed(k, s);
        status = s->end[E4_HERE] == E4_END_OPEN ? ETSI004_SUCCESS
                                                : ETSI004_PEER_NOT_CONNECTED;
    } else {
        status = ETSI004_KSID_IN_USE;
    }
    if (s != NULL && status != ETSI004_QOS_NOT_MET)
        q = s->qos;
    send_after_commit(k, json_pack("{s:s, s:I, s:s, s:i, s:o}", "t", "or", "req",
                                   (json_int_t)req, "ksid",
                                   json_string_value(json_object_get(msg, "ksid")),
                                   "status", (int)status, "qos", e4_qos_to_json(&q)));
    return 0;
}

static int on_close(struct kme *k, json_t *msg)
{
    uint8_t ksid[ETSI004_KSID_LEN];
    const char *sae = get_id(msg, "sae");
    if (!get_ksid(msg, ksid) || sae == NULL)
        return -1;
    struct e4_stream *s = e4_stream_find(k->e4, ksid);
    if (s == NULL) {
        send_after_commit(k, json_pack("{s:s, s:s, s:b}", "t", "s", "ksid",
                                       json_string_value(json_object_get(msg, "ksid")),
                                       "gone", 1));
        return 0;
    }
    if (s->end[E4_THERE] == E4_END_OPEN && s->sae[E4_THERE] != NULL &&
        strcmp(s->sae[E4_THERE], sae) == 0) {
        s->end[E4_THERE] = E4_END_CLOSED;
        s->last_ms = e4_now();
        e4_stream_save(k, s);
        qlog_info("kme %s: 004 stream %s closed by %s at %s", k->cfg.kme_id, s->text, sae,
                  k->cfg.peer_kme_id);
    }
    e4_stream_changed(k, s); /* the peer hears the state, whatever it was */
    return 0;
}

/* Remembered answers to "next" requests: a resent request gets the index
 * it was given, not a new one. */
static bool recent_find(struct kme_e4 *e, uint64_t req, const uint8_t *ksid, uint32_t *idx)
{
    for (size_t i = 0; i < E4_RECENT; i++) {
        if (e->recent[i].req == req &&
            memcmp(e->recent[i].ksid, ksid, ETSI004_KSID_LEN) == 0) {
            *idx = e->recent[i].index;
            return true;
        }
    }
    return false;
}

static int on_need(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    uint8_t ksid[ETSI004_KSID_LEN];
    uint64_t req;
    json_t *jidx = json_object_get(msg, "idx");
    if (!get_ksid(msg, ksid) || !link_get_u64(msg, "req", &req) || !json_is_integer(jidx) ||
        json_integer_value(jidx) < -1 || json_integer_value(jidx) >= UINT32_MAX)
        return -1;
    bool next = json_integer_value(jidx) == -1;
    uint32_t idx = next ? 0 : (uint32_t)json_integer_value(jidx);
    uint32_t status = ETSI004_SUCCESS;
    struct e4_stream *s = e4_stream_find(e, ksid);
    /* Answered before ("next"), or allocated before: the chunk is on its
     * way to (or already at) the peer. */
    bool known = s != NULL && (next ? recent_find(e, req, ksid, &idx)
                                    : idx < s->floor || e4_chunk_find(s, idx) != NULL);
    /* A new chunk needs both applications: ours (HERE) has it open too. */
    if (s == NULL || s->end[E4_THERE] != E4_END_OPEN ||
        (!known && s->end[E4_HERE] != E4_END_OPEN)) {
        status = ETSI004_PEER_APP_NOT_CONNECTED;
    } else if (known) {
        status = ETSI004_SUCCESS;
    } else if (next && s->next_index == ETSI004_INDEX_NEXT) {
        status = ETSI004_INSUFFICIENT_KEY;
    } else {
        if (next)
            idx = s->next_index;
        if (e4_allocate(k, s, idx, true) == NULL) {
            status = ETSI004_INSUFFICIENT_KEY;
        } else if (next) {
            e->recent[e->recent_pos].req = req;
            memcpy(e->recent[e->recent_pos].ksid, ksid, ETSI004_KSID_LEN);
            e->recent[e->recent_pos].index = idx;
            e->recent_pos = (e->recent_pos + 1) % E4_RECENT;
        }
    }
    send_after_commit(k, json_pack("{s:s, s:I, s:s, s:I, s:i}", "t", "a", "req",
                                   (json_int_t)req, "ksid",
                                   json_string_value(json_object_get(msg, "ksid")), "idx",
                                   (json_int_t)idx, "status", (int)status));
    return 0;
}

/* ---- the other KME: what the owner says ------------------------------------------ */

/* Also at a KME without a 004 listener: the chunk's bytes are skipped, so
 * that the ordered reservation flow (014 keys too) goes on. */
static int on_chunk(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    uint64_t off, len, at, exp;
    uint32_t idx;
    uint8_t ksid[ETSI004_KSID_LEN];
    if (!link_get_u64(msg, "off", &off) || !link_get_u64(msg, "len", &len) ||
        !get_u32(msg, "idx", &idx) || !link_get_u64(msg, "at", &at) ||
        !link_get_u64(msg, "exp", &exp) || !get_ksid(msg, ksid) || len == 0 ||
        len > ETSI004_MAX_CHUNK)
        return -1;
    if (off + len <= k->in.head)
        return 0; /* applied before (a resend after reconnect) */
    if (off != k->in.head || off + len > k->in.tail)
        return -1;
    struct kme_batch *b = kme_batch(k); /* the moved head is committed */
    uint8_t *key = malloc(len);
    if (b == NULL || key == NULL) {
        free(key);
        return -1;
    }
    kme_stream_take(&k->in, (size_t)len, key);
    struct e4_stream *s = e != NULL ? e4_stream_find(e, ksid) : NULL;
    if (s == NULL && e != NULL) {
        /* The owner's state message comes next; hold the chunk meanwhile. */
        s = e4_stream_add(e, ksid);
        if (s != NULL) {
            s->seen = true;
            s->qos.key_chunk_size = (uint32_t)len;
            s->qos.ttl = (uint32_t)((exp > at ? exp - at : 0) / 1000);
            s->last_ms = e4_now();
            e4_stream_save(k, s);
        }
    }
    if (s == NULL || s->end[E4_HERE] == E4_END_CLOSED || e4_chunk_used(s, idx) ||
        e4_chunk_find(s, idx) != NULL) {
        OPENSSL_cleanse(key, len); /* this end will never take it */
        free(key);
        return 0;
    }
    if (e4_chunk_add(s, idx, key, (uint32_t)len, at, exp) < 0) {
        OPENSSL_cleanse(key, len);
        free(key);
        return -1;
    }
    return e4_chunk_save(k, s, e4_chunk_find(s, idx));
}

static int on_state(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    uint8_t ksid[ETSI004_KSID_LEN];
    if (!get_ksid(msg, ksid))
        return -1;
    struct e4_stream *s = e4_stream_find(e, ksid);
    if (json_is_true(json_object_get(msg, "gone"))) {
        if (s != NULL)
            e4_stream_drop(k, s);
        return 0;
    }
    struct etsi004_qos q;
    json_t *jo = json_object_get(msg, "owner"), *jp = json_object_get(msg, "peer");
    uint32_t next;
    const char *src = json_string_value(json_object_get(msg, "src"));
    const char *dst = json_string_value(json_object_get(msg, "dst"));
    if (e4_qos_from_json(json_object_get(msg, "qos"), &q, false) < 0 || !json_is_integer(jo) ||
        !json_is_integer(jp) || json_integer_value(jo) < 0 || json_integer_value(jo) > 2 ||
        json_integer_value(jp) < 0 || json_integer_value(jp) > 2 ||
        !get_u32(msg, "next", &next) || src == NULL || dst == NULL)
        return -1;
    if (s == NULL && (s = e4_stream_add(e, ksid)) == NULL)
        return -1;
    s->seen = true;
    s->registered = true;
    s->qos = q;
    set_str(&s->src, src);
    set_str(&s->dst, dst);
    s->end[E4_THERE] = (enum e4_end_state)json_integer_value(jo);
    set_str(&s->sae[E4_THERE], get_id(msg, "owner_sae"));
    s->next_index = next;
    s->owner_view_here = (enum e4_end_state)json_integer_value(jp);
    const char *peer_sae = get_id(msg, "peer_sae");
    if (s->end[E4_HERE] == E4_END_NONE && s->owner_view_here == E4_END_OPEN &&
        peer_sae != NULL) {
        /* Registered at the owner but not here (we stopped before our
         * commit): the owner's record is the truth. */
        s->end[E4_HERE] = E4_END_OPEN;
        set_str(&s->sae[E4_HERE], peer_sae);
        s->sent_end[E4_HERE] = E4_END_OPEN;
    }
    if (s->sent_end[E4_HERE] == E4_END_CLOSED && s->owner_view_here != E4_END_CLOSED)
        e4_dirty_push(e, s); /* tell it again */
    s->last_ms = e4_now();
    return e4_stream_save(k, s);
}

static int on_open_answer(struct kme *k, json_t *msg)
{
    struct kme_e4 *e = k->e4;
    uint64_t req;
    uint32_t status;
    uint8_t ksid[ETSI004_KSID_LEN];
    struct etsi004_qos q;
    if (!link_get_u64(msg, "req", &req) || !get_u32(msg, "status", &status) ||
        !get_ksid(msg, ksid) || e4_qos_from_json(json_object_get(msg, "qos"), &q, false) < 0)
        return -1;
    struct e4_wait *w = find_wait(e, req);
    if (w == NULL || w->answered || w->service != ETSI004_OPEN_CONNECT_REQ ||
        memcmp(w->ksid, ksid, ETSI004_KSID_LEN) != 0)
        return 0; /* nobody waits any more */
    w->answered = true;
    w->owner_status = status;
    w->qos = q;
    if (status != ETSI004_SUCCESS && status != ETSI004_PEER_NOT_CONNECTED)
        return 0;
    struct e4_stream *s = e4_stream_find(e, ksid);
    if (s == NULL && (s = e4_stream_add(e, ksid)) == NULL)
        return 0; /* the open fails: answered 4 */
    if (s->end[E4_HERE] == E4_END_OPEN && s->sae[E4_HERE] != NULL &&
        strcmp(s->sae[E4_HERE], w->sae) != 0)
        return 0;
    s->registered = true;
    s->seen = true;
    s->qos = q;
    if (s->src == NULL)
        set_str(&s->src, w->src);
    if (s->dst == NULL)
        set_str(&s->dst, w->dst);
    s->end[E4_HERE] = E4_END_OPEN;
    set_str(&s->sae[E4_HERE], w->sae);
    s->owner_view_here = E4_END_OPEN;
    if (status == ETSI004_SUCCESS)
        s->end[E4_THERE] = E4_END_OPEN;
    s->last_ms = e4_now();
    e4_stream_save(k, s);
    e4_stream_changed(k, s);
    return 0;
}

static int on_need_answer(struct kme *k, json_t *msg)
{
    uint64_t req;
    uint32_t status, idx;
    uint8_t ksid[ETSI004_KSID_LEN];
    if (!link_get_u64(msg, "req", &req) || !get_u32(msg, "status", &status) ||
        !get_u32(msg, "idx", &idx) || !get_ksid(msg, ksid))
        return -1;
    struct e4_wait *w = find_wait(k->e4, req);
    if (w == NULL || w->answered || w->service != ETSI004_GET_KEY_REQ ||
        memcmp(w->ksid, ksid, ETSI004_KSID_LEN) != 0)
        return 0;
    w->answered = true;
    w->owner_status = status;
    if (status == ETSI004_SUCCESS && w->index == ETSI004_INDEX_NEXT)
        w->index = idx;
    return 0;
}

static void sync_end(struct kme *k)
{
    struct kme_e4 *e = k->e4;
    for (size_t i = 0; i < e->bucket_count; i++) {
        struct e4_stream *s = e->buckets[i];
        while (s != NULL) {
            struct e4_stream *next = s->next;
            if (!s->seen) /* the owner no longer has it */
                e4_stream_drop(k, s);
            s = next;
        }
    }
}

int kme_e4_link_msg(struct kme *k, const char *t, json_t *msg, bool *changed)
{
    struct kme_e4 *e = k->e4;
    static const char *const to_owner[] = {"o", "x", "n"};
    static const char *const to_peer[] = {"c", "s", "or", "a", "sa", "se"};
    bool mine = false, theirs = false;
    for (size_t i = 0; i < sizeof(to_owner) / sizeof(to_owner[0]); i++)
        mine |= strcmp(t, to_owner[i]) == 0;
    for (size_t i = 0; i < sizeof(to_peer) / sizeof(to_peer[0]); i++)
        theirs |= strcmp(t, to_peer[i]) == 0;
    if (!mine && !theirs)
        return 0;
    /* A KME without a 004 listener still applies chunk reservations (the
     * reservation flow must not stall) and ignores the rest. */
    if (e == NULL) {
        *changed = true;
        return strcmp(t, "c") != 0 ? 1 : on_chunk(k, msg) < 0 ? -1 : 1;
    }
    if ((mine && !e->owner) || (theirs && e->owner))
        return -1; /* both KMEs think they own the streams */
    int ret = 0;
    if (strcmp(t, "o") == 0)
        ret = on_open(k, msg);
    else if (strcmp(t, "x") == 0)
        ret = on_close(k, msg);
    else if (strcmp(t, "n") == 0)
        ret = on_need(k, msg);
    else if (strcmp(t, "c") == 0)
        ret = on_chunk(k, msg);
    else if (strcmp(t, "s") == 0)
        ret = on_state(k, msg);
    else if (strcmp(t, "or") == 0)
        ret = on_open_answer(k, msg);
    else if (strcmp(t, "a") == 0)
        ret = on_need_answer(k, msg);
    else if (strcmp(t, "sa") == 0) {
        for (size_t i = 0; i < e->bucket_count; i++)
            for (struct e4_stream *s = e->buckets[i]; s != NULL; s = s->next)
                s->seen = false;
    } else if (strcmp(t, "se") == 0) {
        sync_end(k);
    }
    *changed = true;
    return ret < 0 ? -1 : 1;
}
