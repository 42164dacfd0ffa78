/* libFuzzer target: an Autodiscover request body through the parser, and
 * whatever address it yields through both documents. Invariants: an
 * accepted address passes admin_address_ok, both documents build for it,
 * and neither contains a raw '<' from the address (it was refused or
 * escaped). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

static const struct admin_mail mail = {
    .servers = {
        {"imap", "127.0.0.1", 2143, ADMIN_SEC_STARTTLS, true},
        {"smtp", "127.0.0.1", 2587, ADMIN_SEC_PLAIN, true},
    },
    .n_servers = 2,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char address[256], schema[256];
    if (admin_autodiscover_parse((const char *)data, size, address, sizeof(address), schema,
                                 sizeof(schema)) < 0)
        return 0;
    if (!admin_address_ok(address) || strchr(address, '<') || strchr(address, '&'))
        abort();
    char *a = admin_autoconfig_xml(&mail, address);
    char *b = admin_autodiscover_xml(&mail, address, schema);
    if (a == NULL || b == NULL)
        abort();
    free(a);
    free(b);
    return 0;
}
