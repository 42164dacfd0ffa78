"""nginx's mail proxy (Debian libnginx-mod-mail) in front of Dovecot, the
reference proxy of the IMAP benchmark, with the tiny auth_http service it
needs (nginx asks it where to send each login; this one always answers
"the Dovecot of this rig" and lets Dovecot check the password).

    with NginxMail(workdir, upstream_port=rig.ms.imap_port,
                   proxy_buffer="256k") as ng:     # or None: nginx's default (4k/8k)
        ... connect to 127.0.0.1:ng.port ...
    NginxMail(..., tls=(cert, key))   # also .ports["starttls"], .ports["implicit"]

Used by tests/bench/imap (the reference proxy) and as a stand-in proxy
that checks the rig's own proxy arms (imapstack: QUMAIL_IMAP_STANDIN=nginx).

nginx 1.22 speaks plain IMAP to its upstream (no TLS there), so the rig
compares every proxy on a plain upstream. One worker process unless told
otherwise (the machine has 2 cores; qumail proxy is one event loop too).
"""

import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from procutil import HOST, Reaper, free_ports, register, unregister, wait_port  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"

CONF = """\
load_module {module};
worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{
    worker_connections {conns};
}}
mail {{
    server_name localhost;
    auth_http 127.0.0.1:{auth_port}/auth;
    proxy_pass_error_message on;
    imap_capabilities "IMAP4rev1" "LITERAL+" "SASL-IR" "ID" "ENABLE" "IDLE";
    {buffer}
    server {{
        listen 127.0.0.1:{port};
        protocol imap;
        proxy on;
    }}
{tls_servers}}}
"""
TLS_SERVERS = """    server {{
        listen 127.0.0.1:{starttls};
        protocol imap;
        proxy on;
        starttls on;
        ssl_certificate {cert};
        ssl_certificate_key {key};
    }}
    server {{
        listen 127.0.0.1:{implicit} ssl;
        protocol imap;
        proxy on;
        ssl_certificate {cert};
        ssl_certificate_key {key};
    }}
"""


def _nofile(want):
    """nginx may not raise its limit past the hard limit it inherits."""
    import resource
    return min(want, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def available():
    return os.access(NGINX, os.X_OK) and os.path.exists(MODULE)


class _Auth(http.server.BaseHTTPRequestHandler):
    upstream = None

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Auth-Status", "OK")
        self.send_header("Auth-Server", HOST)
        self.send_header("Auth-Port", str(self.upstream))
        self.end_headers()

    def log_message(self, *args):
        pass


class NginxMail:
    def __init__(self, workdir, upstream_port, proxy_buffer=None, workers=1, conns=19000,
                 tls=None):
        self.tls = tls
        self.upstream_port = upstream_port
        self.proxy_buffer = proxy_buffer
        self.workers = workers
        self.conns = conns
        self.dir = tempfile.mkdtemp(prefix="nginx-mail-", dir=workdir)
        self.proc = None
        self.httpd = None
        self._reaper = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        self.port, auth_port, starttls, implicit = free_ports(4)
        self.ports = {"plain": self.port}
        tls_servers = ""
        if self.tls:
            self.ports.update(starttls=starttls, implicit=implicit)
            tls_servers = TLS_SERVERS.format(starttls=starttls, implicit=implicit,
                                             cert=self.tls[0], key=self.tls[1])
        handler = type("Auth", (_Auth,), {"upstream": self.upstream_port})
        # nginx opens one auth request per login: a burst of logins needs a
        # deeper listen queue than http.server's 5
        server = type("AuthServer", (http.server.ThreadingHTTPServer,),
                      {"request_queue_size": 4096})
        self.httpd = server((HOST, auth_port), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(module=MODULE, workers=self.workers, dir=self.dir,
                                conns=self.conns, nofile=_nofile(2 * self.conns + 100),
                                auth_port=auth_port, port=self.port,
                                tls_servers=tls_servers,
                                buffer="proxy_buffer %s;" % self.proxy_buffer
                                if self.proxy_buffer else ""))
        register(self)
        log = open(os.path.join(self.dir, "nginx.out"), "ab")
        try:
            self.proc = subprocess.Popen([NGINX, "-c", conf, "-p", self.dir, "-e",
                                          os.path.join(self.dir, "error.log")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        finally:
            log.close()
        self._reaper = Reaper()
        self._reaper.tell("dir " + self.dir)
        self._reaper.watch(pid=self.proc.pid, session=self.proc.pid)
        wait_port(self.port, 20, b"* OK", proc=self.proc, what="nginx mail")
        return self

    def pids(self):
        """nginx master and workers (session of the master)."""
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open("/proc/%s/stat" % p) as f:
                        st = f.read()
                    sid = int(st.rsplit(")", 1)[1].split()[3])
                except (OSError, ValueError, IndexError):
                    continue
                if sid == self.proc.pid:
                    out.append(int(p))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self._reaper:
            self._reaper.close()
            self._reaper = None
        shutil.rmtree(self.dir, ignore_errors=True)
        unregister(self)
