"""The transparency oracle (shared/design/IMAP.md "The promise"): every FETCH
item of every message, read from a reference mailbox (plaintext, straight
from Dovecot) and from a mailbox under test (through the proxy: plaintext
now, encrypted once decryption exists), compared as raw bytes, plus the
self-consistency of each side's answers.

    ref = Side("plain direct", rig.direct(), USER, "Plain")
    dut = Side("encrypted via proxy", rig.proxied(), USER, "Encrypted")
    report = compare_mailboxes(ref, dut, names)     # Report
    report.print(); report.ok

Both mailboxes must hold the same messages in the same order (UIDs may
differ; they are mapped by position). Compared: the summary sweep, every
single item (RFC822.SIZE, BODYSTRUCTURE, BODY, ENVELOPE, BODY[] and its
sections: HEADER, TEXT, HEADER.FIELDS(.NOT), every part number from
BODYSTRUCTURE with [n] and [n.MIME], [n.HEADER] [n.TEXT]
[n.HEADER.FIELDS(.NOT)] for message/rfc822 parts, partials <0.1> <0.100>
<17.1000> <size-1.10> <size.10> <size+5.10> of BODY[] and edge partials of
each part, RFC822.HEADER, FAST/ALL/FULL, BINARY/BINARY.SIZE and PREVIEW
when both sides advertise them) by UID FETCH one item at a time and by
FETCH (sequence number) and UID FETCH of every item at once (Dovecot's
item order, UID first); the \\Seen semantics of each non-PEEK form (flags
cleared, form fetched: same response, FLAGS included or not exactly as
the reference, then the same FLAGS); tagged results (OK/NO/BAD, timing
text masked). Not compared (IMAP.md): UID values (mapped), INTERNALDATE,
\\Recent. Self-consistency on each side: len(BODY[]) == RFC822.SIZE,
HEADER + TEXT == BODY[], partials are slices, len(BODY[n]) == the size
in BODYSTRUCTURE, BODY == BODYSTRUCTURE without extension data, RFC822*
== BODY[]/HEADER/TEXT, FETCH == UID FETCH, sweep == single.

Dovecot's cache: the first fetch of a HEADER.FIELDS list of a header-only
message (no empty line) ends in CRLF CRLF, later ones (from the cache) in
one CRLF (Dovecot 2.3.19, measured: test_oracle.py shows it). Both sides
are warmed with every HEADER.FIELDS item before they are compared.

Every difference is reported with the command, the item and both raw
values (literal sizes included) around the first differing octet.
"""

import re

from imapwire import Atom, ImapError, Literal, parse_response, fetch_items

SWEEP_FIELDS = (b"From To Cc Subject Date Message-ID Priority X-Priority References "
                b"Newsgroups In-Reply-To Content-Type Reply-To")
SWEEP = b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (" + SWEEP_FIELDS + b")])"
SWEEP_NOUID = b"(RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (" + SWEEP_FIELDS + b")])"
TIMING = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)")
SEEN_FORMS = (b"BODY[]", b"RFC822", b"RFC822.TEXT", b"BODY[HEADER]", b"BODY[]<0.10>",
              b"BODY[TEXT]", b"BODY[1]", b"BODY[1.MIME]", b"RFC822.HEADER", b"BODY.PEEK[]",
              b"BODY[HEADER.FIELDS (SUBJECT)]", b"RFC822.SIZE")


class Side:
    """One mailbox read through one target, selected read-write (the
    \\Seen checks store flags)."""

    def __init__(self, label, target, user, mailbox):
        self.label = label
        self.target = target
        self.user = user
        self.mailbox = mailbox
        self.conn = target.connect(user)
        self.info = self.conn.select(mailbox)
        self.caps = self.conn.capabilities or self.conn.capability()
        untagged, _ = self.conn.command(b"UID SEARCH ALL", check=True)
        self.uids = [int(x) for r in untagged if r.startswith(b"* SEARCH")
                     for x in r[8:].split()]

    def close(self):
        self.conn.logout()

    def run(self, cmds):
        """[(untagged list, tagged line)] for each command, one at a time:
        Dovecot runs pipelined FETCH commands in parallel and interleaves
        their untagged responses, so only a command alone on the wire has
        its responses attributed without doubt."""
        return [self.conn.command(c) for c in cmds]

    def reset_flags(self):
        """Every message's flags to none (initial FLAGS are not compared)."""
        self.conn.command(b"UID STORE 1:* FLAGS.SILENT ()", check=True)


