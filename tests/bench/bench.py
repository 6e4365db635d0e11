#!/usr/bin/python3
"""The benchmark harness of issue 3 (run by tests/bench/run.sh, i.e. `make bench`).

Starts on loopback, in a temp dir, on free ports: one user server
(examples/hello-http/hello, started directly), nginx in front of it, and the
platform (discovery, worker manager, gateway) with hello-http deployed and warm.
Every scenario runs the three paths interleaved (direct, platform, nginx) and
prints one markdown table; see docs/performance.md for how to read it.

usage: bench.py --build DIR [--seconds 5] [--warmup 1] [--cold 100] [--conns 10000]
                [--only SCEN,...] [--profile DIR] [--out FILE]
"""
import argparse
import datetime
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import scale_bench  # noqa: E402  (the step-load rows, a file of their own)
import coldnet_bench  # noqa: E402  (cold start with and without the pod's network namespace)
import tasks_bench  # noqa: E402  (the async-task rows, a file of their own)
import py_coldstart  # noqa: E402  (Python cold starts with and without zygotes, issue 18)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCS = (1, 16, 128)


class HarnessError(Exception):
    """The harness itself broke (as opposed to a bar not being met)."""


# ---------------------------------------------------------------- small helpers

def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    st = read(f"/proc/{pid}/stat")
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    m = re.search(r"VmRSS:\s+(\d+) kB", read(f"/proc/{pid}/status"))
    return int(m.group(1)) if m else 0


def pss_kib(pid):
    try:
        m = re.search(r"^Pss:\s+(\d+) kB", read(f"/proc/{pid}/smaps_rollup"), re.M)
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = read(f"/proc/{d}/stat")
            except OSError:
                continue
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


def machine():
    model = "?"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cores": os.cpu_count(), "kernel": os.uname().release, "cpu": model,
            "load": read("/proc/loadavg").split()[:3]}


def commit():
    p = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "gateway", "dispatcher",
                            "runtime-agent", "worker-manager", "discovery", "common"]).returncode
    return (p.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


# ---------------------------------------------------------------- load generators

def _us(tok):
    m = re.match(r"([\d.]+)(us|ms|s)$", tok)
    if not m:
        raise HarnessError(f"unparsable latency {tok!r}")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


# appended to the wrk script: 1000 evenly spaced quantiles of this run's latency, so
# runs split into interleaved rounds can be merged into one distribution
WRK_DONE = """
done = function(summary, latency, requests)
  local f = io.open(os.getenv("BENCH_WRK_QUANTILES"), "w")
  for i = 0, 999 do f:write(latency:percentile((i + 0.5) / 10), "\\n") end
  f:close()
end
"""


def wrk(url, conc, seconds, script=None, tmp=None):
    """wrk keep-alive run: {rps, p50, p99 (us), requests, secs, errors, q (1000 quantiles, us)}."""
    argv = ["wrk", f"-t{min(conc, 2)}", f"-c{conc}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    env = None
    qfile = None
    if tmp:
        lua = os.path.join(tmp, "wrk-" + (os.path.basename(script) if script else "get.lua"))
        with open(lua, "w") as f:
            f.write((read(script) if script else "") + WRK_DONE)
        qfile = os.path.join(tmp, "wrk-quantiles.txt")
        env = dict(os.environ, BENCH_WRK_QUANTILES=qfile)
        argv += ["-s", lua]
    elif script:
        argv += ["-s", script]
    p = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30, env=env)
    out = p.stdout
    try:
        m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
        r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
             "p50": _us(re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", out, re.M).group(1)),
             "p99": _us(re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", out, re.M).group(1)),
             "requests": int(m.group(1)),
             "secs": float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m.group(3)]}
        if qfile:
            r["q"] = [float(x) for x in read(qfile).split()]
            os.unlink(qfile)
            if len(r["q"]) != 1000:
                raise ValueError(f"{len(r['q'])} quantiles")
    except (AttributeError, ValueError, OSError) as e:
        raise HarnessError(f"wrk output not understood ({e}): {' '.join(argv)} {url}\n{out}\n{p.stderr}")
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs += sum(int(x) for x in m.groups()) if m else 0
    r["errors"] = errs
    return r


def h2load(url, conc, seconds, tmp, h1=False, extra=()):
    """h2load run: concurrency = clients x streams per client (1x1, 4x4, 8x16).
    Percentiles come from --log-file (h2load's own table has no p50/p99)."""
    clients, streams = {1: (1, 1), 16: (4, 4), 128: (8, 16)}.get(conc, (conc, 1))
    log = os.path.join(tmp, "h2load.log")
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(seconds), "-t", str(min(clients, 2)),
            f"--log-file={log}"]
    if h1:
        argv.append("--h1")
    argv += list(extra)
    p = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30)
    out = p.stdout
    try:
        m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
        rps = float(m.group(3))
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", out)
        done, ok = int(m.group(3)), int(m.group(4))
        m = re.search(r"status codes: (\d+) 2xx", out)
        ok2xx = int(m.group(1)) if m else ok
    except AttributeError:
        raise HarnessError(f"h2load output not understood: {' '.join(argv)} {url}\n{out}\n{p.stderr}")
    lat = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].startswith("2"):
                    lat.append(float(parts[2]))
        os.unlink(log)
    except OSError:
        pass
    if not lat:
        raise HarnessError(f"h2load recorded no successful request: {' '.join(argv)} {url}\n{out}\n{p.stderr}")
    secs = done / rps if rps else float(seconds)
    return {"rps": rps, "p50": pct(lat, 50), "p99": pct(lat, 99), "requests": done, "secs": secs,
            "errors": done - min(ok, ok2xx), "lat": lat}


def merge(runs):
    """One figure from interleaved rounds: req/s over their summed time, percentiles of the
    pooled latencies (wrk: each round's 1000 quantiles weighted by its requests)."""
    req = sum(r["requests"] for r in runs)
    secs = sum(r["secs"] for r in runs)
    pts = []
    for r in runs:
        if "lat" in r:
            pts += [(x, 1.0) for x in r["lat"]]
        else:
            pts += [(x, r["requests"] / 1000.0) for x in r["q"]]
    pts.sort()
    total = sum(w for _, w in pts)

    def wpct(p):
        acc, goal = 0.0, total * p / 100.0
        for x, w in pts:
            acc += w
            if acc >= goal:
                return x
        return pts[-1][0] if pts else float("nan")

    return {"rps": req / secs if secs else 0.0, "p50": wpct(50), "p99": wpct(99), "requests": req, "secs": secs,
            "errors": sum(r["errors"] for r in runs), "rounds": len(runs)}


# ---------------------------------------------------------------- the set-up

