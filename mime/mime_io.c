/* Streaming I/O: a line reader over an fd or memory, a buffered writer to
 * an fd or memory, the ciphertext spill (memory, then a private unlinked
 * temporary file) and the random-access encryption source. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "mime_internal.h"

#define READ_BUF (MIME_LINE_LIMIT * 4u)
#define WRITE_BUF ((size_t)512 << 10)

/* ---- reader ----------------------------------------------------------------- */

struct mime_reader {
    int fd;               /* -1: memory */
    const char *data;     /* memory or buf */
    size_t len, pos;
    char *buf;            /* fd mode, READ_BUF */
    int eof;
    int seekable;
    uint64_t start;       /* fd: file offset where reading started */
    uint64_t base;        /* offset (from start) of data[0] */
};

struct mime_reader *mime_reader_fd(int fd)
{
    struct mime_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->buf = malloc(READ_BUF);
    if (r->buf == NULL) {
        free(r);
        return NULL;
    }
    r->fd = fd;
    r->data = r->buf;
    struct stat st;
    off_t cur = lseek(fd, 0, SEEK_CUR);
    r->seekable = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && cur >= 0;
    r->start = cur >= 0 ? (uint64_t)cur : 0;
    return r;
}

struct mime_reader *mime_reader_mem(const void *data, size_t len)
{
    struct mime_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->fd = -1;
    r->data = data;
    r->len = len;
    r->eof = 1;
    r->seekable = 1;
    return r;
}

int mime_reader_seekable(const struct mime_reader *r)
{
    return r->seekable;
}

uint64_t mime_reader_offset(const struct mime_reader *r)
{
    return r->base + r->pos;
}

int mime_reader_seek(struct mime_reader *r, uint64_t off)
{
    if (!r->seekable)
        return MIME_ERR_IO;
    if (r->fd < 0) {
        if (off > r->len)
            return MIME_ERR_IO;
        r->pos = (size_t)off;
        return MIME_OK;
    }
    if (lseek(r->fd, (off_t)(r->start + off), SEEK_SET) < 0)
        return MIME_ERR_IO;
    r->base = off;
    r->len = r->pos = 0;
    r->eof = 0;
    return MIME_OK;
}

/* Refills: moves the unread tail to the front and reads more. */
static int reader_fill(struct mime_reader *r)
{
    size_t tail = r->len - r->pos;
    memmove(r->buf, r->buf + r->pos, tail);
    r->base += r->pos;
    r->pos = 0;
    r->len = tail;
    while (r->len < READ_BUF) {
        ssize_t n = read(r->fd, r->buf + r->len, READ_BUF - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return MIME_ERR_IO;
        if (n == 0) {
            r->eof = 1;
            break;
        }
        r->len += (size_t)n;
        break; /* one read per refill keeps latency low */
    }
    return MIME_OK;
}

int mime_reader_line(struct mime_reader *r, const char **line_r,
                     size_t *len_r, size_t *eol_r)
{
    for (;;) {
        const char *start = r->data + r->pos;
        size_t avail = r->len - r->pos;
        size_t scan = avail < MIME_LINE_LIMIT + 2 ? avail : MIME_LINE_LIMIT + 2;
        const char *nl = memchr(start, '\n', scan);
        if (nl != NULL) {
            size_t n = (size_t)(nl - start);
            size_t eol = 1;
            if (n > 0 && nl[-1] == '\r') {
                n--;
                eol = 2;
            }
            if (n > MIME_LINE_LIMIT)
                return MIME_ERR_MALFORMED;
            *line_r = start;
            *len_r = n;
            *eol_r = eol;
            r->pos += n + eol;
            return 1;
        }
        if (avail > MIME_LINE_LIMIT)
            return MIME_ERR_MALFORMED;
        if (r->eof) {
            if (avail == 0)
                return 0;
            *line_r = start;
            *len_r = avail;
            *eol_r = 0;
            r->pos += avail;
            return 1;
        }
        int rc = reader_fill(r);
        if (rc != MIME_OK)
            return rc;
    }
}

int mime_reader_peek(struct mime_reader *r, size_t want, const char **p_r,
                     size_t *n_r)
{
    if (want > READ_BUF / 2)
        want = READ_BUF / 2;
    while (r->len - r->pos < want && !r->eof) {
        int rc = reader_fill(r);
        if (rc != MIME_OK)
            return rc;
    }
    *p_r = r->data + r->pos;
    *n_r = r->len - r->pos;
    return MIME_OK;
}

void mime_reader_consume(struct mime_reader *r, size_t n)
{
    r->pos += n <= r->len - r->pos ? n : r->len - r->pos;
}

void mime_reader_free(struct mime_reader **p)
{
    if (p == NULL || *p == NULL)
        return;
    free((*p)->buf);
    free(*p);
    *p = NULL;
}

/* ---- writer ----------------------------------------------------------------- */

struct mime_writer {
    int fd;               /* -1: memory */
    unsigned char *buf;
    size_t len, cap;
    int exact;            /* memory: fixed capacity */
    int wipe;
    int failed;
    uint64_t total;
    size_t dirty;         /* fd: buffer octets used so far (wiped at free) */
    int undoable;         /* fd: a regular file appended at its end */
    uint64_t start;       /* fd: its size (= offset) when marked */
};

struct mime_writer *mime_writer_fd(int fd)
{
    struct mime_writer *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->buf = malloc(WRITE_BUF)) == NULL) {
        free(w);
        return NULL;
    }
    w->fd = fd;
    w->cap = WRITE_BUF;
    return w;
}

