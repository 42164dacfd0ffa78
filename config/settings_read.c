/* Reading the daemon configuration file (schema in config/README.md): the
 * top level, kme_links, kme_simulator, vault; the protocol sections are in
 * settings_smtp.c and settings_imap.c. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings_internal.h"

/* "https://host[:port][/prefix]" (014) or "etsi004://host[:port]" (004) */
static void parse_url(struct qumail_rd *r, qcfg_node *node, struct qumail_kme_link *l)
{
    const char *u = l->url;
    bool e4 = l->kind == QUMAIL_KME_ETSI004;
    const char *scheme = e4 ? "etsi004://" : "https://";
    if (strncmp(u, scheme, strlen(scheme)) != 0) {
        qcfg_error_at(r->doc, node, e4 ? "an etsi004 link's url must start with etsi004://"
                                       : "must start with https:// (ETSI 014 runs over "
                                         "mutual TLS)");
        return;
    }
    const char *h = u + strlen(scheme), *hend, *p;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend) {
            qcfg_error_at(r->doc, node, "unterminated [IPv6 address]");
            return;
        }
        p = hend + 1;
        h++;
    } else {
        hend = h + strcspn(h, ":/?#");
        p = hend;
    }
    if (hend == h) {
        qcfg_error_at(r->doc, node, "no host name");
        return;
    }
    l->host = strndup(h, (size_t)(hend - h));
    if (!l->host) {
        r->oom = true;
        return;
    }
    if (!qumail_config__valid_host(l->host)) {
        qcfg_error_at(r->doc, node, "'%s' is not a host name or IP address", l->host);
        return;
    }
    l->port = e4 ? 25575 : 443;
    if (*p == ':') {
        unsigned long port = 0;
        const char *d = ++p;
        while (*p >= '0' && *p <= '9' && p - d < 6)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == d || port == 0 || port > 65535) {
            qcfg_error_at(r->doc, node, "bad port in URL");
            return;
        }
        l->port = (uint16_t)port;
    }
    if (*p && *p != '/') {
        qcfg_error_at(r->doc, node, "unexpected '%c' after the host and port", *p);
        return;
    }
    if (e4 && *p && strcmp(p, "/") != 0) {
        qcfg_error_at(r->doc, node, "an etsi004:// address has no path");
        return;
    }
    if (strpbrk(p, "?#")) {
        qcfg_error_at(r->doc, node, "no query or fragment allowed");
        return;
    }
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    l->path_prefix = strndup(p, plen);
    if (!l->path_prefix)
        r->oom = true;
    /* keep the URL without a trailing slash */
    size_t ulen = strlen(l->url);
    while (ulen > 8 && l->url[ulen - 1] == '/')
        l->url[--ulen] = '\0';
}

/* A UUID: 8-4-4-4-12 hex digits. */
static bool uuid_text(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    }
    return strspn(s, "0-") != 36; /* the NULL KSID asks the KME for one */
}

