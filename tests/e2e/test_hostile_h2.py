"""Hostile HTTP/2 clients against the gateway's HTTP port (h2c on nghttp2, gateway/h2c.c)
and its gRPC port (h2b), issue 14. Each case opens N raw connections (frames built by
hand: Debian has no python3-h2 here) that flood in one published way, samples the
gateway's RSS (/proc/<pid>/status VmRSS) meanwhile, and asserts:
  - RSS stays under baseline + RSS_BOUND_MB;
  - each flooding connection is closed, or no longer read (its sends block), within a
    bounded time, and where a GOAWAY is expected it carries the code nghttp2 or the
    gateway uses (ENHANCE_YOUR_CALM for our limits, INTERNAL_ERROR for nghttp2's rapid
    reset limit);
  - well-behaved clients (curl --http2-prior-knowledge, curl --http2 Upgrade, plain
    HTTP/1.1) are served correctly while the flood runs.
Figures (peak RSS over baseline per case) are appended to $H2C_FIGURES when set, before
the assertions, so the same file measures an old build too."""
import json
import re
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from platform_util import Platform, curl, http_get, runs_asan, wait_until

N = int(os.environ.get("H2C_CONNS", "12"))
FLOOD_S = float(os.environ.get("H2C_FLOOD_S", "60"))  # longest a flood goes on unanswered
RSS_BOUND_MB = 64
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0, 1, 2, 7, 8, 11


# ---- frames and HPACK (literal fields without indexing, no Huffman: always valid) ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hint(n, bits):
    lim = (1 << bits) - 1
    if n < lim:
        return bytes([n])
    out, n = [lim], n - lim
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + [n])


def hstr(b):
    return hint(len(b), 7) + b


def hpack(fields):
    return b"".join(b"\x00" + hstr(k.encode()) + hstr(v.encode() if isinstance(v, str) else v) for k, v in fields)


def req_block(method, path, extra=()):
    return hpack([(":method", method), (":scheme", "http"), (":path", path), (":authority", "gw"), *extra])


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def connect(port, rcvbuf=4096):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a small receive buffer: a client that does not read fills it at once
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


def read_frames(s, timeout, until=None):
    """Frames until EOF, reset, timeout or until(frame) is true: [(type, flags, sid, payload)], eof."""
    s.settimeout(0.5)
    buf, out, end = b"", [], time.time() + timeout
    while time.time() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return out, True
        if not chunk:
            return out, True
        buf += chunk
        while len(buf) >= 9:
            ln = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + ln:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + ln])
            buf = buf[9 + ln:]
            out.append(f)
            if until and until(f):
                return out, False
    return out, False


def goaway_code(frames):
    for t, _, _, p in frames:
        if t == GOAWAY:
            return int.from_bytes(p[4:8], "big")
    return None


def flood(s, chunk, budget_s):
    """Sends chunk again and again without reading: 'closed' when the gateway closed the
    connection, 'blocked' when a send made no progress for 3 s (the gateway stopped
    reading), 'sent' if neither happened within budget_s."""
    s.settimeout(3)
    end = time.time() + min(budget_s, FLOOD_S)
    while time.time() < end:
        try:
            s.sendall(chunk)
        except socket.timeout:
            return "blocked"
        except OSError:
            return "closed"
    return "sent"


# ---- the platform, RSS, and the well-behaved clients ----

@pytest.fixture(scope="module")
def plat(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("h2hostile"), grpc=True).start()
    p.deploy_hello()
    wait_until(lambda: curl(p.url("hello", "/hello"))[0] == 200, 60, interval=0.2, what="hello serves")
    yield p
    p.stop()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def well_behaved(plat):
    """Each client gets hello's answer: h2c prior knowledge, h2c Upgrade, HTTP/1.1."""
    for flags in (["--http2-prior-knowledge"], ["--http2"], ["--http1.1"]):
        code, body, err = curl(*flags, plat.url("hello", "/hello"), timeout=20)
        assert code == 200 and body == "hello from hello-http\n", (flags, code, body, err)