# -- BODYSTRUCTURE walking ----------------------------------------------------

def _s(v):
    return bytes(v).lower() if isinstance(v, (bytes, bytearray)) else v


def is_multipart(bs):
    return isinstance(bs, list) and bs and isinstance(bs[0], list)


def part_list(bs):
    """[(section number, kind, size or None)] of a parsed BODYSTRUCTURE;
    kind "multipart", "message" (message/rfc822) or "leaf"."""
    out = []

    def multipart_children(node, prefix):
        i = 0
        for child in node:
            if not isinstance(child, list):
                break
            i += 1
            walk(child, "%s.%d" % (prefix, i) if prefix else str(i))

    def walk(node, num):
        if is_multipart(node):
            out.append((num, "multipart", None))
            multipart_children(node, num)
            return
        typ, sub = _s(node[0]), _s(node[1])
        size = int(node[6]) if len(node) > 6 and isinstance(node[6], (bytes, Atom)) \
            and bytes(node[6]).isdigit() else None
        if typ == b"message" and sub == b"rfc822" and len(node) > 8:
            out.append((num, "message", size))
            inner = node[8]
            if is_multipart(inner):
                multipart_children(inner, num)
            else:
                walk(inner, num + ".1")
        else:
            out.append((num, "leaf", size))

    if is_multipart(bs):
        multipart_children(bs, "")
    else:
        walk(bs, "1")
    return out


def strip_extension(bs):
    """BODYSTRUCTURE without extension data, i.e. what BODY must be."""
    if is_multipart(bs):
        children = []
        for c in bs:
            if not isinstance(c, list):
                break
            children.append(strip_extension(c))
        return children + [bs[len(children)]]
    typ, sub = _s(bs[0]), _s(bs[1])
    n = 7
    if typ == b"text":
        n = 8
    elif typ == b"message" and sub == b"rfc822":
        return list(bs[:7]) + [bs[7], strip_extension(bs[8]), bs[9]]
    return list(bs[:n])


def _norm_value(v):
    if isinstance(v, list):
        return [_norm_value(x) for x in v]
    if isinstance(v, Literal):
        return ("lit", bytes(v))
    if isinstance(v, Atom):
        return ("atom", bytes(v).upper() if bytes(v).upper() == b"NIL" else bytes(v))
    return ("str", bytes(v))


# -- command plan -------------------------------------------------------------

