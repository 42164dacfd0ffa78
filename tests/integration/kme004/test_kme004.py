#!/usr/bin/env python3
"""Integration tests of the KME simulator's ETSI GS QKD 004 server.

Real `qumail kme` processes on 127.0.0.1, mutual TLS, driven by e4wire.py
(an independent client of the framing in kme/ETSI004.md). Covers every
primitive and every status code 0..8 where the spec defines it:
  - OPEN_CONNECT with a NULL KSID (assigned, status 1 until the peer
    application opens) and a predefined KSID (blocks up to Timeout for the
    peer; 0 when it comes), QoS chosen by the KME for zero fields, the
    counter-proposal (7) for every hard field, reattach, KSID in use (5);
  - GET_KEY by index and KME-chosen index at both ends (same bytes, each
    index exactly once per end: 2 the second time), Key_chunk_size 1 and
    4096, metadata application/json (age, hops), none when the mimetype is
    empty or the size 0, status 8 with the size needed and no key lost,
    peer not connected (3), insufficient key (2), no QKD connection (4),
    timeout (6);
  - CLOSE, TTL (chunks erased, dangling streams removed);
  - 004 and 014 never hand out the same key material;
  - hostile input: failed handshakes, unknown service types, oversized
    lengths, partial frames, any version bytes, pipelined frames;
  - two organisations: one KME per process, streams opened from two
    separate processes; kill -9 of either KME mid-stream loses no delivered
    index and never repeats one; SIGSTOP of the owner gives status 6.

Environment: QUMAIL_BIN, QUMAIL_SRC. Every process started is killed at
exit (by its id); the whole run has a deadline.
"""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e4wire import (Conn, NEXT, NULL_KSID, STATUS, frame, ksid_text, qos,  # noqa: E402
                    GET_REQ, CLOSE_REQ, OPEN_REQ)

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
DEADLINE = time.time() + 420
TMP = tempfile.mkdtemp(prefix="kme004-it-")
PROCS = []
FAILURES = []
CHECKS = [0]


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
    if not FAILURES and os.environ.get("KEEP_TMP") is None:
        shutil.rmtree(TMP, ignore_errors=True)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))


def check(cond, what):
    CHECKS[0] += 1
    if time.time() > DEADLINE:
        print("FAIL: deadline exceeded")
        sys.exit(1)
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)
    return cond


def eq(got, want, what):
    return check(got == want, "%s: got %r, want %r" % (what, got, want))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CERTS = os.path.join(TMP, "certs")
subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", CERTS,
                "-k", "kme-a", "-k", "kme-b", "-s", "sae-a", "-s", "sae-b",
                "-s", "sae-c"], check=True, stdout=subprocess.DEVNULL)
CA = os.path.join(CERTS, "ca.pem")


def cert(name):
    return os.path.join(CERTS, name + ".pem"), os.path.join(CERTS, name + ".key")


def kme_cfg(kid, peer, port, link_port, e4_port, peer_link=None, db=None, e4=None,
            **extra):
    c = {
        "kme_id": kid, "port": port,
        "tls": {"cert": CERTS + "/%s.pem" % kid, "key": CERTS + "/%s.key" % kid, "ca": CA},
        "database": os.path.join(TMP, db or kid + ".db"),
        "link": {"port": link_port, "peer_kme_id": peer},
        "secret_key_rate": 4000000, "max_key_count": 20000,
        "sqlite_synchronous": "full",
        "etsi004": dict({"port": e4_port, "handshake_timeout": "1s"}, **(e4 or {})),
    }
    if peer_link is not None:
        c["link"]["peer_host"] = "127.0.0.1"
        c["link"]["peer_port"] = peer_link
    c.update(extra)
    return c


def write_cfg(name, kmes):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        json.dump({"kmes": kmes}, f, indent=1)
    return path


class Kme:
    def __init__(self, name, cfg_path):
        self.name, self.cfg, self.proc = name, cfg_path, None
        self.log = os.path.join(TMP, name + ".log")

    def start(self):
        with open(self.log, "a") as logf:
            self.proc = subprocess.Popen([QUMAIL, "kme", "--config", self.cfg],
                                         stdout=logf, stderr=subprocess.STDOUT)
        PROCS.append(self.proc)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        eq(rc, 0, "%s exits 0 on SIGTERM" % self.name)
        text = open(self.log, errors="replace").read()
        check("AddressSanitizer" not in text and "runtime error" not in text,
              "%s: no sanitizer report in its log" % self.name)


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def conn(port, sae="sae-a"):
    c, k = cert(sae)
    return Conn(port, c, k, CA)


