/* qumail mime with an ETSI GS QKD 004 KME: encryption takes chunks of a
 * registered stream (--ksid) at KME-chosen indices; decryption fetches the
 * chunks that the message's Key-Chunks entries name (FORMAT-SPEC.md 3.4)
 * by index, at the reader's own KME (kme/etsi004_client.h). */
#include "cmd_mime004.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etsi004_client.h"

bool mime004_url(const char *url)
{
    return url != NULL && strncmp(url, "etsi004://", 10) == 0;
}

/* The 004 client configuration from the --kme URL and TLS options. */
static int config(const struct kme_client_config *kme, struct etsi004_client_config *c,
                  char **host_r)
{
    memset(c, 0, sizeof(*c));
    int rc = etsi004_parse_address(kme->url, host_r, &c->port);
    if (rc < 0)
        return rc;
    c->host = *host_r;
    c->cert_file = kme->cert_file;
    c->key_file = kme->key_file;
    c->ca_file = kme->ca_file;
    c->server_name = kme->server_name;
    c->expect_kme_id = kme->expect_kme_id;
    c->max_connections = 4;
    return KME_OK;
}

int mime004_enc_keys(const struct kme_client_config *kme, const char *ksid_text,
                     uint64_t bits, struct kme_keys **keys_r, char **kme_id_r,
                     char **sae_id_r, char **error_r)
{
    *keys_r = NULL;
    uint8_t ksid[ETSI004_KSID_LEN];
    if (ksid_text == NULL || etsi004_ksid_from_text(ksid_text, ksid) < 0) {
        *error_r = strdup("an ETSI 004 KME needs --ksid UUID (the stream, registered "
                          "at both ends)");
        return KME_EINVAL;
    }
    struct etsi004_client_config c;
    char *host = NULL;
    int rc = config(kme, &c, &host);
    if (rc == KME_OK)
        rc = etsi004_sync_take_bits(&c, ksid, bits, keys_r, kme_id_r, sae_id_r, error_r);
    free(host);
    return rc;
}

int mime004_dec_keys(const struct kme_client_config *kme, const struct mime_info *info,
                     struct kme_keys **keys_r, char **error_r)
{
    *keys_r = NULL;
    struct etsi004_client_config c;
    char *host = NULL;
    int rc = config(kme, &c, &host);
    size_t n = mime_info_key_count(info);
    for (size_t i = 0; rc == KME_OK && i < n; i++) {
        struct mime_key_entry e;
        uint8_t ksid[ETSI004_KSID_LEN];
        if (mime_info_key_entry(info, i, &e) != MIME_OK || e.kind != MIME_KEY_ETSI004) {
            *error_r = strdup("the message names an ETSI 014 key: --kme etsi004:// "
                              "speaks ETSI 004 only");
            rc = KME_EINVAL;
            break;
        }
        if (etsi004_ksid_from_text(e.ksid, ksid) < 0 || e.chunk_bits % 8 != 0 ||
            e.first_index + e.count > ETSI004_INDEX_NEXT) {
            *error_r = strdup("malformed Key-Chunks entry");
            rc = KME_EINVAL;
            break;
        }
        struct kme_keys *k = NULL;
        rc = etsi004_sync_fetch_chunks(&c, ksid, (uint32_t)e.first_index, (size_t)e.count,
                                       (size_t)(e.chunk_bits / 8), &k, error_r);
        if (rc == KME_OK && kme_keys_append(keys_r, k) < 0)
            rc = KME_ENOMEM;
    }
    if (rc != KME_OK)
        kme_keys_free(keys_r);
    free(host);
    return rc;
}
