//! loom models of the lock-free reader racing the writer, over the crate's atomics facade
//! (the shipping code, with loom's atomics under `cfg(hugeshare_loom)`).
//!
//! Run with:
//! `RUSTFLAGS="--cfg hugeshare_loom" cargo test -p rte-hash-with-hash --release --test loom`
//! (use a separate `CARGO_TARGET_DIR` to keep the normal build). Without the cfg this file
//! compiles to nothing.
#![cfg(hugeshare_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};

use loom::sync::Arc;
use loom::thread;

use rte_hash_with_hash::{Hash, HashFn, Params};
use shmconfig::LocalZones;

/// The key is its own hash, so the model chooses buckets and signatures exactly.
#[derive(Debug, Clone, Copy)]
struct Identity;
impl HashFn for Identity {
    const NAME: &'static str = "identity";
    fn hash(&self, key: &[u8]) -> u32 {
        let mut b = [0u8; 4];
        b[..key.len().min(4)].copy_from_slice(&key[..key.len().min(4)]);
        u32::from_le_bytes(b)
    }
    fn seed(&self) -> u32 {
        0
    }
}

/// 16 entries = 2 buckets (mask 1). Keys `(2i+1) << 16` have primary bucket 0 and alternate
/// bucket 1; key `2 << 16` has bucket 0 for both.
fn full_bucket_0() -> Hash<u32, (), Identity> {
    let z = LocalZones::new();
    let t = Hash::create(&z, "loom", Params::new(16), Identity).unwrap();
    for i in 0..8u32 {
        let k = (2 * i + 1) << 16;
        t.add_with_hash(&k, k, &()).unwrap();
    }
    t
}

#[test]
fn lookup_racing_a_displacement_never_misses_the_moved_key() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        RUNS_1.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(full_bucket_0());
        let moved = 1u32 << 16; // in lane 0 of bucket 0: the first key the cuckoo search moves
        let before = t.lookup_with_hash(&moved, moved);
        assert!(before.is_some());
        let t2 = t.clone();
        let reader = thread::spawn(move || t2.lookup_with_hash(&moved, moved));
        // The new key's buckets are both bucket 0, which is full: `moved` goes to bucket 1.
        let new = 2u32 << 16;
        t.add_with_hash(&new, new, &()).unwrap();
        assert_eq!(
            reader.join().unwrap(),
            before,
            "the reader missed a key in mid-move"
        );
        assert!(t.debug_change_count() >= 1, "no displacement happened");
        assert_eq!(t.lookup_with_hash(&moved, moved), before);
        assert!(t.lookup_with_hash(&new, new).is_some());
    });
    let runs = RUNS_1.load(Ordering::Relaxed);
    eprintln!("displacement model: {runs} interleavings explored");
    assert!(runs > 20, "loom explored only {runs} interleavings");
}

static RUNS_1: AtomicUsize = AtomicUsize::new(0);

#[test]
fn lookup_racing_a_two_step_displacement_never_misses_the_key_moved_first() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    // The cuckoo search scans several full buckets: more atomic operations than loom's default
    // bound on one execution's length.
    b.max_branches = 20_000;
    b.check(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        // 32 entries = 4 buckets (mask 3). Keys A_i: bucket 0, alternate 1. Keys B_j: bucket 1,
        // alternate 2. Buckets 0 and 1 are full; the new key N can only go in bucket 0, so the
        // cuckoo path is A_0 -> bucket 1, B_0 -> bucket 2: B_0 moves first, then A_0 overwrites
        // B_0's old entry (after a counter bump), then N overwrites A_0's.
        let z = LocalZones::new();
        let t = Hash::<u32, (), Identity>::create(&z, "loom4", Params::new(32), Identity).unwrap();
        for i in 0..8u32 {
            let a = (4 * i + 1) << 16;
            t.add_with_hash(&a, a, &()).unwrap();
            let b = ((4 * i + 3) << 16) | 1;
            t.add_with_hash(&b, b, &()).unwrap();
        }
        let b0 = (3u32 << 16) | 1;
        let before = t.lookup_with_hash(&b0, b0);
        assert!(before.is_some());
        let t = Arc::new(t);
        let t2 = t.clone();
        let reader = thread::spawn(move || t2.lookup_with_hash(&b0, b0));
        let new = 4u32 << 16;
        t.add_with_hash(&new, new, &()).unwrap();
        assert_eq!(
            reader.join().unwrap(),
            before,
            "the reader missed a key in mid-move"
        );
        assert_eq!(
            t.debug_change_count(),
            2,
            "expected a two-step displacement"
        );
    });
    let runs = RUNS.load(Ordering::Relaxed);
    eprintln!("two-step displacement model: {runs} interleavings explored");
    assert!(runs > 20, "loom explored only {runs} interleavings");
}

#[test]
fn lookup_racing_updates_sees_a_stored_value_never_a_torn_one() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let z = LocalZones::new();
        let t: Hash<u32, [u64; 2], Identity> =
            Hash::create(&z, "loom2", Params::new(8), Identity).unwrap();
        let k = 5u32;
        let pos = t.add_with_hash(&k, k, &[1, 1]).unwrap();
        let t = Arc::new(t);
        let t2 = t.clone();
        let reader = thread::spawn(move || t2.lookup_data_with_hash(&k, k));
        // Two updates: the second rewrites the copy the reader may still be reading.
        assert_eq!(t.add_with_hash(&k, k, &[2, 2]), Ok(pos));
        assert_eq!(t.add_with_hash(&k, k, &[3, 3]), Ok(pos));
        let got = reader.join().unwrap();
        assert!(
            [[1, 1], [2, 2], [3, 3]]
                .iter()
                .any(|v| got == Some((pos, *v))),
            "reader saw {got:?}"
        );
    });
}

#[test]
fn lookup_racing_delete_and_slot_reuse_never_matches_a_half_written_key() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let z = LocalZones::new();
        let t: Hash<[u64; 2], (), Identity> =
            Hash::create(&z, "loom3", Params::new(8), Identity).unwrap();
        // `old` is deleted and its slot refilled with `new` (same hash, so the same bucket
        // entry). `ghost` has `new`'s first word and `old`'s second: a reader that compared a
        // half-rewritten slot without checking its state would match it.
        let h = 0x0001_0000u32;
        let (old, new, ghost) = ([1u64, 2], [3u64, 4], [3u64, 2]);
        let p = t.add_with_hash(&old, h, &()).unwrap();
        let t = Arc::new(t);
        let t2 = t.clone();
        let reader = thread::spawn(move || t2.lookup_with_hash(&ghost, h));
        t.delete_with_hash(&old, h).unwrap();
        assert_eq!(
            t.add_with_hash(&new, h, &()),
            Ok(p),
            "the freed slot is reused"
        );
        assert_eq!(reader.join().unwrap(), None, "a key never added was found");
    });
    let runs = RUNS.load(Ordering::Relaxed);
    eprintln!("slot-reuse model: {runs} interleavings explored");
    assert!(runs > 20, "loom explored only {runs} interleavings");
}