def wait_link(port_a, port_b, timeout=15):
    """Until a stream can be opened at both ends (the link is up)."""
    end = time.time() + timeout
    while time.time() < end:
        a, b = conn(port_a, "sae-a"), conn(port_b, "sae-b")
        st, q, ks = a.open("qkd://probe-a", "qkd://probe-b", qos(timeout=200))
        st2 = b.open("qkd://probe-b", "qkd://probe-a", qos(timeout=200), ks)[0] if st == 1 else -1
        if st2 == 0:
            r = a.get(ks, NEXT)
            a.close_stream(ks)
            b.close_stream(ks)
            a.close()
            b.close()
            if r[0] == 0:
                return True
        a.close()
        b.close()
        time.sleep(0.2)
    return False


def pair(a_port, b_port):
    """A stream opened at both ends: (conn A, conn B, ksid)."""
    a, b = conn(a_port, "sae-a"), conn(b_port, "sae-b")
    st, q, ks = a.open("qkd://sae-a", "qkd://sae-b", qos(timeout=1500))
    eq(st, 1, "pair: NULL KSID open answers 1")
    st, q2, ks2 = b.open("qkd://sae-b", "qkd://sae-a", qos(timeout=1500), ks)
    eq(st, 0, "pair: peer open answers 0")
    return a, b, ks


# ============================================================================
# Part 1: both KMEs in one process
# ============================================================================

P = {n: free_port() for n in ("a", "b", "la", "lb", "ea", "eb")}
demo = Kme("demo", write_cfg("demo.json", [
    kme_cfg("kme-a", "kme-b", P["a"], P["la"], P["ea"],
            e4={"max_chunk_size": 4096, "max_timeout": "10s", "max_ttl": "2d",
                "max_streams": 64}),
    kme_cfg("kme-b", "kme-a", P["b"], P["lb"], P["eb"],
            e4={"max_chunk_size": 4096}),
]))
demo.start()
check(wait_port(P["ea"]) and wait_port(P["eb"]), "004 listeners up")
check(wait_link(P["ea"], P["eb"]), "link up: a probe stream delivers a chunk")
EA, EB = P["ea"], P["eb"]


def t_open_assigned_and_peer():
    a, b = conn(EA, "sae-a"), conn(EB, "sae-b")
    st, q, ks = a.open("qkd://sae-a", "qkd://sae-b",
                       qos(chunk=0, timeout=0, ttl=0, max_bps=0, mime=""))
    eq(st, 1, "NULL KSID: status 1 (peer not connected)")
    check(ks is not None and ks != NULL_KSID, "NULL KSID: a KSID is assigned")
    eq(q["chunk"], 32, "zero chunk size: the KME's default")
    eq(q["timeout"], 5000, "zero timeout: the KME's default")
    eq(q["ttl"], 86400, "zero TTL: the KME's default")
    eq(q["max_bps"], 4000000, "zero Max_bps: the link rate")
    eq(q["mime"], "", "empty mimetype stays empty (no metadata)")
    t0 = time.time()
    st, q2, ks2 = a.open("qkd://sae-a", "qkd://sae-b", qos(timeout=300), ks)
    eq(st, 1, "reattach by the same SAE, peer still away: 1")
    check(time.time() - t0 >= 0.25, "a predefined KSID waits up to Timeout for the peer")
    eq(q2["timeout"], 5000, "reattach returns the registered QoS, not the asked one")
    # The peer joins with a different QoS: it gets the registered one.
    st, qb, ksb = b.open("qkd://sae-b", "qkd://sae-a", qos(chunk=64, timeout=700), ks)
    eq(st, 0, "peer opens the same KSID: 0")
    eq(qb["chunk"], 32, "the joiner gets the registered QoS (chunk)")
    eq(ksb, ks, "the joiner gets the KSID back")
    r = a.get(ks, NEXT, 100)
    eq(r[0], 0, "GET_KEY next at the owner: 0")
    eq(r[3], b"", "no metadata when the mimetype is empty")
    rb = b.get(ks, r[1], 100)
    eq(rb[0], 0, "the peer gets the same index")
    eq(rb[2], r[2], "same bytes at both ends")
    eq(len(r[2]), 32, "Key_chunk_size bytes")
    for c in (a, b):
        eq(c.close_stream(ks), 0, "CLOSE: 0")
        c.close()


