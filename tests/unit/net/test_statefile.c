/* statefile: private state folders and files whatever the umask (issue 10,
 * defect 5: key material world-readable at rest). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "statefile.h"

static char base[512];

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "%s/statefile-XXXXXX", QUMAIL_TEST_TMP);
    return mkdtemp(base) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void test_created_private_whatever_the_umask(void **state)
{
    (void)state;
    mode_t old = umask(0); /* the most permissive umask */
    char dir[600], file[700];
    snprintf(dir, sizeof(dir), "%s/state", base);
    snprintf(file, sizeof(file), "%s/keys.db", dir);
    char *warning = NULL, *error = NULL;
    assert_int_equal(statefile_dir(dir, &warning, &error), 0);
    assert_null(warning);
    assert_int_equal(mode_of(dir), 0700);
    assert_int_equal(statefile_private(file, 1, &warning, &error), 0);
    assert_null(warning);
    assert_int_equal(mode_of(file), 0600);
    umask(old);
}

/* A umask that takes the owner's own bits away: created folders (the
 * missing parents too) are 0700 all the same, usable by their owner. */
static void test_created_usable_under_narrow_umask(void **state)
{
    (void)state;
    mode_t old = umask(0277);
    char dir[700], parent[600];
    snprintf(parent, sizeof(parent), "%s/p1", base);
    snprintf(dir, sizeof(dir), "%s/p2", parent);
    char *warning = NULL, *error = NULL;
    assert_int_equal(statefile_dir(dir, &warning, &error), 0);
    umask(old);
    assert_null(warning);
    assert_int_equal(mode_of(parent), 0700);
    assert_int_equal(mode_of(dir), 0700);
}

static void test_existing_open_file_fixed_and_reported(void **state)
{
    (void)state;
    char file[700];
    snprintf(file, sizeof(file), "%s/old.db", base);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    chmod(file, 0644);
    char *warning = NULL, *error = NULL;
    assert_int_equal(statefile_private(file, 0, &warning, &error), 0);
    assert_non_null(warning);
    assert_non_null(strstr(warning, "0644"));
    free(warning);
    assert_int_equal(mode_of(file), 0600);
    /* a missing file without create is fine and stays missing */
    snprintf(file, sizeof(file), "%s/none.db-wal", base);
    assert_int_equal(statefile_private(file, 0, &warning, &error), 0);
    assert_int_not_equal(access(file, F_OK), 0);
}

static void test_symlink_and_writable_folder_refused(void **state)
{
    (void)state;
    char link[700], target[700], dir[700];
    snprintf(target, sizeof(target), "%s/target", base);
    snprintf(link, sizeof(link), "%s/link.db", base);
    FILE *f = fopen(target, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(symlink(target, link), 0);
    char *warning = NULL, *error = NULL;
    assert_int_equal(statefile_private(link, 1, &warning, &error), -1);
    assert_int_equal(errno, EPERM);
    assert_non_null(strstr(error, "symbolic link"));
    free(error);

    snprintf(dir, sizeof(dir), "%s/open", base);
    assert_int_equal(mkdir(dir, 0700), 0);
    chmod(dir, 0777);
    assert_int_equal(statefile_dir(dir, &warning, &error), -1);
    assert_int_equal(errno, EPERM);
    assert_non_null(strstr(error, "written by everyone"));
    free(error);
    chmod(dir, 0755); /* listable only: accepted with a warning */
    assert_int_equal(statefile_dir(dir, &warning, &error), 0);
    assert_non_null(warning);
    free(warning);
    assert_int_equal(statefile_dir(target, &warning, &error), -1);
    assert_int_equal(errno, ENOTDIR);
    assert_non_null(strstr(error, "not a folder"));
    free(error);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_created_private_whatever_the_umask),
        cmocka_unit_test(test_created_usable_under_narrow_umask),
        cmocka_unit_test(test_existing_open_file_fixed_and_reported),
        cmocka_unit_test(test_symlink_and_writable_folder_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
