/* qumail mime: offline encrypt / decrypt / inspect of message files, the
 * key budget of a message, and its recipient list. Keys come from a key
 * file (an ETSI 014 Key Container saved as JSON) or straight from a KME
 * (ETSI 014 over mutual TLS, via kme_client's blocking wrappers). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "commands.h"
#include "cmd_mime004.h"
#include "kme_client.h"
#include "mime.h"

#define DEFAULT_AUTO_THRESHOLD 65536u
#define KEYFILE_LIMIT ((size_t)256 * 1024 * 1024)

static const char usage_text[] =
    "usage: qumail mime <action> [options] [INPUT]\n"
    "\n"
    "actions:\n"
    "  encrypt     encrypt a message (INPUT or stdin) to OUTPUT or stdout\n"
    "  decrypt     decrypt a QKD-encrypted message; nothing is written unless\n"
    "              the message authenticates\n"
    "  inspect     show algorithm, KME/SAE ids, bound recipients and the key\n"
    "              list (no keys needed; not authenticated)\n"
    "  bits        print the key bits a message needs at --level\n"
    "  recipients  list To/Cc/Bcc addresses (lower-cased), one per line\n"
    "\n"
    "key source (encrypt, decrypt):\n"
    "  -k, --keys FILE        JSON key file: {\"keys\":[{\"key_ID\":ID,\"key\":B64},...]}\n"
    "                         (an ETSI 014 Key Container) or a bare array of such\n"
    "                         objects; an ETSI 004 chunk is {\"ksid\":UUID,\"index\":N,\n"
    "                         \"key\":B64}. encrypt uses every key in order and needs\n"
    "                         exactly the bits 'bits' prints (a last 004 chunk may\n"
    "                         be used in part); decrypt looks keys up.\n"
    "      --kme URL          fetch keys from an ETSI 014 KME instead (alias --url)\n"
    "                         (encrypt: enc_keys for --slave-sae; decrypt: dec_keys\n"
    "                         for the message's master SAE)\n"
    "      --cert FILE --key FILE --ca FILE   mutual TLS for --kme\n"
    "      --kme-id ID        require this KME ID in the KME certificate\n"
    "      --kme etsi004://HOST[:PORT] --ksid UUID\n"
    "                         ETSI 004 key stream instead (encrypt: chunks of that\n"
    "                         stream, registered at both ends; decrypt: the chunks\n"
    "                         the message names, from this KME)\n"
    "\n"
    "encrypt options:\n"
    "  -l, --level L          otp | aes | auto (default aes)\n"
    "      --auto-threshold N auto: OTP up to N octets, else AES (default 65536)\n"
    "      --source-kme ID    Source-KME-ID (default: from KME status, else 'local')\n"
    "      --master-sae ID    Master-SAE-ID (default: from KME status, else 'local';\n"
    "                         alias --master)\n"
    "      --slave-sae ID     Slave-SAE-ID (required with --kme; default 'local';\n"
    "                         alias --slave)\n"
    "      --subject TEXT     outer Subject placeholder (default\n"
    "                         \"" MIME_DEFAULT_SUBJECT "\")\n"
    "      --keep-subject     do not protect the Subject\n"
    "      --recipient ADDR   bind the copy to this envelope recipient\n"
    "                         (repeatable; none: an unbound copy)\n"
    "\n"
    "common:\n"
    "  -o, --output FILE      write here instead of stdout (created 0600)\n"
    "      --json             inspect / recipients: JSON output\n"
    "  -h, --help             this text\n"
    "\n"
    "exit status: 0 ok, 1 failure (message on stderr), 2 usage error (the\n"
    "option is named).\n"
    "decrypt failures name the reason: not encrypted, malformed, unsupported\n"
    "version/algorithm, key missing, key wrong size, authentication failed.\n";

struct opts {
    const char *action;
    const char *input, *output;
    const char *keys_file;
    struct kme_client_config kme;
    const char *ksid;           /* --ksid: an ETSI 004 stream */
    int use_kme;
    enum mime_level level;
    uint64_t auto_threshold;
    const char *source_kme, *master_sae, *slave_sae;
    const char *subject;
    int keep_subject;
    const char **recipients;  /* --recipient, repeatable */
    size_t n_recipients;
    int json;
};

