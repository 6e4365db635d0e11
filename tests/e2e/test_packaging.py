"""Packaging (issue 16): the systemd units, the Kubernetes manifests and `make install`.

The manifests and units are parsed, not applied (no cluster, no systemd as pid 1
here), so every check a typo would slip past is made here: kinds and apiVersions,
selectors against template labels, Service targetPorts against containerPorts,
volumeMounts against volumes, Secrets and ConfigMaps against their references, and
every --flag given to a daemon (manifest command/args, unit ExecStart, the env file
and drop-ins it reads) against that daemon's own --help. Then `make install` into a
DESTDIR, the installed tree, and `make uninstall`."""
import filecmp
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.request

import pytest
import yaml

from platform_util import BUILD, ROOT, Platform, wait_until

K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
UNIT_DIR = os.path.join(ROOT, "deploy", "systemd")
ENV_FILE = os.path.join(UNIT_DIR, "faas.env")
DROPIN_DIR = os.path.join(UNIT_DIR, "tls")

FAAS_BINS = ("faas-discovery", "faas-workermgr", "faas-gateway", "faasctl", "faasd", "faas-agent")
# The other programs a manifest may run, and where their --help is found here.
OTHER_BINS = {"etcd": shutil.which("etcd") or "/usr/bin/etcd"}

KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"),
    ("apps/v1", "Deployment"), ("apps/v1", "DaemonSet"), ("apps/v1", "StatefulSet"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
# core/v1 PodSpec and Container fields: a misspelt one is refused by the API server's
# strict field validation, so it is refused here first.
POD_SPEC_FIELDS = {
    "containers", "initContainers", "ephemeralContainers", "volumes", "restartPolicy",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "dnsConfig", "nodeSelector",
    "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
    "hostPID", "hostIPC", "hostUsers", "shareProcessNamespace", "securityContext", "imagePullSecrets",
    "hostname", "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
    "priority", "readinessGates", "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
    "topologySpreadConstraints", "setHostnameAsFQDN", "os", "schedulingGates", "resourceClaims",
}
CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "workingDir", "ports", "env", "envFrom",
    "resources", "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
    "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath", "terminationMessagePolicy",
    "securityContext", "stdin", "stdinOnce", "tty",
}
FLAG_RE = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


# ---- --help of each daemon ------------------------------------------------------

_help_cache = {}


def help_flags(prog):
    """The --flags a program lists in its --help (what it accepts)."""
    if prog not in _help_cache:
        path = OTHER_BINS.get(prog) or os.path.join(BUILD, prog)
        assert os.access(path, os.X_OK), f"{path} missing: build first (make -j2)"
        r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
        text = r.stdout + r.stderr
        flags = set(FLAG_RE.findall(text))
        assert len(flags) > 2, f"{prog} --help lists no flags:\n{text}"
        _help_cache[prog] = flags
    return _help_cache[prog]


def check_flags(uses):
    """uses: (prog, flag, where). The uses a program does not list, as sentences."""
    bad = []
    for prog, flag, where in uses:
        if flag not in help_flags(prog):
            bad.append(f"{where}: {prog} has no flag {flag} (not in its --help)")
    return bad


# ---- manifests ------------------------------------------------------------------


class LineStr(str):
    """A YAML string that remembers its 1-based line, for error messages."""
    line = 0


class LineLoader(yaml.SafeLoader):
    pass


def _construct_str(loader, node):
    s = LineStr(loader.construct_scalar(node))
    s.line = node.start_mark.line + 1
    return s


LineLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def manifest_files(d=K8S_DIR):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))


def load_docs(files):
    """(file, doc) for every document; safe_load_all for the structure, then the
    same text again with line numbers on strings (they compare equal)."""
    out = []
    for f in files:
        with open(f) as fh:
            text = fh.read()
        plain = [d for d in yaml.safe_load_all(text) if d is not None]
        lined = [d for d in yaml.load_all(text, Loader=LineLoader) if d is not None]
        assert plain == lined
        out += [(f, d) for d in lined]
    return out


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def containers(doc):
    spec = pod_spec(doc)
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def where(f, s):
    return f"{os.path.relpath(f, ROOT)}:{getattr(s, 'line', '?')}"


