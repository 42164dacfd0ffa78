#!/usr/bin/env python3
"""End-to-end tests of `qumail proxy` (SMTP): Python's smtplib (or a raw
socket for BDAT) -> qumail proxy (embedded KME simulator) -> real Postfix
-> real Dovecot, and smtp-sink for fault injection.

What is checked: the stored message holds no plaintext (body, subject,
attachment name) and decrypts with the receiver's keys (dec_keys at the
receiving KME) to exactly what was submitted (plus the proxy's Received:
trace field, minus Bcc); mixed policies become separate copies with their
own keys; each Bcc recipient gets a copy of its own; a 20 MB attachment;
STARTTLS and implicit TLS on both sides; AUTH pass-through success and
failure; KME down gives 4xx (or the policy's 5xx) and nothing reaches
Postfix; Postfix and smtp-sink refusals come back faithfully; limits;
BDAT; policy reload on SIGHUP; the proxy exits cleanly (sanitizers quiet).
Needs root (the mailstack harness); exits 77 (skipped) otherwise."""

import base64
import os
import re
import smtplib
import socket
import ssl
import sys
import tempfile
import time
import unittest
from email.message import EmailMessage
from email import policy as email_policy

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402

ALICE = ("alice@example.org", M.USERS["alice@example.org"])
TRACE = re.compile(rb"\AReceived: from [^\r\n]*\r\n\tby qumail\.localhost \(qumail\) "
                   rb"with [A-Z]+ id [0-9A-F]+;\r\n\t[^\r\n]*\r\n")


def unique(tag):
    return "%s-%d-%d" % (tag, os.getpid(), time.time_ns() % 10**9)


def mime_message(sender, to, subject, body, attachment=None, attachment_name=None,
                 cc=(), bcc=()):
    m = EmailMessage(policy=email_policy.SMTP)
    m["From"] = sender
    m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    if bcc:
        m["Bcc"] = ", ".join(bcc)
    m["Subject"] = subject
    m["Message-ID"] = "<%s@e2e.test>" % unique("msg")
    m["Date"] = "Mon, 23 Nov 2026 08:00:00 +0000"
    m.set_content(body)
    if attachment is not None:
        m.add_attachment(attachment, maintype="application", subtype="octet-stream",
                         filename=attachment_name)
    return m.as_bytes()


