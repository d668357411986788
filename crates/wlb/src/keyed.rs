//! Keyed placement: weighted rendezvous hashing (highest random weight) over named targets.
//!
//! A key's score on a target is `-weight / ln(u)`, with `u` in (0, 1) drawn from a hash of the
//! key and of the target's name; the key goes to the candidate with the highest score. The
//! chance that a target wins is exactly its share of the weights, the same key wins on the
//! same target while the candidates and weights stay the same, and when a target leaves (or
//! its weight changes) only the keys that must move move: those it held (or the difference).
//! With a target excluded, a key goes to the next one in its own order, which is what
//! re-routing a keyed message does.
//!
//! The hash is FNV-1a 64 finished by the `SplitMix64` mixer, with fixed constants: the
//! pure-Python twin (`logdist/_py/keyed.py`) computes the same bits, and `ln` is the
//! platform's libm `log` in both.
//!
//! # Performance
//!
//! One pass over the key, then one mix, one `ln` and one division per candidate: O(n) per
//! key with no table to build, so a change of the candidate set costs nothing. A Maglev table
//! would give O(1) lookups, but at the cost of a rebuild on every eligibility change and of
//! approximate shares and more movement; at the analyzer counts logdist runs (a handful to a
//! few dozen) the rendezvous pick is a small part of routing a message (see bench/micro.py).

/// FNV-1a 64 offset basis (the hash's fixed seed).
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// The `SplitMix64` output mixer: a bijection on 64 bits with full avalanche.
///
/// # Examples
///
/// ```
/// use wlb::keyed::mix64;
///
/// assert_eq!(mix64(0), 0);
/// assert_ne!(mix64(1), mix64(2));
/// ```
#[inline]
#[must_use]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A streaming key hash: FNV-1a 64 over the bytes written, mixed at the end.
///
/// # Examples
///
/// ```
/// use wlb::keyed::{key_hash, KeyHasher};
///
/// let mut h = KeyHasher::new();
/// h.write(b"e1/7/");
/// h.write(b"0");
/// assert_eq!(h.finish(), key_hash(b"e1/7/0"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyHasher {
    /// A hasher that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self(FNV_OFFSET)
    }

    /// Feeds bytes.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    /// Feeds one code point in the generalized UTF-8 that Python's `surrogatepass` writes (a
    /// lone surrogate as three bytes), so a key holding one hashes the same in both backends.
    pub fn write_code_point(&mut self, c: u32) {
        let mut buf = [0u8; 4];
        let n = match c {
            0..=0x7F => {
                buf[0] = c as u8;
                1
            }
            0x80..=0x7FF => {
                buf[0] = 0xC0 | (c >> 6) as u8;
                buf[1] = 0x80 | (c & 0x3F) as u8;
                2
            }
            0x800..=0xFFFF => {
                buf[0] = 0xE0 | (c >> 12) as u8;
                buf[1] = 0x80 | ((c >> 6) & 0x3F) as u8;
                buf[2] = 0x80 | (c & 0x3F) as u8;
                3
            }
            _ => {
                buf[0] = 0xF0 | (c >> 18) as u8;
                buf[1] = 0x80 | ((c >> 12) & 0x3F) as u8;
                buf[2] = 0x80 | ((c >> 6) & 0x3F) as u8;
                buf[3] = 0x80 | (c & 0x3F) as u8;
                4
            }
        };
        self.write(&buf[..n]);
    }

    /// The hash of everything written.
    #[inline]
    #[must_use]
    pub fn finish(self) -> u64 {
        mix64(self.0)
    }
}

/// The hash of a key (or of a target name).
///
/// # Examples
///
/// ```
/// use wlb::keyed::key_hash;
///
/// assert_eq!(key_hash(b""), 0xF52A_15E9_A9B5_E89B);
/// assert_eq!(key_hash(b"trace-1"), key_hash(b"trace-1"));
/// ```
#[must_use]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = KeyHasher::new();
    h.write(key);
    h.finish()
}

/// A uniform in the open interval (0, 1) from 64 hash bits (the top 53, centred).
#[inline]
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) * (1.0 / 9_007_199_254_740_992.0)
}

