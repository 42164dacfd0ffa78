/* libFuzzer target: any bytes -> part tree -> every renderer and a set of
 * sections (all part numbers 1..3 deep, MIME/HEADER/TEXT/fields, partials).
 * Checks the invariants the FETCH rewriter relies on: ranges inside the
 * message, [HEADER] + [TEXT] == [], no crash, no leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap_render.h"

static void section(const struct mime_struct *ms, const char *spec, uint64_t po)
{
    struct imap_section sec;
    struct imap_section_data d;
    uint32_t path[8];
    const char *fields[8];
    char names[128];

    if (imap_render_section_parse(spec, &sec, path, 8, fields, 8, names) != 0)
        abort();
    sec.has_partial = po != 0;
    sec.partial_offset = po;
    sec.partial_size = 7;
    if (imap_render_section(ms, &sec, &d) != 0)
        abort();
    if (!d.synthesized && d.offset + d.len > mime_struct_size(ms))
        abort();
    imap_section_data_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime_struct *ms = NULL;
    struct imap_render_buf b = {0};
    const struct mime_part *r;
    static const char *specs[] = {
        "", "HEADER", "TEXT", "1", "1.MIME", "2", "2.HEADER", "2.TEXT", "1.1",
        "1.2.MIME", "2.1.1", "HEADER.FIELDS (From Subject)",
        "HEADER.FIELDS.NOT (To)", "2.HEADER.FIELDS (Subject)"};

    if (mime_struct_parse(data, size, 0, &ms, NULL) != 0)
        return 0;
    r = mime_struct_root(ms);
    if (r->header_size + r->body_size != mime_struct_size(ms))
        abort();
    imap_render_bodystructure(ms, 1, &b);
    imap_render_bodystructure(ms, 0, &b);
    imap_render_envelope(ms, &b);
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        section(ms, specs[i], 0);
        section(ms, specs[i], 3);
    }
    imap_render_buf_free(&b);
    mime_struct_free(&ms);
    return 0;
}
