"""Issue 10 item 4: a function whose command cannot start says why, where the user
looks: the function's log (faasctl logs) has the details, and one short line - no
internal address, no host path - is in the 503 body and in faasctl get's last-error."""
import os
import re

import pytest

from platform_util import BUILD, ROOT, Platform, curl, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]


@pytest.fixture
def plat(tmp_path):
    p = Platform(tmp_path, pool_size=1).start()
    try:
        yield p
    finally:
        p.stop()


def assert_private(p, text):
    """Nothing of the host or the control plane in what a client is told."""
    assert "127.0.0.1" not in text and p.dir not in text and ROOT not in text, text
    assert not re.search(r":\d{4,5}\b", text), text


def last_error(p, fn):
    out = p.ctl("get", fn).stdout
    lines = [l for l in out.splitlines() if l.startswith("# last-error: ")]
    return lines[0][len("# last-error: "):] if lines else None


def check_reported(p, fn, reason, log_needles):
    code, body, _ = curl(p.url(fn, "/"))
    assert code == 503, (code, body, p.logs())
    assert body == f"function {fn}: cold start failed: {reason}\n", (body, p.logs())
    assert_private(p, body)

    logs = p.ctl("logs", fn).stdout
    for needle in log_needles:
        assert needle in logs, (needle, logs)

    # the worker's next lease renewal brings it to discovery
    err = wait_until(lambda: last_error(p, fn), 10, what="last-error in faasctl get")
    assert re.fullmatch(rf"cold start failed: {re.escape(reason)} \(version 1, \d+s ago\)", err), err
    assert_private(p, err)
    # a second call fails the same way (nothing is left half-started)
    assert curl(p.url(fn, "/"))[:2] == (503, body)


def test_command_file_missing_from_the_code_dir(plat):
    plat.ctl("deploy", "nocmd", "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./not-there", "--health",
             "/healthz")
    check_reported(plat, "nocmd", "exec ./not-there: No such file or directory",
                   ['stream=platform msg="cannot start the user server: exec ./not-there: No such file or directory'])


def test_server_exiting_before_ready_with_stderr(plat, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    srv = code / "server.sh"
    srv.write_text("#!/bin/sh\necho starting\necho 'config file missing: app.conf' >&2\nexit 3\n")
    srv.chmod(0o755)
    plat.ctl("deploy", "quits", "--dir", str(code), "--cmd", "./server.sh")
    reason = "user server exited with status 3 before it was ready: config file missing: app.conf"
    check_reported(plat, "quits", reason,
                   ['stream=stdout msg="starting"', 'stream=stderr msg="config file missing: app.conf"',
                    'stream=platform msg="user server exited with status 3 before it was ready'])


def test_a_good_start_clears_the_last_error(plat, tmp_path):
    plat.ctl("deploy", "flaky", "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./nope", "--health", "/healthz")
    assert curl(plat.url("flaky", "/hello"))[0] == 503
    wait_until(lambda: last_error(plat, "flaky"), 10, what="last-error")
    plat.ctl("deploy", "flaky", "--dir", f"{ROOT}/examples/hello-http", "--cmd", "./hello", "--health", "/healthz")
    wait_until(lambda: curl(plat.url("flaky", "/hello"))[0] == 200, 10, interval=0.1, what="version 2 answers")
    wait_until(lambda: last_error(plat, "flaky") is None, 10, what="last-error cleared")
