/* admin: the operator's HTTP listener (plain HTTP/1.1 on loopback by
 * default): health, readiness, Prometheus metrics, status as JSON, and the
 * mail client autoconfiguration documents.
 *
 *   GET  /healthz                                  200 "ok": the loop runs
 *   GET  /readyz                                   200 "ready" or 503 with
 *                                                  the reasons, one a line
 *   GET  /metrics                                  the registry, text 0.0.4
 *   GET  /status                                   JSON from the status hook
 *   GET  /mail/config-v1.1.xml[?emailaddress=A]    Thunderbird autoconfig
 *   GET  /.well-known/autoconfig/mail/config-v1.1.xml[?emailaddress=A]
 *   GET  /v1.1/DOMAIN                              the same (ISPDB-style URL,
 *                                                  mailnews.auto_config_url)
 *   POST /autodiscover/autodiscover.xml            Outlook Autodiscover (POX)
 *
 * One request per connection (answered with Connection: close). Bounded:
 * request line and headers MAX 8 KiB, body (Autodiscover) 16 KiB, a
 * deadline for the whole request, a connection limit. Built on net_conn
 * (proxy/net) and llhttp, on the daemon's loop. The module logs nothing:
 * each answered request is reported to the access hook. */
#ifndef QUMAIL_ADMIN_H
#define QUMAIL_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "metrics.h"

#define ADMIN_MAX_HEAD 8192        /* request line + header fields */
#define ADMIN_MAX_BODY 16384       /* request body */
#define ADMIN_MAX_MAIL_SERVERS 8

enum admin_security {
    ADMIN_SEC_PLAIN = 0, /* no TLS ("plain" / Encryption None) */
    ADMIN_SEC_STARTTLS,  /* "STARTTLS" / Encryption TLS */
    ADMIN_SEC_TLS        /* implicit TLS: "SSL" / Encryption SSL */
};

/* One server a mail client should use. */
struct admin_mail_server {
    const char *protocol;       /* "imap" or "smtp" */
    const char *hostname;       /* what the client connects to */
    uint16_t port;
    enum admin_security security;
    bool auth;                  /* password authentication (false: none) */
};

/* What the autoconfig documents announce (borrowed; must outlive the
 * server or be replaced with admin_set_mail). */
struct admin_mail {
    const char *display_name;   /* "QuMail Gateway" when NULL */
    const char *default_domain; /* when the request names none; NULL: 404 */
    struct admin_mail_server servers[ADMIN_MAX_MAIL_SERVERS];
    size_t n_servers;
};

struct admin_config {
    const char *address;        /* numeric IP; "127.0.0.1" when NULL */
    uint16_t port;              /* 0 picks a free port (tests) */
    uint64_t timeout_ms;        /* whole request; 10000 when 0 */
    unsigned max_connections;   /* 16 when 0 */
};

struct admin_hooks {
    /* /readyz: true when ready; otherwise *why_r (caller frees) lists the
     * reasons, one a line. NULL hook: always ready. */
    bool (*ready)(void *arg, char **why_r);
    /* /status: a new JSON object (the module takes the reference). NULL
     * hook or NULL result: {}. */
    json_t *(*status)(void *arg);
    /* Every answered request (for the daemon's debug log). */
    void (*access)(void *arg, const char *peer, const char *method, const char *path,
                   int status, size_t bytes);
    void *arg;
};

typedef struct admin_server admin_server;

/* Binds and starts serving. reg may be NULL (/metrics is then empty but
 * for the module's own metrics); mail may be NULL (autoconfig 404). The
 * module declares and counts qumail_admin_requests_total{path,code}.
 * NULL + *error_r (caller frees) when the address cannot be bound. */
admin_server *admin_start(uv_loop_t *loop, const struct admin_config *cfg, metrics *reg,
                          const struct admin_mail *mail, const struct admin_hooks *hooks,
                          char **error_r);
uint16_t admin_port(const admin_server *srv);
/* Replaces the announced settings (SIGHUP). */
void admin_set_mail(admin_server *srv, const struct admin_mail *mail);
/* Closes the listener and every connection; memory is released on the
 * loop (run it until it has no handles). Clears *srv. */
void admin_stop(admin_server **srv);

/* ---- the documents, without I/O (also used by tests and fuzzing) ---- */

/* Thunderbird clientConfig v1.1 for an address ("alice@example.org") or a
 * bare domain. NULL when the address is not acceptable. Caller frees. */
char *admin_autoconfig_xml(const struct admin_mail *mail, const char *address);

/* Parses an Outlook Autodiscover request body: the EMailAddress and the
 * AcceptableResponseSchema. Returns 0, or -1 when there is no acceptable
 * address. The outputs are NUL-terminated and bounded by their caps. */
int admin_autodiscover_parse(const char *body, size_t len, char *address, size_t address_cap,
                             char *schema, size_t schema_cap);
/* The Outlook response (schema .../outlook/responseschema/2006a) for an
 * address; when schema names another response schema, the Autodiscover
 * error response 601. Caller frees. */
char *admin_autodiscover_xml(const struct admin_mail *mail, const char *address,
                             const char *schema);

/* An address a document may carry: local@domain, at most 254 bytes, no
 * control characters, spaces, quotes or angle brackets; domain labels of
 * letters, digits and '-'. */
bool admin_address_ok(const char *address);

#endif