def run_case(plat, name, attack, n=N, port=None):
    """Runs attack(port) on n connections at once while sampling RSS and serving
    well-behaved clients; returns the attacks' results."""
    pid = plat.gateway.proc.pid
    base = rss_kb(pid)
    peak = [base]
    results = [None] * n
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.05)

    def one(i):
        try:
            results[i] = attack(port or plat.http_port)
        except Exception as e:  # reported below
            results[i] = {"error": repr(e)}

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the flood is under way (this is not a wait for a result)
    served_error = None
    try:
        well_behaved(plat)
    except AssertionError as e:
        served_error = e
    for t in threads:
        t.join(timeout=120)
    stop.set()
    sampler.join(timeout=5)
    growth_mb = (peak[0] - base) / 1024
    if os.environ.get("H2C_FIGURES"):
        with open(os.environ["H2C_FIGURES"], "a") as f:
            f.write(json.dumps({"case": name, "conns": n, "base_mb": round(base / 1024, 1),
                                "peak_mb": round(peak[0] / 1024, 1), "growth_mb": round(growth_mb, 1),
                                "results": [r if isinstance(r, dict) else {} for r in results][:3]}) + "\n")
    assert all(not any(t.is_alive() for t in threads) for _ in [0]), f"{name}: an attack did not end"
    assert all(r is not None and "error" not in r for r in results), results
    # (not under ASan: its quarantine keeps every freed byte resident for a while)
    assert growth_mb < RSS_BOUND_MB or runs_asan(pid), f"{name}: RSS grew {growth_mb:.1f} MB (base {base // 1024} MB)"
    if served_error:
        raise served_error
    # and after it, too
    well_behaved(plat)
    return results


# ---- the cases ----

def test_settings_flood_without_reading(plat):
    """SETTINGS frames, never reading the ACKs (CVE-2019-9515). Expected: the gateway
    stops reading once its unsent ACKs pass the output bound (the client's sends block)
    or ends it with GOAWAY ENHANCE_YOUR_CALM; memory stays bounded."""
    def attack(port):
        s = connect(port)
        s.sendall(PREFACE + settings())
        out = flood(s, settings((3, 100)) * 4000, 60)
        frames, _ = read_frames(s, 2)
        s.close()
        return {"out": out, "goaway": goaway_code(frames)}
    for r in run_case(plat, "settings_flood", attack):
        assert r["out"] in ("blocked", "closed"), r
        assert r["goaway"] in (None, ENHANCE_YOUR_CALM), r


def test_ping_flood_without_reading(plat):
    """PING frames, never reading the ACKs (CVE-2019-9512). Expected as for SETTINGS:
    reads stop (the client blocks) or GOAWAY ENHANCE_YOUR_CALM (nghttp2's outbound ACK cap)."""
    def attack(port):
        s = connect(port)
        s.sendall(PREFACE + settings())
        out = flood(s, frame(PING, 0, 0, b"12345678") * 4000, 60)
        frames, _ = read_frames(s, 2)
        s.close()
        return {"out": out, "goaway": goaway_code(frames)}
    for r in run_case(plat, "ping_flood", attack):
        assert r["out"] in ("blocked", "closed"), r
        assert r["goaway"] in (None, ENHANCE_YOUR_CALM), r


