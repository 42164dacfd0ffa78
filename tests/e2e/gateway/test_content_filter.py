#!/usr/bin/env python3
"""qumail as a Postfix content filter (deploy/gateway/postfix-content-filter.md),
end to end with real processes on 127.0.0.1:

    smtplib (AUTH) -> Postfix submission smtpd (-o content_filter=qumail:[127.0.0.1]:F)
            -> the dedicated "qumail" smtp transport (maxproc 10)
            -> qumail proxy, mode gateway, listener F, trusted 127.0.0.0/8
            -> Postfix reinjection smtpd (content_filter= empty)
            -> LMTP -> Dovecot maildir

and inbound mail (port 25 smtpd, no filter) delivered without qumail.

Checked: a protected recipient's stored message holds no plaintext (body,
subject) and decrypts (receiver's keys from the other simulated KME) to the
original with qumail's Received: trace field; an action=none recipient gets
it plain (still through the filter); an action=refuse recipient is bounced
by Postfix (5xx from the filter) and never delivered; with the KME
unreachable the filter answers 4xx, the message stays deferred in Postfix's
queue and nothing is delivered, and once a working proxy is back a queue
flush delivers it encrypted; mail arriving on the public smtpd (inbound)
is delivered as it came, without passing qumail. Needs root (the mailstack harness); exits 77
(skipped) otherwise."""

import os
import re
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "smtp"))

import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402

POLICY = """\
bob@example.org    action=require level=otp link=site slave_sae=SAE_B subject=protect placeholder=[protected]
carol@example.net  action=require level=aes link=site slave_sae=SAE_B subject=protect
dave@example.net   action=refuse
*                  action=none
"""
SENDER = "erin@sub.example.org"     # action=none: bounces to it stay readable
# The guide's dedicated filter transport: at most 10 deliveries into qumail
# at once (qumail's max_connections is larger), no MIME conversion on the way.
QUMAIL_TRANSPORT = [
    "qumail    unix  -       -       n       -       10      smtp",
    "  -o syslog_name=postfix/qumail",
    "  -o smtp_data_done_timeout=1200s",
    "  -o disable_mime_output_conversion=yes",
    "  -o smtp_generic_maps=",
]
TRACE = re.compile(rb"^Received: from [^\r\n]*\r\n\tby qumail\.localhost \(qumail\) "
                   rb"with ESMTP id [0-9A-F]+;", re.M)


class FilterProxy(P.ProxyStack):
    """ProxyStack whose single plain listener is on a given port (the one
    main.cf's content_filter names, chosen before Postfix starts)."""

    def __init__(self, certs, upstream_port, port, **kw):
        super().__init__(certs, upstream_port, mode="gateway", listeners=("plain",),
                         trusted_networks=["127.0.0.0/8"], policy=POLICY, **kw)
        self.fixed_port = port

    def config(self):
        cfg = super().config()
        cfg["smtp"]["listeners"][0]["port"] = self.fixed_port
        self.ports["plain"] = self.fixed_port
        return cfg


def message(frm, to, subject, token):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n"
            "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Body line with the secret %s.\r\nSecond line.\r\n"
            % (frm, to, subject, abs(hash(token)), token)).encode()


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1]


