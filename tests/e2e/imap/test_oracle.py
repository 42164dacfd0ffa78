#!/usr/bin/env python3
"""The transparency oracle (oracle.py) on the IMAP corpus (corpus.py).

Modes (ctest entry):
  (none)        e2e_imap_oracle: the oracle's own check, directly against
                Dovecot: mailbox "Plain" vs mailbox "Copy" (the same corpus
                loaded twice) must be equal in every item with every
                self-consistency check holding; and a negative control:
                "Plain" vs "Mutant" (one octet of one message changed, same
                size) must report differences for that message only,
                BODY[] among them - the oracle can fail.
  --proxy       e2e_imap_oracle_proxy: "Plain" directly vs "Copy" through
                `qumail proxy` (pass-through, issue 11): must be equal.
                Skipped (77) while the proxy has no IMAP side.
  --encrypted   e2e_imap_oracle_encrypted: "Plain" directly vs "Encrypted"
                (the corpus encrypted by `qumail mime encrypt` with keys from
                the KME simulator, OTP for small messages and AES for large)
                and "Delivered" (sent through the proxy's SMTP side and
                Postfix into Dovecot) through the proxy (issue 12). Skipped
                (77) with the reason until the proxy decrypts: no IMAP side,
                or the proxy still serves our multipart/encrypted messages.
                See encrypted.py for what is assumed about transit headers.

ORACLE_LIMIT=N compares only the first N messages (debugging).
"""

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from checks import check, summary  # noqa: E402
import corpus  # noqa: E402
import imapstack as I  # noqa: E402
import oracle as O  # noqa: E402

USER = "bob@example.org"


def mutate(msg):
    """The same message, same size, one octet of its body text changed
    (a letter in a text line: no MIME boundary, no header field)."""
    start = msg.find(b"\r\n\r\n") + 4
    for m in __import__("re").finditer(rb"(?m)^(?!--)[^\r\n:=<]*?([a-z])[^\r\n:=]*\r?$", msg[start:]):
        i = start + m.start(1)
        return msg[:i] + (b"Q" if msg[i:i + 1] != b"Q" else b"R") + msg[i + 1:]
    raise AssertionError("no letter to change")


def baseline(rig, msgs, names):
    ref = O.Side("Plain direct", rig.direct(), USER, "Plain")
    cp = O.Side("Copy direct", rig.direct(), USER, "Copy")
    rep = O.compare_mailboxes(ref, cp, names, out=sys.stdout)
    check(rep.ok and rep.compared > 1000,
          "oracle baseline: Plain vs Copy equal in all %d responses, self-consistent"
          % rep.compared)
    cp.close()
    mut = O.Side("Mutant direct", rig.direct(), USER, "Mutant")
    rep = O.compare_mailboxes(ref, mut, names, seen=False)
    hit = sorted({n for n, _, _ in rep.diffs})
    target = names[MUTANT_INDEX]
    check(hit == [target] and any(c.startswith(b"BODY.PEEK[]") for n, c, _ in rep.diffs),
          "negative control: one changed octet in %s is reported (%d differences, "
          "messages %r)" % (target, len(rep.diffs), hit))
    if rep.diffs:
        print("    e.g. DIFF %s: %s\n%s" % (rep.diffs[0][0], rep.diffs[0][1].decode(),
                                          rep.diffs[0][2]))
    mut.close()
    ref.close()


MUTANT_INDEX = 2


def main():
    I.need_root()
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("--proxy", "--encrypted"):
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
    limit = int(os.environ.get("ORACLE_LIMIT", "0")) or None
    msgs = corpus.messages()[:limit]
    names = [n for n, _ in msgs]
    raws = [m for _, m in msgs]
    with I.ImapRig() as rig:
        rig.load(USER, "Plain", raws)
        if mode == "":
            rig.load(USER, "Copy", raws)
            mutant = list(raws)
            mutant[MUTANT_INDEX] = mutate(raws[MUTANT_INDEX])
            rig.load(USER, "Mutant", mutant)
            baseline(rig, msgs, names)
        elif mode == "--proxy":
            rig.load(USER, "Copy", raws)
            ref = O.Side("Plain direct", rig.direct(), USER, "Plain")
            dut = O.Side("Copy via proxy", rig.require_proxy(), USER, "Copy")
            rep = O.compare_mailboxes(ref, dut, names, out=sys.stdout)
            check(rep.ok, "pass-through: every item through the proxy equals Dovecot's "
                  "(%d responses)" % rep.compared)
        elif mode == "--encrypted":
            import encrypted as E
            E.run(rig, msgs, names, check)
        else:
            raise SystemExit("unknown mode %r" % mode)
        if rig.px is not None:
            st = rig.px.stop()
            check(st == 0, "proxy exits 0 on SIGTERM, got %r" % st)
            if st != 0:
                print(rig.px._log[-6000:] if getattr(rig.px, "_log", None) else "(no log)")
    return summary("imap oracle")


if __name__ == "__main__":
    sys.exit(main())
