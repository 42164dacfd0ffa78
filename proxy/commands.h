/* The subcommands of the one qumail binary. Each lives in proxy/cmd_*.c and
 * returns a process exit status (0 ok, 1 failure, 2 usage). */
#ifndef QUMAIL_COMMANDS_H
#define QUMAIL_COMMANDS_H

#include <stdbool.h>

int cmd_proxy(int argc, char **argv);      /* the mail proxy daemon */
int cmd_kme(int argc, char **argv);        /* ETSI 014 KME simulator */
int cmd_kme_client(int argc, char **argv); /* talk to any ETSI 014 KME */
/* Its ETSI 004 actions (open, get, close: proxy/cmd_kme_client004.c). */
bool cmd_kme_client004_verb(const char *verb);
int cmd_kme_client004(int argc, char **argv);
int cmd_check(int argc, char **argv);      /* validate config and policy */
int cmd_mime(int argc, char **argv);       /* offline encrypt/decrypt/inspect */
int cmd_config(int argc, char **argv);     /* config dump */
int cmd_policy(int argc, char **argv);     /* policy query */

#endif
