//! DPDK's `test_ring.c` behaviours (dpdk-facts §7.1), for every mode and several element sizes,
//! plus header checks and the dead-member rules, over heap memory (`LocalZones`).

use rte_ring::{
    Behavior, Ring, RingElement, RingError, RingFlags, SingleConsumer, SingleProducer, SyncMode,
    RING_COUNT_MAX,
};
use shmconfig::{LocalZones, MemberId, MemberState, Zones};

/// An element whose bytes are derived from `i` (so a copy that mixes elements shows).
fn mk<T: RingElement>(i: u32) -> T {
    let mut v = T::new_zeroed();
    for (k, b) in v.as_mut_bytes().iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761).rotate_left(k as u32 % 32) >> (k % 4 * 8)) as u8
            ^ k as u8;
    }
    v
}

/// What a member killed while holding `v` leaves behind: `v` is never dropped (kept in a
/// static, so that Miri does not count it as leaked).
fn vanish<T: Send + 'static>(v: T) {
    static GONE: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>> =
        std::sync::Mutex::new(Vec::new());
    GONE.lock().unwrap().push(Box::new(v));
}

fn same<T: RingElement>(a: &T, b: &T) -> bool {
    a.as_bytes() == b.as_bytes()
}

/// The modes test_ring.c runs: (label, flags, per-call sync for the explicit calls). `St` means
/// through the single-member handles, which hold the sides.
const MODES: &[(&str, RingFlags, SyncMode, SyncMode)] = &[
    ("default", RingFlags::empty(), SyncMode::Mt, SyncMode::Mt),
    (
        "sp/sc",
        RingFlags::SP_ENQ.union(RingFlags::SC_DEQ),
        SyncMode::St,
        SyncMode::St,
    ),
    (
        "rts",
        RingFlags::MP_RTS_ENQ.union(RingFlags::MC_RTS_DEQ),
        SyncMode::Rts,
        SyncMode::Rts,
    ),
    (
        "hts",
        RingFlags::MP_HTS_ENQ.union(RingFlags::MC_HTS_DEQ),
        SyncMode::Hts,
        SyncMode::Hts,
    ),
];

struct Ctx<T: RingElement> {
    r: Ring<T>,
    tx: Option<SingleProducer<T>>,
    rx: Option<SingleConsumer<T>>,
    ps: SyncMode,
    cs: SyncMode,
    next_in: u32,
    next_out: u32,
}

impl<T: RingElement> Ctx<T> {
    fn enq(&mut self, n: usize, how: Behavior) -> usize {
        let items: Vec<T> = (0..n as u32).map(|k| mk(self.next_in + k)).collect();
        let got = match (&mut self.tx, how) {
            (Some(p), Behavior::Fixed) => p.enqueue_bulk(&items),
            (Some(p), Behavior::Variable) => p.enqueue_burst(&items),
            (None, _) => self.r.enqueue_with(&items, how, self.ps).n,
        };
        self.next_in += got as u32;
        got
    }
    fn deq(&mut self, n: usize, how: Behavior) -> usize {
        let mut out = vec![T::new_zeroed(); n];
        let got = match (&mut self.rx, how) {
            (Some(c), Behavior::Fixed) => c.dequeue_bulk(&mut out),
            (Some(c), Behavior::Variable) => c.dequeue_burst(&mut out),
            (None, _) => self.r.dequeue_with(&mut out, how, self.cs).n,
        };
        for v in &out[..got] {
            assert!(
                same(v, &mk::<T>(self.next_out)),
                "element {} out of order or damaged",
                self.next_out
            );
            self.next_out += 1;
        }
        got
    }
}

fn run_all<T: RingElement>() {
    for &(label, flags, ps, cs) in MODES {
        let zones = LocalZones::new();
        let r = Ring::<T>::create(&zones, "test_ring_basic_ex", 4096, flags).unwrap();
        let found = Ring::<T>::lookup(&zones, "test_ring_basic_ex").unwrap();
        assert_eq!(
            found.zone().unwrap().as_ptr(),
            r.zone().unwrap().as_ptr(),
            "{label}: lookup finds the same ring"
        );
        assert!(r.is_empty() && r.count() == 0, "{label}: starts empty");
        assert_eq!(r.capacity(), 4095);
        assert!(matches!(
            Ring::<T>::create(&zones, "test_ring_basic_ex", 4096, flags),
            Err(RingError::Exists(_))
        ));
        let tx = (ps == SyncMode::St).then(|| r.single_producer().unwrap());
        let rx = (cs == SyncMode::St).then(|| r.single_consumer().unwrap());
        let mut c = Ctx {
            r,
            tx,
            rx,
            ps,
            cs,
            next_in: 0,
            next_out: 0,
        };

        for how in [Behavior::Fixed, Behavior::Variable] {
            // random shift, then fill and drain
            let shift = 1 + (c.next_in * 7 + 13) as usize % 97;
            assert_eq!(c.enq(shift, how), shift);
            assert_eq!(c.deq(shift, how), shift);
            assert_eq!(c.enq(4095, how), 4095, "{label}: fill");
            assert_eq!(c.r.free_count(), 0);
            assert_eq!(c.r.count(), 4095);
            assert!(c.r.is_full() && !c.r.is_empty());
            assert_eq!(c.enq(1, how), 0, "{label}: full refuses");
            assert_eq!(c.deq(4095, how), 4095, "{label}: drain in FIFO order");
            assert!(c.r.is_empty() && !c.r.is_full() && c.r.free_count() == 4095);

            // sequences of 1, 2 and 32
            for n in [1, 2, 32] {
                assert_eq!(c.enq(n, how), n);
                assert_eq!(c.deq(n, how), n);
            }
            // wrap-around
            for _ in 0..4096 / 32 {
                assert_eq!(c.enq(32, how), 32);
                assert_eq!(c.deq(32, how), 32);
            }
            // near full: 127*32 + 2 in, then 29 fit
            for _ in 0..127 {
                assert_eq!(c.enq(32, how), 32);
            }
            assert_eq!(c.enq(2, how), 2);
            match how {
                Behavior::Fixed => {
                    assert_eq!(c.enq(32, how), 0, "{label}: bulk of 32 does not fit");
                    assert_eq!(c.enq(29, how), 29, "{label}: bulk of 29 fits");
                }
                Behavior::Variable => {
                    assert_eq!(c.enq(32, how), 29, "{label}: burst of 32 adds 29");
                }
            }
            assert!(c.r.is_full());
            assert_eq!(c.enq(32, how), 0, "{label}: full ring takes nothing");
            for _ in 0..127 {
                assert_eq!(c.deq(32, how), 32);
            }
            assert_eq!(c.deq(2, how), 2);
            match how {
                Behavior::Fixed => {
                    assert_eq!(c.deq(32, how), 0);
                    assert_eq!(c.deq(29, how), 29);
                }
                Behavior::Variable => assert_eq!(c.deq(32, how), 29),
            }
            assert!(c.r.is_empty());
            assert_eq!(c.deq(32, how), 0, "{label}: empty ring gives nothing");
        }

        if ps == SyncMode::St {
            // the handles' single-object calls, then give the sides back to the shared calls
            let (tx, rx) = (c.tx.as_mut().unwrap(), c.rx.as_mut().unwrap());
            assert!(tx.enqueue(mk(c.next_in)).is_ok());
            assert!(same(&rx.dequeue().unwrap(), &mk::<T>(c.next_in)));
            assert!(rx.dequeue().is_none());
            c.next_in += 1;
            c.next_out += 1;
            c.tx = None;
            c.rx = None;
        }
        // single-object API
        for i in 0..4095 {
            assert!(c.r.enqueue(mk(c.next_in + i)).is_ok());
        }
        let extra: T = mk(99);
        assert!(
            same(&c.r.enqueue(extra).unwrap_err(), &extra),
            "{label}: full gives the value back"
        );
        assert!(c.r.is_full());
        for i in 0..4095 {
            assert!(same(&c.r.dequeue().unwrap(), &mk::<T>(c.next_in + i)));
        }
        assert!(c.r.dequeue().is_none());
        c.next_in += 4095;
        c.next_out += 4095;

        // the mode-agnostic calls agree with the per-call overrides
        let v: Vec<T> = (0..8).map(mk).collect();
        assert_eq!(c.r.enqueue_bulk_free(&v).left, 4095 - 8);
        let mut out = vec![T::new_zeroed(); 8];
        let o = c.r.dequeue_burst_avail(&mut out);
        assert_eq!((o.n, o.left), (8, 0));
        assert!(out.iter().zip(&v).all(|(a, b)| same(a, b)));
    }
}

