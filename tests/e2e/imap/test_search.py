#!/usr/bin/env python3
"""SEARCH / SORT oracle (issue 13): a table of criteria and sort keys run
on a reference mailbox (plaintext, straight from Dovecot) and on a mailbox
under test; the results must be equal (UIDs mapped by position, so both
mailboxes hold the corpus in the same order).

Modes (ctest entry):
  (none)       e2e_imap_search: "Plain" vs "Copy" directly. Besides being
               equal, the table must discriminate: every command answers
               OK, and most criteria match some but not all messages (a
               table where everything matches would test nothing).
  --proxy      e2e_imap_search_proxy: "Plain" directly vs "Copy" through
               the proxy (pass-through, issue 11). Skipped (77) while the
               proxy has no IMAP side.
  --encrypted  e2e_imap_search_encrypted: "Plain" directly vs "Encrypted"
               (the corpus encrypted with keys from the KME simulator,
               encrypted.py) through the proxy. Skipped (77) until the
               proxy decrypts (issue 12); a mismatch then is issue 13's.
"""

import os
import re
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from checks import check, summary  # noqa: E402
import corpus  # noqa: E402
import imapstack as I  # noqa: E402

USER = "bob@example.org"
TIMING = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)")

# (command suffix after "UID SEARCH " or "UID SORT ") - every criterion of
# issue 13's list, alone and combined. Strings are chosen from the corpus.
SEARCHES = [
    b"ALL",
    b"SUBJECT \"figures\"",
    b"SUBJECT \"Fwd\"",
    b"SUBJECT \"men\xc3\xbc\"",            # encoded word in the Subject (UTF-8 search)
    b"FROM \"alice\"",
    b"FROM \"carol\"",
    b"TO \"bob\"",
    b"CC \"carol\"",
    b"BCC \"hidden\"",
    b"BODY \"Salut\"",
    b"BODY \"original text\"",
    b"BODY \"attachment\"",
    b"BODY \"Sch\xc3\xb6ne\"",             # 8bit UTF-8 body
    b"BODY \"men\xc3\xbc\"",               # quoted-printable body
    b"TEXT \"Quarterly\"",
    b"TEXT \"midi\"",
    b"TEXT \"boundary\"",
    b"LARGER 5000",
    b"SMALLER 1000",
    b"LARGER 1000 SMALLER 5000",
    b"HEADER Message-ID \"example.org\"",
    b"HEADER X-Mailer \"\"",
    b"HEADER Content-Type \"multipart/mixed\"",
    b"HEADER In-Reply-To \"parent\"",
    b"OR SUBJECT \"Fwd\" FROM \"carol\"",
    b"NOT FROM \"alice\"",
    b"NOT BODY \"the\"",
    b"OR LARGER 100000 SUBJECT \"empty\"",
    b"OR (SUBJECT \"digest\" NOT LARGER 2000) TEXT \"calendar\"",
    b"SENTSINCE 24-Nov-2026",
    b"SENTBEFORE 24-Nov-2026",
    b"SENTON 23-Nov-2026",
    b"SENTSINCE 23-Nov-2026 SENTBEFORE 24-Nov-2026",
    b"UID 1:5",
    b"UID 10:*",
    b"2:4",
    b"UID 3,7,11:13 BODY \"the\"",
    b"NOT UID 1:10 FROM \"example\"",
    b"RETURN (MIN MAX COUNT) BODY \"the\"",
    b"RETURN (ALL) OR FROM \"alice\" FROM \"bob\"",
    b"CHARSET UTF-8 SUBJECT \"Gr\xc3\xbc\xc3\x9fe\"",
]
SORTS = [
    b"(SUBJECT) UTF-8 ALL",
    b"(SIZE) UTF-8 ALL",
    b"(FROM) UTF-8 ALL",
    b"(DATE) UTF-8 ALL",
    b"(REVERSE DATE) UTF-8 ALL",
    b"(REVERSE SIZE) UTF-8 LARGER 1000",
    b"(FROM SUBJECT) UTF-8 BODY \"the\"",
    b"(TO) UTF-8 ALL",
    b"(CC) UTF-8 ALL",
    b"RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL",
]



def literalize(crit):
    """Strings with 8-bit octets go as literals (LITERAL+), as clients do."""
    def lit(m):
        s = m.group(1)
        if any(c > 0x7f for c in s):
            return b"{%d+}\r\n" % len(s) + s
        return m.group(0)
    return re.sub(rb"\"([^\"]*)\"", lit, crit)


def limit_check(rig):
    """imap.search.max_decrypt: a body search that would decrypt more than
    the limit is refused with NO [LIMIT] (no partial result); a header
    search after a restart is answered from the vault's metadata (nothing
    to decrypt) and is not refused."""
    rig.px.stop(remove=False)
    rig.px.extra_imap = dict(rig.px.extra_imap or {}, search={"max_decrypt": 3})
    rig.px.start()
    t = rig.require_proxy()
    c = t.connect(USER)
    try:
        c.select("Encrypted", readonly=True)
        _, tagged = c.command(b'UID SEARCH BODY "the"')
        check(b" NO [LIMIT] " in tagged, "a body search over more than max_decrypt protected "
              "messages: NO [LIMIT] (%r)" % tagged[:160])
        untagged, tagged = c.command(b'UID SEARCH SUBJECT "Fwd"')
        check(b" OK " in tagged and any(r.startswith(b"* SEARCH ") for r in untagged),
              "a header search after a restart is answered from the vault's metadata "
              "(%r)" % tagged[:120])
    finally:
        c.logout()


