"""faas-workermgr end to end: warm pods (namespaces, uid, no_new_privs, cgroups),
clean shutdown and crash recovery, then Acquire/Release of a real function through
real faas-discovery and faas-agent, answered over h2c.

Self-contained: FAAS_BUILD (default /work/main/build) holds the binaries; every
daemon runs on free loopback ports with a temp state dir and is killed at the end.
Must run as root (pods need namespaces and cgroups)."""
import glob
import hashlib
import io
import ipaddress
import os
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request

import grpc
import pytest

import discpb as pb
from platform_util import TEST_TOKEN, authed_channel, token_env

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
WM_BIN = os.path.join(BUILD, "faas-workermgr")
AGENT = os.path.join(BUILD, "faas-agent")
DISC_BIN = os.path.join(BUILD, "faas-discovery")
FAKE_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wm_fake_agent.py")
CG = "/sys/fs/cgroup"

pb.SCHEMA.update({
    "AcquireTiming": {"queue_us": (1, "uint32", False), "code_us": (2, "uint32", False),
                      "specialize_us": (3, "uint32", False), "exec_us": (4, "uint32", False),
                      "ready_us": (5, "uint32", False), "total_us": (6, "uint32", False)},
    "AcquireRequest": {"spec": (1, "FunctionSpec", False), "request_id": (2, "string", False),
                       "timeout_ms": (3, "uint32", False)},
    "AcquireReply": {"instance": (1, "Instance", False), "timing": (2, "AcquireTiming", False)},
    "ReleaseRequest": {"instance_id": (1, "string", False), "reason": (2, "string", False)},
    "WorkerStats": {"acquisitions": (1, "uint64", False), "cold_starts": (2, "uint64", False),
                    "failures": (3, "uint64", False), "pool_ready": (4, "uint32", False),
                    "instances": (5, "uint32", False)},
    "LogsRequest": {"function": (1, "string", False), "tail": (2, "uint32", False)},
    "LogLines": {"lines": (1, "string", True)},
})

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(WM_BIN),
                                reason="needs root and a built faas-workermgr")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")


def http_get(port, path, timeout=2):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


class Proc:
    """A daemon started in its own session, with its output in a log file."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"exited {self.proc.returncode}: {self.log()}")
        return True

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise
        return self.proc.returncode


class WorkerManager(Proc):
    def __init__(self, tmp, agent, pool=2, discovery_port=None, wid=None, state=None, extra=()):
        self.port, self.mport = free_port(), free_port()
        self.id = wid or f"wmtest-{os.getpid()}-{free_port()}"
        self.state = state or os.path.join(tmp, "wm")
        argv = [WM_BIN, "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.mport}",
                "--discovery", f"127.0.0.1:{discovery_port or free_port()}", "--state-dir", self.state,
                "--pool-size", str(pool), "--pool-python", "0", "--id", self.id, "--agent", agent, "--lease-ttl-ms", "1500", *extra]
        # the token it demands (and sends to discovery): FAAS_TOKEN, shared with the
        # discovery of the platform fixture
        super().__init__(argv, os.path.join(tmp, f"wm-{self.id}.log"), env=token_env())
        wait_until(lambda: self.alive() and http_get(self.mport, "/healthz")[0] == 200, 10, "workermgr /healthz")
        self.channel = authed_channel(f"127.0.0.1:{self.port}", TEST_TOKEN)

    def metric(self, name):
        for line in http_get(self.mport, "/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def call(self, method, req_msg, req, resp_msg, timeout=15):
        raw = self.channel.unary_unary("/faas.WorkerManager/" + method)(pb.encode(req_msg, req), timeout=timeout)
        return pb.decode(resp_msg, raw)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.channel.close()
        return super().stop(sig, timeout)

    def pod_pids(self):
        """Host pids of the pods' init processes (the agents), from the v2 membership cgroups."""
        pids = []
        for procs in glob.glob(f"{CG}/unified/faas/{self.id}/*/cgroup.procs") + \
                glob.glob(f"{CG}/faas/{self.id}/*/cgroup.procs"):
            with open(procs) as f:
                pids += [int(x) for x in f.read().split()]
        return pids


