/* Outgoing protection: the SMTP session hooks, one job per message
 * (outgoing.h has the stages, the fail-closed rules and who owns which
 * buffer). */
#include "outgoing.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "mime.h"
#include "smtp_authid.h"

/* Cached KME identities per (link, slave SAE): the encryption's control
 * part names the source KME and the master SAE. Nodes never change once
 * linked and live until protect_out_free: encryption threads read them. */
struct kme_ids {
    struct kme_ids *next;
    char *link, *slave, *source_kme_id, *master_sae_id;
};

struct protect_out {
    uv_loop_t *loop;
    metric *m_messages, *m_copies, *m_rcpt_refused, *m_key_bits, *m_kme_seconds,
        *m_kme_errors;            /* NULL without a registry: no-ops */
    protect_out_link_fn find_link;
    void *link_arg;
    struct kme_ids *ids;
    uint64_t messages;
    size_t jobs;                /* alive, with a session or finishing quietly */
};

struct job;

struct protect_out_session {
    protect_out *po;
    policy *pol;                /* own reference: rules stay valid */
    struct job *job;            /* the message in flight, or NULL */
    void (*closed)(void *arg);
    void *closed_arg;
};

struct rcpt_info {
    const struct policy_rule *rule; /* valid while the job/session holds pol */
    bool protect;                   /* require/prefer with a usable link */
};

struct copy {
    size_t *idx;                    /* recipient indices (owned) */
    size_t n;
    const struct policy_rule *rule; /* NULL for the plain copy */
    bool protect;
    bool bcc;
    enum mime_alg alg;
    uint64_t bits;
    kme_source *kme;                /* the rule's link (daemon's): 014 or 004 */
    const struct kme_ids *ids;      /* looked up on the loop before encrypting */
    struct kme_keys *keys;          /* owned; wiped after encryption */
    size_t n_keys;                  /* for the log, after the keys are wiped */
    int kme_error;
    char *kme_message;              /* owned, may be NULL */
    int out_fd;                     /* the encrypted copy (owned), or -1 */
    uint64_t out_size;
    int enc_error;
    char *enc_message;              /* owned, may be NULL */
    uint64_t kme_started_ms;        /* the request in flight, for latency */
    uv_work_t work;
    struct job *job;
};

/* One transition place (job_enter), a name table for logs. */
enum job_state { JOB_NEW, JOB_HEADERS, JOB_KEYS, JOB_ENCRYPT, JOB_DELIVER };

static const char *const job_state_names[] = {
    [JOB_NEW] = "NEW",         [JOB_HEADERS] = "HEADERS", [JOB_KEYS] = "KEYS",
    [JOB_ENCRYPT] = "ENCRYPT", [JOB_DELIVER] = "DELIVER",
};

struct job {
    protect_out *po;
    protect_out_session *ps;  /* NULL once the session is gone */
    smtp_session *s;          /* NULL once the session is gone */
    policy *pol;              /* own reference: rules stay valid */
    char id[16];
    char *from;               /* owned copies of the message's envelope */
    char session_id[16];      /* the client connection (smtp_session_id) */
    char peer[64];
    bool authenticated;
    char auth_user[SMTP_AUTHID_MAX];    /* escaped; "" when none */
    char auth_authzid[SMTP_AUTHID_MAX];
    char message_id[128];     /* from the header, "" when none */
    char **addrs;             /* n_rcpts entries, or NULL */
    struct rcpt_info **infos; /* n_rcpts entries, or NULL */
    size_t n_rcpts;
    int fd;                   /* dup of the spool (owned), or -1 */
    uint64_t size;
    uint64_t started_ms;
    enum job_state state;
    unsigned pending;         /* async operations outstanding */
    uv_work_t hdr_work;
    struct mime_rcpt_list *hdr;
    int hdr_error;
    struct copy *copies;
    size_t n_copies;
};

static void job_enter(struct job *job, enum job_state st)
{
    qlog_debug("msg %s: %s -> %s", job->id, job_state_names[job->state],
               job_state_names[st]);
    job->state = st;
}

/* ---- KME identities ------------------------------------------------------ */

static const struct kme_ids *ids_find(const protect_out *po, const char *link,
                                      const char *slave)
{
    for (const struct kme_ids *i = po->ids; i; i = i->next)
        if (strcmp(i->link, link) == 0 && strcmp(i->slave, slave) == 0)
            return i;
    return NULL;
}

