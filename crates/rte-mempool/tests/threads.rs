//! Threaded stress: members (threads acting as members, each on its own lcore) get and put in
//! bulk through their caches and pass objects through a ring, while a recoverer runs all the
//! time and one member "dies"; afterwards every object is accounted for, none was handed out
//! twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rte_mempool::{Mempool, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags};
use shmconfig::{LocalZones, MemberId, MemberState};

#[allow(unsafe_code)]
mod raw {
    use std::sync::atomic::AtomicU64;
    /// The stamp word at the start of an object of `mp`.
    pub fn stamp(mp: &rte_mempool::Mempool, o: rte_mempool::Obj) -> &AtomicU64 {
        assert!(mp.index_of(o).is_some() && mp.elt_size() >= 8);
        // SAFETY: `o` is an object of `mp` (checked), 64-aligned, at least 8 bytes, in a zone
        // `mp` keeps mapped for the borrow; only atomics touch the word.
        unsafe { AtomicU64::from_ptr(o.as_ptr().cast()) }
    }
}

/// The stress tests run one at a time: each starts more spinning threads than this machine
/// (2 cores) has, and a ring producer preempted in the middle of an operation makes every
/// other one wait (as in DPDK), so running them together only measures the scheduler.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const ITERS: u32 = if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};

/// Take ownership of a stamp (0 → me); a failure means the object is held twice.
fn take(mp: &Mempool, o: Obj, me: u64, dups: &AtomicU64) {
    if raw::stamp(mp, o)
        .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        dups.fetch_add(1, Ordering::Relaxed);
    }
}

