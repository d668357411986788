"""The admin plane with real processes: the separate admin listener (single and --workers 2),
analyzer endpoints refused when they point at the distributor itself, outside
allowed_analyzer_hosts or at a control path (the /disable SSRF), and a loop through another
distributor cut by the X-Logdist-Hop header."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distributor.conftest import Cluster, call, get, packet, wait_until
from logdist.procs import free_port

pytestmark = pytest.mark.slow

#: routes served only on the admin listener once there is one (method, path, body)
ADMIN_ONLY: list[tuple[str, str, Any]] = [
    ("GET", "/", None),
    ("GET", "/queue", None),
    ("GET", "/api/v1/metrics", None),
    ("GET", "/api/v1/analyzers", None),
    ("GET", "/api/v1/analyzers/a1", None),
    ("POST", "/api/v1/analyzers", {"id": "rogue", "url": "http://127.0.0.1:9", "weight": 1000}),
    ("PATCH", "/api/v1/analyzers/a1", {"weight": 0}),
    ("DELETE", "/api/v1/analyzers/a1", None),
    ("GET", "/api/v1/dead-letters", None),
    ("POST", "/api/v1/dead-letters/replay", {}),
    ("POST", "/api/v1/wal/acknowledge-loss", {}),
]


def assert_split(main: str, admin: str) -> None:
    """Admin routes 404 on the main port and change nothing; ingest works there; the admin port
    serves the admin API, /health and /metrics."""
    for method, path, body in ADMIN_ONLY:
        st, doc, _ = call(method, main + path, body)
        assert st == 404 and doc["error"] == "not_found", (method, path, st, doc)
    st, doc, _ = call("POST", main + "/logs", packet(["s1", "s2"], pid="p1"))
    assert st == 200 and doc["accepted"] == 2, doc
    for url in (main, admin):
        assert call("GET", url + "/health")[0] == 200
        st, text, _ = call("GET", url + "/metrics")
        assert st == 200 and "logdist_accepted_messages_total" in text
    ids = [a["id"] for a in get(admin + "/api/v1/analyzers")["analyzers"]]
    assert ids == ["a1"], ids  # the rogue registration and the delete on the main port did nothing
    assert get(admin + "/api/v1/analyzers/a1")["weight"] == 1
    st, page, _ = call("GET", admin + "/")
    assert st == 200 and "<html" in page.lower()
    st, doc, _ = call("POST", admin + "/api/v1/analyzers", {"id": "a2", "url": "http://127.0.0.1:9", "weight": 0})
    assert st == 201, doc
    wait_until(lambda: get(admin + "/api/v1/metrics")["totals"]["acked"] >= 2, 30, "the packet's delivery")


def test_admin_listener_split(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    admin_port = free_port()
    cluster.distributor({"a1": 1}, admin_port=admin_port)
    assert_split(cluster.url, f"http://127.0.0.1:{admin_port}")


def _control_ports(pid: int) -> list[int]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().decode().split("\0")
    return [int(p) for p in argv[argv.index("--control-ports") + 1].split(",")]


def test_admin_listener_with_two_workers(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    admin_port = free_port()
    cluster.distributor({"a1": 1}, "--workers", "2", admin_port=admin_port)
    admin = f"http://127.0.0.1:{admin_port}"
    assert_split(cluster.url, admin)
    # the registration made on the admin listener reached both workers
    per_worker = get(admin + "/api/v1/metrics")["per_worker"]
    assert len(per_worker) == 2 and all("a2" in w["analyzers"] for w in per_worker), per_worker
    # a worker's control port is this distributor too
    workers = get(admin + "/health")["workers"]
    ports = _control_ports(workers[0]["pid"])
    for port in ports:
        st, doc, _ = call("POST", admin + "/api/v1/analyzers", {"id": "loop", "url": f"http://127.0.0.1:{port}"})
        assert st == 400 and doc["error"] == "bad_analyzer" and "itself" in doc["detail"], doc


def test_self_loop_refused(cluster: Cluster, spawn: Callable[..., Any], tmp_path: Path) -> None:
    cluster.analyzer("a1")
    admin_port = free_port()
    d = cluster.distributor({"a1": 1}, admin_port=admin_port)
    admin = f"http://127.0.0.1:{admin_port}"
    for shape in ({"url": f"http://127.0.0.1:{d.port}"}, {"url": f"http://localhost:{d.port}/"},
                  {"endpoint": f"http://0.0.0.0:{d.port}/logs"}, {"endpoint": f"http://127.0.0.1:{d.port}/api/v1/logs"},
                  {"url": f"http://127.0.0.1:{admin_port}"}, {"url": f"http://localhost:{admin_port}"},
                  {"url": f"http://0.0.0.0:{admin_port}"}):  # fmt: skip
        st, doc, _ = call("POST", admin + "/api/v1/analyzers", {"id": "loop", "weight": 1, **shape})
        assert st == 400 and doc["error"] == "bad_analyzer", (shape, doc)
        assert doc["field"] == next(iter(shape)) and "itself" in doc["detail"], (shape, doc)
        st, doc, _ = call("PATCH", admin + "/api/v1/analyzers/a1", shape)
        assert st == 400 and doc["error"] == "bad_analyzer" and "itself" in doc["detail"], (shape, doc)
    assert [a["id"] for a in get(admin + "/api/v1/analyzers")["analyzers"]] == ["a1"]
    assert get(admin + "/api/v1/analyzers/a1")["url"] == cluster.analyzers["a1"].url
    # a reload whose file points at the distributor: not applied
    assert cluster.config_path is not None
    doc = json.loads(cluster.config_path.read_text())
    doc["analyzers"].append({"id": "loop", "url": f"http://localhost:{admin_port}"})
    cluster.config_path.write_text(json.dumps(doc))
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config not reloaded" in d.log.read_text(), 30, "the reload to be refused")
    assert "analyzers[1].endpoint" in d.log.read_text() and "itself" in d.log.read_text()
    assert [a["id"] for a in get(admin + "/api/v1/analyzers")["analyzers"]] == ["a1"]
    # a config file that points at the distributor's own port: it refuses to start, in one line
    port = free_port()
    cfg = tmp_path / "self.json"
    cfg.write_text(json.dumps({"analyzers": [{"id": "me", "endpoint": f"http://localhost:{port}/logs"}],
                               "state_dir": str(tmp_path / "self-state")}))  # fmt: skip
    me = spawn("distributor", "--config", str(cfg), "--port", str(port), port=port, wait=False)
    assert me.proc.wait(30) == 1
    assert "analyzers[0].endpoint" in me.log.read_text() and "itself" in me.log.read_text()


def test_allowed_analyzer_hosts(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    allowed = ["analyzers.example.com", "*.example.net", "10.0.0.0/8", "127.0.0.1/32"]
    cluster.distributor({"a1": 1}, allowed_analyzer_hosts=allowed)
    url = cluster.url + "/api/v1/analyzers"
    for host in ("192.168.1.1", "11.1.2.3", "example.net", "evil.example.com", "example.net.evil.org"):
        st, doc, _ = call("POST", url, {"id": "x", "url": f"http://{host}:8080", "weight": 0})
        assert st == 400 and doc["error"] == "bad_analyzer", (host, doc)
        assert doc["field"] == "url" and "allowed_analyzer_hosts" in doc["detail"], (host, doc)
    for i, host in enumerate(("analyzers.example.com", "a.example.net", "b.c.example.net", "10.1.2.3")):
        st, doc, _ = call("POST", url, {"id": f"ok{i}", "url": f"http://{host}:8080", "weight": 0})
        assert st == 201, (host, doc)
    # the real analyzer (127.0.0.1, inside 127.0.0.1/32) was accepted from the file and gets traffic
    st, _, _ = call("POST", cluster.url + "/logs", packet(["h1"], pid="h"))
    assert st == 200
    wait_until(lambda: cluster.ids("a1") == ["h1"], 30, "delivery to the allowed analyzer")


def test_disable_ssrf_refused(cluster: Cluster) -> None:
    """The issue's attack: an endpoint at another analyzer's /disable switched it off."""
    cluster.analyzer("a1")
    a2 = cluster.analyzer("a2")
    cluster.distributor({"a1": 1})
    url = cluster.url + "/api/v1/analyzers"
    for shape in ({"endpoint": a2.url + "/disable"}, {"endpoint": a2.url + "/enable"},
                  {"endpoint": a2.url + "/fault"}, {"url": a2.url + "/disable?x="},
                  {"endpoint": a2.url + "/disable#/analyze"}, {"endpoint": a2.url + "/disable?/analyze"}):  # fmt: skip
        st, doc, _ = call("POST", url, {"id": "evil", "weight": 1000, **shape})
        assert st == 400 and doc["error"] == "bad_analyzer" and doc["field"] == next(iter(shape)), (shape, doc)
        st, doc, _ = call("PATCH", url + "/a1", shape)
        assert st == 400 and doc["error"] == "bad_analyzer", (shape, doc)
    for i in range(3):
        assert call("POST", cluster.url + "/logs", packet([f"d{i}"], pid=f"d{i}"))[0] == 200
    wait_until(lambda: len(cluster.ids("a1")) == 3, 30, "delivery to a1")
    assert call("GET", a2.url + "/health")[0] == 200  # a2 is still enabled
    assert [a["id"] for a in get(url)["analyzers"]] == ["a1"]


def test_two_distributors_in_a_loop_are_cut(spawn: Callable[..., Any], tmp_path: Path) -> None:
    """A's only analyzer is B's /logs and B's is A's: a packet goes A -> B -> A, where the hop
    header names A, so A refuses it (508) and B keeps it as a dead letter. Nothing multiplies."""
    pa, pb = free_port(), free_port()
    for name, peer in (("a", pb), ("b", pa)):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "analyzers": [{"id": f"to-{'b' if name == 'a' else 'a'}", "endpoint": f"http://127.0.0.1:{peer}/logs",
                           "timeout": 2000, "retry_count": 2}],
            "state_dir": str(tmp_path / f"state-{name}"), "instance_id": f"dist-{name}",
            "retry_base_ms": 20, "retry_cap_ms": 200, "health_interval_ms": 200,
        }))  # fmt: skip
    a = spawn("distributor", "--config", str(tmp_path / "a.json"), "--port", str(pa), port=pa, wait=False)
    b = spawn("distributor", "--config", str(tmp_path / "b.json"), "--port", str(pb), port=pb, wait=False)
    a.wait_healthy()
    b.wait_healthy()
    st, doc, _ = call("POST", a.url + "/logs", packet(["L1", "L2"], pid="loop"))
    assert st == 200, doc
    dead = wait_until(lambda: get(b.url + "/api/v1/dead-letters")["messages"] == 2 and
                      get(b.url + "/api/v1/dead-letters"), 60, "B to keep the looping batch")  # fmt: skip
    assert all("508" in str(d) for d in dead["dead_letters"]), dead
    for d in (a, b):
        wait_until(lambda d=d: get(d.url + "/queue")["size"] == 0, 30, "nothing held")
    ma, mb = get(a.url + "/api/v1/metrics"), get(b.url + "/api/v1/metrics")
    assert ma["totals"]["accepted"] == 2 and mb["totals"]["accepted"] == 2, (ma["totals"], mb["totals"])
    assert ma["rejected_by_status"].get("508", 0) >= 1, ma["rejected_by_status"]
    # the header itself: this distributor's id anywhere in it is refused before the body is read
    for hop in ("dist-a", "x, dist-a", "dist-b,dist-a"):
        st, doc, _ = call("POST", a.url + "/logs", packet(["L3"]), headers={"X-Logdist-Hop": hop})
        assert st == 508 and doc["error"] == "loop_detected", (hop, doc)
    st, doc, _ = call("POST", a.url + "/logs", packet(["L4"], pid="other"), headers={"X-Logdist-Hop": "dist-z"})
    assert st == 200, doc
