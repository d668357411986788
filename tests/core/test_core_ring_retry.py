"""RingBuffer and RetryScheduler on both backends."""

from __future__ import annotations

import math
import random
import threading
import time
from types import ModuleType
from typing import Any

import pytest

# ------------------------------------------------------------------------------ RingBuffer


def test_ring_fifo_and_edges(impl: ModuleType) -> None:
    ring = impl.RingBuffer(3)
    assert ring.capacity == 3 and len(ring) == 0 and ring.is_empty() and not ring.is_full()
    assert ring.pop() is None
    assert ring.pop_many(5, 1000) == []
    items = [b"one", b"two", b"three"]
    for item in items:
        assert ring.push(item) is None
    assert len(ring) == 3 and ring.is_full() and not ring.is_empty()
    extra = b"four" * 3
    assert ring.push(extra) is extra  # full: the same object comes back
    assert [ring.pop(), ring.pop()] == [b"one", b"two"]
    assert ring.push(b"five") is None
    assert ring.pop_many(10, 1 << 20) == [b"three", b"five"]
    assert ring.pop() is None and ring.is_empty()


def test_ring_stores_the_object_itself(impl: ModuleType) -> None:
    ring = impl.RingBuffer(4)
    item = bytes(range(256)) * 10
    ring.push(item)
    assert ring.pop() is item
    ring.push(item)
    assert ring.pop_many(1, 0)[0] is item


