/* SEARCH and SORT over a mailbox with encrypted messages (issue 13): the
 * merge plan of proxy/imap/search/README.md run with the session's own
 * commands while the client's command is held (imap_session.h):
 *
 *   STATUS  UID SEARCH RETURN (MAX COUNT) ALL      ("*" in the criteria)
 *   PLAIN   [UID] SEARCH <plain query>             the server's own matches
 *   ENC     UID SEARCH <encrypted candidates>      over-approximation
 *   CANDS   UID FETCH cands (UID FLAGS INTERNALDATE [MODSEQ] probe), views
 *           (summary or full, as the criteria need), imap_search_eval
 *   KEYS    SORT: [UID] FETCH plain (UID RFC822.SIZE INTERNALDATE
 *           BODY.PEEK[HEADER.FIELDS (...)]) for the plain matches' keys
 *   then the answer: * SEARCH / * SORT / * ESEARCH, and the tagged OK. */
#include "imap_decrypt_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "imap_search.h"
#include "log.h"

#define SORT_FIELDS "DATE SUBJECT FROM TO CC"
#define OUR_MARKER "HEADER X-QKD-Key-ID \"\""
#define TAG_OUT 80
#define SORT_ITEM "BODY[HEADER.FIELDS (" SORT_FIELDS ")]"

enum sstep { S_STATUS, S_PLAIN, S_ENC, S_CANDS, S_KEYS, S_DONE };

enum ret_opt { R_MIN = 1, R_MAX = 2, R_ALL = 4, R_COUNT = 8 };

struct ids {
    uint32_t *v;
    size_t n, cap;
};

/* A plain match whose sort keys the proxy needs (SORT). */
struct plain_msg {
    uint32_t seq, uid;
    uint64_t size;
    char *idate;
    char *hdr;
    size_t hdr_len;
};

struct sown {
    enum dkind kind; /* K_SEARCH_OWN */
    struct scmd *sc;
};

struct scmd {
    enum dkind kind; /* K_SEARCH */
    imap_decrypt *d;
    imap_session *s;
    bool sort;
    bool uid;
    bool esearch;     /* RETURN given */
    unsigned ret;     /* enum ret_opt */
    struct imap_search_in *in; /* owned: the criteria as given */
    size_t n_in;
    struct imap_search *search;
    struct imap_search_plan plan;
    struct imap_sort_crit crit[IMAP_SORT_MAX_CRIT];
    size_t n_crit;
    struct sown own;
    unsigned own_inflight;
    enum sstep step;
    bool ended;       /* the session ended the held command */
    bool failed;
    uint32_t max_uid, max_seq;
    struct ids plain, cands;
    /* own data being read */
    char key[16];
    /* CANDS */
    struct dcmd *dc;
    /* encrypted matches: seq, uid, keys index */
    struct match {
        uint32_t seq, uid;
        struct imap_sort_keys keys;
        bool have_keys;
    } *m;
    size_t n_m, cap_m;
    /* KEYS */
    struct plain_msg *pm;
    size_t n_pm, cap_pm;
    struct plain_msg *cur;
    enum { P_NONE, P_UID, P_SIZE, P_IDATE, P_HDR } taking;
};

static void step(struct scmd *sc);

/* ---- small helpers ------------------------------------------------------------ */

static int ids_push(struct ids *a, uint32_t v)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint32_t *n = realloc(a->v, cap * sizeof(*n));
        if (!n)
            return -1;
        a->v = n;
        a->cap = cap;
    }
    a->v[a->n++] = v;
    return 0;
}

