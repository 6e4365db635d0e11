#!/usr/bin/python3
"""Discovery propagation: instance registered (Heartbeat sent) -> seen by N watchers.

    discprop.py ADDR [--watchers 10] [--rounds 200] [--interval-ms 10]

Starts N watcher processes (separate processes, so no GIL serialises them), each
with one /faas.Discovery/Watch stream (instances only). Once all have seen
SNAPSHOT_END, sends `rounds` Heartbeats from a fake worker whose instance set
changes each time (instance prop-K replaces prop-K-1), timestamping each send
with CLOCK_MONOTONIC; each watcher timestamps every INSTANCE_PUT it receives.
Prints one JSON object: {"samples_us": [...], "lost": n}. The figures include
the python grpc client's own receive path (a C client would see a little less).
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import discpb  # noqa: E402

WORKER = "bench-prop-worker"


def channel(addr):
    """The control plane wants the platform token (FAAS_TOKEN) on every call."""
    from platform_util import authed_channel
    return authed_channel(addr, os.environ["FAAS_TOKEN"])


def watcher(addr):
    ch = channel(addr)
    stream = ch.unary_stream("/faas.Discovery/Watch")(discpb.encode("WatchRequest", {"instances": True}))
    out = sys.stdout
    for raw in stream:
        t = time.monotonic_ns()
        ev = discpb.decode("WatchEvent", raw)
        if ev["type"] == discpb.SNAPSHOT_END:
            out.write("ready\n")
            out.flush()
        elif ev["type"] == discpb.INSTANCE_PUT and ev["instance"]["id"].startswith("prop-"):
            out.write(f"{ev['instance']['id']} {t}\n")
            out.flush()


def lease(k, ttl_ms=10000):
    inst = [] if k is None else [{"id": f"prop-{k}", "function": "bench-prop", "version": 1,
                                  "endpoint": "127.0.0.1:1", "state": discpb.READY}]
    return discpb.encode("LeaseRenewal", {"worker": {"id": WORKER, "address": "127.0.0.1:1"},
                                          "instances": inst, "ttl_ms": ttl_ms})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--watchers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=10)
    ap.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.watch:
        return watcher(a.addr)

    import grpc
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), a.addr, "--watch"],
                              stdout=subprocess.PIPE, text=True) for _ in range(a.watchers)]
    try:
        for p in procs:  # bounded: a watcher that never gets its snapshot fails the harness
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"discprop: watcher did not start ({line!r})")
        ch = channel(a.addr)
        hb = ch.unary_unary("/faas.Discovery/Heartbeat")
        hb(lease(None), timeout=5)  # the worker exists before the first measured round
        sent = {}
        for k in range(a.rounds):
            req = lease(k)
            t = time.monotonic_ns()
            hb(req, timeout=5)
            sent[f"prop-{k}"] = t
            time.sleep(a.interval_ms / 1000.0)
        hb(lease(None, ttl_ms=1), timeout=5)
        time.sleep(0.2)
    finally:
        for p in procs:
            p.kill()
    samples, seen = [], 0
    for p in procs:
        out, _ = p.communicate(timeout=10)
        for line in out.splitlines():
            iid, _, t = line.partition(" ")
            if iid in sent:
                samples.append((int(t) - sent[iid]) / 1000.0)
                seen += 1
    print(json.dumps({"samples_us": samples, "lost": a.rounds * a.watchers - seen}))


if __name__ == "__main__":
    main()
