/* Private state on disk: key pools, vaults, anything a local user must not
 * read. Folders 0700, files 0600, whatever the umask; links, foreign
 * owners and folders others can write into are refused (they could swap
 * or pre-create the files). Shared plumbing (like log.h) kept in the net
 * library because everything links it; it takes no part in networking. */
#ifndef QUMAIL_STATEFILE_H
#define QUMAIL_STATEFILE_H

/* On failure both functions leave the reason in errno as well: EPERM when
 * the folder or file is refused (a link, another owner, writable by
 * others), ENOTDIR when dir is not a folder, else the failing call's. */

/* Makes sure dir is a private folder: created with mode 0700 (whatever the
 * umask) when missing, with its missing parents. Returns 0, or -1 with
 * *error_r (caller frees)
 * when it is not a directory (a symbolic link is refused), belongs to
 * another user (root excepted), or group or others may write into it.
 * When group or others may list or enter it, it is accepted (the files in
 * it are 0600 themselves) and *warning_r (caller frees) says so; else
 * *warning_r is NULL. */
int statefile_dir(const char *dir, char **warning_r, char **error_r);

/* Makes path a private file (check its folder with statefile_dir first):
 * the file is created empty with mode 0600 when missing and `create` is set, or an
 * existing one is brought to 0600 (reported in *warning_r when it was open
 * to group or others: what it held may have been read). A symbolic link, a
 * non-regular file or one of another user is refused. A missing file
 * without `create` is fine (0). */
int statefile_private(const char *path, int create, char **warning_r, char **error_r);

#endif
