#!/usr/bin/env python3
"""End to end with ETSI GS QKD 004 keys: smtplib -> qumail proxy (a key link
of kind etsi004) -> real Postfix -> real Dovecot, read back over IMAP and
decrypted with `qumail mime decrypt` at the receiving organisation's KME.

Two organisations: KME_A and KME_B are two `qumail kme` processes (004
listeners, linked over mutual TLS); the stream (a predefined KSID) is
registered at both ends first, as operators do (`qumail kme-client open`).
The proxy (SAE_A) opens it at KME_A and takes chunks at KME-chosen indices;
the message names the KSID and the index range in its authenticated
control part; the reader (SAE_B) fetches those chunks from KME_B.

Checked: OTP and AES copies stored without plaintext, each naming the
stream and its own index range (no two copies share a chunk), decrypting
to exactly what was submitted (plus the proxy's trace field); a 1 MB OTP
message; the owner KME killed: 4xx and nothing reaches Postfix, then after
its restart the proxy reopens the stream and mail flows again; the proxy
exits cleanly (sanitizers quiet). Needs root (the mailstack harness);
exits 77 (skipped) otherwise."""

import json
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "smtp"))

import imapstack as I  # noqa: E402
import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402
from procutil import free_ports, register, unregister, wait_port  # noqa: E402

QUMAIL = P.QUMAIL
ALICE = ("alice@example.org", M.USERS["alice@example.org"])
TRACE = re.compile(rb"\AReceived: from [^\r\n]*\r\n\tby qumail\.localhost \(qumail\) "
                   rb"with [A-Z]+ id [0-9A-F]+;\r\n\t[^\r\n]*\r\n")
CHUNKS = re.compile(rb"^Key-Chunks: (\S+) (\d+) (\d+) (\d+) (\d+)\r?$", re.M)


def unique(tag):
    return "%s-%d-%d" % (tag, os.getpid(), time.time_ns() % 10**9)


def message(to, subject, body):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@e2e.test>\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\n%s" %
            (ALICE[0], ", ".join(to), subject, unique("m"), body)).encode()


