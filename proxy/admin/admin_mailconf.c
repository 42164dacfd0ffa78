/* admin: the mail client configuration documents (Thunderbird autoconfig,
 * Outlook Autodiscover) and the Autodiscover request parser. No I/O. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "admin_internal.h"

#define OUTLOOK_RESPONSE_SCHEMA \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
#define AUTODISCOVER_NS "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"

bool admin_address_ok(const char *address)
{
    if (address == NULL)
        return false;
    size_t len = strlen(address);
    const char *at = strrchr(address, '@');
    if (len == 0 || len > 254 || at == NULL || at == address || at[1] == '\0')
        return false;
    for (const char *p = address; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '<' || c == '>' || c == '&' ||
            c == '\'' || c == '\\' || c == '@')
            return false;
    }
    return admin_domain_ok(at + 1);
}

bool admin_domain_ok(const char *domain)
{
    size_t len = strlen(domain), label = 0;
    if (len == 0 || len > 253)
        return false;
    for (const char *p = domain; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-') || ++label > 63)
            return false;
    }
    return label > 0;
}

/* ---- a growing text buffer ---------------------------------------------------- */

void admin_buf_printf(struct admin_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->len + (size_t)n + 1 > (1u << 20)) {
        b->failed = true;
        va_end(ap2);
        return;
    }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *grown = realloc(b->buf, cap);
        if (grown == NULL) {
            b->failed = true;
            va_end(ap2);
            return;
        }
        b->buf = grown;
        b->cap = cap;
    }
    vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

char *admin_buf_take(struct admin_buf *b)
{
    if (b->failed) {
        free(b->buf);
        return NULL;
    }
    return b->buf;
}

/* Text for XML content: &, <, >, ", ' escaped. */
static void put_xml(struct admin_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': admin_buf_printf(b, "&amp;"); break;
        case '<': admin_buf_printf(b, "&lt;"); break;
        case '>': admin_buf_printf(b, "&gt;"); break;
        case '"': admin_buf_printf(b, "&quot;"); break;
        case '\'': admin_buf_printf(b, "&apos;"); break;
        default: admin_buf_printf(b, "%c", *s); break;
        }
    }
}

/* ---- Thunderbird autoconfig ------------------------------------------------- */

static const char *tb_socket_type(enum admin_security s)
{
    return s == ADMIN_SEC_TLS ? "SSL" : s == ADMIN_SEC_STARTTLS ? "STARTTLS" : "plain";
}

static void tb_server(struct admin_buf *b, const struct admin_mail_server *s, bool incoming)
{
    const char *tag = incoming ? "incomingServer" : "outgoingServer";
    admin_buf_printf(b, "    <%s type=\"%s\">\n      <hostname>", tag, s->protocol);
    put_xml(b, s->hostname);
    admin_buf_printf(b,
                     "</hostname>\n      <port>%u</port>\n"
                     "      <socketType>%s</socketType>\n"
                     "      <authentication>%s</authentication>\n",
                     (unsigned)s->port, tb_socket_type(s->security),
                     s->auth ? "password-cleartext" : "none");
    if (s->auth)
        admin_buf_printf(b, "      <username>%%EMAILADDRESS%%</username>\n");
    admin_buf_printf(b, "    </%s>\n", tag);
}

char *admin_autoconfig_xml(const struct admin_mail *mail, const char *address)
{
    if (mail == NULL || address == NULL)
        return NULL;
    const char *at = strrchr(address, '@');
    const char *domain = at ? at + 1 : address;
    if (at ? !admin_address_ok(address) : !admin_domain_ok(domain))
        return NULL;
    const char *name = mail->display_name ? mail->display_name : "QuMail Gateway";
    struct admin_buf b = {0};
    admin_buf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                         "<clientConfig version=\"1.1\">\n  <emailProvider id=\"");
    put_xml(&b, domain);
    admin_buf_printf(&b, "\">\n    <domain>");
    put_xml(&b, domain);
    admin_buf_printf(&b, "</domain>\n    <displayName>");
    put_xml(&b, domain);
    admin_buf_printf(&b, " (");
    put_xml(&b, name);
    admin_buf_printf(&b, ")</displayName>\n    <displayShortName>");
    put_xml(&b, name);
    admin_buf_printf(&b, "</displayShortName>\n");
    /* Thunderbird wants the incoming servers first, then the outgoing. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < mail->n_servers; i++) {
            bool incoming = strcmp(mail->servers[i].protocol, "smtp") != 0;
            if (incoming == (pass == 0))
                tb_server(&b, &mail->servers[i], incoming);
        }
    admin_buf_printf(&b, "  </emailProvider>\n</clientConfig>\n");
    return admin_buf_take(&b);
}

/* ---- Outlook Autodiscover ------------------------------------------------------ */

/* The text of the first element whose local name is `name` (any namespace
 * prefix), trimmed; -1 when absent, empty or too long. */
