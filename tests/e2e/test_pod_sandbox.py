"""Pods in their own network namespace and root (issue 13, docs/security.md): a function
tries to reach the host's control plane, the gateway, another pod's agent and user server
and a service on the host's non-loopback address, and to read or write what a server has
no business with; every attempt fails, while the gateway still reaches both pods. The
prober is an ordinary Python HTTP server deployed as a function: GET /connect?host=H&port=P
answers "ok" or the errno name of a 1 s connect; /read, /write and /list?path=P "ok ..." or
the errno name."""
import json
import os
import re
import socket
import subprocess
import threading
import urllib.parse
import urllib.request

import pytest

from platform_util import Platform, wait_until

PROBER = r'''
import errno, http.server, json, os, socket, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/connect":
            s = socket.socket()
            s.settimeout(1)
            try:
                s.connect((q["host"], int(q["port"])))
                out = "ok"
            except socket.timeout:
                out = "ETIMEDOUT"
            except OSError as e:
                out = errno.errorcode.get(e.errno, str(e.errno))
            finally:
                s.close()
        elif u.path == "/peer":  # what the other end saw as our address
            s = socket.create_connection((q["host"], int(q["port"])), timeout=2)
            out = s.recv(64).decode()
            s.close()
        elif u.path in ("/read", "/write", "/list"):
            try:
                if u.path == "/read":
                    with open(q["path"], "rb") as f:
                        out = "ok %d" % len(f.read(1 << 20))
                elif u.path == "/write":
                    with open(q["path"], "wb") as f:
                        f.write(b"pwned")
                    out = "ok"
                else:
                    out = "ok " + ",".join(sorted(os.listdir(q["path"])))
            except OSError as e:
                out = errno.errorcode.get(e.errno, str(e.errno))
        elif u.path == "/addrs":
            out = json.dumps(sorted(l.split()[0] for l in open("/proc/net/dev").read().splitlines()[2:]))
        else:
            out = "up"
        body = out.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


OTHER_USER_PORT = 18765


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    d = tmp_path_factory.mktemp("podnet")
    code = d / "prober"
    code.mkdir()
    (code / "server.py").write_text(PROBER)
    p = Platform(d, pool_size=3, grpc=True, thrift=True).start()
    p.prober_dir = str(code)
    try:
        p.ctl("deploy", "prober", "--dir", str(code), "--cmd", "/usr/bin/python3 server.py", "--health", "/")
        # a fixed user-server port, so the prober knows where the other pod's server listens
        p.ctl("deploy", "other", "--dir", str(code), "--cmd", "/usr/bin/python3 server.py", "--health", "/",
              "--port", str(OTHER_USER_PORT))
        yield p
    finally:
        p.stop()


def get(plat, fn, path):
    with urllib.request.urlopen(plat.url(fn, path), timeout=30) as r:
        return r.read().decode()


def reach(plat, host, port):
    return get(plat, "prober", f"/connect?host={host}&port={port}")


def dropped(comment):
    """Packets the pods' table dropped by the rule with this comment."""
    out = subprocess.run(["nft", "list", "table", "inet", "faas_pods"], capture_output=True, text=True).stdout
    m = re.search(r"counter packets (\d+) bytes \d+ drop comment \"" + re.escape(comment) + '"', out)
    assert m, out
    return int(m.group(1))


def host_address():
    """A non-loopback address of this host (the one its default route leaves by)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
        return s.getsockname()[0]
    finally:
        s.close()


def instance(plat, fn):
    get(plat, fn, "/")  # cold-starts it
    rows = plat.instances(fn)
    assert len(rows) == 1, rows
    return rows[0].split()[1]  # ENDPOINT column: the pod's address and agent port


def test_pod_has_its_own_address_and_only_lo_and_eth0(plat):
    ep = instance(plat, "prober")
    host, _ = ep.rsplit(":", 1)
    assert host.startswith("10.200."), ep
    assert json.loads(get(plat, "prober", "/addrs")) == ["eth0:", "lo:"]


def test_pod_cannot_reach_the_control_plane_on_the_host_loopback(plat):
    ports = {"discovery": plat.disc_port, "discovery metrics": plat.disc_mport, "worker manager": plat.wm_port,
             "worker manager metrics": plat.wm_mport, "gateway http and metrics": plat.http_port,
             "gateway gRPC": plat.grpc_port, "gateway Thrift": plat.thrift_port}
    for what, port in ports.items():
        assert reach(plat, "127.0.0.1", port) == "ECONNREFUSED", what  # its loopback is its own


def test_pod_cannot_open_connections_to_the_host(plat):
    """A service on every host address (0.0.0.0), reached by the host's own address and
    by the pod's gateway (the host end of its veth): dropped, so the connect times out."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(srv.accept())
        except OSError:  # closed at the end of the test: nothing came
            pass
    threading.Thread(target=accept, daemon=True).start()
    try:
        ep = instance(plat, "prober")
        gw = ep.split(":")[0].rsplit(".", 1)
        gw = f"{gw[0]}.{int(gw[1]) - 1}"
        before = dropped("a pod opens nothing on the host")
        for h in (host_address(), gw):
            assert reach(plat, h, port) == "ETIMEDOUT", h
        assert accepted == []
        assert dropped("a pod opens nothing on the host") > before  # the table's rule, not chance
    finally:
        srv.close()


def test_pod_cannot_reach_another_pod(plat):
    other = instance(plat, "other")
    host, port = other.rsplit(":", 1)
    before = dropped("no pod reaches another")
    assert reach(plat, host, port) == "ETIMEDOUT", other  # its agent
    assert reach(plat, host, OTHER_USER_PORT) == "ETIMEDOUT", other  # its user server
    assert dropped("no pod reaches another") > before
    # the gateway does reach both
    assert get(plat, "other", "/") == "up" and get(plat, "prober", "/") == "up"


def test_host_loopback_does_not_lead_into_pods(plat):
    _, port = instance(plat, "prober").rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        with pytest.raises(OSError):
            s.connect(("127.0.0.1", int(port)))
    finally:
        s.close()


class Outside:
    """A network namespace of the test's own standing in for the world beyond the host:
    a veth fx<id> from the host (198.51.100.1/30) to its eth0 (198.51.100.2), and a TCP
    server there that answers each connection with the peer address it saw."""

    def __init__(self):
        self.id = os.urandom(3).hex()
        self.ns, self.link = f"faastest-{self.id}", f"fx{self.id}"
        self.addr = "198.51.100.2"
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)
        run("ip", "netns", "add", self.ns)
        try:
            run("ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            run("ip", "addr", "add", "198.51.100.1/30", "dev", self.link)
            run("ip", "link", "set", self.link, "up")
            for c in (("addr", "add", "198.51.100.2/30", "dev", "eth0"), ("link", "set", "eth0", "up"),
                      ("link", "set", "lo", "up")):
                run("ip", "-n", self.ns, *c)
            self.port = 18000 + int(self.id, 16) % 20000
            self.srv = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "/usr/bin/python3", "-c",
                 "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                 f"s.bind(('0.0.0.0',{self.port}))\ns.listen(8)\n"
                 "while True:\n c,a=s.accept()\n c.sendall(a[0].encode())\n c.close()\n"])
            wait_until(lambda: subprocess.run(["ip", "netns", "exec", self.ns, "ss", "-ltn"], capture_output=True,
                                              text=True).stdout.count(f":{self.port} ") > 0, 10, what="outside server")
        except Exception:
            self.close()
            raise

    def close(self):
        if getattr(self, "srv", None):
            self.srv.kill()
            self.srv.wait(5)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def outside():
    o = Outside()
    try:
        yield o
    finally:
        o.close()


def test_egress_goes_out_behind_the_host_and_none_has_no_route(plat, outside):
    assert reach(plat, outside.addr, outside.port) == "ok"  # network: egress is the default
    # the world sees the host, not the pod (NAT)
    assert get(plat, "prober", f"/peer?host={outside.addr}&port={outside.port}") == "198.51.100.1"
    plat.ctl("deploy", "sealed", "--dir", plat.prober_dir, "--cmd", "/usr/bin/python3 server.py", "--health", "/",
             "--network", "none")
    assert "network: none" in plat.ctl("get", "sealed").stdout
    out = get(plat, "sealed", f"/connect?host={outside.addr}&port={outside.port}")
    assert out == "ENETUNREACH", out
    # still served through the gateway: the host opened that connection
    assert get(plat, "sealed", "/") == "up"


def test_deny_list_holds_even_with_egress(tmp_path, outside):
    code = tmp_path / "prober"
    code.mkdir()
    (code / "server.py").write_text(PROBER)
    p = Platform(tmp_path, pool_size=2, wm_args=("--pod-deny", f"{outside.addr}/32")).start()
    try:
        assert f'event=pod_network_rules deny="{outside.addr}/32"' in p.wm.log()
        p.ctl("deploy", "prober", "--dir", str(code), "--cmd", "/usr/bin/python3 server.py", "--health", "/")
        assert reach(p, outside.addr, outside.port) == "ETIMEDOUT"
    finally:
        p.stop()


def test_pod_sees_only_what_a_server_needs(plat):
    d = plat.dir
    look = lambda verb, path: get(plat, "prober", f"/{verb}?path={urllib.parse.quote(path)}")
    # the system is there, read-only
    assert look("read", "/usr/bin/python3").startswith("ok ")
    assert look("read", "/etc/passwd").startswith("ok ")
    for path in ("/usr/bin/pwned", "/etc/pwned", "/pwned", "/tmp/.faas/code/pwned"):
        assert look("write", path) in ("EROFS", "EACCES", "ENOENT"), path
    assert look("write", "/tmp/mine") == "ok"  # its own /tmp
    # the host's private places, the platform's state and other functions' code are not
    for path in ("/root", "/home", "/var", "/run", "/sys/class", d, f"{d}/worker", "/work"):
        assert look("list", path) == "ENOENT", path
    assert look("read", "/etc/shadow") == "ENOENT"
    assert look("list", "/").split(" ", 1)[1].split(",") == sorted(
        x for x in ("bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys", "tmp", "usr")
        if x == "sys" or os.path.lexists(f"/{x}"))
    assert set(look("list", "/dev").split(" ", 1)[1].split(",")) <= {
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr", "shm"}
    # its own processes only: the agent is pid 1 of its PID namespace
    assert look("read", "/proc/1/cmdline").startswith("ok ")
    pids = [x for x in look("list", "/proc").split(" ", 1)[1].split(",") if x.isdigit()]
    assert len(pids) < 10, pids
