#!/usr/bin/env python3
"""Fault injection against the real `qumail proxy` (issue 10): kill -9 of
the proxy during DATA and during the upstream relay; the KME killed, hung
(SIGSTOP) and restarted (a separate `qumail kme` process); upstream (smtp-
sink) failing at every step (disconnect, 421, 4xx, 5xx at connect, EHLO,
MAIL, RCPT, DATA, end of data) and slow. Each case asserts: no plaintext
reaches upstream, no 250 for a message upstream did not accept, no key used
twice. Needs root (the mailstack harness); exits 77 (skipped) otherwise."""

import base64
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "smtp"))
sys.path.insert(0, HERE)

import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402
import hostile as H  # noqa: E402
from procutil import Reaper, free_ports, terminate, wait_port  # noqa: E402

ALICE = ("alice@example.org", M.USERS["alice@example.org"])


def secret_message(marker, rcpt="bob@example.org"):
    """The marker is in the body only (the Message-ID travels in the clear:
    it carries the marker reversed, to find the message)."""
    return ("From: alice@example.org\r\nTo: %s\r\nSubject: fault\r\n"
            "Message-ID: <%s@faults.test>\r\n\r\nPlaintext-%s must never reach upstream.\r\n"
            % (rcpt, marker[::-1], marker)).encode()


def key_ids(raw):
    return re.findall(rb"^Key: (\S+) ", raw, re.M)


