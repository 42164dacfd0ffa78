/* Logging to stderr, one line per call, written with a single write(2) so
 * lines from the thread pool never interleave. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum qlog_level current_level = QLOG_INFO;
static const char *current_ident = "qumail";
static qlog_sink current_sink;
static void *current_sink_arg;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void qlog_set_level(enum qlog_level level) { current_level = level; }
enum qlog_level qlog_get_level(void) { return current_level; }
void qlog_set_ident(const char *ident) { current_ident = ident; }

void qlog_set_sink(qlog_sink sink, void *arg)
{
    current_sink = sink;
    current_sink_arg = arg;
}

int qlog_level_parse(const char *name, enum qlog_level *level_r)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level_r = (enum qlog_level)i;
            return 0;
        }
    }
    return -1;
}

__attribute__((format(printf, 2, 0))) void qlogv(enum qlog_level level, const char *fmt, va_list ap)
{
    if (level > current_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000), current_ident,
                     level_names[level]);
    if (n < 0)
        return;
    size_t len = (size_t)n;
    int m = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (m < 0)
        return;
    len += (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* truncated: keep the newline */
    /* Control characters from peers must not forge log lines. */
    for (size_t i = (size_t)n; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch == 0x7f)
            line[i] = '?';
    }
    line[len++] = '\n';
    if (current_sink) {
        current_sink(current_sink_arg, level, line, len);
        return;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void qlog(enum qlog_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qlogv(level, fmt, ap);
    va_end(ap);
}
