"""Real Postfix delivering into real Dovecot on 127.0.0.1, for tests.

    import sys; sys.path.insert(0, "<repo>/tests/e2e/lib")
    from mailstack import MailStack, SinkServer, make_message, strip_delivery_headers

    with MailStack() as ms:
        msg = make_message("alice@example.org", ["bob@example.org"])
        ms.send("alice@example.org", ["bob@example.org"], msg)
        [stored] = ms.wait_for_delivery("bob@example.org", 1)
        assert strip_delivery_headers(stored) == msg

Each MailStack gets its own temporary directory holding the Postfix config
and queue, the Dovecot config, run and state directories, the mailboxes and
all logs; its own free loopback ports; and its own processes, which are
stopped and killed on exit, at interpreter exit, on SIGTERM, and by a reaper
process when the test process dies without cleaning up (SIGKILL, ctest
timeout). See README.md beside this file. Python 3 standard library only.
"""

import imaplib
import os
import pwd
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

from procutil import (HOST, DaemonExited, HarnessError, Reaper, free_ports,
                      kill_all, processes_matching, processes_of, register,
                      still_alive, unregister, wait_port)
from mailmsg import (delivery_headers, make_message, smtp_send,
                     strip_delivery_headers)
from smtpsink import SinkServer, find_smtp_sink
from stackconf import (DEFAULT_MESSAGE_SIZE_LIMIT, DOMAINS, REJECT_DATA_SENDER,
                       REJECT_RCPT, REPLY_REJECT_DATA, REPLY_REJECT_RCPT,
                       REPLY_TEMPFAIL_DATA, REPLY_TEMPFAIL_RCPT,
                       TEMPFAIL_DATA_SENDER, TEMPFAIL_RCPT, USERS,
                       make_selfsigned_cert, write_dovecot_conf,
                       write_postfix_conf)

__all__ = [
    "MailStack", "MailStackError", "SinkServer", "HarnessError",
    "make_message", "smtp_send", "strip_delivery_headers",
    "delivery_headers", "make_selfsigned_cert", "free_ports",
    "find_smtp_sink", "HOST", "DOMAINS", "USERS",
    "REJECT_RCPT", "TEMPFAIL_RCPT", "REJECT_DATA_SENDER",
    "TEMPFAIL_DATA_SENDER", "REPLY_REJECT_RCPT", "REPLY_TEMPFAIL_RCPT",
    "REPLY_REJECT_DATA", "REPLY_TEMPFAIL_DATA", "reply_matches",
    "still_alive", "processes_matching",
]

MailStackError = HarnessError

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"


