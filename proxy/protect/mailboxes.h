/* protect_mailboxes: which mailboxes the proxy protects on APPEND.
 *
 * A client stores its own copies (Sent, Drafts, a message dragged in from a
 * local folder) with APPEND; a mailbox this matcher names is "protected":
 * what is appended to it is encrypted before the server stores it
 * (proxy/protect/append.h).
 *
 * The configuration is a list of entries (config `imap.protect_mailboxes`,
 * proposed; default PROTECT_MAILBOXES_DEFAULT):
 *   - a mailbox name as the server spells it on the wire (modified UTF-7, or
 *     UTF-8 after ENABLE UTF8=ACCEPT; the caller compares what it has):
 *     matched exactly, except "INBOX", which is case-insensitive (RFC 3501
 *     5.1), also as the first hierarchy level ("INBOX/Sent" = "inbox/Sent");
 *   - a SPECIAL-USE attribute (RFC 6154) with its backslash: `\Sent`,
 *     `\Drafts`, `\Archive`, `\Junk`, `\Trash`, `\All`, `\Flagged` (case-
 *     insensitive): every mailbox the server's LIST responses mark with it;
 *   - `all`: every mailbox.
 *
 * Special-use attributes are learned from the server's LIST (and LSUB)
 * responses as the session relays them (protect_mailboxes_learn), per
 * session, since they are per user. A mailbox the session has not seen
 * listed matches only by name: a session whose configuration has attribute
 * entries and that must decide for a mailbox it has not seen in a LIST
 * should ask the server first (`LIST "" <name> RETURN (SPECIAL-USE)`, or
 * `LIST (SPECIAL-USE) "" "*"` once after login) - protect_mailboxes_needs_list
 * says when. Deciding "not protected" for want of a LIST would store a Sent
 * copy in plaintext: fail closed.
 *
 * Pure, no I/O, not thread-safe per object (one per session; the parsed
 * configuration may be shared read-only). */
#ifndef QUMAIL_PROTECT_MAILBOXES_H
#define QUMAIL_PROTECT_MAILBOXES_H

#include <stdbool.h>
#include <stddef.h>

#define PROTECT_MAILBOXES_DEFAULT "Sent, Drafts, \\Sent, \\Drafts"

/* Limits (hostile LIST responses). */
#define PROTECT_MAILBOXES_MAX_ENTRIES 256
#define PROTECT_MAILBOXES_MAX_LEARNED 10000
#define PROTECT_MAILBOXES_MAX_NAME 1024

enum protect_mailboxes_error {
    PROTECT_MAILBOXES_OK = 0,
    PROTECT_MAILBOXES_EINVAL = -9101, /* bad entry in the configuration */
    PROTECT_MAILBOXES_ENOMEM = -9102,
    PROTECT_MAILBOXES_ELIMIT = -9103, /* too many entries / learned names */
};

/* The parsed configuration: immutable, shareable between sessions. */
struct protect_mailboxes_config;
/* One session's matcher: the configuration plus what LIST taught it. */
struct protect_mailboxes;

/* Parses a list of entries: the strings of entries[0..n) (one entry each,
 * surrounding white space ignored; an entry may also be a comma-separated
 * list, so a single config string works). NULL/0: the default. An empty
 * list (all entries empty) protects nothing. *error_r (malloc'd) names the
 * bad entry. */
int protect_mailboxes_config_parse(const char *const *entries, size_t n,
                                   struct protect_mailboxes_config **cfg_r,
                                   char **error_r);
void protect_mailboxes_config_free(struct protect_mailboxes_config **cfg);
/* True when the configuration is `all`. */
bool protect_mailboxes_config_all(const struct protect_mailboxes_config *cfg);

/* A session's matcher over cfg (borrowed: must outlive it). NULL: no memory. */
struct protect_mailboxes *protect_mailboxes_new(const struct protect_mailboxes_config *cfg);
void protect_mailboxes_free(struct protect_mailboxes **m);

/* One LIST/LSUB response: the mailbox name (decoded from its quoted or
 * literal form, as on the wire otherwise) and its attributes (`\Sent`,
 * `\HasNoChildren`, ...; any case). Replaces what was known of that name.
 * A response without special-use attributes forgets the name's earlier
 * ones (RENAME, or the user changed the role). */
int protect_mailboxes_learn(struct protect_mailboxes *m, const char *name,
                            const char *const *attributes, size_t n_attributes);
/* The mailbox was renamed (RENAME old new answered OK): what was learned
 * for old (and its children, with separator sep; 0 when unknown) moves. */
int protect_mailboxes_renamed(struct protect_mailboxes *m, const char *old_name,
                              const char *new_name, char sep);

/* Is name protected? */
bool protect_mailboxes_match(const struct protect_mailboxes *m, const char *name);
/* True when the answer for name could change after a LIST of it: the
 * configuration has attribute entries, name does not match by name, and no
 * LIST response for name was seen in this session. */
bool protect_mailboxes_needs_list(const struct protect_mailboxes *m, const char *name);

#endif
