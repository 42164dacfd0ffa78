/* service: state folder creation and sd_notify over $NOTIFY_SOCKET. */
#include "service_env.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(char **error_r, const char *what, const char *path, int err)
{
    if (error_r != NULL) {
        size_t n = strlen(what) + strlen(path) + strlen(strerror(err)) + 16;
        *error_r = malloc(n);
        if (*error_r != NULL)
            snprintf(*error_r, n, "%s %s: %s", what, path, strerror(err));
    }
    return -1;
}

int service_prepare_state_dir(const char *path, char **error_r)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return fail(error_r, "state_dir: not a directory:", path, ENOTDIR);
        return 0;
    }
    if (errno != ENOENT)
        return fail(error_r, "state_dir: cannot use", path, errno);
    char *copy = strdup(path);
    if (copy == NULL)
        return fail(error_r, "state_dir:", path, ENOMEM);
    /* mkdir -p: each missing component 0700 (only the daemon reads them). */
    for (char *p = copy + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0700) < 0 && errno != EEXIST) {
            int err = errno;
            int rc = fail(error_r, "state_dir: cannot create", copy, err);
            free(copy);
            return rc;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    return 0;
}

int service_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (name == NULL || name[0] == '\0')
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    close(fd);
    return n == (ssize_t)strlen(state) ? 1 : -1;
}
