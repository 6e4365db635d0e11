"""faas-discovery's durable task store over real gRPC (docs/async.md): submit, claim,
report, cancel, list, retries, lease expiry, metrics, and a SIGKILL right after a
SubmitTask answered.

Self-contained: starts faas-discovery alone (FAAS_BUILD) on free loopback ports in a
temp state dir, like test_discovery_rpc.py, whose Discovery helper it reuses."""
import os
import queue
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time

import grpc
import pytest

import discpb as pb
from test_discovery_rpc import Discovery, Watch, wait_until


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="disc-tasks-e2e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def deploy_fn(d, name="work", **kw):
    sha = d.upload(b"fake tar.gz bytes")["sha256"]
    s = {"name": name, "command": ["./server"], "code_sha256": sha}
    s.update(kw)
    return d.deploy(s)


@pytest.fixture
def disc(tmp):
    d = Discovery(os.path.join(tmp, "state")).start()
    d.version = deploy_fn(d)["version"]
    yield d
    assert d.stop() == 0, d.log()
    assert "Sanitizer" not in d.log(), d.log()


def new_id():
    return secrets.token_hex(16)


def request(body=b"payload"):
    return {"method": "POST", "path": "/run?x=1", "authority": "fn.local",
            "headers": [{"key": "content-type", "value": "text/plain"}], "body": body}


def submit(d, tid=None, fn="work", **kw):
    t = {"id": tid or new_id(), "function": fn, "request": request()}
    t.update(kw)
    return d.unary("SubmitTask", "Task", t, "Task")


def get(d, tid):
    return d.unary("GetTask", "TaskId", {"id": tid}, "Task")


def claim(d, fn="work", n=10, lease_ms=10000):
    return d.unary("ClaimTasks", "ClaimRequest", {"function": fn, "max": n, "claimer": "e2e", "lease_ms": lease_ms},
                   "TaskList")["tasks"]


def report(d, tid, kind, inst="inst-1", **kw):
    r = {"id": tid, "instance_id": inst, "kind": kind}
    r.update(kw)
    return d.unary("ReportTask", "TaskReport", r, "Task")


