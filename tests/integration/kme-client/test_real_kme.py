#!/usr/bin/env python3
"""The KME client against real KMEs: `qumail kme` with two KMEs in one
process (linked over loopback mTLS), then one KME per process (two
organisations, linked over mTLS). Runs the library's API checks
(kme_client_api: pool, queueing, exact enc splitting, dec order and bytes,
typed errors, cancellation) and the kme-client CLI round trip (status, enc
--bits, enc --number/--size, dec with --show-keys compared byte for byte)."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "e2e", "lib"))
from procutil import free_ports  # noqa: E402

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
BUILD = os.environ.get("QUMAIL_BUILD", os.path.dirname(QUMAIL))
API = os.path.join(BUILD, "tests/integration/kme-client/kme_client_api")

failures = []


def check(name, ok, detail=""):
    print(("ok  " if ok else "FAIL"), name, detail)
    if not ok:
        failures.append(name)


def kme_cfg(tmp, certs, me, peer, link_port=0, peer_port=None):
    link = {"port": link_port, "peer_kme_id": peer}
    if peer_port is not None:
        link.update({"peer_host": "127.0.0.1", "peer_port": peer_port})
    return {
        "kme_id": me, "port": 0,
        "tls": {"cert": f"{certs}/{me}.pem", "key": f"{certs}/{me}.key",
                "ca": f"{certs}/ca.pem"},
        "database": f"{tmp}/{me}.db",
        "link": link,
        "max_key_size": 1024, "min_key_size": 64, "max_key_per_request": 128,
        "secret_key_rate": 16000000,
    }


def wait_material(certs, a, bits=8000000):
    """Waits until KME A holds key material for the tests (the simulated
    link fills the pools at secret_key_rate once the KMEs are linked)."""
    deadline = time.monotonic() + 30
    have = 0
    while time.monotonic() < deadline:
        rc, st = cli(certs, a, "sae-a", "status", "--slave", "sae-b")
        if rc == 0:
            have = st["stored_key_count"] * st["key_size"]
            if have >= bits:
                return
        time.sleep(0.3)
    check("key material available", False, f"{have} bits after 30 s")


def spawn(tmp, name, kmes, want):
    """Starts one qumail kme process; returns it and {kme_id: API port}."""
    cfg = os.path.join(tmp, name + ".json")
    with open(cfg, "w") as f:
        json.dump({"kmes": kmes}, f)
    log = open(os.path.join(tmp, name + ".log"), "w+")
    proc = subprocess.Popen([QUMAIL, "kme", "--config", cfg], stdout=log, stderr=log)
    PROCS.append(proc)
    ports = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ports) < want and proc.poll() is None:
        time.sleep(0.1)
        log.seek(0)
        for m in re.finditer(r"kme (kme-[ab]): 014 API on 127\.0\.0\.1:(\d+)", log.read()):
            ports[m.group(1)] = int(m.group(2))
    if len(ports) < want:
        log.seek(0)
        print(log.read())
        raise SystemExit("qumail kme did not start")
    return proc, ports


def free_port():
    """A port below the kernel's ephemeral range, never handed out twice
    here (procutil.free_ports): a port the kernel picked for port 0 can be
    taken by any process's next outgoing connection before our KME binds it
    (seen under ctest -j2)."""
    return free_ports(1)[0]


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    check("qumail kme exited cleanly", proc.returncode == 0, f"rc={proc.returncode}")


PROCS = []


def cli(certs, port, sae_cert, *args):
    cmd = [QUMAIL, "kme-client", args[0], "--url", f"https://127.0.0.1:{port}",
           "--cert", f"{certs}/{sae_cert}.pem", "--key", f"{certs}/{sae_cert}.key",
           "--ca", f"{certs}/ca.pem", "--kme-id", "kme-a" if port == PORTS["kme-a"] else "kme-b"
           ] + list(args[1:])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, {"unparsed": p.stdout + p.stderr}


PORTS = {}


def round_trip(certs, a, b, label):
    wait_material(certs, a)
    rc, st = cli(certs, a, "sae-a", "status", "--slave", "sae-b")
    check(label + "status", rc == 0 and st.get("source_KME_ID") == "kme-a"
          and st.get("slave_SAE_ID") == "sae-b", json.dumps(st)[:200])
    rc, enc = cli(certs, a, "sae-a", "enc", "--slave", "sae-b", "--bits", "3000",
                  "--show-keys")
    sizes = [k["size"] for k in enc.get("keys", [])]
    check(label + "enc --bits 3000: exact, split by max_key_size",
          rc == 0 and sum(sizes) == 3000 and max(sizes) <= 1024, str(sizes))
    ids = ",".join(k["key_ID"] for k in enc.get("keys", []))
    rc, dec = cli(certs, b, "sae-b", "dec", "--master", "sae-a", "--key-id", ids,
                  "--show-keys")
    check(label + "dec right after enc: same keys, same order",
          rc == 0 and dec.get("keys") == enc.get("keys"))
    p = subprocess.run([API, f"https://127.0.0.1:{a}", f"https://127.0.0.1:{b}", certs,
                        "sae-a", "sae-b", "sae-c"], capture_output=True, text=True,
                       timeout=120)
    print(p.stdout, p.stderr, end="")
    check(label + "kme_client_api", p.returncode == 0)


def one_process(tmp, certs):
    proc, ports = spawn(tmp, "pair", [kme_cfg(tmp, certs, "kme-a", "kme-b"),
                                      kme_cfg(tmp, certs, "kme-b", "kme-a")], 2)
    PORTS.update(ports)
    try:
        a, b = ports["kme-a"], ports["kme-b"]
        round_trip(certs, a, b, "one process: ")
        rc, enc = cli(certs, a, "sae-a", "enc", "--slave", "sae-b", "--number", "300",
                      "--size", "512")
        check("enc --number 300 (3 calls of <= 128)",
              rc == 0 and len(enc.get("keys", [])) == 300 and enc.get("total_bits") == 300 * 512)
        check("no key bytes without --show-keys",
              all("key" not in k for k in enc.get("keys", [])))
        rc, err = cli(certs, a, "sae-a", "enc", "--slave", "sae-b", "--size", "2048")
        check("size above max_key_size: refused", rc == 1 and err.get("error") == "KME_ELIMITS",
              json.dumps(err))
        t0 = time.monotonic()
        rc, err = cli(certs, b, "sae-b", "dec", "--master", "sae-a", "--key-id",
                      "550e8400-e29b-41d4-a716-446655440000", "--deadline", "500")
        waited = time.monotonic() - t0
        # retried until the deadline: at least the 500 ms (the error text
        # carries no attempt count: it must be the same for the same facts)
        check("unknown key: not found after retries (%.2f s)" % waited, rc == 1 and
              err.get("error") == "KME_ENOTFOUND" and waited >= 0.45, json.dumps(err))
        rc, err = cli(certs, a, "sae-a", "status", "--slave", "sae-b", "--kme-id", "kme-b")
        # --kme-id given twice: the last one (kme-b) must not match kme-a
        check("wrong KME ID refused", rc == 1 and err.get("error") == "KME_ETLS", json.dumps(err))
    finally:
        stop(proc)


def two_processes(tmp, certs):
    """Two organisations: one KME per process, linked over mTLS."""
    la, lb = free_port(), free_port()
    pa, ports_a = spawn(tmp, "org-a", [kme_cfg(tmp + "/a", certs, "kme-a", "kme-b", la, lb)], 1)
    pb, ports_b = spawn(tmp, "org-b", [kme_cfg(tmp + "/b", certs, "kme-b", "kme-a", lb, la)], 1)
    PORTS.clear()
    PORTS.update(ports_a)
    PORTS.update(ports_b)
    try:
        round_trip(certs, ports_a["kme-a"], ports_b["kme-b"], "two processes: ")
    finally:
        stop(pb)
        stop(pa)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        certs = os.path.join(tmp, "certs")
        subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", certs, "-k", "kme-a",
                        "-k", "kme-b", "-s", "sae-a", "-s", "sae-b", "-s", "sae-c"], check=True,
                       stdout=subprocess.DEVNULL)
        os.makedirs(os.path.join(tmp, "a"))
        os.makedirs(os.path.join(tmp, "b"))
        try:
            one_process(tmp, certs)
            two_processes(tmp, certs)
        finally:
            for p in PROCS:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
