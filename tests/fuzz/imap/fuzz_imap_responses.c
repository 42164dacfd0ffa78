/* libFuzzer target: server responses. The tokenizer in response role
 * with text mode after status atoms and '+' (see fuzz_imap_common.h). */
#include "fuzz_imap_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in;
    if (!fuzz_input_parse(data, size, &in))
        return 0;
    fuzz_tokenizer(IMAP_PARSER_RESPONSES, &in);
    fuzz_args_first_line(IMAP_PARSER_RESPONSES, &in);
    return 0;
}