def program_of(tok):
    base = os.path.basename(str(tok))
    return base if base in FAAS_BINS or base in OTHER_BINS else None


def argv_flag_uses(f, argv):
    """(prog, flag, where) for a container's command + args. A `sh -c SCRIPT PROG ARGS`
    wrapper counts as PROG: the flags in SCRIPT and in ARGS are PROG's."""
    uses = []
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        script, rest = argv[2], argv[3:]
        prog = program_of(rest[0]) if rest else None
        if prog is None:
            named = [p for p in map(program_of, re.findall(r"[\w./-]+", script)) if p]
            prog = named[0] if named else None
        assert prog, f"{where(f, script)}: a shell wrapper that runs no known program"
        uses += [(prog, fl, where(f, script)) for fl in FLAG_RE.findall(script)]
        argv = rest if rest and program_of(rest[0]) else [prog] + rest
    prog = program_of(argv[0]) if argv else None
    assert prog, f"{where(f, argv[0] if argv else '')}: runs no known program ({argv[:1]})"
    for a in argv[1:]:
        if str(a).startswith("--"):
            uses.append((prog, str(a).split("=", 1)[0], where(f, a)))
    return uses


def manifest_problems(files):
    """Every structural problem and unknown flag in the manifests, as sentences."""
    docs = load_docs(files)
    bad, uses = [], []
    defined = {}  # (kind, namespace, name) -> doc
    for f, d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key not in KNOWN_KINDS:
            bad.append(f"{where(f, d.get('kind'))}: unknown apiVersion/kind {key}")
            continue
        if d["kind"] == "Kustomization":
            continue
        md = d.get("metadata") or {}
        if not md.get("name"):
            bad.append(f"{where(f, d['kind'])}: {d['kind']} without metadata.name")
            continue
        defined[(d["kind"], md.get("namespace"), md["name"])] = d
    for f, d in docs:
        kind = d.get("kind")
        if kind == "Kustomization":
            bad += kustomization_problems(f, d, files)
        elif kind in WORKLOADS:
            b, u = workload_problems(f, d, defined)
            bad += b
            uses += u
        elif kind == "Service":
            bad += service_problems(f, d, docs)
    return bad + check_flags(uses)


def kustomization_problems(f, d, files):
    bad = []
    listed = set(d.get("resources") or [])
    here = {os.path.basename(x) for x in files if os.path.dirname(x) == os.path.dirname(f)}
    for r in listed:
        if r not in here:
            bad.append(f"{where(f, r)}: resource {r} does not exist")
    for x in here - listed - {os.path.basename(f)}:
        bad.append(f"{os.path.relpath(f, ROOT)}: {x} is not in resources")
    return bad


def workload_problems(f, d, defined):
    bad, uses = [], []
    ns = d["metadata"].get("namespace")
    sel = (d["spec"].get("selector") or {}).get("matchLabels") or {}
    labels = d["spec"]["template"]["metadata"].get("labels") or {}
    if not sel:
        bad.append(f"{where(f, d['metadata']['name'])}: {d['kind']} without selector.matchLabels")
    for k, v in sel.items():
        if labels.get(k) != v:
            bad.append(f"{where(f, k)}: selector {k}={v} does not match the template's labels")
    if d["kind"] == "StatefulSet":
        svc = defined.get(("Service", ns, d["spec"].get("serviceName")))
        if svc is None or svc["spec"].get("clusterIP") != "None":
            bad.append(f"{where(f, d['spec'].get('serviceName'))}: serviceName is not a headless Service")
    spec = pod_spec(d)
    bad += [f"{where(f, k)}: no PodSpec field {k}" for k in spec if k not in POD_SPEC_FIELDS]
    bad += [f"{where(f, k)}: no Container field {k}" for c in containers(d) for k in c if k not in CONTAINER_FIELDS]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    volumes.update({c["metadata"]["name"]: c for c in d["spec"].get("volumeClaimTemplates") or []})
    for v in (spec.get("volumes") or []):
        for kind, ref, keyf in (("Secret", v.get("secret"), "secretName"), ("ConfigMap", v.get("configMap"), "name")):
            if ref is not None and (kind, ns, ref.get(keyf)) not in defined:
                bad.append(f"{where(f, ref.get(keyf))}: {kind} {ref.get(keyf)} is not defined")
    for c in containers(d):
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                bad.append(f"{where(f, m['name'])}: volumeMount {m['name']} names no volume")
        bad += env_problems(f, c, ns, defined)
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if not c.get("command"):
            bad.append(f"{where(f, c['name'])}: container {c['name']} relies on the image's entrypoint")
            continue
        uses += argv_flag_uses(f, argv)
    return bad, uses