class ContentFilter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="qumail-gw-")
        cls.certs = P.make_certs(cls.work)
        cls.filter_port = M.free_ports(1)[0]
        # exactly the guide's master.cf (deploy/gateway/postfix-content-filter.md)
        cls.ms = M.MailStack(reinjection=True, submission_options=[
            "content_filter=qumail:[127.0.0.1]:%d" % cls.filter_port],
            master_cf_extra=QUMAIL_TRANSPORT)
        cls.ms.start()
        cls.px = None

    @classmethod
    def tearDownClass(cls):
        status = cls.px.stop() if cls.px else 0
        procs = cls.ms.processes()
        cls.ms.stop()
        left = M.still_alive(procs)
        assert not left, "mail stack processes left: %r" % left
        assert status == 0, "proxy exit status %r (sanitizer report?)" % status
        import shutil
        shutil.rmtree(cls.work, ignore_errors=True)

    def proxy(self, **kw):
        if self.px:
            status = type(self).px.stop()
            self.assertEqual(status, 0, "proxy exit status (sanitizers?)")
        type(self).px = FilterProxy(self.certs, self.ms.reinject_port, self.filter_port,
                                    workdir=self.work, **kw).start()
        return self.px

    def submit(self, frm, rcpts, msg):
        """As a user's mail client: the submission port, AUTH as frm."""
        self.ms.send(frm, rcpts, msg, login=(frm, M.USERS[frm]))

    def wait_log(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.ms.postfix_log_text(), re.M)
            if m:
                return m
            time.sleep(0.1)
        self.fail("no %r in the postfix log:\n%s" % (pattern, self.ms.postfix_log_text()[-3000:]))

    def test_1_protected_unprotected_refused(self):
        px = self.proxy()
        # protected (one-time pad, subject protected)
        otp = message(SENDER, "bob@example.org", "gw otp subject 7f3a", "tok-otp-91c2")
        self.submit(SENDER, ["bob@example.org"], otp)
        [stored] = self.ms.wait_for_delivery("bob@example.org", 1, timeout=30)
        for secret in (b"tok-otp-91c2", b"gw otp subject 7f3a"):
            self.assertNotIn(secret, stored)
        self.assertIn(b"Subject: [protected]", stored)
        self.assertRegex(stored, TRACE)
        plain = px.decrypt(stored)
        self.assertIn(b"Subject: gw otp subject 7f3a", plain)
        self.assertEqual(body_of(plain), body_of(otp))
        # it went the documented way: smtpd -> filter -> reinjection smtpd
        self.assertEqual(len(re.findall(rb"^Received: [^\r\n]*\r\n\tby mailstack\.localhost "
                                        rb"\(Postfix\)", stored, re.M)), 2, stored[:1500])
        self.assertIn("postfix/reinject/smtpd", self.ms.postfix_log_text())
        self.assertIn("postfix/qumail/smtp", self.ms.postfix_log_text())
        self.wait_log(r"to=<bob@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                      r".*status=sent" % self.filter_port)

        # AES recipient in another domain
        aes = message(SENDER, "carol@example.net", "gw aes subject 22b1", "tok-aes-5d0e")
        self.submit(SENDER, ["carol@example.net"], aes)
        [stored] = self.ms.wait_for_delivery("carol@example.net", 1, timeout=30)
        for secret in (b"tok-aes-5d0e", b"gw aes subject 22b1"):
            self.assertNotIn(secret, stored)
        plain = px.decrypt(stored)
        self.assertIn(b"Subject: gw aes subject 22b1", plain)
        self.assertEqual(body_of(plain), body_of(aes))
        self.assertRegex(plain + stored, TRACE)

        # action=none: plain, but through the filter (trace field)
        clear = message("alice@example.org", SENDER, "gw plain subject", "tok-plain-0a7e")
        self.submit("alice@example.org", [SENDER], clear)
        [stored] = self.ms.wait_for_delivery(SENDER, 1, timeout=30, match=b"tok-plain-0a7e")
        self.assertIn(b"Subject: gw plain subject", stored)
        self.assertTrue(stored.endswith(body_of(clear)))
        self.assertRegex(stored, TRACE)
        self.assertNotIn(b"Key: ", stored)

        # action=refuse: Postfix accepted it, the filter says 5xx, Postfix bounces
        refused = message(SENDER, "dave@example.net", "gw refused", "tok-refused-66f1")
        self.submit(SENDER, ["dave@example.net"], refused)
        m = self.wait_log(r"to=<dave@example\.net>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                          r".*status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: "
                          r"(5\d\d [^)]*)" % self.filter_port)
        print("filter refused: %s" % m.group(1), file=sys.stderr)
        [bounce] = self.ms.wait_for_delivery(SENDER, 1, timeout=30,
                                             match=b"MAILER-DAEMON")
        self.assertIn(b"dave@example.net", bounce)
        self.assertTrue(self.ms.wait_queue_empty(15))
        self.assertEqual(self.ms.mailbox_files("dave@example.net"), [])
        self.assertEqual(self.ms.mailbox_files("bob@example.org").__len__(), 1)

    def test_2_kme_unreachable_defers_then_delivers(self):
        dead = M.free_ports(1)[0]   # nothing listens there
        self.proxy(kme_url="https://127.0.0.1:%d" % dead, kme_timeout="2s")
        before = len(self.ms.mailbox_files("carol@example.net"))
        msg = message(SENDER, "carol@example.net", "gw deferred subject", "tok-defer-3c9b")
        self.submit(SENDER, ["carol@example.net"], msg)
        m = self.wait_log(r"([0-9A-F]+): to=<carol@example\.net>, relay=127\.0\.0\.1"
                          r"\[127\.0\.0\.1\]:%d, .*status=deferred \(host 127\.0\.0\.1"
                          r"\[127\.0\.0\.1\] said: (4\d\d [^)]*)" % self.filter_port)
        qid = m.group(1)
        print("filter deferred: %s" % m.group(2), file=sys.stderr)
        queued = self.ms.queued()
        self.assertIn(qid, queued, self.ms.postqueue("-p"))
        self.assertIn("carol@example.net", queued[qid])
        self.assertRegex(queued[qid], r"said: 4\d\d ")
        # Retried (backoff 2-10 s) and refused again: still queued, nothing delivered.
        self.wait_log(r"(?s)%s: to=<carol@example\.net>.*status=deferred.*"
                      r"%s: to=<carol@example\.net>.*status=deferred" % (qid, qid))
        self.assertIn(qid, self.ms.queued())
        self.assertEqual(len(self.ms.mailbox_files("carol@example.net")), before)
        self.assertNotIn(b"tok-defer-3c9b", b"".join(
            f for u in M.USERS for f in self.ms.mailbox_files(u)))
        self.assertNotRegex(self.ms.postfix_log_text(),
                            r"%s: to=<carol@example\.net>.*status=sent" % qid)

        # KME back (a proxy with a working link): a queue flush delivers it encrypted.
        px = self.proxy()
        self.ms.postqueue("-f")
        stored = self.ms.wait_for_delivery("carol@example.net", before + 1, timeout=40)[-1]
        self.assertNotIn(b"tok-defer-3c9b", stored)
        self.assertNotIn(b"gw deferred subject", stored)
        plain = px.decrypt(stored)
        self.assertIn(b"Subject: gw deferred subject", plain)
        self.assertEqual(body_of(plain), body_of(msg))
        self.assertTrue(self.ms.wait_queue_empty(15))

    def test_3_inbound_not_filtered(self):
        self.proxy()
        msg = message("someone@outside.example", "bob@example.org", "gw inbound 4e1d",
                      "tok-inbound-8a2f")
        self.ms.send("someone@outside.example", ["bob@example.org"], msg)  # port 25, no AUTH
        [stored] = self.ms.wait_for_delivery("bob@example.org", 1, timeout=30,
                                             match=b"tok-inbound-8a2f")
        self.assertIn(b"Subject: gw inbound 4e1d", stored)
        self.assertTrue(stored.endswith(body_of(msg)))
        self.assertNotRegex(stored, TRACE)
        # one Postfix hop (the public smtpd), no reinjection
        self.assertEqual(len(re.findall(rb"^Received: [^\r\n]*\r\n\tby mailstack\.localhost "
                                        rb"\(Postfix\)", stored, re.M)), 1, stored[:800])


def main():
    if os.geteuid() != 0:
        print("needs root (own Postfix/Dovecot instances): skipped")
        return 77
    if not os.path.exists(P.QUMAIL) or not os.path.exists(P.DECRYPT):
        print("qumail or qkd_decrypt not built (%s): failing" % P.QUMAIL)
        return 1
    prog = unittest.main(exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
