/* The FETCH rewriter: see imap_decrypt.h. */
#include "imap_decrypt_internal.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_render.h"
#include "log.h"

/* The probe: which messages are ours, and their names. */
#define PROBE_FETCH "BODY.PEEK[HEADER.FIELDS (" PROTECT_IN_PROBE_FIELDS ")]"
#define PROBE_NAME "BODY[HEADER.FIELDS (" PROTECT_IN_PROBE_FIELDS ")]"
#define PROBE_MAX 65536     /* probe answer kept per message */
#define UIDSET_MAX 16384    /* UID set bytes in one own body FETCH */

struct imap_decrypt_stats g_stats;

void imap_decrypt_get_stats(struct imap_decrypt_stats *st) { *st = g_stats; }

metric *g_m_messages, *g_m_prepared, *g_m_refused;

void imap_decrypt_set_metrics(metrics *reg)
{
    g_m_messages = metrics_counter(reg, "qumail_imap_messages_total",
                                   "FETCH responses answered, by kind (decrypted, notice, plain).",
                                   1, "kind");
    g_m_prepared = metrics_counter(reg, "qumail_imap_prepared_total",
                                   "Commands the proxy prepared with its own commands.", 1,
                                   "command");
    g_m_refused = metrics_counter(reg, "qumail_imap_search_refused_total",
                                  "SEARCH/SORT commands refused by imap.search.max_decrypt.", 0);
}

/* ---- helpers ----------------------------------------------------------------- */

static struct dcmd *resolve(void *p, enum dkind *kind_r)
{
    enum dkind k = *(enum dkind *)p;
    *kind_r = k;
    if (k == K_CLIENT)
        return p;
    return ((struct own *)p)->cmd;
}

static bool summary_item(const struct imap_fetch_item *it)
{
    switch (it->att) {
    case IMAP_FA_RFC822_SIZE:
    case IMAP_FA_ENVELOPE:
    case IMAP_FA_BODY:
    case IMAP_FA_BODYSTRUCTURE:
    case IMAP_FA_RFC822_HEADER:
        return true;
    case IMAP_FA_BODY_SECTION:
        return it->section.n_parts == 0 && (it->section.spec == IMAP_SEC_HEADER ||
                                            it->section.spec == IMAP_SEC_HEADER_FIELDS ||
                                            it->section.spec == IMAP_SEC_HEADER_FIELDS_NOT);
    default:
        return false;
    }
}

/* Responses come in the probe's order: look from the last hit on. */
static struct entry *entry_find(struct dcmd *c, bool by_uid, uint32_t v)
{
    for (size_t k = 0; k < c->n_ents; k++) {
        size_t i = (c->hit + k) % c->n_ents;
        struct entry *e = c->ents[i];
        if ((by_uid ? e->uid : e->seq) == v) {
            c->hit = i + 1;
            return e;
        }
    }
    return NULL;
}

static struct entry *entry_by_seq(struct dcmd *c, uint32_t seq) { return entry_find(c, false, seq); }
static struct entry *entry_by_uid(struct dcmd *c, uint32_t uid) { return entry_find(c, true, uid); }

static struct entry *entry_add(struct dcmd *c, uint32_t seq)
{
    if (c->n_ents == c->cap_ents) {
        size_t cap = c->cap_ents ? c->cap_ents * 2 : 16;
        struct entry **n = realloc(c->ents, cap * sizeof(struct entry *));
        if (!n)
            return NULL;
        c->ents = n;
        c->cap_ents = cap;
    }
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->cmd = c;
    e->seq = seq;
    c->ents[c->n_ents++] = e;
    return e;
}

static void want_free(struct want *w)
{
    free(w->name);
    free(w->opt_name);
    for (size_t i = 0; w->fields && i < w->sec.n_fields; i++)
        free(w->fields[i]);
    free(w->fields);
}

