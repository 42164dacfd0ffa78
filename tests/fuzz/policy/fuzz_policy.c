/* libFuzzer target: the policy file parser (policy_load_buffer) and the
 * lookups a loaded policy answers. Links "site" and "other" exist. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const links[] = {"site", "other", NULL};
    static const char *const addrs[] = {
        "bob@example.org", "a@sub.example.org", "x@example.net", "@", "",
        "user+tag@EXAMPLE.ORG", "\xc3\xa9@example.org", "nobody",
    };
    policy *pol = NULL;
    char *err = NULL;
    int rc = policy_load_buffer("fuzz.policy", (const char *)data, size,
                                (data[0 % (size ? size : 1)] & 1) ? links : NULL, &pol, &err);
    if (rc == 0) {
        if (pol == NULL)
            abort();
        for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
            const struct policy_rule *r = policy_lookup(pol, addrs[i]);
            if (r != NULL) {
                (void)policy_rule_protects(r);
                (void)policy_rule_uses_otp(r, 1000);
            }
            (void)policy_lookup_sender(pol, addrs[i]);
        }
        (void)policy_rule_count(pol);
        policy_unref(&pol);
    } else if (pol != NULL || err == NULL) {
        abort(); /* failure: no policy, and a message */
    }
    free(err);
    return 0;
}
