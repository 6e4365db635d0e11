"""A stdlib HTTP server that forks (issue 18's comparison suite). GET /fork: os.fork(),
the child reports through a pipe what it sees and leaves with os._exit(7); the parent
answers a JSON of the child's report and its exit code. GET /subprocess: runs
sys.executable on a one-line script and answers its output and exit code. GET /spawn:
a multiprocessing "spawn" pool (a fresh interpreter that re-imports this __main__ by
its file) squares a number with a function defined here."""
import json
import multiprocessing
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IMPORTED_AS = __name__


def square(x):
    return x * x, IMPORTED_AS, os.path.basename(__file__)


def fork_once():
    parent = os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            rep = {"ppid_is_parent": os.getppid() == parent, "argv": sys.argv, "file": __file__,
                   "name": __name__, "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}
            os.write(w, json.dumps(rep).encode())
        finally:
            os._exit(7)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        data += b
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return {"child": json.loads(data), "exit": os.waitstatus_to_exitcode(status)}


def run_sub():
    p = subprocess.run([sys.executable, "-c", "import sys; print(sys.argv[1:], flush=True); sys.exit(5)", "a b"],
                       capture_output=True, text=True, timeout=20)
    return {"stdout": p.stdout, "stderr": p.stderr, "exit": p.returncode}


def run_spawn():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return {"result": pool.apply(square, (12,))}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        try:
            out = {"/fork": fork_once, "/subprocess": run_sub, "/spawn": run_spawn}.get(self.path, lambda: "ok")()
        except Exception as e:  # the test compares failures too
            out = {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    srv.daemon_threads = True
    srv.serve_forever()
