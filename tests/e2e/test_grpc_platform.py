"""gRPC end to end: an unmodified python3-grpcio server (examples/grpc-echo) deployed as
a function and called through the gateway's gRPC port by python3-grpcio and by a grpc
core C client (faasctl invoke --grpc)."""
import base64
import os
import re
import signal
import threading
import time
import urllib.request

import pytest

from platform_util import BUILD, ROOT, Platform, wait_until

grpc = pytest.importorskip("grpc")

BIG = 64 << 20
OPTS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]
EXAMPLE = os.path.join(ROOT, "examples", "grpc-echo")


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpc")
    p = Platform(d, pool_size=2, grpc=True, gateway_args=("--queue-max", "8")).start()
    p.ctl("deploy", "-f", os.path.join(EXAMPLE, "function.yaml"), "--memory", "512Mi", "--pids", "512",
          "--timeout", "60s")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def chan(plat):
    ch = grpc.insecure_channel(plat.grpc_addr, options=OPTS)
    yield ch
    ch.close()


def fn_logs(plat):
    return plat.ctl("logs", "grpc-echo", "--tail", "1000").stdout


def metric_lines(plat, fn="grpc-echo"):
    with urllib.request.urlopen(f"{plat.gateway_url}/metrics", timeout=5) as r:
        txt = r.read().decode()
    return [l for l in txt.splitlines() if l.startswith("faas_requests_total") and f'function="{fn}"' in l
            and 'protocol="grpc"' in l]


def count(plat, code, fn="grpc-echo"):
    for l in metric_lines(plat, fn):
        if f'code="{code}"' in l:
            return int(l.rsplit(" ", 1)[1])
    return 0


def test_unary_cold_start_first_call(plat, chan):
    # the fixture deployed the function and nothing called it yet: this call cold-starts it
    assert plat.instances("grpc-echo") == []
    t0 = time.monotonic()
    assert chan.unary_unary("/echo.Echo/Unary")(b"hello", timeout=30) == b"hello"
    assert time.monotonic() - t0 < 30
    assert len(plat.instances("grpc-echo")) == 1
    wait_until(lambda: count(plat, 0) >= 1, 5, what="grpc metric")


def test_server_streaming_10000(plat, chan):
    got = list(chan.unary_stream("/echo.Echo/ServerStream")(b"10000:100", timeout=60))
    assert len(got) == 10000
    assert all(m == bytes(i % 251 for i in range(100)) for m in got[:3])


def test_client_streaming(plat, chan):
    msgs = [b"x" * (i + 1) for i in range(500)]
    r = chan.stream_unary("/echo.Echo/ClientStream")(iter(msgs), timeout=30)
    assert int(r) == sum(len(m) for m in msgs)


def test_bidi_echo(plat, chan):
    msgs = [f"m{i}".encode() * (i % 7 + 1) for i in range(300)]
    got = list(chan.stream_stream("/echo.Echo/Bidi")(iter(msgs), timeout=30))
    assert got == msgs


def test_bidi_interleaved(plat, chan):
    """Each reply arrives before the next request is sent (no buffering of whole bodies)."""
    import queue
    q = queue.Queue()

    def gen():
        for i in range(20):
            yield f"ping{i}".encode()
            assert q.get(timeout=10) == f"ping{i}".encode()
    it = chan.stream_stream("/echo.Echo/Bidi")(gen(), timeout=30)
    for m in it:
        q.put(m)


def test_100_concurrent_streams_one_channel(plat, chan):
    call = chan.unary_unary("/echo.Echo/Unary")
    futs = [call.future(f"c{i}".encode(), timeout=30) for i in range(100)]
    assert [f.result() for f in futs] == [f"c{i}".encode() for i in range(100)]
    streams = [chan.unary_stream("/echo.Echo/ServerStream")(b"50:1000", timeout=30) for _ in range(100)]
    assert all(len(list(s)) == 50 for s in streams)


def test_4mib_message(plat, chan):
    big = os.urandom(4 << 20)
    assert chan.unary_unary("/echo.Echo/Unary")(big, timeout=60) == big
    got = list(chan.stream_stream("/echo.Echo/Bidi")(iter([big, big[:100], big]), timeout=60))
    assert got == [big, big[:100], big]


def test_user_status_and_trailing_metadata_intact(plat, chan):
    before = count(plat, 5)
    with pytest.raises(grpc.RpcError) as ei:
        chan.unary_unary("/echo.Echo/Unary")("status:NOT_FOUND:no such thing: café 100%\n".encode(), timeout=10)
    e = ei.value
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert e.details() == "no such thing: café 100%\n"
    md = dict(e.trailing_metadata())
    assert md["x-custom"] == "kept as sent"
    assert md["x-bin-bin"] == b"\x00\x01\xfe\xff"
    wait_until(lambda: count(plat, 5) == before + 1, 5, what="NOT_FOUND counted from trailers")


