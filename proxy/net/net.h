/* net: TCP and TLS connections over libuv, the one transport of qumail.
 *
 * A net_conn is an opaque connection that delivers events to one callback
 * and hides TLS (OpenSSL with memory BIOs) below it: protocol code reads and
 * writes plaintext only, and STARTTLS is one call (net_conn_start_tls) on a
 * connection that was plain until then. Used by the SMTP and IMAP proxy
 * sessions, the KME simulator's HTTPS server and the KME client.
 *
 * Lifetimes: net_conn_close() may be called from inside the callback; the
 * callback is never called again for that connection and its memory is
 * freed later, on the loop. Errors are negative errno-style codes (UV_*
 * values from libuv, or NET_E* below); detail strings come through error_r
 * (caller frees) or net_conn_error().
 *
 * SIGPIPE: libuv writes with write(2), so a write after a peer's reset
 * raises SIGPIPE. Creating a connection sets SIGPIPE to ignored when it is
 * at its default (a handler the program installed is kept): no peer can
 * end a process that uses net; the write fails with EPIPE instead. */
#ifndef QUMAIL_NET_H
#define QUMAIL_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Codes beyond libuv's own (which are all > -4096). */
enum {
    NET_ETLS = -5001,       /* TLS handshake or record failure */
    NET_EVERIFY = -5002,    /* peer certificate not trusted / wrong name */
    NET_EINPUT = -5003,     /* input limit exceeded */
    NET_ETIMEDOUT = -5004,  /* idle timeout */
    NET_ESTATE = -5005,     /* call not valid in this state (e.g. TLS twice) */
    NET_EDEADLINE = -5006,  /* overall deadline (net_conn_set_deadline) passed */
};
const char *net_strerror(int code);

/* ---- TLS contexts (an SSL_CTX with qumail's settings) ------------------ */

typedef struct net_tls net_tls;

struct net_tls_config {
    bool server;             /* role of the connections using this context */
    const char *cert_file;   /* PEM chain: required for servers, optional
                                for clients (mutual TLS) */
    const char *key_file;    /* PEM private key for cert_file */
    const char *ca_file;     /* trust anchors (PEM); NULL: system store */
    /* Server: require and verify a client certificate (mutual TLS).
     * Client: verify the server's certificate chain and host name. */
    bool verify_peer;
    const char *min_version; /* "TLSv1.2" (default when NULL) or "TLSv1.3" */
    const char *ciphers;     /* TLS 1.2 cipher list; NULL: OpenSSL default */
};

/* Creates a context; on failure returns NULL and sets *error_r (caller
 * frees) to a message naming the file that could not be used. */
net_tls *net_tls_new(const struct net_tls_config *cfg, char **error_r);
void net_tls_free(net_tls **tls);

/* ---- connections -------------------------------------------------------- */

typedef struct net_conn net_conn;

enum net_event {
    NET_EV_CONNECTED,  /* outgoing TCP connection established */
    NET_EV_TLS_READY,  /* TLS handshake done and peer verified */
    NET_EV_READ,       /* more plaintext input is buffered */
    NET_EV_DRAINED,    /* every queued byte was handed to the kernel */
    NET_EV_EOF,        /* peer closed (buffered input may remain) */
    NET_EV_TIMEOUT,    /* no input within the idle timeout, or the overall
                          deadline passed (error code NET_EDEADLINE) */
    NET_EV_ERROR,      /* connect, I/O or TLS failure: net_conn_error() */
};
const char *net_event_name(enum net_event ev);

typedef void (*net_conn_cb)(net_conn *conn, enum net_event ev, void *arg);

/* Starts resolving host and connecting; the callback later gets
 * NET_EV_CONNECTED or NET_EV_ERROR. Returns NULL only when out of memory. */
net_conn *net_connect(uv_loop_t *loop, const char *host, uint16_t port,
                      net_conn_cb cb, void *arg);

/* Replaces the callback (used after accept, or to hand a connection over). */
void net_conn_set_cb(net_conn *conn, net_conn_cb cb, void *arg);

/* Begins a TLS handshake on the connection, plain until now (implicit TLS
 * right after connect/accept, or STARTTLS). Client role: server_name is sent
 * as SNI and, when the context verifies peers, checked against the
 * certificate (DNS name or IP address). Plaintext input still buffered is
 * discarded (it arrived before TLS and must not be trusted: STARTTLS
 * injection). Output queued earlier is sent in the clear first.
 * Completion: NET_EV_TLS_READY or NET_EV_ERROR. */
int net_conn_start_tls(net_conn *conn, net_tls *tls, const char *server_name);
bool net_conn_is_tls(const net_conn *conn);

