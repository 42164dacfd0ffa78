#!/usr/bin/env python3
"""Decrypt-on-FETCH benchmark (issue 12): reads of encrypted mailboxes
through `qumail proxy` against direct reads of the same plaintext from the
same Dovecot, in the same run.

    tests/bench/imap/bench_decrypt.py            # full run (1,000 x 10 kB, 100 x 1 MB,
                                                 # 1/10/100 clients, sweep of 10,000)
    tests/bench/imap/bench_decrypt.py --quick    # smoke (ctest bench_imap_decrypt_smoke)
    options: --small N --large N --sweep N --clients 1,10,100 --json FILE
             --encrypt-threads N --python-clients

Datasets: N x 10 kB (text/plain, OTP: below the 64 kB auto threshold) and
N x 1 MB (multipart with a base64 attachment, AES-256-GCM), each stored
once in plaintext ("Plain10k", "Plain1M") and, per client count, once
more encrypted with fresh keys from the KME simulator ("Enc10k_C"...): a
first read must be a first read, and one key serves one message only.

Per dataset and client count C (all C clients send `UID FETCH 1:*
(BODY.PEEK[])` at once, imap_load):
  direct        Dovecot, plaintext mailbox (before and after the proxy's
                phases; the mean is the reference)
  first read    through the proxy, never read before: keys from the KME
                (dec_keys), decryption, views built; C clients share one
                build per message
  cached        the same again: views from memory
  after restart SIGTERM, start again: keys from the vault, each message
                downloaded and decrypted again
Every proxy row must deliver exactly the plaintext's octets (C x the
direct octets) - a notice or ciphertext would show as WRONG OCTETS.

Summary sweep: `UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE
ENVELOPE BODYSTRUCTURE)` over --sweep (10,000) messages of ~4 kB: the
encrypted mailbox is read once (metadata to the vault), the proxy
restarted, then swept (from the vault's metadata: nothing downloaded)
beside the same sweep of the plaintext mailbox directly; the answers are
compared (RFC822.SIZE ENVELOPE BODYSTRUCTURE equal for every message).

Printed per row: seconds, messages/s, MB/s of literal octets, the share of
direct, CPU microseconds per message of the proxy (qumail; the embedded
KME simulator runs in the same process) and of Dovecot, and the load
average. Goals (issue 12; not asserted): cached >= 70 % of direct; sweep
after restart within 2x of direct. Exit 1 on an error, short read or
wrong octets; 77 when the proxy does not decrypt yet (DECRYPT_BENCH_FORCE=1
runs it anyway: a check of the bench's own paths, every proxy row then
WRONG OCTETS).
"""

import argparse
import json
import os
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "imap"))
sys.path.insert(0, HERE)

import bench_imap as B  # noqa: E402
import encrypted as E  # noqa: E402
import imapstack as I  # noqa: E402
import imapwire as W  # noqa: E402
import loadgen as L  # noqa: E402

USER = E.USER
BODY = b"UID FETCH 1:* (BODY.PEEK[])"
SWEEP = b"UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE)"


