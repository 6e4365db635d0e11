#!/usr/bin/python3
"""Cold starts of Python servers with and without interpreter zygotes, beside the C
server and the floor, in one run (issue 18; `make bench` scenario `pycold`).

One platform of its own (discovery, worker manager with --pool-python, gateway with
its gRPC and Thrift listeners). Every round starts each variant once, in an order
rotated round by round so no variant always follows the same one: wait until the
warm pool is full (generic and zygote pods) and no instance is left, deploy a fresh
copy of the function, time its first call through the gateway (zero instances: a
full cold start from the pool), delete it. The floor launcher (tests/bench/floor.c:
the server exec'd in new namespaces with no platform, polled until it accepts, one
GET) runs in the same rounds for the C server and for `python3 server.py`.

Variants: the C hello-http, and for each Python example present (PY_EXAMPLES) one
copy deployed from its manifest as it is (runtime auto: a zygote pod when the
platform has one) and one with `runtime: exec` (plain exec). The zygote column is
the share of measured starts whose worker manager `event=acquired` line says
zygote=1, so a silent fallback to exec cannot pass as a fast start; phase medians
come from the same lines.

usage: tests/bench/py_coldstart.py [--n 50] [--pool 2] [--pool-python 2] [--floor EXE]
                                   [--json]                       (FAAS_BUILD=<build dir>)
"""
import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import platform_util as pu  # noqa: E402

PHASES = ("total", "code", "specialize", "exec", "ready")


def pct(xs, p):
    """Linear-interpolated percentile (p99 of 50 samples lies between the two largest)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---------------------------------------------------------------- one call per protocol
# Each returns the milliseconds from sending the call to having the whole reply; the
# connection is made before the clock starts where the protocol allows it (gRPC: one
# channel for the run; Thrift: a socket per call, routed by its faas-function header).

def http_call(path):
    def call(p, fn, rid):
        c = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=60)
        try:
            t0 = time.perf_counter()
            c.request("GET", f"/function/{fn}{path}", headers={"x-request-id": rid})
            r = c.getresponse()
            r.read()
            ms = (time.perf_counter() - t0) * 1000
        finally:
            c.close()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
        return ms
    return call


_channels = {}


def grpc_call(method, request):
    def call(p, fn, rid):
        import grpc
        ch = _channels.get(p.grpc_addr)
        if ch is None:
            ch = _channels[p.grpc_addr] = grpc.insecure_channel(p.grpc_addr)
            grpc.channel_ready_future(ch).result(timeout=10)
        stub = ch.unary_unary(method)
        t0 = time.perf_counter()
        stub(request, timeout=60, metadata=(("faas-function", fn), ("x-request-id", rid)))
        return (time.perf_counter() - t0) * 1000
    return call


def thrift_call(method, write_args=None):
    """THeader, binary protocol, routed by the faas-function info header; any reply that
    is not a TApplicationException counts (the user server answered)."""
    def call(p, fn, rid):
        from thrift.protocol.THeaderProtocol import THeaderProtocol
        from thrift.Thrift import TApplicationException, TMessageType, TType
        from thrift.transport import TSocket
        from thrift.transport.THeaderTransport import THeaderClientType
        s = TSocket.TSocket("127.0.0.1", p.thrift_port)
        s.setTimeout(60000)
        s.open()
        try:
            pr = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=0)
            pr.set_header(b"faas-function", fn.encode())
            t0 = time.perf_counter()
            pr.writeMessageBegin(method, TMessageType.CALL, 7)
            pr.writeStructBegin("args")
            if write_args:
                write_args(pr)
            pr.writeFieldStop()
            pr.writeStructEnd()
            pr.writeMessageEnd()
            pr.trans.flush()
            _, mtype, _ = pr.readMessageBegin()
            if mtype == TMessageType.EXCEPTION:
                x = TApplicationException()
                x.read(pr)
                raise RuntimeError(f"Thrift exception: {x.message}")
            pr.skip(TType.STRUCT)
            pr.readMessageEnd()
            return (time.perf_counter() - t0) * 1000
        finally:
            s.close()
    return call


# ---------------------------------------------------------------- the variants

# The Python examples measured: (key, example dir, the first call). One not present
# in this checkout is skipped (listed in the output). Adding a server is one entry.
PY_EXAMPLES = [
    ("stdlib http.server", "examples/hello-py", http_call("/hello")),
    ("grpcio", "examples/hello-py-grpc", grpc_call("/hello.Hello/Greet", b"")),
    ("python3-thrift", "examples/hello-py-thrift", thrift_call("greet")),
]


class Variant:
    def __init__(self, label, short, deploy, call, zygote_expected):
        self.label, self.short, self.deploy, self.call = label, short, deploy, call
        self.zygote_expected = zygote_expected
        self.ms, self.names, self.failed = [], [], []


def manifest_copy(tmp, example, name, runtime):
    """The example's function.yaml under another name, its code: made absolute, with
    runtime: exec when asked (its other keys as they are)."""
    src = os.path.join(ROOT, example)
    keep = [ln for ln in open(os.path.join(src, "function.yaml")).read().splitlines()
            if not re.match(r"(name|code|runtime|idle_timeout)\s*:", ln)]
    extra = [f"name: {name}", f"code: {src}", "idle_timeout: 60m"] + ([f"runtime: {runtime}"] if runtime else [])
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(keep + extra) + "\n")
    return path


def variants(tmp):
    vs = [Variant("C hello-http", "c", lambda p, name: p.deploy_hello(name, "--idle-timeout", "60m"),
                  http_call("/hello"), False)]
    missing = []
    for key, example, call in PY_EXAMPLES:
        if not os.path.isfile(os.path.join(ROOT, example, "function.yaml")):
            missing.append(example)
            continue
        for runtime, how in (("", "zygote"), ("exec", "exec")):
            def deploy(p, name, example=example, runtime=runtime):
                p.ctl("deploy", "-f", manifest_copy(tmp, example, name, runtime))
            short = re.sub(r"[^a-z0-9]+", "", key.split()[0].lower())[:8]
            label = f"python {key} ({os.path.basename(example)}), " + (
                "runtime auto (zygote)" if not runtime else "runtime: exec")
            vs.append(Variant(label, f"py{short}-{how}", deploy, call, not runtime))
    return vs, missing


# ---------------------------------------------------------------- the run

def make_platform(tmp, pool, pool_python):
    """The platform with pool_python zygote pods when its worker manager has --pool-python
    (issue 18); without it every Python start is a plain exec. Returns (platform, zygotes)."""
    d = os.path.join(tmp, "pyplat")
    os.makedirs(d, exist_ok=True)
    wm_help = subprocess.run([f"{pu.BUILD}/faas-workermgr", "--help"], capture_output=True, text=True)
    if "--pool-python" not in wm_help.stdout + wm_help.stderr:
        return pu.Platform(d, pool_size=pool, grpc=True, thrift=True), False
    try:
        return pu.Platform(d, pool_size=pool, pool_python=pool_python, grpc=True, thrift=True), True
    except TypeError:  # a platform_util without the keyword: the flag itself
        return pu.Platform(d, pool_size=pool, grpc=True, thrift=True,
                           wm_args=("--pool-python", str(pool_python))), True


def pool_full(p, pool, pool_python):
    """The warm pool holds its pods of each kind and no instance is left: the next start
    is served from a warm pod of the kind it wants, and no previous instance competes
    for CPU."""
    try:
        if p.wm_metric("faas_wm_instances") != 0:
            return False
        if pool_python:
            return (p.wm_metric('faas_wm_pods_warm{kind="generic"}') >= pool
                    and p.wm_metric('faas_wm_pods_warm{kind="python"}') >= pool_python)
        return p.wm_metric("faas_wm_pool_ready") >= pool
    except KeyError:
        return False


def floor_once(exe, argv):
    out = subprocess.run([exe, "1", "/hello", *argv], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"floor launcher: {out.stderr.strip()}")
    return float(out.stdout.split()[0]) / 1000.0


def acquired(p):
    """fn -> logfmt fields of the worker manager's event=acquired line."""
    out = {}
    with open(p.wm.log_path, errors="replace") as f:  # all of it: Daemon.log() is its tail
        for line in f:
            if "event=acquired " in line:
                kv = dict(t.split("=", 1) for t in line.split() if "=" in t)
                out[kv.get("fn")] = kv
    return out


