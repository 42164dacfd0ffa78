/* The daemon configuration: built-in defaults, derived defaults, freeing,
 * lookups. Reading the JSON is in settings_read.c and the files beside it. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings_internal.h"

char *qumail_config__dup(bool *oom, const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static char *join_path(bool *oom, const char *dir, const char *file)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, file) < 0) {
        *oom = true;
        return NULL;
    }
    return p;
}

bool qumail_config__is_loopback(const char *address)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, address, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, address, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a, one, 16) == 0;
    }
    return false;
}

struct qumail_config *qumail_config__new_defaults(bool with_listener)
{
    struct qumail_config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    bool oom = false;
    c->log_level = QUMAIL_LOG_INFO;
    c->state_dir = qumail_config__dup(&oom, "/var/lib/qumail");

    struct qumail_smtp *s = &c->smtp;
    s->mode = QUMAIL_SMTP_SUBMISSION;
    char host[256];
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    s->hostname = qumail_config__dup(&oom, host);
    if (with_listener) {
        s->listeners = calloc(1, sizeof(*s->listeners));
        if (!s->listeners) {
            oom = true;
        } else {
            s->n_listeners = 1;
            s->listeners[0].name = qumail_config__dup(&oom, "submission");
            s->listeners[0].address = qumail_config__dup(&oom, "127.0.0.1");
            s->listeners[0].port = 2587;
            s->listeners[0].tls = QUMAIL_LISTEN_TLS_NONE;
            s->listeners[0].require_tls_for_auth = false; /* loopback */
        }
    }
    s->upstream.host = qumail_config__dup(&oom, "127.0.0.1");
    s->upstream.port = 0; /* derived from mode and tls */
    s->upstream.tls = QUMAIL_UPSTREAM_TLS_STARTTLS;
    s->upstream.verify = true;
    s->upstream.timeout_ms = 5 * MIN;
    s->limits.conn.max_connections = 100;
    s->limits.conn.max_connections_per_address = 50;
    s->limits.conn.listen_backlog = 511;
    s->limits.max_message_size = 25u << 20;
    s->limits.max_recipients = 100;
    s->limits.max_line_length = 4096;
    s->limits.command_timeout_ms = 300000;
    s->limits.data_timeout_ms = 600000;
    s->trace_header = true;

    qumail_config__imap_defaults(c, &oom);

    struct qumail_kme_simulator *k = &c->kme_simulator;
    k->enabled = false;
    k->address = qumail_config__dup(&oom, "127.0.0.1");
    k->a.kme_id = qumail_config__dup(&oom, "kme-a");
    k->a.port = 8481;
    k->b.kme_id = qumail_config__dup(&oom, "kme-b");
    k->b.port = 8482;
    k->key_rate = 100000;
    k->max_key_count = 10000;
    k->key_size = 256;
    k->min_key_size = 64;
    k->max_key_size = 65536;
    k->max_keys_per_request = 128;
    k->key_expiry_ms = 3600000;
    k->redeliver_ms = 300000;

    if (oom)
        qumail_config_free(&c);
    return c;
}

int qumail_config__finish(struct qumail_config *c)
{
    bool oom = false;
    struct qumail_smtp *s = &c->smtp;
    if (s->n_trusted_networks == 0 && !s->trusted_networks) {
        s->trusted_networks = calloc(2, sizeof(*s->trusted_networks));
        if (!s->trusted_networks)
            return -1;
        const char *why;
        qumail_cidr_parse("127.0.0.0/8", &s->trusted_networks[0], &why);
        qumail_cidr_parse("::1/128", &s->trusted_networks[1], &why);
        s->n_trusted_networks = 2;
    }
    if (s->upstream.port == 0) {
        if (s->upstream.tls == QUMAIL_UPSTREAM_TLS_IMPLICIT)
            s->upstream.port = 465;
        else
            s->upstream.port = s->mode == QUMAIL_SMTP_GATEWAY ? 25 : 587;
    }
    if (!s->upstream.server_name)
        s->upstream.server_name = qumail_config__dup(&oom, s->upstream.host);
    struct qumail_upstream *iu = &c->imap.upstream;
    if (iu->port == 0)
        iu->port = iu->tls == QUMAIL_UPSTREAM_TLS_IMPLICIT ? 993 : 143;
    if (!iu->server_name)
        iu->server_name = qumail_config__dup(&oom, iu->host);
    qumail_config__imap_finish(c, &oom);
    if (!c->vault.path)
        c->vault.path = join_path(&oom, c->state_dir, "vault.sqlite");
    if (!c->vault.key_file)
        c->vault.key_file = join_path(&oom, c->state_dir, "vault.key");
    if (!c->kme_simulator.state_path)
        c->kme_simulator.state_path = join_path(&oom, c->state_dir, "kme-sim.sqlite");
    return oom ? -1 : 0;
}