/// The score of a key on a target of that name hash and weight: `-weight / ln(u)`.
///
/// # Examples
///
/// ```
/// use wlb::keyed::{key_hash, score};
///
/// let (k, t) = (key_hash(b"k"), key_hash(b"a1"));
/// assert!(score(k, t, 2.0) > score(k, t, 1.0));
/// assert!(score(k, t, 1.0) > 0.0);
/// ```
#[inline]
#[must_use]
pub fn score(key_hash: u64, target_hash: u64, weight: f64) -> f64 {
    -weight / unit(mix64(key_hash ^ target_hash)).ln()
}

/// The candidate with the highest score (the first of equal ones), as its `id`; None when
/// there is none.
///
/// # Examples
///
/// ```
/// use wlb::keyed::{key_hash, pick};
///
/// let targets = [(0, key_hash(b"a"), 1.0), (1, key_hash(b"b"), 1.0)];
/// let k = key_hash(b"user-42");
/// let first = pick(k, targets.iter().copied()).unwrap();
/// assert_eq!(pick(k, targets.iter().copied()), Some(first));
/// assert_eq!(pick(k, std::iter::empty()), None);
/// ```
#[inline]
pub fn pick(key_hash: u64, candidates: impl Iterator<Item = (usize, u64, f64)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (id, th, w) in candidates {
        let s = score(key_hash, th, w);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((id, s));
        }
    }
    best.map(|(id, _)| id)
}

/// Every candidate's `id`, best first: where the key goes as targets leave one by one.
///
/// # Examples
///
/// ```
/// use wlb::keyed::{key_hash, order, pick};
///
/// let targets = [(0, key_hash(b"a"), 1.0), (1, key_hash(b"b"), 3.0), (2, key_hash(b"c"), 1.0)];
/// let k = key_hash(b"user-42");
/// let o = order(k, targets.iter().copied());
/// assert_eq!(o.len(), 3);
/// assert_eq!(Some(o[0]), pick(k, targets.iter().copied()));
/// // without the first, the second wins
/// assert_eq!(Some(o[1]), pick(k, targets.iter().copied().filter(|t| t.0 != o[0])));
/// ```
pub fn order(key_hash: u64, candidates: impl Iterator<Item = (usize, u64, f64)>) -> Vec<usize> {
    let mut scored: Vec<(usize, f64)> = candidates
        .map(|(id, th, w)| (id, score(key_hash, th, w)))
        .collect();
    // stable: equal scores keep their order, as pick's "first of equal ones"
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[(&str, f64)]) -> Vec<(usize, u64, f64)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, (n, w))| (i, key_hash(n.as_bytes()), *w))
            .collect()
    }

    fn picks(t: &[(usize, u64, f64)], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| pick(key_hash(format!("key-{i}").as_bytes()), t.iter().copied()).unwrap())
            .collect()
    }

    #[test]
    fn fixed_vectors() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (published test vector), then mixed.
        assert_eq!(mix64(0xAF63_DC4C_8601_EC8C), key_hash(b"a"));
        let t = targets(&[("a1", 0.5), ("a2", 0.3), ("a3", 0.2)]);
        assert_eq!(picks(&t, 12), [1, 1, 0, 2, 2, 1, 1, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let w = [("a1", 0.4), ("a2", 0.3), ("a3", 0.2), ("a4", 0.1)];
        let t = targets(&w);
        let n = 200_000;
        let mut counts = [0usize; 4];
        for p in picks(&t, n) {
            counts[p] += 1;
        }
        for (c, (_, w)) in counts.iter().zip(w) {
            let share = *c as f64 / n as f64;
            assert!((share - w).abs() < 0.005, "{share} vs {w}");
        }
    }

    #[test]
    fn only_the_keys_that_must_move_move() {
        let t = targets(&[("a1", 0.4), ("a2", 0.3), ("a3", 0.2), ("a4", 0.1)]);
        let n = 100_000;
        let before = picks(&t, n);
        // a3 (0.2) leaves: exactly its keys move
        let without: Vec<_> = t.iter().copied().filter(|x| x.0 != 2).collect();
        let after = picks(&without, n);
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == 2, "a key of {b} moved to {a}");
        }
        // a1 0.4 -> 0.3: keys only leave a1
        let mut lighter = t.clone();
        lighter[0].2 = 0.3;
        let after = picks(&lighter, n);
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == 0, "a key of {b} moved to {a}");
        }
    }
}
