/* smtp_load: one SMTP client connection.
 *
 * State machine (one reply awaited per state, no pipelining):
 *
 *   CONNECTING -> GREETING -> EHLO -> MAIL -> RCPT (x nto) -> DATA -> BODY
 *        BODY -> RSET -> MAIL ...     (another message claimed)
 *        BODY -> QUIT -> CLOSING      (no more work)
 *   a refused MAIL/RCPT/DATA/BODY counts the message failed, then RSET or QUIT;
 *   a 421, timeout, I/O or protocol error closes the connection, and the
 *   client reconnects while work remains (at most MAX_FAILURES in a row).
 *
 * Transitions happen only in client_enter(); replies are dispatched by
 * client_on_reply(). Handles are freed by sl_client_free() after the loop. */
#include "smtp_load.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_LEN 1024
#define MAX_FAILURES 5
#define READ_BUF_LEN 4096

enum client_state {
    CS_CONNECTING,
    CS_GREETING,
    CS_EHLO,
    CS_MAIL,
    CS_RCPT,
    CS_DATA,
    CS_BODY,
    CS_RSET,
    CS_QUIT,
    CS_CLOSING,
    CS_DONE,
    CS__COUNT
};

static const char *const state_names[CS__COUNT] = {
    [CS_CONNECTING] = "connecting", [CS_GREETING] = "greeting",
    [CS_EHLO] = "ehlo", [CS_MAIL] = "mail", [CS_RCPT] = "rcpt",
    [CS_DATA] = "data", [CS_BODY] = "body", [CS_RSET] = "rset",
    [CS_QUIT] = "quit", [CS_CLOSING] = "closing", [CS_DONE] = "done",
};

const char *const sl_err_names[SL_ERR__COUNT] = {
    [SL_ERR_CONNECT] = "connect", [SL_ERR_GREETING] = "greeting",
    [SL_ERR_EHLO] = "ehlo", [SL_ERR_MAIL] = "mail", [SL_ERR_RCPT] = "rcpt",
    [SL_ERR_DATA] = "data", [SL_ERR_BODY] = "body", [SL_ERR_RSET] = "rset",
    [SL_ERR_TIMEOUT] = "timeout", [SL_ERR_IO] = "io",
    [SL_ERR_PROTOCOL] = "protocol",
};

struct sl_client {
    struct sl_run *run;
    unsigned id;
    enum client_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    int open_handles;          /* initialised handles not yet closed */
    bool reconnect;            /* set by a failure: connect again when closed */
    bool in_message;           /* a claimed message is in flight */
    uint64_t msg_start_ns;     /* uv_hrtime() at MAIL FROM */
    uint64_t seq;              /* messages started on this client */
    size_t rcpt_index;
    unsigned failures;         /* connection failures since the last success */
    char line[LINE_MAX_LEN];   /* current reply line (truncated if longer) */
    size_t line_len;
    int multiline_code;        /* code of a "NNN-" reply in progress, or 0 */
    char read_buf[READ_BUF_LEN];
};

/* A write request owns a copy of a command line or the Message-ID line. */
struct write_req {
    uv_write_t req;
    struct sl_client *client;
    size_t len;
    char data[];
};

static void client_enter(struct sl_client *c, enum client_state next);
static void client_connect(struct sl_client *c);

/* -- closing and failures ------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    struct sl_client *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->reconnect && !c->run->fatal && c->failures < MAX_FAILURES
        && sl_run_more(c->run)) {
        c->reconnect = false;
        client_connect(c);
        return;
    }
    c->state = CS_DONE;
    c->run->active--;
}

static void client_close(struct sl_client *c)
{
    if (c->state == CS_CLOSING || c->state == CS_DONE)
        return;
    c->state = CS_CLOSING;
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void message_failed(struct sl_client *c)
{
    if (c->in_message) {
        c->in_message = false;
        c->run->failed++;
        c->run->t_last_ns = uv_hrtime();
    }
}

/* Keeps the first error of the run, with the state and the reply line, so
 * that a failing benchmark says why. */
static void note_error(struct sl_client *c, enum sl_err err, bool with_reply)
{
    struct sl_run *run = c->run;
    run->errors[err]++;
    if (run->first_error[0] != '\0')
        return;
    snprintf(run->first_error, sizeof(run->first_error),
             "client %u, state %s: %s error%s%.*s", c->id,
             c->state < CS__COUNT ? state_names[c->state] : "?",
             sl_err_names[err], with_reply ? ": " : "",
             with_reply ? (int)(c->line_len > 200 ? 200 : c->line_len) : 0, c->line);
}

