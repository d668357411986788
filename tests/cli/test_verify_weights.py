"""`logdist verify-weights --check` judges shares with the binomial interval of each count, not a
fixed 1 point: a correct distributor passes at 800 messages, a wrong distribution is flagged.

The statistics are checked against brute force and known values; the false-alarm rate against
a seeded simulation of random routing."""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from logdist.tools import cluster
from logdist.tools.cluster import binomial_interval, chi_square, gamma_q
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = (0.4, 0.3, 0.2, 0.1)


def logdist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logdist", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


# --- the statistics ----------------------------------------------------------------------------


def _brute_interval(n: int, p: float, tail: float) -> tuple[int, int]:
    pmf = [math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(n + 1)]
    lo = next(x for x in range(n + 1) if sum(pmf[: x + 1]) > tail)
    hi = next(x for x in range(n, -1, -1) if sum(pmf[x:]) > tail)
    return lo, hi


@pytest.mark.parametrize(("n", "p"), [(800, 0.4), (800, 0.1), (50, 0.3), (1000, 0.001), (1, 0.5)])
def test_binomial_interval_is_the_exact_one(n: int, p: float) -> None:
    assert binomial_interval(n, p, 0.001 / 8) == _brute_interval(n, p, 0.001 / 8)


def test_binomial_interval_edges() -> None:
    assert binomial_interval(0, 0.4, 0.001) == (0, 0)
    assert binomial_interval(500, 0.0, 0.001) == (0, 0)
    assert binomial_interval(500, 1.0, 0.001) == (500, 500)


def test_chi_square_p_values_match_the_tables() -> None:
    # upper tail of chi-square with 3 df: 0.3916 at 3.0, 0.001 at 16.266 (tables)
    assert gamma_q(1.5, 1.5) == pytest.approx(0.39163, abs=1e-5)
    assert gamma_q(1.5, 16.266 / 2) == pytest.approx(0.001, rel=1e-3)
    # Q(5, 3) is P(Poisson(3) <= 4)
    assert gamma_q(5, 3) == pytest.approx(sum(math.exp(-3) * 3**k / math.factorial(k) for k in range(5)), rel=1e-12)
    assert chi_square([320, 240, 160, 80], list(WEIGHTS)) == (0.0, 3, 1.0)


def test_false_alarms_of_random_routing_at_800_are_rare() -> None:
    """2000 seeded runs of random routing of 800 messages: the check flags about 1 in 1000
    (alpha 0.001); the old fixed 1 point flagged most."""
    rng = random.Random(15)
    bounds = [binomial_interval(800, w, 0.001 / 8) for w in WEIGHTS]
    flagged = fixed = 0
    for _ in range(2000):
        counts = [0] * 4
        for i in rng.choices(range(4), WEIGHTS, k=800):
            counts[i] += 1
        flagged += not all(lo <= c <= hi for c, (lo, hi) in zip(counts, bounds, strict=True))
        fixed += any(abs(c / 800 - w) > 0.01 for c, w in zip(counts, WEIGHTS, strict=True))
    assert flagged <= 6  # expected <= 2 of 2000; 6 or more has probability < 0.5%
    assert fixed > 1500


# --- against a real distributor ----------------------------------------------------------------


@pytest.fixture
def seeded_cluster(spawn, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A distributor routing at random (alias) with a fixed seed, over 4 analyzers 0.4/0.3/0.2/0.1."""
    analyzers = [
        spawn("analyzer", "--id", f"a{i + 1}", "--port", "{port}", "--weight", str(w), wait=False)
        for i, w in enumerate(WEIGHTS)
    ]
    for a in analyzers:
        a.wait_healthy()
    cfg = tmp_path / "distributor.json"
    specs = [
        {"id": f"a{i + 1}", "weight": w, "endpoint": f"{a.url}/analyze", "timeout": 5000, "retry_count": 3}
        for i, (a, w) in enumerate(zip(analyzers, WEIGHTS, strict=True))
    ]
    cfg.write_bytes(orjson.dumps({"analyzers": specs, "seed": 20261201, "strategy": "alias"}))
    d = spawn("distributor", "--config", str(cfg), "--port", "{port}", "--state-dir", str(tmp_path / "s"))
    return d, analyzers


def _send(d: Any, analyzers: list[Any], count: int, total: int) -> None:
    r = logdist("generate", "--url", d.url, "--count", str(count), "--rate", "0", "-q", "--batch", "50")
    assert r.returncode == 0, r.stderr

    def done() -> bool:
        return sum(cluster.get(a.url + "/processed").doc["processed_count"] for a in analyzers) == total

    wait_until(done, what=f"{total} processed")


@pytest.mark.slow
def test_800_messages_ok_then_a_wrong_distribution_is_off(seeded_cluster) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = seeded_cluster
    _send(d, analyzers, 800, 800)
    r = logdist("verify-weights", "--url", d.url, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: OK" in r.stdout
    assert "99.975%" in r.stdout and "99.9% for all 4 together" in r.stdout  # the rule is printed
    assert re.search(r"a4 .* 6\.\d% - 14\.\d% ", r.stdout), r.stdout  # and each interval
    res = orjson.loads(logdist("verify-weights", "--url", d.url, "--json").stdout)
    assert res["total_processed"] == 800 and res["method"] == "binomial"
    for row, w in zip(res["analyzers"], WEIGHTS, strict=True):
        lo, hi = row["interval"]
        assert (lo, hi) == binomial_interval(800, w, 0.001 / 8)
        assert lo <= row["processed"] <= hi and row["ok"]

    # the distributor's weights against other expected shares: flagged
    flat = [f"--expect=a{i}=1" for i in range(1, 5)]
    r = logdist("verify-weights", "--url", d.url, "--check", *flat)
    assert r.returncode == 1, r.stdout
    assert "verdict: OFF (outside the interval: a1" in r.stdout

    # a1 disabled mid-run: its share goes elsewhere, and the check says so
    assert cluster.post(analyzers[0].url + "/disable").status == 200
    _send(d, analyzers, 800, 1600)
    r = logdist("verify-weights", "--url", d.url, "--check")
    assert r.returncode == 1, r.stdout
    assert "verdict: OFF (outside the interval: a1" in r.stdout


def test_bad_expect_and_alpha_are_config_errors(seeded_cluster) -> None:  # type: ignore[no-untyped-def]
    d, _ = seeded_cluster
    for args in (["--expect", "a9=1"], ["--expect", "a1=x"], ["--alpha", "0"]):
        r = logdist("verify-weights", "--url", d.url, *args)
        assert r.returncode != 0
        assert "error" in r.stderr.lower() or "expect" in r.stderr or "alpha" in r.stderr, r.stderr
