/* The IMAP service's APPEND hooks: protect_mailboxes decides, protect_append
 * encrypts on the thread pool; the answer goes back to the session with
 * imap_session_append_done (imap_append_glue.h). */
#include "imap_append_glue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "append.h"
#include "log.h"
#include "mailboxes.h"

struct imap_append_gen {
    struct protect_mailboxes_config *boxes;
    bool active;
    kme_vault *vault; /* borrowed */
    enum mime_level level;
    uint64_t otp_max_size;
    uint64_t max_size;
};

struct imap_append_sess {
    const struct imap_append_gen *g;
    uv_loop_t *loop;
    struct protect_mailboxes *m;
    char *owner;
};

struct glue_job {
    imap_session *s;
    protect_append_job *pj;
};

int imap_append_gen_new(const struct qumail_imap *imap, kme_vault *vault,
                        struct imap_append_gen **g_r, char **error_r)
{
    *g_r = NULL;
    struct imap_append_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        *error_r = strdup("out of memory");
        return -1;
    }
    char *err = NULL;
    /* an empty list protects nothing (no hooks: every APPEND streamed);
     * NULL/0 would mean the default to the parser */
    static const char *const nothing[] = {""};
    const char *const *entries = (const char *const *)imap->protect_mailboxes;
    size_t n = imap->n_protect_mailboxes;
    g->active = !(imap->protect_mailboxes_set && n == 0);
    if (!imap->protect_mailboxes_set)
        entries = NULL;
    else if (n == 0)
        entries = nothing, n = 1;
    int rc = protect_mailboxes_config_parse(entries, n, &g->boxes, &err);
    if (rc < 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "imap.protect_mailboxes: %s", err ? err : "invalid");
        free(err);
        free(g);
        *error_r = strdup(msg);
        return -1;
    }
    g->vault = vault;
    switch (imap->append.algorithm) {
    case QUMAIL_APPEND_OTP: g->level = MIME_LEVEL_OTP; break;
    case QUMAIL_APPEND_AUTO: g->level = MIME_LEVEL_AUTO; break;
    default: g->level = MIME_LEVEL_AES; break;
    }
    g->otp_max_size = imap->append.otp_max_size;
    g->max_size = imap->append.max_size;
    *g_r = g;
    return 0;
}

void imap_append_gen_free(struct imap_append_gen **g)
{
    if (!*g)
        return;
    protect_mailboxes_config_free(&(*g)->boxes);
    free(*g);
    *g = NULL;
}

bool imap_append_gen_active(const struct imap_append_gen *g)
{
    return g && g->active;
}

struct imap_append_sess *imap_append_sess_new(const struct imap_append_gen *g, uv_loop_t *loop)
{
    struct imap_append_sess *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->g = g;
    a->loop = loop;
    a->m = protect_mailboxes_new(g->boxes);
    if (!a->m) {
        free(a);
        return NULL;
    }
    return a;
}

void imap_append_sess_set_owner(struct imap_append_sess *a, const char *owner)
{
    free(a->owner);
    a->owner = owner && *owner ? strdup(owner) : NULL;
}

void imap_append_sess_free(struct imap_append_sess **a)
{
    if (!*a)
        return;
    protect_mailboxes_free(&(*a)->m);
    free((*a)->owner);
    free(*a);
    *a = NULL;
}

enum imap_append_verdict imap_append_glue_mailbox(struct imap_append_sess *a, const char *name,
                                                  bool listed)
{
    if (protect_mailboxes_match(a->m, name))
        return IMAP_APPEND_PROTECT;
    /* an attribute entry may name it once the server has listed it */
    if (protect_mailboxes_needs_list(a->m, name))
        return listed ? IMAP_APPEND_PROTECT : IMAP_APPEND_ASK;
    return IMAP_APPEND_PLAIN;
}

static bool special_use(const char *attr)
{
    static const char *const su[] = {"\\Sent", "\\Drafts", "\\Archive", "\\Junk",
                                     "\\Trash", "\\All", "\\Flagged"};
    for (size_t i = 0; i < sizeof(su) / sizeof(su[0]); i++)
        if (strcasecmp(attr, su[i]) == 0)
            return true;
    return false;
}

bool imap_append_list_teaches(const char *const *attrs, size_t n, bool own)
{
    if (own)
        return true; /* asked for the attributes: the answer is the truth */
    for (size_t i = 0; i < n; i++)
        if (special_use(attrs[i]))
            return true;
    /* a relayed response without them (LSUB; a LIST of a server that
     * sends them only when asked) must not make a \Sent mailbox plain */
    return false;
}

void imap_append_glue_list(struct imap_append_sess *a, const char *name,
                           const char *const *attrs, size_t n, bool own)
{
    /* ELIMIT (a hostile server listing too many names): the name stays
     * unknown and is asked about again - never wrongly plain */
    if (imap_append_list_teaches(attrs, n, own))
        protect_mailboxes_learn(a->m, name, attrs, n);
}

static void job_done(void *arg, int status, struct protect_append_result *r, const char *error)
{
    struct glue_job *j = arg;
    struct imap_append_result ar = {.status = status < 0 ? status : 0, .fd = -1};
    if (status < 0) {
        ar.code = protect_append_imap_code(status);
        ar.text = status == PROTECT_APPEND_ETOOBIG ? "Message too large."
                  : status == PROTECT_APPEND_ENOOWNER
                      ? "No mail address for this login: cannot protect the copy."
                      : "Cannot protect the message now, try again later.";
        if (status != PROTECT_APPEND_ECANCELED)
            qlog_warn("imap %s: APPEND not protected: %s (%s)", imap_session_id(j->s),
                      protect_append_strerror(status), error ? error : "-");
    } else if (r->outcome == PROTECT_APPEND_ENCRYPTED) {
        ar.fd = r->fd;
        ar.size = r->size;
        r->fd = -1; /* the session takes it */
        qlog_info("imap %s: APPEND protected: %llu -> %llu bytes, key %s",
                  imap_session_id(j->s), (unsigned long long)r->plain_size,
                  (unsigned long long)r->size, r->key_id);
    } else {
        qlog_info("imap %s: APPEND of an already protected message: stored unchanged",
                  imap_session_id(j->s));
    }
    imap_session_append_done(j->s, j, &ar);
    free(j);
}

void *imap_append_glue_protect(struct imap_append_sess *a, imap_session *s, int in_fd,
                               uint64_t len, const char **code_r, const char **text_r)
{
    if (!a->g->vault) {
        *code_r = "UNAVAILABLE";
        *text_r = "No key vault: cannot protect the message.";
        return NULL;
    }
    struct glue_job *j = calloc(1, sizeof(*j));
    if (!j) {
        *code_r = "UNAVAILABLE";
        *text_r = "Out of memory.";
        return NULL;
    }
    j->s = s;
    struct protect_append_params p = {
        .vault = a->g->vault,
        .owner = a->owner,
        .level = a->g->level,
        .auto_threshold = a->g->otp_max_size,
        .max_size = a->g->max_size,
    };
    int rc = protect_append_start(a->loop, &p, in_fd, len, job_done, j, &j->pj);
    if (rc < 0) {
        free(j);
        *code_r = protect_append_imap_code(rc);
        *text_r = rc == PROTECT_APPEND_ENOOWNER
                      ? "No mail address for this login: cannot protect the copy."
                      : "Cannot protect the message now, try again later.";
        return NULL;
    }
    return j;
}

void imap_append_glue_cancel(struct imap_append_sess *a, void *job)
{
    (void)a;
    struct glue_job *j = job;
    protect_append_cancel(j->pj);
}
