/* Internals shared by smtp_session.c (connection, input, replies, state),
 * smtp_commands.c (the command table) and smtp_deliver.c (upstream
 * transactions for the groups of a message). */
#ifndef QUMAIL_SMTP_SESSION_INTERNAL_H
#define QUMAIL_SMTP_SESSION_INTERNAL_H

#include "smtp_authid.h"
#include "smtp_hdrfilter.h"
#include "smtp_proto.h"
#include "smtp_session.h"
#include "smtp_spool.h"

/* Every sub-state is a state: one transition place (smtp_enter_state,
 * which also holds input while upstream answers a relayed command), a name
 * table for logs. */
enum smtp_state {
    SMTP_STATE_UPSTREAM,      /* connecting upstream; greeting not sent yet */
    SMTP_STATE_TLS,           /* implicit TLS or STARTTLS handshake */
    SMTP_STATE_HELO,          /* waiting for EHLO/HELO */
    SMTP_STATE_READY,         /* no transaction */
    SMTP_STATE_AUTH_UPSTREAM, /* an AUTH line is with upstream (input held) */
    SMTP_STATE_AUTH_CLIENT,   /* a 334 was relayed: the client's answer is
                                 next (relayed, never logged) */
    SMTP_STATE_MAIL_UPSTREAM, /* MAIL relayed, its reply due (input held) */
    SMTP_STATE_MAIL,          /* sender accepted */
    SMTP_STATE_RCPT_UPSTREAM, /* RCPT relayed, its reply due (input held) */
    SMTP_STATE_RCPT,          /* at least one recipient accepted */
    SMTP_STATE_DATA,          /* reading the DATA stream */
    SMTP_STATE_BDAT,          /* reading a BDAT chunk */
    SMTP_STATE_BDAT_DISCARD,  /* reading a refused BDAT chunk (RFC 3030 2:
                                 consumed, then answered with its error) */
    SMTP_STATE_CHUNKED,       /* between the BDAT chunks of a transaction:
                                 no RCPT, no DATA */
    SMTP_STATE_SKIP_LINE,     /* discarding the rest of an overlong line */
    SMTP_STATE_PROCESSING,    /* message hook at work (keys, encryption) */
    SMTP_STATE_DELIVERING,    /* upstream transactions */
    SMTP_STATE_CLOSING,       /* final: the session is being destroyed */
    SMTP_STATE_COUNT
};

struct delivery_run; /* smtp_deliver.c */

/* Phases with an overall deadline (smtp_guard.c). */
enum smtp_phase {
    SMTP_PHASE_LINE,   /* a command line, from the moment one is awaited */
    SMTP_PHASE_DATA,   /* a message body (DATA) or one BDAT chunk */
    SMTP_PHASE_TLS,    /* a TLS handshake (implicit or STARTTLS) */
    SMTP_PHASE_AUTH,   /* an AUTH exchange, command to final reply */
    SMTP_PHASE_COUNT,
};

struct smtp_guard {
    uint64_t end[SMTP_PHASE_COUNT]; /* loop time each must end by; 0: idle */
    uint64_t left[SMTP_PHASE_COUNT]; /* suspended while upstream works */
    uint64_t data_start, data_bytes; /* DATA: extends with data_min_rate */
    unsigned hide_lines;   /* lines kept out of the log after a refused AUTH */
    bool hide_until_dot;   /* message lines after a refused DATA */
};

#define SMTP_HEADER_KEEP 16384 /* header block handed to the message hook */
/* RFC 4954 4: an AUTH command with its initial response, and each line of
 * the exchange, may be 12288 octets (OAuth bearer tokens are long), more
 * than max_line_length allows other commands. */
#define SMTP_AUTH_LINE_MAX 12288

struct smtp_session {
    uv_loop_t *loop;
    enum smtp_state state;
    net_conn *conn;
    smtp_client *up;
    struct smtp_session_config cfg; /* strings below are copies */
    char *hostname, *listener, *spool_dir;
    struct smtp_session_hooks hooks;
    void *hooks_ctx;
    char id[16];
    char peer[64];

    /* session facts */
    char *helo;
    char *line_buf;          /* current command line (line_cap bytes) */
    size_t line_cap;
    char *hdr_buf;           /* header block of the current message */
    bool esmtp;
    bool authenticated;
    /* The identity of the AUTH exchange under way, then (after 235) who
     * authenticated, escaped, for the logs: never a password. */
    struct smtp_authid authid;
    char auth_user[SMTP_AUTHID_MAX], auth_authzid[SMTP_AUTHID_MAX];
    unsigned bad_commands;
    unsigned busy;           /* entries on the stack (smtp_session_enter):
                                destruction waits for the last leave */
    enum smtp_state resume;  /* SKIP_LINE, BDAT_DISCARD: the state after */