static void ids_free(struct kme_ids *i)
{
    free(i->link);
    free(i->slave);
    free(i->source_kme_id);
    free(i->master_sae_id);
    free(i);
}

/* -1 when out of memory: the copy then fails to encrypt (fail closed). */
static int ids_store(protect_out *po, const char *link, const char *slave,
                     const char *source_kme_id, const char *master_sae_id)
{
    if (ids_find(po, link, slave))
        return 0;
    struct kme_ids *i = calloc(1, sizeof(*i));
    if (!i)
        return -1;
    i->link = strdup(link);
    i->slave = strdup(slave);
    i->source_kme_id = strdup(source_kme_id ? source_kme_id : "");
    i->master_sae_id = strdup(master_sae_id ? master_sae_id : "");
    if (!i->link || !i->slave || !i->source_kme_id || !i->master_sae_id) {
        ids_free(i);
        return -1;
    }
    i->next = po->ids; /* existing nodes never change: workers may read them */
    po->ids = i;
    return 0;
}

/* ---- the daemon-wide part and sessions ------------------------------------- */

protect_out *protect_out_new(uv_loop_t *loop, protect_out_link_fn link, void *link_arg)
{
    protect_out *po = calloc(1, sizeof(*po));
    if (!po)
        return NULL;
    po->loop = loop;
    po->find_link = link;
    po->link_arg = link_arg;
    return po;
}

void protect_out_free(protect_out **pop)
{
    protect_out *po = pop ? *pop : NULL;
    if (!po)
        return;
    *pop = NULL;
    while (po->ids) {
        struct kme_ids *i = po->ids;
        po->ids = i->next;
        ids_free(i);
    }
    free(po);
}

uint64_t protect_out_messages(const protect_out *po) { return po->messages; }
size_t protect_out_jobs(const protect_out *po) { return po->jobs; }

protect_out_session *protect_out_session_new(protect_out *po, policy *pol,
                                             void (*closed)(void *arg), void *arg)
{
    protect_out_session *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        policy_unref(&pol);
        return NULL;
    }
    ps->po = po;
    ps->pol = pol;
    ps->closed = closed;
    ps->closed_arg = arg;
    return ps;
}

void protect_out_session_free(protect_out_session **psp)
{
    protect_out_session *ps = psp ? *psp : NULL;
    if (!ps)
        return;
    *psp = NULL;
    policy_unref(&ps->pol);
    free(ps);
}

static kme_source *find_link(const protect_out *po, const char *name)
{
    return name && po->find_link ? po->find_link(po->link_arg, name) : NULL;
}

/* ---- RCPT ---------------------------------------------------------------- */

void protect_out_set_metrics(protect_out *po, metrics *reg)
{
    po->m_messages = metrics_counter(reg, "qumail_smtp_messages_total",
                                     "Messages by outcome (protected, relayed, deferred, "
                                     "refused) and reason of a failure.", 2, "outcome", "reason");
    po->m_copies = metrics_counter(reg, "qumail_smtp_copies_total",
                                   "Copies accepted upstream, by protection level.", 1, "level");
    po->m_rcpt_refused = metrics_counter(reg, "qumail_smtp_recipients_refused_total",
                                         "Recipients refused at RCPT by the policy.", 1,
                                         "reason");
    po->m_key_bits = metrics_counter(reg, "qumail_kme_key_bits_total",
                                     "Key bits fetched from each KME link.", 1, "link");
    po->m_kme_seconds = metrics_histogram(reg, "qumail_kme_request_seconds",
                                          "KME request latency (enc_keys, status).",
                                          metrics_latency_buckets,
                                          metrics_latency_buckets_count, 2, "link", "call");
    po->m_kme_errors = metrics_counter(reg, "qumail_kme_errors_total",
                                       "Key requests that failed, per KME link.", 1, "link");
}

