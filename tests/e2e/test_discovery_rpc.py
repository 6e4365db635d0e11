"""faas-discovery over real gRPC: uploads, deploys, restarts, watches, leases.

Self-contained: starts its own faas-discovery (FAAS_BUILD, default /work/main/build)
on free loopback ports in a temp state dir; messages are encoded by discpb."""
import hashlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import grpc
import pytest

import discpb as pb
from platform_util import authed_channel, read_token

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
BIN = os.path.join(BUILD, "faas-discovery")
SVC = "/faas.Discovery/"


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


class Discovery:
    """One faas-discovery process, restartable on the same state dir."""

    def __init__(self, state_dir, extra=()):
        self.state_dir, self.extra = state_dir, list(extra)
        self.port, self.mport = free_port(), free_port()
        self.proc = self.channel = None
        self.log_path = os.path.join(os.path.dirname(state_dir), "discovery.log")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.mport}",
             "--state-dir", self.state_dir] + self.extra,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: self._alive() and self.http("/healthz")[0] == 200, 10, "discovery /healthz")
        self.token = read_token(os.path.join(self.state_dir, "token"))
        self.channel = authed_channel(f"127.0.0.1:{self.port}", self.token)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        return self

    def _alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"faas-discovery exited {self.proc.returncode}: {self.log()}")
        return True

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}{path}", timeout=2) as r:
            return r.status, r.read().decode()

    def stop(self, sig=signal.SIGTERM):
        if self.channel:
            self.channel.close()
            self.channel = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else None

    # --- calls -----------------------------------------------------------------
    def unary(self, method, req_msg, req, resp_msg, timeout=5):
        raw = self.channel.unary_unary(SVC + method)(pb.encode(req_msg, req), timeout=timeout)
        return pb.decode(resp_msg, raw)

    def upload(self, data, chunk=64 * 1024):
        chunks = (pb.encode("CodeChunk", {"data": data[i:i + chunk]}) for i in range(0, len(data), chunk))
        raw = self.channel.stream_unary(SVC + "UploadCode")(chunks, timeout=10)
        return pb.decode("CodeRef", raw)

    def fetch(self, sha):
        it = self.channel.unary_stream(SVC + "FetchCode")(pb.encode("CodeRef", {"sha256": sha}), timeout=10)
        return b"".join(pb.decode("CodeChunk", m)["data"] for m in it)

    def deploy(self, spec):
        return self.unary("Deploy", "FunctionSpec", spec, "FunctionSpec")

    def heartbeat(self, worker, instances, ttl_ms=3000):
        self.unary("Heartbeat", "LeaseRenewal", {"worker": worker, "instances": instances, "ttl_ms": ttl_ms},
                   "Empty")


class Watch:
    """A Watch stream read on a thread into a queue."""

    def __init__(self, d, **want):
        self.q = queue.Queue()
        self.call = d.channel.unary_stream(SVC + "Watch")(pb.encode("WatchRequest", want))
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for raw in self.call:
                self.q.put((time.monotonic(), pb.decode("WatchEvent", raw)))
        except grpc.RpcError as e:
            self.q.put((time.monotonic(), e))

    def next(self, timeout=5):
        t, ev = self.q.get(timeout=timeout)
        if isinstance(ev, Exception):
            raise ev
        return t, ev

    def until_snapshot_end(self):
        evs = []
        while True:
            _, ev = self.next()
            if ev["type"] == pb.SNAPSHOT_END:
                return evs, ev
            evs.append(ev)

    def close(self):
        self.call.cancel()


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="disc-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def disc(tmp):
    d = Discovery(os.path.join(tmp, "state")).start()
    yield d
    # a clean exit also means no sanitizer report in an ASan build
    assert d.stop() == 0, d.log()
    assert "Sanitizer" not in d.log(), d.log()


def spec(name, sha, **kw):
    s = {"name": name, "command": ["./server", "--port", "$PORT"], "code_sha256": sha}
    s.update(kw)
    return s


def code(d, content=b"fake tar.gz bytes\x00\x01"):
    return d.upload(content)["sha256"]


