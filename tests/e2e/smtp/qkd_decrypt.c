/* Test helper for the SMTP e2e tests: decrypts a stored message the way a
 * receiver does - key IDs from the control part, the keys from the
 * receiver-side KME (ETSI 014 dec_keys with the receiver's SAE certificate),
 * then the mime engine. Prints the plaintext to stdout.
 *
 *   qkd_decrypt URL CERT KEY CA < stored-message > plaintext
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kme_client.h"
#include "mime.h"

static int lookup(void *ctx, const char *key_id, const unsigned char **key_r,
                  size_t *len_r)
{
    const struct kme_keys *k = ctx;
    for (size_t i = 0; i < k->count; i++) {
        if (strcmp(k->keys[i].key_id, key_id) == 0) {
            *key_r = k->keys[i].bytes;
            *len_r = k->keys[i].len;
            return 0;
        }
    }
    return MIME_ERR_KEY_MISSING;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: qkd_decrypt URL CERT KEY CA < in > out\n");
        return 2;
    }
    /* stdin may be a pipe: copy to a seekable file for inspect + decrypt */
    FILE *tmp = tmpfile();
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
        fwrite(buf, 1, n, tmp);
    fflush(tmp);
    int fd = fileno(tmp);
    lseek(fd, 0, SEEK_SET);
    struct mime_info *info = NULL;
    char *err = NULL;
    int rc = mime_inspect_fd(fd, &info, &err);
    if (rc < 0) {
        fprintf(stderr, "inspect: %s: %s\n", mime_strerror(rc), err ? err : "");
        free(err);
        mime_info_free(&info);
        fclose(tmp);
        return 1;
    }
    size_t count = mime_info_key_count(info);
    const char **ids = calloc(count, sizeof(*ids));
    for (size_t i = 0; i < count; i++)
        ids[i] = mime_info_key_id(info, i);
    struct kme_client_config cfg = {.url = argv[1], .cert_file = argv[2],
                                    .key_file = argv[3], .ca_file = argv[4]};
    struct kme_keys *keys = NULL;
    rc = kme_sync_dec_keys(&cfg, mime_info_master_sae_id(info), ids, count, &keys, &err);
    if (rc != KME_OK) {
        fprintf(stderr, "dec_keys: %s: %s\n", kme_client_strerror(rc), err ? err : "");
        free(err);
        free(ids);
        mime_info_free(&info);
        fclose(tmp);
        return 1;
    }
    lseek(fd, 0, SEEK_SET);
    rc = mime_decrypt_fd(fd, STDOUT_FILENO, NULL, lookup, keys, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "decrypt: %s: %s\n", mime_strerror(rc), err ? err : "");
        free(err);
        kme_keys_free(&keys);
        free(ids);
        mime_info_free(&info);
        fclose(tmp);
        return 1;
    }
    fprintf(stderr, "decrypted with %zu key(s), algorithm %s\n", count,
            mime_alg_name(mime_info_algorithm(info)));
    kme_keys_free(&keys);
    mime_info_free(&info);
    free(ids);
    fclose(tmp);
    return 0;
}
