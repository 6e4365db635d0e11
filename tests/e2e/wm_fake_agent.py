#!/usr/bin/python3
"""Stand-in for faas-agent in the worker-manager tests: says HELLO with the port of a
TCP listener, then answers SPECIALIZE by the function name:
  *hang*     never answers          *fail*  FAILED "fake failure"
  *overload* READY, then OVERLOAD   other   READY
and writes one line to the log fd passed with SPECIALIZE. Exits on STOP or EOF.
Logs (docs/security.md "Bounded logs"):
  *flood*    READY, then 3 MiB into its log file, never asking for a rotation
  *rotate*   READY, then 70 KiB, LOG_ROTATE, and LOG_DROPPED (1000 bytes, 10 lines) once
             the new file came
and every LOG_FD gets a line in the file it brings."""
import array
import os
import socket
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(buf):
    """proto wire -> {field number: [values]} (varints and length-delimited only)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        if key & 7 == 0:
            v, i = read_varint(buf, i)
        elif key & 7 == 2:
            n, i = read_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        else:
            raise ValueError("wire type")
        out.setdefault(key >> 3, []).append(v)
    return out


def event(type_, **kw):
    msg = (b"\x08" + varint(type_)) if type_ else b""
    if kw.get("port"):
        msg += b"\x10" + varint(kw["port"])
    if kw.get("message"):
        m = kw["message"].encode()
        msg += b"\x1a" + varint(len(m)) + m
    if kw.get("exec_us"):
        msg += b"\x28" + varint(kw["exec_us"])
    if kw.get("ready_us"):
        msg += b"\x30" + varint(kw["ready_us"])
    if kw.get("degree"):
        msg += b"\x68" + varint(kw["degree"])
    if kw.get("signal"):
        m = kw["signal"].encode()
        msg += b"\x72" + varint(len(m)) + m
    if kw.get("dropped_bytes"):
        msg += b"\x80\x01" + varint(kw["dropped_bytes"])  # field 16
    if kw.get("dropped_lines"):
        msg += b"\x88\x01" + varint(kw["dropped_lines"])  # field 17
    return msg


def main():
    ctl = socket.socket(fileno=int(os.environ["FAAS_AGENT_CONTROL_FD"]))
    lst = socket.socket()
    lst.bind(("0.0.0.0", 0))  # in the pod's own network namespace, as the agent does
    lst.listen(8)
    ctl.send(event(0, port=lst.getsockname()[1]))  # HELLO
    rotating = False
    while True:
        fds = array.array("i")
        msg, anc, _, _ = ctl.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, type_, data in anc:
            if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        if not msg:
            return
        cmd = fields(msg)
        kind = cmd.get(1, [0])[0]
        if kind == 1:  # STOP
            return
        if kind == 4:  # LOG_FD
            for fd in fds:
                os.write(fd, b"fake agent got a new log file\n")
                os.close(fd)
            if rotating:
                ctl.send(event(14, dropped_bytes=1000, dropped_lines=10))  # LOG_DROPPED
                rotating = False
            continue
        if kind != 0:  # CANCEL_TASK, RUNQ (the worker manager's run-queue figures): not for a fake
            continue
        sp = fields(cmd[2][0])
        name = fields(sp[1][0])[1][0].decode()
        inst = sp[2][0].decode()
        for fd in fds:
            os.write(fd, f"fake agent specialized fn={name} instance={inst}\n".encode())
        log = fds[0] if fds else -1
        if "hang" in name:
            continue
        if "fail" in name:
            ctl.send(event(2, message="fake failure"))
            continue
        ctl.send(event(1, exec_us=11, ready_us=22))  # READY
        if "overload" in name:
            time.sleep(0.05)
            ctl.send(event(4))
        if "flood" in name:  # past any bound, and no LOG_ROTATE
            for _ in range(3 * 1024 * 1024 // 65536):
                os.write(log, (b"y" * 1023 + b"\n") * 64)
        if "rotate" in name:
            os.write(log, (b"z" * 1023 + b"\n") * 70)
            ctl.send(event(13, dropped_bytes=0))  # LOG_ROTATE
            rotating = True
        if "degree" in name:  # asks for 3 more, then is over it
            time.sleep(0.05)
            ctl.send(event(4, degree=3, signal="queueing"))
            time.sleep(1.5)
            ctl.send(event(10, signal="queueing"))


if __name__ == "__main__":
    main()