def cg_value(wm, pod_id, v1, v2):
    """A limit of a pod's cgroup, from v1 (hybrid hosts) or v2 (pure v2 hosts)."""
    ctrl = v1.split(".")[0]
    for path in (f"{CG}/{ctrl}/faas/{wm.id}/{pod_id}/{v1}", f"{CG}/faas/{wm.id}/{pod_id}/{v2}",
                 f"{CG}/unified/faas/{wm.id}/{pod_id}/{v2}"):
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
    raise FileNotFoundError(f"{v1}/{v2} of pod {pod_id}")


def status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].split()
    return None


def leftovers(wm):
    """Anything a worker left behind: cgroup dirs, mounts under its state dir, pod dirs."""
    left = glob.glob(f"{CG}/*/faas/{wm.id}") + glob.glob(f"{CG}/faas/{wm.id}")
    with open("/proc/self/mountinfo") as f:
        left += [l for l in f if f" {wm.state}/" in l]
    left += glob.glob(os.path.join(wm.state, "pods", "*"))
    return left


def pick_agent():
    return AGENT if os.path.exists(AGENT) else FAKE_AGENT


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="wm-e2e-")
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", d])


# ---- the pod driver -------------------------------------------------------------


@pytest.mark.parametrize("agent", ["real", "fake"])
def test_warm_pool_pods_are_isolated_and_cleaned_up(tmp, agent):
    agent_path = AGENT if agent == "real" else FAKE_AGENT
    if not os.path.exists(agent_path):
        pytest.skip("faas-agent not built")
    wm = WorkerManager(tmp, agent_path, pool=3)
    try:
        wait_until(lambda: wm.metric("faas_wm_pool_ready") == 3, 10, "3 warm pods")
        pids = wm.pod_pids()
        assert len(pids) == 3, pids
        my_ns = os.readlink("/proc/self/ns/pid")
        wm_ns = os.readlink(f"/proc/{wm.proc.pid}/ns/pid")
        assert my_ns == wm_ns
        for pid in pids:
            assert os.readlink(f"/proc/{pid}/ns/pid") != wm_ns
            assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink(f"/proc/{wm.proc.pid}/ns/mnt")
            assert os.readlink(f"/proc/{pid}/ns/uts") != os.readlink(f"/proc/{wm.proc.pid}/ns/uts")
            assert os.readlink(f"/proc/{pid}/ns/ipc") != os.readlink(f"/proc/{wm.proc.pid}/ns/ipc")
            assert status_field(pid, "Uid") == ["65534"] * 4
            assert status_field(pid, "Gid") == ["65534"] * 4
            assert status_field(pid, "NoNewPrivs") == ["1"]
            assert status_field(pid, "NSpid")[-1] == "1", "the agent is init of its PID namespace"
            with open(f"/proc/{pid}/mountinfo") as f:
                mounts = f.read()
            assert any(l.split()[4] == "/tmp" and " - tmpfs " in l for l in mounts.splitlines())
            assert " shared:" not in mounts, "pod mounts must be private"
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
            pod_cg = [l for l in cg.splitlines() if l.startswith("0::")][0].split("::")[1]
            assert pod_cg.startswith(f"/faas/{wm.id}/"), cg
            pod_id = pod_cg.rsplit("/", 1)[1]
            assert int(cg_value(wm, pod_id, "memory.limit_in_bytes", "memory.max")) == 256 << 20
            assert int(cg_value(wm, pod_id, "pids.max", "pids.max")) == 256
            fds = os.listdir(f"/proc/{pid}/fd")
            assert len(fds) < 16, f"pod inherited fds: {fds}"
            assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert wm.stop() == 0
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"pod process {pid} survived the WM"
        assert leftovers(wm) == []
    finally:
        wm.stop(signal.SIGKILL)


