"""route_packet on both backends: good packets route losslessly, bad ones get the same verdict.

Every body here is also run through both backends side by side (`outcome`), which must agree
on the verdict (error type and code) and, for accepted bodies, on every output byte.
"""

from __future__ import annotations

import json
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

from logdist.errors import NoTargetError, PacketError

FB = "req-7f3a:1/"  # a fallback prefix as the distributor would make it


def route(impl: ModuleType, body: bytes, targets: dict[str, float] | None = None, seed: int = 1, **kw: Any) -> Any:
    router = None
    if targets is not None:
        router = impl.Router("alias", seed)
        for name, weight in targets.items():
            router.set_target(name, weight)
    kw.setdefault("fallback_prefix", FB)
    return impl.route_packet(body, router, **kw)


def outcome(impl: ModuleType, body: bytes, **kw: Any) -> tuple[Any, ...]:
    """A comparable summary: the error type and code, or every field of the result."""
    try:
        r = route(impl, body, {"a": 1.0, "b": 2.0, "c": 3.0}, **kw)
    except PacketError as exc:
        return ("PacketError", exc.code)
    except (ValueError, TypeError, NoTargetError) as exc:
        return (type(exc).__name__,)
    return ("ok", r.emitter_id, r.packet_id, r.count, r.batches, r.counts)


def code_of(impl: ModuleType, body: bytes, **kw: Any) -> str:
    with pytest.raises(PacketError) as exc:
        route(impl, body, **kw)
    assert exc.value.code in PacketError.CODES
    assert exc.value.detail
    return str(exc.value.code)


def messages_of(batch: bytes) -> list[Any]:
    return list(json.loads(b"[" + batch + b"]"))


SEED000 = (
    b'{"packet_id": "pkt-0001", "agent_id": "emitter-1", "timestamp": "2024-05-01T12:00:00Z",'
    b' "messages": [\n'
    b'  {"id": "m-1", "timestamp": "2024-05-01T12:00:00.123Z", "level": "ERROR", "source": "auth",'
    b' "message": "login failed", "metadata": {"user": "bob", "ip": "10.0.0.1"}},\n'
    b'  {"id": "m-2", "timestamp": "2024-05-01T12:00:00.456Z", "level": "INFO", "source": "api",'
    b' "message": "GET /x 200", "metadata": {}}\n'
    b"]}"
)

SEED003 = (
    b'{"packet_id":"b7c1","agent_id":"agent-9","sent_at":"2024-05-01T12:00:00+02:00",'
    b'"log_messages":[{"id":"x1","timestamp":"2024-05-01T12:00:00+02:00","level":"WARN","source":"db",'
    b'"message":"slow query","metadata":{"ms":1200,"tags":["a","b"]}},'
    b'{"timestamp":1714557600.5,"level":"DEBUG","source":"db","message":"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00"}],'
    b'"metadata":{"region":"eu"}}'
)


def test_seed000_packet(impl: ModuleType) -> None:
    r = route(impl, SEED000)
    assert (r.emitter_id, r.packet_id, r.count) == ("emitter-1", "pkt-0001", 2)
    assert r.counts == {"": 2}
    m1 = SEED000[SEED000.index(b'{"id": "m-1"') : SEED000.index(b"},\n") + 1]
    m2 = SEED000[SEED000.index(b'{"id": "m-2"') : SEED000.rindex(b"}\n") + 1]
    assert r.batches == {"": m1 + b"," + m2}  # the exact original text: ids present, nothing inserted


def test_seed003_packet_with_log_messages(impl: ModuleType) -> None:
    r = route(impl, SEED003)
    assert (r.emitter_id, r.packet_id, r.count) == ("agent-9", "b7c1", 2)
    msgs = messages_of(r.batches[""])
    assert msgs[0]["metadata"] == {"ms": 1200, "tags": ["a", "b"]}
    assert msgs[1]["id"] == "agent-9/b7c1/1"
    assert msgs[1]["message"] == "caf\u00e9 \u00e9 \U0001f600"
    raw2 = SEED003[SEED003.index(b'{"timestamp":1714557600.5') : SEED003.index(b"}],") + 1]
    assert r.batches[""].endswith(b'{"id":"agent-9/b7c1/1",' + raw2[1:])


