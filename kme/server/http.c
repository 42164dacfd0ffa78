/* HTTPS connections of the KME's 014 listener: mutual TLS (net_conn), the
 * caller's SAE ID from its certificate, llhttp request parsing into a
 * bounded request, keep-alive, one request at a time per connection
 * (pipelined requests wait in the input buffer), one log line per request.
 *
 * Before authentication a connection costs no authenticated slot: it waits
 * in the handshake queue (max_handshakes, the oldest dropped for a
 * newcomer) with a deadline of handshake_timeout; at TLS_READY it takes
 * one of max_connections or is closed.
 *
 * State machine per connection:
 *   HANDSHAKE --tls ready--> READING --request complete--> WAITING
 *   WAITING --response written, keep-alive--> READING
 *   any --error/eof/close--> CLOSED (freed, or when WAITING: freed once the
 *   asynchronous response arrives, which is then dropped). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "server_internal.h"

enum hc_state { HC_HANDSHAKE, HC_READING, HC_WAITING, HC_CLOSED };
static const char *const hc_state_names[] = {"HANDSHAKE", "READING", "WAITING",
                                             "CLOSED"};

struct http_conn {
    struct kme *kme;
    net_conn *conn;
    uint64_t id;
    enum hc_state state;
    struct http_conn *prev, *next;
    struct http_conn *hs_prev, *hs_next; /* handshake queue (HANDSHAKE only) */
    bool in_hs_queue;
    bool counted;            /* holds one of max_connections */
    char sae_id[ETSI014_ID_MAX + 1];
    struct kme_http_parser req; /* the request being read (http_parse.c) */
    bool in_process;         /* inside process_input(): no recursion */
    uint64_t t0;
    size_t log_keys;
    uint64_t log_bits;
};

static void hc_enter(struct http_conn *hc, enum hc_state st)
{
    qlog_debug("kme %s conn %llu: %s -> %s", hc->kme->cfg.kme_id,
               (unsigned long long)hc->id, hc_state_names[hc->state],
               hc_state_names[st]);
    hc->state = st;
}

static void hs_unlink(struct http_conn *hc)
{
    struct kme *k = hc->kme;
    if (!hc->in_hs_queue)
        return;
    if (hc->hs_prev != NULL)
        hc->hs_prev->hs_next = hc->hs_next;
    else
        k->hs_first = hc->hs_next;
    if (hc->hs_next != NULL)
        hc->hs_next->hs_prev = hc->hs_prev;
    else
        k->hs_last = hc->hs_prev;
    hc->hs_prev = hc->hs_next = NULL;
    hc->in_hs_queue = false;
    k->hs_count--;
}

static void hs_append(struct http_conn *hc)
{
    struct kme *k = hc->kme;
    hc->hs_prev = k->hs_last;
    hc->hs_next = NULL;
    if (k->hs_last != NULL)
        k->hs_last->hs_next = hc;
    else
        k->hs_first = hc;
    k->hs_last = hc;
    hc->in_hs_queue = true;
    k->hs_count++;
}

static void hc_free(struct http_conn *hc)
{
    struct kme *k = hc->kme;
    hs_unlink(hc);
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else if (k->conns == hc)
        k->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    if (hc->counted)
        k->conn_count--;
    kme_http_parser_clear(&hc->req);
    free(hc);
}

/* Closes the transport; frees now unless a response is outstanding. */
static void hc_close(struct http_conn *hc)
{
    if (hc->conn != NULL)
        net_conn_close(&hc->conn);
    bool waiting = hc->state == HC_WAITING;
    hc_enter(hc, HC_CLOSED);
    if (!waiting && !hc->in_process)
        hc_free(hc);
}

/* ---- responses ---------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void process_input(struct http_conn *hc);

void kme_http_log_keys(struct http_conn *hc, size_t keys, uint64_t bits)
{
    hc->log_keys = keys;
    hc->log_bits = bits;
}

static void log_request(struct http_conn *hc, int status)
{
    /* The path only (SAE IDs are not secret); never bodies or keys. */
    size_t plen = strcspn(hc->req.target, "?");
    double ms = (double)(kme_now_ms() - hc->t0);
    qlog_debug("kme %s conn=%llu sae=%s %s %.*s -> %d keys=%zu bits=%llu %.0fms",
              hc->kme->cfg.kme_id, (unsigned long long)hc->id,
              hc->sae_id[0] ? hc->sae_id : "-", hc->req.method,
              (int)(plen > 200 ? 200 : plen), hc->req.target, status, hc->log_keys,
              (unsigned long long)hc->log_bits, ms);
}

