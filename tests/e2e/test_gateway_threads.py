"""The gateway with several event-loop threads (issue 17, `faas-gateway --threads N`):
concurrent HTTP/1.1, h2c, gRPC and Thrift load from many connections, so that
SO_REUSEPORT spreads them over every loop, with every response checked byte for byte;
the in-flight state back to zero and the request counters adding up exactly once the
load ends (metrics summed across threads); cold starts asked for by many connections at
once make one Acquire per needed instance, not one per loop; the flag's validation; and
one representative reserved-instance and overload test run again with two loops.

Every property here holds with one loop too, so the file passes against a gateway that
still runs one loop whatever --threads says; what it guards against is a multi-loop
gateway that loses counts, leaks in-flight state or acquires per loop."""
import http.client
import os
import random
import re
import subprocess
import sys
import threading

import pytest

from platform_util import BUILD, ROOT, Platform, http_get, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]

grpc = pytest.importorskip("grpc")
sys.path.insert(0, os.path.join(ROOT, "examples", "thrift-calc"))
from calc import Client  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.protocol.THeaderProtocol import THeaderProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402
from thrift.transport.THeaderTransport import THeaderClientType  # noqa: E402

THREADS = ("--threads", "2")
CALC_DIR = os.path.join(ROOT, "examples", "thrift-calc")
GRPC_DIR = os.path.join(ROOT, "examples", "grpc-echo")
# each gRPC channel its own TCP connection: grpcio shares subchannels between channels
# to the same target by default, which would put every channel on one loop
GRPC_OPTS = [("grpc.use_local_subchannel_pool", 1)]


# ---- metrics ----------------------------------------------------------------------

_LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(plat):
    """The gateway's /metrics as [(name, {label: value}, value)]."""
    code, txt = http_get(f"{plat.gateway_url}/metrics")
    assert code == 200, txt
    out = []
    for line in txt.splitlines():
        m = _LINE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def msum(samples, name, **labels):
    """The sum of every series of name whose labels include these: a gateway may export
    one series per loop (a thread label) or one already summed; both add up the same."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items()))


def by_code(samples, fn, proto):
    """faas_requests_total of fn over protocol proto: {code: count}."""
    out = {}
    for n, l, v in samples:
        if n == "faas_requests_total" and l.get("function") == fn and l.get("protocol") == proto:
            out[l["code"]] = out.get(l["code"], 0) + v
    return out


def delta(after, before):
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


# ---- the platform -----------------------------------------------------------------

def write_calc_manifest(d, name):
    path = os.path.join(str(d), f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\ncode: {CALC_DIR}\ncommand: [/usr/bin/python3, calc_server.py, theader]\n"
                "protocol: thrift\nthrift_services: [CalcThreads]\nthrift_transport: theader\n"
                "health: {tcp: true}\n")
    return path


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    d = tmp_path_factory.mktemp("gwthreads")
    p = Platform(d, pool_size=3, grpc=True, thrift=True,
                 gateway_args=(*THREADS, "--thrift-default-function", "tcalc")).start()
    try:
        p.deploy_hello("techo")
        p.ctl("deploy", "-f", os.path.join(GRPC_DIR, "function.yaml"), "--memory", "512Mi", "--pids", "512")
        p.ctl("deploy", "-f", write_calc_manifest(d, "tcalc"))
        yield p
    finally:
        p.stop()


# ---- clients, each checking every answer ------------------------------------------

class Errors:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, what):
        with self.lock:
            self.items.append(what)


def payload(tag, rnd):
    """A body no other request sends: its tag, then random bytes of a random length."""
    return tag.encode() + rnd.randbytes(rnd.randrange(0, 3000))


def http1_client(plat, i, n, errs):
    """n POST /echo over keep-alive, a new connection every 20 (so they spread over loops)."""
    rnd = random.Random(i)
    conn = None
    for k in range(n):
        body = payload(f"h1:{i}:{k}:", rnd)
        try:
            if conn is None or k % 20 == 0:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", plat.http_port, timeout=60)
            conn.request("POST", "/function/techo/echo", body=body)
            r = conn.getresponse()
            got = r.read()
            if r.status != 200 or got != body:
                errs.add(f"http1 {i}/{k}: {r.status} {len(got)} bytes for {len(body)}")
        except (OSError, http.client.HTTPException) as e:
            errs.add(f"http1 {i}/{k}: {e!r}")
            conn = None
    if conn is not None:
        conn.close()


def h2_client(plat, tmp, i, n, errs):
    """n POSTs over h2c, each its own curl: curl 7.88 fails the second request on a
    reused prior-knowledge connection with a framing error (curl/curl#10634, fixed in
    8.0), whatever the server."""
    rnd = random.Random(1000 + i)
    for k in range(n):
        src = os.path.join(tmp, f"h2-{i}-{k}.in")
        body = payload(f"h2:{i}:{k}:", rnd)
        with open(src, "wb") as f:
            f.write(body)
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "60", "--data-binary", f"@{src}",
                            "-o", "-", "-w", "%{http_code} %{http_version}", plat.url("techo", "/echo")],
                           capture_output=True, timeout=90)
        if p.returncode != 0 or p.stdout != body + b"200 2":
            errs.add(f"h2 {i}/{k}: curl {p.returncode} {p.stdout[-40:]!r} {p.stderr[-300:]!r}")


def h2load_client(plat, tmp, n, conns, errs):
    """n POSTs from h2load over conns h2c connections, 8 streams each: the volume (one
    body for all, so counted and status-checked; h2_client checks bodies)."""
    src = os.path.join(tmp, "h2load.in")
    with open(src, "wb") as f:
        f.write(random.Random(7).randbytes(1500))
    p = subprocess.run(["h2load", "-n", str(n), "-c", str(conns), "-m", "8", "-d", src, plat.url("techo", "/echo")],
                       capture_output=True, text=True, timeout=120)
    ok = f"requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, 0 errored, 0 timeout"
    if p.returncode != 0 or ok not in p.stdout or f"status codes: {n} 2xx, 0 3xx, 0 4xx, 0 5xx" not in p.stdout:
        errs.add(f"h2load: {p.returncode} {p.stdout[-800:]!r} {p.stderr[-300:]!r}")


def grpc_client(plat, i, n, errs):
    """n unary echo calls on a channel of its own, 4 in flight at a time, then one
    bidirectional stream of 20 messages (one more call)."""
    rnd = random.Random(2000 + i)
    ch = grpc.insecure_channel(plat.grpc_addr, options=GRPC_OPTS)
    try:
        call = ch.unary_unary("/echo.Echo/Unary")
        for k in range(0, n, 4):
            reqs = [payload(f"g:{i}:{k + j}:", rnd) for j in range(min(4, n - k))]
            futs = [call.future(r, timeout=60) for r in reqs]
            for r, f in zip(reqs, futs):
                try:
                    if f.result() != r:
                        errs.add(f"grpc {i}/{k}: wrong reply")
                except grpc.RpcError as e:
                    errs.add(f"grpc {i}/{k}: {e.code()} {e.details()}")
        msgs = [payload(f"gb:{i}:{k}:", rnd) for k in range(20)]
        try:
            if list(ch.stream_stream("/echo.Echo/Bidi")(iter(msgs), timeout=60)) != msgs:
                errs.add(f"grpc {i} bidi: wrong replies")
        except grpc.RpcError as e:
            errs.add(f"grpc {i} bidi: {e.code()} {e.details()}")
    finally:
        ch.close()


def thrift_connect(port, kind):
    """A calc client over one of the framings: framed binary/compact (routed by the port's
    default function), THeader binary/compact (routed by the faas-function header)."""
    s = TSocket.TSocket("127.0.0.1", port)
    s.setTimeout(60000)
    s.open()
    if kind.startswith("theader"):
        p = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=2 if kind.endswith("compact") else 0)
    else:
        t = TTransport.TFramedTransport(s)
        p = TCompactProtocol.TCompactProtocol(t) if kind.endswith("compact") else TBinaryProtocol.TBinaryProtocol(t)
    return Client(p), p, s


THRIFT_KINDS = ("framed-binary", "framed-compact", "theader-binary", "theader-compact")


def thrift_client(plat, i, n, errs):
    """n echo calls, a new connection every 20; strings with multi-byte characters."""
    rnd = random.Random(3000 + i)
    kind = THRIFT_KINDS[i % len(THRIFT_KINDS)]
    c = p = s = None
    for k in range(n):
        # the first 64 characters come back as a reply info header (calc_server's
        # echo-reply): ASCII there, since the platform drops non-ASCII header values
        tail = "".join(rnd.choice("aZ09 é€☃\u00ff") for _ in range(rnd.randrange(0, 500)))
        msg = f"t:{kind}:{i}:{k}:".ljust(64, "-") + tail
        try:
            if s is None or k % 20 == 0:
                if s is not None:
                    s.close()
                c, p, s = thrift_connect(plat.thrift_port, kind)
            if kind.startswith("theader"):
                p.set_header(b"faas-function", b"tcalc")
            got = c.call("echo", msg)
            if got != msg:
                errs.add(f"thrift {kind} {i}/{k}: wrong reply")
            elif kind.startswith("theader") and p.get_headers().get(b"echo-reply") != msg[:64].encode():
                errs.add(f"thrift {kind} {i}/{k}: reply header lost: {p.get_headers()!r}")
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errs.add(f"thrift {kind} {i}/{k}: {e!r}")
            s = None
    if s is not None:
        s.close()


def run_all(jobs):
    ts = [threading.Thread(target=f, args=a, daemon=True) for f, a in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not any(t.is_alive() for t in ts), "a client hung"


# ---- a. mixed load, b. counts after it --------------------------------------------

H1_CLIENTS, H1_N = 6, 50
H2_CLIENTS, H2_N = 2, 15
H2LOAD_N, H2LOAD_CONNS = 400, 4
GRPC_CLIENTS, GRPC_N = 4, 60
THRIFT_CLIENTS, THRIFT_N = 8, 40


def warm(plat):
    """One call of each function, so the load below starts from ready instances."""
    errs = Errors()
    http1_client(plat, 99, 1, errs)
    grpc_client(plat, 99, 1, errs)
    thrift_client(plat, 99, 1, errs)
    assert errs.items == [], errs.items + [plat.logs()]


def settled(plat):
    """Nothing held or in flight at the gateway, and no connection left but the scrape's
    own: queue depths, any in-flight gauge, the connection gauge."""
    s = scrape(plat)
    busy = [(n, l, v) for n, l, v in s if v != 0 and (n == "faas_queue_depth" or "inflight" in n or "in_flight" in n)]
    conns = msum(s, "faas_gw_connections")
    return (not busy and conns == 1) or None


def test_mixed_load_every_answer_correct_and_metrics_add_up(plat, tmp_path):
    warm(plat)
    wait_until(lambda: settled(plat), 30, interval=0.1, what="the gateway idle before the load")
    before = scrape(plat)
    errs = Errors()
    jobs = [(http1_client, (plat, i, H1_N, errs)) for i in range(H1_CLIENTS)]
    jobs += [(h2_client, (plat, str(tmp_path), i, H2_N, errs)) for i in range(H2_CLIENTS)]
    jobs += [(h2load_client, (plat, str(tmp_path), H2LOAD_N, H2LOAD_CONNS, errs))]
    jobs += [(grpc_client, (plat, i, GRPC_N, errs)) for i in range(GRPC_CLIENTS)]
    jobs += [(thrift_client, (plat, i, THRIFT_N, errs)) for i in range(THRIFT_CLIENTS)]
    run_all(jobs)
    assert errs.items == [], f"{len(errs.items)} failures, first: {errs.items[:10]}\n{plat.logs()}"

    # b. the in-flight state drains to nothing once every client has closed
    wait_until(lambda: settled(plat), 30, interval=0.1, what="queues, in-flight and connections back to zero")
    after = scrape(plat)
    # every call counted once, on the loop that served it, and all of them successes
    want = {("techo", "http1.1"): ({"200": H1_CLIENTS * H1_N}),
            ("techo", "h2"): ({"200": H2_CLIENTS * H2_N + H2LOAD_N}),
            ("grpc-echo", "grpc"): ({"0": GRPC_CLIENTS * (GRPC_N + 1)}),
            ("tcalc", "thrift"): ({"200": THRIFT_CLIENTS * THRIFT_N})}
    got = {k: delta(by_code(after, *k), by_code(before, *k)) for k in want}
    assert got == want, got
    for fn, n in (("techo", H1_CLIENTS * H1_N + H2_CLIENTS * H2_N + H2LOAD_N),
                  ("grpc-echo", GRPC_CLIENTS * (GRPC_N + 1)), ("tcalc", THRIFT_CLIENTS * THRIFT_N)):
        d = msum(after, "faas_request_duration_seconds_count", function=fn) - \
            msum(before, "faas_request_duration_seconds_count", function=fn)
        assert d == n, (fn, d, n)
    # the instances were ready before the load: no loop asked for another one
    assert msum(after, "faas_cold_starts_total") == msum(before, "faas_cold_starts_total"), plat.logs()
    assert msum(after, "faas_cold_start_failures_total") == msum(before, "faas_cold_start_failures_total")


# ---- c. cold start asked for by many connections at once --------------------------

def burst(plat, fn, n, path):
    """n connections opened first (spread over the loops by SO_REUSEPORT), then one GET
    each sent at the same moment; returns [(status, body)]."""
    conns = [http.client.HTTPConnection("127.0.0.1", plat.http_port, timeout=60) for _ in range(n)]
    for c in conns:
        c.connect()
    go = threading.Barrier(n)
    out = [None] * n

    def one(i):
        try:
            go.wait(30)
            conns[i].request("GET", f"/function/{fn}{path}")
            r = conns[i].getresponse()
            out[i] = (r.status, r.read())
        except Exception as e:  # noqa: BLE001 - reported in the assertion
            out[i] = ("error", repr(e))
        finally:
            conns[i].close()

    run_all([(one, (i,)) for i in range(n)])
    return out


def check_burst(plat, fn, calls, needed):
    """calls simultaneous 2 s calls to fn, all answered, with exactly needed Acquires
    and none sent to an instance that was gone."""
    wm0 = plat.wm_metric("faas_wm_acquisitions_total")
    m0 = scrape(plat)
    gw0 = msum(m0, "faas_cold_starts_total")
    res = burst(plat, fn, calls, "/slow?ms=2000")
    assert [r[0] for r in res] == [200] * calls, (res, plat.logs())
    assert all(r[1] == b"slept 2000 ms\n" for r in res), res[:3]
    # the gateway's count and the worker manager's: Acquire calls it answered, whichever
    # loop sent them (its own scale-ups on OVERLOAD carry no call and are not counted)
    assert msum(scrape(plat), "faas_cold_starts_total") - gw0 == needed, plat.logs()
    assert plat.wm_metric("faas_wm_acquisitions_total") - wm0 == needed, plat.logs()
    m1 = scrape(plat)
    for stale in ("faas_gateway_instances_unreachable_total", "faas_gateway_calls_rerouted_total"):
        assert msum(m1, stale) == msum(m0, stale), (stale, plat.logs())
    wait_until(lambda: settled(plat), 30, interval=0.1, what="nothing held after the burst")


@pytest.mark.parametrize("concurrency,calls,needed", [(0, 32, 1), (8, 16, 2)], ids=["unlimited-32", "c8-16"])
def test_cold_start_burst_makes_one_acquire_per_needed_instance(plat, concurrency, calls, needed):
    """docs/scaling.md, disp_acquire_needed: held calls need ceil(calls / concurrency)
    instances (one when unlimited). The calls sleep 2 s, so all of them are held or in
    flight together whatever the cold start takes; a gateway whose loops each asked for
    their own share would make more Acquires than that (2 instead of 1 for 32 calls
    over two loops; 3 instead of 2 for 16 calls split unevenly)."""
    fn = f"tcold{concurrency}"
    plat.deploy_hello(fn, "--concurrency", str(concurrency))
    check_burst(plat, fn, calls, needed)
    if concurrency == 0:
        # unlimited: the one instance took every call, so no cap, no OVERLOAD, no sibling
        assert len(plat.instances(fn)) == 1, plat.instances(fn)


def test_cold_start_burst_after_scale_to_zero(plat):
    """The same burst once the function's instances were released for idleness: every
    loop must have forgotten the released instance (no call sent to it) and still ask
    for one instance, not one each."""
    fn = "tzero"
    plat.deploy_hello(fn, "--idle-timeout", "1s")
    check_burst(plat, fn, 8, 1)
    wait_until(lambda: plat.instances(fn) == [] and msum(scrape(plat), "faas_instances", function=fn) == 0, 30,
               interval=0.2, what="the function scaled to zero")
    check_burst(plat, fn, 32, 1)


# ---- d. the flag ------------------------------------------------------------------

def listening_sockets(pid, port):
    """How many listening TCP sockets on 127.0.0.1:port process pid holds."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            col = line.split()
            if col[1] == f"0100007F:{port:04X}" and col[3] == "0A":
                inodes.add(col[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        held += link.startswith("socket:[") and link[8:-1] in inodes
    return held


def test_each_loop_listens_on_every_port(plat):
    """--threads 2: one listener per loop on each of the HTTP, gRPC and Thrift ports
    (SO_REUSEPORT), as many as the loops the gateway says it runs (one while it warns
    that it runs one whatever --threads says)."""
    with open(plat.gateway.log_path, errors="replace") as f:
        loops = 1 if "event=threads_unsupported" in f.read() else 2
    pid = plat.gateway.proc.pid
    got = {port: listening_sockets(pid, port) for port in (plat.http_port, plat.grpc_port, plat.thrift_port)}
    assert got == dict.fromkeys(got, loops), got


def gateway_run(*args):
    return subprocess.run([f"{BUILD}/faas-gateway", *args], capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("bad", ["0", "300", "-1", "two", ""])
def test_threads_out_of_range_refused(bad):
    p = gateway_run("--listen", "127.0.0.1:0", "--threads", bad)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--threads" in p.stderr, p.stderr


def _threads_help_line():
    p = gateway_run("--help")
    assert p.returncode == 0, p.stderr
    lines = [l for l in (p.stdout + p.stderr).splitlines() if l.strip().startswith("--threads")]
    assert len(lines) == 1, p.stdout + p.stderr
    return lines[0]


def test_threads_help_documents_the_default():
    line = _threads_help_line().lower()
    assert "default" in line and "cpu" in line, line


# ---- e. reserved instances and overload policies with two loops ------------------

def test_reserved_takes_calls_while_elastic_is_busy_two_loops(tmp_path):
    """test_reserved's spike case: the elastic instance's in-flight count must be seen by
    whichever loop takes the next call, or that call waits instead of going reserved."""
    import test_reserved
    p = Platform(tmp_path, pool_size=2, gateway_args=THREADS).start()
    try:
        test_reserved.test_reserved_takes_calls_while_elastic_is_busy(p)
    finally:
        p.stop()


def test_instances_come_back_down_after_the_load_ends_two_loops(tmp_path):
    """test_overload's cool-down case: the scale-up under load and the idle release down
    to min_instances, with the overloaded flags cleared on every loop."""
    import test_overload
    p = Platform(tmp_path, pool_size=3, gateway_args=THREADS).start()
    try:
        test_overload.test_instances_come_back_down_after_the_load_ends(p)
    finally:
        p.stop()
