/* What every protocol section of the daemon configuration has: listeners,
 * an upstream server, connection limits; and the value checks. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings_internal.h"

bool qumail_config__numeric_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* A host name or an IP address: letters, digits, '-', '.', ':' (IPv6). */
bool qumail_config__valid_host(const char *s)
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
bool qumail_config__valid_name(const char *s)
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

void qumail_config__u32(qcfg_node *n, int64_t min, int64_t max, uint32_t *out)
{
    int64_t v;
    if (qcfg_int(n, min, max, &v) == 1)
        *out = (uint32_t)v;
}

void qumail_config__need(struct qumail_rd *r, qcfg_node *obj, const char *key,
                         const char *val, const char *why)
{
    if (!val) {
        qcfg_node *m = qcfg_member(obj, key, 0);
        qcfg_error_at(r->doc, m ? m : obj, "'%s' is required %s", key, why);
    }
}

/* ---- listeners -------------------------------------------------------- */

static void read_listener(struct qumail_rd *r, qcfg_node *o, struct qumail_listener *l)
{
    qcfg_node *name = qcfg_member(o, "name", QCFG_REQUIRED);
    if (qcfg_string(name, QCFG_NONEMPTY, &l->name) == 1 &&
        !qumail_config__valid_name(l->name))
        qcfg_error_at(r->doc, name, "listener names use letters, digits, '-', '_' and '.'");
    qcfg_node *addr = qcfg_member(o, "address", 0);
    if (qcfg_string(addr, QCFG_NONEMPTY, &l->address) == 1 &&
        !qumail_config__numeric_ip(l->address))
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
        qumail_config__need(r, o, "cert_file", l->cert_file, why);
        qumail_config__need(r, o, "key_file", l->key_file, why);
    } else if (l->require_tls_for_auth && qcfg_member(o, "require_tls_for_auth", 0)) {
        qcfg_error_at(r->doc, qcfg_member(o, "require_tls_for_auth", 0),
                      "true with tls 'none' would make authentication impossible");
    }
    qcfg_done(o);
}

void qumail_config__read_listeners(struct qumail_rd *r, qcfg_node *section,
                                   struct qumail_listener **listeners,
                                   size_t *n_listeners)
{
    qcfg_node *arr = qcfg_array(qcfg_member(section, "listeners", 0));
    if (!arr)
        return;
    size_t n = qcfg_array_len(arr);
    if (n == 0) {
        qcfg_error_at(r->doc, arr, "at least one listener is needed");
        return;
    }
    if (n > 64) {
        qcfg_error_at(r->doc, arr, "at most 64 listeners");
        return;
    }
    for (size_t i = 0; i < *n_listeners; i++)
        qumail_config__free_listener(&(*listeners)[i]);
    free(*listeners);
    *n_listeners = 0;
    *listeners = calloc(n, sizeof(**listeners));
    if (!*listeners) {
        r->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct qumail_listener *l = &(*listeners)[i];
        (*n_listeners)++;
        l->address = qumail_config__dup(&r->oom, "127.0.0.1");
        l->tls = QUMAIL_LISTEN_TLS_NONE;
        qcfg_node *o = qcfg_object(qcfg_array_at(arr, i));
        if (!o)
            continue;
        read_listener(r, o, l);
        for (size_t j = 0; j < i; j++) {
            struct qumail_listener *p = &(*listeners)[j];
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

/* ---- upstream ----------------------------------------------------------- */

void qumail_config__read_upstream(struct qumail_rd *r, qcfg_node *o,
                                  struct qumail_upstream *u,
                                  const char *const *tls_names,
                                  const enum qumail_upstream_tls *tls_values,
                                  bool with_trust_id)
{
    qcfg_node *host = qcfg_member(o, "host", 0);
    if (qcfg_string(host, QCFG_NONEMPTY, &u->host) == 1 && !qumail_config__valid_host(u->host))
        qcfg_error_at(r->doc, host, "'%s' is not a host name or IP address", u->host);
    qcfg_port(qcfg_member(o, "port", 0), 0, &u->port);
    int tls;
    if (qcfg_enum(qcfg_member(o, "tls", 0), tls_names, &tls) == 1)
        u->tls = tls_values[tls];
    qcfg_bool(qcfg_member(o, "verify", 0), &u->verify);
    qcfg_path(qcfg_member(o, "ca_file", 0), 0, &u->ca_file);
    qcfg_node *sn = qcfg_member(o, "server_name", 0);
    if (qcfg_string(sn, QCFG_NONEMPTY, &u->server_name) == 1 &&
        !qumail_config__valid_host(u->server_name))
        qcfg_error_at(r->doc, sn, "'%s' is not a host name", u->server_name);
    qcfg_path(qcfg_member(o, "client_cert_file", 0), 0, &u->client_cert_file);
    qcfg_path(qcfg_member(o, "client_key_file", 0), 0, &u->client_key_file);
    if (!u->client_cert_file != !u->client_key_file)
        qcfg_error_at(r->doc, o, "client_cert_file and client_key_file go together");
    qcfg_duration(qcfg_member(o, "timeout", 0), 1 * SEC, 1 * HOUR, &u->timeout_ms);
    if (with_trust_id)
        qcfg_bool(qcfg_member(o, "trust_id", 0), &u->trust_id);
}

/* ---- connection limits ---------------------------------------------------- */

void qumail_config__read_conn_limits(struct qumail_rd *r, qcfg_node *limits,
                                     struct qumail_conn_limits *l)
{
    qumail_config__u32(qcfg_member(limits, "max_connections", 0), 1, 1000000,
                       &l->max_connections);
    qcfg_node *per = qcfg_member(limits, "max_connections_per_address", 0);
    qumail_config__u32(per, 0, 1000000, &l->max_connections_per_address);
    qumail_config__u32(qcfg_member(limits, "listen_backlog", 0), 1, 65535,
                       &l->listen_backlog);
    if (per && l->max_connections_per_address > l->max_connections)
        qcfg_error_at(r->doc, per, "%u is more than max_connections (%u)",
                      l->max_connections_per_address, l->max_connections);
}
