#!/usr/bin/env python3
"""qumail proxy with its admin listener, as an operator uses it: curl for
/healthz, /readyz, /status, /metrics (read with prometheus_client's
parser) and the autoconfig document, after real messages through the
proxy into Postfix; SIGHUP in the middle of a client's transaction (the
message still goes through) and SIGTERM with a client connected (exit 0,
the client is disconnected); /readyz 503 naming the KME link when the KME
is unreachable. Needs root (the mail stack)."""

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "smtp"))
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

import checks  # noqa: E402
from checks import check  # noqa: E402
import mailstack as M  # noqa: E402
import proxystack as P  # noqa: E402



class AdminProxy(P.ProxyStack):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.admin_port = M.free_ports(1)[0]

    def config(self):
        cfg = super().config()
        cfg["admin"] = {"port": self.admin_port}
        return cfg

    def get(self, path):
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}",
                            "http://127.0.0.1:%d%s" % (self.admin_port, path)],
                           capture_output=True, text=True, timeout=30)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def metrics(self):
        code, body = self.get("/metrics")
        out = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def metric(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0)


def wait_ready(px, want=200, timeout=40):
    deadline = time.time() + timeout
    code, body = 0, ""
    while time.time() < deadline:
        code, body = px.get("/readyz")
        if code == want:
            return code, body
        time.sleep(0.5)
    return code, body


MSG = ("From: alice@example.org\r\nTo: bob@example.org\r\nCc: erin@sub.example.org\r\n"
       "Subject: ops test\r\nMessage-ID: <ops-1@example.org>\r\n\r\nhello ops\r\n")