fn give(mp: &Mempool, o: Obj, me: u64, dups: &AtomicU64) {
    if raw::stamp(mp, o)
        .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        dups.fetch_add(1, Ordering::Relaxed);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[allow(clippy::too_many_arguments)]
fn member_loop(
    zones: LocalZones,
    member: u16,
    iters: u32,
    link: Option<Ring<u32>>,
    dups: Arc<AtomicU64>,
    stop_holding: bool,
) -> Vec<Obj> {
    let mp = Mempool::lookup(&zones, "stress").unwrap();
    let mut local = mp.local(&zones);
    assert!(
        mp.cache_size() == 0 || local.lcore().is_some(),
        "member {member} got its lcore's cache"
    );
    let me = member as u64 + 1;
    let mut rng = Rng(0x1234_5678 ^ (member as u64) << 20);
    let mut held: Vec<Obj> = Vec::new();
    let mut buf = vec![Obj::empty(); 48];
    for _ in 0..iters {
        let r = rng.next();
        let k = (r >> 8) as usize % 48 + 1;
        match r % 6 {
            0 | 1 => {
                if local.get_bulk(&mut buf[..k]) == k {
                    for o in &buf[..k] {
                        take(&mp, *o, me, &dups);
                    }
                    held.extend_from_slice(&buf[..k]);
                }
            }
            2 | 3 => {
                let at = held.len() - k.min(held.len());
                for o in &held[at..] {
                    give(&mp, *o, me, &dups);
                }
                local.put_bulk(&held[at..]);
                held.truncate(at);
            }
            4 => {
                if let Some(link) = &link {
                    let at = held.len() - k.min(held.len());
                    for o in &held[at..] {
                        give(&mp, *o, me, &dups);
                    }
                    if local.send(link, &held[at..]) == held.len() - at {
                        held.truncate(at);
                    } else {
                        for o in &held[at..] {
                            take(&mp, *o, me, &dups);
                        }
                    }
                }
            }
            _ => {
                if let Some(link) = &link {
                    let n = local.receive(link, &mut buf[..k]);
                    for o in &buf[..n] {
                        take(&mp, *o, me, &dups);
                    }
                    held.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    if stop_holding {
        // "dies" holding its objects and its cache
        for o in &held {
            give(&mp, *o, me, &dups);
        }
        return held;
    }
    for o in &held {
        give(&mp, *o, me, &dups);
    }
    local.put_bulk(&held);
    Vec::new()
}

fn stress(tracked: bool, cache: u32) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let zones = LocalZones::new();
    let flags = if tracked {
        MempoolFlags::TRACK
    } else {
        MempoolFlags::empty()
    };
    let mp = Mempool::create(
        &zones,
        "stress",
        MempoolParams::new(4000, 64).cache_size(cache).flags(flags),
    )
    .unwrap();
    let link = Ring::<u32>::create(&zones, "link", 4000, RingFlags::EXACT_SZ).unwrap();
    let dups = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // a recoverer that runs all the time: it must never touch a live member's cache or objects
    let rec = {
        let (zones, stop) = (zones.clone(), stop.clone());
        std::thread::spawn(move || {
            let mp = Mempool::lookup(&zones, "stress").unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += mp.recover_dead_members().reclaimed;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            n
        })
    };
    let members: Vec<_> = (1..=3u16)
        .map(|m| {
            let z = zones.as_member(MemberId(m)).with_lcore(Some(m as u32));
            let link = tracked.then(|| link.clone());
            let dups = dups.clone();
            std::thread::spawn(move || member_loop(z, m, ITERS, link, dups, m == 3))
        })
        .collect();
    let mut dead_held = Vec::new();
    for (i, h) in members.into_iter().enumerate() {
        let held = h.join().unwrap();
        if i == 2 {
            dead_held = held;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        rec.join().unwrap(),
        0,
        "nothing reclaimed while every member lived"
    );
    assert_eq!(dups.load(Ordering::Relaxed), 0, "no object held twice");
    // member 3 dies holding objects and a cache
    zones.set_member_state(MemberId(3), MemberState::Dead);
    let r = mp.recover_dead_members();
    if cache > 0 {
        assert_eq!(r.caches_flushed, 1, "{r}");
    }
    let audit = mp.audit(&[&link], false);
    assert!(audit.is_sound(), "{audit}");
    assert!(audit.orphans.is_empty(), "{audit}");
    if tracked {
        assert_eq!(r.reclaimed as usize, dead_held.len(), "{r}");
        assert_eq!(audit.held_by_live, 0, "{audit}");
    } else {
        assert_eq!(audit.out_untracked as usize, dead_held.len(), "{audit}");
    }
    assert_eq!(
        mp.avail_count() as usize
            + link.count() as usize
            + if tracked { 0 } else { dead_held.len() },
        4000
    );
    assert_eq!(mp.stats().violations, 0);
}

#[test]
fn stress_cache_tracked_with_transfers_and_a_death() {
    stress(true, 64);
}

#[test]
fn stress_cache_untracked() {
    stress(false, 256);
}

#[test]
fn stress_no_cache_tracked() {
    stress(true, 0);
}

/// The lcore's new owner gets and puts while a recoverer flushes the dead owner's cache, many
/// times over (the loom model's race, at full speed).
#[test]
fn new_owner_races_the_flush_of_a_dead_cache() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let zones = LocalZones::new();
    let mp = Mempool::create(&zones, "race", MempoolParams::new(2000, 64).cache_size(100)).unwrap();
    for round in 0..200u16 {
        let dead = MemberId(100 + round);
        let z = zones.as_member(dead).with_lcore(Some(7));
        let p = Mempool::lookup(&z, "race").unwrap();
        let mut l = p.local(&z);
        let o = l.get().unwrap();
        l.put(o);
        assert!(mp.cache_count(7) > 0);
        // the new member opens the pool while the old one still lives (no recovery due yet)
        let newz = zones.as_member(MemberId(1000 + round)).with_lcore(Some(7));
        let np = Mempool::lookup(&newz, "race").unwrap();
        zones.set_member_state(dead, MemberState::Dead);
        let cleaner = {
            let mp = mp.clone();
            std::thread::spawn(move || mp.recover_dead_members())
        };
        let mut nl = np.local(&newz);
        let mut objs = vec![Obj::empty(); 30];
        assert_eq!(nl.get_bulk(&mut objs), 30);
        nl.put_bulk(&objs);
        cleaner.join().unwrap();
        assert!(mp.is_full(), "round {round}: {}", mp.avail_count());
        let a = mp.audit(&[], false);
        assert!(a.is_sound() && a.duplicates == 0, "{a}");
        zones.set_member_state(MemberId(1000 + round), MemberState::Dead);
        mp.recover_dead_members();
    }
}
