# runtime-agent/zygote.py - a warm pod's pre-initialized Python interpreter (issue 18,
# docs/zygotes.md). The agent runs it as `python3 -c <this file> <modules>` the way it
# runs a user server (process group, seccomp, stdout/stderr pipes, the pod's uid and
# cgroup), with fd 3 its end of a socketpair. It imports the modules, writes one byte,
# then waits for one message: the function's cwd, interpreter, argv and environment. It
# then becomes the user's program: what `python3 SCRIPT ARGS` would have run, run as
# __main__ in this process. Its helpers are deleted before the script runs: the one
# frame left above the script's is this module's, holding only what its exit path uses.


def _retitle(os, args, env, exe):
    # ps and /proc/<pid>/cmdline read the argv area of our memory, /proc/<pid>/environ the
    # environment's: the function's command and environment go there (NUL-padded: an area
    # keeps its length; the agent started us with room in the environment's), and comm is
    # the exec's name
    with open("/proc/self/stat", "rb") as f:
        st = f.read().rsplit(b")", 1)[1].split()
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        for strings, at in ((args, 45), (env, 47)):
            start, end = int(st[at]), int(st[at + 1])
            text = b"".join(os.fsencode(a) + b"\0" for a in strings)
            if len(text) <= end - start:
                mem.seek(start)
                mem.write(text + b"\0" * (end - start - len(text)))
    with open("/proc/self/comm", "wb") as f:
        f.write(os.fsencode(os.path.basename(exe))[:15])


def _refuse(os, why):
    os.write(2, b"zygote: " + why + b"; not usable\n")
    os._exit(70)


def _wait(os, sys):
    for name in (sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else ()):
        try:
            __import__(name)
        except Exception:  # not installed or broken here: the script imports it itself
            pass
    # a thread or an fd a preload kept would reach the user server: refuse to serve
    if len(os.listdir("/proc/self/task")) != 1:
        _refuse(os, b"a preloaded module started a thread")
    if sorted(os.listdir("/proc/self/fd"), key=int) != ["0", "1", "2", "3", "4"]:  # 4: listdir's own
        _refuse(os, b"a preloaded module kept a file open")
    try:
        os.write(3, b"R")  # the agent says HELLO now: a function finds the imports done
    except BrokenPipeError:  # it sent the function already and closed its end
        pass
    chunks = []
    while True:
        try:
            b = os.read(3, 65536)
        except InterruptedError:
            continue
        if not b:
            break
        chunks.append(b)
    if not chunks:  # the agent closed us without a function: the pod is going away
        os._exit(0)
    os.close(3)
    return [os.fsdecode(x) for x in b"".join(chunks).split(b"\0")]


def _become(os, sys, f):
    """Sets the process up as `python3 SCRIPT ARGS` would have; the script's code and
    its __main__ module."""
    cwd, exe, argv0, argc = f[0], f[1], f[2], int(f[3])
    argv = f[4:4 + argc]
    envc = int(f[4 + argc])
    env = f[5 + argc:5 + argc + envc]
    os.chdir(cwd)
    os.environ.clear()
    for kv in env:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    if "time" in sys.modules:  # TZ: time read it when the zygote started
        sys.modules["time"].tzset()
    if "tempfile" in sys.modules:  # TMPDIR: read on first use and cached
        sys.modules["tempfile"].tempdir = None
    if "logging" in sys.modules:  # relativeCreated counts from the script's start
        sys.modules["logging"]._startTime = sys.modules["time"].time()
    try:
        _retitle(os, [argv0] + argv, env, exe)
    except OSError:  # cosmetic: ps keeps the zygote's command line
        pass
    # python3 makes the name absolute without normalizing it (./app.py stays /code/./app.py)
    script = argv[0] if os.path.isabs(argv[0]) else os.path.join(os.getcwd(), argv[0])
    sys.argv = argv
    sys.orig_argv = [argv0] + argv
    sys.executable = exe
    sys._base_executable = exe
    # `python3 SCRIPT` puts the script's real directory first on the path ("-c": "")
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    sys.path_importer_cache.pop("", None)
    main = type(sys)("__main__")
    main.__package__ = None
    main.__loader__ = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", script)
    main.__spec__ = None
    main.__annotations__ = {}
    main.__builtins__ = sys.modules["builtins"]
    main.__file__ = script
    main.__cached__ = None
    sys.modules["__main__"] = main
    with open(script, "rb") as src:
        return compile(src.read(), script, "exec", dont_inherit=True), main.__dict__


def _report(sys, e):
    """What the interpreter does with an exception the script did not catch, without the
    zygote's frame: sys.last_*, then the hook, outside any except block."""
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
    e = e.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(e), e, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = e
    sys.excepthook(type(e), e, tb)


def _interrupted(os, sys):
    """python3 ends on an uncaught KeyboardInterrupt by dying of SIGINT, once the
    threads are joined and atexit has run."""
    import atexit
    import signal
    import threading
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

_e = None
try:
    _z = _become(_os, _sys, _wait(_os, _sys))
except BaseException as e:  # a SyntaxError: python3 reports it without a traceback
    _e = e.with_traceback(None)
else:
    del _retitle, _refuse, _wait, _become
    try:
        # pop: the script runs with nothing of ours left in this frame's namespace
        exec(*globals().pop("_z"))
    except SystemExit:
        raise
    except BaseException as e:
        _e = e
if _e is not None:
    _report(_sys, _e)
# python3 drops them once the script is done, before atexit runs
_sys.modules["__main__"].__dict__.pop("__file__", None)
_sys.modules["__main__"].__dict__.pop("__cached__", None)
if isinstance(_e, KeyboardInterrupt):
    _interrupted(_os, _sys)
if _e is not None:
    raise SystemExit(1)