/* ---- key sets ------------------------------------------------------------- */

/* Keys owned by the CLI: from a file or from the KME. */
struct keyset {
    struct mime_key *keys;
    size_t n;
    char **ids;                 /* file keys */
    unsigned char **bytes;      /* file keys */
    struct kme_keys *kme_keys;  /* KME keys */
};

static void keyset_clear(struct keyset *ks)
{
    for (size_t i = 0; ks->ids != NULL && i < ks->n; i++) {
        free(ks->ids[i]);
        if (ks->bytes[i] != NULL) {
            OPENSSL_cleanse(ks->bytes[i], ks->keys[i].key_len);
            free(ks->bytes[i]);
        }
    }
    free(ks->ids);
    free(ks->bytes);
    free(ks->keys);
    kme_keys_free(&ks->kme_keys);
    memset(ks, 0, sizeof(*ks));
}

/* Strict base64 (RFC 4648, with padding) to bytes; -1 on error. */
static long b64_decode(const char *s, unsigned char **out_r)
{
    size_t n = strlen(s);
    if (n == 0 || n % 4 != 0 || n > KEYFILE_LIMIT)
        return -1;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (out == NULL)
        return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (len < 0) {
        free(out);
        return -1;
    }
    len -= (s[n - 1] == '=') + (s[n - 2] == '=');
    *out_r = out;
    return len;
}


/* The whole key file in memory (jansson's file reader takes one getc per
 * character: most of an OTP run's time for a large key file). */
