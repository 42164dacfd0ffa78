/* APPEND to a protected mailbox (issue 13), the session side of the APPEND
 * hooks (imap_session.h). An APPEND whose mailbox the `mailbox` hook calls
 * PLAIN is streamed as before (imap_commands.c); otherwise the session
 * holds the whole command - every literal in a private memory file, the
 * rest of the line in memory - answering the client's synchronizing
 * literals with "+ OK" itself, then:
 *   - the mailbox's verdict is asked again when the command is complete
 *     (its name may have been a literal), with a `LIST "" name` first when
 *     the hook says ASK (its SPECIAL-USE attributes are unknown);
 *   - each message goes through the `protect` hook (off the loop: vault
 *     writes with fsync), one after the other;
 *   - the command goes upstream with the new literal sizes, flags and
 *     dates as the client wrote them, non-synchronizing literals when the
 *     upstream takes them, else synchronizing ones whose "+" the upstream
 *     client consumes; streamed from the memory files with backpressure.
 * A refused message answers the whole command `tag NO [code] text` and
 * nothing of it reaches the upstream. The tagged answer (APPENDUID) is
 * relayed as it comes. Client input stays paused until the command is all
 * queued upstream, so pipelined commands keep their order.
 *
 * Also here: the observer of relayed LIST / LSUB responses (RELAY_LIST),
 * which feeds the `list` hook. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "imap_session_internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

#define CHUNK ((size_t)64 * 1024)
#define DEFAULT_MAX_PROTECTED ((uint64_t)64 << 20)
#define MAX_LITERALS 1000        /* messages of one MULTIAPPEND */
#define MAX_NAME 1024            /* a mailbox name */
#define LIST_MAX_ATTRS 32
#define LIST_MAX_ATTR_LEN 64

/* Phases of a held APPEND (the session state is APPEND_HOLD during
 * XA_READ, APPEND_PROTECT after it). One transition function: xa_enter. */
enum xa_phase {
    XA_READ,    /* the command from the client, literals into memory files */
    XA_BARRIER, /* an own LIST is due: the commands in flight end first */
    XA_LIST,    /* LIST "" name upstream */
    XA_PROTECT, /* the protect hook, message by message */
    XA_SEND,    /* the command going upstream, chunk by chunk */
    XA_COUNT_
};

static const char *const phase_names[XA_COUNT_] = {
    [XA_READ] = "READ", [XA_BARRIER] = "BARRIER", [XA_LIST] = "LIST",
    [XA_PROTECT] = "PROTECT", [XA_SEND] = "SEND",
};

struct xa_lit {
    int fd;            /* the client's bytes (memory file, owned) */
    uint64_t size;
    size_t cut;        /* where it sits in text */
    bool message;      /* false: the mailbox name, given as a literal */
    int out_fd;        /* the protected form (owned); -1: fd as it is */
    uint64_t out_size;
};

struct imap_xappend {
    char *text;        /* the command without literal headers and data (owned) */
    size_t text_len, text_cap;
    struct xa_lit *lits; /* owned */
    size_t n_lits, cap_lits;
    uint64_t total;    /* literal bytes held */
    uint64_t max;      /* limit of total */
    char *mailbox;     /* decoded; NULL while it is a literal not yet read */
    struct imap_command *cmd; /* the own LIST, or the APPEND, in flight */
    void *job;         /* a protect hook job */
    size_t cur;        /* XA_PROTECT: the literal; XA_SEND: the piece */
    uint64_t off;      /* XA_SEND: bytes of cur queued */
    char *chunk;       /* XA_SEND: read buffer (owned) */
    enum xa_phase phase;
    enum imap_append_verdict verdict;
    bool asked;        /* the mailbox hook answered `verdict` at the start */
    bool protect;      /* the verdict */
    bool nonsync_up;   /* XA_SEND: the upstream gets {n+} literals */
    bool answered;     /* the upstream answered the APPEND */
    bool cur_started;  /* XA_SEND: the text and header before cur are queued */
    bool reading;      /* inside imap_append_hold_read: input is not read
                          again from here when the command ends */
    char tag[IMAP_TAG_MAX + 1];
};

static void xa_enter(imap_session *s, enum xa_phase ph)
{
    struct imap_xappend *xa = s->xa;
    if (xa->phase == ph)
        return;
    qlog_debug("imap %s: APPEND %s: %s -> %s", s->id, xa->tag, phase_names[xa->phase],
               phase_names[ph]);
    xa->phase = ph;
    if (ph != XA_READ)
        imap_enter_state(s, IMAP_STATE_APPEND_PROTECT);
}