/* The render form of a client's section. */
static int want_init(struct want *w, const struct imap_fetch_item *it)
{
    memset(w, 0, sizeof(*w));
    w->att = it->att;
    if (!(w->name = strdup(it->response_name)))
        return -1;
    const struct imap_fetch_section *fs = &it->section;
    switch (it->att) {
    case IMAP_FA_RFC822:
        w->sec.kind = IMAP_SECTION_BODY;
        break;
    case IMAP_FA_RFC822_HEADER:
        w->sec.kind = IMAP_SECTION_HEADER;
        break;
    case IMAP_FA_RFC822_TEXT:
        w->sec.kind = IMAP_SECTION_TEXT;
        break;
    case IMAP_FA_BODY_SECTION:
        for (unsigned i = 0; i < fs->n_parts && i < IMAP_MAX_PARTS; i++)
            w->path[i] = fs->parts[i];
        w->sec.path = w->path;
        w->sec.path_len = fs->n_parts;
        switch (fs->spec) {
        case IMAP_SEC_ALL: w->sec.kind = IMAP_SECTION_BODY; break;
        case IMAP_SEC_HEADER: w->sec.kind = IMAP_SECTION_HEADER; break;
        case IMAP_SEC_HEADER_FIELDS: w->sec.kind = IMAP_SECTION_HEADER_FIELDS; break;
        case IMAP_SEC_HEADER_FIELDS_NOT: w->sec.kind = IMAP_SECTION_HEADER_FIELDS_NOT; break;
        case IMAP_SEC_TEXT: w->sec.kind = IMAP_SECTION_TEXT; break;
        case IMAP_SEC_MIME: w->sec.kind = IMAP_SECTION_MIME; break;
        }
        if (fs->n_fields) {
            if (!(w->fields = calloc(fs->n_fields, sizeof(char *))))
                return -1;
            w->sec.n_fields = fs->n_fields;
            for (size_t i = 0; i < fs->n_fields; i++) {
                const struct imap_arg *a = &fs->fields[i];
                if (!(w->fields[i] = strndup(a->str ? a->str : "", a->len)))
                    return -1;
            }
            w->sec.fields = (const char *const *)w->fields;
        }
        if (it->has_partial) {
            w->sec.has_partial = 1;
            w->sec.partial_offset = it->partial_offset;
            w->sec.partial_size = it->partial_length;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The client's item the server answered as `name`: the n-th of the same
 * name in this response is the n-th asked (BODY[]<0.10> and BODY[]<0.20>
 * are both answered as BODY[]<0>, in the order asked). */
static const struct want *want_find(struct dcmd *c, const char *name)
{
    const struct want *first = NULL;
    for (size_t i = 0; i < c->n_wants; i++) {
        struct want *w = &c->wants[i];
        const char *wn = c->optimized && w->opt_name ? w->opt_name : w->name;
        if (strcasecmp(wn, name) != 0)
            continue;
        if (!first)
            first = w;
        if (w->answered != c->responses) {
            w->answered = c->responses;
            return w;
        }
    }
    return first;
}

/* ---- the context's life -------------------------------------------------------- */

static void entry_free(imap_decrypt *d, struct entry *e)
{
    if (e->waiting)
        protect_in_cancel(d->pi, e); /* callback gets ECANCELLED at once */
    protect_in_view_unref(&e->view);
    free(e->hint);
    for (size_t i = 0; i < e->n_flags; i++)
        free(e->flags[i]);
    free(e->flags);
    free(e->internaldate);
    free(e);
}

static void dcmd_free(struct dcmd *c)
{
    imap_decrypt *d = c->d;
    c->dying = true;
    if (c->fetch) {
        protect_in_fetch_done(c->fetch, PROTECT_IN_ECANCELLED);
        c->fetch = NULL;
    }
    for (size_t i = 0; i < c->n_ents; i++)
        entry_free(d, c->ents[i]);
    free(c->ents);
    for (size_t i = 0; i < c->n_wants; i++)
        want_free(&c->wants[i]);
    free(c->wants);
    free(c->set);
    free(c->pbuf);
    free(c->opt_rewrite);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->cmds = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Freed when the client's command and every own command have ended. */
static void dcmd_maybe_free(struct dcmd *c)
{
    if (c->client_ended && c->own_inflight == 0 && c->busy == 0)
        dcmd_free(c);
}

imap_decrypt *imap_decrypt_new(protect_in *pi, uint32_t max_decrypt)
{
    imap_decrypt *d = calloc(1, sizeof(*d));
    if (d) {
        d->pi = pi;
        d->max_decrypt = max_decrypt;
    }
    return d;
}

void imap_decrypt_free(imap_decrypt **dp)
{
    imap_decrypt *d = *dp;
    if (!d)
        return;
    while (d->cmds)
        dcmd_free(d->cmds);
    protect_in_reader_free(&d->reader);
    free(d);
    *dp = NULL;
}

void imap_decrypt_login(imap_decrypt *d, const char *user)
{
    protect_in_reader_free(&d->reader);
    d->reader = protect_in_reader_new(d->pi, user ? user : "");
    if (!d->reader)
        qlog_error("imap: out of memory for the reader of %s: encrypted messages are "
                   "shown as stored", user && user[0] ? user : "-");
}

/* ---- command: claim and prepare --------------------------------------------------- */

/* The same FETCH with every body section asked as one octet (<o.1>): when
 * every message of the set turns out to be ours, the server need not send
 * ciphertext the proxy would drop - it still sets \Seen and sends FLAGS as
 * for the client's items. NULL when not applicable (macros, `$`, nothing to
 * save, out of memory). A `*` in the set is fine as long as the server
 * reported no new or expunged message while the FETCH was prepared (it
 * makes new messages visible only at command ends, with EXISTS): checked
 * at the release. */
static char *optimised_rewrite(struct dcmd *c, const struct imap_fetch *f)
{
    /* a lone item may span several arguments (BODY[HEADER.FIELDS (X)]):
     * only the parenthesised list has one raw span */
    if (f->set.saved || !f->items_arg || !f->list_form)
        return NULL;
    size_t saves = 0;
    for (size_t i = 0; i < f->n_items; i++) {
        if (f->items[i].from_macro)
            return NULL;
        enum imap_fetch_att a = f->items[i].att;
        saves += a == IMAP_FA_BODY_SECTION || a == IMAP_FA_RFC822 || a == IMAP_FA_RFC822_TEXT ||
                 a == IMAP_FA_RFC822_HEADER;
    }
    if (saves == 0)
        return NULL;
    const struct imap_arg *ia = f->items_arg;
    size_t items_off = ia->raw_off, items_end = ia->raw_off + ia->raw_len;
    size_t set_off = f->set_arg->raw_off;
    if (items_end > f->buf_len || set_off > items_off)
        return NULL;
    size_t cap = f->buf_len * 2 + f->n_items * 32 + 64, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    len += (size_t)snprintf(out, cap, "%.*s(", (int)(items_off - set_off), f->buf + set_off);
    size_t w = 0;
    for (size_t i = 0; i < f->n_items; i++) {
        const struct imap_fetch_item *it = &f->items[i];
        const char *raw = f->buf + it->raw_off;
        int rl = (int)it->raw_len;
        char item[64 + 4096];
        const char *opt = NULL;
        switch (it->att) {
        case IMAP_FA_RFC822:
            opt = "BODY[]<0>";
            snprintf(item, sizeof(item), "BODY[]<0.1>");
            break;
        case IMAP_FA_RFC822_TEXT:
            opt = "BODY[TEXT]<0>";
            snprintf(item, sizeof(item), "BODY[TEXT]<0.1>");
            break;
        case IMAP_FA_RFC822_HEADER:
            opt = "BODY[HEADER]<0>";
            snprintf(item, sizeof(item), "BODY.PEEK[HEADER]<0.1>");
            break;
        case IMAP_FA_BODY_SECTION:
            if (it->has_partial) {
                const char *lt = memrchr(raw, '<', (size_t)rl);
                if (!lt)
                    goto fail;
                snprintf(item, sizeof(item), "%.*s<%" PRIu64 ".1>", (int)(lt - raw), raw,
                         it->partial_offset);
            } else {
                snprintf(item, sizeof(item), "%.*s<0.1>", rl, raw);
            }
            break;
        default:
            snprintf(item, sizeof(item), "%.*s", rl, raw);
            break;
        }
        if (it->att == IMAP_FA_BODY_SECTION && !it->has_partial) {
            size_t nl = strlen(it->response_name) + 4;
            char *n = malloc(nl);
            if (!n)
                goto fail;
            snprintf(n, nl, "%s<0>", it->response_name);
            opt = NULL;
            if (imap_fetch_att_is_content(it->att))
                c->wants[w].opt_name = n;
            else
                free(n);
        }
        if (opt && imap_fetch_att_is_content(it->att) && !(c->wants[w].opt_name = strdup(opt)))
            goto fail;
        if (imap_fetch_att_is_content(it->att))
            w++;
        if (len + strlen(item) + 2 >= cap)
            goto fail;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? " " : "", item);
    }
    len += (size_t)snprintf(out + len, cap - len, ")%.*s", (int)(f->buf_len - items_end),
                            f->buf + items_end);
    return len < cap ? out : (free(out), NULL);
fail:
    free(out);
    return NULL;
}

void *imap_decrypt_command(imap_decrypt *d, imap_session *s, const struct imap_fetch *f,
                           char **rewrite_r, bool *prepare_r)
{
    if (!d->reader || !f->buf || f->has_literals || !f->set_arg)
        return NULL;
    size_t n_content = 0;
    bool full = false;
    for (size_t i = 0; i < f->n_items; i++) {
        if (!imap_fetch_att_is_content(f->items[i].att))
            continue;
        n_content++;
        if (!summary_item(&f->items[i]))
            full = true;
    }
    if (n_content == 0)
        return NULL;
    struct dcmd *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = K_CLIENT;
    c->d = d;
    c->s = s;
    c->uid_fetch = f->uid;
    c->need = full ? PROTECT_IN_FULL : PROTECT_IN_SUMMARY;
    c->probe.kind = K_PROBE;
    c->probe.cmd = c;
    c->body.kind = K_BODY;
    c->body.cmd = c;
    c->next = d->cmds;
    if (d->cmds)
        d->cmds->prev = c;
    d->cmds = c;
    const struct imap_arg *set = f->set_arg;
    size_t off = set->raw_off;
    bool ok = off + set->raw_len <= f->buf_len &&
              (c->set = strndup(f->buf + off, set->raw_len)) != NULL &&
              (*rewrite_r = strndup(f->buf + off, f->buf_len - off)) != NULL &&
              (c->wants = calloc(n_content, sizeof(*c->wants))) != NULL;
    for (size_t i = 0; ok && i < f->n_items; i++) {
        if (!imap_fetch_att_is_content(f->items[i].att))
            continue;
        ok = want_init(&c->wants[c->n_wants++], &f->items[i]) == 0;
    }
    if (!ok) {
        free(*rewrite_r);
        *rewrite_r = NULL;
        dcmd_free(c);
        return NULL;
    }
    c->opt_rewrite = optimised_rewrite(c, f);
    c->changes = imap_session_mailbox_changes(s);
    *prepare_r = true;
    return c;
}

static void release(struct dcmd *c)
{
    if (c->released || c->dying)
        return;
    c->released = true;
    bool all_ours = c->opt_rewrite && c->n_ents > 0 &&
                    imap_session_mailbox_changes(c->s) == c->changes;
    for (size_t i = 0; all_ours && i < c->n_ents; i++)
        all_ours = c->ents[i]->encrypted && c->ents[i]->view;
    if (all_ours && !c->done) {
        imap_session_fetch_set_rewrite(c->s, c->opt_rewrite);
        c->opt_rewrite = NULL;
        c->optimized = true;
    }
    if (c->done)
        c->done(c, c->done_arg);
    else
        imap_session_fetch_release(c->s);
}

static void probe_send(struct dcmd *c)
{
    size_t n = strlen(c->set) + sizeof(PROBE_FETCH) + 32;
    char *line = malloc(n);
    if (!line) {
        release(c);
        return;
    }
    n += c->extra ? strlen(c->extra) : 0;
    char *l2 = realloc(line, n);
    if (!l2) {
        free(line);
        release(c);
        return;
    }
    line = l2;
    snprintf(line, n, "%sFETCH %s (UID %s%s" PROBE_FETCH ")", c->uid_fetch ? "UID " : "", c->set,
             c->extra ? c->extra : "", c->extra ? " " : "");
    if (imap_session_own_fetch(c->s, line, &c->probe) == 0)
        c->own_inflight++;
    else
        release(c);
    free(line);
}

void imap_decrypt_prepare(imap_decrypt *d, imap_session *s, void *cmd)
{
    (void)d;
    (void)s;
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    g_stats.prepared++;
    metric_add(g_m_prepared, 1, "fetch");
    probe_send(c);
}

struct dcmd *dcmd_new_internal(imap_decrypt *d, imap_session *s, const char *uid_set,
                               enum protect_in_need need, const char *extra,
                               void (*done)(struct dcmd *c, void *arg), void *arg)
{
    struct dcmd *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = K_CLIENT;
    c->d = d;
    c->s = s;
    c->uid_fetch = true;
    c->need = need;
    c->probe.kind = K_PROBE;
    c->probe.cmd = c;
    c->body.kind = K_BODY;
    c->body.cmd = c;
    c->extra = extra;
    c->done = done;
    c->done_arg = arg;
    c->next = d->cmds;
    if (d->cmds)
        d->cmds->prev = c;
    d->cmds = c;
    if (!(c->set = strdup(uid_set))) {
        dcmd_free(c);
        return NULL;
    }
    return c;
}

void dcmd_start(struct dcmd *c) { probe_send(c); }

void dcmd_finish(struct dcmd *c)
{
    c->client_ended = true;
    c->dying = true;
    dcmd_maybe_free(c);
}

protect_in *imap_decrypt_pi(const imap_decrypt *d) { return d->pi; }
protect_in_reader *imap_decrypt_reader(const imap_decrypt *d) { return d->reader; }

/* ---- views ---------------------------------------------------------------------------- */

static void maybe_release(struct dcmd *c)
{
    if (c->body_ended && c->waiting == 0)
        release(c);
}

static void view_cb(void *arg, int error, protect_in_view *view)
{
    struct entry *e = arg;
    struct dcmd *c = e->cmd;
    e->waiting = false;
    if (error == PROTECT_IN_ECANCELLED || c->dying) {
        protect_in_view_unref(&view);
        return;
    }
    protect_in_view_unref(&e->view);
    e->view = view;
    c->waiting--;
    maybe_release(c);
}

/* A message whose bytes never came: protect_in makes a fetch-failed
 * notice of it. */
static void fetch_fails(void *arg, protect_in_fetch *f)
{
    (void)arg;
    protect_in_fetch_done(f, PROTECT_IN_EIO);
}

/* Reads the next batch of encrypted messages without a view (one own
 * `UID FETCH <uids> (UID BODY.PEEK[])` per batch); when none is left,
 * those still without a view get notices and the FETCH is released once
 * every view is there. */
static void next_body(struct dcmd *c)
{
    imap_decrypt *d = c->d;
    char *line = malloc(UIDSET_MAX + 64);
    size_t len = 0;
    if (line) {
        len = (size_t)snprintf(line, 64, "UID FETCH ");
        size_t start = len;
        for (size_t i = 0; i < c->n_ents && len - start + 12 <= UIDSET_MAX; i++) {
            struct entry *e = c->ents[i];
            if (!e->encrypted || e->view || e->waiting || e->asked || e->uid == 0)
                continue;
            e->asked = true;
            len += (size_t)snprintf(line + len, 16, "%s%" PRIu32, len > start ? "," : "", e->uid);
        }
        if (len > start) {
            snprintf(line + len, 32, " (UID BODY.PEEK[])");
            if (imap_session_own_fetch(c->s, line, &c->body) == 0) {
                c->own_inflight++;
                g_stats.bodies_fetched++;
                free(line);
                return;
            }
        }
        free(line);
    }
    /* nothing (more) to read, or it cannot be asked for */
    for (size_t i = 0; i < c->n_ents; i++) {
        struct entry *e = c->ents[i];
        if (e->encrypted && !e->view && !e->waiting &&
            protect_in_open(d->pi, d->reader, e->hint, fetch_fails, e, view_cb, e) == 0) {
            e->waiting = true;
            c->waiting++;
        }
    }
    c->body_ended = true;
    maybe_release(c);
}

/* After the probe: views from memory or the vault's metadata when they
 * answer everything the command asks; the rest are read. */
static void after_probe(struct dcmd *c)
{
    imap_decrypt *d = c->d;
    for (size_t i = 0; i < c->n_ents; i++) {
        struct entry *e = c->ents[i];
        if (!e->encrypted || e->view || !e->hint)
            continue;
        protect_in_view *v = NULL;
        if (protect_in_lookup(d->pi, d->reader, e->hint, c->need, &v) != 1)
            continue;
        if (c->need == PROTECT_IN_FULL || protect_in_view_struct(v))
            e->view = v;
        else
            protect_in_view_unref(&v); /* header too large to keep: read it */
    }
    if (c->max_read) {
        size_t n = 0;
        for (size_t i = 0; i < c->n_ents; i++)
            n += c->ents[i]->encrypted && !c->ents[i]->view;
        if (n > c->max_read) {
            /* refused before anything is read or decrypted */
            c->over = n;
            c->body_ended = true;
            release(c);
            return;
        }
    }
    next_body(c);
}

/* ---- responses -------------------------------------------------------------------------------- */

void imap_decrypt_response_begin(imap_decrypt *d, imap_session *s, void *cmd, uint32_t seq)
{
    (void)d;
    (void)s;
    if (*(enum dkind *)cmd == K_SEARCH_OWN) {
        imap_decrypt_search_begin(cmd, seq);
        return;
    }
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    c->cur_seq = seq;
    c->taking = T_NONE;
    c->uidlen = 0;
    c->plen = 0;
    switch (k) {
    case K_PROBE:
        /* the probe answers in ascending order: a number above the last
         * one is new (no search: a sweep of 10,000 would be quadratic) */
        if (c->n_ents == 0 || seq > c->ents[c->n_ents - 1]->seq)
            c->cur = entry_add(c, seq);
        else if (!(c->cur = entry_by_seq(c, seq)))
            c->cur = entry_add(c, seq);
        break;
    case K_BODY:
        c->cur = entry_by_seq(c, seq);
        break;
    case K_CLIENT:
        c->cur = entry_by_seq(c, seq);
        c->responses++;
        break;
    default:
        break;
    }
}

static void emit_literal(imap_session *s, const char *name, const uint8_t *p, uint64_t len)
{
    char head[48];
    int n = snprintf(head, sizeof(head), "{%" PRIu64 "}\r\n", len);
    imap_session_fetch_item(s, name, head, (size_t)n);
    if (len)
        imap_session_fetch_write(s, p, (size_t)len);
}

/* One content item of an encrypted message, from its view. */
static void answer(struct dcmd *c, const struct want *w, const char *name)
{
    protect_in_view *v = c->cur->view;
    imap_session *s = c->s;
    size_t len;
    const char *str;
    switch (w->att) {
    case IMAP_FA_RFC822_SIZE: {
        char num[24];
        int n = snprintf(num, sizeof(num), "%" PRIu64, protect_in_view_size(v));
        imap_session_fetch_item(s, name, num, (size_t)n);
        return;
    }
    case IMAP_FA_ENVELOPE:
        str = protect_in_view_envelope(v, &len);
        imap_session_fetch_item(s, name, str, len);
        return;
    case IMAP_FA_BODY:
        str = protect_in_view_body(v, &len);
        imap_session_fetch_item(s, name, str, len);
        return;
    case IMAP_FA_BODYSTRUCTURE:
        str = protect_in_view_bodystructure(v, &len);
        imap_session_fetch_item(s, name, str, len);
        return;
    case IMAP_FA_RFC822:
    case IMAP_FA_RFC822_HEADER:
    case IMAP_FA_RFC822_TEXT:
    case IMAP_FA_BODY_SECTION: {
        const struct mime_struct *ms = protect_in_view_struct(v);
        struct imap_section_data data = {0};
        if (!ms || imap_render_section(ms, &w->sec, &data) != 0) {
            qlog_warn("imap %s: %s of a decrypted message could not be rendered",
                      imap_session_id(s), name);
            emit_literal(s, name, NULL, 0);
            return;
        }
        emit_literal(s, name, data.ptr, data.len);
        imap_section_data_free(&data);
        return;
    }
    default:
        return;
    }
}

enum imap_fetch_verdict imap_decrypt_item(imap_decrypt *d, imap_session *s, void *cmd,
                                          const char *name, unsigned index)
{
    (void)d;
    (void)s;
    (void)index;
    if (*(enum dkind *)cmd == K_SEARCH_OWN)
        return imap_decrypt_search_item(cmd, name);
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    c->taking = T_NONE;
    switch (k) {
    case K_PROBE:
    case K_BODY:
        if (strcasecmp(name, "UID") == 0) {
            c->taking = T_UID;
            return IMAP_FETCH_TAKE;
        }
        if (k == K_PROBE && strcasecmp(name, PROBE_NAME) == 0) {
            c->taking = T_PROBE;
            return IMAP_FETCH_TAKE;
        }
        if (k == K_PROBE && c->extra && c->cur) {
            if (strcasecmp(name, "FLAGS") == 0)
                c->taking = T_FLAGS;
            else if (strcasecmp(name, "INTERNALDATE") == 0)
                c->taking = T_IDATE;
            else if (strcasecmp(name, "MODSEQ") == 0)
                c->taking = T_MODSEQ;
            if (c->taking != T_NONE)
                return IMAP_FETCH_TAKE;
        }
        if (k == K_BODY && strcasecmp(name, "BODY[]") == 0) {
            c->taking = T_BODY;
            return IMAP_FETCH_TAKE;
        }
        /* flag updates the server sends along go to the client */
        return strcasecmp(name, "FLAGS") == 0 || strcasecmp(name, "MODSEQ") == 0
                   ? IMAP_FETCH_PASS
                   : IMAP_FETCH_DROP;
    default:
        break;
    }
    if (c->uid_fetch && strcasecmp(name, "UID") == 0) {
        c->taking = T_UID; /* checked against the probe, then relayed */
        return IMAP_FETCH_TAKE;
    }
    struct entry *e = c->cur;
    if (!e || !e->encrypted)
        return IMAP_FETCH_PASS;
    const struct want *w = want_find(c, name);
    if (!w)
        return IMAP_FETCH_PASS; /* FLAGS, INTERNALDATE, MODSEQ, ... */
    if (e->view)
        answer(c, w, w->name);
    else
        qlog_warn("imap %s: no view for UID %" PRIu32 ": %s left out", imap_session_id(s),
                  e->uid, name);
    return IMAP_FETCH_DROP; /* the ciphertext's value */
}

static void take_uid(struct dcmd *c, const struct imap_token *tok)
{
    if (tok->type == IMAP_TOK_ATOM && tok->len < sizeof(c->uidbuf)) {
        memcpy(c->uidbuf, tok->str, tok->len);
        c->uidlen = tok->len;
    }
}

static uint32_t parsed_uid(const struct dcmd *c)
{
    uint64_t v = 0;
    for (size_t i = 0; i < c->uidlen; i++) {
        if (c->uidbuf[i] < '0' || c->uidbuf[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(c->uidbuf[i] - '0');
        if (v > UINT32_MAX)
            return 0;
    }
    return (uint32_t)v;
}

static void take_probe(struct dcmd *c, const struct imap_token *tok)
{
    if (tok->type != IMAP_TOK_LITERAL_DATA && tok->type != IMAP_TOK_QUOTED)
        return;
    if (!c->pbuf && !(c->pbuf = malloc(PROBE_MAX)))
        return;
    size_t n = tok->len;
    if (c->plen + n > PROBE_MAX)
        n = PROBE_MAX - c->plen;
    memcpy(c->pbuf + c->plen, tok->str, n);
    c->plen += n;
}

static void take_body(struct dcmd *c, const struct imap_token *tok, bool last)
{
    imap_decrypt *d = c->d;
    struct entry *e = c->cur;
    if (tok->type == IMAP_TOK_LITERAL) {
        if (!e || !e->encrypted || e->view || e->waiting)
            return;
        protect_in_fetch *f = NULL;
        if (protect_in_open_supplied(d->pi, d->reader, e->hint, &f, view_cb, e) < 0)
            return; /* out of memory: a notice after the command */
        e->waiting = true;
        c->waiting++;
        c->fetch = f; /* NULL: answered without these bytes */
    } else if (tok->type == IMAP_TOK_LITERAL_DATA && c->fetch && tok->len) {
        int rc = protect_in_fetch_write(c->fetch, tok->str, tok->len);
        if (rc < 0) {
            protect_in_fetch_done(c->fetch, rc);
            c->fetch = NULL;
        }
    }
    /* NIL or a quoted string: nothing to read; the message gets a notice */
    if (last && c->fetch) {
        protect_in_fetch_done(c->fetch, 0);
        c->fetch = NULL;
    }
}

void imap_decrypt_value(imap_decrypt *d, imap_session *s, void *cmd,
                        const struct imap_token *tok, bool last)
{
    (void)d;
    if (*(enum dkind *)cmd == K_SEARCH_OWN) {
        imap_decrypt_search_value(cmd, tok, last);
        return;
    }
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    switch (c->taking) {
    case T_UID:
        take_uid(c, tok);
        if (!last)
            return;
        if (k == K_CLIENT) {
            uint32_t uid = parsed_uid(c);
            /* sequence numbers moved (expunges reported in between) */
            if (uid && (!c->cur || c->cur->uid != uid))
                c->cur = entry_by_uid(c, uid);
            imap_session_fetch_item(s, "UID", c->uidbuf, c->uidlen);
        } else if (k == K_BODY) {
            struct entry *e = entry_by_uid(c, parsed_uid(c));
            if (e)
                c->cur = e;
        } else if (c->cur) {
            c->cur->uid = parsed_uid(c);
        }
        return;
    case T_PROBE:
        take_probe(c, tok);
        return;
    case T_BODY:
        take_body(c, tok, last);
        return;
    case T_FLAGS:
        if (c->cur && tok->type == IMAP_TOK_ATOM) {
            char **n = realloc(c->cur->flags, (c->cur->n_flags + 1) * sizeof(*n));
            if (n) {
                c->cur->flags = n;
                if ((n[c->cur->n_flags] = strndup(tok->str, tok->len)))
                    c->cur->n_flags++;
            }
        }
        return;
    case T_IDATE:
        if (c->cur && tok->type == IMAP_TOK_QUOTED) {
            free(c->cur->internaldate);
            c->cur->internaldate = strndup(tok->str, tok->len);
        }
        return;
    case T_MODSEQ:
        if (c->cur && tok->type == IMAP_TOK_ATOM) {
            uint64_t v = 0;
            for (size_t i = 0; i < tok->len && tok->str[i] >= '0' && tok->str[i] <= '9'; i++)
                v = v * 10 + (uint64_t)(tok->str[i] - '0');
            c->cur->modseq = v;
        }
        return;
    case T_NONE:
        return;
    }
}

enum imap_fetch_flow imap_decrypt_response_end(imap_decrypt *d, imap_session *s, void *cmd)
{
    (void)d;
    (void)s;
    if (*(enum dkind *)cmd == K_SEARCH_OWN) {
        imap_decrypt_search_response_end(cmd);
        return IMAP_FETCH_CONTINUE;
    }
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    if (k == K_PROBE && c->cur) {
        char *hint = NULL;
        int rc = c->plen ? protect_in_classify(c->pbuf, c->plen, &hint) : 0;
        c->cur->encrypted = rc == 1;
        free(c->cur->hint);
        c->cur->hint = hint;
    } else if (k == K_BODY && c->fetch) {
        /* the value ended without its last token (cannot happen) */
        protect_in_fetch_done(c->fetch, PROTECT_IN_EIO);
        c->fetch = NULL;
    } else if (k == K_CLIENT && c->cur && !c->done) {
        if (c->cur->encrypted) {
            g_stats.encrypted++;
            bool notice =
                c->cur->view && protect_in_view_reason(c->cur->view) != PROTECT_IN_DECRYPTED;
            g_stats.notices += notice;
            metric_add(g_m_messages, 1, notice ? "notice" : "decrypted");
        } else {
            g_stats.plain++;
            metric_add(g_m_messages, 1, "plain");
        }
    }
    c->cur = NULL;
    c->taking = T_NONE;
    return IMAP_FETCH_CONTINUE;
}

void imap_decrypt_command_end(imap_decrypt *d, imap_session *s, void *cmd,
                              enum imap_status status)
{
    (void)d;
    (void)s;
    if (*(enum dkind *)cmd == K_SEARCH_OWN) {
        imap_decrypt_search_own_end(cmd, status);
        return;
    }
    if (*(enum dkind *)cmd == K_SEARCH) {
        imap_decrypt_search_end(cmd, status);
        return;
    }
    enum dkind k;
    struct dcmd *c = resolve(cmd, &k);
    c->busy++; /* done() may finish it: freed below */
    switch (k) {
    case K_PROBE:
        c->own_inflight--;
        if (status == IMAP_STATUS_BYE || c->client_ended)
            break;
        if (status != IMAP_STATUS_OK)
            release(c); /* the client's FETCH gets the server's own answer */
        else
            after_probe(c);
        break;
    case K_BODY:
        c->own_inflight--;
        if (c->fetch) {
            protect_in_fetch_done(c->fetch, PROTECT_IN_EIO);
            c->fetch = NULL;
        }
        if (status == IMAP_STATUS_BYE || c->client_ended)
            break;
        next_body(c);
        break;
    case K_CLIENT:
        c->client_ended = true;
        c->dying = true;
        break;
    default:
        break;
    }
    c->busy--;
    dcmd_maybe_free(c);
}

void imap_decrypt_own_data(imap_decrypt *d, imap_session *s, void *own,
                           const struct imap_resp_event *ev)
{
    (void)d;
    (void)s;
    if (*(enum dkind *)own == K_SEARCH_OWN)
        imap_decrypt_search_own_data(own, ev);
}

void *imap_decrypt_search_command(imap_decrypt *d, imap_session *s, enum imap_verb verb,
                                  bool uid, const struct imap_args *args, size_t first,
                                  bool *prepare_r)
{
    if (!d->reader)
        return NULL;
    return imap_decrypt_search_new(d, s, verb, uid, args, first, prepare_r);
}

void imap_decrypt_search_prepare(imap_decrypt *d, imap_session *s, void *cmd)
{
    (void)d;
    (void)s;
    imap_decrypt_search_start(cmd);
}
