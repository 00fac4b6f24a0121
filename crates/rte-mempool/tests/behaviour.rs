//! DPDK `test_mempool.c` behaviours that apply (dpdk-facts §7.2), the cache rules, and the
//! recovery of dead members, over `LocalZones`.

use std::collections::HashSet;
use std::sync::Arc;

use rte_mempool::{
    Mempool, MempoolError, MempoolFlags, MempoolParams, Obj, OrphanReason, CACHE_MAX_SIZE,
};
use rte_ring::{Ring, RingFlags};
use shmconfig::{LocalZones, MemberId, MemberState, Zones};

/// DPDK's MEMPOOL_SIZE for 2 lcores: lcores × (16 + 512) − 1.
const SIZE: u32 = 2 * (16 + 512) - 1;
const ELT: u32 = 2048;

fn write_u32(o: Obj, v: u32) {
    let b = v.to_le_bytes();
    for (k, x) in b.iter().enumerate() {
        // Raw pointer writes into the object we hold: that is what the handle is for.
        let p = o.as_ptr().wrapping_add(k);
        std::hint::black_box(p);
        rawio::write(p, *x);
    }
}

fn read_u32(o: Obj) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = rawio::read(o.as_ptr().wrapping_add(k));
    }
    u32::from_le_bytes(b)
}

#[allow(unsafe_code)]
mod rawio {
    pub fn write(p: *mut u8, v: u8) {
        // SAFETY: callers pass a byte inside an object the test holds.
        unsafe { p.write_volatile(v) }
    }
    pub fn read(p: *mut u8) -> u8 {
        // SAFETY: callers pass a byte inside an object the test holds.
        unsafe { p.read_volatile() }
    }
}

/// The basic test of `test_mempool_basic`: get one, counts, get 2 / put 2, contents kept.
fn basic(zones: &LocalZones, mp: &Mempool, use_local: bool) {
    let mut local = mp.local(zones);
    let mut get = |out: &mut [Obj]| {
        if use_local {
            local.get_bulk(out)
        } else {
            mp.get_bulk(out)
        }
    };
    let mut one = [Obj::empty()];
    assert_eq!(get(&mut one), 1);
    // counts include what the caches hold
    assert_eq!(mp.avail_count(), SIZE - 1);
    assert_eq!(mp.in_use_count(), 1);
    assert_eq!(
        Mempool::from_ptr(one[0].as_ptr()).unwrap().name(),
        mp.name()
    );
    let mut two = [Obj::empty(); 2];
    assert_eq!(get(&mut two), 2);
    assert_eq!(mp.avail_count(), SIZE - 3);
    let all = [one[0], two[0], two[1]];
    assert_eq!(
        all.iter()
            .map(|o| mp.index_of(*o).unwrap())
            .collect::<HashSet<_>>()
            .len(),
        3
    );
    for o in all {
        write_u32(o, mp.index_of(o).unwrap());
    }
    if use_local {
        local.put_bulk(&all);
    } else {
        mp.put_bulk(&all);
    }
    assert_eq!(mp.avail_count(), SIZE);
    for o in all {
        assert_eq!(
            read_u32(o),
            mp.index_of(o).unwrap(),
            "object contents are kept"
        );
    }
}

#[test]
fn basic_without_cache_with_cache_and_via_ring() {
    let zones = LocalZones::new().with_lcore(Some(0));
    let nc = Mempool::create(&zones, "test_nocache", MempoolParams::new(SIZE, ELT)).unwrap();
    basic(&zones, &nc, false);
    basic(&zones, &nc, true);
    let c = Mempool::create(
        &zones,
        "test_cache",
        MempoolParams::new(SIZE, ELT).cache_size(CACHE_MAX_SIZE),
    )
    .unwrap();
    basic(&zones, &c, true);
    basic(&zones, &c, false);
    // objects left in lcore 0's cache are counted as available
    assert!(c.cache_count(0) > 0);
    assert_eq!(c.avail_count(), SIZE);
}

