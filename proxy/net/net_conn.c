/* net_conn: one TCP connection, optionally TLS through memory BIOs.
 *
 * Data path: socket -> (TLS: ciphertext into rbio, SSL_read) -> input
 * buffer -> protocol code; protocol writes -> (TLS: SSL_write, ciphertext
 * out of wbio) -> uv_write. The protocol code sees plaintext only.
 *
 * Lifetime: the struct is freed when the TCP and timer handles have both
 * closed and no getaddrinfo request is outstanding; until then callbacks
 * from libuv find it with `closed` set and do nothing. */
#include <arpa/inet.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net.h"
#include "net_internal.h"

#define DEFAULT_MAX_INPUT ((size_t)64 * 1024)
#define TLS_READ_CHUNK ((size_t)16 * 1024 + 512)
/* Socket reads land in one buffer per thread (READ_BUF bytes) and only what
 * arrived is copied into the connection's own input buffer, which starts
 * small and is given back when emptied: an idle connection holds no input
 * memory at all (10,000 idle clients must not cost 64 KiB each). */
#define READ_BUF ((size_t)256 * 1024) /* one per thread; a relay reads this much at once */
#define INPUT_MIN_CAP ((size_t)1024)
#define INPUT_KEEP_CAP ((size_t)4096) /* kept when emptied; larger is freed */
/* How long a closing connection waits for the peer's FIN. Closing a socket
 * with unread input makes the kernel send RST, which destroys data the
 * peer has not read yet; so we half-close and drain first. */
#define LINGER_MS NET_CLOSE_LINGER_MS
#define DRAIN_MS NET_CLOSE_DRAIN_MS

enum conn_state {
    CONN_RESOLVING,
    CONN_CONNECTING,
    CONN_OPEN,
    CONN_DRAINING, /* close_after_write: waiting for output to finish */
    CONN_LINGER,   /* FIN sent; discarding input until the peer's FIN */
    CONN_CLOSED,
};

enum tls_state {
    TLS_OFF,
    TLS_HANDSHAKE,
    TLS_READY,
    TLS_FAILED,
};

struct net_conn {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;    /* idle timeout, deferred delivery, drain, linger */
    uv_timer_t deadline; /* overall deadline of the current phase */
    uv_getaddrinfo_t resolve_req;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    struct addrinfo *addrs;     /* owned; remaining candidates to try */
    struct addrinfo *next_addr; /* points into addrs */
    uint16_t port;

    enum conn_state state;
    int handles_open;    /* tcp + timer + deadline handles not yet closed */
    bool resolving;      /* getaddrinfo outstanding */
    bool reading;        /* uv_read_start active */
    bool paused;         /* caller asked for no more input */
    bool out_blocked;    /* queued output above out_high: input held */
    bool deferred;       /* `timer` runs deferred_cb (idle timer waits) */
    bool drain_pending;  /* output went out at once: NET_EV_DRAINED is due */
    /* The socket reported a hard error (a write or read failed: reset by
     * the peer, ...). No write reaches it again: after ECONNRESET the next
     * write(2) is EPIPE and raises SIGPIPE. Writes are dropped; they return
     * 0 until NET_EV_ERROR told the owner, the code after. */
    int sock_error;
    bool sock_error_due; /* a failed write: NET_EV_ERROR is due (deferred) */
    bool eof;      /* the socket (or TLS close_notify) said end of input */
    bool eof_sent; /* NET_EV_EOF delivered */
    int in_dispatch; /* nesting depth of callbacks running */

    net_conn_cb cb;
    void *cb_arg;
    void *user_data;

    /* Input: plaintext at in[in_off .. in_off+in_len). Owned. */
    char *in;
    size_t in_off, in_len, in_cap, max_input;
    /* The last read filled all the room it was given: a stream is under
     * way (a relay). Its buffer is kept when emptied and reads go straight
     * into it - no copy, no wipe per read; the first short read ends it. */
    bool in_hot;

    /* TLS */
    SSL *ssl;
    BIO *net_in;  /* ciphertext from the socket, read by OpenSSL */
    BIO *net_out; /* ciphertext from OpenSSL, to the socket */
    enum tls_state tls;
    bool tls_server;
    char *tls_queued; /* plaintext written before the handshake ended; owned */
    size_t tls_queued_len;

    size_t out_pending; /* bytes in uv_write requests not yet completed */
    size_t out_reqs;    /* those requests */
    size_t out_high, out_low; /* output bound (net_conn_set_output_limits) */
    uint64_t timeout_ms;
    uint64_t deadline_ms; /* of the armed deadline, for its message */
    char peer[64];
    char error[512];
    int error_code; /* of the last failure; 0 when none */
};

