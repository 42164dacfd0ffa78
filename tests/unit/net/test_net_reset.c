/* net: a peer that resets the connection (RST) must not kill the process.
 *
 * After the kernel reported ECONNRESET once, the next write(2) on that
 * socket fails with EPIPE and raises SIGPIPE, whose default action ends
 * the process. libuv writes with write(2) (no MSG_NOSIGNAL). The admin
 * listener's test daemon died this way (CI, admin_http: a client read the
 * first 100 bytes of a 400 and closed; the second write of the reply met
 * the RST, and net_conn wrote again through uv_write).
 *
 * Real sockets on 127.0.0.1. The client is a plain socket closed with
 * SO_LINGER {1, 0}, which makes the kernel send RST at once. This file
 * does NOT ignore SIGPIPE in main(): it runs as a program that never
 * thought about it. */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "net.h"

static volatile sig_atomic_t sigpipes;

static void count_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

/* Counts SIGPIPE instead of dying of it: every write(2) that met EPIPE. */
static void catch_sigpipe(struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = count_sigpipe;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &sa, old), 0);
    sigpipes = 0;
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "leaked handle type %s\n", uv_handle_type_name(h->type));
}

static void finish_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        uv_walk(loop, walk_cb, NULL);
    assert_int_equal(rc, 0);
}

struct rst {
    net_listener *listener;
    net_conn *conn;       /* the server side */
    bool pause_at_accept; /* no reading: the RST is found by a write */
    bool write_in_error;  /* write from inside the NET_EV_ERROR callback */
    bool close_in_error;
    int errors;
    int error_code;
    int write_rc_in_error; /* what that write returned */
    int drained_after_error;
};

static void server_cb(net_conn *c, enum net_event ev, void *arg)
{
    struct rst *r = arg;
    switch (ev) {
    case NET_EV_ERROR:
        r->errors++;
        r->error_code = net_conn_error_code(c);
        if (r->write_in_error)
            r->write_rc_in_error = net_conn_write(c, "421 bye\r\n", 9);
        if (r->close_in_error)
            net_conn_close(&r->conn);
        return;
    case NET_EV_DRAINED:
        if (r->errors > 0)
            r->drained_after_error++;
        return;
    default:
        return;
    }
}

static void server_accept(net_listener *l, net_conn *c, void *arg)
{
    struct rst *r = arg;
    r->conn = c;
    net_conn_set_cb(c, server_cb, r);
    if (r->pause_at_accept)
        net_conn_pause(c);
    net_listener_close(&r->listener);
    (void)l;
}

/* A blocking client connected to the listener; the server side is
 * accepted (and set up by server_accept) when this returns. */
static int connect_client(uv_loop_t *loop, struct rst *r)
{
    char *err = NULL;
    r->listener = net_listen(loop, "127.0.0.1", 0, server_accept, r, &err);
    assert_non_null(r->listener);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(net_listener_port(r->listener));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    while (r->conn == NULL)
        uv_run(loop, UV_RUN_ONCE); /* the accept */
    return fd;
}

/* Closes with RST: SO_LINGER with a zero timeout. */
static void reset_client(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd);
}

static bool is_reset_code(int rc)
{
    return rc == UV_ECONNRESET || rc == UV_EPIPE;
}

/* The admin case: a reply written in two parts, the peer's RST arriving
 * between them. The write that meets the RST fails in the kernel
 * (ECONNRESET), no later write reaches the socket (it would be EPIPE +
 * SIGPIPE), the owner hears NET_EV_ERROR once, on a later loop turn (never
 * from inside net_conn_write, which returns 0 as for a queued write), and
 * a close after write ends at once. */
static void test_write_to_reset_peer_fails_once(void **state)
{
    (void)state;
    struct sigaction old;
    catch_sigpipe(&old);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rst r = {.pause_at_accept = true};
    int fd = connect_client(&loop, &r);
    reset_client(fd);

    /* Each write is followed by a second one before the loop runs again:
     * the two parts of a reply. Writes succeed until the RST has arrived
     * (on loopback it already has); the bound is for a broken kernel, not
     * a speed. */
    for (int i = 0; i < 10000 && r.errors == 0; i++) {
        assert_int_equal(net_conn_write(r.conn, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
        assert_int_equal(net_conn_write(r.conn, "bad request\n", 12), 0);
        assert_int_equal(sigpipes, 0);
        uv_run(&loop, UV_RUN_NOWAIT);
        if (r.errors == 0)
            usleep(1000);
    }
    assert_int_equal(r.errors, 1);
    assert_true(is_reset_code(r.error_code));
    assert_true(strstr(net_conn_error(r.conn), "write") != NULL);
    assert_int_equal(sigpipes, 0);

    /* More output for the connection known to have failed: refused with
     * its code, no system call, no second error. */
    assert_int_equal(net_conn_write(r.conn, "more\n", 5), r.error_code);
    assert_int_equal(net_conn_printf(r.conn, "%s", "more\n"), r.error_code);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(sigpipes, 0);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.drained_after_error, 0);

    /* Nothing to linger for on a reset socket. */
    net_conn_close_after_write(&r.conn);
    finish_loop(&loop);
    assert_int_equal(r.errors, 1);
    assert_int_equal(sigpipes, 0);

    /* A handler the program installed is its own: net keeps it. */
    struct sigaction now;
    sigaction(SIGPIPE, NULL, &now);
    assert_ptr_equal(now.sa_handler, count_sigpipe);
    sigaction(SIGPIPE, &old, NULL);
}

/* The RST is found by a read first (the usual order): a protocol that
 * answers an error with a last line gets the error's code, and nothing is
 * written to the reset socket (EPIPE, SIGPIPE). */
static void test_write_after_read_reset_fails(void **state)
{
    (void)state;
    struct sigaction old;
    catch_sigpipe(&old);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rst r = {.write_in_error = true, .close_in_error = true};
    int fd = connect_client(&loop, &r);
    reset_client(fd);
    finish_loop(&loop); /* the read fails, the callback writes and closes */
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.error_code, UV_ECONNRESET);
    assert_int_equal(r.write_rc_in_error, UV_ECONNRESET); /* told: failed */
    assert_int_equal(sigpipes, 0);
    sigaction(SIGPIPE, &old, NULL);
}

/* A program that left SIGPIPE at its default: net ignores it once it has
 * a connection (libuv writes with write(2); any write after a reset would
 * otherwise end the process). Run in a child: the disposition is global. */
static void test_sigpipe_default_is_ignored(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct rst r = {0};
        int fd = connect_client(&loop, &r);
        struct sigaction now;
        sigaction(SIGPIPE, NULL, &now);
        /* Proof by the kernel: a write to a socket whose peer reset, after
         * the reset was reported, is EPIPE; the process must survive it. */
        reset_client(fd);
        net_conn_close(&r.conn);
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            _exit(3);
        close(sv[1]);
        ssize_t n = write(sv[0], "x", 1);
        _exit(now.sa_handler == SIG_IGN && n < 0 && errno == EPIPE ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* whatever the parent left: a plain program */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_to_reset_peer_fails_once),
        cmocka_unit_test(test_write_after_read_reset_fails),
        cmocka_unit_test(test_sigpipe_default_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
