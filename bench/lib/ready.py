#!/usr/bin/python3
"""Start portd and time it from exec to READY=1 on a NOTIFY_SOCKET we listen on.

usage: ready.py [--ns NAME] [--timeout SECONDS] --log FILE -- PORTD [ARG...]

Binds a unix datagram socket, sets NOTIFY_SOCKET for the child, joins the network
namespace (setns, before the clock starts), then starts the clock, spawns portd and
waits for a datagram containing the line READY=1. Prints "<seconds> <pid>" and exits,
leaving portd running in its own session (the caller stops it by pid). If portd exits
or the timeout passes first, prints "FAIL <reason>" and exits 1 (and kills portd).
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from netns import join_netns

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--log", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if a.ns:
        join_netns(a.ns, "ready")
    d = tempfile.mkdtemp(prefix="portd-notify.")
    path = os.path.join(d, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    log = open(a.log, "ab")
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                         close_fds=True, start_new_session=True)
    deadline = time.monotonic() + a.timeout
    result = None
    try:
        while result is None:
            left = deadline - time.monotonic()
            if left <= 0:
                result = "FAIL no READY=1 within %.0f s" % a.timeout
                break
            s.settimeout(min(left, 0.2))
            try:
                msg = s.recv(65536)
            except socket.timeout:
                if p.poll() is not None:
                    result = f"FAIL portd exited with {p.returncode} before READY=1"
                continue
            if b"READY=1" in msg.split(b"\n"):
                t1 = time.perf_counter_ns()
                result = f"{(t1 - t0) / 1e9:.6f} {p.pid}"
    finally:
        s.close()
        os.unlink(path)
        os.rmdir(d)
    print(result)
    if result.startswith("FAIL"):
        if p.poll() is None:
            p.kill()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
