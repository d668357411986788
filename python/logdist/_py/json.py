"""The JSON scanner over raw bytes (twin of crates/wlb/src/json.rs).

It validates RFC 8259 syntax without building Python objects: regular expressions match the
common shapes in one C-level call each, and a step-by-step scanner runs only to find the
precise error offset. `packet` scans a request body with it.

Strict mode (`may_be_unsupported`, `unsupported_value`) is the Rust scanner's: it refuses what
orjson, and so the analyzer, refuses beyond the grammar: numbers that are infinite as a double
and unpaired surrogate escapes. A body that cannot hold either (one regular expression says
so) costs nothing more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

__all__ = [
    "B_LBRACE",
    "B_LBRACK",
    "B_QUOTE",
    "B_RBRACE",
    "B_RBRACK",
    "KEY",
    "K_ARR",
    "K_INT",
    "K_LIT",
    "K_NUM",
    "K_OBJ",
    "K_STR",
    "LIT_START",
    "MEMBER",
    "SEP",
    "STR",
    "JsonError",
    "after_value",
    "bad",
    "key_name",
    "may_be_unsupported",
    "member_key",
    "scan_scalar",
    "scan_value",
    "skip_container",
    "skip_ws",
    "string_error",
    "unsupported_value",
]

_RX_WS = rb"[ \t\n\r]*"
_RX_STR = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_RX_NUM = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_RX_SCALAR = _RX_STR + rb"|" + _RX_NUM + rb"|true|false|null"
_RX_MEMBER = _RX_WS + _RX_STR + _RX_WS + rb":" + _RX_WS + rb"(?:" + _RX_SCALAR + rb")"
_WS = re.compile(_RX_WS)
STR = re.compile(_RX_STR)
_NUM = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# whitespace, a key, whitespace, a colon, whitespace: the start of an object member
KEY = re.compile(_RX_WS + rb"(" + _RX_STR + rb")" + _RX_WS + rb":" + _RX_WS)
# the common case of a whole member: key, a scalar value, then `,` or `}` (fast path only; on
# no match the step-by-step scanner runs and reports the precise error)
MEMBER = re.compile(
    _RX_WS + rb"(" + _RX_STR + rb")" + _RX_WS + rb":" + _RX_WS + rb"(" + _RX_SCALAR + rb")" + _RX_WS + rb"([,}])"
)
# a whole flat container (scalars only), the usual shape of "metadata" (fast path only)
_FLAT = re.compile(
    rb"\{(?:"
    + _RX_MEMBER
    + rb"(?:"
    + _RX_WS
    + rb","
    + _RX_MEMBER
    + rb")*)?"
    + _RX_WS
    + rb"\}|\[(?:"
    + _RX_WS
    + rb"(?:"
    + _RX_SCALAR
    + rb")(?:"
    + _RX_WS
    + rb","
    + _RX_WS
    + rb"(?:"
    + _RX_SCALAR
    + rb"))*)?"
    + _RX_WS
    + rb"\]"
)
# whitespace, then the separator or closer after a value
SEP = re.compile(rb"[ \t\n\r]*([,}\]])")
# _WS always matches (possibly empty); typed so that `.end()` needs no None check.
skip_ws: Callable[[bytes, int, int], re.Match[bytes]] = _WS.match  # type: ignore[assignment]
# value kinds
K_STR, K_INT, K_NUM, K_OBJ, K_ARR, K_LIT = range(6)

B_QUOTE, B_LBRACE, B_RBRACE, B_LBRACK, B_RBRACK = 0x22, 0x7B, 0x7D, 0x5B, 0x5D
B_COMMA = 0x2C
_NUM_START = frozenset(b"-0123456789")

LIT_START = frozenset(b"tfn")


class JsonError(Exception):
    def __init__(self, code: str, offset: int, what: str) -> None:
        super().__init__(code, offset, what)
        self.code = code
        self.offset = offset
        self.what = what


def bad(offset: int, what: str) -> JsonError:
    return JsonError("bad_json", offset, what)


def key_name(raw: bytes) -> bytes:
    """The decoded name of a key token (quotes included), as UTF-8 bytes."""
    inner = raw[1:-1]
    if b"\\" not in inner:
        return inner
    name: str = json.loads(raw)
    return name.encode("utf-8", "surrogatepass")


_HEX = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')


def string_error(buf: bytes, start: int, lim: int) -> JsonError:
    """The precise error of a string opening at `start` that STR did not match."""
    pos = start + 1
    while pos < lim:
        c = buf[pos]
        if c == B_QUOTE:
            break
        if c == 0x5C:  # backslash
            nxt = buf[pos + 1] if pos + 1 < lim else -1
            if nxt in _SIMPLE_ESCAPES:
                pos += 2
            elif nxt == 0x75:  # u
                if pos + 6 > lim or not all(h in _HEX for h in buf[pos + 2 : pos + 6]):
                    return bad(pos, "invalid \\u escape")
                pos += 6
            else:
                return bad(pos, "invalid escape")
        elif c < 0x20:
            return bad(pos, "control character in string")
        else:
            pos += 1
    return bad(start, "unterminated string")


def scan_scalar(buf: bytes, pos: int, lim: int) -> tuple[int, int]:
    """Scan a non-container value at pos (< lim); returns (end, kind)."""
    c = buf[pos]
    if c == B_QUOTE:
        m = STR.match(buf, pos, lim)
        if m is None:
            raise string_error(buf, pos, lim)
        return m.end(), K_STR
    if c in _NUM_START:
        m = _NUM.match(buf, pos, lim)
        if m is None:
            raise bad(pos, "invalid number")
        return m.end(), (K_INT if m.lastindex is None else K_NUM)
    for lit in (b"true", b"false", b"null"):
        if buf.startswith(lit, pos, lim):
            return pos + len(lit), K_LIT
    raise bad(pos, "unexpected character")


# One branch per JSON token class, like the Rust scanner it mirrors: splitting it would add a
# call per member on the twin's hot path.
def skip_container(  # noqa: C901
    buf: bytes, pos: int, lim: int, depth: int, max_depth: int
) -> int:
    """Validate the array or object opening at pos (at nesting depth `depth`); returns its end."""
    if depth > max_depth:
        raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    flat = _FLAT.match(buf, pos, lim)
    if flat is not None:
        return flat.end()
    stack = [buf[pos]]
    pos += 1
    ws = skip_ws
    keym = KEY.match
    sepm = SEP.match
    expect_first = True
    while True:
        top = stack[-1]
        if expect_first:
            expect_first = False
            pos = ws(buf, pos, lim).end()
            if pos >= lim:
                raise bad(pos, "unexpected end of input")
            c = buf[pos]
            if (c == B_RBRACE and top == B_LBRACE) or (c == B_RBRACK and top == B_LBRACK):
                stack.pop()
                pos += 1
                if not stack:
                    return pos
                top = stack[-1]
                # fall through to "after value"
            else:
                if top == B_LBRACE:
                    pos = member_key(buf, pos, lim)
                pos = ws(buf, pos, lim).end()
                if pos >= lim:
                    raise bad(pos, "unexpected end of input")
                c = buf[pos]
                if c == B_LBRACE or c == B_LBRACK:
                    if depth + len(stack) > max_depth:
                        raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
                    stack.append(c)
                    pos += 1
                    expect_first = True
                    continue
                pos = scan_scalar(buf, pos, lim)[0]
        # after a value: a separator or the closer of the innermost container
        m = sepm(buf, pos, lim)
        if m is None:
            pos = ws(buf, pos, lim).end()
            raise bad(pos, "unexpected end of input" if pos >= lim else "expected ',' or a closing bracket")
        c = buf[m.start(1)]
        if c == B_COMMA:
            pos = m.end()
            if top == B_LBRACE:
                km = keym(buf, pos, lim)
                pos = km.end() if km is not None else member_key(buf, pos, lim)
            pos = ws(buf, pos, lim).end()
            if pos >= lim:
                raise bad(pos, "unexpected end of input")
            c = buf[pos]
            if c == B_LBRACE or c == B_LBRACK:
                if depth + len(stack) > max_depth:
                    raise JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
                stack.append(c)
                pos += 1
                expect_first = True
                continue
            pos = scan_scalar(buf, pos, lim)[0]
            # loop back to "after value" without the expect_first branch
            continue
        if (c == B_RBRACE and top == B_LBRACE) or (c == B_RBRACK and top == B_LBRACK):
            stack.pop()
            pos = m.end()
            if not stack:
                return pos
            continue
        raise bad(m.start(1), "expected ',' or a closing bracket")


def member_key(buf: bytes, pos: int, lim: int) -> int:
    """Scan `"key" :` at pos (whitespace allowed around); returns the offset after the colon."""
    m = KEY.match(buf, pos, lim)
    if m is not None:
        return m.end()
    pos = skip_ws(buf, pos, lim).end()
    if pos >= lim:
        raise bad(pos, "unexpected end of input")
    if buf[pos] != B_QUOTE:
        raise bad(pos, "expected a string key")
    sm = STR.match(buf, pos, lim)
    if sm is None:
        raise string_error(buf, pos, lim)
    pos = skip_ws(buf, sm.end(), lim).end()
    if pos >= lim:
        raise bad(pos, "unexpected end of input")
    raise bad(pos, "expected ':'")


def scan_value(buf: bytes, pos: int, lim: int, depth: int, max_depth: int) -> tuple[int, int]:
    """Scan any value at pos (leading whitespace already skipped); returns (end, kind)."""
    if pos >= lim:
        raise bad(pos, "unexpected end of input")
    c = buf[pos]
    if c == B_LBRACE:
        return skip_container(buf, pos, lim, depth, max_depth), K_OBJ
    if c == B_LBRACK:
        return skip_container(buf, pos, lim, depth, max_depth), K_ARR
    return scan_scalar(buf, pos, lim)


def after_value(buf: bytes, pos: int, lim: int, closer: int) -> tuple[int, bool]:
    """After a member/element: (offset after the separator, True if it was the closer)."""
    m = SEP.match(buf, pos, lim)
    if m is None:
        pos = skip_ws(buf, pos, lim).end()
        raise bad(pos, "unexpected end of input" if pos >= lim else "expected ',' or a closing bracket")
    c = buf[m.start(1)]
    if c == B_COMMA:
        return m.end(), False
    if c == closer:
        return m.end(), True
    raise bad(m.start(1), "expected ',' or a closing bracket")


# Strict mode. A double overflows only past 1.8e308: with an exponent of at most two digits
# that takes 200 digits or more, so a body without a 3-digit exponent, a 200-digit run or a
# surrogate escape holds no unsupported value (false alarms only cost the exact check).
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|[eE][-+]?[0-9]{3}|[0-9]{200}")
# the tokens the exact check looks at: a whole string, an unfinished one (where the syntax
# error is), a number
_TOKEN = re.compile(b"(" + _RX_STR + rb')|(")|(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)')
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)")


def may_be_unsupported(buf: bytes) -> bool:
    """False when `buf` surely holds no value strict mode refuses."""
    return _SUSPECT.search(buf) is not None


def unsupported_value(buf: bytes, start: int, end: int) -> tuple[int, str] | None:
    """The first value strict mode refuses in `buf[start:end]` (whole tokens of valid JSON up to
    a syntax error, if any, at `end`): (offset, what), as the Rust scanner reports it."""
    for m in _TOKEN.finditer(buf, start, end):
        kind = m.lastindex
        if kind == 2:  # a string the syntax error cuts: nothing after it counts
            return None
        tok = m.group(kind or 0)
        if kind == 1:
            if b"\\" in tok:
                what = _surrogate_error(tok)
                if what is not None:
                    return m.start(), what
        elif (len(tok) > 300 or b"e" in tok or b"E" in tok) and float(tok) in (_INF, -_INF):
            return m.start(), "number is infinity when parsed as a double"
    return None


_INF = float("inf")


def _surrogate_error(tok: bytes) -> str | None:
    """Why a string token's surrogate escapes are unpaired (orjson's rule), or None."""
    escapes = list(_ESCAPE.finditer(tok))
    i = 0
    while i < len(escapes):
        e = escapes[i]
        i += 1
        if e.group(1) is None:
            continue
        unit = int(e.group(1), 16)
        if 0xDC00 <= unit < 0xE000:
            return "lone low surrogate in string"
        if 0xD800 <= unit < 0xDC00:
            nxt = escapes[i] if i < len(escapes) else None
            pair = nxt.group(1) if nxt is not None and nxt.start() == e.end() else None
            if pair is None or not 0xDC00 <= int(pair, 16) < 0xE000:
                return "high surrogate without a low one in string"
            i += 1
    return None
