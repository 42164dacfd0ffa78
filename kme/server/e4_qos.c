/* QoS negotiation for a new 004 stream (spec 6.1 and its NOTE): zero
 * fields are chosen by the KME; soft fields (Max_bps, Timeout) are brought
 * within what the KME provides and granted; hard fields (Key_chunk_size,
 * Min_bps, TTL, the metadata mimetype) that cannot be met make the open
 * fail with status 7 and a counter-proposal: the same QoS with each such
 * field replaced by the nearest value the KME grants. Jitter and Priority
 * are recorded and returned as asked (guidance only: the simulator
 * delivers as fast as it can). */
#include <string.h>
#include <strings.h>

#include "e4_internal.h"

#define JSON_MIMETYPE "application/json"

uint32_t e4_qos_negotiate(const struct kme_e4_cfg *cfg, uint64_t rate_bps,
                          const struct etsi004_qos *in, struct etsi004_qos *out)
{
    uint32_t rate = rate_bps > UINT32_MAX ? UINT32_MAX : (uint32_t)rate_bps;
    bool met = true;
    *out = *in;

    if (in->key_chunk_size == 0) {
        out->key_chunk_size = cfg->chunk_default;
    } else if (in->key_chunk_size < cfg->chunk_min) {
        out->key_chunk_size = cfg->chunk_min;
        met = false;
    } else if (in->key_chunk_size > cfg->chunk_max) {
        out->key_chunk_size = cfg->chunk_max;
        met = false;
    }

    /* Max_bps: "it may choose to do its best": granted at the link rate. */
    if (in->max_bps == 0 || in->max_bps > rate)
        out->max_bps = rate;
    /* Min_bps: "If the peer cannot meet the requested rate, it may reject
     * the request." */
    if (in->min_bps > rate) {
        out->min_bps = rate;
        met = false;
    }
    if (out->min_bps > out->max_bps)
        out->max_bps = out->min_bps;

    if (in->timeout == 0)
        out->timeout = cfg->timeout_default_ms;
    else if (in->timeout > cfg->timeout_max_ms)
        out->timeout = cfg->timeout_max_ms;

    if (in->ttl == 0) {
        out->ttl = cfg->ttl_default_s;
    } else if (in->ttl > cfg->ttl_max_s) {
        out->ttl = cfg->ttl_max_s;
        met = false;
    }

    /* "If a mimetype is specified, but the current KM implementation does
     * not support this particular mimetype then OPEN_CONNECT shall fail
     * but the metadata mimetype field shall return with the KM's preferred
     * mimetype." Empty: no metadata on this stream. */
    if (in->metadata_mimetype[0] != '\0' &&
        strcasecmp(in->metadata_mimetype, JSON_MIMETYPE) != 0) {
        met = false;
        memset(out->metadata_mimetype, 0, sizeof(out->metadata_mimetype));
        memcpy(out->metadata_mimetype, JSON_MIMETYPE, sizeof(JSON_MIMETYPE));
    } else if (in->metadata_mimetype[0] != '\0') {
        memset(out->metadata_mimetype, 0, sizeof(out->metadata_mimetype));
        memcpy(out->metadata_mimetype, JSON_MIMETYPE, sizeof(JSON_MIMETYPE));
    }
    return met ? ETSI004_SUCCESS : ETSI004_QOS_NOT_MET;
}
