//! The write-ahead log: append-only segment files of CRC32C-framed records, group commit,
//! lazily persisted delivery progress, and recovery that cuts a torn tail off and
//! resynchronises over damaged records, reporting exactly what was lost ([`Loss`]).
//!
//! The pure-Python twin `logdist._py.wal` writes and reads exactly the same files; the format
//! is specified here and in `python/logdist/_wlb.pyi` (class `Wal`). All integers are
//! little-endian.
//!
//! * Segment `<first_lsn as 20 decimal digits>.wal`: a 16-byte header, `b"LDWALSG1"` then
//!   `first_lsn: u64`, followed by records. Every open starts a new segment for its appends,
//!   so a segment that was torn by a crash is never appended to again.
//! * Record: `len: u32`, `crc: u32`, `lsn: u64`, then `len` payload bytes, where
//!   `crc = crc32c(len_le ++ lsn_le ++ payload)` (Castagnoli). Within a segment the lsns are
//!   `first_lsn, first_lsn + 1, ...`; a segment's first lsn is above every lsn before it.
//! * Progress `progress.ckpt` (replaced atomically: write `progress.ckpt.tmp`, fsync, rename,
//!   fsync the directory): `b"LDWALCK1"`, `crc: u32` (crc32c of every byte after it),
//!   `next_lsn: u64`, `n: u64`, then `n` half-open ranges `(start: u64, end: u64)` of delivered
//!   lsns, ascending and disjoint. It only ever lists acknowledged lsns, and it is written
//!   before any segment is deleted. New lsns start at or above its `next_lsn`, so a range can
//!   never cover a record appended later.
//!
//! * Spare `spare-0`, `spare-1`: a fully delivered segment file kept for reuse instead of
//!   being deleted (at most [`MAX_SPARES`], each at most twice `segment_bytes`). The next
//!   segment is made by renaming a spare and overwriting it from the start, with the header
//!   `b"LDWALSR1"` then `first_lsn`: a recycled segment. Past its last record it holds the old
//!   file's stale frames, whose lsns are all below `first_lsn`: never taken for records (a
//!   record's lsn must be the one expected, and a resynchronisation only takes higher ones),
//!   and not reported as damage when every lsn the segment should hold was found. Why:
//!   deleting a file frees its blocks, and on a filesystem mounted with `discard` the journal
//!   commit that frees them stalls every concurrent fsync for 10-25 ms;
//!   overwriting blocks that are already allocated also keeps the file size (metadata) out of
//!   most group commits.
//!
//! Space: when a write finds the device full (`ENOSPC`, `EDQUOT`), the log first gives back
//! what it holds but does not need ([`Wal::reclaim`]: the spares, and the stale frames past
//! the records of recycled segments), then tries that write once more. A write that still
//! fails is not stored, and says so ([`WalError::is_no_space`]); the owner answers "full" and
//! the space comes back as deliveries let [`Wal::checkpoint`] delete delivered segments.
//!
//! Group commit: an appender writes its frames under the state lock, then waits until a
//! sync covers its write. The first waiter that finds no sync running becomes the leader:
//! it waits `commit_delay` (so that more appenders join), takes the set of dirty files,
//! and fsyncs them with the lock released; every appender whose write the sync covered
//! returns. So concurrent appends share one fsync, and none returns before its records are
//! on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"LDWALSG1";
/// First 8 bytes of a segment written over a spare (recycled) file: stale frames follow its records.
pub const RECYCLED_MAGIC: &[u8; 8] = b"LDWALSR1";
/// Fully delivered segment files kept for reuse.
pub const MAX_SPARES: usize = 2;
const SPARE_PREFIX: &str = "spare-";
/// First 8 bytes of the progress file.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"LDWALCK1";
/// Segment header: magic + first lsn.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Record header: len + crc + lsn.
pub const RECORD_HEADER_LEN: u64 = 16;
/// Largest payload of one record (1 GiB). Longer lengths read back from disk mean corruption.
pub const MAX_RECORD_LEN: u64 = 1 << 30;
/// Bytes of a damaged stretch kept in a [`Loss`].
pub const LOSS_DATA_MAX: usize = 64 << 10;
/// Name of the progress file inside the log directory.
pub const CHECKPOINT_FILE: &str = "progress.ckpt";
const CHECKPOINT_TMP: &str = "progress.ckpt.tmp";
const SEGMENT_SUFFIX: &str = ".wal";

/// Sizes and timing of a log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A new segment is started when the next batch would take the active one past this.
    /// (A single batch larger than this still goes into one segment of its own.)
    pub segment_bytes: u64,
    /// Bound on the bytes of all segment files; an append that would cross it fails with
    /// [`WalError::Full`]. Nothing stored is ever dropped to make room.
    pub max_bytes: u64,
    /// How long a group-commit leader waits for more appenders before it fsyncs.
    pub commit_delay: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            commit_delay: Duration::ZERO,
        }
    }
}

/// Everything that can go wrong. `Io` and `Closed` map to `logdist.errors.WalError`,
/// `Full` to `WalFullError`, `InvalidOptions` and `RecordTooLarge` to `ValueError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalError {
    /// The append would take the log past `max_bytes`.
    Full { used: u64, needed: u64, max: u64 },
    /// An I/O operation failed; `errno` is the OS error number when there is one.
    Io {
        op: &'static str,
        path: PathBuf,
        errno: Option<i32>,
        detail: String,
    },
    /// The log was closed.
    Closed,
    /// `segment_bytes` or `max_bytes` is zero.
    InvalidOptions,
    /// A payload of `len` bytes, over [`MAX_RECORD_LEN`].
    RecordTooLarge { len: u64 },
}

