"""Runtime changes with real processes: register / delete / weight change under load, dead
letters and replay, SIGHUP config reload, SIGTERM drain; none of them loses a message."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet, wait_until

pytestmark = pytest.mark.slow


def processed(cluster: Cluster, aid: str) -> int:
    return int(get(cluster.analyzers[aid].url + "/processed")["processed_count"])


def settled(read: Callable[[], int], quiet: float = 1.0, timeout: float = 30.0) -> int:
    """The value once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("value did not settle")


def test_register_delete_and_reweight_under_load(cluster: Cluster) -> None:
    for aid in ("a1", "a2", "a3"):
        cluster.analyzer(aid)
    cluster.distributor({"a1": 0.5, "a2": 0.5})
    load = cluster.load("r", packet_size=100, pause=0.005).start()
    load.reach(2000, 60, "some traffic")
    # seed 003 registration shape
    st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers",
                      {"id": "a3", "url": cluster.analyzers["a3"].url, "weight": 0.5})  # fmt: skip
    assert st == 201 and doc["id"] == "a3" and doc["state"] == "up"
    assert {a["id"] for a in get(cluster.url + "/api/v1/analyzers")["analyzers"]} == {"a1", "a2", "a3"}
    wait_until(lambda: processed(cluster, "a3") > 0, 30, "a3 traffic")
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a1", {"weight": 0.1})
    assert st == 200 and doc["weight"] == 0.1
    assert cluster.row("a1")["expected_share"] == pytest.approx(0.1 / 1.1)
    seen = load.count
    load.reach(seen + 1500, 60, "traffic after the weight change")
    st, doc, _ = call("DELETE", cluster.url + "/api/v1/analyzers/a2")
    assert st == 200 and doc["removed"] == "a2"
    assert call("DELETE", cluster.url + "/api/v1/analyzers/a2")[0] == 404
    after_delete = settled(lambda: processed(cluster, "a2"))  # batches in flight to a2 finish
    seen = load.count
    load.reach(seen + 2000, 60, "traffic after the delete")
    assert processed(cluster, "a2") == after_delete  # a removed analyzer gets nothing more
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a3", {"enabled": False})
    assert st == 200 and doc["state"] == "disabled"
    seen = load.count
    load.reach(seen + 1000, 60, "traffic with a3 disabled")
    assert call("PATCH", cluster.url + "/api/v1/analyzers/a3", {"enabled": True})[0] == 200
    wait_until(lambda: cluster.row("a3")["state"] == "up", 30, "a3 back")
    load.stop()
    cluster.drained()
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(load.accepted, per)
    assert sum(len(v) for v in per.values()) == load.count
    # bad admin requests
    st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers", {"id": "x", "url": "ftp://nope"})
    assert st == 400 and doc["error"] == "bad_analyzer" and "url" in doc["detail"]
    assert call("PATCH", cluster.url + "/api/v1/analyzers/a1", {"weight": -1})[0] == 400
    assert call("PATCH", cluster.url + "/api/v1/analyzers/nope", {"weight": 1})[0] == 404


def test_permanent_4xx_goes_to_dead_letters_and_replay_delivers(cluster: Cluster) -> None:
    cluster.analyzer("good")
    cluster.analyzer("picky", "--fail-status", "400")
    cluster.distributor({"good": 0.5, "picky": 0.5})
    load = cluster.load("dl", total=3000, packet_size=100).start().wait()
    assert load.count == 3000
    cluster.drained()
    dl = get(cluster.url + "/api/v1/dead-letters")
    row = cluster.row("picky")
    assert dl["messages"] == row["dead_lettered"] == row["routed"] > 0
    assert all(d["analyzer"] == "picky" and d["status"] == 400 for d in dl["dead_letters"])
    assert processed(cluster, "good") + dl["messages"] == 3000
    # Fix the analyzer, replay one by id, then the rest.
    assert call("POST", cluster.analyzers["picky"].url + "/fault", {"fail_status": None})[0] == 200
    first = dl["dead_letters"][0]
    st, doc, _ = call("POST", cluster.url + "/api/v1/dead-letters/replay", {"ids": [first["id"], "no-such"]})
    assert st == 200 and doc["replayed"] == 1 and doc["messages"] == first["count"] and doc["missing"] == ["no-such"]
    st, doc, _ = call("POST", cluster.url + "/api/v1/dead-letters/replay")
    assert st == 200 and doc["replayed"] == len(dl["dead_letters"]) - 1
    cluster.drained()
    assert get(cluster.url + "/api/v1/dead-letters")["count"] == 0
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(load.accepted, per)
    assert sum(len(v) for v in per.values()) == 3000


