/* The per-message pipeline, as SMTP session hooks:
 *
 *   RCPT    policy lookup; "refuse" (or a protected rule without a usable
 *           key link) is answered at RCPT time with the reason.
 *   message 1. header recipients (To/Cc) read on the thread pool;
 *           2. copies: protected recipients listed in To/Cc grouped by
 *              (action, level, link, slave SAE, subject settings); each
 *              protected recipient not listed there (Bcc) alone; every
 *              unprotected recipient in one plain copy;
 *           3. keys per protected copy from its link's KME: exactly the
 *              bits the algorithm needs for this message, never shared;
 *           4. encryption of each copy on the thread pool (keys wiped
 *              right after);
 *           5. the copies handed to the session for upstream delivery.
 *   Fail closed: if any "require" copy cannot get keys, nothing is sent
 *   and the client gets the policy's 4xx (defer) or 5xx (refuse) with
 *   enhanced status X.7.5. A "prefer" copy without keys is sent as it is.
 *   One log line per message: id, copies, levels, key counts, outcome. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon_internal.h"
#include "log.h"
#include "mime.h"

struct rcpt_info {
    const struct policy_rule *rule; /* valid while the job/session holds pol */
    bool protect;                   /* require/prefer with a usable link */
};

struct copy {
    size_t *idx;
    size_t n;
    const struct policy_rule *rule; /* NULL for the plain copy */
    bool protect;
    bool bcc;
    enum mime_alg alg;
    uint64_t bits;
    struct link_state *link;
    const struct kme_ids *ids;      /* looked up on the loop before encrypting */
    struct kme_keys *keys;
    size_t n_keys;                  /* for the log, after the keys are wiped */
    int kme_error;
    char *kme_message;
    int out_fd;
    uint64_t out_size;
    int enc_error;
    char *enc_message;
    uv_work_t work;
    struct job *job;
};

enum job_stage { JOB_HEADERS, JOB_KEYS, JOB_ENCRYPT, JOB_DELIVER };

struct job {
    proxy_daemon *d;
    struct session_ctx *sc;   /* NULL once the session is gone */
    smtp_session *s;
    policy *pol;              /* own reference: rules stay valid */
    char id[16];
    char *from;
    char **addrs;
    struct rcpt_info **infos;
    size_t n_rcpts;
    int fd;                   /* dup of the spool */
    uint64_t size;
    uint64_t started_ms;
    enum job_stage stage;
    unsigned pending;         /* async operations outstanding */
    uv_work_t hdr_work;
    struct mime_rcpt_list *hdr;
    int hdr_error;
    struct copy *copies;
    size_t n_copies;
};

/* ---- RCPT ---------------------------------------------------------------- */