def test_rapid_reset(plat):
    """HEADERS (a function call) + RST_STREAM CANCEL in a loop (CVE-2023-44487).
    Expected: nghttp2's reset rate limit (burst 1000, 33/s) ends the connection with
    GOAWAY (INTERNAL_ERROR is the code nghttp2 1.52 + the fix uses), well before 20000."""
    block = req_block("GET", "/function/hello/hello")

    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings())
        sid, out = 1, "sent"
        s.settimeout(10)
        try:
            while sid < 40000:
                batch = b""
                for _ in range(100):
                    batch += frame(HEADERS, END_STREAM | END_HEADERS, sid, block) + frame(
                        RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
                    sid += 2
                s.sendall(batch)
        except OSError:
            out = "closed"
        frames, eof = read_frames(s, 15, until=lambda f: f[0] == GOAWAY)
        s.close()
        return {"out": out, "streams": sid // 2, "goaway": goaway_code(frames)}
    for r in run_case(plat, "rapid_reset", attack, n=min(N, 8)):
        assert r["goaway"] in (INTERNAL_ERROR, ENHANCE_YOUR_CALM), r


def test_empty_data_frames(plat):
    """A request whose body is empty DATA frames without END_STREAM (CVE-2019-9518).
    Expected: GOAWAY ENHANCE_YOUR_CALM after 1000 of them (gateway/h2c.c H2C_MAX_EMPTY_FRAMES)."""
    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, req_block("POST", "/function/hello/echo")))
        out = flood(s, frame(DATA, 0, 1) * 2000, 30)
        frames, _ = read_frames(s, 10, until=lambda f: f[0] == GOAWAY)
        s.close()
        return {"out": out, "goaway": goaway_code(frames)}
    for r in run_case(plat, "empty_data", attack):
        assert r["goaway"] == ENHANCE_YOUR_CALM, r


def test_empty_headers_and_continuation_flood(plat):
    """Zero-length HEADERS frames on new streams, and one header block split into empty
    CONTINUATION frames (CVE-2024-27983/28182). Expected: GOAWAY ENHANCE_YOUR_CALM, from
    the empty-frame counter or nghttp2's CONTINUATION cap (8 per block)."""
    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings())
        batch = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i) for i in range(1500))
        out1 = flood(s, batch, 0.01)
        f1, _ = read_frames(s, 10, until=lambda f: f[0] == GOAWAY)
        s.close()
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings() + frame(HEADERS, END_STREAM, 1, req_block("GET", "/healthz")))
        out2 = flood(s, frame(CONTINUATION, 0, 1) * 1000, 10)
        f2, _ = read_frames(s, 10, until=lambda f: f[0] == GOAWAY)
        s.close()
        return {"out": [out1, out2], "goaway": [goaway_code(f1), goaway_code(f2)]}
    for r in run_case(plat, "empty_headers_continuation", attack):
        assert r["goaway"] == [ENHANCE_YOUR_CALM, ENHANCE_YOUR_CALM], r


def test_data_dribble(plat):
    """A body sent one byte per DATA frame, with WINDOW_UPDATEs in between. Expected:
    GOAWAY ENHANCE_YOUR_CALM after 4096 tiny frames (H2C_MAX_TINY_DATA): the body is
    buffered whole before the function runs, so dribbling only costs the gateway CPU."""
    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, req_block("POST", "/function/hello/echo")))
        chunk = (frame(DATA, 0, 1, b"x") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))) * 1000
        out = flood(s, chunk, 20)
        frames, _ = read_frames(s, 10, until=lambda f: f[0] == GOAWAY)
        s.close()
        return {"out": out, "goaway": goaway_code(frames)}
    for r in run_case(plat, "data_dribble", attack):
        assert r["goaway"] == ENHANCE_YOUR_CALM, r