def test_pool_refills_after_a_pod_dies(tmp):
    wm = WorkerManager(tmp, pick_agent(), pool=2)
    try:
        wait_until(lambda: len(wm.pod_pids()) == 2 and wm.metric("faas_wm_pool_ready") == 2, 10, "2 warm pods")
        victim = wm.pod_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in wm.pod_pids() and len(wm.pod_pids()) == 2 and
                   wm.metric("faas_wm_pool_ready") == 2, 10, "the pool to be refilled")
        assert wm.metric("faas_wm_pods_spawned_total") == 3, wm.log()
        assert wm.stop() == 0
        assert leftovers(wm) == []
    finally:
        wm.stop(signal.SIGKILL)


def test_crashed_worker_is_cleaned_up(tmp):
    state = os.path.join(tmp, "wm")
    # WM killed, helper alive: the helper sees EOF and tears every pod down
    wm = WorkerManager(tmp, pick_agent(), pool=2, state=state)
    wait_until(lambda: len(wm.pod_pids()) == 2, 10, "2 pods")
    pids = wm.pod_pids()
    wm.proc.kill()
    wm.proc.wait()
    wait_until(lambda: all(not os.path.exists(f"/proc/{p}") for p in pids) and leftovers(wm) == [], 10,
               "helper cleanup after a WM crash")
    # WM and helper killed together: pods die with their parent; the next run cleans the rest
    wm = WorkerManager(tmp, pick_agent(), pool=2, state=state)
    wait_until(lambda: len(wm.pod_pids()) == 2, 10, "2 pods")
    pids = wm.pod_pids()
    os.killpg(wm.proc.pid, signal.SIGKILL)
    wm.proc.wait()
    wait_until(lambda: all(not os.path.exists(f"/proc/{p}") for p in pids), 10, "pods to die with the helper")
    assert glob.glob(f"{CG}/*/faas/{wm.id}"), "cgroups stay behind after a hard kill"
    wm2 = WorkerManager(tmp, pick_agent(), pool=1, state=state)
    try:
        wait_until(lambda: not glob.glob(f"{CG}/*/faas/{wm.id}"), 10, "stale cgroups of the crashed run removed")
        assert wm2.stop() == 0
        assert leftovers(wm2) == []
    finally:
        wm2.stop(signal.SIGKILL)


@pytest.mark.skipif(not os.path.exists(f"{CG}/unified/cgroup.controllers"), reason="needs a hybrid host")
def test_pure_v2_layout(tmp):
    """The hybrid host's controller-less cgroup2 mount as the root: the layout a pure
    v2 host without delegated controllers has. Membership and cgroup.kill only."""
    wm = WorkerManager(tmp, pick_agent(), pool=2, extra=["--cgroup-root", f"{CG}/unified"])
    try:
        wait_until(lambda: len(wm.pod_pids()) == 2 and wm.metric("faas_wm_pool_ready") == 2, 10, "2 warm pods")
        assert glob.glob(f"{CG}/unified/faas/{wm.id}/*/cgroup.procs")
        assert not glob.glob(f"{CG}/memory/faas/{wm.id}"), "no v1 hierarchy under a v2 root"
        pids = wm.pod_pids()
        assert wm.stop() == 0
        assert all(not os.path.exists(f"/proc/{p}") for p in pids)
        assert leftovers(wm) == []
    finally:
        wm.stop(signal.SIGKILL)


