/* Builds: one per message being decrypted, shared by every request
 * (waiter) for it. An explicit state machine; build_enter() is the one
 * place where the state changes (logged at debug level, "old -> new"):
 *
 *   FETCH    a waiter's fetch callback delivers the raw message into a
 *            private memfd (on failure the next waiter is asked);
 *   INSPECT  worker: control data (mime_inspect), outer header block,
 *            outer From, claimed identity and binding;
 *   CHECK    loop: may any waiter read it (claimed binding; authenticated
 *            again after decryption)? sender rule -> link and master SAE;
 *   VAULT    worker: the keys the vault holds;
 *   STATUS   the link's KME status: its peer KME must be the message's
 *            source KME (so keys are never filed under an identity the
 *            message made up), cached per link and master SAE;
 *   KME      dec_keys for the keys the vault lacks;
 *   STORE    worker: those keys committed to the vault (fsync) - before
 *            anything uses them;
 *   DECRYPT  worker: decryption, authenticated binding and inner From
 *            checked, normalised view with part tree and structures,
 *            metadata blob;
 *   DONE     loop: each waiter gets the view, or a notice; the view goes
 *            to the cache and its metadata to the vault; the build ends.
 *
 * Any state may end the build early with a notice reason (build_fail). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "incoming_internal.h"
#include "log.h"

#define OUTER_MAX ((size_t)256 * 1024) /* outer header block kept for notices */

static const char *const state_names[] = {
    [PI_S_FETCH] = "FETCH",     [PI_S_INSPECT] = "INSPECT",
    [PI_S_CHECK] = "CHECK",     [PI_S_VAULT] = "VAULT",
    [PI_S_STATUS] = "STATUS",   [PI_S_KME] = "KME",
    [PI_S_STORE] = "STORE",     [PI_S_DECRYPT] = "DECRYPT",
    [PI_S_DONE] = "DONE",
};

/* ---- per link: down time and the source-KME check ------------------------- */

struct pi_status {
    struct pi_status *next;
    char *master;
    char *peer_kme;          /* the link KME's peer for this master SAE */
    uint64_t expires;
};

struct pi_link {
    struct pi_link *next;
    char *name;
    uint64_t down_until;     /* pi_now(); 0: up */
    struct pi_status *status;
};

/* Keys the KME delivered but the vault refused: kept in memory (wiped at
 * the end) and committed again by the next read that needs them. */
struct pi_unsaved {
    struct pi_unsaved *next;
    char *source, *master;
    size_t n;
    char **ids;
    uint8_t **bytes;
    size_t *lens;
};

/* ---- the build ----------------------------------------------------------------- */

struct protect_in_fetch {
    struct pi_build *b;      /* NULL once detached (protect_in_free) */
    int fd;                  /* private memfd, ours until handed over */
    uint64_t written;
    uint64_t max;
    int error;               /* sticky write error */
};

struct pi_build {
    protect_in *pi;
    struct pi_build *next;   /* pi->builds */
    char *hint;              /* coalescing key; NULL: stands alone */
    enum pi_state state;
    struct pi_waiter *waiters;
    struct pi_waiter *fetcher;   /* the waiter whose fetch is running */
    protect_in_fetch *fetch;     /* running fetch */
    uv_work_t work;
    uint64_t t_start;

    /* the raw message */
    int raw_fd;
    uint8_t *raw;                /* read-only mapping */
    size_t raw_len;
    policy *pol;                 /* a reference, for the whole build */

    /* INSPECT */
    int inspect_error;
    char *inspect_msg;
    struct mime_info *info;
    uint8_t *outer;              /* outer header block (copy) */
    size_t outer_len;
    char *sender;                /* outer From address */
    char *id;                    /* claimed identity */
    struct pi_binding binding;   /* claimed; authenticated after DECRYPT */

    /* CHECK */
    char *link_name;
    char *master_rule;           /* the sender rule's master SAE */
    kme_client *kme;
    const char **key_ids;        /* borrowed from info */
    size_t n_keys;

    /* ETSI 004: every entry is chunks of the stream of the rule's link */
    kme_source *src;             /* the link's 004 source */
    char *ksid;                  /* that stream (owned); the vault source */
    char **names;                /* vault names "<KSID>/<index>" (owned),
                                    key_ids points at them */
    uint64_t *chunk_index;       /* per lookup */
    uint32_t *chunk_len;         /* per lookup, bytes */
    struct kme_source_ref *refs; /* the missing chunks as ranges */
    size_t n_refs;

    /* VAULT, KME, STORE */
    struct kme_vault_keys *vkeys;
    int vault_error;
    char *vault_msg;
    size_t *missing;             /* indices into key_ids */
    size_t n_missing;
    const char **missing_ids;
    struct kme_keys *kkeys;      /* in missing order */
    struct pi_unsaved *retry;    /* unsaved keys taken for STORE */
    int store_error;
    char *store_msg;

    /* DECRYPT and the outcome */
    enum protect_in_reason reason;
    char *detail;
    protect_in_view *view;
    uint8_t *meta;
    size_t meta_len;
    size_t from_vault, from_kme; /* key counts, for the log and stats */
    bool kick;                   /* a fetch call is due (deferred) */
    bool any_supplied;           /* some waiter's fetch delivered the bytes */
    bool local;                  /* local keys: the vault only */
    bool e004;                   /* ETSI 004 chunks (see src) */
    char tag[PI_TRANSIT_TAG_LEN + 1]; /* of the outer trace fields, "" none */
};

static void build_enter(struct pi_build *b, enum pi_state next);
static void build_fail(struct pi_build *b, enum protect_in_reason reason,
                       const char *detail);
static void kick_start(protect_in *pi);

/* ---- small helpers ----------------------------------------------------------------- */

static void stage(const protect_in *pi, const char *name)
{
    if (pi->cfg.test_stage != NULL)
        pi->cfg.test_stage(pi->cfg.test_arg, name);
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src != NULL ? strdup(src) : NULL;
}

static struct pi_link *link_get(protect_in *pi, const char *name)
{
    for (struct pi_link *l = pi->links; l != NULL; l = l->next) {
        if (strcmp(l->name, name) == 0)
            return l;
    }
    struct pi_link *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->name = strdup(name)) == NULL) {
        free(l);
        return NULL;
    }
    l->next = pi->links;
    pi->links = l;
    return l;
}

void pi_links_free(protect_in *pi)
{
    while (pi->links != NULL) {
        struct pi_link *l = pi->links;
        pi->links = l->next;
        while (l->status != NULL) {
            struct pi_status *s = l->status;
            l->status = s->next;
            free(s->master);
            free(s->peer_kme);
            free(s);
        }
        free(l->name);
        free(l);
    }
}

static void unsaved_free_one(struct pi_unsaved *u)
{
    for (size_t i = 0; i < u->n; i++) {
        free(u->ids[i]);
        if (u->bytes[i] != NULL)
            OPENSSL_cleanse(u->bytes[i], u->lens[i]);
        free(u->bytes[i]);
    }
    free(u->ids);
    free(u->bytes);
    free(u->lens);
    free(u->source);
    free(u->master);
    free(u);
}

void pi_unsaved_free(protect_in *pi)
{
    while (pi->unsaved != NULL) {
        struct pi_unsaved *u = pi->unsaved;
        pi->unsaved = u->next;
        unsaved_free_one(u);
    }
}

