"""faas-gateway with an empty discovery (no worker, no function): routes, errors,
metrics over HTTP/1.1, h2c prior knowledge and h2c Upgrade; flags; signals; and a
gateway whose discovery is not reachable: not ready, unknown names 503 + Retry-After."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from platform_util import Daemon, token_env

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
GATEWAY = os.path.join(BUILD, "faas-gateway")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Discovery:
    """A real faas-discovery with nothing deployed: the gateway gets its (empty) snapshot."""

    def __init__(self, tmpdir):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.d = Daemon("discovery", [os.path.join(BUILD, "faas-discovery"), "--listen", self.addr,
                                      "--metrics-listen", f"127.0.0.1:{free_port()}",
                                      "--state-dir", os.path.join(tmpdir, "discovery")], tmpdir, self.port,
                        env=token_env()).start()

    def stop(self):
        self.d.stop()


def http_status(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return int(buf.split(b" ", 2)[1]), buf


class Gateway:
    def __init__(self, tmpdir, discovery=None, extra=(), ready=True):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(tmpdir, f"gateway-{self.port}.log")
        self.log = open(self.log_path, "wb")
        argv = [GATEWAY, "--listen", self.addr, "--discovery", discovery or f"127.0.0.1:{free_port()}"] + list(extra)
        # the token it sends to the control plane (the fake one in test_gw_proxy checks it)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=token_env())
        wait_until(self._up, 10, what="gateway listening")
        if ready:  # its first discovery snapshot is in: it routes (and says 404) from now on
            wait_until(lambda: http_status(self.port, "/healthz")[0] == 200, 10, what="gateway ready")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError("gateway exited: " + self.logs())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def url(self, path):
        return f"http://{self.addr}{path}"

    def logs(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        logs = self.logs()
        assert "AddressSanitizer" not in logs and "runtime error:" not in logs, logs[-4000:]
        return self.proc.returncode


def curl(url, *args, mode="http1", timeout=10):
    """Returns (exit code, status, headers dict, body bytes) of the final response."""
    proto = {"http1": ["--http1.1"], "h2": ["--http2-prior-knowledge"], "upgrade": ["--http2"]}[mode]
    cmd = ["curl", "-s", "-S", "-D", "-", "-o", "/dev/stdout", "--max-time", str(timeout)] + proto + list(args) + [url]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 5)
    out = p.stdout
    # skip interim responses (101 Switching Protocols, 100 Continue)
    while out.startswith(b"HTTP/") and out.split(b" ", 2)[1].startswith(b"1"):
        out = out.partition(b"\r\n\r\n")[2]
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return p.returncode, status, headers, body


def raw(port, data, timeout=5):
    """Sends raw bytes, returns everything the server answers before closing or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if b"\r\n\r\n" in buf and len(buf) > 12:
                    head = buf.partition(b"\r\n\r\n")[0].lower()
                    if b"content-length:" in head:
                        n = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                        if len(buf.partition(b"\r\n\r\n")[2]) >= n:
                            break
        except socket.timeout:
            pass
        return buf

MODES = ["http1", "h2", "upgrade"]


@pytest.fixture(scope="module")
def disc():
    with tempfile.TemporaryDirectory(prefix="gw-e2e-disc-") as d:
        dd = Discovery(d)
        yield dd
        dd.stop()


@pytest.fixture(scope="module")
def gw(disc):
    with tempfile.TemporaryDirectory(prefix="gw-e2e-") as d:
        g = Gateway(d, discovery=disc.addr)
        yield g
        g.stop()


def test_no_discovery_not_ready_and_503_not_404():
    """A gateway that never got a discovery snapshot cannot know which functions exist:
    /healthz says 503 (not ready), /livez 200, a call is held --sync-hold-ms then
    answered 503 + Retry-After (never 404), on every protocol."""
    with tempfile.TemporaryDirectory(prefix="gw-e2e-") as d:
        g = Gateway(d, extra=["--sync-hold-ms", "300"], ready=False)
        try:
            st, buf = http_status(g.port, "/healthz")
            assert st == 503 and b"retry-after: 1" in buf.lower() and b"not ready" in buf, buf
            assert http_status(g.port, "/livez")[0] == 200
            for mode in MODES:
                t0 = time.monotonic()
                rc, status, headers, body = curl(g.url("/function/nosuch/x"), mode=mode)
                assert status == 503 and headers.get("retry-after") == "1", (mode, status, body)
                assert b"no discovery snapshot" in body, body
                assert time.monotonic() - t0 >= 0.25  # held for the hold, not answered at once
        finally:
            assert g.stop() == 0


