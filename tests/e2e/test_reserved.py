"""Reserved instances (issue 12, docs/scaling.md) with the real daemons: `--reserved N`
keeps N instances specialized from deploy on; they take a call only when no elastic
instance can, so the first call after deploy (or a quiet period) has no cold start; they
are replaced when they die and never released for idleness.

Which instance served a call: GET /whoami reports the user server's PID namespace, the
one its pod's agent (Instance.pid, pid 1 of the pod) lives in."""
import os
import re
import signal
import threading
import time

import pytest

from platform_util import BUILD, Platform, curl, http_get, json_of, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path, pool_size=2).start()
    try:
        yield p
    finally:
        p.stop()


def instances(plat, fn):
    """faasctl instances rows as dicts (ID ENDPOINT WORKER KIND STATE PID AGE)."""
    out = plat.ctl("instances", fn).stdout.splitlines()
    assert out[0].split() == ["ID", "ENDPOINT", "WORKER", "KIND", "STATE", "PID", "AGE"], out
    rows = []
    for line in out[1:]:
        f = line.split()
        if f:
            rows.append({"id": f[0], "kind": f[3], "state": f[4], "pid": int(f[5])})
    return rows


def pidns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def served_by(plat, fn, path="/whoami"):
    code, body, err = curl(plat.url(fn, path))
    assert code == 200, (code, body, err, plat.logs())
    return json_of(body)["pid_ns"]


def of_kind(rows, kind):
    return [r for r in rows if r["kind"] == kind and r["state"] == "ready"]


def wait_reserved(plat, fn, n, timeout=15):
    wait_until(lambda: len(of_kind(instances(plat, fn), "reserved")) == n, timeout, interval=0.1,
               what=f"{n} reserved instances of {fn} ready")
    return of_kind(instances(plat, fn), "reserved")


def reserved_metric(plat, fn):
    _, txt = http_get(f"{plat.gateway_url}/metrics")
    m = re.search(r'^faas_gateway_reserved_requests_total\{function="%s"\} (\d+)$' % re.escape(fn), txt, re.M)
    assert m, txt
    return int(m.group(1))


def test_reserved_ready_before_any_request_and_elastic_preferred(plat):
    plat.deploy_hello("warm", "--reserved", "2")
    # (a) two reserved instances, ready, before any request; no elastic one yet
    res = wait_reserved(plat, "warm", 2)
    assert of_kind(instances(plat, "warm"), "elastic") == []
    res_ns = {pidns(r["pid"]) for r in res}
    assert None not in res_ns and len(res_ns) == 2
    # (c) the first request is served at once by a reserved instance (no cold start to wait for)
    t0 = time.monotonic()
    first = served_by(plat, "warm")
    assert first in res_ns, plat.logs()
    assert time.monotonic() - t0 < 2.0
    assert reserved_metric(plat, "warm") >= 1
    # it also started one elastic instance for the calls after it
    wait_until(lambda: len(of_kind(instances(plat, "warm"), "elastic")) == 1, 15, interval=0.1,
               what="an elastic instance after the first call")
    # (b) light sequential load: the elastic instance serves, never a reserved one
    before = reserved_metric(plat, "warm")
    elastic_ns = {pidns(r["pid"]) for r in of_kind(instances(plat, "warm"), "elastic")}
    got = [served_by(plat, "warm") for _ in range(20)]
    assert set(got) <= elastic_ns, (got, elastic_ns, res_ns)
    # (f) the metric counted none of them
    assert reserved_metric(plat, "warm") == before
    assert len(of_kind(instances(plat, "warm"), "elastic")) == 1, "light load needs one elastic instance"
    out = plat.ctl("get", "warm").stdout
    assert "reserved: 2" in out, out


def test_reserved_takes_calls_while_elastic_is_busy(plat):
    # concurrency 1: long calls fill every elastic instance; the next call goes to a
    # reserved one at once instead of waiting for a cold start. max_instances 2 keeps
    # any scale-up (the dispatcher's, or the worker's on OVERLOAD) from adding an
    # elastic instance that would take it first.
    plat.deploy_hello("spike", "--reserved", "1", "--concurrency", "1", "--max-instances", "2")
    res = wait_reserved(plat, "spike", 1)
    res_ns = pidns(res[0]["pid"])
    assert served_by(plat, "spike") == res_ns
    wait_until(lambda: len(of_kind(instances(plat, "spike"), "elastic")) >= 1, 15, interval=0.1,
               what="an elastic instance")
    time.sleep(1)  # the scale-up the first call set off has settled
    n_elastic = len(of_kind(instances(plat, "spike"), "elastic"))
    slow = [threading.Thread(target=lambda: curl(plat.url("spike", "/slow?ms=3000"))) for _ in range(n_elastic)]
    for t in slow:
        t.start()
        time.sleep(0.2)  # one at a time: each fills the least busy elastic instance
    try:
        time.sleep(0.3)
        before = reserved_metric(plat, "spike")
        t0 = time.monotonic()
        assert served_by(plat, "spike") == res_ns
        assert time.monotonic() - t0 < 1.5
        assert reserved_metric(plat, "spike") == before + 1
    finally:
        for t in slow:
            t.join()


