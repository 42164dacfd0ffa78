#!/usr/bin/env python3
"""imaptest against real Dovecot, directly and through `qumail proxy`.

1. The scripted compliance suite (imaptest's tests/ folder: 71 groups)
   directly against Dovecot: every group passes (recorded result with
   Dovecot 2.3.19 here: "71 test groups: 0 failed, 0 skipped due to missing
   capabilities", base protocol 0/457, extensions 0/330 failed).
2. The same suite through the proxy (plain listener, upstream over
   implicit TLS verified against the test CA): the same three summary
   lines as directly, except that the commands of the groups needing a
   capability the proxy deliberately hides (proxy/imap/README.md: BINARY,
   CATENATE, NOTIFY, URLAUTH...; imaptest runs no command of such a group)
   are not counted: those groups run directly on their own, and the
   proxy's counts must be exactly the direct ones less theirs.
3. A short stress run (users=N clients=N secs=N, imaptest's state-tracking
   random commands) directly and through the proxy: zero errors.

Without arguments: directly only (ctest e2e_imap_imaptest). With --proxy:
directly and through the proxy (ctest e2e_imap_imaptest_proxy), which exits
77 (skipped) with the reason while `qumail proxy` has no IMAP side.

With --encrypted (ctest e2e_imap_imaptest_encrypted, issues 12 and 13):
imaptest's fetch-* groups (BODY, BODYSTRUCTURE, ENVELOPE, message/rfc822
parts, BINARY) and its search-*/sort-* groups run through the proxy on an
encrypted copy of their own mailboxes: every message of each group's .mbox
is encrypted with keys from the KME simulator (encrypted.py), so imaptest
APPENDs ciphertext and must read back, search and sort the plaintext. The
summary must equal the same groups' run on plaintext directly. Skipped
(77) until the proxy decrypts on FETCH. (Who may read: imaptest logs in as
alice; if issue 12's recipient binding refuses her the test mailboxes'
messages, configure the rig's proxy for shared reading there; the copies
are bound to alice with `mime encrypt --recipient`.) Long stress runs:
IMAPTEST_STRESS_SECS, IMAPTEST_STRESS_CLIENTS (defaults 8 s, 10 clients).
Exit 0 pass, 1 fail, 77 skipped (not root, imaptest not built).
"""

import os
import re
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import checks  # noqa: E402
from checks import check  # noqa: E402
import imapstack as I  # noqa: E402
import mailstack as M  # noqa: E402

EXPECT_GROUPS = 71
STRESS_SECS = int(os.environ.get("IMAPTEST_STRESS_SECS", "8"))
STRESS_CLIENTS = int(os.environ.get("IMAPTEST_STRESS_CLIENTS", "10"))
STRESS_PASSWORD = "stress-secret"



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
        bad = [l[:400] for l in (err + "\n" + out).splitlines()
               if l.startswith(("Error", "Panic", "Fatal", "*** ", " - "))]
        sys.stdout.write("\n".join(bad[-400:]) + "\n")
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


FETCH_GROUPS = ("fetch-body", "fetch-body-mime", "fetch-body-message-rfc822",
                "fetch-body-message-rfc822-mime", "fetch-body-message-rfc822-x2",
                "fetch-bodystructure", "fetch-envelope", "fetch-binary-mime",
                "fetch-binary-mime-base64", "fetch-binary-mime-qp")
SEARCH_GROUPS = ("search-addresses", "search-body", "search-date", "search-header",
                 "search-size", "sort-addresses", "sort-arrival", "sort-date",
                 "sort-display-from", "sort-display-to", "sort-size", "sort-subject")


def split_mbox(data):
    """[(From line, message)] as imaptest reads an mbox: a message is
    everything up to the next From line."""
    out = []
    for chunk in re.split(rb"(?m)^(?=From [^\n]*\n)", data):
        if not chunk:
            continue
        first, _, rest = chunk.partition(b"\n")
        out.append((first + b"\n", rest))
    return out


