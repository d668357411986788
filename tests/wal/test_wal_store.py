"""WalStore, the distributor's `wal` durability, on both log backends (no network here)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest

from logdist.config import parse_distributor_config
from logdist.distributor.batch import Chunk
from logdist.distributor.engine import Engine
from logdist.distributor.ledger import PacketLedger
from logdist.distributor.wal_store import WalStore, make_store
from logdist.distributor.walrecord import (
    KEYS_FILE,
    KEYS_MAGIC,
    KEYS_MAGIC_V1,
    LeftoverFileError,
    decode_keys,
    decode_leftover,
    decode_record,
    encode_leftover,
    encode_parts,
)
from logdist.errors import WalFullError


async def recovered(store: WalStore, ledger: PacketLedger | None = None) -> list[tuple[int, bytes, int, str]]:
    remember = ledger.remember if ledger is not None else PacketLedger(100_000).remember
    return [r async for r in store.recover(remember)]


async def crash(store: WalStore) -> None:
    """A crash: the store stops where it is, with no close(). A background checkpoint under way
    finishes first (a dead process runs none, so it must not race the next store opening the
    same directory); one waiting for its interval is cancelled."""
    cp = store._checkpointer
    if cp is not None and not cp.done():
        if store._sleeping:
            cp.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cp
    store.wal = None


def ack(store: WalStore, token: int, count: int) -> None:
    """`count` messages of record `token` are delivered: a batch of one chunk of it."""
    store.ack_chunks([Chunk(b"", count, token, 0.0)])


async def test_parts_survive_until_fully_acked(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal, checkpoint_interval=0.01)
    assert await recovered(store) == []
    t = await store.append([(b'{"id":"a"},{"id":"b"}', 2, "a1"), (b'{"id":"c"}', 1, "a2")])
    t += await store.append([(b'{"id":"d"}', 1)])  # no target (a dead-letter replay)
    assert t == [0, 1, 2]
    ack(store, t[0], 1)  # half of a re-split chunk: still undelivered
    ack(store, t[1], 1)
    for _ in range(200):  # the checkpoint task persists progress shortly after the acks
        if not store._acked_since_checkpoint and store._checkpointer is not None and store._checkpointer.done():
            break
        await asyncio.sleep(0.01)
    assert store.stats()["wal_undelivered_records"] == 2
    await crash(store)

    store = WalStore(tmp_path, wal_cls=Wal)
    # each part comes back with the analyzer it was routed to
    assert await recovered(store) == [(0, b'{"id":"a"},{"id":"b"}', 2, "a1"), (2, b'{"id":"d"}', 1, "")]
    assert store.replayed_messages == 3
    ack(store, 0, 2)
    ack(store, 2, 1)
    ack(store, 99, 1)  # unknown tokens are ignored
    await store.close()

    store = WalStore(tmp_path, wal_cls=Wal)
    assert await recovered(store) == []
    st = store.stats()
    assert (st["wal_segments"], st["wal_bytes"]) == (0, 0)  # delivered segments are deleted
    await store.close()


async def test_ack_chunks_is_ack_of_each_chunk(Wal: Any, tmp_path: Path) -> None:
    """The distributor acknowledges a delivered batch with one ack_chunks(batch.chunks)."""
    store = WalStore(tmp_path, wal_cls=Wal, checkpoint_interval=0.01)
    await recovered(store)
    t = await store.append([(b'{"id":"a"},{"id":"b"}', 2, "a1"), (b'{"id":"c"}', 1, "a1"), (b'{"id":"d"}', 1, "a2")])
    # a batch holding half of part 0 (re-split), all of part 1, and a chunk of an unknown record
    store.ack_chunks([Chunk(b'{"id":"a"}', 1, t[0], 0.0), Chunk(b'{"id":"c"}', 1, t[1], 0.0), Chunk(b"", 1, 99, 0.0)])
    assert store._remaining == {t[0]: 1, t[2]: 1}
    store.ack_chunks([])
    store.ack_chunks([Chunk(b'{"id":"b"}', 1, t[0], 0.0)])
    assert store._remaining == {t[2]: 1}
    await store.checkpoint()
    assert store.stats()["wal_undelivered_records"] == 1
    await crash(store)  # only the unacknowledged part comes back

    store = WalStore(tmp_path, wal_cls=Wal)
    assert await recovered(store) == [(t[2], b'{"id":"d"}', 1, "a2")]
    await store.close()


async def test_full_log_raises_wal_full(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal, max_bytes=200)
    await recovered(store)
    (t,) = await store.append([(b"x" * 100, 1)])
    with pytest.raises(WalFullError):
        await store.append([(b"y" * 100, 1)])
    ack(store, t, 1)
    await store.checkpoint()
    assert await store.append([(b"y" * 100, 1)]) == [1]
    await store.close()


def test_make_store_follows_the_config(tmp_path: Path) -> None:
    assert make_store(parse_distributor_config({}), list) is None
    cfg = parse_distributor_config({"durability": "wal", "state_dir": str(tmp_path), "wal_max_bytes": 4096})
    store = make_store(cfg, list)
    assert isinstance(store, WalStore) and store.path == tmp_path / "wal"
    assert store._opts["max_bytes"] == 4096 and store._opts["segment_bytes"] == 4096


async def wait_checkpointed(store: WalStore) -> None:
    for _ in range(500):
        if not store._acked_since_checkpoint and (store._checkpointer is None or store._checkpointer.done()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no checkpoint")


async def test_dedup_keys_survive_a_crash(Wal: Any, tmp_path: Path) -> None:
    ledger = PacketLedger(3)
    store = WalStore(tmp_path, wal_cls=Wal, checkpoint_interval=0.01, dedup_window=3, packet_keys=ledger.keys)
    await recovered(store, ledger)
    delivered = await store.append([(b'{"id":"1"}', 1), (b'{"id":"2"}', 1)], packet_key=("em", "p1"), content_hash=11)
    # a lone surrogate survives too, and the largest hash
    await store.append([(b'{"id":"3"}', 1)], packet_key=("em", "p2\udc80"), content_hash=2**64 - 1)
    await store.append([(b'{"id":"4"}', 1)])  # no packet id: no key
    for t in delivered:
        ack(store, t, 1)
    await wait_checkpointed(store)
    assert (tmp_path / "dedup.keys").exists()  # written before the checkpoint
    await crash(store)

    ledger = PacketLedger(3)
    store = WalStore(tmp_path, wal_cls=Wal, dedup_window=3, packet_keys=ledger.keys)
    parts = await recovered(store, ledger)
    assert [p[1] for p in parts] == [b'{"id":"3"}', b'{"id":"4"}']  # records are returned without their key
    assert ledger.keys() == [(("em", "p1"), 11), (("em", "p2\udc80"), 2**64 - 1)]  # with their content hash
    for i in range(3, 6):
        await store.append([(b"{}", 1)], packet_key=("em", f"p{i}"), content_hash=i)
        ledger.remember(("em", f"p{i}"), i)  # as admission does once the packet is stored
    await store.close()
    ledger = PacketLedger(3)
    store = WalStore(tmp_path, wal_cls=Wal, dedup_window=3, packet_keys=ledger.keys)
    await recovered(store, ledger)
    assert ledger.keys() == [(("em", "p3"), 3), (("em", "p4"), 4), (("em", "p5"), 5)]  # bounded by the window
    await store.close()


@pytest.mark.parametrize("key", [None, ("em", "p-1")])
@pytest.mark.parametrize("target", ["", "a1", "analyzer-\u00e9"])
@pytest.mark.parametrize("content_hash", [0, 1, 2**64 - 1])
def test_records_round_trip_with_and_without_a_target(
    key: tuple[str, str] | None, target: str, content_hash: int
) -> None:
    parts: list[Any] = [(b'{"id":"x"}', 7, target), (b'{"id":"y"}', 1, target)]
    first, second = encode_parts(parts, key, content_hash)
    assert decode_record(first) == (7, None, 0, b'{"id":"x"}', target)
    # the key and the content hash ride on the last part (no key: no hash either)
    assert decode_record(second) == (1, key, content_hash if key else 0, b'{"id":"y"}', target)


def test_records_written_before_targets_or_hashes_were_kept_still_decode() -> None:
    old = struct.pack("<IHH", 3, 2, 2) + b"emp1" + b'{"id":"z"}'  # count without the target bit
    assert decode_record(old) == (3, ("em", "p1"), 0, b'{"id":"z"}', "")
    old = struct.pack("<IHH", 3 | 0x8000_0000, 2, 2) + b"emp1" + struct.pack("<H", 2) + b"a1" + b'{"id":"z"}'
    assert decode_record(old) == (3, ("em", "p1"), 0, b'{"id":"z"}', "a1")  # hash 0: unknown


def _old_keys_file(keys: list[tuple[str, str]]) -> bytes:
    """A keys file as the version before content hashes wrote it."""
    out = KEYS_MAGIC_V1
    for e, p in keys:
        out += struct.pack("<HH", len(e), len(p)) + e.encode() + p.encode()
    return out


async def test_a_log_and_keys_file_of_the_previous_format_still_recover(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path)  # records and keys file written by the version that kept no hashes
    old_record = struct.pack("<IHH", 1 | 0x8000_0000, 2, 2) + b"emp2" + struct.pack("<H", 2) + b"a1" + b'{"id":"b"}'
    wal.append_many([old_record])
    wal.close()
    (tmp_path / KEYS_FILE).write_bytes(_old_keys_file([("em", "p1")]))
    ledger = PacketLedger(10)
    store = WalStore(tmp_path, wal_cls=Wal, dedup_window=10, packet_keys=ledger.keys)
    assert await recovered(store, ledger) == [(0, b'{"id":"b"}', 1, "a1")]
    assert ledger.keys() == [(("em", "p1"), 0), (("em", "p2"), 0)]  # hash 0: unknown content
    # converted at once, so the new format can be appended to it
    assert (tmp_path / KEYS_FILE).read_bytes().startswith(KEYS_MAGIC)
    await store.append([(b'{"id":"c"}', 1)], packet_key=("em", "p3"), content_hash=33)
    ledger.remember(("em", "p3"), 33)
    await store.close()
    assert decode_keys((tmp_path / KEYS_FILE).read_bytes())[0] == (("em", "p1"), 0)
    ledger = PacketLedger(10)
    store = WalStore(tmp_path, wal_cls=Wal, dedup_window=10, packet_keys=ledger.keys)
    await recovered(store, ledger)
    assert dict(ledger.keys()) == {("em", "p1"): 0, ("em", "p2"): 0, ("em", "p3"): 33}
    await store.close()


def test_leftover_files_round_trip_and_damage_costs_only_the_damaged_part() -> None:
    parts: list[Any] = [(b'{"id":"a"},{"id":"b"}', 2, "a1"), (b'{"id":"c"}', 1, ""), (b'{"id":"d"}', 1, "a2")]
    raw = encode_leftover(parts)
    assert decode_leftover(raw) == parts
    with pytest.raises(LeftoverFileError) as cut:
        decode_leftover(raw[:-3])
    assert cut.value.parts == parts[:2]
    flipped = bytearray(raw)
    flipped[raw.index(b'{"id":"c"}')] ^= 0xFF
    with pytest.raises(LeftoverFileError) as bad:
        decode_leftover(bytes(flipped))
    assert bad.value.parts == parts[:1]
    with pytest.raises(LeftoverFileError):
        decode_leftover(b"not a leftover file")


class FailingCheckpoints:
    """A real Wal whose first `fail` checkpoints raise OSError (a disk error at the worst time)."""

    def __init__(self, Wal: Any, fail: int) -> None:
        self._Wal, self.fail, self.calls = Wal, fail, 0

    def __call__(self, *args: Any, **kw: Any) -> Any:
        self.wal = self._Wal(*args, **kw)
        return self

    def checkpoint(self) -> int:
        self.calls += 1
        if self.calls <= self.fail:
            raise OSError(28, "No space left on device (injected)")
        return int(self.wal.checkpoint())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wal, name)


async def test_full_log_frees_itself_after_a_failed_checkpoint_with_no_more_traffic(Wal: Any, tmp_path: Path) -> None:
    flaky = FailingCheckpoints(Wal, fail=2)
    store = WalStore(tmp_path, wal_cls=flaky, max_bytes=200, segment_bytes=120, checkpoint_interval=0.01)
    await recovered(store)
    (t,) = await store.append([(b"x" * 100, 1)])
    with pytest.raises(WalFullError):
        await store.append([(b"y" * 100, 1)])
    ack(store, t, 1)  # the only delivery there will be: every retry must come from the store itself
    for _ in range(500):
        if flaky.calls > flaky.fail and store._checkpointer is not None and store._checkpointer.done():
            break
        await asyncio.sleep(0.01)
    assert store.checkpoint_errors == flaky.fail
    assert flaky.calls == flaky.fail + 1
    assert await store.append([(b"y" * 100, 1)]) == [1]  # room again
    await store.close()


async def test_records_that_are_not_logdist_records_are_skipped_on_recovery(Wal: Any, tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    good = encode_parts([(b'{"id":"a"}', 1, "a1")], ("em", "p1"), 5)[0]
    wal.append_many([b"\x01", struct.pack("<IHH", 1, 50, 50) + b"short", good])
    wal.close()
    store = WalStore(tmp_path, wal_cls=Wal)
    assert await recovered(store) == [(2, b'{"id":"a"}', 1, "a1")]
    assert store.stats()["wal_undecodable_records"] == 2
    await store.close()
    store = WalStore(tmp_path, wal_cls=Wal)
    assert await recovered(store) == [(2, b'{"id":"a"}', 1, "a1")]  # the skipped ones do not come back
    await store.close()


async def test_close_lets_a_running_checkpoint_finish(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal, checkpoint_interval=0.0)
    await recovered(store)
    t = await store.append([(b'{"id":"a"}', 1), (b'{"id":"b"}', 1)])
    ack(store, t[0], 1)
    ack(store, t[1], 1)
    await asyncio.sleep(0)  # the checkpointer has started its checkpoint (interval 0)
    await store.close()
    store = WalStore(tmp_path, wal_cls=Wal)
    assert await recovered(store) == []
    await store.close()


async def test_a_packet_torn_by_a_crash_is_not_remembered_as_stored(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal)
    await recovered(store)
    await store.append([(b'{"id":"a"}', 1, "a1"), (b'{"id":"b"}', 1, "a2")], packet_key=("em", "p1"))
    await crash(store)  # a kill -9 (no close, no keys file yet) ...
    (seg,) = sorted(tmp_path.glob("*.wal"))
    seg.write_bytes(seg.read_bytes()[:-5])  # ... in the middle of the packet's write: its last part is torn
    store = WalStore(tmp_path, wal_cls=Wal)
    ledger = PacketLedger(100_000)
    assert await recovered(store, ledger) == [(0, b'{"id":"a"}', 1, "a1")]  # the part before the tear comes back
    # but the packet does not count as stored: the client's retry (it got no answer) is stored
    # again instead of being answered "duplicate", so the torn part is not lost
    assert ledger.keys() == []
    await store.close()


def _frame_offsets(raw: bytes) -> list[int]:
    offsets, pos = [], 16
    while pos < len(raw):
        offsets.append(pos)
        pos += 16 + int.from_bytes(raw[pos : pos + 4], "little")
    return offsets


async def test_damaged_records_are_reported_lost_until_acknowledged(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal)
    await recovered(store)
    parts = [(b",".join(b'{"id":"%d-%d"}' % (p, i) for i in range(p + 2)), p + 2, "a1") for p in range(5)]
    for p, part in enumerate(parts):
        await store.append([part], packet_key=("em", f"p{p}"))
    await crash(store)
    (seg,) = sorted(tmp_path.glob("*.wal"))
    raw = bytearray(seg.read_bytes())
    at = _frame_offsets(bytes(raw))
    raw[at[1] + 16 + 20] ^= 0x01  # in the messages of packet 1 (3 messages): its count is readable
    raw[at[3] + 16 + 2] ^= 0x40  # in the count field of packet 3 (5 messages): it is not
    seg.write_bytes(raw)

    store = WalStore(tmp_path, wal_cls=Wal)
    got = await recovered(store)
    assert [lsn for lsn, *_ in got] == [0, 2, 4]  # only the damaged records are missing
    loss = store.data_loss()
    assert loss is not None
    assert (loss["records"], loss["messages"], loss["records_without_count"]) == (2, 3, 1)
    stretches = [(s["offset"], s["lsns"], s["records"]) for s in loss["stretches"]]
    assert stretches == [(at[1], [1, 2], 1), (at[3], [3, 4], 1)]
    st = store.stats()
    assert (st["wal_lost_records_total"], st["wal_lost_messages_total"]) == (2, 3)
    await crash(store)

    store = WalStore(tmp_path, wal_cls=Wal)  # a crash keeps the report; nothing is lost twice
    assert [lsn for lsn, *_ in await recovered(store)] == [0, 2, 4]
    assert store.data_loss() == loss and store.stats()["wal_lost_records_total"] == 0
    assert await store.acknowledge_loss() == loss
    assert store.data_loss() is None and await store.acknowledge_loss() is None
    await crash(store)
    store = WalStore(tmp_path, wal_cls=Wal)  # acknowledged: gone for good
    await recovered(store)
    assert store.data_loss() is None
    await store.close()


async def test_a_graceful_close_clears_the_loss_report(Wal: Any, tmp_path: Path) -> None:
    store = WalStore(tmp_path, wal_cls=Wal)
    await recovered(store)
    for p in range(3):
        await store.append([(b'{"id":"%d"}' % p, 1, "a1")])
    await crash(store)
    (seg,) = sorted(tmp_path.glob("*.wal"))
    raw = bytearray(seg.read_bytes())
    raw[_frame_offsets(bytes(raw))[1] + 4] ^= 0xFF  # the crc of the middle record
    seg.write_bytes(raw)
    store = WalStore(tmp_path, wal_cls=Wal)
    await recovered(store)
    assert store.data_loss() is not None and (tmp_path / "data-loss.json").exists()
    await store.close()
    assert not (tmp_path / "data-loss.json").exists()
    store = WalStore(tmp_path, wal_cls=Wal)
    assert [lsn for lsn, *_ in await recovered(store)] == [0, 2]
    assert store.data_loss() is None
    await store.close()


async def test_a_reloaded_dedup_window_reaches_the_ledger_and_the_store(Wal: Any, tmp_path: Path) -> None:
    """A config reload that changes dedup_window resizes the ledger and the store's keys file
    bound alike (the store rewrites its keys file at twice the window)."""
    cfg = parse_distributor_config({"durability": "wal", "state_dir": str(tmp_path), "dedup_window": 100})
    ledger = PacketLedger(cfg.dedup_window)
    store = WalStore(tmp_path / "wal", wal_cls=Wal, dedup_window=cfg.dedup_window, packet_keys=ledger.keys)
    await recovered(store, ledger)
    engine = Engine(cfg, store, ledger)
    engine.apply_config(parse_distributor_config({"durability": "wal", "state_dir": str(tmp_path), "dedup_window": 7}))
    assert (ledger.window, store.dedup_window) == (7, 7)
    await store.close()