void kme_http_respond(struct http_conn *hc, int status, const char *body,
                      size_t len, bool secret)
{
    if (hc->state == HC_CLOSED) {
        /* The client went away while we committed: nothing to send. */
        log_request(hc, status);
        qlog_warn("kme %s conn=%llu: client gone before the response",
                  hc->kme->cfg.kme_id, (unsigned long long)hc->id);
        hc_free(hc);
        return;
    }
    bool keep = hc->req.keep_alive && status != 413 && status != 414 &&
                status != 431 && !hc->kme->stopping;
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%s%s\r\n",
                      status, reason(status), len,
                      status == 405 ? "Allow: GET, POST\r\n" : "",
                      keep ? "" : "Connection: close\r\n");
    size_t total = (size_t)hl + len;
    char *buf = malloc(total);
    int rc = -1;
    if (buf != NULL) {
        memcpy(buf, head, (size_t)hl);
        memcpy(buf + hl, body, len);
        rc = net_conn_write(hc->conn, buf, total);
        if (secret)
            OPENSSL_cleanse(buf, total);
        free(buf);
    }
    log_request(hc, status);
    hc->log_keys = 0;
    hc->log_bits = 0;
    if (rc < 0 || !keep) {
        if (hc->conn != NULL)
            net_conn_close_after_write(&hc->conn);
        hc_enter(hc, HC_CLOSED);
        if (!hc->in_process)
            hc_free(hc);
        return;
    }
    kme_http_parser_next(&hc->req);
    net_conn_set_timeout(hc->conn, hc->kme->cfg.idle_timeout_ms); /* re-arm */
    hc_enter(hc, HC_READING);
    if (!hc->in_process)
        process_input(hc);
}

void kme_http_error(struct http_conn *hc, int status, const char *message)
{
    size_t len = 0;
    char *body = etsi014_error_encode(message, NULL, &len);
    if (body == NULL)
        kme_http_respond(hc, status, "{\"message\":\"error\"}", 19, false);
    else
        kme_http_respond(hc, status, body, len, false);
    free(body);
}

/* ---- input -------------------------------------------------------------- */

static void dispatch(struct http_conn *hc)
{
    hc_enter(hc, HC_WAITING);
    hc->t0 = kme_now_ms();
    struct kme_request req = {
        .method = hc->req.method,
        .target = hc->req.target,
        .target_len = hc->req.target_len,
        .body = hc->req.body != NULL ? hc->req.body : "",
        .body_len = hc->req.body_len,
        .sae_id = hc->sae_id,
    };
    kme_api_handle(hc->kme, hc, &req);
}

