/* Splitting "exactly N bits" into enc_keys calls the KME accepts.
 *
 * Work in bytes: sizes are multiples of 8 bits within the KME's
 * [min_key_size, max_key_size]. With k = ceil(B / M) keys (the fewest that
 * can hold B bytes), every key starts at the minimum m and the surplus
 * E = B - k*m is poured into keys up to M each: floor(E / (M - m)) keys end
 * at M, one key gets the remainder, the rest stay at m. A plan thus has
 * at most three sizes (few calls: one per size and max_key_per_request
 * keys) and sum(sizes) == B exactly: no key bit is fetched and wasted. */
#include "client_internal.h"

static void add_group(struct kme_split_plan *plan, uint64_t count, uint64_t bytes)
{
    if (count == 0)
        return;
    if (plan->ngroups > 0 && plan->groups[plan->ngroups - 1].size_bits == bytes * 8) {
        plan->groups[plan->ngroups - 1].count += count;
        return;
    }
    plan->groups[plan->ngroups].count = count;
    plan->groups[plan->ngroups].size_bits = bytes * 8;
    plan->ngroups++;
}

int kme_split(const struct kme_split_limits *lim, uint64_t total_bits,
              struct kme_split_plan *plan)
{
    *plan = (struct kme_split_plan){0};
    if (total_bits == 0 || total_bits % 8 != 0 || total_bits > KME_SPLIT_MAX_TOTAL_BITS)
        return KME_EINVAL;
    if (lim->max_key_per_request == 0 || lim->max_key_size < 8)
        return KME_ELIMITS;

    uint64_t min_bytes = lim->min_key_size / 8 + (lim->min_key_size % 8 != 0);
    if (min_bytes == 0)
        min_bytes = 1;
    uint64_t max_bytes = lim->max_key_size / 8;
    if (min_bytes > max_bytes)
        return KME_ELIMITS;

    uint64_t bytes = total_bits / 8;
    uint64_t k = bytes / max_bytes + (bytes % max_bytes != 0);
    /* k * min_bytes > bytes, written without overflow */
    if (min_bytes > bytes / k)
        return KME_ELIMITS;
    uint64_t surplus = bytes - k * min_bytes;

    if (max_bytes == min_bytes) {
        if (surplus != 0)
            return KME_ELIMITS;
        add_group(plan, k, max_bytes);
    } else {
        uint64_t span = max_bytes - min_bytes;
        uint64_t full = surplus / span;
        uint64_t rest = surplus % span;
        add_group(plan, full, max_bytes);
        if (full < k) {
            add_group(plan, 1, min_bytes + rest);
            add_group(plan, k - full - 1, min_bytes);
        }
    }
    plan->keys = k;
    for (size_t i = 0; i < plan->ngroups; i++) {
        uint64_t n = plan->groups[i].count;
        plan->calls += n / lim->max_key_per_request + (n % lim->max_key_per_request != 0);
    }
    return 0;
}
