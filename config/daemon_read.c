/* Reading the daemon configuration file (schema in config/README.md). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"

#define SEC 1000ull
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

struct rd {
    struct qcfg *doc;
    struct qumail_config *cfg;
    bool oom;
};

static bool numeric_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* A host name or an IP address: letters, digits, '-', '.', ':' (IPv6). */
static bool valid_host(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* Names referenced from other files (link names in the policy). */
static bool valid_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static void u32(qcfg_node *n, int64_t min, int64_t max, uint32_t *out)
{
    int64_t v;
    if (qcfg_int(n, min, max, &v) == 1)
        *out = (uint32_t)v;
}

/* A required file next to a TLS setting: "required when tls is 'x'". */
static void need(struct rd *r, qcfg_node *obj, const char *key, const char *val,
                 const char *why)
{
    if (!val)
        qcfg_error_at(r->doc, qcfg_member(obj, key, 0) ? qcfg_member(obj, key, 0) : obj,
                      "'%s' is required %s", key, why);
}

static void read_listener(struct rd *r, qcfg_node *o, struct qumail_smtp_listener *l)
{
    qcfg_node *name = qcfg_member(o, "name", QCFG_REQUIRED);
    if (qcfg_string(name, QCFG_NONEMPTY, &l->name) == 1 && !valid_name(l->name))
        qcfg_error_at(r->doc, name, "listener names use letters, digits, '-', '_' and '.'");
    qcfg_node *addr = qcfg_member(o, "address", 0);
    if (qcfg_string(addr, QCFG_NONEMPTY, &l->address) == 1 && !numeric_ip(l->address))
        qcfg_error_at(r->doc, addr, "'%s' is not a numeric IP address", l->address);
    qcfg_port(qcfg_member(o, "port", QCFG_REQUIRED), QCFG_ZERO_OK, &l->port);
    int tls = l->tls;
    if (qcfg_enum(qcfg_member(o, "tls", 0), qumail_config__listen_tls_names, &tls) == 1)
        l->tls = (enum qumail_listen_tls)tls;
    qcfg_path(qcfg_member(o, "cert_file", 0), 0, &l->cert_file);
    qcfg_path(qcfg_member(o, "key_file", 0), 0, &l->key_file);
    l->require_tls_for_auth = !qumail_config__is_loopback(l->address);
    qcfg_bool(qcfg_member(o, "require_tls_for_auth", 0), &l->require_tls_for_auth);
    if (l->tls != QUMAIL_LISTEN_TLS_NONE) {
        char why[64];
        snprintf(why, sizeof(why), "when tls is '%s'", qumail_listen_tls_name(l->tls));
        need(r, o, "cert_file", l->cert_file, why);
        need(r, o, "key_file", l->key_file, why);
    } else if (l->require_tls_for_auth && qcfg_member(o, "require_tls_for_auth", 0)) {
        qcfg_error_at(r->doc, qcfg_member(o, "require_tls_for_auth", 0),
                      "true with tls 'none' would make AUTH impossible");
    }
    qcfg_done(o);
}

static void read_listeners(struct rd *r, qcfg_node *smtp)
{
    qcfg_node *arr = qcfg_array(qcfg_member(smtp, "listeners", 0));
    if (!arr)
        return;
    struct qumail_smtp *s = &r->cfg->smtp;
    size_t n = qcfg_array_len(arr);
    if (n == 0) {
        qcfg_error_at(r->doc, arr, "at least one listener is needed");
        return;
    }
    if (n > 64) {
        qcfg_error_at(r->doc, arr, "at most 64 listeners");
        return;
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        free(s->listeners[i].name);
        free(s->listeners[i].address);
        free(s->listeners[i].cert_file);
        free(s->listeners[i].key_file);
    }
    free(s->listeners);
    s->n_listeners = 0;
    s->listeners = calloc(n, sizeof(*s->listeners));
    if (!s->listeners) {
        r->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct qumail_smtp_listener *l = &s->listeners[i];
        s->n_listeners++;
        l->address = qumail_config__dup(r->cfg, &r->oom, "127.0.0.1");
        l->tls = QUMAIL_LISTEN_TLS_NONE;
        qcfg_node *o = qcfg_object(qcfg_array_at(arr, i));
        if (!o)
            continue;
        read_listener(r, o, l);
        for (size_t j = 0; j < i; j++) {
            struct qumail_smtp_listener *p = &s->listeners[j];
            if (l->name && p->name && strcmp(l->name, p->name) == 0)
                qcfg_error_at(r->doc, qcfg_member(o, "name", 0),
                              "listener name '%s' is used twice", l->name);
            if (l->port && l->port == p->port && l->address && p->address &&
                strcmp(l->address, p->address) == 0)
                qcfg_error_at(r->doc, qcfg_member(o, "port", 0),
                              "%s port %u is used by listener '%s' too", l->address,
                              l->port, p->name ? p->name : "?");
        }
    }
}

static void read_upstream(struct rd *r, qcfg_node *o)
{
    struct qumail_smtp_upstream *u = &r->cfg->smtp.upstream;
    qcfg_node *host = qcfg_member(o, "host", 0);
    if (qcfg_string(host, QCFG_NONEMPTY, &u->host) == 1 && !valid_host(u->host))
        qcfg_error_at(r->doc, host, "'%s' is not a host name or IP address", u->host);
    qcfg_port(qcfg_member(o, "port", 0), 0, &u->port);
    int tls = u->tls;
    if (qcfg_enum(qcfg_member(o, "tls", 0), qumail_config__upstream_tls_names, &tls) == 1)
        u->tls = (enum qumail_upstream_tls)tls;
    qcfg_bool(qcfg_member(o, "verify", 0), &u->verify);
    qcfg_path(qcfg_member(o, "ca_file", 0), 0, &u->ca_file);
    qcfg_node *sn = qcfg_member(o, "server_name", 0);
    if (qcfg_string(sn, QCFG_NONEMPTY, &u->server_name) == 1 && !valid_host(u->server_name))
        qcfg_error_at(r->doc, sn, "'%s' is not a host name", u->server_name);
    qcfg_path(qcfg_member(o, "client_cert_file", 0), 0, &u->client_cert_file);
    qcfg_path(qcfg_member(o, "client_key_file", 0), 0, &u->client_key_file);
    if (!u->client_cert_file != !u->client_key_file)
        qcfg_error_at(r->doc, o, "client_cert_file and client_key_file go together");
    qcfg_duration(qcfg_member(o, "timeout", 0), 1 * SEC, 1 * HOUR, &u->timeout_ms);
    qcfg_done(o);
}

static void read_limits(struct rd *r, qcfg_node *o)
{
    struct qumail_smtp_limits *l = &r->cfg->smtp.limits;
    qcfg_size(qcfg_member(o, "max_message_size", 0), 1024, 1ull << 32, &l->max_message_size);
    u32(qcfg_member(o, "max_recipients", 0), 1, 100000, &l->max_recipients);
    u32(qcfg_member(o, "max_line_length", 0), 1000, 1 << 20, &l->max_line_length);
    qcfg_duration(qcfg_member(o, "command_timeout", 0), 1 * SEC, 1 * HOUR,
                  &l->command_timeout_ms);
    qcfg_duration(qcfg_member(o, "data_timeout", 0), 1 * SEC, 1 * HOUR, &l->data_timeout_ms);
    u32(qcfg_member(o, "max_connections", 0), 1, 100000, &l->max_connections);
    qcfg_done(o);
}

static void read_trusted(struct rd *r, qcfg_node *arr)
{
    struct qumail_smtp *s = &r->cfg->smtp;
    size_t n = qcfg_array_len(arr);
    if (n > 1024) {
        qcfg_error_at(r->doc, arr, "at most 1024 networks");
        return;
    }
    free(s->trusted_networks);
    s->n_trusted_networks = 0;
    s->trusted_networks = calloc(n ? n : 1, sizeof(*s->trusted_networks));
    if (!s->trusted_networks) {
        r->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char *text = NULL;
        qcfg_node *e = qcfg_array_at(arr, i);
        if (qcfg_string(e, QCFG_NONEMPTY, &text) != 1)
            continue;
        const char *why;
        if (qumail_cidr_parse(text, &s->trusted_networks[s->n_trusted_networks], &why) < 0)
            qcfg_error_at(r->doc, e, "'%s': %s", text, why);
        else
            s->n_trusted_networks++;
        free(text);
    }
}

static void read_smtp(struct rd *r, qcfg_node *o)
{
    struct qumail_smtp *s = &r->cfg->smtp;
    int mode = s->mode;
    if (qcfg_enum(qcfg_member(o, "mode", 0), qumail_config__mode_names, &mode) == 1)
        s->mode = (enum qumail_smtp_mode)mode;
    qcfg_node *hn = qcfg_member(o, "hostname", 0);
    if (qcfg_string(hn, QCFG_NONEMPTY, &s->hostname) == 1 && !valid_host(s->hostname))
        qcfg_error_at(r->doc, hn, "'%s' is not a host name", s->hostname);
    read_listeners(r, o);
    qcfg_node *up = qcfg_object(qcfg_member(o, "upstream", 0));
    if (up)
        read_upstream(r, up);
    qcfg_node *tn = qcfg_array(qcfg_member(o, "trusted_networks", 0));
    if (tn)
        read_trusted(r, tn);
    qcfg_node *lim = qcfg_object(qcfg_member(o, "limits", 0));
    if (lim)
        read_limits(r, lim);
    qcfg_bool(qcfg_member(o, "trace_header", 0), &s->trace_header);
    qcfg_done(o);
}

/* "https://host[:port][/prefix]" */
static void parse_url(struct rd *r, qcfg_node *node, struct qumail_kme_link *l)
{
    const char *u = l->url;
    if (strncmp(u, "https://", 8) != 0) {
        qcfg_error_at(r->doc, node, "must start with https:// (ETSI 014 runs over mutual TLS)");
        return;
    }
    const char *h = u + 8, *hend, *p;
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
    if (!valid_host(l->host)) {
        qcfg_error_at(r->doc, node, "'%s' is not a host name or IP address", l->host);
        return;
    }
    l->port = 443;
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

static void read_link(struct rd *r, qcfg_node *o, struct qumail_kme_link *l)
{
    qcfg_node *url = qcfg_member(o, "url", QCFG_REQUIRED);
    if (qcfg_string(url, QCFG_NONEMPTY, &l->url) == 1)
        parse_url(r, url, l);
    qcfg_path(qcfg_member(o, "ca_file", 0), 0, &l->ca_file);
    qcfg_path(qcfg_member(o, "cert_file", QCFG_REQUIRED), 0, &l->cert_file);
    qcfg_path(qcfg_member(o, "key_file", QCFG_REQUIRED), 0, &l->key_file);
    qcfg_duration(qcfg_member(o, "timeout", 0), 100, 10 * MIN, &l->timeout_ms);
    u32(qcfg_member(o, "connections", 0), 1, 64, &l->connections);
    qcfg_done(o);
}

static void read_links(struct rd *r, qcfg_node *map)
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
        l->name = qumail_config__dup(c, &r->oom, name);
        l->timeout_ms = 10 * SEC;
        l->connections = 4;
        if (!valid_name(name))
            qcfg_error_at_key(r->doc, e,
                              "link names use letters, digits, '-', '_' and '.' (at most 64)");
        qcfg_node *o = qcfg_object(e);
        if (o)
            read_link(r, o, l);
    }
}

