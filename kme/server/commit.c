/* Group commit of one KME's state changes.
 *
 * Handlers change the in-memory state at once and append the matching ops
 * to the pending batch, with a completion (the HTTP answer) when someone
 * waits for it, then call kme_flush(). kme_flush() merges the pending
 * batch into the ready batch, which the committer thread commits in one
 * transaction (one fsync) as soon as the previous one is done: every
 * change that arrived while a commit was in progress rides the next one,
 * and commits follow each other without waiting for the event loop. The
 * committer hands committed batches back through an async handle; only
 * then are their answers sent and the link told. So no answer or
 * acknowledgement leaves before its change is durable, and after a failed
 * commit nothing later is committed (the KME answers 503 from then on).
 *
 * Changes nobody waits on (link material and reservations, acks,
 * generation, expiry) go through kme_flush_lazy(): while a commit is in
 * progress they ride the next one; when the committer is idle they wait up
 * to LAZY_FLUSH_MS for a change that carries an answer, so a dec_keys
 * arriving just after its reservation shares one commit with it. A key
 * collected in the batch that stores it is never written (its HELD_ADD
 * and HELD_DEL cancel).
 *
 * Threads: pending, in_commit and the completions belong to the loop;
 * ready, done and the flags under k->mu are shared; the committer owns
 * the SQLite connection while running. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

#define LAZY_FLUSH_MS 5

/* ---- batches (loop thread) -------------------------------------------------- */

struct kme_batch *kme_batch(struct kme *k)
{
    if (k->pending == NULL)
        k->pending = calloc(1, sizeof(*k->pending));
    return k->pending;
}

int kme_batch_reserve(struct kme_batch *b, size_t n)
{
    if (n <= b->op_cap - b->op_count)
        return 0;
    size_t cap = b->op_cap > 0 ? b->op_cap : 64;
    while (cap - b->op_count < n) {
        if (cap > SIZE_MAX / 2 / sizeof(*b->ops))
            return -1;
        cap *= 2;
    }
    struct kme_op *ops = realloc(b->ops, cap * sizeof(*ops));
    if (ops == NULL)
        return -1;
    b->ops = ops;
    b->op_cap = cap;
    return 0;
}