def run(n=50, pool=2, pool_python=2, floor_exe="", tmp=None, warmup=2, log=print):
    """Returns {"rows": [...], "floors": {...}, "markdown": str, ...}."""
    own_tmp = tmp is None
    tmp = tmp or tempfile.mkdtemp(prefix="faas-pycold-")
    mdir = os.path.join(tmp, "pycold-manifests")
    os.makedirs(mdir, exist_ok=True)
    vs, missing = variants(mdir)
    p, zygotes = make_platform(tmp, pool, pool_python)
    zpool = pool_python if zygotes else 0
    floors = {}
    if floor_exe:
        floors = {"floor: C hello (clone+exec+poll+GET, tests/bench/floor.c)":
                  [f"{ROOT}/examples/hello-http/hello"],
                  "floor: python3 hello-py/server.py (same launcher)":
                  ["/usr/bin/python3", f"{ROOT}/examples/hello-py/server.py"]}
    fms = {k: [] for k in floors}
    p.start()
    try:
        t0 = time.monotonic()
        for r in range(-warmup, n):  # unmeasured rounds first: code cache, page cache
            k = r % len(vs)
            for v in vs[k:] + vs[:k]:  # rotated: no variant always follows the same one
                pu.wait_until(lambda: pool_full(p, pool, zpool), 30, what="warm pool full, no instance left")
                name = f"{v.short}-{r + warmup}"
                v.deploy(p, name)
                try:
                    ms = v.call(p, name, f"pc{r + warmup}{v.short.replace('-', '')}")
                except Exception as e:  # noqa: BLE001 - any failure of the first call is a failed start
                    if r < 0:
                        raise RuntimeError(f"{v.label}: first call failed: {e}\n{p.logs()}")
                    v.failed.append(str(e)[:200])
                    ms = None
                p.ctl("delete", name)
                if r >= 0 and ms is not None:
                    v.ms.append(ms)
                    v.names.append(name)
            if r >= 0:
                for key, argv in floors.items():
                    fms[key].append(floor_once(floor_exe, argv))
            if r >= 0 and (r + 1) % 10 == 0:
                log(f"  pycold: {r + 1}/{n} rounds, {time.monotonic() - t0:.0f} s")
        acq = acquired(p)
    finally:
        p.stop()
        for ch in _channels.values():
            ch.close()
        _channels.clear()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return summarize(vs, acq, fms, missing, zygotes, n, pool, pool_python)