struct write_req {
    uv_write_t req;
    net_conn *conn;
    size_t len;
    char data[];
};

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_start_reading(net_conn *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void update_reading(net_conn *c);
static void tls_process(net_conn *c);
static void tls_handshake_step(net_conn *c);
static int tls_flush(net_conn *c);
static void schedule_deferred(net_conn *c);
static bool tls_has_buffered(const net_conn *c);

/* Input is neither read nor delivered: the owner paused it, or the peer
 * does not read what we queued for it. */
static bool input_held(const net_conn *c)
{
    return c->paused || c->out_blocked;
}

/* ---- the per-thread read buffer ------------------------------------------ */

static _Thread_local char *tl_read_buf; /* also a root for leak checkers */
static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;

static void read_buf_key_init(void)
{
    /* Frees the buffer of a thread that exits (a private loop's thread). */
    pthread_key_create(&read_buf_key, free);
}

static char *read_buffer(void)
{
    if (tl_read_buf == NULL) {
        pthread_once(&read_buf_once, read_buf_key_init);
        tl_read_buf = malloc(READ_BUF);
        if (tl_read_buf != NULL)
            pthread_setspecific(read_buf_key, tl_read_buf);
    }
    return tl_read_buf;
}

const char *net_event_name(enum net_event ev)
{
    static const char *const names[] = {
        "connected", "tls-ready", "read", "drained", "eof", "timeout", "error",
    };
    return (unsigned)ev < sizeof(names) / sizeof(names[0]) ? names[ev] : "?";
}

/* ---- lifetime ------------------------------------------------------------ */

/* After a burst of connections glibc keeps the freed heap (measured: RSS
 * 124 -> 208 MB for 5,000 idle SMTP sessions, and it stayed at 208 after
 * they closed). When the connections alive fall to a quarter of their peak
 * (of at least TRIM_PEAK_MIN), the free memory is handed back once. */
#define TRIM_PEAK_MIN 256
static atomic_size_t live_conns, peak_conns;

static void count_conn_opened(void)
{
    size_t n = atomic_fetch_add(&live_conns, 1) + 1;
    if (n > atomic_load(&peak_conns))
        atomic_store(&peak_conns, n); /* approximate across threads: fine */
}

static void count_conn_freed(void)
{
    size_t n = atomic_fetch_sub(&live_conns, 1) - 1;
    size_t peak = atomic_load(&peak_conns);
    if (peak >= TRIM_PEAK_MIN && n <= peak / 4) {
        atomic_store(&peak_conns, n);
        malloc_trim(0);
    }
}

static void conn_maybe_free(net_conn *c)
{
    if (c->handles_open > 0 || c->resolving)
        return;
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* frees both BIOs */
    if (c->addrs != NULL)
        uv_freeaddrinfo(c->addrs);
    if (c->in != NULL) {
        OPENSSL_cleanse(c->in, c->in_cap); /* may hold message text */
        free(c->in);
    }
    if (c->tls_queued != NULL) {
        OPENSSL_cleanse(c->tls_queued, c->tls_queued_len);
        free(c->tls_queued);
    }
    free(c);
    count_conn_freed();
}

static void handle_closed(uv_handle_t *h)
{
    net_conn *c = h->data;
    c->handles_open--;
    conn_maybe_free(c);
}

static void conn_shutdown_handles(net_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    c->cb = NULL;
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->resolve_req);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->deadline))
        uv_close((uv_handle_t *)&c->deadline, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

/* libuv writes to sockets with write(2), not send(MSG_NOSIGNAL): a write
 * after the peer reset the connection raises SIGPIPE, whose default action
 * ends the process (libuv leaves it to the program: libuv/libuv#45). A
 * program with connections must survive any peer, so while SIGPIPE is at
 * its default it is ignored (the write then fails with EPIPE); a handler
 * the program installed is kept. */
static void sigpipe_ignore_default(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) ||
        sa.sa_handler != SIG_DFL)
        return;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static net_conn *conn_alloc(uv_loop_t *loop)
{
    sigpipe_ignore_default();
    net_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->max_input = DEFAULT_MAX_INPUT;
    c->out_high = NET_OUTPUT_HIGH;
    c->out_low = NET_OUTPUT_LOW;
    if (uv_tcp_init(loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(loop, &c->deadline);
    c->deadline.data = c;
    c->handles_open = 3;
    snprintf(c->peer, sizeof(c->peer), "?");
    count_conn_opened();
    return c;
}

static void dispatch(net_conn *c, enum net_event ev)
{
    if (c->state == CONN_CLOSED || c->cb == NULL)
        return;
    c->in_dispatch++;
    c->cb(c, ev, c->cb_arg);
    c->in_dispatch--;
}

static void fail(net_conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(net_conn *c, int code, const char *fmt, ...)
{
    if (c->state == CONN_CLOSED)
        return;
    c->error_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    if (c->tls == TLS_HANDSHAKE)
        c->tls = TLS_FAILED;
    if (c->state == CONN_DRAINING || c->state == CONN_LINGER) {
        conn_shutdown_handles(c);
        return;
    }
    dispatch(c, NET_EV_ERROR);
}

/* The peer did not send FIN in time (linger), or did not read our output
 * in time (drain): close regardless. */
static void close_timeout_cb(uv_timer_t *t)
{
    conn_shutdown_handles(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    net_conn *c = req->data;
    if (c->state != CONN_LINGER)
        return;
    if (status < 0 || c->eof) {
        conn_shutdown_handles(c);
        return;
    }
    uv_timer_start(&c->timer, close_timeout_cb, LINGER_MS, 0);
}

/* All output is in the kernel: send FIN, then wait for the peer's. */
static void begin_linger(net_conn *c)
{
    c->state = CONN_LINGER;
    c->shutdown_req.data = c;
    if (c->eof || c->sock_error != 0 ||
        uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        conn_shutdown_handles(c);
        return;
    }
    /* Read and discard until the peer's FIN: unread input at close makes
     * the kernel answer RST, which destroys our reply in the peer's buffer
     * (reading may be off here when the output never queued). */
    update_reading(c);
}

void net_conn_close(net_conn **cp)
{
    net_conn *c = *cp;
    *cp = NULL;
    if (c == NULL)
        return;
    conn_shutdown_handles(c);
}

void net_conn_close_after_write(net_conn **cp)
{
    net_conn *c = *cp;
    *cp = NULL;
    if (c == NULL || c->state == CONN_CLOSED)
        return;
    if (c->state != CONN_OPEN || c->sock_error != 0) {
        conn_shutdown_handles(c); /* a broken socket: nothing can be sent */
        return;
    }
    c->cb = NULL;
    c->state = CONN_DRAINING;
    c->deferred = false;
    uv_timer_stop(&c->deadline);
    /* Whatever the peer does, the socket is closed within DRAIN_MS (output
     * it never reads) plus LINGER_MS (a FIN it never sends). */
    uv_timer_start(&c->timer, close_timeout_cb, DRAIN_MS, 0);
    if (c->tls == TLS_READY) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* queue close_notify */
        tls_flush(c);
    } else if (c->tls_queued != NULL) {
        /* The handshake never finished: what waited for it cannot be sent
         * (in the clear it would be a downgrade). */
        OPENSSL_cleanse(c->tls_queued, c->tls_queued_len);
        free(c->tls_queued);
        c->tls_queued = NULL;
        c->tls_queued_len = 0;
    }
    if (c->out_pending == 0)
        begin_linger(c);
    else
        update_reading(c);
}

/* ---- accessors ------------------------------------------------------------ */

void net_conn_set_cb(net_conn *c, net_conn_cb cb, void *arg)
{
    c->cb = cb;
    c->cb_arg = arg;
}

void net_conn_set_data(net_conn *c, void *data) { c->user_data = data; }
void *net_conn_get_data(const net_conn *c) { return c->user_data; }
const char *net_conn_peer_addr(const net_conn *c) { return c->peer; }
const char *net_conn_error(const net_conn *c) { return c->error; }
int net_conn_error_code(const net_conn *c) { return c->error_code; }
bool net_conn_is_tls(const net_conn *c) { return c->tls == TLS_READY; }
size_t net_conn_output_pending(const net_conn *c) { return c->out_pending + c->tls_queued_len; }

static void set_peer_name(net_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        uv_ip4_name(sin, host, sizeof(host));
        port = ntohs(sin->sin_port);
        snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(sin6, host, sizeof(host));
        port = ntohs(sin6->sin6_port);
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host, port);
    }
}

const char *net_conn_server_name(const net_conn *c)
{
    if (c->ssl == NULL || !c->tls_server)
        return NULL;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *net_conn_tls_version(const net_conn *c)
{
    return c->tls == TLS_READY ? SSL_get_version(c->ssl) : NULL;
}

const char *net_conn_tls_cipher(const net_conn *c)
{
    return c->tls == TLS_READY ? SSL_get_cipher_name(c->ssl) : NULL;
}

int net_conn_peer_subject(const net_conn *c, const char *field, char *buf, size_t buflen)
{
    if (c->tls != TLS_READY)
        return NET_ESTATE;
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == NULL)
        return NET_EVERIFY;
    int nid = OBJ_txt2nid(field);
    if (nid == NID_undef)
        return UV_EINVAL;
    X509_NAME *name = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(name, nid, -1);
    if (idx < 0)
        return UV_ENOENT;
    /* Two entries of the same field make the identity ambiguous. */
    if (X509_NAME_get_index_by_NID(name, nid, idx) >= 0)
        return UV_EINVAL;
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0)
        return UV_EINVAL;
    int rc;
    if ((size_t)len >= buflen || memchr(utf8, '\0', (size_t)len) != NULL) {
        rc = UV_ENOBUFS;
    } else {
        memcpy(buf, utf8, (size_t)len);
        buf[len] = '\0';
        rc = len;
    }
    OPENSSL_free(utf8);
    return rc;
}

