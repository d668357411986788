"""SplitMix64, the one generator behind every random draw (twin of crates/wlb/src/rng.rs).

The constants are public inside the twin because `alias` and `router` inline the generator in
their sampling loops: that loop is the whole cost of sampling in Python.
"""

from __future__ import annotations

__all__ = ["F53", "GOLDEN", "M64", "MIX1", "MIX2", "SplitMix64", "seed_state"]

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
F53 = 2.0**-53


class SplitMix64:
    """SplitMix64 PRNG; the state is the seed taken mod 2**64."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed_state(seed)

    def next_u64(self) -> int:
        self._state = s = (self._state + GOLDEN) & M64
        z = ((s ^ (s >> 30)) * MIX1) & M64
        z = ((z ^ (z >> 27)) * MIX2) & M64
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * F53

    def __repr__(self) -> str:
        return f"SplitMix64(state={self._state:#018x})"


def seed_state(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"seed must be an int, not {type(value).__name__}")
    return value & M64
