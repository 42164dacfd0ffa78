/* Internals shared by the link's files: link.c (message helpers, kick,
 * close), link_out.c (the sender, master side), link_in.c (the receiver,
 * slave side). The protocol is described in link.c and kme/README.md. */
#ifndef QUMAIL_KME_LINK_INTERNAL_H
#define QUMAIL_KME_LINK_INTERNAL_H

#include <jansson.h>

#include "server_internal.h"

#define MAX_LINE ((size_t)64 << 10)
#define MATERIAL_CHUNK 1024        /* bytes per "m" message (and stored row) */
#define SEND_HIGH_WATER ((size_t)256 << 10)
#define RETRY_MS ((uint64_t)1000)
#define PING_MS 10000              /* sender pings an idle link */
#define LINK_TIMEOUT_MS 30000      /* no input for this long: link dead */


/* Writes msg (consumed) as one line. 0 or a negative code. */
int link_send_json(net_conn *conn, json_t *msg);
/* True when the verified peer certificate's CN is kme_id. */
bool link_peer_is(net_conn *conn, const char *kme_id);
/* Next line as a JSON object: 1 got one, 0 need more, -1 malformed. */
int link_read_msg(net_conn *conn, json_t **msg_r);
bool link_get_u64(json_t *msg, const char *name, uint64_t *out);

/* Splits one "m" line (LF included) of the fixed form
 * {"t":"m","off":<digits>,"data":"<base64>"}: 0 with the offset and the
 * base64 text (pointer into line), or -1. Does not decode. */
int link_parse_material(const char *line, size_t n, uint64_t *off_r,
                        const char **b64_r, size_t *blen_r);

void link_out_close(struct link_out *lo, const char *why);
void link_out_pump(struct link_out *lo);
void link_in_close(struct link_in *li, const char *why);
void link_in_send_ack(struct link_in *li);

#endif
