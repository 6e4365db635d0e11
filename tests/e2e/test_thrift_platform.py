"""Thrift end to end: python3-thrift clients -> the gateway's Thrift port ->
dispatcher -> agent -> an unmodified python3-thrift server (examples/thrift-calc),
on a real platform (discovery, worker manager with pods, gateway)."""
import os
import signal
import socket
import struct
import sys
import time

import pytest

from platform_util import ROOT, Platform, http_get, pids_matching, wait_until

sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))

from calc import CalcError, Client  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.protocol.THeaderProtocol import THeaderProtocol  # noqa: E402
from thrift.protocol.TMultiplexedProtocol import TMultiplexedProtocol  # noqa: E402
from thrift.Thrift import TApplicationException  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from thrift.transport.THeaderTransport import THeaderClientType  # noqa: E402

CALC_DIR = os.path.join(ROOT, "examples", "thrift-calc")


def deploy_calc(p, tmp, name, transport="theader", argv=("theader", "--multiplexed"), services=("Calculator",),
                extra=""):
    cmd = ", ".join(["/usr/bin/python3", "calc_server.py", *argv])
    svc = ", ".join(services)
    path = os.path.join(str(tmp), f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\ncode: {CALC_DIR}\ncommand: [{cmd}]\nprotocol: thrift\n"
                f"thrift_services: [{svc}]\nthrift_transport: {transport}\nhealth: {{tcp: true}}\n{extra}")
    p.ctl("deploy", "-f", path)


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thrift")
    p = Platform(tmp, pool_size=2, thrift=True, gateway_args=("--thrift-default-function", "calc"))
    p.start()
    try:
        deploy_calc(p, tmp, "calc", argv=("theader", "--multiplexed", "--tag=calc"))
        # framed binary to the user server: the agent re-frames THeader clients' calls
        deploy_calc(p, tmp, "calcfb", transport="framed", argv=("framed", "binary"), services=("CalcFramed",))
        deploy_calc(p, tmp, "calcslow", argv=("theader",), services=("CalcSlow",), extra="timeout: 1500ms\n")
        yield p
    finally:
        p.stop()


def header_client(port, proto_id=0, service=None):
    s = TSocket.TSocket("127.0.0.1", port)
    s.setTimeout(20000)
    s.open()
    p = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=proto_id)
    if service:
        return Client(TMultiplexedProtocol(p, service)), p, s
    return Client(p), p, s


def framed_client(port, compact=False):
    s = TSocket.TSocket("127.0.0.1", port)
    s.setTimeout(20000)
    s.open()
    t = TTransport.TFramedTransport(s)
    p = TCompactProtocol.TCompactProtocol(t) if compact else TBinaryProtocol.TBinaryProtocol(t)
    return Client(p), p, s


@pytest.mark.parametrize("proto_id", [0, 2], ids=["binary", "compact"])
def test_theader_cold_start_headers_and_exception(plat, proto_id):
    c, p, s = header_client(plat.thrift_port, proto_id)
    try:
        p.set_header(b"faas-function", b"calc")
        p.set_header(b"x-trace", b"abc123")
        assert c.call("add", 2, 40) == 42  # first call may cold start
        assert c.call("echo", "hello") == "hello"
        # reply info headers from the user server reach the client
        assert p.get_headers().get(b"echo-reply") == b"hello"
        p.set_header(b"faas-function", b"calc")
        p.set_header(b"x-trace", b"t-2")
        hs = c.call("headers")
        assert hs.get("x-trace") == "t-2"
        assert len(hs.get("faas-request-id", "")) >= 8  # added by the platform
        with pytest.raises(CalcError) as ei:
            c.call("fail", "user said no")
        assert ei.value.why == "user said no" and ei.value.code == 42
    finally:
        s.close()


@pytest.mark.parametrize("compact", [False, True], ids=["binary", "compact"])
def test_framed_default_function(plat, compact):
    # framed clients carry no headers: the port's default function serves them
    c, p, s = framed_client(plat.thrift_port, compact)
    try:
        for i in range(5):
            assert c.call("add", i, 1000) == 1000 + i
        with pytest.raises(CalcError):
            c.call("fail", "x")
    finally:
        s.close()


