"""Process and port helpers shared by the supervisors, `logdist up`, the benches and the tests.

Standard library only: the `--workers` supervisor imports this and must stay small.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import signal
import socket

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """`preexec_fn` for children: the kernel sends them SIGTERM if their parent dies (Linux;
    best effort elsewhere), so a parent killed hard leaves no orphans behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when `port` can be bound on `host` now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_ports_below_ephemeral(n: int) -> list[int]:
    """n distinct loopback ports that are free now, below the ephemeral range when there is
    room (so an outgoing connection cannot be holding one when a restarted process binds it
    again); falls back to OS-picked ports."""
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            lo = int(fh.read().split()[0])
    except (OSError, ValueError):
        pass
    candidates = list(range(10000, lo)) if lo > 11000 else []
    random.shuffle(candidates)
    ports: list[int] = []
    socks = []
    try:
        for port in [*candidates[: 20 * n], *([0] * n)]:
            if len(ports) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()
