"""Issue 13, the pod's syscall boundary (docs/security.md, "Seccomp" and "The agent is not
the user's"): a deployed hello-http tries what a hostile function would (GET /try) and
every attempt fails with the errno the platform promises; each refusal shows up in the
worker manager's faas_wm_seccomp_denials_total; the agent cannot be signalled, traced or
read by its user server, and keeps serving after every attempt."""
import json
import os
import time

import pytest

from platform_util import ROOT, Platform, curl, wait_until

# what -> the errno the user server gets, and the metric's syscall label (None: not counted)
REFUSED = {
    "mount": ("EPERM", "mount"),
    "bpf": ("EPERM", "bpf"),
    "ptrace": ("EPERM", "ptrace"),
    "unshare": ("EPERM", "unshare"),
    "clone_newuser": ("EPERM", "clone"),
    "kexec": ("EPERM", "kexec_load"),
    "keyctl": ("EPERM", "keyctl"),
    "perf": ("EPERM", "perf_event_open"),
    "init_module": ("EPERM", "init_module"),
    "process_vm_readv": ("EPERM", "process_vm_readv"),
    "pidfd_getfd": ("EPERM", "pidfd_getfd"),
    # clone3's flags are out of seccomp's reach: ENOSYS sends libc back to clone, uncounted
    "clone3": ("ENOSYS", None),
}


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("seccomp"), pool_size=1).start()
    try:
        p.deploy_hello()
        code, body, err = curl(p.url("hello", "/hello"))
        assert code == 200, (body, err, p.logs())
        yield p
    finally:
        p.stop()


def attempt(plat, what):
    code, body, err = curl(plat.url("hello", f"/try?what={what}"))
    assert code == 200, (what, code, body, err, plat.logs())
    name, _, result = body.strip().partition("=")
    assert name == what, body
    return result


def denials(plat, syscall):
    try:
        return plat.wm_metric(f'faas_wm_seccomp_denials_total{{function="hello",syscall="{syscall}"}}')
    except KeyError:
        return 0


def whoami(plat):
    code, body, _ = curl(plat.url("hello", "/whoami"))
    assert code == 200, body
    return json.loads(body)


def test_the_user_server_runs_beside_its_agent_as_the_pod_uid(plat):
    w = whoami(plat)
    # pid 1 of the pod, the user server's parent, is the agent: the attempts below target it
    assert w["pid1_comm"] == "faas-agent" and w["ppid"] == 1, w
    assert w["uid"] != 0, w


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_refused_syscall_fails_with_its_errno_and_is_counted(plat, what):
    want, label = REFUSED[what]
    before = denials(plat, label) if label else 0
    assert attempt(plat, what) == want
    if label:
        wait_until(lambda: denials(plat, label) >= before + 1, 5, what=f"{label} counted")
    assert curl(plat.url("hello", "/hello"))[0] == 200


def test_denials_are_batched_per_second_and_logged_once(plat):
    before = denials(plat, "bpf")
    for _ in range(20):
        assert attempt(plat, "bpf") == "EPERM"
    wait_until(lambda: denials(plat, "bpf") >= before + 20, 5, what="20 more bpf denials")
    # one line in the function's log for the first bpf refusal, not one per refusal
    log = open(os.path.join(plat.dir, "worker", "logs", "hello.log")).read()
    assert log.count("refused the user server's bpf syscall") == 1, log[-3000:]


def test_ordinary_process_and_thread_creation_still_work(plat):
    # glibc's pthread_create tries clone3 (ENOSYS here) and falls back to clone
    assert attempt(plat, "thread") == "OK"
    assert attempt(plat, "fork") == "OK"


@pytest.mark.parametrize("what", ["read_agent_mem", "agent_fds", "agent_environ"])
def test_the_agent_memory_and_fds_are_not_readable(plat, what):
    # non-dumpable: its /proc entries belong to root, ptrace access checks fail
    assert attempt(plat, what) == "EACCES"


def test_the_agent_ignores_signals_from_its_user_server(plat):
    # instance id, endpoint and pid, not the age column
    ids = lambda: [l.split()[:-1] for l in plat.instances("hello")]
    inst = ids()
    # kill(2) itself succeeds (same uid); the agent, PID-namespace init, drops SIGKILL and
    # SIGSTOP and ignores the stop signals it handles when they come from inside the pod
    assert attempt(plat, "kill_agent") == "OK"
    time.sleep(0.5)
    for _ in range(5):
        assert curl(plat.url("hello", "/hello"))[0] == 200
    assert ids() == inst, "the same instance still serves"
    assert "signal_ignored" in plat.wm.log()


def test_python_http_server_runs_under_the_filter(plat, tmp_path):
    d = tmp_path / "py"
    d.mkdir()
    (d / "index.html").write_text("py ok\n")
    plat.ctl("deploy", "pyhttp", "--dir", str(d), "--cmd", "/usr/bin/python3 -m http.server --bind 127.0.0.1 8000",
             "--port", "8000", "--health", "/")
    code, body, err = curl(plat.url("pyhttp", "/index.html"))
    assert (code, body) == (200, "py ok\n"), (err, plat.logs())


def test_no_seccomp_is_a_measuring_switch_and_says_so(tmp_path):
    """--no-seccomp (make bench's comparison) runs user servers without the filter: what it
    refuses then works, nothing is counted, and the agent logs that it is off."""
    p = Platform(tmp_path, pool_size=1, wm_args=("--no-seccomp",)).start()
    try:
        p.deploy_hello()
        code, body, _ = curl(p.url("hello", "/try?what=keyctl"))
        assert code == 200 and body.strip() != "keyctl=EPERM", body
        assert "event=seccomp_off" in p.logs()
        with pytest.raises(KeyError):  # no series at all: nothing was refused, nothing counted
            p.wm_metric('faas_wm_seccomp_denials_total{function="hello",syscall="keyctl"}')
    finally:
        p.stop()
