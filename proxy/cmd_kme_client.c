/* qumail kme-client: talk to any ETSI GS QKD 014 KME from the command line.
 * Prints JSON on stdout (results and errors alike); key bytes only with
 * --show-keys, since they are secrets. */
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "kme_client.h"

#define MAX_KEY_IDS 4096

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail kme-client status --slave-sae SAE_ID [connection options]\n"
            "       qumail kme-client enc --slave-sae SAE_ID [--number N] [--size BITS]\n"
            "                             [--show-keys]\n"
            "       qumail kme-client enc --slave-sae SAE_ID --bits TOTAL_BITS [--show-keys]\n"
            "       qumail kme-client dec --master-sae SAE_ID --key-id UUID [--key-id UUID...]\n"
            "                             [--show-keys]\n"
            "       qumail kme-client open|get|close ...   (ETSI 004 key streams: open --help)\n"
            "\n"
            "connection options (the same names as `qumail mime`):\n"
            "  --kme URL          KME base URL, https://host[:port][/prefix] (required;\n"
            "                     alias --url)\n"
            "  --cert FILE        SAE client certificate (PEM, required: mutual TLS)\n"
            "  --key FILE         its private key (PEM, required)\n"
            "  --ca FILE          CA certificates trusted for the KME (default: system)\n"
            "  --server-name NAME name checked in the KME certificate (default: URL host)\n"
            "  --kme-id ID        require this KME ID as the certificate's CN\n"
            "  --timeout MS       connect and request timeout (default 5000 and 10000)\n"
            "  --deadline MS      dec: keep retrying 'not found' this long (default 10000)\n"
            "other options:\n"
            "  --slave-sae ID     status, enc: the receiving SAE (alias --slave)\n"
            "  --master-sae ID    dec: the SAE that called enc_keys (alias --master)\n"
            "  --sae ID           either of the two, whichever the action needs\n"
            "  --number N         enc: number of keys (default 1)\n"
            "  --size BITS        enc: size of each key (default: the KME's key_size)\n"
            "  --bits TOTAL       enc: exactly TOTAL bits, split as the KME's limits require\n"
            "  --key-id UUID      dec: a key ID (repeat for several; or a comma-separated list)\n"
            "  --show-keys        print key bytes (base64). They are secret: handle with care.\n"
            "Output: JSON on stdout. Exit status 0 ok, 1 KME or transport error (JSON\n"
            "\"error\" object), 2 usage error (the option is named on stderr).\n");
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL)
        return 1;
    puts(s);
    free(s);
    return 0;
}

static int print_error(int rc, const char *message)
{
    json_t *j = json_pack("{s:s, s:s, s:b}", "error", kme_client_errname(rc), "message",
                          message ? message : kme_client_strerror(rc), "temporary",
                          kme_client_error_is_temporary(rc));
    print_json(j);
    fprintf(stderr, "qumail kme-client: %s\n", message ? message : kme_client_strerror(rc));
    return 1;
}

static int print_keys(const struct kme_keys *keys, bool show)
{
    json_t *arr = json_array();
    uint64_t total = 0;
    for (size_t i = 0; i < keys->count; i++) {
        const struct kme_key *k = &keys->keys[i];
        json_t *o = json_pack("{s:s, s:I}", "key_ID", k->key_id, "size", (json_int_t)k->len * 8);
        if (show) {
            size_t cap = 4 * ((k->len + 2) / 3) + 1;
            unsigned char *b64 = malloc(cap);
            if (b64 != NULL) {
                EVP_EncodeBlock(b64, k->bytes, (int)k->len);
                json_object_set_new(o, "key", json_string((char *)b64));
                OPENSSL_cleanse(b64, cap);
                free(b64);
            }
        }
        json_array_append_new(arr, o);
        total += k->len * 8;
    }
    json_t *j = json_pack("{s:o, s:I}", "keys", arr, "total_bits", (json_int_t)total);
    /* The dump holds key text when --show-keys: wipe it after printing. */
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL)
        return 1;
    puts(s);
    OPENSSL_cleanse(s, strlen(s));
    free(s);
    return 0;
}

