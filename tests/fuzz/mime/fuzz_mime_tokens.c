/* Pieces of the encrypted message format and of MIME headers that random
 * mutations rarely build: inserted by the regression driver
 * (tests/fuzz/common/fuzz_driver.c) into the mime targets' seeds. */
#include <stddef.h>

extern const char *const fuzz_driver_tokens[];

const char *const fuzz_driver_tokens[] = {
    "\r\n", "\n", "\r", " ", "\t", "--", "=", "\"", "(", ")", ";", "%", "%C3",
    "\\", "\x1b", "\xff", "\xc3\xa9", "Version: 2\r\n", "Version: 1",
    "Key: fz-0 256\r\n", "Key-Chunks: ", " 0 2 128 256",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "Recipient-Count: 1\r\n",
    "Recipient: a@b\r\n", "Nonce: 000102030405060708090a0b\r\n",
    "Content-Type: ", "multipart/encrypted", "application/x-qkd-encrypted",
    "protocol=", "boundary=", "Content-Transfer-Encoding: base64\r\n",
    "AAAA", "====", "\r\n\r\n", "0", "18446744073709551615",
    NULL,
};