def run(target, box, uidmap=None):
    """{command: normalised result} and {command: raw}."""
    c = target.connect(USER)
    try:
        c.select(box, readonly=True)
        u, _ = c.command(b"UID SEARCH ALL", check=True)
        uids = [int(x) for r in u if r.startswith(b"* SEARCH") for x in r[8:].split()]
        pos = {uid: i + 1 for i, uid in enumerate(uids)}
        out, raw = {}, {}
        for verb, table in ((b"UID SEARCH ", SEARCHES), (b"UID SORT ", SORTS)):
            for crit in table:
                cmd = verb + crit
                if crit.startswith(b"CHARSET") or any(ch > 0x7f for ch in crit):
                    if not crit.startswith(b"CHARSET") and verb == b"UID SEARCH ":
                        cmd = verb + b"CHARSET UTF-8 " + crit
                untagged, tagged = c.command(literalize(cmd))
                status = TIMING.sub(b"", tagged.split(b" ", 1)[1]).strip()
                res = []
                for r in untagged:
                    m = re.match(rb"\* (SEARCH|SORT)((?: \d+)*)\s*$", r)
                    if m:
                        res.append((m.group(1), tuple(pos.get(int(x), -int(x))
                                                      for x in m.group(2).split())))
                        continue
                    m = re.match(rb"\* ESEARCH (\(TAG \"[^\"]*\"\) )?(UID )?(.*)\r\n$", r)
                    if m:
                        res.append((b"ESEARCH", m.group(2) or b"", map_esearch(m.group(3), pos)))
                        continue
                    res.append((b"other", r))
                out[cmd] = (status, tuple(res))
                raw[cmd] = untagged + [tagged]
        return out, raw, len(uids)
    finally:
        c.logout()


def map_esearch(text, pos):
    """MIN/MAX/ALL values (UIDs) mapped to positions; COUNT kept."""
    def one(n):
        return str(pos.get(int(n), -int(n))).encode()

    def seqset(s):
        out = []
        for part in s.split(b","):
            if b":" in part:
                a, b = part.split(b":")
                out.append(one(a) + b":" + one(b))
            else:
                out.append(one(part))
        return b",".join(out)
    toks = text.split()
    res = []
    i = 0
    while i < len(toks):
        k = toks[i].upper()
        v = toks[i + 1] if i + 1 < len(toks) else b""
        if k in (b"MIN", b"MAX"):
            res.append(k + b" " + one(v))
        elif k == b"ALL":
            res.append(k + b" " + seqset(v))
        else:
            res.append(k + b" " + v)
        i += 2
    return b" ".join(res)


def compare(ref, dut, label):
    diffs = [cmd for cmd in ref[0] if ref[0][cmd] != dut[0].get(cmd)]
    for cmd in diffs[:20]:
        print("DIFF %s\n    ref: %r\n    dut: %r" % (cmd.decode(errors="replace"), ref[1][cmd],
                                                     dut[1].get(cmd)))
    check(not diffs, "%s: %d SEARCH/SORT commands give the same results (%d differ)"
          % (label, len(ref[0]), len(diffs)))


def main():
    I.need_root()
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("--proxy", "--encrypted"):
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
    msgs = corpus.messages()
    raws = [m for _, m in msgs]
    with I.ImapRig() as rig:
        rig.load(USER, "Plain", raws)
        ref = run(rig.direct(), "Plain")
        if mode == "":
            rig.load(USER, "Copy", raws)
            statuses = {cmd: st for cmd, (st, _) in ref[0].items()}
            bad = [c for c, st in statuses.items() if not st.startswith(b"OK")]
            check(not bad, "every SEARCH/SORT command of the table answers OK (not: %r)" % bad)
            n = ref[2]
            discriminating = 0
            for cmd, (st, res) in ref[0].items():
                hits = [x for kind, *rest in res for x in (rest[0] if kind != b"ESEARCH"
                                                            else ())]
                if cmd.startswith(b"UID SEARCH") and 0 < len(hits) < n:
                    discriminating += 1
            check(discriminating >= len(SEARCHES) * 2 // 3,
                  "the criteria discriminate: %d of %d SEARCHes match some but not all "
                  "of the %d messages" % (discriminating, len(SEARCHES), n))
            compare(ref, run(rig.direct(), "Copy"), "Plain vs Copy directly")
        elif mode == "--proxy":
            rig.load(USER, "Copy", raws)
            compare(ref, run(rig.require_proxy(), "Copy"), "Plain directly vs Copy through the proxy")
        elif mode == "--encrypted":
            import encrypted as E
            kp = E.KeyedProxy(rig)
            E.build(rig, msgs, kp, delivered=False)
            t = rig.require_proxy()
            c = t.connect(USER)
            c.select("Encrypted", readonly=True)
            u, _ = c.command(b"UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])")
            c.logout()
            if any(E.is_ours(r) for r in u):
                I.skip("the proxy serves our multipart/encrypted messages as they are: no "
                       "decryption on FETCH yet (issue 12), so no SEARCH over plaintext (13)")
            try:
                compare(ref, run(t, "Encrypted"), "Plain directly vs Encrypted through the proxy")
            except OSError:
                print(rig.px.log_text()[-8000:])
                raise
            limit_check(rig)
        if rig.px is not None:
            st = rig.px.stop()
            check(st == 0, "proxy exits 0 on SIGTERM, got %r" % st)
    return summary("imap search")


if __name__ == "__main__":
    sys.exit(main())