def t_predefined_rendezvous():
    ks = os.urandom(16)
    res = {}

    def opener():
        c = conn(EA, "sae-a")
        res["a"] = c.open("qkd://sae-a", "qkd://sae-b", qos(timeout=4000), ks)
        res["a_conn"] = c

    th = threading.Thread(target=opener)
    t0 = time.time()
    th.start()
    time.sleep(0.5)
    b = conn(EB, "sae-b")
    stb = b.open("qkd://sae-b", "qkd://sae-a", qos(timeout=4000), ks)
    th.join(10)
    eq(stb[0], 0, "predefined KSID: the second opener gets 0")
    eq(res["a"][0], 0, "predefined KSID: the first opener, blocked, gets 0 when the peer opens")
    check(time.time() - t0 < 3.5, "the blocked open returns when the peer opens, not at Timeout")
    eq(res["a"][2], ks, "predefined KSID returned as given")
    a = res["a_conn"]
    # Chunks by explicit index, first at the non-owner end, then at the owner.
    r1 = b.get(ks, 7, 0)
    eq(r1[0], 0, "GET_KEY index 7 first at the non-owner end")
    eq(r1[1], 7, "index echoed")
    r2 = a.get(ks, 7, 0)
    eq(r2[2], r1[2], "index 7 same bytes at the owner end")
    r3 = a.get(ks, 3, 0)
    r4 = b.get(ks, 3, 0)
    eq((r3[0], r4[0]), (0, 0), "index 3 at the owner first, then the peer")
    eq(r3[2], r4[2], "index 3 same bytes")
    check(r3[2] != r1[2], "different indices, different bytes")
    eq(a.get(ks, 7)[0], 2, "index 7 a second time at the owner end: 2")
    eq(b.get(ks, 3)[0], 2, "index 3 a second time at the other end: 2")
    # KME-chosen indices from both ends never collide with chosen ones.
    got = set()
    for c, other in ((a, b), (b, a), (a, b)):
        r = c.get(ks, NEXT)
        eq(r[0], 0, "next index: 0")
        check(r[1] not in got and r[1] not in (3, 7), "next index %d is fresh" % r[1])
        got.add(r[1])
        eq(other.get(ks, r[1])[2], r[2], "next index %d same bytes at the other end" % r[1])
    # Another SAE cannot take either end.
    c = conn(EA, "sae-c")
    eq(c.open("qkd://sae-c", "qkd://x", qos(), ks)[0], 5, "another SAE at the owner: 5")
    eq(c.get(ks, 1)[0], 3, "another SAE's GET_KEY: 3 (not its stream)")
    eq(c.close_stream(ks), 5, "another SAE's CLOSE: 5")
    c.close()
    c = conn(EB, "sae-c")
    eq(c.open("qkd://sae-c", "qkd://x", qos(), ks)[0], 5, "another SAE at the peer: 5")
    c.close()
    # A new connection of the same SAE reattaches and reads on.
    a2 = conn(EA, "sae-a")
    eq(a2.open("qkd://sae-a", "qkd://sae-b", qos(), ks)[0], 0, "reattach: 0")
    r = a2.get(ks, 11)
    eq(b.get(ks, 11)[2], r[2], "reattached connection: same bytes")
    a2.close()
    # The owner closes: chunks already allocated stay for the peer; new ones
    # cannot be allocated (peer application not connected).
    r = b.get(ks, 20)
    eq(r[0], 0, "index 20 at the peer before the owner closes")
    r21 = a.get(ks, 21)
    eq(a.close_stream(ks), 0, "owner CLOSE: 0")
    eq(a.close_stream(ks), 0, "CLOSE again: 0")
    eq(a.get(ks, 21)[0], 3, "GET_KEY after CLOSE: 3")
    eq(b.get(ks, 21)[2], r21[2], "a chunk allocated before the close is still delivered to the peer")
    eq(b.get(ks, 30)[0], 3, "a new index after the owner closed: 3")
    eq(b.close_stream(ks), 0, "peer CLOSE: 0")
    eq(a.open("qkd://sae-a", "qkd://sae-b", qos(), ks)[0], 5,
       "a closed stream's KSID is in use (5) until its TTL")
    a.close()
    b.close()


