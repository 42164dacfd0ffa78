/* smtp_load: the message every client sends.
 *
 * Layout on the wire, per message:
 *   "Message-ID: <CCCCCCCC.SSSSSSSSSSSSSSSS@smtp-load.invalid>\r\n"  (per message)
 *   From, To, Subject, Date, MIME headers, blank line, body, ".\r\n" (shared)
 * The body is lines of at most 78 characters + CRLF, none starting with
 * '.', so no dot-stuffing is needed. The message size (everything before
 * ".\r\n") is the requested size, or the header size when that is larger. */
#include "smtp_load.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSGID_FMT "Message-ID: <%08x.%016llx@smtp-load.invalid>\r\n"

void sl_msg_id_line(char out[SL_MSGID_LEN + 1], unsigned client, uint64_t seq)
{
    snprintf(out, SL_MSGID_LEN + 1, MSGID_FMT, client, (unsigned long long)seq);
}

/* Appends n bytes at buf + *len; the caller sized buf. */
static void put(char *buf, size_t *len, const char *s, size_t n)
{
    memcpy(buf + *len, s, n);
    *len += n;
}

int sl_msg_build(struct sl_msg *m, const struct sl_opts *o, const char **error_r)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char line[SL_MSGID_LEN + 1];
    memset(m, 0, sizeof(*m));

    /* the Message-ID format must have exactly the advertised length */
    if (snprintf(line, sizeof(line), MSGID_FMT, 0u, 0ull) != SL_MSGID_LEN) {
        *error_r = "internal: Message-ID length";
        return -1;
    }

    /* header size: each address at most 256 bytes (checked by load_opts) */
    size_t head_cap = 512 + strlen(o->from) + o->nto * (256 + 4);
    char *head = malloc(head_cap);
    if (head == NULL) {
        *error_r = "out of memory";
        return -1;
    }
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    size_t hl = 0;
    int n = snprintf(head, head_cap, "From: <%s>\r\nTo: ", o->from);
    hl = (size_t)n;
    for (size_t i = 0; i < o->nto; i++) {
        n = snprintf(head + hl, head_cap - hl, "%s<%s>", i ? ", " : "", o->to[i]);
        hl += (size_t)n;
    }
    n = snprintf(head + hl, head_cap - hl,
                 "\r\nSubject: smtp_load test message\r\nDate: %s\r\n"
                 "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                 date);
    hl += (size_t)n;

    size_t fixed = SL_MSGID_LEN + hl;
    size_t body = o->size > fixed ? o->size - fixed : 0;
    if (body == 1)
        body = 2; /* the smallest body line is an empty "\r\n" */
    /* shared = head + body + ".\r\n"; body <= SL_MAX_SIZE, so no overflow */
    m->shared_len = hl + body + 3;
    m->shared = malloc(m->shared_len);
    if (m->shared == NULL) {
        free(head);
        *error_r = "out of memory";
        return -1;
    }
    size_t len = 0;
    put(m->shared, &len, head, hl);
    free(head);

    size_t rem = body;
    unsigned lineno = 0;
    while (rem > 0) {
        size_t chars;
        if (rem > 80)
            chars = 76;
        else if (rem <= 78)
            chars = rem - 2;      /* last line (may be empty) */
        else
            chars = rem - 4;      /* 79, 80: leave an empty last line */
        for (size_t i = 0; i < chars; i++)
            m->shared[len++] = alphabet[(lineno + i) % (sizeof(alphabet) - 1)];
        put(m->shared, &len, "\r\n", 2);
        rem -= chars + 2;
        lineno++;
    }
    put(m->shared, &len, ".\r\n", 3);
    m->size = SL_MSGID_LEN + m->shared_len - 3;
    return 0;
}

void sl_msg_clear(struct sl_msg *m)
{
    free(m->shared);
    memset(m, 0, sizeof(*m));
}