def test_bad_flags_exit_2():
    for args in (["--pool-size", "x"], ["--nope"], ["--listen", "bad"]):
        r = subprocess.run([WM_BIN] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([WM_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--pool-size" in r.stdout


# ---- the pod state machine, with the stand-in agent and a pre-filled code cache -----

FAKE_SHA = "ab" * 32


def fake_spec(name, **extra):
    spec = {"name": name, "command": ["/bin/true"], "code_sha256": FAKE_SHA}
    spec.update(extra)
    return spec


@pytest.fixture
def fake_wm(tmp):
    state = os.path.join(tmp, "wm")
    os.makedirs(os.path.join(state, "code", FAKE_SHA))  # cached: no discovery needed
    wm = WorkerManager(tmp, FAKE_AGENT, pool=1, state=state)
    wait_until(lambda: wm.metric("faas_wm_pool_ready") == 1, 10, "warm pool")
    yield wm
    wm.stop(signal.SIGKILL)


def test_concurrent_acquisitions_beyond_the_pool(fake_wm):
    wm = fake_wm
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(wm.call, "Acquire", "AcquireRequest", {"spec": fake_spec("fake-ok"), "request_id": f"c{i}"},
                          "AcquireReply") for i in range(4)]
        reps = [f.result() for f in futs]
    ids = {r["instance"]["id"] for r in reps}
    assert len(ids) == 4
    assert all(r["instance"]["state"] == pb.READY and r["timing"]["exec_us"] == 11 for r in reps)
    assert any(r["timing"]["queue_us"] > 0 for r in reps), "pool of 1: the others waited for new pods"
    assert len({r["instance"]["pid"] for r in reps}) == 4
    stats = wm.call("Stats", "Empty", {}, "WorkerStats")
    assert stats["acquisitions"] == 4 and stats["cold_starts"] == 4 and stats["instances"] == 4
    lines = wm.call("Logs", "LogsRequest", {"function": "fake-ok", "tail": 2}, "LogLines")["lines"]
    assert len(lines) == 2 and all("fake agent specialized fn=fake-ok" in l for l in lines)
    listed = wm.call("ListInstances", "FunctionName", {"name": "fake-ok"}, "InstanceList")["instances"]
    assert {i["id"] for i in listed} == ids
    assert wm.call("ListInstances", "FunctionName", {"name": "other"}, "InstanceList")["instances"] == []
    for r in reps:
        wm.call("Release", "ReleaseRequest", {"instance_id": r["instance"]["id"]}, "Empty")
    assert wm.call("ListInstances", "FunctionName", {}, "InstanceList")["instances"] == []
    wait_until(lambda: all(not os.path.exists(f"/proc/{r['instance']['pid']}") for r in reps), 5, "released pods gone")
    wait_until(lambda: len(wm.pod_pids()) == 1, 5, "only the warm pool left")
    assert wm.stop() == 0
    assert leftovers(wm) == []


def test_failed_and_hung_specializations(fake_wm):
    wm = fake_wm
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-hang"), "timeout_ms": 500}, "AcquireReply")
    took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fake-hang" in e.value.details() and "not ready in time" in e.value.details()
    assert 0.4 < took < 3, took
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-fail")}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fake-fail" in e.value.details() and "fake failure" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # not cached, and no discovery to fetch it from
        wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-nocode", code_sha256="cd" * 32),
                                              "timeout_ms": 3000}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fake-nocode" in e.value.details() and "127.0.0.1" not in e.value.details(), e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("x", code_sha256="../etc")}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Release", "ReleaseRequest", {"instance_id": "nope"}, "Empty")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    stats = wm.call("Stats", "Empty", {}, "WorkerStats")
    assert stats["failures"] == 3 and stats["instances"] == 0
    wait_until(lambda: len(wm.pod_pids()) == 1 and wm.metric("faas_wm_pool_ready") == 1, 5, "failed pods cleaned")
    assert wm.stop() == 0
    assert leftovers(wm) == []


def test_missing_agent_fails_fast(tmp):
    state = os.path.join(tmp, "wm")
    os.makedirs(os.path.join(state, "code", FAKE_SHA))
    wm = WorkerManager(tmp, os.path.join(tmp, "no-such-agent"), pool=1, state=state)
    try:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-ok"), "timeout_ms": 8000}, "AcquireReply")
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no pod could be started" in e.value.details()
        assert time.monotonic() - t0 < 3
        assert "pod setup failed" in wm.log() and "no-such-agent" in wm.log()
        assert wm.stop() == 0
        assert leftovers(wm) == []
    finally:
        wm.stop(signal.SIGKILL)


def test_overload_scales_up_to_max_instances(fake_wm):
    wm = fake_wm
    wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-overload", max_instances=3)}, "AcquireReply")
    count = lambda: len(wm.call("ListInstances", "FunctionName", {"name": "fake-overload"},
                                "InstanceList")["instances"])
    wait_until(lambda: count() == 3, 10, "scale-up to max_instances")
    time.sleep(0.5)  # every new instance reports overload too: it must stop at the limit
    assert count() == 3
    assert wm.metric("faas_wm_acquisitions_total") == 1 and wm.metric("faas_wm_cold_starts_total") == 3
    assert wm.stop() == 0
    assert leftovers(wm) == []


