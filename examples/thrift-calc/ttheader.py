"""Kitex TTHeader as a python3-thrift transport, written from the published spec
(no Kitex in Debian), so that the example can play a TTHeader server.

    LEN u32 | 0x1000 u16 | FLAGS u16 | SEQID u32 | HDR SIZE/4 u16 | PROTO u8 | NTRANS u8 |
    INFO blocks (0x01 KEYVALUE: u16 n, (u16 len, key, u16 len, value)*;
                 0x10 INTKEYVALUE: u16 n, (u16 key, u16 len, value)*) | padding | PAYLOAD
"""
import struct
import threading
from io import BytesIO

from thrift.transport.TTransport import TTransportBase, TTransportException

MAGIC = 0x1000


def encode(payload, seqid, proto_id=0, flags=0, str_headers=None, int_headers=None):
    h = bytes([proto_id, 0])
    if int_headers:
        h += struct.pack(">BH", 0x10, len(int_headers))
        for k, v in int_headers.items():
            h += struct.pack(">HH", k, len(v)) + v
    if str_headers:
        h += struct.pack(">BH", 0x01, len(str_headers))
        for k, v in str_headers.items():
            h += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    h += b"\x00" * ((4 - len(h) % 4) % 4)
    body = struct.pack(">HHIH", MAGIC, flags, seqid & 0xFFFFFFFF, len(h) // 4) + h + payload
    return struct.pack(">I", len(body)) + body


def decode(body):
    """body = a frame without its length word -> (flags, seqid, proto, strs, ints, payload)."""
    magic, flags, seqid, words = struct.unpack(">HHIH", body[:10])
    if magic != MAGIC:
        raise TTransportException(TTransportException.INVALID_CLIENT_TYPE, "not TTHeader")
    h = body[10:10 + 4 * words]
    proto, ntrans = h[0], h[1]
    if ntrans:
        raise TTransportException(TTransportException.INVALID_TRANSFORM, "transforms unsupported")
    i, strs, ints = 2, {}, {}
    while i < len(h):
        kind = h[i]
        i += 1
        if kind == 0:
            continue
        (n,) = struct.unpack(">H", h[i:i + 2])
        i += 2
        for _ in range(n):
            if kind == 0x10:
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
    return flags, seqid, proto, strs, ints, body[10 + 4 * words:]


class TTHeaderTransport(TTransportBase):
    """Server side: reads TTHeader frames, answers with the request's seqid,
    protocol and flags plus whatever set_header() added."""

    def __init__(self, trans):
        self._trans = trans
        self._rbuf = BytesIO(b"")
        self._wbuf = BytesIO()
        self._seqid, self._proto, self._flags = 0, 0, 0
        self._read_headers, self._read_int_headers, self._write_headers = {}, {}, {}

    def isOpen(self):
        return self._trans.isOpen()

    def open(self):
        return self._trans.open()

    def close(self):
        return self._trans.close()

    def get_headers(self):
        return self._read_headers

    def get_int_headers(self):
        return self._read_int_headers

    def set_header(self, key, value):
        self._write_headers[key] = value

    def read(self, sz):
        out = self._rbuf.read(sz)
        if out:
            return out
        (n,) = struct.unpack(">I", self._trans.readAll(4))
        self._flags, self._seqid, self._proto, self._read_headers, self._read_int_headers, payload = \
            decode(self._trans.readAll(n))
        self._rbuf = BytesIO(payload)
        return self._rbuf.read(sz)

    def write(self, buf):
        self._wbuf.write(buf)

    def flush(self):
        payload = self._wbuf.getvalue()
        self._wbuf = BytesIO()
        frame = encode(payload, self._seqid, self._proto, self._flags, self._write_headers)
        self._write_headers = {}
        self._trans.write(frame)
        self._trans.flush()


class TTHeaderTransportFactory(object):
    """The server asks for an input and an output transport per client: both are
    the same object so the reply knows the request's seqid."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_client = {}

    def getTransport(self, client):
        with self._lock:
            t = self._by_client.pop(id(client), None)
            if t is None:
                t = TTHeaderTransport(client)
                self._by_client[id(client)] = t
            return t
