#!/usr/bin/env python3
"""Regenerates the mime test corpus (deterministic). The .eml files are
committed; this script documents how they were made. Each message mimics
what a real client or list server emits (header order, boundaries, encodings,
line endings). Run from this folder: python3 make_corpus.py"""
import base64, hashlib, os, random

rnd = random.Random(4)
def blob(n, seed):
    out = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest(); out += h
    return bytes(out[:n])

def b64lines(data, width=76):
    s = base64.b64encode(data).decode()
    return "\n".join(s[i:i+width] for i in range(0, len(s), width))

def crlf(s):  # text with \n -> CRLF bytes
    return s.replace("\n", "\r\n").encode("utf-8")

def write(name, data):
    with open(name, "wb") as f:
        f.write(data)

# 1. Thunderbird: multipart/mixed, format=flowed text + PDF attachment.
pdf = b"%PDF-1.4\n" + blob(3000, "pdf") + b"\n%%EOF\n"
write("01-thunderbird-attachment.eml", crlf(f"""Message-ID: <4f3c2a1e-9b7d-4c1a-8e2f-0d1c2b3a4f5e@example.org>
Date: Mon, 23 Nov 2026 09:14:02 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: en-US
To: Bob Example <bob@example.net>
From: Alice Example <alice@example.org>
Subject: Quarterly figures (draft)
Content-Type: multipart/mixed;
 boundary="------------0XyZ1a2B3c4D5e6F7g8H9i0J"

This is a multi-part message in MIME format.
--------------0XyZ1a2B3c4D5e6F7g8H9i0J
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Hi Bob,

attached are the draft figures for Q3. Please do not forward them yet, 
the numbers for the northern region are still being checked.

Alice

--------------0XyZ1a2B3c4D5e6F7g8H9i0J
Content-Type: application/pdf; name="Q3-figures.pdf"
Content-Disposition: attachment; filename="Q3-figures.pdf"
Content-Transfer-Encoding: base64

{b64lines(pdf, 72)}

--------------0XyZ1a2B3c4D5e6F7g8H9i0J--
"""))

png_b64 = b64lines(b"\x89PNG\r\n\x1a\n" + blob(1192, "png"))
# 2. Outlook: multipart/related inside alternative, quoted-printable, CRLF.
write("02-outlook-html-inline.eml", crlf(f"""Received: from EXCH01.corp.example.com (10.1.2.3) by EXCH02.corp.example.com
 (10.1.2.4) with Microsoft SMTP Server (version=TLS1_2,
 cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1118.40; Mon, 23 Nov
 2026 08:01:11 +0000
From: "Smith, John" <John.Smith@corp.example.com>
To: "Doe, Jane" <Jane.Doe@partner.example>
CC: Team Finance <finance@corp.example.com>
Subject: RE: Contract renewal =?utf-8?Q?=E2=80=93?= next steps
Thread-Topic: Contract renewal - next steps
Thread-Index: AQHbPz1x2Y3v4K5l6M7n8O9p0Q1r2A==
Date: Mon, 23 Nov 2026 08:01:10 +0000
Message-ID: <DB9PR01MB1234ABCD5678EF90@DB9PR01MB1234.eurprd01.prod.outlook.com>
References: <CAF12345abcdef@mail.partner.example>
In-Reply-To: <CAF12345abcdef@mail.partner.example>
Accept-Language: en-GB, en-US
Content-Language: en-GB
X-MS-Has-Attach: yes
X-MS-TNEF-Correlator:
Content-Type: multipart/related;
\tboundary="_004_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_";
\ttype="multipart/alternative"
MIME-Version: 1.0

--_004_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_
Content-Type: multipart/alternative;
\tboundary="_000_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_"

--_000_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Hi Jane,

Thanks =E2=80=93 we agree with the proposed terms. See the logo below for t=
he letterhead.

Kind regards,
John

--_000_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

<html xmlns:v=3D"urn:schemas-microsoft-com:vml" xmlns:o=3D"urn:schemas-micr=
osoft-com:office:office"><head><meta http-equiv=3D"Content-Type" content=3D=
"text/html; charset=3Dutf-8"></head><body lang=3D"EN-GB"><div class=3D"Word=
Section1"><p class=3D"MsoNormal">Hi Jane,<o:p></o:p></p><p class=3D"MsoNorm=
al">Thanks =E2=80=93 we agree.<img src=3D"cid:image001.png@01DB3F3D.1A2B3C4=
0"></p></div></body></html>

--_000_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_--

--_004_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_
Content-Type: image/png; name="image001.png"
Content-Description: image001.png
Content-Disposition: inline; filename="image001.png"; size=1200;
\tcreation-date="Mon, 23 Nov 2026 08:01:10 GMT";
\tmodification-date="Mon, 23 Nov 2026 08:01:10 GMT"
Content-ID: <image001.png@01DB3F3D.1A2B3C40>
Content-Transfer-Encoding: base64

{png_b64}

--_004_DB9PR01MB1234ABCD5678EF90DB9PR01MB1234eurprd01prod_--
"""))

