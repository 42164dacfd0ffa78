#!/usr/bin/env python3
"""APPEND flows of real clients to Sent and Drafts (issue 13's tests; the
pass-through part is issue 11's).

Flows, each storing corpus messages (a unique X-Rig-Marker field on top,
header-only messages left out: mbsync cannot store them):
  imaplib      APPEND with a synchronizing literal (flags, date)   -> Sent
  raw LITERAL+ APPEND pipelined, non-synchronizing literals         -> Sent
  multiappend  one APPEND with several messages (RFC 3502)          -> Drafts
  curl         curl -T FILE imap://.../Drafts                       -> Drafts
  mbsync       a local Maildir pushed up (Sync Push)                -> Sent

Modes (ctest entry):
  (none)       e2e_imap_append: straight to Dovecot. Every message stored,
               APPENDUID given, read back as the original changed as the
               client and Dovecot change it (expected(): Dovecot turns bare
               LF into CRLF and NUL into 0x80, keeps a bare CR; imaplib
               makes every line end CRLF; mbsync drops bare CRs and adds
               an X-TUID field, taken out before comparing).
  --proxy      e2e_imap_append_proxy: the same flows through `qumail proxy`;
               every copy reads back through the proxy exactly as the same
               flow's copy straight to Dovecot reads back directly, and the
               transparency oracle finds no difference between the proxied
               Sent/Drafts and reference mailboxes filled directly. Skipped
               (77) while the proxy has no IMAP side.
  --encrypted  e2e_imap_append_encrypted: as --proxy, and the copies the
               server stores hold no plaintext (no marker, no body text; our
               multipart/encrypted instead), read back byte-identical through
               the proxy after a proxy restart and from a second client
               (issue 13: APPEND to Sent and Drafts, protected by default).
"""

import imaplib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from checks import check, summary  # noqa: E402
import corpus  # noqa: E402
import imapstack as I  # noqa: E402
import imapwire as W  # noqa: E402
import oracle as O  # noqa: E402

USER = "bob@example.org"


def crlf(m):
    """What Dovecot 2.3 stores for an APPENDed message (measured): a bare
    LF becomes CRLF, a bare CR stays, a NUL octet becomes 0x80. An
    encrypting proxy must produce this canonical form before it encrypts
    (issue 13)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", m).replace(b"\0", b"\x80")


def expected(flow, m):
    """What the server holds after `flow` appended m: the client's own
    changes (imaplib turns every line end, a bare CR too, into CRLF;
    mbsync drops bare CRs - isync 1.4.4, measured), then Dovecot's."""
    if flow == "imaplib":
        m = re.sub(rb"\r\n|\r|\n", b"\r\n", m)
    elif flow == "mbsync":
        m = re.sub(rb"\r(?!\n)", b"", m)
    return crlf(m)


def body_lines(msgs):
    """Distinctive plaintext lines of the messages' bodies (40+ bytes, not
    base64-looking), to look for in what the server stores."""
    out = set()
    for _, m in msgs:
        sep = m.find(b"\r\n\r\n")
        sep = m.find(b"\n\n") if sep < 0 else sep
        for ln in m[sep:].splitlines():
            ln = ln.strip()
            if len(ln) >= 40 and b" " in ln:
                out.add(ln)
    return sorted(out)[:200]


def strip_tuid(m):
    return re.sub(rb"(?m)^X-TUID: [^\r\n]*\r?\n", b"", m, count=1)


def has_body(m):
    return b"\r\n\r\n" in m or b"\n\n" in m


def marked(msgs, flow):
    out = []
    for i, (name, m) in enumerate(msgs):
        eol = b"\r\n" if b"\r\n" in m[:300] or b"\n" not in m else b"\n"
        out.append(("%s/%s" % (flow, name),
                    b"X-Rig-Marker: PLAINTEXT-%s-%d" % (flow.encode(), i) + eol + m))
    return out


# -- the flows: each appends `msgs` to `box` through target t ---------------

def flow_imaplib(t, box, msgs):
    if t.tls == "implicit":
        conn = imaplib.IMAP4_SSL(t.host, t.port, ssl_context=ssl.create_default_context(
            cafile=t.ca), timeout=60)
    else:
        conn = imaplib.IMAP4(t.host, t.port, timeout=60)
    conn.login(USER, t.users[USER])
    for _, m in msgs:
        typ, data = conn.append(box, "(\\Seen)", imaplib.Time2Internaldate(1764000000), m)
        assert typ == "OK", data
    conn.logout()


