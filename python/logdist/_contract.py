"""The static contract of the core: one Protocol per public class and function.

Both backends, the Rust extension `logdist._wlb` (typed by `_wlb.pyi`) and the pure-Python
twin `logdist._py`, must match these Protocols; the `TYPE_CHECKING` block at the end assigns
each backend's classes and functions to variables typed with them, so mypy fails when either
one drifts (a renamed method, a changed parameter or return type). The behaviour itself (the
same results, errors and files) is checked at run time by tests/core and tests/wal, and the
written contract of each algorithm is in `_wlb.pyi`.

For a class `X` there are two Protocols: `X`, what an instance offers, and `XClass`, the
constructor (its call signature, returning an `X`). Nothing here runs in production: the module
only imports typing.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

__all__ = [
    "AliasTable",
    "AliasTableClass",
    "BatchAnalyzer",
    "BatchAnalyzerClass",
    "KeyHash",
    "RetryScheduler",
    "RetrySchedulerClass",
    "RingBuffer",
    "RingBufferClass",
    "RoutePacket",
    "RoutedPacket",
    "Router",
    "RouterClass",
    "SmoothWeighted",
    "SmoothWeightedClass",
    "SplitMix64",
    "SplitMix64Class",
    "Wal",
    "WalClass",
]

Tally = list[tuple[str | None, int]]
IngestResult = tuple[int, int, Tally, Tally, list[str | int | float] | None]


class SplitMix64(Protocol):
    def next_u64(self) -> int: ...
    def next_f64(self) -> float: ...


class SplitMix64Class(Protocol):
    def __call__(self, seed: int) -> SplitMix64: ...


class AliasTable(Protocol):
    def __len__(self) -> int: ...
    @property
    def prob(self) -> list[float]: ...
    @property
    def alias(self) -> list[int]: ...
    def sample(self, u1: float, u2: float) -> int: ...
    def sample_many(self, count: int, seed: int) -> list[int]: ...
    def histogram(self, count: int, seed: int) -> list[int]: ...


class AliasTableClass(Protocol):
    def __call__(self, weights: Sequence[float]) -> AliasTable: ...


class SmoothWeighted(Protocol):
    def __len__(self) -> int: ...
    def next(self) -> int: ...
    def next_many(self, count: int) -> list[int]: ...


class SmoothWeightedClass(Protocol):
    def __call__(self, weights: Sequence[int]) -> SmoothWeighted: ...


class Router(Protocol):
    @property
    def strategy(self) -> str: ...
    def set_target(self, name: str, weight: float) -> None: ...
    def remove_target(self, name: str) -> None: ...
    def set_eligible(self, name: str, eligible: bool) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, name: object, /) -> bool: ...
    def snapshot(self) -> list[tuple[str, float, bool]]: ...
    def shares(self) -> dict[str, float]: ...
    def pick(self, exclude: Collection[str] | None = None) -> str: ...
    def pick_key(self, key: bytes, exclude: Collection[str] | None = None) -> str: ...
    def pick_many(self, count: int) -> list[str]: ...


class RouterClass(Protocol):
    def __call__(self, strategy: str = "alias", seed: int = 0) -> Router: ...


class RingBuffer(Protocol):
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...
    def is_empty(self) -> bool: ...
    def is_full(self) -> bool: ...
    def push(self, item: bytes) -> bytes | None: ...
    def pop(self) -> bytes | None: ...
    def pop_many(self, max_items: int, max_bytes: int) -> list[bytes]: ...


class RingBufferClass(Protocol):
    def __call__(self, capacity: int) -> RingBuffer: ...


class RetryScheduler(Protocol):
    @property
    def MAX_RETRY_AFTER(self) -> float: ...  # the class constant
    def backoff(self, attempt: int, u: float) -> float: ...
    def schedule(self, token: int, now: float, attempt: int, retry_after: float | None = None) -> float: ...
    def pop_due(self, now: float, max_items: int = 1 << 30) -> list[int]: ...
    def next_deadline(self) -> float | None: ...
    def __len__(self) -> int: ...


class RetrySchedulerClass(Protocol):
    def __call__(
        self, base: float = 0.05, cap: float = 30.0, multiplier: float = 2.0, seed: int = 0
    ) -> RetryScheduler: ...


class RoutedPacket(Protocol):
    @property
    def emitter_id(self) -> str | None: ...
    @property
    def packet_id(self) -> str | None: ...
    @property
    def count(self) -> int: ...
    @property
    def batches(self) -> dict[str, bytes]: ...
    @property
    def counts(self) -> dict[str, int]: ...
    @property
    def unkeyed(self) -> int: ...


class KeyHash(Protocol):
    def __call__(self, key: bytes) -> int: ...


class OtlpLogsToMessages(Protocol):
    def __call__(self, body: bytes, max_records: int) -> tuple[bytes, int, int, str]: ...


R_contra = TypeVar("R_contra", bound=Router, contravariant=True)


class RoutePacket(Protocol[R_contra]):
    """route_packet of a backend; it takes that backend's own Router (R_contra)."""

    def __call__(
        self,
        body: bytes,
        router: R_contra | None,
        *,
        fallback_prefix: str,
        format: str = "auto",
        max_messages: int = 10_000,
        max_depth: int = 64,
        id_tag: str = "",
        strict: bool = True,
        route_key: str = "random",
        exclude: Collection[str] | None = None,
    ) -> RoutedPacket: ...


