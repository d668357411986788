//! Queues for Python: the lock-free `RingBuffer` of bytes objects and the `RetryScheduler`.

use crate::convert::{lock, Int, Seed};
use crate::errors;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Mutex;
use wlb::retry::{RetryScheduler, MAX_RETRY_AFTER};
use wlb::ring::RingBuffer;

/// Bounded lock-free MPMC FIFO of bytes objects. It holds the objects themselves (a reference,
/// no copy); each slot's tag is the object's length, for `pop_many`'s byte budget.
#[pyclass(name = "RingBuffer", module = "logdist._wlb", frozen)]
pub struct RingBufferPy {
    inner: RingBuffer<Py<PyBytes>>,
}

#[pymethods]
impl RingBufferPy {
    #[new]
    fn new(capacity: Int) -> PyResult<Self> {
        if capacity.0 < 1 {
            return Err(errors::value(format!(
                "capacity must be >= 1, got {}",
                capacity.0
            )));
        }
        let cap =
            usize::try_from(capacity.0).map_err(|_| errors::overflow("capacity is too large"))?;
        let inner = RingBuffer::new(cap).map_err(errors::capacity)?;
        Ok(Self { inner })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// None on success, or the very same object when full.
    fn push(&self, item: Bound<'_, PyBytes>) -> Option<Py<PyBytes>> {
        let len = item.as_bytes().len() as u64;
        self.inner.push_tagged(item.unbind(), len).err()
    }

    fn pop(&self) -> Option<Py<PyBytes>> {
        self.inner.pop()
    }

    fn pop_many(&self, max_items: Int, max_bytes: Int) -> PyResult<Vec<Py<PyBytes>>> {
        if max_items.0 < 1 {
            return Err(errors::value(format!(
                "max_items must be >= 1, got {}",
                max_items.0
            )));
        }
        let max_items = usize::try_from(max_items.0).unwrap_or(usize::MAX);
        Ok(self.inner.pop_many(max_items, i128::from(max_bytes.0)))
    }

    fn __repr__(&self) -> String {
        format!(
            "RingBuffer(len={}, capacity={})",
            self.inner.len(),
            self.inner.capacity()
        )
    }
}

/// Timed retries with exponential backoff and full jitter.
#[pyclass(name = "RetryScheduler", module = "logdist._wlb", frozen)]
pub struct RetrySchedulerPy {
    inner: Mutex<RetryScheduler>,
}

fn attempt(a: Int) -> PyResult<u64> {
    if a.0 < 0 {
        return Err(errors::value(format!("attempt must be >= 0, got {}", a.0)));
    }
    Ok(a.0 as u64)
}

#[pymethods]
impl RetrySchedulerPy {
    #[classattr]
    const MAX_RETRY_AFTER: f64 = MAX_RETRY_AFTER;

    #[new]
    #[pyo3(
        signature = (base = 0.05, cap = 30.0, multiplier = 2.0, seed = Seed(0)),
        text_signature = "(base=0.05, cap=30.0, multiplier=2.0, seed=0)"
    )]
    fn new(base: f64, cap: f64, multiplier: f64, seed: Seed) -> PyResult<Self> {
        let inner = RetryScheduler::new(base, cap, multiplier, seed.0)
            .map_err(|e| errors::retry_config(&e))?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    fn backoff(&self, attempt: Int, u: f64) -> PyResult<f64> {
        let attempt = self::attempt(attempt)?;
        if !(0.0..1.0).contains(&u) {
            return Err(errors::value(format!("u must be in [0, 1), got {u}")));
        }
        Ok(lock(&self.inner).backoff(attempt, u))
    }

    #[pyo3(signature = (token, now, attempt, retry_after = None))]
    fn schedule(
        &self,
        token: i64,
        now: f64,
        attempt: Int,
        retry_after: Option<f64>,
    ) -> PyResult<f64> {
        let attempt = self::attempt(attempt)?;
        Ok(lock(&self.inner).schedule(token, now, attempt, retry_after))
    }

    #[pyo3(signature = (now, max_items = Int(1 << 30)), text_signature = "($self, now, max_items=1073741824)")]
    fn pop_due(&self, now: f64, max_items: Int) -> Vec<i64> {
        let max_items =
            usize::try_from(max_items.0).unwrap_or(if max_items.0 < 0 { 0 } else { usize::MAX });
        lock(&self.inner).pop_due(now, max_items)
    }

    fn next_deadline(&self) -> Option<f64> {
        lock(&self.inner).next_deadline()
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).len()
    }
}
