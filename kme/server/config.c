/* The simulator's configuration file, read with the project's qcfg reader
 * (errors FILE:LINE:COL with the key; unknown keys are errors). The keys
 * and their defaults are documented in kme/README.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etsi004.h"
#include "qcfg.h"
#include "server_internal.h"

#define MAX_RESPONSE_BITS (64ull * 1024 * 1024 * 8) /* one enc_keys answer */

static void cfg_defaults(struct kme_cfg *c)
{
    memset(c, 0, sizeof(*c));
    c->listen_port = 8443;
    c->key_size = 256;
    c->min_key_size = 64;
    c->max_key_size = 8192;
    c->max_key_per_request = 128;
    c->max_key_count = 100000;
    c->max_sae_id_count = 8;
    c->rate_bps = 1000000;
    c->key_expiry_ms = 0;
    c->dec_wait_ms = 1000;
    c->sync_full = true;
    c->idle_timeout_ms = 60000;
    c->max_body = (size_t)64 << 10;
    c->max_connections = 1024;
    c->handshake_timeout_ms = 5000;
    c->max_handshakes = 64;
    c->e4.port = ETSI004_DEFAULT_PORT;
    c->e4.chunk_default = 32;
    c->e4.chunk_min = 1;
    c->e4.chunk_max = 4096;
    c->e4.timeout_default_ms = 5000;
    c->e4.timeout_max_ms = 60000;
    c->e4.ttl_default_s = 86400;
    c->e4.ttl_max_s = 30 * 86400;
    c->e4.max_streams = 4096;
    c->e4.max_connections = 256;
    c->e4.handshake_timeout_ms = 5000;
    c->e4.idle_timeout_ms = 60000;
}

/* The "etsi004" object: the 004 listener and its limits (kme/ETSI004.md). */
static void read_e4(qcfg_node *o, struct kme_cfg *c)
{
    if (o == NULL)
        return;
    struct qcfg *doc = qcfg_node_doc(o);
    struct kme_e4_cfg *e = &c->e4;
    e->enabled = true;
    qcfg_string(qcfg_member(o, "host", 0), QCFG_NONEMPTY, &e->host);
    qcfg_port(qcfg_member(o, "port", 0), QCFG_ZERO_OK, &e->port);
    int64_t v = e->chunk_default;
    qcfg_int(qcfg_member(o, "chunk_size", 0), 1, ETSI004_MAX_CHUNK, &v);
    e->chunk_default = (uint32_t)v;
    v = e->chunk_min;
    qcfg_int(qcfg_member(o, "min_chunk_size", 0), 1, ETSI004_MAX_CHUNK, &v);
    e->chunk_min = (uint32_t)v;
    v = e->chunk_max;
    qcfg_int(qcfg_member(o, "max_chunk_size", 0), 1, ETSI004_MAX_CHUNK, &v);
    e->chunk_max = (uint32_t)v;
    uint64_t ms = e->timeout_default_ms;
    qcfg_duration(qcfg_member(o, "timeout", 0), 1, UINT32_MAX, &ms);
    e->timeout_default_ms = (uint32_t)ms;
    ms = e->timeout_max_ms;
    qcfg_duration(qcfg_member(o, "max_timeout", 0), 1, UINT32_MAX, &ms);
    e->timeout_max_ms = (uint32_t)ms;
    ms = (uint64_t)e->ttl_default_s * 1000;
    qcfg_duration(qcfg_member(o, "ttl", 0), 1000, (uint64_t)UINT32_MAX * 1000, &ms);
    e->ttl_default_s = (uint32_t)(ms / 1000);
    ms = (uint64_t)e->ttl_max_s * 1000;
    qcfg_duration(qcfg_member(o, "max_ttl", 0), 1000, (uint64_t)UINT32_MAX * 1000, &ms);
    e->ttl_max_s = (uint32_t)(ms / 1000);
    v = (int64_t)e->max_streams;
    qcfg_int(qcfg_member(o, "max_streams", 0), 1, 1000000, &v);
    e->max_streams = (uint64_t)v;
    v = (int64_t)e->max_connections;
    qcfg_int(qcfg_member(o, "max_connections", 0), 1, 100000, &v);
    e->max_connections = (uint64_t)v;
    qcfg_duration(qcfg_member(o, "handshake_timeout", 0), 100, 600000,
                  &e->handshake_timeout_ms);
    qcfg_duration(qcfg_member(o, "idle_timeout", 0), 0, UINT64_C(1) << 40,
                  &e->idle_timeout_ms);
    if (!(e->chunk_min <= e->chunk_default && e->chunk_default <= e->chunk_max))
        qcfg_error_at(doc, o, "min_chunk_size <= chunk_size <= max_chunk_size shall hold");
    if (e->timeout_default_ms > e->timeout_max_ms)
        qcfg_error_at(doc, o, "timeout shall not exceed max_timeout");
    if (e->ttl_default_s > e->ttl_max_s)
        qcfg_error_at(doc, o, "ttl shall not exceed max_ttl");
    qcfg_done(o);
}

