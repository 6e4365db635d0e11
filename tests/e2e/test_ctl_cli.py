"""faasctl without the platform: help and usage errors, unreachable daemons, bad
manifests, deploy against a fake discovery (python grpc, raw bytes), invoke against
a fake gateway. Self-contained: FAAS_BUILD (default /work/main/build) has faasctl."""
import hashlib
import http.server
import io
import os
import socket
import subprocess
import tarfile
import threading
import time
from concurrent import futures

import pytest

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CTL = os.path.join(BUILD, "faasctl")
COMMANDS = ["deploy", "list", "get", "delete", "invoke", "instances", "logs"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctl(*args, env=None, timeout=30, input=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    e.update(env or {})
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=timeout, env=e, input=input)


# ---- help and usage --------------------------------------------------------------------


def test_help_exits_zero():
    for args in (["--help"], ["-h"], ["help"]):
        p = ctl(*args)
        assert p.returncode == 0, p.stderr
        assert "usage: faasctl" in p.stdout
        for c in COMMANDS:
            assert c in p.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help(cmd):
    p = ctl(cmd, "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: faasctl {cmd}")


@pytest.mark.parametrize("args,needle", [
    ([], "usage: faasctl"),
    (["frobnicate"], 'unknown command "frobnicate"'),
    (["get"], "expects a function name"),
    (["get", "a", "b"], "expects a function name"),
    (["list", "extra"], "takes no arguments"),
    (["list", "--bogus"], "bad option"),
    (["logs", "x", "--tail", "many"], "--tail"),
    (["invoke"], "expects a function name"),
    (["invoke", "x", "-H", "no-colon"], "Name: value"),
    (["invoke", "x", "--timeout", "soon"], "--timeout"),
    (["invoke", "Bad_Name"], "function name"),
    (["deploy", "hello", "--cmd", "./x", "--timeout", "3x"], "--timeout \"3x\": bad duration"),
    (["deploy", "hello", "--cmd", "./x", "--memory", "lots"], "--memory \"lots\": bad size"),
    (["deploy", "hello", "--cmd", "./x", "--protocol", "smtp"], "http, grpc or thrift"),
    (["deploy", "hello"], "needs a command"),
    (["deploy", "--cmd", "./x"], "needs a name"),
    (["deploy", "Hello!", "--cmd", "./x"], "function name"),
    (["deploy", "a", "b"], "unexpected argument"),
])
def test_bad_usage_exits_2_with_a_message(args, needle):
    p = ctl(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr, p.stderr


def test_missing_code_dir_is_a_runtime_error(tmp_path):
    p = ctl("deploy", "hello", "--cmd", "./x", "--dir", str(tmp_path / "nope"))
    assert p.returncode == 1
    assert "not a directory" in p.stderr


# ---- manifests -------------------------------------------------------------------------------


def test_bad_manifest_prints_the_line_number(tmp_path):
    m = tmp_path / "function.yaml"
    m.write_text("name: hello\ncommand: [./hello]\ntimeout: 30s\nprot: http\n")
    p = ctl("deploy", "-f", str(m))
    assert p.returncode == 2
    assert "line 4" in p.stderr and 'unknown key "prot"' in p.stderr, p.stderr
    m.write_text("name: hello\ncommand: [./hello]\nresources:\n  memory: 12 apples\n")
    p = ctl("deploy", "-f", str(m))
    assert p.returncode == 2 and "line 4" in p.stderr and "size" in p.stderr, p.stderr
    m.write_text("name: hello\ncommand: [./hello\n")
    p = ctl("deploy", "-f", str(m))
    assert p.returncode == 2 and "line " in p.stderr and "YAML syntax error" in p.stderr, p.stderr
    p = ctl("deploy", "-f", str(tmp_path / "missing.yaml"))
    assert p.returncode == 1 and "cannot open" in p.stderr


# ---- unreachable daemons ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["list"], ["get", "x"], ["delete", "x"], ["instances", "x"], ["logs", "x"],
                                  ["deploy", "x", "--cmd", "./x", "--dir", ROOT + "/examples/hello-http"]])
def test_unreachable_discovery_is_a_clear_error(args):
    addr = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    p = ctl(*args, env={"FAAS_DISCOVERY": addr})
    assert time.monotonic() - t0 < 15
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"faasctl: cannot reach discovery at {addr}" in p.stderr, p.stderr
    # the flag wins over the environment
    p = ctl("--discovery", addr, *args, env={"FAAS_DISCOVERY": "127.0.0.1:1"})
    assert f"cannot reach discovery at {addr}" in p.stderr, p.stderr


def test_unreachable_gateway_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    p = ctl("invoke", "hello", env={"FAAS_GATEWAY": url}, timeout=20)
    assert p.returncode == 1
    assert "Connection refused" in p.stderr and url in p.stderr, p.stderr


# ---- a fake discovery: deploy streams the tarball then deploys ------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fields(buf):
    """Decodes a protobuf message into [(field, value)] (varints and length-delimited only)."""
    out, i = [], 0
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        num, wt = key >> 3, key & 7
        val, shift = 0, 0
        while True:
            b = buf[i]; i += 1
            val |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        if wt == 2:
            val, i = buf[i:i + val], i + val
        else:
            assert wt == 0
        out.append((num, val))
    return out


def field(num, data):
    if isinstance(data, int):
        return varint(num << 3) + varint(data)
    return varint(num << 3 | 2) + varint(len(data)) + data


