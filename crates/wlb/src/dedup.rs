//! The analyzer's dedup window and the canonical keys of message ids.
//!
//! [`DedupWindow`] remembers the last ~capacity keys in two generations of an arena-backed
//! open-addressing set, so memory is bounded and nothing is evicted one id at a time.
//! [`IdKey`] turns an id into key bytes that are equal exactly when Python's `==` says the
//! ids are equal (`1`, `1.0` and `1e0` are one id, `"1"` is another).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

/// Why a window cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupError {
    /// The capacity asked for is below 2.
    CapacityTooSmall(usize),
}

impl fmt::Display for DedupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CapacityTooSmall(_) => f.write_str("dedup window must hold at least 2 ids"),
        }
    }
}

impl std::error::Error for DedupError {}

/// 64-bit hash of a key, seeded (so that colliding ids cannot be chosen without the seed).
#[inline]
pub(crate) fn hash_key(seed: u64, key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(buf))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    // SplitMix64's finaliser: every input bit reaches every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The key's hash with the top bit set; 0 marks an empty slot.
    hash: u64,
    /// Where the key sits in the arena: a LEB128 length, then the bytes.
    off: u64,
}

const OCCUPIED: u64 = 1 << 63;

/// One generation: an open-addressing (linear probing, load <= 1/2) set of 16-byte slots whose
/// keys live in one arena, so it costs no allocation per id and is forgotten (cleared) whole.
/// A key's bytes are read only when its full 64-bit hash matches.
#[derive(Default)]
struct Generation {
    slots: Vec<Slot>,
    len: usize,
    arena: Vec<u8>,
}

impl Generation {
    fn key_at(&self, off: u64) -> &[u8] {
        let mut at = off as usize;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = self.arena[at];
            at += 1;
            len |= usize::from(b & 0x7F) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        &self.arena[at..at + len]
    }

    fn contains(&self, hash: u64, key: &[u8]) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        let tag = hash | OCCUPIED;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.hash == 0 {
                return false;
            }
            if s.hash == tag && self.key_at(s.off) == key {
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Reads the home slot of `hash` (see `DedupWindow::touch`).
    #[inline]
    fn touch(&self, hash: u64) -> u64 {
        match self.slots.len() {
            0 => 0,
            n => self.slots[hash as usize & (n - 1)].hash,
        }
    }

    /// Inserts a key known to be absent.
    fn insert(&mut self, hash: u64, key: &[u8]) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let off = self.arena.len() as u64;
        let mut len = key.len();
        while len >= 0x80 {
            self.arena.push((len as u8 & 0x7F) | 0x80);
            len >>= 7;
        }
        self.arena.push(len as u8);
        self.arena.extend_from_slice(key);
        self.place(Slot {
            hash: hash | OCCUPIED,
            off,
        });
        self.len += 1;
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = slot.hash as usize & mask;
        while self.slots[i].hash != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        for s in old.into_iter().filter(|s| s.hash != 0) {
            self.place(s);
        }
    }

    /// Forgets every key, keeping the allocations for the next use.
    fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.arena.clear();
        self.len = 0;
    }
}

/// The last ~capacity ids, in two generations. A fresh id goes into `current`; when `current`
/// holds capacity/2 ids it becomes `previous` and the old `previous` is forgotten whole. So
/// between capacity/2 and capacity ids are remembered (all of them until the first rollover),
/// memory is bounded, and there is no per-id eviction work.
///
/// # Performance
///
/// Lookups and inserts are O(1) on average (linear probing at load <= 1/2) and allocate
/// nothing per id; a rollover clears one generation whole and keeps its allocations.
pub struct DedupWindow {
    half: usize,
    seed: u64,
    current: Generation,
    previous: Generation,
}

impl DedupWindow {
    /// `capacity` >= 2.
    ///
    /// # Errors
    ///
    /// [`DedupError::CapacityTooSmall`] when `capacity` < 2.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupError, DedupWindow};
    ///
    /// assert_eq!(DedupWindow::new(1000)?.capacity(), 1000);
    /// assert_eq!(DedupWindow::new(1).err(), Some(DedupError::CapacityTooSmall(1)));
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self, DedupError> {
        if capacity < 2 {
            return Err(DedupError::CapacityTooSmall(capacity));
        }
        Ok(Self {
            half: capacity / 2,
            seed: RandomState::new().hash_one(0x5EED_u64),
            current: Generation::default(),
            previous: Generation::default(),
        })
    }

