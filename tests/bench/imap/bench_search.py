#!/usr/bin/env python3
"""SEARCH benchmark (issue 13): `UID SEARCH BODY <word>` over N encrypted
messages through the proxy - cold (right after a proxy restart: every
message read from the server and decrypted, keys from the vault) and warm
(views in the proxy's cache) - against Dovecot's own SEARCH BODY over the
same plaintext mailbox directly, in the same run; also `UID SEARCH SUBJECT`
(answered from the vault's metadata, no decryption). Every answer through
the proxy must equal Dovecot's on the plaintext.

    tests/bench/imap/bench_search.py [--sizes 1000,10000] [--quick]

Release build: QUMAIL_BUILD=build-rel QUMAIL_BIN=build-rel/qumail. The
proxy runs with imap.search.max_decrypt raised above the largest size (the
default, 2000, would refuse a cold body search over 10,000 with NO
[LIMIT], which is the point of the limit). Prints seconds, messages
searched per second, % of direct, the proxy's and Dovecot's CPU per
message, and the load average; exits 1 on a wrong answer. Needs root (the
rig's Postfix/Dovecot)."""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "imap"))
sys.path.insert(0, HERE)

import bench_decrypt as D  # noqa: E402
import bench_imap as B  # noqa: E402
import encrypted as E  # noqa: E402
import imapstack as I  # noqa: E402

USER = E.USER
QUERIES = [
    (b"UID SEARCH BODY \"fox\"", "body, every message matches"),
    (b"UID SEARCH BODY \"line 7 of\"", "body, some match"),
    (b"UID SEARCH SUBJECT \"message 1\"", "subject (metadata)"),
]


def search(target, box, cmd):
    """(seconds, sorted UIDs) of one SEARCH."""
    c = target.connect(USER)
    try:
        c.select(box, readonly=True)
        t = time.perf_counter()
        untagged, tagged = c.command(cmd, check=True)
        secs = time.perf_counter() - t
    finally:
        c.logout()
    uids = sorted(int(x) for r in untagged if r.startswith(b"* SEARCH")
                  for x in r[8:].split())
    return secs, uids


def cpu(rig, kp):
    return B.cpu_ns(B.dovecot_pids(rig)), B.cpu_ns([kp.px.proc.pid] if kp.px.proc else [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--encrypt-threads", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 messages")
    args = ap.parse_args()
    sizes = [200] if args.quick else [int(x) for x in args.sizes.split(",")]
    I.need_root()
    ok, reason = I.proxy_support()
    if not ok:
        I.skip(reason)
    out = sys.stdout
    out.write("SEARCH benchmark, qumail %s, load average at start %s\n" % (I.QUMAIL,
                                                                         B.loadavg()))
    bad = 0
    with I.ImapRig(dovecot_extra=B.DOVECOT_BENCH) as rig:
        kp = E.KeyedProxy(rig, upstream_tls="none",
                          extra_imap={"search": {"max_decrypt": max(sizes) * 2}},
                          decrypt={"cache_size": "2G", "cache_views": 1000000})
        direct = rig.direct()
        proxy = I.Target("proxy", I.HOST, kp.px.ports["plain"])
        for n in sizes:
            t = time.monotonic()
            plain = [D.sweep_message(i) for i in range(n)]
            rig.load(USER, "Plain%d" % n, plain)
            rig.load(USER, "Enc%d" % n, D.encrypt_all(kp, plain, args.encrypt_threads))
            # every message read once: keys from the KME into the vault
            search(proxy, "Enc%d" % n, b"UID SEARCH BODY \"fox\"")
            out.write("\n%d messages, ~4 kB each, encrypted, stored and read once through "
                      "the proxy in %.0f s\n" % (n, time.monotonic() - t))
            out.write("%-34s %-6s %8s %9s %7s %9s %9s  %s\n" % (
                "query", "arm", "seconds", "msg/s", "%direct", "proxy", "dovecot",
                "load average"))
            out.write("%-34s %-6s %8s %9s %7s %9s %9s\n" % ("", "", "", "", "", "us/msg",
                                                           "us/msg"))
            for cmd, what in QUERIES:
                search(direct, "Plain%d" % n, cmd)  # warm Dovecot
                kp.px.restart()
                rows = []
                for arm, target, box in (("direct", direct, "Plain%d" % n),
                                         ("cold", proxy, "Enc%d" % n),
                                         ("warm", proxy, "Enc%d" % n),
                                         ("direct", direct, "Plain%d" % n)):
                    d0, p0 = cpu(rig, kp)
                    secs, uids = search(target, box, cmd)
                    d1, p1 = cpu(rig, kp)
                    rows.append((arm, secs, uids, (d1 - d0) / 1e3 / n, (p1 - p0) / 1e3 / n))
                ref_secs = (rows[0][1] + rows[3][1]) / 2
                want = rows[0][2]
                for arm, secs, uids, dus, pus in rows:
                    flag = ""
                    if uids != want:
                        bad += 1
                        flag = "  WRONG ANSWER (%d vs %d matches)" % (len(uids), len(want))
                    out.write("%-34s %-6s %8.3f %9.0f %7s %9s %9.1f  %s%s\n" % (
                        what, arm, secs, n / secs,
                        "-" if arm == "direct" else "%.0f%%" % (100.0 * ref_secs / secs),
                        "-" if arm == "direct" else "%.1f" % pus, dus, B.loadavg(), flag))
                    out.flush()
        st = kp.px.stop(remove=False)
        if st != 0:
            bad += 1
            out.write("proxy exit status %r on SIGTERM\n" % st)
    out.write("\n%s; load average at end %s\n" % (
        "every answer equal to Dovecot's on the plaintext" if not bad else
        "%d wrong answers" % bad, B.loadavg()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
