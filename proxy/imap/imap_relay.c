/* Upstream responses to the client. The fast path relays every event as a
 * span of the upstream's input (written once per batch); capabilities are
 * filtered; a claimed FETCH goes item by item through the FETCH hooks. */
#include "imap_session_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define COLLECT_MAX 8192

static bool name_is(const struct imap_resp_event *ev, const char *name)
{
    size_t n = strlen(name);
    return ev->name_len == n && strncasecmp(ev->name, name, n) == 0;
}

/* ---- lines carrying [CAPABILITY ...] ------------------------------------------ */

/* Relays a tagged, status or continuation line; a CAPABILITY response
 * code in it is filtered (and teaches the upstream client the list). */
void imap_relay_line_with_caps(imap_session *s, const struct imap_resp_event *ev)
{
    const char *code, *args;
    size_t cl, al;
    if (ev->kind == IMAP_RESP_CONTINUATION ||
        !imap_resp_code(ev->text, ev->text_len, &code, &cl, &args, &al) || cl != 10 ||
        strncasecmp(code, "CAPABILITY", 10) != 0) {
        imap_out_span(s, ev->raw, ev->raw_len);
        return;
    }
    if (s->up)
        imap_client_set_capabilities(s->up, args, al);
    struct imap_cap_ctx ctx = imap_cap_context(s);
    char caps[4096];
    if (imap_cap_filter(args, al, &ctx, caps, sizeof(caps)) == 0)
        snprintf(caps, sizeof(caps), "IMAP4rev1");
    const char *rest = args + al + 1; /* after ']' */
    size_t rest_len = (size_t)(ev->text + ev->text_len - rest);
    char line[8192];
    int n;
    if (ev->kind == IMAP_RESP_TAGGED)
        n = snprintf(line, sizeof(line), "%.*s %s [CAPABILITY %s]%.*s\r\n", (int)ev->tag_len,
                     ev->tag, imap_status_name(ev->status), caps, (int)rest_len, rest);
    else
        n = snprintf(line, sizeof(line), "* %s [CAPABILITY %s]%.*s\r\n",
                     imap_status_name(ev->status), caps, (int)rest_len, rest);
    if (n > 0)
        imap_out_bytes(s, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* ---- collected responses: CAPABILITY, ENABLED ------------------------------------- */

static void collect_add(imap_session *s, const struct imap_token *t)
{
    if (t->type != IMAP_TOK_ATOM || !s->collect)
        return;
    if (s->collect_len + t->len + 2 > COLLECT_MAX)
        return;
    if (s->collect_len)
        s->collect[s->collect_len++] = ' ';
    memcpy(s->collect + s->collect_len, t->str, t->len);
    s->collect_len += t->len;
    s->collect[s->collect_len] = '\0';
}

static void collect_end(imap_session *s, enum relay_mode mode)
{
    char out[COLLECT_MAX + 32];
    const char *list = s->collect ? s->collect : "";
    size_t len = s->collect ? s->collect_len : 0;
    if (mode == RELAY_CAPS) {
        if (s->up)
            imap_client_set_capabilities(s->up, list, len);
        struct imap_cap_ctx ctx = imap_cap_context(s);
        char caps[COLLECT_MAX];
        if (imap_cap_filter(list, len, &ctx, caps, sizeof(caps)) == 0)
            snprintf(caps, sizeof(caps), "IMAP4rev1");
        int n = snprintf(out, sizeof(out), "* CAPABILITY %s\r\n", caps);
        imap_out_bytes(s, out, (size_t)n);
        return;
    }
    /* ENABLED: only what the proxy lets be enabled */
    size_t n = (size_t)snprintf(out, sizeof(out), "* ENABLED");
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *a = p;
        while (p < end && *p != ' ')
            p++;
        if (imap_cap_enable_allowed(a, (size_t)(p - a)) && n + (size_t)(p - a) + 3 < sizeof(out)) {
            out[n++] = ' ';
            memcpy(out + n, a, (size_t)(p - a));
            n += (size_t)(p - a);
        }
        while (p < end && *p == ' ')
            p++;
    }
    n += (size_t)snprintf(out + n, sizeof(out) - n, "\r\n");
    imap_out_bytes(s, out, n);
}

/* ---- claimed FETCH responses --------------------------------------------------------- */

static struct imap_command *claimed_fetch(imap_session *s)
{
    for (struct imap_command *c = s->head; c; c = c->next)
        if (c->fetch_ctx)
            return c;
    return NULL;
}

static void fetch_item(imap_session *s, const struct imap_resp_event *ev)
{
    const struct imap_fetch_hooks *h = &s->hooks.fetch;
    void *ctx = s->fr.cmd ? s->fr.cmd->fetch_ctx : NULL;
    s->fr.verdict = ctx && h->item ? h->item(s->hooks_ctx, s, ctx, ev->item, ev->item_index)
                                   : IMAP_FETCH_PASS;
    if (s->fr.verdict != IMAP_FETCH_PASS)
        return;
    /* the item's own bytes, without the '(' or space before it */
    const char *p = ev->raw, *end = ev->raw + ev->raw_len;
    while (p < end && (*p == '(' || *p == ' '))
        p++;
    imap_fetch_prefix(s);
    imap_out_span(s, p, (size_t)(end - p));
}

static void fetch_token(imap_session *s, const struct imap_resp_event *ev)
{
    switch (s->fr.verdict) {
    case IMAP_FETCH_PASS:
        imap_out_span(s, ev->raw, ev->raw_len);
        break;
    case IMAP_FETCH_TAKE:
        if (s->fr.cmd && s->fr.cmd->fetch_ctx && s->hooks.fetch.value)
            s->hooks.fetch.value(s->hooks_ctx, s, s->fr.cmd->fetch_ctx, &ev->tok, ev->item_end);
        break;
    case IMAP_FETCH_DROP:
        break;
    }
}

/* Returns 1 when the hook holds the response open (upstream paused). */
static int fetch_end(imap_session *s)
{
    const struct imap_fetch_hooks *h = &s->hooks.fetch;
    void *ctx = s->fr.cmd ? s->fr.cmd->fetch_ctx : NULL;
    enum imap_fetch_flow flow =
        ctx && h->response_end ? h->response_end(s->hooks_ctx, s, ctx) : IMAP_FETCH_CONTINUE;
    if (flow == IMAP_FETCH_WAIT && !s->closing) {
        s->fr.waiting = true;
        return 1;
    }
    if (s->fr.open)
        imap_out_bytes(s, ")\r\n", 3);
    s->fr.open = false;
    s->relay = RELAY_NONE;
    imap_local_flush(s);
    return 0;
}

/* ---- the event entry point ------------------------------------------------------------- */

int imap_relay_response(void *arg, imap_client *c, const struct imap_resp_event *ev)
{
    imap_session *s = arg;
    (void)c;
    if (s->closing)
        return 1;
    switch (ev->kind) {
    case IMAP_RESP_TAGGED:
    case IMAP_RESP_CONTINUATION:
        /* nothing of ours is waiting for it: the streams disagree */
        qlog_warn("imap %s: unexpected %s from upstream", s->id,
                  ev->kind == IMAP_RESP_TAGGED ? "tagged response" : "continuation");
        imap_hold(s);
        imap_out_flush(s);
        imap_bye_close(s, "Internal error: upstream out of step.", "upstream protocol error");
        imap_release(s);
        return 1;
    case IMAP_RESP_STATUS:
        if (ev->status == IMAP_STATUS_BYE)
            s->upstream_bye = true;
        imap_relay_line_with_caps(s, ev);
        return 0;
    case IMAP_RESP_DATA_BEGIN:
        if (name_is(ev, "EXISTS") || name_is(ev, "EXPUNGE") || name_is(ev, "VANISHED"))
            s->mailbox_changes++;
        if (s->head && s->head->internal && !s->head->fetch_ctx && s->n_inflight == 1) {
            /* the proxy's own CAPABILITY after login: kept, not relayed */
            s->relay = RELAY_SWALLOW;
            s->swallow_caps = name_is(ev, "CAPABILITY");
            if (s->hooks.append.list && name_is(ev, "LIST"))
                imap_list_begin(s); /* the proxy's own LIST (APPEND) */
            if (!s->collect)
                s->collect = malloc(COLLECT_MAX + 1);
            s->collect_len = 0;
            return 0;
        }
        if (s->head && s->head->internal && s->head->fetch_ctx && s->hooks.fetch.own_data &&
            (name_is(ev, "SEARCH") || name_is(ev, "ESEARCH") || name_is(ev, "SORT"))) {
            s->relay = RELAY_OWN;
            s->hooks.fetch.own_data(s->hooks_ctx, s, s->head->fetch_ctx, ev);
            return s->closing ? 1 : 0;
        }
        if (name_is(ev, "CAPABILITY") || name_is(ev, "ENABLED")) {
            s->relay = name_is(ev, "CAPABILITY") ? RELAY_CAPS : RELAY_ENABLED;
            if (!s->collect)
                s->collect = malloc(COLLECT_MAX + 1);
            s->collect_len = 0;
            if (s->collect)
                s->collect[0] = '\0';
            return 0;
        }
        if (s->hooks.append.list && (name_is(ev, "LIST") || name_is(ev, "LSUB"))) {
            /* relayed unchanged; its SPECIAL-USE attributes are noted */
            s->relay = RELAY_LIST;
            imap_list_begin(s);
            imap_out_span(s, ev->raw, ev->raw_len);
            return 0;
        }
        if (ev->fetch && s->hooks.fetch.command) {
            struct imap_command *fc = claimed_fetch(s);
            if (fc) {
                s->relay = RELAY_FETCH;
                s->fr.cmd = fc;
                s->fr.seq = ev->number;
                s->fr.open = false;
                s->fr.verdict = IMAP_FETCH_PASS;
                if (s->hooks.fetch.response_begin)
                    s->hooks.fetch.response_begin(s->hooks_ctx, s, fc->fetch_ctx, ev->number);
                return s->closing ? 1 : 0;
            }
        }
        s->relay = RELAY_SPAN;
        imap_out_span(s, ev->raw, ev->raw_len);
        imap_client_relay_rest(c); /* bytes only from here: the fast path */
        return 0;
    case IMAP_RESP_FETCH_ITEM:
        if (s->relay == RELAY_FETCH)
            fetch_item(s, ev);
        else if (s->relay == RELAY_SPAN)
            imap_out_span(s, ev->raw, ev->raw_len);
        return s->closing ? 1 : 0;
    case IMAP_RESP_DATA_TOKEN:
        switch (s->relay) {
        case RELAY_SPAN:
            imap_out_span(s, ev->raw, ev->raw_len);
            break;
        case RELAY_CAPS:
        case RELAY_ENABLED:
        case RELAY_SWALLOW:
            collect_add(s, &ev->tok);
            imap_list_token(s, &ev->tok);
            break;
        case RELAY_LIST:
            imap_out_span(s, ev->raw, ev->raw_len);
            imap_list_token(s, &ev->tok);
            break;
        case RELAY_FETCH:
            fetch_token(s, ev);
            break;
        case RELAY_OWN:
            if (s->head && s->head->fetch_ctx && s->hooks.fetch.own_data)
                s->hooks.fetch.own_data(s->hooks_ctx, s, s->head->fetch_ctx, ev);
            break;
        case RELAY_NONE:
            break;
        }
        return s->closing ? 1 : 0;
    case IMAP_RESP_DATA_END: {
        enum relay_mode mode = s->relay;
        int rc = 0;
        switch (mode) {
        case RELAY_SPAN:
            imap_out_span(s, ev->raw, ev->raw_len);
            break;
        case RELAY_CAPS:
        case RELAY_ENABLED:
            collect_end(s, mode);
            break;
        case RELAY_SWALLOW:
            /* the internal CAPABILITY's list, kept, not relayed */
            if (s->swallow_caps && s->up && s->collect && s->collect_len)
                imap_client_set_capabilities(s->up, s->collect, s->collect_len);
            imap_list_end(s, true);
            break;
        case RELAY_LIST:
            imap_out_span(s, ev->raw, ev->raw_len);
            imap_list_end(s, false);
            break;
        case RELAY_FETCH:
            return fetch_end(s);
        case RELAY_OWN:
            if (s->head && s->head->fetch_ctx && s->hooks.fetch.own_data)
                s->hooks.fetch.own_data(s->hooks_ctx, s, s->head->fetch_ctx, ev);
            break;
        case RELAY_NONE:
            break;
        }
        s->relay = RELAY_NONE;
        /* rare (CAPABILITY, ENABLED): not kept for the idle session */
        free(s->collect);
        s->collect = NULL;
        s->collect_len = 0;
        imap_local_flush(s);
        return rc;
    }
    }
    return 0;
}