def test_unknown_service_unimplemented(plat, chan):
    with pytest.raises(grpc.RpcError) as ei:
        chan.unary_unary("/nope.Missing/Call")(b"x", timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_faas_function_header_overrides(plat, chan):
    r = chan.unary_unary("/other.Name/Unary")
    # the service is unknown, but the header names the function: the user server answers
    with pytest.raises(grpc.RpcError) as ei:
        r(b"x", timeout=10, metadata=(("faas-function", "grpc-echo"),))
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED  # from the user server this time
    with pytest.raises(grpc.RpcError) as ei:
        r(b"x", timeout=10, metadata=(("faas-function", "no-such-fn"),))
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_non_grpc_content_type_415(plat):
    import subprocess
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                          "-X", "POST", "-H", "content-type: application/json", "-d", "{}",
                          f"http://{plat.grpc_addr}/echo.Echo/Unary"], capture_output=True, text=True, timeout=10)
    assert out.stdout == "415"


def test_deadline_exceeded_and_upstream_cancelled(plat, chan):
    assert chan.unary_unary("/echo.Echo/Unary")(b"warm", timeout=30) == b"warm"
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        chan.unary_unary("/echo.Echo/Unary")(b"sleep:5000", timeout=0.5)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 3
    # the user server saw its call cancelled (RST_STREAM CANCEL reached it)
    wait_until(lambda: "cancelled Unary sleep" in fn_logs(plat), 5, interval=0.2, what="user server saw the cancel")


def test_grpc_timeout_forwarded_as_time_left(plat, chan):
    call = chan.unary_unary("/echo.Echo/Unary")
    left = float(call(b"deadline", timeout=5))
    assert 3.5 < left <= 5.1  # grpc core measures from its own (cached) clock
    # without a client deadline the function's max duration (15 min by default) bounds the call
    left = float(call(b"deadline"))
    assert 890 < left <= 900.1


def test_client_cancel_reaches_user_server(plat, chan):
    cancelled = count(plat, 1)
    it = chan.unary_stream("/echo.Echo/ServerStream")(b"100001:10:10", timeout=60)
    assert len(next(it)) == 10
    it.cancel()
    wait_until(lambda: "cancelled ServerStream 100001" in fn_logs(plat), 5, interval=0.2,
               what="user server saw the client cancel")
    wait_until(lambda: count(plat, 1) == cancelled + 1, 5, what="the cancelled call counted as code 1")


