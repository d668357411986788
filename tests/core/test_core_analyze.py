"""BatchAnalyzer (the analyzer's dedup window and tallies) on both backends and across them.

The Rust backend scans the body itself; the twin reads it with orjson. The property tests
build bodies from raw JSON fragments (escaped strings, number spellings, repeated keys, every
body shape) so that both readers see exactly the same bytes, and compare every batch result.
"""

from __future__ import annotations

import json
import random
from types import ModuleType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logdist.errors import PacketError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(mod: ModuleType, bodies: list[bytes], capacity: int = 1000, record: bool = True) -> list[Any]:
    """Each body's result (or error code and detail) and the window's size after it."""
    a = mod.BatchAnalyzer(capacity, record)
    out: list[Any] = []
    for body in bodies:
        try:
            out.append(a.ingest(body))
        except PacketError as exc:
            out.append((exc.code, exc.detail if exc.code != "bad_json" else ""))
        out.append(len(a))
    return out


def typed(results: list[Any]) -> list[Any]:
    """The results with the type of every fresh id beside it (1 == 1.0 hides int vs float)."""
    out = []
    for r in results:
        if isinstance(r, tuple) and len(r) == 5 and r[4] is not None:
            r = (*r[:4], [(type(i).__name__, i) for i in r[4]])
        out.append(r)
    return out


# ------------------------------------------------------------------ fixed behaviour, each backend


def test_counts_dedup_and_tallies(impl: ModuleType) -> None:
    a = impl.BatchAnalyzer(1000, True)
    body = orjson.dumps(
        [
            {"id": 1, "level": "INFO", "source": "a"},
            {"id": 2, "level": "ERROR", "source": "b"},
            {"id": 1, "level": "X", "source": "x"},  # in-batch repeat
            {"level": "INFO"},  # no id: always counted
            {"id": None, "level": "INFO"},
        ]
    )
    assert a.ingest(body) == (4, 1, [("INFO", 3), ("ERROR", 1)], [("a", 1), ("b", 1), (None, 2)], [1, 2])
    # 1.0 and 1e0 are the id 1; "1" is another id; -0.0 is 0
    r = a.ingest(b'[{"id":1.0},{"id":1e0},{"id":"1"},{"id":0.5},{"id":-0.0},{"id":0}]')
    assert r[:2] == (3, 3)
    assert [(type(i), i) for i in r[4]] == [(str, "1"), (float, 0.5), (float, -0.0)]
    assert len(a) == 5
    assert 1 in a and 1.0 in a and "1" in a and 0 in a
    assert True not in a  # a bool is never an id
    assert [] not in a


def test_empty_and_shapes(impl: ModuleType) -> None:
    a = impl.BatchAnalyzer(100, False)
    assert a.ingest(b"[]") == (0, 0, [], [], None)
    assert impl.BatchAnalyzer(100, True).ingest(b"[]") == (0, 0, [], [], [])
    assert a.ingest(b'{"id":"solo"}')[:2] == (1, 0)
    assert a.ingest(b'{"messages":[{}],"log_messages":[{},{},{}]}')[:2] == (3, 0)
    assert a.ingest(b'{"log_messages":null,"messages":[{},{}]}')[:2] == (2, 0)
    assert a.ingest(b'{"messages":"x","messages":[{}]}')[:2] == (1, 0)  # the last repeated key wins
    assert a.ingest(b'{"id":"n1"}\n\n[{"id":"n2"},{}]\r\n{"messages":[{"id":"n1"}]}\r{}\n')[:2] == (4, 1)


def test_bool_ids_are_rejected(impl: ModuleType) -> None:
    a = impl.BatchAnalyzer(100)
    with pytest.raises(PacketError) as ei:
        a.ingest(b'[{"id":1},{"id":true}]')
    assert (ei.value.code, ei.value.detail) == ("bad_schema", "message 1: 'id' must be a string or number")
    assert len(a) == 0


