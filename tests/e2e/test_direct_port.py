"""The pod's direct port (issue 17, docs/endpoints.md "The pod's direct port"): with the
whole platform, an HTTP function's instance publishes Instance.direct_endpoint in
discovery; a real HTTP/1.1 client (and curl over h2c prior knowledge) gets the same
answers there as through the gateway; the direct calls reach discovery as
Instance.direct_calls; a malformed request gets a 400 and the next client is served;
once the instance is released (the function deleted) the port no longer answers. With
the agent on its own (standalone), the port is refused until the user server is READY.

Needs root (pods in their own network namespaces)."""
import http.client
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import discpb as pb
from platform_util import BUILD, ROOT, Platform, curl, http_get, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-workermgr"), reason="not built"),
]

# the issue 17 fields of Instance (proto/faas.proto), which discpb's table predates
pb.SCHEMA["Instance"].setdefault("direct_endpoint", (13, "string", False))
pb.SCHEMA["Instance"].setdefault("direct_calls", (14, "uint64", False))


def instances(plat, fn):
    req = pb.encode("FunctionName", {"name": fn})
    rep = plat.rpc(plat.discovery_addr, "/faas.Discovery/ListInstances", req)
    return pb.decode("InstanceList", rep).get("instances", [])


def hostport(ep):
    host, _, port = ep.rpartition(":")
    return host, int(port)


def answers(host, port):
    """True while something accepts on host:port (refused, unreachable or silent: False)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def raw_exchange(host, port, data):
    """Sends data, reads until the server closes (bounded); the bytes read."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path, pool_size=1).start()
    try:
        yield p
    finally:
        p.stop()