    /// The most ids remembered (rounded down to even).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::DedupWindow;
    ///
    /// assert_eq!(DedupWindow::new(7)?.capacity(), 6);
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.half * 2
    }

    /// Ids remembered now.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// w.insert(&key);
    /// assert_eq!(w.len(), 1);
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.current.len + self.previous.len
    }

    /// True when no id is remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::DedupWindow;
    ///
    /// assert!(DedupWindow::new(10)?.is_empty());
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash the window files `key` under.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// assert_eq!(w.hash(&key), w.hash(&key));
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn hash(&self, key: &[u8]) -> u64 {
        hash_key(self.seed, key)
    }

    /// Reads the slots `hash` would probe first, and returns a value that depends on them.
    /// A batch touches all its hashes before inserting: the reads are independent, so their
    /// cache misses overlap instead of costing one full memory latency per id.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// let h = w.hash(&key);
    /// let _ = w.touch(h); // a read only: nothing changes
    /// assert!(w.is_empty());
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn touch(&self, hash: u64) -> u64 {
        self.current.touch(hash) ^ self.previous.touch(hash)
    }

    /// True when the canonical key (see [`IdKey`]) is remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// assert!(!w.contains(&key));
    /// w.insert(&key);
    /// assert!(w.contains(&key));
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn contains(&self, key: &[u8]) -> bool {
        let h = self.hash(key);
        self.current.contains(h, key) || self.previous.contains(h, key)
    }

    /// Remembers `key` and returns true if it is fresh; false (and no change) if remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// assert!(w.insert(&key));
    /// assert!(!w.insert(&key)); // remembered
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn insert(&mut self, key: &[u8]) -> bool {
        let h = self.hash(key);
        self.insert_hashed(h, key)
    }

    /// `insert` with `hash == self.hash(key)` computed already.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{DedupWindow, IdKey};
    ///
    /// let mut w = DedupWindow::new(1000)?;
    /// let mut key = Vec::new();
    /// IdKey::of_str("m-1", &mut key);
    /// let h = w.hash(&key);
    /// assert!(w.insert_hashed(h, &key));
    /// assert!(w.contains(&key));
    /// # Ok::<(), wlb::dedup::DedupError>(())
    /// ```
    pub fn insert_hashed(&mut self, hash: u64, key: &[u8]) -> bool {
        if self.current.contains(hash, key) || self.previous.contains(hash, key) {
            return false;
        }
        self.current.insert(hash, key);
        if self.current.len >= self.half {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        true
    }
}

// ------------------------------------------------------------------------------ ids and keys

/// An id as the message gave it (the first occurrence's value, for `record_ids`).
#[derive(Debug, Clone, PartialEq)]
pub enum IdValue {
    Str(String),
    /// An integer literal in [-2^63, 2^64).
    Int(i128),
    /// Any other number (orjson reads it as a double).
    Float(f64),
}

const TAG_STR: u8 = b'S';
const TAG_INT: u8 = b'I';
const TAG_FLOAT: u8 = b'F';
const INT_MIN: i128 = -(1 << 63);
const INT_END: i128 = 1 << 64;

/// Canonical key bytes of ids: equal keys exactly when Python's `==` says the ids are equal.
pub struct IdKey;

impl IdKey {
    /// The key of a string id (its decoded text), written over `out`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::IdKey;
    ///
    /// let (mut a, mut b) = (Vec::new(), Vec::new());
    /// IdKey::of_str("1", &mut a);
    /// IdKey::of_int(1, &mut b);
    /// assert_ne!(a, b); // "1" is not 1
    /// ```
    pub fn of_str(s: &str, out: &mut Vec<u8>) {
        out.clear();
        out.push(TAG_STR);
        out.extend_from_slice(s.as_bytes());
    }

    /// Appends the key of a string id, given as its (valid UTF-8) bytes, to `out`.
    pub(crate) fn append_str_bytes(s: &[u8], out: &mut Vec<u8>) {
        out.push(TAG_STR);
        out.extend_from_slice(s);
    }

