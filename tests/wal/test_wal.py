"""The write-ahead log on both backends: round trip, progress, rollover and deletion, torn and
corrupt tails, the byte bound, errors, group commit, and each backend reading the other's files.

"Crash" here means dropping the log object without close(): nothing is checkpointed, exactly as
after kill -9 (test_kill9_* does the real thing with a child process).
"""

from __future__ import annotations

import errno
import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from logdist.errors import WalError, WalFullError

ROOT = Path(__file__).resolve().parents[2]
HDR = 16  # segment header and record header are both 16 bytes


def crash(wal: Any) -> None:
    """Forget the log without close(): no progress is persisted (like kill -9)."""
    del wal
    gc.collect()


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix == ".wal")


def seg(first: int) -> str:
    return f"{first:020d}.wal"


def payloads(n: int, tag: str = "m") -> list[bytes]:
    return [f"{tag}-{i}-".encode() + bytes(range(i % 9)) for i in range(n)]


def test_append_replay_round_trip(Wal: Any, tmp_path: Path) -> None:
    data = [*payloads(30), b"", b"\x00" * 1000]
    wal = Wal(tmp_path)
    lsns = wal.append_many(data[:10]) + wal.append_many(data[10:])
    assert lsns == list(range(len(data)))
    assert wal.append_many([]) == []
    assert wal.replay() == []  # replay gives back what recovery found, not new appends
    st = wal.stats()
    assert (st["records"], st["undelivered"], st["appends"], st["appended_records"]) == (32, 32, 2, 32)
    assert st["fsyncs"] >= 1 and st["last_fsync_seconds"] >= 0.0
    crash(wal)

    wal = Wal(tmp_path)
    assert wal.replay() == list(enumerate(data))
    st = wal.stats()
    assert (st["recovered_records"], st["skipped_bytes"], st["skipped_records"]) == (32, 0, 0)
    assert wal.recovery_notes == []
    assert wal.append(b"next") == 32  # lsns go on, in a new segment
    assert segments(tmp_path) == [seg(0), seg(32)]
    assert wal.path == str(tmp_path)


