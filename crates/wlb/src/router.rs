//! Weighted target selection among eligible targets (alias or smooth weighted round robin).
//!
//! A target is a *candidate* for a pick when it is eligible (healthy and enabled), has a
//! positive weight, and is not excluded. Changes take effect on the next pick.

use crate::alias::{AliasTable, WeightError};
use crate::keyed;
use crate::rng::SplitMix64;
use crate::swrr::swrr_step;
use std::collections::HashMap;
use std::fmt;

/// How a router picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Vose alias table over the candidates, two uniform draws per pick.
    Alias,
    /// Smooth weighted round robin over integer weights (weight * 1e6, rounded).
    Swrr,
}

impl Strategy {
    /// The strategy of a name (`"alias"` or `"swrr"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::Strategy;
    ///
    /// assert_eq!(Strategy::parse("swrr"), Some(Strategy::Swrr));
    /// assert_eq!(Strategy::parse("random"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "alias" => Some(Self::Alias),
            "swrr" => Some(Self::Swrr),
            _ => None,
        }
    }

    /// The name `parse` reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::Strategy;
    ///
    /// assert_eq!(Strategy::Alias.name(), "alias");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Alias => "alias",
            Self::Swrr => "swrr",
        }
    }
}

/// Why a router call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterError {
    /// No candidate: nothing eligible with a positive weight outside the exclusion set.
    NoTarget,
    /// The weights cannot define a distribution (for example, their sum overflows).
    Weight(WeightError),
    /// No target of that name.
    UnknownTarget(String),
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTarget => f.write_str("no eligible target"),
            Self::Weight(e) => write!(f, "{e}"),
            Self::UnknownTarget(name) => write!(f, "no target named {name:?}"),
        }
    }
}

impl std::error::Error for RouterError {}

impl From<WeightError> for RouterError {
    fn from(e: WeightError) -> Self {
        Self::Weight(e)
    }
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    weight: f64,
    eligible: bool,
    /// [`keyed::key_hash`] of the name: its part of every key's rendezvous score.
    name_hash: u64,
    /// SWRR integer weight (after division by the gcd of all of them).
    int_weight: i128,
    /// SWRR running value.
    current: i128,
}

impl Target {
    fn is_candidate(&self) -> bool {
        self.eligible && self.weight > 0.0
    }
}

/// The cached alias table over the candidates (no exclusion), by target index.
#[derive(Debug, Clone)]
struct CachedTable {
    table: AliasTable,
    indices: Vec<usize>,
}

/// Named, weighted targets and the pick logic.
#[derive(Debug, Clone)]
pub struct Router {
    strategy: Strategy,
    rng: SplitMix64,
    targets: Vec<Target>,
    by_name: HashMap<String, usize>,
    cache: Option<CachedTable>,
}

