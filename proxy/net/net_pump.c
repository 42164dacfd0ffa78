/* net_pump: a byte range of a file out through a net_conn, read chunk by
 * chunk while the connection's output queue allows (net.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

#define PUMP_CHUNK ((size_t)64 * 1024)
#define PUMP_HIGH_WATER ((size_t)256 * 1024)

struct net_pump {
    net_conn *conn;            /* the caller's */
    int fd;                    /* the caller's */
    uint64_t off, end;         /* next byte to read, end of the range */
    uint64_t start;
    size_t chunk, high_water;
    struct net_pump_filter filter;
    bool filtered;
    bool finished;             /* DONE or failed: run does nothing more */
    char *in;                  /* chunk bytes (owned) */
    char *out;                 /* filtered bytes (owned), or NULL */
    size_t out_cap;
};

net_pump *net_pump_new(net_conn *conn, const struct net_pump_config *cfg)
{
    net_pump *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->conn = conn;
    p->fd = cfg->fd;
    p->start = p->off = cfg->offset;
    /* An end past any file fails at its end (UV_EOF), not by wrapping. */
    p->end = cfg->length > UINT64_MAX - cfg->offset ? UINT64_MAX : cfg->offset + cfg->length;
    p->chunk = cfg->chunk_size ? cfg->chunk_size : PUMP_CHUNK;
    p->high_water = cfg->high_water ? cfg->high_water : PUMP_HIGH_WATER;
    p->in = malloc(p->chunk);
    if (cfg->filter) {
        p->filter = *cfg->filter;
        p->filtered = true;
        size_t factor = p->filter.out_factor ? p->filter.out_factor : 1;
        p->out_cap = p->chunk * factor + p->filter.out_extra;
        p->out = malloc(p->out_cap);
    }
    if (!p->in || (p->filtered && !p->out)) {
        net_pump_free(&p);
        return NULL;
    }
    return p;
}

void net_pump_free(net_pump **pp)
{
    net_pump *p = pp ? *pp : NULL;
    if (!p)
        return;
    *pp = NULL;
    free(p->in);
    free(p->out);
    free(p);
}

uint64_t net_pump_done_bytes(const net_pump *p) { return p->off - p->start; }

static int fail(net_pump *p, int code)
{
    p->finished = true;
    return code;
}

int net_pump_run(net_pump *p)
{
    if (p->finished)
        return NET_PUMP_DONE;
    while (p->off < p->end) {
        if (net_conn_output_pending(p->conn) > p->high_water)
            return NET_PUMP_MORE; /* NET_EV_DRAINED resumes */
        uint64_t want = p->end - p->off;
        if (want > p->chunk)
            want = p->chunk;
        ssize_t n;
        do
            n = pread(p->fd, p->in, (size_t)want, (off_t)p->off);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return fail(p, UV_EIO);
        if (n == 0)
            return fail(p, UV_EOF);
        p->off += (uint64_t)n;
        const char *data = p->in;
        size_t len = (size_t)n;
        if (p->filtered) {
            len = p->filter.chunk(p->filter.arg, p->in, len, p->out);
            data = p->out;
        }
        int rc = net_conn_write(p->conn, data, len);
        if (rc < 0)
            return fail(p, rc);
    }
    p->finished = true;
    if (p->filtered && p->filter.end) {
        size_t len = p->filter.end(p->filter.arg, p->out);
        int rc = net_conn_write(p->conn, p->out, len);
        if (rc < 0)
            return fail(p, rc);
    }
    return NET_PUMP_DONE;
}
