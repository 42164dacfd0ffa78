/* Upstream transactions for the copies of one message.
 *
 * One copy covering every recipient goes through the live transaction
 * (MAIL and RCPT were already accepted upstream): DATA, body, final reply.
 * Several copies: the live transaction is dropped with RSET and each copy
 * gets MAIL + its RCPTs (pipelined when upstream allows) + DATA + body, in
 * order. The first refusal stops the run; the client's DATA reply is 250
 * only when every copy was accepted, and otherwise carries upstream's code,
 * enhanced code and text. */
#include "smtp_session_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct delivery_run {
    smtp_session *s;
    struct smtp_delivery *d;   /* own copies of the caller's deliveries and
                                  of their rcpt_index arrays; the fds stay
                                  the caller's */
    size_t n, cur;
    bool live;
    size_t pending;            /* MAIL/RCPT replies outstanding */
    bool failed;
    int code;
    char enh[16];
    char *text;                /* first failure or final reply text */
    char queue_ids[256];       /* "ID1,ID2": upstream's ids of the copies */
    smtp_delivered_cb cb;
    void *arg;
    unsigned refs;             /* queued upstream operations pointing here */
    bool finished;             /* replied; freed when refs drops to 0 */
};

static void run_free(struct delivery_run *run)
{
    if (!run)
        return;
    for (size_t i = 0; i < run->n; i++)
        free((void *)run->d[i].rcpt_index);
    free(run->d);
    free(run->text);
    free(run);
}

/* The session is being destroyed; its upstream client was freed first,
 * so every operation's callback has run (refs is 0). */
void smtp_deliver_free(smtp_session *s)
{
    run_free(s->run);
    s->run = NULL;
}

/* Queues a command whose callback gets this run. */
static int run_command(struct delivery_run *run, const char *line, smtp_client_cb cb)
{
    int rc = smtp_client_command(run->s->up, line, 0, cb, run);
    if (rc == 0)
        run->refs++;
    return rc;
}

static void record(struct delivery_run *run, const struct smtp_client_reply *r)
{
    run->code = r->code;
    snprintf(run->enh, sizeof(run->enh), "%s", r->enh ? r->enh : "");
    free(run->text);
    run->text = strdup(r->text ? r->text : "");
}

static void finish(struct delivery_run *run, bool transport)
{
    smtp_session *s = run->s;
    char text[SMTP_REPLY_MAX + 256];
    bool ok = !run->failed;
    if (ok && run->n == 1) {
        snprintf(text, sizeof(text), "%s", run->text ? run->text : "Ok");
    } else if (ok) {
        snprintf(run->enh, sizeof(run->enh), "2.0.0");
        run->code = 250;
        /* neutral: a copy may have gone plain (action none, or prefer
         * without keys) */
        snprintf(text, sizeof(text), "Ok: %zu copies queued upstream (id %s)",
                 run->n, s->msg_id);
    } else if (transport) {
        snprintf(text, sizeof(text), "Upstream connection lost%s",
                 run->cur > 0 ? " after part of the copies was delivered" : "");
    } else if (run->n == 1) {
        snprintf(text, sizeof(text), "%s", run->text ? run->text : "Refused upstream");
    } else {
        const struct smtp_delivery *d = &run->d[run->cur];
        const char *first = d->n_rcpt ? s->rcpts[d->rcpt_index[0]].addr : "?";
        snprintf(text, sizeof(text),
                 "Upstream refused copy %zu of %zu (for <%s>%s): %s%s", run->cur + 1,
                 run->n, first, d->n_rcpt > 1 ? " and others" : "",
                 run->text ? run->text : "",
                 run->cur > 0 ? " (earlier copies were already delivered)" : "");
    }
    struct smtp_delivery_result res = {
        .n_done = ok ? run->n : run->cur,
        .n_total = run->n,
        .code = run->code,
        .text = text,
        .queue_ids = run->queue_ids,
    };
    snprintf(res.enh, sizeof(res.enh), "%s", run->enh);
    smtp_reply_code(s, run->code, run->enh, text);
    s->run = NULL;
    smtp_txn_reset(s);
    smtp_enter_state(s, SMTP_STATE_READY);
    if (transport)
        smtp_session_schedule_close(s, true);
    run->finished = true;
    if (run->cb)
        run->cb(s, &res, run->arg);
    if (run->refs == 0)
        run_free(run);
    /* else: the last outstanding callback frees it */
}

static void fail_with(struct delivery_run *run, const struct smtp_client_reply *r)
{
    run->failed = true;
    record(run, r);
    if (r->transport) {
        run->code = 421;
        snprintf(run->enh, sizeof(run->enh), "4.4.2");
    }
    finish(run, r->transport);
}

/* Entry guard for client callbacks: one reference is returned; a run
 * that already answered the client (or a cancelled one) only counts down.
 * The session may close inside the callback. */
#define ENTER(run, r)                                                         \
    (run)->refs--;                                                            \
    if ((run)->finished || (r)->cancelled) {                                  \
        if ((run)->finished && (run)->refs == 0)                              \
            run_free(run);                                                    \
        return;                                                               \
    }                                                                         \
    smtp_session *s = (run)->s;                                               \
    smtp_session_enter(s)
#define LEAVE(s) smtp_session_leave(s)

static void start_copy(struct delivery_run *run);