class BatchAnalyzer(Protocol):
    @property
    def capacity(self) -> int: ...
    @property
    def record_ids(self) -> bool: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: object, /) -> bool: ...
    def ingest(self, body: bytes) -> IngestResult: ...


class BatchAnalyzerClass(Protocol):
    def __call__(self, dedup_capacity: int = 1_000_000, record_ids: bool = False) -> BatchAnalyzer: ...


class Wal(Protocol):
    @property
    def path(self) -> str: ...
    def append(self, payload: bytes) -> int: ...
    def append_many(self, payloads: Sequence[bytes]) -> list[int]: ...
    def ack(self, lsns: Iterable[int]) -> int: ...
    def checkpoint(self) -> int: ...
    def reclaim(self) -> int: ...
    def replay(self) -> list[tuple[int, bytes]]: ...
    @property
    def recovery_notes(self) -> list[str]: ...
    @property
    def recovery_losses(self) -> list[tuple[str, int, int, int, int, list[int], bytes]]: ...
    def stats(self) -> dict[str, int | float]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


class WalClass(Protocol):
    def __call__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = 67108864,
        max_bytes: int = 1073741824,
        commit_delay_us: int = 0,
    ) -> Wal: ...


if TYPE_CHECKING:  # the check itself: mypy reads it, nothing runs
    from logdist import _py, _wlb

    rs_split_mix: SplitMix64Class = _wlb.SplitMix64
    rs_alias_table: AliasTableClass = _wlb.AliasTable
    rs_smooth_weighted: SmoothWeightedClass = _wlb.SmoothWeighted
    rs_router: RouterClass = _wlb.Router
    rs_ring_buffer: RingBufferClass = _wlb.RingBuffer
    rs_retry_scheduler: RetrySchedulerClass = _wlb.RetryScheduler
    rs_route_packet: RoutePacket[_wlb.Router] = _wlb.route_packet
    rs_batch_analyzer: BatchAnalyzerClass = _wlb.BatchAnalyzer
    rs_wal: WalClass = _wlb.Wal
    rs_version: str = _wlb.__version__
    rs_key_hash: KeyHash = _wlb.key_hash
    rs_otlp_logs_to_messages: OtlpLogsToMessages = _wlb.otlp_logs_to_messages

    py_split_mix: SplitMix64Class = _py.SplitMix64
    py_alias_table: AliasTableClass = _py.AliasTable
    py_smooth_weighted: SmoothWeightedClass = _py.SmoothWeighted
    py_router: RouterClass = _py.Router
    py_ring_buffer: RingBufferClass = _py.RingBuffer
    py_retry_scheduler: RetrySchedulerClass = _py.RetryScheduler
    py_route_packet: RoutePacket[_py.Router] = _py.route_packet
    py_batch_analyzer: BatchAnalyzerClass = _py.BatchAnalyzer
    py_wal: WalClass = _py.Wal
    py_version: str = _py.__version__
    py_key_hash: KeyHash = _py.key_hash
    py_otlp_logs_to_messages: OtlpLogsToMessages = _py.otlp_logs_to_messages
