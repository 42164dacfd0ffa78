/* The plan for one SEARCH over a mailbox of plain and encrypted messages
 * (imap_search.h, README.md "Merge plan"), and the merged result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search_internal.h"

#define OUR_MARKER "HEADER X-QKD-Key-ID \"\""

enum bound { B_NONE, B_ALL, B_EXPR };

/* Over- (upper) or under- (lower) approximation of n by server-side keys
 * only: a content key is ALL in the upper bound, nothing in the lower. */
static enum bound approx(const struct imap_search_node *n, bool upper, struct sbuf *out)
{
    if (n->op == IMAP_SEARCH_ALL)
        return B_ALL;
    if (n->op == IMAP_SEARCH_NOT) {
        struct sbuf in = {0};
        enum bound b = approx(n->children[0], !upper, &in);
        enum bound r = b == B_ALL ? B_NONE : b == B_NONE ? B_ALL : B_EXPR;
        if (r == B_EXPR) {
            sbuf_adds(out, "NOT ");
            sbuf_add(out, in.d, in.len);
        }
        sbuf_free(&in);
        return r;
    }
    if (n->op == IMAP_SEARCH_AND || n->op == IMAP_SEARCH_OR) {
        bool is_and = n->op == IMAP_SEARCH_AND;
        struct sbuf parts = {0};
        size_t n_expr = 0;
        for (size_t i = 0; i < n->n_children; i++) {
            struct sbuf in = {0};
            enum bound b = approx(n->children[i], upper, &in);
            if (b == (is_and ? B_NONE : B_ALL)) {
                sbuf_free(&in);
                sbuf_free(&parts);
                return b;
            }
            if (b == B_EXPR) {
                if (n_expr > 0)
                    sbuf_addc(&parts, ' ');
                sbuf_add(&parts, in.d, in.len);
                n_expr++;
            }
            sbuf_free(&in);
        }
        if (n_expr == 0) {
            sbuf_free(&parts);
            return is_and ? B_ALL : B_NONE;
        }
        if (is_and && n_expr > 1) {
            sbuf_addc(out, '(');
            sbuf_add(out, parts.d, parts.len);
            sbuf_addc(out, ')');
        } else if (n_expr == 1) {
            sbuf_add(out, parts.d, parts.len); /* one left: no parentheses */
        } else {
            /* OR is binary: both children were expressions */
            sbuf_adds(out, "OR ");
            sbuf_add(out, parts.d, parts.len);
        }
        sbuf_free(&parts);
        return out->failed ? B_NONE : B_EXPR;
    }
    if (imap_search_node_is_content(n))
        return upper ? B_ALL : B_NONE;
    char *w = imap_search_write(n);
    if (w == NULL) {
        out->failed = true;
        return B_NONE;
    }
    sbuf_adds(out, w);
    free(w);
    return B_EXPR;
}

static bool has_8bit(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

int imap_search_plan(const struct imap_search *s, struct imap_search_plan *plan_r)
{
    memset(plan_r, 0, sizeof(*plan_r));
    plan_r->needs = imap_search_needs(s);
    plan_r->content = imap_search_needs_content(s);
    if (!plan_r->content)
        return 0;
    const struct imap_search_node *root = imap_search_root(s);
    char *c = imap_search_write(root);
    struct sbuf plain = {0}, enc = {0}, u = {0};
    if (c == NULL)
        goto nomem;
    sbuf_addc(&plain, '(');
    sbuf_adds(&plain, c);
    sbuf_adds(&plain, ") NOT " OUR_MARKER);
    free(c);
    enum bound b = approx(root, true, &u);
    if (b == B_NONE) {
        plan_r->enc_query = NULL; /* no encrypted message can match */
    } else {
        if (b == B_EXPR) {
            sbuf_add(&enc, u.d, u.len);
            sbuf_addc(&enc, ' ');
        } else {
            plan_r->enc_all_candidates = true;
        }
        sbuf_adds(&enc, OUR_MARKER);
        if (enc.failed)
            goto nomem;
        plan_r->enc_query = enc.d;
        enc.d = NULL;
    }
    sbuf_free(&u);
    if (plain.failed)
        goto nomem;
    plan_r->plain_query = plain.d;
    plan_r->utf8 = has_8bit(plan_r->plain_query);
    return 0;
nomem:
    sbuf_free(&plain);
    sbuf_free(&enc);
    sbuf_free(&u);
    imap_search_plan_clear(plan_r);
    return IMAP_SEARCH_ENOMEM;
}

void imap_search_plan_clear(struct imap_search_plan *plan)
{
    free(plan->plain_query);
    free(plan->enc_query);
    memset(plan, 0, sizeof(*plan));
}

static int u32cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int imap_search_result_merge(const uint32_t *a, size_t na, const uint32_t *b, size_t nb,
                             struct imap_search_result *r)
{
    memset(r, 0, sizeof(*r));
    if (na + nb == 0)
        return 0;
    r->ids = malloc((na + nb) * sizeof(uint32_t));
    if (r->ids == NULL)
        return IMAP_SEARCH_ENOMEM;
    if (na > 0)
        memcpy(r->ids, a, na * sizeof(uint32_t));
    if (nb > 0)
        memcpy(r->ids + na, b, nb * sizeof(uint32_t));
    qsort(r->ids, na + nb, sizeof(uint32_t), u32cmp);
    size_t k = 0;
    for (size_t i = 0; i < na + nb; i++)
        if (k == 0 || r->ids[k - 1] != r->ids[i])
            r->ids[k++] = r->ids[i];
    r->count = k;
    return 0;
}

void imap_search_result_clear(struct imap_search_result *r)
{
    free(r->ids);
    memset(r, 0, sizeof(*r));
}

char *imap_search_result_set(const struct imap_search_result *r)
{
    struct sbuf b = {0};
    size_t i = 0;
    while (i < r->count) {
        size_t j = i;
        while (j + 1 < r->count && r->ids[j + 1] == r->ids[j] + 1)
            j++;
        char buf[32];
        if (j == i)
            snprintf(buf, sizeof(buf), "%s%u", i > 0 ? "," : "", r->ids[i]);
        else
            snprintf(buf, sizeof(buf), "%s%u:%u", i > 0 ? "," : "", r->ids[i], r->ids[j]);
        sbuf_adds(&b, buf);
        i = j + 1;
    }
    if (b.failed) {
        sbuf_free(&b);
        return NULL;
    }
    return b.d != NULL ? b.d : strdup("");
}