static int print_status(const struct kme_status *st)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                          "source_KME_ID", st->source_kme_id, "target_KME_ID",
                          st->target_kme_id, "master_SAE_ID", st->master_sae_id,
                          "slave_SAE_ID", st->slave_sae_id, "key_size",
                          (json_int_t)st->key_size, "stored_key_count",
                          (json_int_t)st->stored_key_count, "max_key_count",
                          (json_int_t)st->max_key_count, "max_key_per_request",
                          (json_int_t)st->max_key_per_request, "max_key_size",
                          (json_int_t)st->max_key_size, "min_key_size",
                          (json_int_t)st->min_key_size, "max_SAE_ID_count",
                          (json_int_t)st->max_sae_id_count);
    return print_json(j);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0' || *s == '-')
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

enum opt_id {
    OPT_URL = 1000, OPT_CERT, OPT_KEY, OPT_CA, OPT_SERVER_NAME, OPT_KME_ID, OPT_TIMEOUT,
    OPT_DEADLINE, OPT_SAE, OPT_SLAVE, OPT_MASTER, OPT_NUMBER, OPT_SIZE, OPT_BITS,
    OPT_KEY_ID, OPT_SHOW_KEYS, OPT_HELP,
};

static const struct option options[] = {
    {"kme", required_argument, NULL, OPT_URL},
    {"url", required_argument, NULL, OPT_URL}, /* older name, kept */
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"ca", required_argument, NULL, OPT_CA},
    {"server-name", required_argument, NULL, OPT_SERVER_NAME},
    {"kme-id", required_argument, NULL, OPT_KME_ID},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"deadline", required_argument, NULL, OPT_DEADLINE},
    {"sae", required_argument, NULL, OPT_SAE},
    {"slave-sae", required_argument, NULL, OPT_SLAVE},
    {"master-sae", required_argument, NULL, OPT_MASTER},
    {"slave", required_argument, NULL, OPT_SLAVE},   /* older names, kept */
    {"master", required_argument, NULL, OPT_MASTER},
    {"number", required_argument, NULL, OPT_NUMBER},
    {"size", required_argument, NULL, OPT_SIZE},
    {"bits", required_argument, NULL, OPT_BITS},
    {"key-id", required_argument, NULL, OPT_KEY_ID},
    {"show-keys", no_argument, NULL, OPT_SHOW_KEYS},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

struct cli {
    struct kme_client_config cfg;
    const char *sae;
    uint64_t number, size, bits;
    bool has_number, has_size, has_bits, show_keys;
    char *ids_buf[MAX_KEY_IDS];
    const char *ids[MAX_KEY_IDS];
    size_t nids;
};

static int add_key_ids(struct cli *c, const char *arg)
{
    char *copy = strdup(arg);
    if (copy == NULL)
        return -1;
    char *save = NULL;
    bool any = false;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (c->nids >= MAX_KEY_IDS) {
            free(copy);
            return -1;
        }
        c->ids_buf[c->nids] = strdup(t);
        if (c->ids_buf[c->nids] == NULL) {
            free(copy);
            return -1;
        }
        c->ids[c->nids] = c->ids_buf[c->nids];
        c->nids++;
        any = true;
    }
    free(copy);
    return any ? 0 : -1;
}

/* A usage error naming the option; -1 for parse_args. */
static int bad_value(const char *option, const char *value, const char *want)
{
    fprintf(stderr, "qumail kme-client: --%s: '%s' is not %s\n", option, value, want);
    return -1;
}

