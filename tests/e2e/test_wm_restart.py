"""A worker manager that crashes (kill -9) and is started again on the same state dir
(issue 14, item 2): the new one ends its predecessor's lease at once, so discovery and
the gateways stop sending to the old run's endpoints without waiting for the lease to
lapse.

Real daemons on free loopback ports, a temp state dir; needs root (pods)."""
import collections
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest

import discpb as pb
from platform_util import BUILD, ROOT, Platform, curl, pids_matching, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-workermgr"), reason="not built"),
]

# long enough that only a deregistration can take the old instances out in time
LEASE_TTL_MS = 20000


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path, pool_size=1, lease_ttl_ms=LEASE_TTL_MS).start()
    try:
        yield p
    finally:
        p.stop()


def disc_instances(plat):
    """Discovery's ListInstances, every function."""
    raw = plat.rpc(plat.discovery_addr, "/faas.Discovery/ListInstances", pb.encode("FunctionName", {}))
    return pb.decode("InstanceList", raw)["instances"]


def test_restarted_wm_deregisters_its_predecessor(plat):
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200, plat.logs()
    old_id = f"wm-{plat.wm_port}"
    before = [i for i in disc_instances(plat) if i["worker_id"] == old_id]
    assert len(before) == 1, before

    plat.wm.kill()
    t_kill = time.monotonic()
    plat.restart_wm(wm_id=f"wm-{plat.wm_port}-2")
    # the old run's instances leave discovery long before their lease (20 s) could lapse
    wait_until(lambda: not [i for i in disc_instances(plat) if i["worker_id"] == old_id], LEASE_TTL_MS / 2000,
               interval=0.05, what="old worker's instances gone from discovery")
    gone_after = time.monotonic() - t_kill
    assert gone_after < LEASE_TTL_MS / 1000, gone_after
    # the worker manager logs after discovery's reply, so the line may trail the removal
    line = f"event=predecessor_deregistered id={old_id}"
    wait_until(lambda: line in open(plat.wm.log_path).read(), 10, interval=0.05,
               what="predecessor_deregistered in the log")
    # and the platform serves again: a cold start on the new worker manager
    wait_until(lambda: curl(plat.url("hello", "/hello"))[0] == 200, 30, interval=0.2, what="service again")


# ---- step 2: the pods outlive the crash and the restarted worker manager adopts them ----

pb.SCHEMA.setdefault("ReleaseRequest", {"instance_id": (1, "string", False), "reason": (2, "string", False)})
CG = "/sys/fs/cgroup"


class Load:
    """Sequential calls to one URL from a thread, counted by status (0: no answer)."""

    def __init__(self, url):
        self.url, self.stop, self.counts = url, threading.Event(), collections.Counter()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    r.read()
                    self.counts[r.status] += 1
            except urllib.error.HTTPError as e:
                self.counts[e.code] += 1
            except OSError:
                self.counts[0] += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)

    def total(self):
        return sum(self.counts.values())


