/* qumail: one binary, subcommands dispatched from a table. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "commands.h"

#ifndef QUMAIL_VERSION
#define QUMAIL_VERSION "unknown"
#endif

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"proxy", cmd_proxy, "run the SMTP/IMAP proxy daemon"},
    {"kme", cmd_kme, "run the ETSI GS QKD 014 KME simulator"},
    {"kme-client", cmd_kme_client, "query an ETSI GS QKD 014 KME (status, enc, dec)"},
    {"check", cmd_check, "validate a configuration and its policy file"},
    {"mime", cmd_mime, "encrypt, decrypt or inspect a message file offline"},
    {"config", cmd_config, "print the effective configuration (config dump)"},
    {"policy", cmd_policy, "show the rule and settings for an address (policy query)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: qumail <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nqumail <command> --help shows a command's options; man qumail\n"
                 "describes them all. Exit status: 0 ok, 1 failure, 2 usage error.\n");
}

/* jansson keeps copies of every string it parses or builds, and key
 * material passes through it (ETSI 014 key containers, key files): wipe
 * each of its blocks before it goes back to the allocator. */
static void jansson_wiping_free(void *p)
{
    if (p != NULL)
        OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

int main(int argc, char **argv)
{
    json_set_alloc_funcs(malloc, jansson_wiping_free);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("qumail %s\n", QUMAIL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "qumail: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
