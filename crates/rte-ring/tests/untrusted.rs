//! A peer (another member, or a guest) can write anything into a ring's shared words: the
//! crate docs' "Untrusted peers". Here the words the other side computes from are damaged on
//! purpose, and every way of enqueueing and dequeueing must go on without a panic, moving at
//! most the ring's capacity (a tail behind this side's position: nothing).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use rte_ring::{Behavior, Outcome, Ring, RingFlags};
use shmconfig::LocalZones;

// Offsets in a ring's zone (src/layout.rs): the shared part starts at 128, the producer side
// (256 bytes: head word, cached copy of the other side's tail, revocation count, four in-flight
// words, then the tail and the count of abandoned ranges, 32 bytes in), then the consumer side
// (the same), the statistics (64 bytes) and the table of abandoned producer ranges
// (`start | n << 32`).
const PROD_CACHED_CONS_TAIL: usize = 128 + 8;
const PROD_TAIL: usize = 128 + 32;
const PROD_HOLES: usize = PROD_TAIL + 4;
const CONS_CACHED_PROD_TAIL: usize = 128 + 256 + 8;
const CONS_TAIL: usize = 128 + 256 + 32;
const HOLE_TABLE: usize = 128 + 512 + 64;

/// Slots 16, so capacity 15.
const CAP: u32 = 15;

fn word32(r: &Ring<u64>, off: usize) -> &AtomicU32 {
    let z = r.zone().unwrap();
    assert!(off % 4 == 0 && off + 4 <= z.len());
    // SAFETY: the word is inside the zone and 4-aligned (asserted; the zone is 128-aligned);
    // every user of the ring accesses it atomically only; the zone lives as long as `r`.
    unsafe { AtomicU32::from_ptr(z.as_ptr().add(off).cast::<u32>()) }
}

fn word64(r: &Ring<u64>, off: usize) -> &AtomicU64 {
    let z = r.zone().unwrap();
    assert!(off % 8 == 0 && off + 8 <= z.len());
    // SAFETY: as in `word32`, for an 8-aligned 8-byte word.
    unsafe { AtomicU64::from_ptr(z.as_ptr().add(off).cast::<u64>()) }
}

/// One way of moving elements: its name, the ring's flags, whether the ring may bias its sides,
/// and the call, giving (elements moved, room or entries it reports left).
type Way = (
    &'static str,
    RingFlags,
    bool,
    fn(&Ring<u64>) -> (usize, u32),
);

fn o(x: Outcome) -> (usize, u32) {
    (x.n, x.left)
}

const MT: RingFlags = RingFlags::empty();
const HTS: RingFlags = RingFlags::MP_HTS_ENQ.union(RingFlags::MC_HTS_DEQ);
const RTS: RingFlags = RingFlags::MP_RTS_ENQ.union(RingFlags::MC_RTS_DEQ);

const DEQUEUES: &[Way] = &[
    ("MT burst, biased", MT, true, |r| {
        o(r.dequeue_burst_avail(&mut [0; 64]))
    }),
    ("MT burst", MT, false, |r| {
        o(r.dequeue_burst_avail(&mut [0; 64]))
    }),
    ("MT one, biased", MT, true, |r| {
        (usize::from(r.dequeue().is_some()), 0)
    }),
    ("MT one", MT, false, |r| {
        (usize::from(r.dequeue().is_some()), 0)
    }),
    ("HTS burst", HTS, false, |r| {
        o(r.dequeue_burst_avail(&mut [0; 64]))
    }),
    ("RTS burst", RTS, false, |r| {
        o(r.dequeue_burst_avail(&mut [0; 64]))
    }),
    ("in place, biased", MT, true, |r| {
        (r.dequeue_bulk_in_place(64, |_, _| {}), 0)
    }),
    ("in place", MT, false, |r| {
        (r.dequeue_bulk_in_place(64, |_, _| {}), 0)
    }),
    ("handle burst", MT, false, |r| {
        o(r.single_consumer()
            .unwrap()
            .dequeue_burst_avail(&mut [0; 64]))
    }),
    ("handle one", MT, false, |r| {
        (
            usize::from(r.single_consumer().unwrap().dequeue().is_some()),
            0,
        )
    }),
    ("handle peek", MT, false, |r| {
        let mut h = r.single_consumer().unwrap();
        (h.peek(64, Behavior::Variable).map_or(0, |p| p.len()), 0)
    }),
];