def test_bare_array_uses_the_fallback_prefix(impl: ModuleType) -> None:
    body = b' [ {"message":"a"} , { "level":"info", "message":"b" },{"id":"keep","message":"c"}] \n'
    r = route(impl, body)
    assert (r.emitter_id, r.packet_id, r.count) == (None, None, 3)
    assert r.batches[""] == (
        b'{"id":"req-7f3a:1/0","message":"a"},{"id":"req-7f3a:1/1", "level":"info", "message":"b" },'
        b'{"id":"keep","message":"c"}'
    )


@pytest.mark.parametrize("fmt", ["ndjson", "auto"])
def test_ndjson(impl: ModuleType, fmt: str) -> None:
    body = b'{"message":"one"}\n\n   \r\n{"message":"two","id":7}\r\n{"source":"s","message":"three"}\n'
    r = route(impl, body, format=fmt)
    assert r.count == 3 and r.emitter_id is None and r.packet_id is None
    assert r.batches[""] == (
        b'{"id":"req-7f3a:1/0","message":"one"},{"message":"two","id":7},{"id":"req-7f3a:1/2","source":"s","message":"three"}'
    )


def test_ndjson_format_rules(impl: ModuleType) -> None:
    assert code_of(impl, b"", format="ndjson") == "empty_packet"
    assert code_of(impl, b"\n \n\t\n", format="ndjson") == "empty_packet"
    # one value per line: a value spread over two lines, or two values on one line, are bad JSON
    assert code_of(impl, b'{"message":\n"a"}', format="ndjson") == "bad_json"
    assert code_of(impl, b'{"message":"a"} {"message":"b"}', format="ndjson") == "bad_json"
    assert code_of(impl, b'{"message":"a"}\n[{"message":"b"}]', format="ndjson") == "bad_schema"
    single = route(impl, b'{"message":"only"}', format="ndjson")
    assert single.count == 1


def test_auto_reads_a_single_object_as_a_packet(impl: ModuleType) -> None:
    # "auto" is JSON unless more follows the first object, so one NDJSON line is a packet
    assert code_of(impl, b'{"message":"only"}\n') == "bad_schema"
    assert route(impl, b'{"message":"a"}\n{"message":"b"}').count == 2
    # json format never switches to NDJSON
    assert code_of(impl, b'{"message":"a"}\n{"message":"b"}', format="json") == "bad_json"
    assert code_of(impl, b'[{"message":"a"}]\n{"message":"b"}') == "bad_json"


def test_ids_from_packet_id_are_stable_across_resends(impl: ModuleType) -> None:
    body = (
        b'{"emitter_id":"em\\u0041","packet_id":12345678901234567890123,"messages":[{"message":"x"},{"message":"y"}]}'
    )
    first = route(impl, body, fallback_prefix="r1")
    again = route(impl, body, fallback_prefix="r2")
    assert first.batches == again.batches
    assert first.emitter_id == "emA"
    assert first.packet_id == "12345678901234567890123"
    # E and P are the raw JSON text, so an escape stays an escape inside the inserted id
    assert first.batches[""] == (
        b'{"id":"em\\u0041/12345678901234567890123/0","message":"x"},'
        b'{"id":"em\\u0041/12345678901234567890123/1","message":"y"}'
    )
    assert [m["id"] for m in messages_of(first.batches[""])] == [
        "emA/12345678901234567890123/0",
        "emA/12345678901234567890123/1",
    ]


