"""Quick end-to-end check in both durability modes: packets in, everything delivered once,
re-sent packets acknowledged without being routed twice."""

from __future__ import annotations

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet


@pytest.mark.parametrize("durability", ["memory", "wal"])
def test_delivers_everything_once(cluster: Cluster, durability: str) -> None:
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    cluster.distributor({"a1": 0.7, "a2": 0.3}, durability=durability)
    load = cluster.load("s", total=2000, packet_size=100).start().wait()
    assert load.count == 2000, load.errors
    first = packet([f"s-{i}" for i in range(100)], "s", "s-p0")  # the load's first packet, byte for byte
    st, doc, _ = call("POST", cluster.url + "/logs", first)  # a re-send
    assert st == 200 and doc["duplicate"] is True
    cluster.drained()
    assert_zero_loss(load.accepted, {a: cluster.ids(a) for a in cluster.analyzers})
    m = cluster.metrics()
    assert m["totals"]["accepted"] == m["totals"]["acked"] == 2000
    assert m["totals"]["duplicate_packets"] == 1
    h = get(cluster.url + "/health")
    assert h["status"] == "ok" and h["durability"] == durability