struct kme_op *kme_batch_op(struct kme_batch *b, enum kme_op_kind kind)
{
    if (kme_batch_reserve(b, 1) < 0)
        return NULL;
    struct kme_op *op = &b->ops[b->op_count++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    return op;
}

static int done_reserve(struct kme_batch *b, size_t n)
{
    if (n <= b->done_cap - b->done_count)
        return 0;
    size_t cap = b->done_cap > 0 ? b->done_cap : 32;
    while (cap - b->done_count < n) {
        if (cap > SIZE_MAX / 2 / sizeof(*b->done))
            return -1;
        cap *= 2;
    }
    void *d = realloc(b->done, cap * sizeof(*b->done));
    if (d == NULL)
        return -1;
    b->done = d;
    b->done_cap = cap;
    return 0;
}

int kme_batch_on_done(struct kme_batch *b, kme_done_fn fn, void *arg)
{
    if (done_reserve(b, 1) < 0)
        return -1;
    b->done[b->done_count].fn = fn;
    b->done[b->done_count].arg = arg;
    b->done_count++;
    return 0;
}

static void op_clear(struct kme_op *op)
{
    if (op->data != NULL) {
        OPENSSL_cleanse(op->data, op->len);
        free(op->data);
    }
    free(op->master);
    free(op->slave);
    free(op->slaves_json);
}

bool kme_batch_cancel_held_add(struct kme_batch *b, uint64_t off,
                               const char *slave)
{
    /* Newest first: the reservation usually arrived just before. */
    for (size_t i = b->op_count; i-- > 0;) {
        struct kme_op *op = &b->ops[i];
        if (op->kind != KME_OP_HELD_ADD || op->off != off ||
            strcmp(op->slave, slave) != 0)
            continue;
        op_clear(op);
        memmove(op, op + 1, (b->op_count - i - 1) * sizeof(*op));
        b->op_count--;
        return true;
    }
    return false;
}

static void run_completions(struct kme_batch *b, int status)
{
    for (size_t i = 0; i < b->done_count; i++)
        b->done[i].fn(b->done[i].arg, status);
    b->done_count = 0;
}

/* Moves src's ops and completions to the end of dst (under k->mu when dst
 * is ready). A HELD_DEL of src whose HELD_ADD is still in dst cancels it.
 * -1 (nothing moved) when out of memory. */
static int batch_merge(struct kme_batch *dst, struct kme_batch *src)
{
    if (kme_batch_reserve(dst, src->op_count) < 0 ||
        done_reserve(dst, src->done_count) < 0)
        return -1;
    for (size_t i = 0; i < src->op_count; i++) {
        struct kme_op *op = &src->ops[i];
        if (op->kind == KME_OP_HELD_DEL &&
            kme_batch_cancel_held_add(dst, op->off, op->slave)) {
            op_clear(op);
            continue;
        }
        dst->ops[dst->op_count++] = *op;
    }
    if (src->done_count > 0)
        memcpy(dst->done + dst->done_count, src->done,
               src->done_count * sizeof(*src->done));
    dst->done_count += src->done_count;
    src->op_count = 0;
    src->done_count = 0;
    return 0;
}

/* The counters as of now, with every change so far in the batch. */
static void snapshot(struct kme *k, struct kme_batch *b)
{
    b->meta.out_head = k->out.head;
    b->meta.out_acked = k->out_acked;
    b->meta.out_applied = k->out_applied;
    b->meta.in_head = k->in.head;
    b->out_tail = k->out.tail;
    b->in_tail = k->in.tail;
}

static void drop(struct kme_batch **bp)
{
    /* Not committed: the in-memory change dies with the process and
     * nothing was answered for it. */
    run_completions(*bp, KME_SERVER_ESTORE);
    kme_batch_free(bp);
}

void kme_flush(struct kme *k)
{
    if (k->pending == NULL)
        return;
    if (k->stopping || k->failed) {
        drop(&k->pending);
        return;
    }
    if (!k->committer_started)
        return; /* kme_run has not started it yet: kept for then */
    if (k->timers_open > 0)
        uv_timer_stop(&k->flush_timer);
    uv_mutex_lock(&k->mu);
    if (k->ready == NULL) {
        k->ready = k->pending;
        k->pending = NULL;
        k->in_commit++;
        snapshot(k, k->ready);
        uv_cond_signal(&k->cv);
    } else if (batch_merge(k->ready, k->pending) == 0) {
        snapshot(k, k->ready);
        kme_batch_free(&k->pending);
    } /* else: out of memory; kept pending, merged by a later flush */
    uv_mutex_unlock(&k->mu);
}

static void flush_timer_cb(uv_timer_t *t)
{
    kme_flush(t->data);
}

void kme_flush_lazy(struct kme *k)
{
    if (k->pending == NULL)
        return;
    if (k->in_commit > 0 || k->pending->done_count > 0 || k->stopping ||
        k->failed || k->timers_open == 0) {
        kme_flush(k);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&k->flush_timer))
        uv_timer_start(&k->flush_timer, flush_timer_cb, LAZY_FLUSH_MS, 0);
}

/* ---- committer thread ------------------------------------------------------- */

static void committer_main(void *arg)
{
    struct kme *k = arg;
    bool failed = false;
    uv_mutex_lock(&k->mu);
    for (;;) {
        while (k->ready == NULL && !k->commit_quit)
            uv_cond_wait(&k->cv, &k->mu);
        if (k->ready == NULL)
            break;
        struct kme_batch *b = k->ready;
        k->ready = NULL;
        uv_mutex_unlock(&k->mu);
        if (failed) /* later changes build on the failed ones */
            b->result = KME_SERVER_ESTORE;
        else
            kme_store_commit(k->store, b);
        failed = failed || b->result < 0;
        uv_mutex_lock(&k->mu);
        *k->done_tail = b;
        k->done_tail = &b->next;
        uv_async_send(&k->commit_async);
    }
    k->committer_exited = true;
    uv_mutex_unlock(&k->mu);
    uv_async_send(&k->commit_async);
}

