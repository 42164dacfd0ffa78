#!/usr/bin/env python3
"""Independent reference encoder for the test vectors of mime/FORMAT-SPEC.md
(format version 2).

Written from the spec alone (not from the C code), using the Python
`cryptography` package (Debian: python3-cryptography), so the C unit test
(test_mime_vectors) comparing the C output with these files byte for byte
checks two implementations against each other. Writes, per vector N:
vN-input.eml, vN-keys.json (parameters and keys), vN-output.eml.

Run: python3 make_vectors.py [--check] (it works in its own folder)
--check: compare with the files on disk instead of writing (exit 1 on a
difference); the unit test `mime_vectors_python` runs this."""
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, poly1305
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HKDF_INFO = b"QuMail QKD-MIME v2 AES-256-GCM message key"
PROTOCOL = "application/x-qkd-encrypted"
KEPT = {"from", "sender", "reply-to", "to", "cc", "date", "message-id",
        "in-reply-to", "references", "subject", "return-path", "received",
        "delivered-to", "precedence", "auto-submitted"}
PREAMBLE = [
    "This is a QuMail QKD-encrypted message (format 2). Your mail",
    "program cannot show it by itself: it was encrypted with keys from",
    "quantum key distribution (QKD), and only a QuMail gateway holding",
    "those keys can decrypt it. Read this mailbox through your QuMail",
    "gateway (IMAP), or ask your administrator. The attachment",
    "encrypted.qkd holds the original message; the part before it names",
    "the keys that unlock it.",
]
CONTROL_DESCRIPTION = "QuMail key references (not the message itself)"
DATA_DESCRIPTION = "Encrypted message: read it through a QuMail gateway"
DEFAULT_SUBJECT = "Encrypted message (QuMail QKD)"


def kept(name):
    n = name.lower()
    if n in KEPT or n.startswith("list-"):
        return True
    return n.startswith("resent-") and n != "resent-bcc"


def fields(msg):
    """Header fields (lists of raw lines) of the header block (2.2)."""
    lines = msg.split(b"\n")
    out = []
    for ln in lines:
        ln = ln[:-1] if ln.endswith(b"\r") else ln
        if ln == b"":
            break
        if ln[:1] in (b" ", b"\t") and out:
            out[-1].append(ln)
        else:
            out.append([ln])
    return out


def subject_line(placeholder):
    """2.3: as is when printable ASCII without "=?", else B encoded-words of
    at most 39 octets of whole UTF-8 characters, one per line."""
    if all(0x20 <= ord(c) < 0x7f for c in placeholder) and "=?" not in placeholder:
        return [b"Subject: " + placeholder.encode()]
    words, cur = [], b""
    for ch in placeholder:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > 39:
            words.append(cur)
            cur = b""
        cur += b
    words.append(cur)
    enc = [b"=?UTF-8?B?" + base64.b64encode(w) + b"?=" for w in words]
    return [b"Subject: " + enc[0]] + [b" " + w for w in enc[1:]]


