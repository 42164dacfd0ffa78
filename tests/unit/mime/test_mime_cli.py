#!/usr/bin/env python3
"""`qumail mime` end to end: key-file round trips of the corpus at both
levels, the key budget (`bits`), every decrypt error as exit status 1 with
no output file left behind, and the --kme path against two real `qumail
kme` simulators linked over loopback mTLS (sender SAE fetches enc_keys,
receiver SAE fetches the same keys by ID with dec_keys)."""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
SRC = os.environ.get("QUMAIL_SRC", os.path.join(os.path.dirname(__file__), "../../.."))
CORPUS = os.path.join(SRC, "tests/unit/mime/corpus")
failures = []


def check(name, ok, detail=""):
    print(("ok  " if ok else "FAIL"), name, detail)
    if not ok:
        failures.append(name)


def run(*args, stdin=None):
    return subprocess.run([QUMAIL, "mime"] + list(args), input=stdin,
                          capture_output=True, timeout=120)


def keyfile(path, n_bits, key_bytes=1000, prefix="k"):
    total = n_bits // 8
    keys, i = [], 0
    while total > 0:
        n = min(key_bytes, total)
        keys.append({"key_ID": f"{prefix}-{i}", "key": base64.b64encode(os.urandom(n)).decode()})
        total -= n
        i += 1
    with open(path, "w") as f:
        json.dump({"keys": keys}, f)


def keyfile_roundtrips(tmp):
    names = sorted(n for n in os.listdir(CORPUS) if n.endswith(".eml"))
    for level in ("otp", "aes"):
        ok = True
        for name in names:
            src = os.path.join(CORPUS, name)
            p = run("bits", "--level", level, src)
            bits = int(p.stdout.split()[0])
            kf = os.path.join(tmp, "keys.json")
            keyfile(kf, bits)
            enc = os.path.join(tmp, "enc.eml")
            p1 = run("encrypt", "--level", level, "-k", kf, "-o", enc, src)
            p2 = run("decrypt", "-k", kf, enc)
            orig = open(src, "rb").read()
            if p1.returncode != 0 or p2.returncode != 0 or p2.stdout != orig:
                ok = False
                print("  ", name, p1.stderr, p2.stderr)
        check(f"corpus round trip via CLI, level {level} ({len(names)} messages)", ok)


def errors(tmp):
    src = os.path.join(CORPUS, "03-apple-mail.eml")
    size = os.path.getsize(src)
    p = run("bits", "--level", "auto", "--auto-threshold", str(size - 1), src)
    check("bits: auto above threshold is AES", p.stdout.split()[:2] == [b"256", b"AES-256-GCM"],
          p.stdout)
    p = run("bits", "--level", "otp", src)
    check("bits: otp = 8 * size + 256", int(p.stdout.split()[0]) == 8 * size + 256)
    kf, other = os.path.join(tmp, "k.json"), os.path.join(tmp, "other.json")
    keyfile(kf, 256, prefix="a")
    keyfile(other, 256, prefix="a")  # same IDs, other bytes
    enc = os.path.join(tmp, "e.eml")
    p = run("encrypt", "-l", "aes", "-k", kf, "--subject", "[secret]", "-o", enc, src)
    check("encrypt aes", p.returncode == 0)
    text = open(enc, "rb").read()
    check("placeholder subject outside", b"\r\nSubject: [secret]\r\n" in text)
    p = run("inspect", "--json", enc)
    info = json.loads(p.stdout)
    check("inspect --json", info["algorithm"] == "AES-256-GCM" and info["keys"][0]["bits"] == 256
          and info["plaintext_length"] == size, p.stdout[:200])
    out = os.path.join(tmp, "out.eml")
    p = run("decrypt", "-k", other, "-o", out, enc)
    check("wrong key: authentication failed, no output file",
          p.returncode == 1 and b"authentication failed" in p.stderr and not os.path.exists(out),
          p.stderr)
    keyfile(other, 256, prefix="b")
    p = run("decrypt", "-k", other, "-o", out, enc)
    check("missing key", p.returncode == 1 and b"key missing" in p.stderr, p.stderr)
    p = run("decrypt", "-k", kf, "-o", out, src)
    check("plain message: not encrypted", p.returncode == 1 and b"not a QKD" in p.stderr)
    bad = text.replace(b"Length: ", b"Length: 1", 1)
    p = run("decrypt", "-k", kf, stdin=bad)
    check("edited control part: malformed", p.returncode == 1 and b"malformed" in p.stderr
          and p.stdout == b"", p.stderr)
    keyfile(kf, 512, prefix="a")
    p = run("encrypt", "-l", "aes", "-k", kf, src)
    check("surplus key material refused", p.returncode == 1 and b"more key material" in p.stderr)
    p = run("encrypt", "-l", "aes", src)
    check("no key source: usage", p.returncode == 2 and b"256 key bits" in p.stderr, p.stderr)
    p = run("--help")
    check("--help", p.returncode == 0 and b"usage: qumail mime" in p.stdout)
    p = run("recipients", os.path.join(CORPUS, "17-large-attachment-lf.eml"))
    check("recipients", p.stdout.splitlines() == [b"to sybil@example.net", b"to trent@example.net",
                                                  b"bcc victor@example.org"], p.stdout)


