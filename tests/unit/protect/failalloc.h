/* Forced on the sources under test (outgoing.c, smtp_deliver.c) with
 * -include: their allocations go through a counter that can make the Nth
 * one fail (test_outgoing.c). Everything else in the test binary allocates
 * normally. */
#ifndef QUMAIL_TEST_FAILALLOC_H
#define QUMAIL_TEST_FAILALLOC_H

#include <stdlib.h>
#include <string.h>

void *failalloc_malloc(size_t n);
void *failalloc_calloc(size_t n, size_t size);
void *failalloc_realloc(void *p, size_t n);
char *failalloc_strdup(const char *s);

#define malloc(n) failalloc_malloc(n)
#define calloc(n, size) failalloc_calloc(n, size)
#define realloc(p, n) failalloc_realloc(p, n)
#undef strdup
#define strdup(s) failalloc_strdup(s)

#endif