static void pipe_rcpt(void *ctx, smtp_session *s, const char *addr,
                      struct smtp_rcpt_verdict *v)
{
    struct session_ctx *sc = ctx;
    (void)s;
    const struct policy_rule *rule = policy_lookup(sc->pol, addr);
    if (rule->action == POLICY_REFUSE) {
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
    if (protect && (!rule->link || !rule->slave_sae || !proxy_daemon_link(sc->d, rule->link))) {
        if (rule->action == POLICY_REQUIRE) {
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
    v->data = info;
}

static void pipe_rcpt_free(void *ctx, void *data)
{
    (void)ctx;
    free(data);
}

/* ---- job lifetime ----------------------------------------------------------- */

static void job_free(struct job *job)
{
    if (job->sc)
        job->sc->job = NULL;
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
    for (size_t i = 0; i < job->n_rcpts; i++) {
        free(job->addrs[i]);
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

/* The one log line per message. */
static void job_log(struct job *job, int code, const char *enh, const char *what,
                    size_t done)
{
    char copies[1024];
    size_t n = 0;
    copies[0] = '\0';
    for (size_t i = 0; i < job->n_copies && n < sizeof(copies) - 1; i++) {
        const struct copy *c = &job->copies[i];
        int w = snprintf(copies + n, sizeof(copies) - n,
                         "%s[%zu: level=%s%s rcpts=%zu keys=%zu bits=%llu%s%s]",
                         i ? " " : "", i + 1, copy_level(c), c->bcc ? " bcc" : "", c->n,
                         c->n_keys,
                         (unsigned long long)(c->protect ? c->bits : 0),
                         c->link ? " link=" : "", c->link ? c->link->cfg->name : "");
        if (w < 0)
            break;
        n += (size_t)w;
        if (n >= sizeof(copies))
            n = sizeof(copies) - 1;
    }
    uint64_t ms = uv_now(job->d->loop) - job->started_ms;
    qlog_info("msg %s: from=<%s> rcpts=%zu size=%llu copies=%zu %s delivered=%zu/%zu "
              "outcome=%d %s (%s) in %llu ms",
              job->id, job->from, job->n_rcpts, (unsigned long long)job->size,
              job->n_copies, copies, done, job->n_copies, code, enh, what,
              (unsigned long long)ms);
}

static void job_fail(struct job *job, int code, const char *enh, const char *text)
{
    job_log(job, code, enh, text, 0);
    if (job->s)
        smtp_session_fail(job->s, code, enh, text);
    job_free(job);
}

/* ---- stage 5: delivery -------------------------------------------------------- */

static void delivered(smtp_session *s, const struct smtp_delivery_result *res, void *arg)
{
    struct job *job = arg;
    (void)s;
    job_log(job, res->code, res->enh, res->code == 250 ? "accepted upstream" : res->text,
            res->n_done);
    job_free(job);
}

static void job_deliver(struct job *job)
{
    job->stage = JOB_DELIVER;
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
    smtp_session *s = job->s;
    int rc = smtp_session_deliver(s, dl, job->n_copies, delivered, job);
    free(dl);
    if (rc < 0)
        job_fail(job, 451, "4.3.0", "Local error starting the delivery");
}

/* ---- stage 4: encryption on the thread pool ------------------------------------ */

static void encrypt_work(uv_work_t *w)
{
    struct copy *c = w->data;
    struct job *job = c->job;
    const struct kme_ids *ids = c->ids;
    struct mime_key *keys = calloc(c->keys->count, sizeof(*keys));
    if (!keys || !ids) {
        free(keys);
        c->enc_error = MIME_ERR_NOMEM;
        return;
    }
    for (size_t i = 0; i < c->keys->count; i++) {
        keys[i].key_id = c->keys->keys[i].key_id;
        keys[i].key = c->keys->keys[i].bytes;
        keys[i].key_len = c->keys->keys[i].len;
    }
    struct mime_encrypt_params p = {
        .algorithm = c->alg,
        .source_kme_id = ids->source_kme_id,
        .master_sae_id = ids->master_sae_id,
        .slave_sae_id = c->rule->slave_sae,
        .protect_subject = c->rule->protect_subject,
        .subject_placeholder = c->rule->placeholder,
    };
    const char *dir = getenv("TMPDIR");
    c->out_fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (c->out_fd < 0) {
        c->enc_error = MIME_ERR_IO;
        c->enc_message = strdup(strerror(errno));
        free(keys);
        return;
    }
    c->enc_error = mime_encrypt_fd(job->fd, c->out_fd, &p, keys, c->keys->count,
                                   &c->out_size, &c->enc_message);
    free(keys); /* pointers only; the material is wiped by kme_keys_free */
}

static void job_encrypted_all(struct job *job)
{
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (c->protect && c->enc_error != 0) {
            qlog_error("msg %s: encryption failed: %s%s%s", job->id,
                       mime_strerror(c->enc_error), c->enc_message ? ": " : "",
                       c->enc_message ? c->enc_message : "");
            job_fail(job, 451, "4.3.0", "Local error protecting the message, try again later");
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
    if (--job->pending > 0)
        return;
    if (!job->s) {
        job_free(job);
        return;
    }
    job_encrypted_all(job);
}

static void job_encrypt(struct job *job)
{
    job->stage = JOB_ENCRYPT;
    job->pending = 1; /* guard while queueing */
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (!c->protect)
            continue;
        c->ids = proxy_daemon_ids(job->d, c->rule->link, c->rule->slave_sae);
        c->work.data = c;
        job->pending++;
        if (uv_queue_work(job->d->loop, &c->work, encrypt_work, encrypt_done) < 0) {
            job->pending--;
            c->enc_error = MIME_ERR_IO;
        }
    }
    if (--job->pending == 0)
        job_encrypted_all(job);
}

/* ---- stage 3: keys --------------------------------------------------------------- */

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
                      "unavailable from link '%s': %s", job->id, i + 1, c->link->cfg->name,
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
                 job->addrs[c->idx[0]], c->link->cfg->name,
                 kme_client_strerror(c->kme_error),
                 defer ? "; try again later" : "; policy refuses to send it unprotected");
        job_fail(job, defer ? 451 : 554, defer ? "4.7.5" : "5.7.5", text);
        return;
    }
    job_encrypt(job);
}

static void copy_keys_cb(const struct kme_result *res, struct kme_keys *keys, void *arg)
{
    struct copy *c = arg;
    struct job *job = c->job;
    if (res->error != KME_OK) {
        c->kme_error = res->error;
        free(c->kme_message);
        c->kme_message = strdup(res->message);
    } else {
        c->keys = keys;
        c->n_keys = keys->count;
    }
    if (--job->pending > 0)
        return;
    if (!job->s) {
        job_free(job);
        return;
    }
    keys_done_all(job);
}

static void copy_fetch_keys(struct copy *c)
{
    int rc = kme_client_enc_bits(c->link->client, c->rule->slave_sae, c->bits,
                                 copy_keys_cb, c);
    if (rc < 0) {
        struct kme_result r = {rc, 0, kme_client_strerror(rc)};
        copy_keys_cb(&r, NULL, c);
    }
}

static void copy_status_cb(const struct kme_result *res, const struct kme_status *st,
                           void *arg)
{
    struct copy *c = arg;
    if (res->error != KME_OK || !st) {
        copy_keys_cb(res, NULL, c);
        return;
    }
    if (!c->job->s) {
        struct kme_result r = {KME_ECANCELLED, 0, "cancelled"};
        copy_keys_cb(&r, NULL, c);
        return;
    }
    proxy_daemon_ids_store(c->job->d, c->rule->link, c->rule->slave_sae, st->source_kme_id,
                     st->master_sae_id);
    copy_fetch_keys(c);
}

static void job_fetch_keys(struct job *job)
{
    job->stage = JOB_KEYS;
    job->pending = 1; /* guard while starting */
    for (size_t i = 0; i < job->n_copies; i++) {
        struct copy *c = &job->copies[i];
        if (!c->protect)
            continue;
        job->pending++;
        if (proxy_daemon_ids(job->d, c->rule->link, c->rule->slave_sae)) {
            copy_fetch_keys(c);
        } else {
            int rc = kme_client_status(c->link->client, c->rule->slave_sae,
                                       copy_status_cb, c);
            if (rc < 0) {
                struct kme_result r = {rc, 0, kme_client_strerror(rc)};
                copy_keys_cb(&r, NULL, c);
            }
        }
    }
    if (--job->pending > 0)
        return;
    if (!job->s) {
        job_free(job);
        return;
    }
    keys_done_all(job);
}

/* ---- stage 2: copies ------------------------------------------------------------- */

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
                c->link = proxy_daemon_link(job->d, info->rule->link);
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

/* ---- stage 1: header recipients ---------------------------------------------------- */

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

static void pipe_message(void *ctx, smtp_session *s, const struct smtp_message *m)
{
    struct session_ctx *sc = ctx;
    proxy_daemon *d = sc->d;
    struct job *job = calloc(1, sizeof(*job));
    if (!job) {
        smtp_session_fail(s, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    job->d = d;
    job->sc = sc;
    job->s = s;
    job->pol = policy_ref(sc->pol);
    job->fd = -1;
    job->started_ms = uv_now(d->loop);
    snprintf(job->id, sizeof(job->id), "%s", m->id);
    job->from = strdup(m->from);
    job->size = m->size;
    job->n_rcpts = m->n_rcpts;
    job->addrs = calloc(m->n_rcpts, sizeof(*job->addrs));
    job->infos = calloc(m->n_rcpts, sizeof(*job->infos));
    job->fd = dup(m->fd);
    if (!job->from || !job->addrs || !job->infos || job->fd < 0) {
        job_fail(job, 451, "4.3.0", "Insufficient system resources");
        return;
    }
    for (size_t i = 0; i < m->n_rcpts; i++) {
        job->addrs[i] = strdup(m->rcpts[i].addr);
        job->infos[i] = malloc(sizeof(struct rcpt_info));
        if (!job->addrs[i] || !job->infos[i]) {
            job_fail(job, 451, "4.3.0", "Insufficient system resources");
            return;
        }
        *job->infos[i] = *(const struct rcpt_info *)m->rcpts[i].data;
    }
    sc->job = job;
    d->messages++;
    job->stage = JOB_HEADERS;
    job->hdr_work.data = job;
    job->pending = 0;
    if (m->headers) {
        /* The session kept the (small) header block: parse it right here,
         * saving a trip through the thread pool. */
        char *err = NULL;
        job->hdr_error = mime_recipients_mem(m->headers, m->headers_len, &job->hdr, &err);
        free(err);
        headers_done(&job->hdr_work, 0);
        return;
    }
    if (uv_queue_work(d->loop, &job->hdr_work, headers_work, headers_done) < 0)
        job_fail(job, 451, "4.3.0", "Local error, try again later");
}

/* The session is gone: the job finishes its async steps quietly. */
static void pipe_closed(void *ctx, smtp_session *s)
{
    struct session_ctx *sc = ctx;
    (void)s;
    struct job *job = sc->job;
    if (job) {
        job->s = NULL;
        job->sc = NULL;
        sc->job = NULL;
        if (job->stage == JOB_DELIVER) {
            /* The session's delivery run is being cancelled with it; the
             * delivered callback will not come. */
            job_log(job, 421, "4.4.2", "client session closed during delivery", 0);
            job_free(job);
        } else if (job->stage == JOB_KEYS) {
            job->pending++; /* the callbacks run inside the cancel calls */
            for (size_t i = 0; i < job->n_copies; i++)
                if (job->copies[i].protect && job->copies[i].link)
                    kme_client_cancel(job->copies[i].link->client, &job->copies[i]);
            if (--job->pending == 0)
                job_free(job);
        }
    }
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        sc->d->sessions = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    sc->d->n_sessions--;
    policy_unref(&sc->pol);
    free(sc);
}

const struct smtp_session_hooks proxy_pipeline_hooks = {
    .rcpt = pipe_rcpt,
    .rcpt_free = pipe_rcpt_free,
    .message = pipe_message,
    .closed = pipe_closed,
};
