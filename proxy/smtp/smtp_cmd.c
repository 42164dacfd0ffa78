/* SMTP command line parser: verb, path, ESMTP parameters. No I/O. */
#include "smtp_proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    enum smtp_verb verb;
    const char *name;
} verbs[] = {
    {SMTP_CMD_HELO, "HELO"}, {SMTP_CMD_EHLO, "EHLO"},
    {SMTP_CMD_STARTTLS, "STARTTLS"}, {SMTP_CMD_AUTH, "AUTH"},
    {SMTP_CMD_MAIL, "MAIL"}, {SMTP_CMD_RCPT, "RCPT"},
    {SMTP_CMD_DATA, "DATA"}, {SMTP_CMD_BDAT, "BDAT"},
    {SMTP_CMD_RSET, "RSET"}, {SMTP_CMD_NOOP, "NOOP"},
    {SMTP_CMD_QUIT, "QUIT"}, {SMTP_CMD_VRFY, "VRFY"},
    {SMTP_CMD_EXPN, "EXPN"}, {SMTP_CMD_HELP, "HELP"},
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (verbs[i].verb == verb)
            return verbs[i].name;
    return "UNKNOWN";
}

/* Parses a decimal uint64 of at most 19 digits; -1 on anything else. */
static int parse_u64(const char *s, size_t len, uint64_t *v_r)
{
    if (len == 0 || len > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *v_r = v;
    return 0;
}

/* xtext (RFC 3461 4): printable ASCII except '+' and '=' unless as "+XX". */
static bool valid_xtext(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return false;
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

static int dsn_append(struct smtp_cmd *cmd, const char *p, size_t len)
{
    size_t cur = strlen(cmd->dsn);
    size_t need = len + (cur ? 1 : 0);
    if (need > SMTP_PARAM_MAX - cur)
        return -1;
    if (cur)
        cmd->dsn[cur++] = ' ';
    memcpy(cmd->dsn + cur, p, len);
    cmd->dsn[cur + len] = '\0';
    return 0;
}

static bool kw_is(const char *kw, size_t kwlen, const char *name)
{
    return strlen(name) == kwlen && strncasecmp(kw, name, kwlen) == 0;
}

/* One "keyword[=value]" of MAIL or RCPT. */
static int parse_param(struct smtp_cmd *cmd, const char *p, size_t len,
                       const char **error_r)
{
    const char *eq = memchr(p, '=', len);
    size_t kwlen = eq ? (size_t)(eq - p) : len;
    const char *val = eq ? eq + 1 : NULL;
    size_t vlen = eq ? len - kwlen - 1 : 0;

    if (kwlen == 0) {
        *error_r = "501 5.5.4 Syntax error in parameters";
        return -1;
    }
    if (cmd->verb == SMTP_CMD_MAIL) {
        if (kw_is(p, kwlen, "SIZE")) {
            if (!val || parse_u64(val, vlen, &cmd->size) < 0) {
                *error_r = "501 5.5.4 Invalid SIZE parameter";
                return -1;
            }
            cmd->has_size = true;
            return 0;
        }
        if (kw_is(p, kwlen, "BODY")) {
            if (val && vlen == 4 && strncasecmp(val, "7BIT", 4) == 0)
                cmd->body = SMTP_BODY_7BIT;
            else if (val && vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
                cmd->body = SMTP_BODY_8BITMIME;
            else {
                *error_r = "501 5.5.4 Unsupported BODY type";
                return -1;
            }
            return 0;
        }
        if (kw_is(p, kwlen, "SMTPUTF8")) {
            if (val) {
                *error_r = "501 5.5.4 SMTPUTF8 takes no value";
                return -1;
            }
            cmd->smtputf8 = true;
            return 0;
        }
        if (kw_is(p, kwlen, "AUTH")) /* RFC 4954 5: accepted, not relayed */
            return 0;
        if (kw_is(p, kwlen, "RET")) {
            if (!val || !((vlen == 4 && strncasecmp(val, "FULL", 4) == 0) ||
                          (vlen == 4 && strncasecmp(val, "HDRS", 4) == 0))) {
                *error_r = "501 5.5.4 Invalid RET parameter";
                return -1;
            }
        } else if (kw_is(p, kwlen, "ENVID")) {
            if (!val || vlen == 0 || vlen > 100 || !valid_xtext(val, vlen)) {
                *error_r = "501 5.5.4 Invalid ENVID parameter";
                return -1;
            }
        } else {
            *error_r = "555 5.5.4 Unsupported MAIL parameter";
            return -1;
        }
    } else {
        if (kw_is(p, kwlen, "NOTIFY")) {
            if (!val || vlen == 0) {
                *error_r = "501 5.5.4 Invalid NOTIFY parameter";
                return -1;
            }
            for (size_t i = 0; i < vlen; i++) {
                char c = val[i];
                if (!(isalpha((unsigned char)c) || c == ',')) {
                    *error_r = "501 5.5.4 Invalid NOTIFY parameter";
                    return -1;
                }
            }
        } else if (kw_is(p, kwlen, "ORCPT")) {
            if (!val || vlen == 0 || vlen > 500 || !memchr(val, ';', vlen) ||
                !valid_xtext(val, vlen)) {
                *error_r = "501 5.5.4 Invalid ORCPT parameter";
                return -1;
            }
        } else {
            *error_r = "555 5.5.4 Unsupported RCPT parameter";
            return -1;
        }
    }
    if (dsn_append(cmd, p, len) < 0) {
        *error_r = "501 5.5.4 Parameters too long";
        return -1;
    }
    return 0;
}

/* "FROM:<path> params" / "TO:<path> params". */
static int parse_path_cmd(struct smtp_cmd *cmd, const char *s, size_t len,
                          const char **error_r)
{
    const char *prefix = cmd->verb == SMTP_CMD_MAIL ? "FROM:" : "TO:";
    size_t plen = strlen(prefix);
    *error_r = cmd->verb == SMTP_CMD_MAIL ? "501 5.5.4 Syntax: MAIL FROM:<address>"
                                          : "501 5.5.4 Syntax: RCPT TO:<address>";
    if (len < plen || strncasecmp(s, prefix, plen) != 0)
        return -1;
    s += plen;
    len -= plen;
    while (len > 0 && *s == ' ') { /* tolerated by every MTA */
        s++;
        len--;
    }
    if (len == 0 || *s != '<')
        return -1;
    /* Find the closing '>' honouring a quoted local part. */
    size_t i = 1;
    bool quoted = false;
    for (; i < len; i++) {
        char c = s[i];
        if (quoted && c == '\\' && i + 1 < len) {
            i++;
            continue;
        }
        if (c == '"')
            quoted = !quoted;
        else if (!quoted && c == '>')
            break;
        else if (!quoted && (c == ' ' || c == '<'))
            return -1;
    }
    if (i >= len)
        return -1;
    const char *path = s + 1;
    size_t path_len = i - 1;
    /* Obsolete source route "@a,@b:user@d": keep only the mailbox. */
    if (path_len > 0 && path[0] == '@') {
        const char *colon = memchr(path, ':', path_len);
        if (!colon)
            return -1;
        path_len -= (size_t)(colon + 1 - path);
        path = colon + 1;
    }
    if (path_len > SMTP_PATH_MAX) {
        *error_r = "501 5.1.3 Address too long";
        return -1;
    }
    for (size_t k = 0; k < path_len; k++) {
        unsigned char c = (unsigned char)path[k];
        if (c < 32 || c == 127)
            return -1;
        if (c >= 128)
            cmd->path_utf8 = true;
    }
    if (path_len == 0 && cmd->verb == SMTP_CMD_RCPT)
        return -1;
    if (path_len > 0) {
        const char *at = NULL;
        for (size_t k = path_len; k > 0; k--) {
            if (path[k - 1] == '@') {
                at = path + k - 1;
                break;
            }
        }
        /* RCPT TO:<postmaster> is the one mailbox without a domain. */
        if (!at) {
            if (!(cmd->verb == SMTP_CMD_RCPT && path_len == 10 &&
                  strncasecmp(path, "postmaster", 10) == 0)) {
                *error_r = "501 5.1.3 Bad address syntax";
                return -1;
            }
        } else if (at == path || at == path + path_len - 1) {
            *error_r = "501 5.1.3 Bad address syntax";
            return -1;
        }
    }
    memcpy(cmd->path, path, path_len);
    cmd->path[path_len] = '\0';

    /* Parameters after '>'. */
    const char *p = s + i + 1;
    const char *end = s + len;
    if (p < end && *p != ' ')
        return -1;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        const char *q = p;
        while (q < end && *q != ' ')
            q++;
        if (parse_param(cmd, p, (size_t)(q - p), error_r) < 0)
            return -1;
        p = q;
    }
    if (cmd->path_utf8 && cmd->verb == SMTP_CMD_MAIL && !cmd->smtputf8) {
        *error_r = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
        return -1;
    }
    return 0;
}

static int parse_bdat(struct smtp_cmd *cmd, const char *s, size_t len,
                      const char **error_r)
{
    *error_r = "501 5.5.4 Syntax: BDAT <size> [LAST]";
    size_t i = 0;
    while (i < len && s[i] != ' ')
        i++;
    if (parse_u64(s, i, &cmd->chunk_size) < 0)
        return -1;
    while (i < len && s[i] == ' ')
        i++;
    if (i == len)
        return 0;
    size_t rest = len - i;
    while (rest > 0 && s[i + rest - 1] == ' ')
        rest--;
    if (rest == 4 && strncasecmp(s + i, "LAST", 4) == 0) {
        cmd->last = true;
        return 0;
    }
    return -1;
}

int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd,
                   const char **error_r)
{
    memset(cmd, 0, sizeof(*cmd));
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n') {
            *error_r = "500 5.5.2 Invalid characters in command";
            return -1;
        }
    }
    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    cmd->verb = SMTP_CMD_UNKNOWN;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strlen(verbs[i].name) == vlen &&
            strncasecmp(line, verbs[i].name, vlen) == 0) {
            cmd->verb = verbs[i].verb;
            break;
        }
    }
    const char *arg = line + vlen;
    size_t alen = len - vlen;
    while (alen > 0 && *arg == ' ') {
        arg++;
        alen--;
    }
    while (alen > 0 && arg[alen - 1] == ' ')
        alen--;
    cmd->arg = arg;
    cmd->arg_len = alen;

    switch (cmd->verb) {
    case SMTP_CMD_HELO:
    case SMTP_CMD_EHLO:
        if (alen == 0) {
            *error_r = "501 5.5.4 Syntax: EHLO hostname";
            return -1;
        }
        return 0;
    case SMTP_CMD_MAIL:
    case SMTP_CMD_RCPT:
        return parse_path_cmd(cmd, arg, alen, error_r);
    case SMTP_CMD_BDAT:
        return parse_bdat(cmd, arg, alen, error_r);
    case SMTP_CMD_AUTH:
        if (alen == 0) {
            *error_r = "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
            return -1;
        }
        return 0;
    case SMTP_CMD_STARTTLS:
    case SMTP_CMD_DATA:
    case SMTP_CMD_RSET:
    case SMTP_CMD_QUIT:
        if (alen != 0) {
            *error_r = "501 5.5.4 Syntax error (no parameters allowed)";
            return -1;
        }
        return 0;
    default:
        return 0;
    }
}
