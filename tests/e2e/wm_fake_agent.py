#!/usr/bin/python3
"""Stand-in for faas-agent in the pod-driver tests: says HELLO on the control
socket with the port of a TCP listener, then sleeps until STOP or EOF."""
import os
import socket


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


def main():
    fd = int(os.environ["FAAS_AGENT_CONTROL_FD"])
    ctl = socket.socket(fileno=fd)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]
    ctl.send(b"\x10" + varint(port))  # AgentEvent{type=HELLO, port}
    while True:
        msg = ctl.recv(65536)
        if not msg or msg[:2] == b"\x08\x01":  # EOF or AgentCommand{type=STOP}
            return


if __name__ == "__main__":
    main()