def summarize(vs, acq, fms, missing, zygotes, n, pool, pool_python):
    c50 = pct(vs[0].ms, 50)
    rows = []
    for v in vs:
        lines = [acq[nm] for nm in v.names if nm in acq]
        z = [ln.get("zygote") for ln in lines]
        ph = {}
        for k in PHASES:
            xs = [float(ln[f"{k}_us"]) / 1000 for ln in lines if f"{k}_us" in ln]
            ph[k] = pct(xs, 50)
        # what the worker manager does not see: dispatch, the Acquire rpc, the first proxied call
        ph["outside"] = pct([ms - float(acq[nm]["total_us"]) / 1000 for ms, nm in zip(v.ms, v.names)
                             if "total_us" in acq.get(nm, {})], 50)
        rows.append({"variant": v.label, "n": len(v.ms), "failed": len(v.failed), "fail_msgs": v.failed[:3],
                     "zygote_n": sum(1 for x in z if x == "1"), "zygote_known": any(x is not None for x in z),
                     "p50": pct(v.ms, 50), "p99": pct(v.ms, 99), "max": max(v.ms) if v.ms else float("nan"),
                     "ratio": pct(v.ms, 50) / c50 if c50 else float("nan"), "phases": ph,
                     "zygote_expected": v.zygote_expected})
    floors = {k: {"n": len(xs), "p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs) if xs else float("nan"),
                  "ratio": pct(xs, 50) / c50 if c50 else float("nan")} for k, xs in fms.items()}
    res = {"n": n, "pool": pool, "pool_python": pool_python if zygotes else 0, "zygote_pool": zygotes,
           "rows": rows, "floors": floors, "missing": missing}
    res["markdown"] = markdown(res)
    return res


def markdown(res):
    out = [f"#### Cold start from the warm pool: C, Python with and without zygotes, and the floor "
           f"(n={res['n']} each, interleaved; pool {res['pool']} generic + {res['pool_python']} zygote pods)", "",
           "| variant | n | zygote | p50 ms | p99 ms | max ms | p50 / C p50 | WM total | specialize | exec | ready "
           "| outside WM |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        z = f"{r['zygote_n']}/{r['n']}" if r["zygote_known"] else "- (no zygote field)"
        if r["failed"]:
            z += f", {r['failed']} failed"
        ph = r["phases"]
        out.append(f"| {r['variant']} | {r['n']} | {z} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | "
                   f"{r['ratio']:.2f} | " + " | ".join(f"{ph[k]:.2f}" for k in PHASES[:1] + PHASES[2:] + ("outside",)) + " |")
    for k, f in res["floors"].items():
        out.append(f"| {k} | {f['n']} | - | {f['p50']:.2f} | {f['p99']:.2f} | {f['max']:.2f} | {f['ratio']:.2f} "
                   "| | | | | |")
    out += ["", "Client time: request sent -> whole reply read, through the gateway (gRPC on one open channel, "
            "Thrift on a socket opened before the clock starts). zygote: starts whose worker manager "
            "event=acquired line says zygote=1. Phase columns: medians (ms) of the same lines' "
            "total_us, specialize_us, exec_us, ready_us; outside WM: median of client time - WM total (dispatch, "
            "Acquire rpc, the first proxied call). p99 is interpolated (with 50 starts it lies between the two largest)."]
    if res["missing"]:
        out.append("Not measured (example absent in this checkout): " + ", ".join(res["missing"]) + ".")
    if not res["zygote_pool"]:
        out.append("This platform has no --pool-python: every Python start is a plain exec.")
    return "\n".join(out) + "\n"


def build_floor(tmp):
    exe = os.path.join(tmp, "floor")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "floor.c")], check=True)
    return exe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50, help="measured starts per variant")
    ap.add_argument("--pool", type=int, default=2, help="generic warm pods")
    ap.add_argument("--pool-python", type=int, default=2, help="zygote warm pods")
    ap.add_argument("--floor", default="", help="the compiled tests/bench/floor.c (else built here)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the figures")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="faas-pycold-")
    try:
        res = run(a.n, a.pool, a.pool_python, a.floor or build_floor(tmp), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(res["markdown"])
    if a.json:
        print(json.dumps({k: v for k, v in res.items() if k != "markdown"}))


if __name__ == "__main__":
    main()
