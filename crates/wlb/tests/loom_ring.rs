//! Loom model checks of the lock-free ring (run with `RUSTFLAGS="--cfg loom"`, see Makefile).
//!
//! Each model is kept small (2-3 threads, a handful of operations) so that loom explores every
//! interleaving in seconds.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use wlb::ring::RingBuffer;

/// Two producers race into a queue of capacity 1 while a consumer drains it: every item is
/// delivered exactly once and a full queue hands the item back intact.
#[test]
fn two_producers_one_consumer_capacity_one() {
    loom::model(|| {
        let q = Arc::new(RingBuffer::new(1).unwrap());
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let q = q.clone();
                thread::spawn(move || match q.push(p) {
                    Ok(()) => None,
                    Err(back) => {
                        assert_eq!(back, p);
                        Some(back)
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        if let Some(v) = q.pop() {
            got.push(v);
        }
        for h in producers {
            if let Some(v) = h.join().unwrap() {
                got.push(v);
            }
        }
        while let Some(v) = q.pop() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1]);
    });
}

/// One producer, two consumers racing on `pop` and `pop_if` across a lap boundary.
#[test]
fn one_producer_two_consumers() {
    loom::model(|| {
        let q = Arc::new(RingBuffer::new(2).unwrap());
        q.push_tagged(10u32, 1).unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|c| {
                let q = q.clone();
                thread::spawn(move || {
                    if c == 0 {
                        q.pop()
                    } else {
                        q.pop_if(|tag| tag < 5).map(|(v, _)| v)
                    }
                })
            })
            .collect();
        let mut pushed = vec![10u32];
        if q.push_tagged(11, 2).is_ok() {
            pushed.push(11);
        }
        let mut got: Vec<u32> = consumers
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        while let Some(v) = q.pop() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, pushed);
        assert!(q.is_empty());
    });
}

/// Values with destructors are moved, never duplicated or leaked, under a concurrent
/// producer and consumer.
#[test]
fn owned_values_move_once() {
    loom::model(|| {
        let item = Arc::new(());
        let q = Arc::new(RingBuffer::new(1).unwrap());
        let producer = {
            let q = q.clone();
            let item = item.clone();
            thread::spawn(move || q.push(item).is_ok())
        };
        let popped = q.pop();
        let pushed = producer.join().unwrap();
        assert!(pushed);
        drop(popped);
        drop(q);
        assert_eq!(Arc::strong_count(&item), 1);
    });
}
