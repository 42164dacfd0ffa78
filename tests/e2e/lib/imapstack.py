"""IMAP test rig: real Dovecot (plain, STARTTLS, implicit TLS with the test
CA), mailboxes loaded with exact bytes, and `qumail proxy` with an `imap`
section in front of it. See README.md ("IMAP rig").

    import imapstack as I
    with I.ImapRig() as rig:                       # Dovecot + the test CA
        rig.load("alice@example.org", "INBOX", [msg1, msg2])   # APPEND
        for t in rig.targets():                    # direct, then proxy
            c = t.connect("alice@example.org")     # RawImap, logged in
            ...
    # or: rig.require_proxy() -> exits 77 (ctest: skipped) with the reason
    #     while qumail proxy has no imap section

Which side a test talks to (the switch):
  QUMAIL_IMAP_VIA=both (default) | direct | proxy
      both: every target test runs against Dovecot directly and through
      `qumail proxy`; the proxy arm is skipped with a printed reason while
      the daemon has no IMAP side. proxy: the proxy arm only (exit 77 if it
      cannot run). direct: Dovecot only.
  QUMAIL_IMAP_STANDIN=nginx
      a check of the rig itself, not of qumail: the proxy arms run through
      nginx's mail proxy (a byte pump after login) in front of the rig's
      Dovecot, so the proxy code paths of every test can be exercised before
      qumail has an IMAP side. Its results say nothing about qumail.
  QUMAIL_IMAP_PROXY=HOST:PORT[:none|starttls|implicit]
      use an IMAP proxy that is already running (started by hand, with its
      upstream pointing at... a Dovecot of its own) instead of starting one:
      only useful with tests that load their own mail through the target.

Python 3 standard library only.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from procutil import HOST, Reaper, free_ports, register, terminate, unregister, wait_port
from testcerts import make_certs  # noqa: F401 (I.make_certs for the scripts)
from imapwire import RawImap, quote
import mailstack as M

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUMAIL_SRC", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
BUILD = os.environ.get("QUMAIL_BUILD", os.path.join(SRC, "build"))
QUMAIL = os.environ.get("QUMAIL_BIN", os.path.join(BUILD, "qumail"))
IMAPTEST_DIR = os.environ.get("QUMAIL_IMAPTEST_DIR",
                              os.path.join(BUILD, "tools", "imaptest"))

SKIP = 77  # ctest SKIP_RETURN_CODE of every IMAP rig test


def skip(reason):
    """Exit 77 (ctest: skipped) with the reason on stdout."""
    print("SKIP: %s" % reason, flush=True)
    sys.exit(SKIP)


def need_root():
    if os.geteuid() != 0:
        skip("needs root (own Dovecot/Postfix instances)")


def via():
    v = os.environ.get("QUMAIL_IMAP_VIA", "both").lower()
    if v not in ("both", "direct", "proxy"):
        raise SystemExit("QUMAIL_IMAP_VIA must be both, direct or proxy, not %r" % v)
    return v


# -- does `qumail proxy` have an IMAP side? ---------------------------------

_support = None


def proxy_support(qumail=None):
    """(True, "") when the daemon has an IMAP side: `qumail check` accepts
    a configuration with an `imap` section, and `qumail proxy` started with
    one opens its IMAP listener; else (False, reason). The check uses the
    same configuration ImapProxy writes, so a schema the daemon does not
    accept (keys renamed) shows up here too, with `qumail check`'s own
    words. Cached per process."""
    global _support
    if os.environ.get("QUMAIL_IMAP_STANDIN") or os.environ.get("QUMAIL_IMAP_PROXY"):
        return (True, "")
    if _support is not None:
        return _support
    qumail = qumail or QUMAIL
    if not os.access(qumail, os.X_OK):
        _support = (False, "no qumail binary at %s" % qumail)
        return _support
    d = tempfile.mkdtemp(prefix="imaprig-probe-")
    try:
        certs = {"ca": os.path.join(d, "ca.pem"),
                 "localhost": (os.path.join(d, "l.pem"), os.path.join(d, "l.key"))}
        cfg = proxy_config(d, certs, upstream_port=143, upstream_tls="starttls",
                           ports={"plain": 1431, "starttls": 1432, "implicit": 1433},
                           smtp_port=1587, smtp_upstream_port=587)
        path = os.path.join(d, "probe.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        with open(os.path.join(d, "policy"), "w") as f:
            f.write("* action=none\n")
        r = subprocess.run([qumail, "check", "--config", path], capture_output=True,
                           timeout=30)
        text = (r.stdout + r.stderr).decode("utf-8", "replace").strip()
        if r.returncode == 0:
            _support = _listener_probe(qumail, d)
        elif "key 'imap': unknown key" in text:
            _support = (False, "qumail proxy has no IMAP side yet (`qumail check` "
                               "does not know the 'imap' section: issue 11)")
        else:
            _support = (False, "qumail check refuses the rig's imap section "
                               "(schema changed? adapt imapstack.proxy_config): "
                        + text.replace(d, "<probe>")[:800])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return _support


def _listener_probe(qumail, d):
    """The configuration is accepted; does the daemon open an IMAP
    listener? (A build may know the section before it has the proxy.)
    Starts `qumail proxy` with one plain IMAP listener (its upstream is not
    contacted before a client logs in) and waits for the port, the
    process's exit, or a log line saying there is no IMAP proxy."""
    port, smtp_port, up = free_ports(3)
    cfg = {"log_level": "info", "state_dir": d, "policy_file": os.path.join(d, "policy"),
           "smtp": {"listeners": [{"name": "smtp-plain", "address": HOST, "port": smtp_port,
                                   "tls": "none"}],
                    "upstream": {"host": HOST, "port": up, "tls": "none"}},
           "imap": {"listeners": [{"name": "imap-plain", "address": HOST, "port": port,
                                   "tls": "none"}],
                    "upstream": {"host": HOST, "port": up, "tls": "none"}}}
    path = os.path.join(d, "listen-probe.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log_path = os.path.join(d, "probe.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([qumail, "proxy", "--config", path], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return (True, "")
            except OSError:
                pass
            with open(log_path, "r", errors="replace") as f:
                text = f.read()
            no_imap = [l for l in text.splitlines() if "no IMAP proxy" in l]
            if no_imap:
                return (False, "qumail proxy accepts the imap section but opens no IMAP "
                               "listener (issue 11): " + no_imap[0].split(": ", 1)[-1])
            if proc.poll() is not None:
                return (False, "qumail proxy with an imap section exited %s: %s"
                        % (proc.returncode, text[-600:].replace(d, "<probe>")))
            time.sleep(0.1)
        return (False, "qumail proxy opened no IMAP listener within 20 s (issue 11)")
    finally:
        terminate(proc, 10)


# -- certificates -----------------------------------------------------------

def load_date(i):
    """The INTERNALDATE ImapRig.load gives the i-th message: one second
    apart from 2026-12-01 00:00:00 UTC (after every dated corpus message)."""
    t = time.gmtime(1796083200 + i)
    month = "JanFebMarAprMayJunJulAugSepOctNovDec"[3 * t.tm_mon - 3:3 * t.tm_mon]
    return "%02d-%s-%04d %02d:%02d:%02d +0000" % (t.tm_mday, month, t.tm_year, t.tm_hour,
                                                  t.tm_min, t.tm_sec)


# -- targets: where a client connects ----------------------------------------

class Target:
    """One IMAP endpoint: name ("direct" or "proxy"), host, port, tls
    ("none", "starttls", "implicit"), ca (trust anchors)."""

    def __init__(self, name, host, port, tls="none", ca=None, users=None):
        self.name, self.host, self.port, self.tls, self.ca = name, host, port, tls, ca
        self.users = users or M.USERS

    def __repr__(self):
        return "<%s %s:%d tls=%s>" % (self.name, self.host, self.port, self.tls)

    def connect(self, user=None, password=None, timeout=60):
        """A RawImap, logged in when user is given."""
        c = RawImap.connect(self.host, self.port, tls=self.tls, ca=self.ca,
                            timeout=timeout)
        if user:
            try:
                c.login(user, password if password is not None else self.users[user])
            except BaseException:
                c.close()
                raise
        return c

    def url(self, user=None, mailbox=None):
        """curl URL (imap:// or imaps://); STARTTLS needs --ssl-reqd."""
        scheme = "imaps" if self.tls == "implicit" else "imap"
        u = "%s://%s:%d/" % (scheme, self.host, self.port)
        if mailbox:
            u += mailbox
        return u


# -- the rig: Dovecot (+ Postfix) and optionally the proxy -------------------

class ImapRig:
    """A MailStack (Postfix delivering into Dovecot) with TLS from the test
    CA, and `qumail proxy` in front of its IMAP when asked (proxy()).

    Attributes: dir (work folder), certs, ms (the MailStack), px (the
    ImapProxy or None)."""

    def __init__(self, users=None, keep=None, **mailstack_args):
        self.users = users
        self.keep = keep
        self.mailstack_args = mailstack_args
        self.ms = None
        self.px = None
        self.standin = None
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        need_root()
        self.dir = tempfile.mkdtemp(prefix="imaprig-")
        register(self)
        self.certs = make_certs(self.dir)
        lh, key = self.certs["localhost"]
        self.ms = M.MailStack(tls=(lh, key, self.certs["ca"]), users=self.users,
                              keep=self.keep, **self.mailstack_args)
        self.ms.start()
        return self

    def stop(self):
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        if self.px is not None:
            self.px.stop()
            self.px = None
        if self.ms is not None:
            self.ms.stop()
            self.ms = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        unregister(self)

    # Dovecot's endpoints
    def direct(self, tls="none"):
        port = self.ms.imaps_port if tls == "implicit" else self.ms.imap_port
        return Target("direct", HOST, port, tls, self.certs["ca"], self.ms.users)

    def start_proxy(self, upstream_tls="implicit", **kw):
        """Start `qumail proxy` with an imap section in front of this
        Dovecot (upstream over implicit TLS by default, verified against
        the test CA). Raises ProxyUnavailable when the daemon has no IMAP
        side."""
        ok, reason = proxy_support()
        if not ok:
            raise ProxyUnavailable(reason)
        if self.px is None:
            up = self.ms.imaps_port if upstream_tls == "implicit" else self.ms.imap_port
            self.px = ImapProxy(self.certs, up, upstream_tls=upstream_tls,
                                smtp_upstream_port=self.ms.submission_port,
                                workdir=self.dir, **kw)
            self.px.start()
        return self.px

    def proxied(self, tls="none"):
        if os.environ.get("QUMAIL_IMAP_STANDIN") == "nginx":
            if self.standin is None:
                import nginxmail
                self.standin = nginxmail.NginxMail(self.dir, self.ms.imap_port,
                                                   tls=self.certs["localhost"])
                self.standin.start()
            return Target("proxy", HOST, self.standin.ports[{"none": "plain"}.get(tls, tls)],
                          tls, self.certs["ca"], self.ms.users)
        ext = os.environ.get("QUMAIL_IMAP_PROXY")
        if ext:
            parts = ext.split(":")
            return Target("proxy", parts[0], int(parts[1]),
                          parts[2] if len(parts) > 2 else "none",
                          self.certs["ca"], self.ms.users)
        px = self.start_proxy()
        return Target("proxy", HOST, px.ports[{"none": "plain"}.get(tls, tls)], tls,
                      self.certs["ca"], self.ms.users)

    def targets(self, tls="none", out=sys.stdout):
        """The targets this run tests (QUMAIL_IMAP_VIA): direct first, then
        the proxy; a proxy that cannot run is reported on `out` and left
        out (or, with QUMAIL_IMAP_VIA=proxy, the test is skipped)."""
        v = via()
        ts = []
        if v in ("both", "direct"):
            ts.append(self.direct(tls))
        if v in ("both", "proxy"):
            try:
                ts.append(self.proxied(tls))
            except ProxyUnavailable as e:
                if v == "proxy":
                    skip(str(e))
                out.write("SKIP proxy arm: %s\n" % e)
                out.flush()
        return ts

    def require_proxy(self, tls="none"):
        """The proxy target, or exit 77 with the reason."""
        try:
            return self.proxied(tls)
        except ProxyUnavailable as e:
            skip(str(e))

    # loading mail
    def load(self, user, mailbox, messages, flags=b"", create=True):
        """Store each message (bytes) in `mailbox` by IMAP APPEND straight
        to Dovecot, byte for byte as given (Dovecot keeps APPENDed octets;
        with mail_save_crlf it stores bare LF as CRLF, which it would serve
        as CRLF anyway). Returns the UIDs. APPEND rather than LMTP: no
        delivery headers are added, the order and UIDs are known, and it
        works for any mailbox; doveadm save would need the stack's
        dovecot.conf and gives no UIDs.

        INTERNALDATE is given, by position (load_date(i)), not left to the
        server's clock: a message without a Date: field sorts and searches
        by it (RFC 5256 SORT DATE, Dovecot's SENT* too), so two mailboxes
        loaded with the same list must hold the same dates; with the clock,
        a load that straddled a second boundary reordered them (a flaky
        e2e_imap_search under load: SORT (REVERSE DATE) of the three
        undated corpus messages)."""
        dates = [load_date(i) for i in range(len(messages))]
        c = self.direct().connect(user)
        try:
            if create and mailbox.upper() != "INBOX":
                c.command(b"CREATE " + quote(mailbox))  # may exist already
            if flags:
                return [c.append(mailbox, m, flags=flags, date=d)[1]
                        for m, d in zip(messages, dates)]
            return c.append_many(mailbox, messages, dates=dates)
        finally:
            c.logout()

    def write_maildir(self, user, mailbox, raw, name_hint="rig"):
        """Put a message file into the maildir as-is (bypasses Dovecot's
        save path: an LF-only or bare-CR file stays so on disk). Dovecot
        picks it up at the next SELECT/NOOP."""
        base = self.ms.maildir(user)
        if mailbox.upper() != "INBOX":
            base = os.path.join(base, "." + mailbox.replace("/", "."))
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        t = time.time()
        name = "%d.M%dP%d.%s" % (int(t), int((t % 1) * 1e6), os.getpid(), name_hint)
        tmp = os.path.join(base, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
        import pwd
        pw = pwd.getpwnam("dovenull")
        for p in (tmp,):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        for root, dirs, _ in os.walk(self.ms.maildir(user)):
            for d in dirs:
                os.chown(os.path.join(root, d), pw.pw_uid, pw.pw_gid)
        os.rename(tmp, os.path.join(base, "new", name))


class ProxyUnavailable(RuntimeError):
    pass


def proxy_config(workdir, certs, upstream_port, upstream_tls, ports, smtp_port,
                 smtp_upstream_port, log_level="info", extra_imap=None,
                 kme=None, extra_smtp=None, with_imap=True):
    """The `qumail proxy` configuration of the rig. The `imap` keys are
    those of config/README.md (`imap.listeners[]` as smtp's; `imap.upstream`
    host/port/tls/verify/ca_file/server_name; `imap.limits` through
    extra_imap), as engineer daemon documented them: adapt here, in one
    place, if they change. An smtp listener on a free port
    is configured too (the default one would take 2587 and collide with
    parallel runs); its policy passes everything (nothing is sent) unless
    the caller gives one. kme: top-level keys (kme_links, kme_simulator,
    vault, ...) merged in; extra_smtp: keys merged into smtp (mode,
    trace_header, ...); with_imap=False leaves the imap section out (the
    SMTP side and the KMEs alone, e.g. to encrypt mail before the IMAP
    side exists)."""
    lh_cert, lh_key = certs["localhost"]
    listeners = []
    for kind, port in ports.items():
        e = {"name": "imap-" + kind, "address": HOST, "port": port,
             "tls": {"plain": "none"}.get(kind, kind)}
        if kind != "plain":
            e["cert_file"], e["key_file"] = lh_cert, lh_key
        listeners.append(e)
    imap = {"listeners": listeners,
            "upstream": {"host": HOST, "port": upstream_port, "tls": upstream_tls,
                         "verify": True, "ca_file": certs["ca"],
                         "server_name": "localhost"}}
    if extra_imap:
        imap.update(extra_imap)
    cfg = {
        "log_level": log_level,
        "state_dir": workdir,
        "policy_file": os.path.join(workdir, "policy"),
        "smtp": {"listeners": [{"name": "smtp-plain", "address": HOST, "port": smtp_port,
                                "tls": "none"}],
                 "upstream": {"host": HOST, "port": smtp_upstream_port, "tls": "none"}},
    }
    if with_imap:
        cfg["imap"] = imap
    if extra_smtp:
        cfg["smtp"].update(extra_smtp)
    if kme:
        cfg.update(kme)
    return cfg


class ImapProxy:
    """`qumail proxy` with an imap section: listeners plain, starttls and
    implicit (ports in .ports), upstream Dovecot. stop() sends SIGTERM and
    returns the exit status; a reaper kills it if the test dies."""

    def __init__(self, certs, upstream_port, upstream_tls="implicit",
                 smtp_upstream_port=587, listeners=("plain", "starttls", "implicit"),
                 workdir=None, log_level="info", extra_imap=None, kme=None,
                 policy="* action=none\n", env=None, extra_smtp=None, with_imap=True):
        self.certs = certs
        self.upstream_port = upstream_port
        self.upstream_tls = upstream_tls
        self.smtp_upstream_port = smtp_upstream_port
        self.listener_kinds = listeners
        self.log_level = log_level
        self.extra_imap = extra_imap
        self.kme = kme
        self.policy = policy
        self.env = env or {}
        self.extra_smtp = extra_smtp
        self.with_imap = with_imap
        self.host = HOST
        self.ports = {}
        self.proc = None
        self._reaper = None
        self.dir = tempfile.mkdtemp(prefix="qumail-imap-", dir=workdir)
        os.chmod(self.dir, 0o700)

    def start(self):
        ports = free_ports(len(self.listener_kinds) + 1)
        self.ports = dict(zip(self.listener_kinds, ports)) if self.with_imap else {}
        self.smtp_port = ports[-1]
        cfg = proxy_config(self.dir, self.certs, self.upstream_port, self.upstream_tls,
                           self.ports, self.smtp_port, self.smtp_upstream_port,
                           self.log_level, self.extra_imap, self.kme, self.extra_smtp,
                           self.with_imap)
        self.config_path = os.path.join(self.dir, "qumail.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(self.dir, "policy"), "w") as f:
            f.write(self.policy)
        self.log_path = os.path.join(self.dir, "proxy.log")
        return self.start_same()

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return getattr(self, "_log", "")

    def pid(self):
        return self.proc.pid if self.proc else None

    def restart(self):
        """Stop (SIGTERM) and start again on the same ports and state."""
        st = self.stop(remove=False)
        self.start_same()
        return st

    def start_same(self):
        """Starts `qumail proxy` on the configuration written by start()
        (the same ports and state) and waits for its listeners."""
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s" % os.path.join(SRC, "tests", "lsan.supp"))
        env.update(self.env)
        register(self)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([QUMAIL, "proxy", "--config", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=env)
        finally:
            log.close()
        self._reaper = Reaper()
        self._reaper.watch(pid=self.proc.pid, session=self.proc.pid)
        try:
            for port in list(self.ports.values()) + [self.smtp_port]:
                wait_port(port, 30, None, proc=self.proc, what="qumail proxy")
        except BaseException:
            sys.stderr.write(self.log_text()[-4000:])
            self.stop()
            raise
        return self

    def stop(self, remove=True):
        status = terminate(self.proc, 15, group=True) if self.proc else None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
        if remove:
            self._log = self.log_text()
            if os.environ.get("MAILSTACK_KEEP") != "1":
                shutil.rmtree(self.dir, ignore_errors=True)
            unregister(self)
        return status


# -- imaptest ---------------------------------------------------------------

def imaptest_binary():
    """(path to imaptest, its tests folder) built by the test build into
    <build>/tools/imaptest, or skip() when missing."""
    exe = os.path.join(IMAPTEST_DIR, "imaptest")
    tests = os.path.join(IMAPTEST_DIR, "tests")
    if not (os.access(exe, os.X_OK) and os.path.isdir(tests)):
        skip("imaptest not built at %s (target imaptest; needs dovecot-dev, "
             "autoconf, automake, libtool: deploy/install-deps.sh)" % exe)
    return exe, tests


def run_imaptest(target, args, timeout=600):
    """Run imaptest against a Target with extra key=value args; returns
    (returncode, stdout text, stderr text, seconds)."""
    exe, _ = imaptest_binary()
    argv = [exe, "host=%s" % target.host, "port=%d" % target.port] + list(args)
    if target.tls == "implicit":
        # imaptest checks certificates against the system store only; it is
        # the load here, not the TLS client under test.
        argv.append("ssl=any-cert")
    env = dict(os.environ, LD_LIBRARY_PATH="/usr/lib/dovecot")
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"), time.monotonic() - t)