NGINX_CONF = """worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 1000000;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{h1};
        listen 127.0.0.1:{h2} http2;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Setup:
    def __init__(self, build, tmp, wm_args=(), gw_threads=1):
        self.build, self.tmp, self.wm_args = build, tmp, tuple(wm_args)
        self.gw_threads = gw_threads  # faas-gateway --threads: what the platform runs with now
        os.environ["FAAS_BUILD"] = build
        sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
        import platform_util as pu
        self.pu = pu
        self.procs = []
        self.platform = None

    def _popen(self, name, argv, env=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        return p

    def _wait_port(self, p, port, what):
        def up():
            if p.poll() is not None:
                raise HarnessError(f"{what} exited with {p.returncode}: "
                                   f"{read(os.path.join(self.tmp, what + '.log'))[-2000:]}")
            return self.pu.port_open(port)
        try:
            self.pu.wait_until(up, 15, what=what)
        except TimeoutError as e:
            raise HarnessError(str(e))

    def start(self):
        pu = self.pu
        # the user server, started once, directly
        self.hello_port = pu.free_port()
        self.hello = self._popen("hello-direct", [f"{ROOT}/examples/hello-http/hello"],
                                 env=dict(os.environ, PORT=str(self.hello_port)))
        self._wait_port(self.hello, self.hello_port, "hello-direct")
        # nginx in front of it
        self.ngx_h1, self.ngx_h2 = pu.free_port(), pu.free_port()
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=self.tmp, upstream=self.hello_port, h1=self.ngx_h1, h2=self.ngx_h2))
        self.nginx = self._popen("nginx", ["nginx", "-p", self.tmp, "-c", conf, "-e",
                                           os.path.join(self.tmp, "nginx-error.log")])
        self._wait_port(self.nginx, self.ngx_h1, "nginx")
        self.nginx_worker = pu.wait_until(lambda: children(self.nginx.pid), 5, what="nginx worker")[0]
        # the platform; the gateway may hold 10,000 idle connections
        # the gateway's Thrift listener on a free port (its default is a fixed one)
        self.thrift_port = pu.free_port()
        targs = ("--thrift-listen", f"127.0.0.1:{self.thrift_port}", "--threads", str(self.gw_threads))
        wargs = self.wm_args  # e.g. --no-pod-netns, to measure what an isolation costs
        try:  # the gateway's gRPC listener, where platform_util knows it
            self.platform = pu.Platform(os.path.join(self.tmp, "platform"), pool_size=2, grpc=True,
                                        gateway_args=targs, wm_args=wargs)
        except TypeError:
            self.platform = pu.Platform(os.path.join(self.tmp, "platform"), pool_size=2, gateway_args=targs,
                                        wm_args=wargs)
        os.makedirs(self.platform.dir, exist_ok=True)
        # (as high as our own hard limit: this container may not raise it)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        self.platform.gateway.argv = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] + self.platform.gateway.argv
        self.platform.start()
        self.platform.deploy_hello("bench", "--idle-timeout", "60m")
        st, body, err = pu.curl(self.platform.url("bench", "/hello"))
        if st != 200:
            raise HarnessError(f"platform warm-up request: {st} {body} {err}\n{self.platform.logs()}")
        self.gw_pid = self.platform.gateway.proc.pid
        # the worker manager registers the instance with its next (immediate) heartbeat
        try:
            inst = pu.wait_until(lambda: [i for i in self.instances("bench") if i["pid"]], 10,
                                 what="the warm instance of bench in discovery")
        except TimeoutError as e:
            raise HarnessError(str(e))
        if len(inst) != 1:
            raise HarnessError(f"expected one warm instance of bench, got {inst}")
        self.agent_pid = inst[0]["pid"]
        kids = children(self.agent_pid)
        if not kids:
            raise HarnessError("the warm agent has no user server child")
        self.pod_hello_pid = kids[0]
        return self

    def restart_gateway(self, threads, force=False):
        """Restarts the gateway with --threads N (same ports; the warm pods stay): the thread rows of one
        run. Returns the loop count the gateway reports using (a gateway without multi-thread support
        warns event=threads_unsupported and runs one)."""
        if threads != self.gw_threads or force:
            g = self.platform.gateway
            i = g.argv.index("--threads")
            g.argv[i + 1] = str(threads)
            g.stop()
            mark = os.path.getsize(g.log_path)
            g.start()
            self.pu.wait_until(lambda: self.pu.port_open(self.thrift_port), 10, what="gateway Thrift listener")
            self.gw_threads, self.gw_pid, self.gw_log_mark = threads, g.proc.pid, mark
            st, body, err = self.pu.curl(self.platform.url("bench", "/hello"))
            if st != 200:
                raise HarnessError(f"warm-up after the gateway restart: {st} {body} {err}\n{self.platform.logs()}")
        return self.gw_loops()

    def gw_loops(self):
        log = read(self.platform.gateway.log_path)[getattr(self, "gw_log_mark", 0):]
        m = re.search(r"event=threads_unsupported requested=\d+ using=(\d+)", log)
        return int(m.group(1)) if m else self.gw_threads

    def instances(self, fn):
        sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
        import discpb
        raw = self.platform.rpc(self.platform.discovery_addr, "/faas.Discovery/ListInstances",
                                discpb.encode("FunctionName", {"name": fn}))
        return discpb.decode("InstanceList", raw)["instances"]

    def urls(self, path, h2=False):
        return {"direct": f"http://127.0.0.1:{self.hello_port}{path}",
                "platform": self.platform.url("bench", path),
                "nginx": f"http://127.0.0.1:{self.ngx_h2 if h2 else self.ngx_h1}{path}"}

    def stop(self):
        if self.platform:
            try:
                self.platform.stop()
            except Exception as e:  # keep stopping the rest
                print(f"bench: stopping the platform: {e}", file=sys.stderr)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)


# ---------------------------------------------------------------- scenarios

PATHS = ("direct", "platform", "nginx")


def order(i):
    """Rotates the path order between runs so no path always runs first."""
    return PATHS[i % 3:] + PATHS[:i % 3]


HTTP_KINDS = (("GET", "/hello", None), ("POST 4K", "/echo", os.path.join(HERE, "post4k.lua")))


def _http_pids(s):
    return {"gateway": s.gw_pid, "agent": s.agent_pid, "user server (pod)": s.pod_hello_pid,
            "user server (direct)": s.hello.pid, "nginx worker": s.nginx_worker}


def _http_row(s, a, path, script, c, i):
    """One wrk row: the three paths interleaved over a.rounds, CPU of every process per path."""
    pids, urls = _http_pids(s), s.urls(path)
    runs = {p: [] for p in PATHS}
    cpu = {p: {k: 0.0 for k in pids} for p in PATHS}
    for p in order(i):
        wrk(urls[p], c, a.warmup, script)
    for r in range(a.rounds):  # interleaved: direct, platform, nginx, then again, rotated
        for p in order(i):
            before = {k: cpu_seconds(v) for k, v in pids.items()}
            runs[p].append(wrk(urls[p], c, a.round_secs, script, tmp=s.tmp))
            after = {k: cpu_seconds(v) for k, v in pids.items()}
            for k in pids:
                cpu[p][k] += after[k] - before[k]
            i += 1
    return {p: dict(merge(runs[p]), cpu=cpu[p]) for p in PATHS}, i


def scen_http(s, a, res):
    """1. HTTP/1.1 keep-alive GET /hello and 4 KiB POST /echo (wrk); CPU per request at c16 (7); then c16
    again with the gateway at each of --gw-threads (issue 17), gateway CPU per request for each."""
    i = 0
    for kind, path, script in HTTP_KINDS:
        for c in CONCS:
            row, i = _http_row(s, a, path, script, c, i)
            res["http1"][f"{kind}|{c}"] = row
            print(f"  http/1.1 {kind} c{c}: " + ", ".join(f"{p} {row[p]['rps']:.0f}/s" for p in PATHS),
                  file=sys.stderr, flush=True)
    res["http1_threads"] = {}
    for t in a.gw_threads:
        try:
            loops = s.restart_gateway(t)
            for kind, path, script in HTTP_KINDS:
                row = res["http1"].get(f"{kind}|16") if t == a.gw_threads[0] else None
                if row is None:  # the rows above ran at the first count: only the others run again
                    row, i = _http_row(s, a, path, script, 16, i)
                res["http1_threads"][f"{kind}|{t}"] = dict(row, loops=loops)
                pl = row["platform"]
                print(f"  http/1.1 {kind} c16, gateway --threads {t} ({loops} loop(s)): platform {pl['rps']:.0f}/s, "
                      f"gateway {pl['cpu']['gateway'] / max(pl['requests'], 1) * 1e6:.1f} us CPU/request",
                      file=sys.stderr, flush=True)
        except HarnessError as e:
            rc = s.platform.gateway.proc.poll()
            if rc is None:
                raise  # the harness broke, not the gateway
            # a gateway that died at this count is a finding: its row says so and the run goes on
            tail = [ln for ln in read(s.platform.gateway.log_path).splitlines() if ln.strip()][-1:]
            res["http1_threads"][f"GET|{t}"] = {"failed": f"gateway exited ({rc}): {' '.join(tail)[:200]}"}
            print(f"  http/1.1 c16, gateway --threads {t}: gateway exited ({rc}): {e}", file=sys.stderr, flush=True)
            s.restart_gateway(a.gw_threads[0], force=True)
    s.restart_gateway(a.gw_threads[0])  # the other scenarios run at the first count


def scen_h2(s, a, res):
    """2. h2c client (h2load); the user server speaks HTTP/1.1, so direct is h2load --h1."""
    urls = s.urls("/hello", h2=True)
    i = 0
    for c in CONCS:
        runs = {p: [] for p in PATHS}
        for p in order(i):
            h2load(urls[p], c, a.warmup, s.tmp, h1=(p == "direct"))
        for r in range(a.rounds):
            for p in order(i):
                runs[p].append(h2load(urls[p], c, a.round_secs, s.tmp, h1=(p == "direct")))
                i += 1
        res["h2"][str(c)] = {p: merge(runs[p]) for p in PATHS}
        row = res["h2"][str(c)]
        print(f"  h2c c{c}: " + ", ".join(f"{p} {row[p]['rps']:.0f}/s" for p in PATHS), file=sys.stderr,
              flush=True)


NGINX_GRPC_CONF = """worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx-grpc.pid;
error_log {tmp}/nginx-grpc-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream grpcapp {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{ grpc_pass grpc://grpcapp; }}
    }}
}}
"""


def scen_grpc(s, a, res):
    """3a. gRPC unary /echo.Echo/Unary (examples/grpc-echo, python3-grpcio), 16-byte message:
    h2load with gRPC framing and te: trailers; direct, platform (gateway gRPC port), nginx grpc_pass."""
    p, pu = s.platform, s.pu
    if not getattr(p, "grpc_port", None):
        return None  # no gRPC listener in this platform: the row stays n/a
    gport = pu.free_port()
    srv = s._popen("grpc-echo-direct", ["/usr/bin/python3", f"{ROOT}/examples/grpc-echo/server.py"],
                   env=dict(os.environ, PORT=str(gport)))
    s._wait_port(srv, gport, "grpc-echo-direct")
    nport = pu.free_port()
    conf = os.path.join(s.tmp, "nginx-grpc.conf")
    with open(conf, "w") as f:
        f.write(NGINX_GRPC_CONF.format(tmp=s.tmp, upstream=gport, port=nport))
    ngx = s._popen("nginx-grpc", ["nginx", "-p", s.tmp, "-c", conf, "-e", os.path.join(s.tmp, "nginx-grpc-error.log")])
    s._wait_port(ngx, nport, "nginx-grpc")
    p.ctl("deploy", "-f", f"{ROOT}/examples/grpc-echo/function.yaml", "--memory", "1Gi", "--pids", "1024",
          "--idle-timeout", "60m")
    try:  # the gateway routes once its watch has the function: retry the first call
        pu.wait_until(lambda: p.rpc(p.grpc_addr, "/echo.Echo/Unary", b"warm", timeout=10) == b"warm", 30,
                      interval=0.2, what="grpc-echo through the platform")
    except TimeoutError as e:
        raise HarnessError(f"{e}\n{p.logs()}")
    msg = os.path.join(s.tmp, "grpc-msg")
    with open(msg, "wb") as f:
        body = b"0123456789abcdef"
        f.write(b"\0" + len(body).to_bytes(4, "big") + body)
    extra = ["-d", msg, "-H", "content-type: application/grpc", "-H", "te: trailers"]
    urls = {"direct": f"http://127.0.0.1:{gport}/echo.Echo/Unary",
            "platform": f"http://127.0.0.1:{p.grpc_port}/echo.Echo/Unary",
            "nginx": f"http://127.0.0.1:{nport}/echo.Echo/Unary"}
    res["grpc"] = {}
    i = 0
    for c in CONCS:
        runs = {q: [] for q in PATHS}
        for q in order(i):
            h2load(urls[q], c, a.warmup, s.tmp, extra=extra)
        for r in range(a.rounds):
            for q in order(i):
                runs[q].append(h2load(urls[q], c, a.round_secs, s.tmp, extra=extra))
                i += 1
        res["grpc"][str(c)] = row = {q: merge(runs[q]) for q in PATHS}
        print(f"  grpc unary c{c}: " + ", ".join(f"{q} {row[q]['rps']:.0f}/s" for q in PATHS), file=sys.stderr,
              flush=True)


THRIFT_SPEC = """name: benchc
code: {code}
command: [./thrift_userd]
protocol: thrift
thrift_services: [BenchC]
thrift_transport: framed
health: {{tcp: true}}
idle_timeout: 60m
max_instances: 1
"""
# max_instances 1: one pod, as HAProxy has one backend server. Left elastic, the 2-core
# box's CPU pressure makes the platform start a pod per few calls in flight, which split
# the calls so thinly that no pod batches anything (and they compete for the same cores).


def thrift_load(port, conc, seconds, path):
    """tests/bench/thrift_load.c run: concurrency = connections x pipelining depth (1x1, 4x4, 8x16)."""
    conns, depth = {1: (1, 1), 16: (4, 4), 128: (8, 16)}.get(conc, (conc, 1))
    argv = [path, "-p", str(port), "-m", "BenchC:add", "-c", str(conns), "-d", str(depth), "-t", str(seconds)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"calls=(\d+) errors=(\d+) calls_per_s=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+)", p.stdout)
    if not m:
        raise HarnessError(f"thrift_load output not understood: {' '.join(argv)}\n{p.stdout}\n{p.stderr}")
    calls, errs, rps = int(m.group(1)), int(m.group(2)), float(m.group(3))
    return {"requests": calls + errs, "errors": errs, "rps": rps, "secs": (calls + errs) / rps if rps else seconds,
            "p50": float(m.group(4)) * 1000, "p99": float(m.group(5)) * 1000}


def merge_approx(runs):
    """Rounds of a tool that prints only percentiles: req/s over the summed time, p50/p99 as the
    request-weighted mean of the rounds' percentiles (an approximation, said in the notes)."""
    req = sum(r["requests"] for r in runs)
    secs = sum(r["secs"] for r in runs)
    w = [(r["requests"] or 1) for r in runs]
    return {"rps": req / secs if secs else 0.0, "requests": req, "secs": secs,
            "errors": sum(r["errors"] for r in runs),
            "p50": sum(r["p50"] * x for r, x in zip(runs, w)) / sum(w),
            "p99": sum(r["p99"] * x for r, x in zip(runs, w)) / sum(w)}


