/* protect_append: encrypt a client's own copy before the server stores it.
 * See append.h for what and why. */
#include "append.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define CHUNK ((size_t)64 * 1024)
#define VAULT_MAX_KEY_LEN ((size_t)65536)  /* kme_vault: bytes per key */
#define VAULT_MAX_PUT ((uint64_t)256 << 20) /* kme_vault: bytes per call */

const char *protect_append_strerror(int err)
{
    switch (err) {
    case PROTECT_APPEND_OK: return "success";
    case PROTECT_APPEND_EINVAL: return "invalid argument";
    case PROTECT_APPEND_ENOMEM: return "out of memory";
    case PROTECT_APPEND_EIO: return "input/output error";
    case PROTECT_APPEND_EVAULT: return "key vault error";
    case PROTECT_APPEND_ECRYPTO: return "encryption failed";
    case PROTECT_APPEND_ETOOBIG: return "message too large";
    case PROTECT_APPEND_ENOOWNER: return "no address to bind the copy to";
    case PROTECT_APPEND_ECANCELED: return "cancelled";
    default: return "unknown error";
    }
}

const char *protect_append_imap_code(int err)
{
    switch (err) {
    case PROTECT_APPEND_EVAULT:
    case PROTECT_APPEND_EIO:
    case PROTECT_APPEND_ENOMEM:
        return "UNAVAILABLE";
    case PROTECT_APPEND_ETOOBIG:
        return "TOOBIG";
    case PROTECT_APPEND_ENOOWNER:
        return "CANNOT";
    default:
        return "SERVERBUG";
    }
}

__attribute__((format(printf, 3, 4)))
static int fail(char **error_r, int code, const char *fmt, ...)
{
    if (error_r != NULL && *error_r == NULL) {
        va_list ap;
        va_start(ap, fmt);
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) < 0)
            s = NULL;
        va_end(ap);
        *error_r = s;
    }
    return code;
}

