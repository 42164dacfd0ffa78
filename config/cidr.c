/* Address blocks for trusted_networks. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"

int qumail_cidr_parse(const char *text, struct qumail_cidr *cidr_r,
                      const char **why_r)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(addr)) {
        *why_r = "not an IP address";
        return -1;
    }
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    struct qumail_cidr c = {0};
    unsigned max;
    if (inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, c.addr) == 1) {
        c.family = AF_INET6;
        max = 128;
    } else {
        *why_r = "not an IP address";
        return -1;
    }
    unsigned prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (*p < '0' || *p > '9' || strlen(p) > 3) {
            *why_r = "bad prefix length";
            return -1;
        }
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') {
                *why_r = "bad prefix length";
                return -1;
            }
            prefix = prefix * 10 + (unsigned)(*p - '0');
        }
        if (prefix > max) {
            *why_r = "prefix length too large";
            return -1;
        }
    }
    c.prefix = (uint8_t)prefix;
    /* clear host bits so that 10.1.2.3/8 means 10.0.0.0/8 */
    for (unsigned bit = prefix; bit < max; bit++)
        c.addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
    *cidr_r = c;
    return 0;
}

static bool prefix_match(const uint8_t *net, const uint8_t *addr, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(net, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (net[full] & mask) == (addr[full] & mask);
}

bool qumail_cidr_contains(const struct qumail_cidr *cidr, const struct sockaddr *sa)
{
    if (!cidr || !sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return cidr->family == AF_INET &&
               prefix_match(cidr->addr, (const uint8_t *)&in->sin_addr, cidr->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = in6->sin6_addr.s6_addr;
        if (cidr->family == AF_INET6)
            return prefix_match(cidr->addr, a, cidr->prefix);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return prefix_match(cidr->addr, a + 12, cidr->prefix);
    }
    return false;
}
