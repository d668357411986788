//! `route_packet` for Python: the scan, the picks and the batch building run with the GIL
//! released, and no Python object is built per message (one bytes object per target).

use crate::convert::{lock, Int};
use crate::errors;
use crate::select::{exclude_names, RouterPy};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};
use wlb::json::{decode_json_string, Decoded};
use wlb::packet::{valid_prefix, Format, Keyed, Options, RouteKey};

/// The result of `route_packet`.
#[pyclass(name = "RoutedPacket", module = "logdist._wlb", frozen)]
pub struct RoutedPacketPy {
    emitter_id: Option<Py<PyString>>,
    packet_id: Option<Py<PyString>>,
    count: usize,
    batches: Vec<(String, Py<PyBytes>, usize)>,
    unkeyed: usize,
}

#[pymethods]
impl RoutedPacketPy {
    #[getter]
    fn emitter_id(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.emitter_id.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn packet_id(&self, py: Python<'_>) -> Option<Py<PyString>> {
        self.packet_id.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn count(&self) -> usize {
        self.count
    }

    #[getter]
    fn unkeyed(&self) -> usize {
        self.unkeyed
    }

    #[getter]
    fn batches<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, bytes, _) in &self.batches {
            d.set_item(name, bytes.bind(py))?;
        }
        Ok(d)
    }

    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, _, n) in &self.batches {
            d.set_item(name, n)?;
        }
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let show = |s: &Option<Py<PyString>>| match s {
            Some(s) => format!("{:?}", s.bind(py).to_string_lossy()),
            None => "None".into(),
        };
        let counts: Vec<String> = self
            .batches
            .iter()
            .map(|(n, _, c)| format!("{n:?}: {c}"))
            .collect();
        format!(
            "RoutedPacket(emitter_id={}, packet_id={}, count={}, counts={{{}}})",
            show(&self.emitter_id),
            show(&self.packet_id),
            self.count,
            counts.join(", ")
        )
    }
}

/// A decoded JSON string as a Python str (lone surrogates included, as Python's json keeps them).
fn py_str(py: Python<'_>, raw: &[u8]) -> PyResult<Py<PyString>> {
    match decode_json_string(raw) {
        Decoded::Utf8(s) => Ok(PyString::new(py, &s).unbind()),
        Decoded::Utf16(units) => {
            let le: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
            let s = PyBytes::new(py, &le).call_method1("decode", ("utf-16-le", "surrogatepass"))?;
            Ok(s.cast_into::<PyString>()?.unbind())
        }
    }
}

/// The `format` argument: "auto" when absent.
fn format_arg(format: Option<&Bound<'_, PyAny>>) -> PyResult<Format> {
    let Some(f) = format else {
        return Ok(Format::Auto);
    };
    f.extract::<&str>()
        .ok()
        .and_then(Format::parse)
        .ok_or_else(|| {
            errors::value(format!(
                "unknown format {f} (expected 'auto', 'json' or 'ndjson')"
            ))
        })
}

/// The `fallback_prefix` argument: a str of the characters ids may hold.
fn prefix_arg(prefix: &Bound<'_, PyAny>) -> PyResult<String> {
    match prefix.extract::<String>() {
        Ok(p) if valid_prefix(&p) => Ok(p),
        _ => Err(errors::value(format!(
            "fallback_prefix may only hold ASCII letters, digits and '._:/-': {prefix}"
        ))),
    }
}

/// The `id_tag` argument: like a prefix ("" when not given).
fn id_tag_arg(tag: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let Some(tag) = tag else {
        return Ok(String::new());
    };
    match tag.extract::<String>() {
        Ok(t) if valid_prefix(&t) => Ok(t),
        _ => Err(errors::value(format!(
            "id_tag may only hold ASCII letters, digits and '._:/-': {tag}"
        ))),
    }
}

/// The `route_key` argument: "random" when absent.
fn route_key_arg(key: Option<&Bound<'_, PyAny>>) -> PyResult<RouteKey> {
    let Some(k) = key else {
        return Ok(RouteKey::Random);
    };
    k.extract::<&str>()
        .ok()
        .and_then(RouteKey::parse)
        .ok_or_else(|| {
            errors::value(format!(
                "route_key must be 'random', 'message_id' or a dotted field path such as 'metadata.trace_id': {k}"
            ))
        })
}

/// The body as bytes: a bytes object as is, a bytearray or memoryview copied (the twin accepts
/// those too), anything else a `TypeError`.
pub(crate) fn body_arg(py: Python<'_>, body: &Bound<'_, PyAny>) -> PyResult<PyBackedBytes> {
    if body.is_instance_of::<PyBytes>() {
        body.extract()
    } else if body.is_instance_of::<PyByteArray>() || body.is_instance_of::<PyMemoryView>() {
        py.get_type::<PyBytes>().call1((body,))?.extract()
    } else {
        Err(errors::not_bytes(body))
    }
}

/// Validate a request body, give every message an id, and route each message (see _wlb.pyi).
// One parameter per argument of the Python signature (keywords mostly): pyo3 needs them so.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(
    signature = (body, router, *, fallback_prefix, format = None, max_messages = Int(10_000), max_depth = Int(64), id_tag = None, strict = true, route_key = None, exclude = None),
    text_signature = "(body, router, *, fallback_prefix, format='auto', max_messages=10000, max_depth=64, id_tag='', strict=True, route_key='random', exclude=None)"
)]
pub fn route_packet(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    router: Option<Bound<'_, RouterPy>>,
    fallback_prefix: &Bound<'_, PyAny>,
    format: Option<&Bound<'_, PyAny>>,
    max_messages: Int,
    max_depth: Int,
    id_tag: Option<&Bound<'_, PyAny>>,
    strict: bool,
    route_key: Option<&Bound<'_, PyAny>>,
    exclude: Option<&Bound<'_, PyAny>>,
) -> PyResult<RoutedPacketPy> {
    // Argument checks, in the twin's order: format, prefix, id tag, route key, then the body's type.
    let format = format_arg(format)?;
    let prefix = prefix_arg(fallback_prefix)?;
    let id_tag = id_tag_arg(id_tag)?;
    let keyed = Keyed {
        route_key: route_key_arg(route_key)?,
        exclude: exclude_names(exclude)?,
    };
    let body = body_arg(py, body)?;
    let opts = Options {
        format,
        max_messages: max_messages.0,
        max_depth: max_depth.0,
        strict,
    };
    let shared = router.as_ref().map(pyo3::Bound::get);
    let out = py
        .detach(|| {
            let mut guard = shared.map(|r| lock(&r.inner));
            wlb::packet::route_packet_keyed(
                &body,
                guard.as_deref_mut(),
                &prefix,
                &id_tag,
                &keyed,
                &opts,
            )
        })
        .map_err(errors::route)?;
    let batches = out
        .batches
        .into_iter()
        .map(|b| (b.target, PyBytes::new(py, &b.bytes).unbind(), b.count))
        .collect();
    Ok(RoutedPacketPy {
        emitter_id: out
            .emitter_raw
            .as_deref()
            .map(|r| py_str(py, r))
            .transpose()?,
        packet_id: out
            .packet_id_raw
            .as_deref()
            .map(|r| py_str(py, r))
            .transpose()?,
        count: out.count,
        batches,
        unkeyed: out.unkeyed,
    })
}
