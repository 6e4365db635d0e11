"""Issue 13, control-plane credentials: every call to discovery and the worker manager
carries the platform token; without it (or with another) the call is refused with
UNAUTHENTICATED and a one-line reason, and nothing changes. TLS with --tls-cert/--tls-key
for control planes that cross machines. docs/security.md "Control-plane credentials"."""
import os
import re
import stat
import subprocess

import pytest

from faaspb import _str
from platform_util import BUILD, ROOT, Daemon, Platform, auth_md, curl, free_port, http_get, wait_until

grpc = pytest.importorskip("grpc")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]

WRONG = "f" * 64


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path, pool_size=1).start()
    try:
        yield p
    finally:
        p.stop()


def refused(p, addr, method, req=b"", token=""):
    """The status and message of a raw call that must be refused."""
    with pytest.raises(grpc.RpcError) as e:
        p.rpc(addr, method, req, token=token)
    return e.value.code(), e.value.details()


def metric(port, name):
    txt = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    return sum(float(l.split()[-1]) for l in txt.splitlines() if l.startswith(name))


def functions(p):
    return [l.split()[0] for l in p.ctl("list").stdout.splitlines()[1:] if l.strip()]


def test_token_file_is_made_once_0600(plat):
    st = os.stat(plat.token_file)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", open(plat.token_file).read())
    # a restart keeps it: the other daemons and faasctl hold the same token
    before = plat.token()
    plat.discovery.stop()
    plat.discovery.start()
    assert plat.token() == before
    assert [f for f in os.listdir(os.path.dirname(plat.token_file)) if f.startswith("token")] == ["token"]


