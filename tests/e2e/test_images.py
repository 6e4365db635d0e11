"""Issue 15: functions run from the user's own OCI image. Images are built here from
busybox-static and the static servers of tests/e2e/images/ with umoci (image_util.py),
deployed with faasctl (a layout, an OCI archive, a docker-save archive) onto a real
platform, and asked from inside what they see: the image's files and not the host's,
the image's user, WorkingDir and Env (the manifest's over them), their own writable
layer, confined like any function. Two versions share a layer, stored and uploaded
once, unpacked once per manifest and swept when no version needs them; a whiteout hides
a lower file; a Thrift image answers through the gateway; readiness probes and limits
apply; each broken image gets its error, at deploy or as a failed cold start."""
import glob
import json
import os
import re
import shutil
import struct
import tarfile
import tempfile
import uuid

import pytest

import image_util as iu
from platform_util import BUILD, ROOT, Platform, curl, pids_matching, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
    pytest.mark.skipif(iu.available() is not None, reason=str(iu.available())),
]

# the host id of an image's id 0: the worker manager's default --image-id-base
USERNS_BASE = 1000000000
UPLOAD_RE = re.compile(r"image (\S+): (\d+) blobs, (\d+) uploaded \((\d+) bytes\), (\d+) already stored")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One image family (image_util.build_family) and its archives."""
    d = tmp_path_factory.mktemp("images")
    L = iu.build_family(d)
    return {
        "layout": L,
        "oci": iu.oci_archive(L, "v1", str(d / "v1.oci.tar")),
        "docker": iu.docker_archive(L, "v1", str(d / "v1.docker.tar")),
        "docker25": iu.docker_archive_v25(L, "v1", str(d / "v1.docker25.tar")),
        "dir": d,
    }


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("plat"), pool_size=2, thrift=True, grpc=True)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def deploy(p, name, ref, extra="", check=True):
    """faasctl deploy -f of a manifest with `image:` (no code, no command)."""
    path = os.path.join(p.dir, f"{name}-{uuid.uuid4().hex[:8]}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\nimage: {ref}\n{extra}")
    if "health:" not in extra:
        with open(path, "a") as f:
            f.write("health: {path: /healthz}\n")
    return p.ctl("deploy", "-f", path, check=check)


def upload_line(proc):
    """(n blobs, k uploaded, bytes, already stored) of faasctl's image line."""
    m = UPLOAD_RE.search(proc.stdout + proc.stderr)
    assert m, (proc.stdout, proc.stderr)
    n, k, nbytes, stored = (int(x) for x in m.groups()[1:])
    assert n == k + stored, m.group(0)
    return n, k, nbytes, stored


def info(p, fn):
    code, body, err = curl(p.url(fn, "/info"))
    assert code == 200, (code, body, err, p.logs())
    return json.loads(body)


def get(p, fn, path):
    code, body, err = curl(p.url(fn, path))
    assert code == 200, (code, body, err, p.logs())
    return body


def rootfs_cache(p):
    """The worker manager's unpacked rootfs: one directory per image manifest (next to
    other files it may keep there, such as their sizes)."""
    d = f"{p.dir}/worker/images/rootfs"
    return {n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n))} if os.path.isdir(d) else set()


def host_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return [int(x) for x in line.split()[1:]]
    raise KeyError(key)


def user_server_pid(tag):
    """The host pid of the one user server started with `--tag <tag>`."""
    pids = [pid for pid, cmd in pids_matching(f"--tag {tag}") if cmd.startswith("/app/srv ")]
    assert len(pids) == 1, pids_matching(f"--tag {tag}")
    return pids[0]


