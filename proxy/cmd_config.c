/* qumail config dump: the effective configuration (every setting with its
 * value after defaults, paths resolved), as JSON that `qumail proxy
 * --config` reads back unchanged; -n prints only what differs from the
 * built-in defaults (like postconf -n). */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "commands.h"
#include "settings.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail config dump --config FILE [-n]\n"
            "\n"
            "Prints the effective configuration as JSON: every setting, with the\n"
            "built-in default where the file has none and paths made absolute.\n"
            "The output is itself a valid configuration file.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE     daemon configuration (JSON)\n"
            "  -n, --non-default     only settings that differ from the defaults\n"
            "  -h, --help            this help\n"
            "\n"
            "Exit status: 0 printed, 1 the configuration has errors (listed on\n"
            "stderr, as qumail check prints them), 2 usage error.\n");
}

static const char *level_names[] = {"error", "warn", "info", "debug"};

/* "250ms", "30s", "5m", "2h", "1d": the largest unit that is exact. */
static json_t *duration(uint64_t ms)
{
    static const struct { uint64_t ms; const char *unit; } units[] = {
        {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, sizeof(buf), "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
            return json_string(buf);
        }
    }
    snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
    return json_string(buf);
}

/* "25M", "64k", or bytes. */
static json_t *size(uint64_t bytes)
{
    static const struct { uint64_t n; const char *unit; } units[] = {
        {1ull << 30, "G"}, {1ull << 20, "M"}, {1ull << 10, "k"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (bytes != 0 && bytes % units[i].n == 0) {
            snprintf(buf, sizeof(buf), "%" PRIu64 "%s", bytes / units[i].n, units[i].unit);
            return json_string(buf);
        }
    }
    return json_integer((json_int_t)bytes);
}

static json_t *cidr(const struct qumail_cidr *c)
{
    char addr[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];
    if (!inet_ntop(c->family, c->addr, addr, sizeof(addr)))
        return json_string("?");
    snprintf(buf, sizeof(buf), "%s/%u", addr, c->prefix);
    return json_string(buf);
}

/* Sets key to a string, or leaves it out when the value is unset. */
static void set_str(json_t *o, const char *key, const char *value)
{
    if (value)
        json_object_set_new(o, key, json_string(value));
}

static json_t *listeners_json(const struct qumail_listener *ls, size_t n)
{
    json_t *listeners = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct qumail_listener *l = &ls[i];
        json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "name", l->name, "address",
                              l->address, "port", (int)l->port, "tls",
                              qumail_listen_tls_name(l->tls));
        set_str(o, "cert_file", l->cert_file);
        set_str(o, "key_file", l->key_file);
        json_object_set_new(o, "require_tls_for_auth", json_boolean(l->require_tls_for_auth));
        json_array_append_new(listeners, o);
    }
    return listeners;
}

static json_t *upstream_json(const struct qumail_upstream *u, bool imap)
{
    json_t *up = json_pack("{s:s, s:i, s:s, s:b}", "host", u->host, "port", (int)u->port,
                           "tls", qumail_upstream_tls_name(u->tls), "verify", u->verify);
    set_str(up, "ca_file", u->ca_file);
    set_str(up, "server_name", u->server_name);
    set_str(up, "client_cert_file", u->client_cert_file);
    set_str(up, "client_key_file", u->client_key_file);
    json_object_set_new(up, "timeout", duration(u->timeout_ms));
    if (imap)
        json_object_set_new(up, "trust_id", json_boolean(u->trust_id));
    return up;
}

static void conn_limits(json_t *limits, const struct qumail_conn_limits *c)
{
    json_object_set_new(limits, "max_connections", json_integer(c->max_connections));
    /* a per-address default above max_connections has no effect, and a
     * file may not say so: write the value in force */
    uint32_t per = c->max_connections_per_address;
    json_object_set_new(limits, "max_connections_per_address",
                        json_integer(per > c->max_connections ? c->max_connections : per));
    json_object_set_new(limits, "listen_backlog", json_integer(c->listen_backlog));
}

static json_t *smtp_json(const struct qumail_smtp *s)
{
    json_t *nets = json_array();
    for (size_t i = 0; i < s->n_trusted_networks; i++)
        json_array_append_new(nets, cidr(&s->trusted_networks[i]));
    const struct qumail_smtp_limits *lim = &s->limits;
    json_t *limits = json_object();
    json_object_set_new(limits, "max_message_size", size(lim->max_message_size));
    json_object_set_new(limits, "max_recipients", json_integer(lim->max_recipients));
    json_object_set_new(limits, "max_line_length", json_integer(lim->max_line_length));
    json_object_set_new(limits, "command_timeout", duration(lim->command_timeout_ms));
    json_object_set_new(limits, "data_timeout", duration(lim->data_timeout_ms));
    conn_limits(limits, &lim->conn);
    json_t *o = json_object();
    json_object_set_new(o, "mode", json_string(qumail_smtp_mode_name(s->mode)));
    set_str(o, "hostname", s->hostname);
    json_object_set_new(o, "listeners", listeners_json(s->listeners, s->n_listeners));
    json_object_set_new(o, "upstream", upstream_json(&s->upstream, false));
    json_object_set_new(o, "trusted_networks", nets);
    json_object_set_new(o, "limits", limits);
    json_object_set_new(o, "trace_header", json_boolean(s->trace_header));
    return o;
}

