"""The analyzer daemon over real HTTP: the v0 analyzer API, dedup, body shapes, faults, errors."""

from __future__ import annotations

import gzip
import signal
import urllib.request

import orjson
import pytest

from logdist.tools import cluster


def msgs(prefix: str, n: int, level: str = "INFO", source: str = "api") -> list[dict[str, object]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "timestamp": "2026-01-01T00:00:00Z",
            "level": level,
            "source": source,
            "message": f"message {i}",
            "metadata": {"k": "v"},
        }
        for i in range(n)
    ]


@pytest.fixture
def analyzer(spawn):  # type: ignore[no-untyped-def]
    return spawn("analyzer", "--id", "a1", "--port", "{port}", "--weight", "0.4", "--record-ids")


def processed(url: str) -> dict[str, object]:
    r = cluster.get(url + "/processed")
    assert r.status == 200
    assert isinstance(r.doc, dict)
    return r.doc


def test_batch_is_counted_and_redelivery_is_not(analyzer) -> None:  # type: ignore[no-untyped-def]
    batch = msgs("b", 250)
    r = cluster.post(analyzer.url + "/analyze", batch)
    assert (r.status, r.doc) == (200, {"accepted": 250, "duplicates": 0})
    r = cluster.post(analyzer.url + "/analyze", batch)  # the distributor redelivers after a lost ack
    assert (r.status, r.doc) == (200, {"accepted": 0, "duplicates": 250})
    # half old, half new, plus an in-batch repeat
    mixed = batch[:100] + msgs("c", 50) + msgs("c", 1)
    r = cluster.post(analyzer.url + "/analyze", mixed)
    assert r.doc == {"accepted": 50, "duplicates": 101}
    p = processed(analyzer.url)
    assert p["processed_count"] == 300
    assert p["duplicates"] == 351
    assert p["received"] == 651
    assert p["id"] == "a1"
    assert p["weight"] == 0.4
    ids = cluster.get(analyzer.url + "/ids").doc
    assert sorted(ids["ids"]) == sorted([f"b-{i}" for i in range(250)] + [f"c-{i}" for i in range(50)])


def test_single_object_v1_packet_and_ndjson_bodies(analyzer) -> None:  # type: ignore[no-untyped-def]
    one = msgs("one", 1)[0]
    assert cluster.post(analyzer.url + "/analyze", one).doc == {"accepted": 1, "duplicates": 0}
    assert cluster.post(analyzer.url + "/analyze", one).doc == {"accepted": 0, "duplicates": 1}
    packet_v1 = {"packet_id": "p1", "agent_id": "ag", "sent_at": "2026-01-01T00:00:00Z", "log_messages": msgs("s3", 7)}
    assert cluster.post(analyzer.url + "/analyze", packet_v1).doc == {"accepted": 7, "duplicates": 0}
    packet_logs = {"packet_id": "p2", "agent_id": "ag", "messages": msgs("s0", 5)}
    assert cluster.post(analyzer.url + "/analyze", packet_logs).doc == {"accepted": 5, "duplicates": 0}
    nd = b"\n".join(orjson.dumps(m) for m in msgs("nd", 3)) + b"\n"
    r = cluster.request("POST", analyzer.url + "/analyze", raw=nd)
    assert r.doc == {"accepted": 3, "duplicates": 0}
    # messages with no id cannot be deduplicated: each one counts
    noid = [{"level": "INFO", "source": "x", "message": "m"}] * 4
    assert cluster.post(analyzer.url + "/analyze", noid).doc == {"accepted": 4, "duplicates": 0}
    assert cluster.post(analyzer.url + "/analyze", []).doc == {"accepted": 0, "duplicates": 0}
    assert processed(analyzer.url)["processed_count"] == 1 + 7 + 5 + 3 + 4


