/* qumail policy query: which rule applies to an address and with which
 * settings (inheritance applied), like `postmap -q`. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "settings.h"
#include "policy.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail policy query (--config FILE | --policy FILE) [--sender]\n"
            "                           [--json] ADDRESS...\n"
            "\n"
            "Shows, for each address, the rule that applies (pattern, file and line)\n"
            "and its effective settings after inheritance from the '*' rule and the\n"
            "built-in defaults: what the daemon does at RCPT for that recipient.\n"
            "--sender looks up the sender rules instead (the key link and master\n"
            "SAE used to decrypt mail from that address).\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   the daemon configuration: its policy_file, and\n"
            "                      its KME link names (checked, default link)\n"
            "  -p, --policy FILE   a policy file (overrides policy_file)\n"
            "  -s, --sender        query sender rules\n"
            "      --json          one JSON object per address, one per line\n"
            "  -h, --help          this help\n"
            "\n"
            "Exit status: 0 every address matched a rule, 1 some address matched\n"
            "none (the daemon refuses such a recipient) or a file has errors,\n"
            "2 usage error.\n");
}

static void print_rule(const char *addr, const struct policy_rule *r, const char *file,
                       bool as_json)
{
    bool none = r->kind == POLICY_KIND_BUILTIN;
    if (as_json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "address", addr, "rule",
                              none ? "" : r->pattern, "kind", policy_kind_name(r->kind),
                              "action", policy_action_name(r->action));
        if (!none) {
            json_object_set_new(o, "file", json_string(file));
            json_object_set_new(o, "line", json_integer(r->line));
        }
        if (policy_rule_protects(r)) {
            json_object_set_new(o, "level", json_string(policy_level_name(r->level)));
            if (r->level == POLICY_LEVEL_AUTO)
                json_object_set_new(o, "otp_max", json_integer((json_int_t)r->otp_max));
            json_object_set_new(o, "link", r->link ? json_string(r->link) : json_null());
            json_object_set_new(o, "slave_sae",
                                r->slave_sae ? json_string(r->slave_sae) : json_null());
            json_object_set_new(o, "subject",
                                json_string(r->protect_subject ? "protect" : "keep"));
            if (r->protect_subject && r->placeholder)
                json_object_set_new(o, "placeholder", json_string(r->placeholder));
            json_object_set_new(o, "on_no_key",
                                json_string(policy_on_no_key_name(r->on_no_key)));
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (s)
            puts(s);
        free(s);
        return;
    }
    if (none) {
        printf("%s: no rule matches (and no '*' rule): action=refuse\n", addr);
        return;
    }
    printf("%s: rule '%s' (%s, %s:%u) action=%s", addr, r->pattern,
           policy_kind_name(r->kind), file, r->line, policy_action_name(r->action));
    if (policy_rule_protects(r)) {
        printf(" level=%s", policy_level_name(r->level));
        if (r->level == POLICY_LEVEL_AUTO)
            printf(" otp_max=%" PRIu64, r->otp_max);
        printf(" link=%s slave_sae=%s subject=%s", r->link ? r->link : "(none)",
               r->slave_sae ? r->slave_sae : "(none)",
               r->protect_subject ? "protect" : "keep");
        if (r->protect_subject && r->placeholder)
            printf(" placeholder=\"%s\"", r->placeholder);
        printf(" on_no_key=%s", policy_on_no_key_name(r->on_no_key));
    }
    putchar('\n');
}

static void print_sender(const char *addr, const struct policy_sender_rule *r,
                         const char *file, bool as_json)
{
    if (as_json) {
        json_t *o = r ? json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s}", "address", addr,
                                  "rule", r->pattern, "kind", policy_kind_name(r->kind),
                                  "file", file, "line", (int)r->line, "link",
                                  r->link ? r->link : "", "master_sae",
                                  r->master_sae ? r->master_sae : "")
                      : json_pack("{s:s, s:n}", "address", addr, "rule");
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (s)
            puts(s);
        free(s);
        return;
    }
    if (!r)
        printf("%s: no sender rule matches\n", addr);
    else
        printf("%s: sender rule '%s' (%s, %s:%u) link=%s master_sae=%s\n", addr, r->pattern,
               policy_kind_name(r->kind), file, r->line, r->link ? r->link : "(none)",
               r->master_sae ? r->master_sae : "(none)");
}

static int query(int argc, char **argv)
{
    enum { OPT_JSON = 256 };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"policy", required_argument, NULL, 'p'},
        {"sender", no_argument, NULL, 's'},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *policy_path = NULL;
    bool sender = false, as_json = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:p:sh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'p': policy_path = optarg; break;
        case 's': sender = true; break;
        case OPT_JSON: as_json = true; break;
        case 'h': usage(stdout); return 0;
        default: fprintf(stderr, "usage: qumail policy --help\n"); return 2;
        }
    }
    if (!config_path && !policy_path) {
        fprintf(stderr, "qumail policy query: --config FILE or --policy FILE is required\n");
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "qumail policy query: an ADDRESS is required\n");
        return 2;
    }
    struct qumail_config *cfg = NULL;
    const char **links = NULL;
    char *err = NULL;
    int status = 1;
    policy *pol = NULL;
    if (config_path) {
        if (qumail_config_load(config_path, &cfg, &err) < 0) {
            fprintf(stderr, "%s\n", err ? err : "cannot load the configuration");
            goto out;
        }
        if (!policy_path)
            policy_path = cfg->policy_file;
        if (!policy_path) {
            fprintf(stderr, "%s: no policy_file: the daemon refuses every recipient\n",
                    config_path);
            goto out;
        }
        links = calloc(cfg->n_kme_links + 1, sizeof(*links));
        if (!links)
            goto out;
        for (size_t i = 0; i < cfg->n_kme_links; i++)
            links[i] = cfg->kme_links[i].name;
    }
    if (policy_load_file(policy_path, links, &pol, &err) < 0) {
        fprintf(stderr, "%s\n", err ? err : "cannot load the policy");
        goto out;
    }
    status = 0;
    for (int i = optind; i < argc; i++) {
        if (sender) {
            const struct policy_sender_rule *r = policy_lookup_sender(pol, argv[i]);
            print_sender(argv[i], r, policy_source(pol), as_json);
        } else {
            const struct policy_rule *r = policy_lookup(pol, argv[i]);
            print_rule(argv[i], r, policy_source(pol), as_json);
            if (r->kind == POLICY_KIND_BUILTIN)
                status = 1;
        }
    }
out:
    free(err);
    free(links);
    policy_unref(&pol);
    qumail_config_free(&cfg);
    return status;
}

int cmd_policy(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "query") == 0)
        return query(argc - 1, argv + 1);
    fprintf(stderr, "qumail policy: %s\nusage: qumail policy --help\n",
            argc < 2 ? "an action is required (query)" : "unknown action (query)");
    return 2;
}
