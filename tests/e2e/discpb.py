"""A small proto3 wire codec for the faas.Discovery messages the e2e tests need.

There is no protoc for Python on the test machines, so messages are plain dicts
encoded from the field tables below (which mirror proto/faas.proto)."""

VARINT = {"uint32", "uint64", "int64", "int32", "enum", "bool"}

# message -> field name -> (number, type, repeated)
SCHEMA = {
    "KeyValue": {"key": (1, "string", False), "value": (2, "string", False)},
    "HealthCheck": {"kind": (1, "enum", False), "path": (2, "string", False), "interval_ms": (3, "uint32", False)},
    "Resources": {"memory_bytes": (1, "uint64", False), "cpu_millis": (2, "uint32", False),
                  "pids": (3, "uint32", False)},
    "FunctionSpec": {
        "name": (1, "string", False), "protocol": (2, "enum", False), "command": (3, "string", True),
        "env": (4, "KeyValue", True), "port": (5, "uint32", False), "port_env": (6, "string", False),
        "health": (7, "HealthCheck", False), "resources": (8, "Resources", False),
        "concurrency": (9, "uint32", False), "min_instances": (10, "uint32", False),
        "max_instances": (11, "uint32", False), "timeout_ms": (12, "uint32", False),
        "cold_start_timeout_ms": (13, "uint32", False), "idle_timeout_ms": (14, "uint32", False),
        "max_body_bytes": (15, "uint64", False), "code_sha256": (16, "string", False),
        "version": (17, "uint64", False), "grpc_services": (18, "string", True),
        "thrift_services": (19, "string", True), "thrift_transport": (20, "string", False),
        "max_duration_ms": (21, "uint32", False), "created_unix_ms": (22, "int64", False),
    },
    "FunctionName": {"name": (1, "string", False)},
    "FunctionList": {"functions": (1, "FunctionSpec", True)},
    "Empty": {},
    "CodeChunk": {"data": (1, "bytes", False)},
    "CodeRef": {"sha256": (1, "string", False), "size": (2, "uint64", False)},
    "Instance": {
        "id": (1, "string", False), "function": (2, "string", False), "version": (3, "uint64", False),
        "endpoint": (4, "string", False), "worker_id": (5, "string", False), "state": (6, "enum", False),
        "pid": (7, "uint32", False), "started_unix_ms": (8, "int64", False), "concurrency": (9, "uint32", False),
        "overloaded": (12, "bool", False),
    },
    "InstanceList": {"instances": (1, "Instance", True)},
    "Worker": {"id": (1, "string", False), "address": (2, "string", False), "pool_size": (3, "uint32", False),
               "pool_ready": (4, "uint32", False)},
    "WorkerList": {"workers": (1, "Worker", True)},
    "LeaseRenewal": {"worker": (1, "Worker", False), "instances": (2, "Instance", True),
                     "ttl_ms": (3, "uint32", False)},
    "WatchRequest": {"functions": (1, "bool", False), "instances": (2, "bool", False),
                     "workers": (3, "bool", False)},
    "WatchEvent": {"type": (1, "enum", False), "function": (2, "FunctionSpec", False),
                   "instance": (3, "Instance", False), "worker": (4, "Worker", False),
                   "revision": (5, "uint64", False)},
}

# enum values used by the tests
HTTP, GRPC, THRIFT = 0, 1, 2
STARTING, READY, DRAINING = 0, 1, 2
(SNAPSHOT_END, FUNCTION_PUT, FUNCTION_DELETE, INSTANCE_PUT, INSTANCE_DELETE, WORKER_PUT,
 WORKER_DELETE) = range(7)


def _varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, i):
    shift = v = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _encode_value(ftype, value):
    if ftype in VARINT:
        return 0, _varint(int(value))
    if ftype == "string":
        data = value.encode()
    elif ftype == "bytes":
        data = bytes(value)
    else:
        data = encode(ftype, value)
    return 2, _varint(len(data)) + data


def encode(msg, fields):
    """Encodes dict `fields` as message `msg` (unknown keys are an error)."""
    schema = SCHEMA[msg]
    out = bytearray()
    for name, value in fields.items():
        num, ftype, repeated = schema[name]
        for v in (value if repeated else [value]):
            wt, data = _encode_value(ftype, v)
            out += _varint(num << 3 | wt) + data
    return bytes(out)


def _default(ftype, repeated):
    if repeated:
        return []
    if ftype in VARINT:
        return 0
    return {"string": "", "bytes": b""}.get(ftype)


