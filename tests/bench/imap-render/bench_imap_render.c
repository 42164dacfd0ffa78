/* Part tree + rendering cost for 10 kB and 1 MB messages, the work the
 * IMAP proxy adds per decrypted message on top of decryption: parse
 * (normalise + tree), BODYSTRUCTURE, BODY, ENVELOPE and the sections a
 * client sweep asks for. Prints the load average next to every figure.
 *
 * usage: bench_imap_render [--quick]
 * Build Release without sanitizers to measure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imap_render.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A Thunderbird-like message: alternative text/html + a base64 attachment
 * of about size bytes, LF line ends (normalisation included). */
static char *make_message(size_t size, size_t *len_r)
{
    size_t cap = size * 2 + 4096, n = 0;
    char *m = malloc(cap);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    n += (size_t)sprintf(m + n,
        "From: Alice Example <alice@example.org>\nTo: Bob <bob@example.org>, "
        "Carol <carol@example.net>\nCc: team: dave@example.net, erin@example.org;\n"
        "Subject: =?UTF-8?Q?Quarterly_figures_=E2=80=93_draft?=\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\nMessage-ID: <bench@example.org>\n"
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"mix\"\n\n"
        "--mix\nContent-Type: multipart/alternative; boundary=\"alt\"\n\n"
        "--alt\nContent-Type: text/plain; charset=utf-8; format=flowed\n\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)sprintf(m + n, "Line %d of the plain text body, about seventy characters.\n", i);
    n += (size_t)sprintf(m + n, "--alt\nContent-Type: text/html; charset=utf-8\n\n<html><body>");
    for (int i = 0; i < 20; i++)
        n += (size_t)sprintf(m + n, "<p>Line %d of the HTML body.</p>\n", i);
    n += (size_t)sprintf(m + n, "</body></html>\n--alt--\n\n--mix\n"
        "Content-Type: application/pdf; name=\"figures.pdf\"\n"
        "Content-Transfer-Encoding: base64\n"
        "Content-Disposition: attachment; filename=\"figures.pdf\"\n\n");
    while (n + 80 < size) {
        for (int i = 0; i < 76; i++)
        {
            m[n] = b64[(n * 7 + (size_t)i) % 64];
            n++;
        }
        m[n++] = '\n';
    }
    n += (size_t)sprintf(m + n, "--mix--\n");
    *len_r = n;
    return m;
}

static void run(const char *name, size_t size, int rounds)
{
    size_t len;
    char *msg = make_message(size, &len);
    double t0, t_parse = 0, t_render = 0, load[3] = {0};
    size_t out_bytes = 0;

    for (int r = 0; r < rounds; r++) {
        struct mime_struct *ms = NULL;
        struct imap_render_buf b = {0};
        static const char *specs[] = {
            "HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type)",
            "1.1", "1.2", "2.MIME", "2", "TEXT"};
        t0 = now();
        if (mime_struct_parse(msg, len, 0, &ms, NULL) != 0)
            abort();
        t_parse += now() - t0;
        t0 = now();
        imap_render_bodystructure(ms, 1, &b);
        imap_render_bodystructure(ms, 0, &b);
        imap_render_envelope(ms, &b);
        for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
            struct imap_section sec;
            struct imap_section_data d;
            uint32_t path[8];
            const char *fields[16];
            char names[256];
            if (imap_render_section_parse(specs[i], &sec, path, 8, fields, 16, names) != 0 ||
                imap_render_section(ms, &sec, &d) != 0)
                abort();
            out_bytes += d.len;
            imap_section_data_free(&d);
        }
        t_render += now() - t0;
        out_bytes += b.len;
        imap_render_buf_free(&b);
        mime_struct_free(&ms);
    }
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("%-6s %8zu bytes  parse %8.1f us (%7.1f MB/s)  render %6.1f us  "
           "total %8.1f us  [load %.2f]\n",
           name, len, t_parse / rounds * 1e6, len / (t_parse / rounds) / 1e6,
           t_render / rounds * 1e6, (t_parse + t_render) / rounds * 1e6, load[0]);
    if (out_bytes == 0)
        abort();
    free(msg);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    run("10kB", (size_t)10 * 1024, quick ? 20 : 5000);
    run("1MB", (size_t)1024 * 1024, quick ? 3 : 200);
    return 0;
}