static void read_sim_node(struct rd *r, qcfg_node *o, struct qumail_kme_sim_node *k)
{
    qcfg_node *id = qcfg_member(o, "kme_id", 0);
    if (qcfg_string(id, QCFG_NONEMPTY, &k->kme_id) == 1 && !valid_name(k->kme_id))
        qcfg_error_at(r->doc, id, "KME IDs use letters, digits, '-', '_' and '.'");
    qcfg_port(qcfg_member(o, "port", 0), QCFG_ZERO_OK, &k->port);
    qcfg_path(qcfg_member(o, "cert_file", 0), 0, &k->cert_file);
    qcfg_path(qcfg_member(o, "key_file", 0), 0, &k->key_file);
    qcfg_done(o);
}

static void read_simulator(struct rd *r, qcfg_node *o)
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
    if (qcfg_string(addr, QCFG_NONEMPTY, &k->address) == 1 && !numeric_ip(k->address))
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
    u32(qcfg_member(o, "max_key_count", 0), 1, 10000000, &k->max_key_count);
    qcfg_node *ks = qcfg_member(o, "key_size", 0);
    qcfg_node *mins = qcfg_member(o, "min_key_size", 0);
    qcfg_node *maxs = qcfg_member(o, "max_key_size", 0);
    u32(ks, 8, 1 << 20, &k->key_size);
    u32(mins, 8, 1 << 20, &k->min_key_size);
    u32(maxs, 8, 1 << 20, &k->max_key_size);
    u32(qcfg_member(o, "max_keys_per_request", 0), 1, 100000, &k->max_keys_per_request);
    qcfg_duration(qcfg_member(o, "key_expiry", 0), 1 * SEC, 30 * 24 * HOUR,
                  &k->key_expiry_ms);
    if (k->key_size % 8 || k->min_key_size % 8 || k->max_key_size % 8)
        qcfg_error_at(r->doc, ks ? ks : mins ? mins : maxs ? maxs : o,
                      "key sizes are multiples of 8 bits");
    else if (k->min_key_size > k->key_size || k->key_size > k->max_key_size)
        qcfg_error_at(r->doc, ks ? ks : mins ? mins : maxs ? maxs : o,
                      "need min_key_size <= key_size <= max_key_size");
    if (k->enabled) {
        need(r, a ? a : o, "cert_file", k->a.cert_file, "when the simulator is enabled");
        need(r, a ? a : o, "key_file", k->a.key_file, "when the simulator is enabled");
        need(r, b ? b : o, "cert_file", k->b.cert_file, "when the simulator is enabled");
        need(r, b ? b : o, "key_file", k->b.key_file, "when the simulator is enabled");
        need(r, o, "ca_file", k->ca_file, "when the simulator is enabled");
    }
    if (k->a.port && k->a.port == k->b.port)
        qcfg_error_at(r->doc, b ? qcfg_member(b, "port", 0) : o,
                      "the two simulated KMEs need different ports");
    if (k->a.kme_id && k->b.kme_id && strcmp(k->a.kme_id, k->b.kme_id) == 0)
        qcfg_error_at(r->doc, b ? b : o, "the two simulated KMEs need different kme_id");
    qcfg_done(o);
}

static void read_root(struct rd *r, qcfg_node *root)
{
    struct qumail_config *c = r->cfg;
    int lvl = (int)c->log_level;
    if (qcfg_enum(qcfg_member(root, "log_level", 0), qumail_config__log_level_names, &lvl) == 1)
        c->log_level = (enum qumail_log_level)lvl;
    qcfg_path(qcfg_member(root, "state_dir", 0), 0, &c->state_dir);
    qcfg_node *smtp = qcfg_object(qcfg_member(root, "smtp", 0));
    if (smtp)
        read_smtp(r, smtp);
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
    qcfg_path(qcfg_member(root, "policy_file", 0), 0, &c->policy_file);
    qcfg_done(root);
}

static int load_doc(struct qcfg *doc, struct qumail_config **cfg_r, char **error_r)
{
    struct rd r = {.doc = doc, .cfg = qumail_config__new_defaults(true)};
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
    r.cfg->file = qumail_config__dup(r.cfg, &r.oom, qcfg_file_name(doc));
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
