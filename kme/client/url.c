/* The KME base URL: "https://host[:port][/prefix]". Only https: ETSI 014
 * requires TLS. No user info, query or fragment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

static int fail(char **error_r, const char *url, const char *why)
{
    if (error_r != NULL) {
        size_t n = strlen(url) + strlen(why) + 32;
        *error_r = malloc(n);
        if (*error_r != NULL)
            snprintf(*error_r, n, "KME URL '%s': %s", url, why);
    }
    return KME_EINVAL;
}

static int parse_port(const char *s, size_t len, uint16_t *port_r)
{
    if (len == 0 || len > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port_r = (uint16_t)v;
    return 0;
}

int kme_url_parse(const char *url, struct kme_url *u, char **error_r)
{
    *u = (struct kme_url){0};
    if (url == NULL)
        return fail(error_r, "", "missing");
    static const char scheme[] = "https://";
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
        return fail(error_r, url, "must start with https://");
    const char *p = url + sizeof(scheme) - 1;
    const char *path = strchr(p, '/');
    size_t auth_len = path ? (size_t)(path - p) : strlen(p);
    if (memchr(p, '@', auth_len) != NULL || strpbrk(url, "?# \t\r\n") != NULL)
        return fail(error_r, url, "user info, query, fragment or blanks not allowed");

    const char *host = p;
    size_t host_len;
    const char *port_s = NULL;
    size_t port_len = 0;
    bool v6 = false;
    if (auth_len > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', auth_len);
        if (close == NULL)
            return fail(error_r, url, "unterminated [IPv6] address");
        host = p + 1;
        host_len = (size_t)(close - host);
        v6 = true;
        const char *after = close + 1;
        size_t rest = auth_len - (size_t)(after - p);
        if (rest > 0) {
            if (after[0] != ':')
                return fail(error_r, url, "garbage after [IPv6] address");
            port_s = after + 1;
            port_len = rest - 1;
        }
    } else {
        const char *colon = memchr(p, ':', auth_len);
        host_len = colon ? (size_t)(colon - p) : auth_len;
        if (colon != NULL) {
            port_s = colon + 1;
            port_len = auth_len - host_len - 1;
        }
    }
    if (host_len == 0 || host_len > 253)
        return fail(error_r, url, "missing or overlong host");
    u->port = 443;
    if (port_s != NULL && parse_port(port_s, port_len, &u->port) < 0)
        return fail(error_r, url, "invalid port");

    u->host = strndup(host, host_len);
    size_t hh = host_len + 16;
    u->host_header = malloc(hh);
    const char *prefix = path ? path : "";
    size_t plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    u->prefix = strndup(prefix, plen);
    if (u->host == NULL || u->host_header == NULL || u->prefix == NULL) {
        kme_url_clear(u);
        if (error_r != NULL)
            *error_r = strdup("out of memory");
        return KME_ENOMEM;
    }
    if (u->port == 443)
        snprintf(u->host_header, hh, v6 ? "[%s]" : "%s", u->host);
    else
        snprintf(u->host_header, hh, v6 ? "[%s]:%u" : "%s:%u", u->host, u->port);
    return 0;
}

void kme_url_clear(struct kme_url *u)
{
    free(u->host);
    free(u->host_header);
    free(u->prefix);
    *u = (struct kme_url){0};
}