static bool atom_num(const struct imap_token *t, uint64_t *v_r)
{
    if (t->type != IMAP_TOK_ATOM || t->len == 0 || t->len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < t->len; i++) {
        if (t->str[i] < '0' || t->str[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(t->str[i] - '0');
    }
    *v_r = v;
    return true;
}

static void in_free(struct imap_search_in *v, size_t n);

/* imap_arg -> imap_search_in (same shape), one allocation per list. */
static int convert(const struct imap_arg *a, size_t n, struct imap_search_in **out_r)
{
    struct imap_search_in *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++) {
        switch (a[i].type) {
        case IMAP_ARG_LIST: {
            struct imap_search_in *kids = NULL;
            if (convert(a[i].list, a[i].count, &kids) < 0) {
                in_free(v, i); /* the children converted so far */
                return -1;
            }
            v[i].type = IMAP_SEARCH_IN_LIST;
            v[i].list = kids;
            v[i].count = a[i].count;
            break;
        }
        case IMAP_ARG_ATOM:
        case IMAP_ARG_NIL:
            v[i].type = IMAP_SEARCH_IN_ATOM;
            v[i].str = a[i].str;
            v[i].len = a[i].len;
            break;
        default:
            v[i].type = IMAP_SEARCH_IN_STRING;
            v[i].str = a[i].str;
            v[i].len = a[i].len;
            break;
        }
    }
    *out_r = v;
    return 0;
}

static void in_free(struct imap_search_in *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        if (v[i].type == IMAP_SEARCH_IN_LIST)
            in_free((struct imap_search_in *)v[i].list, v[i].count);
    free(v);
}

static bool has_star(const struct imap_search_node *n)
{
    if (n->op == IMAP_SEARCH_SEQSET || n->op == IMAP_SEARCH_UIDSET)
        for (size_t i = 0; i < n->n_ranges; i++)
            if (n->ranges[i].lo == IMAP_SEARCH_STAR || n->ranges[i].hi == IMAP_SEARCH_STAR)
                return true;
    for (size_t i = 0; i < n->n_children; i++)
        if (has_star(n->children[i]))
            return true;
    return false;
}

/* Synchronizing literals in a query the proxy writes become LITERAL+
 * ones: its own command cannot wait for "+" (Dovecot offers LITERAL+). */
static char *nonsync(const char *q)
{
    size_t n = strlen(q);
    char *out = malloc(n * 2 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (q[i] == '}' && i > 0 && q[i - 1] >= '0' && q[i - 1] <= '9' && i + 2 < n + 1 &&
            q[i + 1] == '\r') {
            size_t j = i;
            while (j > 0 && q[j - 1] >= '0' && q[j - 1] <= '9')
                j--;
            if (j > 0 && q[j - 1] == '{')
                out[o++] = '+';
        }
        out[o++] = q[i];
    }
    out[o] = '\0';
    return out;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void plain_msg_clear(struct plain_msg *p)
{
    free(p->idate);
    free(p->hdr);
}

static void scmd_free(struct scmd *sc)
{
    if (sc->dc) {
        dcmd_finish(sc->dc);
        sc->dc = NULL;
    }
    imap_search_free(&sc->search);
    imap_search_plan_clear(&sc->plan);
    in_free(sc->in, sc->n_in);
    free(sc->plain.v);
    free(sc->cands.v);
    for (size_t i = 0; i < sc->n_m; i++)
        if (sc->m[i].have_keys)
            imap_sort_keys_clear(&sc->m[i].keys);
    free(sc->m);
    for (size_t i = 0; i < sc->n_pm; i++)
        plain_msg_clear(&sc->pm[i]);
    free(sc->pm);
    free(sc);
}

static void scmd_maybe_free(struct scmd *sc)
{
    if (sc->ended && sc->own_inflight == 0)
        scmd_free(sc);
}

void *imap_decrypt_search_new(imap_decrypt *d, imap_session *s, enum imap_verb verb, bool uid,
                              const struct imap_args *args, size_t first, bool *prepare_r)
{
    const struct imap_arg *a = args->args + first;
    size_t n = args->count > first ? args->count - first : 0;
    struct imap_search_in *crit_in = NULL;
    const char *charset = NULL;
    char cs[64];
    const char *err = NULL;
    size_t i = 0;
    struct scmd *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->kind = K_SEARCH;
    sc->d = d;
    sc->s = s;
    sc->sort = verb == IMAP_CMD_SORT;
    sc->uid = uid;
    sc->own.kind = K_SEARCH_OWN;
    sc->own.sc = sc;
    if (n > 1 && imap_arg_atom_eq(&a[0], "RETURN") && a[1].type == IMAP_ARG_LIST) {
        sc->esearch = true;
        for (size_t k = 0; k < a[1].count; k++) {
            const struct imap_arg *o = &a[1].list[k];
            if (imap_arg_atom_eq(o, "MIN"))
                sc->ret |= R_MIN;
            else if (imap_arg_atom_eq(o, "MAX"))
                sc->ret |= R_MAX;
            else if (imap_arg_atom_eq(o, "ALL"))
                sc->ret |= R_ALL;
            else if (imap_arg_atom_eq(o, "COUNT"))
                sc->ret |= R_COUNT;
            else
                goto relay; /* SAVE, UPDATE, CONTEXT, PARTIAL: the server's */
        }
        if (sc->ret == 0)
            sc->ret = R_ALL;
        i = 2;
    }
    if (sc->sort) {
        if (i + 2 > n || a[i].type != IMAP_ARG_LIST)
            goto relay;
        struct imap_search_in *list = NULL;
        if (convert(&a[i], 1, &list) < 0)
            goto relay;
        int rc = imap_sort_parse(list, sc->crit, &sc->n_crit, &err);
        in_free(list, 1);
        if (rc < 0)
            goto relay;
        if (!imap_arg_copy(&a[i + 1], cs, sizeof(cs)))
            goto relay;
        charset = cs;
        i += 2;
    } else if (i + 1 < n && imap_arg_atom_eq(&a[i], "CHARSET")) {
        if (!imap_arg_copy(&a[i + 1], cs, sizeof(cs)))
            goto relay;
        charset = cs;
        i += 2;
    }
    if (i >= n || convert(&a[i], n - i, &crit_in) < 0)
        goto relay;
    int rc = imap_search_parse(crit_in, n - i, charset, &sc->search, &err);
    sc->in = crit_in;
    sc->n_in = n - i;
    if (rc < 0 || imap_search_plan(sc->search, &sc->plan) < 0)
        goto relay; /* the server answers what the proxy cannot parse */
    bool sort_content = false;
    for (size_t k = 0; k < sc->n_crit; k++)
        sort_content |= sc->crit[k].key != IMAP_SORT_ARRIVAL;
    if (!sc->plan.content && !sort_content)
        goto relay;
    if (!sc->plan.content) {
        /* SORT by content over server criteria: every match's keys */
        char *c = imap_search_write(imap_search_root(sc->search));
        size_t len = c ? strlen(c) + 64 : 0;
        sc->plan.plain_query = c ? malloc(len) : NULL;
        sc->plan.enc_query = c ? malloc(len) : NULL;
        if (!sc->plan.plain_query || !sc->plan.enc_query) {
            free(c);
            goto relay;
        }
        snprintf(sc->plan.plain_query, len, "(%s) NOT " OUR_MARKER, c);
        snprintf(sc->plan.enc_query, len, "(%s) " OUR_MARKER, c);
        sc->plan.utf8 = false;
        for (const char *p = c; *p; p++)
            sc->plan.utf8 |= (unsigned char)*p >= 0x80;
        free(c);
    }
    *prepare_r = true;
    return sc;
relay:
    if (!sc->in)
        in_free(crit_in, n > i ? n - i : 0);
    scmd_free(sc);
    return NULL;
}

/* ---- own commands ----------------------------------------------------------------- */

/* Sends "<head><q><tail>" as an own command. */
static void own_send(struct scmd *sc, const char *head, const char *q, const char *tail)
{
    size_t n = strlen(head) + (q ? strlen(q) : 0) + strlen(tail) + 1;
    char *line = malloc(n);
    if (!line) {
        sc->failed = true;
        step(sc);
        return;
    }
    snprintf(line, n, "%s%s%s", head, q ? q : "", tail);
    if (imap_session_own_fetch(sc->s, line, &sc->own) == 0) {
        sc->own_inflight++;
    } else {
        sc->failed = true;
        step(sc);
    }
    free(line);
}

static char *ids_set(const struct ids *a)
{
    char *out = malloc(a->n * 11 + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < a->n; i++)
        o += (size_t)snprintf(out + o, 12, "%s%" PRIu32, i ? "," : "", a->v[i]);
    out[o] = '\0';
    return out;
}

static void answer(struct scmd *sc);
static void cands_done(struct dcmd *c, void *arg);

static void step(struct scmd *sc)
{
    if (sc->ended)
        return;
    if (sc->failed) {
        imap_session_prep_answer(sc->s, "", 0, "NO",
                                 sc->sort ? "[SERVERBUG] Sort failed." : "[SERVERBUG] Search failed.");
        sc->ended = true;
        scmd_maybe_free(sc);
        return;
    }
    const char *cs = sc->plan.utf8 ? "CHARSET UTF-8 " : "";
    char head[64];
    switch (sc->step) {
    case S_STATUS:
        sc->step = S_PLAIN;
        if (has_star(imap_search_root(sc->search))) {
            own_send(sc, "UID SEARCH RETURN (MAX COUNT) ALL", NULL, "");
            return;
        }
        /* fall through */
    case S_PLAIN: {
        sc->step = S_ENC;
        if (!sc->plan.plain_query)
            goto enc;
        char *q = nonsync(sc->plan.plain_query);
        snprintf(head, sizeof(head), "%sSEARCH %s", sc->uid ? "UID " : "", cs);
        own_send(sc, head, q, "");
        free(q);
        return;
    }
    enc:
    case S_ENC: {
        sc->step = S_CANDS;
        if (!sc->plan.enc_query)
            goto cands;
        char *q = nonsync(sc->plan.enc_query);
        snprintf(head, sizeof(head), "UID SEARCH %s", cs);
        own_send(sc, head, q, "");
        free(q);
        return;
    }
    cands:
    case S_CANDS: {
        sc->step = S_KEYS;
        if (sc->cands.n == 0)
            goto keys;
        char *set = ids_set(&sc->cands);
        unsigned needs = sc->plan.needs;
        enum protect_in_need need =
            (needs & (IMAP_SEARCH_NEED_BODY | IMAP_SEARCH_NEED_SIZE)) ? PROTECT_IN_FULL
                                                                      : PROTECT_IN_SUMMARY;
        if (sc->n_crit)
            for (size_t k = 0; k < sc->n_crit; k++)
                if (sc->crit[k].key == IMAP_SORT_SIZE)
                    need = PROTECT_IN_FULL;
        const char *extra = (needs & IMAP_SEARCH_NEED_MODSEQ) ? "FLAGS INTERNALDATE MODSEQ"
                                                              : "FLAGS INTERNALDATE";
        sc->dc = set ? dcmd_new_internal(sc->d, sc->s, set, need, extra, cands_done, sc) : NULL;
        free(set);
        if (!sc->dc) {
            sc->failed = true;
            step(sc);
            return;
        }
        sc->dc->max_read = sc->d->max_decrypt;
        dcmd_start(sc->dc);
        return;
    }
    keys:
    case S_KEYS: {
        sc->step = S_DONE;
        if (!sc->n_crit || sc->plain.n == 0)
            goto done;
        char *set = ids_set(&sc->plain);
        if (!set) {
            sc->failed = true;
            step(sc);
            return;
        }
        own_send(sc, sc->uid ? "UID FETCH " : "FETCH ", set,
                 " (UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (" SORT_FIELDS ")])");
        free(set);
        return;
    }
    done:
    case S_DONE:
        answer(sc);
        return;
    }
}

void imap_decrypt_search_start(void *p)
{
    struct scmd *sc = p;
    metric_add(g_m_prepared, 1, sc->sort ? "sort" : "search");
    sc->step = S_STATUS;
    step(sc);
}

/* The session ended the held command (BYE) or relayed it (OK). */
void imap_decrypt_search_end(void *p, enum imap_status status)
{
    struct scmd *sc = p;
    (void)status;
    sc->ended = true;
    if (sc->dc) {
        dcmd_finish(sc->dc);
        sc->dc = NULL;
    }
    scmd_maybe_free(sc);
}

void imap_decrypt_search_own_end(void *p, enum imap_status status)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    sc->own_inflight--;
    if (sc->ended) {
        scmd_maybe_free(sc);
        return;
    }
    if (status == IMAP_STATUS_BYE)
        return;
    if (status != IMAP_STATUS_OK)
        sc->failed = true; /* e.g. the server refused a query */
    step(sc);
}

/* * SEARCH n n ... / * ESEARCH ... MAX n COUNT n */
void imap_decrypt_search_own_data(void *p, const struct imap_resp_event *ev)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    if (ev->kind == IMAP_RESP_DATA_BEGIN) {
        sc->key[0] = '\0';
        return;
    }
    if (ev->kind != IMAP_RESP_DATA_TOKEN)
        return;
    const struct imap_token *t = &ev->tok;
    uint64_t v;
    bool num = t->depth == 0 && atom_num(t, &v);
    switch (sc->step) {
    case S_PLAIN: /* the STATUS answer (step already advanced) */
        if (t->type == IMAP_TOK_ATOM && !num && t->len < sizeof(sc->key)) {
            memcpy(sc->key, t->str, t->len);
            sc->key[t->len] = '\0';
        } else if (num && strcasecmp(sc->key, "MAX") == 0) {
            sc->max_uid = (uint32_t)v;
        } else if (num && strcasecmp(sc->key, "COUNT") == 0) {
            sc->max_seq = (uint32_t)v;
        }
        return;
    case S_ENC: /* the plain query's answer */
        if (num && ids_push(&sc->plain, (uint32_t)v) < 0)
            sc->failed = true;
        return;
    case S_CANDS: /* the candidates */
        if (num && ids_push(&sc->cands, (uint32_t)v) < 0)
            sc->failed = true;
        return;
    default:
        return;
    }
}

