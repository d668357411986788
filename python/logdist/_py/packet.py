"""Packet validation, id insertion and routing over raw bytes (twin of crates/wlb/src/packet.rs).

`route_packet` checks a request body in the contract's order (see _wlb.pyi), gives every
message an id and splits the messages by target (by a random pick, or by route key: then each
message's key is read from its text after validation, `keyed.message_key`); the JSON syntax itself is `json`'s, and so
are the values strict mode refuses (the analyzer's definition, checked where the Rust scanner
checks it: per message, so the first error in the body wins and the detail names the message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from logdist._py.convert import as_int
from logdist._py.json import (
    B_LBRACE,
    B_LBRACK,
    B_QUOTE,
    B_RBRACE,
    B_RBRACK,
    K_ARR,
    K_INT,
    K_LIT,
    K_NUM,
    K_OBJ,
    K_STR,
    KEY,
    LIT_START,
    MEMBER,
    SEP,
    STR,
    JsonError,
    after_value,
    bad,
    key_name,
    may_be_unsupported,
    member_key,
    scan_scalar,
    scan_value,
    skip_container,
    skip_ws,
    string_error,
    unsupported_value,
)
from logdist._py.keyed import fnv1a, key_hash, message_key, mix64, parse_route_key
from logdist._py.router import Router
from logdist.errors import PacketError

__all__ = ["RoutedPacket", "route_packet"]


class RoutedPacket:
    """The result of route_packet (see _wlb.pyi)."""

    __slots__ = ("_batches", "_count", "_counts", "_emitter_id", "_packet_id", "_unkeyed")

    def __init__(
        self,
        emitter_id: str | None,
        packet_id: str | None,
        count: int,
        batches: dict[str, bytes],
        counts: dict[str, int],
        unkeyed: int = 0,
    ) -> None:
        self._unkeyed = unkeyed
        self._emitter_id = emitter_id
        self._packet_id = packet_id
        self._count = count
        self._batches = batches
        self._counts = counts

    @property
    def emitter_id(self) -> str | None:
        return self._emitter_id

    @property
    def packet_id(self) -> str | None:
        return self._packet_id

    @property
    def count(self) -> int:
        return self._count

    @property
    def unkeyed(self) -> int:
        return self._unkeyed

    @property
    def batches(self) -> dict[str, bytes]:
        return dict(self._batches)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def __repr__(self) -> str:
        return (
            f"RoutedPacket(emitter_id={self._emitter_id!r}, packet_id={self._packet_id!r}, "
            f"count={self._count}, counts={self._counts!r})"
        )


# JSON lexemes over raw bytes (RFC 8259). The body is valid UTF-8 before any of these run, so
# a byte >= 0x80 inside a string is part of a well-formed code point.


_PREFIX_OK = re.compile(r"[A-Za-z0-9._:/-]*")

# message field -> (allowed kinds, what the detail says is expected)
_MSG_FIELDS: dict[bytes, tuple[frozenset[int], str]] = {
    b"message": (frozenset({K_STR}), "string"),
    b"level": (frozenset({K_STR}), "string"),
    b"source": (frozenset({K_STR}), "string"),
    b"timestamp": (frozenset({K_STR, K_INT, K_NUM}), "string or number"),
    b"id": (frozenset({K_STR, K_INT}), "string or integer in [-2^63, 2^64)"),
    b"metadata": (frozenset({K_OBJ}), "object"),
}


# the same, keyed by the raw key token (quotes included), with the field name
_MSG_FIELDS_RAW: dict[bytes, tuple[frozenset[int], str, str]] = {
    b'"' + k + b'"': (kinds, what, k.decode()) for k, (kinds, what) in _MSG_FIELDS.items()
}


class _Scan:
    """What the syntax pass found: message spans, ids, and the first schema error per step."""

    __slots__ = (
        "agent_raw", "arrays", "emitter_raw", "ends", "msg_err", "noid", "pid_raw", "pkt_err", "starts", "strict",
        "strict_ids",
    )  # fmt: skip

    def __init__(self, strict: bool, strict_ids: bool) -> None:
        self.strict = strict  # strict mode, and the body may hold a value it refuses
        # strict mode: an integer id must be one the analyzer keeps as an integer (orjson's
        # range, [-2^63, 2^64)); beyond it, it reads as a float, and two ids could read as one
        self.strict_ids = strict_ids
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.noid: list[int] = []  # indexes of messages without an "id" member
        self.msg_err: str | None = None  # step 4
        self.pkt_err: str | None = None  # step 3
        self.arrays = 0  # how many "messages"/"log_messages" members the packet had
        self.emitter_raw: bytes | None = None
        self.agent_raw: bytes | None = None
        self.pid_raw: bytes | None = None


def _int_id(text: bytes) -> bool:
    """True when the integer `text` is in orjson's integer range, [-2^63, 2^64)."""
    return len(text) <= 21 and -(2**63) <= int(text) < 2**64


