#!/usr/bin/python3
"""Cold-start and warm-latency figures for hello-http (issue 2).

Starts discovery, a worker manager (warm pool) and the gateway on free loopback
ports, deploys N copies of hello-http and calls each once: every first call
arrives with zero instances, so its latency is a full cold start (dispatch ->
Acquire -> specialize -> exec -> readiness -> response). Then measures warm
requests through the platform against the same kind of user server called
directly, with wrk at concurrency 1.

usage: tests/bench/coldstart.py [--n 60] [--build build]
"""
import argparse
import http.client
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


def one_request(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("GET", path)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="faas-bench-")
    p = pu.Platform(tmp, pool_size=a.pool).start()
    direct = None
    try:
        lat = []
        for i in range(a.n):
            name = f"cold-{i}"
            p.deploy_hello(name, "--idle-timeout", "2s")
            # let the pool refill: a cold start from a warm pool is what we measure
            time.sleep(0.05)
            status, dt = one_request(p.http_port, f"/function/{name}/hello")
            if status != 200:
                raise SystemExit(f"cold start {i} failed: {status}\n{p.logs()}")
            lat.append(dt * 1000)
        print(f"cold start (zero instances -> response complete), n={a.n}, pool={a.pool}:")
        print(f"  p50 {pct(lat, 50):.2f} ms  p90 {pct(lat, 90):.2f} ms  p99 {pct(lat, 99):.2f} ms  "
              f"max {max(lat):.2f} ms  mean {statistics.mean(lat):.2f} ms")

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