uint64_t kme_cfg_pool_bytes(const struct kme_cfg *c)
{
    return (uint64_t)c->max_key_count * (uint64_t)c->key_size / 8;
}

#define KME_CFG_MAX_PROBLEMS 5

/* The checks across one KME's settings, for the file and for
 * kme_server_config_pair alike: the problems (static texts), and whether
 * each is about the link rather than the key sizes. */
static size_t check_kme(const struct kme_cfg *c, const char **why, bool *at_link)
{
    size_t k = 0;
    if (c->key_size % 8 != 0 || c->min_key_size % 8 != 0 ||
        c->max_key_size % 8 != 0)
        why[k++] = "key_size, min_key_size and max_key_size shall "
                   "be multiples of 8 (this KME serves whole bytes)";
    if (!(c->min_key_size <= c->key_size && c->key_size <= c->max_key_size))
        why[k++] = "min_key_size <= key_size <= max_key_size shall hold";
    if ((uint64_t)c->max_key_size * (uint64_t)c->max_key_per_request >
        MAX_RESPONSE_BITS)
        why[k++] = "max_key_size x max_key_per_request exceeds the "
                   "64 MiB response limit";
    if (kme_cfg_pool_bytes(c) * 8 < (uint64_t)c->max_key_size ||
        kme_cfg_pool_bytes(c) > UINT64_C(1) << 32)
        why[k++] = "max_key_count x key_size shall hold at least "
                   "one key of max_key_size and at most 4 GiB";
    for (size_t i = 0; i < k; i++)
        at_link[i] = false;
    if (c->kme_id != NULL && c->peer_kme_id != NULL &&
        strcmp(c->kme_id, c->peer_kme_id) == 0) {
        at_link[k] = true;
        why[k++] = "peer_kme_id shall differ from kme_id";
    }
    return k;
}