#[test]
fn behaviours_u32() {
    run_all::<u32>();
}
#[test]
fn behaviours_u64_pointer_sized() {
    run_all::<u64>();
}
#[test]
fn behaviours_16_bytes() {
    run_all::<[u32; 4]>();
}
#[test]
fn behaviours_20_bytes() {
    run_all::<[u32; 5]>();
}

/// Every bulk length from 1 to 70, started at every slot offset so that runs wrap at every
/// point, through the shared calls and through the single-member handles: the element copies
/// take 16-byte moves, and in the handles 32-byte moves (where the CPU has AVX2) from 128 bytes
/// on, with an overlapping last step for lengths that are not a multiple of 64 bytes. Each
/// element must come back whole and in order.
fn every_length_and_offset<T: RingElement>() {
    let zones = LocalZones::new();
    let r = Ring::<T>::create(&zones, "copy lengths", 128, RingFlags::empty()).unwrap();
    let mut next = 0u32;
    let mut out = [T::new_zeroed(); 70];
    for held in [false, true] {
        let mut handles =
            held.then(|| (r.single_producer().unwrap(), r.single_consumer().unwrap()));
        for n in 1..=70usize {
            for _offset in 0..128 / n.min(16) + 1 {
                let items: Vec<T> = (0..n as u32).map(|i| mk(next + i)).collect();
                let got = match &mut handles {
                    Some((p, c)) => {
                        assert_eq!(p.enqueue_bulk(&items), n);
                        c.dequeue_bulk(&mut out[..n])
                    }
                    None => {
                        assert_eq!(r.enqueue_bulk(&items), n);
                        r.dequeue_bulk(&mut out[..n])
                    }
                };
                assert_eq!(got, n, "held {held}, n {n}");
                for (i, (a, b)) in items.iter().zip(&out[..n]).enumerate() {
                    assert!(same(a, b), "held {held}, n {n}: element {i} differs");
                }
                // Leave one element behind and take it back, to move the start offset by one.
                let one = mk::<T>(next + n as u32);
                let back = match &mut handles {
                    Some((p, c)) => {
                        assert!(p.enqueue(one).is_ok());
                        c.dequeue().unwrap()
                    }
                    None => {
                        assert!(r.enqueue(one).is_ok());
                        r.dequeue().unwrap()
                    }
                };
                assert!(same(&back, &one));
                next = next.wrapping_add(n as u32 + 1);
            }
        }
    }
}

#[test]
fn every_length_and_offset_is_copied_whole() {
    every_length_and_offset::<u32>();
    every_length_and_offset::<u64>();
    every_length_and_offset::<[u32; 3]>();
    every_length_and_offset::<[u64; 4]>();
    every_length_and_offset::<[u8; 40]>();
}

#[test]
fn explicit_sp_mp_sc_mc_calls() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "calls", 64, RingFlags::empty()).unwrap();
    {
        let mut tx = r.single_producer().unwrap();
        assert_eq!(tx.enqueue_bulk(&[1, 2]), 2);
        assert_eq!(tx.enqueue_burst_free(&[3]).left, 60);
    }
    assert_eq!(r.mp_enqueue_bulk(&[4, 5]), 2);
    assert_eq!(r.mp_enqueue_burst(&[6]), 1);
    let mut o = [0u64; 2];
    {
        let mut rx = r.single_consumer().unwrap();
        assert_eq!(rx.dequeue_bulk(&mut o), 2);
        assert_eq!(o, [1, 2]);
        assert_eq!(rx.dequeue_burst_avail(&mut o[..1]).left, 3);
    }
    assert_eq!(r.mc_dequeue_bulk(&mut o), 2);
    assert_eq!(o, [4, 5]);
    assert_eq!(r.mc_dequeue_burst(&mut o), 1);
    assert_eq!(o[0], 6);
    assert_eq!(r.mc_dequeue_burst(&mut o), 0);
}

#[test]
fn single_member_handles_hold_their_side() {
    let z0 = LocalZones::new();
    let z1 = z0.as_member(MemberId(1));
    let r0 = Ring::<u64>::create(&z0, "held", 64, RingFlags::SP_ENQ | RingFlags::SC_DEQ).unwrap();
    let r1 = Ring::<u64>::lookup(&z1, "held").unwrap();
    let mut tx = r1.single_producer().unwrap();
    // a second holder is refused, naming the holder, in this member and in another
    match r0.single_producer() {
        Err(
            e @ RingError::Held {
                holder,
                mine: false,
                ..
            },
        ) => {
            assert_eq!(holder, MemberId(1));
            assert!(e.to_string().contains("producer side is held by"), "{e}");
        }
        other => panic!("expected Held, got {other:?}"),
    }
    assert!(matches!(
        r1.single_producer(),
        Err(RingError::Held { mine: true, .. })
    ));
    assert_eq!(r0.info().producer_holder, Some(MemberId(1)));
    assert!(r0.info().to_string().contains("producer side held by"));
    // the consumer side is independent
    let mut rx = r0.single_consumer().unwrap();
    assert_eq!(tx.enqueue_bulk(&[1, 2, 3]), 3);
    assert_eq!(r0.count(), 3);
    assert_eq!(rx.dequeue(), Some(1));
    // a larger-than-MAX_OP limit does not apply to the handles: a bulk over capacity fails,
    // a burst takes what fits
    assert_eq!(tx.enqueue_bulk(&[0; 100]), 0);
    assert_eq!(tx.enqueue_burst(&[7; 100]), 61);
    assert!(r0.is_full());
    drop(rx);
    // the shared dequeue works again once the consumer handle is gone
    let mut out = [0u64; 2];
    assert_eq!(r0.dequeue_bulk(&mut out), 2);
    assert_eq!(out, [2, 3]);
    drop(tx);
    assert_eq!(r0.info().producer_holder, None);
    assert_eq!(r0.mp_enqueue_burst(&[9]), 1);
}

