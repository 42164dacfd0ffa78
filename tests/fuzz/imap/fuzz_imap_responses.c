/* libFuzzer target: server responses. The tokenizer in response role
 * (fuzz_imap_common.h), then imap_resp over the payload revealed whole, in
 * chunks and byte by byte: identical event traces, every event's raw bytes
 * exactly the consumed input (so relaying raw bytes reproduces the
 * stream), FETCH item names bounded, item ends only at the item's depth,
 * literal data never beyond its size. Then the relay fast path
 * (imap_resp_relay_rest after every DATA_BEGIN): the same raw-bytes rule,
 * cut-independent, and wherever the full parse understood the input, the
 * responses end at exactly the same offsets. */
#include "fuzz_imap_common.h"

#include "imap_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void trace_event(struct bytes *tr, const struct imap_resp_event *ev)
{
    char buf[2200];
    int n = 0;
    switch (ev->kind) {
    case IMAP_RESP_TAGGED:
        n = snprintf(buf, sizeof(buf), "T(%.*s %d %.*s)", (int)ev->tag_len, ev->tag,
                     (int)ev->status, (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_CONTINUATION:
        n = snprintf(buf, sizeof(buf), "C(%.*s)", (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_STATUS:
        n = snprintf(buf, sizeof(buf), "S(%d %.*s)", (int)ev->status, (int)ev->text_len, ev->text);
        break;
    case IMAP_RESP_DATA_BEGIN:
        n = snprintf(buf, sizeof(buf), "B(%d %u %.*s)", ev->has_number, ev->number,
                     (int)ev->name_len, ev->name);
        break;
    case IMAP_RESP_FETCH_ITEM:
        CHECK(ev->item != NULL && ev->item_len == strlen(ev->item));
        CHECK(ev->item_len <= IMAP_FETCH_ITEM_MAX);
        n = snprintf(buf, sizeof(buf), "I(%s %u)", ev->item, ev->item_index);
        break;
    case IMAP_RESP_DATA_TOKEN:
        if (ev->tok.type == IMAP_TOK_LITERAL_DATA) {
            /* chunking differs between cuts: trace bytes only */
            bytes_put(tr, ev->tok.str, ev->tok.len);
            if (ev->tok.literal_size == 0)
                n = snprintf(buf, sizeof(buf), "|%d", ev->item_end);
            break;
        }
        n = snprintf(buf, sizeof(buf), "K(%d %.*s %d)", (int)ev->tok.type, (int)ev->tok.len,
                     ev->tok.str ? ev->tok.str : "", ev->item_end);
        break;
    case IMAP_RESP_DATA_END:
        n = snprintf(buf, sizeof(buf), "E;");
        break;
    }
    if (n > 0)
        bytes_put(tr, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* ends: offsets where responses ended (line events and DATA_END). */
static void resp_run(const struct fuzz_input *in, int mode, bool fast, struct bytes *tr,
                     struct bytes *ends)
{
    imap_resp *r = imap_resp_new(&in->lim);
    CHECK(r != NULL);
    size_t pos = 0, k = 0;
    size_t avail = fuzz_next_chunk(in, mode, &k, in->len);
    struct bytes raw = {0};
    for (;;) {
        size_t n = avail - pos;
        char *copy = fuzz_copy(in->payload + pos, n);
        struct imap_resp_event ev;
        size_t used = (size_t)-1;
        const char *err = NULL;
        int rc = imap_resp_next(r, copy, n, &used, &ev, &err);
        if (rc == IMAP_PARSE_TOKEN) {
            CHECK(used == ev.raw_len && ev.raw == copy && used <= n);
            CHECK(used > 0 || ev.kind == IMAP_RESP_FETCH_ITEM);
            bytes_put(&raw, ev.raw, ev.raw_len);
            if (!fast)
                trace_event(tr, &ev);
            if (fast && ev.kind == IMAP_RESP_DATA_BEGIN)
                imap_resp_relay_rest(r);
            if (ev.kind == IMAP_RESP_DATA_END || ev.kind == IMAP_RESP_TAGGED ||
                ev.kind == IMAP_RESP_STATUS || ev.kind == IMAP_RESP_CONTINUATION) {
                size_t off = pos + used;
                if (ends)
                    bytes_put(ends, &off, sizeof(off));
            }
            if (ev.item_end)
                CHECK(ev.fetch && ev.kind == IMAP_RESP_DATA_TOKEN);
        }
        free(copy);
        if (rc == IMAP_PARSE_ERROR) {
            CHECK(err != NULL && used == 0);
            if (!fast)
                bytes_put(tr, "!ERR", 4);
            break;
        }
        if (rc == IMAP_PARSE_MORE) {
            CHECK(used == 0);
            if (avail == in->len)
                break;
            avail += fuzz_next_chunk(in, mode, &k, in->len - avail);
            continue;
        }
        pos += used;
    }
    /* the events' raw bytes are exactly the consumed input */
    CHECK(raw.len == pos && (pos == 0 || memcmp(raw.p, in->payload, pos) == 0));
    char buf[32];
    int bl = snprintf(buf, sizeof(buf), "#%zu", pos);
    bytes_put(tr, buf, (size_t)bl);
    bytes_free(&raw);
    imap_resp_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in;
    if (!fuzz_input_parse(data, size, &in))
        return 0;
    fuzz_tokenizer(IMAP_PARSER_RESPONSES, &in);
    fuzz_args_first_line(IMAP_PARSER_RESPONSES, &in);
    struct bytes whole = {0}, chunks = {0}, bytes1 = {0}, ends = {0};
    resp_run(&in, 0, false, &whole, &ends);
    resp_run(&in, 1, false, &chunks, NULL);
    CHECK(bytes_eq(&whole, &chunks));
    if (in.len <= 4096) {
        resp_run(&in, 2, false, &bytes1, NULL);
        CHECK(bytes_eq(&whole, &bytes1));
    }
    /* the fast path: cut-independent, and it agrees with the full parse
     * on every response end the full parse reached */
    struct bytes f_whole = {0}, f_chunks = {0}, f_ends = {0}, f_ends2 = {0};
    resp_run(&in, 0, true, &f_whole, &f_ends);
    resp_run(&in, in.len <= 4096 ? 2 : 1, true, &f_chunks, &f_ends2);
    CHECK(bytes_eq(&f_ends, &f_ends2));
    size_t common = ends.len < f_ends.len ? ends.len : f_ends.len;
    CHECK(common == 0 || memcmp(ends.p, f_ends.p, common) == 0);
    /* where the full parse read further, the fast one did too */
    CHECK(f_ends.len >= ends.len);
    bytes_free(&f_whole);
    bytes_free(&f_chunks);
    bytes_free(&f_ends);
    bytes_free(&f_ends2);
    bytes_free(&ends);
    bytes_free(&whole);
    bytes_free(&chunks);
    bytes_free(&bytes1);
    return 0;
}
