/* protect_append: encrypt a message a client stores itself (IMAP APPEND to
 * a protected mailbox: Sent, Drafts, ...; see mailboxes.h), so that the
 * server holds only ciphertext and the proxy reads it back byte-identical.
 * Protocol-agnostic: the IMAP session hands it the literal's bytes and
 * sends what comes back with the new literal size.
 *
 * What happens to the client's bytes B:
 *  1. B empty: unchanged (the server refuses a zero-byte APPEND itself).
 *  2. B is already one of our encrypted messages (mime_inspect_fd: a
 *     readable format-2 message, or one of a version/algorithm this build
 *     does not know): unchanged - a copy dragged from another folder stays
 *     the same ciphertext. A message that claims our format but is broken
 *     (MIME_ERR_MALFORMED) may be a user's plaintext: it is encrypted.
 *  3. Otherwise B is canonicalised exactly as Dovecot serves a stored
 *     message (every LF not preceded by CR becomes CRLF, every NUL becomes
 *     0x80; bare CRs and a missing final line end stay: mime_struct.h), and
 *     that form C is encrypted. The proxy decrypts C and serves it; it is
 *     byte for byte what the server would have served for B stored plain,
 *     so the copy reads back exactly as without the proxy (RFC822.SIZE = |C|).
 *  4. Keys: fresh local random keys from the vault (kme_vault_local_new:
 *     RAND_bytes, committed with fsync before they are returned, so before
 *     the server ever sees the ciphertext); never a QKD key, no KME round
 *     trip. Source KME "local" (KME_VAULT_LOCAL_SOURCE), master and slave
 *     SAE = the owner ID (protect_append_owner_id), bound (format 2
 *     Recipient) to the owner's address alone.
 *  5. Algorithm: AES-256-GCM by default (256 bits of local key). OTP is
 *     possible (level "otp", or "auto" up to a threshold) but buys nothing
 *     here: the local key rests in the vault under AES-256-GCM anyway, and
 *     OTP would store as many key bytes as the message (a 10 MB Sent copy =
 *     10 MB more in the vault, written with fsync before the APPEND).
 *
 * Any failure (vault write, encryption, I/O, memory) is an error: the
 * caller answers the APPEND with a tagged NO (protect_append_imap_code()
 * gives the response code) and sends nothing upstream - fail closed.
 *
 * Threading: protect_append_run() blocks (vault fsync, encryption) and
 * belongs on libuv's thread pool; protect_append_start() puts it there.
 * Input and output are private memfds (no name in any file system), read
 * and written in bounded chunks: a 10 MB message needs no 10 MB buffer.
 * The canonical plaintext copy is truncated (pages released) before close.
 * Nothing here logs. */
#ifndef QUMAIL_PROTECT_APPEND_H
#define QUMAIL_PROTECT_APPEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "kme_vault.h"
#include "mime.h"

enum protect_append_error {
    PROTECT_APPEND_OK = 0,
    PROTECT_APPEND_EINVAL = -9201,    /* bad parameters */
    PROTECT_APPEND_ENOMEM = -9202,
    PROTECT_APPEND_EIO = -9203,       /* reading the input / writing a memfd */
    PROTECT_APPEND_EVAULT = -9204,    /* the vault refused or failed the write */
    PROTECT_APPEND_ECRYPTO = -9205,   /* encryption failed */
    PROTECT_APPEND_ETOOBIG = -9206,   /* above max_size (or the OTP key budget) */
    PROTECT_APPEND_ENOOWNER = -9207,  /* no address to bind the copy to */
    PROTECT_APPEND_ECANCELED = -9208, /* protect_append_cancel() */
};

const char *protect_append_strerror(int err);
/* RFC 5530 response code for "tag NO [code] text": UNAVAILABLE (vault,
 * I/O: try again later), TOOBIG, CANNOT (no owner address), SERVERBUG
 * (everything else). */
const char *protect_append_imap_code(int err);

#define PROTECT_APPEND_DEFAULT_MAX_SIZE ((uint64_t)64 << 20)