def test_multiplexed_routes_by_service(plat):
    c, p, s = header_client(plat.thrift_port, 0, service="CalcFramed")
    try:
        # "CalcFramed:add" -> function calcfb (framed binary server, not multiplexed:
        # it sees the name as sent, and TMultiplexedProcessor is not there, so use the
        # theader calc function for the multiplexed server check below)
        with pytest.raises(TApplicationException) as ei:
            c.call("add", 1, 2)
        assert ei.value.type == TApplicationException.UNKNOWN_METHOD  # from the user server
    finally:
        s.close()
    c, p, s = header_client(plat.thrift_port, 2, service="Calculator")
    try:
        assert c.call("add", 20, 22) == 42
        assert c.call("echo", "mux") == "mux"
    finally:
        s.close()


def test_reframing_theader_client_to_framed_server(plat):
    c, p, s = header_client(plat.thrift_port, 0)
    try:
        p.set_header(b"faas-function", b"calcfb")
        assert c.call("add", 1, 2) == 3
        p.set_header(b"faas-function", b"calcfb")
        with pytest.raises(CalcError):
            c.call("fail", "framed")
    finally:
        s.close()


def test_pipelined_calls_in_order(plat):
    c, p, s = framed_client(plat.thrift_port)
    try:
        c.call("add", 0, 0)  # warm
        # a slow call first: later fast ones must still come back after it
        seqs = [c.send("sleep", 300)] + [c.send("add", i, i) for i in range(20)]
        got = [c.recv("sleep")] + [c.recv("add") for _ in range(20)]
        assert [g[0] for g in got] == seqs
        assert got[0][1] == 300
        assert [g[1] for g in got[1:]] == [2 * i for i in range(20)]
    finally:
        s.close()


def test_pipelined_theader_custom_seqids(plat):
    c, p, s = header_client(plat.thrift_port, 2)
    try:
        ids = [1000, 7, 0, 2 ** 31 - 1]
        for i in ids:
            p.set_header(b"faas-function", b"calc")
            c.send("add", i % 100, 1, seqid=i)
        out = [c.recv("add") for _ in ids]
        assert [o[0] for o in out] == ids
        assert [o[1] for o in out] == [i % 100 + 1 for i in ids]
    finally:
        s.close()


def test_oneway(plat):
    c, p, s = framed_client(plat.thrift_port)
    try:
        token = f"note-{time.time_ns()}"
        c.send("note", token)  # no reply comes for oneway calls
        assert c.call("add", 1, 1) == 2  # the next reply is the call's, not the oneway's
        wait_until(lambda: token in c.call("notes"), 10, 0.05, "oneway note recorded")
    finally:
        s.close()


def test_unknown_service(plat):
    c, p, s = header_client(plat.thrift_port, 0)
    try:
        p.set_header(b"faas-function", b"nosuchfn")
        with pytest.raises(TApplicationException) as ei:
            c.send("add", 1, 2, seqid=77)
            c.recv("add")
        assert ei.value.type == TApplicationException.UNKNOWN_METHOD
        assert ei.value.seqid == 77 and ei.value.name == "add"
        assert "nosuchfn" in ei.value.message
        # the connection keeps working
        p.set_header(b"faas-function", b"calc")
        assert c.call("add", 3, 4) == 7
    finally:
        s.close()
    c, p, s = header_client(plat.thrift_port, 2, service="NoSuchService")
    try:
        with pytest.raises(TApplicationException) as ei:
            c.call("add", 1, 2)
        assert ei.value.type == TApplicationException.UNKNOWN_METHOD
    finally:
        s.close()


def test_deadline_is_internal_error(plat):
    c, p, s = header_client(plat.thrift_port, 0)
    try:
        p.set_header(b"faas-function", b"calcslow")
        assert c.call("add", 1, 1) == 2
        p.set_header(b"faas-function", b"calcslow")
        with pytest.raises(TApplicationException) as ei:
            c.send("sleep", 5000, seqid=9)
            c.recv("sleep")
        assert ei.value.type == TApplicationException.INTERNAL_ERROR
        assert ei.value.seqid == 9 and "deadline" in ei.value.message
    finally:
        s.close()


