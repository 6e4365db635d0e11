"""End-to-end tests of faas-agent on its own: a real user HTTP server (Python stdlib)
behind the agent, driven with curl over h2c prior knowledge, in standalone mode and
through the real SOCK_SEQPACKET control protocol."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import faaspb  # noqa: E402

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
AGENT = os.path.join(BUILD, "faas-agent")
PY = "/usr/bin/python3"

USER_SERVER = r'''
import hashlib, json, os, sys, time, http.server
open("pid", "w").write(str(os.getpid()))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 1.0  # closes idle keep-alive connections, like many real servers
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "123")
        self.end_headers()
    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-user", "yes")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/die"):
            os._exit(3)
        if self.path.startswith("/halfdie"):
            self.send_response(200)
            self.send_header("content-length", "1000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            time.sleep(0.05)
            os._exit(4)
        if self.path.startswith("/sleep"):
            time.sleep(float(self.path.split("=")[1].split("&")[0]))
        if self.path.startswith("/nocontent"):
            self.send_response(204)
            self.end_headers()
            return
        if self.path.startswith("/eof"):
            self.send_response(200)
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"until-close" * 1000)
            self.close_connection = True
            return
        if self.path.startswith("/chunked"):
            self.send_response(201)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(50):
                part = ("part%d;" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/big"):
            n = int(self.path.split("=")[1])
            self.send_response(200)
            self.send_header("content-length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[:n])
                n -= len(chunk)
            return
        print("GET", self.path, flush=True)
        print("to stderr", self.path, file=sys.stderr, flush=True)
        self.reply(200, json.dumps({"method": "GET", "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "env_port": os.environ.get("PORT"),
                                    "cwd": os.getcwd()}).encode())
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        data = self.rfile.read(n)
        self.reply(200, json.dumps({"method": "POST", "path": self.path, "len": len(data),
                                    "sha": hashlib.sha256(data).hexdigest()}).encode())
    def log_message(self, *a):
        pass
port = int(os.environ["PORT"])
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def wait_until(pred, timeout, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def curl(url, *args, timeout=10):
    """Runs curl over h2c prior knowledge; returns (exit code, status, headers, body)."""
    cmd = ["curl", "-s", "-S", "--http2-prior-knowledge", "-D", "-", "--max-time", str(timeout)] + list(args) + [url]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 5)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return p.returncode, status, headers, body


@pytest.fixture
def appdir():
    with tempfile.TemporaryDirectory(prefix="agent-e2e-") as d:
        with open(os.path.join(d, "server.py"), "w") as f:
            f.write(USER_SERVER)
        yield d


class Agent:
    """faas-agent --standalone with stdout (READY/FAILED) and stderr captured."""

    def __init__(self, appdir, cmd=None, extra=()):
        self.appdir = appdir
        self.err = open(os.path.join(appdir, "agent.stderr"), "wb")
        argv = [AGENT, "--standalone", "--cmd", cmd or f"{PY} server.py", "--dir", appdir] + list(extra)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err)
        self.port = None

    def first_line(self, timeout):
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""

        def line():
            nonlocal buf
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
            return buf.decode() if b"\n" in buf else None
        return wait_until(line, timeout, what="agent READY/FAILED").split("\n")[0]

    def ready(self, timeout=10):
        line = self.first_line(timeout)
        assert line.startswith("READY port="), line + self.stderr()
        self.port = int(line.split("=")[1])
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def user_pid(self):
        return int(wait_until(lambda: open(os.path.join(self.appdir, "pid")).read().strip(), 5, what="pid file"))

    def stderr(self):
        with open(os.path.join(self.appdir, "agent.stderr")) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.err.close()
        self.proc.stdout.close()


@pytest.fixture
def agent(appdir):
    a = Agent(appdir).ready()
    yield a
    # a clean exit on SIGTERM (and, in sanitizer builds, no leak report)
    a.proc.terminate()
    rc = a.proc.wait(10)
    a.close()
    assert rc == 0, a.stderr()


def test_help():
    p = subprocess.run([AGENT, "--help"], capture_output=True, text=True, timeout=5)
    assert p.returncode == 0 and "--standalone" in p.stdout
    p = subprocess.run([AGENT, "--bogus"], capture_output=True, text=True, timeout=5)
    assert p.returncode == 2


def test_get_and_post_reach_user_server(agent):
    rc, status, headers, body = curl(agent.url("/some/path?q=1&r=a%20b"), "-H", "faas-request-id: req-42")
    assert rc == 0 and status == 200, body
    got = json.loads(body)
    assert got["path"] == "/some/path?q=1&r=a%20b"
    assert got["headers"]["x-request-id"] == "req-42"
    assert got["headers"]["faas-request-id"] == "req-42"
    assert got["env_port"] and got["cwd"] == os.path.realpath(agent.appdir)
    assert headers["x-user"] == "yes"
    payload = os.urandom(300 * 1024)
    path = os.path.join(agent.appdir, "payload")
    with open(path, "wb") as f:
        f.write(payload)
    rc, status, _, body = curl(agent.url("/upload?x=y"), "--data-binary", "@" + path)
    got = json.loads(body)
    assert status == 200 and got["method"] == "POST" and got["path"] == "/upload?x=y"
    import hashlib
    assert got["len"] == len(payload) and got["sha"] == hashlib.sha256(payload).hexdigest()


def test_http1_refused_and_large_streamed_response(agent):
    # the dispatcher speaks h2c only: an HTTP/1.x client gets one 505 and the connection ends
    p = subprocess.run(["curl", "-s", "-D", "-", "-w", "%{http_version}", agent.url("/big?n=5000000")],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p
    assert p.stdout.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), p.stdout
    assert b"\r\nconnection: close\r\n" in p.stdout, p.stdout
    body = b"faas-agent speaks HTTP/2 (h2c) with prior knowledge only, not HTTP/1.x\n"
    assert p.stdout.endswith(b"\r\n\r\n" + body + b"1.1"), p.stdout
    rc, status, _, body = curl(agent.url("/big?n=5000000"))
    assert rc == 0 and status == 200 and len(body) == 5000000


def test_chunked_response_is_streamed(agent):
    rc, status, headers, body = curl(agent.url("/chunked"))
    assert rc == 0 and status == 201
    assert body == "".join("part%d;" % i for i in range(50)).encode()


def test_head_204_and_close_delimited(agent):
    p = subprocess.run(["curl", "-s", "-I", "--http2-prior-knowledge", agent.url("/h")],
                       capture_output=True, text=True, timeout=10)
    assert p.stdout.startswith("HTTP/2 200") and "content-length: 123" in p.stdout, p.stdout
    rc, status, _, body = curl(agent.url("/nocontent"))
    assert rc == 0 and status == 204 and body == b""
    for _ in range(3):
        rc, status, _, body = curl(agent.url("/eof"))
        assert rc == 0 and status == 200 and body == b"until-close" * 1000


def test_server_closing_idle_connections_is_transparent(agent):
    for _ in range(3):
        rc, status, _, _ = curl(agent.url("/a"))
        assert status == 200
        time.sleep(1.3)  # the user server drops its idle keep-alive connection meanwhile


def test_concurrent_requests_use_several_upstream_connections(agent):
    p = subprocess.run(["h2load", "-c2", "-m8", "-n400", agent.url("/load")], capture_output=True, text=True,
                       timeout=60)
    assert "400 succeeded, 0 failed, 0 errored" in p.stdout and "status codes: 400 2xx" in p.stdout, p.stdout


def test_agent_health_and_many_requests_on_one_connection(agent):
    rc, status, _, body = curl(agent.url("/_faas/health"))
    assert status == 200
    # nghttp multiplexes all these on one h2c connection
    urls = [agent.url(f"/m{i}") for i in range(20)]
    p = subprocess.run(["nghttp", "-n", "-s"] + urls, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stdout + p.stderr
    import re
    assert len(re.findall(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+200\s", p.stdout, re.M)) == 20, p.stdout


def test_user_dies_before_response_is_502(agent):
    rc, status, headers, body = curl(agent.url("/die"))
    assert status == 502, (rc, body)
    assert headers["faas-error"] == "upstream-reset"
    # dead server: the next request cannot connect
    rc, status, headers, _ = curl(agent.url("/after"))
    assert status == 502 and headers["faas-error"] == "upstream-connect"


def test_user_dies_mid_response_resets_stream(agent):
    p = subprocess.run(["nghttp", "-v", agent.url("/halfdie")], capture_output=True, text=True, timeout=10)
    assert "RST_STREAM" in p.stdout, p.stdout
    rc, status, _, _ = curl(agent.url("/halfdie2"))
    assert rc != 0 or status == 502  # incomplete response is an error for the client


def test_deadline_gives_504(agent):
    t0 = time.monotonic()
    rc, status, headers, _ = curl(agent.url("/sleep?s=3"), "-H", "faas-deadline-ms: 300")
    assert status == 504 and headers["faas-error"] == "timeout"
    assert time.monotonic() - t0 < 2.0
    rc, status, _, _ = curl(agent.url("/sleep?s=0.01"), "-H", "faas-deadline-ms: 5000")
    assert status == 200


def test_client_cancel_mid_request_leaves_agent_healthy(agent):
    for _ in range(3):
        rc, _, _, _ = curl(agent.url("/sleep?s=1"), timeout=0.3)
        assert rc == 28  # curl gave up: the stream is reset towards the agent
        p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "0.5", "--limit-rate", "1M",
                            "-o", "/dev/null",
                            agent.url("/big?n=50000000")],
                           timeout=10)
        assert p.returncode == 28  # gave up mid-body
    rc, status, _, _ = curl(agent.url("/after-cancel"))
    assert rc == 0 and status == 200


def test_never_listening_command_fails_within_cold_start_timeout(appdir):
    a = Agent(appdir, cmd="sh -c 'echo $$ > pid; exec sleep 60'", extra=["--cold-start-timeout-ms", "400"])
    try:
        t0 = time.monotonic()
        line = a.first_line(5)
        assert line.startswith("FAILED") and "cold start" in line, line
        assert time.monotonic() - t0 < 2.0
        assert a.proc.wait(5) == 1
        upid = a.user_pid()
        wait_until(lambda: not pid_alive(upid), 5, what="user command killed")
    finally:
        a.close()


def test_exec_failure_and_early_exit_are_reported(appdir):
    a = Agent(appdir, cmd="/nonexistent/binary")
    try:
        line = a.first_line(5)
        assert line.startswith("FAILED") and "exec" in line, line
    finally:
        a.close()
    a = Agent(appdir, cmd=f"{PY} -c 'import sys; sys.exit(7)'")
    try:
        line = a.first_line(5)
        assert line.startswith("FAILED") and "status 7" in line, line
    finally:
        a.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_agent_kills_user_server(appdir, sig):
    a = Agent(appdir).ready()
    try:
        upid = a.user_pid()
        assert pid_alive(upid)
        a.proc.send_signal(sig)
        a.proc.wait(5)
        wait_until(lambda: not pid_alive(upid), 5, what="user server gone")
    finally:
        a.close()


# ---- the real control protocol ------------------------------------------------------------


class Controlled:
    def __init__(self, extra_env=None):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"FAAS_AGENT_CONTROL_FD": str(theirs.fileno()), "PATH": "/usr/bin:/bin", **(extra_env or {})}
        self.proc = subprocess.Popen([AGENT], env=env, pass_fds=[theirs.fileno()], stderr=subprocess.PIPE)
        theirs.close()
        self.sock.settimeout(10)
        self.first_requests = 0

    def event(self, timeout=10):
        """The next event but FIRST_REQUEST, which is counted (it may come between any two)."""
        self.sock.settimeout(timeout)
        while True:
            ev = faaspb.decode_event(self.sock.recv(65536))
            if ev["type"] != faaspb.EV_FIRST_REQUEST:
                return ev
            self.first_requests += 1

    def close(self):
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def test_control_socket_protocol(appdir):
    c = Controlled()
    logpath = os.path.join(appdir, "fn.log")
    try:
        hello = c.event()
        assert hello["type"] == faaspb.EV_HELLO and hello["port"] > 0
        url = f"http://127.0.0.1:{hello['port']}"
        rc, status, headers, _ = curl(url + "/early")
        assert status == 503 and headers["faas-error"] == "not-ready"
        spec = faaspb.function_spec("echo", [PY, "server.py"], env={"GREETING": "hi"}, health_path="/healthz",
                                    cold_start_timeout_ms=10000)
        logfd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        socket.send_fds(c.sock, [faaspb.specialize(spec, "inst-7", os.path.realpath(appdir))], [logfd])
        os.close(logfd)
        ready = c.event()
        assert ready["type"] == faaspb.EV_READY, ready
        assert ready["exec_us"] > 0 and ready["ready_us"] > 0
        rc, status, _, body = curl(url + "/through?a=1", "-H", "faas-request-id: r1")
        assert status == 200 and json.loads(body)["path"] == "/through?a=1"

        def logged():
            with open(logpath) as f:
                text = f.read()
            return text if "msg=\"GET /through?a=1\"" in text and "stream=stderr" in text else None
        text = wait_until(logged, 5, what="user log lines")
        line = [x for x in text.splitlines() if "GET /through" in x][0]
        assert line.startswith("ts=") and " fn=echo instance=inst-7 stream=stdout " in line
        # the user server dies: USER_EXIT at once
        upid = int(open(os.path.join(appdir, "pid")).read())
        os.kill(upid, signal.SIGKILL)
        ev = c.event()
        assert ev["type"] == faaspb.EV_USER_EXIT and os.WIFSIGNALED(ev["exit_status"])
        assert c.first_requests == 1, "FIRST_REQUEST once, for the first request only"
        c.sock.send(faaspb.stop())
        assert c.proc.wait(5) == 0
    finally:
        c.close()


def test_control_failed_and_eof(appdir):
    c = Controlled()
    try:
        assert c.event()["type"] == faaspb.EV_HELLO
        c.sock.send(b"\xff\xff\xff")
        ev = c.event()
        assert ev["type"] == faaspb.EV_FAILED and "malformed" in ev["message"], ev
        bad = faaspb.specialize(faaspb.function_spec("x", ["true"]), "i", "relative/dir")
        c.sock.send(bad)
        ev = c.event()
        assert ev["type"] == faaspb.EV_FAILED and "code_dir" in ev["message"], ev
        spec = faaspb.function_spec("nolisten", ["sleep", "30"], health_kind=faaspb.HEALTH_TCP,
                                    cold_start_timeout_ms=300)
        c.sock.send(faaspb.specialize(spec, "i", os.path.realpath(appdir)))
        ev = c.event()
        assert ev["type"] == faaspb.EV_FAILED and "cold start" in ev["message"], ev
        # the worker manager going away ends the agent
        c.sock.close()
        assert c.proc.wait(5) == 0
    finally:
        c.close()


def test_control_user_exit_before_ready(appdir):
    c = Controlled()
    try:
        c.event()
        spec = faaspb.function_spec("crash", [PY, "-c", "import sys; print('boom', flush=True); "
                                             "print('bad config', file=sys.stderr); sys.exit(5)"])
        c.sock.send(faaspb.specialize(spec, "i", os.path.realpath(appdir)))
        # FAILED first, saying why (status and last stderr line), so the worker manager
        # reports that rather than a bare exit status; then USER_EXIT
        ev = c.event()
        assert ev["type"] == faaspb.EV_FAILED, ev
        assert ev["message"] == "user server exited with status 5 before it was ready: bad config", ev
        ev = c.event()
        assert ev["type"] == faaspb.EV_USER_EXIT and os.WEXITSTATUS(ev["exit_status"]) == 5, ev
        c.sock.send(faaspb.stop())
        assert c.proc.wait(5) == 0
        # no log fd was passed: the user's output and the platform's line went to the agent's stderr
        err = c.proc.stderr.read().decode()
        assert 'fn=crash instance=i stream=stdout msg="boom"' in err, err
        assert 'fn=crash instance=i stream=stderr msg="bad config"' in err, err
        assert ('fn=crash instance=i stream=platform msg="user server exited with status 5 before it was ready '
                '(its stderr is above)"') in err, err
    finally:
        c.close()


def test_control_overload_reported_at_concurrency_limit(appdir):
    c = Controlled()
    try:
        port = c.event()["port"]
        spec = faaspb.function_spec("busy", [PY, "server.py"], concurrency=2)
        c.sock.send(faaspb.specialize(spec, "i", os.path.realpath(appdir)))
        assert c.event()["type"] == faaspb.EV_READY
        rc, status, _, _ = curl(f"http://127.0.0.1:{port}/one")  # one in flight: below the limit
        assert status == 200
        with pytest.raises(socket.timeout):
            c.event(0.3)  # FIRST_REQUEST, which event() skips, and nothing else
        assert c.first_requests == 1
        urls = [f"http://127.0.0.1:{port}/sleep?s=0.3&i={i}" for i in range(3)]
        p = subprocess.Popen(["nghttp", "-n", "-s"] + urls, stdout=subprocess.PIPE, text=True)
        ev = c.event(5)
        assert ev["type"] == faaspb.EV_OVERLOAD and "concurrency=2" in ev["message"], ev
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 0 and out.count(" 200 ") == 3, out
    finally:
        c.close()


def test_control_stop_kills_user_group(appdir):
    c = Controlled()
    try:
        c.event()
        # the user server forks a grandchild in its group: STOP must take both
        with open(os.path.join(appdir, "fam.py"), "w") as f:
            f.write("import os, subprocess, sys\n"
                    "kid = subprocess.Popen(['sleep', '60'])\n"
                    "open('kid', 'w').write(str(kid.pid))\n"
                    "os.execv(sys.executable, [sys.executable, 'server.py'])\n")
        spec = faaspb.function_spec("fam", [PY, "fam.py"], health_kind=faaspb.HEALTH_TCP)
        c.sock.send(faaspb.specialize(spec, "i", os.path.realpath(appdir), user_port=0))
        assert c.event()["type"] == faaspb.EV_READY
        kid = int(open(os.path.join(appdir, "kid")).read())
        upid = int(open(os.path.join(appdir, "pid")).read())
        assert pid_alive(kid) and pid_alive(upid)
        c.sock.send(faaspb.stop())
        assert c.proc.wait(5) == 0
        wait_until(lambda: not pid_alive(kid) and not pid_alive(upid), 5, what="user group gone")
    finally:
        c.close()
