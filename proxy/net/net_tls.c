/* TLS contexts: one SSL_CTX per configured role, with verification on
 * unless the configuration says otherwise. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net.h"
#include "net_internal.h"

struct net_tls {
    SSL_CTX *ctx;
    bool server;
    bool verify_peer;
};

const char *net_strerror(int code)
{
    switch (code) {
    case NET_ETLS: return "TLS failure";
    case NET_EVERIFY: return "peer certificate not accepted";
    case NET_EINPUT: return "input limit exceeded";
    case NET_ETIMEDOUT: return "idle timeout";
    case NET_ESTATE: return "operation not valid in this connection state";
    default: return code < 0 && code > -4096 ? uv_strerror(code) : "unknown error";
    }
}

/* Appends OpenSSL's queued errors to msg; clears the queue. */
void net_ssl_errors(char *buf, size_t buflen, const char *prefix)
{
    size_t used = (size_t)snprintf(buf, buflen, "%s", prefix);
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (used + 3 >= buflen)
            continue; /* drain the queue even when out of room */
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        int n = snprintf(buf + used, buflen - used, ": %s", one);
        if (n > 0)
            used += (size_t)n < buflen - used ? (size_t)n : buflen - used - 1;
    }
}

static char *errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *errorf(const char *fmt, ...)
{
    char msg[768];
    char detail[512];
    net_ssl_errors(detail, sizeof(detail), "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t len = strlen(msg);
    snprintf(msg + len, sizeof(msg) - len, "%s", detail);
    return strdup(msg);
}

static int parse_version(const char *name, int *version_r)
{
    if (name == NULL || strcmp(name, "TLSv1.2") == 0) {
        *version_r = TLS1_2_VERSION;
        return 0;
    }
    if (strcmp(name, "TLSv1.3") == 0) {
        *version_r = TLS1_3_VERSION;
        return 0;
    }
    return -1;
}

net_tls *net_tls_new(const struct net_tls_config *cfg, char **error_r)
{
    int min_version;
    *error_r = NULL;
    ERR_clear_error();
    if (parse_version(cfg->min_version, &min_version) < 0) {
        *error_r = strdup("min_version must be \"TLSv1.2\" or \"TLSv1.3\"");
        return NULL;
    }
    if (cfg->server && (cfg->cert_file == NULL || cfg->key_file == NULL)) {
        *error_r = strdup("a TLS server needs cert_file and key_file");
        return NULL;
    }
    if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
        *error_r = strdup("cert_file and key_file go together");
        return NULL;
    }

    SSL_CTX *ctx = SSL_CTX_new(cfg->server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        *error_r = errorf("%s", "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version);
    /* Renegotiation would make SSL_write need input; nobody needs it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

    if (cfg->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, cfg->ciphers) != 1) {
        *error_r = errorf("invalid cipher list '%s'", cfg->ciphers);
        goto fail;
    }
    if (cfg->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
            *error_r = errorf("cannot load certificate %s", cfg->cert_file);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
            *error_r = errorf("cannot load private key %s", cfg->key_file);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            *error_r = errorf("private key %s does not match the certificate", cfg->key_file);
            goto fail;
        }
    }
    if (cfg->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
            *error_r = errorf("cannot load CA file %s", cfg->ca_file);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        *error_r = errorf("%s", "cannot load the system CA store");
        goto fail;
    }
    if (cfg->verify_peer) {
        int mode = SSL_VERIFY_PEER;
        if (cfg->server) {
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
            if (cfg->ca_file != NULL) {
                STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
                if (names != NULL)
                    SSL_CTX_set_client_CA_list(ctx, names);
            }
        }
        SSL_CTX_set_verify(ctx, mode, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (cfg->server) {
        static const unsigned char sid_ctx[] = "qumail";
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    }

    net_tls *tls = calloc(1, sizeof(*tls));
    if (tls == NULL) {
        *error_r = strdup("out of memory");
        goto fail;
    }
    tls->ctx = ctx;
    tls->server = cfg->server;
    tls->verify_peer = cfg->verify_peer;
    return tls;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void net_tls_free(net_tls **tlsp)
{
    net_tls *tls = *tlsp;
    if (tls == NULL)
        return;
    SSL_CTX_free(tls->ctx);
    free(tls);
    *tlsp = NULL;
}

SSL_CTX *net_tls_ctx(const net_tls *tls) { return tls->ctx; }
bool net_tls_is_server(const net_tls *tls) { return tls->server; }
bool net_tls_verifies(const net_tls *tls) { return tls->verify_peer; }
