/* The daemon configuration: defaults, a full file, every validation. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "settings.h"

static struct qumail_config *load_ok(const char *text)
{
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    int rc = qumail_config_load_buffer("d.json", "/etc/qumail", text, strlen(text), &cfg, &err);
    if (rc != 0)
        fail_msg("unexpected errors:\n%s", err ? err : "?");
    return cfg;
}

/* Loads text expecting failure; returns the joined errors (caller frees). */
static char *load_bad(const char *text)
{
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    int rc = qumail_config_load_buffer("d.json", "/etc/qumail", text, strlen(text), &cfg, &err);
    assert_int_not_equal(rc, 0);
    assert_null(cfg);
    assert_non_null(err);
    return err;
}

static void expect_lines(char *err, const char *const *want)
{
    size_t n = 0;
    for (const char *p = err; p && *p; n++) {
        const char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : NULL;
    }
    size_t w = 0;
    while (want[w])
        w++;
    if (n != w)
        fail_msg("expected %zu errors, got %zu:\n%s", w, n, err);
    const char *p = err;
    for (size_t i = 0; i < w; i++) {
        size_t len = strcspn(p, "\n");
        if (strlen(want[i]) != len || strncmp(p, want[i], len) != 0)
            fail_msg("error %zu:\n got  %.*s\n want %s", i, (int)len, p, want[i]);
        p += len + 1;
    }
    free(err);
}

static void test_defaults(void **state)
{
    struct qumail_config *c = qumail_config_defaults();
    assert_non_null(c);
    assert_null(c->file);
    assert_int_equal(c->log_level, QUMAIL_LOG_INFO);
    assert_string_equal(c->state_dir, "/var/lib/qumail");
    assert_int_equal(c->smtp.mode, QUMAIL_SMTP_SUBMISSION);
    assert_int_equal(c->smtp.n_listeners, 1);
    assert_string_equal(c->smtp.listeners[0].address, "127.0.0.1");
    assert_int_equal(c->smtp.listeners[0].port, 2587);
    assert_false(c->smtp.listeners[0].require_tls_for_auth);
    assert_string_equal(c->smtp.upstream.host, "127.0.0.1");
    assert_int_equal(c->smtp.upstream.port, 587);
    assert_int_equal(c->smtp.upstream.tls, QUMAIL_UPSTREAM_TLS_STARTTLS);
    assert_true(c->smtp.upstream.verify);
    assert_string_equal(c->smtp.upstream.server_name, "127.0.0.1");
    assert_int_equal(c->smtp.limits.max_message_size, 25u << 20);
    assert_int_equal(c->smtp.limits.command_timeout_ms, 300000);
    assert_int_equal(c->smtp.limits.conn.max_connections, 100);
    assert_int_equal(c->smtp.limits.conn.max_connections_per_address, 50);
    assert_int_equal(c->smtp.limits.conn.listen_backlog, 511);
    assert_true(c->smtp.trace_header);
    assert_false(c->imap.enabled); /* no imap section: no IMAP listener */
    assert_int_equal(c->imap.n_listeners, 0);
    assert_int_equal(c->n_kme_links, 0);
    assert_false(c->kme_simulator.enabled);
    assert_string_equal(c->vault.path, "/var/lib/qumail/vault.sqlite");
    assert_string_equal(c->kme_simulator.state_path, "/var/lib/qumail/kme-sim.sqlite");
    assert_null(c->policy_file);
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.9", &in.sin_addr);
    assert_true(qumail_config_trusted(c, (struct sockaddr *)&in));
    inet_pton(AF_INET, "10.0.0.1", &in.sin_addr);
    assert_false(qumail_config_trusted(c, (struct sockaddr *)&in));
    qumail_config_free(&c);
    assert_null(c);

    /* an empty object is the defaults too, with paths under state_dir */
    c = load_ok("{\"state_dir\": \"state\"}");
    assert_string_equal(c->file, "d.json");
    assert_string_equal(c->state_dir, "/etc/qumail/state");
    assert_string_equal(c->vault.key_file, "/etc/qumail/state/vault.key");
    assert_int_equal(c->smtp.n_listeners, 1);
    qumail_config_free(&c);

    /* an empty imap section: one loopback listener, the IMAP defaults */
    c = load_ok("{\"imap\": {}}");
    assert_true(c->imap.enabled);
    assert_int_equal(c->imap.n_listeners, 1);
    assert_string_equal(c->imap.listeners[0].name, "imap");
    assert_string_equal(c->imap.listeners[0].address, "127.0.0.1");
    assert_int_equal(c->imap.listeners[0].port, 2143);
    assert_int_equal(c->imap.listeners[0].tls, QUMAIL_LISTEN_TLS_NONE);
    assert_false(c->imap.listeners[0].require_tls_for_auth);
    assert_string_equal(c->imap.upstream.host, "127.0.0.1");
    assert_int_equal(c->imap.upstream.port, 143);
    assert_int_equal(c->imap.upstream.tls, QUMAIL_UPSTREAM_TLS_STARTTLS);
    assert_true(c->imap.upstream.verify);
    assert_false(c->imap.upstream.trust_id);
    assert_int_equal(c->imap.limits.conn.max_connections, 1000);
    assert_int_equal(c->imap.limits.conn.max_connections_per_address, 100);
    assert_int_equal(c->imap.limits.conn.listen_backlog, 511);
    assert_int_equal(c->imap.limits.max_line_length, 65536);
    assert_int_equal(c->imap.limits.max_literal_size, 64u << 20);
    assert_int_equal(c->imap.limits.login_timeout_ms, 180000);
    assert_int_equal(c->imap.limits.command_timeout_ms, 300000);
    assert_int_equal(c->imap.limits.idle_timeout_ms, 1800000);
    qumail_config_free(&c);
}

