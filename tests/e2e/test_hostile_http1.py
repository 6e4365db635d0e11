"""Hostile HTTP/1.1 clients against a real platform (discovery, worker manager, gateway,
the hello function), with raw sockets:

- request smuggling: ambiguous framing (two Content-Lengths, TE with CL, a final coding
  other than chunked, HTTP/1.1 without Host) is answered 400 and the connection closed,
  so the pipelined "second request" hidden in the body never reaches the function (the
  hello function logs every request it sees: HELLO_LOG_REQUESTS=1);
- sizes: a 64 KiB header value is 431, a 100 KiB path 414, both before any function;
  just under the limits is 200;
- per-client connection caps on the HTTP, gRPC and Thrift ports (a small cap given by
  flag): one connection over the cap is closed at once, another source address
  (127.0.0.2) is still served, closing connections gives the slots back;
- slowloris: a head dribbled a line at a time and never finished is closed after the
  header timeout;
- slow read: large responses the client never reads do not grow the gateway's memory
  beyond what it holds anyway (the request bodies) plus bounded buffers.

Figures (not asserted) go to stdout with -s."""
import os
import re
import socket
import struct
import time

import pytest

from platform_util import Platform, http_get, wait_until, runs_asan

CAP = 6  # --max-conns-per-client
HEADER_TIMEOUT_MS = 2000
MAX_URL = 8192
MAX_HDR = 16384


@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("hostile1"), pool_size=1, grpc=True, thrift=True,
                 gateway_args=("--max-conns-per-client", str(CAP),
                               "--http-header-timeout-ms", str(HEADER_TIMEOUT_MS)))
    p.start()
    try:
        p.deploy_hello("hello", "-e", "HELLO_LOG_REQUESTS=1")
        wait_until(lambda: http_get(p.url("hello", "/hello"))[0] == 200, 60, interval=0.2,
                   what="hello answers through the gateway")
        yield p
    finally:
        p.stop()