def sweep_message(i):
    """~4 kB, a few shapes so BODYSTRUCTURE and ENVELOPE vary."""
    head = (b"From: Sweep Sender %d <s%d@example.net>\r\nTo: Bob <bob@example.org>\r\n"
            b"Cc: c%d@example.net\r\nSubject: sweep message %d\r\n"
            b"Date: Tue, 24 Nov 2026 10:%02d:00 +0000\r\nMessage-ID: <sweep-%d@example.net>\r\n"
            b"MIME-Version: 1.0\r\n" % (i, i, i % 7, i, i % 60, i))
    text = b"Sweep body line %d of the quick brown fox.\r\n" % i
    if i % 3 == 0:
        return head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text * 90
    if i % 3 == 1:
        return (head + b"Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\n"
                b"Content-Type: text/plain\r\n\r\n" + text * 40 + b"\r\n--a\r\n"
                b"Content-Type: text/html\r\n\r\n<p>" + text * 40 + b"</p>\r\n--a--\r\n")
    return (head + b"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\n"
            b"Content-Type: text/plain\r\n\r\n" + text * 30 + b"\r\n--m\r\n"
            b"Content-Type: application/pdf; name=\"x.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b"QUJD" * 19 * 20 + b"\r\n--m--\r\n")


class Bench:
    def __init__(self, rig, kp, args, out):
        self.rig, self.kp, self.args, self.out = rig, kp, args, out
        self.loader = None if args.python_clients else L.find_imap_load()
        self.results = []
        self.bad = 0

    def proxy_pids(self):
        return [self.kp.px.proc.pid] if self.kp.px.proc else []

    def run(self, port, box, cmd, clients):
        rig = self.rig

        def sample():
            return (time.perf_counter(), B.cpu_ns(B.dovecot_pids(rig)),
                    B.cpu_ns(self.proxy_pids()))
        pw = rig.ms.users[USER]
        if self.loader:
            r = L.run_fetch_c(self.loader, I.HOST, port, USER, pw, box, cmd, clients, sample)
        else:
            r = L.run_fetch(I.HOST, port, USER, pw, box, cmd, clients, sample)
        s = r["samples"]
        r["dovecot_ns"] = s[1][1] - s[0][1] if len(s) == 2 else 0
        r["proxy_ns"] = s[1][2] - s[0][2] if len(s) == 2 else 0
        return r

    def row(self, cell, phase, r, n_msgs, direct_rate=None, want_octets=None, proxy=True):
        secs = r["seconds"] or 1e-9
        mps = r["responses"] / secs
        mbs = r["literal_octets"] / secs / 1e6
        flags = []
        if r["errors"]:
            flags.append("ERRORS %r" % r["errors"][:1])
        if r["responses"] != n_msgs:
            flags.append("SHORT %d of %d" % (r["responses"], n_msgs))
        if want_octets is not None and r["literal_octets"] != want_octets:
            flags.append("WRONG OCTETS %d (plaintext %d)" % (r["literal_octets"], want_octets))
        if flags:
            self.bad += 1
        pct = 100.0 * mps / direct_rate if direct_rate else None
        per = max(r["responses"], 1)
        self.out.write("%-14s %-14s %8.3f %9.0f %8.1f %7s %9s %9.1f  %s%s\n" % (
            cell, phase, secs, mps, mbs, "%.0f%%" % pct if pct is not None else "-",
            "%.1f" % (r["proxy_ns"] / 1e3 / per) if proxy else "-",
            r["dovecot_ns"] / 1e3 / per, B.loadavg(), "  " + "; ".join(flags) if flags else ""))
        self.out.flush()
        self.results.append({"cell": cell, "phase": phase, "seconds": secs, "msgps": mps,
                             "MBps": mbs, "pct_direct": pct, "messages": r["responses"],
                             "proxy_us_per_msg": r["proxy_ns"] / 1e3 / per if proxy else None,
                             "dovecot_us_per_msg": r["dovecot_ns"] / 1e3 / per,
                             "flags": flags, "loadavg": os.getloadavg()})
        return mps

    def header(self, what):
        self.out.write("\n%s\n%-14s %-14s %8s %9s %8s %7s %9s %9s  %s\n" % (
            what, "cell", "phase", "seconds", "msg/s", "MB/s", "%direct", "proxy", "dovecot",
            "load average"))
        self.out.write("%-14s %-14s %8s %9s %8s %7s %9s %9s\n" % (
            "", "", "", "", "", "", "us/msg", "us/msg"))


def encrypt_all(kp, msgs, threads):
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(kp.encrypt, msgs))