/* ---- candidates: evaluate on the plaintext ------------------------------------------------- */

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* "17-Jul-1996 02:44:25 -0700" -> UTC seconds and the zone in minutes. */
static bool parse_idate(const char *s, int64_t *t_r, int *tz_r)
{
    int day, y, hh, mm, ss, zone;
    char mon[4];
    /* every field is checked by the count; a malformed date is "no date" */
    if (!s || sscanf(s, " %d-%3s-%d %d:%d:%d %d", /* NOLINT(cert-err34-c) */
                     &day, mon, &y, &hh, &mm, &ss, &zone) != 7)
        return false;
    int m = -1;
    for (int i = 0; i < 12; i++)
        if (strcasecmp(mon, months[i]) == 0)
            m = i;
    if (m < 0)
        return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m, .tm_mday = day, .tm_hour = hh,
                    .tm_min = mm, .tm_sec = ss};
    int64_t t = (int64_t)timegm(&tm);
    int sign = zone < 0 ? -1 : 1;
    int az = zone < 0 ? -zone : zone;
    int minutes = sign * ((az / 100) * 60 + az % 100);
    *t_r = t - (int64_t)minutes * 60;
    *tz_r = minutes;
    return true;
}

static void msg_init(struct scmd *sc, struct imap_search_msg *m, uint32_t seq, uint32_t uid,
                     const char *idate)
{
    memset(m, 0, sizeof(*m));
    m->seq = seq;
    m->uid = uid;
    m->max_seq = sc->max_seq;
    m->max_uid = sc->max_uid;
    m->now = (int64_t)time(NULL);
    parse_idate(idate, &m->internaldate, &m->internaldate_tz);
}

