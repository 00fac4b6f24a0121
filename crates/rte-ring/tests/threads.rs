//! Threaded stress tests over heap memory (`LocalZones`); counts shrink under Miri.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use rte_ring::{Behavior, Ring, RingFlags, SyncMode};
use shmconfig::{LocalZones, MemberId, MemberState};

const PER_PRODUCER: u64 = if cfg!(miri) { 60 } else { 200_000 };

fn elem(p: u64, seq: u64) -> u64 {
    p << 40 | seq
}

/// `producers` × `PER_PRODUCER` elements through `consumers` consumers; checks every element
/// arrives exactly once and each producer's elements arrive in order at each consumer.
fn exactly_once(flags: RingFlags, ps: SyncMode, cs: SyncMode, producers: u64, consumers: usize) {
    let zones = LocalZones::new();
    let ring = Ring::<u64>::create(&zones, "stress", 64, flags).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = vec![];
    for c in 0..consumers {
        let r = ring.clone();
        let done = done.clone();
        handles.push(thread::spawn(move || {
            let mut got = vec![];
            let mut last = vec![None::<u64>; producers as usize];
            let mut buf = [0u64; 8];
            let mut single = (cs == SyncMode::St).then(|| r.single_consumer().unwrap());
            loop {
                let how = if c % 2 == 0 {
                    Behavior::Variable
                } else {
                    Behavior::Fixed
                };
                let want = 1 + got.len() % buf.len();
                let n = match (single.as_mut(), how) {
                    (Some(h), Behavior::Fixed) => h.dequeue_bulk(&mut buf[..want]),
                    (Some(h), Behavior::Variable) => h.dequeue_burst(&mut buf[..want]),
                    (None, _) => r.dequeue_with(&mut buf[..want], how, cs).n,
                };
                if n == 0 {
                    if done.load(Ordering::Acquire) && r.is_empty() {
                        return got;
                    }
                    thread::yield_now();
                    continue;
                }
                for &v in &buf[..n] {
                    let (p, s) = ((v >> 40) as usize, v & ((1 << 40) - 1));
                    assert!(
                        last[p].is_none_or(|l| l < s),
                        "producer {p}: {s} after {:?}",
                        last[p]
                    );
                    last[p] = Some(s);
                    got.push(v);
                }
            }
        }));
    }
    let prods: Vec<_> = (0..producers)
        .map(|p| {
            let r = ring.clone();
            thread::spawn(move || {
                let mut single = (ps == SyncMode::St).then(|| r.single_producer().unwrap());
                let mut seq = 0;
                while seq < PER_PRODUCER {
                    let k = (1 + seq % 7).min(PER_PRODUCER - seq);
                    let items: Vec<u64> = (seq..seq + k).map(|s| elem(p, s)).collect();
                    let how = if p % 2 == 0 {
                        Behavior::Fixed
                    } else {
                        Behavior::Variable
                    };
                    let n = match (single.as_mut(), how) {
                        (Some(h), Behavior::Fixed) => h.enqueue_bulk(&items),
                        (Some(h), Behavior::Variable) => h.enqueue_burst(&items),
                        (None, _) => r.enqueue_with(&items, how, ps).n,
                    } as u64;
                    if n == 0 {
                        thread::yield_now();
                    }
                    seq += n;
                }
            })
        })
        .collect();
    for h in prods {
        h.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let mut all = HashSet::new();
    for h in handles {
        for v in h.join().unwrap() {
            assert!(all.insert(v), "{v:#x} delivered twice");
        }
    }
    assert_eq!(all.len() as u64, producers * PER_PRODUCER, "elements lost");
    assert!(ring.is_empty());
    assert_eq!(ring.abandoned(), (0, 0));
}

/// Producers that take the producer side with a [`rte_ring::SingleProducer`], enqueue a few
/// bulks and give it back, racing with shared multi-producer calls and other claimers; every
/// element still arrives exactly once and in order per producer.
#[test]
fn single_producer_handles_taken_and_given_back_under_contention() {
    let per: u64 = if cfg!(miri) { 40 } else { 50_000 };
    let zones = LocalZones::new();
    let ring = Ring::<u64>::create(&zones, "handover", 64, RingFlags::SP_ENQ).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let r = ring.clone();
        let done = done.clone();
        thread::spawn(move || {
            let mut last = [None::<u64>; 3];
            let mut got = 0u64;
            let mut buf = [0u64; 16];
            loop {
                let n = r.dequeue_burst(&mut buf);
                if n == 0 {
                    if done.load(Ordering::Acquire) && r.is_empty() {
                        return got;
                    }
                    thread::yield_now();
                    continue;
                }
                for &v in &buf[..n] {
                    let (p, s) = ((v >> 40) as usize, v & ((1 << 40) - 1));
                    assert!(
                        last[p].is_none_or(|l| l + 1 == s),
                        "producer {p}: {s} after {:?}",
                        last[p]
                    );
                    last[p] = Some(s);
                    got += 1;
                }
            }
        })
    };
    let prods: Vec<_> = (0..3u64)
        .map(|p| {
            let r = ring.clone();
            thread::spawn(move || {
                let mut seq = 0;
                let mut holds = 0u64;
                while seq < per {
                    if p == 0 {
                        // the shared (multi-producer) calls, which wait while a handle holds
                        let k = (1 + seq % 5).min(per - seq);
                        let items: Vec<u64> = (seq..seq + k).map(|s| elem(p, s)).collect();
                        seq += r.enqueue_bulk(&items) as u64;
                        continue;
                    }
                    let Ok(mut h) = r.single_producer() else {
                        thread::yield_now();
                        continue;
                    };
                    holds += 1;
                    for _ in 0..4 {
                        let k = (1 + seq % 7).min(per - seq);
                        let items: Vec<u64> = (seq..seq + k).map(|s| elem(p, s)).collect();
                        seq += h.enqueue_bulk(&items) as u64;
                        if seq == per {
                            break;
                        }
                    }
                }
                holds
            })
        })
        .collect();
    let holds: Vec<u64> = prods.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    assert_eq!(
        consumer.join().unwrap(),
        3 * per,
        "elements lost or repeated"
    );
    assert!(
        holds[1] > 0 && holds[2] > 0,
        "both claimers held the side: {holds:?}"
    );
    assert_eq!(ring.abandoned(), (0, 0));
    assert_eq!(ring.info().producer_holder, None);
}