const ENQUEUES: &[Way] = &[
    ("MT burst, biased", MT, true, |r| {
        o(r.enqueue_burst_free(&[7; 64]))
    }),
    ("MT burst", MT, false, |r| o(r.enqueue_burst_free(&[7; 64]))),
    ("HTS burst", HTS, false, |r| {
        o(r.enqueue_burst_free(&[7; 64]))
    }),
    ("RTS burst", RTS, false, |r| {
        o(r.enqueue_burst_free(&[7; 64]))
    }),
    ("in place, biased", MT, true, |r| {
        (r.enqueue_bulk_in_place(64, |_, _| {}), 0)
    }),
    ("in place", MT, false, |r| {
        (r.enqueue_bulk_in_place(64, |_, _| {}), 0)
    }),
    ("handle burst", MT, false, |r| {
        o(r.single_producer().unwrap().enqueue_burst_free(&[7; 64]))
    }),
    ("handle reserve", MT, false, |r| {
        let mut h = r.single_producer().unwrap();
        (h.reserve(64, Behavior::Variable).map_or(0, |s| s.len()), 0)
    }),
];

/// For each way: a fresh ring of 16 slots holding 3 elements (both sides used once by this
/// thread, so biased where the way allows it and the kernel has the membarrier), damaged by
/// `damage`, then the way's call. Returns what went wrong, way by way: a panic, or an outcome
/// `ok` refuses.
fn run(ways: &[Way], damage: impl Fn(&Ring<u64>), ok: impl Fn(usize, u32) -> bool) -> Vec<String> {
    let mut wrong = Vec::new();
    for &(name, flags, bias, call) in ways {
        let z = LocalZones::new();
        let r = Ring::<u64>::create(&z, "peer", 16, flags).unwrap();
        if !bias {
            r.disable_bias();
        }
        assert_eq!(r.enqueue_bulk(&[1, 2, 3, 4]), 4);
        assert_eq!(r.dequeue(), Some(1));
        damage(&r);
        match catch_unwind(AssertUnwindSafe(|| call(&r))) {
            Ok((n, left)) if ok(n, left) => {}
            Ok(got) => wrong.push(format!("{name}: moved/left {got:?}")),
            Err(_) => wrong.push(format!("{name}: panicked")),
        }
    }
    wrong
}

fn at_most_capacity(n: usize, left: u32) -> bool {
    n <= CAP as usize && left <= CAP
}

fn nothing(n: usize, _: u32) -> bool {
    n == 0
}

/// The offsets above name the words the tests damage (the count of abandoned ranges is the word
/// after the producer tail): a test writing into padding would pass without testing anything.
#[test]
fn the_offsets_name_the_tails_and_the_copy() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "offsets", 16, MT).unwrap();
    r.disable_bias();
    assert_eq!(r.enqueue_bulk(&[1; 13]), 13);
    assert_eq!(r.dequeue_bulk(&mut [0; 9]), 9);
    // The producers' copy of the consumer tail is refreshed when it shows too little room; the
    // consumers' copy of the producer tail was taken by the dequeue (13 published, 9 wanted).
    assert_eq!(r.enqueue_bulk(&[1; 7]), 7);
    assert_eq!(word32(&r, PROD_TAIL).load(SeqCst), 20);
    assert_eq!(word32(&r, CONS_TAIL).load(SeqCst), 9);
    assert_eq!(word32(&r, PROD_CACHED_CONS_TAIL).load(SeqCst), 9);
    assert_eq!(word32(&r, CONS_CACHED_PROD_TAIL).load(SeqCst), 13);
}

