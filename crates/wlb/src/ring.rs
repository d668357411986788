//! A bounded lock-free multi-producer multi-consumer FIFO (Vyukov's bounded queue, in the
//! layout of crossbeam's `ArrayQueue`).
//!
//! Every slot carries a `stamp`: for a slot that may be written, `stamp == tail` (lap and
//! index); after a write, `stamp == tail + 1`; after a read, `stamp == head + one_lap`. Head
//! and tail hold an index in the low bits and a lap counter in the high bits, so a stale
//! position can never be mistaken for a current one (until the counter wraps around usize).
//!
//! Each slot also holds a `u64` tag set by the producer (the byte length of a payload, for
//! example), which lets a consumer decide *before* committing whether it wants the next item
//! ([`RingBuffer::pop_if`]); that is how `pop_many` stops at a byte budget without ever having
//! to put an item back.
//!
//! This is the only module of the crate with `unsafe` code. Under `--cfg loom` the atomics and
//! the cell come from loom, so `tests/loom_ring.rs` model-checks exactly this code.

use std::fmt;
use std::mem::MaybeUninit;

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

/// A cell with loom's closure-based API, so the same code runs under loom and natively.
#[cfg(loom)]
use loom::cell::UnsafeCell;

#[cfg(not(loom))]
#[derive(Debug)]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    fn new(data: T) -> Self {
        Self(std::cell::UnsafeCell::new(data))
    }
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps head and tail on separate cache lines so producers and consumers do not false-share.
#[repr(align(128))]
struct CachePadded<T>(T);

/// Spins, then yields to the scheduler. Under loom every retry yields, which loom requires of
/// spin loops.
struct Backoff {
    #[cfg_attr(loom, allow(dead_code))]
    step: u32,
}

impl Backoff {
    fn new() -> Self {
        Self { step: 0 }
    }

    /// After a lost race: retry soon.
    fn spin(&mut self) {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        {
            for _ in 0..(1u32 << self.step.min(6)) {
                std::hint::spin_loop();
            }
            self.step += 1;
        }
    }

    /// While another thread finishes a write or read in progress: back off harder.
    fn snooze(&mut self) {
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        {
            if self.step <= 6 {
                for _ in 0..(1u32 << self.step) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            self.step += 1;
        }
    }
}

struct Slot<T> {
    stamp: AtomicUsize,
    tag: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A capacity the ring cannot have, one variant per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityError {
    /// Capacity 0.
    Zero,
    /// A capacity too large to index or to allocate.
    TooLarge(usize),
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero => f.write_str("capacity must be at least 1"),
            Self::TooLarge(cap) => write!(f, "capacity {cap} is too large"),
        }
    }
}

impl std::error::Error for CapacityError {}

/// A bounded MPMC FIFO. `push` hands the item back when full; nothing ever blocks.
///
/// # Performance
///
/// `push` and `pop` are lock-free: one compare-and-swap on the tail or the head when there is
/// no contention, with exponential backoff when there is. Nothing allocates after `new`.
pub struct RingBuffer<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    buffer: Box<[Slot<T>]>,
    cap: usize,
    /// The smallest power of two above `cap`: adding it to a position moves to the next lap.
    one_lap: usize,
}

// SAFETY: the queue hands each `T` from exactly one producer to exactly one consumer (the
// stamp protocol gives a slot to one writer, then one reader), so sharing the queue between
// threads only ever moves `T` values across threads: `T: Send` is what that needs.
unsafe impl<T: Send> Sync for RingBuffer<T> {}
// SAFETY: as above; the queue owns its items, so sending it sends `T`s.
unsafe impl<T: Send> Send for RingBuffer<T> {}