def cgroup_file(pid, controller, v1, v2):
    """A limit file of the cgroup pid is in (v1 controller hierarchy, else v2)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [l.rstrip("\n").split(":", 2) for l in f]
    for _, ctrls, path in lines:
        if controller in ctrls.split(","):
            cand = f"/sys/fs/cgroup/{controller}{path}/{v1}"
            if os.path.exists(cand):
                return cand
    for _, ctrls, path in lines:
        if ctrls == "":
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                if os.path.exists(f"{root}{path}/{v2}"):
                    return f"{root}{path}/{v2}"
    raise FileNotFoundError(f"{v1}/{v2} of pid {pid}: {lines}")


def read_int(path):
    with open(path) as f:
        return int(f.read().strip())


def last_error(p, fn):
    out = p.ctl("get", fn).stdout
    lines = [l for l in out.splitlines() if l.startswith("# last-error: ")]
    return lines[0][len("# last-error: "):] if lines else None


def assert_private(p, text):
    """Nothing of the host or the control plane in what a client is told."""
    assert "127.0.0.1" not in text and p.dir not in text and ROOT not in text, text
    assert not re.search(r":\d{4,5}\b", text), text


def has_interp(path):
    """Whether an ELF64 executable names a program interpreter (PT_INTERP): a dynamic one."""
    import struct
    with open(path, "rb") as f:
        elf = f.read()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2, path
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


# ---- the images themselves (no platform) -------------------------------------------

def test_fixture_images_are_what_the_tests_assume(images, tmp_path):
    L = images["layout"]
    base, = L.layers("base")
    assert L.layers("v1")[0] == L.layers("v2")[0] == base
    assert L.layers("v1")[1] != L.layers("v2")[1]
    assert "etc/gone" in iu.layer_names(L, base) and "etc/.wh.gone" in iu.layer_names(L, L.layers("v1")[1])
    cfg = L.config("v1")["config"]
    assert cfg["Entrypoint"] == ["/app/srv"] and cfg["User"] == "app" and cfg["WorkingDir"] == "/home/app"
    root = iu.unpack(L, "v1", str(tmp_path / "bundle"))
    assert sorted(os.listdir(root)) == sorted(iu.TOP)
    assert not os.path.exists(f"{root}/etc/gone") and os.path.exists(f"{root}/etc/kept")
    assert os.stat(f"{root}/data").st_uid == iu.APP_UID
    # the servers need nothing of the host: static, no program interpreter
    for exe in ("app/srv", "app/thrift_srv", "bin/busybox"):
        assert not has_interp(f"{root}/{exe}"), exe
    # the docker-save archive is coherent: each layer.tar is the diff_id the config names
    want, got = iu.diff_ids_of_docker_archive(images["docker"])
    assert want == got and len(got) == 2
    # the OCI archive holds one image, the layout's v1, unchanged
    names = set(tarfile.open(images["oci"]).getnames())
    assert {"oci-layout", "index.json"} <= names
    assert {f"blobs/{d.replace(':', '/')}" for d in L.blobs("v1")} <= names


# ---- running from an image -------------------------------------------------------

@pytest.fixture(scope="module")
def main_fn(plat, images):
    """v1 from the layout, with the manifest's env over the image's."""
    proc = deploy(plat, "imgmain", images["layout"].ref("v1"), "env: {FOO: from-manifest}\n")
    return "imgmain", proc


def test_image_filesystem_not_the_hosts(plat, main_fn):
    fn, _ = main_fn
    i = info(plat, fn)
    ex = i["exists"]
    assert ex["/etc/imagefile"] and i["imagefile"] == "v1\n", i
    assert ex["/bin/busybox"] and ex["/proc/self"] and ex["/dev/null"], i
    # present on this host, absent from the image: the host is not what it sees
    for host_only in ("/etc/debian_version", "/usr/bin/umoci"):
        assert os.path.exists(host_only)
        assert not ex[host_only], (host_only, i)
    top = set(get(plat, fn, "/ls?p=/").split())
    assert {"app", "bin", "etc", "home", "data"} <= top <= iu.TOP, top
    assert get(plat, fn, "/exists?p=" + plat.dir) == "no"
    assert get(plat, fn, "/exists?p=" + ROOT) == "no"


def test_image_user_workdir_env_and_argv(plat, main_fn):
    fn, _ = main_fn
    i = info(plat, fn)
    assert (i["uid"], i["gid"]) == (iu.APP_UID, iu.APP_UID), i
    assert iu.STAFF_GID in i["groups"] and 0 not in i["groups"], i  # from the image's /etc/group
    assert i["cwd"] == "/home/app", i
    env = i["env"]
    assert env["FOO"] == "from-manifest" and env["BAR"] == "from-image", env
    assert env["HOME"] == "/home/app" and env["PATH"] == "/app:/bin", env
    # the platform's port is the one the server listens on, not the image's PORT=7777
    assert env["PORT"].isdigit() and env["PORT"] != "7777", env
    assert i["argv"] == ["/app/srv", "--tag", "from-cmd"], i  # Entrypoint + Cmd


def test_image_user_is_an_unprivileged_host_id(plat, images):
    """On the host the user server is the image's uid shifted into the pod's user
    namespace range: not root, not the host's uid 1000."""
    tag = f"uid-{uuid.uuid4().hex[:8]}"
    deploy(plat, "imguid", images["layout"].ref("v1"), f"command: [/app/srv, --tag, {tag}]\n")
    assert info(plat, "imguid")["argv"] == ["/app/srv", "--tag", tag]  # the manifest's command wins
    pid = user_server_pid(tag)
    assert host_status(pid, "Uid") == [USERNS_BASE + iu.APP_UID] * 4
    assert host_status(pid, "Gid") == [USERNS_BASE + iu.APP_UID] * 4


