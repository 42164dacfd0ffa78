/* Who may read: logins mapped to addresses, checked against the recipient
 * binding of format 2; and recognising an encrypted message from its
 * header fields. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incoming_internal.h"

/* ---- the address map --------------------------------------------------------- */

void pi_addrmap_free(struct pi_addrmap_entry *map, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(map[i].login);
        free(map[i].address);
    }
    free(map);
}

int pi_addrmap_build(const struct protect_in_config *cfg,
                     struct pi_addrmap_entry **map_r, size_t *n_r,
                     char **error_r)
{
    *map_r = NULL;
    *n_r = 0;
    if (cfg->n_addresses == 0)
        return 0;
    struct pi_addrmap_entry *map = calloc(cfg->n_addresses, sizeof(*map));
    if (map == NULL)
        return PROTECT_IN_ENOMEM;
    for (size_t i = 0; i < cfg->n_addresses; i++) {
        const struct protect_in_address *a = &cfg->addresses[i];
        if (a->login == NULL || a->login[0] == '\0' || a->address == NULL ||
            mime_address_normalize(a->address, &map[i].address) < 0) {
            if (error_r != NULL) {
                char buf[160];
                snprintf(buf, sizeof(buf),
                         "address map entry %zu: not a login and a mail address",
                         i + 1);
                *error_r = strdup(buf);
            }
            pi_addrmap_free(map, i + 1);
            return PROTECT_IN_EINVAL;
        }
        map[i].login = strdup(a->login);
        if (map[i].login == NULL) {
            pi_addrmap_free(map, i + 1);
            return PROTECT_IN_ENOMEM;
        }
    }
    *map_r = map;
    *n_r = cfg->n_addresses;
    return 0;
}

/* ---- readers ------------------------------------------------------------------- */

static int add_addr(protect_in_reader *r, const char *addr)
{
    char *norm = NULL;
    if (mime_address_normalize(addr, &norm) < 0)
        return 0; /* not an address (e.g. a plain user name): none */
    for (size_t i = 0; i < r->n_addrs; i++) {
        if (strcmp(r->addrs[i], norm) == 0) {
            free(norm);
            return 0;
        }
    }
    char **na = realloc(r->addrs, (r->n_addrs + 1) * sizeof(char *));
    if (na == NULL) {
        free(norm);
        return -1;
    }
    r->addrs = na;
    r->addrs[r->n_addrs++] = norm;
    return 0;
}

protect_in_reader *protect_in_reader_new(protect_in *pi, const char *login)
{
    if (login == NULL)
        return NULL;
    protect_in_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->refs = 1;
    r->login = strdup(login);
    int bad = r->login == NULL;
    const char *at = strchr(login, '@');
    if (!bad && at != NULL && at != login && at[1] != '\0') {
        bad = add_addr(r, login) < 0;
    } else if (!bad && at == NULL && login[0] != '\0' &&
               pi->default_domain != NULL) {
        size_t n = strlen(login) + 1 + strlen(pi->default_domain) + 1;
        char *a = malloc(n);
        bad = a == NULL;
        if (a != NULL) {
            snprintf(a, n, "%s@%s", login, pi->default_domain);
            bad = add_addr(r, a) < 0;
            free(a);
        }
    }
    for (size_t i = 0; !bad && i < pi->n_map; i++) {
        if (strcmp(pi->map[i].login, login) == 0)
            bad = add_addr(r, pi->map[i].address) < 0;
    }
    if (bad) {
        protect_in_reader_free(&r);
        return NULL;
    }
    return r;
}

protect_in_reader *pi_reader_ref(protect_in_reader *r)
{
    r->refs++;
    return r;
}

void protect_in_reader_free(protect_in_reader **rp)
{
    protect_in_reader *r = *rp;
    if (r == NULL)
        return;
    *rp = NULL;
    if (--r->refs > 0)
        return;
    for (size_t i = 0; i < r->n_addrs; i++)
        free(r->addrs[i]);
    free(r->addrs);
    free(r->login);
    free(r);
}

const char *protect_in_reader_login(const protect_in_reader *r)
{
    return r->login;
}

size_t protect_in_reader_address_count(const protect_in_reader *r)
{
    return r->n_addrs;
}

const char *protect_in_reader_address(const protect_in_reader *r, size_t i)
{
    return i < r->n_addrs ? r->addrs[i] : NULL;
}

enum protect_in_reason pi_access(const protect_in *pi,
                                 const protect_in_reader *r,
                                 const struct pi_binding *b)
{
    if (pi->cfg.recipient_check == PROTECT_IN_CHECK_OFF)
        return PROTECT_IN_DECRYPTED;
    if (b->count == 0)
        return pi->cfg.release_unbound ? PROTECT_IN_DECRYPTED
                                       : PROTECT_IN_R_UNBOUND;
    if (r->n_addrs == 0)
        return PROTECT_IN_R_NO_IDENTITY;
    for (size_t i = 0; i < r->n_addrs; i++) {
        for (size_t j = 0; j < b->count; j++) {
            if (strcmp(r->addrs[i], b->addrs[j]) == 0)
                return PROTECT_IN_DECRYPTED;
        }
    }
    return PROTECT_IN_R_NOT_ALLOWED;
}

