#!/usr/bin/env python3
"""SEARCH/SORT oracle: messages stored byte-exact in a real Dovecot; for a
table of criteria, Dovecot's UID SEARCH / UID SORT answers must equal
qumail_imap_search's (tool: imap_search_dump) over the same plaintext.

usage: test_search_oracle.py IMAP_SEARCH_DUMP
Needs root (own Dovecot); exits 77 (skipped) otherwise."""
import glob
import os
import re
import subprocess
import sys
import tempfile
import calendar
import time

sys.dont_write_bytecode = True
SRC = os.environ.get("QUMAIL_SRC",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "../../..")))
sys.path.insert(0, os.path.join(SRC, "tests/e2e/lib"))
sys.path.insert(0, os.path.join(SRC, "tests/e2e/imap-render"))
from rawimap import RawImap  # noqa: E402


def crlf(s):
    return s.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# Messages made for searching: encodings, charsets, structure, dates.
OWN = [
    crlf(b"""From: "Alice Example" <alice@example.org>
To: bob@example.org
Cc: Carol <carol@example.com>
Subject: Re: [list] Quarterly   report (fwd)
Date: Mon, 7 Dec 2026 10:00:00 +0100
Message-ID: <m1@example.org>

The quick brown fox jumps over the lazy dog.
"""),
    crlf(b"""From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <joerg@example.de>
To: "Team, All" <team@example.de>
Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?= =?UTF-8?Q?_und_mehr?=
Date: Tue, 1 Dec 2026 08:30:00 -0500
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe aus der Stra=
=C3=9Fe, sch=C3=B6nes Wetter, =C3=A9t=C3=A9.  =20
Soft=
break word.
"""),
    crlf(b"""From: Kostas <kostas@example.gr>
To: bob@example.org
Subject: =?UTF-8?B?zpXOu867zrfOvc65zrrOrA==?=
Date: Sun, 15 Mar 2020 12:00:00 +0200
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: base64

""") + __import__("base64").encodebytes(
        "Grüße aus Köln und Ελληνικά κείμενα, ΣΊΣΥΦΟΣ.\n".encode()).replace(b"\n", b"\r\n"),
    crlf(b"""From: Newsletter <news@shop.example>
To: bob@example.org
Subject: Fwd: [fwd: Hello world]
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble needle-in-preamble
--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=us-ascii

plain version with a word
--alt
Content-Type: text/html; charset=us-ascii

<html><body><b>bold</b> html-only-word</body></html>
--alt--
--outer
Content-Type: application/pdf; name="x.pdf"
Content-Transfer-Encoding: base64

c2VjcmV0d29yZCBpbnNpZGUgYSBiaW5hcnkgYXR0YWNobWVudA==
--outer
Content-Type: message/rfc822

From: Inner <inner@example.net>
Subject: Inner topic
Date: Wed, 2 Jan 2019 03:04:05 GMT

nested needle text
--outer--
epilogue-word
"""),
    crlf(b"""From: legacy@example.com
To: undisclosed-recipients:;
Bcc: Dave <dave@example.net>
Subject: FW: test
Date: 3 Feb 99 13:14 EST
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit

na\xefve fa\xe7ade caf\xe9
"""),
    crlf(b"""From: nodate@example.com
To: bob@example.org
Subject: long
 subject
\tfolded here

no date header here
"""),
    b"From: lf@example.com\nTo: bob@example.org\nSubject: LF only [tag] \nDate: Fri, 31 Dec 2021 23:59:59 -0800\n\nline one\nline two CAPS\n",
    crlf(b"""From: hdr@example.com
Subject: header only
Date: Thu, 10 Dec 2026 10:00:00 +0000
X-Custom: Some Value
"""),
    crlf(b"""From: =?iso-8859-1?q?Fran=E7ois?= <fr@example.fr>
To: =?utf-8?q?=C3=85sa?= <asa@example.se>, second@example.se
Cc: group: a@x.org, b@y.org;
Subject: Re: Re: RE: Fw: [x] [y] base subject
Date: Mon, 7 Dec 2026 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=windows-1252
Content-Transfer-Encoding: quoted-printable

Euro =80 sign and quote =93smart=94 end.
"""),
]

