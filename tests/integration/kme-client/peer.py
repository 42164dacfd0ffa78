"""A misbehaving ETSI 014 peer for the KME client's tests.

Not a KME: an HTTPS server with mutual TLS that answers the way real,
non-conforming peers do (non-spec status codes 404/409/504, non-JSON
bodies, hangs, dropped connections), chosen by the SAE ID in the path:

  e404     404 with an HTML body, every endpoint
  e409     409 with a JSON message
  e504     504 with an HTML body
  e401     401 with a plain-text body
  garbage  200 with a non-JSON body
  slow     no answer for 3 s
  close    closes the connection without answering
  flaky    status: 401 (non-JSON); dec_keys: 404 twice per key_ID, then
           the key (the handover race as some peers report it)
  stale    keep-alive that is not: the second request on a connection is
           met with a close and no answer (an idle-timeout race); status:
           401, dec_keys: the keys

Run as a module (python3 peer.py CERTDIR) it prints its port and serves.
"""
import base64
import http.server
import json
import os
import ssl
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    flaky_counts = {}
    lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        self.requests_here = getattr(self, "requests_here", 0) + 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.split("?")[0].split("/")
        # /api/v1/keys/<sae>/<endpoint>
        if len(parts) != 6 or parts[1:4] != ["api", "v1", "keys"]:
            return self.reply(404, "<html>no such page</html>", "text/html")
        sae, endpoint = parts[4], parts[5]
        if sae == "e404":
            return self.reply(404, "<html><body>Not Found</body></html>", "text/html")
        if sae == "e409":
            return self.reply(409, json.dumps({"message": "key already in use"}))
        if sae == "e504":
            return self.reply(504, "<html>\n<h1>504 Gateway Time-out</h1></html>", "text/html")
        if sae == "e401":
            return self.reply(401, "Unauthorized", "text/plain")
        if sae == "garbage":
            return self.reply(200, "this is not json", "text/plain")
        if sae == "slow":
            time.sleep(3)
            return self.reply(503, json.dumps({"message": "too late"}))
        if sae == "close":
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if sae == "stale":
            if self.requests_here > 1:
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if endpoint == "status":
                return self.reply(401, "go away", "text/plain")
            ids = [k["key_ID"] for k in json.loads(body)["key_IDs"]]
            keys = [{"key_ID": i, "key": base64.b64encode(bytes(16)).decode()} for i in ids]
            return self.reply(200, json.dumps({"keys": keys}))
        if sae == "flaky":
            if endpoint == "status":
                return self.reply(401, "go away", "text/plain")
            if endpoint == "dec_keys":
                ids = [k["key_ID"] for k in json.loads(body)["key_IDs"]]
                with self.lock:
                    seen = [self.flaky_counts.get(i, 0) for i in ids]
                    for i in ids:
                        self.flaky_counts[i] = self.flaky_counts.get(i, 0) + 1
                if min(seen) < 2:
                    return self.reply(404, "Not Found", "text/plain")
                keys = [{"key_ID": i, "key": base64.b64encode(bytes(32)).decode()}
                        for i in ids]
                return self.reply(200, json.dumps({"keys": keys}))
        return self.reply(400, json.dumps({"message": "unexpected request"}))

    do_GET = handle_any
    do_POST = handle_any


def start(certdir, server_cert="kme-a"):
    """Starts the peer on 127.0.0.1 (free port) in a daemon thread."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certdir, server_cert + ".pem"),
                        os.path.join(certdir, server_cert + ".key"))
    ctx.load_verify_locations(os.path.join(certdir, "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


if __name__ == "__main__":
    s = start(sys.argv[1])
    print(s.server_address[1], flush=True)
    threading.Event().wait()
