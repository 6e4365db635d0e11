"""Async tasks run by the agent (docs/async.md).

Through the platform, at the RPC level: SubmitTask to discovery, the gateway's dispatcher
claims the task and hands it to a pod, the agent answers 202, runs the call and reports on
its control socket, the worker manager relays with ReportTask. Checks the result replays the
user server's response byte for byte, that a user server killed mid-task makes the task run
again and succeed on attempt 2, that the function's async.max_result and async.timeout fail
a task at once (attempts 1), and that DELETE /tasks/<id> aborts a running task in its pod.

The agent alone, under a control socket this test holds (as the worker manager would): a
result over faas-task-max-result and a passed deadline are TASK_FAILED with no_retry, while
CANCEL_TASK and other failures stay retryable; the user server sees its connection dropped."""
import json
import os
import secrets
import signal
import socket
import subprocess
import time

import grpc
import pytest

import discpb as pb
import faaspb
from platform_util import BUILD, Platform, authed_channel, curl, descendants_named, wait_until

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
    with authed_channel(p.discovery_addr, p.token()) as ch:
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


# ---- bounds and cancels through the platform --------------------------------------------


def set_async(p, name, **bounds):
    """Redeploys name with FunctionSpec.async set (the same code, a new version)."""
    spec = call(p, "GetFunction", "FunctionName", {"name": name}, "FunctionSpec")
    spec = {k: v for k, v in spec.items() if v is not None and k not in ("version", "created_unix_ms")}
    spec["async"] = bounds
    return call(p, "Deploy", "FunctionSpec", spec, "FunctionSpec")


def test_result_over_max_result_fails_at_once(plat):
    set_async(plat, "hello", max_result_bytes=1000)
    small = submit(plat, "POST", "/echo", b"s" * 1000)  # exactly the bound: kept
    big = submit(plat, "POST", "/echo", b"b" * 5000)
    t = wait_status(plat, big, pb.FAILED, 30)
    assert t["attempts"] == 1, t
    assert "result larger than 1000 bytes (async.max_result)" in t["error"], t
    # the agent judged it (the store would too): the hand-off told it the bound
    assert f"task={big} attempt=1 no_retry=1 err=\"result larger than 1000 bytes" in plat.wm.log(), plat.logs()
    assert wait_status(plat, small, pb.SUCCEEDED, 30)["result_size"] == 1000


def test_deadline_fails_at_once(plat):
    set_async(plat, "hello", timeout_ms=500)
    tid = submit(plat, "GET", "/slow?ms=5000")
    t = wait_status(plat, tid, pb.FAILED, 30)
    assert t["attempts"] == 1 and t["error"].startswith("deadline"), t
    assert f"task={tid} attempt=1 no_retry=1 err=\"deadline: the task ran longer than 500 ms" in plat.wm.log()
    assert t["finished_unix_ms"] - t["started_unix_ms"] < 4000, t


def http_task(p, tid):
    code, body, _ = curl(p.gateway_url + "/tasks/" + tid)
    assert code == 200, body
    return json.loads(body)


def test_delete_aborts_a_running_task_in_its_pod(plat):
    code, out, _ = curl(plat.gateway_url + "/async-function/hello/slow?ms=60000")
    assert code == 202, out
    tid = json.loads(out)["id"]
    wait_until(lambda: get(plat, tid)["instance_id"] != "", 30, interval=0.05,
               what=f"task started: {get(plat, tid)}\n{plat.logs()}")
    time.sleep(0.3)  # the agent is in the user server's call now
    t0 = time.monotonic()
    code, out, _ = curl("-X", "DELETE", plat.gateway_url + "/tasks/" + tid)
    assert code == 200, out
    wait_until(lambda: http_task(plat, tid)["status"] == "cancelled", 5, interval=0.05,
               what=f"task cancelled: {http_task(plat, tid)}\n{plat.logs()}")
    took = time.monotonic() - t0
    st = http_task(plat, tid)
    assert st["attempts"] == 1 and st["result_status"] is None, st
    assert took < 5, took  # not the 10 s renew nor the 60 s call
    # the pod dropped its upstream: the agent said so, and the instance serves on
    wait_until(lambda: "task=" + tid in plat.wm.log() and "event=task_cancel_sent" in plat.wm.log(), 5,
               what="worker manager sent CANCEL_TASK\n" + plat.logs())
    code, body, _ = curl(plat.url("hello", "/hello"))
    assert code == 200, body


# ---- the agent alone, under a control socket held here ------------------------------------

PY = "/usr/bin/python3"
AGENT = os.path.join(BUILD, "faas-agent")

