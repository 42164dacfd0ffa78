#!/usr/bin/env python3
"""deploy/container/* and the gateway guide, checked without a container
engine (none runs here):

- compose.yaml and pod.yaml parse (PyYAML) and have the expected shape;
  every qumail container runs `qumail proxy --config /etc/qumail/qumail.json`,
  and that command's configuration, assembled from exactly the files the
  container mounts (compose bind mounts; the Pod's ConfigMap as the
  documented `kubectl create configmap` makes it), passes `qumail check`;
- the Containerfile's runtime stage installs no toolchain or -dev package,
  runs as qumail, has a HEALTHCHECK, and copies only files that exist; its
  HEALTHCHECK command is run against a real proxy (in a network namespace
  of its own, as root) and against nothing;
- .containerignore keeps build trees, certs/out and private keys out of
  the build context;
- the Postfix lines of deploy/gateway/postfix-content-filter.md, of
  deploy/container/postfix/master-qumail.cf and of the e2e gateway test
  are the same."""

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-yaml
    import yaml

SRC = os.environ["QUMAIL_SRC"]
QUMAIL = os.environ["QUMAIL_BIN"]
CONT = os.path.join(SRC, "deploy", "container")
FAILS, PASSES = [], []


def check(cond, what, detail=""):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    (PASSES if cond else FAILS).append(what)
    if not cond and detail:
        print(detail[-3000:], flush=True)


def check_config(files, what):
    """files: {container path: host file}. Builds the container's /etc
    under a temporary root and runs qumail check on its qumail.json."""
    root = tempfile.mkdtemp(prefix="qumail-ctr-")
    try:
        for cpath, host in files.items():
            dest = root + cpath
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(host, dest)
        r = subprocess.run([QUMAIL, "check", "--config", root + "/etc/qumail/qumail.json"],
                           capture_output=True, text=True)
        check(r.returncode == 0 and "policy: ok" in r.stdout,
              "%s: qumail check on the mounted configuration" % what, r.stdout + r.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def compose():
    doc = yaml.safe_load(open(os.path.join(CONT, "compose.yaml")))
    svcs = doc.get("services", {})
    check(set(svcs) >= {"postfix", "gateway", "client", "sidecar"}, "compose: services")
    check(svcs["gateway"].get("network_mode") == "service:postfix",
          "compose: gateway in Postfix's network namespace (127.0.0.1:10025/10026)")
    check(svcs["sidecar"].get("network_mode") == "service:client",
          "compose: sidecar in the client's network namespace (127.0.0.1:2587)")
    for name in ("gateway", "sidecar"):
        s = svcs[name]
        check(s.get("command") == ["proxy", "--config", "/etc/qumail/qumail.json"],
              "compose %s: the proxy command" % name)
        check(s.get("read_only") is True and s.get("cap_drop") == ["ALL"],
              "compose %s: read-only, no capabilities" % name)
        files = {}
        for v in s.get("volumes", []):
            src, dst = v.split(":")[:2]
            host = os.path.normpath(os.path.join(CONT, src))
            if os.path.isfile(host):
                files[dst] = host
        check("/etc/qumail/qumail.json" in files, "compose %s: mounts qumail.json" % name)
        check_config(files, "compose " + name)
    build = svcs["postfix"]["build"]
    check(os.path.isfile(os.path.join(CONT, build["context"], build["dockerfile"])),
          "compose: the postfix build exists")


def pod():
    text = open(os.path.join(CONT, "pod.yaml")).read()
    doc = yaml.safe_load(text)
    check(doc.get("kind") == "Pod" and doc.get("apiVersion") == "v1", "pod: a v1 Pod")
    cs = {c["name"]: c for c in doc["spec"]["containers"]}
    q = cs.get("qumail", {})
    check(q.get("args") == ["proxy", "--config", "/etc/qumail/qumail.json"], "pod: the proxy command")
    sc = q.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsNonRoot"),
          "pod: qumail container locked down")
    mounts = {m["name"]: m["mountPath"] for m in q.get("volumeMounts", [])}
    vols = {v["name"]: v for v in doc["spec"]["volumes"]}
    check(vols[[n for n, p in mounts.items() if p == "/etc/qumail"][0]]["configMap"]["name"] ==
          "qumail-config", "pod: /etc/qumail is the qumail-config ConfigMap")
    check("state" in mounts and "emptyDir" in vols["state"], "pod: state on an emptyDir")
    # the documented ConfigMap, from the comment's kubectl command
    m = re.search(r"kubectl create configmap qumail-config((?:\s*\\?\n#?\s*--from-file=\S+)+)",
                  text)
    pairs = re.findall(r"--from-file=([^=\s]+)=(\S+)", m.group(1)) if m else []
    check(len(pairs) == 2, "pod: kubectl create configmap names the files")
    check_config({"/etc/qumail/" + k: os.path.join(SRC, v) for k, v in pairs}, "pod")
    webmail = cs.get("webmail", {})
    env = {e["name"]: e["value"] for e in webmail.get("env", [])}
    check(env.get("ROUNDCUBEMAIL_SMTP_SERVER") == "127.0.0.1" and
          env.get("ROUNDCUBEMAIL_SMTP_PORT") == "2587", "pod: the webmail submits to qumail")


