#!/usr/bin/env python3
"""Independent reference encoder for the test vectors of mime/FORMAT-SPEC.md.

Written from the spec alone (not from the C code), using the Python
`cryptography` package, so the C unit test (test_mime_vectors) comparing the
C output with these files byte for byte checks two implementations against
each other. Writes, per vector N: vN-input.eml, vN-keys.json, vN-output.eml.
Run from this folder: python3 make_vectors.py"""
import base64, json
from cryptography.hazmat.primitives import hashes, poly1305
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HKDF_INFO = b"QuMail QKD-MIME v2 AES-256-GCM message key"
KEPT = {"from", "sender", "reply-to", "to", "cc", "date", "message-id",
        "in-reply-to", "references", "subject", "return-path", "received",
        "delivered-to", "precedence", "auto-submitted"}

def kept(name):
    n = name.lower()
    if n in KEPT:
        return True
    if n.startswith("list-"):
        return True
    return n.startswith("resent-") and n != "resent-bcc"

def fields(msg):
    """Header fields (unfolded groups of raw lines) of the header block."""
    head = msg.split(b"\r\n\r\n", 1)[0] if b"\r\n" in msg.split(b"\n")[0] + b"\n" else msg.split(b"\n\n", 1)[0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    out = []
    for ln in lines:
        if ln[:1] in (b" ", b"\t") and out:
            out[-1].append(ln)
        else:
            out.append([ln])
    return out

def control_text(alg, kme, master, slave, length, nonce, keys):
    lines = ["Version: 2", f"Algorithm: {alg}", f"Source-KME-ID: {kme}",
             f"Master-SAE-ID: {master}", f"Slave-SAE-ID: {slave}",
             f"Length: {length}"]
    if alg == "AES-256-GCM":
        lines.append("Nonce: " + nonce.hex())
    lines.append(f"Key-Count: {len(keys)}")
    for kid, kb in keys:
        lines.append(f"Key: {kid} {len(kb) * 8}")
    return "".join(l + "\r\n" for l in lines).encode()

def pad16(b):
    return b"\0" * (-len(b) % 16)

def mac_data(ctrl, plaintext):
    """Poly1305 input (spec 4.2): RFC 8439 2.8 layout, plaintext as data."""
    return (ctrl + pad16(ctrl) + plaintext + pad16(plaintext) +
            len(ctrl).to_bytes(8, "little") + len(plaintext).to_bytes(8, "little"))

def build(msg, alg, keys, kme, master, slave, boundary, nonce, placeholder):
    first = msg.split(b"\n", 1)[0]
    eol = b"\n" if (b"\n" in msg and not first.endswith(b"\r")) else b"\r\n"
    ctrl = control_text(alg, kme, master, slave, len(msg), nonce, keys)
    stream = b"".join(k for _, k in keys)
    if alg == "OTP-POLY1305":
        assert len(stream) == len(msg) + 32
        mac_key, pad = stream[:32], stream[32:]
        ct = bytes(a ^ b for a, b in zip(msg, pad))
        tag = poly1305.Poly1305.generate_tag(mac_key, mac_data(ctrl, msg))
        data = ct + tag
    else:
        assert len(stream) == 32
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=HKDF_INFO).derive(stream)
        data = AESGCM(key).encrypt(nonce, msg, ctrl)  # ciphertext || tag
    out = []
    for f in fields(msg):
        name = f[0].split(b":", 1)[0].strip()
        if b":" not in f[0] or not kept(name.decode("latin-1")):
            continue
        if name.lower() == b"subject" and placeholder is not None:
            out.append(b"Subject: " + placeholder.encode())
        else:
            out.extend(f)
    out += [b"MIME-Version: 1.0",
            b"Content-Type: multipart/encrypted;",
            b'\tprotocol="application/x-qkd-encrypted";',
            b'\tboundary="' + boundary.encode() + b'"',
            b"X-QKD-Version: 2",
            b"X-QKD-Algorithm: " + alg.encode(),
            b"X-QKD-Key-ID: " + keys[0][0].encode(),
            b"X-QKD-Key-Count: " + str(len(keys)).encode(),
            b"",
            b"This is a QKD-encrypted message (QuMail format 2).",
            b"Read it through a QuMail gateway; the attachment encrypted.qkd",
            b"holds the original message.",
            b"",
            b"--" + boundary.encode(),
            b"Content-Type: application/x-qkd-encrypted",
            b"Content-Description: QKD control data",
            b""]
    out += ctrl.split(b"\r\n")[:-1]
    out += [b"",
            b"--" + boundary.encode(),
            b'Content-Type: application/octet-stream; name="encrypted.qkd"',
            b'Content-Disposition: attachment; filename="encrypted.qkd"',
            b"Content-Transfer-Encoding: base64",
            b""]
    b64 = base64.b64encode(data)
    out += [b64[i:i + 76] for i in range(0, len(b64), 76)]
    out += [b"--" + boundary.encode() + b"--"]
    return eol.join(out) + eol

def vector(n, msg, alg, keys, boundary, nonce=None, placeholder="[...]"):
    out = build(msg, alg, keys, "KME_A", "SAE_ALICE", "SAE_BOB", boundary,
                nonce, placeholder)
    open(f"v{n}-input.eml", "wb").write(msg)
    open(f"v{n}-output.eml", "wb").write(out)
    meta = {"algorithm": alg, "source_kme_id": "KME_A",
            "master_sae_id": "SAE_ALICE", "slave_sae_id": "SAE_BOB",
            "boundary": boundary, "subject_placeholder": placeholder,
            "nonce": nonce.hex() if nonce else None,
            "keys": [{"key_ID": k, "key": base64.b64encode(b).decode()}
                     for k, b in keys]}
    json.dump(meta, open(f"v{n}-keys.json", "w"), indent=1)
    open(f"v{n}-keys.json", "a").write("\n")

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

# V1: OTP-POLY1305, two keys (40 octets, then the rest), CRLF message.
stream_len = len(MSG1) + 32
k1 = bytes(range(40))
k2 = bytes((0x80 + i * 7) & 0xff for i in range(stream_len - 40))
vector(1, MSG1, "OTP-POLY1305", [("qkd-key-0001", k1), ("qkd-key-0002", k2)],
       "=_qkd_vector_1")

# V2: AES-256-GCM, one 256-bit key, fixed nonce, CRLF message.
vector(2, MSG1, "AES-256-GCM", [("qkd-key-aes-0001", bytes(range(32)))],
       "=_qkd_vector_2", nonce=bytes(range(12)), placeholder="[encrypted]")

# V3: AES-256-GCM, LF-only message with a folded Subject, subject kept.
MSG3 = (b"From: mutt-user@example.org\n"
        b"To: list@lists.example\n"
        b"Subject: a folded\n subject line\n"
        b"User-Agent: Mutt/2.2.12\n"
        b"\n"
        b"LF only.\n")
vector(3, MSG3, "AES-256-GCM",
       [("0f6c6b1e-5d7a-4c3e-9a1b-2c3d4e5f6a7b", bytes(range(100, 132)))],
       "=_qkd_vector_3", nonce=bytes(range(200, 212)), placeholder=None)
print("vectors written")
