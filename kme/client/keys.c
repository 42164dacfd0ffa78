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

int kme_keys_append(struct kme_keys **dst, struct kme_keys *src)
{
    if (*dst == NULL) {
        *dst = src;
        return 0;
    }
    struct kme_keys *d = *dst;
    size_t count = d->count + src->count, total = d->total_len + src->total_len;
    struct kme_key *keys = calloc(count ? count : 1, sizeof(*keys));
    uint8_t *m = malloc(total ? total : 1);
    if (keys == NULL || m == NULL) {
        free(keys);
        free(m);
        kme_keys_free(&src);
        return -1;
    }
    if (d->total_len > 0)
        memcpy(m, d->material, d->total_len);
    if (src->total_len > 0)
        memcpy(m + d->total_len, src->material, src->total_len);
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        keys[i] = i < d->count ? d->keys[i] : src->keys[i - d->count];
        keys[i].bytes = m + off; /* the material is laid out in list order */
        off += keys[i].len;
    }
    if (d->material != NULL) {
        OPENSSL_cleanse(d->material, d->total_len);
        free(d->material);
    }
    OPENSSL_cleanse(d->keys, d->count * sizeof(*d->keys));
    free(d->keys);
    d->keys = keys;
    d->material = m;
    d->count = count;
    d->total_len = total;
    kme_keys_free(&src);
    return 0;
}
