/* SMTP-ish tokens for fuzz_smtp_proto_regress (common/fuzz_driver.c with
 * common/fuzz_token_gen.c): inputs are built from these, not mutated from
 * the seeds. */
#include <stddef.h>

const char *const fuzz_driver_tokens[] = {
    ".", "\r", "\n", "\r\n", ".\r\n", "..", ".\r", "\r\n.\r\n", " ", "\t",
    "Bcc:", "bcc :", "BCC\t:", "Bcc: a@b\r\n", " folded\r\n", "To: x\r\n",
    "Subject: s\r\n", "\r\n\r\n", "250-", "250 ", "550 ", "2.1.0 ",
    "5.7.1 ", "354 ", "251-", "MAIL FROM:<a@b.c>", "MAIL FROM:<>",
    "RCPT TO:<x@y>", " SIZE=1000", " BODY=8BITMIME", " SMTPUTF8",
    " RET=HDRS", " ENVID=a+2Bb", " NOTIFY=SUCCESS,FAILURE", " ORCPT=rfc822;a@b",
    "BDAT 10 LAST", "BDAT 0", "EHLO host", "HELO h", "AUTH PLAIN AGVm",
    "DATA", "QUIT", "RSET", "NOOP", "STARTTLS", "VRFY u", "<", ">", ":",
    "\xc3\xa9", "\0", "=", "@",
    NULL,
};