def env_problems(f, c, ns, defined):
    """secretKeyRef/configMapKeyRef name a defined object and key; every $(VAR) in
    command/args is one of the container's env vars (Kubernetes leaves the others
    as written, which no daemon would take for an address; $$( is the escape)."""
    bad, names = [], set()
    for e in c.get("env") or []:
        names.add(e["name"])
        vf = e.get("valueFrom") or {}
        for kind, ref, field in (("Secret", vf.get("secretKeyRef"), "stringData"),
                                 ("ConfigMap", vf.get("configMapKeyRef"), "data")):
            if ref is None:
                continue
            obj = defined.get((kind, ns, ref["name"]))
            if obj is None:
                bad.append(f"{where(f, ref['name'])}: {kind} {ref['name']} is not defined")
            elif ref["key"] not in (obj.get(field) or {}) and ref["key"] not in (obj.get("data") or {}):
                bad.append(f"{where(f, ref['key'])}: {kind} {ref['name']} has no key {ref['key']}")
    for ef in c.get("envFrom") or []:
        for kind, ref in (("Secret", ef.get("secretRef")), ("ConfigMap", ef.get("configMapRef"))):
            if ref is not None and (kind, ns, ref["name"]) not in defined:
                bad.append(f"{where(f, ref['name'])}: {kind} {ref['name']} is not defined")
    for a in list(c.get("command") or []) + list(c.get("args") or []):
        for v in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(a)):
            if v not in names:
                bad.append(f"{where(f, a)}: $({v}) is not an env var of container {c['name']}")
    return bad


def service_problems(f, d, docs):
    bad = []
    ns = d["metadata"].get("namespace")
    sel = d["spec"].get("selector") or {}
    pods = [(pf, w) for pf, w in docs if w.get("kind") in WORKLOADS and w["metadata"].get("namespace") == ns
            and all((w["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())]
    if not sel or not pods:
        return [f"{where(f, d['metadata']['name'])}: Service {d['metadata']['name']} selects no workload"]
    cports = [p for _, w in pods for c in containers(w) for p in c.get("ports") or []]
    for p in d["spec"].get("ports") or []:
        t = p.get("targetPort", p.get("port"))
        if not any(cp.get("name") == t or cp.get("containerPort") == t for cp in cports):
            bad.append(f"{where(f, p.get('name'))}: targetPort {t} is no containerPort of the selected pods")
    return bad


# ---- systemd units ----------------------------------------------------------------


def parse_unit(path):
    """{section: [(key, value, line)]}; continuation lines joined as systemd does."""
    sections, cur, pending, start = {}, None, "", 0
    with open(path) as fh:
        for i, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith(("#", ";"))):
                continue
            if not pending:
                start = i
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if line.startswith("[") and line.endswith("]"):
                cur = line[1:-1]
                sections.setdefault(cur, [])
                continue
            assert cur and "=" in line, f"{path}:{start}: not KEY=VALUE in a section"
            k, v = line.split("=", 1)
            sections[cur].append((k.strip(), v.strip(), start))
    return sections


def env_assignments(path):
    """(name, value, line) of an EnvironmentFile, commented examples included (an
    operator uncomments them, so their flags must be right too)."""
    out = []
    with open(path) as fh:
        for i, raw in enumerate(fh, 1):
            m = re.match(r"^\s*#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", raw.rstrip("\n"))
            if m:
                words = shlex.split(m.group(2))
                out.append((m.group(1), " ".join(words), i))
    return out


def environment_lines(sections):
    """(name, value, line) from Environment= lines (each may hold several, quoted)."""
    out = []
    for k, v, line in sections.get("Service", []):
        if k == "Environment":
            for a in shlex.split(v):
                name, _, val = a.partition("=")
                out.append((name, val, line))
    return out


def unit_files(d=UNIT_DIR):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".service", ".service.in")))


def unit_name(path):
    return os.path.basename(path).removesuffix(".in")


