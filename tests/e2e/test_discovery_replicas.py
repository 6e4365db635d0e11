"""Two discoveries on one etcd serve the same soft state: a worker manager started with
--discovery A,B renews its lease (workers, instances) with each, so a gateway watching
either sees every worker and instance; when A dies (-9) the WM's lease on B holds, a
gateway on B keeps serving, and a gateway with --discovery A,B moves its watch to B.

One cluster, steps in order (each builds on the last). Needs root (pods) and Debian's
etcd; skipped otherwise."""
import os
import shutil
import time

import pytest

import discpb as pb
from etcd_util import ETCD, Etcd
from platform_util import BUILD, ROOT, Daemon, Platform, curl, free_port, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd not installed (deploy/install-deps.sh)"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-workermgr"), reason="not built"),
]

LEASE_MS = 1500
SVC = "/faas.Discovery/"


def worker_ids(p, addr):
    wl = pb.decode("WorkerList", p.rpc(addr, SVC + "ListWorkers"))
    return {w["id"] for w in wl.get("workers", [])}


def instances(p, addr, fn):
    req = pb.encode("FunctionName", {"name": fn})
    return pb.decode("InstanceList", p.rpc(addr, SVC + "ListInstances", req)).get("instances", [])


def gateway(p, name, disc):
    port = free_port()
    d = Daemon(name, [f"{BUILD}/faas-gateway", "--listen", f"127.0.0.1:{port}", "--discovery", disc,
                      "--token-file", p.token_file, "--grpc-listen", "off", "--thrift-listen", "off"], p.dir,
               port).start()
    d.url = f"http://127.0.0.1:{port}"
    return d


def call(g, fn):
    return curl(f"{g.url}/function/{fn}/hello", timeout=15)[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("replicas")
    etcd = Etcd(d).start()
    store = ("--store", f"etcd://{etcd.endpoint}", "--etcd-prefix", "/rep/")
    p, started = None, []
    try:
        p = Platform(d, local_wm=False, lease_ttl_ms=LEASE_MS, disc_args=store).start()
        p.a = p.discovery_addr
        p.gateway.url = p.gateway_url
        bport = free_port()
        os.makedirs(f"{p.dir}/discovery-b")
        p.disc_b = Daemon("discovery-b", [f"{BUILD}/faas-discovery", "--listen", f"127.0.0.1:{bport}",
                                          "--metrics-listen", "off", "--state-dir", f"{p.dir}/discovery-b",
                                          "--token-file", p.token_file, *store], p.dir, bport).start()
        started.append(p.disc_b)
        p.b = f"127.0.0.1:{bport}"
        # the WM's token is found next to its state dir (<dir>/discovery/token, A's)
        p.wm = Daemon("workermgr", [f"{BUILD}/faas-workermgr", "--listen", f"127.0.0.1:{p.wm_port}",
                                    "--metrics-listen", f"127.0.0.1:{p.wm_mport}", "--discovery", f"{p.a},{p.b}",
                                    "--state-dir", f"{p.dir}/worker", "--pool-size", "1", "--pool-python", "0", "--lease-ttl-ms",
                                    str(LEASE_MS), "--id", "wm-rep"], p.dir, p.wm_port).start()
        p.g2 = gateway(p, "gateway2", p.b)
        started.append(p.g2)
        p.g3 = gateway(p, "gateway3", f"{p.a},{p.b}")
        started.append(p.g3)
        yield p
    finally:
        for s in started:
            s.stop()
        if p is not None:
            p.stop()
        etcd.stop()


def logs(p):
    return p.logs() + "".join(f"\n--- {d.name}\n{d.log()}" for d in (p.disc_b, p.g2, p.g3))


def test_1_both_discoveries_list_the_worker(cluster):
    p = cluster
    for addr in (p.a, p.b):
        wait_until(lambda addr=addr: "wm-rep" in worker_ids(p, addr), 15, interval=0.1,
                   what=f"the WM registered with {addr}")


def test_2_deployed_through_a_served_through_gateways_on_a_and_b(cluster):
    p = cluster
    p.deploy_hello("rep")  # faasctl talks to A
    for g in (p.gateway, p.g2, p.g3):
        wait_until(lambda g=g: call(g, "rep") == 200, 30, interval=0.2, what=f"rep served through {g.name}")
    for addr in (p.a, p.b):
        wait_until(lambda addr=addr: instances(p, addr, "rep"), 10, interval=0.1,
                   what=f"rep's instance listed on {addr}")
    ia = {i["endpoint"] for i in instances(p, p.a, "rep")}
    ib = {i["endpoint"] for i in instances(p, p.b, "rep")}
    assert ia == ib, (ia, ib, logs(p))


def test_3_a_dead_discovery_costs_neither_the_lease_on_b_nor_the_gateways_on_b(cluster, tmp_path):
    p = cluster
    p.discovery.kill()
    # well past a lease TTL (three of them) with A dead: B still holds the WM's lease
    end = time.monotonic() + 3 * LEASE_MS / 1000
    while time.monotonic() < end:
        assert "wm-rep" in worker_ids(p, p.b), logs(p)
        time.sleep(0.1)
    assert instances(p, p.b, "rep"), logs(p)
    assert [call(p.g2, "rep") for _ in range(5)] == [200] * 5, logs(p)
    # G3's watch moves from A to B; it serves throughout or within its retry
    wait_until(lambda: call(p.g3, "rep") == 200, 20, interval=0.2, what="rep served through gateway3 after A died")
    assert [call(p.g3, "rep") for _ in range(5)] == [200] * 5, logs(p)
    assert "discovery_switch" in p.g3.log(), p.g3.log()
    # new code deployed through B after A died: G3's watch (now on B) learns it, and the
    # WM fetches its bytes, which only B holds, moving on from A
    code = tmp_path / "code"
    shutil.copytree(f"{ROOT}/examples/hello-http", code)
    (code / "marker").write_text("not the code deployed through A\n")
    p.discovery_addr = p.b
    p.ctl("deploy", "rep-after", "--dir", str(code), "--cmd", "./hello", "--health", "/healthz")
    for g in (p.g2, p.g3):
        wait_until(lambda g=g: call(g, "rep-after") == 200, 30, interval=0.2, what=f"rep-after through {g.name}")