def test_id_prefix_without_emitter_and_with_negative_integer_packet_id(impl: ModuleType) -> None:
    r = route(impl, b'{"packet_id":-42,"messages":[{"message":"x"}]}')
    assert r.packet_id == "-42" and r.emitter_id is None
    assert r.batches[""] == b'{"id":"/-42/0","message":"x"}'


def test_no_packet_id_means_fallback_prefix(impl: ModuleType) -> None:
    r = route(impl, b'{"emitter_id":"e","messages":[{"message":"x"}]}', fallback_prefix="abc.DEF_9:-/")
    assert r.emitter_id == "e" and r.packet_id is None
    assert r.batches[""] == b'{"id":"abc.DEF_9:-/0","message":"x"}'


def test_id_tag_follows_the_packet_prefix(impl: ModuleType) -> None:
    body = b'{"emitter_id":"e","packet_id":"p","messages":[{"message":"x"},{"id":"k","message":"y"}]}'
    r = route(impl, body, id_tag="00ff/")
    assert r.batches[""] == b'{"id":"e/p/00ff/0","message":"x"},{"id":"k","message":"y"}'
    # without a packet id the fallback prefix is unique already: no tag
    bare = route(impl, b'[{"message":"x"}]', id_tag="00ff/")
    assert bare.batches[""] == b'{"id":"' + FB.encode() + b'0","message":"x"}'


def test_both_backends_tag_ids_alike(rs: ModuleType, py: ModuleType) -> None:
    for body in (b'{"agent_id":"a\\u00e9","packet_id":12,"messages":[{"message":"x"},{}]}', b'[{"message":"x"}]'):
        assert outcome(rs, body, id_tag="1f-x.y:z/") == outcome(py, body, id_tag="1f-x.y:z/")


@pytest.mark.parametrize("tag", ["a b", "\u00e9", "x\\y", "\n"])
def test_id_tag_is_checked(impl: ModuleType, tag: str) -> None:
    with pytest.raises(ValueError, match="id_tag"):
        route(impl, b'{"packet_id":"p","messages":[{"message":"x"}]}', id_tag=tag)


def test_existing_ids_are_kept(impl: ModuleType) -> None:
    body = b'{"packet_id":"p","messages":[{"id":"s","message":"a"},{"message":"b","id":-17},{"message":"c"}]}'
    r = route(impl, body)
    ids = [m["id"] for m in messages_of(r.batches[""])]
    assert ids == ["s", -17, "/p/2"]


def test_unknown_fields_are_carried_byte_for_byte(impl: ModuleType) -> None:
    msg = (
        b'{  "message" : "m\\n\\"q\\"\\/" ,"x-extra":[1,2.5e-3,-0,true,false,null,{"k":[]}],'
        b'"big":123456789012345678901234567890123456789,"huge":1E+400,"tiny":-1.0e-400,'
        b'"uni":"\xe4\xb8\xad\xe6\x96\x87","lone":"\\ud800","metadata":{"a":{"b":{"c":"d"}}},'
        b'"timestamp":"2024-01-01T00:00:00Z"  }'
    )
    body = b'{"packet_id":"p","emitter_id":"e","extra":{"z":1},"messages":[' + msg + b"]}"
    # 1E+400 and the lone surrogate are refused at ingest (the analyzer cannot read them) ...
    assert code_of(impl, body) == "bad_value"
    # ... but re-routing what was accepted carries anything byte for byte
    r = route(impl, body, strict=False)
    assert r.batches[""] == b'{"id":"e/p/0",' + msg[1:]
    readable = msg.replace(b"1E+400", b"1E+308").replace(b"\\ud800", b"\\ud800\\udc00")
    r = route(impl, body.replace(msg, readable))
    assert r.batches[""] == b'{"id":"e/p/0",' + readable[1:]


