"""The Calculator service by hand (no IDL compiler in Debian): argument and result
structs written and read with the raw protocol calls, as generated code would.

    exception CalcError { 1: string why, 2: i32 code }
    service Calculator {
      i32 add(1: i32 a, 2: i32 b)
      string echo(1: string s)              // reply header echo-reply: <s> (64 bytes at most)
      map<string,string> headers()          // the request's THeader info headers
      void fail(1: string why) throws (1: CalcError err)
      oneway void note(1: string s)
      list<string> notes()
      i32 sleep(1: i32 ms)
      i32 pid()
    }
"""
from thrift.Thrift import TApplicationException, TMessageType, TType

# method -> (argument fields [(id, type)], result type or None for void, oneway)
METHODS = {
    "add": ([(1, TType.I32), (2, TType.I32)], TType.I32, False),
    "echo": ([(1, TType.STRING)], TType.STRING, False),
    "headers": ([], TType.MAP, False),
    "fail": ([(1, TType.STRING)], None, False),
    "note": ([(1, TType.STRING)], None, True),
    "notes": ([], TType.LIST, False),
    "sleep": ([(1, TType.I32)], TType.I32, False),
    "pid": ([], TType.I32, False),
}


class CalcError(Exception):
    def __init__(self, why="", code=0):
        super().__init__(why)
        self.why, self.code = why, code

    def write(self, p):
        p.writeStructBegin("CalcError")
        p.writeFieldBegin("why", TType.STRING, 1)
        p.writeString(self.why)
        p.writeFieldEnd()
        p.writeFieldBegin("code", TType.I32, 2)
        p.writeI32(self.code)
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def write_value(p, t, v):
    if t == TType.I32:
        p.writeI32(v)
    elif t == TType.STRING:
        p.writeString(v)
    elif t == TType.MAP:
        p.writeMapBegin(TType.STRING, TType.STRING, len(v))
        for k, x in v.items():
            p.writeString(k)
            p.writeString(x)
        p.writeMapEnd()
    elif t == TType.LIST:
        p.writeListBegin(TType.STRING, len(v))
        for x in v:
            p.writeString(x)
        p.writeListEnd()
    else:
        raise ValueError(t)


def read_value(p, t):
    """Generic reader: structs come back as {field id: value}."""
    if t == TType.BOOL:
        return p.readBool()
    if t == TType.BYTE:
        return p.readByte()
    if t == TType.I16:
        return p.readI16()
    if t == TType.I32:
        return p.readI32()
    if t == TType.I64:
        return p.readI64()
    if t == TType.DOUBLE:
        return p.readDouble()
    if t == TType.STRING:
        return p.readString()
    if t == TType.STRUCT:
        return read_struct(p)
    if t == TType.MAP:
        kt, vt, n = p.readMapBegin()
        out = {read_value(p, kt): read_value(p, vt) for _ in range(n)}
        p.readMapEnd()
        return out
    if t in (TType.LIST, TType.SET):
        et, n = p.readListBegin() if t == TType.LIST else p.readSetBegin()
        out = [read_value(p, et) for _ in range(n)]
        p.readListEnd() if t == TType.LIST else p.readSetEnd()
        return out
    raise ValueError(f"type {t}")


def read_struct(p):
    out = {}
    p.readStructBegin()
    while True:
        _, t, fid = p.readFieldBegin()
        if t == TType.STOP:
            break
        out[fid] = read_value(p, t)
        p.readFieldEnd()
    p.readStructEnd()
    return out


def write_args(p, name, args):
    fields = METHODS[name][0]
    p.writeStructBegin(f"{name}_args")
    for (fid, t), v in zip(fields, args):
        p.writeFieldBegin(f"f{fid}", t, fid)
        write_value(p, t, v)
        p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


class Client:
    """A synchronous client over any protocol; send/recv are split for pipelining."""

    def __init__(self, proto):
        self.p = proto
        self.seqid = 0

    def send(self, name, *args, seqid=None, mname=None):
        if seqid is None:
            self.seqid += 1
            seqid = self.seqid
        oneway = METHODS[name][2]
        self.p.writeMessageBegin(mname or name, TMessageType.ONEWAY if oneway else TMessageType.CALL, seqid)
        write_args(self.p, name, args)
        self.p.writeMessageEnd()
        self.p.trans.flush()
        return seqid

    def recv(self, name):
        """Returns (seqid, value); raises TApplicationException or CalcError."""
        fname, mtype, seqid = self.p.readMessageBegin()
        if mtype == TMessageType.EXCEPTION:
            x = TApplicationException()
            x.read(self.p)
            self.p.readMessageEnd()
            x.seqid, x.name = seqid, fname
            raise x
        res = read_struct(self.p)
        self.p.readMessageEnd()
        if 1 in res:
            e = res[1]
            err = CalcError(_s(e.get(1, "")), e.get(2, 0))
            err.seqid = seqid
            raise err
        return seqid, res.get(0)

    def call(self, name, *args):
        self.send(name, *args)
        return self.recv(name)[1]
