/* protect_out: outgoing protection, the layer between the SMTP session and
 * the crypto (policy, KME, mime). It is the session's hooks
 * (smtp_session.h):
 *
 *   RCPT    policy lookup; "refuse" (or a protected rule without a usable
 *           key link) is answered at RCPT time with the reason.
 *   message a job runs these stages, one at a time (logged at debug level
 *           as "msg ID: HEADERS -> KEYS"):
 *           HEADERS  header recipients (To/Cc) read (inline when the
 *                    session kept the header block, else on the thread
 *                    pool from the spool);
 *           KEYS     copies: protected recipients listed in To/Cc grouped
 *                    by (action, level, link, slave SAE, subject
 *                    settings); each protected recipient not listed there
 *                    (Bcc) alone; every unprotected recipient in one plain
 *                    copy. Keys per protected copy from its link's KME:
 *                    exactly the bits the algorithm needs, never shared;
 *           ENCRYPT  each protected copy encrypted on the thread pool into
 *                    a private temporary file (keys wiped right after),
 *                    bound to its envelope recipients (format 2: a
 *                    reading proxy decrypts it only for them);
 *           DELIVER  the copies handed to the session
 *                    (smtp_session_deliver) for upstream delivery.
 *   Fail closed: if any "require" copy cannot get keys, nothing is sent and
 *   the client gets the policy's 4xx (defer) or 5xx (refuse) with enhanced
 *   status X.7.5. A "prefer" copy without keys is sent as it is. One log
 *   line per message: id, copies, levels, key counts, outcome.
 *
 *   The client's session may end at any stage (disconnect, shutdown): the
 *   job then stops at once when it can (KEYS: the KME requests are
 *   cancelled; DELIVER: the session cancels the delivery) or finishes its
 *   thread-pool step quietly and frees itself (HEADERS, ENCRYPT). Nothing
 *   is sent upstream for a job whose session is gone.
 *
 * Buffers passed through the hooks, and who owns them:
 *   - the verdict's data (struct smtp_rcpt_verdict.data): allocated here at
 *     RCPT, owned by the session from then on (smtp_rcpt.data) and handed
 *     back through the rcpt_free hook;
 *   - the message (struct smtp_message, its strings, rcpts, headers):
 *     borrowed during the message hook only. The job copies what it keeps:
 *     the sender, every recipient address and verdict, and dup(2)s the
 *     spool descriptor (the job's own fd, closed in job_free);
 *   - the deliveries passed to smtp_session_deliver (the array and each
 *     copy's rcpt_index array): the job's, borrowed by the session for the
 *     call only (it copies them); each delivery's fd (the job's spool dup
 *     or a copy's encrypted file) stays the job's and open until the
 *     delivered callback, or until the session's closed hook, after which
 *     the session reads none of them;
 *   - key material (struct kme_keys): the job's, wiped and freed right
 *     after encryption, or when the job ends. */
#ifndef QUMAIL_PROTECT_OUTGOING_H
#define QUMAIL_PROTECT_OUTGOING_H

#include <stdint.h>
#include <uv.h>

#include "kme_client.h"
#include "kme_source.h"
#include "metrics.h"
#include "policy.h"
#include "smtp_session.h"

typedef struct protect_out protect_out;
typedef struct protect_out_session protect_out_session;

/* The key source of the link a policy rule names (an ETSI 014 KME or an
 * ETSI 004 stream: kme/kme_source.h); NULL when no such link is
 * configured (the recipient is then refused, or sent as it is under
 * "prefer"). */
typedef kme_source *(*protect_out_link_fn)(void *arg, const char *link);

/* One per daemon: the link lookup and the cache of KME identities (source
 * KME ID and master SAE ID per link and slave SAE, learnt from status). */
protect_out *protect_out_new(uv_loop_t *loop, protect_out_link_fn link,
                             void *link_arg);
/* Counts into reg (proxy/admin/metrics.h), declared here:
 *   qumail_smtp_messages_total{outcome,reason}  outcome protected (at
 *       least one protected copy, all accepted), relayed (all plain),
 *       deferred (4xx), refused (5xx); reason keys, encryption, upstream,
 *       local, or "" when accepted
 *   qumail_smtp_copies_total{level}             copies accepted upstream:
 *       otp, aes, none
 *   qumail_smtp_recipients_refused_total{reason} at RCPT: policy, no_rule,
 *       no_link
 *   qumail_kme_key_bits_total{link}             key bits fetched
 *   qumail_kme_request_seconds{link,call}       enc_keys and status latency
 *   qumail_kme_errors_total{link}               failed key requests
 * NULL (the default): nothing is counted. */
void protect_out_set_metrics(protect_out *po, metrics *reg);
/* Frees once no job can run any more (after the loop ended). Clears *po. */
void protect_out_free(protect_out **po);
/* Messages taken over so far (for logs). */
uint64_t protect_out_messages(const protect_out *po);
/* Jobs alive: with their session, or finishing a thread-pool step quietly
 * after it ended. */
size_t protect_out_jobs(const protect_out *po);

/* One per SMTP session, its hooks_ctx. Takes over the reference pol (the
 * policy snapshot the session keeps to its end). closed(arg) runs from the
 * session's closed hook, after the job was detached; NULL: nothing. NULL
 * when out of memory (the reference is released). */
protect_out_session *protect_out_session_new(protect_out *po, policy *pol,
                                             void (*closed)(void *arg),
                                             void *arg);
/* For a session that never started (smtp_session_new failed: the hooks
 * never ran); closed is not called. Clears *ps. */
void protect_out_session_free(protect_out_session **ps);

/* The SMTP session hooks; hooks_ctx is a protect_out_session. */
extern const struct smtp_session_hooks protect_out_hooks;

#endif
