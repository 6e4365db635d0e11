"""Placing cold starts over several worker managers (issue 16, docs/scaling.md "Placing
a cold start"), with the real daemons on one machine: three worker managers register
with one discovery; a burst of cold starts spreads over all of them, and a worker
manager killed with SIGKILL, still listed in discovery (its lease has not lapsed),
costs the next cold starts a re-placement on another worker, not a 503."""
import os
import re
import threading

import pytest

import discpb as pb
from platform_util import BUILD, Daemon, Platform, curl, free_port, http_get, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]

def extra_wm(p, name, prefix, pool, lease_ms):
    """A worker manager with an id of its own: a pod helper outliving a killed worker
    manager cleans up the cgroup tree of its id, which must not be a later test's."""
    port, mport = free_port(), free_port()
    wm_id = f"{prefix}-{port}"
    # --adopt-grace-ms 0: when killed, its pods go at once instead of 5 s later
    return wm_id, Daemon(name, [f"{BUILD}/faas-workermgr", "--listen", f"127.0.0.1:{port}", "--metrics-listen",
                                f"127.0.0.1:{mport}", "--discovery", p.discovery_addr, "--state-dir",
                                f"{p.dir}/{name}", "--pool-size", str(pool), "--pool-python", "0", "--lease-ttl-ms", str(lease_ms),
                                "--id", wm_id, "--adopt-grace-ms", "0"], p.dir, port)


def workers(p):
    """{worker id: its Worker} as discovery lists them."""
    wl = pb.decode("WorkerList", p.rpc(p.discovery_addr, "/faas.Discovery/ListWorkers"))
    return {w["id"]: w for w in wl["workers"]}


def start_three(tmp_path, victim_pool):
    """Three worker managers: the platform's own and a second (2 warm pods each), and a
    third, the victim, with a long lease so that it stays listed for the whole test
    after it is killed. Yields (platform, victim daemon, victim id)."""
    p = Platform(tmp_path, pool_size=2)
    p.start()
    wm2 = victim = None
    try:
        # their free ports are picked once the platform's own are bound: picked before,
        # one could be a port the platform was about to bind (a CI run lost the victim so)
        second, wm2 = extra_wm(p, "workermgr2", "wm-second", 2, 1500)
        vid, victim = extra_wm(p, "workermgr3", "wm-victim", victim_pool, 60000)
        wm2.start()
        victim.start()
        ids = {f"wm-{p.wm_port}", second, vid}
        wait_until(lambda: set(workers(p)) == ids, 15, interval=0.1, what="three workers registered")
        yield p, victim, vid
    finally:
        for d in (victim, wm2):
            if d is not None:
                d.stop()
        p.stop()


@pytest.fixture
def three(tmp_path):
    yield from start_three(tmp_path, 2)


@pytest.fixture
def three_victim_favoured(tmp_path):
    """The victim has 4 warm pods to the others' 2: placement sends it the next cold start."""
    yield from start_three(tmp_path, 4)


def gateway_metric(p, name):
    for line in http_get(f"{p.gateway_url}/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def instance_workers(p, fn):
    """The WORKER column of `faasctl instances fn`."""
    out = p.ctl("instances", fn).stdout.splitlines()
    col = out[0].split().index("WORKER")
    return [l.split()[col] for l in out[1:] if l.strip()]


def gateway_log(p):
    """The gateway's whole log (Daemon.log keeps only its end)."""
    with open(p.gateway.log_path, errors="replace") as f:
        return f.read()


def logs(p, *daemons):
    return p.logs() + "".join(f"\n--- {d.name}\n{d.log()}" for d in daemons)


def test_a_burst_of_cold_starts_spreads_over_the_workers(three):
    p, victim, vid = three
    # six functions called at once: six cold starts, one Acquire each (the function's
    # first call), whatever the worker managers' own scale-ups do
    fns = [f"burst{i}" for i in range(6)]
    for fn in fns:
        p.deploy_hello(fn)
    results = {}

    def call(fn):
        results[fn] = curl(p.url(fn, "/hello"))[0]

    threads = [threading.Thread(target=call, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {fn: 200 for fn in fns}, logs(p, victim)
    placed = [w for fn in fns for w in instance_workers(p, fn)]
    assert len(placed) == len(fns), placed
    # 2 warm pods on each: the gateway's own count of the pods it took (and the rotation
    # among equals) sends the burst to all three, not six to the first
    assert set(placed) == set(workers(p)), (placed, logs(p, victim))
    # what the gateway placed, as it logs it
    acquired = re.findall(r"event=cold_start request_id=\S+ fn=burst\d .* worker=(\S+)", gateway_log(p))
    assert sorted(acquired) == sorted(placed), (acquired, placed)


def test_a_killed_worker_manager_is_skipped_within_its_lease(three_victim_favoured):
    p, victim, vid = three_victim_favoured
    fns = [f"after{i}" for i in range(3)]
    for fn in fns:
        p.deploy_hello(fn)
    # the gateway's view: the victim, with the most warm pods, is where a cold start goes
    wait_until(lambda: workers(p)[vid]["pool_ready"] == 4, 30, interval=0.1, what="victim's pool reported full")
    before = gateway_metric(p, "faas_gateway_acquire_retries_total")
    victim.kill()
    for fn in fns:
        status, body, err = curl(p.url(fn, "/hello"))
        assert status == 200, (fn, status, body, err, logs(p, victim))
    # all of it happened while discovery still listed the dead worker manager
    assert vid in workers(p)
    placed = [w for fn in fns for w in instance_workers(p, fn)]
    assert placed and vid not in placed, placed
    # the first cold start went to the victim, found it unreachable, and was re-placed
    # at once on another worker (not retried on the same one)
    assert gateway_metric(p, "faas_gateway_acquire_retries_total") >= before + 1, logs(p, victim)
    assert f"event=worker_down worker={vid}" in gateway_log(p), logs(p, victim)
    assert gateway_metric(p, "faas_cold_starts_total") >= len(fns)