/* Copies one field of the verified peer certificate's subject ("CN", "O",
 * "emailAddress", ... as OpenSSL short or long names) into buf. Returns the
 * length, or a negative code when there is no such field or no certificate.*/
int net_conn_peer_subject(const net_conn *conn, const char *field, char *buf,
                          size_t buflen);

/* Server role: the host name the client asked for with SNI, or NULL. */
const char *net_conn_server_name(const net_conn *conn);

/* Negotiated protocol and cipher ("TLSv1.3", "TLS_AES_256_GCM_SHA384"), for
 * trace headers and logs; NULL when the connection is not TLS. */
const char *net_conn_tls_version(const net_conn *conn);
const char *net_conn_tls_cipher(const net_conn *conn);

/* "127.0.0.1:4242" or "[::1]:4242"; "?" when unknown. */
const char *net_conn_peer_addr(const net_conn *conn);

/* Idle timeout on input in milliseconds; 0 disables. Re-armed on each read
 * and on each call. */
void net_conn_set_timeout(net_conn *conn, uint64_t idle_ms);

/* Overall deadline: ms milliseconds from now, whatever arrives meanwhile
 * (input does not re-arm it; the idle timeout runs independently). When it
 * passes the callback gets NET_EV_TIMEOUT once, with net_conn_error_code()
 * == NET_EDEADLINE. A new call replaces the previous deadline; 0 cancels.
 * Protocols give each phase one: a command line, a message body, a TLS
 * handshake, an authentication exchange. Time spent closing is bounded
 * separately (see net_conn_close_after_write). */
void net_conn_set_deadline(net_conn *conn, uint64_t ms);

/* Input is buffered up to max_input bytes (default 64 KiB); when the buffer
 * is full reading pauses until the caller consumes. A protocol that finds
 * no line end in a full buffer reports "line too long" itself. */
void net_conn_set_max_input(net_conn *conn, size_t max_input);
const char *net_conn_input(const net_conn *conn, size_t *len_r);
void net_conn_consume(net_conn *conn, size_t n);
/* Length of the first line including its LF, or 0 when no full line is
 * buffered yet. */
size_t net_conn_line_len(const net_conn *conn);
/* Stop / restart delivering input (backpressure from the protocol). */
void net_conn_pause(net_conn *conn);
void net_conn_resume(net_conn *conn);

/* Output bound. Once more than `high` bytes are queued (bookkeeping of each
 * queued write counted), the connection stops reading from the socket and
 * delivering input (NET_EV_READ, NET_EV_EOF) until the queue is back at
 * `low` or below; then buffered input is offered again with NET_EV_READ.
 * So a peer that sends requests and never reads the answers costs at most
 * `high` + the input buffer, for every protocol. Writes themselves are never
 * refused: a producer that writes without reading (a bulk sender) keeps its
 * queue short with net_conn_output_pending and NET_EV_DRAINED.
 * Defaults NET_OUTPUT_HIGH / NET_OUTPUT_LOW; high 0 disables the bound. */
#define NET_OUTPUT_HIGH ((size_t)256 * 1024)
#define NET_OUTPUT_LOW ((size_t)64 * 1024)
void net_conn_set_output_limits(net_conn *conn, size_t high, size_t low);
/* True while the output is above the high-water mark: a protocol loop over
 * input already buffered stops dispatching and waits for the next
 * NET_EV_READ, which comes once the queue has drained to `low`. */
bool net_conn_output_blocked(const net_conn *conn);

/* Queue output (copied). Returns 0 or a negative code when the connection
 * is closing or failed. A write the kernel refuses (the peer reset the
 * connection) returns 0, like a queued write, and NET_EV_ERROR follows on
 * the next loop turn (code UV_ECONNRESET, UV_EPIPE, ...): a socket error
 * never surfaces from inside the write that met it. From then on (and
 * after a read error) nothing more is written to the socket: writes are
 * dropped, returning 0 until NET_EV_ERROR was delivered and the error code
 * after; net_conn_close_after_write closes at once. */
