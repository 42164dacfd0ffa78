/* SORT (RFC 5256) as Dovecot 2.3 orders messages: base subject, first
 * mailbox, sent date (INTERNALDATE when missing), arrival, size, display
 * names (RFC 5957); strings casemapped and compared bytewise; ties broken
 * by the next key and finally by sequence number. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "search_internal.h"

/* ---- base subject (RFC 5256 section 2.1, Dovecot's reading) -------------- */

static bool remove_blob(const char **datap)
{
    const char *d = *datap;
    if (*d != '[')
        return false;
    d++;
    while (*d != '\0' && *d != ']') {
        if (*d == '[')
            return false;
        d++;
    }
    if (*d != ']')
        return false;
    d++;
    if (*d == ' ')
        d++;
    *datap = d;
    return true;
}

static bool remove_leader(const char *buf, size_t *start)
{
    const char *d = buf + *start, *orig = d;
    bool ret = false;
    if (*d == ' ') { /* WSP: always removed */
        d++;
        orig++;
        *start += 1;
        ret = true;
    }
    while (*d == '[')
        if (!remove_blob(&d))
            return ret;
    if (strncmp(d, "FWD", 3) == 0)
        d += 3;
    else if (strncmp(d, "RE", 2) == 0 || strncmp(d, "FW", 2) == 0)
        d += 2;
    else
        return ret;
    if (*d == ' ')
        d++;
    if (*d == '[' && !remove_blob(&d))
        return ret;
    if (*d != ':')
        return ret;
    d++;
    *start += (size_t)(d - orig);
    return true;
}

static bool remove_blob_nonempty(const char *buf, size_t *start)
{
    const char *d = buf + *start, *orig = d;
    if (*d == '[' && remove_blob(&d) && *d != '\0') {
        *start += (size_t)(d - orig);
        return true;
    }
    return false;
}

char *imap_sort_base_subject(const char *value, size_t len)
{
    struct sbuf dec = {0};
    search_header_decode(&dec, value, len);
    /* (1) white space: tabs and line breaks to spaces, runs to one */
    struct sbuf b = {0};
    bool last = false;
    for (size_t i = 0; i < dec.len; i++) {
        char c = dec.d[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (!last)
                sbuf_addc(&b, ' ');
            last = true;
        } else {
            sbuf_addc(&b, c);
            last = false;
        }
    }
    sbuf_free(&dec);
    sbuf_addc(&b, '\0'); /* a buffer even for "" */
    if (b.failed) {
        sbuf_free(&b);
        return NULL;
    }
    b.len--;
    size_t start = 0;
    while (true) {
        /* (2) trailers: "(fwd)" and white space */
        while (b.len > start) {
            if (b.d[b.len - 1] == ' ')
                b.len--;
            else if (b.len - start >= 5 && strncmp(b.d + b.len - 5, "(FWD)", 5) == 0)
                b.len -= 5;
            else
                break;
        }
        b.d[b.len] = '\0';
        /* (3)-(5) leaders and blobs */
        bool found;
        do {
            found = remove_leader(b.d, &start);
            found = remove_blob_nonempty(b.d, &start) || found;
        } while (found);
        /* (6) [fwd: ... ] */
        if (strncmp(b.d + start, "[FWD:", 5) == 0 && b.len > start && b.d[b.len - 1] == ']') {
            b.len--;
            b.d[b.len] = '\0';
            start += 5;
            continue;
        }
        break;
    }
    char *r = strdup(b.d + start);
    sbuf_free(&b);
    return r;
}

/* ---- keys ------------------------------------------------------------------ */