/* ---- waiters and the build's end ------------------------------------------------ */

static void build_unlink(struct pi_build *b)
{
    for (struct pi_build **pp = &b->pi->builds; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            return;
        }
    }
}

static void build_free(struct pi_build *b)
{
    while (b->waiters != NULL) {
        struct pi_waiter *w = b->waiters;
        b->waiters = w->next;
        pi_waiter_free(w);
    }
    if (b->fetch != NULL)
        b->fetch->b = NULL; /* the fetcher finishes alone */
    if (b->raw != NULL)
        munmap(b->raw, b->raw_len);
    if (b->raw_fd >= 0)
        close(b->raw_fd);
    policy_unref(&b->pol);
    free(b->inspect_msg);
    mime_info_free(&b->info);
    if (b->outer != NULL)
        OPENSSL_cleanse(b->outer, b->outer_len);
    free(b->outer);
    free(b->sender);
    free(b->id);
    pi_binding_clear(&b->binding);
    free(b->link_name);
    free(b->master_rule);
    free(b->key_ids);
    for (size_t i = 0; b->names != NULL && i < b->n_keys; i++)
        free(b->names[i]);
    free(b->names);
    free(b->chunk_index);
    free(b->chunk_len);
    free(b->ksid);
    free(b->refs);
    kme_vault_keys_free(&b->vkeys);
    free(b->vault_msg);
    free(b->missing);
    free(b->missing_ids);
    kme_keys_free(&b->kkeys);
    if (b->retry != NULL)
        unsaved_free_one(b->retry);
    free(b->store_msg);
    free(b->detail);
    protect_in_view_unref(&b->view);
    if (b->meta != NULL)
        OPENSSL_cleanse(b->meta, b->meta_len);
    free(b->meta);
    free(b->hint);
    free(b);
}

static struct pi_waiter *waiter_take_unasked(struct pi_build *b)
{
    for (struct pi_waiter *w = b->waiters; w != NULL; w = w->next) {
        if (!w->asked && w->fetch != NULL)
            return w; /* (a supplying request has no callback to ask) */
    }
    return NULL;
}

/* ---- the fetch ------------------------------------------------------------------------- */

int protect_in_fetch_fd(const protect_in_fetch *f) { return f->fd; }

int protect_in_fetch_write(protect_in_fetch *f, const void *data, size_t len)
{
    if (f->error != 0)
        return f->error;
    if (len > f->max || f->written > f->max - len) {
        f->error = PROTECT_IN_ETOOBIG;
        return f->error;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(f->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            f->error = PROTECT_IN_EIO;
            return f->error;
        }
        p += n;
        left -= (size_t)n;
    }
    f->written += len;
    return 0;
}

static void event_fetched(struct pi_build *b, int error, int fd, uint64_t len);

void protect_in_fetch_done(protect_in_fetch *f, int error)
{
    if (f == NULL)
        return;
    struct pi_build *b = f->b;
    int fd = f->fd;
    if (error == 0 && f->error != 0)
        error = f->error;
    uint64_t len = f->written;
    if (error == 0) {
        /* What was written directly to the fd counts too. */
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
            error = PROTECT_IN_EIO;
        else
            len = (uint64_t)end;
        if (error == 0 && len > f->max)
            error = PROTECT_IN_ETOOBIG;
    }
    free(f);
    if (b == NULL) {
        close(fd);
        return;
    }
    b->fetch = NULL;
    if (error != 0) {
        close(fd);
        fd = -1;
    }
    event_fetched(b, error, fd, len);
}

/* Asks the next waiter for the message; called from the kick (never inside
 * protect_in_open). */
