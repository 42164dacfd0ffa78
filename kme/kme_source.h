/* kme_source: where the proxy takes the keys of one key link, whatever the
 * KME speaks: ETSI GS QKD 014 (kme_client.h: keys by key_ID) or ETSI GS
 * QKD 004 (etsi004_client.h: chunks of a key stream by index). Policy
 * chooses a link per recipient; the link's configured kind chooses the
 * source. The caller sees one interface:
 *
 *   identity   the source KME ID and master SAE ID a message's control
 *              part names (014: the status call; 004: the KME certificate's
 *              CN and ours);
 *   enc_bits   exactly the key bits a message needs (014: keys split to the
 *              KME's limits; 004: whole chunks of the link's stream at
 *              KME-chosen indices, the last one used in part: mime writes
 *              them as a Key-Chunks entry with the KSID and index range);
 *   dec        the keys a received message names (014: dec_keys by key_ID;
 *              004: the chunks by index, at the reader's own KME);
 *   cancel     every operation submitted with an arg.
 *
 * A 004 source has one stream, a predefined KSID agreed with the peer
 * organisation (kme/ETSI004.md, "Mail over 004"): the source opens it
 * (OPEN_CONNECT, reattaching to a registered end) before its first use
 * and again after the KME said the stream or the peer is gone.
 *
 * Callbacks follow kme_client.h: a synchronous failure (negative return)
 * never calls back; otherwise exactly once, on the loop, never inside the
 * call; kme_source_cancel() and kme_source_free() call back the cancelled
 * operations with KME_ECANCELLED before they return. Keys handed to a
 * callback are its own (kme_keys_free wipes them); 004 keys carry their
 * ksid and index (struct kme_key). */
#ifndef QUMAIL_KME_SOURCE_H
#define QUMAIL_KME_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "etsi004_client.h"
#include "kme_client.h"

typedef struct kme_source kme_source;

enum kme_source_kind {
    KME_SOURCE_ETSI014 = 0,
    KME_SOURCE_ETSI004 = 1,
};

/* An ETSI 014 link over client; owned: kme_source_free frees the client
 * too, else the caller keeps it (and frees it after the source). */
kme_source *kme_source_new_014(kme_client *client, bool owned);

/* The stream of an ETSI 004 link. */
struct kme_source_stream {
    const char *ksid;          /* required: the predefined KSID (UUID text) */
    const char *source;        /* OPEN_CONNECT source URI; NULL: qkd://<our SAE> */
    const char *destination;   /* NULL: qkd://peer */
    uint32_t chunk_size;       /* Key_chunk_size asked (bytes); 0: the KME's */
    uint32_t ttl_s;            /* TTL asked; 0: the KME's */
    uint32_t timeout_ms;       /* Timeout asked; 0: the KME's */
};
/* An ETSI 004 link over client (owned as above). NULL and *error_r when
 * the stream description is invalid. */
kme_source *kme_source_new_004(etsi004_client *client, bool owned,
                               const struct kme_source_stream *stream,
                               char **error_r);

/* Cancels everything (callbacks with KME_ECANCELLED), frees what it owns,
 * clears *s. */
void kme_source_free(kme_source **s);
enum kme_source_kind kme_source_kind(const kme_source *s);
/* The 014 client of a 014 source, else NULL (operator status probes). */
kme_client *kme_source_014(kme_source *s);
/* The KSID of a 004 source's stream (lowercase UUID text), else NULL (the
 * reading side takes chunks only of the stream of the sender's link). */
const char *kme_source_ksid(const kme_source *s);

typedef void (*kme_source_ids_cb)(const struct kme_result *res,
                                  const char *source_kme_id,
                                  const char *master_sae_id, void *arg);
int kme_source_identity(kme_source *s, const char *slave_sae_id,
                        kme_source_ids_cb cb, void *arg);

/* total_bits: a positive multiple of 8. 004: the keys hold at least
 * total_bits (whole chunks). */
int kme_source_enc_bits(kme_source *s, const char *slave_sae_id,
                        uint64_t total_bits, kme_keys_cb cb, void *arg);

/* What a received message names, in key-stream order: a 014 key_ID, or
 * chunks first .. first+count-1 of a 004 stream of chunk_len bytes. */
struct kme_source_ref {
    const char *key_id;        /* 014, else NULL */
    const char *ksid;          /* 004, else NULL */
    uint32_t first;
    uint32_t count;
    uint32_t chunk_len;
};
/* The keys, in the order of refs (all or nothing). A 014 source takes
 * only key_IDs, a 004 source only chunks (KME_EINVAL otherwise). */
int kme_source_dec(kme_source *s, const char *master_sae_id,
                   const struct kme_source_ref *refs, size_t n, kme_keys_cb cb,
                   void *arg);

size_t kme_source_cancel(kme_source *s, void *arg);

#endif
