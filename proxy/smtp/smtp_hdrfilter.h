/* smtp_hdrfilter: a streaming filter over message bytes that drops header
 * fields by name (the proxy drops Bcc, as an MTA's cleanup would, so that
 * no encrypted copy reveals blind recipients). Only the header block is
 * examined; the body passes through untouched. No I/O. */
#ifndef QUMAIL_SMTP_HDRFILTER_H
#define QUMAIL_SMTP_HDRFILTER_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_HDRFILTER_LINE_MAX 8192

typedef int (*smtp_hdrfilter_out)(void *arg, const char *data, size_t len);

struct smtp_hdrfilter {
    const char *const *drop;  /* NULL-terminated field names, any case */
    smtp_hdrfilter_out out;
    void *out_arg;
    bool in_body;
    bool dropping;            /* the current field (and its folds) is dropped */
    bool mid_line;            /* inside an overlong line, already decided */
    size_t line_len;
    char line[SMTP_HDRFILTER_LINE_MAX];
    /* Optional copy of the kept header block (smtp_hdrfilter_capture). */
    char *capture;
    size_t capture_cap, capture_len;
    bool capture_overflow;   /* the header block did not fit */
};

void smtp_hdrfilter_init(struct smtp_hdrfilter *f, const char *const *drop,
                         smtp_hdrfilter_out out, void *out_arg);
/* Passes data on, minus dropped fields. Returns 0 or out()'s error. */
int smtp_hdrfilter_feed(struct smtp_hdrfilter *f, const char *data, size_t len);
/* Also copies the kept header lines (and the blank line ending them) into
 * buf, up to cap bytes; beyond that capture_overflow is set. */
void smtp_hdrfilter_capture(struct smtp_hdrfilter *f, char *buf, size_t cap);
/* Flushes a pending partial line (message without a body). */
int smtp_hdrfilter_finish(struct smtp_hdrfilter *f);

#endif