struct mime_writer *mime_writer_mem(size_t exact_size, int wipe)
{
    struct mime_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->fd = -1;
    w->wipe = wipe;
    w->cap = exact_size > 0 ? exact_size : (size_t)64 << 10;
    w->exact = exact_size > 0;
    if ((w->buf = malloc(w->cap)) == NULL) {
        free(w);
        return NULL;
    }
    return w;
}

struct mime_writer *mime_writer_mem_hint(size_t initial_cap)
{
    struct mime_writer *w = mime_writer_mem(initial_cap > 0 ? initial_cap : 1,
                                            0);
    if (w != NULL)
        w->exact = 0; /* may still grow */
    return w;
}

int mime_writer_is_mem(const struct mime_writer *w)
{
    return w->fd < 0;
}

unsigned char *mime_writer_data(struct mime_writer *w, size_t *len_r)
{
    *len_r = w->len;
    return w->buf;
}

void mime_writer_set_wipe(struct mime_writer *w, int wipe)
{
    w->wipe = wipe;
}

int mime_writer_mark(struct mime_writer *w)
{
    struct stat st;
    if (w->fd < 0 || w->total != 0 || fstat(w->fd, &st) != 0 ||
        !S_ISREG(st.st_mode))
        return 0;
    int fl = fcntl(w->fd, F_GETFL);
    off_t cur = lseek(w->fd, 0, SEEK_CUR);
    if (fl < 0 || (fl & O_APPEND) || (fl & O_ACCMODE) == O_RDONLY ||
        cur < 0 || cur != st.st_size)
        return 0;
    w->undoable = 1;
    w->start = (uint64_t)cur;
    return st.st_nlink == 0 ? 2 : 1;
}

int mime_writer_discard(struct mime_writer *w)
{
    if (w->fd < 0)
        return MIME_OK;
    uint64_t written = w->total - w->len;
    if (w->wipe)
        OPENSSL_cleanse(w->buf, w->len);
    w->len = 0;
    w->total = written;
    w->failed = MIME_ERR_IO; /* nothing more goes out */
    if (written == 0)
        return MIME_OK;
    if (!w->undoable)
        return MIME_ERR_IO;
    /* Overwrite what went out with zeros (so the freed pages or blocks do
     * not keep it), then cut the file back to where it was. */
    memset(w->buf, 0, w->cap);
    int rc = MIME_OK;
    for (uint64_t off = 0; off < written && rc == MIME_OK;) {
        size_t n = written - off < w->cap ? (size_t)(written - off) : w->cap;
        ssize_t k = pwrite(w->fd, w->buf, n, (off_t)(w->start + off));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            rc = MIME_ERR_IO;
        else
            off += (uint64_t)k;
    }
    if (ftruncate(w->fd, (off_t)w->start) != 0 ||
        lseek(w->fd, (off_t)w->start, SEEK_SET) < 0)
        rc = MIME_ERR_IO;
    if (rc == MIME_OK)
        w->total = 0;
    return rc;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return MIME_ERR_IO;
        p += k;
        n -= (size_t)k;
    }
    return MIME_OK;
}

