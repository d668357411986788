"""Weighted selection on both backends: SplitMix64, AliasTable, SmoothWeighted and Router.

Reference values are computed here by small independent implementations written from the
contract in python/logdist/_wlb.pyi, and a few are pinned as literals so that a change of
algorithm in both backends at once still fails.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from types import ModuleType

import pytest

from logdist.errors import NoTargetError, WeightError

M64 = 2**64


def ref_splitmix(seed: int, count: int) -> list[int]:
    """SplitMix64 written independently (plain % arithmetic) from the published algorithm."""
    state = seed % M64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M64
        out.append(z ^ (z >> 31))
    return out


def ref_alias(weights: list[float]) -> tuple[list[float], list[int]]:
    """Vose's construction exactly as the contract spells it."""
    n = len(weights)
    total = 0.0
    for w in weights:
        total += w
    prob = [0.0] * n
    alias = [0] * n
    largest = max(range(n), key=lambda i: (weights[i], -i))
    scaled = [(weights[i] * n) / total if weights[i] > 0 else 0.0 for i in range(n)]
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    for g in large:
        prob[g], alias[g] = 1.0, g
    for s in small:
        prob[s], alias[s] = (1.0, s) if weights[s] > 0 else (0.0, largest)
    return prob, alias


def ref_sample(prob: list[float], alias: list[int], u1: float, u2: float) -> int:
    n = len(prob)
    col = min(int(u1 * n), n - 1)
    return col if u2 < prob[col] else alias[col]


# ------------------------------------------------------------------------------ SplitMix64


def test_splitmix_pinned_constants(impl: ModuleType) -> None:
    rng = impl.SplitMix64(0)
    assert [rng.next_u64() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    rng = impl.SplitMix64(0x0123456789ABCDEF)
    assert [rng.next_u64() for _ in range(2)] == [0x157A3807A48FAA9D, 0xD573529B34A1D093]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63, M64 - 1, 0xDEADBEEF])
def test_splitmix_matches_reference(impl: ModuleType, seed: int) -> None:
    rng = impl.SplitMix64(seed)
    assert [rng.next_u64() for _ in range(100)] == ref_splitmix(seed, 100)


def test_splitmix_f64_is_top_53_bits(impl: ModuleType) -> None:
    a, b = impl.SplitMix64(99), impl.SplitMix64(99)
    for _ in range(1000):
        f = a.next_f64()
        assert f == (b.next_u64() >> 11) * 2.0**-53
        assert 0.0 <= f < 1.0


@pytest.mark.parametrize("seed", [-1, -(2**63), M64 + 5, 3 * M64 + 7])
def test_splitmix_seed_is_taken_mod_2_64(impl: ModuleType, seed: int) -> None:
    a, b = impl.SplitMix64(seed), impl.SplitMix64(seed % M64)
    assert [a.next_u64() for _ in range(5)] == [b.next_u64() for _ in range(5)]


# ------------------------------------------------------------------------------ AliasTable


@pytest.mark.parametrize(
    "weights",
    [
        [],
        [-1.0],
        [1.0, -0.5],
        [1.0, math.nan],
        [math.inf, 1.0],
        [1.0, -math.inf],
        [0.0],
        [0.0, 0.0, 0.0],
        [1.7e308, 1.7e308],  # each finite, the sum overflows
    ],
)
def test_alias_rejects_bad_weights(impl: ModuleType, weights: list[float]) -> None:
    with pytest.raises(WeightError) as exc:
        impl.AliasTable(weights)
    assert isinstance(exc.value, ValueError)
    assert str(exc.value)


@pytest.mark.parametrize(
    "weights",
    [[1.0], [5.0, 3.0, 2.0], [0.0, 1.0, 0.0, 3.0], [0.1] * 10, [1e-300, 1.0, 1e300], [7, 0, 7, 0, 1], [0.3, 0.3, 0.4]],
)
def test_alias_tables_match_reference(impl: ModuleType, weights: list[float]) -> None:
    table = impl.AliasTable(weights)
    prob, alias = ref_alias([float(w) for w in weights])
    assert len(table) == len(weights)
    assert table.prob == prob
    assert table.alias == alias


