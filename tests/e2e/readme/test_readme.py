#!/usr/bin/env python3
"""README.md followed as a new user would, verbatim.

1. `cmake --install` of the build tree into a DESTDIR: the installed layout
   (binary, man page, docs, /etc/qumail, unit, sysusers.d, tmpfiles.d) is
   there, the man page renders, the unit passes `systemd-analyze verify`
   and rates at most 2.0 in `systemd-analyze security`.
2. A clean copy of the source tree (tracked files only: no certs/out, no
   build trees), the installed bin/ first on PATH, and every command of the
   README's "Using it" block run as written, in order: daemons (a line
   ending in `&`, and the last, long-running `qumail kme`) in the
   background until ready, `kill %1` as SIGTERM to the first. Each must
   exit 0; the outputs are checked (KME status, the decrypted message equals
   the one encrypted, the policy answer, the dump is JSON).

The README uses fixed ports (2587, 8481, 8482, 8491, 8492): the test runs
in a network namespace of its own (unshare -n), so it collides with
nothing. Needs root."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import checks  # noqa: E402
from checks import check  # noqa: E402

SRC = os.environ.get("QUMAIL_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ["QUMAIL_BUILD"]


def readme_block(heading):
    """The first indented code block after `heading`, as logical lines
    (backslash continuations joined)."""
    text = open(os.path.join(SRC, "README.md")).read()
    rest = text[text.index(heading):]
    lines, started = [], False
    for line in rest.splitlines()[1:]:
        if line.startswith("    "):
            started = True
            lines.append(line[4:])
        elif started and line.strip() == "":
            break
        elif started:
            break
    out, cur = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    return out


def cache_var(name):
    for line in open(os.path.join(BUILD, "CMakeCache.txt")):
        if line.startswith(name + ":"):
            return line.split("=", 1)[1].strip()
    return None


def clean_tree(dest):
    """The tracked (and new, not ignored) files of the source tree."""
    r = subprocess.run(["git", "-C", SRC, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True)
    if r.returncode == 0:
        for rel in r.stdout.decode().split("\0"):
            if not rel or not os.path.isfile(os.path.join(SRC, rel)):
                continue
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(os.path.join(SRC, rel), os.path.join(dest, rel))
    else:  # an exported tree without git
        shutil.copytree(SRC, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("build*", "out", "tmp", ".git"))


def wait_ports(ports, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            for p in ports:
                socket.create_connection(("127.0.0.1", p), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def install(root):
    env = dict(os.environ, DESTDIR=root)
    r = subprocess.run(["cmake", "--install", BUILD], env=env, capture_output=True, text=True)
    check(r.returncode == 0, "cmake --install into DESTDIR", r.stdout + r.stderr)
    prefix = root + (cache_var("CMAKE_INSTALL_PREFIX") or "/usr/local")
    for rel in ("bin/qumail", "share/man/man8/qumail.8", "share/doc/qumail/README.md",
                "share/doc/qumail/config.md", "share/doc/qumail/policy.md",
                "share/doc/qumail/clients/thunderbird.md", "share/doc/qumail/gateway",
                "share/qumail/examples/gateway.json", "share/qumail/setup.sh",
                "share/qumail/mkcerts.sh", "lib/systemd/system/qumail.service",
                "lib/sysusers.d/qumail.conf", "lib/tmpfiles.d/qumail.conf"):
        check(os.path.exists(os.path.join(prefix, rel)), "installed: %s" % rel)
    for rel in ("etc/qumail/qumail.json", "etc/qumail/qumail.policy"):
        check(os.path.exists(os.path.join(root, rel)), "installed: /%s" % rel)
    # an administrator's file is never overwritten
    with open(os.path.join(root, "etc/qumail/qumail.policy"), "a") as f:
        f.write("# edited by the administrator\n")
    subprocess.run(["cmake", "--install", BUILD], env=env, capture_output=True)
    check("edited by the administrator" in open(os.path.join(root, "etc/qumail/qumail.policy")).read(),
          "a second install keeps an edited /etc/qumail/qumail.policy")
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings", "-l", os.path.join(prefix, "share/man/man8/qumail.8")],
                           capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
        check(r.returncode == 0 and "qumail config dump" in r.stdout and r.stderr == "",
              "man qumail renders without warnings", r.stderr)
    unit = os.path.join(prefix, "lib/systemd/system/qumail.service")
    text = open(unit).read()
    check("Type=notify" in text and "ExecStart=%s/bin/qumail proxy" % prefix[len(root):] in text,
          "unit: Type=notify, ExecStart is the installed binary")
    if shutil.which("systemd-analyze"):
        env = dict(os.environ, MANPATH=os.path.join(prefix, "share/man"))
        rel_unit = unit[len(root):]
        # verify resolves targets and binaries on this host: check the unit
        # with its paths pointing into the DESTDIR, nothing else changed
        staged = os.path.join(os.path.dirname(root), "qumail.service")
        with open(staged, "w") as f:
            f.write(text.replace(prefix[len(root):] + "/bin/", prefix + "/bin/"))
        r = subprocess.run(["systemd-analyze", "verify", staged],
                           capture_output=True, text=True, env=env)
        check(r.returncode == 0 and r.stderr.strip() == "", "systemd-analyze verify", r.stderr)
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--root=" + root,
                            rel_unit], capture_output=True, text=True)
        m = re.search(r"Overall exposure level for qumail.service: ([0-9.]+)", r.stdout)
        check(m is not None and float(m.group(1)) <= 2.0,
              "systemd-analyze security: exposure %s <= 2.0" % (m.group(1) if m else "?"),
              r.stdout + r.stderr)
    return os.path.join(prefix, "bin")


def follow_readme(tree, bindir):
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
    env.pop("QUMAIL_BIN", None)
    cmds = readme_block("## Using it")
    check(len(cmds) >= 10 and cmds[0].startswith("sh certs/mkcerts.sh"),
          "README 'Using it' block found (%d commands)" % len(cmds))
    jobs, outputs = [], {}
    for i, cmd in enumerate(cmds):
        bare = re.sub(r"\s+#.*$", "", cmd).strip()
        if bare.endswith("&"):
            p = subprocess.Popen(["sh", "-c", "exec " + bare[:-1]], cwd=tree, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ports = [2587, 8481, 8482] if "qumail proxy" in bare else []
            ok = wait_ports(ports, p)
            check(ok, "started: %s" % bare, "" if ok else p.communicate()[1])
            jobs.append((bare, p))
            continue
        m = re.match(r"kill %(\d+)$", bare)
        if m:
            what, p = jobs[int(m.group(1)) - 1]
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=60)
            check(p.returncode == 0, "kill %%%s: '%s' exits 0 on SIGTERM" % (m.group(1), what),
                  err)
            continue
        if bare.startswith("qumail kme ") or bare.startswith("qumail proxy "):
            # runs until Ctrl-C: start, wait for its ports, stop
            p = subprocess.Popen(["sh", "-c", "exec " + bare], cwd=tree, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ok = wait_ports([8491, 8492], p)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
            check(ok and p.returncode == 0, "ran until interrupted: %s" % bare, err)
            continue
        r = subprocess.run(["sh", "-c", bare], cwd=tree, env=env, capture_output=True,
                           timeout=120)
        check(r.returncode == 0, "exit 0: %s" % bare,
              (r.stdout + r.stderr).decode(errors="replace"))
        outputs[i] = r.stdout
    for bare, p in jobs:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = {i: o.decode(errors="replace") for i, o in outputs.items()}

    def out_of(prefix):
        for i, cmd in enumerate(cmds):
            if cmd.startswith(prefix) and i in outputs:
                return outputs[i]
        return b""

    st = json.loads(out_of("qumail kme-client status") or b"{}")
    check(st.get("slave_SAE_ID") == "sae-b" and st.get("source_KME_ID") == "kme-a",
          "kme-client status answers for sae-b at kme-a")
    plain = open(os.path.join(tree, "docs/examples/hello.eml"), "rb").read()
    check(out_of("qumail mime decrypt") == plain, "decrypt gives back the message byte for byte")
    enc = open(os.path.join(tree, "message.eml"), "rb").read()
    check(b"revenue up" not in enc and b"Quarterly" not in enc, "message.eml holds no plaintext")
    check(b"algorithm:" in out_of("qumail mime inspect"), "inspect names the algorithm")
    check(b"rule 'ceo@example.net'" in out_of("qumail policy query"), "policy query names the rule")
    try:
        dump = json.loads(out_of("qumail config dump"))
        check("smtp" in dump and "kme_simulator" in dump, "config dump -n is JSON with the changes")
    except ValueError:
        check(False, "config dump -n is JSON")
    del text


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespace)")
        return 0
    if os.environ.get("QUMAIL_README_NETNS") != "1":
        # again, inside a network namespace of its own with loopback up
        r = subprocess.run(["unshare", "-n", "sh", "-c",
                            'ip link set lo up && exec "$0" "$1"', sys.executable,
                            os.path.abspath(__file__)],
                           env=dict(os.environ, QUMAIL_README_NETNS="1"))
        return r.returncode
    work = tempfile.mkdtemp(prefix="qumail-readme-")
    try:
        bindir = install(os.path.join(work, "root"))
        tree = os.path.join(work, "tree")
        clean_tree(tree)
        check(not os.path.exists(os.path.join(tree, "certs/out")), "the copy has no certs/out")
        follow_readme(tree, bindir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(checks.counts())
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
