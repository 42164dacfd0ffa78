/* Typed errors of the KME client: names and texts from one table, and the
 * mapping of HTTP answers (spec or not) and transport failures to codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client_internal.h"
#include "net.h"

static const struct {
    const char *name;
    const char *text;
    int code;
    bool temporary;
} error_table[] = {
    {"KME_OK", "success", KME_OK, false},
    {"KME_ENOMEM", "out of memory", KME_ENOMEM, true},
    {"KME_EINVAL", "invalid argument", KME_EINVAL, false},
    {"KME_ETIMEDOUT", "timed out", KME_ETIMEDOUT, true},
    {"KME_ECONNREFUSED", "connection refused", KME_ECONNREFUSED, true},
    {"KME_ECONNECT", "cannot connect to the KME", KME_ECONNECT, true},
    {"KME_EIO", "connection to the KME lost", KME_EIO, true},
    {"KME_ETLS", "TLS handshake or certificate verification failed", KME_ETLS, false},
    {"KME_EHTTP", "the KME refused the request", KME_EHTTP, false},
    {"KME_EBADRESPONSE", "invalid response from the KME", KME_EBADRESPONSE, false},
    {"KME_ENOTFOUND", "key not found on the KME", KME_ENOTFOUND, true},
    {"KME_EUNAUTHORIZED", "unauthorized", KME_EUNAUTHORIZED, false},
    {"KME_ESERVER", "error on the KME side", KME_ESERVER, true},
    {"KME_ECANCELLED", "cancelled", KME_ECANCELLED, true},
    {"KME_ELIMITS", "request exceeds the KME's limits", KME_ELIMITS, false},
};

static int find(int code)
{
    for (size_t i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].code == code)
            return (int)i;
    return -1;
}

const char *kme_client_strerror(int error)
{
    int i = find(error);
    return i < 0 ? "unknown error" : error_table[i].text;
}

const char *kme_client_errname(int error)
{
    int i = find(error);
    return i < 0 ? "KME_EUNKNOWN" : error_table[i].name;
}

bool kme_client_error_is_temporary(int error)
{
    int i = find(error);
    return i >= 0 && error_table[i].temporary;
}

/* Copy of at most max bytes of s, first line only, non-printable bytes
 * replaced: peers' error texts end up in logs and SMTP replies. */
static char *printable_excerpt(const char *s, size_t len, size_t max)
{
    while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
        len--;
    }
    size_t n = 0;
    while (n < len && n < max && s[n] != '\r' && s[n] != '\n')
        n++;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[n] = '\0';
    return out;
}

static int code_for(enum kme_op_kind op, int status, const char *message)
{
    if (status == 400) {
        if (message != NULL && (strcmp(message, ETSI014_MSG_KEYS_NOT_FOUND) == 0 ||
                                (op == KME_OP_DEC && strcasestr(message, "not found"))))
            return KME_ENOTFOUND;
        return KME_EHTTP;
    }
    if (status == 401 || status == 403)
        return KME_EUNAUTHORIZED;
    if (status == 404)
        return op == KME_OP_DEC ? KME_ENOTFOUND : KME_EHTTP;
    if (status == 408)
        return KME_ETIMEDOUT;
    if (status == 429)
        return KME_ESERVER;
    if (status >= 400 && status < 500)
        return KME_EHTTP; /* 405, 409, 412, 422, ... */
    if (status >= 500 && status < 600)
        return KME_ESERVER; /* 500, 503, 504, ... */
    return KME_EBADRESPONSE; /* 1xx, 3xx (no redirects), nonsense */
}

int kme_map_http_error(enum kme_op_kind op, int status, const char *body,
                       size_t len, char **message_r)
{
    *message_r = NULL;
    char *msg = NULL;
    struct etsi014_error err = {0};
    if (body != NULL && len > 0 &&
        etsi014_error_decode(body, len, &err, NULL) == 0 && err.message != NULL &&
        err.message[0] != '\0')
        msg = printable_excerpt(err.message, strlen(err.message), 300);
    etsi014_error_clear(&err);
    if (msg == NULL && body != NULL && len > 0) {
        char *ex = printable_excerpt(body, len, 120);
        if (ex != NULL && ex[0] != '\0') {
            size_t n = strlen(ex) + 64;
            msg = malloc(n);
            if (msg != NULL)
                snprintf(msg, n, "HTTP %d (non-JSON body: %s)", status, ex);
        }
        free(ex);
    }
    if (msg == NULL) {
        msg = malloc(32);
        if (msg != NULL)
            snprintf(msg, 32, "HTTP %d", status);
    }
    *message_r = msg;
    return code_for(op, status, msg);
}

int kme_map_net_error(int net_code, bool connecting)
{
    switch (net_code) {
    case UV_ECONNREFUSED:
        return KME_ECONNREFUSED;
    case UV_ETIMEDOUT:
    case NET_ETIMEDOUT:
        return KME_ETIMEDOUT;
    /* TLS 1.3: a KME refusing our certificate says so with an alert after
     * the client side of the handshake finished, i.e. on the first read:
     * NET_ETLS then, not only while connecting. */
    case NET_ETLS:
    case NET_EVERIFY:
        return KME_ETLS;
    default:
        return connecting ? KME_ECONNECT : KME_EIO;
    }
}
