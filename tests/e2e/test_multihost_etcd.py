"""The whole of issue 16 in one cluster: three simulated hosts (hosts_util.py: network
namespaces on a bridge, a worker manager in each with its own address and pod range),
an etcd-server started by the test, discovery on it (--store etcd://...) and two
gateways on that one discovery, all in the root namespace on the bridge.

In order, on one cluster (each step builds on the last):
  deploy, and calls through both gateways spread over the hosts;
  one host's worker manager and pods killed: calls go on through both gateways;
  discovery killed (-9) and restarted: it lists every function from etcd, the hosts
  renew their leases with it, the gateways watch it again, and a function deployed
  after the restart runs through both gateways;
  a second discovery with an empty state dir on the same etcd lists every function,
  serves a Watch that sees a deploy made through the first, and serves the function's
  code, whose bytes only the first held (FetchCode from a holding peer).

Needs root (namespaces, pods) and Debian's etcd; skipped otherwise."""
import hashlib
import os
import queue
import shutil
import threading
import time

import grpc
import pytest

import discpb as pb
from etcd_util import ETCD, Etcd
from hosts_util import Hosts, can_simulate
from platform_util import (BUILD, Daemon, Platform, authed_channel, curl, descendants_named, free_port,
                           wait_until)

WHY = can_simulate()
pytestmark = [
    pytest.mark.skipif(WHY is not None, reason=WHY or ""),
    pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd not installed (deploy/install-deps.sh)"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]

LEASE_MS = 1500
SVC = "/faas.Discovery/"


def workers(p, addr=None):
    wl = pb.decode("WorkerList", p.rpc(addr or p.discovery_addr, SVC + "ListWorkers"))
    return {w["id"]: w for w in wl["workers"]}


def instances(p, fn=""):
    req = pb.encode("FunctionName", {"name": fn})
    return pb.decode("InstanceList", p.rpc(p.discovery_addr, SVC + "ListInstances", req))["instances"]


def functions(p, addr):
    fl = pb.decode("FunctionList", p.rpc(addr, SVC + "ListFunctions"))
    return {f["name"]: f for f in fl.get("functions", [])}


def call(url):
    return curl(url, timeout=15)[0]


def burst(urls):
    """One call to each url at once; their statuses."""
    out = []
    ts = [threading.Thread(target=lambda u=u: out.append(call(u))) for u in urls]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("mhetcd")
    etcd = Etcd(d).start()
    hosts = Hosts(3, d)
    p = gw2 = None
    try:
        p = Platform(d, disc_host=hosts.bridge_addr, local_wm=False, lease_ttl_ms=LEASE_MS,
                     disc_args=("--store", f"etcd://{etcd.endpoint}", "--etcd-prefix", "/mh/")).start()
        for h in hosts.hosts:
            hosts.start_wm(h, p.discovery_addr, p.token_file, pool_size=1, lease_ttl_ms=LEASE_MS,
                           extra=("--adopt-grace-ms", "0"))
        wait_until(lambda: len(workers(p)) == 3, 20, interval=0.1, what="three hosts registered")
        port2 = free_port()
        gw2 = Daemon("gateway2", [f"{BUILD}/faas-gateway", "--listen", f"127.0.0.1:{port2}", "--discovery",
                                  p.discovery_addr, "--token-file", p.token_file, "--grpc-listen", "off",
                                  "--thrift-listen", "off"], p.dir, port2).start()
        p.gw2, p.gw2_url, p.hosts, p.etcd = gw2, f"http://127.0.0.1:{port2}", hosts, etcd
        yield p
    finally:
        if gw2 is not None:
            gw2.stop()
        if p is not None:
            p.stop()
        hosts.close()
        etcd.stop()


def urls(p, fn, path="/hello"):
    return [f"{p.gateway_url}/function/{fn}{path}", f"{p.gw2_url}/function/{fn}{path}"]


def logs(p):
    return p.logs() + "\n--- gateway2\n" + p.gw2.log() + "\n" + p.hosts.logs()


def test_1_calls_through_two_gateways_spread_over_hosts(cluster):
    p = cluster
    p.deploy_hello("spread", "--concurrency", "1")
    # six slow calls at once, three through each gateway: one instance each (concurrency 1)
    got = burst([u for u in urls(p, "spread", "/slow?ms=1500") for _ in range(3)])
    assert got == [200] * 6, logs(p)
    hosts_used = {i["worker_id"] for i in instances(p, "spread")}
    assert len(hosts_used) >= 2, (hosts_used, logs(p))
    for i in instances(p, "spread"):
        h = next(h for h in p.hosts.hosts if i["worker_id"] == f"host{h.i}-{p.hosts.pid}")
        assert h.in_pods(i["endpoint"].rsplit(":", 1)[0]), (i, h.pod_cidr)


def test_2_a_dead_host_costs_no_calls_through_either_gateway(cluster):
    p = cluster
    by_host = {}
    for i in instances(p, "spread"):
        by_host.setdefault(i["worker_id"], []).append(i)
    victim = next(h for h in p.hosts.hosts if f"host{h.i}-{p.hosts.pid}" in by_host)
    vid = f"host{victim.i}-{p.hosts.pid}"
    agents = descendants_named(victim.wm.proc.pid, "faas-agent")
    victim.wm.kill()
    wait_until(lambda: not any(os.path.exists(f"/proc/{a}") for a in agents), 10, what="the victim's pods gone")
    # calls go on at once (a refused or unanswered connect sends them elsewhere) ...
    got = [call(u) for _ in range(10) for u in urls(p, "spread")]
    # ... and the host leaves discovery within its lease
    wait_until(lambda: vid not in workers(p), 3 * LEASE_MS / 1000 + 2, interval=0.05, what="dead host gone")
    got += [call(u) for _ in range(10) for u in urls(p, "spread")]
    assert got == [200] * 40, (got, logs(p))
    assert not [i for i in instances(p) if i["worker_id"] == vid]


def test_3_restarted_discovery_serves_everything_from_etcd(cluster):
    p = cluster
    before = functions(p, p.discovery_addr)
    assert "spread" in before
    p.discovery.kill()
    p.discovery = Daemon("discovery", p.discovery.argv, p.dir, p.disc_port, host=p.hosts.bridge_addr).start()
    after = functions(p, p.discovery_addr)
    assert {n: f["version"] for n, f in after.items()} == {n: f["version"] for n, f in before.items()}
    # the two live hosts renew their leases with the new process
    wait_until(lambda: len(workers(p)) == 2, 10, interval=0.1, what="hosts registered again")
    p.deploy_hello("after-restart")
    # both gateways watch the new process: they learn the new function and run it
    for u in urls(p, "after-restart"):
        wait_until(lambda u=u: call(u) == 200, 20, interval=0.2, what=f"{u} served after the restart")
    assert [call(u) for u in urls(p, "spread")] == [200, 200], logs(p)


class Watch:
    """A raw Watch stream on a thread."""

    def __init__(self, addr, token):
        self.ch = authed_channel(addr, token)
        self.call = self.ch.unary_stream(SVC + "Watch")(pb.encode("WatchRequest", {"functions": True}))
        self.q = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for raw in self.call:
                self.q.put(pb.decode("WatchEvent", raw))
        except grpc.RpcError as e:
            self.q.put(e)

    def until(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            ev = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(ev, Exception):
                raise ev
            if pred(ev):
                return ev

    def close(self):
        self.call.cancel()
        self.ch.close()


def test_4_second_discovery_with_empty_state_lists_watches_and_serves_code(cluster, tmp_path):
    p = cluster
    port = free_port()
    addr = f"{p.hosts.bridge_addr}:{port}"
    state = tmp_path / "disc-b"
    os.makedirs(state)
    b = Daemon("discovery-b", [f"{BUILD}/faas-discovery", "--listen", addr, "--metrics-listen", "off",
                               "--state-dir", str(state), "--token-file", p.token_file, "--store",
                               f"etcd://{p.etcd.endpoint}", "--etcd-prefix", "/mh/"], str(tmp_path), port,
               host=p.hosts.bridge_addr).start()
    w = None
    try:
        assert functions(p, addr).keys() == functions(p, p.discovery_addr).keys()
        w = Watch(addr, p.token())
        w.until(lambda ev: ev["type"] == pb.SNAPSHOT_END)
        p.deploy_hello("seen-by-b")  # through the first discovery
        ev = w.until(lambda ev: ev["type"] == pb.FUNCTION_PUT and ev["function"]["name"] == "seen-by-b")
        sha = ev["function"]["code_sha256"]
        # the code's bytes live on the first discovery; the second fetches them from it
        # and keeps a copy
        kept = state / "artifacts" / f"{sha}.tar.gz"
        assert not kept.exists()
        with authed_channel(addr, p.token()) as ch:
            chunks = list(ch.unary_stream(SVC + "FetchCode")(pb.encode("CodeRef", {"sha256": sha}), timeout=30))
        data = b"".join(pb.decode("CodeChunk", c).get("data", b"") for c in chunks)
        assert hashlib.sha256(data).hexdigest() == sha
        assert kept.exists() and kept.read_bytes() == data
    finally:
        if w is not None:
            w.close()
        b.stop()
        shutil.rmtree(state, ignore_errors=True)