impl WalError {
    /// True for an I/O error that says the device (or the quota) is full: `ENOSPC` or
    /// `EDQUOT`. Such a write is not stored; it may fit once space is freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::PathBuf;
    /// use wlb::wal::WalError;
    ///
    /// let full = WalError::Io { op: "append", path: PathBuf::new(), errno: Some(28), detail: String::new() };
    /// assert!(full.is_no_space());
    /// assert!(!WalError::Closed.is_no_space());
    /// ```
    pub fn is_no_space(&self) -> bool {
        match self {
            WalError::Io { errno: Some(n), .. } => matches!(
                io::Error::from_raw_os_error(*n).kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    fn io(op: &'static str, path: &Path, e: &io::Error) -> Self {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            errno: e.raw_os_error(),
            detail: e.to_string(),
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Full { used, needed, max } => write!(
                f,
                "write-ahead log full: {used} bytes on disk + {needed} needed > max_bytes {max}"
            ),
            WalError::Io {
                op, path, detail, ..
            } => {
                write!(
                    f,
                    "write-ahead log {op} failed on {}: {detail}",
                    path.display()
                )
            }
            WalError::Closed => write!(f, "write-ahead log is closed"),
            WalError::InvalidOptions => f.write_str("segment_bytes and max_bytes must be >= 1"),
            WalError::RecordTooLarge { len } => write!(
                f,
                "record of {len} bytes is over the limit of {MAX_RECORD_LEN}"
            ),
        }
    }
}

impl std::error::Error for WalError {}

pub type Result<T> = std::result::Result<T, WalError>;

/// Counters of a log, as `Wal::stats` returns them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalStats {
    /// Bytes of all segment files (headers included).
    pub bytes: u64,
    pub segments: u64,
    /// Records in the segments on disk, delivered or not.
    pub records: u64,
    pub undelivered: u64,
    pub next_lsn: u64,
    /// Successful `append_many` calls and the records they stored.
    pub appends: u64,
    pub appended_records: u64,
    /// Group-commit fsyncs of segment data, and the duration of the last one.
    pub fsyncs: u64,
    pub last_fsync_seconds: f64,
    /// What recovery on open skipped (torn or corrupt tails) and the undelivered records it found.
    pub skipped_bytes: u64,
    pub skipped_records: u64,
    /// Undelivered records that recovery found damaged (lost).
    pub lost_records: u64,
    pub recovered_records: u64,
    pub max_bytes: u64,
    /// What [`Wal::reclaim`] gave back since open: bytes, and spare files deleted.
    pub reclaimed_bytes: u64,
    pub reclaimed_files: u64,
}

/// Records that recovery found damaged: acknowledged as stored, not yet delivered, and now
/// unreadable. Identical across the Rust and Python backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// The segment file, e.g. `00000000000000000007.wal`.
    pub segment: String,
    /// Where the damaged stretch starts in it, and its length in bytes.
    pub offset: u64,
    pub length: u64,
    /// The lsns the stretch held (`lsn_start..lsn_end`) ...
    pub lsn_start: u64,
    pub lsn_end: u64,
    /// ... and those of them that were not delivered yet: the records lost.
    pub lsns: Vec<u64>,
    /// The stretch's first bytes (at most [`LOSS_DATA_MAX`]), for whoever knows the payload
    /// format and can tell what the lost records held.
    pub data: Vec<u8>,
}

/// What recovery found when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub skipped_bytes: u64,
    pub skipped_records: u64,
    /// Undelivered records lost to damage (the sum of the `losses`' lsns).
    pub lost_records: u64,
    pub losses: Vec<Loss>,
    /// Undelivered records found (what `replay` gives back).
    pub recovered_records: u64,
    /// One line per problem, e.g. `00000000000000000007.wal: bad crc at offset 1234: skipped 90
    /// bytes, 2 records`. Identical across the Rust and Python backends.
    pub notes: Vec<String>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    records: u64,
    undelivered: u64,
    /// Damaged stretches between its records, as (start, end) offsets: replay skips them.
    gaps: Vec<(usize, usize)>,
}

struct Active {
    first_lsn: u64,
    file: Arc<File>,
}

struct Failure {
    lo: u64,
    hi: u64,
    err: WalError,
}

struct State {
    closed: bool,
    /// Spare files ready for reuse.
    spares: Vec<PathBuf>,
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    /// Files written since the last sync snapshot (the active one at most once).
    dirty: Vec<Arc<File>>,
    next_lsn: u64,
    undelivered: BTreeSet<u64>,
    total_bytes: u64,
    written_seq: u64,
    synced_seq: u64,
    /// Highest write sequence whose sync has finished, successfully or not.
    settled_seq: u64,
    syncing: bool,
    /// Write sequences (lo, hi] whose fsync failed; the most recent few are kept.
    failures: Vec<Failure>,
    appends: u64,
    appended_records: u64,
    fsyncs: u64,
    last_fsync: Duration,
    reclaimed_bytes: u64,
    reclaimed_files: u64,
}

impl State {
    fn segment_of(&mut self, lsn: u64) -> Option<&mut Segment> {
        self.segments.range_mut(..=lsn).next_back().map(|(_, s)| s)
    }

    fn forget(&mut self, lsns: std::ops::Range<u64>) {
        for lsn in lsns {
            if self.undelivered.remove(&lsn) {
                if let Some(seg) = self.segment_of(lsn) {
                    seg.undelivered -= 1;
                }
            }
        }
    }
}

/// A write-ahead log in one directory. All methods take `&self`; it is `Send + Sync`.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    synced: Condvar,
    checkpointing: Mutex<()>,
    recovery: Recovery,
    /// `next_lsn` when the log was opened: `replay` covers the lsns below it.
    replay_end: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file name of the segment whose first lsn is `first_lsn`.
///
/// # Examples
///
/// ```
/// use wlb::wal::segment_name;
///
/// assert_eq!(segment_name(7), "00000000000000000007.wal");
/// ```
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

fn u32_at(data: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"))
}

fn u64_at(data: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes"))
}

/// `crc32c(len_le ++ lsn_le ++ payload)`, the checksum of one record.
///
/// # Examples
///
/// ```
/// use wlb::wal::record_crc;
///
/// assert_ne!(record_crc(0, b"a"), record_crc(1, b"a")); // the lsn is covered
/// ```
pub fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &lsn.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// The frame header of a record: `len: u32`, `crc: u32`, `lsn: u64` (the payload follows).
///
/// # Examples
///
/// ```
/// use wlb::wal::{record_crc, record_header};
///
/// let h = record_header(5, b"abc");
/// assert_eq!(h[..4], 3u32.to_le_bytes());
/// assert_eq!(h[4..8], record_crc(5, b"abc").to_le_bytes());
/// assert_eq!(h[8..], 5u64.to_le_bytes());
/// ```
pub fn record_header(lsn: u64, payload: &[u8]) -> [u8; RECORD_HEADER_LEN as usize] {
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    h[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&record_crc(lsn, payload).to_le_bytes());
    h[8..].copy_from_slice(&lsn.to_le_bytes());
    h
}

/// The bytes the payloads take as frames; Err when one is over [`MAX_RECORD_LEN`].
fn frames_len<P: AsRef<[u8]>>(payloads: &[P]) -> Result<u64> {
    let mut need = 0u64;
    for p in payloads {
        let len = p.as_ref().len() as u64;
        if len > MAX_RECORD_LEN {
            return Err(WalError::RecordTooLarge { len });
        }
        need += RECORD_HEADER_LEN + len;
    }
    Ok(need)
}