def main():
    if os.geteuid() != 0:
        print("needs root: skipped")
        return 77
    work = tempfile.mkdtemp(prefix="qumail-ops-")
    certs = P.make_certs(work)
    with M.MailStack() as ms:
        login = ("alice@example.org", ms.users["alice@example.org"])
        with AdminProxy(certs, upstream_port=ms.submission_port, listeners=("plain",),
                        workdir=work) as px:
            code, body = px.get("/healthz")
            check(code == 200 and body.strip() == "ok", "/healthz 200")
            code, body = wait_ready(px)
            check(code == 200, "/readyz 200: listeners, KME link, upstream", body)
            code, body = px.get("/status")
            st = json.loads(body)
            check(st["kme_links"]["site"]["SAE_B"]["reachable"] is True and
                  st["upstreams"]["smtp"]["reachable"] is True and
                  st["listeners"][0]["port"] == px.ports["plain"],
                  "/status: link, upstream and listener", body)

            # two messages: one protected + plain copy, one refused recipient
            with smtplib.SMTP("127.0.0.1", px.ports["plain"], timeout=60) as s:
                s.login(*login)
                s.mail("alice@example.org")
                s.rcpt("bob@example.org")
                s.rcpt("erin@sub.example.org")
                code, text = s.data(MSG.encode())
                check(code == 250 and b"protected" not in text,
                      "two copies (one plain): 250 without 'protected' (%r)" % text)
                code, text = s.rcpt("x@refused.example.net") if s.mail("alice@example.org") else (0, b"")
                check(code == 550, "policy refusal at RCPT (%s)" % code)
                s.rset()
            ms.wait_for_delivery("bob@example.org", 1, timeout=60)
            log = px.log_text()
            check(re.search(r"info: msg [0-9A-F]+: from=<alice@example\.org> session=\S+ "
                            r"client=127\.0\.0\.1:\d+ auth=yes user=alice@example\.org "
                            r"message-id=<ops-1@example\.org> "
                            r"rcpts=2 .* queued_as=[0-9A-Z]+,[0-9A-Z]+ delivered=2/2 outcome=250",
                            log), "message line: session, client, auth, user, Message-ID, upstream "
                  "queue ids", log[-2000:])
            check(re.search(r"msg [0-9A-F]+: to=<bob@example\.org>, copy=\d \(otp, link=site\), "
                            r"status=sent", log) and
                  re.search(r"msg [0-9A-F]+: to=<erin@sub\.example\.org>, copy=\d \(none\), "
                            r"status=sent", log), "per-recipient lines with copy and status")
            m = px.metrics()
            check(metric(m, "qumail_smtp_messages_total", outcome="protected", reason="") == 1,
                  "metrics: one message protected")
            check(metric(m, "qumail_smtp_copies_total", level="otp") == 1 and
                  metric(m, "qumail_smtp_copies_total", level="none") == 1,
                  "metrics: copies by level (otp, none)")
            check(metric(m, "qumail_smtp_recipients_refused_total", reason="policy") == 1,
                  "metrics: recipient refused by policy")
            check(metric(m, "qumail_kme_key_bits_total", link="site") > 0, "metrics: key bits")
            check(metric(m, "qumail_kme_request_seconds_count", link="site", call="enc_keys") >= 1,
                  "metrics: enc_keys latency histogram")
            check(metric(m, "qumail_connections_total", protocol="smtp", outcome="accepted") >= 1,
                  "metrics: connections")
            check(metric(m, "qumail_kme_link_up", link="site", slave_sae="SAE_B") == 1,
                  "metrics: link up")

            code, body = px.get("/mail/config-v1.1.xml?emailaddress=alice@example.org")
            root = ET.fromstring(body)
            out = root.find("emailProvider/outgoingServer")
            check(code == 200 and out is not None and
                  int(out.findtext("port")) == px.ports["plain"] and
                  out.findtext("socketType") == "plain" and
                  out.findtext("authentication") == "password-cleartext",
                  "autoconfig announces the proxy's bound SMTP listener", body)

            # SIGHUP in the middle of a transaction: the message still goes
            s = smtplib.SMTP("127.0.0.1", px.ports["plain"], timeout=60)
            s.login(*login)
            s.mail("alice@example.org")
            line = px.sighup()
            check("applied" in line, "SIGHUP: reload applied (%s)" % line.strip())
            s.rcpt("bob@example.org")
            code, _ = s.data(MSG.replace("ops-1", "ops-2").encode())
            check(code == 250, "the transaction open during SIGHUP completes (%s)" % code)
            s.quit()
            m = px.metrics()
            check(metric(m, "qumail_reloads_total", outcome="applied") == 1, "metrics: reload")
            # a refused reload: every error on a line of its own
            with open(os.path.join(px.dir, "policy"), "w") as f:
                f.write("example.org action=sometimes\nexample.net level=purple\n")
            line = px.sighup()
            log = px.log_text()
            check("refused" in line and
                  " qumail-proxy error:   " in log and "policy:2: level" in log,
                  "refused reload: each error on its own (indented) line",
                  log[-1500:])
            with open(os.path.join(px.dir, "policy"), "w") as f:
                f.write(P.DEFAULT_POLICY)
            px.sighup()
            m = px.metrics()
            check(metric(m, "qumail_reloads_total", outcome="refused") == 1,
                  "metrics: refused reload")

            # SIGTERM drains: an idle client is disconnected at once, a
            # client in the middle of a transaction finishes it, new
            # connections are refused, then the process exits 0
            idle = socket.create_connection(("127.0.0.1", px.ports["plain"]), timeout=30)
            idle.recv(512)
            idle.sendall(b"EHLO ops\r\n")
            reply = b""
            while not re.search(rb"(^|\r\n)250 [^\r\n]*\r\n$", reply):
                chunk = idle.recv(4096)
                if not chunk:
                    break
                reply += chunk
            busy = smtplib.SMTP("127.0.0.1", px.ports["plain"], timeout=60)
            busy.login(*login)
            busy.mail("alice@example.org")
            t0 = time.time()
            px.proc.send_signal(signal.SIGTERM)
            try:
                rest = idle.recv(512)
            except OSError:
                rest = b""
            check(rest == b"" or rest.startswith(b"421"),
                  "SIGTERM: the idle client is disconnected at once (%r)" % rest)
            idle.close()
            time.sleep(0.3)
            try:
                socket.create_connection(("127.0.0.1", px.ports["plain"]), timeout=5).close()
                refused = False
            except OSError:
                refused = True
            check(refused, "SIGTERM: no new connections")
            check(px.proc.poll() is None, "SIGTERM: still running while a transaction is open")
            code, _ = busy.rcpt("bob@example.org")
            code, _ = busy.data(MSG.replace("ops-1", "ops-3").encode())
            check(code == 250, "SIGTERM: the open transaction completes (%s)" % code)
            try:
                busy.quit()
            except (smtplib.SMTPException, OSError):
                pass
            try:
                status = px.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                status = None
            check(status == 0, "SIGTERM: exit 0 once drained (%s) in %.1f s"
                  % (status, time.time() - t0))
            check("SIGTERM: no new connections; 1 session finishing" in px.log_text() and
                  "drain: every session finished" in px.log_text(), "drain logged")
            px.stop()

        # the KME unreachable: not ready, and the reason names the link
        dead = M.free_ports(1)[0]
        with AdminProxy(certs, upstream_port=ms.submission_port, listeners=("plain",),
                        workdir=work, kme_url="https://127.0.0.1:%d" % dead,
                        kme_timeout="3s") as px:
            code, body = wait_ready(px, want=503)
            code, body = px.get("/readyz")
            check(code == 503 and "kme link 'site', slave SAE 'SAE_B'" in body,
                  "/readyz 503 names the unreachable KME link", body)
            check("kme link 'site': status for slave SAE 'SAE_B' failed" in px.log_text(),
                  "start-up probe warned in the log")
            with smtplib.SMTP("127.0.0.1", px.ports["plain"], timeout=60) as s:
                s.login(*login)
                try:
                    s.sendmail("alice@example.org", ["bob@example.org"], MSG.encode())
                    code = 250
                except smtplib.SMTPDataError as e:
                    code = e.smtp_code
            check(code == 451, "KME down: 451 (%s)" % code)
            log = px.log_text()
            check(re.search(r"warn: msg [0-9A-F]+: from=<alice@example\.org> .*outcome=451 4\.7\.5",
                            log) and
                  re.search(r"warn: msg [0-9A-F]+: to=<bob@example\.org>, copy=1 \(otp, "
                            r"link=site\), status=deferred", log),
                  "a deferral is logged at warning, per recipient", log[-1500:])
            m = px.metrics()
            check(metric(m, "qumail_smtp_messages_total", outcome="deferred", reason="keys") == 1
                  and metric(m, "qumail_kme_errors_total", link="site") >= 1,
                  "metrics: deferred for keys, KME errors")
    print(checks.counts())
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