class Kme:
    """One organisation's KME: `qumail kme` with a 004 listener."""

    def __init__(self, work, certs, kid, peer, ports, peer_link):
        self.ports = ports
        self.cfg = os.path.join(work, kid + ".json")
        self.log = os.path.join(work, kid + ".log")
        c = {"kme_id": kid, "port": ports["api"],
             "tls": {"cert": certs[kid][0], "key": certs[kid][1], "ca": certs["ca"]},
             "database": os.path.join(work, kid + ".db"),
             "link": {"port": ports["link"], "peer_kme_id": peer,
                      "peer_host": "127.0.0.1", "peer_port": peer_link},
             "secret_key_rate": 1 << 26, "max_key_count": 200000,
             "sqlite_synchronous": "normal",
             "etsi004": {"port": ports["e4"], "max_chunk_size": 4096}}
        with open(self.cfg, "w") as f:
            json.dump({"kmes": [c]}, f)
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([QUMAIL, "kme", "--config", self.cfg], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        register(self)
        wait_port(self.ports["e4"], 20, None, proc=self.proc, what="qumail kme")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        status = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait()
        unregister(self)
        return status


class Proxy004(P.ProxyStack):
    """The SMTP e2e proxy with its key link "site" of kind etsi004."""

    def __init__(self, *a, ksid, e4_port, **kw):
        self.ksid = ksid
        self.e4_port = e4_port
        super().__init__(*a, **kw)

    def config(self):
        cfg = super().config()
        sae_cert, sae_key = self.certs["SAE_A"]
        cfg["kme_links"] = {"site": {
            "kind": "etsi004", "url": "etsi004://localhost:%d" % self.e4_port,
            "ksid": self.ksid, "cert_file": sae_cert, "key_file": sae_key,
            "ca_file": self.certs["ca"], "timeout": "5s"}}
        cfg["kme_simulator"]["enabled"] = False
        return cfg


class E2E004(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="e2e004-")
        cls.certs = P.make_certs(cls.work)
        pa = dict(zip(("api", "link", "e4"), free_ports(3)))
        pb = dict(zip(("api", "link", "e4"), free_ports(3)))
        cls.kme_a = Kme(cls.work, cls.certs, "KME_A", "KME_B", pa, pb["link"])
        cls.kme_b = Kme(cls.work, cls.certs, "KME_B", "KME_A", pb, pa["link"])
        cls.kme_a.start()
        cls.kme_b.start()
        cls.ksid = str(uuid.uuid4())
        # The operators of both organisations register the stream.
        deadline = time.time() + 30
        for sae, port in (("SAE_A", pa["e4"]), ("SAE_B", pb["e4"])):
            while True:
                r = cls.kme_client(sae, port, "open", "--ksid", cls.ksid, "--chunk-size",
                                   "4096", "--qos-timeout", "2000", "--ttl", "86400")
                if r.returncode == 0 or time.time() > deadline:
                    break
                time.sleep(0.3)  # the link between the KMEs is still coming up
            assert r.returncode == 0, r.stdout + r.stderr
        cls.ms = M.MailStack(tls=cls.certs["localhost"])
        cls.ms.start()
        cls.px = Proxy004(cls.certs, cls.ms.submission_port, workdir=cls.work,
                          kme_url="etsi004://localhost:%d" % pa["e4"], ksid=cls.ksid,
                          e4_port=pa["e4"], listeners=("plain",))
        cls.px.start()
        cls.ctx = ssl.create_default_context(cafile=cls.certs["ca"])
        cls.used = []   # (first, count) of every copy: no overlap

    @classmethod
    def tearDownClass(cls):
        status = cls.px.stop()
        log = cls.px.log_text()
        cls.ms.stop()
        sa, sb = cls.kme_a.stop(), cls.kme_b.stop()
        texts = [log]
        for k in (cls.kme_a, cls.kme_b):
            with open(k.log, errors="replace") as f:
                texts.append(f.read())
        if os.environ.get("MAILSTACK_KEEP") != "1":
            shutil.rmtree(cls.work, ignore_errors=True)
        if status != 0 or sa != 0 or sb != 0 or any("Sanitizer" in t or "runtime error" in t
                                                   for t in texts):
            sys.stderr.write(log[-6000:])
            raise AssertionError("exit statuses %r %r %r or a sanitizer report" %
                                 (status, sa, sb))

    @classmethod
    def kme_client(cls, sae, port, *args):
        cert, key = cls.certs[sae]
        return subprocess.run([QUMAIL, "kme-client"] + list(args) +
                              ["--kme", "etsi004://localhost:%d" % port, "--cert", cert,
                               "--key", key, "--ca", cls.certs["ca"]],
                              capture_output=True, text=True, timeout=60)

    def send(self, rcpts, msg):
        return M.smtp_send(self.px.host, self.px.ports["plain"], ALICE[0], rcpts, msg,
                           login=ALICE, ssl_context=self.ctx)

    def stored(self, user, msg, timeout=30):
        mid = re.search(rb"^Message-ID: (\S+)", msg, re.M | re.I).group(1)
        return self.ms.wait_for_delivery(user, 1, timeout=timeout,
                                         match=lambda r: b"Message-ID: " + mid in r)

    def decrypt(self, raw):
        """As the reader does: the chunks the message names, from KME_B."""
        cert, key = self.certs["SAE_B"]
        path = os.path.join(self.work, unique("stored") + ".eml")
        with open(path, "wb") as f:
            f.write(raw)
        r = subprocess.run([QUMAIL, "mime", "decrypt", "--kme",
                            "etsi004://localhost:%d" % self.kme_b.ports["e4"], "--cert", cert,
                            "--key", key, "--ca", self.certs["ca"], path],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return r.stdout

    def check_copy(self, raw, original, secrets):
        self.assertIn(b"multipart/encrypted", raw)
        for s in secrets:
            self.assertNotIn(s.encode(), raw, "plaintext in the stored message")
        entries = CHUNKS.findall(raw)
        self.assertEqual(len(entries), 1, "one Key-Chunks entry: %r" % entries)
        ksid, first, count, chunk_bits, bits = entries[0]
        self.assertEqual(ksid.decode(), self.ksid)
        self.assertEqual(int(chunk_bits), 4096 * 8)
        first, count = int(first), int(count)
        for f, c in self.used:
            self.assertTrue(first + count <= f or f + c <= first,
                            "two copies share chunks: %r and %r" % ((f, c), (first, count)))
        self.used.append((first, count))
        plain = self.decrypt(raw)
        m = TRACE.match(plain)
        self.assertIsNotNone(m, "no trace field first: %r" % plain[:200])
        self.assertEqual(plain[m.end():], original)

    def test_01_otp_and_aes_copies(self):
        body, subject = unique("BODYSECRET"), unique("SubjectSecret")
        msg = message(["bob@example.org", "carol@example.net"], subject, body + "\r\n")
        self.assertEqual(self.send(["bob@example.org", "carol@example.net"], msg), {})
        [otp] = self.stored("bob@example.org", msg)
        [aes] = self.stored("carol@example.net", msg)
        self.assertIn(b"OTP-POLY1305", otp)
        self.assertIn(b"AES-256-GCM", aes)
        self.check_copy(otp, msg, [body, subject])
        self.check_copy(aes, msg, [body, subject])

    def test_02_one_megabyte_otp(self):
        body = "".join("%s line %07d\r\n" % (unique("L"), i) for i in range(40000))
        msg = message(["bob@example.org"], unique("Big"), body)
        self.assertGreater(len(msg), 1 << 20)
        self.assertEqual(self.send(["bob@example.org"], msg), {})
        [raw] = self.stored("bob@example.org", msg, timeout=60)
        self.check_copy(raw, msg, [body[:40]])

    def reader(self):
        """bob's side: `qumail proxy` with an IMAP side in front of Dovecot,
        its key link "recv" of kind etsi004 at KME_B on the same stream."""
        cert, key = self.certs["SAE_B"]
        kme = {"kme_links": {"recv": {
            "kind": "etsi004", "url": "etsi004://localhost:%d" % self.kme_b.ports["e4"],
            "ksid": self.ksid, "cert_file": cert, "key_file": key,
            "ca_file": self.certs["ca"], "timeout": "5s"}},
            "kme_simulator": {"enabled": False}}
        px = I.ImapProxy(self.certs, self.ms.imap_port, upstream_tls="none",
                         smtp_upstream_port=self.ms.submission_port, workdir=self.work,
                         listeners=("plain",), kme=kme,
                         policy="sender * link=recv master_sae=SAE_A\n* action=none\n")
        px.start()
        return px

    def read_through(self, px, user, mid):
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", px.ports["plain"], timeout=60)
        try:
            c.login(user, M.USERS[user])
            c.select("INBOX", readonly=True)
            typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", mid)
            uids = data[0].split()
            self.assertEqual(len(uids), 1, data)
            typ, data = c.uid("FETCH", uids[0], "(BODY.PEEK[])")
            return data[0][1]
        finally:
            c.logout()

    def test_02b_read_through_the_imap_side(self):
        """The reading side of the IMAP proxy takes the chunks the message
        names from KME_B (stream check, vault before use) and shows the
        plaintext; after a restart it reads them from its vault (KME_B
        would refuse a second delivery)."""
        body, subject = unique("IMAPSECRET"), unique("ImapSubject")
        msg = message(["bob@example.org"], subject, body + "\r\n")
        self.assertEqual(self.send(["bob@example.org"], msg), {})
        [raw] = self.stored("bob@example.org", msg)
        self.assertNotIn(body.encode(), raw)
        mid = re.search(r"^Message-ID: (\S+)", msg.decode(), re.M).group(1)
        px = self.reader()
        try:
            first = self.read_through(px, "bob@example.org", mid)
            self.assertIn(body.encode(), first, first[:600])
            self.assertTrue(first.endswith(msg), "the original after the trace fields")
            px.restart()
            again = self.read_through(px, "bob@example.org", mid)
            self.assertEqual(again, first, "after a restart, from the vault")
        finally:
            status = px.stop()
            log = px.log_text()
        self.assertEqual(status, 0, log[-4000:])
        self.assertNotIn("Sanitizer", log)

    def test_03_owner_kme_down_then_back(self):
        self.kme_a.kill9()
        msg = message(["bob@example.org"], unique("Down"), "while the KME is away\r\n")
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["bob@example.org"], msg)
        self.assertEqual(cm.exception.smtp_code // 100, 4, cm.exception)
        time.sleep(1)
        mid = re.search(rb"^Message-ID: (\S+)", msg, re.M).group(1)
        self.assertFalse(any(mid in r for r in self.ms.imap_fetch("bob@example.org")),
                         "nothing reaches Postfix while keys are unavailable")
        self.kme_a.start()
        deadline = time.time() + 30
        while True:
            msg = message(["bob@example.org"], unique("Back"), "the KME is back\r\n")
            try:
                self.assertEqual(self.send(["bob@example.org"], msg), {})
                break
            except smtplib.SMTPDataError as e:
                if e.smtp_code // 100 != 4 or time.time() > deadline:
                    raise
                time.sleep(0.5)   # the link and the stream come back
        [raw] = self.stored("bob@example.org", msg)
        self.check_copy(raw, msg, ["the KME is back"])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: needs root (own Postfix and Dovecot instances)")
        sys.exit(77)
    unittest.main(verbosity=2)
