"""Packets of messages at the limits of what logdist reads, for the property tests.

Values are raw JSON text (bytes), not Python values: `1e-999`, `2^64`, an escaped NUL or a raw
overlong UTF-8 sequence must reach the distributor exactly as written. A packet holds messages
that are all valid, or some with a poison, one per message: a value ingest must refuse, with
the verdict it must give when that poison is the first problem of the body.

`expected_verdict` predicts the answer from the contract's order (python/logdist/_wlb.pyi,
route_packet): bad_utf8 anywhere first; then the first of bad_json / too_deep / bad_value in the
body; then the first bad_schema; and it says where: the message's index (bad_value,
bad_schema) or a byte offset inside the poisoned message (bad_utf8, bad_json, too_deep).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# -- values that every part reads: accepted, delivered, and read back with the same meaning

VALID_NUMBERS = [
    b"0",
    b"-0",
    b"18446744073709551615",  # 2^64 - 1, the largest integer orjson keeps
    b"18446744073709551616",  # 2^64: a double to the analyzer, fine outside an id
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"1" + b"0" * 30,
    b"1.7976931348623157e308",  # the largest double
    b"-1.7976931348623157E+308",
    b"5e-324",  # the smallest subnormal
    b"1e-999",  # underflows to 0.0
    b"-0.0e-0",
    b"2.5E+3",
]
VALID_STRINGS = [
    b'""',
    b'"\\u0000"',  # escaped NUL
    b'"a\\u0000b"',
    b'"\\ud83d\\ude00"',  # an escaped surrogate pair
    b'"\\uDBFF\\uDFFF"',
    '"\U0001f600 é € 𝄞"'.encode(),  # raw 4-, 2- and 3-byte UTF-8
    b'"\\\\ud800"',  # an escaped backslash, then the letters ud800
    b'"\\n\\t\\r\\b\\f\\"\\\\\\/"',
    b'"\\u2028\\u2029\\u00e9"',
    b'"' + b"x" * 3000 + b'"',
    b'"' + (b"\\u00e9" + "\u00e9".encode()) * 10_000 + b'"',  # 80 kB of escaped and raw text
    b'"tab\\tand \\u001f"',
]
# strings for the fields the analyzer tallies (level, source): shorter, just as hostile
TALLY_STRINGS = [b'"INFO"', b'"\\u0000"', b'"\\ud83d\\ude00"', '"é𝄞"'.encode(), b'"\\\\ud800"', b'""']
# integer ids at the edges of the analyzer's integer range, [-2^63, 2^64), and of a double's
# exact integers: (start, step), the id of message number uid is start + step * uid
INT_IDS_AT_LIMITS = [(2**64 - 1, -1), (2**63, 1), (-(2**63), 1), (2**53 + 1, 1), (0, -1)]


def deep(n: int) -> bytes:
    """A valid value nested n levels deep."""
    return b'{"a":' * (n // 2) + b"[" * (n - n // 2) + b"1" + b"]" * (n - n // 2) + b"}" * (n // 2)


@dataclass(frozen=True)
class Poison:
    """A value (or a field) ingest must refuse, and the code it refuses it with when it is the
    body's first problem. `field` names the message field it replaces (None: it goes into the
    metadata as a new member); `drop` removes that field instead."""

    name: str
    text: bytes
    code: str
    field: bytes | None = None
    drop: bool = False


POISONS = [
    # values no analyzer can read (orjson refuses them): bad_value
    Poison("1e999", b"1e999", "bad_value"),
    Poison("-1e999", b"-1E999", "bad_value"),
    Poison("400 digits", b"9" * 400, "bad_value"),
    Poison("lone high surrogate", b'"\\ud800"', "bad_value"),
    Poison("lone low surrogate", b'"\\udfff"', "bad_value"),
    Poison("reversed pair", b'"\\udc00\\ud800"', "bad_value"),
    Poison("lone surrogate in the text", b'"x\\uD800y"', "bad_value", field=b"message"),
    # bytes that are not UTF-8: bad_utf8
    Poison("raw surrogate", b'"\xed\xa0\x80"', "bad_utf8"),
    Poison("overlong NUL", b'"\xc0\x80"', "bad_utf8"),
    Poison("overlong slash", b'"\xe0\x80\xaf"', "bad_utf8"),
    Poison("past U+10FFFF", b'"\xf4\x90\x80\x80"', "bad_utf8"),
    Poison("lone continuation", b'"\x80"', "bad_utf8", field=b"message"),
    # not JSON: bad_json
    Poison("raw NUL in a string", b'"a\x00b"', "bad_json"),
    Poison("raw control in a string", b'"\x1f"', "bad_json", field=b"message"),
    Poison("NUL between tokens", b"\x001", "bad_json"),
    Poison("leading zero", b"01", "bad_json"),
    Poison("NaN", b"NaN", "bad_json"),
    Poison("bad escape", b'"\\x41"', "bad_json"),
    # nesting past max_depth (64): too_deep
    Poison("70 levels", b"[" * 70 + b"]" * 70, "too_deep"),
    # fields of the wrong type: bad_schema
    Poison("level a number", b"5", "bad_schema", field=b"level"),
    Poison("message missing", b"", "bad_schema", field=b"message", drop=True),
    Poison("float id", b"1.5", "bad_schema", field=b"id"),
    Poison("id 2^64", b"18446744073709551616", "bad_schema", field=b"id"),
    Poison("id below -2^63", b"-9223372036854775809", "bad_schema", field=b"id"),
    Poison("metadata an array", b"[1]", "bad_schema", field=b"metadata"),
]
SYNTAX_CODES = ("bad_json", "too_deep", "bad_value")


@dataclass(frozen=True)
class MessageSpec:
    """One message, its id given at render time: "str" (a string), "int" (an integer at a
    limit, plus the unique number) or "none" (the distributor assigns one)."""

    id_kind: str
    text: bytes
    level: bytes | None
    source: bytes | None
    extras: tuple[bytes, ...]  # metadata member values
    poison: Poison | None = None

    def render(self, uid: int, tag: str) -> bytes:
        fields: dict[bytes, bytes] = {}
        if self.id_kind == "str":
            fields[b"id"] = json.dumps(f"{tag}-{uid}").encode()
        elif self.id_kind == "int":
            start, step = INT_IDS_AT_LIMITS[uid % len(INT_IDS_AT_LIMITS)]
            fields[b"id"] = str(start + step * uid).encode()
        fields[b"message"] = self.text
        if self.level is not None:
            fields[b"level"] = self.level
        if self.source is not None:
            fields[b"source"] = self.source
        meta = [b'"k%d":' % i + v for i, v in enumerate(self.extras)]
        p = self.poison
        if p is not None and p.field is None:
            meta.append(b'"p":' + p.text)
        fields[b"metadata"] = b"{" + b",".join(meta) + b"}"
        if p is not None and p.field is not None:
            if p.drop:
                fields.pop(p.field, None)
            else:
                fields[p.field] = p.text
        return b"{" + b",".join(b'"' + k + b'":' + v for k, v in fields.items()) + b"}"


def messages(max_size: int = 6, poison_rate: int = 4) -> st.SearchStrategy[list[MessageSpec]]:
    """Lists of message specs: half of them all valid, the others with about one message in
    `poison_rate` poisoned."""
    extra = st.one_of(st.sampled_from(VALID_NUMBERS), st.sampled_from(VALID_STRINGS), st.integers(1, 55).map(deep))

    def spec(poison: st.SearchStrategy[Poison | None]) -> st.SearchStrategy[MessageSpec]:
        return st.builds(
            MessageSpec,
            id_kind=st.sampled_from(["str", "str", "int", "none"]),
            text=st.sampled_from(VALID_STRINGS),
            level=st.none() | st.sampled_from(TALLY_STRINGS),
            source=st.none() | st.sampled_from(TALLY_STRINGS),
            extras=st.lists(extra, max_size=3).map(tuple),
            poison=poison,
        )

    some_poison = st.one_of(*([st.none()] * (poison_rate - 1)), st.sampled_from(POISONS))
    return st.one_of(
        st.lists(spec(st.none()), min_size=1, max_size=max_size),
        st.lists(spec(some_poison), min_size=1, max_size=max_size),
    )


SHAPES = ["packet", "log_messages", "array", "ndjson"]


@dataclass(frozen=True)
class Built:
    body: bytes
    fmt: str  # route_packet's format: "ndjson" or "auto"
    content_type: str
    spans: list[tuple[int, int]]  # each message's bytes in the body
    texts: list[bytes]


def build(specs: list[MessageSpec], shape: str, uids: list[int], tag: str, packet_id: str | None) -> Built:
    texts = [s.render(u, tag) for s, u in zip(specs, uids, strict=True)]
    if shape == "ndjson":
        head, sep, tail = b"", b"\n", b"\n"
    else:
        head = b"["
        if shape != "array":
            key = b"messages" if shape == "packet" else b"log_messages"
            who = b"emitter_id" if shape == "packet" else b"agent_id"
            pid = b"" if packet_id is None else b'"packet_id":' + json.dumps(packet_id).encode() + b","
            head = b"{" + b'"' + who + b'":' + json.dumps(tag).encode() + b"," + pid + b'"' + key + b'":['
        sep, tail = b", ", b"]" if shape == "array" else b"]}"
    spans = []
    out = bytearray(head)
    for i, t in enumerate(texts):
        if i:
            out += sep
        spans.append((len(out), len(out) + len(t)))
        out += t
    out += tail
    ndjson = shape == "ndjson"
    return Built(
        bytes(out),
        "ndjson" if ndjson else "auto",
        "application/x-ndjson" if ndjson else "application/json",
        spans,
        texts,
    )


def label(shape: str, i: int) -> str:
    if shape == "ndjson":
        return f"line {i + 1}"
    return f"log_messages[{i}]" if shape == "log_messages" else f"messages[{i}]"


def expected_verdict(specs: list[MessageSpec]) -> tuple[str, int] | None:
    """(code, index of the message that causes it), or None when the packet is valid."""
    for codes in (("bad_utf8",), SYNTAX_CODES, ("bad_schema",)):
        for i, s in enumerate(specs):
            if s.poison is not None and s.poison.code in codes:
                return s.poison.code, i
    return None


_BYTE = re.compile(r"byte (\d+)")


def check_refusal(built: Built, shape: str, specs: list[MessageSpec], code: str, detail: str) -> None:
    """Asserts that a refusal (code, detail) is the predicted one and names its place."""
    want = expected_verdict(specs)
    assert want is not None, f"a valid packet was refused: {code}: {detail}"
    assert code == want[0], f"expected {want[0]} (message {want[1]}: {specs[want[1]].poison}), got {code}: {detail}"
    i = want[1]
    if code in ("bad_value", "bad_schema"):
        assert detail.startswith(label(shape, i)), f"{detail!r} does not name {label(shape, i)}"
    else:
        m = _BYTE.search(detail)
        assert m is not None, f"{detail!r} names no byte offset"
        lo, hi = built.spans[i]
        assert lo <= int(m.group(1)) <= hi, f"{detail!r}: not inside message {i} (bytes {lo}-{hi})"


def meaning(text: bytes) -> Any:
    """A message as the analyzer reads it (json: lone surrogates and big integers kept)."""
    return json.loads(text)
