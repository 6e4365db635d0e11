"""Fault injection under load (issue 14, "Tests that prove it"): kill -9 of the gateway,
the worker manager, a pod's agent, a pod's user server and discovery, each while
8 keep-alive HTTP/1.1 clients call a deployed hello function through the gateway.

The contract asserted for every kill (the issue's words):
- no 404 for a deployed function at any time;
- no 5xx beyond the calls in flight at the moment of the kill (a 503 with Retry-After
  from a restarted gateway that has not synced yet is the allowed "not ready" answer);
- transport failures (connection refused while a daemon is down, a connection reset
  by its death) are not HTTP errors and are counted apart;
- service comes back: a run of FULL_RUN consecutive 200s after the kill.
Per fault, what is specific to it is in its test's docstring.

Each scenario is a plain function returning (figures, evidence) so that
tests/bench/faults_bench.py runs the same faults and prints the figures as a table;
the tests print the figures (pytest -s) and append them to $FAAS_FAULT_FIGURES."""
import http.client
import json
import os
import signal
import socket
import time

import pytest

from fault_util import (FULL_RUN, Load, Summary, children, kill9, kill9_pid, proc_comm, report, restart,
                        spawn)
from platform_util import BUILD, Platform, curl, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]

THREADS = 8
PATH = "/function/hello/hello"
WARM_S = 1.0  # load before the kill
TAIL_S = 2.0  # load kept after the daemon is back, to see that it stays healthy
RECOVER_BOUND_S = 10.0  # generous bound on the time to full service where one is asserted
SETTLE_TIMEOUT = 40.0  # the longest the load waits for full service before giving up


def instances(plat, fn):
    """faasctl instances rows (ID ENDPOINT WORKER KIND STATE PID AGE) as dicts."""
    out = plat.ctl("instances", fn).stdout.splitlines()
    rows = []
    for line in out[1:]:
        f = line.split()
        if len(f) >= 6:
            rows.append({"id": f[0], "endpoint": f[1], "worker": f[2], "kind": f[3], "state": f[4],
                         "pid": int(f[5])})
    return rows


def ready(plat, fn):
    """Instances that take calls: ready, or ready and reporting overload."""
    return [r for r in instances(plat, fn) if r["state"] in ("ready", "overloaded")]


def start_platform(tmp, pool_size=2, deploy=()):
    plat = Platform(tmp, pool_size=pool_size).start()
    try:
        plat.deploy_hello("hello", *deploy)
        wait_until(lambda: curl(plat.url("hello", "/hello"))[0] == 200, 30, interval=0.1, what="hello answers")
    except BaseException:
        plat.stop()
        raise
    return plat


def start_load(plat, path=PATH, keep_body=False):
    load = Load(plat.http_port, path, threads=THREADS, keep_body=keep_body).start()
    t0 = time.monotonic()
    wait_until(lambda: load.ok_run_since(t0, 2 * FULL_RUN) and time.monotonic() - t0 >= WARM_S, 30,
               interval=0.05, what="steady load before the kill")
    return load


def settle(load, t_from, tail=TAIL_S):
    """Polls until a full-service run began after t_from and tail s passed; bounded by
    SETTLE_TIMEOUT (then the figures say "not reached": the assertion reports it)."""
    try:
        wait_until(lambda: load.ok_run_since(t_from) and time.monotonic() - t_from >= tail, SETTLE_TIMEOUT,
                   interval=0.05, what="full service after the fault")
    except TimeoutError:
        pass


def check_common(s, allow_503_retry=False):
    """The contract every kill is held to. Returns the list of broken clauses (all of
    them, not only the first, so one run says everything)."""
    bad = []
    if s.n_404():
        bad.append(f"{s.n_404()} answers 404 for the deployed function")
    n5 = s.n_5xx(allow_503_retry=allow_503_retry)
    if n5 > s.in_flight_at_kill():
        bad.append(f"{n5} answers 5xx{' (not counting 503 + Retry-After)' if allow_503_retry else ''}, "
                   f"more than the {s.in_flight_at_kill()} calls in flight at the kill")
    if s.time_to_full() is None:
        bad.append(f"no run of {FULL_RUN} consecutive 200s after the kill")
    return bad