static void out_rcpt(void *ctx, smtp_session *s, const char *addr,
                     struct smtp_rcpt_verdict *v)
{
    protect_out_session *ps = ctx;
    (void)s;
    const struct policy_rule *rule = policy_lookup(ps->pol, addr);
    if (rule->action == POLICY_REFUSE) {
        metric_add(ps->po->m_rcpt_refused, 1,
                   rule->kind == POLICY_KIND_BUILTIN ? "no_rule" : "policy");
        v->accept = false;
        v->code = 550;
        snprintf(v->enh, sizeof(v->enh), "5.7.1");
        if (rule->kind == POLICY_KIND_BUILTIN)
            snprintf(v->text, sizeof(v->text),
                     "<%s>: Recipient refused: no protection policy covers this address", addr);
        else
            snprintf(v->text, sizeof(v->text),
                     "<%s>: Recipient refused by protection policy (rule '%s')", addr,
                     rule->pattern);
        return;
    }
    bool protect = policy_rule_protects(rule);
    if (protect && (!rule->link || !rule->slave_sae || !find_link(ps->po, rule->link))) {
        if (rule->action == POLICY_REQUIRE) {
            metric_add(ps->po->m_rcpt_refused, 1, "no_link");
            v->accept = false;
            v->code = 451;
            snprintf(v->enh, sizeof(v->enh), "4.3.5");
            snprintf(v->text, sizeof(v->text),
                     "<%s>: Protection required but no key link is configured for it", addr);
            return;
        }
        protect = false; /* prefer: send as it is */
    }
    struct rcpt_info *info = calloc(1, sizeof(*info));
    if (!info) {
        v->accept = false;
        v->code = 452;
        snprintf(v->enh, sizeof(v->enh), "4.3.0");
        snprintf(v->text, sizeof(v->text), "Insufficient system resources");
        return;
    }
    info->rule = rule;
    info->protect = protect;
    v->accept = true;
    v->data = info; /* the session's from now on; back through rcpt_free */
}

static void out_rcpt_free(void *ctx, void *data)
{
    (void)ctx;
    free(data);
}

/* ---- job lifetime ----------------------------------------------------------- */

static void job_free(struct job *job)
{
    job->po->jobs--;
    if (job->ps)
        job->ps->job = NULL;
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        kme_keys_free(&c->keys);
        free(c->idx);
        free(c->kme_message);
        free(c->enc_message);
        if (c->out_fd >= 0)
            close(c->out_fd);
    }
    free(job->copies);
    /* Either array may be missing when the job could not be set up. */
    for (size_t i = 0; i < job->n_rcpts; i++) {
        if (job->addrs)
            free(job->addrs[i]);
        if (job->infos)
            free(job->infos[i]);
    }
    free(job->addrs);
    free(job->infos);
    free(job->from);
    mime_rcpt_list_free(&job->hdr);
    if (job->fd >= 0)
        close(job->fd);
    policy_unref(&job->pol);
    free(job);
}

static const char *copy_level(const struct copy *c)
{
    if (!c->protect)
        return "none";
    return c->alg == MIME_ALG_OTP_POLY1305 ? "otp" : "aes";
}

/* The Message-ID of a header block (for the log), "" when absent or not
 * kept (headers NULL: larger than the session keeps). Unfolded, at most
 * cap-1 characters, control characters left to the logger. */
static void header_message_id(const char *h, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; h && i + 11 < len; i++) {
        if ((i == 0 || h[i - 1] == '\n') && strncasecmp(h + i, "Message-ID:", 11) == 0) {
            size_t j = i + 11, o = 0;
            while (j < len && (h[j] == ' ' || h[j] == '\t'))
                j++;
            while (j < len && o + 1 < cap) {
                if (h[j] == '\r' || h[j] == '\n') {
                    /* folded: the next line starts with white space */
                    size_t k = j + (h[j] == '\r' && j + 1 < len && h[j + 1] == '\n' ? 2 : 1);
                    if (k < len && (h[k] == ' ' || h[k] == '\t')) {
                        j = k;
                        continue;
                    }
                    break;
                }
                out[o++] = h[j++];
            }
            out[o] = '\0';
            return;
        }
    }
}

/* The log lines of a message: one summary line (info when accepted, warn
 * when deferred or refused), then one line per recipient with its copy and
 * status, like an MTA's delivery lines:
 *   msg ID: from=<..> session=S client=A auth=yes [user=U [authzid=Z]] message-id=<..> rcpts=N
 *       size=B copies=N [...] queued_as=Q1,Q2 delivered=d/n outcome=250 2.0.0 (...) in T ms
 *   msg ID: to=<addr>, copy=1 (otp, link=site), status=sent
 * Never key material, message text or passwords. */