def _check_values(buf: bytes, start: int, end: int, label: str) -> None:
    """Strict mode: bad_value for the first value in buf[start:end] the analyzer refuses."""
    found = unsupported_value(buf, start, end)
    if found is not None:
        raise JsonError("bad_value", found[0], f"{label}: {found[1]}")


def _element(buf: bytes, pos: int, lim: int, depth: int, max_depth: int, sc: _Scan, label: str, dot: str) -> int:
    """A message (or what stands where one should) at pos; returns its end."""
    start = pos
    try:
        if buf[pos] == B_LBRACE:
            pos = _message(buf, pos, lim, depth, max_depth, sc, label, dot)
        else:
            pos = scan_value(buf, pos, lim, depth, max_depth)[0]
            # still counts as a message for the index of the next one; never routed
            sc.starts.append(-1)
            sc.ends.append(-1)
            if sc.msg_err is None:
                sc.msg_err = f"{label}: expected object"
    except JsonError as exc:
        if sc.strict:  # a refused value before the syntax error comes first
            _check_values(buf, start, exc.offset, label)
        raise
    if sc.strict:
        _check_values(buf, start, pos, label)
    return pos


# One branch per JSON token class, like the Rust scanner it mirrors: splitting it would add a
# call per member on the twin's hot path.
def _message(  # noqa: C901
    buf: bytes, pos: int, lim: int, depth: int, max_depth: int, sc: _Scan, label: str, dot: str
) -> int:
    """Scan a message object at pos; record its span, whether it has an id, and its first error."""
    if depth > max_depth:
        raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    start = pos
    pos += 1
    err: str | None = None
    has_id = False
    has_message = False
    check = sc.msg_err is None
    m = SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == B_RBRACE:
        pos = m.end()
    else:
        keym = KEY.match
        memberm = MEMBER.match
        strm = STR.match
        fields = _MSG_FIELDS_RAW
        while True:
            mm = memberm(buf, pos, lim)
            if mm is not None:  # key: scalar, then , or }
                pos = mm.end()
                rawkey = mm.group(1)
                vs = mm.start(2)
                c = buf[vs]
                if c == B_QUOTE:
                    kind = K_STR
                elif c in LIT_START:
                    kind = K_LIT
                else:
                    val = buf[vs : mm.end(2)]
                    kind = K_NUM if (b"." in val or b"e" in val or b"E" in val) else K_INT
                closed = buf[pos - 1] == B_RBRACE
            else:
                km = keym(buf, pos, lim)
                if km is None:
                    member_key(buf, pos, lim)  # raises with the precise offset
                    raise AssertionError("unreachable")
                rawkey = km.group(1)
                vpos = km.end()
                if vpos >= lim:
                    raise bad(vpos, "unexpected end of input")
                c = buf[vpos]
                if c == B_QUOTE:
                    sm = strm(buf, vpos, lim)
                    if sm is None:
                        raise string_error(buf, vpos, lim)
                    pos = sm.end()
                    kind = K_STR
                elif c == B_LBRACE or c == B_LBRACK:
                    pos = skip_container(buf, vpos, lim, depth + 1, max_depth)
                    kind = K_OBJ if c == B_LBRACE else K_ARR
                else:
                    pos, kind = scan_scalar(buf, vpos, lim)
                    val = buf[vpos:pos]
                pos, closed = after_value(buf, pos, lim, B_RBRACE)
            if check:
                spec = fields.get(rawkey)
                if spec is None and b"\\" in rawkey:
                    spec = fields.get(b'"' + key_name(rawkey) + b'"')
                if spec is not None:
                    name = spec[2]
                    if name == "id":
                        has_id = True
                    elif name == "message":
                        has_message = True
                    if err is None and (
                        kind not in spec[0] or (kind == K_INT and name == "id" and sc.strict_ids and not _int_id(val))
                    ):
                        err = f"{label}{dot}{name}: expected {spec[1]}"
            if closed:
                break
    sc.starts.append(start)
    sc.ends.append(pos)
    if not has_id:
        sc.noid.append(len(sc.starts) - 1)
    if check:
        if err is None and not has_message:
            err = f"{label}{dot}message: required string is missing"
        if err is not None:
            sc.msg_err = err
    return pos


