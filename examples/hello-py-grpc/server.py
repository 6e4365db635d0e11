#!/usr/bin/python3
"""A small python3-grpcio server (Debian's python3-grpcio, no generated code: generic
handlers over raw bytes). It knows nothing of the platform: it listens on
127.0.0.1:$PORT (default 50051).

  /hello.Hello/Echo              -> the request bytes back
  /hello.Hello/Greet             -> $GREETING (the request is ignored)
  /grpc.health.v1.Health/Check   -> SERVING (the platform's `health: {grpc: true}` probe)

Call it through the gateway's gRPC port (no stubs needed):
  python3 -c 'import grpc; ch = grpc.insecure_channel("127.0.0.1:8081");
              print(ch.unary_unary("/hello.Hello/Echo")(b"hi", timeout=10))'
"""
import os
from concurrent import futures

import grpc


def echo(req, ctx):
    return req


def greet(req, ctx):
    return os.environ.get("GREETING", "hello from hello-py-grpc").encode()


def health_check(req, ctx):
    # grpc.health.v1.HealthCheckResponse{status: SERVING (1)}, encoded by hand:
    # field 1, varint
    return b"\x08\x01"


def main():
    port = int(os.environ.get("PORT") or 50051)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("hello.Hello", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Greet": grpc.unary_unary_rpc_method_handler(greet),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health_check),
        }),
    ])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"hello-py-grpc listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