/* A fetch handle for waiter w: a private memfd the protocol side fills. */
static protect_in_fetch *fetch_new(struct pi_build *b, struct pi_waiter *w)
{
    protect_in_fetch *f = calloc(1, sizeof(*f));
    int fd = memfd_create("qumail-in", MFD_CLOEXEC);
    if (f == NULL || fd < 0) {
        free(f);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    f->b = b;
    f->fd = fd;
    f->max = b->pi->cfg.max_message_size;
    w->asked = true;
    b->fetcher = w;
    b->fetch = f;
    b->pi->stats.fetches++;
    return f;
}

static void fetch_call(struct pi_build *b)
{
    struct pi_waiter *w = waiter_take_unasked(b);
    if (w == NULL) {
        if (b->waiters == NULL) {
            build_unlink(b);
            build_free(b); /* nobody wants it any more */
        } else {
            build_fail(b, PROTECT_IN_R_FETCH, "no request could read the message");
        }
        return;
    }
    protect_in_fetch *f = fetch_new(b, w);
    if (f == NULL) {
        build_fail(b, PROTECT_IN_R_INTERNAL, "no memory for the message");
        return;
    }
    w->fetch(w->fetch_arg, f);
}

static void event_fetched(struct pi_build *b, int error, int fd, uint64_t len)
{
    struct pi_waiter *w = b->fetcher;
    b->fetcher = NULL;
    if (error == PROTECT_IN_ETOOBIG) {
        build_fail(b, PROTECT_IN_R_TOO_LARGE, "larger than max_message_size");
        return;
    }
    if (error == 0) {
        b->any_supplied = true;
        if (w != NULL)
            w->supplied = true; /* see waiter_gets() at DONE */
        b->raw_fd = fd;
        b->raw_len = (size_t)len;
    }
    if (b->waiters == NULL) {
        build_unlink(b);
        build_free(b);
        return;
    }
    if (error != 0) {
        b->kick = true; /* ask the next waiter */
        kick_start(b->pi);
        return;
    }
    build_enter(b, PI_S_INSPECT);
}

/* ---- the kick: deferred calls ------------------------------------------------------- */

static void on_kick(uv_timer_t *t)
{
    protect_in *pi = t->data;
    pi->workers++; /* pin: a callback may free pi */
    /* answers first (cache hits found by protect_in_open) */
    while (pi->ready != NULL) {
        struct pi_ready *r = pi->ready;
        pi->ready = r->next;
        struct pi_waiter *w = r->w;
        protect_in_view *v = r->view;
        free(r);
        protect_in_view_cb cb = w->cb;
        void *arg = w->arg;
        pi_waiter_free(w);
        cb(arg, 0, v);
    }
    while (!pi->closing) {
        struct pi_build *b = pi->builds;
        while (b != NULL && !b->kick)
            b = b->next;
        if (b == NULL)
            break;
        b->kick = false;
        fetch_call(b);
    }
    pi->workers--;
    if (pi->closing)
        pi_free_final(pi);
}

static void kick_start(protect_in *pi)
{
    if (!pi->closing)
        uv_timer_start(&pi->kick, on_kick, 0, 0);
}

void pi_kick(protect_in *pi) { kick_start(pi); }

/* ---- workers ------------------------------------------------------------------------- */

static void do_inspect(struct pi_build *b);
static void do_vault(struct pi_build *b);
static void do_store(struct pi_build *b);
static void do_decrypt(struct pi_build *b);
static void after_inspect(struct pi_build *b);
static void after_vault(struct pi_build *b);
static void after_store(struct pi_build *b);
static void after_decrypt(struct pi_build *b);

static void work_cb(uv_work_t *req)
{
    struct pi_build *b = req->data;
    switch (b->state) {
    case PI_S_INSPECT: do_inspect(b); break;
    case PI_S_VAULT: do_vault(b); break;
    case PI_S_STORE: do_store(b); break;
    case PI_S_DECRYPT: do_decrypt(b); break;
    default: break;
    }
}

static void after_work_cb(uv_work_t *req, int status)
{
    struct pi_build *b = req->data;
    protect_in *pi = b->pi;
    pi->workers--;
    if (pi->closing || status == UV_ECANCELED) {
        build_free(b);
        if (pi->closing)
            pi_free_final(pi);
        return;
    }
    switch (b->state) {
    case PI_S_INSPECT: after_inspect(b); break;
    case PI_S_VAULT: after_vault(b); break;
    case PI_S_STORE: after_store(b); break;
    case PI_S_DECRYPT: after_decrypt(b); break;
    default: break;
    }
}

static void queue_work(struct pi_build *b)
{
    b->work.data = b;
    if (uv_queue_work(b->pi->loop, &b->work, work_cb, after_work_cb) < 0) {
        build_fail(b, PROTECT_IN_R_INTERNAL, "thread pool refused the job");
        return;
    }
    b->pi->workers++;
}

/* ---- INSPECT ------------------------------------------------------------------------- */

/* The first key entry names the ciphertext; the transit tag which
 * delivered copy of it this is. */
static char *identity_of(const struct mime_info *info, const char *tag)
{
    struct mime_key_entry e;
    if (info == NULL || mime_info_key_entry(info, 0, &e) < 0)
        return NULL;
    char buf[PI_ID_MAX + 1];
    if (e.kind == MIME_KEY_ETSI014)
        snprintf(buf, sizeof(buf), "k/%s", e.key_id);
    else
        snprintf(buf, sizeof(buf), "c/%s/%" PRIu64, e.ksid, e.first_index);
    return pi_id_tagged(buf, tag);
}

/* The header block: through the first empty line, at most OUTER_MAX bytes
 * (cut at a line end). */
static size_t header_block_len(const uint8_t *p, size_t len)
{
    size_t lim = len;
    if (lim > OUTER_MAX)
        lim = OUTER_MAX;
    size_t last_eol = 0;
    for (size_t i = 0; i < lim; i++) {
        if (p[i] != '\n')
            continue;
        last_eol = i + 1;
        if (i + 1 < lim && p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < lim && p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
    }
    return len <= OUTER_MAX ? len : last_eol;
}

static void do_inspect(struct pi_build *b)
{
    if (b->raw_len > 0) {
        void *m = mmap(NULL, b->raw_len, PROT_READ, MAP_PRIVATE, b->raw_fd, 0);
        if (m == MAP_FAILED) {
            b->inspect_error = MIME_ERR_IO;
            return;
        }
        b->raw = m;
    }
    b->inspect_error = mime_inspect_mem(b->raw, b->raw_len, &b->info,
                                        &b->inspect_msg);
    size_t hl = header_block_len(b->raw, b->raw_len);
    if (hl > 0 && (b->outer = malloc(hl)) != NULL) {
        memcpy(b->outer, b->raw, hl);
        b->outer_len = hl;
        struct mime_struct *ms = NULL;
        if (mime_struct_parse(b->outer, hl, 0, &ms, NULL) == 0)
            b->sender = pi_struct_from_address(ms);
        mime_struct_free(&ms);
    }
    if (b->inspect_error == 0) {
        if (b->outer != NULL && pi_transit_tag(b->outer, b->outer_len, b->tag) < 0)
            b->inspect_error = MIME_ERR_NOMEM;
        b->id = identity_of(b->info, b->tag);
        if (b->id == NULL || pi_binding_from_info(&b->binding, b->info) < 0)
            b->inspect_error = MIME_ERR_NOMEM;
    }
}

static enum protect_in_reason mime_reason(int err)
{
    switch (err) {
    case MIME_ERR_UNSUPPORTED_VERSION:
    case MIME_ERR_UNSUPPORTED_ALGORITHM:
        return PROTECT_IN_R_UNSUPPORTED;
    case MIME_ERR_AUTH_FAILED:
    case MIME_ERR_KEY_WRONG_SIZE:
        return PROTECT_IN_R_AUTH_FAILED;
    case MIME_ERR_KEY_MISSING:
        return PROTECT_IN_R_VAULT;
    case MIME_ERR_TOO_LARGE:
        return PROTECT_IN_R_TOO_LARGE;
    case MIME_ERR_NOMEM:
    case MIME_ERR_IO:
    case MIME_ERR_CRYPTO:
    case MIME_ERR_INVALID_ARG:
        return PROTECT_IN_R_INTERNAL;
    default: /* NOT_ENCRYPTED (claimed in its header only), MALFORMED,
                KEY_DUPLICATE */
        return PROTECT_IN_R_MALFORMED;
    }
}

/* Would any waiter be allowed by the (claimed) binding? */
static bool someone_may_read(struct pi_build *b)
{
    for (struct pi_waiter *w = b->waiters; w != NULL; w = w->next) {
        if (pi_access(b->pi, w->reader, &b->binding) == PROTECT_IN_DECRYPTED)
            return true;
    }
    return false;
}

static void after_inspect(struct pi_build *b)
{
    if (b->inspect_error < 0) {
        build_fail(b, mime_reason(b->inspect_error), b->inspect_msg);
        return;
    }
    build_enter(b, PI_S_CHECK);
}

/* The names the keys have in the vault and in the KME request, in
 * key-stream order: 014 key_IDs (borrowed from info), or for 004 chunks
 * "<KSID>/<index>" (the vault refuses spaces in key IDs, so not mime's
 * lookup name "<KSID> <index>"). NULL, or why the keys cannot be had
 * (b->key_ids NULL: out of memory). */
static const char *key_names(struct pi_build *b)
{
    size_t ne = mime_info_key_count(b->info);
    uint64_t n = mime_info_lookup_count(b->info);
    bool k014 = false, k004 = false;
    for (size_t i = 0; i < ne; i++) {
        struct mime_key_entry e;
        if (mime_info_key_entry(b->info, i, &e) < 0)
            return "unreadable key entry";
        k014 |= e.kind == MIME_KEY_ETSI014;
        k004 |= e.kind != MIME_KEY_ETSI014;
        if (e.kind != MIME_KEY_ETSI014 &&
            (e.ksid == NULL || (b->ksid != NULL && strcasecmp(b->ksid, e.ksid) != 0)))
            return "ETSI 004 chunks of more than one key stream";
        if (e.kind != MIME_KEY_ETSI014 && b->ksid == NULL &&
            (b->ksid = strdup(e.ksid)) == NULL)
            return "out of memory";
    }
    if (k014 && k004)
        return "ETSI 014 keys and 004 chunks in one message";
    if (n > KME_VAULT_MAX_BATCH)
        return "more keys than the vault takes in one batch";
    b->e004 = k004;
    b->key_ids = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
    if (b->key_ids == NULL)
        return "out of memory";
    if (!k004) {
        for (size_t i = 0; i < ne; i++) {
            struct mime_key_entry e;
            mime_info_key_entry(b->info, i, &e);
            b->key_ids[i] = e.key_id;
        }
        b->n_keys = ne;
        return NULL;
    }
    b->names = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
    b->chunk_index = calloc(n > 0 ? (size_t)n : 1, sizeof(uint64_t));
    b->chunk_len = calloc(n > 0 ? (size_t)n : 1, sizeof(uint32_t));
    if (b->names == NULL || b->chunk_index == NULL || b->chunk_len == NULL)
        goto nomem;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        struct mime_key_entry e;
        mime_info_key_entry(b->info, i, &e);
        for (uint64_t j = 0; j < e.count; j++, k++) {
            char name[MIME_KSID_LEN + 24];
            snprintf(name, sizeof(name), "%s/%" PRIu64, b->ksid, e.first_index + j);
            b->n_keys = k + 1; /* what build_free frees */
            if ((b->names[k] = strdup(name)) == NULL)
                goto nomem;
            b->key_ids[k] = b->names[k];
            b->chunk_index[k] = e.first_index + j;
            b->chunk_len[k] = (uint32_t)(e.chunk_bits / 8);
        }
    }
    b->n_keys = k;
    return NULL;
nomem:
    free(b->key_ids);
    b->key_ids = NULL;
    return "out of memory";
}

/* A 004 message: the sender rule's link must be a 004 source whose stream
 * is the message's (chunks are taken, and filed in the vault, only under
 * the stream the rule names: a message cannot make us consume another
 * stream's chunks or file them under a name it chose). */
static bool check_004_link(struct pi_build *b)
{
    protect_in *pi = b->pi;
    b->src = pi->source_fn != NULL ? pi->source_fn(pi->source_arg, b->link_name) : NULL;
    if (pi->source_fn == NULL) {
        build_fail(b, PROTECT_IN_R_KEY_SOURCE, "no ETSI 004 key source configured");
        return false;
    }
    if (b->src == NULL) {
        build_fail(b, PROTECT_IN_R_NO_LINK, b->link_name);
        return false;
    }
    if (kme_source_kind(b->src) != KME_SOURCE_ETSI004) {
        build_fail(b, PROTECT_IN_R_KEY_SOURCE,
                   "the sender rule's link is not an ETSI 004 link");
        return false;
    }
    const char *ksid = kme_source_ksid(b->src);
    if (ksid == NULL || strcasecmp(ksid, b->ksid) != 0) {
        build_fail(b, PROTECT_IN_R_SENDER_MISMATCH,
                   "the message's key stream is not the sender rule's link's");
        return false;
    }
    return true;
}

/* The vault's source for this message's keys: the message's source KME
 * (checked against the link's peer, STATUS) for 014 keys; the stream's
 * KSID (checked against the link's) for 004 chunks. */
static const char *vault_source(const struct pi_build *b)
{
    return b->e004 ? b->ksid : mime_info_source_kme_id(b->info);
}

/* CHECK runs on the loop: who may read, which rule. */
static void check(struct pi_build *b)
{
    protect_in *pi = b->pi;
    if (b->waiters == NULL) {
        build_enter(b, PI_S_DONE); /* nobody left: nothing fetched */
        return;
    }
    if (!someone_may_read(b)) {
        /* Each waiter gets its own access notice at DONE; no key is
         * fetched for a message nobody here may read. */
        build_fail(b, PROTECT_IN_R_NOT_ALLOWED, NULL);
        return;
    }
    const char *why = key_names(b);
    if (why != NULL) {
        build_fail(b, strcmp(why, "out of memory") == 0 ? PROTECT_IN_R_INTERNAL
                                                        : PROTECT_IN_R_KEY_SOURCE,
                   why);
        return;
    }
    const char *source = mime_info_source_kme_id(b->info);
    const char *master = mime_info_master_sae_id(b->info);
    b->local = strcmp(source, KME_VAULT_LOCAL_SOURCE) == 0;
    if (!b->local) {
        /* no From address: only the catch-all `sender *` rule applies */
        const struct policy_sender_rule *rule =
            b->pol != NULL ? policy_lookup_sender(b->pol, b->sender) : NULL;
        if (rule == NULL) {
            build_fail(b, PROTECT_IN_R_NO_SENDER_RULE,
                       b->sender == NULL ? "the message has no From address"
                                         : NULL);
            return;
        }
        if (rule->master_sae == NULL || strcmp(rule->master_sae, master) != 0) {
            build_fail(b, PROTECT_IN_R_SENDER_MISMATCH,
                       "the message's master SAE is not the sender rule's");
            return;
        }
        if (rule->link == NULL) {
            build_fail(b, PROTECT_IN_R_NO_LINK, "the sender rule names no link");
            return;
        }
        set_str(&b->link_name, rule->link);
        set_str(&b->master_rule, rule->master_sae);
        if (b->link_name == NULL || b->master_rule == NULL) {
            build_fail(b, PROTECT_IN_R_INTERNAL, "out of memory");
            return;
        }
        if (b->e004 && !check_004_link(b))
            return;
    } else if (b->e004) {
        build_fail(b, PROTECT_IN_R_KEY_SOURCE, "local keys are never 004 chunks");
        return;
    }
    (void)pi;
    build_enter(b, PI_S_VAULT);
}

/* ---- VAULT --------------------------------------------------------------------------- */

static void do_vault(struct pi_build *b)
{
    b->vault_error = kme_vault_keys_get(
        b->pi->vault, vault_source(b),
        mime_info_master_sae_id(b->info), b->key_ids, b->n_keys, &b->vkeys,
        &b->vault_msg);
}

/* Unsaved keys that cover every missing key of this build. */
static struct pi_unsaved *unsaved_take(struct pi_build *b)
{
    const char *source = vault_source(b);
    const char *master = mime_info_master_sae_id(b->info);
    for (struct pi_unsaved **pp = &b->pi->unsaved; *pp != NULL; pp = &(*pp)->next) {
        struct pi_unsaved *u = *pp;
        if (strcmp(u->source, source) != 0 || strcmp(u->master, master) != 0)
            continue;
        size_t hit = 0;
        for (size_t i = 0; i < b->n_missing; i++) {
            for (size_t j = 0; j < u->n && b->missing_ids[i] != NULL; j++) {
                if (u->ids[j] != NULL && strcmp(u->ids[j], b->missing_ids[i]) == 0) {
                    hit++;
                    break;
                }
            }
        }
        if (hit == b->n_missing) {
            *pp = u->next;
            u->next = NULL;
            return u;
        }
    }
    return NULL;
}

/* The missing chunks as ranges of consecutive indices of one size. */
static int refs_004(struct pi_build *b)
{
    b->refs = calloc(b->n_missing > 0 ? b->n_missing : 1, sizeof(*b->refs));
    if (b->refs == NULL)
        return -1;
    b->n_refs = 0;
    for (size_t i = 0; i < b->n_missing; i++) {
        size_t k = b->missing[i];
        struct kme_source_ref *last = b->n_refs > 0 ? &b->refs[b->n_refs - 1] : NULL;
        if (last != NULL && last->chunk_len == b->chunk_len[k] &&
            (uint64_t)last->first + last->count == b->chunk_index[k]) {
            last->count++;
            continue;
        }
        b->refs[b->n_refs++] = (struct kme_source_ref){
            .ksid = b->ksid, .first = (uint32_t)b->chunk_index[k], .count = 1,
            .chunk_len = b->chunk_len[k]};
    }
    return 0;
}

static void after_vault(struct pi_build *b)
{
    protect_in *pi = b->pi;
    if (b->vault_error < 0) {
        build_fail(b, PROTECT_IN_R_VAULT, b->vault_msg);
        return;
    }
    b->from_vault = b->vkeys->found;
    pi->stats.keys_from_vault += b->vkeys->found;
    if (b->vkeys->found == b->vkeys->count) {
        build_enter(b, PI_S_DECRYPT);
        return;
    }
    if (b->local) {
        build_fail(b, PROTECT_IN_R_VAULT,
                   "a local key of this message is not in the vault");
        return;
    }
    size_t m = b->vkeys->count - b->vkeys->found;
    b->missing = calloc(m, sizeof(size_t));
    b->missing_ids = calloc(m, sizeof(char *));
    if (b->missing == NULL || b->missing_ids == NULL) {
        build_fail(b, PROTECT_IN_R_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < b->vkeys->count; i++) {
        if (b->vkeys->keys[i].bytes == NULL) {
            b->missing[b->n_missing] = i;
            b->missing_ids[b->n_missing++] = b->key_ids[i];
        }
    }
    if ((b->retry = unsaved_take(b)) != NULL) {
        build_enter(b, PI_S_STORE); /* commit them this time */
        return;
    }
    if (!b->e004) {
        b->kme = pi->link_fn != NULL ? pi->link_fn(pi->link_arg, b->link_name) : NULL;
        if (b->kme == NULL) {
            build_fail(b, PROTECT_IN_R_NO_LINK, b->link_name);
            return;
        }
    }
    struct pi_link *l = link_get(pi, b->link_name);
    if (l == NULL) {
        build_fail(b, PROTECT_IN_R_INTERNAL, "out of memory");
        return;
    }
    uint64_t now = pi_now(pi);
    if (l->down_until > now) {
        build_fail(b, PROTECT_IN_R_KME_UNAVAILABLE,
                   "the KME failed moments ago; the next read tries again");
        return;
    }
    if (b->e004) {
        /* no status call in 004: the stream check (CHECK) binds the chunks
         * to the rule's link */
        if (refs_004(b) < 0) {
            build_fail(b, PROTECT_IN_R_INTERNAL, "out of memory");
            return;
        }
        build_enter(b, PI_S_KME);
        return;
    }
    for (struct pi_status *s = l->status; s != NULL; s = s->next) {
        if (strcmp(s->master, b->master_rule) == 0 && s->expires > now) {
            if (strcmp(s->peer_kme, mime_info_source_kme_id(b->info)) != 0) {
                build_fail(b, PROTECT_IN_R_SENDER_MISMATCH,
                           "the message's source KME is not the link's peer");
                return;
            }
            build_enter(b, PI_S_KME);
            return;
        }
    }
    build_enter(b, PI_S_STATUS);
}

/* ---- STATUS and KME --------------------------------------------------------------- */

static bool kme_transient(int error)
{
    return error == KME_ETIMEDOUT || error == KME_ECONNREFUSED ||
           error == KME_ECONNECT || error == KME_EIO || error == KME_ETLS ||
           error == KME_ESERVER || error == KME_EBADRESPONSE;
}

/* A failed KME exchange: the notice, and the link held down a moment so
 * that one FETCH of many messages does not hammer a KME that is down. */
static void kme_failed(struct pi_build *b, const struct kme_result *res)
{
    protect_in *pi = b->pi;
    if (res->error == KME_ECANCELLED && pi->closing)
        return; /* protect_in_free frees the build */
    enum protect_in_reason r = PROTECT_IN_R_KME_UNAVAILABLE;
    if (res->error == KME_ENOTFOUND || res->error == KME_EINVAL)
        r = PROTECT_IN_R_KEY_UNKNOWN;
    else if (res->error == KME_EUNAUTHORIZED)
        r = PROTECT_IN_R_KME_REFUSED;
    if (kme_transient(res->error) && pi->cfg.notice_ttl_ms > 0) {
        struct pi_link *l = link_get(pi, b->link_name);
        if (l != NULL)
            l->down_until = pi_now(pi) + pi->cfg.notice_ttl_ms;
    }
    char detail[300];
    snprintf(detail, sizeof(detail), "%s: %.250s", kme_client_errname(res->error),
             res->message);
    build_fail(b, r, detail);
}

static void on_status(const struct kme_result *res, const struct kme_status *st,
                      void *arg)
{
    struct pi_build *b = arg;
    protect_in *pi = b->pi;
    if (res->error != KME_OK || st == NULL || st->target_kme_id == NULL) {
        if (res->error == KME_ECANCELLED && pi->closing)
            return;
        struct kme_result r = *res;
        if (r.error == KME_OK)
            r.error = KME_EBADRESPONSE;
        kme_failed(b, &r);
        return;
    }
    struct pi_link *l = link_get(pi, b->link_name);
    if (l != NULL) {
        struct pi_status *s = l->status;
        while (s != NULL && strcmp(s->master, b->master_rule) != 0)
            s = s->next;
        if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
            s->master = strdup(b->master_rule);
            s->next = l->status;
            l->status = s;
        }
        if (s != NULL) {
            set_str(&s->peer_kme, st->target_kme_id);
            s->expires = s->master != NULL && s->peer_kme != NULL
                             ? pi_now(pi) + pi->cfg.status_ttl_ms
                             : 0;
        }
    }
    if (strcmp(st->target_kme_id, mime_info_source_kme_id(b->info)) != 0) {
        build_fail(b, PROTECT_IN_R_SENDER_MISMATCH,
                   "the message's source KME is not the link's peer");
        return;
    }
    build_enter(b, PI_S_KME);
}

static void on_dec_keys(const struct kme_result *res, struct kme_keys *keys,
                        void *arg)
{
    struct pi_build *b = arg;
    protect_in *pi = b->pi;
    if (keys != NULL)
        stage(pi, "keys-received");
    if (res->error != KME_OK || keys == NULL) {
        kme_keys_free(&keys);
        kme_failed(b, res);
        return;
    }
    bool ok = keys->count == b->n_missing;
    for (size_t i = 0; ok && i < keys->count; i++) {
        if (b->e004)
            ok = strcasecmp(keys->keys[i].ksid, b->ksid) == 0 &&
                 keys->keys[i].index == b->chunk_index[b->missing[i]] &&
                 keys->keys[i].len == b->chunk_len[b->missing[i]];
        else
            ok = strcasecmp(keys->keys[i].key_id, b->missing_ids[i]) == 0;
    }
    if (!ok) {
        kme_keys_free(&keys);
        build_fail(b, PROTECT_IN_R_KME_UNAVAILABLE,
                   "the KME answered other keys than asked for");
        return;
    }
    /* First thing: commit them (STORE), before any use. */
    b->kkeys = keys;
    b->from_kme = keys->count;
    pi->stats.keys_from_kme += keys->count;
    build_enter(b, PI_S_STORE);
}

/* ---- STORE --------------------------------------------------------------------------- */

static void do_store(struct pi_build *b)
{
    protect_in *pi = b->pi;
    size_t n = b->n_missing;
    struct kme_vault_key_in *in = calloc(n > 0 ? n : 1, sizeof(*in));
    if (in == NULL) {
        b->store_error = KME_VAULT_ENOMEM;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        in[i].key_id = b->missing_ids[i]; /* the message's spelling */
        if (b->kkeys != NULL) {
            in[i].bytes = b->kkeys->keys[i].bytes;
            in[i].len = b->kkeys->keys[i].len;
        } else { /* unsaved keys from an earlier read */
            for (size_t j = 0; j < b->retry->n; j++) {
                if (strcmp(b->retry->ids[j], b->missing_ids[i]) == 0) {
                    in[i].bytes = b->retry->bytes[j];
                    in[i].len = b->retry->lens[j];
                    break;
                }
            }
        }
    }
    stage(pi, "vault-put");
    b->store_error = kme_vault_keys_put(
        pi->vault, KME_VAULT_RECEIVED, vault_source(b),
        mime_info_master_sae_id(b->info), in, n, &b->store_msg);
    stage(pi, "vault-put-done");
    free(in);
}

/* The vault refused keys the KME will not deliver again: keep them. */
static void keep_unsaved(struct pi_build *b)
{
    if (b->retry != NULL) {
        b->retry->next = b->pi->unsaved;
        b->pi->unsaved = b->retry;
        b->retry = NULL;
        return;
    }
    struct kme_keys *k = b->kkeys;
    struct pi_unsaved *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return;
    u->n = k->count;
    u->ids = calloc(u->n, sizeof(char *));
    u->bytes = calloc(u->n, sizeof(uint8_t *));
    u->lens = calloc(u->n, sizeof(size_t));
    u->source = strdup(vault_source(b));
    u->master = strdup(mime_info_master_sae_id(b->info));
    bool ok = u->ids != NULL && u->bytes != NULL && u->lens != NULL &&
              u->source != NULL && u->master != NULL;
    for (size_t i = 0; ok && i < u->n; i++) {
        u->ids[i] = strdup(b->missing_ids[i]);
        u->bytes[i] = malloc(k->keys[i].len);
        ok = u->ids[i] != NULL && u->bytes[i] != NULL;
        if (ok) {
            memcpy(u->bytes[i], k->keys[i].bytes, k->keys[i].len);
            u->lens[i] = k->keys[i].len;
        }
    }
    if (!ok) {
        if (u->ids == NULL || u->bytes == NULL || u->lens == NULL)
            u->n = 0;
        unsaved_free_one(u);
        return;
    }
    u->next = b->pi->unsaved;
    b->pi->unsaved = u;
}

static void after_store(struct pi_build *b)
{
    if (b->store_error < 0) {
        keep_unsaved(b);
        build_fail(b, PROTECT_IN_R_VAULT, b->store_msg);
        return;
    }
    build_enter(b, PI_S_DECRYPT);
}

/* ---- DECRYPT ------------------------------------------------------------------------ */

static const uint8_t *missing_bytes(const struct pi_build *b, size_t k, size_t *len_r)
{
    if (b->kkeys != NULL) {
        *len_r = b->kkeys->keys[k].len;
        return b->kkeys->keys[k].bytes;
    }
    for (size_t j = 0; b->retry != NULL && j < b->retry->n; j++) {
        if (strcmp(b->retry->ids[j], b->missing_ids[k]) == 0) {
            *len_r = b->retry->lens[j];
            return b->retry->bytes[j];
        }
    }
    *len_r = 0;
    return NULL;
}

/* The inner From (authenticated) must lead to the same link and master SAE
 * as the outer From did: a message cannot borrow another sender's rule. */
static bool inner_sender_ok(struct pi_build *b, const protect_in_view *v)
{
    if (b->local)
        return true;
    char *from = pi_struct_from_address(v->ms);
    const struct policy_sender_rule *r = policy_lookup_sender(b->pol, from);
    free(from);
    return r != NULL && r->link != NULL && r->master_sae != NULL &&
           strcmp(r->link, b->link_name) == 0 &&
           strcmp(r->master_sae, b->master_rule) == 0;
}

/* The transit fields (what the delivery path put above the writer's
 * block) go above the decrypted original, before normalisation, so that
 * every item of the view (size, structures, sections, metadata) has them,
 * as the mailbox would had the plaintext been delivered. On failure the
 * plaintext is wiped and freed. */
static int prepend_transit(const struct pi_build *b, unsigned char **plain,
                           size_t *plen)
{
    uint8_t *tr = NULL;
    size_t tlen = 0;
    if (b->outer == NULL || b->tag[0] == '\0')
        return 0;
    if (pi_transit_fields(b->outer, b->outer_len, *plain, *plen, &tr, &tlen) < 0) {
        mime_plaintext_free(plain, *plen);
        return -1;
    }
    if (tlen == 0)
        return 0;
    unsigned char *all = malloc(tlen + *plen);
    if (all == NULL) {
        free(tr);
        mime_plaintext_free(plain, *plen);
        return -1;
    }
    memcpy(all, tr, tlen);
    if (*plen > 0)
        memcpy(all + tlen, *plain, *plen);
    free(tr);
    size_t n = tlen + *plen;
    mime_plaintext_free(plain, *plen);
    *plain = all;
    *plen = n;
    return 0;
}

static void do_decrypt(struct pi_build *b)
{
    protect_in *pi = b->pi;
    stage(pi, "decrypt");
    struct mime_key *keys = calloc(b->n_keys > 0 ? b->n_keys : 1, sizeof(*keys));
    if (keys == NULL) {
        b->reason = PROTECT_IN_R_INTERNAL;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n_keys; i++) {
        if (b->e004) { /* looked up by mime as "<KSID> <index>" */
            keys[i].ksid = b->ksid;
            keys[i].index = b->chunk_index[i];
        } else {
            keys[i].key_id = b->key_ids[i];
        }
        if (b->vkeys->keys[i].bytes != NULL) {
            keys[i].key = b->vkeys->keys[i].bytes;
            keys[i].key_len = b->vkeys->keys[i].len;
        } else {
            keys[i].key = missing_bytes(b, k++, &keys[i].key_len);
        }
    }
    struct mime_key_list list = {keys, b->n_keys};
    unsigned char *plain = NULL;
    size_t plen = 0;
    struct mime_info *info = NULL;
    char *msg = NULL;
    int ret = mime_decrypt_mem(b->raw, b->raw_len, mime_key_list_lookup, &list,
                               &plain, &plen, &info, &msg);
    free(keys);
    /* The key material is not needed any more. */
    kme_vault_keys_free(&b->vkeys);
    kme_keys_free(&b->kkeys);
    if (b->retry != NULL) {
        unsaved_free_one(b->retry);
        b->retry = NULL;
    }
    if (ret < 0) {
        mime_info_free(&info);
        b->reason = mime_reason(ret);
        b->detail = msg;
        return;
    }
    free(msg);
    /* Decide on the authenticated control data from here on. */
    struct pi_binding auth = {0};
    char *id = identity_of(info, b->tag);
    if (id == NULL || pi_binding_from_info(&auth, info) < 0) {
        mime_plaintext_free(&plain, plen);
        mime_info_free(&info);
        free(id);
        b->reason = PROTECT_IN_R_INTERNAL;
        return;
    }
    mime_info_free(&b->info);
    b->info = info;
    pi_binding_clear(&b->binding);
    b->binding = auth;
    free(b->id);
    b->id = id;
    if (prepend_transit(b, &plain, &plen) < 0) {
        b->reason = PROTECT_IN_R_INTERNAL;
        return;
    }
    protect_in_view *v = NULL;
    ret = pi_view_build(plain, plen, PROTECT_IN_DECRYPTED, b->id, &b->binding,
                        &pi->hooks, &v);
    if (ret < 0) {
        b->reason = PROTECT_IN_R_INTERNAL;
        return;
    }
    if (!inner_sender_ok(b, v)) {
        pi_view_destroy(v);
        b->reason = PROTECT_IN_R_SENDER_MISMATCH;
        set_str(&b->detail, "the From inside the message leads to another "
                            "sender rule");
        return;
    }
    if (pi_meta_encode(v, pi->cfg.max_header_keep, &b->meta, &b->meta_len) < 0) {
        b->meta = NULL;
        b->meta_len = 0;
    }
    b->view = v;
    b->reason = PROTECT_IN_DECRYPTED;
    stage(pi, "built");
}

static void after_decrypt(struct pi_build *b)
{
    if (b->view == NULL) {
        build_fail(b, b->reason == PROTECT_IN_DECRYPTED ? PROTECT_IN_R_INTERNAL
                                                        : b->reason,
                   b->detail);
        return;
    }
    b->pi->stats.decrypted++;
    build_enter(b, PI_S_DONE);
}

/* ---- DONE --------------------------------------------------------------------------------- */

struct meta_job {
    uv_work_t work;
    protect_in *pi;
    char *id;
    uint8_t *blob;
    size_t len;
    int ret;
};

static void meta_work(uv_work_t *req)
{
    struct meta_job *j = req->data;
    /* A read after a restart decrypts a message whose metadata is stored
     * already: one indexed read instead of a write with fsync. */
    uint8_t *old = NULL;
    size_t old_len = 0;
    if (kme_vault_meta_get(j->pi->vault, j->id, &old, &old_len, NULL) == 0) {
        bool same = old_len == j->len && memcmp(old, j->blob, j->len) == 0;
        kme_vault_bytes_free(&old, old_len);
        if (same) {
            j->ret = 1;
            return;
        }
    }
    j->ret = kme_vault_meta_put(j->pi->vault, j->id, j->blob, j->len, NULL);
}

static void meta_after(uv_work_t *req, int status)
{
    struct meta_job *j = req->data;
    protect_in *pi = j->pi;
    pi->workers--;
    if (status == 0 && j->ret == 0)
        pi->stats.meta_stored++;
    else if (status == 0 && j->ret == 1)
        pi->stats.meta_kept++;
    else
        qlog_warn("incoming: metadata of %s not stored: %s", j->id,
                  kme_vault_strerror(j->ret));
    OPENSSL_cleanse(j->blob, j->len);
    free(j->blob);
    free(j->id);
    free(j);
    if (pi->closing)
        pi_free_final(pi);
}

static void store_meta(struct pi_build *b)
{
    protect_in *pi = b->pi;
    struct meta_job *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->id = strdup(b->id)) == NULL) {
        free(j);
        return;
    }
    j->pi = pi;
    j->blob = b->meta;
    j->len = b->meta_len;
    b->meta = NULL;
    j->work.data = j;
    if (uv_queue_work(pi->loop, &j->work, meta_work, meta_after) < 0) {
        OPENSSL_cleanse(j->blob, j->len);
        free(j->blob);
        free(j->id);
        free(j);
        return;
    }
    pi->workers++;
}