static void read_kme(qcfg_node *o, struct kme_cfg *c)
{
    cfg_defaults(c);
    c->listen_host = strdup("127.0.0.1");
    c->sae_id_field = strdup("CN");
    c->link_host = strdup("127.0.0.1");
    c->e4.host = strdup("127.0.0.1");
    if (o == NULL)
        return;
    struct qcfg *doc = qcfg_node_doc(o);
    qcfg_node *n;
    qcfg_string(qcfg_member(o, "kme_id", QCFG_REQUIRED), QCFG_NONEMPTY, &c->kme_id);
    qcfg_string(qcfg_member(o, "host", 0), QCFG_NONEMPTY, &c->listen_host);
    qcfg_port(qcfg_member(o, "port", 0), QCFG_ZERO_OK, &c->listen_port);

    qcfg_node *tls = qcfg_object(qcfg_member(o, "tls", QCFG_REQUIRED));
    qcfg_path(qcfg_member(tls, "cert", QCFG_REQUIRED), 0, &c->cert_file);
    qcfg_path(qcfg_member(tls, "key", QCFG_REQUIRED), 0, &c->key_file);
    qcfg_path(qcfg_member(tls, "ca", QCFG_REQUIRED), 0, &c->ca_file);
    qcfg_done(tls);

    qcfg_string(qcfg_member(o, "sae_id_field", 0), QCFG_NONEMPTY, &c->sae_id_field);
    qcfg_node *saes = qcfg_array(qcfg_member(o, "sae_ids", 0));
    size_t ns = qcfg_array_len(saes);
    if (ns > 0) {
        c->sae_ids = calloc(ns, sizeof(char *));
        if (c->sae_ids != NULL) {
            c->sae_count = ns;
            for (size_t i = 0; i < ns; i++)
                qcfg_string(qcfg_array_at(saes, i), QCFG_NONEMPTY, &c->sae_ids[i]);
        }
    }
    qcfg_path(qcfg_member(o, "database", QCFG_REQUIRED), 0, &c->database);

    qcfg_node *link = qcfg_object(qcfg_member(o, "link", QCFG_REQUIRED));
    qcfg_string(qcfg_member(link, "host", 0), QCFG_NONEMPTY, &c->link_host);
    qcfg_port(qcfg_member(link, "port", 0), QCFG_ZERO_OK, &c->link_port);
    qcfg_string(qcfg_member(link, "peer_kme_id", QCFG_REQUIRED), QCFG_NONEMPTY,
                &c->peer_kme_id);
    qcfg_string(qcfg_member(link, "peer_host", 0), QCFG_NONEMPTY, &c->peer_host);
    qcfg_port(qcfg_member(link, "peer_port", 0), 0, &c->peer_port);
    if ((c->peer_host == NULL) != (c->peer_port == 0))
        qcfg_error_at(doc, link, "peer_host and peer_port go together (omit "
                                 "both when the peer KME is in this file)");
    qcfg_done(link);

    qcfg_int(qcfg_member(o, "key_size", 0), 8, 1 << 24, &c->key_size);
    qcfg_int(qcfg_member(o, "min_key_size", 0), 8, 1 << 24, &c->min_key_size);
    qcfg_int(qcfg_member(o, "max_key_size", 0), 8, 1 << 24, &c->max_key_size);
    qcfg_int(qcfg_member(o, "max_key_per_request", 0), 1, 100000,
             &c->max_key_per_request);
    qcfg_int(qcfg_member(o, "max_key_count", 0), 1, 100000000, &c->max_key_count);
    qcfg_int(qcfg_member(o, "max_SAE_ID_count", 0), 0, 64, &c->max_sae_id_count);
    int64_t rate = (int64_t)c->rate_bps;
    qcfg_int(qcfg_member(o, "secret_key_rate", 0), 1, INT64_C(1) << 40, &rate);
    c->rate_bps = (uint64_t)rate;
    qcfg_duration(qcfg_member(o, "key_expiry", 0), 0, UINT64_C(1) << 50,
                  &c->key_expiry_ms);
    qcfg_duration(qcfg_member(o, "dec_keys_wait", 0), 0, 60000, &c->dec_wait_ms);
    qcfg_duration(qcfg_member(o, "dec_keys_redeliver", 0), 0, 86400000,
                  &c->redeliver_ms);
    static const char *const syncs[] = {"normal", "full", NULL};
    int sync = c->sync_full ? 1 : 0;
    qcfg_enum(qcfg_member(o, "sqlite_synchronous", 0), syncs, &sync);
    c->sync_full = sync == 1;
    qcfg_duration(qcfg_member(o, "idle_timeout", 0), 0, UINT64_C(1) << 40,
                  &c->idle_timeout_ms);
    qcfg_size(qcfg_member(o, "max_body", 0), 1024, (uint64_t)16 << 20, &c->max_body);
    int64_t mc = (int64_t)c->max_connections;
    qcfg_int(qcfg_member(o, "max_connections", 0), 1, 1000000, &mc);
    c->max_connections = (uint64_t)mc;
    qcfg_duration(qcfg_member(o, "handshake_timeout", 0), 100, 600000,
                  &c->handshake_timeout_ms);
    int64_t mh = (int64_t)c->max_handshakes;
    qcfg_int(qcfg_member(o, "max_handshakes", 0), 1, 100000, &mh);
    c->max_handshakes = (uint64_t)mh;
    read_e4(qcfg_object(qcfg_member(o, "etsi004", 0)), c);

    if ((n = qcfg_member(o, "key_size", 0)) == NULL)
        n = o;
    const char *why[KME_CFG_MAX_PROBLEMS];
    bool at_link[KME_CFG_MAX_PROBLEMS];
    size_t k = check_kme(c, why, at_link);
    for (size_t i = 0; i < k; i++)
        qcfg_error_at(doc, at_link[i] ? link : n, "%s", why[i]);
    qcfg_done(o);
}

