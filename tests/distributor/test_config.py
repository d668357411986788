"""Config loading and validation: both seed shapes accepted, every error names its key, and a
bad file makes `logdist distributor` exit non-zero saying which key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logdist.config import (
    ConfigError,
    DistributorConfig,
    load_distributor_config,
    load_emitter_config,
    parse_analyzer,
    parse_distributor_config,
    parse_emitter_config,
)

ROOT = Path(__file__).resolve().parents[2]

SEED_000 = {
    "port": 8080,
    "analyzers": [
        {"id": "analyzer-1", "weight": 1.0, "endpoint": "http://analyzer-1:8081/analyze", "timeout": 10000,
         "retry_count": 3},
        {"id": "analyzer-2", "weight": 0.5, "endpoint": "http://analyzer-2:8081/analyze", "timeout": 5000,
         "retry_count": 1},
    ],
}  # fmt: skip


def test_seed_000_shape_is_accepted_as_is(tmp_path: Path) -> None:
    p = tmp_path / "docker_config.json"
    p.write_text(json.dumps(SEED_000))
    cfg = load_distributor_config(p)
    assert cfg.port == 8080
    a1, a2 = cfg.analyzers
    assert (a1.id, a1.weight, a1.endpoint, a1.url, a1.timeout_s, a1.retry_count) == (
        "analyzer-1", 1.0, "http://analyzer-1:8081/analyze", "http://analyzer-1:8081", 10.0, 3
    )  # fmt: skip
    assert (a2.timeout_s, a2.retry_count) == (5.0, 1)


def test_seed_003_registration_shape() -> None:
    a = parse_analyzer({"id": "analyzer1", "url": "http://localhost:8081/", "weight": 0.4})
    assert (a.url, a.endpoint, a.weight, a.enabled) == (
        "http://localhost:8081",
        "http://localhost:8081/analyze",
        0.4,
        True,
    )


def test_seed_003_worker_keys_are_accepted() -> None:
    cfg = parse_distributor_config({"port": 8080, "worker_count": 8, "queue_size": 1000, "analyzers": []})
    assert cfg.queue_size == 1000


def test_toml_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text('port = 9000\nstrategy = "swrr"\n[[analyzers]]\nid = "a"\nurl = "http://127.0.0.1:1"\nweight = 2\n')
    cfg = load_distributor_config(p)
    assert cfg.port == 9000 and cfg.strategy == "swrr" and cfg.analyzers[0].weight == 2.0
    assert DistributorConfig().durability == "memory"
    assert cfg.with_overrides(port=1234, queue_size=None).port == 1234


BAD: list[tuple[dict[str, Any], str]] = [
    ({"port": "x"}, "port"),
    ({"port": 70000}, "port"),
    ({"queue_size": 0}, "queue_size"),
    ({"strategy": "random"}, "strategy"),
    ({"durability": "disk"}, "durability"),
    ({"linger_ms": -1}, "linger_ms"),
    ({"bogus": 1}, "bogus"),
    ({"analyzers": {}}, "analyzers"),
    ({"analyzers": [1]}, "analyzers[0]"),
    ({"analyzers": [{"url": "http://a"}]}, "analyzers[0].id"),
    ({"analyzers": [{"id": "a"}]}, "analyzers[0].url"),
    ({"analyzers": [{"id": "a", "url": "ftp://a"}]}, "analyzers[0].url"),
    ({"analyzers": [{"id": "a", "endpoint": "nope"}]}, "analyzers[0].endpoint"),
    ({"analyzers": [{"id": "a", "url": "http://a", "weight": -1}]}, "analyzers[0].weight"),
    ({"analyzers": [{"id": "a", "url": "http://a", "weight": "heavy"}]}, "analyzers[0].weight"),
    ({"analyzers": [{"id": "a", "url": "http://a", "timeout": 0}]}, "analyzers[0].timeout"),
    ({"analyzers": [{"id": "a", "url": "http://a", "retry_count": 0}]}, "analyzers[0].retry_count"),
    ({"analyzers": [{"id": "a", "url": "http://a", "colour": "red"}]}, "analyzers[0].colour"),
    ({"analyzers": [{"id": "a", "url": "http://a"}, {"id": "a", "url": "http://b"}]}, "analyzers[1].id"),
]


@pytest.mark.parametrize(("doc", "key"), BAD, ids=[k for _, k in BAD])
def test_errors_name_the_key(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_distributor_config(doc)
    assert ei.value.key == key
    assert repr(key) in str(ei.value)


def test_emitter_config_seed_000() -> None:
    cfg = parse_emitter_config(
        {"port": 8080, "distributor_urls": ["http://distributor:8080/logs", "http://d2:8080"],
         "log_generation_rate": 10, "max_concurrency": 5, "batch_size": 50, "flush_interval": 1000,
         "emitters_per_distributor": 5}
    )  # fmt: skip
    assert cfg.distributor_urls == ("http://distributor:8080/logs", "http://d2:8080/logs")
    assert cfg.batch_size * cfg.emitters_per_distributor == 250
    with pytest.raises(ConfigError) as ei:
        parse_emitter_config({"batch_size": 0})
    assert ei.value.key == "batch_size"
    with pytest.raises(ConfigError) as ei:
        parse_emitter_config({"distributor_urls": []})
    assert ei.value.key == "distributor_urls"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_distributor_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError):
        load_distributor_config(tmp_path / "bad.json")
    (tmp_path / "e.json").write_text('{"port": -1}')
    with pytest.raises(ConfigError):
        load_emitter_config(tmp_path / "e.json")


@pytest.mark.parametrize(
    ("doc", "key"),
    [({"analyzers": [{"id": "a", "url": "http://a", "weight": -1}]}, "analyzers[0].weight"), ({"port": "x"}, "port")],
)
def test_distributor_exits_nonzero_naming_the_key(tmp_path: Path, doc: dict[str, Any], key: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    r = subprocess.run(
        [sys.executable, "-m", "logdist", "distributor", "--config", str(p), "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode != 0
    assert repr(key) in r.stderr, r.stderr
