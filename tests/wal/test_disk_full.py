"""A full disk clears by itself, with real filesystems that fill up: a small tmpfs.

The log (both backends): a write that finds the device full gets the spares (and the stale
frames of recycled segments) given back first and is tried again; one that still finds no room
is not stored and leaves nothing behind; a checkpoint finds its room the same way.

The distributor in `wal` durability, with real processes, on a tmpfs state dir: with the
analyzers down, ingest fills the disk and is then refused (429 with Retry-After, and /health
says why); once the analyzers are back and the backlog drains, ingest answers 2xx again with
no operator action, and every accepted message reaches an analyzer exactly once. When someone
else takes the space, the spares the drain left are given back first.

Mounting a tmpfs needs root (and a kernel that lets this process mount): the tests say why they
skip otherwise. The mount is always undone at teardown, after the daemons have stopped.
The daemons run on the backend of the run (they pick it through logdist.core, like production).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from logdist.errors import WalError

ROOT = Path(__file__).resolve().parents[2]
DISK = "12m"  # the distributor's state dir: ~120,000 messages of the load below
TINY = "1m"  # a log's own directory
SEGMENT = 1 << 20
HDR = 16


def _helpers() -> ModuleType:
    # The distributor suite's cluster helpers, loaded by path (conftest modules cannot be
    # imported by name); shared with test_wal_distributor when it loaded them first.
    name = "_dist_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests/distributor/conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


H = _helpers()


def _mount_tmpfs(where: Path, size: str) -> None:
    """Mount a tmpfs of `size` on `where`, or skip saying why it cannot be done here."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size} tmpfs to fill up needs root (this runs as euid {os.geteuid()})")
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run mount to make a {size} tmpfs to fill up: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to fill up here: {(done.stderr or done.stdout).strip()}")


def _umount(where: Path) -> None:
    """Undo the mount; if a process still holds a file there, a lazy unmount."""
    for _ in range(50):
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A TINY tmpfs."""
    where = tmp_path / "disk"
    _mount_tmpfs(where, TINY)
    try:
        yield where
    finally:
        _umount(where)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """<tmp_path>/state (the cluster's state dir) on a DISK tmpfs. Requested before `spawn`,
    so it is torn down after the daemons are stopped."""
    where = tmp_path / "state"
    _mount_tmpfs(where, DISK)
    try:
        yield where
    finally:
        _umount(where)


def _take_the_rest(path: Path) -> int:
    """Fill the filesystem of `path` with a file there, to its last byte; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            data = b"\0" * chunk
            while True:
                try:
                    os.write(fd, data)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _names(d: Path, prefix: str = "") -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(prefix))


# -- the log ----------------------------------------------------------------------------------


def _with_two_spares(Wal: Any, d: Path, rec: int) -> Any:
    """A log in `d` whose three delivered segments (one record of `rec` bytes each) left two
    spares and no segment."""
    wal = Wal(d, segment_bytes=rec + 2 * HDR)
    for _ in range(3):
        wal.append(b"s" * rec)
    wal.ack(range(3))
    assert wal.checkpoint() == 3
    assert _names(d, "spare-") == ["spare-0", "spare-1"] and _names(d, "0") == []
    return wal


def test_a_write_that_finds_the_device_full_gets_the_spares_back_first(Wal: Any, tiny_disk: Path) -> None:
    d = tiny_disk / "wal"
    wal = _with_two_spares(Wal, d, 60_000)
    spare = (d / "spare-0").stat().st_size
    _take_the_rest(tiny_disk / "ballast")
    # Larger than a spare: it runs out of room in the one it reuses, so the other is given back
    # and the write tried again, whole, in a new segment.
    assert wal.append(b"n" * 100_000) == 3
    st = wal.stats()
    assert (st["reclaimed_files"], st["reclaimed_bytes"], st["undelivered"]) == (1, spare, 1)
    assert _names(d) == ["00000000000000000003.wal", "progress.ckpt"]
    wal.close()
    assert Wal(d).replay() == [(3, b"n" * 100_000)]


