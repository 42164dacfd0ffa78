/* mime: the QKD-encrypted message format and its crypto engine.
 *
 * Turns any RFC 5322 message into an RFC 1847 multipart/encrypted message
 * (protocol="application/x-qkd-encrypted") and back, byte for byte. The wire
 * format is specified in mime/FORMAT-SPEC.md.
 *
 * Threading: every function is thread-safe and may run on a libuv
 * uv_queue_work thread. GMime is initialised once, on first use, under a
 * once-guard (mime_init() may be called up front; it is optional).
 *
 * Memory: encryption and decryption stream. A message of any size is handled
 * in fixed-size chunks (about 1 MiB of working memory). Decryption releases
 * no plaintext before the tag is verified: from memory it decrypts in place
 * in the output buffer (wiped on failure); into a private output (a memfd or
 * O_TMPFILE file: regular, no name, not O_APPEND) it decrypts in one pass and,
 * on failure, zeroes what it wrote and truncates the file back before
 * returning; into any other output it verifies first, reading a seekable
 * input twice, or spilling the (still encrypted) ciphertext of a pipe to
 * memory and, above a threshold, to a private, already unlinked temporary
 * file.
 *
 * Errors: functions return 0 (MIME_OK) or a negative enum mime_error code;
 * when error_r is not NULL a malloc'd detail string is stored there on
 * failure (free() it). Key bytes and plaintext are never put in error text.
 *
 * Key material: the caller owns the key buffers it passes in; mime copies
 * what it needs and wipes its copies (OPENSSL_cleanse). Nothing here logs.
 */
#ifndef QUMAIL_MIME_H
#define QUMAIL_MIME_H

#include <stddef.h>
#include <stdint.h>

#define MIME_FORMAT_VERSION 2 /* written and read; version 1 is not read */

/* The outer Subject when params->subject_placeholder is NULL. */
#define MIME_DEFAULT_SUBJECT "Encrypted message (QuMail QKD)"


/* ---- errors ------------------------------------------------------------ */

enum mime_error {
    MIME_OK = 0,
    MIME_ERR_NOT_ENCRYPTED = -1,     /* input is not a QKD-encrypted message */
    MIME_ERR_MALFORMED = -2,         /* QKD message, but structure/fields broken */
    MIME_ERR_UNSUPPORTED_VERSION = -3,
    MIME_ERR_UNSUPPORTED_ALGORITHM = -4,
    MIME_ERR_KEY_MISSING = -5,       /* a key_ID the message needs is unknown */
    MIME_ERR_KEY_WRONG_SIZE = -6,    /* key found but its size differs */
    MIME_ERR_AUTH_FAILED = -7,       /* tag mismatch: tampered or wrong key */
    MIME_ERR_KEY_SHORT = -8,         /* encrypt: keys hold fewer bits than needed */
    MIME_ERR_KEY_SURPLUS = -9,       /* encrypt: keys hold more bits than needed */
    MIME_ERR_KEY_DUPLICATE = -10,    /* the same key_ID twice in one list */
    MIME_ERR_INVALID_ARG = -11,      /* bad parameter (id syntax, NULL, ...) */
    MIME_ERR_TOO_LARGE = -12,        /* beyond a hard limit of the format */
    MIME_ERR_IO = -13,               /* read/write/temp-file failure */
    MIME_ERR_CRYPTO = -14,           /* OpenSSL failure (not authentication) */
    MIME_ERR_NOMEM = -15,
};

/* Static English text for an error code; never NULL. */
const char *mime_strerror(int err);

/* Printable form of octets taken from a message, for a terminal or a log:
 * printable ASCII and valid UTF-8 text stay as they are; every other octet
 * (C0 controls, ESC, BEL, DEL, invalid UTF-8, 0xFF...), the UTF-8 of C1
 * controls, of U+2028/U+2029 and of the bidirectional controls
 * (U+061C, U+200E/F, U+202A-E, U+2066-9) becomes \xHH, and a backslash
 * becomes \\. Returns a malloc'd NUL-terminated string (NULL only when
 * out of memory). mime's own error texts pass message values through it. */
char *mime_escape(const void *s, size_t len);

/* Optional: initialise GMime and check OpenSSL algorithms. Idempotent and
 * thread-safe; every other function calls it itself. */
int mime_init(void);

/* ---- levels, algorithms and key budget ---------------------------------- */

enum mime_level {
    MIME_LEVEL_NONE = 0, /* pass through unchanged */
    MIME_LEVEL_OTP,      /* OTP-POLY1305 always */
    MIME_LEVEL_AES,      /* AES-256-GCM */
    MIME_LEVEL_AUTO,     /* OTP up to a size threshold, AES above it */
};

