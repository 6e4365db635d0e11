"""Hand-rolled protobuf encoding of the few faas.proto messages the agent tests need
(AgentCommand down, AgentEvent up). The wire format is simple enough that this avoids
needing protoc at test time."""


def _varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _int(field, n):
    return _key(field, 0) + _varint(n) if n else b""


def _bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return _key(field, 2) + _varint(len(b)) + b


def _str(field, s):
    return _bytes(field, s) if s else b""


HEALTH_HTTP_GET, HEALTH_TCP, HEALTH_GRPC = 0, 1, 2
CMD_SPECIALIZE, CMD_STOP, CMD_CANCEL_TASK = 0, 1, 2
EV_HELLO, EV_READY, EV_FAILED, EV_USER_EXIT, EV_OVERLOAD = 0, 1, 2, 3, 4
EV_TASK_STARTED, EV_TASK_RENEW, EV_TASK_DONE, EV_TASK_FAILED, EV_TASK_RESULT_CHUNK = 5, 6, 7, 8, 9
EV_RECOVERED = 10
EV_FIRST_REQUEST = 11  # once, when the first request enters: times a scale-up


def function_spec(name, command, env=None, port=0, port_env="", health_kind=HEALTH_HTTP_GET,
                  health_path="", interval_ms=0, timeout_ms=0, cold_start_timeout_ms=0, concurrency=0):
    health = _int(1, health_kind) + _str(2, health_path) + _int(3, interval_ms)
    out = _str(1, name)
    for arg in command:
        out += _bytes(3, arg)
    for k, v in (env or {}).items():
        out += _bytes(4, _str(1, k) + _str(2, v))
    out += _int(5, port) + _str(6, port_env) + _bytes(7, health) + _int(9, concurrency)
    out += _int(12, timeout_ms) + _int(13, cold_start_timeout_ms)
    return out


def specialize(spec_bytes, instance_id, code_dir, user_port=0):
    """AgentCommand{SPECIALIZE, Specialize{...}} as bytes."""
    sp = _bytes(1, spec_bytes) + _str(2, instance_id) + _str(3, code_dir) + _int(4, user_port)
    return _int(1, CMD_SPECIALIZE) + _bytes(2, sp)


def stop():
    return _int(1, CMD_STOP)


def cancel_task(task_id):
    """AgentCommand{CANCEL_TASK, task_id}."""
    return _int(1, CMD_CANCEL_TASK) + _str(3, task_id)


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_event(buf):
    """AgentEvent bytes -> dict(type, port, message, exit_status, exec_us, ready_us, and for
    TASK_*: task_id, more, no_retry, chunk; the TaskResult of TASK_DONE stays raw bytes; for
    OVERLOAD and RECOVERED: degree, signal; for HELLO and READY: zygote)."""
    ev = {"type": 0, "port": 0, "message": "", "exit_status": 0, "exec_us": 0, "ready_us": 0,
          "task_id": "", "result": b"", "more": 0, "chunk": b"", "no_retry": 0,
          "degree": 0, "signal": "", "zygote": 0}
    names = {1: "type", 2: "port", 4: "exit_status", 5: "exec_us", 6: "ready_us", 10: "more", 12: "no_retry", 13: "degree",
             20: "zygote"}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
            if field == 4 and v >= 1 << 63:
                v -= 1 << 64
            if field in names:
                ev[names[field]] = v
        elif wire == 2:
            n, i = _read_varint(buf, i)
            if field == 3:
                ev["message"] = buf[i:i + n].decode()
            elif field == 14:
                ev["signal"] = buf[i:i + n].decode()
            elif field == 8:
                ev["task_id"] = buf[i:i + n].decode()
            elif field in (9, 11):
                ev["result" if field == 9 else "chunk"] = bytes(buf[i:i + n])
            i += n
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return ev
