"""Helpers for end-to-end tests: real daemons on free loopback ports in a temp
state directory, readiness by polling with bounded waits, cleanup by PID."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

BUILD = os.environ.get("FAAS_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
BUILD = os.path.abspath(BUILD)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# A fixed token for daemons started without a real discovery (fake control planes,
# a lone gateway or worker manager): they still demand and send one.
TEST_TOKEN = "e2e-test-token-" + "0123456789abcdef" * 2


def read_token(path):
    with open(path) as f:
        return f.read().strip()


def auth_md(token):
    """gRPC metadata that carries the platform token (docs/security.md)."""
    return (("authorization", f"Bearer {token}"),)


def authed_channel(addr, token, options=None):
    """A plaintext gRPC channel whose every call carries the token: what the daemons'
    own clients do, for tests that talk to discovery or a worker manager directly."""
    import collections
    import grpc

    class Details(collections.namedtuple("Details", ["method", "timeout", "metadata", "credentials",
                                                     "wait_for_ready", "compression"]), grpc.ClientCallDetails):
        pass

    class Auth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def _d(self, d):
            return Details(d.method, d.timeout, list(d.metadata or []) + list(auth_md(token)), d.credentials,
                           getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

        def intercept_unary_unary(self, cont, d, req):
            return cont(self._d(d), req)

        def intercept_unary_stream(self, cont, d, req):
            return cont(self._d(d), req)

        def intercept_stream_unary(self, cont, d, it):
            return cont(self._d(d), it)

        def intercept_stream_stream(self, cont, d, it):
            return cont(self._d(d), it)

    return grpc.intercept_channel(grpc.insecure_channel(addr, options=options), Auth())


def token_env(token=TEST_TOKEN, base=None):
    e = dict(os.environ if base is None else base)
    e["FAAS_TOKEN"] = token
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.01, what="condition"):
    """Polls pred() until it returns a truthy value; raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the daemon may not be up yet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Daemon:
    """A platform daemon started by PID with its stderr in a log file."""

    def __init__(self, name, argv, logdir, port=None, env=None, host="127.0.0.1"):
        self.name, self.argv, self.port, self.host = name, argv, port, host
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.env = env
        self.proc = None

    def start(self, timeout=15):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        if self.port:
            wait_until(lambda: self._alive() and port_open(self.port, self.host), timeout,
                       what=f"{self.name} on {self.port}")
        return self

    def _alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self, tail=4000):
        """The log's last tail characters (None: all of it)."""
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()[-tail:] if tail else f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def kill(self):
        return self.stop(signal.SIGKILL)