enum mime_alg {
    MIME_ALG_NONE = 0,
    MIME_ALG_OTP_POLY1305 = 1, /* wire name "OTP-POLY1305" */
    MIME_ALG_AES_256_GCM = 2,  /* wire name "AES-256-GCM" */
    /* a post-quantum hybrid (ML-KEM) would take the next id */
};

/* Wire name of an algorithm ("OTP-POLY1305", "AES-256-GCM"), "none" for
 * MIME_ALG_NONE, NULL for an unknown value. */
const char *mime_alg_name(enum mime_alg alg);
/* Parses a wire name (exact) or a level-style alias ("otp", "aes"). */
int mime_alg_parse(const char *name, enum mime_alg *alg_r);
/* Parses "none", "otp", "aes", "auto". */
int mime_level_parse(const char *name, enum mime_level *level_r);

/* The algorithm a level picks for a message of message_size octets. AUTO:
 * OTP when message_size <= auto_threshold, else AES. NONE: MIME_ALG_NONE. */
enum mime_alg mime_level_algorithm(enum mime_level level,
                                   uint64_t auto_threshold,
                                   uint64_t message_size);

/* Exact number of QKD key bits that encrypting a message of message_size
 * octets consumes: OTP-POLY1305: 8 * message_size + 256 (one-time Poly1305
 * key); AES-256-GCM: 256; NONE: 0. The key list given to mime_encrypt*()
 * must hold exactly this many bits (no more, no less). Returns
 * MIME_ERR_TOO_LARGE when the size exceeds MIME_MAX_MESSAGE_SIZE. */
int mime_key_bits_needed(enum mime_alg alg, uint64_t message_size,
                         uint64_t *bits_r);

/* Hard limits of the format (FORMAT-SPEC.md 3.1). */
#define MIME_MAX_MESSAGE_SIZE ((uint64_t)1 << 36)  /* 64 GiB plaintext */
#define MIME_MAX_KEYS 1048576  /* key entries; also keys + 004 chunks in all */
#define MIME_MAX_ID_LEN 255    /* key_ID, KME and SAE ids */

/* ---- keys ---------------------------------------------------------------- */

/* One QKD key, in key-stream order.
 *
 * An ETSI GS QKD 014 key (ksid == NULL, the default): key_id is its key_ID,
 * 1..MIME_MAX_ID_LEN visible ASCII characters (0x21-0x7E), e.g. a UUID;
 * key_len any size >= 1 octet; all of it is used.
 *
 * An ETSI GS QKD 004 chunk (ksid != NULL): ksid is the Key_stream_ID as a
 * lowercase UUID string (MIME_KSID_LEN characters), index the chunk's
 * index in that stream, key_len the stream's Key_chunk_size; key_id is
 * ignored. Consecutive chunks of one stream with consecutive indices and
 * equal size form one Key-Chunks entry of the control part. Only the last
 * key of a list may be used in part, and only when it is a 004 chunk
 * (chunks cannot be split, FORMAT-SPEC.md 3.4). */
struct mime_key {
    const char *key_id;
    const unsigned char *key;
    size_t key_len;
    const char *ksid;   /* NULL: ETSI 014 key */
    uint64_t index;     /* 004: chunk index, 0 .. 2^32 - 1 */
};

#define MIME_KSID_LEN 36 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */

/* Decrypt-side key lookup, called once per key and per 004 chunk, in
 * key-stream order, after the message's structure (up to the ciphertext
 * part's headers) parsed and before any ciphertext is processed.
 *
 * name is the key's lookup name: the key_ID of a 014 key, or for a 004
 * chunk "<KSID> <index>" (the stream ID, one space, the index in decimal
 * without leading zeros; a key_ID never contains a space, so the two kinds
 * cannot be confused). mime_key_name_parse() splits a chunk name.
 *
 * Return 0 and set *key_r / *key_len_r to the key bytes (borrowed: they
 * must stay valid until the mime_decrypt*() call returns; mime never frees
 * them), or MIME_ERR_KEY_MISSING when unknown (any other negative value
 * aborts decryption with that code). A 004 chunk must be returned whole
 * (Key_chunk_size octets) even when the message uses only part of it. */
typedef int mime_key_lookup_fn(void *ctx, const char *name,
                               const unsigned char **key_r,
                               size_t *key_len_r);

/* 1: name is a 004 chunk name (ksid_r gets the KSID, NUL-terminated, and
 * *index_r the index); 0: name is a 014 key_ID; MIME_ERR_INVALID_ARG:
 * neither. */
int mime_key_name_parse(const char *name, char ksid_r[MIME_KSID_LEN + 1],
                        uint64_t *index_r);

/* A ready-made lookup over an array; ctx is a struct mime_key_list *.
 * Inside mime_decrypt_*() the list is indexed once in a hash table (the
 * engine recognises this function), so decrypting a message of n keys
 * costs O(n + n_keys); called directly, it scans the list. */
