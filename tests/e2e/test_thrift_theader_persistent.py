"""THeader clients that name their function once per connection (issue 10 item 2).

python3-thrift's THeaderTransport sends its write headers with the next message only
(flush() empties _write_headers), so a client that calls set_header(faas-function)
once sends it in the first frame and never again. The gateway binds the connection to
the function its last routing key named; before the fix every call after the first
answered TApplicationException UNKNOWN_METHOD. The gateway here has no default Thrift
function, so an unbound call cannot be served by accident."""
import os
import socket
import struct
import sys
import time

import pytest

from platform_util import ROOT, Platform, wait_until

sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))
sys.path.insert(0, os.path.dirname(__file__))

from calc import METHODS, CalcError, Client, write_args  # noqa: E402
from test_thrift_platform import deploy_calc  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.protocol.THeaderProtocol import THeaderProtocol  # noqa: E402
from thrift.Thrift import TMessageType  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from thrift.transport.THeaderTransport import THeaderClientType  # noqa: E402

BINARY, COMPACT = 0, 2
NCALLS = 50


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("theader-persist")
    p = Platform(tmp, pool_size=2, thrift=True)  # no --thrift-default-function
    p.start()
    try:
        deploy_calc(p, tmp, "calcp", argv=("theader",), services=("CalcPersist",))
        deploy_calc(p, tmp, "calcq", argv=("theader",), services=("CalcOther",))
        yield p
    finally:
        p.stop()


# ---- THeader frames on the wire ---------------------------------------------------


def _varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def parse_frames(data):
    """THeader frames in a byte stream -> [(seqid, proto_id, info headers)]."""
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack(">I", data[off:off + 4])
        frame = data[off + 4:off + 4 + length]
        assert len(frame) == length, "a partial frame"
        off += 4 + length
        magic, _flags, seqid, hwords = struct.unpack(">HHIH", frame[:10])
        assert magic == 0x0FFF, hex(magic)
        h = frame[10:10 + 4 * hwords]
        proto, i = _read_varint(h, 0)
        ntrans, i = _read_varint(h, i)
        for _ in range(ntrans):
            _, i = _read_varint(h, i)
        info = {}
        while i < len(h):
            kind, i = _read_varint(h, i)
            if kind == 0:  # padding
                continue
            assert kind == 1, f"info type {kind}"
            n, i = _read_varint(h, i)
            for _ in range(n):
                kl, i = _read_varint(h, i)
                k = h[i:i + kl]
                i += kl
                vl, i = _read_varint(h, i)
                info[k] = h[i:i + vl]
                i += vl
        out.append((seqid, proto, info))
    return out


