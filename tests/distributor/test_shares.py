"""Shares over 100,000 messages and four analyzers weighted 0.4/0.3/0.2/0.1: within one
percentage point with the alias method, exact with smooth weighted round robin."""

from __future__ import annotations

import pytest

from .conftest import Cluster, assert_zero_loss, get

pytestmark = pytest.mark.slow

WEIGHTS = {"a1": 0.4, "a2": 0.3, "a3": 0.2, "a4": 0.1}
TOTAL = 100_000


def run(cluster: Cluster, strategy: str) -> dict[str, int]:
    for aid in WEIGHTS:
        cluster.analyzer(aid)
    cluster.distributor(WEIGHTS, "--strategy", strategy)
    load = cluster.load(strategy, total=TOTAL, packet_size=1000).start().wait(110)
    assert load.count == TOTAL, load.errors
    cluster.drained()
    per = {a: cluster.ids(a) for a in WEIGHTS}
    assert_zero_loss(load.accepted, per)
    counts = {a: get(cluster.analyzers[a].url + "/processed")["processed_count"] for a in WEIGHTS}
    assert sum(counts.values()) == TOTAL
    return counts


def test_alias_shares_within_one_point(cluster: Cluster) -> None:
    counts = run(cluster, "alias")
    for aid, w in WEIGHTS.items():
        assert abs(counts[aid] / TOTAL - w) < 0.01, counts
    rows = {r["id"]: r for r in cluster.metrics()["analyzers"]}
    for aid, w in WEIGHTS.items():
        assert rows[aid]["expected_share"] == pytest.approx(w)
        assert rows[aid]["acked"] == counts[aid]


def test_swrr_shares_are_exact(cluster: Cluster) -> None:
    counts = run(cluster, "swrr")
    assert counts == {aid: round(w * TOTAL) for aid, w in WEIGHTS.items()}