@pytest.mark.parametrize("mode", MODES)
def test_healthz(gw, mode):
    rc, status, headers, body = curl(gw.url("/healthz"), mode=mode)
    assert rc == 0 and status == 200 and body == b"ok\n"


@pytest.mark.parametrize("mode", MODES)
def test_unknown_function_is_404_naming_it(gw, mode):
    rc, status, headers, body = curl(gw.url("/function/nosuch/a/b?x=1"), mode=mode)
    assert rc == 0 and status == 404
    assert b"nosuch" in body and b"127.0.0.1" not in body
    rc, status, _, body = curl(gw.url("/function/nosuch"), mode=mode)
    assert status == 404


@pytest.mark.parametrize("mode", MODES)
def test_other_paths_404_and_bad_names_400(gw, mode):
    assert curl(gw.url("/nothing-here"), mode=mode)[1] == 404
    assert curl(gw.url("/function/Bad_Name/x"), mode=mode)[1] == 400
    assert curl(gw.url("/function/"), mode=mode)[1] == 400


def other_requests(gw):
    text = curl(gw.url("/metrics"))[3].decode()
    return int(re.search(r"^faas_gateway_other_requests_total (\d+)$", text, re.M).group(1))


def test_metrics_text_and_made_up_names_make_no_series(gw):
    before = other_requests(gw)  # this scrape itself is counted too
    for i in range(50):
        curl(gw.url(f"/function/nosuch-{i}"), mode="h2" if i % 2 else "http1")
    rc, status, headers, body = curl(gw.url("/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in ["faas_requests_total", "faas_request_duration_seconds_bucket", "faas_cold_starts_total",
                 "faas_queue_depth", "faas_instances", "faas_gateway_other_requests_total"]:
        assert f"# TYPE {name.replace('_bucket', '')}" in text, name
    # a name nobody deployed is a 404 counted with the unrouted requests: per-name
    # series would let any client grow the gateway's memory and /metrics
    assert "nosuch" not in text
    assert other_requests(gw) == before + 1 + 50 + 1


def test_malformed_http1_is_400(gw):
    out = raw(gw.port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:100]
    out = raw(gw.port, b"GET /function/a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:100]


def test_body_over_max_is_413(disc):
    with tempfile.TemporaryDirectory(prefix="gw-e2e-") as d:
        g = Gateway(d, discovery=disc.addr, extra=["--max-body", "1000"])
        try:
            # far over: h2o answers from content-length alone, before any body is read
            out = raw(g.port, b"POST /function/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 413"), out[:100]
            body = os.path.join(d, "body")
            with open(body, "wb") as f:
                f.write(b"z" * 5000)
            for mode in MODES:
                rc, status, _, text = curl(g.url("/function/x"), "--data-binary", "@" + body, mode=mode)
                assert status == 413, (mode, rc, status, text)
            assert curl(g.url("/function/x"), "--data-binary", "small", mode="h2")[1] == 404
        finally:
            assert g.stop() == 0


def test_flags_and_help():
    p = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True, timeout=5)
    assert p.returncode == 0 and "--listen" in p.stdout and "--queue-max" in p.stdout
    for bad in (["--bogus", "1"], ["--max-body", "x"], ["--listen"], ["--queue-max", "0"]):
        p = subprocess.run([GATEWAY] + bad, capture_output=True, text=True, timeout=5)
        assert p.returncode == 2, bad
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_exits_zero(sig):
    with tempfile.TemporaryDirectory(prefix="gw-e2e-") as d:
        g = Gateway(d, ready=False)  # no discovery: it never will be
        time.sleep(0.3)  # let the watch thread start retrying: the signal must still reach the loop
        t0 = time.monotonic()
        g.proc.send_signal(sig)
        assert g.proc.wait(5) == 0
        assert time.monotonic() - t0 < 1.5
        g.log.close()
