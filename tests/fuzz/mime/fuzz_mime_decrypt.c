/* libFuzzer target for the untrusted-input paths of mime: inspect (and the
 * format 2 accessors: key entries, recipient binding), decrypt (memory API,
 * and the fd API over a pipe-free memfd so the second-pass reader runs too)
 * and the recipient parser. Keys: a fixed set the corpus messages may
 * reference (014 keys "fz-0", "fz-1" of 32 and 64 octets; 16-octet chunks
 * 0-2 of the 004 stream FZ_KSID), so inputs that get past the control part
 * reach the lookups, the cipher and the tag checks. Error texts must come
 * out escaped.
 *
 * Build: CC=clang cmake -DQUMAIL_FUZZ=ON ...; run: fuzz_mime_decrypt DIR */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mime.h"

static unsigned char k0[32], k1[64], c[16];
#define FZ_KSID "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
static const struct mime_key keys[] = {
    {.key_id = "fz-0", .key = k0, .key_len = sizeof(k0)},
    {.key_id = "fz-1", .key = k1, .key_len = sizeof(k1)},
    {.ksid = FZ_KSID, .index = 0, .key = c, .key_len = sizeof(c)},
    {.ksid = FZ_KSID, .index = 1, .key = c, .key_len = sizeof(c)},
    {.ksid = FZ_KSID, .index = 2, .key = c, .key_len = sizeof(c)},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime_key_list kl = {keys, sizeof(keys) / sizeof(keys[0])};
    struct mime_info *info = NULL;
    if (mime_inspect_mem(data, size, &info, NULL) == MIME_OK) {
        for (size_t i = 0; i < mime_info_key_count(info); i++) {
            struct mime_key_entry e;
            (void)mime_info_key_id(info, i);
            if (mime_info_key_entry(info, i, &e) != MIME_OK)
                abort();
        }
        for (size_t i = 0; i < mime_info_recipient_count(info); i++)
            if (mime_info_bound_to(info, mime_info_recipient(info, i)) != 1)
                abort();
        mime_info_free(&info);
    }

    unsigned char *out = NULL;
    size_t out_len = 0;
    char *err = NULL;
    int rc = mime_decrypt_mem(data, size, mime_key_list_lookup, &kl, &out,
                              &out_len, &info, &err);
    if (rc == MIME_OK)
        mime_plaintext_free(&out, out_len);
    else if (out != NULL)
        abort(); /* no plaintext may escape a failed decryption */
    for (const unsigned char *p = (const unsigned char *)err; err && *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort(); /* error texts carry message values escaped */
    mime_info_free(&info);
    free(err);

    int in = memfd_create("fuzz-in", MFD_CLOEXEC);
    int o = memfd_create("fuzz-out", MFD_CLOEXEC);
    if (in >= 0 && o >= 0 && write(in, data, size) == (ssize_t)size &&
        lseek(in, 0, SEEK_SET) == 0) {
        rc = mime_decrypt_fd(in, o, NULL, mime_key_list_lookup, &kl, NULL,
                             NULL);
        if (rc != MIME_OK && lseek(o, 0, SEEK_END) != 0)
            abort();
    }
    if (in >= 0)
        close(in);
    if (o >= 0)
        close(o);

    struct mime_rcpt_list *rl = NULL;
    if (mime_recipients_mem(data, size, &rl, NULL) == MIME_OK)
        mime_rcpt_list_free(&rl);
    return 0;
}
