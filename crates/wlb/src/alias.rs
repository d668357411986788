//! Vose's alias method: O(n) construction, O(1) weighted sampling.
//!
//! The construction follows the contract in `python/logdist/_wlb.pyi` step by step, so that
//! the pure-Python twin builds a bit-identical table from the same weights.

use crate::rng::SplitMix64;
use std::fmt;

/// Weights that cannot define a distribution, one variant per reason.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightError {
    /// No weight at all.
    Empty,
    /// Weight `index` is NaN or infinite.
    NotFinite { index: usize, weight: f64 },
    /// Weight `index` is below zero.
    Negative { index: usize, weight: f64 },
    /// An integer weight (of [`crate::swrr::SmoothWeighted`]) is below zero.
    NegativeInteger { index: usize, weight: i128 },
    /// Every weight is zero.
    AllZero,
    /// The weights are finite but their sum is not.
    SumNotFinite,
    /// A router target's weight is NaN, infinite or below zero.
    Target { name: String, weight: f64 },
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("weights must not be empty"),
            Self::NotFinite { index, weight } => {
                write!(f, "weight {index} is not finite ({weight})")
            }
            Self::Negative { index, weight } => write!(f, "weight {index} is negative ({weight})"),
            Self::NegativeInteger { index, weight } => {
                write!(f, "weights[{index}]: {weight} is negative")
            }
            Self::AllZero => f.write_str("all weights are zero"),
            Self::SumNotFinite => f.write_str("the sum of the weights is not finite"),
            Self::Target { name, weight } => {
                write!(
                    f,
                    "weight of {name:?} must be finite and >= 0, got {weight}"
                )
            }
        }
    }
}

impl std::error::Error for WeightError {}

/// Checks a list of float weights: non-empty, every weight finite and >= 0, not all zero,
/// and a finite left-to-right sum. Returns the sum.
///
/// # Errors
///
/// [`WeightError`] naming the first weight that is not finite or is negative, or why the
/// list as a whole is unusable (empty, all zero, sum not finite).
///
/// # Examples
///
/// ```
/// use wlb::alias::{validate_weights, WeightError};
///
/// assert_eq!(validate_weights(&[1.0, 3.0]), Ok(4.0));
/// assert_eq!(validate_weights(&[]), Err(WeightError::Empty));
/// assert_eq!(validate_weights(&[0.0, 0.0]), Err(WeightError::AllZero));
/// let e = validate_weights(&[1.0, -2.0]).unwrap_err();
/// assert_eq!(e.to_string(), "weight 1 is negative (-2)");
/// ```
pub fn validate_weights(weights: &[f64]) -> Result<f64, WeightError> {
    if weights.is_empty() {
        return Err(WeightError::Empty);
    }
    let mut total = 0.0f64;
    for (i, &w) in weights.iter().enumerate() {
        if !w.is_finite() {
            return Err(WeightError::NotFinite {
                index: i,
                weight: w,
            });
        }
        if w < 0.0 {
            return Err(WeightError::Negative {
                index: i,
                weight: w,
            });
        }
        total += w;
    }
    if !weights.iter().any(|&w| w > 0.0) {
        return Err(WeightError::AllZero);
    }
    if !total.is_finite() {
        return Err(WeightError::SumNotFinite);
    }
    Ok(total)
}

/// An alias table over `n` indices.
///
/// # Performance
///
/// Building is O(n) in time and memory. A sample is O(1) whatever the weights: one multiply,
/// one comparison and two lookups.
#[derive(Debug, Clone)]
pub struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<usize>,
}