static void test_imap_errors(void **state)
{
    char *err = load_bad(
        "{\n"
        "  \"smtp\": {\"listeners\": [{\"name\": \"s\", \"port\": 2143}],\n"
        "           \"upstream\": {\"trust_id\": true},\n"
        "           \"limits\": {\"max_connections\": 10, \"max_connections_per_address\": 11,\n"
        "                      \"listen_backlog\": 0}},\n"
        "  \"imap\": {\n"
        "    \"listeners\": [{\"name\": \"i\", \"port\": 2143, \"tls\": \"implicit\"}],\n"
        "    \"upstream\": {\"tls\": \"starttls-opportunistic\", \"client_key_file\": \"k\"},\n"
        "    \"limits\": {\"idle_timeout\": \"29m\", \"max_literal_size\": 10,\n"
        "               \"max_line_length\": 999, \"login_timeout\": 0, \"max_lines\": 1},\n"
        "    \"hostname\": \"x\"\n"
        "  }\n"
        "}\n");
    static const char *const want[] = {
        "d.json:3:25: key 'smtp.upstream.trust_id': unknown key",
        "d.json:4:77: key 'smtp.limits.max_connections_per_address': 11 is more than max_connections (10)",
        "d.json:5:41: key 'smtp.limits.listen_backlog': 0 is out of range (1..65535)",
        "d.json:7:19: key 'imap.listeners[0]': 'cert_file' is required when tls is 'implicit'",
        "d.json:7:19: key 'imap.listeners[0]': 'key_file' is required when tls is 'implicit'",
        "d.json:7:41: key 'imap.listeners[0].port': 127.0.0.1 port 2143 is used by smtp listener 's' too",
        "d.json:8:17: key 'imap.upstream': client_cert_file and client_key_file go together",
        "d.json:8:25: key 'imap.upstream.tls': 'starttls-opportunistic' is not one of: none, starttls, implicit",
        "d.json:9:32: key 'imap.limits.idle_timeout': duration out of range (1800000ms..86400000ms)",
        "d.json:9:59: key 'imap.limits.max_literal_size': size out of range (1024..4294967296 bytes)",
        "d.json:10:35: key 'imap.limits.max_line_length': 999 is out of range (1000..16777216)",
        "d.json:10:57: key 'imap.limits.login_timeout': duration out of range (1000ms..3600000ms)",
        "d.json:10:60: key 'imap.limits.max_lines': unknown key",
        "d.json:11:5: key 'imap.hostname': unknown key",
        NULL,
    };
    expect_lines(err, want);
}

