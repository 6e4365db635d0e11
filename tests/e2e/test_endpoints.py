"""The endpoints API for meshes (docs/endpoints.md): GET /endpoints/<fn> on the HTTP port
and faas.EndpointsApi Get/Watch on the gRPC port answer the gateway's address while a
function's traffic is below its endpoints.threshold_rps, its pods' direct ports above it,
and the gateway again once the rate has fallen below half the threshold."""
import http.client
import json
import queue
import struct
import threading
import time

import pytest

from platform_util import ROOT, Platform, http_get, wait_until

grpc = pytest.importorskip("grpc")

THRESHOLD = 20


def _varint(buf, i):
    shift = val = 0
    while True:
        b = buf[i]
        i += 1
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, i


def pb_fields(buf):
    """Top-level fields of a protobuf message: [(field, wire type, value)]."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((f, wt, v))
    return out


def decode_endpoints(buf):
    """faas.Endpoints as the JSON answer's dict."""
    d = {"function": "", "mode": "", "endpoints": [], "rps": 0.0, "threshold_rps": 0}
    for f, _, v in pb_fields(buf):
        if f == 1:
            d["function"] = v.decode()
        elif f == 2:
            d["mode"] = v.decode()
        elif f == 3:
            e = {"address": "", "kind": "gateway", "protocol": ""}
            for g, _, w in pb_fields(v):
                if g == 1:
                    e["address"] = w.decode()
                elif g == 2:
                    e["kind"] = "pod" if w == 1 else "gateway"
                elif g == 3:
                    e["protocol"] = w.decode()
            d["endpoints"].append(e)
        elif f == 4:
            d["rps"] = struct.unpack("<d", v)[0]
        elif f == 5:
            d["threshold_rps"] = v
    return d


def endpoints_request(fn):
    b = fn.encode()
    return b"\x0a" + bytes([len(b)]) + b


def direct_endpoints(plat, fn):
    """The READY instances' Instance.direct_endpoint, from discovery."""
    raw = plat.rpc(plat.discovery_addr, "/faas.Discovery/ListInstances", b"")
    out = set()
    for f, _, inst in pb_fields(raw):
        if f != 1:
            continue
        fields = {g: w for g, _, w in pb_fields(inst)}
        if fields.get(2, b"").decode() == fn and fields.get(6, 0) == 1 and fields.get(13):
            out.add(fields[13].decode())
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["threads1", "threads2"])
def plat(request, tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("endpoints"), pool_size=2, grpc=True, thrift=True)
    # a wildcard bind: the answer names the address the client reached, never 0.0.0.0;
    # with two loops the rate and the mode are one for the process whichever loop answers
    p.gateway.argv += ["--listen", f"0.0.0.0:{p.http_port}", "--threads", str(request.param)]
    p.start()
    p.deploy_hello("mesh", "--endpoints-threshold-rps", str(THRESHOLD))
    yield p
    p.stop()


def get_json(plat, fn):
    st, body = http_get(f"{plat.gateway_url}/endpoints/{fn}")
    assert st == 200, body
    return json.loads(body)


def test_spec_carries_threshold(plat):
    out = plat.ctl("get", "mesh").stdout
    assert f"endpoints:\n  threshold_rps: {THRESHOLD}\n" in out, out


def test_gateway_mode_below_threshold(plat):
    d = get_json(plat, "mesh")
    assert d == {"function": "mesh", "mode": "gateway",
                 "endpoints": [{"address": f"127.0.0.1:{plat.http_port}", "kind": "gateway", "protocol": "http"}],
                 "rps": 0.0, "threshold_rps": THRESHOLD}, d


def test_gateway_port_of_the_functions_protocol(plat):
    # no call, no pod: the answer needs only the spec
    for fn, proto, svc in (("mesh-grpc", "grpc", "mesh.Echo"), ("mesh-thrift", "thrift", "MeshEcho")):
        plat.ctl("deploy", fn, "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./hello", "--health-tcp",
                 "--protocol", proto, f"--{proto}-service", svc)
    for fn, proto, port in (("mesh-grpc", "grpc", plat.grpc_port), ("mesh-thrift", "thrift", plat.thrift_port)):
        d = get_json(plat, fn)
        assert d["mode"] == "gateway" and d["endpoints"] == [
            {"address": f"127.0.0.1:{port}", "kind": "gateway", "protocol": proto}], d
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        d = decode_endpoints(ch.unary_unary("/faas.EndpointsApi/Get")(endpoints_request("mesh-grpc"), timeout=10))
    assert d["endpoints"] == [{"address": f"127.0.0.1:{plat.grpc_port}", "kind": "gateway", "protocol": "grpc"}], d


