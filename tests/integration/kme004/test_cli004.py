#!/usr/bin/env python3
"""The ETSI 004 client side against a real `qumail kme` (two KMEs, 004
listeners): the C library (e4client_api), `qumail kme-client open|get|
close` (JSON, exit statuses, usage errors) and `qumail mime encrypt/
decrypt` with 004 keys (OTP, AES, a 200 kB OTP message in 1 kB chunks; the
receiver fetches the chunks the message names from its own KME; a second
decrypt finds them used; the sender's end cannot decrypt; a tampered
Key-Chunks line fails authentication).

Environment: QUMAIL_BIN, QUMAIL_SRC, QUMAIL_BUILD."""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
BUILD = os.environ.get("QUMAIL_BUILD", ".")
API = os.path.join(BUILD, "tests/integration/kme004/e4client_api")
DEADLINE = time.time() + 240
TMP = tempfile.mkdtemp(prefix="cli004-")
PROCS = []
FAILURES = []
CHECKS = [0]


def cleanup():
    for p in PROCS:
        if p.poll() is None:
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


CERTS = os.path.join(TMP, "certs")
subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", CERTS,
                "-k", "kme-a", "-k", "kme-b", "-s", "sae-a", "-s", "sae-b"],
               check=True, stdout=subprocess.DEVNULL)
CA = os.path.join(CERTS, "ca.pem")
P = {n: free_port() for n in ("a", "b", "ea", "eb")}


def kme(kid, peer, port, e4):
    return {"kme_id": kid, "port": port,
            "tls": {"cert": "%s/%s.pem" % (CERTS, kid), "key": "%s/%s.key" % (CERTS, kid),
                    "ca": CA},
            "database": os.path.join(TMP, kid + ".db"), "link": {"peer_kme_id": peer},
            "secret_key_rate": 8000000, "max_key_count": 40000,
            "sqlite_synchronous": "normal",
            "etsi004": {"port": e4, "max_chunk_size": 4096}}


cfg = os.path.join(TMP, "kme.json")
with open(cfg, "w") as f:
    json.dump({"kmes": [kme("kme-a", "kme-b", P["a"], P["ea"]),
                        kme("kme-b", "kme-a", P["b"], P["eb"])]}, f)
