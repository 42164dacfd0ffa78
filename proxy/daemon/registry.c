/* The session registry: every live session of every protocol, the counts
 * per protocol and per (protocol, client address), and the one place a
 * session is unlinked (proxy_session_end). */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

/* Sessions from one client address of one protocol. */
struct addr_count {
    struct addr_count *next;   /* hash chain */
    size_t proto;
    int family;                /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint32_t count;
};

/* The address a limit counts: IPv4-mapped IPv6 as IPv4. */
static void addr_key(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    memset(addr, 0, 16);
    *family = AF_UNSPEC;
    if (!sa)
        return;
    if (sa->sa_family == AF_INET) {
        *family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            *family = AF_INET;
            memcpy(addr, a + 12, 4);
        } else {
            *family = AF_INET6;
            memcpy(addr, a, 16);
        }
    }
}

static size_t addr_hash(size_t proto, int family, const uint8_t addr[16])
{
    /* FNV-1a; the table only spreads entries, it is not a security
     * boundary (a chain is at most the number of distinct peers). */
    uint64_t h = 1469598103934665603ull ^ (uint64_t)proto ^ ((uint64_t)family << 8);
    for (size_t i = 0; i < 16; i++) {
        h ^= addr[i];
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

static struct addr_count **addr_slot(proxy_daemon *d, size_t proto, int family,
                                     const uint8_t addr[16])
{
    struct addr_count **pp =
        &d->addr_buckets[addr_hash(proto, family, addr) & (d->n_addr_buckets - 1)];
    while (*pp && !((*pp)->proto == proto && (*pp)->family == family &&
                    memcmp((*pp)->addr, addr, 16) == 0))
        pp = &(*pp)->next;
    return pp;
}

/* Doubles the table when it gets full (keeps chains short). -1: no memory
 * (the old table stays, correct but slower). */
static int addr_grow(proxy_daemon *d)
{
    size_t n = d->n_addr_buckets ? d->n_addr_buckets * 2 : 256;
    struct addr_count **b = calloc(n, sizeof(struct addr_count *));
    if (!b)
        return -1;
    for (size_t i = 0; i < d->n_addr_buckets; i++) {
        while (d->addr_buckets[i]) {
            struct addr_count *e = d->addr_buckets[i];
            d->addr_buckets[i] = e->next;
            size_t k = addr_hash(e->proto, e->family, e->addr) & (n - 1);
            e->next = b[k];
            b[k] = e;
        }
    }
    free(d->addr_buckets);
    d->addr_buckets = b;
    d->n_addr_buckets = n;
    return 0;
}

static uint32_t addr_current(proxy_daemon *d, size_t proto, const struct sockaddr *peer)
{
    if (!d->n_addr_buckets)
        return 0;
    int family;
    uint8_t addr[16];
    addr_key(peer, &family, addr);
    struct addr_count *e = *addr_slot(d, proto, family, addr);
    return e ? e->count : 0;
}

bool proxy_registry__admit(proxy_daemon *d, size_t proto, const struct sockaddr *peer,
                           const char **reason_r)
{
    const struct qumail_listener *ls;
    size_t n;
    const struct qumail_conn_limits *lim;
    proxy_daemon__settings(d, proto, proxy_daemon__cfg(d), &ls, &n, &lim);
    if (d->protos[proto].n_sessions >= lim->max_connections) {
        *reason_r = "Too many connections, try again later";
        return false;
    }
    if (lim->max_connections_per_address > 0 &&
        addr_current(d, proto, peer) >= lim->max_connections_per_address) {
        *reason_r = "Too many connections from your address, try again later";
        return false;
    }
    return true;
}

proxy_session *proxy_registry__add(proxy_daemon *d, size_t proto, struct proxy_listener *l,
                                   const struct sockaddr *peer)
{
    if (d->n_addrs >= d->n_addr_buckets)
        addr_grow(d);
    if (!d->n_addr_buckets)
        return NULL;
    proxy_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    int family;
    uint8_t addr[16];
    addr_key(peer, &family, addr);
    struct addr_count **slot = addr_slot(d, proto, family, addr);
    if (!*slot) {
        struct addr_count *e = calloc(1, sizeof(*e));
        if (!e) {
            free(s);
            return NULL;
        }
        e->proto = proto;
        e->family = family;
        memcpy(e->addr, addr, 16);
        *slot = e;
        d->n_addrs++;
    }
    s->addr = *slot;
    s->addr->count++;
    s->d = d;
    s->proto = proto;
    s->gen = d->gen;
    s->gen->refs++;
    s->listener = l;
    l->refs++;
    s->next = d->sessions;
    if (d->sessions)
        d->sessions->prev = s;
    d->sessions = s;
    d->n_sessions++;
    d->protos[proto].n_sessions++;
    proxy_ops__session_count(d, proto, true, false);
    return s;
}

void proxy_session_end(proxy_session **sp)
{
    proxy_session *s = sp ? *sp : NULL;
    if (!s)
        return;
    *sp = NULL;
    proxy_daemon *d = s->d;
    if (s->prev)
        s->prev->next = s->next;
    else
        d->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    d->n_sessions--;
    d->protos[s->proto].n_sessions--;
    proxy_ops__session_count(d, s->proto, false, false);
    if (--s->addr->count == 0) {
        struct addr_count **slot = addr_slot(d, s->proto, s->addr->family, s->addr->addr);
        *slot = s->addr->next;
        free(s->addr);
        d->n_addrs--;
    }
    proxy_gen__unref(&s->gen);
    proxy_listener__unref(&s->listener);
    free(s);
}

void proxy_registry__close_all(proxy_daemon *d)
{
    /* A close may end any number of sessions, at once or later: start
     * over from the head each time, skipping the ones already asked. */
    for (;;) {
        proxy_session *s = d->sessions;
        while (s && s->close_sent)
            s = s->next;
        if (!s)
            return;
        s->close_sent = true;
        d->protos[s->proto].p->close(s->impl);
    }
}

void proxy_registry__free(proxy_daemon *d)
{
    proxy_session *next;
    for (proxy_session *s = d->sessions; s; s = next) {
        next = s->next;
        /* Only a protocol that broke its contract leaves one behind. */
        qlog_error("daemon: a %s session was never ended", d->protos[s->proto].p->name);
        proxy_session_end(&s);
    }
    free(d->addr_buckets);
    d->addr_buckets = NULL;
    d->n_addr_buckets = 0;
}

int proxy_registry__peer_sockaddr(const char *peer, struct sockaddr_storage *ss)
{
    char host[64];
    memset(ss, 0, sizeof(*ss));
    const char *h = peer, *hend, *colon;
    if (peer[0] == '[') {
        h = peer + 1;
        hend = strchr(h, ']');
        if (!hend)
            return -1;
        colon = hend[1] == ':' ? hend + 1 : NULL;
    } else {
        colon = strrchr(peer, ':');
        hend = colon ? colon : peer + strlen(peer);
    }
    if ((size_t)(hend - h) >= sizeof(host))
        return -1;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (port < 0 || port > 65535)
        port = 0;
    if (peer[0] == '[')
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}
