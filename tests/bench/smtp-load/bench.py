#!/usr/bin/env python3
"""SMTP throughput and latency benchmark driver.

Runs the C load generator smtp_load against one or more "arms" (an SMTP
endpoint each) over a matrix of concurrency x message size, and prints one
table. The baseline arm "direct" is Postfix's smtpd of a MailStack
(tests/e2e/lib) delivering into Dovecot; other arms (the SMTP proxy in
front of the same Postfix) are added by passing more endpoints to
run_matrix(), and the table then shows each arm against "direct" measured in
the same run.

    import bench
    rows = bench.run_matrix({"direct": (ms.host, ms.smtp_port),
                             "proxy": ("127.0.0.1", proxy_port)},
                            stack=ms)
    bench.print_table(rows)

Python 3 standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))

import mailstack  # noqa: E402

KB = 1024
MB = 1024 * 1024
CONCURRENCIES = (1, 10, 100)
SIZES = (10 * KB, 1 * MB)
REL_PATH = "tests/bench/smtp-load/smtp_load"


def find_smtp_load():
    """The smtp_load binary: $SMTP_LOAD, else $QUMAIL_BUILD's, else the
    first build*/ folder of the source tree that has one (folders with
    "rel" in their name first, for Release builds)."""
    paths = []
    if os.environ.get("SMTP_LOAD"):
        paths.append(os.environ["SMTP_LOAD"])
    if os.environ.get("QUMAIL_BUILD"):
        paths.append(os.path.join(os.environ["QUMAIL_BUILD"], REL_PATH))
    builds = sorted(d for d in os.listdir(SRC) if d.startswith("build"))
    builds.sort(key=lambda d: 0 if "rel" in d.lower() else 1)
    paths += [os.path.join(SRC, d, REL_PATH) for d in builds]
    for p in paths:
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("smtp_load not built (cmake --build <dir> --target "
                            "smtp_load) and SMTP_LOAD not set")


def rss_kib(pid):
    """Resident set size of a process in KiB (VmRSS), or None if gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _RssSampler(threading.Thread):
    """Samples a process's RSS every 20 ms until stopped; keeps the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.before = rss_kib(pid)
        self.peak = self.before or 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(0.02):
            v = rss_kib(self.pid)
            if v is not None and v > self.peak:
                self.peak = v

    def stop(self):
        self._stop_event.set()
        self.join()


def run_load(host, port, concurrency, size, count=None, seconds=None,
             mail_from="alice@example.org", to=("bob@example.org",),
             timeout=60, smtp_load=None, watch_pid=None):
    """Run smtp_load once; returns its JSON result as a dict (keys:
    accepted, failed, errors, seconds, msgs_per_s, mb_per_s, size,
    latency_ms {p50, p90, p99, max, mean}, errors_by_kind, first_error).

    watch_pid: a process (e.g. the proxy under test) whose RSS is sampled
    during the run; adds rss_before_kib, rss_peak_kib and
    rss_per_conn_kib = (peak - before) / concurrency."""
    argv = [smtp_load or find_smtp_load(), "--host", host, "--port", str(port),
            "--concurrency", str(concurrency), "--size", str(size),
            "--from", mail_from, "--to", ",".join(to), "--json",
            "--timeout", str(timeout)]
    if seconds is not None:
        argv += ["--seconds", str(seconds)]
    else:
        argv += ["--count", str(count if count is not None else 100)]
    limit = (seconds or 0) + 4 * timeout + 60
    sampler = None
    if watch_pid is not None:
        sampler = _RssSampler(watch_pid)
        sampler.start()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    finally:
        if sampler is not None:
            sampler.stop()
    if r.returncode not in (0, 3) or not r.stdout.strip():
        raise RuntimeError("smtp_load failed (%d): %s" % (r.returncode, r.stderr.strip()))
    res = json.loads(r.stdout)
    if sampler is not None and sampler.before is not None:
        res["rss_before_kib"] = sampler.before
        res["rss_peak_kib"] = sampler.peak
        res["rss_per_conn_kib"] = (sampler.peak - sampler.before) / concurrency
    return res


def default_count(concurrency, size):
    """Messages per run: enough for stable percentiles, bounded in time."""
    if size >= MB:
        return max(100, 3 * concurrency)
    return max(500, 20 * concurrency)


def settle(stack, rcpts):
    """Wait until Postfix delivered everything, then empty the recipients'
    maildirs so runs do not pile up on disk."""
    if stack is None:
        return
    stack.wait_queue_empty(timeout=300)
    for user in rcpts:
        base = stack.maildir(user)
        for sub in ("new", "cur"):
            d = os.path.join(base, sub)
            if os.path.isdir(d):
                for n in os.listdir(d):
                    try:
                        os.unlink(os.path.join(d, n))
                    except FileNotFoundError:
                        pass


def run_matrix(arms, concurrencies=CONCURRENCIES, sizes=SIZES, count_for=None,
               stack=None, mail_from="alice@example.org", to=("bob@example.org",),
               warmup=True, log=sys.stderr):
    """Run every arm ({name: (host, port)} or {name: (host, port, pid)},
    pid being a process whose RSS to sample) at every concurrency and size.
    Arms alternate within each cell so they see the same conditions.
    Returns rows: dicts with arm, concurrency, size and run_load()'s result."""
    count_for = count_for or default_count
    smtp_load = find_smtp_load()
    rows = []
    arms = {name: tuple(a) + (None,) * (3 - len(a)) for name, a in arms.items()}
    if warmup:
        for name, (host, port, _pid) in arms.items():
            run_load(host, port, 4, 10 * KB, count=50, mail_from=mail_from,
                     to=to, smtp_load=smtp_load)
        settle(stack, to)
    for size in sizes:
        for conc in concurrencies:
            for name, (host, port, pid) in arms.items():
                n = count_for(conc, size)
                t = time.monotonic()
                res = run_load(host, port, conc, size, count=n,
                               mail_from=mail_from, to=to, smtp_load=smtp_load,
                               watch_pid=pid)
                res.update(arm=name, concurrency=conc, requested_size=size)
                rows.append(res)
                if log:
                    log.write("  %-8s c=%-3d size=%-8d n=%-5d %.1f s %s\n"
                              % (name, conc, size, n, time.monotonic() - t,
                                 "errors=%d" % res["errors"] if res["errors"] else ""))
                    log.flush()
                settle(stack, to)
    return rows


