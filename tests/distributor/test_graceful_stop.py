"""A graceful stop never drops: what cannot be delivered within the grace period is kept in
state_dir (memory mode: a leftover file; wal mode: the write-ahead log) and sent on the next
start, with real processes and real signals."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import Cluster, call, get, wait_until

pytestmark = pytest.mark.slow


def leftover_files(cluster: Cluster) -> list[Path]:
    return sorted((cluster.tmp / "state" / "leftover").glob("*.left"))


def processed(cluster: Cluster, aid: str) -> tuple[int, int]:
    doc = get(cluster.analyzers[aid].url + "/processed")
    return int(doc["processed_count"]), int(doc["duplicates"])


@pytest.mark.parametrize("durability", ["memory", "wal"])
def test_what_a_graceful_stop_cannot_deliver_is_sent_on_the_next_start(cluster: Cluster, durability: str) -> None:
    a1 = cluster.analyzer("a1")
    port = a1.port
    d = cluster.distributor({"a1": 1.0}, "--grace", "1", durability=durability)
    a1.stop()  # no analyzer reachable
    load = cluster.load("g", packet_size=50, total=1000).start().wait()
    assert load.count == 1000 and not load.errors
    d.signal(signal.SIGTERM)
    assert d.proc is not None and d.proc.wait(30) == 0
    log = d.log.read_text()
    assert "stopping with 1000 messages undelivered" in log
    if durability == "memory":
        assert len(leftover_files(cluster)) == 1 and "kept 1000 undelivered messages in" in log
    else:  # the write-ahead log keeps them: no leftover file
        assert leftover_files(cluster) == []

    d.start()  # the analyzer is still down: everything is held again before ingest opens
    assert get(cluster.url + "/queue")["size"] == 1000
    assert leftover_files(cluster) == []  # handed over, then removed
    cluster.analyzer("a1", port=port)
    cluster.drained()
    assert sorted(cluster.ids("a1")) == sorted(load.accepted)
    assert processed(cluster, "a1") == (1000, 0)  # all of them, each exactly once


def test_a_second_sigterm_during_the_stop_loses_nothing_accepted(cluster: Cluster) -> None:
    """The first SIGTERM writes what is held at once, then drains; a second one forces exit
    (code 1) during the drain: the file written first is sent on the next start."""
    a1 = cluster.analyzer("a1")
    port = a1.port
    d = cluster.distributor({"a1": 1.0}, "--grace", "120")
    a1.stop()
    load = cluster.load("s", packet_size=50, total=600).start().wait()
    assert load.count == 600
    d.signal(signal.SIGTERM)
    wait_until(lambda: leftover_files(cluster), 30, "the leftover file")
    d.signal(signal.SIGTERM)
    assert d.proc is not None and d.proc.wait(30) == 1
    assert "forcing exit" in d.log.read_text()
    d.start()
    cluster.analyzer("a1", port=port)
    cluster.drained()
    assert sorted(cluster.ids("a1")) == sorted(load.accepted)
    assert leftover_files(cluster) == []


def test_with_no_analyzer_configured_a_stop_keeps_everything(cluster: Cluster) -> None:
    d = cluster.distributor({})
    load = cluster.load("n", packet_size=20, total=200).start().wait()
    assert get(cluster.url + "/queue")["pending"] == 200
    d.signal(signal.SIGTERM)  # nothing can deliver: it does not wait for the grace period
    assert d.proc is not None and d.proc.wait(30) == 0
    assert len(leftover_files(cluster)) == 1
    d.start()
    assert get(cluster.url + "/queue")["pending"] == 200
    a1 = cluster.analyzer("a1")
    assert call("POST", cluster.url + "/api/v1/analyzers", {"id": "a1", "url": a1.url, "weight": 1})[0] == 201
    cluster.drained()
    assert sorted(cluster.ids("a1")) == sorted(load.accepted)