/* ---- classification ------------------------------------------------------------- */

static int name_is(const uint8_t *p, size_t n, const char *name)
{
    size_t k = strlen(name);
    if (n < k)
        return 0;
    for (size_t i = 0; i < k; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        uint8_t d = (uint8_t)name[i];
        if (d >= 'A' && d <= 'Z')
            d = (uint8_t)(d + 32);
        if (c != d)
            return 0;
    }
    /* optional white space, then the colon */
    size_t i = k;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    return i < n && p[i] == ':' ? (int)(i + 1) : 0;
}

/* The value of the last X-QKD-Key-ID field, unfolded and trimmed, when it
 * is 1..MIME_MAX_ID_LEN visible ASCII characters: the hint "k/<value>". */
static int find_hint(const uint8_t *h, size_t len, char **hint_r)
{
    char val[MIME_MAX_ID_LEN + 1];
    size_t vlen = 0;
    bool found = false, valid = false;
    size_t pos = 0;
    while (pos < len) {
        size_t eol = pos;
        while (eol < len && h[eol] != '\n')
            eol++;
        size_t line_end = eol;
        if (line_end > pos && h[line_end - 1] == '\r')
            line_end--;
        if (line_end == pos)
            break; /* blank line: end of the header */
        int colon = h[pos] != ' ' && h[pos] != '\t'
                        ? name_is(h + pos, line_end - pos, "X-QKD-Key-ID")
                        : 0;
        if (colon > 0) {
            /* the value: this line after the colon and its continuations */
            found = true;
            valid = true;
            vlen = 0;
            size_t p = pos + (size_t)colon;
            size_t lend = line_end;
            for (;;) {
                for (; p < lend; p++) {
                    uint8_t c = h[p];
                    if (c == ' ' || c == '\t')
                        continue; /* only around the value: a key_ID has none */
                    if (c < 0x21 || c > 0x7e || vlen >= MIME_MAX_ID_LEN)
                        valid = false;
                    else
                        val[vlen++] = (char)c;
                }
                size_t next = eol < len ? eol + 1 : len;
                if (next < len && (h[next] == ' ' || h[next] == '\t')) {
                    eol = next;
                    while (eol < len && h[eol] != '\n')
                        eol++;
                    lend = eol;
                    if (lend > next && h[lend - 1] == '\r')
                        lend--;
                    p = next;
                    continue;
                }
                break;
            }
        }
        pos = eol < len ? eol + 1 : len;
    }
    *hint_r = NULL;
    if (!found || !valid || vlen == 0)
        return 0;
    char *s = malloc(vlen + 3);
    if (s == NULL)
        return PROTECT_IN_ENOMEM;
    s[0] = 'k';
    s[1] = '/';
    memcpy(s + 2, val, vlen);
    s[vlen + 2] = '\0';
    *hint_r = s;
    return 0;
}

static bool has_blank_line(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n')
            continue;
        if (i == 0 || (i + 1 < len && p[i + 1] == '\n') ||
            (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n'))
            return true;
    }
    return len >= 2 && p[0] == '\r' && p[1] == '\n';
}

int protect_in_classify(const void *hdr, size_t len, char **hint_r)
{
    if (hint_r != NULL)
        *hint_r = NULL;
    if (hdr == NULL && len > 0)
        return PROTECT_IN_EINVAL;
    /* mime's own reader decides whether the Content-Type claims QKD-MIME
     * (FORMAT-SPEC.md 2.6): NOT_ENCRYPTED is a plain message; anything
     * else (the header alone cannot parse as a whole message) claims it. */
    struct mime_info *info = NULL;
    int ret;
    if (has_blank_line(hdr, len)) {
        ret = mime_inspect_mem(hdr, len, &info, NULL);
    } else {
        /* mime reads a header only up to its blank line: add one (a
         * probe's answer has it; a bare header block may not) */
        uint8_t *copy = malloc(len + 2);
        if (copy == NULL)
            return PROTECT_IN_ENOMEM;
        if (len > 0)
            memcpy(copy, hdr, len);
        size_t n = len;
        if (n > 0 && copy[n - 1] != '\n')
            copy[n++] = '\n';
        copy[n++] = '\n';
        ret = mime_inspect_mem(copy, n, &info, NULL);
        free(copy);
    }
    mime_info_free(&info);
    if (ret == MIME_ERR_NOT_ENCRYPTED)
        return 0;
    if (ret == MIME_ERR_NOMEM)
        return PROTECT_IN_ENOMEM;
    if (hint_r != NULL && find_hint(hdr, len, hint_r) < 0)
        return PROTECT_IN_ENOMEM;
    if (hint_r != NULL && *hint_r != NULL) {
        /* the probe's trace fields name which delivered copy this is */
        char tag[PI_TRANSIT_TAG_LEN + 1];
        int t = pi_transit_tag(hdr, len, tag);
        char *tagged = t >= 0 ? pi_id_tagged(*hint_r, tag) : NULL;
        free(*hint_r);
        *hint_r = tagged;
        if (tagged == NULL)
            return PROTECT_IN_ENOMEM;
    }
    return 1;
}
