//! The write-ahead log: round trip, progress, rollover and deletion, torn and corrupt tails,
//! the byte bound, and group commit under concurrent appenders.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wlb::rng::SplitMix64;
use wlb::wal::{segment_name, Wal, WalError, WalOptions, CHECKPOINT_FILE, SEGMENT_HEADER_LEN};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "wlb-wal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts(segment_bytes: u64, max_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        max_bytes,
        commit_delay: Duration::ZERO,
    }
}

fn payloads(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(i % 7)).into_bytes())
        .collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "wal")
        })
        .collect();
    v.sort();
    v
}

/// Simulates kill -9: no close, no checkpoint.
fn crash(wal: Wal) {
    std::mem::forget(wal);
}

#[test]
fn append_replay_round_trip() {
    let d = TempDir::new("rt");
    let data = payloads(50, "a");
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let mut lsns = wal.append_many(&data[..20]).unwrap();
    lsns.extend(wal.append_many(&data[20..]).unwrap());
    assert_eq!(lsns, (0..50).collect::<Vec<u64>>());
    assert_eq!(
        wal.replay().unwrap(),
        vec![],
        "replay covers what recovery found, nothing new"
    );
    let s = wal.stats();
    assert_eq!(
        (
            s.records,
            s.undelivered,
            s.appends,
            s.appended_records,
            s.next_lsn
        ),
        (50, 50, 2, 50, 50)
    );
    crash(wal);

    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let got = wal.replay().unwrap();
    assert_eq!(got.len(), 50);
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, i as u64);
        assert_eq!(p, &data[i]);
    }
    assert_eq!(wal.recovery().recovered_records, 50);
    assert_eq!(
        (wal.recovery().skipped_bytes, wal.recovery().skipped_records),
        (0, 0)
    );
    // New appends continue the lsn sequence in a new segment.
    assert_eq!(wal.append(b"next").unwrap(), 50);
    assert_eq!(wal.stats().segments, 2);
    assert_eq!(wal.append_many::<&[u8]>(&[]).unwrap(), Vec::<u64>::new());
}

#[test]
fn one_append_of_more_frames_than_one_writev_takes() {
    // 1,500 records, empty ones among them, are 2,500+ buffers: more than IOV_MAX (1,024), so
    // the gathered write takes several writev calls. Every byte must land, in order.
    let d = TempDir::new("iov");
    let data: Vec<Vec<u8>> = (0..1500)
        .map(|i| {
            if i % 3 == 0 {
                Vec::new()
            } else {
                format!("r{i}-{}", "y".repeat(i % 300)).into_bytes()
            }
        })
        .collect();
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(
        wal.append_many(&data).unwrap(),
        (0..1500).collect::<Vec<u64>>()
    );
    crash(wal);
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let got = wal.replay().unwrap();
    assert_eq!(got.len(), 1500);
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!((*lsn, p), (i as u64, &data[i]));
    }
    assert_eq!(wal.recovery().skipped_bytes, 0);
}

#[test]
fn progress_survives_reopen_and_is_never_ahead() {
    let d = TempDir::new("progress");
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let data = payloads(10, "p");
    wal.append_many(&data).unwrap();
    assert_eq!(wal.ack(&[1, 3, 5, 5, 99]), 3);
    wal.checkpoint().unwrap();
    assert_eq!(wal.ack(&[7]), 1); // not persisted before the crash: redelivered
    crash(wal);

    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let lsns: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![0, 2, 4, 6, 7, 8, 9]);
    wal.ack(&[0, 2]);
    wal.close().unwrap(); // close persists progress
    assert!(matches!(wal.append(b"late"), Err(WalError::Closed)));
    drop(wal);

    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let lsns: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![4, 6, 7, 8, 9]);
    assert_eq!(wal.stats().undelivered, 5);
}