def _size_label(size):
    if size % MB == 0:
        return "%d MiB" % (size // MB)
    if size % KB == 0:
        return "%d KiB" % (size // KB)
    return "%d B" % size


def print_table(rows, out=sys.stdout, base_arm="direct"):
    """One line per (size, concurrency, arm); arms other than base_arm also
    show their throughput as % of base_arm and the added p50/p99 latency."""
    base = {(r["requested_size"], r["concurrency"]): r for r in rows
            if r["arm"] == base_arm}
    with_rss = any("rss_per_conn_kib" in r for r in rows)
    hdr = ("%-8s %-7s %4s %7s %9s %8s %9s %9s %9s %9s %6s %8s %8s"
           % ("arm", "size", "conc", "msgs", "msg/s", "MB/s", "p50 ms",
              "p90 ms", "p99 ms", "max ms", "errors", "vs base", "+p50 ms"))
    if with_rss:
        hdr += " %9s %9s" % ("peak RSS", "KiB/conn")
    out.write(hdr + "\n" + "-" * len(hdr) + "\n")
    for r in rows:
        lat = r["latency_ms"]
        b = base.get((r["requested_size"], r["concurrency"]))
        rel = add = ""
        if b is not None and r["arm"] != base_arm and b["msgs_per_s"] > 0:
            rel = "%.0f%%" % (100.0 * r["msgs_per_s"] / b["msgs_per_s"])
            add = "%+.2f" % (lat["p50"] - b["latency_ms"]["p50"])
        line = ("%-8s %-7s %4d %7d %9.1f %8.2f %9.2f %9.2f %9.2f %9.2f %6d %8s %8s"
                % (r["arm"], _size_label(r["requested_size"]), r["concurrency"],
                   r["accepted"], r["msgs_per_s"], r["mb_per_s"], lat["p50"],
                   lat["p90"], lat["p99"], lat["max"], r["errors"], rel, add))
        if with_rss:
            if "rss_per_conn_kib" in r:
                line += " %9d %9.1f" % (r["rss_peak_kib"], r["rss_per_conn_kib"])
            else:
                line += " %9s %9s" % ("", "")
        out.write(line + "\n")
        if r.get("first_error"):
            out.write("         first error: %s\n" % r["first_error"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default=",".join(map(str, CONCURRENCIES)),
                    help="comma list (default 1,10,100)")
    ap.add_argument("--sizes", default="10240,1048576",
                    help="comma list of message sizes in bytes")
    ap.add_argument("--count", type=int, default=None,
                    help="messages per run (default: by size and concurrency)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args()
    concs = [int(x) for x in args.concurrency.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    count_for = (lambda c, s: args.count) if args.count else None
    smtp_load = find_smtp_load()
    sys.stderr.write("smtp_load: %s\n" % smtp_load)
    with mailstack.MailStack() as ms:
        sys.stderr.write("mailstack: postfix smtpd 127.0.0.1:%d -> lmtp -> dovecot\n"
                         % ms.smtp_port)
        rows = run_matrix({"direct": (ms.host, ms.smtp_port)}, concs, sizes,
                          count_for, stack=ms)
    print("SMTP load: smtp_load -> Postfix smtpd -> LMTP -> Dovecot maildir "
          "(1 recipient, no pipelining, RSET between messages)")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.stderr.write("bench.py: needs root (own Postfix and Dovecot)\n")
        sys.exit(77)
    if shutil.which("postfix") is None:
        sys.stderr.write("bench.py: postfix not installed (deploy/install-deps.sh)\n")
        sys.exit(1)
    sys.exit(main())
