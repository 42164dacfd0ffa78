/* smtp_spool: where a message body goes while it is received.
 *
 * An anonymous file per message (created in a directory and unlinked at
 * once, so nothing remains after a crash), opened when the body starts and
 * closed when the transaction ends: an idle session holds no descriptor
 * for it. A small write buffer. Writes past max_size are counted but
 * discarded, so the session can keep reading until the end of DATA and
 * then answer 552. The file descriptor is what the encryption step reads
 * (from a thread-pool worker, after the session stopped writing; it keeps
 * its own dup). */
#ifndef QUMAIL_SMTP_SPOOL_H
#define QUMAIL_SMTP_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct smtp_spool smtp_spool;

/* dir NULL: $TMPDIR or /tmp (no file yet). NULL + *error_r (caller frees)
 * when out of memory. */
smtp_spool *smtp_spool_new(const char *dir, uint64_t max_size, char **error_r);
void smtp_spool_free(smtp_spool **sp);

/* Starts a message: an empty file (a new one, or the open one truncated).
 * 0, or -errno with *error_r (caller frees) when no file can be made. */
int smtp_spool_open(smtp_spool *sp, char **error_r);
/* Ends a message: the file and the buffer go (smtp_spool_fd is -1). */
void smtp_spool_close(smtp_spool *sp);

/* Appends; returns 0 or -errno on an I/O failure (sticky). */
int smtp_spool_write(smtp_spool *sp, const void *data, size_t len);
/* Flushes the buffer; after this the fd holds the whole message. */
int smtp_spool_finish(smtp_spool *sp);

/* Bytes offered so far (kept or not). */
uint64_t smtp_spool_size(const smtp_spool *sp);
bool smtp_spool_overflow(const smtp_spool *sp);
int smtp_spool_error(const smtp_spool *sp);  /* 0 or -errno */
int smtp_spool_fd(const smtp_spool *sp);  /* -1 between messages */

#endif