# Edge cases: repeated fields, broken encodings, unknown transfer encoding,
# a nested message's header, bare CR, NUL, LF line ends.
OWN += [
    crlf(b"""From: first@example.com
From: second@example.com
Subject: two froms
Subject: second subject
Date: garbage date
X-Folded: alpha
  beta	gamma

body
"""),
    crlf(b"""From: qp@example.com
Subject: =?utf-8?q?split?= =?utf-8?q?_word?= plain =?utf-8?b?d29yZA==?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

broken =ZZ seq and =3D equals and =C3=A9 and trailing=20
trailing spaces   
=
joined
"""),
    crlf(b"""From: uu@example.com
Subject: unknown cte
Content-Type: text/plain
Content-Transfer-Encoding: x-uuencode

hidden-uu-word
"""),
    crlf(b"""From: b64@example.com
Subject: broken base64
Content-Type: text/plain
Content-Transfer-Encoding: base64

aGVsbG8gd29y!!bGQ=
"""),
    b"From: cr@example.com\r\nSubject: bare\rCR subject\r\n\r\nbody with \x00 nul and bare\rcr\r\n",
    b"From: lf2@example.com\nSubject: lf\n\tfolded\n\nlf body\nsecond line\n",
]

DATES = ["15-Mar-2020 12:00:00 +0000", "01-Jan-2021 00:00:00 +0000",
         "07-Dec-2026 10:00:00 +0100", "31-Dec-2021 23:59:59 -0800",
         "10-Jun-2024 06:30:00 +0000"]

CRITERIA = [
    'ALL', 'SUBJECT report', 'SUBJECT "quarterly report"', 'SUBJECT "quarterly   report"',
    'SUBJECT "Café"', 'SUBJECT cafe', 'SUBJECT "crème und"', 'SUBJECT ελληνικά',
    'SUBJECT "long subject"', 'SUBJECT "long  subject"', 'SUBJECT "subject folded"',
    'SUBJECT "[tag]"', 'SUBJECT ""', 'SUBJECT "base subject"',
    'FROM alice', 'FROM "alice@example.org"', 'FROM "Alice Example"', 'FROM "\\"Alice"',
    'FROM jörg', 'FROM "müller"', 'FROM "JÖRG MÜLLER <"', 'FROM françois', 'FROM MISSING',
    'TO bob', 'TO undisclosed', 'TO "team, all"', 'TO åsa', 'TO second',
    'CC carol', 'CC group', 'CC "b@y.org"', 'BCC dave', 'BCC nobody',
    'HEADER Subject report', 'HEADER X-Nothing ""', 'HEADER Date 2026', 'HEADER From ""',
    'HEADER X-Custom "some value"', 'HEADER Message-ID m1', 'HEADER From alice',
    'HEADER To "Team, All"', 'HEADER Subject café',
    'BODY fox', 'BODY "quick brown"', 'BODY straße', 'BODY été', 'BODY grüße',
    'BODY köln', 'BODY ελληνικά', 'BODY σίσυφος', 'BODY "softbreak"', 'BODY "wetter, été."',
    'BODY bold', 'BODY "<b>"', 'BODY html-only-word', 'BODY secretword', 'BODY needle',
    'BODY needle-in-preamble', 'BODY epilogue-word', 'BODY "inner topic"',
    'TEXT needle', 'TEXT "inner topic"', 'TEXT "subject: re"', 'TEXT "SUBJECT: LONG SUBJECT"',
    'TEXT alice', 'BODY alice', 'TEXT café', 'TEXT "content-type: text/html"',
    'BODY naïve', 'BODY façade', 'BODY NAÏVE', 'BODY "€"', 'BODY "“smart”"',
    'BODY "line two caps"', 'TEXT "lf@example.com"', 'BODY ""', 'TEXT ""',
    'LARGER 1000', 'SMALLER 500', 'LARGER 0', 'SMALLER 100000',
    'OR SUBJECT report BODY needle', 'NOT BODY fox', 'NOT SUBJECT report',
    '(SUBJECT report FROM alice)', 'OR (FROM alice) (NOT LARGER 600)',
    'NOT (OR TO bob CC carol)',
    'SENTBEFORE 1-Jan-2000', 'SENTSINCE 1-Jan-2026', 'SENTON 7-Dec-2026',
    'SENTBEFORE 8-Dec-2026', 'SENTON 1-Dec-2026', 'SENTON 3-Feb-1999', 'SENTON 1-Jan-1970',
    'NOT SENTBEFORE 1-Jan-2000', 'SENTSINCE 31-Dec-2021', 'SENTON 31-Dec-2021',
    'BEFORE 1-Jan-2021', 'SINCE 1-Jan-2021', 'ON 15-Mar-2020', 'ON 7-Dec-2026',
    'ON 31-Dec-2021', 'ON 1-Jan-2022',
    'UID 1:5', 'UID 3,7:*', '2:4', 'NOT UID 1:3', '*', 'UID *',
    'SEEN', 'UNSEEN', 'FLAGGED', 'OR SEEN FLAGGED', 'NEW', 'OLD', 'RECENT', 'ANSWERED',
    'UNANSWERED', 'DELETED', 'DRAFT', 'KEYWORD $label1', 'UNKEYWORD $label1',
    'KEYWORD \\Seen', 'UNKEYWORD \\Seen', 'KEYWORD $LABEL1',
    'OR BODY fox (SEEN SUBJECT café)', 'BODY the', 'TEXT content-type', 'TEXT multipart',
    'BODY "="', 'TEXT "boundary="', 'BODY attachment', 'TEXT "from:"', 'BODY "from:"',
    'FROM second', 'FROM first', 'SUBJECT "second subject"', 'SUBJECT "two froms"',
    'HEADER X-Folded "alpha beta"', 'HEADER X-Folded "beta gamma"', 'HEADER X-Folded "alpha  beta"',
    'SENTON 1-Jan-1970 FROM first', 'SUBJECT "split word"', 'SUBJECT "plain word"',
    'SUBJECT "splitword"', 'BODY "=zz seq"', 'BODY "= equals"', 'BODY "trailing\"',
    'BODY "spaces joined"', 'BODY hidden-uu-word', 'TEXT hidden-uu-word', 'BODY "hello wor"',
    'BODY "hello world"', 'SUBJECT "bare cr"', 'BODY "bare"',
    'BODY "nul"', 'SUBJECT "lf folded"', 'BODY "lf body"', 'HEADER Subject "inner"',
    'HEADER Received ""', 'TEXT "x-folded: alpha"',
]

