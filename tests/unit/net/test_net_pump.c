/* net_pump over a real loopback connection: a byte range of a file arrives
 * exactly (with and without a filter), the output queue stays bounded
 * while the reader does not read (the pump waits for NET_EV_DRAINED), and
 * a file shorter than the range fails with UV_EOF. Each test runs its loop
 * to the end and fails if a handle is left open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "net.h"

#define HIGH ((size_t)64 * 1024)
#define CHUNK ((size_t)16 * 1024)

struct fix {
    uv_loop_t loop;
    net_listener *l;
    net_conn *srv, *cli;
    net_pump *pump;
    struct net_pump_config cfg;
    struct net_pump_filter filter;
    int last_rc;
    bool saw_more;
    size_t max_pending;
    size_t bound;
    /* reader */
    uv_timer_t hold;     /* keeps the reader paused for a while */
    bool reader_paused;
    char *got;
    size_t got_len, got_cap;
    bool got_eof;
};

/* A filter that doubles every 'x' and ends with "END". */
static size_t double_x(void *arg, const char *in, size_t len, char *out)
{
    size_t *calls = arg;
    (*calls)++;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        out[n++] = in[i];
        if (in[i] == 'x')
            out[n++] = 'x';
    }
    return n;
}

static size_t end_mark(void *arg, char *out)
{
    (void)arg;
    memcpy(out, "END", 3); /* NOLINT(bugprone-not-null-terminated-result): bytes, not a string */
    return 3;
}

static void run_pump(struct fix *f)
{
    int rc = net_pump_run(f->pump);
    size_t pending = net_conn_output_pending(f->srv);
    if (pending > f->max_pending)
        f->max_pending = pending;
    f->last_rc = rc;
    if (rc == NET_PUMP_MORE) {
        f->saw_more = true;
        return;
    }
    net_pump_free(&f->pump);
    if (rc == NET_PUMP_DONE)
        net_conn_close_after_write(&f->srv);
    else
        net_conn_close(&f->srv);
}

static void srv_cb(net_conn *conn, enum net_event ev, void *arg)
{
    struct fix *f = arg;
    (void)conn;
    if (ev == NET_EV_DRAINED && f->pump)
        run_pump(f);
    else if (ev == NET_EV_ERROR || ev == NET_EV_EOF) {
        net_pump_free(&f->pump);
        net_conn_close(&f->srv);
    }
}

static void on_accept(net_listener *l, net_conn *conn, void *arg)
{
    struct fix *f = arg;
    (void)l;
    f->srv = conn;
    net_conn_set_cb(conn, srv_cb, f);
    f->pump = net_pump_new(conn, &f->cfg);
    assert_non_null(f->pump);
    run_pump(f);
    net_listener_close(&f->l);
}

static void cli_cb(net_conn *conn, enum net_event ev, void *arg)
{
    struct fix *f = arg;
    (void)conn;
    if (ev == NET_EV_READ) {
        size_t avail;
        const char *in = net_conn_input(f->cli, &avail);
        if (f->got_len + avail > f->got_cap) {
            f->got_cap = (f->got_len + avail) * 2;
            f->got = realloc(f->got, f->got_cap);
            assert_non_null(f->got);
        }
        memcpy(f->got + f->got_len, in, avail);
        f->got_len += avail;
        net_conn_consume(f->cli, avail);
    } else if (ev == NET_EV_EOF || ev == NET_EV_ERROR) {
        f->got_eof = true;
        net_conn_close(&f->cli);
    }
}

static void hold_done(uv_timer_t *t)
{
    struct fix *f = t->data;
    /* The writer has been blocked by now (kernel buffers full): read. */
    if (!f->saw_more && f->pump) {
        uv_timer_start(&f->hold, hold_done, 20, 0);
        return;
    }
    f->reader_paused = false;
    if (f->cli)
        net_conn_resume(f->cli);
    uv_close((uv_handle_t *)&f->hold, NULL);
}

