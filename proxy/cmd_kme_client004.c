/* qumail kme-client open | get | close: the ETSI GS QKD 004 primitives for
 * operators (kme/etsi004_client.h; the framing in kme/ETSI004.md). JSON on
 * stdout, results and errors alike; key bytes only with --show-keys. */
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "etsi004_client.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail kme-client open  --kme etsi004://HOST[:PORT] [--ksid UUID]\n"
            "                               [--source URI] [--destination URI] [QoS options]\n"
            "       qumail kme-client get   --kme ... --ksid UUID [--index N|next] [--count N]\n"
            "                               [--metadata-size BYTES] [--show-keys]\n"
            "       qumail kme-client close --kme ... --ksid UUID\n"
            "ETSI GS QKD 004 (key streams) over TLS; status, enc and dec are ETSI 014.\n"
            "\n"
            "connection options:\n"
            "  --kme ADDRESS      the KME's 004 listener: etsi004://host[:port] or host[:port]\n"
            "                     (port 25575 when absent; alias --url)\n"
            "  --cert FILE        SAE client certificate (PEM, required: mutual TLS)\n"
            "  --key FILE         its private key (PEM, required)\n"
            "  --ca FILE          CA certificates trusted for the KME (default: system)\n"
            "  --server-name NAME name checked in the KME certificate (default: the host)\n"
            "  --kme-id ID        require this KME ID as the certificate's CN\n"
            "  --timeout MS       connect and request timeout (default 5000 and 10000)\n"
            "open:\n"
            "  --ksid UUID        a predefined Key_stream_ID (default: the KME assigns one)\n"
            "  --source URI       this application (default qkd://<our SAE ID>)\n"
            "  --destination URI  the peer application (default qkd://peer)\n"
            "  --chunk-size BYTES Key_chunk_size      --max-bps N   --min-bps N\n"
            "  --jitter N         --priority N        --qos-timeout MS (the KME's wait)\n"
            "  --ttl SECONDS      --metadata-mimetype TYPE (default application/json;\n"
            "                     \"\" for none). 0 or absent: the KME chooses.\n"
            "get:\n"
            "  --index N|next     chunk index, or next: the KME chooses (default next)\n"
            "  --count N          that many chunks: consecutive indices from --index, or\n"
            "                     N KME-chosen ones (then without metadata)\n"
            "  --metadata-size B  metadata buffer size (default 1024; 0: no metadata)\n"
            "  --wait MS          how long the KME may take (default 60000)\n"
            "  --show-keys        print key bytes (base64). They are secret.\n"
            "Output: JSON on stdout. Exit status 0 when the KME answered success (open: 0\n"
            "or 1), 1 for another status or a transport error, 2 for a usage error.\n");
}

static int print_json(json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (s == NULL)
        return 1;
    puts(s);
    OPENSSL_cleanse(s, strlen(s)); /* may hold key bytes (--show-keys) */
    free(s);
    return 0;
}

static int print_error(int rc, const char *message)
{
    print_json(json_pack("{s:s, s:s, s:b}", "error", kme_client_errname(rc), "message",
                         message ? message : kme_client_strerror(rc), "temporary",
                         kme_client_error_is_temporary(rc)));
    fprintf(stderr, "qumail kme-client: %s\n", message ? message : kme_client_strerror(rc));
    return 1;
}

static json_t *qos_json(const struct etsi004_qos *q)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "Key_chunk_size",
                     (json_int_t)q->key_chunk_size, "Max_bps", (json_int_t)q->max_bps,
                     "Min_bps", (json_int_t)q->min_bps, "Jitter", (json_int_t)q->jitter,
                     "Priority", (json_int_t)q->priority, "Timeout", (json_int_t)q->timeout,
                     "TTL", (json_int_t)q->ttl, "Metadata_mimetype", q->metadata_mimetype);
}

static json_t *status_json(uint32_t status)
{
    return json_pack("{s:I, s:s}", "status", (json_int_t)status, "status_name",
                     etsi004_status_name(status));
}

static json_t *key_b64(const uint8_t *key, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *b64 = malloc(cap);
    if (b64 == NULL)
        return NULL;
    EVP_EncodeBlock(b64, key, (int)len);
    json_t *s = json_string((char *)b64);
    OPENSSL_cleanse(b64, cap);
    free(b64);
    return s;
}

