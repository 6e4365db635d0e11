"""A plain Python stdlib HTTP/1.1 server: it knows nothing of the platform.

Listens on 127.0.0.1:$PORT (default 8000).
  GET  /healthz          -> ok
  GET  / or /hello       -> $GREETING
  POST /echo             -> the request body
  GET  /slow?ms=N        -> answers after N ms
"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply carries Content-Length

    def reply(self, code, body, ctype="text/plain"):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self.reply(200, "ok\n")
        if url.path in ("/", "/hello"):
            return self.reply(200, os.environ.get("GREETING", "hello from hello-py") + "\n")
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(min(max(ms, 0), 600000) / 1000)
            return self.reply(200, f"slept {ms} ms\n")
        self.reply(404, "not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if urlsplit(self.path).path == "/echo":
            return self.reply(200, body, "application/octet-stream")
        self.reply(404, "not found\n")

    def log_message(self, fmt, *args):
        sys.stderr.write("hello-py: " + (fmt % args) + "\n")


def main():
    port = int(os.environ.get("PORT") or 8000)
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    print(f"hello-py listening on 127.0.0.1:{port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