def test_http_function_direct_port(plat):
    plat.deploy_hello("hello")
    assert http_get(plat.url("hello", "/hello")) == (200, "hello from hello-http\n")
    inst = wait_until(lambda: [i for i in instances(plat, "hello") if i.get("direct_endpoint")], 15,
                      what="an instance with a direct endpoint in discovery")[0]
    host, port = hostport(inst["direct_endpoint"])
    # the pod's own address, as its agent port's, and a port of its own
    assert host == hostport(inst["endpoint"])[0]
    assert port != hostport(inst["endpoint"])[1]

    # HTTP/1.1 keep-alive: GET, POST with Content-Length, POST chunked, on one connection
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/hello")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"hello from hello-http\n")
    body = os.urandom(100 * 1024)
    c.request("POST", "/echo", body=body)
    r = c.getresponse()
    assert (r.status, r.read()) == (200, body)
    c.request("POST", "/echo?status=201", body=iter([b"abc", b"defg"]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert (r.status, r.getheader("x-echo-status"), r.read()) == (201, "201", b"abcdefg")
    c.close()
    # HTTP/2 with prior knowledge: the same front the gateway's calls take
    code, text, err = curl("--http2-prior-knowledge", f"http://{host}:{port}/hello", timeout=10)
    assert (code, text) == (200, "hello from hello-http\n"), err
    calls = 4

    # a malformed request: the protocol's error, the connection closed, nobody else hurt
    out = raw_exchange(host, port, b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert b"faas-error: bad-request" in out
    smuggle = raw_exchange(host, port, b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert smuggle.startswith(b"HTTP/1.1 400 "), smuggle
    big = raw_exchange(host, port, b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 "), big[:100]
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/hello")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"hello from hello-http\n")
    c.close()
    calls += 1

    # the direct calls reach discovery (the gateways' rate counts them)
    def counted():
        got = [i for i in instances(plat, "hello") if i["id"] == inst["id"]]
        return got and got[0].get("direct_calls", 0) >= calls and got[0]
    seen = wait_until(counted, 15, what=f"direct_calls >= {calls} in discovery")
    assert seen["direct_calls"] <= calls + 2  # the two malformed requests at most

    # released: the instance goes, and its direct port with it
    plat.ctl("delete", "hello")
    wait_until(lambda: not instances(plat, "hello"), 30, what="the instance released")
    wait_until(lambda: not answers(host, port), 15, what="the direct port gone")


def test_direct_calls_count_in_flight(plat):
    """Direct calls pass the agent's in-flight count: two at once on a function with
    concurrency 2 make the pod report OVERLOAD, and the worker manager starts a second
    instance, with no call through the gateway meanwhile."""
    import threading
    plat.deploy_hello("busy", "--concurrency", "2", "--max-instances", "2")
    assert http_get(plat.url("busy", "/hello")) == (200, "hello from hello-http\n")
    inst = wait_until(lambda: [i for i in instances(plat, "busy") if i.get("direct_endpoint")], 15,
                      what="an instance with a direct endpoint")[0]
    assert len(instances(plat, "busy")) == 1
    host, port = hostport(inst["direct_endpoint"])
    codes = []

    def slow():
        c = http.client.HTTPConnection(host, port, timeout=30)
        c.request("GET", "/slow?ms=2000")
        r = c.getresponse()
        codes.append((r.status, r.read()))
        c.close()
    ts = [threading.Thread(target=slow) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(40)
    assert codes == [(200, b"slept 2000 ms\n")] * 2
    wait_until(lambda: len(instances(plat, "busy")) == 2, 30, what="a second instance after OVERLOAD")


def test_direct_endpoint_survives_a_worker_manager_restart(plat):
    """A successor worker manager adopts the pods with their direct ports and direct call
    counts (the record it inherits carries both) and publishes them again."""
    plat.deploy_hello("hello")
    assert http_get(plat.url("hello", "/hello")) == (200, "hello from hello-http\n")
    inst = wait_until(lambda: [i for i in instances(plat, "hello") if i.get("direct_endpoint")], 15,
                      what="an instance with a direct endpoint")[0]
    host, port = hostport(inst["direct_endpoint"])
    for _ in range(3):
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request("GET", "/hello")
        assert c.getresponse().status == 200
        c.close()
    wait_until(lambda: [i for i in instances(plat, "hello") if i.get("direct_calls", 0) >= 3], 15,
               what="direct_calls >= 3 in discovery")
    plat.wm.kill()
    plat.restart_wm()

    def adopted():  # asked of the successor itself: discovery may still hold the old lease
        req = pb.encode("FunctionName", {"name": "hello"})
        rep = plat.rpc(f"127.0.0.1:{plat.wm_port}", "/faas.WorkerManager/ListInstances", req)
        got = [i for i in pb.decode("InstanceList", rep).get("instances", []) if i["id"] == inst["id"]]
        return got and got[0]
    again = wait_until(adopted, 30, what="the successor listing the adopted instance")
    assert again.get("direct_endpoint") == inst["direct_endpoint"]
    assert again.get("direct_calls", 0) >= 3  # the count goes on, never back to 0
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/hello")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"hello from hello-http\n")


USER_SERVER = r'''
import os, sys, time, http.server
while not os.path.exists("go"):
    time.sleep(0.02)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = b"ready\n"
        self.send_response(200)
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def test_direct_port_refused_before_ready(tmp_path):
    d = tmp_path / "fn"
    d.mkdir()
    (d / "server.py").write_text(USER_SERVER)
    err = open(tmp_path / "agent.err", "w+")
    agent = subprocess.Popen([f"{BUILD}/faas-agent", "--standalone", "--cmd", "/usr/bin/python3 server.py",
                              "--dir", str(d), "--health-path", "/", "--cold-start-timeout-ms", "30000"],
                             stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        def direct_port():
            m = re.search(r"direct_port=(\d+)", open(tmp_path / "agent.err").read())
            return m and int(m.group(1))
        port = wait_until(direct_port, 10, what="the agent's direct port in its log")
        # bound, not listening: refused by the kernel while the user server is not ready
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        (d / "go").write_text("")
        assert agent.stdout.readline().startswith("READY port=")
        code, text, e = curl(f"http://127.0.0.1:{port}/x", timeout=10)
        assert (code, text) == (200, "ready\n"), e
    finally:
        agent.kill()
        agent.wait(10)
        err.close()


def test_thrift_function_direct_port(tmp_path):
    import sys
    sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))
    from calc import CalcError, Client
    from thrift.protocol import TBinaryProtocol
    from thrift.protocol.THeaderProtocol import THeaderProtocol
    from thrift.protocol.TMultiplexedProtocol import TMultiplexedProtocol
    from thrift.transport import TSocket, TTransport
    from thrift.transport.THeaderTransport import THeaderClientType

    def sock(host, port):
        s = TSocket.TSocket(host, port)
        s.setTimeout(20000)
        s.open()
        return s

    def header_client(host, port):
        s = sock(host, port)
        p = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=0)
        return Client(TMultiplexedProtocol(p, "Calculator")), p, s

    plat = Platform(tmp_path, pool_size=1, thrift=True, gateway_args=("--thrift-default-function", "calc")).start()
    try:
        manifest = tmp_path / "calc.yaml"
        manifest.write_text(f"name: calc\ncode: {ROOT}/examples/thrift-calc\n"
                            "command: [/usr/bin/python3, calc_server.py, theader, --multiplexed]\n"
                            "protocol: thrift\nthrift_services: [Calculator]\nthrift_transport: theader\n"
                            "health: {tcp: true}\n")
        plat.ctl("deploy", "-f", str(manifest))
        c, p, s = header_client("127.0.0.1", plat.thrift_port)
        assert c.call("add", 1, 2) == 3  # through the gateway: the instance starts
        s.close()
        inst = wait_until(lambda: [i for i in instances(plat, "calc") if i.get("direct_endpoint")], 15,
                          what="an instance with a direct endpoint")[0]
        host, port = hostport(inst["direct_endpoint"])

        # THeader straight to the pod: calls, info headers both ways, the user's exception
        c, p, s = header_client(host, port)
        p.set_header(b"x-trace", b"direct-1")
        assert c.call("add", 40, 2) == 42
        assert c.call("echo", "hi") == "hi"
        assert p.get_headers().get(b"echo-reply") == b"hi"
        p.set_header(b"x-trace", b"direct-2")
        hs = c.call("headers")
        assert hs.get("x-trace") == "direct-2"
        with pytest.raises(CalcError) as ei:
            c.call("fail", "no")
        assert ei.value.why == "no"
        s.close()
        # framed binary (re-framed for the THeader server by the agent, as via the gateway)
        s = sock(host, port)
        fc = Client(TMultiplexedProtocol(TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(s)),
                                         "Calculator"))
        assert [fc.call("add", i, 100) for i in range(3)] == [100, 101, 102]
        s.close()
        calls = 7  # add, echo, headers, fail, three framed adds

        # bytes that are no Thrift frame: the connection is closed, the next client served
        bad = raw_exchange(host, port, b"\xff\xff\xff\xff garbage")
        assert b"add" not in bad
        c, p, s = header_client(host, port)
        assert c.call("add", 5, 5) == 10
        s.close()
        calls += 1

        def counted():
            got = [i for i in instances(plat, "calc") if i["id"] == inst["id"]]
            return got and got[0].get("direct_calls", 0) >= calls
        wait_until(counted, 15, what=f"direct_calls >= {calls} in discovery")
    finally:
        plat.stop()


def test_grpc_function_direct_port(tmp_path):
    import grpc
    plat = Platform(tmp_path, pool_size=1, grpc=True).start()
    try:
        plat.ctl("deploy", "-f", os.path.join(ROOT, "examples", "grpc-echo", "function.yaml"), "--memory", "512Mi",
                 "--pids", "512")
        with grpc.insecure_channel(plat.grpc_addr) as ch:
            assert ch.unary_unary("/echo.Echo/Unary")(b"via gateway", timeout=30) == b"via gateway"
        inst = wait_until(lambda: [i for i in instances(plat, "grpc-echo") if i.get("direct_endpoint")], 15,
                          what="an instance with a direct endpoint")[0]
        # gRPC (h2c) straight to the pod: no faas-* metadata needed, the user's statuses intact
        with grpc.insecure_channel(inst["direct_endpoint"]) as ch:
            assert ch.unary_unary("/echo.Echo/Unary")(b"direct", timeout=10) == b"direct"
            got = list(ch.unary_stream("/echo.Echo/ServerStream")(b"5:10", timeout=10))
            assert len(got) == 5
            msgs = [b"a", b"bb", b"ccc"]
            assert list(ch.stream_stream("/echo.Echo/Bidi")(iter(msgs), timeout=10)) == msgs
            with pytest.raises(grpc.RpcError) as ei:
                ch.unary_unary("/echo.Echo/Unary")(b"status:NOT_FOUND:nope", timeout=10)
            assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        calls = 4

        def counted():
            got = [i for i in instances(plat, "grpc-echo") if i["id"] == inst["id"]]
            return got and got[0].get("direct_calls", 0) >= calls
        wait_until(counted, 15, what=f"direct_calls >= {calls} in discovery")
    finally:
        plat.stop()
