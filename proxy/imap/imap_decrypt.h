/* imap_decrypt: the FETCH rewriter (decrypt on FETCH, issue 12).
 *
 * Sits on an imap_session's FETCH hooks and answers every content item of
 * an encrypted message from its decrypted view (proxy/protect/incoming.h),
 * so that the client sees what Dovecot would answer had it stored the
 * plaintext; plain messages pass through untouched.
 *
 * A FETCH that asks for content (anything but FLAGS, UID, INTERNALDATE,
 * MODSEQ and the object IDs) is prepared before it goes upstream (the
 * session's FETCH_PREP, see imap_session.h):
 *   1. probe: the proxy's own `[UID] FETCH <the client's set> (UID
 *      BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE X-QKD-KEY-ID)])`: which
 *      messages are ours (protect_in_classify), their UIDs, their names;
 *   2. for each encrypted one, a view from memory or the vault's metadata
 *      when it satisfies what the command asks (protect_in_lookup); the
 *      rest are read with one own `UID FETCH <uids> (BODY.PEEK[])`, the
 *      literal streamed into protect_in_open_supplied() (keys from the
 *      vault or the KME, decryption on the thread pool);
 *   3. the client's FETCH, exactly as it wrote it, goes upstream: the
 *      server sets \Seen and sends FLAGS as it would for the client; in
 *      each response of an encrypted message every content item is
 *      replaced, in place and with the server's item name, by the view's
 *      answer; FLAGS, UID, INTERNALDATE, MODSEQ stay the server's.
 * Messages are matched by sequence number and, in UID FETCH, checked by
 * UID (the server may report expunges at the end of a UID command).
 * A message the view could not be made for is answered from a notice
 * view (protect_in): never ciphertext as text, never half a message.
 *
 * Limits: every view of one FETCH is held until its tagged response (a
 * FETCH of many large encrypted bodies at once holds them all); a FETCH
 * with literals in its item list is relayed unprepared (its encrypted
 * messages are then seen as the server stores them, ciphertext); a
 * message that appears between the probe and the FETCH (`*`) likewise. */
#ifndef QUMAIL_IMAP_DECRYPT_H
#define QUMAIL_IMAP_DECRYPT_H

#include <stdbool.h>
#include <stdint.h>

#include "imap_session.h"
#include "incoming.h"
#include "metrics.h"

typedef struct imap_decrypt imap_decrypt;

/* One per session. pi must outlive it. max_decrypt: encrypted messages
 * one SEARCH / SORT may read and decrypt (0: no limit). NULL when out of
 * memory. */
imap_decrypt *imap_decrypt_new(protect_in *pi, uint32_t max_decrypt);
/* Cancels its work (views, fetches). Call after the session's last
 * command_end (from its closed hook). Clears *d. */
void imap_decrypt_free(imap_decrypt **d);
/* The upstream accepted a login as user. */
void imap_decrypt_login(imap_decrypt *d, const char *user);

/* The FETCH hooks, with d as their ctx (a caller whose hooks ctx is its
 * own forwards them). */
void *imap_decrypt_command(imap_decrypt *d, imap_session *s, const struct imap_fetch *f,
                           char **rewrite_r, bool *prepare_r);
void imap_decrypt_prepare(imap_decrypt *d, imap_session *s, void *cmd);
void imap_decrypt_response_begin(imap_decrypt *d, imap_session *s, void *cmd, uint32_t seq);
enum imap_fetch_verdict imap_decrypt_item(imap_decrypt *d, imap_session *s, void *cmd,
                                          const char *name, unsigned index);
void imap_decrypt_value(imap_decrypt *d, imap_session *s, void *cmd,
                        const struct imap_token *tok, bool last);
enum imap_fetch_flow imap_decrypt_response_end(imap_decrypt *d, imap_session *s, void *cmd);
void imap_decrypt_command_end(imap_decrypt *d, imap_session *s, void *cmd,
                              enum imap_status status);
void imap_decrypt_own_data(imap_decrypt *d, imap_session *s, void *own,
                           const struct imap_resp_event *ev);

/* The SEARCH hooks (imap_decrypt_search.c): SEARCH and SORT over a
 * mailbox with encrypted messages evaluated on the plaintext
 * (proxy/imap/search's plan: the server answers for its plain messages,
 * the proxy for the encrypted ones, results merged). command_end is
 * imap_decrypt_command_end. */
void *imap_decrypt_search_command(imap_decrypt *d, imap_session *s, enum imap_verb verb,
                                  bool uid, const struct imap_args *args, size_t first,
                                  bool *prepare_r);
void imap_decrypt_search_prepare(imap_decrypt *d, imap_session *s, void *cmd);

struct imap_decrypt_stats {
    uint64_t prepared;       /* FETCH commands prepared */
    uint64_t encrypted;      /* encrypted messages answered */
    uint64_t plain;          /* plain messages passed */
    uint64_t bodies_fetched; /* own BODY.PEEK[] reads */
    uint64_t notices;        /* answered from a notice view */
};
/* Process-wide counters (all sessions; the loop thread only). */
void imap_decrypt_get_stats(struct imap_decrypt_stats *st);
/* Counts into reg from now on (proxy/admin/metrics.h), declared here:
 *   qumail_imap_messages_total{kind}   FETCH responses answered: decrypted,
 *                                      notice (not decrypted), plain
 *   qumail_imap_prepared_total{command} FETCH / SEARCH / SORT commands the
 *                                      proxy prepared with its own commands
 *   qumail_imap_search_refused_total   SEARCH/SORT refused by max_decrypt */
void imap_decrypt_set_metrics(metrics *reg);

#endif
