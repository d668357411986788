//! logdist._wlb: thin `PyO3` wrappers over the `wlb` core. The only crate with `#[pymodule]`.
//!
//! Each wrapper is named `FooPy` here and `Foo` in Python. Errors are mapped in `errors`,
//! to the exception classes of `logdist/errors.py`.
// PyO3 hands `#[pymethods]` owned arguments (`Vec`, `PathBuf`, `PyBackedBytes`, `Bound`)
// that have no borrowed form to extract instead.
#![allow(clippy::needless_pass_by_value)]

use pyo3::prelude::*;

mod analyze;
mod convert;
mod errors;
mod otlp;
mod packet;
mod queue;
mod select;
mod wal;

#[pymodule]
mod _wlb {
    #[pymodule_export]
    use super::analyze::BatchAnalyzerPy;
    #[pymodule_export]
    use super::otlp::otlp_logs_to_messages;
    #[pymodule_export]
    use super::packet::route_packet;
    #[pymodule_export]
    use super::packet::RoutedPacketPy;
    #[pymodule_export]
    use super::queue::RetrySchedulerPy;
    #[pymodule_export]
    use super::queue::RingBufferPy;
    #[pymodule_export]
    use super::select::key_hash_py;
    #[pymodule_export]
    use super::select::AliasTablePy;
    #[pymodule_export]
    use super::select::RouterPy;
    #[pymodule_export]
    use super::select::SmoothWeightedPy;
    #[pymodule_export]
    use super::select::SplitMix64Py;
    #[pymodule_export]
    use super::wal::WalPy;

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
