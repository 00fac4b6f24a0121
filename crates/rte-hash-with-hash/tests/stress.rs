//! Threads: one writer adds, displaces, updates and deletes while readers check that every key
//! present for the whole run is always found, with a value that was really stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rte_hash_with_hash::{Crc32c, Hash, Params};
use shmconfig::LocalZones;

type Table = Hash<[u8; 16], [u64; 2], Crc32c>;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    k
}

/// The two values a stable key may hold: both words equal, one of two patterns.
fn valid(i: u64, v: [u64; 2]) -> bool {
    v[0] == v[1] && (v[0] == i || v[0] == !i)
}

#[test]
fn readers_never_miss_a_key_present_for_the_whole_run() {
    let run = if cfg!(debug_assertions) {
        Duration::from_millis(1500)
    } else {
        Duration::from_secs(3)
    };
    let entries = 4096u32;
    let stable: u64 = 1500;
    let zones = LocalZones::new();
    let t: Arc<Table> =
        Arc::new(Hash::create(&zones, "stress", Params::new(entries), Crc32c::new(0)).unwrap());
    for i in 0..stable {
        let k = key(i);
        t.add_with_hash(&k, t.hash(&k), &[i, i]).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let (t, stop, lookups) = (t.clone(), stop.clone(), lookups.clone());
        readers.push(std::thread::spawn(move || {
            let keys: Vec<[u8; 16]> = (0..stable).map(key).collect();
            let hashes: Vec<u32> = keys.iter().map(|k| t.hash(k)).collect();
            let mut out = vec![None; 16];
            let mut n = 0u64;
            let mut i = r as usize * 7;
            while !stop.load(Ordering::Relaxed) {
                let j = i % stable as usize;
                let got = t.lookup_data_with_hash(&keys[j], hashes[j]);
                match got {
                    Some((_, v)) => {
                        assert!(valid(j as u64, v), "key {j}: torn or foreign value {v:?}")
                    }
                    None => panic!("reader {r}: stable key {j} missed after {n} lookups"),
                }
                let b = (j / 16) * 16;
                if b + 16 <= stable as usize {
                    let hits =
                        t.lookup_bulk_with_hash(&keys[b..b + 16], &hashes[b..b + 16], &mut out);
                    assert_eq!(hits, 16, "reader {r}: bulk lookup missed a stable key");
                }
                n += 2;
                i += 1;
            }
            lookups.fetch_add(n, Ordering::Relaxed);
        }));
    }
    // The writer: keep the table near full with churning keys (forcing displacements), and flip
    // the stable keys' values.
    let start = Instant::now();
    let mut next = stable;
    let mut live: std::collections::VecDeque<u64> = Default::default();
    let (mut adds, mut dels, mut updates, mut full) = (0u64, 0u64, 0u64, 0u64);
    let mut round = 0u64;
    while start.elapsed() < run {
        for _ in 0..64 {
            let k = key(next);
            match t.add_with_hash(&k, t.hash(&k), &[next, 0]) {
                Ok(_) => {
                    live.push_back(next);
                    adds += 1;
                }
                Err(_) => full += 1,
            }
            next += 1;
            if t.count() > entries * 95 / 100 || live.len() > 2400 {
                for _ in 0..32 {
                    if let Some(d) = live.pop_front() {
                        let k = key(d);
                        assert!(t.delete_with_hash(&k, t.hash(&k)).is_some());
                        dels += 1;
                    }
                }
            }
        }
        let i = round % stable;
        let k = key(i);
        let v = if (round / stable) % 2 == 0 {
            [!i, !i]
        } else {
            [i, i]
        };
        t.add_with_hash(&k, t.hash(&k), &v).unwrap();
        updates += 1;
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let moves = t.debug_change_count();
    eprintln!(
        "stress: {adds} adds, {dels} deletes, {updates} updates, {full} full, {moves} change-counter bumps, {} reader lookups",
        lookups.load(Ordering::Relaxed)
    );
    assert!(
        moves > 100,
        "the writer displaced only {moves} times: the test did not race moves"
    );
    assert!(lookups.load(Ordering::Relaxed) > 1000);
    t.check_consistency().unwrap();
    for i in 0..stable {
        let k = key(i);
        let (_, v) = t.lookup_data_with_hash(&k, t.hash(&k)).unwrap();
        assert!(valid(i, v));
    }
}