# 3. Apple Mail: alternative, quoted-printable, Apple boundary style.
write("03-apple-mail.eml", crlf("""From: =?utf-8?Q?Ren=C3=A9e_Dupont?= <renee@icloud.example>
Content-Type: multipart/alternative;
\tboundary="Apple-Mail=_6A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9"
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))
Subject: =?utf-8?Q?D=C3=A9jeuner_demain_=3F?=
Message-Id: <8C1D2E3F-4A5B-6C7D-8E9F-0A1B2C3D4E5F@icloud.example>
Date: Sun, 22 Nov 2026 19:45:31 +0100
To: Marc <marc@example.fr>
X-Mailer: Apple Mail (2.3774.600.62)

--Apple-Mail=_6A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9
Content-Transfer-Encoding: quoted-printable
Content-Type: text/plain;
\tcharset=utf-8

Salut Marc,

On se retrouve =C3=A0 midi au caf=C3=A9 pr=C3=A8s de la gare ?

Ren=C3=A9e
--Apple-Mail=_6A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9
Content-Transfer-Encoding: quoted-printable
Content-Type: text/html;
\tcharset=utf-8

<html><head><meta http-equiv=3D"content-type" content=3D"text/html; =
charset=3Dutf-8"></head><body style=3D"overflow-wrap: break-word;">Salut =
Marc,<div><br></div><div>On se retrouve =C3=A0 midi au caf=C3=A9 pr=C3=A8s =
de la gare ?</div><div><br></div><div>Ren=C3=A9e</div></body></html>=

--Apple-Mail=_6A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9--
"""))

# 4. mutt: plain text, LF only (as stored in an mbox/maildir), PGP/MIME signed.
write("04-mutt-pgp-signed-lf.eml", """Date: Sat, 21 Nov 2026 22:10:44 +0000
From: Carol <carol@lists.example>
To: dave@example.com
Subject: Re: build farm outage
Message-ID: <20261121221044.GA12345@carol.example>
References: <20261121180000.GB999@dave.example>
MIME-Version: 1.0
Content-Type: multipart/signed; micalg=pgp-sha256;
	protocol="application/pgp-signature"; boundary="Kj7319i9nmIyA2yE"
Content-Disposition: inline
In-Reply-To: <20261121180000.GB999@dave.example>
User-Agent: Mutt/2.2.12 (2023-09-09)


--Kj7319i9nmIyA2yE
Content-Type: text/plain; charset=us-ascii
Content-Disposition: inline

On Sat, Nov 21, 2026 at 06:00:00PM +0000, Dave wrote:
> Is the build farm down again?

Yes, the disk array on node 3 failed. I moved the jobs to node 5.

-- 
Carol

--Kj7319i9nmIyA2yE
Content-Type: application/pgp-signature; name="signature.asc"

-----BEGIN PGP SIGNATURE-----

iHUEARYIAB0WIQRkZXBzZXJ2ZXJzZWNyZXRrZXlpZGVudGlmaWVyBQJnP1JEAAoJ
EG9uZXR3b3RocmVlZm91cmZpdmVzaXhzZXZlbmVpZ2h0bmluZXRlbg==
=AbCd
-----END PGP SIGNATURE-----

--Kj7319i9nmIyA2yE--
""".encode())