HAPROXY_CONF = """global
    nbthread {threads}
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend thrift
    bind 127.0.0.1:{port}
    default_backend userd
backend userd
    server userd 127.0.0.1:{upstream}
"""


def start_haproxy(s, upstream):
    """HAProxy in TCP mode, one backend (the directly started user server), as many threads as the
    gateway has: the one-hop anchor of the Thrift rows (nginx-light has no stream module). Its port,
    or None when haproxy is not installed."""
    if not shutil.which("haproxy"):
        print("  thrift: haproxy is not installed (deploy/install-deps.sh): no haproxy row", file=sys.stderr)
        return None
    port = s.pu.free_port()
    conf = os.path.join(s.tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(HAPROXY_CONF.format(threads=s.gw_threads, port=port, upstream=upstream))
    hp = s._popen("haproxy", ["haproxy", "-db", "-f", conf])  # -db: foreground, so killed by its PID
    s._wait_port(hp, port, "haproxy")
    s.haproxy_pid = hp.pid
    return port


def _thrift_cpu(s, srv_pid):
    """CPU seconds now of the processes on each Thrift path: the gateway, the function's pods (agents and
    their user servers, however many the platform runs), haproxy, the direct user server."""
    pods = 0.0
    for inst in s.instances("benchc"):
        for pid in [inst["pid"]] + children(inst["pid"]) if inst["pid"] else []:
            try:
                pods += cpu_seconds(pid)
            except OSError:
                pass
    out = {"gateway": cpu_seconds(s.gw_pid), "pods": pods, "userd (direct)": cpu_seconds(srv_pid)}
    if getattr(s, "haproxy_pid", None):
        out["haproxy"] = cpu_seconds(s.haproxy_pid)
    return out


def scen_thrift(s, a, res):
    """3b. Thrift BenchC.add, framed binary (tests/bench/thrift_load.c against tests/bench/thrift_userd.c):
    direct, through HAProxy in TCP mode (one hop) and through the gateway's Thrift port, interleaved."""
    if not (a.thrift_load and a.thrift_userd):
        return None
    p, pu = s.platform, s.pu
    dport = pu.free_port()
    srv = s._popen("thrift-userd-direct", [a.thrift_userd, str(dport)])
    s._wait_port(srv, dport, "thrift-userd-direct")
    hport = start_haproxy(s, dport)
    spec = os.path.join(s.tmp, "benchc.yaml")
    with open(spec, "w") as f:
        f.write(THRIFT_SPEC.format(code=os.path.dirname(a.thrift_userd)))
    p.ctl("deploy", "-f", spec)

    def warm():  # the first call cold-starts it; the gateway needs the function in its watch first
        r = thrift_load(s.thrift_port, 1, 1, a.thrift_load)
        return r["requests"] > 0 and r["errors"] == 0
    try:
        pu.wait_until(warm, 30, interval=0.2, what="benchc through the platform's Thrift port")
    except TimeoutError as e:
        raise HarnessError(f"{e}\n{p.logs()}")
    ports = {"direct": dport, "platform": s.thrift_port}
    if hport:
        ports["haproxy"] = hport
    paths = tuple(ports)
    res["thrift"] = {}
    res["thrift_threads"] = s.gw_loops()
    i = 0
    for c in CONCS:
        runs = {q: [] for q in ports}
        cpu = {q: {} for q in ports}
        for q in ports:
            thrift_load(ports[q], c, a.warmup, a.thrift_load)
        for r in range(a.rounds):  # interleaved, the order rotated round by round
            for q in paths[i % len(paths):] + paths[:i % len(paths)]:
                before = _thrift_cpu(s, srv.pid)
                runs[q].append(thrift_load(ports[q], c, a.round_secs, a.thrift_load))
                after = _thrift_cpu(s, srv.pid)
                for k in after:
                    cpu[q][k] = cpu[q].get(k, 0.0) + after[k] - before.get(k, 0.0)
            i += 1
        res["thrift"][str(c)] = row = {q: dict(merge_approx(runs[q]), cpu=cpu[q]) for q in ports}
        for q in ports:  # the CPU per call of the processes on the path (not the client's)
            n = max(row[q]["requests"], 1)
            on = {"direct": ("userd (direct)",), "haproxy": ("haproxy", "userd (direct)"),
                  "platform": ("gateway", "pods")}[q]
            row[q]["cpu_us"] = {k: cpu[q][k] / n * 1e6 for k in on if k in cpu[q]}
        pl = row["platform"]["rps"]
        rh = f", platform/haproxy {pl / row['haproxy']['rps']:.2f}x" if "haproxy" in row else ""
        print(f"  thrift c{c}: " + ", ".join(f"{q} {row[q]['rps']:.0f}/s" for q in ports)
              + f"; platform/direct {pl / row['direct']['rps']:.2f}x{rh}; CPU us/call: "
              + "; ".join(f"{q} " + " + ".join(f"{k} {v:.1f}" for k, v in row[q]["cpu_us"].items()) for q in ports),
              file=sys.stderr, flush=True)


def _timed_get(port, path, rid):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("GET", path, headers={"x-request-id": rid})
    r = c.getresponse()
    r.read()
    dt = time.perf_counter() - t0
    c.close()
    return r.status, dt * 1e6


def _logfmt(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def scen_cold(s, a, res):
    """4. cold starts from a warm pool, with the platform's per-phase timing, and the floor."""
    p = s.platform
    pu = s.pu

    base = p.wm_metric("faas_wm_instances")  # the warm instances other scenarios keep

    def pool_full():
        return p.wm_metric("faas_wm_pool_ready") >= 2 and p.wm_metric("faas_wm_instances") <= base

    client = {}
    for i in range(-2, a.cold):  # two unmeasured ones first (code cache, page cache)
        name = f"cold-{i + 2}"
        pu.wait_until(pool_full, 15, what="warm pool refilled, previous cold instance gone")
        p.deploy_hello(name, "--idle-timeout", "60m")
        st, us = _timed_get(p.http_port, f"/function/{name}/hello", f"bench-{name}")
        if st != 200:
            raise HarnessError(f"cold start {name}: HTTP {st}\n{p.logs()}")
        if i >= 0:
            client[name] = us
        p.ctl("delete", name)  # the gateway releases the instance; the next one starts from the pool again
    gw = {}
    for line in read(p.gateway.log_path, "r").splitlines():
        if "event=cold_start " in line:
            kv = _logfmt(line)
            gw[kv.get("fn")] = kv
    wm = {}
    for line in read(p.wm.log_path, "r").splitlines():
        if "event=acquired " in line:
            kv = _logfmt(line)
            wm[kv.get("fn")] = kv
    phases = {k: [] for k in ("client", "gateway_ms", "wm_total", "queue", "code", "specialize", "exec",
                              "ready", "wm_other", "outside_wm", "gw_acquire", "after_acquire")}
    for name, us in client.items():
        phases["client"].append(us)
        g, w = gw.get(name), wm.get(name)
        if g:
            phases["gateway_ms"].append(float(g.get("ms", "nan")) * 1000)
        if w:
            t = {k: float(w.get(f"{k}_us", "nan")) for k in ("total", "queue", "code", "specialize", "exec",
                                                              "ready")}
            phases["wm_total"].append(t["total"])
            for k in ("queue", "code", "specialize", "exec", "ready"):
                phases[k].append(t[k])
            phases["wm_other"].append(t["total"] - sum(t[k] for k in ("queue", "code", "specialize", "exec",
                                                                      "ready")))
            phases["outside_wm"].append(us - t["total"])
            if g:
                gms = float(g.get("ms", "nan")) * 1000
                phases["gw_acquire"].append(gms - t["total"])
                phases["after_acquire"].append(us - gms)
    res["cold"] = {k: {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99),
                       "max": max(v) if v else float("nan")} for k, v in phases.items()}
    floor = subprocess.run([a.floor, str(a.cold), "/hello", f"{ROOT}/examples/hello-http/hello"],
                           capture_output=True, text=True, timeout=300)
    if floor.returncode != 0:
        raise HarnessError(f"floor launcher failed: {floor.stderr}")
    f = [float(x) for x in floor.stdout.split()]
    res["floor"] = {"n": len(f), "p50": pct(f, 50), "p90": pct(f, 90), "p99": pct(f, 99), "max": max(f)}
    c = res["cold"]["client"]
    print(f"  cold start p50 {c['p50'] / 1000:.2f} ms p99 {c['p99'] / 1000:.2f} ms; floor p50 "
          f"{res['floor']['p50'] / 1000:.2f} ms", file=sys.stderr, flush=True)


def scen_disc(s, a, res):
    """5. discovery propagation, on a discovery of its own (no gateway or worker noise)."""
    pu = s.pu
    port = pu.free_port()
    env = pu.token_env()  # the token it demands, and the client sends
    d = pu.Daemon("discovery-prop", [f"{a.build}/faas-discovery", "--listen", f"127.0.0.1:{port}",
                                     "--metrics-listen", "off", "--state-dir", f"{s.tmp}/discovery-prop"],
                  s.tmp, port, env=env)
    d.start()
    try:
        if a.discprop:
            argv = [a.discprop, f"127.0.0.1:{port}", "10", "200", "10000"]
        else:
            argv = [sys.executable, os.path.join(HERE, "discprop.py"), f"127.0.0.1:{port}", "--watchers", "10",
                    "--rounds", "200"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    finally:
        d.stop()
    if out.returncode != 0:
        raise HarnessError(f"discprop failed: {out.stderr}")
    r = json.loads(out.stdout)
    xs = r["samples_us"]
    res["disc"] = {"client": "C (common/rpc)" if a.discprop else "python grpc", "n": len(xs), "lost": r["lost"], "p50": pct(xs, 50), "p99": pct(xs, 99),
                   "max": max(xs) if xs else float("nan")}
    # the C tool also times the first watcher of each round and the Heartbeat round
    # trip, which split the fan-out's share of the tail from the single hop's
    for k in ("first_us", "hb_rtt_us"):
        if r.get(k):
            res["disc"][k] = {"n": len(r[k]), "p50": pct(r[k], 50), "p99": pct(r[k], 99)}
    print(f"  discovery propagation p50 {res['disc']['p50']:.0f} us p99 {res['disc']['p99']:.0f} us",
          file=sys.stderr, flush=True)


def idle_warm_agent(s):
    """A warm (unspecialized) pod of our worker manager: a faas-agent with FAAS_POD_ID and no child."""
    wm = s.platform.wm.proc.pid
    helpers = children(wm)
    for h in helpers:
        for pid in children(h):
            try:
                env = read(f"/proc/{pid}/environ", "rb")
                comm = read(f"/proc/{pid}/comm").strip()
            except OSError:
                continue
            if comm.startswith("faas-agent") and b"FAAS_POD_ID=" in env and not children(pid):
                return pid
    return None


def agent_maps(pid):
    """Rss per mapped file (or [heap], [stack], anon) of a process, largest first, in KiB."""
    out, cur = {}, "?"
    try:
        for line in read(f"/proc/{pid}/smaps").splitlines():
            f = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = os.path.basename(f[5]) if len(f) > 5 else "anon"
            elif f and f[0] == "Rss:":
                out[cur] = out.get(cur, 0) + int(f[1])
    except OSError:
        pass
    return sorted(((k, v) for k, v in out.items() if v), key=lambda kv: -kv[1])


def hold_connections(port, n, batch=256):
    """Opens n keep-alive connections, one GET /healthz each, and returns the sockets (still open)."""
    socks = []
    req = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    sel = selectors.DefaultSelector()
    for start in range(0, n, batch):
        pending = {}
        for _ in range(min(batch, n - start)):
            sk = socket.socket()
            sk.setblocking(False)
            sk.connect_ex(("127.0.0.1", port))
            pending[sk.fileno()] = [sk, b""]
            sel.register(sk, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=1):
                sk, buf = pending[key.fd]
                if ev & selectors.EVENT_WRITE:
                    if sk.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        raise HarnessError("a connection to the gateway failed")
                    sk.send(req)
                    sel.modify(sk, selectors.EVENT_READ)
                else:
                    data = sk.recv(4096)
                    if not data:
                        raise HarnessError(f"the gateway closed a connection before answering /healthz "
                                           f"({len(socks)} held, {len(pending)} pending)")
                    buf += data
                    pending[key.fd][1] = buf
                    head, sep, body = buf.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    if sep and m and len(body) >= int(m.group(1)):
                        sel.unregister(sk)
                        del pending[key.fd]
                        socks.append(sk)
        if pending:
            raise HarnessError(f"{len(pending)} connections got no /healthz answer within 20 s")
    sel.close()
    return socks


def scen_mem(s, a, res):
    """6. idle warm pod RSS/Pss; gateway RSS per idle keep-alive connection."""
    agent = s.pu.wait_until(lambda: idle_warm_agent(s), 10, what="an idle warm pod")
    res["pod"] = {"pid": agent, "rss": rss_kib(agent), "pss": pss_kib(agent), "maps": agent_maps(agent)}
    print("  idle agent RSS by mapping (KiB): " + ", ".join(f"{k} {v}" for k, v in res["pod"]["maps"][:8]),
          file=sys.stderr, flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 1024
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        raise HarnessError(f"RLIMIT_NOFILE {hard} is too low for {a.conns} connections (--conns)")
    gw = s.gw_pid
    fds0 = len(os.listdir(f"/proc/{gw}/fd"))
    rss0, pss0 = rss_kib(gw), pss_kib(gw)
    socks = hold_connections(s.platform.http_port, a.conns)
    try:
        rss1, pss1 = rss_kib(gw), pss_kib(gw)
        held = len(os.listdir(f"/proc/{gw}/fd")) - fds0
    finally:
        for sk in socks:
            sk.close()
    held = max(held, 1)
    res["gwconn"] = {"conns": held, "rss0": rss0, "rss1": rss1, "pss0": pss0, "pss1": pss1,
                     "per_conn": (rss1 - rss0) * 1024.0 / held, "pss_per_conn": (pss1 - pss0) * 1024.0 / held}
    print(f"  idle pod RSS {res['pod']['rss']} KiB; gateway {res['gwconn']['per_conn']:.0f} B/conn "
          f"over {held} connections", file=sys.stderr, flush=True)


def _syscalls_per_request(s, a, pids, load, tag):
    """strace -c on every thread of each pid during one load run: syscalls per request by name."""
    tracers = {}
    for name, pid in pids.items():
        argv = ["strace", "-c", "-q", "-o", os.path.join(a.profile, f"{tag}-{name}-strace.txt")]
        for tid in os.listdir(f"/proc/{pid}/task"):
            argv += ["-p", tid]
        tracers[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let strace attach (its overhead slows the run; only counts are used)
    n = load()
    out = {}
    for name, t in tracers.items():
        t.send_signal(signal.SIGINT)
        t.wait(timeout=30)
        calls = {}
        for line in read(os.path.join(a.profile, f"{tag}-{name}-strace.txt")).splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                calls[f[-1]] = int(f[3])
        out[name] = {k: v / max(n, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    return out


def _profile_one(s, a, res, pids, load, tag):
    """perf record (cpu-clock, call graphs) of pids during one load run, then strace -c during another."""
    data = os.path.join(a.profile, f"{tag}-perf.data")
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-o", data, "-p",
                            ",".join(str(p) for p in pids.values()), "--", "sleep", str(a.seconds)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    load()
    rec.wait(timeout=60)
    reports = (("flat", ["--no-children", "--sort", "dso,sym", "--percent-limit", "0"]),
               ("inclusive", ["--children", "--sort", "sym", "--percent-limit", "2"]))
    for name, pid in pids.items():
        for mode, extra in reports:
            out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--pid", str(pid), "--percentage",
                                  "relative", "-g", "none", *extra], capture_output=True, text=True)
            with open(os.path.join(a.profile, f"{tag}-{name}-{mode}.txt"), "w") as f:
                f.write(out.stdout)
            if mode == "flat":  # kernel vs user share of the process's samples
                kern = sum(float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)%.*\[k\]", out.stdout, re.M))
                user = sum(float(m.group(1)) for m in re.finditer(r"^\s*([\d.]+)%.*\[\.\]", out.stdout, re.M))
                top = re.findall(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", out.stdout, re.M)[:12]
                res.setdefault("profile", {})[f"{tag} {name}"] = {
                    "kernel_pct": kern, "user_pct": user, "top": [f"{p}% {sym} ({dso})" for p, dso, _, sym in top]}
                print(f"  {tag} {name}: kernel {kern:.0f}% of samples, user {user:.0f}%; top: "
                      + "; ".join(res["profile"][f"{tag} {name}"]["top"][:6]), file=sys.stderr, flush=True)
    if shutil.which("strace"):
        sc = _syscalls_per_request(s, a, pids, load, tag)
        with open(os.path.join(a.profile, f"{tag}-syscalls-per-request.json"), "w") as f:
            json.dump(sc, f, indent=1)
        res.setdefault("syscalls", {})[tag] = sc
        for name, calls in sc.items():
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(calls.items())[:8])
            print(f"  {tag} {name} syscalls per request: {top}", file=sys.stderr, flush=True)


def profile(s, a, res):
    """Profiles the gateway and the agent during c16 load: HTTP/1.1 GET always, Thrift when its
    function is deployed (--only thrift --profile DIR). Reports land in a.profile."""
    os.makedirs(a.profile, exist_ok=True)
    _profile_one(s, a, res, {"gateway": s.gw_pid, "agent": s.agent_pid},
                 lambda: wrk(s.urls("/hello")["platform"], 16, a.seconds)["requests"], "http")
    if res.get("thrift"):
        inst = [i for i in s.instances("benchc") if i["pid"]]
        if inst:
            _profile_one(s, a, res, {"gateway": s.gw_pid, "agent": inst[0]["pid"]},
                         lambda: thrift_load(s.thrift_port, 16, a.seconds, a.thrift_load)["requests"], "thrift")
    print(f"  profile written to {a.profile}", file=sys.stderr, flush=True)


def scen_tasks(s, a, res):
    """8. async tasks (tests/bench/tasks_bench.py): durable submissions/s, submit-to-succeeded latency."""
    tasks_bench.scen_tasks(s, a, res, wrk)


def scen_scale(s, a, res):
    """9. step load on a CPU-bound function (tests/bench/scale_bench.py): overload report and scale-up."""
    scale_bench.scen_scale(s, a, res, wrk)


def scen_coldnet(s, a, res):
    """10. cold start with and without the pod's network namespace, alternated (coldnet_bench.py)."""
    coldnet_bench.scen_coldnet(s, a, res)


def scen_coldsec(s, a, res):
    """11. cold start with and without the user server's seccomp filter, alternated (coldnet_bench.py)."""
    coldnet_bench.scen_coldsec(s, a, res)


def scen_image(s, a, res):
    """12. cold start of an OCI image function (rootfs cached) beside a code-directory function running the
    same static server, and the first cold start of a new image (tests/bench/image_coldstart.py, its own
    platform: it needs umoci and the build's tests/images/srv)."""
    env = dict(os.environ, FAAS_BUILD=a.build)
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "image_coldstart.py"), "--n", str(a.cold), "--json"],
                       env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        print(f"  image cold start: failed ({r.returncode}): {r.stderr.strip()[-300:]}", flush=True)
        return
    c = res["image"] = json.loads(lines[-1])
    print(f"  image cold start p50 {c['image']['p50']:.2f} ms, code dir {c['code']['p50']:.2f} ms; first of a new "
          f"image {c['first']['ms']:.1f} ms", flush=True)


def scen_pycold(s, a, res):
    """14. cold starts of Python servers with and without interpreter zygotes, beside the C server and the
    floor, interleaved, on a platform of its own with --pool-python (tests/bench/py_coldstart.py)."""
    try:
        c = py_coldstart.run(a.n, floor_exe=a.floor, tmp=s.tmp, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (RuntimeError, TimeoutError, AssertionError) as e:
        raise HarnessError(f"pycold: {e}")
    res["pycold"] = c
    print("  " + "; ".join(f"{r['variant']} p50 {r['p50']:.1f} ms (zygote {r['zygote_n']}/{r['n']})"
                           for r in c["rows"]), file=sys.stderr, flush=True)


def image_rows(res, add, f_us):
    c = res.get("image")
    if not c:
        return
    ms = 1000.0
    for key, what in (("code", "code directory"), ("image", "OCI image, rootfs cached")):
        add(f"cold start from the warm pool, {what} (same static server)", 1, "platform", "",
            f_us(c[key]["p50"] * ms), f_us(c[key]["p99"] * ms), "", "", "", "")
    d = c["image"]["p50"] - c["code"]["p50"]
    add("cold start: image - code directory, p50", 1, "platform", "", f"{d:+.2f} ms", "", "", "", "within 1 ms",
        "pass" if d <= 1.0 else "FAIL")
    ph = c["first"].get("phases", {})  # already ms, as image_coldstart.py reads them
    add("first cold start of a new image (fetch / unpack phases)", 1, "platform", "", f_us(c["first"]["ms"] * ms),
        "", f"fetch {ph.get('image_fetch_us', 0):.1f} ms", f"unpack {ph.get('image_unpack_us', 0):.1f} ms",
        "", "")


def scen_cp(s, a, res):
    """13. control-plane throughput: instance creations/s with 100 simulated hosts (tests/bench/cp_bench.py,
    its own discovery and gateway, on SQLite and on etcd)."""
    if not a.cpbench:
        print("  control plane: n/a (tests/bench/cpbench.c was not built)", flush=True)
        return
    env = dict(os.environ, FAAS_BUILD=a.build)
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "cp_bench.py"), "--cpbench", a.cpbench, "--json"],
                       env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    if r.returncode != 0 or not lines:
        print(f"  control plane: failed ({r.returncode}): {r.stderr.strip()[-300:]}", flush=True)
        return
    res["cp"] = json.loads(lines[-1])
    for c in res["cp"]:
        if "skipped" in c:
            print(f"  control plane on {c['store']}: skipped ({c['skipped']})", flush=True)
        else:
            print(f"  control plane on {c['store']}: {c['creations_per_s']:.0f} creations/s, "
                  f"{c['deploys_per_s']:.0f} deploys/s", flush=True)


def cp_rows(res, add, f_us, f_rps):
    for c in res.get("cp", []):
        if "skipped" in c:
            continue
        what = f"instance creations, {c['hosts']} simulated hosts, {c['functions']} functions, {c['store']}"
        add(what, c["conc"], "platform", f_rps(c["creations_per_s"]), f_us(c["p50_ms"] * 1000),
            f_us(c["p99_ms"] * 1000), f"{c['ok']} ok, {c['failed']} failed", f"warm {f_rps(c['warm_per_s'])} req/s",
            "Dirigent 2,500/s (100 nodes)", verdict(c["creations_per_s"] >= 2500))
        add(f"deploys (Deploy rpc, 8 threads), {c['store']}", 8, "platform", f_rps(c["deploys_per_s"]), "", "", "",
            "", "", "")


# tasks last: the throughput run leaves thousands of tasks running behind it
SCENARIOS = [("http1", scen_http), ("h2", scen_h2), ("grpc", scen_grpc), ("thrift", scen_thrift),
             ("cold", scen_cold), ("disc", scen_disc), ("mem", scen_mem), ("scale", scen_scale),
             ("coldnet", scen_coldnet), ("coldsec", scen_coldsec), ("image", scen_image), ("cp", scen_cp),
             ("pycold", scen_pycold), ("tasks", scen_tasks)]

# ---------------------------------------------------------------- the table


def f_us(v):
    if v != v:  # nan
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} us"


