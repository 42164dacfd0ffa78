/* smtp_spool: where a message body goes while it is received.
 *
 * An anonymous file (created in a directory and unlinked at once, so
 * nothing remains after a crash) with a small write buffer. Writes past
 * max_size are counted but discarded, so the session can keep reading
 * until the end of DATA and then answer 552. The file descriptor is what
 * the encryption step reads (from a thread-pool worker, after the session
 * stopped writing). */
#ifndef QUMAIL_SMTP_SPOOL_H
#define QUMAIL_SMTP_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct smtp_spool smtp_spool;

/* dir NULL: $TMPDIR or /tmp. NULL + *error_r (caller frees) on failure. */
smtp_spool *smtp_spool_new(const char *dir, uint64_t max_size, char **error_r);
void smtp_spool_free(smtp_spool **sp);

/* Appends; returns 0 or -errno on an I/O failure (sticky). */
int smtp_spool_write(smtp_spool *sp, const void *data, size_t len);
/* Flushes the buffer; after this the fd holds the whole message. */
int smtp_spool_finish(smtp_spool *sp);
/* Truncates to empty for the next message. */
int smtp_spool_reset(smtp_spool *sp);

/* Bytes offered so far (kept or not). */
uint64_t smtp_spool_size(const smtp_spool *sp);
bool smtp_spool_overflow(const smtp_spool *sp);
int smtp_spool_error(const smtp_spool *sp);  /* 0 or -errno */
int smtp_spool_fd(const smtp_spool *sp);

#endif