# 5. Mailing list digest: multipart/digest of message/rfc822 parts.
digest = ["""From: Mailman <list-request@lists.example>
To: list@lists.example
Subject: Dev-list Digest, Vol 42, Issue 7
Date: Sun, 22 Nov 2026 12:00:03 +0000
Message-ID: <mailman.123.1763812803.4567.dev-list@lists.example>
Reply-To: list@lists.example
List-Id: Development discussion <dev-list.lists.example>
List-Unsubscribe: <https://lists.example/options/dev-list>,
 <mailto:dev-list-request@lists.example?subject=unsubscribe>
List-Post: <mailto:dev-list@lists.example>
Precedence: list
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="===============1111111111111111111=="

--===============1111111111111111111==
Content-Type: text/plain; charset="us-ascii"
Content-Description: Dev-list Digest, Vol 42, Issue 7

Today's Topics:

   1. Release candidate 3 (Erin)
   2. Re: Release candidate 3 (Frank)

--===============1111111111111111111==
Content-Type: multipart/digest; boundary="===============2222222222222222222=="

--===============2222222222222222222==
Content-Type: message/rfc822
MIME-Version: 1.0

From: Erin <erin@example.org>
To: dev-list@lists.example
Subject: Release candidate 3
Date: Sun, 22 Nov 2026 09:00:00 +0000
Message-ID: <rc3@example.org>
Content-Type: text/plain; charset="us-ascii"

RC3 is tagged. Please test.

--===============2222222222222222222==
Content-Type: message/rfc822
MIME-Version: 1.0

From: Frank <frank@example.net>
To: dev-list@lists.example
Subject: Re: Release candidate 3
Date: Sun, 22 Nov 2026 10:30:00 +0000
Message-ID: <rc3-reply@example.net>
In-Reply-To: <rc3@example.org>
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit

Works for me on arm64 – ✓.

--===============2222222222222222222==--

--===============1111111111111111111==--
"""]
write("05-list-digest.eml", crlf(digest[0]))

# 6. Calendar invite (Outlook/Google style text/calendar method=REQUEST).
write("06-calendar-invite.eml", crlf("""From: Grace <grace@example.com>
To: heidi@example.org
Subject: Invitation: Design review @ Tue 24 Nov 2026 14:00 - 15:00 (CET)
Date: Mon, 23 Nov 2026 07:30:00 +0000
Message-ID: <0000000000001a2b3c4d5e6f@google.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="000000000000abcdef0123456789"

--000000000000abcdef0123456789
Content-Type: multipart/alternative; boundary="000000000000abcdef0123456788"

--000000000000abcdef0123456788
Content-Type: text/plain; charset="UTF-8"; format=flowed; delsp=yes

You have been invited to the following event.

Title: Design review
When: Tuesday 24 Nov 2026 14:00 - 15:00 Central European Time

--000000000000abcdef0123456788
Content-Type: text/calendar; charset="UTF-8"; method=REQUEST
Content-Transfer-Encoding: 7bit

BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:REQUEST
BEGIN:VEVENT
DTSTART:20261124T130000Z
DTEND:20261124T140000Z
DTSTAMP:20261123T073000Z
ORGANIZER;CN=Grace:mailto:grace@example.com
UID:5q2rk9ab1c2d3e4f5g6h7i8j9k@google.example
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=
 TRUE;CN=heidi@example.org;X-NUM-GUESTS=0:mailto:heidi@example.org
SUMMARY:Design review
SEQUENCE:0
STATUS:CONFIRMED
END:VEVENT
END:VCALENDAR

--000000000000abcdef0123456788--

--000000000000abcdef0123456789
Content-Type: application/ics; name="invite.ics"
Content-Disposition: attachment; filename="invite.ics"
Content-Transfer-Encoding: base64

QkVHSU46VkNBTEVOREFSDQpWRVJTSU9OOjIuMA0KRU5EOlZDQUxFTkRBUg0K
--000000000000abcdef0123456789--
"""))