def fetch_cells(b, datasets, clients):
    px_port = b.kp.px.ports["plain"]
    dport = b.rig.ms.imap_port
    b.header("FETCH 1:* (BODY.PEEK[]) - encrypted through the proxy vs plaintext direct")
    for dname, n in datasets:
        plain_box = "Plain" + dname
        for c in clients:
            cell = "%s x%d c%d" % (dname, n, c)
            enc_box = "Enc%s_%d" % (dname, c)
            # warm Dovecot for this mailbox pair (index, cache), not measured
            b.run(dport, plain_box, BODY, 1)
            d1 = b.run(dport, plain_box, BODY, c)
            want = d1["literal_octets"]
            rate1 = b.row(cell, "direct", d1, n * c, proxy=False)
            first = b.run(px_port, enc_box, BODY, c)
            cached = b.run(px_port, enc_box, BODY, c)
            b.kp.px.restart()
            after = b.run(px_port, enc_box, BODY, c)
            d2 = b.run(dport, plain_box, BODY, c)
            rate2 = b.row(cell, "direct again", d2, n * c, proxy=False)
            ref = (rate1 + rate2) / 2
            b.row(cell, "first read", first, n * c, ref, want)
            b.row(cell, "cached", cached, n * c, ref, want)
            b.row(cell, "after restart", after, n * c, ref, want)


def summary_items(target, box):
    c = target.connect(USER)
    try:
        c.select(box, readonly=True)
        untagged, _ = c.command(b"UID FETCH 1:* (RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
                                check=True)
        out = []
        for r in untagged:
            p = W.parse_response(r)
            if p.name == b"FETCH":
                out.append({n: raw for n, raw, _ in W.fetch_items(p)})
        return out
    finally:
        c.logout()


