/* The authentication identity of a relayed AUTH exchange (smtp_authid.h). */
#include "smtp_authid.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

/* Base64 characters decoded at most: the identity comes first in every
 * mechanism, and the rest (password, token) is not needed. */
#define PREFIX_B64 1024
#define PREFIX_RAW (PREFIX_B64 / 4 * 3)

static const struct {
    const char *name;
    enum smtp_authid_mech mech;
} mechs[] = {
    {"PLAIN", SMTP_AUTHID_PLAIN},
    {"LOGIN", SMTP_AUTHID_LOGIN},
    {"XOAUTH2", SMTP_AUTHID_XOAUTH2},
    {"OAUTHBEARER", SMTP_AUTHID_OAUTHBEARER},
};

void smtp_authid_escape(const unsigned char *in, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '@' || c == '.' || c == '-' ||
                     c == '_' || c == '+';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > cap) { /* room for "..." and the NUL */
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* Decodes the start of a base64 response into raw (PREFIX_RAW bytes): the
 * length, or -1 when it is not base64. */
static int decode_prefix(const char *b64, size_t len, unsigned char raw[PREFIX_RAW])
{
    size_t n = len > PREFIX_B64 ? PREFIX_B64 : len;
    n -= n % 4;
    if (n == 0)
        return len == 0 ? 0 : -1;
    int out = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    if (out < 0)
        return -1;
    if (n == len) { /* the whole response: its padding is not data */
        if (b64[n - 1] == '=')
            out--;
        if (b64[n - 2] == '=')
            out--;
    }
    return out;
}

static void set_field(char field[SMTP_AUTHID_MAX], const unsigned char *p, size_t n)
{
    smtp_authid_escape(p, n, field, SMTP_AUTHID_MAX);
}

/* authzid NUL authcid NUL password (RFC 4616). */
static void from_plain(struct smtp_authid *a, const unsigned char *raw, size_t n)
{
    const unsigned char *nul = memchr(raw, 0, n);
    if (nul == NULL)
        return;
    const unsigned char *authcid = nul + 1;
    const unsigned char *end = memchr(authcid, 0, n - (size_t)(authcid - raw));
    if (end == NULL || end == authcid)
        return; /* the password not reached, or no authcid: no identity */
    size_t zlen = (size_t)(nul - raw), clen = (size_t)(end - authcid);
    set_field(a->user, authcid, clen);
    if (zlen > 0 && (zlen != clen || memcmp(raw, authcid, clen) != 0))
        set_field(a->authzid, raw, zlen);
}

/* "user=" NAME ^A ... */
static void from_xoauth2(struct smtp_authid *a, const unsigned char *raw, size_t n)
{
    if (n < 5 || memcmp(raw, "user=", 5) != 0)
        return;
    const unsigned char *end = memchr(raw + 5, 0x01, n - 5);
    if (end != NULL && end > raw + 5)
        set_field(a->user, raw + 5, (size_t)(end - raw - 5));
}

/* GS2 header: "n," or "y," or "p=...," then "a=" saslname "," (RFC 5801). */
static void from_oauthbearer(struct smtp_authid *a, const unsigned char *raw, size_t n)
{
    const unsigned char *comma = memchr(raw, ',', n);
    if (comma == NULL || (size_t)(comma - raw) + 3 > n || memcmp(comma + 1, "a=", 2) != 0)
        return;
    const unsigned char *p = comma + 3, *end = raw + n;
    unsigned char name[PREFIX_RAW];
    size_t o = 0;
    while (p < end && *p != ',' && o < sizeof(name)) {
        if (*p == '=' && end - p >= 3 && memcmp(p, "=2C", 3) == 0) {
            name[o++] = ',';
            p += 3;
        } else if (*p == '=' && end - p >= 3 && memcmp(p, "=3D", 3) == 0) {
            name[o++] = '=';
            p += 3;
        } else {
            name[o++] = *p++;
        }
    }
    if (p < end && *p == ',' && o > 0)
        set_field(a->user, name, o);
    OPENSSL_cleanse(name, sizeof(name));
}

void smtp_authid_begin(struct smtp_authid *a, const char *arg, size_t len)
{
    OPENSSL_cleanse(a, sizeof(*a));
    a->mech = SMTP_AUTHID_NONE;
    size_t m = 0;
    while (m < len && arg[m] != ' ')
        m++;
    for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
        if (m == strlen(mechs[i].name) && strncasecmp(arg, mechs[i].name, m) == 0)
            a->mech = mechs[i].mech;
    if (m < len) /* the initial response */
        smtp_authid_response(a, arg + m + 1, len - m - 1);
}

void smtp_authid_response(struct smtp_authid *a, const char *line, size_t len)
{
    if (a->mech == SMTP_AUTHID_NONE || a->first_seen)
        return; /* later responses (a password, an error's dummy) are not read */
    a->first_seen = true;
    if (len == 1 && line[0] == '*')
        return; /* cancelled */
    unsigned char raw[PREFIX_RAW];
    int n = decode_prefix(line, len, raw);
    if (n > 0) {
        switch (a->mech) {
        case SMTP_AUTHID_PLAIN: from_plain(a, raw, (size_t)n); break;
        case SMTP_AUTHID_LOGIN: set_field(a->user, raw, (size_t)n); break;
        case SMTP_AUTHID_XOAUTH2: from_xoauth2(a, raw, (size_t)n); break;
        case SMTP_AUTHID_OAUTHBEARER: from_oauthbearer(a, raw, (size_t)n); break;
        case SMTP_AUTHID_NONE: break;
        }
    }
    OPENSSL_cleanse(raw, sizeof(raw)); /* the password or token was in there */
}

void smtp_authid_end(struct smtp_authid *a, int code, char user[SMTP_AUTHID_MAX],
                     char authzid[SMTP_AUTHID_MAX])
{
    if (code == 235) {
        memcpy(user, a->user, SMTP_AUTHID_MAX);
        memcpy(authzid, a->authzid, SMTP_AUTHID_MAX);
    }
    OPENSSL_cleanse(a, sizeof(*a));
    a->mech = SMTP_AUTHID_NONE;
}