int mime_writer_flush(struct mime_writer *w)
{
    if (w->failed)
        return w->failed;
    if (w->fd < 0 || w->len == 0)
        return MIME_OK;
    int rc = write_all(w->fd, w->buf, w->len);
    /* The buffer is overwritten by the next octets and wiped once, at
     * free, up to the most it ever held (not on every flush). */
    if (w->len > w->dirty)
        w->dirty = w->len;
    w->len = 0;
    if (rc != MIME_OK)
        w->failed = rc;
    return rc;
}

/* Makes room for want more octets. */
static int writer_room(struct mime_writer *w, size_t want)
{
    if (w->failed)
        return w->failed;
    if (w->cap - w->len >= want)
        return MIME_OK;
    if (w->fd >= 0) {
        int rc = mime_writer_flush(w);
        if (rc != MIME_OK)
            return rc;
        if (w->cap >= want)
            return MIME_OK;
    } else if (w->exact) {
        return w->failed = MIME_ERR_TOO_LARGE;
    }
    if (want > SIZE_MAX / 2 - w->len)
        return w->failed = MIME_ERR_NOMEM;
    /* double (amortised appends), or exactly what a large reserve needs */
    size_t ncap = w->cap <= SIZE_MAX / 2 ? w->cap * 2 : SIZE_MAX;
    if (ncap - w->len < want || ncap < w->len)
        ncap = w->len + want;
    unsigned char *nb = malloc(ncap);
    if (nb == NULL)
        return w->failed = MIME_ERR_NOMEM;
    memcpy(nb, w->buf, w->len);
    if (w->wipe)
        OPENSSL_cleanse(w->buf, w->len);
    free(w->buf);
    w->buf = nb;
    w->cap = ncap;
    return MIME_OK;
}

void *mime_writer_reserve(struct mime_writer *w, size_t want)
{
    if (writer_room(w, want) != MIME_OK)
        return NULL;
    return w->buf + w->len;
}

int mime_writer_commit(struct mime_writer *w, size_t n)
{
    w->len += n;
    w->total += n;
    return MIME_OK;
}

int mime_writer_put(struct mime_writer *w, const void *data, size_t len)
{
    if (w->fd >= 0 && len >= w->cap) {
        int rc = mime_writer_flush(w);
        if (rc == MIME_OK)
            rc = write_all(w->fd, data, len);
        if (rc != MIME_OK)
            return w->failed = rc;
        w->total += len;
        return MIME_OK;
    }
    void *dst = mime_writer_reserve(w, len);
    if (dst == NULL)
        return w->failed;
    memcpy(dst, data, len);
    return mime_writer_commit(w, len);
}

int mime_writer_puts(struct mime_writer *w, const char *s)
{
    return mime_writer_put(w, s, strlen(s));
}

uint64_t mime_writer_total(const struct mime_writer *w)
{
    return w->total;
}

