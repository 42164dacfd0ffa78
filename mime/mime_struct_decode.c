/* mime_struct_decode: a part's body without its Content-Transfer-Encoding
 * (IMAP BINARY), through GMime's base64 / quoted-printable filters. */
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "mime.h"
#include "mime_struct.h"

int mime_struct_decode(const struct mime_struct *ms,
                       const struct mime_part *part, uint8_t **out_r,
                       size_t *len_r, char **error_r)
{
    const uint8_t *body;
    uint64_t size;
    GMimeContentEncoding enc = GMIME_CONTENT_ENCODING_DEFAULT;
    GMimeStream *mem, *filtered;
    GMimeFilter *filter;
    GByteArray *arr;
    uint8_t *out;
    int ret;

    if (error_r != NULL)
        *error_r = NULL;
    if (ms == NULL || part == NULL || out_r == NULL || len_r == NULL)
        return MIME_ERR_INVALID_ARG;
    *out_r = NULL;
    *len_r = 0;
    if ((ret = mime_init()) != MIME_OK)
        return ret;
    body = mime_struct_data(ms) + part->offset + part->header_size;
    size = part->body_size;
    if (part->content_transfer_encoding != NULL)
        enc = g_mime_content_encoding_from_string(part->content_transfer_encoding);
    if (enc != GMIME_CONTENT_ENCODING_BASE64 &&
        enc != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
        enc != GMIME_CONTENT_ENCODING_UUENCODE) {
        out = malloc(size ? (size_t)size : 1);
        if (out == NULL)
            return MIME_ERR_NOMEM;
        memcpy(out, body, (size_t)size);
        *out_r = out;
        *len_r = (size_t)size;
        return MIME_OK;
    }
    arr = g_byte_array_sized_new((guint)(size * 3 / 4 + 16));
    mem = g_mime_stream_mem_new_with_byte_array(arr);
    g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
    filtered = g_mime_stream_filter_new(mem);
    filter = g_mime_filter_basic_new(enc, FALSE);
    g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered), filter);
    g_object_unref(filter);
    if (g_mime_stream_write(filtered, (const char *)body, (size_t)size) < 0 ||
        g_mime_stream_flush(filtered) < 0) {
        g_object_unref(filtered);
        g_object_unref(mem);
        g_byte_array_free(arr, TRUE);
        return MIME_ERR_IO;
    }
    g_object_unref(filtered);
    g_object_unref(mem);
    out = malloc(arr->len ? arr->len : 1);
    if (out == NULL) {
        g_byte_array_free(arr, TRUE);
        return MIME_ERR_NOMEM;
    }
    memcpy(out, arr->data, arr->len);
    *out_r = out;
    *len_r = arr->len;
    g_byte_array_free(arr, TRUE);
    return MIME_OK;
}