# 7. 8bit UTF-8 body and raw UTF-8 headers (SMTPUTF8 / RFC 6532).
write("07-utf8-8bit-headers.eml", crlf("""From: Jürgen Müller <jürgen@müller.example>
To: 山田太郎 <taro@例え.jp>
Subject: Grüße aus München – 東京の皆さんへ
Date: Mon, 23 Nov 2026 10:00:00 +0100
Message-ID: <utf8-001@müller.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Liebe Kolleginnen und Kollegen,
皆さん、こんにちは。
Ελληνικά, русский, עברית, العربية, 🙂🚀
"""))

# 8. Encoded-word headers (RFC 2047), Latin-1 body in quoted-printable.
write("08-encoded-words-latin1.eml", crlf("""Return-Path: <ivan@example.ru>
From: =?KOI8-R?B?6dfBziDp18HOz9c=?= <ivan@example.ru>
To: =?ISO-8859-1?Q?Fran=E7ois_L=E9v=EAque?= <francois@example.fr>,
 =?UTF-8?B?0JzQsNGA0LjRjw==?= <maria@example.ru>
Subject: =?ISO-8859-1?Q?R=E9union_=E0_Gen=E8ve?= =?UTF-8?B?IOKAkyDQvtGC0YfRkdGC?=
Date: Mon, 23 Nov 2026 11:11:11 +0300
Message-ID: <ew-8@example.ru>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable

Bonjour Fran=E7ois,
la r=E9union aura lieu =E0 Gen=E8ve.
"""))

# 9. Binary part (Content-Transfer-Encoding: binary, NUL bytes, bare CR).
binpart = blob(4096, "bin") + b"\x00\x00\r\r\n\n\x00--not-a-boundary\r\n" + bytes(range(256))
write("09-binary-part.eml", crlf("""From: sensor@plant.example
To: collector@plant.example
Subject: telemetry dump 4711
Date: Mon, 23 Nov 2026 03:00:00 +0000
Message-ID: <tele-4711@plant.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BIN-BOUNDARY-4711"

--BIN-BOUNDARY-4711
Content-Type: text/plain

Raw dump attached (binary transfer encoding, BINARYMIME).
--BIN-BOUNDARY-4711
Content-Type: application/octet-stream; name="dump.bin"
Content-Transfer-Encoding: binary

""") + binpart + crlf("""
--BIN-BOUNDARY-4711--
"""))

zip_b64 = b64lines(b"PK\x03\x04" + blob(2000, "zip"))
# 10. Nested multiparts: mixed > alternative > related, plus a zip.
write("10-nested-multiparts.eml", crlf(f"""From: Ivy <ivy@example.com>
To: Judy <judy@example.com>
Cc: Ken <ken@example.com>, "Lee, Mallory" <mallory@example.com>
Subject: Newsletter with everything
Date: Mon, 23 Nov 2026 06:00:00 -0500
Message-ID: <nested-10@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

Preamble text that clients ignore.
--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=us-ascii

Plain version.
--alt
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html; charset=us-ascii

<p>HTML version <img src="cid:logo"></p>
--rel
Content-Type: image/gif
Content-ID: <logo>
Content-Transfer-Encoding: base64

R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==
--rel--
--alt--
--outer
Content-Type: application/zip; name="files.zip"
Content-Disposition: attachment; filename="files.zip"
Content-Transfer-Encoding: base64

{zip_b64}
--outer--
Epilogue text.
"""))