def decode(msg, buf):
    """Decodes bytes into a dict with every field of `msg` present (proto3 defaults)."""
    schema = SCHEMA[msg]
    by_num = {num: (name, ftype, rep) for name, (num, ftype, rep) in schema.items()}
    out = {name: _default(ftype, rep) for name, (num, ftype, rep) in schema.items()}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            val = bytes(buf[i:i + n])
            i += n
        elif wt == 1:
            val, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 5:
            val, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"wire type {wt}")
        if num not in by_num:
            continue
        name, ftype, rep = by_num[num]
        if ftype == "string":
            val = val.decode()
        elif ftype == "int64" and val >= 1 << 63:
            val -= 1 << 64
        elif ftype == "bool":
            val = bool(val)
        elif ftype not in VARINT and ftype != "bytes":
            val = decode(ftype, val)
        if rep:
            out[name].append(val)
        else:
            out[name] = val
    return out


# ---- async tasks (docs/async.md) ----
SCHEMA.update({
    "TaskRequest": {"method": (1, "string", False), "path": (2, "string", False),
                    "authority": (3, "string", False), "headers": (4, "KeyValue", True),
                    "body": (5, "bytes", False)},
    "TaskResult": {"status": (1, "uint32", False), "headers": (2, "KeyValue", True), "body": (3, "bytes", False)},
    "Task": {
        "id": (1, "string", False), "function": (2, "string", False), "version": (3, "uint64", False),
        "status": (4, "enum", False), "attempts": (5, "uint32", False), "created_unix_ms": (6, "int64", False),
        "started_unix_ms": (7, "int64", False), "finished_unix_ms": (8, "int64", False),
        "error": (9, "string", False), "result_status": (10, "uint32", False), "result_size": (11, "uint64", False),
        "callback_url": (12, "string", False), "callback_status": (13, "string", False),
        "callback_attempts": (14, "uint32", False), "not_before_unix_ms": (15, "int64", False),
        "instance_id": (16, "string", False), "lease_until_unix_ms": (17, "int64", False),
        "request": (18, "TaskRequest", False), "cancel_requested": (19, "bool", False),
    },
    "TaskId": {"id": (1, "string", False)},
    "TaskQuery": {"function": (1, "string", False), "by_status": (2, "bool", False), "status": (3, "enum", False),
                  "limit": (4, "uint32", False), "after": (5, "string", False)},
    "TaskList": {"tasks": (1, "Task", True), "next": (2, "string", False)},
    "ClaimRequest": {"function": (1, "string", False), "max": (2, "uint32", False), "claimer": (3, "string", False),
                     "lease_ms": (4, "uint32", False)},
    "TaskReport": {"id": (1, "string", False), "instance_id": (2, "string", False), "kind": (3, "enum", False),
                   "result": (4, "TaskResult", False), "error": (5, "string", False), "lease_ms": (6, "uint32", False)},
    "CallbackClaim": {"max": (1, "uint32", False), "claimer": (2, "string", False), "lease_ms": (3, "uint32", False)},
    "CallbackDue": {"task": (1, "Task", False), "result": (2, "TaskResult", False)},
    "CallbackDueList": {"due": (1, "CallbackDue", True)},
    "CallbackReport": {"id": (1, "string", False), "delivered": (2, "bool", False), "error": (3, "string", False),
                       "claimer": (4, "string", False)},
    "AsyncSpec": {"concurrency": (1, "uint32", False), "timeout_ms": (2, "uint32", False),
                  "retention_ms": (3, "uint64", False), "max_attempts": (4, "uint32", False),
                  "max_result_bytes": (5, "uint64", False), "retry_5xx": (6, "bool", False)},
})
SCHEMA["LogSpec"] = {"max_bytes": (1, "uint64", False), "keep": (2, "uint32", False)}
SCHEMA["FunctionSpec"]["async"] = (23, "AsyncSpec", False)
SCHEMA["FunctionSpec"]["logs"] = (25, "LogSpec", False)
SCHEMA["WatchRequest"]["task_cancels"] = (4, "bool", False)
SCHEMA["WatchEvent"]["task"] = (6, "Task", False)
TASK_CANCEL = 7                                                     # WatchEvent.Type
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = range(5)            # Task.Status
REPORT_STARTED, REPORT_RENEW, REPORT_DONE, REPORT_FAILED, REPORT_REJECTED = range(5)  # TaskReport.Kind
