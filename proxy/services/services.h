/* The protocols the qumail binary serves, as entries of the daemon's
 * protocol table (proxy/daemon/daemon.h): each wires a protocol module
 * (proxy/smtp, proxy/imap) to the daemon core and to its protection layer
 * (proxy/protect). The front end (cmd_proxy.c) lists them. */
#ifndef QUMAIL_PROXY_SERVICES_H
#define QUMAIL_PROXY_SERVICES_H

#include "daemon.h"

/* SMTP: smtp_session with the outgoing protection hooks (smtp_service.c). */
extern const struct proxy_protocol proxy_smtp_protocol;
/* IMAP: imap_session, pass-through (imap_service.c). */
extern const struct proxy_protocol proxy_imap_protocol;

#endif
