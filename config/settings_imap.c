/* The imap section of the daemon configuration (config/README.md). */
#include <stdlib.h>
#include <string.h>

#include "settings_internal.h"

/* No opportunistic STARTTLS towards an IMAP server: passwords go that way,
 * and a downgrade must not be silent. */
static const char *const imap_upstream_tls_names[] = {"none", "starttls", "implicit", NULL};
static const enum qumail_upstream_tls imap_upstream_tls_values[] = {
    QUMAIL_UPSTREAM_TLS_NONE, QUMAIL_UPSTREAM_TLS_STARTTLS, QUMAIL_UPSTREAM_TLS_IMPLICIT};

void qumail_config__imap_defaults(struct qumail_config *c, bool *oom)
{
    struct qumail_imap *m = &c->imap;
    m->enabled = false;
    m->upstream.host = qumail_config__dup(oom, "127.0.0.1");
    m->upstream.port = 0; /* derived from tls */
    m->upstream.tls = QUMAIL_UPSTREAM_TLS_STARTTLS;
    m->upstream.verify = true;
    m->upstream.timeout_ms = 5 * MIN;
    m->upstream.trust_id = false;
    m->limits.conn.max_connections = 1000;
    m->limits.conn.max_connections_per_address = 100;
    m->limits.conn.listen_backlog = 511;
    m->limits.max_line_length = 64 * 1024;
    m->limits.max_literal_size = 64u << 20;
    m->limits.login_timeout_ms = 3 * MIN;
    m->limits.command_timeout_ms = 5 * MIN;
    m->limits.idle_timeout_ms = 30 * MIN;
    m->decrypt.cache_size = 256u << 20;
    m->decrypt.cache_views = 10000;
    m->decrypt.notice_ttl_ms = 3 * SEC;
    m->decrypt.max_message_size = 64u << 20;
    m->decrypt.recipient_check = true;
    m->decrypt.release_unbound = false;
    m->append.algorithm = QUMAIL_APPEND_AES;
    m->append.otp_max_size = 64u << 10;
    m->append.max_size = 64u << 20;
    m->search.max_decrypt = 2000;
}

void qumail_config__imap_finish(struct qumail_config *c, bool *oom)
{
    struct qumail_imap *m = &c->imap;
    if (!m->enabled || m->n_listeners > 0 || m->listeners)
        return;
    m->listeners = calloc(1, sizeof(*m->listeners));
    if (!m->listeners) {
        *oom = true;
        return;
    }
    m->n_listeners = 1;
    m->listeners[0].name = qumail_config__dup(oom, "imap");
    m->listeners[0].address = qumail_config__dup(oom, "127.0.0.1");
    m->listeners[0].port = 2143;
    m->listeners[0].tls = QUMAIL_LISTEN_TLS_NONE;
    m->listeners[0].require_tls_for_auth = false; /* loopback */
}

static void read_limits(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_imap_limits *l = &r->cfg->imap.limits;
    qumail_config__read_conn_limits(r, o, &l->conn);
    qumail_config__u32(qcfg_member(o, "max_line_length", 0), 1000, 1 << 24,
                       &l->max_line_length);
    qcfg_size(qcfg_member(o, "max_literal_size", 0), 1024, 1ull << 32, &l->max_literal_size);
    qcfg_duration(qcfg_member(o, "login_timeout", 0), 1 * SEC, 1 * HOUR,
                  &l->login_timeout_ms);
    qcfg_duration(qcfg_member(o, "command_timeout", 0), 1 * SEC, 1 * HOUR,
                  &l->command_timeout_ms);
    /* RFC 3501 5.4: an inactivity autologout timer of at least 30 minutes. */
    qcfg_duration(qcfg_member(o, "idle_timeout", 0), 30 * MIN, 24 * HOUR,
                  &l->idle_timeout_ms);
    qcfg_done(o);
}

static const char *const recipient_check_names[] = {"strict", "off", NULL};

/* "addresses": {"login": ["address", ...], ...} */
static void read_addresses(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_imap_decrypt *d = &r->cfg->imap.decrypt;
    size_t it = 0;
    const char *login;
    qcfg_node *v;
    while ((v = qcfg_object_next(o, &it, &login)) != NULL) {
        qcfg_node *a = qcfg_array(v);
        for (size_t i = 0; i < qcfg_array_len(a); i++) {
            char *addr = NULL;
            qcfg_node *n = qcfg_array_at(a, i);
            if (qcfg_string(n, QCFG_NONEMPTY, &addr) != 1)
                continue;
            if (strchr(addr, '@') == NULL) {
                qcfg_error_at(r->doc, n, "not a mail address");
                free(addr);
                continue;
            }
            struct qumail_imap_address *na =
                realloc(d->addresses, (d->n_addresses + 1) * sizeof(*na));
            if (na == NULL) {
                free(addr);
                r->oom = true;
                return;
            }
            d->addresses = na;
            na[d->n_addresses].address = addr;
            na[d->n_addresses].login = qumail_config__dup(&r->oom, login);
            d->n_addresses++;
        }
    }
}

