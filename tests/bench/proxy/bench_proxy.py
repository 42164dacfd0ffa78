#!/usr/bin/env python3
"""SMTP proxy benchmark: messages/s and latency through `qumail proxy`
versus directly to the same Postfix, in the same run.

    tests/bench/proxy/bench_proxy.py [--concurrency 1,10,100]
        [--sizes 10240,1048576] [--count N] [--level aes|otp] [--json FILE]

Arms (alternating within each cell, tests/bench/smtp-load/bench.py):
  direct  smtp_load -> Postfix smtpd (MTA port) -> LMTP -> Dovecot
  proxy   smtp_load -> qumail proxy (gateway mode, plain loopback listener,
          embedded KME simulator as key source, policy: recipient requires
          protection at --level) -> the same Postfix port
Each proxied message costs one ETSI 014 enc_keys round trip to the
simulated KME (plus a status call per session's first message); the KME's
own request times are read from the proxy log and printed, so the added
latency can be judged "beyond the KME round trip". Afterwards: proxy RSS
per connection (200 idle sessions after EHLO, each with its own upstream
connection), from /proc/PID/status VmRSS.

Use a Release build (QUMAIL_BIN, SMTP_LOAD or build folders with "rel" in
the name are preferred). Needs root (mailstack harness)."""

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "smtp"))
sys.path.insert(0, os.path.join(SRC, "tests", "bench", "smtp-load"))


def find_qumail():
    if os.environ.get("QUMAIL_BIN"):
        return os.environ["QUMAIL_BIN"]
    builds = sorted(d for d in os.listdir(SRC) if d.startswith("build"))
    builds.sort(key=lambda d: 0 if "rel" in d.lower() else 1)
    for d in builds:
        p = os.path.join(SRC, d, "qumail")
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("qumail not built")


os.environ["QUMAIL_BIN"] = find_qumail()
os.environ.setdefault("QUMAIL_SRC", SRC)

import bench  # noqa: E402
import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _reply(f):
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line


def rss_per_connection(px, n=200):
    """Opens n sessions (greeting and EHLO answered: each has its upstream
    connection too), then sends one 10 kB message on each; returns RSS in
    KiB before, with the idle sessions, and after the messages."""
    time.sleep(0.5)
    before = rss_kb(px.proc.pid)
    socks = []
    msg = (b"From: <alice@example.org>\r\nTo: <erin@sub.example.org>\r\nSubject: rss\r\n\r\n" +
           b"x" * 76 + b"\r\n") * 1
    body = msg + (b"y" * 76 + b"\r\n") * 128 + b".\r\n"
    try:
        for _ in range(n):
            s = socket.create_connection((px.host, px.ports["plain"]), timeout=60)
            socks.append((s, s.makefile("rb")))
        for s, f in socks:
            _reply(f)                          # 220 (after upstream is ready)
            s.sendall(b"EHLO rss.test\r\n")
        for s, f in socks:
            _reply(f)
        time.sleep(0.5)
        idle = rss_kb(px.proc.pid)
        for s, f in socks:
            s.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<erin@sub.example.org>\r\n"
                      b"DATA\r\n")
            for _ in range(3):
                _reply(f)
            s.sendall(body)
        for s, f in socks:
            _reply(f)
        time.sleep(0.5)
        used = rss_kb(px.proc.pid)
    finally:
        for s, f in socks:
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
            s.close()
    return before, idle, used