def reply_matches(reply, code, text):
    """True when an SMTP reply (int code, and text as smtplib gives it:
    bytes or str, enhanced status code first) is the fixed test reply
    `reply` (one of the REPLY_* strings): same code, same enhanced status
    code, and the text ends with the REPLY_* reason. Postfix puts
    "<address>: Recipient address rejected: " (or "Sender address
    rejected: ") between the status code and the reason."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    want_code, want_status, want_reason = reply.split(" ", 2)
    got = text.split(" ", 1)
    return (int(want_code) == int(code) and len(got) == 2
            and got[0] == want_status and got[1].endswith(want_reason))


class MailStack:
    """Postfix (SMTP, submission, optional SMTPS) delivering over LMTP into
    Dovecot (IMAP, optional IMAPS), all on 127.0.0.1 free ports.

    Attributes after start(): dir, host, smtp_port, submission_port,
    smtps_port (None without TLS), imap_port, imaps_port (None without
    TLS), lmtp_port, sasl_socket, cert, key (None without TLS), ca (the
    CA file clients trust, None when the cert is its own anchor),
    postfix_log, dovecot_log.

    tls: False (default: no TLS), True (a throwaway self-signed cert made
    in the stack dir), or (cert_file, key_file[, ca_file]), e.g.
    localhost.pem, localhost.key and ca.pem from certs/mkcerts.sh.
    smtps_auth: True (default) makes the implicit-TLS port a submission
    port (AUTH required to relay, like submission_port); False makes it an
    MTA port like smtp_port (127.0.0.0/8 may relay without AUTH; AUTH still
    offered), for gateway-mode tests over implicit TLS.
    postfix_settings: dict of main.cf parameters replacing or adding to
    the harness's (e.g. {"smtpd_tls_security_level": "encrypt"} to require
    STARTTLS on smtp_port); master.cf -o options of the submission and
    smtps services still win there.
    reinjection: True adds the reinjection smtpd of a content-filter
    deployment on `reinject_port` (no content_filter, 127.0.0.0/8 may
    relay: the service of deploy/gateway/postfix-content-filter.md); put
    the filter itself in postfix_settings ({"content_filter":
    "smtp:[127.0.0.1]:PORT"}), or only on the submission service with
    submission_options (["content_filter=..."]). master_cf_extra: master.cf lines appended
    verbatim (services of your own; continuation lines start with blanks).
    dovecot_extra: dovecot.conf text appended verbatim (later settings
    win; e.g. service limits for benchmarks with thousands of IMAP
    connections). users: dict address -> password replacing USERS (addresses must be in
    `domains`). keep: leave the directory on disk after stop (for
    debugging; its path is printed)."""

    def __init__(self, tls=False, users=None, domains=DOMAINS,
                 message_size_limit=DEFAULT_MESSAGE_SIZE_LIMIT,
                 auth_failure_delay=0, keep=None, start_timeout=30,
                 smtps_auth=True, postfix_settings=None, reinjection=False,
                 master_cf_extra=(), submission_options=(), dovecot_extra=""):
        self.tls = tls
        self.smtps_auth = smtps_auth
        self.postfix_settings = dict(postfix_settings or {})
        self.reinjection = reinjection
        self.master_cf_extra = list(master_cf_extra)
        # "name=value" -o overrides of the submission service only (a
        # content_filter for submitted mail, inbound on smtp_port unfiltered)
        self.submission_options = list(submission_options)
        self.dovecot_extra = dovecot_extra
        self.users = dict(USERS if users is None else users)
        self.domains = tuple(domains)
        self.message_size_limit = message_size_limit
        self.auth_failure_delay = auth_failure_delay
        self.keep = (os.environ.get("MAILSTACK_KEEP") == "1") if keep is None else keep
        self.start_timeout = start_timeout
        self.host = HOST
        self.attempt_dirs = []  # folder of each start attempt (see start)
        self._reset()
        self._stopped = True

    # -- life cycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, attempts=3):
        """Start Dovecot, then Postfix, and wait until every port answers.
        A daemon that exits during start-up (a port taken meanwhile by
        another process) makes it retry with new ports and a new folder, up
        to `attempts` times."""
        if not self._stopped:
            raise MailStackError("MailStack already started")
        self.attempt_dirs = []
        for attempt in range(1, attempts + 1):
            self._reset()
            self._stopped = False
            self.dir = tempfile.mkdtemp(prefix="mailstack-")
            self.marker = os.path.basename(self.dir)
            self.attempt_dirs.append(self.dir)
            register(self)
            try:
                self._start()
                return self
            except DaemonExited:
                if attempt == attempts:
                    self._dump_logs_on_failure()
                    self.stop()
                    raise
                self.stop()
            except BaseException:
                self._dump_logs_on_failure()
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _reset(self):
        self.dir = None
        self.marker = None
        self.cert = self.key = self.ca = None
        self.smtp_port = self.submission_port = self.smtps_port = None
        self.imap_port = self.imaps_port = self.lmtp_port = None
        self.reinject_port = None
        self._postfix = None
        self._dovecot = None
        self._reaper = None
        self._seen = {}
        self._sessions = set()

    def _start(self):
        os.chmod(self.dir, 0o755)
        self.conf_dir = self._mkdir("postfix")
        self.queue_dir = self._mkdir("postfix-queue")
        self.data_dir = self._mkdir("postfix-data", owner="postfix")
        self.dovecot_dir = self._mkdir("dovecot")
        self.run_dir = self._mkdir("dovecot-run")
        self.state_dir = self._mkdir("dovecot-state")
        self.mail_dir = self._mkdir("mail", owner="dovenull")
        self.postfix_log = os.path.join(self.dir, "postfix.log")
        self.dovecot_log = os.path.join(self.dir, "dovecot.log")
        self.dovecot_conf = os.path.join(self.dovecot_dir, "dovecot.conf")
        self.sasl_socket = os.path.join(self.run_dir, "auth-postfix")

        if self.tls is True:
            self.cert, self.key = make_selfsigned_cert(self._mkdir("tls"))
        elif self.tls:
            files = tuple(self.tls)
            if len(files) not in (2, 3):
                raise MailStackError("tls: expected (cert, key) or (cert, key, ca)")
            self.cert, self.key = files[0], files[1]
            self.ca = files[2] if len(files) == 3 else None

        ports = free_ports(6)
        (self.smtp_port, self.submission_port, self.imap_port,
         self.lmtp_port, smtps, imaps) = ports
        if self.cert:
            self.smtps_port, self.imaps_port = smtps, imaps
        if self.reinjection:
            self.reinject_port = free_ports(1)[0]

        write_dovecot_conf(self)
        write_postfix_conf(self)

        self._reaper = Reaper()
        self._reaper.tell("marker " + self.marker)
        if not self.keep:
            self._reaper.tell("dir " + self.dir)
        # Both start at once (Postfix's own start-up checks take a few
        # seconds); Postfix needs Dovecot only when it delivers or checks a
        # SASL login, and start() returns only when both answer.
        self._dovecot = self._spawn([DOVECOT, "-F", "-c", self.dovecot_conf],
                                    os.path.join(self.dir, "dovecot.out"))
        self._postfix = self._spawn([POSTFIX, "-c", self.conf_dir, "start-fg"],
                                    self.postfix_log)
        t = self.start_timeout
        waits = [(self.imap_port, b"* OK", self._dovecot, "dovecot imap"),
                 (self.lmtp_port, b"220", self._dovecot, "dovecot lmtp"),
                 (self.smtp_port, b"220", self._postfix, "postfix smtpd"),
                 (self.submission_port, b"220", self._postfix,
                  "postfix submission")]
        if self.cert:
            waits += [(self.imaps_port, None, self._dovecot, "dovecot imaps"),
                      (self.smtps_port, None, self._postfix, "postfix smtps")]
        if self.reinject_port:
            waits.append((self.reinject_port, b"220", self._postfix,
                          "postfix reinjection smtpd"))
        for port, greeting, proc, what in waits:
            wait_port(port, t, greeting, proc=proc, what=what)
        self._track()

    def _mkdir(self, name, owner=None, mode=0o755):
        path = os.path.join(self.dir, name)
        os.mkdir(path, mode)
        os.chmod(path, mode)
        if owner:
            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def _spawn(self, argv, out_path):
        out = open(out_path, "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            out.close()
        self._sessions.add(proc.pid)
        self._reaper.watch(pid=proc.pid, session=proc.pid)
        return proc

    def _master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _track(self):
        """Record every process of the stack (for the reaper and stop())."""
        mpid = self._master_pid()
        if mpid is not None and mpid not in self._sessions:
            self._sessions.add(mpid)
            self._reaper.watch(pid=mpid, session=mpid)
        roots = [p.pid for p in (self._postfix, self._dovecot) if p]
        if mpid:
            roots.append(mpid)
        found = processes_of(self._sessions, roots)
        for pid, start in found.items():
            if self._seen.get(pid) != start:
                self._seen[pid] = start
                if pid == mpid or pid in roots:
                    self._reaper.tell("pid %d %d" % (pid, start))
        return found

    def processes(self):
        """{pid: starttime} of every live process of this stack."""
        if self._stopped:
            return still_alive(self._seen)
        found = self._track()
        found.update(still_alive(self._seen))
        found.update(processes_matching(self.marker))
        return found

    def stop(self):
        """Stop Postfix and Dovecot, kill anything left, remove the
        directory (unless keep). Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        try:
            procs = {}
            if self._reaper is not None:
                procs = self._track()
            asked = []  # daemons asked to stop gracefully
            if self._postfix is not None and self._master_pid() is not None:
                try:
                    subprocess.run([POSTFIX, "-c", self.conf_dir, "stop"],
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=15)
                    asked.append(self._postfix)
                except subprocess.TimeoutExpired:
                    pass  # the kill below ends it
            if self._dovecot is not None and self._dovecot.poll() is None:
                self._dovecot.terminate()
                asked.append(self._dovecot)
            for p in asked:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            procs.update(self._seen)

            def find():
                # our unreaped children only: a reaped pid may be reused
                roots = [p.pid for p in (self._postfix, self._dovecot)
                         if p is not None and p.poll() is None]
                found = still_alive(procs)
                found.update(processes_of(self._sessions, roots))
                found.update(processes_matching(self.marker))
                return found
            left = kill_all(find)
            if left:
                sys.stderr.write("mailstack: could not kill %r\n" % sorted(left))
            for p in (self._postfix, self._dovecot):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        finally:
            if self._reaper is not None:
                self._reaper.close()
                self._reaper = None
            unregister(self)
            if self.dir and not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
            elif self.dir:
                sys.stderr.write("mailstack: kept %s\n" % self.dir)

    def _dump_logs_on_failure(self):
        for path in (getattr(self, "postfix_log", None),
                     getattr(self, "dovecot_log", None),
                     os.path.join(self.dir or "/nonexistent", "dovecot.out")):
            if path and os.path.exists(path):
                with open(path, "rb") as f:
                    tail = f.read()[-4000:]
                sys.stderr.write("---- %s (tail)\n%s\n" %
                                 (path, tail.decode("utf-8", "replace")))

    # -- using it ---------------------------------------------------------

    def ssl_context(self):
        """A client SSLContext trusting this stack's certificate."""
        if not self.cert:
            raise MailStackError("stack started without tls")
        ctx = ssl.create_default_context(cafile=self.ca or self.cert)
        return ctx

    def send(self, mail_from, rcpts, msg, port=None, host=None,
             starttls=False, implicit_tls=False, login=None,
             ssl_context=None, timeout=30, mail_options=(), rcpt_options=()):
        """Send one message with smtplib (see smtp_send); port defaults to
        smtp_port, or submission_port when `login` is given. TLS uses
        ssl_context() unless another context is passed."""
        if port is None:
            port = self.submission_port if login else self.smtp_port
        if ssl_context is None and (starttls or implicit_tls) and self.cert:
            ssl_context = self.ssl_context()
        return smtp_send(host or self.host, port, mail_from, rcpts, msg,
                         starttls=starttls, implicit_tls=implicit_tls,
                         login=login, ssl_context=ssl_context,
                         timeout=timeout, mail_options=mail_options,
                         rcpt_options=rcpt_options)

    def maildir(self, user):
        """The maildir path of `user` (may not exist before delivery)."""
        local, _, domain = user.lower().partition("@")
        return os.path.join(self.mail_dir, domain, local)

    def _mail_paths(self, user, mailbox="INBOX"):
        base = self.maildir(user)
        if mailbox.upper() != "INBOX":
            base = os.path.join(base, "." + mailbox.replace("/", "."))
        paths = []
        for sub in ("new", "cur"):
            d = os.path.join(base, sub)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                p = os.path.join(d, n)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                # Maildir names start with "<seconds>.M<usec>P<pid>."
                m = re.match(r"(\d+)\.M(\d+)P", n)
                key = (int(m.group(1)), int(m.group(2))) if m else (
                    int(st.st_mtime), 0)
                paths.append((key, n, p))
        paths.sort()
        return [p for _, _, p in paths]

    def mailbox_files(self, user, mailbox="INBOX", strip=False):
        """Raw stored messages of `user`, oldest first, as bytes (CRLF line
        ends: the stack sets mail_save_crlf). strip=True removes the
        delivery-added header fields (strip_delivery_headers)."""
        out = []
        for p in self._mail_paths(user, mailbox):
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue  # moved new/ -> cur/ meanwhile; caller may retry
            out.append(strip_delivery_headers(data) if strip else data)
        return out

    def wait_for_delivery(self, user, count=1, timeout=15, strip=False,
                          match=None):
        """Wait until `user`'s INBOX holds at least `count` messages and
        return them as mailbox_files() does. match: only count (and
        return) messages containing this bytes substring, or for which this
        callable returns true (it gets the raw stored bytes). Raises
        MailStackError with the Postfix log tail on timeout."""
        if isinstance(match, (bytes, bytearray)):
            needle = bytes(match)
            match = lambda raw: needle in raw  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            files = [m for m in self.mailbox_files(user)
                     if match is None or match(m)]
            if len(files) >= count:
                if strip:
                    files = [strip_delivery_headers(m) for m in files]
                return files
            if time.monotonic() >= deadline:
                raise MailStackError(
                    "%s has %d of %d messages after %.0f s; postfix log:\n%s"
                    % (user, len(files), count, timeout,
                       self.postfix_log_text()[-3000:]))
            time.sleep(0.05)

    def imap_login(self, user, password=None, tls=None, timeout=30,
                   port=None, host=None):
        """A logged-in imaplib connection (plain; tls="imaps" for implicit
        TLS, tls="starttls" for STARTTLS); the caller calls logout().
        port/host: connect elsewhere (e.g. an IMAP proxy in front of this
        Dovecot); defaults are Dovecot's imap or imaps port."""
        if password is None:
            password = self.users[user]
        host = host or self.host
        if tls == "imaps":
            conn = imaplib.IMAP4_SSL(host, port or self.imaps_port,
                                     ssl_context=self.ssl_context(),
                                     timeout=timeout)
        else:
            conn = imaplib.IMAP4(host, port or self.imap_port, timeout=timeout)
        try:
            if tls == "starttls":
                conn.starttls(ssl_context=self.ssl_context())
            conn.login(user, password)
        except BaseException:
            try:
                conn.shutdown()
            except OSError:
                pass
            raise
        return conn

    def imap_fetch(self, user, password=None, mailbox="INBOX", tls=None,
                   timeout=30, port=None, host=None):
        """Log in over IMAP (see imap_login), fetch every message of
        `mailbox` with UID FETCH 1:* BODY.PEEK[] and return them as bytes,
        in UID order (no flags change)."""
        conn = self.imap_login(user, password, tls, timeout, port, host)
        try:
            typ, data = conn.select(mailbox, readonly=True)
            if typ != "OK":
                raise MailStackError("IMAP SELECT %s failed: %r" % (mailbox, data))
            if int(data[0]) == 0:
                return []
            typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
            if typ != "OK":
                raise MailStackError("IMAP FETCH failed: %r" % data)
            return [item[1] for item in data if isinstance(item, tuple)]
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def imap_append(self, user, msg, mailbox="INBOX", flags="", password=None):
        """Store `msg` (bytes, CRLF) in `mailbox` with IMAP APPEND, as a
        client saving to Sent or Drafts does; returns the new UID (from
        APPENDUID), or None. It is stored as given: no delivery headers."""
        conn = self.imap_login(user, password)
        try:
            typ, data = conn.append(mailbox, flags or None, None, msg)
            if typ != "OK":
                raise MailStackError("IMAP APPEND failed: %r" % data)
            m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(m.group(1)) if m else None
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass

    def postfix_log_text(self):
        try:
            with open(self.postfix_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def dovecot_log_text(self):
        try:
            with open(self.dovecot_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def accepted_queue_ids(self):
        """Queue ids of every message Postfix accepted (committed to its
        queue) so far, in order: the queue manager logs "<id>: from=<...>,
        size=..." once a message is safely queued. A message refused at
        RCPT or at the end of DATA never appears, so an unchanged list
        proves nothing new reached Postfix."""
        ids = []
        for qid in re.findall(r"postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<",
                              self.postfix_log_text()):
            if qid not in ids:
                ids.append(qid)
        return ids

    def postqueue(self, *args, timeout=30):
        """Run `postqueue -c <conf> ARGS` (e.g. "-p" to list the queue,
        "-f" to flush it) and return its standard output as text."""
        r = subprocess.run([POSTQUEUE, "-c", self.conf_dir] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out = r.stdout.decode("utf-8", "replace")
        if r.returncode != 0:
            raise MailStackError("postqueue %s failed: %s" % (" ".join(args), out))
        return out

    def queued(self):
        """{queue id: listing text} of every message in Postfix's queue
        (postqueue -p: sender, then recipients, a deferred one with the
        reason in parentheses)."""
        out = {}
        for entry in self.postqueue("-p").split("\n\n"):
            # the first entry follows the "-Queue ID- ..." title line
            m = re.search(r"^([0-9A-Za-z]+)[*!]?\s+\d+ ", entry, re.M)
            if m:
                out[m.group(1)] = entry[m.start():].strip()
        return out

    def wait_queue_empty(self, timeout=15):
        """Wait until Postfix's active/incoming/deferred queues are empty;
        returns True, or False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            for q in ("incoming", "active", "deferred", "maildrop"):
                for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, q)):
                    if files:
                        busy = True
                        break
                if busy:
                    break
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
