"""Hostile clients against `qumail proxy` and its embedded KME, and the
measurements that judge them: the proxy's RSS and open descriptors
(/proc/PID), the reply a hostile client gets, and how long a normal client
takes meanwhile. Used by the short suite (test_hostile.py, in ctest) and by
the longer campaign (campaign.py). Python 3 standard library only; every
connection goes to 127.0.0.1 (attackers) or 127.0.0.2 (the normal client,
so that a per-address limit on the attackers does not hit it)."""

import base64
import os
import resource
import select
import smtplib
import socket
import ssl
import sys
import threading
import time

HOST = "127.0.0.1"
NORMAL_SOURCE = "127.0.0.2"
ALICE = ("alice@example.org", "alice-secret")


def raise_fd_limit(want=65536):
    """Children inherit it: the proxy and the KME need more than 1024
    descriptors for the connection floods."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def small_asan_quarantine():
    """ASan keeps freed memory in quarantine (256 MB by default), which
    would hide whether RSS is bounded; a small one keeps RSS honest."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in opts:
        os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=8"


# ---- measuring the proxy --------------------------------------------------------

class Proc:
    def __init__(self, pid):
        self.pid = pid

    def rss_mb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    # Sockets to these ports are the proxy's own KME client pool and the
    # embedded KME's side of it: a pool that grew under load is no leak.
    exclude_ports = ()

    def _pool_inodes(self):
        if not self.exclude_ports:
            return set()
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        lport = int(parts[1].rsplit(":", 1)[1], 16)
                        rport = int(parts[2].rsplit(":", 1)[1], 16)
                        if lport in self.exclude_ports or rport in self.exclude_ports:
                            inodes.add(parts[9])
            except OSError:
                pass
        return inodes

    def fds(self):
        """Open descriptors, without the KME pool's sockets."""
        pool = self._pool_inodes()
        n = 0
        d = "/proc/%d/fd" % self.pid
        for fd in os.listdir(d):
            if pool:
                try:
                    target = os.readlink(os.path.join(d, fd))
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in pool:
                    continue
            n += 1
        return n

    def wait_fds(self, at_most, timeout):
        """Waits until the proxy holds at most `at_most` descriptors;
        returns the count seen last."""
        deadline = time.time() + timeout
        n = self.fds()
        while n > at_most and time.time() < deadline:
            time.sleep(0.1)
            n = self.fds()
        return n


class Sampler(threading.Thread):
    """Samples the proxy's RSS every 50 ms while an attack runs."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc = proc
        self.peak = proc.rss_mb()
        self.peak_fds = proc.fds()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, self.proc.rss_mb())
                self.peak_fds = max(self.peak_fds, self.proc.fds())
            except OSError:
                return
            self._halt.wait(0.05)

    def stop(self):
        self._halt.set()
        self.join()
        return self.peak


# ---- a normal client ------------------------------------------------------------

def normal_message(tag):
    return ("From: alice@example.org\r\nTo: bob@example.org\r\n"
            "Subject: normal %s\r\nMessage-ID: <%s@hostile.test>\r\n\r\n"
            "A normal message sent during an attack.\r\n" % (tag, tag)).encode()


def normal_send(port, login=ALICE, rcpt="bob@example.org", timeout=60, tag=None):
    """Sends one message the way a mail client does, from 127.0.0.2;
    returns (seconds, reply code of the end of DATA)."""
    tag = tag or "n%d" % time.time_ns()
    t0 = time.time()
    s = smtplib.SMTP(HOST, port, timeout=timeout, source_address=(NORMAL_SOURCE, 0))
    try:
        s.ehlo("normal.client")
        if login:
            s.login(*login)
        s.mail(login[0] if login else "alice@example.org")
        s.rcpt(rcpt)
        code, _ = s.data(normal_message(tag))
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()
    return time.time() - t0, code


class NormalClientLoop(threading.Thread):
    """Sends normal messages back to back during an attack; records the
    time each took (or the error)."""

    def __init__(self, port, login=ALICE, pause=0.2):
        super().__init__(daemon=True)
        self.port, self.login, self.pause = port, login, pause
        self.times, self.errors = [], []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                t, code = normal_send(self.port, self.login)
                if code != 250:
                    self.errors.append("end of DATA answered %d" % code)
                self.times.append(t)
            except (OSError, smtplib.SMTPException) as e:
                self.errors.append(repr(e))
            self._halt.wait(self.pause)

    def stop(self):
        self._halt.set()
        self.join(120)
        return self

    def worst(self):
        return max(self.times) if self.times else None


# ---- raw SMTP -----------------------------------------------------------------------

def connect(port, source=HOST, timeout=10):
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    return s


def read_reply(sock, timeout=10):
    """Reads one complete (possibly multi-line) reply; returns its lines
    (bytes, without CRLF). b"" as the last element means EOF."""
    sock.settimeout(timeout)
    buf = b""
    lines = []
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return lines
        chunk = sock.recv(65536)
        if not chunk:
            lines.append(b"")
            return lines
        buf += chunk


def command(sock, line, timeout=10):
    sock.sendall(line + b"\r\n")
    return read_reply(sock, timeout)


def readable(sock, timeout):
    """poll(2), not select(2): descriptors above 1024 are common here."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLIN)
    return bool(p.poll(timeout * 1000))