    /// The key of an integer id, written over `out`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::IdKey;
    ///
    /// let (mut a, mut b) = (Vec::new(), Vec::new());
    /// IdKey::of_int(-5, &mut a);
    /// IdKey::of_int(-5, &mut b);
    /// assert_eq!(a, b);
    /// ```
    pub fn of_int(v: i128, out: &mut Vec<u8>) {
        out.clear();
        out.push(TAG_INT);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// An integral double in the exact-int range is that int (so 1.0 == 1, -0.0 == 0).
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::IdKey;
    ///
    /// let (mut a, mut b) = (Vec::new(), Vec::new());
    /// IdKey::of_float(1.0, &mut a);
    /// IdKey::of_int(1, &mut b);
    /// assert_eq!(a, b); // 1.0 == 1, as in Python
    /// IdKey::of_float(1.5, &mut a);
    /// assert_ne!(a, b);
    /// ```
    pub fn of_float(f: f64, out: &mut Vec<u8>) {
        if f.fract() == 0.0 && f >= INT_MIN as f64 && f < INT_END as f64 {
            Self::of_int(f as i128, out);
        } else {
            out.clear();
            out.push(TAG_FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }

    /// The key of any id, written over `out`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::dedup::{IdKey, IdValue};
    ///
    /// let (mut a, mut b) = (Vec::new(), Vec::new());
    /// IdKey::of_value(&IdValue::Float(-0.0), &mut a);
    /// IdKey::of_value(&IdValue::Int(0), &mut b);
    /// assert_eq!(a, b);
    /// ```
    pub fn of_value(v: &IdValue, out: &mut Vec<u8>) {
        match v {
            IdValue::Str(s) => Self::of_str(s, out),
            IdValue::Int(i) => Self::of_int(*i, out),
            IdValue::Float(f) => Self::of_float(*f, out),
        }
    }
}

/// The value of a number literal as orjson reads it: an int when it has no fraction or
/// exponent and lies in [-2^63, 2^64), else the nearest double.
pub(crate) fn number_value(text: &[u8], integer: bool) -> IdValue {
    let text = std::str::from_utf8(text).expect("ASCII number");
    if integer && text.len() <= 21 {
        if let Ok(v) = text.parse::<i128>() {
            if (INT_MIN..INT_END).contains(&v) {
                return IdValue::Int(v);
            }
        }
    }
    // The scanner (strict mode) already rejected numbers that overflow.
    IdValue::Float(text.parse::<f64>().expect("a validated JSON number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rolls_over_at_half_capacity() {
        let mut w = DedupWindow::new(10).unwrap();
        let key = |i: i128| {
            let mut k = Vec::new();
            IdKey::of_int(i, &mut k);
            k
        };
        for i in 0..5 {
            assert!(w.insert(&key(i)));
        }
        assert_eq!(w.len(), 5); // current became previous at 5
        for i in 5..9 {
            assert!(w.insert(&key(i)));
        }
        assert_eq!(w.len(), 9);
        assert!(!w.insert(&key(0)));
        assert!(w.insert(&key(9))); // second rollover: 0..5 forgotten
        assert_eq!(w.len(), 5);
        assert!(!w.contains(&key(4)));
        assert!(w.contains(&key(5)));
        for i in 0..100_000 {
            w.insert(&key(i));
            assert!(w.len() < 10);
        }
        assert!(DedupWindow::new(1).is_err());
    }

    #[test]
    fn generation_tables_grow_and_find_everything() {
        let mut w = DedupWindow::new(1_000_000).unwrap();
        let mut k = Vec::new();
        for i in 0..20_000 {
            IdKey::of_str(&format!("id-{i}"), &mut k);
            assert!(w.insert(&k));
        }
        for i in 0..20_000 {
            IdKey::of_str(&format!("id-{i}"), &mut k);
            assert!(w.contains(&k));
            assert!(!w.insert(&k));
        }
        IdKey::of_str("id-20000", &mut k);
        assert!(!w.contains(&k));
        // keys longer than one LEB128 length byte
        for len in [127, 128, 300, 20_000] {
            IdKey::of_str(&"x".repeat(len), &mut k);
            assert!(w.insert(&k));
            assert!(w.contains(&k));
            k.push(b'z');
            assert!(!w.contains(&k));
        }
    }
}