def format2(tmp):
    """Format 2 through the CLI: recipient binding, ETSI 004 chunks in a key
    file, escaped message values, the key-file errors, outputs kept."""
    src = os.path.join(CORPUS, "03-apple-mail.eml")
    size = os.path.getsize(src)
    need = size + 32
    ksid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    keys = [{"key_ID": "k-014", "key": base64.b64encode(os.urandom(100)).decode()}]
    left, idx = need - 100, 5
    while left > 0:  # 64-octet chunks, the last used in part
        keys.append({"ksid": ksid, "index": idx, "key": base64.b64encode(os.urandom(64)).decode()})
        left -= 64
        idx += 1
    kf = os.path.join(tmp, "k004.json")
    with open(kf, "w") as f:
        json.dump({"keys": keys}, f)
    enc = os.path.join(tmp, "e004.eml")
    p = run("encrypt", "-l", "otp", "-k", kf, "--recipient", "Bob@Example.NET",
            "--recipient", "carol@example.com", "-o", enc, src)
    check("encrypt with 004 chunks and recipients", p.returncode == 0, p.stderr)
    info = json.loads(run("inspect", "--json", enc).stdout)
    check("inspect: recipients normalised", info["recipients"] == ["bob@example.net", "carol@example.com"],
          info["recipients"])
    check("inspect: one 014 entry and one 004 range",
          len(info["keys"]) == 2 and info["keys"][1]["ksid"] == ksid
          and info["keys"][1]["first_index"] == 5 and info["keys"][1]["count"] == len(keys) - 1
          and sum(k["bits"] for k in info["keys"]) == 8 * need, info["keys"])
    p = run("decrypt", "-k", kf, enc)
    check("decrypt with 004 chunks", p.returncode == 0 and p.stdout == open(src, "rb").read(), p.stderr)
    text = open(enc, "rb").read()
    check("default placeholder and descriptions outside",
          b"Subject: Encrypted message (QuMail QKD)" in text
          and b"Content-Description: Encrypted message: read it through a QuMail gateway" in text)

    # values taken from a message are escaped on stderr and stdout
    bad = text.replace(b"\nAlgorithm: OTP-POLY1305", b"\nAlgorithm: OTP\x1b[31m\x07\xff", 1)
    p = run("decrypt", "-k", kf, stdin=bad)
    check("unsupported algorithm: ESC, BEL, 0xFF escaped",
          p.returncode == 1 and b"unsupported algorithm" in p.stderr
          and b"\x1b" not in p.stderr and b"\x07" not in p.stderr and b"\xff" not in p.stderr
          and b"OTP\\x1b[31m\\x07\\xff" in p.stderr, p.stderr)
    msg = b"To: \"a\x1b[2Jb\"@example.org\r\nCc: b@example.org\r\n\r\nbody\r\n"
    p = run("recipients", stdin=msg)
    check("recipients: control characters escaped", p.returncode == 0 and b"\x1b" not in p.stdout
          and b'to "a\\x1b[2jb"@example.org' in p.stdout and b"cc b@example.org" in p.stdout,
          p.stdout)

    # key files: empty lists say so
    for content in ("[]", '{"keys": []}'):
        with open(kf, "w") as f:
            f.write(content)
        p = run("decrypt", "-k", kf, enc)
        check(f"key file {content}: 'empty'", p.returncode == 1 and b"key list is empty" in p.stderr
              and b"expected" not in p.stderr, p.stderr)

    # a failed run leaves an existing output as it was; a device is never removed
    out = os.path.join(tmp, "keep.txt")
    with open(out, "wb") as f:
        f.write(b"keep me")
    p = run("decrypt", "-k", os.path.join(tmp, "k.json"), "-o", out, enc)
    check("failed decrypt keeps the existing output file",
          p.returncode == 1 and open(out, "rb").read() == b"keep me", p.stderr)
    p = run("decrypt", "-k", os.path.join(tmp, "k.json"), "-o", "/dev/null", enc)
    check("failed decrypt to /dev/null leaves /dev/null", p.returncode == 1
          and os.path.exists("/dev/null") and not os.path.isfile("/dev/null"), p.stderr)


