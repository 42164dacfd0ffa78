"""A minimal IMAP client that keeps bytes exact, for the render oracle.

imaplib's APPEND maps every CR, LF and CRLF to CRLF before sending, so it
cannot store an LF-only or bare-CR message as given; and its FETCH parsing
hides whether the server sent a quoted string or a literal. This client
sends literals verbatim and returns each FETCH response as raw wire bytes.
Python standard library only."""

import re
import socket


class RawImapError(Exception):
    pass


class RawImap:
    def __init__(self, host, port, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.tagn = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise RawImapError("greeting %r" % greeting)

    # -- low level ---------------------------------------------------------
    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise RawImapError("connection closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _response(self):
        """One server response with its literals inlined, as wire bytes
        (without the final CRLF)."""
        out = b""
        while True:
            line = self._line()
            out += line
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return out
            out += b"\r\n" + self._bytes(int(m.group(1)))

    def command(self, cmd, literal=None):
        """Send cmd (bytes; with literal: cmd ends before the {n}) and
        return (untagged responses, tagged status line)."""
        self.tagn += 1
        tag = b"t%d" % self.tagn
        if literal is not None:
            self.sock.sendall(tag + b" " + cmd + b" {%d}\r\n" % len(literal))
            cont = self._response()
            if not cont.startswith(b"+"):
                raise RawImapError("no continuation: %r" % cont)
            self.sock.sendall(literal + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + cmd + b"\r\n")
        untagged = []
        while True:
            resp = self._response()
            if resp.startswith(tag + b" "):
                return untagged, resp[len(tag) + 1:]
            untagged.append(resp)

    def ok(self, cmd, literal=None):
        untagged, status = self.command(cmd, literal)
        if not status.startswith(b"OK"):
            raise RawImapError("%r -> %r" % (cmd[:120], status[:200]))
        return untagged, status

    # -- helpers ---------------------------------------------------------------
    def login(self, user, password):
        self.ok(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))

    def append(self, mailbox, msg):
        """APPEND msg byte for byte; returns the UID (APPENDUID)."""
        _, status = self.ok(b'APPEND "%s"' % mailbox.encode(), msg)
        m = re.search(rb"APPENDUID \d+ (\d+)", status)
        return int(m.group(1)) if m else None

    def fetch(self, uid, items):
        """UID FETCH uid (items): the raw FETCH response bytes (the part
        inside the outer parentheses after 'FETCH ')."""
        untagged, _ = self.ok(b"UID FETCH %d (%s)" % (uid, items))
        for u in untagged:
            m = re.match(rb"\* \d+ FETCH \(", u)
            if m:
                if not u.endswith(b")"):
                    raise RawImapError("bad FETCH response %r" % u[:200])
                return u[m.end():-1]
        raise RawImapError("no FETCH response for %r" % items)

    def logout(self):
        try:
            self.command(b"LOGOUT")
        except (RawImapError, OSError):
            pass
        self.sock.close()


def split_items(payload):
    """Split a FETCH payload 'NAME value NAME value ...' into a list of
    (name bytes, value wire bytes). Values are atoms, quoted strings,
    literals ({n}\\r\\n + n bytes) or parenthesised lists (with nested
    quoted strings and literals)."""
    out = []
    i, n = 0, len(payload)

    def skip_value(i):
        c = payload[i:i + 1]
        if c == b'"':
            i += 1
            while payload[i:i + 1] != b'"':
                i += 2 if payload[i:i + 1] == b"\\" else 1
            return i + 1
        if c == b"{":
            j = payload.index(b"}", i)
            size = int(payload[i + 1:j])
            return j + 3 + size
        if c == b"(":
            i += 1
            while payload[i:i + 1] != b")":
                if payload[i:i + 1] == b" ":
                    i += 1
                    continue
                i = skip_value(i)
            return i + 1
        j = i
        while j < n and payload[j:j + 1] not in (b" ", b")", b"("):
            j += 1
        return j

    while i < n:
        # item name: up to SP, but BODY[...] may contain spaces inside [ ]
        j = i
        depth = 0
        while j < n:
            c = payload[j:j + 1]
            if c == b"[":
                depth += 1
            elif c == b"]":
                depth -= 1
            elif c == b" " and depth == 0:
                break
            j += 1
        name = payload[i:j]
        k = skip_value(j + 1)
        out.append((name, payload[j + 1:k]))
        i = k + 1
    return out


def literal_payload(value):
    """The bytes a wire value stands for: a literal's content, a quoted
    string unescaped, NIL as None."""
    if value.startswith(b"{"):
        j = value.index(b"}")
        return value[j + 3:]
    if value.startswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', value[1:-1])
    if value == b"NIL":
        return None
    return value
