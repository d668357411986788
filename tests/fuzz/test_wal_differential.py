"""WAL recovery, differentially and with the damage model of the wal_recovery fuzz target
(crates/wlb-fuzz/fuzz_targets/wal_recovery.rs): a history of appends, acks, checkpoints and
clean restarts over small segments (rollover, recycled spares), a crash, then damage: bit flips,
zeroed, overwritten, inserted, deleted and copied ranges (a whole frame may land elsewhere),
truncation, a segment header's lsn, a damaged checkpoint.

Both backends recover copies of the same damaged directory and must agree on everything:
notes, losses (with their bytes), the records given back, the figures, the files left, and the
lsn the next append takes. And what they agree on must hold: each lsn given back once, only as
written; lost lsns written, not given back; a delivered record never given back while the
checkpoint is intact; every undelivered record outside the newest segment given back or
reported lost; no lost lsn given to a new record.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from .profiles import budget

# fsync is free on a tmpfs, and this test does hundreds: its logs live there when there is one
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


@dataclass(frozen=True)
class Step:
    payloads: list[bytes]
    acks: list[bool]  # per pending record, in lsn order (cycled)
    then: str  # "checkpoint", "restart" or "nothing"


@dataclass(frozen=True)
class Damage:
    kind: str
    file: int  # index into the segment files (modulo their number)
    at: float  # where, as a fraction of the file
    length: int
    data: bytes
    src_at: float


steps_st = st.lists(
    st.builds(
        Step,
        payloads=st.lists(st.binary(max_size=40), max_size=5),
        acks=st.lists(st.booleans(), min_size=1, max_size=6),
        then=st.sampled_from(["checkpoint", "restart", "nothing", "nothing"]),
    ),
    min_size=1,
    max_size=6,
)
damage_st = st.lists(
    st.builds(
        Damage,
        kind=st.sampled_from(["flip", "zero", "truncate", "insert", "delete", "copy", "overwrite", "header", "ckpt"]),
        file=st.integers(0, 7),
        at=st.floats(0, 1),
        length=st.integers(0, 48),
        data=st.binary(min_size=1, max_size=40),
        src_at=st.floats(0, 1),
    ),
    max_size=5,
)


def history(impl: ModuleType, d: Path, segment_bytes: int, steps: list[Step]) -> tuple[dict[int, bytes], set[int]]:
    """Runs the steps, then crashes: (payload of every lsn written, lsns delivered on disk)."""
    wal = impl.Wal(d, segment_bytes=segment_bytes)
    written: dict[int, bytes] = {}
    acked: set[int] = set()
    delivered: set[int] = set()
    for s in steps:
        for lsn, p in zip(wal.append_many(s.payloads), s.payloads, strict=True):
            written[lsn] = p
        pending = sorted(set(written) - acked)
        ack = [lsn for i, lsn in enumerate(pending) if s.acks[i % len(s.acks)]]
        wal.ack(ack)
        acked.update(ack)
        if s.then == "checkpoint":
            wal.checkpoint()
            delivered = set(acked)
        elif s.then == "restart":
            wal.close()
            delivered = set(acked)
            wal = impl.Wal(d, segment_bytes=segment_bytes)
            assert wal.recovery_notes == []
            acked = set(delivered)
    del wal  # a crash
    return written, delivered


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def damage(d: Path, ops: list[Damage]) -> bool:
    """Applies the damage; True when the checkpoint was touched."""
    ckpt = False
    for op in ops:
        if op.kind == "ckpt":
            p = d / "progress.ckpt"
            raw = bytearray(p.read_bytes())
            raw[int(op.at * (len(raw) - 1))] ^= op.data[0] or 1
            p.write_bytes(bytes(raw))
            ckpt = True
            continue
        files = segments(d)
        if not files:
            continue
        path = files[op.file % len(files)]
        raw = bytearray(path.read_bytes())
        src = files[(op.file + 1) % len(files)].read_bytes()
        at = int(op.at * len(raw))
        end = min(len(raw), at + op.length)
        if op.kind == "flip" and at < len(raw):
            raw[at] ^= 1 << (op.length % 8)
        elif op.kind == "zero":
            raw[at:end] = bytes(end - at)
        elif op.kind == "truncate":
            del raw[at:]
        elif op.kind == "insert":
            raw[at:at] = op.data
        elif op.kind == "delete":
            del raw[at:end]
        elif op.kind == "copy":
            s = int(op.src_at * len(src))
            piece = src[s : s + (end - at)]
            raw[at : at + len(piece)] = piece
        elif op.kind == "overwrite":
            piece = op.data[: end - at]
            raw[at : at + len(piece)] = piece
        elif op.kind == "header" and len(raw) >= 16:
            raw[8 + op.length % 8] ^= op.data[0] or 1
        path.write_bytes(bytes(raw))
    return ckpt


def recover(impl: ModuleType, src: Path, dst: Path, segment_bytes: int) -> dict[str, Any]:
    shutil.copytree(src, dst)
    wal = impl.Wal(dst, segment_bytes=segment_bytes)
    st_ = wal.stats()
    out: dict[str, Any] = {
        "notes": wal.recovery_notes,
        "losses": [tuple(x) for x in wal.recovery_losses],
        "replay": wal.replay(),
        "stats": {k: st_[k] for k in ("skipped_bytes", "skipped_records", "lost_records", "recovered_records")},
        "files": {p.name: p.read_bytes() for p in sorted(dst.iterdir()) if p.suffix == ".wal"},
    }
    out["next"] = wal.append(b"after")
    wal.close()
    return out


@given(
    writer=st.sampled_from(["rs", "py"]),
    segment_bytes=st.integers(40, 400),
    steps=steps_st,
    ops=damage_st,
)
@budget(60)
def test_damaged_logs_recover_alike_and_account_for_every_record(
    rs: ModuleType, py: ModuleType, writer: str, segment_bytes: int, steps: list[Step], ops: list[Damage]
) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix="logdist-fuzz-wal-") as tmp:
        check_one(rs, py, Path(tmp), writer, segment_bytes, steps, ops)


def check_one(
    rs: ModuleType, py: ModuleType, d: Path, writer: str, segment_bytes: int, steps: list[Step], ops: list[Damage]
) -> None:
    impl = {"rs": rs, "py": py}
    written, delivered = history(impl[writer], d / "log", segment_bytes, steps)
    newest = int(segments(d / "log")[-1].stem) if segments(d / "log") else 0
    ckpt_damaged = damage(d / "log", ops)
    got = recover(rs, d / "log", d / "rs", segment_bytes)
    assert got == recover(py, d / "log", d / "py", segment_bytes)

    replayed = [lsn for lsn, _ in got["replay"]]
    assert replayed == sorted(set(replayed)), "an lsn given back twice, or out of order"
    assert all(written.get(lsn) == p for lsn, p in got["replay"]), "a record given back that was not written so"
    lost = [lsn for loss in got["losses"] for lsn in loss[5]]
    assert len(lost) == len(set(lost)) == got["stats"]["lost_records"]
    assert set(lost) <= set(written) and not set(lost) & set(replayed)
    if not ckpt_damaged:
        assert not delivered & set(replayed), "a delivered record given back"
        missing = [
            lsn for lsn in written if lsn < newest and lsn not in delivered and lsn not in replayed and lsn not in lost
        ]
        assert not missing, f"undelivered records neither given back nor reported lost: {missing}"
    assert got["next"] not in set(lost) | set(replayed), "a lost or live lsn given to a new record"