static int parse_args(struct cli *c, int argc, char **argv)
{
    int ch, idx = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", options, &idx)) != -1) {
        uint64_t v;
        const char *name = options[idx].name;
        switch (ch) {
        case OPT_URL: c->cfg.url = optarg; break;
        case OPT_CERT: c->cfg.cert_file = optarg; break;
        case OPT_KEY: c->cfg.key_file = optarg; break;
        case OPT_CA: c->cfg.ca_file = optarg; break;
        case OPT_SERVER_NAME: c->cfg.server_name = optarg; break;
        case OPT_KME_ID: c->cfg.expect_kme_id = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_u64(optarg, &v) || v == 0)
                return bad_value(name, optarg, "a positive number of milliseconds");
            c->cfg.connect_timeout_ms = c->cfg.request_timeout_ms = v;
            break;
        case OPT_DEADLINE:
            if (!parse_u64(optarg, &v) || v == 0)
                return bad_value(name, optarg, "a positive number of milliseconds");
            c->cfg.dec_deadline_ms = v;
            break;
        case OPT_SAE:
        case OPT_SLAVE:
        case OPT_MASTER: c->sae = optarg; break;
        case OPT_NUMBER:
            if (!parse_u64(optarg, &c->number))
                return bad_value(name, optarg, "a number of keys");
            c->has_number = true;
            break;
        case OPT_SIZE:
            if (!parse_u64(optarg, &c->size))
                return bad_value(name, optarg, "a number of bits");
            c->has_size = true;
            break;
        case OPT_BITS:
            if (!parse_u64(optarg, &c->bits))
                return bad_value(name, optarg, "a number of bits");
            c->has_bits = true;
            break;
        case OPT_KEY_ID:
            if (add_key_ids(c, optarg) < 0)
                return bad_value(name, optarg, "a key ID list (at most 4096)");
            break;
        case OPT_SHOW_KEYS: c->show_keys = true; break;
        case OPT_HELP: return 1;
        default: return -1; /* getopt named the option */
        }
        idx = 0;
    }
    if (optind < argc) {
        fprintf(stderr, "qumail kme-client: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

int cmd_kme_client(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (cmd_kme_client004_verb(verb)) /* ETSI 004 key streams */
        return cmd_kme_client004(argc, argv);
    if (strcmp(verb, "status") != 0 && strcmp(verb, "enc") != 0 && strcmp(verb, "dec") != 0) {
        fprintf(stderr, "qumail kme-client: unknown action '%s' (status, enc, dec, open, "
                        "get or close)\n", verb);
        return 2;
    }
    struct cli c = {.cfg.max_connections = 4};
    int rc = parse_args(&c, argc - 1, argv + 1);
    int status = 2;
    if (rc == 1) {
        usage(stdout);
        status = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "usage: see qumail kme-client --help\n");
        goto out;
    }
    const char *missing = c.cfg.url == NULL         ? "--kme URL"
                          : c.cfg.cert_file == NULL ? "--cert FILE"
                          : c.cfg.key_file == NULL  ? "--key FILE"
                          : c.sae == NULL ? (strcmp(verb, "dec") == 0 ? "--master-sae ID"
                                                                      : "--slave-sae ID")
                                          : NULL;
    if (missing != NULL) {
        fprintf(stderr, "qumail kme-client %s: %s is required\n", verb, missing);
        fprintf(stderr, "usage: see qumail kme-client --help\n");
        goto out;
    }
    char *err = NULL;
    if (strcmp(verb, "status") == 0) {
        struct kme_status *st = NULL;
        rc = kme_sync_status(&c.cfg, c.sae, &st, &err);
        status = rc == 0 ? print_status(st) : print_error(rc, err);
        kme_status_free(&st);
    } else if (strcmp(verb, "enc") == 0) {
        struct kme_keys *keys = NULL;
        if (c.has_bits && (c.has_number || c.has_size)) {
            fprintf(stderr, "qumail kme-client: --bits excludes --number and --size\n");
            goto out;
        }
        if (c.has_bits)
            rc = kme_sync_enc_bits(&c.cfg, c.sae, c.bits, &keys, &err);
        else
            rc = kme_sync_enc_keys(&c.cfg, c.sae, c.has_number ? c.number : 1,
                                   c.has_size ? c.size : 0, &keys, &err);
        status = rc == 0 ? print_keys(keys, c.show_keys) : print_error(rc, err);
        kme_keys_free(&keys);
    } else if (strcmp(verb, "dec") == 0) {
        struct kme_keys *keys = NULL;
        if (c.nids == 0) {
            fprintf(stderr, "qumail kme-client: dec needs --key-id\n");
            goto out;
        }
        rc = kme_sync_dec_keys(&c.cfg, c.sae, c.ids, c.nids, &keys, &err);
        status = rc == 0 ? print_keys(keys, c.show_keys) : print_error(rc, err);
        kme_keys_free(&keys);
    } else {
        fprintf(stderr, "qumail kme-client: unknown action '%s'\n", verb);
        usage(stderr);
    }
    free(err);
out:
    for (size_t i = 0; i < c.nids; i++)
        free(c.ids_buf[i]);
    return status;
}
