/* Notice messages: what a reader sees instead of a message that cannot be
 * decrypted for them. A small text/plain UTF-8 message whose From, To, Cc,
 * Date, Message-ID, In-Reply-To and References are copied from the
 * encrypted message's outer header (so the mailbox list and threads stay
 * as they were), with the Subject prefixed, and a body that says what
 * happened, which keys, and what to do. Deterministic: the same facts give
 * the same bytes, so every FETCH item of one notice agrees. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "incoming_internal.h"

#define SUBJECT_PREFIX "[QuMail: not decrypted]"
#define MAX_FIELD 16384       /* a longer outer field is left out */
#define MAX_COPIED 65536      /* all copied fields together */
#define MAX_KEYS_LISTED 8
#define MAX_DETAIL 400

static const char *const reason_names[PROTECT_IN_REASON_COUNT] = {
    [PROTECT_IN_DECRYPTED] = "decrypted",
    [PROTECT_IN_R_MALFORMED] = "malformed",
    [PROTECT_IN_R_UNSUPPORTED] = "unsupported",
    [PROTECT_IN_R_AUTH_FAILED] = "authentication-failed",
    [PROTECT_IN_R_NOT_ALLOWED] = "not-allowed",
    [PROTECT_IN_R_UNBOUND] = "unbound",
    [PROTECT_IN_R_NO_IDENTITY] = "no-identity",
    [PROTECT_IN_R_NO_SENDER_RULE] = "no-sender-rule",
    [PROTECT_IN_R_SENDER_MISMATCH] = "sender-mismatch",
    [PROTECT_IN_R_NO_LINK] = "no-kme-link",
    [PROTECT_IN_R_KME_UNAVAILABLE] = "kme-unavailable",
    [PROTECT_IN_R_KEY_UNKNOWN] = "key-unknown",
    [PROTECT_IN_R_KME_REFUSED] = "kme-refused",
    [PROTECT_IN_R_KEY_SOURCE] = "key-source-unsupported",
    [PROTECT_IN_R_VAULT] = "vault-error",
    [PROTECT_IN_R_FETCH] = "fetch-failed",
    [PROTECT_IN_R_TOO_LARGE] = "too-large",
    [PROTECT_IN_R_INTERNAL] = "internal-error",
};

const char *protect_in_reason_name(enum protect_in_reason reason)
{
    if ((unsigned)reason < PROTECT_IN_REASON_COUNT && reason_names[reason] != NULL)
        return reason_names[reason];
    return "unknown";
}

/* What happened, and what to do: one paragraph each, plain words. */
struct text {
    const char *what;
    const char *todo;
};

