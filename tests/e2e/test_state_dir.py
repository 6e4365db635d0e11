"""Issue 10 item 1: the state directory may live anywhere, under a 0700 home included,
because a pod reaches its code by a mount at a fixed path in its own mount namespace
(/tmp/.faas/code), never by walking the host path down to the state dir. A state dir
that cannot work (a noexec mount: the code there could not be run) is refused at
start-up with one line, not discovered at the first request.

The private directories are made under /var/tmp on purpose: a state dir under /tmp
used to be carried into the pod's own /tmp, which hid the problem."""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from platform_util import BUILD, ROOT, curl, free_port, json_of, pids_matching, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not all(os.access(f"{BUILD}/{b}", os.X_OK) for b in
                               ("faasd", "faasctl", "faas-discovery", "faas-workermgr", "faas-gateway",
                                "faas-agent")), reason="not built"),
]

PRIVATE_BASE = "/var/tmp"


@pytest.fixture
def private_dir():
    """A fresh directory only root may enter, two levels deep, outside /tmp."""
    top = tempfile.mkdtemp(prefix="faas-private-", dir=PRIVATE_BASE)
    home = os.path.join(top, "home", "someone")
    os.makedirs(home)
    for d in (top, os.path.join(top, "home"), home):
        os.chmod(d, 0o700)
    yield home
    shutil.rmtree(top, ignore_errors=True)


def start_faasd(state):
    ports = {k: free_port() for k in ("http", "disc", "wm", "dm", "wmm")}
    argv = [f"{BUILD}/faasd", "--state-dir", state, "--http", f"127.0.0.1:{ports['http']}",
            "--discovery-listen", f"127.0.0.1:{ports['disc']}", "--workermgr-listen", f"127.0.0.1:{ports['wm']}",
            "--discovery-metrics", f"127.0.0.1:{ports['dm']}", "--workermgr-metrics", f"127.0.0.1:{ports['wmm']}",
            "--pool-size", "1", "--pool-python", "0"]
    log = open(os.path.join(os.path.dirname(state), "faasd.out"), "w+")
    # a strict umask, as a careful root has it: nothing the pod needs may depend on it
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: os.umask(0o077))
    return proc, ports, log


def stop_leftovers(state, addrs):
    """After a failed run: faasd starts each daemon in its own process group, so they
    are found by the state dir or a listen address in their command line and stopped by
    PID (the gateway's has no state dir)."""
    def left():
        out = []
        for d in os.listdir("/proc"):
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    args = f.read().decode(errors="replace").split("\0")
            except (OSError, ValueError):
                continue
            # whole arguments only: 127.0.0.1:4110 is not 127.0.0.1:41103
            if any(a in addrs or a == state or a.startswith(state + "/") for a in args):
                out.append(int(d))
        return out
    for pid in set(left()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_until(lambda: left() == [], 15, what="daemons of the test gone")


def output(log):
    log.flush()
    with open(log.name, errors="replace") as f:
        return f.read()


def test_platform_runs_with_its_state_dir_under_a_0700_directory(private_dir):
    state = os.path.join(private_dir, "state")
    proc, ports, log = start_faasd(state)
    try:
        wait_until(lambda: proc.poll() is None and "platform up" in output(log) or proc.poll() is not None, 60,
                   what="faasd up")
        assert proc.poll() is None, output(log)
        env = dict(os.environ, FAAS_DISCOVERY=f"127.0.0.1:{ports['disc']}",
                   FAAS_GATEWAY=f"http://127.0.0.1:{ports['http']}")
        p = subprocess.run([f"{BUILD}/faasctl", "--token-file", os.path.join(state, "discovery", "token"),
                            "deploy", "hello", "--dir", f"{ROOT}/examples/hello-http", "--cmd",
                            "./hello", "--health", "/healthz"], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr + output(log)
        code, body, err = curl(f"http://127.0.0.1:{ports['http']}/function/hello/hello")
        assert (code, body) == (200, "hello from hello-http\n"), (code, body, err, output(log))
        code, body, _ = curl(f"http://127.0.0.1:{ports['http']}/function/hello/whoami")
        who = json_of(body)
        # the pod sees its code at the fixed path, read-only, as an unprivileged uid
        assert who["cwd"] == "/tmp/.faas/code" and who["cwd_writable"] is False and who["uid"] != 0, who
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, output(log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_leftovers(state, [f"127.0.0.1:{p}" for p in ports.values()])
        log.close()
    assert state not in open("/proc/self/mountinfo").read()


@pytest.fixture
def noexec_dir():
    d = tempfile.mkdtemp(prefix="faas-noexec-", dir=PRIVATE_BASE)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=8m", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=False)
        os.rmdir(d)


def run_bounded(argv, state, timeout=30):
    """Runs a daemon expected to exit at once; if it does not, it and whatever it
    started are stopped by PID."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate()
        return None, out, err
    finally:
        stop_leftovers(state, [a for a in argv if a.startswith("127.0.0.1:")])


def test_a_noexec_state_dir_is_refused_at_start_up(noexec_dir):
    state = os.path.join(noexec_dir, "state")
    rc, out, err = run_bounded([f"{BUILD}/faasd", "--state-dir", state, "--http", f"127.0.0.1:{free_port()}",
                                "--discovery-listen", f"127.0.0.1:{free_port()}",
                                "--workermgr-listen", f"127.0.0.1:{free_port()}"], state, timeout=10)
    assert rc == 1, out + err
    assert out == "", "nothing was started"
    lines = err.splitlines()
    assert len(lines) == 1 and "noexec" in lines[0] and state in lines[0], err

    # the worker manager on its own says the same
    rc, _, err = run_bounded([f"{BUILD}/faas-workermgr", "--state-dir", os.path.join(state, "worker"),
                              "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{free_port()}",
                              "--discovery", f"127.0.0.1:{free_port()}", "--agent", f"{BUILD}/faas-agent"], state,
                             timeout=10)
    assert rc == 1, err
    errs = [l for l in err.splitlines() if "noexec" in l]
    assert len(errs) == 1 and errs[0].startswith("faas-workermgr: unusable --state-dir"), err
