"""faasd: ordered start with readiness, restart of crashed children, ordered stop
leaving nothing behind. Uses fake daemons (small Python listeners) so it runs
without the real ones; the last test runs the real platform when it is built."""
import os
import signal
import socket
import subprocess
import time

import pytest

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAASD = os.path.join(BUILD, "faasd")
DAEMONS = ["faas-discovery", "faas-workermgr", "faas-gateway"]

FAKE = r'''
import os, signal, socket, sys, time
me = sys.argv[1]
args = sys.argv[2:]
d = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(d, me + ".args"), "w") as f:
    f.write("\n".join(args))
def term(*_):
    with open(os.path.join(d, "order"), "a") as f:
        f.write(me + "\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
if os.path.exists(os.path.join(d, me + ".fail")):
    sys.exit(7)
host, port = args[args.index("--listen") + 1].rsplit(":", 1)
time.sleep(0.2)  # not ready at once: faasd must wait
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
s.listen(16)
while True:
    time.sleep(1)
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def pids_with(substr, cwd_too=False):
    """PIDs whose command line (or, with cwd_too, working directory) contains substr."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    hit = substr.encode() in f.read()
                if not hit and cwd_too:
                    hit = substr in os.readlink(f"/proc/{pid}/cwd")
                if hit:
                    out.append(int(pid))
            except OSError:
                pass
    return out


class Faasd:
    def __init__(self, tmp, bin_dir, extra=()):
        self.tmp = str(tmp)
        self.http, self.disc, self.wm = free_port(), free_port(), free_port()
        self.log = os.path.join(self.tmp, "faasd.out")
        self.argv = [FAASD, "--bin-dir", str(bin_dir), "--state-dir", os.path.join(self.tmp, "state"),
                     "--http", f"127.0.0.1:{self.http}", "--discovery-listen", f"127.0.0.1:{self.disc}",
                     "--workermgr-listen", f"127.0.0.1:{self.wm}", *extra]
        self.proc = None

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, text, timeout=30):
        def seen():
            if self.proc.poll() is not None and text not in self.output():
                raise RuntimeError(f"faasd exited {self.proc.returncode}:\n{self.output()}")
            return text in self.output()
        return wait_until(seen, timeout, repr(text))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill_all(self):
        # faasd starts each daemon in its own process group, so killing faasd's group
        # is not enough after a failed test: the daemons (and pods) are found by the
        # state dir in their command line or cwd and killed by PID.
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in pids_with(os.path.join(self.tmp, "state"), cwd_too=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def fake_bin(tmp_path):
    if not os.access(FAASD, os.X_OK):
        pytest.skip("faasd is not built")
    d = tmp_path / "bin"
    d.mkdir()
    (d / "fake.py").write_text(FAKE)
    for name in DAEMONS:
        p = d / name
        p.write_text(f'#!/bin/sh\nexec /usr/bin/python3 "{d}/fake.py" {name} "$@"\n')
        p.chmod(0o755)
    return d


def test_help_and_usage():
    if not os.access(FAASD, os.X_OK):
        pytest.skip("faasd is not built")
    p = subprocess.run([FAASD, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stdout.startswith("usage: faasd")
    assert "--gateway-threads" in p.stdout
    for args, needle in ((["--bogus"], "bad option"), (["--pool-size", "x"], "--pool-size"),
                         (["--http", "nowhere"], "--http"), (["extra"], "unexpected argument"),
                         (["--gateway-threads", "0"], "--gateway-threads"),
                         (["--gateway-threads", "300"], "--gateway-threads")):
        p = subprocess.run([FAASD, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.stderr)
        assert needle in p.stderr


def test_missing_binaries(tmp_path):
    if not os.access(FAASD, os.X_OK):
        pytest.skip("faasd is not built")
    p = subprocess.run([FAASD, "--bin-dir", str(tmp_path), "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "faas-discovery" in p.stderr and "--bin-dir" in p.stderr


def test_start_restart_stop(fake_bin, tmp_path):
    f = Faasd(tmp_path, fake_bin, ["--pool-size", "3"]).start()
    try:
        f.wait_for("platform up")
        out = f.output()
        assert out.index("discovery up") < out.index("workermgr up") < out.index("gateway up")
        assert f"faasd: platform up: http://127.0.0.1:{f.http} (discovery 127.0.0.1:{f.disc})" in out
        wm_args = (fake_bin / "faas-workermgr.args").read_text().split("\n")
        assert wm_args[wm_args.index("--discovery") + 1] == f"127.0.0.1:{f.disc}"
        assert wm_args[wm_args.index("--pool-size") + 1] == "3"
        assert wm_args[wm_args.index("--state-dir") + 1].endswith("state/worker")
        assert wm_args[wm_args.index("--metrics-listen") + 1] == f"127.0.0.1:{f.wm + 1}"
        assert wm_args[wm_args.index("--agent") + 1] == f"{fake_bin}/faas-agent"
        # the token discovery makes in its state dir is where the others look
        assert wm_args[wm_args.index("--token-file") + 1].endswith("state/discovery/token")
        d_args = (fake_bin / "faas-discovery.args").read_text().split("\n")
        assert d_args[d_args.index("--state-dir") + 1].endswith("state/discovery")
        assert os.path.isdir(tmp_path / "state" / "discovery")

        # a crashed child is restarted
        gw = [p for p in pids_with(f"{fake_bin}/fake.py") if b"faas-gateway" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(gw) == 1
        os.kill(gw[0], signal.SIGKILL)
        f.wait_for("gateway restarted")
        assert "killed by signal 9" in f.output()
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", f.http)) == 0, 10, "gateway back")

        assert f.stop(signal.SIGINT) == 0
        assert (fake_bin / "order").read_text().split() == ["faas-gateway", "faas-workermgr", "faas-discovery"]
        assert pids_with(f"{fake_bin}/fake.py") == []
        assert "platform stopped" in f.output()
    finally:
        f.kill_all()


def test_gateway_threads_passed_through(fake_bin, tmp_path):
    """--gateway-threads N reaches the gateway as --threads N; without it faasd passes
    nothing, so the gateway's own default (one loop per online CPU) holds."""
    for run, (extra, want) in enumerate(((["--gateway-threads", "3"], ["--threads", "3"]), ([], None))):
        (fake_bin / "faas-gateway.args").unlink(missing_ok=True)
        (tmp_path / str(run)).mkdir()
        f = Faasd(tmp_path / str(run), fake_bin, extra).start()
        try:
            f.wait_for("platform up")
            gw_args = (fake_bin / "faas-gateway.args").read_text().split("\n")
            if want:
                i = gw_args.index("--threads")
                assert gw_args[i:i + 2] == want, gw_args
            else:
                assert "--threads" not in gw_args, gw_args
            assert f.stop() == 0
        finally:
            f.kill_all()


def test_child_failing_at_start_stops_the_rest(fake_bin, tmp_path):
    (fake_bin / "faas-workermgr.fail").write_text("")
    f = Faasd(tmp_path, fake_bin).start()
    try:
        assert f.proc.wait(timeout=30) == 1
        out = f.output()
        assert "workermgr exited with status 7 before it was ready" in out
        assert "gateway up" not in out
        assert pids_with(f"{fake_bin}/fake.py") == []
    finally:
        f.kill_all()


def test_real_platform(tmp_path):
    for b in ["faasd", "faasctl", "faas-agent", *DAEMONS]:
        if not os.access(os.path.join(BUILD, b), os.X_OK):
            pytest.skip(f"{b} is not built")
    agent = os.path.join(BUILD, "faas-agent")
    agents_before = set(pids_with(agent))
    # explicit metrics ports: port+1 might belong to another test's daemon
    f = Faasd(tmp_path, BUILD, ["--discovery-metrics", f"127.0.0.1:{free_port()}",
                                "--workermgr-metrics", f"127.0.0.1:{free_port()}", "--gateway-threads", "2"]).start()
    try:
        f.wait_for("platform up", timeout=60)
        # the real gateway got the thread count: its command line says so
        state = os.path.join(str(tmp_path), "state")
        gw = [p for p in pids_with(os.path.join(BUILD, "faas-gateway")) if state.encode() in
              open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(gw) == 1, gw
        gw_argv = open(f"/proc/{gw[0]}/cmdline", "rb").read().split(b"\0")
        assert gw_argv[gw_argv.index(b"--threads") + 1] == b"2", gw_argv
        token_file = os.path.join(str(tmp_path), "state", "discovery", "token")
        assert "control-plane token in " in f.output() and "state/discovery/token" in f.output()
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        env = dict(os.environ, FAAS_DISCOVERY=f"127.0.0.1:{f.disc}", FAAS_GATEWAY=f"http://127.0.0.1:{f.http}")
        env.pop("FAAS_TOKEN", None)
        deploy = [os.path.join(BUILD, "faasctl"), "deploy", "-f", os.path.join(ROOT, "examples/hello-http/function.yaml")]
        # run elsewhere than the default ./.faas, without the token: refused
        p = subprocess.run(deploy, capture_output=True, text=True, env=env, timeout=60, cwd=str(tmp_path))
        assert p.returncode == 1 and "UNAUTHENTICATED" in p.stderr, p.stderr
        with open(token_file) as tf:
            env["FAAS_TOKEN"] = tf.read().strip()
        p = subprocess.run(deploy, capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr + f.output()
        assert p.stdout.startswith("deployed hello version ")

        def call():
            r = subprocess.run(["curl", "-s", "--max-time", "20", f"http://127.0.0.1:{f.http}/function/hello/hello"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout == "hello from hello-http\n"
        wait_until(call, 60, "hello answers through the gateway")
        p = subprocess.run([os.path.join(BUILD, "faasctl"), "invoke", "hello", "--path", "/echo", "--data", "x y"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and p.stdout == "x y", p.stderr
        assert f.stop(signal.SIGINT, timeout=60) == 0
        state = os.path.join(str(tmp_path), "state")
        assert pids_with(state, cwd_too=True) == [], "every daemon is gone"
        assert pids_with(f"127.0.0.1:{f.disc}") == []
        # pods see their code at a fixed path, not under the state dir: find them as
        # this build's agents (other tests' standalone agents are not ours)
        left = [p for p in set(pids_with(agent)) - agents_before
                if b"--standalone" not in open(f"/proc/{p}/cmdline", "rb").read()]
        assert left == [], "every pod is gone"
    finally:
        f.kill_all()
