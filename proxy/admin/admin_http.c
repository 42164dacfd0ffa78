/* admin: the HTTP listener. One request per connection:
 *
 *   READING --request complete--> (route) --> RESPONDING --written--> closed
 *   READING --limit, parse error, deadline--> RESPONDING (4xx) or closed
 *
 * llhttp callbacks only fill the bounded request; routing happens once the
 * message is complete. A deadline timer covers the whole request (an idle
 * timeout alone lets a client trickle one byte at a time forever). */
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "admin_internal.h"
#include "net.h"

enum ac_state { AC_READING, AC_RESPONDING, AC_CLOSED };
static const char *const ac_state_names[] = {"READING", "RESPONDING", "CLOSED"};

struct admin_conn {
    admin_server *srv;
    net_conn *conn;
    enum ac_state state;
    struct admin_conn *prev, *next;
    uv_timer_t deadline;
    llhttp_t parser;
    char method[16];
    char target[ADMIN_MAX_HEAD];
    size_t target_len;
    size_t head_bytes;   /* request line and header fields so far */
    char *body;          /* owned; at most ADMIN_MAX_BODY */
    size_t body_len;
    int limit_status;    /* 413 / 431 / 414 once a limit was hit */
    bool complete;
    char peer[64];
};

struct admin_server {
    uv_loop_t *loop;
    net_listener *listener;
    struct admin_config cfg;
    metrics *reg;
    metric *requests;
    const struct admin_mail *mail;
    struct admin_hooks hooks;
    llhttp_settings_t settings;
    struct admin_conn *conns;
    unsigned n_conns;
    char *address;
};

/* ---- the one place where a connection changes state ----------------------- */

static void deadline_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    free(ac->body);
    free(ac);
}

static void ac_enter(struct admin_conn *ac, enum ac_state st)
{
    (void)ac_state_names; /* for a debugger; the module logs nothing */
    if (ac->state == AC_CLOSED)
        return;
    ac->state = st;
    if (st != AC_CLOSED)
        return;
    admin_server *srv = ac->srv;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        srv->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    srv->n_conns--;
    if (ac->conn)
        net_conn_close(&ac->conn);
    uv_timer_stop(&ac->deadline);
    uv_close((uv_handle_t *)&ac->deadline, deadline_closed);
}

/* ---- responses ------------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Writes the whole response and closes after it; body is borrowed. */
static void respond(struct admin_conn *ac, int status, const char *ctype, const char *body,
                    size_t len, const char *extra_header, const char *path_label)
{
    admin_server *srv = ac->srv;
    net_conn_printf(ac->conn,
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                    "%sConnection: close\r\n\r\n",
                    status, reason(status), ctype, len, extra_header ? extra_header : "");
    if (strcmp(ac->method, "HEAD") != 0 && len > 0)
        net_conn_write(ac->conn, body, len);
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    metric_add(srv->requests, 1, path_label, code);
    if (srv->hooks.access) {
        char path[256];
        size_t n = ac->target_len < sizeof(path) - 1 ? ac->target_len : sizeof(path) - 1;
        memcpy(path, ac->target, n);
        path[n] = '\0';
        srv->hooks.access(srv->hooks.arg, ac->peer, ac->method[0] ? ac->method : "-", path,
                          status, len);
    }
    ac_enter(ac, AC_RESPONDING);
    net_conn_close_after_write(&ac->conn);
    ac_enter(ac, AC_CLOSED);
}

static void respond_text(struct admin_conn *ac, int status, const char *text,
                         const char *path_label)
{
    respond(ac, status, "text/plain; charset=utf-8", text, strlen(text), NULL, path_label);
}

/* ---- routes ---------------------------------------------------------------------- */

/* The value of a query parameter, percent-decoded, into out: 1 found, 0
 * absent, -1 malformed (bad %-escape, NUL, too long). */