def without_bcc(msg):
    """The message as the proxy forwards it: Bcc fields dropped."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out, dropping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        dropping = line.lower().startswith(b"bcc:")
        if not dropping:
            out.append(line)
    return b"\r\n".join(out) + sep + body


def key_ids(raw):
    return re.findall(rb"^Key: (\S+) ", raw, re.M)


def bound_recipients(raw):
    """The envelope recipients a copy is bound to (control part, format 2)."""
    return sorted(r.decode() for r in re.findall(rb"^Recipient: (\S+)\r?$", raw, re.M))


class ProxyE2E(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="smtp-e2e-")
        cls.certs = P.make_certs(cls.work)
        cls.ms = M.MailStack(tls=cls.certs["localhost"])
        cls.ms.start()
        cls.px = P.ProxyStack(cls.certs, cls.ms.submission_port, workdir=cls.work,
                              trusted_networks=["192.0.2.0/24"],
                              limits={"max_recipients": 8, "max_line_length": 1000})
        cls.px.start()
        cls.ctx = ssl.create_default_context(cafile=cls.certs["ca"])

    @classmethod
    def tearDownClass(cls):
        P.stop_clean(cls.px, cls.ms)

    # -- helpers --------------------------------------------------------------

    def send(self, rcpts, msg, px=None, port="plain", login=ALICE, sender=None, **kw):
        # patient beyond the proxy's own KME and upstream deadlines (30 s):
        # on a loaded machine the answer comes late, not never
        kw.setdefault("timeout", 90)
        px = px or self.px
        return M.smtp_send(px.host, px.ports[port], sender or ALICE[0], rcpts, msg,
                           login=login, ssl_context=self.ctx, **kw)

    def stored(self, user, msg, timeout=30):
        """The stored copy of msg (found by its Message-ID, which the
        encrypted outer message keeps)."""
        mid = re.search(rb"^Message-ID: (\S+)", msg, re.M | re.I).group(1)
        return self.ms.wait_for_delivery(user, 1, timeout=timeout,
                                         match=lambda r: b"Message-ID: " + mid in r)

    def assert_protected(self, raw, secrets):
        self.assertIn(b"multipart/encrypted", raw)
        for s in secrets:
            self.assertNotIn(s.encode() if isinstance(s, str) else s, raw,
                             "plaintext found in the stored message")

    def assert_decrypts_to(self, px, raw, original):
        plain = px.decrypt(raw)
        m = TRACE.match(plain)
        self.assertIsNotNone(m, "no qumail trace field first: %r" % plain[:300])
        self.assertEqual(plain[m.end():], without_bcc(original))
        return plain

    def log_lines(self, px, msg_marker):
        return [l for l in px.log_text().splitlines() if " msg " in l and msg_marker in l]

    # -- tests ------------------------------------------------------------------

    def test_01_otp_message_stored_encrypted_and_decrypts(self):
        body, subject, att = unique("BODYSECRET"), unique("SubjectSecret"), unique("plan") + ".pdf"
        msg = mime_message(ALICE[0], ["bob@example.org"], subject, body + "\n",
                           attachment=b"attachment bytes " * 100, attachment_name=att)
        self.assertEqual(self.send(["bob@example.org"], msg), {})
        [raw] = self.stored("bob@example.org", msg)
        self.assertIn(b"OTP-POLY1305", raw)
        self.assert_protected(raw, [body, subject, att])
        self.assertIn(b"Subject: [protected]", raw)
        self.assert_decrypts_to(self.px, raw, msg)

    def test_02_mixed_policies_get_separate_copies_and_keys(self):
        marker = unique("MIXED")
        rcpts = ["bob@example.org", "carol@example.net", "dave@example.net",
                 "erin@sub.example.org"]
        msg = mime_message(ALICE[0], rcpts, "mixed " + marker, marker + " body\n")
        self.assertEqual(self.send(rcpts, msg), {})
        # erin: policy none -> plaintext copy
        [plain] = self.stored("erin@sub.example.org", msg)
        self.assertEqual(M.strip_delivery_headers(plain)[TRACE.match(
            M.strip_delivery_headers(plain)).end():], msg)
        got = {}
        for user in rcpts[:3]:
            [raw] = self.stored(user, msg)
            self.assert_protected(raw, [marker])
            self.assert_decrypts_to(self.px, raw, msg)
            got[user] = raw
        self.assertIn(b"OTP-POLY1305", got["bob@example.org"])
        self.assertIn(b"AES-256-GCM", got["carol@example.net"])
        # carol and dave share a copy (same policy, both in To), bob has his own
        self.assertEqual(key_ids(got["carol@example.net"]), key_ids(got["dave@example.net"]))
        # each copy is bound to exactly the envelope recipients it is for
        self.assertEqual(bound_recipients(got["bob@example.org"]), ["bob@example.org"])
        self.assertEqual(bound_recipients(got["carol@example.net"]),
                         ["carol@example.net", "dave@example.net"])
        self.assertFalse(set(key_ids(got["bob@example.org"])) &
                         set(key_ids(got["carol@example.net"])))
        lines = self.log_lines(self.px, "copies=3")
        self.assertTrue(any("delivered=3/3 outcome=250" in l for l in lines), lines[-3:])

    def test_03_each_bcc_recipient_gets_its_own_copy(self):
        marker = unique("BCC")
        msg = mime_message(ALICE[0], ["bob@example.org"], "bcc " + marker, marker + "\n",
                           bcc=["carol@example.net", "dave@example.net"])
        rcpts = ["bob@example.org", "carol@example.net", "dave@example.net"]
        self.assertEqual(self.send(rcpts, msg), {})
        ids = {}
        for user in rcpts:
            [raw] = self.stored(user, msg)
            self.assert_protected(raw, [marker])
            self.assert_decrypts_to(self.px, raw, msg)
            self.assertIsNone(re.search(rb"^Bcc:", raw, re.M | re.I))
            plain = self.px.decrypt(raw)
            self.assertNotIn(b"Bcc:", plain)
            self.assertNotIn(b"carol@example.net" if user != "carol@example.net"
                             else b"dave@example.net", plain)
            ids[user] = set(key_ids(raw))
            # a Bcc copy names only its own recipient, and no copy names a Bcc one
            self.assertEqual(bound_recipients(raw), [user])
        self.assertFalse(ids["carol@example.net"] & ids["dave@example.net"])
        self.assertFalse(ids["bob@example.org"] & ids["carol@example.net"])
        lines = self.log_lines(self.px, "copies=3")
        self.assertTrue(any("bcc" in l and "delivered=3/3" in l for l in lines))

    def test_04_twenty_megabyte_attachment(self):
        att_name = unique("huge-attachment") + ".bin"
        blob = (os.urandom(1024 * 1024) * 20)
        msg = mime_message(ALICE[0], ["carol@example.net"], unique("big"), "big one\n",
                           attachment=blob, attachment_name=att_name)
        self.assertGreater(len(msg), 20 * 1024 * 1024)
        self.assertEqual(self.send(["carol@example.net"], msg, timeout=300), {})
        [raw] = self.stored("carol@example.net", msg, timeout=120)
        self.assert_protected(raw, [att_name, base64.b64encode(blob[:300])[:200]])
        self.assert_decrypts_to(self.px, raw, msg)

    def test_05_starttls_on_both_sides(self):
        with P.ProxyStack(self.certs, self.ms.submission_port, upstream_tls="starttls",
                          workdir=self.work, trusted_networks=["192.0.2.0/24"],
                          upstream_client_cert=True) as px:
            marker = unique("STARTTLS")
            msg = mime_message(ALICE[0], ["bob@example.org"], marker, marker + "\n")
            self.assertEqual(self.send(["bob@example.org"], msg, px=px, port="starttls",
                                       starttls=True), {})
            [raw] = self.stored("bob@example.org", msg)
            self.assertIn(b"(qumail) with ESMTPSA", raw)
            self.assert_protected(raw, [marker])
            # Postfix saw TLS + AUTH from the proxy, the proxy TLS + AUTH from us
            self.assertRegex(raw, rb"by mailstack\.localhost \(Postfix\) with ESMTPSA")
            self.assert_decrypts_to(px, raw, msg)
            # AUTH is not offered before STARTTLS on a TLS listener... but this
            # listener is on loopback, where require_tls_for_auth defaults off.
            self.assertEqual(px.stop(), 0)

    def test_06_implicit_tls_on_both_sides(self):
        with P.ProxyStack(self.certs, self.ms.smtps_port, upstream_tls="implicit",
                          workdir=self.work, trusted_networks=["192.0.2.0/24"]) as px:
            marker = unique("IMPLICIT")
            msg = mime_message(ALICE[0], ["bob@example.org"], marker, marker + "\n")
            self.assertEqual(self.send(["bob@example.org"], msg, px=px, port="implicit",
                                       implicit_tls=True), {})
            [raw] = self.stored("bob@example.org", msg)
            self.assertIn(b"(qumail) with ESMTPSA", raw)
            self.assertIn(b"(Postfix) with ESMTPSA", raw)
            self.assert_protected(raw, [marker])
            self.assert_decrypts_to(px, raw, msg)
            self.assertEqual(px.stop(), 0)

    def test_07_auth_failure_and_required(self):
        msg = mime_message(ALICE[0], ["bob@example.org"], "x", "y\n")
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            self.send(["bob@example.org"], msg, login=(ALICE[0], "wrong-password"))
        self.assertEqual(cm.exception.smtp_code, 535)
        # AUTH LOGIN goes through too
        s = smtplib.SMTP(self.px.host, self.px.ports["plain"], timeout=30)
        try:
            s.ehlo("client.test")
            self.assertIn("LOGIN", s.esmtp_features.get("auth", "").upper())
            s.user, s.password = ALICE
            code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
            self.assertEqual(code, 235)
        finally:
            s.quit()
        # No AUTH, not a trusted network: 530 at MAIL
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            self.send(["bob@example.org"], msg, login=None)
        self.assertEqual(cm.exception.smtp_code, 530)
        log = self.px.log_text()
        self.assertNotIn("wrong-password", log)
        self.assertNotIn(M.USERS["alice@example.org"], log)
        # who authenticated is logged (PLAIN, then LOGIN after 334), once
        # upstream said 235; the refused attempt names nobody
        self.assertRegex(log, r"authenticated by upstream user=alice@example\.org")
        self.assertNotRegex(log, r"authentication refused by upstream.*user=")

    def test_08_kme_down_gives_4xx_and_nothing_reaches_postfix(self):
        dead = M.free_ports(1)[0]
        policy = P.DEFAULT_POLICY.replace(
            "example.net           action=require",
            "dave@example.net      action=require level=aes link=site slave_sae=SAE_B on_no_key=refuse\n"
            "carol@example.net     action=prefer level=aes link=site slave_sae=SAE_B\n"
            "example.net           action=require")
        with P.ProxyStack(self.certs, self.ms.submission_port, workdir=self.work,
                          kme_url="https://127.0.0.1:%d" % dead, policy=policy,
                          trusted_networks=["192.0.2.0/24"], kme_timeout="3s") as px:
            before = self.ms.accepted_queue_ids()
            msg = mime_message(ALICE[0], ["bob@example.org"], "kme down", "secret\n")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                self.send(["bob@example.org"], msg, px=px)
            self.assertEqual(cm.exception.smtp_code, 451)
            self.assertIn(b"4.7.5", cm.exception.smtp_error)
            self.assertIn(b"keys", cm.exception.smtp_error)
            # policy on_no_key=refuse: 554 5.7.5
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                self.send(["dave@example.net"], msg, px=px)
            self.assertEqual(cm.exception.smtp_code, 554)
            self.assertIn(b"5.7.5", cm.exception.smtp_error)
            # a plain (policy none) recipient still goes through
            self.assertEqual(self.send(["erin@sub.example.org"], msg, px=px), {})
            # "prefer": sent as it is when keys cannot be had (and logged)
            pmsg = mime_message(ALICE[0], ["carol@example.net"], "prefer", unique("PREFER") + "\n")
            self.assertEqual(self.send(["carol@example.net"], pmsg, px=px), {})
            [raw] = self.stored("carol@example.net", pmsg)
            self.assertNotIn(b"multipart/encrypted", raw)
            time.sleep(1)
            after = self.ms.accepted_queue_ids()
            self.assertEqual(len(set(after) - set(before)), 2,
                             "only erin's and carol's (prefer) copies may pass")
            self.assertEqual(px.stop(), 0)
            self.assertIn("outcome=451 4.7.5", px.log_text())
            self.assertIn("sent unprotected (policy prefer)", px.log_text())

    def test_09_postfix_refusals_are_passed_back(self):
        marker = unique("REFUSALS")
        msg = mime_message(ALICE[0], ["bob@example.org"], marker, marker + "\n")
        refused = self.send(["bob@example.org", M.REJECT_RCPT, M.TEMPFAIL_RCPT], msg)
        self.assertEqual(refused[M.REJECT_RCPT][0], 550)
        self.assertIn(b"5.1.1", refused[M.REJECT_RCPT][1])
        self.assertEqual(refused[M.TEMPFAIL_RCPT][0], 450)
        [raw] = self.stored("bob@example.org", msg)
        self.assert_decrypts_to(self.px, raw, msg)
        # unknown user
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            self.send(["nobody@example.org"], msg)
        self.assertEqual(cm.exception.recipients["nobody@example.org"][0], 550)
        # end-of-data refusal
        for sender, code, enh in ((M.REJECT_DATA_SENDER, 554, b"5.7.1"),
                                  (M.TEMPFAIL_DATA_SENDER, 451, b"4.3.0")):
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                self.send(["bob@example.org"], msg, sender=sender)
            self.assertEqual(cm.exception.smtp_code, code)
            self.assertIn(enh, cm.exception.smtp_error)

    def test_10_policy_refusal_at_rcpt(self):
        msg = mime_message(ALICE[0], ["x@refused.example.net"], "x", "y\n")
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            self.send(["x@refused.example.net"], msg)
        code, text = cm.exception.recipients["x@refused.example.net"]
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1", text)
        self.assertIn(b"policy", text)

    def test_11_limits(self):
        s = smtplib.SMTP(self.px.host, self.px.ports["plain"], timeout=30)
        try:
            s.ehlo("client.test")
            self.assertIn("size", s.esmtp_features)
            for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "chunking", "dsn",
                        "smtputf8"):
                self.assertIn(ext, s.esmtp_features)
            self.assertNotIn("starttls", s.esmtp_features)  # plain listener
            limit = int(s.esmtp_features["size"])
            self.assertGreater(limit, 1024 * 1024)
            code, text = s.docmd("NOOP " + "x" * 2000)
            self.assertEqual(code, 500)
            self.assertIn(b"5.5.2", text)
            s.login(*ALICE)
            code, text = s.docmd("MAIL FROM:<%s> SIZE=%d" % (ALICE[0], limit + 1))
            self.assertEqual(code, 552)
            self.assertIn(b"5.3.4", text)
            self.assertEqual(s.docmd("MAIL FROM:<%s>" % ALICE[0])[0], 250)
            for i in range(8):
                self.assertEqual(s.docmd("RCPT TO:<bob@example.org>")[0], 250)
            code, text = s.docmd("RCPT TO:<bob@example.org>")
            self.assertEqual(code, 452)
            self.assertIn(b"4.5.3", text)
            self.assertEqual(s.docmd("RSET")[0], 250)
            code, text = s.docmd("DATA")
            self.assertEqual(code, 503)
            code, text = s.docmd("FOO")
            self.assertEqual(code, 500)
        finally:
            s.close()

    def test_12_bdat_chunks_reassembled(self):
        marker = unique("BDAT")
        msg = mime_message(ALICE[0], ["bob@example.org"], marker, marker + "\n.leading dot\n")
        sock = socket.create_connection((self.px.host, self.px.ports["plain"]), timeout=30)
        f = sock.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return int(line[:3]), b"".join(lines)

        try:
            self.assertEqual(reply()[0], 220)
            sock.sendall(b"EHLO bdat.test\r\n")
            code, text = reply()
            self.assertIn(b"CHUNKING", text)
            cred = base64.b64encode(b"\0" + ALICE[0].encode() + b"\0" + ALICE[1].encode())
            sock.sendall(b"AUTH PLAIN " + cred + b"\r\n")
            self.assertEqual(reply()[0], 235)
            half = len(msg) // 2
            # pipelined: MAIL, RCPT, two chunks
            sock.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n" +
                         b"BDAT %d\r\n" % half + msg[:half] +
                         b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:])
            self.assertEqual(reply()[0], 250)
            self.assertEqual(reply()[0], 250)
            self.assertEqual(reply()[0], 250)
            code, text = reply()
            self.assertEqual(code, 250, text)
            sock.sendall(b"QUIT\r\n")
            self.assertEqual(reply()[0], 221)
        finally:
            sock.close()
        [raw] = self.stored("bob@example.org", msg)
        self.assert_protected(raw, [marker])
        self.assert_decrypts_to(self.px, raw, msg)

    def test_13_policy_reload_on_sighup(self):
        px = self.px
        line = px.reload(P.DEFAULT_POLICY.replace("sub.example.org       action=none",
                                                  "sub.example.org       action=refuse"))
        self.assertIn("applied", line)
        msg = mime_message(ALICE[0], ["erin@sub.example.org"], "x", "y\n")
        try:
            with self.assertRaises(smtplib.SMTPRecipientsRefused):
                self.send(["erin@sub.example.org"], msg)
        finally:
            self.assertIn("applied", px.reload(P.DEFAULT_POLICY))

    def test_14_gateway_mode_with_smtp_sink_faults(self):
        # Gateway: trusted networks instead of AUTH, in front of smtp-sink.
        with M.SinkServer() as sink, \
                P.ProxyStack(self.certs, sink.port, mode="gateway", workdir=self.work,
                             listeners=("plain",)) as px:
            marker = unique("GATEWAY")
            msg = mime_message("someone@example.com", ["bob@example.org"], marker, marker + "\n")
            self.assertEqual(M.smtp_send(px.host, px.ports["plain"], "someone@example.com",
                                         ["bob@example.org"], msg), {})
            deadline = time.time() + 10
            while not sink.messages() and time.time() < deadline:
                time.sleep(0.1)
            [m] = sink.messages()
            self.assertIn(b"multipart/encrypted", m["data"])
            self.assertNotIn(marker.encode(), m["data"])
            self.assertIn(b"by qumail.localhost (qumail) with ESMTP id", m["data"])
            s = smtplib.SMTP(px.host, px.ports["plain"], timeout=30)
            s.ehlo("gw.test")
            self.assertNotIn("auth", s.esmtp_features)
            s.quit()
            self.assertEqual(px.stop(), 0)
        for kw, cmd_code in (({"hard_reject": ["."]}, 500), ({"soft_reject": ["."]}, 450)):
            with M.SinkServer(**kw) as sink, \
                    P.ProxyStack(self.certs, sink.port, mode="gateway", workdir=self.work,
                                 listeners=("plain",)) as px:
                with self.assertRaises(smtplib.SMTPDataError) as cm:
                    M.smtp_send(px.host, px.ports["plain"], "someone@example.com",
                                ["bob@example.org"], msg)
                self.assertEqual(cm.exception.smtp_code, cmd_code)
                self.assertEqual(px.stop(), 0)
        with M.SinkServer(soft_reject=["RCPT"]) as sink, \
                P.ProxyStack(self.certs, sink.port, mode="gateway", workdir=self.work,
                             listeners=("plain",)) as px:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                M.smtp_send(px.host, px.ports["plain"], "someone@example.com",
                            ["bob@example.org"], msg)
            self.assertEqual(cm.exception.recipients["bob@example.org"][0], 450)
            self.assertEqual(px.stop(), 0)
        # Untrusted client in gateway mode: relay denied
        with M.SinkServer() as sink, \
                P.ProxyStack(self.certs, sink.port, mode="gateway", workdir=self.work,
                             listeners=("plain",), trusted_networks=["192.0.2.0/24"]) as px:
            with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                M.smtp_send(px.host, px.ports["plain"], "someone@example.com",
                            ["bob@example.org"], msg)
            self.assertEqual(cm.exception.smtp_code, 554)
            self.assertEqual(px.stop(), 0)

    def test_15_timeout_and_connection_limit(self):
        with P.ProxyStack(self.certs, self.ms.submission_port, workdir=self.work,
                          listeners=("plain",),
                          limits={"command_timeout": "5s", "max_connections": 2}) as px:
            a = socket.create_connection((px.host, px.ports["plain"]), timeout=30)
            fa = a.makefile("rb")
            self.assertTrue(fa.readline().startswith(b"220 "))
            b = socket.create_connection((px.host, px.ports["plain"]), timeout=30)
            fb = b.makefile("rb")
            self.assertTrue(fb.readline().startswith(b"220 "))
            c = socket.create_connection((px.host, px.ports["plain"]), timeout=30)
            line = c.makefile("rb").readline()
            self.assertTrue(line.startswith(b"421 4.7.0"), line)
            c.close()
            # idle past command_timeout: 421 4.4.2 and the connection closes
            line = fa.readline()
            self.assertTrue(line.startswith(b"421 4.4.2"), line)
            self.assertEqual(fa.readline(), b"")
            a.close()
            b.close()
            self.assertEqual(px.stop(), 0)
            self.assertIn("timeout in state HELO", px.log_text())

    def test_16_upstream_certificate_is_verified(self):
        # The name checked against Postfix's certificate does not match:
        # the upstream TLS handshake fails, the client gets 421, nothing is sent.
        with P.ProxyStack(self.certs, self.ms.submission_port, upstream_tls="starttls",
                          workdir=self.work, listeners=("plain",),
                          upstream_server_name="mail.wrong.example") as px:
            s = socket.create_connection((px.host, px.ports["plain"]), timeout=30)
            line = s.makefile("rb").readline()
            s.close()
            self.assertTrue(line.startswith(b"421 4.4.1"), line)
            self.assertEqual(px.stop(), 0)
            self.assertRegex(px.log_text(), r"upstream unavailable: .*(verify|certificate)")

    def test_17_sighup_reloads_listeners(self):
        with P.ProxyStack(self.certs, self.ms.submission_port, workdir=self.work,
                          listeners=("plain",)) as px:
            old_port = px.ports["plain"]
            new_port = M.free_ports(1)[0]

            def add(cfg):
                cfg["smtp"]["listeners"].append(
                    {"name": "extra", "address": px.host, "port": new_port, "tls": "none"})
            px.rewrite_config(add)
            self.assertIn("applied", px.sighup())
            for port in (old_port, new_port):
                s = socket.create_connection((px.host, port), timeout=30)
                self.assertTrue(s.makefile("rb").readline().startswith(b"220 "))
                s.close()

            def drop_plain(cfg):
                cfg["smtp"]["listeners"] = [l for l in cfg["smtp"]["listeners"]
                                            if l["name"] != "plain"]
            px.rewrite_config(drop_plain)
            self.assertIn("applied", px.sighup())
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection((px.host, old_port), timeout=30)

            # A broken file changes nothing.
            with open(px.config_path, "a") as f:
                f.write("{ not json")
            self.assertIn("refused", px.sighup())
            s = socket.create_connection((px.host, new_port), timeout=30)
            self.assertTrue(s.makefile("rb").readline().startswith(b"220 "))
            s.close()
            self.assertEqual(px.stop(), 0)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root for the mailstack harness")
        sys.exit(77)
    unittest.main(verbosity=2)
