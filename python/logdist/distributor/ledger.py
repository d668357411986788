"""The packet ledger: the one owner of the (emitter_id, packet_id) dedup window.

It holds the keys of recent packets (oldest first, bounded by `window`), and the packets being
stored right now, so that a retry arriving while its first copy is still being written waits
for that write's verdict instead of being stored twice. The write-ahead log persists the
window through two explicit hooks: it is handed `keys` (a snapshot for its keys file), and its
`recover(remember)` hands back the keys of the previous run, oldest first.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict

#: a packet's dedup key: (emitter_id, packet_id)
Key = tuple[str, str]


class PacketLedger:
    __slots__ = ("_keys", "_storing", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._keys: OrderedDict[Key, None] = OrderedDict()
        self._storing: dict[Key, asyncio.Future[bool]] = {}

    @staticmethod
    def key(emitter_id: str | None, packet_id: str | None) -> Key | None:
        """The key of a packet; None when it has no packet_id (it cannot be deduplicated)."""
        if packet_id is None:
            return None
        # interned: 100k remembered keys share a handful of emitter strings
        return (sys.intern(emitter_id or ""), packet_id)

    def __len__(self) -> int:
        return len(self._keys)

    def seen(self, key: Key) -> bool:
        """True when the packet was stored already (and keep its key fresh)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def storing(self, key: Key) -> asyncio.Future[bool] | None:
        """The verdict (stored or not) of the same packet being stored right now, if any."""
        return self._storing.get(key)

    def begin(self, key: Key | None) -> asyncio.Future[bool] | None:
        """Mark the packet as being stored; `end` gives the verdict to whoever waits on it."""
        if key is None or key in self._storing:
            return None
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._storing[key] = done
        return done

    def end(self, key: Key | None, done: asyncio.Future[bool] | None, stored: bool) -> None:
        if done is not None and key is not None:
            del self._storing[key]
            done.set_result(stored)

    def remember(self, key: Key) -> None:
        """Add a key as the newest; the oldest go once the window is full."""
        keys = self._keys
        keys[key] = None
        keys.move_to_end(key)
        while len(keys) > self.window:
            keys.popitem(last=False)

    def resize(self, window: int) -> None:
        self.window = window
        while len(self._keys) > window:
            self._keys.popitem(last=False)

    def keys(self) -> list[Key]:
        """A snapshot of the window, oldest first (for the write-ahead log's keys file)."""
        return list(self._keys)
