"""Every daemon's /metrics passes `promtool check metrics` (Debian package prometheus,
installed by deploy/install-deps.sh): HELP and TYPE for each family, counters named
*_total. Scraped after traffic, so the labelled series (per function, per status code,
histogram buckets) are there too."""
import os
import shutil
import subprocess

import pytest

from platform_util import BUILD, Platform, curl, http_get

PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pods need root"),
    pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (deploy/install-deps.sh installs prometheus)"),
    pytest.mark.skipif(not os.path.exists(f"{BUILD}/faas-gateway"), reason="not built"),
]


def lint(name, url):
    status, body = http_get(url)
    assert status == 200, (name, status, body)
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{name} /metrics fails promtool:\n{p.stdout}{p.stderr}\n--- scraped:\n{body}"
    return body


def test_every_daemon_passes_promtool(tmp_path):
    p = Platform(tmp_path, pool_size=1).start()
    try:
        p.deploy_hello()
        assert curl(p.url("hello", "/hello"))[0] == 200, p.logs()
        assert curl(p.url("nope", "/"))[0] == 404
        lint("discovery", f"http://127.0.0.1:{p.disc_mport}/metrics")
        wm = lint("workermgr", f"http://127.0.0.1:{p.wm_mport}/metrics")
        gw = lint("gateway", f"{p.gateway_url}/metrics")
        # the names the other tests and the bench read are still there
        assert "faas_wm_pool_ready " in wm and "faas_wm_acquisitions_total 1" in wm
        assert 'faas_requests_total{' in gw and "faas_request_duration_seconds_bucket{" in gw
        assert 'faas_gateway_task_callbacks_total{outcome="delivered"} ' in gw
    finally:
        p.stop()
