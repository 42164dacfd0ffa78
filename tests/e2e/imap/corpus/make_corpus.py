#!/usr/bin/env python3
"""Regenerates the IMAP transparency corpus (deterministic). The .eml files
are committed; this script documents how they were made. It extends
tests/unit/mime/corpus/ (which the oracle also loads) with the shapes
IMAP's BODYSTRUCTURE, ENVELOPE and section numbering are most sensitive to.
Run from this folder: python3 make_corpus.py"""
import base64
import hashlib
import os


def blob(n, seed):
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


def b64(data, width=76):
    s = base64.b64encode(data).decode()
    return "\n".join(s[i:i + width] for i in range(0, len(s), width)) if s else ""


def crlf(s):
    return s.replace("\n", "\r\n").encode("utf-8")


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


HDR = """From: Alice Example <alice@example.org>
To: Bob Example <bob@example.org>
Date: Tue, 24 Nov 2026 10:00:00 +0000
Message-ID: <{mid}@example.org>
Subject: {subject}
MIME-Version: 1.0
"""

# 1. multipart/alternative, plain + html, quoted-printable.
write("i01-alternative-qp.eml", crlf(HDR.format(mid="i01", subject="Lunch =?UTF-8?Q?men=C3=BC?=") + """Content-Type: multipart/alternative; boundary="alt-i01"

--alt-i01
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: quoted-printable

Today's men=C3=BC: soup, bread and a very long line that needs a soft brea=
k in quoted-printable.

--alt-i01
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Today's men=C3=BC</p></body></html>

--alt-i01--
"""))

# 2. multipart/related inside multipart/alternative inside multipart/mixed
#    (Outlook/Apple shape), Content-ID, Content-Location, inline image.
img = blob(2100, "i02-png")
write("i02-mixed-alt-related.eml", crlf(HDR.format(mid="i02", subject="Photo report") + """Content-Type: multipart/mixed; boundary="mix-i02"

--mix-i02
Content-Type: multipart/alternative; boundary="alt-i02"

--alt-i02
Content-Type: text/plain; charset=us-ascii

See the picture.
--alt-i02
Content-Type: multipart/related; boundary="rel-i02"; type="text/html"

--rel-i02
Content-Type: text/html; charset=us-ascii

<p>See <img src="cid:img1@example.org"></p>
--rel-i02
Content-Type: image/png; name="site.png"
Content-Transfer-Encoding: base64
Content-ID: <img1@example.org>
Content-Location: site.png
Content-Disposition: inline; filename="site.png"

""" + b64(img) + """
--rel-i02--

--alt-i02--

--mix-i02
Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet;
 name="=?UTF-8?Q?Zahlen_f=C3=BCr_Q3.xlsx?="
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
 filename*=UTF-8''Zahlen%20f%C3%BCr%20Q3.xlsx;
 size=600; creation-date="Tue, 24 Nov 2026 09:00:00 +0000"
Content-Language: de
Content-Description: Quarterly numbers
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

""" + b64(blob(600, "i02-xlsx")) + """
--mix-i02--
"""))

# 3. base64 attachments at line-boundary sizes (57 octets = one 76-column
#    line), including a zero-octet part.
parts = []
for n in (0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 171):
    parts.append("""--b64-i03
Content-Type: application/octet-stream; name="blob-{n}.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="blob-{n}.bin"

{data}
""".format(n=n, data=b64(blob(n, "i03-%d" % n))))
write("i03-base64-boundaries.eml", crlf(HDR.format(mid="i03", subject="base64 sizes") +
                                         'Content-Type: multipart/mixed; boundary="b64-i03"\n\n'
                                         + "".join(parts) + "--b64-i03--\n"))

