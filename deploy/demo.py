#!/usr/bin/env python3
"""QuMail Gateway on embedded defaults: the whole product on one machine.

Starts, all on 127.0.0.1:
  - a real mail server: Postfix (submission with AUTH) delivering into
    Dovecot (IMAP), with their own config folders;
  - `qumail proxy` in front of it, with the embedded KME simulator (two KMEs,
    KME_A for the sender, KME_B for the receiver, joined by a simulated QKD
    link, ETSI GS QKD 014 over mutual TLS);
then sends a message through the proxy, shows what the mail server stored
(encrypted: key IDs in headers, no plaintext), and decrypts it as the
receiver does (`qumail mime decrypt --kme`: dec_keys at KME_B).

Without --once it keeps running so a mail client can be pointed at the
proxy, on fixed ports (the same every run, so a client configured once
keeps working):

    SMTP  127.0.0.1:10587  the proxy, plain (loopback)
    SMTP  127.0.0.1:10588  the proxy, STARTTLS (certificate from the demo CA)
    IMAP  127.0.0.1:10143  Dovecot, forwarded (mail as stored: encrypted)

and a CA that persists between runs in /var/lib/qumail-demo/certs (trust
its ca.pem once). Ctrl-C stops everything; every temporary folder is
removed (--once also uses a temporary CA). Needs root (Postfix and
Dovecot). Mail client settings: docs/clients/README.md.

    python3 deploy/demo.py [--once] [--build DIR]
"""

import argparse
import email
import email.policy
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e", "smtp"))

DEMO_POLICY = """\
# Demo policy (syntax: policy/README.md). Most specific match wins.
# bob gets one-time-pad protection (OTP + one-time Poly1305 MAC);
# the rest of example.org gets AES-256-GCM with a 256-bit QKD key.
bob@example.org   action=require level=otp link=site slave_sae=SAE_B placeholder="[quantum-protected]"
example.org       action=require level=aes link=site slave_sae=SAE_B
*                 action=none
# The reading side (bob's IMAP through the proxy): mail from anyone is
# decrypted with keys of the "recv" link (bob's SAE at KME_B).
sender *          link=recv master_sae=SAE_A
"""

DEMO_MESSAGE = (
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.org>\r\n"
    "Subject: Quarterly numbers (confidential)\r\n"
    "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    "Message-ID: <demo-1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Bob,\r\n"
    "\r\n"
    "the numbers are in: revenue up 12 %, costs down 3 %.\r\n"
    "Keep this between us until Friday.\r\n"
    "\r\n"
    "Alice\r\n"
)


# The serving mode's fixed ports (docs/clients/README.md lists them too).
DEMO_SMTP_PLAIN = 10587
DEMO_SMTP_STARTTLS = 10588
DEMO_IMAP = 10143
DEMO_STATE = "/var/lib/qumail-demo"


def say(text=""):
    print(text, flush=True)


def demo_proxy_class(ProxyStack):
    """The SMTP proxy of the e2e harness plus the IMAP side: bob's mail
    client reads through it, protected mail decrypted with keys from
    KME_B (link "recv", SAE_B), kept in the key vault under state_dir."""

    class DemoProxy(ProxyStack):
        def __init__(self, *a, imap_upstream_port, imap_port=0, **kw):
            self.imap_upstream_port = imap_upstream_port
            self.imap_port = imap_port
            super().__init__(*a, **kw)

        def config(self):
            cfg = super().config()
            if not self.imap_port:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    self.imap_port = s.getsockname()[1]
            cfg["imap"] = {
                "listeners": [{"name": "imap", "address": "127.0.0.1",
                               "port": self.imap_port, "tls": "none"}],
                "upstream": {"host": "127.0.0.1", "port": self.imap_upstream_port,
                             "tls": "none"}}
            cert, key = self.certs["SAE_B"]
            cfg["kme_links"]["recv"] = {
                "url": "https://127.0.0.1:%d" % self.kme_ports[1], "cert_file": cert,
                "key_file": key, "ca_file": self.certs["ca"], "timeout": "30s"}
            return cfg

    return DemoProxy


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true",
                    help="send the demo message, check it, stop (for tests)")
    ap.add_argument("--build", default=os.environ.get("QUMAIL_BUILD",
                                                       os.path.join(SRC, "build")))
    args = ap.parse_args()

    qumail = os.environ.get("QUMAIL_BIN", os.path.join(args.build, "qumail"))
    if not os.access(qumail, os.X_OK):
        sys.exit("demo: %s not found; build first (sh deploy/run.sh does)" % qumail)
    os.environ["QUMAIL_BIN"] = qumail
    os.environ.setdefault("QUMAIL_BUILD", os.path.dirname(qumail))
    if os.geteuid() != 0:
        sys.exit("demo: run as root (it starts its own Postfix and Dovecot)")

    from mailstack import MailStack  # noqa: E402  (after sys.path is set)
    from proxystack import ProxyStack, make_certs  # noqa: E402

    work = tempfile.mkdtemp(prefix="qumail-demo-")
    try:
        return run(args, qumail, work, MailStack, ProxyStack, make_certs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, qumail, work, MailStack, ProxyStack, make_certs):
    os.chmod(work, 0o755)
    if args.once:
        certs = make_certs(work)          # temporary CA, removed with work
        fixed = {}
    else:
        os.makedirs(DEMO_STATE, mode=0o755, exist_ok=True)
        certs = make_certs(DEMO_STATE)    # the same CA every run
        fixed = {"plain": DEMO_SMTP_PLAIN, "starttls": DEMO_SMTP_STARTTLS}
        for port in (DEMO_SMTP_PLAIN, DEMO_SMTP_STARTTLS, DEMO_IMAP):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    sys.exit("demo: port %d is in use (another demo running?)" % port)
    say("QuMail Gateway demo (work folder %s, removed at the end)" % work)
    say("starting Postfix + Dovecot on loopback ...")
    with MailStack() as ms:
        say("  Postfix submission 127.0.0.1:%d, Dovecot IMAP 127.0.0.1:%d"
            % (ms.submission_port, ms.imap_port))
        say("starting qumail proxy with the embedded KME simulator ...")
        DemoProxy = demo_proxy_class(ProxyStack)
        with DemoProxy(certs, upstream_port=ms.submission_port, policy=DEMO_POLICY,
                       listeners=("plain", "starttls"), workdir=work,
                       fixed_ports=fixed, imap_upstream_port=ms.imap_port,
                       imap_port=0 if args.once else DEMO_IMAP) as px:
            say("  proxy SMTP 127.0.0.1:%d (plain) and 127.0.0.1:%d (STARTTLS)"
                % (px.ports["plain"], px.ports["starttls"]))
            say("  proxy IMAP 127.0.0.1:%d (to Dovecot; protected mail decrypted)"
                % px.imap_port)
            say("  KME_A https://127.0.0.1:%d, KME_B https://127.0.0.1:%d (mutual TLS)"
                % tuple(px.kme_ports))
            ok = demo_round_trip(ms, px, qumail, certs)
            if args.once:
                return 0 if ok else 1
            say()
            say("Running. Point a mail client at the proxy (docs/clients/README.md):")
            say("  SMTP 127.0.0.1:%d (plain) or :%d (STARTTLS, trust the CA %s)"
                % (px.ports["plain"], px.ports["starttls"], certs["ca"]))
            say("  login alice@example.org / password %r (checked by Postfix)"
                % ms.users["alice@example.org"])
            say("  IMAP 127.0.0.1:%d (through the proxy: bob@example.org / %r reads "
                "protected mail decrypted)" % (px.imap_port, ms.users["bob@example.org"]))
            say("Ctrl-C stops everything.")
            try:
                while px.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                say("\nstopping")
            finally:
                pass
    return 0