#[test]
fn shared_calls_wait_for_a_holder_then_go_on() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "wait", 64, RingFlags::SP_ENQ).unwrap();
    let tx = r.single_producer().unwrap();
    let r2 = r.clone();
    let t = std::thread::spawn(move || r2.enqueue_bulk(&[42]));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !t.is_finished(),
        "the shared enqueue waits while the side is held"
    );
    assert!(r.is_empty());
    drop(tx);
    assert_eq!(t.join().unwrap(), 1);
    assert_eq!(r.dequeue(), Some(42));
}

#[test]
fn dead_holders_are_released_and_lose_nothing() {
    let z0 = LocalZones::new();
    let z1 = z0.as_member(MemberId(1));
    let r0 = Ring::<u64>::create(
        &z0,
        "dead holder",
        64,
        RingFlags::SP_ENQ | RingFlags::SC_DEQ,
    )
    .unwrap();
    let r1 = Ring::<u64>::lookup(&z1, "dead holder").unwrap();
    let mut tx = r1.single_producer().unwrap();
    let mut rx = r1.single_consumer().unwrap();
    assert_eq!(tx.enqueue_bulk(&[1, 2, 3, 4]), 4);
    assert_eq!(rx.dequeue(), Some(1));
    // member 1 dies holding both sides (its handles are never dropped)
    vanish(tx);
    vanish(rx);
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let rep = r0.recover();
    assert_eq!(rep.producer_released, Some(MemberId(1)));
    assert_eq!(rep.consumer_released, Some(MemberId(1)));
    assert_eq!((rep.producer_abandoned, rep.consumer_abandoned), (0, 0));
    // what was published is all there, in order; nothing is abandoned
    let mut rx = r0.single_consumer().unwrap();
    let mut tx = r0.single_producer().unwrap();
    assert_eq!(tx.enqueue_bulk(&[5]), 1);
    let mut out = [0u64; 4];
    assert_eq!(rx.dequeue_bulk(&mut out), 4);
    assert_eq!(out, [2, 3, 4, 5]);
    assert_eq!(r0.abandoned(), (0, 0));
    drop((tx, rx));
    // a claim also releases a dead holder by itself (no recover call)
    let r1 = Ring::<u64>::lookup(&z0.as_member(MemberId(2)), "dead holder").unwrap();
    vanish(r1.single_producer().unwrap());
    z0.set_member_state(MemberId(2), MemberState::Dead);
    assert!(r0.single_producer().is_ok());
}

#[test]
fn the_group_cleanup_hook_releases_dead_holders() {
    let z0 = LocalZones::new();
    let z1 = z0.as_member(MemberId(1));
    let r0 = Ring::<u32>::create(&z0, "hooked", 64, RingFlags::SC_DEQ).unwrap();
    let r1 = Ring::<u32>::lookup(&z1, "hooked").unwrap();
    vanish(r1.single_consumer().unwrap());
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let report = shmconfig::hooks::run_all(&z0, MemberId(1));
    assert!(
        report
            .iter()
            .any(|l| l.contains("ring hooked: released the consumer side held by")),
        "{report:?}"
    );
    assert_eq!(r0.info().consumer_holder, None);
}

/// A dead member's reservation behind a live member's cannot be abandoned yet: the hook says
/// the clean-up is unfinished (so the group keeps the dead member's slot out of use) until the
/// live member's reservation is gone, then abandons it and says nothing more.
#[test]
fn the_hook_reports_a_dead_reservation_behind_a_live_one_as_unfinished() {
    let z0 = LocalZones::new();
    let r0 = Ring::<u32>::create(&z0, "behind", 64, RingFlags::empty()).unwrap();
    let r2 = Ring::<u32>::lookup(&z0.as_member(MemberId(2)), "behind").unwrap();
    let r1 = Ring::<u32>::lookup(&z0.as_member(MemberId(1)), "behind").unwrap();
    assert_eq!(r0.enqueue_bulk(&[1, 2]), 2);
    assert_eq!(r2.test_reserve_and_vanish(false, 3), 3); // alive, in flight at the tail
    assert_eq!(r1.test_reserve_and_vanish(false, 4), 4); // dies behind it
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let run = shmconfig::hooks::run_all_checked(&z0, MemberId(1));
    assert_eq!(run.unfinished.len(), 1, "{run:?}");
    assert!(
        run.unfinished[0].contains("ring behind: member 1's producer reservation at 5"),
        "{run:?}"
    );
    assert_eq!(r0.abandoned(), (0, 0));
    // The live member dies too: now both go, and the clean-up of member 1 is complete.
    z0.set_member_state(MemberId(2), MemberState::Dead);
    let run = shmconfig::hooks::run_all_checked(&z0, MemberId(1));
    assert!(run.unfinished.is_empty(), "{run:?}");
    assert_eq!(r0.abandoned(), (7, 0));
    let mut out = [0u32; 9];
    assert_eq!(
        r0.dequeue_burst(&mut out),
        2,
        "only the published two arrive"
    );
    assert_eq!(out[..2], [1, 2]);
}

#[test]
fn bad_sizes_flags_and_elements() {
    let z = LocalZones::new();
    assert!(matches!(
        Ring::<[u8; 23]>::create(&z, "odd", 64, RingFlags::empty()),
        Err(RingError::BadElement { size: 23, .. })
    ));
    for count in [4097, RING_COUNT_MAX + 1, 0, 1, 3] {
        assert!(
            matches!(
                Ring::<u64>::create(&z, "sz", count, RingFlags::empty()),
                Err(RingError::BadCount { .. })
            ),
            "count {count}"
        );
    }
    assert!(matches!(
        Ring::<u64>::create(&z, "f", 64, RingFlags::SP_ENQ | RingFlags::MP_HTS_ENQ),
        Err(RingError::BadFlags { .. })
    ));
    assert!(matches!(
        Ring::<u64>::create(&z, "f", 64, RingFlags::MC_RTS_DEQ | RingFlags::SC_DEQ),
        Err(RingError::BadFlags { .. })
    ));
    assert!(matches!(
        Ring::<u64>::create(&z, "f", 64, RingFlags::from_bits_retain(0x80)),
        Err(RingError::BadFlags { .. })
    ));
    assert!(matches!(
        Ring::<u64>::create(&z, &"n".repeat(61), 64, RingFlags::empty()),
        Err(RingError::BadName { .. })
    ));
    assert!(matches!(
        Ring::<u64>::create(&z, "", 64, RingFlags::empty()),
        Err(RingError::BadName { .. })
    ));
    // nothing was left behind by the refusals
    assert!(z.list().is_empty());
}