static char *read_keyfile(const char *path, size_t *len_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "qumail mime: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    size_t cap = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                         (uint64_t)st.st_size < KEYFILE_LIMIT
                     ? (size_t)st.st_size + 1
                     : 65536;
    size_t len = 0;
    char *buf = malloc(cap);
    int rc = buf != NULL ? 0 : -1;
    while (rc == 0) {
        if (len == cap) { /* a pipe, or a file that grew: wipe old copies */
            char *nb = cap < KEYFILE_LIMIT ? malloc(cap * 2) : NULL;
            if (nb == NULL) {
                rc = -1;
                break;
            }
            memcpy(nb, buf, len);
            OPENSSL_cleanse(buf, len);
            free(buf);
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -1;
        else if (n == 0)
            break;
        else
            len += (size_t)n;
    }
    close(fd);
    if (rc != 0 || len > KEYFILE_LIMIT) {
        fprintf(stderr, "qumail mime: %s: cannot read it (at most %zu MiB)\n",
                path, KEYFILE_LIMIT >> 20);
        if (buf != NULL)
            OPENSSL_cleanse(buf, len);
        free(buf);
        return NULL;
    }
    *len_r = len;
    return buf;
}

static int keyset_from_file(const char *path, struct keyset *ks)
{
    json_error_t jerr;
    size_t text_len = 0;
    char *text = read_keyfile(path, &text_len);
    if (text == NULL)
        return -1;
    json_t *root = json_loadb(text, text_len, 0, &jerr);
    OPENSSL_cleanse(text, text_len); /* the key file holds key bytes */
    free(text);
    if (root == NULL) {
        char *esc = mime_escape(jerr.text, strlen(jerr.text));
        fprintf(stderr, "qumail mime: %s:%d: %s\n", path, jerr.line,
                esc ? esc : "bad JSON");
        free(esc);
        return -1;
    }
    json_t *arr = json_is_array(root) ? root : json_object_get(root, "keys");
    if (!json_is_array(arr)) {
        fprintf(stderr, "qumail mime: %s: expected {\"keys\": [...]} or [...]\n",
                path);
        json_decref(root);
        return -1;
    }
    if (json_array_size(arr) == 0) {
        fprintf(stderr, "qumail mime: %s: the key list is empty\n", path);
        json_decref(root);
        return -1;
    }
    size_t n = json_array_size(arr);
    ks->keys = calloc(n, sizeof(*ks->keys));
    ks->ids = calloc(n, sizeof(char *));
    ks->bytes = calloc(n, sizeof(unsigned char *));
    if (ks->keys == NULL || ks->ids == NULL || ks->bytes == NULL) {
        json_decref(root);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *o = json_array_get(arr, i);
        const char *id = json_string_value(json_object_get(o, "key_ID"));
        const char *ksid = json_string_value(json_object_get(o, "ksid"));
        json_t *jindex = json_object_get(o, "index");
        const char *b64 = json_string_value(json_object_get(o, "key"));
        ks->n = i + 1;
        long len;
        if ((id == NULL) == (ksid == NULL) || b64 == NULL ||
            (ksid != NULL && (!json_is_integer(jindex) ||
                              json_integer_value(jindex) < 0)) ||
            (len = b64_decode(b64, &ks->bytes[i])) <= 0) {
            fprintf(stderr, "qumail mime: %s: key %zu: need a string key_ID "
                    "(ETSI 014) or a string ksid and an integer index (ETSI "
                    "004 chunk), and a non-empty base64 key\n", path, i);
            rc = -1;
            break;
        }
        ks->ids[i] = strdup(ksid != NULL ? ksid : id);
        ks->keys[i] = (struct mime_key){
            .key_id = ksid == NULL ? ks->ids[i] : NULL,
            .key = ks->bytes[i],
            .key_len = (size_t)len,
            .ksid = ksid != NULL ? ks->ids[i] : NULL,
            .index = ksid != NULL ? (uint64_t)json_integer_value(jindex) : 0,
        };
    }
    json_decref(root);
    return rc;
}

static int keyset_from_kme(struct kme_keys *kk, struct keyset *ks)
{
    ks->kme_keys = kk;
    ks->n = kk->count;
    ks->keys = calloc(kk->count ? kk->count : 1, sizeof(*ks->keys));
    if (ks->keys == NULL)
        return -1;
    for (size_t i = 0; i < kk->count; i++)
        ks->keys[i] = (struct mime_key){.key_id = kk->keys[i].key_id,
                                        .key = kk->keys[i].bytes,
                                        .key_len = kk->keys[i].len,
                                        .ksid = kk->keys[i].ksid[0] != '\0'
                                                    ? kk->keys[i].ksid : NULL,
                                        .index = kk->keys[i].index};
    return 0;
}

/* ---- input / output ----------------------------------------------------------- */

static int open_input(const char *path)
{
    if (path == NULL || strcmp(path, "-") == 0)
        return STDIN_FILENO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fprintf(stderr, "qumail mime: %s: %s\n", path, strerror(errno));
    return fd;
}

/* Encryption needs a seekable input: copy a pipe into a memfd. */
static int seekable_input(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        return fd;
    int mfd = memfd_create("qumail-mime-input", MFD_CLOEXEC);
    if (mfd < 0)
        return -1;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
        if (n > 0 && write(mfd, buf, (size_t)n) != n) {
            close(mfd);
            return -1;
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    /* Readers start where the copy ended otherwise: at the end. */
    if (n < 0 || lseek(mfd, 0, SEEK_SET) != 0) {
        close(mfd);
        return -1;
    }
    return mfd;
}

/* An output: stdout, an existing non-regular file (a device, a FIFO:
 * written directly and never removed), or a regular file, written as a
 * private temporary file beside it (mode 0600) and renamed over it only on
 * success - a failed run leaves whatever was there untouched. */
struct output {
    int fd;
    const char *path;   /* NULL: stdout or written directly */
    char *tmp;          /* the temporary file while writing */
};

static int open_output(const char *path, struct output *o)
{
    memset(o, 0, sizeof(*o));
    struct stat st;
    if (path == NULL || strcmp(path, "-") == 0) {
        o->fd = STDOUT_FILENO;
        return 0;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        o->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (o->fd < 0)
            fprintf(stderr, "qumail mime: %s: %s\n", path, strerror(errno));
        return o->fd < 0 ? -1 : 0;
    }
    if (asprintf(&o->tmp, "%s.qumail-XXXXXX", path) < 0) {
        o->tmp = NULL;
        return -1;
    }
    o->fd = mkostemp(o->tmp, O_CLOEXEC); /* mode 0600 */
    if (o->fd < 0) {
        fprintf(stderr, "qumail mime: %s: %s\n", path, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return -1;
    }
    o->path = path;
    return 0;
}

/* Finishes an output; returns 0, or -1 when a successful run could not be
 * put in place. */
static int close_output(struct output *o, int ok)
{
    int rc = 0;
    if (o->fd != STDOUT_FILENO && o->fd >= 0 && close(o->fd) != 0)
        ok = rc = -1;
    if (o->tmp != NULL) {
        if (ok && rename(o->tmp, o->path) != 0) {
            fprintf(stderr, "qumail mime: %s: %s\n", o->path, strerror(errno));
            rc = -1;
            ok = 0;
        }
        if (!ok)
            unlink(o->tmp);
        free(o->tmp);
    }
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    return rc;
}

static int fail(const char *what, int rc, char *err)
{
    /* mime's texts carry message values escaped already (mime_escape) */
    fprintf(stderr, "qumail mime %s: %s%s%s\n", what, mime_strerror(rc),
            err ? ": " : "", err ? err : "");
    free(err);
    return 1;
}

/* ---- actions ---------------------------------------------------------------- */

static uint64_t input_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int do_encrypt(const struct opts *o)
{
    int in = open_input(o->input);
    if (in < 0)
        return 1;
    int sin = seekable_input(in);
    if (sin < 0) {
        fprintf(stderr, "qumail mime encrypt: cannot buffer the input\n");
        return 1;
    }
    uint64_t size = input_size(sin);
    enum mime_alg alg = mime_level_algorithm(o->level, o->auto_threshold, size);
    uint64_t bits = 0;
    int rc = mime_key_bits_needed(alg, size, &bits);
    if (alg == MIME_ALG_NONE || rc != MIME_OK) {
        fprintf(stderr, "qumail mime encrypt: level none: nothing to do\n");
        return 2;
    }
    struct keyset ks = {0};
    struct mime_encrypt_params p = {
        .algorithm = alg,
        .source_kme_id = o->source_kme ? o->source_kme : "local",
        .master_sae_id = o->master_sae ? o->master_sae : "local",
        .slave_sae_id = o->slave_sae ? o->slave_sae : "local",
        .protect_subject = !o->keep_subject,
        .subject_placeholder = o->subject,
        .recipients = o->recipients,
        .n_recipients = o->n_recipients,
    };
    struct kme_status *st = NULL;
    char *err = NULL, *kme_id = NULL, *sae_id = NULL;
    int status = 1;
    if (o->use_kme && mime004_url(o->kme.url)) { /* ETSI 004 stream */
        struct kme_keys *kk = NULL;
        int k = mime004_enc_keys(&o->kme, o->ksid, bits, &kk, &kme_id, &sae_id, &err);
        if (k != KME_OK) {
            fprintf(stderr, "qumail mime encrypt: ETSI 004 KME (%llu bits): %s: %s\n",
                    (unsigned long long)bits, kme_client_strerror(k), err ? err : "");
            goto out;
        }
        if (o->source_kme == NULL && kme_id != NULL)
            p.source_kme_id = kme_id;
        if (o->master_sae == NULL && sae_id != NULL)
            p.master_sae_id = sae_id;
        if (keyset_from_kme(kk, &ks) != 0)
            goto out;
    } else if (o->use_kme) {
        if (o->slave_sae == NULL) {
            fprintf(stderr, "qumail mime encrypt: --kme needs --slave-sae\n");
            goto out;
        }
        if (o->source_kme == NULL || o->master_sae == NULL) {
            int k = kme_sync_status(&o->kme, o->slave_sae, &st, &err);
            if (k != KME_OK) {
                fprintf(stderr, "qumail mime encrypt: KME status: %s: %s\n",
                        kme_client_strerror(k), err ? err : "");
                goto out;
            }
            if (o->source_kme == NULL)
                p.source_kme_id = st->source_kme_id;
            if (o->master_sae == NULL)
                p.master_sae_id = st->master_sae_id;
        }
        struct kme_keys *kk = NULL;
        int k = kme_sync_enc_bits(&o->kme, o->slave_sae, bits, &kk, &err);
        if (k != KME_OK) {
            fprintf(stderr, "qumail mime encrypt: KME enc_keys (%llu bits): "
                    "%s: %s\n", (unsigned long long)bits,
                    kme_client_strerror(k), err ? err : "");
            goto out;
        }
        if (keyset_from_kme(kk, &ks) != 0)
            goto out;
    } else if (o->keys_file == NULL) {
        fprintf(stderr, "qumail mime encrypt: --keys or --kme required "
                "(this message needs %llu key bits at %s)\n",
                (unsigned long long)bits, mime_alg_name(alg));
        status = 2;
        goto out;
    } else if (keyset_from_file(o->keys_file, &ks) != 0) {
        goto out;
    }
    struct output out;
    if (open_output(o->output, &out) != 0)
        goto out;
    rc = mime_encrypt_fd(sin, out.fd, &p, ks.keys, ks.n, NULL, &err);
    if (close_output(&out, rc == MIME_OK) != 0 && rc == MIME_OK)
        goto out;
    if (rc != MIME_OK) {
        status = fail("encrypt", rc, err);
        err = NULL;
        goto out;
    }
    status = 0;
out:
    free(err);
    free(kme_id);
    free(sae_id);
    kme_status_free(&st);
    keyset_clear(&ks);
    if (sin != in)
        close(sin);
    if (in != STDIN_FILENO)
        close(in);
    return status;
}

static int do_decrypt(const struct opts *o)
{
    int in = open_input(o->input);
    if (in < 0)
        return 1;
    struct keyset ks = {0};
    char *err = NULL;
    int status = 1, rc;
    if (o->use_kme) {
        /* The key_IDs and the master SAE come from the control part. */
        int sin = seekable_input(in);
        if (sin < 0)
            goto out;
        if (sin != in && in != STDIN_FILENO)
            close(in);
        in = sin;
        struct mime_info *info = NULL;
        rc = mime_inspect_fd(in, &info, &err);
        if (rc != MIME_OK) {
            status = fail("decrypt", rc, err);
            err = NULL;
            goto out;
        }
        if (mime004_url(o->kme.url)) { /* the chunks of ETSI 004 streams */
            struct kme_keys *kk = NULL;
            int k = mime004_dec_keys(&o->kme, info, &kk, &err);
            mime_info_free(&info);
            if (k != KME_OK) {
                fprintf(stderr, "qumail mime decrypt: ETSI 004 KME: %s: %s\n",
                        kme_client_strerror(k), err ? err : "");
                goto out;
            }
            if (keyset_from_kme(kk, &ks) != 0 || lseek(in, 0, SEEK_SET) != 0)
                goto out;
            goto keys_ready;
        }
        size_t n = mime_info_key_count(info);
        for (size_t i = 0; i < n; i++) {
            if (mime_info_key_id(info, i) == NULL) {
                fprintf(stderr, "qumail mime decrypt: the message uses an "
                        "ETSI 004 key stream; --kme speaks ETSI 014 only\n");
                mime_info_free(&info);
                goto out;
            }
        }
        const char **ids = calloc(n, sizeof(char *));
        for (size_t i = 0; ids != NULL && i < n; i++)
            ids[i] = mime_info_key_id(info, i);
        struct kme_keys *kk = NULL;
        int k = ids ? kme_sync_dec_keys(&o->kme, mime_info_master_sae_id(info),
                                        ids, n, &kk, &err)
                    : KME_ENOMEM;
        free(ids);
        mime_info_free(&info);
        if (k != KME_OK) {
            fprintf(stderr, "qumail mime decrypt: KME dec_keys: %s: %s\n",
                    kme_client_strerror(k), err ? err : "");
            goto out;
        }
        if (keyset_from_kme(kk, &ks) != 0 || lseek(in, 0, SEEK_SET) != 0)
            goto out;
    } else if (o->keys_file == NULL) {
        fprintf(stderr, "qumail mime decrypt: --keys or --kme required\n");
        status = 2;
        goto out;
    } else if (keyset_from_file(o->keys_file, &ks) != 0) {
        goto out;
    }
keys_ready:;
    struct output out;
    if (open_output(o->output, &out) != 0)
        goto out;
    struct mime_key_list kl = {ks.keys, ks.n};
    rc = mime_decrypt_fd(in, out.fd, NULL, mime_key_list_lookup, &kl, NULL,
                         &err);
    if (close_output(&out, rc == MIME_OK) != 0 && rc == MIME_OK)
        goto out;
    if (rc != MIME_OK) {
        status = fail("decrypt", rc, err);
        err = NULL;
        goto out;
    }
    status = 0;
out:
    free(err);
    keyset_clear(&ks);
    if (in != STDIN_FILENO)
        close(in);
    return status;
}

/* Prints a value taken from a message, escaped (mime_escape): control
 * characters, ESC, invalid UTF-8... never reach the terminal raw. */
static void print_escaped(const char *prefix, const char *v, const char *suffix)
{
    char *esc = v != NULL ? mime_escape(v, strlen(v)) : NULL;
    printf("%s%s%s", prefix, esc != NULL ? esc : "", suffix);
    free(esc);
}

/* A JSON string for a value from a message: as is when valid UTF-8 (the
 * output is written with JSON_ENSURE_ASCII, so controls become \uXXXX),
 * else its escaped form. */
static json_t *json_text(const char *v)
{
    json_t *j = json_string(v != NULL ? v : "");
    if (j == NULL && v != NULL) {
        char *esc = mime_escape(v, strlen(v));
        j = json_string(esc != NULL ? esc : "");
        free(esc);
    }
    return j;
}

static json_t *inspect_json(const struct mime_info *info, uint64_t total)
{
    json_t *keys = json_array(), *rcpts = json_array();
    for (size_t i = 0; i < mime_info_key_count(info); i++) {
        struct mime_key_entry e;
        mime_info_key_entry(info, i, &e);
        if (e.kind == MIME_KEY_ETSI014)
            json_array_append_new(keys, json_pack("{s:o, s:I}", "key_ID",
                                                  json_text(e.key_id), "bits",
                                                  (json_int_t)e.bits));
        else
            json_array_append_new(
                keys, json_pack("{s:o, s:I, s:I, s:I, s:I}", "ksid",
                                json_text(e.ksid), "first_index",
                                (json_int_t)e.first_index, "count",
                                (json_int_t)e.count, "chunk_bits",
                                (json_int_t)e.chunk_bits, "bits",
                                (json_int_t)e.bits));
    }
    for (size_t i = 0; i < mime_info_recipient_count(info); i++)
        json_array_append_new(rcpts, json_text(mime_info_recipient(info, i)));
    return json_pack("{s:i, s:s, s:o, s:o, s:o, s:I, s:I, s:o, s:o}",
                     "version", (int)mime_info_version(info), "algorithm",
                     mime_alg_name(mime_info_algorithm(info)),
                     "source_kme_id", json_text(mime_info_source_kme_id(info)),
                     "master_sae_id", json_text(mime_info_master_sae_id(info)),
                     "slave_sae_id", json_text(mime_info_slave_sae_id(info)),
                     "plaintext_length",
                     (json_int_t)mime_info_plaintext_length(info), "key_bits",
                     (json_int_t)total, "recipients", rcpts, "keys", keys);
}

static int do_inspect(const struct opts *o)
{
    int in = open_input(o->input);
    if (in < 0)
        return 1;
    struct mime_info *info = NULL;
    char *err = NULL;
    int rc = mime_inspect_fd(in, &info, &err);
    if (in != STDIN_FILENO)
        close(in);
    if (rc != MIME_OK)
        return fail("inspect", rc, err);
    size_t n = mime_info_key_count(info);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += mime_info_key_bits(info, i);
    if (o->json) {
        json_t *j = inspect_json(info, total);
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        printf("\n");
        json_decref(j);
        mime_info_free(&info);
        return 0;
    }
    printf("version:          %u\n", mime_info_version(info));
    printf("algorithm:        %s\n", mime_alg_name(mime_info_algorithm(info)));
    print_escaped("source KME ID:    ", mime_info_source_kme_id(info), "\n");
    print_escaped("master SAE ID:    ", mime_info_master_sae_id(info), "\n");
    print_escaped("slave SAE ID:     ", mime_info_slave_sae_id(info), "\n");
    printf("plaintext length: %llu octets\n",
           (unsigned long long)mime_info_plaintext_length(info));
    size_t nr = mime_info_recipient_count(info);
    printf("bound to:         %s\n", nr == 0 ? "nobody (unbound copy)" : "");
    for (size_t i = 0; i < nr; i++)
        print_escaped("  ", mime_info_recipient(info, i), "\n");
    printf("keys:             %zu entries, %llu lookups (%llu bits)\n", n,
           (unsigned long long)mime_info_lookup_count(info),
           (unsigned long long)total);
    for (size_t i = 0; i < n; i++) {
        struct mime_key_entry e;
        mime_info_key_entry(info, i, &e);
        if (e.kind == MIME_KEY_ETSI014) {
            print_escaped("  ", e.key_id, "");
            printf(" %llu\n", (unsigned long long)e.bits);
        } else {
            print_escaped("  004 stream ", e.ksid, "");
            printf(" chunks %llu..%llu of %llu bits: %llu bits\n",
                   (unsigned long long)e.first_index,
                   (unsigned long long)(e.first_index + e.count - 1),
                   (unsigned long long)e.chunk_bits,
                   (unsigned long long)e.bits);
        }
    }
    printf("(not authenticated: only a successful decrypt proves these)\n");
    mime_info_free(&info);
    return 0;
}

static int do_bits(const struct opts *o)
{
    int in = open_input(o->input);
    if (in < 0)
        return 1;
    int sin = seekable_input(in);
    uint64_t size = sin >= 0 ? input_size(sin) : 0;
    if (sin >= 0 && sin != in)
        close(sin);
    if (in != STDIN_FILENO)
        close(in);
    if (sin < 0)
        return 1;
    enum mime_alg alg = mime_level_algorithm(o->level, o->auto_threshold, size);
    uint64_t bits = 0;
    int rc = mime_key_bits_needed(alg, size, &bits);
    if (rc != MIME_OK)
        return fail("bits", rc, NULL);
    printf("%llu %s %llu\n", (unsigned long long)bits, mime_alg_name(alg),
           (unsigned long long)size);
    return 0;
}

static int do_recipients(const struct opts *o)
{
    int in = open_input(o->input);
    if (in < 0)
        return 1;
    struct mime_rcpt_list *l = NULL;
    char *err = NULL;
    int rc = mime_recipients_fd(in, &l, &err);
    if (in != STDIN_FILENO)
        close(in);
    if (rc != MIME_OK)
        return fail("recipients", rc, err);
    for (size_t i = 0; i < mime_rcpt_count(l); i++) {
        enum mime_rcpt_kind k = mime_rcpt_kind_at(l, i);
        print_escaped(k == MIME_RCPT_TO   ? "to "
                      : k == MIME_RCPT_CC ? "cc "
                                          : "bcc ",
                      mime_rcpt_address(l, i), "\n");
    }
    mime_rcpt_list_free(&l);
    return 0;
}

/* ---- options ---------------------------------------------------------------- */

enum {
    OPT_KME = 256, OPT_CERT, OPT_KEY, OPT_CA, OPT_KME_ID, OPT_THRESHOLD,
    OPT_SOURCE_KME, OPT_MASTER, OPT_SLAVE, OPT_SUBJECT, OPT_KEEP_SUBJECT,
    OPT_JSON, OPT_RECIPIENT, OPT_KSID,
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"keys", required_argument, NULL, 'k'},
        {"output", required_argument, NULL, 'o'},
        {"level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"kme", required_argument, NULL, OPT_KME},
        {"url", required_argument, NULL, OPT_KME}, /* alias, as kme-client */
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"ca", required_argument, NULL, OPT_CA},
        {"kme-id", required_argument, NULL, OPT_KME_ID},
        {"auto-threshold", required_argument, NULL, OPT_THRESHOLD},
        {"source-kme", required_argument, NULL, OPT_SOURCE_KME},
        {"master-sae", required_argument, NULL, OPT_MASTER},
        {"slave-sae", required_argument, NULL, OPT_SLAVE},
        {"master", required_argument, NULL, OPT_MASTER}, /* aliases, as */
        {"slave", required_argument, NULL, OPT_SLAVE},   /* kme-client */
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"keep-subject", no_argument, NULL, OPT_KEEP_SUBJECT},
        {"json", no_argument, NULL, OPT_JSON},
        {"recipient", required_argument, NULL, OPT_RECIPIENT},
        {"ksid", required_argument, NULL, OPT_KSID},
        {NULL, 0, NULL, 0},
    };
    o->level = MIME_LEVEL_AES;
    o->auto_threshold = DEFAULT_AUTO_THRESHOLD;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "k:o:l:h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'k': o->keys_file = optarg; break;
        case 'o': o->output = optarg; break;
        case 'l':
            if (mime_level_parse(optarg, &o->level) != MIME_OK) {
                fprintf(stderr, "qumail mime: --level: otp, aes, auto or none\n");
                return 2;
            }
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_KME: o->kme.url = optarg; o->use_kme = 1; break;
        case OPT_CERT: o->kme.cert_file = optarg; break;
        case OPT_KEY: o->kme.key_file = optarg; break;
        case OPT_CA: o->kme.ca_file = optarg; break;
        case OPT_KME_ID: o->kme.expect_kme_id = optarg; break;
        case OPT_THRESHOLD:
            errno = 0;
            o->auto_threshold = strtoull(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || optarg[0] == '-') {
                fprintf(stderr, "qumail mime: --auto-threshold: octets\n");
                return 2;
            }
            break;
        case OPT_SOURCE_KME: o->source_kme = optarg; break;
        case OPT_MASTER: o->master_sae = optarg; break;
        case OPT_SLAVE: o->slave_sae = optarg; break;
        case OPT_SUBJECT: o->subject = optarg; break;
        case OPT_KEEP_SUBJECT: o->keep_subject = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_KSID: o->ksid = optarg; break;
        case OPT_RECIPIENT: {
            const char **r = realloc(o->recipients,
                                     (o->n_recipients + 1) * sizeof(*r));
            if (r == NULL)
                return 1;
            r[o->n_recipients++] = optarg;
            o->recipients = r;
            break;
        }
        default: fputs("usage: qumail mime --help\n", stderr); return 2;
        }
    }
    if (optind < argc)
        o->input = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "qumail mime: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->use_kme && o->keys_file != NULL) {
        fprintf(stderr, "qumail mime: --keys and --kme are exclusive\n");
        return 2;
    }
    return -1; /* go on */
}

int cmd_mime(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(const struct opts *o);
    } actions[] = {
        {"encrypt", do_encrypt}, {"decrypt", do_decrypt},
        {"inspect", do_inspect}, {"bits", do_bits},
        {"recipients", do_recipients},
    };
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (strcmp(argv[1], actions[i].name) != 0)
            continue;
        struct opts o = {.action = argv[1]};
        int rc = parse_opts(argc - 1, argv + 1, &o);
        if (rc < 0)
            rc = actions[i].run(&o);
        free(o.recipients);
        return rc;
    }
    fprintf(stderr, "qumail mime: unknown action '%s'\n\n", argv[1]);
    fputs(usage_text, stderr);
    return 2;
}
