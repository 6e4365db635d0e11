"""The async-task rows of `make bench` (issue 11, docs/async.md), imported by bench.py.

- Durable submissions per second: wrk POSTs /async-function/bench/echo at c16; every 202
  means the task was committed to discovery's store first. The store's own counters say how
  many tasks each transaction carried; a second, shorter run under strace counts the
  fsync/fdatasync calls discovery made per submission.
- Submit-to-succeeded latency of a trivial task at c1: the client POSTs the submission and
  polls GET /tasks/<id> every millisecond on the same keep-alive connection until it reads
  `succeeded`; beside it the same POST made synchronously (/function/bench/echo).

Runs last: the tasks submitted by the throughput run are still running afterwards."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

SUBMIT_LUA = """-- wrk script: a small async submission
wrk.method = "POST"
wrk.body = "x"
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def _counter(s, name):
    st, txt = s.pu.http_get(f"http://127.0.0.1:{s.platform.disc_mport}/metrics")
    m = re.search(rf"^{name} (\d+)", txt, re.M)
    if st != 200 or not m:
        raise RuntimeError(f"{name} not in discovery's metrics ({st})")
    return int(m.group(1))


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def _latency(s, n):
    """(async submit-to-succeeded us, server-side finished-created ms, sync us) lists."""
    port = s.platform.http_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    asy, server, syn = [], [], []
    try:
        for i in range(n + 5):  # 5 warm-up rounds, not counted
            t0 = time.perf_counter()
            conn.request("POST", "/async-function/bench/echo", body=b"x")
            r = conn.getresponse()
            body = r.read()
            if r.status != 202:
                raise RuntimeError(f"submission answered {r.status}: {body[:200]!r}")
            tid = json.loads(body)["id"]
            deadline = t0 + 30
            while True:
                conn.request("GET", "/tasks/" + tid)
                r = conn.getresponse()
                doc = json.loads(r.read())
                if doc["status"] == "succeeded":
                    break
                if doc["status"] in ("failed", "cancelled") or time.perf_counter() > deadline:
                    raise RuntimeError(f"task {tid} ended {doc}")
                time.sleep(0.001)
            t1 = time.perf_counter()
            conn.request("POST", "/function/bench/echo", body=b"x")
            r = conn.getresponse()
            r.read()
            t2 = time.perf_counter()
            if i >= 5:
                asy.append((t1 - t0) * 1e6)
                syn.append((t2 - t1) * 1e6)
                server.append(_ms(doc["finished"]) - _ms(doc["created"]))
    finally:
        conn.close()
    return asy, server, syn


def _ms(iso):
    """'2026-12-04T15:33:28.123Z' -> ms since the epoch."""
    import calendar
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(iso[20:23])


def _fsyncs(s, a, wrk, tmp):
    """fsync+fdatasync calls of discovery per submission, over a short run under strace."""
    pid = s.platform.discovery.proc.pid
    out = os.path.join(tmp, "tasks-strace.txt")
    argv = ["strace", "-c", "-q", "-f", "-e", "trace=fsync,fdatasync", "-o", out]
    for tid in os.listdir(f"/proc/{pid}/task"):
        argv += ["-p", tid]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let strace attach
    before = _counter(s, "faas_tasks_submitted_total")
    wrk(f"http://127.0.0.1:{s.platform.http_port}/async-function/bench/echo", 16, 2, script=_lua(tmp))
    n = _counter(s, "faas_tasks_submitted_total") - before
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = 0
    with open(out) as f:
        for line in f:
            fl = line.split()
            if len(fl) >= 5 and fl[0][0].isdigit() and fl[-1] in ("fsync", "fdatasync"):
                calls += int(fl[3])
    return calls, n


def _lua(tmp):
    path = os.path.join(tmp, "submit.lua")
    with open(path, "w") as f:
        f.write(SUBMIT_LUA)
    return path


def scen_tasks(s, a, res, wrk):
    """Async tasks: durable submissions/s at c16 with fsyncs per submission; submit-to-succeeded p50/p99."""
    asy, server, syn = _latency(s, max(50, a.cold))
    out = {"latency": {"n": len(asy), "async_p50": _pct(asy, 50), "async_p99": _pct(asy, 99),
                       "server_p50_ms": _pct(server, 50), "server_p99_ms": _pct(server, 99),
                       "sync_p50": _pct(syn, 50), "sync_p99": _pct(syn, 99)}}
    sub0, com0 = _counter(s, "faas_tasks_submitted_total"), _counter(s, "faas_task_commits_total")
    r = wrk(f"http://127.0.0.1:{s.platform.http_port}/async-function/bench/echo", 16, a.seconds,
            script=_lua(s.tmp))
    subs = _counter(s, "faas_tasks_submitted_total") - sub0
    commits = _counter(s, "faas_task_commits_total") - com0
    calls, n = _fsyncs(s, a, wrk, s.tmp)
    out["submit"] = {"rps": r["rps"], "p50": r["p50"], "p99": r["p99"], "errors": r["errors"],
                     "accepted": r["requests"], "stored": subs, "per_commit": subs / max(commits, 1),
                     "fsyncs": calls, "fsync_n": n}
    res["tasks"] = out
    print(f"  tasks: {r['rps']:.0f} durable submissions/s at c16, {out['submit']['per_commit']:.1f} per commit, "
          f"{calls / max(n, 1):.3f} fsyncs per submission; submit-to-succeeded p50 "
          f"{out['latency']['async_p50'] / 1000:.2f} ms (sync {out['latency']['sync_p50'] / 1000:.2f} ms)",
          file=sys.stderr, flush=True)


def rows(res, add, f_us, f_rps):
    t = res.get("tasks")
    if not t:
        return
    sb, lt = t["submit"], t["latency"]
    err = f" ({sb['errors']} errors)" if sb["errors"] else ""
    add("async: durable submissions (POST /async-function/, 202 after commit)", 16, "platform",
        f_rps(sb["rps"]) + err, f_us(sb["p50"]), f_us(sb["p99"]),
        f"{sb['per_commit']:.1f} tasks per commit", f"{sb['fsyncs'] / max(sb['fsync_n'], 1):.3f} fsyncs/submission",
        "", "")
    add("async: submit -> succeeded, trivial task (client polls every 1 ms)", 1, "platform", f"n={lt['n']}",
        f_us(lt["async_p50"]), f_us(lt["async_p99"]),
        f"server finished-created p50 {lt['server_p50_ms']:.0f} ms, p99 {lt['server_p99_ms']:.0f} ms", "", "", "")
    add("async: the same POST made synchronously", 1, "platform", f"n={lt['n']}", f_us(lt["sync_p50"]),
        f_us(lt["sync_p99"]), f"async/sync p50 {lt['async_p50'] / max(lt['sync_p50'], 1):.1f}x", "", "", "")
