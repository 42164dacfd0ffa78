/* The IMAP service's APPEND hooks (issue 13): the session's APPEND
 * interception (proxy/imap/imap_session.h, struct imap_append_hooks) wired
 * to proxy/protect/mailboxes.h (which mailboxes) and append.h (the
 * encryption with local vault keys). imap_service.c forwards its hooks
 * here; nothing else uses it. */
#ifndef QUMAIL_IMAP_APPEND_GLUE_H
#define QUMAIL_IMAP_APPEND_GLUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "imap_session.h"
#include "kme_vault.h"
#include "settings.h"

/* Per configuration generation: the parsed imap.protect_mailboxes and
 * imap.append. vault is borrowed (NULL: every APPEND to a protected
 * mailbox is refused NO [UNAVAILABLE] - fail closed). */
struct imap_append_gen;
int imap_append_gen_new(const struct qumail_imap *imap, kme_vault *vault,
                        struct imap_append_gen **g_r, char **error_r);
void imap_append_gen_free(struct imap_append_gen **g);
/* True when some mailbox is protected (the hooks are worth setting). */
bool imap_append_gen_active(const struct imap_append_gen *g);

/* Per session. owner: the address the copies are bound to (the login's
 * first reader address), set at login; NULL until then. */
struct imap_append_sess;
struct imap_append_sess *imap_append_sess_new(const struct imap_append_gen *g, uv_loop_t *loop);
void imap_append_sess_set_owner(struct imap_append_sess *a, const char *owner);
void imap_append_sess_free(struct imap_append_sess **a);

/* The hooks, with a session's imap_append_sess as the first argument. */
enum imap_append_verdict imap_append_glue_mailbox(struct imap_append_sess *a, const char *name,
                                                  bool listed);
void imap_append_glue_list(struct imap_append_sess *a, const char *name,
                           const char *const *attrs, size_t n, bool own);
/* Whether a LIST response may change what is known of its mailbox: always
 * the proxy's own; a relayed one only with a special-use attribute. */
bool imap_append_list_teaches(const char *const *attrs, size_t n, bool own);
void *imap_append_glue_protect(struct imap_append_sess *a, imap_session *s, int in_fd,
                               uint64_t len, const char **code_r, const char **text_r);
void imap_append_glue_cancel(struct imap_append_sess *a, void *job);

#endif