static void final_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    struct delivery_run *run = arg;
    (void)c;
    ENTER(run, r);
    if (r->code != 250) {
        fail_with(run, r);
    } else {
        record(run, r);
        /* Postfix, Exim, Sendmail: "... queued as 4C6A159B32FD" (or
         * "Ok: queued as X"); for the operator's log line only */
        const char *q = r->text ? strstr(r->text, "queued as ") : NULL;
        if (q) {
            q += 10;
            size_t qn = strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-._");
            size_t have = strlen(run->queue_ids);
            if (qn > 0 && qn < 64 && have + qn + 2 < sizeof(run->queue_ids))
                snprintf(run->queue_ids + have, sizeof(run->queue_ids) - have, "%s%.*s",
                         have ? "," : "", (int)qn, q);
        }
        run->cur++;
        if (run->cur < run->n)
            start_copy(run);
        else
            finish(run, false);
    }
    LEAVE(s);
}

static void data_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    struct delivery_run *run = arg;
    ENTER(run, r);
    if (r->code != 354) {
        fail_with(run, r);
    } else {
        const struct smtp_delivery *d = &run->d[run->cur];
        if (smtp_client_body(c, d->fd, d->size, final_reply, run) == 0) {
            run->refs++;
        } else {
            struct smtp_client_reply t = {421, "4.4.2", "cannot send the message", true, false};
            fail_with(run, &t);
        }
    }
    LEAVE(s);
}

static void queue_data(struct delivery_run *run)
{
    if (run_command(run, "DATA", data_reply) < 0) {
        struct smtp_client_reply t = {421, "4.4.2", "upstream connection lost", true, false};
        fail_with(run, &t);
    }
}

/* MAIL and RCPT replies of one copy. */
static void envelope_reply(smtp_client *c, const struct smtp_client_reply *r, void *arg)
{
    struct delivery_run *run = arg;
    (void)c;
    ENTER(run, r);
    if (r->transport) {
        run->pending = 0;
        fail_with(run, r); /* the other queued replies only count down */
        LEAVE(s);
        return;
    }
    if (r->code >= 400 && !run->failed) {
        run->failed = true;
        record(run, r);
    }
    if (--run->pending == 0) {
        if (run->failed) {
            smtp_client_command(s->up, "RSET", 0, NULL, NULL);
            finish(run, false);
        } else {
            queue_data(run);
        }
    }
    LEAVE(s);
}

static void start_copy(struct delivery_run *run)
{
    smtp_session *s = run->s;
    const struct smtp_delivery *d = &run->d[run->cur];
    char line[SMTP_PATH_MAX + SMTP_PARAM_MAX + 128];
    run->pending = 1 + d->n_rcpt;
    snprintf(line, sizeof(line), "MAIL FROM:<%s> SIZE=%llu%s", s->from ? s->from : "",
             (unsigned long long)d->size, s->mail_params);
    int rc = run_command(run, line, envelope_reply);
    for (size_t i = 0; rc == 0 && i < d->n_rcpt; i++) {
        const struct smtp_rcpt *rc_ = &s->rcpts[d->rcpt_index[i]];
        snprintf(line, sizeof(line), "RCPT TO:<%s>%s%s", rc_->addr, rc_->dsn ? " " : "",
                 rc_->dsn ? rc_->dsn : "");
        rc = run_command(run, line, envelope_reply);
    }
    if (rc < 0) {
        /* The client failed synchronously: it is no longer ready. The
         * queued ones were (or will be) failed through their callbacks. */
        if (run->pending == 1 + d->n_rcpt) {
            struct smtp_client_reply t = {421, "4.4.2", "upstream connection lost", true,
                                          false};
            fail_with(run, &t);
        }
    }
}

int smtp_session_deliver(smtp_session *s, const struct smtp_delivery *d, size_t n,
                         smtp_delivered_cb cb, void *arg)
{
    if (n == 0 || s->run || s->state != SMTP_STATE_PROCESSING)
        return -1;
    /* Everything is checked and copied before the run owns anything: the
     * caller's arrays stay the caller's, on failure too. */
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < d[i].n_rcpt; k++)
            if (d[i].rcpt_index[k] >= s->n_rcpts)
                return -1;
    struct delivery_run *run = calloc(1, sizeof(*run));
    if (!run)
        return -1;
    run->s = s;
    run->cb = cb;
    run->arg = arg;
    run->d = calloc(n, sizeof(*run->d));
    if (!run->d) {
        run_free(run);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t *idx = calloc(d[i].n_rcpt ? d[i].n_rcpt : 1, sizeof(*idx));
        if (!idx) {
            run_free(run); /* frees the copies made so far (run->n of them) */
            return -1;
        }
        if (d[i].n_rcpt > 0)
            memcpy(idx, d[i].rcpt_index, d[i].n_rcpt * sizeof(*idx));
        run->d[i] = d[i];
        run->d[i].rcpt_index = idx;
        run->n = i + 1;
    }
    smtp_session_enter(s);
    s->run = run;
    smtp_enter_state(s, SMTP_STATE_DELIVERING);
    if (!s->up || !smtp_client_ready(s->up)) {
        struct smtp_client_reply t = {421, "4.4.2", "upstream connection lost", true, false};
        fail_with(run, &t);
    } else if (n == 1 && d[0].n_rcpt == s->n_rcpts && s->txn_upstream) {
        run->live = true;
        queue_data(run);
    } else {
        if (s->txn_upstream)
            smtp_client_command(s->up, "RSET", 0, NULL, NULL);
        s->txn_upstream = false;
        start_copy(run);
    }
    LEAVE(s);
    return 0;
}