def test_progress_survives_reopen_and_is_never_ahead(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    wal.append_many(payloads(10))
    assert wal.ack([1, 3, 5, 5, 99, -1]) == 3
    wal.checkpoint()
    assert wal.ack(iter([7])) == 1  # acked but not persisted before the crash: redelivered
    crash(wal)

    wal = Wal(tmp_path)
    assert [lsn for lsn, _ in wal.replay()] == [0, 2, 4, 6, 7, 8, 9]
    wal.ack([0, 2])
    wal.close()  # close persists progress
    wal.close()  # and is idempotent
    with pytest.raises(WalError, match="closed"):
        wal.append(b"late")

    with Wal(tmp_path) as wal:
        assert [lsn for lsn, _ in wal.replay()] == [4, 6, 7, 8, 9]
        assert wal.stats()["undelivered"] == 5


def test_rollover_and_deletion(Wal: Any, tmp_path: Path) -> None:
    rec = b"r" * 100
    wal = Wal(tmp_path, segment_bytes=HDR + 4 * (HDR + 100), max_bytes=1 << 20)
    assert [wal.append(rec) for _ in range(10)] == list(range(10))
    assert segments(tmp_path) == [seg(0), seg(4), seg(8)]
    st = wal.stats()
    assert (st["segments"], st["bytes"]) == (3, 3 * HDR + 10 * (HDR + 100))
    assert st["bytes"] == sum((tmp_path / s).stat().st_size for s in segments(tmp_path))

    wal.ack([4, 5, 6, 7, 0])  # the middle segment is fully delivered, the first is not
    assert wal.checkpoint() == 1
    assert segments(tmp_path) == [seg(0), seg(8)]
    wal.ack([1, 2, 3])
    assert wal.checkpoint() == 1
    wal.ack([8, 9])  # the active segment goes too, once all of it is delivered
    assert wal.checkpoint() == 1
    assert segments(tmp_path) == []
    assert (wal.stats()["bytes"], wal.stats()["segments"]) == (0, 0)
    assert wal.append(b"z") == 10
    wal.ack([10])
    wal.close()

    with Wal(tmp_path) as wal:  # the lsn sequence survives the deletion of every segment
        assert segments(tmp_path) == []
        assert wal.replay() == []
        assert wal.append(b"after") == 11


def test_full_raises_and_recovers_after_delivery(Wal: Any, tmp_path: Path) -> None:
    rec = b"f" * 100
    wal = Wal(tmp_path, max_bytes=HDR + 3 * (HDR + 100))
    lsns = wal.append_many([rec, rec, rec])
    with pytest.raises(WalFullError, match="full") as info:
        wal.append(rec)
    assert isinstance(info.value, WalError) and isinstance(info.value, OSError)
    assert wal.stats()["undelivered"] == 3  # nothing accepted was dropped to make room
    wal.ack(lsns)
    wal.checkpoint()
    assert wal.append(rec) == 3
    with pytest.raises(WalFullError):
        wal.append(b"x" * 1000)  # a batch over the bound never fits


def test_torn_tail_is_cut_and_reported(Wal: Any, tmp_path: Path) -> None:
    data = payloads(5)
    wal = Wal(tmp_path)
    wal.append_many(data)
    crash(wal)
    path = tmp_path / seg(0)
    size = path.stat().st_size
    last = HDR + len(data[4])
    os.truncate(path, size - 3)  # cut the last record in its middle

    wal = Wal(tmp_path)
    st = wal.stats()
    assert (st["skipped_bytes"], st["skipped_records"], st["recovered_records"]) == (last - 3, 1, 4)
    assert wal.recovery_notes == [f"{seg(0)}: torn record at offset {size - last}: skipped {last - 3} bytes, 1 records"]
    assert wal.replay() == list(enumerate(data[:4]))
    assert path.stat().st_size == size - last  # the torn tail is cut off
    assert wal.append(b"new") == 4
    crash(wal)
    wal = Wal(tmp_path)
    assert wal.stats()["skipped_bytes"] == 0
    assert [lsn for lsn, _ in wal.replay()] == [0, 1, 2, 3, 4]


def test_a_bad_crc_loses_only_that_record(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    wal.append_many([bytes([97 + i]) * 20 for i in range(6)])
    crash(wal)
    path = tmp_path / seg(0)
    raw = bytearray(path.read_bytes())
    rec3 = HDR + 3 * (HDR + 20)
    raw[rec3 + HDR + 5] ^= 0x40  # one payload byte of lsn 3
    path.write_bytes(raw)

    wal = Wal(tmp_path)
    st = wal.stats()
    assert (st["skipped_bytes"], st["skipped_records"], st["recovered_records"], st["lost_records"]) == (36, 1, 5, 1)
    assert wal.recovery_notes == [f"{seg(0)}: bad crc at offset {rec3}: skipped 36 bytes, 1 records"]
    assert wal.recovery_losses == [(seg(0), rec3, 36, 3, 4, [3], bytes(raw[rec3 : rec3 + 36]))]
    assert [lsn for lsn, _ in wal.replay()] == [0, 1, 2, 4, 5]
    crash(wal)
    wal = Wal(tmp_path)  # reported once: the progress file now counts lsn 3 as done
    assert wal.recovery_losses == [] and wal.stats()["lost_records"] == 0
    assert [lsn for lsn, _ in wal.replay()] == [0, 1, 2, 4, 5]
    wal.close()


def test_corrupt_older_segment_keeps_the_rest(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=HDR + 2 * (HDR + 10))
    for i in range(6):
        wal.append(bytes([i]) * 10)
    crash(wal)
    path = tmp_path / seg(2)
    raw = bytearray(path.read_bytes())
    raw[HDR + 4] ^= 1  # the crc field of lsn 2
    path.write_bytes(raw)
    wal = Wal(tmp_path)
    assert wal.stats()["skipped_records"] == 1
    assert [lsn for lsn, _ in wal.replay()] == [0, 1, 3, 4, 5]
    crash(wal)
    last = tmp_path / seg(4)  # the last record of a segment that another one follows:
    raw = bytearray(last.read_bytes())  # lost, not a torn tail
    raw[-1] ^= 1
    last.write_bytes(raw)
    wal = Wal(tmp_path)
    assert [lsns for *_, lsns, _ in wal.recovery_losses] == [[5]]
    assert [lsn for lsn, _ in wal.replay()] == [0, 1, 3, 4]
    wal.close()


def test_bad_checkpoint_means_redelivery_not_loss(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    wal.append_many(payloads(4))
    wal.ack([0, 1])
    wal.checkpoint()
    crash(wal)
    ck = tmp_path / "progress.ckpt"
    raw = bytearray(ck.read_bytes())
    raw[-1] ^= 0xFF
    ck.write_bytes(raw)
    wal = Wal(tmp_path)
    assert wal.recovery_notes == ["progress.ckpt: bad checkpoint, ignored"]
    assert len(wal.replay()) == 4


def test_io_errors_raise_wal_error_with_errno(Wal: Any, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"x")
    with pytest.raises(WalError) as info:
        Wal(not_a_dir)
    assert info.value.errno in (errno.EEXIST, errno.ENOTDIR)
    assert not isinstance(info.value, WalFullError)

    d = tmp_path / "gone"
    wal = Wal(d)
    wal.append(b"stored")
    wal.ack([0])
    wal.checkpoint()  # the active segment is delivered and retired: the next append creates one
    shutil.rmtree(d)
    with pytest.raises(WalError) as info:
        wal.append(b"lost dir")
    assert info.value.errno == errno.ENOENT
    assert "write-ahead log" in str(info.value)


def test_bad_arguments(Wal: Any, tmp_path: Path) -> None:
    for kwargs in ({"segment_bytes": 0}, {"max_bytes": 0}, {"commit_delay_us": -1}):
        with pytest.raises(ValueError):
            Wal(tmp_path, **kwargs)
    wal = Wal(tmp_path)
    with pytest.raises(TypeError):
        wal.ack(["a"])


def test_concurrent_appenders_share_fsyncs(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path, commit_delay_us=2000)
    threads, per = 8, 25
    got: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for i in range(per):
            p = f"t{t}-{i}".encode()
            got[t] += wal.append_many([p, p])

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(x for g in got for x in g) == list(range(threads * per * 2))
    st = wal.stats()
    assert st["appends"] == threads * per
    assert 1 <= st["fsyncs"] < st["appends"], st
    crash(wal)
    wal = Wal(tmp_path)
    records = wal.replay()
    assert len(records) == threads * per * 2
    for a, b in zip(records[::2], records[1::2], strict=True):
        assert (a[0] + 1, a[1]) == b


# -- the two backends read each other's files -------------------------------------------------


def test_each_backend_reads_the_others_files(writer_reader: tuple[Any, Any], tmp_path: Path) -> None:
    W, R = writer_reader
    data = payloads(40, "x")
    wal = W(tmp_path, segment_bytes=300)
    for i in range(0, 40, 4):
        wal.append_many(data[i : i + 4])
    wal.ack(range(0, 12))  # the first segments fully, then scattered
    wal.ack([13, 17, 30])
    wal.checkpoint()
    crash(wal)

    wal = R(tmp_path, segment_bytes=300)
    want = [(i, data[i]) for i in range(12, 40) if i not in (13, 17, 30)]
    assert wal.replay() == want
    # The reader appends and acks; the writer reads that back.
    assert wal.append_many([b"from-reader"]) == [40]
    wal.ack([12, 14])
    wal.close()
    with W(tmp_path) as wal:
        assert wal.replay() == [r for r in want if r[0] not in (12, 14)] + [(40, b"from-reader")]


def test_each_backend_reads_the_others_torn_tail(writer_reader: tuple[Any, Any], tmp_path: Path) -> None:
    W, R = writer_reader
    wal = W(tmp_path)
    wal.append_many([b"a" * 50, b"b" * 50, b"c" * 50])
    crash(wal)
    path = tmp_path / seg(0)
    raw = bytearray(path.read_bytes())
    raw[HDR + (HDR + 50) + 20] ^= 1  # payload of lsn 1
    path.write_bytes(raw[:-10])  # and the last record torn too
    wal = R(tmp_path)
    assert wal.recovery_notes == [f"{seg(0)}: bad crc at offset {HDR + HDR + 50}: skipped 122 bytes, 2 records"]
    assert wal.replay() == [(0, b"a" * 50)]


def test_both_backends_write_identical_bytes(writer_reader: tuple[Any, Any], tmp_path: Path) -> None:
    dirs = {}
    for name, cls in zip(("a", "b"), writer_reader, strict=True):
        d = tmp_path / name
        wal = cls(d, segment_bytes=200)
        wal.append_many(payloads(7))
        wal.append(b"")
        wal.append_many(payloads(5, "y"))
        wal.ack([0, 1, 2, 5])
        wal.checkpoint()
        wal.close()
        dirs[name] = d
    names = sorted(p.name for p in dirs["a"].iterdir())
    assert names == sorted(p.name for p in dirs["b"].iterdir())
    assert "progress.ckpt" in names and len(names) > 2
    for n in names:
        assert (dirs["a"] / n).read_bytes() == (dirs["b"] / n).read_bytes(), n


# -- recycled segments ----------------------------------------------------------------------


def spares(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("spare-"))


def test_delivered_segments_are_recycled_and_their_stale_tails_ignored(Wal: Any, tmp_path: Path) -> None:
    rec = b"r" * 100
    size = HDR + 4 * (HDR + 100)
    wal = Wal(tmp_path, segment_bytes=size)
    wal.append_many([rec] * 4)
    wal.append_many([rec] * 4)
    wal.append_many([rec] * 4)
    assert segments(tmp_path) == [seg(0), seg(4), seg(8)]
    wal.ack(range(12))
    assert wal.checkpoint() == 3
    # kept for reuse instead of deleted (deleting frees blocks: slow on a discard mount), two at most
    assert (segments(tmp_path), spares(tmp_path)) == ([], ["spare-0", "spare-1"])
    assert wal.append_many([b"new-a", b"new-b"]) == [12, 13]  # written over a spare
    assert spares(tmp_path) == ["spare-0"]
    raw = (tmp_path / seg(12)).read_bytes()
    assert raw[:8] == b"LDWALSR1" and int.from_bytes(raw[8:16], "little") == 12
    assert len(raw) == size  # the old file's frames are still there after the new records
    assert wal.stats()["bytes"] == HDR + 2 * (HDR + 5)  # the log counts only its own bytes
    crash(wal)

    wal = Wal(tmp_path, segment_bytes=size)
    assert wal.recovery_notes == []  # the stale frames are not damage
    assert wal.replay() == [(12, b"new-a"), (13, b"new-b")]
    assert wal.stats()["skipped_records"] == 0
    assert wal.append(b"next") == 14
    wal.close()


def test_each_backend_reads_the_others_recycled_segments(writer_reader: tuple[Any, Any], tmp_path: Path) -> None:
    W, R = writer_reader
    wal = W(tmp_path, segment_bytes=300)
    data = payloads(30, "s")
    for i in range(0, 30, 3):
        wal.append_many(data[i : i + 3])
    wal.ack(range(30))
    wal.checkpoint()
    assert spares(tmp_path)
    wal.append_many([b"over-1", b"over-2", b"over-3"])
    wal.ack([31])
    wal.checkpoint()
    crash(wal)
    wal = R(tmp_path, segment_bytes=300)
    assert wal.recovery_notes == []
    assert wal.replay() == [(30, b"over-1"), (32, b"over-3")]
    wal.close()


def test_a_spare_renamed_before_its_new_header_reached_the_disk_is_dropped_quietly(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=HDR + 2 * (HDR + 10))
    wal.append_many([b"x" * 10, b"y" * 10])
    wal.append(b"keep")
    wal.ack([0, 1])
    wal.checkpoint()
    crash(wal)
    assert spares(tmp_path) == ["spare-0"]
    os.rename(tmp_path / "spare-0", tmp_path / seg(3))  # the rename landed, the header write did not
    wal = Wal(tmp_path)
    assert wal.recovery_notes == []
    assert wal.replay() == [(2, b"keep")]
    assert segments(tmp_path) == [seg(2)]
    wal.close()


def test_oversized_delivered_files_are_deleted_not_kept(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=100)
    wal.append(b"b" * 500)  # one record larger than twice segment_bytes: a segment of its own
    wal.ack([0])
    wal.checkpoint()
    assert (segments(tmp_path), spares(tmp_path)) == ([], [])
    wal.close()


def test_damage_inside_a_recycled_segment_is_still_reported(Wal: Any, tmp_path: Path) -> None:
    size = HDR + 3 * (HDR + 20)
    wal = Wal(tmp_path, segment_bytes=size)
    for _ in range(3):
        wal.append_many([b"o" * 20] * 3)
    wal.ack(range(9))
    wal.checkpoint()  # two spares now
    wal.append_many([b"a" * 20, b"b" * 20, b"c" * 20])  # lsns 9-11: a recycled segment ...
    wal.append_many([b"d" * 20])  # ... then the next one, at lsn 12
    crash(wal)
    path = tmp_path / seg(9)
    assert path.read_bytes()[:8] == b"LDWALSR1"
    raw = bytearray(path.read_bytes())
    raw[HDR + (HDR + 20) + HDR + 5] ^= 1  # the payload of lsn 10
    path.write_bytes(raw)
    wal = Wal(tmp_path, segment_bytes=size)
    # only lsn 10 is lost; the stale frames after lsn 11 are neither records nor damage
    assert wal.recovery_notes == [f"{seg(9)}: bad crc at offset 52: skipped 36 bytes, 1 records"]
    assert [lsns for *_, lsns, _ in wal.recovery_losses] == [[10]]
    assert wal.replay() == [(9, b"a" * 20), (11, b"c" * 20), (12, b"d" * 20)]
    assert len(path.read_bytes()) == size  # not cut: a recycled segment keeps its stale tail
    wal.close()


def test_spares_are_dropped_when_there_is_no_checkpoint(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path, segment_bytes=HDR + 2 * (HDR + 10))
    wal.append_many([b"x" * 10, b"y" * 10])
    wal.append(b"z")
    wal.ack([0, 1, 2])
    wal.close()
    assert spares(tmp_path)
    (tmp_path / "progress.ckpt").unlink()  # e.g. an operator cleaning up by hand
    for p in tmp_path.glob("*.wal"):
        p.unlink()
    wal = Wal(tmp_path)  # lsns start again at 0: stale frames must not be read as new records
    assert spares(tmp_path) == []
    wal.close()


def test_both_backends_recycle_identically(writer_reader: tuple[Any, Any], tmp_path: Path) -> None:
    dirs = {}
    for name, cls in zip(("a", "b"), writer_reader, strict=True):
        d = tmp_path / name
        wal = cls(d, segment_bytes=150)
        for round_ in range(4):
            lsns = wal.append_many(payloads(6, f"r{round_}"))
            wal.ack(lsns[:-1] if round_ == 1 else lsns)
            wal.checkpoint()
        wal.close()
        dirs[name] = d
    names = sorted(p.name for p in dirs["a"].iterdir())
    assert names == sorted(p.name for p in dirs["b"].iterdir())
    assert any(n.startswith("spare-") for n in names)
    for n in names:
        assert (dirs["a"] / n).read_bytes() == (dirs["b"] / n).read_bytes(), n


# -- a real crash --------------------------------------------------------------------------

CHILD = """
import importlib, sys
Wal = importlib.import_module("logdist._wlb" if sys.argv[1] == "rs" else "logdist._py").Wal
wal = Wal(sys.argv[2], segment_bytes=4096, commit_delay_us=200)
i = 0
while True:
    lsns = wal.append_many([b"rec-%d" % (i + k) for k in range(3)])
    i += 3
    if lsns[0] % 30 == 0:
        wal.ack(range(lsns[0] - 30, lsns[0] - 15))
        wal.checkpoint()
    print(lsns[-1], flush=True)
"""


def test_kill9_loses_no_appended_record(Wal: Any, tmp_path: Path) -> None:
    backend = "rs" if Wal.__module__ == "logdist._wlb" else "py"
    d = tmp_path / "wal"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, backend, str(d)], stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ}
    )
    assert child.stdout is not None
    returned = -1
    try:
        for line in child.stdout:
            returned = int(line)
            if returned >= 600:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    assert returned >= 600, "the child stopped early"
    wal = Wal(d)
    lsns = [lsn for lsn, _ in wal.replay()]
    acked = {x for base in range(30, returned + 1, 30) for x in range(base - 30, base - 15)}
    # Every record whose append returned and that was not acknowledged is there, in order.
    assert set(range(returned + 1)) - acked <= set(lsns)
    assert lsns == sorted(lsns)
    assert all(payload == b"rec-%d" % lsn for lsn, payload in wal.replay())


