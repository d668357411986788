"""Keyed routing (route_key) end to end, with real analyzer and distributor processes.

With route_key=message_id a client that re-sends messages in new packets (new packet ids, so
the packet ledger cannot recognise them) still gets an exact count: every copy of an id goes
to the analyzer its id picks, which drops the copies. With route_key=random the copies are
spread over the analyzers and counted again. A keyed analyzer that leaves lends its keys to the
next analyzer of each key and gets them back when it returns.
"""

from __future__ import annotations

import json
import random

import pytest

from logdist import core
from waiting import wait_until

from .conftest import Cluster, call, get

WEIGHTS = {"a1": 0.4, "a2": 0.3, "a3": 0.2, "a4": 0.1}


def post(cluster: Cluster, body: dict[str, object]) -> None:
    status, doc, _ = call("POST", cluster.url + "/logs", body)
    assert status == 200 and not doc.get("duplicate"), (status, doc)


def processed(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """(unique, duplicates) per analyzer."""
    out = {}
    for aid in cluster.analyzers:
        doc = get(cluster.analyzers[aid].url + "/processed")
        out[aid] = (int(doc["processed_count"]), int(doc["duplicates"]))
    return out


def expected_router() -> object:
    r = core.Router("alias", 0)
    for aid, w in WEIGHTS.items():
        r.set_target(aid, w)
    return r


@pytest.mark.parametrize(
    ("route_key", "workers"),
    [("message_id", 1), ("random", 1), ("message_id", 2)],
    ids=["message_id", "random", "message_id-2-workers"],
)
def test_resent_messages_in_new_packets_are_counted_once_when_keyed(
    cluster: Cluster, route_key: str, workers: int
) -> None:
    """With two worker processes (each request on a new connection, so the kernel spreads them)
    the count is exact too: the placement holds no state, both workers place a key alike."""
    for aid in WEIGHTS:
        cluster.analyzer(aid)
    extra = ("--workers", str(workers)) if workers > 1 else ()
    cluster.distributor(WEIGHTS, *extra, route_key=route_key, seed=11)
    unique = [f"u-{i}" for i in range(2000)]
    resent = random.Random(3).sample(unique, 1000)  # an at-least-once client re-sends half
    n = 0
    for ids in [unique[i : i + 100] for i in range(0, 2000, 100)] + [resent[i : i + 50] for i in range(0, 1000, 50)]:
        msgs = [{"id": i, "level": "INFO", "source": "t", "message": f"m {i}"} for i in ids]
        post(cluster, {"emitter_id": "em", "packet_id": f"p-{n}", "messages": msgs})  # a new packet id each time
        n += 1
    cluster.drained()
    figures = processed(cluster)
    total_unique = sum(u for u, _ in figures.values())
    seen = {aid: set(cluster.ids(aid)) for aid in WEIGHTS}
    if route_key == "message_id":
        assert total_unique == len(unique), figures  # the end-to-end count is exact
        assert sum(d for _, d in figures.values()) == len(resent)  # every copy dropped as a duplicate
        for aid, ids in seen.items():  # each id on exactly one analyzer: the one its key picks
            others = set().union(*(v for a, v in seen.items() if a != aid))
            assert not ids & others
        r = expected_router()
        assert all(r.pick_key(i.encode()) == aid for aid, ids in seen.items() for i in ids)  # type: ignore[attr-defined]
    else:
        # random placement: a copy lands elsewhere with chance 1 - sum(w^2) = 0.7, and is
        # counted twice (the chance that none of 1000 does is 0.3^1000)
        assert total_unique > len(unique), figures
    assert sum(len(v) for v in seen.values()) == total_unique
    if workers > 1:  # 40 new connections: the chance that one worker got none is 2 / 2**40
        rows = cluster.metrics()["per_worker"]
        assert len(rows) == 2 and all(w["accepted"] > 0 for w in rows), rows


def test_keys_stay_put_leave_with_their_analyzer_and_come_back(cluster: Cluster) -> None:
    for aid in WEIGHTS:
        cluster.analyzer(aid)
    cluster.distributor(WEIGHTS, route_key="metadata.trace_id")
    traces = [f"trace-{i}" for i in range(40)]
    r = expected_router()
    home = {t: r.pick_key(t.encode()) for t in traces}  # type: ignore[attr-defined]

    def send(tag: str) -> None:
        msgs = [{"id": f"{tag}-{t}-{k}", "message": "x", "metadata": {"trace_id": t}} for t in traces for k in range(3)]
        msgs.append({"id": f"{tag}-none", "message": "no trace id", "metadata": {}})
        post(cluster, {"emitter_id": "em", "packet_id": tag, "messages": msgs})
        cluster.drained()

    def where(tag: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for aid in WEIGHTS:
            for i in cluster.ids(aid):
                if i.startswith(f"{tag}-trace-"):
                    out.setdefault(i[len(tag) + 1 : i.rindex("-")], set()).add(aid)
        return out

    send("one")
    assert where("one") == {t: {home[t]} for t in traces}
    # a2 is disabled: its traces go to their next analyzer, the others stay put
    assert call("PATCH", cluster.url + "/api/v1/analyzers/a2", {"enabled": False})[0] == 200
    send("two")
    during = where("two")
    for t in traces:
        expect = r.pick_key(t.encode(), exclude=["a2"])  # type: ignore[attr-defined]
        assert during[t] == {expect}
        if home[t] != "a2":
            assert expect == home[t]
    assert call("PATCH", cluster.url + "/api/v1/analyzers/a2", {"enabled": True})[0] == 200
    wait_until(lambda: cluster.row("a2")["eligible"], 30, "a2 eligible again (its health probe passed)")
    send("three")
    assert where("three") == {t: {home[t]} for t in traces}  # back home
    totals = cluster.metrics()["totals"]
    assert totals["keyed_fallback"] == 3  # one message without a trace id per packet
    assert cluster.metrics()["route_key"] == "metadata.trace_id"


def test_a_bad_route_key_is_refused_naming_the_key(cluster: Cluster) -> None:
    from logdist.config import ConfigError, parse_distributor_config

    for bad in ("", "metadata..trace_id", "a b", 7):
        with pytest.raises(ConfigError, match="route_key"):
            parse_distributor_config({"route_key": bad})
    assert parse_distributor_config({"route_key": "metadata.trace_id"}).route_key == "metadata.trace_id"
    assert json.loads(json.dumps(parse_distributor_config({}).route_key)) == "random"


def test_a_failing_analyzer_passes_each_key_to_its_next_analyzer(cluster: Cluster) -> None:
    """A keyed batch that fails retry_count times on its analyzer (which stays in rotation:
    eject_after is out of reach) is routed again message by message, each to the next analyzer
    in its key's rendezvous order, not as a whole to one picked at random."""
    for aid in WEIGHTS:
        cluster.analyzer(aid)
    cluster.distributor(WEIGHTS, route_key="source", eject_after=1000)
    status, doc, _ = call("POST", cluster.analyzers["a1"].url + "/fault", {"fail_status": 503})
    assert status == 200, doc
    sources = [f"src-{i}" for i in range(60)]
    msgs = [{"id": f"{s}-{k}", "message": "x", "source": s} for s in sources for k in range(2)]
    post(cluster, {"emitter_id": "em", "packet_id": "p-1", "messages": msgs})
    cluster.drained()
    r = expected_router()
    got: dict[str, set[str]] = {}
    for aid in WEIGHTS:
        for i in cluster.ids(aid):
            got.setdefault(i[: i.rindex("-")], set()).add(aid)
    assert any(r.pick_key(s.encode()) == "a1" for s in sources)  # type: ignore[attr-defined]
    assert got == {s: {r.pick_key(s.encode(), exclude=["a1"])} for s in sources}  # type: ignore[attr-defined]
    assert cluster.row("a1")["rerouted"] > 0
