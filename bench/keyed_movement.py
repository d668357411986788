"""How keyed routing (route_key) moves keys when the analyzers change, measured on 100,000 keys.

Prints the share of keys each analyzer gets against its weight, and the share of keys that move
when an analyzer leaves, when it is ejected and returns, and when a weight changes, beside the
least that must move (the total variation distance between the two share vectors). Usage:

    .venv/bin/python bench/keyed_movement.py [keys]
"""

from __future__ import annotations

import sys
from typing import Any

from logdist import core

WEIGHTS = {"a1": 0.4, "a2": 0.3, "a3": 0.2, "a4": 0.1}


def router(weights: dict[str, float]) -> Any:
    r = core.Router("alias", 0)
    for aid, w in weights.items():
        r.set_target(aid, w)
    return r


def placement(r: Any, keys: list[bytes]) -> list[str]:
    return [r.pick_key(k) for k in keys]


def least_move(old: dict[str, float], new: dict[str, float]) -> float:
    """The least share of keys any placement must move: sum of the positive share differences."""
    so, sn = sum(old.values()), sum(new.values())
    return sum(max(0.0, old[a] / so - new.get(a, 0.0) / sn) for a in old)


def moved(a: list[str], b: list[str]) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y) / len(a)


def main(n: int) -> None:
    keys = [f"msg-{i}".encode() for i in range(n)]
    base = placement(router(WEIGHTS), keys)
    print(f"backend {core.BACKEND}, {n} keys, weights {WEIGHTS}")
    for aid, w in WEIGHTS.items():
        print(f"  share of {aid}: {base.count(aid) / n:.4f} (weight {w})")
    cases = [
        ("a3 (0.2) leaves", {k: v for k, v in WEIGHTS.items() if k != "a3"}),
        ("a1 0.4 -> 0.3", {**WEIGHTS, "a1": 0.3}),
        ("a4 0.1 -> 0.2", {**WEIGHTS, "a4": 0.2}),
        ("a5 (0.25) joins", {**WEIGHTS, "a5": 0.25}),
    ]
    for label, weights in cases:
        after = placement(router(weights), keys)
        print(f"  {label:<16} moved {moved(base, after):.4f}, least possible {least_move(WEIGHTS, weights):.4f}")
    r = router(WEIGHTS)
    r.set_eligible("a2", False)
    during = placement(r, keys)
    r.set_eligible("a2", True)
    print(
        f"  a2 ejected      moved {moved(base, during):.4f} (its share), "
        f"back home after it returns: {placement(r, keys) == base}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