int imap_sort_parse(const struct imap_search_in *list, struct imap_sort_crit *crit,
                    size_t *n_crit, const char **error_r)
{
    static const struct {
        const char *name;
        enum imap_sort_key key;
    } keys[] = {
        {"ARRIVAL", IMAP_SORT_ARRIVAL}, {"CC", IMAP_SORT_CC},     {"DATE", IMAP_SORT_DATE},
        {"FROM", IMAP_SORT_FROM},       {"SIZE", IMAP_SORT_SIZE}, {"SUBJECT", IMAP_SORT_SUBJECT},
        {"TO", IMAP_SORT_TO},           {"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
        {"DISPLAYTO", IMAP_SORT_DISPLAYTO},
    };
    *n_crit = 0;
    if (list == NULL || list->type != IMAP_SEARCH_IN_LIST || list->count == 0) {
        *error_r = "Invalid sort argument";
        return IMAP_SEARCH_ESYNTAX;
    }
    bool reverse = false;
    for (size_t i = 0; i < list->count; i++) {
        const struct imap_search_in *a = &list->list[i];
        if (a->type != IMAP_SEARCH_IN_ATOM) {
            *error_r = "Invalid sort argument";
            return IMAP_SEARCH_ESYNTAX;
        }
        if (a->len == 7 && strncasecmp(a->str, "REVERSE", 7) == 0) {
            reverse = true;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
            if (strlen(keys[k].name) == a->len && strncasecmp(a->str, keys[k].name, a->len) == 0)
                break;
        if (k == sizeof(keys) / sizeof(keys[0])) {
            *error_r = "Unknown sort argument";
            return IMAP_SEARCH_ESYNTAX;
        }
        if (*n_crit >= IMAP_SORT_MAX_CRIT) {
            *error_r = "Too many sort criteria";
            return IMAP_SEARCH_ELIMIT;
        }
        crit[*n_crit].key = keys[k].key;
        crit[*n_crit].reverse = reverse;
        (*n_crit)++;
        reverse = false;
    }
    if (reverse || *n_crit == 0) {
        *error_r = "Missing sort argument";
        return IMAP_SEARCH_ESYNTAX;
    }
    return 0;
}

static bool first_field(const struct mime_struct *ms, const char *name, struct search_field *f)
{
    const struct mime_part *root = mime_struct_root(ms);
    for (size_t i = 0; i < root->n_fields; i++) {
        const struct mime_field *mf = &root->fields[i];
        const char *p = (const char *)mime_struct_data(ms) + mf->offset;
        if (mf->name_len == strlen(name) && strncasecmp(p, name, mf->name_len) == 0)
            return search_field_get(ms, root, i, f);
    }
    return false;
}

static char *casemapped(const char *s)
{
    struct sbuf b = {0};
    sbuf_casemap(&b, s, strlen(s));
    sbuf_addc(&b, '\0');
    if (b.failed) {
        sbuf_free(&b);
        return NULL;
    }
    return b.d;
}

/* The first address of the first field called name (Dovecot sorts by
 * mail_get_first_header), parsed on its own; *tmp_r keeps it alive. */
static const struct mime_address *first_address(const struct mime_struct *ms, const char *name,
                                                struct mime_struct **tmp_r)
{
    const struct mime_part *root = mime_struct_root(ms);
    *tmp_r = NULL;
    for (size_t i = 0; i < root->n_fields; i++) {
        const struct mime_field *mf = &root->fields[i];
        const char *p = (const char *)mime_struct_data(ms) + mf->offset;
        if (mf->name_len != strlen(name) || strncasecmp(p, name, mf->name_len) != 0)
            continue;
        const struct mime_address *a = NULL;
        if (!search_field_first_address(ms, root, i, tmp_r, &a))
            return NULL;
        return a;
    }
    return NULL;
}

static char *mailbox_key(const struct mime_address *a)
{
    const char *mb = a != NULL && a->mailbox != NULL ? a->mailbox : "";
    if (a != NULL && a->domain != NULL && mb[0] == '\0')
        mb = "MISSING_MAILBOX"; /* Dovecot parses with fill_missing */
    return casemapped(mb);
}

static char *display_key(const struct mime_address *a)
{
    if (a == NULL)
        return casemapped("");
    if (a->name != NULL) {
        struct sbuf dec = {0};
        search_header_decode(&dec, a->name, strlen(a->name)); /* casemapped */
        if (dec.len > 0 && !dec.failed) {
            sbuf_addc(&dec, '\0');
            return dec.d;
        }
        sbuf_free(&dec);
    }
    struct sbuf s = {0};
    if (a->mailbox != NULL) {
        sbuf_adds(&s, a->mailbox);
        if (a->domain != NULL) {
            sbuf_addc(&s, '@');
            sbuf_adds(&s, a->domain);
        }
    }
    char *r = casemapped(sbuf_c(&s));
    sbuf_free(&s);
    return r;
}

int imap_sort_keys_compute(const struct imap_search_msg *m, struct imap_sort_keys *k)
{
    memset(k, 0, sizeof(*k));
    k->seq = m->seq;
    k->arrival = m->internaldate;
    k->date = 0;
    if (m->ms != NULL) {
        k->size = mime_struct_size(m->ms);
        struct search_field f;
        if (first_field(m->ms, "Subject", &f)) {
            k->subject = imap_sort_base_subject(f.value, f.value_len);
            search_field_free(&f);
        } else {
            k->subject = strdup("");
        }
        if (first_field(m->ms, "Date", &f)) {
            int tz;
            if (!imap_search_date_parse(f.value, f.value_len, &k->date, &tz))
                k->date = 0;
            search_field_free(&f);
        }
        struct mime_struct *tf = NULL, *tt = NULL, *tc = NULL;
        const struct mime_address *from = first_address(m->ms, "From", &tf);
        const struct mime_address *to = first_address(m->ms, "To", &tt);
        const struct mime_address *cc = first_address(m->ms, "Cc", &tc);
        k->from = mailbox_key(from);
        k->to = mailbox_key(to);
        k->cc = mailbox_key(cc);
        k->display_from = display_key(from);
        k->display_to = display_key(to);
        mime_struct_free(&tf);
        mime_struct_free(&tt);
        mime_struct_free(&tc);
    } else {
        k->subject = strdup("");
        k->from = strdup("");
        k->to = strdup("");
        k->cc = strdup("");
        k->display_from = strdup("");
        k->display_to = strdup("");
    }
    if (k->date == 0)
        k->date = m->internaldate;
    if (k->subject == NULL || k->from == NULL || k->to == NULL || k->cc == NULL ||
        k->display_from == NULL || k->display_to == NULL) {
        imap_sort_keys_clear(k);
        return IMAP_SEARCH_ENOMEM;
    }
    return 0;
}

void imap_sort_keys_clear(struct imap_sort_keys *k)
{
    free(k->subject);
    free(k->from);
    free(k->to);
    free(k->cc);
    free(k->display_from);
    free(k->display_to);
    memset(k, 0, sizeof(*k));
}

static int cmp_num(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

int imap_sort_compare(const struct imap_sort_crit *crit, size_t n_crit,
                      const struct imap_sort_keys *a, const struct imap_sort_keys *b)
{
    for (size_t i = 0; i < n_crit; i++) {
        int r = 0;
        switch (crit[i].key) {
        case IMAP_SORT_ARRIVAL: r = cmp_num(a->arrival, b->arrival); break;
        case IMAP_SORT_DATE: r = cmp_num(a->date, b->date); break;
        case IMAP_SORT_SIZE: r = a->size < b->size ? -1 : a->size > b->size; break;
        case IMAP_SORT_SUBJECT: r = strcmp(a->subject, b->subject); break;
        case IMAP_SORT_FROM: r = strcmp(a->from, b->from); break;
        case IMAP_SORT_TO: r = strcmp(a->to, b->to); break;
        case IMAP_SORT_CC: r = strcmp(a->cc, b->cc); break;
        case IMAP_SORT_DISPLAYFROM: r = strcmp(a->display_from, b->display_from); break;
        case IMAP_SORT_DISPLAYTO: r = strcmp(a->display_to, b->display_to); break;
        }
        if (r != 0)
            return crit[i].reverse ? (r < 0 ? 1 : -1) : (r < 0 ? -1 : 1);
    }
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}
