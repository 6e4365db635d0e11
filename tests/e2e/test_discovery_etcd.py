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


# ---- peer artifact fetches (a copy from another discovery) ------------------------------

def etcd_key(k):
    import base64
    return base64.b64encode(k.encode()).decode()


def put_holders(etcd, sha, holders, size=0, prefix="/e2e/"):
    """Writes artifacts/<sha> as a packed ArtifactMeta {sha256=1, size=2, holders=3}."""
    import base64

    def field(n, b):
        return bytes([n << 3 | 2, len(b)]) + b
    meta = field(1, sha.encode()) + bytes([2 << 3]) + _varint(size) + b"".join(field(3, h.encode()) for h in holders)
    etcd_http(etcd, "/v3/kv/put", {"key": etcd_key(prefix + "artifacts/" + sha),
                                   "value": base64.b64encode(meta).decode()})


def _varint(v):
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def holders_record(etcd, sha, prefix="/e2e/"):
    """The raw artifacts/<sha> value, or None if there is no such key."""
    import base64
    r = etcd_http(etcd, "/v3/kv/range", {"key": etcd_key(prefix + "artifacts/" + sha)})
    kvs = r.get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def fetch_long(d, sha, timeout=120):
    it = d.channel.unary_stream("/faas.Discovery/FetchCode")(pb.encode("CodeRef", {"sha256": sha}), timeout=timeout)
    return b"".join(pb.decode("CodeChunk", m)["data"] for m in it)