static void cands_done(struct dcmd *c, void *arg)
{
    struct scmd *sc = arg;
    if (c->over) {
        char text[256];
        snprintf(text, sizeof(text),
                 "[LIMIT] %s would decrypt %zu protected messages (limit %" PRIu32
                 "): narrow it (a date range, a folder) or raise imap.search.max_decrypt",
                 sc->sort ? "Sort" : "Search", c->over, sc->d->max_decrypt);
        qlog_info("imap %s: %s refused: %zu protected messages to decrypt, limit %" PRIu32,
                  imap_session_id(sc->s), sc->sort ? "SORT" : "SEARCH", c->over,
                  sc->d->max_decrypt);
        metric_add(g_m_refused, 1);
        sc->dc = NULL;
        dcmd_finish(c);
        imap_session_prep_answer(sc->s, "", 0, "NO", text);
        sc->ended = true;
        scmd_maybe_free(sc);
        return;
    }
    for (size_t i = 0; i < c->n_ents && !sc->failed; i++) {
        struct entry *e = c->ents[i];
        if (!e->encrypted || !e->view || !e->uid)
            continue; /* not ours after all: the plain query covered it */
        const struct mime_struct *ms = protect_in_view_struct(e->view);
        if (!ms)
            continue;
        struct imap_search_msg m;
        msg_init(sc, &m, e->seq, e->uid, e->internaldate);
        m.ms = ms;
        m.flags = (const char *const *)e->flags;
        m.n_flags = e->n_flags;
        m.modseq = e->modseq;
        if (imap_search_eval(sc->search, &m) != 1)
            continue;
        if (sc->n_m == sc->cap_m) {
            size_t cap = sc->cap_m ? sc->cap_m * 2 : 32;
            struct match *n = realloc(sc->m, cap * sizeof(*n));
            if (!n) {
                sc->failed = true;
                break;
            }
            sc->m = n;
            sc->cap_m = cap;
        }
        struct match *mt = &sc->m[sc->n_m++];
        memset(mt, 0, sizeof(*mt));
        mt->seq = e->seq;
        mt->uid = e->uid;
        if (sc->n_crit && imap_sort_keys_compute(&m, &mt->keys) == 0) {
            mt->have_keys = true;
            mt->keys.size = protect_in_view_size(e->view);
        }
        g_stats.encrypted++;
    }
    sc->dc = NULL;
    dcmd_finish(c);
    step(sc);
}

