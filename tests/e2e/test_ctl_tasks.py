"""faasctl's async task commands against the real platform (issue 11, docs/async.md):
`invoke --async`, `tasks list|get|result|cancel|wait`, and a manifest's async.* keys
deployed and shown by `faasctl get`. Exit codes: 0 done, 1 failure, 2 usage, 3 the task
has not finished."""
import json
import re
import subprocess

import pytest

from platform_util import BUILD, ROOT, Platform, wait_until

HEX32 = re.compile(r"^[0-9a-f]{32}$")
SUBS = ["list", "get", "result", "cancel", "wait"]


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl_tasks")
    p = Platform(d).start()
    try:
        p.deploy_hello()
        # one task at a time: a slow one keeps the next queued (async.concurrency)
        manifest = d / "one.yaml"
        manifest.write_text(f"""name: one
command: ["./hello"]
code: {ROOT}/examples/hello-http
health: {{path: /healthz}}
async:
  concurrency: 1
  timeout: 2h
  retention: 3d
  retry_on: [5xx]
""")
        p.ctl("deploy", "-f", str(manifest))
        yield p
    finally:
        p.stop()


def submit(plat, fn="hello", *args):
    p = plat.ctl("invoke", "--async", fn, *args)
    tid = p.stdout.strip()
    assert HEX32.match(tid), (p.stdout, p.stderr)
    return tid


def status_of(plat, tid):
    return json.loads(plat.ctl("tasks", "get", tid, "--json").stdout)["status"]


# ---- help and usage (no platform needed, but cheap) --------------------------------------


