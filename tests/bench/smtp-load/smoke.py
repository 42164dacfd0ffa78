#!/usr/bin/env python3
"""Smoke test of smtp_load (ctest label bench-smoke, ~10 s): complete
messages of the requested size reach a real Postfix and Dovecot; counts,
duration mode and error accounting against smtp-sink's fault options."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "e2e", "lib"))

import bench  # noqa: E402
import mailstack as M  # noqa: E402


class SmtpLoadSmoke(unittest.TestCase):

    def test_messages_reach_dovecot_intact(self):
        with M.MailStack() as ms:
            res = bench.run_load(ms.host, ms.smtp_port, 4, 20000, count=20,
                                 to=("bob@example.org", "carol@example.net"))
            self.assertEqual((res["accepted"], res["failed"], res["errors"]), (20, 0, 0))
            self.assertEqual(res["size"], 20000)
            for user in ("bob@example.org", "carol@example.net"):
                stored = ms.wait_for_delivery(user, 20, strip=True)
                self.assertEqual(len(stored), 20)
                ids = set()
                for m in stored:
                    self.assertEqual(len(m), 20000)
                    self.assertTrue(m.startswith(b"Message-ID: <"), m[:80])
                    self.assertIn(b"\r\nTo: <bob@example.org>, <carol@example.net>\r\n", m)
                    ids.add(m[:60])
                self.assertEqual(len(ids), 20, "Message-IDs must be unique")
            lat = res["latency_ms"]
            self.assertTrue(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"])

    def test_duration_mode(self):
        with M.SinkServer(capture=False) as sink:
            t = time.monotonic()
            res = bench.run_load(sink.host, sink.port, 3, 1024, seconds=1.0)
            took = time.monotonic() - t
        self.assertGreater(res["accepted"], 10)
        self.assertEqual(res["errors"], 0)
        self.assertLess(took, 10)
        self.assertGreater(res["seconds"], 0.9)

    def test_refused_recipients_are_counted(self):
        with M.SinkServer(hard_reject=["RCPT"], capture=False) as sink:
            res = bench.run_load(sink.host, sink.port, 2, 1024, count=10)
        self.assertEqual((res["accepted"], res["failed"]), (0, 10))
        self.assertEqual(res["errors_by_kind"]["rcpt"], 10)
        self.assertIn("500 5.3.0", res["first_error"])

    def test_refused_data_is_counted(self):
        with M.SinkServer(soft_reject=["."], capture=False) as sink:
            res = bench.run_load(sink.host, sink.port, 2, 1024, count=10)
        self.assertEqual((res["accepted"], res["failed"]), (0, 10))
        self.assertEqual(res["errors_by_kind"]["body"], 10)

    def test_dropped_connections_are_counted(self):
        with M.SinkServer(disconnect=["DATA"], capture=False) as sink:
            res = bench.run_load(sink.host, sink.port, 2, 1024, count=6)
        self.assertEqual((res["accepted"], res["failed"]), (0, 6))
        self.assertEqual(res["errors_by_kind"]["io"], 6)

    def test_every_message_is_accounted_for(self):
        # 421 on RSET: the message claimed before RSET fails, the connection
        # is re-opened, and accepted + failed is still the count.
        with M.SinkServer(disconnect_421=["RSET"], capture=False) as sink:
            res = bench.run_load(sink.host, sink.port, 3, 1024, count=20)
        self.assertEqual(res["accepted"] + res["failed"], 20)
        self.assertGreater(res["accepted"], 0)
        self.assertEqual(res["errors_by_kind"]["rset"], res["failed"])


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("bench_smtp_load_smoke: skipped: needs root")
        sys.exit(77)
    unittest.main(verbosity=2)
