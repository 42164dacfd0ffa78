/* imap_client: the proxy's connection to the upstream IMAP server.
 *
 * Setup (before the owner hears anything): connect; implicit TLS or, after
 * the greeting, STARTTLS (certificate and host name verified unless the
 * TLS context says otherwise); CAPABILITY (always again after TLS); when
 * the upstream trusts the proxy, ID with the client's address
 * (x-originating-ip/-port, x-connected-ip/-port, as Dovecot's own proxy
 * sends it). Then `ready` reports the greeting and capabilities.
 *
 * After that the owner drives it:
 *  - imap_client_cmd_new() registers a command in flight under its tag;
 *    its tagged response and the continuations meant for it go to the
 *    command's callback; the command ends with its tagged response;
 *  - imap_client_send() writes bytes of a command; imap_client_expect()
 *    says a continuation ("+") is due after what was sent so far: relayed
 *    to the owner (RELAY: the real client answers it; RESUME: the proxy
 *    continues on its own), or consumed here (RELEASE: a synchronizing
 *    literal the proxy already accepted from its client; bytes sent after
 *    it are held until the "+" and dropped if the command ends first);
 *  - every other response event (untagged, data, FETCH items) goes to
 *    `response`, in order; `batch_end` follows each run of events taken
 *    from one read, before the input is consumed, so the owner may relay
 *    spans of the input without copying them first.
 * Events point into the input buffer and are valid during the callback
 * only. Nothing here logs. */
#ifndef QUMAIL_IMAP_CLIENT_H
#define QUMAIL_IMAP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "imap_parser.h"
#include "imap_resp.h"
#include "net.h"

enum imap_upstream_tls {
    IMAP_UPSTREAM_PLAIN = 0, /* loopback or a trusted network only */
    IMAP_UPSTREAM_STARTTLS,  /* required: setup fails without it */
    IMAP_UPSTREAM_IMPLICIT,  /* TLS from the first byte (993) */
};

struct imap_client_config {
    const char *host;
    uint16_t port;
    enum imap_upstream_tls tls;
    net_tls *tls_ctx;          /* client context; required unless PLAIN */
    const char *server_name;   /* SNI and the name verified; NULL: host */
    uint64_t setup_timeout_ms; /* connect to ready (0: 30 s) */
    uint64_t command_timeout_ms; /* silence while a command awaits its
                                    response, IDLE excepted (0: 5 min) */
    uint64_t idle_timeout_ms;  /* silence with nothing in flight or in
                                  IDLE (0: none) */
    bool send_client_id;       /* ID with x-originating-ip (the upstream
                                  trusts the proxy's address) */
    const char *client_addr;   /* "ip:port" / "[ip6]:port" for that ID */
    const char *local_addr;    /* the address the client connected to */
    struct imap_parser_limits limits;
};

typedef struct imap_client imap_client;
typedef struct imap_client_cmd imap_client_cmd;

enum imap_cont_mode {
    IMAP_CONT_RELAY,   /* pass the "+" to the real client */
    IMAP_CONT_RESUME,  /* the proxy continues (callback, not relayed) */
    IMAP_CONT_RELEASE, /* consumed here; held bytes are sent */
};

/* A tagged response (ev->kind TAGGED; the command then ends) or a
 * continuation for this command (CONTINUATION, with its mode). */
typedef void (*imap_client_cmd_cb)(imap_client *c, imap_client_cmd *cmd,
                                   const struct imap_resp_event *ev, enum imap_cont_mode mode,
                                   void *arg);

struct imap_client_events {
    /* Setup finished: ok, or failed with a reason (upstream refused,
     * TLS failure, timeout...). Called once. */
    void (*ready)(void *arg, imap_client *c, bool ok, const char *error);
    /* An untagged or data event after setup. Return 0 to go on, 1 to
     * stop reading after it (imap_client_resume continues), -1 when the
     * owner closed everything. */
    int (*response)(void *arg, imap_client *c, const struct imap_resp_event *ev);
    void (*batch_end)(void *arg, imap_client *c);
    /* The connection ended after setup: at a response boundary or not
     * (mid_response: a client was being sent a partial response). */
    void (*closed)(void *arg, imap_client *c, bool mid_response, const char *why);
    /* Output queued for the upstream was all written. */
    void (*drained)(void *arg, imap_client *c);
};

imap_client *imap_client_new(uv_loop_t *loop, const struct imap_client_config *cfg,
                             const struct imap_client_events *events, void *arg);
/* Closes at once; no callback runs afterwards. Clears *c. */
void imap_client_free(imap_client **c);

/* After ready: the greeting's status (OK or PREAUTH), its text without a
 * response code, and the latest capability list (atoms separated by
 * spaces, as the server sent them). */
enum imap_status imap_client_greeting_status(const imap_client *c);
const char *imap_client_greeting_text(const imap_client *c);
const char *imap_client_capabilities(const imap_client *c);
void imap_client_set_capabilities(imap_client *c, const char *caps, size_t len);
bool imap_client_has_cap(const imap_client *c, const char *cap);
bool imap_client_is_tls(const imap_client *c);

/* Registers a command in flight (tag copied; at most 64 bytes). */
imap_client_cmd *imap_client_cmd_new(imap_client *c, const char *tag, size_t tag_len,
                                     imap_client_cmd_cb cb, void *arg);
const char *imap_client_cmd_tag(const imap_client_cmd *cmd);
/* Number of commands in flight. */
size_t imap_client_inflight(const imap_client *c);
/* A fresh tag for the proxy's own commands, unlike any in flight. */
void imap_client_new_tag(imap_client *c, char *buf, size_t size);

int imap_client_send(imap_client *c, imap_client_cmd *cmd, const void *data, size_t len);
int imap_client_expect(imap_client *c, imap_client_cmd *cmd, enum imap_cont_mode mode);
/* Bytes queued for the upstream, held ones included. */
size_t imap_client_output_pending(const imap_client *c);

/* The command in flight is IDLE: silence is normal (keepalives come
 * every few minutes at most), idle_timeout applies, not command_timeout. */
void imap_client_set_idling(imap_client *c, bool idling);

/* From inside `response` for a DATA_BEGIN: the rest of that response is
 * only relayed (imap_resp_relay_rest). */
void imap_client_relay_rest(imap_client *c);

/* Backpressure: stop / restart handing events to the owner. */
void imap_client_pause(imap_client *c);
void imap_client_resume(imap_client *c);

uint64_t imap_client_bytes_in(const imap_client *c);
uint64_t imap_client_bytes_out(const imap_client *c);

#endif