#[test]
fn rollover_and_deletion_of_delivered_segments() {
    let d = TempDir::new("roll");
    // 16 + 16*(16+100) ~ 1.9 KB per segment: 4 records of 100 bytes per segment.
    let wal = Wal::open(&d.0, opts(16 + 4 * 116, 1 << 20)).unwrap();
    let rec = vec![7u8; 100];
    let mut lsns = Vec::new();
    for _ in 0..10 {
        lsns.push(wal.append(&rec).unwrap());
    }
    assert_eq!(wal.stats().segments, 3);
    assert_eq!(
        segment_files(&d.0),
        vec![segment_name(0), segment_name(4), segment_name(8)]
    );
    assert_eq!(wal.stats().bytes, 3 * SEGMENT_HEADER_LEN + 10 * 116);

    // The middle segment fully delivered, the first one not.
    wal.ack(&[4, 5, 6, 7, 0]);
    assert_eq!(wal.checkpoint().unwrap(), 1);
    assert_eq!(segment_files(&d.0), vec![segment_name(0), segment_name(8)]);
    wal.ack(&[1, 2, 3]);
    assert_eq!(wal.checkpoint().unwrap(), 1);
    assert_eq!(segment_files(&d.0), vec![segment_name(8)]);
    // The active segment too, once all of it is delivered; lsns go on.
    wal.ack(&[8, 9]);
    assert_eq!(wal.checkpoint().unwrap(), 1);
    assert_eq!(segment_files(&d.0), Vec::<String>::new());
    let s = wal.stats();
    assert_eq!(
        (s.bytes, s.segments, s.records, s.undelivered),
        (0, 0, 0, 0)
    );
    assert_eq!(wal.append(b"z").unwrap(), 10);
    wal.ack(&[10]);
    wal.close().unwrap();
    drop(wal);

    // The lsn sequence survives the deletion of every segment.
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(segment_files(&d.0), Vec::<String>::new());
    assert_eq!(wal.replay().unwrap(), vec![]);
    assert_eq!(wal.append(b"after").unwrap(), 11);
}

#[test]
fn full_log_refuses_and_recovers_after_delivery() {
    let d = TempDir::new("full");
    let wal = Wal::open(&d.0, opts(1 << 20, 16 + 3 * 116)).unwrap();
    let rec = vec![1u8; 100];
    let lsns = wal.append_many(&[&rec[..], &rec[..], &rec[..]]).unwrap();
    let err = wal.append(&rec).unwrap_err();
    assert!(matches!(err, WalError::Full { .. }), "{err:?}");
    assert!(err.to_string().contains("full"));
    // Nothing accepted was dropped.
    assert_eq!(wal.stats().undelivered, 3);
    wal.ack(&lsns);
    wal.checkpoint().unwrap();
    assert_eq!(wal.append(&rec).unwrap(), 3);
    // A single batch over the bound can never fit.
    assert!(matches!(
        wal.append(&vec![0u8; 1000]),
        Err(WalError::Full { .. })
    ));
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let d = TempDir::new("torn");
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let data = payloads(5, "t");
    wal.append_many(&data).unwrap();
    crash(wal);
    let seg = d.0.join(segment_name(0));
    let len = fs::metadata(&seg).unwrap().len();
    let last = 16 + data[4].len() as u64;
    // Cut the last record in its middle.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let r = wal.recovery().clone();
    assert_eq!(
        (r.skipped_bytes, r.skipped_records, r.recovered_records),
        (last - 3, 1, 4)
    );
    assert_eq!(
        r.notes,
        vec![format!(
            "{}: torn record at offset {}: skipped {} bytes, 1 records",
            segment_name(0),
            len - last,
            last - 3
        )]
    );
    let got = wal.replay().unwrap();
    assert_eq!(
        got.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        data[..4].to_vec()
    );
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        len - last,
        "the torn tail is cut off"
    );
    // New records never reuse a torn record's place, and reopening reports nothing more.
    assert_eq!(wal.append(b"new").unwrap(), 4);
    crash(wal);
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(wal.recovery().skipped_bytes, 0);
    assert_eq!(wal.replay().unwrap().len(), 5);
}

