/* libFuzzer target: smtp_authid over "AUTH-ARG \n response \n response...".
 * Invariants: the identity is NUL-terminated inside SMTP_AUTHID_MAX, made
 * of the escape alphabet only (letters, digits, "@.-_+", \xHH, a final
 * "..."), empty unless upstream said 235, and the state is wiped after. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_authid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *s)
{
    size_t n = strnlen(s, SMTP_AUTHID_MAX);
    if (n >= SMTP_AUTHID_MAX)
        abort();
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("@.-_+\\", c) != NULL))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *nl = memchr(p, '\n', size);
    size_t arg_len = nl != NULL ? (size_t)(nl - p) : size;
    for (int code = 235; code <= 535; code += 300) {
        struct smtp_authid a;
        smtp_authid_begin(&a, p, arg_len);
        for (const char *q = nl != NULL ? nl + 1 : end; q < end;) {
            const char *e = memchr(q, '\n', (size_t)(end - q));
            size_t len = e != NULL ? (size_t)(e - q) : (size_t)(end - q);
            smtp_authid_response(&a, q, len);
            q += len + 1;
        }
        check(a.user);
        check(a.authzid);
        char user[SMTP_AUTHID_MAX], authzid[SMTP_AUTHID_MAX];
        user[0] = authzid[0] = '\0';
        smtp_authid_end(&a, code, user, authzid);
        check(user);
        check(authzid);
        if (code != 235 && (user[0] != '\0' || authzid[0] != '\0'))
            abort();
        static const char zero[SMTP_AUTHID_MAX];
        if (a.mech != SMTP_AUTHID_NONE || a.first_seen || memcmp(a.user, zero, sizeof(zero)) != 0 ||
            memcmp(a.authzid, zero, sizeof(zero)) != 0)
            abort(); /* wiped */
    }
    return 0;
}
