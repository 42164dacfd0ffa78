#!/usr/bin/env python3
"""Self-test of the e2e harness (tests/e2e/lib): real Postfix delivering
into real Dovecot, SASL AUTH on the submission port, STARTTLS and implicit
TLS, the fixed test rejections, smtp-sink fault injection, and clean-up
(no process of a stack survives stop(), SIGTERM or SIGKILL of the test
process)."""

import imaplib
import os
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")
sys.path.insert(0, LIB)

import mailstack as M  # noqa: E402

ALICE = ("alice@example.org", M.USERS["alice@example.org"])


def assert_gone(test, procs, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while M.still_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    test.assertEqual(M.still_alive(procs), {}, "%s left processes" % what)


def pgrep(pattern):
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split() if int(p) != os.getpid()]


class PlainStack(unittest.TestCase):
    """One stack without TLS for the delivery, IMAP, AUTH and policy tests."""

    @classmethod
    def setUpClass(cls):
        cls.ms = M.MailStack(message_size_limit=5 * 1024 * 1024)
        cls.ms.start()

    @classmethod
    def tearDownClass(cls):
        procs = cls.ms.processes()
        d = cls.ms.dir
        cls.ms.stop()
        deadline = time.monotonic() + 10
        while M.still_alive(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = M.still_alive(procs)
        if left or os.path.exists(d) or pgrep(d):
            raise AssertionError("stack not cleaned up: %r %s" % (left, d))

    def test_00_processes_are_tracked(self):
        procs = self.ms.processes()
        # Postfix master, qmgr, pickup and Dovecot master, auth, lmtp... at least
        self.assertGreaterEqual(len(procs), 6, procs)
        comms = set()
        for pid in procs:
            with open("/proc/%d/comm" % pid) as f:
                comms.add(f.read().strip())
        self.assertIn("master", comms)
        self.assertIn("dovecot", comms)

    def test_delivery_is_byte_identical(self):
        rcpts = ["bob@example.org", "carol@example.net", "erin@sub.example.org"]
        msg = M.make_message("alice@example.org", rcpts, subject="identical")
        refused = self.ms.send("alice@example.org", rcpts, msg)
        self.assertEqual(refused, {})
        for r in rcpts:
            stored = self.ms.wait_for_delivery(r, 1, match=b"Subject: identical")
            self.assertEqual(len(stored), 1, r)
            raw = stored[0]
            self.assertNotEqual(raw, msg)  # delivery headers are there
            self.assertEqual(M.strip_delivery_headers(raw), msg)
            added = M.delivery_headers(raw)
            self.assertTrue(added.startswith(b"Return-Path: <alice@example.org>\r\n"), added)
            # Dovecot adds Delivered-To only when the LMTP transaction had
            # one recipient; Postfix hands these three over in one.
            self.assertNotIn(b"Delivered-To:", added)
            self.assertEqual(added.count(b"Received: "), 2, added)

    def test_large_message_is_byte_identical(self):
        msg = M.make_message("alice@example.org", ["dave@example.net"],
                             subject="large", size=3 * 1024 * 1024)
        self.assertGreater(len(msg), 3 * 1024 * 1024 - 100)
        self.ms.send("alice@example.org", ["dave@example.net"], msg)
        got = self.ms.wait_for_delivery("dave@example.net", 1, strip=True,
                                        match=b"Subject: large")
        self.assertEqual(got, [msg])

    def test_message_size_limit(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"],
                             size=6 * 1024 * 1024)
        with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
            self.ms.send("alice@example.org", ["bob@example.org"], msg)
        self.assertEqual(cm.exception.smtp_code, 552)
        self.assertTrue(cm.exception.smtp_error.startswith(b"5.3.4 "))

    def test_imap_fetch_returns_the_message(self):
        msg = M.make_message("bob@example.org", ["carol@example.net"],
                             subject="via imap")
        self.ms.send("bob@example.org", ["carol@example.net"], msg)
        self.ms.wait_for_delivery("carol@example.net", 1, match=b"Subject: via imap")
        fetched = [m for m in self.ms.imap_fetch("carol@example.net")
                   if b"Subject: via imap" in m]
        self.assertEqual(len(fetched), 1)
        self.assertEqual(M.strip_delivery_headers(fetched[0]), msg)

    def test_imap_append_to_sent(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"], subject="sent copy")
        uid = self.ms.imap_append("alice@example.org", msg, mailbox="Sent", flags="(\\Seen)")
        self.assertIsInstance(uid, int)
        self.assertEqual(self.ms.mailbox_files("alice@example.org", "Sent"), [msg])
        self.assertEqual(self.ms.imap_fetch("alice@example.org", mailbox="Sent"), [msg])
        self.assertEqual(self.ms.imap_fetch("alice@example.org", mailbox="Drafts"), [])
        conn = self.ms.imap_login("alice@example.org")
        try:
            typ, data = conn.list()
        finally:
            conn.logout()
        listing = b"\n".join(data)
        for special in (b"\\Sent", b"\\Drafts", b"\\Trash"):
            self.assertIn(special, listing)

    def test_imap_wrong_password_fails(self):
        with self.assertRaises(imaplib.IMAP4.error):
            self.ms.imap_fetch("carol@example.net", "wrong-password")

    def test_auth_success_on_submission(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"],
                             subject="authenticated")
        refused = self.ms.send("alice@example.org", ["bob@example.org"], msg,
                               login=ALICE)
        self.assertEqual(refused, {})
        got = self.ms.wait_for_delivery("bob@example.org", 1,
                                        match=b"Subject: authenticated")
        self.assertEqual(len(got), 1)
        added = M.delivery_headers(got[0])
        self.assertIn(b"with ESMTPA id", added)
        self.assertIn(b"Delivered-To: bob@example.org\r\n", added)
        self.assertEqual(M.strip_delivery_headers(got[0]), msg)

    def test_auth_login_mechanism(self):
        s = smtplib.SMTP(self.ms.host, self.ms.submission_port, timeout=20)
        try:
            s.ehlo()
            self.assertIn("LOGIN", s.esmtp_features.get("auth", "").upper())
            s.user, s.password = ALICE
            code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
            self.assertEqual(code, 235)
        finally:
            s.quit()

    def test_auth_failure_on_submission(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"])
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            self.ms.send("alice@example.org", ["bob@example.org"], msg,
                         login=("alice@example.org", "not-her-password"))
        self.assertEqual(cm.exception.smtp_code, 535)

    def test_submission_requires_auth(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"])
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            self.ms.send("alice@example.org", ["bob@example.org"], msg,
                         port=self.ms.submission_port)
        code, _ = cm.exception.recipients["bob@example.org"]
        self.assertEqual(code, 554)

    def test_unknown_user_is_refused_at_rcpt(self):
        msg = M.make_message("alice@example.org", ["nobody@example.org"])
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            self.ms.send("alice@example.org", ["nobody@example.org"], msg)
        code, text = cm.exception.recipients["nobody@example.org"]
        self.assertEqual(code, 550)
        self.assertIn(b"User unknown", text)

    def test_policy_recipient_replies(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"],
                             subject="partial")
        refused = self.ms.send("alice@example.org",
                               ["bob@example.org", M.REJECT_RCPT, M.TEMPFAIL_RCPT], msg)
        for rcpt, reply in ((M.REJECT_RCPT, M.REPLY_REJECT_RCPT),
                            (M.TEMPFAIL_RCPT, M.REPLY_TEMPFAIL_RCPT)):
            code, text = refused[rcpt]
            self.assertTrue(M.reply_matches(reply, code, text), (reply, code, text))
        got = self.ms.wait_for_delivery("bob@example.org", 1, match=b"Subject: partial")
        self.assertEqual(len(got), 1)

    def test_policy_data_replies_and_nothing_queued(self):
        self.assertTrue(self.ms.wait_queue_empty())
        before = self.ms.accepted_queue_ids()
        for sender, reply in ((M.REJECT_DATA_SENDER, M.REPLY_REJECT_DATA),
                              (M.TEMPFAIL_DATA_SENDER, M.REPLY_TEMPFAIL_DATA)):
            msg = M.make_message(sender, ["bob@example.org"], subject="refused")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                self.ms.send(sender, ["bob@example.org"], msg)
            self.assertTrue(M.reply_matches(reply, cm.exception.smtp_code,
                                            cm.exception.smtp_error),
                            (reply, cm.exception.smtp_code, cm.exception.smtp_error))
        # a normal message is queued, logged and counted
        msg = M.make_message("alice@example.org", ["bob@example.org"], subject="counted")
        self.ms.send("alice@example.org", ["bob@example.org"], msg)
        self.ms.wait_for_delivery("bob@example.org", 1, match=b"Subject: counted")
        deadline = time.monotonic() + 10
        while len(self.ms.accepted_queue_ids()) < len(before) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.ms.accepted_queue_ids()), len(before) + 1)
        for m in self.ms.mailbox_files("bob@example.org"):
            self.assertNotIn(b"Subject: refused", m)


SRC = os.path.abspath(os.path.join(LIB, "..", "..", ".."))


class TlsStack(unittest.TestCase):
    """A stack with the project's CA-signed localhost certificate
    (certs/mkcerts.sh): STARTTLS and implicit TLS on Postfix, IMAPS and IMAP
    STARTTLS on Dovecot, clients verifying against the CA."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.certdir = tempfile.mkdtemp(prefix="mailstack-certs-")
        out = os.path.join(cls.certdir, "c")
        subprocess.run(["sh", os.path.join(SRC, "certs", "mkcerts.sh"), "-o", out],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)
        os.chmod(cls.certdir, 0o755)
        files = tuple(os.path.join(out, n) for n in
                      ("localhost.pem", "localhost.key", "ca.pem"))
        cls.ms = M.MailStack(tls=files)
        cls.ms.start()

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.certdir, ignore_errors=True)
        procs = cls.ms.processes()
        cls.ms.stop()
        deadline = time.monotonic() + 10
        while M.still_alive(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        if M.still_alive(procs):
            raise AssertionError("TLS stack left processes")

    def test_starttls_submission_with_auth(self):
        msg = M.make_message("alice@example.org", ["bob@example.org"], subject="starttls")
        self.assertEqual(self.ms.send("alice@example.org", ["bob@example.org"], msg,
                                      starttls=True, login=ALICE), {})
        got = self.ms.wait_for_delivery("bob@example.org", 1, match=b"Subject: starttls")
        self.assertEqual(len(got), 1)
        self.assertIn(b"with ESMTPSA id", M.delivery_headers(got[0]))
        self.assertEqual(M.strip_delivery_headers(got[0]), msg)

    def test_implicit_tls_smtps(self):
        self.assertIsNotNone(self.ms.smtps_port)
        msg = M.make_message("alice@example.org", ["carol@example.net"], subject="smtps")
        self.ms.send("alice@example.org", ["carol@example.net"], msg,
                     port=self.ms.smtps_port, implicit_tls=True, login=ALICE)
        got = self.ms.wait_for_delivery("carol@example.net", 1, strip=True,
                                        match=b"Subject: smtps")
        self.assertEqual(got, [msg])

    def test_certificate_is_verified(self):
        import ssl
        wrong = ssl.create_default_context()  # system CAs: must not trust ours
        msg = M.make_message("alice@example.org", ["bob@example.org"])
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.ms.send("alice@example.org", ["bob@example.org"], msg,
                         starttls=True, ssl_context=wrong)

    def test_ca_is_the_trust_anchor(self):
        self.assertTrue(self.ms.ca.endswith("ca.pem"))
        self.assertEqual(self.ms.ssl_context().cert_store_stats()["x509_ca"], 1)

    def test_imaps_and_imap_starttls(self):
        msg = M.make_message("alice@example.org", ["dave@example.net"], subject="imaps")
        self.ms.send("alice@example.org", ["dave@example.net"], msg)
        self.ms.wait_for_delivery("dave@example.net", 1, match=b"Subject: imaps")
        for mode in ("imaps", "starttls"):
            got = [M.strip_delivery_headers(m)
                   for m in self.ms.imap_fetch("dave@example.net", tls=mode)
                   if b"Subject: imaps" in m]
            self.assertEqual(got, [msg], mode)


class SelfSignedTls(unittest.TestCase):
    """tls=True: a throwaway self-signed certificate made by the harness;
    smtps_auth=False: the implicit-TLS port relays for loopback without
    AUTH (gateway style)."""

    def test_starttls_imaps_and_smtps_without_auth(self):
        with M.MailStack(tls=True, smtps_auth=False,
                         postfix_settings={"smtpd_tls_security_level": "encrypt"}) as ms:
            # postfix_settings: STARTTLS now required on smtp_port
            plain = M.make_message("alice@example.org", ["dave@example.net"])
            with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                ms.send("alice@example.org", ["dave@example.net"], plain)
            self.assertEqual(cm.exception.smtp_code, 530)
            msg = M.make_message("alice@example.org", ["dave@example.net"], subject="noauth")
            ms.send("alice@example.org", ["dave@example.net"], msg,
                    port=ms.smtps_port, implicit_tls=True)
            self.assertEqual(ms.wait_for_delivery("dave@example.net", 1, strip=True), [msg])
            self.assertIsNone(ms.ca)
            msg = M.make_message("alice@example.org", ["erin@sub.example.org"])
            ms.send("alice@example.org", ["erin@sub.example.org"], msg,
                    starttls=True, login=ALICE)
            ms.wait_for_delivery("erin@sub.example.org", 1)
            got = [M.strip_delivery_headers(m)
                   for m in ms.imap_fetch("erin@sub.example.org", tls="imaps")]
            self.assertEqual(got, [msg])
            procs = ms.processes()
        assert_gone(self, procs, "self-signed TLS stack")


class Sink(unittest.TestCase):
    """smtp-sink: capture and each fault option."""

    def setUp(self):
        self.msg = M.make_message("a@example.com", ["b@example.com"], subject="sink")

    def test_capture(self):
        with M.SinkServer() as sink:
            sink.send("a@example.com", ["b@example.com", "c@example.com"], self.msg,
                      mail_options=["SIZE=%d" % len(self.msg)])
            [rec] = sink.wait_for_messages(1)
            procs = sink.processes()
            self.assertTrue(procs)
        self.assertEqual(rec["mail"], "<a@example.com> SIZE=%d" % len(self.msg))
        self.assertEqual(rec["rcpts"], ["<b@example.com>", "<c@example.com>"])
        self.assertEqual(rec["data"], self.msg.replace(b"\r\n", b"\n"))
        assert_gone(self, procs, "smtp-sink")

    def test_hard_reject_rcpt(self):
        with M.SinkServer(hard_reject=["RCPT"]) as sink:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                sink.send("a@example.com", ["b@example.com"], self.msg)
            self.assertEqual(cm.exception.recipients["b@example.com"][0], 500)
            self.assertEqual(sink.messages(), [])

    def test_soft_reject_end_of_data_with_custom_reply(self):
        with M.SinkServer(soft_reject=["."], soft_reply="452 4.3.1 Out of space") as sink:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                sink.send("a@example.com", ["b@example.com"], self.msg)
            self.assertEqual(cm.exception.smtp_code, 452)
            self.assertEqual(cm.exception.smtp_error, b"4.3.1 Out of space")

    def test_hard_reject_mail(self):
        with M.SinkServer(hard_reject=["MAIL"]) as sink:
            with self.assertRaises(smtplib.SMTPSenderRefused) as cm:
                sink.send("a@example.com", ["b@example.com"], self.msg)
            self.assertEqual(cm.exception.smtp_code, 500)

    def test_421_disconnect(self):
        with M.SinkServer(disconnect_421=["DATA"]) as sink:
            with self.assertRaises((smtplib.SMTPDataError,
                                    smtplib.SMTPServerDisconnected)) as cm:
                sink.send("a@example.com", ["b@example.com"], self.msg)
            if isinstance(cm.exception, smtplib.SMTPDataError):
                self.assertEqual(cm.exception.smtp_code, 421)

    def test_silent_disconnect(self):
        with M.SinkServer(disconnect=["RCPT"]) as sink:
            with self.assertRaises(smtplib.SMTPServerDisconnected):
                sink.send("a@example.com", ["b@example.com"], self.msg)


class PortClash(unittest.TestCase):
    """A port taken by someone else before Dovecot binds it: start() retries
    with new ports."""

    def test_start_retries_with_new_ports(self):
        import socket
        squatter = socket.socket()
        squatter.bind((M.HOST, 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        real = M.free_ports
        calls = []

        def clashing(count):
            ports = real(count)
            if not calls:
                ports[2] = taken  # the IMAP port
            calls.append(list(ports))
            return ports

        M.free_ports = clashing
        try:
            with M.MailStack() as ms:
                self.assertEqual(len(calls), 2)
                self.assertEqual(len(ms.attempt_dirs), 2)
                # nothing of the failed attempt is left (its Postfix was
                # still in its start-up checks when Dovecot failed)
                failed = os.path.basename(ms.attempt_dirs[0])
                deadline = time.monotonic() + 10
                while M.processes_matching(failed) and time.monotonic() < deadline:
                    time.sleep(0.1)
                self.assertEqual(M.processes_matching(failed), {})
                self.assertNotEqual(ms.imap_port, taken)
                msg = M.make_message("alice@example.org", ["bob@example.org"])
                ms.send("alice@example.org", ["bob@example.org"], msg)
                self.assertEqual(ms.wait_for_delivery("bob@example.org", 1, strip=True), [msg])
                procs = ms.processes()
        finally:
            M.free_ports = real
            squatter.close()
        assert_gone(self, procs, "retried stack")
        for d in ms.attempt_dirs:
            self.assertEqual(M.processes_matching(os.path.basename(d)), {}, d)


_CHILD = r"""
import os, sys, time, json
sys.dont_write_bytecode = True
sys.path.insert(0, %r)
import mailstack as M
ms = M.MailStack().start()
sink = M.SinkServer().start()
procs = dict(ms.processes()); procs.update(sink.processes())
print(json.dumps({"procs": procs, "dirs": [ms.dir, sink.dir]}), flush=True)
time.sleep(120)
"""


class Cleanup(unittest.TestCase):
    """A test process that dies leaves nothing behind."""

    def _run_child_and(self, sig):
        import json
        child = subprocess.Popen([sys.executable, "-c", _CHILD % LIB],
                                 stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            self.assertTrue(line, "child did not start its stack")
            info = json.loads(line)
            procs = {int(k): v for k, v in info["procs"].items()}
            self.assertGreaterEqual(len(procs), 7)
            self.assertEqual(M.still_alive(procs), procs)
            child.send_signal(sig)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        assert_gone(self, procs, "child killed by signal %d" % sig, timeout=15)
        deadline = time.monotonic() + 10
        while any(os.path.exists(d) for d in info["dirs"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for d in info["dirs"]:
            self.assertFalse(os.path.exists(d), d)
            self.assertEqual(pgrep(d), [], d)
            self.assertEqual(M.processes_matching(os.path.basename(d)), {}, d)
        return child.returncode

    def test_sigterm_runs_cleanup(self):
        self.assertEqual(self._run_child_and(signal.SIGTERM), 128 + signal.SIGTERM)

    def test_sigkill_is_cleaned_up_by_the_reaper(self):
        self.assertEqual(self._run_child_and(signal.SIGKILL), -signal.SIGKILL)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("e2e_mailstack: skipped: needs root to run its own Postfix and "
              "Dovecot instances")
        sys.exit(77)
    unittest.main(verbosity=2)
