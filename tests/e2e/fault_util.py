"""Fault injection under load (issue 14): a keep-alive HTTP/1.1 load generator that
records every call, kill -9 / restart of one platform daemon by PID, and the figures
the fault tests assert on and the bench prints.

Outcomes: an int HTTP status, or a transport failure as a string:
  connect_refused  the TCP connect was refused (nothing listens: the daemon is down)
  reset            the connection broke: reset, EOF before a whole response, broken pipe
  timeout          no answer within the call's timeout
  error:<Name>     any other OSError (should not happen; shown by name so it is seen)
Transport failures are never counted as HTTP errors: a client of a dead process
cannot get an HTTP answer, and the contract is about the answers that do come."""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

from platform_util import port_open, wait_until

FULL_RUN = 50  # consecutive 200s that make "full service" (see Summary.time_to_full)


class Call:
    __slots__ = ("thread", "t0", "t1", "outcome", "retry_after", "body")

    def __init__(self, thread, t0, t1, outcome, retry_after=None, body=""):
        self.thread, self.t0, self.t1, self.outcome = thread, t0, t1, outcome
        self.retry_after, self.body = retry_after, body


class Load:
    """N threads, each with one keep-alive HTTP/1.1 connection (http.client), calling
    GET path on host:port in a loop. A failed call closes the connection and the next
    call opens a new one. After a refused connect a thread waits refused_backoff s
    before the next try: 8 threads spinning on refused connects would take the 2 CPUs
    the restarting daemon needs, and would only multiply identical records."""

    def __init__(self, port, path, threads=8, timeout=5.0, host="127.0.0.1", refused_backoff=0.005,
                 keep_body=False):
        self.host, self.port, self.path, self.keep_body = host, port, path, keep_body
        self.threads, self.timeout, self.backoff = threads, timeout, refused_backoff
        self.calls = []  # list.append is atomic under the GIL
        self._stop = threading.Event()
        self._ts = []

    def start(self):
        self._ts = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]
        for t in self._ts:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._ts:
            t.join(self.timeout + 5)
        return self.calls

    def _run(self, i):
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            c, keep = self._one(conn, i)
            self.calls.append(c)
            if not keep:
                conn.close()
                conn = None
                if c.outcome == "connect_refused":
                    self._stop.wait(self.backoff)

    def _one(self, conn, i):
        t0 = time.monotonic()
        try:
            if conn.sock is None:
                conn.connect()  # apart from the request, so a refused connect is told apart
        except ConnectionRefusedError:
            return Call(i, t0, time.monotonic(), "connect_refused"), False
        except socket.timeout:
            return Call(i, t0, time.monotonic(), "timeout"), False
        except OSError as e:
            return Call(i, t0, time.monotonic(), f"error:{type(e).__name__}"), False
        try:
            conn.request("GET", self.path)
            r = conn.getresponse()
            body = r.read()
        except socket.timeout:
            return Call(i, t0, time.monotonic(), "timeout"), False
        except (ConnectionError, http.client.HTTPException):
            # reset, broken pipe, RemoteDisconnected, IncompleteRead, BadStatusLine
            return Call(i, t0, time.monotonic(), "reset"), False
        except OSError as e:
            return Call(i, t0, time.monotonic(), f"error:{type(e).__name__}"), False
        t1 = time.monotonic()
        # a 200's body only when asked (GET /whoami says which instance served)
        text = body[:4096].decode(errors="replace") if r.status != 200 or self.keep_body else ""
        return Call(i, t0, t1, r.status, r.getheader("Retry-After"), text), not r.will_close

    def count_since(self, t, outcome=None):
        return sum(1 for c in list(self.calls) if c.t0 >= t and (outcome is None or c.outcome == outcome))

    def ok_run_since(self, t, n=FULL_RUN):
        """True once n consecutive calls (by start time) begun after t all got 200."""
        return Summary.first_full_run([c for c in list(self.calls) if c.t0 >= t], n) is not None


# ---------------------------------------------------------------- killing and restarting

def kill9(daemon):
    """SIGKILL a platform_util.Daemon by its PID and reap it; returns the monotonic time
    just before the signal (the kill instant the figures are measured from)."""
    t = time.monotonic()
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    return t


def kill9_pid(pid):
    """SIGKILL a process that is not ours to reap (a pod's agent or user server)."""
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return t


def spawn(daemon):
    """Starts daemon again with its own argv, env and log (appended): same ports, same
    state dir. Returns at once, without waiting for its port (Daemon.start waits), so a
    caller can probe the very first moments of the new process."""
    log = open(daemon.log_path, "ab")
    try:
        daemon.proc = subprocess.Popen(daemon.argv, stdout=log, stderr=subprocess.STDOUT, env=daemon.env,
                                       start_new_session=True)
    finally:
        log.close()
    return time.monotonic()


def restart(daemon, timeout=15):
    """spawn, then wait (polling) until its port accepts; returns that time."""
    spawn(daemon)
    wait_until(lambda: daemon._alive() and port_open(daemon.port), timeout, interval=0.005,
               what=f"{daemon.name} restarted on {daemon.port}")
    return time.monotonic()