def t_qos():
    a = conn(EA, "sae-a")
    cases = [
        ("chunk above the maximum", qos(chunk=100000), "chunk", 4096),
        ("Min_bps above the link rate", qos(min_bps=10**9), "min_bps", 4000000),
        ("TTL above the maximum", qos(ttl=10**6), "ttl", 2 * 86400),
        ("unsupported mimetype", qos(mime="text/plain"), "mime", "application/json"),
    ]
    for what, q, field, want in cases:
        st, counter, ks = a.open("qkd://sae-a", "qkd://sae-b", q)
        eq(st, 7, "QoS not met (%s): 7" % what)
        check(counter is not None, "a counter-proposal comes with 7 (%s)" % what)
        eq(counter[field], want, "counter-proposal for %s" % what)
        eq(ks, NULL_KSID, "no KSID assigned with 7 (%s)" % what)
        st2, q2, ks2 = a.open("qkd://sae-a", "qkd://sae-b", counter)
        eq(st2, 1, "the counter-proposal is accepted (%s)" % what)
        a.close_stream(ks2)
    # Soft fields: granted within what the KME provides.
    st, q, ks = a.open("qkd://sae-a", "qkd://sae-b",
                       qos(max_bps=10**9, timeout=10**6, jitter=5, priority=9))
    eq(st, 1, "Max_bps and Timeout above the limits are not refused")
    eq((q["max_bps"], q["timeout"], q["jitter"], q["priority"]),
       (4000000, 10000, 5, 9), "Max_bps and Timeout brought down, Jitter and Priority kept")
    a.close_stream(ks)
    # A predefined KSID opened first at the non-owner is negotiated by the owner.
    b = conn(EB, "sae-b")
    st, counter, ks = b.open("qkd://sae-b", "qkd://sae-a", qos(chunk=100000), os.urandom(16))
    eq(st, 7, "QoS not met at the non-owner end: 7")
    eq(counter["chunk"], 4096, "the owner's counter-proposal")
    a.close()
    b.close()


def t_chunk_sizes_and_metadata():
    for size in (1, 4096):
        a, b = conn(EA, "sae-a"), conn(EB, "sae-b")
        st, q, ks = a.open("qkd://sae-a", "qkd://sae-b", qos(chunk=size, timeout=2000))
        b.open("qkd://sae-b", "qkd://sae-a", qos(), ks)
        r = a.get(ks, NEXT, 64)
        eq(len(r[2] or b""), size, "Key_chunk_size %d: that many bytes" % size)
        eq(b.get(ks, r[1], 64)[2], r[2], "Key_chunk_size %d: same bytes" % size)
        a.close_stream(ks)
        b.close_stream(ks)
        a.close()
        b.close()
    a, b, ks = pair(EA, EB)
    r = a.get(ks, 0, 64)
    md = json.loads(r[3])
    check(set(md) == {"age", "hops"} and md["hops"] == 0 and 0 <= md["age"] < 5000,
          "metadata is application/json with age and hops: %r" % r[3])
    rb = b.get(ks, 1, 4)
    eq(rb[0], 8, "metadata buffer too small: 8")
    check(rb[3] is not None and rb[3] >= 18, "status 8 returns the size needed (%r)" % rb[3])
    rb2 = b.get(ks, 1, rb[3])
    eq(rb2[0], 0, "retry with the size returned: 0")
    eq(a.get(ks, 1)[2], rb2[2], "no key lost by the status 8")
    eq(b.get(ks, 2, 0)[3], b"", "Metadata_size 0: no metadata")
    rn = b.get(ks, NEXT, 10)
    eq(rn[0], 8, "KME-chosen index with a short buffer: 8 before any index is chosen")
    r2 = b.get(ks, NEXT, rn[3])
    eq(r2[0], 0, "then the retry succeeds")
    eq(r2[1], 3, "and no index was skipped")
    a.close_stream(ks)
    b.close_stream(ks)
    a.close()
    b.close()


