/* Internals shared by the mime module's files. Not installed, not public. */
#ifndef QUMAIL_MIME_INTERNAL_H
#define QUMAIL_MIME_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "mime.h"

#define MIME_PROTOCOL "application/x-qkd-encrypted"
/* Part titles a mail program without the gateway shows (FORMAT-SPEC 2.5) */
#define MIME_CONTROL_DESCRIPTION "QuMail key references (not the message itself)"
#define MIME_DATA_DESCRIPTION "Encrypted message: read it through a QuMail gateway"
#define MIME_KEY_BITS_AES 256u
#define MIME_KEY_BITS_MAC 256u
#define MIME_TAG_LEN ((size_t)16)
#define MIME_NONCE_LEN ((size_t)12)
#define MIME_HEADER_LIMIT ((size_t)256 * 1024)      /* outer/inner header block */
#define MIME_OUTER_KEPT_LIMIT ((size_t)64 * 1024)   /* original fields kept outside */
#define MIME_OUTER_LINE_LIMIT ((size_t)16 * 1024)   /* longest kept physical line */
#define MIME_CONTROL_LIMIT ((size_t)64 * 1024 * 1024) /* control part text */
#define MIME_LINE_LIMIT ((size_t)64 * 1024)         /* one line of the outer msg */
#define MIME_B64_LINE ((size_t)57)                    /* octets per 76-char line */
#define MIME_CHUNK (MIME_B64_LINE * 4096)    /* ~228 KiB streaming chunk */
#define MIME_MAX_BOUNDARY 70u
#define MIME_SPILL_DEFAULT ((size_t)4 * 1024 * 1024) /* ciphertext kept in memory */

/* Stores a malloc'd printf-formatted detail in *error_r (when not NULL) and
 * returns err. */
int mime_fail(char **error_r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 when s is 1..MIME_MAX_ID_LEN visible ASCII characters (0x21-0x7E). */
int mime_id_valid(const char *s);

/* 1 when list entry k has the lookup name (key_ID or "<KSID> <index>"). */
int mime_key_list_match(const struct mime_key *k, const char *name);

/* Length of the valid UTF-8 sequence at s (n > 0 octets left; 0 when
 * invalid: overlong, surrogate, beyond U+10FFFF, truncated); *cp_r gets
 * the code point. */
size_t mime_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp_r);

/* ---- control data (mime_control.c) --------------------------------------- */

/* One key entry of the control part (a Key or a Key-Chunks line). */
struct mime_entry {
    enum mime_key_kind kind;
    const char *id;        /* key_ID or KSID, in the info's arena */
    uint64_t first, count; /* 004 chunk range; 014: 0, 1 */
    uint64_t chunk_bits;   /* 004: chunk size; 014: the key's bits */
    uint64_t bits;         /* bits used */
};

struct mime_info {
    unsigned version;
    enum mime_alg alg;
    char *source_kme_id;
    char *master_sae_id;
    char *slave_sae_id;
    uint64_t length;                     /* plaintext octets */
    unsigned char nonce[MIME_NONCE_LEN]; /* AES-256-GCM only */
    size_t n_rcpts;
    char **rcpts;                        /* normalised, in the arena */
    size_t n_keys;
    struct mime_entry *keys;
    uint64_t n_pieces;                   /* 014 keys + 004 chunks */
    char *arena;                         /* ids and addresses, NUL-ended */
    size_t arena_len, arena_cap;
};

/* Canonical control text (CRLF line ends, see FORMAT-SPEC.md); malloc'd,
 * not NUL-terminated in meaning (length in *len_r, but a NUL follows). */
int mime_control_build(const struct mime_info *info, char **text_r,
                       size_t *len_r, char **error_r);
/* Strict parse of canonical control text (CRLF line ends). */
int mime_control_parse(const char *text, size_t len, struct mime_info **info_r,
                       char **error_r);
struct mime_info *mime_info_new(void);
/* Copies n octets into the info's arena (NUL-terminated); NULL: no memory. */
char *mime_info_arena_add(struct mime_info *info, const char *s, size_t n);
/* 1 when s[0..n) is a canonical KSID: a lowercase UUID string. */
int mime_ksid_valid(const char *s, size_t n);
/* Control-text form of a normalised address (octets >= 0x80, '%' and SP as
 * %HH); malloc'd. */