log = open(os.path.join(TMP, "kme.log"), "w")
proc = subprocess.Popen([QUMAIL, "kme", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
PROCS.append(proc)
check(wait_port(P["ea"]) and wait_port(P["eb"]), "KMEs up")
time.sleep(1.5)  # the link and some key material


def tls(sae):
    return ["--cert", "%s/%s.pem" % (CERTS, sae), "--key", "%s/%s.key" % (CERTS, sae),
            "--ca", CA, "--server-name", "localhost"]


def kc(sae, port, *args):
    p = subprocess.run([QUMAIL, "kme-client"] + list(args) +
                       ["--kme", "etsi004://127.0.0.1:%d" % port] + tls(sae),
                       capture_output=True, text=True, timeout=60)
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        out = None
    return p.returncode, out, p.stderr


# ---- the C library --------------------------------------------------------------------

p = subprocess.run([API, str(P["ea"]), str(P["eb"]), CERTS], capture_output=True, text=True,
                   timeout=120)
sys.stdout.write(p.stdout)
check(p.returncode == 0, "e4client_api passes (exit %d): %s" % (p.returncode, p.stderr[-500:]))

# ---- qumail kme-client open / get / close ------------------------------------------------

rc, o, _ = kc("sae-a", P["ea"], "open", "--chunk-size", "64", "--qos-timeout", "400",
              "--ttl", "3600")
check(rc == 0 and o and o["status"] == 1 and o["status_name"] == "PEER_NOT_CONNECTED",
      "open with an assigned KSID: exit 0, status 1 (%r %r)" % (rc, o))
ks = o["ksid"] if o else str(uuid.uuid4())
check(o and o["qos"]["Key_chunk_size"] == 64 and o["qos"]["TTL"] == 3600
      and o["qos"]["Timeout"] == 400, "the granted QoS is printed")
rc, o, _ = kc("sae-a", P["ea"], "get", "--ksid", ks)
check(rc == 1 and o and o["status"] == 3, "get before the peer opens: exit 1, status 3")
rc, o, _ = kc("sae-b", P["eb"], "open", "--ksid", ks)
check(rc == 0 and o and o["status"] == 0, "the peer opens: status 0")
rc, o, _ = kc("sae-a", P["ea"], "get", "--ksid", ks, "--show-keys")
check(rc == 0 and o and o["chunks"][0]["index"] == 0 and o["chunks"][0]["size"] == 512
      and "key" in o["chunks"][0] and set(o["chunks"][0]["metadata"]) == {"age", "hops"},
      "get next: index 0, 512 bits, key and metadata (%r)" % o)
k0 = o["chunks"][0]["key"] if rc == 0 else None
rc, o, _ = kc("sae-b", P["eb"], "get", "--ksid", ks, "--index", "0", "--show-keys")
check(rc == 0 and o["chunks"][0]["key"] == k0, "the peer's index 0: the same key")
rc, o, _ = kc("sae-a", P["ea"], "get", "--ksid", ks, "--index", "0")
check(rc == 1 and o["status"] == 2, "index 0 again: exit 1, status 2")
rc, o, _ = kc("sae-a", P["ea"], "get", "--ksid", ks, "--count", "5")
check(rc == 0 and [c["index"] for c in o["chunks"]] == [1, 2, 3, 4, 5] and
      all("key" not in c for c in o["chunks"]), "five KME-chosen chunks, no key bytes printed")
rc, o, _ = kc("sae-b", P["eb"], "get", "--ksid", ks, "--index", "1", "--count", "5")
check(rc == 0 and len(o["chunks"]) == 5, "the peer fetches indices 1..5")
rc, o, _ = kc("sae-b", P["eb"], "get", "--ksid", ks, "--index", "6", "--metadata-size", "3")
check(rc == 1 and o["status"] == 8 and o["metadata_size_needed"] >= 18,
      "a short metadata buffer: status 8 and the size needed (%r)" % o)
rc, o, _ = kc("sae-a", P["ea"], "open", "--chunk-size", "100000")
check(rc == 1 and o["status"] == 7 and o["qos"]["Key_chunk_size"] == 4096,
      "QoS not met: exit 1, status 7 with the counter-proposal")
for verb in ("close", "close"):
    rc, o, _ = kc("sae-a", P["ea"], verb, "--ksid", ks)
    check(rc == 0 and o["status"] == 0, "close: status 0 (twice)")
rc, o, err = kc("sae-a", P["ea"], "get")
check(rc == 2 and "--ksid" in err, "get without --ksid: usage error (exit 2)")
rc, o, err = kc("sae-a", P["ea"], "get", "--ksid", "not-a-uuid")
check(rc == 2 and "UUID" in err, "a malformed KSID: exit 2, named")
rc, o, err = kc("sae-a", P["ea"], "get", "--ksid", ks, "--index", "4294967295")
check(rc == 2, "index 2^32-1 is 'next', not a number: exit 2")
p = subprocess.run([QUMAIL, "kme-client", "open", "--kme", "127.0.0.1:1"] + tls("sae-a"),
                   capture_output=True, text=True, timeout=30)
o = json.loads(p.stdout)
check(p.returncode == 1 and o["error"] == "KME_ECONNREFUSED" and o["temporary"],
      "nothing listening: KME_ECONNREFUSED, temporary")

# ---- qumail mime with 004 keys -------------------------------------------------------------

stream = str(uuid.uuid4())
for sae, port in (("sae-a", P["ea"]), ("sae-b", P["eb"])):
    rc, o, _ = kc(sae, port, "open", "--ksid", stream, "--chunk-size", "1024",
                  "--qos-timeout", "300")
    check(rc == 0, "the mail stream registered at %s" % sae)

msg = os.path.join(TMP, "msg.eml")
with open(msg, "wb") as f:
    f.write(b"From: a@example.org\r\nTo: b@example.net\r\nSubject: over 004\r\n\r\n")
    f.write(b"".join(b"line %06d of a long message protected by an ETSI 004 stream\r\n" % i
                     for i in range(3000)))
size = os.path.getsize(msg)


def mime(*args):
    # qumail mime has no --server-name: the KME certificate names localhost.
    args = [a for a in args if a not in ("--server-name", "localhost")]
    args = [a.replace("127.0.0.1", "localhost") if a.startswith("etsi004://") else a
            for a in args]
    return subprocess.run([QUMAIL, "mime"] + args, capture_output=True, timeout=120)


for level in ("otp", "aes"):
    enc = os.path.join(TMP, "enc-%s.eml" % level)
    dec = os.path.join(TMP, "dec-%s.eml" % level)
    p = mime("encrypt", "--level", level, "--kme", "etsi004://127.0.0.1:%d" % P["ea"],
             "--ksid", stream, "--slave-sae", "sae-b", "--recipient", "b@example.net",
             "-o", enc, msg, *tls("sae-a"))
    check(p.returncode == 0, "mime encrypt --level %s with 004 keys: %s" % (level, p.stderr))
    p = mime("inspect", "--json", enc)
    info = json.loads(p.stdout) if p.returncode == 0 else {}
    keys = info.get("keys", [])
    check(len(keys) == 1 and keys[0].get("ksid") == stream and info["source_kme_id"] == "kme-a"
          and info["master_sae_id"] == "sae-a",
          "%s: one Key-Chunks entry of the stream, KME and SAE from the certificates" % level)
    need = 8 * size + 256 if level == "otp" else 256
    if keys:
        check(keys[0]["bits"] == need and keys[0]["chunk_bits"] == 8192 and
              keys[0]["count"] == (need + 8191) // 8192,
              "%s: exactly the bits needed, whole 1 kB chunks (%r)" % (level, keys[0]))
    p = mime("decrypt", "--kme", "etsi004://127.0.0.1:%d" % P["eb"], "-o", dec, enc,
             *tls("sae-b"))
    check(p.returncode == 0 and open(dec, "rb").read() == open(msg, "rb").read(),
          "%s: the receiver decrypts with the chunks from its own KME: %s" % (level, p.stderr))
    p = mime("decrypt", "--kme", "etsi004://127.0.0.1:%d" % P["eb"], "-o", dec + "2", enc,
             *tls("sae-b"))
    check(p.returncode == 1 and b"INSUFFICIENT_KEY" in p.stderr and not os.path.exists(dec + "2"),
          "%s: a second decrypt finds the chunks used (nothing written)" % level)
    p = mime("decrypt", "--kme", "etsi004://127.0.0.1:%d" % P["ea"], "-o", dec + "3", enc,
             *tls("sae-a"))
    check(p.returncode == 1, "%s: the sender's end cannot take the chunks again" % level)

# A message whose Key-Chunks line names other indices: the wrong key octets
# fail authentication, nothing is released.
enc = os.path.join(TMP, "enc-aes.eml")
p = mime("encrypt", "--level", "aes", "--kme", "etsi004://127.0.0.1:%d" % P["ea"], "--ksid",
         stream, "--slave-sae", "sae-b", "-o", enc, msg, *tls("sae-a"))
text = open(enc, "rb").read()
info = json.loads(mime("inspect", "--json", enc).stdout)
first = info["keys"][0]["first_index"]
bad = text.replace(b"Key-Chunks: %s %d " % (stream.encode(), first),
                   b"Key-Chunks: %s %d " % (stream.encode(), first + 1))
check(bad != text, "the tampered copy differs")
badf = os.path.join(TMP, "bad.eml")
open(badf, "wb").write(bad)
kc("sae-a", P["ea"], "get", "--ksid", stream, "--index", str(first + 1))  # allocate it
p = mime("decrypt", "--kme", "etsi004://127.0.0.1:%d" % P["eb"], "-o", badf + ".out", badf,
         *tls("sae-b"))
check(p.returncode == 1 and b"authentication failed" in p.stderr
      and not os.path.exists(badf + ".out"),
      "another index's chunk: authentication failed, nothing written (%r)" % p.stderr[-200:])
p = mime("encrypt", "--kme", "etsi004://127.0.0.1:%d" % P["ea"], "--slave-sae", "sae-b",
         "-o", os.path.join(TMP, "x.eml"), msg, *tls("sae-a"))
check(p.returncode == 1 and b"--ksid" in p.stderr, "encrypt with a 004 KME needs --ksid")

proc.send_signal(signal.SIGTERM)
check(proc.wait(timeout=20) == 0, "the KME stops cleanly")
log.close()
text = open(os.path.join(TMP, "kme.log"), errors="replace").read()
check("AddressSanitizer" not in text and "runtime error" not in text, "no sanitizer report")
print("%d checks, %d failed" % (CHECKS[0], len(FAILURES)))
sys.exit(1 if FAILURES else 0)
