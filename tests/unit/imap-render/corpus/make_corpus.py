#!/usr/bin/env python3
"""Writes the imap-render corpus: MIME shapes real clients send and the
malformed ones Dovecot must be matched on. Deterministic; the .eml files
are committed. Run from anywhere: python3 make_corpus.py"""
import base64
import os

HERE = os.path.dirname(os.path.abspath(__file__))
H = ("From: Alice Example <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
     "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <%s@example.org>\r\n"
     "Subject: %s\r\nMIME-Version: 1.0\r\n")


def b64(data, width=76):
    s = base64.b64encode(data).decode()
    return "\r\n".join(s[i:i + width] for i in range(0, len(s), width)) + "\r\n"


def w(name, text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


w("01-alternative.eml", H % ("alt", "alternative") +
  'Content-Type: multipart/alternative; boundary="alt-1"\r\n\r\n'
  "--alt-1\r\nContent-Type: text/plain; charset=utf-8\r\n"
  "Content-Transfer-Encoding: quoted-printable\r\n\r\nHello =E2=80=93 world\r\n"
  "--alt-1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n"
  "--alt-1--\r\n")

w("02-related-mixed.eml", H % ("rel", "related in mixed") +
  'Content-Type: multipart/mixed; boundary="m"\r\n\r\nThis is a multi-part message.\r\n'
  '--m\r\nContent-Type: multipart/related; type="text/html"; boundary="r"\r\n\r\n'
  '--r\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
  "--a\r\nContent-Type: text/plain\r\n\r\nplain\r\n--a\r\nContent-Type: text/html\r\n\r\n"
  '<img src="cid:logo@x">\r\n--a--\r\n\r\n'
  "--r\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo@x>\r\n"
  "Content-Transfer-Encoding: base64\r\nContent-Disposition: inline; filename=logo.png\r\n"
  "Content-Location: http://example.org/logo.png\r\n\r\n" + b64(bytes(range(200))) +
  "--r--\r\n--m\r\nContent-Type: application/octet-stream; name=\"a b.bin\"\r\n"
  "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n"
  " filename=\"a b.bin\"; size=57\r\nContent-Description: some\r\n\tbinary data\r\n"
  "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\nContent-Language: en, de-CH\r\n\r\n" +
  b64(b"x" * 57) + "--m--\r\nepilogue text\r\n")

inner = ("From: Carol <carol@example.net>\r\nTo: alice@example.org\r\n"
         "Subject: original\r\nDate: Sun, 22 Nov 2026 09:00:00 +0000\r\n"
         "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n"
         "--in\r\nContent-Type: text/plain\r\n\r\ninner body\r\n--in\r\n"
         "Content-Type: message/rfc822\r\n\r\nSubject: deepest\r\nFrom: d@x\r\n\r\nthe deepest\r\n"
         "--in--\r\n")
w("03-forward-nested.eml", H % ("fwd", "Fwd: original") +
  'Content-Type: multipart/mixed; boundary="f"\r\n\r\n--f\r\n'
  "Content-Type: text/plain\r\n\r\nsee below\r\n--f\r\n"
  'Content-Type: message/rfc822; name="original.eml"\r\nContent-Disposition: attachment\r\n\r\n' +
  inner + "--f--\r\n")

w("04-digest.eml", H % ("dig", "digest") +
  'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\n'
  "From: one@example.org\r\nSubject: first\r\n\r\nbody one\r\n--d\r\n"
  "Content-Type: text/plain\r\n\r\nnot a message\r\n--d\r\n\r\n"
  "Subject: third\r\nContent-Type: text/plain; charset=iso-8859-1\r\nMIME-Version: 1.0\r\n\r\n"
  "body three\r\n--d--\r\n")

w("05-calendar.eml", H % ("cal", "Invitation: sync") +
  'Content-Type: multipart/alternative; boundary="c"\r\n\r\n--c\r\n'
  "Content-Type: text/plain; charset=UTF-8\r\n\r\nYou are invited\r\n--c\r\n"
  'Content-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n'
  "Content-Transfer-Encoding: 7bit\r\n\r\nBEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\n"
  "BEGIN:VEVENT\r\nSUMMARY:sync\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--c--\r\n")

w("06-signed.eml", H % ("sig", "signed") +
  'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"; boundary="s"\r\n\r\n'
  "--s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsigned text\r\n--s\r\n"
  'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
  "Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n"
  "-----BEGIN PGP SIGNATURE-----\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n--s--\r\n")

w("07-rfc2231.eml", H % ("2231", "=?UTF-8?Q?R=C3=A9sum=C3=A9?= and =?ISO-8859-1?B?5OT2?=") +
  'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
  "Content-Type: application/pdf;\r\n name*=UTF-8''R%C3%A9sum%C3%A9.pdf\r\n"
  "Content-Disposition: attachment;\r\n filename*0*=UTF-8''R%C3%A9;\r\n"
  " filename*1*=sum%C3%A9;\r\n filename*2=\".pdf\"; creation-date=\"Mon, 23 Nov 2026\"\r\n\r\nPDF\r\n"
  "--x\r\nContent-Type: text/plain; title*1=\"b\"; title*0=\"a\"; x=\"q\\\"uo\\\\te\"\r\n"
  "Content-Disposition: inline; filename*0=\"one\"; filename*2=\"three\"\r\n\r\nt\r\n"
  "--x\r\nContent-Type: text/plain; name==?utf-8?B?w6TDpA==?=; Charset=\"UTF-8\"\r\n\r\nu\r\n--x--\r\n")

parts = ""
for n in (0, 1, 2, 3, 56, 57, 58, 76, 77, 114, 1000):
    parts += ("--b\r\nContent-Type: application/octet-stream\r\n"
              "Content-Transfer-Encoding: base64\r\n\r\n" + b64(bytes(range(256)) * 4)[:0] +
              b64(bytes((i * 7) % 256 for i in range(n))))
w("08-base64-sizes.eml", H % ("b64", "base64 sizes") +
  'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + "--b--\r\n")

w("09-empty-parts.eml", H % ("empty", "empty parts") +
  'Content-Type: multipart/mixed; boundary="e"\r\n\r\n'
  "--e\r\n\r\n--e\r\nContent-Type: text/plain\r\n--e\r\nContent-Type: text/plain\r\n\r\n"
  "--e\r\nContent-Type: text/plain\r\n\r\n\r\n--e\r\n--e--\r\n")

w("10-header-only-crlf.eml", "From: a@example.org\r\nTo: b@example.org\r\nSubject: only headers\r\n")
w("11-no-blank-line-body.eml", "Subject: x\r\nFrom: a@b\r\nthis line has no colon\r\nnor this\r\n")
w("12-lf-only.eml", (H % ("lf", "lf only") +
  'Content-Type: multipart/alternative; boundary="l"\r\n\r\n--l\r\nContent-Type: text/plain\r\n\r\n'
  "one\r\ntwo\r\n--l--\r\n").replace("\r\n", "\n"))
w("13-bare-cr.eml", "Subject: a\rb\r\nFrom: x@y\r\nContent-Type: text/plain\r\n\r\nline1\rline2\r\nlast\r")

deep = "Content-Type: multipart/mixed; boundary=\"d0\"\r\nMIME-Version: 1.0\r\nSubject: deep\r\n\r\n"
for i in range(1, 105):
    deep += "--d%d\r\nContent-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n" % (i - 1, i)
deep += "--d104\r\nContent-Type: text/plain\r\n\r\ndeepest\r\n"
for i in range(104, -1, -1):
    deep += "--d%d--\r\n" % i
w("14-deep-multipart.eml", deep)

deepm = "Subject: deep rfc822\r\n"
for i in range(105):
    deepm += "Content-Type: message/rfc822\r\nSubject: level %d\r\n\r\n" % i
deepm += "Content-Type: text/plain\r\n\r\nbottom\r\n"
w("15-deep-rfc822.eml", deepm)

w("16-missing-final-boundary.eml", H % ("mfb", "no end") +
  'Content-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\n'
  "first\r\n--z\r\nContent-Type: text/html\r\n\r\n<b>never closed</b>\r\n")

w("17-garbage.eml", b"\x00\x01garbage\xff\xfe no header at all\r\n--\r\n\r\n: colon first\r\n\tcontinued\r\n")

w("18-boundary-prefix.eml", H % ("pre", "boundary prefixes") +
  'Content-Type: multipart/mixed; boundary="ab"\r\n\r\n--ab\r\n'
  'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n--abc\r\nContent-Type: text/plain\r\n\r\n'
  "inner\r\n--ab\r\nContent-Type: text/plain\r\n\r\nouter closes inner\r\n--abX\r\nstill outer?\r\n--ab--\r\n")

w("19-broken-content-type.eml", "MIME-Version: 1.0\r\nContent-Type: text\r\nSubject: ct\r\n\r\nbody\r\n")
w("20-garbage-content-type.eml", "MIME-Version: 1.0\r\nContent-Type: ;;; garbage\r\n"
  "Content-Transfer-Encoding: base64 junk\r\nContent-Disposition: inline\r\n"
  "Content-Disposition: attachment; filename=second\r\n\r\nbody\r\n")
w("21-no-mime-version.eml", "Subject: no mime\r\nContent-Transfer-Encoding: base64\r\n"
  "Content-ID: <x@y>\r\n\r\nbody\r\n")
w("22-multipart-no-boundary.eml", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nbody\r\n")
w("23-addresses.eml",
  "From: \"Doe, John\" <john@example.org> (comment), plain@example.org\r\n"
  "Sender: <@route1,@route2:sender@example.org>\r\n"
  "Reply-To: undisclosed-recipients:;\r\n"
  "To: group: a@example.org, \"B \\\"quoted\\\"\" <b@example.org>;, nodomain, <>\r\n"
  "Cc: =?UTF-8?B?w6TDpA==?= <ae@example.org>, \"Tab\tName  Spaces \" <t@x>\r\n"
  "Bcc: (only comment)\r\n"
  "Subject:   lots   of\t spaces \t and \"quotes\" \\ here  \r\n"
  "In-Reply-To: <a@b>\r\n <c@d>\r\n"
  "Message-ID:\r\n <folded@example.org>\r\n"
  "Date: Mon, 23 Nov 2026\r\n 10:00:00 +0100\r\n\r\nbody\r\n")
w("24-envelope-8bit.eml", "From: J\xfcrgen <j@example.org>\r\nSubject: Gr\xfc\xdfe \"\\\r\n"
  "To: \"a\\\\b\\\\c\\\\d\\\\e\" <x@y>\r\nMessage-ID: <\"q\"\"q\"\"q\"@x>\r\n\r\nbody\r\n".encode("latin-1"))
w("25-multipart-empty.eml", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\nno parts here\r\n")
w("26-top-rfc822.eml", "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
  "From: x@y\r\nSubject: inside\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=t\r\n\r\n"
  "--t\r\n\r\none\r\n--t\r\n\r\ntwo\r\n--t--\r\n")
w("27-header-no-eol-fields.eml", "From: a@example.org\r\nContent-Type: text/plain")
w("28-nul-in-body.eml", b"Subject: nul\r\n\r\nbefore\x00after\r\n")
w("29-mixed-endings.eml", b"Subject: mixed\nFrom: a@b\r\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=m\n\n"
  b"--m\r\nContent-Type: text/plain\n\nlf body\n--m\nContent-Type: text/plain\r\n\r\ncrlf body\r\n--m--\n")
w("30-long-boundary.eml", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + "B" * 90 +
  "\"\r\n\r\n--" + "B" * 90 + "\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + "B" * 90 + "--\r\n")
