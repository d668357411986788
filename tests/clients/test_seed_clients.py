"""logdist with stand-ins for the seed systems' own programs (seed_standins.py), real processes:

- seed 000's emitter accepts only 200 on POST /logs: every send succeeds (and 202, as
  /api/v1/logs answers for seed 003's clients, would count as failed);
- seed 000's analyzers take one message per POST /analyze: format "message" delivers everything,
  in the weights' shares; a poison message alone goes to dead letters;
- seed 003's analyzers take the packet object: format "packet", registered as seed 003 does
  (POST /api/v1/analyzers {"id", "url", "weight"} plus "format"), delivers everything, in the
  weights' shares, with the fields in the types they decode; a refused packet is split until
  the poison message is isolated;
- the wrong format logs ONE warning that names the "format" key; fixed by a PATCH and a replay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distributor.conftest import Cluster, assert_zero_loss, call, get, packet
from waiting import wait_until

from .conftest import StandIn

pytestmark = pytest.mark.slow

WEIGHTS = {"s1": 0.7, "s2": 0.3}
#: shares of N messages picked at random by weight: within 0.03 of the weight (more than four
#: standard deviations at N = 4000, sqrt(0.21 / 4000) = 0.0072)
N = 4000
TOLERANCE = 0.03
FORMAT_WARNING = re.compile(r'WARNING .*analyzer (\S+) refused each of its first \d+ deliveries .*"format"')


def distributor(
    cluster: Cluster, targets: dict[str, StandIn], weights: dict[str, float], *extra: str, **per: Any
) -> None:
    """A distributor for `targets`, each analyzer with the keys `per` (e.g. format="message").
    The timeout is long: on a loaded machine a timed-out request that the analyzer did take is
    sent again (at least once), and these tests count exactly."""
    cluster.analyzers.update(targets)
    path = cluster.write_config(weights)
    cfg = json.loads(path.read_text())
    for a in cfg["analyzers"]:
        a.update({"timeout": 30000, **per})
    path.write_text(json.dumps(cfg))
    cluster.dist = cluster.spawn("distributor", "--config", str(path), "--port", "{port}", *extra)


def ids_of(s: StandIn) -> list[str]:
    return get(s.url + "/ids")["ids"]  # type: ignore[no-any-return]


def check_delivery(cluster: Cluster, targets: dict[str, StandIn], accepted: list[str]) -> dict[str, int]:
    cluster.drained()
    per = {aid: ids_of(s) for aid, s in targets.items()}
    assert_zero_loss(accepted, per)
    counts = {aid: len(v) for aid, v in per.items()}
    assert sum(counts.values()) == len(accepted)
    assert cluster.metrics()["totals"]["dead_lettered"] == 0
    return counts


def dead_lettered(state: Path) -> list[str]:
    ids: list[str] = []
    for p in sorted((state / "dead-letters").glob("*.dl")):
        ids.extend(m["id"] for m in json.loads(p.read_bytes().split(b"\n", 1)[1]))
    return ids


def format_warnings(cluster: Cluster) -> list[str]:
    assert cluster.dist is not None
    return [line for line in cluster.dist.log.read_text().splitlines() if FORMAT_WARNING.search(line)]


# --- seed 000's emitter ------------------------------------------------------------------------


def test_seed000_emitter_sees_every_send_succeed(cluster: Cluster, standin: Callable[..., StandIn]) -> None:
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    emitter = standin("seed000-emitter", "--distributor-url", cluster.url + "/logs", "--batch-size", "50")
    for _ in range(5):
        assert call("POST", emitter.url + "/generate")[0] == 200
    doc = get(emitter.url + "/stats")
    assert doc["stats"] | {"last_status": 200} == {
        "logs_generated": 250, "packets_sent": 5, "successful_sends": 5, "failed_sends": 0, "last_status": 200,
    }  # fmt: skip
    cluster.drained()
    assert_zero_loss(doc["sent_ids"], {"a1": cluster.ids("a1")})
    # the stand-in is strict: the 202 that /api/v1/logs answers (for seed 003's clients, with the
    # same body) is a failed send to it, as it was on /logs before
    strict = standin("seed000-emitter", "--distributor-url", cluster.url + "/api/v1/logs", "--retry-delay", "0.01")
    assert call("POST", strict.url + "/generate")[0] == 200
    assert get(strict.url + "/stats")["stats"] | {} == {
        "logs_generated": 50, "packets_sent": 1, "successful_sends": 0, "failed_sends": 1, "last_status": 202,
    }  # fmt: skip


def test_each_ingest_path_answers_as_its_clients_expect(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    st0, doc0, _ = call("POST", cluster.url + "/logs", packet(["x-1", "x-2"], "e", "p-0"))
    st3, doc3, _ = call("POST", cluster.url + "/api/v1/logs", packet(["y-1", "y-2"], "e", "p-3"))
    assert (st0, doc0) == (200, {"accepted": 2, "packet_id": "p-0"})
    assert (st3, doc3) == (202, {"accepted": 2, "packet_id": "p-3"})
    st0, doc0, _ = call("POST", cluster.url + "/logs", packet(["x-1", "x-2"], "e", "p-0"))
    st3, doc3, _ = call("POST", cluster.url + "/api/v1/logs", packet(["y-1", "y-2"], "e", "p-3"))
    assert (st0, doc0["duplicate"], st3, doc3["duplicate"]) == (200, True, 202, True)


# --- seed 000's analyzers: format "message" ----------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_message_format_to_seed000_analyzers(cluster: Cluster, standin: Callable[..., StandIn], workers: int) -> None:
    """Also with --workers 2: a worker that takes the analyzer set from a running peer at start
    keeps each analyzer's format."""
    targets = {aid: standin("seed000-analyzer", "--id", aid) for aid in WEIGHTS}
    distributor(cluster, targets, WEIGHTS, "--workers", str(workers), format="message", message_concurrency=16)
    load = cluster.load("m", total=N, packet_size=200).start().wait(110)
    assert load.count == N, load.errors
    counts = check_delivery(cluster, targets, load.accepted)
    for aid, w in WEIGHTS.items():
        assert abs(counts[aid] / N - w) < TOLERANCE, counts
    rows = {r["id"]: r for r in cluster.metrics()["analyzers"]}
    for aid in WEIGHTS:
        assert (rows[aid]["format"], rows[aid]["message_concurrency"]) == ("message", 16)
        # one POST per message, each answered 2xx once
        answered = get(targets[aid].url + "/requests")["requests"]
        assert rows[aid]["requests_sent"] == rows[aid]["acked"] == counts[aid] == answered
    listed = {a["id"]: a for a in get(cluster.url + "/api/v1/analyzers")["analyzers"]}
    assert {listed[aid]["format"] for aid in WEIGHTS} == {"message"}
    assert format_warnings(cluster) == []


