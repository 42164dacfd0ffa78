#!/usr/bin/env python3
"""What a person without the QuMail gateway sees (FORMAT-SPEC.md 2.5).

Encrypts messages with `qumail mime encrypt`, then looks at them the way a
person would: rendered by NeoMutt (run in batch under a pseudo-terminal,
its pager replaced by a script that saves the rendered text), and read by
Python's `email` package. Checks that the Subject says what the message is,
that each part's title says what it is and how to read it, and that a
non-ASCII placeholder comes back exactly (our RFC 2047 encoder against two
real decoders)."""
import base64
import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

QUMAIL = os.environ.get("QUMAIL_BIN", "qumail")
failures = []
DEFAULT_SUBJECT = "Encrypted message (QuMail QKD)"
DATA_TITLE = "Encrypted message: read it through a QuMail gateway"
CONTROL_TITLE = "QuMail key references (not the message itself)"

MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: Bob <bob@example.net>\r\n"
           b"Subject: Quarterly numbers (secret)\r\n"
           b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
           b"Message-ID: <view@example.org>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"The real text, which nobody without the keys may read.\r\n")


def check(name, ok, detail=""):
    print(("ok  " if ok else "FAIL"), name, detail if not ok else "")
    if not ok:
        failures.append(name)


def encrypt(tmp, name, *extra):
    src = os.path.join(tmp, "plain.eml")
    with open(src, "wb") as f:
        f.write(MESSAGE)
    kf = os.path.join(tmp, "keys.json")
    with open(kf, "w") as f:
        json.dump({"keys": [{"key_ID": "view-key",
                             "key": base64.b64encode(os.urandom(32)).decode()}]}, f)
    out = os.path.join(tmp, name)
    p = subprocess.run([QUMAIL, "mime", "encrypt", "-l", "aes", "-k", kf, "-o", out, *extra, src],
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode(errors="replace"))
    return open(out, "rb").read()


def python_view(raw, want_subject, label):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    check(f"{label}: Python sees the Subject", str(msg["Subject"]) == want_subject,
          repr(str(msg["Subject"])))
    check(f"{label}: Python sees multipart/encrypted", msg.get_content_type() == "multipart/encrypted")
    parts = list(msg.iter_parts())
    check(f"{label}: two parts", len(parts) == 2, len(parts))
    if len(parts) == 2:
        check(f"{label}: control part titled", parts[0]["Content-Description"] == CONTROL_TITLE,
              parts[0]["Content-Description"])
        check(f"{label}: encrypted part titled with how to read it",
              parts[1]["Content-Description"] == DATA_TITLE
              and parts[1].get_filename() == "encrypted.qkd", parts[1]["Content-Description"])
    # RFC 1847 allows no text part: there is no body to find, by design
    check(f"{label}: no body part (RFC 1847 has no room for one)", msg.get_body() is None)
    check(f"{label}: real Subject hidden", b"Quarterly numbers" not in raw)


def neomutt_view(tmp, raw):
    """Renders the first message of an mbox with NeoMutt; returns the text
    its pager would have shown."""
    mbox = os.path.join(tmp, "mbox")
    with open(mbox, "wb") as f:
        f.write(b"From alice@example.org Mon Nov 23 09:00:00 2026\n")
        f.write(raw.replace(b"\r\n", b"\n"))
        f.write(b"\n")
    shown, done = os.path.join(tmp, "shown.txt"), os.path.join(tmp, "shown.done")
    for p in (shown, done):
        if os.path.exists(p):
            os.unlink(p)
    pager = os.path.join(tmp, "pager.sh")
    with open(pager, "w") as f:
        f.write(f'#!/bin/sh\ncat "$1" > {shown}\ntouch {done}\n')
    os.chmod(pager, 0o755)
    cmd = ("neomutt -n -F /dev/null -R "
           f"-e 'set folder={tmp} spoolfile={mbox} tmpdir={tmp} record=/dev/null postponed={tmp}/postponed' "
           "-e 'set mbox=/dev/null wait_key=no charset=utf-8 header_cache= message_cachedir=' "
           f"-e 'set pager={pager}' -e 'push <display-message>' -f {mbox}")
    env = dict(os.environ, HOME=tmp, TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    proc = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], env=env, cwd=tmp,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(done) and proc.poll() is None:
        time.sleep(0.1)
    try:  # neomutt waits in its index now: end the session we started
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return open(shown, encoding="utf-8", errors="replace").read() if os.path.exists(done) else None


def main():
    with tempfile.TemporaryDirectory() as tmp:
        raw = encrypt(tmp, "default.eml")
        python_view(raw, DEFAULT_SUBJECT, "default placeholder")
        text = neomutt_view(tmp, raw)
        check("NeoMutt rendered the message", text is not None)
        if text is not None:
            print("---- what NeoMutt shows ----\n" + text + "----")
            check("NeoMutt: Subject says what it is", f"Subject: {DEFAULT_SUBJECT}" in text)
            check("NeoMutt: the encrypted part's title says how to read it",
                  f"Attachment #2: {DATA_TITLE}" in text)
            check("NeoMutt: the control part's title", f"Attachment #1: {CONTROL_TITLE}" in text)
            check("NeoMutt: nothing of the real message", "Quarterly" not in text
                  and "nobody without" not in text)

        placeholder = "Verschlüsselte Nachricht – bitte über das QuMail-Gateway lesen 🔒"
        raw = encrypt(tmp, "utf8.eml", "--subject", placeholder)
        check("non-ASCII placeholder written as encoded-words",
              b"Subject: =?UTF-8?B?" in raw and "ü".encode() not in raw.split(b"\r\n\r\n")[0])
        python_view(raw, placeholder, "non-ASCII placeholder")
        text = neomutt_view(tmp, raw)
        # (NeoMutt folds long header lines to the terminal width)
        unfolded = re.sub(r"\n[ \t]+", " ", text or "")
        check("NeoMutt decodes the non-ASCII placeholder exactly",
              f"Subject: {placeholder}\n" in unfolded, (text or "")[:400])
        raw = encrypt(tmp, "literal.eml", "--subject", "[=?not-a-word?=]")
        python_view(raw, "[=?not-a-word?=]", "placeholder with =?")
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
