"""Findings of the WAL recovery fuzzer (crates/wlb-fuzz, target wal_recovery), as regression
tests on both backends. Each input is also kept in crates/wlb-fuzz/corpus/wal_recovery/ (the
file named in the test's doc), which `make fuzz` replays.

Before the fixes, recovery (Rust and Python alike):
* gave a reported-lost lsn to a new record when no intact record or checkpoint was left above it;
* lost the records of a segment file that was cut exactly at a record boundary (or emptied)
  without a word, when the next segment showed that they had existed;
* took an older segment whose header named a lower lsn for a spare renamed just before a crash,
  and deleted it with its records without a word.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SEG = [f"{i:020}.wal" for i in range(4)]


def _segments(impl: ModuleType, d: Path, batches: list[list[bytes]]) -> None:
    """One segment per batch (each open starts a new one), then a crash (no close)."""
    for i, batch in enumerate(batches):
        w = impl.Wal(d)
        w.append_many(batch)
        if i < len(batches) - 1:
            w.close()
        del w


def _lost(w: Any) -> list[int]:
    return [lsn for loss in w.recovery_losses for lsn in loss[5]]


def test_a_lost_lsn_is_never_given_to_a_new_record(impl: ModuleType, tmp_path: Path) -> None:
    """corpus/wal_recovery/regress-lost-lsn-reused: the torn lsn 0 is reported lost (segment 1
    follows it), segment 1 and the checkpoint are wrecked too; the next append took lsn 0."""
    _segments(impl, tmp_path, [[b"a"], [b"b"]])
    (tmp_path / SEG[0]).write_bytes((tmp_path / SEG[0]).read_bytes()[:19])
    (tmp_path / SEG[1]).write_bytes(bytes(len((tmp_path / SEG[1]).read_bytes())))
    ck = bytearray((tmp_path / "progress.ckpt").read_bytes())
    ck[-1] ^= 0xFF
    (tmp_path / "progress.ckpt").write_bytes(bytes(ck))
    w = impl.Wal(tmp_path)
    assert _lost(w) == [0]
    assert w.append(b"new") > 0
    w.close()


@pytest.mark.parametrize(
    ("cut", "lost", "note"),
    [
        (33, [1], "torn record at offset 33: skipped 0 bytes, 1 records"),
        (16, [0, 1], "torn record at offset 16: skipped 0 bytes, 2 records"),
        (0, [0, 1], "torn record at offset 0: skipped 0 bytes, 2 records"),
    ],
)
def test_a_segment_cut_at_a_record_boundary_reports_its_lost_records(
    impl: ModuleType, tmp_path: Path, cut: int, lost: list[int], note: str
) -> None:
    """corpus/wal_recovery/regress-segment-emptied-silently: segment 0 cut after its header, or
    emptied, or cut between records; the next segment starts at lsn 2, so lsns were lost."""
    _segments(impl, tmp_path, [[b"a", b"b"], [b"c"]])
    (tmp_path / SEG[0]).write_bytes((tmp_path / SEG[0]).read_bytes()[:cut])
    w = impl.Wal(tmp_path)
    assert _lost(w) == lost
    assert w.stats()["lost_records"] == len(lost)
    assert f"{SEG[0]}: {note}" in w.recovery_notes
    assert [lsn for lsn, _ in w.replay()] == [lsn for lsn in (0, 2) if lsn not in lost]
    w.close()


def test_an_older_segment_is_not_taken_for_a_renamed_spare(impl: ModuleType, tmp_path: Path) -> None:
    """corpus/wal_recovery/regress-old-segment-taken-for-spare: segment 1's header names lsn 0
    and its only record is damaged. Only the newest file can be a spare renamed just before a
    crash; this one is followed by segment 2, so its record was lost, and is reported."""
    _segments(impl, tmp_path, [[b"a"], [b"b"], [b"c"]])
    data = bytearray((tmp_path / SEG[1]).read_bytes())
    data[8:16] = bytes(8)  # header lsn 1 -> 0
    data[20] ^= 0xFF  # the record's crc
    (tmp_path / SEG[1]).write_bytes(bytes(data))
    w = impl.Wal(tmp_path)
    assert _lost(w) == [1]
    assert [lsn for lsn, _ in w.replay()] == [0, 2]
    w.close()


@pytest.mark.parametrize("cut", [0, 16, 33])
def test_both_backends_report_a_cut_segment_alike(rs: ModuleType, py: ModuleType, tmp_path: Path, cut: int) -> None:
    got = []
    for impl in (rs, py):
        d = tmp_path / impl.__name__
        _segments(impl, d, [[b"a", b"b"], [b"c"]])
        (d / SEG[0]).write_bytes((d / SEG[0]).read_bytes()[:cut])
        w = impl.Wal(d)
        got.append((w.recovery_notes, [tuple(x) for x in w.recovery_losses], w.replay(), w.stats()["next_lsn"]))
        w.close()
    assert got[0] == got[1]
