#!/usr/bin/env python3
"""Integration tests of the KME simulator (`qumail kme`).

Real processes on 127.0.0.1, mutual TLS, requests made with curl
(--cert/--key/--cacert) and, for the concurrency test, Python's ssl module
with keep-alive connections. Covers: every endpoint form (GET/POST), every
spec error case, unauthorized SAEs (401), TLS rejection of missing and
foreign client certificates, multicast, later enc_keys not replacing
earlier keys, restart durability with kill -9 (no key lost, none delivered
twice), the link going down and coming back, concurrent clients, the
one-process two-KME demo config and held-key expiry.

Environment: QUMAIL_BIN (the qumail binary), QUMAIL_SRC (source tree).
Every process started is killed at exit; the whole run has a deadline.
"""
import atexit
import base64
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "e2e", "lib"))
from procutil import free_ports  # noqa: E402

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
DEADLINE = time.time() + 240
TMP = tempfile.mkdtemp(prefix="kme-it-")
PROCS = []
FAILURES = []


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
    if time.time() > DEADLINE:
        print("FAIL: deadline exceeded")
        sys.exit(1)
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)
    return cond


def free_port():
    """A port below the kernel's ephemeral range, never handed out twice
    here (procutil.free_ports): a port the kernel picked for port 0 can be
    taken by any process's next outgoing connection before our KME binds it
    (seen under ctest -j2)."""
    return free_ports(1)[0]


# ---- certificates -----------------------------------------------------------

CERTS = os.path.join(TMP, "certs")
subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", CERTS,
                "-k", "kme-a", "-k", "kme-b", "-s", "sae-a", "-s", "sae-b",
                "-s", "sae-c", "-s", "sae-d", "-s", "sae-x"],
               check=True, stdout=subprocess.DEVNULL)
FOREIGN = os.path.join(TMP, "foreign")
subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", FOREIGN,
                "-k", "kme-z", "-s", "sae-a"], check=True, stdout=subprocess.DEVNULL)
CA = os.path.join(CERTS, "ca.pem")


def cert(name, base=CERTS):
    return os.path.join(base, name + ".pem"), os.path.join(base, name + ".key")


# ---- configuration and processes -------------------------------------------

