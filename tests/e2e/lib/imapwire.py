"""A byte-exact IMAP client for tests: what the server sent, as it sent it.

    c = RawImap.connect("127.0.0.1", port, tls="implicit", ca=ca_file)
    c.login("alice@example.org", "alice-secret")
    untagged, tagged = c.command(b"UID FETCH 1:* (RFC822.SIZE BODY.PEEK[])")
    for resp in untagged:                 # each one raw response, literals inline
        item = parse_response(resp)       # Response(kind, number, name, value, raw)
        fetch_items(item)                 # [(name, raw_value_bytes, value), ...]

imaplib hides literal sizes and joins data; the oracle and the benchmark
need the raw bytes (a wrong `{N}` is exactly the bug to catch), so this
module reads responses itself: a line, and when it ends with `{N}` (or
`~{N}`), N bytes more, repeated until a line ends without a literal.
parse_response() turns one raw response into nested values keeping, for
every FETCH item, the exact bytes of its value. Python 3 standard library.
"""

import re
import socket
import ssl

__all__ = ["RawImap", "ImapError", "Literal", "Atom", "parse_response",
           "fetch_items", "quote", "literal_plus", "Response",
           "LITERAL_RE"]

LITERAL_RE = re.compile(rb"~?\{(\d+)(\+|-)?\}\r\n$")
MAX_LINE = 1 << 20


class ImapError(RuntimeError):
    pass


def quote(s):
    """An IMAP quoted string of s (str or bytes), or a literal if needed."""
    if isinstance(s, str):
        s = s.encode()
    if b"\r" in s or b"\n" in s or b"\0" in s or any(c > 0x7f for c in s):
        return literal_plus(s)
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal_plus(data):
    """A non-synchronizing literal (RFC 7888 LITERAL+)."""
    return b"{%d+}\r\n" % len(data) + data