static int query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        if (plen > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t o = 0;
            for (size_t i = nlen + 1; i < plen; i++) {
                char c = p[i];
                if (c == '%') {
                    if (i + 2 >= plen)
                        return -1;
                    char hex[3] = {p[i + 1], p[i + 2], 0};
                    char *end;
                    long v = strtol(hex, &end, 16);
                    if (*end != '\0' || v <= 0)
                        return -1;
                    c = (char)v;
                    i += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (o + 1 >= cap)
                    return -1;
                out[o++] = c;
            }
            out[o] = '\0';
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

static void route_healthz(struct admin_conn *ac, const char *query)
{
    respond_text(ac, 200, "ok\n", "/healthz");
}

static void route_readyz(struct admin_conn *ac, const char *query)
{
    admin_server *srv = ac->srv;
    char *why = NULL;
    bool ready = srv->hooks.ready == NULL || srv->hooks.ready(srv->hooks.arg, &why);
    if (ready) {
        respond_text(ac, 200, "ready\n", "/readyz");
    } else {
        struct admin_buf b = {0};
        admin_buf_printf(&b, "not ready\n%s%s", why ? why : "",
                         why && why[0] && why[strlen(why) - 1] != '\n' ? "\n" : "");
        char *text = admin_buf_take(&b);
        respond_text(ac, 503, text ? text : "not ready\n", "/readyz");
        free(text);
    }
    free(why);
}

static void route_metrics(struct admin_conn *ac, const char *query)
{
    size_t len = 0;
    char *text = ac->srv->reg ? metrics_render(ac->srv->reg, &len) : strdup("");
    if (text == NULL) {
        respond_text(ac, 500, "out of memory\n", "/metrics");
        return;
    }
    if (!ac->srv->reg)
        len = 0;
    respond(ac, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL, "/metrics");
    free(text);
}

static void route_status(struct admin_conn *ac, const char *query)
{
    admin_server *srv = ac->srv;
    json_t *j = srv->hooks.status ? srv->hooks.status(srv->hooks.arg) : NULL;
    if (j == NULL)
        j = json_object();
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (text == NULL) {
        respond_text(ac, 500, "out of memory\n", "/status");
        return;
    }
    size_t len = strlen(text);
    text[len] = '\0';
    struct admin_buf b = {0};
    admin_buf_printf(&b, "%s\n", text);
    free(text);
    text = admin_buf_take(&b);
    respond(ac, text ? 200 : 500, "application/json", text ? text : "", text ? strlen(text) : 0,
            NULL, "/status");
    free(text);
}

static void send_autoconfig(struct admin_conn *ac, const char *address, const char *label)
{
    const struct admin_mail *mail = ac->srv->mail;
    if (mail == NULL || mail->n_servers == 0) {
        respond_text(ac, 404, "no mail settings to announce\n", label);
        return;
    }
    char *xml = admin_autoconfig_xml(mail, address);
    if (xml == NULL) {
        respond_text(ac, 400, "not an acceptable address or domain\n", label);
        return;
    }
    respond(ac, 200, "application/xml; charset=utf-8", xml, strlen(xml), NULL, label);
    free(xml);
}

static void route_autoconfig(struct admin_conn *ac, const char *query)
{
    char address[256];
    const struct admin_mail *mail = ac->srv->mail;
    int found = query_param(query, "emailaddress", address, sizeof(address));
    if (found < 0) {
        respond_text(ac, 400, "malformed emailaddress parameter\n", "autoconfig");
        return;
    }
    if (found == 0) {
        if (mail == NULL || mail->default_domain == NULL) {
            respond_text(ac, 400, "emailaddress=ADDRESS is required\n", "autoconfig");
            return;
        }
        snprintf(address, sizeof(address), "%s", mail->default_domain);
    }
    send_autoconfig(ac, address, "autoconfig");
}

/* /v1.1/DOMAIN: the path Thunderbird builds from mailnews.auto_config_url. */
static void route_ispdb(struct admin_conn *ac, const char *domain)
{
    send_autoconfig(ac, domain, "autoconfig");
}

static void route_autodiscover(struct admin_conn *ac, const char *query)
{
    char address[256], schema[256];
    const struct admin_mail *mail = ac->srv->mail;
    if (mail == NULL || mail->n_servers == 0) {
        respond_text(ac, 404, "no mail settings to announce\n", "autodiscover");
        return;
    }
    if (admin_autodiscover_parse(ac->body ? ac->body : "", ac->body_len, address,
                                 sizeof(address), schema, sizeof(schema)) < 0) {
        respond_text(ac, 400, "no acceptable EMailAddress in the request\n", "autodiscover");
        return;
    }
    char *xml = admin_autodiscover_xml(mail, address, schema);
    if (xml == NULL) {
        respond_text(ac, 500, "out of memory\n", "autodiscover");
        return;
    }
    respond(ac, 200, "text/xml; charset=utf-8", xml, strlen(xml), NULL, "autodiscover");
    free(xml);
}

struct route {
    const char *method; /* "GET" also answers HEAD */
    const char *path;
    bool prefix;        /* path is a prefix; the rest is the argument */
    bool nocase;
    void (*run)(struct admin_conn *ac, const char *arg);
};

static const struct route routes[] = {
    {"GET", "/healthz", false, false, route_healthz},
    {"GET", "/readyz", false, false, route_readyz},
    {"GET", "/metrics", false, false, route_metrics},
    {"GET", "/status", false, false, route_status},
    {"GET", "/mail/config-v1.1.xml", false, false, route_autoconfig},
    {"GET", "/.well-known/autoconfig/mail/config-v1.1.xml", false, false, route_autoconfig},
    {"GET", "/v1.1/", true, false, route_ispdb},
    {"POST", "/autodiscover/autodiscover.xml", false, true, route_autodiscover},
};

static void dispatch(struct admin_conn *ac)
{
    if (ac->limit_status) {
        respond_text(ac, ac->limit_status, "request too large\n", "other");
        return;
    }
    ac->target[ac->target_len] = '\0';
    char path[ADMIN_MAX_HEAD];
    memcpy(path, ac->target, ac->target_len + 1);
    char *query = strchr(path, '?');
    if (query)
        *query++ = '\0';
    bool path_known = false;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        size_t plen = strlen(r->path);
        bool match = r->prefix ? strncmp(path, r->path, plen) == 0 && path[plen] != '\0'
                     : r->nocase ? strcasecmp(path, r->path) == 0
                                 : strcmp(path, r->path) == 0;
        if (!match)
            continue;
        path_known = true;
        bool method_ok = strcmp(ac->method, r->method) == 0 ||
                         (strcmp(r->method, "GET") == 0 && strcmp(ac->method, "HEAD") == 0);
        if (!method_ok)
            continue;
        r->run(ac, r->prefix ? path + plen : query);
        return;
    }
    if (path_known)
        respond(ac, 405, "text/plain; charset=utf-8", "method not allowed\n", 19,
                "Allow: GET, HEAD, POST\r\n", "other");
    else
        respond_text(ac, 404, "not found\n", "other");
}

/* ---- llhttp callbacks: fill the request, nothing else ---------------------- */

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    size_t have = strlen(ac->method);
    if (have + len >= sizeof(ac->method))
        return HPE_USER;
    memcpy(ac->method + have, at, len);
    ac->method[have + len] = '\0';
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->target_len + len >= sizeof(ac->target)) {
        ac->limit_status = 414;
        return HPE_USER;
    }
    memcpy(ac->target + ac->target_len, at, len);
    ac->target_len += len;
    return 0;
}