def f_rps(v):
    return f"{v:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def verdict(ok):
    return "PASS" if ok else "FAIL"


def table(res, m, cm, a):
    rows = []
    head = ("| scenario | c | path | req/s | p50 | p99 | plat/direct req/s, p50 | plat/nginx req/s, p50 "
            "| bar | result |")
    rows.append(head)
    rows.append("|" + "---|" * 10)

    def add(scen, c, path, rps, p50, p99, rd="", rn="", bar="", result=""):
        rows.append(f"| {scen} | {c} | {path} | {rps} | {p50} | {p99} | {rd} | {rn} | {bar} | {result} |")

    def trio(scen, c, row, bars, missing="n/a", hop="nginx"):
        for p in ("direct", "platform", hop):
            if p not in row:
                add(scen, c, p, missing, "", "", "", "", "", "")
                continue
            r = row[p]
            err = f" ({r['errors']} errors)" if r.get("errors") else ""
            rd = rn = ""
            if p == "platform":
                rd = f"{ratio(r['rps'], row['direct']['rps'])}, {ratio(r['p50'], row['direct']['p50'])}"
                rn = (f"{ratio(r['rps'], row[hop]['rps'])}, {ratio(r['p50'], row[hop]['p50'])}"
                      + ("" if hop == "nginx" else f" (plat/{hop})") if hop in row else "-")
            bar, result = bars if p == "platform" else ("", "")
            add(scen, c, p, f_rps(r["rps"]) + err, f_us(r["p50"]), f_us(r["p99"]), rd, rn, bar, result)

    for key, row in res.get("http1", {}).items():
        kind, c = key.split("|")
        c = int(c)
        bars = ("", "")
        pl = row["platform"]
        if c in (16, 128):
            bars = ("req/s >= nginx", verdict(pl["rps"] >= row["nginx"]["rps"]))
        elif c == 1:
            added = pl["p50"] - row["direct"]["p50"]
            bars = (f"p50 - direct = {added:.0f} us <= 100 us", verdict(added <= 100))
        trio(f"HTTP/1.1 {kind}", c, row, bars)
    for c, row in res.get("h2", {}).items():
        trio("h2c GET (direct: h1)", c, row, ("", ""))
    for c, row in res.get("grpc", {}).items():
        trio("gRPC unary (grpc-echo, python)", c, row, ("", ""))
    if not res.get("grpc"):
        add("gRPC unary", "1/16/128", "all", "n/a (issue 4)", "", "", "", "", "", "")
    for c, row in res.get("thrift", {}).items():
        pl, hp = row["platform"]["rps"], row.get("haproxy", {}).get("rps")
        trio(f"Thrift framed binary (native thrift_userd), gateway {res.get('thrift_threads', 1)} thread(s)", c,
             row, ("req/s >= haproxy", verdict(pl >= hp)) if hp else ("", ""),
             missing="n/a (haproxy not installed)", hop="haproxy")
    if not res.get("thrift"):
        add("Thrift", "1/16/128", "all", "n/a (issue 5)", "", "", "", "", "", "")
    if "cold" in res:
        cs, fl = res["cold"], res["floor"]
        c = cs["client"]
        share = c["p50"] - fl["p50"]
        add("cold start (client: request sent -> response read)", 1, "platform", f"n={c['n']}", f_us(c["p50"]),
            f_us(c["p99"]), f"p90 {f_us(c['p90'])}, max {f_us(c['max'])}", "",
            f"p50 <= floor p50 + 1.5 ms; p99 <= 20 ms",
            f"{verdict(c['p50'] <= fl['p50'] + 1500)}; {verdict(c['p99'] <= 20000)}")
        add("cold start floor (clone+exec+poll+GET, tests/bench/floor.c)", 1, "floor", f"n={fl['n']}",
            f_us(fl["p50"]), f_us(fl["p99"]), f"p90 {f_us(fl['p90'])}, max {f_us(fl['max'])}", "",
            f"platform share p50 = {f_us(share)}", "")
        labels = {"gateway_ms": "gateway cold_start ms (1 ms resolution)",
                  "wm_total": "worker manager acquire total",
                  "queue": "phase: queue", "code": "phase: code", "specialize": "phase: specialize",
                  "exec": "phase: user-server exec", "ready": "phase: readiness (exec -> accepts)",
                  "wm_other": "phase: rest inside the worker manager",
                  "outside_wm": "phase: outside the WM (dispatch, Acquire RPC, first proxied request)",
                  "gw_acquire": "of which: arrival -> Acquire reply minus WM total (gateway ms, +-1 ms)",
                  "after_acquire": "of which: Acquire reply -> client has the response (+-1 ms)"}
        ph = {k: cs[k]["p50"] for k in ("queue", "code", "specialize", "exec", "ready", "wm_other",
                                          "outside_wm") if cs[k]["n"]}
        if ph:
            top = max(ph, key=ph.get)
            add("cold start: dominant phase at p50", 1, "platform", labels[top].replace("phase: ", ""),
                f_us(ph[top]), "", f"{ph[top] / c['p50'] * 100:.0f}% of the client p50", "", "", "")
        for k, label in labels.items():
            v = cs[k]
            if v["n"]:
                add(f"cold start {label}", 1, "platform", f"n={v['n']}", f_us(v["p50"]), f_us(v["p99"]),
                    f"p90 {f_us(v['p90'])}, max {f_us(v['max'])}", "", "", "")
    if "disc" in res:
        d = res["disc"]
        add(f"discovery propagation (Heartbeat sent -> 10 watchers, {d['client']} clients)", 10, "platform",
            f"n={d['n']}, lost {d['lost']}", f_us(d["p50"]), f_us(d["p99"]), f"max {f_us(d['max'])}", "",
            "p99 <= 1 ms", verdict(d["p99"] <= 1000 and d["lost"] == 0))
        for k, label in (("first_us", "first of the 10 watchers"), ("hb_rtt_us", "Heartbeat round trip")):
            if k in d:
                add(f"discovery: {label}", 10, "platform", f"n={d[k]['n']}", f_us(d[k]["p50"]),
                    f_us(d[k]["p99"]), "", "", "", "")
    if "pod" in res:
        pod = res["pod"]
        add("memory: idle warm pod (faas-agent)", "-", "platform", f"RSS {pod['rss']} KiB",
            f"Pss {pod['pss']} KiB", "", "", "", "RSS <= 2 MiB", verdict(pod["rss"] <= 2048))
        g = res["gwconn"]
        add(f"memory: gateway, {g['conns']} idle keep-alive conns", "-", "platform",
            f"RSS {g['rss0']} -> {g['rss1']} KiB", f"{g['per_conn']:.0f} B/conn",
            f"Pss {g['pss_per_conn']:.0f} B/conn", "", "", "<= 8 KiB/conn", verdict(g["per_conn"] <= 8192))
    if "http1" in res and "GET|16" in res["http1"]:
        row = res["http1"]["GET|16"]
        per = {}
        for p in PATHS:
            n = max(row[p]["requests"], 1)
            per[p] = {k: v / n * 1e6 for k, v in row[p]["cpu"].items()}
        ga = per["platform"]["gateway"] + per["platform"]["agent"]
        ng = per["nginx"]["nginx worker"]
        add("CPU per request, HTTP/1.1 GET c16 (user+sys from /proc)", 16, "platform",
            f"gateway {per['platform']['gateway']:.1f} us", f"agent {per['platform']['agent']:.1f} us",
            f"user server {per['platform']['user server (pod)']:.1f} us", ratio(ga, per['direct']
                                                                                   ['user server (direct)']),
            f"{ratio(ga, ng)} (gw+agent / nginx)", "gw+agent <= 2 x nginx worker", verdict(ga <= 2 * ng))
        add("CPU per request, HTTP/1.1 GET c16", 16, "nginx", f"worker {ng:.1f} us", "",
            f"user server {per['nginx']['user server (direct)']:.1f} us", "", "", "", "")
        add("CPU per request, HTTP/1.1 GET c16", 16, "direct", "", "",
            f"user server {per['direct']['user server (direct)']:.1f} us", "", "", "", "")
    for key, row in res.get("http1_threads", {}).items():
        kind, t = key.split("|")
        if "failed" in row:
            add(f"HTTP/1.1, gateway --threads {t}", 16, "platform", "n/a", "", "", row["failed"], "", "", "FAIL")
            continue
        pl = row["platform"]
        gcpu = pl["cpu"]["gateway"] / max(pl["requests"], 1) * 1e6
        trio(f"HTTP/1.1 {kind}, gateway --threads {t} ({row['loops']} loop(s) ran)", 16, row,
             (f"gateway CPU {gcpu:.1f} us/request", ""))
    scale_bench.rows(res, add, f_us, f_rps)
    coldnet_bench.rows(res, add, f_us)
    image_rows(res, add, f_us)
    cp_rows(res, add, f_us, f_rps)
    tasks_bench.rows(res, add, f_us, f_rps)
    title = (f"### make bench: {datetime.date.today().isoformat()}, commit {cm}; {m['cores']} cores, "
             f"{m['cpu']}, kernel {m['kernel']}, load average at start {' '.join(m['load'])}, "
             f"at end {' '.join(read('/proc/loadavg').split()[:3])}")
    notes = [
        "",
        f"Each figure: {a.rounds} rounds of {a.round_secs} s per path after a {a.warmup} s warm-up, the three paths "
        "interleaved round by round (order rotated); req/s over the rounds' total time, p50/p99 of the pooled "
        "latencies. Load generators share the 2 cores with the servers (nothing pinned).",
        "direct and nginx hit one hello-http process started directly; platform hits the warm pod's hello-http "
        "(same binary, a different process: the pod's own). nginx: 1 worker, upstream keepalive 64, "
        "HTTP/1.1 upstream, access_log off.",
        "h2c: concurrency = clients x streams (1x1, 4x4, 8x16); the user server speaks HTTP/1.1 only, so the "
        "direct row is h2load --h1 against it. plat/direct and plat/nginx: ratio of req/s, then of p50.",
        "gRPC: /echo.Echo/Unary of examples/grpc-echo (python3-grpcio: the user server is the bottleneck), "
        "16-byte message, h2load with gRPC framing and te: trailers, clients x streams as for h2c; direct and "
        "nginx (grpc_pass, keepalive 64) hit one directly started server, the platform the gateway's gRPC port.",
        "Thrift: BenchC.add (two i32) over framed binary, tests/bench/thrift_load.c against the native "
        "tests/bench/thrift_userd.c; concurrency = connections x pipelining depth (1x1, 4x4, 8x16); its p50/p99 "
        "are the call-weighted mean of the rounds' percentiles (the tool prints no distribution). The one-hop "
        "anchor is HAProxy in TCP mode (one backend: the directly started user server, nbthread = the "
        "gateway's thread count); plat/nginx holds plat/haproxy there.",
        "Gateway threads (issue 17): c16 rows again with the gateway restarted at each --gw-threads count (same "
        "warm pod); gateway CPU per request = the gateway process's utime+stime over its rounds / requests. "
        "'loops ran' is what the gateway says it ran (one when it warns event=threads_unsupported).",
        "CPU per request: the plat/direct column is gw+agent over the user server's own CPU per request.",
        "Memory: the gateway's figure is (RSS with the connections - RSS before) / connections it held "
        "(counted from its fd table); h2o closes idle keep-alive connections after 10 s, so they are opened "
        "in batches and measured at once. Pss divides shared pages among the processes mapping them.",
        "Discovery propagation: 10 Watch streams (10 channels) and one heartbeating fake worker on a "
        "discovery of its own (tests/bench/discprop.c; discprop.py if it could not be built).",
        "The load average in the header is the machine's at the start: other work on these 2 cores shows "
        "up in every figure (mostly in p99 and in the floor).",
        "Async: submissions by wrk at c16 (1-byte POST /async-function/bench/echo; 202 only once the task is "
        "committed); tasks per commit from discovery's faas_tasks_submitted_total / faas_task_commits_total; "
        "fsyncs per submission from a second 2 s run with strace -c on discovery's threads. Submit -> succeeded: "
        "one client, the submission then GET /tasks/<id> every 1 ms on the same connection, then the same POST "
        "made synchronously (--cold sets how many).",
        "Step load: 20 trials, each a fresh function (hello-http GET /burn?ms=5, 1-CPU quota): wrk c1 for 1 s, "
        "then c32 for 1 s; times from the worker manager's event=overload line and the user server's own "
        "request log (HELLO_LOG_REQUESTS=1); scale-up off = --max-instances 1.",
        "Control plane: tests/bench/cp_bench.py. 100 fake worker managers in one process (tests/bench/cpbench.c: "
        "Acquire answered at once, the lease renewed with the new instance as the real one does) and one real "
        "faas-agent --standalone that every fake instance points at; 2,000 functions deployed (deploys/s), then "
        "one GET to each from 64 keep-alive connections: every call a cold start through dispatcher, fake host, "
        "discovery lease and watch; creations/s = calls / time, then the same calls again (warm).",
        "Cold start phases come from the worker manager's event=acquired and the gateway's event=cold_start "
        "log lines; the client figure is measured by the harness around one GET.",
    ]
    pycold = ["", res["pycold"]["markdown"]] if "pycold" in res else []
    return "\n".join([title, ""] + rows + pycold + notes) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--floor", required=True, help="the compiled tests/bench/floor.c")
    ap.add_argument("--discprop", default="", help="the compiled tests/bench/discprop.c (else the python one)")
    ap.add_argument("--cpbench", default="", help="the compiled tests/bench/cpbench.c (control-plane rows)")
    ap.add_argument("--thrift-load", default="", help="the compiled tests/bench/thrift_load.c")
    ap.add_argument("--thrift-userd", default="", help="the compiled tests/bench/thrift_userd.c, alone in its dir")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="split each --seconds run into this many "
                    "interleaved rounds (direct, platform, nginx, direct, ...)")
    ap.add_argument("--cold", type=int, default=100)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--n", type=int, default=50, help="cold starts per variant of the pycold scenario")
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(n for n, _ in SCENARIOS)
                    + " (none: only the set-up, e.g. with --profile)")
    ap.add_argument("--profile", default="", help="also perf-profile gateway+agent, output into this dir")
    ap.add_argument("--out", default="", help="also write the table to this file")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--gw-threads", default=os.environ.get("FAAS_BENCH_GW_THREADS", "1,2"),
                    help="faas-gateway --threads counts, comma list (env FAAS_BENCH_GW_THREADS): the platform runs "
                    "at the first, the HTTP/1.1 c16 rows run again at each of the others")
    ap.add_argument("--wm-arg", action="append", default=[],
                    help="an extra faas-workermgr flag (repeatable), e.g. --wm-arg=--no-pod-netns")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a.rounds = max(1, min(a.rounds, a.seconds))
    a.round_secs = max(1, a.seconds // a.rounds)
    try:
        a.gw_threads = [int(t) for t in a.gw_threads.split(",") if t.strip()]
        if not a.gw_threads or min(a.gw_threads) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--gw-threads: a comma list of counts >= 1, not {a.gw_threads!r}")
    only = set(filter(None, a.only.split(",")))
    m, cm = machine(), commit()
    tmp = tempfile.mkdtemp(prefix="faas-benchrun-")
    os.chmod(tmp, 0o755)
    res = {"http1": {}, "h2": {}}
    s = Setup(a.build, tmp, a.wm_arg, a.gw_threads[0])
    t0 = time.monotonic()
    try:
        try:
            s.start()
            print(f"bench: set up in {time.monotonic() - t0:.1f} s (temp dir {tmp})", file=sys.stderr, flush=True)
            for name, fn in SCENARIOS:
                if not only or name in only:
                    fn(s, a, res)
            if a.profile:
                profile(s, a, res)
        except TimeoutError as e:  # a bounded wait of the harness ran out
            raise HarnessError(str(e))
    finally:
        s.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = table(res, m, cm, a)
    print(out)
    print(f"bench: total {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "commit": cm, "results": res}, f, indent=1, default=str)


if __name__ == "__main__":
    try:
        main()
    except HarnessError as e:
        print(f"bench: harness error: {e}", file=sys.stderr)
        sys.exit(1)
