#!/usr/bin/env python3
"""imaptest against real Dovecot, directly and through `qumail proxy`.

1. The scripted compliance suite (imaptest's tests/ folder: 71 groups)
   directly against Dovecot: every group passes (recorded result with
   Dovecot 2.3.19 here: "71 test groups: 0 failed, 0 skipped due to missing
   capabilities", base protocol 0/457, extensions 0/330 failed).
2. The same suite through the proxy (plain listener, upstream over
   implicit TLS verified against the test CA): exactly the same three
   summary lines as directly.
3. A short stress run (users=N clients=N secs=N, imaptest's state-tracking
   random commands) directly and through the proxy: zero errors.

Without arguments: directly only (ctest e2e_imap_imaptest). With --proxy:
directly and through the proxy (ctest e2e_imap_imaptest_proxy), which exits
77 (skipped) with the reason while `qumail proxy` has no IMAP side. Long stress runs:
IMAPTEST_STRESS_SECS, IMAPTEST_STRESS_CLIENTS (defaults 8 s, 10 clients).
Exit 0 pass, 1 fail, 77 skipped (not root, imaptest not built).
"""

import os
import re
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import imapstack as I  # noqa: E402
import mailstack as M  # noqa: E402

EXPECT_GROUPS = 71
STRESS_SECS = int(os.environ.get("IMAPTEST_STRESS_SECS", "8"))
STRESS_CLIENTS = int(os.environ.get("IMAPTEST_STRESS_CLIENTS", "10"))
STRESS_PASSWORD = "stress-secret"

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def summary(out):
    """The suite's summary lines (groups/failed/skipped, base, extensions)."""
    lines = [l.strip() for l in out.splitlines()
             if re.match(r"\d+ test groups:|base protocol:|extensions:", l.strip())]
    m = re.search(r"(\d+) test groups: (\d+) failed, (\d+) skipped", out)
    return lines, (tuple(int(x) for x in m.groups()) if m else None)


def compliance(target, tests):
    rc, out, err, secs = I.run_imaptest(target, [
        "user=alice@example.org", "pass=%s" % M.USERS["alice@example.org"],
        "mbox=%s" % os.path.join(tests, "default.mbox"), "test=%s" % tests])
    lines, counts = summary(out)
    print("[%s] imaptest scripted suite, %.1f s, exit %d:\n    %s" % (
        target.name, secs, rc, "\n    ".join(lines) or "(no summary)"), flush=True)
    if counts is None or (counts[1] and os.environ.get("IMAPTEST_VERBOSE")):
        sys.stdout.write(out[-6000:] + err[-3000:])
    elif counts[1]:
        # imaptest names each failing command on stderr ("Error: ...")
        bad = [l[:400] for l in err.splitlines() if l.startswith(("Error", "Panic", "Fatal"))]
        sys.stdout.write("\n".join(bad[-40:]) + "\n")
    return lines, counts


def stress(target, nusers):
    rc, out, err, secs = I.run_imaptest(target, [
        "user=stress%d@example.org", "pass=%s" % STRESS_PASSWORD,
        "users=%d" % nusers, "clients=%d" % STRESS_CLIENTS,
        "secs=%d" % STRESS_SECS, "mbox=%s" % os.path.join(
            I.imaptest_binary()[1], "default.mbox")], timeout=STRESS_SECS + 120)
    text = out + err
    errors = [l for l in text.splitlines()
              if re.search(r"\b(Error|Panic|Fatal)\b", l)]
    m = re.search(r"Totals:\n[^\n]*\n[^\n]*\n[^\n]*\n([ \d]+)\n", out)
    totals = [int(x) for x in m.group(1).split()] if m else []
    print("[%s] imaptest stress users=%d clients=%d secs=%d: exit %d, %d commands, "
          "%d error lines" % (target.name, nusers, STRESS_CLIENTS, STRESS_SECS, rc,
                              sum(totals), len(errors)), flush=True)
    for l in errors[:20]:
        print("    " + l)
    return rc, errors, totals


def main():
    I.need_root()
    exe, tests = I.imaptest_binary()
    via_proxy = "--proxy" in sys.argv[1:]
    if via_proxy:
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
    os.environ["QUMAIL_IMAP_VIA"] = "both" if via_proxy else "direct"
    nusers = max(STRESS_CLIENTS, 2)
    users = dict(M.USERS)
    users.update({"stress%d@example.org" % i: STRESS_PASSWORD
                  for i in range(1, nusers + 1)})
    with I.ImapRig(users=users) as rig:
        results = {}
        for t in rig.targets():
            lines, counts = compliance(t, tests)
            results[t.name] = lines
            if t.name == "direct":
                check(counts is not None and counts[0] == EXPECT_GROUPS and counts[1] == 0,
                      "direct: %d groups, 0 failed (got %r)" % (EXPECT_GROUPS, counts))
            else:
                check(lines == results.get("direct"),
                      "proxy: the same summary as direct (%r vs %r)" % (
                          lines, results.get("direct")))
                check(counts is not None and counts[1] == 0, "proxy: 0 groups failed")
        for t in rig.targets(tls="implicit") if os.environ.get("IMAPTEST_TLS") else rig.targets():
            rc, errors, totals = stress(t, nusers)
            check(rc == 0 and not errors and sum(totals) > 0,
                  "%s: stress run with zero errors" % t.name)
        if rig.px is not None:
            st = rig.px.stop()
            check(st == 0, "proxy exits 0 on SIGTERM (sanitizers clean), got %r" % st)
            if st != 0:
                sys.stdout.write(rig.px.log_text()[-4000:])
    print("imaptest e2e: %s" % ("FAILED: " + "; ".join(failures) if failures
                                 else "every check passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