# -- damage in the middle of a segment ------------------------------------------------------


def frames_of(d: Path) -> list[tuple[str, int, int, int]]:
    """(file, frame start, frame end, lsn) of every record in the segment files of `d`."""
    out = []
    for name in segments(d):
        raw = (d / name).read_bytes()
        pos = HDR
        while pos + HDR <= len(raw):
            end = pos + HDR + int.from_bytes(raw[pos : pos + 4], "little")
            out.append((name, pos, end, int.from_bytes(raw[pos + 8 : pos + 16], "little")))
            pos = end
    return out


@pytest.mark.parametrize("flips", [1, 10, 100])
def test_scattered_damage_loses_exactly_the_damaged_records(Wal: Any, tmp_path: Path, flips: int) -> None:
    rng = random.Random(flips)
    data = [f"record-{i}-".encode() + b"z" * ((i * 7) % 90) for i in range(600)]
    wal = Wal(tmp_path, segment_bytes=4096)
    for i in range(0, 600, 5):
        wal.append_many(data[i : i + 5])
    wal.close()
    frames = frames_of(tmp_path)
    hit: set[int] = set()
    flipped: set[tuple[str, int]] = set()
    while len(flipped) < flips:
        name, start, end, lsn = rng.choice(frames)
        at = rng.randrange(start, end)
        if (name, at) in flipped:
            continue  # a second flip of the same byte could undo the first
        flipped.add((name, at))
        raw = bytearray((tmp_path / name).read_bytes())
        raw[at] ^= 1 << rng.randrange(8)
        (tmp_path / name).write_bytes(raw)
        hit.add(lsn)

    wal = Wal(tmp_path, segment_bytes=4096)
    got = wal.replay()
    assert got == [(lsn, p) for lsn, p in enumerate(data) if lsn not in hit]  # at most the damaged ones
    lost = sorted(lsn for *_, lsns, _ in wal.recovery_losses for lsn in lsns)
    assert lost == sorted(hit)  # and exactly those are reported
    assert wal.stats()["lost_records"] == len(hit)
    wal.close()


