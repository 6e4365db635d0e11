"""An ordinary Thrift server for the Calculator service (see calc.py), run as a
function: python3-thrift's TThreadedServer on 127.0.0.1:$PORT with a processor
written by hand. Transport from argv: `theader` (THeaderProtocol: accepts THeader,
framed binary and framed compact, answers in the client's dialect), `ttheader`
(Kitex TTHeader, binary payloads; ttheader.py) or `framed` (TFramedTransport;
protocol binary or compact from the second argument).
`--multiplexed` serves the service as "Calculator" behind TMultiplexedProcessor
(plain names still work: the processor is also the default).
With CALC_SERIAL=1 in the environment, `sleep` holds one process-wide lock while it
sleeps: calls run one at a time (a server that queues, for the overload tests)."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.protocol.THeaderProtocol import THeaderProtocol, THeaderProtocolFactory
from thrift.server import TServer
from thrift.Thrift import TApplicationException, TMessageType, TProcessor, TType
from thrift.TMultiplexedProcessor import TMultiplexedProcessor
from thrift.transport import TSocket, TTransport
from thrift.transport.THeaderTransport import THeaderClientType

from calc import METHODS, CalcError, read_struct, write_value
from ttheader import TTHeaderTransport, TTHeaderTransportFactory

_notes = []
_lock = threading.Lock()
_serial = threading.Lock() if os.environ.get("CALC_SERIAL") == "1" else None


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class CalcProcessor(TProcessor):
    def process(self, iprot, oprot):
        name, mtype, seqid = iprot.readMessageBegin()
        if name not in METHODS:
            iprot.skip(TType.STRUCT)
            iprot.readMessageEnd()
            x = TApplicationException(TApplicationException.UNKNOWN_METHOD, f"Unknown function {name}")
            oprot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
            x.write(oprot)
            oprot.writeMessageEnd()
            oprot.trans.flush()
            return True
        args = read_struct(iprot)
        iprot.readMessageEnd()
        req_headers = iprot.get_headers() if isinstance(iprot, THeaderProtocol) else \
            iprot.trans.get_headers() if isinstance(iprot.trans, TTHeaderTransport) else {}
        _, rtype, oneway = METHODS[name]
        result, err = None, None
        try:
            result = getattr(self, "do_" + name)(args, req_headers, oprot)
        except CalcError as e:
            err = e
        if oneway:
            return True
        oprot.writeMessageBegin(name, TMessageType.REPLY, seqid)
        oprot.writeStructBegin(f"{name}_result")
        if err is not None:
            oprot.writeFieldBegin("err", TType.STRUCT, 1)
            err.write(oprot)
            oprot.writeFieldEnd()
        elif rtype is not None:
            oprot.writeFieldBegin("success", rtype, 0)
            write_value(oprot, rtype, result)
            oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeMessageEnd()
        oprot.trans.flush()
        return True

    def do_add(self, a, h, oprot):
        return a.get(1, 0) + a.get(2, 0)

    def do_echo(self, a, h, oprot):
        s = _s(a.get(1, ""))
        tag = s[:64].encode()  # header blocks are small (THeader: 256 KiB at most)
        if isinstance(oprot, THeaderProtocol):
            oprot.set_header(b"echo-reply", tag)
        elif isinstance(oprot.trans, TTHeaderTransport):
            oprot.trans.set_header(b"echo-reply", tag)
        return s

    def do_headers(self, a, h, oprot):
        return {_s(k): _s(v) for k, v in h.items()}

    def do_fail(self, a, h, oprot):
        raise CalcError(_s(a.get(1, "")), 42)

    def do_note(self, a, h, oprot):
        with _lock:
            _notes.append(_s(a.get(1, "")))

    def do_notes(self, a, h, oprot):
        with _lock:
            return list(_notes)

    def do_sleep(self, a, h, oprot):
        if _serial is not None:
            with _serial:
                time.sleep(a.get(1, 0) / 1000.0)
        else:
            time.sleep(a.get(1, 0) / 1000.0)
        return a.get(1, 0)

    def do_pid(self, a, h, oprot):
        return os.getpid()


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else "theader"
    proto = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "binary"
    port = int(os.environ.get("PORT", "9090"))
    processor = CalcProcessor()
    if "--multiplexed" in sys.argv:
        mux = TMultiplexedProcessor()
        mux.registerProcessor("Calculator", processor)
        mux.registerDefault(processor)
        processor = mux
    sock = TSocket.TServerSocket(host="127.0.0.1", port=port)
    if kind == "theader":
        pf = THeaderProtocolFactory(allowed_client_types=(THeaderClientType.HEADERS, THeaderClientType.FRAMED_BINARY,
                                                          THeaderClientType.FRAMED_COMPACT))
        server = TServer.TThreadedServer(processor, sock, TTransport.TTransportFactoryBase(), pf, daemon=True)
    elif kind == "ttheader":  # what a Kitex server speaks (binary payloads)
        server = TServer.TThreadedServer(processor, sock, TTHeaderTransportFactory(),
                                         TBinaryProtocol.TBinaryProtocolFactory(), daemon=True)
    else:
        pf = TCompactProtocol.TCompactProtocolFactory() if proto == "compact" else \
            TBinaryProtocol.TBinaryProtocolFactory()
        server = TServer.TThreadedServer(processor, sock, TTransport.TFramedTransportFactory(), pf, daemon=True)
    print(f"calc: {kind} {proto} on 127.0.0.1:{port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
