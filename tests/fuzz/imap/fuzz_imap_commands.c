/* libFuzzer target: client commands. The tokenizer in command role (see
 * fuzz_imap_common.h for the input layout and its invariants), then the
 * command model over each complete line: verb, tag, sequence set, FETCH
 * items (response names bounded, raw ranges inside the line, \Seen only
 * for non-PEEK content), LOGIN, AUTHENTICATE with the SASL user, ID. */
#include "fuzz_imap_common.h"

#include "imap_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void id_cb(void *ctx, const struct imap_arg *k, const struct imap_arg *v)
{
    size_t *n = ctx;
    CHECK(imap_arg_is_astring(k));
    CHECK(v == NULL || imap_arg_is_astring(v));
    (*n)++;
}

static void check_fetch(const struct imap_fetch *f, size_t line_len)
{
    CHECK(f->n_items > 0);
    CHECK(f->set.saved || f->set.count > 0);
    for (size_t i = 0; i < f->set.count; i++)
        CHECK(f->set.ranges[i].lo >= 1 && f->set.ranges[i].lo <= f->set.ranges[i].hi);
    for (size_t i = 0; i < f->n_items; i++) {
        const struct imap_fetch_item *it = &f->items[i];
        CHECK(it->response_name != NULL && strlen(it->response_name) < 1100);
        CHECK(it->raw_off + it->raw_len <= line_len);
        if (it->sets_seen)
            CHECK(!it->peek && imap_fetch_att_is_content(it->att));
        if (it->has_section)
            CHECK(it->att == IMAP_FA_BODY_SECTION || it->att == IMAP_FA_BINARY ||
                  it->att == IMAP_FA_BINARY_SIZE);
        if (it->section.spec == IMAP_SEC_MIME)
            CHECK(it->section.n_parts > 0);
        if (it->section.spec == IMAP_SEC_HEADER_FIELDS ||
            it->section.spec == IMAP_SEC_HEADER_FIELDS_NOT)
            CHECK(it->section.n_fields > 0 && it->section.fields != NULL);
        CHECK(it->section.n_parts <= IMAP_MAX_PARTS);
    }
}

static void fuzz_line(const struct fuzz_input *in, const char *line, size_t len)
{
    struct imap_args a;
    const char *err = NULL;
    if (imap_args_parse(IMAP_PARSER_COMMANDS, &in->lim, line, len, &a, &err) != 0)
        return;
    if (a.count >= 2 && a.args[0].type == IMAP_ARG_ATOM && a.args[1].type == IMAP_ARG_ATOM) {
        (void)imap_tag_valid(a.args[0].str, a.args[0].len);
        bool uid = imap_arg_atom_eq(&a.args[1], "UID");
        size_t skip = uid ? 3 : 2;
        const struct imap_arg *verb_arg = uid && a.count > 2 ? &a.args[2] : &a.args[1];
        enum imap_verb v = verb_arg->type == IMAP_ARG_ATOM
                               ? imap_verb_lookup(verb_arg->str, verb_arg->len)
                               : IMAP_CMD_UNKNOWN;
        CHECK(imap_verb_name(v) != NULL);
        if (skip <= a.count) {
            const struct imap_arg *args = a.args + skip;
            size_t n = a.count - skip;
            if (v == IMAP_CMD_FETCH) {
                struct imap_fetch f;
                if (imap_fetch_parse(args, n, uid, &f, &err) == 0) {
                    check_fetch(&f, a.line_len);
                    imap_fetch_free(&f);
                } else {
                    CHECK(err != NULL);
                }
            } else if (v == IMAP_CMD_LOGIN) {
                char user[256];
                if (imap_login_parse(args, n, user, sizeof(user), &err) == 0)
                    CHECK(strlen(user) < sizeof(user));
            } else if (v == IMAP_CMD_AUTHENTICATE) {
                char mech[64];
                const struct imap_arg *ir;
                if (imap_authenticate_parse(args, n, mech, sizeof(mech), &ir, &err) == 0 && ir) {
                    char user[256];
                    if (imap_sasl_user(mech, ir->str, ir->len, user, sizeof(user)))
                        CHECK(strlen(user) > 0 && strlen(user) < sizeof(user));
                }
            } else if (v == IMAP_CMD_ID) {
                size_t pairs = 0;
                (void)imap_id_parse(args, n, id_cb, &pairs, &err);
            } else if (n > 0 && args[0].type == IMAP_ARG_ATOM) {
                struct imap_seqset s;
                if (imap_seqset_parse(args[0].str, args[0].len, &s, &err) == 0)
                    imap_seqset_free(&s);
            }
        }
    }
    imap_args_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in;
    if (!fuzz_input_parse(data, size, &in))
        return 0;
    fuzz_tokenizer(IMAP_PARSER_COMMANDS, &in);
    fuzz_args_first_line(IMAP_PARSER_COMMANDS, &in);
    /* each line (cut at LF; literals inside are honoured by the tree) */
    char *copy = fuzz_copy(in.payload, in.len);
    size_t pos = 0;
    for (int lines = 0; pos < in.len && lines < 64; lines++) {
        struct imap_args a;
        const char *err;
        int rc = imap_args_parse(IMAP_PARSER_COMMANDS, &in.lim, copy + pos, in.len - pos, &a, &err);
        size_t line_len;
        if (rc == 0) {
            line_len = a.line_len;
            imap_args_free(&a);
        } else {
            const char *lf = memchr(copy + pos, '\n', in.len - pos);
            line_len = lf ? (size_t)(lf - (copy + pos)) + 1 : in.len - pos;
        }
        char *line = fuzz_copy(copy + pos, line_len);
        fuzz_line(&in, line, line_len);
        free(line);
        pos += line_len;
    }
    free(copy);
    return 0;
}
