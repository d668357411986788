//! `otlp_logs_to_messages` for Python: the protobuf decoding and the conversion run with the
//! GIL released; the result is one bytes object.

use crate::convert::Int;
use crate::errors;
use crate::packet::body_arg;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An OTLP `ExportLogsServiceRequest` (protobuf) as logdist messages (see _wlb.pyi).
#[pyfunction]
#[pyo3(signature = (body, max_records))]
pub fn otlp_logs_to_messages<'py>(
    py: Python<'py>,
    body: &Bound<'py, PyAny>,
    max_records: Int,
) -> PyResult<(Bound<'py, PyBytes>, usize, usize, String)> {
    let max_records = max_records.count("max_records")?;
    let body = body_arg(py, body)?;
    let conv = py
        .detach(|| wlb::otlp::logs_to_messages(&body, max_records))
        .map_err(|e| errors::otlp(&e))?;
    Ok((
        PyBytes::new(py, &conv.messages),
        conv.accepted,
        conv.rejected,
        conv.error_message,
    ))
}
