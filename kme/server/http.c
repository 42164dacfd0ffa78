/* HTTPS connections of the KME's 014 listener: mutual TLS (net_conn), the
 * caller's SAE ID from its certificate, llhttp request parsing into a
 * bounded request, keep-alive, one request at a time per connection
 * (pipelined requests wait in the input buffer), one log line per request.
 *
 * State machine per connection:
 *   HANDSHAKE --tls ready--> READING --request complete--> WAITING
 *   WAITING --response written, keep-alive--> READING
 *   any --error/eof/close--> CLOSED (freed, or when WAITING: freed once the
 *   asynchronous response arrives, which is then dropped). */
#include <llhttp.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "server_internal.h"

#define MAX_TARGET 4096
#define MAX_HEADERS 64
#define MAX_HEADER_BYTES 16384   /* all field names and values together */

enum hc_state { HC_HANDSHAKE, HC_READING, HC_WAITING, HC_CLOSED };
static const char *const hc_state_names[] = {"HANDSHAKE", "READING", "WAITING",
                                             "CLOSED"};

struct http_conn {
    struct kme *kme;
    net_conn *conn;
    uint64_t id;
    enum hc_state state;
    struct http_conn *prev, *next;
    char sae_id[ETSI014_ID_MAX + 1];
    llhttp_t parser;
    char target[MAX_TARGET + 1];
    size_t target_len;
    char *body;
    size_t body_len, body_cap;
    int limit_status;        /* 413/431/414 when a limit was hit */
    size_t header_count;
    size_t header_bytes;
    char hname[16], hvalue[16];   /* current header, only to spot Expect */
    size_t hname_len, hvalue_len;
    bool expect_continue;
    bool keep_alive;
    bool in_process;         /* inside process_input(): no recursion */
    char method[16];
    uint64_t t0;
    size_t log_keys;
    uint64_t log_bits;
};

static llhttp_settings_t settings;
static bool settings_ready;

static void hc_enter(struct http_conn *hc, enum hc_state st)
{
    qlog_debug("kme %s conn %llu: %s -> %s", hc->kme->cfg.kme_id,
               (unsigned long long)hc->id, hc_state_names[hc->state],
               hc_state_names[st]);
    hc->state = st;
}

