"""Several faas-discovery processes on one etcd (--store etcd://..., docs/multihost-etcd.md):
one state served by all, watches that follow changes made through any of them, a
discovery restarted with kill -9 that misses nothing, artifact bytes fetched from the
discovery holding them, and an etcd restart under running discoveries.

Self-contained: starts its own etcd (Debian's /usr/bin/etcd) and faas-discovery
processes (FAAS_BUILD) on free loopback ports in a temp dir; faasctl is the client
where a user would use it, raw gRPC (discpb) where the test needs the wire."""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import grpc
import pytest

import discpb as pb
from platform_util import free_port, wait_until
from test_discovery_rpc import BIN, BUILD, Discovery, Watch, spec

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
CTL = os.path.join(BUILD, "faasctl")
TOKEN = "ab" * 32  # every discovery of one platform shares the platform token

pytestmark = [
    pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd not installed"),
    pytest.mark.skipif(not os.path.exists(BIN), reason="not built"),
]


class Etcd:
    """One etcd member on free loopback ports, data in dir; restartable on it."""

    def __init__(self, d):
        self.dir, self.proc = d, None
        self.port, self.peer = free_port(), free_port()
        self.log_path = os.path.join(d, "etcd.log")

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        c, p = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--data-dir", os.path.join(self.dir, "etcd-data"), "--listen-client-urls", c,
             "--advertise-client-urls", c, "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"default={p}", "--name", "default"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            wait_until(self.healthy, 30, what="etcd /health")
        except BaseException:
            # never healthy (slow machine, a port taken): it runs in its own session, out
            # of pytest's reach, so it is killed here by PID or it leaks with its ports
            self.stop()
            raise
        return self

    def healthy(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited {self.proc.returncode}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
            return b'"health":"true"' in r.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(timeout=10)


def state_dir(tmp, name):
    d = os.path.join(tmp, name, "state")
    os.makedirs(d)
    with open(os.path.join(d, "token"), "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(os.path.join(d, "token"), 0o600)
    return d


def on_etcd(etcd, d, prefix="/e2e/"):
    return Discovery(d, ["--store", f"etcd://{etcd.endpoint}", "--etcd-prefix", prefix])


def ctl(d, *args, check=True):
    env = dict(os.environ, FAAS_TOKEN=TOKEN, FAAS_DISCOVERY=f"127.0.0.1:{d.port}")
    p = subprocess.run([CTL, *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert p.returncode == 0, f"faasctl {args}: {p.stdout}{p.stderr}\n{d.log()}"
    return p


def listed(d):
    out = ctl(d, "list").stdout.splitlines()
    return sorted(line.split()[0] for line in out[1:] if line.strip())


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="disc-etcd-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def etcd(tmp):
    e = Etcd(tmp)
    try:
        yield e.start()
    finally:
        e.stop()


@pytest.fixture
def two(tmp, etcd):
    a = on_etcd(etcd, state_dir(tmp, "a")).start()
    b = on_etcd(etcd, state_dir(tmp, "b")).start()
    yield a, b
    for d in (a, b):
        assert d.stop() == 0, d.log()
        assert "Sanitizer" not in d.log(), d.log()


def code_dir(tmp, name, content):
    d = tempfile.mkdtemp(prefix="code-" + name, dir=tmp)
    with open(os.path.join(d, "server"), "w") as f:
        f.write(content)
    return d


def missing_blobs(d, shas):
    """Raw MissingBlobs: BlobList is {repeated string sha256 = 1} (64-byte strings)."""
    req = b"".join(b"\x0a\x40" + s.encode() for s in shas)
    return d.channel.unary_unary("/faas.Discovery/MissingBlobs")(req, timeout=10)


def deploy_ctl(d, tmp, name, content="#!/bin/sh\necho hi\n"):
    ctl(d, "deploy", name, "--dir", code_dir(tmp, name, content), "--cmd", "./server --port $PORT")


def test_two_discoveries_serve_one_state(tmp, two):
    a, b = two
    deploy_ctl(a, tmp, "alpha")
    deploy_ctl(b, tmp, "beta")
    assert listed(a) == ["alpha", "beta"]
    assert listed(b) == ["alpha", "beta"]
    got = b.unary("GetFunction", "FunctionName", {"name": "alpha"}, "FunctionSpec")
    assert got["version"] == 1
    # a name's versions go on across discoveries and deletes
    ctl(b, "delete", "alpha")
    assert listed(a) == ["beta"]
    deploy_ctl(b, tmp, "alpha")
    assert a.unary("GetFunction", "FunctionName", {"name": "alpha"}, "FunctionSpec")["version"] == 2
    assert "faas_discovery_store_info{backend=\"etcd\"} 1" in a.http("/metrics")[1]
    body = b.http("/metrics")[1]
    assert "faas_discovery_deploys_total 3" in body
    promtool = shutil.which("promtool")
    if promtool:  # the etcd families pass the same lint as tests/e2e/test_metrics_lint.py's
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr


def test_deploy_through_one_reaches_watch_on_other(tmp, two):
    a, b = two
    sha = a.upload(b"code for the watch test")["sha256"]
    w = Watch(b, functions=True)
    try:
        w.until_snapshot_end()
        t0 = time.monotonic()
        a.deploy(spec("watched", sha))
        t, ev = w.next(timeout=20)
        assert ev["type"] == pb.FUNCTION_PUT and ev["function"]["name"] == "watched"
        assert ev["function"]["version"] == 1
        print(f"deploy through A -> Watch event on B: {(t - t0) * 1000:.1f} ms (includes the Deploy rpc)")
        a.unary("DeleteFunction", "FunctionName", {"name": "watched"}, "Empty")
        _, ev = w.next(timeout=20)
        assert ev["type"] == pb.FUNCTION_DELETE and ev["function"]["name"] == "watched"
    finally:
        w.close()


def test_restarted_discovery_misses_nothing(tmp, two):
    a, b = two
    sha = b.upload(b"restart code")["sha256"]
    b.deploy(spec("before", sha))
    wait_until(lambda: "before" in listed(a), 20, what="a lists before")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    a.channel.close()
    a.channel = None
    b.deploy(spec("during", sha))
    b.deploy(spec("before", sha))  # version 2 while a is down
    a.start()
    assert listed(a) == ["before", "during"]
    w = Watch(a, functions=True)
    try:
        snap, _ = w.until_snapshot_end()
        versions = {e["function"]["name"]: e["function"]["version"] for e in snap}
        assert versions == {"before": 2, "during": 1}
        b.deploy(spec("after", sha))
        _, ev = w.next(timeout=20)
        assert ev["type"] == pb.FUNCTION_PUT and ev["function"]["name"] == "after"
    finally:
        w.close()


def test_artifact_uploaded_to_one_is_fetched_through_other(tmp, etcd, two):
    a, b = two
    data = os.urandom(300 * 1024 + 5)
    sha = a.upload(data)["sha256"]
    assert sha == hashlib.sha256(data).hexdigest()
    local_b = os.path.join(b.state_dir, "artifacts", sha + ".tar.gz")
    assert not os.path.exists(local_b)
    # b knows the bytes exist (a deploy naming them passes; MissingBlobs leaves them out)
    assert missing_blobs(b, [sha, "6" * 64]) == b"\x0a\x40" + b"6" * 64
    b.deploy(spec("remote", sha))
    assert b.fetch(sha) == data
    assert os.path.exists(local_b)  # kept: b is a holder now
    assert 'faas_discovery_artifact_peer_fetches_total{result="ok"} 1' in b.http("/metrics")[1]
    # bytes nobody holds: NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        b.fetch("5" * 64)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # the only other holder gone: b still serves its copy, and a fresh host gets it from b
    a.stop()
    assert b.fetch(sha) == data
    c = on_etcd(etcd, state_dir(tmp, "c")).start()
    try:
        assert c.fetch(sha) == data
    finally:
        assert c.stop() == 0, c.log()
    a.start()


def test_holder_gone_is_not_found_with_a_reason(tmp, two):
    a, b = two
    sha = a.upload(b"only on a")["sha256"]
    a.stop()
    with pytest.raises(grpc.RpcError) as e:
        b.fetch(sha)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "held by no reachable discovery" in e.value.details()
    a.start()


def test_etcd_restart_under_running_discoveries(tmp, etcd, two):
    a, b = two
    sha = a.upload(b"etcd restart code")["sha256"]
    a.deploy(spec("one", sha))
    w = Watch(b, functions=True)
    try:
        w.until_snapshot_end()
        etcd.stop()
        with pytest.raises(grpc.RpcError) as e:
            a.unary("ListFunctions", "Empty", {}, "FunctionList", timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "state store unreachable" in e.value.details()
        etcd.start()
        # the same rpc recovers, and b's watch resumes: a deploy through a reaches it
        wait_until(lambda: a.unary("ListFunctions", "Empty", {}, "FunctionList", timeout=10), 30,
                   what="ListFunctions after etcd restart")
        a.deploy(spec("two", sha))
        deadline = time.monotonic() + 30
        while True:
            _, ev = w.next(timeout=max(0.1, deadline - time.monotonic()))
            if ev["type"] == pb.FUNCTION_PUT and ev["function"]["name"] == "two":
                break
        assert listed(b) == ["one", "two"]
    finally:
        w.close()


def test_flags_are_checked(tmp):
    for args, msg in [
        (["--store", "mysql"], "--store needs sqlite or etcd://"),
        (["--store", "etcd://"], "--store needs sqlite or etcd://"),
        (["--etcd-prefix", "faas"], "--etcd-prefix must start and end with '/'"),
        (["--store", "etcd://127.0.0.1:2379", "--listen", "0.0.0.0:7100"], "needs --advertise"),
        (["--store", "etcd://127.0.0.1:2379", "--advertise", "0.0.0.0:7100"], "not a wildcard"),
    ]:
        p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    h = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10).stdout
    assert "--store" in h and "--etcd-prefix" in h and "--advertise" in h


def test_etcd_unreachable_at_start_exits_clearly(tmp):
    d = state_dir(tmp, "x")
    port = free_port()
    p = subprocess.run([BIN, "--state-dir", d, "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "off",
                        "--store", f"etcd://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "etcd unreachable" in p.stdout + p.stderr


def test_holders_that_lost_the_bytes_answer_at_once(tmp, two):
    """Both holders lost their files: each asks the other for local bytes only, so the
    answer is a prompt NOT_FOUND, not two discoveries waiting on each other."""
    a, b = two
    data = b"bytes both will lose"
    sha = a.upload(data)["sha256"]
    assert b.fetch(sha) == data
    for d in (a, b):
        os.unlink(os.path.join(d.state_dir, "artifacts", sha + ".tar.gz"))
    with pytest.raises(grpc.RpcError) as e:
        a.fetch(sha)  # its 10 s deadline would end a mutual wait as DEADLINE_EXCEEDED
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    assert "no such code artifact on this discovery" in e.value.details()


def test_tasks_submitted_through_one_are_served_by_the_other(tmp, two):
    """With --store etcd the async task store is on etcd too (main.c wires it)."""
    a, b = two
    sha = a.upload(b"task code")["sha256"]
    a.deploy(spec("work", sha))
    tid = "c" * 32
    t = {"id": tid, "function": "work", "request": {"method": "POST", "path": "/", "body": b"x"}}
    assert a.unary("SubmitTask", "Task", t, "Task")["id"] == tid
    got = b.unary("GetTask", "TaskId", {"id": tid}, "Task")
    assert got["id"] == tid and got["function"] == "work"
    claimed = b.unary("ClaimTasks", "ClaimRequest", {"function": "work", "max": 5, "claimer": "e2e"},
                      "TaskList").get("tasks", [])
    assert [c["id"] for c in claimed] == [tid]


def test_a_task_too_large_for_etcd_is_refused_by_name(tmp, two):
    """etcd takes 1.5 MiB a request by default: a task whose body cannot go into one
    transaction is refused at submission (RESOURCE_EXHAUSTED, the bound named), never
    half stored and never an internal error."""
    a, _ = two
    sha = a.upload(b"big task code")["sha256"]
    a.deploy(spec("bigtask", sha))
    t = {"id": "d" * 32, "function": "bigtask", "request": {"method": "POST", "path": "/", "body": b"x" * (1100 << 10)}}
    with pytest.raises(grpc.RpcError) as e:
        a.unary("SubmitTask", "Task", t, "Task")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    assert "task store on etcd" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        a.unary("GetTask", "TaskId", {"id": "d" * 32}, "Task")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    small = dict(t, id="e" * 32, request={"method": "POST", "path": "/", "body": b"x" * (900 << 10)})
    assert a.unary("SubmitTask", "Task", small, "Task")["id"] == "e" * 32


def etcd_http(etcd, path, body):
    """etcd's JSON gateway (v3 API over HTTP): what etcdctl would send."""
    import json
    req = urllib.request.Request(f"http://{etcd.endpoint}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_watch_behind_a_compaction_resyncs(tmp, etcd, two):
    """a is frozen while etcd restarts and b changes things, then etcd compacts past
    them: a's watch cannot resume from its revision, so a reads the functions afresh,
    dropping the deleted one and adding the new one, and its watchers see both."""
    import base64
    a, b = two
    sha = b.upload(b"resync code")["sha256"]
    b.deploy(spec("gone", sha))
    b.deploy(spec("kept", sha))
    w = Watch(a, functions=True)
    try:
        wait_until(lambda: listed(a) == ["gone", "kept"], 5, what="a lists both")
        a.proc.send_signal(signal.SIGSTOP)
        try:
            etcd.stop()
            etcd.start()
            wait_until(lambda: b.unary("ListFunctions", "Empty", {}, "FunctionList", timeout=10), 30,
                       what="b reaches etcd again")
            b.unary("DeleteFunction", "FunctionName", {"name": "gone"}, "Empty")
            b.deploy(spec("new", sha))
            rev = int(etcd_http(etcd, "/v3/kv/range", {"key": base64.b64encode(b"/e2e/").decode()})["header"]
                      ["revision"])
            etcd_http(etcd, "/v3/kv/compaction", {"revision": rev, "physical": True})
        finally:
            a.proc.send_signal(signal.SIGCONT)
        seen = {}
        deadline = time.monotonic() + 30
        while seen.get("gone") != "deleted" or seen.get("new") != "put":
            _, ev = w.next(timeout=max(0.1, deadline - time.monotonic()))
            if ev["type"] in (pb.FUNCTION_PUT, pb.FUNCTION_DELETE):
                seen[ev["function"]["name"]] = "put" if ev["type"] == pb.FUNCTION_PUT else "deleted"
        assert listed(a) == ["kept", "new"]
        assert "event=etcd_resync" in a.log()
    finally:
        w.close()
