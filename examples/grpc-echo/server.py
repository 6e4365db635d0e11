#!/usr/bin/python3
"""An unmodified gRPC server (python3-grpcio, no generated code): generic handlers over
raw bytes for the four call kinds, plus grpc.health.v1.Health/Check. Listens on $PORT.

Service echo.Echo:
  Unary        -> the request back; a request "status:<code>:<message>" makes the call end
                  with that status and trailing metadata (x-custom, x-bin-bin); "sleep:<ms>"
                  sleeps first (cancellation and deadline tests); "pid" -> the server's pid;
                  "deadline" -> the seconds left of the call's deadline (or "none")
  ServerStream -> request "<n>:<size>" -> n messages of size bytes (byte i = i % 251);
                  "<n>:<size>:<delay_ms>" paces them
  ClientStream -> the total byte count of all requests, as decimal text
  Bidi         -> every request echoed back as it arrives
A call whose client went away (cancel, deadline, reset) prints "cancelled <method> <tag>"
on stdout (the platform's function log), so cancellation reaching the user server is
observable from outside; <tag> is the request up to its first ':'-field.
grpc.health.v1.Health/Check answers SERVING (HEALTH_STATUS=2: NOT_SERVING; NO_HEALTH=1:
not implemented)."""
import os
import sys
import threading
import time
from concurrent import futures

import grpc

_lock = threading.Lock()


def record(line):
    with _lock:
        print(line, flush=True)


def watch_cancel(ctx, method, tag=b""):
    def cb():
        if not getattr(ctx, "_done_ok", False):
            record(f"cancelled {method} {tag[:40].decode('utf-8', 'replace')}")
    ctx.add_callback(cb)


def unary(req, ctx):
    watch_cancel(ctx, "Unary", req)
    if req.startswith(b"status:"):
        _, code, msg = req.decode("utf-8").split(":", 2)
        ctx.set_trailing_metadata((("x-custom", "kept as sent"), ("x-bin-bin", b"\x00\x01\xfe\xff")))
        ctx._done_ok = True
        ctx.abort(grpc.StatusCode[code], msg)
    if req.startswith(b"sleep:"):
        end = time.monotonic() + int(req[6:]) / 1000
        while time.monotonic() < end and ctx.is_active():
            time.sleep(0.01)
        if not ctx.is_active():
            return b""
    if req == b"deadline":  # what is left of the call's deadline, as the server sees it
        ctx._done_ok = True
        left = ctx.time_remaining()
        return b"none" if left is None else f"{left:.3f}".encode()
    if req == b"pid":
        ctx._done_ok = True
        return str(os.getpid()).encode()
    ctx._done_ok = True
    return req


def server_stream(req, ctx):
    watch_cancel(ctx, "ServerStream", req)
    parts = req.decode().split(":")
    n, size = int(parts[0]), int(parts[1])
    delay = int(parts[2]) / 1000 if len(parts) > 2 else 0
    block = bytes(i % 251 for i in range(size))
    for _ in range(n):
        if not ctx.is_active():
            return
        yield block
        if delay:
            time.sleep(delay)
    ctx._done_ok = True


def client_stream(it, ctx):
    watch_cancel(ctx, "ClientStream")
    total = sum(len(m) for m in it)
    ctx._done_ok = True
    return str(total).encode()


def bidi(it, ctx):
    watch_cancel(ctx, "Bidi")
    for m in it:
        yield m
    ctx._done_ok = True


def health(req, ctx):
    # HealthCheckResponse{status: SERVING (1)}; HEALTH_STATUS=2 answers NOT_SERVING
    return bytes([0x08, int(os.environ.get("HEALTH_STATUS", "1"))])


def main():
    port = os.environ.get("PORT", "50051")
    big = 64 << 20
    opts = [("grpc.max_receive_message_length", big), ("grpc.max_send_message_length", big)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=int(os.environ.get("WORKERS", "128"))),
                         options=opts, maximum_concurrent_rpcs=None)
    echo = grpc.method_handlers_generic_handler("echo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    handlers = [echo]
    if os.environ.get("NO_HEALTH") != "1":
        handlers.append(grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health)}))
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpc-echo listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
