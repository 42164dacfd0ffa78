/* Runs the fuzz target over files given on the command line (the seeds),
 * in the ordinary build: the target's checks become a regression test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        uint8_t *buf = malloc(1 << 20);
        size_t n = buf != NULL ? fread(buf, 1, 1 << 20, f) : 0;
        fclose(f);
        if (buf == NULL)
            return 1;
        LLVMFuzzerTestOneInput(buf, n);
        /* every prefix too: truncated input is the common hostile case */
        for (size_t k = 0; k < n; k += 1 + n / 64)
            LLVMFuzzerTestOneInput(buf, k);
        free(buf);
    }
    printf("%d inputs\n", argc - 1);
    return 0;
}