#[test]
fn create_refusals() {
    let zones = LocalZones::new();
    let e = Mempool::create(
        &zones,
        "big_cache",
        MempoolParams::new(SIZE, ELT).cache_size(512 + 32),
    );
    assert!(
        matches!(
            e,
            Err(MempoolError::BadCacheSize {
                cache_size: 544,
                ..
            })
        ),
        "{e:?}"
    );
    // 1.5 × cache size (rounded down, as DPDK) must not exceed the count
    let e = Mempool::create(&zones, "small", MempoolParams::new(100, 8).cache_size(68));
    assert!(matches!(e, Err(MempoolError::BadCacheSize { .. })), "{e:?}");
    assert!(Mempool::create(&zones, "small", MempoolParams::new(100, 8).cache_size(67)).is_ok());
    let e = Mempool::create(
        &zones,
        "bad_flags",
        MempoolParams::new(SIZE, ELT).flags(MempoolFlags::from_bits_retain(0x80)),
    );
    assert!(
        matches!(e, Err(MempoolError::BadFlags { bits: 0x80, .. })),
        "{e:?}"
    );
    let e = Mempool::create(&zones, "zero", MempoolParams::new(0, ELT));
    assert!(
        matches!(e, Err(MempoolError::BadCount { n: 0, .. })),
        "{e:?}"
    );
    let e = Mempool::create(&zones, &"x".repeat(26), MempoolParams::new(8, 8));
    assert!(matches!(e, Err(MempoolError::BadName { .. })), "{e:?}");
    // nothing was left behind by the refusals
    assert_eq!(zones.list().len(), 3, "{:?}", zones.list());
    Mempool::create(&zones, "dup", MempoolParams::new(8, 8)).unwrap();
    let e = Mempool::create(&zones, "dup", MempoolParams::new(8, 8));
    assert!(
        matches!(e, Err(MempoolError::Exists(ref n)) if n == "dup"),
        "{e:?}"
    );
    assert!(matches!(
        Mempool::lookup(&zones, "nothing"),
        Err(MempoolError::NotFound(_))
    ));
}

#[test]
fn lookup_finds_the_same_pool() {
    let zones = LocalZones::new();
    let a = Mempool::create(
        &zones,
        "test_nocache",
        MempoolParams::new(SIZE, ELT).priv_size(16),
    )
    .unwrap();
    let b = Mempool::lookup(&zones, "test_nocache").unwrap();
    Mempool::create(&zones, "second", MempoolParams::new(8, 8)).unwrap();
    assert_eq!(Mempool::list(&zones), ["test_nocache", "second"]);
    let o = b.get().unwrap();
    assert_eq!(
        a.obj(b.index_of(o).unwrap()),
        Some(o),
        "same memory, same object"
    );
    assert_eq!(a.avail_count(), SIZE - 1);
    assert_eq!(b.priv_size(), 16);
    assert_eq!(a.private_ptr(o), o.as_ptr().wrapping_add(ELT as usize));
    assert_eq!(a.obj_from_ptr(a.private_ptr(o)), Some(o));
    assert_eq!(a.obj_from_ptr(std::ptr::null()), None);
    b.put(o);
    // iteration visits every object once, at distinct addresses `stride` apart
    let objs: Vec<Obj> = a.iter().collect();
    assert_eq!(objs.len(), SIZE as usize);
    for w in objs.windows(2) {
        assert_eq!(w[1].as_ptr() as usize - w[0].as_ptr() as usize, a.stride());
    }
    assert_eq!(a.stride() % 64, 0);
}

#[test]
fn get_all_then_empty_put_all_then_full() {
    for cache in [0, 32, CACHE_MAX_SIZE] {
        let zones = LocalZones::new().with_lcore(Some(1));
        let mp = Mempool::create(
            &zones,
            "all",
            MempoolParams::new(SIZE, ELT).cache_size(cache),
        )
        .unwrap();
        let mut local = mp.local(&zones);
        let mut held = Vec::new();
        while let Some(o) = local.get() {
            held.push(o);
        }
        assert_eq!(
            held.len(),
            SIZE as usize,
            "cache {cache}: every object can be had"
        );
        assert!(mp.is_empty());
        assert_eq!(mp.in_use_count(), SIZE);
        let set: HashSet<u32> = held.iter().map(|o| mp.index_of(*o).unwrap()).collect();
        assert_eq!(set.len(), SIZE as usize, "no object handed out twice");
        for o in &held {
            local.put(*o);
        }
        assert!(mp.is_full(), "cache {cache}");
    }
}