def test_alias_zero_weight_columns_give_their_mass_away_exactly(impl: ModuleType) -> None:
    weights = [0.0, 2.0, 5.0, 5.0, 0.0]
    table = impl.AliasTable(weights)
    assert table.prob[0] == 0.0 and table.prob[4] == 0.0
    assert table.alias[0] == 2 and table.alias[4] == 3
    mass = [0.0] * 5
    for col, (p, a) in enumerate(zip(table.prob, table.alias, strict=True)):
        mass[col] += p
        mass[a] += 1.0 - p
    expected = [5 * w / 12 for w in weights]
    assert mass[0] == 0.0 and mass[4] == 0.0
    assert all(math.isclose(m, e, abs_tol=1e-12) for m, e in zip(mass, expected, strict=True))


def test_alias_identical_picks_from_identical_uniforms(rs: ModuleType, py: ModuleType) -> None:
    weights = [3.0, 0.0, 1.5, 7.25, 0.001, 2.0]
    a, b = rs.AliasTable(weights), py.AliasTable(weights)
    prob, alias = ref_alias(weights)
    rnd = random.Random(1234)
    edge = [0.0, 0.5, 1.0 - 2.0**-53, 2.0**-53]
    pairs = [(u1, u2) for u1 in edge for u2 in edge] + [(rnd.random(), rnd.random()) for _ in range(20_000)]
    for u1, u2 in pairs:
        expected = ref_sample(prob, alias, u1, u2)
        assert a.sample(u1, u2) == expected
        assert b.sample(u1, u2) == expected


@pytest.mark.parametrize("u", [1.0, -0.0001, 1.5, math.nan, math.inf, -math.inf])
def test_alias_sample_rejects_uniforms_outside_unit_interval(impl: ModuleType, u: float) -> None:
    table = impl.AliasTable([1.0, 2.0])
    with pytest.raises(ValueError):
        table.sample(u, 0.5)
    with pytest.raises(ValueError):
        table.sample(0.5, u)


def test_alias_fixed_seed_is_stable(impl: ModuleType) -> None:
    picks = impl.AliasTable([5.0, 3.0, 2.0]).sample_many(24, 42)
    assert picks == [2, 0, 0, 0, 1, 0, 1, 1, 0, 0, 2, 1, 0, 0, 0, 0, 1, 1, 0, 2, 1, 0, 2, 0]


def test_alias_sample_many_is_two_draws_per_pick(impl: ModuleType) -> None:
    weights = [1.0, 4.0, 0.0, 2.5]
    table = impl.AliasTable(weights)
    rng = impl.SplitMix64(77)
    expected = []
    for _ in range(500):
        u1 = rng.next_f64()
        u2 = rng.next_f64()
        expected.append(table.sample(u1, u2))
    assert table.sample_many(500, 77) == expected
    assert table.sample_many(0, 77) == []


def test_alias_histogram_counts_the_same_draws(impl: ModuleType) -> None:
    table = impl.AliasTable([1.0, 0.0, 2.0, 3.0])
    picks = table.sample_many(5000, 5)
    counts = Counter(picks)
    assert table.histogram(5000, 5) == [counts.get(i, 0) for i in range(4)]
    assert counts.get(1, 0) == 0


def test_alias_cross_backend_batches_identical(rs: ModuleType, py: ModuleType) -> None:
    weights = [0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0]
    for seed in (0, 1, 2**64 - 1, -3):
        assert rs.AliasTable(weights).sample_many(2000, seed) == py.AliasTable(weights).sample_many(2000, seed)
        assert rs.AliasTable(weights).histogram(2000, seed) == py.AliasTable(weights).histogram(2000, seed)


STAT_PICKS = 1_000_000
# Binomial standard deviation of a share p over 1e6 picks is at most 0.0005; 0.003 is 6 sigma.
STAT_TOLERANCE = 0.003


def test_alias_statistical_shares_over_a_million_picks(impl: ModuleType) -> None:
    weights = [5.0, 3.0, 1.5, 0.5, 0.0]
    hist = impl.AliasTable(weights).histogram(STAT_PICKS, 2024)
    assert sum(hist) == STAT_PICKS
    total = sum(weights)
    for w, h in zip(weights, hist, strict=True):
        assert abs(h / STAT_PICKS - w / total) < STAT_TOLERANCE, (weights, hist)
    assert hist[-1] == 0


