"""Hostile input against real processes, on both backends: bodies and messages built to break
the distributor or to make it lose other clients' messages.

`HOSTILE` is the corpus: each case is a request body, the answer ingest must give, and the
error code when it refuses. Every case is also posted to an analyzer directly: what ingest
accepts the analyzer must accept, what the analyzer refuses ingest must refuse (one definition
of a valid message, the core's). Add cases to it as new findings come in.

The other tests reproduce issue 11, item 1 (a poison message took innocent ones down with it):
poison beside concurrent good traffic, and the engine's isolation of what an analyzer refuses
(its defence in depth, for refusals ingest cannot foresee).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet, wait_until

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int  # what ingest answers
    code: str | None = None  # the error code of a refusal
    detail: str | None = None  # a part of its detail (where, and why)


def _msgs(*texts: str) -> bytes:
    """A packet body whose messages are the given raw JSON texts."""
    return b'{"emitter_id":"hostile","messages":[' + ",".join(texts).encode() + b"]}"


HOSTILE: list[Case] = [
    # Valid JSON that no analyzer can read (orjson refuses it): refused at ingest, naming the
    # message and the reason, instead of accepted and then refused with other clients' messages.
    Case(
        "overflowing float",
        _msgs('{"message":"a"}', '{"message":"b","n":1e999}'),
        400,
        "bad_value",
        "messages[1]: number is infinity",
    ),
    Case("overflowing negative float", _msgs('{"message":"a","n":-1e999}'), 400, "bad_value", "messages[0]"),
    Case("400-digit integer", _msgs('{"message":"a","n":' + "9" * 400 + "}"), 400, "bad_value", "messages[0]"),
    Case(
        "lone high surrogate",
        _msgs('{"message":"ok"}', '{"message":"\\ud800"}'),
        400,
        "bad_value",
        "messages[1]: high surrogate without a low one",
    ),
    Case("lone low surrogate", _msgs('{"message":"\\udfff"}'), 400, "bad_value", "messages[0]: lone low surrogate"),
    Case("surrogate pair reversed", _msgs('{"message":"\\udc00\\ud800"}'), 400, "bad_value", "messages[0]"),
    Case("lone surrogate in a key", _msgs('{"message":"a","\\ud800":1}'), 400, "bad_value", "messages[0]"),
    Case(
        "overflow deep in metadata",
        _msgs('{"message":"a","metadata":{"x":[{"y":1e400}]}}'),
        400,
        "bad_value",
        "messages[0]",
    ),
    Case(
        "lone surrogate in the emitter id",
        b'{"emitter_id":"\\ud800","messages":[{"message":"a"}]}',
        400,
        "bad_value",
        "packet:",
    ),
    Case("NDJSON line with an overflow", b'{"message":"a"}\n{"message":"b","n":-1e999}\n', 400, "bad_value", "line 2"),
    # ... and what both read: accepted and delivered
    Case("escaped NUL", _msgs('{"message":"a\\u0000b","metadata":{"k\\u0000":"\\u0000"}}'), 200),
    Case("surrogate pair", _msgs('{"message":"\\ud83d\\ude00 \\uDBFF\\uDFFF"}'), 200),
    Case("largest double and an underflow", _msgs('{"message":"a","n":1.7976931348623157e308,"t":1e-999}'), 200),
    Case("escaped backslash before ud800", _msgs('{"message":"\\\\ud800"}'), 200),
    Case("integer past 2^64", _msgs('{"message":"a","n":' + str(2**64) + "}"), 200),
]


def test_hostile_corpus(cluster: Cluster) -> None:
    an = cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    failures: list[str] = []
    delivered = 0
    for case in HOSTILE:
        st, doc, hdrs = call("POST", cluster.url + "/logs", case.body, JSON)
        got = (st, doc.get("error") if isinstance(doc, dict) else doc)
        if st != case.status or (case.code is not None and got[1] != case.code):
            failures.append(f"{case.name}: ingest answered {got}, expected {(case.status, case.code)}")
            continue
        if case.code is not None:
            if not (hdrs["content-type"].startswith("application/json") and set(doc) == {"error", "detail"}):
                failures.append(f"{case.name}: not a JSON error {{error, detail}}: {doc!r}")
            elif case.detail and case.detail not in doc["detail"]:
                failures.append(f"{case.name}: detail {doc['detail']!r} does not say {case.detail!r}")
        else:
            delivered += doc["accepted"]
        # the analyzer's verdict on the same messages, as the distributor sends them (an array)
        ast, adoc, _ = call("POST", an.url + "/analyze", case.body, JSON)
        if (ast == 200) != (st == 200):
            failures.append(f"{case.name}: ingest answered {st} but the analyzer {ast} ({adoc!r})")
    assert not failures, "\n".join(failures)
    cluster.drained()
    totals = cluster.metrics()["totals"]
    assert totals["dead_letters"] == 0
    # What ingest accepted reached the analyzer (it also saw each accepted case directly: those
    # are duplicates by id, or new ids when the distributor assigned them).
    assert cluster.row("a1")["acked"] == delivered


def _post_all(url: str, bodies: list[bytes], out: list[tuple[int, Any]]) -> None:
    for body in bodies:
        st, doc, _ = call("POST", url, body, JSON)
        out.append((st, doc))


POISON = ['"n":1e999', '"n":-1e999', '"x":"\\ud800"', '"x":"\\udfff"', '"x":"a\\udc00\\ud800b"']


def test_poison_beside_concurrent_good_traffic_loses_no_good_message(cluster: Cluster) -> None:
    """Issue 11, item 1: 40 poison messages in their own packets, sent at the same time as 800
    good ones from other emitters. Before, ingest took them, the analyzers refused whole
    batches, and hundreds of good messages went to dead letters. Now ingest refuses them."""
    for aid in ("a1", "a2"):
        cluster.analyzer(aid)
    cluster.distributor({"a1": 1.0, "a2": 1.0}, linger_ms=20)
    good: dict[str, list[bytes]] = {}
    good_ids: list[str] = []
    for e in range(4):
        bodies = []
        for p in range(20):
            ids = [f"g{e}-{p}-{i}" for i in range(10)]
            good_ids.extend(ids)
            bodies.append(json.dumps(packet(ids, f"good-{e}", f"p{p}")).encode())
        good[f"good-{e}"] = bodies
    poison = [
        f'{{"emitter_id":"bad-{k % 2}","packet_id":"p{k}","messages":[{{"id":"x{k}","message":"m",{p}}}]}}'.encode()
        for k, p in ((k, POISON[k % 5]) for k in range(40))
    ]
    answers: dict[str, list[tuple[int, Any]]] = {name: [] for name in [*good, "bad-0", "bad-1"]}
    threads = [threading.Thread(target=_post_all, args=(cluster.url + "/logs", b, answers[n])) for n, b in good.items()]
    threads += [
        threading.Thread(target=_post_all, args=(cluster.url + "/logs", poison[k::2], answers[f"bad-{k}"]))
        for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for name in good:
        assert [st for st, _ in answers[name]] == [200] * 20, answers[name]
    refused = answers["bad-0"] + answers["bad-1"]
    assert [st for st, _ in refused] == [400] * 40
    assert all(doc["error"] == "bad_value" and doc["detail"].startswith("messages[0]: ") for _, doc in refused)
    cluster.drained()
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(good_ids, per)
    assert sum(len(v) for v in per.values()) == 800
    dl = get(cluster.url + "/api/v1/dead-letters")
    assert (dl["count"], dl["messages"]) == (0, 0)


def _dead_lettered(state: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(ids of the dead-lettered messages, the records' metadata), read from the files."""
    ids: list[str] = []
    metas: list[dict[str, Any]] = []
    for p in sorted((state / "dead-letters").glob("*.dl")):
        head, body = p.read_bytes().split(b"\n", 1)
        metas.append(json.loads(head))
        ids.extend(m["id"] for m in json.loads(body))
    return ids, metas


