"""A small ETSI GS QKD 004 client written from kme/ETSI004.md alone (an
independent implementation of the framing, for the tests): TLS over TCP,
an 8-byte header (3 version bytes, service type, u32 big-endian payload
length), big-endian u32 integers, 16-byte KSIDs."""
import socket
import ssl
import struct
import uuid

OPEN_REQ, OPEN_RESP, GET_REQ, GET_RESP, CLOSE_REQ, CLOSE_RESP = 2, 3, 4, 5, 8, 9
NEXT = 0xFFFFFFFF
STATUS = ["SUCCESS", "PEER_NOT_CONNECTED", "INSUFFICIENT_KEY", "PEER_APP_NOT_CONNECTED",
          "NO_QKD_CONNECTION", "KSID_IN_USE", "TIMEOUT", "QOS_NOT_MET",
          "METADATA_TOO_SMALL"]
NULL_KSID = b"\0" * 16


def qos(chunk=32, max_bps=0, min_bps=0, jitter=0, priority=0, timeout=2000, ttl=0,
        mime="application/json"):
    return dict(chunk=chunk, max_bps=max_bps, min_bps=min_bps, jitter=jitter,
                priority=priority, timeout=timeout, ttl=ttl, mime=mime)


def pack_qos(q):
    m = q["mime"].encode() if isinstance(q["mime"], str) else q["mime"]
    return struct.pack(">7I", q["chunk"], q["max_bps"], q["min_bps"], q["jitter"],
                       q["priority"], q["timeout"], q["ttl"]) + m.ljust(256, b"\0")[:256]


def unpack_qos(b):
    v = struct.unpack(">7I", b[:28])
    m = b[28:284].split(b"\0", 1)[0].decode()
    return dict(chunk=v[0], max_bps=v[1], min_bps=v[2], jitter=v[3], priority=v[4],
                timeout=v[5], ttl=v[6], mime=m)


def frame(service, payload, version=b"\x02\x01\x01"):
    return version + bytes([service]) + struct.pack(">I", len(payload)) + payload


class Conn:
    def __init__(self, port, cert, key, ca, host="127.0.0.1", timeout=30):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(cert, key)
        ctx.check_hostname = False  # certificates name "localhost"/KME IDs
        raw = socket.create_connection((host, port), timeout=timeout)
        self.s = ctx.wrap_socket(raw)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, data):
        self.s.sendall(data)

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            d = self.s.recv(n - len(out))
            if not d:
                raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
            out += d
        return out

    def read_frame(self):
        h = self.recv_exact(8)
        n = struct.unpack(">I", h[4:8])[0]
        return h[3], self.recv_exact(n)

    def open(self, src="qkd://app", dst="qkd://peer", q=None, ksid=NULL_KSID):
        q = q or qos()
        self.send(frame(OPEN_REQ, src.encode() + b"\0" + dst.encode() + b"\0" +
                        pack_qos(q) + ksid))
        svc, p = self.read_frame()
        assert svc == OPEN_RESP, svc
        st = struct.unpack(">I", p[:4])[0]
        if len(p) == 4:
            return st, None, None
        assert len(p) == 4 + 284 + 16, len(p)
        return st, unpack_qos(p[4:288]), p[288:304]

    def get(self, ksid, index, msize=0):
        """-> (status, index, key, metadata or needed size)"""
        self.send(frame(GET_REQ, ksid + struct.pack(">II", index, msize)))
        svc, p = self.read_frame()
        assert svc == GET_RESP, svc
        st = struct.unpack(">I", p[:4])[0]
        if st == 8:
            return st, None, None, struct.unpack(">I", p[4:8])[0]
        if st != 0:
            assert len(p) == 4, len(p)
            return st, None, None, None
        idx, klen = struct.unpack(">II", p[4:12])
        key = p[12:12 + klen]
        mlen = struct.unpack(">I", p[12 + klen:16 + klen])[0]
        md = p[16 + klen:16 + klen + mlen]
        assert len(p) == 16 + klen + mlen
        return st, idx, key, md

    def close_stream(self, ksid):
        self.send(frame(CLOSE_REQ, ksid))
        svc, p = self.read_frame()
        assert svc == CLOSE_RESP, svc
        return struct.unpack(">I", p[:4])[0]


def ksid_text(b):
    return str(uuid.UUID(bytes=b))


def ksid_bytes(t):
    return uuid.UUID(t).bytes
