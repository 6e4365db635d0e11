"""What a Python server can see of how it was started (issue 18's comparison suite): an
ordinary stdlib HTTP server on 127.0.0.1:$PORT. GET /report answers a JSON of its own
process as this script sees it; the test deploys it as plain exec and in a zygote and
compares the two. GET /connect?host=H&port=P -> "ok" or the errno name of a 1 s connect;
GET /alloc?mib=N -> "ok" or the exception name after touching N MiB; GET /spawn?n=N ->
"ok" or the exception name after starting N sleeping threads; GET /healthz -> ok."""
import errno
import os
import sys

# the module's namespace before it ran any code of its own: what the interpreter put there
MAIN_NAMES_AT_START = sorted(globals())
MAIN_ATTRS_AT_START = {k: repr(globals().get(k)) for k in ("__name__", "__package__", "__spec__", "__cached__",
                                                            "__doc__")}
MAIN_ATTRS_AT_START["__loader__"] = type(globals().get("__loader__")).__name__
MAIN_ATTRS_AT_START["__loader__.name,path"] = [getattr(__loader__, "name", None), getattr(__loader__, "path", None)]
MAIN_ATTRS_AT_START["__builtins__"] = type(globals().get("__builtins__")).__name__
MODULES_AT_START = sorted(sys.modules)
# the frames above this module's code as it runs (python3 SCRIPT: none)
STACK_AT_IMPORT = []
_f = sys._getframe()
while _f is not None:
    STACK_AT_IMPORT.append([_f.f_code.co_filename, _f.f_code.co_name])
    _f = _f.f_back
del _f
# a warning attributed to this module's caller (stacklevel=2), as libraries' deprecation
# helpers do: python3 SCRIPT has no caller ("sys", line 1), and the default filters
# then hide a DeprecationWarning that they show when it comes from __main__
import warnings  # noqa: E402

with warnings.catch_warnings(record=True) as _w:
    warnings.warn("probe", DeprecationWarning, stacklevel=2)
WARNED_AT_IMPORT = [[x.filename, x.lineno, str(x.message)] for x in _w]
del _w

import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qsl, urlsplit  # noqa: E402


def fd_table():
    """Open descriptors: name -> readlink target, pipe/socket/anon inode numbers dropped
    (they differ between any two processes), the listdir's own descriptor left out."""
    out = {}
    d = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(d):
            if int(name) == d:
                continue
            try:
                t = os.readlink(f"/proc/self/fd/{name}")
                flags = os.get_inheritable(int(name)), os.get_blocking(int(name))
            except OSError:  # listdir's own duplicate of d, closed by now
                continue
            for kind in ("pipe", "socket", "anon_inode"):
                if t.startswith(kind + ":"):
                    t = kind + (":" + t.split(":", 1)[1] if kind == "anon_inode" else "")
            out[name] = f"{t} inheritable={flags[0]} blocking={flags[1]}"
    finally:
        os.close(d)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def status_fields(*names):
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in names:
                out[k] = v.strip()
    return out


def cgroup_limits():
    out = {}
    try:
        with open("/proc/self/cgroup") as f:
            rel = f.read().strip().split("\n")[-1].split(":", 2)[2]
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e.errno))}
    for k in ("memory.max", "pids.max", "memory.swap.max"):
        try:
            with open(f"/sys/fs/cgroup{rel}/{k}") as f:
                out[k] = f.read().strip()
        except OSError as e:
            out[k] = errno.errorcode.get(e.errno, str(e.errno))
    return out


