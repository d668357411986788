//! `BatchAnalyzer` for Python: the analyzer's dedup window and per-batch tallies. `ingest`
//! reads the body with the GIL released and returns a handful of Python objects per batch
//! (never one per message, unless `record_ids` asks for the fresh ids).

use crate::convert::{lock, Int};
use crate::errors;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::sync::Mutex;
use wlb::analyze::BatchAnalyzer;
use wlb::dedup::{DedupError, IdValue};

/// Deduplicates messages by id over a bounded window and tallies the unique ones.
#[pyclass(name = "BatchAnalyzer", module = "logdist._wlb", frozen)]
pub struct BatchAnalyzerPy {
    inner: Mutex<BatchAnalyzer>,
    capacity: usize,
    record_ids: bool,
}

fn id_object(py: Python<'_>, id: IdValue) -> PyResult<Bound<'_, PyAny>> {
    Ok(match id {
        IdValue::Str(s) => PyString::new(py, &s).into_any(),
        IdValue::Int(i) => i.into_pyobject(py)?.into_any(),
        IdValue::Float(f) => PyFloat::new(py, f).into_any(),
    })
}

/// The id a Python object stands for, or None when no JSON id can equal it.
fn id_value(obj: &Bound<'_, PyAny>) -> PyResult<Option<IdValue>> {
    // Exact types only, as the twin: a subclass may compare differently.
    if obj.is_instance_of::<PyBool>() {
        return Ok(None);
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        // A str with a lone surrogate is no JSON id (strict parsing rejects those).
        return Ok(s.to_str().ok().map(|t| IdValue::Str(t.to_owned())));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i128>() {
            if (-(1i128 << 63)..(1i128 << 64)).contains(&i) {
                return Ok(Some(IdValue::Int(i)));
            }
        }
        // A big int equals a double only when the double is exactly that int.
        return Ok(match obj.extract::<f64>() {
            Ok(f) if PyAnyMethods::eq(PyFloat::new(obj.py(), f).as_any(), obj)? => {
                Some(IdValue::Float(f))
            }
            _ => None,
        });
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return Ok(Some(IdValue::Float(f.value())));
    }
    Ok(None)
}

#[pymethods]
impl BatchAnalyzerPy {
    #[new]
    #[pyo3(
        signature = (dedup_capacity = Int(1_000_000), record_ids = false),
        text_signature = "(dedup_capacity=1000000, record_ids=False)"
    )]
    fn new(dedup_capacity: Int, record_ids: bool) -> PyResult<Self> {
        if dedup_capacity.0 < 2 {
            return Err(errors::dedup(DedupError::CapacityTooSmall(
                usize::try_from(dedup_capacity.0).unwrap_or(0),
            )));
        }
        let capacity = usize::try_from(dedup_capacity.0)
            .map_err(|_| errors::overflow("dedup_capacity is too large"))?;
        let inner = BatchAnalyzer::new(capacity, record_ids).map_err(errors::dedup)?;
        Ok(Self {
            inner: Mutex::new(inner),
            capacity,
            record_ids,
        })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[getter]
    fn record_ids(&self) -> bool {
        self.record_ids
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).window().len()
    }

    fn __contains__(&self, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match id_value(id)? {
            Some(v) => lock(&self.inner).contains(&v),
            None => false,
        })
    }

    /// (unique, duplicates, levels, sources, `fresh_ids`); see `_wlb.pyi`.
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        body: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // bytes only, as the twin (a bytearray could change while the GIL is released)
        if !body.is_instance_of::<PyBytes>() {
            return Err(errors::not_bytes(body));
        }
        let body: PyBackedBytes = body.extract()?;
        let report = py
            .detach(|| lock(&self.inner).ingest(&body))
            .map_err(errors::packet)?;
        let fresh = match report.fresh_ids {
            None => py.None().into_bound(py),
            Some(ids) => {
                let list = PyList::empty(py);
                for id in ids {
                    list.append(id_object(py, id)?)?;
                }
                list.into_any()
            }
        };
        (
            report.unique,
            report.duplicates,
            report.levels,
            report.sources,
            fresh,
        )
            .into_pyobject(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "BatchAnalyzer(dedup_capacity={}, record_ids={}, remembered={})",
            self.capacity,
            if self.record_ids { "True" } else { "False" },
            lock(&self.inner).window().len()
        )
    }
}