def rpc_error(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    return e.value.code(), e.value.details()


def test_submit_claim_report_done_and_the_result(disc):
    tid = new_id()
    before = int(time.time() * 1000)
    t = submit(disc, tid, callback_url="http://127.0.0.1:1/cb", status=pb.SUCCEEDED, attempts=9)
    assert t["id"] == tid and t["function"] == "work" and t["version"] == disc.version
    assert t["status"] == pb.QUEUED and t["attempts"] == 0, "the platform owns the state fields"
    assert t["created_unix_ms"] >= before and t["callback_url"] == "http://127.0.0.1:1/cb"
    assert t["request"] is None, "the reply carries no request"
    assert get(disc, tid) == t

    code, _ = rpc_error(disc.unary, "GetTaskResult", "TaskId", {"id": tid}, "TaskResult")
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    got = claim(disc)
    assert [c["id"] for c in got] == [tid]
    c = got[0]
    assert c["status"] == pb.RUNNING and c["attempts"] == 1 and c["instance_id"] == ""
    assert c["lease_until_unix_ms"] >= c["started_unix_ms"] + 10000
    assert c["request"]["body"] == b"payload" and c["request"]["path"] == "/run?x=1"
    assert c["request"]["headers"] == [{"key": "content-type", "value": "text/plain"}]
    assert claim(disc) == [], "a running task is not claimed twice"

    r = report(disc, tid, pb.REPORT_STARTED, lease_ms=60000)
    assert r["instance_id"] == "inst-1" and r["lease_until_unix_ms"] >= int(time.time() * 1000) + 50000
    assert report(disc, tid, pb.REPORT_RENEW)["status"] == pb.RUNNING
    code, msg = rpc_error(report, disc, tid, pb.REPORT_RENEW, "inst-2")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "stale" in msg

    result = {"status": 503, "headers": [{"key": "x-out", "value": "1"}], "body": b"\x00result\xff" * 1000}
    done = report(disc, tid, pb.REPORT_DONE, result=result)
    assert done["status"] == pb.SUCCEEDED and done["result_status"] == 503 and done["result_size"] == 8000
    assert done["finished_unix_ms"] >= done["started_unix_ms"] and done["error"] == ""
    assert disc.unary("GetTaskResult", "TaskId", {"id": tid}, "TaskResult") == result
    code, _ = rpc_error(report, disc, tid, pb.REPORT_DONE, result=result)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, "a second DONE is stale"
    code, _ = rpc_error(report, disc, new_id(), pb.REPORT_RENEW)
    assert code == grpc.StatusCode.NOT_FOUND


def test_failed_report_retries_after_backoff_then_fails(disc):
    tid = submit(disc)["id"]
    for attempt in (1, 2, 3):
        got = wait_until(lambda: claim(disc), 10, f"attempt {attempt} claimable")
        assert got[0]["attempts"] == attempt
        now = int(time.time() * 1000)
        r = report(disc, tid, pb.REPORT_FAILED, error="user server died")
        assert r["error"] == "user server died"
        if attempt < 3:
            backoff = 1000 << (attempt - 1)
            assert r["status"] == pb.QUEUED and r["instance_id"] == ""
            assert now + backoff - 50 <= r["not_before_unix_ms"] <= now + backoff + 1000
            assert claim(disc) == [], "claimed during its backoff"
    assert r["status"] == pb.FAILED and r["finished_unix_ms"] > 0
    code, _ = rpc_error(disc.unary, "GetTaskResult", "TaskId", {"id": tid}, "TaskResult")
    assert code == grpc.StatusCode.NOT_FOUND, "failed without a result"


def test_rejected_report_fails_at_once(disc):
    tid = submit(disc)["id"]
    claim(disc)
    r = report(disc, tid, pb.REPORT_REJECTED, error="result larger than 8 MiB")
    assert r["status"] == pb.FAILED and r["attempts"] == 1 and r["error"] == "result larger than 8 MiB"
    assert claim(disc) == [], "not queued again"


def test_function_async_bounds_concurrency_and_max_attempts(disc):
    deploy_fn(disc, "lim", **{"async": {"concurrency": 2, "max_attempts": 1, "retry_5xx": True}})
    ids = [submit(disc, fn="lim")["id"] for _ in range(4)]
    first = claim(disc, fn="lim")
    assert len(first) == 2, "async.concurrency 2"
    assert claim(disc, fn="lim") == [], "two run already"
    r = report(disc, first[0]["id"], pb.REPORT_FAILED, error="user server died")
    assert r["status"] == pb.FAILED and r["attempts"] == 1, "async.max_attempts 1: no retry"
    r = report(disc, first[1]["id"], pb.REPORT_DONE, result={"status": 503, "body": b"busy"})
    assert r["status"] == pb.FAILED and r["error"] == "HTTP 503", "retry_5xx: a failed attempt, the last"
    assert disc.unary("GetTaskResult", "TaskId", {"id": first[1]["id"]}, "TaskResult")["status"] == 503
    assert sorted(t["id"] for t in claim(disc, fn="lim")) == sorted(set(ids) - {t["id"] for t in first})


def test_bad_submissions_and_ids(disc):
    tid = submit(disc)["id"]
    cases = [
        ({"id": "ABC", "function": "work", "request": request()}, grpc.StatusCode.INVALID_ARGUMENT, "32 lowercase"),
        ({"id": tid.upper(), "function": "work", "request": request()}, grpc.StatusCode.INVALID_ARGUMENT, "hex"),
        ({"id": new_id(), "function": "work"}, grpc.StatusCode.INVALID_ARGUMENT, "request"),
        ({"id": new_id(), "function": "Bad_Name", "request": request()}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"id": new_id(), "function": "nope", "request": request()}, grpc.StatusCode.NOT_FOUND, "nope"),
        ({"id": tid, "function": "work", "request": request()}, grpc.StatusCode.ALREADY_EXISTS, tid),
    ]
    for t, want, needle in cases:
        code, msg = rpc_error(disc.unary, "SubmitTask", "Task", t, "Task")
        assert code == want and needle in msg, (t, code, msg)
    code, _ = rpc_error(disc.channel.unary_unary("/faas.Discovery/SubmitTask"), b"\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for m, resp in (("GetTask", "Task"), ("GetTaskResult", "TaskResult"), ("CancelTask", "Task")):
        code, _ = rpc_error(disc.unary, m, "TaskId", {"id": "x" * 32}, resp)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, m
        code, _ = rpc_error(disc.unary, m, "TaskId", {"id": new_id()}, resp)
        assert code == grpc.StatusCode.NOT_FOUND, m
    code, _ = rpc_error(report, disc, tid, pb.REPORT_STARTED)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, "a queued task takes no report"
    claim(disc)
    code, _ = rpc_error(report, disc, tid, pb.REPORT_DONE)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, "DONE without a result"


def test_cancel_in_each_state_and_list_pages(disc):
    ids = sorted(submit(disc)["id"] for _ in range(5))
    queued = ids[0]
    c = disc.unary("CancelTask", "TaskId", {"id": queued}, "Task")
    assert c["status"] == pb.CANCELLED and c["finished_unix_ms"] > 0
    code, _ = rpc_error(disc.unary, "CancelTask", "TaskId", {"id": queued}, "Task")
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    running = claim(disc, n=1)[0]["id"]
    report(disc, running, pb.REPORT_STARTED)
    c = disc.unary("CancelTask", "TaskId", {"id": running}, "Task")
    assert c["status"] == pb.RUNNING and c["error"] == "cancel requested"
    assert get(disc, running)["error"] == "cancel requested"
    ended = report(disc, running, pb.REPORT_DONE, result={"status": 200, "body": b"late"})
    assert ended["status"] == pb.CANCELLED

    seen, after, pages = [], "", 0
    while True:
        page = disc.unary("ListTasks", "TaskQuery", {"function": "work", "limit": 2, "after": after}, "TaskList")
        pages += 1
        seen += [t["id"] for t in page["tasks"]]
        assert all(t["request"] is None for t in page["tasks"])
        if not page["next"]:
            break
        assert page["next"] == page["tasks"][-1]["id"]
        after = page["next"]
    assert seen == ids and pages == 3
    q = {"by_status": True, "status": pb.CANCELLED}
    assert sorted(t["id"] for t in disc.unary("ListTasks", "TaskQuery", q, "TaskList")["tasks"]) == sorted(
        [queued, running])
    q = {"by_status": True, "status": pb.QUEUED, "function": "work"}
    assert len(disc.unary("ListTasks", "TaskQuery", q, "TaskList")["tasks"]) == 3
    for bad in ({"function": "Bad_Name"}, {"after": "zz"}, {"by_status": True, "status": 9}):
        code, _ = rpc_error(disc.unary, "ListTasks", "TaskQuery", bad, "TaskList")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_cancel_of_a_running_task_reaches_task_cancel_watchers(disc):
    cancels = Watch(disc, task_cancels=True)
    plain = Watch(disc)  # asked for nothing: everything but task cancels
    try:
        snap, _ = cancels.until_snapshot_end()
        assert snap == [], "no snapshot of task cancels"
        plain.until_snapshot_end()
        ids = {submit(disc)["id"], submit(disc)["id"]}
        got = claim(disc, n=1)  # two submitted in one millisecond come in id order: either
        assert len(got) == 1 and got[0]["id"] in ids
        first = got[0]["id"]
        (tid,) = ids - {first}
        disc.unary("CancelTask", "TaskId", {"id": first}, "Task")  # claimed, not started yet
        _, ev = cancels.next()
        assert ev["type"] == pb.TASK_CANCEL and ev["task"]["id"] == first and ev["task"]["instance_id"] == ""
        r = report(disc, first, pb.REPORT_STARTED)
        assert r["cancel_requested"] and r["status"] == pb.RUNNING
        assert report(disc, first, pb.REPORT_FAILED, error="cancelled")["status"] == pb.CANCELLED

        claim(disc, n=1)
        report(disc, tid, pb.REPORT_STARTED, inst="inst-7")
        c = disc.unary("CancelTask", "TaskId", {"id": tid}, "Task")
        assert c["status"] == pb.RUNNING and c["cancel_requested"]
        _, ev = cancels.next()
        t = ev["task"]
        assert ev["type"] == pb.TASK_CANCEL and ev["function"] is None and ev["instance"] is None
        assert (t["id"], t["function"], t["instance_id"], t["status"], t["cancel_requested"]) == (
            tid, "work", "inst-7", pb.RUNNING, True)
        assert report(disc, tid, pb.REPORT_RENEW, inst="inst-7")["cancel_requested"]
        ended = report(disc, tid, pb.REPORT_FAILED, inst="inst-7", error="cancelled")
        assert ended["status"] == pb.CANCELLED and ended["error"] == "cancelled"

        submit(disc)
        disc.unary("CancelTask", "TaskId", {"id": submit(disc)["id"]}, "Task")  # queued: no event
        deploy_fn(disc, "other")
        _, ev = plain.next()
        assert ev["type"] == pb.FUNCTION_PUT, "the plain watcher gets no TASK_CANCEL"
        with pytest.raises(queue.Empty):
            cancels.next(timeout=0.5)
    finally:
        cancels.close()
        plain.close()


def test_lapsed_lease_puts_the_task_back(disc):
    tid = submit(disc)["id"]
    claim(disc, lease_ms=200)
    t = wait_until(lambda: (lambda t: t if t["status"] == pb.QUEUED else None)(get(disc, tid)), 5,
                   "the reaper to requeue the lapsed task")
    assert t["error"] == "lease lapsed (pod, worker manager or host gone)" and t["attempts"] == 1
    assert "event=task_lease_lapse" in disc.log()


def test_concurrent_submissions_share_commits_and_metrics(disc):
    n, threads, errors = 400, 16, []

    def run(k):
        try:
            for _ in range(n // threads):
                submit(disc)
        except Exception as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    assert errors == []
    claim(disc, n=3)
    _, m = disc.http("/metrics")
    for fam, typ in (("faas_tasks", "gauge"), ("faas_task_queue_oldest_seconds", "gauge"),
                     ("faas_tasks_submitted_total", "counter"), ("faas_task_commits_total", "counter"),
                     ("faas_task_attempts_total", "counter")):
        assert f"# HELP {fam} " in m and f"# TYPE {fam} {typ}\n" in m, fam
    assert f'faas_tasks{{function="work",status="queued"}} {n - 3}\n' in m
    assert 'faas_tasks{function="work",status="running"} 3\n' in m
    assert re.search(r'faas_task_queue_oldest_seconds\{function="work"\} \d+\.\d+\n', m)
    assert f"faas_tasks_submitted_total {n}\n" in m and "faas_task_attempts_total 3\n" in m
    commits = int(re.search(r"faas_task_commits_total (\d+)", m).group(1))
    assert 1 <= commits <= n
    print(f"\nSubmitTask over gRPC: {n} from {threads} threads in {secs:.2f} s = {n / secs:.0f}/s, "
          f"{commits} transactions, {n / commits:.1f} tasks per transaction")
    assert 'faas_discovery_rpc_total{method="SubmitTask",code="OK"} %d' % n in m


def claim_callbacks(d, n=16, lease_ms=10000):
    return d.unary("ClaimCallbacks", "CallbackClaim", {"max": n, "claimer": "e2e", "lease_ms": lease_ms},
                   "CallbackDueList")["due"]


def report_callback(d, tid, delivered, error=""):
    return d.unary("ReportCallback", "CallbackReport", {"id": tid, "delivered": delivered, "error": error,
                                                        "claimer": "e2e"}, "Task")


def test_callbacks_claimed_retried_and_delivered(tmp):
    d = Discovery(os.path.join(tmp, "state"), ["--callback-attempts", "5", "--callback-backoff-ms", "100"]).start()
    try:
        deploy_fn(d)
        tid = submit(d, callback_url="http://127.0.0.1:1/cb")["id"]
        quiet = submit(d)["id"]  # no callback_url: nothing to deliver
        assert claim_callbacks(d) == [], "nothing ended yet"
        claim(d)
        result = {"status": 200, "headers": [{"key": "x-out", "value": "1"}], "body": b"done"}
        report(d, tid, pb.REPORT_DONE, result=result)
        report(d, quiet, pb.REPORT_DONE, result=result)
        assert get(d, tid)["callback_status"] == "pending"
        assert get(d, quiet)["callback_status"] == ""

        for attempt in (1, 2):
            due = wait_until(lambda: claim_callbacks(d), 5, f"callback attempt {attempt} due")
            assert [x["task"]["id"] for x in due] == [tid]
            assert due[0]["task"]["callback_attempts"] == attempt and due[0]["task"]["status"] == pb.SUCCEEDED
            assert due[0]["task"]["callback_url"] == "http://127.0.0.1:1/cb" and due[0]["result"] == result
            assert claim_callbacks(d) == [], "leased to the first claimer"
            t = report_callback(d, tid, False, "HTTP 503")
            assert t["callback_status"] == "pending" and t["callback_attempts"] == attempt
        due = wait_until(lambda: claim_callbacks(d), 5, "callback attempt 3 due")
        t = report_callback(d, tid, True)
        assert t["callback_status"] == "delivered" and t["callback_attempts"] == 3
        g = get(d, tid)
        assert g["callback_status"] == "delivered" and g["callback_attempts"] == 3
        code, msg = rpc_error(report_callback, d, tid, True)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no callback pending" in msg
        code, _ = rpc_error(report_callback, d, new_id(), True)
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = rpc_error(report_callback, d, "x" * 32, True)
        assert code == grpc.StatusCode.INVALID_ARGUMENT

        _, m = d.http("/metrics")
        assert "# TYPE faas_task_callbacks_total counter\n" in m
        assert 'faas_task_callbacks_total{outcome="delivered"} 1\n' in m
        assert 'faas_task_callbacks_total{outcome="retried"} 2\n' in m
        assert 'faas_task_callbacks_total{outcome="failed"} 0\n' in m
        assert 'faas_discovery_rpc_total{method="ClaimCallbacks",code="OK"}' in m
    finally:
        assert d.stop() == 0, d.log()


def test_sigkill_right_after_submit_keeps_the_task(tmp):
    state = os.path.join(tmp, "state")
    d = Discovery(state).start()
    deploy_fn(d)
    tid = submit(d, request=request(b"survives"))["id"]
    d.proc.send_signal(signal.SIGKILL)  # no clean shutdown: only what was committed survives
    d.proc.wait(timeout=10)
    d.channel.close()
    d.channel = None

    d = Discovery(state).start()
    try:
        t = get(d, tid)
        assert t["status"] == pb.QUEUED and t["function"] == "work"
        got = claim(d)
        assert [c["id"] for c in got] == [tid] and got[0]["request"]["body"] == b"survives"
        report(d, tid, pb.REPORT_STARTED)
        assert report(d, tid, pb.REPORT_DONE, result={"status": 200, "body": b"ok"})["status"] == pb.SUCCEEDED
    finally:
        assert d.stop() == 0, d.log()