def encrypted_tests(tests, groups, workdir, encrypt):
    """A test folder holding `groups` with every .mbox message encrypted."""
    import shutil
    d = os.path.join(workdir, "imaptest-encrypted")
    os.makedirs(d, exist_ok=True)
    for g in groups:
        shutil.copy(os.path.join(tests, g), d)
        mbox = os.path.join(tests, g + ".mbox")
        if not os.path.exists(mbox):
            continue
        with open(mbox, "rb") as f:
            parts = split_mbox(f.read())
        with open(os.path.join(d, g + ".mbox"), "wb") as f:
            for from_line, msg in parts:
                # imaptest stores each message with CRLF line ends
                plain = re.sub(rb"(?<!\r)\n", b"\r\n", msg)
                f.write(from_line + encrypt(plain))
    return d


def encrypted_mode(tests):
    import tempfile
    sys.path.insert(0, HERE)
    import encrypted as E
    with I.ImapRig() as rig:
        kp = E.KeyedProxy(rig)
        work = tempfile.mkdtemp(prefix="imaptest-enc-", dir=rig.dir)
        target = rig.require_proxy()
        probe_box = "Probe"
        rig.load("alice@example.org", probe_box,
                 [kp.encrypt(b"From: a@example.org\r\nSubject: probe\r\n\r\nprobe\r\n",
                             recipient="alice@example.org")])
        c = target.connect("alice@example.org")
        c.select(probe_box, readonly=True)
        u, _ = c.command(b"UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])")
        su, _ = c.command(b"UID SEARCH BODY probe")
        c.logout()
        if any(E.is_ours(r) for r in u) and not os.environ.get("IMAPTEST_ENC_FORCE"):
            I.skip("the proxy serves our multipart/encrypted messages as they are: no "
                   "decryption on FETCH yet (issue 12)")
        # Groups needing a capability the proxy hides (BINARY: the
        # fetch-binary-* groups) run directly but are skipped through the
        # proxy: their summaries could never match. Leave them out of both.
        hidden, need_hidden = hidden_groups(tests, rig.direct(), target)
        print("capabilities the proxy hides: %s; left out: %s" % (
            " ".join(sorted(hidden)) or "none",
            " ".join(g for g in need_hidden if g in FETCH_GROUPS + SEARCH_GROUPS) or "none"),
            flush=True)
        arms = [("fetch (issue 12)", [g for g in FETCH_GROUPS if g not in need_hidden])]
        # SEARCH over the plaintext is issue 13: run those groups once the
        # proxy finds the encrypted probe by a word of its plaintext body.
        if any(re.match(rb"\* SEARCH 1\b", r) for r in su):
            arms.append(("search/sort (issue 13)",
                         [g for g in SEARCH_GROUPS if g not in need_hidden]))
        else:
            print("search/sort (issue 13) groups not run: UID SEARCH BODY through the proxy "
                  "does not find the encrypted probe by its plaintext (%r)" % su, flush=True)
        for label, groups in arms:
            plain_dir = os.path.join(work, "plain-" + label.split()[0].replace("/", "-"))
            os.makedirs(plain_dir)
            import shutil
            for g in groups:
                for f in (g, g + ".mbox"):
                    if os.path.exists(os.path.join(tests, f)):
                        shutil.copy(os.path.join(tests, f), plain_dir)
            enc_dir = encrypted_tests(tests, groups, os.path.join(work, "enc-" + str(len(groups))),
                                      lambda m: kp.encrypt(m, recipient="alice@example.org"))
            ref_lines, ref = compliance_dir(rig.direct(), plain_dir)
            check(ref is not None and ref[1] == 0,
                  "%s groups on plaintext directly: 0 failed (%r)" % (label, ref))
            # the same groups on plaintext through the proxy: the baseline
            # (the proxy hides some capabilities, so imaptest runs fewer
            # extension commands through it than directly)
            pref_lines, pref = compliance_dir(target, plain_dir)
            check(pref is not None and pref[1] == 0,
                  "%s groups on plaintext through the proxy: 0 failed (%r)" % (label, pref))
            got_lines, got = compliance_dir(target, enc_dir)
            check(got_lines == pref_lines,
                  "%s groups on encrypted mailboxes through the proxy: the same summary as "
                  "on plaintext through it (%r vs %r)" % (label, got_lines, pref_lines))
        st = rig.px.stop()
        check(st == 0, "proxy exits 0 on SIGTERM, got %r" % st)