def kme_times(log):
    """enc_keys request times (ms) the simulated KME logged."""
    return [int(m) for m in re.findall(r"POST /api/v1/keys/\S+/enc_keys -> 200 .* (\d+)ms",
                                        log)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,10,100")
    ap.add_argument("--sizes", default="10240,1048576")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--level", default="aes", choices=("aes", "otp"))
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")
    ap.add_argument("--rss-sessions", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("skipped: needs root for the mailstack harness")
        return 77
    concs = [int(x) for x in args.concurrency.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    count_for = (lambda c, s: args.count) if args.count else None
    work = tempfile.mkdtemp(prefix="bench-proxy-")
    certs = P.make_certs(work)
    policy = ("bob@example.org action=require level=%s link=site slave_sae=SAE_B\n"
              "* action=none\n" % args.level)
    sys.stderr.write("qumail: %s\nsmtp_load: %s\n" % (os.environ["QUMAIL_BIN"],
                                                       bench.find_smtp_load()))
    n_rss = args.rss_sessions
    rss_before = rss_idle = rss_used = 0
    if n_rss > 0:
        with M.MailStack() as ms, \
                P.ProxyStack(certs, ms.smtp_port, mode="gateway", listeners=("plain",),
                             policy="* action=none\n", workdir=work,
                             kme_url="https://127.0.0.1:9",
                             limits={"max_connections": 1000}) as rpx:
            # Memory per session on a proxy of its own without the embedded
            # KME (whose start-up churn leaves freed heap that sessions would
            # reuse unnoticed): plain pass-through, so the spool, line and
            # body buffers of a session that carried a message are counted.
            rss_before, rss_idle, rss_used = rss_per_connection(rpx, n_rss)
    with M.MailStack() as ms, \
            P.ProxyStack(certs, ms.smtp_port, mode="gateway", listeners=("plain",),
                         policy=policy, workdir=work, trace_header=True,
                         limits={"max_connections": 1000}, log_level="debug",
                         kme_timeout="30s") as px:
        arms = {"direct": (ms.host, ms.smtp_port), "proxy": (px.host, px.ports["plain"])}
        rows, kme_cells, first = [], {}, True
        for size in sizes:
            for conc in concs:
                mark = len(px.log_text())
                rows += bench.run_matrix(arms, [conc], [size], count_for, stack=ms,
                                         warmup=first and not args.no_warmup)
                first = False
                kme_cells[(size, conc)] = sorted(kme_times(px.log_text()[mark:]))
        log = px.log_text()
        kt = kme_times(log)
        status = px.stop()
    print("SMTP proxy benchmark: smtp_load -> [qumail proxy, gateway, level=%s, "
          "embedded KME simulator] -> Postfix smtpd -> LMTP -> Dovecot" % args.level)
    bench.print_table(rows)
    print()
    print("added p50 beyond the KME round trip (enc_keys time as the simulator logged it)")
    print("%-8s %4s %12s %12s %14s" % ("size", "conc", "+p50 ms", "KME p50 ms", "beyond KME ms"))
    by = {(r["arm"], r["requested_size"], r["concurrency"]): r for r in rows}
    for (size, conc), times in kme_cells.items():
        d, p = by.get(("direct", size, conc)), by.get(("proxy", size, conc))
        if not d or not p or not times:
            continue
        added = p["latency_ms"]["p50"] - d["latency_ms"]["p50"]
        k = times[len(times) // 2]
        print("%-8s %4d %12.2f %12d %14.2f" % (bench._size_label(size), conc, added, k, added - k))
    if kt:
        kt.sort()
        print("KME enc_keys request time (simulator, as logged): n=%d p50=%d ms p99=%d ms"
              % (len(kt), kt[len(kt) // 2], kt[min(len(kt) - 1, int(len(kt) * 0.99))]))
    if n_rss > 0:
        print("proxy RSS (own instance, no KME): %d KiB, %d KiB with %d idle sessions "
              "(EHLO done, upstream connected) -> %.1f KiB per session; after one 10 kB "
              "message on each: %d KiB -> %.1f KiB per session"
              % (rss_before, rss_idle, n_rss, (rss_idle - rss_before) / float(n_rss),
                 rss_used, (rss_used - rss_before) / float(n_rss)))
    print("proxy exit status: %r" % status)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "kme_ms": kt,
                       "rss_kb": [rss_before, rss_idle, rss_used, n_rss]}, f, indent=1)
    return 1 if any(r["errors"] for r in rows) or status != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