static void job_log(struct job *job, int code, const char *enh, const char *what,
                    size_t done, const char *queue_ids)
{
    char copies[1024];
    size_t n = 0;
    copies[0] = '\0';
    for (size_t i = 0; i < job->n_copies && n < sizeof(copies) - 1; i++) {
        const struct copy *c = &job->copies[i];
        const char *link = c->rule ? c->rule->link : NULL;
        int w = snprintf(copies + n, sizeof(copies) - n,
                         "%s[%zu: level=%s%s rcpts=%zu keys=%zu bits=%llu%s%s]",
                         i ? " " : "", i + 1, copy_level(c), c->bcc ? " bcc" : "", c->n,
                         c->n_keys,
                         (unsigned long long)(c->protect ? c->bits : 0),
                         c->kme && link ? " link=" : "", c->kme && link ? link : "");
        if (w < 0)
            break;
        n += (size_t)w;
        if (n >= sizeof(copies))
            n = sizeof(copies) - 1;
    }
    uint64_t ms = uv_now(job->po->loop) - job->started_ms;
    enum qlog_level lvl = code >= 200 && code < 300 ? QLOG_INFO : QLOG_WARN;
    qlog(lvl, "msg %s: from=<%s> session=%s client=%s auth=%s%s%s%s%s message-id=%s rcpts=%zu "
              "size=%llu copies=%zu %s queued_as=%s delivered=%zu/%zu outcome=%d %s (%s) "
              "in %llu ms",
         job->id, job->from ? job->from : "?", job->session_id, job->peer,
         job->authenticated ? "yes" : "no", job->auth_user[0] ? " user=" : "", job->auth_user,
         job->auth_authzid[0] ? " authzid=" : "", job->auth_authzid,
         job->message_id[0] ? job->message_id : "-",
         job->n_rcpts, (unsigned long long)job->size, job->n_copies, copies,
         queue_ids && queue_ids[0] ? queue_ids : "-", done, job->n_copies, code, enh, what,
         (unsigned long long)ms);
    if (!job->addrs)
        return;
    for (size_t i = 0; i < job->n_copies; i++) {
        const struct copy *c = &job->copies[i];
        /* copies go in order: those before `done` were accepted upstream;
         * for the others the client got the failure (and retries on 4xx) */
        const char *status = code >= 200 && code < 300 ? "sent"
                             : i < done               ? "sent"
                             : code >= 500            ? "bounced"
                                                      : "deferred";
        for (size_t k = 0; k < c->n; k++)
            qlog(lvl == QLOG_INFO ? QLOG_INFO : QLOG_WARN,
                 "msg %s: to=<%s>, copy=%zu (%s%s%s), status=%s", job->id,
                 job->addrs[c->idx[k]], i + 1, copy_level(c), c->kme && c->rule->link
                 ? ", link=" : "", c->kme && c->rule->link ? c->rule->link : "", status);
    }
}

/* The message metrics: outcome from the reply, reason from the step. */
static void job_count(struct job *job, int code, const char *reason, size_t done)
{
    protect_out *po = job->po;
    if (code >= 200 && code < 300) {
        bool any = false;
        for (size_t i = 0; i < job->n_copies; i++) {
            const struct copy *c = &job->copies[i];
            any |= c->protect;
            metric_add(po->m_copies, 1, c->protect ? copy_level(c) : "none");
        }
        metric_add(po->m_messages, 1, any ? "protected" : "relayed", "");
        return;
    }
    for (size_t i = 0; i < done && i < job->n_copies; i++) {
        const struct copy *c = &job->copies[i];
        metric_add(po->m_copies, 1, c->protect ? copy_level(c) : "none");
    }
    metric_add(po->m_messages, 1, code >= 500 ? "refused" : "deferred", reason);
}

static void job_fail_reason(struct job *job, int code, const char *enh, const char *text,
                            const char *reason)
{
    job_count(job, code, reason, 0);
    job_log(job, code, enh, text, 0, NULL);
    smtp_session *s = job->s;
    job_free(job);
    if (s)
        smtp_session_fail(s, code, enh, text);
}

static void job_fail(struct job *job, int code, const char *enh, const char *text)
{
    job_fail_reason(job, code, enh, text, "local");
}

/* ---- DELIVER ------------------------------------------------------------------ */

static void delivered(smtp_session *s, const struct smtp_delivery_result *res, void *arg)
{
    struct job *job = arg;
    (void)s;
    job_count(job, res->code, "upstream", res->n_done);
    job_log(job, res->code, res->enh, res->code == 250 ? "accepted upstream" : res->text,
            res->n_done, res->queue_ids);
    job_free(job);
}