def single_items(size, parts, caps_both):
    """The items fetched one at a time for a message of RFC822.SIZE
    `size` with the given part_list."""
    items = [b"RFC822.SIZE", b"BODYSTRUCTURE", b"BODY", b"ENVELOPE", b"FLAGS",
             b"BODY.PEEK[]", b"BODY.PEEK[HEADER]", b"BODY.PEEK[TEXT]",
             b"BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID CONTENT-TYPE)]",
             b"BODY.PEEK[HEADER.FIELDS (X-NOT-THERE)]",
             b"BODY.PEEK[HEADER.FIELDS.NOT (FROM TO RECEIVED CONTENT-TYPE)]",
             b"BODY.PEEK[HEADER.FIELDS (" + SWEEP_FIELDS + b")]",
             b"RFC822.HEADER"]
    for o, n in ((0, 1), (0, 100), (17, 1000), (max(size - 1, 0), 10), (size, 10),
                 (size + 5, 10)):
        items.append(b"BODY.PEEK[]<%d.%d>" % (o, n))
    items.append(b"BODY.PEEK[TEXT]<0.10>")
    for num, kind, psize in parts:
        n = num.encode()
        items += [b"BODY.PEEK[%s]" % n, b"BODY.PEEK[%s.MIME]" % n]
        if kind == "message":
            items += [b"BODY.PEEK[%s.HEADER]" % n, b"BODY.PEEK[%s.TEXT]" % n,
                      b"BODY.PEEK[%s.HEADER.FIELDS (SUBJECT FROM)]" % n,
                      b"BODY.PEEK[%s.HEADER.FIELDS.NOT (SUBJECT)]" % n]
        if psize is not None:
            items += [b"BODY.PEEK[%s]<0.1>" % n,
                      b"BODY.PEEK[%s]<%d.10>" % (n, max(psize - 1, 0)),
                      b"BODY.PEEK[%s]<%d.10>" % (n, psize)]
        if kind == "leaf" and b"BINARY" in caps_both:
            items += [b"BINARY.PEEK[%s]" % n, b"BINARY.SIZE[%s]" % n]
    if b"PREVIEW" in caps_both:
        items.append(b"PREVIEW")
    return items


MACROS = (b"FAST", b"ALL", b"FULL")


# -- normalisation and diffs --------------------------------------------------

class Normal:
    """A response normalised for comparison across mailboxes."""

    def __init__(self, raw, uidmap):
        self.raw = raw
        self.items = None
        self.key = raw
        if raw.startswith(b"* ") and b" FETCH " in raw[:24]:
            resp = parse_response(raw)
            items = []
            for name, rawv, v in fetch_items(resp):
                if name == b"UID":
                    rawv = b"<uid#%s>" % str(uidmap.get(int(v), "?")).encode()
                elif name == b"INTERNALDATE":
                    rawv = b"<internaldate>"
                elif name == b"FLAGS":
                    rawv = b"(" + b" ".join(sorted(
                        bytes(f) for f in v if bytes(f).upper() != b"\\RECENT")) + b")"
                items.append((name, rawv, v))
            self.items = items
            self.key = (resp.number, tuple((n, r) for n, r, _ in items))
        elif re.match(rb"T\d+ ", raw):
            self.key = TIMING.sub(b"", raw.split(b" ", 1)[1])


def excerpt(a, b, ctx=60):
    """Both byte strings around the first differing octet."""
    i = 0
    n = min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    s = max(0, i - ctx)
    return i, a[s:i + ctx], b[s:i + ctx]


class Report:
    def __init__(self, ref_label, dut_label):
        self.ref_label, self.dut_label = ref_label, dut_label
        self.diffs = []      # (message name, command, text)
        self.selfcheck = []  # (side, message name, text)
        self.compared = 0
        self.messages = 0

    @property
    def ok(self):
        return not self.diffs and not self.selfcheck

    def diff(self, name, cmd, text):
        self.diffs.append((name, cmd, text))

    def bad(self, side, name, text):
        self.selfcheck.append((side, name, text))

    def print(self, out, limit=40):
        out.write("oracle: %s vs %s: %d messages, %d responses compared, %d differences, "
                  "%d self-consistency failures\n" % (
                      self.ref_label, self.dut_label, self.messages, self.compared,
                      len(self.diffs), len(self.selfcheck)))
        for name, cmd, text in self.diffs[:limit]:
            out.write("DIFF %s: %s\n%s\n" % (name, cmd.decode(errors="replace"), text))
        for side, name, text in self.selfcheck[:limit]:
            out.write("SELF %s %s: %s\n" % (side, name, text))
        if len(self.diffs) > limit:
            out.write("... %d more differences\n" % (len(self.diffs) - limit))