SORTS = ['(SUBJECT)', '(REVERSE SUBJECT)', '(FROM)', '(TO)', '(CC)', '(DATE)',
         '(REVERSE DATE)', '(ARRIVAL)', '(SIZE)', '(REVERSE SIZE SUBJECT)',
         '(DISPLAYFROM)', '(DISPLAYTO)', '(SUBJECT DATE)', '(REVERSE ARRIVAL)']


def to_wire(criteria):
    """Quoted strings with 8-bit bytes become LITERAL+ literals (both the
    server and the dump tool read them)."""
    out = b""
    data = criteria.encode()
    i = 0
    while i < len(data):
        if data[i:i + 1] == b'"':
            j = i + 1
            s = b""
            while data[j:j + 1] != b'"':
                if data[j:j + 1] == b"\\":
                    j += 1
                s += data[j:j + 1]
                j += 1
            if any(c >= 0x80 for c in s):
                out += b"{%d+}\r\n" % len(s) + s
            else:
                out += data[i:j + 1]
            i = j + 1
        elif data[i] >= 0x80:
            j = i
            while j < len(data) and data[j:j + 1] not in (b" ", b")"):
                j += 1
            s = data[i:j]
            # an atom with 8-bit: send as literal too
            k = i
            while k > 0 and data[k - 1:k] not in (b" ", b"("):
                k -= 1
            out = out[:len(out) - (i - k)]
            s = data[k:j]
            out += b"{%d+}\r\n" % len(s) + s
            i = j
        else:
            out += data[i:i + 1]
            i += 1
    return out


def parse_ids(untagged, word):
    for u in untagged:
        m = re.match(rb"\* " + word + rb"((?: \d+)*)", u)
        if m:
            return [int(x) for x in m.group(1).split()]
    return None


