"""The gateway's table is a copy of discovery's: it must never answer 404 for a deployed
function only because the copy is behind (issue 14, item 1).

- a restarted gateway (kill -9) is called while it is still getting its first snapshot:
  every answer is 200 or 503 + Retry-After (held past --sync-hold-ms), never 404, and
  /healthz does not say 200 before it routes;
- a function called right after `faasctl deploy` returns (its watch event may still be
  on its way): 200, never 404 (the gateway asks discovery before it says 404);
- an unknown name still gets 404 (discovery's word), and a burst of them costs at most
  one discovery call each."""
import http.client
import re
import socket
import threading
import time

from platform_util import Platform, http_get, port_open, wait_until


def call(port, path, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("retry-after"), r.read()
    finally:
        c.close()


def metric(port, name, label):
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    m = re.search(rf'^{name}\{{outcome="{label}"\}} (\d+)$', text, re.M)
    return int(m.group(1)) if m else 0


def test_restarted_gateway_never_404s(tmp_path):
    p = Platform(tmp_path).start()
    try:
        p.deploy_hello()
        assert call(p.http_port, "/function/hello/")[0] == 200
        for round_ in range(3):
            p.gateway.proc.kill()
            p.gateway.proc.wait(5)
            p.gateway.port = None  # start() must not wait for the port: we race it ourselves
            p.gateway.start()
            wait_until(lambda: port_open(p.http_port), 10, interval=0.001, what="gateway port")
            statuses, health = [], []

            def healthz():
                # bounded by time, not by a count of polls: under ASan on a loaded host 200
                # back-to-back polls were over before the watch's snapshot came
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    st, _ = http_get(f"{p.gateway_url}/healthz")
                    # right after a 200 from /healthz the gateway must route
                    health.append((st, call(p.http_port, "/function/hello/")[0] if st == 200 else None))
                    if st == 200:
                        return
                    time.sleep(0.002)

            t = threading.Thread(target=healthz)
            t.start()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                st, ra, body = call(p.http_port, "/function/hello/")
                assert st != 404, (round_, body, p.logs())
                assert st == 200 or (st == 503 and ra == "1"), (st, body)
                statuses.append(st)
            t.join(40)
            print(f"round {round_}: {len(statuses)} calls, {statuses.count(200)} x 200, "
                  f"{statuses.count(503)} x 503; healthz {health[:3]}..{health[-1:]}")
            assert statuses.count(200) > 0
            assert health and health[-1][0] == 200
            assert all(h[1] == 200 for h in health if h[0] == 200), health
            assert all(h[0] in (200, 503) for h in health), health
    finally:
        p.stop()


def test_call_right_after_deploy_is_not_404(tmp_path):
    p = Platform(tmp_path, pool_size=3).start()
    try:
        for i in range(6):
            name = f"fresh{i}"
            p.deploy_hello(name)
            st, _, body = call(p.http_port, f"/function/{name}/")  # at once: no wait for the watch
            assert st == 200, (name, st, body)
            p.ctl("delete", name)
        found = metric(p.http_port, "faas_gateway_route_misses_total", "found")
        print(f"misses resolved by asking discovery: {found} of 6 deploys")
        # unknown names: still 404, said after discovery's word, and a burst of the same
        # name shares one lookup
        before = metric(p.http_port, "faas_gateway_route_misses_total", "not_found")
        results = []
        ts = [threading.Thread(target=lambda: results.append(call(p.http_port, "/function/nosuch/")[0]))
              for _ in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(40)
        assert results == [404] * 20, results
        assert metric(p.http_port, "faas_gateway_route_misses_total", "not_found") == before + 20
    finally:
        p.stop()


def test_thrift_service_right_after_deploy_and_restart(tmp_path):
    """The Thrift port routes by service: a miss is confirmed with ListFunctions. A call
    naming a service deployed a moment ago, or reaching a gateway restarted a moment
    ago, is served, never answered UNKNOWN_METHOD."""
    from test_thrift_platform import deploy_calc, header_client
    from thrift.Thrift import TApplicationException

    p = Platform(tmp_path, pool_size=2, thrift=True).start()
    try:
        deploy_calc(p, tmp_path, "calc", argv=("theader", "--multiplexed"))
        c, _, s = header_client(p.thrift_port, service="Calculator")  # at once after the deploy
        try:
            assert c.call("add", 2, 40) == 42
        finally:
            s.close()
        for _ in range(2):
            p.gateway.proc.kill()
            p.gateway.proc.wait(5)
            p.gateway.port = None
            p.gateway.start()
            wait_until(lambda: port_open(p.thrift_port), 10, interval=0.001, what="thrift port")
            c, _, s = header_client(p.thrift_port, service="Calculator")
            try:
                assert c.call("add", 1, 2) == 3
            finally:
                s.close()
        c, _, s = header_client(p.thrift_port, service="Nosuch")
        try:
            c.call("add", 1, 2)
            raise AssertionError("a service nobody deployed was served")
        except TApplicationException as e:
            assert e.type == TApplicationException.UNKNOWN_METHOD, e
        finally:
            s.close()
    finally:
        p.stop()