struct qumail_config *qumail_config_defaults(void)
{
    struct qumail_config *c = qumail_config__new_defaults(true);
    if (c && qumail_config__finish(c) < 0)
        qumail_config_free(&c);
    return c;
}

void qumail_config__free_listener(struct qumail_listener *l)
{
    free(l->name);
    free(l->address);
    free(l->cert_file);
    free(l->key_file);
}

void qumail_config__free_upstream(struct qumail_upstream *u)
{
    free(u->host);
    free(u->ca_file);
    free(u->server_name);
    free(u->client_cert_file);
    free(u->client_key_file);
}

void qumail_config__free_link(struct qumail_kme_link *l)
{
    free(l->name);
    free(l->url);
    free(l->host);
    free(l->path_prefix);
    free(l->ca_file);
    free(l->cert_file);
    free(l->key_file);
    free(l->ksid);
    free(l->source);
    free(l->destination);
}

void qumail_config_free(struct qumail_config **cfgp)
{
    struct qumail_config *c = cfgp ? *cfgp : NULL;
    if (!c)
        return;
    *cfgp = NULL;
    free(c->file);
    free(c->state_dir);
    struct qumail_smtp *s = &c->smtp;
    free(s->hostname);
    for (size_t i = 0; i < s->n_listeners; i++)
        qumail_config__free_listener(&s->listeners[i]);
    free(s->listeners);
    qumail_config__free_upstream(&s->upstream);
    free(s->trusted_networks);
    for (size_t i = 0; i < c->imap.n_listeners; i++)
        qumail_config__free_listener(&c->imap.listeners[i]);
    free(c->imap.listeners);
    qumail_config__free_upstream(&c->imap.upstream);
    for (size_t i = 0; i < c->imap.decrypt.n_addresses; i++) {
        free(c->imap.decrypt.addresses[i].login);
        free(c->imap.decrypt.addresses[i].address);
    }
    free(c->imap.decrypt.addresses);
    free(c->imap.decrypt.default_domain);
    for (size_t i = 0; i < c->imap.n_protect_mailboxes; i++)
        free(c->imap.protect_mailboxes[i]);
    free(c->imap.protect_mailboxes);
    for (size_t i = 0; i < c->n_kme_links; i++)
        qumail_config__free_link(&c->kme_links[i]);
    free(c->kme_links);
    struct qumail_kme_simulator *k = &c->kme_simulator;
    free(k->address);
    free(k->config_file);
    free(k->a.kme_id);
    free(k->a.cert_file);
    free(k->a.key_file);
    free(k->b.kme_id);
    free(k->b.cert_file);
    free(k->b.key_file);
    free(k->ca_file);
    free(k->state_path);
    free(c->vault.path);
    free(c->vault.key_file);
    free(c->admin.address);
    free(c->admin.mail_host);
    free(c->policy_file);
    free(c);
}

const struct qumail_kme_link *qumail_config_link(const struct qumail_config *cfg,
                                                 const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_kme_links; i++) {
        if (strcmp(cfg->kme_links[i].name, name) == 0)
            return &cfg->kme_links[i];
    }
    return NULL;
}

bool qumail_config_trusted(const struct qumail_config *cfg, const struct sockaddr *addr)
{
    if (!cfg)
        return false;
    for (size_t i = 0; i < cfg->smtp.n_trusted_networks; i++) {
        if (qumail_cidr_contains(&cfg->smtp.trusted_networks[i], addr))
            return true;
    }
    return false;
}

const char *const qumail_config__listen_tls_names[] = {"none", "starttls", "implicit", NULL};
const char *const qumail_config__upstream_tls_names[] = {
    "none", "starttls", "starttls-opportunistic", "implicit", NULL};
const char *const qumail_config__mode_names[] = {"submission", "gateway", NULL};
const char *const qumail_config__log_level_names[] = {"error", "warn", "info", "debug", NULL};

const char *qumail_listen_tls_name(enum qumail_listen_tls tls)
{
    return (unsigned)tls < 3 ? qumail_config__listen_tls_names[tls] : "?";
}

const char *qumail_upstream_tls_name(enum qumail_upstream_tls tls)
{
    return (unsigned)tls < 4 ? qumail_config__upstream_tls_names[tls] : "?";
}

const char *qumail_smtp_mode_name(enum qumail_smtp_mode mode)
{
    return (unsigned)mode < 2 ? qumail_config__mode_names[mode] : "?";
}
