/* libFuzzer target for what a KME receives: the request target (path and
 * query, both GET forms) and the POST bodies (Key request with its
 * validation, Key IDs), plus the Status/Error/Key container decoders a
 * client uses. Input: first byte selects the decoder, the rest is its input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etsi014.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *err = NULL;
    switch (data[0] % 7) {
    case 0: {
        enum etsi014_endpoint ep;
        char *sae = NULL;
        const char *q;
        size_t ql;
        if (etsi014_path_parse(in, len, &ep, &sae, &q, &ql) == 0) {
            struct etsi014_key_request r;
            struct etsi014_key_ids ids;
            if (etsi014_key_request_from_query(q, ql, &r, &err) == 0)
                etsi014_key_request_clear(&r);
            free(err);
            err = NULL;
            if (q != NULL && etsi014_key_ids_from_query(q, ql, &ids, &err) == 0)
                etsi014_key_ids_clear(&ids);
            char *p = etsi014_path(ep, sae, NULL);
            free(p);
            free(sae);
        }
        break;
    }
    case 1: {
        struct etsi014_key_request r;
        if (etsi014_key_request_decode(in, len, &r, &err) == 0) {
            struct etsi014_limits lim = {256, 64, 8192, 128, 8, true};
            int64_t n, s;
            char *e2 = NULL;
            etsi014_key_request_validate(&r, &lim, "sae-a", "sae-b", &n, &s, &e2);
            free(e2);
            size_t l;
            free(etsi014_key_request_encode(&r, &l));
            etsi014_key_request_clear(&r);
        }
        break;
    }
    case 2: {
        struct etsi014_key_ids ids;
        if (etsi014_key_ids_decode(in, len, &ids, 128, &err) == 0) {
            size_t l;
            free(etsi014_key_ids_encode(&ids, &l));
            etsi014_key_ids_clear(&ids);
        }
        break;
    }
    case 3: {
        struct etsi014_key_container kc;
        if (etsi014_key_container_decode(in, len, &kc, &err) == 0) {
            size_t l = 0;
            char *t = etsi014_key_container_encode(&kc, &l);
            etsi014_free_secret(t, l);
            etsi014_key_container_clear(&kc);
        }
        break;
    }
    case 4: {
        struct etsi014_status st;
        if (etsi014_status_decode(in, len, &st, &err) == 0) {
            size_t l;
            free(etsi014_status_encode(&st, &l));
            etsi014_status_clear(&st);
        }
        break;
    }
    case 5: {
        struct etsi014_error e;
        if (etsi014_error_decode(in, len, &e, &err) == 0)
            etsi014_error_clear(&e);
        break;
    }
    default: {
        char *s = strndup(in, len);
        if (s != NULL) {
            etsi014_uuid_valid(s, strlen(s));
            etsi014_id_blank(s);
            free(s);
        }
        break;
    }
    }
    free(err);
    return 0;
}