impl AliasTable {
    /// Builds the table exactly as the contract specifies (Vose, stacks popped from the end).
    ///
    /// # Errors
    ///
    /// Those of [`validate_weights`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert_eq!(t.prob(), &[0.5, 1.0]);
    /// assert!(AliasTable::new(&[f64::NAN]).is_err());
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn new(weights: &[f64]) -> Result<Self, WeightError> {
        let total = validate_weights(weights)?;
        let n = weights.len();
        let nf = n as f64;
        let mut prob = vec![0.0f64; n];
        let mut alias = vec![0usize; n];
        // Index of the largest weight, lowest index on ties: the alias of zero-weight entries.
        let mut largest = 0usize;
        for (i, &w) in weights.iter().enumerate() {
            if w > weights[largest] {
                largest = i;
            }
        }
        let mut scaled = vec![0.0f64; n];
        let mut small = Vec::with_capacity(n);
        let mut large = Vec::with_capacity(n);
        // Zero weights enter `small` with scaled 0.0 (standard Vose): their column's mass is
        // taken off the large weight they alias to, so the shares stay exact.
        for (i, &w) in weights.iter().enumerate() {
            scaled[i] = if w > 0.0 { (w * nf) / total } else { 0.0 };
            if scaled[i] < 1.0 {
                small.push(i);
            } else {
                large.push(i);
            }
        }
        while let (Some(&s), Some(&g)) = (small.last(), large.last()) {
            small.pop();
            large.pop();
            prob[s] = scaled[s];
            alias[s] = g;
            scaled[g] = (scaled[g] + scaled[s]) - 1.0;
            if scaled[g] < 1.0 {
                small.push(g);
            } else {
                large.push(g);
            }
        }
        for g in large {
            prob[g] = 1.0;
            alias[g] = g;
        }
        for s in small {
            // Rounding residue. A zero weight left over keeps prob 0.0: it is never picked.
            if weights[s] > 0.0 {
                prob[s] = 1.0;
                alias[s] = s;
            } else {
                prob[s] = 0.0;
                alias[s] = largest;
            }
        }
        Ok(Self { prob, alias })
    }

