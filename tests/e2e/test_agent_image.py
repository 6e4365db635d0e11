"""The real faas-agent starting its user server inside an OCI image's root (issue 15), driven
over its control socket as the worker manager drives it. The test does what the worker
manager's root helper would (build/tests/userns-pod, from tests/e2e/userns_pod.c): it makes
the image's user namespace (owner uid 65534, ids 0-65535 mapped at 1000000000), mounts a
test-made rootfs (busybox-static and a static C server compiled here) at the pod's root in
a mount namespace of the agent's own, and runs the agent as uid 65534 with no_new_privs;
SPECIALIZE then carries the log fd and the namespace fd."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

import faaspb
from platform_util import wait_until

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
AGENT = os.path.join(BUILD, "faas-agent")
HELPER = os.path.join(BUILD, "tests", "userns-pod")
BASE = 1000000000  # where the image's ids start on the host (the helper's map)
EV_SECCOMP_DENIALS = 12

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test makes the image's user "
                                "namespace and mounts its root, as the worker manager's root helper does")

# What an image's server answers, about itself as the image sees it. Static: the image has
# no libc. /kid: a child in its process group (STOP must take it too); /denied: a syscall
# the platform's seccomp filter refuses.
SERVER_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
extern char **environ;
static pid_t kid;
static int put(char *b, size_t cap, size_t n, const char *fmt, const char *s) {
    return snprintf(b + n, cap - n, fmt, s ? s : "");
}
static size_t info(char *b, size_t cap, const char *path) {
    char cwd[512] = "", cap_bnd[64] = "", line[256];
    gid_t groups[64];
    int ng = getgroups(64, groups);
    if (getcwd(cwd, sizeof(cwd)) == NULL) strcpy(cwd, "?");
    FILE *st = fopen("/proc/self/status", "r");
    while (st && fgets(line, sizeof(line), st))
        if (strncmp(line, "CapBnd:\t", 8) == 0) sscanf(line + 8, "%63s", cap_bnd);
    if (st) fclose(st);
    int denied = 0, agent_environ = 0;
    char ppath[64];
    snprintf(ppath, sizeof(ppath), "/proc/%d/environ", (int)getppid());
    FILE *pe = fopen(ppath, "r");
    if (pe) fclose(pe); else agent_environ = errno;
    if (strcmp(path, "/denied") == 0) denied = unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
    size_t n = (size_t)snprintf(b, cap, "{\"uid\":%u,\"gid\":%u,\"pid\":%d,\"kid\":%d,\"denied\":%d,\"agent_environ\":%d,"
        "\"imagefile\":%d,\"debian\":%d,\"groups\":[", getuid(), getgid(), getpid(), kid, denied, agent_environ,
        access("/etc/imagefile", F_OK) == 0, access("/etc/debian_version", F_OK) == 0);
    for (int i = 0; i < ng; i++) n += (size_t)snprintf(b + n, cap - n, "%s%u", i ? "," : "", groups[i]);
    n += put(b, cap, n, "],\"cwd\":\"%s\",", cwd);
    n += put(b, cap, n, "\"capbnd\":\"%s\",\"env\":[", cap_bnd);
    for (char **e = environ; *e; e++) n += put(b, cap, n, e == environ ? "\"%s\"" : ",\"%s\"", *e);
    n += put(b, cap, n, "]}", NULL);
    return n;
}
int main(void) {
    const char *port = getenv("PORT");
    kid = fork();
    if (kid == 0) { for (;;) pause(); }
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port ? port : "0"))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s, 64) != 0) { perror("bind"); return 1; }
    printf("image server listening on %s\n", port);
    fflush(stdout);
    fprintf(stderr, "image server says hello on stderr\n");
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        char req[8192], body[16384], head[256], path[256] = "/";
        size_t got = 0;
        while (got < sizeof(req) - 1) {
            ssize_t r = read(c, req + got, sizeof(req) - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        req[got] = 0;
        sscanf(req, "%*s %255s", path);
        size_t n = info(body, sizeof(body), path);
        int hl = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          "content-length: %zu\r\nconnection: close\r\n\r\n", n);
        if (write(c, head, (size_t)hl) < 0 || write(c, body, n) < 0) perror("write");
        close(c);
    }
}
'''

# Docker's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE SETFCAP
DOCKER_CAPS = sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31))


@pytest.fixture(scope="module")
def image():
    """A rootfs as umoci would unpack it (its root owned by the image's root, BASE on the
    host), and the empty directory the pod's root is mounted at."""
    if not os.access(HELPER, os.X_OK):
        pytest.fail(f"{HELPER} missing: make -j2 builds it")
    top = tempfile.mkdtemp(prefix="agent-image-")
    os.chmod(top, 0o755)  # the agent, uid 65534, walks to the pod's root through it
    rootfs, root = os.path.join(top, "rootfs"), os.path.join(top, "root")
    try:
        for d in ("bin", "etc", "app", "home/app", "tmp", "proc", "dev"):
            os.makedirs(os.path.join(rootfs, d))
        os.mkdir(root)
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
        os.symlink("busybox", os.path.join(rootfs, "bin/sh"))
        with open(os.path.join(top, "srv.c"), "w") as f:
            f.write(SERVER_C)
        cc = subprocess.run(["cc", "-static", "-O2", "-Wall", "-Werror", "-o", os.path.join(rootfs, "bin/srv"),
                             os.path.join(top, "srv.c")], capture_output=True, text=True)
        assert cc.returncode == 0, cc.stderr
        with open(os.path.join(rootfs, "etc/imagefile"), "w") as f:
            f.write("only in the image\n")
        for dirpath, dirs, files in os.walk(rootfs):
            for n in dirs + files + [""]:
                os.lchown(os.path.join(dirpath, n), BASE, BASE)
        os.lchown(os.path.join(rootfs, "home/app"), BASE + 1000, BASE + 1000)
        yield rootfs, root
    finally:
        shutil.rmtree(top, ignore_errors=True)


