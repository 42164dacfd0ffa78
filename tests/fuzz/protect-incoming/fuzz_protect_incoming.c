/* libFuzzer target for what protect_in reads from the mail server and the
 * vault: the probe's header fields (protect_in_classify), the encrypted
 * message's outer header as a notice copies it (pi_notice_text, then the
 * notice view through the part tree and renderers), and metadata blobs
 * (pi_meta_decode), and the transit fields (pi_transit_fields,
 * pi_transit_tag). Checks: a hint is ["t/" <tag> "/"] "k/" + 1..255
 * visible ASCII; transit output is allow-listed fields only; a
 * notice's lines all end in LF and it parses into one text part whose
 * size is its normalised length; no crash, no leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "incoming_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *hint = NULL;
    int c = protect_in_classify(data, size, &hint);
    if (c < 0 && c != PROTECT_IN_ENOMEM)
        abort();
    if (hint != NULL) {
        size_t n = strlen(hint);
        size_t k = 0; /* where "k/" starts: after "t/<tag>/" when tagged */
        if (n > 3 + PI_TRANSIT_TAG_LEN && memcmp(hint, "t/", 2) == 0 &&
            hint[2 + PI_TRANSIT_TAG_LEN] == '/') {
            k = 3 + PI_TRANSIT_TAG_LEN;
            for (size_t i = 2; i < k - 1; i++) {
                if (!((hint[i] >= '0' && hint[i] <= '9') || (hint[i] >= 'a' && hint[i] <= 'f')))
                    abort();
            }
        }
        if (c != 1 || n < k + 3 || n > k + 2 + 255 || memcmp(hint + k, "k/", 2) != 0)
            abort();
        for (size_t i = k + 2; i < n; i++) {
            if (hint[i] < 0x21 || hint[i] > 0x7e)
                abort();
        }
        free(hint);
    }

    /* transit fields: the outer header is the input, the original its
     * second half; what comes out is allow-listed fields only, each
     * ending in a line end */
    uint8_t *tr = NULL;
    size_t tlen = 0;
    if (pi_transit_fields(data, size, data + size / 2, size - size / 2, &tr, &tlen) == 0) {
        if (tlen > size + 2 || (tlen > 0 && tr[tlen - 1] != '\n'))
            abort();
        size_t nl = 0;
        while (nl < tlen && tr[nl] != ':' && tr[nl] != ' ' && tr[nl] != '\t')
            nl++;
        if (tlen > 0 && !pi_transit_allowed(tr, nl))
            abort();
        free(tr);
    }
    char tag[PI_TRANSIT_TAG_LEN + 1];
    int t = pi_transit_tag(data, size, tag);
    if ((t == 1 && strlen(tag) != PI_TRANSIT_TAG_LEN) || (t == 0 && tag[0] != '\0'))
        abort();

    struct pi_notice_facts f = {.reason = PROTECT_IN_R_AUTH_FAILED,
                                .detail = (const char *)data,
                                .outer = data,
                                .outer_len = size};
    char *detail = malloc(size + 1);
    if (detail == NULL)
        return 0;
    memcpy(detail, data, size);
    detail[size] = '\0';
    f.detail = detail;
    protect_in_view *v = NULL;
    if (pi_notice_view(&f, "k/x", NULL, &v) == 0) {
        const struct mime_struct *ms = protect_in_view_struct(v);
        if (protect_in_view_size(v) != mime_struct_size(ms) ||
            mime_struct_root(ms)->n_children != 0 ||
            protect_in_view_reason(v) != PROTECT_IN_R_AUTH_FAILED)
            abort();
        protect_in_view_unref(&v);
    }
    free(detail);

    if (pi_meta_decode(data, size, "k/x", NULL, &v) == 0) {
        if (protect_in_view_complete(v) || strcmp(protect_in_view_id(v), "k/x") != 0)
            abort();
        protect_in_view_unref(&v);
    }
    return 0;
}