def verdict(fig, bad, plat_logs=""):
    if bad:
        raise AssertionError("; ".join(bad) + f"\nfigures: {fig}\n" + plat_logs[-3000:])


# ------------------------------------------------------------------ gateway

def probe_readiness(plat, deadline, good_needed=20):
    """Right after the gateway was spawned again: GET /healthz in a tight loop on fresh
    connections and, whenever it says 200, call the function at once. Stops after
    good_needed consecutive (200, 200) or at deadline. Returns the probes and the time
    the new process first accepted a connection."""
    probes, good, t_up = [], 0, None
    while time.monotonic() < deadline and good < good_needed:
        t = time.monotonic()
        hz = _get(plat.http_port, "/healthz")
        if hz[0] == "connect_refused":
            time.sleep(0.001)
            continue
        t_up = t_up or t
        call = _get(plat.http_port, PATH) if hz[0] == 200 else None
        probes.append({"t": t, "healthz": hz[0], "retry_after": hz[1], "call": call and call[0],
                       "body": call and call[2]})
        good = good + 1 if hz[0] == 200 and call and call[0] == 200 else 0
    return probes, t_up


def _get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.connect()
    except ConnectionRefusedError:
        return "connect_refused", None, ""
    except OSError as e:
        return f"error:{type(e).__name__}", None, ""
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Retry-After"), r.read()[:120].decode(errors="replace")
    except socket.timeout:
        return "timeout", None, ""
    except (ConnectionError, http.client.HTTPException):
        return "reset", None, ""
    finally:
        c.close()


def scenario_gateway(tmp):
    plat = start_platform(tmp)
    try:
        load = start_load(plat)
        t_kill = kill9(plat.gateway)
        # down long enough for every client to see it refused, as a supervisor's restart would
        wait_until(lambda: load.count_since(t_kill, "connect_refused") >= THREADS, 10, interval=0.005,
                   what="clients refused while the gateway is down")
        t_spawn = spawn(plat.gateway)
        probes, t_up = probe_readiness(plat, time.monotonic() + 10)
        t_up = t_up or time.monotonic()
        settle(load, t_up)
        calls = load.stop()
        logs = plat.logs()
    finally:
        plat.stop()
    hz = {}
    for p in probes:
        hz[str(p["healthz"])] = hz.get(str(p["healthz"]), 0) + 1
    early = [p for p in probes if p["healthz"] == 200 and p["call"] != 200]
    s = Summary(calls, t_kill, t_up, "gateway kill -9 + restart",
                {"healthz_probes": hz, "healthz_200_then_call_failed": len(early),
                 "healthz_first_200_after_up_ms": next((round((p["t"] - t_up) * 1000, 1) for p in probes
                                                        if p["healthz"] == 200), None),
                 "n_5xx_not_503_retry": None})
    fig = s.figures()
    fig["n_5xx_not_503_retry"] = s.n_5xx(allow_503_retry=True)
    fig["note"] = (f"/healthz after restart: {hz}; a call right after a 200 failed {len(early)} times; "
                   f"down {fig['down_s'] * 1000:.0f} ms")
    return fig, {"summary": s, "probes": probes, "early": early, "logs": logs, "t_spawn": t_spawn}


def test_gateway_kill9_restart(tmp_path):
    """While the gateway is down its clients get connection refused (transport, not an
    HTTP error). The restarted gateway never answers 404 for the deployed function and no
    5xx beyond the calls in flight at the kill (503 + Retry-After while it has not synced
    is allowed). Its /healthz does not say 200 before it can route: every call made right
    after a 200 from /healthz succeeded."""
    fig, ev = scenario_gateway(tmp_path)
    report(fig)
    s = ev["summary"]
    bad = check_common(s, allow_503_retry=True)
    # dead: from the kill until the new process was spawned (a call begun then and
    # ended later may have been answered by the new process, rightly)
    dead = [c for c in s.calls if s.t_kill <= c.t0 and c.t1 < ev["t_spawn"]]
    answered = [c for c in dead if isinstance(c.outcome, int)]
    if answered:
        bad.append(f"{len(answered)} HTTP answers while the gateway was dead (another process on its port?)")
    if not any(c.outcome == "connect_refused" for c in dead):
        bad.append("no connection refused while the gateway was down: the fault was not injected")
    if ev["early"]:
        p = ev["early"][0]
        bad.append(f"/healthz said 200 but the call right after got {p['call']} ({p['body'].strip()}) "
                   f"{len(ev['early'])} times")
    if any(p["call"] == 404 for p in ev["probes"]):
        bad.append("a probe call got 404")
    verdict(fig, bad, ev["logs"])


