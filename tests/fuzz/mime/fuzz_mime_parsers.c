/* libFuzzer target for mime's pure parsers, one input each: the outer
 * Content-Type / Content-Transfer-Encoding reader (FORMAT-SPEC.md 2.6, 2.8),
 * the control text parser (3), address normalisation (3.5), lookup names
 * (3.4) and mime_escape. Invariants abort(): a parse that claims success
 * must give values the spec allows. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mime_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct mime_ctype ct;
    mime_ctype_parse(s, size, &ct);
    int claims = mime_ctype_claims_qkd(&ct, s, size);
    if (claims && !mime_ctype_is(&ct, "multipart", "encrypted"))
        abort();
    if (ct.boundary != NULL && mime_boundary_valid(ct.boundary) &&
        (strlen(ct.boundary) == 0 || strlen(ct.boundary) > 70))
        abort();
    mime_ctype_clear(&ct);
    char cte[32];
    if (mime_cte_parse(s, size, cte, sizeof(cte)) == 0 && cte[0] == '\0')
        abort();

    struct mime_info *info = NULL;
    if (mime_control_parse(s, size, &info, NULL) == MIME_OK) {
        uint64_t bits = 0, needed = 0;
        for (size_t i = 0; i < mime_info_key_count(info); i++) {
            struct mime_key_entry e;
            if (mime_info_key_entry(info, i, &e) != MIME_OK)
                abort();
            bits += e.bits;
        }
        if (mime_key_bits_needed(mime_info_algorithm(info),
                                 mime_info_plaintext_length(info),
                                 &needed) != MIME_OK || bits != needed)
            abort();
        for (size_t i = 0; i < mime_info_recipient_count(info); i++)
            if (mime_info_bound_to(info, mime_info_recipient(info, i)) != 1)
                abort();
        /* the canonical text rebuilds exactly */
        char *text = NULL;
        size_t len = 0;
        if (mime_control_build(info, &text, &len, NULL) != MIME_OK ||
            len != size || memcmp(text, s, size) != 0)
            abort();
        free(text);
        mime_info_free(&info);
    }

    char *z = malloc(size + 1);
    if (z == NULL)
        return 0;
    memcpy(z, data, size);
    z[size] = '\0';
    char *norm = NULL;
    if (mime_address_normalize(z, &norm) == MIME_OK) {
        char *again = NULL;
        if (mime_address_normalize(norm, &again) != MIME_OK ||
            strcmp(again, norm) != 0)
            abort(); /* idempotent */
        free(again);
        free(norm);
    }
    char ksid[MIME_KSID_LEN + 1];
    uint64_t index;
    if (mime_key_name_parse(z, ksid, &index) == 1 &&
        !mime_ksid_valid(ksid, strlen(ksid)))
        abort();
    char *esc = mime_escape(data, size);
    for (const unsigned char *p = (const unsigned char *)esc; esc && *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort(); /* nothing a terminal acts on gets through */
    free(esc);
    free(z);
    return 0;
}