    /* transaction */
    bool txn_upstream;       /* MAIL was accepted upstream (live txn) */
    char *from;
    char mail_params[SMTP_PARAM_MAX + 64]; /* BODY= SMTPUTF8 RET= ENVID= */
    bool smtputf8;
    struct smtp_rcpt *rcpts;
    size_t n_rcpts, cap_rcpts;
    char msg_id[16];
    /* the BDAT chunk being read (BDAT, BDAT_DISCARD) */
    uint64_t chunk_left;     /* bytes still to read */
    bool chunk_last;         /* BDAT ... LAST */
    const char *discard_reply; /* BDAT_DISCARD: the answer once consumed */

    /* body */
    smtp_spool *spool;
    struct smtp_data_reader reader;
    struct smtp_hdrfilter filter;

    struct delivery_run *run;
    struct smtp_guard guard;
};

/* smtp_session.c */
/* The one transition place: logs "old -> new" (debug), holds input while a
 * relayed command is with upstream (the *_UPSTREAM states) and offers
 * buffered input again after, and keeps CLOSING final. */
void smtp_enter_state(smtp_session *s, enum smtp_state st);
const char *smtp_state_name(enum smtp_state st);
/* Around every entry from the loop (net and upstream callbacks, the hooks'
 * answers): the session stays allocated until the matching leave, which
 * destroys it when it was closed meanwhile and nothing else is on the
 * stack. leave may free s. */
void smtp_session_enter(smtp_session *s);
void smtp_session_leave(smtp_session *s);
/* The one reply function, for every reply the client gets (greeting,
 * EHLO lines, 334 challenges included): "code enh text" (text may hold
 * '\n' for a multi-line reply). enh "" picks the class default ("2.0.0"),
 * NULL sends none (greeting, EHLO; 3xx never get one). Replies during an
 * AUTH exchange are redacted in the log. */
void smtp_reply(smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void smtp_reply_code(smtp_session *s, int code, const char *enh, const char *text);
void smtp_txn_reset(smtp_session *s);      /* local transaction state, spool file */
void smtp_session_schedule_close(smtp_session *s, bool after_write);
bool smtp_upstream_usable(smtp_session *s); /* else replies 421, closes */
/* -1 (logged) when the spool file cannot be made: the caller answers 451. */
int smtp_body_begin(smtp_session *s);
void smtp_body_end(smtp_session *s);
uint64_t smtp_advertised_size(const smtp_session *s);

/* smtp_commands.c */
/* line: the session's line buffer (NUL-terminated), modified in place. */
void smtp_command(smtp_session *s, char *line, size_t len);
void smtp_bdat_chunk_done(smtp_session *s);

/* smtp_guard.c: phase deadlines (one net_conn deadline at the earliest)
 * and log redaction. */
void smtp_phase_start(smtp_session *s, enum smtp_phase p);
void smtp_phase_progress(smtp_session *s, size_t bytes); /* DATA/BDAT bytes */
void smtp_phase_end(smtp_session *s, enum smtp_phase p);
bool smtp_phase_running(const smtp_session *s, enum smtp_phase p);
/* While upstream works on a command the clock of the client's phases
 * stops (upstream's own timeout covers it), and runs on after. */
void smtp_phase_suspend(smtp_session *s);
void smtp_phase_continue(smtp_session *s);
/* The deadline fired: name of the phase that ran out, or NULL if none has
 * (re-armed then). */
const char *smtp_phase_expired(smtp_session *s);
enum smtp_log_view { SMTP_LOG_LINE, SMTP_LOG_VERB, SMTP_LOG_NOTHING };
/* The one redaction decision: what the log may show of a client line, by
 * session state and by content. */
enum smtp_log_view smtp_log_view(const struct smtp_guard *g, enum smtp_state st,
                                 const struct smtp_cmd *cmd, bool valid);
/* Logs a client command line (debug level) as smtp_log_view allows and
 * advances the redaction state. */
void smtp_log_client_line(smtp_session *s, const struct smtp_cmd *cmd, bool valid,
                          const char *line, size_t len);
/* AUTH or DATA was refused: the client may go on sending secrets blindly. */
void smtp_guard_refused(smtp_session *s, enum smtp_verb verb);

/* smtp_deliver.c */
void smtp_deliver_free(smtp_session *s);

#endif