#[test]
fn lookup_checks() {
    let z = LocalZones::new();
    assert_eq!(
        Ring::<u64>::lookup(&z, "ring_not_found").unwrap_err(),
        RingError::NotFound("ring_not_found".into())
    );
    Ring::<u64>::create(&z, "typed", 64, RingFlags::empty()).unwrap();
    // same size, other type: refused, naming both
    let e = Ring::<i64>::lookup(&z, "typed").unwrap_err();
    assert!(
        matches!(
            e,
            RingError::WrongElement {
                found_size: 8,
                want_size: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("type id"));
    let e = Ring::<u32>::lookup(&z, "typed").unwrap_err();
    assert!(matches!(
        e,
        RingError::WrongElement {
            found_size: 8,
            want_size: 4,
            ..
        }
    ));
    // a zone that is not a ring
    z.reserve(&shmconfig::ZoneRequest::new("RG_plain", 4096, shmconfig::ZoneKind::Ring).align(128))
        .unwrap();
    let e = Ring::<u64>::lookup(&z, "plain").unwrap_err();
    assert!(matches!(e, RingError::NotReady(_)), "{e}");
    // a header of another version is refused, naming the field
    let r = Ring::<u64>::create(&z, "versioned", 64, RingFlags::empty()).unwrap();
    let base = r.zone().unwrap().as_ptr();
    // SAFETY: the zone is at least 640 bytes and 128-aligned; bytes 8..12 hold the version,
    // which nobody else accesses in this test.
    let version = unsafe { std::sync::atomic::AtomicU32::from_ptr(base.add(8).cast::<u32>()) };
    let original = version.load(std::sync::atomic::Ordering::Acquire);
    version.store(original + 77, std::sync::atomic::Ordering::Release);
    let e = Ring::<u64>::lookup(&z, "versioned").unwrap_err();
    assert!(
        matches!(
            e,
            RingError::BadHeader {
                field: "version",
                ..
            }
        ),
        "{e}"
    );
    version.store(original, std::sync::atomic::Ordering::Release);
    assert!(Ring::<u64>::lookup(&z, "versioned").is_ok());
}

#[test]
fn exact_size() {
    let z = LocalZones::new();
    let std_r = Ring::<u64>::create(&z, "std", 16, RingFlags::empty()).unwrap();
    let exact = Ring::<u64>::create(&z, "exact sz", 16, RingFlags::EXACT_SZ).unwrap();
    assert!(std_r.size() <= exact.size());
    assert_eq!(exact.capacity(), 16);
    let buf: Vec<u64> = (0..17).collect();
    let unaligned = &buf[1..]; // not on the buffer's first element
    for (i, v) in unaligned.iter().take(15).enumerate() {
        assert!(std_r.enqueue(*v).is_ok(), "std {i}");
    }
    assert_eq!(
        std_r.enqueue(16),
        Err(16),
        "the 16th single enqueue on a std ring of 16 fails"
    );
    for v in unaligned.iter().take(16) {
        assert!(exact.enqueue(*v).is_ok());
    }
    assert!(exact.is_full());
    let mut out = [0u64; 17];
    assert_eq!(exact.dequeue_burst(&mut out[1..]), 16);
    assert_eq!(&out[1..], unaligned);
    assert!(
        Ring::<u64>::lookup(&z, "exact sz").is_ok(),
        "names with spaces work"
    );
}

#[test]
fn info_dump() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "dump", 64, RingFlags::SP_ENQ).unwrap();
    r.enqueue_bulk(&[1, 2, 3]);
    let i = r.info();
    assert_eq!((i.count, i.free, i.capacity, i.size), (3, 60, 63, 64));
    assert_eq!((i.prod_tail, i.cons_tail, i.prod_head.0), (3, 0, 3));
    assert_eq!(i.sync, (SyncMode::St, SyncMode::Mt));
    let s = i.to_string();
    assert!(
        s.contains("ring <dump>@zone RG_dump") && s.contains("used=3"),
        "{s}"
    );
}

// ----- dead members (simulated in one process: LocalZones declares a member dead) -----

fn two_members(flags: RingFlags) -> (LocalZones, Ring<u64>, Ring<u64>) {
    let z0 = LocalZones::new();
    let z1 = z0.as_member(MemberId(1));
    let r0 = Ring::<u64>::create(&z0, "dead", 64, flags).unwrap();
    let r1 = Ring::<u64>::lookup(&z1, "dead").unwrap();
    (z0, r0, r1)
}

fn drain(r: &Ring<u64>) -> Vec<u64> {
    let mut all = vec![];
    let mut out = [0u64; 7];
    loop {
        let n = r.dequeue_burst(&mut out);
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&out[..n]);
    }
}

#[test]
fn dead_producer_does_not_wedge_the_ring() {
    for flags in [RingFlags::empty(), RingFlags::MP_HTS_ENQ, RingFlags::SP_ENQ] {
        let (z0, r0, r1) = two_members(flags);
        assert_eq!(r0.enqueue_bulk(&[1, 2, 3]), 3);
        assert_eq!(r1.test_reserve_and_vanish(false, 5), 5);
        z0.set_member_state(MemberId(1), MemberState::Dead);
        if flags == RingFlags::SP_ENQ {
            // a single producer died: the next one (a replacement) runs recover first
            let rep = r0.recover();
            assert_eq!(rep.producer_abandoned, 5);
        }
        // the waiter (or recover) abandons the dead range and goes on
        assert_eq!(r0.enqueue_bulk(&[4, 5]), 2, "{flags:?}");
        assert_eq!(r0.abandoned(), (5, 0));
        assert_eq!(r0.info().holes_pending, 1);
        // consumers never see the 5 abandoned slots
        let mut out = [0u64; 5];
        assert_eq!(
            r0.dequeue_bulk(&mut out),
            5,
            "{flags:?}: a bulk steps over the hole"
        );
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert!(r0.dequeue().is_none());
        assert_eq!(r0.info().holes_pending, 0);
        assert!(r0.is_empty());
        // and the ring goes on working
        assert_eq!(r0.enqueue_bulk(&[6]), 1);
        assert_eq!(drain(&r0), vec![6]);
    }
}

/// RTS: a producer that finishes behind a dead one does not wait for it; it leaves a
/// completion mark and goes on. The dead range is abandoned by the first producer that finds
/// the head too far ahead of the tail (or by `recover` / the group's clean-up hook), which then
/// takes the marks behind it: nothing finished is lost, nothing abandoned is delivered.
#[test]
fn rts_producers_pass_a_dead_one_and_the_head_bound_recovers_it() {
    let (z0, r0, r1) = two_members(RingFlags::MP_RTS_ENQ);
    assert_eq!(r0.capacity(), 63); // RTS head-tail bound: 63 / 8 = 7
    assert_eq!(r0.enqueue_bulk(&[1, 2, 3]), 3);
    assert_eq!(r1.test_reserve_and_vanish(false, 5), 5); // [3, 8)
    z0.set_member_state(MemberId(1), MemberState::Dead);
    assert_eq!(r0.enqueue_bulk(&[4, 5]), 2, "no wait: [8, 10) marked done");
    assert_eq!(
        r0.enqueue_bulk(&[6]),
        1,
        "head 10 - tail 3 = 7: still within the bound"
    );
    assert_eq!(r0.count(), 3, "the tail waits at the dead range");
    assert_eq!(r0.abandoned(), (0, 0));
    // head 11 - tail 3 = 8 > 7: this producer waits, finds the owner of [3, 8) dead, abandons
    // it and takes the two marks, then goes on at the tail.
    assert_eq!(r0.enqueue_bulk(&[7]), 1);
    assert_eq!(r0.abandoned(), (5, 0));
    assert_eq!(
        r0.count(),
        12,
        "published up to 12 (the abandoned 5 count until passed)"
    );
    assert_eq!(r0.info().holes_pending, 1);
    let mut out = [0u64; 7];
    assert_eq!(r0.dequeue_bulk(&mut out), 7, "a bulk steps over the hole");
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 7]);
    assert!(r0.is_empty());
    assert_eq!(r0.enqueue_bulk(&[8]), 1);
    assert_eq!(drain(&r0), vec![8]);
}