# -------------------------------------------------------------------------- SmoothWeighted


def test_swrr_nginx_sequence(impl: ModuleType) -> None:
    # the sequence documented for nginx's smooth weighted round robin with {a:5, b:1, c:1}
    assert impl.SmoothWeighted([5, 1, 1]).next_many(7) == [0, 0, 1, 0, 2, 0, 0]


@pytest.mark.parametrize("weights", [[1], [3, 1, 0, 2, 7], [0, 4, 4], [1, 1, 1, 1], [10, 1], [2, 3, 5, 7, 11]])
def test_swrr_every_window_is_exact(impl: ModuleType, weights: list[int]) -> None:
    total = sum(weights)
    sw = impl.SmoothWeighted(weights)
    assert len(sw) == len(weights)
    seq = [sw.next() for _ in range(total)] + sw.next_many(4 * total)
    for start in range(len(seq) - total + 1):
        counts = Counter(seq[start : start + total])
        assert [counts.get(i, 0) for i in range(len(weights))] == weights, start


@pytest.mark.parametrize("weights", [[], [0], [0, 0], [1, -1], [-3]])
def test_swrr_rejects_bad_weights(impl: ModuleType, weights: list[int]) -> None:
    with pytest.raises(WeightError):
        impl.SmoothWeighted(weights)


def test_swrr_cross_backend_identical(rs: ModuleType, py: ModuleType) -> None:
    rnd = random.Random(9)
    for _ in range(50):
        weights = [rnd.randint(0, 20) for _ in range(rnd.randint(1, 8))]
        if not any(weights):
            weights[0] = 1
        assert rs.SmoothWeighted(weights).next_many(300) == py.SmoothWeighted(weights).next_many(300)


# ---------------------------------------------------------------------------------- Router


def make_router(impl: ModuleType, targets: dict[str, float], strategy: str = "alias", seed: int = 0):  # type: ignore[no-untyped-def]
    router = impl.Router(strategy, seed)
    for name, weight in targets.items():
        router.set_target(name, weight)
    return router


def test_router_rejects_unknown_strategy(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.Router("random")
    assert impl.Router().strategy == "alias"
    assert impl.Router("swrr", 5).strategy == "swrr"


def test_router_fixed_seed_is_stable(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1, "b": 2, "c": 3}, seed=7)
    expected = ["b", "c", "b", "b", "a", "c", "c", "c", "c", "b", "c", "b", "c", "a", "c", "c"]
    assert router.pick_many(16) == expected


def test_router_alias_picks_are_alias_table_picks_over_candidates(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1.0, "b": 0.0, "c": 2.5, "d": 4.0, "e": 0.5}, seed=11)
    router.set_eligible("d", False)
    names = ["a", "c", "e"]  # candidates in insertion order: eligible, weight > 0
    expected = [names[i] for i in impl.AliasTable([1.0, 2.5, 0.5]).sample_many(3000, 11)]
    assert router.pick_many(3000) == expected


def test_router_pick_many_zero_is_zero_picks(impl: ModuleType) -> None:
    # `count` calls of pick(): none at all, so no NoTargetError even with no candidate
    assert impl.Router().pick_many(0) == []
    with pytest.raises(ValueError):
        impl.Router().pick_many(-1)


def test_argument_types(impl: ModuleType) -> None:
    for bad in ("1", b"1", None):
        with pytest.raises(TypeError):
            impl.AliasTable([bad, 1.0])
        with pytest.raises(TypeError):
            impl.Router().set_target("a", bad)
    for bad_int in (1.5, "1", None):
        with pytest.raises(TypeError):
            impl.SmoothWeighted([bad_int, 1])
        with pytest.raises(TypeError):
            impl.SplitMix64(bad_int)
    with pytest.raises(OverflowError):
        impl.SmoothWeighted([2**64, 1])
    assert impl.AliasTable([1, 3]).prob == [0.5, 1.0]  # ints are weights too
    assert impl.SmoothWeighted([True, 1]).next_many(2) == [0, 1]