/* Counts err, fails the message in flight, closes, and reconnects later. */
static void client_fail(struct sl_client *c, enum sl_err err)
{
    if (c->state == CS_CLOSING || c->state == CS_DONE)
        return;
    note_error(c, err, err != SL_ERR_TIMEOUT && err != SL_ERR_IO
                       && err != SL_ERR_CONNECT);
    message_failed(c);
    c->failures++;
    c->reconnect = true;
    client_close(c);
}

/* -- writing --------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct sl_client *c = w->client;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        client_fail(c, SL_ERR_IO);
}

/* Sends own bytes (copied) followed by an optional shared buffer. */
static int client_write(struct sl_client *c, const char *own, size_t own_len,
                        const uv_buf_t *shared)
{
    struct write_req *w = malloc(sizeof(*w) + own_len);
    if (w == NULL) {
        c->run->fatal = true;
        return UV_ENOMEM;
    }
    w->client = c;
    w->len = own_len;
    memcpy(w->data, own, own_len);
    uv_buf_t bufs[2] = { uv_buf_init(w->data, (unsigned)own_len) };
    unsigned nbufs = 1;
    if (shared != NULL)
        bufs[nbufs++] = *shared;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (rc < 0)
        free(w); /* a synchronous failure never calls on_write */
    return rc;
}

static void on_timeout(uv_timer_t *t)
{
    client_fail(t->data, SL_ERR_TIMEOUT);
}

/* Sends one command line (CRLF added) and waits for its reply. */
static void client_command(struct sl_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void client_command(struct sl_client *c, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf) - 2) {
        client_fail(c, SL_ERR_PROTOCOL);
        return;
    }
    memcpy(buf + n, "\r\n", 2);
    if (client_write(c, buf, (size_t)n + 2, NULL) < 0) {
        client_fail(c, SL_ERR_IO);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->run->opts->timeout * 1000), 0);
}

/* -- the state machine ------------------------------------------------------- */

static void client_start_message(struct sl_client *c)
{
    c->seq++;
    c->rcpt_index = 0;
    c->msg_start_ns = uv_hrtime();
    client_command(c, "MAIL FROM:<%s>", c->run->opts->from);
}

/* The one place where the state changes (apart from closing). */
static void client_enter(struct sl_client *c, enum client_state next)
{
    const struct sl_opts *o = c->run->opts;
    c->state = next;
    switch (next) {
    case CS_GREETING:
        uv_timer_start(&c->timer, on_timeout, (uint64_t)(o->timeout * 1000), 0);
        break;
    case CS_EHLO:
        client_command(c, "EHLO %s", o->ehlo);
        break;
    case CS_MAIL:
        client_start_message(c);
        break;
    case CS_RCPT:
        client_command(c, "RCPT TO:<%s>", o->to[c->rcpt_index]);
        break;
    case CS_DATA:
        client_command(c, "DATA");
        break;
    case CS_BODY: {
        char id[SL_MSGID_LEN + 1];
        sl_msg_id_line(id, c->id, c->seq);
        uv_buf_t shared = uv_buf_init(c->run->msg->shared,
                                      (unsigned)c->run->msg->shared_len);
        if (client_write(c, id, SL_MSGID_LEN, &shared) < 0) {
            client_fail(c, SL_ERR_IO);
            return;
        }
        uv_timer_start(&c->timer, on_timeout, (uint64_t)(o->timeout * 1000), 0);
        break;
    }
    case CS_RSET:
        client_command(c, "RSET");
        break;
    case CS_QUIT:
        client_command(c, "QUIT");
        break;
    case CS_CONNECTING:
    case CS_CLOSING:
    case CS_DONE:
    case CS__COUNT:
        break;
    }
}

/* After EHLO or a message's end: claim the next message (it is in flight
 * from here on, so a failing RSET fails it) or QUIT. */
static void client_next(struct sl_client *c, bool need_rset)
{
    if (!sl_run_claim(c->run)) {
        client_enter(c, CS_QUIT);
        return;
    }
    c->in_message = true;
    if (need_rset)
        client_enter(c, CS_RSET);
    else
        client_enter(c, CS_MAIL);
}

static void client_refused(struct sl_client *c, enum sl_err err)
{
    note_error(c, err, true);
    message_failed(c);
    client_next(c, true);
}