static const struct text texts[PROTECT_IN_REASON_COUNT] = {
    [PROTECT_IN_R_MALFORMED] = {
        "The message says it is QuMail-encrypted, but its structure is broken "
        "(it was damaged in transit, or it is not a genuine QuMail message).",
        "Ask the sender to send it again. If many messages look like this, "
        "tell your administrator."},
    [PROTECT_IN_R_UNSUPPORTED] = {
        "The message was encrypted with a format version or algorithm this "
        "gateway does not support.",
        "Tell your administrator: the gateway may need an update."},
    [PROTECT_IN_R_AUTH_FAILED] = {
        "The message failed its integrity check: it was altered after it was "
        "encrypted, or the keys do not belong to it. Nothing of it is shown, "
        "because it cannot be trusted.",
        "Ask the sender to send it again, and tell your administrator: an "
        "altered message can be a sign of an attack."},
    [PROTECT_IN_R_NOT_ALLOWED] = {
        "This copy of the message was encrypted for other recipients, not for "
        "the account you are logged in with (it reached this mailbox by a "
        "forward, a shared folder or a copy).",
        "Read it from the mailbox of a recipient it was sent to. If this "
        "mailbox should be able to read it (a shared mailbox, a forward), ask "
        "your administrator to add the address to your login."},
    [PROTECT_IN_R_UNBOUND] = {
        "This copy of the message names no recipient, and this gateway only "
        "decrypts copies made for the reader.",
        "Ask the sender to send it again through a QuMail gateway, or ask your "
        "administrator."},
    [PROTECT_IN_R_NO_IDENTITY] = {
        "The gateway does not know which mail address your login stands for, "
        "so it cannot tell whether the message was sent to you.",
        "Ask your administrator to map your login to your mail address."},
    [PROTECT_IN_R_NO_SENDER_RULE] = {
        "The gateway has no rule for the sender's address, so it does not know "
        "where to fetch the keys from. It does not guess.",
        "Ask your administrator to add a sender rule for this sender (policy "
        "file, \"sender\" line)."},
    [PROTECT_IN_R_SENDER_MISMATCH] = {
        "The keys of the message do not come from where the sender rule for "
        "its sender says they must (another sending system, another key "
        "server, or a sender address that differs inside the message).",
        "Treat the message with suspicion and tell your administrator."},
    [PROTECT_IN_R_NO_LINK] = {
        "The sender rule for this sender names a key server link that is not "
        "configured on this gateway.",
        "Tell your administrator (configuration: kme_links)."},
    [PROTECT_IN_R_KME_UNAVAILABLE] = {
        "The key server (KME) could not be reached or did not answer, so the "
        "keys for this message could not be fetched. Nothing is lost.",
        "This is usually temporary: open the message again later; the "
        "gateway tries again on every read. If it lasts, tell your "
        "administrator."},
    [PROTECT_IN_R_KEY_UNKNOWN] = {
        "The key server does not know the keys of this message: they were "
        "never delivered to it, have expired, or were already handed out "
        "and are not in this gateway's key vault.",
        "If the message is new, try again in a minute. Otherwise tell your "
        "administrator, quoting the key IDs below."},
    [PROTECT_IN_R_KME_REFUSED] = {
        "The key server refused to give this gateway the keys of the message.",
        "Tell your administrator, quoting the key IDs below."},
    [PROTECT_IN_R_KEY_SOURCE] = {
        "The message uses keys of a kind the sender's key link here cannot "
        "give (for example ETSI GS QKD 004 key-stream chunks, but the link is "
        "not a 004 link of that stream).",
        "Tell your administrator."},
    [PROTECT_IN_R_VAULT] = {
        "The gateway's key vault could not be read or written, so the keys "
        "for this message could not be used safely.",
        "Try again later. If it lasts, tell your administrator (vault)."},
    [PROTECT_IN_R_FETCH] = {
        "The encrypted message could not be read from the mail server.",
        "Try again; if it lasts, tell your administrator."},
    [PROTECT_IN_R_TOO_LARGE] = {
        "The message is larger than this gateway decrypts.",
        "Tell your administrator (max_message_size)."},
    [PROTECT_IN_R_INTERNAL] = {
        "The gateway ran into an internal error (out of memory or an I/O "
        "error) while decrypting the message.",
        "Try again later. If it lasts, tell your administrator."},
};

struct out {
    char *p;
    size_t len, cap;
    bool failed;
};