def test_a_write_that_still_finds_no_room_is_not_stored_and_leaves_nothing(Wal: Any, tiny_disk: Path) -> None:
    d = tiny_disk / "wal"
    wal = Wal(d, segment_bytes=64 << 10)
    assert wal.append(b"a" * 1000) == 0
    _take_the_rest(tiny_disk / "ballast")
    before = _names(d)
    for payload in (b"b" * 300_000, b"c" * 5000):  # past the end of the active segment, then a new one
        with pytest.raises(WalError) as caught:
            wal.append_many([payload])
        assert caught.value.errno == errno.ENOSPC, caught.value
        assert wal.stats()["undelivered"] == 1 and _names(d) == before
    os.unlink(tiny_disk / "ballast")
    assert wal.append(b"d" * 10) == 1  # the failed ones took no lsn
    wal.close()
    assert Wal(d).replay() == [(0, b"a" * 1000), (1, b"d" * 10)]


def test_a_checkpoint_on_a_full_device_gets_its_room_from_the_spares(Wal: Any, tiny_disk: Path) -> None:
    d = tiny_disk / "wal"
    wal = _with_two_spares(Wal, d, 60_000)
    assert wal.append_many([b"x" * 100, b"y" * 100]) == [3, 4]  # written over a spare
    _take_the_rest(tiny_disk / "ballast")
    wal.ack([3])
    assert wal.checkpoint() == 0  # progress.ckpt.tmp found no room: the other spare made some
    assert wal.stats()["reclaimed_files"] == 1 and _names(d, "spare-") == []
    assert "progress.ckpt.tmp" not in _names(d)
    wal.close()
    assert Wal(d).replay() == [(4, b"y" * 100)]


def test_reclaim_cuts_recycled_segments_to_their_records(Wal: Any, tmp_path: Path) -> None:
    wal = _with_two_spares(Wal, tmp_path, 1000)
    assert wal.append(b"small") == 3  # over a spare of 1032 bytes: its stale frames follow
    (name,) = _names(tmp_path, "0")
    assert (tmp_path / name).stat().st_size == 1000 + 2 * HDR
    used = HDR + HDR + 5
    assert wal.reclaim() == (1000 + 2 * HDR) + (1000 + 2 * HDR - used)  # a spare, a stale tail
    assert (tmp_path / name).stat().st_size == used and _names(tmp_path, "spare-") == []
    st = wal.stats()
    assert (st["reclaimed_files"], st["reclaimed_bytes"], wal.reclaim()) == (1, 2 * 1032 - used, 0)
    assert wal.append(b"more") == 4
    wal.close()
    reopened = Wal(tmp_path)
    assert reopened.recovery_notes == [] and reopened.replay() == [(3, b"small"), (4, b"more")]


# -- the distributor ----------------------------------------------------------------------------


@pytest.fixture
def cluster(small_disk: Path, spawn: Any, tmp_path: Path) -> Iterator[Any]:
    c = H.Cluster(spawn, tmp_path)
    yield c
    for ld in c.loads:  # a test that failed half-way leaves no sender thread behind
        ld._stop.set()
    for ld in c.loads:
        if ld._thread is not None:
            ld._thread.join(5)


def wal_stats(cluster: Any) -> dict[str, Any]:
    return H.get(cluster.url + "/api/v1/metrics")["store"]  # type: ignore[no-any-return]


def _probe(cluster: Any, i: int) -> tuple[int, Any, dict[str, str], list[str]]:
    ids = [f"probe-{i}-{k}" for k in range(50)]
    status, doc, headers = H.call("POST", cluster.url + "/logs", H.packet(ids, "probe", f"probe-{i}"))
    return status, doc, headers, ids


