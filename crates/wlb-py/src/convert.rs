//! Argument conversions shared by the wrappers, with the pure-Python twin's semantics.

use crate::errors;
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// A seed: any Python int, taken mod 2^64 (negative seeds wrap).
#[derive(Clone, Copy)]
pub struct Seed(pub u64);

impl<'py> FromPyObject<'py> for Seed {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        Ok(Self(obj.bitand(u64::MAX)?.extract()?))
    }
}

/// An int clamped into i64: a huge value saturates (callers only compare it with small bounds).
#[derive(Clone, Copy)]
pub struct Int(pub i64);

impl<'py> FromPyObject<'py> for Int {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(v) => Ok(Self(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Ok(Self(if obj.gt(0)? { i64::MAX } else { i64::MIN }))
            }
            Err(e) => Err(e),
        }
    }
}

impl Int {
    /// A count: >= 0 (`ValueError` otherwise).
    pub fn count(self, what: &str) -> PyResult<usize> {
        if self.0 < 0 {
            return Err(errors::value(format!(
                "{what} must be >= 0, got {}",
                self.0
            )));
        }
        usize::try_from(self.0).map_err(|_| errors::overflow(format!("{what} is too large")))
    }
}

/// Locks a mutex, recovering from poisoning: no critical section here can panic half-way
/// through an update, so a poisoned lock still guards consistent state.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