#[test]
fn a_bad_crc_loses_only_that_record() {
    let d = TempDir::new("crc");
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let data: Vec<Vec<u8>> = (0..6).map(|i| vec![b'a' + i as u8; 20]).collect();
    wal.append_many(&data).unwrap();
    crash(wal);
    let seg = d.0.join(segment_name(0));
    let mut bytes = fs::read(&seg).unwrap();
    let rec3 = 16 + 3 * 36;
    bytes[rec3 + 16 + 5] ^= 0x40; // a payload byte of record 3
    fs::write(&seg, &bytes).unwrap();

    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let r = wal.recovery();
    assert_eq!(
        (
            r.skipped_bytes,
            r.skipped_records,
            r.recovered_records,
            r.lost_records
        ),
        (36, 1, 5, 1)
    );
    assert_eq!(
        r.notes,
        vec![format!(
            "{}: bad crc at offset {rec3}: skipped 36 bytes, 1 records",
            segment_name(0)
        )]
    );
    assert_eq!(r.losses.len(), 1);
    let loss = &r.losses[0];
    assert_eq!(
        (
            loss.segment.as_str(),
            loss.offset,
            loss.length,
            loss.lsn_start,
            loss.lsn_end
        ),
        (segment_name(0).as_str(), rec3 as u64, 36, 3, 4)
    );
    assert_eq!(
        (loss.lsns.clone(), loss.data.clone()),
        (vec![3], bytes[rec3..rec3 + 36].to_vec())
    );
    let lsns: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![0, 1, 2, 4, 5]);
    assert_eq!(wal.stats().lost_records, 1);
    // The loss is reported once: the next open finds the lsn marked done in the progress file.
    crash(wal);
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert!(wal.recovery().losses.is_empty());
    assert_eq!(wal.replay().unwrap().len(), 5);
}

#[test]
fn corruption_in_an_older_segment_keeps_the_rest() {
    let d = TempDir::new("older");
    let wal = Wal::open(&d.0, opts(16 + 2 * 26, 1 << 20)).unwrap();
    for i in 0..6u8 {
        wal.append(&[i; 10]).unwrap();
    }
    crash(wal);
    assert_eq!(segment_files(&d.0).len(), 3);
    let seg = d.0.join(segment_name(2));
    let mut bytes = fs::read(&seg).unwrap();
    bytes[16 + 4] ^= 1; // the crc of lsn 2
    fs::write(&seg, &bytes).unwrap();
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(wal.recovery().skipped_records, 1);
    let lsns: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![0, 1, 3, 4, 5]);
    // The last record of a segment followed by another one: lost, not a torn tail.
    let seg4 = d.0.join(segment_name(4));
    let mut bytes = fs::read(&seg4).unwrap();
    let final_byte = bytes.len() - 1;
    bytes[final_byte] ^= 1;
    fs::write(&seg4, &bytes).unwrap();
    crash(wal);
    let wal = Wal::open(&d.0, opts(16 + 2 * 26, 1 << 20)).unwrap();
    let lost: Vec<u64> = wal
        .recovery()
        .losses
        .iter()
        .flat_map(|l| l.lsns.clone())
        .collect();
    assert_eq!(lost, vec![5]);
    let lsns: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(lsns, vec![0, 1, 3, 4]);
}

#[test]
fn bad_checkpoint_means_redelivery_not_loss() {
    let d = TempDir::new("ckpt");
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    wal.append_many(&payloads(4, "c")).unwrap();
    wal.ack(&[0, 1]);
    wal.checkpoint().unwrap();
    crash(wal);
    let ck = d.0.join(CHECKPOINT_FILE);
    let mut bytes = fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&ck, &bytes).unwrap();
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(
        wal.recovery().notes,
        vec![format!("{CHECKPOINT_FILE}: bad checkpoint, ignored")]
    );
    assert_eq!(wal.replay().unwrap().len(), 4);
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let d = TempDir::new("group");
    let o = WalOptions {
        commit_delay: Duration::from_millis(2),
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(&d.0, o).unwrap());
    let threads = 8;
    let per = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per {
                    let p = format!("t{t}-{i}").into_bytes();
                    let lsns = wal.append_many(&[p.clone(), p]).unwrap();
                    mine.extend(lsns);
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..(threads * per * 2) as u64).collect::<Vec<_>>());
    let s = wal.stats();
    assert_eq!(s.appends, (threads * per) as u64);
    assert!(
        s.fsyncs >= 1 && s.fsyncs < s.appends,
        "fsyncs {} appends {}",
        s.fsyncs,
        s.appends
    );
    let wal = Arc::try_unwrap(wal).ok().unwrap();
    crash(wal);
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    let got = wal.replay().unwrap();
    assert_eq!(got.len(), threads * per * 2);
    // Both records of one call are adjacent and equal.
    for pair in got.chunks(2) {
        assert_eq!(pair[0].0 + 1, pair[1].0);
        assert_eq!(pair[0].1, pair[1].1);
    }
}