static int element_text(const char *body, size_t len, const char *name, char *out,
                        size_t cap)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i + 1 < len; i++) {
        if (body[i] != '<' || body[i + 1] == '/')
            continue;
        /* tag name: [prefix:]local, ended by '>' or whitespace */
        size_t j = i + 1, start = j;
        while (j < len && body[j] != '>' && !isspace((unsigned char)body[j]) && body[j] != '/')
            j++;
        if (j >= len)
            return -1;
        const char *colon = memchr(body + start, ':', j - start);
        size_t lstart = colon ? (size_t)(colon - body) + 1 : start;
        if (j - lstart != nlen || strncasecmp(body + lstart, name, nlen) != 0)
            continue;
        while (j < len && body[j] != '>')
            j++;
        if (j >= len || body[j - 1] == '/')
            return -1;
        size_t t = j + 1, e = t;
        while (e < len && body[e] != '<')
            e++;
        if (e >= len)
            return -1;
        while (t < e && isspace((unsigned char)body[t]))
            t++;
        while (e > t && isspace((unsigned char)body[e - 1]))
            e--;
        if (e == t || e - t >= cap)
            return -1;
        memcpy(out, body + t, e - t);
        out[e - t] = '\0';
        return 0;
    }
    return -1;
}

int admin_autodiscover_parse(const char *body, size_t len, char *address, size_t address_cap,
                             char *schema, size_t schema_cap)
{
    if (address_cap == 0 || schema_cap == 0)
        return -1;
    address[0] = schema[0] = '\0';
    if (element_text(body, len, "EMailAddress", address, address_cap) < 0 ||
        !admin_address_ok(address)) {
        address[0] = '\0';
        return -1;
    }
    if (element_text(body, len, "AcceptableResponseSchema", schema, schema_cap) < 0)
        schema[0] = '\0';
    return 0;
}

static void ad_protocol(struct admin_buf *b, const struct admin_mail_server *s,
                        const char *address)
{
    const char *enc = s->security == ADMIN_SEC_TLS        ? "SSL"
                      : s->security == ADMIN_SEC_STARTTLS ? "TLS"
                                                          : "None";
    admin_buf_printf(b, "      <Protocol>\n        <Type>%s</Type>\n        <Server>",
                     strcmp(s->protocol, "smtp") == 0 ? "SMTP" : "IMAP");
    put_xml(b, s->hostname);
    admin_buf_printf(b, "</Server>\n        <Port>%u</Port>\n"
                        "        <DomainRequired>off</DomainRequired>\n",
                     (unsigned)s->port);
    if (s->auth) {
        admin_buf_printf(b, "        <LoginName>");
        put_xml(b, address);
        admin_buf_printf(b, "</LoginName>\n");
    }
    admin_buf_printf(b,
                     "        <SPA>off</SPA>\n        <SSL>%s</SSL>\n"
                     "        <Encryption>%s</Encryption>\n"
                     "        <AuthRequired>%s</AuthRequired>\n      </Protocol>\n",
                     s->security == ADMIN_SEC_TLS ? "on" : "off", enc, s->auth ? "on" : "off");
}

char *admin_autodiscover_xml(const struct admin_mail *mail, const char *address,
                             const char *schema)
{
    if (mail == NULL || !admin_address_ok(address))
        return NULL;
    struct admin_buf b = {0};
    admin_buf_printf(&b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                         "<Autodiscover xmlns=\"%s\">\n",
                     AUTODISCOVER_NS);
    if (schema != NULL && schema[0] != '\0' && strcmp(schema, OUTLOOK_RESPONSE_SCHEMA) != 0) {
        /* e.g. the mobilesync schema (ActiveSync): not what qumail speaks */
        admin_buf_printf(&b,
                         "  <Response>\n    <Error>\n"
                         "      <ErrorCode>601</ErrorCode>\n"
                         "      <Message>Provider is not available for the requested "
                         "schema</Message>\n"
                         "      <DebugData />\n    </Error>\n  </Response>\n"
                         "</Autodiscover>\n");
        return admin_buf_take(&b);
    }
    admin_buf_printf(&b, "  <Response xmlns=\"%s\">\n    <User>\n      <DisplayName>",
                     OUTLOOK_RESPONSE_SCHEMA);
    put_xml(&b, address);
    admin_buf_printf(&b, "</DisplayName>\n    </User>\n    <Account>\n"
                         "      <AccountType>email</AccountType>\n"
                         "      <Action>settings</Action>\n");
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < mail->n_servers; i++) {
            bool incoming = strcmp(mail->servers[i].protocol, "smtp") != 0;
            if (incoming == (pass == 0))
                ad_protocol(&b, &mail->servers[i], address);
        }
    admin_buf_printf(&b, "    </Account>\n  </Response>\n</Autodiscover>\n");
    return admin_buf_take(&b);
}