def test_sighup_reloads_analyzers_and_weights(cluster: Cluster) -> None:
    for aid in ("a1", "a2"):
        cluster.analyzer(aid)
    d = cluster.distributor({"a1": 1.0})
    load = cluster.load("h", packet_size=100, pause=0.005).start()
    load.reach(1000, 60, "some traffic")
    cluster.write_config({"a2": 1.0})  # a1 removed, a2 added
    d.signal(signal.SIGHUP)
    wait_until(lambda: [a["id"] for a in get(cluster.url + "/api/v1/analyzers")["analyzers"]] == ["a2"], 30, "reload")
    wait_until(lambda: processed(cluster, "a2") > 0, 30, "a2 traffic")
    # a bad file changes nothing, and the process stays up
    assert cluster.config_path is not None
    cluster.config_path.write_text(json.dumps({"analyzers": [{"id": "a3", "url": "nope"}]}))
    d.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert [a["id"] for a in get(cluster.url + "/api/v1/analyzers")["analyzers"]] == ["a2"]
    load.stop()
    cluster.drained()
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(load.accepted, per)
    assert sum(len(v) for v in per.values()) == load.count
    assert "config not reloaded" in d.log.read_text()


def test_sigterm_delivers_what_is_held_then_exits_0(cluster: Cluster) -> None:
    cluster.analyzer("a1", "--latency-ms", "100")
    d = cluster.distributor({"a1": 1.0}, batch_max_messages=200, max_inflight=1)
    accepted: list[str] = []
    for i in range(10):
        ids = [f"t{i}-{j}" for j in range(200)]
        assert call("POST", cluster.url + "/logs", packet(ids, "t", f"t{i}"))[0] == 200
        accepted += ids
    assert get(cluster.url + "/queue")["size"] > 0  # still held when the signal arrives
    d.signal(signal.SIGTERM)
    assert d.proc is not None
    assert d.proc.wait(30) == 0
    assert_zero_loss(accepted, {"a1": cluster.ids("a1")})
    assert "all accepted messages delivered" in d.log.read_text()


def test_seed_003_flow_no_config_then_registration_delivers_pending(cluster: Cluster) -> None:
    """Started with no config (seed 003 style), it accepts into pending, then analyzers register
    (seed 003 and seed 000 shapes) and everything pending is delivered."""
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    d = cluster.spawn("distributor", "--port", "{port}", "--state-dir", str(cluster.tmp / "state"))
    cluster.dist = d
    accepted: list[str] = []
    for i in range(5):
        ids = [f"p{i}-{j}" for j in range(100)]
        assert call("POST", d.url + "/api/v1/logs", packet(ids, "p", f"p{i}"))[0] == 202
        accepted += ids
    q = get(d.url + "/queue")
    assert q["size"] == q["pending"] == 500
    st, _, _ = call("POST", d.url + "/api/v1/analyzers", {"id": "a1", "url": cluster.analyzers["a1"].url, "weight": 3})
    assert st == 201
    st, _, _ = call("POST", d.url + "/api/v1/analyzers",
                    {"id": "a2", "endpoint": cluster.analyzers["a2"].url + "/analyze", "weight": 1, "timeout": 2000,
                     "retry_count": 2})  # fmt: skip
    assert st == 201
    cluster.drained()
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(accepted, per)
    assert sum(len(v) for v in per.values()) == 500
    rows = {r["id"]: r for r in cluster.metrics()["analyzers"]}
    assert rows["a1"]["expected_share"] == pytest.approx(0.75) and rows["a2"]["expected_share"] == pytest.approx(0.25)
    # re-registering the same id updates it (200, not a second analyzer)
    st, doc, _ = call(
        "POST", d.url + "/api/v1/analyzers", {"id": "a2", "url": cluster.analyzers["a2"].url, "weight": 2}
    )
    assert st == 200 and doc["weight"] == 2 and len(get(d.url + "/api/v1/analyzers")["analyzers"]) == 2
    assert get(d.url + "/api/v1/analyzers/a2")["weight"] == 2
    assert call("GET", d.url + "/api/v1/analyzers/nope")[0] == 404