enum opt_id {
    O_KME = 1, O_CERT, O_KEY, O_CA, O_SNI, O_KME_ID, O_TIMEOUT, O_KSID, O_SOURCE, O_DEST,
    O_CHUNK, O_MAX_BPS, O_MIN_BPS, O_JITTER, O_PRIORITY, O_QOS_TIMEOUT, O_TTL, O_MIME,
    O_INDEX, O_COUNT, O_MDSIZE, O_WAIT, O_SHOW, O_HELP,
};

static const struct option options[] = {
    {"kme", required_argument, NULL, O_KME},
    {"url", required_argument, NULL, O_KME},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"ca", required_argument, NULL, O_CA},
    {"server-name", required_argument, NULL, O_SNI},
    {"kme-id", required_argument, NULL, O_KME_ID},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"ksid", required_argument, NULL, O_KSID},
    {"source", required_argument, NULL, O_SOURCE},
    {"destination", required_argument, NULL, O_DEST},
    {"chunk-size", required_argument, NULL, O_CHUNK},
    {"max-bps", required_argument, NULL, O_MAX_BPS},
    {"min-bps", required_argument, NULL, O_MIN_BPS},
    {"jitter", required_argument, NULL, O_JITTER},
    {"priority", required_argument, NULL, O_PRIORITY},
    {"qos-timeout", required_argument, NULL, O_QOS_TIMEOUT},
    {"ttl", required_argument, NULL, O_TTL},
    {"metadata-mimetype", required_argument, NULL, O_MIME},
    {"index", required_argument, NULL, O_INDEX},
    {"count", required_argument, NULL, O_COUNT},
    {"metadata-size", required_argument, NULL, O_MDSIZE},
    {"wait", required_argument, NULL, O_WAIT},
    {"show-keys", no_argument, NULL, O_SHOW},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

struct cli {
    struct etsi004_client_config cfg;
    char *host;
    const char *kme;
    bool has_ksid;
    uint8_t ksid[ETSI004_KSID_LEN];
    const char *source, *destination;
    struct etsi004_qos qos;
    bool next;
    uint32_t index;
    uint64_t count;
    uint32_t metadata_size;
    uint64_t wait_ms;
    bool show_keys;
};

