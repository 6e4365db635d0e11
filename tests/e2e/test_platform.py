"""The platform backbone end to end (issue 2): faasctl -> discovery, gateway ->
dispatcher -> worker manager -> pod (agent + unmodified user server)."""
import concurrent.futures
import os
import signal
import subprocess
import time

import pytest

from platform_util import (BUILD, ROOT, Platform, curl, free_port, http_get, pids_matching, port_open,
                           wait_until, json_of, pb_varints)


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path).start()
    try:
        yield p
    finally:
        p.stop()


def wm_stats(p):
    return pb_varints(p.rpc(f"127.0.0.1:{p.wm_port}", "/faas.WorkerManager/Stats"))


def test_deploy_then_cold_start_over_http1_and_h2(plat):
    out = plat.deploy_hello().stdout
    assert "deployed hello" in out
    assert plat.instances("hello") == []
    code, body, err = curl(plat.url("hello", "/hello?x=1"))
    assert code == 200, (body, err, plat.logs())
    assert body == "hello from hello-http\n"
    code, body, err = curl("--http2-prior-knowledge", plat.url("hello", "/hello"))
    assert code == 200, err
    assert body == "hello from hello-http\n"
    code, body, _ = curl("--http2-prior-knowledge", "-d", "ping-pong", plat.url("hello", "/echo"))
    assert (code, body) == (200, "ping-pong")
    assert len(plat.instances("hello")) == 1
    assert wm_stats(plat).get(2, 0) == 1, "exactly one cold start"


def test_burst_of_50_first_requests_needs_few_acquisitions(plat):
    plat.deploy_hello()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as ex:
        results = list(ex.map(lambda _: curl(plat.url("hello", "/hello")), range(50)))
    codes = [r[0] for r in results]
    assert codes == [200] * 50, (codes, plat.logs())
    acquisitions = wm_stats(plat).get(1, 0)
    assert 1 <= acquisitions <= 5, f"{acquisitions} acquisitions for 50 requests"


def test_unknown_function_is_404(plat):
    code, body, _ = curl(plat.url("nope", "/"))
    assert code == 404
    assert "nope" in body


def test_body_over_limit_is_413(tmp_path):
    p = Platform(tmp_path, gateway_args=("--max-body", "1024")).start()
    try:
        p.deploy_hello()
        code, _, _ = curl("-d", "x" * 100, p.url("hello", "/echo"))
        assert code == 200
        code, body, _ = curl("-d", "x" * 5000, p.url("hello", "/echo"))
        assert code == 413, body
    finally:
        p.stop()


def test_user_server_never_ready_is_503_within_cold_start_timeout(plat):
    plat.ctl("deploy", "stuck", "--dir", f"{ROOT}/examples/hello-http", "--cmd", "/bin/sleep 600",
             "--health", "/healthz", "--cold-start-timeout", "2s")
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "--max-time", "30", plat.url("stuck", "/")],
                       capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    assert " 503" in p.stdout.splitlines()[0], p.stdout
    assert "retry-after" in p.stdout.lower()
    assert elapsed < 2 + 5, f"answered after {elapsed:.1f}s"
    # the failed pod is cleaned up: no sleep left behind
    wait_until(lambda: not [x for x in pids_matching("/bin/sleep 600")], 10, what="stuck user server reaped")


def test_user_server_killed_mid_request_is_502_then_recovers(plat):
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200
    code, body, _ = curl(plat.url("hello", "/crash"))
    assert code == 502, body
    code, body, _ = curl(plat.url("hello", "/hello"))
    assert code == 200, (body, plat.logs())
    assert wm_stats(plat).get(2, 0) == 2, "the next request ran on a fresh pod"


def test_idle_instance_scales_to_zero_then_cold_starts(plat):
    plat.deploy_hello("idle", "--idle-timeout", "1s")
    assert curl(plat.url("idle", "/hello"))[0] == 200
    assert len(plat.instances("idle")) == 1
    wait_until(lambda: plat.instances("idle") == [], 20, interval=0.2, what="scale to zero")
    assert curl(plat.url("idle", "/hello"))[0] == 200
    assert wm_stats(plat).get(2, 0) == 2


def test_discovery_restart_keeps_functions(plat):
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200
    plat.discovery.stop()
    plat.discovery.start()
    assert "hello" in plat.ctl("list").stdout
    wait_until(lambda: plat.workers(), 10, what="worker re-registered")
    code, _, _ = curl(plat.url("hello", "/hello"))
    assert code == 200, plat.logs()


def test_killed_worker_manager_instances_vanish_when_lease_lapses(plat):
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200
    assert len(plat.instances("hello")) == 1
    plat.wm.kill()
    wait_until(lambda: plat.instances("hello") == [], 10, interval=0.1, what="lease lapse")
    # pods of a dead worker manager do not linger
    wait_until(lambda: not pids_matching(f"{plat.dir}/worker"), 10, what="pods gone")


def test_probe_sees_its_sandbox(plat):
    plat.deploy_hello("probe", "--memory", "96Mi")
    code, body, _ = curl(plat.url("probe", "/whoami"))
    assert code == 200, body
    w = json_of(body)
    assert w["uid"] != 0 and w["gid"] != 0, w
    # own PID namespace: the agent is PID 1 and the user server a low pid in it
    assert w["pid1_comm"] == "faas-agent", w
    assert w["pid"] < 100 and w["host_pid_ns"] is False, w
    assert w["cwd_writable"] is False, w
    assert w["tmp_writable"] is True, w
    assert w["memory_limit"] == 96 * 1024 * 1024, w


def test_faasd_stop_leaves_nothing(tmp_path):
    ports = {k: free_port() for k in ("http", "disc", "wm", "dm", "wmm")}
    state = tmp_path / "state"
    agents_before = {pid for pid, _ in pids_matching("faas-agent")}
    proc = subprocess.Popen([f"{BUILD}/faasd", "--state-dir", str(state), "--http", f"127.0.0.1:{ports['http']}",
                             "--discovery-listen", f"127.0.0.1:{ports['disc']}",
                             "--workermgr-listen", f"127.0.0.1:{ports['wm']}",
                             "--discovery-metrics", f"127.0.0.1:{ports['dm']}",
                             "--workermgr-metrics", f"127.0.0.1:{ports['wmm']}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until(lambda: port_open(ports["http"]) and port_open(ports["wm"]), 20, what="faasd up")
        with open(state / "discovery" / "token") as tf:
            token = tf.read().strip()
        env = dict(os.environ, FAAS_DISCOVERY=f"127.0.0.1:{ports['disc']}",
                   FAAS_GATEWAY=f"http://127.0.0.1:{ports['http']}", FAAS_TOKEN=token)
        subprocess.run([f"{BUILD}/faasctl", "deploy", "hello", "--dir", f"{ROOT}/examples/hello-http", "--cmd",
                        "./hello", "--health", "/healthz"], check=True, env=env, capture_output=True, timeout=60)
        wait_until(lambda: curl(f"http://127.0.0.1:{ports['http']}/function/hello/hello")[0] == 200, 20,
                   interval=0.2, what="invoke through faasd")
        assert pids_matching(str(state))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # pods run this build's agent (other tests' standalone agents are not ours)
    leftovers = pids_matching(str(state)) + [(pid, cmd) for pid, cmd in pids_matching(f"{BUILD}/faas-agent")
                                             if pid not in agents_before and "--standalone" not in cmd]
    assert leftovers == [], leftovers
    mounts = open("/proc/self/mountinfo").read()
    assert str(state) not in mounts