static const char full[] =
    "{\n"
    "  \"log_level\": \"debug\",\n"
    "  \"state_dir\": \"/srv/q\",\n"
    "  \"smtp\": {\n"
    "    \"mode\": \"gateway\",\n"
    "    \"hostname\": \"gw.example.org\",\n"
    "    \"listeners\": [\n"
    "      {\"name\": \"in\", \"address\": \"0.0.0.0\", \"port\": 10025},\n"
    "      {\"name\": \"tls\", \"address\": \"::1\", \"port\": 10465, \"tls\": \"implicit\",\n"
    "       \"cert_file\": \"c.pem\", \"key_file\": \"k.pem\", \"require_tls_for_auth\": false}\n"
    "    ],\n"
    "    \"upstream\": {\"host\": \"mx.example.org\", \"tls\": \"starttls-opportunistic\",\n"
    "                 \"verify\": false, \"ca_file\": \"/ca.pem\", \"timeout\": \"2m\",\n"
    "                 \"client_cert_file\": \"cc.pem\", \"client_key_file\": \"ck.pem\"},\n"
    "    \"trusted_networks\": [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"],\n"
    "    \"limits\": {\"max_message_size\": \"50M\", \"max_recipients\": 500,\n"
    "               \"max_line_length\": 2000, \"command_timeout\": 60,\n"
    "               \"data_timeout\": \"20m\", \"max_connections\": 1000,\n"
    "               \"max_connections_per_address\": 10, \"listen_backlog\": 128},\n"
    "    \"trace_header\": false\n"
    "  },\n"
    "  \"imap\": {\n"
    "    \"listeners\": [\n"
    "      {\"name\": \"imaps\", \"address\": \"0.0.0.0\", \"port\": 993, \"tls\": \"implicit\",\n"
    "       \"cert_file\": \"c.pem\", \"key_file\": \"k.pem\"},\n"
    "      {\"name\": \"in\", \"port\": 1143, \"tls\": \"starttls\", \"cert_file\": \"c.pem\",\n"
    "       \"key_file\": \"k.pem\", \"require_tls_for_auth\": true}\n"
    "    ],\n"
    "    \"upstream\": {\"host\": \"imap.example.org\", \"tls\": \"implicit\", \"ca_file\": \"ca.pem\",\n"
    "                 \"trust_id\": true, \"timeout\": \"1m\"},\n"
    "    \"limits\": {\"max_connections\": 5000, \"max_connections_per_address\": 20,\n"
    "               \"listen_backlog\": 1024, \"max_line_length\": 100000,\n"
    "               \"max_literal_size\": \"100M\", \"login_timeout\": \"1m\",\n"
    "               \"command_timeout\": \"2m\", \"idle_timeout\": \"31m\"}\n"
    "  },\n"
    "  \"kme_links\": {\n"
    "    \"site-b\": {\"url\": \"https://kme-b.example.org:8443/\", \"ca_file\": \"ca.pem\",\n"
    "                \"cert_file\": \"sae.pem\", \"key_file\": \"sae.key\",\n"
    "                \"timeout\": \"5s\", \"connections\": 8},\n"
    "    \"v6\": {\"url\": \"https://[::1]/qkd\", \"cert_file\": \"s\", \"key_file\": \"k\"}\n"
    "  },\n"
    "  \"kme_simulator\": {\"enabled\": true, \"ca_file\": \"ca.pem\",\n"
    "    \"a\": {\"kme_id\": \"A\", \"port\": 0, \"cert_file\": \"a.pem\", \"key_file\": \"a.key\"},\n"
    "    \"b\": {\"kme_id\": \"B\", \"port\": 0, \"cert_file\": \"b.pem\", \"key_file\": \"b.key\"},\n"
    "    \"key_rate\": 5000, \"max_key_count\": 50, \"key_size\": 512,\n"
    "    \"max_keys_per_request\": 16, \"key_expiry\": \"10m\"},\n"
    "  \"vault\": {\"path\": \"v.db\"},\n"
    "  \"policy_file\": \"policy.txt\"\n"
    "}\n";