@pytest.fixture
def fake_discovery():
    import grpc
    state = {"chunks": [], "specs": []}

    def upload(it, ctx):
        for msg in it:
            f = fields(msg)
            state["chunks"].append(f[0][1] if f else b"")
        blob = b"".join(state["chunks"])
        return field(1, hashlib.sha256(blob).hexdigest().encode()) + field(2, len(blob))

    def deploy(req, ctx):
        state["specs"].append(req)
        return req + field(17, 3)

    def get(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such function")

    handlers = {
        "UploadCode": grpc.stream_unary_rpc_method_handler(upload),
        "Deploy": grpc.unary_unary_rpc_method_handler(deploy),
        "GetFunction": grpc.unary_unary_rpc_method_handler(get),
    }
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("faas.Discovery", handlers)])
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    state["addr"] = f"127.0.0.1:{port}"
    yield state
    srv.stop(0)


def test_deploy_uploads_the_code_in_64k_chunks(fake_discovery, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "server.sh").write_text("#!/bin/sh\necho hi\n")
    (code / "blob.bin").write_bytes(os.urandom(300 * 1024))  # incompressible: several chunks
    m = tmp_path / "function.yaml"
    m.write_text("name: demo\ncommand: ./server.sh\nenv: {A: b}\ntimeout: 5s\ncode: code\n")
    p = ctl("deploy", "-f", str(m), "--env", "C=d", "--memory", "64Mi", env={"FAAS_DISCOVERY": fake_discovery["addr"]})
    assert p.returncode == 0, p.stderr
    chunks = fake_discovery["chunks"]
    blob = b"".join(chunks)
    sha = hashlib.sha256(blob).hexdigest()
    assert len(chunks) >= 4 and all(len(c) <= 64 * 1024 for c in chunks)
    assert p.stdout.startswith(f"deployed demo version 3 (code sha256 {sha[:8]}..., ")
    assert "KiB)" in p.stdout
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as t:
        names = {n.lstrip("./") for n in t.getnames()}
    assert {"server.sh", "blob.bin"} <= names
    spec = fields(fake_discovery["specs"][0])
    got = {}
    for num, val in spec:
        got.setdefault(num, []).append(val)
    assert got[1] == [b"demo"]
    assert got[3] == [b"./server.sh"]
    assert got[16] == [sha.encode()]
    assert got[12] == [5000]  # timeout_ms from the manifest
    assert got[14] == [300000]  # idle_timeout default filled
    envs = {fields(kv)[0][1]: fields(kv)[1][1] for kv in got[4]}
    assert envs == {b"A": b"b", b"C": b"d"}
    res = dict(fields(got[8][0]))
    assert res[1] == 64 << 20


def test_not_found_is_a_clear_error(fake_discovery):
    p = ctl("get", "ghost", env={"FAAS_DISCOVERY": fake_discovery["addr"]})
    assert p.returncode == 1
    assert p.stderr.strip() == 'faasctl: function "ghost" not found'


# ---- a fake gateway: invoke -----------------------------------------------------------------


class GatewayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        GatewayHandler.seen.append((self.command, self.path, dict(self.headers), body))
        if self.path.endswith("/missing"):
            data = b"no such thing\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        data = b"got " + self.command.encode() + b" " + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_gateway():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GatewayHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    GatewayHandler.seen.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_invoke(fake_gateway, tmp_path):
    env = {"FAAS_GATEWAY": fake_gateway}
    p = ctl("invoke", "hello", env=env)
    assert p.returncode == 0 and p.stdout == "got GET ", p.stderr
    assert GatewayHandler.seen[-1][1] == "/function/hello/"
    p = ctl("invoke", "hello", "--path", "/echo?x=1", "--data", "hi there", "-H", "X-Test: 7", env=env)
    assert p.returncode == 0 and p.stdout == "got POST hi there", p.stderr
    method, path, headers, body = GatewayHandler.seen[-1]
    assert path == "/function/hello/echo?x=1" and headers["X-Test"] == "7" and body == b"hi there"
    f = tmp_path / "body.bin"
    f.write_bytes(b"\x00\x01file-data")
    p = subprocess.run([CTL, "invoke", "hello", "-X", "PUT", "-d", f"@{f}"], capture_output=True,
                       env={**os.environ, **env})
    assert p.returncode == 0 and p.stdout == b"got PUT \x00\x01file-data"
    p = ctl("invoke", "hello", "-d", "-", input="from stdin", env=env)
    assert p.stdout == "got POST from stdin"
    p = ctl("invoke", "hello", "-p", "chunked", env=env)
    assert p.returncode == 0 and p.stdout == "hello chunked world\n"
    p = ctl("invoke", "hello", "-p", "/missing", env=env)
    assert p.returncode == 1
    assert p.stdout == "no such thing\n"
    assert "HTTP 404" in p.stderr
    p = ctl("--gateway", fake_gateway + "/", "invoke", "hello", "-p", "/x", env={"FAAS_GATEWAY": "http://127.0.0.1:1"})
    assert p.returncode == 0 and GatewayHandler.seen[-1][1] == "/function/hello/x"


def test_invoke_times_out():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)  # accepts (in the backlog) but never answers
    try:
        t0 = time.monotonic()
        p = ctl("invoke", "hello", "--timeout", "700ms", env={"FAAS_GATEWAY": f"http://127.0.0.1:{lsock.getsockname()[1]}"})
        assert p.returncode == 1
        assert time.monotonic() - t0 < 5
        assert "timed out" in p.stderr, p.stderr
    finally:
        lsock.close()