def unit_problems(paths, env_file=ENV_FILE, dropin_dir=DROPIN_DIR):
    """Structural problems and unknown flags of units, with what their ExecStart
    reads from the env file and the drop-ins meant for them."""
    bad, uses = [], []
    env = {}
    for n, v, line in env_assignments(env_file):
        env.setdefault(n, []).append((v, f"{os.path.relpath(env_file, ROOT)}:{line}"))
    for u in paths:
        rel = os.path.relpath(u, ROOT)
        s = parse_unit(u)
        for sec in ("Unit", "Service", "Install"):
            if sec not in s:
                bad.append(f"{rel}: no [{sec}] section")
        svc = {k: v for k, v, _ in s.get("Service", [])}
        unit = {k: v for k, v, _ in s.get("Unit", [])}
        if svc.get("Restart") != "on-failure":
            bad.append(f"{rel}: Restart= is not on-failure")
        if "network-online.target" not in unit.get("After", "") or "network-online.target" not in unit.get("Wants", ""):
            bad.append(f"{rel}: not After= and Wants= network-online.target")
        local = {}
        for n, v, line in environment_lines(s):
            local.setdefault(n, []).append((v, f"{rel}:{line}"))
        dropin = os.path.join(dropin_dir, unit_name(u).removesuffix(".service") + ".conf")
        if os.path.exists(dropin):
            for n, v, line in environment_lines(parse_unit(dropin)):
                local.setdefault(n, []).append((v, f"{os.path.relpath(dropin, ROOT)}:{line}"))
        execs = [(v, line) for k, v, line in s.get("Service", []) if k == "ExecStart"]
        if len(execs) != 1:
            bad.append(f"{rel}: {len(execs)} ExecStart= lines")
            continue
        cmd, line = execs[0]
        argv = shlex.split(cmd.lstrip("-@:+!"))
        prog = program_of(argv[0])
        if prog is None or not os.path.basename(unit_name(u)).startswith(prog):
            bad.append(f"{rel}:{line}: ExecStart runs {argv[0]}, not this unit's daemon")
            continue
        for a in argv[1:]:
            if a.startswith("--"):
                uses.append((prog, a.split("=", 1)[0], f"{rel}:{line}"))
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", a):
                if var in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY"):
                    continue
                vals = local.get(var, []) + env.get(var, [])
                if not vals:
                    bad.append(f"{rel}:{line}: ${var} is set nowhere (unit, env file, drop-in)")
                for val, w in vals:
                    uses += [(prog, fl.split("=", 1)[0], w) for fl in shlex.split(val) if fl.startswith("--")]
    return bad + check_flags(uses)


# ---- the tests ------------------------------------------------------------------


def test_manifests_are_consistent_and_use_only_real_flags():
    files = manifest_files()
    assert {"workermgr.yaml", "discovery.yaml", "gateway.yaml", "etcd.yaml"} <= {os.path.basename(f) for f in files}
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in load_docs(files) if d["kind"] != "Kustomization"}
    assert {("DaemonSet", "faas-workermgr"), ("StatefulSet", "faas-discovery"), ("Deployment", "faas-gateway"),
            ("Service", "faas-gateway"), ("StatefulSet", "etcd"), ("Secret", "faas-token"),
            ("Namespace", "faas")} <= kinds
    bad = manifest_problems(files)
    assert not bad, "\n".join(bad)


def test_kustomize_builds_the_manifests():
    """`kubectl apply -k` first builds the kustomization: every resource, in order."""
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl")
    r = subprocess.run(["kubectl", "kustomize", K8S_DIR], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    want = [d for _, d in load_docs(manifest_files()) if d["kind"] != "Kustomization"]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in want)