def _messages_array(buf: bytes, pos: int, lim: int, depth: int, max_depth: int, sc: _Scan, name: str) -> int:
    """Scan an array of messages at pos; returns its end."""
    if depth > max_depth:
        raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    pos += 1
    m = SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == B_RBRACK:
        return m.end()
    ws = skip_ws
    i = len(sc.starts)
    while True:
        pos = ws(buf, pos, lim).end()
        if pos >= lim:
            raise bad(pos, "unexpected end of input")
        pos = _element(buf, pos, lim, depth + 1, max_depth, sc, f"{name}[{i}]", ".")
        i += 1
        pos, closed = after_value(buf, pos, lim, B_RBRACK)
        if closed:
            return pos


def _packet_members(buf: bytes, pos: int, lim: int, max_depth: int, sc: _Scan) -> int:
    """Scan a packet object (depth 1) opening at pos; returns its end."""
    if max_depth < 1:
        raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    pos += 1
    m = SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == B_RBRACE:
        return m.end()
    while True:
        try:
            pos = _packet_member(buf, pos, lim, max_depth, sc)
        except JsonError as exc:
            if sc.strict and exc.code != "bad_value":  # a refused value before the syntax error
                _check_values(buf, pos, exc.offset, "packet")
            raise
        pos, closed = after_value(buf, pos, lim, B_RBRACE)
        if closed:
            return pos


def _packet_member(buf: bytes, pos: int, lim: int, max_depth: int, sc: _Scan) -> int:
    """One member of the packet object (key, value) at pos; returns the end of its value."""
    km = KEY.match(buf, pos, lim)
    if km is None:
        member_key(buf, pos, lim)
        raise AssertionError("unreachable")
    vpos = km.end()
    name = key_name(km.group(1))
    if vpos >= lim:
        raise bad(vpos, "unexpected end of input")
    if name == b"messages" or name == b"log_messages":
        sc.arrays += 1
        label = name.decode()
        if buf[vpos] == B_LBRACK:
            return _messages_array(buf, vpos, lim, 2, max_depth, sc, label)
        end = scan_value(buf, vpos, lim, 2, max_depth)[0]
        if sc.pkt_err is None:
            sc.pkt_err = f"{label}: expected array"
    else:
        end, kind = scan_value(buf, vpos, lim, 2, max_depth)
        if name in _ID_MEMBERS:
            _packet_field(sc, name, kind, buf[vpos:end])
    if sc.strict:
        _check_values(buf, pos, end, "packet")
    return end


_ID_MEMBERS = frozenset({b"emitter_id", b"agent_id", b"packet_id"})


def _packet_field(sc: _Scan, name: bytes, kind: int, raw: bytes) -> None:
    """Record an id member of the packet (emitter_id, agent_id, packet_id), or its schema error."""
    if name == b"emitter_id" or name == b"agent_id":
        if kind == K_STR:
            if name == b"emitter_id":
                sc.emitter_raw = raw[1:-1]
            else:
                sc.agent_raw = raw[1:-1]
        elif sc.pkt_err is None:
            sc.pkt_err = f"{name.decode()}: expected string"
    elif name == b"packet_id":
        if kind == K_STR:
            sc.pid_raw = raw[1:-1]
        elif kind == K_INT:
            sc.pid_raw = raw
        elif sc.pkt_err is None:
            sc.pkt_err = "packet_id: expected string or integer"


def _ndjson(buf: bytes, max_depth: int, strict: bool, strict_ids: bool) -> _Scan:
    sc = _Scan(strict, strict_ids)
    n = len(buf)
    ws = skip_ws
    line = 0
    start = 0
    while start <= n:
        nl = buf.find(b"\n", start)
        end = n if nl < 0 else nl
        line += 1
        pos = ws(buf, start, end).end()
        if pos < end:
            pos = _element(buf, pos, end, 1, max_depth, sc, f"line {line}", ": ")
            pos = ws(buf, pos, end).end()
            if pos < end:
                raise bad(pos, "unexpected data after the value on this line")
        if nl < 0:
            break
        start = nl + 1
    return sc