def test_streams_beyond_the_cap(plat):
    """300 requests left open (HEADERS without END_STREAM) on one connection; the
    gateway's SETTINGS_MAX_CONCURRENT_STREAMS is 100. Expected (nghttp2's rules): before
    the client ACKed our SETTINGS every stream past the 100th is refused with RST_STREAM
    REFUSED_STREAM (exactly 200 here) and the connection stays up; once it ACKed them,
    the 101st stream is a connection error: GOAWAY PROTOCOL_ERROR, last stream 199."""
    block = req_block("POST", "/function/hello/echo")
    streams = b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) for i in range(300))

    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings())
        first, _ = read_frames(s, 5, until=lambda f: f[0] == SETTINGS)  # our SETTINGS were sent: an ACK is valid
        s.sendall(frame(SETTINGS, ACK, 0) + streams)
        acked, eof_acked = read_frames(s, 10, until=lambda f: f[0] == GOAWAY)
        s.close()
        g = [p for t, _, _, p in acked if t == GOAWAY]
        r = {"acked_goaway": (int.from_bytes(g[0][4:8], "big"), int.from_bytes(g[0][:4], "big")) if g else None}
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings() + streams)
        seen = []

        def enough(f):
            if f[0] == RST_STREAM and int.from_bytes(f[3], "big") == REFUSED_STREAM:
                seen.append(f[2])
            return len(seen) >= 200
        frames, eof = read_frames(s, 10, until=enough)
        time.sleep(0.5)  # a 201st refusal, if the cap were wrong, would be in flight
        more, _ = read_frames(s, 0.5)
        refused = sum(1 for t, _, _, p in frames + more if t == RST_STREAM and int.from_bytes(p, "big") == REFUSED_STREAM)
        s.sendall(frame(PING, 0, 0, b"stillup!"))
        pong, _ = read_frames(s, 5, until=lambda f: f[0] == PING and f[1] & ACK)
        s.close()
        r.update(refused=refused, eof=eof, pong=any(f[0] == PING for f in pong))
        return r
    for r in run_case(plat, "streams_beyond_cap", attack):
        assert r["refused"] == 200 and r["pong"], r
        assert r["acked_goaway"] == (PROTOCOL_ERROR, 199), r


def test_64k_header(plat):
    """A request with 64 KiB of headers (16 fields of 4 KiB: a HEADERS frame and three
    CONTINUATIONs) over h2c prior knowledge (curl's own nghttp2 refuses to send it past
    our SETTINGS_MAX_HEADER_LIST_SIZE, so raw frames). Expected: the gateway's 431 body
    (the 16 KiB header list cap is passed while nghttp2 decodes: nothing past it is
    kept), the function never sees it, the connection stays usable."""
    block = req_block("GET", "/function/hello/hello", [(f"x-big-{i}", "a" * 4096) for i in range(16)])
    parts = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    frames = frame(HEADERS, END_STREAM, 1, parts[0]) + b"".join(
        frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, 1, p) for i, p in enumerate(parts[1:], 1))

    def attack(port):
        s = connect(port, rcvbuf=1 << 20)
        s.sendall(PREFACE + settings() + frames)
        got, eof = read_frames(s, 10, until=lambda f: f[0] == DATA and f[1] & END_STREAM)
        s.close()
        return {"body": b"".join(p for t, _, sid, p in got if t == DATA and sid == 1).decode(), "eof": eof,
                "goaway": goaway_code(got)}
    for r in run_case(plat, "header_64k", attack):
        assert r["body"] == "request header fields too large\n" and not r["eof"] and r["goaway"] is None, r


def test_grpc_oversized_metadata(plat):
    """gRPC port: a call with 40 KiB of metadata. Expected: RESOURCE_EXHAUSTED with the
    gateway's message, before any function is involved (h2b's header list cap, 32 KiB)."""
    import grpc
    with grpc.insecure_channel(plat.grpc_addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/hello.Greeter/SayHello")(b"", timeout=10,
                                                       metadata=[(f"x-big-{i}", "b" * 4000) for i in range(10)])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "too large" in (e.value.details() or ""), e.value.details()


def test_slowloris(plat):
    """Connections that send the preface and then nothing, or nothing at all. Expected:
    closed by the gateway after its preface timeout (10 s; the sniffer's for the silent
    ones), well within 30 s."""
    def attack(port):
        s, s2 = connect(port), connect(port)
        t0 = time.time()
        s.sendall(PREFACE)
        _, eof = read_frames(s, 30)
        t1 = time.time()
        _, eof2 = read_frames(s2, max(0.1, 30 - (t1 - t0)))
        t2 = time.time()
        s.close()
        s2.close()
        return {"eof": eof, "after_s": round(t1 - t0, 1), "eof_silent": eof2, "silent_after_s": round(t2 - t0, 1)}
    for r in run_case(plat, "slowloris", attack):
        assert r["eof"] and r["eof_silent"] and r["after_s"] < 30 and r["silent_after_s"] < 30, r


