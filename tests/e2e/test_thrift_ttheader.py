"""Kitex TTHeader end to end. No Kitex in Debian: the client here is built from the
published TTHeader spec (cloudwego kitex docs, "TTHeader"), checked first against
hand-made byte vectors, then used against the platform (python3-thrift server
behind it: the agent re-frames for the user server, the gateway re-frames the
reply as TTHeader).

    0      4       6       8         12          14
    | LEN  | 0x1000 | FLAGS | SEQ ID  | HDR SIZE/4 | PROTO u8 | NTRANS u8 | INFO... | pad | PAYLOAD
    INFO_KEYVALUE    0x01: u16 n, n x (u16 klen, key, u16 vlen, value)
    INFO_INTKEYVALUE 0x10: u16 n, n x (u16 key, u16 vlen, value)
"""
import os
import socket
import struct
import sys

import pytest

from platform_util import ROOT, Platform

sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))
sys.path.insert(0, os.path.dirname(__file__))

from calc import read_struct, write_args  # noqa: E402
from test_thrift_platform import deploy_calc  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.Thrift import TApplicationException, TMessageType  # noqa: E402
from thrift.transport import TTransport  # noqa: E402

INFO_KEYVALUE, INFO_INTKEYVALUE = 0x01, 0x10
TO_SERVICE, TO_METHOD = 6, 9


def tt_encode(payload, seqid, proto_id=0, str_headers=None, int_headers=None, flags=0):
    h = bytes([proto_id, 0])
    if int_headers:
        h += struct.pack(">BH", INFO_INTKEYVALUE, len(int_headers))
        for k, v in int_headers.items():
            h += struct.pack(">HH", k, len(v)) + v
    if str_headers:
        h += struct.pack(">BH", INFO_KEYVALUE, len(str_headers))
        for k, v in str_headers.items():
            h += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    h += b"\x00" * ((4 - len(h) % 4) % 4)
    body = struct.pack(">HHIH", 0x1000, flags, seqid & 0xFFFFFFFF, len(h) // 4) + h + payload
    return struct.pack(">I", len(body)) + body


def tt_decode(frame):
    """-> (flags, seqid, proto_id, str headers, int headers, payload)."""
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    magic, flags, seqid, hwords = struct.unpack(">HHIH", frame[4:14])
    assert magic == 0x1000
    h = frame[14:14 + 4 * hwords]
    proto_id, ntrans = h[0], h[1]
    assert ntrans == 0
    i, strs, ints = 2, {}, {}
    while i < len(h):
        kind = h[i]
        i += 1
        if kind == 0:
            continue
        (n,) = struct.unpack(">H", h[i:i + 2])
        i += 2
        for _ in range(n):
            if kind == INFO_INTKEYVALUE:
                k, vl = struct.unpack(">HH", h[i:i + 4])
                i += 4
                ints[k] = h[i:i + vl]
            else:
                (kl,) = struct.unpack(">H", h[i:i + 2])
                k = h[i + 2:i + 2 + kl]
                i += 2 + kl
                (vl,) = struct.unpack(">H", h[i:i + 2])
                i += 2
                strs[k] = h[i:i + vl]
            i += vl
    return flags, seqid, proto_id, strs, ints, frame[14 + 4 * hwords:]


def message(name, args, seqid, compact=False, mtype=TMessageType.CALL):
    buf = TTransport.TMemoryBuffer()
    p = TCompactProtocol.TCompactProtocol(buf) if compact else TBinaryProtocol.TBinaryProtocol(buf)
    p.writeMessageBegin(name, mtype, seqid)
    write_args(p, name, args)
    p.writeMessageEnd()
    return buf.getvalue()


def read_reply(payload, compact=False):
    p = (TCompactProtocol.TCompactProtocol if compact else TBinaryProtocol.TBinaryProtocol)(
        TTransport.TMemoryBuffer(payload))
    name, mtype, seqid = p.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        x = TApplicationException()
        x.read(p)
        return name, seqid, x
    return name, seqid, read_struct(p)


# ---- the encoder against hand-made vectors ----------------------------------------

def test_encoder_matches_hand_made_vector():
    # the same frame as tests/unit/gateway/test_thrift.c's kitex vector, written out
    # byte by byte from the spec: int key 6 = "calc", string k = v, CALL add seqid 1
    payload = message("add", [1, 2], 1)
    want = bytes.fromhex(
        "00000000"            # length, patched below
        "1000" "0000" "00000001" "0006"  # magic, flags, seqid, 6 words of header
        "00" "00"             # binary, no transforms
        "10" "0001" "0006" "0004" "63616c63"  # INTKEYVALUE 1: 6 -> "calc"
        "01" "0001" "0001" "6b" "0001" "76"  # KEYVALUE 1: "k" -> "v"
        "0000")               # padding to 24 bytes
    want = struct.pack(">I", len(want) - 4 + len(payload)) + want[4:] + payload
    got = tt_encode(payload, 1, 0, {b"k": b"v"}, {TO_SERVICE: b"calc"})
    assert got == want
    assert tt_decode(got) == (0, 1, 0, {b"k": b"v"}, {TO_SERVICE: b"calc"}, payload)


def test_binary_message_vector():
    assert message("add", [1, 2], 1) == bytes.fromhex(
        "80010001" "00000003" "616464" "00000001"  # CALL "add" seqid 1
        "080001" "00000001" "080002" "00000002" "00")  # a=1 b=2 stop


# ---- against the platform -------------------------------------------------------------

@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ttheader")
    p = Platform(tmp, pool_size=1, thrift=True)
    p.start()
    try:
        deploy_calc(p, tmp, "calc")
        deploy_calc(p, tmp, "calcfb", transport="framed", argv=("framed", "compact"), services=("CalcFramed",))
        # a TTHeader user server (what a Kitex server speaks): the agent frames calls in TTHeader
        deploy_calc(p, tmp, "calctt", transport="ttheader", argv=("ttheader",), services=("CalcTT",))
        yield p
    finally:
        p.stop()


def roundtrip(port, frames, n_replies):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"".join(frames))
        buf, out = b"", []
        while len(out) < n_replies:
            b = s.recv(65536)
            assert b, f"closed after {len(out)} replies"
            buf += b
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                n = 4 + struct.unpack(">I", buf[:4])[0]
                out.append(tt_decode(buf[:n]))
                buf = buf[n:]
        return out