static void job_deliver(struct job *job)
{
    job_enter(job, JOB_DELIVER);
    /* The array is ours; the session copies it (and every rcpt_index) in
     * smtp_session_deliver and keeps none of our pointers. */
    struct smtp_delivery *dl = calloc(job->n_copies, sizeof(*dl));
    if (!dl) {
        job_fail(job, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        dl[i].rcpt_index = c->idx;
        dl[i].n_rcpt = c->n;
        dl[i].fd = c->protect ? c->out_fd : job->fd;
        dl[i].size = c->protect ? c->out_size : job->size;
    }
    int rc = smtp_session_deliver(job->s, dl, job->n_copies, delivered, job);
    free(dl);
    if (rc < 0)
        job_fail(job, 451, "4.3.0", "Local error starting the delivery");
}

/* ---- ENCRYPT: on the thread pool ------------------------------------------------ */

static void encrypt_work(uv_work_t *w)
{
    struct copy *c = w->data;
    struct job *job = c->job;
    const struct kme_ids *ids = c->ids;
    struct mime_key *keys = calloc(c->keys->count, sizeof(*keys));
    /* The copy is bound to its envelope recipients (format 2, section
     * 3.5): a reading proxy decrypts it only for them. Pointers only: the
     * addresses are the job's. */
    const char **rcpts = calloc(c->n ? c->n : 1, sizeof(*rcpts));
    if (!keys || !ids || !rcpts) {
        free(keys);
        free(rcpts);
        c->enc_error = MIME_ERR_NOMEM;
        return;
    }
    for (size_t i = 0; i < c->n; i++)
        rcpts[i] = job->addrs[c->idx[i]];
    for (size_t i = 0; i < c->keys->count; i++) {
        keys[i].key_id = c->keys->keys[i].key_id;
        keys[i].key = c->keys->keys[i].bytes;
        keys[i].key_len = c->keys->keys[i].len;
        /* An ETSI 004 chunk: written as a Key-Chunks entry (KSID and index
         * range) in the authenticated control part. */
        keys[i].ksid = c->keys->keys[i].ksid[0] ? c->keys->keys[i].ksid : NULL;
        keys[i].index = c->keys->keys[i].index;
    }
    struct mime_encrypt_params p = {
        .algorithm = c->alg,
        .source_kme_id = ids->source_kme_id,
        .master_sae_id = ids->master_sae_id,
        .slave_sae_id = c->rule->slave_sae,
        .protect_subject = c->rule->protect_subject,
        .subject_placeholder = c->rule->placeholder,
        .recipients = rcpts,
        .n_recipients = c->n,
    };
    const char *dir = getenv("TMPDIR");
    c->out_fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (c->out_fd < 0) {
        c->enc_error = MIME_ERR_IO;
        c->enc_message = strdup(strerror(errno));
        free(keys);
        free(rcpts);
        return;
    }
    c->enc_error = mime_encrypt_fd(job->fd, c->out_fd, &p, keys, c->keys->count,
                                   &c->out_size, &c->enc_message);
    free(keys); /* pointers only; the material is wiped by kme_keys_free */
    free(rcpts);
}

/* One asynchronous piece of the job's current step finished: true when it
 * was the last one and the session still waits for the job, which then
 * moves on. A job whose session left meanwhile is freed here (nothing is
 * sent for it). */
static bool job_step_done(struct job *job)
{
    if (--job->pending > 0)
        return false;
    if (!job->s) {
        job_free(job);
        return false;
    }
    return true;
}

static void job_encrypted_all(struct job *job)
{
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (c->protect && c->enc_error != 0) {
            qlog_error("msg %s: encryption failed: %s%s%s", job->id,
                       mime_strerror(c->enc_error), c->enc_message ? ": " : "",
                       c->enc_message ? c->enc_message : "");
            job_fail_reason(job, 451, "4.3.0",
                            "Local error protecting the message, try again later", "encryption");
            return;
        }
    }
    job_deliver(job);
}

static void encrypt_done(uv_work_t *w, int status)
{
    struct copy *c = w->data;
    struct job *job = c->job;
    (void)status;
    kme_keys_free(&c->keys); /* wiped: used once, never again */
    if (job_step_done(job))
        job_encrypted_all(job);
}

