"""Joining a named network namespace (/run/netns/NAME) from a bench helper script."""
import ctypes
import os
import sys

CLONE_NEWNET = 0x40000000


def join_netns(name: str, who: str) -> None:
    """setns(2) into namespace `name`; exits with `who: setns(...)` and the reason on failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f"{who}: setns({name}): {os.strerror(ctypes.get_errno())}")
    os.close(fd)