/* ---- KEYS: the plain matches' headers ----------------------------------------------------------- */

void imap_decrypt_search_begin(void *p, uint32_t seq)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    sc->cur = NULL;
    sc->taking = P_NONE;
    if (sc->step != S_DONE || !sc->n_crit)
        return; /* a flag update during a SEARCH: relayed */
    if (sc->n_pm == sc->cap_pm) {
        size_t cap = sc->cap_pm ? sc->cap_pm * 2 : 64;
        struct plain_msg *n = realloc(sc->pm, cap * sizeof(*n));
        if (!n) {
            sc->failed = true;
            return;
        }
        sc->pm = n;
        sc->cap_pm = cap;
    }
    sc->cur = &sc->pm[sc->n_pm++];
    memset(sc->cur, 0, sizeof(*sc->cur));
    sc->cur->seq = seq;
}

enum imap_fetch_verdict imap_decrypt_search_item(void *p, const char *name)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    sc->taking = P_NONE;
    if (!sc->cur)
        return IMAP_FETCH_PASS;
    if (strcasecmp(name, "UID") == 0)
        sc->taking = P_UID;
    else if (strcasecmp(name, "RFC822.SIZE") == 0)
        sc->taking = P_SIZE;
    else if (strcasecmp(name, "INTERNALDATE") == 0)
        sc->taking = P_IDATE;
    else if (strcasecmp(name, SORT_ITEM) == 0)
        sc->taking = P_HDR;
    else
        return IMAP_FETCH_PASS; /* FLAGS sent along */
    return IMAP_FETCH_TAKE;
}