class Platform:
    """discovery + one worker manager + gateway, each on a free port. disc_host: the
    address discovery listens on (another host's worker managers reach it there);
    local_wm=False: no worker manager of its own (the test starts them elsewhere)."""

    def __init__(self, tmpdir, pool_size=2, lease_ttl_ms=1500, gateway_args=(), wm_args=(), grpc=False,
                 thrift=False, disc_args=(), tls=None, disc_host="127.0.0.1", local_wm=True, pool_python=0,
                 python_preload=None):
        self.dir = str(tmpdir)
        self.local_wm = local_wm
        # pool_python: warm Python zygote pods (--pool-python); 0 unless a test asks, so the
        # others keep their pod counts and CPU; python_preload: --python-preload when set
        wm_args = ("--pool-python", str(pool_python), *wm_args)
        if python_preload is not None:
            wm_args = ("--python-preload", python_preload, *wm_args)
        # tls=(cert, key): discovery and the worker manager serve TLS with them, and every
        # client trusts cert as its CA (self-signed, naming 127.0.0.1)
        self.tls_ca = tls[0] if tls else None
        if tls:
            disc_args = (*disc_args, "--tls-cert", tls[0], "--tls-key", tls[1])
            wm_args = (*wm_args, "--tls-cert", tls[0], "--tls-key", tls[1], "--tls-ca", tls[0])
            gateway_args = (*gateway_args, "--tls-ca", tls[0])
        self.disc_port, self.disc_mport = free_port(), free_port()
        self.wm_port, self.wm_mport = free_port(), free_port()
        self.http_port = free_port()
        self.discovery_addr = f"{disc_host}:{self.disc_port}"
        # discovery makes it at its first start; the worker manager finds it next to its
        # own state dir (<dir>/discovery/token), the gateway and faasctl are told
        self.token_file = f"{self.dir}/discovery/token"
        self.gateway_url = f"http://127.0.0.1:{self.http_port}"
        # the gRPC listener (--grpc-listen): a free port when asked for, else off (its
        # default port would be shared by every gateway the tests start)
        self.grpc_port = free_port() if grpc else None
        self.grpc_addr = f"127.0.0.1:{self.grpc_port}" if grpc else None
        grpc_args = ["--grpc-listen", self.grpc_addr if grpc else "off"]
        # the Thrift port (--thrift-listen), likewise
        self.thrift_port = free_port() if thrift else None
        grpc_args += ["--thrift-listen", f"127.0.0.1:{self.thrift_port}" if thrift else "off"]
        b = BUILD
        self.discovery = Daemon("discovery", [f"{b}/faas-discovery", "--listen", self.discovery_addr,
                                              "--metrics-listen", f"127.0.0.1:{self.disc_mport}",
                                              "--state-dir", f"{self.dir}/discovery", *disc_args], self.dir,
                              self.disc_port, host=disc_host)
        self.wm = Daemon("workermgr", [f"{b}/faas-workermgr", "--listen", f"127.0.0.1:{self.wm_port}",
                                       "--metrics-listen", f"127.0.0.1:{self.wm_mport}",
                                       "--discovery", self.discovery_addr, "--state-dir", f"{self.dir}/worker",
                                       "--pool-size", str(pool_size), "--lease-ttl-ms", str(lease_ttl_ms),
                                       "--id", f"wm-{self.wm_port}", *wm_args], self.dir, self.wm_port)
        self.gateway = Daemon("gateway", [f"{b}/faas-gateway", "--listen", f"127.0.0.1:{self.http_port}",
                                          "--discovery", self.discovery_addr, "--token-file", self.token_file,
                                          *grpc_args, *gateway_args], self.dir,
                              self.http_port)

    def start(self):
        try:
            self.discovery.start()
            if self.local_wm:
                self.wm.start()
            self.gateway.start()
            # its gRPC and Thrift listeners open after the HTTP one
            for port in (self.grpc_port, self.thrift_port):
                if port:
                    wait_until(lambda: port_open(port), 10, what=f"gateway listener on {port}")
            # the gateway routes only once its watch has seen a worker
            if self.local_wm:
                wait_until(lambda: self.workers(), 10, what="worker registered in discovery")
        except BaseException:
            self.stop()  # a daemon that failed to start must not orphan the others
            raise
        return self

    def stop(self):
        for d in (self.gateway, self.wm, self.discovery):
            d.stop()

    def restart_wm(self, wm_id=None, extra_args=(), timeout=20):
        """Starts a new worker manager on the same ports and state dir once the current
        one has exited (a test kills it first, e.g. plat.wm.kill()). wm_id replaces its
        --id; "" drops the flag (the WM then picks its own, or adopts its predecessor's).
        Its output goes on in workermgr.log."""
        assert self.wm.proc is None or self.wm.proc.poll() is not None, "the worker manager still runs"
        argv = list(self.wm.argv)
        if wm_id is not None:
            i = argv.index("--id")
            del argv[i:i + 2]
            if wm_id:
                argv += ["--id", wm_id]
        self.wm = Daemon("workermgr", argv + list(extra_args), self.dir, self.wm_port, env=self.wm.env)
        return self.wm.start(timeout)

    def logs(self):
        return "\n".join(f"--- {d.name}\n{d.log()}" for d in (self.discovery, self.wm, self.gateway))

    def token(self):
        return read_token(self.token_file)

    def env(self, token=True):
        e = dict(os.environ)
        e.pop("FAAS_TOKEN", None)
        e["FAAS_DISCOVERY"] = self.discovery_addr
        e["FAAS_GATEWAY"] = self.gateway_url
        if token:
            e["FAAS_TOKEN"] = self.token()
        return e

    def ctl(self, *args, check=True, timeout=60, input=None, token=True):
        tls = ["--tls-ca", self.tls_ca] if self.tls_ca else []
        p = subprocess.run([f"{BUILD}/faasctl", *tls, *args], capture_output=True, text=True, env=self.env(token),
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"faasctl {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}\n{self.logs()}")
        return p

    def rpc(self, addr, method, req=b"", timeout=5, token=None):
        """Raw-bytes unary gRPC call (python3-grpcio, no generated code) with the
        platform token, or another one (token="" sends none)."""
        import grpc
        token = self.token() if token is None else token
        if self.tls_ca:
            with open(self.tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel(addr, creds) if self.tls_ca else grpc.insecure_channel(addr) as ch:
            return ch.unary_unary(method)(req, timeout=timeout, metadata=auth_md(token) if token else None)

    def workers(self):
        # an empty WorkerList encodes to zero bytes: any byte means >= 1 worker
        return len(self.rpc(self.discovery_addr, "/faas.Discovery/ListWorkers")) > 0

    def deploy_hello(self, name="hello", *extra):
        return self.ctl("deploy", name, "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./hello",
                        "--health", "/healthz", *extra)

    def url(self, fn, path="/"):
        return f"{self.gateway_url}/function/{fn}{path}"

    def instances(self, fn):
        out = self.ctl("instances", fn).stdout
        return [l for l in out.splitlines()[1:] if l.strip()]

    def wm_metric(self, name):
        txt = http_get(f"http://127.0.0.1:{self.wm_mport}/metrics")[1]
        total = 0.0
        found = False
        for line in txt.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.split()[-1])
                found = True
        if not found:
            raise KeyError(f"{name} not in worker metrics:\n{txt}")
        return total


def runs_asan(pid):
    """True if process pid is a sanitizer build: its RSS then counts ASan's quarantine
    (freed memory kept on purpose), so RSS bounds do not apply to it."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def curl(*args, timeout=30):
    """Runs curl, returns (status, body, stderr). -s -o body -w code."""
    p = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout), *args],
                       capture_output=True, text=True, timeout=timeout + 5)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body, p.stderr


def descendants_named(root, comm):
    """PIDs named comm whose ancestry reaches root (only this test's pods: other checkouts
    may run the same programs at the same time)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            pid = int(d)
            while pid > 1:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
                if pid == root:
                    out.append(int(d))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return out


def pids_matching(substr):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if substr in cmd:
            out.append((int(pid), cmd))
    return out


def json_of(text):
    return json.loads(text)


def pb_varints(buf):
    """Decodes the top-level varint fields of a protobuf message: {field: value}."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            out[field], i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            i += n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"bad wire type {wt}")
    return out


def _varint(buf, i):
    shift = val = 0
    while True:
        b = buf[i]
        i += 1
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, i