void protect_append_result_clear(struct protect_append_result *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        (void)close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

int protect_append_owner_id(const char *address, char *out, size_t out_size)
{
    if (address == NULL || out == NULL || out_size < PROTECT_APPEND_OWNER_ID_MAX)
        return PROTECT_APPEND_EINVAL;
    char *norm = NULL;
    if (address[0] == '\0' || mime_address_normalize(address, &norm) != 0)
        return PROTECT_APPEND_ENOOWNER;
    size_t len = strlen(norm);
    bool visible = len >= 1 && len <= 255;
    for (size_t i = 0; visible && i < len; i++)
        visible = (unsigned char)norm[i] > 0x20 && (unsigned char)norm[i] < 0x7f;
    if (visible) {
        memcpy(out, norm, len + 1);
    } else {
        unsigned char md[32];
        unsigned int md_len = 0;
        if (EVP_Digest(norm, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
            free(norm);
            return PROTECT_APPEND_ECRYPTO;
        }
        out[0] = 'u';
        out[1] = '-';
        for (unsigned i = 0; i < 32; i++)
            (void)snprintf(out + 2 + (size_t)2 * i, 3, "%02x", md[i]);
    }
    free(norm);
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int protect_append_canonicalize(int in_fd, uint64_t in_len, int out_fd, uint64_t *out_len_r)
{
    uint8_t *in = malloc(CHUNK);
    uint8_t *out = malloc(2 * CHUNK); /* worst case: every byte an LF */
    if (in == NULL || out == NULL) {
        free(in);
        free(out);
        return PROTECT_APPEND_ENOMEM;
    }
    int rc = 0;
    uint64_t off = 0, written = 0;
    bool prev_cr = false;
    while (off < in_len) {
        size_t want = in_len - off < CHUNK ? (size_t)(in_len - off) : CHUNK;
        ssize_t n = pread(in_fd, in, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = PROTECT_APPEND_EIO; /* error, or the input shrank */
            break;
        }
        size_t o = 0;
        for (ssize_t i = 0; i < n; i++) {
            uint8_t c = in[i];
            if (c == '\n' && !prev_cr)
                out[o++] = '\r';
            out[o++] = c == 0 ? 0x80 : c;
            prev_cr = c == '\r';
        }
        if (write_all(out_fd, out, o) < 0) {
            rc = PROTECT_APPEND_EIO;
            break;
        }
        off += (uint64_t)n;
        written += o;
    }
    OPENSSL_cleanse(in, CHUNK);
    OPENSSL_cleanse(out, 2 * CHUNK);
    free(in);
    free(out);
    if (rc == 0 && out_len_r != NULL)
        *out_len_r = written;
    return rc;
}

/* Truncating a memfd releases its pages: nothing of the plaintext stays
 * in the page cache after close. */
static void close_private(int *fd)
{
    if (*fd >= 0) {
        (void)ftruncate(*fd, 0);
        (void)close(*fd);
        *fd = -1;
    }
}

/* Local keys for alg and a plaintext of plain_len bytes: one 32-byte key
 * for AES; plain_len + 32 bytes for OTP, as 64 KiB keys plus one
 * remainder key (two vault transactions; an orphan set after a failure of
 * the second is harmless). */
static int get_keys(const struct protect_append_params *p, const char *owner_id,
                    enum mime_alg alg, uint64_t plain_len, struct kme_vault_keys *parts[2],
                    char **error_r)
{
    uint64_t bits = 0;
    if (mime_key_bits_needed(alg, plain_len, &bits) != 0)
        return fail(error_r, PROTECT_APPEND_ETOOBIG, "message too large for %s",
                    mime_alg_name(alg));
    uint64_t bytes = bits / 8;
    if (bytes > VAULT_MAX_PUT)
        return fail(error_r, PROTECT_APPEND_ETOOBIG,
                    "an OTP copy of %llu bytes needs more local key than one vault "
                    "write holds", (unsigned long long)plain_len);
    uint64_t full = bytes / VAULT_MAX_KEY_LEN, rem = bytes % VAULT_MAX_KEY_LEN;
    char *verr = NULL;
    int vr = 0;
    if (full > 0)
        vr = kme_vault_local_new(p->vault, owner_id, (size_t)full, VAULT_MAX_KEY_LEN,
                                 &parts[0], &verr);
    if (vr == 0 && rem > 0)
        vr = kme_vault_local_new(p->vault, owner_id, 1, (size_t)rem, &parts[1], &verr);
    if (vr != 0) {
        int r = fail(error_r, PROTECT_APPEND_EVAULT, "vault: %s",
                     verr != NULL ? verr : kme_vault_strerror(vr));
        free(verr);
        kme_vault_keys_free(&parts[0]);
        kme_vault_keys_free(&parts[1]);
        return r;
    }
    return 0;
}

static int encrypt_copy(const struct protect_append_params *p, int canon_fd, uint64_t canon_len,
                        struct protect_append_result *r, char **error_r)
{
    char owner_id[PROTECT_APPEND_OWNER_ID_MAX];
    int rc = protect_append_owner_id(p->owner, owner_id, sizeof(owner_id));
    if (rc != 0)
        return fail(error_r, rc, "no usable owner address for the copy");
    enum mime_level level = p->level != MIME_LEVEL_NONE ? p->level : MIME_LEVEL_AES;
    enum mime_alg alg = mime_level_algorithm(level, p->auto_threshold, canon_len);

    struct kme_vault_keys *parts[2] = {NULL, NULL};
    rc = get_keys(p, owner_id, alg, canon_len, parts, error_r);
    if (rc != 0)
        return rc;
    size_t n_keys = (parts[0] != NULL ? parts[0]->count : 0) +
                    (parts[1] != NULL ? parts[1]->count : 0);
    struct mime_key *keys = n_keys != 0 ? calloc(n_keys, sizeof(*keys)) : NULL;
    if (keys == NULL) {
        rc = PROTECT_APPEND_ENOMEM;
        goto out;
    }
    size_t k = 0;
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; parts[i] != NULL && j < parts[i]->count; j++) {
            keys[k].key_id = parts[i]->keys[j].key_id;
            keys[k].key = parts[i]->keys[j].bytes;
            keys[k].key_len = parts[i]->keys[j].len;
            k++;
        }

    const char *recipients[1] = {p->owner};
    struct mime_encrypt_params ep = {
        .algorithm = alg,
        .source_kme_id = KME_VAULT_LOCAL_SOURCE,
        .master_sae_id = owner_id,
        .slave_sae_id = owner_id,
        .protect_subject = !p->keep_subject,
        .subject_placeholder = p->subject_placeholder,
        .recipients = recipients,
        .n_recipients = 1,
    };
    int out_fd = memfd_create("qumail-append-out", MFD_CLOEXEC);
    if (out_fd < 0) {
        rc = fail(error_r, PROTECT_APPEND_EIO, "memfd_create: %s", strerror(errno));
        goto out;
    }
    uint64_t out_size = 0;
    char *merr = NULL;
    int mr = mime_encrypt_fd(canon_fd, out_fd, &ep, keys, n_keys, &out_size, &merr);
    if (mr != 0) {
        rc = fail(error_r, mr == MIME_ERR_NOMEM ? PROTECT_APPEND_ENOMEM
                           : mr == MIME_ERR_IO  ? PROTECT_APPEND_EIO
                                                : PROTECT_APPEND_ECRYPTO,
                  "encrypt: %s", merr != NULL ? merr : mime_strerror(mr));
        free(merr);
        (void)close(out_fd);
        goto out;
    }
    r->outcome = PROTECT_APPEND_ENCRYPTED;
    r->fd = out_fd;
    r->size = out_size;
    r->plain_size = canon_len;
    r->algorithm = alg;
    (void)snprintf(r->key_id, sizeof(r->key_id), "%s", keys[0].key_id);
out:
    free(keys);
    kme_vault_keys_free(&parts[0]);
    kme_vault_keys_free(&parts[1]);
    return rc;
}

int protect_append_run(const struct protect_append_params *p, int in_fd, uint64_t in_len,
                       struct protect_append_result *r, char **error_r)
{
    if (r == NULL)
        return PROTECT_APPEND_EINVAL;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (p == NULL || p->vault == NULL || in_fd < 0)
        return fail(error_r, PROTECT_APPEND_EINVAL, "missing vault or input");
    if (p->owner == NULL || p->owner[0] == '\0')
        return fail(error_r, PROTECT_APPEND_ENOOWNER,
                    "the login has no address to bind the copy to");
    uint64_t max = p->max_size != 0 ? p->max_size : PROTECT_APPEND_DEFAULT_MAX_SIZE;
    if (in_len > max)
        return fail(error_r, PROTECT_APPEND_ETOOBIG, "message of %llu bytes above %llu",
                    (unsigned long long)in_len, (unsigned long long)max);
    if (in_len == 0) {
        r->outcome = PROTECT_APPEND_UNCHANGED;
        return 0;
    }

    /* Inspect from a read-only mapping: the caller's file offset is neither
     * used nor moved, and nothing past in_len is read. */
    if ((uint64_t)(size_t)in_len != in_len)
        return fail(error_r, PROTECT_APPEND_ETOOBIG, "message too large to map");
    struct stat st;
    if (fstat(in_fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < in_len)
        return fail(error_r, PROTECT_APPEND_EIO, "the input is not a file of %llu bytes",
                    (unsigned long long)in_len);
    void *map = mmap(NULL, (size_t)in_len, PROT_READ, MAP_PRIVATE, in_fd, 0);
    if (map == MAP_FAILED)
        return fail(error_r, PROTECT_APPEND_EIO, "mmap of the input: %s", strerror(errno));
    struct mime_info *info = NULL;
    int ir = mime_inspect_mem(map, (size_t)in_len, &info, NULL);
    mime_info_free(&info);
    (void)munmap(map, (size_t)in_len);
    if (ir == 0 || ir == MIME_ERR_UNSUPPORTED_VERSION || ir == MIME_ERR_UNSUPPORTED_ALGORITHM) {
        r->outcome = PROTECT_APPEND_UNCHANGED;
        r->size = in_len;
        return 0;
    }
    if (ir == MIME_ERR_NOMEM)
        return fail(error_r, PROTECT_APPEND_ENOMEM, "inspect: out of memory");
    if (ir == MIME_ERR_IO)
        return fail(error_r, PROTECT_APPEND_EIO, "inspect: cannot read the message");

    int canon_fd = memfd_create("qumail-append-plain", MFD_CLOEXEC);
    if (canon_fd < 0)
        return fail(error_r, PROTECT_APPEND_EIO, "memfd_create: %s", strerror(errno));
    uint64_t canon_len = 0;
    int rc = protect_append_canonicalize(in_fd, in_len, canon_fd, &canon_len);
    if (rc != 0)
        rc = fail(error_r, rc, "reading the message: %s", protect_append_strerror(rc));
    else
        rc = encrypt_copy(p, canon_fd, canon_len, r, error_r);
    close_private(&canon_fd);
    return rc;
}

/* ---- on the loop ------------------------------------------------------- */

struct protect_append_job {
    uv_work_t work;
    struct protect_append_params params; /* strings below owned */
    char *owner, *placeholder;
    int in_fd;                           /* borrowed */
    uint64_t in_len;
    protect_append_cb *cb;
    void *arg;
    bool cancelled;
    int status;
    char *error;
    struct protect_append_result result;
};

static void job_work(uv_work_t *w)
{
    protect_append_job *job = w->data;
    job->status = protect_append_run(&job->params, job->in_fd, job->in_len, &job->result,
                                     &job->error);
}

static void job_done(uv_work_t *w, int status)
{
    protect_append_job *job = w->data;
    if (status == UV_ECANCELED || job->cancelled) {
        protect_append_result_clear(&job->result);
        job->cb(job->arg, PROTECT_APPEND_ECANCELED, NULL, NULL);
    } else if (job->status != 0) {
        job->cb(job->arg, job->status, NULL,
                job->error != NULL ? job->error : protect_append_strerror(job->status));
    } else {
        job->cb(job->arg, 0, &job->result, NULL);
    }
    protect_append_result_clear(&job->result);
    free(job->error);
    free(job->owner);
    free(job->placeholder);
    free(job);
}

int protect_append_start(uv_loop_t *loop, const struct protect_append_params *p, int in_fd,
                         uint64_t in_len, protect_append_cb *cb, void *arg,
                         protect_append_job **job_r)
{
    if (job_r != NULL)
        *job_r = NULL;
    if (loop == NULL || p == NULL || p->vault == NULL || cb == NULL || in_fd < 0)
        return PROTECT_APPEND_EINVAL;
    protect_append_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return PROTECT_APPEND_ENOMEM;
    job->params = *p;
    job->owner = p->owner != NULL ? strdup(p->owner) : NULL;
    job->placeholder = p->subject_placeholder != NULL ? strdup(p->subject_placeholder) : NULL;
    if ((p->owner != NULL && job->owner == NULL) ||
        (p->subject_placeholder != NULL && job->placeholder == NULL)) {
        free(job->owner);
        free(job->placeholder);
        free(job);
        return PROTECT_APPEND_ENOMEM;
    }
    job->params.owner = job->owner;
    job->params.subject_placeholder = job->placeholder;
    job->in_fd = in_fd;
    job->in_len = in_len;
    job->cb = cb;
    job->arg = arg;
    job->result.fd = -1;
    job->work.data = job;
    if (uv_queue_work(loop, &job->work, job_work, job_done) < 0) {
        free(job->owner);
        free(job->placeholder);
        free(job);
        return PROTECT_APPEND_ENOMEM;
    }
    if (job_r != NULL)
        *job_r = job;
    return 0;
}

void protect_append_cancel(protect_append_job *job)
{
    if (job == NULL)
        return;
    job->cancelled = true;
    (void)uv_cancel((uv_req_t *)&job->work);
}
