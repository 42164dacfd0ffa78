/* smtp_session: the proxy's SMTP server side, one per client connection.
 *
 * The session is a server to the client and, through its own smtp_client,
 * a client to the upstream server ("terminate, don't splice"):
 *
 *  - the greeting is sent once the upstream connection is set up, so that
 *    EHLO can advertise what upstream honours (SIZE less the encryption
 *    expansion, 8BITMIME, SMTPUTF8, DSN, AUTH PLAIN/LOGIN) besides what
 *    the proxy itself implements (PIPELINING, ENHANCEDSTATUSCODES,
 *    CHUNKING, STARTTLS);
 *  - AUTH is relayed line by line to upstream, which decides; nothing of it
 *    is stored or logged;
 *  - MAIL and each RCPT are relayed live, so upstream's verdict on a sender
 *    or recipient reaches the client at that command; before relaying RCPT
 *    the policy hook is asked and may refuse the recipient there;
 *  - the message (DATA dot-unstuffed, or BDAT chunks reassembled) goes to
 *    a spool with Bcc header fields dropped and a Received: trace field
 *    prepended; then the message hook takes over (grouping, keys,
 *    encryption) and answers with smtp_session_deliver() or
 *    smtp_session_fail(); the client's reply to DATA comes only after
 *    upstream accepted every group. Meanwhile the connection is still read
 *    (into its bounded buffer, not dispatched): a client that closes or
 *    resets it before that reply ends the session at once, and the closed
 *    hook cancels the hook's work (nobody would hear a 250).
 *
 * States (smtp_session_internal.h; logged on every transition, at debug
 * level):
 *   UPSTREAM -> HELO -> READY <-> (TLS);
 *   READY -> AUTH_UPSTREAM <-> AUTH_CLIENT -> READY;
 *   READY -> MAIL_UPSTREAM -> MAIL -> RCPT_UPSTREAM -> RCPT
 *         -> DATA | BDAT [-> CHUNKED -> BDAT] -> PROCESSING -> DELIVERING
 *         -> READY;
 *   a command state -> SKIP_LINE -> back; BDAT refused: -> BDAT_DISCARD
 *   -> back; any -> CLOSING. */
#ifndef QUMAIL_SMTP_SESSION_H
#define QUMAIL_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net.h"
#include "smtp_client.h"

typedef struct smtp_session smtp_session;

struct smtp_session_config {
    const char *hostname;        /* banner, EHLO and Received: name */
    const char *listener;        /* listener name for logs */
    net_tls *tls_ctx;            /* server context; NULL: no TLS */
    bool implicit_tls;           /* start TLS at once (else STARTTLS offered
                                    when tls_ctx is set) */
    bool gateway;                /* relay for trusted peers, no AUTH */
    bool trusted;                /* the peer is in trusted_networks */
    bool require_tls_for_auth;
    bool trace_header;
    uint64_t max_message_size;   /* what we accept from the client */
    uint32_t max_recipients;
    uint32_t max_line_length;    /* command lines and DATA lines, with CRLF */
    uint64_t command_timeout_ms;  /* idle, and the whole of a command line
                                     or of an AUTH exchange */
    uint64_t data_timeout_ms;     /* idle in DATA/BDAT, and the grace of a
                                     body before data_min_rate applies */
    uint64_t handshake_timeout_ms; /* TLS handshake; 0: 30 s (at most
                                      command_timeout) */
    uint64_t data_min_rate;       /* bytes/s a body must average after the
                                     grace; 0: 1024 */
    const char *spool_dir;       /* NULL: $TMPDIR */
    struct smtp_client_config upstream;
};

/* Who owns what passes through the hooks:
 *  - rcpt: addr is borrowed for the call. The hook fills the verdict; an
 *    accepted verdict's data becomes the session's (smtp_rcpt.data) and
 *    comes back through rcpt_free exactly once (transaction reset, refused
 *    upstream, session end).
 *  - message: struct smtp_message and everything it points at (id, from,
 *    rcpts and their strings and data, headers) are the session's,
 *    borrowed until the hook answers (smtp_session_deliver or
 *    smtp_session_fail) or the closed hook runs; the hook copies what it
 *    keeps. fd is the session's spool: dup(2) it to keep it.
 *  - smtp_session_deliver: the array d and each rcpt_index array stay the
 *    caller's; the session copies them during the call (also when the call
 *    fails) and keeps no pointer into them. Each delivery's fd stays the
 *    caller's and must stay open until the delivered callback, or until
 *    the closed hook (after it the session reads no fd).
 *  - delivered callback: res and res->text are valid during the call only.
 *  - smtp_session_fail: enh and text are borrowed for the call. */