def kme_cfg(kid, port, link_port, peer, peer_link=None, dbname=None, **extra):
    c = {
        "kme_id": kid, "port": port,
        "tls": {"cert": CERTS + "/%s.pem" % kid, "key": CERTS + "/%s.key" % kid, "ca": CA},
        "database": os.path.join(TMP, dbname or kid + ".db"),
        "link": {"port": link_port, "peer_kme_id": peer},
        "secret_key_rate": 4000000,
        "max_key_count": 20000,
        "sqlite_synchronous": "full",
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
        self.name = name
        self.cfg = cfg_path
        self.proc = None
        self.log = os.path.join(TMP, name + ".log")

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([QUMAIL, "kme", "--config", self.cfg, "--log-level", "debug"],
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
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
        check(rc == 0, "%s exits 0 on SIGTERM (got %s)" % (self.name, rc))
        self.check_log()

    def check_log(self):
        with open(self.log) as f:
            text = f.read()
        check("AddressSanitizer" not in text and "runtime error" not in text
              and "LeakSanitizer" not in text, "%s: no sanitizer reports" % self.name)
        return text


# ---- HTTP via curl ----------------------------------------------------------

def curl(port, sae, method, path, body=None, certbase=CERTS, extra=()):
    """Returns (status, parsed JSON or raw text); status 0 when TLS failed."""
    cmd = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
           "--cacert", CA, "-X", method]
    if sae is not None:
        c, k = cert(sae, certbase)
        cmd += ["--cert", c, "--key", k]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", body]
    cmd += list(extra)
    cmd.append("https://127.0.0.1:%d%s" % (port, path))
    r = subprocess.run(cmd, capture_output=True, text=True)
    out, _, code = r.stdout.rpartition("\n")
    status = int(code) if code.isdigit() else 0
    try:
        data = json.loads(out) if out else None
    except ValueError:
        data = out
    return status, data


def wait_ready(port, sae, slave, min_keys=200):
    """Polls until the KME answers with key material (as soon as it does;
    up to 120 s: an ASan build under load is slow to start and fill)."""
    t0 = time.time()
    while time.time() - t0 < 120:
        s, d = curl(port, sae, "GET", "/api/v1/keys/%s/status" % slave)
        if s == 200 and d["stored_key_count"] >= min_keys:
            return d
        time.sleep(0.2)
    check(False, "KME on port %d ready with keys" % port)
    return None


def dec_retry(port, sae, master, ids, timeout=10.0):
    """dec_keys with retry while the reservation is on its way (the race)."""
    body = json.dumps({"key_IDs": [{"key_ID": i} for i in ids]})
    t0 = time.time()
    while True:
        s, d = curl(port, sae, "POST", "/api/v1/keys/%s/dec_keys" % master, body)
        # 400: not there yet (the handover race); 0: KME restarting.
        if s not in (0, 400) or time.time() - t0 > timeout:
            return s, d
        time.sleep(0.1)


def msg_is(resp, status, message=None, what=""):
    s, d = resp
    ok = s == status and isinstance(d, dict) and isinstance(d.get("message"), str)
    if ok and message is not None:
        ok = d["message"] == message
    return check(ok, "%s: want %d %r, got %d %r" % (what, status, message, s, d))


KEYS_SEEN = set()


def keys_of(d):
    for k in d["keys"]:
        if len(k["key"]) >= 12:
            KEYS_SEEN.add(k["key"])
    return {k["key_ID"]: base64.b64decode(k["key"]) for k in d["keys"]}


# ---- the two-process setup ---------------------------------------------------

PA, PB, LA, LB = free_port(), free_port(), free_port(), free_port()
cfg_a = write_cfg("a.json", [kme_cfg("kme-a", PA, LA, "kme-b", LB,
                                     sae_ids=["sae-a", "sae-x"])])
cfg_b = write_cfg("b.json", [kme_cfg("kme-b", PB, LB, "kme-a", LA,
                                     sae_ids=["sae-b", "sae-c"])])
A = Kme("kme-a", cfg_a)
B = Kme("kme-b", cfg_b)

r = subprocess.run([QUMAIL, "kme", "--config", cfg_a, "--check"], capture_output=True, text=True)
check(r.returncode == 0, "--check accepts a valid config: " + r.stdout + r.stderr)
bad = os.path.join(TMP, "bad.json")
with open(bad, "w") as f:
    f.write('{"kmes": [{"kme_id": "x",\n "bogus": 1}]}')
r = subprocess.run([QUMAIL, "kme", "--config", bad, "--check"], capture_output=True, text=True)
check(r.returncode == 1 and "bad.json:2:" in r.stderr and "bogus" in r.stderr,
      "config errors name FILE:LINE and the key: " + r.stderr)
r = subprocess.run([QUMAIL, "kme", "--help"], capture_output=True, text=True)
check(r.returncode == 0 and "--config" in r.stdout, "--help")

A.start()
B.start()
st = wait_ready(PA, "sae-a", "sae-b")
wait_ready(PB, "sae-b", "sae-a")


def test_status():
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status")
    check(s == 200, "status 200")
    want = {"source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID",
            "key_size", "stored_key_count", "max_key_count", "max_key_per_request",
            "max_key_size", "min_key_size", "max_SAE_ID_count"}
    check(set(d) == want, "status has exactly the spec's fields: %s" % sorted(d))
    check(d["source_KME_ID"] == "kme-a" and d["target_KME_ID"] == "kme-b"
          and d["master_SAE_ID"] == "sae-a" and d["slave_SAE_ID"] == "sae-b",
          "status IDs: %r" % d)
    check(d["key_size"] == 256 and d["min_key_size"] == 64 and d["max_key_size"] == 8192
          and d["max_key_per_request"] == 128 and d["max_key_count"] == 20000
          and d["max_SAE_ID_count"] == 8, "status defaults: %r" % d)
    check(d["stored_key_count"] <= d["max_key_count"], "stored <= max")
    msg_is(curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/status", "{}"), 405, None,
           "POST status")
    msg_is(curl(PA, "sae-a", "GET", "/api/v1/keys/sae-a/status"), 400,
           "slave_SAE_ID shall differ from master_SAE_ID", "status for self")
    msg_is(curl(PA, "sae-a", "GET", "/api/v1/keys/%20/status"), 400,
           "slave_SAE_ID shall not be blank", "status for blank")
    msg_is(curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/nothing"), 404, None, "unknown path")
    msg_is(curl(PA, "sae-a", "GET", "/"), 404, None, "root")
    msg_is(curl(PA, "sae-a", "DELETE", "/api/v1/keys/sae-b/enc_keys"), 405, None, "DELETE")
    msg_is(curl(PA, "sae-a", "PUT", "/api/v1/keys/sae-b/dec_keys", "{}"), 405, None, "PUT")


def test_forms():
    # enc_keys GET without parameters: one key of key_size bits.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys")
    check(s == 200 and len(d["keys"]) == 1 and len(base64.b64decode(d["keys"][0]["key"])) == 32,
          "GET enc_keys defaults: %r" % (d,))
    k1 = keys_of(d)
    # GET with number and size.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=3&size=1024")
    check(s == 200 and len(d["keys"]) == 3 and
          all(len(base64.b64decode(k["key"])) == 128 for k in d["keys"]), "GET number&size")
    k3 = keys_of(d)
    # POST with an empty body, with {}, with unknown members and optional extensions.
    s, d = curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys", "")
    check(s == 200 and len(d["keys"]) == 1, "POST empty body")
    k4 = keys_of(d)
    s, d = curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys",
                '{"number":2,"size":72,"vendor_thing":{"a":[1]},'
                '"extension_optional":[{"abc_max_age":30000}]}')
    check(s == 200 and len(d["keys"]) == 2 and
          all(len(base64.b64decode(k["key"])) == 9 for k in d["keys"]),
          "POST size 72 with unknown members: %r" % (d,))
    k5 = keys_of(d)
    # Every size that is a multiple of 8 in range, exactly that many bits.
    for size in (64, 8 * 13, 8 * 127, 8192):
        s, d = curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys", '{"size":%d}' % size)
        check(s == 200 and len(base64.b64decode(d["keys"][0]["key"])) == size // 8,
              "size %d served exactly" % size)
        k5.update(keys_of(d))
    allk = {}
    for m in (k1, k3, k4, k5):
        allk.update(m)
    check(len(allk) == 1 + 3 + 1 + 2 + 4, "key IDs unique")
    for kid in allk:
        check(len(kid) == 36 and kid.count("-") == 4, "key_ID is a UUID: " + kid)
    # dec_keys GET (one key) and POST (several); identical bytes at both ends.
    kid = next(iter(k1))
    s, d = dec_retry(PB, "sae-b", "sae-a", [kid])
    s, d = curl(PB, "sae-b", "GET", "/api/v1/keys/sae-a/dec_keys?key_ID=" + kid)
    check(s == 400, "dec_retry already took it (POST), GET again is 400")
    kid4 = next(iter(k4))
    time.sleep(0.3)
    s, d = curl(PB, "sae-b", "GET", "/api/v1/keys/sae-a/dec_keys?key_ID=" + kid4)
    check(s == 200 and keys_of(d) == k4, "GET dec_keys returns the same key")
    rest = [i for i in allk if i not in (kid, kid4)]
    s, d = dec_retry(PB, "sae-b", "sae-a", rest)
    check(s == 200 and keys_of(d) == {i: allk[i] for i in rest},
          "POST dec_keys returns identical keys for every ID")
    check([k["key_ID"] for k in d["keys"]] == rest, "dec_keys keeps the order asked")
    # Never twice.
    msg_is(curl(PB, "sae-b", "POST", "/api/v1/keys/sae-a/dec_keys",
                json.dumps({"key_IDs": [{"key_ID": rest[0]}]})), 400,
           "one or more keys specified are not found on KME", "second dec_keys")
    # Uppercase key IDs are the same key.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys")
    kid = d["keys"][0]["key_ID"]
    s, d = dec_retry(PB, "sae-b", "sae-a", [kid.upper()])
    check(s == 200 and d["keys"][0]["key_ID"] == kid, "uppercase key_ID accepted")


def test_errors():
    enc = "/api/v1/keys/sae-b/enc_keys"
    dec = "/api/v1/keys/sae-a/dec_keys"
    cases = [
        ("GET", enc + "?size=12", None, "size shall be a multiple of 8"),
        ("POST", enc, '{"size":100}', "size shall be a multiple of 8"),
        ("POST", enc, '{"size":0}', "size shall be a positive integer"),
        ("GET", enc + "?size=-8", None, "size shall be a positive integer"),
        ("POST", enc, '{"number":0}', "number shall be a positive integer"),
        ("POST", enc, '{"number":-3}', "number shall be a positive integer"),
        ("POST", enc, '{"number":"3"}', "number shall be an integer"),
        ("GET", enc + "?number=three", None, "number shall be an integer"),
        ("POST", enc, '{"size":1.5}', "size shall be an integer"),
        ("POST", enc, '{"size":16}', None),
        ("POST", enc, '{"size":16384}', None),
        ("POST", enc, '{"number":129}', None),
        ("GET", enc + "?foo=1", None, None),
        ("POST", enc, '{"extension_mandatory":[{"abc_route_type":"direct"}]}',
         "not all extension_mandatory parameters are supported"),
        ("POST", enc, '{"additional_slave_SAE_IDs":["sae-c","sae-c"]}',
         "additional_slave_SAE_IDs shall not contain duplicates"),
        ("POST", enc, '{"additional_slave_SAE_IDs":["sae-a"]}',
         "additional_slave_SAE_IDs shall not contain the master or slave SAE ID"),
        ("POST", enc, '{"additional_slave_SAE_IDs":["sae-b"]}',
         "additional_slave_SAE_IDs shall not contain the master or slave SAE ID"),
        ("POST", enc, '{"additional_slave_SAE_IDs":[" "]}', None),
        ("POST", enc, '{"additional_slave_SAE_IDs":"sae-c"}', None),
        ("POST", enc, '{"additional_slave_SAE_IDs":["1","2","3","4","5","6","7","8","9"]}', None),
        ("POST", enc, '{"number":', None),
        ("POST", enc, '[1,2]', None),
        ("GET", "/api/v1/keys/sae-a/enc_keys", None,
         "slave_SAE_ID shall differ from master_SAE_ID"),
        ("GET", "/api/v1/keys/%20%20/enc_keys", None, "slave_SAE_ID shall not be blank"),
    ]
    for method, path, body, message in cases:
        msg_is(curl(PA, "sae-a", method, path, body), 400, message,
               "%s %s %s" % (method, path, body))
    dcases = [
        ("GET", dec + "?key_ID=not-a-uuid", None, "key_ID shall be a UUID"),
        ("POST", dec, '{"key_IDs":[{"key_ID":"1234"}]}', "key_ID shall be a UUID"),
        ("POST", dec, '{"key_IDs":[]}', None),
        ("POST", dec, '{}', None),
        ("POST", dec, '', None),
        ("GET", dec, None, None),
        ("GET", dec + "?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139&key_ID="
         "bc490419-7d60-487f-adc1-4ddcc177c139", None, None),
        ("POST", dec, '{"key_IDs":[{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"},'
         '{"key_ID":"bc490419-7d60-487f-adc1-4ddcc177c139"}]}', None),
        ("GET", dec + "?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139", None,
         "one or more keys specified are not found on KME"),
        ("GET", "/api/v1/keys/sae-b/dec_keys?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139",
         None, "slave_SAE_ID shall differ from master_SAE_ID"),
        ("GET", "/api/v1/keys/%20/dec_keys?key_ID=bc490419-7d60-487f-adc1-4ddcc177c139",
         None, "master_SAE_ID shall not be blank"),
    ]
    for method, path, body, message in dcases:
        msg_is(curl(PB, "sae-b", method, path, body), 400, message,
               "%s %s %s" % (method, path, body))
    # Oversized body: 413 with a JSON body.
    s, d = curl(PA, "sae-a", "POST", enc, '{"x":"' + "a" * 70000 + '"}')
    check(s == 413 and isinstance(d, dict), "oversized body 413: %d" % s)
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status",
                extra=("-H", "X-Big: " + "b" * 20000))
    check(s == 431 and isinstance(d, dict), "oversized header 431: %d" % s)
    many = []
    for i in range(70):
        many += ["-H", "X-H%d: 1" % i]
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status", extra=many)
    check(s == 431, "too many header fields 431: %d" % s)
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status?" + "q" * 5000)
    check(s == 414, "target too long 414: %d" % s)