# 4. empty parts: an empty text/plain body, an empty preamble/epilogue,
#    a part with only headers, a multipart with one empty part.
write("i04-empty-parts.eml", crlf(HDR.format(mid="i04", subject="empty parts") + """Content-Type: multipart/mixed; boundary="e-i04"

--e-i04
Content-Type: text/plain; charset=us-ascii


--e-i04
Content-Type: text/plain; charset=us-ascii
--e-i04

--e-i04
Content-Type: multipart/alternative; boundary="e2-i04"

--e2-i04

--e2-i04--
--e-i04--
"""))

# 5. header-only message with a final CRLF and no blank line.
write("i05-header-only-crlf.eml", crlf("""From: alice@example.org
To: bob@example.org
Subject: only headers
Date: Tue, 24 Nov 2026 10:05:00 +0000
"""))

# 6. headers, blank line, empty body.
write("i06-empty-body.eml", crlf(HDR.format(mid="i06", subject="empty body") +
                                  "Content-Type: text/plain\n\n"))

# 7. nested forwards: message/rfc822 inside message/rfc822 inside mixed,
#    the inner one multipart with an attachment.
inner = """From: Carol <carol@example.net>
To: Alice <alice@example.org>
Subject: original with attachment
Date: Mon, 23 Nov 2026 08:00:00 +0000
Message-ID: <inner-i07@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="in-i07"

--in-i07
Content-Type: text/plain

The original text.
--in-i07
Content-Type: application/pdf; name="x.pdf"
Content-Transfer-Encoding: base64

""" + b64(blob(300, "i07-pdf")) + """
--in-i07--
"""
middle = """From: Alice <alice@example.org>
To: Dave <dave@example.net>
Subject: Fwd: original with attachment
Date: Mon, 23 Nov 2026 09:00:00 +0000
Message-ID: <mid-i07@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mid-i07"

--mid-i07
Content-Type: text/plain

Forwarding.
--mid-i07
Content-Type: message/rfc822

""" + inner + """
--mid-i07--
"""
write("i07-forward-nested.eml", crlf(HDR.format(mid="i07", subject="Fwd: Fwd: original with attachment") + """Content-Type: multipart/mixed; boundary="out-i07"

--out-i07
Content-Type: text/plain; charset=us-ascii

See below, twice forwarded.
--out-i07
Content-Type: message/rfc822; name="fwd.eml"
Content-Disposition: attachment; filename="fwd.eml"

""" + middle + """
--out-i07--
"""))

# 8. a bare message/rfc822 top-level body (a forward as the whole message).
write("i08-toplevel-rfc822.eml", crlf(HDR.format(mid="i08", subject="bounce-like") +
                                      "Content-Type: message/rfc822\n\n" + inner))

# 9. multipart/report (a bounce): text, message/delivery-status,
#    text/rfc822-headers.
write("i09-report-dsn.eml", crlf("""From: MAILER-DAEMON@example.org (Mail Delivery System)
To: alice@example.org
Subject: Undelivered Mail Returned to Sender
Date: Tue, 24 Nov 2026 10:10:00 +0000
Message-ID: <i09@example.org>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="rep-i09"

--rep-i09
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--rep-i09
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org
Arrival-Date: Tue, 24 Nov 2026 10:09:00 +0000

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1

--rep-i09
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: alice@example.org
To: nobody@example.org
Subject: hello

--rep-i09--
"""))

# 10. envelope corner cases: groups, several From, Sender and Reply-To,
#     quoted display names with specials, encoded words, In-Reply-To,
#     References, no Message-ID, address without domain.
write("i10-envelope-corners.eml", crlf("""From: "Example, Alice (work)" <alice@example.org>, bob@example.org
Sender: Secretary <sec@example.org>
Reply-To: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>
To: undisclosed-recipients:;
Cc: Team: carol@example.net, "Dave \\"D\\"" <dave@example.net>;, erin@sub.example.org
Bcc: hidden@example.org
In-Reply-To: <parent@example.org>
References: <root@example.org> <parent@example.org>
Subject: =?UTF-8?B?RW52ZWxvcGUg4pyTIGNvcm5lcnM=?=
Date: Tue, 24 Nov 2026 10:15:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Body with 8bit: \u00e4\u00f6\u00fc \u2713
"""))

