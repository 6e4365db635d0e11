"""The step-load rows of `make bench` (issue 12, docs/scaling.md), imported by bench.py.

Each trial deploys a fresh CPU-bound function (hello-http's GET /burn?ms=5 under a
1-CPU quota, HELLO_LOG_REQUESTS=1), loads it at c1 for a second, then steps to c32 for
a second (wrk), then deletes it (its instances go, and the next trial starts on a quiet
machine). From the logs:
- step -> report: from the first request of the step reaching the user server (its
  "request begin" line) to the worker manager's first event=overload line for the
  function (wrk's own start-up is not the platform's);
- report -> new instance's first request: to the first request the user server logged
  on an instance other than the one that was serving before the step;
- the p99 latency of the step's first second (wrk's own).
The same trials with --max-instances 1 are the "scale-up off" rows."""
import datetime
import os
import re
import time

TRIALS = 20
BURN = "/burn?ms=5"
OVERLOAD = re.compile(r"^ts=(\S+) level=\w+ comp=workermgr event=overload pod=\S+ instance=\S+ fn=(\S+)", re.M)
BEGIN = re.compile(r"instance=(\S+) stream=stdout msg=\"hello: request begin id=\S+ t_ms=(\d+) ")


def _ms(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _trial(s, wrk, name, extra):
    p = s.platform
    p.deploy_hello(name, "-e", "HELLO_LOG_REQUESTS=1", "--cpu", "1", "--idle-timeout", "60m", *extra)
    url = p.url(name, BURN)
    wrk(url, 1, 1)  # the first request cold-starts one instance; c1 keeps it alone
    log = os.path.join(p.dir, "worker", "logs", name + ".log")
    before = [m.group(1) for m in BEGIN.finditer(_read(log))]
    first_inst = before[-1] if before else None
    t_wrk = time.time() * 1000
    r = wrk(url, 32, 1)
    time.sleep(0.2)  # the last log lines reach their files
    text, wm_text = _read(log), _read(p.wm.log_path)
    p.ctl("delete", name)
    steps = [int(m.group(2)) for m in BEGIN.finditer(text) if int(m.group(2)) >= t_wrk]
    t_step = min(steps) if steps else t_wrk
    rep = [_ms(m.group(1)) for m in OVERLOAD.finditer(wm_text)
           if m.group(2) == name and _ms(m.group(1)) >= t_wrk]
    out = {"p99": r["p99"], "rps": r["rps"]}
    if rep:
        out["report_ms"] = rep[0] - t_step
        news = [int(m.group(2)) for m in BEGIN.finditer(text)
                if m.group(1) != first_inst and int(m.group(2)) >= rep[0]]
        if news:
            out["first_ms"] = min(news) - rep[0]
    return out


def scen_scale(s, a, res, wrk):
    """Step load c1 -> c32 on a CPU-bound function: report and first-request times, p99 of the first second."""
    on, off = [], []
    for i in range(TRIALS):
        on.append(_trial(s, wrk, f"step-on-{i}", ()))
        off.append(_trial(s, wrk, f"step-off-{i}", ("--max-instances", "1")))
    rep = [t["report_ms"] for t in on if "report_ms" in t]
    first = [t["first_ms"] for t in on if "first_ms" in t]
    res["scale"] = {"trials": TRIALS, "reported": len(rep), "scaled": len(first),
                    "report_p50": _pct(rep, 50), "report_p99": _pct(rep, 99),
                    "first_p50": _pct(first, 50), "first_p99": _pct(first, 99),
                    "p99_on": _pct([t["p99"] for t in on], 50), "p99_off": _pct([t["p99"] for t in off], 50),
                    "rps_on": _pct([t["rps"] for t in on], 50), "rps_off": _pct([t["rps"] for t in off], 50)}
    sc = res["scale"]
    print(f"  step load: report {sc['report_p50']:.0f} ms after the step (p50), new instance's first request "
          f"{sc['first_p50']:.0f} ms after the report; first-second p99 {sc['p99_on'] / 1000:.1f} ms vs "
          f"{sc['p99_off'] / 1000:.1f} ms with scale-up off", flush=True)


def rows(res, add, f_us, f_rps):
    sc = res.get("scale")
    if not sc:
        return
    add(f"step c1 -> c32, CPU-bound (/burn 5 ms, 1-CPU quota): step -> overload report ({sc['reported']}/"
        f"{sc['trials']} trials reported)", 32, "platform", "", f"{sc['report_p50']:.0f} ms",
        f"{sc['report_p99']:.0f} ms", "", "", "report <= 5 ms", "pass" if sc["report_p99"] <= 5 else "FAIL")
    add(f"step: report -> new instance's first request ({sc['scaled']} trials)", 32, "platform", "",
        f"{sc['first_p50']:.0f} ms", f"{sc['first_p99']:.0f} ms", "", "", "<= 10 ms",
        "pass" if sc["first_p99"] <= 10 else "FAIL")
    add("step: first second, scale-up on (median of trials)", 32, "platform", f_rps(sc["rps_on"]), "",
        f_us(sc["p99_on"]), "", "", "", "")
    add("step: first second, scale-up off (--max-instances 1)", 32, "platform", f_rps(sc["rps_off"]), "",
        f_us(sc["p99_off"]), f"p99 on/off {sc['p99_on'] / max(sc['p99_off'], 1):.2f}", "", "", "")