def test_routing_follows_the_router_picks(impl: ModuleType) -> None:
    n = 300
    body = json.dumps({"packet_id": "p", "messages": [{"message": f"m{i}", "id": i} for i in range(n)]}).encode()
    targets = {"a": 1.0, "b": 2.0, "c": 0.0, "d": 5.0}
    r = route(impl, body, targets, seed=99)
    twin = impl.Router("alias", 99)
    for name, weight in targets.items():
        twin.set_target(name, weight)
    picks = twin.pick_many(n)
    assert r.count == n
    assert r.counts == dict(Counter(picks))
    for name in set(picks):
        assert [m["id"] for m in messages_of(r.batches[name])] == [i for i, p in enumerate(picks) if p == name]
    assert "c" not in r.batches


def test_routing_with_swrr_router(impl: ModuleType) -> None:
    router = impl.Router("swrr", 0)
    router.set_target("a", 3.0)
    router.set_target("b", 1.0)
    body = b"[" + b",".join(b'{"message":"%d"}' % i for i in range(8)) + b"]"
    r = impl.route_packet(body, router, fallback_prefix="f/")
    assert r.counts == {"a": 6, "b": 2}


def test_no_eligible_target(impl: ModuleType) -> None:
    router = impl.Router("alias", 5)
    router.set_target("a", 1.0)
    router.set_eligible("a", False)
    with pytest.raises(NoTargetError):
        impl.route_packet(b'[{"message":"x"}]', router, fallback_prefix="f")
    # a bad body is a PacketError even when no target is eligible
    with pytest.raises(PacketError):
        impl.route_packet(b"[", router, fallback_prefix="f")
    # neither consumed a draw
    router.set_eligible("a", True)
    router.set_target("b", 1.0)
    fresh = impl.Router("alias", 5)
    fresh.set_target("a", 1.0)
    fresh.set_target("b", 1.0)
    assert router.pick_many(50) == fresh.pick_many(50)


def test_a_bad_packet_draws_nothing(impl: ModuleType) -> None:
    router = impl.Router("alias", 3)
    router.set_target("a", 1.0)
    router.set_target("b", 1.0)
    with pytest.raises(PacketError):
        impl.route_packet(b'[{"message":"x"},{"message":5}]', router, fallback_prefix="f")
    fresh = impl.Router("alias", 3)
    fresh.set_target("a", 1.0)
    fresh.set_target("b", 1.0)
    assert router.pick_many(50) == fresh.pick_many(50)


@pytest.mark.parametrize("prefix", ["a b", "é", "x\\y", 'q"', "semi;colon", "\n"])
def test_fallback_prefix_is_checked(impl: ModuleType, prefix: str) -> None:
    with pytest.raises(ValueError):
        route(impl, b'[{"message":"x"}]', fallback_prefix=prefix)


