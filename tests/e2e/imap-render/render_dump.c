/* imap_render_dump MESSAGE: the render oracle's view of one message.
 * Reads requests from stdin, one per line, and answers each with
 * "<length>\n<bytes>\n":
 *   BODYSTRUCTURE | BODY | ENVELOPE | RFC822.SIZE
 *   PARTS                 every IMAP part number, space separated
 *   SECTION <spec>        BODY[<spec>] bytes (spec as between [ and ])
 *   PARTIAL <o> <n> <spec> BODY[<spec>]<o.n> bytes
 * Used by test_render_oracle.py, which asks Dovecot the same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_render.h"
#include "mime_struct.h"

/* the library's buffer append (internal, used here for brevity) */
void rb_add(struct imap_render_buf *b, const void *p, size_t n);

static void answer(const void *p, size_t n)
{
    printf("%zu\n", n);
    fwrite(p, 1, n, stdout);
    putchar('\n');
}

static void numbers(const struct mime_part *p, const char *prefix,
                    struct imap_render_buf *out)
{
    /* children of a multipart are prefix.1, prefix.2, ...; a message/rfc822
     * part continues into the message it holds; a leaf message body is .1 */
    unsigned int i = 1;
    char num[512];

    for (const struct mime_part *c = p->children; c != NULL; c = c->next, i++) {
        snprintf(num, sizeof(num), "%s%s%u", prefix, *prefix ? "." : "", i);
        if (strlen(num) > 400)
            return;
        if (out->len > 0)
            rb_add(out, " ", 1);
        rb_add(out, num, strlen(num));
        if ((c->flags & MIME_PART_MULTIPART) != 0) {
            numbers(c, num, out);
        } else if ((c->flags & MIME_PART_MESSAGE_RFC822) != 0 && c->children) {
            const struct mime_part *m = c->children;
            if ((m->flags & MIME_PART_MULTIPART) != 0) {
                numbers(m, num, out);
            } else {
                char sub[520];
                snprintf(sub, sizeof(sub), " %s.1", num);
                rb_add(out, sub, strlen(sub));
            }
        }
    }
}

int main(int argc, char **argv)
{
    FILE *f;
    char *msg = NULL, line[8192];
    size_t len = 0, cap = 0, n;
    struct mime_struct *ms = NULL;
    char *err = NULL;

    if (argc != 2 || (f = fopen(argv[1], "rb")) == NULL) {
        fprintf(stderr, "usage: imap_render_dump MESSAGE\n");
        return 2;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = realloc(msg, cap);
            if (grown == NULL) {
                free(msg);
                return 1;
            }
            msg = grown;
        }
        n = fread(msg + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    if (mime_struct_parse(msg, len, 0, &ms, &err) != 0) {
        fprintf(stderr, "parse failed: %s\n", err ? err : "?");
        return 1;
    }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        struct imap_render_buf b = {0};
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "BODYSTRUCTURE") == 0 || strcmp(line, "BODY") == 0) {
            imap_render_bodystructure(ms, line[4] != '\0', &b);
            answer(b.data, b.len);
        } else if (strcmp(line, "ENVELOPE") == 0) {
            imap_render_envelope(ms, &b);
            answer(b.data, b.len);
        } else if (strcmp(line, "RFC822.SIZE") == 0) {
            char num[32];
            snprintf(num, sizeof(num), "%llu",
                     (unsigned long long)mime_struct_size(ms));
            answer(num, strlen(num));
        } else if (strcmp(line, "PARTS") == 0) {
            const struct mime_part *root = mime_struct_root(ms);
            if ((root->flags & MIME_PART_MULTIPART) != 0) {
                numbers(root, "", &b);
            } else {
                rb_add(&b, "1", 1);
                if ((root->flags & MIME_PART_MESSAGE_RFC822) && root->children) {
                    const struct mime_part *m = root->children;
                    if (m->flags & MIME_PART_MULTIPART)
                        numbers(m, "1", &b);
                    else
                        rb_add(&b, " 1.1", 4);
                }
            }
            answer(b.data ? b.data : "", b.len);
        } else if (strncmp(line, "SECTION ", 8) == 0 ||
                   strncmp(line, "PARTIAL ", 8) == 0) {
            struct imap_section sec;
            struct imap_section_data d;
            uint32_t path[128];
            const char *fields[64];
            char names[8192];
            const char *spec = line + 8;
            unsigned long long po = 0, pn = 0;
            int partial = line[0] == 'P';
            if (partial) {
                char *end = NULL;
                po = strtoull(spec, &end, 10);
                if (end == spec || *end != ' ')
                    return 1;
                spec = end + 1;
                pn = strtoull(spec, &end, 10);
                if (end == spec)
                    return 1;
                spec = end + strspn(end, " ");
            }
            if (imap_render_section_parse(spec, &sec, path, 128, fields, 64,
                                          names) != 0) {
                answer("INVALID", 7);
                continue;
            }
            sec.has_partial = partial;
            sec.partial_offset = po;
            sec.partial_size = pn;
            if (imap_render_section(ms, &sec, &d) != 0) {
                answer("ERROR", 5);
                continue;
            }
            answer(d.ptr, (size_t)d.len);
            imap_section_data_free(&d);
        } else {
            answer("?", 1);
        }
        imap_render_buf_free(&b);
        fflush(stdout);
    }
    mime_struct_free(&ms);
    free(msg);
    return 0;
}
