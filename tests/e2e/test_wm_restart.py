"""A worker manager that crashes (kill -9) and is started again on the same state dir
(issue 14, item 2): the new one ends its predecessor's lease at once, so discovery and
the gateways stop sending to the old run's endpoints without waiting for the lease to
lapse.

Real daemons on free loopback ports, a temp state dir; needs root (pods)."""
import os
import time

import pytest

import discpb as pb
from platform_util import BUILD, Platform, curl, wait_until

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
    log = open(plat.wm.log_path).read()
    assert f"event=predecessor_deregistered id={old_id}" in log, log[-3000:]
    # and the platform serves again: a cold start on the new worker manager
    wait_until(lambda: curl(plat.url("hello", "/hello"))[0] == 200, 30, interval=0.2, what="service again")