def test_unknown_format_is_rejected(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        route(impl, b'[{"message":"x"}]', format="xml")


def test_message_limit(impl: ModuleType) -> None:
    body = b"[" + b",".join([b'{"message":"x"}'] * 5) + b"]"
    assert route(impl, body, max_messages=5).count == 5
    assert code_of(impl, body, max_messages=4) == "too_many_messages"
    big = b"[" + b",".join([b'{"message":"x"}'] * 10_001) + b"]"
    assert code_of(impl, big) == "too_many_messages"
    assert PacketError("too_many_messages", "").status == 413


def test_depth_limit(impl: ModuleType) -> None:
    # packet (1) > messages (2) > message (3) > metadata (4) > ... ; the top value is depth 1
    def packet(extra_levels: int) -> bytes:
        nested = b"[" * extra_levels + b"]" * extra_levels
        return b'{"messages":[{"message":"x","metadata":{"n":' + (nested or b"0") + b"}}]}"

    assert route(impl, packet(0), max_depth=4).count == 1
    assert code_of(impl, packet(0), max_depth=3) == "too_deep"
    assert route(impl, packet(3), max_depth=7).count == 1
    assert code_of(impl, packet(3), max_depth=6) == "too_deep"
    assert route(impl, b'[{"message":"x"}]', max_depth=2).count == 1
    assert code_of(impl, b'[{"message":"x"}]', max_depth=1) == "too_deep"
    assert code_of(impl, b'[{"message":"x","m":' + b"[" * 100_000 + b"]" * 100_000 + b"}]") == "too_deep"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            b'{"messages":[{"message":"a"},{"message":"b"},{"message":"c"},{"message":"d","level":7}]}',
            "messages[3].level",
        ),
        (b'{"messages":[{"message":"a"},5]}', "messages[1]"),
        (b'{"messages":[{"level":"x"}]}', "messages[0].message"),
        (b'[{"message":"a"},{"message":"b","source":null}]', "messages[1].source"),
        (b'{"message":"a"}\n{"message":"a"}\n{"message":"a"}\n{"message":"a","id":1.5}\n', "line 4"),
        (b'{"message":"a"}\n["x"]\n', "line 2"),
    ],
)
def test_schema_errors_name_the_message_and_field(impl: ModuleType, body: bytes, path: str) -> None:
    with pytest.raises(PacketError) as exc:
        route(impl, body)
    assert exc.value.code == "bad_schema"
    assert exc.value.detail.startswith(path), exc.value.detail


def test_bad_json_detail_has_the_byte_offset(impl: ModuleType) -> None:
    with pytest.raises(PacketError) as exc:
        route(impl, b'[{"message":"a"},  x]')
    assert exc.value.code == "bad_json"
    assert "19" in exc.value.detail


def test_checks_run_in_the_specified_order(impl: ModuleType) -> None:
    # bad UTF-8 beats bad JSON; bad JSON anywhere beats a schema error earlier in the body
    assert code_of(impl, b'{"messages":[{"message":5}], \xff') == "bad_utf8"
    assert code_of(impl, b'{"messages":[{"message":5}], "x": }') == "bad_json"
    assert code_of(impl, b'{"messages":[{"message":5}], "x": ' + b"[" * 100 + b"]" * 100 + b"}") == "too_deep"
    # a schema error beats the message count
    many_bad = b"[" + b",".join([b'{"message":"x"}'] * 20) + b',{"message":false}]'
    assert code_of(impl, many_bad, max_messages=10) == "bad_schema"
    assert code_of(impl, b'{"packet_id":1.5,"messages":[]}') == "bad_schema"


GOOD = [
    SEED000,
    SEED003,
    b'[{"message":"a"}]',
    b'{"emitter_id":"e","agent_id":"a","packet_id":"p","messages":[{"message":"x"}]}',
    b'{"messages":[{"message":"x","timestamp":-1.5e+10,"id":"0"}],"packet_id":0}',
    b'{"message":"a","metadata":{"k":"v"}}\n{"message":"b"}\n',
    b'\t\r\n [{"message":"\\u0000\\b\\f\\n\\r\\t\\\\\\"\\/"}]\r\n',
    b'[{"message":"x","n":-0.0e-0,"m":0E0,"big":' + b"9" * 300 + b"}]",
    # what the analyzer reads too: paired surrogates, an escaped NUL, the largest double, an
    # underflow (0.0), an escaped backslash before "ud800" (no escape at all)
    b'[{"message":"\\ud83d\\ude00 \\uD800\\uDC00 \\udbff\\udfff","k":"\\u0000 a\\u0000b"}]',
    b'[{"message":"x","max":1.7976931348623157e308,"min":-1.7976931348623157E+308,"tiny":-1e-999}]',
    b'[{"message":"\\\\ud800 \\\\udfff","n":' + b"9" * 308 + b"}]",
    b'{"emitter_id":"\\u00e9","messages":[{"message":"x"}]}',
    b'[{"message":"\xf0\x9f\x98\x80 \xe2\x82\xac \xc2\xa2 \x7f"}]',
    b'{"messages":[{"message":"a"}],"messages_extra":[1],"log_messages_x":{}}',
    b'{"mess\\u0061ges":[{"m\\u0065ssage":"x"}]}',
]

