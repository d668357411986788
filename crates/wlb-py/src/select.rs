//! Weighted selection for Python: `SplitMix64`, `AliasTable`, `SmoothWeighted`, `Router`.

use crate::convert::{lock, Int, Seed};
use crate::errors;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Mutex;
use wlb::alias::{AliasTable, WeightError};
use wlb::keyed::key_hash;
use wlb::rng::SplitMix64;
use wlb::router::{Router, Strategy};
use wlb::swrr::SmoothWeighted;

/// `SplitMix64` PRNG; the seed (mod 2**64) is the initial state.
#[pyclass(name = "SplitMix64", module = "logdist._wlb", frozen)]
pub struct SplitMix64Py {
    inner: Mutex<SplitMix64>,
}

#[pymethods]
impl SplitMix64Py {
    #[new]
    fn new(seed: Seed) -> Self {
        Self {
            inner: Mutex::new(SplitMix64::new(seed.0)),
        }
    }

    fn next_u64(&self) -> u64 {
        lock(&self.inner).next_u64()
    }

    fn next_f64(&self) -> f64 {
        lock(&self.inner).next_f64()
    }

    fn __repr__(&self) -> String {
        format!("SplitMix64(state={:#018x})", lock(&self.inner).state())
    }
}

/// Vose's alias method: O(n) build, O(1) sample.
#[pyclass(name = "AliasTable", module = "logdist._wlb", frozen)]
pub struct AliasTablePy {
    inner: AliasTable,
}

fn check_unit(u1: f64, u2: f64) -> PyResult<()> {
    if (0.0..1.0).contains(&u1) && (0.0..1.0).contains(&u2) {
        Ok(())
    } else {
        Err(errors::value(format!(
            "uniforms must be in [0, 1), got u1={u1}, u2={u2}"
        )))
    }
}

