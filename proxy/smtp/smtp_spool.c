/* Message spool: an unlinked temporary file per message, with a write
 * buffer. */
#include "smtp_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPOOL_BUF 16384

struct smtp_spool {
    char *dir;        /* where the file of a message is made */
    int fd;           /* -1 between messages */
    uint64_t max_size;
    uint64_t size;    /* bytes offered */
    uint64_t kept;    /* bytes stored (<= max_size) */
    int error;
    size_t buf_len;
    char *buf;        /* SPOOL_BUF, allocated while a message is written */
};

smtp_spool *smtp_spool_new(const char *dir, uint64_t max_size, char **error_r)
{
    if (!dir || !*dir) {
        dir = getenv("TMPDIR");
        if (!dir || !*dir)
            dir = "/tmp";
    }
    smtp_spool *sp = calloc(1, sizeof(*sp));
    if (!sp || !(sp->dir = strdup(dir))) {
        free(sp);
        *error_r = strdup("out of memory");
        return NULL;
    }
    sp->fd = -1;
    sp->max_size = max_size;
    return sp;
}

/* An anonymous file in sp->dir: O_TMPFILE, or mkstemp + unlink where the
 * file system has no O_TMPFILE. */
static int open_file(const smtp_spool *sp)
{
    int fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/qumail-spool-XXXXXX", sp->dir);
    if (n <= 0 || (size_t)n >= sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

int smtp_spool_open(smtp_spool *sp, char **error_r)
{
    sp->buf_len = 0;
    sp->size = 0;
    sp->kept = 0;
    sp->error = 0;
    if (sp->fd >= 0) { /* still open (not closed since the last message) */
        if (ftruncate(sp->fd, 0) < 0 || lseek(sp->fd, 0, SEEK_SET) < 0)
            sp->error = -errno;
    } else if ((sp->fd = open_file(sp)) < 0) {
        sp->error = -errno;
    }
    if (sp->error) {
        char msg[512];
        snprintf(msg, sizeof(msg), "spool in %s: %s", sp->dir, strerror(-sp->error));
        *error_r = strdup(msg);
        return sp->error;
    }
    return 0;
}

void smtp_spool_close(smtp_spool *sp)
{
    if (!sp)
        return;
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = -1;
    free(sp->buf);
    sp->buf = NULL;
    sp->buf_len = 0;
}

void smtp_spool_free(smtp_spool **sp)
{
    if (!sp || !*sp)
        return;
    smtp_spool_close(*sp);
    free((*sp)->dir);
    free(*sp);
    *sp = NULL;
}

static int flush(smtp_spool *sp)
{
    size_t off = 0;
    while (off < sp->buf_len) {
        ssize_t w = write(sp->fd, sp->buf + off, sp->buf_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            sp->error = -errno;
            sp->buf_len = 0;
            return sp->error;
        }
        off += (size_t)w;
    }
    sp->buf_len = 0;
    return 0;
}

int smtp_spool_write(smtp_spool *sp, const void *data, size_t len)
{
    if (sp->error)
        return sp->error;
    sp->size += len;
    if (sp->kept >= sp->max_size)
        return 0;
    uint64_t room = sp->max_size - sp->kept;
    if (len > room)
        len = (size_t)room;
    sp->kept += len;
    if (!sp->buf && len > 0 && !(sp->buf = malloc(SPOOL_BUF))) {
        sp->error = -ENOMEM;
        return sp->error;
    }
    const char *p = data;
    while (len > 0) {
        size_t n = SPOOL_BUF - sp->buf_len;
        if (n > len)
            n = len;
        memcpy(sp->buf + sp->buf_len, p, n);
        sp->buf_len += n;
        p += n;
        len -= n;
        if (sp->buf_len == SPOOL_BUF && flush(sp) < 0)
            return sp->error;
    }
    return 0;
}

int smtp_spool_finish(smtp_spool *sp)
{
    int rc = sp->error ? sp->error : flush(sp);
    free(sp->buf); /* idle sessions keep no buffer */
    sp->buf = NULL;
    return rc;
}

uint64_t smtp_spool_size(const smtp_spool *sp) { return sp->size; }
bool smtp_spool_overflow(const smtp_spool *sp) { return sp->size > sp->max_size; }
int smtp_spool_error(const smtp_spool *sp) { return sp->error; }
int smtp_spool_fd(const smtp_spool *sp) { return sp->fd; }
