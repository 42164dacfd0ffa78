/* Private state files and folders (statefile.h). */
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failf(char **error_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(char **error_r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
    return -1;
}

static void warnf(char **warning_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(char **warning_r, const char *fmt, ...)
{
    free(*warning_r);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(warning_r, fmt, ap) < 0)
        *warning_r = NULL;
    va_end(ap);
}

static int owner_ok(const struct stat *st)
{
    return st->st_uid == geteuid() || st->st_uid == 0;
}

/* mkdir -p for the folders above dir: each missing one is created 0700
 * (a relative state path in an example configuration points into a folder
 * of the checkout that a clean tree does not have yet). */
static int make_parents(const char *dir)
{
    char *path = strdup(dir);
    if (!path)
        return -1;
    for (char *p = path + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            free(path);
            return -1;
        }
        *p = '/';
    }
    free(path);
    return 0;
}

int statefile_dir(const char *dir, char **warning_r, char **error_r)
{
    *warning_r = NULL;
    *error_r = NULL;
    struct stat st;
    if (lstat(dir, &st) < 0) {
        if (errno != ENOENT)
            return failf(error_r, "state folder %s: %s", dir, strerror(errno));
        /* mkdir's mode is masked by the umask: 0700 is only narrowed. */
        int rc = mkdir(dir, 0700);
        if (rc < 0 && errno == ENOENT && make_parents(dir) == 0)
            rc = mkdir(dir, 0700);
        if (rc < 0 && errno != EEXIST)
            return failf(error_r, "cannot create state folder %s: %s", dir, strerror(errno));
        if (lstat(dir, &st) < 0)
            return failf(error_r, "state folder %s: %s", dir, strerror(errno));
    }
    if (S_ISLNK(st.st_mode))
        return failf(error_r, "state folder %s is a symbolic link: refused", dir);
    if (!S_ISDIR(st.st_mode))
        return failf(error_r, "state folder %s is not a folder", dir);
    if (!owner_ok(&st))
        return failf(error_r, "state folder %s belongs to user %u, not to this one (%u): refused",
                     dir, (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return failf(error_r,
                     "state folder %s can be written by %s (mode %04o): others could replace "
                     "its files; refused (chmod 700 %s)",
                     dir, (st.st_mode & S_IWOTH) ? "everyone" : "its group",
                     (unsigned)(st.st_mode & 07777), dir);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        warnf(warning_r,
              "state folder %s can be listed by others (mode %04o); its files are 0600, "
              "but chmod 700 %s keeps even their names private",
              dir, (unsigned)(st.st_mode & 07777), dir);
    return 0;
}

int statefile_private(const char *path, int create, char **warning_r, char **error_r)
{
    *warning_r = NULL;
    *error_r = NULL;
    int rc = 0;
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    int fd = open(path, flags | (create ? O_CREAT : 0), 0600);
    if (fd < 0) {
        if (errno == ENOENT && !create)
            return 0;
        if (errno == ELOOP)
            return failf(error_r, "state file %s is a symbolic link: refused", path);
        return failf(error_r, "state file %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = failf(error_r, "state file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = failf(error_r, "state file %s is not a regular file: refused", path);
    } else if (!owner_ok(&st)) {
        rc = failf(error_r, "state file %s belongs to user %u, not to this one (%u): refused",
                   path, (unsigned)st.st_uid, (unsigned)geteuid());
    } else if ((st.st_mode & 07777) != 0600) {
        if (fchmod(fd, 0600) < 0) {
            rc = failf(error_r, "cannot make state file %s private (mode %04o): %s", path,
                       (unsigned)(st.st_mode & 07777), strerror(errno));
        } else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
            warnf(warning_r,
                  "state file %s was open to others (mode %04o), now 0600: what it held "
                  "may have been read",
                  path, (unsigned)(st.st_mode & 07777));
        }
    }
    close(fd);
    return rc;
}
