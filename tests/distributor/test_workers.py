"""`logdist distributor --workers 2`: two real worker processes share the port under a real
supervisor. Traffic reaches both, the API answers for both, admin changes reach both, a kill -9
of a worker is repaired without losing an accepted message, and SIGTERM stops everything."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from logdist import pure_requested
from logdist.distributor.workers.fanout import Answer, health_merge
from logdist.distributor.workers.merge import merge_prometheus

from .conftest import Cluster, assert_zero_loss, call, get, wait_until

pytestmark = pytest.mark.slow


def workers_of(cluster: Cluster) -> list[dict[str, Any]]:
    """Every worker's status; /health answers 503 while one is down (then "unreachable")."""
    status, doc, _ = call("GET", cluster.url + "/health")
    assert status in (200, 503), (status, doc)
    return doc["workers"]  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def many_connections(cluster: Cluster, tag: str, n: int, per: int) -> list[Any]:
    """n loads (one connection each, so the kernel spreads them over the workers: with 16, the
    chance that one worker gets none is 2 / 2**16)."""
    return [cluster.load(f"{tag}{i}", packet_size=50, total=per).start() for i in range(n)]


def both_took_traffic(cluster: Cluster, aid: str | None = None) -> bool:
    rows = cluster.metrics()["per_worker"]
    if aid is None:
        return len(rows) == 2 and all(w["accepted"] > 0 for w in rows)
    return len(rows) == 2 and all(w["analyzers"].get(aid, {}).get("routed", 0) > 0 for w in rows)


def test_two_workers_share_the_port_and_answer_as_one(cluster: Cluster) -> None:
    for aid in ("a1", "a2", "a3"):
        cluster.analyzer(aid)
    d = cluster.distributor({"a1": 0.75, "a2": 0.25}, "--workers", "2", durability="wal")
    ws = workers_of(cluster)
    assert [w["worker"] for w in ws] == [0, 1] and all(w["status"] == "ok" for w in ws)
    assert len({w["pid"] for w in ws}) == 2
    # The supervisor only starts and watches processes: no aiohttp, no core in its memory.
    assert d.proc is not None
    with open(f"/proc/{d.proc.pid}/maps") as fh:
        sup_maps = fh.read()
    with open(f"/proc/{ws[0]['pid']}/maps") as fh:
        worker_maps = fh.read()
    for lib in ("_http_parser", "uvloop" if pure_requested() else "_wlb"):
        assert lib in worker_maps and lib not in sup_maps, lib

    loads = many_connections(cluster, "w", 16, 1000)
    for ld in loads:
        ld.wait()
    cluster.drained()
    accepted = [i for ld in loads for i in ld.accepted]
    assert len(accepted) == 16000
    m = cluster.metrics()
    assert m["workers"] == 2 and both_took_traffic(cluster), m["per_worker"]
    assert m["totals"]["accepted"] == m["totals"]["acked"] == 16000  # the sum over both workers
    assert sum(w["accepted"] for w in m["per_worker"]) == 16000
    assert {r["id"]: r["acked"] for r in m["analyzers"]}.keys() == {"a1", "a2"}
    share = next(r for r in m["analyzers"] if r["id"] == "a1")["share"]
    assert abs(share - 0.75) < 0.03, share
    assert_zero_loss(accepted, {a: cluster.ids(a) for a in ("a1", "a2")})
    q = get(cluster.url + "/queue")
    assert q["workers"] == 2
    assert q["capacity"] == 200_000  # queue_size bounds the whole distributor: each worker holds half

    prom = call("GET", cluster.url + "/metrics")[1]
    assert 'logdist_accepted_messages_total{worker="0"}' in prom
    assert 'logdist_accepted_messages_total{worker="1"}' in prom
    assert prom.count("# TYPE logdist_accepted_messages_total counter") == 1

    # an admin change made through one worker reaches the other
    st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers",
                      {"id": "a3", "url": cluster.analyzers["a3"].url, "weight": 1.0})  # fmt: skip
    assert st == 201 and "worker_errors" not in doc, doc
    assert all(w["analyzers"]["a3"]["weight"] == 1.0 for w in cluster.metrics()["per_worker"])
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a2", {"enabled": False})
    assert st == 200 and "worker_errors" not in doc, doc
    assert all(w["analyzers"]["a2"]["state"] == "disabled" for w in cluster.metrics()["per_worker"])
    loads = many_connections(cluster, "x", 16, 500)
    wait_until(lambda: both_took_traffic(cluster, "a3"), 60, "a3 traffic from both workers")
    for ld in loads:
        ld.wait()
    st, doc, _ = call("DELETE", cluster.url + "/api/v1/analyzers/a3")
    assert st == 200 and doc["removed"] == "a3"
    assert all("a3" not in w["analyzers"] for w in cluster.metrics()["per_worker"])
    assert call("DELETE", cluster.url + "/api/v1/analyzers/a3")[0] == 404
    cluster.drained()
    accepted += [i for ld in loads for i in ld.accepted]
    assert_zero_loss(accepted, {a: cluster.ids(a) for a in ("a1", "a2", "a3")})


