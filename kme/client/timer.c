/* Timers owned by one object each (one-shot, re-armable): released with
 * kme_timer_free(), which closes the libuv handle and frees
 * the memory on the loop (libuv's rule: memory of a handle is freed only in
 * its close callback). */
#include <stdlib.h>

#include "client_internal.h"

struct kme_timer {
    uv_timer_t handle;
    kme_timer_cb cb;
    void *arg;
};

static void fire(uv_timer_t *h)
{
    kme_timer *t = h->data;
    t->cb(t->arg);
}

static void closed(uv_handle_t *h)
{
    free(h->data);
}

kme_timer *kme_timer_new(uv_loop_t *loop, kme_timer_cb cb, void *arg)
{
    kme_timer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cb = cb;
    t->arg = arg;
    uv_timer_init(loop, &t->handle);
    t->handle.data = t;
    return t;
}

void kme_timer_restart(kme_timer *t, uint64_t ms)
{
    uv_timer_start(&t->handle, fire, ms, 0);
}

void kme_timer_stop(kme_timer *t)
{
    uv_timer_stop(&t->handle);
}

kme_timer *kme_timer_start(uv_loop_t *loop, uint64_t ms, kme_timer_cb cb, void *arg)
{
    kme_timer *t = kme_timer_new(loop, cb, arg);
    if (t != NULL)
        kme_timer_restart(t, ms);
    return t;
}

void kme_timer_free(kme_timer **tp)
{
    kme_timer *t = *tp;
    *tp = NULL;
    if (t == NULL)
        return;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, closed);
}