impl<T> RingBuffer<T> {
    /// A queue holding at most `cap` items; `cap` must be at least 1.
    ///
    /// # Errors
    ///
    /// [`CapacityError::Zero`] for 0, [`CapacityError::TooLarge`] for a capacity that cannot
    /// be indexed or allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::{CapacityError, RingBuffer};
    ///
    /// let q: RingBuffer<u32> = RingBuffer::new(4)?;
    /// assert_eq!(q.capacity(), 4);
    /// assert_eq!(RingBuffer::<u32>::new(0).unwrap_err(), CapacityError::Zero);
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn new(cap: usize) -> Result<Self, CapacityError> {
        if cap == 0 {
            return Err(CapacityError::Zero);
        }
        let too_big = || CapacityError::TooLarge(cap);
        let one_lap = cap
            .checked_add(1)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(too_big)?;
        if one_lap > usize::MAX / 4
            || cap > (isize::MAX as usize) / std::mem::size_of::<Slot<T>>().max(1)
        {
            return Err(too_big());
        }
        let mut slots = Vec::new();
        slots.try_reserve_exact(cap).map_err(|_| too_big())?;
        slots.extend((0..cap).map(|i| Slot {
            stamp: AtomicUsize::new(i),
            tag: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }));
        Ok(Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            buffer: slots.into_boxed_slice(),
            cap,
            one_lap,
        })
    }

    /// The most items the queue holds.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// assert_eq!(RingBuffer::<u8>::new(3)?.capacity(), 3);
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Appends `value`, or returns it when the queue is full.
    ///
    /// # Errors
    ///
    /// `Err(value)`, handing the value back, when the queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(1)?;
    /// assert_eq!(q.push("a"), Ok(()));
    /// assert_eq!(q.push("b"), Err("b"));
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn push(&self, value: T) -> Result<(), T> {
        self.push_tagged(value, 0)
    }

    /// Appends `value` with a caller-defined tag (see [`RingBuffer::pop_if`]).
    ///
    /// # Errors
    ///
    /// `Err(value)`, handing the value back, when the queue is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(2)?;
    /// q.push_tagged("a", 10).unwrap();
    /// assert_eq!(q.pop_if(|tag| tag == 10), Some(("a", 10)));
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn push_tagged(&self, value: T, tag: u64) -> Result<(), T> {
        let mut backoff = Backoff::new();
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        loop {
            let index = tail & (self.one_lap - 1);
            let lap = tail & !(self.one_lap - 1);
            let new_tail = if index + 1 < self.cap {
                tail + 1
            } else {
                lap.wrapping_add(self.one_lap)
            };
            let slot = &self.buffer[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if tail == stamp {
                // The slot is free in this lap: try to claim it.
                match self.tail.0.compare_exchange_weak(
                    tail,
                    new_tail,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS from `tail` (with the slot's stamp equal to
                        // `tail`) makes this thread the only writer of the slot for this lap; no
                        // reader touches it until the stamp below says `tail + 1`, and the slot
                        // holds no live value (its last value was moved out by a reader, or it
                        // was never written).
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        slot.tag.store(tag, Ordering::Relaxed);
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(t) => {
                        tail = t;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds last lap's item: full, unless a pop is under way.
                fence(Ordering::SeqCst);
                let head = self.head.0.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    return Err(value);
                }
                backoff.spin();
                tail = self.tail.0.load(Ordering::Relaxed);
            } else {
                // Another producer moved on; wait for the tail to catch up.
                backoff.snooze();
                tail = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes the oldest item.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(2)?;
    /// q.push(1).unwrap();
    /// q.push(2).unwrap();
    /// assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(2), None));
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn pop(&self) -> Option<T> {
        self.pop_if(|_| true).map(|(value, _)| value)
    }

    /// Removes the oldest item, with its tag, only if `accept(tag)` holds for it. `None` when
    /// the queue is empty or the oldest item was declined (it then stays at the head).
    /// `accept` may be called more than once when other consumers race.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(2)?;
    /// q.push_tagged("big", 500).unwrap();
    /// assert_eq!(q.pop_if(|tag| tag <= 100), None); // declined: it stays
    /// assert_eq!(q.pop_if(|_| true), Some(("big", 500)));
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn pop_if(&self, mut accept: impl FnMut(u64) -> bool) -> Option<(T, u64)> {
        let mut backoff = Backoff::new();
        let mut head = self.head.0.load(Ordering::Relaxed);
        loop {
            let index = head & (self.one_lap - 1);
            let lap = head & !(self.one_lap - 1);
            let slot = &self.buffer[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if head + 1 == stamp {
                // The tag is an atomic, so reading it before the claim is race-free; if the CAS
                // below succeeds, no consumer took this slot since the stamp was read, so the
                // tag is the one written with this very item.
                let tag = slot.tag.load(Ordering::Relaxed);
                if !accept(tag) {
                    return None;
                }
                let new = if index + 1 < self.cap {
                    head + 1
                } else {
                    lap.wrapping_add(self.one_lap)
                };
                match self.head.0.compare_exchange_weak(
                    head,
                    new,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp `head + 1` (read with Acquire, pairing with the
                        // producer's Release store) says the slot holds an initialised value,
                        // and winning the CAS from `head` makes this thread its only reader. The
                        // value is moved out exactly once; the stamp store below hands the now
                        // empty slot to the producer of the next lap.
                        let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some((value, tag));
                    }
                    Err(h) => {
                        head = h;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                // Nothing written here yet: empty, unless a push is under way.
                fence(Ordering::SeqCst);
                let tail = self.tail.0.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                backoff.spin();
                head = self.head.0.load(Ordering::Relaxed);
            } else {
                backoff.snooze();
                head = self.head.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops oldest items while fewer than `max_items` are taken and the sum of their tags stays
    /// within `max_total`. The first item is taken whatever its tag, so a consumer always makes
    /// progress; it stops at the first item that does not fit (that item stays at the head).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(4)?;
    /// for (item, size) in [("a", 60), ("b", 30), ("c", 30)] {
    ///     q.push_tagged(item, size).unwrap();
    /// }
    /// assert_eq!(q.pop_many(10, 100), ["a", "b"]); // "c" would pass the budget
    /// assert_eq!(q.pop_many(10, 1), ["c"]); // the first item is always taken
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn pop_many(&self, max_items: usize, max_total: i128) -> Vec<T> {
        let mut out = Vec::new();
        let mut total: i128 = 0;
        while out.len() < max_items {
            let first = out.is_empty();
            let budget = max_total - total;
            match self.pop_if(|tag| first || i128::from(tag) <= budget) {
                Some((value, tag)) => {
                    total += i128::from(tag);
                    out.push(value);
                }
                None => break,
            }
        }
        out
    }

    /// The number of items (exact when no operation is in flight).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(4)?;
    /// q.push(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.0.load(Ordering::SeqCst);
            let head = self.head.0.load(Ordering::SeqCst);
            if self.tail.0.load(Ordering::SeqCst) == tail {
                let hix = head & (self.one_lap - 1);
                let tix = tail & (self.one_lap - 1);
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    self.cap - hix + tix
                } else if tail == head {
                    0
                } else {
                    self.cap
                };
            }
        }
    }

    /// True when no item is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(4)?;
    /// assert!(q.is_empty());
    /// q.push(1).unwrap();
    /// assert!(!q.is_empty());
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        let head = self.head.0.load(Ordering::SeqCst);
        let tail = self.tail.0.load(Ordering::SeqCst);
        tail == head
    }

    /// True when a push would fail.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::ring::RingBuffer;
    ///
    /// let q = RingBuffer::new(1)?;
    /// q.push(1).unwrap();
    /// assert!(q.is_full());
    /// # Ok::<(), wlb::ring::CapacityError>(())
    /// ```
    pub fn is_full(&self) -> bool {
        let tail = self.tail.0.load(Ordering::SeqCst);
        let head = self.head.0.load(Ordering::SeqCst);
        head.wrapping_add(self.one_lap) == tail
    }
}

impl<T> Drop for RingBuffer<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can hold the queue, so popping drains every live item.
        while self.pop().is_some() {}
    }
}

impl<T> fmt::Debug for RingBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.cap)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn capacity_zero_is_rejected() {
        assert!(RingBuffer::<u32>::new(0).is_err());
    }

    #[test]
    fn fifo_and_edges() {
        let q = RingBuffer::new(3).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        for i in 0..3 {
            q.push(i).unwrap();
        }
        assert!(q.is_full());
        assert_eq!(q.len(), 3);
        assert_eq!(q.push(9), Err(9));
        assert_eq!(q.pop(), Some(0));
        q.push(3).unwrap();
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn many_laps_with_capacity_one() {
        let q = RingBuffer::new(1).unwrap();
        for i in 0..1000 {
            q.push(i).unwrap();
            assert_eq!(q.push(-1), Err(-1));
            assert_eq!(q.len(), 1);
            assert_eq!(q.pop(), Some(i));
        }
    }

    #[test]
    fn pop_many_respects_count_and_budget() {
        let q = RingBuffer::new(8).unwrap();
        for (i, len) in [5u64, 5, 5, 100, 1].iter().enumerate() {
            q.push_tagged(i, *len).unwrap();
        }
        assert!(q.pop_many(0, 100).is_empty());
        assert_eq!(q.pop_many(2, 1000), vec![0, 1]);
        // 5 fits in 10, then 100 does not: stop there, leave it at the head.
        assert_eq!(q.pop_many(10, 10), vec![2]);
        // The first item is always taken, even over the budget.
        assert_eq!(q.pop_many(10, 0), vec![3]);
        assert_eq!(q.pop_many(10, -5), vec![4]);
        assert!(q.pop_many(10, 10).is_empty());
    }

    #[test]
    fn drops_remaining_items() {
        let item = Arc::new(());
        {
            let q = RingBuffer::new(4).unwrap();
            q.push(item.clone()).unwrap();
            q.push(item.clone()).unwrap();
            assert_eq!(Arc::strong_count(&item), 3);
        }
        assert_eq!(Arc::strong_count(&item), 1);
    }
}
