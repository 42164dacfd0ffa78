/* Placeholder until the module lands; replaced by its real front end. */
#include <stdio.h>

#include "commands.h"

int cmd_proxy(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "qumail %s: not built yet\n", argv[0]);
    return 1;
}