def test_a_refused_batch_is_split_until_the_poison_is_isolated(cluster: Cluster) -> None:
    """Defence in depth: an analyzer refuses (400) every batch that holds one message. The
    engine halves the batch, recursively: only that message goes to dead letters, in a
    logarithmic number of extra requests."""
    an = cluster.analyzer("a1")
    assert call("POST", an.url + "/fault", {"refuse_ids": ["m-637"]})[0] == 200
    cluster.distributor({"a1": 1.0})
    n = 1000
    st, doc, _ = call("POST", cluster.url + "/logs", packet([f"m-{i}" for i in range(n)], "e1", "p1"))
    assert st == 200 and doc["accepted"] == n
    cluster.drained()
    ids, metas = _dead_lettered(cluster.tmp / "state")
    assert ids == ["m-637"]
    assert sorted(cluster.ids("a1")) == sorted(f"m-{i}" for i in range(n) if i != 637)
    totals, row = cluster.metrics()["totals"], cluster.row("a1")
    extra = totals["isolation_requests"]
    bound = 2 * math.ceil(math.log2(n)) + 2
    assert 2 <= extra <= bound, (extra, bound)
    assert extra == 2 * totals["split_batches"]
    assert row["batches_sent"] == 1 + extra  # the whole batch, then the halves
    assert (row["acked"], row["dead_lettered"], totals["dead_letters"]) == (n - 1, 1, 1)
    assert metas[0]["count"] == 1 and metas[0]["split_from"] == n
    assert 1 <= metas[0]["splits"] <= math.ceil(math.log2(n))
    prom = call("GET", cluster.url + "/metrics")[1]
    assert f"logdist_isolation_requests_total {extra}" in prom
    assert f"logdist_split_batches_total {extra // 2}" in prom


