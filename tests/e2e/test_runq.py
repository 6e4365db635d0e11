"""The eBPF run-queue probe end to end (issue 12, docs/scaling.md): the worker manager
loads it as root, watches every pod's cgroup and sends its figures to the agent, whose
detector reports a CPU-bound pod's saturation as runq_latency; the new instance's first
request is timed from the report. With --no-runq-bpf the agent says it lacks the signal
and the cgroup signals still scale the function. Assertions are on counts and log lines
with bounded waits, never on latency: the machine is shared."""
import pytest

from platform_util import Platform, http_get, wait_until
from test_overload import Load, fn_log, overload_events


def start(tmp_path, *wm_args):
    return Platform(tmp_path, pool_size=3, wm_args=wm_args).start()


@pytest.fixture
def plat(tmp_path):
    p = start(tmp_path)
    try:
        yield p
    finally:
        p.stop()


def explain(plat, fn, load):
    """What a failed wait needs to be told apart: the load's answers, the reports by
    signal, the instances, and the worker's and the function's lines about them."""
    wm = [l for l in plat.wm.log(tail=None).splitlines()
          if any(w in l for w in ("runq", "overload", "scale", f"fn={fn}", "pod_"))]
    metrics = http_get(f"http://127.0.0.1:{plat.wm_mport}/metrics")[1]
    return "\n".join([f"codes={load.codes}", f"instances={plat.instances(fn)}",
                      *[l for l in metrics.splitlines() if l.startswith("faas_wm_overload_events_total")],
                      "--- worker (runq/overload/scale/pod lines, last 60)", *wm[-60:],
                      "--- function log (last 30 lines)", *fn_log(plat, fn).splitlines()[-30:]])


def test_cpu_saturation_is_reported_as_runq_latency_and_timed_to_first_request(plat):
    assert "event=runq_probe loaded=1" in plat.wm.log(), plat.wm.log()
    # 1-CPU quota; 8 clients burning 20 ms each keep 8 threads runnable for one CPU
    plat.deploy_hello("spin", "--cpu", "1", "--max-instances", "3")
    with Load(plat, "spin", "/burn?ms=20", 8) as load:
        def wait(pred, what):
            try:
                wait_until(pred, 45, interval=0.3, what=what)
            except TimeoutError as e:
                raise AssertionError(f"{e}\n{explain(plat, 'spin', load)}") from None

        wait(lambda: overload_events(plat, "runq_latency") >= 1, "an overload report from the run-queue probe")
        wait(lambda: len(plat.instances("spin")) >= 2, "a second instance for the saturated function")
        wait(lambda: plat.wm_metric("faas_wm_scale_up_first_request_seconds_count") >= 1,
             "the scaled-up instance's first request, timed")
    assert load.codes.get(200, 0) > 0, load.codes
    log = plat.wm.log(tail=None)  # whole: a slow run logs more than a tail holds after these lines
    assert "event=overload_signals fn=spin queueing=1 runq_latency=1" in log, log  # the agent has the signal
    assert "event=scaled_up_first_request fn=spin" in log


def test_steady_light_load_raises_no_runq_report(plat):
    plat.deploy_hello("calm", "--cpu", "1")
    with Load(plat, "calm", "/burn?ms=2", 1) as load:
        wait_until(lambda: load.codes.get(200, 0) >= 300, 60, interval=0.5, what="300 sequential calls")
    assert overload_events(plat) == 0, plat.wm.log()
    assert len(plat.instances("calm")) == 1


def test_without_the_probe_the_agent_says_so_and_cgroup_signals_scale(tmp_path):
    p = start(tmp_path, "--no-runq-bpf")
    try:
        assert 'event=runq_probe loaded=0 reason="--no-runq-bpf"' in p.wm.log()
        p.deploy_hello("burner", "--cpu", "200m", "--max-instances", "3")
        with Load(p, "burner", "/burn?ms=30", 4):
            wait_until(lambda: len(p.instances("burner")) >= 2, 45, interval=0.5,
                       what="a second instance from the cgroup signals alone")
        assert "event=overload_signals fn=burner queueing=1 runq_latency=0" in p.logs()
        assert overload_events(p, "runq_latency") == 0
        assert overload_events(p) >= 1
    finally:
        p.stop()
