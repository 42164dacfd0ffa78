"""`qumail proxy` for the SMTP e2e tests and the proxy benchmark.

    certs = make_certs(workdir)                  # local CA, KME_A/B, SAE_A/B, localhost
    with ProxyStack(certs, upstream_port=ms.submission_port) as px:
        smtp_send(px.host, px.ports["plain"], ...)

The proxy runs with the embedded KME simulator (KME_A for the sender side,
KME_B for the receiver side), one KME link "site" (SAE_A -> KME_A) and a
policy file. KME requests time out after kme_timeout, 30 s by default (an
ASan build of the simulator on a loaded machine can take seconds per
enc_keys); tests that point at a dead KME pass a short one. decrypt(raw)
decrypts a stored message as the receiver does (tests/e2e/smtp/qkd_decrypt.c:
dec_keys from KME_B with SAE_B's certificate). Every process is killed on stop(), at exit and on SIGTERM
(through the mailstack harness' registry). Python 3 standard library only.
"""

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

from procutil import (HOST, Reaper, free_ports, register, terminate,  # noqa: E402
                      unregister, wait_port)
from testcerts import make_certs  # noqa: E402,F401 (the callers' P.make_certs)

SRC = os.environ.get("QUMAIL_SRC", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
BUILD = os.environ.get("QUMAIL_BUILD", os.path.join(SRC, "build"))
QUMAIL = os.environ.get("QUMAIL_BIN", os.path.join(BUILD, "qumail"))
DECRYPT = os.path.join(os.path.dirname(QUMAIL), "qkd_decrypt")

DEFAULT_POLICY = """\
# test policy: example.org one-time pad, example.net AES, sub.example.org plain
bob@example.org       action=require level=otp link=site slave_sae=SAE_B subject=protect placeholder=[protected]
example.org           action=require level=aes link=site slave_sae=SAE_B subject=protect
example.net           action=require level=aes link=site slave_sae=SAE_B subject=protect
sub.example.org       action=none
refused.example.net   action=refuse
*                     action=none
"""


class ProxyStack:
    def __init__(self, certs, upstream_port, upstream_tls="none", mode="submission",
                 policy=DEFAULT_POLICY, listeners=("plain", "starttls", "implicit"),
                 kme_url=None, trace_header=True, limits=None, log_level="info",
                 trusted_networks=None, upstream_client_cert=False, workdir=None,
                 kme_timeout="30s", upstream_server_name="localhost", fixed_ports=None):
        self.certs = certs
        self.upstream_port = upstream_port
        self.upstream_tls = upstream_tls
        self.mode = mode
        self.policy = policy
        self.listener_kinds = listeners
        self.kme_url = kme_url
        self.trace_header = trace_header
        self.limits = limits or {}
        self.log_level = log_level
        self.trusted_networks = trusted_networks
        self.upstream_client_cert = upstream_client_cert
        self.kme_timeout = kme_timeout
        self.upstream_server_name = upstream_server_name
        # {listener kind: port} to use instead of free ports (the demo's
        # documented ports); the others are still picked free.
        self.fixed_ports = fixed_ports or {}
        self.host = HOST
        self.ports = {}
        self.proc = None
        self._plain = {}
        self.dir = tempfile.mkdtemp(prefix="qumail-proxy-", dir=workdir)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def config(self):
        lh_cert, lh_key = self.certs["localhost"]
        ports = free_ports(len(self.listener_kinds) + 2)
        listeners = []
        for kind, port in zip(self.listener_kinds, ports):
            port = self.fixed_ports.get(kind, port)
            entry = {"name": kind, "address": HOST, "port": port,
                     "tls": {"plain": "none", "starttls": "starttls",
                             "implicit": "implicit"}[kind]}
            if kind != "plain":
                entry["cert_file"] = lh_cert
                entry["key_file"] = lh_key
            listeners.append(entry)
            self.ports[kind] = port
        self.kme_ports = ports[-2:]
        upstream = {"host": HOST, "port": self.upstream_port, "tls": self.upstream_tls,
                    "ca_file": self.certs["ca"], "server_name": self.upstream_server_name,
                    "timeout": "30s"}
        if self.upstream_client_cert:
            upstream["client_cert_file"], upstream["client_key_file"] = self.certs["SAE_A"]
        smtp = {"mode": self.mode, "hostname": "qumail.localhost", "listeners": listeners,
                "upstream": upstream, "trace_header": self.trace_header,
                "limits": dict({"max_message_size": "64M"}, **self.limits)}
        if self.trusted_networks is not None:
            smtp["trusted_networks"] = self.trusted_networks
        sae_cert, sae_key = self.certs["SAE_A"]
        kme_url = self.kme_url or "https://127.0.0.1:%d" % self.kme_ports[0]
        cfg = {
            "log_level": self.log_level,
            "state_dir": self.dir,
            "smtp": smtp,
            "kme_links": {"site": {"url": kme_url, "cert_file": sae_cert, "key_file": sae_key,
                                   "ca_file": self.certs["ca"], "timeout": self.kme_timeout}},
            "kme_simulator": {
                "enabled": self.kme_url is None,
                "a": {"kme_id": "KME_A", "port": self.kme_ports[0],
                      "cert_file": self.certs["KME_A"][0], "key_file": self.certs["KME_A"][1]},
                "b": {"kme_id": "KME_B", "port": self.kme_ports[1],
                      "cert_file": self.certs["KME_B"][0], "key_file": self.certs["KME_B"][1]},
                "ca_file": self.certs["ca"],
                "state_path": os.path.join(self.dir, "kme.sqlite"),
                "key_rate": 1 << 30,
                "max_key_count": 400000,
                "key_size": 256,
                "max_key_size": 65536,
                "max_keys_per_request": 1024,
            },
            "policy_file": os.path.join(self.dir, "policy"),
        }
        return cfg

    def start(self):
        cfg = self.config()
        with open(os.path.join(self.dir, "policy"), "w") as f:
            f.write(self.policy)
        self.config_path = os.path.join(self.dir, "qumail.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.log_path = os.path.join(self.dir, "proxy.log")
        register(self)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s" % os.path.join(SRC, "tests", "lsan.supp"))
        try:
            self.proc = subprocess.Popen([QUMAIL, "proxy", "--config", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=env)
        finally:
            log.close()
        # Kills the proxy even if this test process is SIGKILLed.
        self._reaper = Reaper()
        self._reaper.tell("dir " + self.dir)
        self._reaper.watch(pid=self.proc.pid, session=self.proc.pid)
        try:
            for kind, port in self.ports.items():
                wait_port(port, 20, None, proc=self.proc, what="qumail proxy")
            if self.kme_url is None:
                wait_port(self.kme_ports[0], 20, None, proc=self.proc, what="KME simulator")
                wait_port(self.kme_ports[1], 20, None, proc=self.proc, what="KME simulator")
                # keys flow once the two simulated KMEs linked up
                deadline = time.time() + 20
                while time.time() < deadline:
                    log = self.log_text()
                    if ("KME_A: link to KME_B up" in log and "KME_B: link to KME_A up" in log):
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError("the simulated KMEs did not link up")
                self.wait_key_material()
        except BaseException:
            sys.stderr.write(self.log_text()[-4000:])
            self.stop()
            raise
        return self

    def kme_status(self):
        """ETSI 014 status of KME_A for SAE_A -> SAE_B (as the proxy's link)."""
        ctx = ssl.create_default_context(cafile=self.certs["ca"])
        ctx.load_cert_chain(*self.certs["SAE_A"])
        conn = http.client.HTTPSConnection("127.0.0.1", self.kme_ports[0], context=ctx,
                                           timeout=10)
        try:
            conn.request("GET", "/api/v1/keys/SAE_B/status")
            r = conn.getresponse()
            return json.loads(r.read() or b"{}") if r.status == 200 else {}
        finally:
            conn.close()

    def wait_key_material(self, keys=64, timeout=30):
        """Waits until the simulated link delivered (and the peer
        acknowledged) some key material."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.kme_status().get("stored_key_count", 0) >= keys:
                    return
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise RuntimeError("the simulated KME has no key material after %d s" % timeout)

    def log_text(self):
        if getattr(self, "_log", None) is not None:
            return self._log
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def sighup(self, timeout=15):
        """SIGHUP, then wait for the proxy to log the reload's outcome;
        returns that log line."""
        def reload_lines():
            return [l for l in self.log_text().splitlines() if ": reload: " in l]
        before = len(reload_lines())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = reload_lines()
            if len(lines) > before:
                return lines[-1]
            time.sleep(0.05)
        raise RuntimeError("no reload logged after SIGHUP")

    def reload(self, policy):
        with open(os.path.join(self.dir, "policy"), "w") as f:
            f.write(policy)
        return self.sighup()

    def rewrite_config(self, change):
        """change(cfg dict) edits the configuration file in place."""
        with open(self.config_path) as f:
            cfg = json.load(f)
        change(cfg)
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)

    def stop(self):
        """SIGTERM and wait; returns the exit status (sanitizer reports make
        it non-zero)."""
        status = terminate(self.proc, 15, group=True) if self.proc else None
        if getattr(self, "_reaper", None) is not None:
            self._reaper.close()   # clean stop: it removes nothing, kills nothing
            self._reaper = None
        if os.environ.get("MAILSTACK_KEEP") != "1" and os.path.isdir(self.dir):
            self._log = self.log_text()
            shutil.rmtree(self.dir, ignore_errors=True)
        unregister(self)
        return status

    def decrypt(self, raw):
        """Decrypts a stored message as the receiver (SAE_B at KME_B). ETSI
        014 hands a key out once, so results are kept by key ID list (the
        receiver's key vault does the same in the product)."""
        ids = tuple(re.findall(rb"^Key: (\S+) ", raw, re.M))
        if ids and ids in self._plain:
            return self._plain[ids]
        cert, key = self.certs["SAE_B"]
        r = subprocess.run([DECRYPT, "https://127.0.0.1:%d" % self.kme_ports[1], cert, key,
                            self.certs["ca"]], input=raw, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("qkd_decrypt failed: %s" % r.stderr.decode(errors="replace"))
        if ids:
            self._plain[ids] = r.stdout
        return r.stdout


def stop_clean(px, *others):
    """Stops the proxy, then `others` (the MailStack...), and fails
    (AssertionError, the proxy log's tail on stderr) when the proxy exited
    non-zero or a sanitizer reported: the tearDownClass of a suite."""
    status = px.stop()
    log = px.log_text()
    for o in others:
        o.stop()
    if status != 0 or "Sanitizer" in log or "runtime error" in log:
        sys.stderr.write(log[-6000:])
        raise AssertionError("proxy exit status %r or sanitizer report" % status)