/* Reasons that depend on the reader: never shared, never cached. */
static bool per_reader(enum protect_in_reason r)
{
    return r == PROTECT_IN_R_NOT_ALLOWED || r == PROTECT_IN_R_UNBOUND ||
           r == PROTECT_IN_R_NO_IDENTITY;
}

static protect_in_view *notice_for(struct pi_build *b, enum protect_in_reason r,
                                   const char *login)
{
    struct pi_notice_facts f = {
        .reason = r,
        .detail = per_reader(r) ? NULL : b->detail,
        .outer = b->outer,
        .outer_len = b->outer_len,
        .info = b->info,
        .link = b->link_name,
        .login = login,
    };
    protect_in_view *v = NULL;
    if (pi_notice_view(&f, b->id, &b->pi->hooks, &v) < 0)
        return NULL;
    return v;
}

/* May this waiter take what the build made? Only when the bytes were its
 * own fetch's, or the message turned out to be the one its hint named (a
 * hint is an unauthenticated header: two messages may claim one). */
static bool waiter_gets(const struct pi_build *b, const struct pi_waiter *w)
{
    if (w->supplied)
        return true; /* its fetch delivered the bytes */
    if (!b->any_supplied)
        return true; /* nothing was read at all: the fetch notice is for all */
    return b->hint != NULL && b->id != NULL && strcmp(b->hint, b->id) == 0;
}