#[test]
fn bulk_get_is_all_or_nothing() {
    let zones = LocalZones::new().with_lcore(Some(2));
    let mp = Mempool::create(&zones, "bulk", MempoolParams::new(100, 64).cache_size(16)).unwrap();
    let mut local = mp.local(&zones);
    let mut big = vec![Obj::empty(); 101];
    assert_eq!(local.get_bulk(&mut big), 0);
    assert_eq!(mp.avail_count(), 100);
    let mut some = vec![Obj::empty(); 90];
    assert_eq!(local.get_bulk(&mut some), 90);
    let mut more = vec![Obj::empty(); 11];
    assert_eq!(local.get_bulk(&mut more), 0, "only 10 left");
    assert_eq!(mp.avail_count(), 10);
    assert_eq!(local.get_bulk(&mut more[..10]), 10);
    assert!(mp.is_empty());
}

#[test]
fn cache_refill_and_flush_thresholds() {
    let zones = LocalZones::new().with_lcore(Some(4));
    let mp = Mempool::create(&zones, "thr", MempoolParams::new(1000, 64).cache_size(32)).unwrap();
    assert_eq!(mp.flush_threshold(), 48);
    let mut local = mp.local(&zones);
    assert_eq!(local.lcore(), Some(4));
    // get 1 from an empty cache: refill with cache_size + 1, hand out 1
    let o = local.get().unwrap();
    assert_eq!(local.cache_len(), 32);
    assert_eq!(mp.ring().count(), 1000 - 33);
    let mut held = vec![o];
    let mut buf = vec![Obj::empty(); 32];
    assert_eq!(local.get_bulk(&mut buf), 32);
    assert_eq!(local.cache_len(), 0);
    held.extend_from_slice(&buf);
    let mut buf = vec![Obj::empty(); 16];
    assert_eq!(local.get_bulk(&mut buf), 16);
    assert_eq!(local.cache_len(), 32, "refilled with 32 + 16, gave 16");
    held.extend_from_slice(&buf);
    // put 16: 48 ≤ threshold, kept
    local.put_bulk(&held[..16]);
    assert_eq!(local.cache_len(), 48);
    // one more passes the threshold: the 48 go to the ring, the new one is the cache
    let ring_before = mp.ring().count();
    local.put(held[16]);
    assert_eq!(local.cache_len(), 1);
    assert_eq!(mp.ring().count(), ring_before + 48);
    // a put larger than the threshold goes straight to the ring
    let ring_before = mp.ring().count();
    local.put_bulk(&held[17..]);
    assert_eq!(held[17..].len(), 32);
    assert_eq!(local.cache_len(), 33);
    let mut many = vec![Obj::empty(); 49];
    assert_eq!(local.get_bulk(&mut many), 49);
    local.put_bulk(&many);
    assert!(mp.ring().count() >= ring_before);
    local.flush();
    assert_eq!(local.cache_len(), 0);
    assert_eq!(mp.ring().count(), 1000);
}

#[test]
fn threads_without_lcore_and_guests_use_the_ring() {
    let zones = LocalZones::new();
    let mp = Mempool::create(&zones, "nolc", MempoolParams::new(100, 64).cache_size(8)).unwrap();
    let mut l = mp.local(&zones);
    assert_eq!(l.lcore(), None);
    let o = l.get().unwrap();
    assert_eq!(mp.ring().count(), 99, "no cache refill without an lcore");
    l.put(o);
    let guest = zones.as_member(MemberId::OUTSIDER).with_lcore(Some(3));
    let g = Mempool::lookup(&guest, "nolc").unwrap();
    let mut gl = g.local(&guest);
    assert_eq!(gl.lcore(), None, "a guest never uses an lcore cache");
    let o = gl.get().unwrap();
    assert_eq!(mp.ring().count(), 99);
    gl.put(o);
    // a pool without caches gives no cache either
    let nc = Mempool::create(&zones, "nc", MempoolParams::new(10, 8)).unwrap();
    assert_eq!(nc.local(&zones.with_lcore(Some(1))).lcore(), None);
}