static void job_encrypt(struct job *job)
{
    job_enter(job, JOB_ENCRYPT);
    job->pending = 1; /* guard while queueing */
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (!c->protect)
            continue;
        c->ids = ids_find(job->po, c->rule->link, c->rule->slave_sae);
        c->work.data = c;
        job->pending++;
        if (uv_queue_work(job->po->loop, &c->work, encrypt_work, encrypt_done) < 0) {
            job->pending--;
            c->enc_error = MIME_ERR_IO;
        }
    }
    if (--job->pending == 0)
        job_encrypted_all(job);
}

/* ---- KEYS ------------------------------------------------------------------------ */

static void keys_done_all(struct job *job)
{
    /* Fail closed: a "require" copy without keys stops the whole message
     * before anything is sent. */
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (!c->protect || c->kme_error == 0)
            continue;
        if (c->rule->action == POLICY_PREFER) {
            qlog_warn("msg %s: copy %zu sent unprotected (policy prefer): keys "
                      "unavailable from link '%s': %s", job->id, i + 1, c->rule->link,
                      c->kme_message ? c->kme_message : kme_client_strerror(c->kme_error));
            kme_keys_free(&c->keys);
            c->protect = false;
            continue;
        }
        bool defer = c->rule->on_no_key == POLICY_DEFER;
        char text[512];
        snprintf(text, sizeof(text),
                 "Cannot protect the message for <%s>: quantum keys unavailable from "
                 "key link '%s' (%s)%s",
                 job->addrs[c->idx[0]], c->rule->link, kme_client_strerror(c->kme_error),
                 defer ? "; try again later" : "; policy refuses to send it unprotected");
        job_fail_reason(job, defer ? 451 : 554, defer ? "4.7.5" : "5.7.5", text, "keys");
        return;
    }
    job_encrypt(job);
}

/* A KME request of copy c answered: its latency into the histogram (a
 * cancelled one measures nothing). */
static void copy_kme_answered(struct copy *c, const struct kme_result *res, const char *what)
{
    protect_out *po = c->job->po;
    if (c->kme_started_ms && res->error != KME_ECANCELLED)
        metric_observe(po->m_kme_seconds,
                       (double)(uv_now(po->loop) - c->kme_started_ms) / 1000.0, c->rule->link,
                       what);
    c->kme_started_ms = 0;
}

/* Keys (or the failure) for one copy; the last one moves the job on. */
static void copy_keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct copy *c = arg;
    struct job *job = c->job;
    protect_out *po = job->po;
    copy_kme_answered(c, res, "enc_keys");
    if (res->error != KME_OK || !keys) {
        if (res->error != KME_ECANCELLED)
            metric_add(po->m_kme_errors, 1, c->rule->link);
        c->kme_error = res->error != KME_OK ? res->error : KME_EBADRESPONSE;
        free(c->kme_message);
        c->kme_message = strdup(res->message); /* for the log; NULL is fine */
    } else {
        c->keys = keys;
        c->n_keys = keys->count;
        uint64_t bits = 0;
        for (size_t i = 0; i < keys->count; i++)
            bits += (uint64_t)keys->keys[i].len * 8;
        metric_add(po->m_key_bits, (double)bits, c->rule->link);
    }
    if (job_step_done(job))
        keys_done_all(job);
}

/* The copy gets no keys: code and message as if the KME had answered so. */
static void copy_keys_failed(struct copy *c, int code, const char *message)
{
    struct kme_result r = {code, 0, message};
    copy_keys_cb(&r, NULL, c);
}

static void copy_fetch_keys(struct copy *c)
{
    c->kme_started_ms = uv_now(c->job->po->loop);
    int rc = kme_source_enc_bits(c->kme, c->rule->slave_sae, c->bits, copy_keys_cb, c);
    if (rc < 0)
        copy_keys_failed(c, rc, kme_client_strerror(rc));
}

static void copy_status_cb(const struct kme_result *res, const char *source_kme_id,
                           const char *master_sae_id, void *arg)
{
    struct copy *c = arg;
    copy_kme_answered(c, res, "status");
    if (res->error != KME_OK) {
        copy_keys_cb(res, NULL, c);
        return;
    }
    if (!c->job->s) {
        copy_keys_failed(c, KME_ECANCELLED, "cancelled");
        return;
    }
    if (ids_store(c->job->po, c->rule->link, c->rule->slave_sae, source_kme_id,
                  master_sae_id) < 0) {
        copy_keys_failed(c, KME_ENOMEM, "out of memory");
        return;
    }
    copy_fetch_keys(c);
}