def test_arguments(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.BatchAnalyzer(1)
    a = impl.BatchAnalyzer(11)
    assert (a.capacity, a.record_ids) == (11, False)
    assert impl.BatchAnalyzer().capacity == 1_000_000
    with pytest.raises(TypeError):
        a.ingest("[]")
    with pytest.raises(TypeError):  # bytes only: a bytearray could change under the reader
        a.ingest(bytearray(b"[]"))


def test_membership_takes_exact_json_types(impl: ModuleType) -> None:
    class Text(str):
        pass

    a = impl.BatchAnalyzer(100)
    a.ingest(b'[{"id":"x"},{"id":7},{"id":1.5}]')
    assert "x" in a and 7 in a and 7.0 in a and 1.5 in a
    assert Text("x") not in a  # a subclass may compare differently: never an id
    assert True not in a and None not in a and b"x" not in a
    assert "\ud800" not in a  # a lone surrogate is no JSON string


def test_generation_rollover(impl: ModuleType) -> None:
    """capacity 10: current rolls over to previous right after its 5th id."""
    a = impl.BatchAnalyzer(10)

    def batch(ids: range | list[int]) -> tuple[int, int]:
        r = a.ingest(orjson.dumps([{"id": i} for i in ids]))
        return r[0], r[1]

    assert batch(range(5)) == (5, 0)
    assert len(a) == 5  # all in previous now
    assert batch(range(3, 9)) == (4, 2)
    assert len(a) == 9
    assert batch([9]) == (1, 0)  # 5..9 roll over; 0..4 are forgotten
    assert len(a) == 5
    assert 4 not in a and 5 in a and 9 in a
    assert batch([0, 5]) == (1, 1)
    # a rollover in the middle of a batch forgets the old generation for the rest of it
    a = impl.BatchAnalyzer(4)
    assert batch([1, 2]) == (2, 0)  # -> previous {1, 2}
    assert batch([3, 4, 1]) == (3, 0)  # 3, 4 roll over and drop {1, 2}: 1 is fresh again
    assert 1 in a and 2 not in a


def test_window_stays_bounded(impl: ModuleType) -> None:
    a = impl.BatchAnalyzer(100)
    rng = random.Random(5)
    for k in range(60):
        ids = [rng.randrange(400) for _ in range(rng.randrange(1, 90))]
        a.ingest(orjson.dumps([{"id": f"i{i}"} for i in ids]))
        assert len(a) <= 100
        if k > 10:
            assert len(a) >= 50


def test_rejected_body_changes_nothing(impl: ModuleType) -> None:
    a = impl.BatchAnalyzer(100)
    for body in (b'[{"id":"a"},{"id":"b","level":{}}]', b'[{"id":"a"},"x"]', b'[{"id":"a"},{"id":[1]}]'):
        with pytest.raises(PacketError):
            a.ingest(body)
    assert len(a) == 0
    assert a.ingest(b'[{"id":"a"}]')[:2] == (1, 0)


# ------------------------------------------------------------------ the two backends agree

ERROR_CORPUS = [
    b"",
    b"   ",
    b"\n",
    b"not json",
    b'{"a": ',
    b"[1] [2]",
    b"[1]\n[",
    b"[1,]",
    b"\xef\xbb\xbf[]",
    b"\xff",
    b'["\xff"]\n[]',
    b'[{"id":"\\ud800"}]',
    b'[{"x":"\\udc00\\ud800"}]',
    b'[{"x":"\\ud800\\u0041"}]',
    b'[{"x":1e400}]',
    b'[{"x":-1e999}]',
    b"[" + b"1" * 400 + b"]",
    b'[{"x":"a\x01"}]',
    b"[" * 1025 + b"]" * 1025,
    b"[{}" + b',{"a":' * 1023 + b"1" + b"}" * 1023 + b"]",
    b'[{"a":' * 1 + b"[" * 1023 + b"]" * 1023 + b"}]",
    b"42",
    b"-0.5",
    b"1e300",
    b"18446744073709551616",
    b'"text"',
    b"true",
    b"null",
    b"[1, 2]",
    b'[{"id": "ok"}, "str"]',
    b'[{"id": ["list"]}]',
    b'[{"id": {"a": 1}}]',
    b'[{"id": false}, 3]',
    b'[{"id": "x", "level": {"a": 1}}]',
    b'[{"id": "x", "source": [1]}]',
    b'[{"id": "x", "level": 1}]',
    b'[{"id": "x", "source": true}]',
    b'[{"level": 1, "id": []}]',
    b'{"messages": "nope"}',
    b'{"log_messages": {"a": 1}}',
    b'{"log_messages": 1, "messages": []}',
    b'{"id":1}\n42\n[',
    b'{"id":1}\n[\n42',
    b'{"id":1}\n\x0b\n{"id":2}',
    b'{"id":1}\n \x0b{"id":2}',
    b'{"id":1}\r{"id":2}',
    b'{"id":1}\n{"messages":"x"}\n{"id":[]}',
    b'[{"id":1}]\n{"id":2} {"id":3}',
    b"[{}" + b',{"a":' * 1022 + b"1" + b"}" * 1022 + b"]",
    b"[" * 1024 + b"]" * 1024,
    b'{"\\u006d\\u0065ssages": [{}, {}]}',
    b'[{"\\u0069d": "a", "id": "b"}, {"id": "a"}]',
    b'[{"id": 9007199254740993}, {"id": 9007199254740993.0}, {"id": 9007199254740992}]',
    b'[{"id": 1e-400}, {"id": 0}, {"id": 1E2}, {"id": 100}, {"id": 1.5}, {"id": 15e-1}]',
]


@pytest.mark.parametrize("body", ERROR_CORPUS, ids=range(len(ERROR_CORPUS)))
def test_error_corpus_agrees(rs: ModuleType, py: ModuleType, body: bytes) -> None:
    got_rs, got_py = typed(run(rs, [body])), typed(run(py, [body]))
    assert got_rs == got_py
    # orjson is the reference reader: bodies it takes whole are never bad_json
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    assert got_rs[0][0] != "bad_json"


def test_bad_json_details_say_where(rs: ModuleType, py: ModuleType) -> None:
    for mod in (rs, py):
        with pytest.raises(PacketError) as ei:
            mod.BatchAnalyzer(10).ingest(b'{"id":1}\n[\n')
        assert ei.value.code == "bad_json"
        assert ei.value.detail.startswith("line 2 is not JSON: ")


# fragments of JSON text: (text, is it a legal id)
_STR_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
ID_POOL = st.one_of(
    st.text(_STR_CHARS, max_size=6).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.text(_STR_CHARS, max_size=6).map(lambda s: json.dumps(s, ensure_ascii=True)),
    st.sampled_from(['"a"', '"\\u0061"', '"\\ud83d\\ude00"', '"\U0001f600"', '"\\/"', '"/"', '"1"', '"\\n"']),
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        [
            *("1", "1.0", "1e0", "10E-1", "-0", "-0.0", "0e5", "0.1", "1e-400", "1e308"),
            *("18446744073709551615", "18446744073709551616", "1.8446744073709552e19", "-9223372036854775808"),
            *("-9223372036854775809", "9007199254740993", "9007199254740993.0", "123456789012345678901234567890"),
        ]
    ),
)
TALLY_POOL = st.one_of(
    st.sampled_from(['"INFO"', '"ERROR"', '"\\u0049NFO"', '"warn"', '"é"', '"\\u00e9"', "null", '""']),
    st.text(_STR_CHARS, max_size=4).map(json.dumps),
)


