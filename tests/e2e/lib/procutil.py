"""Processes and ports for the e2e harness: free loopback ports, finding
every process of a daemon tree, killing them, and a reaper process that
cleans up when the test process dies without doing so itself.

Python 3 standard library only; Linux (/proc)."""

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"


class HarnessError(RuntimeError):
    """A harness server could not be started or misbehaved."""


class DaemonExited(HarnessError):
    """A server exited while we waited for it to listen (for example because
    another process took its port first)."""


# Ports are picked below the kernel's ephemeral range, so that neither the
# outgoing connections of any process nor another test binding port 0 can
# take one between our pick and the daemon's bind.
_PORT_FLOOR = 20000
_handed_out = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # as the daemons do: SO_REUSEADDR, so TIME_WAIT leftovers don't count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(count):
    """Return `count` distinct free TCP ports on 127.0.0.1.

    Ports are chosen at random below the ephemeral port range (20000 up to
    ip_local_port_range's low end), checked by binding them, and never
    handed out twice by this process. Another harness process may still
    pick the same port before the daemon binds it; MailStack.start()
    retries with new ports when a daemon fails to start."""
    low = _ephemeral_low()
    if low - _PORT_FLOOR < 1000:
        return _kernel_ports(count)
    rng = random.SystemRandom()
    ports = []
    for _ in range(count * 50):
        if len(ports) == count:
            break
        port = rng.randrange(_PORT_FLOOR, low)
        if port in _handed_out or port in ports or not _port_is_free(port):
            continue
        ports.append(port)
    if len(ports) < count:
        raise HarnessError("no free loopback ports in %d..%d" % (_PORT_FLOOR, low))
    _handed_out.update(ports)
    return ports


def _kernel_ports(count):
    """Ports the kernel picks (port 0), all bound at once so they differ."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_stat(pid):
    """(ppid, session id, start time) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] = state, [1] = ppid, [2] = pgrp, [3] = session, [19] = starttime
    if rest[0] == "Z":
        return None
    return int(rest[1]), int(rest[3]), int(rest[19])


def _all_pids():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            out.append(int(name))
    return out


