"""X-Callback-Url (issue 11, docs/async.md): when a task ends, the gateway POSTs its result
to the callback URL (the function's status, headers and body, plus faas-request-id and
faas-task-status), retrying with backoff, and the task shows the outcome. Real daemons
(discovery with small retry settings, a worker manager, the gateway) and a Python
http.server receiver on a free loopback port."""
import contextlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest

import discpb as pb
from platform_util import BUILD, TEST_TOKEN, Platform, authed_channel, free_port, http_get, port_open, wait_until

needs_pods = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")
pytestmark = [pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built")]

ATTEMPTS = 3  # --callback-attempts: the last one may still deliver
BACKOFF_MS = 100


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("callbacks"),
                 disc_args=["--callback-attempts", str(ATTEMPTS), "--callback-backoff-ms", str(BACKOFF_MS)]).start()
    try:
        p.deploy_hello()
        yield p
    finally:
        p.stop()


class Receiver:
    """Records every POST; answers by_path[path] if there, else the next of statuses, else 200."""

    def __init__(self, statuses=(), by_path=None, tls=None):
        self.statuses = list(statuses)
        self.scheme = "https" if tls else "http"
        self.by_path = by_path or {}
        self.posts = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with rec.lock:
                    rec.posts.append({"path": self.path, "headers": self.headers, "body": body})
                    status = rec.by_path.get(self.path) or (rec.statuses.pop(0) if rec.statuses else 200)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def count(self):
        with self.lock:
            return len(self.posts)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(), by_path=None, tls=None):
        r = Receiver(statuses, by_path, tls)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def submit(p, callback_url, body, query=""):
    req = urllib.request.Request(f"{p.gateway_url}/async-function/hello/echo{query}", data=body, method="POST",
                                 headers={"X-Callback-Url": callback_url, "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        return json.loads(r.read())["id"]


def task_json(p, tid):
    status, body = http_get(f"{p.gateway_url}/tasks/{tid}")
    assert status == 200, body
    return json.loads(body)


def task_rpc(p, tid):
    with authed_channel(p.discovery_addr, p.token()) as ch:
        raw = ch.unary_unary("/faas.Discovery/GetTask")(pb.encode("TaskId", {"id": tid}), timeout=10)
    return pb.decode("Task", raw)


def wait_callback(p, tid, pred, what):
    return wait_until(lambda: (lambda t: t if pred(t.get("callback_status") or "") else None)(task_json(p, tid)),
                      60, interval=0.1, what=f"task {tid} callback {what}: {task_json(p, tid)}\n{p.logs()}")


def callbacks_metric(p, outcome):
    txt = http_get(f"{p.gateway_url}/metrics")[1]
    key = f'faas_gateway_task_callbacks_total{{outcome="{outcome}"}} '
    for line in txt.splitlines():
        if line.startswith(key):
            return int(line.split()[-1])
    raise KeyError(f"{key} not in gateway metrics:\n{txt}")


@needs_pods
def test_result_is_posted_byte_for_byte_with_task_headers(plat, receiver):
    r = receiver()
    delivered_before = callbacks_metric(plat, "delivered")
    body = bytes(range(256)) * 16 + b"\r\n\r\nend"
    tid = submit(plat, r.url("/hook?x=1"), body, "?status=201")
    wait_until(r.count, 60, interval=0.05, what=f"the callback POST\n{plat.logs()}")
    post = r.posts[0]
    h = post["headers"]
    assert post["path"] == "/hook?x=1"
    assert post["body"] == body
    assert h["faas-request-id"] == tid
    assert h["faas-task-status"] == "succeeded"
    assert h["faas-result-status"] == "201"
    assert h["x-echo-status"] == "201"  # the function's own header
    assert h["content-type"] == "application/octet-stream"
    assert h["content-length"] == str(len(body))
    assert "faas-task-error" not in h and "transfer-encoding" not in h
    st = wait_callback(plat, tid, lambda s: s == "delivered", "delivered")
    assert st["status"] == "succeeded" and st["callback_url"] == r.url("/hook?x=1")
    assert task_rpc(plat, tid).get("callback_attempts") == 1 == st["callback_attempts"]
    assert r.count() == 1
    assert callbacks_metric(plat, "delivered") >= delivered_before + 1


@needs_pods
def test_receiver_errors_are_retried_until_delivered(plat, receiver):
    r = receiver([503, 503])
    failed_before = callbacks_metric(plat, "failed")
    tid = submit(plat, r.url(), b"retry me")
    st = wait_callback(plat, tid, lambda s: s == "delivered", "delivered")
    assert st["status"] == "succeeded"
    assert task_rpc(plat, tid).get("callback_attempts") == 3 == st["callback_attempts"]
    assert r.count() == 3
    assert [p["headers"]["faas-request-id"] for p in r.posts] == [tid] * 3
    assert all(p["body"] == b"retry me" for p in r.posts)
    assert callbacks_metric(plat, "failed") >= failed_before + 2


@needs_pods
def test_unreachable_receiver_fails_after_the_last_attempt(plat):
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # nothing listens there
    tid = submit(plat, dead, b"lost")
    st = wait_callback(plat, tid, lambda s: s.startswith("failed"), "failed")
    assert st["callback_status"].startswith("failed: connect: "), st
    assert st["status"] == "succeeded"  # the task itself is fine
    assert task_rpc(plat, tid).get("callback_attempts") == ATTEMPTS == st["callback_attempts"]


# ---- the sender alone, against a scripted discovery: every outcome, no pods ----

class ScriptedDiscovery:
    """Answers the first ClaimCallbacks with dues, later ones with none; records reports.
    Every other method is unimplemented (the gateway's watch just retries)."""

    def __init__(self, dues):
        self.dues, self.claims, self.reports = dues, [], []
        self.port = free_port()
        outer = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                if details.method == "/faas.Discovery/ClaimCallbacks":
                    return grpc.unary_unary_rpc_method_handler(outer.claim)
                if details.method == "/faas.Discovery/ReportCallback":
                    return grpc.unary_unary_rpc_method_handler(outer.report)
                return None

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers([Handler()])
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    @staticmethod
    def check_token(ctx):
        """Like the real discovery: the gateway must send the platform token."""
        if ("authorization", f"Bearer {TEST_TOKEN}") not in tuple(ctx.invocation_metadata()):
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong platform token")

    def claim(self, req, ctx):
        self.check_token(ctx)
        self.claims.append(pb.decode("CallbackClaim", req))
        return pb.encode("CallbackDueList", {"due": self.dues if len(self.claims) == 1 else []})

    def report(self, req, ctx):
        self.check_token(ctx)
        self.reports.append(pb.decode("CallbackReport", req))
        return b""


@contextlib.contextmanager
def scripted_gateway(tmp_path, disc, env=None):
    """A gateway whose discovery is disc; yields its HTTP port."""
    port = free_port()
    log = open(tmp_path / "gateway.log", "wb")
    gw = subprocess.Popen([f"{BUILD}/faas-gateway", "--listen", f"127.0.0.1:{port}", "--discovery",
                           f"127.0.0.1:{disc.port}", "--grpc-listen", "off", "--thrift-listen", "off"],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                          env=dict(os.environ, FAAS_TOKEN=TEST_TOKEN, **(env or {})))
    try:
        wait_until(lambda: port_open(port), 10, what="gateway")
        yield port
    finally:
        gw.terminate()
        gw.wait(timeout=10)
        log.close()
        disc.server.stop(0)


def wait_reports(tmp_path, disc, n):
    wait_until(lambda: len(disc.reports) == n, 20, interval=0.1,
               what=f"{n} reports: {disc.reports}\n{(tmp_path / 'gateway.log').read_text()}")
    return {rep["id"]: rep for rep in disc.reports}


def test_sender_outcomes_against_a_scripted_discovery(tmp_path, receiver):
    r = receiver(by_path={"/": 503})
    silent = socket.socket()  # accepts connections (the backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead = free_port()
    ids = {k: k * 32 for k in "abcdef"}
    dues = [
        {"task": {"id": ids["a"], "status": 3, "error": "deadline\r\nx-injected: 1", "callback_attempts": 2,
                  "callback_url": f"http://127.0.0.1:{r.port}"}},
        {"task": {"id": ids["b"], "status": 2, "callback_attempts": 1, "callback_url": r.url("/ok")},
         "result": {"status": 200, "body": b"\x00ok",
                    "headers": [{"key": "connection", "value": "keep-alive"}, {"key": "x-f", "value": "1"},
                                {"key": "transfer-encoding", "value": "chunked"},
                                {"key": "faas-task-status", "value": "forged"}]}},
        {"task": {"id": ids["c"], "status": 4, "callback_attempts": 1, "callback_url": r.url("/cancelled")}},
        {"task": {"id": ids["d"], "status": 2, "callback_attempts": 1, "callback_url": f"http://127.0.0.1:{dead}/"}},
        {"task": {"id": ids["e"], "status": 2, "callback_attempts": 1,
                  "callback_url": f"http://127.0.0.1:{silent.getsockname()[1]}/"}},
        {"task": {"id": ids["f"], "status": 2, "callback_attempts": 1, "callback_url": f"https://127.0.0.1:{r.port}/"}},
    ]
    disc = ScriptedDiscovery(dues)
    with scripted_gateway(tmp_path, disc) as port:
        # the silent receiver ends it: 10 s for the whole attempt
        got = wait_reports(tmp_path, disc, len(dues))
        assert got[ids["a"]]["delivered"] == 0 and got[ids["a"]]["error"] == "HTTP 503"
        assert got[ids["b"]]["delivered"] and got[ids["b"]]["error"] == ""
        assert got[ids["c"]]["delivered"]
        assert got[ids["d"]]["error"].startswith("connect: "), got[ids["d"]]
        assert got[ids["e"]]["error"] == "timeout"
        assert got[ids["f"]]["error"].startswith("connect: "), got[ids["f"]]  # no TLS there
        claimer = disc.claims[0]["claimer"]
        assert claimer.startswith("gateway-") and all(rep["claimer"] == claimer for rep in disc.reports)
        assert disc.claims[0]["max"] == 8 and disc.claims[0]["lease_ms"] == 30000
        posts = {p["headers"]["faas-request-id"]: p for p in r.posts}
        a = posts[ids["a"]]
        assert a["path"] == "/" and a["headers"]["host"] == f"127.0.0.1:{r.port}" and a["body"] == b""
        assert a["headers"]["faas-task-status"] == "failed"
        assert a["headers"]["faas-task-error"] == "deadline  x-injected: 1"
        assert "faas-result-status" not in a["headers"] and "x-injected" not in a["headers"]
        b = posts[ids["b"]]
        assert b["path"] == "/ok" and b["body"] == b"\x00ok"
        assert b["headers"]["faas-task-status"] == "succeeded" and b["headers"]["faas-result-status"] == "200"
        assert b["headers"]["x-f"] == "1" and b["headers"]["connection"] == "close"
        assert b["headers"].get_all("faas-task-status") == ["succeeded"]
        assert "transfer-encoding" not in b["headers"]
        c = posts[ids["c"]]
        assert c["headers"]["faas-task-status"] == "cancelled" and c["headers"]["faas-task-error"] == "cancelled"
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'faas_gateway_task_callbacks_total{outcome="delivered"} 2' in metrics
        assert 'faas_gateway_task_callbacks_total{outcome="failed"} 4' in metrics
        # idle again: claims slow to about one a second
        n = len(disc.claims)
        time.sleep(2.5)
        assert len(disc.claims) - n <= 4, disc.claims
    silent.close()


def self_signed(tmp_path, name):
    """A certificate for localhost: (its PEM path, a server context serving it)."""
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return cert, ctx


def localhost_is_v4_only():
    try:
        return {a[4][0] for a in socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP)} == {"127.0.0.1"}
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")
@pytest.mark.skipif(not localhost_is_v4_only(), reason="the receiver listens on 127.0.0.1 only")
@pytest.mark.parametrize("store", ["file", "dir"])
def test_https_receiver_is_verified(tmp_path, receiver, store):
    trusted_pem, trusted = self_signed(tmp_path, "trusted")
    if store == "file":
        env = {"SSL_CERT_FILE": str(trusted_pem)}
    else:  # a hashed directory, like the system's /etc/ssl/certs, read as handshakes need it
        (tmp_path / "certs").mkdir()
        shutil.copy(trusted_pem, tmp_path / "certs")
        subprocess.run(["openssl", "rehash", str(tmp_path / "certs")], check=True, capture_output=True, timeout=60)
        env = {"SSL_CERT_DIR": str(tmp_path / "certs")}
    _, untrusted = self_signed(tmp_path, "untrusted")
    good, bad = receiver(tls=trusted), receiver(tls=untrusted)
    ids = {k: k * 32 for k in "abc"}
    dues = [
        {"task": {"id": ids["a"], "status": 2, "callback_attempts": 1, "callback_url": f"https://localhost:{good.port}/ok"},
         "result": {"status": 200, "body": b"over tls"}},
        {"task": {"id": ids["b"], "status": 2, "callback_attempts": 1, "callback_url": f"https://127.0.0.1:{good.port}/"}},
        {"task": {"id": ids["c"], "status": 2, "callback_attempts": 1, "callback_url": f"https://localhost:{bad.port}/"}},
    ]
    disc = ScriptedDiscovery(dues)
    # OpenSSL's default trust store honours SSL_CERT_FILE and SSL_CERT_DIR: the gateway
    # trusts only this certificate
    with scripted_gateway(tmp_path, disc, env=env):
        got = wait_reports(tmp_path, disc, len(dues))
    assert got[ids["a"]]["delivered"], got
    assert good.posts[0]["body"] == b"over tls" and good.posts[0]["path"] == "/ok"
    assert got[ids["b"]]["error"] == "connect: IP address mismatch", got  # the certificate names localhost
    assert got[ids["c"]]["error"].startswith("connect: ") and not got[ids["c"]]["delivered"], got[ids["c"]]
    assert good.count() == 1 and bad.count() == 0
