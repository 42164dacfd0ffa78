#!/usr/bin/env python3
"""The Debian package as an administrator installs it on a fresh Debian 12.

1. Builds it: deploy/build-deb.sh (CPack DEB, prefix /usr) into
   $QUMAIL_BUILD/deb; checks its control data (Depends from shlibdeps,
   conffiles, maintainer scripts) and file list.
2. Installs it with `dpkg -i` into a copy of a debootstrapped Debian 12 root
   (QUMAIL_TEST_ROOTFS, default /var/tmp/qumail-rootfs-bookworm, made by
   deploy/make-test-rootfs.sh; with QUMAIL_TEST_DEBOOTSTRAP=1 the test makes
   it). Without such a root the install part is skipped, and says so.
3. In that root: the qumail user (sysusers.d), /var/lib/qumail 0700,
   certificates in /etc/qumail/tls with keys readable by the group only,
   the unit enabled (multi-user.target.wants), the unit verified offline
   (`systemd-analyze verify`, `security` <= 2.0); then, in a network
   namespace of its own and as the qumail user, the service's own commands:
   ExecStartPre (`qumail check --quiet --files`), ExecStart (`qumail proxy`)
   until it sends READY=1 to a NOTIFY_SOCKET, a client connection to the
   SMTP listener, `qumail kme-client status` against the embedded KME, and
   SIGTERM -> exit 0. Finally `dpkg --purge` removes the state folder.

systemd itself does not run here (no init in the root): starting by
systemctl is not tested; everything the unit runs is. Needs root."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import checks  # noqa: E402
from checks import check  # noqa: E402

SRC = os.environ["QUMAIL_SRC"]
BUILD = os.environ["QUMAIL_BUILD"]
ROOTFS = os.environ.get("QUMAIL_TEST_ROOTFS", "/var/tmp/qumail-rootfs-bookworm")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def build_deb():
    env = dict(os.environ, QUMAIL_DEB_BUILD=os.path.join(BUILD, "deb"))
    # the package is a release build: no sanitizer runtime in it
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        env.pop(k, None)
    r = run(["sh", os.path.join(SRC, "deploy/build-deb.sh")], env=env, timeout=800)
    check(r.returncode == 0, "deploy/build-deb.sh", r.stdout + r.stderr)
    debs = sorted(glob.glob(os.path.join(BUILD, "deb", "qumail_*.deb")))
    if not debs:
        return None
    deb = debs[-1]
    info = run(["dpkg-deb", "-I", deb]).stdout
    check(re.search(r"Depends: .*libuv1.*", info) and "libssl3" in info and "openssl" in info,
          "control: Depends from shlibdeps + openssl")
    for f in ("conffiles", "postinst", "prerm", "postrm"):
        check(f in info, "control: %s" % f)
    conff = run(["dpkg-deb", "--ctrl-tarfile", deb])
    files = run(["dpkg-deb", "-c", deb]).stdout
    for path in ("./usr/bin/qumail", "./usr/share/man/man8/qumail.8",
                 "./usr/lib/systemd/system/qumail.service", "./usr/lib/sysusers.d/qumail.conf",
                 "./usr/lib/tmpfiles.d/qumail.conf", "./etc/qumail/qumail.json",
                 "./usr/share/doc/qumail/clients/outlook.md", "./usr/share/qumail/setup.sh"):
        check(path in files, "package holds %s" % path)
    check("certs/out" not in files and ".key" not in files, "package holds no private key")
    del conff
    return deb


def rootfs():
    if not os.path.exists(os.path.join(ROOTFS, ".qumail-rootfs-ok")):
        if os.environ.get("QUMAIL_TEST_DEBOOTSTRAP") == "1" and shutil.which("debootstrap"):
            r = run(["sh", os.path.join(SRC, "deploy/make-test-rootfs.sh"), ROOTFS], timeout=1500)
            check(r.returncode == 0, "deploy/make-test-rootfs.sh", r.stderr)
        else:
            return None
    return ROOTFS


def in_root(root, *cmd, user=None, **kw):
    pre = ["chroot"] + (["--userspec=%s:%s" % (user, user)] if user else []) + [root]
    return run(pre + list(cmd), **kw)


def serve(root):
    """Inside a network namespace: the unit's commands as the qumail user."""
    cfg = "/etc/qumail/qumail.json"
    r = in_root(root, "/usr/bin/qumail", "check", "--quiet", "--files", "--config", cfg,
                user="qumail")
    check(r.returncode == 0 and r.stdout == "" and r.stderr == "",
          "ExecStartPre as qumail: check --quiet --files passes silently", r.stdout + r.stderr)
    sock_path = os.path.join(root, "run/qumail-test-notify")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(sock_path)
    os.chmod(sock_path, 0o666)
    ns.settimeout(60)
    p = subprocess.Popen(["chroot", "--userspec=qumail:qumail", root, "/usr/bin/env",
                          "NOTIFY_SOCKET=/run/qumail-test-notify", "/usr/bin/qumail", "proxy",
                          "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        msg = ns.recv(4096)
    except socket.timeout:
        msg = b""
    check(msg == b"READY=1", "ExecStart: READY=1 on NOTIFY_SOCKET (Type=notify)")
    # a mail client: the banner comes after the upstream attempt; nothing
    # listens on 127.0.0.1:587 in this namespace, so 421
    try:
        with socket.create_connection(("127.0.0.1", 2587), timeout=30) as c:
            c.settimeout(30)
            banner = c.recv(512)
    except OSError as e:
        banner = str(e).encode()
    check(banner.startswith(b"421 ") or banner.startswith(b"220 "),
          "SMTP listener 127.0.0.1:2587 answers (%r)" % banner[:60])
    r = in_root(root, "/usr/bin/qumail", "kme-client", "status", "--kme",
                "https://127.0.0.1:8481", "--slave-sae", "sae-b", "--cert",
                "/etc/qumail/tls/sae-a.pem", "--key", "/etc/qumail/tls/sae-a.key", "--ca",
                "/etc/qumail/tls/ca.pem")
    check(r.returncode == 0 and '"slave_SAE_ID": "sae-b"' in r.stdout,
          "embedded KME answers with the installed certificates", r.stdout + r.stderr)
    try:
        with socket.create_connection(("127.0.0.1", 9587), timeout=10) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(10)
            head = c.recv(256)
    except OSError as e:
        head = str(e).encode()
    check(head.startswith(b"HTTP/1.1 200"), "admin listener 127.0.0.1:9587: /healthz 200 (%r)"
          % head[:40])
    r = in_root(root, "sh", "-c", "stat -c '%n %a %U' /var/lib/qumail/*")
    lines = r.stdout.split("\n")
    check(any("kme-sim.sqlite" in l for l in lines) and
          all(l.endswith(" 600 qumail") for l in lines if l),
          "state files in /var/lib/qumail: 0600, owned by qumail", r.stdout + r.stderr)
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    check(p.returncode == 0, "SIGTERM: exit 0", err)
    ns.close()
    os.unlink(sock_path)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return 0
    if os.environ.get("QUMAIL_PKG_INNER"):
        serve(os.environ["QUMAIL_PKG_INNER"])
        print(checks.counts())
        return 1 if checks.failures else 0
    deb = build_deb()
    base = rootfs()
    if deb is None:
        print("%d passed, %d failed" % (len(checks.passes), len(checks.failures) or 1))
        return 1
    if base is None:
        print("SKIPPED: the install part: no Debian root at %s "
              "(sh deploy/make-test-rootfs.sh, or QUMAIL_TEST_DEBOOTSTRAP=1)" % ROOTFS)
        print(checks.counts())
        return 1 if checks.failures else 0
    work = tempfile.mkdtemp(prefix="qumail-pkg-", dir="/var/tmp")
    root = os.path.join(work, "root")
    try:
        r = run(["cp", "-a", base, root])
        check(r.returncode == 0, "copy of the Debian 12 root", r.stderr)
        shutil.copy(deb, os.path.join(root, "tmp/qumail.deb"))
        r = in_root(root, "dpkg", "-i", "/tmp/qumail.deb")
        check(r.returncode == 0, "dpkg -i qumail.deb", r.stdout + r.stderr)
        check("Created symlink" in r.stdout + r.stderr or os.path.islink(os.path.join(
            root, "etc/systemd/system/multi-user.target.wants/qumail.service")),
            "postinst enabled qumail.service")
        check(os.path.islink(os.path.join(root, "etc/systemd/system/multi-user.target.wants/qumail.service")),
              "multi-user.target.wants/qumail.service")
        r = in_root(root, "id", "qumail")
        check(r.returncode == 0, "user qumail exists (sysusers.d)", r.stderr)
        r = in_root(root, "stat", "-c", "%a %U %G", "/var/lib/qumail")
        check(r.stdout.strip() == "700 qumail qumail", "/var/lib/qumail 0700 qumail:qumail (%s)" % r.stdout.strip())
        r = in_root(root, "stat", "-c", "%n %a %U %G", "/etc/qumail/tls", "/etc/qumail/tls/ca.key",
                    "/etc/qumail/tls/kme-a.key", "/etc/qumail/tls/ca.pem")
        want = ["/etc/qumail/tls 750 root qumail", "/etc/qumail/tls/ca.key 600 root root",
                "/etc/qumail/tls/kme-a.key 640 root qumail", "/etc/qumail/tls/ca.pem 644 root root"]
        check(r.stdout.split("\n")[:4] == want, "certificate permissions", r.stdout)
        r = in_root(root, "dpkg-query", "--control-show", "qumail", "conffiles")
        check("/etc/qumail/qumail.json" in r.stdout, "conffiles registered")
        env = dict(os.environ, MANPATH=os.path.join(root, "usr/share/man"))
        r = run(["systemd-analyze", "verify", "--root=" + root, "qumail.service"], env=env)
        check(r.returncode == 0 and r.stderr.strip() == "", "systemd-analyze verify (installed unit)",
              r.stderr)
        r = run(["systemd-analyze", "security", "--offline=yes", "--root=" + root,
                 "/usr/lib/systemd/system/qumail.service"])
        m = re.search(r"Overall exposure level for qumail.service: ([0-9.]+)", r.stdout)
        check(m is not None and float(m.group(1)) <= 2.0,
              "systemd-analyze security <= 2.0 (%s)" % (m.group(1) if m else "?"), r.stdout)
        # the service's commands, in a network namespace of its own
        r = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1"',
                            sys.executable, os.path.abspath(__file__)],
                           env=dict(os.environ, QUMAIL_PKG_INNER=root), capture_output=True,
                           text=True, timeout=300)
        print(r.stdout, end="")
        inner = re.search(r"(\d+) passed, (\d+) failed", r.stdout)
        check(r.returncode == 0 and inner is not None, "the service's commands in the root",
              r.stderr)
        if inner:
            checks.passes.extend(["inner"] * int(inner.group(1)))
        r = in_root(root, "dpkg", "--purge", "qumail")
        check(r.returncode == 0 and not os.path.exists(os.path.join(root, "var/lib/qumail"))
              and not os.path.exists(os.path.join(root, "usr/bin/qumail")),
              "dpkg --purge removes the program and /var/lib/qumail", r.stdout + r.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(checks.counts())
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