/// RTS consumers: one that finishes behind a dead consumer keeps what it took; the slots come
/// back to producers once the dead range is abandoned (here by `recover`).
#[test]
fn rts_consumer_behind_a_dead_one_keeps_its_elements() {
    let (z0, r0, r1) = two_members(RingFlags::MC_RTS_DEQ);
    assert_eq!(r0.enqueue_bulk(&(0..10).collect::<Vec<_>>()), 10);
    assert_eq!(r1.test_reserve_and_vanish(true, 4), 4);
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let mut out = [0u64; 6];
    assert_eq!(
        r0.dequeue_bulk(&mut out),
        6,
        "no wait behind the dead consumer"
    );
    assert_eq!(out, [4, 5, 6, 7, 8, 9]);
    assert_eq!(
        r0.free_count(),
        63 - 10,
        "the slots stay taken until the dead range goes"
    );
    let rep = r0.recover();
    assert_eq!(rep.consumer_abandoned, 4);
    assert_eq!(r0.abandoned(), (0, 4));
    assert!(r0.is_empty());
    assert_eq!(r0.free_count(), 63);
}

#[test]
fn chain_of_dead_producers_and_recover_without_waiters() {
    let z0 = LocalZones::new();
    let r0 = Ring::<u64>::create(&z0, "chain", 32, RingFlags::empty()).unwrap();
    let r1 = Ring::<u64>::lookup(&z0.as_member(MemberId(1)), "chain").unwrap();
    let r2 = Ring::<u64>::lookup(&z0.as_member(MemberId(2)), "chain").unwrap();
    assert_eq!(r0.enqueue_bulk(&[1]), 1);
    assert_eq!(r1.test_reserve_and_vanish(false, 2), 2);
    assert_eq!(r2.test_reserve_and_vanish(false, 3), 3);
    // member 2 alive, member 1 dead: recover abandons 1's range, then waits on 2
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let rep = r0.recover();
    assert_eq!(rep.producer_abandoned, 2);
    assert_eq!(rep.producer_busy, Some(MemberId(2)));
    z0.set_member_state(MemberId(2), MemberState::Dead);
    let rep = r0.recover();
    assert_eq!(rep.producer_abandoned, 3);
    assert_eq!(rep.producer_busy, None);
    assert!(!rep.pending);
    assert_eq!(r0.enqueue_bulk(&[2, 3]), 2);
    assert_eq!(drain(&r0), vec![1, 2, 3]);
    assert_eq!(r0.abandoned(), (5, 0));
    // both dead at once, a waiter after them unwinds the chain
    assert_eq!(r0.recover(), Default::default());
    let r3 = Ring::<u64>::lookup(&z0.as_member(MemberId(3)), "chain").unwrap();
    let r4 = Ring::<u64>::lookup(&z0.as_member(MemberId(4)), "chain").unwrap();
    assert_eq!(r3.test_reserve_and_vanish(false, 4), 4);
    assert_eq!(r4.test_reserve_and_vanish(false, 1), 1);
    z0.set_member_state(MemberId(3), MemberState::Dead);
    z0.set_member_state(MemberId(4), MemberState::Free);
    assert_eq!(r0.enqueue_bulk(&[7, 8, 9]), 3);
    assert_eq!(drain(&r0), vec![7, 8, 9]);
    assert_eq!(r0.abandoned(), (10, 0));
}

/// Three members reserve one behind the other and stop: the last reservation is named by the
/// head word, the two before it by their records (each written by the member that reserved
/// after it, before its CAS). Recovery must find each: with only the first member dead, it
/// abandons that range and then reports the second busy (a missing record would leave it
/// "pending" instead); with all dead, a live member's call behind them and a recovery unwind
/// the rest. Both sides, MT and RTS (the existing chain tests cover MT producers only).
#[test]
fn chain_of_three_is_named_by_head_word_and_records_on_both_sides() {
    for flags in [
        RingFlags::empty(),
        RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ,
    ] {
        for consumer in [false, true] {
            let z0 = LocalZones::new();
            let r0 = Ring::<u64>::create(&z0, "chain3", 64, flags).unwrap();
            r0.disable_bias();
            let r = |m: u16| Ring::<u64>::lookup(&z0.as_member(MemberId(m)), "chain3").unwrap();
            if consumer {
                assert_eq!(r0.enqueue_bulk(&(0..20).collect::<Vec<_>>()), 20);
            }
            for (m, n) in [(1, 2), (2, 3), (3, 4)] {
                assert_eq!(r(m).test_reserve_and_vanish(consumer, n), n, "{flags:?}");
            }
            let side = |rep: &rte_ring::RecoveryReport| {
                if consumer {
                    (rep.consumer_abandoned, rep.consumer_busy)
                } else {
                    (rep.producer_abandoned, rep.producer_busy)
                }
            };
            z0.set_member_state(MemberId(1), MemberState::Dead);
            let rep = r0.recover();
            assert_eq!(
                side(&rep),
                (2, Some(MemberId(2))),
                "{flags:?} consumer {consumer}"
            );
            assert!(!rep.pending, "{flags:?} consumer {consumer}");
            z0.set_member_state(MemberId(2), MemberState::Dead);
            z0.set_member_state(MemberId(3), MemberState::Dead);
            // (An RTS call does not wait behind them: it leaves its completion mark, and the
            // recovery after it abandons the dead ranges and takes the mark.)
            if consumer {
                let mut out = [0u64; 4];
                assert_eq!(r(4).dequeue_bulk(&mut out), 4, "{flags:?}");
                assert_eq!(out, [9, 10, 11, 12]);
                r0.recover();
                assert_eq!(r0.abandoned(), (0, 9), "{flags:?}");
                assert_eq!(drain(&r0), (13..20).collect::<Vec<_>>(), "{flags:?}");
            } else {
                assert_eq!(r(4).enqueue_bulk(&[7, 8]), 2, "{flags:?}");
                r0.recover();
                assert_eq!(r0.abandoned(), (9, 0), "{flags:?}");
                assert_eq!(drain(&r0), vec![7, 8], "{flags:?}");
            }
        }
    }
}

#[test]
fn dead_consumer_is_counted_and_frees_its_slots() {
    for flags in [RingFlags::empty(), RingFlags::MC_HTS_DEQ] {
        let (z0, r0, r1) = two_members(flags);
        assert_eq!(r0.enqueue_bulk(&(0..10).collect::<Vec<_>>()), 10);
        assert_eq!(r1.test_reserve_and_vanish(true, 4), 4);
        z0.set_member_state(MemberId(1), MemberState::Dead);
        // the next consumer waits on the dead one, abandons its 4 and goes on
        let mut out = [0u64; 6];
        assert_eq!(r0.dequeue_bulk(&mut out), 6, "{flags:?}");
        assert_eq!(out, [4, 5, 6, 7, 8, 9]);
        assert_eq!(r0.abandoned(), (0, 4));
        assert!(r0.is_empty());
        assert_eq!(r0.free_count(), 63);
    }
}