def parent():
    with open("/proc/self/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    try:
        with open(f"/proc/{ppid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return {"comm": comm, "ppid_is_getppid": ppid == os.getppid()}


def libc_getenv():
    """The C library's view of the environment (what C extensions and getenv(3) see)."""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    return {k: (libc.getenv(k.encode()) or b"<unset>").decode(errors="replace") for k in sorted(os.environ)}


def shared_state():
    """Process-wide settings a module could change as it is imported (a pre-import's
    would outlive it): logging's root, the socket default timeout, atexit, asyncio."""
    import atexit
    import logging
    root = logging.getLogger()
    import asyncio.events as ae
    return {"root_handlers": [type(h).__name__ for h in root.handlers], "root_level": root.level,
            "logging_disable": logging.root.manager.disable, "socket_timeout": socket.getdefaulttimeout(),
            "atexit_callbacks": atexit._ncallbacks(), "asyncio_policy": repr(ae._event_loop_policy),
            "excepthook_is_default": sys.excepthook is sys.__excepthook__,
            "recursion": sys.getrecursionlimit(), "int_max_str_digits": sys.get_int_max_str_digits(),
            "float_repr": repr(0.1), "default_encoding": sys.getdefaultencoding()}


def sig(n):
    h = signal.getsignal(n)
    return getattr(h, "__qualname__", None) or repr(h)


def stdio():
    out = {}
    for name in ("stdin", "stdout", "stderr"):
        s = getattr(sys, name)
        if s is None:
            out[name] = None
            continue
        out[name] = {"type": type(s).__name__, "fileno": s.fileno(), "encoding": s.encoding, "errors": s.errors,
                     "line_buffering": s.line_buffering, "write_through": s.write_through, "isatty": s.isatty(),
                     "buffer": type(getattr(s, "buffer", None)).__name__,
                     "is_dunder": s is getattr(sys, "__" + name + "__")}
    return out


def report():
    with open("/proc/self/cmdline", "rb") as f:
        raw = f.read()
    # the argv area: NUL-terminated strings; a zygote pads what it rewrote with NULs
    cmdline = raw.rstrip(b"\0").split(b"\0")
    main = sys.modules["__main__"]
    import locale
    return {
        "argv": sys.argv,
        "orig_argv": getattr(sys, "orig_argv", None),
        "cmdline": [a.decode(errors="replace") for a in cmdline],
        "cmdline_padding": len(raw) - len(raw.rstrip(b"\0")) - 1,
        "comm": open("/proc/self/comm").read().strip(),
        "exe": os.readlink("/proc/self/exe"),
        "executable": sys.executable,
        "path0": sys.path[0],
        "path": sys.path,
        "file": __file__,
        "name": __name__,
        "main_file": getattr(main, "__file__", None),
        "main_is_this": main is sys.modules.get(__name__),
        "main_names_at_start": MAIN_NAMES_AT_START,
        "main_attrs_at_start": MAIN_ATTRS_AT_START,
        "cwd": os.getcwd(),
        "proc_environ": sorted(e.decode(errors="replace") for e in open("/proc/self/environ", "rb").read().split(b"\0")
                               if e),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "environ": sorted(os.environ.items()),
        "fds": fd_table(),
        # threads: the per-connection ones come and go with the agent's keep-alive pool
        "native_threads": len(os.listdir("/proc/self/task")) - threading.active_count(),
        "threads": sorted(t.name for t in threading.enumerate() if "process_request_thread" not in t.name),
        "main_thread_is_current_at_import": MAIN_THREAD_AT_IMPORT,
        "signals": {n: sig(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGPIPE", "SIGCHLD", "SIGHUP",
                                                          "SIGUSR1", "SIGXFSZ")},
        "sigmask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "flags": repr(sys.flags),
        "warnoptions": sys.warnoptions,
        "warning_filters": [repr(f) for f in warnings.filters],
        "xoptions": sys._xoptions,
        "dont_write_bytecode": sys.dont_write_bytecode,
        "recursionlimit": sys.getrecursionlimit(),
        "switchinterval": sys.getswitchinterval(),
        "gc": [gc.isenabled(), gc.get_threshold()],
        "hooks": [repr(sys.excepthook), repr(sys.displayhook), repr(threading.excepthook),
                  repr(getattr(sys, "breakpointhook", None))],
        "meta_path": [getattr(m, "__name__", type(m).__name__) for m in sys.meta_path],
        "path_hooks": [getattr(h, "__qualname__", type(h).__name__) for h in sys.path_hooks],
        "audit_hooks_cannot_be_listed": True,
        "stdio": stdio(),
        "fs_encoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
        "preferred_encoding": locale.getpreferredencoding(False),
        "locale_ctype": locale.setlocale(locale.LC_CTYPE),
        "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_NOFILE", "RLIMIT_NPROC",
                                                                          "RLIMIT_AS", "RLIMIT_CORE",
                                                                          "RLIMIT_STACK", "RLIMIT_FSIZE")},
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
        "umask": status_fields("Umask").get("Umask"),
        "status": status_fields("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapEff", "CapPrm", "CapInh",
                                "CapBnd", "CapAmb", "SigBlk", "SigIgn", "SigCgt"),
        "cgroup": cgroup_limits(),
        "pgrp_leader": os.getpgrp() == os.getpid(),
        "sid_leader": os.getsid(0) == os.getpid(),
        "parent": parent(),
        "nice": os.nice(0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
        "platform_modules": sorted(m for m in sys.modules if "zygote" in m.lower() or "faas" in m.lower()),
        "modules_at_start": MODULES_AT_START,
        "tzname": list(time.tzname),
        "timezone": time.timezone,
        "localtime_0": time.strftime("%H:%M %Z", time.localtime(0)),
        "stack_at_import": STACK_AT_IMPORT,
        "warned_at_import": WARNED_AT_IMPORT,
        "faulthandler": __import__("faulthandler").is_enabled(),
        "shared_state": shared_state(),
        "libc_getenv": libc_getenv(),
        "getsource": __import__("inspect").getsource(probe_connect).splitlines()[0],
        "hash": hash("zygote-probe"),  # fixed only under PYTHONHASHSEED
    }


def probe_connect(q):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((q["host"], int(q["port"])))
        return "ok"
    except socket.timeout:
        return "ETIMEDOUT"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()


def probe_alloc(q):
    try:
        b = bytearray(int(q["mib"]) << 20)
        for i in range(0, len(b), 4096):  # touch every page: RSS, not address space
            b[i] = 1
        return "ok"
    except MemoryError:
        return "MemoryError"


def probe_spawn(q):
    stop = threading.Event()
    started = []
    try:
        for _ in range(int(q["n"])):
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            started.append(t)
        return "ok"
    except RuntimeError as e:  # "can't start new thread": EAGAIN from clone at pids.max
        return "RuntimeError " + str(e)
    finally:
        stop.set()
        for t in started:
            t.join()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        u = urlsplit(self.path)
        q = dict(parse_qsl(u.query))
        if u.path == "/report":
            return self.reply(json.dumps(report()), "application/json")
        if u.path == "/connect":
            return self.reply(probe_connect(q))
        if u.path == "/alloc":
            return self.reply(probe_alloc(q))
        if u.path == "/spawn":
            return self.reply(probe_spawn(q))
        self.reply("ok\n")

    def log_message(self, *a):
        pass


MAIN_THREAD_AT_IMPORT = threading.current_thread() is threading.main_thread()

if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    srv.daemon_threads = True
    print("introspect listening", flush=True)
    srv.serve_forever()