unsigned char *mime_writer_take(struct mime_writer *w, size_t *len_r)
{
    unsigned char *b = w->buf;
    *len_r = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

void mime_writer_free(struct mime_writer **p)
{
    if (p == NULL || *p == NULL)
        return;
    struct mime_writer *w = *p;
    if (w->buf != NULL && w->wipe)
        OPENSSL_cleanse(w->buf, w->len > w->dirty ? w->len : w->dirty);
    free(w->buf);
    free(w);
    *p = NULL;
}

/* ---- spill ------------------------------------------------------------------ */

struct mime_spill {
    char *tmp_dir;
    size_t threshold;
    unsigned char *mem;
    size_t mem_len, mem_cap;
    int fd;               /* -1 until spilled */
    uint64_t size;
    uint64_t rpos;
};

int mime_spill_new(const char *tmp_dir, size_t threshold,
                   struct mime_spill **s_r, char **error_r)
{
    struct mime_spill *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return MIME_ERR_NOMEM;
    if (tmp_dir == NULL)
        tmp_dir = getenv("TMPDIR");
    if (tmp_dir == NULL || tmp_dir[0] == '\0')
        tmp_dir = "/tmp";
    s->tmp_dir = strdup(tmp_dir);
    s->threshold = threshold > 0 ? threshold : MIME_SPILL_DEFAULT;
    s->fd = -1;
    if (s->tmp_dir == NULL) {
        free(s);
        return MIME_ERR_NOMEM;
    }
    *s_r = s;
    (void)error_r;
    return MIME_OK;
}

static int spill_open(struct mime_spill *s)
{
#ifdef O_TMPFILE
    s->fd = open(s->tmp_dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd >= 0)
        return MIME_OK;
#endif
    size_t n = strlen(s->tmp_dir) + 32;
    char *path = malloc(n);
    if (path == NULL)
        return MIME_ERR_NOMEM;
    snprintf(path, n, "%s/qumail-mime-XXXXXX", s->tmp_dir);
    s->fd = mkostemp(path, O_CLOEXEC);
    if (s->fd >= 0)
        unlink(path);
    free(path);
    return s->fd >= 0 ? MIME_OK : MIME_ERR_IO;
}

int mime_spill_append(struct mime_spill *s, const void *data, size_t len)
{
    if (s->fd < 0 && s->mem_len + len <= s->threshold) {
        if (s->mem_cap - s->mem_len < len) {
            size_t ncap = s->mem_cap ? s->mem_cap : (size_t)64 << 10;
            while (ncap - s->mem_len < len)
                ncap *= 2;
            if (ncap > s->threshold)
                ncap = s->threshold;
            unsigned char *nb = realloc(s->mem, ncap);
            if (nb == NULL)
                return MIME_ERR_NOMEM;
            s->mem = nb;
            s->mem_cap = ncap;
        }
        memcpy(s->mem + s->mem_len, data, len);
        s->mem_len += len;
        s->size += len;
        return MIME_OK;
    }
    if (s->fd < 0) {
        int rc = spill_open(s);
        if (rc != MIME_OK)
            return rc;
        if (s->mem_len > 0 &&
            (rc = write_all(s->fd, s->mem, s->mem_len)) != MIME_OK)
            return rc;
        free(s->mem);
        s->mem = NULL;
        s->mem_len = s->mem_cap = 0;
    }
    int rc = write_all(s->fd, data, len);
    if (rc == MIME_OK)
        s->size += len;
    return rc;
}

int mime_spill_rewind(struct mime_spill *s)
{
    s->rpos = 0;
    return MIME_OK;
}

long mime_spill_read(struct mime_spill *s, void *buf, size_t cap)
{
    uint64_t left = s->size - s->rpos;
    size_t n = left < cap ? (size_t)left : cap;
    if (n == 0)
        return 0;
    if (s->fd < 0) {
        memcpy(buf, s->mem + s->rpos, n);
    } else {
        size_t got = 0;
        while (got < n) {
            ssize_t k = pread(s->fd, (char *)buf + got, n - got,
                              (off_t)(s->rpos + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return MIME_ERR_IO;
            got += (size_t)k;
        }
    }
    s->rpos += n;
    return (long)n;
}

uint64_t mime_spill_size(const struct mime_spill *s)
{
    return s->size;
}

void mime_spill_free(struct mime_spill **p)
{
    if (p == NULL || *p == NULL)
        return;
    struct mime_spill *s = *p;
    free(s->mem); /* ciphertext only: no wipe needed */
    if (s->fd >= 0)
        close(s->fd);
    free(s->tmp_dir);
    free(s);
    *p = NULL;
}

/* ---- source ----------------------------------------------------------------- */

int mime_source_read(const struct mime_source *src, uint64_t off, void *buf,
                     size_t len)
{
    if (off > src->size || len > src->size - off)
        return MIME_ERR_IO;
    if (src->fd < 0) {
        memcpy(buf, src->mem + off, len);
        return MIME_OK;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t k = pread(src->fd, (char *)buf + got, len - got,
                          (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return MIME_ERR_IO;
        got += (size_t)k;
    }
    return MIME_OK;
}
