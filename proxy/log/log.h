/* log: process-wide logging for the daemon and its command-line tools
 * (library qumail_log, linked by whoever logs).
 *
 * One line per call: "2026-01-02T03:04:05.678Z ident level: text", written
 * to stderr with a single write(2) so that lines from the thread pool never
 * interleave; control characters (from peers) are replaced by '?' so they
 * cannot forge lines; lines are cut at 2 KiB.
 *
 * Libraries (mime, policy, kme client, net) return errors instead of
 * logging; the daemon decides what reaches the log. Callers never pass key
 * bytes, message bodies or passwords: secrets are replaced before a line is
 * formatted, not after. */
#ifndef QUMAIL_LOG_H
#define QUMAIL_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum qlog_level { QLOG_ERROR = 0, QLOG_WARN, QLOG_INFO, QLOG_DEBUG };

/* Lines below `level` are dropped. Default: QLOG_INFO. */
void qlog_set_level(enum qlog_level level);
enum qlog_level qlog_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int qlog_level_parse(const char *name, enum qlog_level *level_r);
/* Program name shown in each line ("qumail-proxy", "qumail-kme"). */
void qlog_set_ident(const char *ident);

/* Where lines go:
 *   stderr   "2026-...Z ident level: text" (the default; the foreground)
 *   journal  "<N>level: text" on stderr: journald takes the priority from
 *            the <N> prefix (SyslogLevelPrefix=, on by default) and adds
 *            its own timestamp and identifier
 *   syslog   syslog(3), facility mail, the priority of the level
 * "auto" (qlog_target_parse): journal when stderr is connected to the
 * journal (JOURNAL_STREAM), else stderr. A message with newlines becomes
 * one line per line, the later ones indented by two spaces. */
enum qlog_target { QLOG_TARGET_STDERR = 0, QLOG_TARGET_JOURNAL, QLOG_TARGET_SYSLOG };
int qlog_target_parse(const char *name, enum qlog_target *target_r);
const char *qlog_target_name(enum qlog_target target);
void qlog_set_target(enum qlog_target target);

/* Sends each formatted line (with its newline) to sink instead of stderr;
 * NULL restores stderr. For tests that watch the log, and a future
 * syslog. The sink may be called from thread-pool threads. */
typedef void (*qlog_sink)(void *arg, enum qlog_level level, const char *line,
                          size_t len);
void qlog_set_sink(qlog_sink sink, void *arg);

void qlog(enum qlog_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void qlogv(enum qlog_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define qlog_error(...) qlog(QLOG_ERROR, __VA_ARGS__)
#define qlog_warn(...) qlog(QLOG_WARN, __VA_ARGS__)
#define qlog_info(...) qlog(QLOG_INFO, __VA_ARGS__)
#define qlog_debug(...) qlog(QLOG_DEBUG, __VA_ARGS__)

#endif
