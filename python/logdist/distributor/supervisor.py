"""The supervisor of `logdist distributor --workers N`: it starts the N worker processes, forwards
SIGTERM, SIGINT and SIGHUP to them, and restarts one that dies (see `workers` for what the
workers do). It routes nothing, so it imports only the standard library: its memory is a bare
interpreter's, not a distributor's.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("logdist.workers")


def free_ports(n: int) -> list[int]:
    """n loopback ports that are free now, below the ephemeral range when there is room (so an
    outgoing connection cannot be holding one when a restarted worker binds it again)."""
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


def worker_argv(
    args: argparse.Namespace, index: int, n: int, state_dir: str, ports: list[int], queue_size: int
) -> list[str]:
    argv = [sys.executable, "-m", "logdist", "distributor", "--reuse-port",
            "--worker", f"{index}/{n}", "--control-ports", ",".join(map(str, ports)),
            "--state-dir", str(Path(state_dir) / f"worker-{index}"), "--log-level", args.log_level]  # fmt: skip
    # queue_size bounds the distributor, so each worker holds its share of it
    argv += ["--queue-size", str(max(1, -(-queue_size // n)))]
    for flag, value in (("--config", args.config), ("--host", args.host), ("--port", args.port),
                        ("--strategy", args.strategy),
                        ("--durability", args.durability), ("--grace", args.grace)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed + index)]  # independent draws per worker
    return argv


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


GIVE_UP_AFTER = 5  # quick deaths in a row (each within 5 s of its start) of one worker


def supervise(args: argparse.Namespace, n: int, state_dir: str, port: int, grace: float, queue_size: int) -> int:
    """Run n workers until SIGTERM/SIGINT; restart any that dies. Returns the exit code: 0 after
    a clean stop, 1 if a worker kept dying at start (GIVE_UP_AFTER times) or had to be killed."""
    if port == 0:
        log.error("--workers needs a fixed --port (the workers share it)")
        return 2
    ports = free_ports(n)
    procs: list[subprocess.Popen[bytes] | None] = [None] * n
    started = [0.0] * n
    quick_deaths = [0] * n
    stop_at: float | None = None
    stop_sig = signal.SIGTERM
    told: set[int] = set()  # pids already sent the stop signal
    code = 0

    def start(i: int) -> None:
        # Own process group: a Ctrl-C reaches the supervisor only, which forwards it once.
        # PR_SET_PDEATHSIG: if the supervisor is killed, its workers get SIGTERM (no orphans).
        argv = worker_argv(args, i, n, state_dir, ports, queue_size)
        p = subprocess.Popen(argv, process_group=0, preexec_fn=_die_with_parent)
        procs[i], started[i] = p, time.monotonic()
        log.info("worker %d started (pid %d)", i, p.pid)

    def send(sig: int) -> None:
        for p in procs:
            if p is not None and p.poll() is None:
                p.send_signal(sig)
                told.add(p.pid)

    def on_signal(sig: int, _frame: Any) -> None:
        nonlocal stop_at, stop_sig, code
        if sig == signal.SIGHUP:
            send(sig)  # every worker reloads the config file
            return
        if stop_at is not None:  # a second stop signal forces, as with a single distributor
            log.warning("%s again: killing the workers", signal.Signals(sig).name)
            code = 1
            send(signal.SIGKILL)
            return
        stop_at, stop_sig = time.monotonic(), signal.Signals(sig)
        send(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for i in range(n):
        start(i)
    log.info("%d workers share port %d (SO_REUSEPORT); state in %s/worker-<i>", n, port, state_dir)
    while True:
        for i, p in enumerate(procs):
            if p is None:
                continue
            rc = p.poll()
            if rc is None:
                if stop_at is not None and p.pid not in told:  # started as the signal came
                    p.send_signal(stop_sig)
                    told.add(p.pid)
                continue
            if stop_at is not None:
                procs[i] = None
                continue
            quick_deaths[i] = quick_deaths[i] + 1 if time.monotonic() - started[i] < 5 else 1
            if quick_deaths[i] >= GIVE_UP_AFTER:
                log.error("worker %d died %d times in a row at start (last exit %s); stopping", i, quick_deaths[i], rc)
                procs[i] = None
                code = 1
                stop_at = time.monotonic()
                send(signal.SIGTERM)
                continue
            delay = min(0.2 * 2 ** quick_deaths[i], 5.0)
            log.error("worker %d (pid %d) exited with %s; restarting it in %.1fs", i, p.pid, rc, delay)
            time.sleep(delay)
            if stop_at is None:
                start(i)
        if stop_at is not None:
            if all(p is None or p.poll() is not None for p in procs):
                return code
            if time.monotonic() - stop_at > grace + 15:
                log.error("workers still running %.0fs after the stop signal: killing them", grace + 15)
                code = 1
                send(signal.SIGKILL)
        time.sleep(0.1)