def t_unknown_and_close():
    a = conn(EA, "sae-a")
    unknown = os.urandom(16)
    eq(a.get(unknown, 0)[0], 3, "GET_KEY on an unknown KSID: 3")
    eq(a.close_stream(unknown), 3, "CLOSE of an unknown KSID: 3")
    a.close()


def t_pipelined_and_versions():
    a, b, ks = pair(EA, EB)
    # Three GET_KEY frames in one write: three answers in order.
    a.send(b"".join(frame(GET_REQ, ks + struct.pack(">II", i, 0)) for i in (40, 41, 42)))
    idx = []
    for _ in range(3):
        svc, p = a.read_frame()
        idx.append(struct.unpack(">I", p[4:8])[0])
    eq(idx, [40, 41, 42], "pipelined requests answered in order")
    # Other version bytes are accepted.
    a.send(frame(GET_REQ, ks + struct.pack(">II", 43, 0), version=b"\x00\x00\x01"))
    svc, p = a.read_frame()
    eq(struct.unpack(">I", p[:4])[0], 0, "any version bytes are accepted")
    a.close()
    b.close()


def raw_tls(port, sae="sae-a"):
    c, k = cert(sae)
    ctx = ssl.create_default_context(cafile=CA)
    ctx.load_cert_chain(c, k)
    ctx.check_hostname = False
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    return s


def closed_by_peer(s, timeout=5):
    s.settimeout(timeout)
    try:
        return s.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True
    except socket.timeout:
        return False


def t_hostile():
    # A TCP client that never starts TLS, and one that sends garbage.
    idle = socket.create_connection(("127.0.0.1", EA))
    junk = socket.create_connection(("127.0.0.1", EA))
    junk.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
    check(closed_by_peer(junk), "garbage instead of a TLS handshake: closed")
    check(closed_by_peer(idle, 4), "a handshake that never starts: closed at its deadline")
    # No client certificate: refused in the handshake.
    ctx = ssl.create_default_context(cafile=CA)
    ctx.check_hostname = False
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", EA), timeout=5))
        s.sendall(frame(CLOSE_REQ, NULL_KSID))
        ok = closed_by_peer(s)
    except (ssl.SSLError, ConnectionResetError, OSError):
        ok = True
    check(ok, "no client certificate: refused")
    # Unknown service types (a response type, 0x06, 0x00): closed, no hang.
    for svc in (0x03, 0x06, 0x00, 0xff):
        s = raw_tls(EA)
        s.sendall(bytes([2, 1, 1, svc]) + struct.pack(">I", 4) + b"\0\0\0\0")
        check(closed_by_peer(s), "service type 0x%02x: connection closed" % svc)
    # Oversized length: refused as soon as the header is in.
    s = raw_tls(EA)
    s.sendall(bytes([2, 1, 1, 2]) + struct.pack(">I", 0x7fffffff))
    check(closed_by_peer(s), "length 2^31-1: closed at once")
    # A malformed payload (GET_KEY of 23 bytes).
    s = raw_tls(EA)
    s.sendall(frame(GET_REQ, b"\0" * 23))
    check(closed_by_peer(s), "malformed GET_KEY payload: closed")
    # A partial frame that never completes: closed at the frame deadline.
    s = raw_tls(EA)
    s.sendall(bytes([2, 1, 1, 4]) + struct.pack(">I", 24) + b"\0" * 10)
    check(closed_by_peer(s, 5), "a frame that never completes: closed at its deadline")
    # An OPEN_CONNECT whose URI has a control character.
    s = raw_tls(EA)
    s.sendall(frame(OPEN_REQ, b"a\x01b\0d\0" + b"\0" * 284 + b"\0" * 16))
    check(closed_by_peer(s), "control character in a URI: closed")
    # After all that, service goes on.
    a, b, ks = pair(EA, EB)
    r = a.get(ks, NEXT)
    eq(r[0], 0, "the server still serves after hostile clients")
    a.close()
    b.close()