# /big?n=N answers N bytes; /hold?ms=N answers after N ms unless the agent drops the
# connection first, which it records in the file "dropped"; anything else echoes the
# request headers as JSON.
USER_SERVER = r"""
import json, os, select, socket, time, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        arg = int(self.path.split("=")[1]) if "=" in self.path else 0
        if self.path.startswith("/big"):
            return self.reply(b"x" * arg)
        if self.path.startswith("/hold"):
            end = time.monotonic() + arg / 1000
            while time.monotonic() < end:
                r, _, _ = select.select([self.connection], [], [], 0.02)
                if r and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    open("dropped", "a").write(self.path + "\n")
                    self.close_connection = True
                    return
            return self.reply(b"held")
        self.reply(json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


class Pod:
    """faas-agent specialized on USER_SERVER; self.sock is the worker manager's end."""

    def __init__(self, d):
        self.dir = str(d)
        with open(os.path.join(self.dir, "server.py"), "w") as f:
            f.write(USER_SERVER)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.err = open(os.path.join(self.dir, "agent.stderr"), "wb")
        env = {"FAAS_AGENT_CONTROL_FD": str(theirs.fileno()), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen([AGENT], env=env, pass_fds=[theirs.fileno()], stderr=self.err)
        theirs.close()
        hello = self.event()
        assert hello["type"] == faaspb.EV_HELLO, hello
        self.url = f"http://127.0.0.1:{hello['port']}"
        spec = faaspb.function_spec("tasks", [PY, "server.py"], cold_start_timeout_ms=10000)
        self.sock.send(faaspb.specialize(spec, "inst-t", os.path.realpath(self.dir)))
        ready = self.event()
        assert ready["type"] == faaspb.EV_READY, (ready, self.stderr())

    def event(self, timeout=10):
        """The next event but FIRST_REQUEST (it comes once, before the first task's events)."""
        self.sock.settimeout(timeout)
        while True:
            ev = faaspb.decode_event(self.sock.recv(256 * 1024))
            if ev["type"] != faaspb.EV_FIRST_REQUEST:
                return ev

    def task_end(self, tid, timeout=10):
        """The first TASK_DONE or TASK_FAILED of tid (renewals and other tasks skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.event(max(0.1, deadline - time.monotonic()))
            if ev["task_id"] == tid and ev["type"] in (faaspb.EV_TASK_DONE, faaspb.EV_TASK_FAILED):
                return ev

    def run(self, path, *headers, tid=None):
        """Hands a task over as the dispatcher does; (http status, faas-error, task id)."""
        tid = tid or secrets.token_hex(16)
        args = ["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %header{faas-error}",
                "-H", "faas-task-id: " + tid, "-H", "faas-request-id: " + tid]
        for h in headers:
            args += ["-H", h]
        p = subprocess.run(["curl", *args, self.url + path], capture_output=True, text=True, timeout=20)
        code, _, err = p.stdout.partition(" ")
        return int(code or 0), err.strip(), tid

    def stderr(self):
        with open(os.path.join(self.dir, "agent.stderr")) as f:
            return f.read()

    def dropped(self):
        try:
            with open(os.path.join(self.dir, "dropped")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self):
        self.sock.close()  # the worker manager gone: the agent exits
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.err.close()


@pytest.fixture
def pod(tmp_path):
    p = Pod(tmp_path)
    yield p
    p.close()


def test_agent_result_over_max_result_is_failed_no_retry(pod):
    code, _, tid = pod.run("/big?n=5000", "faas-task-max-result: 1000")
    assert code == 202
    ev = pod.task_end(tid)
    assert ev["type"] == faaspb.EV_TASK_FAILED and ev["no_retry"] == 1, ev
    assert ev["message"] == "result larger than 1000 bytes (async.max_result)", ev
    code, _, tid = pod.run("/big?n=1000", "faas-task-max-result: 1000")  # exactly the bound
    ev = pod.task_end(tid)
    assert ev["type"] == faaspb.EV_TASK_DONE and ev["no_retry"] == 0, ev
    # absent: the platform default (8 MiB)
    code, _, tid = pod.run("/big?n=200000")
    ev = pod.task_end(tid)
    assert ev["type"] == faaspb.EV_TASK_DONE and ev["more"] == 1, ev


def test_agent_bad_max_result_is_400_and_platform_headers_stay_ours(pod):
    for bad in ("0", "12k", "-5", "1 000"):
        code, err, _ = pod.run("/headers", "faas-task-max-result: " + bad)
        assert (code, err) == (400, "bad-task"), bad
    code, _, tid = pod.run("/headers", "faas-task-max-result: 100000", "faas-deadline-ms: 60000",
                           "faas-task-attempt: 1", "x-custom: kept")
    assert code == 202
    ev = pod.task_end(tid)
    assert ev["type"] == faaspb.EV_TASK_DONE, ev
    res = pb.decode("TaskResult", ev["result"])
    seen = json.loads(res["body"])
    assert seen["x-custom"] == "kept" and seen["x-request-id"] == tid, seen
    # of the platform's headers only the request id and the attempt reach the user server
    assert {k: v for k, v in seen.items() if k.startswith("faas-")} == {"faas-request-id": tid,
                                                                        "faas-task-attempt": "1"}, seen


def test_agent_deadline_is_failed_no_retry_and_drops_the_call(pod):
    t0 = time.monotonic()
    code, _, tid = pod.run("/hold?ms=10000", "faas-deadline-ms: 400")
    assert code == 202
    ev = pod.task_end(tid)
    assert ev["type"] == faaspb.EV_TASK_FAILED and ev["no_retry"] == 1, ev
    assert ev["message"] == "deadline: the task ran longer than 400 ms (async.timeout)", ev
    assert time.monotonic() - t0 < 5
    wait_until(lambda: "/hold" in pod.dropped(), 5, what="the user server saw the connection dropped")


def test_agent_cancel_task_drops_the_call_and_stays_retryable(pod):
    code, _, tid = pod.run("/hold?ms=10000")
    assert code == 202
    ev = pod.event()
    assert ev["type"] == faaspb.EV_TASK_STARTED and ev["task_id"] == tid, ev
    time.sleep(0.2)
    pod.sock.send(faaspb.cancel_task("f" * 32))  # not running here: ignored
    pod.sock.send(faaspb.cancel_task(tid))
    ev = pod.task_end(tid, timeout=3)
    # the store, which has cancel_requested set, ends it cancelled; no_retry is not the agent's call
    assert ev["type"] == faaspb.EV_TASK_FAILED and ev["message"] == "cancelled" and ev["no_retry"] == 0, ev
    wait_until(lambda: "/hold" in pod.dropped(), 5, what="the user server saw the connection dropped")