def test_unauthorized_and_multicast():
    # An SAE not registered at the KME: 401 with a JSON body, on every endpoint.
    for path in ("/api/v1/keys/sae-b/status", "/api/v1/keys/sae-b/enc_keys"):
        msg_is(curl(PA, "sae-d", "GET", path), 401, None, "unregistered SAE " + path)
    # A registered SAE that was not given the key: 401.
    s, d = curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys", '{"number":2}')
    ids = list(keys_of(d))
    time.sleep(0.3)
    s, d = dec_retry(PB, "sae-c", "sae-a", ids)
    msg_is((s, d), 401, None, "dec_keys by an SAE that was not given the keys")
    s, d = dec_retry(PB, "sae-b", "sae-a", ids)
    check(s == 200, "the right slave still gets them after a 401")
    # Wrong master in the path: the key is not found for that master.
    s, d = curl(PA, "sae-x", "GET", "/api/v1/keys/sae-b/enc_keys")
    kid = d["keys"][0]["key_ID"]
    time.sleep(0.3)
    msg_is(curl(PB, "sae-b", "GET", "/api/v1/keys/sae-a/dec_keys?key_ID=" + kid), 400,
           "one or more keys specified are not found on KME", "wrong master")
    s, _ = dec_retry(PB, "sae-b", "sae-x", [kid])
    check(s == 200, "right master")
    # Multicast: sae-b and sae-c each collect the same key once.
    s, d = curl(PA, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys",
                '{"number":1,"size":512,"additional_slave_SAE_IDs":["sae-c"]}')
    check(s == 200, "multicast enc_keys")
    mk = keys_of(d)
    s1, d1 = dec_retry(PB, "sae-c", "sae-a", list(mk))
    s2, d2 = dec_retry(PB, "sae-b", "sae-a", list(mk))
    check(s1 == 200 and s2 == 200 and keys_of(d1) == mk and keys_of(d2) == mk,
          "multicast: both slaves get the identical key")
    s3, _ = curl(PB, "sae-c", "POST", "/api/v1/keys/sae-a/dec_keys",
                 json.dumps({"key_IDs": [{"key_ID": i} for i in mk]}))
    check(s3 == 400, "multicast: no slave gets it twice")