#[test]
fn foreign_files_are_left_alone_and_bad_options_refused() {
    let d = TempDir::new("foreign");
    fs::create_dir_all(&d.0).unwrap();
    fs::write(d.0.join("notes.txt"), b"hello").unwrap();
    fs::write(d.0.join("12.wal"), b"not a segment name").unwrap();
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(wal.stats().segments, 0);
    assert!(d.0.join("notes.txt").exists() && d.0.join("12.wal").exists());
    assert!(matches!(
        Wal::open(&d.0, opts(0, 10)),
        Err(WalError::InvalidOptions)
    ));
}

#[test]
fn io_error_on_open_is_reported_with_the_path() {
    let d = TempDir::new("ioerr");
    fs::create_dir_all(d.0.parent().unwrap()).unwrap();
    fs::write(&d.0, b"a file, not a directory").unwrap();
    let err = Wal::open(&d.0, WalOptions::default()).err().unwrap();
    assert!(matches!(err, WalError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&d.0.display().to_string()));
    fs::remove_file(&d.0).unwrap();
}

#[test]
fn appends_acks_checkpoints_and_rollovers_race_without_loss() {
    let d = TempDir::new("race");
    let wal = Arc::new(Wal::open(&d.0, opts(2048, 1 << 30)).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let appenders: Vec<_> = (0..4)
        .map(|t| {
            let wal = Arc::clone(&wal);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..150u32 {
                    let p = format!("t{t}-{i}-{}", "y".repeat((i % 50) as usize)).into_bytes();
                    for lsn in wal.append_many(&[p.clone(), p]).unwrap() {
                        tx.send(lsn).unwrap();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let acker = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for (n, lsn) in rx.into_iter().enumerate() {
                if lsn % 3 != 0 {
                    assert_eq!(wal.ack(&[lsn]), 1);
                    acked.push(lsn);
                }
                if n % 25 == 0 {
                    wal.checkpoint().unwrap();
                }
            }
            acked
        })
    };
    for a in appenders {
        a.join().unwrap();
    }
    let delivered = acker.join().unwrap();
    wal.checkpoint().unwrap();
    let total = 4 * 150 * 2;
    assert_eq!(wal.stats().undelivered, (total - delivered.len()) as u64);
    let wal = Arc::try_unwrap(wal).ok().unwrap();
    crash(wal);
    let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
    assert_eq!(wal.recovery().skipped_bytes, 0);
    let got: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
    let want: Vec<u64> = (0..total as u64).filter(|l| l % 3 == 0).collect();
    assert_eq!(got, want);
}

/// A log of `rounds` batches over small segments, some of them delivered and checkpointed
/// (so that spares are recycled and stale frames follow live records); closed or crashed.
/// Returns every payload written, by lsn, and the lsns delivered (persisted or not).
fn random_log(dir: &Path, rng: &mut SplitMix64) -> (Vec<Vec<u8>>, Vec<u64>) {
    let wal = Wal::open(dir, opts(400, 1 << 20)).unwrap();
    let mut written = Vec::new();
    let mut acked = Vec::new();
    for round in 0..12 {
        let n = 1 + (rng.next_u64() % 4) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = (rng.next_u64() % 60) as usize;
                let mut p = format!("r{round}-{i}-").into_bytes();
                p.extend((0..len).map(|_| rng.next_u64() as u8));
                p
            })
            .collect();
        let lsns = wal.append_many(&batch).unwrap();
        assert_eq!(lsns[0] as usize, written.len());
        written.extend(batch);
        if rng.next_u64().is_multiple_of(3) {
            let done: Vec<u64> = lsns
                .iter()
                .copied()
                .filter(|_| !rng.next_u64().is_multiple_of(4))
                .collect();
            wal.ack(&done);
            acked.extend(done);
            wal.checkpoint().unwrap();
        }
    }
    if rng.next_u64().is_multiple_of(2) {
        wal.close().unwrap();
    } else {
        crash(wal);
    }
    (written, acked)
}