def test_router_pick_equals_pick_many(impl: ModuleType) -> None:
    a = make_router(impl, {"x": 3, "y": 1, "z": 2}, seed=5)
    b = make_router(impl, {"x": 3, "y": 1, "z": 2}, seed=5)
    assert [a.pick() for _ in range(1000)] == b.pick_many(1000)
    assert a.pick_many(0) == []


def test_router_renormalises_when_a_target_is_ineligible(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1, "b": 1, "c": 2}, seed=3)
    router.set_eligible("c", False)
    counts = Counter(router.pick_many(200_000))
    assert counts["c"] == 0
    assert abs(counts["a"] / 200_000 - 0.5) < 0.01
    assert router.shares() == {"a": 0.5, "b": 0.5, "c": 0.0}
    router.set_eligible("c", True)
    counts = Counter(router.pick_many(200_000))
    assert abs(counts["c"] / 200_000 - 0.5) < 0.01
    assert router.shares() == {"a": 0.25, "b": 0.25, "c": 0.5}


def test_router_exclusion(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1, "b": 1, "c": 1}, seed=1)
    for _ in range(300):
        assert router.pick(exclude={"a"}) != "a"
        assert router.pick(exclude=["a", "b"]) == "c"
        assert router.pick(exclude=("zzz",)) in {"a", "b", "c"}
    with pytest.raises(NoTargetError):
        router.pick(exclude={"a", "b", "c"})


def test_router_exclusion_draws_like_a_table_over_the_rest(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, seed=21)
    expected = [["a", "c"][i] for i in impl.AliasTable([1.0, 3.0]).sample_many(200, 21)]
    assert [router.pick(exclude={"b", "d"}) for _ in range(200)] == expected


def test_router_no_target_is_catchable_and_consumes_no_draw(impl: ModuleType) -> None:
    router = impl.Router(seed=8)
    with pytest.raises(NoTargetError) as exc:
        router.pick()
    assert isinstance(exc.value, LookupError)
    router.set_target("a", 0.0)
    with pytest.raises(NoTargetError):
        router.pick_many(10)
    router.set_target("b", 1.0)
    router.set_eligible("b", False)
    with pytest.raises(NoTargetError):
        router.pick()
    with pytest.raises(NoTargetError):
        router.pick(exclude={"a"})
    # nothing was drawn: the picks now are those of a fresh router with the same seed
    router.set_eligible("b", True)
    router.set_target("a", 1.0)
    fresh = make_router(impl, {"a": 1.0, "b": 1.0}, seed=8)
    assert router.pick_many(100) == fresh.pick_many(100)


def test_router_weight_change_takes_effect_on_next_pick(impl: ModuleType) -> None:
    for strategy in ("alias", "swrr"):
        router = make_router(impl, {"a": 1, "b": 1}, strategy=strategy)
        router.pick_many(10)
        router.set_target("a", 0.0)
        assert set(router.pick_many(100)) == {"b"}
        router.set_target("a", 1000.0)
        router.set_target("b", 0.0)
        assert router.pick() == "a"
        router.remove_target("a")
        assert "a" not in router
        with pytest.raises(NoTargetError):
            router.pick()


def test_router_bad_arguments(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1})
    for bad in (math.nan, math.inf, -math.inf, -1.0):
        with pytest.raises(WeightError):
            router.set_target("a", bad)
        with pytest.raises(WeightError):
            router.set_target("new", bad)
    assert router.snapshot() == [("a", 1.0, True)]
    with pytest.raises(KeyError):
        router.remove_target("nope")
    with pytest.raises(KeyError):
        router.set_eligible("nope", True)


def test_router_snapshot_and_shares(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 1.0, "b": 3.0, "c": 0.0, "d": 4.0})
    assert len(router) == 4 and "b" in router and "x" not in router and 5 not in router
    router.set_eligible("d", False)
    router.set_target("a", 2.0)  # keeps its position and flag
    assert router.snapshot() == [("a", 2.0, True), ("b", 3.0, True), ("c", 0.0, True), ("d", 4.0, False)]
    assert router.shares() == {"a": 0.4, "b": 0.6, "c": 0.0, "d": 0.0}
    for name in ("a", "b", "c"):
        router.set_eligible(name, False)
    assert router.shares() == {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert impl.Router().shares() == {}


def test_router_swrr_windows_are_exact(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 0.5, "b": 0.25, "c": 0.25, "z": 0.0}, strategy="swrr")
    # integer weights 500000, 250000, 250000 over gcd 250000: 2, 1, 1, so W = 4
    seq = router.pick_many(40)
    sw = impl.SmoothWeighted([2, 1, 1]).next_many(40)
    assert seq == [["a", "b", "c"][i] for i in sw]
    for start in range(len(seq) - 3):
        assert Counter(seq[start : start + 4]) == Counter({"a": 2, "b": 1, "c": 1})


