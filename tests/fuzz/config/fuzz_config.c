/* libFuzzer target: the configuration readers - the daemon's settings
 * (qumail_config_load_buffer, over the generic reader) and the KME
 * simulator's (kme_server_config_parse). Byte 0 bit 0 picks the reader;
 * the rest is the JSON text. Invariant: success gives a configuration and
 * no message, failure a message and none. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "settings.h"
#include "kme_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char *err = NULL;
    if (data[0] & 1) {
        kme_server_config *cfg = NULL;
        int rc = kme_server_config_parse("fuzz.json", "/nonexistent", text, len, &cfg, &err);
        if ((rc == 0) != (cfg != NULL) || (rc != 0 && err == NULL))
            abort();
        kme_server_config_free(&cfg);
    } else {
        struct qumail_config *cfg = NULL;
        int rc = qumail_config_load_buffer("fuzz.json", "/nonexistent", text, len, &cfg, &err);
        if ((rc == 0) != (cfg != NULL) || (rc != 0 && err == NULL))
            abort();
        qumail_config_free(&cfg);
    }
    free(err);
    return 0;
}
