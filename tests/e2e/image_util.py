"""OCI images for the end-to-end tests of custom images (issue 15), built in the test
from Debian's busybox-static and the static servers of tests/e2e/images/ (built by
make into build/tests/images/), turned into OCI image layouts with umoci, and written
out in the other formats users have: an OCI archive (a tar of a layout) and a
`docker save` archive. Plus the broken variants the platform must refuse.

Nothing here talks to the platform: the tests deploy what this builds."""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid

from platform_util import BUILD

BUSYBOX = "/usr/bin/busybox"
SRV = f"{BUILD}/tests/images/srv"
THRIFT_SRV = f"{BUILD}/tests/images/thrift_srv"
APP_UID = 1000  # user `app` of the images: uid and primary gid
STAFF_GID = 50  # a supplementary group of `app` in the images' /etc/group
# PORT too: the platform's port setting must win over the image's (issue 15)
ENV = ["PATH=/app:/bin", "FOO=from-image", "BAR=from-image", "HOME=/home/app", "PORT=7777"]
# the top-level names of every test image (after the whiteout): what / must list
TOP = {"app", "bin", "data", "dev", "etc", "home", "proc", "tmp"}
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n" \
         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"


def available():
    """None if images can be built here, else why not (for skipif)."""
    for path in (BUSYBOX, SRV, THRIFT_SRV):
        if not os.path.exists(path):
            return f"{path} missing (busybox-static; make builds the servers)"
    if shutil.which("umoci") is None:
        return "umoci not installed"
    return None