struct mime_key_list {
    const struct mime_key *keys;
    size_t n_keys;
};
int mime_key_list_lookup(void *ctx, const char *name,
                         const unsigned char **key_r, size_t *key_len_r);

/* ---- recipient binding ----------------------------------------------------- */

/* The normalised form of an envelope address, as a copy's control part
 * binds it (FORMAT-SPEC.md 3.5): ASCII letters A-Z lower-cased, everything
 * else unchanged; must be valid UTF-8 of 1..MIME_MAX_ADDRESS_LEN octets
 * without control characters (C0, DEL, C1), spaces allowed only inside
 * (a quoted local part). *out_r is malloc'd. MIME_ERR_INVALID_ARG when
 * the address does not qualify. */
int mime_address_normalize(const char *addr, char **out_r);

#define MIME_MAX_ADDRESS_LEN 254  /* RFC 5321 path without the brackets */
#define MIME_MAX_RECIPIENTS 10000 /* bound addresses per copy */

/* ---- encrypt ------------------------------------------------------------- */

struct mime_encrypt_params {
    enum mime_alg algorithm;     /* OTP_POLY1305 or AES_256_GCM */
    const char *source_kme_id;   /* required, 1..255 visible ASCII */
    const char *master_sae_id;   /* required (the sender's SAE) */
    const char *slave_sae_id;    /* required (the receiver's SAE) */
    int protect_subject;         /* non-zero: outer Subject = placeholder */
    const char *subject_placeholder; /* NULL: MIME_DEFAULT_SUBJECT; UTF-8,
                                        1..500 octets, no control chars */
    /* Envelope recipients this copy is for (RCPT TO addresses, without
     * the angle brackets); written normalised, duplicates dropped, in the
     * authenticated control part, so that a reading proxy can refuse to
     * decrypt the copy for anyone else (mime_info_bound_to). NULL / 0: an
     * unbound copy (FORMAT-SPEC.md 3.5: readers serving several users
     * should not release it on the strength of a binding). */
    const char *const *recipients;
    size_t n_recipients;
    /* Deterministic output, for test vectors only. NULL: random. */
    const unsigned char *fixed_nonce; /* 12 octets (AES-256-GCM) */
    const char *fixed_boundary;       /* 1..70 chars [A-Za-z0-9_=.-] */
};

/* Encrypts the whole message read from in_fd (which must be seekable: a
 * regular file or a memfd; read from offset 0 with pread, the file offset is
 * not used) and writes the encrypted message to out_fd (any writable fd,
 * written sequentially). keys: ordered, distinct key_IDs, their total bits
 * exactly mime_key_bits_needed(). The output uses the line ending of the
 * input's first line (CRLF or LF). The outer message keeps the delivery
 * headers (see FORMAT-SPEC.md), never Bcc. *out_size_r (optional) receives
 * the number of octets written. */
int mime_encrypt_fd(int in_fd, int out_fd,
                    const struct mime_encrypt_params *params,
                    const struct mime_key *keys, size_t n_keys,
                    uint64_t *out_size_r, char **error_r);

/* Same, from and to memory. *out_r is malloc'd (free()). */
int mime_encrypt_mem(const void *in, size_t in_len,
                     const struct mime_encrypt_params *params,
                     const struct mime_key *keys, size_t n_keys,
                     unsigned char **out_r, size_t *out_len_r,
                     char **error_r);

/* ---- inspect ------------------------------------------------------------- */

/* What the authenticated-to-be control part says (not yet verified: inspect
 * does not decrypt). Opaque; accessors below. */
struct mime_info;

/* Reads the outer headers and the control part only. Returns
 * MIME_ERR_NOT_ENCRYPTED for an ordinary message. */
int mime_inspect_fd(int in_fd, struct mime_info **info_r, char **error_r);
int mime_inspect_mem(const void *in, size_t in_len,
                     struct mime_info **info_r, char **error_r);

unsigned mime_info_version(const struct mime_info *info);
enum mime_alg mime_info_algorithm(const struct mime_info *info);
const char *mime_info_source_kme_id(const struct mime_info *info);
const char *mime_info_master_sae_id(const struct mime_info *info);
const char *mime_info_slave_sae_id(const struct mime_info *info);
/* Octets of the original message (what decryption yields). */
uint64_t mime_info_plaintext_length(const struct mime_info *info);
/* Key entries (control part lines Key / Key-Chunks), in key-stream order. */
size_t mime_info_key_count(const struct mime_info *info);
/* i < mime_info_key_count(): the key_ID of a 014 entry, NULL for a 004
 * entry (use mime_info_key_entry) or when out of range. */
const char *mime_info_key_id(const struct mime_info *info, size_t i);
/* Bits the message takes from entry i (0 when out of range). */
uint64_t mime_info_key_bits(const struct mime_info *info, size_t i);