/* ---- memory files ---------------------------------------------------------------- */

static int memfile(void)
{
    return memfd_create("qumail-append", MFD_CLOEXEC);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Plaintext pages released before the descriptor goes. */
static void memfile_close(int *fd)
{
    if (*fd >= 0) {
        if (ftruncate(*fd, 0) != 0) {
            /* nothing more to do: close releases it too */
        }
        close(*fd);
    }
    *fd = -1;
}

/* ---- the held command ------------------------------------------------------------- */

static void xa_free(struct imap_xappend **p)
{
    struct imap_xappend *xa = *p;
    if (!xa)
        return;
    for (size_t i = 0; i < xa->n_lits; i++) {
        memfile_close(&xa->lits[i].fd);
        memfile_close(&xa->lits[i].out_fd);
    }
    free(xa->lits);
    if (xa->text) {
        OPENSSL_cleanse(xa->text, xa->text_cap);
        free(xa->text);
    }
    if (xa->chunk) {
        OPENSSL_cleanse(xa->chunk, CHUNK);
        free(xa->chunk);
    }
    free(xa->mailbox);
    free(xa);
    *p = NULL;
}

static bool text_add(struct imap_xappend *xa, const char *p, size_t n)
{
    if (xa->text_len + n > xa->text_cap) {
        size_t cap = xa->text_cap ? xa->text_cap : 256;
        while (cap < xa->text_len + n)
            cap *= 2;
        char *nb = malloc(cap);
        if (!nb)
            return false;
        if (xa->text_len)
            memcpy(nb, xa->text, xa->text_len);
        if (xa->text) {
            OPENSSL_cleanse(xa->text, xa->text_cap);
            free(xa->text);
        }
        xa->text = nb;
        xa->text_cap = cap;
    }
    memcpy(xa->text + xa->text_len, p, n);
    xa->text_len += n;
    return true;
}

static struct xa_lit *lit_add(struct imap_xappend *xa, uint64_t size, bool message)
{
    if (xa->n_lits == xa->cap_lits) {
        size_t cap = xa->cap_lits ? xa->cap_lits * 2 : 4;
        struct xa_lit *nl = realloc(xa->lits, cap * sizeof(*nl));
        if (!nl)
            return NULL;
        xa->lits = nl;
        xa->cap_lits = cap;
    }
    int fd = memfile();
    if (fd < 0)
        return NULL;
    struct xa_lit *l = &xa->lits[xa->n_lits++];
    *l = (struct xa_lit){.fd = fd, .size = size, .cut = xa->text_len, .message = message,
                         .out_fd = -1};
    xa->total += size;
    return l;
}

/* Back to reading commands. From a callback (not from inside the input
 * loop) input already buffered is read here. */
static void xa_finish(imap_session *s)
{
    bool input_now = !s->xa->reading;
    xa_free(&s->xa);
    if (s->closing)
        return;
    imap_enter_state(s, imap_idle_state(s));
    if (input_now)
        imap_process_client_input(s);
}

/* The whole APPEND refused before anything went upstream. */
static void xa_refuse(imap_session *s, const char *status, const char *code, const char *text)
{
    struct imap_xappend *xa = s->xa;
    if (code && *code)
        imap_reply(s, "%s %s [%s] %s", xa->tag, status, code, text);
    else
        imap_reply(s, "%s %s %s", xa->tag, status, text);
    qlog_info("imap %s: APPEND %s refused: %s%s%s", s->id, xa->tag, code ? code : "",
              code ? " " : "", text);
    xa_finish(s);
}

/* A literal over the limit, as Dovecot answers it: a synchronizing one
 * gets no data (the line ends with the refusal), a non-synchronizing one
 * is skipped with the rest of the command. */
static void xa_too_big(imap_session *s, bool nonsync)
{
    struct imap_xappend *xa = s->xa;
    imap_reply(s, "%s NO [TOOBIG] Message too large.", xa->tag);
    xa_free(&s->xa);
    imap_count_bad(s);
    if (s->closing)
        return;
    if (nonsync) {
        imap_enter_state(s, IMAP_STATE_DISCARD);
    } else {
        imap_parser_reset(s->cp);
        imap_enter_state(s, imap_idle_state(s));
    }
}

/* ---- taking over ------------------------------------------------------------------ */

bool imap_append_hold_begin(imap_session *s, const struct imap_token *tok)
{
    const struct imap_append_hooks *h = &s->hooks.append;
    if (!h->mailbox || !h->protect || tok->literal8)
        return false;
    /* the arguments before this literal: tag APPEND [mailbox [flags] [date]] */
    size_t plen = s->rd.len - tok->len;
    while (plen > 0 && s->rd.buf[plen - 1] == ' ')
        plen--;
    char *line = malloc(plen + 2);
    if (!line)
        return false;
    memcpy(line, s->rd.buf, plen);
    memcpy(line + plen, "\r\n", 2);
    struct imap_args args;
    const char *err;
    struct imap_parser_limits lim = {.max_token = s->cfg.max_line, .max_depth = 32};
    int rc = imap_args_parse(IMAP_PARSER_COMMANDS, &lim, line, plen + 2, &args, &err);
    if (rc != 0) {
        free(line);
        return false; /* let the upstream answer it */
    }
    char name[MAX_NAME + 1];
    bool named = args.count >= 3;
    bool ok = !named || ((args.args[2].type == IMAP_ARG_ATOM ||
                          args.args[2].type == IMAP_ARG_STRING) &&
                         imap_arg_copy(&args.args[2], name, sizeof(name)));
    imap_args_free(&args);
    free(line);
    if (!ok)
        return false;
    enum imap_append_verdict v = named ? h->mailbox(s->hooks_ctx, s, name, false)
                                       : IMAP_APPEND_ASK;
    if (v == IMAP_APPEND_PLAIN)
        return false; /* streamed, the fast path */

    struct imap_xappend *xa = calloc(1, sizeof(*xa));
    if (!xa) {
        imap_bye_close(s, "Out of memory.", "out of memory");
        return true;
    }
    s->xa = xa;
    xa->phase = XA_READ;
    xa->asked = named;
    xa->verdict = v;
    snprintf(xa->tag, sizeof(xa->tag), "%s", s->rd.tag);
    xa->max = s->cfg.max_protected_append ? s->cfg.max_protected_append
              : s->cfg.max_append          ? s->cfg.max_append
                                           : DEFAULT_MAX_PROTECTED;
    if (s->cfg.max_append && s->cfg.max_append < xa->max)
        xa->max = s->cfg.max_append;
    if (named && !(xa->mailbox = strdup(name))) {
        xa_free(&s->xa);
        imap_bye_close(s, "Out of memory.", "out of memory");
        return true;
    }
    qlog_debug("imap %s: <<< %s APPEND (held: %s)", s->id, xa->tag,
               named ? "protected mailbox" : "mailbox literal");
    bool fits = named ? tok->literal_size <= xa->max : tok->literal_size <= MAX_NAME;
    if (!text_add(xa, s->rd.buf, s->rd.len - tok->len) ||
        (fits && !lit_add(xa, tok->literal_size, named))) {
        xa_free(&s->xa);
        imap_bye_close(s, "Out of memory.", "out of memory");
        return true;
    }
    imap_rd_reset(s);
    if (!fits) {
        xa_too_big(s, tok->literal_nonsync);
        return true;
    }
    if (!tok->literal_nonsync)
        imap_reply(s, "+ OK");
    imap_enter_state(s, IMAP_STATE_APPEND_HOLD);
    return true;
}

static void xa_decide(imap_session *s);
static void xa_send_list(imap_session *s);

/* The rest of the command (literal data, flags, dates, further literals)
 * from the client. Returns true when the state changed. */
bool imap_append_hold_read(imap_session *s, const char *in, size_t len, size_t *used_r)
{
    struct imap_xappend *xa = s->xa;
    size_t off = 0;
    while (off < len) {
        struct imap_token tok;
        size_t u;
        const char *err;
        int rc = imap_parser_next(s->cp, in + off, len - off, &u, &tok, &err);
        if (rc == IMAP_PARSE_MORE)
            break;
        if (rc == IMAP_PARSE_ERROR) {
            off += u;
            *used_r = off;
            if (imap_parser_error_kind(s->cp) == IMAP_PARSE_ERR_LITERAL_TOO_BIG) {
                uint64_t size;
                bool nonsync;
                imap_parser_error_literal(s->cp, &size, &nonsync);
                if (nonsync) { /* its data is on the way: as in read_command */
                    xa_free(&s->xa);
                    imap_bye_close(s, err, "literal too large");
                    return true;
                }
                xa_too_big(s, false);
                return true;
            }
            /* nothing went upstream: answered like any bad command */
            imap_reply(s, "%s BAD Error in IMAP command APPEND: %s", xa->tag, err);
            xa_free(&s->xa);
            imap_count_bad(s);
            if (!s->closing)
                imap_enter_state(s, IMAP_STATE_SKIP_LINE);
            return true;
        }
        const char *raw = in + off;
        off += u;
        switch (tok.type) {
        case IMAP_TOK_LITERAL_DATA: {
            struct xa_lit *l = &xa->lits[xa->n_lits - 1];
            if (write_all(l->fd, tok.str, tok.len) < 0) {
                *used_r = off;
                xa_free(&s->xa);
                imap_bye_close(s, "Internal error: cannot hold the message.", "memory file");
                return true;
            }
            continue;
        }
        case IMAP_TOK_LITERAL: {
            *used_r = off;
            if (tok.literal8) {
                imap_reply(s, "%s BAD Error in IMAP command APPEND: literal8 not allowed here",
                           xa->tag);
                xa_free(&s->xa);
                imap_count_bad(s);
                if (s->closing)
                    return true;
                if (tok.literal_nonsync) {
                    imap_enter_state(s, IMAP_STATE_DISCARD);
                } else {
                    imap_parser_reset(s->cp);
                    imap_enter_state(s, imap_idle_state(s));
                }
                return true;
            }
            if (xa->n_lits >= MAX_LITERALS || tok.literal_size > xa->max - xa->total) {
                xa_too_big(s, tok.literal_nonsync);
                return true;
            }
            if (!text_add(xa, raw, u - tok.len) || !lit_add(xa, tok.literal_size, true)) {
                xa_free(&s->xa);
                imap_bye_close(s, "Out of memory.", "out of memory");
                return true;
            }
            if (!tok.literal_nonsync)
                imap_reply(s, "+ OK");
            continue;
        }
        case IMAP_TOK_EOL:
            *used_r = off;
            if (!text_add(xa, raw, u)) {
                xa_free(&s->xa);
                imap_bye_close(s, "Out of memory.", "out of memory");
                return true;
            }
            xa->reading = true;
            xa_decide(s);
            if (s->xa)
                s->xa->reading = false;
            return true;
        default:
            if (!text_add(xa, raw, u)) {
                *used_r = off;
                xa_free(&s->xa);
                imap_bye_close(s, "Out of memory.", "out of memory");
                return true;
            }
            continue;
        }
    }
    *used_r = off;
    return false;
}

/* ---- deciding: the verdict, a LIST when needed ----------------------------------- */

static void xa_send_start(imap_session *s);

static void xa_protect_next(imap_session *s);

/* Records the verdict; the caller starts XA_PROTECT (xa_protect_next). */
static void xa_verdict(imap_session *s, enum imap_append_verdict v)
{
    struct imap_xappend *xa = s->xa;
    xa->protect = v != IMAP_APPEND_PLAIN;
    xa->cur = 0;
    qlog_debug("imap %s: APPEND %s to a %s mailbox", s->id, xa->tag,
               xa->protect ? "protected" : "plain");
    xa_enter(s, XA_PROTECT);
}

/* The complete command is held. */
static void xa_decide(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    if (!xa->mailbox) {
        /* the first literal is the name */
        struct xa_lit *l = &xa->lits[0];
        char name[MAX_NAME + 1];
        ssize_t n = l->size ? pread(l->fd, name, (size_t)l->size, 0) : 0;
        if (n < 0 || (uint64_t)n != l->size || memchr(name, '\0', (size_t)n)) {
            xa_refuse(s, "BAD", NULL, "Error in IMAP command APPEND: Invalid mailbox name");
            return;
        }
        name[n] = '\0';
        if (!(xa->mailbox = strdup(name))) {
            xa_free(&s->xa);
            imap_bye_close(s, "Out of memory.", "out of memory");
            return;
        }
    }
    enum imap_append_verdict v =
        xa->asked ? xa->verdict : s->hooks.append.mailbox(s->hooks_ctx, s, xa->mailbox, false);
    if (v == IMAP_APPEND_ASK) {
        xa_enter(s, XA_BARRIER);
        if (s->n_inflight == 0)
            xa_send_list(s);
        /* else imap_append_step when the last command in flight ends */
        return;
    }
    xa_verdict(s, v);
    xa_protect_next(s);
}

static void xa_list_done(imap_session *s, struct imap_command *c,
                         const struct imap_resp_event *ev)
{
    (void)c;
    (void)ev;
    struct imap_xappend *xa = s->xa;
    if (!xa || xa->cmd != c)
        return;
    xa->cmd = NULL;
    /* a failed LIST teaches nothing: the name alone decides, ASK = protect;
     * imap_command_cb goes on with imap_append_step (XA_PROTECT) */
    xa_verdict(s, s->hooks.append.mailbox(s->hooks_ctx, s, xa->mailbox, true));
}

static const struct imap_command_def xa_list_def = {IMAP_CMD_LIST, 0, NULL, NULL, xa_list_done};

static void xa_send_list(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    char q[2 * MAX_NAME + 3];
    size_t ql = imap_quote(q, sizeof(q), xa->mailbox, strlen(xa->mailbox));
    if (ql == 0 || !s->up) {
        xa_verdict(s, s->hooks.append.mailbox(s->hooks_ctx, s, xa->mailbox, true));
        xa_protect_next(s);
        return;
    }
    struct imap_command *c = imap_command_new(s, &xa_list_def);
    if (!c) {
        imap_bye_close(s, "Out of memory.", "out of memory");
        return;
    }
    c->internal = true;
    c->verb = IMAP_CMD_LIST;
    char tag[32];
    imap_client_new_tag(s->up, tag, sizeof(tag));
    c->up = imap_client_cmd_new(s->up, tag, strlen(tag), imap_command_cb, c);
    if (!c->up) {
        imap_command_free(s, c);
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        return;
    }
    xa->cmd = c;
    xa_enter(s, XA_LIST);
    char head[64];
    int n = snprintf(head, sizeof(head), "%s LIST \"\" ", tag);
    imap_client_send(s->up, c->up, head, (size_t)n);
    imap_client_send(s->up, c->up, q, ql);
    /* RFC 6154: a server may send the attributes only when asked */
    if (imap_client_has_cap(s->up, "LIST-EXTENDED") && imap_client_has_cap(s->up, "SPECIAL-USE"))
        imap_client_send(s->up, c->up, " RETURN (SPECIAL-USE)\r\n", 23);
    else
        imap_client_send(s->up, c->up, "\r\n", 2);
}

/* ---- protecting ------------------------------------------------------------------------ */

static void xa_protect_next(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    while (xa->protect && xa->cur < xa->n_lits && !xa->lits[xa->cur].message)
        xa->cur++;
    if (!xa->protect || xa->cur >= xa->n_lits) {
        xa_send_start(s);
        return;
    }
    struct xa_lit *l = &xa->lits[xa->cur];
    const char *code = "SERVERBUG", *text = "Cannot protect the message.";
    imap_hold(s); /* until imap_session_append_done */
    void *job = s->hooks.append.protect(s->hooks_ctx, s, l->fd, l->size, &code, &text);
    if (!job) {
        xa_refuse(s, "NO", code, text);
        imap_release(s);
        return;
    }
    xa->job = job;
}

void imap_session_append_done(imap_session *s, const void *job,
                              const struct imap_append_result *r)
{
    struct imap_xappend *xa = s->xa;
    int fd = r->status == 0 ? r->fd : -1;
    if (!xa || xa->job != job) {
        memfile_close(&fd); /* not ours (cannot happen): dropped */
        return;
    }
    xa->job = NULL;
    if (s->closing) {
        memfile_close(&fd);
    } else if (r->status < 0) {
        xa_refuse(s, "NO", r->code ? r->code : "SERVERBUG",
                  r->text ? r->text : "Cannot protect the message.");
    } else {
        struct xa_lit *l = &xa->lits[xa->cur];
        l->out_fd = fd;
        l->out_size = fd >= 0 ? r->size : 0;
        xa->cur++;
        xa_protect_next(s);
    }
    imap_release(s); /* the hold of xa_protect_next */
}

/* ---- sending --------------------------------------------------------------------------- */

static void xa_append_done(imap_session *s, struct imap_command *c,
                           const struct imap_resp_event *ev)
{
    (void)ev;
    struct imap_xappend *xa = s->xa;
    if (!xa || xa->cmd != c)
        return;
    xa->cmd = NULL;
    xa->answered = true; /* relayed right after this (APPENDUID) */
}

static const struct imap_command_def xa_append_def = {IMAP_CMD_APPEND, CMDF_AUTH, NULL, NULL,
                                                      xa_append_done};

static void xa_pump(imap_session *s);

static void xa_send_start(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    if (!s->up) {
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        return;
    }
    xa->nonsync_up = true;
    for (size_t i = 0; i < xa->n_lits; i++) {
        const struct xa_lit *l = &xa->lits[i];
        if (!imap_upstream_nonsync_ok(s, l->out_fd >= 0 ? l->out_size : l->size))
            xa->nonsync_up = false;
    }
    xa->chunk = malloc(CHUNK);
    struct imap_command *c = xa->chunk ? imap_command_new(s, &xa_append_def) : NULL;
    if (!c) {
        imap_bye_close(s, "Out of memory.", "out of memory");
        return;
    }
    c->verb = IMAP_CMD_APPEND;
    c->up = imap_client_cmd_new(s->up, xa->tag, strlen(xa->tag), imap_command_cb, c);
    if (!c->up) {
        imap_command_free(s, c);
        imap_bye_close(s, "Upstream server unavailable.", "upstream lost");
        return;
    }
    xa->cmd = c;
    xa->cur = 0;
    xa->cur_started = false;
    xa_enter(s, XA_SEND);
    xa_pump(s);
}

/* Queues the command upstream while the upstream's output is below the
 * high-water mark; goes on when it drains (imap_append_step). */
static void xa_pump(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    while (xa->cur <= xa->n_lits) {
        if (!s->up || s->closing)
            return;
        /* answered before the rest was sent: with synchronizing literals
         * the upstream wants no more (held bytes were dropped); with
         * non-synchronizing ones it reads the rest and drops it */
        if (xa->answered && !xa->nonsync_up)
            break;
        imap_client_cmd *up = xa->cmd ? xa->cmd->up : NULL;
        if (!xa->cur_started) {
            size_t start = xa->cur == 0 ? 0 : xa->lits[xa->cur - 1].cut;
            size_t end = xa->cur < xa->n_lits ? xa->lits[xa->cur].cut : xa->text_len;
            imap_client_send(s->up, up, xa->text + start, end - start);
            if (xa->cur == xa->n_lits) {
                xa->cur++;
                break;
            }
            const struct xa_lit *l = &xa->lits[xa->cur];
            char hdr[48];
            int n = snprintf(hdr, sizeof(hdr), "{%llu%s}\r\n",
                             (unsigned long long)(l->out_fd >= 0 ? l->out_size : l->size),
                             xa->nonsync_up ? "+" : "");
            imap_client_send(s->up, up, hdr, (size_t)n);
            if (!xa->nonsync_up && up)
                imap_client_expect(s->up, up, IMAP_CONT_RELEASE);
            xa->cur_started = true;
            xa->off = 0;
        }
        const struct xa_lit *l = &xa->lits[xa->cur];
        int fd = l->out_fd >= 0 ? l->out_fd : l->fd;
        uint64_t size = l->out_fd >= 0 ? l->out_size : l->size;
        while (xa->off < size) {
            if (imap_client_output_pending(s->up) > s->cfg.output_high_water)
                return; /* up_drained -> imap_append_step */
            size_t want = size - xa->off < CHUNK ? (size_t)(size - xa->off) : CHUNK;
            ssize_t n = pread(fd, xa->chunk, want, (off_t)xa->off);
            if (n <= 0) {
                /* part of it is upstream: no way back */
                imap_bye_close(s, "Internal error: cannot read the held message.",
                               "memory file");
                return;
            }
            imap_client_send(s->up, up, xa->chunk, (size_t)n);
            xa->off += (uint64_t)n;
        }
        xa->cur++;
        xa->cur_started = false;
    }
    qlog_debug("imap %s: APPEND %s queued upstream (%zu literal%s, %s)", s->id, xa->tag,
               xa->n_lits, xa->n_lits == 1 ? "" : "s", xa->protect ? "protected" : "unchanged");
    xa_finish(s);
}

/* ---- driving ------------------------------------------------------------------------ */

void imap_append_step(imap_session *s)
{
    struct imap_xappend *xa = s->xa;
    if (!xa || s->closing)
        return;
    imap_hold(s);
    switch (xa->phase) {
    case XA_BARRIER:
        if (s->n_inflight == 0)
            xa_send_list(s);
        break;
    case XA_PROTECT:
        if (!xa->job)
            xa_protect_next(s);
        break;
    case XA_SEND:
        xa_pump(s);
        break;
    case XA_READ:
    case XA_LIST:
    case XA_COUNT_:
        break;
    }
    imap_release(s);
}

void imap_append_abort(imap_session *s)
{
    if (s->xa && s->xa->job && s->hooks.append.cancel)
        s->hooks.append.cancel(s->hooks_ctx, s, s->xa->job);
}

void imap_append_free(imap_session *s)
{
    xa_free(&s->xa);
    free(s->lo);
    s->lo = NULL;
}

/* ---- LIST / LSUB observer -------------------------------------------------------------- */

struct imap_list_obs {
    unsigned field;            /* 0 attributes, 1 delimiter, 2 name, 3 after */
    char attrs[LIST_MAX_ATTRS][LIST_MAX_ATTR_LEN + 1];
    size_t n_attrs;
    char name[MAX_NAME + 1];
    size_t name_len;
    bool bad;                  /* name too long, NUL, or not understood */
};

void imap_list_begin(imap_session *s)
{
    if (!s->lo)
        s->lo = malloc(sizeof(*s->lo));
    if (s->lo)
        memset(s->lo, 0, sizeof(*s->lo));
}

static void name_add(struct imap_list_obs *lo, const char *p, size_t n)
{
    if (lo->name_len + n > MAX_NAME || memchr(p, '\0', n)) {
        lo->bad = true;
        return;
    }
    memcpy(lo->name + lo->name_len, p, n);
    lo->name_len += n;
}

void imap_list_token(imap_session *s, const struct imap_token *tok)
{
    struct imap_list_obs *lo = s->lo;
    if (!lo || lo->field >= 3)
        return;
    switch (lo->field) {
    case 0: /* (\Attr ...) */
        if (tok->type == IMAP_TOK_ATOM && tok->depth == 1 && lo->n_attrs < LIST_MAX_ATTRS &&
            tok->len <= LIST_MAX_ATTR_LEN) {
            memcpy(lo->attrs[lo->n_attrs], tok->str, tok->len);
            lo->attrs[lo->n_attrs++][tok->len] = '\0';
        } else if (tok->type == IMAP_TOK_LIST_END && tok->depth == 0) {
            lo->field = 1;
        } else if (tok->depth == 0 && tok->type != IMAP_TOK_LIST_BEGIN) {
            lo->bad = true;
            lo->field = 3;
        }
        return;
    case 1: /* "/" or NIL */
        lo->field = 2;
        return;
    case 2: /* the name: atom, quoted or literal */
        if (tok->type == IMAP_TOK_ATOM) {
            name_add(lo, tok->str, tok->len);
            lo->field = 3;
        } else if (tok->type == IMAP_TOK_QUOTED) {
            for (size_t i = 0; i < tok->len; i++) {
                if (tok->str[i] == '\\' && i + 1 < tok->len)
                    i++;
                name_add(lo, tok->str + i, 1);
            }
            lo->field = 3;
        } else if (tok->type == IMAP_TOK_LITERAL) {
            if (tok->literal_size > MAX_NAME)
                lo->bad = true;
            if (tok->literal_size == 0)
                lo->field = 3;
        } else if (tok->type == IMAP_TOK_LITERAL_DATA) {
            name_add(lo, tok->str, tok->len);
            if (tok->literal_size == 0)
                lo->field = 3;
        } else {
            lo->bad = true;
            lo->field = 3;
        }
        return;
    default:
        return;
    }
}

void imap_list_end(imap_session *s, bool own)
{
    struct imap_list_obs *lo = s->lo;
    if (!lo)
        return;
    if (lo->field >= 3 && !lo->bad && s->hooks.append.list) {
        lo->name[lo->name_len] = '\0';
        const char *attrs[LIST_MAX_ATTRS];
        for (size_t i = 0; i < lo->n_attrs; i++)
            attrs[i] = lo->attrs[i];
        s->hooks.append.list(s->hooks_ctx, s, lo->name, attrs, lo->n_attrs, own);
    }
    /* not kept for the idle session */
    free(s->lo);
    s->lo = NULL;
}