/* Policy verdict for one recipient. */
struct smtp_rcpt_verdict {
    bool accept;
    int code;              /* refusal: 4xx or 5xx */
    char enh[16];          /* refusal: "5.7.1" */
    char text[256];        /* refusal: human reason */
    void *data;            /* accepted: owned by the hooks (rcpt_free) */
};

struct smtp_rcpt {
    char *addr;            /* as given, without <> */
    char *dsn;             /* NOTIFY=/ORCPT= parameters, raw, or NULL */
    void *data;            /* the verdict's data */
};

/* The message handed to the message hook: the session's, valid until the
 * session is told the outcome (smtp_session_deliver/smtp_session_fail) or
 * closes - after which the spool is reused. */
struct smtp_message {
    const char *id;         /* 12 hex digits, also in Received: and logs */
    const char *from;       /* "" for the null sender */
    const struct smtp_rcpt *rcpts;
    size_t n_rcpts;
    int fd;                 /* the spooled message (seekable, read with pread) */
    uint64_t size;
    /* The header block as spooled (Bcc dropped, blank line included), or
     * NULL when it was larger than the session keeps (16 KiB): then read
     * it from fd. */
    const char *headers;
    size_t headers_len;
    bool authenticated;
    /* Who authenticated (escaped for a log line), NULL when the AUTH
     * exchange named nobody or there was none; authzid: PLAIN's, when
     * given and different. */
    const char *auth_user, *auth_authzid;
    const char *peer;
};

/* One upstream transaction the hook asks for (the caller's; copied by
 * smtp_session_deliver). */
struct smtp_delivery {
    const size_t *rcpt_index;  /* indices into smtp_message.rcpts (copied) */
    size_t n_rcpt;
    int fd;                    /* the copy to send: the caller's, open until
                                  the delivered callback or closed hook */
    uint64_t size;
};

struct smtp_delivery_result {
    size_t n_done;         /* deliveries accepted upstream, in order */
    size_t n_total;
    int code;              /* the reply the client got */
    char enh[16];
    const char *text;
    const char *queue_ids; /* upstream's queue ids of the accepted copies, in
                              order, comma-separated ("queued as X" in its
                              250); "" when it named none */
};

typedef void (*smtp_delivered_cb)(smtp_session *s,
                                  const struct smtp_delivery_result *res,
                                  void *arg);

struct smtp_session_hooks {
    /* Synchronous policy lookup for one recipient. */
    void (*rcpt)(void *ctx, smtp_session *s, const char *addr,
                 struct smtp_rcpt_verdict *v);
    void (*rcpt_free)(void *ctx, void *data);
    /* A message was received in full; answer later with
     * smtp_session_deliver() or smtp_session_fail(). */
    void (*message)(void *ctx, smtp_session *s, const struct smtp_message *m);
    /* The session is gone (after this, s is invalid). The hook must stop
     * any work for it before returning (the message's fd is closed). */
    void (*closed)(void *ctx, smtp_session *s);
};

/* Takes over an accepted connection. NULL on failure (no memory, no spool
 * directory, TLS refused to start); the connection is then closed. */
smtp_session *smtp_session_new(uv_loop_t *loop, net_conn *conn,
                               const struct smtp_session_config *cfg,
                               const struct smtp_session_hooks *hooks,
                               void *hooks_ctx);
/* Closes at once (daemon shutdown). The closed hook runs. */
void smtp_session_close(smtp_session *s);

/* The message hook's answers. deliver: runs the transactions in order (the
 * live one when a single delivery covers every recipient), replies to the
 * client, then calls cb; -1 (cb never called, nothing kept) when n is 0,
 * an index is out of range, no message is waiting, or out of memory.
 * fail: replies code/enh/text and resets upstream. Either may end the
 * session before returning when the client has left (the closed hook then
 * runs inside the call). */
int smtp_session_deliver(smtp_session *s, const struct smtp_delivery *d,
                         size_t n, smtp_delivered_cb cb, void *arg);
void smtp_session_fail(smtp_session *s, int code, const char *enh,
                       const char *text);

const char *smtp_session_id(const smtp_session *s);     /* connection id */
/* A transaction is open (MAIL given, or a message being read, protected or
 * delivered): closing now would cut it. Used to drain on SIGTERM. */
bool smtp_session_busy(const smtp_session *s);
const char *smtp_session_peer(const smtp_session *s);

/* Largest message the proxy accepts given upstream's SIZE (0: unknown) and
 * its own limit: upstream less the expansion of base64 (4/3 with CRLF every
 * 76 characters) and 64 KiB of headers and control part. */
uint64_t smtp_size_after_expansion(uint64_t upstream_size, uint64_t own_limit);

#endif