void imap_decrypt_search_value(void *p, const struct imap_token *tok, bool last)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    struct plain_msg *pm = sc->cur;
    (void)last;
    if (!pm)
        return;
    uint64_t v;
    switch (sc->taking) {
    case P_UID:
        if (atom_num(tok, &v))
            pm->uid = (uint32_t)v;
        break;
    case P_SIZE:
        if (atom_num(tok, &v))
            pm->size = v;
        break;
    case P_IDATE:
        if (tok->type == IMAP_TOK_QUOTED) {
            free(pm->idate);
            pm->idate = strndup(tok->str, tok->len);
        }
        break;
    case P_HDR:
        if ((tok->type == IMAP_TOK_LITERAL_DATA || tok->type == IMAP_TOK_QUOTED) && tok->len) {
            char *n = realloc(pm->hdr, pm->hdr_len + tok->len + 1);
            if (!n) {
                sc->failed = true;
                break;
            }
            memcpy(n + pm->hdr_len, tok->str, tok->len);
            pm->hdr = n;
            pm->hdr_len += tok->len;
            n[pm->hdr_len] = '\0';
        }
        break;
    case P_NONE:
        break;
    }
}

void imap_decrypt_search_response_end(void *p)
{
    struct scmd *sc = ((struct sown *)p)->sc;
    sc->cur = NULL;
    sc->taking = P_NONE;
}

/* ---- the answer -------------------------------------------------------------------------------- */

struct sorted {
    uint32_t id; /* what the client gets (seq or UID) */
    struct imap_sort_keys *keys;
};

static const struct imap_sort_crit *g_crit; /* qsort has no context argument */
static size_t g_n_crit;