def _fill(cluster: Any, rnd: int, accepted: list[str]) -> tuple[int, Any, dict[str, str]]:
    """Send until the disk is full (the load, then small packets that may still fit): the
    answer that refused the last one. What got a 2xx goes to `accepted`."""
    load = cluster.load(f"r{rnd}", packet_size=500, give_up_after=600).start()
    H.wait_until(lambda: load.rejected > 0 or load.errors, 120, "ingest to refuse on a full disk")
    load.stop()
    assert not load.errors and load.count > 0, (load.count, load.errors[-3:])
    accepted += load.accepted
    for i in range(1000):
        status, doc, headers, ids = _probe(cluster, (rnd + 1) * 10**6 + i)
        if status != 200:
            return status, doc, headers
        accepted += ids
    raise AssertionError("the disk never filled up")


def _take_again(cluster: Any, i: int, accepted: list[str]) -> None:
    """Wait until ingest takes a packet again (the same one, re-sent as a client would)."""

    def stored() -> bool:
        status, _, _, ids = _probe(cluster, i)
        if 200 <= status < 300:
            accepted.extend(ids)
            return True
        return False

    H.wait_until(stored, 60, "ingest to take packets again")


@pytest.mark.slow
@pytest.mark.timeout(400)  # two fills and drains of the disk, on the pure-Python backend too
def test_a_full_disk_clears_by_itself_once_the_backlog_drains(cluster: Any, small_disk: Path) -> None:
    a1 = cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, durability="wal", wal_segment_bytes=SEGMENT, wal_checkpoint_ms=100)
    accepted: list[str] = []
    for rnd in range(2):  # twice: what the first drain left behind must not fill the disk
        H.call("POST", a1.url + "/disable")  # down: everything stays held, and on disk
        status, doc, headers = _fill(cluster, rnd, accepted)
        # Full: refused with Retry-After, nothing acknowledged, and /health says why.
        assert (status, doc["error"]) == (429, "log_full") and "retry-after" in headers, (status, doc, headers)
        assert "no space left on device" in doc["detail"], doc
        health = H.get(cluster.url + "/health")
        assert (health["status"], health["wal_full"]["error"], health["wal_disk_full"]) == ("full", "disk_full", 1)
        assert "no space left on device" in health["wal_full"]["detail"], health
        prom = H.call("GET", cluster.url + "/metrics")[1]
        assert "\nlogdist_wal_disk_full 1\n" in prom and "\nlogdist_wal_disk_full_total " in prom, prom[-2000:]
        # The analyzer comes back and the backlog drains: ingest recovers with nobody's help.
        H.call("POST", a1.url + "/enable")
        cluster.drained(120)
        _take_again(cluster, 10**9 + rnd, accepted)
        health = H.get(cluster.url + "/health")
        assert health["status"] == "ok" and "wal_full" not in health and health["wal_disk_full"] == 0, health
    assert wal_stats(cluster)["wal_disk_full_total"] >= 2

    # Someone else takes the space: the spares the drain left are given back before a write
    # is refused.
    cluster.drained(120)
    wal = small_disk / "wal"
    H.wait_until(lambda: wal_stats(cluster)["wal_segments"] == 0, 60, "the log to recycle its segments")
    assert _names(wal, "spare-"), _names(wal)
    _take_the_rest(small_disk / "ballast")
    status, doc, _, ids = _probe(cluster, 10**9 + 7)
    assert status == 200, doc
    accepted += ids
    st = wal_stats(cluster)
    assert st["wal_reclaimed_files_total"] >= 1 and st["wal_reclaimed_bytes_total"] > 0, st
    assert st["wal_disk_full"] == 0 and H.get(cluster.url + "/health")["status"] == "ok"
    os.unlink(small_disk / "ballast")

    cluster.drained(120)
    H.assert_zero_loss(accepted, {"a1": cluster.ids("a1")})
    counts = H.get(a1.url + "/processed")
    assert (counts["processed_count"], counts["duplicates"]) == (len(accepted), 0), counts
    assert H.get(cluster.url + "/health")["status"] == "ok"
