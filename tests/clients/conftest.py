"""Fixtures for the tests against the seed systems' clients: stand-ins (seed_standins.py) run as
real processes on free loopback ports, killed by PID at teardown, and the distributor cluster of
tests/distributor."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distributor.conftest import cluster  # noqa: F401  (the fixture, shared)
from logdist.procs import free_port

STANDINS = Path(__file__).resolve().parent / "seed_standins.py"


class StandIn:
    """One stand-in process (seed_standins.py ROLE --port N ...)."""

    def __init__(self, role: str, args: list[str], log: Path) -> None:
        self.role = role
        self.args = args
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> StandIn:
        for _ in range(3):  # another process may take the port between free_port() and bind()
            self.port = free_port()
            with self.log.open("ab") as fh:
                self.proc = subprocess.Popen(
                    [sys.executable, str(STANDINS), self.role, "--port", str(self.port), *self.args],
                    stdout=fh, stderr=subprocess.STDOUT,
                )  # fmt: skip
            if self._wait(timeout):
                return self
        raise RuntimeError(f"{self.role} did not start:\n{self.log.read_text()[-3000:]}")

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log.read_text().lower():
                    return False
                raise RuntimeError(f"{self.role} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return True
            time.sleep(0.05)
        raise TimeoutError(f"{self.role} not healthy in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    """standin(role, *args) -> a started StandIn; all are stopped (by PID) at teardown."""
    started: list[StandIn] = []

    def _start(role: str, *args: str) -> StandIn:
        s = StandIn(role, list(args), tmp_path / f"{role}-{len(started)}.log")
        started.append(s)
        return s.start()

    yield _start
    for s in reversed(started):
        s.stop()
