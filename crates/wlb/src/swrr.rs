//! Smooth weighted round robin, the nginx algorithm: deterministic, and over any window of
//! W = sum(weights) consecutive picks each index appears exactly its weight times.

use crate::alias::WeightError;

/// The SWRR step over `(weight, current)` pairs yielded in index order: adds each weight to its
/// current value, picks the first index with the largest current among positive weights, and
/// subtracts the total from it. `None` when no weight is positive.
///
/// # Examples
///
/// ```
/// use wlb::swrr::swrr_step;
///
/// let weights = [5i128, 1, 1];
/// let mut current = [0i128; 3];
/// let picks: Vec<usize> = (0..7)
///     .map(|_| swrr_step(weights.iter().copied().zip(current.iter_mut())).unwrap())
///     .collect();
/// assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
/// ```
#[inline]
pub fn swrr_step<'a>(entries: impl Iterator<Item = (i128, &'a mut i128)>) -> Option<usize> {
    let mut total: i128 = 0;
    let mut best: Option<(usize, &'a mut i128)> = None;
    for (i, (w, cur)) in entries.enumerate() {
        total = total.wrapping_add(w);
        *cur = cur.wrapping_add(w);
        if w > 0 {
            let better = match &best {
                None => true,
                Some((_, b)) => *cur > **b,
            };
            if better {
                best = Some((i, cur));
            }
        }
    }
    best.map(|(i, cur)| {
        *cur = cur.wrapping_sub(total);
        i
    })
}

/// Smooth weighted round robin over integer weights.
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    weights: Vec<i128>,
    current: Vec<i128>,
}

impl SmoothWeighted {
    /// Weights must be non-negative and not all zero.
    ///
    /// # Errors
    ///
    /// [`WeightError::Empty`] or [`WeightError::AllZero`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::swrr::SmoothWeighted;
    ///
    /// let s = SmoothWeighted::new(&[2, 1])?;
    /// assert_eq!(s.len(), 2);
    /// assert!(SmoothWeighted::new(&[0, 0]).is_err());
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn new(weights: &[u64]) -> Result<Self, WeightError> {
        if weights.is_empty() {
            return Err(WeightError::Empty);
        }
        if weights.iter().all(|&w| w == 0) {
            return Err(WeightError::AllZero);
        }
        Ok(Self {
            weights: weights.iter().map(|&w| i128::from(w)).collect(),
            current: vec![0; weights.len()],
        })
    }

    /// The number of weights.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::swrr::SmoothWeighted;
    ///
    /// assert_eq!(SmoothWeighted::new(&[2, 1])?.len(), 2);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Never true: there is at least one weight.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::swrr::SmoothWeighted;
    ///
    /// assert!(!SmoothWeighted::new(&[1])?.is_empty());
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The next pick.
    ///
    /// # Panics
    ///
    /// Never: [`SmoothWeighted::new`] refused weights that are all zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::swrr::SmoothWeighted;
    ///
    /// let mut s = SmoothWeighted::new(&[2, 1])?;
    /// assert_eq!([s.next_index(), s.next_index(), s.next_index()], [0, 1, 0]);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    #[inline]
    pub fn next_index(&mut self) -> usize {
        let entries = self.weights.iter().copied().zip(self.current.iter_mut());
        swrr_step(entries).expect("validated: some weight is positive")
    }

    /// The next `count` picks.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::swrr::SmoothWeighted;
    ///
    /// let mut s = SmoothWeighted::new(&[2, 1])?;
    /// assert_eq!(s.next_many(6), [0, 1, 0, 0, 1, 0]);
    /// # Ok::<(), wlb::alias::WeightError>(())
    /// ```
    pub fn next_many(&mut self, count: usize) -> Vec<usize> {
        (0..count).map(|_| self.next_index()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sequence() {
        // The classic nginx example: weights 5,1,1 give a a b a c a a.
        let mut s = SmoothWeighted::new(&[5, 1, 1]).unwrap();
        assert_eq!(s.next_many(7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn every_window_is_exact() {
        let w = [3u64, 0, 7, 1, 4];
        let total: u64 = w.iter().sum();
        let mut s = SmoothWeighted::new(&w).unwrap();
        let picks = s.next_many(total as usize * 20);
        for start in 0..picks.len() - total as usize {
            let mut counts = [0u64; 5];
            for &p in &picks[start..start + total as usize] {
                counts[p] += 1;
            }
            assert_eq!(counts, w, "window at {start}");
        }
    }

    #[test]
    fn rejects_bad_weights() {
        assert!(SmoothWeighted::new(&[]).is_err());
        assert!(SmoothWeighted::new(&[0, 0]).is_err());
    }
}