#[test]
fn dead_members_cache_is_flushed_by_the_hook() {
    let zones = LocalZones::new();
    let mp = Mempool::create(&zones, "dc", MempoolParams::new(500, 64).cache_size(64)).unwrap();
    let m1 = zones.as_member(MemberId(1)).with_lcore(Some(7));
    let p1 = Mempool::lookup(&m1, "dc").unwrap();
    let mut l1 = p1.local(&m1);
    let mut held = vec![Obj::empty(); 10];
    assert_eq!(l1.get_bulk(&mut held), 10);
    assert_eq!(mp.cache_count(7), 64);
    // alive: recovery does nothing
    assert!(!mp.recover_dead_members().did_something());
    // a second view of the same lcore's cache in this process gets none while one lives
    let again = p1.local(&m1);
    assert_eq!(again.lcore(), None);
    drop(again);
    drop(l1); // member 1 dies: its thread is gone
    zones.set_member_state(MemberId(1), MemberState::Dead);
    let report = shmconfig::hooks::run_all(&zones, MemberId(1));
    assert!(
        report
            .iter()
            .any(|l| l.contains("mempool dc: flushed 1 caches (64 objects)")),
        "{report:?}"
    );
    assert_eq!(mp.cache_count(7), 0);
    assert_eq!(
        mp.ring().count(),
        490,
        "untracked: the 10 held objects are not known"
    );
    assert_eq!(mp.stats().caches_flushed, 1);
    // idempotent
    assert!(!mp.recover_dead_members().did_something());
    // the lcore's next owner starts with an empty cache it owns
    let m2 = zones.as_member(MemberId(2)).with_lcore(Some(7));
    let p2 = Mempool::lookup(&m2, "dc").unwrap();
    let mut l2 = p2.local(&m2);
    assert!(l2.get().is_some());
    assert_eq!(mp.cache_count(7), 64);
}

#[test]
fn next_lcore_owner_adopts_a_dead_owners_cache() {
    let zones = LocalZones::new();
    let mp = Mempool::create(&zones, "adopt", MempoolParams::new(500, 64).cache_size(64)).unwrap();
    let m1 = zones.as_member(MemberId(1)).with_lcore(Some(9));
    let mut l1 = Mempool::lookup(&m1, "adopt").unwrap().local(&m1);
    let o = l1.get().unwrap();
    l1.put(o);
    assert_eq!(mp.cache_count(9), 65);
    drop(l1); // member 1's thread is gone
    let m2 = zones.as_member(MemberId(2)).with_lcore(Some(9));
    let p2 = Mempool::lookup(&m2, "adopt").unwrap();
    zones.set_member_state(MemberId(1), MemberState::Free);
    // no recovery ran; a new owner of lcore 9 takes the cache over, objects included
    let mut l2 = p2.local(&m2);
    let mut held = vec![Obj::empty(); 65];
    assert_eq!(l2.get_bulk(&mut held), 65);
    assert_eq!(mp.ring().count(), 500 - 65, "served from the adopted cache");
    assert!(
        !mp.recover_dead_members().did_something(),
        "the cache is member 2's now"
    );
    l2.put_bulk(&held);
    assert!(mp.is_full());
}

