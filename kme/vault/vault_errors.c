/* Error codes of the key vault: one table for text and names, and the
 * helpers that fill error_r. */
#include <stdio.h>
#include <stdlib.h>

#include "vault_internal.h"

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
    {KME_VAULT_OK, "KME_VAULT_OK", "success"},
    {KME_VAULT_ENOMEM, "KME_VAULT_ENOMEM", "out of memory"},
    {KME_VAULT_EINVAL, "KME_VAULT_EINVAL", "invalid argument"},
    {KME_VAULT_EIO, "KME_VAULT_EIO", "file system error"},
    {KME_VAULT_EDB, "KME_VAULT_EDB", "database error"},
    {KME_VAULT_EPERM, "KME_VAULT_EPERM", "unsafe file permissions"},
    {KME_VAULT_ENOKEY, "KME_VAULT_ENOKEY", "master key file missing"},
    {KME_VAULT_EWRONGKEY, "KME_VAULT_EWRONGKEY",
     "master key does not belong to this vault"},
    {KME_VAULT_EAUTH, "KME_VAULT_EAUTH", "vault row failed authentication"},
    {KME_VAULT_ENOTFOUND, "KME_VAULT_ENOTFOUND", "not in the vault"},
    {KME_VAULT_ECONFLICT, "KME_VAULT_ECONFLICT",
     "key already stored with different bytes"},
    {KME_VAULT_ETOOBIG, "KME_VAULT_ETOOBIG", "above the vault's size limits"},
    {KME_VAULT_EVERSION, "KME_VAULT_EVERSION",
     "database layout unknown to this version"},
    {KME_VAULT_EBUSY, "KME_VAULT_EBUSY", "vault locked by another process"},
    {KME_VAULT_ECRYPTO, "KME_VAULT_ECRYPTO", "cryptographic library failure"},
};

const char *kme_vault_strerror(int error)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == error)
            return errors[i].text;
    return "unknown error";
}

const char *kme_vault_errname(int error)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
        if (errors[i].code == error)
            return errors[i].name;
    return "KME_VAULT_EUNKNOWN";
}

int kme_vault_fail(char **error_r, int code, const char *fmt, ...)
{
    if (error_r == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0)
        m = NULL;
    va_end(ap);
    *error_r = m;
    return code;
}

int kme_vault_fail_db(sqlite3 *db, int rc, char **error_r, const char *what)
{
    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = KME_VAULT_EBUSY;
        break;
    case SQLITE_NOMEM:
        code = KME_VAULT_ENOMEM;
        break;
    default:
        code = KME_VAULT_EDB;
        break;
    }
    const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return kme_vault_fail(error_r, code, "%s: %s", what, msg);
}