BAD: list[tuple[bytes, str]] = [
    # truncated JSON
    (b"", "bad_json"),
    (b"   \n", "bad_json"),
    (b"{", "bad_json"),
    (b'{"messages":[{"message":"x"}]', "bad_json"),
    (b'{"messages":[{"message":"x"', "bad_json"),
    (b'{"messages":[{"message":"x', "bad_json"),
    (b'{"messages":[{"message":"x"},', "bad_json"),
    (b'[{"message":"x"}', "bad_json"),
    (b'{"messages":[{"message":"\\u12"}]}', "bad_json"),
    (b'{"messages":[{"message":"\\x"}]}', "bad_json"),
    (b'{"messages":[{"message":"a\tb"}]}', "bad_json"),  # raw control character in a string
    (b'{"messages":[{"message":"x",}]}', "bad_json"),
    (b'{"messages":[{"message":"x"},]}', "bad_json"),
    (b'{"messages":[{"message" "x"}]}', "bad_json"),
    (b'{"messages":[{message:"x"}]}', "bad_json"),
    (b"{'messages':[]}", "bad_json"),
    (b'[{"message":"x","n":01}]', "bad_json"),
    (b'[{"message":"x","n":1.}]', "bad_json"),
    (b'[{"message":"x","n":.5}]', "bad_json"),
    (b'[{"message":"x","n":+1}]', "bad_json"),
    (b'[{"message":"x","n":1e}]', "bad_json"),
    (b'[{"message":"x","n":NaN}]', "bad_json"),
    (b'[{"message":"x","n":Infinity}]', "bad_json"),
    (b'[{"message":"x","n":-}]', "bad_json"),
    (b'[{"message":"x","b":tru}]', "bad_json"),
    (b'[{"message":"x","b":True}]', "bad_json"),
    (b'[{"message":"x"}}', "bad_json"),
    (b'[{"message":"x"]', "bad_json"),
    (b"\xef\xbb\xbf[]", "bad_json"),  # a byte order mark is not JSON whitespace
    (b'[{"message":"x"}]\x00', "bad_json"),
    # trailing garbage
    (b'[{"message":"x"}] []', "bad_json"),
    (b'{"messages":[{"message":"x"}]}}', "bad_json"),
    (b'[{"message":"x"}]garbage', "bad_json"),
    # invalid UTF-8
    (b'[{"message":"\xff"}]', "bad_utf8"),
    (b'[{"message":"\xc3"}]', "bad_utf8"),
    (b'[{"message":"\xed\xa0\x80"}]', "bad_utf8"),  # an encoded surrogate
    (b'[{"message":"\xc0\xaf"}]', "bad_utf8"),  # overlong
    (b'[{"message":"\xf4\x90\x80\x80"}]', "bad_utf8"),  # above U+10FFFF
    (b"\x80", "bad_utf8"),
    # deep nesting
    (b"[" * 65 + b"]" * 65, "too_deep"),
    (b'[{"message":"x","m":' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"}]", "too_deep"),
    # wrong top-level shapes and packet fields
    (b'"just a string"', "bad_schema"),
    (b"42", "bad_schema"),
    (b"null", "bad_schema"),
    (b"{}", "bad_schema"),
    (b'{"packet_id":"p"}', "bad_schema"),
    (b'{"messages":[{"message":"x"}],"log_messages":[{"message":"y"}]}', "bad_schema"),
    (b'{"messages":{"message":"x"}}', "bad_schema"),
    (b'{"messages":"x"}', "bad_schema"),
    (b'{"messages":null}', "bad_schema"),
    (b'{"log_messages":7}', "bad_schema"),
    (b'{"emitter_id":5,"messages":[{"message":"x"}]}', "bad_schema"),
    (b'{"agent_id":["a"],"messages":[{"message":"x"}]}', "bad_schema"),
    (b'{"packet_id":1.0,"messages":[{"message":"x"}]}', "bad_schema"),
    (b'{"packet_id":1e3,"messages":[{"message":"x"}]}', "bad_schema"),
    (b'{"packet_id":true,"messages":[{"message":"x"}]}', "bad_schema"),
    (b'{"packet_id":null,"messages":[{"message":"x"}]}', "bad_schema"),
    # wrong message types
    (b"[1]", "bad_schema"),
    (b'["x"]', "bad_schema"),
    (b"[[]]", "bad_schema"),
    (b"[null]", "bad_schema"),
    (b"[{}]", "bad_schema"),
    (b'[{"message":null}]', "bad_schema"),
    (b'[{"message":["x"]}]', "bad_schema"),
    (b'[{"message":"x","level":1}]', "bad_schema"),
    (b'[{"message":"x","source":{}}]', "bad_schema"),
    (b'[{"message":"x","timestamp":true}]', "bad_schema"),
    (b'[{"message":"x","timestamp":null}]', "bad_schema"),
    (b'[{"message":"x","id":1.5}]', "bad_schema"),
    (b'[{"message":"x","id":1e2}]', "bad_schema"),
    (b'[{"message":"x","id":null}]', "bad_schema"),
    (b'[{"message":"x","metadata":[]}]', "bad_schema"),
    (b'[{"message":"x","metadata":"k=v"}]', "bad_schema"),
    (b'{"message":"x"}\n5\n', "bad_schema"),
    # valid JSON the analyzer cannot read (orjson refuses it): anywhere in the body
    (b'[{"message":"x","n":1e999}]', "bad_value"),
    (b'[{"message":"x","n":-1e999}]', "bad_value"),
    (b'[{"message":"x","n":1.8E+308}]', "bad_value"),
    (b'[{"message":"x","big":' + b"9" * 500 + b"}]", "bad_value"),
    (b'[{"message":"\\ud800"}]', "bad_value"),
    (b'[{"message":"\\udfff"}]', "bad_value"),
    (b'[{"message":"\\udc00\\ud800x","lone":"\\uDFFF"}]', "bad_value"),  # a pair reversed
    (b'[{"message":"a\\uD800b"}]', "bad_value"),
    (b'[{"message":"\\ud800\\u0041"}]', "bad_value"),
    (b'[{"message":"\\ud800\\n\\udc00"}]', "bad_value"),
    (b'[{"message":"x","\\ud800":1}]', "bad_value"),  # in a key
    (b'[{"message":"x","metadata":{"a":[1,{"b":[2e999]}]}}]', "bad_value"),
    (b'{"packet_id":"\\ud800","emitter_id":"\\u00e9","messages":[{"message":"x"}]}', "bad_value"),
    (b'{"emitter_id":"\\udfff","messages":[{"message":"x"}]}', "bad_value"),
    (b'{"sent_at":1e400,"messages":[{"message":"x"}]}', "bad_value"),
    (b'{"message":"a"}\n{"message":"\\ud800"}\n', "bad_value"),
    (b'"\\ud800"', "bad_value"),
    (b"[1e999]", "bad_value"),
    # the first of bad_json, too_deep and bad_value wins; bad_value beats a schema error
    (b'[{"message":"\\ud800"}, x]', "bad_value"),
    (b'[x, {"message":"\\ud800"}]', "bad_json"),
    (b'[{"message":"x","n":1e999 ]', "bad_value"),
    (b'[{"message":"x\\ud800\x01"}]', "bad_json"),  # the string itself is not JSON
    (b'[{"message":5},{"message":"\\ud800"}]', "bad_value"),
    (b'[{"message":"\\ud800","m":' + b"[" * 70 + b"]" * 70 + b"}]", "bad_value"),
    (b'[{"message":"x","m":' + b"[" * 70 + b"]" * 70 + b',"n":1e999}]', "too_deep"),
    # empty
    (b"[]", "empty_packet"),
    (b" [ ] ", "empty_packet"),
    (b'{"messages":[]}', "empty_packet"),
    (b'{"log_messages":[],"packet_id":"p"}', "empty_packet"),
]


