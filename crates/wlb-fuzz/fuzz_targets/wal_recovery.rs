//! WAL recovery over damaged segment files. The input chooses a history (batches of
//! records appended, some acknowledged and checkpointed, restarts, so that segments roll over
//! and delivered ones are recycled as spares) and then the damage done to the files after a
//! crash (bit flips, overwrites, zeroed, inserted, deleted and copied ranges, truncation,
//! a damaged checkpoint). Recovery then runs on the damaged directory. Checked:
//! * nothing panics, and opening never fails (the files are on a tmpfs that does not fail);
//! * replay gives each lsn at most once, in ascending order, and only records that were
//!   written, with the payload written (never a stale frame of a recycled file, never junk);
//! * while the checkpoint is intact, no delivered record comes back;
//! * the lost lsns are written ones, disjoint from the replayed ones, and every undelivered
//!   record that is not in the newest segment (whose damaged tail may be a torn write) is
//!   either replayed or reported lost;
//! * after recovery, new appends take fresh lsns, and a clean reopen gives the old replay plus
//!   the new records: recovery is stable and never yields a record twice across restarts.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use wlb::wal::{Wal, WalOptions, CHECKPOINT_FILE};

/// A scratch directory for this process, on a tmpfs when there is one (fsync is free there).
fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("wlb-fuzz-wal-{}", std::process::id()))
}

fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        max_bytes: 1 << 20,
        commit_delay: Duration::ZERO,
    }
}

/// What the history wrote: lsn -> payload, and the lsns a checkpoint made delivered.
#[derive(Default)]
struct Written {
    records: BTreeMap<u64, Vec<u8>>,
    delivered: BTreeSet<u64>,
}

/// Up to `len` bytes of the input (fewer when it runs out, so the checks still run).
fn take<'a>(u: &mut Unstructured<'a>, len: usize) -> Result<&'a [u8]> {
    u.bytes(len.min(u.len()))
}

fn history(u: &mut Unstructured, dir: &Path, seg: u64) -> Result<Written> {
    let mut w = Written::default();
    let mut wal = Wal::open(dir, opts(seg)).expect("open a fresh log");
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    for _ in 0..u.int_in_range(1..=6)? {
        let n = u.int_in_range(0..=5)?;
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let len = u.int_in_range(0..=48)?;
            batch.push(take(u, len)?.to_vec());
        }
        let lsns = wal.append_many(&batch).expect("append");
        for (lsn, p) in lsns.iter().zip(batch) {
            assert!(w.records.insert(*lsn, p).is_none(), "lsn {lsn} given twice");
        }
        let pending: Vec<u64> = w
            .records
            .keys()
            .copied()
            .filter(|l| !acked.contains(l))
            .collect();
        let mut ack = Vec::new();
        for lsn in pending {
            if u.ratio(1, 2)? {
                ack.push(lsn);
            }
        }
        wal.ack(&ack);
        acked.extend(ack);
        match u.int_in_range(0..=3)? {
            0 => {
                wal.checkpoint().expect("checkpoint");
                w.delivered.clone_from(&acked);
            }
            1 => {
                // a clean restart: close persists progress, recovery finds nothing wrong
                wal.close().expect("close");
                w.delivered.clone_from(&acked);
                wal = Wal::open(dir, opts(seg)).expect("reopen");
                assert!(
                    wal.recovery().notes.is_empty(),
                    "{:?}",
                    wal.recovery().notes
                );
                acked.clone_from(&w.delivered);
            }
            _ => {}
        }
    }
    drop(wal); // a crash: what was acked since the last checkpoint is not delivered
    Ok(w)
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let p = e.expect("entry").path();
            let stem = p.file_name()?.to_str()?.strip_suffix(".wal")?.to_owned();
            Some((stem.parse().ok()?, p))
        })
        .collect();
    v.sort();
    v
}