def image_run(root, exe, argv, env=(), cwd="", uid=0, gid=0, groups=()):
    """ImageRun bytes (faas.proto)."""
    out = faaspb._str(1, root) + faaspb._str(2, exe)
    for a in argv:
        out += faaspb._bytes(3, a)
    for e in env:
        out += faaspb._bytes(4, e)
    out += faaspb._str(5, cwd) + faaspb._int(6, uid) + faaspb._int(7, gid)
    if groups:
        out += faaspb._bytes(8, b"".join(faaspb._varint(g) for g in groups))  # packed
    return out


def specialize_image(spec, instance_id, run):
    sp = faaspb._bytes(1, spec) + faaspb._str(2, instance_id) + faaspb._bytes(6, run)
    return faaspb._int(1, faaspb.CMD_SPECIALIZE) + faaspb._bytes(2, sp)


def h2c_get(port, path):
    p = subprocess.run(["curl", "-s", "-S", "--http2-prior-knowledge", "--max-time", "10", "-w", "\n%{http_code}",
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=15)
    body, _, status = p.stdout.decode().rpartition("\n")
    return int(status or 0), body


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def fd_links(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


class ImagePod:
    """An agent as a pod runs it, its control socket ours (the worker manager's part)."""

    def __init__(self, rootfs, root, tmp):
        self.tmp = tmp
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ns_ours, ns_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        env = {"FAAS_AGENT_CONTROL_FD": str(theirs.fileno()), "PATH": "/usr/bin:/bin", "FAAS_SECRET": "agent-only"}
        self.err = open(os.path.join(tmp, "agent.stderr"), "wb")
        self.proc = subprocess.Popen([HELPER, rootfs, root, str(ns_theirs.fileno()), AGENT], env=env,
                                     pass_fds=[theirs.fileno(), ns_theirs.fileno()], stderr=self.err)
        theirs.close()
        ns_theirs.close()
        ns_ours.settimeout(10)
        try:
            _, fds, _, _ = socket.recv_fds(ns_ours, 1, 1)
        except socket.timeout:
            raise AssertionError("no namespace fd from the helper: " + self.stderr())
        ns_ours.close()
        assert len(fds) == 1, self.stderr()
        self.userns = fds[0]
        self.denials = 0
        self.port = self.event()["port"]  # HELLO

    def event(self, timeout=10):
        """The next event but FIRST_REQUEST and SECCOMP_DENIALS (counted)."""
        self.sock.settimeout(timeout)
        while True:
            ev = faaspb.decode_event(self.sock.recv(65536))
            if ev["type"] == EV_SECCOMP_DENIALS:
                self.denials += 1
            elif ev["type"] != faaspb.EV_FIRST_REQUEST:
                return ev

    def specialize(self, run, env=None, with_userns=True, name="img"):
        spec = faaspb.function_spec(name, [], env=env, cold_start_timeout_ms=10000)
        self.log = os.path.join(self.tmp, "fn.log")
        logfd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fds = [logfd, self.userns] if with_userns else [logfd]
        socket.send_fds(self.sock, [specialize_image(spec, "inst-1", run)], fds)
        os.close(logfd)

    def stderr(self):
        with open(os.path.join(self.tmp, "agent.stderr")) as f:
            return f.read()

    def close(self):
        self.sock.close()
        os.close(self.userns)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self.err.close()


@pytest.fixture
def pod(image):
    tmp = tempfile.mkdtemp(prefix="agent-image-pod-")
    p = ImagePod(*image, tmp)
    yield p
    p.close()
    shutil.rmtree(tmp, ignore_errors=True)


def server_run(root, **kw):
    args = dict(exe="/bin/srv", argv=["srv", "--flag"], cwd="/app", uid=1000, gid=1000, groups=[1000, 2000],
                env=["PATH=/bin", "HOME=/home/app", "GREETING=from-image", "IMG_ONLY=1"])
    args.update(kw)
    return image_run(root, **args)


def test_user_server_runs_in_the_image_as_its_user(image, pod):
    rootfs, root = image
    assert os.path.exists("/etc/debian_version"), "the host's own file, which the image must not see"
    # argv[0] "srv" is on no host PATH: the agent takes the exe resolved in the image
    pod.specialize(server_run(root), env={"GREETING": "from-manifest"})
    ready = pod.event()
    assert ready["type"] == faaspb.EV_READY, (ready, pod.stderr())
    status, body = h2c_get(pod.port, "/info")
    assert status == 200, body
    info = json.loads(body)
    assert (info["uid"], info["gid"]) == (1000, 1000), info
    assert sorted(info["groups"]) == [1000, 2000], info
    assert info["cwd"] == "/app", info
    assert info["imagefile"] == 1 and info["debian"] == 0, info
    env = dict(e.split("=", 1) for e in info["env"])
    # the image's Env, the function's env over it, the platform's base and port; nothing of the agent's
    assert env["GREETING"] == "from-manifest" and env["IMG_ONLY"] == "1", env
    assert env["PATH"] == "/bin" and env["HOME"] == "/home/app" and "LANG" not in env, env
    assert env["PORT"].isdigit() and int(env["PORT"]) > 0, env
    assert set(env) == {"GREETING", "IMG_ONLY", "PATH", "HOME", "PORT"}, env
    assert int(info["capbnd"], 16) == DOCKER_CAPS, info
    # as the host sees it: the image's ids shifted by the map
    with open(f"/proc/{info['pid']}/status") as f:
        st = f.read()
    assert f"Uid:\t{BASE + 1000}\t" in st, st
    # the user namespace went to the user server and no further: neither the agent nor the
    # server holds its fd, nor the seccomp listener
    agent_fds = fd_links(pod.proc.pid)
    assert not [x for x in agent_fds if x.startswith("user:")], agent_fds
    srv_fds = fd_links(info["pid"])
    assert not [x for x in srv_fds if x.startswith("user:") or "seccomp" in x], srv_fds
    # the agent stays not dumpable (the child changed its ids in the memory they shared until
    # exec): the user server cannot read its environ
    assert info["agent_environ"] == 13, info  # EACCES
    # stdout and stderr reach the function's log
    def logged():
        text = open(pod.log).read()
        return text if "image server listening" in text and "says hello on stderr" in text else None
    text = wait_until(logged, 5, what="the image server's lines in the log")
    assert 'fn=img instance=inst-1 stream=stdout msg="image server listening on' in text, text
    # the seccomp filter holds in the image, and its listener still counts
    status, body = h2c_get(pod.port, "/denied")
    assert status == 200 and json.loads(body)["denied"] == 1, body  # EPERM
    wait_until(lambda: pod.event(0.5) if pod.denials == 0 else True, 5, what="SECCOMP_DENIALS")
    # STOP: the agent (uid 65534) kills the image user's process group, its child too
    kid = info["kid"]
    assert pid_alive(info["pid"]) and pid_alive(kid)
    pod.sock.send(faaspb.stop())
    assert pod.proc.wait(10) == 0, pod.stderr()
    wait_until(lambda: not pid_alive(info["pid"]) and not pid_alive(kid), 5, what="the user server's group gone")


def test_image_root_keeps_only_dockers_capabilities_and_dies_with_user_exit(image, pod):
    rootfs, root = image
    pod.specialize(server_run(root, uid=0, gid=0, groups=[], cwd=""))
    ev = pod.event()
    assert ev["type"] == faaspb.EV_READY, (ev, pod.stderr())
    status, body = h2c_get(pod.port, "/info")
    info = json.loads(body)
    assert (info["uid"], info["gid"], info["cwd"]) == (0, 0, "/"), info
    assert int(info["capbnd"], 16) == DOCKER_CAPS, info
    with open(f"/proc/{info['pid']}/status") as f:
        st = f.read()
    assert f"Uid:\t{BASE}\t" in st, st
    os.kill(info["pid"], signal.SIGKILL)
    ev = pod.event()
    assert ev["type"] == faaspb.EV_USER_EXIT and os.WIFSIGNALED(ev["exit_status"]), ev
    # the leader's exit takes its group: the child it forked goes too
    wait_until(lambda: not pid_alive(info["kid"]), 5, what="the orphaned child killed")


@pytest.mark.parametrize("kw,message", [
    ({"exe": "/bin/nope", "argv": ["nope"]}, "exec /bin/nope in the image: No such file or directory"),
    ({"exe": "/etc/imagefile"}, "exec /etc/imagefile in the image: Permission denied"),
    ({"cwd": "/etc/imagefile/sub"}, "WorkingDir /etc/imagefile/sub is not a directory in the image"),
    ({"cwd": "/etc/imagefile"}, "WorkingDir /etc/imagefile is not a directory in the image"),
    ({"uid": 70000, "gid": 70000, "groups": []},
     "cannot switch to the image's user 70000:70000: Invalid argument"),
    ({"root": "/nonexistent-root"}, "cannot pivot into the image (bind its root): No such file or directory"),
])
def test_image_start_failures_say_what_failed(image, pod, kw, message):
    rootfs, root = image
    kw = dict(kw)
    pod.specialize(server_run(kw.pop("root", root), **kw))
    ev = pod.event()
    assert ev["type"] == faaspb.EV_FAILED, (ev, pod.stderr())
    assert ev["message"] == message, ev
    wait_until(lambda: f"cannot start the user server: {message}" in open(pod.log).read(), 5,
               what="the reason in the function's log")
    pod.sock.send(faaspb.stop())
    assert pod.proc.wait(10) == 0, pod.stderr()


def test_image_without_user_namespace_fails(image, pod):
    rootfs, root = image
    pod.specialize(server_run(root), with_userns=False)
    ev = pod.event()
    assert ev == dict(ev, type=faaspb.EV_FAILED, message="no user namespace for the image"), ev
    # not specialized: a SPECIALIZE that brings it is taken
    pod.specialize(server_run(root))
    ev = pod.event()
    assert ev["type"] == faaspb.EV_READY, (ev, pod.stderr())
    pod.sock.send(faaspb.stop())
    assert pod.proc.wait(10) == 0, pod.stderr()