#[test]
fn a_producer_tail_far_ahead_gives_consumers_at_most_the_capacity() {
    let wrong = run(
        DEQUEUES,
        |r| {
            let c = word32(r, CONS_TAIL).load(SeqCst);
            word32(r, PROD_TAIL).store(c.wrapping_add(0x1000), SeqCst);
        },
        at_most_capacity,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// A consumer handle's position is its side's own tail, never stale, so a producer tail more
/// than the capacity ahead of it can only be damage and counts as nothing (the crate docs,
/// "Untrusted peers"), for each of its calls alike.
#[test]
fn a_producer_tail_far_ahead_gives_a_consumer_handle_nothing() {
    let handles: Vec<Way> = DEQUEUES
        .iter()
        .copied()
        .filter(|w| w.0.starts_with("handle"))
        .collect();
    assert_eq!(handles.len(), 3);
    let wrong = run(
        &handles,
        |r| {
            let c = word32(r, CONS_TAIL).load(SeqCst);
            word32(r, PROD_TAIL).store(c.wrapping_add(0x1000), SeqCst);
        },
        nothing,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The tail and the shared calls' copy of it both behind (with the copy intact, a consumer
/// may still take what the copy shows was published: the copy was a real tail).
#[test]
fn a_producer_tail_behind_the_consumers_gives_them_nothing() {
    let wrong = run(
        DEQUEUES,
        |r| {
            let c = word32(r, CONS_TAIL).load(SeqCst);
            word32(r, PROD_TAIL).store(c.wrapping_sub(0x1000), SeqCst);
            word32(r, CONS_CACHED_PROD_TAIL).store(c.wrapping_sub(0x1000), SeqCst);
        },
        nothing,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_consumer_tail_far_ahead_gives_producers_at_most_the_capacity() {
    let wrong = run(
        ENQUEUES,
        |r| {
            let p = word32(r, PROD_TAIL).load(SeqCst);
            word32(r, CONS_TAIL).store(p.wrapping_add(0x1000), SeqCst);
        },
        at_most_capacity,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_consumer_tail_far_behind_gives_producers_nothing() {
    let wrong = run(
        ENQUEUES,
        |r| {
            let p = word32(r, PROD_TAIL).load(SeqCst);
            word32(r, CONS_TAIL).store(p.wrapping_sub(0x1000), SeqCst);
        },
        nothing,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_damaged_copy_of_the_consumer_tail_gives_producers_at_most_the_capacity() {
    // The shared calls' producers keep their copy in shared memory, beside their head word.
    let wrong = run(
        ENQUEUES,
        |r| {
            let p = word32(r, PROD_TAIL).load(SeqCst);
            word32(r, PROD_CACHED_CONS_TAIL).store(p.wrapping_add(0x1000), SeqCst);
        },
        |n, left| at_most_capacity(n, left) && n <= 12,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_damaged_copy_of_the_producer_tail_gives_consumers_at_most_the_capacity() {
    // The shared calls' consumers keep a copy too, beside their head word; the ways here ask
    // for one element or for more than the capacity, so they take what is published (3).
    let wrong = run(
        DEQUEUES,
        |r| {
            let c = word32(r, CONS_TAIL).load(SeqCst);
            word32(r, CONS_CACHED_PROD_TAIL).store(c.wrapping_add(0x1000), SeqCst);
        },
        |n, left| at_most_capacity(n, left) && n <= 3,
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn damaged_abandoned_ranges_never_make_consumers_take_more_than_is_published() {
    for (what, ranges) in [
        ("a range running past the tail", &[(1u32, 1000u32)][..]),
        ("overlapping ranges", &[(0, 2), (1, 1)][..]),
    ] {
        let wrong = run(
            DEQUEUES,
            |r| {
                let c = word32(r, CONS_TAIL).load(SeqCst);
                for (i, &(rel, n)) in ranges.iter().enumerate() {
                    let start = c.wrapping_add(rel);
                    word64(r, HOLE_TABLE + 8 * i)
                        .store(u64::from(start) | u64::from(n) << 32, SeqCst);
                }
                word32(r, PROD_HOLES).store(ranges.len() as u32, SeqCst);
            },
            |n, left| n <= 3 && left <= 3,
        );
        assert!(wrong.is_empty(), "{what}: {wrong:#?}");
    }
}

/// A copy of the other side's tail that is old by 2^31 positions or more is not damage: it is
/// what a copy becomes when nobody refreshes it while the ring runs (see the next test). Taken
/// at face value, its room wraps round to a large positive number; clamped to the capacity, it
/// let producers write over a full ring's elements and consumers take unpublished slots. The
/// shared calls must go to the tail itself instead. A full ring (15 of 15) for producers, an
/// empty one for consumers.
#[test]
fn a_copy_of_the_other_tail_old_by_half_the_position_space_gives_nothing() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "old copy", 16, MT).unwrap();
    r.disable_bias();
    assert_eq!(r.enqueue_bulk(&[5; 15]), 15);
    let c = word32(&r, CONS_TAIL).load(SeqCst);
    word32(&r, PROD_CACHED_CONS_TAIL).store(c.wrapping_sub(0x8000_0010), SeqCst);
    assert_eq!(r.enqueue_bulk(&[9; 4]), 0, "a full ring took a bulk");
    assert_eq!(r.enqueue_burst(&[9; 4]), 0, "a full ring took a burst");
    let mut out = [0u64; 15];
    assert_eq!(r.dequeue_bulk(&mut out), 15);
    assert_eq!(out, [5; 15], "an element was written over");
    let p = word32(&r, PROD_TAIL).load(SeqCst);
    word32(&r, CONS_CACHED_PROD_TAIL).store(p.wrapping_sub(0x8000_0010), SeqCst);
    assert_eq!(r.dequeue_bulk(&mut [0; 4]), 0, "an empty ring gave a bulk");
    assert_eq!(
        r.dequeue_burst(&mut [0; 4]),
        0,
        "an empty ring gave a burst"
    );
}

/// The copies follow the tails they copy, whatever the calls ask for: here each producer call
/// finds exactly the room it wants (and each consumer call exactly the entries), the regime in
/// which a copy kept only when it showed more than asked was never refreshed, and would have
/// grown old by half the position space after 2^31 positions (about 20 seconds at 100 M
/// elements a second).
#[test]
fn the_copies_follow_the_tails_when_calls_take_exactly_what_there_is() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "follow", 16, MT).unwrap();
    r.disable_bias();
    assert_eq!(r.enqueue_bulk(&[1; 7]), 7);
    for _ in 0..10 {
        assert_eq!(r.enqueue_bulk(&[2; 8]), 8); // room 8 of 15: exactly what it asks
        assert_eq!(r.dequeue_bulk(&mut [0; 8]), 8);
    }
    for _ in 0..3 {
        assert_eq!(r.dequeue_bulk(&mut [0; 7]), 7); // entries 7: exactly what it asks
        assert_eq!(r.enqueue_bulk(&[3; 7]), 7);
    }
    let (pt, ct) = (
        word32(&r, PROD_TAIL).load(SeqCst),
        word32(&r, CONS_TAIL).load(SeqCst),
    );
    let pc = word32(&r, PROD_CACHED_CONS_TAIL).load(SeqCst);
    let cc = word32(&r, CONS_CACHED_PROD_TAIL).load(SeqCst);
    // Each copy is at most one operation (8 positions) behind the tail it copies.
    assert!(
        ct.wrapping_sub(pc) <= 8,
        "producers' copy {pc}, consumer tail {ct}"
    );
    assert!(
        pt.wrapping_sub(cc) <= 8,
        "consumers' copy {cc}, producer tail {pt}"
    );
}