def test_isolation_under_concurrent_traffic_in_wal_mode(cluster: Cluster) -> None:
    """Several emitters at once, two analyzers that refuse batches holding any of three ids:
    exactly those three are dead-lettered, every other accepted message is delivered once, and
    the write-ahead log was acknowledged right (a restart recovers nothing)."""
    poison = ["e1-150", "e2-733", "e3-1999"]
    for aid in ("a1", "a2"):
        an = cluster.analyzer(aid)
        assert call("POST", an.url + "/fault", {"refuse_ids": poison})[0] == 200
    d = cluster.distributor({"a1": 1.0, "a2": 2.0}, durability="wal")
    loads = [cluster.load(f"e{k}", total=2000, packet_size=50).start() for k in (1, 2, 3)]
    for ld in loads:
        ld.wait()
    accepted = [i for ld in loads for i in ld.accepted]
    assert len(accepted) == 6000
    cluster.drained()
    ids, metas = _dead_lettered(cluster.tmp / "state")
    assert sorted(ids) == sorted(poison)
    assert all(m["count"] == 1 and m["splits"] >= 1 for m in metas)
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss([i for i in accepted if i not in poison], per)
    assert sum(len(v) for v in per.values()) == 6000 - 3
    assert cluster.metrics()["totals"]["isolation_requests"] > 0
    # The halves acknowledged their records in full: nothing comes back after a restart.
    assert d.stop() == 0
    cluster.dist = cluster.spawn("distributor", "--config", str(cluster.config_path), "--port", "{port}")
    health = wait_until(lambda: (h := get(cluster.url + "/health"))["status"] == "ok" and h, 30, "recovery")
    assert (health["wal_replayed_messages"], health["held"]) == (0, 0)
    assert sum(len(cluster.ids(a)) for a in cluster.analyzers) == 6000 - 3
    assert get(cluster.url + "/api/v1/dead-letters")["messages"] == 3


def test_an_analyzer_that_refuses_everything_is_not_split_forever(cluster: Cluster) -> None:
    """A 400 for every batch is no poison message: after a bounded streak of refusals the
    engine stops splitting, so the dead letters are whole batches again, not single messages."""
    cluster.analyzer("picky", "--fail-status", "400")
    cluster.distributor({"picky": 1.0})
    load = cluster.load("all", total=6000, packet_size=200).start().wait()
    assert load.count == 6000
    cluster.drained()
    totals = cluster.metrics()["totals"]
    assert totals["dead_letters"] == 6000
    assert 0 < totals["isolation_requests"] <= 2 * 32
    ids, metas = _dead_lettered(cluster.tmp / "state")
    assert sorted(ids) == sorted(load.accepted)
    assert len(metas) < 6000 // 10