/// `write_all` over several buffers: writev until every byte is written.
fn write_all_vectored(mut w: impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => IoSlice::advance_slices(&mut bufs, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A damaged stretch inside a segment, between two intact records: bytes `start..end` held
/// the lsns `lo..hi`.
#[derive(Clone, Debug)]
struct Gap {
    start: usize,
    end: usize,
    lo: u64,
    hi: u64,
    why: &'static str,
}

/// The records of one segment's bytes, as far as they are intact.
struct Scan {
    /// (lsn, payload offset, payload len)
    records: Vec<(u64, usize, usize)>,
    /// Damaged stretches the scan resynchronised over (an intact record follows each).
    gaps: Vec<Gap>,
    /// End of the last intact record (where a damaged or torn tail starts).
    valid_len: usize,
    /// The lsn the scan expected next when it stopped (one past the last intact record).
    end_lsn: u64,
    /// Why the scan stopped before the end of the data (no intact record follows), and how
    /// many (possibly partial) frames the length fields describe from there.
    bad: Option<(&'static str, u64)>,
}

/// Frames in `data[pos..]` as their length fields describe them; a partial one counts.
fn count_frames(data: &[u8], mut pos: usize) -> u64 {
    let mut n = 0;
    while pos < data.len() {
        n += 1;
        if data.len() - pos < RECORD_HEADER_LEN as usize {
            break;
        }
        let len = u32_at(data, pos) as usize;
        pos = pos
            .saturating_add(RECORD_HEADER_LEN as usize)
            .saturating_add(len);
    }
    n
}

/// The payload length of the frame at `pos` when it is whole and its crc matches; else why not.
fn intact_frame(data: &[u8], pos: usize) -> std::result::Result<usize, &'static str> {
    let hdr = RECORD_HEADER_LEN as usize;
    if data.len() - pos < hdr {
        return Err("torn record");
    }
    let len = u64::from(u32_at(data, pos));
    if len > MAX_RECORD_LEN || (data.len() - pos - hdr) < len as usize {
        return Err("torn record");
    }
    let len = len as usize;
    if record_crc(u64_at(data, pos + 8), &data[pos + hdr..pos + hdr + len]) != u32_at(data, pos + 4)
    {
        return Err("bad crc");
    }
    Ok(len)
}

/// The first intact record after a damaged one at `from`: the smallest offset `q > from` whose
/// frame is whole, has a matching crc, and an lsn in `expect..bound` that the bytes skipped
/// can account for (each lost record took at least 16 bytes, so at most `(q - from) / 16` of
/// them). Stale frames of a recycled file have lsns below the segment's first: never taken.
fn resync(data: &[u8], from: usize, expect: u64, bound: u64) -> Option<(usize, u64)> {
    let hdr = RECORD_HEADER_LEN as usize;
    let mut q = from + 1;
    while q + hdr <= data.len() {
        let lsn = u64_at(data, q + 8);
        let most = expect.saturating_add(((q - from) / hdr) as u64);
        if lsn >= expect && lsn <= most && lsn < bound && intact_frame(data, q).is_ok() {
            return Some((q, lsn));
        }
        q += 1;
    }
    None
}

/// Scans a segment's records from its header on. A damaged record does not end the scan: it
/// resumes at the next intact record (see [`resync`]), and the stretch becomes a [`Gap`]. The
/// lsns are `first_lsn, first_lsn + 1, ...` and stay below `bound` (the next segment's first).
fn scan_segment(data: &[u8], first_lsn: u64, bound: u64) -> Scan {
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut expect = first_lsn;
    let mut records = Vec::new();
    let mut gaps = Vec::new();
    let hdr = RECORD_HEADER_LEN as usize;
    let bad = loop {
        if pos >= data.len() {
            break None;
        }
        let why = match intact_frame(data, pos) {
            Ok(len) if u64_at(data, pos + 8) == expect && expect < bound => {
                records.push((expect, pos + hdr, len));
                expect += 1;
                pos += hdr + len;
                continue;
            }
            Ok(_) => "unexpected lsn",
            Err(why) => why,
        };
        let Some((q, lsn)) = (expect < bound)
            .then(|| resync(data, pos, expect, bound))
            .flatten()
        else {
            break Some(why);
        };
        gaps.push(Gap {
            start: pos,
            end: q,
            lo: expect,
            hi: lsn,
            why,
        });
        pos = q;
        expect = lsn;
    };
    Scan {
        records,
        gaps,
        valid_len: pos.min(data.len()),
        end_lsn: expect,
        bad: bad.map(|why| (why, count_frames(data, pos))),
    }
}

/// The records of a segment that recovery already scanned, skipping its damaged stretches
/// (`gaps`, as (start, end) offsets) without checking crcs again.
fn walk_records(data: &[u8], gaps: &[(usize, usize)]) -> Vec<(u64, usize, usize)> {
    let hdr = RECORD_HEADER_LEN as usize;
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut gaps = gaps.iter().peekable();
    while pos + hdr <= data.len() {
        if let Some(&&(start, end)) = gaps.peek() {
            if start == pos {
                pos = end;
                gaps.next();
                continue;
            }
        }
        let len = u32_at(data, pos) as usize;
        if data.len() - pos - hdr < len {
            break;
        }
        out.push((u64_at(data, pos + 8), pos + hdr, len));
        pos += hdr + len;
    }
    out
}

struct Checkpoint {
    next_lsn: u64,
    ranges: Vec<(u64, u64)>,
}

fn encode_checkpoint(next_lsn: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + ranges.len() * 16);
    body.extend_from_slice(&next_lsn.to_le_bytes());
    body.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
    for (a, b) in ranges {
        body.extend_from_slice(&a.to_le_bytes());
        body.extend_from_slice(&b.to_le_bytes());
    }
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_checkpoint(data: &[u8]) -> Option<Checkpoint> {
    if data.len() < 28
        || &data[..8] != CHECKPOINT_MAGIC
        || crc32c::crc32c(&data[12..]) != u32_at(data, 8)
    {
        return None;
    }
    let next_lsn = u64_at(data, 12);
    let n = u64_at(data, 20);
    if (data.len() as u64 - 28) != n.checked_mul(16)? {
        return None;
    }
    let ranges = (0..n as usize)
        .map(|i| (u64_at(data, 28 + 16 * i), u64_at(data, 36 + 16 * i)))
        .collect();
    Some(Checkpoint { next_lsn, ranges })
}

fn in_ranges(ranges: &[(u64, u64)], lsn: u64) -> bool {
    // ranges are ascending and disjoint: find the last one starting at or before lsn
    let i = ranges.partition_point(|&(a, _)| a <= lsn);
    i > 0 && lsn < ranges[i - 1].1
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, &e))
}

fn truncate_file(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open", path, &e))?;
    f.set_len(len)
        .map_err(|e| WalError::io("truncate", path, &e))?;
    f.sync_all().map_err(|e| WalError::io("fsync", path, &e))
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WalError::io("delete segment", path, &e)),
    }
}

