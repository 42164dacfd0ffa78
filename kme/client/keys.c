/* Result objects handed to users: key lists (wiped on free) and status. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

void kme_keys_free(struct kme_keys **kp)
{
    struct kme_keys *k = *kp;
    *kp = NULL;
    if (k == NULL)
        return;
    if (k->material != NULL) {
        OPENSSL_cleanse(k->material, k->total_len);
        free(k->material);
    }
    if (k->keys != NULL) {
        OPENSSL_cleanse(k->keys, k->count * sizeof(*k->keys));
        free(k->keys);
    }
    free(k);
}

void kme_status_free(struct kme_status **sp)
{
    struct kme_status *s = *sp;
    *sp = NULL;
    if (s == NULL)
        return;
    free(s->source_kme_id);
    free(s->target_kme_id);
    free(s->master_sae_id);
    free(s->slave_sae_id);
    free(s);
}