def test_errors(plat):
    st, body = http_get(f"{plat.gateway_url}/endpoints/no-such-fn")
    assert st == 404 and "function no-such-fn: no such function" in body, (st, body)
    st, body = http_get(f"{plat.gateway_url}/endpoints/Bad_Name")
    assert st == 400, (st, body)
    st, body = http_get(f"{plat.gateway_url}/endpoints/")
    assert st == 400, (st, body)
    st, body = http_get(f"{plat.gateway_url}/endpoints/mesh/extra")
    assert st == 404, (st, body)
    c = http.client.HTTPConnection("127.0.0.1", plat.http_port, timeout=10)
    c.request("POST", "/endpoints/mesh", body=b"x")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("allow") == "GET, HEAD", r.status
    r.read()
    c.request("HEAD", "/endpoints/mesh")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-type") == "application/json", r.status
    assert r.read() == b""
    c.close()
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/faas.EndpointsApi/Get")(endpoints_request("no-such-fn"), timeout=10)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/faas.EndpointsApi/Get")(endpoints_request("Bad_Name"), timeout=10)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/faas.EndpointsApi/List")(endpoints_request("mesh"), timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, ei.value


def test_grpc_get_matches_json(plat):
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        raw = ch.unary_unary("/faas.EndpointsApi/Get")(endpoints_request("mesh"), timeout=10)
    d = decode_endpoints(raw)
    assert d["function"] == "mesh" and d["mode"] == "gateway" and d["threshold_rps"] == THRESHOLD, d
    assert d["endpoints"] == [{"address": f"127.0.0.1:{plat.http_port}", "kind": "gateway", "protocol": "http"}]


def test_watch_ends_not_found_when_deleted(plat):
    plat.deploy_hello("short-lived")
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        it = ch.unary_stream("/faas.EndpointsApi/Watch")(endpoints_request("short-lived"), timeout=60)
        first = decode_endpoints(next(it))
        assert first["function"] == "short-lived" and first["mode"] == "gateway", first
        assert first["threshold_rps"] == 500, "the platform default"
        plat.ctl("delete", "short-lived")
        with pytest.raises(grpc.RpcError) as ei:
            for _ in it:
                pass
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND, ei.value


class Load:
    """Calls the function over keep-alive connections until stopped: through the gateway,
    or (addr "host:port") on a pod's direct port."""

    def __init__(self, plat, fn, conns=2, addr=None):
        self.stop_ev = threading.Event()
        self.errors = []
        self.calls = 0
        host, port = addr.rsplit(":", 1) if addr else ("127.0.0.1", plat.http_port)
        path = "/" if addr else f"/function/{fn}/"
        self.threads = [threading.Thread(target=self.run, args=(host, int(port), path), daemon=True)
                        for _ in range(conns)]

    def run(self, host, port, path):
        c = http.client.HTTPConnection(host, port, timeout=30)
        while not self.stop_ev.is_set():
            try:
                c.request("GET", path)
                r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    self.errors.append((r.status, body))
                self.calls += 1
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
                c.close()
                c = http.client.HTTPConnection(host, port, timeout=30)
        c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)


def test_pods_above_threshold_then_back(plat):
    # the watch sees every change; started before the load
    msgs = queue.Queue()
    ch = grpc.insecure_channel(plat.grpc_addr)
    it = ch.unary_stream("/faas.EndpointsApi/Watch")(endpoints_request("mesh"), timeout=120)

    def follow():
        try:
            for m in it:
                msgs.put(decode_endpoints(m))
        except grpc.RpcError as e:
            msgs.put(e)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    try:
        assert msgs.get(timeout=10)["mode"] == "gateway"
        with Load(plat, "mesh") as load:
            d = wait_until(lambda: (lambda d: d if d["mode"] == "pods" else None)(get_json(plat, "mesh")), 30,
                           interval=0.1, what="mode pods (the pods' direct ports published?)")
            pods = direct_endpoints(plat, "mesh")
            assert pods and {e["address"] for e in d["endpoints"]} <= pods, (d, pods)
            assert all(e["kind"] == "pod" and e["protocol"] == "http" for e in d["endpoints"]), d
            assert d["rps"] >= THRESHOLD, d
            # a client that follows the answer calls a pod directly
            host, port = d["endpoints"][0]["address"].rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("GET", "/")
            r = c.getresponse()
            assert r.status == 200 and r.read(), r.status
            c.close()
        assert not load.errors, load.errors[:5]
        # the mesh went direct: the calls moved to the pods, they did not stop, so the
        # pods' direct_calls keep the rate up and the answer stays with the pods
        with Load(plat, "mesh", addr=d["endpoints"][0]["address"]) as direct:
            wait_until(lambda: direct.calls >= 50, 20, what="direct calls")
            # held for longer than the 2 s window, so no gateway call of before is still
            # counted: what keeps the mode is the pods' direct calls alone
            t_end = time.monotonic() + 3
            while time.monotonic() < t_end:
                cur = get_json(plat, "mesh")
                assert cur["mode"] == "pods", cur
                time.sleep(0.2)
            assert cur["rps"] >= THRESHOLD / 2, cur
        assert not direct.errors, direct.errors[:5]
        # the watch said it too, with the same pods
        def watched_pods():
            while True:
                m = msgs.get(timeout=10)
                assert not isinstance(m, Exception), m
                if m["mode"] == "pods":
                    return m
        w = watched_pods()
        assert {e["address"] for e in w["endpoints"]} <= pods, w
        # no traffic: below half the threshold within the 2 s window, back to the gateway
        wait_until(lambda: get_json(plat, "mesh")["mode"] == "gateway", 20, interval=0.2, what="mode gateway again")
    finally:
        it.cancel()
        t.join(10)
        ch.close()