static void add(struct out *o, const void *d, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 1024;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *np = realloc(o->p, cap);
        if (np == NULL) {
            o->failed = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, d, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void adds(struct out *o, const char *s) { add(o, s, strlen(s)); }

static void addf(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void addf(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    add(o, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Text wrapped at 72 columns, CRLF line ends. */
static void add_wrapped(struct out *o, const char *s)
{
    size_t col = 0;
    while (*s != '\0') {
        const char *w = s;
        while (*s != '\0' && *s != ' ')
            s++;
        size_t wl = (size_t)(s - w);
        if (col > 0 && col + 1 + wl > 72) {
            adds(o, "\r\n");
            col = 0;
        } else if (col > 0) {
            adds(o, " ");
            col++;
        }
        add(o, w, wl);
        col += wl;
        while (*s == ' ')
            s++;
    }
    adds(o, "\r\n");
}

static const char *const copied[] = {
    "From", "To", "Cc", "Date", "Message-ID", "In-Reply-To", "References", NULL,
};

static bool field_named(const uint8_t *p, const struct mime_field *f,
                        const char *name)
{
    return f->name_len == strlen(name) &&
           strncasecmp((const char *)p + f->offset, name, f->name_len) == 0;
}

/* The outer fields we keep, each once (the last occurrence, as ENVELOPE
 * reads them), then our Subject. */
static void add_headers(struct out *o, const struct pi_notice_facts *f)
{
    struct mime_struct *ms = NULL;
    if (f->outer_len > 0 &&
        mime_struct_parse(f->outer, f->outer_len, 0, &ms, NULL) < 0)
        ms = NULL;
    const uint8_t *data = ms != NULL ? mime_struct_data(ms) : NULL;
    const struct mime_part *root = ms != NULL ? mime_struct_root(ms) : NULL;
    size_t total = 0;
    const struct mime_field *subject = NULL;
    for (size_t k = 0; copied[k] != NULL && root != NULL; k++) {
        const struct mime_field *last = NULL;
        for (size_t i = 0; i < root->n_fields; i++) {
            if (field_named(data, &root->fields[i], copied[k]))
                last = &root->fields[i];
        }
        if (last == NULL || last->size > MAX_FIELD || total + last->size > MAX_COPIED)
            continue;
        total += last->size;
        add(o, data + last->offset, (size_t)last->size);
        if (last->size == 0 || data[last->offset + last->size - 1] != '\n')
            adds(o, "\r\n");
    }
    for (size_t i = 0; root != NULL && i < root->n_fields; i++) {
        if (field_named(data, &root->fields[i], "Subject"))
            subject = &root->fields[i];
    }
    adds(o, "Subject: " SUBJECT_PREFIX);
    if (subject != NULL && subject->size <= MAX_FIELD) {
        /* the raw value after the colon, folding kept */
        const uint8_t *v = data + subject->offset + subject->name_len;
        const uint8_t *end = data + subject->offset + subject->size;
        while (v < end && *v != ':')
            v++;
        if (v < end)
            v++;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\n' || end[-1] == '\r'))
            end--;
        if (end > v) {
            adds(o, " ");
            add(o, v, (size_t)(end - v));
        }
    }
    adds(o, "\r\n");
    mime_struct_free(&ms);
}

static void add_keys(struct out *o, const struct mime_info *info)
{
    size_t n = mime_info_key_count(info);
    addf(o, "Keys:           %zu key %s", n, n == 1 ? "entry" : "entries");
    adds(o, "\r\n");
    for (size_t i = 0; i < n && i < MAX_KEYS_LISTED; i++) {
        struct mime_key_entry e;
        if (mime_info_key_entry(info, i, &e) < 0)
            break;
        if (e.kind == MIME_KEY_ETSI014)
            addf(o, "  key ID        %s\r\n", e.key_id);
        else
            addf(o, "  key stream    %s chunks %llu..%llu\r\n", e.ksid,
                 (unsigned long long)e.first_index,
                 (unsigned long long)(e.first_index + e.count - 1));
    }
    if (n > MAX_KEYS_LISTED)
        addf(o, "  (and %zu more)\r\n", n - MAX_KEYS_LISTED);
    addf(o, "Key server:     %s (sending SAE %s, receiving SAE %s)\r\n",
         mime_info_source_kme_id(info), mime_info_master_sae_id(info),
         mime_info_slave_sae_id(info));
    const char *alg = mime_alg_name(mime_info_algorithm(info));
    addf(o, "Algorithm:      %s\r\n", alg != NULL ? alg : "?");
}

int pi_notice_text(const struct pi_notice_facts *f, uint8_t **msg_r,
                   size_t *len_r)
{
    struct out o = {0};
    enum protect_in_reason reason =
        (unsigned)f->reason < PROTECT_IN_REASON_COUNT &&
                f->reason != PROTECT_IN_DECRYPTED
            ? f->reason
            : PROTECT_IN_R_INTERNAL;
    add_headers(&o, f);
    adds(&o, "MIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n");
    addf(&o, "X-QuMail-Notice: %s\r\n\r\n", protect_in_reason_name(reason));

    add_wrapped(&o, "This is a notice from your QuMail gateway, shown in place "
                    "of an encrypted message that it could not decrypt for you.");
    adds(&o, "\r\nWhat happened\r\n\r\n");
    add_wrapped(&o, texts[reason].what);
    adds(&o, "\r\nWhat to do\r\n\r\n");
    add_wrapped(&o, texts[reason].todo);
    adds(&o, "\r\nDetails\r\n\r\n");
    addf(&o, "Reason:         %s\r\n", protect_in_reason_name(reason));
    if (f->info != NULL)
        add_keys(&o, f->info);
    if (f->link != NULL)
        addf(&o, "KME link:       %s\r\n", f->link);
    if (f->login != NULL &&
        (reason == PROTECT_IN_R_NOT_ALLOWED || reason == PROTECT_IN_R_NO_IDENTITY ||
         reason == PROTECT_IN_R_UNBOUND)) {
        char *l = mime_escape(f->login, strlen(f->login));
        addf(&o, "Your login:     %.200s\r\n", l != NULL ? l : "?");
        free(l);
    }
    if (f->detail != NULL && f->detail[0] != '\0') {
        char *d = mime_escape(f->detail, strnlen(f->detail, MAX_DETAIL));
        adds(&o, "Error:          ");
        adds(&o, d != NULL ? d : "?");
        adds(&o, "\r\n");
        free(d);
    }
    if (o.failed) {
        free(o.p);
        return PROTECT_IN_ENOMEM;
    }
    *msg_r = (uint8_t *)o.p;
    *len_r = o.len;
    return 0;
}

int pi_notice_view(const struct pi_notice_facts *f, const char *id,
                   const struct pi_view_hooks *hooks, protect_in_view **v_r)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    int ret = pi_notice_text(f, &msg, &len);
    if (ret < 0)
        return ret;
    ret = pi_view_build(msg, len, f->reason == PROTECT_IN_DECRYPTED
                                      ? PROTECT_IN_R_INTERNAL
                                      : f->reason,
                        id, NULL, hooks, v_r);
    return ret < 0 ? PROTECT_IN_ENOMEM : 0;
}