def test_gzip_body(analyzer) -> None:  # type: ignore[no-untyped-def]
    body = gzip.compress(orjson.dumps(msgs("gz", 20)))
    req = urllib.request.Request(
        analyzer.url + "/analyze",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert orjson.loads(r.read()) == {"accepted": 20, "duplicates": 0}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "bad_json"),
        (b"", "bad_json"),
        (b'{"a": ', "bad_json"),
        (b"42", "bad_schema"),
        (b'"text"', "bad_schema"),
        (b"[1, 2]", "bad_schema"),
        (b'[{"id": "ok"}, "str"]', "bad_schema"),
        (b'[{"id": ["list"]}]', "bad_schema"),
        (b'[{"id": "x", "level": {"a": 1}}]', "bad_schema"),
        (b'{"messages": "nope"}', "bad_schema"),
        (b'{"log_messages": {"a": 1}}', "bad_schema"),
    ],
)
def test_bad_bodies_get_400_json_and_count_nothing(analyzer, body: bytes, code: str) -> None:  # type: ignore[no-untyped-def]
    r = cluster.request("POST", analyzer.url + "/analyze", raw=body)
    assert r.status == 400
    assert r.doc["error"] == code
    assert r.doc["detail"]
    assert processed(analyzer.url)["processed_count"] == 0
    # the process is still healthy and takes good bodies
    assert cluster.post(analyzer.url + "/analyze", msgs("ok", 2)).doc == {"accepted": 2, "duplicates": 0}


def test_unknown_path_and_method_are_json(analyzer) -> None:  # type: ignore[no-untyped-def]
    r = cluster.get(analyzer.url + "/nope")
    assert r.status == 404
    assert r.doc["error"] == "not_found"
    r = cluster.get(analyzer.url + "/analyze")
    assert r.status == 405
    assert "error" in r.doc


def test_disable_then_enable(analyzer) -> None:  # type: ignore[no-untyped-def]
    assert cluster.post(analyzer.url + "/disable").doc["status"] == "disabled"
    r = cluster.post(analyzer.url + "/analyze", msgs("d", 3))
    assert r.status == 503
    assert r.doc["error"] == "disabled"
    assert cluster.get(analyzer.url + "/health").status == 503
    st = cluster.get(analyzer.url + "/status").doc
    assert st["enabled"] is False
    assert st["status"] == "disabled"
    assert processed(analyzer.url)["processed_count"] == 0
    assert cluster.post(analyzer.url + "/enable").doc["status"] == "enabled"
    assert cluster.get(analyzer.url + "/health").status == 200
    assert cluster.post(analyzer.url + "/analyze", msgs("d", 3)).doc == {"accepted": 3, "duplicates": 0}
    st = cluster.get(analyzer.url + "/status").doc
    assert st["enabled"] is True
    assert st["healthy"] is True
    assert st["processed_count"] == 3


def test_stats_by_level_source_and_window(analyzer) -> None:  # type: ignore[no-untyped-def]
    cluster.post(analyzer.url + "/analyze", msgs("e", 10, level="ERROR", source="db"))
    cluster.post(analyzer.url + "/analyze", msgs("i", 30, level="INFO", source="web"))
    cluster.post(analyzer.url + "/analyze", msgs("w", 10, level="WARN", source="db"))
    cluster.post(analyzer.url + "/analyze", msgs("e", 10, level="ERROR", source="db"))  # duplicates: not counted
    s = cluster.get(analyzer.url + "/stats").doc
    assert s["processed_count"] == 50
    assert s["duplicates"] == 10
    assert s["by_level"] == {"INFO": 30, "ERROR": 10, "WARN": 10}
    assert s["by_source"] == {"web": 30, "db": 20}
    assert s["error_rate"] == pytest.approx(0.2)
    w = s["window"]
    assert w["messages"] == 50
    assert w["error_rate"] == pytest.approx(0.2)
    assert w["top_sources"] == [{"source": "web", "count": 30}, {"source": "db", "count": 20}]
    assert cluster.get(analyzer.url + "/stats?top=1").doc["window"]["top_sources"] == [{"source": "web", "count": 30}]