static void read_decrypt(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_imap_decrypt *d = &r->cfg->imap.decrypt;
    qcfg_size(qcfg_member(o, "cache_size", 0), 1u << 20, 1ull << 40, &d->cache_size);
    qumail_config__u32(qcfg_member(o, "cache_views", 0), 1, 10000000, &d->cache_views);
    qcfg_duration(qcfg_member(o, "notice_ttl", 0), 0, 1 * HOUR, &d->notice_ttl_ms);
    qcfg_size(qcfg_member(o, "max_message_size", 0), 1024, 1ull << 36,
              &d->max_message_size);
    int check;
    if (qcfg_enum(qcfg_member(o, "recipient_check", 0), recipient_check_names, &check) == 1)
        d->recipient_check = check == 0;
    qcfg_bool(qcfg_member(o, "release_unbound", 0), &d->release_unbound);
    qcfg_string(qcfg_member(o, "default_domain", 0), QCFG_NONEMPTY, &d->default_domain);
    qcfg_node *a = qcfg_object(qcfg_member(o, "addresses", 0));
    if (a)
        read_addresses(r, a);
    qcfg_done(o);
}

static const char *const append_algorithm_names[] = {"aes", "otp", "auto", NULL};

static void read_append(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_imap_append *a = &r->cfg->imap.append;
    int alg;
    if (qcfg_enum(qcfg_member(o, "algorithm", 0), append_algorithm_names, &alg) == 1)
        a->algorithm = (enum qumail_append_algorithm)alg;
    qcfg_size(qcfg_member(o, "otp_max_size", 0), 0, 1ull << 30, &a->otp_max_size);
    qcfg_size(qcfg_member(o, "max_size", 0), 1024, 1ull << 32, &a->max_size);
    qcfg_done(o);
}

/* "protect_mailboxes": "all" | "Sent, Drafts" | ["Sent", "\\Sent", ...];
 * the entries are checked by the IMAP service (protect_mailboxes). */
static void read_protect_mailboxes(struct qumail_rd *r, qcfg_node *n)
{
    struct qumail_imap *m = &r->cfg->imap;
    if (qcfg_is_string(n)) {
        char *one = NULL;
        if (qcfg_string(n, 0, &one) != 1)
            return;
        m->protect_mailboxes = calloc(1, sizeof(char *));
        if (!m->protect_mailboxes) {
            free(one);
            r->oom = true;
            return;
        }
        m->protect_mailboxes[0] = one;
        m->n_protect_mailboxes = 1;
        m->protect_mailboxes_set = true;
        return;
    }
    qcfg_node *a = qcfg_array(n);
    if (!a)
        return;
    size_t len = qcfg_array_len(a);
    m->protect_mailboxes = calloc(len ? len : 1, sizeof(char *));
    if (!m->protect_mailboxes) {
        r->oom = true;
        return;
    }
    m->protect_mailboxes_set = true;
    for (size_t i = 0; i < len; i++) {
        char *e = NULL;
        if (qcfg_string(qcfg_array_at(a, i), 0, &e) == 1)
            m->protect_mailboxes[m->n_protect_mailboxes++] = e;
    }
}

static void read_search(struct qumail_rd *r, qcfg_node *o)
{
    qumail_config__u32(qcfg_member(o, "max_decrypt", 0), 0, 10000000,
                       &r->cfg->imap.search.max_decrypt);
    qcfg_done(o);
}

void qumail_config__read_imap(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_imap *m = &r->cfg->imap;
    m->enabled = true;
    qumail_config__read_listeners(r, o, &m->listeners, &m->n_listeners);
    qcfg_node *up = qcfg_object(qcfg_member(o, "upstream", 0));
    if (up) {
        qumail_config__read_upstream(r, up, &m->upstream, imap_upstream_tls_names,
                                     imap_upstream_tls_values, true);
        qcfg_done(up);
    }
    qcfg_node *lim = qcfg_object(qcfg_member(o, "limits", 0));
    if (lim)
        read_limits(r, lim);
    qcfg_node *dec = qcfg_object(qcfg_member(o, "decrypt", 0));
    if (dec)
        read_decrypt(r, dec);
    qcfg_node *pm = qcfg_member(o, "protect_mailboxes", 0);
    if (pm)
        read_protect_mailboxes(r, pm);
    qcfg_node *ap = qcfg_object(qcfg_member(o, "append", 0));
    if (ap)
        read_append(r, ap);
    qcfg_node *se = qcfg_object(qcfg_member(o, "search", 0));
    if (se)
        read_search(r, se);
    qcfg_done(o);
}