def demo_round_trip(ms, px, qumail, certs):
    say()
    say("1. alice@example.org submits a message for bob@example.org through the proxy")
    with smtplib.SMTP("127.0.0.1", px.ports["plain"], timeout=60) as s:
        s.ehlo("demo.localhost")
        s.login("alice@example.org", ms.users["alice@example.org"])
        s.sendmail("alice@example.org", ["bob@example.org"], DEMO_MESSAGE.encode())
    say("   accepted (250) only after Postfix accepted the encrypted copy")

    stored = ms.wait_for_delivery("bob@example.org", 1, timeout=60)[0]
    stripped = ms.wait_for_delivery("bob@example.org", 1, timeout=60, strip=True)[0]
    say()
    say("2. what the mail server stored (headers, then the start of the body):")
    head, _, body = stored.replace(b"\r\n", b"\n").partition(b"\n\n")
    for line in head.decode(errors="replace").splitlines():
        if line.split(":")[0] in ("Subject", "Content-Type", "X-QKD-Key-ID",
                                  "X-QKD-Algorithm", "From", "To"):
            say("   " + line)
    say("   ... %d bytes of body; plaintext present: %s"
        % (len(body), b"revenue up" in stored or b"Quarterly" in stored))

    say()
    say("3. the receiver decrypts with keys from its own KME (dec_keys at KME_B):")
    cert, key = certs["SAE_B"]
    stored_path = os.path.join(px.dir, "stored.eml")
    with open(stored_path, "wb") as f:
        f.write(stripped)
    r = subprocess.run([qumail, "mime", "decrypt", "--kme",
                        "https://127.0.0.1:%d" % px.kme_ports[1],
                        "--cert", cert, "--key", key, "--ca", certs["ca"], stored_path],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if r.returncode != 0:
        say("   decrypt failed: %s" % r.stderr.decode(errors="replace").strip())
        return False
    msg = email.message_from_bytes(r.stdout, policy=email.policy.default)
    say("   Subject: %s" % msg["Subject"])
    for line in msg.get_content().splitlines()[:4]:
        say("   | " + line)
    # The proxy, like any MTA, prepends its Received: trace field before
    # encrypting; everything after it is alice's message byte for byte.
    plain = r.stdout
    if plain.startswith(b"Received: "):
        end = plain.find(b"\r\nFrom: ")
        plain = plain[end + 2:] if end >= 0 else plain
    same = plain == DEMO_MESSAGE.encode()
    say("   byte-identical to what alice sent (after the proxy's Received: line): %s" % same)
    leaked = b"revenue up" in stored or b"Quarterly numbers" in stored

    say()
    say("4. bob reads his INBOX through the proxy's IMAP side (as a mail client does):")
    import imaplib
    c = imaplib.IMAP4("127.0.0.1", px.imap_port, timeout=60)
    try:
        c.login("bob@example.org", ms.users["bob@example.org"])
        c.select("INBOX", readonly=True)
        _, data = c.fetch("1", "(ENVELOPE BODY.PEEK[])")
        fetched = data[0][1]
        envelope = data[0][0].decode(errors="replace")
    finally:
        c.logout()
    read_ok = fetched.endswith(DEMO_MESSAGE.encode()) and b"revenue up" in fetched
    say("   ENVELOPE subject: %s" % ("Quarterly numbers (confidential)" in envelope))
    say("   the message as alice wrote it, below the delivery trace fields: %s" % read_ok)
    ok = same and not leaked and read_ok
    say()
    say("demo %s" % ("OK" if ok else "FAILED"))
    return ok


if __name__ == "__main__":
    sys.exit(main())