def test_faasctl_invoke_grpc(plat):
    env = plat.env()
    env["FAAS_GRPC_GATEWAY"] = plat.grpc_addr
    import subprocess
    p = subprocess.run([f"{BUILD}/faasctl", "invoke", "grpc-echo", "--grpc", "/echo.Echo/Unary", "--data", "raw"],
                       capture_output=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"raw"
    p = subprocess.run([f"{BUILD}/faasctl", "invoke", "grpc-echo", "--grpc", "/echo.Echo/Unary", "--base64",
                        "--data", "-"], input=base64.b64encode(b"\x00\xffbin"), capture_output=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert base64.b64decode(p.stdout.strip()) == b"\x00\xffbin"
    p = subprocess.run([f"{BUILD}/faasctl", "invoke", "grpc-echo", "--grpc", "/echo.Echo/Unary",
                        "--data", "status:PERMISSION_DENIED:go away"], capture_output=True, text=True, env=env,
                       timeout=30)
    assert p.returncode != 0
    assert "PERMISSION_DENIED" in p.stderr or "7" in p.stderr
    assert "go away" in p.stderr


def user_servers(plat):
    """Host pids of the platform's gRPC user servers: those in its worker's cgroups
    (faas/<worker id>/<pod>). Every pod's server may have the same inner pid, and the
    module's earlier load may have scaled the function to several instances, so a call
    cannot tell which one will serve the next: the tests act on all of them."""
    mine = f"/faas/wm-{plat.wm_port}/"
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            cgroup = open(f"/proc/{d}/cgroup").read()
        except OSError:
            continue
        if b"server.py" in cmd and mine in cgroup:
            found.append(int(d))
    assert found, "no user server"
    return found


def test_user_server_killed_mid_stream_unavailable(plat, chan):
    assert chan.unary_unary("/echo.Echo/Unary")(b"up", timeout=10) == b"up"
    it = chan.unary_stream("/echo.Echo/ServerStream")(b"100000:10:5", timeout=60)
    assert len(next(it)) == 10
    for pid in user_servers(plat):  # the one serving the stream among them
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as ei:
        for _ in it:
            pass
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    # the platform replaces the instance: the next call cold-starts a new one
    wait_until(lambda: _call_ok(chan), 30, interval=0.2, what="function back after the kill")


def _call_ok(chan):
    try:
        return chan.unary_unary("/echo.Echo/Unary")(b"again", timeout=10) == b"again"
    except grpc.RpcError:
        return False


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def is_asan(path):
    # ASan's quarantine keeps freed buffers for a while: only a plain build says something
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def test_slow_reader_big_server_stream_memory_flat(plat):
    """A big server stream read slowly: windows are returned only as bytes move on, so
    neither the gateway nor the agent buffers it (GRPC_BIG_MB, default 256; 1024 = 1 GiB)."""
    total_mb = int(os.environ.get("GRPC_BIG_MB", "256"))
    ch = grpc.insecure_channel(plat.grpc_addr, options=OPTS)
    try:
        assert ch.unary_unary("/echo.Echo/Unary")(b"up", timeout=30) == b"up"
        # every instance's agent is watched: the stream goes to one of them
        agents = [int(open(f"/proc/{u}/status").read().split("PPid:")[1].split()[0]) for u in user_servers(plat)]
        gw = plat.gateway.proc.pid
        before = {pid: rss_kb(pid) for pid in [gw] + agents}
        peak = dict(before)
        it = ch.unary_stream("/echo.Echo/ServerStream")(f"{total_mb}:{1 << 20}".encode(), timeout=300)
        got, t0, last = 0, time.monotonic(), 0.0
        for m in it:
            got += len(m)
            # ~64 MB/s: far slower than the server can produce
            lag = got / (64 << 20) - (time.monotonic() - t0)
            if lag > 0:
                time.sleep(lag)
            if time.monotonic() - last > 0.2:
                last = time.monotonic()
                for pid in peak:
                    peak[pid] = max(peak[pid], rss_kb(pid))
        assert got == total_mb << 20
        growth = {pid: (peak[pid] - before[pid]) // 1024 for pid in peak}
        print(f"RSS growth MiB gateway={growth[gw]} agents={[growth[a] for a in agents]} for {total_mb} MiB")
        if not is_asan(plat.gateway.proc.args[0]):
            assert max(growth.values()) < 48, growth
    finally:
        ch.close()


def test_long_stream_not_cut_by_http_timeout_and_keepalive_pings(plat):
    """spec.timeout_ms (1 s here) bounds HTTP requests, not gRPC streams; client keepalive
    PINGs are answered."""
    plat.ctl("deploy", "grpc-long", "--dir", EXAMPLE, "--cmd", "/usr/bin/python3 server.py", "--protocol", "grpc",
             "--grpc-service", "long.Echo", "--health-tcp", "--timeout", "1s", "--max-duration", "60s",
             "--memory", "512Mi", "--pids", "512")
    opts = OPTS + [("grpc.keepalive_time_ms", 500), ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.max_pings_without_data", 0)]
    with grpc.insecure_channel(plat.grpc_addr, options=opts) as ch:
        md = (("faas-function", "grpc-long"),)
        t0 = time.monotonic()
        got = list(ch.unary_stream("/echo.Echo/ServerStream")(b"30:10:100", timeout=30, metadata=md))
        assert len(got) == 30 and time.monotonic() - t0 >= 3
        # idle pings on the connection, then another call on the same channel
        time.sleep(2)
        assert ch.unary_unary("/echo.Echo/Unary")(b"still", timeout=10, metadata=md) == b"still"


def test_max_duration_ends_stream_with_deadline_exceeded(plat):
    plat.ctl("deploy", "grpc-maxdur", "--dir", EXAMPLE, "--cmd", "/usr/bin/python3 server.py", "--protocol", "grpc",
             "--grpc-service", "maxdur.Echo", "--health-tcp", "--max-duration", "1500ms", "--memory", "512Mi",
             "--pids", "512")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        md = (("faas-function", "grpc-maxdur"),)
        assert ch.unary_unary("/echo.Echo/Unary")(b"warm", timeout=30, metadata=md) == b"warm"
        t0 = time.monotonic()
        n = 0
        with pytest.raises(grpc.RpcError) as ei:
            for _ in ch.unary_stream("/echo.Echo/ServerStream")(b"1000:10:10", timeout=30, metadata=md):
                n += 1
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 1.2 < time.monotonic() - t0 < 5 and n > 10


def test_queue_full_resource_exhausted(plat):
    """One instance, one call at a time, a cold start that cannot finish (the server never
    becomes healthy) and a gateway queue of 8 (--queue-max): the 9th held call gets
    RESOURCE_EXHAUSTED, the held ones UNAVAILABLE when the cold start gives up."""
    plat.ctl("deploy", "grpc-stuck", "--dir", EXAMPLE, "--cmd", "/bin/sleep 30", "--protocol", "grpc",
             "--grpc-service", "stuck.Echo", "--health-tcp", "--cold-start-timeout", "2s", "--max-instances", "1",
             "--concurrency", "1")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        call = ch.unary_unary("/stuck.Echo/Unary")
        futs = [call.future(b"x", timeout=20) for _ in range(12)]
        codes = []
        for f in futs:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4, codes
    assert codes.count(grpc.StatusCode.UNAVAILABLE) == 8, codes
    wait_until(lambda: count(plat, 8, "grpc-stuck") == 4 and count(plat, 14, "grpc-stuck") == 8, 5,
               what="platform-made statuses counted")


def test_message_over_body_limit_resource_exhausted(plat):
    plat.ctl("deploy", "grpc-small", "--dir", EXAMPLE, "--cmd", "/usr/bin/python3 server.py", "--protocol", "grpc",
             "--grpc-service", "small.Echo", "--health-tcp", "--max-body", "1Mi", "--memory", "512Mi",
             "--pids", "512")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        md = (("faas-function", "grpc-small"),)
        ok = b"k" * (512 << 10)
        assert ch.unary_unary("/echo.Echo/Unary")(ok, timeout=30, metadata=md) == ok
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/echo.Echo/Unary")(b"b" * (2 << 20), timeout=30, metadata=md)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # mid-stream: what went before is answered, then the call ends with 8
        got = []
        with pytest.raises(grpc.RpcError) as ei:
            for m in ch.stream_stream("/echo.Echo/Bidi")(iter([b"a", b"b", b"c" * (2 << 20)]), timeout=30,
                                                         metadata=md):
                got.append(m)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert got in ([], [b"a"], [b"a", b"b"])


def deploy_variant(plat, tmp_path, name, service, env):
    """examples/grpc-echo under another name, readiness by grpc.health.v1 (health: grpc)."""
    y = tmp_path / f"{name}.yaml"
    y.write_text(f"name: {name}\nprotocol: grpc\ncode: {EXAMPLE}\ncommand: [/usr/bin/python3, server.py]\n"
                 f"grpc_services: [{service}]\nhealth: {{grpc: true}}\ncold_start_timeout: 3s\n"
                 f"env: {{{env}}}\nresources: {{memory: 512Mi, pids: 512}}\n")
    plat.ctl("deploy", "-f", str(y))


def test_readiness_without_health_service_falls_back_to_accept(plat, tmp_path):
    deploy_variant(plat, tmp_path, "grpc-nohealth", "nohealth.Echo", "NO_HEALTH: '1'")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        md = (("faas-function", "grpc-nohealth"),)
        assert ch.unary_unary("/echo.Echo/Unary")(b"up", timeout=30, metadata=md) == b"up"


def test_not_serving_never_ready_unavailable(plat, tmp_path):
    deploy_variant(plat, tmp_path, "grpc-notserving", "notserving.Echo", "HEALTH_STATUS: '2'")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/notserving.Echo/Unary")(b"x", timeout=30)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert plat.instances("grpc-notserving") == []


def test_burst_of_first_calls_one_cold_start(plat):
    plat.ctl("deploy", "grpc-burst", "--dir", EXAMPLE, "--cmd", "/usr/bin/python3 server.py", "--protocol", "grpc",
             "--grpc-service", "burst.Echo", "--health-tcp", "--memory", "512Mi", "--pids", "512")
    with grpc.insecure_channel(plat.grpc_addr, options=OPTS) as ch:
        call = ch.unary_unary("/echo.Echo/Unary")
        md = (("faas-function", "grpc-burst"),)
        # 8 = the gateway queue of this module (--queue-max 8)
        futs = [call.future(f"b{i}".encode(), timeout=30, metadata=md) for i in range(8)]
        assert [f.result() for f in futs] == [f"b{i}".encode() for i in range(8)]
    assert len(plat.instances("grpc-burst")) == 1


def test_many_deadlines_each_on_time(plat, chan):
    """Calls with deadlines in mixed order each end close to their own deadline."""
    call = chan.unary_unary("/echo.Echo/Unary")
    assert call(b"warm", timeout=30) == b"warm"
    tmos = [0.3 + 0.1 * ((i * 7) % 8) for i in range(8)]  # 8 = the module's --queue-max
    t0 = time.monotonic()
    futs = [call.future(b"sleep:5000", timeout=t) for t in tmos]
    for t, f in zip(tmos, futs):
        with pytest.raises(grpc.RpcError) as ei:
            f.result()
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < max(tmos) + 1.0