def processes_of(sessions, roots=()):
    """Live processes in any of `sessions` or descending from `roots`:
    {pid: starttime}."""
    table = {}
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is not None:
            table[pid] = st
    found = {}
    for pid, (ppid, sid, start) in table.items():
        if sid in sessions:
            found[pid] = start
    frontier = [p for p in roots if p in table]
    for p in frontier:
        found[p] = table[p][2]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, sid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def processes_matching(marker):
    """Live processes (not this one) whose command line or environment
    contains `marker`: {pid: starttime}. A stack's folder name is such a
    marker: Postfix carries MAIL_CONFIG=<folder>/postfix in its environment
    to every process it starts, and Dovecot's processes carry the instance
    name in their titles."""
    if isinstance(marker, str):
        marker = marker.encode()
    if len(marker) < 8:
        raise HarnessError("process marker %r is too short" % marker)
    me = os.getpid()
    found = {}
    for pid in _all_pids():
        if pid == me:
            continue
        for name in ("cmdline", "environ"):
            try:
                with open("/proc/%d/%s" % (pid, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if marker in data:
                st = _proc_stat(pid)
                if st is not None:
                    found[pid] = st[2]
                break
    return found


def kill_all(find, rounds=5, grace=2.0):
    """Kill what find() returns ({pid: starttime}), then look again, since
    a dying parent may have started one more child meanwhile; up to
    `rounds` times. Returns what is still alive (normally {})."""
    for _ in range(rounds):
        procs = find()
        if not procs:
            return {}
        kill_processes(procs, grace=grace)
    return find()


def still_alive(procs):
    """The subset of {pid: starttime} still running (same start time)."""
    alive = {}
    for pid, start in procs.items():
        st = _proc_stat(pid)
        if st is not None and st[2] == start:
            alive[pid] = start
    return alive


def kill_processes(procs, grace=3.0):
    """SIGTERM every process in {pid: starttime}, SIGKILL what is left
    after `grace` seconds; returns once all are gone (or after 5 s more)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        alive = still_alive(procs)
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and still_alive(procs):
            time.sleep(0.05)


def terminate(proc, timeout=15.0, group=False):
    """Stops a daemon started with subprocess.Popen as it asks to be
    stopped: SIGTERM, up to `timeout` seconds for it to exit, then SIGKILL
    (to its whole process group with group=True, for one started with
    start_new_session). Returns its exit status (-9 when it had to be
    killed); one that had already exited gives its status."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
        return -9


def wait_port(port, timeout, expect=None, host=HOST, proc=None, what="service"):
    """Wait until `host:port` accepts a connection (and, if `expect` is
    given, sends a greeting starting with it)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DaemonExited("%s exited with status %s during start-up"
                                 % (what, proc.returncode))
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if expect is None:
                    return
                s.settimeout(1)
                greeting = s.recv(512)
                if greeting.startswith(expect):
                    return
                last = "unexpected greeting %r" % greeting[:80]
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise HarnessError("%s on %s:%d not ready after %.0f s (%s)"
                         % (what, host, port, timeout, last))


# Every live server object (anything with stop()), for atexit and SIGTERM clean-up.
_live = set()
_live_lock = threading.Lock()
_prev_sigterm = None


def _cleanup_all():
    with _live_lock:
        items = list(_live)
    for item in items:
        try:
            item.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _on_sigterm(signum, frame):
    _cleanup_all()
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)
    raise SystemExit(128 + signum)


def register(item):
    global _prev_sigterm
    with _live_lock:
        first = not _live
        _live.add(item)
    if first and threading.current_thread() is threading.main_thread():
        cur = signal.getsignal(signal.SIGTERM)
        if cur is not _on_sigterm and cur is not signal.SIG_IGN:
            _prev_sigterm = cur if callable(cur) else None
            signal.signal(signal.SIGTERM, _on_sigterm)


def unregister(item):
    with _live_lock:
        _live.discard(item)


atexit.register(_cleanup_all)


class Reaper:
    """A watchdog process that kills our daemons if this process dies.

    It reads "pid PID START" / "session SID" / "marker TEXT" / "dir PATH"
    lines on a pipe whose only writer is this process. "done" means a clean
    stop. End of file without "done" (we were killed) makes it kill every
    process it was told about, every process in those sessions or
    descending from those processes, and every process whose command line
    or environment contains a marker (see processes_matching), then remove
    the directories it was told about. Tell it the marker before starting
    the daemons, so that none can escape between fork and watch()."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--reaper"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def tell(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def watch(self, pid=None, session=None):
        if pid is not None:
            st = _proc_stat(pid)
            if st is not None:
                self.tell("pid %d %d" % (pid, st[2]))
        if session is not None:
            self.tell("session %d" % session)

    def close(self):
        self.tell("done")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def reaper_main():
    pids = {}
    sessions = set()
    markers = []
    dirs = []
    done = False
    for raw in sys.stdin.buffer:
        text = raw.decode("utf-8", "surrogateescape").rstrip("\n")
        parts = text.split()
        if not parts:
            continue
        if parts[0] == "dir":
            dirs.append(text[4:])
            continue
        if parts[0] == "marker":
            if len(text[7:]) >= 8:  # never a short, match-all marker
                markers.append(text[7:])
            continue
        if parts[0] == "pid" and len(parts) == 3:
            pids[int(parts[1])] = int(parts[2])
        elif parts[0] == "session" and len(parts) == 2:
            sessions.add(int(parts[1]))
        elif parts[0] == "done":
            done = True
    if not done:
        def find():
            live = still_alive(pids)
            procs = dict(live)
            # members of the sessions, and descendants of the watched
            # processes that made sessions of their own (Postfix's master
            # calls setsid())
            procs.update(processes_of(sessions, roots=list(live)))
            for m in markers:
                procs.update(processes_matching(m))
            procs.pop(os.getpid(), None)
            return procs
        kill_all(find)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--reaper":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(reaper_main())
    sys.stderr.write("usage: procutil.py --reaper (internal)\n")
    sys.exit(2)
