#!/usr/bin/python3
"""Cold start of a function run from an OCI image beside a code-directory function
(issue 15), in the same run on the same platform.

Both run the same static server (tests/e2e/images/srv.c, built by make): once from a
code directory against the host's filesystem, once from a busybox image built with
umoci (tests/e2e/image_util.py). N functions of each are deployed, interleaved, and
each is called once: every first call is a full cold start from the warm pool
(dispatch -> Acquire -> specialize -> exec -> readiness -> response). The image
functions share one image whose rootfs the worker manager unpacked before the first
measured call, so they measure the cached case.

The very first cold start of a new image (its blobs fetched from discovery and
unpacked by umoci on this host) is measured once, with its image_fetch_us and
image_unpack_us phases from the worker manager's `event=acquired` line.

usage: tests/bench/image_coldstart.py [--n 60] [--pool 2] [--json]   (FAAS_BUILD=<build dir>)
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
import image_util as iu  # noqa: E402
import platform_util as pu  # noqa: E402
from coldstart import one_request, pct  # noqa: E402

PHASES = ("total_us", "queue_us", "code_us", "specialize_us", "exec_us", "ready_us", "image_fetch_us",
          "image_unpack_us")


def acquired(p):
    """request id -> {phase: ms} from the worker manager's event=acquired lines (keys
    read by name: the image phases sit wherever the line puts them)."""
    out = {}
    for line in p.wm.log().splitlines():
        if "event=acquired" not in line:
            continue
        rid = re.search(r"request_id=(\w+)", line)
        if rid:
            out[rid.group(1)] = {k: int(v) / 1000.0 for k, v in re.findall(r"\b(\w+_us)=(\d+)", line)}
    return out


def medians(rows, keys):
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys} if rows else {}


def cold(p, name, rid):
    status, dt = one_request(p.http_port, f"/function/{name}/hello", rid)
    if status != 200:
        raise SystemExit(f"cold start of {name} failed: {status}\n{p.logs()}")
    return dt * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the figures")
    a = ap.parse_args()
    why = iu.available()
    if why:
        raise SystemExit(f"cannot build the images: {why}")
    tmp = tempfile.mkdtemp(prefix="faas-imgbench-")
    p = None
    try:
        L = iu.build_family(tmp, "img", with_versions=False)
        code = os.path.join(tmp, "code")
        os.makedirs(code)
        shutil.copy2(iu.SRV, os.path.join(code, "srv"))
        os.makedirs(os.path.join(tmp, "plat"))
        p = pu.Platform(os.path.join(tmp, "plat"), pool_size=a.pool).start()
        common = ("--health", "/healthz", "--idle-timeout", "2s")

        # the code directory's first cold start fetches its code: not what is compared
        p.ctl("deploy", "code-first", "--dir", code, "--cmd", "./srv", *common)
        cold(p, "code-first", "codefirst")
        # the very first cold start of this image on this host: fetch + unpack
        p.ctl("deploy", "img-first", "--image", L.ref("v1"), *common)
        time.sleep(0.05)  # the pool refills: we measure from a warm pool
        first_ms = cold(p, "img-first", "imgfirst")

        lat = {"code": [], "image": []}
        rids = {"code": [], "image": []}
        for i in range(a.n):
            # alternate which goes first so neither always follows the other's refill
            order = (("code", i), ("image", i)) if i % 2 == 0 else (("image", i), ("code", i))
            for kind, _ in order:
                name = f"{kind}-{i}"
                if kind == "code":
                    p.ctl("deploy", name, "--dir", code, "--cmd", "./srv", *common)
                else:
                    p.ctl("deploy", name, "--image", L.ref("v1"), *common)
                time.sleep(0.05)
                rid = f"b{kind}{i:04d}"
                lat[kind].append(cold(p, name, rid))
                rids[kind].append(rid)

        acq = acquired(p)
        res = {"n": a.n, "pool": a.pool}
        print(f"cold start from the warm pool (zero instances -> response complete), n={a.n} each, "
              f"pool={a.pool}, same static server:\n")
        print("| function | p50 ms | p99 ms | max ms | wm total | code | specialize | exec | ready |")
        print("|---|---|---|---|---|---|---|---|---|")
        for kind, label in (("code", "code directory"), ("image", "image, rootfs cached")):
            ph = medians([acq[r] for r in rids[kind] if r in acq], PHASES)
            xs = lat[kind]
            print(f"| {label} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | {max(xs):.2f} | "
                  + " | ".join(f"{ph.get(k, float('nan')):.2f}" for k in
                               ("total_us", "code_us", "specialize_us", "exec_us", "ready_us")) + " |")
            res[kind] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs), "phases": ph}
        d50 = res["image"]["p50"] - res["code"]["p50"]
        d99 = res["image"]["p99"] - res["code"]["p99"]
        print(f"\nimage - code directory: p50 {d50:+.2f} ms, p99 {d99:+.2f} ms (phase columns: medians, ms)\n")

        f = acq.get("imgfirst", {})
        print("first cold start of a new image (blobs fetched from discovery, unpacked by umoci):\n")
        print("| total ms | wm total | image fetch | image unpack | specialize | exec | ready |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {first_ms:.2f} | " + " | ".join(f"{f.get(k, float('nan')):.2f}" for k in
                                                ("total_us", "image_fetch_us", "image_unpack_us", "specialize_us",
                                                 "exec_us", "ready_us")) + " |")
        res["first"] = {"ms": first_ms, "phases": f}
        if a.json:
            print(json.dumps(res))
    finally:
        if p:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
