/* imap_session: the proxy's IMAP server side, one per client connection.
 *
 * A faithful pass-through: the session is a server to its client and,
 * through its imap_client, a client of the upstream server. Commands are
 * relayed with their tags as the client wrote them (pipelined, in order);
 * every response is relayed as the server wrote it, copied once from the
 * upstream's input into the client's output. What the proxy changes:
 *  - capabilities (greeting, CAPABILITY, [CAPABILITY ...] codes, ENABLE,
 *    ENABLED) are filtered to what the proxy honours (imap_capability.h);
 *    STARTTLS and LOGINDISABLED are the proxy's own;
 *  - commands the proxy does not honour are answered by it (tagged BAD or
 *    NO) and never reach the upstream; so are bad syntax and over-long
 *    lines or literals, as Dovecot answers them;
 *  - ID loses the client's x-originating-* / x-connected-* fields (the
 *    upstream may trust the proxy's word for them) and, when configured,
 *    the upstream learns the real client address;
 *  - a FETCH can be claimed by the FETCH hooks below (issue 12: decrypt on
 *    FETCH), which then see each response item by item.
 * Credentials pass through and are never stored or logged (LOGIN with
 * quoted or literal arguments; AUTHENTICATE PLAIN, LOGIN, XOAUTH2,
 * OAUTHBEARER with SASL-IR and continuations); the identity the upstream
 * accepted is kept for logs and the hooks.
 *
 * States (one enum, one transition function, logged at debug):
 *   TLS -> CONNECTING -> NOT_AUTH -> AUTH_WAIT <-> AUTHENTICATE
 *   AUTH_WAIT -> AUTHENTICATED <-> SELECTED; IDLE, APPEND, APPEND_WAIT and
 *   DISCARD return to AUTHENTICATED or SELECTED; LOGOUT; CLOSING.
 * One log line per session at its end: user, client address, duration,
 * bytes each way, commands, outcome; every line carries the session id. */
#ifndef QUMAIL_IMAP_SESSION_H
#define QUMAIL_IMAP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "imap_client.h"
#include "imap_cmd.h"
#include "imap_parser.h"
#include "net.h"

typedef struct imap_session imap_session;

#define IMAP_MIN_IDLE_TIMEOUT_MS (30ull * 60 * 1000) /* RFC 3501 5.4 */

struct imap_session_config {
    const char *listener;          /* name for logs */
    net_tls *tls_ctx;              /* server context; NULL: no TLS */
    bool implicit_tls;             /* TLS from the first byte (993) */
    bool require_tls_for_auth;     /* LOGINDISABLED, AUTHENTICATE refused
                                      until TLS (unless implicit) */
    uint64_t login_timeout_ms;     /* before authentication (0: 180 s) */
    uint64_t idle_timeout_ms;      /* authenticated; at least 30 min */
    uint64_t command_timeout_ms;   /* inside a command or literal (0: 300 s) */
    size_t max_line;               /* command bytes outside literals (0: 64 KiB) */
    size_t max_command;            /* a command with its literals, APPEND
                                      excepted (0: 256 KiB) */
    uint64_t max_append;           /* APPEND literal (0: no own limit) */
    uint64_t max_protected_append; /* an APPEND to a protected mailbox, all
                                      its messages together (held in memory
                                      files); 0: max_append, else 64 MiB */
    size_t output_high_water;      /* pause the other side above (0: 256 KiB) */
    struct imap_client_config upstream;
};

/* ---- FETCH hooks ------------------------------------------------------------
 *
 * How a rewriter (issue 12) sits between the upstream's FETCH responses and
 * the client. All optional; without `command` every FETCH is relayed as a
 * byte span (the fast path).
 *
 *  command(f, &rewrite): a FETCH / UID FETCH the client sent, parsed. NULL:
 *      relay it and its responses untouched. Otherwise a context claims it;
 *      *rewrite may be set to a malloc'd replacement for everything after
 *      "FETCH " (sequence set, items, modifiers; quoted strings only, no
 *      literals), which is what the upstream then gets; the session frees it.
 *  response_begin(cmd, seq): a `* seq FETCH (` of a claimed command. While
 *      one is in flight, every untagged FETCH goes to the oldest claimed
 *      command - including flag updates (FLAGS/UID/MODSEQ only): pass them.
 *  item(cmd, name, index): an item of it ("UID", "BODY[HEADER.FIELDS
 *      (FROM)]<0>": imap_resp's canonical name). PASS relays it verbatim,
 *      DROP discards it, TAKE hands its value to value() instead.
 *  value(cmd, tok, last): a TAKEn item's value, token by token (literal
 *      data in chunks as it arrives; last on the value's final token).
 *  response_end(cmd): CONTINUE closes the response now; WAIT keeps it open
 *      and stops reading the upstream until imap_session_fetch_resume().
 *  command_end(cmd, status): the tagged response arrived (it is relayed
 *      right after); free the context here.
 *
 * Preparing a FETCH with the proxy's own commands. A rewriter that must
 * read something first (is each message encrypted? the bytes of those
 * not in its cache) cannot do it while the client's FETCH is in flight:
 * its own command would queue behind that FETCH at the server, whose
 * responses it holds - a deadlock. So command() may set *prepare_r: the
 * session then holds the client's FETCH (state FETCH_PREP, client input
 * paused; a FETCH asking for content starts only when nothing else is in
 * flight, so the server's sequence numbers cannot change meanwhile), calls
 * prepare(cmd), and the hook sends its own FETCH commands with
 * imap_session_own_fetch().
 * Their untagged FETCH responses go through response_begin / item /
 * value / response_end with the `own` context as cmd (items PASSed reach
 * the client: flag updates the server sends along), their tagged response
 * to command_end(own, status), never to the client; other untagged
 * responses (EXISTS, RECENT) are relayed. When ready the hook calls
 * imap_session_fetch_release(): the client's FETCH goes upstream (with
 * *rewrite_r, which is then required) and its responses follow as above.
 * While a response is open the hook adds items with
 * imap_session_fetch_item() and streams long values with
 * imap_session_fetch_write(); the session writes `* seq FETCH (`, the
 * spaces between items and `)` CRLF. Flow control for long values:
 * imap_session_client_pending(). */
