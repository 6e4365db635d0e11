#!/usr/bin/python3
"""Cold-start and warm-latency figures for hello-http (issue 2).

Starts discovery, a worker manager (warm pool) and the gateway on free loopback
ports, deploys N copies of hello-http and calls each once: every first call
arrives with zero instances, so its latency is a full cold start (dispatch ->
Acquire -> specialize -> exec -> readiness -> response). Then measures warm
requests through the platform against the same kind of user server called
directly, with wrk at concurrency 1.

With --floor, the floor (tests/bench/floor.c: the same hello started by a minimal
launcher in new PID+mount+IPC+UTS namespaces, polled until it accepts, one request)
runs once after every cold start, interleaved, so both see the same machine load.
The per-phase medians come from the worker manager's `event=acquired` and the
gateway's `event=cold_start` log lines.

usage: tests/bench/coldstart.py [--n 60] [--floor] [--no-warm] [--json]   (FAAS_BUILD=<build dir>)
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import platform_util as pu  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(port, path, request_id=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("GET", path, headers={"x-request-id": request_id} if request_id else {})
    r = c.getresponse()
    r.read()
    dt = time.perf_counter() - t0
    c.close()
    return r.status, dt


def wrk_latency(url, seconds):
    """wrk -c1: returns (p50_us, p99_us, rps)."""
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", url], capture_output=True,
                         text=True, check=True).stdout

    def us(tok):
        m = re.match(r"([\d.]+)(us|ms|s)", tok)
        v, u = float(m.group(1)), m.group(2)
        return v * {"us": 1, "ms": 1e3, "s": 1e6}[u]

    p50 = us(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = us(re.search(r"99%\s+(\S+)", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return p50, p99, rps


def build_floor(tmp):
    exe = os.path.join(tmp, "floor")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")],
                   check=True)
    return exe


def floor_once(exe):
    out = subprocess.run([exe, "1", "/hello", f"{pu.ROOT}/examples/hello-http/hello"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0]) / 1000.0


def phases(p, rids):
    """Median per phase (ms) of the cold starts whose request ids are in rids."""
    wm, gw = {}, {}
    for line in p.wm.log().splitlines():
        m = re.search(r"event=acquired .*request_id=(\w+) total_us=(\d+) queue_us=(\d+) code_us=(\d+) "
                      r"specialize_us=(\d+) exec_us=(\d+) ready_us=(\d+)", line)
        if m:
            wm[m.group(1)] = [int(x) / 1000.0 for x in m.groups()[1:]]
    for line in p.gateway.log().splitlines():
        m = re.search(r"event=cold_start request_id=(\w+) .*ms=(\d+)", line)
        if m:
            gw[m.group(1)] = float(m.group(2))
    names = ["wm_total", "queue", "code", "specialize", "exec", "ready"]
    rows = [wm[r] for r in rids if r in wm]
    out = {n: statistics.median(r[k] for r in rows) for k, n in enumerate(names)} if rows else {}
    acq = [gw[r] for r in rids if r in gw]
    if acq:
        out["gw_acquire_ms_int"] = statistics.median(acq)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--floor", action="store_true", help="interleave the floor launcher (tests/bench/floor.c)")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-latency part")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the figures")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="faas-bench-")
    floor_exe = build_floor(tmp) if a.floor else None
    p = pu.Platform(tmp, pool_size=a.pool).start()
    direct = None
    try:
        lat, flo, rids = [], [], []
        for i in range(a.n):
            name = f"cold-{i}"
            p.deploy_hello(name, "--idle-timeout", "2s")
            # let the pool refill: a cold start from a warm pool is what we measure
            time.sleep(0.05)
            rid = f"bench{i:04d}"
            status, dt = one_request(p.http_port, f"/function/{name}/hello", rid)
            if status != 200:
                raise SystemExit(f"cold start {i} failed: {status}\n{p.logs()}")
            lat.append(dt * 1000)
            rids.append(rid)
            if floor_exe:
                flo.append(floor_once(floor_exe))
        print(f"cold start (zero instances -> response complete), n={a.n}, pool={a.pool}:")
        print(f"  p50 {pct(lat, 50):.2f} ms  p90 {pct(lat, 90):.2f} ms  p99 {pct(lat, 99):.2f} ms  "
              f"max {max(lat):.2f} ms  mean {statistics.mean(lat):.2f} ms")
        res = {"n": a.n, "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": max(lat)}
        if flo:
            print(f"floor (same hello, minimal launcher, interleaved), n={len(flo)}:")
            print(f"  p50 {pct(flo, 50):.2f} ms  p90 {pct(flo, 90):.2f} ms  p99 {pct(flo, 99):.2f} ms  "
                  f"max {max(flo):.2f} ms   cold p50 - floor p50 = {pct(lat, 50) - pct(flo, 50):.2f} ms")
            res.update(floor_p50=pct(flo, 50), floor_p90=pct(flo, 90), floor_p99=pct(flo, 99))
        ph = phases(p, rids)
        if ph:
            print("  phase medians (ms): " + "  ".join(f"{k} {v:.2f}" for k, v in ph.items()))
            res["phases"] = ph
        if a.json:
            print(json.dumps(res))
        if a.no_warm:
            return

        # warm: the same function through the platform vs the same binary direct
        port = pu.free_port()
        env = dict(os.environ, PORT=str(port))
        direct = subprocess.Popen([f"{pu.ROOT}/examples/hello-http/hello"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        pu.wait_until(lambda: pu.port_open(port), 5, what="direct hello")
        p.deploy_hello("warm", "--idle-timeout", "10m")
        one_request(p.http_port, "/function/warm/hello")
        d50, d99, drps = wrk_latency(f"http://127.0.0.1:{port}/hello", a.seconds)
        w50, w99, wrps = wrk_latency(f"http://127.0.0.1:{p.http_port}/function/warm/hello", a.seconds)
        print("warm GET /hello, wrk -c1 keep-alive:")
        print(f"  direct   p50 {d50:.0f} us  p99 {d99:.0f} us  {drps:.0f} req/s")
        print(f"  platform p50 {w50:.0f} us  p99 {w99:.0f} us  {wrps:.0f} req/s  (added p50 {w50 - d50:.0f} us)")
    finally:
        if direct:
            direct.kill()
        p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
