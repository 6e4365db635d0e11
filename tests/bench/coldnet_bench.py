"""The cold start with and without the pod's network namespace, and with and without the
user server's seccomp filter (issue 13), imported by bench.py: a second platform with
`faas-workermgr --no-pod-netns` (or `--no-seccomp`) runs beside the bench's own, and
cold starts alternate between the two (a deploy, one timed GET, a delete, each
from a full warm pool), so both see the same machine load. The figure is the median of
the paired differences, beside each side's p50/p99."""
import http.client
import os
import statistics
import time


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def _one(pu, p, name):
    pu.wait_until(lambda: p.wm_metric("faas_wm_pool_ready") >= 2 and p.wm_metric("faas_wm_instances") == 0, 20,
                  what="warm pool full, no instance left")
    p.deploy_hello(name, "--idle-timeout", "60m")
    c = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=30)
    try:
        t0 = time.perf_counter()
        c.request("GET", f"/function/{name}/hello")
        r = c.getresponse()
        r.read()
        us = (time.perf_counter() - t0) * 1e6
    finally:
        c.close()
    p.ctl("delete", name)
    if r.status != 200:
        raise RuntimeError(f"cold start {name}: HTTP {r.status}")
    return us


def _pair(s, a, flag, tag):
    """Cold starts alternated between the bench's platform and one with flag."""
    pu = s.pu
    d = os.path.join(s.tmp, f"platform{flag}")
    os.makedirs(d, exist_ok=True)
    other = pu.Platform(d, pool_size=2, wm_args=(flag,))
    other.start()
    mine = s.platform
    orig = mine.wm_metric
    try:
        # the bench's own platform keeps its "bench" instance: count only the new ones
        base = orig("faas_wm_instances")
        mine.wm_metric = lambda n: orig(n) - (base if n == "faas_wm_instances" else 0)
        on, off = [], []
        for i in range(-2, min(a.cold, 60)):  # two unmeasured pairs first (code cache, page cache)
            x, y = _one(pu, mine, f"{tag}-on-{i + 2}"), _one(pu, other, f"{tag}-off-{i + 2}")
            if i >= 0:
                on.append(x)
                off.append(y)
    finally:
        mine.wm_metric = orig
        other.stop()
    diffs = [x - y for x, y in zip(on, off)]
    return {"n": len(on), "on_p50": _pct(on, 50), "on_p99": _pct(on, 99), "off_p50": _pct(off, 50),
            "off_p99": _pct(off, 99), "diff_median": statistics.median(diffs) if diffs else float("nan")}


def scen_coldnet(s, a, res):
    c = res["coldnet"] = _pair(s, a, "--no-pod-netns", "net")
    print(f"  cold start with the pod's netns p50 {c['on_p50'] / 1000:.2f} ms, without {c['off_p50'] / 1000:.2f} ms; "
          f"paired difference median {c['diff_median'] / 1000:+.2f} ms", flush=True)


def scen_coldsec(s, a, res):
    c = res["coldsec"] = _pair(s, a, "--no-seccomp", "sec")
    print(f"  cold start with the seccomp filter p50 {c['on_p50'] / 1000:.2f} ms, without {c['off_p50'] / 1000:.2f} "
          f"ms; paired difference median {c['diff_median'] / 1000:+.2f} ms", flush=True)


def rows(res, add, f_us):
    for key, what, flag in (("coldnet", "the pod network namespace", "--no-pod-netns"),
                            ("coldsec", "the seccomp filter", "--no-seccomp")):
        c = res.get(key)
        if not c:
            continue
        add(f"cold start with {what} (n={c['n']}, paired)", 1, "platform", "", f_us(c["on_p50"]),
            f_us(c["on_p99"]), "", "", "", "")
        add(f"cold start, {flag} (the same runs, alternated)", 1, "platform", "", f_us(c["off_p50"]),
            f_us(c["off_p99"]), "", "", "", "")
        add(f"cold start: what {what} adds (median of paired differences)", 1, "platform", "",
            f"{c['diff_median'] / 1000:+.2f} ms", "", "", "", "p50 + 0.3 ms at most",
            "pass" if c["diff_median"] <= 300 else "FAIL")