def describe(ref_resp, dut_resp, uidmap_r, uidmap_d, labels):
    """Text of the first difference between two command results."""
    ru, rt = ref_resp
    du, dt = dut_resp
    nr = [Normal(r, uidmap_r) for r in ru] + [Normal(rt, uidmap_r)]
    nd = [Normal(r, uidmap_d) for r in du] + [Normal(dt, uidmap_d)]
    for i in range(max(len(nr), len(nd))):
        a = nr[i] if i < len(nr) else None
        b = nd[i] if i < len(nd) else None
        if a is not None and b is not None and a.key == b.key:
            continue
        if a is None or b is None:
            return "  response %d only on %s: %r" % (
                i, labels[0] if b is None else labels[1], (a or b).raw[:300])
        if a.items is not None and b.items is not None:
            an = [n for n, _, _ in a.items]
            bn = [n for n, _, _ in b.items]
            if an != bn:
                return "  item order/names differ:\n    %s: %r\n    %s: %r" % (
                    labels[0], an, labels[1], bn)
            for (n, ra, _), (_, rb, _) in zip(a.items, b.items):
                if ra != rb:
                    at, xa, xb = excerpt(ra, rb)
                    return ("  item %s differs at octet %d of its value (%d vs %d octets)\n"
                            "    %s: %r\n    %s: %r" % (n.decode(errors="replace"), at,
                                                        len(ra), len(rb), labels[0], xa,
                                                        labels[1], xb))
        at, xa, xb = excerpt(a.raw, b.raw)
        return "  response %d differs at octet %d:\n    %s: %r\n    %s: %r" % (
            i, at, labels[0], xa, labels[1], xb)
    return "  (equal)"


def same(ref_resp, dut_resp, uidmap_r, uidmap_d):
    ru, rt = ref_resp
    du, dt = dut_resp
    if len(ru) != len(du):
        return False
    for a, b in zip(ru + [rt], du + [dt]):
        if Normal(a, uidmap_r).key != Normal(b, uidmap_d).key:
            return False
    return True


# -- self-consistency -----------------------------------------------------------

def items_of(result):
    """{ITEM NAME: (raw, value)} of a one-message command result."""
    out = {}
    for r in result[0]:
        if b" FETCH " in r[:24]:
            for n, raw, v in fetch_items(parse_response(r)):
                out[n] = (raw, v)
    return out


def self_check(side, name, report, singles, combined_uid, combined_seq, parts):
    def bad(text):
        report.bad(side.label, name, text)

    def get(item):
        key = item.replace(b".PEEK", b"").upper()
        key = re.sub(rb"<(\d+)\.\d+>$", rb"<\1>", key)
        res = singles.get(item)
        if res is None:
            return None
        return items_of(res).get(key, (None, None))[1]

    whole = get(b"BODY.PEEK[]")
    size = get(b"RFC822.SIZE")
    if whole is None or size is None:
        bad("BODY[] or RFC822.SIZE missing")
        return
    whole = bytes(whole)
    if len(whole) != int(size):
        bad("len(BODY[]) %d != RFC822.SIZE %s" % (len(whole), size))
    hdr, txt = get(b"BODY.PEEK[HEADER]"), get(b"BODY.PEEK[TEXT]")
    if hdr is None or txt is None or bytes(hdr) + bytes(txt) != whole:
        bad("HEADER + TEXT != BODY[]")
    if get(b"RFC822.HEADER") is not None and bytes(get(b"RFC822.HEADER")) != bytes(hdr or b""):
        bad("RFC822.HEADER != BODY[HEADER]")
    for item in singles:
        m = re.match(rb"BODY\.PEEK\[\]<(\d+)\.(\d+)>$", item)
        if m:
            o, n = int(m.group(1)), int(m.group(2))
            v = get(item)
            if v is None or bytes(v) != whole[o:o + n]:
                bad("%s is not BODY[][%d:%d]" % (item.decode(), o, o + n))
    bs = get(b"BODYSTRUCTURE")
    body = get(b"BODY")
    if bs is not None and body is not None:
        if _norm_value(strip_extension(bs)) != _norm_value(body):
            bad("BODY != BODYSTRUCTURE without extension data")
    for num, kind, psize in parts:
        if psize is None:
            continue
        v = get(b"BODY.PEEK[%s]" % num.encode())
        if v is None or len(v) != psize:
            bad("len(BODY[%s]) %s != BODYSTRUCTURE size %d" % (
                num, None if v is None else len(v), psize))
    # FETCH == UID FETCH (all items at once), and == the singles
    cu, cs = items_of(combined_uid), items_of(combined_seq)
    cu.pop(b"UID", None)
    cs.pop(b"UID", None)
    if {k: v[0] for k, v in cu.items()} != {k: v[0] for k, v in cs.items()}:
        bad("FETCH by sequence number != UID FETCH for the same items")
    names = []
    for r in combined_uid[0]:
        if b" FETCH " in r[:24]:
            names += [n for n, _, _ in fetch_items(parse_response(r))]
    for item, res in singles.items():
        for k, (raw, _) in items_of(res).items():
            if k in (b"UID", b"FLAGS") or names.count(k) != 1:
                continue  # <0.1> and <0.100> both answer as BODY[]<0>
            if k in cu and cu[k][0] != raw:
                bad("%s alone != %s among all items" % (item.decode(), k.decode()))