/* ---- timeout -------------------------------------------------------------- */

static void timer_cb(uv_timer_t *t)
{
    net_conn *c = t->data;
    snprintf(c->error, sizeof(c->error), "idle timeout after %llu ms",
             (unsigned long long)c->timeout_ms);
    c->error_code = NET_ETIMEDOUT;
    dispatch(c, NET_EV_TIMEOUT);
}

static void rearm_timer(net_conn *c)
{
    if (c->state != CONN_OPEN || c->deferred)
        return; /* closing timers run; deferred_cb re-arms after delivery */
    if (c->timeout_ms > 0)
        uv_timer_start(&c->timer, timer_cb, c->timeout_ms, 0);
    else
        uv_timer_stop(&c->timer);
}

void net_conn_set_timeout(net_conn *c, uint64_t idle_ms)
{
    c->timeout_ms = idle_ms;
    rearm_timer(c);
}

static void deadline_cb(uv_timer_t *t)
{
    net_conn *c = t->data;
    /* Also while resolving or connecting: a connect has a deadline too. */
    if (c->state == CONN_CLOSED || c->state == CONN_DRAINING || c->state == CONN_LINGER)
        return;
    snprintf(c->error, sizeof(c->error), "deadline of %llu ms passed",
             (unsigned long long)c->deadline_ms);
    c->error_code = NET_EDEADLINE;
    dispatch(c, NET_EV_TIMEOUT);
}

