//! wlb: the logdist core, in pure Rust with no Python dependency (the bindings live in crates/wlb-py).
//!
//! Hot-path primitives of the distributor: weighted selection ([`alias`], [`swrr`], [`router`]),
//! keyed placement by weighted rendezvous hashing ([`keyed`]),
//! a bounded lock-free MPMC ring ([`ring`]), the retry scheduler ([`retry`]), packet
//! validation/splitting/routing over raw bytes ([`packet`]) with the JSON scanner it shares
//! with the analyzer ([`json`]), the analyzer's dedup window ([`dedup`]) and per-batch tallies
//! ([`analyze`]), and the write-ahead log ([`wal`]).
//! `crates/wlb-py` wraps these for Python as `logdist._wlb`.
//!
//! Every fallible call returns a module's own error enum (one variant per reason); its
//! `Display` text is the message Python shows.

pub mod alias;
pub mod analyze;
pub mod dedup;
pub mod json;
pub mod keyed;
pub mod otlp;
pub mod packet;
pub mod retry;
pub mod ring;
pub mod rng;
pub mod router;
pub mod swrr;
pub mod wal;
