/* imap_capability: what the proxy lets a client see of the upstream's
 * capabilities, and which ENABLE names it lets through. An allow-list: an
 * extension the proxy does not know is hidden (fail closed). Why each one
 * is kept or hidden: proxy/imap/README.md. Pure functions. */
#ifndef QUMAIL_IMAP_CAPABILITY_H
#define QUMAIL_IMAP_CAPABILITY_H

#include <stdbool.h>
#include <stddef.h>

struct imap_cap_ctx {
    bool starttls;      /* offer STARTTLS (listener has TLS, connection not yet) */
    bool logindisabled; /* LOGIN and AUTHENTICATE refused until TLS */
};

/* True when the proxy relays this capability (one atom, any case). */
bool imap_cap_allowed(const char *cap, size_t len);
/* True when ENABLE of this capability is relayed. */
bool imap_cap_enable_allowed(const char *cap, size_t len);
/* The SASL mechanisms the proxy passes through (upper case names). */
bool imap_cap_sasl_allowed(const char *mech);

/* Writes the client's view of an upstream capability list (atoms
 * separated by spaces): allowed atoms in upstream order, upstream's own
 * STARTTLS and LOGINDISABLED replaced by the proxy's, AUTH= dropped when
 * logins are disabled. NUL-terminated; returns the length, or 0 when out
 * is too small. */
size_t imap_cap_filter(const char *caps, size_t len, const struct imap_cap_ctx *ctx, char *out,
                       size_t out_size);

/* True when the list holds cap (case-insensitive, whole atoms). */
bool imap_cap_has(const char *caps, size_t len, const char *cap);

#endif
