/* The KME-to-KME link: one mutual-TLS connection per direction of key
 * flow. The master-side KME (whose SAEs call enc_keys) connects to the
 * peer's link listener and streams (1) the simulated QKD key material it
 * generated, once, and (2) reservations: "bytes [off, off+len) of the
 * stream are key_ID X of master M for slaves S". The peer answers with
 * cumulative acks of what it has committed. Newline-delimited JSON; the
 * protocol is specified in kme/README.md ("Link protocol").
 *
 * Sender states:   CONNECTING -> HANDSHAKE -> HELLO -> READY
 * Receiver states: HANDSHAKE -> HELLO -> READY
 * Any error closes the connection; the sender retries every second and
 * the hello exchange resynchronises both ends from their durable state. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"
#include "log.h"

int link_send_json(net_conn *conn, json_t *msg)
{
    if (msg == NULL)
        return -1;
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL)
        return -1;
    int rc = net_conn_printf(conn, "%s\n", text);
    free(text);
    return rc;
}

bool link_peer_is(net_conn *conn, const char *kme_id)
{
    char cn[ETSI014_ID_MAX + 1];
    return net_conn_peer_subject(conn, "CN", cn, sizeof(cn)) > 0 &&
           strcmp(cn, kme_id) == 0;
}

/* Reads the next line as a JSON object; 1 got one, 0 need more, -1 bad. */
int link_read_msg(net_conn *conn, json_t **msg_r)
{
    *msg_r = NULL;
    size_t n = net_conn_line_len(conn);
    if (n == 0) {
        size_t have;
        net_conn_input(conn, &have);
        return have >= MAX_LINE ? -1 : 0;
    }
    size_t len;
    const char *data = net_conn_input(conn, &len);
    json_t *msg = json_loadb(data, n, JSON_REJECT_DUPLICATES, NULL);
    net_conn_consume(conn, n);
    if (!json_is_object(msg)) {
        json_decref(msg);
        return -1;
    }
    *msg_r = msg;
    return 1;
}

bool link_get_u64(json_t *msg, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(msg, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

void kme_link_kick(struct kme *k)
{
    if (k->lo != NULL)
        link_out_pump(k->lo);
    if (k->li != NULL)
        link_in_send_ack(k->li);
}

void kme_link_close_all(struct kme *k)
{
    if (k->lo != NULL)
        link_out_close(k->lo, NULL);
    while (k->li_all != NULL)
        link_in_close(k->li_all, NULL);
}

