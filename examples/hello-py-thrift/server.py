#!/usr/bin/python3
"""A small python3-thrift server (Debian's python3-thrift; no IDL compiler needed: the
processor is written by hand). It knows nothing of the platform: a TThreadedServer on
127.0.0.1:$PORT (default 9090), framed transport, binary protocol.

    service HelloCalc {                  // the methods and arguments of examples/thrift-calc
      i32 add(1: i32 a, 2: i32 b)
      string echo(1: string s)
      string greet()                     // $GREETING
    }

A method name "Service:method" (a multiplexed client) is served as "method", so callers
may name the function or service in the prefix; unknown methods get UNKNOWN_METHOD.
"""
import os

from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.Thrift import TApplicationException, TMessageType, TProcessor, TType
from thrift.transport import TSocket, TTransport


def read_args(iprot):
    """The argument struct as {field id: value} (i32 and string fields; others skipped)."""
    args = {}
    iprot.readStructBegin()
    while True:
        _, ftype, fid = iprot.readFieldBegin()
        if ftype == TType.STOP:
            break
        if ftype == TType.I32:
            args[fid] = iprot.readI32()
        elif ftype == TType.STRING:
            args[fid] = iprot.readString()
        else:
            iprot.skip(ftype)
        iprot.readFieldEnd()
    iprot.readStructEnd()
    return args


def m_add(a):
    return TType.I32, (a.get(1, 0) + a.get(2, 0) + 2**31) % 2**32 - 2**31


def m_echo(a):
    return TType.STRING, a.get(1, "")


def m_greet(a):
    return TType.STRING, os.environ.get("GREETING", "hello from hello-py-thrift")


METHODS = {"add": m_add, "echo": m_echo, "greet": m_greet}


class Processor(TProcessor):
    def process(self, iprot, oprot):
        name, _, seqid = iprot.readMessageBegin()
        method = name.rsplit(":", 1)[-1]
        args = read_args(iprot)
        iprot.readMessageEnd()
        fn = METHODS.get(method)
        if fn is None:
            x = TApplicationException(TApplicationException.UNKNOWN_METHOD, f"Unknown function {name}")
            oprot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
            x.write(oprot)
        else:
            rtype, value = fn(args)
            oprot.writeMessageBegin(name, TMessageType.REPLY, seqid)
            oprot.writeStructBegin(f"{method}_result")
            oprot.writeFieldBegin("success", rtype, 0)
            oprot.writeI32(value) if rtype == TType.I32 else oprot.writeString(value)
            oprot.writeFieldEnd()
            oprot.writeFieldStop()
            oprot.writeStructEnd()
        oprot.writeMessageEnd()
        oprot.trans.flush()
        return True


def main():
    port = int(os.environ.get("PORT") or 9090)
    sock = TSocket.TServerSocket(host="127.0.0.1", port=port)
    server = TServer.TThreadedServer(Processor(), sock, TTransport.TFramedTransportFactory(),
                                     TBinaryProtocol.TBinaryProtocolFactory(), daemon=True)
    print(f"hello-py-thrift listening on 127.0.0.1:{port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