def test_image_server_is_confined_like_any_function(plat, main_fn):
    """The user server is not root of anything: the seccomp filter, the agent (pid 1 of
    the pod, outside the image and its user namespace) out of its reach."""
    fn, _ = main_fn
    assert get(plat, fn, "/try?what=mount") == "EPERM"
    assert get(plat, fn, "/try?what=setuid0") == "EPERM"
    assert get(plat, fn, "/try?what=kill1") == "EPERM"
    assert get(plat, fn, "/try?what=environ1") == "EACCES"
    # the agent's side of the pod (its mounts under /tmp/.faas) is not in the image's root
    assert get(plat, fn, "/exists?p=/tmp/.faas") == "no"


def test_image_user_binds_a_low_port_in_its_pod(plat, images):
    """Port 80, as an nginx-style image would: the image's user (uid 1000, no capability)
    binds it in the pod's own network namespace (ip_unprivileged_port_start=0 there)."""
    deploy(plat, "imgport80", images["layout"].ref("v1"), "port: 80\n")
    i = info(plat, "imgport80")
    assert i["env"]["PORT"] == "80" and i["uid"] == iu.APP_UID, i


def test_manifest_port_overrides_the_images_port(plat, images):
    deploy(plat, "imgport", images["layout"].ref("v1"), "port: 9123\n")
    assert info(plat, "imgport")["env"]["PORT"] == "9123"


def test_numeric_user_from_the_cli(plat, images):
    ref = images["layout"].ref("numeric")
    plat.ctl("deploy", "imgnum", "--image", ref, "--health", "/healthz", "--env", "FOO=cli")
    i = info(plat, "imgnum")
    assert (i["uid"], i["gid"]) == (iu.APP_UID, iu.STAFF_GID), i
    assert i["env"]["FOO"] == "cli" and i["cwd"] == "/home/app", i


def test_a_workingdir_the_image_lacks_is_made(plat, images):
    """Docker's rule: a missing WorkingDir is created (owned by the image's root), in the
    pod's own layer; the image user then runs in it."""
    deploy(plat, "imgnewwd", images["layout"].ref("newwd"))
    i = info(plat, "imgnewwd")
    assert i["cwd"] == "/srv/new/work" and i["uid"] == iu.APP_UID, i


def test_whiteout_in_an_upper_layer_hides_the_lower_file(plat, main_fn):
    fn, _ = main_fn
    i = info(plat, fn)
    assert not i["exists"]["/etc/gone"] and i["exists"]["/etc/kept"], i
    assert get(plat, fn, "/exists?p=/etc/gone") == "no"
    assert ".wh.gone" not in get(plat, fn, "/ls?p=/etc").split()


