"""A backlog accepted while every analyzer was down is shared by weight when they come back one
by one, with real processes: the distributor releases pending messages in paced slices
(`pending_release_per_s`, scaled by the eligible part of the weight), each routed by the weights
of the analyzers up at that moment, so one that returns a second after another still takes its
share. Pending messages count toward `queue_size` (backpressure), and nothing is lost or
delivered twice."""

from __future__ import annotations

import time

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet, wait_until

pytestmark = pytest.mark.slow

WEIGHTS = {"a1": 0.4, "a2": 0.3, "a3": 0.2, "a4": 0.1}
BACKLOG = 30_000
PACKET = 500
#: each analyzer takes at most its weight's share of RATE per second from the backlog, whoever
#: else is up. With returns g seconds apart, in this order, a1 ends near
#: 0.4 + 0.4 x g x RATE / BACKLOG and a4 near 0.1 - 0.2 x g x RATE / BACKLOG: 43% and 8% for
#: g = 1, and within the 10 points even if a slow machine stretched the gaps to 2.5 s. The
#: backlog drains in about BACKLOG / RATE = 12 s once all are back. Without pacing, a1 took it all.
RATE = 2500


def test_backlog_is_shared_by_weight_when_analyzers_return_one_by_one(cluster: Cluster) -> None:
    for aid in WEIGHTS:
        cluster.analyzer(aid)
    cluster.distributor(WEIGHTS, queue_size=BACKLOG, pending_release_per_s=RATE)
    for aid in WEIGHTS:
        assert call("POST", cluster.analyzers[aid].url + "/disable")[0] == 200
    wait_until(lambda: not any(r["eligible"] for r in cluster.metrics()["analyzers"]), 30, "all analyzers down")

    accepted: list[str] = []
    for i in range(BACKLOG // PACKET):
        ids = [f"b-{i}-{j}" for j in range(PACKET)]
        status, doc, _ = call("POST", cluster.url + "/logs", packet(ids, "b", f"b{i}"))
        assert status == 200, doc
        accepted.extend(ids)
    q = get(cluster.url + "/queue")
    assert q["pending"] == q["size"] == BACKLOG
    assert q["pending_release_per_s"] == 0.0  # nothing eligible: nothing released
    # Backpressure still holds: pending counts toward queue_size.
    status, doc, headers = call("POST", cluster.url + "/logs", packet(["b-over"], "b", "b-over"))
    assert (status, doc["error"]) == (429, "queue_full") and "retry-after" in headers

    # Their ejection time over (state "down": waiting for a probe to pass), so each returns
    # as soon as it is enabled.
    wait_until(lambda: all(r["state"] == "down" for r in cluster.metrics()["analyzers"]), 60, "ejections over")
    for aid in WEIGHTS:  # back one by one, a second apart, the heaviest first
        assert call("POST", cluster.analyzers[aid].url + "/enable")[0] == 200
        time.sleep(1.0)
    cluster.drained(120)

    per = {a: cluster.ids(a) for a in WEIGHTS}
    assert_zero_loss(accepted, per)
    assert sum(len(v) for v in per.values()) == BACKLOG  # exactly once
    shares = {a: len(per[a]) / BACKLOG for a in WEIGHTS}
    print("backlog shares", {a: round(s, 4) for a, s in shares.items()})
    for aid, w in WEIGHTS.items():
        assert abs(shares[aid] - w) <= 0.10, shares
    m = cluster.metrics()
    assert m["totals"]["acked"] == BACKLOG and m["totals"]["pending"] == 0
    for r in m["analyzers"]:
        assert r["acked"] == len(per[r["id"]])