# ------------------------------------------------------------------ worker manager

def scenario_wm(tmp):
    plat = start_platform(tmp)
    try:
        load = start_load(plat)
        before = {r["id"] for r in ready(plat, "hello")}  # under load: a scale-up has happened by now
        t_kill = kill9(plat.wm)
        t_up = restart(plat.wm)  # at once, as a supervisor would: same argv, id, ports, state dir
        settle(load, t_up)
        calls = load.stop()
        after = {r["id"] for r in wait_until(lambda: ready(plat, "hello"), 15, interval=0.1,
                                             what="hello instances after the restart")}
        # a cold start through the restarted worker manager
        plat.deploy_hello("hello2")
        code2, body2, _ = curl(plat.url("hello2", "/hello"))
        logs = plat.logs()
    finally:
        plat.stop()
    s = Summary(calls, t_kill, t_up, "worker manager kill -9 + restart",
                {"instances_before": sorted(before), "instances_after": sorted(after),
                 "kept": sorted(before & after), "new_fn_after_restart": code2})
    fig = s.figures()
    fig["note"] = (f"instances kept {len(before & after)}/{len(before)}; new deploy after restart: {code2}; "
                   f"restarted in {fig['down_s'] * 1000:.0f} ms")
    return fig, {"summary": s, "before": before, "after": after, "code2": (code2, body2), "logs": logs}


def test_worker_manager_kill9_restart(tmp_path):
    """A worker manager's crash and restart on the same state dir: no 404, no 5xx beyond
    the calls in flight at the kill, and its instances are kept: the same instance ids
    before and after (pods outlive the manager, the restarted one adopts them). The
    fallback the issue allows, "recreated within one cold start", is accepted only
    as: none of the old ids is still listed (no dead endpoint advertised), new ones
    serve, and full service is back within RECOVER_BOUND_S of the restart; the 5xx
    bound holds in both cases, so a recreation that costs errors fails anyway. New ids
    next to all the old ones are a scale-up under load, not a loss. A function deployed
    after the restart cold-starts and answers."""
    fig, ev = scenario_wm(tmp_path)
    report(fig)
    s = ev["summary"]
    bad = check_common(s)
    before, after = ev["before"], ev["after"]
    if not before <= after:
        if before & after:
            bad.append(f"instances partly kept: before {sorted(before)}, after {sorted(after)}")
        ttf = s.time_to_full()
        since_up = None if ttf is None else ttf - (s.t_up - s.t_kill)
        if since_up is None or since_up > RECOVER_BOUND_S:
            bad.append(f"instances recreated ({sorted(before)} -> {sorted(after)}) but full service "
                       f"{'never' if since_up is None else f'{since_up:.2f} s'} after the restart")
    if ev["code2"][0] != 200:
        bad.append(f"a function deployed after the restart answered {ev['code2']}")
    verdict(fig, bad, ev["logs"])


# ------------------------------------------------------------------ agent

def pidns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def served_ns(call):
    """The PID namespace of the pod that served a GET /whoami (its JSON's pid_ns)."""
    try:
        return json.loads(call.body)["pid_ns"]
    except (ValueError, KeyError, TypeError):
        return None


def pod_agent(plat, row):
    """The host PID of an instance's agent (Instance.pid is the pod's init); None when
    this test cannot see it (another PID namespace)."""
    return row["pid"] if proc_comm(row["pid"]) == "faas-agent" else None