static void job_fetch_keys(struct job *job)
{
    job_enter(job, JOB_KEYS);
    job->pending = 1; /* guard while starting */
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (!c->protect)
            continue;
        job->pending++;
        if (ids_find(job->po, c->rule->link, c->rule->slave_sae)) {
            copy_fetch_keys(c);
        } else {
            c->kme_started_ms = uv_now(job->po->loop);
            int rc = kme_source_identity(c->kme, c->rule->slave_sae, copy_status_cb, c);
            if (rc < 0)
                copy_keys_failed(c, rc, kme_client_strerror(rc));
        }
    }
    if (job_step_done(job))
        keys_done_all(job);
}

/* ---- grouping into copies ---------------------------------------------------------- */

static bool same_group(const struct policy_rule *a, const struct policy_rule *b)
{
    if (a == b)
        return true;
    return a->action == b->action && a->level == b->level && a->otp_max == b->otp_max &&
           strcmp(a->link, b->link) == 0 && strcmp(a->slave_sae, b->slave_sae) == 0 &&
           a->protect_subject == b->protect_subject &&
           strcmp(a->placeholder ? a->placeholder : "", b->placeholder ? b->placeholder : "") == 0 &&
           a->on_no_key == b->on_no_key;
}

static struct copy *new_copy(struct job *job)
{
    struct copy *c = &job->copies[job->n_copies++];
    memset(c, 0, sizeof(*c));
    c->out_fd = -1;
    c->job = job;
    c->idx = calloc(job->n_rcpts, sizeof(*c->idx));
    return c->idx ? c : NULL;
}

/* 0, -1 out of memory, -2 the message is too large to protect. */
static int job_group(struct job *job)
{
    job->copies = calloc(job->n_rcpts + 1, sizeof(*job->copies));
    if (!job->copies)
        return -1;
    struct copy *plain = NULL;
    for (size_t i = 0; i < job->n_rcpts; i++) {
        const struct rcpt_info *info = job->infos[i];
        struct copy *c = NULL;
        if (!info->protect) {
            if (!plain && !(plain = new_copy(job)))
                return -1;
            c = plain;
        } else {
            /* Unreadable headers: every recipient is treated as Bcc. */
            bool visible = job->hdr && mime_rcpt_has(job->hdr, job->addrs[i],
                                                     MIME_RCPT_TO | MIME_RCPT_CC);
            if (visible) {
                for (size_t k = 0; k < job->n_copies; k++) {
                    struct copy *o = &job->copies[k];
                    if (o->protect && !o->bcc && same_group(o->rule, info->rule)) {
                        c = o;
                        break;
                    }
                }
            }
            if (!c) {
                if (!(c = new_copy(job)))
                    return -1;
                c->protect = true;
                c->bcc = !visible;
                c->rule = info->rule;
                c->kme = find_link(job->po, info->rule->link);
                if (!c->kme)
                    return -1; /* the link was checked at RCPT: cannot happen */
            }
        }
        c->idx[c->n++] = i;
    }
    for (size_t k = 0; k < job->n_copies; k++) {
        struct copy *c = &job->copies[k];
        if (!c->protect)
            continue;
        bool otp = policy_rule_uses_otp(c->rule, job->size);
        c->alg = otp ? MIME_ALG_OTP_POLY1305 : MIME_ALG_AES_256_GCM;
        if (mime_key_bits_needed(c->alg, job->size, &c->bits) < 0)
            return -2;
    }
    return 0;
}

/* ---- HEADERS ------------------------------------------------------------------------- */

static void headers_work(uv_work_t *w)
{
    struct job *job = w->data;
    char *err = NULL;
    /* The dup shares the spool's offset (at the end after writing). */
    if (lseek(job->fd, 0, SEEK_SET) < 0) {
        job->hdr_error = MIME_ERR_IO;
        return;
    }
    job->hdr_error = mime_recipients_fd(job->fd, &job->hdr, &err);
    free(err);
}