#[test]
fn tracked_objects_of_a_dead_member_are_returned() {
    let zones = LocalZones::new();
    let mp = Mempool::create(
        &zones,
        "tr",
        MempoolParams::new(300, 64)
            .cache_size(16)
            .flags(MempoolFlags::TRACK),
    )
    .unwrap();
    let m1 = zones.as_member(MemberId(1)).with_lcore(Some(3));
    let p1 = Mempool::lookup(&m1, "tr").unwrap();
    let mut l1 = p1.local(&m1);
    let mut held = vec![Obj::empty(); 40];
    assert_eq!(l1.get_bulk(&mut held), 40);
    // member 0 holds some too; they must survive member 1's death
    let mine: Vec<Obj> = (0..5).map(|_| mp.get().unwrap()).collect();
    zones.set_member_state(MemberId(1), MemberState::Dead);
    let r = mp.recover_dead_members();
    assert_eq!(r.reclaimed, 40);
    assert_eq!(r.caches_flushed, 1);
    assert_eq!(mp.avail_count(), 295);
    let audit = mp.audit(&[], false);
    assert!(audit.is_sound(), "{audit}");
    assert_eq!(audit.held_by_live, 5);
    assert!(audit.orphans.is_empty());
    mp.put_bulk(&mine);
    assert!(mp.is_full());
    assert_eq!(mp.stats().violations, 0);
}

#[test]
fn objects_in_transit_belong_to_the_ring() {
    let zones = LocalZones::new();
    let mp = Mempool::create(
        &zones,
        "tx",
        MempoolParams::new(64, 64).flags(MempoolFlags::TRACK),
    )
    .unwrap();
    let link = Ring::<u32>::create(&zones, "link", 64, RingFlags::empty()).unwrap();
    let a = zones.as_member(MemberId(1));
    let b = zones.as_member(MemberId(2));
    let pa = Mempool::lookup(&a, "tx").unwrap();
    let pb = Mempool::lookup(&b, "tx").unwrap();
    let mut objs = vec![Obj::empty(); 8];
    assert_eq!(pa.get_bulk(&mut objs), 8);
    for o in &objs {
        write_u32(*o, 1000 + pa.index_of(*o).unwrap());
    }
    assert_eq!(pa.send(&link, &objs[..6]), 6);
    // the sender dies: what it still held comes back, what it sent stays in the ring
    zones.set_member_state(MemberId(1), MemberState::Dead);
    let r = mp.recover_dead_members();
    assert_eq!(r.reclaimed, 2);
    let audit = mp.audit(&[&link], false);
    assert!(audit.is_sound(), "{audit}");
    assert_eq!(audit.in_rings, 6);
    let mut got = vec![Obj::empty(); 8];
    assert_eq!(pb.receive(&link, &mut got), 6);
    for o in &got[..6] {
        assert_eq!(read_u32(*o), 1000 + pb.index_of(*o).unwrap());
    }
    let audit = mp.audit(&[&link], false);
    assert_eq!(audit.held_by_live, 6, "{audit}");
    pb.put_bulk(&got[..6]);
    assert!(mp.is_full());
    assert_eq!(mp.stats().violations, 0);
}

#[test]
fn audit_finds_and_repairs_orphans_and_counts_violations() {
    let zones = LocalZones::new();
    let mp = Mempool::create(
        &zones,
        "orph",
        MempoolParams::new(32, 64).flags(MempoolFlags::TRACK),
    )
    .unwrap();
    // a member killed between taking objects from the ring and recording itself: simulated by
    // taking indexes from the ring directly
    let mut lost = [0u32; 3];
    assert_eq!(mp.ring().dequeue_bulk(&mut lost), 3);
    let held = mp.get().unwrap();
    let a = mp.audit(&[], false);
    assert!(a.is_sound(), "{a}");
    assert_eq!(a.orphans.len(), 3);
    assert!(a
        .orphans
        .iter()
        .all(|o| o.reason == OrphanReason::LostInPool));
    assert_eq!(a.held_by_live, 1);
    let a = mp.audit(&[], true);
    assert_eq!(a.repaired, 3);
    assert_eq!(mp.avail_count(), 31);
    // a put of an object not held is a violation
    mp.put(held);
    assert!(mp.is_full());
    assert_eq!(mp.stats().violations, 0);
    let again = mp.obj(mp.index_of(held).unwrap()).unwrap();
    let o = mp.get().unwrap();
    mp.put(o);
    let _ = again;
    let dup = mp.get().unwrap();
    mp.put(dup);
    mp.put(dup); // put twice
    assert!(mp.stats().violations >= 1);
}