enum imap_fetch_verdict { IMAP_FETCH_PASS, IMAP_FETCH_DROP, IMAP_FETCH_TAKE };
enum imap_fetch_flow { IMAP_FETCH_CONTINUE, IMAP_FETCH_WAIT };

struct imap_fetch_hooks {
    void *(*command)(void *ctx, imap_session *s, const struct imap_fetch *f, char **rewrite_r,
                     bool *prepare_r);
    void (*prepare)(void *ctx, imap_session *s, void *cmd);
    void (*response_begin)(void *ctx, imap_session *s, void *cmd, uint32_t seq);
    enum imap_fetch_verdict (*item)(void *ctx, imap_session *s, void *cmd, const char *name,
                                    unsigned index);
    void (*value)(void *ctx, imap_session *s, void *cmd, const struct imap_token *tok, bool last);
    enum imap_fetch_flow (*response_end)(void *ctx, imap_session *s, void *cmd);
    void (*command_end)(void *ctx, imap_session *s, void *cmd, enum imap_status status);
    /* An untagged SEARCH, ESEARCH or SORT response to an own command,
     * event by event (DATA_BEGIN, DATA_TOKEN..., DATA_END); not relayed. */
    void (*own_data)(void *ctx, imap_session *s, void *own, const struct imap_resp_event *ev);
};

/* SEARCH / UID SEARCH / SORT / UID SORT (issue 13): command() sees the
 * parsed arguments (args[first..]) and returns NULL to relay the command
 * unchanged, or a context and *prepare_r = true to hold it (as a FETCH is
 * held: FETCH_PREP, own commands) until the hook answers it with
 * imap_session_prep_answer(). prepare(ctx) runs once it is held;
 * command_end(ctx, BYE) when the session ends first, command_end(ctx, OK)
 * when the session relays it after all (something else in flight). */
struct imap_search_hooks {
    void *(*command)(void *ctx, imap_session *s, enum imap_verb verb, bool uid,
                     const struct imap_args *args, size_t first, bool *prepare_r);
    void (*prepare)(void *ctx, imap_session *s, void *cmd);
    void (*command_end)(void *ctx, imap_session *s, void *cmd, enum imap_status status);
};

/* ---- APPEND hooks (issue 13) ---------------------------------------------
 *
 * How an encrypter sits between a client's APPEND and the upstream; the
 * session knows nothing of the crypto (proxy/services wires
 * proxy/protect/append.h and mailboxes.h in). Without `mailbox` every
 * APPEND is streamed through (the fast path). With it:
 *
 *  mailbox(name, listed): is the mailbox (decoded from its quoted, atom or
 *      literal form) protected? PLAIN: stream the APPEND as today. PROTECT:
 *      the session holds the whole command (every literal in a private
 *      memory file, bounded by max_protected_append), then calls protect()
 *      for each message. ASK: only a LIST of the mailbox can tell (its
 *      SPECIAL-USE attributes are unknown): the session holds the command,
 *      sends `LIST "" name RETURN (SPECIAL-USE)` (plain `LIST "" name` when
 *      the upstream lacks LIST-EXTENDED or SPECIAL-USE) once nothing else
 *      is in flight, feeds the answer to list(), then asks again with
 *      listed = true (ASK then counts as PROTECT: fail closed).
 *  list(name, attrs, n, own): every LIST / LSUB response the session
 *      relays (own false), and those of its own LIST (own true), observed
 *      without being changed: name decoded, attributes as atoms ("\Sent",
 *      "\HasNoChildren"). A relayed response need not carry special-use
 *      attributes (LSUB, a server that sends them only when asked): only
 *      its positive news is safe to learn from.
 *  protect(in_fd, len, &code, &text): start protecting one message (the
 *      client's bytes in in_fd from offset 0, borrowed until the answer).
 *      Returns a job; the answer comes later, on the loop, never from
 *      inside this call, through imap_session_append_done(s, job, r).
 *      NULL: refused at once, *code and *text (static) for the tagged NO.
 *  cancel(job): the session is closing; the answer must still come (any
 *      status), the session waits for it.
 * A refused message (vault write failed, ...) makes the whole APPEND a
 * `tag NO [code] text`: nothing of it goes upstream. */