// ---------------------------------------------------------------------------------- recovery

/// What recovery rebuilt from the files of the log directory.
struct Recovered {
    segments: BTreeMap<u64, Segment>,
    undelivered: BTreeSet<u64>,
    total_bytes: u64,
    /// One past the last lsn found (or the checkpoint's `next_lsn`, when above).
    next_lsn: u64,
    spares: Vec<PathBuf>,
    report: Recovery,
}

/// Reads the progress file; None when there is none or it is damaged (noted in `report`).
fn read_checkpoint(dir: &Path, report: &mut Recovery) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read(&path) {
        Ok(data) => {
            let c = decode_checkpoint(&data);
            if c.is_none() {
                report
                    .notes
                    .push(format!("{CHECKPOINT_FILE}: bad checkpoint, ignored"));
            }
            Ok(c)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("read", &path, &e)),
    }
}

/// Segment files as (first lsn, path).
type SegmentFiles = Vec<(u64, PathBuf)>;

/// The segment files and the spare files of `dir`, both sorted.
fn list_dir(dir: &Path) -> Result<(SegmentFiles, Vec<PathBuf>)> {
    let mut found = Vec::new();
    let mut spares = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, &e))? {
        let entry = entry.map_err(|e| WalError::io("list directory", dir, &e))?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if let Some(first) = parse_segment_name(name) {
            found.push((first, entry.path()));
        } else if let Some(k) = name.strip_prefix(SPARE_PREFIX) {
            if (0..MAX_SPARES).any(|i| k == i.to_string()) {
                spares.push(entry.path());
            }
        }
    }
    found.sort();
    spares.sort();
    Ok((found, spares))
}

/// How a segment file's header reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// `LDWALSG1` and the first lsn its name gives.
    Fresh,
    /// `LDWALSR1` and the first lsn its name gives: stale frames may follow its records.
    Recycled,
    /// Damaged: its records are still scanned, from the lsn its name gives.
    Damaged,
    /// A first lsn below the end of the segment before it: its records would repeat lsns.
    Overlap,
}

/// The records of a segment file's bytes that recovery may keep, and how its header reads;
/// None for a spare renamed for reuse whose new header never reached the disk (no records:
/// dropped without a note). `prev_end` is one past the last lsn of the segments before it;
/// `bound` the first lsn of the next segment file (`u64::MAX` for the last one).
fn scan_file(data: &[u8], first: u64, prev_end: u64, bound: u64) -> Option<(Scan, Header)> {
    let hdr = SEGMENT_HEADER_LEN as usize;
    let magic = if data.len() >= hdr {
        Some(&data[..8])
    } else {
        None
    };
    let ours = magic == Some(&SEGMENT_MAGIC[..]) || magic == Some(&RECYCLED_MAGIC[..]);
    let header_lsn = if data.len() >= hdr {
        u64_at(data, 8)
    } else {
        0
    };
    if ours && header_lsn == first && first >= prev_end {
        let kind = if magic == Some(&RECYCLED_MAGIC[..]) {
            Header::Recycled
        } else {
            Header::Fresh
        };
        return Some((scan_segment(data, first, bound), kind));
    }
    if first < prev_end {
        let frames = if data.len() >= hdr {
            count_frames(data, hdr)
        } else {
            0
        };
        let scan = Scan {
            records: Vec::new(),
            gaps: Vec::new(),
            valid_len: 0,
            end_lsn: first,
            bad: Some(("bad segment header", frames)),
        };
        return Some((scan, Header::Overlap));
    }
    let scan = scan_segment(data, first, bound);
    // Only the newest file can be a spare renamed just before a crash: an older one lost records.
    if ours && header_lsn < first && scan.records.is_empty() && bound == u64::MAX {
        return None;
    }
    Some((scan, Header::Damaged))
}

/// The lsns in `lo..hi` that the delivered `ranges` do not cover.
fn undelivered_in(lo: u64, hi: u64, ranges: &[(u64, u64)]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = ranges.partition_point(|&(_, b)| b <= lo);
    let mut x = lo;
    while x < hi {
        if i < ranges.len() && ranges[i].0 <= x {
            x = x.max(ranges[i].1);
            i += 1;
            continue;
        }
        let stop = if i < ranges.len() {
            ranges[i].0.min(hi)
        } else {
            hi
        };
        out.extend(x..stop);
        x = stop;
    }
    out
}

impl Recovered {
    fn note(&mut self, segment: &str, why: &str, offset: usize, bytes: u64, records: u64) {
        self.report.notes.push(format!(
            "{segment}: {why} at offset {offset}: skipped {bytes} bytes, {records} records"
        ));
        self.report.skipped_bytes += bytes;
        self.report.skipped_records += records;
    }

    /// Records the lsns `lo..hi` of the stretch `data[start..end]` as lost, except those
    /// already delivered; false when nothing undelivered was there.
    fn lose(
        &mut self,
        segment: &str,
        data: &[u8],
        (start, end): (usize, usize),
        (lo, hi): (u64, u64),
        delivered: &[(u64, u64)],
    ) -> bool {
        let lsns = undelivered_in(lo, hi, delivered);
        if lsns.is_empty() {
            return false;
        }
        self.report.lost_records += lsns.len() as u64;
        self.report.losses.push(Loss {
            segment: segment.to_string(),
            offset: start as u64,
            length: (end - start) as u64,
            lsn_start: lo,
            lsn_end: hi,
            lsns,
            data: data[start..end.min(start + LOSS_DATA_MAX)].to_vec(),
        });
        true
    }

    /// The damaged tail of a segment (no intact record follows): lost when lsns that this
    /// segment should hold are missing and undelivered (below the next segment's first, or,
    /// in the last segment, below the checkpoint's `next_lsn`); else a torn write (never
    /// acknowledged) or, in a recycled segment, its stale frames. True when it is to be cut.
    fn tail(
        &mut self,
        name: &str,
        data: &[u8],
        scan: &Scan,
        header: Header,
        ctx: (u64, &[(u64, u64)]),
    ) -> bool {
        let (horizon, delivered) = ctx;
        let Some((why, frames)) = scan.bad else {
            // The file ends cleanly, but short of lsns it should hold: a cut-off end, lost
            // when they are undelivered (a zero-length stretch; nothing to cut).
            let (start, lsns) = (scan.valid_len, (scan.end_lsn, horizon.max(scan.end_lsn)));
            if self.lose(name, data, (start, data.len()), lsns, delivered) {
                self.note(name, "torn record", start, 0, lsns.1 - lsns.0);
            }
            return false;
        };
        let (start, bytes) = (scan.valid_len, (data.len() - scan.valid_len) as u64);
        let lsns = (scan.end_lsn, horizon.max(scan.end_lsn));
        if header != Header::Overlap && self.lose(name, data, (start, data.len()), lsns, delivered)
        {
            self.note(name, why, start, bytes, lsns.1 - lsns.0);
            return true;
        }
        if header == Header::Recycled {
            return false;
        }
        self.note(name, why, start, bytes, frames);
        true
    }