def test_stale_frames_of_a_recycled_segment_are_neither_records_nor_damage(Wal: Any, tmp_path: Path) -> None:
    size = HDR + 6 * (HDR + 30)
    wal = Wal(tmp_path, segment_bytes=size)
    for k in range(3):
        wal.append_many([bytes([65 + k]) * 30] * 6)  # lsns 0-17, three full segments
    wal.ack(range(18))
    wal.checkpoint()
    assert spares(tmp_path)
    wal.append_many([b"new-1" * 6, b"new-2" * 6])  # lsns 18, 19 over a spare: stale frames follow
    wal.close()  # a clean stop: the checkpoint says lsns up to 20 were written
    path = tmp_path / seg(18)
    raw = bytearray(path.read_bytes())
    assert raw[:8] == b"LDWALSR1" and len(raw) == size
    raw[HDR + HDR + 3] ^= 0x10  # the payload of lsn 18
    path.write_bytes(raw)

    wal = Wal(tmp_path, segment_bytes=size)
    # lsn 18 lost; the resync takes lsn 19, never a stale frame (their lsns are below 18)
    assert wal.replay() == [(19, b"new-2" * 6)]
    assert wal.recovery_notes == [f"{seg(18)}: bad crc at offset {HDR}: skipped 46 bytes, 1 records"]
    assert [lsns for *_, lsns, _ in wal.recovery_losses] == [[18]]
    assert len(path.read_bytes()) == size  # the stale tail is not damage: not cut, not counted
    crash(wal)

    raw = bytearray(path.read_bytes())  # now the LAST live record: the stale frames still don't count
    raw[HDR + 2 * (HDR + 30) - 1] ^= 0x10
    path.write_bytes(raw)
    wal = Wal(tmp_path, segment_bytes=size)
    assert [lsns for *_, lsns, _ in wal.recovery_losses] == [[19]]
    assert wal.replay() == []
    wal.close()