static int parse_doc(struct qcfg *doc, kme_server_config **cfg_r,
                     char **error_r)
{
    kme_server_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        qcfg_free(&doc);
        return KME_SERVER_ENOMEM;
    }
    qcfg_node *root = qcfg_object(qcfg_root(doc));
    qcfg_node *kmes = qcfg_array(qcfg_member(root, "kmes", QCFG_REQUIRED));
    size_t n = qcfg_array_len(kmes);
    if (kmes != NULL && (n < 1 || n > 2))
        qcfg_error_at(doc, kmes, "one or two KMEs");
    for (size_t i = 0; i < n && i < 2; i++) {
        read_kme(qcfg_object(qcfg_array_at(kmes, i)), &cfg->kmes[i]);
        cfg->count = i + 1;
    }
    if (cfg->count == 2) {
        struct kme_cfg *a = &cfg->kmes[0], *b = &cfg->kmes[1];
        if (a->kme_id && b->kme_id && a->peer_kme_id && b->peer_kme_id &&
            (strcmp(a->peer_kme_id, b->kme_id) != 0 ||
             strcmp(b->peer_kme_id, a->kme_id) != 0))
            qcfg_error_at(doc, kmes, "the two KMEs shall name each other as "
                                     "link.peer_kme_id");
        if (a->database && b->database && strcmp(a->database, b->database) == 0)
            qcfg_error_at(doc, kmes, "the two KMEs need different databases");
    } else if (cfg->count == 1 && cfg->kmes[0].peer_host == NULL &&
               cfg->kmes[0].kme_id != NULL) {
        qcfg_error_at(doc, kmes, "link.peer_host and link.peer_port are "
                                 "required when the peer KME runs elsewhere");
    }
    qcfg_done(root);
    int ret = 0;
    if (qcfg_error_count(doc) > 0) {
        if (error_r != NULL)
            *error_r = qcfg_errors_join(doc);
        ret = KME_SERVER_ECONFIG;
        kme_server_config_free(&cfg);
    }
    qcfg_free(&doc);
    *cfg_r = cfg;
    return ret;
}

int kme_server_config_load(const char *path, kme_server_config **cfg_r,
                           char **error_r)
{
    struct qcfg *doc;
    *cfg_r = NULL;
    if (qcfg_load_file(path, &doc, error_r) < 0)
        return KME_SERVER_ECONFIG;
    return parse_doc(doc, cfg_r, error_r);
}

int kme_server_config_parse(const char *name, const char *base_dir,
                            const char *text, size_t len,
                            kme_server_config **cfg_r, char **error_r)
{
    struct qcfg *doc;
    *cfg_r = NULL;
    if (qcfg_load_buffer(name, base_dir, text, len, &doc, error_r) < 0)
        return KME_SERVER_ECONFIG;
    return parse_doc(doc, cfg_r, error_r);
}

void kme_cfg_clear(struct kme_cfg *c)
{
    free(c->kme_id);
    free(c->listen_host);
    free(c->cert_file);
    free(c->key_file);
    free(c->ca_file);
    free(c->sae_id_field);
    for (size_t i = 0; i < c->sae_count; i++)
        free(c->sae_ids[i]);
    free(c->sae_ids);
    free(c->database);
    free(c->link_host);
    free(c->peer_kme_id);
    free(c->peer_host);
    free(c->e4.host);
    memset(c, 0, sizeof(*c));
}

static int dup_str(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    *dst = strdup(src);
    return *dst != NULL ? 0 : -1;
}

int kme_cfg_copy(struct kme_cfg *dst, const struct kme_cfg *src)
{
    *dst = *src;
    dst->sae_ids = NULL;
    dst->sae_count = 0;
    int bad = 0;
    bad |= dup_str(&dst->kme_id, src->kme_id);
    bad |= dup_str(&dst->listen_host, src->listen_host);
    bad |= dup_str(&dst->cert_file, src->cert_file);
    bad |= dup_str(&dst->key_file, src->key_file);
    bad |= dup_str(&dst->ca_file, src->ca_file);
    bad |= dup_str(&dst->sae_id_field, src->sae_id_field);
    bad |= dup_str(&dst->database, src->database);
    bad |= dup_str(&dst->link_host, src->link_host);
    bad |= dup_str(&dst->peer_kme_id, src->peer_kme_id);
    bad |= dup_str(&dst->peer_host, src->peer_host);
    bad |= dup_str(&dst->e4.host, src->e4.host);
    if (src->sae_count > 0) {
        dst->sae_ids = calloc(src->sae_count, sizeof(char *));
        if (dst->sae_ids == NULL)
            bad = -1;
        else
            dst->sae_count = src->sae_count;
        for (size_t i = 0; dst->sae_ids != NULL && i < src->sae_count; i++)
            bad |= dup_str(&dst->sae_ids[i], src->sae_ids[i]);
    }
    if (bad) {
        kme_cfg_clear(dst);
        return KME_SERVER_ENOMEM;
    }
    return 0;
}

