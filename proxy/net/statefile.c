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

/* *error_r formatted, errno = err (statefile.h: the reason for callers
 * with error codes of their own), -1. */
static int failf(char **error_r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failf(char **error_r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
    errno = err;
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

/* mkdir with mode 0700 whatever the umask (one that narrows it further
 * would leave a folder its owner cannot use). 0, or -1 with errno (EEXIST
 * when it was there). */
static int mkdir_private(const char *dir)
{
    if (mkdir(dir, 0700) < 0)
        return -1;
    return chmod(dir, 0700);
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
        if (mkdir_private(path) < 0 && errno != EEXIST) {
            int e = errno;
            free(path);
            errno = e;
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
            return failf(error_r, errno, "state folder %s: %s", dir, strerror(errno));
        int rc = mkdir_private(dir);
        if (rc < 0 && errno == ENOENT && make_parents(dir) == 0)
            rc = mkdir_private(dir);
        if (rc < 0 && errno != EEXIST)
            return failf(error_r, errno, "cannot create state folder %s: %s", dir,
                         strerror(errno));
        if (lstat(dir, &st) < 0)
            return failf(error_r, errno, "state folder %s: %s", dir, strerror(errno));
    }
    if (S_ISLNK(st.st_mode))
        return failf(error_r, EPERM, "state folder %s is a symbolic link: refused", dir);
    if (!S_ISDIR(st.st_mode))
        return failf(error_r, ENOTDIR, "state folder %s is not a folder", dir);
    if (!owner_ok(&st))
        return failf(error_r, EPERM,
                     "state folder %s belongs to user %u, not to this one (%u): refused", dir,
                     (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return failf(error_r, EPERM,
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
            return failf(error_r, EPERM, "state file %s is a symbolic link: refused", path);
        return failf(error_r, errno, "state file %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = failf(error_r, errno, "state file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = failf(error_r, EPERM, "state file %s is not a regular file: refused", path);
    } else if (!owner_ok(&st)) {
        rc = failf(error_r, EPERM,
                   "state file %s belongs to user %u, not to this one (%u): refused", path,
                   (unsigned)st.st_uid, (unsigned)geteuid());
    } else if ((st.st_mode & 07777) != 0600) {
        if (fchmod(fd, 0600) < 0) {
            rc = failf(error_r, errno, "cannot make state file %s private (mode %04o): %s",
                       path, (unsigned)(st.st_mode & 07777), strerror(errno));
        } else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
            warnf(warning_r,
                  "state file %s was open to others (mode %04o), now 0600: what it held "
                  "may have been read",
                  path, (unsigned)(st.st_mode & 07777));
        }
    }
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}