def compliance_dir(target, testdir):
    rc, out, err, secs = I.run_imaptest(target, [
        "user=alice@example.org", "pass=%s" % M.USERS["alice@example.org"],
        "test=%s" % testdir])
    lines, counts = summary(out)
    print("[%s] imaptest %s, %.1f s: %s" % (target.name, os.path.basename(testdir), secs,
                                             "; ".join(lines)), flush=True)
    if counts and counts[1]:
        bad = [l[:400] for l in (err + "\n" + out).splitlines()
               if l.startswith(("Error", "Panic", "Fatal", "*** ", " - "))]
        sys.stdout.write("\n".join(bad[-400:]) + "\n")
    return lines, counts


def capabilities(target):
    c = target.connect("alice@example.org")
    try:
        return {x.decode("ascii", "replace").upper() for x in c.capability()}
    finally:
        c.close()


def hidden_groups(tests, direct, proxy):
    """The capabilities the proxy hides (offered directly, not through it)
    and the imaptest groups that need one of them."""
    hidden = capabilities(direct) - capabilities(proxy)
    groups = []
    for name in sorted(os.listdir(tests)):
        path = os.path.join(tests, name)
        if name.endswith(".mbox") or not os.path.isfile(path):
            continue
        need = set()
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    break
                if line.lower().startswith(b"capabilities:"):
                    need = {w.decode("ascii", "replace").upper()
                            for w in line.split(b":", 1)[1].split()}
        if need & hidden:
            groups.append(name)
    return hidden, groups


def counts_of(lines):
    """(base done, base total, ext done, ext total) from the summary."""
    out = []
    for key in ("base protocol:", "extensions:"):
        m = next((re.search(r"(\d+)/(\d+)", l) for l in lines if l.startswith(key)), None)
        out += [int(m.group(1)), int(m.group(2))] if m else [None, None]
    return tuple(out)


def expected_through_proxy(direct_lines, subset_lines):
    """Direct's summary less the hidden-capability groups' commands."""
    d, h = counts_of(direct_lines), counts_of(subset_lines)
    if None in d or None in h:
        return None
    exp = []
    for l in direct_lines:
        if l.startswith("base protocol:"):
            l = "base protocol: %d/%d individual commands failed" % (d[0] - h[0], d[1] - h[1])
        elif l.startswith("extensions:"):
            l = "extensions: %d/%d individual commands failed" % (d[2] - h[2], d[3] - h[3])
        exp.append(l)
    return exp


def subset_dir(tests, groups, workdir):
    d = os.path.join(workdir, "hidden-groups")
    os.makedirs(d, exist_ok=True)
    for g in groups:
        for name in (g, g + ".mbox", "default.mbox"):
            src = os.path.join(tests, name)
            if os.path.exists(src) and not os.path.exists(os.path.join(d, name)):
                os.symlink(src, os.path.join(d, name))
    return d


def main():
    I.need_root()
    exe, tests = I.imaptest_binary()
    if "--encrypted" in sys.argv[1:]:
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
        encrypted_mode(tests)
        return checks.summary("imaptest e2e")
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
                hidden, groups = hidden_groups(tests, rig.direct(), t)
                print("capabilities the proxy hides: %s; groups needing them: %s" % (
                    " ".join(sorted(hidden)) or "none", " ".join(groups) or "none"), flush=True)
                want = results.get("direct")
                if groups:
                    sub_lines, sub_counts = compliance_dir(
                        rig.direct(), subset_dir(tests, groups, rig.ms.dir))
                    check(sub_counts is not None and sub_counts[1] == 0,
                          "direct: the hidden-capability groups pass on their own")
                    want = expected_through_proxy(want, sub_lines)
                check(lines == want,
                      "proxy: the direct summary less the hidden-capability groups "
                      "(%r vs %r)" % (lines, want))
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
    return checks.summary("imaptest e2e")


if __name__ == "__main__":
    sys.exit(main())
