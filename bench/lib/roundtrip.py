#!/usr/bin/python3
"""Time portd's own share of a one-forward change: the socket round trip, no process spawn.

usage: roundtrip.py SOCKET RUNS [IDLE_MS]

Connects to portd's socket (a fresh connection per request, as portctl does), sends
the `add` and then the `remove` request that `portctl add zz 40000 40001` and `portctl
remove zz` send, and reads the answer line. Prints one line per request:
"<add|remove> <seconds> <ok|error text>". With IDLE_MS, each request comes after that
long without any (as when a client process has to start first): portd's threads and
caches are then cold.
"""
import json
import socket
import sys
import time

ADD = {"op": "add", "forward": {"name": "zz", "port": 40000, "to": 40001}}
REMOVE = {"op": "remove", "name": "zz"}


def once(path: str, command: dict) -> tuple[float, str]:
    line = (json.dumps({"version": 1, "command": command}) + "\n").encode()
    t0 = time.perf_counter_ns()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(line)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    t1 = time.perf_counter_ns()
    ok = b'"ok"' in buf
    return (t1 - t0) / 1e9, "ok" if ok else buf.decode(errors="replace").strip()[:200]


def main() -> int:
    path, runs = sys.argv[1], int(sys.argv[2])
    idle = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
    for _ in range(runs):
        for name, command in (("add", ADD), ("remove", REMOVE)):
            if idle:
                time.sleep(idle)
            secs, res = once(path, command)
            print(f"{name} {secs:.6f} {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