def test_message_format_maps_fields_and_isolates_a_poison_message(
    cluster: Cluster, standin: Callable[..., StandIn]
) -> None:
    """Fields the seed analyzer cannot decode as accepted (a numeric timestamp, a number in the
    metadata, an integer id) are sent in its types; a message it refuses goes to dead letters
    alone, and the rest of its batch is delivered."""
    s1 = standin("seed000-analyzer", "--id", "s1", "--refuse-id", "bad-7")
    distributor(cluster, {"s1": s1}, {"s1": 1.0}, format="message")
    msgs: list[dict[str, Any]] = [
        {"id": f"bad-{i}", "timestamp": 1767225600 + i, "level": "warning", "message": f"m{i}", "metadata": {"n": i}}
        for i in range(20)
    ]
    msgs.append({"id": 42, "timestamp": "2026-01-01 12:00:00", "message": "integer id", "metadata": {"k": None}})
    st, doc, _ = call("POST", cluster.url + "/logs", {"emitter_id": "e", "packet_id": "p", "messages": msgs})
    assert (st, doc["accepted"]) == (200, 21)
    cluster.drained()
    assert sorted(ids_of(s1)) == sorted([f"bad-{i}" for i in range(20) if i != 7] + ["42"])
    assert dead_lettered(cluster.tmp / "state") == ["bad-7"]
    row = cluster.row("s1")
    assert (row["acked"], row["dead_lettered"]) == (20, 1)
    assert format_warnings(cluster) == []


def test_message_format_retries_and_reroutes_what_a_disabled_analyzer_fails(
    cluster: Cluster, standin: Callable[..., StandIn]
) -> None:
    """A seed 000 analyzer disabled through its own API answers 500: its messages are retried,
    then rerouted to the other one; none is lost, none dead-lettered."""
    targets = {aid: standin("seed000-analyzer", "--id", aid) for aid in WEIGHTS}
    assert call("POST", targets["s1"].url + "/disable")[0] == 200
    distributor(cluster, targets, WEIGHTS, format="message")
    load = cluster.load("d", total=1000, packet_size=100).start().wait(110)
    assert load.count == 1000, load.errors
    counts = check_delivery(cluster, targets, load.accepted)
    assert counts == {"s1": 0, "s2": 1000}
    row = cluster.row("s1")
    assert row["failed"] >= 1 and row["rerouted"] >= 1 and row["acked"] == 0


# --- seed 003's analyzers: format "packet" -----------------------------------------------------