void net_conn_set_deadline(net_conn *c, uint64_t ms)
{
    if (c->state == CONN_CLOSED || c->state == CONN_DRAINING || c->state == CONN_LINGER)
        return;
    c->deadline_ms = ms;
    if (ms > 0)
        uv_timer_start(&c->deadline, deadline_cb, ms, 0);
    else
        uv_timer_stop(&c->deadline);
}

/* ---- output bound ---------------------------------------------------------- */

/* Queued output with the bookkeeping of each write request: a flood of
 * small replies costs more than its bytes. */
static size_t output_cost(const net_conn *c)
{
    return c->out_pending + c->out_reqs * sizeof(uv_write_t) + c->tls_queued_len;
}

static void output_grew(net_conn *c)
{
    if (c->out_high > 0 && !c->out_blocked && output_cost(c) > c->out_high) {
        c->out_blocked = true;
        update_reading(c);
    }
}

static void output_shrank(net_conn *c)
{
    if (!c->out_blocked || (c->out_high > 0 && output_cost(c) > c->out_low))
        return;
    c->out_blocked = false;
    update_reading(c);
    if (c->state != CONN_OPEN)
        return;
    if (!c->paused && (c->in_len > 0 || tls_has_buffered(c) || (c->eof && !c->eof_sent)))
        schedule_deferred(c);
}

void net_conn_set_output_limits(net_conn *c, size_t high, size_t low)
{
    c->out_high = high;
    c->out_low = low < high ? low : high / 2;
    output_shrank(c);
    output_grew(c);
}

bool net_conn_output_blocked(const net_conn *c) { return c->out_blocked; }

/* ---- output --------------------------------------------------------------- */

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    net_conn *c = w->conn;
    c->out_pending -= w->len;
    c->out_reqs--;
    OPENSSL_cleanse(w->data, w->len);
    free(w);
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        if (c->sock_error == 0)
            c->sock_error = status;
        fail(c, status, "write: %s", uv_strerror(status));
        return;
    }
    output_shrank(c);
    if (c->state == CONN_CLOSED)
        return;
    if (c->out_pending == 0 && c->tls_queued_len == 0) {
        if (c->state == CONN_DRAINING)
            begin_linger(c);
        else
            dispatch(c, NET_EV_DRAINED);
    }
}

/* The kernel refused a write: the connection is broken (reset by the
 * peer, ...). Not a byte more goes to the socket - a second write(2) would
 * be EPIPE and SIGPIPE (admin_http CI: a client read part of a reply and
 * closed, the rest of the reply met the RST, and the retry through
 * uv_write killed the daemon). The owner hears NET_EV_ERROR on the next
 * loop turn, exactly as from a queued write that failed; the write itself
 * returns 0 as a queued one does (a caller that closes on a failed write
 * from deep inside its input loop must not learn it there). */
static int write_failed(net_conn *c, int code)
{
    c->sock_error = code;
    c->sock_error_due = true;
    c->drain_pending = false;
    schedule_deferred(c);
    return 0;
}

/* Hands bytes to the kernel at once when nothing is queued (no copy: the
 * common case for a relay), and what it does not take to libuv (copied). */
static int raw_write(net_conn *c, const void *data, size_t len)
{
    if (c->sock_error != 0) /* dropped; failed, once the owner was told */
        return c->sock_error_due ? 0 : c->sock_error;
    if (len == 0)
        return 0;
    if (c->out_reqs == 0 && c->state == CONN_OPEN) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n < 0 && n != UV_EAGAIN)
            return write_failed(c, n);
        if (n > 0) {
            data = (const char *)data + n;
            len -= (size_t)n;
        }
        if (len == 0) {
            /* no write callback will say so: tell on the next turn */
            c->drain_pending = true;
            schedule_deferred(c);
            return 0;
        }
        /* the rest waits for the socket to take it */
    }
    struct write_req *w = malloc(sizeof(*w) + len);
    if (w == NULL)
        return UV_ENOMEM;
    w->conn = c;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done);
    if (rc < 0) {
        free(w);
        return rc;
    }
    c->out_pending += len;
    c->out_reqs++;
    output_grew(c);
    return 0;
}