static void read_link(struct qumail_rd *r, qcfg_node *o, struct qumail_kme_link *l)
{
    static const char *const kinds[] = {"etsi014", "etsi004", NULL};
    int kind = 0;
    qcfg_enum(qcfg_member(o, "kind", 0), kinds, &kind);
    l->kind = kind == 1 ? QUMAIL_KME_ETSI004 : QUMAIL_KME_ETSI014;
    qcfg_node *url = qcfg_member(o, "url", QCFG_REQUIRED);
    if (qcfg_string(url, QCFG_NONEMPTY, &l->url) == 1)
        parse_url(r, url, l);
    qcfg_path(qcfg_member(o, "ca_file", 0), 0, &l->ca_file);
    qcfg_path(qcfg_member(o, "cert_file", QCFG_REQUIRED), 0, &l->cert_file);
    qcfg_path(qcfg_member(o, "key_file", QCFG_REQUIRED), 0, &l->key_file);
    qcfg_duration(qcfg_member(o, "timeout", 0), 100, 10 * MIN, &l->timeout_ms);
    qumail_config__u32(qcfg_member(o, "connections", 0), 1, 64, &l->connections);
    if (l->kind == QUMAIL_KME_ETSI004) {
        qcfg_node *ks = qcfg_member(o, "ksid", QCFG_REQUIRED);
        if (qcfg_string(ks, QCFG_NONEMPTY, &l->ksid) == 1 && !uuid_text(l->ksid))
            qcfg_error_at(r->doc, ks, "a KSID is a UUID (8-4-4-4-12 hex digits), not all "
                                      "zero: the stream agreed with the peer organisation");
        qcfg_string(qcfg_member(o, "source", 0), QCFG_NONEMPTY, &l->source);
        qcfg_string(qcfg_member(o, "destination", 0), QCFG_NONEMPTY, &l->destination);
        qumail_config__u32(qcfg_member(o, "chunk_size", 0), 1, 65536, &l->chunk_size);
        qcfg_duration(qcfg_member(o, "ttl", 0), 1000, (uint64_t)UINT32_MAX * 1000,
                      &l->ttl_ms);
        qcfg_duration(qcfg_member(o, "qos_timeout", 0), 1, UINT32_MAX, &l->qos_timeout_ms);
    }
    qcfg_done(o);
}

static void read_links(struct qumail_rd *r, qcfg_node *map)
{
    struct qumail_config *c = r->cfg;
    size_t n = qcfg_object_size(map);
    if (n > 1024) {
        qcfg_error_at(r->doc, map, "at most 1024 links");
        return;
    }
    c->kme_links = calloc(n ? n : 1, sizeof(*c->kme_links));
    if (!c->kme_links) {
        r->oom = true;
        return;
    }
    size_t it = 0;
    const char *name;
    qcfg_node *e;
    while ((e = qcfg_object_next(map, &it, &name))) {
        struct qumail_kme_link *l = &c->kme_links[c->n_kme_links++];
        l->name = qumail_config__dup(&r->oom, name);
        l->timeout_ms = 10 * SEC;
        l->connections = 4;
        if (!qumail_config__valid_name(name))
            qcfg_error_at_key(r->doc, e,
                              "link names use letters, digits, '-', '_' and '.' (at most 64)");
        qcfg_node *o = qcfg_object(e);
        if (o)
            read_link(r, o, l);
    }
}

static void read_sim_node(struct qumail_rd *r, qcfg_node *o, struct qumail_kme_sim_node *k)
{
    qcfg_node *id = qcfg_member(o, "kme_id", 0);
    if (qcfg_string(id, QCFG_NONEMPTY, &k->kme_id) == 1 && !qumail_config__valid_name(k->kme_id))
        qcfg_error_at(r->doc, id, "KME IDs use letters, digits, '-', '_' and '.'");
    qcfg_port(qcfg_member(o, "port", 0), QCFG_ZERO_OK, &k->port);
    qcfg_path(qcfg_member(o, "cert_file", 0), 0, &k->cert_file);
    qcfg_path(qcfg_member(o, "key_file", 0), 0, &k->key_file);
    qcfg_done(o);
}