/// The shared calls' consumers keep a copy of the producer tail and take from it without
/// reading the tail (or the count of abandoned ranges beside it) while it shows enough. A
/// range abandoned after the copy was taken lies at or above the copied tail, so the copy never
/// leads a consumer into it: here the copy shows 10 of 16 published, a producer dies holding
/// [16, 20), and consumers drain the 10, then (the copy short) step over the abandoned range.
#[test]
fn a_consumers_copy_of_the_producer_tail_never_reaches_an_abandoned_range() {
    let z0 = LocalZones::new();
    let r0 = Ring::<u64>::create(&z0, "copy", 64, RingFlags::empty()).unwrap();
    r0.disable_bias();
    assert_eq!(r0.enqueue_bulk(&(0..16).collect::<Vec<_>>()), 16);
    let mut out = [0u64; 6];
    assert_eq!(r0.dequeue_bulk(&mut out), 6); // copy of the producer tail: 16
    let r1 = Ring::<u64>::lookup(&z0.as_member(MemberId(1)), "copy").unwrap();
    assert_eq!(r1.test_reserve_and_vanish(false, 4), 4);
    z0.set_member_state(MemberId(1), MemberState::Dead);
    assert_eq!(r0.enqueue_bulk(&[100, 101]), 2); // abandons [16, 20), publishes [20, 22)
    assert_eq!(r0.abandoned(), (4, 0));
    let mut got = vec![];
    let mut one = [0u64; 2];
    while r0.dequeue_bulk(&mut one) == 2 {
        got.extend_from_slice(&one);
    }
    assert_eq!(got, vec![6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 100, 101]);
    assert!(r0.is_empty());
}

#[test]
fn many_holes_are_stepped_over_by_bursts_and_bulks() {
    let z0 = LocalZones::new();
    let r = Ring::<u64>::create(&z0, "holes", 256, RingFlags::empty()).unwrap();
    let mut expect = vec![];
    let mut lost = 0;
    let vanish = |k: u16, n: u32| {
        let m = MemberId(10 + k);
        let rk = Ring::<u64>::lookup(&z0.as_member(m), "holes").unwrap();
        assert_eq!(rk.test_reserve_and_vanish(false, n), n);
        z0.set_member_state(m, MemberState::Dead);
    };
    for k in 0..16u16 {
        let n = 1 + (k as u32 % 3);
        vanish(k, n);
        lost += n as u64;
        assert_eq!(r.recover().producer_abandoned, n as u64);
        let k = k as u64;
        assert_eq!(r.enqueue_burst(&[k * 2, k * 2 + 1]), 2);
        expect.extend([k * 2, k * 2 + 1]);
    }
    assert_eq!(r.info().holes_pending, 16);
    // a 17th dead range: the table is full until consumers pass some ranges
    vanish(16, 2);
    let rep = r.recover();
    assert_eq!((rep.producer_abandoned, rep.pending), (0, true));
    let mut out = [0u64; 3];
    assert_eq!(r.dequeue_bulk(&mut out), 3, "a bulk steps over two ranges");
    assert_eq!(&out, &expect[..3]);
    expect.drain(..3);
    assert_eq!(r.info().holes_pending, 14);
    let rep = r.recover();
    assert_eq!((rep.producer_abandoned, rep.pending), (2, false));
    lost += 2;
    assert_eq!(r.enqueue_burst(&[100, 101]), 2);
    expect.extend([100, 101]);
    assert_eq!(drain(&r), expect);
    assert_eq!(r.abandoned().0, lost);
    assert_eq!(r.info().holes_pending, 0);
    assert!(r.is_empty());
}

#[test]
fn outsider_is_never_dead() {
    let z0 = LocalZones::new();
    let r = Ring::<u64>::create(&z0, "out", 16, RingFlags::empty()).unwrap();
    let guest = Ring::<u64>::lookup(&z0.as_member(MemberId::OUTSIDER), "out").unwrap();
    assert_eq!(guest.test_reserve_and_vanish(false, 1), 1);
    let rep = r.recover();
    assert_eq!(rep.producer_busy, Some(MemberId::OUTSIDER));
    assert_eq!(rep.producer_abandoned, 0);
}

#[test]
fn long_bursts_are_split_and_long_bulks_refused() {
    let z = LocalZones::new();
    let r = Ring::<u32>::create(&z, "long", 1 << 18, RingFlags::empty()).unwrap();
    let items: Vec<u32> = (0..100_000).collect();
    assert_eq!(
        r.enqueue_bulk(&items),
        0,
        "a bulk above MAX_OP moves nothing"
    );
    assert_eq!(
        r.enqueue_burst(&items),
        100_000,
        "a burst above MAX_OP is split"
    );
    let mut out = vec![0u32; 100_000];
    assert_eq!(r.dequeue_bulk(&mut out), 0);
    assert_eq!(r.dequeue_burst(&mut out), 100_000);
    assert_eq!(out, items);
    assert_eq!(rte_ring::MAX_OP, 65_531);
    // the single-member handles have no head-word length to fit: one bulk moves them all
    let mut tx = r.single_producer().unwrap();
    let mut rx = r.single_consumer().unwrap();
    assert_eq!(tx.enqueue_bulk(&items), 100_000);
    out.fill(0);
    assert_eq!(rx.dequeue_bulk(&mut out), 100_000);
    assert_eq!(out, items);
}

#[test]
fn handles_are_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Ring<u64>>();
    check::<Ring<[u32; 5]>>();
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "shared handle", 8, RingFlags::empty()).unwrap();
    let r2 = r.clone();
    std::thread::spawn(move || assert_eq!(r2.enqueue_bulk(&[5]), 1))
        .join()
        .unwrap();
    assert_eq!(r.dequeue(), Some(5));
    assert_eq!(Ring::<u64>::zone_name("shared handle"), "RG_shared handle");
}

#[test]
fn zero_copy_reserve_and_peek() {
    let z = LocalZones::new();
    let r = Ring::<u64>::create(&z, "zc", 8, RingFlags::SP_ENQ | RingFlags::SC_DEQ).unwrap();
    let mut tx = r.single_producer().unwrap();
    let mut rx = r.single_consumer().unwrap();
    // move the positions near the end of the slot array so reservations wrap
    for i in 0..6 {
        tx.enqueue(i).unwrap();
        assert_eq!(rx.dequeue(), Some(i));
    }
    assert!(
        tx.reserve(8, Behavior::Fixed).is_none(),
        "more than the capacity"
    );
    let mut s = tx.reserve(5, Behavior::Fixed).unwrap();
    assert_eq!(s.len(), 5);
    {
        let (a, b) = s.slices();
        assert_eq!((a.len(), b.len()), (2, 3), "wraps after two slots");
        for (k, v) in a.iter_mut().chain(b.iter_mut()).enumerate() {
            *v = 100 + k as u64;
        }
    }
    assert!(r.is_empty(), "nothing visible before the commit");
    s.commit(4);
    assert_eq!(r.count(), 4);
    // a reservation dropped without commit publishes nothing
    {
        let mut s = tx.reserve(2, Behavior::Variable).unwrap();
        s.slices().0[0] = 999;
    }
    assert_eq!(r.count(), 4);
    assert!(
        rx.peek(5, Behavior::Fixed).is_none(),
        "bulk peek of more than is there"
    );
    {
        let p = rx.peek(5, Behavior::Variable).unwrap();
        let (a, b) = p.slices();
        let seen: Vec<u64> = a.iter().chain(b).copied().collect();
        assert_eq!(seen, vec![100, 101, 102, 103]);
    }
    assert_eq!(r.count(), 4, "a peek dropped without finish takes nothing");
    rx.peek(4, Behavior::Fixed).unwrap().finish(1);
    let mut out = [0u64; 3];
    assert_eq!(rx.dequeue_bulk(&mut out), 3);
    assert_eq!(out, [101, 102, 103]);
    assert!(rx.peek(1, Behavior::Variable).is_none());
}

