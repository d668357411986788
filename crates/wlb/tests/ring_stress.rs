//! Multi-threaded stress test of the lock-free ring: several producers and consumers move
//! millions of items through a small queue; every item must arrive exactly once.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use wlb::ring::RingBuffer;

fn run(producers: u64, consumers: usize, per_producer: u64, capacity: usize) {
    let q = Arc::new(RingBuffer::new(capacity).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let consumer_handles: Vec<_> = (0..consumers)
        .map(|c| {
            let q = q.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    // Alternate single pops and batched pops so both paths race.
                    let batch = if c % 2 == 0 {
                        q.pop().into_iter().collect()
                    } else {
                        q.pop_many(64, 1 << 20)
                    };
                    if batch.is_empty() {
                        if done.load(Ordering::Acquire) && q.is_empty() {
                            break;
                        }
                        thread::yield_now();
                    }
                    got.extend(batch);
                }
                got
            })
        })
        .collect();
    let producer_handles: Vec<_> = (0..producers)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                let mut full = 0u64;
                for i in 0..per_producer {
                    let mut item = p * per_producer + i;
                    loop {
                        match q.push_tagged(item, 8) {
                            Ok(()) => break,
                            Err(back) => {
                                assert_eq!(
                                    back,
                                    p * per_producer + i,
                                    "push returns the same item"
                                );
                                item = back;
                                full += 1;
                                thread::yield_now();
                            }
                        }
                    }
                }
                full
            })
        })
        .collect();
    for h in producer_handles {
        h.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let total = producers * per_producer;
    let mut seen = vec![false; total as usize];
    let mut count = 0u64;
    for h in consumer_handles {
        for v in h.join().unwrap() {
            assert!(!seen[v as usize], "item {v} delivered twice");
            seen[v as usize] = true;
            count += 1;
        }
    }
    assert_eq!(count, total, "items lost");
    assert!(q.is_empty());
}

#[test]
fn four_producers_four_consumers_two_million_items() {
    run(4, 4, 500_000, 1024);
}

#[test]
fn tiny_queue_under_heavy_contention() {
    run(3, 3, 200_000, 2);
}

/// Per-producer order is preserved for a single consumer (FIFO).
#[test]
fn fifo_per_producer() {
    let q = Arc::new(RingBuffer::new(64).unwrap());
    let n = 300_000u64;
    let handles: Vec<_> = (0..2u64)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                for i in 0..n {
                    let mut item = (p, i);
                    while let Err(back) = q.push(item) {
                        item = back;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; 2];
    let mut received = 0;
    while received < 2 * n {
        if let Some((p, i)) = q.pop() {
            assert_eq!(next[p as usize], i);
            next[p as usize] += 1;
            received += 1;
        } else {
            thread::yield_now();
        }
    }
    for h in handles {
        h.join().unwrap();
    }
}