static void on_connected(net_conn *conn, enum net_event ev, void *arg)
{
    struct fix *f = arg;
    if (ev == NET_EV_CONNECTED) {
        net_conn_set_cb(conn, cli_cb, f);
        if (f->reader_paused) {
            net_conn_pause(conn);
            uv_timer_init(&f->loop, &f->hold);
            f->hold.data = f;
            uv_timer_start(&f->hold, hold_done, 20, 0);
        }
        return;
    }
    cli_cb(conn, ev, arg);
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %d\n", (int)h->type);
}

static int temp_file(const char *data, size_t len)
{
    char path[] = "/tmp/qumail-pump-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    return fd;
}

static void run_fix(struct fix *f)
{
    char *err = NULL;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->l = net_listen(&f->loop, "127.0.0.1", 0, on_accept, f, &err);
    assert_non_null(f->l);
    f->cli = net_connect(&f->loop, "127.0.0.1", net_listener_port(f->l), on_connected, f);
    assert_non_null(f->cli);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_walk(&f->loop, walk_cb, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static char *pattern(size_t len)
{
    char *p = malloc(len);
    assert_non_null(p);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (x >> 16) % 7 == 0 ? 'x' : (char)('a' + (x >> 20) % 26);
    }
    return p;
}

/* 24 MiB (more than the kernel buffers hold) through a reader that holds off until the pump had to wait: the
 * range arrives exactly and the queue stayed within the bound. */
static void test_range_with_backpressure(void **state)
{
    (void)state;
    const size_t size = 24u << 20;
    char *data = pattern(size);
    int fd = temp_file(data, size);
    struct fix f;
    memset(&f, 0, sizeof(f));
    f.reader_paused = true;
    f.cfg = (struct net_pump_config){
        .fd = fd, .offset = 1000, .length = size - 2000, .chunk_size = CHUNK,
        .high_water = HIGH};
    run_fix(&f);
    assert_true(f.saw_more);
    assert_int_equal(f.last_rc, NET_PUMP_DONE);
    assert_true(f.max_pending <= HIGH + CHUNK);
    assert_int_equal(f.got_len, size - 2000);
    assert_memory_equal(f.got, data + 1000, size - 2000);
    free(f.got);
    free(data);
    close(fd);
}

/* A filter transforms each chunk and adds its end. */
static void test_filter(void **state)
{
    (void)state;
    const size_t size = 300000;
    char *data = pattern(size);
    int fd = temp_file(data, size);
    size_t calls = 0;
    struct fix f;
    memset(&f, 0, sizeof(f));
    f.filter = (struct net_pump_filter){
        .chunk = double_x, .end = end_mark, .out_factor = 2, .out_extra = 3, .arg = &calls};
    f.cfg = (struct net_pump_config){
        .fd = fd, .offset = 0, .length = size, .chunk_size = CHUNK, .high_water = HIGH,
        .filter = &f.filter};
    run_fix(&f);
    assert_int_equal(f.last_rc, NET_PUMP_DONE);
    assert_int_equal(calls, (size + CHUNK - 1) / CHUNK);
    char *want = malloc(2 * size + 3);
    assert_non_null(want);
    size_t n = double_x(&calls, data, size, want);
    memcpy(want + n, "END", 3); /* NOLINT(bugprone-not-null-terminated-result) */
    n += 3;
    assert_int_equal(f.got_len, n);
    assert_memory_equal(f.got, want, n);
    free(want);
    free(f.got);
    free(data);
    close(fd);
}

/* A range past the end of the file: UV_EOF after what there was. */
static void test_short_file(void **state)
{
    (void)state;
    int fd = temp_file("hello", 5);
    struct fix f;
    memset(&f, 0, sizeof(f));
    f.cfg = (struct net_pump_config){.fd = fd, .offset = 2, .length = 10};
    run_fix(&f);
    assert_int_equal(f.last_rc, UV_EOF);
    assert_true(f.got_len <= 3);
    free(f.got);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_with_backpressure),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_short_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
