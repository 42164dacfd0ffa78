/* search_dump: the C side of the SEARCH/SORT oracle. Reads a manifest on
 * stdin:
 *   M <uid> <seq> <internaldate> <tz-minutes> <now> <path> [flag...]
 *   S <criteria>                       -> "S <uid> <uid> ..." (ascending)
 *   O <sort criteria list> TAB <criteria> -> "O <uid> ..." (sorted)
 * and answers with qumail_imap_search over the plaintext files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_search.h"

struct msg {
    struct imap_search_msg m;
    struct mime_struct *ms;
    char *flags_buf;
    const char *flags[32];
    uint8_t *data;
};

static struct msg msgs[4096];
static size_t n_msgs;

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b == NULL || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void add_msg(char *line)
{
    struct msg *x = &msgs[n_msgs];
    long long internal = 0, now = 0;
    unsigned uid = 0, seq = 0;
    int tz = 0, off = 0;
    char path[4096];
    /* the oracle script's own line format; a malformed line is caught by
     * the count of conversions */
    // NOLINTNEXTLINE(cert-err34-c)
    if (sscanf(line, "%u %u %lld %d %lld %4095s %n", &uid, &seq, &internal, &tz, &now, path,
               &off) < 6) {
        fprintf(stderr, "bad M line\n");
        exit(2);
    }
    size_t len = 0;
    x->data = slurp(path, &len);
    if (x->data == NULL) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    char *err = NULL;
    if (mime_struct_parse(x->data, len, 0, &x->ms, &err) != 0) {
        fprintf(stderr, "parse %s: %s\n", path, err);
        exit(2);
    }
    x->flags_buf = strdup(line + off);
    size_t nf = 0;
    for (char *save = NULL, *t = strtok_r(x->flags_buf, " \n", &save); t != NULL && nf < 32;
         t = strtok_r(NULL, " \n", &save))
        x->flags[nf++] = t;
    x->m.ms = x->ms;
    x->m.uid = uid;
    x->m.seq = seq;
    x->m.internaldate = internal;
    x->m.internaldate_tz = tz;
    x->m.now = now;
    x->m.flags = x->flags;
    x->m.n_flags = nf;
    n_msgs++;
}

static struct imap_search *parse(const char *text)
{
    struct imap_search_in *in = NULL;
    size_t count = 0;
    const char *err = NULL;
    if (imap_search_in_parse(text, strlen(text), &in, &count, &err) != 0) {
        printf("ERROR %s\n", err);
        return NULL;
    }
    struct imap_search *s = NULL;
    int rc = imap_search_parse(in, count, "UTF-8", &s, &err);
    imap_search_in_free(&in);
    if (rc != 0) {
        printf("ERROR %s\n", err);
        return NULL;
    }
    return s;
}

static const struct imap_sort_crit *g_crit;
static size_t g_ncrit;
static struct imap_sort_keys *g_keys;

static int cmp_idx(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return imap_sort_compare(g_crit, g_ncrit, &g_keys[x], &g_keys[y]);
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        /* literals travel as "{n+}\x01data": \x01 stands for CRLF */
        char *w = malloc(2 * (size_t)n + 1);
        size_t o = 0;
        for (ssize_t i = 0; i < n; i++) {
            if (line[i] == '\x01') {
                w[o++] = '\r';
                w[o++] = '\n';
            } else {
                w[o++] = line[i];
            }
        }
        w[o] = '\0';
        free(line);
        line = w;
        cap = 2 * (size_t)n + 1;
        uint32_t max_uid = 0;
        for (size_t i = 0; i < n_msgs; i++)
            if (msgs[i].m.uid > max_uid)
                max_uid = msgs[i].m.uid;
        for (size_t i = 0; i < n_msgs; i++) {
            msgs[i].m.max_seq = (uint32_t)n_msgs;
            msgs[i].m.max_uid = max_uid;
        }
        if (line[0] == 'M') {
            add_msg(line + 2);
        } else if (line[0] == 'S') {
            struct imap_search *s = parse(line + 2);
            if (s == NULL)
                continue;
            printf("S");
            for (size_t i = 0; i < n_msgs; i++)
                if (imap_search_eval(s, &msgs[i].m))
                    printf(" %u", msgs[i].m.uid);
            printf("\n");
            imap_search_free(&s);
        } else if (line[0] == 'O') {
            char *tab = strchr(line + 2, '\t');
            if (tab == NULL)
                continue;
            *tab = '\0';
            struct imap_search_in *in = NULL;
            size_t count = 0;
            const char *err = NULL;
            struct imap_sort_crit crit[IMAP_SORT_MAX_CRIT];
            size_t ncrit = 0;
            if (imap_search_in_parse(line + 2, strlen(line + 2), &in, &count, &err) != 0 ||
                count != 1 || imap_sort_parse(&in[0], crit, &ncrit, &err) != 0) {
                printf("ERROR %s\n", err != NULL ? err : "sort");
                imap_search_in_free(&in);
                continue;
            }
            imap_search_in_free(&in);
            struct imap_search *s = parse(tab + 1);
            if (s == NULL)
                continue;
            size_t *idx = calloc(n_msgs + 1, sizeof(*idx));
            struct imap_sort_keys *keys = calloc(n_msgs + 1, sizeof(*keys));
            size_t k = 0;
            for (size_t i = 0; i < n_msgs; i++) {
                if (!imap_search_eval(s, &msgs[i].m))
                    continue;
                imap_sort_keys_compute(&msgs[i].m, &keys[i]);
                idx[k++] = i;
            }
            g_crit = crit;
            g_ncrit = ncrit;
            g_keys = keys;
            qsort(idx, k, sizeof(*idx), cmp_idx);
            printf("O");
            for (size_t i = 0; i < k; i++)
                printf(" %u", msgs[idx[i]].m.uid);
            printf("\n");
            for (size_t i = 0; i < n_msgs; i++)
                imap_sort_keys_clear(&keys[i]);
            free(keys);
            free(idx);
            imap_search_free(&s);
        }
        fflush(stdout);
    }
    free(line);
    for (size_t i = 0; i < n_msgs; i++) {
        mime_struct_free(&msgs[i].ms);
        free(msgs[i].flags_buf);
        free(msgs[i].data);
    }
    return 0;
}