static void read_simulator(struct qumail_rd *r, qcfg_node *o)
{
    struct qumail_kme_simulator *k = &r->cfg->kme_simulator;
    qcfg_bool(qcfg_member(o, "enabled", 0), &k->enabled);
    qcfg_node *file = qcfg_member(o, "config_file", 0);
    if (qcfg_path(file, 0, &k->config_file) == 1) {
        /* the simulator's own file says everything else */
        size_t it = 0;
        const char *key;
        qcfg_node *m;
        while ((m = qcfg_object_next(o, &it, &key)))
            if (strcmp(key, "enabled") != 0 && strcmp(key, "config_file") != 0)
                qcfg_error_at_key(r->doc, m, "not allowed together with config_file "
                                  "(set it in that file)");
        return;
    }
    qcfg_node *addr = qcfg_member(o, "address", 0);
    if (qcfg_string(addr, QCFG_NONEMPTY, &k->address) == 1 && !qumail_config__numeric_ip(k->address))
        qcfg_error_at(r->doc, addr, "'%s' is not a numeric IP address", k->address);
    qcfg_node *a = qcfg_object(qcfg_member(o, "a", 0));
    if (a)
        read_sim_node(r, a, &k->a);
    qcfg_node *b = qcfg_object(qcfg_member(o, "b", 0));
    if (b)
        read_sim_node(r, b, &k->b);
    qcfg_path(qcfg_member(o, "ca_file", 0), 0, &k->ca_file);
    qcfg_path(qcfg_member(o, "state_path", 0), 0, &k->state_path);
    int64_t rate;
    if (qcfg_int(qcfg_member(o, "key_rate", 0), 1, INT64_C(1) << 40, &rate) == 1)
        k->key_rate = (uint64_t)rate;
    qumail_config__u32(qcfg_member(o, "max_key_count", 0), 1, 10000000, &k->max_key_count);
    qcfg_node *ks = qcfg_member(o, "key_size", 0);
    qcfg_node *mins = qcfg_member(o, "min_key_size", 0);
    qcfg_node *maxs = qcfg_member(o, "max_key_size", 0);
    qumail_config__u32(ks, 8, 1 << 20, &k->key_size);
    qumail_config__u32(mins, 8, 1 << 20, &k->min_key_size);
    qumail_config__u32(maxs, 8, 1 << 20, &k->max_key_size);
    qumail_config__u32(qcfg_member(o, "max_keys_per_request", 0), 1, 100000, &k->max_keys_per_request);
    qcfg_duration(qcfg_member(o, "key_expiry", 0), 1 * SEC, 30ull * 24 * HOUR,
                  &k->key_expiry_ms);
    qcfg_duration(qcfg_member(o, "dec_keys_redeliver", 0), 0, 24 * HOUR,
                  &k->redeliver_ms);
    if (k->key_size % 8 || k->min_key_size % 8 || k->max_key_size % 8)
        qcfg_error_at(r->doc, ks ? ks : mins ? mins : maxs ? maxs : o,
                      "key sizes are multiples of 8 bits");
    else if (k->min_key_size > k->key_size || k->key_size > k->max_key_size)
        qcfg_error_at(r->doc, ks ? ks : mins ? mins : maxs ? maxs : o,
                      "need min_key_size <= key_size <= max_key_size");
    if (k->enabled) {
        qumail_config__need(r, a ? a : o, "cert_file", k->a.cert_file, "when the simulator is enabled");
        qumail_config__need(r, a ? a : o, "key_file", k->a.key_file, "when the simulator is enabled");
        qumail_config__need(r, b ? b : o, "cert_file", k->b.cert_file, "when the simulator is enabled");
        qumail_config__need(r, b ? b : o, "key_file", k->b.key_file, "when the simulator is enabled");
        qumail_config__need(r, o, "ca_file", k->ca_file, "when the simulator is enabled");
    }
    if (k->a.port && k->a.port == k->b.port)
        qcfg_error_at(r->doc, b ? qcfg_member(b, "port", 0) : o,
                      "the two simulated KMEs need different ports");
    if (k->a.kme_id && k->b.kme_id && strcmp(k->a.kme_id, k->b.kme_id) == 0)
        qcfg_error_at(r->doc, b ? b : o, "the two simulated KMEs need different kme_id");
    qcfg_done(o);
}

/* An SMTP and an IMAP listener cannot share an address and port. */
static void check_ports(struct qumail_rd *r, qcfg_node *smtp, qcfg_node *imap)
{
    const struct qumail_smtp *s = &r->cfg->smtp;
    const struct qumail_imap *m = &r->cfg->imap;
    qcfg_node *arr = qcfg_member(imap, "listeners", 0);
    if (!arr || !qcfg_member(smtp, "listeners", 0))
        arr = imap; /* a default listener on one side: point at the section */
    for (size_t i = 0; i < m->n_listeners; i++) {
        const struct qumail_listener *l = &m->listeners[i];
        for (size_t j = 0; j < s->n_listeners; j++) {
            const struct qumail_listener *p = &s->listeners[j];
            if (l->port && l->port == p->port && l->address && p->address &&
                strcmp(l->address, p->address) == 0) {
                qcfg_node *at = arr == imap ? imap
                                            : qcfg_member(qcfg_array_at(arr, i), "port", 0);
                qcfg_error_at(r->doc, at ? at : imap,
                              "%s port %u is used by smtp listener '%s' too", l->address,
                              l->port, p->name ? p->name : "?");
            }
        }
    }
}

