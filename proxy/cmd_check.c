/* qumail check: validate a daemon configuration and its policy file,
 * reporting every problem with file and line (exit 1 if any). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "settings.h"
#include "kme_server.h"
#include "policy.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qumail check --config FILE [--policy FILE] [--files]\n"
            "       qumail check --policy FILE\n"
            "\n"
            "Validates the daemon configuration (config/README.md) and the policy\n"
            "file (policy/README.md): the one given with --policy, else the\n"
            "configuration's policy_file. Every problem is printed on stderr as\n"
            "FILE:LINE[:COL]: message; the exit status is 1 if there is any.\n"
            "Without --config, link names in the policy are not checked.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   daemon configuration (JSON)\n"
            "  -p, --policy FILE   policy file (overrides policy_file)\n"
            "  -f, --files         also check what the daemon needs at start:\n"
            "                      certificate, key, CA and policy files readable,\n"
            "                      state_dir writable (or creatable), the\n"
            "                      simulator's state file writable\n"
            "  -q, --quiet         print problems only\n"
            "  -h, --help          this help\n"
            "\n"
            "Exit status: 0 no problem, 1 problems (listed on stderr), 2 usage error.\n"
            "'ok' is printed (stdout) only for a file without problems.\n");
}

static void print_lines(const char *text)
{
    if (text)
        fprintf(stderr, "%s\n", text);
}

/* --files: a named file must be readable. */
static int check_file(const char *cfgname, const char *key, const char *path)
{
    if (!path || access(path, R_OK) == 0)
        return 0;
    fprintf(stderr, "%s: key '%s': cannot read %s: %s\n", cfgname, key, path,
            strerror(errno));
    return 1;
}

/* dirname(3) without modifying its argument: "a/b" -> "a", "/a" -> "/",
 * "a" -> ".". Caller frees; NULL when out of memory. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* A folder the daemon writes in: it must exist (or be creatable, for
 * state_dir, which the daemon creates) and be writable. */
static int check_dir(const char *cfgname, const char *key, const char *path, bool creatable)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "%s: key '%s': %s is not a directory\n", cfgname, key, path);
            return 1;
        }
        if (access(path, W_OK | X_OK) != 0) {
            fprintf(stderr, "%s: key '%s': cannot write in %s: %s\n", cfgname, key, path,
                    strerror(errno));
            return 1;
        }
        return 0;
    }
    if (errno != ENOENT || !creatable) {
        fprintf(stderr, "%s: key '%s': cannot use %s: %s\n", cfgname, key, path,
                strerror(errno));
        return 1;
    }
    /* Missing: the daemon creates it (mkdir -p) if the nearest existing
     * ancestor is writable. */
    char *dir = parent_dir(path);
    int bad = 0;
    while (dir) {
        if (stat(dir, &st) == 0) {
            if (!S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) != 0) {
                fprintf(stderr, "%s: key '%s': %s does not exist and cannot be created "
                        "(%s is not writable)\n", cfgname, key, path, dir);
                bad = 1;
            }
            break;
        }
        if (strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0)
            break;
        char *up = parent_dir(dir);
        free(dir);
        dir = up;
    }
    free(dir);
    return bad;
}

/* The folder a file is written into (SQLite also writes -journal/-wal
 * files beside it), and the file itself when it exists. */
static int check_state_file(const char *cfgname, const char *key, const char *path,
                            const char *state_dir)
{
    char *dir = parent_dir(path);
    if (!dir)
        return 1;
    int bad = 0;
    /* Inside state_dir (the default), state_dir's own check covers it. */
    if (!(state_dir && strcmp(dir, state_dir) == 0))
        bad = check_dir(cfgname, key, dir, false);
    free(dir);
    if (!bad && access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0) {
        fprintf(stderr, "%s: key '%s': cannot read and write %s: %s\n", cfgname, key,
                path, strerror(errno));
        bad = 1;
    }
    return bad;
}