def test_pod_killed_mid_call(plat):
    c, p, s = framed_client(plat.thrift_port)
    try:
        assert c.call("add", 1, 2) == 3
        # the pod's pid namespace hides the server's real pid: find it by its argv
        pids = [pid for pid, cmd in pids_matching("calc_server.py theader --multiplexed --tag=calc")]
        assert pids
        seq = c.send("sleep", 3000)
        time.sleep(0.3)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(TApplicationException) as ei:
            c.recv("sleep")
        assert ei.value.type == TApplicationException.INTERNAL_ERROR
        assert ei.value.seqid == seq
    finally:
        s.close()

    def recovered():
        c2, _, s2 = framed_client(plat.thrift_port)
        try:
            return c2.call("add", 2, 2) == 4
        finally:
            s2.close()
    # the dead instance leaves the table and a new one is started on demand
    wait_until(recovered, 20, 0.1, "calls work again after the pod died")


def test_http_on_thrift_port_closed_other_connection_fine(plat):
    c, p, s = framed_client(plat.thrift_port)
    try:
        assert c.call("add", 5, 5) == 10
        with socket.create_connection(("127.0.0.1", plat.thrift_port), timeout=5) as h:
            h.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert h.recv(100) == b""  # closed, nothing sent
        # garbage after a THeader header: PROTOCOL_ERROR in THeader framing, then close
        with socket.create_connection(("127.0.0.1", plat.thrift_port), timeout=5) as h:
            hdr = bytes([0, 1, 1, 1])  # binary protocol, one transform (zlib): refused
            frame = struct.pack(">HHIH", 0x0FFF, 0, 5, 1) + hdr + b"\x00" * 8
            h.sendall(struct.pack(">I", len(frame)) + frame)
            data = b""
            while True:
                b = h.recv(4096)
                if not b:
                    break
                data += b
            assert len(data) > 14 and struct.unpack(">H", data[4:6])[0] == 0x0FFF
            assert struct.unpack(">I", data[8:12])[0] == 5  # the client's header seqid
        assert c.call("add", 6, 6) == 12
    finally:
        s.close()


def test_metrics_count_thrift(plat):
    c, p, s = framed_client(plat.thrift_port)
    try:
        c.call("add", 1, 1)
    finally:
        s.close()
    body = http_get(plat.gateway_url + "/metrics")[1]
    assert 'function="calc",code="200",protocol="thrift"' in body


