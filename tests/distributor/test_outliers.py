"""Outlier ejection from delivery outcomes, with real processes: an analyzer whose /health
answers at once but whose /analyze answers only after the distributor's timeout is ejected
under load, for longer each time in a row; /health alone does not re-admit it before its
ejection time is over; one failure right after a re-admission ejects it again; its share goes to
the other analyzer and nothing is lost. Once it delivers again, its ejection level decays."""

from __future__ import annotations

from typing import Any

import pytest

from logdist.config import ConfigError, parse_distributor_config

from .conftest import Cluster, assert_zero_loss, call, get, wait_until

pytestmark = pytest.mark.slow

SLOW_TIMEOUT_MS = 1000  # the distributor's timeout for the slow analyzer
LATENCY_MS = 3000  # the slow analyzer answers /analyze after this (its /health at once)
BASE_MS = 1000
MAX_MS = 10_000


def ejections(cluster: Cluster) -> list[dict[str, Any]]:
    return list(cluster.row("slow")["recent_ejections"])


def test_slow_but_healthy_analyzer_is_ejected_for_longer_each_time(cluster: Cluster) -> None:
    cluster.analyzer("ok")
    cluster.analyzer("slow", "--latency-ms", str(LATENCY_MS))
    specs = [
        {"id": "ok", "url": cluster.analyzers["ok"].url, "weight": 0.5, "timeout": 10_000, "retry_count": 3},
        {"id": "slow", "url": cluster.analyzers["slow"].url, "weight": 0.5, "timeout": SLOW_TIMEOUT_MS,
         "retry_count": 3},
    ]  # fmt: skip
    cluster.distributor(
        {"ok": 0.5, "slow": 0.5}, analyzers=specs, ejection_base_ms=BASE_MS, ejection_max_ms=MAX_MS,
        ejection_decay_ms=1000, health_timeout_ms=2000,
    )  # fmt: skip
    load = cluster.load("o", packet_size=50, pause=0.01).start()

    # First ejection: by delivery outcomes, while its /health answers 200.
    wait_until(lambda: cluster.row("slow")["ejections"] >= 1, 60, "the slow analyzer to be ejected")
    view = get(cluster.url + "/api/v1/analyzers/slow")
    health = get(cluster.analyzers["slow"].url + "/health")
    assert health["status"] == "ok"
    assert view["ejections"] >= 1
    assert view["state"] in ("ejected", "up"), view  # "up" only if re-admitted meanwhile

    # More ejections in a row: each re-admission ends with one more timeout.
    wait_until(lambda: cluster.row("slow")["ejections"] >= 3, 90, "three ejections in a row")
    row = cluster.row("slow")
    assert row["acked"] == 0  # it never answered within the timeout: all of it went to "ok"
    assert row["rerouted"] > 0
    first, second, third = row["recent_ejections"][:3]
    assert first["failures"] >= 3 and not first["on_probation"]  # eject_after (3) in a row
    for later in (second, third):
        assert later["on_probation"] and later["failures"] == 1  # one failure after re-admission
    durations = [e["duration_ms"] for e in (first, second, third)]
    print(
        "ejections (duration_ms, out_ms, failures)",
        [(e["duration_ms"], e["out_ms"], e["failures"]) for e in row["recent_ejections"]],
    )
    assert durations[0] < durations[1] < durations[2], durations
    assert durations == [BASE_MS, 2 * BASE_MS, 3 * BASE_MS]
    # The probes passed during the ejections, and did not re-admit it before the time was over.
    assert row["probes_ok_while_ejected"] > 0
    for e in (first, second):
        assert e["out_ms"] is not None and e["out_ms"] >= e["duration_ms"], e

    # It recovers: delivers again, and after ejection_decay_ms of healthy delivery per level its
    # ejection level is back to 0, so the next ejection holds it out for the base time again.
    assert call("POST", cluster.analyzers["slow"].url + "/fault", {"latency_ms": 0})[0] == 200
    wait_until(lambda: cluster.row("slow")["acked"] > 0, 60, "the slow analyzer to deliver again")
    wait_until(lambda: cluster.row("slow")["ejection_level"] == 0, 60, "its ejection level to decay")
    n = cluster.row("slow")["ejections"]
    assert call("POST", cluster.analyzers["slow"].url + "/fault", {"latency_ms": LATENCY_MS})[0] == 200
    wait_until(lambda: cluster.row("slow")["ejections"] > n, 60, "an ejection after the decay")
    row = cluster.row("slow")
    after_decay = row["recent_ejections"][n - row["ejections"]]  # the first one since
    assert after_decay["level"] == 1 and after_decay["duration_ms"] == BASE_MS, after_decay
    assert call("POST", cluster.analyzers["slow"].url + "/fault", {"latency_ms": 0})[0] == 200

    load.stop()
    assert load.count > 0 and not [e for e in load.errors if e.startswith("HTTP")], load.errors
    cluster.drained(90)
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    # A batch that timed out is still processed by the slow analyzer after its delay, and was
    # delivered to "ok" too: at-least-once, so duplicates are allowed here (never a loss).
    assert_zero_loss(load.accepted, per, allow_dupes=True)
    m = cluster.metrics()
    assert m["totals"]["accepted"] == m["totals"]["acked"] == load.count
    assert m["totals"]["dead_lettered"] == 0
    rows = {r["id"]: r for r in m["analyzers"]}
    assert rows["ok"]["ejections"] == 0
    assert rows["ok"]["acked"] > rows["slow"]["acked"]