void kme_server_config_free(kme_server_config **cfgp)
{
    kme_server_config *cfg = *cfgp;
    if (cfg == NULL)
        return;
    *cfgp = NULL;
    for (size_t i = 0; i < 2; i++)
        kme_cfg_clear(&cfg->kmes[i]);
    free(cfg);
}

size_t kme_server_config_count(const kme_server_config *cfg)
{
    return cfg->count;
}

const char *kme_server_config_kme_id(const kme_server_config *cfg, size_t i)
{
    return i < cfg->count ? cfg->kmes[i].kme_id : NULL;
}

/* ---- programmatic two-KME configuration -------------------------------- */

/* One KME of the pair, filled as the file reader would (defaults first);
 * -1 when out of memory. */
static int pair_kme(struct kme_cfg *c, const struct kme_server_kme_params *k,
                    const struct kme_server_pair_params *p, const char *peer_id)
{
    cfg_defaults(c);
    int bad = 0;
    bad |= dup_str(&c->kme_id, k->kme_id);
    bad |= dup_str(&c->listen_host, k->host != NULL ? k->host : "127.0.0.1");
    bad |= dup_str(&c->cert_file, k->cert_file);
    bad |= dup_str(&c->key_file, k->key_file);
    bad |= dup_str(&c->ca_file, p->ca_file);
    bad |= dup_str(&c->sae_id_field, "CN");
    bad |= dup_str(&c->database, k->database);
    bad |= dup_str(&c->link_host, "127.0.0.1");
    bad |= dup_str(&c->peer_kme_id, peer_id);
    c->listen_port = k->port;
    c->link_port = k->link_port;
    if (p->secret_key_rate != 0)
        c->rate_bps = p->secret_key_rate;
    if (p->max_key_count != 0)
        c->max_key_count = p->max_key_count;
    if (p->key_size != 0)
        c->key_size = p->key_size;
    if (p->min_key_size != 0)
        c->min_key_size = p->min_key_size;
    if (p->max_key_size != 0)
        c->max_key_size = p->max_key_size;
    if (p->max_key_per_request != 0)
        c->max_key_per_request = p->max_key_per_request;
    c->key_expiry_ms = p->key_expiry_ms;
    c->redeliver_ms = p->redeliver_ms;
    return bad;
}

/* Appends "embedded-kme-simulator: kmes[i]: why" lines to *err. */
static void pair_error(char **err, size_t i, const char *why)
{
    char *prev = *err, *next = NULL;
    if (asprintf(&next, "%s%sembedded-kme-simulator: kmes[%zu]: %s", prev ? prev : "",
                 prev ? "\n" : "", i, why) < 0)
        return; /* keep what there is */
    free(prev);
    *err = next;
}

int kme_server_config_pair(const struct kme_server_pair_params *p,
                           kme_server_config **cfg_r, char **error_r)
{
    *cfg_r = NULL;
    kme_server_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return KME_SERVER_ENOMEM;
    cfg->count = 2;
    if (pair_kme(&cfg->kmes[0], &p->a, p, p->b.kme_id) != 0 ||
        pair_kme(&cfg->kmes[1], &p->b, p, p->a.kme_id) != 0) {
        kme_server_config_free(&cfg);
        return KME_SERVER_ENOMEM;
    }
    char *err = NULL;
    for (size_t i = 0; i < 2; i++) {
        const struct kme_cfg *c = &cfg->kmes[i];
        if (!c->kme_id || !c->cert_file || !c->key_file || !c->ca_file || !c->database)
            pair_error(&err, i, "kme_id, cert_file, key_file, ca_file and database "
                                "are required");
        const char *why[KME_CFG_MAX_PROBLEMS];
        bool at_link[KME_CFG_MAX_PROBLEMS];
        size_t k = check_kme(c, why, at_link);
        for (size_t j = 0; j < k; j++)
            pair_error(&err, i, why[j]);
    }
    const struct kme_cfg *a = &cfg->kmes[0], *b = &cfg->kmes[1];
    if (a->database && b->database && strcmp(a->database, b->database) == 0)
        pair_error(&err, 1, "the two KMEs need different databases");
    if (err != NULL || (a->kme_id == NULL && b->kme_id == NULL)) {
        if (error_r != NULL)
            *error_r = err != NULL ? err : strdup("embedded-kme-simulator: invalid");
        else
            free(err);
        kme_server_config_free(&cfg);
        return KME_SERVER_ECONFIG;
    }
    *cfg_r = cfg;
    return 0;
}