#[pymethods]
impl AliasTablePy {
    #[new]
    fn new(weights: Vec<f64>) -> PyResult<Self> {
        Ok(Self {
            inner: AliasTable::new(&weights).map_err(|e| errors::weight(&e))?,
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn prob(&self) -> Vec<f64> {
        self.inner.prob().to_vec()
    }

    #[getter]
    fn alias(&self) -> Vec<usize> {
        self.inner.alias().to_vec()
    }

    fn sample(&self, u1: f64, u2: f64) -> PyResult<usize> {
        check_unit(u1, u2)?;
        Ok(self.inner.sample(u1, u2))
    }

    /// `count` picks from SplitMix64(seed), drawn without the GIL.
    fn sample_many(&self, py: Python<'_>, count: Int, seed: Seed) -> PyResult<Vec<usize>> {
        let count = count.count("count")?;
        Ok(py.detach(|| self.inner.sample_many(count, seed.0)))
    }

    /// The same draws as `sample_many`, counted per index, without the GIL.
    fn histogram(&self, py: Python<'_>, count: Int, seed: Seed) -> PyResult<Vec<u64>> {
        let count = count.count("count")?;
        Ok(py.detach(|| self.inner.histogram(count, seed.0)))
    }

    fn __repr__(&self) -> String {
        format!("AliasTable(n={})", self.inner.len())
    }
}

/// Smooth weighted round robin (nginx).
#[pyclass(name = "SmoothWeighted", module = "logdist._wlb", frozen)]
pub struct SmoothWeightedPy {
    inner: Mutex<SmoothWeighted>,
}

#[pymethods]
impl SmoothWeightedPy {
    #[new]
    fn new(weights: Vec<Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut ws = Vec::with_capacity(weights.len());
        for (i, w) in weights.iter().enumerate() {
            let v: i128 = w.extract()?;
            if v < 0 {
                return Err(errors::weight(&WeightError::NegativeInteger {
                    index: i,
                    weight: v,
                }));
            }
            ws.push(
                u64::try_from(v)
                    .map_err(|_| errors::overflow(format!("weights[{i}] is too large")))?,
            );
        }
        Ok(Self {
            inner: Mutex::new(SmoothWeighted::new(&ws).map_err(|e| errors::weight(&e))?),
        })
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).len()
    }

    fn next(&self) -> usize {
        lock(&self.inner).next_index()
    }

    fn next_many(&self, count: Int) -> PyResult<Vec<usize>> {
        let count = count.count("count")?;
        Ok(lock(&self.inner).next_many(count))
    }
}

/// Weighted target selection among eligible targets. Shared by threads behind a mutex;
/// `route_packet` takes the same lock with the GIL released.
#[pyclass(name = "Router", module = "logdist._wlb", frozen)]
pub struct RouterPy {
    pub(crate) inner: Mutex<Router>,
}

/// The names in an `exclude` argument (None or any iterable; items that are no str are
/// ignored, as the twin ignores names that are no target).
pub(crate) fn exclude_names(exclude: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    if let Some(ex) = exclude {
        if ex.is_truthy()? {
            for item in ex.try_iter()? {
                if let Ok(s) = item?.extract::<String>() {
                    names.push(s);
                }
            }
        }
    }
    Ok(names)
}

/// The route-key hash of `key` (FNV-1a 64, mixed; see `wlb::keyed`).
#[pyfunction(name = "key_hash")]
pub fn key_hash_py(key: &[u8]) -> u64 {
    key_hash(key)
}

#[pymethods]
impl RouterPy {
    #[new]
    #[pyo3(signature = (strategy = "alias", seed = Seed(0)), text_signature = "(strategy='alias', seed=0)")]
    fn new(strategy: &str, seed: Seed) -> PyResult<Self> {
        let strategy = Strategy::parse(strategy).ok_or_else(|| {
            errors::value(format!(
                "unknown strategy {strategy:?} (expected 'alias' or 'swrr')"
            ))
        })?;
        Ok(Self {
            inner: Mutex::new(Router::new(strategy, seed.0)),
        })
    }

    #[getter]
    fn strategy(&self) -> &'static str {
        lock(&self.inner).strategy().name()
    }

    fn set_target(&self, name: &str, weight: f64) -> PyResult<()> {
        lock(&self.inner)
            .set_target(name, weight)
            .map_err(|e| errors::weight(&e))
    }

    fn remove_target(&self, name: &str) -> PyResult<()> {
        lock(&self.inner)
            .remove_target(name)
            .map_err(errors::router)
    }

    fn set_eligible(&self, name: &str, eligible: &Bound<'_, PyAny>) -> PyResult<()> {
        let eligible = eligible.is_truthy()?;
        lock(&self.inner)
            .set_eligible(name, eligible)
            .map_err(errors::router)
    }

    fn __len__(&self) -> usize {
        lock(&self.inner).len()
    }

    fn __contains__(&self, name: &Bound<'_, PyAny>) -> bool {
        match name.cast::<PyString>() {
            Ok(s) => s.to_str().is_ok_and(|s| lock(&self.inner).contains(s)),
            Err(_) => false,
        }
    }

    fn snapshot(&self) -> Vec<(String, f64, bool)> {
        lock(&self.inner).snapshot()
    }

    fn shares<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let shares = lock(&self.inner).shares();
        let d = PyDict::new(py);
        for (name, share) in shares {
            d.set_item(name, share)?;
        }
        Ok(d)
    }

    #[pyo3(signature = (exclude = None))]
    fn pick(&self, exclude: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let names = exclude_names(exclude)?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut router = lock(&self.inner);
        let i = router.pick_excluding(&refs).map_err(errors::router)?;
        Ok(router.name(i).to_owned())
    }

    #[pyo3(signature = (key, exclude = None))]
    fn pick_key(&self, key: &[u8], exclude: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        let names = exclude_names(exclude)?;
        let router = lock(&self.inner);
        let flags: Vec<bool> = (0..router.len())
            .map(|i| names.iter().any(|n| n == router.name(i)))
            .collect();
        let i = router
            .pick_key_excluding(key_hash(key), |i| flags[i])
            .map_err(errors::router)?;
        Ok(router.name(i).to_owned())
    }

    fn pick_many(&self, count: Int) -> PyResult<Vec<String>> {
        let count = count.count("count")?;
        let mut router = lock(&self.inner);
        let picks = router.pick_many(count).map_err(errors::router)?;
        Ok(picks
            .into_iter()
            .map(|i| router.name(i).to_owned())
            .collect())
    }

    fn __repr__(&self) -> String {
        let router = lock(&self.inner);
        format!(
            "Router(strategy={:?}, targets={:?})",
            router.strategy().name(),
            router.snapshot()
        )
    }
}
