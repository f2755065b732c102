#!/usr/bin/python3
"""Is a port redirected? Asked of the kernel by traffic: a TCP connect to the public port
that must land on a listener this helper holds on the target port.

usage: probe.py --ns NAME [options] --pair PORT:TARGET [--pair ...] check
       probe.py --ns NAME [options] --pair PORT:TARGET [--pair ...] until -- CMD [ARG...]

Joins network namespace NAME (setns), then listens on 127.0.0.1:TARGET and [::1]:TARGET
for every pair. A probe is one connect() from a fresh socket to 127.0.0.1:PORT (and
[::1]:PORT): locally generated connections go through the nat output hook, so the
connect reaches the listener on TARGET only while a redirect rule for PORT is in the
kernel. Nothing listens on PORT itself, so without the redirect the connect is refused
(RST) at once. Success is only counted when the listener on TARGET then has the
connection in its accept queue. No set, map or table names are involved.

check      exit 0 when every pair is redirected in both families now, else print which
           is not and exit 1.
until      first check that every pair is redirected (--before on, e.g. before a foreign
           flush) or that none is (--before off, e.g. before loading a ruleset into an
           empty namespace); then start the clock, spawn CMD and probe every (pair,
           family) in rounds --interval-us apart (0: no pause; none either until the
           redirect was seen missing), while CMD
           runs and after it exited, until every one has reached its target after the
           redirect was seen missing (a refused probe; from the start with --before off),
           or, if no probe ever saw it missing, after CMD exited. Prints one line:
              <seconds> <cmd exit> <cmd seconds> <rounds> <refused> <stalled> <probe us> <round us> <unseen> <lower> <gap us> <seen>
           seconds: clock start (just before spawning CMD) until the last (pair, family)
           was seen redirected; cmd seconds: until CMD exited (as seen by the loop, which
           checks once a round while it probes); rounds: probe rounds; refused: connects
           refused (redirect not there); stalled: connects neither refused nor completed
           within --stall-ms (abandoned, retried); probe us: median duration of one
           refused probe; round us: median start-to-start period of the rounds once the
           redirect was seen missing, pause included (the resolution: the end point is
           seen at most about one round late); unseen: 1 if, with --before on, no probe ever found the redirect
           missing (the outage, if any, was shorter than a round; seconds is then an
           upper bound ending after CMD exited); lower: clock start until the start of
           the last refused probe (the redirect was still missing then: the end lies
           between lower and seconds); gap us: the longest start-to-start period of two
           rounds once counting (on a busy machine the loop can wait tens of ms for a
           CPU, e.g. while the kernel frees a flushed table: the end point may be seen
           that late); seen: from the end of the first refused probe until the end
           point, the outage as far as the probes saw it (it began at most one probe
           earlier: until the redirect is seen missing, a round is one connect and there
           is no pause). Exit 1 (with "FAIL reason") on a
           timeout, CMD failing or a failed precondition.
"""
import argparse
import errno
import os
import select
import socket
import statistics
import subprocess
import sys
import time

from netns import join_netns

FAMILIES = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))


def listen(pairs):
    """Listeners on every target, both families; {(family, target): socket}."""
    out = {}
    for _, target in pairs:
        for fam, addr in FAMILIES:
            if (fam, target) in out:
                continue
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((addr, target))
            except OSError as e:
                sys.exit(f"FAIL cannot listen on {addr} port {target}: {e}")
            s.listen(1024)
            s.setblocking(False)
            out[(fam, target)] = s
    return out


def drain(listener):
    """Accepts (and closes) whatever is queued; True if there was at least one."""
    got = False
    while True:
        try:
            c, _ = listener.accept()
        except BlockingIOError:
            return got
        c.close()
        got = True


def probe(fam, addr, port, listener, stall_ms):
    """One connect to addr:port. Returns ("ok"|"refused"|"stalled"|"other:<err>", seconds)."""
    t0 = time.perf_counter_ns()
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        rc = s.connect_ex((addr, port))
        if rc == errno.EINPROGRESS:
            p = select.poll()
            p.register(s, select.POLLOUT)
            if not p.poll(stall_ms):
                return "stalled", (time.perf_counter_ns() - t0) / 1e9
            rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        s.close()
    dt = (time.perf_counter_ns() - t0) / 1e9
    if rc == 0:
        # connected: it must have reached our listener on the target, nothing else
        for _ in range(100):
            if drain(listener):
                return "ok", dt
            time.sleep(0.001)
        return "other:connected, but not to the listener on the target", dt
    if rc == errno.ECONNREFUSED:
        return "refused", dt
    return f"other:{os.strerror(rc)}", dt


