"""The packet scanner, differentially: the Rust core and its pure-Python twin give the same
answer to the same body, on the inputs the fuzzer keeps and on packets of values at their limits.

* every seed of crates/wlb-fuzz/corpus/route_packet/ (plain request bodies, hostile ones among
  them), in every format, strict and lenient: the same routed batches, or the same error;
* generated packets (tests/fuzz/hostile.py): the verdict is the predicted one and names the
  message (index or byte offset); an accepted packet routes every message once, unchanged in
  meaning, and the analyzer core counts each one once (distinct ids stay distinct).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from logdist.errors import PacketError

from . import hostile
from .profiles import budget

CORPUS = Path(__file__).resolve().parents[2] / "crates" / "wlb-fuzz" / "corpus" / "route_packet"
SEEDS = sorted(CORPUS.iterdir())
WORK = Path(__file__).resolve().parents[2] / "target" / "fuzz" / "corpus" / "route_packet"


def make_router(impl: ModuleType) -> Any:
    router = impl.Router("swrr", 7)
    for name, w in (("a1", 1.0), ("a2", 2.0), ("a3", 0.5)):
        router.set_target(name, w)
    return router


def outcome(impl: ModuleType, body: bytes, fmt: str, strict: bool = True) -> tuple[Any, ...]:
    try:
        r = impl.route_packet(body, make_router(impl), fallback_prefix="fz/", format=fmt, strict=strict)
    except PacketError as exc:
        return ("err", exc.code, exc.detail)
    return ("ok", r.emitter_id, r.packet_id, r.count, r.batches, r.counts)


def test_the_seed_corpus_is_small_and_hostile() -> None:
    names = {p.name for p in SEEDS}
    assert {"float-overflow", "lone-surrogates", "int-2-64", "raw-nul", "overlong-utf8", "deep-nesting"} <= names
    assert sum(p.stat().st_size for p in SEEDS) < 64 * 1024


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
@pytest.mark.parametrize("fmt", ["auto", "json", "ndjson"])
def test_corpus_seed_same_on_both_backends(rs: ModuleType, py: ModuleType, seed: Path, fmt: str) -> None:
    body = seed.read_bytes()
    for strict in (True, False):
        assert outcome(rs, body, fmt, strict) == outcome(py, body, fmt, strict), (fmt, strict)


def test_fuzzer_finds_same_on_both_backends(rs: ModuleType, py: ModuleType) -> None:
    """What the fuzzer kept (target/fuzz/corpus/route_packet, left by `make fuzz`; the seeds
    when there is none), every format, strict and lenient."""
    found = sorted(WORK.iterdir()) if WORK.is_dir() else []
    for f in found or SEEDS:
        try:
            body = f.read_bytes()
        except FileNotFoundError:
            continue  # a fuzzer running now replaced it with a smaller input
        for fmt in ("auto", "json", "ndjson"):
            for strict in (True, False):
                assert outcome(rs, body, fmt, strict) == outcome(py, body, fmt, strict), (f.name, fmt, strict)


@given(
    specs=hostile.messages(max_size=8),
    shape=st.sampled_from(hostile.SHAPES),
    packet_id=st.none() | st.sampled_from(["p-1", "\\ud800", "é", "\x00"]),
)
@budget(150)
def test_hostile_packets_same_verdict_and_meaning(
    rs: ModuleType, py: ModuleType, specs: list[hostile.MessageSpec], shape: str, packet_id: str | None
) -> None:
    built = hostile.build(specs, shape, list(range(len(specs))), "fz", packet_id)
    got = outcome(rs, built.body, built.fmt)
    assert got == outcome(py, built.body, built.fmt)
    event(f"{shape}: {got[1] if got[0] == 'err' else 'accepted'}")
    if got[0] == "err":
        hostile.check_refusal(built, shape, specs, got[1], got[2])
        return
    assert hostile.expected_verdict(specs) is None, f"a poisoned packet was accepted: {specs}"
    _, _, _, count, batches, counts = got
    assert count == len(specs) == sum(counts.values())
    # every message once, unchanged in meaning (an id added when it had none), in the batch
    # of the target the router picked for it
    picks = make_router(py).pick_many(count)
    queues = {name: hostile.meaning(b"[" + b + b"]") for name, b in batches.items()}
    for i, (name, text) in enumerate(zip(picks, built.texts, strict=True)):
        got_msg = queues[name].pop(0)
        want = hostile.meaning(text)
        if "id" not in want:
            assert isinstance(got_msg["id"], str) and got_msg["id"].endswith(f"/{i}")
            want["id"] = got_msg["id"]
        assert got_msg == want
    # the analyzer core reads every batch and counts every message once: no two ids collapse
    for impl in (rs, py):
        analyzer = impl.BatchAnalyzer(1 << 12, True)
        for name, b in batches.items():
            unique, dups, *_ = analyzer.ingest(b"[" + b + b"]")
            assert (unique, dups) == (counts[name], 0), (impl.__name__, name)


PLAIN = hostile.MessageSpec("str", b'"plain"', b'"INFO"', None, ())


@pytest.mark.parametrize("shape", hostile.SHAPES)
@pytest.mark.parametrize("poison", hostile.POISONS, ids=[p.name for p in hostile.POISONS])
def test_each_poison_between_good_messages_gets_its_verdict(
    impl: ModuleType, poison: hostile.Poison, shape: str
) -> None:
    specs = [PLAIN, hostile.MessageSpec("none", b'"x"', None, None, (b"1",), poison), PLAIN]
    built = hostile.build(specs, shape, [0, 1, 2], "fz", "p-1")
    got = outcome(impl, built.body, built.fmt)
    assert got[0] == "err", f"{poison.name} accepted"
    hostile.check_refusal(built, shape, specs, got[1], got[2])


VALUES = hostile.VALID_NUMBERS + hostile.VALID_STRINGS + [hostile.deep(55)]


@pytest.mark.parametrize("value", VALUES, ids=[v[:24].decode("utf-8", "replace") for v in VALUES])
def test_each_value_at_a_limit_is_accepted_unchanged(impl: ModuleType, value: bytes) -> None:
    specs = [hostile.MessageSpec(kind, b'"m"', None, None, (value,)) for kind in ("str", "int", "none")]
    built = hostile.build(specs, "packet", [0, 1, 2], "fz", None)
    r = impl.route_packet(built.body, None, fallback_prefix="fz/")
    got = hostile.meaning(b"[" + r.batches[""] + b"]")
    assert [{k: v for k, v in m.items() if k != "id"} for m in got] == [
        {k: v for k, v in hostile.meaning(t).items() if k != "id"} for t in built.texts
    ]
    unique, dups, *_ = impl.BatchAnalyzer(64, True).ingest(b"[" + r.batches[""] + b"]")
    assert (unique, dups) == (3, 0)