def t_ttl():
    a, b = conn(EA, "sae-a"), conn(EB, "sae-b")
    st, q, ks = a.open("qkd://sae-a", "qkd://sae-b", qos(ttl=1, timeout=500))
    eq(q["ttl"], 1, "TTL 1 s granted")
    b.open("qkd://sae-b", "qkd://sae-a", qos(), ks)
    r = a.get(ks, NEXT)
    eq(r[0], 0, "a chunk of a 1 s TTL stream")
    time.sleep(2.6)
    eq(b.get(ks, r[1])[0], 2, "after its TTL the chunk is erased at the peer: 2")
    # A stream whose peer never opens is removed after its TTL.
    st, q, ks2 = a.open("qkd://sae-a", "qkd://nobody", qos(ttl=1))
    eq(st, 1, "dangling stream opened")
    time.sleep(2.6)
    eq(a.close_stream(ks2), 3, "a dangling stream is gone after its TTL (CLOSE: 3)")
    a.close()
    b.close()


def t_max_streams():
    a = conn(EA, "sae-a")
    opened, status = [], 0
    for _ in range(80):
        st, q, ks = a.open("qkd://sae-a", "qkd://many", qos(ttl=60))
        if st != 1:
            status = st
            break
        opened.append(ks)
    eq(status, 4, "beyond max_streams: 4 (logged)")
    for ks in opened:
        a.close_stream(ks)
    a.close()


