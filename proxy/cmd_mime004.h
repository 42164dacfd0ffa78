/* qumail mime with an ETSI GS QKD 004 KME (--kme etsi004://host[:port]):
 * the key fetching of cmd_mime.c for 004 streams (cmd_mime004.c). */
#ifndef QUMAIL_CMD_MIME004_H
#define QUMAIL_CMD_MIME004_H

#include <stdbool.h>
#include <stdint.h>

#include "kme_client.h"
#include "mime.h"

/* True when the --kme URL names a 004 listener. */
bool mime004_url(const char *url);

/* Encryption: bits of key from the stream ksid_text (reattached with
 * OPEN_CONNECT), as whole chunks at KME-chosen indices. *kme_id_r and
 * *sae_id_r (malloc'd) name the KME and us for the control part. 0 or a
 * KME_E* code with *error_r. */
int mime004_enc_keys(const struct kme_client_config *kme, const char *ksid_text,
                     uint64_t bits, struct kme_keys **keys_r, char **kme_id_r,
                     char **sae_id_r, char **error_r);

/* Decryption: every chunk the message's Key-Chunks entries name, in
 * key-stream order (a 014 entry is an error: this KME speaks 004). */
int mime004_dec_keys(const struct kme_client_config *kme, const struct mime_info *info,
                     struct kme_keys **keys_r, char **error_r);

#endif
