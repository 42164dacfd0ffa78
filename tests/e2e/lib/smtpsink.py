"""SinkServer: Postfix's smtp-sink on a free loopback port, with its fault
options, for rejection and capture tests. See README.md."""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

from mailmsg import smtp_send
from procutil import (HOST, HarnessError, Reaper, kill_processes,
                      processes_of, free_ports, register, unregister,
                      wait_port)


def find_smtp_sink():
    for p in (shutil.which("smtp-sink"), "/usr/sbin/smtp-sink",
              "/usr/lib/postfix/sbin/smtp-sink"):
        if p and os.access(p, os.X_OK):
            return p
    raise HarnessError("smtp-sink not found (Debian package postfix)")


class SinkServer:
    """Postfix's smtp-sink on a free 127.0.0.1 port: accepts and stores
    every message (capture=True) unless told to fail commands.

    Fault options take command names (CONNECT, HELO, EHLO, MAIL, RCPT, DATA,
    "." for end of data, RSET, NOOP, QUIT):
      hard_reject  -f  reply 5xx (hard_reply overrides "500 5.3.0 Error: command failed")
      soft_reject  -r  reply 4xx (soft_reply overrides "450 4.3.0 Error: command failed")
      disconnect   -q  drop the connection without a reply
      disconnect_421 -Q reply 421 and drop the connection
    Any of -f/-r turns PIPELINING off (smtp-sink's rule). extra_args are
    passed as they are (e.g. ["-w", "5"] delays the DATA reply).

    messages() returns each captured transaction as a dict with
    "helo", "mail" (MAIL args), "rcpts" (list of RCPT args) and "data"
    (the message bytes, LF line ends, as smtp-sink dumps them)."""

    def __init__(self, hard_reject=(), soft_reject=(), disconnect=(),
                 disconnect_421=(), hard_reply=None, soft_reply=None,
                 capture=True, extra_args=(), keep=None, start_timeout=15):
        self.hard_reject = list(hard_reject)
        self.soft_reject = list(soft_reject)
        self.disconnect = list(disconnect)
        self.disconnect_421 = list(disconnect_421)
        self.hard_reply = hard_reply
        self.soft_reply = soft_reply
        self.capture = capture
        self.extra_args = list(extra_args)
        self.keep = (os.environ.get("MAILSTACK_KEEP") == "1") if keep is None else keep
        self.start_timeout = start_timeout
        self.host = HOST
        self.port = None
        self.dir = None
        self._proc = None
        self._reaper = None
        self._stopped = True

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        self._stopped = False
        self.dir = tempfile.mkdtemp(prefix="smtpsink-")
        os.chmod(self.dir, 0o755)
        register(self)
        try:
            self.dump_dir = os.path.join(self.dir, "dump")
            os.mkdir(self.dump_dir)
            pw = pwd.getpwnam("postfix")
            os.chown(self.dump_dir, pw.pw_uid, pw.pw_gid)
            self.port = free_ports(1)[0]
            argv = [find_smtp_sink(), "-4", "-u", "postfix", "-h",
                    "sink.localhost"]
            for flag, cmds in (("-f", self.hard_reject),
                               ("-r", self.soft_reject),
                               ("-q", self.disconnect),
                               ("-Q", self.disconnect_421)):
                if cmds:
                    argv += [flag, ",".join(cmds)]
            if self.hard_reply:
                argv += ["-B", self.hard_reply]
            if self.soft_reply:
                argv += ["-b", self.soft_reply]
            if self.capture:
                argv += ["-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S.")]
            argv += self.extra_args
            argv += ["%s:%d" % (HOST, self.port), "128"]
            self.argv = argv
            self._reaper = Reaper()
            if not self.keep:
                self._reaper.tell("dir " + self.dir)
            out = open(os.path.join(self.dir, "smtp-sink.out"), "ab")
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                out.close()
            self._reaper.watch(pid=self._proc.pid, session=self._proc.pid)
            connect_faults = {c.upper() for c in
                              self.hard_reject + self.soft_reject +
                              self.disconnect + self.disconnect_421}
            wait_port(self.port, self.start_timeout,
                      None if "CONNECT" in connect_faults else b"220",
                      proc=self._proc, what="smtp-sink")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._proc is not None:
                procs = processes_of({self._proc.pid}, [self._proc.pid])
                kill_processes(procs, grace=2.0)
                if self._proc.poll() is None:
                    self._proc.kill()
                self._proc.wait()
        finally:
            if self._reaper is not None:
                self._reaper.close()
                self._reaper = None
            unregister(self)
            if self.dir and not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, mail_from, rcpts, msg, **kw):
        """smtp_send() to this sink."""
        return smtp_send(self.host, self.port, mail_from, rcpts, msg, **kw)

    def processes(self):
        if self._proc is None or self._proc.poll() is not None:
            return {}
        return processes_of({self._proc.pid}, [self._proc.pid])

    def messages(self):
        """Captured transactions, oldest first (see class doc)."""
        out = []
        if not self.capture:
            return out
        entries = []
        # smtp-sink creates a dump file when a transaction starts and
        # removes it when the transaction is abandoned (the fault tests
        # disconnect mid-DATA): a file listed may be gone a moment later.
        for n in os.listdir(self.dump_dir):
            p = os.path.join(self.dump_dir, n)
            try:
                entries.append((os.stat(p).st_mtime_ns, n, p))
            except FileNotFoundError:
                continue
        entries.sort()
        for _, _, p in entries:
            try:
                with open(p, "rb") as f:
                    out.append(_parse_sink_dump(f.read()))
            except FileNotFoundError:
                continue
        return out

    def wait_for_messages(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= count:
                return msgs
            if time.monotonic() >= deadline:
                raise HarnessError("smtp-sink captured %d of %d messages"
                                     % (len(msgs), count))
            time.sleep(0.05)


def _parse_sink_dump(raw):
    rec = {"helo": None, "mail": None, "rcpts": [], "data": b"", "raw": raw}
    data = raw
    while True:
        nl = data.find(b"\n")
        if nl < 0:
            break
        line = data[:nl]
        if line.startswith(b"X-Helo-Args: "):
            rec["helo"] = line[13:].decode("utf-8", "replace")
        elif line.startswith(b"X-Mail-Args: "):
            rec["mail"] = line[13:].decode("utf-8", "replace")
        elif line.startswith(b"X-Rcpt-Args: "):
            rec["rcpts"].append(line[13:].decode("utf-8", "replace"))
        elif line.startswith(b"Received: "):
            # three-line header: "Received: from", "\tby ...", "\tfor ...;"
            rest = data[nl + 1:]
            for _ in range(2):
                if rest[:1] in (b"\t", b" "):
                    k = rest.find(b"\n")
                    rest = rest[k + 1:] if k >= 0 else b""
            # smtp-sink appends one empty line after the message
            if rest.endswith(b"\n\n"):
                rest = rest[:-1]
            rec["data"] = rest
            break
        elif not line.startswith(b"X-"):
            break
        data = data[nl + 1:]
    return rec
