#!/usr/bin/env python3
"""IMAP FETCH benchmark: Dovecot directly, through `qumail proxy`, and
through nginx's mail proxy (default buffers, and proxy_buffer 256k), all
in the same run against the same Dovecot and mailboxes (issue 11), plus
the part 2/3 arms once those features exist (issues 12, 13).

    tests/bench/imap/bench_imap.py                       # the full run (minutes)
    tests/bench/imap/bench_imap.py --quick               # seconds: a smoke run
    tests/bench/imap/bench_imap.py --idle 5000 --idle-max 10000 --no-fetch

Datasets: --small N x 10 kB (default 1,000) and --large N x 1 MB (default
100) messages in two mailboxes of one user. Commands: `UID FETCH 1:*
(BODY.PEEK[])` ("body") and the Thunderbird summary sweep `UID FETCH 1:*
(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date
Message-ID Priority X-Priority References Newsgroups In-Reply-To
Content-Type Reply-To)])` ("sweep"). Clients: --clients 1,10,100, all
sending the command at once (loadgen.run_fetch); arms run interleaved
within each cell, --rounds times, the median printed. Every arm reaches
Dovecot over plain IMAP on loopback (nginx cannot do TLS upstream); the
clients speak plain IMAP to each proxy.

Printed per row: MB/s of message octets and messages/s, the arm's share of
the direct figure measured in the same cell, CPU milliseconds per 1,000
messages of Dovecot (all its processes) and of the proxy (qumail, or nginx
master+workers), and the load average at that moment.

--idle N: RSS of each proxy per idle authenticated connection with N
connections in IDLE (a few opened and closed first so allocator warm-up is
not counted); --idle-max N: how many IDLE connections each holds (goal
10,000), checked by DONE on a sample. Needs root (the rig; it raises
RLIMIT_NOFILE for itself and the servers it starts).

Part 2/3 arms (run when the proxy has them, else printed as skipped with
the reason): --encrypted (first read with keys from the KME, cached read,
read after a proxy restart, against direct plaintext), --append (APPEND
1,000 x 10 kB and 10 x 10 MB through the proxy vs direct), --search
(SEARCH BODY over the encrypted mailbox, cold and warm, vs Dovecot's over
the plaintext one).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "imap"))
sys.path.insert(0, HERE)

import imapstack as I  # noqa: E402
import loadgen as L  # noqa: E402
import nginxmail as N  # noqa: E402 (tests/e2e/lib)

USER = "bench@example.org"
PASSWORD = "bench-secret"
SWEEP_FIELDS = (b"From To Cc Subject Date Message-ID Priority X-Priority References "
                b"Newsgroups In-Reply-To Content-Type Reply-To")
COMMANDS = {
    "body": b"UID FETCH 1:* (BODY.PEEK[])",
    "sweep": b"UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ("
             + SWEEP_FIELDS + b")])",
}
# Many connections of one user from one address, thousands in IDLE:
# Dovecot's per-user+IP limit (10) and one process per connection (~5 MB
# each) would measure Dovecot's limits, not the proxies'. IDLE clients are
# hibernated (imap_hibernate_timeout): one imap-hibernate process holds
# them; that needs an inotify instance per imap process on the way in
# (fs.inotify.max_user_instances, 128 by default: see raise_inotify()).
DOVECOT_BENCH = """
protocol imap {
  mail_max_userip_connections = 100000
}
default_client_limit = 19000
default_vsz_limit = 2G
imap_hibernate_timeout = 1s
service imap-login {
  service_count = 0
  client_limit = 4000
  process_min_avail = 2
  process_limit = 16
}
service imap {
  unix_listener imap-master {
    mode = 0666
  }
  process_limit = 1000
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0666
  }
  client_limit = 19000
}
service anvil {
  client_limit = 19000
}
service auth {
  client_limit = 19000
}
"""
INOTIFY = "/proc/sys/fs/inotify/max_user_instances"


def raise_inotify(out, want=16384):
    """Dovecot hibernates an IDLE client only when it can watch the mailbox
    (inotify); each imap process takes an instance on the way. Raise the
    per-user limit for the run; returns the old value to restore."""
    try:
        with open(INOTIFY) as f:
            old = int(f.read())
        if old < want:
            with open(INOTIFY, "w") as f:
                f.write(str(want))
            out.write("raised %s %d -> %d for this run\n" % (INOTIFY, old, want))
        return old
    except (OSError, ValueError):
        out.write("could not raise %s: Dovecot may not hibernate IDLE clients\n" % INOTIFY)
        return None


def restore_inotify(old):
    if old is None:
        return
    try:
        with open(INOTIFY, "w") as f:
            f.write(str(old))
    except OSError:
        pass


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def cpu_ns(pids):
    """CPU time of every thread of these processes, nanoseconds
    (/proc/PID/task/TID/schedstat: clock ticks are too coarse here -
    Dovecot sends plain IMAP with sendfile and spends a few ms on 100 MB)."""
    t = 0
    for p in pids:
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (p, tid)) as f:
                    t += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return t


def rss_kb(pids):
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return t


def session_pids(leader):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    sid = int(f.read().rsplit(")", 1)[1].split()[3])
            except (OSError, ValueError, IndexError):
                continue
            if sid == leader:
                out.append(int(p))
    return out


def make_message(i, size, big):
    body_line = b"The quick brown fox jumps over the lazy dog %08d. " % i
    head = (b"From: Bench Sender <sender@example.net>\r\nTo: Bench <bench@example.org>\r\n"
            b"Subject: benchmark message %d\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <bench-%d@example.net>\r\nMIME-Version: 1.0\r\n" % (i, i))
    if not big:
        head += b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        lines = []
        n = len(head)
        while n < size:
            ln = (body_line * 2)[:76] + b"\r\n"
            lines.append(ln)
            n += len(ln)
        return (head + b"".join(lines))[:size]
    import base64
    import hashlib
    head += b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    raw = bytearray()
    h = hashlib.sha256(b"%d" % i).digest()
    while len(raw) < size * 3 // 4:
        h = hashlib.sha256(h).digest()
        raw += h * 32
    b64 = base64.encodebytes(bytes(raw[:size * 3 // 4 - 200])).replace(b"\n", b"\r\n")
    return head + b64 + b"--b--\r\n"


class Arms:
    """The endpoints under test and how to read their processes."""

    def __init__(self, rig, args, out):
        self.rig = rig
        self.list = [("direct", I.HOST, rig.ms.imap_port, None)]
        ok, reason = I.proxy_support()
        self.px = None
        if ok and "qumail" in args.arms:
            # thousands of connections from one address (config/README.md
            # imap.limits: 1,000 and 100 per address by default)
            extra = {"limits": {"max_connections": 20000, "max_connections_per_address": 0}}
            if args.imap_extra:
                extra.update(json.loads(args.imap_extra))
            self.px = I.ImapProxy(rig.certs, rig.ms.imap_port, upstream_tls="none",
                                  smtp_upstream_port=rig.ms.submission_port, workdir=rig.dir,
                                  log_level="warn", listeners=("plain",), extra_imap=extra)
            self.px.start()
            rig.px = self.px
            self.list.append(("qumail", I.HOST, self.px.ports["plain"],
                              lambda: [self.px.proc.pid]))
        elif "qumail" in args.arms:
            out.write("qumail proxy arm skipped: %s\n" % reason)
        self.nginx = []
        if not N.available():
            out.write("nginx arms skipped: nginx or libnginx-mod-mail not installed\n")
        else:
            for name, buf in (("nginx", None), ("nginx-256k", "256k")):
                if name not in args.arms:
                    continue
                ng = N.NginxMail(rig.dir, rig.ms.imap_port, proxy_buffer=buf)
                ng.start()
                self.nginx.append(ng)
                self.list.append((name, I.HOST, ng.port,
                                  (lambda ng=ng: session_pids(ng.proc.pid))))

    def stop(self):
        for ng in self.nginx:
            ng.stop()


def dovecot_pids(rig):
    return list(rig.ms.processes().keys())


def fetch(loader, host, port, box, cmd, nc, sample):
    if loader:
        return L.run_fetch_c(loader, host, port, USER, PASSWORD, box, cmd, nc, sample)
    return L.run_fetch(host, port, USER, PASSWORD, box, cmd, nc, sample)


def fetch_cells(rig, arms, args, out, results):
    datasets = [("10k", "Small", args.small), ("1M", "Large", args.large)]
    loader = None if args.python_clients else L.find_imap_load()
    out.write("FETCH clients: %s\n" % (loader or "Python (loadgen.run_fetch)"))
    clients = [int(c) for c in args.clients.split(",")]
    out.write("\n%-6s %-5s %4s  %-10s %9s %9s %7s %10s %10s  %s\n" % (
        "data", "cmd", "cli", "arm", "MB/s", "msg/s", "%direct", "dovecot", "proxy",
        "load average"))
    out.write("%-6s %-5s %4s  %-10s %9s %9s %7s %10s %10s\n" % (
        "", "", "", "", "", "", "", "ms/1k msg", "ms/1k msg"))
    for dname, box, count in datasets:
        if not count:
            continue
        for cname in args.commands.split(","):
            cmd = COMMANDS[cname]
            # warm Dovecot's cache (index, header cache) for this command
            # first: otherwise the first arm measured pays for it
            fetch(loader, I.HOST, rig.ms.imap_port, box, cmd, 1, lambda: None)
            for nc in clients:
                per_arm = {a[0]: [] for a in arms.list}
                for rnd in range(args.rounds):
                    k = rnd % len(arms.list)  # rotate the order from round to round
                    for name, host, port, pidf in arms.list[k:] + arms.list[:k]:
                        dpids = dovecot_pids(rig)

                        def sample(pidf=pidf):
                            pp = pidf() if pidf else []
                            return (time.perf_counter(), cpu_ns(dovecot_pids(rig)),
                                    cpu_ns(pp))
                        r = fetch(loader, host, port, box, cmd, nc, sample)
                        del dpids
                        per_arm[name].append(r)
                direct = statistics.median(
                    [x["literal_octets"] / x["seconds"] for x in per_arm["direct"]
                     if x["seconds"]] or [0])
                for name, _, _, _ in arms.list:
                    rs = per_arm[name]
                    errs = sum(len(x["errors"]) for x in rs)
                    good = [x for x in rs if x["seconds"] and not x["errors"]]
                    if not good:
                        out.write("%-6s %-5s %4d  %-10s  FAILED: %r\n" % (
                            dname, cname, nc, name, rs[0]["errors"][:2]))
                        results.append({"data": dname, "cmd": cname, "clients": nc,
                                        "arm": name, "errors": errs})
                        continue
                    mbs = statistics.median([x["literal_octets"] / x["seconds"] / 1e6
                                             for x in good])
                    mps = statistics.median([x["responses"] / x["seconds"] for x in good])
                    msgs = sum(x["responses"] for x in good)
                    hz = 1e9  # cpu_ns
                    dcpu = sum(x["samples"][1][1] - x["samples"][0][1] for x in good)
                    pcpu = sum(x["samples"][1][2] - x["samples"][0][2] for x in good)
                    expect = count * nc
                    short = [x["responses"] for x in good if x["responses"] != expect]
                    pct = 100.0 * mbs * 1e6 / direct if direct else 0
                    out.write("%-6s %-5s %4d  %-10s %9.1f %9.0f %6.0f%% %10.1f %10s  %s%s\n" % (
                        dname, cname, nc, name, mbs, mps, pct,
                        1e6 * dcpu / hz / max(msgs, 1),
                        "%.1f" % (1e6 * pcpu / hz / max(msgs, 1)) if name != "direct" else "-",
                        loadavg(), "  SHORT %r" % short[:3] if short else ""))
                    out.flush()
                    results.append({"data": dname, "cmd": cname, "clients": nc, "arm": name,
                                    "MBps": mbs, "msgps": mps, "pct_direct": pct,
                                    "dovecot_ms_per_1k": 1e6 * dcpu / hz / max(msgs, 1),
                                    "proxy_ms_per_1k": 1e6 * pcpu / hz / max(msgs, 1),
                                    "errors": errs, "short": len(short),
                                    "loadavg": os.getloadavg()})


def idle_cells(rig, arms, args, out, results):
    old = raise_inotify(out)
    try:
        _idle_cells(rig, arms, args, out, results)
    finally:
        restore_inotify(old)


def _idle_cells(rig, arms, args, out, results):
    out.write("\nIDLE connections (RSS from /proc VmRSS, load average at the end; "
              "RLIMIT_NOFILE %d: a proxy holds 2 descriptors per connection; the direct "
              "row sums Dovecot's processes, which come and go as clients hibernate: "
              "indicative only)\n" % resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for name, host, port, pidf in arms.list:
        if name == "direct":
            pidf = (lambda: dovecot_pids(rig))  # Dovecot's own cost, for reference
        for count, what in ((args.idle, "rss"), (args.idle_max, "max")):
            if not count:
                continue
            pids = pidf()
            warm = L.IdleHolder(host, port, USER, PASSWORD, "Small" if args.small else "INBOX")
            warm.open(min(50, count))
            warm.close()
            time.sleep(1)
            base = rss_kb(pids)
            h = L.IdleHolder(host, port, USER, PASSWORD, "INBOX")
            t0 = time.monotonic()
            n = h.open(count, timeout=args.idle_timeout)
            secs = time.monotonic() - t0
            time.sleep(1)
            now = rss_kb(pidf())
            alive = h.check_alive(100)
            per = (now - base) * 1024.0 / max(n, 1)
            out.write("%-10s %6d asked, %6d in IDLE after %.0f s (%d failed); RSS %d -> %d kB: "
                      "%.1f kB per connection; DONE answered on %d of 100; load %s\n" % (
                          name, count, n, secs, h.failed, base, now, per / 1024, alive,
                          loadavg()))
            out.flush()
            results.append({"idle_arm": name, "asked": count, "idle": n, "failed": h.failed,
                            "rss_base_kb": base, "rss_kb": now,
                            "bytes_per_conn": per, "alive_of_100": alive,
                            "loadavg": os.getloadavg()})
            h.close()
            time.sleep(2)


def part2_3(rig, args, out):
    ok, reason = I.proxy_support()
    if not ok:
        for flag in ("encrypted", "append", "search"):
            if getattr(args, flag):
                out.write("--%s skipped: %s\n" % (flag, reason))
        return
    if args.encrypted or args.search:
        import encrypted as E
        kp = E.KeyedProxy(rig)
        target = rig.require_proxy()
        msgs = [("b%d" % i, make_message(i, 10240, False)) for i in range(args.small)]
        rig.load(E.USER, "Plain", [m for _, m in msgs])
        E.build(rig, msgs, kp, delivered=False, out=out)
        c = target.connect(E.USER)
        c.select("Encrypted", readonly=True)
        u, _ = c.command(b"UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])")
        c.logout()
        if any(E.is_ours(r) for r in u):
            out.write("--encrypted/--search skipped: the proxy does not decrypt on FETCH yet "
                      "(issue 12)\n")
            return
        if args.encrypted:
            for phase in ("first read", "cached", "after restart"):
                if phase == "after restart":
                    kp.px.restart()
                for name, port, box in (("direct plain", rig.ms.imap_port, "Plain"),
                                        ("proxy encrypted", target.port, "Encrypted")):
                    for cname in ("body", "sweep"):
                        r = L.run_fetch(I.HOST, port, E.USER, rig.ms.users[E.USER], box,
                                        COMMANDS[cname], 1, lambda: None)
                        out.write("encrypted %-13s %-15s %-5s %8.1f msg/s  %s  load %s\n" % (
                            phase, name, cname, r["responses"] / max(r["seconds"], 1e-9),
                            "errors %r" % r["errors"][:1] if r["errors"] else "", loadavg()))
        if args.search:
            for name, port, box in (("direct plain", rig.ms.imap_port, "Plain"),
                                    ("proxy encrypted cold", target.port, "Encrypted"),
                                    ("proxy encrypted warm", target.port, "Encrypted")):
                c = I.Target("x", I.HOST, port).connect(E.USER, rig.ms.users[E.USER])
                c.select(box, readonly=True)
                t = time.perf_counter()
                u, tg = c.command(b"UID SEARCH BODY \"fox jumps over the lazy dog 00000007\"")
                out.write("SEARCH BODY %-22s %7.3f s %r  load %s\n" % (
                    name, time.perf_counter() - t, u[:1], loadavg()))
                c.logout()
    if args.append:
        out.write("--append: APPEND 1,000 x 10 kB and 10 x 10 MB, direct vs proxy\n")
        target = rig.require_proxy()
        # proxy-plain: a mailbox the proxy does not protect (streamed through);
        # proxy: Sent, encrypted with local vault keys (issue 13)
        boxes = {"direct": "AppendDirect", "proxy-plain": "AppendPlain", "proxy": "Sent"}
        for label, port in (("direct", rig.ms.imap_port), ("proxy-plain", target.port),
                            ("proxy", target.port)):
            for n, size in ((args.append_small, 10240), (args.append_large, 10 << 20)):
                msgs = [make_message(i, size, size > 65536) for i in range(n)]
                c = I.Target("x", I.HOST, port).connect(USER, PASSWORD)
                box = boxes[label]
                c.command(b"CREATE " + box.encode())
                t = time.perf_counter()
                c.append_many(box, msgs)
                s = time.perf_counter() - t
                c.logout()
                out.write("APPEND %-11s %5d x %8d: %7.2f s, %8.1f msg/s, %7.1f MB/s  load %s\n" % (
                    label, n, size, s, n / s, n * size / s / 1e6, loadavg()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=1000, help="messages of 10 kB")
    ap.add_argument("--large", type=int, default=100, help="messages of 1 MB")
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--commands", default="body,sweep")
    ap.add_argument("--arms", default="direct,qumail,nginx,nginx-256k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--idle-max", type=int, default=10000)
    ap.add_argument("--idle-timeout", type=float, default=300)
    ap.add_argument("--no-fetch", action="store_true")
    ap.add_argument("--python-clients", action="store_true",
                    help="FETCH with the Python clients instead of imap_load")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 50 x 10 kB, 3 x 1 MB, 1 and 4 clients, 100 IDLE")
    ap.add_argument("--encrypted", action="store_true")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--append-small", type=int, default=1000, help="--append: 10 kB messages")
    ap.add_argument("--append-large", type=int, default=10, help="--append: 10 MB messages")
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--imap-extra", help="JSON merged into the proxy's imap section")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.clients, args.rounds = 50, 3, "1,4", 1
        args.idle, args.idle_max = 100, 0
    I.need_root()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(65536, hard), max(65536, hard)))
    except (ValueError, OSError):  # a container may forbid raising the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = sys.stdout
    out.write("IMAP benchmark, qumail %s, load average at start %s, RLIMIT_NOFILE %d\n" % (
        I.QUMAIL, loadavg(), resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    results = []
    users = {USER: PASSWORD, "bob@example.org": "bob-secret", "alice@example.org": "alice-secret"}
    with I.ImapRig(users=users, dovecot_extra=DOVECOT_BENCH) as rig:
        t = time.monotonic()
        rig.load(USER, "Small", [make_message(i, 10240, False) for i in range(args.small)])
        rig.load(USER, "Large", [make_message(i, 1 << 20, True) for i in range(args.large)])
        out.write("loaded %d x 10 kB and %d x 1 MB by APPEND in %.1f s\n" % (
            args.small, args.large, time.monotonic() - t))
        arms = Arms(rig, args, out)
        try:
            if not args.no_fetch:
                fetch_cells(rig, arms, args, out, results)
            if args.idle or args.idle_max:
                idle_cells(rig, arms, args, out, results)
            part2_3(rig, args, out)
        finally:
            arms.stop()
    bad = [r for r in results if r.get("errors") or r.get("short")]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    out.write("\n%d figures, %d with errors or short reads; load average at end %s\n" % (
        len(results), len(bad), loadavg()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
