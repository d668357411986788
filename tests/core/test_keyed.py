"""Keyed routing (crates/wlb/src/keyed.rs and its twin logdist/_py/keyed.py): the hash, the
weighted rendezvous pick, its shares and its movement, and route_packet's route_key, on both
backends and compared between them.

Statistical tests use 100,000 fixed keys: the share of a target is a sum of independent
indicator variables, so its standard deviation is at most 0.0016; the stated tolerance of one
point (0.01) is over 6 sigma.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logdist.errors import NoTargetError

WEIGHTS = (("a1", 0.4), ("a2", 0.3), ("a3", 0.2), ("a4", 0.1))
KEYS = [f"key-{i}".encode() for i in range(100_000)]
TOLERANCE = 0.01


def make_router(impl: ModuleType, weights: tuple[tuple[str, float], ...] = WEIGHTS, strategy: str = "alias") -> Any:
    r = impl.Router(strategy, 7)
    for name, w in weights:
        r.set_target(name, w)
    return r


def picks(router: Any, keys: list[bytes] = KEYS) -> list[str]:
    return [router.pick_key(k) for k in keys]


def test_key_hash_fixed_vectors(impl: ModuleType) -> None:
    # FNV-1a 64 of b"" is its offset basis and of b"a" the published 0xaf63dc4c8601ec8c; then mixed
    assert impl.key_hash(b"") == 0xF52A15E9A9B5E89B
    assert impl.key_hash(b"a") == 0x02C0BDBF481420F8
    assert impl.key_hash("trace-\u00e9".encode()) == 0x171B530AC84B8E59


def test_pick_key_is_stable_for_fixed_keys(impl: ModuleType) -> None:
    r = make_router(impl, (("a1", 0.5), ("a2", 0.3), ("a3", 0.2)))
    got = [r.pick_key(f"key-{i}".encode()) for i in range(12)]
    assert got == ["a2", "a2", "a1", "a3", "a3", "a2", "a2", "a2", "a2", "a1", "a2", "a1"]
    # the strategy and the seed play no part, and nothing is drawn
    other = make_router(impl, (("a1", 0.5), ("a2", 0.3), ("a3", 0.2)), strategy="swrr")
    assert [other.pick_key(f"key-{i}".encode()) for i in range(12)] == got


def test_shares_match_the_weights(impl: ModuleType) -> None:
    got = picks(make_router(impl))
    for name, w in WEIGHTS:
        share = got.count(name) / len(got)
        assert abs(share - w) < TOLERANCE, (name, share, w)


def test_a_leaving_target_moves_only_its_own_keys(impl: ModuleType) -> None:
    before = picks(make_router(impl))
    r = make_router(impl)
    r.remove_target("a3")  # weight 0.2
    after = picks(r)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(b == "a3" for b, _ in moved)
    assert abs(len(moved) / len(KEYS) - 0.2) < TOLERANCE
    # a3's keys spread over the others by their weights (0.4 : 0.3 : 0.1 of what moved)
    for name, w in (("a1", 0.4), ("a2", 0.3), ("a4", 0.1)):
        share = sum(1 for _, a in moved if a == name) / len(moved)
        assert abs(share - w / 0.8) < 2 * TOLERANCE, (name, share)


def test_a_weight_change_moves_the_minimum(impl: ModuleType) -> None:
    before = picks(make_router(impl))
    r = make_router(impl)
    r.set_target("a1", 0.3)  # shares 0.4 -> 1/3: the least that can move is 0.4 - 1/3
    after = picks(r)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(b == "a1" for b, _ in moved)  # keys only leave the lighter one
    assert abs(len(moved) / len(KEYS) - (0.4 - 0.3 / 0.9)) < TOLERANCE
    r.set_target("a1", 0.4)  # back: every key is home again
    assert picks(r) == before


def test_an_ineligible_target_lends_its_keys_and_gets_them_back(impl: ModuleType) -> None:
    keys = KEYS[:5000]
    before = picks(make_router(impl), keys)
    r = make_router(impl)
    r.set_eligible("a2", False)
    during = picks(r, keys)
    assert "a2" not in during
    assert all(d == b for b, d in zip(before, during, strict=True) if b != "a2")
    r.set_eligible("a2", True)
    assert picks(r, keys) == before


def test_exclusion_gives_the_next_target_in_the_key_order(impl: ModuleType) -> None:
    r = make_router(impl)
    for k in KEYS[:2000]:
        first = r.pick_key(k)
        second = r.pick_key(k, exclude=[first])
        assert second != first
        # the same as when the first one leaves
        gone = make_router(impl, tuple(t for t in WEIGHTS if t[0] != first))
        assert gone.pick_key(k) == second
    with pytest.raises(NoTargetError):
        r.pick_key(b"k", exclude=[n for n, _ in WEIGHTS])


# ----------------------------------------------------------------------------- route_packet


def route(impl: ModuleType, body: bytes, route_key: str, **kw: Any) -> Any:
    return impl.route_packet(body, make_router(impl), fallback_prefix="f/", route_key=route_key, **kw)


def msgs(*items: dict[str, Any]) -> bytes:
    return json.dumps({"emitter_id": "e", "packet_id": 9, "messages": list(items)}).encode()


def target_of(rp: Any, needle: bytes) -> str:
    (name,) = [t for t, data in rp.batches.items() if needle in data]
    return name


def test_a_field_key_sends_equal_keys_to_one_analyzer(impl: ModuleType) -> None:
    body = msgs(*({"message": f"m{i}", "source": f"s{i % 5}"} for i in range(200)))
    rp = route(impl, body, "source")
    r = make_router(impl)
    for i in range(200):
        assert target_of(rp, f'"m{i}"'.encode()) == r.pick_key(f"s{i % 5}".encode())
    assert rp.unkeyed == 0


def test_a_nested_key_and_its_kinds(impl: ModuleType) -> None:
    r = make_router(impl)
    body = msgs(
        {"message": "n0", "metadata": {"trace_id": "t-1"}},
        {"message": "n1", "metadata": {"trace_id": 12345}},
        {"message": "n2", "metadata": {"trace_id": 1.50}},
        {"message": "n3", "metadata": {"trace_id": "t-\u00e9"}},
    )
    rp = route(impl, body, "metadata.trace_id")
    assert target_of(rp, b'"n0"') == r.pick_key(b"t-1")
    assert target_of(rp, b'"n1"') == r.pick_key(b"12345")  # a number is its text
    assert target_of(rp, b'"n2"') == r.pick_key(b"1.5")
    assert target_of(rp, b'"n3"') == r.pick_key("t-\u00e9".encode())  # decoded (the body has \\u00e9)
    assert rp.unkeyed == 0


def test_missing_keys_fall_back_to_random_and_are_counted(impl: ModuleType) -> None:
    body = msgs(
        {"message": "a"},
        {"message": "b", "metadata": {}},
        {"message": "c", "metadata": {"trace_id": None}},
        {"message": "d", "metadata": {"trace_id": {"x": 1}}},
        {"message": "e", "metadata": {"trace_id": "ok"}},
    )
    rp = route(impl, body, "metadata.trace_id")
    assert rp.unkeyed == 4
    assert rp.count == 5


def test_message_id_uses_the_id_or_the_one_given(impl: ModuleType) -> None:
    r = make_router(impl)
    body = msgs({"id": "x-1", "message": "a"}, {"id": 77, "message": "b"}, {"message": "c"})
    rp = route(impl, body, "message_id")
    assert target_of(rp, b'"x-1"') == r.pick_key(b"x-1")
    assert target_of(rp, b"77") == r.pick_key(b"77")
    assert target_of(rp, b'"e/9/2"') == r.pick_key(b"e/9/2")
    assert rp.unkeyed == 0
    # the field "id" instead: a message without one has no key
    assert route(impl, body, "id").unkeyed == 1


def test_escapes_and_duplicate_members(impl: ModuleType) -> None:
    r = make_router(impl)
    body = b'[{"message":"a","source":"a\\u0062c"},{"message":"b","source":"x","source":"abc"}]'
    rp = route(impl, body, "source")
    assert rp.counts == {r.pick_key(b"abc"): 2}  # decoded, and the last member wins
    # a lone surrogate (lenient mode only) hashes as surrogatepass writes it, a pair as its code point
    lone = b'[{"message":"a","source":"x\\ud800y"},{"message":"b","source":"\\ud83d\\ude00"}]'
    rp = route(impl, lone, "source", strict=False)
    assert target_of(rp, b'"a"') == r.pick_key("x\ud800y".encode("utf-8", "surrogatepass"))
    assert target_of(rp, b'"b"') == r.pick_key("\U0001f600".encode())


def test_a_bad_route_key_is_an_argument_error(impl: ModuleType) -> None:
    for bad in ("", "metadata.", ".x", "a..b", 3):
        with pytest.raises(ValueError, match="route_key"):
            route(impl, b'[{"message":"a"}]', bad)  # type: ignore[arg-type]


def test_exclusion_moves_keys_to_their_next_target(impl: ModuleType) -> None:
    body = msgs(*({"message": f"m{i}", "id": f"id-{i}"} for i in range(300)))
    rp = route(impl, body, "message_id", exclude=["a1", "nobody"])
    r = make_router(impl)
    assert "a1" not in rp.batches
    for i in range(0, 300, 7):
        assert target_of(rp, f'"id-{i}"'.encode()) == r.pick_key(f"id-{i}".encode(), exclude=["a1"])


# ----------------------------------------------------------------------------- parity

key_values = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.dictionaries(st.sampled_from(["trace_id", "x"]), st.text(max_size=4), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=40))
def test_pick_key_parity(rs: ModuleType, py: ModuleType, keys: list[bytes]) -> None:
    a, b = make_router(rs), make_router(py)
    for k in keys:
        assert rs.key_hash(k) == py.key_hash(k)
        assert a.pick_key(k) == b.pick_key(k)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.tuples(key_values, st.booleans(), st.booleans()), min_size=1, max_size=25),
    route_key=st.sampled_from(["message_id", "id", "source", "metadata.trace_id", "metadata", "random"]),
    ascii_only=st.booleans(),
    exclude=st.sampled_from([None, ["a2"], ["a1", "a4"]]),
)
def test_route_packet_parity(
    rs: ModuleType,
    py: ModuleType,
    values: list[tuple[Any, bool, bool]],
    route_key: str,
    ascii_only: bool,
    exclude: list[str] | None,
) -> None:
    """Both backends route the same messages to the same analyzers, keyed or not."""
    items: list[dict[str, Any]] = []
    for i, (v, with_id, nested) in enumerate(values):
        m: dict[str, Any] = {"message": f"m{i}"}
        if with_id:
            m["id"] = v if isinstance(v, (str, int)) and not isinstance(v, bool) else f"i{i}"
        if isinstance(v, str):
            m["source"] = v
        m["metadata"] = {"trace_id": v} if nested else {"other": v}
        items.append(m)
    body = json.dumps({"emitter_id": "e", "packet_id": "p", "messages": items}, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    )
    out = []
    for impl in (rs, py):
        try:
            rp = route(impl, body, route_key, exclude=exclude, strict=False)
        except Exception as exc:  # both must refuse alike (a lone surrogate is not UTF-8 raw)
            out.append((type(exc).__name__, str(exc)))
        else:
            out.append((rp.batches, rp.counts, rp.unkeyed))
    assert out[0] == out[1]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"message":"a","metadata":{"t":{"u":1,}}}]',
        b'[{"message":"a","metadata":{"t":{"u":1} "x":2}}]',
        b'[{"message":"a","metadata":{"t":{"u":1e999}}}]',
        b'[{"message":"a","metadata":{"t":{"u":"\\udc00"}}}]',
        b'[{"message":"a","metadata":{"t":[[[[1]]]]}}]',
        b'[{"message":"a","metadata":{"t":{"u":{"v":{"w":{}}}}}}]',
        b'[{"message":"a","metadata":{"t":{"u":tru}}}]',
        b'[{"message":"a","metadata":{"t":{"u":"x"}}',
    ],
)
def test_a_route_key_changes_no_verdict(rs: ModuleType, py: ModuleType, body: bytes) -> None:
    """The scanner walks the key's path with the same checks: the same errors, on both backends."""
    got = []
    for impl in (rs, py):
        for key in ("random", "metadata.t.u", "metadata.t"):
            try:
                impl.route_packet(body, make_router(impl), fallback_prefix="f/", route_key=key, max_depth=5)
            except Exception as exc:
                got.append((type(exc).__name__, str(exc)))
            else:
                got.append(("ok", ""))
    assert len(set(got)) == 1, got