#[test]
fn untracked_audit_counts_places() {
    let zones = LocalZones::new().with_lcore(Some(0));
    let mp = Mempool::create(&zones, "ua", MempoolParams::new(200, 8).cache_size(20)).unwrap();
    let mut l = mp.local(&zones);
    let mut objs = vec![Obj::empty(); 7];
    assert_eq!(l.get_bulk(&mut objs), 7);
    let a = mp.audit(&[], false);
    assert!(a.is_sound(), "{a}");
    assert_eq!(a.out_untracked, 7);
    assert_eq!(a.in_caches + a.in_free_ring, 193);
}

/// DPDK's `test_mempool_sp_sc`: on a pool whose free ring is single-producer and
/// single-consumer, one thread gets (the only consumer) and hands each object to another thread
/// that puts it back (the only producer), concurrently; every object is handed out to one
/// holder at a time, keeps what was written into it, and comes back.
#[test]
fn sp_sc_pool_works_and_destroy_frees_zones() {
    use std::sync::{mpsc, Mutex};
    const ROUNDS: u32 = 200_000;
    let zones = LocalZones::new();
    let mp = Mempool::create(
        &zones,
        "spsc",
        MempoolParams::new(SIZE, ELT)
            .flags(MempoolFlags::NO_CACHE_ALIGN | MempoolFlags::SP_PUT | MempoolFlags::SC_GET),
    )
    .unwrap();
    assert_eq!(mp.stride(), ELT as usize);
    // Objects between the getter and the putter: a get of one already out is a double hand-out.
    let out: Arc<Mutex<HashSet<Obj>>> = Arc::default();
    let (tx, rx) = mpsc::sync_channel::<(Obj, u32)>(64);
    let getter = {
        let (mp, out) = (mp.clone(), out.clone());
        std::thread::spawn(move || {
            let mut got = 0u32;
            while got < ROUNDS {
                let Some(o) = mp.get() else {
                    std::thread::yield_now();
                    continue;
                };
                assert_eq!(Mempool::from_ptr(o.as_ptr()).unwrap().name(), "spsc");
                assert!(out.lock().unwrap().insert(o), "{o:?} handed out twice");
                write_u32(o, got);
                tx.send((o, got)).unwrap();
                got += 1;
            }
            got
        })
    };
    let putter = {
        let (mp, out) = (mp.clone(), out.clone());
        std::thread::spawn(move || {
            let mut put = 0u32;
            let mut max_out = 0;
            for (o, v) in rx {
                assert_eq!(read_u32(o), v, "contents kept");
                max_out = max_out.max(out.lock().unwrap().len());
                assert!(out.lock().unwrap().remove(&o));
                mp.put(o);
                put += 1;
            }
            (put, max_out)
        })
    };
    let got = getter.join().unwrap();
    let (put, max_out) = putter.join().unwrap();
    assert_eq!((got, put), (ROUNDS, ROUNDS));
    assert!(max_out > 1, "the two threads overlapped");
    assert!(out.lock().unwrap().is_empty());
    assert!(mp.is_full());
    assert_eq!(mp.stats().violations, 0);
    assert!(mp.audit(&[], false).is_sound());
    mp.destroy(&zones).unwrap();
    assert!(zones.list().is_empty(), "{:?}", zones.list());
}

