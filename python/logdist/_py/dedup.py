"""The analyzer's bounded dedup window of ids (twin of crates/wlb/src/dedup.rs)."""

from __future__ import annotations

from typing import Any

__all__ = ["DedupWindow"]


class DedupWindow:
    """The last ~`capacity` ids in two generations of sets.

    A fresh id goes into `current`; when `current` holds capacity//2 ids it becomes `previous`
    and the old `previous` is dropped whole. So between capacity//2 and capacity ids are
    remembered, memory is bounded, and there is no per-id eviction work.
    """

    __slots__ = ("current", "half", "previous")

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("dedup window must hold at least 2 ids")
        self.half = capacity // 2
        self.current: set[Any] = set()
        self.previous: set[Any] = set()

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def __contains__(self, item: object) -> bool:
        return item in self.current or item in self.previous

    def add(self, item: Any) -> None:
        """Remember one id (known not to be remembered), rolling over at half capacity."""
        cur = self.current
        cur.add(item)
        if len(cur) >= self.half:
            self.previous = cur
            self.current = set()

    def add_all(self, ids: Any) -> None:
        """add() of each id in order (ids known not to be remembered)."""
        if len(self.current) + len(ids) < self.half:  # no rollover: one C-level union
            self.current.update(ids)
            return
        for i in ids:
            self.add(i)
