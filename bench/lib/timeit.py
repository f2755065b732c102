#!/usr/bin/python3
"""Time one command, wall clock, from just before spawn to its exit.

usage: timeit.py [--ns NAME] [--timeout SECONDS] [--stdout FILE] [--stderr FILE] -- CMD [ARG...]

Prints "<seconds> <exit code>" on stdout (exit code 124 on timeout). With --ns the
command runs in network namespace /run/netns/NAME: this process joins it with setns(2)
*before* the clock starts, so -- unlike `ip netns exec` or `nsenter` -- no helper
process is part of the measured time, and every tool is timed the same way: one
spawn (vfork+exec) of the tool itself, then its whole run.
"""
import argparse
import os
import select
import subprocess
import sys
import time

from netns import join_netns

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("--stderr", default=os.devnull)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    if a.ns:
        join_netns(a.ns, "timeit")
    out = open(a.stdout, "wb")
    err = open(a.stderr, "ab")
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=True)
    # Popen.wait(timeout=...) polls waitpid with sleeps that double from 0.5 ms to 50 ms,
    # which rounds every time up to 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 113.5 ms...
    # A pidfd becomes readable the moment the child exits, so poll() on it is exact.
    pidfd = os.pidfd_open(p.pid)
    ready = select.poll()
    ready.register(pidfd, select.POLLIN)
    exited = ready.poll(a.timeout * 1000)
    t1 = time.perf_counter_ns()
    os.close(pidfd)
    if exited:
        rc = p.wait()
    else:
        p.kill()
        p.wait()
        rc = 124
    print(f"{(t1 - t0) / 1e9:.6f} {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