class StallingHolder:
    """A fake discovery on a free port: FetchCode sends one chunk, then waits until
    released, then sends the rest of data (which the test may make wrong)."""

    def __init__(self, data):
        import threading
        from concurrent import futures
        self.data, self.asked, self.release = data, threading.Event(), threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        self.requests = 0

        def fetch(req, ctx):
            self.requests += 1
            self.asked.set()
            yield pb.encode("CodeChunk", {"data": self.data[:1024]})
            self.release.wait(60)
            for i in range(1024, len(self.data), 64 * 1024):
                yield pb.encode("CodeChunk", {"data": self.data[i:i + 64 * 1024]})

        h = grpc.method_handlers_generic_handler("faas.Discovery", {
            "FetchCode": grpc.unary_stream_rpc_method_handler(fetch)})
        self.server.add_generic_rpc_handlers((h,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.release.set()
        self.server.stop(0)


def no_partial_files(d):
    return [f for f in os.listdir(os.path.join(d.state_dir, "artifacts")) if f.startswith(".upload-")]


def test_a_stalled_peer_fetch_holds_up_no_other_rpc_and_wrong_bytes_are_dropped(tmp, two):
    """b copies bytes from a holder that stalls mid-stream: meanwhile b answers
    ListFunctions, Deploy, SubmitTask, ClaimTasks within the usual 5 s deadline (the
    copy is not on its jobs thread), and a fetching from b is not held up either. The
    holder then sends bytes that are not the sha asked for: b keeps nothing of them."""
    import concurrent.futures
    a, b = two
    good = os.urandom(256 * 1024)
    sha = hashlib.sha256(good).hexdigest()
    fake = StallingHolder(b"x" + good[1:])  # same size, wrong bytes
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        put_holders(two_etcd(a), sha, [f"127.0.0.1:{fake.port}"], size=len(good))
        pending = pool.submit(fetch_long, b, sha, 60)
        assert fake.asked.wait(15), b.log()
        code = b.upload(b"code uploaded during the copy")["sha256"]
        b.deploy(spec("during", code))
        assert [f["name"] for f in b.unary("ListFunctions", "Empty", {}, "FunctionList").get("functions", [])] \
            == ["during"]
        t = {"id": "f" * 32, "function": "during", "request": {"method": "POST", "path": "/", "body": b"x"}}
        assert b.unary("SubmitTask", "Task", t, "Task")["id"] == "f" * 32
        claimed = b.unary("ClaimTasks", "ClaimRequest", {"function": "during", "max": 1, "claimer": "e2e"},
                          "TaskList").get("tasks", [])
        assert [c["id"] for c in claimed] == ["f" * 32]
        assert a.fetch(code) == b"code uploaded during the copy"  # a copies from b meanwhile
        assert not pending.done()
        fake.release.set()
        with pytest.raises(grpc.RpcError) as e:
            pending.result(timeout=60)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
        assert "sha256 is not the one asked for" in e.value.details()
        assert not os.path.exists(os.path.join(b.state_dir, "artifacts", sha + ".tar.gz"))
        assert no_partial_files(b) == []
        wrong = hashlib.sha256(b"x" + good[1:]).hexdigest()
        assert not os.path.exists(os.path.join(b.state_dir, "artifacts", wrong + ".tar.gz"))
    finally:
        fake.stop()
        pool.shutdown(wait=True)


def test_a_large_copy_proceeds_while_other_rpcs_answer(tmp, two):
    """20 MiB uploaded to a, fetched through b (a real peer copy) while b keeps
    answering ListFunctions and SubmitTask within the 5 s rpc deadline."""
    import concurrent.futures
    a, b = two
    data = os.urandom(20 << 20)
    chunks = (pb.encode("CodeChunk", {"data": data[i:i + (1 << 20)]}) for i in range(0, len(data), 1 << 20))
    sha = pb.decode("CodeRef", a.channel.stream_unary("/faas.Discovery/UploadCode")(chunks, timeout=120))["sha256"]
    assert sha == hashlib.sha256(data).hexdigest()
    code = a.upload(b"small")["sha256"]
    a.deploy(spec("small", code))
    wait_until(lambda: listed(b) == ["small"], 30, what="b lists the function")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch_long, b, sha, 120)
        n = 0
        while not pending.done() or n < 3:
            assert b.unary("ListFunctions", "Empty", {}, "FunctionList")["functions"][0]["name"] == "small"
            t = {"id": "%032x" % (n + 1), "function": "small", "request": {"method": "POST", "path": "/"}}
            assert b.unary("SubmitTask", "Task", t, "Task")["id"] == t["id"]
            n += 1
        assert pending.result() == data
    assert os.path.exists(os.path.join(b.state_dir, "artifacts", sha + ".tar.gz"))


def test_unreachable_and_self_holders_are_skipped(tmp, two):
    """A record naming a closed port, an address nobody answers, and b itself under
    another spelling, then a real holder: b's copy comes from a, without b dialing
    itself, in time for the caller's 10 s deadline."""
    a, b = two
    data = os.urandom(64 * 1024)
    sha = a.upload(data)["sha256"]
    etcd = two_etcd(a)
    put_holders(etcd, sha, [f"127.0.0.1:{free_port()}", "192.0.2.1:9", f"localhost:{b.port}",
                            f"127.0.0.1:{a.port}"], size=len(data))
    assert b.fetch(sha) == data
    assert f"localhost:{b.port}" not in b.log()
    assert 'faas_discovery_artifact_peer_fetches_total{result="ok"} 1' in b.http("/metrics")[1]


def test_a_holder_that_lost_the_bytes_is_dropped_from_the_record(tmp, two):
    """The record's only holder answers NOT_FOUND (it lost the file): the record goes,
    so MissingBlobs asks for the bytes again and an upload makes them whole."""
    a, b = two
    data = b"lost on a"
    sha = a.upload(data)["sha256"]
    os.unlink(os.path.join(a.state_dir, "artifacts", sha + ".tar.gz"))
    etcd = two_etcd(a)
    assert holders_record(etcd, sha) is not None
    with pytest.raises(grpc.RpcError) as e:
        b.fetch(sha)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
    assert holders_record(etcd, sha) is None
    assert missing_blobs(b, [sha]) == b"\x0a\x40" + sha.encode()
    assert a.upload(data)["sha256"] == sha
    assert b.fetch(sha) == data


def test_peer_copies_are_bounded_and_one_per_sha(tmp, two):
    """Four copies from stalled holders at once take every slot: a fifth sha is not
    asked for until one of them ends, and two callers of one sha make one copy."""
    import concurrent.futures
    a, b = two
    etcd = two_etcd(a)
    blobs = [os.urandom(4096) for _ in range(5)]
    fakes = [StallingHolder(x) for x in blobs]
    shas = [hashlib.sha256(x).hexdigest() for x in blobs]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=6)
    try:
        for sha, f, x in zip(shas, fakes, blobs):
            put_holders(etcd, sha, [f"127.0.0.1:{f.port}"], size=len(x))
        first = [pool.submit(fetch_long, b, sha, 60) for sha in shas[:4]]
        twice = pool.submit(fetch_long, b, shas[0], 60)
        for f in fakes[:4]:
            assert f.asked.wait(15), b.log()
        fifth = pool.submit(fetch_long, b, shas[4], 60)
        # b answers other calls meanwhile, and keeps the fifth copy waiting for a slot
        assert b.unary("ListFunctions", "Empty", {}, "FunctionList").get("functions", []) == []
        assert not fakes[4].asked.wait(1)
        fakes[1].release.set()
        assert first[1].result(timeout=30) == blobs[1]
        assert fakes[4].asked.wait(15), b.log()
        for f in fakes:
            f.release.set()
        assert [p.result(timeout=30) for p in first] == blobs[:4]
        assert twice.result(timeout=30) == blobs[0]
        assert fifth.result(timeout=30) == blobs[4]
        assert fakes[0].requests == 1
    finally:
        for f in fakes:
            f.stop()
        pool.shutdown(wait=True)


def two_etcd(d):
    """The etcd endpoint a discovery of this file was started with, as an Etcd-like."""
    ep = d.extra[d.extra.index("--store") + 1][len("etcd://"):]

    class E:
        endpoint = ep
    return E
