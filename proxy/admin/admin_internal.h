/* admin: what its files share. */
#ifndef QUMAIL_ADMIN_INTERNAL_H
#define QUMAIL_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* A text buffer that grows (at most 1 MiB); failed after ENOMEM. */
struct admin_buf {
    char *buf; /* owned until admin_buf_take */
    size_t len, cap;
    bool failed;
};
void admin_buf_printf(struct admin_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The text (caller frees), or NULL after a failure (buffer freed). */
char *admin_buf_take(struct admin_buf *b);

bool admin_domain_ok(const char *domain);

#endif