def test_writes_land_in_the_pods_own_layer(plat, images):
    ref = images["layout"].ref("v1")
    deploy(plat, "imgw1", ref)
    deploy(plat, "imgw2", ref)
    assert info(plat, "imgw2")["data_written"] is None
    w = json.loads(get(plat, "imgw1", "/write"))
    # the image's user owns /data; / is root's in the image: no write there
    assert w == {"tmp": "OK", "root": "EACCES", "data": "OK"}, w
    mine = info(plat, "imgw1")
    assert mine["data_written"] and mine["data_written"].startswith("pid ") and mine["exists"]["/tmp/x"], mine
    # a second pod of the same image (the same cached rootfs) sees none of it
    other = info(plat, "imgw2")
    assert other["data_written"] is None and not other["exists"]["/tmp/x"], other
    # and the shared cache is untouched
    assert not glob.glob(f"{plat.dir}/worker/images/rootfs/*/data/written")
    assert not glob.glob(f"{plat.dir}/worker/images/rootfs/*/rootfs/data/written")


def test_oci_archive_and_docker_save_archives(plat, images):
    L = images["layout"]
    deploy(plat, "imgsrc", L.ref("v1"))
    # the same image as an OCI archive: every blob is stored already
    n, k, nbytes, stored = upload_line(deploy(plat, "imgoci", images["oci"]))
    assert k == 0 and nbytes == 0 and stored == n, (n, k, nbytes, stored)
    # docker save writes layers uncompressed: new blobs (and a manifest faasctl writes),
    # but the config is the same one
    n, k, nbytes, stored = upload_line(deploy(plat, "imgdocker", images["docker"]))
    assert (n, k, stored) == (4, 3, 1), (n, k, nbytes, stored)
    # Docker 25's form holds the same layers and config: at most its manifest is new
    n, k, nbytes, stored = upload_line(deploy(plat, "imgdocker25", images["docker25"]))
    assert n >= 4 and k <= 1 and stored >= n - 1, (n, k, nbytes, stored)
    for fn in ("imgoci", "imgdocker", "imgdocker25"):
        i = info(plat, fn)
        assert i["imagefile"] == "v1\n" and (i["uid"], i["gid"]) == (iu.APP_UID, iu.APP_UID), (fn, i)
        assert not i["exists"]["/etc/gone"] and not i["exists"]["/etc/debian_version"], (fn, i)
        assert i["argv"] == ["/app/srv", "--tag", "from-cmd"] and i["env"]["FOO"] == "from-image", (fn, i)
    # an archive's one image can be named by its tag too
    n, k, _, stored = upload_line(deploy(plat, "imgoci", images["oci"] + ":v1"))
    assert k == 0


def test_versions_share_layers_uploaded_and_unpacked_once(plat, tmp_path):
    F = iu.build_family(tmp_path, "fam")  # new layers: nothing of them is stored yet
    before = rootfs_cache(plat)
    n1, k1, b1, s1 = upload_line(deploy(plat, "imgver", F.ref("v1")))
    assert s1 == 0 and k1 == n1 >= 3, (n1, k1, s1)
    assert info(plat, "imgver")["imagefile"] == "v1\n"
    after1 = rootfs_cache(plat)
    assert after1 - before == {F.manifest_digest("v1").split(":")[1]}, (before, after1)

    # v2 shares the base layer with v1: that one is not uploaded again
    n2, k2, b2, s2 = upload_line(deploy(plat, "imgver", F.ref("v2")))
    shared = set(F.blobs("v1")) & set(F.blobs("v2"))
    assert shared == {F.layers("v1")[0]}
    assert s2 == 1 and k2 == n2 - 1, (n2, k2, s2)
    new = [d for d in F.blobs("v2") if d not in shared]
    sizes = {d: os.path.getsize(F.blob(d)) for d in new}
    man = F.manifest_digest("v2")
    assert b2 in (sum(sizes.values()), sum(sizes.values()) - sizes[man]), (b2, sizes)
    # stored once in discovery's content-addressed store
    base_hex = F.layers("v1")[0].split(":")[1]
    stored = [f for f in glob.glob(f"{plat.dir}/discovery/**", recursive=True)
              if os.path.isfile(f) and base_hex in os.path.basename(f)]
    assert len(stored) == 1, stored
    wait_until(lambda: info(plat, "imgver")["imagefile"] == "v2\n", 15, interval=0.1, what="version 2 answers")
    after2 = rootfs_cache(plat)
    # v2 adds its own rootfs (v1's may go once no version needs it: not asserted here)
    assert after2 - after1 == {F.manifest_digest("v2").split(":")[1]}, (after1, after2)

    # another function of the same image: the same cached rootfs, nothing uploaded
    n3, k3, _, s3 = upload_line(deploy(plat, "imgver2", F.ref("v2")))
    assert k3 == 0 and s3 == n3
    assert info(plat, "imgver2")["imagefile"] == "v2\n"
    assert not rootfs_cache(plat) - after2