static int cmp_sorted(const void *a, const void *b)
{
    const struct sorted *x = a, *y = b;
    return imap_sort_compare(g_crit, g_n_crit, x->keys, y->keys);
}

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void answer(struct scmd *sc)
{
    struct buf b = {0};
    /* the client's form: sequence numbers or UIDs */
    uint32_t *enc = malloc((sc->n_m ? sc->n_m : 1) * sizeof(*enc));
    struct imap_search_result res = {0};
    struct sorted *order = NULL;
    size_t n_order = 0;
    if (!enc) {
        sc->failed = true;
        goto out;
    }
    for (size_t i = 0; i < sc->n_m; i++)
        enc[i] = sc->uid ? sc->m[i].uid : sc->m[i].seq;
    if (imap_search_result_merge(sc->plain.v, sc->plain.n, enc, sc->n_m, &res) < 0) {
        sc->failed = true;
        goto out;
    }
    if (sc->n_crit) {
        /* every match with its keys: plain ones from their headers */
        order = calloc(res.count ? res.count : 1, sizeof(*order));
        struct imap_sort_keys *pkeys = calloc(sc->n_pm ? sc->n_pm : 1, sizeof(*pkeys));
        if (!order || !pkeys) {
            free(pkeys);
            sc->failed = true;
            goto out;
        }
        for (size_t i = 0; i < sc->n_pm; i++) {
            struct plain_msg *pm = &sc->pm[i];
            struct mime_struct *ms = NULL;
            char *err = NULL;
            if (mime_struct_parse(pm->hdr ? pm->hdr : "\r\n", pm->hdr ? pm->hdr_len : 2, 0, &ms,
                                  &err) < 0) {
                free(err);
                continue;
            }
            struct imap_search_msg m;
            msg_init(sc, &m, pm->seq, pm->uid, pm->idate);
            m.ms = ms;
            if (imap_sort_keys_compute(&m, &pkeys[i]) == 0) {
                pkeys[i].size = pm->size;
                uint32_t id = sc->uid ? pm->uid : pm->seq;
                order[n_order].id = id;
                order[n_order].keys = &pkeys[i];
                n_order++;
            }
            mime_struct_free(&ms);
        }
        for (size_t i = 0; i < sc->n_m; i++) {
            if (!sc->m[i].have_keys)
                continue;
            order[n_order].id = enc[i];
            order[n_order].keys = &sc->m[i].keys;
            n_order++;
        }
        g_crit = sc->crit;
        g_n_crit = sc->n_crit;
        qsort(order, n_order, sizeof(*order), cmp_sorted);
        if (!sc->esearch) {
            bprintf(&b, "* SORT");
            for (size_t i = 0; i < n_order; i++)
                bprintf(&b, " %" PRIu32, order[i].id);
            bprintf(&b, "\r\n");
        } else {
            char tag[TAG_OUT];
            imap_session_prep_tag(sc->s, tag, sizeof(tag));
            bprintf(&b, "* ESEARCH (TAG \"%s\")%s", tag, sc->uid ? " UID" : "");
            if ((sc->ret & R_MIN) && n_order)
                bprintf(&b, " MIN %" PRIu32, order[0].id);
            if ((sc->ret & R_MAX) && n_order)
                bprintf(&b, " MAX %" PRIu32, order[n_order - 1].id);
            if ((sc->ret & R_ALL) && n_order) {
                bprintf(&b, " ALL ");
                for (size_t i = 0; i < n_order; i++)
                    bprintf(&b, "%s%" PRIu32, i ? "," : "", order[i].id);
            }
            if (sc->ret & R_COUNT)
                bprintf(&b, " COUNT %zu", n_order);
            bprintf(&b, "\r\n");
        }
        for (size_t i = 0; i < sc->n_pm; i++)
            imap_sort_keys_clear(&pkeys[i]);
        free(pkeys);
    } else if (!sc->esearch) {
        bprintf(&b, "* SEARCH");
        for (size_t i = 0; i < res.count; i++)
            bprintf(&b, " %" PRIu32, res.ids[i]);
        bprintf(&b, "\r\n");
    } else {
        char tag[TAG_OUT];
        imap_session_prep_tag(sc->s, tag, sizeof(tag));
        bprintf(&b, "* ESEARCH (TAG \"%s\")%s", tag, sc->uid ? " UID" : "");
        if ((sc->ret & R_MIN) && res.count)
            bprintf(&b, " MIN %" PRIu32, res.ids[0]);
        if ((sc->ret & R_MAX) && res.count)
            bprintf(&b, " MAX %" PRIu32, res.ids[res.count - 1]);
        if ((sc->ret & R_ALL) && res.count) {
            char *set = imap_search_result_set(&res);
            bprintf(&b, " ALL %s", set ? set : "");
            free(set);
        }
        if (sc->ret & R_COUNT)
            bprintf(&b, " COUNT %zu", res.count);
        bprintf(&b, "\r\n");
    }
    if (b.oom)
        sc->failed = true;
out:
    free(enc);
    free(order);
    imap_search_result_clear(&res);
    if (sc->failed) {
        free(b.p);
        step(sc); /* answers NO */
        return;
    }
    imap_session_prep_answer(sc->s, b.p, b.len, "OK",
                             sc->sort ? "Sort completed." : "Search completed.");
    free(b.p);
    sc->ended = true;
    scmd_maybe_free(sc);
}