class RecordingSocket(TSocket.TSocket):
    """A TSocket that keeps every byte the client wrote."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = b""

    def write(self, buf):
        self.sent += bytes(buf)
        super().write(buf)


def header_client(port, proto_id):
    s = RecordingSocket("127.0.0.1", port)
    s.setTimeout(20000)
    s.open()
    p = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=proto_id)
    return Client(p), p, s


def run_50_calls(c, token):
    """NCALLS calls on one connection: adds and echoes, a user exception at 10, a
    oneway call at 20; each answered correctly."""
    for i in range(1, NCALLS):
        if i == 10:
            with pytest.raises(CalcError) as ei:
                c.call("fail", f"no {i}")
            assert ei.value.why == f"no {i}" and ei.value.code == 42
        elif i == 20:
            c.send("note", token)  # oneway: no reply; the next reply is the next call's
        elif i % 3 == 0:
            assert c.call("echo", f"e{i}") == f"e{i}"
        else:
            assert c.call("add", i, 1000) == i + 1000, f"call {i}"


# ---- python3-thrift's own client ----------------------------------------------------


@pytest.mark.parametrize("proto_id,key", [(BINARY, b"calcp"), (COMPACT, b"CalcPersist")],
                         ids=["binary-by-function", "compact-by-service"])
def test_header_once_then_50_calls(plat, proto_id, key):
    c, p, s = header_client(plat.thrift_port, proto_id)
    token = f"persist-{proto_id}-{time.time_ns()}"
    try:
        p.set_header(b"faas-function", key)  # once for the whole connection
        assert c.call("add", 1, 2) == 3  # may cold start
        # python3-thrift sent the header with the first message and forgot it
        assert p.trans._write_headers == {}
        run_50_calls(c, token)
        wait_until(lambda: token in c.call("notes"), 10, 0.05, "oneway note recorded")
    finally:
        s.close()
    frames = parse_frames(s.sent)
    assert len(frames) >= NCALLS
    assert all(f[1] == proto_id for f in frames)
    assert frames[0][2] == {b"faas-function": key}
    assert [f[2] for f in frames[1:]] == [{}] * (len(frames) - 1), "later frames carried info headers"


# ---- raw frames: the info header in the first frame only, pipelined ---------------


def call_frame(name, args, seqid, proto_id, headers=None):
    buf = TTransport.TMemoryBuffer()
    p = (TCompactProtocol.TCompactProtocol if proto_id == COMPACT else TBinaryProtocol.TBinaryProtocol)(buf)
    oneway = METHODS[name][2]
    p.writeMessageBegin(name, TMessageType.ONEWAY if oneway else TMessageType.CALL, seqid)
    write_args(p, name, args)
    p.writeMessageEnd()
    h = _varint(proto_id) + _varint(0)
    if headers:
        h += _varint(1) + _varint(len(headers))
        for k, v in headers.items():
            h += _varint(len(k)) + k + _varint(len(v)) + v
    h += b"\x00" * ((4 - len(h) % 4) % 4)
    body = struct.pack(">HHIH", 0x0FFF, 0, seqid, len(h) // 4) + h + buf.getvalue()
    return struct.pack(">I", len(body)) + body


def read_frames(sock, n):
    buf, out = b"", []
    while len(out) < n:
        b = sock.recv(65536)
        assert b, f"closed after {len(out)} replies"
        buf += b
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            k = 4 + struct.unpack(">I", buf[:4])[0]
            out.append(buf[:k])
            buf = buf[k:]
    return out


def decode_reply(frame, name):
    """(seqid, value) of one reply frame, decoded by python3-thrift itself; raises
    what the call raised."""
    p = THeaderProtocol(TTransport.TMemoryBuffer(frame), (THeaderClientType.HEADERS,))
    return Client(p).recv(name)


@pytest.mark.parametrize("proto_id", [BINARY, COMPACT], ids=["binary", "compact"])
def test_raw_first_frame_headers_pipelined(plat, proto_id):
    token = f"raw-{proto_id}-{time.time_ns()}"
    calls = []  # (name, args, seqid)
    for i in range(NCALLS):
        if i == 10:
            calls.append(("fail", [f"raw {i}"], 100 + i))
        elif i == 20:
            calls.append(("note", [token], 100 + i))
        elif i % 3 == 0:
            calls.append(("echo", [f"r{i}"], 100 + i))
        else:
            calls.append(("add", [i, 7], 100 + i))
    wire = b"".join(call_frame(n, a, sq, proto_id, {b"faas-function": b"CalcPersist"} if k == 0 else None)
                    for k, (n, a, sq) in enumerate(calls))
    frames = parse_frames(wire)
    assert frames[0][2] == {b"faas-function": b"CalcPersist"}
    assert all(f[2] == {} for f in frames[1:])
    replied = [c for c in calls if not METHODS[c[0]][2]]
    with socket.create_connection(("127.0.0.1", plat.thrift_port), timeout=20) as s:
        s.sendall(wire)  # all 50 at once: the connection is bound while they are parsed
        got = read_frames(s, len(replied))
    assert len(got) == NCALLS - 1
    for (name, args, seqid), frame in zip(replied, got):
        if name == "fail":
            with pytest.raises(CalcError) as ei:
                decode_reply(frame, name)
            assert ei.value.seqid == seqid and ei.value.why == args[0]
            continue
        sq, v = decode_reply(frame, name)
        assert sq == seqid
        assert v == (args[0] if name == "echo" else args[0] + args[1]), f"{name}{args}"


# ---- a later routing key rebinds the connection -----------------------------------


def test_a_later_key_rebinds_the_connection(plat):
    c, p, s = header_client(plat.thrift_port, BINARY)
    tp, tq = f"to-p-{time.time_ns()}", f"to-q-{time.time_ns()}"
    try:
        p.set_header(b"faas-function", b"calcp")
        assert c.call("add", 1, 1) == 2
        c.send("note", tp)
        assert c.call("add", 2, 2) == 4
        p.set_header(b"faas-function", b"CalcOther")  # calcq's service, once
        assert c.call("add", 3, 3) == 6
        c.send("note", tq)
        for i in range(10):
            assert c.call("add", i, i) == 2 * i
        # the notes went to two processes: each function saw its own only
        wait_until(lambda: tq in c.call("notes"), 10, 0.05, "note recorded by calcq")
        assert tp not in c.call("notes")
        p.set_header(b"faas-function", b"calcp")
        wait_until(lambda: tp in c.call("notes"), 10, 0.05, "note recorded by calcp")
        assert tq not in c.call("notes"), "the header-less call went to the old function"
    finally:
        s.close()