static void hc_free(struct http_conn *hc)
{
    struct kme *k = hc->kme;
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else if (k->conns == hc)
        k->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    k->conn_count--;
    free(hc->body);
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

/* ---- llhttp callbacks: fill the struct, nothing else ---------------------- */

static int on_message_begin(llhttp_t *p)
{
    struct http_conn *hc = p->data;
    hc->target_len = 0;
    hc->body_len = 0;
    hc->header_count = 0;
    hc->header_bytes = 0;
    hc->method[0] = '\0';
    hc->limit_status = 0;
    hc->expect_continue = false;
    hc->hname_len = hc->hvalue_len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *hc = p->data;
    if (len > MAX_TARGET - hc->target_len) {
        hc->limit_status = 414;
        return -1;
    }
    memcpy(hc->target + hc->target_len, at, len);
    hc->target_len += len;
    hc->target[hc->target_len] = '\0';
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct http_conn *hc = p->data;
    if (++hc->header_count > MAX_HEADERS) {
        hc->limit_status = 431;
        return -1;
    }
    return 0;
}

static void add_short(char *buf, size_t cap, size_t *len, const char *at,
                      size_t n)
{
    /* Keeps at most cap-1 bytes; longer values cannot match anyway (the
     * length is still counted so that they do not). */
    for (size_t i = 0; i < n; i++, (*len)++) {
        if (*len < cap - 1)
            buf[*len] = at[i];
    }
}

static int count_header_bytes(struct http_conn *hc, size_t len)
{
    if (len > MAX_HEADER_BYTES - hc->header_bytes) {
        hc->limit_status = 431;
        return -1;
    }
    hc->header_bytes += len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *hc = p->data;
    if (count_header_bytes(hc, len) < 0)
        return -1;
    add_short(hc->hname, sizeof(hc->hname), &hc->hname_len, at, len);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *hc = p->data;
    if (count_header_bytes(hc, len) < 0)
        return -1;
    add_short(hc->hvalue, sizeof(hc->hvalue), &hc->hvalue_len, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct http_conn *hc = p->data;
    if (hc->hname_len == 6 && strncasecmp(hc->hname, "expect", 6) == 0 &&
        hc->hvalue_len == 12 && strncasecmp(hc->hvalue, "100-continue", 12) == 0)
        hc->expect_continue = true;
    hc->hname_len = hc->hvalue_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct http_conn *hc = p->data;
    snprintf(hc->method, sizeof(hc->method), "%s",
             llhttp_method_name((llhttp_method_t)p->method));
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > hc->kme->cfg.max_body) {
        hc->limit_status = 413; /* refused before the body is sent */
        return -1;
    }
    if (hc->expect_continue && hc->conn != NULL)
        net_conn_write(hc->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *hc = p->data;
    if (len > hc->kme->cfg.max_body - hc->body_len) {
        hc->limit_status = 413;
        return -1;
    }
    if (hc->body_len + len + 1 > hc->body_cap) {
        size_t cap = (hc->body_len + len + 1) * 2;
        if (cap > hc->kme->cfg.max_body + 1)
            cap = hc->kme->cfg.max_body + 1;
        char *n = realloc(hc->body, cap);
        if (n == NULL) {
            hc->limit_status = 503;
            return -1;
        }
        hc->body = n;
        hc->body_cap = cap;
    }
    memcpy(hc->body + hc->body_len, at, len);
    hc->body_len += len;
    hc->body[hc->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct http_conn *hc = p->data;
    snprintf(hc->method, sizeof(hc->method), "%s",
             llhttp_method_name((llhttp_method_t)p->method));
    hc->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    if (settings_ready)
        return;
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    settings_ready = true;
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
    size_t plen = strcspn(hc->target, "?");
    double ms = (double)(kme_now_ms() - hc->t0);
    qlog_debug("kme %s conn=%llu sae=%s %s %.*s -> %d keys=%zu bits=%llu %.0fms",
              hc->kme->cfg.kme_id, (unsigned long long)hc->id,
              hc->sae_id[0] ? hc->sae_id : "-", hc->method,
              (int)(plen > 200 ? 200 : plen), hc->target, status, hc->log_keys,
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
    bool keep = hc->keep_alive && status != 413 && status != 414 &&
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
    llhttp_resume(&hc->parser);
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
        .method = hc->method,
        .target = hc->target,
        .target_len = hc->target_len,
        .body = hc->body != NULL ? hc->body : "",
        .body_len = hc->body_len,
        .sae_id = hc->sae_id,
    };
    kme_api_handle(hc->kme, hc, &req);
}

static void process_input(struct http_conn *hc)
{
    hc->in_process = true;
    while (hc->state == HC_READING && hc->conn != NULL) {
        size_t len;
        const char *data = net_conn_input(hc->conn, &len);
        if (len == 0)
            break;
        llhttp_errno_t err = llhttp_execute(&hc->parser, data, len);
        if (err == HPE_OK) {
            net_conn_consume(hc->conn, len);
            break;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&hc->parser);
            size_t used = pos != NULL && pos >= data && pos <= data + len
                              ? (size_t)(pos - data) : len;
            net_conn_consume(hc->conn, used);
            dispatch(hc);
            continue;
        }
        /* Parse error or limit: answer and close. */
        hc->t0 = kme_now_ms();
        if (hc->method[0] == '\0')
            snprintf(hc->method, sizeof(hc->method), "-");
        hc->keep_alive = false;
        hc_enter(hc, HC_WAITING);
        int status = hc->limit_status != 0 ? hc->limit_status : 400;
        kme_http_error(hc, status,
                       status == 413   ? "request body too large"
                       : status == 414 ? "request target too long"
                       : status == 431 ? "request header fields too large"
                       : status == 503 ? "out of memory"
                                       : "malformed HTTP request");
        break;
    }
    hc->in_process = false;
    if (hc->state == HC_CLOSED)
        hc_free(hc);
}

static void on_conn_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct http_conn *hc = arg;
    (void)conn;
    switch (ev) {
    case NET_EV_TLS_READY: {
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
    if (k->stopping || k->conn_count >= k->cfg.max_connections) {
        qlog_warn("kme %s: refusing connection from %s (%s)", k->cfg.kme_id,
                  net_conn_peer_addr(conn),
                  k->stopping ? "stopping" : "max_connections reached");
        net_conn_close(&conn);
        return;
    }
    struct http_conn *hc = calloc(1, sizeof(*hc));
    if (hc == NULL) {
        net_conn_close(&conn);
        return;
    }
    settings_init();
    hc->kme = k;
    hc->conn = conn;
    hc->id = ++k->next_conn_id;
    hc->state = HC_HANDSHAKE;
    llhttp_init(&hc->parser, HTTP_REQUEST, &settings);
    hc->parser.data = hc;
    hc->next = k->conns;
    if (k->conns != NULL)
        k->conns->prev = hc;
    k->conns = hc;
    k->conn_count++;
    net_conn_set_cb(conn, on_conn_event, hc);
    net_conn_set_timeout(conn, k->cfg.idle_timeout_ms);
    net_conn_set_max_input(conn, k->cfg.max_body + MAX_TARGET + 16384);
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
