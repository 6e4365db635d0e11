"""Async tasks run by the agent (docs/async.md), driven at the RPC level: SubmitTask to
discovery, the gateway's dispatcher claims the task and hands it to a pod, the agent answers
202, runs the call and reports on its control socket, the worker manager relays with
ReportTask. Checks the result replays the user server's response byte for byte, and that a
user server killed mid-task makes the task run again and succeed on attempt 2."""
import os
import secrets
import signal
import time

import grpc
import pytest

import discpb as pb
from platform_util import Platform, wait_until

SVC = "/faas.Discovery/"


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path).start()
    try:
        p.deploy_hello("hello")
        yield p
    finally:
        p.stop()


def call(p, method, req_msg, req, resp_msg):
    with grpc.insecure_channel(p.discovery_addr) as ch:
        return pb.decode(resp_msg, ch.unary_unary(SVC + method)(pb.encode(req_msg, req), timeout=10))


def submit(p, method, path, body=b"", headers=()):
    tid = secrets.token_hex(16)
    req = {"method": method, "path": path, "authority": "hello", "body": body,
           "headers": [{"key": k, "value": v} for k, v in headers]}
    call(p, "SubmitTask", "Task", {"id": tid, "function": "hello", "request": req}, "Task")
    return tid


def get(p, tid):
    return call(p, "GetTask", "TaskId", {"id": tid}, "Task")


def wait_status(p, tid, status, timeout):
    wait_until(lambda: get(p, tid)["status"] == status, timeout, interval=0.1,
               what=f"task {tid} status {status}: {get(p, tid)}\n{p.logs()}")
    return get(p, tid)


def descendants_named(root, comm):
    """PIDs named comm whose ancestry reaches root (only this test's pods: other worktrees
    may run hello servers too)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            pid = int(d)
            while pid > 1:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
                if pid == root:
                    out.append(int(d))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_task_result_replayed_byte_for_byte(plat):
    body = bytes(range(256)) * 300  # every byte value, 76,800 bytes: more than one 64 KiB chunk
    tid = submit(plat, "POST", "/echo", body, [("content-type", "application/x-test")])
    t = wait_status(plat, tid, pb.SUCCEEDED, 30)
    assert t["attempts"] == 1 and t["instance_id"] != "" and t["result_status"] == 200
    assert t["result_size"] == len(body)
    res = call(plat, "GetTaskResult", "TaskId", {"id": tid}, "TaskResult")
    assert res["status"] == 200 and res["body"] == body
    hdrs = {h["key"]: h["value"] for h in res["headers"]}
    assert hdrs.get("content-type") == "application/octet-stream", res["headers"]
    assert "content-length" not in hdrs and "connection" not in hdrs


def test_user_server_killed_mid_task_runs_again(plat):
    tid = submit(plat, "GET", "/slow?ms=4000")
    wait_until(lambda: get(plat, tid)["instance_id"] != "", 30, interval=0.05,
               what=f"task started: {get(plat, tid)}\n{plat.logs()}")
    first = get(plat, tid)
    assert first["status"] == pb.RUNNING and first["attempts"] == 1
    pids = descendants_named(plat.wm.proc.pid, "hello")
    assert pids, plat.logs()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    t = wait_status(plat, tid, pb.SUCCEEDED, 40)
    assert t["attempts"] == 2, t
    assert t["instance_id"] != first["instance_id"]
    res = call(plat, "GetTaskResult", "TaskId", {"id": tid}, "TaskResult")
    assert res["status"] == 200