#[test]
fn in_place_shared_calls_and_a_panicking_closure() {
    let z = LocalZones::new();
    let r = Ring::<u32>::create(&z, "in place", 8, RingFlags::empty()).unwrap();
    // wrap: positions near the end of the slot array
    assert_eq!(r.enqueue_bulk(&[0; 6]), 6);
    assert_eq!(r.dequeue_bulk(&mut [0; 6]), 6);
    assert_eq!(
        r.enqueue_bulk_in_place(5, |a, b| {
            assert_eq!((a.len(), b.len()), (2, 3));
            for (k, v) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                *v = k as u32;
            }
        }),
        5
    );
    assert_eq!(
        r.enqueue_bulk_in_place(3, |_, _| panic!("not called")),
        0,
        "only 2 free"
    );
    let mut seen: Vec<u32> = vec![];
    assert_eq!(
        r.dequeue_bulk_in_place(4, |a, b| seen.extend(a.iter().chain(b))),
        4
    );
    assert_eq!(seen, [0, 1, 2, 3]);
    // a producer closure that panics: its range is abandoned, the ring goes on
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.enqueue_bulk_in_place(2, |_, _| panic!("producer closure fails"))
    }));
    assert!(caught.is_err());
    assert_eq!(r.abandoned(), (2, 0));
    assert_eq!(r.enqueue_bulk(&[42]), 1);
    let mut out = [0u32; 2];
    assert_eq!(
        r.dequeue_burst(&mut out),
        2,
        "the abandoned range is stepped over"
    );
    assert_eq!(out, [4, 42]);
    // a consumer closure that panics: its elements are taken and counted
    assert_eq!(r.enqueue_bulk(&[5, 6]), 2);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.dequeue_bulk_in_place(1, |_, _| panic!("consumer closure fails"))
    }));
    assert!(caught.is_err());
    assert_eq!(r.abandoned(), (2, 1));
    assert_eq!(r.dequeue(), Some(6));
    assert!(r.is_empty());
    // On a side not biased, an abandoned producer range stays in the ring until consumers step
    // over it; an in-place dequeue does so the copying way and shows what follows it.
    rte_ring::disable_bias_of(&z, "in place").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.enqueue_bulk_in_place(1, |_, _| panic!("producer closure fails again"))
    }));
    assert!(caught.is_err());
    assert_eq!(r.abandoned(), (3, 1));
    assert_eq!(r.enqueue_bulk(&[8, 9]), 2);
    assert_eq!(r.dequeue_bulk_in_place(3, |_, _| panic!("only 2")), 0);
    let mut seen: Vec<u32> = vec![];
    assert_eq!(
        r.dequeue_bulk_in_place(2, |a, b| seen.extend(a.iter().chain(b))),
        2
    );
    assert_eq!(seen, [8, 9]);
    assert!(r.is_empty());
}

/// A consumer side biased to this thread, a producer side shared: a producer range abandoned
/// there stays in the ring, and the biased consumer's in-place dequeue (whose inlined way
/// handles a biased claim alone) hands the call to the shared way, which steps over it.
#[test]
fn a_biased_in_place_dequeue_steps_over_a_shared_producers_abandoned_range() {
    let z = LocalZones::new();
    let r = Ring::<u32>::create(&z, "biased consumer", 16, RingFlags::empty()).unwrap();
    // Producers on several threads in turn: the producer side's bias is revoked until it is
    // no longer taken (4 revokes). This thread alone consumes.
    for k in 0..5 {
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(r.enqueue_bulk(&[k]), 1));
        });
        assert_eq!(r.dequeue(), Some(k));
    }
    assert_eq!(r.enqueue_bulk(&[1, 2]), 2);
    let mut two = [0u32; 2];
    assert_eq!(r.dequeue_bulk(&mut two), 2);
    assert_eq!(two, [1, 2]);
    let info = r.info();
    assert_eq!(info.producer_bias, None);
    assert_eq!(
        info.consumer_bias.is_some(),
        membarrier_available(),
        "the consumer side is biased wherever biasing works"
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.enqueue_bulk_in_place(2, |_, _| panic!("producer closure fails"))
    }));
    assert!(caught.is_err());
    assert_eq!(r.abandoned(), (2, 0));
    assert_eq!(r.enqueue_bulk(&[3, 4, 5]), 3);
    assert_eq!(
        r.dequeue_bulk_in_place(4, |_, _| panic!("only 3 behind the abandoned range")),
        0
    );
    let mut seen: Vec<u32> = vec![];
    assert_eq!(
        r.dequeue_bulk_in_place(3, |a, b| seen.extend(a.iter().chain(b))),
        3
    );
    assert_eq!(seen, [3, 4, 5]);
    assert!(r.is_empty());
    // (Stepping over the range took the shared way, which revoked the consumer side's bias.)
    assert_eq!(r.enqueue_bulk(&[6, 7]), 2);
    seen.clear();
    assert_eq!(
        r.dequeue_bulk_in_place(2, |a, b| seen.extend(a.iter().chain(b))),
        2
    );
    assert_eq!(seen, [6, 7]);
}

/// An in-place call from inside the closure of another on the same side: on a side biased to
/// the thread it would claim the same slots (two `&mut` views of them for producers), so it
/// panics; the outer claim is then abandoned and counted, and the ring goes on. The other side
/// may be used from the closure.
#[test]
fn a_nested_in_place_call_on_a_biased_side_panics_and_the_ring_goes_on() {
    let z = LocalZones::new();
    let r = Ring::<u32>::create(&z, "nested", 16, RingFlags::empty()).unwrap();
    assert_eq!(r.enqueue_bulk(&[1, 2]), 2);
    if r.info().producer_bias.is_none() {
        // Without the expedited membarrier nothing is biased, and this thread's nested call
        // would wait for its own claim: nothing to check here.
        assert!(!membarrier_available());
        return;
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.enqueue_bulk_in_place(2, |a, _| {
            a.fill(7);
            r.enqueue_bulk_in_place(1, |_, _| unreachable!("a second claim of the same slots"));
        })
    }));
    let msg = caught.expect_err("the nested call panics");
    let msg = msg.downcast_ref::<&str>().copied().unwrap_or("");
    assert!(msg.contains("in-place call"), "{msg}");
    assert_eq!(r.abandoned(), (2, 0));
    // The consumer side is free to use from a producer's closure.
    let mut got = vec![];
    assert_eq!(
        r.enqueue_bulk_in_place(1, |a, _| {
            a[0] = 3;
            got.push(r.dequeue().unwrap());
        }),
        1
    );
    assert_eq!(got, [1]);
    let mut out = [0u32; 4];
    assert_eq!(
        r.dequeue_burst(&mut out),
        2,
        "the abandoned range is stepped over"
    );
    assert_eq!(out[..2], [2, 3]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(r.enqueue_bulk(&[4, 5]), 2);
        r.dequeue_bulk_in_place(1, |_, _| {
            r.dequeue_bulk_in_place(1, |_, _| unreachable!("a second claim of the same slot"));
        })
    }));
    assert!(caught.is_err());
    assert_eq!(r.abandoned(), (2, 1));
    assert_eq!(r.dequeue(), Some(5));
}

