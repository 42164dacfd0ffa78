/* smtp_client: the proxy's SMTP client towards the upstream server.
 *
 * One smtp_client is one upstream connection. It connects, reads the
 * greeting, says EHLO (HELO as fallback), upgrades with STARTTLS when
 * configured (required, or opportunistic when advertised), says EHLO again
 * and reports "ready" with the capabilities learnt. After that the owner
 * queues commands (one line each, replies matched in order; written at once
 * when upstream advertised PIPELINING, otherwise one at a time) and message
 * bodies (streamed from a file descriptor with dot-stuffing after a 354).
 *
 * Every queued operation's callback runs exactly once, on the loop, with
 * the reply or with a synthesized 421 4.4.2 when the connection failed; a
 * call that fails synchronously (negative return) never calls back.
 * smtp_client_free() cancels pending operations (their callbacks run with
 * cancelled = true) and sends QUIT when the connection is idle. Nothing
 * here logs; AUTH lines are wiped from memory once written. */
#ifndef QUMAIL_SMTP_CLIENT_H
#define QUMAIL_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net.h"

enum smtp_upstream_tls {
    SMTP_UPSTREAM_PLAIN = 0,
    SMTP_UPSTREAM_STARTTLS,               /* required: fail without it */
    SMTP_UPSTREAM_STARTTLS_OPPORTUNISTIC, /* when advertised */
    SMTP_UPSTREAM_IMPLICIT,               /* TLS from the first byte */
};

/* Extensions learnt from the upstream EHLO. */
enum {
    SMTP_EXT_PIPELINING = 1u << 0,
    SMTP_EXT_SIZE = 1u << 1,
    SMTP_EXT_8BITMIME = 1u << 2,
    SMTP_EXT_SMTPUTF8 = 1u << 3,
    SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 4,
    SMTP_EXT_DSN = 1u << 5,
    SMTP_EXT_CHUNKING = 1u << 6,
    SMTP_EXT_STARTTLS = 1u << 7,
    SMTP_EXT_AUTH = 1u << 8,
    SMTP_EXT_AUTH_PLAIN = 1u << 9,
    SMTP_EXT_AUTH_LOGIN = 1u << 10,
    SMTP_EXT_AUTH_XOAUTH2 = 1u << 11,     /* Google's, also Microsoft 365 */
    SMTP_EXT_AUTH_OAUTHBEARER = 1u << 12, /* RFC 7628 */
};

struct smtp_client_config {
    const char *host;
    uint16_t port;
    enum smtp_upstream_tls tls;
    net_tls *tls_ctx;         /* client context (verification, client cert);
                                 required unless tls is PLAIN */
    const char *server_name;  /* SNI and name checked; NULL: host */
    const char *helo_name;    /* our EHLO name */
    uint64_t timeout_ms;      /* per reply; 0: 300000 */
};

typedef struct smtp_client smtp_client;

/* The outcome of one operation. Valid only during the callback. */
struct smtp_client_reply {
    int code;          /* SMTP code; 421 when the connection failed */
    const char *enh;   /* enhanced status code or "" */
    const char *text;  /* reply text, lines joined by '\n' */
    bool transport;    /* synthesized: connection failed (detail in text) */
    bool cancelled;    /* the client was freed */
};

typedef void (*smtp_client_cb)(smtp_client *c, const struct smtp_client_reply *r,
                               void *arg);

/* Starts connecting; ready_cb gets the 250 of the last EHLO, or the reply
 * (or transport failure) that stopped the setup. NULL only when out of
 * memory. */
smtp_client *smtp_client_new(uv_loop_t *loop, const struct smtp_client_config *cfg,
                             smtp_client_cb ready_cb, void *arg);
void smtp_client_free(smtp_client **c);

bool smtp_client_ready(const smtp_client *c); /* set up and not failed */
unsigned smtp_client_extensions(const smtp_client *c);
uint64_t smtp_client_max_size(const smtp_client *c); /* 0: no limit known */
bool smtp_client_is_tls(const smtp_client *c);

enum { SMTP_CLIENT_SECRET = 1u << 0 }; /* line holds credentials: wipe it */

/* Queues one command line (without CRLF). */
int smtp_client_command(smtp_client *c, const char *line, unsigned flags,
                        smtp_client_cb cb, void *arg);
/* After a 354: streams the message in fd (size bytes from offset 0),
 * dot-stuffed with CRLF line ends, then ".", and reports the final reply.
 * The fd stays the caller's and must stay open until the callback. */
int smtp_client_body(smtp_client *c, int fd, uint64_t size, smtp_client_cb cb,
                     void *arg);

/* State name for logs. */
const char *smtp_client_state_name(const smtp_client *c);

#endif
