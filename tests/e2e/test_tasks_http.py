"""The async task API on the gateway's HTTP port (issue 11, docs/async.md): submissions
answered 202 only once durable, the /tasks endpoints, and what never makes a task. Real
daemons (discovery with its task store, a worker manager, the gateway) and curl."""
import json
import os
import subprocess

import pytest

from platform_util import Platform, curl, wait_until


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("tasks")).start()
    try:
        p.deploy_hello()
        p.deploy_hello("small", "--max-body", "1000")
        yield p
    finally:
        p.stop()


def head_and_body(out):
    """curl -i output -> (header dict with lower-case names, body)."""
    head, _, body = out.partition("\n\n")
    hdrs = {}
    for line in head.splitlines()[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return hdrs, body


def submit(plat, path="/async-function/hello/echo", *args):
    code, out, err = curl("-i", *args, plat.gateway_url + path)
    hdrs, body = head_and_body(out)
    return code, hdrs, body


def tasks(plat, query=""):
    code, body, _ = curl(plat.gateway_url + "/tasks" + query)
    assert code == 200, body
    return json.loads(body)


def test_submission_is_202_with_location_request_id_and_json(plat):
    code, hdrs, body = submit(plat, "/async-function/hello/echo?x=1", "-d", "payload")
    assert code == 202, body
    doc = json.loads(body)
    tid = doc["id"]
    assert doc == {"id": tid, "status": "queued"}
    assert len(tid) == 32 and all(c in "0123456789abcdef" for c in tid)
    assert hdrs["location"] == "/tasks/" + tid
    assert hdrs["faas-request-id"] == tid
    code, body, _ = curl(plat.gateway_url + "/tasks/" + tid)
    assert code == 200, body
    st = json.loads(body)
    assert st["id"] == tid and st["function"] == "hello" and st["version"] == 1
    assert st["status"] in ("queued", "running", "succeeded", "failed")
    assert st["created"].endswith("Z")


def test_ids_are_unguessable_and_distinct(plat):
    ids = {json.loads(submit(plat, "/async-function/hello/echo", "-d", "x")[2])["id"] for _ in range(20)}
    assert len(ids) == 20
    # 128 bits: no two share a long prefix by chance
    assert len({i[:12] for i in ids}) == 20


def test_prefer_respond_async_on_function_path(plat):
    code, hdrs, body = submit(plat, "/function/hello/echo", "-H", "Prefer: wait=5, respond-async", "-d", "x")
    assert code == 202, body
    assert hdrs["preference-applied"] == "respond-async"
    assert hdrs["location"] == "/tasks/" + json.loads(body)["id"]
    # without the preference the same path is an ordinary call
    code, body, _ = curl("-d", "sync", plat.gateway_url + "/function/hello/echo")
    assert (code, body) == (200, "sync")


def test_unknown_function_is_404_and_makes_no_task(plat):
    before = len(tasks(plat, "?limit=1000")["tasks"])
    code, _, body = submit(plat, "/async-function/nope/x", "-d", "x")
    assert code == 404 and "nope" in body
    code, _, body = submit(plat, "/function/nope/x", "-H", "Prefer: respond-async")
    assert code == 404
    assert len(tasks(plat, "?limit=1000")["tasks"]) == before


def test_body_over_the_function_limit_is_413_and_makes_no_task(plat):
    code, _, body = submit(plat, "/async-function/small/echo", "-d", "y" * 2000)
    assert code == 413, body
    assert tasks(plat, "?function=small")["tasks"] == []


def test_bad_callback_url_is_400(plat):
    code, _, body = submit(plat, "/async-function/hello/echo", "-H", "X-Callback-Url: ftp://x/y", "-d", "x")
    assert code == 400, body
    code, _, body = submit(plat, "/async-function/hello/echo", "-H", "X-Callback-Url: http://127.0.0.1:9/cb", "-d", "x")
    assert code == 202, body
    st = json.loads(curl(plat.gateway_url + "/tasks/" + json.loads(body)["id"])[1])
    assert st["callback_url"] == "http://127.0.0.1:9/cb"


def test_unknown_and_malformed_ids(plat):
    code, body, _ = curl(plat.gateway_url + "/tasks/" + "0" * 32)
    assert code == 404, body
    code, body, _ = curl(plat.gateway_url + "/tasks/" + "0" * 32 + "/result")
    assert code == 404, body
    for bad in ("zzz", "0" * 31, "0" * 33, "A" * 32):
        code, body, _ = curl(plat.gateway_url + "/tasks/" + bad)
        assert code == 400, (bad, body)
    code, body, _ = curl("-X", "DELETE", plat.gateway_url + "/tasks/" + "1" * 32)
    assert code == 404, body
    code, body, _ = curl(plat.gateway_url + "/tasks/" + "0" * 32 + "/other")
    assert code == 404, body


def test_methods_not_allowed(plat):
    code, _, _ = curl("-X", "POST", plat.gateway_url + "/tasks")
    assert code == 405
    code, _, _ = curl("-X", "PUT", plat.gateway_url + "/tasks/" + "0" * 32)
    assert code == 405


def test_list_filters_pages_and_rejects_bad_queries(plat):
    ids = [json.loads(submit(plat, "/async-function/small/echo", "-d", "x")[2])["id"] for _ in range(5)]
    listed = tasks(plat, "?function=small&limit=1000")
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(ids)
    assert all(t["function"] == "small" for t in listed["tasks"])
    page = tasks(plat, "?function=small&limit=2")
    assert len(page["tasks"]) == 2 and page["next"] == page["tasks"][-1]["id"]
    seen = [t["id"] for t in page["tasks"]]
    while page["next"]:
        page = tasks(plat, f"?function=small&limit=2&after={page['next']}")
        seen += [t["id"] for t in page["tasks"]]
    assert seen == sorted(ids)
    for bad in ("?limit=0", "?limit=1001", "?status=done", "?color=red", "?after=xyz", "?limit=1&limit=2"):
        code, body, _ = curl(plat.gateway_url + "/tasks" + bad)
        assert code == 400, (bad, body)


def test_a_submitted_task_is_durable_across_a_discovery_restart(plat):
    code, _, body = submit(plat, "/async-function/hello/echo", "-d", "keep me")
    assert code == 202
    tid = json.loads(body)["id"]
    plat.discovery.kill()
    plat.discovery.start()
    st = wait_until(lambda: json.loads(curl(plat.gateway_url + "/tasks/" + tid)[1]), 15, interval=0.1,
                    what="the task after discovery's restart")
    assert st["id"] == tid and st["function"] == "hello"


def poll_done(plat, tid, timeout=30):
    def done():
        st = json.loads(curl(plat.gateway_url + "/tasks/" + tid)[1])
        return st if st["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(done, timeout, interval=0.1, what=f"task {tid} finished")


def test_result_is_replayed_byte_for_byte_with_status_and_header(plat, tmp_path):
    """A binary body with every byte value, a custom status and a header of the function's."""
    body = bytes(range(256)) * 300
    src = tmp_path / "body.bin"
    src.write_bytes(body)
    code, hdrs, out = submit(plat, "/async-function/hello/echo?status=201", "--data-binary", f"@{src}")
    assert code == 202, out
    tid = json.loads(out)["id"]
    st = poll_done(plat, tid)
    assert st["status"] == "succeeded", (st, plat.logs())
    assert st["result_status"] == 201 and st["result_size"] == len(body) and st["attempts"] == 1
    assert st["finished"] is not None and st["started"] is not None
    dst, hdr = tmp_path / "result.bin", tmp_path / "result.hdr"
    p = subprocess.run(["curl", "-sS", "-D", str(hdr), "-o", str(dst), plat.gateway_url + f"/tasks/{tid}/result"],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    head = hdr.read_text().lower()
    assert head.startswith("http/1.1 201"), head
    assert dst.read_bytes() == body
    assert "x-echo-status: 201" in head
    assert "content-type: application/octet-stream" in head


def test_result_while_running_is_202_with_retry_after_then_the_result(plat):
    code, hdrs, out = submit(plat, "/async-function/hello/slow?ms=1500", "-X", "GET")
    assert code == 202, out
    tid = json.loads(out)["id"]
    code, out, _ = curl("-i", plat.gateway_url + f"/tasks/{tid}/result")
    h, b = head_and_body(out)
    assert code == 202 and h.get("retry-after") == "1", out
    assert json.loads(b)["status"] in ("queued", "running")
    st = poll_done(plat, tid)
    assert st["status"] == "succeeded", st
    code, out, _ = curl(plat.gateway_url + f"/tasks/{tid}/result")
    assert code == 200, out
    # a finished task cannot be cancelled
    code, out, _ = curl("-X", "DELETE", plat.gateway_url + f"/tasks/{tid}")
    assert code == 409, out