static int check_listener_files(const char *f, const char *proto,
                                const struct qumail_listener *ls, size_t n)
{
    int bad = 0;
    char key[256];
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%s.listeners[%zu].cert_file", proto, i);
        bad += check_file(f, key, ls[i].cert_file);
        snprintf(key, sizeof(key), "%s.listeners[%zu].key_file", proto, i);
        bad += check_file(f, key, ls[i].key_file);
    }
    return bad;
}

static int check_upstream_files(const char *f, const char *proto,
                                const struct qumail_upstream *u)
{
    int bad = 0;
    char key[256];
    snprintf(key, sizeof(key), "%s.upstream.ca_file", proto);
    bad += check_file(f, key, u->ca_file);
    snprintf(key, sizeof(key), "%s.upstream.client_cert_file", proto);
    bad += check_file(f, key, u->client_cert_file);
    snprintf(key, sizeof(key), "%s.upstream.client_key_file", proto);
    bad += check_file(f, key, u->client_key_file);
    return bad;
}

static int check_files(const struct qumail_config *c)
{
    int bad = 0;
    char key[256];
    const char *f = c->file;
    bad += check_dir(f, "state_dir", c->state_dir, true);
    bad += check_listener_files(f, "smtp", c->smtp.listeners, c->smtp.n_listeners);
    bad += check_upstream_files(f, "smtp", &c->smtp.upstream);
    if (c->imap.enabled) {
        bad += check_listener_files(f, "imap", c->imap.listeners, c->imap.n_listeners);
        bad += check_upstream_files(f, "imap", &c->imap.upstream);
    }
    for (size_t i = 0; i < c->n_kme_links; i++) {
        const struct qumail_kme_link *l = &c->kme_links[i];
        snprintf(key, sizeof(key), "kme_links.%s.ca_file", l->name);
        bad += check_file(f, key, l->ca_file);
        snprintf(key, sizeof(key), "kme_links.%s.cert_file", l->name);
        bad += check_file(f, key, l->cert_file);
        snprintf(key, sizeof(key), "kme_links.%s.key_file", l->name);
        bad += check_file(f, key, l->key_file);
    }
    const struct qumail_kme_simulator *k = &c->kme_simulator;
    if (k->enabled && k->config_file) {
        bad += check_file(f, "kme_simulator.config_file", k->config_file);
    } else if (k->enabled) {
        bad += check_file(f, "kme_simulator.ca_file", k->ca_file);
        bad += check_file(f, "kme_simulator.a.cert_file", k->a.cert_file);
        bad += check_file(f, "kme_simulator.a.key_file", k->a.key_file);
        bad += check_file(f, "kme_simulator.b.cert_file", k->b.cert_file);
        bad += check_file(f, "kme_simulator.b.key_file", k->b.key_file);
        bad += check_state_file(f, "kme_simulator.state_path", k->state_path, c->state_dir);
    }
    return bad;
}

/* When the configuration has errors, still find what the policy needs
 * from it: the policy_file and the names under kme_links. */
struct salvage {
    char *policy_file;
    const char **links; /* NULL-terminated; the strings live in doc */
    struct qcfg *doc;
};

static void salvage_read(const char *path, struct salvage *s)
{
    char *err = NULL;
    if (qcfg_load_file(path, &s->doc, &err) < 0) {
        free(err);
        return; /* a syntax error: nothing to salvage */
    }
    qcfg_node *root = qcfg_root(s->doc); /* qcfg_member: NULL unless an object */
    qcfg_path(qcfg_member(root, "policy_file", 0), 0, &s->policy_file);
    qcfg_node *links = qcfg_member(root, "kme_links", 0);
    size_t n = qcfg_object_size(links);
    s->links = calloc(n + 1, sizeof(*s->links));
    if (!s->links)
        return;
    size_t it = 0, i = 0;
    const char *name;
    while (i < n && qcfg_object_next(links, &it, &name))
        s->links[i++] = name;
}

static void salvage_free(struct salvage *s)
{
    free(s->policy_file);
    free(s->links);
    qcfg_free(&s->doc);
}