#[test]
fn snapshot_reads_in_place_skipping_abandoned_ranges() {
    let (z0, r0, r1) = two_members(RingFlags::empty());
    assert_eq!(r0.enqueue_bulk(&[1, 2]), 2);
    assert_eq!(r1.test_reserve_and_vanish(false, 3), 3);
    z0.set_member_state(MemberId(1), MemberState::Dead);
    assert_eq!(r0.enqueue_bulk(&[4, 5]), 2); // waits, abandons the dead range, goes on
    let _rx = r0.single_consumer().unwrap(); // a held side does not stop a snapshot
    assert_eq!(r0.snapshot(), vec![1, 2, 4, 5]);
    assert_eq!(
        r0.count(),
        7,
        "the abandoned range is still counted until passed"
    );
    assert_eq!(r0.snapshot(), vec![1, 2, 4, 5], "nothing was taken");
}

/// Whether this kernel lets a process take a bias (expedited global membarrier).
fn membarrier_available() -> bool {
    use rustix::thread::{membarrier_query, MembarrierQuery};
    // Miri has no membarrier (and the ring takes no bias there).
    !cfg!(miri)
        && membarrier_query().contains(
            MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED,
        )
}

#[test]
fn mt_sides_are_biased_to_their_thread_and_revoked_by_others() {
    let z0 = LocalZones::new();
    let r0 = Ring::<u64>::create(&z0, "bias", 64, RingFlags::empty()).unwrap();
    let r1 = Ring::<u64>::lookup(&z0.as_member(MemberId(1)), "bias").unwrap();
    assert_eq!(r0.enqueue_bulk(&[1, 2, 3, 4]), 4);
    if !membarrier_available() {
        // Without the expedited membarrier nothing is ever biased.
        assert_eq!(r0.info().producer_bias, None);
        assert_eq!(drain(&r0), vec![1, 2, 3, 4]);
        return;
    }
    let i = r0.info();
    assert_eq!(i.producer_bias, Some(MemberId(0)), "{i}");
    assert_eq!((i.prod_head.0, i.prod_tail, i.revokes), (4, 4, (0, 0)));
    // another thread of the same member revokes, and the side is then biased to that thread
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(r0.enqueue_bulk(&[5]), 1));
    });
    assert_eq!(r0.info().revokes, (1, 0));
    // the first thread again: the other thread's bias is revoked in turn
    assert_eq!(r0.enqueue_bulk(&[6]), 1);
    assert_eq!(r0.info().revokes, (2, 0));
    // the consumer side goes to member 1's thread
    let mut out = [0u64; 2];
    assert_eq!(r1.dequeue_bulk(&mut out), 2);
    assert_eq!(out, [1, 2]);
    assert_eq!(r0.info().consumer_bias, Some(MemberId(1)));
    // member 1 dies in the middle of a biased dequeue: the element it was taking is not lost
    assert_eq!(r1.test_reserve_and_vanish_biased(true, 1), (1, true));
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let rep = r0.recover();
    assert_eq!(rep.consumer_released, Some(MemberId(1)), "{rep:?}");
    assert_eq!(rep.consumer_busy, None);
    assert_eq!(drain(&r0), vec![3, 4, 5, 6]);
    assert_eq!(r0.abandoned(), (0, 0));
    // for good: the sides run MT from now on
    r0.disable_bias();
    assert_eq!(r0.enqueue_bulk(&[7]), 1);
    assert_eq!(drain(&r0), vec![7]);
    let i = r0.info();
    assert_eq!((i.producer_bias, i.consumer_bias), (None, None), "{i}");
    assert!(i.revokes.0 >= 4 && i.revokes.1 >= 4, "{i}");
}

#[test]
fn a_dead_biased_producer_is_revoked_without_waiting_and_its_enqueue_never_seen() {
    let (z0, r0, r1) = two_members(RingFlags::empty());
    if !membarrier_available() {
        return;
    }
    assert_eq!(r1.test_reserve_and_vanish_biased(false, 3), (3, true));
    z0.set_member_state(MemberId(1), MemberState::Dead);
    // a live producer revokes the dead holder's bias (its in-flight flag is still up)
    assert_eq!(r0.enqueue_bulk(&[9]), 1);
    assert_eq!(drain(&r0), vec![9]);
    assert_eq!(r0.abandoned(), (0, 0));
    assert_eq!(r0.info().revokes.0, 1);
}

#[test]
fn a_revoker_killed_mid_revocation_is_replaced() {
    let z0 = LocalZones::new();
    let r0 = Ring::<u64>::create(&z0, "revoker", 64, RingFlags::empty()).unwrap();
    let r1 = Ring::<u64>::lookup(&z0.as_member(MemberId(1)), "revoker").unwrap();
    let r2 = Ring::<u64>::lookup(&z0.as_member(MemberId(2)), "revoker").unwrap();
    if !membarrier_available() {
        return;
    }
    assert_eq!(r0.enqueue_bulk(&[1, 2]), 2);
    assert_eq!(r0.info().producer_bias, Some(MemberId(0)));
    // member 1 starts revoking member 0's bias and dies before it finishes
    assert!(r1.test_start_revoke_and_vanish(false));
    z0.set_member_state(MemberId(1), MemberState::Dead);
    let rep = r0.recover();
    assert!(rep.producer_busy.is_none() && !rep.pending, "{rep:?}");
    // member 2 finishes the revocation in its place and goes on; so does member 0
    assert_eq!(r2.enqueue_bulk(&[3]), 1);
    assert_eq!(r0.enqueue_bulk(&[4]), 1);
    assert_eq!(r0.info().producer_bias, Some(MemberId(0)));
    // again, and this time the next caller takes the revocation over by itself (no recover)
    let r3 = Ring::<u64>::lookup(&z0.as_member(MemberId(3)), "revoker").unwrap();
    assert!(r3.test_start_revoke_and_vanish(false));
    z0.set_member_state(MemberId(3), MemberState::Dead);
    assert_eq!(r2.enqueue_bulk(&[5]), 1);
    assert_eq!(drain(&r0), vec![1, 2, 3, 4, 5]);
    assert_eq!(r0.abandoned(), (0, 0));
}