def test_overload_degree_starts_that_many_at_once_and_recovered_clears(fake_wm):
    wm = fake_wm
    wm.call("Acquire", "AcquireRequest", {"spec": fake_spec("fake-degree", max_instances=4)}, "AcquireReply")
    insts = lambda: wm.call("ListInstances", "FunctionName", {"name": "fake-degree"}, "InstanceList")["instances"]
    wait_until(lambda: any(i.get("overloaded") for i in insts()), 5, "the reporting instance marked overloaded")
    wait_until(lambda: len(insts()) == 4, 10, "degree 3: three more")
    assert wm.log().count("event=scale_up fn=fake-degree") == 1, "all three from one report"
    assert "degree=3 adding=3" in wm.log()
    wait_until(lambda: not any(i.get("overloaded") for i in insts()), 10, "RECOVERED clears the mark")
    assert wm.metric('faas_wm_overload_events_total{signal="queueing"}') >= 1
    assert wm.metric("faas_wm_scale_up_ready_seconds_count") == 3
    assert wm.stop() == 0
    assert leftovers(wm) == []


def log_sizes(wm, fn):
    out = {}
    for f in glob.glob(os.path.join(wm.state, "logs", fn + ".log*")):
        out[os.path.basename(f)] = os.stat(f).st_size
    return out


def test_log_file_an_agent_floods_without_asking_is_rotated_by_the_tick(fake_wm):
    # docs/security.md "Bounded logs": the bound holds even when an agent does not keep it
    wm = fake_wm
    spec = fake_spec("fake-flood", logs={"max_bytes": 64 << 10, "keep": 1})
    wm.call("Acquire", "AcquireRequest", {"spec": spec}, "AcquireReply")
    cur = os.path.join(wm.state, "logs", "fake-flood.log")
    wait_until(lambda: wm.metric('faas_wm_log_rotations_total{function="fake-flood"}') >= 1, 5, "the tick rotates")
    sizes = log_sizes(wm, "fake-flood")
    assert set(sizes) <= {"fake-flood.log", "fake-flood.log.1"}, sizes
    # the rotated file was past the bound plus slack (256 KiB): cut back to the bound
    assert sizes["fake-flood.log.1"] <= 64 << 10, sizes
    wait_until(lambda: "fake agent got a new log file" in open(cur).read(), 5, "LOG_FD to the pod")
    assert "event=log_rotated fn=fake-flood keep=1 by=worker-manager" in wm.log()
    lines = wm.call("Logs", "LogsRequest", {"function": "fake-flood", "tail": 3}, "LogLines")["lines"]
    assert lines[-1] == "fake agent got a new log file" and lines[0].startswith("y"), lines
    assert wm.stop() == 0


def test_log_rotate_from_the_agent_and_its_dropped_counts(fake_wm):
    wm = fake_wm
    spec = fake_spec("fake-rotate", logs={"max_bytes": 64 << 10, "keep": 2})
    wm.call("Acquire", "AcquireRequest", {"spec": spec}, "AcquireReply")
    wait_until(lambda: wm.metric('faas_wm_log_dropped_bytes_total{function="fake-rotate"}') == 1000, 5,
               "LOG_DROPPED counted")
    assert wm.metric('faas_wm_log_dropped_lines_total{function="fake-rotate"}') == 10
    assert wm.metric('faas_wm_log_rotations_total{function="fake-rotate"}') == 1
    assert "event=log_rotated fn=fake-rotate keep=2 by=agent" in wm.log()
    sizes = log_sizes(wm, "fake-rotate")
    assert sizes["fake-rotate.log.1"] > 70 * 1024 and "fake-rotate.log.2" not in sizes, sizes
    with open(os.path.join(wm.state, "logs", "fake-rotate.log")) as f:
        assert f.read() == "fake agent got a new log file\n"
    assert wm.stop() == 0


# ---- Acquire / Release with discovery and the real agent ---------------------------