/// Applies fuzz-chosen damage to the segment files (and maybe the checkpoint); true when the
/// checkpoint was touched.
fn damage(u: &mut Unstructured, dir: &Path, segs: &[(u64, PathBuf)]) -> Result<bool> {
    let mut files: Vec<Vec<u8>> = segs
        .iter()
        .map(|(_, p)| fs::read(p).expect("read"))
        .collect();
    let mut ckpt_damaged = false;
    for _ in 0..u.int_in_range(0..=6)? {
        if u.ratio(1, 16)? {
            let path = dir.join(CHECKPOINT_FILE);
            if let Ok(mut c) = fs::read(&path) {
                if !c.is_empty() {
                    let i = u.choose_index(c.len())?;
                    c[i] ^= u.int_in_range(1..=255)?;
                    fs::write(&path, c).expect("write checkpoint");
                    ckpt_damaged = true;
                }
            }
            continue;
        }
        if files.is_empty() {
            break;
        }
        let which = u.choose_index(files.len())?;
        let src = files[u.choose_index(files.len())?].clone();
        let f = &mut files[which];
        let at = u.int_in_range(0..=f.len())?;
        let len = u.int_in_range(0..=f.len() - at)?;
        match u.int_in_range(0..=6)? {
            0 if at < f.len() => f[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => f[at..at + len].fill(0),
            2 => f.truncate(at),
            3 => {
                let n = u.int_in_range(0..=40)?;
                let junk = take(u, n)?.to_vec();
                f.splice(at..at, junk);
            }
            4 => {
                f.drain(at..at + len);
            }
            5 => {
                // a stretch of this or another segment (a whole frame, maybe) lands elsewhere
                let from = u.int_in_range(0..=src.len())?;
                let n = u.int_in_range(0..=src.len() - from)?.min(len);
                f[at..at + n].copy_from_slice(&src[from..from + n]);
            }
            _ => {
                let junk = take(u, len)?;
                f[at..at + junk.len()].copy_from_slice(junk);
            }
        }
    }
    for ((_, p), data) in segs.iter().zip(files) {
        fs::write(p, data).expect("write segment");
    }
    Ok(ckpt_damaged)
}

fn run(u: &mut Unstructured, dir: &Path) -> Result<()> {
    let seg = u.int_in_range(40..=400)?;
    let w = history(u, dir, seg)?;
    let segs = segment_files(dir);
    let newest = segs.last().map_or(0, |s| s.0);
    let ckpt_damaged = damage(u, dir, &segs)?;

    if std::env::var_os("WLB_FUZZ_VERBOSE").is_some() {
        eprintln!("segment_bytes {seg}, checkpoint damaged: {ckpt_damaged}");
        eprintln!("written {:?}\ndelivered {:?}", w.records, w.delivered);
        for (first, p) in &segs {
            eprintln!("segment {first}: {:?}", fs::read(p).expect("read"));
        }
    }
    let wal = Wal::open(dir, opts(seg)).expect("recovery never fails on readable files");
    if std::env::var_os("WLB_FUZZ_VERBOSE").is_some() {
        eprintln!("recovery {:?}", wal.recovery());
    }
    let replay = wal.replay().expect("replay");
    let mut seen = BTreeSet::new();
    let mut prev = None;
    for (lsn, payload) in &replay {
        assert!(
            prev < Some(*lsn),
            "replay not ascending or repeated at lsn {lsn}"
        );
        prev = Some(*lsn);
        seen.insert(*lsn);
        assert_eq!(
            w.records.get(lsn),
            Some(payload),
            "lsn {lsn} never written so"
        );
        assert!(
            ckpt_damaged || !w.delivered.contains(lsn),
            "delivered lsn {lsn} replayed"
        );
    }
    let rec = wal.recovery();
    let mut lost = BTreeSet::new();
    for loss in &rec.losses {
        for lsn in &loss.lsns {
            assert!(w.records.contains_key(lsn), "lost lsn {lsn} never written");
            assert!(!seen.contains(lsn), "lsn {lsn} both replayed and lost");
            assert!(lost.insert(*lsn), "lsn {lsn} lost twice");
        }
    }
    assert_eq!(rec.lost_records, lost.len() as u64);
    assert_eq!(rec.recovered_records, replay.len() as u64);
    if !ckpt_damaged {
        for lsn in w.records.keys() {
            if *lsn < newest && !w.delivered.contains(lsn) {
                assert!(
                    seen.contains(lsn) || lost.contains(lsn),
                    "undelivered lsn {lsn} neither replayed nor reported lost: {:?}",
                    rec.notes
                );
            }
        }
    }

    // New records take fresh lsns; a clean reopen gives the old replay plus them.
    let fresh: Vec<Vec<u8>> = (0..u.int_in_range(0..=3)?).map(|i| vec![b'n', i]).collect();
    let lsns = wal.append_many(&fresh).expect("append after recovery");
    for lsn in &lsns {
        assert!(
            !seen.contains(lsn) && !lost.contains(lsn),
            "lsn {lsn} reused"
        );
    }
    wal.close().expect("close");
    let again = Wal::open(dir, opts(seg)).expect("reopen");
    let mut want = replay;
    want.extend(lsns.into_iter().zip(fresh));
    assert_eq!(
        again.replay().expect("replay"),
        want,
        "a clean reopen changed the replay"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = fs::remove_dir_all(&dir);
    let mut u = Unstructured::new(data);
    let _ = run(&mut u, &dir);
    let _ = fs::remove_dir_all(&dir);
});