def internaldate_epoch(s):
    m = re.match(r"(\d+)-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", s)
    mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
           "Nov", "Dec"].index(m.group(2)) + 1
    local = calendar.timegm((int(m.group(3)), mon, int(m.group(1)), int(m.group(4)),
                             int(m.group(5)), int(m.group(6))))
    tz = (int(m.group(8)) * 60 + int(m.group(9))) * (1 if m.group(7) == "+" else -1)
    return local - tz * 60, tz


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    files = sorted(glob.glob(os.path.join(SRC, "tests/unit/mime/corpus/*.eml")) +
                   glob.glob(os.path.join(SRC, "tests/unit/imap-render/corpus/*.eml")))
    msgs = list(OWN)
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        if data:
            msgs.append(data)
    if os.geteuid() != 0:
        print("skipped: needs root for its own Dovecot")
        return 77
    import mailstack as M
    failures = []
    tmp = tempfile.mkdtemp(prefix="search-oracle-")
    with M.MailStack() as ms:
        conn = RawImap(ms.host, ms.imap_port)
        conn.login("bob@example.org", M.USERS["bob@example.org"])
        paths = []
        for i, data in enumerate(msgs):
            date = DATES[i % len(DATES)]
            conn.ok(b'APPEND "INBOX" "%s"' % date.encode(), data)
            p = os.path.join(tmp, "%03d.eml" % i)
            with open(p, "wb") as fh:
                fh.write(data)
            paths.append(p)
        conn.ok(b"SELECT INBOX")
        # What the server serves for each message is its canonical form
        # (LF -> CRLF, NUL -> 0x80): protect_append encrypts exactly that.
        for uid, data in enumerate(msgs, 1):
            raw = conn.fetch(uid, b"BODY.PEEK[]")
            served = raw[raw.index(b"}\r\n") + 3:]
            canon = re.sub(rb"(?<!\r)\n", b"\r\n", data).replace(b"\x00", b"\x80")
            if served != canon:
                failures.append(("F", "BODY[] of message %d" % uid, served[:80], canon[:80],
                                 b"canonical form"))
        conn.ok(b"UID STORE 1 +FLAGS (\\Seen)")
        conn.ok(b"UID STORE 2 +FLAGS (\\Flagged \\Seen)")
        conn.ok(b"UID STORE 3 +FLAGS (\\Answered)")
        conn.ok(b"UID STORE 4,9 +FLAGS ($label1)")
        conn.ok(b"UID STORE 5 +FLAGS (\\Draft \\Deleted)")
        untagged, _ = conn.ok(b"UID FETCH 1:* (UID FLAGS INTERNALDATE)")
        manifest = []
        now = int(time.time())
        for u in untagged:
            m = re.match(rb'\* (\d+) FETCH \(.*UID (\d+)', u)
            if not m:
                continue
            seq, uid = int(m.group(1)), int(m.group(2))
            flags = re.search(rb"FLAGS \(([^)]*)\)", u).group(1).decode().split()
            idate = re.search(rb'INTERNALDATE "([^"]+)"', u).group(1).decode()
            t, tz = internaldate_epoch(idate)
            manifest.append("M %d %d %d %d %d %s %s" % (uid, seq, t, tz, now,
                                                        paths[uid - 1], " ".join(flags)))
        lines = []
        expected = []
        for c in CRITERIA:
            wire = to_wire(c)
            untagged, status = conn.command(b"UID SEARCH CHARSET UTF-8 " + wire)
            theirs = parse_ids(untagged, b"SEARCH") if status.startswith(b"OK") else None
            lines.append("S " + wire.decode("utf-8", "surrogateescape"))
            expected.append(("S", c, theirs, status))
        for s in SORTS:
            for c in ["ALL", "OR SUBJECT report BODY needle", "NOT BODY fox"]:
                wire = to_wire(c)
                untagged, status = conn.command(b"UID SORT %s UTF-8 %s" % (s.encode(), wire))
                theirs = parse_ids(untagged, b"SORT") if status.startswith(b"OK") else None
                lines.append("O %s\t%s" % (s, wire.decode()))
                expected.append(("O", s + " " + c, theirs, status))
        conn.logout()
    # the tool reads one line per request: literals travel inline
    inp = "\n".join(manifest) + "\n" + "\n".join(
        l.replace("\r\n", "\x01") for l in lines) + "\n"
    out = subprocess.run([tool], input=inp.encode("utf-8", "surrogateescape"),
                         stdout=subprocess.PIPE, check=True).stdout.decode().splitlines()
    if len(out) != len(expected):
        print("tool answered %d lines for %d requests" % (len(out), len(expected)))
        print("\n".join(out))
        return 1
    for (kind, crit, theirs, status), mine in zip(expected, out):
        mine_ids = None if mine.startswith("ERROR") else [int(x) for x in mine.split()[1:]]
        if theirs is None and mine_ids is None:
            continue
        if kind == "S" and theirs is not None:
            theirs = sorted(theirs)
        if os.environ.get("ORACLE_VERBOSE"):
            print("%s %-40s dovecot=%s ours=%s" % (kind, crit, theirs, mine_ids))
        if theirs != mine_ids:
            failures.append((kind, crit, theirs, mine_ids, status))
    for kind, crit, theirs, mine, status in failures:
        status = status if isinstance(status, bytes) else b""
        print("MISMATCH %s %s\n  dovecot: %s %s\n  ours:    %s" % (
            kind, crit, theirs, status[:80], mine))
    n = len(expected)
    print("%d messages, %d requests, %d mismatches" % (len(msgs), n, len(failures)))
    print("%d passed, %d failed" % (n - len(failures), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