def umoci(*args):
    p = subprocess.run(["umoci", *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"umoci {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def stage_base(root, salt):
    """The bottom layer: busybox and its applets, the image's users and groups, a file
    the upper layer whites out (/etc/gone) and one it keeps. salt makes the layer's
    bytes (so its digest) new for each image family built."""
    os.makedirs(f"{root}/bin")
    shutil.copy2(BUSYBOX, f"{root}/bin/busybox")
    for applet in ("sh", "ls", "cat", "id", "echo", "sleep", "true"):
        os.symlink("busybox", f"{root}/bin/{applet}")
    write(f"{root}/etc/passwd", PASSWD)
    write(f"{root}/etc/group", GROUP)
    write(f"{root}/etc/imagefile", "base\n")
    write(f"{root}/etc/gone", "in the lower layer only\n")
    write(f"{root}/etc/kept", "kept\n")
    write(f"{root}/etc/salt", f"{salt}\n")
    for d, owner, mode in (("home/app", APP_UID, 0o755), ("data", APP_UID, 0o755), ("tmp", 0, 0o1777),
                           ("proc", 0, 0o555), ("dev", 0, 0o755)):
        os.makedirs(f"{root}/{d}", exist_ok=True)
        os.chown(f"{root}/{d}", owner, owner)
        os.chmod(f"{root}/{d}", mode)


def stage_app(root, imagefile, salt):
    """Turns an unpacked base rootfs into an app version: the servers, this version's
    /etc/imagefile, and /etc/gone deleted (umoci repack writes it as a whiteout in the
    new layer, as `RUN rm` in a Dockerfile does). salt makes the layer new."""
    os.makedirs(f"{root}/app")
    shutil.copy2(SRV, f"{root}/app/srv")
    shutil.copy2(THRIFT_SRV, f"{root}/app/thrift_srv")
    write(f"{root}/etc/imagefile", f"{imagefile}\n")
    write(f"{root}/etc/appsalt", f"{salt}\n")
    os.unlink(f"{root}/etc/gone")


class Layout:
    """An OCI image layout directory, built and read with umoci and json."""

    def __init__(self, path):
        self.path = str(path)

    def ref(self, tag):
        return f"{self.path}:{tag}"

    def init(self):
        umoci("init", "--layout", self.path)
        return self

    def index(self):
        with open(f"{self.path}/index.json") as f:
            return json.load(f)

    def descriptor(self, tag):
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m
        raise KeyError(f"{tag} not in {self.path}")

    def blob(self, digest):
        return f"{self.path}/blobs/{digest.replace(':', '/')}"

    def manifest_digest(self, tag):
        return self.descriptor(tag)["digest"]

    def manifest(self, tag):
        with open(self.blob(self.manifest_digest(tag))) as f:
            return json.load(f)

    def config(self, tag):
        with open(self.blob(self.manifest(tag)["config"]["digest"])) as f:
            return json.load(f)

    def layers(self, tag):
        return [l["digest"] for l in self.manifest(tag)["layers"]]

    def blobs(self, tag):
        """Every blob of the image: manifest, config, layers."""
        m = self.manifest(tag)
        return [self.manifest_digest(tag), m["config"]["digest"], *self.layers(tag)]

    def tags(self):
        return [m["annotations"]["org.opencontainers.image.ref.name"] for m in self.index()["manifests"]]

    def configure(self, tag, new_tag=None, entrypoint=None, cmd=None, env=None, workdir=None, user=None):
        """umoci config: each list given replaces the image's (umoci's own rule)."""
        args = ["config", "--image", self.ref(tag)] + (["--tag", new_tag] if new_tag else [])
        for flag, vals in (("entrypoint", entrypoint), ("cmd", cmd), ("env", env)):
            for v in vals or ():
                args += [f"--config.{flag}", v]
        if workdir is not None:
            args += ["--config.workingdir", workdir]
        if user is not None:
            args += ["--config.user", user]
        umoci(*args)
        return new_tag or tag


def build_family(workdir, name="img", with_versions=True):
    """A layout at <workdir>/<name> holding one image family:

      base    the busybox layer alone (no config)
      v1      base + app layer (the servers, imagefile "v1", a whiteout of /etc/gone); config:
              Entrypoint [/app/srv], Cmd [--tag, from-cmd], Env ENV, WorkingDir
              /home/app, User app
      v2      base + another app layer (imagefile "v2"), the same config
              (it shares the base layer with v1, nothing else)
      thrift  v1 with Entrypoint [/app/thrift_srv] and no Cmd
      noentry v1 with Entrypoint [/app/not-there]        (a cold-start error)
      nouser  v1 with User ghost                         (a cold-start error)
      numeric v1 with User 1000:50 (ids, not names)
      newwd   v1 with WorkingDir /srv/new/work, which the image lacks (made at start)

    Each layer is new (salted) for every call, so nothing of it is stored yet."""
    L = Layout(os.path.join(str(workdir), name)).init()
    stage = os.path.join(str(workdir), f"{name}.stage")
    shutil.rmtree(stage, ignore_errors=True)
    stage_base(f"{stage}/base", uuid.uuid4().hex)
    umoci("new", "--image", L.ref("base"))
    umoci("insert", "--image", L.ref("base"), f"{stage}/base", "/")
    for tag in ("v1", "v2") if with_versions else ("v1",):
        bundle = f"{stage}/{tag}"
        umoci("unpack", "--image", L.ref("base"), bundle)
        stage_app(f"{bundle}/rootfs", tag, uuid.uuid4().hex)
        umoci("repack", "--image", L.ref(tag), bundle)
        L.configure(tag, entrypoint=["/app/srv"], cmd=["--tag", "from-cmd"], env=ENV, workdir="/home/app",
                    user="app")
    L.configure("v1", new_tag="thrift", entrypoint=["/app/thrift_srv"])
    umoci("config", "--image", L.ref("thrift"), "--clear", "config.cmd")
    L.configure("v1", new_tag="noentry", entrypoint=["/app/not-there"])
    L.configure("v1", new_tag="nouser", user="ghost")
    L.configure("v1", new_tag="numeric", user=f"{APP_UID}:{STAFF_GID}")
    L.configure("v1", new_tag="newwd", workdir="/srv/new/work")
    shutil.rmtree(stage)
    return L


def single(layout, tag, dst):
    """A copy of layout holding tag alone (unreferenced blobs collected): what an OCI
    archive of one image holds."""
    shutil.copytree(layout.path, dst)
    out = Layout(dst)
    idx = out.index()
    idx["manifests"] = [out.descriptor(tag)]
    with open(f"{dst}/index.json", "w") as f:
        json.dump(idx, f)
    umoci("gc", "--layout", dst)
    return out


def tar_dir(src, out):
    """A tar of src's content (names relative to src, as `tar -C src -cf out .`)."""
    with tarfile.open(out, "w") as t:
        for name in sorted(os.listdir(src)):
            t.add(os.path.join(src, name), arcname=name)
    return out


def oci_archive(layout, tag, out):
    """An OCI archive (tar of an image layout) of one image of layout."""
    tmp = f"{out}.layout"
    single(layout, tag, tmp)
    tar_dir(tmp, out)
    shutil.rmtree(tmp)
    return out


def _add_bytes(t, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    t.addfile(info, io.BytesIO(data))


def docker_archive(layout, tag, out, repo_tag="faas-test/img:latest"):
    """A `docker save` archive (the classic format docker writes): manifest.json
    [{Config, RepoTags, Layers}], the config as <sha>.json, each layer uncompressed as
    <id>/layer.tar (its id the sha256 of the tar, whose digest is the config's diff_id),
    and a repositories file."""
    with open(layout.blob(layout.manifest(tag)["config"]["digest"]), "rb") as f:
        config = f.read()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layers = []
    with tarfile.open(out, "w") as t:
        _add_bytes(t, config_name, config)
        for digest in layout.layers(tag):
            with gzip.open(layout.blob(digest), "rb") as f:
                data = f.read()
            lid = hashlib.sha256(data).hexdigest()
            _add_bytes(t, f"{lid}/VERSION", b"1.0")
            _add_bytes(t, f"{lid}/json", json.dumps({"id": lid}).encode())
            _add_bytes(t, f"{lid}/layer.tar", data)
            layers.append(f"{lid}/layer.tar")
        manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layers}]
        _add_bytes(t, "manifest.json", json.dumps(manifest).encode())
        repo, _, rtag = repo_tag.rpartition(":")
        _add_bytes(t, "repositories", json.dumps({repo: {rtag: layers[-1].split("/")[0]}}).encode())
    return out


def docker_archive_v25(layout, tag, out, repo_tag="faas-test/img:latest"):
    """The `docker save` archive of Docker 25 and later: an OCI layout (oci-layout,
    index.json, blobs/sha256/) whose layers are uncompressed tars, plus the classic
    manifest.json naming the same blobs by path."""
    with open(layout.blob(layout.manifest(tag)["config"]["digest"]), "rb") as f:
        config = f.read()
    blobs, layers = {}, []
    for digest in layout.layers(tag):
        with gzip.open(layout.blob(digest), "rb") as f:
            data = f.read()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(data)})
    cdig = "sha256:" + hashlib.sha256(config).hexdigest()
    blobs[cdig] = config
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                                      "size": len(config)},
                           "layers": layers}).encode()
    mdig = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs[mdig] = manifest
    repo, _, rtag = repo_tag.rpartition(":")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig,
                            "size": len(manifest),
                            "annotations": {"io.containerd.image.name": f"docker.io/{repo_tag}",
                                            "org.opencontainers.image.ref.name": rtag}}]}
    path = lambda d: "blobs/" + d.replace(":", "/")  # noqa: E731
    with tarfile.open(out, "w") as t:
        _add_bytes(t, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(t, "index.json", json.dumps(index).encode())
        for d, data in blobs.items():
            _add_bytes(t, path(d), data)
        _add_bytes(t, "manifest.json", json.dumps([{"Config": path(cdig), "RepoTags": [repo_tag],
                                                    "Layers": [path(l["digest"]) for l in layers]}]).encode())
        _add_bytes(t, "repositories", json.dumps({repo: {rtag: layers[-1]["digest"][7:]}}).encode())
    return out


def diff_ids_of_docker_archive(path):
    """(the config's diff_ids, the sha256 of each layer.tar in order): a check that the
    archive written is coherent, as docker load would see it."""
    with tarfile.open(path) as t:
        m = json.load(t.extractfile("manifest.json"))[0]
        cfg = json.load(t.extractfile(m["Config"]))
        shas = ["sha256:" + hashlib.sha256(t.extractfile(l).read()).hexdigest() for l in m["Layers"]]
    return cfg["rootfs"]["diff_ids"], shas


# ---- broken images --------------------------------------------------------------

def truncated(src, out, keep=0.5):
    """The first part of an archive, as an interrupted copy leaves it."""
    with open(src, "rb") as f:
        data = f.read()
    with open(out, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    return out


def flipped_layer(layout, tag, dst):
    """A copy of layout whose top layer of tag has one byte flipped in the middle: the
    blob no longer matches the digest it is stored (and referenced) under."""
    bad = single(layout, tag, dst)
    path = bad.blob(bad.layers(tag)[-1])
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    return bad


def without_config(layout, tag, dst):
    """A copy of layout whose manifest of tag names a config blob that is not there."""
    bad = single(layout, tag, dst)
    os.unlink(bad.blob(bad.manifest(tag)["config"]["digest"]))
    return bad


def layer_names(layout, digest):
    """The entry names of a layer blob (gzip'd tar)."""
    with tarfile.open(layout.blob(digest), "r:gz") as t:
        return t.getnames()


def unpack(layout, tag, bundle):
    """umoci unpack as root (what the worker manager does, without the id shift):
    for checking the images themselves. Returns the rootfs path."""
    umoci("unpack", "--image", layout.ref(tag), bundle)
    return os.path.join(bundle, "rootfs")


PY_SERVER = r'''
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({
            "path": self.path,
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "uid": os.getuid(),
            "cwd": os.getcwd(),
            "greeting": os.environ.get("GREETING"),
            "marker": open("/srv/marker").read(),
            "debian_version": os.path.exists("/etc/debian_version"),
            "dist_packages": os.path.exists("/usr/lib/python3/dist-packages"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
'''

# What of the host's Python a stdlib server needs: the interpreter, its shared
# libraries and the standard library (without the static library and the tools).
PY_SKIP = {"config-3.11-x86_64-linux-gnu", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
           "lib2to3", "pydoc_data", "site-packages", "dist-packages"}


def python_available():
    """None if the host has the Python 3.11 this image copies, else why not."""
    for p in ("/usr/bin/python3.11", "/usr/lib/python3.11/os.py"):
        if not os.path.exists(p):
            return f"{p} missing"
    return None


def build_python_image(workdir, name="py"):
    """A layout <workdir>/<name>:py of a Python stdlib server with no host underneath:
    /usr/bin/python3.11 and the libraries ldd names, /usr/lib/python3.11 (trimmed), the
    server at /srv/app.py and a marker, users root and app (1000). Entrypoint python3,
    Cmd /srv/app.py, User app, WorkingDir /srv, Env GREETING."""
    L = Layout(os.path.join(str(workdir), name)).init()
    root = os.path.join(str(workdir), f"{name}.rootfs")
    shutil.rmtree(root, ignore_errors=True)
    # a merged /usr, as Debian's: /lib, /lib64 and /bin are links into /usr
    copy_with_libs(root, ["/usr/bin/python3.11"])
    os.symlink("python3.11", f"{root}/usr/bin/python3")
    for link in ("lib", "lib64", "bin"):
        os.makedirs(f"{root}/usr/{link}", exist_ok=True)
        os.symlink(f"usr/{link}", f"{root}/{link}")
    stdlib = "/usr/lib/python3.11"
    shutil.copytree(stdlib, f"{root}{stdlib}", symlinks=True,
                    ignore=lambda d, names: [n for n in names if d == stdlib and n in PY_SKIP])
    write(f"{root}/srv/app.py", PY_SERVER)
    write(f"{root}/srv/marker", "python image\n")
    write(f"{root}/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n")
    write(f"{root}/etc/group", "root:x:0:\napp:x:1000:\n")
    umoci("new", "--image", L.ref("py"))
    umoci("insert", "--image", L.ref("py"), root, "/")
    L.configure("py", entrypoint=["/usr/bin/python3"], cmd=["/srv/app.py"], env=["GREETING=from the image"],
                workdir="/srv", user="app")
    shutil.rmtree(root)
    return L


def copy_with_libs(root, files):
    """Copies files (and every shared library ldd names for each) into root, under a
    merged /usr as Debian lays it out."""
    for f in files:
        out = subprocess.run(["ldd", f], capture_output=True, text=True).stdout
        for g in [f] + re.findall(r"(/\S+\.so[.\d]*)", out):
            dst = root + (g if g.startswith("/usr/") else "/usr" + g)
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(os.path.realpath(g), dst)


GRPC_PKG = "/usr/lib/python3/dist-packages/grpc"


def grpc_available():
    """None if the host has Debian's python3-grpcio for a gRPC image, else why not."""
    return python_available() or (None if os.path.isdir(GRPC_PKG) else f"{GRPC_PKG} missing")


def add_grpc_server(L, workdir, server):
    """Tag pygrpc: the py image plus Debian's grpc package, the libraries its extension
    links (libgrpc, abseil, OpenSSL, ...) and server (examples/grpc-echo/server.py) at
    /srv/grpc_server.py, run as Entrypoint python3 /srv/grpc_server.py."""
    root = os.path.join(str(workdir), "pygrpc.rootfs")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(GRPC_PKG, root + GRPC_PKG, symlinks=True)
    copy_with_libs(root, [os.path.join(dp, f) for dp, _, fs in os.walk(GRPC_PKG) for f in fs if f.endswith(".so")])
    os.makedirs(f"{root}/srv", exist_ok=True)
    shutil.copy2(server, f"{root}/srv/grpc_server.py")
    umoci("insert", "--image", L.ref("py"), "--tag", "pygrpc", root, "/")
    L.configure("pygrpc", entrypoint=["/usr/bin/python3", "/srv/grpc_server.py"], cmd=[])
    umoci("config", "--image", L.ref("pygrpc"), "--clear", "config.cmd")
    shutil.rmtree(root)
    return "pygrpc"