def test_unneeded_rootfs_are_removed_and_needed_ones_kept(plat, images, main_fn, tmp_path):
    """A rootfs no current version needs and no pod runs goes at the worker's next
    sweep (every 30 s); one a deployed function needs stays."""
    F = iu.build_family(tmp_path, "gc")
    hexes = [F.manifest_digest(t).split(":")[1] for t in ("v1", "v2")]
    for tag in ("v1", "v2"):
        deploy(plat, "imggc", F.ref(tag), "idle_timeout: 1s\n")
        wait_until(lambda: info(plat, "imggc")["imagefile"] == f"{tag}\n", 15, interval=0.1, what=tag)
    assert set(hexes) <= rootfs_cache(plat)
    unpacks = plat.wm_metric("faas_wm_image_unpacks_total")
    assert unpacks >= 2 and plat.wm_metric("faas_wm_image_cache_bytes") > 0, unpacks
    removed = plat.wm_metric("faas_wm_image_removed_total")
    info(plat, main_fn[0])  # v1 of the layout: deployed and current, so needed
    keep = images["layout"].manifest_digest("v1").split(":")[1]
    plat.ctl("delete", "imggc")
    gone = lambda: not set(hexes) & rootfs_cache(plat)  # noqa: E731
    wait_until(gone, 75, interval=0.5, what="the unneeded rootfs removed")
    assert keep in rootfs_cache(plat)
    with open(plat.wm.log_path, errors="replace") as f:
        log = f.read()
    for h in hexes:
        assert re.search(rf"event=image_removed manifest={h} .*reason=unused", log), h
    assert plat.wm_metric("faas_wm_image_removed_total") >= removed + 2
    assert not [n for n in os.listdir(f"{plat.dir}/worker/images/rootfs") if n.split(".")[0] in hexes]


def test_hostile_image_files_neither_hang_nor_reach_the_cache(plat, images, tmp_path):
    """An image with FIFOs where the pod's resolver files are bound (a blocking open in the
    root helper would hold every pod of the worker), a set-uid file and a file capability
    (on the host's disk, the cache must hold neither): it starts, and the cache is tame."""
    L = images["layout"]
    stage = tmp_path / "hostile"
    (stage / "etc").mkdir(parents=True)
    (stage / "app").mkdir()
    os.mkfifo(stage / "etc" / "hosts")
    os.mkfifo(stage / "etc" / "resolv.conf")
    suid = stage / "app" / "suid"
    suid.write_bytes(b"#!/bin/sh\n")
    os.chmod(suid, 0o4755)
    cap = stage / "app" / "capfile"
    cap.write_bytes(b"x")
    # vfs_cap_data v2: cap_sys_admin (21) permitted and effective
    os.setxattr(cap, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 21, 0, 0, 0))
    tag = "hostile"
    iu.umoci("insert", "--image", L.ref("v1"), "--tag", tag, str(stage), "/")
    deploy(plat, "imghostile", L.ref(tag))
    i = info(plat, "imghostile")
    assert i["ready"], i
    hexes = [h for h in os.listdir(f"{plat.dir}/worker/images/rootfs") if h == L.manifest_digest(tag).split(":")[1]]
    assert len(hexes) == 1, hexes
    root = f"{plat.dir}/worker/images/rootfs/{hexes[0]}"
    st = os.stat(f"{root}/app/suid")
    assert not st.st_mode & 0o6000, oct(st.st_mode)
    assert "security.capability" not in os.listxattr(f"{root}/app/capfile"), os.listxattr(f"{root}/app/capfile")
    assert os.stat(f"{plat.dir}/worker/images").st_mode & 0o077 == 0


