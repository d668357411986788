"""Shared fixtures: the backend under test, free loopback ports, and real daemon processes.

The whole suite runs twice (see Makefile): once on the Rust extension and once with
LOGDIST_PURE=1 on the pure-Python twin. `test_backend_is_what_was_asked` fails the run (at
session start, in every xdist worker) if the backend that loaded is not the one the run asked
for, so a silent fallback cannot pass.

Tests run in parallel under pytest-xdist: each daemon gets a port the OS picks (`free_port`),
and `spawn` picks another and starts again if the daemon lost that port to a bind race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from logdist import core, pure_requested
from logdist.procs import free_port

__all__ = ["ROOT", "Daemon", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_BACKEND = "py" if pure_requested() else "rs"


def test_backend_is_what_was_asked() -> None:
    assert core.BACKEND == EXPECTED_BACKEND, f"asked for {EXPECTED_BACKEND!r}, loaded {core.BACKEND!r}"
    if EXPECTED_BACKEND == "rs":
        from logdist import _wlb

        assert core.Router is _wlb.Router


def pytest_sessionstart(session: pytest.Session) -> None:
    # conftest.py is not a test module, so pytest never collects the check as a test: run it
    # here, where a mismatch stops the whole run before any test passes on the wrong backend.
    try:
        test_backend_is_what_was_asked()
    except AssertionError as exc:
        pytest.exit(f"wrong backend: {exc}", returncode=1)


@pytest.fixture(scope="session")
def backend() -> str:
    """'rs' or 'py': the backend this run is on."""
    return core.BACKEND


# What a daemon prints when its port was taken between free_port() and its bind().
BIND_RACE = "Address already in use"
BIND_RACE_TRIES = 3


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets in LISTEN state on `port` (Linux /proc/net)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f[9])
    return found


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return out


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    found.add(link[8:-1])
    return found


class Daemon:
    """A real `logdist` process started by a test, killed by PID at teardown."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.port = port
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 20.0) -> Daemon:
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logdist", *self.args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        fh.close()
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, path: str = "/health") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as r:
                    # Another test's daemon may hold the port we picked (our daemon then fails
                    # to bind and exits): only an answer from our own process tree counts.
                    if r.status == 200 and self.owns_port():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.args} not healthy in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def owns_port(self) -> bool:
        """True when the socket listening on our port belongs to our process or its children."""
        assert self.proc is not None
        inodes = _listening_inodes(self.port)
        return any(inodes & _socket_inodes(pid) for pid in _process_tree(self.proc.pid))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it did not exit. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a SIGSTOPped process must be able to exit
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Collects every Daemon a test starts (via spawn) and stops them all at teardown."""
    started: list[Daemon] = []
    yield started
    for d in reversed(started):
        d.stop()


@pytest.fixture
def spawn(daemons: list[Daemon], tmp_path: Path):  # type: ignore[no-untyped-def]
    """spawn(*args, port=None, wait=True, env=None) -> Daemon running `python -m logdist *args`.

    If the args contain the literal "{port}", a free port is substituted; the Daemon's .port
    is that port (or the one given)."""

    def _start(args: tuple[str, ...], port: int, wait: bool, env: dict[str, str] | None) -> Daemon:
        argv = [a.replace("{port}", str(port)) for a in args]
        log = tmp_path / f"{argv[0]}-{port}-{len(daemons)}.log"
        d = Daemon(argv, port, log, env)
        daemons.append(d)
        return d.start(wait=wait)

    def _spawn(*args: str, port: int | None = None, wait: bool = True, env: dict[str, str] | None = None) -> Daemon:
        if port is not None or not wait or not any("{port}" in a for a in args):
            return _start(args, port or free_port(), wait, env)
        # The port is free when picked and bound a moment later by the child; meanwhile another
        # xdist worker (or any process) may take it. Only a port we picked, for a daemon we wait
        # for, is retried, and only when the daemon says it lost exactly that race.
        for _ in range(BIND_RACE_TRIES - 1):
            try:
                return _start(args, free_port(), wait, env)
            except RuntimeError:
                d = daemons[-1]
                if d.proc is None or d.proc.returncode is None or BIND_RACE not in d.log.read_text():
                    raise
        return _start(args, free_port(), wait, env)

    return _spawn
