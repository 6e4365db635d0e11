"""A real etcd-server for end-to-end tests (docs/multihost.md: discovery's state on
etcd). Free client and peer ports, its data dir under the test's temp dir, readiness
by polling GET /health, bounded waits, stopped or killed by PID. restart() keeps the
data dir and the ports, so clients reconnect to the same address.

    etcd = Etcd(tmp_path).start()
    ... faas-discovery --store etcd://{etcd.endpoint} ...
    etcd.kill(); etcd.restart()
    etcd.stop()
"""
import json
import os
import signal
import subprocess
import time
import urllib.request

from platform_util import free_port, wait_until

ETCD = os.environ.get("FAAS_ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("FAAS_ETCDCTL", "/usr/bin/etcdctl")


class Etcd:
    def __init__(self, tmpdir, name="etcd"):
        self.dir = os.path.join(str(tmpdir), name)
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "etcd.log")
        self.client_port = self.peer_port = None
        self.proc = None

    @property
    def endpoint(self):
        """"127.0.0.1:P", what --store etcd://... takes."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _spawn(self, timeout):
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD, "--name", "default", "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"default={peer}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}; see {self.log_path}")
            return self.healthy()

        try:
            wait_until(up, timeout, interval=0.05, what=f"etcd on {self.endpoint}")
        except BaseException:
            # whatever ended the wait (exited, timed out, interrupted): killed by PID and
            # reaped here, so no etcd outlives a start that failed
            self.kill()
            raise

    def start(self, timeout=20):
        """Starts it on free ports (new ones if another process took a port first)."""
        os.makedirs(self.dir, exist_ok=True)
        for attempt in range(3):
            self.client_port, self.peer_port = free_port(), free_port()
            if self.client_port == self.peer_port:
                continue
            try:
                self._spawn(timeout)
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        raise RuntimeError("no free ports for etcd")

    def restart(self, timeout=20):
        """Starts it again (stopping it first if it runs) on the same ports and data."""
        if self.proc is not None:
            self.stop()
        self._spawn(timeout)
        return self

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it is still there after timeout seconds."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def kill(self):
        """SIGKILL: a crash, nothing flushed beyond what etcd already synced."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def ctl(self, *args, timeout=20):
        """Runs etcdctl against it; its stdout (raises on failure)."""
        r = subprocess.run([ETCDCTL, f"--endpoints={self.endpoint}", *args], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def get(self, key):
        """The value of key as text, or None."""
        out = self.ctl("get", key, "--print-value-only")
        return out[:-1] if out.endswith("\n") else (out or None)

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.kill()
        return False


if __name__ == "__main__":
    # A self-check: python3 tests/e2e/etcd_util.py
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with Etcd(d) as e:
            e.ctl("put", "/k", "v1")
            pid = e.pid
            e.kill()
            assert not e.healthy()
            e.restart()
            assert e.pid != pid and e.get("/k") == "v1", e.get("/k")
            e.restart()  # from running: a graceful stop first
            assert e.get("/k") == "v1" and e.get("/none") is None
            e.stop()
            assert not e.healthy()
        print("etcd_util: ok")