    /// The number of indices (weights) the table picks from.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert_eq!(t.len(), 2);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.prob.len()
    }

    /// Never true: a table has at least one index.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert!(!t.is_empty());
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }

    /// The probability column: index `i` is kept with probability `prob[i]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert_eq!(t.prob(), &[0.5, 1.0]);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn prob(&self) -> &[f64] {
        &self.prob
    }

    /// The alias column: where index `i` goes when it is not kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert_eq!(t.alias(), &[1, 1]);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn alias(&self) -> &[usize] {
        &self.alias
    }

    /// One pick from two uniforms in [0, 1) (the caller checks the range).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// assert_eq!(t.sample(0.0, 0.4), 0); // column 0, kept
    /// assert_eq!(t.sample(0.0, 0.6), 1); // column 0, aliased to 1
    /// assert_eq!(t.sample(0.9, 0.99), 1);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    #[inline]
    pub fn sample(&self, u1: f64, u2: f64) -> usize {
        let n = self.prob.len();
        // `as usize` truncates toward zero like Python's int(), and saturates.
        let col = ((u1 * n as f64) as usize).min(n - 1);
        if u2 < self.prob[col] {
            col
        } else {
            self.alias[col]
        }
    }

    /// One pick drawing u1 then u2 from `rng`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    /// use wlb::rng::SplitMix64;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// let mut rng = SplitMix64::new(7);
    /// assert!(t.sample_rng(&mut rng) < 2);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    #[inline]
    pub fn sample_rng(&self, rng: &mut SplitMix64) -> usize {
        let u1 = rng.next_f64();
        let u2 = rng.next_f64();
        self.sample(u1, u2)
    }

    /// `count` picks from `SplitMix64(seed)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// let picks = t.sample_many(1000, 7);
    /// assert_eq!(picks.len(), 1000);
    /// assert!(picks.iter().filter(|&&i| i == 1).count() > 600); // about 3/4
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn sample_many(&self, count: usize, seed: u64) -> Vec<usize> {
        let mut rng = SplitMix64::new(seed);
        (0..count).map(|_| self.sample_rng(&mut rng)).collect()
    }

    /// The same draws as [`AliasTable::sample_many`], counted per index.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::alias::AliasTable;
    ///
    /// let t = AliasTable::new(&[1.0, 3.0])?;
    /// let h = t.histogram(1000, 7);
    /// let ones = t.sample_many(1000, 7).into_iter().filter(|&i| i == 1).count();
    /// assert_eq!(h[1], ones as u64);
    /// assert_eq!(h.iter().sum::<u64>(), 1000);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn histogram(&self, count: usize, seed: u64) -> Vec<u64> {
        let mut rng = SplitMix64::new(seed);
        let mut counts = vec![0u64; self.len()];
        for _ in 0..count {
            counts[self.sample_rng(&mut rng)] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_weights() {
        assert!(AliasTable::new(&[]).is_err());
        assert!(AliasTable::new(&[1.0, -1.0]).is_err());
        assert!(AliasTable::new(&[1.0, f64::NAN]).is_err());
        assert!(AliasTable::new(&[1.0, f64::INFINITY]).is_err());
        assert!(AliasTable::new(&[0.0, 0.0]).is_err());
        assert!(AliasTable::new(&[f64::MAX, f64::MAX]).is_err());
    }

    #[test]
    fn table_for_known_weights() {
        // weights 1,2,3,4 (total 10, n 4): scaled .4 .8 1.2 1.6
        let t = AliasTable::new(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        // small=[0,1] large=[2,3]; pop s=1,g=3: prob1=.8 alias1=3, scaled3=1.4 -> large
        // pop s=0,g=3: prob0=.4 alias0=3, scaled3=0.8 -> small
        // pop s=3,g=2: prob3=.8(ish) alias3=2, scaled2=1.2+0.8-1 -> 1.0 large; leftovers: 2 -> 1.0
        assert_eq!(t.alias(), &[3, 3, 2, 2]);
        assert_eq!(t.prob()[0], 0.4);
        assert_eq!(t.prob()[1], 0.8);
        assert_eq!(t.prob()[2], 1.0);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let t = AliasTable::new(&[0.0, 5.0, 0.0, 5.0]).unwrap();
        assert_eq!(t.prob(), &[0.0, 1.0, 0.0, 0.0]);
        assert_eq!(t.alias(), &[3, 1, 3, 1]);
        let h = t.histogram(100_000, 1);
        assert_eq!(h[0], 0);
        assert_eq!(h[2], 0);
        assert_eq!(h[1] + h[3], 100_000);
    }

    #[test]
    fn zero_weights_do_not_bias_the_shares() {
        // Each zero-weight column's mass is taken off the weight it aliases to: [0, 1, 1] is
        // exactly 1/2 and 1/2 (column mass: prob[col] to col, 1 - prob[col] to alias[col]).
        let t = AliasTable::new(&[0.0, 1.0, 1.0]).unwrap();
        let mut mass = [0.0f64; 3];
        for col in 0..3 {
            mass[col] += t.prob()[col];
            mass[t.alias()[col]] += 1.0 - t.prob()[col];
        }
        assert_eq!(mass[0], 0.0);
        assert!(
            (mass[1] - 1.5).abs() < 1e-12 && (mass[2] - 1.5).abs() < 1e-12,
            "{mass:?}"
        );
    }

    #[test]
    fn shares_follow_weights() {
        let w = [1.0, 2.0, 3.0, 4.0];
        let t = AliasTable::new(&w).unwrap();
        let n = 1_000_000u64;
        let h = t.histogram(n as usize, 42);
        for (i, &c) in h.iter().enumerate() {
            let expected = w[i] / 10.0;
            let got = c as f64 / n as f64;
            // 5 sigma of a binomial share at n = 1e6 is below 0.0025.
            assert!(
                (got - expected).abs() < 0.0025,
                "index {i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn histogram_matches_sample_many() {
        let t = AliasTable::new(&[0.5, 1.5, 3.0]).unwrap();
        let picks = t.sample_many(10_000, 9);
        let mut counts = vec![0u64; 3];
        for p in picks {
            counts[p] += 1;
        }
        assert_eq!(counts, t.histogram(10_000, 9));
    }

    #[test]
    fn sample_edges() {
        let t = AliasTable::new(&[1.0, 1.0, 1.0]).unwrap();
        let last = 1.0 - f64::EPSILON / 2.0;
        assert_eq!(t.sample(last, 0.0), 2);
        assert_eq!(t.sample(0.0, 0.0), 0);
    }
}