def test_upload_deploy_get_list_delete(disc):
    data = os.urandom(200 * 1024 + 17)  # several chunks, uneven tail
    ref = disc.upload(data)
    assert ref["sha256"] == hashlib.sha256(data).hexdigest()
    assert ref["size"] == len(data)
    assert os.path.exists(os.path.join(disc.state_dir, "artifacts", ref["sha256"] + ".tar.gz"))
    assert disc.fetch(ref["sha256"]) == data

    out = disc.deploy(spec("hello", ref["sha256"], timeout_ms=5000))
    assert out["version"] >= 1 and out["created_unix_ms"] > 0
    assert out["port_env"] == "PORT" and out["timeout_ms"] == 5000
    assert out["health"]["path"] == "/" and out["max_instances"] == 100
    out2 = disc.deploy(spec("hello", ref["sha256"]))
    assert out2["version"] > out["version"]
    disc.deploy(spec("zeta", ref["sha256"]))

    got = disc.unary("GetFunction", "FunctionName", {"name": "hello"}, "FunctionSpec")
    assert got["version"] == out2["version"] and got["command"] == ["./server", "--port", "$PORT"]
    names = [f["name"] for f in disc.unary("ListFunctions", "Empty", {}, "FunctionList")["functions"]]
    assert names == ["hello", "zeta"]

    disc.unary("DeleteFunction", "FunctionName", {"name": "hello"}, "Empty")
    with pytest.raises(grpc.RpcError) as e:
        disc.unary("GetFunction", "FunctionName", {"name": "hello"}, "FunctionSpec")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "hello" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        disc.unary("DeleteFunction", "FunctionName", {"name": "hello"}, "Empty")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    _, metrics = disc.http("/metrics")
    assert "faas_discovery_functions 1" in metrics
    assert 'faas_discovery_rpc_total{method="Deploy",code="OK"} 3' in metrics
    assert 'faas_discovery_rpc_total{method="GetFunction",code="NOT_FOUND"} 1' in metrics