char *mime_address_encode(const char *addr);

/* ---- hash index (mime_hash.c) -------------------------------------------- */

/* Open addressing over array positions, keyed per table (flood-proof).
 * mime_hash_new(n): room for at most n insertions. */
struct mime_hash;
struct mime_hash *mime_hash_new(size_t n);
void mime_hash_free(struct mime_hash **h);
/* Hash of data[0..len) and an extra 64-bit word (e.g. a chunk index). */
uint64_t mime_hash_of(const struct mime_hash *h, const void *data, size_t len,
                      uint64_t extra);
/* eq: 1 when the stored value matches key. */
typedef int mime_hash_eq_fn(const void *ctx, size_t value, const void *key);
/* The value stored under hv that eq accepts, or SIZE_MAX. */
size_t mime_hash_find(const struct mime_hash *h, uint64_t hv,
                      mime_hash_eq_fn *eq, const void *ctx, const void *key);
/* Asks the CPU to fetch hv's slot early: callers going through many keys
 * hash a few keys ahead, so the (random) slot loads overlap. */
void mime_hash_prefetch(const struct mime_hash *h, uint64_t hv);
#define MIME_HASH_AHEAD 8
/* Stores value under hv unless eq finds key stored already: returns that
 * value then, SIZE_MAX when it stored. */
size_t mime_hash_add(struct mime_hash *h, uint64_t hv, mime_hash_eq_fn *eq,
                     const void *ctx, const void *key, size_t value);

/* ---- base64 (mime_b64.c) ------------------------------------------------- */

/* Encodes n octets (n <= MIME_B64_LINE * k) as lines of 76 characters, each
 * followed by eol; the last line may be short. Returns characters written;
 * out must hold mime_b64_encoded_max(n, eol_len). */
size_t mime_b64_encode_lines(const unsigned char *in, size_t n,
                             const char *eol, size_t eol_len, char *out);
size_t mime_b64_encoded_max(size_t n, size_t eol_len);

/* Strict streaming decoder: only A-Z a-z 0-9 + / and '=' padding at the very
 * end; CR and LF are skipped; padding bits must be zero. */
struct mime_b64_dec {
    uint32_t acc;
    unsigned nacc;   /* sextets in acc */
    unsigned npad;   /* '=' seen */
};
/* Decodes len characters into out (room for len*3/4 + 11: the fast paths
 * store 8 or 32 octets at a time); returns octets written, or -1 on
 * invalid input. */
long mime_b64_decode(struct mime_b64_dec *d, const char *in, size_t len,
                     unsigned char *out);
/* -1 when the input ended inside a quantum or with bad padding, else the
 * number of trailing octets written to out (0..2; room for 3). */
long mime_b64_decode_final(struct mime_b64_dec *d, unsigned char *out);

/* ---- cipher engine (mime_cipher.c) --------------------------------------- */

/* One piece of the key stream: the octets of a key or a 004 chunk that
 * the message uses (borrowed). */
struct mime_piece {
    const unsigned char *p;
    size_t len;
};

/* A cursor over the ordered pieces seen as one key stream. */
struct mime_keystream {
    const struct mime_piece *keys;
    size_t n_keys;
    size_t idx;
    size_t off;
};

struct mime_cipher;

/* Creates the engine for alg, consuming the pieces (exactly the bits
 * needed: checked by the caller). control/control_len: the canonical
 * control text, authenticated first. encrypt: 1 to encrypt, 0 to decrypt. */
int mime_cipher_new(enum mime_alg alg, int encrypt,
                    const struct mime_piece *keys, size_t n_keys,
                    const unsigned char *nonce, const char *control,
                    size_t control_len, struct mime_cipher **c_r,
                    char **error_r);
/* Transforms n octets (out may equal in). Authenticates the plaintext (OTP:
 * the Poly1305 input; AES: GCM's own tag over the ciphertext). */