/// Random damage to the segment files: flipped bytes, zeroed or random runs, a cut.
fn damage(dir: &Path, rng: &mut SplitMix64) {
    let files = segment_files(dir);
    if files.is_empty() {
        return;
    }
    for _ in 0..=(rng.next_u64() % 4) {
        let path = dir.join(&files[(rng.next_u64() % files.len() as u64) as usize]);
        let mut raw = fs::read(&path).unwrap();
        if raw.is_empty() {
            continue;
        }
        let at = (rng.next_u64() % raw.len() as u64) as usize;
        let run = 1 + (rng.next_u64() % 40) as usize;
        let end = (at + run).min(raw.len());
        match rng.next_u64() % 4 {
            0 => raw[at] ^= 1 + (rng.next_u64() % 255) as u8,
            1 => raw[at..end].fill(0),
            2 => raw[at..end]
                .iter_mut()
                .for_each(|b| *b = rng.next_u64() as u8),
            _ => raw.truncate(at),
        }
        fs::write(&path, &raw).unwrap();
    }
}

/// A stable-Rust fuzz loop over the reader (cargo fuzz needs nightly): random logs, random
/// damage, and recovery never fails, never gives a record twice, never invents one, and what
/// it reports lost was neither given back nor delivered.
#[test]
fn recovery_of_randomly_damaged_segments_never_invents_or_repeats() {
    for seed in 0..150u64 {
        let d = TempDir::new("fuzz");
        let mut rng = SplitMix64::new(0x5EED_0000 + seed);
        let (written, acked) = random_log(&d.0, &mut rng);
        damage(&d.0, &mut rng);
        let wal =
            Wal::open(&d.0, opts(400, 1 << 20)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let got = wal.replay().unwrap();
        for pair in got.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "seed {seed}: lsns not strictly increasing"
            );
        }
        for (lsn, payload) in &got {
            assert_eq!(
                written.get(*lsn as usize),
                Some(payload),
                "seed {seed}: lsn {lsn} invented"
            );
        }
        let r = wal.recovery().clone();
        let lost: Vec<u64> = r.losses.iter().flat_map(|l| l.lsns.clone()).collect();
        assert_eq!(lost.len() as u64, r.lost_records, "seed {seed}");
        for lsn in &lost {
            assert!(
                (*lsn as usize) < written.len(),
                "seed {seed}: lost lsn {lsn} never written"
            );
            assert!(
                !got.iter().any(|g| g.0 == *lsn),
                "seed {seed}: lsn {lsn} both lost and recovered"
            );
        }
        for lsn in &acked {
            assert!(
                !lost.contains(lsn),
                "seed {seed}: delivered lsn {lsn} reported lost"
            );
            assert!(
                !got.iter().any(|g| g.0 == *lsn),
                "seed {seed}: delivered lsn {lsn} given back"
            );
        }
        // A second open gives back the same and reports no loss again.
        crash(wal);
        let wal = Wal::open(&d.0, opts(400, 1 << 20)).unwrap();
        assert_eq!(
            wal.replay().unwrap(),
            got,
            "seed {seed}: a second open differs"
        );
        assert!(
            wal.recovery().losses.is_empty(),
            "seed {seed}: a loss reported twice"
        );
    }
}

