/* Files of the key vault: folders (0700), the database file (0600 whatever
 * the umask; SQLite gives -wal and -shm the database's mode), and the
 * master key file, created atomically on first run.
 *
 * Creating the key: the bytes go to a private temporary file (mkstemp:
 * O_CREAT|O_EXCL, 0600) that is written and fsynced, then published with
 * link(), which fails if the name exists. Of two processes starting at
 * once, one link wins and both then read the winner's key: nobody ever
 * reads a half-written key file, and nobody replaces a key in use. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statefile.h"
#include "vault_internal.h"

static int fail_errno(char **error_r, const char *what, const char *path)
{
    int e = errno;
    return kme_vault_fail(error_r, e == ENOMEM ? KME_VAULT_ENOMEM
                                               : KME_VAULT_EIO,
                          "%s %s: %s", what, path, strerror(e));
}

/* The folder part of path, malloc'd ("." for a bare name). */
static char *dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

int kme_vault_mkdirs(const char *dir, char **error_r)
{
    char *warning = NULL, *err = NULL;
    if (statefile_dir(dir, &warning, &err) == 0) {
        /* Listable by others: accepted, the vault's files are 0600. */
        free(warning);
        return 0;
    }
    int e = errno;
    int code = e == ENOMEM ? KME_VAULT_ENOMEM : e == EPERM ? KME_VAULT_EPERM : KME_VAULT_EIO;
    int ret = kme_vault_fail(error_r, code, "%s", err != NULL ? err : "state folder");
    free(err);
    return ret;
}

int kme_vault_fsync_dir(const char *path, char **error_r)
{
    char *d = dir_of(path);
    if (d == NULL)
        return KME_VAULT_ENOMEM;
    int ret = 0;
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        ret = fail_errno(error_r, "cannot sync folder", d);
    if (fd >= 0)
        close(fd);
    free(d);
    return ret;
}

/* ---- master key ------------------------------------------------------------ */