/// Integer SWRR weights are capped so that sums and running values stay far from i128 limits
/// (2^100 is a weight of about 1.3e24 after the 1e6 scale: no real configuration comes close).
const MAX_INT_WEIGHT: f64 = 1_267_650_600_228_229_401_496_703_205_376.0; // 2^100

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Router {
    /// A router with no target, drawing from `SplitMix64(seed)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let r = Router::new(Strategy::Alias, 7);
    /// assert!(r.is_empty() && !r.has_candidate());
    /// ```
    pub fn new(strategy: Strategy, seed: u64) -> Self {
        Self {
            strategy,
            rng: SplitMix64::new(seed),
            targets: Vec::new(),
            by_name: HashMap::new(),
            cache: None,
        }
    }

    /// The strategy it was made with.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// assert_eq!(Router::new(Strategy::Swrr, 0).strategy(), Strategy::Swrr);
    /// ```
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The number of targets, eligible or not.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when there is no target.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// assert!(Router::new(Strategy::Swrr, 0).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// True when a target has that name.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert!(r.contains("a") && !r.contains("c"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The name of the target at `index` (insertion order).
    ///
    /// # Panics
    ///
    /// When `index` is not below [`Router::len`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.name(1), "b");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self, index: usize) -> &str {
        &self.targets[index].name
    }

    /// Index of a target by name.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.index_of("b"), Some(1));
    /// assert_eq!(r.index_of("c"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Adds an eligible target, or changes the weight of an existing one (keeping its flag and
    /// its position).
    ///
    /// # Errors
    ///
    /// [`WeightError::Target`] when the weight is NaN, infinite or negative.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// r.set_target("a", 0.0)?; // now never picked, still listed
    /// assert_eq!(r.pick_many(3)?, [1, 1, 1]);
    /// assert!(r.set_target("c", -1.0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_target(&mut self, name: &str, weight: f64) -> Result<(), WeightError> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(WeightError::Target {
                name: name.to_owned(),
                weight,
            });
        }
        if let Some(&i) = self.by_name.get(name) {
            self.targets[i].weight = weight;
        } else {
            self.by_name.insert(name.to_owned(), self.targets.len());
            self.targets.push(Target {
                name: name.to_owned(),
                weight,
                eligible: true,
                name_hash: keyed::key_hash(name.as_bytes()),
                int_weight: 0,
                current: 0,
            });
        }
        self.changed();
        Ok(())
    }

    /// Removes a target; those after it move down one index.
    ///
    /// # Errors
    ///
    /// [`RouterError::UnknownTarget`] when no target has that name.
    ///
    /// # Panics
    ///
    /// Never: every target is indexed by its name.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// r.remove_target("a")?;
    /// assert_eq!(r.index_of("b"), Some(0));
    /// assert!(r.remove_target("a").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_target(&mut self, name: &str) -> Result<(), RouterError> {
        let i = self
            .by_name
            .remove(name)
            .ok_or_else(|| RouterError::UnknownTarget(name.to_owned()))?;
        self.targets.remove(i);
        for t in &self.targets[i..] {
            *self.by_name.get_mut(&t.name).expect("indexed") -= 1;
        }
        self.changed();
        Ok(())
    }

    /// Marks a target eligible or not (an ineligible one keeps its weight but is never picked).
    ///
    /// # Errors
    ///
    /// [`RouterError::UnknownTarget`] when no target has that name.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// r.set_eligible("b", false)?;
    /// assert_eq!(r.pick_many(2)?, [0, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_eligible(&mut self, name: &str, eligible: bool) -> Result<(), RouterError> {
        let i = self
            .index_of(name)
            .ok_or_else(|| RouterError::UnknownTarget(name.to_owned()))?;
        self.targets[i].eligible = eligible;
        self.changed();
        Ok(())
    }

    /// After any change: drop the cached table, recompute SWRR integer weights, reset `current`.
    fn changed(&mut self) {
        self.cache = None;
        let mut g: i128 = 0;
        for t in &mut self.targets {
            t.current = 0;
            t.int_weight = if t.weight > 0.0 {
                let scaled = (t.weight * 1_000_000.0 + 0.5)
                    .floor()
                    .clamp(1.0, MAX_INT_WEIGHT);
                scaled as i128
            } else {
                0
            };
            g = gcd(g, t.int_weight);
        }
        if g > 1 {
            for t in &mut self.targets {
                t.int_weight /= g;
            }
        }
    }

    /// `(name, weight, eligible)` for every target, in insertion order.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// r.set_eligible("b", false)?;
    /// assert_eq!(r.snapshot(), [("a".into(), 2.0, true), ("b".into(), 1.0, false)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Vec<(String, f64, bool)> {
        self.targets
            .iter()
            .map(|t| (t.name.clone(), t.weight, t.eligible))
            .collect()
    }

    /// Expected share of every target among the eligible positive weights.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// let shares = r.shares();
    /// assert_eq!(shares[0].0, "a");
    /// assert!((shares[0].1 - 2.0 / 3.0).abs() < 1e-12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shares(&self) -> Vec<(String, f64)> {
        let mut total = 0.0f64;
        for t in &self.targets {
            if t.is_candidate() {
                total += t.weight;
            }
        }
        self.targets
            .iter()
            .map(|t| {
                let share = if t.eligible && total > 0.0 {
                    t.weight / total
                } else {
                    0.0
                };
                (t.name.clone(), share)
            })
            .collect()
    }

    /// True when at least one target is a candidate (with no exclusion).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert!(r.has_candidate());
    /// r.set_eligible("a", false)?;
    /// r.set_eligible("b", false)?;
    /// assert!(!r.has_candidate());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_candidate(&self) -> bool {
        self.targets.iter().any(Target::is_candidate)
    }

    fn cached_table(&mut self) -> Result<&CachedTable, RouterError> {
        if self.cache.is_none() {
            let indices: Vec<usize> = (0..self.targets.len())
                .filter(|&i| self.targets[i].is_candidate())
                .collect();
            if indices.is_empty() {
                return Err(RouterError::NoTarget);
            }
            let weights: Vec<f64> = indices.iter().map(|&i| self.targets[i].weight).collect();
            let table = AliasTable::new(&weights)?;
            self.cache = Some(CachedTable { table, indices });
        }
        Ok(self.cache.as_ref().expect("just built"))
    }

    /// The keyed pick: the candidate with the highest rendezvous score for `key_hash`
    /// ([`keyed::pick`]), among those not excluded. It draws no random number, and reads the
    /// targets as they are now: a change of eligibility or weight takes effect at once, with no
    /// table to rebuild.
    ///
    /// # Errors
    ///
    /// [`RouterError::NoTarget`] when no candidate is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::keyed::key_hash;
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Alias, 0);
    /// r.set_target("a", 1.0)?;
    /// r.set_target("b", 1.0)?;
    /// let k = key_hash(b"trace-7");
    /// let home = r.pick_key_excluding(k, |_| false)?;
    /// assert_eq!(r.pick_key_excluding(k, |_| false)?, home);
    /// // excluded (or ineligible), the key goes to the other one, and comes back after
    /// assert_eq!(r.pick_key_excluding(k, |i| i == home)?, 1 - home);
    /// r.set_eligible(r.name(home).to_owned().as_str(), false)?;
    /// assert_eq!(r.pick_key_excluding(k, |_| false)?, 1 - home);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_key_excluding(
        &self,
        key_hash: u64,
        excluded: impl Fn(usize) -> bool,
    ) -> Result<usize, RouterError> {
        let candidates = self
            .targets
            .iter()
            .enumerate()
            .filter(|(i, t)| t.is_candidate() && !excluded(*i))
            .map(|(i, t)| (i, t.name_hash, t.weight));
        keyed::pick(key_hash, candidates).ok_or(RouterError::NoTarget)
    }

    /// One pick with no exclusion: the index of the chosen target.
    ///
    /// # Errors
    ///
    /// [`RouterError::NoTarget`] when no target is eligible with a positive weight.
    ///
    /// # Panics
    ///
    /// Never: the alias table is built just before it is read.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!([r.pick_index()?, r.pick_index()?, r.pick_index()?], [0, 1, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_index(&mut self) -> Result<usize, RouterError> {
        match self.strategy {
            Strategy::Alias => {
                self.cached_table()?;
                let cache = self.cache.as_ref().expect("built above");
                Ok(cache.indices[cache.table.sample_rng(&mut self.rng)])
            }
            Strategy::Swrr => self.swrr_pick(|_| false),
        }
    }

    /// One pick among the candidates whose index is not excluded by `excluded`.
    ///
    /// # Errors
    ///
    /// [`RouterError::NoTarget`] when every candidate is excluded; [`RouterError::Weight`]
    /// when the remaining weights cannot define a distribution.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.pick_index_excluding(|i| i == 0)?, 1);
    /// assert!(r.pick_index_excluding(|_| true).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_index_excluding(
        &mut self,
        excluded: impl Fn(usize) -> bool,
    ) -> Result<usize, RouterError> {
        match self.strategy {
            Strategy::Alias => {
                let excludes_any =
                    (0..self.targets.len()).any(|i| self.targets[i].is_candidate() && excluded(i));
                if !excludes_any {
                    return self.pick_index();
                }
                let indices: Vec<usize> = (0..self.targets.len())
                    .filter(|&i| self.targets[i].is_candidate() && !excluded(i))
                    .collect();
                if indices.is_empty() {
                    return Err(RouterError::NoTarget);
                }
                let weights: Vec<f64> = indices.iter().map(|&i| self.targets[i].weight).collect();
                let table = AliasTable::new(&weights)?;
                Ok(indices[table.sample_rng(&mut self.rng)])
            }
            Strategy::Swrr => self.swrr_pick(excluded),
        }
    }

    /// One pick excluding targets by name (names that are not targets are ignored).
    ///
    /// # Errors
    ///
    /// Those of [`Router::pick_index_excluding`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.pick_excluding(&["a", "zzz"])?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_excluding(&mut self, exclude: &[&str]) -> Result<usize, RouterError> {
        if exclude.is_empty() {
            return self.pick_index();
        }
        let names: Vec<&str> = exclude.to_vec();
        let targets = &self.targets;
        let flags: Vec<bool> = targets
            .iter()
            .map(|t| names.contains(&t.name.as_str()))
            .collect();
        self.pick_index_excluding(|i| flags[i])
    }

    fn swrr_pick(&mut self, excluded: impl Fn(usize) -> bool) -> Result<usize, RouterError> {
        let mut positions: Vec<usize> = Vec::new();
        let entries = self.targets.iter_mut().enumerate().filter_map(|(i, t)| {
            if t.is_candidate() && !excluded(i) {
                positions.push(i);
                Some((t.int_weight, &mut t.current))
            } else {
                None
            }
        });
        match swrr_step(entries) {
            Some(k) => Ok(positions[k]),
            None => Err(RouterError::NoTarget),
        }
    }

    /// `count` picks with no exclusion, appended to `out` as target indices. Either every pick
    /// is made or none (no draw is consumed when there is no candidate).
    ///
    /// # Errors
    ///
    /// [`RouterError::NoTarget`] when no target is eligible with a positive weight.
    ///
    /// # Panics
    ///
    /// Never: the alias table is built, and a candidate checked, before the draws.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// let mut out = vec![9];
    /// r.pick_many_into(3, &mut out)?;
    /// assert_eq!(out, [9, 0, 1, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_many_into(
        &mut self,
        count: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), RouterError> {
        if count == 0 {
            return Ok(());
        }
        out.reserve(count);
        match self.strategy {
            Strategy::Alias => {
                self.cached_table()?;
                let cache = self.cache.as_ref().expect("built above");
                for _ in 0..count {
                    out.push(cache.indices[cache.table.sample_rng(&mut self.rng)]);
                }
            }
            Strategy::Swrr => {
                if !self.has_candidate() {
                    return Err(RouterError::NoTarget);
                }
                let candidates: Vec<usize> = (0..self.targets.len())
                    .filter(|&i| self.targets[i].is_candidate())
                    .collect();
                let weights: Vec<i128> = candidates
                    .iter()
                    .map(|&i| self.targets[i].int_weight)
                    .collect();
                let mut current: Vec<i128> = candidates
                    .iter()
                    .map(|&i| self.targets[i].current)
                    .collect();
                for _ in 0..count {
                    let k = swrr_step(weights.iter().copied().zip(current.iter_mut()))
                        .expect("has a candidate");
                    out.push(candidates[k]);
                }
                for (&i, c) in candidates.iter().zip(current) {
                    self.targets[i].current = c;
                }
            }
        }
        Ok(())
    }

    /// `count` picks, as target indices.
    ///
    /// # Errors
    ///
    /// Those of [`Router::pick_many_into`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::router::{Router, Strategy};
    ///
    /// let mut r = Router::new(Strategy::Swrr, 0);
    /// r.set_target("a", 2.0)?;
    /// r.set_target("b", 1.0)?;
    /// assert_eq!(r.pick_many(3)?, [0, 1, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pick_many(&mut self, count: usize) -> Result<Vec<usize>, RouterError> {
        let mut out = Vec::new();
        self.pick_many_into(count, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Router, picks: &[usize]) -> Vec<String> {
        picks.iter().map(|&i| r.name(i).to_owned()).collect()
    }

    #[test]
    fn no_target_consumes_no_draw() {
        let mut r = Router::new(Strategy::Alias, 5);
        assert_eq!(r.pick_index(), Err(RouterError::NoTarget));
        r.set_target("a", 0.0).unwrap();
        assert_eq!(r.pick_index(), Err(RouterError::NoTarget));
        r.set_target("b", 1.0).unwrap();
        r.set_target("c", 3.0).unwrap();
        let picks = r.pick_many(10).unwrap();
        // Same draws as a fresh router with the same seed: nothing was consumed before.
        let t = AliasTable::new(&[1.0, 3.0]).unwrap();
        let expected: Vec<usize> = t.sample_many(10, 5).into_iter().map(|k| k + 1).collect();
        assert_eq!(picks, expected);
    }

    #[test]
    fn renormalises_over_eligible_and_excluded() {
        let mut r = Router::new(Strategy::Alias, 1);
        for (n, w) in [("a", 1.0), ("b", 1.0), ("c", 2.0)] {
            r.set_target(n, w).unwrap();
        }
        r.set_eligible("c", false).unwrap();
        let picks = r.pick_many(10_000).unwrap();
        assert!(picks.iter().all(|&i| i < 2));
        for _ in 0..1000 {
            let i = r.pick_excluding(&["a", "zzz"]).unwrap();
            assert_eq!(r.name(i), "b");
        }
        assert_eq!(r.pick_excluding(&["a", "b"]), Err(RouterError::NoTarget));
        let shares = r.shares();
        assert_eq!(
            shares,
            vec![("a".into(), 0.5), ("b".into(), 0.5), ("c".into(), 0.0)]
        );
    }

    #[test]
    fn swrr_windows_are_exact_and_reset_on_change() {
        let mut r = Router::new(Strategy::Swrr, 0);
        r.set_target("a", 0.5).unwrap();
        r.set_target("b", 1.5).unwrap();
        // int weights 500000 and 1500000, gcd 500000 -> 1 and 3.
        let p = r.pick_many(8).unwrap();
        assert_eq!(names(&r, &p), vec!["b", "a", "b", "b", "b", "a", "b", "b"]);
        r.pick_index().unwrap();
        r.set_target("a", 0.5).unwrap();
        let p = r.pick_many(4).unwrap();
        assert_eq!(names(&r, &p), vec!["b", "a", "b", "b"]);
    }

    #[test]
    fn swrr_pick_and_pick_many_agree() {
        let mut a = Router::new(Strategy::Swrr, 0);
        let mut b = Router::new(Strategy::Swrr, 0);
        for r in [&mut a, &mut b] {
            r.set_target("x", 3.0).unwrap();
            r.set_target("y", 2.0).unwrap();
            r.set_target("z", 0.0).unwrap();
        }
        let many = a.pick_many(50).unwrap();
        let single: Vec<usize> = (0..50).map(|_| b.pick_index().unwrap()).collect();
        assert_eq!(many, single);
    }

    #[test]
    fn zero_picks_need_no_candidate() {
        let mut r = Router::new(Strategy::Alias, 0);
        assert_eq!(r.pick_many(0), Ok(vec![]));
        assert_eq!(r.pick_many(1), Err(RouterError::NoTarget));
    }

    #[test]
    fn remove_keeps_order() {
        let mut r = Router::new(Strategy::Alias, 0);
        for n in ["a", "b", "c"] {
            r.set_target(n, 1.0).unwrap();
        }
        r.remove_target("a").unwrap();
        assert_eq!(r.index_of("c"), Some(1));
        assert!(r.remove_target("a").is_err());
        assert!(r.set_target("d", f64::NAN).is_err());
        assert!(r.set_target("d", -1.0).is_err());
    }
}