def normalise(addr):
    """3.5: ASCII A-Z lower-cased, nothing else changed."""
    return addr.encode("utf-8").translate(bytes.maketrans(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz"))


def pct(addr):
    """3.5: octets >= 0x80, '%' and SP as %HH (upper-case hex)."""
    return "".join(f"%{o:02X}" if o >= 0x80 or o in (0x25, 0x20) else chr(o)
                   for o in addr)


def entries(keys, needed_octets):
    """3.4: 014 keys one entry each; runs of 004 chunks of one stream with
    consecutive indices and one size one entry; the last chunk in part."""
    out, left = [], needed_octets
    for k in keys:
        use = min(len(k["bytes"]), left)
        left -= use
        last = out[-1] if out else None
        if ("ksid" in k and last and last["kind"] == "004" and last["ksid"] == k["ksid"]
                and last["first"] + last["count"] == k["index"]
                and last["chunk"] == len(k["bytes"])):
            last["count"] += 1
            last["bits"] += 8 * use
            continue
        if "ksid" in k:
            out.append({"kind": "004", "ksid": k["ksid"], "first": k["index"], "count": 1,
                        "chunk": len(k["bytes"]), "bits": 8 * use})
        else:
            out.append({"kind": "014", "id": k["key_ID"], "bits": 8 * use})
    assert left == 0
    return out


def control_text(v, length, ents, rcpts):
    lines = ["Version: 2", f"Algorithm: {v['algorithm']}",
             f"Source-KME-ID: {v['source_kme_id']}",
             f"Master-SAE-ID: {v['master_sae_id']}",
             f"Slave-SAE-ID: {v['slave_sae_id']}", f"Length: {length}"]
    if v["algorithm"] == "AES-256-GCM":
        lines.append("Nonce: " + v["nonce"])
    lines.append(f"Recipient-Count: {len(rcpts)}")
    lines += [f"Recipient: {pct(r)}" for r in rcpts]
    lines.append(f"Key-Count: {len(ents)}")
    for e in ents:
        if e["kind"] == "014":
            lines.append(f"Key: {e['id']} {e['bits']}")
        else:
            lines.append(f"Key-Chunks: {e['ksid']} {e['first']} {e['count']} "
                         f"{8 * e['chunk']} {e['bits']}")
    return "".join(ln + "\r\n" for ln in lines).encode()


def pad16(b):
    return b"\0" * (-len(b) % 16)


def mac_data(ctrl, plaintext):
    """4.2: the RFC 8439 2.8 layout, the plaintext in the ciphertext's place."""
    return (ctrl + pad16(ctrl) + plaintext + pad16(plaintext) +
            len(ctrl).to_bytes(8, "little") + len(plaintext).to_bytes(8, "little"))


def build(msg, v, keys):
    first = msg.split(b"\n", 1)[0]
    eol = b"\n" if (b"\n" in msg and not first.endswith(b"\r")) else b"\r\n"
    otp = v["algorithm"] == "OTP-POLY1305"
    needed = len(msg) + 32 if otp else 32
    ents = entries(keys, needed)
    rcpts = []
    for r in v["recipients"]:
        n = normalise(r)
        if n not in rcpts:
            rcpts.append(n)
    ctrl = control_text(v, len(msg), ents, rcpts)
    stream = b"".join(k["bytes"] for k in keys)[:needed]
    if otp:
        mac_key, pad = stream[:32], stream[32:]
        ct = bytes(a ^ b for a, b in zip(msg, pad))
        data = ct + poly1305.Poly1305.generate_tag(mac_key, mac_data(ctrl, msg))
    else:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=HKDF_INFO).derive(stream)
        data = AESGCM(key).encrypt(bytes.fromhex(v["nonce"]), msg, ctrl)
    out = []
    placeholder = v["subject_placeholder"]
    for f in fields(msg):
        if b":" not in f[0]:
            continue
        name = f[0].split(b":", 1)[0].strip()
        if not kept(name.decode("latin-1")):
            continue
        if name.lower() == b"subject" and v["protect_subject"]:
            out += subject_line(placeholder if placeholder is not None else DEFAULT_SUBJECT)
        else:
            out.extend(f)
    b = v["boundary"].encode()
    first_id = ents[0]["id"] if ents[0]["kind"] == "014" else ents[0]["ksid"]
    out += [b"MIME-Version: 1.0",
            b"Content-Type: multipart/encrypted;",
            b'\tprotocol="' + PROTOCOL.encode() + b'";',
            b'\tboundary="' + b + b'"',
            b"X-QKD-Version: 2",
            b"X-QKD-Algorithm: " + v["algorithm"].encode(),
            b"X-QKD-Key-ID: " + first_id.encode(),
            b"X-QKD-Key-Count: " + str(len(ents)).encode(),
            b""]
    out += [ln.encode() for ln in PREAMBLE]
    out += [b"",
            b"--" + b,
            b"Content-Type: " + PROTOCOL.encode(),
            b"Content-Description: " + CONTROL_DESCRIPTION.encode(),
            b""]
    out += ctrl.split(b"\r\n")[:-1]
    out += [b"",
            b"--" + b,
            b'Content-Type: application/octet-stream; name="encrypted.qkd"',
            b'Content-Disposition: attachment; filename="encrypted.qkd"',
            b"Content-Description: " + DATA_DESCRIPTION.encode(),
            b"Content-Transfer-Encoding: base64",
            b""]
    b64 = base64.b64encode(data)
    out += [b64[i:i + 76] for i in range(0, len(b64), 76)]
    out += [b"--" + b + b"--"]
    return eol.join(out) + eol


def vector(n, msg, keys, check, **params):
    v = {"algorithm": "OTP-POLY1305", "source_kme_id": "KME_A",
         "master_sae_id": "SAE_ALICE", "slave_sae_id": "SAE_BOB",
         "protect_subject": True, "subject_placeholder": None, "nonce": None,
         "recipients": []}
    v.update(params)
    out = build(msg, v, keys)
    meta = dict(v)
    meta["keys"] = []
    for k in keys:
        j = {"key": base64.b64encode(k["bytes"]).decode()}
        if "ksid" in k:
            j["ksid"], j["index"] = k["ksid"], k["index"]
        else:
            j["key_ID"] = k["key_ID"]
        meta["keys"].append(j)
    files = {f"v{n}-input.eml": msg, f"v{n}-output.eml": out,
             f"v{n}-keys.json": (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode()}
    ok = True
    for name, data in files.items():
        if check:
            if open(name, "rb").read() != data:
                print(f"{name}: differs from what the spec gives")
                ok = False
        else:
            open(name, "wb").write(data)
    return ok


def key(kid, data):
    return {"key_ID": kid, "bytes": data}


def chunk(ksid, index, data):
    return {"ksid": ksid, "index": index, "bytes": data}


MSG1 = (b"From: Alice <alice@example.org>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Bcc: carol@example.com\r\n"
        b"Subject: Test vector\r\n"
        b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
        b"Message-ID: <vector@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"Hello, Bob. This is the test vector message.\r\n")

MSG3 = (b"From: mutt-user@example.org\n"
        b"To: list@lists.example\n"
        b"Subject: a folded\n subject line\n"
        b"User-Agent: Mutt/2.2.12\n"
        b"\n"
        b"LF only.\n")

KSID_A = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
KSID_B = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


def main():
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    check = "--check" in sys.argv[1:]
    ok = True
    # V1: OTP-POLY1305, two keys (40 octets, then the rest), CRLF, default
    # placeholder, bound to Bob.
    k2 = bytes((0x80 + i * 7) & 0xff for i in range(len(MSG1) + 32 - 40))
    ok &= vector(1, MSG1, [key("qkd-key-0001", bytes(range(40))), key("qkd-key-0002", k2)],
                 check, boundary="=_qkd_vector_1", recipients=["bob@example.net"])
    # V2: AES-256-GCM, one 256-bit key, fixed nonce, CRLF, two recipients
    # given in mixed case (bound normalised).
    ok &= vector(2, MSG1, [key("qkd-key-aes-0001", bytes(range(32)))], check,
                 algorithm="AES-256-GCM", boundary="=_qkd_vector_2", nonce=bytes(range(12)).hex(),
                 subject_placeholder="[encrypted]",
                 recipients=["Bob@Example.NET", "carol@example.com", "bob@example.net"])
    # V3: AES-256-GCM, LF-only message with a folded Subject, subject kept,
    # an unbound copy.
    ok &= vector(3, MSG3, [key("0f6c6b1e-5d7a-4c3e-9a1b-2c3d4e5f6a7b", bytes(range(100, 132)))],
                 check, algorithm="AES-256-GCM", boundary="=_qkd_vector_3",
                 nonce=bytes(range(200, 212)).hex(), protect_subject=False)
    # V4: OTP-POLY1305 with several keys: three ETSI 014 keys, then four
    # ETSI 004 chunks of 32 octets from one stream (the last used in part),
    # a non-ASCII recipient and a non-ASCII placeholder of several words.
    stream = bytes((i * 31 + 7) & 0xff for i in range(len(MSG1) + 32 + 6))
    keys4 = [key("a1", stream[0:16]), key("b2", stream[16:80]), key("c3", stream[80:200])]
    off, idx = 200, 41
    while off < len(stream):
        keys4.append(chunk(KSID_A, idx, stream[off:off + 32]))
        off += 32
        idx += 1
    ok &= vector(4, MSG1, keys4, check, boundary="=_qkd_vector_4",
                 subject_placeholder="Verschlüsselte Nachricht – bitte über das QuMail-Gateway lesen",
                 recipients=["Jürgen@Bücher.example", "bob@example.net"])
    # V5: AES-256-GCM with several keys: a 128-bit 014 key and two 64-bit
    # 004 chunks; an ASCII placeholder with "=?" (so it is encoded).
    ok &= vector(5, MSG3, [key("half-1", bytes(range(16))), chunk(KSID_B, 0, bytes(range(16, 24))),
                           chunk(KSID_B, 1, bytes(range(24, 32)))], check,
                 algorithm="AES-256-GCM", boundary="=_qkd_vector_5",
                 nonce=bytes(range(50, 62)).hex(), subject_placeholder="[=?secret?=]",
                 recipients=["list@lists.example"])
    if check:
        print("vectors match" if ok else "VECTORS DIFFER")
        return 0 if ok else 1
    print("vectors written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