static void done(struct pi_build *b)
{
    protect_in *pi = b->pi;
    build_unlink(b);
    pi->workers++; /* pin: a callback may free pi */
    uint64_t ms = pi_now(pi) - b->t_start;
    if (b->view != NULL) {
        pi_cache_put(pi, b->id, b->view, 0);
        if (b->meta != NULL)
            store_meta(b);
        qlog_debug("incoming: %s decrypted (%zu keys from the vault, %zu from "
                   "the KME, %" PRIu64 " bytes, %" PRIu64 " ms)",
                   b->id, b->from_vault, b->from_kme, b->view->size, ms);
    } else if (b->reason != PROTECT_IN_DECRYPTED) {
        pi->stats.notices++;
        qlog_info("incoming: %s shown as a notice: %s%s%.200s",
                  b->id != NULL ? b->id : b->hint != NULL ? b->hint : "(unnamed)",
                  protect_in_reason_name(b->reason), b->detail != NULL ? ": " : "",
                  b->detail != NULL ? b->detail : "");
    }
    protect_in_view *shared = NULL;
    if (b->view == NULL && !per_reader(b->reason) && b->reason != PROTECT_IN_DECRYPTED) {
        shared = notice_for(b, b->reason, NULL);
        const char *key = b->id != NULL ? b->id : b->hint;
        if (shared != NULL && key != NULL && b->reason != PROTECT_IN_R_FETCH &&
            pi->cfg.notice_ttl_ms > 0)
            pi_cache_put(pi, key, shared, pi->cfg.notice_ttl_ms);
    }
    /* Answer every waiter; take them off the build first (a callback may
     * open another request, or cancel). */
    struct pi_waiter *list = b->waiters;
    b->waiters = NULL;
    while (list != NULL) {
        struct pi_waiter *w = list;
        list = w->next;
        w->next = NULL;
        if (!waiter_gets(b, w)) {
            /* another message claimed its hint: read its own */
            w->asked = w->supplied = false;
            if (pi_build_start(pi, NULL, w, NULL) == 0)
                continue;
        }
        protect_in_view *v = NULL;
        if (b->view != NULL || b->reason == PROTECT_IN_R_NOT_ALLOWED) {
            enum protect_in_reason r = pi_access(pi, w->reader, &b->binding);
            if (r == PROTECT_IN_DECRYPTED && b->view != NULL) {
                v = protect_in_view_ref(b->view);
            } else if (r == PROTECT_IN_DECRYPTED) {
                /* joined after the check found nobody allowed: try again */
                w->asked = false;
                if (pi_build_start(pi, NULL, w, NULL) == 0)
                    continue;
                v = notice_for(b, PROTECT_IN_R_INTERNAL, NULL);
            } else {
                v = notice_for(b, r, w->reader->login);
            }
        } else if (shared != NULL) {
            v = protect_in_view_ref(shared);
        } else {
            v = notice_for(b, PROTECT_IN_R_INTERNAL, NULL);
        }
        protect_in_view_cb cb = w->cb;
        void *arg = w->arg;
        pi_waiter_free(w);
        if (v == NULL) /* out of memory even for a notice */
            cb(arg, PROTECT_IN_ENOMEM, NULL);
        else
            cb(arg, 0, v);
    }
    protect_in_view_unref(&shared);
    build_free(b);
    pi->workers--;
    if (pi->closing)
        pi_free_final(pi);
}

