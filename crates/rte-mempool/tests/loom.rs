//! loom model of a dead owner's cache flush racing with the lcore's new owner getting objects
//! (from the adopted cache or by a refill from the ring), over the cache code that ships (the
//! crate's `sync` module switches to loom's atomics; the ring is rte-ring's model ring).
//!
//! `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg hugeshare_loom" cargo test -p rte-mempool --release --test loom`
#![cfg(hugeshare_loom)]

use std::sync::Arc;

use loom::thread;
use rte_mempool::model::ModelCache;
use rte_ring::{Ring, RingFlags};
use shmconfig::{Liveness, MemberId, MemberState};

/// Member 1 is dead; everyone else is alive.
#[derive(Debug)]
struct OneDead;

impl Liveness for OneDead {
    fn member_state(&self, m: MemberId) -> MemberState {
        if m.0 == 1 {
            MemberState::Dead
        } else {
            MemberState::Alive
        }
    }
}

fn alive(m: u16) -> bool {
    m != 1
}

fn drain(r: &Ring<u32>) -> Vec<u32> {
    let mut all = vec![];
    while let Some(v) = r.dequeue() {
        all.push(v);
    }
    all
}

fn check_all_once(mut seen: Vec<u32>, total: u32) {
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every object once, none twice"
    );
}

/// The dead member 1 left objects 1 and 2 in lcore 0's cache; 3 and 4 are in the ring. Member
/// 0 (the cleaner) flushes the cache while member 2, the lcore's new owner, claims it and gets
/// `n` objects.
fn flush_races_get(n: usize) {
    loom::model(move || {
        let live: Arc<dyn Liveness> = Arc::new(OneDead);
        let ring = Ring::<u32>::model(8, RingFlags::empty(), MemberId(0), live.clone());
        assert_eq!(ring.enqueue_bulk(&[3, 4]), 2);
        let cache = Arc::new(ModelCache::new(1, &[1, 2]));
        let (r2, c2) = (ring.clone(), cache.clone());
        let cleaner = thread::spawn(move || c2.recover(&r2, 0, alive));
        cache.claim(2, alive);
        let got = cache.get(&ring, 1, n).expect("4 objects exist, n ≤ 3");
        assert_eq!(got.len(), n);
        let flushed = cleaner.join().unwrap();
        // the new owner keeps the cache; the cleaner either flushed it first or found it taken
        assert_eq!(cache.owner(), Some(2));
        if let Some(m) = flushed {
            assert_eq!(m, 2, "a flush moves the whole dead cache");
        }
        let mut seen = got;
        seen.extend(cache.contents());
        seen.extend(drain(&ring));
        check_all_once(seen, 4);
    });
}

#[test]
fn flush_races_get_one() {
    flush_races_get(1);
}

#[test]
fn flush_races_get_three() {
    flush_races_get(3);
}

/// The new owner puts objects back (with a flush to the ring past the threshold) while the
/// cleaner flushes the dead owner's cache.
#[test]
fn flush_races_put_with_flush() {
    loom::model(|| {
        let live: Arc<dyn Liveness> = Arc::new(OneDead);
        let ring = Ring::<u32>::model(8, RingFlags::empty(), MemberId(0), live.clone());
        let cache = Arc::new(ModelCache::new(1, &[1, 2]));
        let (r2, c2) = (ring.clone(), cache.clone());
        let cleaner = thread::spawn(move || c2.recover(&r2, 0, alive));
        cache.claim(2, alive);
        // threshold 2: a put of 2 onto a cache of 2 flushes it first
        assert_eq!(cache.put(&ring, 2, &[3, 4]), 0);
        cleaner.join().unwrap();
        let mut seen = cache.contents();
        seen.extend(drain(&ring));
        check_all_once(seen, 4);
    });
}
