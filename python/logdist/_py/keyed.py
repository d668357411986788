"""Keyed placement by weighted rendezvous hashing (twin of crates/wlb/src/keyed.rs).

A key's score on a target is `-weight / log(u)`, u in (0, 1) from a hash of the key and of the
target's name; the key goes to the candidate with the highest score (the first of equal ones).
The hash is FNV-1a 64 finished by the SplitMix64 mixer, bit for bit as in Rust, and
`math.log` is the same libm `log` that Rust's `f64::ln` calls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from logdist._py.rng import M64, MIX1, MIX2

__all__ = ["KeyPath", "key_hash", "message_key", "mix64", "parse_route_key", "pick", "score"]

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_UNIT = 1.0 / 9_007_199_254_740_992.0  # 2**-53

#: a route key's member path in a message; None for "random"
KeyPath = tuple[str, ...] | None


def mix64(z: int) -> int:
    """The SplitMix64 output mixer."""
    z = ((z ^ (z >> 30)) * MIX1) & M64
    z = ((z ^ (z >> 27)) * MIX2) & M64
    return z ^ (z >> 31)


def fnv1a(data: bytes, h: int = _FNV_OFFSET) -> int:
    """FNV-1a 64 over data, continuing from h (unmixed)."""
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & M64
    return h


def key_hash(key: bytes) -> int:
    """The hash of a key (or of a target name)."""
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    return mix64(fnv1a(bytes(key)))


def score(kh: int, th: int, weight: float) -> float:
    """The score of a key hash on a target of that name hash and weight."""
    return -weight / math.log(((mix64(kh ^ th) >> 11) + 0.5) * _UNIT)


def pick(kh: int, candidates: Iterable[tuple[str, int, float]]) -> str | None:
    """The name of the candidate (name, name hash, weight) with the highest score, or None."""
    best: str | None = None
    best_score = 0.0
    for name, th, w in candidates:
        s = score(kh, th, w)
        if best is None or s > best_score:
            best, best_score = name, s
    return best


def parse_route_key(spec: object) -> tuple[str, KeyPath]:
    """("random" | "message_id" | "field", path) for a route_key argument; ValueError otherwise."""
    if spec == "random":
        return "random", None
    if spec == "message_id":
        return "message_id", ("id",)
    if isinstance(spec, str) and all(spec.split(".")):
        return "field", tuple(spec.split("."))
    raise ValueError(
        f"route_key must be 'random', 'message_id' or a dotted field path such as 'metadata.trace_id': {spec}"
    )


class _Num(str):
    """A JSON number as written (the key of a number is its text)."""

    __slots__ = ()


def message_key(text: bytes, path: tuple[str, ...]) -> bytes | None:
    """The route key of one message's JSON text: a string's UTF-8 bytes (lone surrogates as
    Python's surrogatepass writes them), a number's text, or None when the member is missing or
    holds anything else. The last member of a name wins, as in the parsed object."""
    value: object = json.loads(text, parse_int=_Num, parse_float=_Num)
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    if isinstance(value, str):  # _Num included
        return value.encode("utf-8", "surrogatepass")
    return None
