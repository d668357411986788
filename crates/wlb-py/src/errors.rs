//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in Python (`logdist/errors.py`), so both backends raise the very
//! same types; they are imported from there when first raised, never defined here.

use pyo3::exceptions::{PyKeyError, PyMemoryError, PyOverflowError, PyValueError};
use pyo3::prelude::*;
use wlb::alias::WeightError;
use wlb::packet::{PacketError, RouteError};
use wlb::retry::RetryConfigError;
use wlb::ring::CapacityError;
use wlb::router::RouterError;

mod py {
    pyo3::import_exception!(logdist.errors, WeightError);
    pyo3::import_exception!(logdist.errors, NoTargetError);
    pyo3::import_exception!(logdist.errors, PacketError);
}

pub fn weight(e: WeightError) -> PyErr {
    py::WeightError::new_err(e.0)
}

pub fn router(e: RouterError) -> PyErr {
    match e {
        RouterError::NoTarget => py::NoTargetError::new_err(
            "no eligible target (all unhealthy, disabled, zero-weight or excluded)",
        ),
        RouterError::Weight(w) => weight(w),
        RouterError::UnknownTarget(name) => PyKeyError::new_err(name),
    }
}

pub fn packet(e: PacketError) -> PyErr {
    py::PacketError::new_err((e.code.as_str(), e.detail))
}

pub fn route(e: RouteError) -> PyErr {
    match e {
        RouteError::Packet(p) => packet(p),
        RouteError::Router(r) => router(r),
        RouteError::Argument(a) => PyValueError::new_err(a),
    }
}

pub fn retry_config(e: RetryConfigError) -> PyErr {
    PyValueError::new_err(e.0)
}

pub fn capacity(e: CapacityError, requested: i64) -> PyErr {
    if requested < 1 {
        PyValueError::new_err(e.0)
    } else {
        PyMemoryError::new_err(e.0)
    }
}

pub fn value(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

pub fn overflow(msg: impl Into<String>) -> PyErr {
    PyOverflowError::new_err(msg.into())
}
