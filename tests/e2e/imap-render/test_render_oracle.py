#!/usr/bin/env python3
"""Render oracle: every FETCH item of every corpus message, answered by a
real Dovecot for the stored plaintext and by qumail_imap_render (through
imap_render_dump) for the same bytes, must be identical.

Compared: BODYSTRUCTURE, BODY, ENVELOPE (wire syntax, literals included),
RFC822.SIZE, BODY[] / [HEADER] / [TEXT] / HEADER.FIELDS(.NOT) with several
field lists, every part number with [n], [n.MIME], [n.HEADER], [n.TEXT],
[n.HEADER.FIELDS (...)], a part that does not exist, and partials at the
edges (<0.1> <0.100> <17.1000> <size-1.10> <size.10> <size+5.10>) of BODY[]
and of each part. Section bytes are compared as payload; that Dovecot sent
them as a literal is checked too.

usage: test_render_oracle.py PATH/TO/imap_render_dump [message files...]
(default corpus: tests/unit/mime/corpus and tests/unit/imap-render/corpus).
Exit 77 when not root (the harness needs its own Dovecot)."""

import glob
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUMAIL_SRC", os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, HERE)

from rawimap import RawImap, split_items, literal_payload  # noqa: E402

FIELD_LISTS = [
    "From", "SUBJECT To Cc", "Content-Type Content-Transfer-Encoding",
    "Date Message-ID X-Missing", "X-None",
]


class Dump:
    """Our renderer, one process per message."""

    def __init__(self, tool, path):
        self.p = subprocess.Popen([tool, path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)

    def ask(self, req):
        self.p.stdin.write(req.encode() + b"\n")
        self.p.stdin.flush()
        n = int(self.p.stdout.readline())
        data = self.p.stdout.read(n)
        self.p.stdout.read(1)
        return data

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def sections_for(parts):
    secs = ["", "HEADER", "TEXT"]
    secs += ["HEADER.FIELDS (%s)" % f for f in FIELD_LISTS]
    secs += ["HEADER.FIELDS.NOT (%s)" % f for f in FIELD_LISTS[:3]]
    for p in parts:
        secs += [p, p + ".MIME", p + ".HEADER", p + ".TEXT",
                 p + ".HEADER.FIELDS (From Subject)",
                 p + ".HEADER.FIELDS.NOT (From)"]
    top = parts[-1].split(".")[0] if parts else "1"
    secs.append(str(int(top) + 1))          # a part that does not exist
    secs.append(str(int(top) + 1) + ".MIME")
    return secs


def fetch_many(conn, uid, items, chunk=40):
    """FETCH items (list of bytes) in chunks (Dovecot limits the command
    line); the BODY[...] answers in request order."""
    out = []
    for i in range(0, len(items), chunk):
        got = split_items(conn.fetch(uid, b" ".join(items[i:i + chunk])))
        out += [a for a in got if a[0].startswith(b"BODY[")]
    return out


def check_message(conn, tool, path, failures):
    raw = open(path, "rb").read()
    name = os.path.relpath(path, SRC)
    if not raw:
        return  # Dovecot refuses to store a zero byte message
    uid = conn.append("INBOX", raw)
    dump = Dump(tool, path)
    try:
        # every part number, at most the first 80 (a deep message has
        # hundreds; BODYSTRUCTURE covers them all)
        parts = dump.ask("PARTS").decode().split()[:80]
        got = dict(split_items(conn.fetch(
            uid, b"RFC822.SIZE BODYSTRUCTURE BODY ENVELOPE")))
        for item in ("RFC822.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE"):
            mine = dump.ask(item)
            theirs = got.get(item.encode())
            if mine != theirs:
                failures.append((name, item, theirs, mine))
        secs = sections_for(parts)
        answers = fetch_many(conn, uid,
                             [b"BODY.PEEK[%s]" % s.encode() for s in secs])
        if len(answers) != len(secs):
            failures.append((name, "sections", len(answers), len(secs)))
            return
        sizes = {}
        for s, (iname, value) in zip(secs, answers):
            theirs = literal_payload(value)
            mine = dump.ask("SECTION " + s)
            sizes[s] = len(theirs or b"")
            if theirs != mine or not value.startswith(b"{"):
                failures.append((name, "BODY[%s]" % s, value[:300], mine[:300]))
        # partials at the edges of BODY[] and of every part
        preq, plist = [], []
        for s in [""] + parts:
            size = sizes.get(s, 0)
            for o, n in ((0, 1), (0, 100), (17, 1000), (max(size - 1, 0), 10),
                         (size, 10), (size + 5, 10)):
                preq.append(b"BODY.PEEK[%s]<%d.%d>" % (s.encode(), o, n))
                plist.append((s, o, n))
        answers = fetch_many(conn, uid, preq)
        for (s, o, n), (iname, value) in zip(plist, answers):
            theirs = literal_payload(value)
            mine = dump.ask("PARTIAL %d %d %s" % (o, n, s))
            if theirs != mine or not value.startswith(b"{"):
                failures.append((name, "BODY[%s]<%d.%d>" % (s, o, n),
                                 value[:200], mine[:200]))
    finally:
        dump.close()


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    files = sys.argv[2:] or sorted(
        glob.glob(os.path.join(SRC, "tests/unit/mime/corpus/*.eml")) +
        glob.glob(os.path.join(SRC, "tests/unit/imap-render/corpus/*.eml")))
    if os.geteuid() != 0:
        print("skipped: needs root for its own Dovecot")
        return 77
    import mailstack as M
    failures = []
    with M.MailStack() as ms:
        conn = RawImap(ms.host, ms.imap_port)
        conn.login("bob@example.org", M.USERS["bob@example.org"])
        conn.ok(b"SELECT INBOX")
        for path in files:
            check_message(conn, tool, path, failures)
        conn.logout()
    seen = set()
    for name, item, theirs, mine in failures:
        print("MISMATCH %s %s\n  dovecot: %r\n  ours:    %r" % (
            name, item, theirs, mine))
        seen.add(name)
    print("%d messages, %d mismatches in %d messages" % (
        len(files), len(failures), len(seen)))
    print("%d passed, %d failed" % (len(files) - len(seen), len(seen)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