def wait_closed(sock, timeout):
    """Reads (and discards) until the peer closes; returns
    (seconds until EOF or reset, bytes read) or (None, bytes) on timeout."""
    t0 = time.time()
    got = b""
    sock.setblocking(False)
    while time.time() - t0 < timeout:
        if not readable(sock, 0.1):
            continue
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        except (ConnectionResetError, OSError):
            return time.time() - t0, got
        if not chunk:
            return time.time() - t0, got
        got += chunk
    return None, got


# ---- attacks --------------------------------------------------------------------------

def flood_unread(port, seconds, login=None):
    """Pipelines NOOP as fast as the proxy takes them and never reads a
    reply. Returns (bytes sent, socket, seconds until the proxy closed it
    or None) - the caller closes the socket."""
    s = connect(port)
    read_reply(s)
    command(s, b"EHLO flood.example")
    if login:
        cred = base64.b64encode(b"\0" + login[0].encode() + b"\0" + login[1].encode())
        command(s, b"AUTH PLAIN " + cred)
    s.setblocking(False)
    chunk = b"NOOP\r\n" * 2000
    sent = 0
    t0 = time.time()
    end = t0 + seconds
    while time.time() < end:
        try:
            sent += s.send(chunk)
        except (ConnectionResetError, BrokenPipeError):
            # The proxy gave up on a client that does not read (its idle
            # timeout, then the bounded close).
            return sent, s, time.time() - t0
        except BlockingIOError:
            p = select.poll()
            p.register(s.fileno(), select.POLLOUT)
            p.poll(50)
    return sent, s, None


def slow_bytes(sock, data, interval, until):
    """Sends data one byte every `interval` seconds until the peer closes or
    `until` seconds passed; returns (seconds until closed or None, reply
    bytes received)."""
    t0 = time.time()
    got = b""
    sock.setblocking(False)
    i = 0
    while time.time() - t0 < until:
        if i < len(data):
            try:
                sock.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.time() - t0, got
            except BlockingIOError:
                pass
            i += 1
        if readable(sock, interval):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, OSError):
                return time.time() - t0, got
            if not chunk:
                return time.time() - t0, got
            got += chunk
    return None, got


# A TLS 1.2 ClientHello record header and the start of its body: enough for
# the server to wait for the rest.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def stalled_handshakes(port, count, payload=PARTIAL_CLIENT_HELLO, source=HOST):
    """Opens `count` connections that send the start of a ClientHello and
    stall. Returns the sockets."""
    socks = []
    for _ in range(count):
        try:
            s = connect(port, source=source)
        except OSError:
            break
        try:
            s.sendall(payload)
        except OSError:
            pass
        socks.append(s)
    return socks


def idle_connections(port, count, source=HOST, read_greeting=False):
    """Opens `count` connections that say nothing. Returns the sockets."""
    socks = []
    for _ in range(count):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((source, 0))
            s.setblocking(False)
            s.connect_ex((HOST, port))
        except OSError:
            break
        socks.append(s)
    if read_greeting:
        pass
    return socks


def count_greeted(socks, timeout):
    """How many of the sockets received a 220 greeting within timeout."""
    pending = {s.fileno(): s for s in socks}
    bufs = {}
    greeted = 0
    refused = 0
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        r = poll_ready(list(pending))
        for fd in r:
            s = pending[fd]
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                pending.pop(fd)
                continue
            bufs[fd] = bufs.get(fd, b"") + chunk
            if not chunk or b"\n" in bufs[fd]:
                pending.pop(fd)
                if bufs[fd].startswith(b"220"):
                    greeted += 1
                elif bufs[fd].startswith(b"421"):
                    refused += 1
        if not r:
            time.sleep(0.01)
    return greeted, refused


def poll_ready(fds):
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    return [fd for fd, _ in p.poll(50)]


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def kme_status_time(certs, port, timeout=10):
    """One ETSI 014 status call as a real SAE (SAE_A) with its certificate;
    returns (seconds, HTTP status)."""
    import http.client
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.load_cert_chain(*certs["SAE_A"])
    t0 = time.time()
    conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/api/v1/keys/SAE_B/status")
        r = conn.getresponse()
        r.read()
        return time.time() - t0, r.status
    finally:
        conn.close()


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class LoadSink:
    """loadsink.py in a subprocess on a free port (killed on stop)."""

    def __init__(self):
        import subprocess
        sys_path = os.path.dirname(os.path.abspath(__file__))
        from procutil import free_ports, register
        self.port = free_ports(1)[0]
        self.proc = subprocess.Popen([sys.executable, os.path.join(sys_path, "loadsink.py"),
                                      str(self.port)], stdout=subprocess.PIPE,
                                     start_new_session=True)
        register(self)
        if self.proc.stdout.readline().strip() != b"ready":
            self.stop()
            raise RuntimeError("loadsink did not start")

    def stop(self):
        from procutil import unregister
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        unregister(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