def test_health_alone_does_not_readmit_before_the_ejection_ends(cluster: Cluster) -> None:
    """A long ejection: while it lasts, every probe passes and the analyzer stays ejected."""
    cluster.analyzer("ok")
    cluster.analyzer("slow", "--latency-ms", str(LATENCY_MS))
    specs = [
        {"id": "ok", "url": cluster.analyzers["ok"].url, "weight": 0.5, "timeout": 10_000, "retry_count": 3},
        {"id": "slow", "url": cluster.analyzers["slow"].url, "weight": 0.5, "timeout": SLOW_TIMEOUT_MS,
         "retry_count": 3},
    ]  # fmt: skip
    cluster.distributor(
        {"ok": 0.5, "slow": 0.5}, analyzers=specs, ejection_base_ms=600_000, ejection_max_ms=600_000,
        health_timeout_ms=2000,
    )  # fmt: skip
    load = cluster.load("h", packet_size=50, pause=0.01).start()
    wait_until(lambda: cluster.row("slow")["state"] == "ejected", 60, "the slow analyzer to be ejected")
    # Its health is fine, the distributor probes it (every 200 ms here) and keeps it out.
    assert call("POST", cluster.analyzers["slow"].url + "/fault", {"latency_ms": 0})[0] == 200
    wait_until(lambda: cluster.row("slow")["probes_ok_while_ejected"] >= 10, 60, "ten passing probes")
    row = cluster.row("slow")
    view = get(cluster.url + "/api/v1/analyzers/slow")
    assert row["state"] == view["state"] == "ejected" and not row["eligible"]
    assert row["ejections"] == 1 and row["ejection_remaining_ms"] > 0
    assert view["ejected_until"] is not None and view["ejections"] == 1
    assert row["expected_share"] == 0.0 and cluster.row("ok")["expected_share"] == 1.0
    routed = row["routed"]
    seen = load.count
    load.reach(seen + 2000, 60, "traffic while it is ejected")
    assert cluster.row("slow")["routed"] == routed  # no new traffic for it
    # An operator who knows better re-enables it at once (PATCH enabled false, then true).
    for enabled in (False, True):
        status, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/slow", {"enabled": enabled})
        assert status == 200, doc
    wait_until(lambda: cluster.row("slow")["state"] == "up", 30, "re-admitted by the operator")
    load.stop()
    cluster.drained(90)
    per = {a: cluster.ids(a) for a in cluster.analyzers}
    assert_zero_loss(load.accepted, per, allow_dupes=True)
    m = cluster.metrics()["totals"]
    assert m["accepted"] == m["acked"] == load.count


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"ejection_base_ms": 2000, "ejection_max_ms": 1000}, "ejection_max_ms"),
        ({"ejection_base_ms": -1}, "ejection_base_ms"),
        ({"ejection_decay_ms": 0}, "ejection_decay_ms"),
        ({"pending_release_per_s": -5}, "pending_release_per_s"),
        ({"pending_release_per_s": "fast"}, "pending_release_per_s"),
    ],
)
def test_ejection_and_release_keys_are_validated(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_distributor_config(doc)
    assert exc.value.key == key