static bool parse_u32(const char *s, uint32_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static int bad(const char *option, const char *value, const char *want)
{
    fprintf(stderr, "qumail kme-client: --%s: '%s' is not %s\n", option, value, want);
    return -1;
}

static int parse(struct cli *c, int argc, char **argv)
{
    int ch, idx = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", options, &idx)) != -1) {
        const char *name = options[idx].name;
        uint32_t v = 0;
        switch (ch) {
        case O_KME: c->kme = optarg; break;
        case O_CERT: c->cfg.cert_file = optarg; break;
        case O_KEY: c->cfg.key_file = optarg; break;
        case O_CA: c->cfg.ca_file = optarg; break;
        case O_SNI: c->cfg.server_name = optarg; break;
        case O_KME_ID: c->cfg.expect_kme_id = optarg; break;
        case O_TIMEOUT:
            if (!parse_u32(optarg, &v) || v == 0)
                return bad(name, optarg, "a positive number of milliseconds");
            c->cfg.connect_timeout_ms = c->cfg.request_timeout_ms = v;
            break;
        case O_KSID:
            if (etsi004_ksid_from_text(optarg, c->ksid) < 0)
                return bad(name, optarg, "a UUID (8-4-4-4-12 hex digits)");
            c->has_ksid = true;
            break;
        case O_SOURCE: c->source = optarg; break;
        case O_DEST: c->destination = optarg; break;
        case O_CHUNK: case O_MAX_BPS: case O_MIN_BPS: case O_JITTER: case O_PRIORITY:
        case O_QOS_TIMEOUT: case O_TTL:
            if (!parse_u32(optarg, &v))
                return bad(name, optarg, "a number from 0 to 4294967295");
            *(ch == O_CHUNK ? &c->qos.key_chunk_size : ch == O_MAX_BPS ? &c->qos.max_bps
              : ch == O_MIN_BPS ? &c->qos.min_bps : ch == O_JITTER ? &c->qos.jitter
              : ch == O_PRIORITY ? &c->qos.priority : ch == O_QOS_TIMEOUT ? &c->qos.timeout
              : &c->qos.ttl) = v;
            break;
        case O_MIME:
            if (strlen(optarg) > ETSI004_MIMETYPE_LEN)
                return bad(name, optarg, "a mimetype of at most 256 characters");
            snprintf(c->qos.metadata_mimetype, sizeof(c->qos.metadata_mimetype), "%s",
                     optarg);
            break;
        case O_INDEX:
            if (strcmp(optarg, "next") == 0) {
                c->next = true;
            } else if (!parse_u32(optarg, &c->index) || c->index == ETSI004_INDEX_NEXT) {
                return bad(name, optarg, "an index below 4294967295 or 'next'");
            } else {
                c->next = false;
            }
            break;
        case O_COUNT:
            if (!parse_u32(optarg, &v) || v == 0 || v > (1u << 20))
                return bad(name, optarg, "a count from 1 to 1048576");
            c->count = v;
            break;
        case O_MDSIZE:
            if (!parse_u32(optarg, &c->metadata_size))
                return bad(name, optarg, "a size in bytes");
            break;
        case O_WAIT:
            if (!parse_u32(optarg, &v) || v == 0)
                return bad(name, optarg, "a positive number of milliseconds");
            c->wait_ms = v;
            break;
        case O_SHOW: c->show_keys = true; break;
        case O_HELP: return 1;
        default: return -1;
        }
        idx = 0;
    }
    if (optind < argc) {
        fprintf(stderr, "qumail kme-client: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

static int do_open(struct cli *c)
{
    char src[300];
    const char *source = c->source;
    if (source == NULL) {
        /* qkd://<the CN of our certificate> */
        char *err = NULL;
        uv_loop_t loop;
        uv_loop_init(&loop);
        etsi004_client *tmp = etsi004_client_new(&loop, &c->cfg, &err);
        snprintf(src, sizeof(src), "qkd://%s",
                 tmp != NULL && etsi004_client_sae_id(tmp) ? etsi004_client_sae_id(tmp)
                                                           : "app");
        etsi004_client_free(&tmp);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        free(err);
        source = src;
    }
    struct etsi004_sync_open r;
    char *err = NULL;
    int rc = etsi004_sync_open(&c->cfg, source, c->destination ? c->destination
                                                                  : "qkd://peer",
                               &c->qos, c->has_ksid ? c->ksid : NULL, &r, &err);
    if (rc != KME_OK) {
        rc = print_error(rc, err);
        free(err);
        return rc;
    }
    json_t *j = status_json(r.status);
    if (r.has_qos) {
        char text[ETSI004_KSID_TEXT_LEN + 1];
        etsi004_ksid_to_text(r.ksid, text);
        json_object_set_new(j, "ksid", json_string(text));
        json_object_set_new(j, "qos", qos_json(&r.qos));
    }
    print_json(j);
    return r.status == ETSI004_SUCCESS || r.status == ETSI004_PEER_NOT_CONNECTED ? 0 : 1;
}

static int do_get_one(struct cli *c)
{
    struct etsi004_sync_get r;
    char *err = NULL;
    int rc = etsi004_sync_get_key(&c->cfg, c->ksid, c->next ? ETSI004_INDEX_NEXT : c->index,
                                  c->metadata_size, c->wait_ms, &r, &err);
    if (rc != KME_OK) {
        rc = print_error(rc, err);
        free(err);
        return rc;
    }
    json_t *j = status_json(r.status);
    if (r.status == ETSI004_METADATA_TOO_SMALL)
        json_object_set_new(j, "metadata_size_needed", json_integer(r.metadata_needed));
    if (r.status == ETSI004_SUCCESS) {
        json_t *chunk = json_pack("{s:I, s:I}", "index", (json_int_t)r.index, "size",
                                  (json_int_t)r.len * 8);
        if (c->show_keys)
            json_object_set_new(chunk, "key", key_b64(r.key, r.len));
        if (r.metadata != NULL && r.metadata[0] != '\0') {
            json_t *md = json_loads(r.metadata, 0, NULL);
            json_object_set_new(chunk, "metadata", md != NULL ? md : json_string(r.metadata));
        }
        json_object_set_new(j, "chunks", json_pack("[o]", chunk));
    }
    uint32_t status = r.status;
    etsi004_sync_get_clear(&r);
    print_json(j);
    return status == ETSI004_SUCCESS ? 0 : 1;
}

/* N KME-chosen chunks, collected on a private loop. */
struct many {
    bool done;
    int error;
    char *message;
    struct kme_keys *keys;
};

static void next_cb(const struct kme_result *res, struct kme_keys *k, void *arg)
{
    struct many *s = arg;
    s->done = true;
    s->error = res->error;
    if (res->error != KME_OK)
        s->message = strdup(res->message);
    s->keys = k;
}

static int do_get_many(struct cli *c)
{
    struct kme_keys *keys = NULL;
    char *err = NULL;
    int rc;
    if (c->next) {
        /* N KME-chosen chunks: the chunk operation, on a private loop. */
        uv_loop_t loop;
        uv_loop_init(&loop);
        etsi004_client *cl = etsi004_client_new(&loop, &c->cfg, &err);
        struct many s = {0};
        rc = cl != NULL ? KME_OK : KME_EINVAL;
        if (cl != NULL) {
            rc = etsi004_client_next_chunks(cl, c->ksid, (size_t)c->count, 0, c->wait_ms,
                                            next_cb, &s);
            while (rc == KME_OK && !s.done && uv_run(&loop, UV_RUN_ONCE) != 0)
                ;
            etsi004_client_free(&cl);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        if (rc == KME_OK)
            rc = s.done ? s.error : KME_EIO;
        if (rc != KME_OK && s.message != NULL) {
            free(err);
            err = s.message;
            s.message = NULL;
        }
        free(s.message);
        keys = s.keys;
    } else {
        rc = etsi004_sync_fetch_chunks(&c->cfg, c->ksid, c->index, (size_t)c->count, 0,
                                       &keys, &err);
    }
    if (rc != KME_OK) {
        kme_keys_free(&keys);
        rc = print_error(rc, err);
        free(err);
        return rc;
    }
    free(err);
    json_t *j = status_json(ETSI004_SUCCESS), *arr = json_array();
    for (size_t i = 0; i < keys->count; i++) {
        json_t *o = json_pack("{s:I, s:I}", "index", (json_int_t)keys->keys[i].index, "size",
                              (json_int_t)keys->keys[i].len * 8);
        if (c->show_keys)
            json_object_set_new(o, "key", key_b64(keys->keys[i].bytes, keys->keys[i].len));
        json_array_append_new(arr, o);
    }
    json_object_set_new(j, "chunks", arr);
    kme_keys_free(&keys);
    print_json(j);
    return 0;
}

static int do_close(struct cli *c)
{
    uint32_t st = 0;
    char *err = NULL;
    int rc = etsi004_sync_close(&c->cfg, c->ksid, &st, &err);
    if (rc != KME_OK) {
        rc = print_error(rc, err);
        free(err);
        return rc;
    }
    print_json(status_json(st));
    return st == ETSI004_SUCCESS ? 0 : 1;
}

bool cmd_kme_client004_verb(const char *verb)
{
    return strcmp(verb, "open") == 0 || strcmp(verb, "get") == 0 ||
           strcmp(verb, "close") == 0;
}

int cmd_kme_client004(int argc, char **argv)
{
    const char *verb = argv[1];
    struct cli c = {.next = true, .count = 1, .metadata_size = 1024};
    snprintf(c.qos.metadata_mimetype, sizeof(c.qos.metadata_mimetype), "application/json");
    int rc = parse(&c, argc - 1, argv + 1);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc < 0)
        return 2;
    if (c.kme == NULL || c.cfg.cert_file == NULL || c.cfg.key_file == NULL) {
        fprintf(stderr, "qumail kme-client: --kme, --cert and --key are required\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(verb, "open") != 0 && !c.has_ksid) {
        fprintf(stderr, "qumail kme-client: %s needs --ksid\n", verb);
        return 2;
    }
    if (etsi004_parse_address(c.kme, &c.host, &c.cfg.port) < 0) {
        bad("kme", c.kme, "etsi004://host[:port] or host[:port]");
        return 2;
    }
    c.cfg.host = c.host;
    c.cfg.max_connections = 4;
    int status;
    if (strcmp(verb, "open") == 0)
        status = do_open(&c);
    else if (strcmp(verb, "close") == 0)
        status = do_close(&c);
    else if (c.count > 1)
        status = do_get_many(&c);
    else
        status = do_get_one(&c);
    free(c.host);
    return status;
}