    /// Scans every segment file in lsn order: resynchronises over damaged records, cuts off
    /// torn or damaged tails, deletes files without a good record, reports what was lost, and
    /// counts what is not in `delivered`. `ckpt_next` is the checkpoint's `next_lsn` (0 without one).
    fn segments(
        &mut self,
        found: SegmentFiles,
        delivered: &[(u64, u64)],
        ckpt_next: u64,
    ) -> Result<bool> {
        let firsts: Vec<u64> = found.iter().map(|f| f.0).collect();
        let mut prev_end = 0;
        let mut touched = false;
        for (idx, (first, path)) in found.into_iter().enumerate() {
            let data = fs::read(&path).map_err(|e| WalError::io("read", &path, &e))?;
            let next_first = firsts.get(idx + 1).copied();
            let Some((scan, header)) =
                scan_file(&data, first, prev_end, next_first.unwrap_or(u64::MAX))
            else {
                remove_file(&path)?;
                touched = true;
                continue;
            };
            let name = segment_name(first);
            if header == Header::Damaged {
                self.note(
                    &name,
                    "bad segment header",
                    0,
                    data.len().min(SEGMENT_HEADER_LEN as usize) as u64,
                    0,
                );
            }
            for g in &scan.gaps {
                self.note(&name, g.why, g.start, (g.end - g.start) as u64, g.hi - g.lo);
                self.lose(&name, &data, (g.start, g.end), (g.lo, g.hi), delivered);
            }
            let horizon = next_first.unwrap_or(ckpt_next);
            if self.tail(&name, &data, &scan, header, (horizon, delivered))
                && !scan.records.is_empty()
            {
                truncate_file(&path, scan.valid_len as u64)?;
                touched = true;
            }
            if scan.records.is_empty() {
                remove_file(&path)?;
                touched = true;
                continue;
            }
            prev_end = scan.end_lsn;
            self.keep(first, path, &scan, delivered);
        }
        // A lost record was acknowledged as stored: its lsn is never given to a new one, even
        // when no intact record (nor an intact checkpoint) is left above it.
        let past_lost = self.report.losses.iter().filter_map(|l| l.lsns.last());
        let past_lost = past_lost.map(|l| l + 1).max().unwrap_or(0);
        self.next_lsn = self.next_lsn.max(prev_end).max(past_lost);
        Ok(touched)
    }

    /// Lists a segment with its intact records.
    fn keep(&mut self, first: u64, path: PathBuf, scan: &Scan, delivered: &[(u64, u64)]) {
        let mut seg = Segment {
            path,
            bytes: scan.valid_len as u64,
            records: 0,
            undelivered: 0,
            gaps: scan.gaps.iter().map(|g| (g.start, g.end)).collect(),
        };
        for &(lsn, _, _) in &scan.records {
            seg.records += 1;
            if !in_ranges(delivered, lsn) {
                self.undelivered.insert(lsn);
                seg.undelivered += 1;
            }
        }
        self.total_bytes += seg.bytes;
        self.segments.insert(first, seg);
    }
}

/// Recovers the log in `dir` (which exists): the progress file, then every segment file.
fn recover(dir: &Path) -> Result<Recovered> {
    remove_file(&dir.join(CHECKPOINT_TMP))?;
    let mut report = Recovery::default();
    let ckpt = read_checkpoint(dir, &mut report)?;
    let (found, mut spares) = list_dir(dir)?;
    if ckpt.is_none() {
        // Spares only ever follow a checkpoint; without one the lsns may restart at 0, and a
        // stale frame could then pass for a new record: drop them.
        for spare in spares.drain(..) {
            remove_file(&spare)?;
        }
    }
    let (next_lsn, delivered) = ckpt.map_or((0, Vec::new()), |c| (c.next_lsn, c.ranges));
    let mut rec = Recovered {
        segments: BTreeMap::new(),
        undelivered: BTreeSet::new(),
        total_bytes: 0,
        next_lsn,
        spares,
        report,
    };
    if rec.segments(found, &delivered, next_lsn)? {
        sync_dir(dir)?;
    }
    rec.report.recovered_records = rec.undelivered.len() as u64;
    Ok(rec)
}

impl State {
    /// The state of a log just recovered: nothing active, written or synced yet.
    fn recovered(rec: Recovered) -> (Self, Recovery) {
        let state = State {
            closed: false,
            spares: rec.spares,
            segments: rec.segments,
            active: None,
            dirty: Vec::new(),
            next_lsn: rec.next_lsn,
            undelivered: rec.undelivered,
            total_bytes: rec.total_bytes,
            written_seq: 0,
            synced_seq: 0,
            settled_seq: 0,
            syncing: false,
            failures: Vec::new(),
            appends: 0,
            appended_records: 0,
            fsyncs: 0,
            last_fsync: Duration::ZERO,
            reclaimed_bytes: 0,
            reclaimed_files: 0,
        };
        (state, rec.report)
    }
}

