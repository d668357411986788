"""Argument conversions shared by the twin's classes (twin of crates/wlb-py/src/convert.rs).

They accept and reject exactly what the Rust binding's argument extraction does, with the
same exception types, so both backends fail the same way on the same bad argument.
"""

from __future__ import annotations

__all__ = ["as_count", "as_float", "as_int", "bounded"]


def as_int(value: object, what: str) -> int:
    if not isinstance(value, int):  # bool is an int, as for the Rust backend's integer arguments
        if hasattr(type(value), "__index__"):
            return int(value.__index__())  # type: ignore[attr-defined]
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def as_float(value: object, what: str) -> float:
    """A real number, as the Rust backend's f64 arguments take it (so no str)."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{what} must be a real number, not {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]


def bounded(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise OverflowError(f"{what} {value} does not fit in [{lo}, {hi}]")
    return value


def as_count(value: object, what: str) -> int:
    n = as_int(value, what)
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n