# 11. Forwarded message as message/rfc822 attachment (Thunderbird forward).
write("11-forward-rfc822.eml", crlf("""From: Niaj <niaj@example.org>
To: Olivia <olivia@example.org>
Subject: Fwd: Invoice 2026-118
Date: Mon, 23 Nov 2026 12:12:12 +0000
Message-ID: <fwd-11@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="------------fwd11"

--------------fwd11
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit

See the forwarded invoice below.

--------------fwd11
Content-Type: message/rfc822; name="Invoice 2026-118.eml"
Content-Disposition: attachment; filename="Invoice 2026-118.eml"

From: billing@vendor.example
To: niaj@example.org
Subject: Invoice 2026-118
Date: Fri, 20 Nov 2026 09:00:00 +0000
Message-ID: <inv-118@vendor.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: text/plain

Amount due: 1,234.00 EUR
--inner
Content-Type: application/pdf; name="invoice.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcTl8uXrp/Og0MTGCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCg==
--inner--

--------------fwd11--
"""))

# 12. S/MIME signed (multipart/signed, application/pkcs7-signature).
write("12-smime-signed.eml", crlf(f"""From: Peggy <peggy@bank.example>
To: Rupert <rupert@example.com>
Subject: Signed statement
Date: Mon, 23 Nov 2026 13:00:00 +0000
Message-ID: <smime-12@bank.example>
MIME-Version: 1.0
Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="----5C2E3A1B9F8D7C6B"

This is an S/MIME signed message

------5C2E3A1B9F8D7C6B
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Your statement for November is ready.
------5C2E3A1B9F8D7C6B
Content-Type: application/pkcs7-signature; name="smime.p7s"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7s"

{b64lines(blob(1500, "p7s"), 64)}

------5C2E3A1B9F8D7C6B--

"""))

# 13. Very long lines (no folding, > 998 octets; 200 kB single line).
long_line = "".join(rnd.choice("abcdefghij ") for _ in range(200000))
write("13-very-long-lines.eml", crlf(f"""From: bot@ci.example
To: dev@ci.example
Subject: {"x" * 1500}
Date: Mon, 23 Nov 2026 14:00:00 +0000
Message-ID: <long-13@ci.example>
Content-Type: text/plain

{long_line}
short line
{"y" * 5000}"""))

# 14. Broken MIME: missing close boundary, bad header, unterminated header.
write("14-broken-mime.eml", b"""From nobody Mon Nov 23 00:00:00 2026\r
From: "Broken \r
To: <@@@>, ;;;,\r
Subject: =?UTF-8?B?not base64!?=\r
This line is not a header\r
Content-Type: multipart/mixed; boundary=\r
MIME-Version: 2.7\r
\r
--\r
Content-Type: text/plain\r
\r
no closing boundary and a stray \xff\xfe byte and a lone \r CR\r
--\r
""")

# 15. Headers only, no body, no final newline.
write("15-headers-only-no-eol.eml", b"From: a@example.com\r\nTo: b@example.com\r\nSubject: ping")

# 16. Empty message (0 octets).
write("16-empty.eml", b"")

jpg_b64 = b64lines(b"\xff\xd8\xff\xe0" + blob(700000, "jpg"), 72)
# 17. Large attachment (700 kB jpeg) from Thunderbird, LF-only.
write("17-large-attachment-lf.eml", f"""Message-ID: <large-17@example.org>
Date: Mon, 23 Nov 2026 15:00:00 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
To: Sybil <sybil@example.net>, Trent <trent@example.net>
Bcc: Victor <victor@example.org>
From: Walter <walter@example.org>
Subject: Holiday photos
Content-Type: multipart/mixed; boundary="------------LARGE17"

This is a multi-part message in MIME format.
--------------LARGE17
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Photos attached.

--------------LARGE17
Content-Type: image/jpeg; name="IMG_0001.jpg"
Content-Disposition: attachment; filename="IMG_0001.jpg"
Content-Transfer-Encoding: base64

{jpg_b64}

--------------LARGE17--
""".encode())

# 18. Mixed line endings (CRLF headers, some LF body lines) and a From_ line.
write("18-mixed-eol.eml", b"From MAILER-DAEMON Mon Nov 23 00:00:00 2026\nReturn-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nTo: alice@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"DSN.1\"\r\n\r\n--DSN.1\nContent-Type: text/plain\n\nThe mail system could not deliver.\r\n--DSN.1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; nobody@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--DSN.1--\r\n")

print("corpus written:", len([f for f in os.listdir('.') if f.endswith('.eml')]), "messages")