SERVER_PY = r'''
import http.server, os, socket
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("hello from %s uid=%d cwd=%s host=%s\n" % (self.path, os.getuid(), os.getcwd(),
                socket.gethostname())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        print("req", fmt % args, flush=True)
print("starting on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def targz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o700 if name == "hello" else 0o600  # the WM must make it readable for the pod uid
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def platform(tmp):
    if not (os.path.exists(AGENT) and os.path.exists(DISC_BIN)):
        pytest.skip("needs faas-agent and faas-discovery")
    dport, dmport = free_port(), free_port()
    disc = Proc([DISC_BIN, "--listen", f"127.0.0.1:{dport}", "--metrics-listen", f"127.0.0.1:{dmport}",
                 "--state-dir", os.path.join(tmp, "disc")], os.path.join(tmp, "disc.log"), env=token_env())
    wait_until(lambda: disc.alive() and http_get(dmport, "/healthz")[0] == 200, 10, "discovery")
    dch = authed_channel(f"127.0.0.1:{dport}", TEST_TOKEN)
    wm = WorkerManager(tmp, AGENT, pool=2, discovery_port=dport)
    yield disc, dch, wm
    wm.stop(signal.SIGTERM)
    dch.close()
    disc.stop()


def clean(v):
    """A decoded message back into encodable form (unset sub-messages dropped)."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return v


def disc_call(ch, method, req_msg, req, resp_msg):
    raw = ch.unary_unary("/faas.Discovery/" + method)(pb.encode(req_msg, req), timeout=10)
    return pb.decode(resp_msg, raw)


def deploy(dch, name, command, files, **extra):
    data = targz(files)
    chunks = iter([pb.encode("CodeChunk", {"data": data})])
    ref = pb.decode("CodeRef", dch.stream_unary("/faas.Discovery/UploadCode")(chunks, timeout=10))
    assert ref["sha256"] == hashlib.sha256(data).hexdigest()
    spec = {"name": name, "command": command, "code_sha256": ref["sha256"], "health": {"path": "/"}}
    spec.update(extra)
    return clean(disc_call(dch, "Deploy", "FunctionSpec", spec, "FunctionSpec"))


def discovery_instances(dch, name):
    return disc_call(dch, "ListInstances", "FunctionName", {"name": name}, "InstanceList")["instances"]


def test_acquire_release_real_function(platform):
    disc, dch, wm = platform
    spec = deploy(dch, "hello-wm", ["/usr/bin/python3", "server.py"], {"server.py": SERVER_PY.encode()},
                  resources={"memory_bytes": 64 << 20, "cpu_millis": 500, "pids": 64})
    wait_until(lambda: wm.metric("faas_wm_pool_ready") == 2, 10, "warm pool")
    warm = set(wm.pod_pids())

    rep = wm.call("Acquire", "AcquireRequest", {"spec": spec, "request_id": "r1", "timeout_ms": 10000},
                  "AcquireReply")
    inst, timing = rep["instance"], rep["timing"]
    print("cold start timing (us):", timing)
    assert inst["function"] == "hello-wm" and inst["state"] == pb.READY
    assert inst["worker_id"] == wm.id and inst["id"]
    assert inst["pid"] in warm, "a warm pod was specialized"
    assert timing["code_us"] > 0, "first acquisition fetched the code"
    assert timing["total_us"] >= timing["specialize_us"] + timing["ready_us"]
    host, port = inst["endpoint"].rsplit(":", 1)
    # the pod's own address in its network namespace (10.200.0.0/16, a /30 each)
    assert ipaddress.ip_address(host) in ipaddress.ip_network("10.200.0.0/16"), host
    # ... and only there: the host's loopback does not lead into the pod
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "5",
                        f"http://127.0.0.1:{port}/hi"], capture_output=True, text=True)
    assert r.returncode != 0 or "hello from" not in r.stdout, r.stdout

    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "5",
                        f"http://{host}:{port}/hi"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "hello from /hi uid=65534" in r.stdout
    # the code is at a fixed path in the pod, whatever the state dir's host path
    assert r.stdout.strip().split("cwd=")[1].split()[0] == "/tmp/.faas/code", r.stdout

    # limits of the spec are in the pod's cgroups
    pod_cg = [l for l in open(f"/proc/{inst['pid']}/cgroup").read().splitlines() if l.startswith("0::")][0]
    pod_id = pod_cg.rsplit("/", 1)[1]
    assert f"host={pod_id}" in r.stdout, "the pod's hostname is its id"
    assert int(cg_value(wm, pod_id, "memory.limit_in_bytes", "memory.max")) == 64 << 20
    assert cg_value(wm, pod_id, "cpu.cfs_quota_us", "cpu.max") in ("50000", "50000 100000")
    assert int(cg_value(wm, pod_id, "pids.max", "pids.max")) == 64
    # the code is read-only in the pod
    code_mount = [l for l in open(f"/proc/{inst['pid']}/mountinfo") if l.split()[4] == "/tmp/.faas/code"]
    assert code_mount and "ro" in code_mount[0].split()[5].split(","), code_mount

    wait_until(lambda: [i["id"] for i in discovery_instances(dch, "hello-wm")] == [inst["id"]], 5,
               "instance registered in discovery")
    listed = wm.call("ListInstances", "FunctionName", {"name": "hello-wm"}, "InstanceList")["instances"]
    assert [i["id"] for i in listed] == [inst["id"]]
    stats = wm.call("Stats", "Empty", {}, "WorkerStats")
    assert stats["acquisitions"] == 1 and stats["cold_starts"] == 1 and stats["instances"] == 1
    wait_until(lambda: wm.metric("faas_wm_pool_ready") == 2, 10, "pool refilled after the take")
    wait_until(lambda: any("req" in l for l in wm.call("Logs", "LogsRequest", {"function": "hello-wm", "tail": 10},
                                                       "LogLines")["lines"]), 5, "user server log lines")

    # a second acquisition hits the code cache
    rep2 = wm.call("Acquire", "AcquireRequest", {"spec": spec, "request_id": "r2"}, "AcquireReply")
    print("warm-cache cold start timing (us):", rep2["timing"])
    assert rep2["timing"]["code_us"] == 0 and rep2["instance"]["id"] != inst["id"]

    wm.call("Release", "ReleaseRequest", {"instance_id": inst["id"], "reason": "idle"}, "Empty")
    wait_until(lambda: [i["id"] for i in discovery_instances(dch, "hello-wm")] == [rep2["instance"]["id"]], 5,
               "released instance deregistered")
    wait_until(lambda: not os.path.exists(f"/proc/{inst['pid']}"), 5, "released pod gone")
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Release", "ReleaseRequest", {"instance_id": inst["id"]}, "Empty")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    # a user server that dies is deregistered at once
    os.kill(rep2["instance"]["pid"], signal.SIGKILL)
    wait_until(lambda: discovery_instances(dch, "hello-wm") == [], 5, "dead instance deregistered")
    workers = lambda: [w["id"] for w in disc_call(dch, "ListWorkers", "Empty", {}, "WorkerList")["workers"]]
    assert wm.id in workers()
    assert wm.stop() == 0
    assert leftovers(wm) == []
    wait_until(lambda: wm.id not in workers(), 3, "worker deregistered at shutdown")


def test_acquire_failure_is_unavailable(platform):
    disc, dch, wm = platform
    spec = deploy(dch, "broken-wm", ["/usr/bin/python3", "-c", "import sys; sys.exit(3)"], {"x": b"x"})
    wait_until(lambda: wm.metric("faas_wm_pool_ready") == 2, 10, "warm pool")
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": spec, "timeout_ms": 5000}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "broken-wm" in e.value.details() and "127.0.0.1" not in e.value.details()
    bad = dict(spec, code_sha256="0" * 64)
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": bad, "timeout_ms": 5000}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "broken-wm" in e.value.details()
    assert "no such artifact" in e.value.details() and "127.0.0.1" not in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        wm.call("Acquire", "AcquireRequest", {"spec": dict(spec, name="Bad Name")}, "AcquireReply")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stats = wm.call("Stats", "Empty", {}, "WorkerStats")
    assert stats["failures"] == 2 and stats["instances"] == 0
    wait_until(lambda: wm.metric("faas_wm_pool_ready") == 2 and len(wm.pod_pids()) == 2, 10, "pool refilled")
    assert wm.stop() == 0
    assert leftovers(wm) == []