def test_a_killed_worker_is_restarted_and_replays_its_log(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    cluster.analyzer("a2", "--latency-ms", "300")  # so that the log holds undelivered parts
    cluster.distributor({"a1": 0.5, "a2": 0.5}, "--workers", "2", durability="wal")
    loads = many_connections(cluster, "k", 6, 3000)
    wait_until(lambda: sum(ld.count for ld in loads) >= 4000, 60, "some traffic")
    # the worker holding the most (the kernel may give all the connections to one worker)
    victim = max(workers_of(cluster), key=lambda w: w["held"] or 0)["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: [w["status"] for w in workers_of(cluster)] == ["ok", "ok"] and victim not in
        [w["pid"] for w in workers_of(cluster)],
        60,
        "the supervisor to restart the worker",
    )  # fmt: skip
    # the new worker replayed what its predecessor had accepted and not yet delivered
    assert sum(st["wal_replayed_messages"] for st in cluster.metrics()["store"]) > 0
    for ld in loads:
        ld.wait()
    call("POST", cluster.analyzers["a2"].url + "/fault", {"latency_ms": 0})
    cluster.drained(90)
    accepted = [i for ld in loads for i in ld.accepted]
    assert len(accepted) == 18000
    assert_zero_loss(accepted, {a: cluster.ids(a) for a in ("a1", "a2")}, allow_dupes=True)


def test_sigterm_stops_the_supervisor_and_every_worker(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    d = cluster.distributor({"a1": 1.0}, "--workers", "2")
    pids = [w["pid"] for w in workers_of(cluster)]
    assert all(alive(p) for p in pids)
    assert d.stop() == 0
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_workers_need_a_fixed_port(spawn: Any, tmp_path: Any) -> None:
    d = spawn("distributor", "--port", "0", "--workers", "2", "--state-dir", str(tmp_path), wait=False)
    assert d.proc.wait(20) == 2
    assert "--workers needs a fixed --port" in d.log.read_text()


def test_a_restarted_worker_catches_up_with_admin_changes(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    cluster.distributor({"a1": 0.5, "a2": 0.5}, "--workers", "2")
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a2", {"enabled": False, "weight": 0.3})
    assert st == 200 and "worker_errors" not in doc
    victim = workers_of(cluster)[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (
            [w["status"] for w in workers_of(cluster)] == ["ok", "ok"]
            and victim not in [w["pid"] for w in workers_of(cluster)]
        ),
        60,
        "the supervisor to restart the worker",
    )
    # the config file still says enabled, weight 0.5: the new worker took the live state
    rows = cluster.metrics()["per_worker"]
    assert [w["analyzers"]["a2"]["state"] for w in rows] == ["disabled", "disabled"]
    assert [w["analyzers"]["a2"]["weight"] for w in rows] == [0.3, 0.3]


def test_a_change_of_worker_count_strands_nothing(cluster: Cluster) -> None:
    cluster.analyzer("a1", "--latency-ms", "400")  # so that the log holds undelivered parts
    d1 = cluster.distributor({"a1": 1.0}, durability="wal")  # a single process first
    load = cluster.load("c", packet_size=50, total=3000).start().wait()
    assert load.count == 3000
    assert get(d1.url + "/queue")["size"] > 0
    d1.kill9()
    cluster.distributor({"a1": 1.0}, "--workers", "2", durability="wal")  # same state_dir
    call("POST", cluster.analyzers["a1"].url + "/fault", {"latency_ms": 0})
    cluster.drained(90)
    store = cluster.metrics()["store"]
    assert sum(st["wal_replayed_messages"] for st in store) > 0  # worker 0 took the old log over
    assert_zero_loss(load.accepted, {"a1": cluster.ids("a1")}, allow_dupes=True)
    assert not (cluster.tmp / "state" / "wal").exists()


def test_a_stop_signal_to_every_process_at_once_still_drains(cluster: Cluster) -> None:
    cluster.analyzer("a1", "--latency-ms", "200")
    d = cluster.distributor({"a1": 1.0}, "--workers", "2")  # memory mode: only a drain saves what is held
    loads = many_connections(cluster, "s", 4, 2000)
    wait_until(lambda: get(cluster.url + "/queue")["size"] > 0, 30, "messages held")
    pids = [w["pid"] for w in workers_of(cluster)]
    assert d.proc is not None
    for pid in [d.proc.pid, *pids]:  # what `pkill -f 'logdist distributor'` or systemd does
        os.kill(pid, signal.SIGTERM)
    assert d.proc.wait(60) == 0
    for ld in loads:
        ld.stop()
    accepted = [i for ld in loads for i in ld.accepted]
    assert accepted
    assert_zero_loss(accepted, {"a1": cluster.ids("a1")})


def test_the_supervisor_gives_up_on_a_worker_that_cannot_start(spawn: Any, tmp_path: Any) -> None:
    import socket

    with socket.socket() as blocker:  # a plain listener (no SO_REUSEPORT) holds the port
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        d = spawn("distributor", "--port", str(port), "--workers", "2", "--state-dir", str(tmp_path), port=port,
                  wait=False)  # fmt: skip
        assert d.proc.wait(90) == 1
    assert "died 5 times in a row at start" in d.log.read_text()


def test_prometheus_samples_get_a_worker_label_and_stay_grouped_by_family() -> None:
    def page(x: int, y: int) -> str:
        return (f'# HELP x_total X.\n# TYPE x_total counter\nx_total {x}\n'
                f'# HELP y Y.\n# TYPE y gauge\ny{{analyzer="a1"}} {y}\n')  # fmt: skip

    out = merge_prometheus([(0, page(3, 2)), (1, page(4, 5))])
    assert out.splitlines() == [
        "# HELP x_total X.",
        "# TYPE x_total counter",
        'x_total{worker="0"} 3',
        'x_total{worker="1"} 4',
        "# HELP y Y.",
        "# TYPE y gauge",
        'y{analyzer="a1",worker="0"} 2',
        'y{analyzer="a1",worker="1"} 5',
    ]


@pytest.mark.parametrize(
    ("statuses", "lost", "code", "status"),
    [
        (("ok", "ok"), False, 200, "ok"),
        (("ok", "degraded"), False, 200, "degraded"),  # a pending loss report: still serving
        (("full", "ok"), False, 200, "full"),  # ingest answers 429 until the backlog drains
        (("ok", "recovering"), False, 503, "recovering"),
        (("stopping", "ok"), False, 503, "stopping"),
        (("ok", "ok"), True, 503, "degraded"),  # a worker that cannot be reached
    ],
)
def test_merged_health_answers_as_one_process_would(
    statuses: tuple[str, str], lost: bool, code: int, status: str
) -> None:
    """The supervisor's /health: 200 while every worker takes traffic, as a single process
    answers 200 for ok, degraded and full; 503 when one does not or cannot be reached."""
    mine = Answer({"status": statuses[0], "held": 0, "eligible": 1, "worker": 0, "pid": 1})
    peer = {"status": statuses[1], "held": 0, "eligible": 1, "worker": 1, "pid": 2}
    answers = [(1, 200, peer, None)]
    if lost:
        answers.append((2, 502, {"error": "unreachable", "detail": "x"}, None))
    merged = health_merge(mine, answers, 0)  # type: ignore[arg-type]
    assert (merged.status, merged.payload["status"]) == (code, status)
