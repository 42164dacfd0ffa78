/* IMAP-ish tokens for the regress driver of both IMAP targets
 * (common/fuzz_driver.c with common/fuzz_token_gen.c): inputs are built
 * from these, not mutated from the seeds. */
#include <stddef.h>

const char *const fuzz_driver_tokens[] = {
    "\r\n", "\n", "\r", " ", "  ", "(", ")", ")(", "\"", "\\", "\\\"", "{", "}",
    "{5}\r\n", "{0}\r\n", "{3+}\r\n", "~{2}\r\n", "{12}\n", "{4096+}\r\n",
    "{99999999999999999999}\r\n", "~", "~foo", "NIL", "nil", "a1 ", "* ", "+ ", "+\r\n",
    "OK ", "NO ", "BAD ", "BYE ", "PREAUTH ", "[CAPABILITY IMAP4rev1 LITERAL+]", "[ALERT]",
    "LOGIN ", "AUTHENTICATE PLAIN ", "AGFsaWNlAHNlY3JldA==", "FETCH ", "UID ", "1:*", "1,3:5",
    "$", "BODY[]", "BODY.PEEK[HEADER.FIELDS (From To)]", "BODY[1.2.MIME]<0.100>",
    "BINARY[1]", "RFC822.SIZE", "FLAGS", "(\\Seen \\Deleted)", "ENVELOPE", "BODYSTRUCTURE",
    "APPEND INBOX ", "IDLE", "DONE", "CAPABILITY", "EXISTS", "EXPUNGE", "\"INBOX\"",
    "\xc3\xa9", "\0", "\x7f", "%", "*", "]", "[", "<0.10>",
    NULL,
};