def test_help_of_tasks_and_each_subcommand():
    for args, start in [(["tasks", "--help"], "usage: faasctl tasks list|get"),
                        *[(["tasks", s, "--help"], f"usage: faasctl tasks {s}") for s in SUBS]]:
        p = subprocess.run([f"{BUILD}/faasctl", *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.startswith(start), (args, p.stdout, p.stderr)
    p = subprocess.run([f"{BUILD}/faasctl", "invoke", "--help"], capture_output=True, text=True, timeout=10)
    assert "--async" in p.stdout and "--callback URL" in p.stdout


@pytest.mark.parametrize("args,needle", [
    (["tasks"], "expects a subcommand"),
    (["tasks", "frob"], 'unknown subcommand "frob"'),
    (["tasks", "get"], "expects a task id"),
    (["tasks", "get", "../function/x"], "must be 32 lowercase hex"),
    (["tasks", "list", "x"], "takes no arguments"),
    (["tasks", "list", "--status", "done"], "--status \"done\""),
    (["tasks", "list", "--limit", "1001"], "--limit \"1001\" must be 1-1000"),
    (["tasks", "get", "0" * 32, "--status", "queued"], "--status does not apply here"),
    (["tasks", "wait", "0" * 32, "--timeout", "soon"], "--timeout \"soon\""),
    (["invoke", "hello", "--callback", "http://x/"], "--callback needs --async"),
    (["invoke", "hello", "--async", "--callback", "ftp://x/"], "http:// or https://"),
    (["invoke", "hello", "--async", "--grpc", "/a.B/C"], "--async is for HTTP calls only"),
])
def test_usage_errors_exit_2(args, needle):
    p = subprocess.run([f"{BUILD}/faasctl", *args], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert needle in p.stderr, p.stderr


# ---- manifest keys --------------------------------------------------------------------------


def test_manifest_async_keys_are_deployed_and_shown_by_get(plat, tmp_path):
    out = plat.ctl("get", "one").stdout
    assert "async:" in out, out
    for line in ("  concurrency: 1", "  timeout: 2h", "  retention: 3d", "  retry_on: [5xx]",
                 "  # max_attempts: 3", "  # max_result: 8Mi"):
        assert line + "\n" in out, (line, out)
    assert "async" not in plat.ctl("get", "hello").stdout, "a function without async: keys shows none"
    # what get prints deploys again as the same bounds
    again = tmp_path / "again.yaml"
    again.write_text(out.replace("name: one", "name: one-again"))
    plat.ctl("deploy", "-f", str(again), "--dir", f"{ROOT}/examples/hello-http")
    block = lambda text: text[text.index("async:"):].split("\n# ")[0]
    assert block(plat.ctl("get", "one-again").stdout) == block(out)


def test_manifest_async_values_out_of_range_are_refused_by_name(plat, tmp_path):
    for body, needle in [("async: {timeout: 25h}", "async.timeout: must be more than 0 and at most 24h"),
                         ("async: {concurrency: 0}", "async.concurrency: must be 1-10000"),
                         ("async: {max_result: 9Mi}", "at most 8Mi"),
                         ("async: {retry_on: [4xx]}", 'unknown item "4xx" (known: 5xx)'),
                         ("async: {colour: red}", "async.colour: unknown async key")]:
        m = tmp_path / "bad.yaml"
        m.write_text(f"name: bad\ncommand: ./hello\ncode: {ROOT}/examples/hello-http\n{body}\n")
        p = plat.ctl("deploy", "-f", str(m), check=False)
        assert p.returncode == 2, (body, p.stdout, p.stderr)
        assert needle in p.stderr and "line 4" in p.stderr, p.stderr
    assert plat.ctl("get", "bad", check=False).returncode == 1, "nothing was deployed"


def test_deploy_rpc_refuses_an_async_bound_over_its_limit(plat):
    """Discovery checks AsyncSpec itself: a client other than faasctl gets the same limits."""
    import grpc
    from faaspb import _bytes, _int, _str
    spec = plat.rpc(plat.discovery_addr, "/faas.Discovery/GetFunction", _str(1, "one"))
    for field, value, needle in [(2, 24 * 3600 * 1000 + 1, "async.timeout must be at most 24 hours"),
                                 (1, 10001, "async.concurrency must be at most 10000"),
                                 (4, 11, "async.max_attempts must be at most 10"),
                                 (5, (8 << 20) + 1, "async.max_result must be at most 8 MiB"),
                                 (3, 90 * 86400 * 1000 + 1, "async.retention must be at most 90 days")]:
        # a second FunctionSpec.async (field 23) merges into the first: only this bound changes
        bad = spec + _bytes(23, _int(field, value))
        with pytest.raises(grpc.RpcError) as e:
            plat.rpc(plat.discovery_addr, "/faas.Discovery/Deploy", bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details(), e.value
    assert "  timeout: 2h\n" in plat.ctl("get", "one").stdout, "the refused specs changed nothing"


# ---- submit, wait, get, list, result ------------------------------------------------------------


def test_invoke_async_then_wait_prints_the_echoed_body(plat):
    tid = submit(plat, "hello", "-p", "/echo", "-d", "hi there")
    p = plat.ctl("tasks", "wait", tid, "--timeout", "30s")
    assert p.stdout == "hi there", (p.stdout, p.stderr)
    # --json gives the gateway's 202 body
    doc = json.loads(plat.ctl("invoke", "--async", "--json", "hello", "-p", "/echo", "-d", "x").stdout)
    assert HEX32.match(doc["id"]) and doc["status"] == "queued"


def test_get_and_list_show_the_task(plat):
    tid = submit(plat, "hello", "-p", "/echo?status=201", "-d", "body")
    plat.ctl("tasks", "wait", tid, "--timeout", "30s")
    out = plat.ctl("tasks", "get", tid).stdout
    fields = dict(l.split(": ", 1) for l in out.splitlines())
    assert fields["id"] == tid and fields["function"] == "hello" and fields["status"] == "succeeded", out
    assert fields["result_status"] == "201" and fields["result_size"] == "4" and fields["attempts"] == "1", out
    assert fields["error"] == "-" and fields["finished"].endswith("Z"), out
    table = plat.ctl("tasks", "list", "--function", "hello", "--limit", "1000").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "STATUS", "FUNCTION", "ATTEMPTS"], table
    row = [l for l in table if l.startswith(tid)]
    assert len(row) == 1 and row[0].split()[1:4] == ["succeeded", "hello", "1"], table
    doc = json.loads(plat.ctl("tasks", "list", "--json", "--status", "succeeded").stdout)
    assert tid in [t["id"] for t in doc["tasks"]] or doc["next"], doc
    assert all(t["status"] == "succeeded" for t in doc["tasks"])


def test_list_pages_with_limit_and_after(plat):
    ids = sorted(submit(plat, "one", "-p", "/echo", "-d", str(i)) for i in range(3))
    first = plat.ctl("tasks", "list", "--function", "one", "--limit", "1")
    rows = first.stdout.splitlines()[1:]
    assert len(rows) == 1 and "(more: faasctl tasks list --after " in first.stderr, (first.stdout, first.stderr)
    seen = [r.split()[0] for r in rows]
    after = seen[-1]
    while True:
        p = plat.ctl("tasks", "list", "--function", "one", "--limit", "1", "--after", after)
        rows = p.stdout.splitlines()[1:]
        seen += [r.split()[0] for r in rows]
        if "(more:" not in p.stderr:
            break
        after = seen[-1]
    assert set(ids) <= set(seen) and seen == sorted(seen), (ids, seen)
    for tid in ids:
        plat.ctl("tasks", "wait", tid, "--timeout", "30s")


def test_result_of_a_finished_task_with_include_and_an_error_status(plat):
    tid = submit(plat, "hello", "-p", "/echo?status=201", "-d", "made")
    plat.ctl("tasks", "wait", tid, "--timeout", "30s")
    p = plat.ctl("tasks", "result", tid)
    assert p.stdout == "made"
    p = plat.ctl("tasks", "result", tid, "-i")
    head, _, body = p.stdout.partition("\n\n")
    assert head.startswith("HTTP/1.1 201") and "x-echo-status: 201" in head.lower() and body == "made", p.stdout
    # the function's own 500 is a result (hello does not set retry_on): printed, exit 1 like invoke
    tid = submit(plat, "hello", "-p", "/echo?status=500", "-d", "oops")
    p = plat.ctl("tasks", "wait", tid, "--timeout", "30s", check=False)
    assert p.returncode == 1 and p.stdout == "oops" and "answered HTTP 500" in p.stderr, (p.stdout, p.stderr)


def test_result_of_an_unfinished_task_exits_3(plat):
    tid = submit(plat, "hello", "-p", "/slow?ms=3000", "-X", "GET")
    p = plat.ctl("tasks", "result", tid, check=False)
    assert p.returncode == 3 and "has not finished" in p.stderr, (p.stdout, p.stderr)
    p = plat.ctl("tasks", "wait", tid, "--timeout", "200ms", check=False)
    assert p.returncode == 3 and "is still" in p.stderr and p.stdout == "", (p.stdout, p.stderr)
    p = plat.ctl("tasks", "wait", tid, "--timeout", "30s")
    assert p.stdout == "slept 3000 ms\n", p.stdout


# ---- cancel ---------------------------------------------------------------------------------------


def test_cancel_a_task_waiting_out_its_retry_backoff(plat):
    """Deterministic without the concurrency cap: a function whose server cannot start
    fails each attempt at once, and the store holds the task queued for 1 s, then 2 s,
    before the next one. Cancelled then, it ends cancelled (were it caught running, the
    pending cancel still ends it cancelled when the attempt fails)."""
    plat.deploy_hello("broken", "--cmd", "./no-such-server")
    tid = submit(plat, "broken", "-p", "/echo", "-d", "x")

    def backing_off():
        st = json.loads(plat.ctl("tasks", "get", tid, "--json").stdout)
        return st["status"] == "queued" and st["attempts"] >= 1
    wait_until(backing_off, 20, interval=0.02, what="the task queued again after a failed attempt")
    p = plat.ctl("tasks", "cancel", tid)
    assert p.stdout in (f"cancelled {tid}\n", f"cancel requested for {tid} (it is running; it ends cancelled once "
                                               "its pod stops it)\n"), (p.stdout, p.stderr)
    wait_until(lambda: status_of(plat, tid) == "cancelled", 20, interval=0.1, what="the task cancelled")
    p = plat.ctl("tasks", "result", tid, check=False)
    assert p.returncode == 1 and "cancelled without a result" in p.stderr, (p.stdout, p.stderr)
    p = plat.ctl("tasks", "cancel", tid, check=False)
    assert p.returncode == 1 and "already finished, nothing to cancel" in p.stderr, (p.stdout, p.stderr)


def test_cancel_a_queued_task_then_a_finished_one(plat):
    """async.concurrency: 1 on `one`: while a slow task runs, the next one stays queued."""
    slow = submit(plat, "one", "-p", "/slow?ms=4000", "-X", "GET")
    wait_until(lambda: status_of(plat, slow) == "running", 20, interval=0.05, what="the slow task running")
    queued = submit(plat, "one", "-p", "/echo", "-d", "never")
    assert status_of(plat, queued) == "queued"
    p = plat.ctl("tasks", "cancel", queued)
    assert p.stdout == f"cancelled {queued}\n", (p.stdout, p.stderr)
    assert status_of(plat, queued) == "cancelled"
    p = plat.ctl("tasks", "result", queued, check=False)
    assert p.returncode == 1 and "cancelled without a result" in p.stderr, (p.stdout, p.stderr)
    p = plat.ctl("tasks", "wait", slow, "--timeout", "30s")
    # a finished task cannot be cancelled: 409 from the gateway, said plainly
    p = plat.ctl("tasks", "cancel", slow, check=False)
    assert p.returncode == 1 and "already finished, nothing to cancel" in p.stderr, (p.stdout, p.stderr)


# ---- errors from the gateway --------------------------------------------------------------------


def test_unknown_and_malformed_ids_are_errors(plat):
    for sub in ("get", "result", "cancel", "wait"):
        p = plat.ctl("tasks", sub, "0" * 32, check=False)
        assert p.returncode == 1 and f"no task {'0' * 32}" in p.stderr, (sub, p.stdout, p.stderr)
    for bad in ("zzz", "A" * 32, "0" * 33):
        p = plat.ctl("tasks", "get", bad, check=False)
        assert p.returncode == 1 and f'the gateway refused task id "{bad}"' in p.stderr, (bad, p.stderr)


def test_submission_errors_and_callback(plat):
    p = plat.ctl("invoke", "--async", "nope", "-d", "x", check=False)
    assert p.returncode == 1 and "HTTP 404" in p.stderr and "nope" in p.stderr, p.stderr
    tid = submit(plat, "hello", "-p", "/echo", "-d", "x", "--callback", "http://127.0.0.1:9/cb", "-H", "X-A: 1")
    out = plat.ctl("tasks", "get", tid).stdout
    assert "callback_url: http://127.0.0.1:9/cb\n" in out, out
