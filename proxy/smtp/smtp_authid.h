/* smtp_authid: who authenticated, for the log, read from an AUTH exchange
 * the proxy relays without taking part in it.
 *
 * Only the identity is kept, never a password or token: the client's
 * response that names the user is base64-decoded into a scratch buffer,
 * the identity copied out (escaped for a log line), and the scratch buffer
 * wiped before the call returns. Which response and which field, by
 * mechanism:
 *   PLAIN        the first response: authzid NUL authcid NUL password
 *                (RFC 4616): authcid, and authzid when given and different
 *   LOGIN        the first response: the user name
 *   XOAUTH2      the first response: "user=" NAME ^A "auth=Bearer ..." ^A^A
 *   OAUTHBEARER  the first response: the GS2 header "n,a=NAME," (RFC 7628,
 *                NAME a saslname: "=2C" is ',' and "=3D" is '=')
 * The first response is the initial response of "AUTH MECH RESPONSE", else
 * the first line the client sends after the server's 334; "*" (cancel) or
 * an undecodable response gives no identity. The caller keeps the identity
 * for its logs only once upstream answered 235 (smtp_authid_accept).
 * Pure: bytes in, no I/O, no allocation. */
#ifndef QUMAIL_SMTP_AUTHID_H
#define QUMAIL_SMTP_AUTHID_H

#include <stdbool.h>
#include <stddef.h>

/* The longest escaped identity kept (longer ones end in "..."). */
#define SMTP_AUTHID_MAX 160

enum smtp_authid_mech {
    SMTP_AUTHID_NONE,   /* no exchange, or a mechanism without identity */
    SMTP_AUTHID_PLAIN,
    SMTP_AUTHID_LOGIN,
    SMTP_AUTHID_XOAUTH2,
    SMTP_AUTHID_OAUTHBEARER,
};

struct smtp_authid {
    enum smtp_authid_mech mech;
    bool first_seen;              /* the identity-bearing response came */
    char user[SMTP_AUTHID_MAX];   /* escaped; "" when none */
    char authzid[SMTP_AUTHID_MAX]; /* PLAIN only; "" when none or = user */
};

/* An AUTH command: arg is "MECH[ SP initial-response]" (not
 * NUL-terminated). Forgets any earlier identity. */
void smtp_authid_begin(struct smtp_authid *a, const char *arg, size_t len);
/* A client response line of the exchange (without its line end). */
void smtp_authid_response(struct smtp_authid *a, const char *line, size_t len);
/* Upstream answered: 235 moves the identity into user/authzid of the
 * caller's (escaped, "" when none); anything else forgets it. Both end the
 * exchange. */
void smtp_authid_end(struct smtp_authid *a, int code, char user[SMTP_AUTHID_MAX],
                     char authzid[SMTP_AUTHID_MAX]);

/* Escapes len bytes for a key=value log field into out (cap bytes, always
 * NUL-terminated): letters, digits and "@.-_+" stay, every other byte is
 * \xHH; too long ends in "...". */
void smtp_authid_escape(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
