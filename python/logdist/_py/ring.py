"""The bounded FIFO of bytes objects (twin of crates/wlb/src/ring.rs)."""

from __future__ import annotations

import threading
from collections import deque

from logdist._py.convert import as_int

__all__ = ["RingBuffer"]


class RingBuffer:
    """Bounded MPMC FIFO of bytes objects (a lock here; lock-free in Rust). Stores the object itself."""

    __slots__ = ("_capacity", "_items", "_lock")

    def __init__(self, capacity: int) -> None:
        cap = as_int(capacity, "capacity")
        if cap < 1:
            raise ValueError(f"capacity must be >= 1, got {cap}")
        self._capacity = cap
        self._items: deque[bytes] = deque()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def is_empty(self) -> bool:
        return not self._items

    def is_full(self) -> bool:
        return len(self._items) >= self._capacity

    def push(self, item: bytes) -> bytes | None:
        if not isinstance(item, bytes):
            raise TypeError(f"RingBuffer holds bytes, not {type(item).__name__}")
        with self._lock:
            if len(self._items) >= self._capacity:
                return item
            self._items.append(item)
            return None

    def pop(self) -> bytes | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def pop_many(self, max_items: int, max_bytes: int) -> list[bytes]:
        max_items = as_int(max_items, "max_items")
        max_bytes = as_int(max_bytes, "max_bytes")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        out: list[bytes] = []
        with self._lock:
            items = self._items
            if not items:
                return out
            first = items.popleft()
            out.append(first)
            total = len(first)
            while items and len(out) < max_items:
                size = len(items[0])
                if total + size > max_bytes:
                    break
                total += size
                out.append(items.popleft())
        return out

    def __repr__(self) -> str:
        return f"RingBuffer(len={len(self._items)}, capacity={self._capacity})"