def test_fault_flags_at_start(spawn) -> None:  # type: ignore[no-untyped-def]
    a = spawn("analyzer", "--port", "{port}", "--fail-status", "429", "--retry-after", "2")
    r = cluster.post(a.url + "/analyze", msgs("f", 2))
    assert r.status == 429
    assert r.headers["Retry-After"] == "2"
    assert r.doc["error"] == "injected_fault"
    assert processed(a.url)["processed_count"] == 0
    b = spawn("analyzer", "--port", "{port}", "--error-rate", "1.0")
    assert cluster.post(b.url + "/analyze", msgs("f", 2)).status == 500
    c = spawn("analyzer", "--port", "{port}", "--fail-status", "400")
    assert cluster.post(c.url + "/analyze", msgs("f", 2)).status == 400


def test_fault_endpoint_changes_and_clears_faults(analyzer) -> None:  # type: ignore[no-untyped-def]
    r = cluster.post(analyzer.url + "/fault", {"fail_status": 503, "retry_after": 1})
    assert r.doc == {"latency_ms": 0.0, "error_rate": 0.0, "fail_status": 503, "retry_after": 1.0, "refuse_ids": []}
    r = cluster.post(analyzer.url + "/analyze", msgs("x", 1))
    assert (r.status, r.headers["Retry-After"]) == (503, "1")
    cluster.post(analyzer.url + "/fault", {"fail_status": None, "error_rate": 1.0})
    assert cluster.post(analyzer.url + "/analyze", msgs("x", 1)).status == 500
    cluster.post(analyzer.url + "/fault", {"error_rate": None, "latency_ms": 50})
    r = cluster.post(analyzer.url + "/analyze", msgs("x", 1))
    assert (r.status, r.doc) == (200, {"accepted": 1, "duplicates": 0})
    assert cluster.get(analyzer.url + "/fault").doc["latency_ms"] == 50.0
    # a poison message: a batch holding one of these ids is refused whole, nothing counted
    assert cluster.post(analyzer.url + "/fault", {"latency_ms": None, "refuse_ids": ["p-1"]}).doc["refuse_ids"] == [
        "p-1"
    ]
    before = cluster.get(analyzer.url + "/processed").doc["processed_count"]
    r = cluster.post(analyzer.url + "/analyze", [{"id": "p-0", "message": "a"}, {"id": "p-1", "message": "b"}])
    assert (r.status, r.doc["error"]) == (400, "injected_fault") and "p-1" in r.doc["detail"]
    assert cluster.get(analyzer.url + "/processed").doc["processed_count"] == before
    assert cluster.post(analyzer.url + "/analyze", [{"id": "p-0", "message": "a"}]).status == 200
    assert cluster.post(analyzer.url + "/fault", {"refuse_ids": None}).doc["refuse_ids"] == []
    for bad in ({"error_rate": 2}, {"fail_status": 42}, {"bogus": 1}, {"latency_ms": -1}, {"refuse_ids": "p-1"}):
        r = cluster.post(analyzer.url + "/fault", bad)
        assert r.status == 400, bad
        assert r.doc["error"] == "bad_schema"
    assert cluster.request("POST", analyzer.url + "/fault", raw=b"{").status == 400


def test_positional_form_and_sigterm_exit(spawn) -> None:  # type: ignore[no-untyped-def]
    a = spawn("analyzer", "analyzer-7", "{port}")
    st = cluster.get(a.url + "/status").doc
    assert st["id"] == "analyzer-7"
    assert st["port"] == a.port
    a.signal(signal.SIGTERM)
    assert a.proc.wait(15) == 0


def test_ids_endpoint_needs_record_ids(spawn) -> None:  # type: ignore[no-untyped-def]
    a = spawn("analyzer", "--port", "{port}")
    assert cluster.get(a.url + "/ids").status == 404


def test_dedup_window_is_bounded(spawn) -> None:  # type: ignore[no-untyped-def]
    a = spawn("analyzer", "--port", "{port}", "--dedup-window", "100")
    first = msgs("w", 50)
    cluster.post(a.url + "/analyze", first)
    for k in range(4):  # push the first batch out of the window
        cluster.post(a.url + "/analyze", msgs(f"w{k}", 50))
    assert cluster.get(a.url + "/status").doc["dedup_window"] <= 100
    # forgotten ids are counted again: the window is what bounds memory
    assert cluster.post(a.url + "/analyze", first).doc["accepted"] == 50
