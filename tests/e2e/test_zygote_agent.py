"""The agent's Python zygote on its own (issue 18, docs/zygotes.md): faas-agent --standalone
with FAAS_AGENT_ZYGOTE set runs `python3 SCRIPT` in a pre-initialized interpreter; what the
script can see of itself, its crash reports and its exit statuses must be those of a plain
exec of the same command. The platform-wide comparison (gateway, worker manager, gRPC and
Thrift servers) is test_zygote.py."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import faaspb  # noqa: E402
import test_agent_standalone as standalone  # noqa: E402
from test_agent_standalone import PY, Agent, curl  # noqa: E402

PRELOAD = "http.server,socketserver,json,socket,selectors,threading,asyncio,logging,colorsys,no_such_module_here"

REPORT = r'''
import http.server, json, os, resource, signal, sys, threading
import locale
def fds():
    out = {}
    for f in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink("/proc/self/fd/" + f)
        except OSError:
            continue  # listdir's own
        out[f] = "pipe" if t.startswith("pipe:") else "socket" if t.startswith("socket:") else t
    return out
def status(keys):
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: l.split(":", 1)[1].strip() for l in f if l.split(":")[0] in keys}
m = sys.modules["__main__"]
AT_START = {"fds": fds(), "tasks": len(os.listdir("/proc/self/task")), "threads": threading.active_count()}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        r = dict(AT_START)
        r.update({
            "argv": sys.argv, "orig_argv": sys.orig_argv, "executable": sys.executable, "path": sys.path,
            "file": __file__, "name": __name__, "cwd": os.getcwd(),
            "env": sorted((k, "(the picked port)" if k == "PORT" else v) for k, v in os.environ.items()),
            "main_keys": sorted(m.__dict__), "loader": [type(m.__loader__).__name__, m.__loader__.name,
                                                       m.__loader__.path],
            "spec": repr(m.__spec__), "cached": repr(m.__cached__), "package": repr(m.__package__),
            "doc": repr(m.__doc__),
            "signals": {s: str(signal.getsignal(getattr(signal, s)))
                        for s in ("SIGINT", "SIGTERM", "SIGPIPE", "SIGCHLD", "SIGXFSZ", "SIGHUP")},
            "flags": repr(sys.flags), "rlimits": [resource.getrlimit(getattr(resource, r))
                                                  for r in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_AS")],
            "ids": [os.getuid(), os.getgid(), os.getgroups(), os.getpgrp() == os.getpid()],
            "status": status({"Seccomp", "NoNewPrivs", "CapEff", "CapBnd", "SigIgn", "SigBlk"}),
            "stdio": [sys.stdout.encoding, sys.stdout.line_buffering, sys.stderr.line_buffering,
                      locale.getpreferredencoding(False), sys.stdin.name],
            "platform_modules": [k for k in sys.modules if "zygote" in k.lower() or "faas" in k.lower()],
            # what ps shows (the zygote pads the argv area with NULs: docs/zygotes.md)
            "cmdline": open("/proc/self/cmdline", "rb").read().rstrip(b"\0").decode().split("\0"),
            "comm": open("/proc/self/comm").read(),
            "proc_environ": [("PORT=(the picked port)" if e.startswith("PORT=") else e) for e in
                             open("/proc/self/environ", "rb").read().rstrip(b"\0").decode().split("\0")],
        })
        body = json.dumps(r).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def write(d, name, text):
    with open(os.path.join(d, name), "w") as f:
        f.write(text)


@pytest.fixture
def appdir():
    with tempfile.TemporaryDirectory(prefix="zygote-e2e-") as d:
        os.chmod(d, 0o755)
        write(d, "server.py", REPORT)
        yield d


def run(appdir, zygote, cmd, monkeypatch):
    if zygote:
        monkeypatch.setenv("FAAS_AGENT_ZYGOTE", PY)
        monkeypatch.setenv("FAAS_AGENT_ZYGOTE_PRELOAD", PRELOAD)
    else:
        monkeypatch.delenv("FAAS_AGENT_ZYGOTE", raising=False)
    return Agent(appdir, cmd=cmd)


def report(appdir, zygote, monkeypatch, cmd=f"{PY} server.py one 'two words' ''"):
    a = run(appdir, zygote, cmd, monkeypatch).ready()
    try:
        rc, status, _, body = curl(a.url("/report"))
        assert (rc, status) == (0, 200), body
        return json.loads(body), a.stderr()
    finally:
        a.close()


def started_in_zygote(log):
    return "started in the pod's pre-initialized python3 (zygote)" in log


def test_the_script_sees_what_a_plain_exec_shows(appdir, monkeypatch):
    plain, plain_log = report(appdir, False, monkeypatch)
    zyg, zyg_log = report(appdir, True, monkeypatch)
    assert not started_in_zygote(plain_log)
    assert started_in_zygote(zyg_log), zyg_log
    assert zyg["argv"] == ["server.py", "one", "two words", ""]
    assert zyg["cmdline"] == [PY, "server.py", "one", "two words"] and zyg["comm"] == "python3\n"
    assert zyg["file"] == os.path.join(appdir, "server.py") and zyg["name"] == "__main__"
    assert zyg["path"][0] == os.path.realpath(appdir)
    assert zyg["fds"] == {"0": "/dev/null", "1": "pipe", "2": "pipe"}, "only stdio reaches the script"
    assert zyg["tasks"] == 1 and zyg["threads"] == 1
    assert zyg["platform_modules"] == []
    assert zyg["status"]["Seccomp"] == "2" and zyg["status"]["NoNewPrivs"] == "1"
    for k in plain:
        assert zyg[k] == plain[k], f"{k}: zygote {zyg[k]!r} != exec {plain[k]!r}"
    assert zyg.keys() == plain.keys()


def test_fallback_for_a_command_that_is_not_a_plain_script(appdir, monkeypatch):
    zyg, log = report(appdir, True, monkeypatch, cmd=f"{PY} -u server.py x")
    assert not started_in_zygote(log)
    assert "started by exec, not in the pod's python3 zygote: the command is not `python3 SCRIPT [ARGS]`" in log, log
    assert zyg["argv"] == ["server.py", "x"] and zyg["stdio"][1] is False
    # the zygote was killed, not left beside the user server
    assert "event=zygote_unused" in log


def stderr_lines(log):
    """The user server's stderr lines from the function log (standalone: the agent's stderr)."""
    return [json.loads('"' + m.group(1) + '"') for m in re.finditer(r'stream=stderr msg="((?:[^"\\]|\\.)*)"', log)]


def failed(appdir, zygote, monkeypatch, cmd):
    a = run(appdir, zygote, cmd, monkeypatch)
    try:
        return a.first_line(15), a.stderr()
    finally:
        a.close()


@pytest.mark.parametrize("script,status", [
    ("import os\n\ndef f():\n    raise RuntimeError('boom at import')\nf()\n", "status 1"),
    ("import sys\nsys.exit(3)\n", "status 3"),
    ("import sys\nsys.exit('bye from the script')\n", "status 1"),
    ("def broken(:\n    pass\n", "status 1"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", "signal 15"),
    ("raise KeyboardInterrupt\n", "signal 2"),
])
def test_failures_at_import_read_as_under_exec(appdir, monkeypatch, script, status):
    write(appdir, "crash.py", script)
    plain, plain_log = failed(appdir, False, monkeypatch, f"{PY} crash.py")
    zyg, zyg_log = failed(appdir, True, monkeypatch, f"{PY} crash.py")
    assert started_in_zygote(zyg_log), zyg_log
    assert plain.startswith("FAILED") and status in plain, plain
    assert zyg == plain
    assert stderr_lines(zyg_log) == stderr_lines(plain_log)
    text = "\n".join(stderr_lines(zyg_log))
    assert "<string>" not in text and "runpy" not in text and "_zygote" not in text, text
    if "boom" in script:
        assert f'File "{os.path.join(appdir, "crash.py")}", line 4, in f' in text, text
        assert "RuntimeError: boom at import" in text


def small_server(body_code):
    """A stdlib HTTP server whose GET answers what body_code (lines defining `body`) says."""
    return ("import http.server, os, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            + "".join("        " + line + "\n" for line in body_code.strip("\n").split("\n")) +
            "        self.send_response(200)\n"
            "        self.send_header('content-length', str(len(body)))\n"
            "        self.end_headers()\n"
            "        self.wfile.write(body)\n"
            "    def log_message(self, *a):\n"
            "        pass\n"
            "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n")


FORKER = small_server('''
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, ("child of %d argv %s" % (os.getppid(), sys.argv[1:])).encode())
    os._exit(0)
os.close(w)
got = os.read(r, 4096)
os.close(r)
_, st = os.waitpid(pid, 0)
body = got.replace(str(os.getpid()).encode(), b"PARENT") + b" status %d" % st
''')


def get_once(appdir, zygote, cmd, monkeypatch):
    """Starts the agent on cmd, one GET /; (status, body, the agent's log)."""
    a = run(appdir, zygote, cmd, monkeypatch).ready()
    try:
        rc, status, _, body = curl(a.url("/"))
        return status, body, a.stderr()
    finally:
        a.close()


def test_a_server_that_forks(appdir, monkeypatch):
    write(appdir, "forker.py", FORKER)
    got = [get_once(appdir, zygote, f"{PY} forker.py z", monkeypatch) for zygote in (False, True)]
    assert [started_in_zygote(log) for _, _, log in got] == [False, True]
    assert [(st, body) for st, body, _ in got] == [(200, b"child of PARENT argv ['z'] status 0")] * 2


class Controlled(standalone.Controlled):
    """The agent as the worker manager runs it (control socket), a zygote asked for."""

    def __init__(self, python=PY, preload=PRELOAD):
        super().__init__({"FAAS_AGENT_ZYGOTE": python, "FAAS_AGENT_ZYGOTE_PRELOAD": preload})

    def close(self):
        super().close()
        return self.proc.stderr.read().decode(errors="replace")


def test_hello_waits_for_the_imports_and_ready_says_zygote(appdir):
    c = Controlled()
    try:
        hello = c.event()
        assert hello["type"] == faaspb.EV_HELLO and hello["zygote"] == 1, hello
        spec = faaspb.function_spec("rep", [PY, "server.py", "x"], health_path="/", cold_start_timeout_ms=10000)
        socket.send_fds(c.sock, [faaspb.specialize(spec, "inst-z", os.path.realpath(appdir))],
                        [os.open(os.devnull, os.O_WRONLY)])
        ready = c.event()
        assert ready["type"] == faaspb.EV_READY and ready["zygote"] == 1, ready
        rc, status, _, body = curl(f"http://127.0.0.1:{hello['port']}/r")
        assert status == 200 and json.loads(body)["argv"] == ["server.py", "x"]
        c.sock.send(faaspb.stop())
        assert c.proc.wait(5) == 0
    finally:
        log = c.close()
    assert "event=zygote_ready" in log, log


def test_a_zygote_that_cannot_start_leaves_a_generic_pod(appdir):
    # an "interpreter" that exits at once: HELLO says no zygote, and Python still runs (exec)
    c = Controlled(python="/bin/false")
    try:
        hello = c.event()
        assert hello["type"] == faaspb.EV_HELLO and hello["zygote"] == 0, hello
        spec = faaspb.function_spec("rep", [PY, "server.py"], health_path="/", cold_start_timeout_ms=10000)
        socket.send_fds(c.sock, [faaspb.specialize(spec, "inst-g", os.path.realpath(appdir))],
                        [os.open(os.devnull, os.O_WRONLY)])
        ready = c.event()
        assert ready["type"] == faaspb.EV_READY and ready["zygote"] == 0, ready
    finally:
        log = c.close()
    # reaped before SPECIALIZE came, or found gone by it: either way the pod exec'd
    assert "event=zygote_exited" in log or re.search(r'event=zygote_unused .*the zygote is gone', log), log


VENDORED = small_server('''
import colorsys
body = ("%s %s" % (colorsys.__file__, getattr(colorsys, "VENDORED", False))).encode()
''')


def test_a_vendored_copy_of_a_preloaded_module_wins(appdir, monkeypatch):
    """python3 SCRIPT imports the code's own colorsys.py (sys.path[0] first); the zygote
    has the system's pre-imported, so the agent execs: the same answer either way."""
    write(appdir, "vend.py", VENDORED)
    write(appdir, "colorsys.py", "VENDORED = True\n")
    got = [get_once(appdir, zygote, f"{PY} vend.py", monkeypatch) for zygote in (False, True)]
    assert [(st, body) for st, body, _ in got] == [(200, f"{appdir}/colorsys.py True".encode())] * 2, got
    assert "the code has its own colorsys.py, which the zygote imported from the system" in got[1][2], got[1][2]


@pytest.mark.parametrize("kind", ["zipapp", "venv"])
def test_zipapps_and_virtual_environments_are_execd(appdir, monkeypatch, kind):
    if kind == "zipapp":
        os.makedirs(os.path.join(appdir, "app"))
        write(os.path.join(appdir, "app"), "__main__.py", FORKER)
        subprocess.run([PY, "-m", "zipapp", "-p", "/usr/bin/env python3", "-o", os.path.join(appdir, "app.pyz"),
                        os.path.join(appdir, "app")], check=True)
        cmd, why = f"{PY} app.pyz", "the script app.pyz is a zip archive or compiled code"
    else:
        subprocess.run([PY, "-m", "venv", "--without-pip", os.path.join(appdir, "venv")], check=True)
        cmd, why = "venv/bin/python3 server.py", "venv/bin/python3 is a virtual environment's interpreter"
    status, body, log = get_once(appdir, True, cmd, monkeypatch)
    assert status == 200, body
    assert not started_in_zygote(log)
    assert why in log, log
    if kind == "venv":
        assert json.loads(body)["executable"] == os.path.join(appdir, "venv/bin/python3")