def fetch_014(port, sae, path, body=None):
    c, k = cert(sae)
    ctx = ssl.create_default_context(cafile=CA)
    ctx.load_cert_chain(c, k)
    ctx.check_hostname = False
    h = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    h.request("POST" if body is not None else "GET", path,
              body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = h.getresponse()
    data = r.read()
    h.close()
    return r.status, json.loads(data)


def t_disjoint_from_014():
    import base64
    a, b, ks = pair(EA, EB)
    k004, k014 = [], []
    for i in range(40):
        k004.append(a.get(ks, NEXT)[2])
        st, j = fetch_014(P["a"], "sae-a", "/api/v1/keys/sae-b/enc_keys?number=2&size=256")
        if st == 200:
            k014 += [base64.b64decode(x["key"]) for x in j["keys"]]
    check(len(k014) >= 60 and all(k and len(k) == 32 for k in k004),
          "014 keys and 004 chunks drawn in turn")
    windows = set()
    for k in k014:
        windows.update(k[i:i + 8] for i in range(len(k) - 7))
    shared = sum(1 for k in k004 for i in range(len(k) - 7) if k[i:i + 8] in windows)
    eq(shared, 0, "no 8-byte sequence of a 004 chunk appears in a 014 key")
    a.close_stream(ks)
    b.close_stream(ks)
    a.close()
    b.close()


for t in (t_open_assigned_and_peer, t_predefined_rendezvous, t_qos,
          t_chunk_sizes_and_metadata, t_unknown_and_close, t_pipelined_and_versions,
          t_hostile, t_ttl, t_disjoint_from_014, t_max_streams):
    n0 = len(FAILURES)
    t0 = time.time()
    try:
        t()
    except Exception as ex:  # a protocol surprise fails the test, not the run
        check(False, "%s raised %r" % (t.__name__, ex))
    print("%-32s %s (%.1f s)" % (t.__name__, "ok" if len(FAILURES) == n0 else "FAILED",
                                 time.time() - t0))
demo.stop()

# ============================================================================
# Part 2: two organisations, one KME per process
# ============================================================================

Q = {n: free_port() for n in ("a", "b", "la", "lb", "ea", "eb")}
org_a = Kme("org-a", write_cfg("org-a.json", [
    kme_cfg("kme-a", "kme-b", Q["a"], Q["la"], Q["ea"], peer_link=Q["lb"], db="oa.db")]))
org_b = Kme("org-b", write_cfg("org-b.json", [
    kme_cfg("kme-b", "kme-a", Q["b"], Q["lb"], Q["eb"], peer_link=Q["la"], db="ob.db")]))
org_a.start()
org_b.start()
check(wait_port(Q["ea"]) and wait_port(Q["eb"]), "two organisations: 004 listeners up")
check(wait_link(Q["ea"], Q["eb"]), "two organisations: link up")


# Each organisation's application is a separate process (python -c). The
# sender takes n KME-chosen indices and writes its progress (highest index
# + 1, done flag) to a file; the receiver fetches exactly those indices, as
# a mail receiver fetches the indices a message names. Both reconnect and
# reattach across KME restarts.
HELPER = r'''
import json, os, sys, time
sys.path.insert(0, %r)
from e4wire import *
port, sae, ks, mode, n, progress = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
out = []
c = None
i = 0
top = 0
def connect():
    c = Conn(port, "%s/" + sae + ".pem", "%s/" + sae + ".key", %r, timeout=10)
    st = c.open("qkd://" + sae, "qkd://peer", qos(timeout=3000), ks)[0]
    if st not in (0, 1):
        raise RuntimeError("open %%d" %% st)
    return c
while c is None:
    try:
        c = connect()
    except Exception:
        time.sleep(0.1)
while True:
    if mode == "next" and len(out) >= n:
        break
    if mode == "follow":
        try:
            top, done = map(int, open(progress).read().split())
        except (OSError, ValueError):
            top, done = 0, 0
        if i >= top:
            if done:
                break
            time.sleep(0.02)
            continue
    try:
        if c is None:
            c = connect()
        r = c.get(ks, NEXT if mode == "next" else i, 0)
        if r[0] == 0:
            out.append([r[1], r[2].hex()])
            i += 1
            if mode == "next":
                top = max(top, r[1] + 1)
                open(progress + ".tmp", "w").write("%%d 0" %% top)
                os.rename(progress + ".tmp", progress)
        elif r[0] == 2 and mode == "follow":
            out.append([i, None])  # used here before: its answer was lost
            i += 1
        if mode == "follow":
            open(progress + ".b.tmp", "w").write("%%d 0" %% i)
            os.rename(progress + ".b.tmp", progress + ".b")
        else:
            time.sleep(0.05)
    except Exception as ex:
        if c is not None:
            c.close()
        c = None
        time.sleep(0.1)
if mode == "next":
    open(progress + ".tmp", "w").write("%%d 1" %% top)
    os.rename(progress + ".tmp", progress)
print(json.dumps(out))
''' % (os.path.dirname(os.path.abspath(__file__)), CERTS, CERTS, CA)


def run_pair(ks, n):
    progress = os.path.join(TMP, "progress-" + ks.hex())
    pa = subprocess.Popen([sys.executable, "-c", HELPER, str(Q["ea"]), "sae-a", ks.hex(),
                           "next", str(n), progress], stdout=subprocess.PIPE, text=True)
    pb = subprocess.Popen([sys.executable, "-c", HELPER, str(Q["eb"]), "sae-b", ks.hex(),
                           "follow", str(n), progress], stdout=subprocess.PIPE, text=True)
    PROCS.extend([pa, pb])
    return pa, pb


def t_two_processes():
    check(wait_port(Q["ea"]) and wait_port(Q["eb"]), "both KMEs up")
    ks = os.urandom(16)
    pa, pb = run_pair(ks, 30)
    ra = json.loads(pa.communicate(timeout=60)[0])
    rb = json.loads(pb.communicate(timeout=60)[0])
    da = {i: k for i, k in ra}
    db = {i: k for i, k in rb}
    eq(sorted(da), list(range(30)), "process A (KME-chosen indices) got 0..29")
    eq(da, db, "process B (explicit indices) got the same bytes for each index")


def t_kill9(victim, name, side):
    """Process A takes KME-chosen indices, process B the same indices one by
    one; the victim KME is killed with SIGKILL twice mid-stream and
    restarted. Every index delivered to one end is delivered, with the same
    bytes, to the other; no index is delivered twice at an end; an index
    whose answer was lost in the crash is never handed out again."""
    ks = os.urandom(16)
    n = 200
    pa, pb = run_pair(ks, n)
    progress = os.path.join(TMP, "progress-" + ks.hex()) + side
    for threshold in (n // 4, n // 2):
        top, end = 0, time.time() + 60
        while top < threshold and time.time() < end:
            try:
                top = int(open(progress).read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.01)
        check(0 < top < n, "%s: killed mid-stream (at index %d of %d)" % (name, top, n))
        victim.kill9()
        time.sleep(0.3)
        victim.start()
    ra = json.loads(pa.communicate(timeout=150)[0])
    rb = json.loads(pb.communicate(timeout=150)[0])
    eq(len(ra), n, "%s: A got all %d indices" % (name, n))
    check(wait_port(Q["ea"]) and wait_port(Q["eb"]), "both KMEs up again")
    ia = [i for i, k in ra]
    eq(len(ia), len(set(ia)), "%s: no index delivered twice at the KME-chosen end" % name)
    da = {i: k for i, k in ra}
    db = {i: k for i, k in rb if k is not None}
    lost_b = [i for i, k in rb if k is None]
    both = set(da) & set(db)
    check(all(da[i] == db[i] for i in both), "%s: same bytes at both ends" % name)
    # Every index A got is one B got (or B's own answer for it was lost in
    # the crash: then B sees 2, never other bytes); and B never got an
    # index that A was not given, except the one A lost in flight.
    missing = [i for i in da if i not in db and i not in lost_b]
    eq(missing, [], "%s: every index delivered at A reaches B" % name)
    extra = [i for i in db if i not in da]
    check(len(extra) <= 2, "%s: at most the in-flight indices are A's loss (%r)" % (name, extra))
    check(len(lost_b) <= 2, "%s: at most the in-flight answers are B's loss (%r)" % (name, lost_b))
    print("  %s: A got %d indices, B %d (+%d lost in flight), %d only at B" %
          (name, len(da), len(db), len(lost_b), len(extra)))


def t_timeout_and_no_connection():
    a, b, ks = pair(Q["ea"], Q["eb"])
    # The owner stops answering (SIGSTOP): a chunk the non-owner must ask
    # for times out (6) after the stream's Timeout.
    org_a.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    r = b.get(ks, 500)
    org_a.proc.send_signal(signal.SIGCONT)
    eq(r[0], 6, "the owner does not answer: TIMEOUT (6)")
    check(1.2 < time.time() - t0 < 5, "after the stream's Timeout (1.5 s)")
    # The owner KME down: no QKD connection (4) for what needs it.
    org_a.kill9()
    time.sleep(0.5)
    eq(b.get(ks, 600)[0], 4, "owner KME down: GET_KEY of a new index: 4")
    b2 = conn(Q["eb"], "sae-b")
    eq(b2.open("qkd://sae-b", "qkd://sae-a", qos())[0], 4, "owner KME down: OPEN_CONNECT: 4")
    b2.close()
    b.close()
    a.close()
    org_a.start()
    check(wait_port(Q["ea"]) and wait_link(Q["ea"], Q["eb"]),
          "link back after the owner restarted")


def t_insufficient_key():
    R = {n: free_port() for n in ("a", "b", "la", "lb", "ea", "eb")}
    slow = Kme("slow", write_cfg("slow.json", [
        kme_cfg("kme-a", "kme-b", R["a"], R["la"], R["ea"], db="sa.db",
                secret_key_rate=8000, max_key_count=64, max_key_size=1024,
                e4={"max_chunk_size": 4096}),
        kme_cfg("kme-b", "kme-a", R["b"], R["lb"], R["eb"], db="sb.db",
                secret_key_rate=8000, max_key_count=64, max_key_size=1024)]))
    slow.start()
    check(wait_port(R["ea"]) and wait_port(R["eb"]), "slow link KMEs up")
    time.sleep(1.5)
    a, b = conn(R["ea"], "sae-a"), conn(R["eb"], "sae-b")
    st, q, ks = a.open("qkd://sae-a", "qkd://sae-b", qos(chunk=2048, timeout=400))
    b.open("qkd://sae-b", "qkd://sae-a", qos(), ks)
    statuses = [a.get(ks, NEXT)[0] for _ in range(8)]
    check(0 in statuses and 2 in statuses,
          "a 1 kB/s link cannot give 2 kB chunks that fast: 2 (%r)" % statuses)
    sb = [b.get(ks, 100 + i)[0] for i in range(6)]
    check(2 in sb, "the non-owner end gets 2 from the owner too (%r)" % sb)
    a.close()
    b.close()
    slow.stop()


for t in (t_two_processes, lambda: t_kill9(org_a, "kill -9 of the owner KME", ""),
          lambda: t_kill9(org_b, "kill -9 of the other KME", ".b"), t_timeout_and_no_connection,
          t_insufficient_key):
    n0 = len(FAILURES)
    t0 = time.time()
    try:
        t()
    except Exception as ex:
        check(False, "%s raised %r" % (getattr(t, "__name__", "test"), ex))
    print("%-32s %s (%.1f s)" % (getattr(t, "__name__", "kill9"),
                                 "ok" if len(FAILURES) == n0 else "FAILED", time.time() - t0))
org_a.stop()
org_b.stop()

print("%d checks, %d failed" % (CHECKS[0], len(FAILURES)))
sys.exit(1 if FAILURES else 0)
