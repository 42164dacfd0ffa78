/* libFuzzer target: the KME client's response path. Input bytes are an
 * HTTP response fed in chunks (sizes from the first byte) through the
 * llhttp layer, then the body through the error mapping and the key
 * container / status decoders, as the client does. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "client/client_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 16) + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct kme_http_resp r;
    kme_http_resp_init(&r, (size_t)64 * 1024);
    int rc = 0;
    size_t off = 0;
    while (off < len && rc == 0) {
        size_t n = len - off < step ? len - off : step;
        size_t used = 0;
        rc = kme_http_resp_feed(&r, in + off, n, &used);
        if (rc == 0 && used != n)
            abort();
        if (rc == 1 && used > n)
            abort();
        off += n;
    }
    if (rc == 0)
        rc = kme_http_resp_eof(&r);
    if (rc == 1) {
        const char *body = r.body ? r.body : "";
        if (r.status >= 200 && r.status < 300) {
            struct etsi014_key_container kc;
            struct etsi014_status st;
            etsi014_key_container_decode(body, r.body_len, &kc, NULL);
            etsi014_key_container_clear(&kc);
            etsi014_status_decode(body, r.body_len, &st, NULL);
            etsi014_status_clear(&st);
        } else {
            char *msg = NULL;
            kme_map_http_error(KME_OP_DEC, r.status, body, r.body_len, &msg);
            if (msg == NULL)
                abort();
            free(msg);
        }
    }
    kme_http_resp_clear(&r);
    return 0;
}
