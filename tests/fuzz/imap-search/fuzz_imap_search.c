/* libFuzzer target: criteria text -> argument tree -> parsed search ->
 * written back (must parse again to the same text) -> evaluated against a
 * message built from the rest of the input; plan and sort keys too. The
 * input is "criteria \0 message". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap_search.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const char *w)
{
    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    if (imap_search_in_parse(w, strlen(w), &in, &n, &err) != 0)
        abort(); /* what we write must parse */
    struct imap_search *s = NULL;
    if (imap_search_parse(in, n, "UTF-8", &s, &err) != 0)
        abort();
    char *w2 = imap_search_write(imap_search_root(s));
    if (w2 == NULL || strcmp(w, w2) != 0)
        abort();
    free(w2);
    imap_search_free(&s);
    imap_search_in_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t clen = nul != NULL ? (size_t)(nul - data) : size;
    const uint8_t *msg = nul != NULL ? nul + 1 : (const uint8_t *)"";
    size_t mlen = nul != NULL ? size - clen - 1 : 0;

    struct imap_search_in *in = NULL;
    size_t n = 0;
    const char *err = NULL;
    if (imap_search_in_parse((const char *)data, clen, &in, &n, &err) != 0)
        return 0;
    struct imap_search *s = NULL;
    if (imap_search_parse(in, n, "UTF-8", &s, &err) == 0) {
        char *w = imap_search_write(imap_search_root(s));
        if (w != NULL)
            check_roundtrip(w);
        free(w);
        struct imap_search_plan plan;
        if (imap_search_plan(s, &plan) == 0)
            imap_search_plan_clear(&plan);
        struct mime_struct *ms = NULL;
        if (mime_struct_parse(msg, mlen, 0, &ms, NULL) == 0) {
            const char *flags[] = {"\\Seen", "$x"};
            struct imap_search_msg m = {.ms = ms, .seq = 2, .uid = 7, .max_seq = 3,
                                        .max_uid = 9, .flags = flags, .n_flags = 2,
                                        .internaldate = 1700000000, .now = 1800000000};
            (void)imap_search_eval(s, &m);
            struct imap_sort_keys k;
            if (imap_sort_keys_compute(&m, &k) == 0)
                imap_sort_keys_clear(&k);
            mime_struct_free(&ms);
        }
        imap_search_free(&s);
    }
    imap_search_in_free(&in);
    return 0;
}

/* For the regression driver (tests/fuzz/common/fuzz_driver.c): the
 * criteria syntax's delimiters and a few keywords. */
extern const char *const fuzz_driver_tokens[];
const char *const fuzz_driver_tokens[] = {
    "(", ")", "\"", " ", "{", "}", "*", ":", ",", "\\", "\r\n",
    "NOT ", "OR ", "UID ", "BODY ", "TEXT ", "HEADER ", "SUBJECT ", "FROM ",
    "LARGER ", "SMALLER ", "SENTSINCE 1-Jan-2020 ", "KEYWORD ", "{3+}\r\n", "1:*", "$",
    NULL,
};
