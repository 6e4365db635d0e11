"""Async tasks that outlive the components around them (issue 11, docs/async.md), over the
gateway's HTTP API with real daemons: the gateway SIGKILLed and restarted in the middle of a
60-second task, which the user server still sees exactly once; the pod itself killed
mid-task, which runs it again. The user server (examples/hello-http with
HELLO_LOG_REQUESTS=1) logs a line per request with its X-Request-Id, which the agent sets to
the task id: the function's log counts how often each task really ran, and how many ran
at once (a burst of 1,000 submissions never runs more than async.concurrency together)."""
import concurrent.futures
import http.client
import json
import os
import re
import signal

import pytest

from platform_util import ROOT, Platform, curl, descendants_named, wait_until

LINE = re.compile(r"hello: request (begin|end) id=([0-9a-f]{32}) t_ms=(\d+) ")


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


def deploy_counted(p, name, *extra):
    p.deploy_hello(name, "-e", "HELLO_LOG_REQUESTS=1", *extra)


def submit(p, path, *args):
    code, body, err = curl("-X", "GET", *args, p.gateway_url + path)
    assert code == 202, (code, body, err, p.logs())
    return json.loads(body)["id"]


def task(p, tid):
    code, body, _ = curl(p.gateway_url + "/tasks/" + tid)
    assert code == 200, body
    return json.loads(body)


def wait_status(p, tid, status, timeout):
    return wait_until(lambda: (lambda t: t if t["status"] == status else None)(task(p, tid)), timeout,
                      interval=0.1, what=f"task {tid} {status}: {task(p, tid)}\n{p.logs()}")


def runs(p, fn):
    """{task id: [(begin|end, t_ms)]} from the function's log (the worker manager's file)."""
    out = {}
    try:
        with open(os.path.join(p.dir, "worker", "logs", fn + ".log"), errors="replace") as f:
            for m in LINE.finditer(f.read()):
                out.setdefault(m.group(2), []).append((m.group(1), int(m.group(3))))
    except FileNotFoundError:
        pass
    return out


def test_gateway_sigkilled_mid_60s_task_runs_it_exactly_once(plat):
    deploy_counted(plat, "long")
    tid = submit(plat, "/async-function/long/slow?ms=60000")
    wait_until(lambda: runs(plat, "long").get(tid), 60, interval=0.05,
               what=f"the user server took the task\n{plat.logs()}")
    running = task(plat, tid)
    assert running["status"] == "running" and running["attempts"] == 1, running

    assert plat.gateway.kill() == -signal.SIGKILL
    plat.gateway.start()

    # the agent owns the run: the restarted gateway neither repeats nor aborts it
    done = wait_status(plat, tid, "succeeded", 120)
    assert done["attempts"] == 1, done
    assert done["result_status"] == 200
    code, body, _ = curl(plat.gateway_url + "/tasks/" + tid + "/result")
    assert (code, body) == (200, "slept 60000 ms\n")
    seen = runs(plat, "long")[tid]
    assert [k for k, _ in seen] == ["begin", "end"], seen
    assert seen[1][1] - seen[0][1] >= 60000


def test_pod_killed_mid_task_runs_again_on_attempt_2(plat):
    deploy_counted(plat, "podkill")
    tid = submit(plat, "/async-function/podkill/slow?ms=5000")
    wait_until(lambda: runs(plat, "podkill").get(tid), 60, interval=0.05,
               what=f"the user server took the task\n{plat.logs()}")
    first = task(plat, tid)
    agents = descendants_named(plat.wm.proc.pid, "faas-agent")
    assert agents, plat.logs()
    for pid in agents:  # the whole pod: its agent, and with it the user server it started
        os.kill(pid, signal.SIGKILL)

    done = wait_status(plat, tid, "succeeded", 60)
    assert done["attempts"] == 2, done
    assert done["instance"] != first["instance"]
    begins = [k for k, _ in runs(plat, "podkill")[tid] if k == "begin"]
    assert len(begins) == 2


def test_burst_of_1000_all_succeed_once_and_never_above_async_concurrency(plat, tmp_path):
    manifest = tmp_path / "burst.yaml"
    manifest.write_text(f"""name: burst
command: ["./hello"]
health: {{path: /healthz}}
env: {{HELLO_LOG_REQUESTS: "1"}}
async: {{concurrency: 4}}
code: {os.path.join(ROOT, "examples", "hello-http")}
""")
    plat.ctl("deploy", "-f", str(manifest))

    def submit_some(n):
        conn = http.client.HTTPConnection("127.0.0.1", plat.http_port, timeout=60)
        ids = []
        try:
            for _ in range(n):
                conn.request("GET", "/async-function/burst/slow?ms=20")
                r = conn.getresponse()
                body = r.read()
                assert r.status == 202, body
                ids.append(json.loads(body)["id"])
        finally:
            conn.close()
        return ids

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        ids = [i for part in ex.map(submit_some, [1000 // 16 + (k < 1000 % 16) for k in range(16)]) for i in part]
    assert len(ids) == 1000 and len(set(ids)) == 1000

    def succeeded():
        code, body, _ = curl(plat.gateway_url + "/tasks?function=burst&status=succeeded&limit=1000")
        assert code == 200, body
        return len(json.loads(body)["tasks"]) == 1000
    wait_until(succeeded, 300, interval=0.5, what=f"1,000 tasks succeeded\n{plat.logs()}")

    seen = runs(plat, "burst")
    assert set(seen) == set(ids)
    twice = {i: v for i, v in seen.items() if [k for k, _ in v] != ["begin", "end"]}
    assert not twice, list(twice.items())[:5]
    # how many ran at once, from the user server's own clock (an end before a begin of
    # the same millisecond: the log has 1 ms resolution)
    events = sorted((t, 0 if k == "end" else 1) for v in seen.values() for k, t in v)
    running = peak = 0
    for _, up in events:
        running += 1 if up else -1
        peak = max(peak, running)
    assert 1 <= peak <= 4, peak


def test_short_retention_purges_the_finished_task_and_its_result(plat, tmp_path):
    manifest = tmp_path / "brief.yaml"
    manifest.write_text(f"""name: brief
command: ["./hello"]
health: {{path: /healthz}}
async: {{retention: 2s}}
code: {os.path.join(ROOT, "examples", "hello-http")}
""")
    plat.ctl("deploy", "-f", str(manifest))
    plat.deploy_hello("kept")
    code, body, _ = curl("-d", "gone soon", plat.gateway_url + "/async-function/brief/echo")
    assert code == 202, body
    tid = json.loads(body)["id"]
    code, body, _ = curl("-d", "kept", plat.gateway_url + "/async-function/kept/echo")
    kept = json.loads(body)["id"]
    wait_status(plat, tid, "succeeded", 60)
    wait_status(plat, kept, "succeeded", 60)
    assert curl(plat.gateway_url + "/tasks/" + tid + "/result")[:2] == (200, "gone soon")

    wait_until(lambda: curl(plat.gateway_url + "/tasks/" + tid)[0] == 404, 30, interval=0.2,
               what=f"task {tid} purged after its function's 2 s retention")
    assert curl(plat.gateway_url + "/tasks/" + tid + "/result")[0] == 404
    code, body, _ = curl(plat.gateway_url + "/tasks?function=brief")
    assert code == 200 and json.loads(body)["tasks"] == []
    # the other function keeps the default retention (7 days)
    assert task(plat, kept)["status"] == "succeeded"