static void process_input(struct http_conn *hc)
{
    hc->in_process = true;
    while (hc->state == HC_READING && hc->conn != NULL) {
        size_t len, used = 0;
        const char *data = net_conn_input(hc->conn, &len);
        if (len == 0)
            break;
        enum kme_http_parse pr = kme_http_parser_feed(&hc->req, data, len, &used);
        net_conn_consume(hc->conn, used);
        if (pr == KME_HTTP_MORE) {
            if (hc->req.continue_due) {
                hc->req.continue_due = false;
                net_conn_write(hc->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            }
            break;
        }
        if (pr == KME_HTTP_REQUEST) {
            dispatch(hc);
            continue;
        }
        /* Parse error or limit: answer and close. */
        hc->t0 = kme_now_ms();
        hc_enter(hc, HC_WAITING);
        int status = hc->req.limit_status;
        kme_http_error(hc, status,
                       status == 413   ? "request body too large"
                       : status == 414 ? "request target too long"
                       : status == 431 ? "request header fields too large"
                       : status == 503 ? "out of memory"
                                       : "malformed HTTP request");
        break;
    }
    /* kme_http_respond frees hc only while !in_process (set for the whole
     * loop); the analyzer loses the flag across calls into other files and
     * reports a use after free here. */
    hc->in_process = false; // NOLINT(clang-analyzer-unix.Malloc)
    if (hc->state == HC_CLOSED)
        hc_free(hc);
}

static void on_conn_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct http_conn *hc = arg;
    (void)conn;
    switch (ev) {
    case NET_EV_TLS_READY: {
        struct kme *k = hc->kme;
        hs_unlink(hc);
        net_conn_set_deadline(hc->conn, 0);
        if (k->conn_count >= k->cfg.max_connections) {
            qlog_warn("kme %s conn=%llu %s: refused after TLS: %zu authenticated "
                      "connections (max_connections)", k->cfg.kme_id,
                      (unsigned long long)hc->id, net_conn_peer_addr(hc->conn),
                      k->conn_count);
            hc_close(hc);
            return;
        }
        k->conn_count++;
        hc->counted = true;
        int n = net_conn_peer_subject(hc->conn, hc->kme->cfg.sae_id_field,
                                      hc->sae_id, sizeof(hc->sae_id));
        if (n <= 0) {
            qlog_warn("kme %s conn=%llu %s: client certificate has no %s",
                      hc->kme->cfg.kme_id, (unsigned long long)hc->id,
                      net_conn_peer_addr(hc->conn), hc->kme->cfg.sae_id_field);
            hc_close(hc);
            return;
        }
        hc_enter(hc, HC_READING);
        process_input(hc);
        return;
    }
    case NET_EV_READ:
        if (hc->state == HC_READING)
            process_input(hc);
        return;
    case NET_EV_DRAINED:
    case NET_EV_CONNECTED:
        return;
    case NET_EV_TIMEOUT:
        if (hc->state == HC_WAITING)
            return;
        if (hc->state == HC_HANDSHAKE)
            qlog_info("kme %s conn=%llu %s: TLS handshake not done in time (%s)",
                      hc->kme->cfg.kme_id, (unsigned long long)hc->id,
                      net_conn_peer_addr(hc->conn), net_conn_error(hc->conn));
        hc_close(hc);
        return;
    case NET_EV_ERROR:
        if (hc->state == HC_HANDSHAKE)
            qlog_info("kme %s conn=%llu %s: TLS rejected: %s",
                      hc->kme->cfg.kme_id, (unsigned long long)hc->id,
                      net_conn_peer_addr(hc->conn), net_conn_error(hc->conn));
        hc_close(hc);
        return;
    case NET_EV_EOF:
        hc_close(hc);
        return;
    }
}

void kme_http_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct kme *k = arg;
    (void)l;
    if (k->stopping) {
        net_conn_close(&conn);
        return;
    }
    if (k->hs_count >= k->cfg.max_handshakes && k->hs_first != NULL) {
        /* A flood of half-open handshakes: the oldest makes room. A real
         * SAE's handshake takes milliseconds; it loses its place only if
         * max_handshakes newcomers arrive meanwhile. */
        if (k->hs_evicted++ % 1000 == 0)
            qlog_warn("kme %s: %zu TLS handshakes under way (max_handshakes): "
                      "dropping the oldest (%llu dropped so far)", k->cfg.kme_id,
                      k->hs_count, (unsigned long long)k->hs_evicted);
        hc_close(k->hs_first);
    }
    struct http_conn *hc = calloc(1, sizeof(*hc));
    if (hc == NULL) {
        net_conn_close(&conn);
        return;
    }
    hc->kme = k;
    hc->conn = conn;
    hc->id = ++k->next_conn_id;
    hc->state = HC_HANDSHAKE;
    kme_http_parser_init(&hc->req, k->cfg.max_body);
    hc->next = k->conns;
    if (k->conns != NULL)
        k->conns->prev = hc;
    k->conns = hc;
    hs_append(hc);
    net_conn_set_cb(conn, on_conn_event, hc);
    net_conn_set_timeout(conn, k->cfg.idle_timeout_ms);
    net_conn_set_deadline(conn, k->cfg.handshake_timeout_ms);
    net_conn_set_max_input(conn, k->cfg.max_body + KME_HTTP_MAX_TARGET + 16384);
    if (net_conn_start_tls(conn, k->tls_server, NULL) < 0)
        hc_close(hc);
}

void kme_http_close_all(struct kme *k)
{
    struct http_conn *hc = k->conns;
    while (hc != NULL) {
        struct http_conn *next = hc->next;
        if (hc->state != HC_CLOSED)
            hc_close(hc);
        hc = next;
    }
}