int mime_cipher_update(struct mime_cipher *c, const unsigned char *in,
                       unsigned char *out, size_t n);
/* Decrypt, release from a private spill after a verified first pass: OTP
 * XOR without the MAC; AES decrypts (GCM computes its tag regardless). */
int mime_cipher_transform_only(struct mime_cipher *c, const unsigned char *in,
                               unsigned char *out, size_t n);
/* Authenticates ciphertext without producing output: decrypts into an
 * internal scratch buffer (wiped) and MACs that (OTP) / lets GCM check. */
int mime_cipher_auth_only(struct mime_cipher *c, const unsigned char *in,
                          size_t n);
/* Encrypt: writes the tag. Decrypt: compares the tag (constant time);
 * MIME_ERR_AUTH_FAILED on mismatch. */
int mime_cipher_final(struct mime_cipher *c, unsigned char tag[MIME_TAG_LEN]);
void mime_cipher_free(struct mime_cipher **c);

/* ---- I/O (mime_io.c) ------------------------------------------------------ */

/* Sequential reader over an fd or a memory block, handing out lines. */
struct mime_reader;
struct mime_reader *mime_reader_fd(int fd);
struct mime_reader *mime_reader_mem(const void *data, size_t len);
/* 1: a line (without its EOL) in *line_r and *len_r, *eol_r its EOL length;
 * 0: end of input; MIME_ERR_IO / MIME_ERR_MALFORMED (line too long). */
int mime_reader_line(struct mime_reader *r, const char **line_r,
                     size_t *len_r, size_t *eol_r);
/* Bulk access: at least want octets buffered at the read position (fewer
 * only at the end of input; want is capped at half the buffer). */
int mime_reader_peek(struct mime_reader *r, size_t want, const char **p_r,
                     size_t *n_r);
void mime_reader_consume(struct mime_reader *r, size_t n);
/* 1 when the input can be read again from an earlier offset (memory, or a
 * regular file / memfd). */
int mime_reader_seekable(const struct mime_reader *r);
/* Offset of the read position from where reading started. */
uint64_t mime_reader_offset(const struct mime_reader *r);
/* Restarts reading at an offset returned by mime_reader_offset(). */
int mime_reader_seek(struct mime_reader *r, uint64_t off);
void mime_reader_free(struct mime_reader **r);

/* Buffered sequential writer to an fd or a growing memory block. */
struct mime_writer;
struct mime_writer *mime_writer_fd(int fd);
/* Memory writer; exact_size > 0 preallocates (no reallocation, so no
 * stale copies of secrets). wipe: cleanse buffers on free. */
struct mime_writer *mime_writer_mem(size_t exact_size, int wipe);
/* Growing memory writer starting at initial_cap octets. */
struct mime_writer *mime_writer_mem_hint(size_t initial_cap);
int mime_writer_put(struct mime_writer *w, const void *data, size_t len);
int mime_writer_puts(struct mime_writer *w, const char *s);
/* A buffer of at least want octets to fill in place, then _commit(n). */
void *mime_writer_reserve(struct mime_writer *w, size_t want);
int mime_writer_commit(struct mime_writer *w, size_t n);
int mime_writer_flush(struct mime_writer *w);
uint64_t mime_writer_total(const struct mime_writer *w);
int mime_writer_is_mem(const struct mime_writer *w);
/* Memory writer: the bytes written so far, in place (still owned). */
unsigned char *mime_writer_data(struct mime_writer *w, size_t *len_r);
/* Memory writer: hands the block over (malloc'd) and its length. */
unsigned char *mime_writer_take(struct mime_writer *w, size_t *len_r);
void mime_writer_set_wipe(struct mime_writer *w, int wipe);
/* Fd writer, nothing written yet: records where the output starts so that
 * mime_writer_discard() can take it back. Returns 0 when it cannot (not a
 * regular file, O_APPEND, offset not at the end), 1 for a regular file, 2
 * for a private one: a regular file without a name (st_nlink == 0: memfd,
 * O_TMPFILE, unlinked), which no other process can open by path. */