static void async_closed(uv_handle_t *h)
{
    struct kme *k = h->data;
    uv_mutex_destroy(&k->mu);
    uv_cond_destroy(&k->cv);
    k->committer_started = false;
}

/* Loop side: committed batches come back. */
static void commit_async_cb(uv_async_t *a)
{
    struct kme *k = a->data;
    uv_mutex_lock(&k->mu);
    struct kme_batch *list = k->done;
    k->done = NULL;
    k->done_tail = &k->done;
    bool exited = k->committer_exited;
    uv_mutex_unlock(&k->mu);
    for (struct kme_batch *b = list; b != NULL; b = b->next) {
        k->in_commit--;
        if (b->result < 0) {
            if (!k->failed)
                qlog_error("kme %s: %s; answering 503 from now on",
                           k->cfg.kme_id,
                           b->error != NULL ? b->error : "commit failed");
            k->failed = true;
        } else if (!k->failed) {
            k->out_committed = b->out_tail;
            k->out_head_committed = b->meta.out_head;
            k->in_committed_tail = b->in_tail;
            k->in_committed_head = b->meta.in_head;
        }
    }
    /* What collected meanwhile goes to the committer first, so that its
     * commit overlaps the sending of these reservations and answers. */
    kme_flush_lazy(k);
    if (list != NULL && !k->failed && !k->stopping)
        kme_link_kick(k);
    while (list != NULL) {
        struct kme_batch *b = list;
        list = b->next;
        run_completions(b, b->result);
        kme_batch_free(&b);
    }
    if (exited && !uv_is_closing((uv_handle_t *)a)) {
        uv_thread_join(&k->committer);
        uv_close((uv_handle_t *)a, async_closed);
    }
}

int kme_commit_start(struct kme *k)
{
    k->done = NULL;
    k->done_tail = &k->done;
    if (uv_mutex_init(&k->mu) < 0)
        return KME_SERVER_ENOMEM;
    if (uv_cond_init(&k->cv) < 0) {
        uv_mutex_destroy(&k->mu);
        return KME_SERVER_ENOMEM;
    }
    int rc = uv_async_init(k->loop, &k->commit_async, commit_async_cb);
    if (rc == 0) {
        k->commit_async.data = k;
        rc = uv_thread_create(&k->committer, committer_main, k);
        if (rc < 0) {
            /* Closed without a thread: async_closed cleans up. */
            k->committer_started = true;
            uv_close((uv_handle_t *)&k->commit_async, async_closed);
            return KME_SERVER_ENOMEM;
        }
    }
    if (rc < 0) {
        uv_mutex_destroy(&k->mu);
        uv_cond_destroy(&k->cv);
        return KME_SERVER_ENOMEM;
    }
    k->committer_started = true;
    return 0;
}

void kme_commit_stop(struct kme *k)
{
    kme_flush(k); /* drops the pending batch (stopping) */
    if (!k->committer_started || uv_is_closing((uv_handle_t *)&k->commit_async))
        return;
    uv_mutex_lock(&k->mu);
    struct kme_batch *b = k->ready;
    k->ready = NULL;
    k->commit_quit = true;
    uv_cond_signal(&k->cv);
    uv_mutex_unlock(&k->mu);
    if (b != NULL) {
        k->in_commit--;
        drop(&b);
    }
}

void kme_commit_destroy(struct kme *k)
{
    /* Only after kme_stopped (or before kme_run): no thread, no handle. */
    kme_batch_free(&k->pending);
}