@pytest.mark.parametrize("compact", [False, True], ids=["binary", "compact"])
def test_ttheader_int_key_routes_and_reply_headers(plat, compact):
    pid = 2 if compact else 0
    frames = [
        tt_encode(message("add", [20, 22], 11, compact), 101, pid, None, {TO_SERVICE: b"Calculator"}),
        tt_encode(message("echo", ["tt"], 12, compact), 102, pid, {b"x-k": b"v1"}, {TO_SERVICE: b"Calculator"}),
        tt_encode(message("headers", [], 13, compact), 103, pid, {b"to_service": b"calc", b"x-k": b"v2"}),
    ]
    r = roundtrip(plat.thrift_port, frames, 3)
    assert [x[1] for x in r] == [101, 102, 103]  # header seqids echoed, in order
    assert all(x[2] == pid for x in r)
    assert read_reply(r[0][5], compact) == ("add", 11, {0: 42})
    assert read_reply(r[1][5], compact) == ("echo", 12, {0: "tt"})
    assert r[1][3].get(b"echo-reply") == b"tt"  # the user server's reply header
    name, seq, res = read_reply(r[2][5], compact)
    assert (name, seq) == ("headers", 13)
    assert res[0].get("x-k") == "v2" and res[0].get("faas-request-id")


def test_ttheader_to_framed_compact_server(plat):
    r = roundtrip(plat.thrift_port, [tt_encode(message("add", [1, 2], 5, True), 5, 2, None,
                                               {TO_SERVICE: b"CalcFramed"})], 1)
    assert read_reply(r[0][5], True) == ("add", 5, {0: 3})


def test_ttheader_unknown_service_is_unknown_method(plat):
    r = roundtrip(plat.thrift_port, [tt_encode(message("add", [1, 2], 77), 9, 0, None, {TO_SERVICE: b"Nope"})], 1)
    name, seq, x = read_reply(r[0][5])
    assert r[0][1] == 9 and (name, seq) == ("add", 77)
    assert isinstance(x, TApplicationException) and x.type == TApplicationException.UNKNOWN_METHOD


def test_agent_speaks_ttheader_to_the_user_server(plat):
    from thrift.protocol.THeaderProtocol import THeaderProtocol
    from thrift.transport import TSocket
    from thrift.transport.THeaderTransport import THeaderClientType

    from calc import Client

    # a python3-thrift THeader client; the user server only understands TTHeader
    sock = TSocket.TSocket("127.0.0.1", plat.thrift_port)
    sock.setTimeout(20000)
    sock.open()
    try:
        p = THeaderProtocol(sock, (THeaderClientType.HEADERS,))
        c = Client(p)
        p.set_header(b"faas-function", b"calctt")
        assert c.call("add", 40, 2) == 42
        p.set_header(b"faas-function", b"calctt")
        assert c.call("echo", "via-tt") == "via-tt"
        assert p.get_headers().get(b"echo-reply") == b"via-tt"  # TTHeader reply header -> THeader
        p.set_header(b"faas-function", b"calctt")
        p.set_header(b"x-from-client", b"yes")
        hs = c.call("headers")
        assert hs.get("x-from-client") == "yes" and hs.get("faas-request-id")
    finally:
        sock.close()
    # and a TTHeader client: int key 6 routes, the payload is passed through untouched
    r = roundtrip(plat.thrift_port, [tt_encode(message("add", [5, 6], 3), 4, 0, None, {TO_SERVICE: b"CalcTT"})], 1)
    assert r[0][1] == 4 and read_reply(r[0][5]) == ("add", 3, {0: 11})


def test_ttheader_framed_payload_is_answered_framed(plat):
    # Kitex TTHeaderFramed: the payload carries its own 4-byte length; so does the reply
    msg = message("add", [7, 8], 21)
    r = roundtrip(plat.thrift_port, [tt_encode(struct.pack(">I", len(msg)) + msg, 21, 0, None,
                                               {TO_SERVICE: b"Calculator"})], 1)
    payload = r[0][5]
    assert struct.unpack(">I", payload[:4])[0] == len(payload) - 4
    assert read_reply(payload[4:]) == ("add", 21, {0: 15})
