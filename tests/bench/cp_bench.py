#!/usr/bin/python3
"""Control-plane throughput (issue 16): instance creations per second that discovery
and the dispatcher sustain with many simulated hosts, on SQLite and on etcd.

One run per store: faas-discovery (--store sqlite, or --store etcd:// on an etcd-server
this script starts), one faas-gateway, HOSTS fake worker managers (tests/bench/cpbench.c
"hosts": each a gRPC server answering Acquire at once, with a lease thread of its own),
and one real faas-agent --standalone running examples/hello-http: the fake agent every
fake instance points at, so the first call through each new instance is a real one.

F functions are deployed (cpbench "deploy": F Deploy rpcs from 8 threads, the durable
path: deploys/s), then cpbench "calls" sends one request to each function, C at a time: every
request is a cold start (dispatcher places an Acquire on a host, the host answers with
an instance and renews its lease with it, discovery pushes it to the gateway's watch,
the gateway forwards the call). creations/s = F / the time the calls took, every response
200 and every Acquire counted by the fake hosts.

The anchor (issue 16): Dirigent (SOSP 2024), 2,500 sandbox creations/s for a
100-node cluster; about 2/s for Knative.

usage: tests/bench/cp_bench.py --cpbench BIN [--hosts 100] [--functions 2000] [--conc 64]
                               [--stores sqlite,etcd] [--json]      (FAAS_BUILD=<build dir>)
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import platform_util as pu  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def etcd_store(tmp):
    """An etcd-server of our own, or None when the build cannot use one."""
    try:
        from etcd_util import Etcd
    except ImportError:
        return None
    if shutil.which("etcd") is None:
        return None
    return Etcd(os.path.join(tmp, "etcd")).start()


def fake_agent(tmp):
    """faas-agent --standalone on hello-http: prints READY port=N once the user server answers."""
    port = pu.free_port()
    log = open(os.path.join(tmp, "agent.log"), "wb")
    p = subprocess.Popen([f"{pu.BUILD}/faas-agent", "--standalone", "--cmd", "./hello", "--dir",
                          f"{ROOT}/examples/hello-http", "--health-path", "/healthz", "--listen",
                          f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pu.wait_until(lambda: p.poll() is None and pu.port_open(port), 15, what="fake agent")
    return p, f"127.0.0.1:{port}"


def one_store(a, store, tmp):
    etcd = None
    procs = []
    disc_args = []
    if store == "etcd":
        etcd = etcd_store(tmp)
        if etcd is None:
            return {"store": store, "skipped": "no etcd-server or no etcd support in this build"}
        disc_args = ["--store", f"etcd://{etcd.endpoint}"]
    disc_port, http_port = pu.free_port(), pu.free_port()
    disc_addr = f"127.0.0.1:{disc_port}"
    token_file = os.path.join(tmp, "discovery", "token")
    disc = pu.Daemon("discovery", [f"{pu.BUILD}/faas-discovery", "--listen", disc_addr, "--metrics-listen", "off",
                                   "--state-dir", os.path.join(tmp, "discovery"), *disc_args], tmp, disc_port)
    gw = pu.Daemon("gateway", [f"{pu.BUILD}/faas-gateway", "--listen", f"127.0.0.1:{http_port}", "--discovery",
                               disc_addr, "--token-file", token_file, "--grpc-listen", "off", "--thrift-listen",
                               "off", "--queue-max", "100000"], tmp, http_port)
    try:
        disc.start()
        env = dict(os.environ, FAAS_TOKEN=pu.read_token(token_file), FAAS_DISCOVERY=disc_addr)
        agent, agent_ep = fake_agent(tmp)
        procs.append(agent)
        hosts = subprocess.Popen([a.cpbench, "hosts", disc_addr, agent_ep, str(a.hosts)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "cpbench.log"), "wb"),
                                 env=env, text=True, start_new_session=True)
        procs.append(hosts)
        line = hosts.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"fake hosts did not start: {line!r} {open(os.path.join(tmp, 'cpbench.log')).read()}")
        gw.start()
        # the code artifact every function shares, uploaded once through faasctl
        subprocess.run([f"{pu.BUILD}/faasctl", "deploy", "cp-seed", "--dir", f"{ROOT}/examples/hello-http", "--cmd",
                        "./hello"], env=env, check=True, capture_output=True, timeout=60)
        sha = re.search(r"([0-9a-f]{64})", subprocess.run([f"{pu.BUILD}/faasctl", "get", "cp-seed"], env=env, check=True,
                                                          capture_output=True, text=True, timeout=30).stdout).group(1)
        d = subprocess.run([a.cpbench, "deploy", disc_addr, sha, str(a.functions), "8", "cp"], env=env,
                           capture_output=True, text=True, timeout=600)
        dep = json.loads(d.stdout.strip().splitlines()[-1])
        if dep["failed"]:
            raise RuntimeError(f"deploys failed: {d.stderr[-500:]}")
        c = subprocess.run([a.cpbench, "calls", f"127.0.0.1:{http_port}", str(a.functions), str(a.conc), "cp"],
                           capture_output=True, text=True, timeout=600)
        calls = json.loads(c.stdout.strip().splitlines()[-1])
        # the same calls again, every instance now there: what the data path alone costs here
        w = subprocess.run([a.cpbench, "calls", f"127.0.0.1:{http_port}", str(a.functions), str(a.conc), "cp"],
                           capture_output=True, text=True, timeout=600)
        warm = json.loads(w.stdout.strip().splitlines()[-1])
        hosts.stdin.close()
        counts = json.loads(hosts.stdout.read().strip().splitlines()[-1])
        return {"store": store, "hosts": a.hosts, "functions": a.functions, "conc": a.conc,
                "ok": calls["ok"], "failed": calls["failed"], "seconds": calls["seconds"],
                "p50_ms": calls["p50_ms"], "p99_ms": calls["p99_ms"],
                "creations_per_s": calls["ok"] / calls["seconds"] if calls["seconds"] else 0.0,
                "warm_per_s": warm["ok"] / warm["seconds"] if warm["seconds"] else 0.0, "warm_p50_ms": warm["p50_ms"],
                "acquires": counts["acquires"], "heartbeats": counts["heartbeats"],
                "heartbeat_errors": counts["heartbeat_errors"],
                "deploys_per_s": dep["deploys"] / dep["seconds"] if dep["seconds"] else 0.0}
    finally:
        gw.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        disc.stop()
        if etcd is not None:
            etcd.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpbench", required=True)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--functions", type=int, default=2000)
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--stores", default="sqlite,etcd")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs) and say where")
    a = ap.parse_args()
    out = []
    for store in a.stores.split(","):
        tmp = tempfile.mkdtemp(prefix=f"faas-cp-{store}-")
        try:
            r = one_store(a, store, tmp)
        finally:
            if a.keep:
                print(f"{store}: logs in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        out.append(r)
        if "skipped" in r:
            print(f"{store}: skipped ({r['skipped']})", file=sys.stderr)
        else:
            print(f"{store}: {r['creations_per_s']:.0f} creations/s ({r['ok']} of {r['functions']} ok, "
                  f"{r['hosts']} hosts, c{r['conc']}, p50 {r['p50_ms']:.1f} ms), the same calls warm {r['warm_per_s']:.0f}/s, "
                  f"{r['deploys_per_s']:.0f} deploys/s", file=sys.stderr)
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
