"""A server that ends with an exit code (issue 18's comparison suite). EXIT_AT=import:
one line on stderr, then sys.exit(3) before it listens. EXIT_AT=message: sys.exit with a
string (Python prints it on stderr, status 1). Otherwise it serves; GET /exit makes the
main thread leave serve_forever, print a line on stdout without flushing it (the
interpreter's exit must), and sys.exit(4); an atexit handler says it ran. ON_TERM=1: a
SIGTERM handler says so and leaves with sys.exit(0); GET /term sends the server SIGTERM
(what the platform stops it with; output after its own stop is not collected)."""
import atexit
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("EXIT_AT") == "import":
    print("exits: giving up at import", file=sys.stderr, flush=True)
    sys.exit(3)
if os.environ.get("EXIT_AT") == "message":
    sys.exit("exits: config file missing")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
        if self.path == "/exit":
            threading.Thread(target=self.server.shutdown).start()
        if self.path == "/term":
            os.kill(os.getpid(), signal.SIGTERM)

    def log_message(self, *a):
        pass


def on_term(signo, frame):
    print(f"exits: signal {signal.Signals(signo).name} in {frame.f_code.co_name}", file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    if os.environ.get("ON_TERM") == "1":
        signal.signal(signal.SIGTERM, on_term)
    atexit.register(lambda: print("exits: atexit ran", file=sys.stderr, flush=True))
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    srv.serve_forever()
    print("exits: leaving with 4", file=sys.stderr, flush=True)
    print("exits: buffered stdout")
    sys.exit(4)