/* 32 raw bytes, or 64 hex digits with an optional line end. */
static bool parse_key(const uint8_t *buf, size_t len,
                      uint8_t key[KME_VAULT_MASTER_LEN])
{
    if (len == KME_VAULT_MASTER_LEN) {
        memcpy(key, buf, KME_VAULT_MASTER_LEN);
        return true;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    if (len != 2 * KME_VAULT_MASTER_LEN)
        return false;
    for (size_t i = 0; i < KME_VAULT_MASTER_LEN; i++) {
        int hi = OPENSSL_hexchar2int(buf[2 * i]), lo = OPENSSL_hexchar2int(buf[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(key, KME_VAULT_MASTER_LEN);
            return false;
        }
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static int load_key(const char *key_file, uint8_t key[KME_VAULT_MASTER_LEN],
                    char **error_r)
{
    int fd = open(key_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return kme_vault_fail(error_r, KME_VAULT_ENOKEY,
                                  "master key file %s does not exist",
                                  key_file);
        return fail_errno(error_r, "cannot open master key", key_file);
    }
    struct stat st;
    uint8_t buf[80];
    ssize_t n = 0;
    int ret = 0;
    if (fstat(fd, &st) != 0)
        ret = fail_errno(error_r, "cannot stat master key", key_file);
    else if (!S_ISREG(st.st_mode))
        ret = kme_vault_fail(error_r, KME_VAULT_EINVAL,
                             "master key %s is not a regular file", key_file);
    else if ((st.st_mode & 077) != 0)
        ret = kme_vault_fail(error_r, KME_VAULT_EPERM,
                             "master key %s is accessible by group or others "
                             "(mode %03o): chmod 600 %s",
                             key_file, (unsigned)(st.st_mode & 0777),
                             key_file);
    else if ((n = read(fd, buf, sizeof(buf))) < 0)
        ret = fail_errno(error_r, "cannot read master key", key_file);
    else if (!parse_key(buf, (size_t)n, key))
        ret = kme_vault_fail(error_r, KME_VAULT_EINVAL,
                             "master key %s must hold 32 bytes or 64 hex "
                             "digits",
                             key_file);
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return ret;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int create_key(const char *key_file, char **error_r)
{
    char *dir = dir_of(key_file);
    char *tmp = NULL;
    if (dir == NULL || asprintf(&tmp, "%s.new-XXXXXX", key_file) < 0) {
        free(dir);
        return KME_VAULT_ENOMEM;
    }
    int ret = kme_vault_mkdirs(dir, error_r);
    free(dir);
    uint8_t raw[KME_VAULT_MASTER_LEN];
    char hex[2 * KME_VAULT_MASTER_LEN + 2];
    int fd = -1;
    if (ret == 0 && RAND_bytes(raw, sizeof(raw)) != 1)
        ret = kme_vault_fail(error_r, KME_VAULT_ECRYPTO,
                             "random generator failed");
    if (ret == 0) {
        for (size_t i = 0; i < sizeof(raw); i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        hex[2 * KME_VAULT_MASTER_LEN] = '\n';
        hex[2 * KME_VAULT_MASTER_LEN + 1] = '\0';
        fd = mkstemp(tmp); /* O_CREAT|O_EXCL, mode 0600 */
        if (fd < 0)
            ret = fail_errno(error_r, "cannot create", tmp);
    }
    if (ret == 0 && (fchmod(fd, 0600) != 0 ||
                     write_all(fd, hex, sizeof(hex) - 1) != 0 ||
                     fsync(fd) != 0))
        ret = fail_errno(error_r, "cannot write", tmp);
    if (fd >= 0 && close(fd) != 0 && ret == 0)
        ret = fail_errno(error_r, "cannot write", tmp);
    /* Publish: fails with EEXIST when another process got there first,
     * and then its key is the one (read back by the caller). A file
     * system without hard links gets the same rule from renameat2. */
    if (ret == 0 && link(tmp, key_file) != 0 && errno != EEXIST &&
        (errno != EPERM || renameat2(AT_FDCWD, tmp, AT_FDCWD, key_file,
                                     RENAME_NOREPLACE) != 0) &&
        errno != EEXIST)
        ret = fail_errno(error_r, "cannot create master key", key_file);
    if (fd >= 0)
        unlink(tmp);
    if (ret == 0)
        ret = kme_vault_fsync_dir(key_file, error_r);
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(hex, sizeof(hex));
    free(tmp);
    return ret;
}

int kme_vault_master_key(const char *key_file, bool create, bool vault_exists,
                         uint8_t key[KME_VAULT_MASTER_LEN], char **error_r)
{
    char *err = NULL;
    int ret = load_key(key_file, key, &err);
    if (ret != KME_VAULT_ENOKEY) {
        if (error_r != NULL)
            *error_r = err;
        else
            free(err);
        return ret;
    }
    if (!create || vault_exists) {
        free(err);
        return kme_vault_fail(
            error_r, KME_VAULT_ENOKEY,
            vault_exists ? "master key file %s is missing but the vault "
                           "exists: restore the key file (a new key cannot "
                           "read the stored keys)"
                         : "master key file %s does not exist",
            key_file);
    }
    free(err);
    ret = create_key(key_file, error_r);
    return ret != 0 ? ret : load_key(key_file, key, error_r);
}

/* ---- database file ---------------------------------------------------------- */

static int check_private(const char *path, bool must_exist, char **error_r)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT && !must_exist)
            return 0;
        return fail_errno(error_r, "cannot stat", path);
    }
    if ((st.st_mode & 077) != 0)
        return kme_vault_fail(error_r, KME_VAULT_EPERM,
                              "%s is accessible by group or others (mode "
                              "%03o): chmod 600 %s",
                              path, (unsigned)(st.st_mode & 0777), path);
    return 0;
}

int kme_vault_db_file(const char *path, char **error_r)
{
    bool created = true;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        created = false;
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0)
        return fail_errno(error_r, "cannot open database", path);
    struct stat st;
    int ret = 0;
    if (fstat(fd, &st) != 0)
        ret = fail_errno(error_r, "cannot stat", path);
    else if (!S_ISREG(st.st_mode))
        ret = kme_vault_fail(error_r, KME_VAULT_EINVAL,
                             "%s is not a regular file", path);
    /* A file we just created (or an empty one, e.g. a creation cut short)
     * is set to 0600 whatever the umask. */
    else if (st.st_size == 0 && (st.st_mode & 0777) != 0600 &&
             fchmod(fd, 0600) != 0)
        ret = fail_errno(error_r, "chmod", path);
    if (ret == 0 && created && fsync(fd) != 0)
        ret = fail_errno(error_r, "cannot sync", path);
    close(fd);
    if (ret == 0 && created)
        ret = kme_vault_fsync_dir(path, error_r);
    if (ret == 0)
        ret = check_private(path, true, error_r);
    char *side = NULL;
    if (ret == 0 && asprintf(&side, "%s-wal", path) < 0)
        ret = KME_VAULT_ENOMEM;
    if (ret == 0)
        ret = check_private(side, false, error_r);
    free(side);
    side = NULL;
    if (ret == 0 && asprintf(&side, "%s-shm", path) < 0)
        ret = KME_VAULT_ENOMEM;
    if (ret == 0)
        ret = check_private(side, false, error_r);
    free(side);
    return ret;
}