def damage_files(d: Path, rng: random.Random, ops: int) -> None:
    """Random damage to the segment files: flipped bytes, zeroed or random runs, a cut."""
    names = segments(d)
    for _ in range(ops):
        if not names:
            return
        path = d / rng.choice(names)
        raw = bytearray(path.read_bytes())
        if not raw:
            continue
        at = rng.randrange(len(raw))
        end = min(len(raw), at + rng.randint(1, 40))
        kind = rng.randrange(4)
        if kind == 0:
            raw[at] ^= rng.randint(1, 255)
        elif kind == 1:
            raw[at:end] = bytes(end - at)
        elif kind == 2:
            raw[at:end] = rng.randbytes(end - at)
        else:
            del raw[at:]
        path.write_bytes(raw)


def random_log(cls: Any, d: Path, rng: random.Random) -> tuple[list[bytes], set[int]]:
    """Batches over small segments, some delivered and checkpointed (so spares are recycled and
    stale frames follow live records), then closed or crashed: (payloads by lsn, delivered)."""
    wal = cls(d, segment_bytes=400)
    written: list[bytes] = []
    acked: set[int] = set()
    for r in range(12):
        batch = [f"r{r}-{i}-".encode() + rng.randbytes(rng.randrange(60)) for i in range(rng.randint(1, 4))]
        lsns = wal.append_many(batch)
        written += batch
        if rng.randrange(3) == 0:
            done = [lsn for lsn in lsns if rng.randrange(4)]
            wal.ack(done)
            acked.update(done)
            wal.checkpoint()
    if rng.randrange(2):
        wal.close()
    else:
        crash(wal)
    return written, acked