int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"policy", required_argument, NULL, 'p'},
        {"files", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *policy_path = NULL;
    bool files = false, quiet = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:p:fqh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'p': policy_path = optarg; break;
        case 'f': files = true; break;
        case 'q': quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: fprintf(stderr, "usage: qumail check --help\n"); return 2;
        }
    }
    if (optind < argc || (!config_path && !policy_path)) {
        fprintf(stderr, "qumail check: %s\nusage: qumail check --help\n",
                optind < argc ? "unexpected argument" : "--config FILE or --policy FILE is required");
        return 2;
    }

    int problems = 0;
    struct qumail_config *cfg = NULL;
    struct salvage salvage = {0};
    bool config_ok = false;
    if (config_path) {
        char *err = NULL;
        if (qumail_config_load(config_path, &cfg, &err) < 0) {
            print_lines(err);
            problems++;
            salvage_read(config_path, &salvage);
            if (!policy_path)
                policy_path = salvage.policy_file;
        } else {
            config_ok = true;
            int config_problems = 0;
            if (files)
                config_problems += check_files(cfg);
            if (cfg->kme_simulator.enabled && cfg->kme_simulator.config_file) {
                kme_server_config *kc = NULL;
                char *kerr = NULL;
                if (kme_server_config_load(cfg->kme_simulator.config_file, &kc, &kerr) < 0) {
                    print_lines(kerr);
                    config_problems++;
                }
                free(kerr);
                kme_server_config_free(&kc);
            }
            problems += config_problems;
            if (!quiet && config_problems == 0) {
                char imap[64] = "IMAP off";
                if (cfg->imap.enabled)
                    snprintf(imap, sizeof(imap), "%zu IMAP listener%s", cfg->imap.n_listeners,
                             cfg->imap.n_listeners == 1 ? "" : "s");
                printf("%s: ok (%s mode, %zu SMTP listener%s, %s, %zu KME link%s, "
                       "KME simulator %s)\n",
                       config_path, qumail_smtp_mode_name(cfg->smtp.mode),
                       cfg->smtp.n_listeners, cfg->smtp.n_listeners == 1 ? "" : "s", imap,
                       cfg->n_kme_links, cfg->n_kme_links == 1 ? "" : "s",
                       cfg->kme_simulator.enabled ? "enabled" : "off");
                if (cfg->imap.enabled && !cfg->imap.upstream.verify)
                    printf("%s: note: imap.upstream.verify is false: the IMAP server's "
                           "certificate is not checked\n", config_path);
            }
        }
        free(err);
        if (!policy_path && cfg)
            policy_path = cfg->policy_file;
        if (config_ok && !policy_path && !quiet)
            printf("%s: note: no policy_file: the daemon refuses every recipient "
                   "(fail closed) until one is configured\n", config_path);
    }

    if (policy_path) {
        /* the link names the policy may use; unchecked without a config */
        const char **links = NULL;
        const char *const *use_links = NULL;
        if (config_ok) {
            links = calloc(cfg->n_kme_links + 1, sizeof(*links));
            if (!links) {
                fprintf(stderr, "qumail check: out of memory\n");
                qumail_config_free(&cfg);
                return 1;
            }
            for (size_t i = 0; i < cfg->n_kme_links; i++)
                links[i] = cfg->kme_links[i].name;
            use_links = links;
        } else if (salvage.links) {
            use_links = salvage.links;
        }
        policy *pol = NULL;
        char *err = NULL;
        if (policy_load_file(policy_path, use_links, &pol, &err) < 0) {
            print_lines(err);
            problems++;
        } else if (!quiet) {
            printf("%s: ok (%zu recipient rule%s, %zu sender rule%s)\n", policy_path,
                   policy_rule_count(pol), policy_rule_count(pol) == 1 ? "" : "s",
                   policy_sender_rule_count(pol),
                   policy_sender_rule_count(pol) == 1 ? "" : "s");
            if (policy_lookup(pol, "")->kind == POLICY_KIND_BUILTIN)
                printf("%s: note: no '*' rule: recipients no rule matches are refused\n",
                       policy_path);
            if (config_path && !use_links)
                printf("%s: note: link names not checked (the configuration has errors)\n",
                       policy_path);
        }
        free(err);
        free(links);
        policy_unref(&pol);
    }
    qumail_config_free(&cfg);
    salvage_free(&salvage);
    return problems ? 1 : 0;
}