class KmeProcess:
    """Two simulated KMEs in one `qumail kme` process, outside the proxy, so
    that they can be killed, stopped and restarted on their own."""

    def __init__(self, certs, workdir):
        self.certs = certs
        self.dir = tempfile.mkdtemp(prefix="kme-", dir=workdir)
        self.ports = free_ports(2)
        self.proc = None

    def config(self):
        def kme(kid, peer, port):
            return {"kme_id": kid, "port": port,
                    "tls": {"cert": self.certs[kid][0], "key": self.certs[kid][1],
                            "ca": self.certs["ca"]},
                    "database": os.path.join(self.dir, kid + ".db"),
                    "link": {"port": 0, "peer_kme_id": peer},
                    "key_size": 256, "max_key_size": 65536, "max_key_count": 400000,
                    "max_key_per_request": 1024, "secret_key_rate": 1 << 30}
        return {"kmes": [kme("KME_A", "KME_B", self.ports[0]),
                         kme("KME_B", "KME_A", self.ports[1])]}

    def start(self):
        path = os.path.join(self.dir, "kme.json")
        with open(path, "w") as f:
            json.dump(self.config(), f)
        self.log = open(os.path.join(self.dir, "kme.log"), "ab")
        self.proc = subprocess.Popen([P.QUMAIL, "kme", "--config", path],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        self.reaper = Reaper()
        self.reaper.watch(pid=self.proc.pid, session=self.proc.pid)
        for p in self.ports:
            wait_port(p, 20, None, proc=self.proc, what="qumail kme")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait()
        self.log.close()
        self.reaper.close()

    def stop(self):
        if self.proc:
            terminate(self.proc, 15)
        try:
            self.log.close()
            self.reaper.close()
        except (OSError, AttributeError):
            pass


class Faults(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        H.raise_fd_limit()
        cls.work = tempfile.mkdtemp(prefix="faults-")
        cls.certs = P.make_certs(cls.work)
        cls.ms = M.MailStack(tls=cls.certs["localhost"])
        cls.ms.start()

    @classmethod
    def tearDownClass(cls):
        cls.ms.stop()

    def assert_nowhere(self, marker):
        """The plaintext marker is in no stored message of any user."""
        for user in M.USERS:
            for raw in self.ms.mailbox_files(user):
                self.assertNotIn(marker.encode(), raw, "plaintext stored for %s" % user)

    # -- kill -9 of the proxy ----------------------------------------------------------

    def test_01_kill9_during_data(self):
        with P.ProxyStack(self.certs, self.ms.submission_port, workdir=self.work,
                          listeners=("plain",)) as px:
            queued = set(self.ms.accepted_queue_ids())
            marker = "k9data%d" % time.time_ns()
            s = H.connect(px.ports["plain"])
            H.read_reply(s)
            H.command(s, b"EHLO faults.example")
            cred = base64.b64encode(b"\0" + ALICE[0].encode() + b"\0" + ALICE[1].encode())
            self.assertTrue(H.command(s, b"AUTH PLAIN " + cred)[0].startswith(b"235"))
            H.command(s, b"MAIL FROM:<alice@example.org>")
            H.command(s, b"RCPT TO:<bob@example.org>")
            self.assertTrue(H.command(s, b"DATA")[0].startswith(b"354"))
            msg = secret_message(marker)
            s.sendall(msg[:len(msg) // 2])
            time.sleep(0.3)
            os.killpg(px.proc.pid, signal.SIGKILL)
            t, got = H.wait_closed(s, 10)
            s.close()
            self.assertIsNotNone(t)
            self.assertNotIn(b"250", got)
            time.sleep(1)
            self.assertEqual(set(self.ms.accepted_queue_ids()), queued)
            self.assert_nowhere(marker)

    def test_02_kill9_during_upstream_relay(self):
        # smtp-sink waits 5 s before answering DATA: the proxy is killed
        # while the relay is under way.
        with M.SinkServer(extra_args=["-w", "5"]) as sink, \
                P.ProxyStack(self.certs, sink.port, workdir=self.work, mode="gateway",
                             listeners=("plain",), trusted_networks=["127.0.0.0/8"]) as px:
            marker = "k9relay%d" % time.time_ns()
            s = H.connect(px.ports["plain"])
            H.read_reply(s)
            H.command(s, b"EHLO faults.example")
            H.command(s, b"MAIL FROM:<alice@example.org>")
            H.command(s, b"RCPT TO:<bob@example.org>")
            self.assertTrue(H.command(s, b"DATA")[0].startswith(b"354"))
            s.sendall(secret_message(marker) + b".\r\n")
            time.sleep(1.5)
            os.killpg(px.proc.pid, signal.SIGKILL)
            t, got = H.wait_closed(s, 10)
            s.close()
            self.assertNotIn(b"250", got)
            time.sleep(5)
            for m in sink.messages():
                self.assertNotIn(marker.encode(), m["raw"])

    # -- the KME killed, hung and restarted ----------------------------------------------

    def test_03_kme_killed_hung_restarted(self):
        kme = KmeProcess(self.certs, self.work)
        kme.start()
        try:
            with P.ProxyStack(self.certs, self.ms.submission_port, workdir=self.work,
                              listeners=("plain",),
                              kme_url="https://127.0.0.1:%d" % kme.ports[0],
                              kme_timeout="3s") as px:
                px.kme_ports = kme.ports
                px.wait_key_material()
                stored = []

                def send_ok(tag):
                    marker = "%s%d" % (tag, time.time_ns())
                    msg = secret_message(marker)
                    M.smtp_send(px.host, px.ports["plain"], ALICE[0], ["bob@example.org"],
                                msg, login=ALICE)
                    mid = b"<" + marker[::-1].encode() + b"@faults.test>"
                    [raw] = self.ms.wait_for_delivery("bob@example.org", 1, timeout=30,
                                                      match=lambda r: mid in r)
                    self.assertNotIn(marker.encode(), raw)
                    self.assertIn(marker.encode(), px.decrypt(raw))
                    stored.append(raw)

                def send_refused(tag):
                    queued = set(self.ms.accepted_queue_ids())
                    marker = "%s%d" % (tag, time.time_ns())
                    t0 = time.time()
                    with self.assertRaises(smtplib.SMTPDataError) as cm:
                        M.smtp_send(px.host, px.ports["plain"], ALICE[0],
                                    ["bob@example.org"], secret_message(marker), login=ALICE)
                    self.assertTrue(400 <= cm.exception.smtp_code < 500, cm.exception)
                    self.assertEqual(set(self.ms.accepted_queue_ids()), queued)
                    self.assert_nowhere(marker)
                    return time.time() - t0

                send_ok("before")
                kme.kill(signal.SIGSTOP)            # hung: accepts, never answers
                t_hung = send_refused("hung")
                self.assertLess(t_hung, 30)
                os.kill(kme.proc.pid, signal.SIGCONT)
                send_ok("resumed")
                kme.kill(signal.SIGKILL)            # gone
                send_refused("killed")
                kme.start()                         # back, same databases
                px.wait_key_material()
                send_ok("restarted")
                ids = [k for raw in stored for k in key_ids(raw)]
                self.assertTrue(ids)
                self.assertEqual(len(ids), len(set(ids)), "a key used twice")
                H_figures.append(("kme_hung_refused_after_s", t_hung))
        finally:
            kme.stop()

    # -- upstream failing at every step ---------------------------------------------------

    def test_04_upstream_faults_at_every_step(self):
        steps = ["CONNECT", "EHLO", "MAIL", "RCPT", "DATA", "."]
        faults = [("disconnect", {}), ("disconnect_421", {}), ("soft_reject", {}),
                  ("hard_reject", {})]
        with M.SinkServer() as first, \
                P.ProxyStack(self.certs, first.port, workdir=self.work, mode="gateway",
                             listeners=("plain",), trusted_networks=["127.0.0.0/8"]) as px:
            for step in steps:
                for fault, kw in faults:
                    with self.subTest(step=step, fault=fault), \
                            M.SinkServer(**{fault: [step]}) as sink:
                        px.rewrite_config(lambda c: c["smtp"]["upstream"].__setitem__(
                            "port", sink.port))
                        self.assertIn("reload", px.sighup())
                        marker = "up%s%s%d" % (fault, step.strip("."), time.time_ns())
                        accepted = False
                        try:
                            refused = M.smtp_send(px.host, px.ports["plain"], ALICE[0],
                                                  ["bob@example.org"], secret_message(marker),
                                                  timeout=60)
                            accepted = not refused
                        except (smtplib.SMTPException, OSError):
                            pass
                        mid = marker[::-1].encode()
                        got = [m for m in sink.messages() if mid in m["raw"]]
                        if accepted:
                            # e.g. EHLO refused: the proxy falls back to HELO
                            # and upstream takes the message - then it has it.
                            self.assertTrue(got, "250 although upstream has no message")
                        for m in sink.messages():
                            self.assertNotIn(marker.encode(), m["raw"])
                            if mid in m["raw"]:
                                self.assertIn(b"multipart/encrypted", m["raw"])
            # Slow upstream (DATA answered after 3 s): served, encrypted.
            with M.SinkServer(extra_args=["-w", "3"]) as sink:
                px.rewrite_config(lambda c: c["smtp"]["upstream"].__setitem__("port", sink.port))
                px.sighup()
                marker = "slow%d" % time.time_ns()
                M.smtp_send(px.host, px.ports["plain"], ALICE[0], ["bob@example.org"],
                            secret_message(marker), timeout=60)
                [m] = sink.wait_for_messages(1)
                self.assertNotIn(marker.encode(), m["raw"])
                self.assertIn(b"multipart/encrypted", m["raw"])
            self.assertEqual(px.stop(), 0)


H_figures = []

if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipped: the mailstack harness needs root")
        sys.exit(77)
    unittest.main(verbosity=2)