# -- the comparison -------------------------------------------------------------

def compare_mailboxes(ref, dut, names, seen=True, out=None):
    """Compare two Sides; names: the message names in mailbox order."""
    report = Report(ref.label, dut.label)
    labels = (ref.label, dut.label)
    if len(ref.uids) != len(dut.uids):
        report.diff("(mailbox)", b"UID SEARCH ALL",
                    "  %d vs %d messages" % (len(ref.uids), len(dut.uids)))
        return report
    umap_r = {u: i + 1 for i, u in enumerate(ref.uids)}
    umap_d = {u: i + 1 for i, u in enumerate(dut.uids)}
    report.messages = len(ref.uids)
    caps_both = ref.caps & dut.caps
    ref.reset_flags()
    dut.reset_flags()
    # Warm Dovecot's cache of header fields first: on the first fetch of a
    # HEADER.FIELDS list Dovecot 2.3.19 answers a header-only message (no
    # empty line) with a trailing CRLF CRLF, from its cache later with one
    # CRLF. Comparing a warm mailbox with a cold one would report that.
    for side in (ref, dut):
        side.run([b"UID FETCH 1:* " + SWEEP])

    def cmp(name, cmd_r, cmd_d, res_r, res_d):
        report.compared += 1
        if not same(res_r, res_d, umap_r, umap_d):
            report.diff(name, cmd_r if cmd_r == cmd_d else cmd_r + b" / " + cmd_d,
                        describe(res_r, res_d, umap_r, umap_d, labels))

    # 1. sweeps over the whole mailbox
    for items in (SWEEP, SWEEP_NOUID, b"(FLAGS)", b"(RFC822.SIZE)", b"(ENVELOPE)"):
        for verb in (b"UID FETCH 1:* ", b"FETCH 1:* "):
            cmd = verb + items
            [rr], [rd] = ref.run([cmd]), dut.run([cmd])
            if len(rr[0]) != len(rd[0]):
                report.diff("(mailbox)", cmd, "  %d vs %d responses" % (len(rr[0]), len(rd[0])))
                continue
            for i, (a, b) in enumerate(zip(rr[0], rd[0])):
                cmp(names[i] if i < len(names) else "#%d" % (i + 1), cmd, cmd,
                    ([a], b"T0 OK"), ([b], b"T0 OK"))
            cmp("(mailbox)", cmd, cmd, ([], rr[1]), ([], rd[1]))
    sweep = {}
    for side in (ref, dut):
        [res] = side.run([b"UID FETCH 1:* " + SWEEP])
        sweep[side.label] = {}
        for r in res[0]:
            it = {n: raw for n, raw, _ in fetch_items(parse_response(r))}
            sweep[side.label][int(it[b"UID"])] = it

    # 2. per message
    for i, (ur, ud) in enumerate(zip(ref.uids, dut.uids)):
        name = names[i] if i < len(names) else "#%d" % (i + 1)
        seq = i + 1
        # structure of the reference message decides the plan
        [bsr] = ref.run([b"UID FETCH %d (RFC822.SIZE BODYSTRUCTURE)" % ur])
        it = items_of(bsr)
        size = int(it[b"RFC822.SIZE"][1])
        parts = part_list(it[b"BODYSTRUCTURE"][1])
        plan = single_items(size, parts, caps_both)
        singles = {}
        for side, uid in ((ref, ur), (dut, ud)):
            side.run([b"UID FETCH %d (%s)" % (uid, item) for item in plan
                      if b"HEADER.FIELDS" in item])  # warm, see above
        for side, uid in ((ref, ur), (dut, ud)):
            cmds = [b"UID FETCH %d (%s)" % (uid, item) for item in plan]
            cmds += [b"UID FETCH %d %s" % (uid, m) for m in MACROS]
            cmds += [b"FETCH %d %s" % (seq, m) for m in MACROS]
            allitems = b"(" + b" ".join(plan) + b")"
            cmds += [b"UID FETCH %d %s" % (uid, allitems), b"FETCH %d %s" % (seq, allitems)]
            cmds += [b"UID FETCH %d (BODY.PEEK[HEADER.FIELDS (%s)])" % (uid, SWEEP_FIELDS)]
            singles[side.label] = side.run(cmds)
        rs, ds = singles[ref.label], singles[dut.label]
        for k, item in enumerate(plan + [b"UID:" + m for m in MACROS] +
                                 [b"SEQ:" + m for m in MACROS] +
                                 [b"UID FETCH all items", b"FETCH all items",
                                  b"sweep header fields alone"]):
            cmp(name, item, item, rs[k], ds[k])
        # self-consistency on both sides
        n = len(plan)
        for side, res, uid in ((ref, rs, ur), (dut, ds, ud)):
            own_parts = parts
            if side is dut:
                dit = items_of(res[plan.index(b"BODYSTRUCTURE")])
                try:
                    own_parts = part_list(dit[b"BODYSTRUCTURE"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    report.bad(side.label, name, "BODYSTRUCTURE missing or unparsable")
                    continue
            self_check(side, name, report, dict(zip(plan, res[:n])),
                       res[n + 2 * len(MACROS)], res[n + 2 * len(MACROS) + 1], own_parts)
            alone = items_of(res[-1])
            key = b"BODY[HEADER.FIELDS (" + SWEEP_FIELDS.upper() + b")]"
            swept = sweep[side.label].get(uid, {})
            sv = [v for k, v in swept.items() if k.startswith(b"BODY[HEADER.FIELDS")]
            av = [v[0] for k, v in alone.items() if k.startswith(b"BODY[HEADER.FIELDS")]
            if sv != av:
                report.bad(side.label, name, "sweep header fields != the same item alone "
                           "(%r vs %r)" % (sv[:1], av[:1]))
            del key
        # \Seen semantics of each form
        if seen:
            forms = list(SEEN_FORMS)
            if b"BINARY" in caps_both:
                forms.append(b"BINARY[1]")
            results = {}
            for side, uid in ((ref, ur), (dut, ud)):
                cmds = []
                for f in forms:
                    cmds += [b"UID STORE %d -FLAGS.SILENT (\\Seen)" % uid,
                             b"UID FETCH %d (%s)" % (uid, f),
                             b"UID FETCH %d (FLAGS)" % uid]
                results[side.label] = side.run(cmds)
            for k, f in enumerate(forms):
                for j, what in ((1, b"after -\\Seen: "), (2, b"then FLAGS after ")):
                    cmp(name, what + f, what + f, results[ref.label][3 * k + j],
                        results[dut.label][3 * k + j])
    if out is not None:
        report.print(out)
    return report