@pytest.mark.parametrize("body", GOOD, ids=range(len(GOOD)))
def test_good_corpus_is_accepted(impl: ModuleType, body: bytes) -> None:
    r = route(impl, body)
    assert r.count >= 1
    for batch in r.batches.values():
        assert all("id" in m for m in messages_of(batch))


@pytest.mark.parametrize(("body", "code"), BAD, ids=range(len(BAD)))
def test_bad_corpus_gets_its_code(impl: ModuleType, body: bytes, code: str) -> None:
    assert code_of(impl, body) == code


@pytest.mark.parametrize("body", GOOD + [b for b, _ in BAD], ids=range(len(GOOD) + len(BAD)))
def test_corpus_identical_across_backends(rs: ModuleType, py: ModuleType, body: bytes) -> None:
    for kw in ({}, {"format": "json"}, {"format": "ndjson"}, {"max_depth": 3}, {"max_messages": 1}):
        assert outcome(rs, body, **kw) == outcome(py, body, **kw), kw


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b'{"messages":[{"message":"a"},{"message":"b","n":1e999}]}',
            "messages[1]: number is infinity when parsed as a double (byte 48)",
        ),
        (
            b'{"log_messages":[{"message":"a"},{"message":"b"},{"message":"\\ud800"}]}',
            "log_messages[2]: high surrogate without a low one in string (byte 60)",
        ),
        (b'[{"message":"\\udfff"}]', "messages[0]: lone low surrogate in string (byte 12)"),
        (b'[{"message":"a"},7e777]', "messages[1]: number is infinity when parsed as a double (byte 17)"),
        (b'{"message":"a"}\n\n{"message":"\\udc00\\ud800"}\n', "line 3: lone low surrogate in string (byte 28)"),
        (
            b'{"emitter_id":"e\\ud800","messages":[{"message":"a"}]}',
            "packet: high surrogate without a low one in string (byte 14)",
        ),
    ],
)
def test_bad_value_names_the_message_and_the_reason(impl: ModuleType, body: bytes, detail: str) -> None:
    with pytest.raises(PacketError) as exc:
        route(impl, body)
    assert (exc.value.code, exc.value.detail, exc.value.status) == ("bad_value", detail, 400)