int net_conn_write(net_conn *conn, const void *data, size_t len);
int net_conn_printf(net_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Bytes queued and not yet handed to the kernel. */
size_t net_conn_output_pending(const net_conn *conn);

/* Description of the last error ("TLS: certificate verify failed", ...). */
const char *net_conn_error(const net_conn *conn);
/* Code of the last error (UV_ECONNREFUSED, NET_ETLS, NET_EVERIFY,
 * NET_ETIMEDOUT, ...), 0 when there was none: classify by this, not by
 * the text. */
int net_conn_error_code(const net_conn *conn);

/* Closes now (pending output dropped) and clears *conn. Safe inside the
 * callback; the callback is not called again. */
void net_conn_close(net_conn **conn);
/* Closes once queued output is written (TLS close_notify included), then
 * half-closes and discards input until the peer's FIN; the callback is not
 * called again. Clears *conn. Bounded in time whatever the peer does: the
 * output must be written within NET_CLOSE_DRAIN_MS and the peer's FIN
 * come within NET_CLOSE_LINGER_MS after ours, else the socket is closed
 * (a TLS handshake still in progress is abandoned at once: output queued
 * for after it is dropped). */
#define NET_CLOSE_DRAIN_MS 10000
#define NET_CLOSE_LINGER_MS 2000
void net_conn_close_after_write(net_conn **conn);

/* Arbitrary per-connection pointer for the owner. */
void net_conn_set_data(net_conn *conn, void *data);
void *net_conn_get_data(const net_conn *conn);

/* ---- pump: a byte range of a file out through a connection -------------
 *
 * Streams bytes [offset, offset + length) of a file descriptor into a
 * net_conn with backpressure: it reads one chunk after the other (pread,
 * on the loop: meant for local files the proxy just wrote or decrypted,
 * which are in the page cache) only while the connection's output queue
 * is at or below high_water, so a slow peer costs at most high_water plus
 * one transformed chunk. The connection's owner drives it: net_pump_run()
 * once to start and again on every NET_EV_DRAINED, until it returns
 * NET_PUMP_DONE. An optional filter transforms the bytes on the way (SMTP
 * dot-stuffing; none for an IMAP literal, whose size is announced first).
 * The pump never closes the connection nor the fd (both stay the
 * caller's); nothing in it logs. */

typedef struct net_pump net_pump;

struct net_pump_filter {
    /* Transforms len input bytes into out, which holds at least
     * len * out_factor + out_extra bytes; returns the bytes written. */
    size_t (*chunk)(void *arg, const char *in, size_t len, char *out);
    /* After the last chunk: at most out_extra bytes into out (may be
     * NULL). */
    size_t (*end)(void *arg, char *out);
    size_t out_factor; /* >= 1 */
    size_t out_extra;
    void *arg;
};

struct net_pump_config {
    int fd;                 /* the caller's; read with pread only */
    uint64_t offset;
    uint64_t length;
    size_t chunk_size;      /* bytes read at once; 0: 64 KiB */
    size_t high_water;      /* read more only while at most this much output
                               is queued; 0: 256 KiB */
    const struct net_pump_filter *filter; /* NULL: bytes as they are */
};

enum {
    NET_PUMP_DONE = 0,      /* everything queued (the filter's end too) */
    NET_PUMP_MORE = 1,      /* waiting for NET_EV_DRAINED */
};

/* NULL when out of memory. The configuration (and the filter) are
 * copied; the filter's arg must live as long as the pump. */
net_pump *net_pump_new(net_conn *conn, const struct net_pump_config *cfg);
/* Queues what the backpressure allows. NET_PUMP_MORE, NET_PUMP_DONE, or a
 * negative code: UV_EIO (read error), UV_EOF (the file is shorter than the
 * range), or the code of a write the connection refused. After DONE or an
 * error it does nothing more. */
int net_pump_run(net_pump *pump);
/* Bytes of the range read so far. */
uint64_t net_pump_done_bytes(const net_pump *pump);
void net_pump_free(net_pump **pump);

/* ---- listeners ---------------------------------------------------------- */

typedef struct net_listener net_listener;
/* The new connection is plain; call net_conn_set_cb() before returning and
 * net_conn_start_tls() for implicit TLS. */
typedef void (*net_accept_cb)(net_listener *listener, net_conn *conn, void *arg);

/* Binds host:port (port 0 picks a free port, see net_listener_port). host is
 * a numeric address ("127.0.0.1", "::1", "0.0.0.0"). Every readable event
 * accepts until the kernel's queue is empty (libuv). NULL + *error_r on
 * failure. */
net_listener *net_listen(uv_loop_t *loop, const char *host, uint16_t port,
                         net_accept_cb cb, void *arg, char **error_r);
/* The same with a listen(2) backlog, the queue of connections not yet
 * accepted (net_listen: NET_LISTEN_BACKLOG; 0 the same; the kernel caps it
 * at net.core.somaxconn). */
#define NET_LISTEN_BACKLOG 511
net_listener *net_listen_backlog(uv_loop_t *loop, const char *host, uint16_t port,
                                 int backlog, net_accept_cb cb, void *arg,
                                 char **error_r);
uint16_t net_listener_port(const net_listener *listener);
void net_listener_close(net_listener **listener);

#endif
