# runtime-agent/zygote.py - a warm pod's pre-initialized Python interpreter (issue 18,
# docs/zygotes.md). The agent runs it as `python3 -c <this file> <modules>` the way it
# runs a user server (process group, seccomp, stdout/stderr pipes, the pod's uid and
# cgroup), with fd 3 its end of a socketpair. It imports the modules, then waits for one
# message: the function's cwd, interpreter, argv and environment. It then becomes the
# user's program: what `python3 SCRIPT ARGS` would have run, run as __main__ in this
# process. Nothing of this code stays reachable by name: it is no module, its globals are
# the replaced __main__'s, and everything it binds is local to _zygote.


def _retitle(os, args, exe):
    # ps and /proc/<pid>/cmdline read the argv area of our memory: the function's command
    # goes there (NUL-padded: the area keeps its length), and comm is the exec's name
    with open("/proc/self/stat", "rb") as f:
        st = f.read().rsplit(b")", 1)[1].split()
    start, end = int(st[45]), int(st[46])
    title = b"".join(os.fsencode(a) + b"\0" for a in args)
    if len(title) <= end - start:
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(title + b"\0" * (end - start - len(title)))
    with open("/proc/self/comm", "wb") as f:
        f.write(os.fsencode(os.path.basename(exe))[:15])


def _zygote():
    import os
    import sys

    for name in (sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else ()):
        try:
            __import__(name)
        except Exception:  # not installed or broken here: the script imports it itself
            pass
    # a preload that started a thread would hand it to the user server: refuse to serve
    if len(os.listdir("/proc/self/task")) != 1:
        os.write(2, b"zygote: a preloaded module started a thread; not usable\n")
        os._exit(70)
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
    # the socketpair and anything else past stdio: the user server starts with 0-2 only
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    f = [os.fsdecode(x) for x in b"".join(chunks).split(b"\0")]
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
    _retitle(os, [argv0] + argv, exe)
    script = os.path.abspath(argv[0])
    sys.argv = argv
    sys.orig_argv = [argv0] + argv
    sys.executable = exe
    sys._base_executable = exe
    # `python3 SCRIPT` puts the script's real directory first on the path ("-c": "")
    if not sys.flags.safe_path:
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
    try:
        with open(script, "rb") as src:
            code = compile(src.read(), script, "exec", dont_inherit=True)
        del chunks, f, env, src
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        # as the interpreter reports an uncaught exception, without this frame
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        if isinstance(e, KeyboardInterrupt):  # python3 then dies of SIGINT
            import atexit
            import signal
            atexit._run_exitfuncs()
            sys.stdout.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None


_zygote()