def flow_literal_plus(t, box, msgs):
    c = t.connect(USER)
    uids = c.append_many(box, [m for _, m in msgs])
    c.logout()
    return uids


def flow_multiappend(t, box, msgs):
    c = t.connect(USER)
    cmd = b"APPEND " + W.quote(box)
    for _, m in msgs:
        cmd += b" (\\Draft) " + W.literal_plus(m)
    _, tagged = c.command(cmd)
    c.logout()
    assert b" OK" in tagged, tagged


def flow_curl(t, box, msgs, work):
    for i, (_, m) in enumerate(msgs):
        f = os.path.join(work, "curl-up-%d.eml" % i)
        with open(f, "wb") as fh:
            fh.write(m)
        argv = ["curl", "-sS", "--cacert", t.ca, "--user", "%s:%s" % (USER, t.users[USER]),
                "-T", f, t.url(mailbox=box), "--max-time", "60"]
        if t.tls == "starttls":
            argv.append("--ssl-reqd")
        r = subprocess.run(argv, capture_output=True, timeout=90)
        assert r.returncode == 0, r.stderr


MBSYNCRC = """\
IMAPAccount rig
Host localhost
Port {port}
User {user}
Pass {password}
SSLType {ssltype}
CertificateFile {ca}

IMAPStore rig-remote
Account rig

MaildirStore rig-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel rig
Far :rig-remote:{box}
Near :rig-local:up
Sync Push
Create Far
SyncState *
"""


def flow_mbsync(t, box, msgs, work):
    local = tempfile.mkdtemp(prefix="mbsync-up-", dir=work)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(local, "up", sub))
    for i, (_, m) in enumerate(msgs):
        with open(os.path.join(local, "up", "cur", "%d.%d_%d.rig:2,S" % (
                1764000000 + i, os.getpid(), i)), "wb") as fh:
            fh.write(m)
    rc = os.path.join(local, "rc")
    with open(rc, "w") as f:
        f.write(MBSYNCRC.format(port=t.port, user=USER, password=t.users[USER],
                                ssltype="IMAPS" if t.tls == "implicit" else "STARTTLS",
                                ca=t.ca, local=local, box=box))
    r = subprocess.run(["mbsync", "-c", rc, "-q", "rig"], capture_output=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-500:]


def read_back(t, box):
    c = t.connect(USER)
    try:
        c.select(box, readonly=True)
        untagged, _ = c.command(b"UID FETCH 1:* (UID BODY.PEEK[])", check=True)
        out = []
        for r in untagged:
            items = {n: v for n, _, v in W.fetch_items(W.parse_response(r))}
            out.append(bytes(items[b"BODY[]"]))
        return out
    finally:
        c.logout()


def run_flows(rig, t, boxes, msgs, work):
    """Append every flow's messages through t into boxes (a dict flow ->
    mailbox name); returns {mailbox: [messages in order]}."""
    order = {}

    def note(box, ms):
        order.setdefault(box, []).extend(ms)
    c = t.connect(USER)
    for box in set(boxes.values()):
        c.command(b"CREATE " + W.quote(box))
    c.logout()
    ms = marked(msgs, "imaplib")
    flow_imaplib(t, boxes["imaplib"], ms)
    note(boxes["imaplib"], ms)
    ms = marked(msgs, "literal+")
    uids = flow_literal_plus(t, boxes["literal+"], ms)
    check(all(isinstance(u, int) for u in uids), "%r: APPENDUID for every LITERAL+ APPEND" % t)
    note(boxes["literal+"], ms)
    ms = marked(msgs[:5], "multiappend")
    flow_multiappend(t, boxes["multiappend"], ms)
    note(boxes["multiappend"], ms)
    ms = marked(msgs[:6], "curl")
    flow_curl(t, boxes["curl"], ms, work)
    note(boxes["curl"], ms)
    ms = marked(msgs, "mbsync")
    flow_mbsync(t, boxes["mbsync"], ms, work)
    # mbsync pushes in its own order (by Maildir name: ours sort as listed)
    note(boxes["mbsync"], ms)
    return order


