/* Runs the fuzz target over its seeds and a few thousand mutations of them
 * (a regression run in ctest, without libFuzzer). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    DIR *d = opendir(argv[1]);
    if (d == NULL)
        return 2;
    struct dirent *e;
    unsigned seed = 1, runs = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        uint8_t buf[65536];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
        for (int k = 0; k < 500 && n > 0; k++) {
            uint8_t m[65536];
            memcpy(m, buf, n);
            size_t len = n;
            for (int j = 0; j < 4; j++) {
                size_t at = (size_t)rand_r(&seed) % len;
                switch (rand_r(&seed) % 3) {
                case 0: m[at] = (uint8_t)rand_r(&seed); break;
                case 1: len = at + 1; break;
                default: m[at] = (uint8_t)"()\" {}*:,\\\r\n"[rand_r(&seed) % 12]; break;
                }
            }
            LLVMFuzzerTestOneInput(m, len);
            runs++;
        }
    }
    closedir(d);
    printf("%u runs\n", runs);
    return 0;
}