def test_slowloris_on_an_open_stream(plat):
    """A request's HEADERS without END_STREAM, then a byte of body now and then, never
    the end (the idle clock does not run while a stream is open). Expected: the stream
    is reset (RST_STREAM CANCEL) by the request timeout (10 s) while the connection
    itself stays usable; counted as request_timeout."""
    def attack(port):
        s = connect(port)
        t0 = time.time()
        s.sendall(PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, req_block("POST", "/function/hello/x")))
        rst, deadline = None, time.time() + 30
        while rst is None and time.time() < deadline:
            try:
                s.sendall(frame(DATA, 0, 1, b"x"))
            except OSError:
                break
            frames, eof = read_frames(s, 2, until=lambda f: f[0] == RST_STREAM and f[2] == 1)
            rst = next((f for f in frames if f[0] == RST_STREAM and f[2] == 1), None)
            if eof:
                break
        s.close()
        return {"rst": rst is not None and int.from_bytes(rst[3][:4], "big") == CANCEL,
                "after_s": round(time.time() - t0, 1)}
    for r in run_case(plat, "slowloris_stream", attack, n=4):
        assert r["rst"] and 9 <= r["after_s"] < 25, r
    text = http_get(f"{plat.gateway_url}/metrics")[1]
    assert re.search(r'^faas_gw_h2_flood_closed_total\{reason="request_timeout"\} [1-9]', text, re.M), text[-2000:]


def test_slow_read(plat):
    """POST 1 MiB to echo, take the window updates needed to send it, then never read
    the 1 MiB answer. Expected: the gateway stops reading the connection once its unsent
    output passes the bound; its memory stays bounded (the answer waits in the
    function's stream window, not in the gateway)."""
    body = b"z" * (1 << 20)

    def attack(port):
        s = connect(port)
        s.sendall(PREFACE + settings((4, 65535)) + frame(SETTINGS, ACK, 0) +
                  frame(HEADERS, END_HEADERS, 1, req_block("POST", "/function/hello/echo")))
        sent, conn_win, strm_win = 0, 65535, 65535
        s.settimeout(10)
        buf = b""
        while sent < len(body):
            n = min(16384, conn_win, strm_win, len(body) - sent)
            if n > 0:
                last = sent + n == len(body)
                s.sendall(frame(DATA, END_STREAM if last else 0, 1, body[sent:sent + n]))
                sent += n
                conn_win -= n
                strm_win -= n
                continue
            buf += s.recv(65536)  # window updates (the response may start too)
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + ln:
                    break
                if buf[3] == WINDOW_UPDATE:
                    inc = int.from_bytes(buf[9:13], "big")
                    sid = int.from_bytes(buf[5:9], "big")
                    if sid == 0:
                        conn_win += inc
                    else:
                        strm_win += inc
                buf = buf[9 + ln:]
        time.sleep(5)  # the slow reader: reads nothing while the gateway holds the answer
        s.close()
        return {"sent": sent}
    for r in run_case(plat, "slow_read", attack, n=min(N, 8)):
        assert r["sent"] == len(body), r


def test_grpc_port_ping_flood_and_slowloris(plat):
    """The gRPC port (h2b, the same nghttp2 limits): a PING flood without reading, and a
    connection that sends the preface and nothing else. Expected: the flood is cut off
    (nghttp2's outbound ACK cap: NGHTTP2_ERR_FLOODED closes the connection) or no longer
    read; the silent one is closed by the preface sweep (10 s, checked every second)."""
    def attack(port):
        s = connect(port)
        s.sendall(PREFACE + settings())
        out = flood(s, frame(PING, 0, 0, b"12345678") * 4000, 60)
        s.close()
        s = connect(port)
        t0 = time.time()
        s.sendall(PREFACE)
        _, eof = read_frames(s, 30)
        s.close()
        return {"out": out, "eof": eof, "after_s": round(time.time() - t0, 1)}
    for r in run_case(plat, "grpc_ping_slowloris", attack, port=plat.grpc_port):
        assert r["out"] in ("blocked", "closed") and r["eof"] and r["after_s"] < 30, r