def check(pairs, listeners, stall_ms):
    """[(port, target, family name, result)] of every probe that was not ok."""
    bad = []
    for port, target in pairs:
        for fam, addr in FAMILIES:
            res, _ = probe(fam, addr, port, listeners[(fam, target)], stall_ms)
            if res != "ok":
                bad.append(f"{addr} port {port} -> {target}: {res}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", required=True)
    ap.add_argument("--pair", action="append", required=True, help="PORT:TARGET")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--before", choices=("on", "off"), default="on")
    ap.add_argument("--interval-us", type=int, default=0)
    ap.add_argument("--stall-ms", type=int, default=5)
    ap.add_argument("--trace", help="write one line per probe to this file (diagnostics)")
    ap.add_argument("mode", choices=("check", "until"))
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    pairs = []
    for p in a.pair:
        port, _, target = p.partition(":")
        pairs.append((int(port), int(target)))
    join_netns(a.ns, "probe")
    listeners = listen(pairs)

    if a.mode == "check":
        bad = check(pairs, listeners, 200)
        if bad:
            print("not redirected: " + "; ".join(bad))
            return 1
        return 0

    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("until: no command")
    # precondition, with a generous stall limit (nothing is timed yet)
    bad = check(pairs, listeners, 200)
    if a.before == "on" and bad:
        print("FAIL before the command, not redirected: " + "; ".join(bad))
        return 1
    if a.before == "off" and len(bad) != 2 * len(pairs):
        print("FAIL before the command, already redirected (expected an empty namespace)")
        return 1

    todo = [(port, target, fam, addr) for port, target in pairs for fam, addr in FAMILIES]
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, close_fds=True)
    pidfd = os.pidfd_open(p.pid)
    exited = select.poll()
    exited.register(pidfd, select.POLLIN)
    # Probe from the moment CMD is spawned, while it runs and after. A (pair, family) is
    # done when a probe reaches its target after the redirect was seen missing (any
    # refused probe; from the start with --before off) or, if no probe ever saw it
    # missing, after CMD exited (then the outage, if any, was shorter than a round).
    trace = open(a.trace, "w") if a.trace else None
    down = a.before == "off"
    t_cmd = None
    deadline = time.monotonic() + a.timeout
    rounds = refused = stalled = 0
    refused_dt = []
    round_dt = []  # start-to-start period of the rounds once counting: the resolution
    t_last_refused = t_first_refused = None
    t_round = None
    while todo:
        now = time.perf_counter_ns()
        if t_round is not None:
            round_dt.append((now - t_round) / 1e9)
        if t_cmd is None and exited.poll(0):
            t_cmd = time.perf_counter_ns()
        counting = down or t_cmd is not None
        rounds += 1
        left = []
        # Until the redirect was seen missing, one probe a round is enough to see it go
        # (a flush or load is one transaction): the rounds are shorter, the start sharper.
        batch = todo if counting else todo[:1]
        t_round = now if counting else None
        if not counting:
            left = todo[1:]
        for port, target, fam, addr in batch:
            t_probe = time.perf_counter_ns()
            res, dt = probe(fam, addr, port, listeners[(fam, target)], a.stall_ms)
            if trace:
                trace.write(f"{(time.perf_counter_ns() - t0) / 1e6:.3f} ms round {rounds} {addr} {port} "
                            f"{res} {dt * 1e6:.0f} us{' cmd exited' if t_cmd else ''}\n")
            if res == "ok" and counting:
                continue
            left.append((port, target, fam, addr))
            if res == "refused":
                refused += 1
                refused_dt.append(dt)
                t_last_refused = t_probe
                if t_first_refused is None:
                    t_first_refused = t_probe + dt * 1e9
                down = counting = True
            elif res == "stalled":
                stalled += 1
            elif res != "ok":
                print(f"FAIL {addr} port {port} -> {target}: {res[6:]}")
                return 1
        todo = left
        if todo:
            if time.monotonic() > deadline:
                print(f"FAIL still not redirected {a.timeout:.0f} s after {' '.join(cmd)}: "
                      + ", ".join(f"{addr} port {port}" for port, _, _, addr in todo))
                return 1
            # no pause until the redirect was seen missing: the start of an outage that
            # may last less than a millisecond is not missed (a busier loop then only
            # delays the flush, inside the timed window: never in portd's favour)
            if a.interval_us and down:
                ts = time.perf_counter_ns()
                time.sleep(a.interval_us / 1e6)
                if trace:
                    trace.write(f"{(time.perf_counter_ns() - t0) / 1e6:.3f} ms sleep "
                                f"{(time.perf_counter_ns() - ts) / 1e3:.0f} us\n")
    t1 = time.perf_counter_ns()
    if t_cmd is None:
        exited.poll(max(0, (deadline - time.monotonic()) * 1000))
        t_cmd = time.perf_counter_ns()
    os.close(pidfd)
    err = p.stderr.read().decode(errors="replace").strip().splitlines()
    rc = p.wait()
    if rc != 0:
        print(f"FAIL {' '.join(cmd)} exited {rc}: {err[-1] if err else ''}")
        return 1
    first_ok = a.before == "on" and refused == 0
    t1 = time.perf_counter_ns()
    probe_us = statistics.median(refused_dt) * 1e6 if refused_dt else 0.0
    round_us = statistics.median(round_dt) * 1e6 if round_dt else 0.0
    gap_us = max(round_dt) * 1e6 if round_dt else 0.0
    lower = (t_last_refused - t0) / 1e9 if t_last_refused is not None else 0.0
    seen = (t1 - t_first_refused) / 1e9 if t_first_refused is not None else 0.0
    print(f"{(t1 - t0) / 1e9:.6f} {rc} {(t_cmd - t0) / 1e9:.6f} {rounds} {refused} {stalled} "
          f"{probe_us:.1f} {round_us:.1f} {int(first_ok)} {lower:.6f} {gap_us:.1f} {seen:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
