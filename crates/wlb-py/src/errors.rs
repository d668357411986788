//! The one place where errors become Python exceptions: the core's error enums, and the
//! argument checks of the wrappers.
//!
//! The exception classes of the core's errors live in Python (`logdist/errors.py`), so both
//! backends raise the very same types; they are imported from there when first raised, never
//! defined here. Every message is the core error's `Display` text (or, for an argument check,
//! the twin's message), so both backends say the same.

use pyo3::exceptions::{PyKeyError, PyMemoryError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use wlb::alias::WeightError;
use wlb::dedup::DedupError;
use wlb::otlp::OtlpError;
use wlb::packet::{PacketError, RouteError};
use wlb::retry::RetryConfigError;
use wlb::ring::CapacityError;
use wlb::router::RouterError;
use wlb::wal::WalError;

mod py {
    pyo3::import_exception!(logdist.errors, WeightError);
    pyo3::import_exception!(logdist.errors, NoTargetError);
    pyo3::import_exception!(logdist.errors, PacketError);
    pyo3::import_exception!(logdist.errors, WalError);
    pyo3::import_exception!(logdist.errors, WalFullError);
}

/// `logdist.errors.WeightError`.
pub fn weight(e: &WeightError) -> PyErr {
    py::WeightError::new_err(e.to_string())
}

/// `NoTargetError`, `WeightError`, or `KeyError(name)` for an unknown target.
pub fn router(e: RouterError) -> PyErr {
    match e {
        RouterError::NoTarget => py::NoTargetError::new_err(
            "no eligible target (all unhealthy, disabled, zero-weight or excluded)",
        ),
        RouterError::Weight(w) => weight(&w),
        RouterError::UnknownTarget(name) => PyKeyError::new_err(name),
    }
}

/// `logdist.errors.PacketError(code, detail)`.
pub fn packet(e: PacketError) -> PyErr {
    py::PacketError::new_err((e.code.as_str(), e.detail))
}

/// `logdist.errors.PacketError(code, detail)`: `bad_protobuf` or `too_many_messages`.
pub fn otlp(e: &OtlpError) -> PyErr {
    py::PacketError::new_err((e.code(), e.to_string()))
}

/// What `route_packet` raises.
pub fn route(e: RouteError) -> PyErr {
    match e {
        RouteError::Packet(p) => packet(p),
        RouteError::Router(r) => router(r),
        RouteError::InvalidPrefix(_) => PyValueError::new_err(e.to_string()),
    }
}

/// `ValueError`.
pub fn retry_config(e: &RetryConfigError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// `ValueError` for capacity 0, `MemoryError` for one too large to allocate.
pub fn capacity(e: CapacityError) -> PyErr {
    match e {
        CapacityError::Zero => PyValueError::new_err(e.to_string()),
        CapacityError::TooLarge(_) => PyMemoryError::new_err(e.to_string()),
    }
}

/// `ValueError`.
pub fn dedup(e: DedupError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// `logdist.errors.WalError` (an `OSError` carrying errno and the path when the OS gave an
/// errno), `WalFullError`, or `ValueError` for a bad argument.
pub fn wal(e: &WalError) -> PyErr {
    match e {
        WalError::InvalidOptions | WalError::RecordTooLarge { .. } => {
            PyValueError::new_err(e.to_string())
        }
        WalError::Full { .. } => py::WalFullError::new_err(e.to_string()),
        WalError::Io {
            op,
            path,
            errno: Some(n),
            detail,
        } => py::WalError::new_err((
            *n,
            format!("write-ahead log {op} failed: {detail}"),
            path.display().to_string(),
        )),
        WalError::Io { errno: None, .. } | WalError::Closed => py::WalError::new_err(e.to_string()),
    }
}

/// `ValueError` of an argument check.
pub fn value(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// `OverflowError` of an argument check (a number too large for the core).
pub fn overflow(msg: impl Into<String>) -> PyErr {
    PyOverflowError::new_err(msg.into())
}

/// `TypeError` of an argument check.
pub fn type_error(msg: impl Into<String>) -> PyErr {
    PyTypeError::new_err(msg.into())
}

/// `TypeError("body must be bytes, not <type>")`, as the twin says it.
pub fn not_bytes(body: &Bound<'_, PyAny>) -> PyErr {
    match body.get_type().name() {
        Ok(name) => type_error(format!("body must be bytes, not {name}")),
        Err(e) => e,
    }
}