static void headers_done(uv_work_t *w, int status)
{
    struct job *job = w->data;
    (void)status;
    if (!job->s) {
        job_free(job);
        return;
    }
    if (job->hdr_error < 0)
        qlog_warn("msg %s: header recipients unreadable (%s): every protected "
                  "recipient gets a copy of its own", job->id, mime_strerror(job->hdr_error));
    int rc = job_group(job);
    if (rc == -2) {
        job_fail(job, 552, "5.3.4", "Message too large to protect");
        return;
    }
    if (rc < 0) {
        job_fail(job, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    job_fetch_keys(job);
}

/* Copies what the job keeps of the message (borrowed only during the
 * hook). -1 when out of memory. */
static int job_copy_message(struct job *job, const struct smtp_message *m)
{
    job->from = strdup(m->from);
    job->n_rcpts = m->n_rcpts;
    job->addrs = calloc(m->n_rcpts ? m->n_rcpts : 1, sizeof(char *));
    job->infos = calloc(m->n_rcpts ? m->n_rcpts : 1, sizeof(struct rcpt_info *));
    job->fd = dup(m->fd);
    if (!job->from || !job->addrs || !job->infos || job->fd < 0)
        return -1;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        job->addrs[i] = strdup(m->rcpts[i].addr);
        job->infos[i] = malloc(sizeof(struct rcpt_info));
        if (!job->addrs[i] || !job->infos[i])
            return -1;
        *job->infos[i] = *(const struct rcpt_info *)m->rcpts[i].data;
    }
    return 0;
}

static void out_message(void *ctx, smtp_session *s, const struct smtp_message *m)
{
    protect_out_session *ps = ctx;
    protect_out *po = ps->po;
    struct job *job = calloc(1, sizeof(*job));
    if (!job) {
        smtp_session_fail(s, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    job->po = po;
    po->jobs++;
    job->ps = ps;
    job->s = s;
    job->pol = policy_ref(ps->pol);
    job->fd = -1;
    job->state = JOB_NEW;
    job->started_ms = uv_now(po->loop);
    snprintf(job->id, sizeof(job->id), "%s", m->id);
    snprintf(job->session_id, sizeof(job->session_id), "%s", smtp_session_id(s));
    snprintf(job->peer, sizeof(job->peer), "%s", m->peer ? m->peer : "?");
    job->authenticated = m->authenticated;
    snprintf(job->auth_user, sizeof(job->auth_user), "%s", m->auth_user ? m->auth_user : "");
    snprintf(job->auth_authzid, sizeof(job->auth_authzid), "%s",
             m->auth_authzid ? m->auth_authzid : "");
    header_message_id(m->headers, m->headers_len, job->message_id, sizeof(job->message_id));
    job->size = m->size;
    if (job_copy_message(job, m) < 0) {
        job_fail(job, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    ps->job = job;
    po->messages++;
    job_enter(job, JOB_HEADERS);
    job->hdr_work.data = job;
    if (m->headers) {
        /* The session kept the (small) header block: parse it right here,
         * saving a trip through the thread pool. */
        char *err = NULL;
        job->hdr_error = mime_recipients_mem(m->headers, m->headers_len, &job->hdr, &err);
        free(err);
        headers_done(&job->hdr_work, 0);
        return;
    }
    if (uv_queue_work(po->loop, &job->hdr_work, headers_work, headers_done) < 0)
        job_fail(job, 451, "4.3.0", "Local error, try again later");
}

/* The session is gone: the job stops, or finishes its thread-pool step
 * quietly and frees itself then. */
static void out_closed(void *ctx, smtp_session *s)
{
    protect_out_session *ps = ctx;
    (void)s;
    struct job *job = ps->job;
    if (job) {
        job->s = NULL;
        job->ps = NULL;
        ps->job = NULL;
        switch (job->state) {
        case JOB_DELIVER:
            /* The session's delivery run is being cancelled with it; the
             * delivered callback will not come. */
            job_log(job, 421, "4.4.2", "client session closed during delivery", 0, NULL);
            job_free(job);
            break;
        case JOB_KEYS:
            job->pending++; /* the callbacks run inside the cancel calls */
            for (size_t i = 0; i < job->n_copies; i++)
                if (job->copies[i].protect && job->copies[i].kme)
                    kme_source_cancel(job->copies[i].kme, &job->copies[i]);
            if (--job->pending == 0)
                job_free(job);
            break;
        case JOB_NEW:
        case JOB_HEADERS:
        case JOB_ENCRYPT:
            break; /* a thread-pool step is running: its callback frees */
        }
    }
    void (*closed)(void *) = ps->closed;
    void *arg = ps->closed_arg;
    protect_out_session_free(&ps);
    if (closed)
        closed(arg);
}

const struct smtp_session_hooks protect_out_hooks = {
    .rcpt = out_rcpt,
    .rcpt_free = out_rcpt_free,
    .message = out_message,
    .closed = out_closed,
};