def main():
    I.need_root()
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    for tool in ("curl", "mbsync"):
        if not shutil.which(tool):
            I.skip("%s not installed (deploy/install-deps.sh)" % tool)
    if mode in ("--proxy", "--encrypted"):
        ok, reason = I.proxy_support()
        if not ok:
            I.skip(reason)
    msgs = [(n, m) for n, m in corpus.messages(max_size=300000) if has_body(m)]
    work = tempfile.mkdtemp(prefix="imap-append-")
    try:
        with I.ImapRig() as rig:
            direct = rig.direct("implicit")
            ref_boxes = {"imaplib": "RefSent", "literal+": "RefSent", "mbsync": "RefSentSync",
                         "multiappend": "RefDrafts", "curl": "RefDrafts"}
            ref = run_flows(rig, direct, ref_boxes, msgs, work)
            for box, ms in ref.items():
                got = read_back(direct, box)
                if box == "RefSentSync":
                    tu = [b"X-TUID: " in g for g in got]
                    got = [strip_tuid(g) for g in got]
                    check(all(tu), "mbsync: every pushed copy carries its X-TUID field")
                    got = sorted(got)
                    want = sorted(expected(n.split("/")[0], m) for n, m in ms)
                else:
                    want = [expected(n.split("/")[0], m) for n, m in ms]
                check(got == want, "direct %s: %d copies read back as the originals "
                      "as Dovecot and the client canonicalise them (got %d)" % (box, len(want), len(got)))
            if mode == "":
                pass
            else:
                t = rig.proxied("implicit")
                boxes = {"imaplib": "Sent", "literal+": "Sent", "mbsync": "SentSync",
                         "multiappend": "Drafts", "curl": "Drafts"}
                run_flows(rig, t, boxes, msgs, work)
                stored = rig.ms.mailbox_files(USER, "Sent") + rig.ms.mailbox_files(USER, "Drafts")
                plain = [s for s in stored if b"X-Rig-Marker: PLAINTEXT-" in s]
                if mode == "--encrypted":
                    check(len(stored) == len(msgs) * 2 + 5 + 6,
                          "the server holds every Sent/Drafts copy (%d)" % len(stored))
                    check(not plain, "no stored Sent/Drafts copy carries the plaintext marker "
                          "(%d of %d do)" % (len(plain), len(stored)))
                    lines = body_lines(msgs)
                    check(len(lines) >= 20, "%d body lines to look for" % len(lines))
                    body = [s for s in stored if any(ln in s for ln in lines)]
                    check(not body, "no stored copy holds a line of a message body "
                          "(%d do)" % len(body))
                    check(all(b"x-qkd-encrypted" in s.lower() for s in stored),
                          "every stored copy is our multipart/encrypted")
                compare_boxes(rig, t, [("RefSent", "Sent"), ("RefDrafts", "Drafts")])
                for a, b in (("RefSentSync", "SentSync"),):
                    x = sorted(strip_tuid(m) for m in read_back(direct, a))
                    y = sorted(strip_tuid(m) for m in read_back(t, b))
                    check(x == y, "mbsync push through the proxy reads back as the direct push")
                if mode == "--encrypted":
                    rig.px.restart()
                    t2 = rig.proxied("starttls")
                    for a, b in (("RefSent", "Sent"), ("RefDrafts", "Drafts")):
                        check(read_back(t2, b) == read_back(direct, a),
                              "%s after a proxy restart, from a second client (STARTTLS): "
                              "byte-identical" % b)
            if rig.px is not None:
                st = rig.px.stop()
                check(st == 0, "proxy exits 0 on SIGTERM, got %r" % st)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary("imap append")


def compare_boxes(rig, t, pairs):
    for ref_box, dut_box in pairs:
        ref = O.Side(ref_box + " direct", rig.direct(), USER, ref_box)
        dut = O.Side(dut_box + " via proxy", t, USER, dut_box)
        names = ["#%d" % (i + 1) for i in range(len(ref.uids))]
        rep = O.compare_mailboxes(ref, dut, names, out=sys.stdout)
        check(rep.ok, "%s through the proxy equals %s directly in every FETCH item "
              "(%d responses)" % (dut_box, ref_box, rep.compared))
        ref.close()
        dut.close()


if __name__ == "__main__":
    sys.exit(main())