def test_dead_reserved_is_replaced_and_idle_keeps_reserved(plat):
    plat.deploy_hello("keep", "--reserved", "2", "--idle-timeout", "1s")
    res = wait_reserved(plat, "keep", 2)
    ids = {r["id"] for r in res}
    # (d) a reserved instance whose pod dies is replaced
    victim = res[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: len(of_kind(instances(plat, "keep"), "reserved")) == 2 and
               victim["id"] not in {r["id"] for r in instances(plat, "keep")}, 15, interval=0.1,
               what="the dead reserved instance replaced")
    res = of_kind(instances(plat, "keep"), "reserved")
    ids = {r["id"] for r in res}
    assert victim["id"] not in ids
    # (e) an elastic instance comes with traffic and goes when idle; the reserved stay
    served_by(plat, "keep")
    wait_until(lambda: len(of_kind(instances(plat, "keep"), "elastic")) == 1, 15, interval=0.1,
               what="an elastic instance")
    for _ in range(3):
        served_by(plat, "keep")
    wait_until(lambda: of_kind(instances(plat, "keep"), "elastic") == [], 20, interval=0.2,
               what="the idle elastic instance released")
    time.sleep(1.5)  # well past idle_timeout
    assert {r["id"] for r in of_kind(instances(plat, "keep"), "reserved")} == ids
    assert len(instances(plat, "keep")) == 2
    # the first call after the quiet period: a reserved instance, no cold start
    res_ns = {pidns(r["pid"]) for r in of_kind(instances(plat, "keep"), "reserved")}
    t0 = time.monotonic()
    assert served_by(plat, "keep") in res_ns
    assert time.monotonic() - t0 < 2.0


def test_new_version_replaces_reserved_instances(plat):
    plat.deploy_hello("ver", "--reserved", "2")
    old = {r["id"] for r in wait_reserved(plat, "ver", 2)}
    plat.deploy_hello("ver", "--reserved", "2", "-e", "V=2")  # a new version
    wait_until(lambda: not old & {r["id"] for r in instances(plat, "ver")} and
               len(of_kind(instances(plat, "ver"), "reserved")) == 2, 15, interval=0.1,
               what="the old version's reserved instances replaced by the new version's")
    # the reserved count follows the spec: lowered to 1, one goes
    plat.deploy_hello("ver", "--reserved", "1", "-e", "V=3")
    wait_until(lambda: len(instances(plat, "ver")) == 1, 15, interval=0.1, what="one reserved instance left")
    assert of_kind(instances(plat, "ver"), "reserved")


def test_two_worker_managers_split_the_reserved_count(tmp_path):
    """Each worker manager computes its share from the same sorted worker ids: 3 over 2
    workers is 2 for the first id and 1 for the second, never 3 each."""
    from platform_util import Daemon, free_port
    p = Platform(tmp_path, pool_size=2)
    port2, mport2 = free_port(), free_port()
    wm2 = Daemon("workermgr2", [f"{BUILD}/faas-workermgr", "--listen", f"127.0.0.1:{port2}",
                                "--metrics-listen", f"127.0.0.1:{mport2}", "--discovery", p.discovery_addr,
                                "--state-dir", f"{p.dir}/worker2", "--pool-size", "2", "--pool-python", "0", "--lease-ttl-ms", "1500",
                                "--id", "wm-zz-second"], p.dir, port2)
    p.start()
    try:
        wm2.start()
        wait_until(lambda: len(p.rpc(p.discovery_addr, "/faas.Discovery/ListWorkers")) > 0 and
                   b"wm-zz-second" in p.rpc(p.discovery_addr, "/faas.Discovery/ListWorkers"), 10,
                   what="second worker registered")
        p.deploy_hello("split", "--reserved", "3")
        first = f"wm-{p.wm_port}"  # sorts before "wm-zz-second"

        def by_worker():
            out = p.ctl("instances", "split").stdout.splitlines()[1:]
            rows = [l.split() for l in out if l.strip()]
            if any(r[3] != "reserved" or r[4] != "ready" for r in rows):
                return None
            return sorted(r[2] for r in rows)

        wait_until(lambda: by_worker() == sorted([first, first, "wm-zz-second"]), 15, interval=0.1,
                   what="2 reserved on the first worker, 1 on the second")
        time.sleep(1.5)  # a tick later nobody has started more
        assert by_worker() == sorted([first, first, "wm-zz-second"])
        # the second worker goes: its share moves to the first
        wm2.stop()
        wait_until(lambda: by_worker() == [first] * 3, 20, interval=0.2, what="all 3 on the remaining worker")
    finally:
        wm2.stop()
        p.stop()