def connect(port, source=None, timeout=10, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def exchange(port, data, timeout=10):
    """Sends data, reads until the gateway closes: (bytes, closed). closed is False when
    the gateway kept the connection open for timeout seconds."""
    s = connect(port, timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True
            if not d:
                return out, True
            out += d
    finally:
        s.close()


def status_of(resp):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", resp)
    return int(m.group(1)) if m else None


def fn_log(p, fn="hello"):
    try:
        with open(os.path.join(p.dir, "worker", "logs", fn + ".log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def gw_metric(p, name):
    # from an address of its own: the cap tests hold 127.0.0.1's whole cap
    s = connect(p.http_port, source="127.0.0.3")
    try:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        raw = b""
        while (d := s.recv(65536)):
            raw += d
    finally:
        s.close()
    txt = raw.split(b"\r\n\r\n", 1)[1].decode()
    total = 0.0
    for line in txt.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.split()[-1])
    return total


SMUGGLED = "smuggled-request"  # the function logs its target: /smuggled-request
HIDDEN = f"GET /function/hello/{SMUGGLED} HTTP/1.1\r\nHost: a\r\n\r\n".encode()

# name -> request whose body (as one of the hops may frame it) hides HIDDEN
SMUGGLING = {
    "cl5_cl40": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n"
                b"hello" + HIDDEN,
    "cl_twice_equal": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
                      b"hello" + HIDDEN,
    "te_and_cl": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "cl_and_te": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n" + HIDDEN,
    "te_not_chunked": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                      b"0\r\n\r\n" + HIDDEN,
    "no_host_11": b"GET /function/hello/hello HTTP/1.1\r\n\r\n" + HIDDEN,
    "host_twice": b"GET /function/hello/hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + HIDDEN,
    "obs_fold": b"GET /function/hello/hello HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n" + HIDDEN,
    "cl_not_digits": b"POST /function/hello/echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" + HIDDEN,
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_ambiguous_framing_is_400_and_closed(plat, case):
    """Expected: exactly one response, 400, then the gateway closes the connection."""
    resp, closed = exchange(plat.http_port, SMUGGLING[case])
    print(f"\nFIGURE smuggling {case}: status={status_of(resp)} closed={closed} "
          f"responses={resp.count(b'HTTP/1.1 ')}")
    assert status_of(resp) == 400, resp[:300]
    assert resp.count(b"HTTP/1.1 ") == 1, resp[:600]
    assert closed, "the connection must be closed after a framing error"


def test_smuggled_requests_never_reach_the_function(plat):
    """Expected: after every smuggling case and a marker request the function has
    logged the marker but not one smuggled request."""
    for case in sorted(SMUGGLING):
        exchange(plat.http_port, SMUGGLING[case])
    code, _ = http_get(plat.url("hello", "/hello?marker-after-smuggling"))[:2]
    assert code == 200
    wait_until(lambda: "marker-after-smuggling" in fn_log(plat), 20, interval=0.1,
               what="the marker request in the function's log")
    log = fn_log(plat)
    assert SMUGGLED not in log, [l for l in log.splitlines() if SMUGGLED in l]
    assert gw_metric(plat, "faas_gw_http1_framing_rejected_total") >= len(SMUGGLING)


def test_http10_without_host_is_fine(plat):
    """Expected: 200 from the function (HTTP/1.0 needs no Host)."""
    resp, closed = exchange(plat.http_port, b"GET /function/hello/hello HTTP/1.0\r\n\r\n")
    assert status_of(resp) == 200, resp[:300]
    assert b"hello from hello-http" in resp


def test_h2c_prior_knowledge_still_served(plat):
    """Expected: the h2c preface is not a framing error: the server's SETTINGS frame
    comes back (type 4 on stream 0), not an HTTP/1.1 400."""
    s = connect(plat.http_port)
    try:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00\x00\x00\x00\x00")
        head = b""
        while len(head) < 9:
            d = s.recv(9 - len(head))
            assert d, "closed"
            head += d
        assert head[3] == 4 and not head.startswith(b"HTTP/"), head
    finally:
        s.close()


def test_oversized_header_is_431_before_the_function(plat):
    """Expected: 431 with Connection: close, no function involved (it never logs it)."""
    before = gw_metric(plat, 'faas_gw_http_too_large_total{code="431"}')
    req = (b"GET /function/hello/hello?big-header HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 65536 +
           b"\r\n\r\n")
    resp, closed = exchange(plat.http_port, req)
    print(f"\nFIGURE 64KiB header: status={status_of(resp)} closed={closed}")
    assert status_of(resp) == 431, resp[:300]
    assert re.search(rb"(?i)\r\nconnection: close\r\n", resp), resp[:300]
    assert closed
    assert gw_metric(plat, 'faas_gw_http_too_large_total{code="431"}') == before + 1
    assert "big-header" not in fn_log(plat)


def test_oversized_path_is_414_before_the_function(plat):
    """Expected: 414 with Connection: close; the function never sees it."""
    req = b"GET /function/hello/long-path-" + b"a" * 100000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    resp, closed = exchange(plat.http_port, req)
    print(f"\nFIGURE 100KiB path: status={status_of(resp)} closed={closed}")
    assert status_of(resp) == 414, resp[:300]
    assert closed
    assert "long-path-" not in fn_log(plat)
    # the gateway's own routes are covered too
    resp, _ = exchange(plat.http_port, b"GET /healthz?" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 414, resp[:300]


def test_just_under_the_limits_is_200(plat):
    """Expected: 200 for a path of exactly --max-url-bytes and header fields of exactly
    --max-header-bytes (names + values, Host included), 431 one byte over, on the
    gateway's own route; and 200 through the function (within what hello reads)."""
    path = b"/healthz?" + b"a" * (MAX_URL - len(b"/healthz?"))
    assert len(path) == MAX_URL
    resp, _ = exchange(plat.http_port, b"GET " + path + b" HTTP/1.0\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 200, resp[:300]
    resp, _ = exchange(plat.http_port, b"GET " + path + b"a HTTP/1.0\r\nHost: a\r\n\r\n")
    assert status_of(resp) == 414, "one byte more is over"
    fixed = len(b"host") + 1 + len(b"x-fill")

    def with_fill(n):
        return b"GET /healthz HTTP/1.0\r\nhost: a\r\nx-fill: " + b"b" * n + b"\r\n\r\n"
    resp, _ = exchange(plat.http_port, with_fill(MAX_HDR - fixed))
    assert status_of(resp) == 200, resp[:300]
    resp, _ = exchange(plat.http_port, with_fill(MAX_HDR - fixed + 1))
    assert status_of(resp) == 431, "one byte more is over"
    resp, _ = exchange(plat.http_port, b"GET /function/hello/hello?" + b"q" * 4000 +
                       b" HTTP/1.0\r\nHost: a\r\nX-Fill: " + b"c" * 8000 + b"\r\n\r\n")
    assert status_of(resp) == 200, resp[:300]


# ---- connection caps ----

def still_open(s, secs=0.05):
    s.settimeout(secs)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except socket.timeout:
        return True
    except ConnectionResetError:
        return False


def closed_at_once(s, secs=5):
    """True if the gateway closes s (a 503 before the close is allowed) within secs."""
    s.settimeout(secs)
    out = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
    except socket.timeout:
        return False, out
    except ConnectionResetError:
        pass
    return True, out


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def thrift_call(name):
    """A framed binary CALL of name with an empty argument struct."""
    msg = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">I", 7) + b"\x00"
    return struct.pack(">I", len(msg)) + msg


def served(port_kind, plat, s):
    """One exchange on s proves the port serves it."""
    if port_kind == "http":
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")
    if port_kind == "grpc":
        s.sendall(H2_PREFACE)
        head = s.recv(9)
        return len(head) == 9 and head[3] == 4  # the server's SETTINGS
    s.sendall(thrift_call(b"NoSuchService:ping"))
    head = s.recv(8)  # frame length, then the reply's version word (EXCEPTION = 3)
    return len(head) == 8 and struct.unpack(">I", head[4:])[0] == 0x80010003


@pytest.mark.parametrize("kind", ["http", "grpc", "thrift"])
def test_per_client_cap(plat, kind):
    """Expected: CAP connections from 127.0.0.1 are served, the next is closed at once
    (HTTP: after a 503), one from 127.0.0.2 is served meanwhile, and once the first
    ones are closed 127.0.0.1 gets slots again."""
    port = {"http": plat.http_port, "grpc": plat.grpc_port, "thrift": plat.thrift_port}[kind]
    metric = f'faas_gw_conn_refused_total{{port="{kind}",reason="per_client"}}'
    before = gw_metric(plat, metric)
    base = gw_metric(plat, "faas_gw_connections ")  # the scrape's own connection included
    held = [connect(port) for _ in range(CAP)]
    try:
        # the gateway's loops (SO_REUSEPORT) accept from their own queues: the cap counts
        # a connection once a loop took it, so the extra one is over the cap only then
        wait_until(lambda: gw_metric(plat, "faas_gw_connections ") >= base + CAP, 10, interval=0.02,
                   what="the held connections accepted")
        extra = connect(port)
        gone, said = closed_at_once(extra)
        extra.close()
        print(f"\nFIGURE cap {kind}: extra connection closed={gone} said={said[:40]!r}")
        assert gone, "connection over the cap must be closed"
        if kind == "http" and said:
            assert said.startswith(b"HTTP/1.1 503"), said
        assert gw_metric(plat, metric) == before + 1
        assert all(still_open(s) for s in held)
        assert served(kind, plat, held[0])
        other = connect(port, source="127.0.0.2")
        try:
            assert served(kind, plat, other), "another client address has its own cap"
        finally:
            other.close()
    finally:
        for s in held:
            s.close()

    def slots_back():
        s = connect(port)
        try:
            return served(kind, plat, s)
        except OSError:
            return False
        finally:
            s.close()
    wait_until(slots_back, 10, interval=0.1, what="slots given back after close")


# ---- slow clients ----

def test_slowloris_closed_after_header_timeout(plat):
    """Expected: a head sent one header line every 200 ms and never finished is closed
    by the gateway (HTTP/1 header timeout, --http-header-timeout-ms) although bytes keep
    arriving; the dribbling is bounded at 10x the timeout."""
    s = connect(plat.http_port)
    t0 = time.monotonic()
    closed = False
    try:
        s.sendall(b"GET /function/hello/hello HTTP/1.1\r\nHost: a\r\n")
        s.settimeout(0.2)
        while time.monotonic() - t0 < HEADER_TIMEOUT_MS / 1000 * 10:
            try:
                s.sendall(b"X-Drip: 1\r\n")
                d = s.recv(4096)
                if not d:
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    finally:
        s.close()
    print(f"\nFIGURE slowloris: closed={closed} after {time.monotonic() - t0:.2f}s "
          f"(header timeout {HEADER_TIMEOUT_MS} ms)")
    assert closed, "a never-finished head must be closed"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def peak_rss_growth_mb(pid, base, secs):
    peak = base
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:  # let whatever would pile up pile up
        peak = max(peak, rss_kb(pid))
        time.sleep(0.05)
    return (peak - base) / 1024


def in_flight(plat, n, body, path, tag, rcvbuf=None):
    """n connections each sending a body-byte request to path (tagged), not reading."""
    socks = []
    for i in range(n):
        s = connect(plat.http_port, rcvbuf=rcvbuf)
        s.sendall(b"%s?%s-%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (path, tag, i, body))
        s.sendall(b"r" * body)
        socks.append(s)
    wait_until(lambda: all(f"{tag.decode()}-{i}" in fn_log(plat) for i in range(n)), 60, interval=0.05,
               what=f"every {tag} request reached the function")
    return socks


def test_slow_reader_keeps_gateway_memory_bounded(plat):
    """Expected: N clients each POST a BODY-byte body to /echo (a BODY-byte response)
    and never read (4 KiB receive buffers). The gateway streams responses under flow
    control (the function's 1 MiB stream window comes back only once h2o wrote the
    bytes), so its RSS grows by what it holds for the requests anyway, measured first
    with the same bodies sent to /slow (a tiny answer), plus at most a few MiB per
    response; buffering whole responses would add N * BODY. The reference goes first:
    memory the allocator keeps after it makes the slow-read figure smaller, never
    larger. Measured on this VM: the slow-read growth minus the reference is 0-2 MiB
    per response at 1, 3 and 7 MiB bodies, i.e. not proportional to the response."""
    n, body = 4, 7 << 20
    pid = plat.gateway.proc.pid
    if runs_asan(pid):
        pytest.skip("under ASan freed memory sits in quarantine: RSS counts every byte ever allocated")
    base = rss_kb(pid)
    socks = in_flight(plat, n, body, b"GET /function/hello/slow?ms=3000&x", b"reference")
    try:
        grow_ref = peak_rss_growth_mb(pid, base, 2)
    finally:
        for s in socks:
            s.close()
    # h2o notices a close only once the (3 s) answer is written: then the slots are back
    wait_until(lambda: gw_metric(plat, "faas_gw_connections") <= 1, 30, interval=0.1,
               what="the reference connections closed")
    base2 = rss_kb(pid)
    socks = in_flight(plat, n, body, b"POST /function/hello/echo", b"slow-read", rcvbuf=4096)
    try:
        grow_slow = peak_rss_growth_mb(pid, base2, 3)
    finally:
        for s in socks:
            s.close()
    print(f"\nFIGURE slow-read: gateway RSS +{grow_slow:.1f} MiB with {n} x {body >> 20} MiB responses unread; "
          f"+{grow_ref:.1f} MiB for the same requests with tiny answers (base {base / 1024:.1f} MiB)")
    assert grow_slow < grow_ref + n * 4, (grow_slow, grow_ref)
    assert http_get(plat.url("hello", "/hello"))[0] == 200
