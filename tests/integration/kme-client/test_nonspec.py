#!/usr/bin/env python3
"""qumail kme-client against misbehaving peers (peer.py): every non-spec
answer maps to its typed error, transport failures are typed, and dec_keys
rides out a peer that reports 'not found' before it has the key."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "e2e", "lib"))
from procutil import free_ports  # noqa: E402

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
UUID1 = "550e8400-e29b-41d4-a716-446655440000"
UUID2 = "0a782fb5-3434-48fe-aa4d-14f41d46cf92"

failures = []


def run(certs, port, *args, ca="ca.pem", timeout=20):
    cmd = [QUMAIL, "kme-client", args[0], "--url", f"https://127.0.0.1:{port}",
           "--cert", os.path.join(certs, "sae-a.pem"), "--key", os.path.join(certs, "sae-a.key"),
           "--ca", os.path.join(certs, ca)] + list(args[1:])
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        out = {"unparsed": p.stdout, "stderr": p.stderr}
    return p.returncode, out, time.monotonic() - t0


def expect(name, got, want_rc, want_error=None, contains=None):
    rc, out, secs = got
    ok = rc == want_rc and (want_error is None or out.get("error") == want_error)
    if ok and contains is not None:
        ok = contains in out.get("message", "")
    print(("ok  " if ok else "FAIL"), name, f"rc={rc} {secs:.2f}s", json.dumps(out)[:300])
    if not ok:
        failures.append(name)
    return out


def free_port():
    """A port below the kernel's ephemeral range, never handed out twice
    here (procutil.free_ports): a port the kernel picked for port 0 can be
    taken by any process's next outgoing connection before our KME binds it
    (seen under ctest -j2)."""
    return free_ports(1)[0]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        certs = os.path.join(tmp, "certs")
        subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", certs, "-k", "kme-a",
                        "-s", "sae-a"], check=True)
        # a second, unrelated CA: the client must refuse the peer
        other = os.path.join(tmp, "other")
        subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", other, "-k", "x",
                        "-s", "y"], check=True)
        os.link(os.path.join(other, "ca.pem"), os.path.join(certs, "other-ca.pem"))

        srv = peer.start(certs)
        port = srv.server_address[1]

        expect("404 status", run(certs, port, "status", "--slave", "e404"), 1, "KME_EHTTP",
               "HTTP 404 (non-JSON body")
        got = run(certs, port, "dec", "--master", "e404", "--key-id", UUID1, "--deadline", "600")
        expect("404 dec retries then not found", got, 1, "KME_ENOTFOUND", "HTTP 404")
        if got[2] < 0.55:  # retried until the 600 ms deadline
            print("FAIL 404 dec: not retried until the deadline (%.2f s)" % got[2])
            failures.append("404 dec retried")
        expect("409 enc", run(certs, port, "enc", "--slave", "e409"), 1, "KME_EHTTP",
               "key already in use")
        expect("504 enc", run(certs, port, "enc", "--slave", "e504", "--bits", "256"), 1,
               "KME_ESERVER", "HTTP 504")
        expect("401 non-JSON", run(certs, port, "status", "--slave", "e401"), 1,
               "KME_EUNAUTHORIZED", "Unauthorized")
        expect("200 non-JSON", run(certs, port, "status", "--slave", "garbage"), 1,
               "KME_EBADRESPONSE", "invalid status")
        expect("no answer", run(certs, port, "status", "--slave", "slow", "--timeout", "500"), 1,
               "KME_ETIMEDOUT")
        expect("dropped connection", run(certs, port, "status", "--slave", "close"), 1,
               "KME_EIO")
        out = expect("handover race: 404 twice then the keys",
                     run(certs, port, "dec", "--master", "flaky", "--key-id",
                         UUID1 + "," + UUID2.upper()), 0)
        if out.get("keys") and [k["key_ID"] for k in out["keys"]] != [UUID1, UUID2]:
            failures.append("dec order")
        if "key" in json.dumps(out.get("keys", [])).replace("key_ID", ""):
            failures.append("key bytes printed without --show-keys")
        out = expect("--show-keys", run(certs, port, "dec", "--master", "flaky", "--key-id",
                                        UUID2, "--show-keys"), 0)
        if out.get("keys", [{}])[0].get("key") != "A" * 43 + "=":
            failures.append("--show-keys key text")
        out = expect("stale keep-alive connection: request replayed on a new one",
                     run(certs, port, "dec", "--master", "stale", "--key-id", UUID1), 0)
        if out.get("total_bits") != 128:
            failures.append("stale: keys")
        expect("untrusted KME certificate",
               run(certs, port, "status", "--slave", "e404", ca="other-ca.pem"), 1, "KME_ETLS")
        expect("wrong KME ID", run(certs, port, "status", "--slave", "e404", "--kme-id", "kme-b"),
               1, "KME_ETLS", "not the expected KME ID")
        expect("right KME ID", run(certs, port, "status", "--slave", "e404", "--kme-id", "kme-a"),
               1, "KME_EHTTP")
        expect("connection refused", run(certs, free_port(), "status", "--slave", "x"), 1,
               "KME_ECONNREFUSED")
        # a listener that never accepts: TCP completes in the kernel, the TLS
        # handshake never does
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        expect("TLS handshake never answered",
               run(certs, mute.getsockname()[1], "status", "--slave", "x", "--timeout", "400"),
               1, "KME_ETIMEDOUT", "not established within 400 ms")
        mute.close()
        expect("bad key ID", run(certs, port, "dec", "--master", "flaky", "--key-id", "nope"), 1,
               "KME_EINVAL")
        rc, _, _ = run(certs, port, "enc")
        if rc != 2:
            failures.append("usage error exit status")
        srv.shutdown()
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
