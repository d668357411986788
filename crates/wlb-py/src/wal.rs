//! `Wal`: the write-ahead log of `wlb::wal` for Python. Opening, appending, checkpointing,
//! replay and close release the GIL, so several threads (`asyncio.to_thread`) append at once
//! and share fsyncs. Errors become `logdist.errors.WalError` / `WalFullError` / `ValueError`
//! (see `errors::wal`).

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use wlb::wal::{Wal, WalOptions};

use crate::errors;

fn positive(name: &str, v: i64) -> PyResult<u64> {
    if v < 1 {
        return Err(errors::value(format!("{name} must be >= 1")));
    }
    Ok(v as u64)
}

/// A write-ahead log in one directory; see the `Wal` section of `_wlb.pyi`.
#[pyclass(name = "Wal", module = "logdist._wlb", frozen)]
pub struct WalPy {
    inner: Wal,
    path: String,
}

#[pymethods]
impl WalPy {
    #[new]
    #[pyo3(signature = (path, *, segment_bytes = 67_108_864, max_bytes = 1_073_741_824, commit_delay_us = 0))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        segment_bytes: i64,
        max_bytes: i64,
        commit_delay_us: i64,
    ) -> PyResult<Self> {
        let segment_bytes = positive("segment_bytes", segment_bytes)?;
        let max_bytes = positive("max_bytes", max_bytes)?;
        if commit_delay_us < 0 {
            return Err(errors::value("commit_delay_us must be >= 0"));
        }
        let opts = WalOptions {
            segment_bytes,
            max_bytes,
            commit_delay: Duration::from_micros(commit_delay_us as u64),
        };
        let shown = path.display().to_string();
        let inner = py
            .detach(|| Wal::open(&path, opts))
            .map_err(|e| errors::wal(&e))?;
        Ok(WalPy { inner, path: shown })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    fn append(&self, py: Python<'_>, payload: PyBackedBytes) -> PyResult<u64> {
        py.detach(|| self.inner.append(&payload))
            .map_err(|e| errors::wal(&e))
    }

    fn append_many(&self, py: Python<'_>, payloads: Vec<PyBackedBytes>) -> PyResult<Vec<u64>> {
        py.detach(|| self.inner.append_many(&payloads))
            .map_err(|e| errors::wal(&e))
    }

    fn ack(&self, py: Python<'_>, lsns: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut v = Vec::new();
        for item in lsns.try_iter()? {
            let item = item?;
            let Ok(lsn) = item.extract::<i128>() else {
                return Err(errors::type_error("lsns must be ints"));
            };
            // An lsn out of range is unknown, and unknown lsns are ignored.
            if let Ok(lsn) = u64::try_from(lsn) {
                v.push(lsn);
            }
        }
        // The log's lock may be held by a write in another thread: wait for it without the GIL.
        Ok(py.detach(|| self.inner.ack(&v)))
    }

    fn checkpoint(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.checkpoint())
            .map_err(|e| errors::wal(&e))
    }

    fn reclaim(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.reclaim())
            .map_err(|e| errors::wal(&e))
    }

    fn replay<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let records = py
            .detach(|| self.inner.replay())
            .map_err(|e| errors::wal(&e))?;
        records
            .into_iter()
            .map(|(lsn, payload)| (lsn, PyBytes::new(py, &payload)).into_pyobject(py))
            .collect()
    }

    #[getter]
    fn recovery_notes(&self) -> Vec<String> {
        self.inner.recovery().notes.clone()
    }

    /// `(segment, offset, length, lsn_start, lsn_end, lost lsns, first bytes of the stretch)`
    /// per damaged stretch that held undelivered records.
    #[getter]
    #[allow(clippy::type_complexity)]
    fn recovery_losses<'py>(
        &self,
        py: Python<'py>,
    ) -> Vec<(String, u64, u64, u64, u64, Vec<u64>, Bound<'py, PyBytes>)> {
        self.inner
            .recovery()
            .losses
            .iter()
            .map(|l| {
                (
                    l.segment.clone(),
                    l.offset,
                    l.length,
                    l.lsn_start,
                    l.lsn_end,
                    l.lsns.clone(),
                    PyBytes::new(py, &l.data),
                )
            })
            .collect()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.stats());
        let d = PyDict::new(py);
        d.set_item("bytes", s.bytes)?;
        d.set_item("segments", s.segments)?;
        d.set_item("records", s.records)?;
        d.set_item("undelivered", s.undelivered)?;
        d.set_item("next_lsn", s.next_lsn)?;
        d.set_item("appends", s.appends)?;
        d.set_item("appended_records", s.appended_records)?;
        d.set_item("fsyncs", s.fsyncs)?;
        d.set_item("last_fsync_seconds", s.last_fsync_seconds)?;
        d.set_item("skipped_bytes", s.skipped_bytes)?;
        d.set_item("skipped_records", s.skipped_records)?;
        d.set_item("lost_records", s.lost_records)?;
        d.set_item("recovered_records", s.recovered_records)?;
        d.set_item("max_bytes", s.max_bytes)?;
        d.set_item("reclaimed_bytes", s.reclaimed_bytes)?;
        d.set_item("reclaimed_files", s.reclaimed_files)?;
        Ok(d)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close())
            .map_err(|e| errors::wal(&e))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)
    }
}