int mime_writer_mark(struct mime_writer *w);
/* Takes back everything written: drops (wipes) pending octets and, for a
 * marked fd, overwrites what reached the file with zeros and truncates it
 * back to its marked size. MIME_ERR_IO when octets reached an unmarked fd
 * or the undo failed. The writer refuses further output afterwards. */
int mime_writer_discard(struct mime_writer *w);
void mime_writer_free(struct mime_writer **w);

/* Append-only spill: memory up to a threshold, then a private unlinked
 * temporary file; read back sequentially. Contents wiped on free. */
struct mime_spill;
int mime_spill_new(const char *tmp_dir, size_t threshold,
                   struct mime_spill **s_r, char **error_r);
int mime_spill_append(struct mime_spill *s, const void *data, size_t len);
/* Restarts reading at offset 0. */
int mime_spill_rewind(struct mime_spill *s);
/* Reads up to cap octets; returns count (0 at end) or MIME_ERR_IO. */
long mime_spill_read(struct mime_spill *s, void *buf, size_t cap);
uint64_t mime_spill_size(const struct mime_spill *s);
void mime_spill_free(struct mime_spill **s);

/* Random-access source for encryption: a seekable fd or memory. */
struct mime_source {
    int fd;                  /* -1 for memory */
    const unsigned char *mem;
    uint64_t size;
};
int mime_source_read(const struct mime_source *src, uint64_t off, void *buf,
                     size_t len);

/* ---- Content-Type / -Transfer-Encoding values (mime_ctype.c) ------------- */

struct mime_ctype {
    int has_type;          /* type "/" subtype parsed */
    int syntax_error;      /* anything not RFC 2045 + CFWS */
    char type[32];         /* lower case ("" when longer) */
    char subtype[32];
    char *protocol;        /* first protocol parameter, unquoted */
    char *boundary;        /* first boundary parameter, unquoted */
    unsigned n_protocol, n_boundary;
};
/* Parses an unfolded Content-Type value (never fails: see syntax_error);
 * mime_ctype_clear() frees it. */
void mime_ctype_parse(const char *value, size_t len, struct mime_ctype *ct);
void mime_ctype_clear(struct mime_ctype *ct);
int mime_ctype_is(const struct mime_ctype *ct, const char *type,
                  const char *subtype);
/* 1 when the field claims to be QKD-MIME (FORMAT-SPEC.md 2.6): type
 * multipart/encrypted and the first protocol parameter is ours, or the
 * parameters do not parse and raw mentions our protocol. */
int mime_ctype_claims_qkd(const struct mime_ctype *ct, const char *raw,
                          size_t raw_len);
/* A Content-Transfer-Encoding value: CFWS token CFWS, lower-cased into
 * out. 0, or -1 when it is not a single token. */
int mime_cte_parse(const char *value, size_t len, char *out, size_t cap);
/* 1 when b is an RFC 2046 boundary: 1-70 bchars, not ending in SP. */
int mime_boundary_valid(const char *b);

/* ---- headers (mime_headers.c) -------------------------------------------- */

/* One header field of a header block: raw bytes from its name to (not
 * including) the EOL of its last line. */
struct mime_field {
    const char *name;
    size_t name_len;
    const char *raw;   /* whole field, folding kept */
    size_t raw_len;
    const char *value; /* after the colon */
    size_t value_len;
};

/* Splits a header block (text up to, not including, the empty line) into
 * fields. Lines that are not fields (no colon, mbox "From " line) are
 * skipped. *fields_r is malloc'd (pointers into block). */
int mime_fields_split(const char *block, size_t len,
                      struct mime_field **fields_r, size_t *n_r);
/* Length of the header block at the start of text (up to the empty line,
 * excluding it); *complete_r = 1 when the empty line was found. */
size_t mime_header_block_len(const char *text, size_t len, int *complete_r);
/* 1 when the field is one the outer message keeps (FORMAT-SPEC.md). */
int mime_field_kept_outside(const struct mime_field *f);
/* Unfolded value with CR/LF removed, malloc'd. */
char *mime_field_unfold(const struct mime_field *f);
int mime_field_is(const struct mime_field *f, const char *name);

#endif