static void client_on_reply(struct sl_client *c, int code)
{
    struct sl_run *run = c->run;
    uv_timer_stop(&c->timer);
    if (code == 421) {
        /* the server is closing the connection */
        static const enum sl_err err_of[CS__COUNT] = {
            [CS_GREETING] = SL_ERR_GREETING, [CS_EHLO] = SL_ERR_EHLO,
            [CS_MAIL] = SL_ERR_MAIL, [CS_RCPT] = SL_ERR_RCPT,
            [CS_DATA] = SL_ERR_DATA, [CS_BODY] = SL_ERR_BODY,
            [CS_RSET] = SL_ERR_RSET, [CS_QUIT] = SL_ERR_IO,
        };
        client_fail(c, err_of[c->state]);
        return;
    }
    switch (c->state) {
    case CS_GREETING:
        if (code != 220)
            client_fail(c, SL_ERR_GREETING);
        else
            client_enter(c, CS_EHLO);
        break;
    case CS_EHLO:
        if (code != 250)
            client_fail(c, SL_ERR_EHLO);
        else
            client_next(c, false);
        break;
    case CS_MAIL:
        if (code / 100 != 2)
            client_refused(c, SL_ERR_MAIL);
        else
            client_enter(c, CS_RCPT);
        break;
    case CS_RCPT:
        if (code / 100 != 2)
            client_refused(c, SL_ERR_RCPT);
        else if (++c->rcpt_index < run->opts->nto)
            client_enter(c, CS_RCPT);
        else
            client_enter(c, CS_DATA);
        break;
    case CS_DATA:
        if (code != 354)
            client_refused(c, SL_ERR_DATA);
        else
            client_enter(c, CS_BODY);
        break;
    case CS_BODY:
        if (code / 100 != 2) {
            client_refused(c, SL_ERR_BODY);
            break;
        }
        c->in_message = false;
        c->failures = 0;
        run->ok++;
        run->t_last_ns = uv_hrtime();
        if (sl_stats_add(&run->stats, run->t_last_ns - c->msg_start_ns) < 0)
            run->fatal = true;
        if (run->fatal)
            client_enter(c, CS_QUIT);
        else
            client_next(c, true);
        break;
    case CS_RSET:
        if (code != 250)
            client_fail(c, SL_ERR_RSET);
        else
            client_enter(c, CS_MAIL);
        break;
    case CS_QUIT:
        client_close(c);
        break;
    case CS_CONNECTING:
    case CS_CLOSING:
    case CS_DONE:
    case CS__COUNT:
        client_fail(c, SL_ERR_PROTOCOL);
        break;
    }
}

/* One complete reply line (CRLF stripped) of c->line_len bytes. */
static void client_on_line(struct sl_client *c)
{
    const char *l = c->line;
    if (c->line_len < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9'
        || l[2] < '0' || l[2] > '9'
        || (c->line_len > 3 && l[3] != ' ' && l[3] != '-')) {
        client_fail(c, SL_ERR_PROTOCOL);
        return;
    }
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (c->multiline_code != 0 && code != c->multiline_code) {
        client_fail(c, SL_ERR_PROTOCOL);
        return;
    }
    if (c->line_len > 3 && l[3] == '-') {
        c->multiline_code = code;
        return;
    }
    c->multiline_code = 0;
    if (c->state == CS_CONNECTING || c->state == CS_CLOSING || c->state == CS_DONE) {
        client_fail(c, SL_ERR_PROTOCOL);
        return;
    }
    client_on_reply(c, code);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sl_client *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->read_buf, sizeof(c->read_buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct sl_client *c = s->data;
    if (nread < 0) {
        if (c->state == CS_QUIT && nread == UV_EOF)
            client_close(c);
        else
            client_fail(c, SL_ERR_IO);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        if (c->state == CS_CLOSING || c->state == CS_DONE)
            return;
        char ch = buf->base[i];
        if (ch == '\n') {
            if (c->line_len > 0 && c->line[c->line_len - 1] == '\r')
                c->line_len--;
            client_on_line(c);
            c->line_len = 0;
        } else if (c->line_len < sizeof(c->line)) {
            c->line[c->line_len++] = ch;
        } /* else: overlong line, keep its start (the code) */
    }
}

/* -- connecting -------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct sl_client *c = req->data;
    if (status < 0) {
        if (status != UV_ECANCELED)
            client_fail(c, SL_ERR_CONNECT);
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        client_fail(c, SL_ERR_IO);
        return;
    }
    client_enter(c, CS_GREETING);
}

static void client_connect(struct sl_client *c)
{
    struct sl_run *run = c->run;
    c->state = CS_CONNECTING;
    c->line_len = 0;
    c->multiline_code = 0;
    /* neither init can fail on a live loop (they allocate nothing) */
    uv_tcp_init(run->loop, &c->tcp);
    uv_timer_init(run->loop, &c->timer);
    c->open_handles = 2;
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp,
                            (const struct sockaddr *)&run->addr, on_connect);
    if (rc < 0) {
        client_fail(c, SL_ERR_CONNECT);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, (uint64_t)(run->opts->timeout * 1000), 0);
}

int sl_client_start(struct sl_run *run, unsigned id, struct sl_client **out)
{
    struct sl_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UV_ENOMEM;
    c->run = run;
    c->id = id;
    run->active++;
    *out = c;
    client_connect(c);
    return 0;
}

void sl_client_free(struct sl_client **cp)
{
    if (*cp == NULL)
        return;
    free(*cp);
    *cp = NULL;
}