# 11. deep nesting: 12 levels of multipart/mixed.
depth = 12
body = "Content-Type: text/plain\n\ndeepest\n"
for i in reversed(range(depth)):
    body = ('Content-Type: multipart/mixed; boundary="d%d"\n\n--d%d\n' % (i, i) + body +
            "--d%d\nContent-Type: text/plain\n\nsibling %d\n--d%d--\n" % (i, i, i))
write("i11-deep-nesting.eml", crlf(HDR.format(mid="i11", subject="deep") + body))

# 12. LF-only multipart with an 8bit part and a non-ASCII raw header
#     (SMTPUTF8 style), no trailing newline after the closing boundary.
write("i12-lf-utf8-headers.eml", ("""From: J\u00f6rg <j\u00f6rg@example.org>
To: bob@example.org
Subject: Gr\u00fc\u00dfe aus K\u00f6ln
Date: Tue, 24 Nov 2026 10:20:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=lf-i12

--lf-i12
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Sch\u00f6ne Gr\u00fc\u00dfe.
--lf-i12
Content-Type: text/plain; charset=utf-8; name="notiz.txt"
Content-Disposition: attachment; filename="notiz.txt"

Notiz.
--lf-i12--""").encode("utf-8"))

# 13. parameters the BODYSTRUCTURE must quote or render: RFC 2231
#     continuations, empty values, odd case, duplicate params, NIL-able
#     fields, unknown type, a Content-Type without subtype.
write("i13-params.eml", crlf(HDR.format(mid="i13", subject="parameters") + """Content-Type: MULTIPART/Mixed; Boundary="p-i13"; X-Extra=""

--p-i13
Content-Type: text/PLAIN; CHARSET="ISO-8859-1"; format=Flowed; delsp=yes
Content-Transfer-Encoding: 7BIT

plain
--p-i13
Content-Type: application/x-unknown; name*0="very long file name that is split ";
 name*1="over several continuation parameters.dat"
Content-Transfer-Encoding: Base64
Content-Disposition: ATTACHMENT; filename*0*=UTF-8''%E2%9C%93;
 filename*1=" check.dat"

""" + b64(blob(90, "i13")) + """
--p-i13
Content-Type: text
Content-Transfer-Encoding: x-unknown

no subtype, unknown encoding
--p-i13--
"""))

# 14. quoted-printable with trailing spaces and '=' at line ends, and a
#     text/plain part with lines of exactly 998 and 999 octets.
long998 = "x" * 998
long999 = "y" * 999
write("i14-qp-and-998.eml", crlf(HDR.format(mid="i14", subject="qp and 998") + """Content-Type: multipart/mixed; boundary="q-i14"

--q-i14
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

trailing space=20
soft=
break and =3D equals =E2=9C=93
--q-i14
Content-Type: text/plain

""" + long998 + "\n" + long999 + """
--q-i14--
"""))

# 15. a one-part message whose body is base64 at top level (no multipart),
#     the size a 2-line encoded payload makes.
write("i15-toplevel-base64.eml", crlf(HDR.format(mid="i15", subject="top-level base64") + """Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.pdf"

""" + b64(blob(114, "i15")) + "\n"))

# 16. a multipart digest (default part type message/rfc822) with two
#     messages and an explicit text/plain part.
write("i16-digest.eml", crlf(HDR.format(mid="i16", subject="digest Vol 1 Issue 2") + """Content-Type: multipart/digest; boundary="dg-i16"

--dg-i16

From: a@example.org
Subject: first
Date: Tue, 24 Nov 2026 08:00:00 +0000

first body
--dg-i16

From: b@example.org
Subject: second
Date: Tue, 24 Nov 2026 08:30:00 +0000
Content-Type: text/plain

second body
--dg-i16
Content-Type: text/plain

end of digest
--dg-i16--
"""))

print("ok")
