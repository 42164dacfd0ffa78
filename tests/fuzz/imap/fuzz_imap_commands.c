/* libFuzzer target: client commands. The tokenizer in command role (see
 * fuzz_imap_common.h for the input layout and its invariants) and the
 * argument tree of the first line. */
#include "fuzz_imap_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in;
    if (!fuzz_input_parse(data, size, &in))
        return 0;
    fuzz_tokenizer(IMAP_PARSER_COMMANDS, &in);
    fuzz_args_first_line(IMAP_PARSER_COMMANDS, &in);
    return 0;
}
