/* imap_load: IMAP FETCH load generator for tests/bench/imap (benchmark
 * tool, not product code).
 *
 *   imap_load HOST PORT USER PASS MAILBOX CLIENTS COMMAND
 *
 * Opens CLIENTS connections; each logs in and EXAMINEs MAILBOX. When all
 * are ready it prints "READY n" and waits for a line on stdin (the caller
 * samples CPU counters), then every client sends COMMAND at once; the
 * responses are scanned, not parsed: lines are counted, each literal is
 * skipped by its {N} size. When all are done it prints
 *   DONE seconds responses literal_octets errors
 * and waits for another line before LOGOUT, so server processes are still
 * there to be measured. One thread, epoll; the reading loop costs a few
 * instructions per octet, so the servers, not this client, are measured
 * (the Python clients of loadgen.py topped out near 10,000 messages/s). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN 65536
#define READ_CHUNK (1 << 20)

enum cstate { C_GREETING, C_LOGIN, C_EXAMINE, C_READY, C_FETCH, C_DONE, C_FAILED };
static const char *const cstate_names[] = {"greeting", "login", "examine", "ready",
                                           "fetch", "done", "failed"};

struct client {
    int fd;
    enum cstate state;
    char line[LINE_MAX_LEN]; /* the line being assembled (literals skipped) */
    size_t line_len;
    uint64_t skip;           /* literal octets still to skip */
    uint64_t responses, literal_octets;
    double t0, t1;
};

