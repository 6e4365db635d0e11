"""faasctl deploy --image against a real discovery (issue 15): images built with umoci
from busybox-static, an OCI archive of the layout and a `docker save` archive written
here. Blobs are content-addressed, so a second deploy uploads nothing and a second tag
uploads only what it adds. Needs umoci and busybox (deploy/install-deps.sh)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time

import pytest

BUILD = os.path.abspath(os.environ.get("FAAS_BUILD", "/work/main/build"))
CTL = os.path.join(BUILD, "faasctl")
UMOCI = shutil.which("umoci")
BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)

pytestmark = pytest.mark.skipif(UMOCI is None or BUSYBOX is None, reason="needs umoci and busybox")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def disc(tmp_path_factory):
    d = tmp_path_factory.mktemp("disc")
    port = free_port()
    p = subprocess.Popen([os.path.join(BUILD, "faas-discovery"), "--listen", f"127.0.0.1:{port}",
                          "--metrics-listen", "off", "--state-dir", str(d)],
                         stdout=subprocess.DEVNULL, stderr=open(d / "log", "w"))
    token = d / "token"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if token.exists() and token.stat().st_size >= 64:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                pass
        assert p.poll() is None, (d / "log").read_text()
        time.sleep(0.05)
    else:
        pytest.fail("discovery did not start")
    yield {"FAAS_DISCOVERY": f"127.0.0.1:{port}", "FAAS_TOKEN": token.read_text().strip(), "dir": d}
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def ctl(disc, *args, cwd=None, tmpdir=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    e.update({k: v for k, v in disc.items() if k.startswith("FAAS_")})
    if tmpdir is not None:
        e["TMPDIR"] = str(tmpdir)
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=120, env=e, cwd=cwd)


def umoci(*args):
    subprocess.run([UMOCI, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """L:v1 = busybox; L:v2 = v1 plus a layer with /etc/greeting."""
    t = tmp_path_factory.mktemp("img")
    (t / "rootfs/bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, t / "rootfs/bin/busybox")
    (t / "add/etc").mkdir(parents=True)
    (t / "add/etc/greeting").write_text("hello from v2\n")
    L = str(t / "L")
    umoci("init", "--layout", L)
    umoci("new", "--image", f"{L}:v1")
    umoci("insert", "--rootless", "--image", f"{L}:v1", str(t / "rootfs"), "/")
    umoci("config", "--image", f"{L}:v1", "--config.entrypoint", "/bin/busybox",
          "--config.cmd", "httpd", "--config.env", "GREETING=hi", "--config.workingdir", "/tmp")
    umoci("tag", "--image", f"{L}:v1", "v2")
    umoci("insert", "--rootless", "--image", f"{L}:v2", str(t / "add"), "/")
    return t


def index_digest(layout, tag):
    idx = json.loads((layout / "L/index.json").read_text())
    return next(m["digest"] for m in idx["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


def test_layout_deploys_and_a_second_deploy_uploads_nothing(disc, layout):
    p = ctl(disc, "deploy", "img1", "--image", "L:v1", cwd=layout)
    assert p.returncode == 0, p.stderr
    assert "image L:v1: 3 blobs, 3 uploaded (" in p.stdout, p.stdout
    p = ctl(disc, "deploy", "img1", "--image", "L:v1", cwd=layout)
    assert p.returncode == 0, p.stderr
    assert "image L:v1: 3 blobs, 0 uploaded (0 bytes), 3 already stored" in p.stdout, p.stdout
    assert "version 2" in p.stdout
    g = ctl(disc, "get", "img1")
    assert g.returncode == 0, g.stderr
    assert 'image: "L:v1"' in g.stdout
    assert f"# image_manifest: {index_digest(layout, 'v1')}" in g.stdout, g.stdout
    assert "(image L:v1)" in ctl(disc, "list").stdout


def test_second_tag_uploads_only_its_new_blobs(disc, layout):
    ctl(disc, "deploy", "img1", "--image", "L:v1", cwd=layout)
    p = ctl(disc, "deploy", "img2", "--image", "L:v2", cwd=layout)
    assert p.returncode == 0, p.stderr
    # a new manifest, config and layer; the busybox layer is already there
    assert "image L:v2: 4 blobs, 3 uploaded (" in p.stdout, p.stdout
    assert "1 already stored" in p.stdout


def test_manifest_key_and_oci_archive(disc, layout, tmp_path):
    with tarfile.open(tmp_path / "L.tar.gz", "w:gz") as tf:
        tf.add(layout / "L", arcname=".")
    (tmp_path / "function.yaml").write_text(f"name: img3\nimage: {tmp_path}/L.tar.gz:v2\ncommand: [/bin/busybox]\n")
    (tmp_path / "t").mkdir()
    p = ctl(disc, "deploy", "-f", str(tmp_path / "function.yaml"), tmpdir=tmp_path / "t")
    assert p.returncode == 0, p.stderr
    assert "0 uploaded (0 bytes), 4 already stored" in p.stdout, p.stdout
    assert os.listdir(tmp_path / "t") == [], "the extracted archive is left behind"
    g = ctl(disc, "get", "img3")
    assert index_digest(layout, "v2") in g.stdout
    assert "command: [\"/bin/busybox\"]" in g.stdout


def docker_save(layout, out):
    """The legacy docker save form of L:v1: manifest.json, <config hex>.json, <id>/layer.tar."""
    idx = index_digest(layout, "v1")
    blob = lambda d: (layout / "L/blobs/sha256" / d.split(":")[1]).read_bytes()
    man = json.loads(blob(idx))
    layer = gzip.decompress(blob(man["layers"][0]["digest"]))
    cfg = json.loads(blob(man["config"]["digest"]))
    cfg["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(layer).hexdigest()]
    cfg_bytes = json.dumps(cfg).encode()
    cfg_hex = hashlib.sha256(cfg_bytes).hexdigest()
    files = {f"{cfg_hex}.json": cfg_bytes, "abc123/layer.tar": layer, "abc123/VERSION": b"1.0",
             "manifest.json": json.dumps([{"Config": f"{cfg_hex}.json", "RepoTags": ["app:v1"],
                                           "Layers": ["abc123/layer.tar"]}]).encode()}
    with tarfile.open(out, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return hashlib.sha256(layer).hexdigest()


def test_docker_save_archive_converts_with_a_stable_digest(disc, layout, tmp_path):
    layer_hex = docker_save(layout, tmp_path / "app.tar")
    p = ctl(disc, "deploy", "dock", "--image", "app.tar:app:v1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "image app.tar:app:v1: 3 blobs" in p.stdout, p.stdout
    digest = ctl(disc, "get", "dock").stdout.split("# image_manifest: ")[1].split()[0]
    p = ctl(disc, "deploy", "dock", "--image", "app.tar", cwd=tmp_path)
    assert "0 uploaded (0 bytes), 3 already stored" in p.stdout, (p.stdout, p.stderr)
    assert digest in ctl(disc, "get", "dock").stdout
    # what discovery stored is the normalized OCI manifest naming the uncompressed layer
    # by the sha256 of the tar, and that layer byte for byte
    art = disc["dir"] / "artifacts"
    stored = json.loads((art / f"{digest.split(':')[1]}.tar.gz").read_bytes())
    assert stored["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert stored["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert stored["layers"] == [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                 "digest": f"sha256:{layer_hex}", "size": stored["layers"][0]["size"]}]
    assert hashlib.sha256((art / f"{layer_hex}.tar.gz").read_bytes()).hexdigest() == layer_hex


@pytest.mark.parametrize("case,needle", [
    ("truncated", "corrupt or truncated archive"),
    ("digest", "does not match its digest"),
    ("size", "size mismatch"),
    ("noconfig", "image has no config"),
    ("tag", "no image tagged \"v9\" (tags: v1, v2)"),
    ("notag", "no tag to choose one"),
    ("missing", "no such file or directory"),
])
def test_bad_images_fail_at_deploy_with_one_line(disc, layout, tmp_path, case, needle):
    bad = tmp_path / "B"
    shutil.copytree(layout / "L", bad)
    ref = f"{bad}:v1"
    man = json.loads((bad / "blobs/sha256" / index_digest(layout, "v1").split(":")[1]).read_text())
    layer = bad / "blobs/sha256" / man["layers"][0]["digest"].split(":")[1]
    if case == "truncated":
        with tarfile.open(tmp_path / "B.tar", "w") as tf:
            tf.add(bad, arcname=".")
        data = (tmp_path / "B.tar").read_bytes()
        (tmp_path / "B.tar").write_bytes(data[: len(data) // 2])
        ref = f"{tmp_path}/B.tar:v1"
    elif case == "digest":
        data = bytearray(layer.read_bytes())
        data[100] ^= 1
        layer.write_bytes(bytes(data))
    elif case == "size":
        layer.write_bytes(layer.read_bytes() + b"x")
    elif case == "noconfig":
        (bad / "blobs/sha256" / man["config"]["digest"].split(":")[1]).unlink()
    elif case == "tag":
        ref = f"{bad}:v9"
    elif case == "notag":
        ref = str(bad)
    elif case == "missing":
        ref = f"{tmp_path}/nope:v1"
    p = ctl(disc, "deploy", "bad", "--image", ref)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert needle in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert p.stdout == ""
