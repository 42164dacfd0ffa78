#!/usr/bin/env python3
"""Self-test of the IMAP rig (tests/e2e/lib/imapstack.py, imapwire.py).

Dovecot answers on plain, STARTTLS and implicit TLS with a certificate of
the test CA (verified, host name checked); a mailbox loaded with APPEND
reads back with the exact bytes (a CRLF message byte for byte, an LF-only
one as CRLF with RFC822.SIZE counting the CRLFs, as Dovecot serves it; a
file put straight into the maildir likewise); the raw client's parse of
FETCH keeps literal sizes; the proxy probe gives a reason or a working
proxy. With --proxy the same checks run through `qumail proxy` (exit 77
with the reason while it has no IMAP side).
"""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from checks import check, summary  # noqa: E402
import imapstack as I  # noqa: E402
import imapwire as W  # noqa: E402



CRLF_MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
            b"Subject: rig crlf\r\nMessage-ID: <rig-1@example.org>\r\n\r\n"
            b"line one\r\nline two\r\n")
LF_MSG = (b"From: alice@example.org\nTo: bob@example.org\nSubject: rig lf\n\n"
          b"lf body\nsecond\n")
USER = "bob@example.org"


def main():
    I.need_root()
    via_proxy = "--proxy" in sys.argv[1:]
    if via_proxy:
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
    else:
        ok, reason = I.proxy_support()
        print("proxy probe: %s" % ("IMAP side present" if ok else reason))
        check(ok or "imap" in reason, "the probe explains why the proxy arm cannot run")
    os.environ["QUMAIL_IMAP_VIA"] = "proxy" if via_proxy else "direct"
    with I.ImapRig() as rig:
        uids = rig.load(USER, "INBOX", [CRLF_MSG, LF_MSG])
        check(uids == [1, 2], "APPEND loads return UIDs 1, 2 (got %r)" % uids)
        rig.load(USER, "Archive", [CRLF_MSG])
        if not via_proxy:
            # Loads at different moments give the same INTERNALDATEs (by
            # position): an undated message sorts by it (RFC 5256).
            time.sleep(1.1)
            rig.load(USER, "Later", [CRLF_MSG, LF_MSG])
            dates = {}
            c = rig.direct().connect(USER)
            try:
                for box in ("INBOX", "Later"):
                    c.select(box, readonly=True)
                    untagged, _ = c.command(b"UID FETCH 1:2 (INTERNALDATE)", check=True)
                    dates[box] = [re.search(rb'INTERNALDATE "([^"]+)"', u).group(1)
                                  for u in untagged]
            finally:
                c.logout()
            check(dates["INBOX"] == dates["Later"] == [I.load_date(0).encode(),
                                                       I.load_date(1).encode()],
                  "INTERNALDATE by position, the same for every load (%r)" % dates)
        rig.write_maildir(USER, "INBOX", LF_MSG, "lfdisk")
        for tls in ("none", "starttls", "implicit"):
            for t in rig.targets(tls=tls):
                c = t.connect(USER)
                try:
                    info = c.select("INBOX", readonly=True)
                    check(info.get("EXISTS") == 3, "%r: 3 messages (%r)" % (t, info))
                    untagged, tagged = c.command(
                        b"UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])", check=True)
                    got = {}
                    for r in untagged:
                        resp = W.parse_response(r)
                        items = {n: v for n, _, v in W.fetch_items(resp)}
                        got[int(items[b"UID"])] = (int(items[b"RFC822.SIZE"]),
                                                   bytes(items[b"BODY[]"]))
                    lf_served = LF_MSG.replace(b"\n", b"\r\n")
                    check(got.get(1) == (len(CRLF_MSG), CRLF_MSG),
                          "%r: CRLF message byte for byte" % t)
                    check(got.get(2) == (len(lf_served), lf_served),
                          "%r: APPENDed LF message served as CRLF, size counts CRLF" % t)
                    check(got.get(3) == (len(lf_served), lf_served),
                          "%r: LF file in the maildir served as CRLF" % t)
                    untagged, _ = c.command(b"FETCH 1 (BODY.PEEK[]<0.4> BODY.PEEK[]<999.3>)",
                                            check=True)
                    raw = untagged[0]
                    check(b"BODY[]<0> {4}\r\nFrom" in raw and b"BODY[]<999> {0}\r\n" in raw,
                          "%r: partials keep their literal sizes ({0} past the end): %r"
                          % (t, raw))
                    c.command(b"LOGOUT")
                finally:
                    c.close()
        if rig.px is not None:
            st = rig.px.stop()
            check(st == 0, "proxy exits 0 on SIGTERM, got %r" % st)
    return summary("imap rig self-test")


if __name__ == "__main__":
    sys.exit(main())
