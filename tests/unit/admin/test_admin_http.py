#!/usr/bin/env python3
"""The admin listener over real HTTP: curl for every route, the /metrics
body through prometheus_client's text-format parser, the autoconfig and
Autodiscover documents checked against the elements and values Thunderbird
and Outlook accept, and the limits (header and body size, deadline,
connection count, bad requests). Runs tests/unit/admin/admin_testd.c, the
real module with a real registry.

    test_admin_http.py ADMIN_TESTD"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # Debian's python3-prometheus-client (deploy/install-deps.sh) when the
    # python3 on PATH is not Debian's own (pure Python: any 3.x reads it)
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

TESTD = sys.argv[1]
FAILS = []
PASSES = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    (PASSES if cond else FAILS).append(what)


def curl(port, path, *args):
    """(status, headers text, body bytes) of one request made by curl."""
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-D", "-", *args,
                        "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        return None, r.stderr.decode(), b""
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(), body


class Daemon:
    def __init__(self, *args):
        self.p = subprocess.Popen([TESTD, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("port "), line
        self.port = int(line.split()[1])

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=30)
        return self.p.returncode, err


# --- Thunderbird: the elements and values its account config reader takes
TB_SOCKET = {"plain", "SSL", "STARTTLS"}
TB_AUTH = {"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI",
           "NTLM", "TLS-client-cert", "OAuth2", "none", "client-IP-address"}


def validate_autoconfig(body, domain):
    root = ET.fromstring(body)
    check(root.tag == "clientConfig" and root.get("version") == "1.1",
          "autoconfig: <clientConfig version=1.1>")
    prov = root.find("emailProvider")
    check(prov is not None and prov.get("id") == domain, "autoconfig: emailProvider id=%s" % domain)
    check([d.text for d in prov.findall("domain")] == [domain], "autoconfig: <domain>")
    check(prov.findtext("displayName") and prov.findtext("displayShortName"),
          "autoconfig: display names")
    servers = list(prov)
    kinds = [s.tag for s in servers if s.tag.endswith("Server")]
    # incoming before outgoing, as the reader expects
    check(kinds == sorted(kinds, key=lambda k: k != "incomingServer"),
          "autoconfig: incoming servers first")
    for s in servers:
        if not s.tag.endswith("Server"):
            continue
        want_type = {"incomingServer": {"imap", "pop3"}, "outgoingServer": {"smtp"}}[s.tag]
        check(s.get("type") in want_type, "autoconfig: %s type=%s" % (s.tag, s.get("type")))
        check(bool(s.findtext("hostname")), "autoconfig: hostname")
        port = int(s.findtext("port"))
        check(1 <= port <= 65535, "autoconfig: port %d" % port)
        check(s.findtext("socketType") in TB_SOCKET, "autoconfig: socketType %s" % s.findtext("socketType"))
        auth = s.findtext("authentication")
        check(auth in TB_AUTH, "autoconfig: authentication %s" % auth)
        if auth != "none":
            check(s.findtext("username") == "%EMAILADDRESS%", "autoconfig: username placeholder")
    return root


AD_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
AD_OUT = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def validate_autodiscover(body, address):
    root = ET.fromstring(body)
    check(root.tag == AD_NS + "Autodiscover", "autodiscover: root element and namespace")
    acc = root.find(AD_OUT + "Response/" + AD_OUT + "Account")
    check(acc is not None, "autodiscover: Response/Account in the outlook 2006a schema")
    check(acc.findtext(AD_OUT + "AccountType") == "email", "autodiscover: AccountType email")
    check(acc.findtext(AD_OUT + "Action") == "settings", "autodiscover: Action settings")
    protos = acc.findall(AD_OUT + "Protocol")
    types = [p.findtext(AD_OUT + "Type") for p in protos]
    check("IMAP" in types and "SMTP" in types, "autodiscover: IMAP and SMTP protocols %s" % types)
    for p in protos:
        t = p.findtext(AD_OUT + "Type")
        check(t in {"IMAP", "POP3", "SMTP"}, "autodiscover: Type %s" % t)
        check(bool(p.findtext(AD_OUT + "Server")), "autodiscover: Server")
        check(1 <= int(p.findtext(AD_OUT + "Port")) <= 65535, "autodiscover: Port")
        for flag in ("SPA", "SSL", "AuthRequired", "DomainRequired"):
            check(p.findtext(AD_OUT + flag) in {"on", "off"}, "autodiscover: %s on/off" % flag)
        check(p.findtext(AD_OUT + "Encryption") in {"None", "SSL", "TLS", "Auto"},
              "autodiscover: Encryption value")
        if p.findtext(AD_OUT + "AuthRequired") == "on":
            check(p.findtext(AD_OUT + "LoginName") == address, "autodiscover: LoginName")
    return protos


AD_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{addr}</EMailAddress>
    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILE = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"


def main():
    d = Daemon("3000", "4")
    port = d.port

    # --- health, readiness, status
    st, head, body = curl(port, "/healthz")
    check(st == 200 and body == b"ok\n", "/healthz 200 ok")
    check("Connection: close" in head, "/healthz: Connection: close")
    st, _, body = curl(port, "/readyz")
    check(st == 200 and body == b"ready\n", "/readyz 200 when ready")
    d.p.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    st, _, body = curl(port, "/readyz")
    check(st == 503 and b"kme link 'site': unreachable" in body and
          b"listener 'submission'" in body, "/readyz 503 with the reasons")
    d.p.send_signal(signal.SIGUSR1)
    st, head, body = curl(port, "/status")
    check(st == 200 and "application/json" in head, "/status is JSON")
    j = json.loads(body)
    check(j["kme_links"]["site"] == 42, "/status body from the hook")

    # --- metrics through the reference parser
    st, head, body = curl(port, "/metrics")
    check(st == 200 and "text/plain; version=0.0.4" in head, "/metrics content type 0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    check(fams["qumail_smtp_messages"].type == "counter", "parser: counter family")
    vals = {(s.labels["outcome"], s.labels["level"]): s.value
            for s in fams["qumail_smtp_messages"].samples if s.name.endswith("_total")}
    check(vals == {("protected", "aes"): 3, ("refused", "none"): 1}, "parser: counter values %s" % vals)
    check(fams["qumail_sessions"].samples[0].value == 2, "parser: gauge value")
    h = fams["qumail_kme_request_seconds"]
    check(h.type == "histogram", "parser: histogram family")
    buckets = {s.labels["le"]: s.value for s in h.samples if s.name.endswith("_bucket")}
    check(buckets["0.001"] == 0 and buckets["0.005"] == 1 and buckets["0.25"] == 2 and
          buckets["30"] == 2 and buckets["+Inf"] == 3, "parser: cumulative buckets %s" % buckets)
    cnt = [s.value for s in h.samples if s.name.endswith("_count")]
    check(cnt == [3], "parser: histogram count")
    odd = fams["qumail_test_odd_labels"].samples[0].labels["v"]
    check(odd == 'quote" backslash\\ newline\n end', "parser: escaped label value round-trips")
    check("\\" in fams["qumail_test_odd_labels"].documentation, "parser: escaped HELP")
    d.p.send_signal(signal.SIGUSR2)
    time.sleep(0.3)
    _, _, body = curl(port, "/metrics")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    v = [s.value for s in fams["qumail_smtp_messages"].samples
         if s.labels.get("level") == "otp" and s.name.endswith("_total")]
    check(v == [1], "metrics: a live update is visible")
    req = {(s.labels["path"], s.labels["code"]): s.value
           for s in fams["qumail_admin_requests"].samples if s.name.endswith("_total")}
    check(req.get(("/healthz", "200")) == 1 and req.get(("/readyz", "503")) == 1,
          "metrics: the admin listener counts its own requests %s" % req)
    st, head, body = curl(port, "/metrics", "--head", "-o", "/dev/null")
    check(st == 200 and "Content-Length: " in head and "\r\n\r\n" not in head.strip(),
          "HEAD /metrics: headers only")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        check(data.endswith(b"\r\n\r\n") and b"Content-Length: 3" in data,
              "HEAD: no body after the headers")

    # --- Thunderbird autoconfig, three URLs
    for path in ("/mail/config-v1.1.xml?emailaddress=alice%40example.org",
                 "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice@example.org",
                 "/v1.1/example.org"):
        st, head, body = curl(port, path)
        check(st == 200 and "xml" in head, "GET %s 200 xml" % path)
        if st == 200:
            root = validate_autoconfig(body, "example.org")
            socks = [s.findtext("socketType") for s in root.iter() if s.tag.endswith("Server")]
            check(socks == ["STARTTLS", "STARTTLS", "SSL"], "autoconfig: socket types %s" % socks)
    st, _, body = curl(port, "/mail/config-v1.1.xml")
    check(st == 200 and b"<domain>example.org</domain>" in body, "autoconfig: default domain")
    st, _, _ = curl(port, "/mail/config-v1.1.xml?emailaddress=%3Cscript%3E@example.org")
    check(st == 400, "autoconfig: an unacceptable address is refused")
    st, _, _ = curl(port, "/mail/config-v1.1.xml?emailaddress=%zz")
    check(st == 400, "autoconfig: bad percent-encoding is refused")

    # --- Outlook Autodiscover
    req_body = AD_REQUEST.format(addr="bob@example.org", schema=OUTLOOK)
    st, head, body = curl(port, "/autodiscover/autodiscover.xml", "-X", "POST",
                          "-H", "Content-Type: text/xml", "--data-binary", req_body)
    check(st == 200 and "xml" in head, "POST autodiscover 200")
    if st == 200:
        validate_autodiscover(body, "bob@example.org")
    st, _, body = curl(port, "/Autodiscover/Autodiscover.xml", "-X", "POST",
                       "--data-binary", AD_REQUEST.format(addr="bob@example.org", schema=MOBILE))
    check(st == 200 and b"<ErrorCode>601</ErrorCode>" in body, "autodiscover: other schema -> 601")
    st, _, _ = curl(port, "/autodiscover/autodiscover.xml", "-X", "POST",
                    "--data-binary", "<x/>")
    check(st == 400, "autodiscover: no address -> 400")
    st, head, _ = curl(port, "/autodiscover/autodiscover.xml")
    check(st == 405 and "Allow:" in head, "GET autodiscover -> 405 with Allow")

    # --- errors and limits
    st, _, _ = curl(port, "/nope")
    check(st == 404, "unknown path -> 404")
    st, _, _ = curl(port, "/healthz", "-X", "DELETE")
    check(st == 405, "DELETE /healthz -> 405")
    st, _, _ = curl(port, "/healthz", "-H", "X-Big: " + "a" * 9000)
    check(st == 431, "header fields over 8 KiB -> 431")
    st, _, _ = curl(port, "/" + "a" * 9000)
    check(st in (414, 431), "request target over 8 KiB -> %s" % st)
    st, _, _ = curl(port, "/autodiscover/autodiscover.xml", "-X", "POST",
                    "--data-binary", "x" * 20000)
    check(st == 413, "body over 16 KiB -> 413 (from Content-Length)")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        s.settimeout(10)
        check(s.recv(100).startswith(b"HTTP/1.1 400"), "garbage -> 400")
    # chunked body over the limit: refused while reading
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
        try:
            s.sendall(chunk + chunk)
        except OSError:
            pass
        s.settimeout(10)
        check(s.recv(100).startswith(b"HTTP/1.1 413"), "chunked body over 16 KiB -> 413")
    # a client that trickles (or stalls) gets 408 at the deadline (3 s here)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        s.settimeout(30)
        check(s.recv(100).startswith(b"HTTP/1.1 408"), "stalled request -> 408 at the deadline")
    # connection limit (4): the fifth is closed at once; others still served
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    time.sleep(0.5)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        check(data == b"", "connection over the limit closed without an answer")
    for s in held:
        s.close()
    time.sleep(0.5)
    st, _, _ = curl(port, "/healthz")
    check(st == 200, "served again once connections closed")

    rc, err = d.stop()
    check(rc == 0, "admin_testd exits 0 with no handle left (status %s)" % rc)
    check("access 127.0.0.1:" in err and " GET /healthz 200 3" in err, "access hook called")
    if rc != 0:
        print(err[-3000:])
    print("%d passed, %d failed" % (len(PASSES), len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