@pytest.mark.skipif(iu.python_available() is not None, reason=str(iu.python_available()))
def test_python_server_runs_on_the_images_own_interpreter(plat, tmp_path):
    """A stdlib Python server whose interpreter, libraries and standard library are the
    image's (the host's Debian userland is not underneath: no /etc/debian_version, no
    dist-packages), as the image's user, with its Env and WorkingDir."""
    L = iu.build_python_image(tmp_path)
    n, k, nbytes, stored = upload_line(deploy(plat, "imgpy", L.ref("py"), "cold_start_timeout: 30s\n"
                                              "health: {tcp: true}\n"))
    assert k == n and nbytes > 5 << 20, (n, k, nbytes)  # a 40 MiB rootfs, gzip'd
    code, body, err = curl(plat.url("imgpy", "/hi"))
    assert code == 200, (code, body, err, plat.logs())
    i = json.loads(body)
    assert i["path"] == "/hi" and i["python"].startswith("3.11"), i
    assert i["executable"] == "/usr/bin/python3" and i["marker"] == "python image\n", i
    assert (i["uid"], i["cwd"], i["greeting"]) == (1000, "/srv", "from the image"), i
    assert not i["debian_version"] and not i["dist_packages"], i


@pytest.mark.skipif(iu.grpc_available() is not None, reason=str(iu.grpc_available()))
def test_grpc_server_in_an_image(plat, tmp_path):
    """examples/grpc-echo, unmodified, on the image's Python with Debian's grpcio and the
    libraries it links copied into the image (none from the host): called through the
    gateway's gRPC port by a python3-grpcio client, streams included."""
    import grpc
    L = iu.build_python_image(tmp_path)
    tag = iu.add_grpc_server(L, tmp_path, f"{ROOT}/examples/grpc-echo/server.py")
    deploy(plat, "imggrpc", L.ref(tag), "protocol: grpc\ngrpc_services: [echo.Echo]\n"
           "health: {grpc: true}\ncold_start_timeout: 30s\n")
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        assert ch.unary_unary("/echo.Echo/Unary")(b"from an image", timeout=30) == b"from an image"
        out = list(ch.unary_stream("/echo.Echo/ServerStream")(b"3:10", timeout=30))
        assert [len(m) for m in out] == [10, 10, 10], out


# ---- Thrift ----------------------------------------------------------------------

def thrift_call(port, fn, name, arg=None):
    """One THeader call (binary protocol) routed by the faas-function header; returns
    the string result or raises TApplicationException."""
    from thrift.protocol.THeaderProtocol import THeaderProtocol
    from thrift.Thrift import TApplicationException, TMessageType, TType
    from thrift.transport import TSocket
    from thrift.transport.THeaderTransport import THeaderClientType

    s = TSocket.TSocket("127.0.0.1", port)
    s.setTimeout(30000)
    s.open()
    try:
        p = THeaderProtocol(s, (THeaderClientType.HEADERS,), default_protocol=0)
        p.set_header(b"faas-function", fn.encode())
        p.writeMessageBegin(name, TMessageType.CALL, 41)
        p.writeStructBegin("args")
        if arg is not None:
            p.writeFieldBegin("s", TType.STRING, 1)
            p.writeString(arg)
            p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeMessageEnd()
        p.trans.flush()
        rname, mtype, seqid = p.readMessageBegin()
        assert seqid == 41 and rname == name
        if mtype == TMessageType.EXCEPTION:
            x = TApplicationException()
            x.read(p)
            p.readMessageEnd()
            raise x
        p.readStructBegin()
        out = None
        while True:
            _, ftype, fid = p.readFieldBegin()
            if ftype == TType.STOP:
                break
            assert (fid, ftype) == (0, TType.STRING)
            out = p.readString()
            p.readFieldEnd()
        p.readStructEnd()
        p.readMessageEnd()
        return out
    finally:
        s.close()