def sweep_cells(b, n, clients):
    rig, kp = b.rig, b.kp
    px_port = kp.px.ports["plain"]
    dport = rig.ms.imap_port
    t = time.perf_counter()
    b.run(px_port, "EncSweep", BODY, 1)  # first read: metadata to the vault
    b.out.write("\nsweep mailbox: %d messages read once through the proxy (keys from the KME, "
                "metadata to the vault) in %.1f s\n" % (n, time.perf_counter() - t))
    b.header("summary sweep %s" % SWEEP.decode())
    for c in clients:
        cell = "sweep x%d c%d" % (n, c)
        b.run(dport, "PlainSweep", SWEEP, 1)  # warm Dovecot's cache
        time.sleep(1)  # metadata writes finish on the proxy's thread pool
        kp.px.restart()
        d1 = b.run(dport, "PlainSweep", SWEEP, c)
        rate1 = b.row(cell, "direct", d1, n * c, proxy=False)
        after = b.run(px_port, "EncSweep", SWEEP, c)
        again = b.run(px_port, "EncSweep", SWEEP, c)
        d2 = b.run(dport, "PlainSweep", SWEEP, c)
        rate2 = b.row(cell, "direct again", d2, n * c, proxy=False)
        ref = (rate1 + rate2) / 2
        b.row(cell, "after restart", after, n * c, ref)
        b.row(cell, "again", again, n * c, ref)
    d = summary_items(rig.direct(), "PlainSweep")
    p = summary_items(I.Target("proxy", I.HOST, px_port), "EncSweep")
    same = len(d) == len(p) == n and all(x == y for x, y in zip(d, p))
    if not same:
        b.bad += 1
        diff = next((i for i, (x, y) in enumerate(zip(d, p)) if x != y), None)
        b.out.write("SWEEP ANSWERS DIFFER: %d vs %d responses, first difference at #%s:\n"
                    "  direct %r\n  proxy  %r\n" % (
                        len(d), len(p), diff, d[diff] if diff is not None else None,
                        p[diff] if diff is not None else None))
    else:
        b.out.write("sweep answers: RFC822.SIZE, ENVELOPE, BODYSTRUCTURE of all %d messages "
                    "through the proxy equal the plaintext's directly\n" % n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=1000, help="messages of 10 kB")
    ap.add_argument("--large", type=int, default=100, help="messages of 1 MB")
    ap.add_argument("--sweep", type=int, default=10000, help="messages in the sweep mailbox")
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--sweep-clients", default="1")
    ap.add_argument("--encrypt-threads", type=int, default=4)
    ap.add_argument("--python-clients", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 20 x 10 kB, 2 x 1 MB, sweep of 200, 1 and 4 clients")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--kme-timeout", default="10s",
                    help="kme_links.*.timeout (the daemon's default 10s)")
    ap.add_argument("--log-level", default="info",
                    help="the proxy's (info: its notices are counted at the end)")
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.sweep, args.clients = 20, 2, 200, "1,4"
    I.need_root()
    ok, reason = I.proxy_support()
    if not ok:
        I.skip(reason)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(65536, hard), max(65536, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = sys.stdout
    clients = [int(x) for x in args.clients.split(",")]
    out.write("decrypt-on-FETCH benchmark, qumail %s, load average at start %s\n" % (
        I.QUMAIL, B.loadavg()))
    with I.ImapRig(dovecot_extra=B.DOVECOT_BENCH) as rig:
        kp = E.KeyedProxy(
            rig, upstream_tls="none", log_level=args.log_level,
            extra_imap={"limits": {"max_connections": 20000,
                                   "max_connections_per_address": 0}},
            decrypt={"cache_size": "2G", "cache_views": 1000000},
            link_timeout=args.kme_timeout)
        probe = kp.encrypt(b"From: a@example.net\r\nSubject: p\r\n\r\nprobe\r\n")
        rig.load(USER, "Probe", [probe])
        c = I.Target("proxy", I.HOST, kp.px.ports["plain"]).connect(USER)
        c.select("Probe", readonly=True)
        u, _ = c.command(b"UID FETCH 1 (BODY.PEEK[HEADER])")
        c.logout()
        if any(E.is_ours(r) for r in u) and not os.environ.get("DECRYPT_BENCH_FORCE"):
            I.skip("the proxy serves our multipart/encrypted messages as they are: no "
                   "decryption on FETCH yet (issue 12)")
        datasets = []
        t = time.monotonic()
        for dname, size, n in (("10k", 10240, args.small), ("1M", 1 << 20, args.large)):
            if not n:
                continue
            plain = [B.make_message(i, size, size > 65536) for i in range(n)]
            rig.load(USER, "Plain" + dname, plain)
            for cc in clients:
                rig.load(USER, "Enc%s_%d" % (dname, cc),
                         encrypt_all(kp, plain, args.encrypt_threads))
            datasets.append((dname, n))
        if args.sweep:
            plain = [sweep_message(i) for i in range(args.sweep)]
            rig.load(USER, "PlainSweep", plain)
            rig.load(USER, "EncSweep", encrypt_all(kp, plain, args.encrypt_threads))
        out.write("encrypted (mime encrypt, keys from KME_A) and stored: %s, sweep %d; %.0f s; "
                  "load %s\n" % (", ".join("%d x %s per client count" % (n, d)
                                           for d, n in datasets), args.sweep,
                                 time.monotonic() - t, B.loadavg()))
        b = Bench(rig, kp, args, out)
        out.write("FETCH clients: %s\n" % (b.loader or "Python (loadgen.run_fetch)"))
        fetch_cells(b, datasets, clients)
        if args.sweep:
            sweep_cells(b, args.sweep, [int(x) for x in args.sweep_clients.split(",")])
        st = kp.px.stop(remove=False)
        notices = {}
        for m in re.finditer(r"shown as a notice: ([\w-]+)(?::? ?([^\n]{0,80}))?",
                             kp.px.log_text()):
            k = (m.group(1), (m.group(2) or "").strip())
            notices[k] = notices.get(k, 0) + 1
        out.write("\nnotices the proxy served (from its log): %s\n" % (
            "; ".join("%d x %s %s" % (n, r, d) for (r, d), n in sorted(notices.items()))
            or "none"))
        if st != 0:
            b.bad += 1
            out.write("proxy exit status %r on SIGTERM\n%s" % (st, kp.px.log_text()[-3000:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.results, f, indent=1)
    out.write("\n%d rows, %d with errors, short reads or wrong octets; load average at end %s\n"
              % (len(b.results), b.bad, B.loadavg()))
    return 1 if b.bad else 0


if __name__ == "__main__":
    sys.exit(main())
