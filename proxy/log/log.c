/* Logging: one line per line of a message, written with a single write(2)
 * (or syslog call) so lines from the thread pool never interleave; to
 * stderr with a timestamp, to the journal with <N> priority prefixes, or to
 * syslog(3). */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum qlog_level current_level = QLOG_INFO;
static const char *current_ident = "qumail";
static qlog_sink current_sink;
static void *current_sink_arg;
static enum qlog_target current_target = QLOG_TARGET_STDERR;

#define MAX_CONTINUATION 64 /* lines of one multi-line message */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void qlog_set_level(enum qlog_level level) { current_level = level; }
enum qlog_level qlog_get_level(void) { return current_level; }
void qlog_set_ident(const char *ident) { current_ident = ident; }

void qlog_set_sink(qlog_sink sink, void *arg)
{
    current_sink = sink;
    current_sink_arg = arg;
}

static const char *const target_names[] = {"stderr", "journal", "syslog"};

/* stderr is the journal when JOURNAL_STREAM names its device and inode
 * (systemd.exec(5)). */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    char *end;
    if (!js || fstat(STDERR_FILENO, &st) < 0)
        return false;
    unsigned long long dev = strtoull(js, &end, 10);
    if (end == js || *end != ':')
        return false;
    const char *i = end + 1;
    unsigned long long ino = strtoull(i, &end, 10);
    if (end == i || *end != '\0')
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int qlog_target_parse(const char *name, enum qlog_target *target_r)
{
    if (strcmp(name, "auto") == 0) {
        *target_r = stderr_is_journal() ? QLOG_TARGET_JOURNAL : QLOG_TARGET_STDERR;
        return 0;
    }
    for (size_t i = 0; i < sizeof(target_names) / sizeof(target_names[0]); i++) {
        if (strcmp(name, target_names[i]) == 0) {
            *target_r = (enum qlog_target)i;
            return 0;
        }
    }
    return -1;
}

const char *qlog_target_name(enum qlog_target target)
{
    return target_names[target];
}

void qlog_set_target(enum qlog_target target)
{
    if (target == QLOG_TARGET_SYSLOG && current_target != QLOG_TARGET_SYSLOG)
        openlog(current_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    current_target = target;
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

/* One output line: prefix (by target), an indent for continuation lines,
 * the text with control characters replaced. One write (or sink call). */
static void emit(enum qlog_level level, const char *stamp, const char *text, size_t tlen,
                 bool continuation)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char line[2304];
    int n;
    if (current_target == QLOG_TARGET_JOURNAL)
        n = snprintf(line, sizeof(line), "<%d>%s: %s", prio[level], level_names[level],
                     continuation ? "  " : "");
    else if (current_target == QLOG_TARGET_SYSLOG)
        n = snprintf(line, sizeof(line), "%s: %s", level_names[level], continuation ? "  " : "");
    else
        n = snprintf(line, sizeof(line), "%s %s %s: %s", stamp, current_ident,
                     level_names[level], continuation ? "  " : "");
    if (n < 0)
        return;
    size_t len = (size_t)n;
    for (size_t i = 0; i < tlen && len < sizeof(line) - 2; i++) {
        unsigned char ch = (unsigned char)text[i];
        /* Control characters from peers must not forge log lines. */
        line[len++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    line[len++] = '\n';
    if (current_sink) {
        current_sink(current_sink_arg, level, line, len);
        return;
    }
    if (current_target == QLOG_TARGET_SYSLOG) {
        syslog(prio[level], "%.*s", (int)(len - 1), line);
        return;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

__attribute__((format(printf, 2, 0))) void qlogv(enum qlog_level level, const char *fmt, va_list ap)
{
    if (level > current_level)
        return;
    char msg[2048];
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (m < 0)
        return;
    size_t mlen = (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
    char stamp[64];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));
    /* A multi-line message (a list of configuration errors) becomes one
     * line per line, the later ones indented: each line greps on its own
     * and none can pass for a line of its own. */
    size_t start = 0, lines = 0;
    while (start < mlen || lines == 0) {
        const char *nl = memchr(msg + start, '\n', mlen - start);
        size_t end = nl ? (size_t)(nl - msg) : mlen;
        if (lines == MAX_CONTINUATION) {
            char more[64];
            size_t rest = 0;
            for (size_t i = start; i < mlen; i++)
                rest += msg[i] == '\n';
            int k = snprintf(more, sizeof(more), "(%zu more lines)", rest + 1);
            emit(level, stamp, more, k > 0 ? (size_t)k : 0, true);
            break;
        }
        if (end > start || lines == 0)
            emit(level, stamp, msg + start, end - start, lines > 0);
        lines++;
        if (!nl)
            break;
        start = end + 1;
    }
}

void qlog(enum qlog_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qlogv(level, fmt, ap);
    va_end(ap);
}