def recover_copy(cls: Any, src: Path, dst: Path) -> dict[str, Any]:
    """Open a copy of the log in `src` and return all that recovery found, and the files after."""
    shutil.copytree(src, dst)
    wal = cls(dst, segment_bytes=400)
    st = wal.stats()
    out = {
        "notes": wal.recovery_notes,
        "losses": wal.recovery_losses,
        "replay": wal.replay(),
        "stats": {k: st[k] for k in ("skipped_bytes", "skipped_records", "lost_records", "recovered_records")},
    }
    crash(wal)
    out["files"] = {p.name: p.read_bytes() for p in sorted(dst.iterdir())}
    return out


@pytest.mark.parametrize("seed", range(12))
def test_both_backends_skip_the_same_bytes(writer_reader: tuple[Any, Any], tmp_path: Path, seed: int) -> None:
    W, R = writer_reader
    rng = random.Random(seed)
    random_log(W, tmp_path / "log", rng)
    damage_files(tmp_path / "log", rng, rng.randint(1, 6))
    mine = recover_copy(W, tmp_path / "log", tmp_path / "w")
    theirs = recover_copy(R, tmp_path / "log", tmp_path / "r")
    assert mine == theirs  # notes, losses (with the damaged bytes), records, figures, and files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=hst.integers(0, 2**32), ops=hst.integers(1, 8))
def test_fuzz_recovery_of_damaged_segments(Wal: Any, tmp_path: Path, seed: int, ops: int) -> None:
    """Recovery never fails, never gives a record back twice, never invents one; what it
    reports lost was written, is not given back, and was not delivered."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        written, acked = random_log(Wal, Path(d), rng)
        damage_files(Path(d), rng, ops)
        wal = Wal(d, segment_bytes=400)
        got = wal.replay()
        lsns = [lsn for lsn, _ in got]
        assert lsns == sorted(set(lsns))
        assert all(lsn < len(written) and written[lsn] == p for lsn, p in got)
        assert not acked & set(lsns)
        lost = [lsn for *_, ls, _ in wal.recovery_losses for lsn in ls]
        assert len(lost) == wal.stats()["lost_records"]
        assert all(lsn < len(written) for lsn in lost) and not set(lost) & (set(lsns) | acked)
        crash(wal)
        again = Wal(d, segment_bytes=400)  # a second open: the same records, no loss reported twice
        assert again.replay() == got and again.recovery_losses == []
        again.close()