@st.composite
def message(draw: st.DrawFn, ids: list[str]) -> str:
    members = []
    if draw(st.integers(0, 9)) > 0:
        members.append(("id", draw(st.sampled_from([*ids, "null"]))))
    if draw(st.booleans()):
        members.append(("level", draw(TALLY_POOL)))
    if draw(st.booleans()):
        members.append(("source", draw(TALLY_POOL)))
    members.append(("message", json.dumps("x" * draw(st.integers(0, 20)))))
    if draw(st.integers(0, 4)) == 0:
        members.append(("metadata", '{"k": [1, {"id": 2}], "level": 3}'))
    if draw(st.integers(0, 6)) == 0 and members:  # a repeated key: the last one counts
        k, _ = draw(st.sampled_from(members))
        members.insert(0, (k, draw(st.sampled_from(['"first"', "7", "null"]))))
    draw(st.randoms()).shuffle(members)
    sep = draw(st.sampled_from([",", ", ", " ,\n\t"]))
    id_key = draw(st.sampled_from(['"id"', '"id"', '"\\u0069d"']))  # an escaped key is the same key
    return "{" + sep.join(f"{id_key if k == 'id' else json.dumps(k)}:{v}" for k, v in members) + "}"


@st.composite
def body(draw: st.DrawFn, ids: list[str]) -> bytes:
    msgs = draw(st.lists(message(ids), max_size=30))
    shape = draw(st.sampled_from(["array", "messages", "log_messages", "both", "ndjson", "one"]))
    arr = "[" + ",".join(msgs) + "]"
    if shape == "array":
        text = arr
    elif shape in ("messages", "log_messages"):
        text = f'{{"packet_id":"p","{shape}":{arr}}}'
    elif shape == "both":
        text = f'{{"messages":[{{}}],"log_messages":{arr},"agent_id":"a"}}'
    elif shape == "one":
        text = msgs[0] if msgs else "{}"
    else:
        nl = draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
        text = nl.join(msgs) + (nl if draw(st.booleans()) else "")
        if len(msgs) == 1:
            text += "\n{}"  # stays NDJSON: not one document
    return text.encode()


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    ids = draw(st.lists(ID_POOL, min_size=1, max_size=25))
    return draw(st.lists(body(ids), min_size=1, max_size=6))


@SETTINGS
@given(bodies=batches(), capacity=st.integers(min_value=2, max_value=40), record=st.booleans())
def test_backends_agree_on_random_batches(
    rs: ModuleType, py: ModuleType, bodies: list[bytes], capacity: int, record: bool
) -> None:
    assert typed(run(rs, bodies, capacity, record)) == typed(run(py, bodies, capacity, record))


@SETTINGS
@given(bodies=batches())
def test_counts_add_up(impl: ModuleType, bodies: list[bytes]) -> None:
    a = impl.BatchAnalyzer(10_000, True)
    for b in bodies:
        try:
            unique, _, levels, sources, fresh = a.ingest(b)
        except PacketError:
            continue
        assert sum(c for _, c in levels) == unique == sum(c for _, c in sources)
        assert len(fresh) <= unique
        assert len(set(map(repr, fresh))) == len(fresh)
