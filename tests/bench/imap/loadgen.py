"""Load generators of the IMAP benchmark: N clients FETCHing at once
(processes x threads, a shared start line), and N connections held in
IDLE (one process, epoll). Python 3 standard library only.

The FETCH reader does not parse: it scans lines, skips each literal by its
{N} size, and counts octets and responses, so a client costs little CPU
next to the servers it measures."""

import multiprocessing as mp
import os
import re
import selectors
import socket
import threading
import time

BUF = 1 << 20


def _login(sock, user, password, mailbox):
    f = _Reader(sock)
    f.until(None)  # greeting
    sock.sendall(b"a LOGIN \"%s\" \"%s\"\r\n" % (user.encode(), password.encode()))
    ok = f.until(b"a ")
    if b"a OK" not in ok:
        raise RuntimeError("LOGIN failed: %r" % ok)
    sock.sendall(b"b EXAMINE \"%s\"\r\n" % mailbox.encode())
    ok = f.until(b"b ")
    if b"b OK" not in ok:
        raise RuntimeError("EXAMINE failed: %r" % ok)
    return f


class _Reader:
    """Line scanner over a socket that skips literals."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(BUF)
        self.n = 0      # valid octets in buf
        self.pos = 0
        self.octets = 0
        self.responses = 0
        self.literal_octets = 0

    def _fill(self):
        if self.pos >= self.n:
            self.pos = self.n = 0
        elif self.pos > BUF // 2:
            self.buf[:self.n - self.pos] = self.buf[self.pos:self.n]
            self.n -= self.pos
            self.pos = 0
        if self.n == len(self.buf):
            self.buf.extend(bytearray(len(self.buf)))
        mv = memoryview(self.buf)[self.n:]
        k = self.sock.recv_into(mv)
        mv.release()
        if k == 0:
            raise ConnectionError("server closed the connection")
        self.n += k
        self.octets += k

    def until(self, tag):
        """Read responses until a line starting with `tag` (None: one
        line); returns that line."""
        while True:
            nl = self.buf.find(b"\n", self.pos, self.n)
            if nl < 0:
                self._fill()
                continue
            line = bytes(self.buf[self.pos:nl + 1])
            self.pos = nl + 1
            if line.startswith(b"* "):
                self.responses += 1
            if line.endswith(b"}\r\n"):
                i = line.rfind(b"{")
                skip = int(line[i + 1:-3].rstrip(b"+"))
                self.literal_octets += skip
                while skip:
                    avail = self.n - self.pos
                    if avail == 0:
                        self._fill()
                        continue
                    take = min(avail, skip)
                    self.pos += take
                    skip -= take
                continue
            if tag is None or line.startswith(tag):
                return line


def _fetch_client(host, port, user, password, mailbox, command, start, done, results):
    try:
        sock = socket.create_connection((host, port), timeout=600)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        f = _login(sock, user, password, mailbox)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        start.abort()
        results.put(("error", repr(e)))
        return
    start.wait()
    t0 = time.perf_counter()
    f.responses = f.literal_octets = 0
    sock.sendall(b"c " + command + b"\r\n")
    end = f.until(b"c ")
    t1 = time.perf_counter()
    ok = b"c OK" in end
    results.put(("ok" if ok else "error", (t0, t1, f.responses, f.literal_octets)
                 if ok else repr(end)))
    try:
        done.wait()
    except threading.BrokenBarrierError:
        pass
    try:
        sock.sendall(b"z LOGOUT\r\n")
        sock.close()
    except OSError:
        pass


def _worker(n, args, start, done, results):
    ts = [threading.Thread(target=_fetch_client, args=args + (start, done, results))
          for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run_fetch(host, port, user, password, mailbox, command, clients, sample,
              procs=None):
    """`clients` connections log in and EXAMINE, then all send `command`
    at once. sample() is called when they start and when all are done
    (connections still open: server processes still alive) and its results
    returned. Returns dict(seconds, responses, literal_octets, errors,
    samples)."""
    procs = procs or min(clients, max(1, os.cpu_count() or 1))
    start = mp.Barrier(clients + 1, timeout=300)
    done = mp.Barrier(clients + 1, timeout=900)
    results = mp.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [mp.Process(target=_worker, args=(k, (host, port, user, password, mailbox,
                                                command), start, done, results))
          for k in per if k]
    for p in ps:
        p.start()
    samples = []
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    samples.append(sample())
    rows = [results.get(timeout=900) for _ in range(clients)]
    samples.append(sample())
    try:
        done.wait()
    except threading.BrokenBarrierError:
        pass
    for p in ps:
        p.join(60)
        if p.is_alive():
            p.kill()
    errors = [r[1] for r in rows if r[0] != "ok"]
    oks = [r[1] for r in rows if r[0] == "ok"]
    if not oks:
        return {"seconds": 0, "responses": 0, "literal_octets": 0, "errors": errors,
                "samples": samples}
    t0 = min(r[0] for r in oks)
    t1 = max(r[1] for r in oks)
    return {"seconds": t1 - t0, "responses": sum(r[2] for r in oks),
            "literal_octets": sum(r[3] for r in oks), "errors": errors,
            "samples": samples}


def find_imap_load():
    """The C load generator (target imap_load), or None."""
    cands = [os.environ.get("IMAP_LOAD", "")]
    build = os.environ.get("QUMAIL_BUILD")
    if build:
        cands.append(os.path.join(build, "imap_load"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    return None


def run_fetch_c(exe, host, port, user, password, mailbox, command, clients, sample):
    """As run_fetch, with the C load generator imap_load."""
    import subprocess
    p = subprocess.Popen([exe, host, str(port), user, password, mailbox, str(clients),
                          command.decode()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    samples = []
    try:
        ready = p.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError("imap_load: %r %s" % (ready, p.stderr.read()[-500:]))
        samples.append(sample())
        p.stdin.write("go\n")
        p.stdin.flush()
        done = p.stdout.readline().split()
        samples.append(sample())
        p.stdin.write("quit\n")
        p.stdin.flush()
        p.wait(120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    if not done or done[0] != "DONE":
        return {"seconds": 0, "responses": 0, "literal_octets": 0,
                "errors": ["imap_load: %r %s" % (done, err[-300:])], "samples": samples}
    secs, resp, octets, errors = float(done[1]), int(done[2]), int(done[3]), int(done[4])
    return {"seconds": secs, "responses": resp, "literal_octets": octets,
            "errors": [err[-300:] or "errors"] * errors if errors else [],
            "samples": samples}


class IdleHolder:
    """Open `count` connections, LOGIN, SELECT, IDLE; held until close().
    One process, epoll; .idle is how many reached "+ idling"."""

    def __init__(self, host, port, user, password, mailbox="INBOX"):
        self.addr = (host, port)
        # one command at a time, as mail clients do (a proxy may not take
        # commands pipelined behind LOGIN before its upstream is ready)
        self.steps = [(b"a LOGIN \"%s\" \"%s\"\r\n" % (user.encode(), password.encode()),
                       b"a OK"),
                      (b"b SELECT \"%s\"\r\n" % mailbox.encode(), b"b OK"),
                      (b"c IDLE\r\n", b"+ ")]
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.idle = 0
        self.failed = 0

    def open(self, count, timeout=300, batch=200):
        """Opens in batches (a connect storm would trip listen backlogs)."""
        deadline = time.monotonic() + timeout
        opened = 0
        while opened < count and time.monotonic() < deadline:
            for _ in range(min(batch, count - opened)):
                try:
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(self.addr)
                except OSError:
                    self.failed += 1
                    continue
                self.conns[s] = [b"", "greeting"]
                self.sel.register(s, selectors.EVENT_READ)
                opened += 1
            self._pump(until=lambda: self._pending() < batch // 2, deadline=deadline)
        self._pump(until=lambda: self._pending() == 0, deadline=deadline)
        return self.idle

    def _pending(self):
        return sum(1 for v in self.conns.values() if v[1] not in ("idle", "dead"))

    def _pump(self, until, deadline):
        while not until() and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=1):
                s = key.fileobj
                st = self.conns[s]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._dead(s)
                    continue
                st[0] += data
                if st[1] == "greeting":
                    if b"\r\n" in st[0]:
                        self._step(s, st, 0)
                elif isinstance(st[1], int):
                    want = self.steps[st[1]][1]
                    if b"\n" + want in b"\n" + st[0]:
                        if st[1] + 1 < len(self.steps):
                            self._step(s, st, st[1] + 1)
                        else:
                            st[0] = b""
                            st[1] = "idle"
                            self.idle += 1
                    elif re.search(rb"(?m)^(?:[abc] (?:NO|BAD)|\* BYE)", st[0]):
                        self._dead(s)

    def _step(self, s, st, i):
        st[0] = b""
        st[1] = i
        try:
            s.sendall(self.steps[i][0])
        except OSError:
            self._dead(s)

    def _dead(self, s):
        st = self.conns.get(s)
        if st and st[1] == "idle":
            self.idle -= 1
        if st and st[1] != "dead":
            self.failed += 1
            st[1] = "dead"
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def check_alive(self, n=100, timeout=60):
        """DONE on n idle connections: how many answer the IDLE's OK."""
        sample = [s for s, v in self.conns.items() if v[1] == "idle"][:n]
        for s in sample:
            try:
                s.setblocking(True)
                s.sendall(b"DONE\r\n")
                s.setblocking(False)
                self.conns[s][1] = "done"
            except OSError:
                self._dead(s)
        ok = 0
        deadline = time.monotonic() + timeout
        left = set(sample)
        while left and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=1):
                s = key.fileobj
                if s not in left:
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                self.conns[s][0] += data
                if b"c OK" in self.conns[s][0]:
                    ok += 1
                    left.discard(s)
                elif not data:
                    left.discard(s)
        return ok

    def close(self):
        for s in list(self.conns):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.conns.clear()
        self.sel.close()