static void test_full(void **state)
{
    struct qumail_config *c = load_ok(full);
    assert_int_equal(c->log_level, QUMAIL_LOG_DEBUG);
    assert_int_equal(c->smtp.mode, QUMAIL_SMTP_GATEWAY);
    assert_string_equal(c->smtp.hostname, "gw.example.org");
    assert_int_equal(c->smtp.n_listeners, 2);
    assert_string_equal(c->smtp.listeners[0].name, "in");
    assert_true(c->smtp.listeners[0].require_tls_for_auth); /* not loopback */
    assert_int_equal(c->smtp.listeners[1].tls, QUMAIL_LISTEN_TLS_IMPLICIT);
    assert_string_equal(c->smtp.listeners[1].cert_file, "/etc/qumail/c.pem");
    assert_false(c->smtp.listeners[1].require_tls_for_auth);
    assert_int_equal(c->smtp.upstream.port, 25); /* gateway default */
    assert_int_equal(c->smtp.upstream.tls, QUMAIL_UPSTREAM_TLS_STARTTLS_OPPORTUNISTIC);
    assert_false(c->smtp.upstream.verify);
    assert_string_equal(c->smtp.upstream.server_name, "mx.example.org");
    assert_int_equal(c->smtp.upstream.timeout_ms, 120000);
    assert_int_equal(c->smtp.n_trusted_networks, 3);
    assert_int_equal(c->smtp.limits.max_message_size, 50u << 20);
    assert_int_equal(c->smtp.limits.command_timeout_ms, 60000);
    assert_int_equal(c->smtp.limits.data_timeout_ms, 1200000);
    assert_int_equal(c->smtp.limits.conn.max_connections, 1000);
    assert_int_equal(c->smtp.limits.conn.max_connections_per_address, 10);
    assert_int_equal(c->smtp.limits.conn.listen_backlog, 128);
    assert_false(c->smtp.trace_header);
    assert_true(c->imap.enabled);
    assert_int_equal(c->imap.n_listeners, 2);
    assert_string_equal(c->imap.listeners[0].name, "imaps");
    assert_int_equal(c->imap.listeners[0].tls, QUMAIL_LISTEN_TLS_IMPLICIT);
    assert_true(c->imap.listeners[0].require_tls_for_auth);
    assert_string_equal(c->imap.listeners[1].address, "127.0.0.1");
    assert_int_equal(c->imap.listeners[1].tls, QUMAIL_LISTEN_TLS_STARTTLS);
    assert_true(c->imap.listeners[1].require_tls_for_auth);
    assert_string_equal(c->imap.upstream.host, "imap.example.org");
    assert_int_equal(c->imap.upstream.port, 993);
    assert_int_equal(c->imap.upstream.tls, QUMAIL_UPSTREAM_TLS_IMPLICIT);
    assert_true(c->imap.upstream.verify);
    assert_true(c->imap.upstream.trust_id);
    assert_string_equal(c->imap.upstream.ca_file, "/etc/qumail/ca.pem");
    assert_string_equal(c->imap.upstream.server_name, "imap.example.org");
    assert_int_equal(c->imap.upstream.timeout_ms, 60000);
    assert_int_equal(c->imap.limits.conn.max_connections, 5000);
    assert_int_equal(c->imap.limits.conn.max_connections_per_address, 20);
    assert_int_equal(c->imap.limits.conn.listen_backlog, 1024);
    assert_int_equal(c->imap.limits.max_line_length, 100000);
    assert_int_equal(c->imap.limits.max_literal_size, 100u << 20);
    assert_int_equal(c->imap.limits.login_timeout_ms, 60000);
    assert_int_equal(c->imap.limits.command_timeout_ms, 120000);
    assert_int_equal(c->imap.limits.idle_timeout_ms, 31 * 60000);
    assert_int_equal(c->n_kme_links, 2);
    const struct qumail_kme_link *l = qumail_config_link(c, "site-b");
    assert_non_null(l);
    assert_string_equal(l->url, "https://kme-b.example.org:8443");
    assert_string_equal(l->host, "kme-b.example.org");
    assert_int_equal(l->port, 8443);
    assert_string_equal(l->path_prefix, "");
    assert_int_equal(l->connections, 8);
    assert_int_equal(l->timeout_ms, 5000);
    l = qumail_config_link(c, "v6");
    assert_string_equal(l->host, "::1");
    assert_int_equal(l->port, 443);
    assert_string_equal(l->path_prefix, "/qkd");
    assert_null(l->ca_file);
    assert_int_equal(l->connections, 4);
    assert_null(qumail_config_link(c, "nope"));
    assert_true(c->kme_simulator.enabled);
    assert_int_equal(c->kme_simulator.key_size, 512);
    assert_string_equal(c->kme_simulator.state_path, "/srv/q/kme-sim.sqlite");
    assert_string_equal(c->vault.path, "/etc/qumail/v.db");
    assert_string_equal(c->vault.key_file, "/srv/q/vault.key");
    assert_string_equal(c->policy_file, "/etc/qumail/policy.txt");

    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1::5", &in6.sin6_addr);
    assert_true(qumail_config_trusted(c, (struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:10.9.8.7", &in6.sin6_addr);
    assert_true(qumail_config_trusted(c, (struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:192.0.2.8", &in6.sin6_addr);
    assert_false(qumail_config_trusted(c, (struct sockaddr *)&in6));
    qumail_config_free(&c);
}

static void test_errors(void **state)
{
    char *err = load_bad(
        "{\n"
        "  \"log_level\": \"loud\",\n"
        "  \"smtp\": {\n"
        "    \"mode\": \"relay\",\n"
        "    \"listeners\": [\n"
        "      {\"name\": \"a\", \"address\": \"localhost\", \"port\": 25, \"tls\": \"starttls\"},\n"
        "      {\"name\": \"a\", \"port\": 70000, \"colour\": 1},\n"
        "      {\"port\": 26, \"tls\": \"none\", \"require_tls_for_auth\": true}\n"
        "    ],\n"
        "    \"upstream\": {\"host\": \"bad host\", \"client_cert_file\": \"x\", \"timeout\": \"0s\"},\n"
        "    \"trusted_networks\": [\"10.0.0.0/33\", \"nonsense\", 5],\n"
        "    \"limits\": {\"max_line_length\": 80, \"max_message_size\": \"1T\"}\n"
        "  },\n"
        "  \"kme_links\": {\n"
        "    \"bad name\": {\"url\": \"http://kme\", \"cert_file\": \"c\", \"key_file\": \"k\"},\n"
        "    \"b\": {\"url\": \"https://kme:99999\"},\n"
        "    \"c\": 5\n"
        "  },\n"
        "  \"kme_simulator\": {\"enabled\": true, \"key_size\": 100,\n"
        "                    \"a\": {\"port\": 9000}, \"b\": {\"port\": 9000}},\n"
        "  \"vault\": {\"pth\": \"x\"},\n"
        "  \"policy_file\": \"\",\n"
        "  \"extra\": true\n"
        "}\n");
    static const char *const want[] = {
        "d.json:2:16: key 'log_level': 'loud' is not one of: error, warn, info, debug",
        "d.json:4:13: key 'smtp.mode': 'relay' is not one of: submission, gateway",
        "d.json:6:7: key 'smtp.listeners[0]': 'cert_file' is required when tls is 'starttls'",
        "d.json:6:7: key 'smtp.listeners[0]': 'key_file' is required when tls is 'starttls'",
        "d.json:6:32: key 'smtp.listeners[0].address': 'localhost' is not a numeric IP address",
        "d.json:7:16: key 'smtp.listeners[1].name': listener name 'a' is used twice",
        "d.json:7:29: key 'smtp.listeners[1].port': port 70000 is out of range (0..65535)",
        "d.json:7:36: key 'smtp.listeners[1].colour': unknown key",
        "d.json:8:7: key 'smtp.listeners[2].name': missing required key",
        "d.json:8:59: key 'smtp.listeners[2].require_tls_for_auth': true with tls 'none' would make authentication impossible",
        "d.json:10:17: key 'smtp.upstream': client_cert_file and client_key_file go together",
        "d.json:10:26: key 'smtp.upstream.host': 'bad host' is not a host name or IP address",
        "d.json:10:74: key 'smtp.upstream.timeout': duration out of range (1000ms..3600000ms)",
        "d.json:11:26: key 'smtp.trusted_networks[0]': '10.0.0.0/33': prefix length too large",
        "d.json:11:41: key 'smtp.trusted_networks[1]': 'nonsense': not an IP address",
        "d.json:11:53: key 'smtp.trusted_networks[2]': expected a string, got an integer",
        "d.json:12:35: key 'smtp.limits.max_line_length': 80 is out of range (1000..1048576)",
        "d.json:12:59: key 'smtp.limits.max_message_size': invalid size '1T': unknown unit (use k, M or G, optionally with B or iB)",
        "d.json:15:5: key 'kme_links[\"bad name\"]': link names use letters, digits, '-', '_' and '.' (at most 64)",
        "d.json:15:25: key 'kme_links[\"bad name\"].url': must start with https:// (ETSI 014 runs over mutual TLS)",
        "d.json:16:10: key 'kme_links.b.cert_file': missing required key",
        "d.json:16:10: key 'kme_links.b.key_file': missing required key",
        "d.json:16:18: key 'kme_links.b.url': bad port in URL",
        "d.json:17:10: key 'kme_links.c': expected an object, got an integer",
        "d.json:19:20: key 'kme_simulator': 'ca_file' is required when the simulator is enabled",
        "d.json:19:50: key 'kme_simulator.key_size': key sizes are multiples of 8 bits",
        "d.json:20:26: key 'kme_simulator.a': 'cert_file' is required when the simulator is enabled",
        "d.json:20:26: key 'kme_simulator.a': 'key_file' is required when the simulator is enabled",
        "d.json:20:47: key 'kme_simulator.b': 'cert_file' is required when the simulator is enabled",
        "d.json:20:47: key 'kme_simulator.b': 'key_file' is required when the simulator is enabled",
        "d.json:20:56: key 'kme_simulator.b.port': the two simulated KMEs need different ports",
        "d.json:21:13: key 'vault.pth': unknown key (did you mean 'path'?)",
        "d.json:22:18: key 'policy_file': must not be empty",
        "d.json:23:3: key 'extra': unknown key",
        NULL,
    };
    expect_lines(err, want);
}

static void test_more_errors(void **state)
{
    char *err = load_bad(
        "{\n"
        "  \"smtp\": {\"listeners\": [], \"hostname\": \"bad host!\",\n"
        "           \"upstream\": {\"server_name\": \"a b\", \"port\": 0}},\n"
        "  \"kme_links\": {\n"
        "    \"l1\": {\"url\": \"https://\", \"cert_file\": \"c\", \"key_file\": \"k\"},\n"
        "    \"l2\": {\"url\": \"https://[::1\", \"cert_file\": \"c\", \"key_file\": \"k\"},\n"
        "    \"l3\": {\"url\": \"https://h:0\", \"cert_file\": \"c\", \"key_file\": \"k\"},\n"
        "    \"l4\": {\"url\": \"https://h?x=1\", \"cert_file\": \"c\", \"key_file\": \"k\"},\n"
        "    \"l5\": {\"url\": \"https://h/p?x\", \"cert_file\": \"c\", \"key_file\": \"k\",\n"
        "           \"connections\": 65, \"timeout\": \"1d\"},\n"
        "    \"bad/name\": {\"url\": \"https://h\", \"cert_file\": \"c\", \"key_file\": \"k\"}\n"
        "  },\n"
        "  \"kme_simulator\": {\"config_file\": \"kme.json\", \"key_rate\": 5}\n"
        "}\n");
    static const char *const want[] = {
        "d.json:2:25: key 'smtp.listeners': at least one listener is needed",
        "d.json:2:41: key 'smtp.hostname': 'bad host!' is not a host name",
        "d.json:3:40: key 'smtp.upstream.server_name': 'a b' is not a host name",
        "d.json:3:55: key 'smtp.upstream.port': port 0 is out of range (1..65535)",
        "d.json:5:19: key 'kme_links.l1.url': no host name",
        "d.json:6:19: key 'kme_links.l2.url': unterminated [IPv6 address]",
        "d.json:7:19: key 'kme_links.l3.url': bad port in URL",
        "d.json:8:19: key 'kme_links.l4.url': unexpected '?' after the host and port",
        "d.json:9:19: key 'kme_links.l5.url': no query or fragment allowed",
        "d.json:10:27: key 'kme_links.l5.connections': 65 is out of range (1..64)",
        "d.json:10:42: key 'kme_links.l5.timeout': duration out of range (100ms..600000ms)",
        "d.json:11:5: key 'kme_links[\"bad/name\"]': link names use letters, digits, '-', '_' and '.' (at most 64)",
        "d.json:13:48: key 'kme_simulator.key_rate': not allowed together with config_file (set it in that file)",
        NULL,
    };
    expect_lines(err, want);

    err = load_bad("[1, 2]");
    static const char *const want2[] = {"d.json:1:1: expected an object, got an array", NULL};
    expect_lines(err, want2);

    err = load_bad("{\"kme_simulator\": {\"min_key_size\": 512, \"key_size\": 256,\n"
                   "  \"a\": {\"kme_id\": \"same\"}, \"b\": {\"kme_id\": \"same\"}}}");
    static const char *const want3[] = {
        "d.json:1:53: key 'kme_simulator.key_size': need min_key_size <= key_size <= max_key_size",
        "d.json:2:33: key 'kme_simulator.b': the two simulated KMEs need different kme_id",
        NULL,
    };
    expect_lines(err, want3);

    err = load_bad("{\"smtp\": {\"listeners\": [\n"
                   "  {\"name\": \"a\", \"port\": 25}, {\"name\": \"b\", \"port\": 25}, 7]}}");
    static const char *const want4[] = {
        "d.json:2:52: key 'smtp.listeners[1].port': 127.0.0.1 port 25 is used by listener 'a' too",
        "d.json:2:57: key 'smtp.listeners[2]': expected an object, got an integer",
        NULL,
    };
    expect_lines(err, want4);
}

static void test_load_file(void **state)
{
    struct qumail_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(qumail_config_load("/nonexistent/qumail.json", &cfg, &err), QCFG_EIO);
    assert_null(cfg);
    assert_string_equal(err, "/nonexistent/qumail.json: No such file or directory");
    free(err);

    char path[] = "/tmp/qcfg-daemon-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"smtp\": {\"upstream\": {\"tls\": \"implicit\"}}, \"kme_simulator\":"
          " {\"enabled\": true, \"config_file\": \"kme.json\"}}", f);
    fclose(f);
    assert_int_equal(qumail_config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->file, path);
    assert_int_equal(cfg->smtp.upstream.port, 465);
    assert_non_null(strstr(cfg->kme_simulator.config_file, "/kme.json"));
    assert_string_equal(qumail_upstream_tls_name(cfg->smtp.upstream.tls), "implicit");
    assert_string_equal(qumail_listen_tls_name(QUMAIL_LISTEN_TLS_STARTTLS), "starttls");
    assert_string_equal(qumail_smtp_mode_name(cfg->smtp.mode), "submission");
    qumail_config_free(&cfg);

    f = fopen(path, "w");
    fputs("{\"smtp\": }", f);
    fclose(f);
    assert_int_equal(qumail_config_load(path, &cfg, &err), QCFG_ESYNTAX);
    assert_non_null(strstr(err, ":1:10: "));
    free(err);
    unlink(path);
}

static void test_cidr(void **state)
{
    struct qumail_cidr c;
    const char *why;
    assert_int_equal(qumail_cidr_parse("10.1.2.3/8", &c, &why), 0);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(c.addr[1], 0); /* host bits cleared */
    assert_int_equal(qumail_cidr_parse("192.0.2.1", &c, &why), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(qumail_cidr_parse("::/0", &c, &why), 0);
    assert_int_equal(qumail_cidr_parse("10.0.0.0/", &c, &why), -1);
    assert_int_equal(qumail_cidr_parse("10.0.0.0/8x", &c, &why), -1);
    assert_int_equal(qumail_cidr_parse("10.0.0.0/0008", &c, &why), -1);
    assert_int_equal(qumail_cidr_parse("/8", &c, &why), -1);
    assert_int_equal(qumail_cidr_parse("::1/129", &c, &why), -1);
    assert_int_equal(qumail_cidr_parse("10.0.0.0/12", &c, &why), 0);
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.15.255.255", &in.sin_addr);
    assert_true(qumail_cidr_contains(&c, (struct sockaddr *)&in));
    inet_pton(AF_INET, "10.16.0.0", &in.sin_addr);
    assert_false(qumail_cidr_contains(&c, (struct sockaddr *)&in));
    assert_false(qumail_cidr_contains(&c, NULL));
    assert_int_equal(qumail_cidr_parse("0.0.0.0/0", &c, &why), 0);
    assert_true(qumail_cidr_contains(&c, (struct sockaddr *)&in));
}

/* Random edits of a valid file must never crash or leak: each result is a
 * configuration or a list of positioned errors (run under ASan/UBSan). */
static void test_mutations(void **state)
{
    static const char alphabet[] = "{}[]:,\"\\ \n0123456789.-eEtrufalsn/\x01\xc3\xa9";
    uint64_t x = 88172645463325252ull;
    size_t base = strlen(full);
    char *buf = malloc(base + 64);
    int ok = 0, bad = 0;
    for (int round = 0; round < 2000; round++) {
        memcpy(buf, full, base);
        size_t len = base;
        int edits = 1 + (int)(x % 3);
        for (int e = 0; e < edits; e++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            size_t pos = (size_t)(x % len);
            char c = alphabet[(x >> 20) % (sizeof(alphabet) - 1)];
            switch ((x >> 40) % 3) {
            case 0: buf[pos] = c; break;
            case 1: memmove(buf + pos, buf + pos + 1, len - pos - 1); len--; break;
            default:
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = c;
                len++;
                break;
            }
        }
        struct qumail_config *cfg = NULL;
        char *err = NULL;
        int rc = qumail_config_load_buffer("m.json", "/b", buf, len, &cfg, &err);
        if (rc == 0) {
            assert_non_null(cfg);
            ok++;
            qumail_config_free(&cfg);
        } else {
            assert_null(cfg);
            assert_non_null(err);
            assert_int_equal(strncmp(err, "m.json:", 7), 0);
            bad++;
            free(err);
        }
    }
    assert_true(bad > 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_more_errors),
        cmocka_unit_test(test_imap_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
