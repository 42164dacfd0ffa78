/* Small helpers shared by the imap-render unit tests. */
#ifndef TEST_RENDER_UTIL_H
#define TEST_RENDER_UTIL_H

#include <stdio.h>
#include <stdlib.h>

/* Whole file into a malloc'd buffer; NULL if unreadable. */
static inline char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n;

    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (*len == cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        if ((n = fread(buf + *len, 1, cap - *len, f)) == 0)
            break;
        *len += n;
    }
    fclose(f);
    return buf;
}

#endif