def scenario_agent(tmp, freeze_wm_s=0.0):
    # two or more instances (concurrency 4 for 8 clients; the overload scale-up may add
    # a third past --max-instances, docs/scaling.md "Known limits") and a spare warm
    # pod: the survivors take calls while the lost one is replaced
    plat = start_platform(tmp, pool_size=3, deploy=("--concurrency", "4", "--max-instances", "2"))
    try:
        # GET /whoami: its pid_ns says which pod served each call
        load = start_load(plat, "/function/hello/whoami", keep_body=True)
        rows = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(ready(plat, "hello")), 20,
                          interval=0.1, what="two instances serving under load")
        t_sel = time.monotonic()
        wait_until(lambda: load.count_since(t_sel, 200) >= 200, 20, interval=0.05, what="calls to pick a victim by")
        ns = {pidns(r["pid"]): r for r in rows}
        served = {}
        for c in [c for c in list(load.calls) if c.t0 >= t_sel and c.outcome == 200]:
            served[served_ns(c)] = served.get(served_ns(c), 0) + 1
        if None in ns:
            load.stop()
            pytest.skip(f"cannot read the pods' PID namespaces (instance pids {[r['pid'] for r in rows]})")
        busiest = sorted(((n, k) for k, n in served.items() if k in ns), reverse=True)
        assert busiest, f"no call served by a listed instance (pods {list(ns)}, served {served})"
        victim_ns = busiest[0][1]
        victim = ns[victim_ns]
        pid = pod_agent(plat, victim)
        if pid is None:
            load.stop()
            pytest.skip(f"instance pid {victim['pid']} is not a faas-agent this test can see")
        if freeze_wm_s:
            os.kill(plat.wm.proc.pid, signal.SIGSTOP)
        try:
            t_kill = kill9_pid(pid)
            if freeze_wm_s:
                wait_until(lambda: time.monotonic() - t_kill >= freeze_wm_s, freeze_wm_s + 5, interval=0.01,
                           what="the worker manager frozen")
        finally:
            if freeze_wm_s:
                os.kill(plat.wm.proc.pid, signal.SIGCONT)
        settle(load, t_kill)
        calls = load.stop()
        after = {r["id"] for r in ready(plat, "hello")}
        logs = plat.logs()
    finally:
        plat.stop()
    on_victim = sum(1 for c in calls if c.outcome == 200 and served_ns(c) == victim_ns and c.t0 < t_kill)
    what = f"agent kill -9 (1 of {len(rows)} instances)"
    if freeze_wm_s:
        what = f"agent kill -9, its worker manager frozen {freeze_wm_s} s (1 of {len(rows)} instances)"
    s = Summary(calls, t_kill, None, what,
                {"victim": victim["id"], "instances_after": sorted(after), "victim_calls_before": on_victim,
                 "victim_share_at_pick": f"{busiest[0][0]}/{sum(served.values())}"})
    fig = s.figures()
    fig["note"] = (f"victim served {busiest[0][0]}/{sum(served.values())} calls when picked; "
                   f"slowest call since kill {fig['slowest_since_kill_ms']} ms")
    return fig, {"summary": s, "victim": victim, "after": after, "logs": logs}


def test_agent_kill9(tmp_path):
    """kill -9 of the agent of the busiest of two or more instances (the pod's init: its
    user server dies with it). No 404; 5xx only for calls in flight at the kill (bounded
    here by all calls in flight, on any instance: an upper bound on those on the killed
    one); full service within RECOVER_BOUND_S; the dead instance is no longer listed."""
    check_agent_kill(*scenario_agent(tmp_path))


AGENT_FREEZE_S = 1.0  # below the lease TTL (1.5 s): the dead instance stays listed meanwhile


def test_agent_kill9_unreported(tmp_path):
    """The same kill while the instance's worker manager is stopped (SIGSTOP) for
    AGENT_FREEZE_S, then continued: the agent's death is not reported, its instance
    stays in discovery and in the gateway's table, and every new call routed to it
    meets a refused connect. That is the window in which the issue counted 66 refused
    connects answered 502, made wide and deterministic. A call whose connect was
    refused was never sent: the dispatcher must drop the instance and retry the call
    on another instance or a cold start, so the contract is the same as above."""
    check_agent_kill(*scenario_agent(tmp_path, AGENT_FREEZE_S))


def check_agent_kill(fig, ev):
    report(fig)
    s = ev["summary"]
    bad = check_common(s)
    ttf = s.time_to_full()
    if ttf is not None and ttf > RECOVER_BOUND_S:
        bad.append(f"full service only {ttf:.2f} s after the kill (bound {RECOVER_BOUND_S} s)")
    if ev["victim"]["id"] in ev["after"]:
        bad.append(f"the dead instance {ev['victim']['id']} is still listed ready")
    verdict(fig, bad, ev["logs"])