@pytest.mark.parametrize("capacity", [0, -1])
def test_ring_rejects_capacity_below_one(impl: ModuleType, capacity: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        impl.RingBuffer(capacity)


def test_ring_capacity_one(impl: ModuleType) -> None:
    ring = impl.RingBuffer(1)
    assert ring.push(b"a") is None
    b = b"b"
    assert ring.push(b) is b
    assert ring.pop() == b"a"
    assert ring.push(b) is None


def test_ring_pop_many_limits(impl: ModuleType) -> None:
    ring = impl.RingBuffer(16)
    for i in range(10):
        ring.push(bytes([65 + i]) * (i + 1))  # sizes 1, 2, ..., 10
    assert ring.pop_many(2, 1000) == [b"A", b"BB"]  # max_items
    assert ring.pop_many(10, 7) == [b"CCC", b"DDDD"]  # 3 + 4 = 7 <= 7, + 5 would exceed
    assert ring.pop_many(10, 1) == [b"EEEEE"]  # the first item is always taken
    assert ring.pop_many(10, 0) == [b"FFFFFF"]
    assert ring.pop_many(1, 10_000) == [b"G" * 7]
    assert ring.pop_many(100, 17) == [b"H" * 8, b"I" * 9]
    with pytest.raises(ValueError):
        ring.pop_many(0, 100)
    assert ring.pop_many(100, 100) == [b"J" * 10]
    assert ring.pop_many(100, 100) == []


def test_ring_empty_bytes_are_items(impl: ModuleType) -> None:
    ring = impl.RingBuffer(3)
    ring.push(b"")
    ring.push(b"")
    assert len(ring) == 2
    assert ring.pop_many(5, 0) == [b"", b""]


def _produce(ring: Any, p: int, per_producer: int, deadline: float, errors: list[BaseException]) -> None:
    """Push per_producer items "p:i" in order, retrying while the ring is full."""
    try:
        for i in range(per_producer):
            item = f"{p}:{i}".encode()
            while ring.push(item) is not None:
                if time.monotonic() > deadline:
                    raise TimeoutError("producer stuck")
                time.sleep(0)
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


def _consume(
    ring: Any, c: int, got: list[bytes], done: threading.Event, deadline: float, errors: list[BaseException]
) -> None:
    """Pop into `got` (pop_many for odd c, pop for even c) until the producers are done and it is empty."""
    try:
        while True:
            batch = ring.pop_many(7, 40) if c % 2 else [x for x in [ring.pop()] if x is not None]
            if batch:
                got.extend(batch)
            elif done.is_set() and ring.is_empty():
                return
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError("consumer stuck")
                time.sleep(0)
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


def test_ring_threaded_producers_consumers_lose_and_duplicate_nothing(impl: ModuleType) -> None:
    producers, per_producer, consumers = 4, 5000, 3
    ring = impl.RingBuffer(64)
    got: list[list[bytes]] = [[] for _ in range(consumers)]
    done = threading.Event()
    errors: list[BaseException] = []
    deadline = time.monotonic() + 100

    cthreads = [
        threading.Thread(target=_consume, args=(ring, c, got[c], done, deadline, errors)) for c in range(consumers)
    ]
    pthreads = [
        threading.Thread(target=_produce, args=(ring, p, per_producer, deadline, errors)) for p in range(producers)
    ]
    for t in cthreads + pthreads:
        t.start()
    for t in pthreads:
        t.join()
    done.set()
    for t in cthreads:
        t.join()
    assert not errors, errors
    everything = [x for g in got for x in g]
    expected = {f"{p}:{i}".encode() for p in range(producers) for i in range(per_producer)}
    assert len(everything) == len(expected)  # no duplicates
    assert set(everything) == expected  # no loss
    # each consumer sees each producer's items in order (FIFO per producer)
    for g in got:
        last: dict[bytes, int] = {}
        for x in g:
            p, i = x.split(b":")
            assert int(i) > last.get(p, -1)
            last[p] = int(i)


# -------------------------------------------------------------------------- RetryScheduler


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": -1.0},
        {"base": 1.0, "cap": 0.5},
        {"multiplier": 0.99},
        {"multiplier": 16.01},
        {"base": math.nan},
        {"cap": math.inf},
        {"multiplier": math.nan},
    ],
)
def test_retry_rejects_bad_parameters(impl: ModuleType, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        impl.RetryScheduler(**kwargs)


def test_retry_accepts_edge_parameters(impl: ModuleType) -> None:
    impl.RetryScheduler(base=1.0, cap=1.0, multiplier=1.0)
    impl.RetryScheduler(base=1e-9, cap=1e9, multiplier=16.0)
    assert impl.RetryScheduler.MAX_RETRY_AFTER == 3600.0


def ref_ceiling(base: float, cap: float, mult: float, attempt: int) -> float:
    return cap if attempt >= 64 else min(cap, base * mult**attempt)


@pytest.mark.parametrize(
    "params", [(0.05, 30.0, 2.0), (0.1, 5.0, 1.5), (1.0, 1.0, 1.0), (0.001, 1e6, 16.0), (0.3, 7.0, 3.7)]
)
def test_retry_backoff_bounds_and_formula(impl: ModuleType, params: tuple[float, float, float]) -> None:
    base, cap, mult = params
    sched = impl.RetryScheduler(base, cap, mult, 0)
    rnd = random.Random(5)
    for attempt in [*range(0, 80), 100, 1000, 2**31 - 1]:
        for u in (0.0, 0.5, 1.0 - 2.0**-53, rnd.random()):
            b = sched.backoff(attempt, u)
            assert 0.0 <= b <= cap
            assert b == u * ref_ceiling(base, cap, mult, attempt)


def test_retry_backoff_rejects_bad_arguments(impl: ModuleType) -> None:
    sched = impl.RetryScheduler()
    for u in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError):
            sched.backoff(1, u)
    with pytest.raises((ValueError, OverflowError)):
        sched.backoff(-1, 0.5)


def test_retry_schedule_draws_full_jitter(impl: ModuleType) -> None:
    sched = impl.RetryScheduler(0.05, 30.0, 2.0, seed=3)
    rng = impl.SplitMix64(3)
    for attempt in range(20):
        deadline = sched.schedule(attempt, 100.0, attempt)
        assert deadline == 100.0 + rng.next_f64() * ref_ceiling(0.05, 30.0, 2.0, attempt)
        assert 100.0 <= deadline <= 130.0


def test_retry_fixed_seed_is_stable(impl: ModuleType) -> None:
    sched = impl.RetryScheduler(seed=3)
    assert [sched.schedule(i, 100.0, i) for i in range(5)] == [
        100.00567251710285,
        100.0700293513593,
        100.12259493650933,
        100.02914669470871,
        100.17315128702519,
    ]