struct protect_append_params {
    kme_vault *vault;             /* required, open */
    const char *owner;            /* the logged-in user's address, bound as the
                                     copy's only Recipient; NULL/"": ENOOWNER */
    enum mime_level level;        /* MIME_LEVEL_NONE (0) means the default,
                                     MIME_LEVEL_AES; OTP; AUTO */
    uint64_t auto_threshold;      /* AUTO: OTP up to this plaintext size */
    bool keep_subject;            /* false (default): outer Subject is the
                                     placeholder, the real one is inside */
    const char *subject_placeholder; /* NULL: MIME_DEFAULT_SUBJECT */
    uint64_t max_size;            /* largest input; 0: PROTECT_APPEND_DEFAULT_MAX_SIZE */
};

enum protect_append_outcome {
    PROTECT_APPEND_ENCRYPTED = 1, /* send result.fd, result.size bytes */
    PROTECT_APPEND_UNCHANGED = 2, /* send the client's bytes as they were */
};

struct protect_append_result {
    enum protect_append_outcome outcome;
    int fd;               /* ENCRYPTED: memfd holding the message to store,
                             read from offset 0 (pread); owned by the result
                             (protect_append_result_clear closes it; set it to
                             -1 to take it). UNCHANGED: -1 */
    uint64_t size;        /* the literal size to send: ENCRYPTED the memfd's
                             size, UNCHANGED the input length */
    uint64_t plain_size;  /* ENCRYPTED: |C|, what RFC822.SIZE will say */
    enum mime_alg algorithm;
    char key_id[64];      /* ENCRYPTED: the first local key ID (logs,
                             incoming's identity "k/<key_ID>"); else "" */
};

void protect_append_result_clear(struct protect_append_result *r);

/* The owner string used as master/slave SAE ID and vault owner for an
 * address: the address normalised (mime_address_normalize) when it is
 * 1..255 visible ASCII characters, otherwise "u-" + hex SHA-256 of the
 * normalised address. Writes a NUL-terminated string into out (at least
 * PROTECT_APPEND_OWNER_ID_MAX bytes). */
#define PROTECT_APPEND_OWNER_ID_MAX 256
int protect_append_owner_id(const char *address, char *out, size_t out_size);

/* Canonical form (step 3), streamed: the same bytes as
 * mime_struct_normalize(). in_fd is read with pread from offset 0 for
 * in_len bytes; out_fd written sequentially. *out_len_r: bytes written. */
int protect_append_canonicalize(int in_fd, uint64_t in_len, int out_fd, uint64_t *out_len_r);

/* The whole job, synchronously (thread pool). in_fd: the client's bytes,
 * in_len of them from offset 0, read with pread (the caller keeps it open
 * and unchanged during the call). On success *r is filled (clear it with
 * protect_append_result_clear); on failure *r holds no fd and *error_r
 * (optional, malloc'd) says why, without message content or key bytes. */
int protect_append_run(const struct protect_append_params *p, int in_fd, uint64_t in_len,
                       struct protect_append_result *r, char **error_r);

/* ---- on the loop ------------------------------------------------------- */

typedef struct protect_append_job protect_append_job;

/* status 0: r is the result (the callee may take r->fd; the job clears the
 * rest after the callback returns). Otherwise a negative code, r NULL,
 * error a text (NULL for ECANCELED) valid during the callback. */
typedef void protect_append_cb(void *arg, int status, struct protect_append_result *r,
                               const char *error);

/* Queues protect_append_run on loop's thread pool. The parameters' strings
 * are copied; the vault and in_fd are borrowed until the callback. When it
 * fails synchronously (negative return) the callback is never called.
 * Otherwise cb is called exactly once, on the loop, never from inside this
 * call. job_r (optional) is valid until the callback starts. */
int protect_append_start(uv_loop_t *loop, const struct protect_append_params *p, int in_fd,
                         uint64_t in_len, protect_append_cb *cb, void *arg,
                         protect_append_job **job_r);
/* The session is going away: cb will be called with PROTECT_APPEND_ECANCELED
 * (at once if the work had not started, else when it ends; a result is then
 * discarded). The keys already created stay in the vault, unused. */
void protect_append_cancel(protect_append_job *job);

#endif