def test_lenient_mode_routes_what_strict_mode_refuses(impl: ModuleType) -> None:
    # Re-routing bytes already accepted (engine re-splits) never refuses them: the analyzer
    # has the last word, and the engine isolates what it refuses.
    body = b'[{"id":"a","message":"\\ud800","n":1e999},{"id":"b","message":"ok"}]'
    assert code_of(impl, body) == "bad_value"
    r = route(impl, body, strict=False)
    assert r.count == 2 and r.batches == {"": body[1:-1]}


def test_body_types(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.route_packet('[{"message":"x"}]', None, fallback_prefix="f")  # str is not bytes


def test_concurrent_route_packet_on_a_shared_router(impl: ModuleType) -> None:
    import threading

    router = impl.Router("alias", 3)
    for name in ("a", "b", "c"):
        router.set_target(name, 1.0)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(40):
                body = json.dumps([{"message": "m", "id": f"{t}-{k}-{i}"} for i in range(50)]).encode()
                results.append(impl.route_packet(body, router, fallback_prefix="f"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    ids = [m["id"] for r in results for batch in r.batches.values() for m in messages_of(batch)]
    assert len(ids) == len(set(ids)) == 4 * 40 * 50
    assert sum(sum(r.counts.values()) for r in results) == 4 * 40 * 50