static void read_root(struct qumail_rd *r, qcfg_node *root)
{
    struct qumail_config *c = r->cfg;
    int lvl = (int)c->log_level;
    if (qcfg_enum(qcfg_member(root, "log_level", 0), qumail_config__log_level_names, &lvl) == 1)
        c->log_level = (enum qumail_log_level)lvl;
    qcfg_path(qcfg_member(root, "state_dir", 0), 0, &c->state_dir);
    qcfg_node *smtp = qcfg_object(qcfg_member(root, "smtp", 0));
    if (smtp)
        qumail_config__read_smtp(r, smtp);
    qcfg_node *imap = qcfg_object(qcfg_member(root, "imap", 0));
    if (imap) {
        qumail_config__read_imap(r, imap);
        check_ports(r, smtp, imap);
    }
    qcfg_node *links = qcfg_object(qcfg_member(root, "kme_links", 0));
    if (links)
        read_links(r, links);
    qcfg_node *sim = qcfg_object(qcfg_member(root, "kme_simulator", 0));
    if (sim)
        read_simulator(r, sim);
    qcfg_node *vault = qcfg_object(qcfg_member(root, "vault", 0));
    qcfg_path(qcfg_member(vault, "path", 0), 0, &c->vault.path);
    qcfg_path(qcfg_member(vault, "key_file", 0), 0, &c->vault.key_file);
    qcfg_done(vault);
    qcfg_node *admin = qcfg_object(qcfg_member(root, "admin", 0));
    if (admin)
        qumail_config__read_admin(r, admin);
    qcfg_path(qcfg_member(root, "policy_file", 0), 0, &c->policy_file);
    qcfg_done(root);
}

static int load_doc(struct qcfg *doc, struct qumail_config **cfg_r, char **error_r)
{
    struct qumail_rd r = {.doc = doc, .cfg = qumail_config__new_defaults(true)};
    if (!r.cfg) {
        qcfg_free(&doc);
        if (error_r)
            *error_r = strdup("out of memory");
        return QCFG_ENOMEM;
    }
    qcfg_node *root = qcfg_object(qcfg_root(doc));
    if (root)
        read_root(&r, root);
    free(r.cfg->file);
    r.cfg->file = qumail_config__dup(&r.oom, qcfg_file_name(doc));
    if (!r.oom && qumail_config__finish(r.cfg) < 0)
        r.oom = true;
    int rc = QCFG_OK;
    if (r.oom) {
        rc = QCFG_ENOMEM;
        if (error_r)
            *error_r = strdup("out of memory");
    } else if (qcfg_error_count(doc) > 0) {
        rc = QCFG_EINVALID;
        if (error_r)
            *error_r = qcfg_errors_join(doc);
    }
    qcfg_free(&doc);
    if (rc != QCFG_OK)
        qumail_config_free(&r.cfg);
    *cfg_r = r.cfg;
    return rc;
}

int qumail_config_load(const char *path, struct qumail_config **cfg_r, char **error_r)
{
    struct qcfg *doc;
    *cfg_r = NULL;
    int rc = qcfg_load_file(path, &doc, error_r);
    if (rc < 0)
        return rc;
    return load_doc(doc, cfg_r, error_r);
}

int qumail_config_load_buffer(const char *name, const char *base_dir,
                              const char *text, size_t len,
                              struct qumail_config **cfg_r, char **error_r)
{
    struct qcfg *doc;
    *cfg_r = NULL;
    int rc = qcfg_load_buffer(name, base_dir, text, len, &doc, error_r);
    if (rc < 0)
        return rc;
    return load_doc(doc, cfg_r, error_r);
}