enum mime_key_kind {
    MIME_KEY_ETSI014 = 0, /* a key named by its key_ID */
    MIME_KEY_ETSI004 = 1, /* chunks first_index .. + count - 1 of a stream */
};
struct mime_key_entry {
    enum mime_key_kind kind;
    const char *key_id;    /* 014: the key_ID; 004: NULL */
    const char *ksid;      /* 004: the Key_stream_ID; 014: NULL */
    uint64_t first_index;  /* 004: first chunk index; 014: 0 */
    uint64_t count;        /* 004: number of chunks; 014: 1 */
    uint64_t chunk_bits;   /* 004: Key_chunk_size * 8; 014: the key's bits */
    uint64_t bits;         /* bits the message takes from the entry */
};
/* Fills *e_r (strings owned by info). MIME_ERR_INVALID_ARG when i is out
 * of range. */
int mime_info_key_entry(const struct mime_info *info, size_t i,
                        struct mime_key_entry *e_r);
/* Number of lookups decryption makes: 014 keys plus 004 chunks. */
uint64_t mime_info_lookup_count(const struct mime_info *info);

/* Recipient binding (FORMAT-SPEC.md 3.5). Authenticated only once
 * mime_decrypt*() succeeded: decide on the info it returns (info_r), or
 * check again after it - inspect alone reads claims an attacker can edit.
 * Count 0: an unbound copy. */
size_t mime_info_recipient_count(const struct mime_info *info);
/* i < count: the bound address, normalised (mime_address_normalize). */
const char *mime_info_recipient(const struct mime_info *info, size_t i);
/* 1 when addr, normalised, is one of the bound addresses; 0 when it is
 * not, or the copy is unbound; MIME_ERR_INVALID_ARG for an address that
 * cannot be normalised. */
int mime_info_bound_to(const struct mime_info *info, const char *addr);
void mime_info_free(struct mime_info **info);

/* ---- decrypt ------------------------------------------------------------- */

/* Spill settings; used only when the input cannot be re-read (a pipe). */
struct mime_decrypt_params {
    const char *tmp_dir;    /* spill directory; NULL: $TMPDIR or /tmp */
    size_t spill_threshold; /* ciphertext kept in memory up to this; 0: 4 MiB */
};

/* Decrypts the message read sequentially from in_fd (any readable fd) and
 * writes the original message, byte for byte, to out_fd. The caller never
 * sees unverified plaintext: on any error out_fd is left as it was (a
 * private memfd/O_TMPFILE output is written during the call and zeroed and
 * truncated back to its size and offset before the error is returned; other
 * outputs are written only after the tag has been verified).
 * params may be NULL. info_r (optional) receives the parsed control data
 * (also on key and authentication errors, when the control part parsed). */
int mime_decrypt_fd(int in_fd, int out_fd,
                    const struct mime_decrypt_params *params,
                    mime_key_lookup_fn *lookup, void *lookup_ctx,
                    struct mime_info **info_r, char **error_r);

/* Same, from and to memory. *out_r is malloc'd; free it with
 * mime_plaintext_free() (which wipes it). */
int mime_decrypt_mem(const void *in, size_t in_len,
                     mime_key_lookup_fn *lookup, void *lookup_ctx,
                     unsigned char **out_r, size_t *out_len_r,
                     struct mime_info **info_r, char **error_r);
/* Wipes (OPENSSL_cleanse) and frees a buffer, then sets *p to NULL. */
void mime_plaintext_free(unsigned char **p, size_t len);

/* ---- recipients ---------------------------------------------------------- */

enum mime_rcpt_kind {
    MIME_RCPT_TO = 1,
    MIME_RCPT_CC = 2,
    MIME_RCPT_BCC = 4,
};

struct mime_rcpt_list;

/* Lists the addresses in the message's To, Cc and Bcc header fields (groups
 * expanded), as lower-cased addr-specs, in header order, duplicates kept
 * (one entry per occurrence). Reads the header block only. */
int mime_recipients_fd(int in_fd, struct mime_rcpt_list **list_r,
                       char **error_r);
int mime_recipients_mem(const void *in, size_t in_len,
                        struct mime_rcpt_list **list_r, char **error_r);
size_t mime_rcpt_count(const struct mime_rcpt_list *list);
/* i < mime_rcpt_count(); NULL / 0 otherwise. */
const char *mime_rcpt_address(const struct mime_rcpt_list *list, size_t i);
enum mime_rcpt_kind mime_rcpt_kind_at(const struct mime_rcpt_list *list,
                                      size_t i);
/* Non-zero when addr (any case) appears in a field of one of the kinds in
 * kind_mask (a bitwise OR of enum mime_rcpt_kind). */
int mime_rcpt_has(const struct mime_rcpt_list *list, const char *addr,
                  unsigned kind_mask);
void mime_rcpt_list_free(struct mime_rcpt_list **list);

#endif