static json_t *imap_json(const struct qumail_imap *m)
{
    const struct qumail_imap_limits *lim = &m->limits;
    json_t *limits = json_object();
    json_object_set_new(limits, "max_line_length", json_integer(lim->max_line_length));
    json_object_set_new(limits, "max_literal_size", size(lim->max_literal_size));
    json_object_set_new(limits, "login_timeout", duration(lim->login_timeout_ms));
    json_object_set_new(limits, "command_timeout", duration(lim->command_timeout_ms));
    json_object_set_new(limits, "idle_timeout", duration(lim->idle_timeout_ms));
    conn_limits(limits, &lim->conn);
    json_t *o = json_object();
    json_object_set_new(o, "listeners", listeners_json(m->listeners, m->n_listeners));
    json_object_set_new(o, "upstream", upstream_json(&m->upstream, true));
    json_object_set_new(o, "limits", limits);
    return o;
}

static json_t *sim_node(const struct qumail_kme_sim_node *n)
{
    json_t *o = json_pack("{s:s, s:i}", "kme_id", n->kme_id, "port", (int)n->port);
    set_str(o, "cert_file", n->cert_file);
    set_str(o, "key_file", n->key_file);
    return o;
}

static json_t *config_json(const struct qumail_config *c)
{
    json_t *root = json_object();
    json_object_set_new(root, "log_level", json_string(level_names[c->log_level]));
    set_str(root, "state_dir", c->state_dir);
    json_object_set_new(root, "smtp", smtp_json(&c->smtp));
    if (c->imap.enabled) /* absent: no IMAP side */
        json_object_set_new(root, "imap", imap_json(&c->imap));
    json_t *links = json_object();
    for (size_t i = 0; i < c->n_kme_links; i++) {
        const struct qumail_kme_link *l = &c->kme_links[i];
        json_t *o = json_pack("{s:s}", "url", l->url);
        set_str(o, "ca_file", l->ca_file);
        set_str(o, "cert_file", l->cert_file);
        set_str(o, "key_file", l->key_file);
        json_object_set_new(o, "timeout", duration(l->timeout_ms));
        json_object_set_new(o, "connections", json_integer(l->connections));
        json_object_set_new(links, l->name, o);
    }
    json_object_set_new(root, "kme_links", links);
    const struct qumail_kme_simulator *k = &c->kme_simulator;
    json_t *sim = json_pack("{s:b}", "enabled", k->enabled);
    if (k->config_file) {
        set_str(sim, "config_file", k->config_file);
    } else {
        set_str(sim, "address", k->address);
        json_object_set_new(sim, "a", sim_node(&k->a));
        json_object_set_new(sim, "b", sim_node(&k->b));
        set_str(sim, "ca_file", k->ca_file);
        set_str(sim, "state_path", k->state_path);
        json_object_set_new(sim, "key_rate", json_integer((json_int_t)k->key_rate));
        json_object_set_new(sim, "max_key_count", json_integer(k->max_key_count));
        json_object_set_new(sim, "key_size", json_integer(k->key_size));
        json_object_set_new(sim, "min_key_size", json_integer(k->min_key_size));
        json_object_set_new(sim, "max_key_size", json_integer(k->max_key_size));
        json_object_set_new(sim, "max_keys_per_request", json_integer(k->max_keys_per_request));
        json_object_set_new(sim, "key_expiry", duration(k->key_expiry_ms));
    }
    json_object_set_new(root, "kme_simulator", sim);
    json_t *vault = json_object();
    set_str(vault, "path", c->vault.path);
    set_str(vault, "key_file", c->vault.key_file);
    json_object_set_new(root, "vault", vault);
    if (c->admin.enabled) { /* absent: no admin listener */
        json_t *admin = json_pack("{s:s, s:i}", "address", c->admin.address, "port",
                                  (int)c->admin.port);
        set_str(admin, "mail_host", c->admin.mail_host);
        json_object_set_new(root, "admin", admin);
    }
    set_str(root, "policy_file", c->policy_file);
    return root;
}

/* Members of `have` that differ from `dflt`, recursively for objects
 * (arrays compare whole). NULL when nothing differs. */
static json_t *differences(json_t *have, json_t *dflt)
{
    if (!json_is_object(have) || !json_is_object(dflt))
        return json_equal(have, dflt) ? NULL : json_incref(have);
    json_t *out = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(have, key, v) {
        json_t *d = differences(v, json_object_get(dflt, key));
        if (!d)
            continue;
        if (!out)
            out = json_object();
        json_object_set_new(out, key, d);
    }
    return out;
}

static int dump(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"non-default", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool non_default = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:nh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'n': non_default = true; break;
        case 'h': usage(stdout); return 0;
        default: fprintf(stderr, "usage: qumail config --help\n"); return 2;
        }
    }
    if (!path || optind < argc) {
        fprintf(stderr, "qumail config dump: %s\n",
                path ? "unexpected argument" : "--config FILE is required");
        return 2;
    }
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    if (qumail_config_load(path, &cfg, &err) < 0) {
        fprintf(stderr, "%s\n", err ? err : "cannot load the configuration");
        free(err);
        return 1;
    }
    json_t *j = config_json(cfg);
    if (non_default) {
        struct qumail_config *dflt = qumail_config_defaults();
        json_t *dj = dflt ? config_json(dflt) : json_object();
        json_t *diff = differences(j, dj);
        json_decref(dj);
        qumail_config_free(&dflt);
        json_decref(j);
        j = diff ? diff : json_object();
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    qumail_config_free(&cfg);
    if (!text)
        return 1;
    puts(text);
    free(text);
    return 0;
}

int cmd_config(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "dump") == 0)
        return dump(argc - 1, argv + 1);
    fprintf(stderr, "qumail config: %s\nusage: qumail config --help\n",
            argc < 2 ? "an action is required (dump)" : "unknown action (dump)");
    return 2;
}