def test_manifests_say_what_the_design_says():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in load_docs(manifest_files()) if d["kind"] != "Kustomization"}
    wm = docs[("DaemonSet", "faas-workermgr")]
    spec = pod_spec(wm)
    assert spec["hostNetwork"] is True and containers(wm)[0]["securityContext"]["privileged"] is True
    mounts = {m["mountPath"] for m in containers(wm)[0]["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/var/lib/faas"} <= mounts
    env = {e["name"]: e for e in containers(wm)[0]["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert "--advertise=$(NODE_IP):7200" in containers(wm)[0]["args"]
    disc = docs[("StatefulSet", "faas-discovery")]
    assert disc["spec"]["replicas"] == 2
    # every worker manager and gateway lists both replicas' stable names
    names = ",".join(f"faas-discovery-{i}.faas-discovery.faas.svc.cluster.local:7100" for i in range(2))
    for w in (wm, docs[("Deployment", "faas-gateway")]):
        assert f"--discovery={names}" in containers(w)[0]["args"], w["metadata"]["name"]
    assert any(str(a).startswith("--store=etcd://") for a in containers(disc)[0]["args"])
    ports = {p["port"] for p in docs[("Service", "faas-gateway")]["spec"]["ports"]}
    assert ports == {8080, 8081, 8082}
    for d in docs.values():
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "faas", d["metadata"]["name"]


def test_units_are_consistent_and_use_only_real_flags():
    units = unit_files()
    assert {unit_name(u) for u in units} == {"faas-discovery.service", "faas-workermgr.service",
                                             "faas-gateway.service"}
    bad = unit_problems(units)
    assert not bad, "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """A flag no daemon has, a Service port no container has, a mount with no volume
    and an undefined Secret are each caught, with their file and line."""
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    gw = (k8s / "gateway.yaml").read_text()
    gw = gw.replace("- --grpc-listen=0.0.0.0:8081", "- --grpc-listen=0.0.0.0:8081\n            - --no-such-flag=1")
    gw = gw.replace("targetPort: thrift", "targetPort: thrift2")
    gw = gw.replace("name: faas-token", "name: faas-tokn")
    (k8s / "gateway.yaml").write_text(gw)
    wm = (k8s / "workermgr.yaml").read_text().replace("mountPath: /run/faas", "mountPath: /run/faas\n            - name: nowhere\n              mountPath: /x")
    wm = wm.replace("imagePullPolicy: IfNotPresent", "imagePullPolicie: IfNotPresent", 1)
    (k8s / "workermgr.yaml").write_text(wm)
    bad = "\n".join(manifest_problems(manifest_files(str(k8s))))
    line = next(i for i, t in enumerate(gw.splitlines(), 1) if "--no-such-flag" in t)
    assert f"gateway.yaml:{line}: faas-gateway has no flag --no-such-flag" in bad, bad
    assert "targetPort thrift2 is no containerPort" in bad, bad
    assert "Secret faas-tokn is not defined" in bad, bad
    assert "volumeMount nowhere names no volume" in bad, bad
    assert "no Container field imagePullPolicie" in bad, bad

    sd = tmp_path / "systemd"
    shutil.copytree(UNIT_DIR, sd)
    env = (sd / "faas.env").read_text().replace("--pool-size 4\"\n# On", "--pool-size 4 --pool-sise 5\"\n# On", 1)
    (sd / "faas.env").write_text(env)
    bad = "\n".join(unit_problems(unit_files(str(sd)), str(sd / "faas.env"), str(sd / "tls")))
    line = next(i for i, t in enumerate(env.splitlines(), 1) if "--pool-sise" in t)
    assert f"faas.env:{line}: faas-workermgr has no flag --pool-sise" in bad, bad


@pytest.fixture(scope="module")
def installed():
    root = tempfile.mkdtemp(prefix="faas-pkg-")
    r = subprocess.run(["make", "-C", ROOT, "-s", "install", f"BUILD={BUILD}", "PREFIX=/usr", f"DESTDIR={root}"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_make_install_lays_out_a_working_tree(installed):
    bindir = os.path.join(installed, "usr", "bin")
    for b in FAAS_BINS:
        p = os.path.join(bindir, b)
        assert os.path.isfile(p) and os.access(p, os.X_OK), p
        r = subprocess.run([p, "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), (p, r.stdout, r.stderr)
    # faas-workermgr's default --agent is faas-agent next to its own binary.
    assert os.path.dirname(os.path.join(bindir, "faas-workermgr")) == os.path.dirname(os.path.join(bindir, "faas-agent"))
    unitdir = os.path.join(installed, "usr", "lib", "systemd", "system")
    units = sorted(os.listdir(unitdir))
    assert units == ["faas-discovery.service", "faas-gateway.service", "faas-workermgr.service"]
    for u in units:
        text = open(os.path.join(unitdir, u)).read()
        assert not re.search(r"@[A-Z]+@", text), u  # every template placeholder rendered
        cmd = [v for k, v, _ in parse_unit(os.path.join(unitdir, u))["Service"] if k == "ExecStart"][0]
        exe = shlex.split(cmd)[0]
        assert exe == "/usr/bin/" + u.removesuffix(".service"), (u, exe)
        assert os.access(installed + exe, os.X_OK), exe
    share = os.path.join(installed, "usr", "share", "faas")
    for f in ("packaging.md", "systemd/faas.env", "k8s/kustomization.yaml", "k8s/workermgr.yaml",
              "systemd/tls/faas-gateway.conf"):
        assert os.path.isfile(os.path.join(share, f)), f
    # What the other tests check is what gets installed.
    for f in manifest_files():
        assert filecmp.cmp(f, os.path.join(share, "k8s", os.path.basename(f)), shallow=False), f
    assert filecmp.cmp(ENV_FILE, os.path.join(share, "systemd", "faas.env"), shallow=False)


def test_systemd_accepts_the_units(installed, tmp_path):
    """systemd's own parser on the installed units with their TLS drop-ins, ExecStart
    pointed into the DESTDIR tree so the binaries exist: an unknown key or section, a
    bad value or a missing binary is a warning on stderr."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    unitdir = os.path.join(installed, "usr", "lib", "systemd", "system")
    units = []
    for u in sorted(os.listdir(unitdir)):
        text = open(os.path.join(unitdir, u)).read()
        assert "ExecStart=/usr/bin/" in text, u
        (tmp_path / u).write_text(text.replace("ExecStart=/usr/bin/", f"ExecStart={installed}/usr/bin/"))
        units.append(str(tmp_path / u))
        # its TLS drop-in, where an operator puts it (systemd reads <unit>.d/ beside it)
        (tmp_path / (u + ".d")).mkdir()
        shutil.copy(os.path.join(installed, "usr", "share", "faas", "systemd", "tls", u.removesuffix(".service") + ".conf"),
                    tmp_path / (u + ".d") / "tls.conf")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + units, capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # and it does complain: a key systemd does not know
    bogus = tmp_path / "bogus" / os.path.basename(units[0])
    bogus.parent.mkdir()
    bogus.write_text(open(units[0]).read().replace("[Service]\n", "[Service]\nNoSuchKey=1\n"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bogus)], capture_output=True, text=True,
                       timeout=120, cwd=str(bogus.parent))
    assert "NoSuchKey" in r.stderr, r.stderr


def test_the_installed_tree_runs_a_function(installed, tmp_path):
    """The installed daemons, not the build tree's, bring the platform up; the worker
    manager, given no --agent, runs the faas-agent installed beside it."""
    bindir = os.path.join(installed, "usr", "bin")
    plat = Platform(tmp_path, pool_size=1)
    for d in (plat.discovery, plat.wm, plat.gateway):
        d.argv[0] = os.path.join(bindir, os.path.basename(d.argv[0]))
        assert "--agent" not in d.argv
    plat.start()
    try:
        r = subprocess.run([os.path.join(bindir, "faasctl"), "deploy", "hello", "--dir",
                            os.path.join(ROOT, "examples", "hello-http"), "--cmd", "./hello", "--health", "/healthz"],
                           capture_output=True, text=True, env=plat.env(), timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + plat.logs()
        url = f"{plat.gateway_url}/function/hello/hello"
        body = wait_until(lambda: http_ok(url), 30, what="hello through the installed platform")
        assert b"hello" in body.lower(), body
        agent = os.path.join(bindir, "faas-agent")
        assert wait_until(lambda: exe_running(agent), 10, what=f"a pod running {agent}")
    finally:
        plat.stop()


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read() if r.status == 200 else None
    except OSError:
        return None


def exe_running(path):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == path:
                return True
        except OSError:
            pass
    return False


def test_make_uninstall_leaves_nothing(installed):
    r = subprocess.run(["make", "-C", ROOT, "-s", "uninstall", f"BUILD={BUILD}", "PREFIX=/usr",
                        f"DESTDIR={installed}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(installed) for f in fs]
    assert left == [], left
    assert not os.path.exists(os.path.join(installed, "usr", "share", "faas"))
