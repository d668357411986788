//! wlb: the logdist core, in pure Rust with no Python dependency (the bindings live in crates/wlb-py).
//!
//! Hot-path primitives of the distributor: weighted selection ([`alias`], [`swrr`], [`router`]),
//! a bounded lock-free MPMC ring ([`ring`]), the retry scheduler ([`retry`]), packet
//! validation/splitting/routing over raw bytes ([`packet`]), the write-ahead log ([`wal`]), and
//! the analyzer's batch dedup and tallies ([`analyze`]).
//! `crates/wlb-py` wraps these for Python as `logdist._wlb`.

pub mod alias;
pub mod analyze;
pub mod json;
pub mod packet;
pub mod retry;
pub mod ring;
pub mod rng;
pub mod router;
pub mod swrr;
pub mod wal;