def _scan(buf: bytes, fmt: str, max_depth: int, strict: bool) -> tuple[_Scan, bool]:
    """Syntax pass (step 2) plus what steps 3-4 need. Returns (scan, is_packet)."""
    strict_ids = strict
    strict = strict and may_be_unsupported(buf)
    if fmt == "ndjson":
        return _ndjson(buf, max_depth, strict, strict_ids), False
    n = len(buf)
    pos = skip_ws(buf, 0, len(buf)).end()
    if pos >= n:
        raise bad(pos, "expected a JSON value, found only whitespace" if n else "empty body")
    c = buf[pos]
    sc = _Scan(strict, strict_ids)
    if c == B_LBRACE:
        end = _packet_members(buf, pos, n, max_depth, sc)
        rest = skip_ws(buf, end, n).end()
        if rest < n:
            if fmt == "auto":
                return _ndjson(buf, max_depth, strict, strict_ids), False
            raise bad(rest, "unexpected data after the JSON value")
        return sc, True
    if c == B_LBRACK:
        end = _messages_array(buf, pos, n, 1, max_depth, sc, "messages")
    else:
        try:
            end = scan_value(buf, pos, n, 1, max_depth)[0]
        except JsonError as exc:
            if strict:
                _check_values(buf, pos, exc.offset, "packet")
            raise
        if strict:
            _check_values(buf, pos, end, "packet")
        sc.pkt_err = "expected a packet object or an array of messages"
    rest = skip_ws(buf, end, n).end()
    if rest < n:
        raise bad(rest, "unexpected data after the JSON value")
    return sc, False


def route_packet(
    body: bytes,
    router: Router | None,
    *,
    fallback_prefix: str,
    format: str = "auto",
    max_messages: int = 10_000,
    max_depth: int = 64,
    id_tag: str = "",
    strict: bool = True,
    route_key: str = "random",
    exclude: Collection[str] | None = None,
) -> RoutedPacket:
    """Validate a request body, give every message an id, and route each message (see _wlb.pyi)."""
    if format not in ("auto", "json", "ndjson"):
        raise ValueError(f"unknown format {format!r} (expected 'auto', 'json' or 'ndjson')")
    if not isinstance(fallback_prefix, str) or _PREFIX_OK.fullmatch(fallback_prefix) is None:
        raise ValueError(f"fallback_prefix may only hold ASCII letters, digits and '._:/-': {fallback_prefix!r}")
    if not isinstance(id_tag, str) or _PREFIX_OK.fullmatch(id_tag) is None:
        raise ValueError(f"id_tag may only hold ASCII letters, digits and '._:/-': {id_tag!r}")
    mode, path = parse_route_key(route_key)
    max_messages = as_int(max_messages, "max_messages")
    max_depth = as_int(max_depth, "max_depth")
    if not isinstance(body, bytes):
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
    sc = _validate(body, format, max_messages, max_depth, strict)
    count = len(sc.starts)
    emitter_id, packet_id, prefix = _ids(sc, fallback_prefix, id_tag)

    # Routing: every pick happens here, after the whole body was accepted.
    picks: list[str] | None = None
    unkeyed = 0
    if router is not None:
        if mode == "random" and not exclude:
            picks = router.pick_many(count)
        else:
            picks, unkeyed = _keyed_picks(body, sc, prefix, router, path if mode != "random" else None, mode, exclude)

    pieces = _with_ids(body, sc, prefix)
    if picks is None:
        return RoutedPacket(emitter_id, packet_id, count, {"": b",".join(pieces)}, {"": count})
    groups: dict[str, list[bytes]] = {}
    for name, piece in zip(picks, pieces, strict=True):
        g = groups.get(name)
        if g is None:
            groups[name] = [piece]
        else:
            g.append(piece)
    return RoutedPacket(
        emitter_id,
        packet_id,
        count,
        {k: b",".join(v) for k, v in groups.items()},
        {k: len(v) for k, v in groups.items()},
        unkeyed,
    )