def containerfile():
    text = open(os.path.join(CONT, "Containerfile")).read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages, cur = [], None
    for line in lines:
        if line.startswith("FROM "):
            cur = []
            stages.append(cur)
        elif cur is not None and line and not line.startswith("#"):
            cur.append(line)
    check(len(stages) == 2, "Containerfile: build and runtime stages")
    runtime = "\n".join(stages[-1])
    check(not re.search(r"build-essential|cmake|gcc|clang|-dev\b|pkg-config", runtime),
          "runtime stage: no toolchain, no -dev packages")
    check("USER qumail" in runtime, "runtime stage: USER qumail")
    hc = [l for l in stages[-1] if l.startswith("HEALTHCHECK")]
    check(len(hc) == 1, "runtime stage: HEALTHCHECK")
    for l in stages[-1]:
        if l.startswith("COPY ") and "--from" not in l:
            src = l.split()[1]
            check(os.path.exists(os.path.join(SRC, src)), "COPY %s exists" % src)
    ign = open(os.path.join(SRC, ".containerignore")).read().split()
    for pat in ("build*", "certs/out", "**/*.key", ".git", "tmp"):
        check(pat in ign, ".containerignore has %s" % pat)
    return hc[0] if hc else ""


def healthcheck(hc):
    """Run the HEALTHCHECK's command and the Pod's probe commands against a
    real proxy with its admin listener on 9587 (the images' configuration)
    inside a network namespace, and against nothing."""
    m = re.search(r'CMD (\[.*\])', hc)
    import json
    cmd = json.loads(m.group(1)) if m else []
    pod = yaml.safe_load(open(os.path.join(CONT, "pod.yaml")))
    q = {c["name"]: c for c in pod["spec"]["containers"]}["qumail"]
    live = q["livenessProbe"]["exec"]["command"]
    ready = q["readinessProbe"]["exec"]["command"]
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("bash"):
        print("skip: the HEALTHCHECK run needs root (network namespace)")
        return
    work = tempfile.mkdtemp(prefix="qumail-hc-")
    cfg = os.path.join(work, "q.json")
    with open(cfg, "w") as f:
        f.write('{"state_dir": "%s", "smtp": {"listeners": [{"name": "pod", "port": 2587}],'
                ' "upstream": {"host": "127.0.0.1", "port": 9, "tls": "none"}},'
                ' "admin": {"port": 9587}}' % work)
    script = ('ip link set lo up; "$0" -c "$1" ; echo "nothing=$?"; '
              '"$2" proxy --config "$3" 2>/dev/null & p=$!; '
              'for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9587) 2>/dev/null && break; sleep 0.1; done; '
              '"$0" -c "$1"; echo "serving=$?"; '
              '"$0" -c "$4"; echo "live=$?"; "$0" -c "$5"; echo "ready=$?"; '
              'kill $p; wait $p; echo "proxy=$?"')
    r = subprocess.run(["unshare", "-n", "bash", "-c", script, cmd[0], cmd[-1], QUMAIL, cfg,
                        live[-1], ready[-1]], capture_output=True, text=True, timeout=60)
    out = r.stdout
    check("nothing=1" in out, "HEALTHCHECK fails with nothing listening", out + r.stderr)
    check("serving=0" in out, "HEALTHCHECK passes against a serving proxy (/healthz)",
          out + r.stderr)
    check("live=0" in out, "Pod livenessProbe passes (/healthz)", out + r.stderr)
    check("ready=1" in out, "Pod readinessProbe fails while upstream is down (/readyz 503)",
          out + r.stderr)
    check("proxy=0" in out, "the proxy exits 0 on SIGTERM", out + r.stderr)
    shutil.rmtree(work, ignore_errors=True)


def postfix_lines():
    guide = open(os.path.join(SRC, "deploy/gateway/postfix-content-filter.md")).read()
    mcf = open(os.path.join(CONT, "postfix/master-qumail.cf")).read()
    test = open(os.path.join(SRC, "tests/e2e/gateway/test_content_filter.py")).read()

    def block(text, first):
        i = text.index(first)
        out = []
        for line in text[i:].splitlines():
            line = line.strip()
            if out and not line.startswith("-o "):
                break
            out.append(re.sub(r"\s+", " ", line))
        return out

    for first in ("qumail    unix", "127.0.0.1:10026 inet"):
        g = block(guide, first)
        c = block(mcf, first)
        check(g == c and len(g) > 2, "guide and compose Postfix agree on '%s'" % first, "%s\n%s" % (g, c))
    t = [re.sub(r"\s+", " ", l.strip()) for l in
         re.findall(r'^\s+"((?:qumail|  -o)[^"]*)",$', test, re.M)]
    check(t == block(guide, "qumail    unix"), "guide and e2e gateway test agree on the transport", str(t))
    check(not re.search(r"^\s*-o \S*xforward", guide + mcf, re.M | re.I),
          "no XFORWARD setting in the Postfix lines")
    check(not re.search(r"^content_filter\s*=", guide, re.M), "guide: no global content_filter")


def main():
    compose()
    pod()
    hc = containerfile()
    healthcheck(hc)
    postfix_lines()
    print("%d passed, %d failed" % (len(PASSES), len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
