"""The agent's pipelining of framed Thrift calls (runtime-agent/thrift_proxy.c): calls of
one client connection share one connection to the user server, in order; calls of
different clients do not, so a thread-per-connection server (python3-thrift's
TThreadedServer, examples/thrift-calc) still runs slow calls of different clients at
once. A real platform: discovery, worker manager with pods, gateway."""
import os
import sys
import threading
import time

import pytest

from platform_util import ROOT, Platform

sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))

from calc import Client  # noqa: E402
from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

CALC_DIR = os.path.join(ROOT, "examples", "thrift-calc")
SLOW_MS = 600


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thrift-pipe")
    p = Platform(tmp, pool_size=2, thrift=True, gateway_args=("--thrift-default-function", "calcpipe"))
    p.start()
    try:
        path = os.path.join(str(tmp), "calcpipe.yaml")
        with open(path, "w") as f:
            f.write(f"name: calcpipe\ncode: {CALC_DIR}\ncommand: [/usr/bin/python3, calc_server.py, framed, binary]\n"
                    "protocol: thrift\nthrift_services: [CalcPipe]\nthrift_transport: framed\n"
                    "health: {tcp: true}\nmax_instances: 1\n")
        p.ctl("deploy", "-f", path)
        yield p
    finally:
        p.stop()


def framed_client(port):
    s = TSocket.TSocket("127.0.0.1", port)
    s.setTimeout(30000)
    s.open()
    return Client(TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(s))), s


def test_one_clients_pipelined_calls_in_order(plat):
    c, s = framed_client(plat.thrift_port)
    try:
        assert c.call("add", 1, 2) == 3  # cold start
        for _ in range(3):  # bursts: each one goes to the server pipelined on one connection
            seqs = [c.send("add", i, 1) for i in range(100)]
            got = [c.recv("add") for _ in range(100)]
            assert [g[0] for g in got] == seqs
            assert [g[1] for g in got] == [i + 1 for i in range(100)]
        # a slow call at the head: the fast ones behind it come back after it, in order
        seqs = [c.send("sleep", 200)] + [c.send("add", i, i) for i in range(10)]
        got = [c.recv("sleep")] + [c.recv("add") for _ in range(10)]
        assert [g[0] for g in got] == seqs
        assert got[0][1] == 200 and [g[1] for g in got[1:]] == [2 * i for i in range(10)]
    finally:
        s.close()


def test_slow_calls_of_different_clients_run_at_once(plat):
    n = 4
    clients = [framed_client(plat.thrift_port) for _ in range(n)]
    try:
        for c, _ in clients:  # fast pipelined calls first, on every connection
            seqs = [c.send("add", i, i) for i in range(50)]
            assert [c.recv("add")[0] for _ in range(50)] == seqs
        out, errs = [], []

        def slow(c):
            try:
                out.append(c.call("sleep", SLOW_MS))
            except Exception as e:  # noqa: BLE001 (reported below)
                errs.append(e)
        threads = [threading.Thread(target=slow, args=(c,)) for c, _ in clients]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        took = time.monotonic() - t0
        assert not errs and out == [SLOW_MS] * n
        # one after another they take n x SLOW_MS; at once about SLOW_MS (the bound leaves
        # room for a loaded machine yet fails if any two were serialized on one connection)
        assert took < (n - 1) * SLOW_MS / 1000.0, f"{n} slow calls of {n} clients took {took:.2f} s"
    finally:
        for _, s in clients:
            s.close()
