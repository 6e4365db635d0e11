"""The example functions run directly (no platform): examples/hello-http/hello and
examples/hello-py/server.py on a free $PORT, called with curl and http.client."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def hello_binary():
    for p in (os.path.join(ROOT, "examples/hello-http/hello"), os.path.join(BUILD, "examples/hello-http")):
        if os.access(p, os.X_OK):
            return p
    pytest.skip("hello-http is not built")


def start(argv, cwd, env=None):
    port = free_port()
    e = dict(os.environ, PORT=str(port), **(env or {}))
    proc = subprocess.Popen(argv, cwd=cwd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port(port, proc)
    except Exception:
        proc.kill()
        raise
    return proc, port


@pytest.fixture
def hello():
    proc, port = start([hello_binary()], os.path.join(ROOT, "examples/hello-http"), {"GREETING": "hi"})
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


@pytest.fixture
def hello_py():
    proc, port = start(["/usr/bin/python3", "server.py"], os.path.join(ROOT, "examples/hello-py"))
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


def curl(*args):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=15)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def test_hello_routes(hello):
    _, port = hello
    base = f"http://127.0.0.1:{port}"
    assert curl(base + "/healthz") == (200, "ok\n")
    assert curl(base + "/") == (200, "hello from hello-http\n")
    assert curl(base + "/hello") == (200, "hello from hello-http\n")
    assert curl("-d", "ping-pong", base + "/echo") == (200, "ping-pong")
    assert curl(base + "/env?name=GREETING") == (200, "hi\n")
    assert curl(base + "/nope")[0] == 404
    big = "x" * (1 << 20)
    c = http.client.HTTPConnection("127.0.0.1", hello[1], timeout=10)
    c.request("POST", "/echo", body=big)
    r = c.getresponse()
    assert r.status == 200 and r.read() == big.encode()
    c.close()
    # a chunked request body
    assert curl("-H", "Transfer-Encoding: chunked", "--data-binary", "chunky", base + "/echo") == (200, "chunky")


def test_hello_keep_alive(hello):
    _, port = hello
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    socks = set()
    for i in range(20):
        c.request("POST", "/echo", body=f"msg-{i}")
        r = c.getresponse()
        assert r.status == 200 and r.read() == f"msg-{i}".encode()
        socks.add(id(c.sock))
    assert len(socks) == 1, "the connection was reused"
    c.close()


def test_hello_is_concurrent(hello):
    _, port = hello
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        res = list(ex.map(lambda _: curl(f"http://127.0.0.1:{port}/slow?ms=500"), range(8)))
    assert all(r == (200, "slept 500 ms\n") for r in res), res
    assert time.monotonic() - t0 < 3, "8 slow requests ran in parallel"


def test_hello_crash_exits_mid_request(hello):
    proc, port = hello
    code, _ = curl(f"http://127.0.0.1:{port}/crash")
    assert code == 0  # no response at all
    assert proc.wait(timeout=5) != 0


def test_hello_whoami(hello):
    proc, port = hello
    code, body = curl(f"http://127.0.0.1:{port}/whoami")
    assert code == 200
    w = json.loads(body)
    assert w["pid"] == proc.pid and w["uid"] == os.getuid()
    for k in ("memory_limit", "cwd_writable", "tmp_writable", "pid1_comm", "host_pid_ns", "pid_ns", "cwd"):
        assert k in w
    assert w["cwd"] == os.path.join(ROOT, "examples/hello-http")
    assert w["host_pid_ns"] is True  # run directly on the host
    assert w["tmp_writable"] is True


def test_hello_stops_on_sigterm(hello):
    proc, _ = hello
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_hello_py(hello_py):
    _, port = hello_py
    base = f"http://127.0.0.1:{port}"
    assert curl(base + "/healthz") == (200, "ok\n")
    assert curl(base + "/hello") == (200, "hello from hello-py\n")
    assert curl("-d", "abc", base + "/echo") == (200, "abc")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(3):
        c.request("GET", "/healthz")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"ok\n"
        assert not r.will_close
    c.close()


def test_example_manifests_parse():
    ctl = os.path.join(BUILD, "faasctl")
    if not os.access(ctl, os.X_OK):
        pytest.skip("faasctl is not built")
    for m in ("examples/hello-http/function.yaml", "examples/hello-py/function.yaml"):
        # an unreachable discovery proves the manifest passed parsing and validation
        p = subprocess.run([ctl, "--discovery", f"127.0.0.1:{free_port()}", "deploy", "-f", os.path.join(ROOT, m)],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and "cannot reach discovery" in p.stderr, (m, p.stderr)