def _varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def th_encode(payload, seqid, flags=0, headers=None):
    """A THeader frame (binary protocol) by hand, to set flags python3-thrift does not."""
    h = _varint(0) + _varint(0)
    if headers:
        h += _varint(1) + _varint(len(headers))
        for k, v in headers.items():
            h += _varint(len(k)) + k + _varint(len(v)) + v
    h += b"\x00" * ((4 - len(h) % 4) % 4)
    body = struct.pack(">HHIH", 0x0FFF, flags, seqid, len(h) // 4) + h + payload
    return struct.pack(">I", len(body)) + body


def _binary_call(name, args, seqid):
    from calc import write_args
    from thrift.Thrift import TMessageType
    buf = TTransport.TMemoryBuffer()
    p = TBinaryProtocol.TBinaryProtocol(buf)
    p.writeMessageBegin(name, TMessageType.CALL, seqid)
    write_args(p, name, args)
    p.writeMessageEnd()
    return buf.getvalue()


def _read_frames(sock, n):
    buf, out = b"", []
    while len(out) < n:
        b = sock.recv(65536)
        assert b, f"closed after {len(out)} frames"
        buf += b
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            k = 4 + struct.unpack(">I", buf[:4])[0]
            out.append(buf[:k])
            buf = buf[k:]
    return out


@pytest.mark.parametrize("ooo", [True, False], ids=["out-of-order", "in-order"])
def test_theader_out_of_order_flag(plat, ooo):
    flags = 0x0001 if ooo else 0
    hs = {b"faas-function": b"calc"}
    with socket.create_connection(("127.0.0.1", plat.thrift_port), timeout=20) as s:
        s.sendall(th_encode(_binary_call("add", [1, 1], 1), 1, flags, hs))  # warm
        _read_frames(s, 1)
        s.sendall(th_encode(_binary_call("sleep", [400], 2), 2, flags, hs) +
                  th_encode(_binary_call("add", [2, 3], 3), 3, flags, hs))
        got = [struct.unpack(">I", f[8:12])[0] for f in _read_frames(s, 2)]
    assert got == ([3, 2] if ooo else [2, 3])


def test_cold_start_on_first_call(plat, tmp_path):
    deploy_calc(plat, tmp_path, "calccold", argv=("theader",), services=("CalcCold",))
    assert plat.instances("calccold") == []
    c, p, s = header_client(plat.thrift_port, 2)
    try:
        p.set_header(b"faas-function", b"calccold")
        assert c.call("echo", "first") == "first"  # held while the instance starts
    finally:
        s.close()
    assert len(plat.instances("calccold")) == 1


def test_cold_start_failure_is_internal_error(plat, tmp_path):
    path = os.path.join(str(tmp_path), "broken.yaml")
    with open(path, "w") as f:
        f.write(f"name: calcbroken\ncode: {CALC_DIR}\ncommand: [/bin/false]\nprotocol: thrift\n"
                "thrift_services: [Broken]\nhealth: {tcp: true}\ncold_start_timeout: 3s\n")
    plat.ctl("deploy", "-f", path)
    c, p, s = framed_client(plat.thrift_port)
    try:
        with pytest.raises(TApplicationException) as ei:
            c.send("add", 1, 2, seqid=31, mname="Broken:add")
            c.recv("add")
        assert ei.value.type == TApplicationException.INTERNAL_ERROR
        assert ei.value.seqid == 31 and ei.value.name == "Broken:add"
        assert "calcbroken" in ei.value.message
    finally:
        s.close()


def test_large_payloads_both_ways(plat):
    # bigger than the h2 windows between gateway and agent: the reply streams in pieces
    c, p, s = framed_client(plat.thrift_port)
    try:
        big = "x" * (3 << 20) + "end"
        assert c.call("echo", big) == big
        assert c.call("add", 1, 2) == 3
    finally:
        s.close()


def test_deep_pipeline_beyond_the_read_ahead_limit(plat):
    # 600 calls written at once: the gateway stops reading at 256 in flight and resumes
    c, p, s = framed_client(plat.thrift_port)
    try:
        c.call("add", 0, 0)
        seqs = [c.send("add", i, 1) for i in range(600)]
        got = [c.recv("add") for _ in seqs]
        assert [g[0] for g in got] == seqs
        assert [g[1] for g in got] == [i + 1 for i in range(600)]
    finally:
        s.close()


def test_client_leaves_mid_call(plat):
    c, p, s = framed_client(plat.thrift_port)
    c.call("add", 1, 1)
    for _ in range(5):
        c.send("sleep", 2000)
    s.close()  # calls in flight are cancelled upstream; nothing else is affected
    c, p, s = framed_client(plat.thrift_port)
    try:
        assert c.call("add", 2, 2) == 4
    finally:
        s.close()
    wait_until(lambda: 'function="calc",code="499",protocol="thrift"' in http_get(plat.gateway_url + "/metrics")[1],
               5, 0.05, "client-gone calls counted as 499")


def test_slow_reader_pipelining_big_replies(plat):
    # 120 x 64 KiB echoes written by one thread while nobody reads: the gateway pauses
    # reading once 1 MiB of replies wait, the writer blocks, nothing is lost
    import threading
    c, p, s = framed_client(plat.thrift_port)
    try:
        c.call("add", 0, 0)
        n, blob = 120, "y" * (64 << 10)
        seqs = []
        w = threading.Thread(target=lambda: seqs.extend(c.send("echo", blob + str(i)) for i in range(n)))
        w.start()
        time.sleep(1.0)
        got = [c.recv("echo") for _ in range(n)]
        w.join(10)
        assert [g[0] for g in got] == seqs
        assert all(g[1] == blob + str(i) for i, g in enumerate(got))
    finally:
        s.close()
