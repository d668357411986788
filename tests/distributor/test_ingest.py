"""Ingest over real HTTP: body shapes, gzip, dedup, and a corpus of bad requests that each get
the right 4xx JSON error while the process stays healthy and good packets keep flowing."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet

J = {"Content-Type": "application/json"}


@pytest.fixture
def small(cluster: Cluster) -> Cluster:
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    cluster.distributor({"a1": 0.5, "a2": 0.5}, max_body_bytes=200_000, max_decoded_bytes=400_000,
                        max_messages_per_packet=500)  # fmt: skip
    return cluster


def test_body_shapes_gzip_and_dedup(small: Cluster) -> None:
    url = small.url
    sent: list[str] = []
    # seed 000 packet on /logs, seed 003 packet (log_messages) on /api/v1/logs
    st, doc, _ = call("POST", url + "/logs", packet(["s0-1", "s0-2"], "e", "p1"))
    assert (st, doc) == (200, {"accepted": 2, "packet_id": "p1"})
    sent += ["s0-1", "s0-2"]
    seed3 = {"packet_id": "p2", "agent_id": "e", "sent_at": "2026-01-01T00:00:00Z",
             "log_messages": [{"id": "s3-1", "message": "x", "level": "ERROR"}], "metadata": {"a": "b"}}  # fmt: skip
    assert call("POST", url + "/api/v1/logs", seed3)[0] == 202
    sent.append("s3-1")
    # bare array, no content type at all (treated as JSON)
    st, doc, _ = call("POST", url + "/logs", json.dumps([{"id": "ba-1", "message": "x"}]).encode())
    assert st == 200 and doc["accepted"] == 1
    sent.append("ba-1")
    # NDJSON, gzip
    nd = b'{"id":"nd-1","message":"x"}\n{"id":"nd-2","message":"y"}\n'
    st, doc, _ = call("POST", url + "/logs", gzip.compress(nd),
                      {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})  # fmt: skip
    assert (st, doc["accepted"]) == (200, 2)
    sent += ["nd-1", "nd-2"]
    # a re-sent packet is acknowledged, not routed twice
    st, doc, _ = call("POST", url + "/logs", packet(["s0-1", "s0-2"], "e", "p1"))
    assert st == 200 and doc["duplicate"] is True
    # messages without an id get one (stable for a packet with an id)
    st, doc, _ = call("POST", url + "/logs", {"packet_id": 7, "emitter_id": "e", "messages": [{"message": "no id"}]})
    assert st == 200
    small.drained()
    per = {a: small.ids(a) for a in small.analyzers}
    assert_zero_loss(sent, per)
    union = set().union(*map(set, per.values()))
    assert "e/7/0" in union and len(union) == len(sent) + 1
    m = small.metrics()["totals"]
    assert m["duplicate_packets"] == 1 and m["accepted"] == len(sent) + 1


BIG = json.dumps({"messages": [{"message": "x" * 300_000}]}).encode()  # over max_body_bytes
CORPUS: list[tuple[str, dict[str, str], bytes, int, str]] = [
    ("not json", J, b"{nope", 400, "bad_json"),
    ("truncated", J, b'{"messages": [{"message": "a"}', 400, "bad_json"),
    ("empty body", J, b"", 400, "bad_json"),
    ("bad utf-8", J, b'{"messages": [{"message": "\xff\xfe"}]}', 400, "bad_utf8"),
    ("no messages key", J, b'{"packet_id": "x"}', 400, "bad_schema"),
    ("messages not a list", J, b'{"messages": {"message": "a"}}', 400, "bad_schema"),
    ("message not an object", J, b'{"messages": [1]}', 400, "bad_schema"),
    ("message field missing", J, b'{"messages": [{"level": "INFO"}]}', 400, "bad_schema"),
    ("message wrong type", J, b'{"messages": [{"message": 5}]}', 400, "bad_schema"),
    ("level wrong type", J, b'{"messages": [{"message": "a", "level": 3}]}', 400, "bad_schema"),
    ("metadata wrong type", J, b'{"messages": [{"message": "a", "metadata": []}]}', 400, "bad_schema"),
    ("packet id wrong type", J, b'{"packet_id": [], "messages": [{"message": "a"}]}', 400, "bad_schema"),
    ("empty packet", J, b'{"messages": []}', 400, "empty_packet"),
    ("too deep", J, b'{"messages": [{"message": "a", "x": ' + b"[" * 100 + b"]" * 100 + b"}]}", 400, "too_deep"),
    ("too many messages", J, json.dumps(packet([f"m{i}" for i in range(501)])).encode(), 413, "too_many_messages"),
    ("too large", J, BIG, 413, "too_large"),
    ("gzip bomb", {**J, "Content-Encoding": "gzip"}, gzip.compress(b" " * 5_000_000), 413, "too_large"),
    ("bad gzip", {**J, "Content-Encoding": "gzip"}, b"not gzip at all", 400, "bad_encoding"),
    ("unknown encoding", {**J, "Content-Encoding": "compress"}, b"[]", 415, "unsupported_encoding"),
    ("text/plain", {"Content-Type": "text/plain"}, b'[{"message":"a"}]', 415, "unsupported_media_type"),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b", 415, "unsupported_media_type"),
    ("ndjson bad line", {"Content-Type": "application/x-ndjson"}, b'{"message":"a"}\n{"message":\n', 400, "bad_json"),
]


def test_bad_requests_get_the_right_4xx_and_leave_the_process_healthy(small: Cluster) -> None:
    good: list[str] = []
    wrong: list[str] = []
    for i, (name, headers, body, status, code) in enumerate(CORPUS * 2):
        st, doc, hdrs = call("POST", small.url + "/logs", body, headers)
        if not (
            st == status
            and hdrs.get("content-type", "").startswith("application/json")
            and isinstance(doc, dict)
            and doc.get("error") == code
            and doc.get("detail")
        ):
            wrong.append(f"{name}: expected {status} {code}, got {st} {doc!r}")
        ids = [f"g{i}-{j}" for j in range(5)]  # a good packet right after each bad one
        assert call("POST", small.url + "/logs", packet(ids, "g", f"g{i}"))[0] == 200
        good += ids
    assert not wrong, "\n".join(wrong)
    assert call("GET", small.url + "/nope")[1]["error"] == "not_found"
    st, doc, _ = call("GET", small.url + "/logs")
    assert st == 405 and doc["error"] == "method_not_allowed"
    assert get(small.url + "/health")["status"] == "ok"
    small.drained()
    assert_zero_loss(good, {a: small.ids(a) for a in small.analyzers})
    assert small.metrics()["totals"]["rejected_requests"] >= len(CORPUS) * 2
    assert small.dist is not None and small.dist.proc is not None and small.dist.proc.poll() is None


def test_observability_endpoints(small: Cluster) -> None:
    assert call("POST", small.url + "/logs", packet(["o1", "o2", "o3"], "o", "o"))[0] == 200
    small.drained()
    h = get(small.url + "/health")
    assert h["status"] == "ok" and h["durability"] == "memory" and h["backend"] in ("rs", "py")
    q = get(small.url + "/queue")
    assert q["size"] == 0 and q["oldest_age_s"] is None
    m: dict[str, Any] = small.metrics()
    assert {"analyzers", "totals", "durability", "backend", "uptime_s"} <= set(m)
    row = m["analyzers"][0]
    for k in ("id", "url", "weight", "state", "eligible", "routed", "acked", "failed", "retried", "rerouted",
              "dead_lettered", "queued", "inflight", "share", "expected_share", "latency_ms"):  # fmt: skip
        assert k in row
    assert sum(r["acked"] for r in m["analyzers"]) == 3
    st, text, hdrs = call("GET", small.url + "/metrics")
    assert st == 200 and hdrs["content-type"].startswith("text/plain")
    assert "logdist_accepted_messages_total 3" in text
    assert 'logdist_analyzer_acked_messages_total{analyzer="a1"}' in text
    st, page, hdrs = call("GET", small.url + "/")
    assert st == 200 and hdrs["content-type"].startswith("text/html") and "api/v1/metrics" in page