enum imap_append_verdict { IMAP_APPEND_PLAIN, IMAP_APPEND_PROTECT, IMAP_APPEND_ASK };

struct imap_append_result {
    int status;        /* 0: done; negative: refused (code, text) */
    int fd;            /* status 0: a memory file holding what to store,
                          read from offset 0; the session takes it. -1:
                          store the client's bytes unchanged */
    uint64_t size;     /* bytes of fd */
    const char *code;  /* refused: RFC 5530 code ("UNAVAILABLE", ...) */
    const char *text;  /* refused: human text (no content, no key bytes) */
};

struct imap_append_hooks {
    enum imap_append_verdict (*mailbox)(void *ctx, imap_session *s, const char *name,
                                        bool listed);
    void (*list)(void *ctx, imap_session *s, const char *name, const char *const *attrs,
                 size_t n_attrs, bool own);
    void *(*protect)(void *ctx, imap_session *s, int in_fd, uint64_t len, const char **code_r,
                     const char **text_r);
    void (*cancel)(void *ctx, imap_session *s, void *job);
};

struct imap_session_hooks {
    /* The upstream accepted a login; user is the identity the proxy saw
     * (LOGIN's user name, the SASL authorization or authentication id),
     * "" when unknown (PREAUTH). */
    void (*login)(void *ctx, imap_session *s, const char *user);
    struct imap_fetch_hooks fetch;
    struct imap_append_hooks append;
    struct imap_search_hooks search;
    /* The session is gone (s is invalid afterwards). Stop any work for it. */
    void (*closed)(void *ctx, imap_session *s);
};

/* Takes over an accepted connection; NULL on failure (the connection is
 * closed then). The session connects upstream at once and greets the
 * client when the upstream is ready. */
imap_session *imap_session_new(uv_loop_t *loop, net_conn *conn,
                               const struct imap_session_config *cfg,
                               const struct imap_session_hooks *hooks, void *hooks_ctx);
/* Closes at once with "* BYE <reason>" (daemon shutdown); the closed
 * hook runs. */
void imap_session_close(imap_session *s, const char *reason);

const char *imap_session_id(const imap_session *s);
const char *imap_session_peer(const imap_session *s);
const char *imap_session_user(const imap_session *s); /* "" before login */
bool imap_session_selected(const imap_session *s);

/* For FETCH hooks, inside an open response (see above). value is raw IMAP
 * ("123", "(\\Seen)", "{5}\r\nhello", "NIL"). */
int imap_session_fetch_item(imap_session *s, const char *name, const void *value, size_t len);
int imap_session_fetch_write(imap_session *s, const void *data, size_t len);
void imap_session_fetch_resume(imap_session *s);
/* During FETCH_PREP only: sends "<own tag> <command>" upstream (command:
 * "UID FETCH 4,7 (BODY.PEEK[])", no CRLF, no literals). 0, or a negative
 * code: NET_ESTATE (not preparing), UV_ENOTCONN, UV_ENOMEM. */
int imap_session_own_fetch(imap_session *s, const char *command, void *own);
/* Ends FETCH_PREP: the held FETCH goes upstream and client input resumes.
 * May be called from any hook or callback (prepare() included, not
 * command()). */
void imap_session_fetch_release(imap_session *s);
/* Ends FETCH_PREP by answering the held command itself: `untagged`
 * (complete response lines with CRLF, may be empty) and then
 * "<tag> <status> <text>". The hook's command_end does not run (it ends
 * its context itself). */
void imap_session_prep_answer(imap_session *s, const char *untagged, size_t len,
                              const char *status, const char *text);
/* During FETCH_PREP of a FETCH: what goes upstream at the release
 * instead of the rewrite command() gave (takes ownership). */
void imap_session_fetch_set_rewrite(imap_session *s, char *rewrite);
/* How many EXISTS / EXPUNGE / VANISHED responses the session relayed: a
 * hook compares two readings to know whether the mailbox's message list
 * changed between two of its commands. */
uint64_t imap_session_mailbox_changes(const imap_session *s);
/* The held command's tag (for ESEARCH's TAG). */
void imap_session_prep_tag(const imap_session *s, char *buf, size_t size);
size_t imap_session_client_pending(const imap_session *s);

/* The answer to an APPEND hook's protect() (see above); r is read during
 * the call, r->fd taken. */
void imap_session_append_done(imap_session *s, const void *job,
                              const struct imap_append_result *r);

#endif