static int on_head_bytes(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    ac->head_bytes += len;
    if (ac->head_bytes > ADMIN_MAX_HEAD) {
        ac->limit_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct admin_conn *ac = p->data;
    /* Content-Length beyond the body limit: refuse before reading it. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > ADMIN_MAX_BODY) {
        ac->limit_status = 413;
        return HPE_USER;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->body_len + len > ADMIN_MAX_BODY) {
        ac->limit_status = 413;
        return HPE_USER;
    }
    if (ac->body == NULL && (ac->body = malloc(ADMIN_MAX_BODY + 1)) == NULL)
        return HPE_USER;
    memcpy(ac->body + ac->body_len, at, len);
    ac->body_len += len;
    ac->body[ac->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct admin_conn *ac = p->data;
    ac->complete = true;
    return HPE_PAUSED; /* one request per connection: stop here */
}

static void on_conn_event(net_conn *conn, enum net_event ev, void *arg)
{
    struct admin_conn *ac = arg;
    if (ev == NET_EV_READ && ac->state == AC_READING) {
        size_t len;
        const char *in = net_conn_input(conn, &len);
        llhttp_errno_t err = llhttp_execute(&ac->parser, in, len);
        net_conn_consume(conn, len);
        if (ac->complete) {
            dispatch(ac);
        } else if (err != HPE_OK) {
            if (ac->limit_status)
                respond_text(ac, ac->limit_status, "request too large\n", "other");
            else
                respond_text(ac, 400, "bad request\n", "other");
        }
        return;
    }
    if (ev == NET_EV_EOF && ac->state == AC_READING) {
        /* a body ended by EOF is not accepted: close */
        ac_enter(ac, AC_CLOSED);
        return;
    }
    if (ev == NET_EV_ERROR || ev == NET_EV_TIMEOUT || ev == NET_EV_EOF)
        ac_enter(ac, AC_CLOSED);
}

static void on_deadline(uv_timer_t *t)
{
    struct admin_conn *ac = t->data;
    if (ac->state != AC_READING)
        return;
    if (ac->head_bytes > 0 || ac->target_len > 0)
        respond_text(ac, 408, "request timeout\n", "other");
    else
        ac_enter(ac, AC_CLOSED);
}

static void on_accept(net_listener *l, net_conn *conn, void *arg)
{
    admin_server *srv = arg;
    if (srv->n_conns >= srv->cfg.max_connections) {
        /* answering would cost a buffer per flooder: just close */
        net_conn_close(&conn);
        metric_add(srv->requests, 1, "other", "refused");
        return;
    }
    struct admin_conn *ac = calloc(1, sizeof(*ac));
    if (ac == NULL) {
        net_conn_close(&conn);
        return;
    }
    ac->srv = srv;
    ac->conn = conn;
    ac->state = AC_READING;
    snprintf(ac->peer, sizeof(ac->peer), "%s", net_conn_peer_addr(conn));
    llhttp_init(&ac->parser, HTTP_REQUEST, &srv->settings);
    ac->parser.data = ac;
    uv_timer_init(srv->loop, &ac->deadline);
    ac->deadline.data = ac;
    uv_timer_start(&ac->deadline, on_deadline, srv->cfg.timeout_ms, 0);
    net_conn_set_max_input(conn, ADMIN_MAX_HEAD + ADMIN_MAX_BODY);
    net_conn_set_timeout(conn, srv->cfg.timeout_ms);
    net_conn_set_cb(conn, on_conn_event, ac);
    ac->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = ac;
    srv->conns = ac;
    srv->n_conns++;
}

admin_server *admin_start(uv_loop_t *loop, const struct admin_config *cfg, metrics *reg,
                          const struct admin_mail *mail, const struct admin_hooks *hooks,
                          char **error_r)
{
    admin_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return NULL;
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->address = strdup(cfg->address ? cfg->address : "127.0.0.1");
    srv->cfg.address = srv->address;
    if (srv->cfg.timeout_ms == 0)
        srv->cfg.timeout_ms = 10000;
    if (srv->cfg.max_connections == 0)
        srv->cfg.max_connections = 16;
    srv->reg = reg;
    srv->mail = mail;
    if (hooks)
        srv->hooks = *hooks;
    srv->requests = metrics_counter(reg, "qumail_admin_requests_total",
                                    "Requests answered by the admin listener, by route and "
                                    "status code.",
                                    2, "path", "code");
    llhttp_settings_init(&srv->settings);
    srv->settings.on_method = on_method;
    srv->settings.on_url = on_url;
    srv->settings.on_header_field = on_head_bytes;
    srv->settings.on_header_value = on_head_bytes;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;
    if (srv->address == NULL ||
        (srv->listener = net_listen(loop, srv->address, cfg->port, on_accept, srv, error_r)) ==
            NULL) {
        free(srv->address);
        free(srv);
        return NULL;
    }
    return srv;
}

uint16_t admin_port(const admin_server *srv)
{
    return net_listener_port(srv->listener);
}

void admin_set_mail(admin_server *srv, const struct admin_mail *mail)
{
    srv->mail = mail;
}

void admin_stop(admin_server **srvp)
{
    if (srvp == NULL || *srvp == NULL)
        return;
    admin_server *srv = *srvp;
    net_listener_close(&srv->listener);
    while (srv->conns)
        ac_enter(srv->conns, AC_CLOSED);
    free(srv->address);
    free(srv);
    *srvp = NULL;
}