class RawImap:
    """One connection. Not thread-safe; one command at a time unless the
    caller pipelines with send() / read_until_tagged()."""

    def __init__(self, sock, host):
        self.sock = sock
        self.host = host
        self.buf = bytearray()
        self._tag = 0
        self.greeting = self.read_response()
        self.capabilities = self._caps_from(self.greeting)

    @classmethod
    def connect(cls, host, port, tls="none", ca=None, timeout=60,
                server_name="localhost"):
        """tls: "none", "starttls" (STARTTLS before anything else) or
        "implicit"; ca: trust anchors (PEM) - certificates are verified."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if tls == "implicit":
                sock = _wrap(sock, ca, server_name)
            c = cls(sock, host)
            if tls == "starttls":
                _, tagged = c.command(b"STARTTLS")
                if not tagged.split(b" ", 2)[1:2] == [b"OK"]:
                    raise ImapError("STARTTLS refused: %r" % tagged)
                c.sock = _wrap(c.sock, ca, server_name)
                c.buf.clear()
                c.capabilities = None
            return c
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _caps_from(resp):
        m = re.search(rb"\[CAPABILITY ([^\]]*)\]", resp or b"")
        return set(m.group(1).upper().split()) if m else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- reading ----------------------------------------------------------

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ImapError("connection closed by server")
        self.buf += data

    def _read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise ImapError("line longer than %d" % MAX_LINE)
            self._fill()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_response(self):
        """One whole response: its lines and literals, exactly as sent."""
        out = bytearray()
        while True:
            line = self._read_line()
            out += line
            m = LITERAL_RE.search(line)
            if not m:
                return bytes(out)
            out += self._read_exact(int(m.group(1)))

    # -- commands ---------------------------------------------------------

    def next_tag(self):
        self._tag += 1
        return b"T%d" % self._tag

    def send(self, cmd, tag=None):
        """Send one command (bytes, without CRLF; literals in it must be
        non-synchronizing); returns its tag."""
        tag = tag or self.next_tag()
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        return tag

    def read_until_tagged(self, tag):
        """(untagged and continuation responses, the tagged line)."""
        untagged = []
        while True:
            r = self.read_response()
            if r.startswith(tag + b" "):
                return untagged, r
            untagged.append(r)

    def command(self, cmd, check=False):
        tag = self.send(cmd)
        untagged, tagged = self.read_until_tagged(tag)
        if check and tagged.split(b" ", 2)[1:2] != [b"OK"]:
            raise ImapError("%r -> %r" % (cmd[:200], tagged))
        return untagged, tagged

    def ok(self, cmd):
        return self.command(cmd, check=True)[0]

    def login(self, user, password):
        untagged, tagged = self.command(b"LOGIN " + quote(user) + b" " +
                                        quote(password), check=True)
        caps = self._caps_from(tagged)
        if caps:
            self.capabilities = caps
        return tagged

    def capability(self):
        untagged, _ = self.command(b"CAPABILITY", check=True)
        for r in untagged:
            if r.upper().startswith(b"* CAPABILITY "):
                self.capabilities = set(r[13:].strip().upper().split())
        return self.capabilities

    def append(self, mailbox, msg, flags=b"", date=None, sync=None):
        """APPEND msg (bytes, stored as given) -> (uidvalidity, uid) from
        APPENDUID or None. sync=None: a non-synchronizing literal when the
        server offers LITERAL+, else a synchronizing one."""
        if sync is None:
            caps = self.capabilities or self.capability()
            sync = b"LITERAL+" not in caps
        head = b"APPEND " + quote(mailbox)
        if flags:
            head += b" (" + (flags.encode() if isinstance(flags, str) else flags) + b")"
        if date:
            head += b' "' + date.encode() + b'"'
        tag = self.next_tag()
        if sync:
            self.sock.sendall(tag + b" " + head + b" {%d}\r\n" % len(msg))
            r = self.read_response()
            if not r.startswith(b"+"):
                raise ImapError("APPEND refused before the literal: %r" % r)
            self.sock.sendall(msg + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + head + b" {%d+}\r\n" % len(msg) +
                              msg + b"\r\n")
        _, tagged = self.read_until_tagged(tag)
        if tagged.split(b" ", 2)[1:2] != [b"OK"]:
            raise ImapError("APPEND failed: %r" % tagged)
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def append_many(self, mailbox, msgs, window=64, dates=None):
        """APPEND every message, pipelined with LITERAL+ (window commands
        in flight); returns the UIDs in order. dates: an INTERNALDATE
        ("dd-Mon-yyyy hh:mm:ss +zzzz") per message, or None (the server's
        clock)."""
        dates = dates or [None] * len(msgs)
        if b"LITERAL+" not in (self.capabilities or self.capability()):
            return [self.append(mailbox, m, date=d)[1] for m, d in zip(msgs, dates)]
        uids = []
        pending = []
        box = quote(mailbox)
        for m, d in zip(msgs, dates):
            tag = self.next_tag()
            date = b' "' + d.encode() + b'"' if d else b""
            self.sock.sendall(tag + b" APPEND " + box + date + b" {%d+}\r\n" % len(m)
                              + m + b"\r\n")
            pending.append(tag)
            if len(pending) >= window:
                uids.append(self._append_done(pending.pop(0)))
        while pending:
            uids.append(self._append_done(pending.pop(0)))
        return uids

    def _append_done(self, tag):
        _, tagged = self.read_until_tagged(tag)
        if tagged.split(b" ", 2)[1:2] != [b"OK"]:
            raise ImapError("APPEND failed: %r" % tagged)
        m = re.search(rb"\[APPENDUID \d+ (\d+)\]", tagged)
        return int(m.group(1)) if m else None

    def select(self, mailbox, readonly=False):
        """SELECT (or EXAMINE); returns {"EXISTS": n, "UIDVALIDITY": v, ...}."""
        verb = b"EXAMINE " if readonly else b"SELECT "
        untagged = self.ok(verb + quote(mailbox))
        info = {}
        for r in untagged:
            m = re.match(rb"\* (\d+) (EXISTS|RECENT)", r)
            if m:
                info[m.group(2).decode()] = int(m.group(1))
            m = re.search(rb"\[(UIDVALIDITY|UIDNEXT) (\d+)\]", r)
            if m:
                info[m.group(1).decode()] = int(m.group(2))
        return info

    def logout(self):
        try:
            self.command(b"LOGOUT")
        except (ImapError, OSError):
            pass
        self.close()


def _wrap(sock, ca, server_name):
    ctx = ssl.create_default_context(cafile=ca) if ca else \
        ssl.create_default_context()
    return ctx.wrap_socket(sock, server_hostname=server_name)


# -- parsing responses -----------------------------------------------------

class Atom(bytes):
    """An atom or NIL (case kept) - bytes to distinguish from strings."""


class Literal(bytes):
    """A literal's content; .raw_size is the size the {N} said."""


class Str(bytes):
    """A quoted string, unescaped."""


class Response:
    """kind: "tagged", "untagged", "continuation"; for "* N FETCH (...)"
    number=N, name="FETCH", value=the parsed list, and spans: the raw
    bytes of each element of that list."""

    def __init__(self, raw):
        self.raw = raw
        self.kind = None
        self.number = None
        self.name = None
        self.value = None
        self.spans = None


