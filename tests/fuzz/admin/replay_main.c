/* Runs the fuzz target over every file of a folder (the seeds): the
 * regression test of fuzz_admin_mailconf in builds without libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    DIR *d = opendir(argv[1]);
    if (d == NULL)
        return 1;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        static uint8_t buf[1 << 16];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        for (size_t cut = 0; cut <= len; cut++)
            LLVMFuzzerTestOneInput(buf, cut); /* every prefix too */
        n++;
    }
    closedir(d);
    printf("%d seeds replayed\n", n);
    return n > 0 ? 0 : 1;
}