#[test]
fn strides_that_are_not_powers_of_two() {
    for (elt, priv_size, flags, stride) in [
        (24, 0, MempoolFlags::NO_CACHE_ALIGN, 24),
        (130, 0, MempoolFlags::empty(), 192),
        (100, 20, MempoolFlags::NO_CACHE_ALIGN, 120),
        (8, 0, MempoolFlags::NO_CACHE_ALIGN, 8),
    ] {
        let zones = LocalZones::new().with_lcore(Some(5));
        let mp = Mempool::create(
            &zones,
            "odd",
            MempoolParams::new(777, elt)
                .priv_size(priv_size)
                .cache_size(64)
                .flags(flags | MempoolFlags::TRACK),
        )
        .unwrap();
        assert_eq!(mp.stride(), stride);
        let mut l = mp.local(&zones);
        let mut held = Vec::new();
        while let Some(o) = l.get() {
            held.push(o);
        }
        assert_eq!(held.len(), 777);
        let idx: HashSet<u32> = held.iter().map(|o| mp.index_of(*o).unwrap()).collect();
        assert_eq!(idx.len(), 777);
        assert!(idx.iter().all(|&i| i < 777));
        for o in &held {
            assert_eq!(mp.obj(mp.index_of(*o).unwrap()), Some(*o));
            assert_eq!(
                mp.obj_from_ptr(o.as_ptr().wrapping_add(stride - 1)),
                Some(*o)
            );
        }
        assert_eq!(
            mp.index_of(mp.obj_from_ptr(held[0].as_ptr()).unwrap()),
            mp.index_of(held[0])
        );
        l.put_bulk(&held);
        assert!(mp.is_full());
        assert_eq!(mp.stats().violations, 0);
        assert!(mp.audit(&[], false).is_sound());
    }
}

/// Every bulk size from 1 to 70 through every path (a cache's fast path, refills and flushes,
/// straight to the ring, tracked or not, power-of-two and odd strides): the objects got are
/// distinct, valid and come back whole, in every order of gets and puts.
#[test]
fn every_bulk_size_through_every_path() {
    for (k, (elt, flags, cache)) in [
        (2048, MempoolFlags::empty(), 64),
        (2048, MempoolFlags::empty(), 0),
        (24, MempoolFlags::NO_CACHE_ALIGN, 32),
        (24, MempoolFlags::NO_CACHE_ALIGN | MempoolFlags::TRACK, 0),
        (130, MempoolFlags::TRACK, 64),
    ]
    .into_iter()
    .enumerate()
    {
        let zones = LocalZones::new().with_lcore(Some(2));
        let name = format!("sizes{k}");
        let n_objs = 1000;
        let mp = Mempool::create(
            &zones,
            &name,
            MempoolParams::new(n_objs, elt)
                .cache_size(cache)
                .flags(flags),
        )
        .unwrap();
        let mut l = mp.local(&zones);
        let mut held: Vec<Obj> = Vec::new();
        for n in 1..=70usize {
            // Several bulks of n in a row (drains and refills the cache), then back in bulks of
            // n, then one more round through the pool's own (ring) calls.
            for round in 0..3 {
                let mut got = Vec::new();
                for _ in 0..5 {
                    let mut out = vec![Obj::empty(); n];
                    let r = if round == 2 {
                        mp.get_bulk(&mut out)
                    } else {
                        l.get_bulk(&mut out)
                    };
                    assert_eq!(r, n, "get of {n} ({name}, round {round})");
                    got.extend_from_slice(&out);
                }
                let idx: HashSet<u32> = got
                    .iter()
                    .map(|o| mp.index_of(*o).expect("an object of the pool"))
                    .collect();
                assert_eq!(idx.len(), got.len(), "distinct objects for bulk {n}");
                held.extend_from_slice(&got);
                let idx_all: HashSet<u32> = held.iter().map(|o| mp.index_of(*o).unwrap()).collect();
                assert_eq!(idx_all.len(), held.len(), "never handed out twice");
                for chunk in held.chunks(n) {
                    if round == 1 {
                        mp.put_bulk(chunk);
                    } else {
                        l.put_bulk(chunk);
                    }
                }
                held.clear();
                assert!(mp.is_full(), "all back after bulk {n} ({name})");
            }
        }
        assert_eq!(mp.stats().violations, 0);
        assert!(mp.audit(&[], false).is_sound());
        drop(l);
        mp.destroy(&zones).unwrap();
    }
}