def test_faasctl_without_the_token_is_refused_and_nothing_changes(plat):
    hello = ["deploy", "hello", "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./hello", "--health", "/healthz"]
    r = plat.ctl(*hello, check=False, token=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "UNAUTHENTICATED" in r.stderr and "missing platform token" in r.stderr, r.stderr
    # and faasctl says why it sent none: the default path does not exist here
    assert "no token sent" in r.stderr and "FAAS_TOKEN or --token-file" in r.stderr, r.stderr
    e = plat.env(token=False)
    e["FAAS_TOKEN"] = WRONG
    r = subprocess.run([f"{BUILD}/faasctl", *hello], capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 1 and "wrong platform token" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert functions(plat) == []

    # with it everything works as before, from FAAS_TOKEN or --token-file
    plat.deploy_hello()
    r = subprocess.run([f"{BUILD}/faasctl", "--token-file", plat.token_file, "list"], capture_output=True, text=True,
                       env=plat.env(token=False), timeout=30)
    assert r.returncode == 0 and "hello" in r.stdout, r.stderr
    code, body, _ = curl(plat.url("hello", "/hello"))  # the users' API needs no token
    assert (code, body) == (200, "hello from hello-http\n")
    r = plat.ctl("logs", "hello", check=False, token=False)  # the worker manager's Logs
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr, r.stderr
    assert plat.ctl("logs", "hello").returncode == 0
    r = plat.ctl("delete", "hello", check=False, token=False)
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    assert functions(plat) == ["hello"]


def test_raw_grpc_to_discovery_and_worker_manager(plat):
    d, w = plat.discovery_addr, f"127.0.0.1:{plat.wm_port}"
    plat.deploy_hello()
    assert curl(plat.url("hello", "/hello"))[0] == 200
    n_inst = len(plat.instances("hello"))
    assert n_inst >= 1
    missing0 = metric(plat.disc_mport, 'faas_discovery_unauthenticated_total{reason="missing"}')
    for addr, method, req in ((d, "/faas.Discovery/DeleteFunction", _str(1, "hello")),
                              (d, "/faas.Discovery/ListWorkers", b""),
                              (d, "/faas.Discovery/NoSuchMethod", b""),  # says nothing about which exist
                              (w, "/faas.WorkerManager/ListInstances", b""),
                              (w, "/faas.WorkerManager/Release", _str(1, "any"))):
        code, msg = refused(plat, addr, method, req)
        assert code == grpc.StatusCode.UNAUTHENTICATED and msg.startswith("missing platform token"), (method, msg)
        code, msg = refused(plat, addr, method, req, token=WRONG)
        assert (code, msg) == (grpc.StatusCode.UNAUTHENTICATED, "wrong platform token"), method
        assert "\n" not in msg
    # "Basic ..." or a bare token is not a bearer credential
    with grpc.insecure_channel(d) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/faas.Discovery/ListWorkers")(b"", timeout=5, metadata=(("authorization", plat.token()),))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "malformed" in e.value.details()

    # nothing changed: the function and its instances are still there
    assert functions(plat) == ["hello"]
    assert len(plat.instances("hello")) == n_inst
    # with the token: the same calls work
    assert len(plat.rpc(d, "/faas.Discovery/ListWorkers")) > 0
    assert len(plat.rpc(w, "/faas.WorkerManager/ListInstances")) > 0

    # counted on the refusing daemon; /metrics and /healthz stay open to scrapers
    assert metric(plat.disc_mport, 'faas_discovery_unauthenticated_total{reason="missing"}') == missing0 + 3
    assert metric(plat.disc_mport, 'faas_discovery_unauthenticated_total{reason="wrong"}') >= 3
    assert metric(plat.disc_mport, 'faas_discovery_unauthenticated_total{reason="malformed"}') == 1
    assert metric(plat.wm_mport, 'faas_wm_unauthenticated_total{reason="missing"}') >= 2
    assert metric(plat.wm_mport, 'faas_wm_unauthenticated_total{reason="wrong"}') >= 2
    assert http_get(f"http://127.0.0.1:{plat.disc_mport}/healthz")[0] == 200


def test_refusals_are_logged_once_per_peer(plat):
    for _ in range(20):
        refused(plat, plat.discovery_addr, "/faas.Discovery/ListWorkers")
    lines = [l for l in plat.discovery.log().splitlines() if "event=rpc_unauthenticated" in l]
    # 20 refusals from one host within the 10 s interval: one line (two if it crossed one)
    assert 1 <= len(lines) <= 2, lines
    assert "peer=ipv4:127.0.0.1:" in lines[0] and "reason=missing" in lines[0]


def make_cert(d):
    """A self-signed certificate for 127.0.0.1, the CA of its own clients."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=faas-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_tls_discovery(tmp_path):
    cert, key = make_cert(str(tmp_path))
    port, mport = free_port(), free_port()
    addr = f"127.0.0.1:{port}"
    disc = Daemon("discovery", [f"{BUILD}/faas-discovery", "--listen", addr, "--metrics-listen",
                                f"127.0.0.1:{mport}", "--state-dir", f"{tmp_path}/discovery", "--tls-cert", cert,
                                "--tls-key", key], str(tmp_path), port).start()
    try:
        token = open(f"{tmp_path}/discovery/token").read().strip()
        creds = grpc.ssl_channel_credentials(root_certificates=open(cert, "rb").read())
        with grpc.secure_channel(addr, creds) as ch:
            assert ch.unary_unary("/faas.Discovery/ListWorkers")(b"", timeout=10, metadata=auth_md(token)) == b""
            with pytest.raises(grpc.RpcError) as e:  # TLS is no credential by itself
                ch.unary_unary("/faas.Discovery/ListWorkers")(b"", timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(addr) as ch:  # a plaintext client cannot talk to it
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/faas.Discovery/ListWorkers")(b"", timeout=5, metadata=auth_md(token))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        env = dict(os.environ, FAAS_DISCOVERY=addr, FAAS_TOKEN=token)
        r = subprocess.run([f"{BUILD}/faasctl", "--tls-ca", cert, "list"], capture_output=True, text=True, env=env,
                           timeout=30)
        assert r.returncode == 0 and r.stdout.startswith("NAME"), r.stderr
        r = subprocess.run([f"{BUILD}/faasctl", "list"], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 1, r.stdout
    finally:
        disc.stop()


def test_tls_flags_need_each_other_and_readable_files(tmp_path):
    for argv in (["--tls-cert", "/nonexistent.pem"], ["--tls-key", "/nonexistent.pem"]):
        r = subprocess.run([f"{BUILD}/faas-discovery", "--state-dir", f"{tmp_path}/d", *argv], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr, r.stderr
    r = subprocess.run([f"{BUILD}/faas-discovery", "--state-dir", f"{tmp_path}/d", "--listen", f"127.0.0.1:{free_port()}",
                        "--metrics-listen", "off", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "cannot read /nonexistent.pem" in r.stdout + r.stderr


def test_whole_platform_over_tls(tmp_path):
    """discovery and the worker manager serve TLS; the worker manager, the gateway and
    faasctl trust the CA: deploy, cold start and invoke work as before."""
    p = Platform(tmp_path, pool_size=1, tls=make_cert(str(tmp_path))).start()
    try:
        p.deploy_hello()
        code, body, _ = curl(p.url("hello", "/hello"))
        assert (code, body) == (200, "hello from hello-http\n"), p.logs()
        assert len(p.instances("hello")) >= 1
        assert p.ctl("logs", "hello").returncode == 0
    finally:
        p.stop()