def _keyed_picks(
    body: bytes,
    sc: _Scan,
    prefix: bytes,
    router: Router,
    path: tuple[str, ...] | None,
    mode: str,
    exclude: Collection[str] | None,
) -> tuple[list[str], int]:
    """One target per message by its route key (twin of Validated::picks), and how many
    keyed messages had none (they get a random pick, in message order)."""
    ex = frozenset(n for n in exclude if isinstance(n, str)) if exclude else None
    noid = frozenset(sc.noid) if mode == "message_id" else frozenset()
    picks: list[str] = []
    unkeyed = 0
    for i, (s, e) in enumerate(zip(sc.starts, sc.ends, strict=True)):
        kh: int | None = None
        if path is not None:
            if i in noid:  # message_id: the id it is given
                kh = mix64(fnv1a(str(i).encode("ascii"), fnv1a(prefix)))
            else:
                key = message_key(body[s:e], path)
                kh = None if key is None else key_hash(key)
            unkeyed += kh is None
        picks.append(router.pick(ex) if kh is None else router._pick_key_hash(kh, ex))
    return picks, unkeyed


def _validate(body: bytes, format: str, max_messages: int, max_depth: int, strict: bool) -> _Scan:
    """Steps 1-5 of the contract, in its order; PacketError at the first that fails."""
    # 1. UTF-8
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketError("bad_utf8", f"invalid UTF-8 at byte {exc.start}") from None

    # 2. syntax (the whole body), collecting what steps 3 and 4 check
    try:
        sc, is_packet = _scan(body, format, max_depth, bool(strict))
    except JsonError as exc:
        if exc.code == "too_deep":
            raise PacketError("too_deep", f"nesting deeper than {max_depth} at byte {exc.offset}") from None
        if exc.code == "bad_value":
            raise PacketError("bad_value", f"{exc.what} (byte {exc.offset})") from None
        raise PacketError("bad_json", f"invalid JSON at byte {exc.offset}: {exc.what}") from None

    # 3. packet fields
    if is_packet:
        if sc.arrays == 0:
            sc.pkt_err = sc.pkt_err or 'packet: missing "messages" (or "log_messages")'
            raise PacketError("bad_schema", sc.pkt_err)
        if sc.arrays > 1:
            raise PacketError("bad_schema", 'packet: give exactly one of "messages" and "log_messages"')
    if sc.pkt_err is not None:
        raise PacketError("bad_schema", sc.pkt_err)
    # 4. messages
    if sc.msg_err is not None:
        raise PacketError("bad_schema", sc.msg_err)
    # 5. count
    count = len(sc.starts)
    if count == 0:
        raise PacketError("empty_packet", "the packet holds no messages")
    if count > max_messages:
        raise PacketError("too_many_messages", f"{count} messages, more than the limit of {max_messages}")
    return sc


def _ids(sc: _Scan, fallback_prefix: str, id_tag: str) -> tuple[str | None, str | None, bytes]:
    """(emitter_id, packet_id, the prefix of the ids given to messages without one)."""
    e_raw = sc.emitter_raw if sc.emitter_raw is not None else sc.agent_raw
    emitter_id: str | None = None
    if e_raw is not None:
        emitter_id = json.loads(b'"' + e_raw + b'"')
    packet_id: str | None = None
    if sc.pid_raw is not None:
        packet_id = json.loads(b'"' + sc.pid_raw + b'"')
        prefix = (e_raw or b"") + b"/" + sc.pid_raw + b"/" + id_tag.encode("ascii")
    else:
        prefix = fallback_prefix.encode("ascii")
    return emitter_id, packet_id, prefix


def _with_ids(body: bytes, sc: _Scan, prefix: bytes) -> list[bytes]:
    """Each message's original text, with `"id":"<prefix><i>"` inserted when it had no id."""
    starts, ends = sc.starts, sc.ends
    pieces = [body[s:e] for s, e in zip(starts, ends, strict=True)]
    for i in sc.noid:
        s, e = starts[i], ends[i]
        idtext = b'"id":"' + prefix + str(i).encode("ascii") + b'"'
        inner = body[s + 1 : e]
        if SEP.fullmatch(inner) is not None:  # an empty object: `{` ws `}`
            pieces[i] = b"{" + idtext + inner
        else:
            pieces[i] = b"{" + idtext + b"," + inner
    return pieces