impl Wal {
    /// Opens (creating it if needed) the log in `dir` and recovers it: every segment is
    /// scanned, a torn or corrupt tail is cut off and reported in [`Wal::recovery`], and the
    /// undelivered records become available through [`Wal::replay`].
    ///
    /// # Errors
    ///
    /// [`WalError::InvalidOptions`] for a zero size; [`WalError::Io`] when the directory or a
    /// file in it cannot be created, read, truncated or synced.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-open-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// wal.append(b"one")?;
    /// drop(wal); // no close: as after a crash
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert_eq!(wal.replay()?, [(0, b"one".to_vec())]);
    /// assert_eq!(wal.recovery().recovered_records, 1);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        if opts.segment_bytes == 0 || opts.max_bytes == 0 {
            return Err(WalError::InvalidOptions);
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| WalError::io("create directory", &dir, &e))?;
        let (state, recovery) = State::recovered(recover(&dir)?);
        let replay_end = state.next_lsn;
        let wal = Wal {
            dir,
            opts,
            state: Mutex::new(state),
            synced: Condvar::new(),
            checkpointing: Mutex::new(()),
            recovery,
            replay_end,
        };
        // Drop the segments that the progress file already marks delivered.
        wal.checkpoint()?;
        Ok(wal)
    }

    /// The directory of the log.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-dir-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert_eq!(wal.dir(), dir.as_path());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-options-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions { max_bytes: 1 << 20, ..WalOptions::default() })?;
    /// assert_eq!(wal.options().max_bytes, 1 << 20);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    /// What recovery found when the log was opened.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-recovery-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert!(wal.recovery().notes.is_empty());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Appends the payloads as consecutive records and returns their lsns, once they are all
    /// fsynced. Concurrent calls share fsyncs (group commit).
    ///
    /// # Performance
    ///
    /// One `writev` per call, from the callers' buffers; concurrent calls share one fsync (group
    /// commit), so throughput grows with the number of appending threads.
    ///
    /// # Errors
    ///
    /// [`WalError::RecordTooLarge`] for a payload over [`MAX_RECORD_LEN`]; [`WalError::Full`]
    /// when the records would take the log past `max_bytes`; [`WalError::Closed`];
    /// [`WalError::Io`] when a write or its fsync fails (the records are then not stored). A
    /// write that finds the device full is tried once more after [`Wal::reclaim`] freed space.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-append-many-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert_eq!(wal.append_many(&[b"a", b"b"])?, [0, 1]);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_many<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Vec<u64>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let need = frames_len(payloads)?;
        let mut st = lock(&self.state);
        if st.closed {
            return Err(WalError::Closed);
        }
        let first = match self.place(&mut st, payloads, need) {
            Ok(first) => first,
            // The device is full: give back what the log does not need, and try once more.
            Err(e) if e.is_no_space() && Self::reclaim_locked(&mut st) > 0 => {
                self.place(&mut st, payloads, need)?
            }
            Err(e) => return Err(e),
        };
        let n = payloads.len() as u64;
        st.written_seq += 1;
        let my_seq = st.written_seq;
        loop {
            if let Some(f) = st.failures.iter().find(|f| f.lo < my_seq && my_seq <= f.hi) {
                let err = f.err.clone();
                // The caller is told these records are not stored; they no longer hold back
                // segment deletion (if they did reach the disk, a restart redelivers them).
                st.forget(first..first + n);
                return Err(err);
            }
            if st.synced_seq >= my_seq {
                st.appends += 1;
                st.appended_records += n;
                return Ok((first..first + n).collect());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st = self.lead_sync(st);
        }
    }

    /// Makes room for the payloads' frames (`need` bytes) and writes them; returns the lsn of
    /// the first. Nothing is stored when it fails.
    fn place<P: AsRef<[u8]>>(&self, st: &mut State, payloads: &[P], need: u64) -> Result<u64> {
        self.make_room(st, need)?;
        let first = st.next_lsn;
        self.write_frames(st, payloads, need)?;
        Ok(first)
    }

    /// Checks that `need` more bytes fit under `max_bytes`, and starts a new segment when the
    /// active one is full (or there is none).
    fn make_room(&self, st: &mut State, need: u64) -> Result<()> {
        let roll = match &st.active {
            None => true,
            Some(a) => {
                let seg = &st.segments[&a.first_lsn];
                seg.records > 0 && seg.bytes + need > self.opts.segment_bytes
            }
        };
        let extra = if roll { SEGMENT_HEADER_LEN } else { 0 };
        if st.total_bytes + need + extra > self.opts.max_bytes {
            return Err(WalError::Full {
                used: st.total_bytes,
                needed: need + extra,
                max: self.opts.max_bytes,
            });
        }
        if roll {
            st.active = None;
            self.create_segment(st)?;
        }
        Ok(())
    }

    /// Writes the payloads' frames (`need` bytes) at the end of the active segment, with lsns
    /// from `next_lsn` on, and counts them as undelivered. Nothing is synced yet.
    fn write_frames<P: AsRef<[u8]>>(
        &self,
        st: &mut State,
        payloads: &[P],
        need: u64,
    ) -> Result<()> {
        let first = st.next_lsn;
        let n = payloads.len() as u64;
        // One write of every frame, gathered from the callers' buffers (writev): the payloads
        // are not copied into an intermediate buffer first.
        let heads: Vec<[u8; RECORD_HEADER_LEN as usize]> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| record_header(first + i as u64, p.as_ref()))
            .collect();
        let mut slices = Vec::with_capacity(2 * payloads.len());
        for (h, p) in heads.iter().zip(payloads) {
            slices.push(IoSlice::new(h));
            if !p.as_ref().is_empty() {
                slices.push(IoSlice::new(p.as_ref()));
            }
        }
        let (active_first, file) = {
            let a = st.active.as_ref().expect("an active segment");
            (a.first_lsn, Arc::clone(&a.file))
        };
        if let Err(e) = write_all_vectored(&*file, &mut slices) {
            Self::retire_after_write_error(st, active_first, &file);
            return Err(WalError::io(
                "append",
                &self.dir.join(segment_name(active_first)),
                &e,
            ));
        }
        let seg = st
            .segments
            .get_mut(&active_first)
            .expect("active segment is listed");
        seg.bytes += need;
        seg.records += n;
        seg.undelivered += n;
        st.total_bytes += need;
        st.next_lsn = first + n;
        st.undelivered.extend(first..first + n);
        if !st.dirty.last().is_some_and(|f| Arc::ptr_eq(f, &file)) {
            st.dirty.push(file);
        }
        Ok(())
    }

    /// Appends one record; see [`Wal::append_many`].
    ///
    /// # Errors
    ///
    /// Those of [`Wal::append_many`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-append-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert_eq!(wal.append(b"a")?, 0);
    /// assert_eq!(wal.append(b"b")?, 1);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        Ok(self.append_many(&[payload])?[0])
    }

    /// One group commit: wait for company, fsync every dirty file, wake the waiters.
    fn lead_sync<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.syncing = true;
        if !self.opts.commit_delay.is_zero() {
            drop(st);
            std::thread::sleep(self.opts.commit_delay);
            st = lock(&self.state);
        }
        let target = st.written_seq;
        let files = std::mem::take(&mut st.dirty);
        drop(st);
        let start = Instant::now();
        let mut synced = 0;
        let mut result = Ok(());
        for f in &files {
            synced += 1;
            if let Err(e) = f.sync_data() {
                result = Err(e);
                break;
            }
        }
        let elapsed = start.elapsed();
        let mut st = lock(&self.state);
        st.fsyncs += synced;
        st.last_fsync = elapsed;
        st.syncing = false;
        st.settled_seq = st.settled_seq.max(target);
        match result {
            Ok(()) => st.synced_seq = st.synced_seq.max(target),
            Err(e) => {
                // After a failed fsync the page cache cannot be trusted: stop appending to
                // the file, and fail every write the sync was meant to cover.
                let path = match &st.active {
                    Some(a) => self.dir.join(segment_name(a.first_lsn)),
                    None => self.dir.clone(),
                };
                st.active = None;
                let lo = st.synced_seq;
                st.failures.push(Failure {
                    lo,
                    hi: target,
                    err: WalError::io("fsync", &path, &e),
                });
                if st.failures.len() > 64 {
                    st.failures.remove(0);
                }
            }
        }
        self.synced.notify_all();
        st
    }

    fn create_segment(&self, st: &mut State) -> Result<()> {
        let first = st.next_lsn;
        let path = self.dir.join(segment_name(first));
        if let Some(old) = st.segments.remove(&first) {
            // A leftover without records (only possible after a failed write): replace it.
            st.total_bytes -= old.bytes;
        }
        let header = |magic: &[u8; 8]| {
            let mut h = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
            h.extend_from_slice(magic);
            h.extend_from_slice(&first.to_le_bytes());
            h
        };
        let mut reused = None;
        while let Some(spare) = st.spares.pop() {
            // Overwrite a spare from the start: no blocks to allocate, none freed.
            let opened = fs::rename(&spare, &path).and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(&header(RECYCLED_MAGIC)).map(|()| f))
            });
            if let Ok(f) = opened {
                reused = Some(f);
                break;
            }
            let _ = fs::remove_file(&spare);
            let _ = fs::remove_file(&path);
        }
        let file = match reused {
            Some(f) => f,
            None => OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&header(SEGMENT_MAGIC)).map(|()| f))
                .map_err(|e| {
                    // Created but without its header (the device is full): leave nothing behind.
                    let _ = fs::remove_file(&path);
                    WalError::io("create segment", &path, &e)
                })?,
        };
        if let Err(e) = sync_dir(&self.dir) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        st.segments.insert(
            first,
            Segment {
                path,
                bytes: SEGMENT_HEADER_LEN,
                records: 0,
                undelivered: 0,
                gaps: Vec::new(),
            },
        );
        st.total_bytes += SEGMENT_HEADER_LEN;
        let file = Arc::new(file);
        st.dirty.push(Arc::clone(&file));
        st.active = Some(Active {
            first_lsn: first,
            file,
        });
        Ok(())
    }

    fn retire_after_write_error(st: &mut State, first: u64, file: &File) {
        st.active = None;
        let seg = st.segments.get(&first).expect("active segment is listed");
        // Cut a partial frame off, so the segment stays readable to its end.
        let _ = file.set_len(seg.bytes);
        if seg.records == 0 {
            let path = seg.path.clone();
            if fs::remove_file(&path).is_ok() {
                let bytes = seg.bytes;
                st.segments.remove(&first);
                st.total_bytes -= bytes;
            }
        }
    }

    /// Marks records delivered (acknowledged by an analyzer). Unknown and already delivered
    /// lsns are ignored. Returns how many were newly marked. In memory only: the next
    /// [`Wal::checkpoint`] persists it.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-ack-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// let lsns = wal.append_many(&[b"a", b"b"])?;
    /// assert_eq!(wal.ack(&lsns), 2);
    /// assert_eq!(wal.ack(&lsns), 0); // already delivered
    /// assert_eq!(wal.stats().undelivered, 0);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ack(&self, lsns: &[u64]) -> u64 {
        let mut st = lock(&self.state);
        let mut n = 0;
        for &lsn in lsns {
            if st.undelivered.remove(&lsn) {
                n += 1;
                if let Some(seg) = st.segment_of(lsn) {
                    seg.undelivered -= 1;
                }
            }
        }
        n
    }

    /// Persists delivery progress (the acks so far) and then deletes every fully delivered
    /// segment, the active one included (the next append starts a new one). Returns the
    /// number of segments deleted. Call it periodically (it fsyncs, so off the event loop).
    ///
    /// # Errors
    ///
    /// [`WalError::Closed`]; [`WalError::Io`] when the progress file cannot be written (on a
    /// full device, only after [`Wal::reclaim`] freed nothing or not enough) or a segment
    /// cannot be deleted.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-checkpoint-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// let lsns = wal.append_many(&[b"a", b"b"])?;
    /// wal.ack(&lsns);
    /// assert_eq!(wal.checkpoint()?, 1);
    /// assert_eq!(wal.stats().segments, 0);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn checkpoint(&self) -> Result<u64> {
        if lock(&self.state).closed {
            return Err(WalError::Closed);
        }
        self.checkpoint_inner()
    }

    fn checkpoint_inner(&self) -> Result<u64> {
        let _one_at_a_time = lock(&self.checkpointing);
        let (body, doomed) = {
            let mut st = lock(&self.state);
            if let Some(a) = &st.active {
                let seg = &st.segments[&a.first_lsn];
                if seg.records > 0 && seg.undelivered == 0 {
                    st.active = None;
                }
            }
            let active = st.active.as_ref().map(|a| a.first_lsn);
            let doomed: Vec<(u64, PathBuf)> = st
                .segments
                .iter()
                .filter(|(first, s)| Some(**first) != active && s.records > 0 && s.undelivered == 0)
                .map(|(first, s)| (*first, s.path.clone()))
                .collect();
            let base = st
                .segments
                .iter()
                .find(|(first, s)| Some(**first) == active || s.undelivered > 0)
                .map_or(st.next_lsn, |(first, _)| *first);
            let mut ranges = Vec::new();
            let mut start = base;
            for &lsn in st.undelivered.range(base..) {
                if lsn > start {
                    ranges.push((start, lsn));
                }
                start = lsn + 1;
            }
            if st.next_lsn > start {
                ranges.push((start, st.next_lsn));
            }
            (encode_checkpoint(st.next_lsn, &ranges), doomed)
        };
        match self.write_checkpoint(&body) {
            // No room for the progress file: give back what the log does not need, and retry.
            Err(e) if e.is_no_space() && Self::reclaim_locked(&mut lock(&self.state)) > 0 => {
                self.write_checkpoint(&body)?;
            }
            other => other?,
        }
        let mut deleted = 0;
        let mut result = Ok(());
        for (first, path) in &doomed {
            if !self.keep_as_spare(path) {
                if let Err(e) = remove_file(path) {
                    result = Err(e);
                    break;
                }
            }
            let mut st = lock(&self.state);
            if let Some(seg) = st.segments.remove(first) {
                st.total_bytes -= seg.bytes;
            }
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        result.map(|()| deleted)
    }

    /// Renames a delivered segment file to a free spare name (see the module doc); false when
    /// there is no free one, the file is too large to keep, or the rename fails.
    fn keep_as_spare(&self, path: &Path) -> bool {
        let slot = {
            let st = lock(&self.state);
            (0..MAX_SPARES)
                .map(|i| self.dir.join(format!("{SPARE_PREFIX}{i}")))
                .find(|p| !st.spares.contains(p))
        };
        let Some(slot) = slot else { return false };
        let small = fs::metadata(path).is_ok_and(|m| m.len() <= 2 * self.opts.segment_bytes);
        if !small || fs::rename(path, &slot).is_err() {
            return false;
        }
        lock(&self.state).spares.push(slot);
        true
    }

    fn write_checkpoint(&self, body: &[u8]) -> Result<()> {
        let tmp = self.dir.join(CHECKPOINT_TMP);
        let dst = self.dir.join(CHECKPOINT_FILE);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(body).map(|()| f))
            .map_err(|e| WalError::io("write checkpoint", &tmp, &e))
            .and_then(|f| {
                f.sync_all()
                    .map_err(|e| WalError::io("fsync checkpoint", &tmp, &e))
            });
        if let Err(e) = written {
            // A partial file only takes space (the device may be full): leave nothing behind.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dst).map_err(|e| WalError::io("rename checkpoint", &dst, &e))?;
        sync_dir(&self.dir)
    }

    /// Gives back the disk space that the log holds but does not need: deletes the spares, and
    /// cuts every segment file to its records (a recycled segment keeps the old file's stale
    /// frames past them). Returns the bytes freed. The log calls it itself when a write finds
    /// the device full, before it tries that write again; call it when free space runs short.
    /// Nothing stored is touched.
    ///
    /// # Errors
    ///
    /// [`WalError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-reclaim-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// let lsns = wal.append_many(&[b"a", b"b"])?;
    /// wal.ack(&lsns);
    /// wal.checkpoint()?; // the delivered segment is kept as a spare
    /// assert_eq!(wal.reclaim()?, 16 + 2 * 17); // its header and two records
    /// assert_eq!((wal.stats().reclaimed_files, wal.reclaim()?), (1, 0));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reclaim(&self) -> Result<u64> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(WalError::Closed);
        }
        Ok(Self::reclaim_locked(&mut st))
    }

    /// [`Wal::reclaim`], under the state lock (no write or segment change runs meanwhile).
    fn reclaim_locked(st: &mut State) -> u64 {
        let mut freed = 0;
        let mut kept = Vec::new();
        for spare in std::mem::take(&mut st.spares) {
            let len = fs::metadata(&spare).map_or(0, |m| m.len());
            match fs::remove_file(&spare) {
                Ok(()) => {
                    freed += len;
                    st.reclaimed_files += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => kept.push(spare), // still a spare: reused by the next segment
            }
        }
        st.spares = kept;
        for seg in st.segments.values() {
            let Ok(len) = fs::metadata(&seg.path).map(|m| m.len()) else {
                continue;
            };
            let cut = len > seg.bytes
                && OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .and_then(|f| f.set_len(seg.bytes))
                    .is_ok();
            if cut {
                freed += len - seg.bytes;
            }
        }
        st.reclaimed_bytes += freed;
        freed
    }

    /// Every record that recovery found undelivered and that is still undelivered now, as
    /// (lsn, payload) in lsn order, read back from disk.
    ///
    /// # Errors
    ///
    /// [`WalError::Closed`]; [`WalError::Io`] when a segment cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-replay-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// let lsns = wal.append_many(&[b"a", b"b"])?;
    /// wal.ack(&lsns[..1]);
    /// wal.close()?;
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// assert_eq!(wal.replay()?, [(1, b"b".to_vec())]);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        type Files = Vec<(PathBuf, u64, Vec<(usize, usize)>)>;
        let (want, files): (BTreeSet<u64>, Files) = {
            let st = lock(&self.state);
            if st.closed {
                return Err(WalError::Closed);
            }
            let want: BTreeSet<u64> = st.undelivered.range(..self.replay_end).copied().collect();
            let files = st
                .segments
                .iter()
                .filter(|(first, s)| **first < self.replay_end && s.undelivered > 0)
                .map(|(_, s)| (s.path.clone(), s.bytes, s.gaps.clone()))
                .collect();
            (want, files)
        };
        let mut out = Vec::with_capacity(want.len());
        for (path, size, gaps) in files {
            let data = match fs::read(&path) {
                // a recycled segment's stale frames follow its `size` bytes
                Ok(mut data) => {
                    data.truncate(size as usize);
                    data
                }
                // deleted meanwhile: then all its records were delivered
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(WalError::io("read", &path, &e)),
            };
            for (lsn, off, len) in walk_records(&data, &gaps) {
                if want.contains(&lsn) {
                    out.push((lsn, data[off..off + len].to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Counters; see [`WalStats`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-stats-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// wal.append(b"abc")?;
    /// let s = wal.stats();
    /// assert_eq!((s.records, s.undelivered, s.next_lsn), (1, 1, 1));
    /// assert_eq!(s.bytes, 16 + 16 + 3); // segment header, record header, payload
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> WalStats {
        let st = lock(&self.state);
        WalStats {
            bytes: st.total_bytes,
            segments: st.segments.len() as u64,
            records: st.segments.values().map(|s| s.records).sum(),
            undelivered: st.undelivered.len() as u64,
            next_lsn: st.next_lsn,
            appends: st.appends,
            appended_records: st.appended_records,
            fsyncs: st.fsyncs,
            last_fsync_seconds: st.last_fsync.as_secs_f64(),
            skipped_bytes: self.recovery.skipped_bytes,
            skipped_records: self.recovery.skipped_records,
            lost_records: self.recovery.lost_records,
            recovered_records: self.recovery.recovered_records,
            max_bytes: self.opts.max_bytes,
            reclaimed_bytes: st.reclaimed_bytes,
            reclaimed_files: st.reclaimed_files,
        }
    }

    /// Stops new appends, waits until every write is synced (or failed), persists progress,
    /// deletes fully delivered segments, and closes the files. Later calls fail with
    /// [`WalError::Closed`]; closing twice is a no-op.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the final checkpoint fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use wlb::wal::{Wal, WalError, WalOptions};
    ///
    /// # let dir = std::env::temp_dir().join(format!("wlb-doc-close-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let wal = Wal::open(&dir, WalOptions::default())?;
    /// wal.close()?;
    /// wal.close()?; // a no-op
    /// assert_eq!(wal.append(b"late"), Err(WalError::Closed));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) -> Result<()> {
        {
            let mut st = lock(&self.state);
            if st.closed {
                return Ok(());
            }
            st.closed = true;
            while st.settled_seq < st.written_seq {
                if st.syncing {
                    st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
                } else {
                    st = self.lead_sync(st);
                }
            }
        }
        let result = self.checkpoint_inner();
        let mut st = lock(&self.state);
        st.active = None;
        st.dirty.clear();
        result.map(|_| ())
    }
}