/* ---- the one transition function ---------------------------------------------------- */

static void build_enter(struct pi_build *b, enum pi_state next)
{
    protect_in *pi = b->pi;
    qlog_debug("incoming: %s %s -> %s",
               b->id != NULL ? b->id : b->hint != NULL ? b->hint : "(unnamed)",
               state_names[b->state], state_names[next]);
    b->state = next;
    switch (next) {
    case PI_S_FETCH:
        b->kick = true;
        kick_start(pi);
        break;
    case PI_S_INSPECT:
    case PI_S_VAULT:
    case PI_S_STORE:
    case PI_S_DECRYPT:
        queue_work(b);
        break;
    case PI_S_CHECK:
        check(b);
        break;
    case PI_S_STATUS:
        if (kme_client_status(b->kme, b->master_rule, on_status, b) < 0)
            build_fail(b, PROTECT_IN_R_KME_UNAVAILABLE, "status request refused");
        break;
    case PI_S_KME:
        pi->stats.kme_requests++;
        if (b->e004) {
            if (kme_source_dec(b->src, mime_info_master_sae_id(b->info), b->refs,
                               b->n_refs, on_dec_keys, b) < 0)
                build_fail(b, PROTECT_IN_R_KEY_UNKNOWN,
                           "the key source refused the chunk references");
            break;
        }
        if (kme_client_dec_keys(b->kme, mime_info_master_sae_id(b->info),
                                b->missing_ids, b->n_missing, on_dec_keys, b) < 0)
            build_fail(b, PROTECT_IN_R_KEY_UNKNOWN,
                       "the KME client refused the key IDs");
        break;
    case PI_S_DONE:
        done(b);
        break;
    }
}

