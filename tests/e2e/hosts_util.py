"""Simulated hosts for multi-host end-to-end tests (issue 16, docs/multihost.md).

Hosts(n) makes n network namespaces, faas-h<pid>-<i>, each joined to a bridge of the
test's own in the root namespace by a veth: the bridge holds 10.<x>.0.1/24 (where the
control plane - discovery, the gateway - listens), host i holds 10.<x>.0.<i+2>/24 with
its default route via the bridge. Each host gets a pod range 10.<y>.<i+1>.0/24 (prefix
24, within the 16-28 that --pod-cidr takes), and the root namespace routes it via that
host's address, as an operator routes each node's pod range in host-gw/flannel: the
gateway then reaches every host's pods directly.

The root namespace routes nothing here: the hosts share one L2 segment and every packet
the control plane exchanges with a host or a pod starts or ends in the root namespace
itself, so its ip_forward is left alone (other tests of this machine read it). Each host
namespace forwards (bridge <-> its pods' veths).

A worker manager runs in its host's namespace through nsenter --net (not `ip netns
exec`, which remounts /sys and would hide the cgroup tree). It records the namespace's
forwarding before it in its table, not in the machine's /run/faas (netrules.c).

Everything made is removed by close(), which the fixture calls whatever the test did;
links and namespaces carry the test's pid so parallel runs do not collide."""
import os
import random
import socket
import subprocess

from platform_util import BUILD, Daemon, port_open, wait_until


def can_simulate():
    """None, or why this machine cannot run simulated hosts (for pytest.skip)."""
    if os.geteuid() != 0:
        return "simulated hosts need root (network namespaces, a bridge, routes)"
    for tool in ("ip", "nsenter", "nft"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            return f"{tool} is not installed"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "ip netns is unavailable"
    return None


def _answers(addr):
    """True once addr's kernel answers a TCP connection to a closed port (a reset)."""
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((addr, 9))
        return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Host:
    def __init__(self, hosts, i):
        self.i = i
        self.ns = f"faas-h{hosts.pid}-{i}"
        self.link = f"fh{hosts.pid}-{i}"  # root end; never fv*: that is a pod link to a worker manager
        self.addr = f"{hosts.net}.{i + 2}"
        self.pod_cidr = f"10.{hosts.pod_octet}.{i + 1}.0/24"
        self.pod_prefix = f"10.{hosts.pod_octet}.{i + 1}."
        self.wm = None
        self.wm_port = None
        self.others = []  # more worker managers on this host (Hosts.start_wm(second=...))

    def in_pods(self, addr):
        return addr.startswith(self.pod_prefix)

    def run(self, *argv, **kw):
        """Runs argv in this host's network namespace."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", *argv], capture_output=True, text=True, **kw)


class Hosts:
    def __init__(self, n, tmpdir):
        self.pid = os.getpid()
        self.dir = str(tmpdir)
        rnd = random.Random()
        self.x = rnd.randint(100, 199)
        self.pod_octet = rnd.choice([o for o in range(100, 200) if o != self.x])
        self.net = f"10.{self.x}.0"
        self.bridge_addr = f"{self.net}.1"
        self.subnet = f"{self.net}.0/24"
        self.bridge = f"fbr{self.pid}"[:15]
        self.hosts = [Host(self, i) for i in range(n)]
        self.made_bridge = False
        self.routes = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self):
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made_bridge = True
        _ip("addr", "add", f"{self.bridge_addr}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            _ip("netns", "add", h.ns)
            h.made = True
            _ip("link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
            _ip("link", "set", h.link, "master", self.bridge, "up")
            for c in (("link", "set", "lo", "up"), ("addr", "add", f"{h.addr}/24", "dev", "eth0"),
                      ("link", "set", "eth0", "up"), ("route", "add", "default", "via", self.bridge_addr)):
                _ip("-n", h.ns, *c)
            r = h.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
            assert r.returncode == 0, r.stderr
            _ip("route", "add", h.pod_cidr, "via", h.addr)
            self.routes.append(h.pod_cidr)
        # a new bridge port may take a moment to forward: wait until each host answers
        wait_until(lambda: all(_answers(h.addr) for h in self.hosts), 15, interval=0.1,
                   what="simulated hosts answer on the bridge")

    def start_wm(self, h, discovery_addr, token_file, pool_size=1, lease_ttl_ms=1500, extra=(), second=None):
        """faas-workermgr in host h: listening (and registered) on the host's address, its
        pods in the host's own range, open to the whole node network (as the Kubernetes
        example allows it: what keeps one host's pods from another's pods is then the
        cluster's pod range, --cluster-cidr, by default the /16 around the host's range),
        and denying pods the whole control-plane subnet (discovery, the other hosts'
        worker managers).
        second=CIDR: another worker manager on the same host with that pod range (routed
        to the host too), on other ports; h.wm stays the first one."""
        port = 7200 + h.i + (100 if second else 0)  # real hosts share no port space: any fixed port will do
        tag = f"host{h.i}{'b' if second else ''}"
        argv = ["nsenter", f"--net=/run/netns/{h.ns}", f"{BUILD}/faas-workermgr", "--listen", f"{h.addr}:{port}",
                "--metrics-listen", f"127.0.0.1:{port + 1000}", "--discovery", discovery_addr,
                "--token-file", token_file,
                "--state-dir", f"{self.dir}/{tag}", "--pool-size", str(pool_size), "--pool-python", "0", "--lease-ttl-ms",
                str(lease_ttl_ms), "--id", f"{tag}-{self.pid}", "--pod-cidr", second or h.pod_cidr, "--allow-from",
                self.subnet, "--pod-deny", self.subnet, "--no-runq-bpf", *extra]
        if second:
            _ip("route", "add", second, "via", h.addr)
            self.routes.append(second)
        wm = Daemon(f"workermgr-{tag}", argv, self.dir)
        if second:
            h.others.append(wm)
        else:
            h.wm, h.wm_port = wm, port
        wm.start()
        wait_until(lambda: wm._alive() and port_open(port, h.addr), 20, interval=0.05,
                   what=f"worker manager {tag} listening")
        return wm

    def close(self):
        for h in self.hosts:
            for wm in [h.wm, *h.others]:
                if wm is not None:
                    wm.stop()
        for r in self.routes:
            _ip("route", "del", r, check=False)
        for h in self.hosts:
            if getattr(h, "made", False):
                # the pods' processes die with their worker manager's helper; the namespace's
                # links (the host veth and the pods') go with it
                _ip("link", "del", h.link, check=False)
                _ip("netns", "del", h.ns, check=False)
        if self.made_bridge:
            _ip("link", "del", self.bridge, check=False)

    def logs(self):
        return "\n".join(f"--- {wm.name}\n{wm.log()}" for h in self.hosts for wm in [h.wm, *h.others] if wm)