# ------------------------------------------------------------------ user server

def scenario_user(tmp):
    plat = start_platform(tmp)
    try:
        load = start_load(plat)
        row = wait_until(lambda: ready(plat, "hello"), 10, interval=0.1, what="a ready instance")[0]
        agent = pod_agent(plat, row)
        users = [p for p in children(agent) if proc_comm(p) == "hello"] if agent else []
        if not users:
            load.stop()
            pytest.skip(f"no user server process visible under instance pid {row['pid']}")
        t_kill = kill9_pid(users[0])
        settle(load, t_kill)
        calls = load.stop()
        logs = plat.logs()
    finally:
        plat.stop()
    s = Summary(calls, t_kill, None, "user server kill -9", {"victim": row["id"]})
    fig = s.figures()
    fig["note"] = f"slowest call since kill {fig['slowest_since_kill_ms']} ms"
    return fig, {"summary": s, "logs": logs}


def test_user_server_kill9(tmp_path):
    """kill -9 of the user server inside the only instance's pod: calls in flight on it
    may fail (5xx), none beyond them; later calls recover (the instance is replaced by a
    cold start) within RECOVER_BOUND_S; no 404."""
    fig, ev = scenario_user(tmp_path)
    report(fig)
    s = ev["summary"]
    bad = check_common(s)
    ttf = s.time_to_full()
    if ttf is not None and ttf > RECOVER_BOUND_S:
        bad.append(f"full service only {ttf:.2f} s after the kill (bound {RECOVER_BOUND_S} s)")
    verdict(fig, bad, ev["logs"])


# ------------------------------------------------------------------ discovery

DISCOVERY_DOWN_S = 2.5  # longer than the lease TTL (1.5 s): leases cannot be renewed meanwhile


def scenario_discovery(tmp):
    plat = start_platform(tmp)
    try:
        load = start_load(plat)
        t_kill = kill9(plat.discovery)
        wait_until(lambda: time.monotonic() - t_kill >= DISCOVERY_DOWN_S and load.count_since(t_kill) >= 50,
                   DISCOVERY_DOWN_S + 20, interval=0.05, what="load while discovery is down")
        t_up = restart(plat.discovery)
        settle(load, t_up)
        calls = load.stop()
        wait_until(lambda: plat.workers(), 15, interval=0.1, what="worker re-registered")
        plat.deploy_hello("hello2")
        code2, body2, _ = curl(plat.url("hello2", "/hello"))
        logs = plat.logs()
    finally:
        plat.stop()
    s = Summary(calls, t_kill, t_up, "discovery kill -9 + restart", {"new_fn_after_restart": code2})
    fig = s.figures()
    fig["note"] = (f"while down ({fig['down_s']:.1f} s): {fig['during']}; new deploy after restart: {code2}")
    return fig, {"summary": s, "code2": (code2, body2), "logs": logs}


def test_discovery_kill9_restart(tmp_path):
    """Discovery is the control plane only: while it is down, every call to the running
    instance succeeds (zero non-200, zero transport errors); after its restart the
    common contract holds and a new deploy cold-starts and answers."""
    fig, ev = scenario_discovery(tmp_path)
    report(fig)
    s = ev["summary"]
    bad = check_common(s)
    during = s.window("during")
    off = [c for c in during if c.outcome != 200]
    if off:
        bad.append(f"{len(off)} of {len(during)} calls failed while discovery was down: "
                   f"{Summary.counts(off)}")
    if not during:
        bad.append("no call while discovery was down")
    if ev["code2"][0] != 200:
        bad.append(f"a function deployed after the restart answered {ev['code2']}")
    verdict(fig, bad, ev["logs"])


SCENARIOS = [("gateway", scenario_gateway), ("worker-manager", scenario_wm), ("agent", scenario_agent),
             ("agent-unreported", lambda tmp: scenario_agent(tmp, AGENT_FREEZE_S)),
             ("user-server", scenario_user), ("discovery", scenario_discovery)]
