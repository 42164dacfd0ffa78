/* smtp_load: command line parsing. */
#include "smtp_load.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sl_opts_usage(FILE *out)
{
    fputs(
"usage: smtp_load --port N [options]\n"
"  --host ADDR         server address (default 127.0.0.1)\n"
"  --port N            server port (required)\n"
"  --concurrency N     concurrent client connections (default 1)\n"
"  --size BYTES        message size, suffix k (x1024) or M (x1048576); default 10k\n"
"  --count N           total messages over all connections (default 100)\n"
"  --seconds S         run for S seconds instead of a count\n"
"  --from ADDR         envelope sender (default alice@example.org)\n"
"  --to ADDR[,ADDR..]  recipients of every message; repeatable (default bob@example.org)\n"
"  --ehlo NAME         EHLO argument (default smtp-load.localhost)\n"
"  --timeout S         seconds to wait for each reply (default 30)\n"
"  --json              print one JSON object instead of text\n"
"Each connection sends EHLO once, then MAIL, RCPT.., DATA per message, RSET\n"
"between messages, QUIT at the end; no pipelining. Latency is measured from\n"
"sending MAIL FROM to the final reply after the message's \".\".\n", out);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned long long mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mult = (uint64_t)1024 * 1024, end++;
    if (*end != '\0' || v > SL_MAX_SIZE / mult)
        return -1;
    *out = (size_t)(v * mult);
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v <= 0 || v > 86400)
        return -1;
    *out = v;
    return 0;
}

/* Appends each comma-separated address of list to o->to. */
static int add_rcpts(struct sl_opts *o, const char *list, const char **error_r)
{
    const char *p = list;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len > 256 || memchr(p, '<', len) || memchr(p, '>', len)
            || memchr(p, ' ', len) || memchr(p, '\r', len) || memchr(p, '\n', len)) {
            *error_r = "--to: bad address";
            return -1;
        }
        if (o->nto >= SL_MAX_RCPTS) {
            *error_r = "--to: too many recipients";
            return -1;
        }
        char **to = realloc(o->to, (o->nto + 1) * sizeof(*to));
        if (to == NULL)
            goto nomem;
        o->to = to;
        o->to[o->nto] = strndup(p, len);
        if (o->to[o->nto] == NULL)
            goto nomem;
        o->nto++;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
nomem:
    *error_r = "out of memory";
    return -1;
}

static int set_str(char **dst, const char *src, const char **error_r)
{
    char *s = strdup(src);
    if (s == NULL) {
        *error_r = "out of memory";
        return -1;
    }
    free(*dst);
    *dst = s;
    return 0;
}

static bool valid_word(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] == 0x7f || s[i] == '<' || s[i] == '>')
            return false;
    return true;
}

int sl_opts_parse(struct sl_opts *o, int argc, char **argv, const char **error_r)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"concurrency", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 'S'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"ehlo", required_argument, NULL, 'e'},
        {"timeout", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->concurrency = 1;
    o->size = (size_t)10 * 1024;
    o->timeout = 30;
    bool have_count = false;
    uint64_t v;
    int ch;

    if (set_str(&o->host, "127.0.0.1", error_r) < 0
        || set_str(&o->from, "alice@example.org", error_r) < 0
        || set_str(&o->ehlo, "smtp-load.localhost", error_r) < 0)
        return -1;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            if (set_str(&o->host, optarg, error_r) < 0)
                return -1;
            break;
        case 'p':
            if (parse_u64(optarg, 65535, &v) < 0 || v == 0) {
                *error_r = "--port: expected 1..65535";
                return -1;
            }
            o->port = (int)v;
            break;
        case 'c':
            if (parse_u64(optarg, SL_MAX_CONCURRENCY, &v) < 0 || v == 0) {
                *error_r = "--concurrency: expected 1..10000";
                return -1;
            }
            o->concurrency = (unsigned)v;
            break;
        case 's':
            if (parse_size(optarg, &o->size) < 0) {
                *error_r = "--size: expected BYTES[k|M] up to 1 GiB";
                return -1;
            }
            break;
        case 'n':
            if (parse_u64(optarg, UINT64_MAX / 2, &o->count) < 0 || o->count == 0) {
                *error_r = "--count: expected a positive number";
                return -1;
            }
            have_count = true;
            break;
        case 'S':
            if (parse_seconds(optarg, &o->seconds) < 0) {
                *error_r = "--seconds: expected 0 < S <= 86400";
                return -1;
            }
            break;
        case 'f':
            if (!valid_word(optarg, 256)) {
                *error_r = "--from: bad address";
                return -1;
            }
            if (set_str(&o->from, optarg, error_r) < 0)
                return -1;
            break;
        case 't':
            if (add_rcpts(o, optarg, error_r) < 0)
                return -1;
            break;
        case 'e':
            if (!valid_word(optarg, 255)) {
                *error_r = "--ehlo: bad name";
                return -1;
            }
            if (set_str(&o->ehlo, optarg, error_r) < 0)
                return -1;
            break;
        case 'T':
            if (parse_seconds(optarg, &o->timeout) < 0) {
                *error_r = "--timeout: expected 0 < S <= 86400";
                return -1;
            }
            break;
        case 'j':
            o->json = true;
            break;
        case 'H':
            *error_r = NULL;
            return -1;
        default:
            *error_r = "unknown option";
            return -1;
        }
    }
    if (optind != argc) {
        *error_r = "unexpected argument";
        return -1;
    }
    if (o->port == 0) {
        *error_r = "--port is required";
        return -1;
    }
    if (have_count && o->seconds > 0) {
        *error_r = "--count and --seconds exclude each other";
        return -1;
    }
    if (!have_count && o->seconds == 0)
        o->count = 100;
    if (o->nto == 0 && add_rcpts(o, "bob@example.org", error_r) < 0)
        return -1;
    return 0;
}

void sl_opts_clear(struct sl_opts *o)
{
    free(o->host);
    free(o->from);
    free(o->ehlo);
    for (size_t i = 0; i < o->nto; i++)
        free(o->to[i]);
    free(o->to);
    memset(o, 0, sizeof(*o));
}