def test_retry_honours_retry_after_without_drawing(impl: ModuleType) -> None:
    sched = impl.RetryScheduler(seed=4)
    assert sched.schedule(1, 10.0, 0, retry_after=2.5) == 12.5
    assert sched.schedule(2, 10.0, 5, retry_after=0.0) == 10.0
    assert sched.schedule(3, 10.0, 5, retry_after=-7.0) == 10.0  # never below now
    assert sched.schedule(4, 10.0, 5, retry_after=1e9) == 10.0 + 3600.0
    assert sched.schedule(5, 10.0, 5, retry_after=math.inf) == 10.0 + 3600.0
    # no draw was consumed by the retry_after schedules
    fresh = impl.RetryScheduler(seed=4)
    assert sched.schedule(6, 0.0, 3) == fresh.schedule(6, 0.0, 3)


def test_retry_nan_retry_after_is_due_now(impl: ModuleType) -> None:
    # A NaN deadline would never be due and would break the heap order: a stuck message.
    # NaN is taken as 0.0 (IEEE maxNum, Rust's f64::max), so the item is retried now.
    sched = impl.RetryScheduler(seed=4)
    assert sched.schedule(1, 10.0, 0, retry_after=math.nan) == 10.0
    sched.schedule(2, 5.0, 0, retry_after=0.0)
    assert sched.next_deadline() == 5.0
    assert sched.pop_due(10.0) == [2, 1]


def test_retry_tokens_are_64_bit_signed(impl: ModuleType) -> None:
    sched = impl.RetryScheduler()
    sched.schedule(2**63 - 1, 0.0, 0, retry_after=0.0)
    sched.schedule(-(2**63), 0.0, 0, retry_after=0.0)
    assert sched.pop_due(0.0) == [2**63 - 1, -(2**63)]
    for token in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError):
            sched.schedule(token, 0.0, 0, retry_after=0.0)


def test_retry_due_order_and_next_deadline(impl: ModuleType) -> None:
    sched = impl.RetryScheduler()
    assert sched.next_deadline() is None and len(sched) == 0 and sched.pop_due(1e18) == []
    for token, at in [(1, 5.0), (2, 3.0), (3, 5.0), (4, 1.0), (5, 3.0), (6, 9.0)]:
        sched.schedule(token, at, 0, retry_after=0.0)
    assert len(sched) == 6
    assert sched.next_deadline() == 1.0
    assert sched.pop_due(0.5) == []
    assert sched.pop_due(3.0) == [4, 2, 5]  # deadline order, ties in insertion order
    assert sched.next_deadline() == 5.0
    assert sched.pop_due(100.0, max_items=1) == [1]
    assert sched.pop_due(100.0) == [3, 6]
    assert sched.next_deadline() is None and len(sched) == 0


def test_retry_cross_backend_identical(rs: ModuleType, py: ModuleType) -> None:
    rnd = random.Random(17)
    for _ in range(20):
        base = rnd.uniform(0.001, 1.0)
        cap = base * rnd.uniform(1.0, 1000.0)
        mult = rnd.uniform(1.0, 16.0)
        seed = rnd.getrandbits(64)
        a, b = rs.RetryScheduler(base, cap, mult, seed), py.RetryScheduler(base, cap, mult, seed)
        for token in range(200):
            attempt = rnd.randint(0, 70)
            now = rnd.uniform(0, 1000)
            ra = rnd.choice([None, None, rnd.uniform(-5, 5000)])
            assert a.schedule(token, now, attempt, ra) == b.schedule(token, now, attempt, ra)
            u = rnd.random()
            assert a.backoff(attempt, u) == b.backoff(attempt, u)
            if token % 17 == 0:
                t = rnd.uniform(0, 1500)
                assert a.next_deadline() == b.next_deadline()
                limit = rnd.randint(1, 50)
                assert a.pop_due(t, limit) == b.pop_due(t, limit)
        assert a.pop_due(1e9) == b.pop_due(1e9)
