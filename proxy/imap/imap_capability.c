/* The capability allow-list. Reasons in README.md ("Capabilities"); the
 * short version: kept are extensions that neither bypass the byte stream
 * the proxy reads nor expose stored content through anything but FETCH
 * items the proxy can rewrite; everything else, and anything unknown, is
 * hidden. */
#include "imap_capability.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Exact names. */
static const char *const allowed_exact[] = {
    "IMAP4rev1",
    "LITERAL+", "LITERAL-",      /* framing the proxy parses */
    "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS",
    "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "LIST-MYRIGHTS", "SPECIAL-USE",
    "CREATE-SPECIAL-USE", "MOVE", "ESEARCH", "ESORT", "SORT", "SORT=DISPLAY",
    "WITHIN", "MULTIAPPEND", "CONDSTORE", "QRESYNC",
    "QUOTA", "QUOTASET", "ACL", "METADATA", "METADATA-SERVER", "SAVEDATE", "OBJECTID",
    "INPROGRESS",
};

/* Prefixes (the value after '=' is the server's). */
static const char *const allowed_prefix[] = {
    "I18NLEVEL=", "RIGHTS=", "QUOTA=RES-", "APPENDLIMIT=", "MESSAGELIMIT=",
    "SAVELIMIT=",
};

static const char *const sasl_allowed[] = {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"};

static const char *const enable_allowed[] = {"CONDSTORE", "QRESYNC"};

static bool eq(const char *a, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(a, lit, len) == 0;
}

bool imap_cap_sasl_allowed(const char *mech)
{
    for (size_t i = 0; i < sizeof(sasl_allowed) / sizeof(sasl_allowed[0]); i++)
        if (strcasecmp(mech, sasl_allowed[i]) == 0)
            return true;
    return false;
}

bool imap_cap_allowed(const char *cap, size_t len)
{
    for (size_t i = 0; i < sizeof(allowed_exact) / sizeof(allowed_exact[0]); i++)
        if (eq(cap, len, allowed_exact[i]))
            return true;
    for (size_t i = 0; i < sizeof(allowed_prefix) / sizeof(allowed_prefix[0]); i++) {
        size_t pl = strlen(allowed_prefix[i]);
        if (len > pl && strncasecmp(cap, allowed_prefix[i], pl) == 0) {
            /* APPENDLIMIT needs its number: bare APPENDLIMIT (per mailbox
             * values in STATUS/LIST) is hidden */
            return true;
        }
    }
    if (len > 5 && strncasecmp(cap, "AUTH=", 5) == 0) {
        char mech[64];
        if (len - 5 >= sizeof(mech))
            return false;
        memcpy(mech, cap + 5, len - 5);
        mech[len - 5] = '\0';
        return imap_cap_sasl_allowed(mech);
    }
    return false;
}

bool imap_cap_enable_allowed(const char *cap, size_t len)
{
    for (size_t i = 0; i < sizeof(enable_allowed) / sizeof(enable_allowed[0]); i++)
        if (eq(cap, len, enable_allowed[i]))
            return true;
    return false;
}

static bool append_atom(char *out, size_t size, size_t *n, const char *a, size_t len)
{
    size_t need = (*n ? 1 : 0) + len;
    if (*n + need + 1 > size)
        return false;
    if (*n)
        out[(*n)++] = ' ';
    memcpy(out + *n, a, len);
    *n += len;
    out[*n] = '\0';
    return true;
}

size_t imap_cap_filter(const char *caps, size_t len, const struct imap_cap_ctx *ctx, char *out,
                       size_t out_size)
{
    size_t n = 0;
    if (out_size == 0)
        return 0;
    out[0] = '\0';
    const char *p = caps, *end = caps + len;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        const char *a = p;
        while (p < end && *p != ' ')
            p++;
        size_t al = (size_t)(p - a);
        if (al == 0)
            continue;
        if (!imap_cap_allowed(a, al))
            continue;
        if (ctx->logindisabled && al > 5 && strncasecmp(a, "AUTH=", 5) == 0)
            continue;
        if (!append_atom(out, out_size, &n, a, al))
            return 0;
    }
    if (ctx->starttls && !append_atom(out, out_size, &n, "STARTTLS", 8))
        return 0;
    if (ctx->logindisabled && !append_atom(out, out_size, &n, "LOGINDISABLED", 13))
        return 0;
    return n;
}

bool imap_cap_has(const char *caps, size_t len, const char *cap)
{
    size_t cl = strlen(cap);
    const char *p = caps, *end = caps + len;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        const char *a = p;
        while (p < end && *p != ' ')
            p++;
        if ((size_t)(p - a) == cl && strncasecmp(a, cap, cl) == 0)
            return true;
    }
    return false;
}