def test_thrift_image_through_the_gateway(plat, images):
    from thrift.Thrift import TApplicationException

    deploy(plat, "imgthrift", images["layout"].ref("thrift"),
           "protocol: thrift\nthrift_services: [ImgEcho]\nthrift_transport: framed\nhealth: {tcp: true}\n")
    assert thrift_call(plat.thrift_port, "imgthrift", "echo", "from a client") == "from a client"
    assert thrift_call(plat.thrift_port, "imgthrift", "whoami") == f"uid={iu.APP_UID} gid={iu.APP_UID} imagefile=v1"
    with pytest.raises(TApplicationException) as ei:
        thrift_call(plat.thrift_port, "imgthrift", "nope", "x")
    assert ei.value.type == TApplicationException.UNKNOWN_METHOD  # the user server's own


# ---- readiness and limits --------------------------------------------------------

def test_readiness_probe_and_resource_limits_apply(plat, images):
    tag = f"lim-{uuid.uuid4().hex[:8]}"
    deploy(plat, "imglim", images["layout"].ref("v1"),
           f"command: [/app/srv, --tag, {tag}]\nenv: {{SRV_READY_AFTER_MS: '300'}}\n"
           "resources: {memory: 48Mi, pids: 77}\nhealth: {path: /healthz}\n")
    # the first call waits for the probe: the server already says it is ready
    assert info(plat, "imglim")["ready"] is True
    pid = user_server_pid(tag)
    assert read_int(cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")) == 48 << 20
    assert read_int(cgroup_file(pid, "pids", "pids.max", "pids.max")) == 77


def test_failing_readiness_probe_fails_the_cold_start(plat, images):
    deploy(plat, "imgnotready", images["layout"].ref("v1"),
           "health: {path: /not-a-route}\ncold_start_timeout: 2s\n")
    code, body, _ = curl(plat.url("imgnotready", "/info"))
    # a probe that never passes: the cold start's bound ends it (DESIGN.md section 3)
    assert code == 503 and re.match(r"function imgnotready: cold start (failed|timed out)", body), (code, body)


# ---- broken images ---------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(images):
    d, L = images["dir"], images["layout"]
    garbage = str(d / "garbage.tar")
    with open(garbage, "wb") as f:
        f.write(os.urandom(40000))
    return {
        "truncated-oci": iu.truncated(images["oci"], str(d / "trunc.oci.tar")),
        "truncated-docker": iu.truncated(images["docker"], str(d / "trunc.docker.tar"), keep=0.7),
        "garbage": garbage,
        "flipped": iu.flipped_layer(L, "v1", str(d / "flipped")).ref("v1"),
        "noconfig": iu.without_config(L, "v1", str(d / "noconfig")).ref("v1"),
        "notag": L.ref("no-such-tag"),
    }


@pytest.mark.parametrize("case,needle", [
    ("truncated-oci", r"truncated|corrupt|unexpected end|short"),
    ("truncated-docker", r"truncated|corrupt|unexpected end|short"),
    ("garbage", r"corrupt|not an? (OCI|image|tar)|invalid|unknown format"),
    ("flipped", r"does not match its digest"),
    ("noconfig", r"has no config"),
    ("notag", r"no-such-tag"),
])
def test_broken_image_is_refused_at_deploy(plat, broken, case, needle):
    fn = f"bad-{case}"
    p = deploy(plat, fn, broken[case], check=False)
    assert p.returncode != 0, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(needle, lines[0], re.I), p.stderr
    assert plat.ctl("get", fn, check=False).returncode != 0  # nothing was deployed


@pytest.mark.parametrize("tag,needles", [
    ("noentry", ["/app/not-there", "is not in image"]),
    ("nouser", ["ghost", "is not defined in image"]),
])
def test_image_that_cannot_start_is_a_failed_cold_start(plat, images, tag, needles):
    fn = f"img{tag}"
    deploy(plat, fn, images["layout"].ref(tag))
    code, body, _ = curl(plat.url(fn, "/info"))
    assert code == 503, (code, body, plat.logs())
    assert body.startswith(f"function {fn}: cold start failed: ") and body.endswith("\n"), body
    for n in needles:
        assert n in body, (n, body)
    assert_private(plat, body)
    err = wait_until(lambda: last_error(plat, fn), 10, what="last-error in faasctl get")
    for n in needles:
        assert n in err, (n, err)
    assert_private(plat, err)
    logs = plat.ctl("logs", fn).stdout
    assert f'stream=platform msg="cold start failed: ' in logs and needles[1] in logs, logs
    # nothing is left half-started: the next call fails the same way
    assert curl(plat.url(fn, "/info"))[:2] == (503, body)


def test_deploy_needs_no_code_dir_nor_command(plat, images):
    """An image function's manifest holds neither; faasctl get shows the image."""
    deploy(plat, "imgbare", images["layout"].ref("v1"))
    out = plat.ctl("get", "imgbare").stdout
    assert images["layout"].ref("v1") in out, out
    assert info(plat, "imgbare")["imagefile"] == "v1\n"


def test_an_image_that_would_fill_the_disk_is_stopped_and_cleaned_up(tmp_path):
    """A 'gzip bomb': 200 MiB of zeros, 1.6 MiB uploaded, unpacked by a worker whose state
    dir is a 96 MiB tmpfs. The unpack is stopped (the worker kills umoci when the disk
    runs low, or umoci meets ENOSPC first), the cold start fails with the reason, the
    partial rootfs is removed at once, and the worker goes on serving."""
    import subprocess
    wdir = tmp_path / "plat" / "worker"
    wdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(wdir)], check=True)
    p = short = None
    try:
        st = tmp_path / "stage"
        (st / "bin").mkdir(parents=True)
        subprocess.run(["cp", "/bin/busybox", str(st / "bin" / "busybox")], check=True)
        with open(st / "zeros", "wb") as f:
            for _ in range(200):
                f.write(bytes(1 << 20))
        # a short path: the image's ref is part of the one-line reason checked below
        short = tempfile.mkdtemp(prefix="bomb", dir="/tmp")
        L = iu.Layout(os.path.join(short, "L")).init()
        iu.umoci("new", "--image", L.ref("bomb"))
        iu.umoci("insert", "--image", L.ref("bomb"), str(st), "/")
        L.configure("bomb", entrypoint=["/bin/busybox", "sleep", "100"])
        os.unlink(st / "zeros")
        p = Platform(tmp_path / "plat", pool_size=1)
        p.start()
        deploy(p, "imgbomb", L.ref("bomb"), "health: {tcp: true}\ncold_start_timeout: 30s\n")
        code, body, _ = curl(p.url("imgbomb", "/"))
        assert code == 503 and "unpacking image" in body, (code, body)
        assert "disk is almost full" in body or "no space" in body.lower(), body
        used = lambda: os.statvfs(wdir).f_blocks - os.statvfs(wdir).f_bfree  # noqa: E731
        wait_until(lambda: used() * os.statvfs(wdir).f_frsize < 8 << 20, 10, interval=0.1,
                   what="the partial rootfs removed")
        F = iu.build_family(tmp_path / "ok", with_versions=False)
        deploy(p, "imgafter", F.ref("v1"))
        assert info(p, "imgafter")["exists"]["/etc/imagefile"]
    finally:
        if p:
            p.stop()
        subprocess.run(["umount", "-l", str(wdir)])
        if short:
            shutil.rmtree(short, ignore_errors=True)