/* Moves all ciphertext OpenSSL produced to the socket. */
static int tls_flush(net_conn *c)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(c->net_out)) > 0) {
        char *chunk = malloc(pending);
        if (chunk == NULL)
            return UV_ENOMEM;
        int n = BIO_read(c->net_out, chunk, (int)pending);
        int rc = n > 0 ? raw_write(c, chunk, (size_t)n) : 0;
        free(chunk);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int tls_write(net_conn *c, const void *data, size_t len)
{
    ERR_clear_error();
    const char *p = data;
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = SSL_write(c->ssl, p, chunk);
        if (n <= 0) {
            net_ssl_errors(c->error, sizeof(c->error), "TLS write");
            return NET_ETLS;
        }
        p += n;
        len -= (size_t)n;
    }
    return tls_flush(c);
}

int net_conn_write(net_conn *c, const void *data, size_t len)
{
    if (c->state != CONN_OPEN)
        return NET_ESTATE;
    switch (c->tls) {
    case TLS_OFF:
        return raw_write(c, data, len);
    case TLS_HANDSHAKE: {
        /* Held until the handshake ends; then encrypted in order. */
        if (len > SIZE_MAX - c->tls_queued_len)
            return UV_ENOMEM;
        char *grown = realloc(c->tls_queued, c->tls_queued_len + len);
        if (grown == NULL)
            return UV_ENOMEM;
        memcpy(grown + c->tls_queued_len, data, len);
        c->tls_queued = grown;
        c->tls_queued_len += len;
        output_grew(c);
        return 0;
    }
    case TLS_READY:
        return tls_write(c, data, len);
    case TLS_FAILED:
    default:
        return NET_ETLS;
    }
}