def test_fetch_rejects_bad_and_missing_refs(disc):
    for bad in ["../../etc/passwd", "ABC", "0" * 63, "g" * 64]:
        with pytest.raises(grpc.RpcError) as e:
            disc.fetch(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(grpc.RpcError) as e:
        disc.fetch("0" * 64)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_upload_cap_and_empty_upload(tmp):
    d = Discovery(os.path.join(tmp, "state"), ["--max-artifact-bytes", "100000"]).start()
    try:
        with pytest.raises(grpc.RpcError) as e:
            d.upload(b"x" * 100001, chunk=30000)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as e:
            d.upload(b"")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert d.upload(b"y" * 100000)["size"] == 100000
        left = [f for f in os.listdir(os.path.join(d.state_dir, "artifacts")) if f.startswith(".upload")]
        assert left == [], f"failed uploads left temp files: {left}\n{d.log()}"
    finally:
        assert d.stop() == 0


def test_bad_specs_are_invalid_argument(disc):
    sha = code(disc)
    cases = [
        (spec("Bad_Name", sha), "function name"),
        (spec("ok", sha, command=[]), "command"),
        (spec("ok", ""), "code_sha256"),
        (spec("ok", "f" * 64), "not an uploaded artifact"),
        (spec("ok", sha, min_instances=9, max_instances=3), "min_instances"),
        (spec("ok", sha, protocol=pb.THRIFT, thrift_transport="smoke-signals"), "thrift_transport"),
    ]
    for s, needle in cases:
        with pytest.raises(grpc.RpcError) as e:
            disc.deploy(s)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, s
        assert needle in e.value.details(), (needle, e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        disc.channel.unary_unary(SVC + "Deploy")(b"\xff\xff\xff", timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert disc.unary("ListFunctions", "Empty", {}, "FunctionList")["functions"] == []


def test_restart_keeps_functions_and_versions(tmp):
    state = os.path.join(tmp, "state")
    d = Discovery(state).start()
    sha = code(d)
    v1 = d.deploy(spec("keep", sha, min_instances=1))["version"]
    d.heartbeat({"id": "w1", "address": "127.0.0.1:1"}, [{"id": "i1", "function": "keep"}])
    assert d.stop() == 0, d.log()
    assert "event=stopped" in d.log()

    d = Discovery(state).start()
    try:
        got = d.unary("GetFunction", "FunctionName", {"name": "keep"}, "FunctionSpec")
        assert got["version"] == v1 and got["min_instances"] == 1 and got["code_sha256"] == sha
        assert d.fetch(sha) == b"fake tar.gz bytes\x00\x01"
        # soft state starts empty and versions keep growing
        assert d.unary("ListInstances", "FunctionName", {}, "InstanceList")["instances"] == []
        assert d.unary("ListWorkers", "Empty", {}, "WorkerList")["workers"] == []
        assert d.deploy(spec("keep", sha))["version"] > v1
        w = Watch(d, functions=True)
        evs, _ = w.until_snapshot_end()
        assert [e["function"]["name"] for e in evs] == ["keep"]
        w.close()
    finally:
        d.stop()


def test_versions_belong_to_a_function(disc, tmp):
    """Issue 10 item 3: a new function is version 1 whatever was deployed before it, as
    faasctl reports it, in GetFunction, in the watch and after a restart; a name
    deployed again after a delete goes on from its last version."""
    ctl = os.path.join(BUILD, "faasctl")
    if not os.access(ctl, os.X_OK):
        pytest.skip("faasctl is not built")
    src = os.path.join(tmp, "code")
    os.mkdir(src)
    with open(os.path.join(src, "server"), "w") as f:
        f.write("#!/bin/sh\n")
    env = dict(os.environ, FAAS_DISCOVERY=f"127.0.0.1:{disc.port}", FAAS_TOKEN=disc.token)

    def deploy(name):
        p = subprocess.run([ctl, "deploy", name, "--dir", src, "--cmd", "./server"], capture_output=True, text=True,
                           env=env, timeout=30)
        assert p.returncode == 0, p.stderr + disc.log()
        return p.stdout

    for name in ("one", "two", "three"):
        assert deploy(name).startswith(f"deployed {name} version 1 ")
    assert deploy("four").startswith("deployed four version 1 ")
    assert deploy("two").startswith("deployed two version 2 ")
    got = disc.unary("GetFunction", "FunctionName", {"name": "two"}, "FunctionSpec")
    assert got["version"] == 2
    w = Watch(disc, functions=True)
    evs, _ = w.until_snapshot_end()
    assert {e["function"]["name"]: e["function"]["version"] for e in evs} == {"one": 1, "two": 2, "three": 1,
                                                                               "four": 1}
    w.close()
    disc.unary("DeleteFunction", "FunctionName", {"name": "four"}, "Empty")
    assert deploy("four").startswith("deployed four version 2 ")
    listing = subprocess.run([ctl, "list"], capture_output=True, text=True, env=env, timeout=30).stdout
    rows = {l.split()[0]: l.split()[1] for l in listing.splitlines()[1:]}
    assert rows == {"four": "2", "one": "1", "three": "1", "two": "2"}, listing
    assert "faas_discovery_deploys_total 6" in disc.http("/metrics")[1]


def test_watch_snapshot_then_pushed_changes(disc):
    sha = code(disc)
    disc.deploy(spec("hello", sha))
    worker = {"id": "w1", "address": "127.0.0.1:7200", "pool_size": 2, "pool_ready": 2}
    inst = {"id": "i1", "function": "hello", "endpoint": "127.0.0.1:9001", "state": pb.STARTING}
    disc.heartbeat(worker, [inst])

    w = Watch(disc, functions=True, instances=True, workers=True)
    evs, end = w.until_snapshot_end()
    kinds = sorted(e["type"] for e in evs)
    assert kinds == [pb.FUNCTION_PUT, pb.INSTANCE_PUT, pb.WORKER_PUT]
    snap_inst = [e for e in evs if e["type"] == pb.INSTANCE_PUT][0]["instance"]
    assert snap_inst["worker_id"] == "w1" and snap_inst["state"] == pb.STARTING

    # a change pushed by a heartbeat: the instance turns READY, another appears
    lat = []
    for round_ in range(20):
        inst["state"] = pb.READY if round_ % 2 == 0 else pb.DRAINING
        t0 = time.monotonic()
        disc.heartbeat(worker, [inst])
        t, ev = w.next()
        lat.append(t - t0)
        assert ev["type"] == pb.INSTANCE_PUT and ev["instance"]["state"] == inst["state"]
        assert ev["revision"] > end["revision"]
    median = sorted(lat)[len(lat) // 2]
    print(f"heartbeat->watch median {median * 1e3:.2f} ms (incl. python grpc)")
    # pushed, not polled: even with Python on both ends and a sanitizer build this is ms, not tens
    assert median < 0.02, f"heartbeat->watch median {median * 1e3:.1f} ms"

    inst2 = {"id": "i2", "function": "hello", "endpoint": "127.0.0.1:9002", "state": pb.READY}
    disc.heartbeat(dict(worker, pool_ready=1), [inst2])
    got = [w.next()[1] for _ in range(3)]
    assert [g["type"] for g in got] == [pb.WORKER_PUT, pb.INSTANCE_DELETE, pb.INSTANCE_PUT]
    assert got[0]["worker"]["pool_ready"] == 1
    assert got[1]["instance"]["id"] == "i1" and got[2]["instance"]["id"] == "i2"
    revs = [g["revision"] for g in got]
    assert revs == sorted(revs) and len(set(revs)) == 3

    disc.unary("DeleteFunction", "FunctionName", {"name": "hello"}, "Empty")
    _, ev = w.next()
    assert ev["type"] == pb.FUNCTION_DELETE and ev["function"]["name"] == "hello"
    assert "faas_discovery_watchers 1" in disc.http("/metrics")[1]
    w.close()
    wait_until(lambda: "faas_discovery_watchers 0" in disc.http("/metrics")[1], 5, "watcher removed")


def test_lease_lapse_deletes_instances(disc):
    w = Watch(disc, instances=True, workers=True)
    w.until_snapshot_end()
    worker = {"id": "short", "address": "127.0.0.1:7200"}
    insts = [{"id": f"s{i}", "function": "fn", "endpoint": f"127.0.0.1:{9100 + i}"} for i in range(3)]
    disc.heartbeat(worker, insts, ttl_ms=300)
    disc.heartbeat({"id": "long", "address": "127.0.0.1:7201"}, [{"id": "l1", "function": "fn"}], ttl_ms=60000)
    t_last = time.monotonic()
    for _ in range(1 + 3 + 1 + 1):
        w.next()
    listed = disc.unary("ListInstances", "FunctionName", {"name": "fn"}, "InstanceList")["instances"]
    assert sorted(i["id"] for i in listed) == ["l1", "s0", "s1", "s2"]

    deleted = []
    while True:
        t, ev = w.next(timeout=5)
        if ev["type"] == pb.WORKER_DELETE:
            assert ev["worker"]["id"] == "short"
            break
        assert ev["type"] == pb.INSTANCE_DELETE
        deleted.append(ev["instance"]["id"])
    assert sorted(deleted) == ["s0", "s1", "s2"]
    assert 0.25 <= t - t_last < 1.0, f"lease lapsed after {t - t_last:.3f}s with ttl 0.3s"
    listed = disc.unary("ListInstances", "FunctionName", {}, "InstanceList")["instances"]
    assert [i["id"] for i in listed] == ["l1"]
    assert [x["id"] for x in disc.unary("ListWorkers", "Empty", {}, "WorkerList")["workers"]] == ["long"]
    assert "event=lease_lapse worker=short" in disc.log()
    w.close()


def test_bad_flags_exit_2():
    for argv in (["--bogus"], ["--listen", "nope"], ["--max-artifact-bytes", "-1"], ["extra"]):
        p = subprocess.run([BIN] + argv, capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, argv
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_sigint_stops_with_watchers_open(tmp):
    d = Discovery(os.path.join(tmp, "state")).start()
    w = Watch(d)
    w.until_snapshot_end()
    assert d.stop(signal.SIGINT) == 0, d.log()


def test_bad_renewals_are_invalid_argument(disc):
    for lr in ({"instances": [{"id": "x", "function": "f"}]},  # no worker
               {"worker": {"id": "w"}, "instances": [{"id": "x", "function": "f"}, {"id": "x", "function": "f"}]},
               {"worker": {"id": "w"}, "instances": [{"function": "f"}]}):
        with pytest.raises(grpc.RpcError) as e:
            disc.unary("Heartbeat", "LeaseRenewal", lr, "Empty")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, lr
    assert disc.unary("ListWorkers", "Empty", {}, "WorkerList")["workers"] == []


def test_many_watchers_converge_under_concurrent_heartbeats(disc):
    """Watchers that apply the events they get must end with exactly what
    ListInstances says, whatever the interleaving of concurrent heartbeats."""
    watchers = [Watch(disc, instances=True) for _ in range(12)]
    views = []
    for w in watchers:
        evs, _ = w.until_snapshot_end()
        views.append({e["instance"]["id"]: e["instance"] for e in evs})

    def churn(k):
        ch = authed_channel(f"127.0.0.1:{disc.port}", disc.token)
        hb = ch.unary_unary(SVC + "Heartbeat")
        for i in range(40):
            insts = [{"id": f"w{k}-i{j}", "function": "fn", "state": (i + j) % 3, "endpoint": f"e{i}"}
                     for j in range(i % 5)]
            hb(pb.encode("LeaseRenewal", {"worker": {"id": f"w{k}", "pool_ready": i % 4}, "instances": insts,
                                          "ttl_ms": 60000}), timeout=5)
        ch.close()

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    truth = {i["id"]: i for i in disc.unary("ListInstances", "FunctionName", {}, "InstanceList")["instances"]}
    assert len(truth) == 4 * 4  # the last round (i=39) holds 39 % 5 = 4 instances per worker
    for w, view in zip(watchers, views):
        last_rev = 0
        while view != truth:
            _, ev = w.next(timeout=5)
            assert ev["revision"] > last_rev
            last_rev = ev["revision"]
            if ev["type"] == pb.INSTANCE_PUT:
                view[ev["instance"]["id"]] = ev["instance"]
            elif ev["type"] == pb.INSTANCE_DELETE:
                view.pop(ev["instance"]["id"], None)
        assert w.q.empty() or w.q.get_nowait()[1]["revision"] > last_rev
        w.close()
