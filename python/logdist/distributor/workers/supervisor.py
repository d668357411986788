"""The supervisor of `logdist distributor --workers N`: it starts the N worker processes, forwards
SIGTERM, SIGINT and SIGHUP to them, and restarts one that dies (see the `workers` package for
what the workers do). It routes nothing, so it imports only the standard library: its memory is a bare
interpreter's, not a distributor's.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logdist.auth import PEER_SECRET_ENV
from logdist.procs import die_with_parent, free_ports_below_ephemeral

log = logging.getLogger("logdist.workers")


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
                        ("--durability", args.durability), ("--grace", args.grace),
                        ("--admin-port", args.admin_port), ("--admin-host", args.admin_host),
                        ("--instance-id", args.instance_id)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed + index)]  # independent draws per worker
    return argv


GIVE_UP_AFTER = 5  # quick deaths in a row of one worker make the supervisor give up
# A death within this many seconds of its start is a quick one (a crash loop). Generous on
# purpose: on a loaded 2-core machine a worker can take 7-10 s to start, and a shorter window
# then reset the count at every death, so the supervisor restarted a worker that could never
# start for ever.
QUICK_DEATH_S = 30.0


class _Supervisor:
    """The n workers' processes and what the supervisor knows about them."""

    def __init__(self, argv: Callable[[int], list[str]], n: int, grace: float) -> None:
        self._argv = argv  # index -> the worker's command line
        self.n = n
        self.grace = grace
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.started = [0.0] * n
        self.quick_deaths = [0] * n
        self.stop_at: float | None = None
        self.stop_sig = signal.SIGTERM
        self.told: set[int] = set()  # pids already sent the stop signal
        self.code = 0

    def start(self, i: int) -> None:
        # Own process group: a Ctrl-C reaches the supervisor only, which forwards it once.
        # PR_SET_PDEATHSIG: if the supervisor is killed, its workers get SIGTERM (no orphans).
        p = subprocess.Popen(self._argv(i), process_group=0, preexec_fn=die_with_parent)
        self.procs[i], self.started[i] = p, time.monotonic()
        log.info("worker %d started (pid %d)", i, p.pid)

    def send(self, sig: int) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(sig)
                self.told.add(p.pid)

    def on_signal(self, sig: int, _frame: Any) -> None:
        if sig == signal.SIGHUP:
            self.send(sig)  # every worker reloads the config file
            return
        if self.stop_at is not None:  # a second stop signal forces, as with a single distributor
            log.warning("%s again: killing the workers", signal.Signals(sig).name)
            self.code = 1
            self.send(signal.SIGKILL)
            return
        self.stop_at, self.stop_sig = time.monotonic(), signal.Signals(sig)
        self.send(sig)

    def _died(self, i: int, p: subprocess.Popen[bytes], rc: int) -> None:
        """Worker i exited while no stop was asked: restart it, or give up on a quick dier."""
        self.quick_deaths[i] = self.quick_deaths[i] + 1 if time.monotonic() - self.started[i] < QUICK_DEATH_S else 1
        if self.quick_deaths[i] >= GIVE_UP_AFTER:
            log.error("worker %d died %d times in a row at start (last exit %s); stopping", i, self.quick_deaths[i], rc)
            self.procs[i] = None
            self.code = 1
            self.stop_at = time.monotonic()
            self.send(signal.SIGTERM)
            return
        delay = min(0.2 * 2 ** self.quick_deaths[i], 5.0)
        log.error("worker %d (pid %d) exited with %s; restarting it in %.1fs", i, p.pid, rc, delay)
        time.sleep(delay)
        if self.stop_at is None:
            self.start(i)

    def check(self) -> None:
        """One look at every worker."""
        for i, p in enumerate(self.procs):
            if p is None:
                continue
            rc = p.poll()
            if rc is None:
                if self.stop_at is not None and p.pid not in self.told:  # started as the signal came
                    p.send_signal(self.stop_sig)
                    self.told.add(p.pid)
            elif self.stop_at is not None:
                self.procs[i] = None
            else:
                self._died(i, p, rc)

    def stopped(self) -> bool:
        """True once every worker has exited after a stop; kills them when the grace is over."""
        if self.stop_at is None:
            return False
        if all(p is None or p.poll() is not None for p in self.procs):
            return True
        if time.monotonic() - self.stop_at > self.grace + 15:
            log.error("workers still running %.0fs after the stop signal: killing them", self.grace + 15)
            self.code = 1
            self.send(signal.SIGKILL)
        return False


def supervise(args: argparse.Namespace, n: int, state_dir: str, port: int, grace: float, queue_size: int) -> int:
    """Run n workers until SIGTERM/SIGINT; restart any that dies. Returns the exit code: 0 after
    a clean stop, 1 if a worker kept dying at start (GIVE_UP_AFTER times) or had to be killed."""
    if port == 0:
        log.error("--workers needs a fixed --port (the workers share it)")
        return 2
    ports = free_ports_below_ephemeral(n)
    # the run's secret: workers forward admin requests to each other's private ports with it
    # (workers/peers.py), whatever tokens clients use; inherited by the workers only
    os.environ[PEER_SECRET_ENV] = secrets.token_hex(32)
    sup = _Supervisor(lambda i: worker_argv(args, i, n, state_dir, ports, queue_size), n, grace)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, sup.on_signal)
    for i in range(n):
        sup.start(i)
    log.info("%d workers share port %d (SO_REUSEPORT); state in %s/worker-<i>", n, port, state_dir)
    while True:
        sup.check()
        if sup.stopped():
            return sup.code
        time.sleep(0.1)