int net_conn_printf(net_conn *c, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return UV_EINVAL;
    if ((size_t)n < sizeof(small))
        return net_conn_write(c, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (big == NULL)
        return UV_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = net_conn_write(c, big, (size_t)n);
    free(big);
    return rc;
}

/* ---- input ---------------------------------------------------------------- */

const char *net_conn_input(const net_conn *c, size_t *len_r)
{
    *len_r = c->in_len;
    return c->in_len > 0 ? c->in + c->in_off : "";
}

size_t net_conn_line_len(const net_conn *c)
{
    if (c->in_len == 0)
        return 0;
    const char *lf = memchr(c->in + c->in_off, '\n', c->in_len);
    return lf == NULL ? 0 : (size_t)(lf - (c->in + c->in_off)) + 1;
}

static void update_reading(net_conn *c)
{
    /* A handshake reads on even when output is held: it needs the input. */
    /* Closing: input is read and discarded so that the kernel does not
     * answer RST while the peer still reads - not from a peer that does
     * not read at all (output held), which would only cost CPU. */
    bool want = (c->state == CONN_OPEN && !c->eof && c->in_len < c->max_input &&
                 (!input_held(c) || c->tls == TLS_HANDSHAKE)) ||
                (c->state == CONN_DRAINING && !c->eof && !c->out_blocked) ||
                (c->state == CONN_LINGER && !c->eof);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, conn_read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static bool tls_has_buffered(const net_conn *c)
{
    return c->ssl != NULL && (SSL_pending(c->ssl) > 0 || BIO_ctrl_pending(c->net_in) > 0);
}

/* Delivers NET_EV_EOF once every byte before the end has been offered. */
static void maybe_dispatch_eof(net_conn *c)
{
    if (!c->eof || c->eof_sent || input_held(c) || c->state != CONN_OPEN)
        return;
    if (c->tls == TLS_READY && c->in_len >= c->max_input)
        return; /* more plaintext may still wait inside OpenSSL */
    c->eof_sent = true;
    dispatch(c, NET_EV_EOF);
}

static void deferred_cb(uv_timer_t *t);

/* Delivery that must not happen inside the caller's stack runs on the
 * next loop turn (on `timer`; the idle timer is re-armed after it). */
static void schedule_deferred(net_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->deferred = true;
    uv_timer_start(&c->timer, deferred_cb, 0, 0);
}

/* Gives an emptied input buffer back unless it is small: idle connections
 * hold no input memory. */
static void input_shrink(net_conn *c)
{
    if (c->in_len != 0 || c->in_cap <= INPUT_KEEP_CAP || c->in_hot)
        return;
    OPENSSL_cleanse(c->in, c->in_cap);
    free(c->in);
    c->in = NULL;
    c->in_cap = 0;
    c->in_off = 0;
}

void net_conn_consume(net_conn *c, size_t n)
{
    if (n > c->in_len)
        n = c->in_len;
    c->in_off += n;
    c->in_len -= n;
    if (c->in_len == 0) {
        c->in_off = 0;
        input_shrink(c);
    }
    update_reading(c);
    /* Inside a callback, tls_process() continues by itself after it
     * returns; outside, records OpenSSL already holds need a nudge. */
    if (c->in_dispatch == 0 && c->tls == TLS_READY && !input_held(c) &&
        (tls_has_buffered(c) || (c->eof && !c->eof_sent)))
        schedule_deferred(c);
}

void net_conn_set_max_input(net_conn *c, size_t max_input)
{
    c->max_input = max_input > 0 ? max_input : DEFAULT_MAX_INPUT;
    update_reading(c);
}

void net_conn_pause(net_conn *c)
{
    c->paused = true;
    update_reading(c);
}

void net_conn_resume(net_conn *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    update_reading(c);
    if (!c->out_blocked && (c->in_len > 0 || tls_has_buffered(c) || (c->eof && !c->eof_sent)))
        schedule_deferred(c);
}

static void deferred_cb(uv_timer_t *t)
{
    net_conn *c = t->data;
    c->deferred = false;
    rearm_timer(c);
    if (c->sock_error_due && c->state == CONN_OPEN) {
        c->sock_error_due = false;
        fail(c, c->sock_error, "write: %s", uv_strerror(c->sock_error));
        return;
    }
    if (c->drain_pending && c->state == CONN_OPEN) {
        c->drain_pending = false;
        if (c->out_pending == 0 && c->tls_queued_len == 0)
            dispatch(c, NET_EV_DRAINED);
    }
    if (c->state != CONN_OPEN || input_held(c))
        return;
    if (c->in_len > 0)
        dispatch(c, NET_EV_READ);
    if (c->state != CONN_OPEN || input_held(c))
        return;
    if (c->tls == TLS_READY)
        tls_process(c);
    else
        maybe_dispatch_eof(c);
}

/* Makes room for at least `want` more bytes after the buffered input. */
static int input_reserve(net_conn *c, size_t want)
{
    if (c->in_off > 0 && c->in_off + c->in_len + want > c->in_cap) {
        memmove(c->in, c->in + c->in_off, c->in_len);
        c->in_off = 0;
    }
    if (c->in_len + want <= c->in_cap)
        return 0;
    size_t cap = c->in_cap ? c->in_cap : INPUT_MIN_CAP;
    while (cap < c->in_len + want)
        cap *= 2;
    char *grown = malloc(cap);
    if (grown == NULL)
        return UV_ENOMEM;
    if (c->in != NULL) {
        memcpy(grown, c->in + c->in_off, c->in_len);
        OPENSSL_cleanse(c->in, c->in_cap);
        free(c->in);
    }
    c->in = grown;
    c->in_off = 0;
    c->in_cap = cap;
    return 0;
}

/* libuv reads into the thread's buffer; conn_read_cb copies what came. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    net_conn *c = h->data;
    (void)suggested;
    char *rb = read_buffer();
    size_t room = READ_BUF;
    if (c->tls != TLS_OFF)
        room = TLS_READ_CHUNK; /* a record at a time: OpenSSL's BIO stays small */
    else if (c->state == CONN_OPEN)
        room = c->max_input > c->in_len ? c->max_input - c->in_len : 0;
    if (room > READ_BUF)
        room = READ_BUF;
    if (c->tls == TLS_OFF && c->state == CONN_OPEN && c->in_hot && room > 0 &&
        input_reserve(c, room) == 0) {
        /* a stream: straight into the connection's buffer */
        *buf = uv_buf_init(c->in + c->in_off + c->in_len, (unsigned)room);
        return;
    }
    *buf = uv_buf_init(rb, rb != NULL ? (unsigned)room : 0);
}

/* Appends plaintext to the input buffer (room was checked). */
static int input_append(net_conn *c, const char *data, size_t len)
{
    if (input_reserve(c, len) < 0)
        return UV_ENOMEM;
    memcpy(c->in + c->in_off + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

static void tls_handshake_step(net_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    tls_flush(c);
    if (rc == 1) {
        c->tls = TLS_READY;
        if (c->tls_queued_len > 0) {
            char *queued = c->tls_queued;
            size_t len = c->tls_queued_len;
            c->tls_queued = NULL;
            c->tls_queued_len = 0;
            int wrc = tls_write(c, queued, len);
            OPENSSL_cleanse(queued, len);
            free(queued);
            if (wrc < 0) {
                fail(c, wrc, "%s", c->error);
                return;
            }
        }
        dispatch(c, NET_EV_TLS_READY);
        return;
    }
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return;
    long verify = SSL_get_verify_result(c->ssl);
    if (verify != X509_V_OK) {
        ERR_clear_error();
        fail(c, NET_EVERIFY, "TLS handshake with %s: certificate verify failed: %s",
             c->peer, X509_verify_cert_error_string(verify));
        return;
    }
    char detail[400];
    net_ssl_errors(detail, sizeof(detail), "");
    fail(c, NET_ETLS, "TLS handshake with %s failed%s", c->peer,
         detail[0] ? detail : ": connection closed");
}

/* Reads plaintext out of OpenSSL into the input buffer until it is full or
 * OpenSSL needs more ciphertext. Returns bytes added, or -1 after fail(). */
static long tls_read_some(net_conn *c)
{
    long got = 0;
    char *plain = read_buffer();
    if (plain == NULL) {
        fail(c, UV_ENOMEM, "out of memory");
        return -1;
    }
    while (c->state == CONN_OPEN && c->in_len < c->max_input) {
        size_t room = c->max_input - c->in_len;
        if (room > TLS_READ_CHUNK)
            room = TLS_READ_CHUNK;
        ERR_clear_error();
        /* The thread's buffer is free here: its ciphertext already went
         * into the BIO. A stream (hot) decrypts straight into its own
         * buffer instead. */
        bool direct = c->in_hot && input_reserve(c, room) == 0;
        char *dst = direct ? c->in + c->in_off + c->in_len : plain;
        int n = SSL_read(c->ssl, dst, (int)room);
        if (n > 0) {
            if (direct) {
                c->in_len += (size_t)n;
            } else {
                int rc = input_append(c, plain, (size_t)n);
                OPENSSL_cleanse(plain, (size_t)n);
                if (rc < 0) {
                    fail(c, UV_ENOMEM, "out of memory");
                    return -1;
                }
            }
            c->in_hot = (size_t)n == room || n >= 16384; /* a full record */
            got += n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        tls_flush(c); /* e.g. TLS 1.3 key update replies */
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            c->eof = true; /* close_notify */
            break;
        }
        char detail[400];
        net_ssl_errors(detail, sizeof(detail), "TLS read");
        if (got > 0)
            dispatch(c, NET_EV_READ);
        fail(c, NET_ETLS, "%s", detail);
        return -1;
    }
    return got;
}

/* Runs the TLS engine over buffered ciphertext: handshake, then plaintext
 * to the protocol, as long as the protocol makes room for it. */
static void tls_process(net_conn *c)
{
    if (c->tls == TLS_HANDSHAKE) {
        tls_handshake_step(c);
        if (c->tls != TLS_READY || c->state != CONN_OPEN)
            return;
    }
    if (c->tls != TLS_READY)
        return;
    for (;;) {
        long got = tls_read_some(c);
        if (got < 0)
            return;
        update_reading(c);
        if (got > 0 && !input_held(c))
            dispatch(c, NET_EV_READ);
        if (c->state != CONN_OPEN || input_held(c))
            return;
        /* The callback consumed: what OpenSSL still holds comes next. */
        if (got == 0 || c->in_len >= c->max_input || !tls_has_buffered(c))
            break;
    }
    maybe_dispatch_eof(c);
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    net_conn *c = stream->data;
    if (c->state != CONN_OPEN && c->state != CONN_DRAINING && c->state != CONN_LINGER)
        return;
    if (nread == 0)
        return;
    if (c->state == CONN_DRAINING || c->state == CONN_LINGER) {
        /* Closing: input is read only so the kernel never answers RST. */
        if (nread < 0) {
            c->eof = true;
            update_reading(c);
            if (c->state == CONN_LINGER)
                conn_shutdown_handles(c);
        }
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF) {
            c->eof = true;
            update_reading(c);
            if (c->tls == TLS_HANDSHAKE) {
                fail(c, NET_ETLS, "TLS handshake with %s: connection closed by peer", c->peer);
                return;
            }
            if (c->tls == TLS_READY)
                tls_process(c);
            else
                maybe_dispatch_eof(c);
            return;
        }
        if (nread != UV_ENOBUFS) /* the socket's own error, not our buffer's */
            c->sock_error = (int)nread; /* a write after it: EPIPE, SIGPIPE */
        fail(c, (int)nread, "read: %s", uv_strerror((int)nread));
        return;
    }
    rearm_timer(c);
    if (c->tls == TLS_OFF) {
        if (c->in != NULL && buf->base == c->in + c->in_off + c->in_len) {
            c->in_len += (size_t)nread; /* read in place (hot) */
        } else {
            int rc = input_append(c, buf->base, (size_t)nread);
            OPENSSL_cleanse(buf->base, (size_t)nread);
            if (rc < 0) {
                fail(c, rc, "out of memory");
                return;
            }
        }
        c->in_hot = (size_t)nread == buf->len;
        update_reading(c);
        if (!input_held(c))
            dispatch(c, NET_EV_READ);
        return;
    }
    if (c->tls == TLS_FAILED)
        return;
    int wn = BIO_write(c->net_in, buf->base, (int)nread);
    OPENSSL_cleanse(buf->base, (size_t)nread);
    if (wn != (int)nread) {
        fail(c, UV_ENOMEM, "TLS: cannot buffer input");
        return;
    }
    tls_process(c);
}

static void conn_start_reading(net_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    set_peer_name(c);
    update_reading(c);
    rearm_timer(c);
}

/* ---- TLS start ------------------------------------------------------------ */

static bool is_ip_literal(const char *name)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

int net_conn_start_tls(net_conn *c, net_tls *tls, const char *server_name)
{
    if (c->state != CONN_OPEN || c->tls != TLS_OFF)
        return NET_ESTATE;
    ERR_clear_error();
    c->ssl = SSL_new(net_tls_ctx(tls));
    if (c->ssl == NULL)
        return UV_ENOMEM;
    c->net_in = BIO_new(BIO_s_mem());
    c->net_out = BIO_new(BIO_s_mem());
    if (c->net_in == NULL || c->net_out == NULL) {
        BIO_free(c->net_in);
        BIO_free(c->net_out);
        SSL_free(c->ssl);
        c->ssl = NULL;
        c->net_in = c->net_out = NULL;
        return UV_ENOMEM;
    }
    BIO_set_mem_eof_return(c->net_in, -1);
    SSL_set_bio(c->ssl, c->net_in, c->net_out);
    c->tls_server = net_tls_is_server(tls);
    if (c->tls_server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        if (server_name != NULL && server_name[0] != '\0') {
            bool ip = is_ip_literal(server_name);
            if (!ip)
                SSL_set_tlsext_host_name(c->ssl, server_name);
            if (net_tls_verifies(tls)) {
                X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
                int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name)
                            : X509_VERIFY_PARAM_set1_host(param, server_name, 0);
                if (ok != 1)
                    return UV_EINVAL;
            }
        } else if (net_tls_verifies(tls)) {
            /* Verifying a chain without a name would accept any
             * certificate the CA ever issued. */
            return UV_EINVAL;
        }
    }
    /* STARTTLS injection: nothing received in the clear may be read as if
     * it came through TLS. */
    c->in_off = c->in_len = 0;
    c->tls = TLS_HANDSHAKE;
    if (!c->tls_server)
        tls_handshake_step(c); /* sends ClientHello */
    update_reading(c);
    return 0;
}

/* ---- connect -------------------------------------------------------------- */

static void try_next_addr(net_conn *c);

/* The failed attempt's handle has closed: retry with a fresh one. */
static void reinit_tcp_cb(uv_handle_t *h)
{
    net_conn *c = h->data;
    if (c->state == CONN_CLOSED) {
        handle_closed(h);
        return;
    }
    uv_tcp_init(c->loop, &c->tcp);
    c->tcp.data = c;
    try_next_addr(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
    net_conn *c = req->data;
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        if (c->next_addr != NULL) {
            uv_close((uv_handle_t *)&c->tcp, reinit_tcp_cb);
            return;
        }
        fail(c, status, "connect to port %u: %s", c->port, uv_strerror(status));
        return;
    }
    c->state = CONN_OPEN;
    conn_start_reading(c);
    dispatch(c, NET_EV_CONNECTED);
}

static void try_next_addr(net_conn *c)
{
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, ai->ai_addr, connect_cb);
    if (rc < 0) {
        if (c->next_addr != NULL) {
            try_next_addr(c);
            return;
        }
        fail(c, rc, "connect: %s", uv_strerror(rc));
    }
}

