/* smtp_load: internal interfaces shared by the load generator's files.
 *
 *   load_opts.c    command line -> struct sl_opts
 *   load_msg.c     the message text sent by every client
 *   load_stats.c   latency samples and percentiles
 *   load_client.c  one SMTP client connection (explicit state machine)
 *   smtp_load.c    main: set up the run, drive the loop, print the figures
 */
#ifndef SMTP_LOAD_H
#define SMTP_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

#define SL_MAX_RCPTS 1000
#define SL_MAX_SIZE ((size_t)1 << 30) /* 1 GiB message size cap */
#define SL_MAX_CONCURRENCY 10000u

struct sl_opts {
    char *host;        /* owned */
    int port;
    unsigned concurrency;
    size_t size;       /* requested message size in bytes (headers + body) */
    uint64_t count;    /* total messages; 0 when seconds is used */
    double seconds;    /* run duration; 0 when count is used */
    char *from;        /* owned */
    char **to;         /* owned array of owned strings */
    size_t nto;
    char *ehlo;        /* owned */
    double timeout;    /* seconds to wait for any reply */
    bool json;         /* print one JSON object instead of text */
};

/* Returns 0, or -1 with a message in *error_r (static or owned by opts). */
int sl_opts_parse(struct sl_opts *o, int argc, char **argv, const char **error_r);
void sl_opts_usage(FILE *out);
void sl_opts_clear(struct sl_opts *o);

/* The message: per-message Message-ID header (written by the client) plus
 * one shared text holding the rest of the message and the final ".\r\n". */
struct sl_msg {
    char *shared;      /* owned: headers after Message-ID, body, ".\r\n" */
    size_t shared_len; /* including ".\r\n" */
    size_t size;       /* exact message size: Message-ID line + shared - 3 */
};
#define SL_MSGID_LEN 59 /* strlen of one Message-ID line, see load_msg.c */
int sl_msg_build(struct sl_msg *m, const struct sl_opts *o, const char **error_r);
/* Writes the Message-ID line (SL_MSGID_LEN bytes, no NUL) into out. */
void sl_msg_id_line(char out[SL_MSGID_LEN + 1], unsigned client, uint64_t seq);
void sl_msg_clear(struct sl_msg *m);

struct sl_stats {
    uint64_t *lat_ns;  /* owned; latency of each accepted message */
    size_t n, cap;
    bool sorted;
};
int sl_stats_add(struct sl_stats *s, uint64_t ns);
uint64_t sl_stats_percentile(struct sl_stats *s, double pct); /* 0 if empty */
double sl_stats_mean(const struct sl_stats *s);
void sl_stats_clear(struct sl_stats *s);

enum sl_err {
    SL_ERR_CONNECT, SL_ERR_GREETING, SL_ERR_EHLO, SL_ERR_MAIL, SL_ERR_RCPT,
    SL_ERR_DATA, SL_ERR_BODY, SL_ERR_RSET, SL_ERR_TIMEOUT, SL_ERR_IO,
    SL_ERR_PROTOCOL, SL_ERR__COUNT
};
extern const char *const sl_err_names[SL_ERR__COUNT];

/* Shared state of one run. */
struct sl_run {
    uv_loop_t *loop;
    const struct sl_opts *opts;
    const struct sl_msg *msg;
    struct sockaddr_storage addr;
    uint64_t deadline_ms;  /* uv_now() limit in duration mode, else 0 */
    uint64_t claimed;      /* messages started */
    uint64_t ok;           /* messages accepted (final 250 after DATA) */
    uint64_t failed;       /* messages started and not accepted */
    uint64_t errors[SL_ERR__COUNT];
    uint64_t t_start_ns;   /* uv_hrtime() when the clients start */
    uint64_t t_last_ns;    /* uv_hrtime() when the last message ended */
    unsigned active;       /* clients not yet finished */
    struct sl_stats stats;
    bool fatal;            /* out of memory: stop everything */
    char first_error[320]; /* the first error seen, for the report */
};

/* true when another message may be started (and counts it as claimed) */
bool sl_run_claim(struct sl_run *r);
/* true when work remains (does not claim) */
bool sl_run_more(const struct sl_run *r);

struct sl_client;
/* Allocates a client and starts connecting; 0 or a negative errno/uv code. */
int sl_client_start(struct sl_run *run, unsigned id, struct sl_client **out);
/* Frees a client whose handles are closed (after the loop has ended). */
void sl_client_free(struct sl_client **c);

#endif
