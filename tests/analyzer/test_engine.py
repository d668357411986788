"""The analysis engine in-process: dedup window bounds, id-less messages, counters, and a
body never half-applied when it is rejected."""

from __future__ import annotations

import orjson
import pytest

from logdist._py.analyze import parse_messages  # the twin's own helpers
from logdist._py.dedup import DedupWindow
from logdist.analyzer.engine import Analysis
from logdist.errors import PacketError


def m(i: object, level: object = "INFO", source: object = "s") -> dict[str, object]:
    return {"id": i, "level": level, "source": source, "message": "x"}


def test_dedup_window_keeps_between_half_and_all_of_capacity() -> None:
    w = DedupWindow(10)
    for i in range(100):
        w.add(i)
        assert len(w) <= 10
    assert 95 in w
    assert 99 in w
    assert 0 not in w
    w.add_all(set(range(200, 260)))
    assert len(w) <= 10
    with pytest.raises(ValueError):
        DedupWindow(1)


def test_in_batch_repeats_and_redelivery() -> None:
    a = Analysis(dedup_window=1000, record_ids=True)
    assert a.ingest_messages([m(1), m(2), m(1), m(3)]) == (3, 1)
    assert a.ingest_messages([m(3), m(4)]) == (1, 1)
    assert a.counts() == {"processed_count": 4, "duplicates": 2, "received": 6, "batches": 2}
    assert a.recorded is not None
    assert sorted(a.recorded) == [1, 2, 3, 4]


def test_messages_without_id_are_each_counted() -> None:
    a = Analysis()
    noid = {"level": "INFO", "source": "s"}
    assert a.ingest_messages([noid, noid, m("x")]) == (3, 0)
    assert a.ingest_messages([noid, m("x")]) == (1, 1)
    assert a.processed == 4


def test_rejected_body_changes_nothing() -> None:
    a = Analysis()
    with pytest.raises(PacketError):
        a.ingest_messages([m("a"), m("b", level={"not": "hashable"})])
    with pytest.raises(PacketError):
        a.ingest_messages([m("a"), "not an object"])
    with pytest.raises(PacketError):
        a.ingest_messages([m("a"), m(["list id"])])
    with pytest.raises(PacketError, match="not JSON"):
        a.ingest_messages([m("a"), m(object())])
    assert a.counts()["received"] == 0
    assert "a" not in a.dedup  # not remembered: a later good delivery of "a" counts
    assert a.ingest_messages([m("a")]) == (1, 0)


def test_stats_levels_sources_and_error_rate() -> None:
    a = Analysis()
    a.ingest_messages([m(i, "ERROR", "db") for i in range(5)] + [m(i, "info", "web") for i in range(5, 20)])
    a.ingest_messages([m(i, None, None) for i in range(20, 25)])
    s = a.stats(top=2)
    assert s["by_level"] == {"info": 15, "ERROR": 5, "(none)": 5}
    assert s["error_count"] == 5
    assert s["error_rate"] == pytest.approx(0.2)
    assert s["window"]["top_sources"] == [{"source": "web", "count": 15}, {"source": "db", "count": 5}]


@pytest.mark.parametrize(
    ("body", "n"),
    [
        (b"[]", 0),
        (orjson.dumps([m(1), m(2)]), 2),
        (orjson.dumps(m(1)), 1),
        (orjson.dumps({"log_messages": [m(1)], "packet_id": "p"}), 1),
        (orjson.dumps({"messages": [m(1), m(2), m(3)]}), 3),
        (b'{"id": 1}\n{"id": 2}\n', 2),
    ],
)
def test_body_shapes(body: bytes, n: int) -> None:
    assert len(parse_messages(body)) == n