static void resolve_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    net_conn *c = req->data;
    c->resolving = false;
    if (c->state == CONN_CLOSED) {
        if (res != NULL)
            uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || res == NULL) {
        fail(c, status, "resolve: %s", uv_strerror(status));
        return;
    }
    c->addrs = res;
    c->next_addr = res;
    c->state = CONN_CONNECTING;
    try_next_addr(c);
}

static void deferred_error_cb(uv_timer_t *t)
{
    net_conn *c = t->data;
    c->state = CONN_CONNECTING;
    dispatch(c, NET_EV_ERROR);
}

net_conn *net_connect(uv_loop_t *loop, const char *host, uint16_t port,
                      net_conn_cb cb, void *arg)
{
    net_conn *c = conn_alloc(loop);
    if (c == NULL)
        return NULL;
    c->cb = cb;
    c->cb_arg = arg;
    c->port = port;
    c->state = CONN_RESOLVING;
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->resolve_req.data = c;
    c->resolving = true;
    int rc = uv_getaddrinfo(loop, &c->resolve_req, resolve_cb, host, service, &hints);
    if (rc < 0) {
        /* Reported on the next loop turn, like any other connect failure. */
        c->resolving = false;
        snprintf(c->error, sizeof(c->error), "resolve %s: %s", host, uv_strerror(rc));
        c->error_code = rc;
        uv_timer_start(&c->timer, deferred_error_cb, 0, 0);
    }
    return c;
}

/* ---- accept --------------------------------------------------------------- */

net_conn *net_conn_new_accepted(uv_loop_t *loop, uv_stream_t *server, int *err_r)
{
    net_conn *c = conn_alloc(loop);
    if (c == NULL) {
        *err_r = UV_ENOMEM;
        return NULL;
    }
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        *err_r = rc;
        conn_shutdown_handles(c);
        return NULL;
    }
    c->state = CONN_OPEN;
    conn_start_reading(c);
    return c;
}
