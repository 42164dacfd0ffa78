/* The KME links (one key source each: a kme_client for ETSI 014, an
 * etsi004_client and its stream for ETSI 004) and the embedded KME
 * simulator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_internal.h"
#include "log.h"

/* How long dec_keys retries "not found" (see the link setup). */
#define KME_DEC_NOT_FOUND_WINDOW_MS 3000

kme_client *proxy_daemon_kme_link(proxy_daemon *d, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < d->n_links; i++)
        if (strcmp(d->links[i].cfg->name, name) == 0)
            return d->links[i].client;
    return NULL;
}

kme_source *proxy_daemon_kme_source(proxy_daemon *d, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < d->n_links; i++)
        if (strcmp(d->links[i].cfg->name, name) == 0)
            return d->links[i].source;
    return NULL;
}

/* An ETSI 004 link: its client and stream (kme/kme_source.h). */
static kme_source *link_004(proxy_daemon *d, const struct qumail_kme_link *lk, char **err)
{
    struct etsi004_client_config ec = {
        .host = lk->host,
        .port = lk->port,
        .cert_file = lk->cert_file,
        .key_file = lk->key_file,
        .ca_file = lk->ca_file,
        .max_connections = lk->connections,
        .connect_timeout_ms = lk->timeout_ms,
        .request_timeout_ms = lk->timeout_ms,
    };
    etsi004_client *c = etsi004_client_new(d->loop, &ec, err);
    if (!c)
        return NULL;
    struct kme_source_stream st = {
        .ksid = lk->ksid,
        .source = lk->source,
        .destination = lk->destination,
        .chunk_size = lk->chunk_size,
        .ttl_s = (uint32_t)(lk->ttl_ms / 1000),
        .timeout_ms = (uint32_t)lk->qos_timeout_ms,
    };
    kme_source *s = kme_source_new_004(c, true, &st, err);
    if (!s)
        etsi004_client_free(&c);
    return s;
}

static int error_msg(char **error_r, const char *prefix, char *err, const char *fallback)
{
    char msg[2048];
    snprintf(msg, sizeof(msg), "%s%s", prefix, err ? err : fallback);
    free(err);
    *error_r = strdup(msg);
    return -1;
}

/* The simulator from the daemon's own settings: a two-KME configuration
 * built as a struct (no JSON text in between). */
static int sim_config(const struct qumail_config *cfg, kme_server_config **kcfg_r,
                      char **error_r)
{
    const struct qumail_kme_simulator *sim = &cfg->kme_simulator;
    char db_a[4096], db_b[4096];
    snprintf(db_a, sizeof(db_a), "%s.%s", sim->state_path, sim->a.kme_id);
    snprintf(db_b, sizeof(db_b), "%s.%s", sim->state_path, sim->b.kme_id);
    struct kme_server_pair_params p = {
        .a = {.kme_id = sim->a.kme_id, .host = sim->address, .port = sim->a.port,
              .cert_file = sim->a.cert_file, .key_file = sim->a.key_file, .database = db_a},
        .b = {.kme_id = sim->b.kme_id, .host = sim->address, .port = sim->b.port,
              .cert_file = sim->b.cert_file, .key_file = sim->b.key_file, .database = db_b},
        .ca_file = sim->ca_file,
        .secret_key_rate = sim->key_rate,
        .max_key_count = sim->max_key_count,
        .key_size = sim->key_size,
        .min_key_size = sim->min_key_size,
        .max_key_size = sim->max_key_size,
        .max_key_per_request = sim->max_keys_per_request,
        .key_expiry_ms = sim->key_expiry_ms,
        .redeliver_ms = sim->redeliver_ms,
    };
    return kme_server_config_pair(&p, kcfg_r, error_r);
}

static int start_simulator(proxy_daemon *d, char **error_r)
{
    const struct qumail_kme_simulator *sim = &d->first_cfg->kme_simulator;
    if (!sim->enabled)
        return 0;
    kme_server_config *kcfg = NULL;
    char *err = NULL;
    int rc = sim->config_file ? kme_server_config_load(sim->config_file, &kcfg, &err)
                              : sim_config(d->first_cfg, &kcfg, &err);
    if (rc == 0)
        rc = kme_server_start(d->loop, kcfg, &d->kme_sim, &err);
    kme_server_config_free(&kcfg);
    if (rc < 0) {
        char prefix[1024];
        snprintf(prefix, sizeof(prefix), "KME simulator%s%s%s: ",
                 sim->config_file ? " (" : "", sim->config_file ? sim->config_file : "",
                 sim->config_file ? ")" : "");
        return error_msg(error_r, prefix, err, kme_server_strerror(rc));
    }
    if (sim->config_file)
        qlog_info("embedded KME simulator from %s on port %u", sim->config_file,
                  kme_server_port(d->kme_sim, 0));
    else
        qlog_info("embedded KME simulator: %s on port %u, %s on port %u", sim->a.kme_id,
                  kme_server_port(d->kme_sim, 0), sim->b.kme_id,
                  kme_server_port(d->kme_sim, 1));
    return 0;
}

int proxy_kme__start(proxy_daemon *d, char **error_r)
{
    const struct qumail_config *cfg = d->first_cfg;
    /* The simulator before the links that may point at it. */
    if (start_simulator(d, error_r) < 0)
        return -1;
    d->links = calloc(cfg->n_kme_links ? cfg->n_kme_links : 1, sizeof(*d->links));
    if (!d->links) {
        *error_r = strdup("out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_kme_links; i++) {
        const struct qumail_kme_link *lk = &cfg->kme_links[i];
        if (lk->kind == QUMAIL_KME_ETSI004) {
            char *err = NULL;
            d->links[i].cfg = lk;
            d->links[i].source = link_004(d, lk, &err);
            if (!d->links[i].source) {
                char prefix[256];
                snprintf(prefix, sizeof(prefix), "kme_links.%s: ", lk->name);
                return error_msg(error_r, prefix, err, "invalid");
            }
            d->n_links++;
            continue;
        }
        struct kme_client_config kc = {
            .url = lk->url,
            .cert_file = lk->cert_file,
            .key_file = lk->key_file,
            .ca_file = lk->ca_file,
            .max_connections = lk->connections,
            .connect_timeout_ms = lk->timeout_ms,
            .request_timeout_ms = lk->timeout_ms,
            /* dec_keys "not found" is retried this long (the handover from
             * the sending KME may lag a little); a key ID nobody ever made
             * (a forged message) then stalls a reader 3 s, not 10 */
            .dec_deadline_ms = KME_DEC_NOT_FOUND_WINDOW_MS,
        };
        char *err = NULL;
        d->links[i].cfg = lk;
        d->links[i].client = kme_client_new(d->loop, &kc, &err);
        if (d->links[i].client)
            d->links[i].source = kme_source_new_014(d->links[i].client, false);
        if (!d->links[i].source) {
            kme_client_free(&d->links[i].client);
            char prefix[256];
            snprintf(prefix, sizeof(prefix), "kme_links.%s: ", lk->name);
            return error_msg(error_r, prefix, err, "invalid");
        }
        d->n_links++;
    }
    return 0;
}

void proxy_kme__stop(proxy_daemon *d)
{
    for (size_t i = 0; i < d->n_links; i++) {
        kme_source_free(&d->links[i].source); /* before the client it uses */
        kme_client_free(&d->links[i].client);
    }
    d->n_links = 0;
    if (d->kme_sim)
        kme_server_stop(&d->kme_sim, NULL, NULL);
}