_ATOM_END = set(b" ()[]{\r\n\"")


class _Parser:
    def __init__(self, data, pos=0):
        self.d = data
        self.p = pos

    def peek(self):
        return self.d[self.p] if self.p < len(self.d) else None

    def expect(self, b):
        if self.d[self.p:self.p + len(b)] != b:
            raise ImapError("expected %r at %d: %r" % (
                b, self.p, self.d[self.p:self.p + 40]))
        self.p += len(b)

    def value(self):
        """One value; returns (value, start, end) with raw span."""
        start = self.p
        c = self.peek()
        if c is None:
            raise ImapError("value expected at end")
        if c == ord("("):
            self.p += 1
            items = []
            while True:
                if self.peek() == ord(")"):
                    self.p += 1
                    break
                if self.peek() == ord(" "):
                    self.p += 1
                    continue
                items.append(self.value()[0])
            return items, start, self.p
        if c == ord('"'):
            self.p += 1
            out = bytearray()
            while True:
                ch = self.d[self.p]
                if ch == ord("\\"):
                    out.append(self.d[self.p + 1])
                    self.p += 2
                    continue
                self.p += 1
                if ch == ord('"'):
                    break
                out.append(ch)
            return Str(bytes(out)), start, self.p
        if c in (ord("{"), ord("~")):
            m = re.compile(rb"~?\{(\d+)\}\r\n").match(self.d, self.p)
            if not m:
                raise ImapError("bad literal at %d: %r" % (self.p, self.d[self.p:self.p + 20]))
            n = int(m.group(1))
            self.p = m.end()
            lit = Literal(self.d[self.p:self.p + n])
            if len(lit) != n:
                raise ImapError("literal {%d} truncated" % n)
            lit.raw_size = n
            self.p += n
            return lit, start, self.p
        # atom, possibly with a section [...] and a partial <...>
        while self.p < len(self.d) and self.d[self.p] not in _ATOM_END:
            self.p += 1
        if self.peek() == ord("["):
            depth = 0
            while self.p < len(self.d):
                ch = self.d[self.p]
                self.p += 1
                if ch == ord("["):
                    depth += 1
                elif ch == ord("]"):
                    depth -= 1
                    if depth == 0:
                        break
            while self.p < len(self.d) and self.d[self.p] not in _ATOM_END:
                self.p += 1
        if self.p == start:
            raise ImapError("unexpected %r at %d" % (self.d[start:start + 20], start))
        return Atom(self.d[start:self.p]), start, self.p


def parse_response(raw):
    """Parse one raw response (from RawImap.read_response). FETCH
    responses get .value (a list alternating item names and values) and
    .spans (raw bytes of each element); other responses only kind,
    number and name."""
    r = Response(raw)
    if raw.startswith(b"+"):
        r.kind = "continuation"
        return r
    if not raw.startswith(b"* "):
        r.kind = "tagged"
        r.name = raw.split(b" ", 2)[1] if b" " in raw else b""
        return r
    r.kind = "untagged"
    m = re.match(rb"\* (\d+) ([A-Za-z]+)", raw)
    if not m:
        r.name = raw[2:].split(b" ", 1)[0].rstrip(b"\r\n").upper()
        return r
    r.number = int(m.group(1))
    r.name = m.group(2).upper()
    if r.name != b"FETCH":
        return r
    p = _Parser(raw, m.end())
    p.expect(b" (")
    items, spans = [], []
    while True:
        if p.peek() == ord(")"):
            p.p += 1
            break
        if p.peek() == ord(" "):
            p.p += 1
            continue
        v, s, e = p.value()
        items.append(v)
        spans.append(raw[s:e])
    if raw[p.p:] != b"\r\n":
        raise ImapError("junk after FETCH list: %r" % raw[p.p:p.p + 40])
    r.value = items
    r.spans = spans
    return r


def fetch_items(resp):
    """[(NAME upper-cased, raw value bytes, parsed value)] of a FETCH
    response in the order the server sent them."""
    if resp.value is None:
        raise ImapError("not a FETCH response: %r" % resp.raw[:80])
    if len(resp.value) % 2:
        raise ImapError("odd FETCH item list: %r" % resp.raw[:200])
    out = []
    for i in range(0, len(resp.value), 2):
        out.append((bytes(resp.value[i]).upper(), resp.spans[i + 1],
                    resp.value[i + 1]))
    return out