/// Scattered single-byte damage loses exactly the records it hit, no more.
#[test]
fn scattered_flips_lose_exactly_the_records_they_hit() {
    for (seed, flips) in [(1u64, 1usize), (2, 10), (3, 100)] {
        let d = TempDir::new("flips");
        let mut rng = SplitMix64::new(seed);
        let wal = Wal::open(&d.0, opts(4096, 1 << 30)).unwrap();
        let data: Vec<Vec<u8>> = (0..600)
            .map(|i| format!("record-{i}-{}", "z".repeat((i * 7) % 90)).into_bytes())
            .collect();
        for chunk in data.chunks(5) {
            wal.append_many(chunk).unwrap();
        }
        wal.close().unwrap();
        // Where each record lies: (file, frame start, frame end, lsn).
        let mut frames = Vec::new();
        for name in segment_files(&d.0) {
            let raw = fs::read(d.0.join(&name)).unwrap();
            let mut pos = 16usize;
            while pos < raw.len() {
                let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
                let lsn = u64::from_le_bytes(raw[pos + 8..pos + 16].try_into().unwrap());
                frames.push((name.clone(), pos, pos + 16 + len, lsn));
                pos += 16 + len;
            }
        }
        let mut hit = std::collections::BTreeSet::new();
        let mut flipped = std::collections::BTreeSet::new();
        while flipped.len() < flips {
            let (name, start, end, lsn) =
                frames[(rng.next_u64() % frames.len() as u64) as usize].clone();
            let at = start + (rng.next_u64() % (end - start) as u64) as usize;
            if !flipped.insert((name.clone(), at)) {
                continue; // a second flip of the same byte could undo the first
            }
            let path = d.0.join(&name);
            let mut raw = fs::read(&path).unwrap();
            raw[at] ^= 1 << (rng.next_u64() % 8);
            fs::write(&path, &raw).unwrap();
            hit.insert(lsn);
        }
        let wal = Wal::open(&d.0, WalOptions::default()).unwrap();
        let got: Vec<u64> = wal.replay().unwrap().into_iter().map(|r| r.0).collect();
        let want: Vec<u64> = (0..600).filter(|l| !hit.contains(l)).collect();
        assert_eq!(got, want, "{flips} flips");
        let mut lost: Vec<u64> = wal
            .recovery()
            .losses
            .iter()
            .flat_map(|l| l.lsns.clone())
            .collect();
        lost.sort_unstable();
        assert_eq!(
            lost,
            hit.iter().copied().collect::<Vec<_>>(),
            "{flips} flips"
        );
    }
}

#[test]
fn reclaim_gives_back_spares_and_stale_frames_only() {
    let d = TempDir::new("reclaim");
    let seg = 1000 + 2 * SEGMENT_HEADER_LEN;
    let wal = Wal::open(&d.0, opts(seg, 1 << 20)).unwrap();
    for _ in 0..3 {
        wal.append(&[b's'; 1000]).unwrap();
    }
    wal.ack(&[0, 1, 2]);
    assert_eq!(wal.checkpoint().unwrap(), 3); // two kept as spares
    assert_eq!(wal.append(b"small").unwrap(), 3); // over a spare: its stale frames follow
    let path = d.0.join(segment_name(3));
    assert_eq!(fs::metadata(&path).unwrap().len(), seg);
    let used = 2 * SEGMENT_HEADER_LEN + 5;
    assert_eq!(wal.reclaim().unwrap(), seg + (seg - used));
    assert_eq!(fs::metadata(&path).unwrap().len(), used);
    let st = wal.stats();
    assert_eq!(
        (st.reclaimed_files, st.reclaimed_bytes),
        (1, 2 * seg - used)
    );
    assert_eq!(wal.reclaim().unwrap(), 0);
    assert_eq!(wal.append(b"more").unwrap(), 4);
    wal.close().unwrap();
    assert_eq!(wal.reclaim(), Err(WalError::Closed));
    let wal = Wal::open(&d.0, opts(seg, 1 << 20)).unwrap();
    assert!(wal.recovery().notes.is_empty());
    assert_eq!(
        wal.replay().unwrap(),
        [(3, b"small".to_vec()), (4, b"more".to_vec())]
    );
}
