#!/usr/bin/env python3
"""The longer hostile campaign (issue 10), run by hand against a build
(Release for figures: `QUMAIL_BIN=build-rel/qumail`). The same attacks as
test_hostile.py at full size, each with a normal client (from 127.0.0.2)
sending meanwhile; prints one line per attack: the proxy's RSS before /
peak / after, descriptors before / peak / after, the normal client's worst
time, what the attacker saw, and the load average.

    QUMAIL_BIN=build-rel/qumail QUMAIL_SRC=$PWD python3 tests/e2e/hostile/campaign.py
        [--only flood,slowloris,stalled,idle,kme,line] [--flood-seconds 30]
        [--idle 10000] [--stalled 90] [--rounds 3] [--timeout 10]

Needs root (the mailstack harness). Every connection goes to 127.0.0.1;
every loop is bounded in count and time."""

import argparse
import base64
import os
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "smtp"))
sys.path.insert(0, HERE)

import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402
import hostile as H  # noqa: E402

ROWS = []


def row(name, proc, rss0, fds0, sampler, normal, seen, fds_after=None, rss_after=None):
    r = {"attack": name,
         "rss_mb": "%.0f/%.0f/%.0f" % (rss0, sampler.peak, rss_after or proc.rss_mb()),
         "fds": "%d/%d/%d" % (fds0, sampler.peak_fds,
                              fds_after if fds_after is not None else proc.fds()),
         "normal_worst_s": "%.2f" % normal.worst() if normal and normal.times else "-",
         "normal_n": len(normal.times) if normal else 0,
         "normal_err": len(normal.errors) if normal else 0,
         "seen": seen, "load": H.load_average()}
    ROWS.append(r)
    print("%-22s rss %-14s fds %-14s normal worst %-6s (%d sent, %d failed)  %s  [load %s]"
          % (r["attack"], r["rss_mb"], r["fds"], r["normal_worst_s"], r["normal_n"],
             r["normal_err"], r["seen"], r["load"]), flush=True)


class Attack:
    def __init__(self, px, port_kind="plain", login=H.ALICE):
        self.px = px
        self.proc = H.Proc(px.proc.pid)
        self.proc.exclude_ports = tuple(px.kme_ports)
        self.login = login
        self.port = px.ports[port_kind]

    def __enter__(self):
        H.normal_send(self.px.ports["plain"], login=self.login)
        time.sleep(0.3)
        self.rss0, self.fds0 = self.proc.rss_mb(), self.proc.fds()
        self.sampler = H.Sampler(self.proc)
        self.sampler.start()
        self.normal = H.NormalClientLoop(self.px.ports["plain"], login=self.login)
        self.normal.start()
        return self

    def __exit__(self, *exc):
        self.normal.stop()
        self.sampler.stop()
        return False

    def settle(self, timeout=30):
        return self.proc.wait_fds(self.fds0, timeout)


def flood(px, seconds):
    with Attack(px) as a:
        sent, sock, closed = H.flood_unread(a.port, seconds)
        sock.close()
    fds = a.settle()
    row("flood %ds" % seconds, a.proc, a.rss0, a.fds0, a.sampler, a.normal,
        "%.1f MB of NOOP sent; %s" % (sent / 1e6, "closed by the proxy after %.1f s" % closed
                                      if closed else "still open"), fds)


def long_lines(px, count):
    with Attack(px) as a:
        codes = []
        for _ in range(count):
            s = H.connect(a.port)
            H.read_reply(s)
            H.command(s, b"EHLO long.example")
            s.sendall(b"X" * (10 * 1024 * 1024))
            codes.append(H.command(s, b"", timeout=30)[0][:9].decode())
            s.close()
    row("10MB lines x%d" % count, a.proc, a.rss0, a.fds0, a.sampler, a.normal,
        "replies %s" % sorted(set(codes)), a.settle())


def slowloris(px, timeout_s):
    cred = base64.b64encode(b"\0alice@example.org\0alice-secret")
    phases = {
        "command": ([b"EHLO slow"], b"NOOP" + b"x" * 200),
        "data": ([b"EHLO slow", b"AUTH PLAIN " + cred, b"MAIL FROM:<alice@example.org>",
                  b"RCPT TO:<bob@example.org>", b"DATA"], b"Subject: s\r\n\r\n" + b"y" * 200),
        "auth": ([b"EHLO slow"], b"AUTH LOGIN" + b"z" * 200),
    }
    for name, (prelude, trickle) in phases.items():
        with Attack(px) as a:
            s = H.connect(a.port)
            H.read_reply(s)
            for line in prelude:
                H.command(s, line)
            t, got = H.slow_bytes(s, trickle, 1.0, until=6 * timeout_s)
            s.close()
        row("slowloris %s" % name, a.proc, a.rss0, a.fds0, a.sampler, a.normal,
            "closed after %s s (timeout %d s) %r" % ("%.1f" % t if t else "never", timeout_s,
                                                     got[-40:]), a.settle())
    with Attack(px, "implicit") as a:
        s = H.connect(a.port)
        t, got = H.slow_bytes(s, H.PARTIAL_CLIENT_HELLO * 20, 1.0, until=6 * timeout_s)
        s.close()
    row("slowloris tls", a.proc, a.rss0, a.fds0, a.sampler, a.normal,
        "closed after %s s" % ("%.1f" % t if t else "never"), a.settle())