def test_tls_rejections():
    s, d = curl(PA, None, "GET", "/api/v1/keys/sae-b/status")
    check(s == 0, "no client certificate: TLS rejects (got %d)" % s)
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status", certbase=FOREIGN)
    check(s == 0, "client certificate from another CA: TLS rejects (got %d)" % s)
    # A KME certificate is a valid client cert too; its CN is the caller's ID.
    s, d = curl(PA, "kme-b", "GET", "/api/v1/keys/sae-b/status")
    check(s == 401, "kme-b as an SAE is not registered at kme-a: %d" % s)


def test_no_replace():
    s, d1 = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=2")
    s, d2 = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=2")
    k = keys_of(d1)
    k.update(keys_of(d2))
    s, d = dec_retry(PB, "sae-b", "sae-a", list(k))
    check(s == 200 and keys_of(d) == k, "later enc_keys never replace outstanding keys")


def test_durability():
    # 1. kill -9 the slave KME right after enc_keys, restart: dec_keys works.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=5&size=128")
    k = keys_of(d)
    B.kill9()
    B.start()
    s, d = dec_retry(PB, "sae-b", "sae-a", list(k), timeout=20)
    check(s == 200 and keys_of(d) == k, "kill -9 of the slave KME loses no key: %d %r" % (s, d))
    # 2. kill -9 the master KME right after enc_keys, restart: still delivered.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=5&size=128")
    k = keys_of(d)
    A.kill9()
    A.start()
    s, d = dec_retry(PB, "sae-b", "sae-a", list(k), timeout=20)
    check(s == 200 and keys_of(d) == k, "kill -9 of the master KME loses no key")
    wait_ready(PA, "sae-a", "sae-b", min_keys=50)
    # 3. Delivered then kill -9: never delivered again.
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys")
    k = keys_of(d)
    s, d = dec_retry(PB, "sae-b", "sae-a", list(k))
    check(s == 200, "delivered before the crash")
    B.kill9()
    B.start()
    wait_ready(PB, "sae-b", "sae-a", min_keys=1)
    msg_is(curl(PB, "sae-b", "POST", "/api/v1/keys/sae-a/dec_keys",
                json.dumps({"key_IDs": [{"key_ID": i} for i in k]})), 400,
           "one or more keys specified are not found on KME",
           "a delivered key is never delivered again after kill -9")
    # 4. The slave KME is down: enc_keys still served from acknowledged
    #    material; the keys arrive when the link is back.
    B.kill9()
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=3")
    check(s == 200, "enc_keys while the peer KME is down")
    k = keys_of(d)
    s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/status")
    B.start()
    s, d = dec_retry(PB, "sae-b", "sae-a", list(k), timeout=20)
    check(s == 200 and keys_of(d) == k, "keys reserved while the link was down arrive")
    # Master-side keys drawn before the crash are never handed out again.
    seen = set()
    for _ in range(20):
        s, d = curl(PA, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=4&size=64")
        for kk in d["keys"]:
            check(kk["key"] not in seen, "no key material repeats")
            seen.add(kk["key"])


def test_concurrent(n_clients=16, per_client=25):
    ctx_a = ssl.create_default_context(cafile=CA)
    ctx_a.load_cert_chain(*cert("sae-a"))
    ctx_b = ssl.create_default_context(cafile=CA)
    ctx_b.load_cert_chain(*cert("sae-b"))
    errors, got = [], {}
    lock = threading.Lock()

    def worker():
        try:
            ca = http.client.HTTPSConnection("127.0.0.1", PA, context=ctx_a, timeout=20)
            cb = http.client.HTTPSConnection("127.0.0.1", PB, context=ctx_b, timeout=20)
            for _ in range(per_client):
                ca.request("POST", "/api/v1/keys/sae-b/enc_keys", '{"number":2,"size":256}',
                           {"Content-Type": "application/json"})
                r = ca.getresponse()
                d = json.loads(r.read())
                if r.status != 200:
                    errors.append("enc %d %r" % (r.status, d))
                    continue
                k = keys_of(d)
                body = json.dumps({"key_IDs": [{"key_ID": i} for i in k]})
                for _ in range(100):
                    cb.request("POST", "/api/v1/keys/sae-a/dec_keys", body,
                               {"Content-Type": "application/json"})
                    r = cb.getresponse()
                    dd = json.loads(r.read())
                    if r.status != 400:
                        break
                    time.sleep(0.02)
                if r.status != 200 or keys_of(dd) != k:
                    errors.append("dec %d %r" % (r.status, dd))
                with lock:
                    for i, v in k.items():
                        if i in got:
                            errors.append("duplicate key_ID " + i)
                        got[i] = v
            ca.close()
            cb.close()
        except Exception as e:  # noqa: BLE001 - report any failure
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    dt = time.time() - t0
    check(not errors, "concurrent clients: %d errors, first: %s" % (len(errors), errors[:3]))
    check(len(got) == n_clients * per_client * 2, "concurrent: all keys delivered once")
    check(len(set(got.values())) == len(got), "concurrent: no two keys share material")
    print("concurrent: %d clients, %d deliveries in %.2fs" % (n_clients, len(got), dt))


def test_demo_one_process():
    p1, p2 = free_port(), free_port()
    cfg = write_cfg("demo.json", [
        kme_cfg("kme-a", p1, 0, "kme-b", dbname="demo-a.db"),
        kme_cfg("kme-b", p2, 0, "kme-a", dbname="demo-b.db", key_expiry="2s"),
    ])
    demo = Kme("demo", cfg)
    demo.start()
    wait_ready(p1, "sae-a", "sae-b")
    wait_ready(p2, "sae-b", "sae-a")
    s, d = curl(p1, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys?number=2&size=512")
    k = keys_of(d)
    s, d = dec_retry(p2, "sae-b", "sae-a", list(k))
    check(s == 200 and keys_of(d) == k, "one-process demo: A -> B")
    s, d = curl(p2, "sae-b", "GET", "/api/v1/keys/sae-a/enc_keys?size=64")
    k = keys_of(d)
    s, d = dec_retry(p1, "sae-a", "sae-b", list(k))
    check(s == 200 and keys_of(d) == k, "one-process demo: B -> A")
    # Held keys expire at kme-b after key_expiry (2 s).
    s, d = curl(p1, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys")
    kid = d["keys"][0]["key_ID"]
    time.sleep(3.0)
    msg_is(curl(p2, "sae-b", "GET", "/api/v1/keys/sae-a/dec_keys?key_ID=" + kid), 400,
           "one or more keys specified are not found on KME", "expired key")
    demo.stop()
    log = demo.check_log()
    check("expired uncollected" in log, "expiry is logged")


def test_sae_id_field():
    # The caller's SAE ID from another subject field (O); the peer KME is
    # absent: the 014 API works without the link, and the outage is logged
    # once, not at every reconnect attempt.
    port = free_port()
    cfg = write_cfg("field.json", [kme_cfg("kme-a", port, 0, "kme-b", free_port(),
                                           dbname="field.db", sae_id_field="O",
                                           sae_ids=["QuMail Gateway"])])
    k = Kme("field", cfg)
    k.start()
    for _ in range(50):
        s, d = curl(port, "sae-a", "GET", "/api/v1/keys/sae-b/status")
        if s != 0:
            break
        time.sleep(0.1)
    check(s == 200 and d["master_SAE_ID"] == "QuMail Gateway",
          "sae_id_field O: %d %r" % (s, d))
    check(d["stored_key_count"] == 0, "no key without the peer's acknowledgement")
    msg_is(curl(port, "sae-a", "GET", "/api/v1/keys/sae-b/enc_keys"), 503, None,
           "enc_keys with an empty pool")
    time.sleep(3)
    k.stop()
    log = k.check_log()
    check(log.count("not established") == 1, "link outage logged once")


for test in (test_sae_id_field, test_status, test_forms, test_errors, test_unauthorized_and_multicast,
             test_tls_rejections, test_no_replace, test_durability, test_concurrent,
             test_demo_one_process):
    print("--", test.__name__)
    test()

# A KME whose database was replaced is refused by its peer (both ways)
# instead of re-synchronising onto inconsistent key streams.
B.kill9()
for suffix in ("", "-wal", "-shm"):
    try:
        os.unlink(os.path.join(TMP, "kme-b.db" + suffix))
    except FileNotFoundError:
        pass
B.start()
time.sleep(3)
check("does not match ours" in A.check_log(), "kme-a refuses the reset kme-b")
check("does not match ours" in B.check_log(), "the reset kme-b refuses kme-a")

A.stop()
B.stop()
text = A.check_log() + B.check_log()
check(" sae=sae-a GET /api/v1/keys/sae-b/enc_keys -> 200 keys=" in text,
      "one log line per request with SAE, endpoint, status, keys")
# No key material in the logs: none of the delivered keys' base64 appears.
check(KEYS_SEEN and not any(k in text for k in KEYS_SEEN),
      "no key material in the logs (%d keys checked)" % len(KEYS_SEEN))
if FAILURES:
    print("%d FAILURES (logs kept in %s)" % (len(FAILURES), TMP))
    sys.exit(1)
print("all KME integration tests passed")