static void build_fail(struct pi_build *b, enum protect_in_reason reason,
                       const char *detail)
{
    b->reason = reason;
    if (detail != NULL && detail != b->detail)
        set_str(&b->detail, detail);
    protect_in_view_unref(&b->view);
    build_enter(b, PI_S_DONE);
}

/* ---- starting, joining, cancelling --------------------------------------------------- */

int pi_build_start(protect_in *pi, const char *hint, struct pi_waiter *w,
                   protect_in_fetch **supplied_r)
{
    if (pi->closing)
        return PROTECT_IN_ECANCELLED;
    struct pi_build *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return PROTECT_IN_ENOMEM;
    if (hint != NULL && (b->hint = strdup(hint)) == NULL) {
        free(b);
        return PROTECT_IN_ENOMEM;
    }
    b->pi = pi;
    b->raw_fd = -1;
    b->pol = pi->policies != NULL ? policy_store_get(pi->policies) : NULL;
    b->t_start = pi_now(pi);
    b->state = PI_S_FETCH;
    w->next = NULL;
    b->waiters = w;
    b->next = pi->builds;
    pi->builds = b;
    pi->stats.builds++;
    if (supplied_r == NULL) {
        build_enter(b, PI_S_FETCH);
        return 0;
    }
    /* The caller has the bytes: it gets the fetch at once. */
    *supplied_r = fetch_new(b, w);
    if (*supplied_r == NULL) {
        b->waiters = NULL;
        build_unlink(b);
        build_free(b);
        return PROTECT_IN_ENOMEM;
    }
    return 0;
}

