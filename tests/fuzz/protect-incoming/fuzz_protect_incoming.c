/* libFuzzer target for what protect_in reads from the mail server and the
 * vault: the probe's header fields (protect_in_classify), the encrypted
 * message's outer header as a notice copies it (pi_notice_text, then the
 * notice view through the part tree and renderers), and metadata blobs
 * (pi_meta_decode). Checks: a hint is "k/" + 1..255 visible ASCII; a
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
        if (c != 1 || n < 3 || n > 2 + 255 || memcmp(hint, "k/", 2) != 0)
            abort();
        for (size_t i = 2; i < n; i++) {
            if (hint[i] < 0x21 || hint[i] > 0x7e)
                abort();
        }
        free(hint);
    }

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