def stalled(px, count, rounds, timeout_s):
    for r in range(rounds):
        with Attack(px, "implicit") as a:
            socks = H.stalled_handshakes(a.port, count)
            closed = [H.wait_closed(s, 4 * timeout_s + 15) for s in socks]
            H.close_all(socks)
        never = sum(1 for t, _ in closed if t is None)
        row("stalled tls %d r%d" % (count, r + 1), a.proc, a.rss0, a.fds0, a.sampler,
            a.normal, "%d never closed, worst %.1f s" % (
                never, max((t for t, _ in closed if t), default=0)), a.settle())


def kme_flood(px, certs, count):
    with Attack(px) as a:
        socks = H.stalled_handshakes(px.kme_ports[0], count)
        times = []
        for _ in range(5):
            try:
                t, st = H.kme_status_time(certs, px.kme_ports[0])
                times.append("%.2f:%d" % (t, st))
            except OSError as e:
                times.append("error:%s" % e.__class__.__name__)
        H.close_all(socks)
    row("kme flood %d" % len(socks), a.proc, a.rss0, a.fds0, a.sampler, a.normal,
        "SAE status calls %s" % times, a.settle())


def idle(certs, work, count):
    with H.LoadSink() as sink, \
            P.ProxyStack(certs, sink.port, workdir=work, mode="gateway", listeners=("plain",),
                         trusted_networks=["127.0.0.0/8"],
                         limits={"max_connections": count + 100,
                                 "max_connections_per_address": 0,
                                 "listen_backlog": 4096, "command_timeout": "120s"}) as px:
        proc = H.Proc(px.proc.pid)
        proc.exclude_ports = tuple(px.kme_ports)
        H.normal_send(px.ports["plain"], login=None)
        time.sleep(0.5)
        rss0, fds0 = proc.rss_mb(), proc.fds()
        sampler = H.Sampler(proc)
        sampler.start()
        t0 = time.time()
        socks = H.idle_connections(px.ports["plain"], count)
        greeted, refused = H.count_greeted(socks, 30)
        t_greet = time.time() - t0
        t_normal, code = H.normal_send(px.ports["plain"], login=None)
        H.close_all(socks)
        fds = proc.wait_fds(fds0, 60)
        time.sleep(2)
        sampler.stop()
        normal = H.NormalClientLoop(px.ports["plain"], login=None)
        normal.times = [t_normal]
        row("idle %d" % count, proc, rss0, fds0, sampler, normal,
            "%d greeted, %d refused in %.1f s; normal %d" % (greeted, refused, t_greet, code),
            fds, proc.rss_mb())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="flood,line,slowloris,stalled,kme,idle")
    ap.add_argument("--flood-seconds", type=int, default=30)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--stalled", type=int, default=90)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=10)
    ap.add_argument("--kme", type=int, default=1100)
    args = ap.parse_args()
    only = set(args.only.split(","))
    H.raise_fd_limit()
    H.small_asan_quarantine()
    work = tempfile.mkdtemp(prefix="campaign-")
    certs = P.make_certs(work)
    print("qumail %s; load average %s" % (P.QUMAIL, H.load_average()), flush=True)
    if only & {"flood", "line", "slowloris", "stalled", "kme"}:
        with M.MailStack(tls=certs["localhost"]) as ms, \
                P.ProxyStack(certs, ms.submission_port, workdir=work,
                             limits={"command_timeout": "%ds" % args.timeout,
                                     "data_timeout": "%ds" % args.timeout,
                                     "max_connections": 5000}) as px:
            if "flood" in only:
                flood(px, args.flood_seconds)
            if "line" in only:
                long_lines(px, 5)
            if "slowloris" in only:
                slowloris(px, args.timeout)
            if "stalled" in only:
                stalled(px, args.stalled, args.rounds, args.timeout)
            if "kme" in only:
                kme_flood(px, certs, args.kme)
    if "idle" in only:
        idle(certs, work, args.idle)
    print("load average at end %s" % H.load_average())


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("the mailstack harness needs root")
    main()