struct pi_build *pi_build_find(protect_in *pi, const char *hint)
{
    for (struct pi_build *b = pi->builds; hint != NULL && b != NULL; b = b->next) {
        if (b->hint != NULL && strcmp(b->hint, hint) == 0)
            return b;
    }
    return NULL;
}

void pi_build_join(struct pi_build *b, struct pi_waiter *w)
{
    /* at the end: the first waiter is asked to fetch first */
    struct pi_waiter **pp = &b->waiters;
    while (*pp != NULL)
        pp = &(*pp)->next;
    w->next = NULL;
    *pp = w;
    if (b->state == PI_S_FETCH && b->fetch == NULL && !b->kick) {
        /* every earlier fetch failed and the build was about to give up */
        b->kick = true;
        kick_start(b->pi);
    }
}

size_t pi_build_cancel(protect_in *pi, const void *arg)
{
    size_t n = 0;
    /* collect first: callbacks may open or cancel requests */
    struct pi_waiter *cancelled = NULL;
    for (struct pi_build *b = pi->builds; b != NULL; b = b->next) {
        struct pi_waiter **pp = &b->waiters;
        while (*pp != NULL) {
            struct pi_waiter *w = *pp;
            if (w->arg != arg) {
                pp = &w->next;
                continue;
            }
            *pp = w->next;
            if (b->fetcher == w)
                b->fetcher = NULL;
            w->next = cancelled;
            cancelled = w;
        }
    }
    for (struct pi_ready **pp = &pi->ready; *pp != NULL;) {
        struct pi_ready *r = *pp;
        if (r->w->arg != arg) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        protect_in_view_unref(&r->view);
        r->w->next = cancelled;
        cancelled = r->w;
        free(r);
    }
    while (cancelled != NULL) {
        struct pi_waiter *w = cancelled;
        cancelled = w->next;
        protect_in_view_cb cb = w->cb;
        void *warg = w->arg;
        pi_waiter_free(w);
        n++;
        cb(warg, PROTECT_IN_ECANCELLED, NULL);
    }
    return n;
}

size_t pi_builds_count(const protect_in *pi)
{
    size_t n = 0;
    for (const struct pi_build *b = pi->builds; b != NULL; b = b->next)
        n++;
    return n;
}

void pi_cancel_all(protect_in *pi)
{
    for (;;) {
        struct pi_waiter *w = NULL;
        for (struct pi_build *b = pi->builds; b != NULL && w == NULL; b = b->next)
            w = b->waiters;
        if (w == NULL && pi->ready != NULL)
            w = pi->ready->w;
        if (w == NULL)
            return;
        pi_build_cancel(pi, w->arg);
    }
}

void pi_builds_close(protect_in *pi)
{
    /* Every waiter is cancelled by the caller first. */
    struct pi_build *list = pi->builds;
    pi->builds = NULL;
    while (list != NULL) {
        struct pi_build *b = list;
        list = b->next;
        b->next = NULL;
        switch (b->state) {
        case PI_S_INSPECT:
        case PI_S_VAULT:
        case PI_S_STORE:
        case PI_S_DECRYPT:
            break; /* its worker returns and frees it (after_work_cb) */
        case PI_S_STATUS:
        case PI_S_KME:
            /* the callback runs now, sees closing and returns */
            if (b->e004)
                kme_source_cancel(b->src, b);
            else
                kme_client_cancel(b->kme, b);
            build_free(b);
            break;
        default:
            build_free(b); /* detaches a running fetch */
            break;
        }
    }
}