def test_router_swrr_tiny_weights_still_count(impl: ModuleType) -> None:
    # max(1, floor(w * 1e6 + 0.5)): 1e-9 becomes 1, so it is picked once per window
    router = make_router(impl, {"big": 3e-6, "tiny": 1e-9}, strategy="swrr")
    seq = router.pick_many(8)
    assert Counter(seq) == Counter({"big": 6, "tiny": 2})
    assert seq == [["big", "tiny"][i] for i in impl.SmoothWeighted([3, 1]).next_many(8)]


def test_router_swrr_change_resets_and_exclusion_does_not(impl: ModuleType) -> None:
    router = make_router(impl, {"a": 3, "b": 2, "c": 1}, strategy="swrr")
    router.pick_many(4)  # mid-window
    router.set_eligible("c", False)  # resets every current: windows of 5 are exact again
    seq = router.pick_many(10)
    assert seq == [["a", "b"][i] for i in impl.SmoothWeighted([3, 2]).next_many(10)]
    router.set_eligible("c", True)
    # exclusion runs the step over the remaining candidates without a reset
    twin = impl.SmoothWeighted([3, 2])
    assert [router.pick(exclude={"c"}) for _ in range(10)] == [["a", "b"][i] for i in twin.next_many(10)]


def random_router_script(seed: int) -> list[tuple[str, object]]:
    rnd = random.Random(seed)
    names = ["n0", "n1", "n2", "n3", "n4"]
    ops: list[tuple[str, object]] = []
    for _ in range(200):
        r = rnd.random()
        name = rnd.choice(names)
        if r < 0.25:
            ops.append(("set", (name, rnd.choice([0.0, 0.5, 1.0, 2.0, rnd.uniform(0, 10)]))))
        elif r < 0.35:
            ops.append(("eligible", (name, rnd.random() < 0.6)))
        elif r < 0.4:
            ops.append(("remove", name))
        elif r < 0.6:
            ops.append(("exclude", frozenset(rnd.sample(names, rnd.randint(0, 3)))))
        else:
            ops.append(("many", rnd.randint(1, 40)))
    return ops


def run_router_script(impl: ModuleType, strategy: str, ops: list[tuple[str, object]]) -> list[object]:
    router = impl.Router(strategy, 99)
    out: list[object] = []
    for op, arg in ops:
        try:
            if op == "set":
                router.set_target(*arg)  # type: ignore[misc]
            elif op == "eligible":
                router.set_eligible(*arg)  # type: ignore[misc]
            elif op == "remove":
                router.remove_target(arg)
            elif op == "exclude":
                out.append(router.pick(exclude=arg))
            else:
                out.append(router.pick_many(arg))
        except (KeyError, NoTargetError) as exc:
            out.append(type(exc).__name__)
        out.append(router.shares())
    out.append(router.snapshot())
    return out


@pytest.mark.parametrize("strategy", ["alias", "swrr"])
@pytest.mark.parametrize("seed", range(6))
def test_router_cross_backend_random_script(rs: ModuleType, py: ModuleType, strategy: str, seed: int) -> None:
    ops = random_router_script(seed)
    assert run_router_script(rs, strategy, ops) == run_router_script(py, strategy, ops)


def test_versions_agree(rs: ModuleType, py: ModuleType) -> None:
    import logdist

    assert rs.__version__ == py.__version__ == logdist.__version__


def test_backends_export_the_same_names(rs: ModuleType, py: ModuleType) -> None:
    assert sorted(rs.__all__) == sorted(py.__all__)
    for name in rs.__all__:
        assert hasattr(py, name), name