def start_kmes(tmp, certs):
    kmes = []
    for me, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
        kmes.append({
            "kme_id": me, "port": 0,
            "tls": {"cert": f"{certs}/{me}.pem", "key": f"{certs}/{me}.key",
                    "ca": f"{certs}/ca.pem"},
            "database": f"{tmp}/{me}.db",
            "link": {"port": 0, "peer_kme_id": peer},
            "max_key_size": 8192, "min_key_size": 64, "max_key_per_request": 128,
        })
    cfg = os.path.join(tmp, "kme.json")
    with open(cfg, "w") as f:
        json.dump({"kmes": kmes}, f)
    log = open(os.path.join(tmp, "kme.log"), "w+")
    proc = subprocess.Popen([QUMAIL, "kme", "--config", cfg], stdout=log, stderr=log)
    ports = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ports) < 2 and proc.poll() is None:
        time.sleep(0.1)
        log.seek(0)
        for m in re.finditer(r"kme (kme-[ab]): 014 API on 127\.0\.0\.1:(\d+)", log.read()):
            ports[m.group(1)] = int(m.group(2))
    if len(ports) < 2:
        log.seek(0)
        print(log.read())
        proc.kill()
        proc.wait()
        raise RuntimeError("qumail kme did not start")
    return proc, ports


def with_kme(tmp):
    certs = os.path.join(tmp, "certs")
    subprocess.run(["sh", os.path.join(SRC, "certs/mkcerts.sh"), "-o", certs, "-k", "kme-a",
                    "-k", "kme-b", "-s", "sae-a", "-s", "sae-b"], check=True,
                   stdout=subprocess.DEVNULL)
    proc, ports = start_kmes(tmp, certs)
    try:
        def tls(sae, kme):
            return ["--kme", f"https://127.0.0.1:{ports[kme]}", "--cert", f"{certs}/{sae}.pem",
                    "--key", f"{certs}/{sae}.key", "--ca", f"{certs}/ca.pem", "--kme-id", kme]
        for level, name in (("otp", "04-mutt-pgp-signed-lf.eml"), ("aes", "01-thunderbird-attachment.eml"),
                            ("otp", "06-calendar-invite.eml")):
            src = os.path.join(CORPUS, name)
            enc = os.path.join(tmp, "kenc.eml")
            p = run("encrypt", "-l", level, "--slave-sae", "sae-b", *tls("sae-a", "kme-a"),
                    "-o", enc, src)
            ok = p.returncode == 0
            if not ok:
                print(p.stderr)
            p2 = run("inspect", "--json", enc) if ok else None
            info = json.loads(p2.stdout) if ok and p2.returncode == 0 else {}
            check(f"--kme encrypt {level} {name}: ids from KME status",
                  ok and info.get("source_kme_id") == "kme-a" and info.get("master_sae_id") == "sae-a"
                  and info.get("slave_sae_id") == "sae-b", json.dumps(info)[:300])
            if name.startswith("06-"):
                # From a pipe: the CLI spools it before reading the key IDs.
                p3 = run("decrypt", *tls("sae-b", "kme-b"), stdin=open(enc, "rb").read())
                how = "from stdin"
            else:
                p3 = run("decrypt", *tls("sae-b", "kme-b"), enc)
                how = "from a file"
            check(f"--kme decrypt {level} {name} {how}: byte-exact",
                  p3.returncode == 0 and p3.stdout == open(src, "rb").read(), p3.stderr)
        # The sender SAE cannot fetch the receiver's keys (ETSI 014 403 or not found).
        p = run("decrypt", *tls("sae-a", "kme-a"), os.path.join(tmp, "kenc.eml"))
        check("--kme decrypt by the wrong SAE fails", p.returncode == 1 and p.stdout == b"",
              p.stderr[:200])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        keyfile_roundtrips(tmp)
        errors(tmp)
        format2(tmp)
        with_kme(tmp)
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