def test_packet_format_to_seed003_analyzers_registered_as_seed003_does(
    cluster: Cluster, standin: Callable[..., StandIn]
) -> None:
    targets = {aid: standin("seed003-analyzer", "--id", aid) for aid in WEIGHTS}
    distributor(cluster, {}, {})
    for aid, w in WEIGHTS.items():
        st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers",
                          {"id": aid, "url": targets[aid].url, "weight": w, "format": "packet"})  # fmt: skip
        assert (st, doc["format"], doc["endpoint"]) == (201, "packet", targets[aid].url + "/analyze"), doc
    cluster.analyzers.update(targets)
    load = cluster.load("k", total=N, packet_size=200).start().wait(110)
    assert load.count == N, load.errors
    counts = check_delivery(cluster, targets, load.accepted)
    for aid, w in WEIGHTS.items():
        assert abs(counts[aid] / N - w) < TOLERANCE, counts
    rows = {r["id"]: r for r in cluster.metrics()["analyzers"]}
    for aid in WEIGHTS:
        assert rows[aid]["format"] == "packet"
        answered = get(targets[aid].url + "/requests")["requests"]
        assert rows[aid]["requests_sent"] == rows[aid]["batches_sent"] == answered
    got = get(targets["s1"].url + "/messages")
    pkt = got["packets"][0]
    assert pkt["agent_id"] == "logdist" and pkt["packet_id"].startswith("logdist-") and pkt["sent_at"].endswith("Z")
    assert pkt["metadata"]["analyzer"] == "s1"
    assert {"id", "level", "source", "message", "metadata"} <= set(got["messages"][0])
    assert format_warnings(cluster) == []


def test_packet_format_maps_fields_and_isolates_a_poison_message(
    cluster: Cluster, standin: Callable[..., StandIn]
) -> None:
    s1 = standin("seed003-analyzer", "--id", "s1", "--refuse-id", "m-637")
    distributor(cluster, {"s1": s1}, {"s1": 1.0}, format="packet")
    n = 1000
    msgs = [{"id": f"m-{i}", "timestamp": 1767225600123 + i, "level": "error", "message": "x", "metadata": {"i": i}}
            for i in range(n)]  # fmt: skip
    st, doc, _ = call("POST", cluster.url + "/api/v1/logs", {"agent_id": "e", "packet_id": "p", "log_messages": msgs})
    assert (st, doc["accepted"]) == (202, n)
    cluster.drained()
    assert dead_lettered(cluster.tmp / "state") == ["m-637"]
    assert sorted(ids_of(s1)) == sorted(f"m-{i}" for i in range(n) if i != 637)
    m = next(x for x in get(s1.url + "/messages")["messages"] if x["id"] == "m-0")
    assert (m["timestamp"], m["level"], m["metadata"]) == ("2026-01-01T00:00:00.123Z", "ERROR", {"i": "0"})
    totals = cluster.metrics()["totals"]
    assert totals["split_batches"] >= 1 and totals["dead_lettered"] == 1


# --- the wrong format --------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "right"), [("000", "message"), ("003", "packet")])
def test_a_format_mismatch_logs_one_warning_then_patch_and_replay(
    cluster: Cluster, standin: Callable[..., StandIn], seed: str, right: str
) -> None:
    s1 = standin(f"seed{seed}-analyzer", "--id", "s1")
    distributor(cluster, {"s1": s1}, {"s1": 1.0})  # format "batch", the default
    accepted: list[str] = []
    for i in range(8):
        ids = [f"w-{i}-{k}" for k in range(10)]
        assert call("POST", cluster.url + "/logs", packet(ids, "w", f"w{i}"))[0] == 200
        accepted += ids
        cluster.drained()
    assert cluster.metrics()["totals"]["dead_lettered"] == len(accepted)
    lines = format_warnings(cluster)
    assert len(lines) == 1, lines
    if seed == "000":  # its answer, "Invalid JSON" to an array, tells which format it wants
        assert 'it most likely wants "format": "message"' in lines[0]
    else:  # seed 003's answer does not tell: the warning lists the other formats
        assert '"message" or "packet"' in lines[0]
    assert "/api/v1/analyzers/s1" in lines[0]
    # the fix: PATCH the format, replay the dead letters; every message arrives
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/s1", {"format": right})
    assert (st, doc["format"]) == (200, right)
    st, doc, _ = call("POST", cluster.url + "/api/v1/dead-letters/replay", {})
    assert (st, doc["messages"]) == (200, len(accepted))
    cluster.drained()
    wait_until(lambda: len(ids_of(s1)) >= len(accepted), 30, "the replay to arrive")
    assert sorted(ids_of(s1)) == sorted(accepted)
    assert len(format_warnings(cluster)) == 1


def test_format_keys_are_validated_and_named(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    url = cluster.url + "/api/v1/analyzers"
    bad = [({"format": "xml"}, "format"), ({"format": 1}, "format"),
           ({"message_concurrency": 0}, "message_concurrency"),
           ({"message_concurrency": "many"}, "message_concurrency")]  # fmt: skip
    for extra, field in bad:
        st, doc, _ = call("POST", url, {"id": "n1", "url": "http://127.0.0.1:9", **extra})
        assert (st, doc["error"], doc["field"]) == (400, "bad_analyzer", field), doc
        st, doc, _ = call("PATCH", url + "/a1", extra)
        assert (st, doc["error"], doc["field"]) == (400, "bad_analyzer", field), doc
    doc = get(url + "/a1")
    assert (doc["format"], doc["message_concurrency"]) == ("batch", 32)
