//! Timed retries: exponential backoff with full jitter, and a queue of tokens due in
//! (deadline, insertion sequence) order so the caller can sleep exactly until the next one.

use crate::rng::SplitMix64;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

/// Invalid scheduler parameters, one variant per reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryConfigError {
    /// `base`, `cap` or `multiplier` is NaN or infinite.
    NotFinite,
    /// `base` is zero or below.
    BaseNotPositive { base: f64 },
    /// `cap` is below `base`.
    CapBelowBase { cap: f64, base: f64 },
    /// `multiplier` is outside [1, 16].
    MultiplierOutOfRange { multiplier: f64 },
}

impl fmt::Display for RetryConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFinite => f.write_str("base, cap and multiplier must be finite"),
            Self::BaseNotPositive { base } => write!(f, "base must be > 0, got {base}"),
            Self::CapBelowBase { cap, base } => write!(f, "cap ({cap}) must be >= base ({base})"),
            Self::MultiplierOutOfRange { multiplier } => {
                write!(f, "multiplier must be in [1, 16], got {multiplier}")
            }
        }
    }
}

impl std::error::Error for RetryConfigError {}

/// The longest delay an explicit retry-after can impose, in seconds.
pub const MAX_RETRY_AFTER: f64 = 3600.0;

/// Python's `min(a, b)`: `a` unless `b < a` (so NaN handling matches the pure-Python twin).
#[inline]
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: f64,
    seq: u64,
    token: i64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that the max-heap pops the earliest (deadline, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Exponential backoff with full jitter, and the queue of scheduled retries.
#[derive(Debug, Clone)]
pub struct RetryScheduler {
    base: f64,
    cap: f64,
    multiplier: f64,
    rng: SplitMix64,
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl RetryScheduler {
    /// `base > 0`, `cap >= base`, `1 <= multiplier <= 16`, all finite.
    ///
    /// # Errors
    ///
    /// [`RetryConfigError`] naming the parameter out of its range.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::{RetryConfigError, RetryScheduler};
    ///
    /// assert!(RetryScheduler::new(0.05, 30.0, 2.0, 0).is_ok());
    /// let e = RetryScheduler::new(1.0, 0.5, 2.0, 0).unwrap_err();
    /// assert_eq!(e, RetryConfigError::CapBelowBase { cap: 0.5, base: 1.0 });
    /// assert_eq!(e.to_string(), "cap (0.5) must be >= base (1)");
    /// ```
    pub fn new(base: f64, cap: f64, multiplier: f64, seed: u64) -> Result<Self, RetryConfigError> {
        if !(base.is_finite() && cap.is_finite() && multiplier.is_finite()) {
            return Err(RetryConfigError::NotFinite);
        }
        if base <= 0.0 {
            return Err(RetryConfigError::BaseNotPositive { base });
        }
        if cap < base {
            return Err(RetryConfigError::CapBelowBase { cap, base });
        }
        if !(1.0..=16.0).contains(&multiplier) {
            return Err(RetryConfigError::MultiplierOutOfRange { multiplier });
        }
        Ok(Self {
            base,
            cap,
            multiplier,
            rng: SplitMix64::new(seed),
            heap: BinaryHeap::new(),
            seq: 0,
        })
    }

    /// The upper bound of the jittered delay after `attempt` failures.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// assert_eq!([r.ceiling(0), r.ceiling(1), r.ceiling(2), r.ceiling(3)], [0.5, 1.0, 2.0, 3.0]);
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn ceiling(&self, attempt: u64) -> f64 {
        if attempt >= 64 {
            self.cap
        } else {
            // powf is libm's pow, the function Python's float ** int calls.
            py_min(self.cap, self.base * self.multiplier.powf(attempt as f64))
        }
    }

    /// `u * ceiling(attempt)` for a uniform `u` in [0, 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// assert_eq!(r.backoff(1, 0.5), 0.5);
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn backoff(&self, attempt: u64, u: f64) -> f64 {
        u * self.ceiling(attempt)
    }

    /// The delay a `schedule` call would use, drawing jitter when there is no retry-after.
    fn delay(&mut self, attempt: u64, retry_after: Option<f64>) -> f64 {
        if let Some(ra) = retry_after {
            // NaN counts as 0.0 (IEEE maxNum), so a bad header can never park an item forever.
            py_min(
                if ra.is_nan() || ra < 0.0 { 0.0 } else { ra },
                MAX_RETRY_AFTER,
            )
        } else {
            let u = self.rng.next_f64();
            self.backoff(attempt, u)
        }
    }

    /// Schedules `token` and returns its deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let mut r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// assert_eq!(r.schedule(7, 100.0, 0, Some(2.0)), 102.0); // the retry-after wins
    /// let d = r.schedule(8, 100.0, 1, None); // jittered in [0, 1)
    /// assert!((100.0..101.0).contains(&d));
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn schedule(
        &mut self,
        token: i64,
        now: f64,
        attempt: u64,
        retry_after: Option<f64>,
    ) -> f64 {
        let deadline = now + self.delay(attempt, retry_after);
        self.heap.push(Entry {
            deadline,
            seq: self.seq,
            token,
        });
        self.seq += 1;
        deadline
    }

    /// Tokens whose deadline is <= `now`, earliest first, at most `max_items`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let mut r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// r.schedule(1, 0.0, 0, Some(2.0));
    /// r.schedule(2, 0.0, 0, Some(1.0));
    /// assert_eq!(r.pop_due(1.5, 10), [2]);
    /// assert_eq!(r.pop_due(5.0, 10), [1]);
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn pop_due(&mut self, now: f64, max_items: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < max_items {
            match self.heap.peek() {
                Some(e) if e.deadline <= now => {
                    out.push(e.token);
                    self.heap.pop();
                }
                _ => break,
            }
        }
        out
    }

    /// The earliest deadline, if anything is scheduled.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let mut r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// assert_eq!(r.next_deadline(), None);
    /// r.schedule(1, 10.0, 0, Some(2.0));
    /// assert_eq!(r.next_deadline(), Some(12.0));
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.deadline)
    }

    /// The number of scheduled tokens.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// let mut r = RetryScheduler::new(0.5, 3.0, 2.0, 0)?;
    /// r.schedule(1, 0.0, 0, None);
    /// assert_eq!(r.len(), 1);
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is scheduled.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::retry::RetryScheduler;
    ///
    /// assert!(RetryScheduler::new(0.5, 3.0, 2.0, 0)?.is_empty());
    /// # Ok::<(), wlb::retry::RetryConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_parameters() {
        assert!(RetryScheduler::new(0.0, 1.0, 2.0, 0).is_err());
        assert!(RetryScheduler::new(1.0, 0.5, 2.0, 0).is_err());
        assert!(RetryScheduler::new(1.0, 2.0, 0.5, 0).is_err());
        assert!(RetryScheduler::new(1.0, 2.0, 17.0, 0).is_err());
        assert!(RetryScheduler::new(1.0, f64::INFINITY, 2.0, 0).is_err());
        assert!(RetryScheduler::new(f64::NAN, 2.0, 2.0, 0).is_err());
    }

    #[test]
    fn backoff_bounds() {
        let s = RetryScheduler::new(0.05, 30.0, 2.0, 0).unwrap();
        assert_eq!(s.ceiling(0), 0.05);
        assert_eq!(s.ceiling(3), 0.4);
        assert_eq!(s.ceiling(20), 30.0);
        assert_eq!(s.ceiling(1000), 30.0);
        let mut rng = SplitMix64::new(3);
        for attempt in 0..100 {
            let d = s.backoff(attempt, rng.next_f64());
            assert!((0.0..=30.0).contains(&d));
        }
    }

    #[test]
    fn due_in_deadline_then_insertion_order() {
        let mut s = RetryScheduler::new(0.05, 30.0, 2.0, 0).unwrap();
        assert_eq!(s.schedule(1, 100.0, 0, Some(5.0)), 105.0);
        assert_eq!(s.schedule(2, 100.0, 0, Some(1.0)), 101.0);
        assert_eq!(s.schedule(3, 100.0, 0, Some(5.0)), 105.0);
        assert_eq!(s.schedule(4, 100.0, 0, Some(-3.0)), 100.0);
        assert_eq!(s.schedule(5, 100.0, 0, Some(1e9)), 100.0 + MAX_RETRY_AFTER);
        assert_eq!(s.schedule(6, 100.0, 0, Some(f64::NAN)), 100.0);
        assert_eq!(s.next_deadline(), Some(100.0));
        assert_eq!(s.pop_due(99.0, 10), Vec::<i64>::new());
        assert_eq!(s.pop_due(105.0, 2), vec![4, 6]);
        assert_eq!(s.pop_due(105.0, 1), vec![2]);
        assert_eq!(s.pop_due(105.0, 10), vec![1, 3]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_deadline(), Some(3700.0));
    }

    #[test]
    fn jitter_draws_from_the_seeded_rng() {
        let mut s = RetryScheduler::new(1.0, 100.0, 2.0, 77).unwrap();
        let mut rng = SplitMix64::new(77);
        for attempt in 0..10 {
            let expected = 10.0 + rng.next_f64() * s.ceiling(attempt);
            assert_eq!(s.schedule(attempt as i64, 10.0, attempt, None), expected);
        }
    }
}