static const char *g_user, *g_pass, *g_box, *g_cmd;
static unsigned g_ready, g_finished;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            usleep(100); /* commands are short; this is rare */
            continue;
        }
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_cmd(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int send_cmd(struct client *c, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    return send_all(c->fd, buf, (size_t)n);
}

/* The one place where a client changes state, driven by complete lines. */
static void on_line(struct client *c, const char *line, size_t len)
{
    bool tagged_ok = len >= 5 && line[1] == ' ' && strncmp(line + 2, "OK", 2) == 0;
    switch (c->state) {
    case C_GREETING:
        if (strncmp(line, "* OK", 4) != 0 ||
            send_cmd(c, "a LOGIN \"%s\" \"%s\"\r\n", g_user, g_pass) < 0)
            goto fail;
        c->state = C_LOGIN;
        return;
    case C_LOGIN:
        if (line[0] != 'a')
            return;
        if (!tagged_ok || send_cmd(c, "b EXAMINE \"%s\"\r\n", g_box) < 0)
            goto fail;
        c->state = C_EXAMINE;
        return;
    case C_EXAMINE:
        if (line[0] != 'b')
            return;
        if (!tagged_ok)
            goto fail;
        c->state = C_READY;
        g_ready++;
        return;
    case C_FETCH:
        if (line[0] == '*')
            c->responses++;
        else if (line[0] == 'c') {
            c->t1 = now();
            c->state = tagged_ok ? C_DONE : C_FAILED;
            if (!tagged_ok)
                fprintf(stderr, "imap_load: %.*s", (int)len, line);
            g_finished++;
        }
        return;
    default:
        return;
    }
fail:
    fprintf(stderr, "imap_load: failed in %s: %.*s", cstate_names[c->state], (int)len, line);
    if (c->state == C_FETCH)
        g_finished++;
    c->state = C_FAILED;
}

/* Scans what arrived: skips literals, assembles and dispatches lines. */
static void on_data(struct client *c, const char *p, size_t n)
{
    while (n > 0) {
        if (c->skip > 0) {
            size_t take = n < c->skip ? n : (size_t)c->skip;
            c->skip -= take;
            p += take;
            n -= take;
            continue;
        }
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) + 1 : n;
        if (c->line_len + take > sizeof(c->line)) {
            fprintf(stderr, "imap_load: line longer than %d\n", LINE_MAX_LEN);
            c->state = C_FAILED;
            return;
        }
        memcpy(c->line + c->line_len, p, take);
        c->line_len += take;
        p += take;
        n -= take;
        if (!nl)
            return;
        const char *l = c->line;
        size_t len = c->line_len;
        c->line_len = 0;
        on_line(c, l, len);
        /* a literal follows a line ending in {N}\r\n (or {N+}) */
        if (len >= 4 && l[len - 3] == '}' && l[len - 2] == '\r') {
            const char *b = memrchr(l, '{', len);
            if (b) {
                uint64_t v = strtoull(b + 1, NULL, 10);
                c->skip = v;
                c->literal_octets += v;
            }
        }
    }
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int wait_line_on_stdin(void)
{
    char buf[64];
    return fgets(buf, sizeof(buf), stdin) ? 0 : -1;
}

/* Runs the loop until pred() holds for all clients or a timeout. */
static void pump(int ep, struct client *cs, unsigned n, bool (*pred)(void), double timeout,
                 char *rbuf)
{
    double deadline = now() + timeout;
    struct epoll_event evs[256];
    while (!pred() && now() < deadline) {
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < k; i++) {
            struct client *c = &cs[evs[i].data.u32];
            for (;;) {
                ssize_t r = recv(c->fd, rbuf, READ_CHUNK, 0);
                if (r > 0) {
                    on_data(c, rbuf, (size_t)r);
                    if (r < READ_CHUNK)
                        break;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (c->state != C_DONE && c->state != C_FAILED) {
                    fprintf(stderr, "imap_load: connection closed in %s\n",
                            cstate_names[c->state]);
                    if (c->state == C_FETCH)
                        g_finished++;
                    c->state = C_FAILED;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                break;
            }
        }
    }
    (void)n;
}

static unsigned g_n, g_failed_setup;
static struct client *g_cs;

static bool all_ready(void)
{
    unsigned failed = 0;
    for (unsigned i = 0; i < g_n; i++)
        failed += g_cs[i].state == C_FAILED;
    g_failed_setup = failed;
    return g_ready + failed >= g_n;
}

static bool all_finished(void)
{
    return g_finished >= g_ready;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: imap_load HOST PORT USER PASS MAILBOX CLIENTS COMMAND\n");
        return 2;
    }
    g_user = argv[3];
    g_pass = argv[4];
    g_box = argv[5];
    g_cmd = argv[7];
    g_n = (unsigned)strtoul(argv[6], NULL, 10);
    long port = strtol(argv[2], NULL, 10);
    if (g_n == 0 || g_n > 20000 || port <= 0 || port > 65535)
        return 2;
    g_cs = calloc(g_n, sizeof(*g_cs));
    char *rbuf = malloc(READ_CHUNK); /* owned: freed at the end */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g_cs || !rbuf || ep < 0) {
        free(rbuf);
        free(g_cs);
        return 1;
    }
    for (unsigned i = 0; i < g_n; i++) {
        g_cs[i].fd = connect_to(argv[1], (int)port);
        if (g_cs[i].fd < 0) {
            g_cs[i].state = C_FAILED;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, g_cs[i].fd, &ev);
    }
    pump(ep, g_cs, g_n, all_ready, 120, rbuf);
    printf("READY %u\n", g_ready);
    fflush(stdout);
    if (wait_line_on_stdin() < 0)
        g_n = 0; /* the caller went away: close everything below */
    double t0 = now();
    for (unsigned i = 0; i < g_n; i++) {
        struct client *c = &g_cs[i];
        if (c->state != C_READY)
            continue;
        c->state = C_FETCH;
        c->t0 = now();
        if (send_cmd(c, "c %s\r\n", g_cmd) < 0) {
            c->state = C_FAILED;
            g_finished++;
        }
    }
    pump(ep, g_cs, g_n, all_finished, 1800, rbuf);
    double t1 = t0;
    uint64_t responses = 0, octets = 0;
    unsigned errors = 0; /* clients that did not complete the command */
    for (unsigned i = 0; i < g_n; i++) {
        struct client *c = &g_cs[i];
        if (c->state != C_DONE) {
            errors++;
            continue;
        }
        responses += c->responses;
        octets += c->literal_octets;
        if (c->t1 > t1)
            t1 = c->t1;
    }
    printf("DONE %.6f %llu %llu %u\n", t1 - t0, (unsigned long long)responses,
           (unsigned long long)octets, errors);
    fflush(stdout);
    wait_line_on_stdin();
    for (unsigned i = 0; i < g_n; i++) {
        if (g_cs[i].fd >= 0) {
            if (g_cs[i].state == C_DONE)
                send_all(g_cs[i].fd, "z LOGOUT\r\n", 10);
            close(g_cs[i].fd);
        }
    }
    close(ep);
    free(rbuf);
    free(g_cs);
    return errors ? 1 : 0;
}