def pod_cgroup(pid):
    """The v2 cgroup path of a pod process ("/faas/<worker>/<pod>")."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line.strip()[3:]
    raise AssertionError(f"no v2 cgroup for {pid}")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wm_instances(plat):
    raw = plat.rpc(f"127.0.0.1:{plat.wm_port}", "/faas.WorkerManager/ListInstances", pb.encode("FunctionName", {}))
    return pb.decode("InstanceList", raw)["instances"]


def cg_exists(rel):
    """Whether cgroup rel ("/faas/<worker>[/<pod>]") is there, on a pure v2 or a hybrid host."""
    return any(os.path.exists(f"{root}{rel}") for root in (CG, f"{CG}/unified"))


def faas_cgroups(worker_id):
    return cg_exists(f"/faas/{worker_id}")


@pytest.fixture
def plat3(tmp_path):
    p = Platform(tmp_path, pool_size=1, lease_ttl_ms=3000).start()
    try:
        yield p
    finally:
        p.stop()


def test_pods_outlive_a_wm_crash_and_are_adopted(plat3):
    plat = plat3
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200, plat.logs()
    wid = f"wm-{plat.wm_port}"
    before = {i["id"]: i for i in disc_instances(plat)}
    assert len(before) == 1 and all(i["worker_id"] == wid for i in before.values()), before
    pids = {i["id"]: i["pid"] for i in before.values()}
    cgs = {iid: pod_cgroup(pid) for iid, pid in pids.items()}
    assert all(cg_exists(cg) for cg in cgs.values()), cgs

    with Load(plat.url("hello", "/hello")) as load:
        wait_until(lambda: load.counts[200] >= 20, 30, what="load running")
        plat.wm.kill()
        n_at_kill = load.total()
        # no --id: the successor takes its predecessor's id from the helper
        plat.restart_wm(wm_id="")
        wait_until(lambda: "event=pod_adopted" in open(plat.wm.log_path).read(), 15, what="pods adopted")
        wait_until(lambda: {i["id"] for i in wm_instances(plat)} == set(before), 10, what="instances listed")
        n_restarted = load.total()
        wait_until(lambda: load.total() >= n_restarted + 50, 30, what="calls after the restart")
    counts = dict(load.counts)
    print(f"calls by status across the restart: {counts} (at kill: {n_at_kill}, at restart: {n_restarted})")
    assert not {s: n for s, n in counts.items() if s != 200}, (counts, plat.logs())

    # the same processes, the same instances, the same worker id
    assert all(alive(pid) for pid in pids.values()), pids
    after = {i["id"]: i for i in disc_instances(plat)}
    assert set(after) == set(before), (before, after)
    assert {iid: i["pid"] for iid, i in after.items()} == pids
    assert all(i["worker_id"] == wid for i in after.values()), after
    log = open(plat.wm.log_path).read()
    assert f"event=helper_adopted id={wid}" in log, log[-3000:]

    # an adopted instance is released like any other: pod and cgroup go
    (iid,) = list(pids)
    plat.rpc(f"127.0.0.1:{plat.wm_port}", "/faas.WorkerManager/Release",
             pb.encode("ReleaseRequest", {"instance_id": iid, "reason": "test"}))
    wait_until(lambda: not alive(pids[iid]), 15, what="released pod gone")
    wait_until(lambda: not cg_exists(cgs[iid]), 15, what="released pod's cgroup gone")
    assert iid not in {i["id"] for i in disc_instances(plat)}

    # and a new cold start works on the adopting WM
    wait_until(lambda: curl(plat.url("hello", "/hello"))[0] == 200, 30, interval=0.2, what="cold start")
    new_pids = [i["pid"] for i in wm_instances(plat)]
    assert new_pids and faas_cgroups(wid)

    # a clean stop still takes every pod down and tells the helper to go
    assert plat.wm.stop() == 0
    wait_until(lambda: not any(alive(p) for p in new_pids), 15, what="pods gone after SIGTERM")
    wait_until(lambda: not faas_cgroups(wid), 15, what="faas cgroups gone")
    wait_until(lambda: not pids_matching(f"{plat.dir}/worker"), 15, what="helper gone")
    assert not os.path.exists(f"{plat.dir}/worker/helper.sock")


def test_config_mismatch_falls_back_to_a_fresh_helper(plat):
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200, plat.logs()
    old_id = f"wm-{plat.wm_port}"
    before = [i for i in disc_instances(plat) if i["worker_id"] == old_id]
    assert len(before) == 1, before
    pid = before[0]["pid"]

    assert faas_cgroups(old_id)
    plat.wm.kill()
    assert alive(pid), "the pod should outlive the crash"
    # another pod uid: the old helper's pods are not this WM's to run
    plat.restart_wm(wm_id="", extra_args=("--pod-uid", "65533"))
    log = lambda: open(plat.wm.log_path).read()
    wait_until(lambda: "event=adopt_refused" in log(), 15, what="adoption refused")
    wait_until(lambda: not alive(pid), 15, what="old pod killed")
    wait_until(lambda: not [i for i in disc_instances(plat) if i["worker_id"] == old_id], LEASE_TTL_MS / 2000,
               interval=0.05, what="old worker's instances gone from discovery")
    assert f"event=predecessor_deregistered id={old_id}" in log()
    wait_until(lambda: not faas_cgroups(old_id), 15, what="old cgroups gone")
    wait_until(lambda: curl(plat.url("hello", "/hello"))[0] == 200, 30, interval=0.2, what="service again")


def test_pod_caught_specializing_is_killed_not_adopted(plat3, tmp_path):
    """A crash between SPECIALIZE and READY leaves a pod whose state nobody knows: the
    successor kills it (and its cgroup) and adopts only the whole ones."""
    plat = plat3
    code = tmp_path / "slow"
    code.mkdir()
    shutil.copy(f"{ROOT}/examples/hello-http/hello", code / "hello")
    (code / "slow.sh").write_text("sleep 3\nexec ./hello\n")
    plat.ctl("deploy", "slow", "--dir", str(code), "--cmd", "/bin/sh slow.sh", "--health", "/healthz")
    first = []
    caller = threading.Thread(target=lambda: first.append(curl(plat.url("slow", "/hello"))[0]), daemon=True)
    caller.start()
    wait_until(lambda: plat.wm_metric("faas_wm_cold_starts_total") >= 1, 20, what="SPECIALIZE sent")
    wid = f"wm-{plat.wm_port}"
    plat.wm.kill()
    plat.restart_wm(wm_id="")
    log = lambda: open(plat.wm.log_path).read()
    wait_until(lambda: "event=adopt_killed" in log(), 15, what="the half-specialized pod killed")
    killed = re.search(r"event=adopt_killed pod=(\w+) pid=(\d+)", log())
    pod, pid = killed.group(1), int(killed.group(2))
    wait_until(lambda: not alive(pid), 15, what="its process gone")
    wait_until(lambda: not cg_exists(f"/faas/{wid}/{pod}"), 15, what="its cgroup gone")
    assert faas_cgroups(wid), "the worker's other pods keep their cgroups"
    assert f"event=pod_adopted pod={pod}" not in log()
    caller.join(30)
    # the function still cold-starts on the new worker manager
    wait_until(lambda: curl(plat.url("slow", "/hello"))[0] == 200, 40, interval=0.3, what="slow served")