def proc_ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def children(pid):
    """Direct children of pid (a /proc scan: the pod's user server under its agent)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if proc_ppid(int(d)) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out


# ---------------------------------------------------------------- figures

def outcome_key(o):
    return str(o)


class Summary:
    """Figures of one fault run, from the calls of a Load.

    Windows by a call's start time: before = started before the kill; during = from the
    kill until the restarted daemon accepted connections again (empty when nothing was
    restarted); after = the rest.

    in_flight_at_kill: calls started before the kill instant and finished after it, over
    all threads (at most one per thread).

    time_to_full: seconds from the kill to the end of the first of FULL_RUN consecutive
    200 answers, the calls begun after the kill taken in the order they started across
    all threads. Its end, not its start: a call held by the gateway while an instance
    is replaced started at once but was served only when the replacement was, which is
    when service came back. None when no such run happened before the load stopped. A
    call begun after the kill that failed late (a timeout) breaks every run it overlaps
    in start order, as it should: service was not full then.

    slowest_since_kill_ms: the longest call begun after the kill (held calls show here)."""

    def __init__(self, calls, t_kill, t_up=None, fault="", extra=None):
        self.fault, self.t_kill = fault, t_kill
        self.t_up = t_up if t_up is not None else t_kill
        self.calls = sorted(calls, key=lambda c: c.t0)
        self.extra = dict(extra or {})

    def window(self, name):
        if name == "before":
            return [c for c in self.calls if c.t0 < self.t_kill]
        if name == "during":
            return [c for c in self.calls if self.t_kill <= c.t0 < self.t_up]
        return [c for c in self.calls if c.t0 >= max(self.t_up, self.t_kill)]

    @staticmethod
    def counts(calls):
        out = {}
        for c in calls:
            k = outcome_key(c.outcome)
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    def in_flight_at_kill(self):
        return sum(1 for c in self.calls if c.t0 < self.t_kill < c.t1)

    def after_kill(self):
        return [c for c in self.calls if c.t0 >= self.t_kill]

    @staticmethod
    def first_full_run(calls, n=FULL_RUN):
        run = 0
        for i, c in enumerate(calls):
            run = run + 1 if c.outcome == 200 else 0
            if run == n:
                return calls[i - n + 1]
        return None

    def time_to_full(self):
        first = self.first_full_run(self.after_kill())
        return None if first is None else first.t1 - self.t_kill

    def statuses(self, pred, calls=None):
        """Calls (default: all) whose outcome is an HTTP status matching pred."""
        return [c for c in (self.calls if calls is None else calls) if isinstance(c.outcome, int) and pred(c)]

    def n_404(self):
        return len(self.statuses(lambda c: c.outcome == 404))

    def n_5xx(self, calls=None, allow_503_retry=False):
        """5xx answers; with allow_503_retry a 503 carrying Retry-After (an honest
        "not ready yet, come back") is not counted."""
        return len(self.statuses(lambda c: c.outcome >= 500 and not (
            allow_503_retry and c.outcome == 503 and c.retry_after is not None), calls))

    def transport(self, calls=None):
        return [c for c in (self.calls if calls is None else calls) if not isinstance(c.outcome, int)]

    def samples(self, k=3):
        """A few distinct non-200 answers with their bodies, for failure messages."""
        seen, out = set(), []
        for c in self.calls:
            if isinstance(c.outcome, int) and c.outcome != 200 and (c.outcome, c.body) not in seen:
                seen.add((c.outcome, c.body))
                out.append(f"{c.outcome} at kill{c.t0 - self.t_kill:+.3f}s: {c.body.strip()[:120]}")
                if len(out) >= k:
                    break
        return out

    def figures(self):
        ttf = self.time_to_full()
        after = self.after_kill()
        tr = self.transport(after)
        fig = {
            "fault": self.fault,
            "requests": len(self.calls),
            "before": self.counts(self.window("before")),
            "during": self.counts(self.window("during")),
            "after": self.counts(self.window("after")),
            "since_kill": self.counts(after),
            "connect_errors": sum(1 for c in tr if c.outcome == "connect_refused"),
            "transport_errors": len(tr),
            "n_404": self.n_404(),
            "n_5xx": self.n_5xx(),
            "in_flight_at_kill": self.in_flight_at_kill(),
            "down_s": round(self.t_up - self.t_kill, 4),
            "time_to_full_s": None if ttf is None else round(ttf, 4),
            "slowest_since_kill_ms": round(max((c.t1 - c.t0 for c in after), default=0) * 1000, 1),
            "observed_s": round(self.calls[-1].t0 - self.t_kill, 3) if self.calls else 0,
            "samples": self.samples(),
        }
        fig.update(self.extra)
        return fig


def report(fig):
    """Prints the figures (pytest -s shows them) and appends them as one JSON line to
    $FAAS_FAULT_FIGURES when it is set."""
    print(f"\nfault figures: {json.dumps(fig, sort_keys=True)}")
    path = os.environ.get("FAAS_FAULT_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(fig, sort_keys=True) + "\n")
    return fig


def markdown_table(figs):
    """One row per fault: what the bench prints and the results file keeps."""
    rows = ["| fault | requests | by status (since the kill) | connect errors | other transport errors "
            "| in-flight at kill | time to full service | notes |",
            "|---|---|---|---|---|---|---|---|"]
    for f in figs:
        st = ", ".join(f"{k}: {v}" for k, v in f["since_kill"].items() if not k[0].isalpha())
        ttf = f["time_to_full_s"]
        ttf = f"{ttf * 1000:.0f} ms" if ttf is not None else f"not reached in {f['observed_s']} s"
        rows.append(f"| {f['fault']} | {f['requests']} | {st or '-'} | {f['connect_errors']} | "
                    f"{f['transport_errors'] - f['connect_errors']} | {f['in_flight_at_kill']} | {ttf} | "
                    f"{f.get('note', '')} |")
    return "\n".join(rows)