#[test]
fn spsc() {
    exactly_once(
        RingFlags::SP_ENQ | RingFlags::SC_DEQ,
        SyncMode::St,
        SyncMode::St,
        1,
        1,
    );
}

#[test]
fn mpmc() {
    exactly_once(RingFlags::empty(), SyncMode::Mt, SyncMode::Mt, 3, 2);
}

#[test]
fn hts() {
    exactly_once(
        RingFlags::MP_HTS_ENQ | RingFlags::MC_HTS_DEQ,
        SyncMode::Hts,
        SyncMode::Hts,
        2,
        2,
    );
}

#[test]
fn rts() {
    exactly_once(
        RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ,
        SyncMode::Rts,
        SyncMode::Rts,
        2,
        2,
    );
}

#[test]
fn mixed_modes_mt_and_hts() {
    exactly_once(RingFlags::empty(), SyncMode::Hts, SyncMode::Mt, 2, 2);
}

/// A producer member "dies" with a reservation in flight while others keep producing: the
/// consumer gets every element of the live producers and the dead one's published elements,
/// exactly once, and the abandoned count is what the dead one reserved.
#[test]
fn a_producer_dies_while_others_run() {
    let rounds = if cfg!(miri) { 2 } else { 20 };
    for round in 0..rounds {
        let zones = LocalZones::new();
        let ring = Ring::<u64>::create(&zones, "dies", 32, RingFlags::empty()).unwrap();
        let dead_zones = zones.as_member(MemberId(9));
        let victim = Ring::<u64>::lookup(&dead_zones, "dies").unwrap();
        let live: Vec<_> = (0..2u64)
            .map(|p| {
                let r = ring.clone();
                thread::spawn(move || {
                    let mut seq = 0;
                    while seq < PER_PRODUCER / 40 {
                        seq += r.enqueue_burst(&[elem(p, seq)]) as u64;
                    }
                })
            })
            .collect();
        let killer = {
            let zones = zones.clone();
            thread::spawn(move || {
                let mut sent = 0u64;
                for s in 0..(round % 5) {
                    while victim.enqueue(elem(2, s)).is_err() {
                        thread::yield_now();
                    }
                    sent += 1;
                }
                let mut lost = 0;
                while lost == 0 {
                    lost = victim.test_reserve_and_vanish(false, 3);
                }
                zones.set_member_state(MemberId(9), MemberState::Dead);
                (sent, lost as u64)
            })
        };
        let mut got = HashSet::new();
        let total_live = 2 * (PER_PRODUCER / 40);
        let mut buf = [0u64; 16];
        let mut live_seen = 0;
        while live_seen < total_live || !killer.is_finished() {
            let n = ring.dequeue_burst(&mut buf);
            for &v in &buf[..n] {
                assert!(got.insert(v), "duplicate");
                if v >> 40 != 2 {
                    live_seen += 1;
                }
            }
            if n == 0 {
                thread::yield_now();
            }
        }
        for h in live {
            h.join().unwrap();
        }
        let (sent, lost) = killer.join().unwrap();
        // whatever is left (and whatever waits on the dead reservation) comes out now
        ring.recover();
        loop {
            let n = ring.dequeue_burst(&mut buf);
            if n == 0 {
                break;
            }
            for &v in &buf[..n] {
                assert!(got.insert(v), "duplicate");
            }
        }
        assert_eq!(got.len() as u64, total_live + sent, "round {round}");
        for s in 0..sent {
            assert!(got.contains(&elem(2, s)));
        }
        assert_eq!(ring.abandoned(), (lost, 0));
        assert!(ring.is_empty());
    }
}
