"""Microbenchmarks of the core, both backends side by side (run through bench/micro.py).

Each benchmark records in extra_info how many items one call handles ("items") and what an
item is ("unit"), so micro.py can turn pytest-benchmark's timings into rates. These are not
timed tests: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# The backend loader of the test suites (tests/backends.py): pytest puts tests/ on the path only
# for the tests under it, and this file runs alone (bench/micro.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from backends import BACKENDS, load_backend

pytestmark = pytest.mark.benchmark

WEIGHTS = {"analyzer-1": 0.4, "analyzer-2": 0.3, "analyzer-3": 0.2, "analyzer-4": 0.1}
# items per call, per backend: enough work per round for a stable timing, short runs in Python
PICKS = {"rs": 1_000_000, "py": 100_000}
RING_OPS = {"rs": 20_000, "py": 20_000}


@pytest.fixture(params=BACKENDS)
def be(request: pytest.FixtureRequest) -> tuple[str, ModuleType]:
    return request.param, load_backend(request.param)


def make_router(mod: ModuleType, strategy: str) -> Any:
    router = mod.Router(strategy, 7)
    for name, weight in WEIGHTS.items():
        router.set_target(name, weight)
    return router


def make_packet(count: int = 250, size: int = 240) -> bytes:
    """A packet object ("messages" array, agent_id, packet_id) of `count` messages of about `size`
    bytes; every other one lacks an id."""
    messages = []
    for i in range(count):
        msg: dict[str, Any] = {
            "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i:03d}Z",
            "level": ("INFO", "WARN", "ERROR", "DEBUG")[i % 4],
            "source": f"service-{i % 7}",
            "message": "",
            "metadata": {"request_id": f"req-{i:08x}", "host": f"web-{i % 5}"},
        }
        if i % 2 == 0:
            msg = {"id": f"m-{i:06d}", **msg}
        base = len(json.dumps(msg, separators=(",", ":")))
        msg["message"] = f"user {i} did a thing " + "x" * max(0, size - base - 20)
        messages.append(msg)
    packet = {"packet_id": "bench-0001", "agent_id": "bench", "messages": messages}
    return json.dumps(packet, separators=(",", ":")).encode()


def test_alias_histogram(benchmark: Any, be: tuple[str, ModuleType]) -> None:
    name, mod = be
    table = mod.AliasTable(list(WEIGHTS.values()))
    n = PICKS[name]
    benchmark.group = "alias picks (AliasTable.histogram)"
    benchmark.extra_info.update(backend=name, items=n, unit="picks")
    hist = benchmark(table.histogram, n, 1)
    assert sum(hist) == n


@pytest.mark.parametrize("strategy", ["alias", "swrr"])
def test_router_pick_many(benchmark: Any, be: tuple[str, ModuleType], strategy: str) -> None:
    name, mod = be
    router = make_router(mod, strategy)
    n = PICKS[name] // 4
    benchmark.group = f"{strategy} picks (Router.pick_many)"
    benchmark.extra_info.update(backend=name, items=n, unit="picks")
    picks = benchmark(router.pick_many, n)
    assert len(picks) == n


def test_ring_push_pop(benchmark: Any, be: tuple[str, ModuleType]) -> None:
    name, mod = be
    n = RING_OPS[name]
    ring = mod.RingBuffer(n)
    items = [b"x" * 240] * n

    def run() -> None:
        push, pop = ring.push, ring.pop
        for item in items:
            push(item)
        for _ in range(n):
            pop()

    benchmark.group = "ring push+pop (RingBuffer)"
    benchmark.extra_info.update(backend=name, items=2 * n, unit="ops")
    benchmark(run)
    assert ring.is_empty()


def test_route_packet(benchmark: Any, be: tuple[str, ModuleType]) -> None:
    name, mod = be
    body = make_packet()
    router = make_router(mod, "alias")
    benchmark.group = "route_packet (250 msgs of ~240 B)"
    benchmark.extra_info.update(backend=name, items=250, unit="msgs", body_bytes=len(body))
    result = benchmark(mod.route_packet, body, router, fallback_prefix="bench/")
    assert result.count == 250


@pytest.mark.parametrize("route_key", ["message_id", "metadata.request_id"])
def test_route_packet_keyed(benchmark: Any, be: tuple[str, ModuleType], route_key: str) -> None:
    """The same packet and router as test_route_packet, placed by key (weighted rendezvous)."""
    name, mod = be
    body = make_packet()
    router = make_router(mod, "alias")
    benchmark.group = f"route_packet keyed: {route_key}"
    benchmark.extra_info.update(backend=name, items=250, unit="msgs", body_bytes=len(body))
    result = benchmark(mod.route_packet, body, router, fallback_prefix="bench/", route_key=route_key)
    assert result.count == 250 and result.unkeyed == 0


@pytest.mark.parametrize("analyzers", [16, 64])
@pytest.mark.parametrize("route_key", ["random", "message_id"])
def test_route_packet_many_analyzers(
    benchmark: Any, be: tuple[str, ModuleType], route_key: str, analyzers: int
) -> None:
    """Rendezvous costs one score per candidate per message: how the keyed rate falls with the
    number of analyzers, beside the random rate (an alias pick, O(1))."""
    name, mod = be
    body = make_packet()
    router = mod.Router("alias", 7)
    for i in range(analyzers):
        router.set_target(f"analyzer-{i}", float(1 + i % 4))
    benchmark.group = f"route_packet {route_key}, {analyzers} analyzers"
    benchmark.extra_info.update(backend=name, items=250, unit="msgs", body_bytes=len(body))
    result = benchmark(mod.route_packet, body, router, fallback_prefix="bench/", route_key=route_key)
    assert result.count == 250


ANALYZE_ROUNDS = {"rs": 400, "py": 150}
ANALYZE_PREFILL = 3000  # batches ingested first: 750k ids, so the 1M window is in its steady state


def make_array_template(count: int = 250, size: int = 240) -> bytes:
    """A JSON array of `count` messages of `size` bytes, every id holding b"@@BATCH@@" (8 bytes
    once replaced), so each batch gets unique ids."""
    messages = []
    for i in range(count):
        msg: dict[str, Any] = {
            "id": f"@@BATCH@@-{i:04d}",
            "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i:03d}Z",
            "level": ("INFO", "WARN", "ERROR", "DEBUG")[i % 4],
            "source": f"service-{i % 7}",
            "message": "",
            "metadata": {"request_id": f"req-{i:08x}", "host": f"web-{i % 5}"},
        }
        base = len(json.dumps(msg, separators=(",", ":"))) - len("@@BATCH@@") + 8
        msg["message"] = "x" * (size - base)
        messages.append(msg)
    body = json.dumps(messages, separators=(",", ":")).encode()
    assert len(body.replace(b"@@BATCH@@", b"00000000")) == count * (size + 1) + 1
    return body


def test_analyzer_ingest(benchmark: Any, be: tuple[str, ModuleType]) -> None:
    """BatchAnalyzer.ingest, the analyzer's per-batch work: 250 fresh ids per call."""
    name, mod = be
    template = make_array_template()
    analyzer = mod.BatchAnalyzer(1_000_000, False)
    batch = iter(range(1 << 30))

    def fresh_body() -> tuple[tuple[bytes], dict[str, Any]]:
        return (template.replace(b"@@BATCH@@", b"%08d" % next(batch)),), {}

    for _ in range(ANALYZE_PREFILL):
        analyzer.ingest(fresh_body()[0][0])
    benchmark.group = "analyzer ingest (250 x ~240 B, fresh)"
    benchmark.extra_info.update(backend=name, items=250, unit="msgs", body_bytes=len(fresh_body()[0][0]))
    result = benchmark.pedantic(analyzer.ingest, setup=fresh_body, rounds=ANALYZE_ROUNDS[name], warmup_rounds=5)
    assert result[:2] == (250, 0)
