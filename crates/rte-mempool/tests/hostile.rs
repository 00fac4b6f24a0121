//! What a peer process or a QEMU guest may write into a pool's shared memory (its ring of free
//! objects, the per-lcore caches, the header) never makes this process hand out an address
//! outside the pool, panic, or use a header other than the one `create` wrote; and bulk gets of
//! any size work, all or nothing.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rte_mempool::{Mempool, MempoolError, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags};
use shmconfig::{
    Liveness, LocalZones, MemberId, Zone, ZoneError, ZoneInfo, ZoneKind, ZoneRequest, Zones,
};

#[allow(unsafe_code)]
mod rawio {
    use std::ptr::NonNull;
    use std::sync::Arc;

    use shmconfig::Zone;

    /// Write `v` at byte `off` of `zone`, as a peer or a guest writing shared memory would.
    pub fn write<T: Copy>(zone: &Zone, off: usize, v: T) {
        assert!(off + size_of::<T>() <= zone.len());
        // SAFETY: inside the zone (asserted), which `zone` keeps mapped; unaligned write of
        // plain bytes; nobody holds a reference into shared memory.
        unsafe { zone.as_ptr().add(off).cast::<T>().write_unaligned(v) }
    }

    /// Read a `T` at byte `off` of `zone`.
    pub fn read<T: Copy>(zone: &Zone, off: usize) -> T {
        assert!(off + size_of::<T>() <= zone.len());
        // SAFETY: inside the zone (asserted); any bit pattern is a valid integer.
        unsafe { zone.as_ptr().add(off).cast::<T>().read_unaligned() }
    }

    /// `zone` seen `by` bytes further on (as a guest's metadata may place a zone).
    pub fn shifted(zone: Zone, by: usize) -> Zone {
        assert!(by < zone.len());
        let (name, kind, len, offset) = (
            zone.name().to_owned(),
            zone.kind(),
            zone.len(),
            zone.offset(),
        );
        let base = NonNull::new(zone.as_ptr().wrapping_add(by)).unwrap();
        // SAFETY: base..base+(len-by) lies inside `zone`, which the keep-alive (the zone itself)
        // keeps mapped; nobody takes references into it.
        unsafe { Zone::from_raw_parts(&name, kind, base, len - by, offset, Arc::new(zone)) }
    }
}

// Byte offsets of the header fields (`layout::Meta`) and of the caches.
const N: usize = 24;
const ELT_SIZE: usize = 28;
const STRIDE: usize = 36;
const CACHE_SIZE: usize = 40;
const FLAGS: usize = 44;
const OBJECTS_OFFSET: usize = 48;
const NAME_LEN: usize = 56;
const NAME: usize = 64;
const HEADER_LEN: usize = 12;
const META_LEN: usize = 96;
const CACHES: usize = 512;
const CACHE_SLOT: usize = 64 + 8 * 1024;

fn header(zones: &impl Zones, name: &str) -> Zone {
    zones.lookup(&Mempool::zone_name(name)).unwrap()
}

/// Write `v` into entry `k` of lcore `lcore`'s cache (a byte offset from the first object).
fn poison_cache(zones: &impl Zones, name: &str, lcore: usize, k: usize, v: u64) {
    let off = CACHES + lcore * CACHE_SLOT + 64 + 8 * k;
    rawio::write(&header(zones, name), off, v);
}

/// Handles that name no object of `mp`: the first past its last object, and far ones.
fn bad_handles(mp: &Mempool) -> [u32; 3] {
    let s = mp.stride();
    let units = (s >> s.trailing_zeros()) as u32;
    [(mp.size() - 1) * units + 1, 0xFFFF_FFF0, u32::MAX]
}

fn assert_in_pool(mp: &Mempool, objs: &[Obj]) {
    for o in objs {
        assert!(
            mp.index_of(*o).is_some(),
            "{o:?} is not an object of the pool (first {:?}, stride {})",
            mp.obj(0).unwrap(),
            mp.stride()
        );
    }
}

/// A handle a peer or a guest enqueued in the free ring is never handed out, through every get
/// path (the ring straight, a cache refill, tracked); it is counted as a violation, and every
/// real object can still be had.
#[test]
fn a_bad_handle_in_the_free_ring_is_never_handed_out() {
    for (k, (cache, flags, elt)) in [
        (0, MempoolFlags::empty(), 64),
        (0, MempoolFlags::NO_CACHE_ALIGN, 24),
        (16, MempoolFlags::empty(), 64),
        (16, MempoolFlags::TRACK | MempoolFlags::NO_CACHE_ALIGN, 24),
        (0, MempoolFlags::TRACK, 64),
    ]
    .into_iter()
    .enumerate()
    {
        let zones = LocalZones::new().with_lcore(Some(1));
        let n = 64u32;
        let name = format!("ring{k}");
        let mp = Mempool::create(
            &zones,
            &name,
            MempoolParams::new(n, elt).cache_size(cache).flags(flags),
        )
        .unwrap();
        for bad in bad_handles(&mp) {
            let held = mp.get().unwrap();
            mp.ring().enqueue(bad).unwrap();
            let before = mp.stats().violations;
            let mut l = mp.local(&zones);
            let mut got = Vec::new();
            for t in 0..2 * n {
                let o = if t % 2 == 0 { l.get() } else { mp.get() };
                got.extend(o);
            }
            assert_in_pool(&mp, &got);
            let distinct: HashSet<Obj> = got.iter().copied().collect();
            assert_eq!(distinct.len(), got.len(), "{name}: handed out twice");
            assert_eq!(
                got.len(),
                n as usize - 1,
                "{name}: every real object can be had"
            );
            assert_eq!(mp.stats().violations, before + 1, "{name}: handle {bad:#x}");
            l.put_bulk(&got);
            l.put(held);
            assert!(mp.is_full(), "{name}");
        }
    }
}

/// A bulk get whose ring claim holds a bad handle (first, middle or last, for every way the
/// claim is converted) takes nothing: the claim's real objects go back to the ring.
#[test]
fn a_bad_handle_in_a_bulk_claim_fails_the_get_and_the_rest_go_back() {
    for (k, (flags, elt, local)) in [
        (MempoolFlags::empty(), 64, false),
        (MempoolFlags::NO_CACHE_ALIGN, 24, true),
        (MempoolFlags::TRACK, 64, true),
    ]
    .into_iter()
    .enumerate()
    {
        let zones = LocalZones::new();
        let n = 64u32;
        let name = format!("bulk{k}");
        let mp = Mempool::create(&zones, &name, MempoolParams::new(n, elt).flags(flags)).unwrap();
        let mut l = mp.local(&zones);
        for size in [2usize, 3, 4, 5, 7, 8, 9, 16, 33] {
            for pos in [0, size / 2, size - 1] {
                for bad in bad_handles(&mp) {
                    let mut all = vec![0u32; n as usize];
                    assert_eq!(mp.ring().dequeue_bulk(&mut all), n as usize);
                    let mut claim = all[..size - 1].to_vec();
                    claim.insert(pos, bad);
                    assert_eq!(mp.ring().enqueue_bulk(&claim), size);
                    let before = mp.stats().violations;
                    let mut out = vec![Obj::empty(); size];
                    let r = if local {
                        l.get_bulk(&mut out)
                    } else {
                        mp.get_bulk(&mut out)
                    };
                    let what = format!("{name}: bulk {size}, bad {bad:#x} at {pos}");
                    assert_eq!(r, 0, "{what}");
                    assert!(
                        out.iter()
                            .all(|o| *o == Obj::empty() || mp.index_of(*o).is_some()),
                        "{what}: {out:?}"
                    );
                    assert_eq!(mp.stats().violations, before + 1, "{what}");
                    assert_eq!(
                        mp.ring().count(),
                        size as u32 - 1,
                        "{what}: the rest went back"
                    );
                    assert_eq!(
                        mp.ring().enqueue_bulk(&all[size - 1..]),
                        all.len() - size + 1
                    );
                    assert!(mp.is_full(), "{what}");
                }
            }
        }
        let mut out = vec![Obj::empty(); n as usize];
        assert_eq!(mp.get_bulk(&mut out), n as usize);
        assert_in_pool(&mp, &out);
        mp.put_bulk(&out);
    }
}

/// A per-lcore cache is shared memory too: offsets a peer writes into it that name no object
/// (just past the last object, far away, with the top bit set) are never handed out, through
/// the inlined fast path (untracked) and the out-of-line one (tracked), bulk and single gets.
#[test]
fn a_cache_a_peer_wrote_into_never_hands_out_its_garbage() {
    for (k, flags) in [MempoolFlags::empty(), MempoolFlags::TRACK]
        .into_iter()
        .enumerate()
    {
        let zones = LocalZones::new().with_lcore(Some(2));
        let n = 256u32;
        let name = format!("cache{k}");
        let mp = Mempool::create(
            &zones,
            &name,
            MempoolParams::new(n, 64).cache_size(32).flags(flags),
        )
        .unwrap();
        let mut l = mp.local(&zones);
        let first = l.get().unwrap();
        let len = mp.cache_count(2) as usize;
        assert_eq!(len, 32);
        let end = n as u64 * mp.stride() as u64;
        poison_cache(&zones, &name, 2, len - 1, 1 << 45);
        poison_cache(&zones, &name, 2, len - 2, u64::MAX);
        poison_cache(&zones, &name, 2, 0, end);
        let mut out = [Obj::empty(); 2];
        assert_eq!(l.get_bulk(&mut out), 0, "{name}: the top two are garbage");
        assert!(
            out.iter()
                .all(|o| *o == Obj::empty() || mp.index_of(*o).is_some()),
            "{name}: {out:?}"
        );
        assert_eq!(mp.stats().violations, 3, "{name}: all three dropped");
        let mut got = vec![first];
        for _ in 0..2 * n {
            got.extend(l.get());
        }
        assert_in_pool(&mp, &got);
        assert_eq!(got.len(), n as usize - 3, "{name}: the rest can be had");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len());
        l.put_bulk(&got);
        // single gets, and a bulk served from the middle of the cache
        let o = l.get().unwrap();
        l.put(o);
        let len = mp.cache_count(2) as usize;
        assert!(len >= 8, "{name}: {len}");
        poison_cache(&zones, &name, 2, len - 1, end + 64);
        assert_eq!(l.get(), None, "{name}");
        assert_eq!(mp.stats().violations, 4);
        let len = mp.cache_count(2) as usize;
        poison_cache(&zones, &name, 2, len - 5, u64::MAX - 63);
        let mut out = [Obj::empty(); 7];
        assert_eq!(l.get_bulk(&mut out), 0, "{name}");
        assert_eq!(mp.stats().violations, 5);
        let mut out = [Obj::empty(); 7];
        assert_eq!(l.get_bulk(&mut out), 7, "{name}");
        assert_in_pool(&mp, &out);
        l.put_bulk(&out);
        // Bulks above 8 (converted four objects an instruction where the CPU has AVX2, the
        // last step overlapping), poisoned at each place of the get: first, inside a step,
        // in the overlapping last step, last. Puts of above 8 store offsets the same way.
        let mut violations = mp.stats().violations;
        for (n, at) in [(13, 0), (13, 5), (13, 10), (13, 12), (9, 8), (32, 17)] {
            let mut refill = vec![Obj::empty(); 32];
            assert_eq!(l.get_bulk(&mut refill), 32, "{name}");
            l.put_bulk(&refill);
            let len = mp.cache_count(2) as usize;
            assert!(len >= n, "{name}: {len}");
            poison_cache(&zones, &name, 2, len - n + at, end + 3 * 64);
            let mut out = vec![Obj::empty(); n];
            assert_eq!(l.get_bulk(&mut out), 0, "{name}: n {n}, poisoned at {at}");
            assert!(out.iter().all(|o| *o == Obj::empty()), "{name}: {out:?}");
            violations += 1;
            assert_eq!(mp.stats().violations, violations, "{name}: n {n} at {at}");
            let mut out = vec![Obj::empty(); n];
            assert_eq!(l.get_bulk(&mut out), n, "{name}: n {n}");
            assert_in_pool(&mp, &out);
            assert_eq!(out.iter().collect::<HashSet<_>>().len(), n);
            l.put_bulk(&out);
        }
    }
}

/// A pool of 8 objects of 64 bytes named "probe", with one header field overwritten.
fn probe_with(
    off: usize,
    write: impl FnOnce(&Zone, usize),
) -> (LocalZones, Result<Mempool, MempoolError>) {
    let zones = LocalZones::new();
    Mempool::create(&zones, "probe", MempoolParams::new(8, 64)).unwrap();
    write(&header(&zones, "probe"), off);
    let r = catch_unwind(AssertUnwindSafe(|| Mempool::lookup(&zones, "probe")))
        .expect("lookup must not panic on a bad header");
    (zones, r)
}

/// Something written into a header zone at a byte offset.
type Overwrite = Box<dyn Fn(&Zone, usize)>;

/// Each header field a peer or a guest may overwrite is checked by lookup against what create
/// writes, and refused with an error naming the pool, the field, the value and what to do.
#[test]
fn lookup_refuses_each_corrupt_header_field() {
    let cases: Vec<(&str, usize, Overwrite)> = vec![
        ("stride", STRIDE, Box::new(|z, o| rawio::write(z, o, 0u32))),
        ("stride", STRIDE, Box::new(|z, o| rawio::write(z, o, 96u32))),
        (
            "stride",
            ELT_SIZE,
            Box::new(|z, o| rawio::write(z, o, 1u32 << 20)),
        ),
        (
            "cache size",
            CACHE_SIZE,
            Box::new(|z, o| rawio::write(z, o, 4000u32)),
        ),
        (
            "cache size",
            CACHE_SIZE,
            Box::new(|z, o| rawio::write(z, o, 6u32)),
        ),
        (
            "objects offset",
            OBJECTS_OFFSET,
            Box::new(|z, o| rawio::write(z, o, u64::MAX - 63)),
        ),
        (
            "objects offset",
            OBJECTS_OFFSET,
            Box::new(|z, o| rawio::write(z, o, 64u64)),
        ),
        (
            "object count n",
            N,
            Box::new(|z, o| rawio::write(z, o, 0u32)),
        ),
        (
            "object count n",
            N,
            Box::new(|z, o| rawio::write(z, o, u32::MAX)),
        ),
        (
            "ring capacity",
            N,
            Box::new(|z, o| rawio::write(z, o, 7u32)),
        ),
        ("zone length", N, Box::new(|z, o| rawio::write(z, o, 9u32))),
        ("flags", FLAGS, Box::new(|z, o| rawio::write(z, o, 0x80u32))),
        ("name", NAME, Box::new(|z, o| rawio::write(z, o, *b"other"))),
        (
            "name",
            NAME_LEN,
            Box::new(|z, o| rawio::write(z, o, 200u32)),
        ),
        (
            "header length",
            HEADER_LEN,
            Box::new(|z, o| rawio::write(z, o, 0u32)),
        ),
        (
            "elt_size/priv_size",
            ELT_SIZE,
            Box::new(|z, o| rawio::write(z, o, u32::MAX)),
        ),
    ];
    for (field, off, write) in cases {
        let (_zones, r) = probe_with(off, write);
        match r {
            Err(e @ MempoolError::BadHeader { field: f, .. }) => {
                assert_eq!(f, field, "{e}");
                let msg = e.to_string();
                assert!(msg.contains("\"probe\""), "names the pool: {msg}");
                assert!(msg.contains(field), "names the field: {msg}");
                assert!(msg.contains("create it again"), "says what to do: {msg}");
            }
            other => panic!("{field} at {off}: {other:?}"),
        }
    }
}

/// Whatever value any word of the header holds, lookup does not panic, and a pool it accepts
/// hands out only objects of the pool create made.
#[test]
fn lookup_never_panics_and_a_pool_it_accepts_is_the_one_created() {
    for (k, params) in [
        MempoolParams::new(8, 64),
        MempoolParams::new(100, 24)
            .cache_size(16)
            .flags(MempoolFlags::TRACK | MempoolFlags::NO_CACHE_ALIGN),
    ]
    .into_iter()
    .enumerate()
    {
        let zones = LocalZones::new();
        let name = format!("fuzz{k}");
        let mp = Mempool::create(&zones, &name, params).unwrap();
        let real: HashSet<Obj> = mp.iter().collect();
        let h = header(&zones, &name);
        let mut accepted = 0;
        for off in (0..META_LEN).step_by(4) {
            let orig: u32 = rawio::read(&h, off);
            let mut values = vec![0, 1, 3, 8, 24, 63, 64, 96, 4000, 1 << 20, 0x8000_0000];
            values.extend([
                0xFFFF_FFC0,
                u32::MAX,
                orig ^ 1,
                orig.wrapping_add(64),
                orig >> 1,
            ]);
            for v in values {
                rawio::write(&h, off, v);
                let r = catch_unwind(AssertUnwindSafe(|| Mempool::lookup(&zones, &name)));
                rawio::write(&h, off, orig);
                let r = r.unwrap_or_else(|_| panic!("lookup panicked: word {off} = {v:#x}"));
                let Ok(p) = r else { continue };
                accepted += 1;
                let what = format!("{name}: word {off} = {v:#x}");
                assert_eq!(p.size(), params.n, "{what}");
                assert_eq!(p.stride(), mp.stride(), "{what}");
                // a cache size create would accept (the header does not say which one it got)
                assert!(p.cache_size() * 3 / 2 <= params.n, "{what}");
                assert_eq!(p.cache_size() == 0, params.cache_size == 0, "{what}");
                assert!(p.iter().all(|o| real.contains(&o)), "{what}");
                let mut all = vec![Obj::empty(); params.n as usize];
                assert_eq!(p.get_bulk(&mut all), all.len(), "{what}");
                assert!(all.iter().all(|o| real.contains(o)), "{what}");
                p.put_bulk(&all);
                // and through this lcore's cache
                let mut l = p.local(&zones.with_lcore(Some(1)));
                for b in [1, 7, params.n as usize] {
                    let mut some = vec![Obj::empty(); b];
                    assert_eq!(l.get_bulk(&mut some), b, "{what}");
                    assert!(some.iter().all(|o| real.contains(o)), "{what}");
                    l.put_bulk(&some);
                }
                l.flush();
            }
        }
        assert!(
            accepted > 0,
            "values that change nothing that matters are accepted"
        );
        assert!(mp.is_full());
    }
}

/// `LocalZones` seen through a guest's eyes, oddly: object zones are reserved 64 bytes longer
/// and looked up 8 bytes further on (so misaligned), and zones above `limit` bytes are refused.
struct Odd {
    zones: LocalZones,
    shift_objects: bool,
    limit: usize,
}

impl Zones for Odd {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        if req.len > self.limit {
            return Err(ZoneError::NoMemory {
                name: req.name.into(),
                len: req.len,
                free: self.limit,
            });
        }
        let mut req = req.clone();
        if req.kind == ZoneKind::MempoolObjects {
            req.len += 64;
        }
        self.zones.reserve(&req)
    }
    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        let z = self.zones.lookup(name)?;
        Ok(
            if self.shift_objects && z.kind() == ZoneKind::MempoolObjects {
                rawio::shifted(z, 8)
            } else {
                z
            },
        )
    }
    fn free(&self, name: &str) -> Result<(), ZoneError> {
        self.zones.free(name)
    }
    fn list(&self) -> Vec<ZoneInfo> {
        self.zones.list()
    }
    fn member(&self) -> MemberId {
        self.zones.member()
    }
    fn liveness(&self) -> Arc<dyn Liveness> {
        self.zones.liveness()
    }
}

/// An objects zone that is not 64-byte aligned (a guest's metadata may place a zone anywhere)
/// is refused with an error, not a panic.
#[test]
fn lookup_refuses_a_misaligned_objects_zone() {
    for flags in [MempoolFlags::empty(), MempoolFlags::TRACK] {
        let zones = Odd {
            zones: LocalZones::new(),
            shift_objects: false,
            limit: usize::MAX,
        };
        Mempool::create(&zones, "mis", MempoolParams::new(8, 64).flags(flags)).unwrap();
        let odd = Odd {
            shift_objects: true,
            ..zones
        };
        let r = catch_unwind(AssertUnwindSafe(|| Mempool::lookup(&odd, "mis")))
            .expect("lookup must not panic on a misaligned zone");
        match r {
            Err(MempoolError::BadHeader { field, zone, .. }) => {
                assert_eq!((field, zone.as_str()), ("zone alignment", "MP_mis_0"));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Objects whose stride does not fit in 32 bits are refused before any zone is reserved (the
/// header keeps the stride in 32 bits: it used to be stored as 0).
#[test]
fn create_refuses_a_stride_above_32_bits() {
    let zones = Odd {
        zones: LocalZones::new(),
        shift_objects: false,
        limit: 1 << 30,
    };
    for (elt, priv_size) in [(u32::MAX, 0), (u32::MAX - 63, 64), (u32::MAX, u32::MAX)] {
        let e = Mempool::create(
            &zones,
            "wide",
            MempoolParams::new(1, elt).priv_size(priv_size),
        );
        assert!(matches!(e, Err(MempoolError::TooLarge { .. })), "{e:?}");
    }
    assert!(zones.list().is_empty(), "{:?}", zones.list());
}

/// Gets of more objects than one ring operation moves (`rte_ring::MAX_OP`) work, all or
/// nothing, straight from the ring, through a `LocalPool` with or without a cache, tracked or
/// not; a bad handle in a later part of such a get gives back the parts already taken.
#[test]
fn bulk_gets_above_the_ring_limit_work_all_or_nothing() {
    const MAX_OP: usize = rte_ring::MAX_OP;
    let n = 2 * MAX_OP as u32 + 100;
    for (k, (cache, flags)) in [
        (0, MempoolFlags::empty()),
        (256, MempoolFlags::empty()),
        (256, MempoolFlags::TRACK),
    ]
    .into_iter()
    .enumerate()
    {
        let zones = LocalZones::new().with_lcore(Some(3));
        let name = format!("large{k}");
        let mp = Mempool::create(
            &zones,
            &name,
            MempoolParams::new(n, 8)
                .cache_size(cache)
                .flags(flags | MempoolFlags::NO_CACHE_ALIGN),
        )
        .unwrap();
        let mut l = mp.local(&zones);
        for size in [MAX_OP, MAX_OP + 1, 2 * MAX_OP + 5, n as usize] {
            for local in [false, true] {
                let what = format!("{name}: {size}, local {local}");
                let mut out = vec![Obj::empty(); size];
                let r = if local {
                    l.get_bulk(&mut out)
                } else {
                    mp.get_bulk(&mut out)
                };
                assert_eq!(r, size, "{what}");
                let idx: HashSet<u32> = out.iter().map(|o| mp.index_of(*o).unwrap()).collect();
                assert_eq!(idx.len(), size, "{what}: distinct");
                assert_eq!(mp.avail_count(), n - size as u32, "{what}");
                // all or nothing: one more than what is left takes nothing
                let mut more = vec![Obj::empty(); n as usize - size + 1];
                assert_eq!(mp.get_bulk(&mut more), 0, "{what}");
                assert_eq!(mp.avail_count(), n - size as u32, "{what}: all given back");
                if local {
                    l.put_bulk(&out);
                } else {
                    mp.put_bulk(&out);
                }
                assert!(mp.is_full(), "{what}");
            }
        }
        let mut all = vec![Obj::empty(); n as usize];
        assert_eq!(mp.get_bulk(&mut all), n as usize);
        mp.put_bulk(&all);
        assert_eq!(mp.stats().violations, 0);
        drop(l);
        assert!(mp.audit(&[], false).is_sound());
    }
    // a bad handle in the second part: the first part goes back, nothing is taken
    let zones = LocalZones::new();
    let mp = Mempool::create(
        &zones,
        "large_bad",
        MempoolParams::new(n, 8).flags(MempoolFlags::NO_CACHE_ALIGN),
    )
    .unwrap();
    let mut hs = vec![0u32; n as usize];
    assert_eq!(mp.ring().dequeue_burst(&mut hs), n as usize);
    hs[MAX_OP + 10] = u32::MAX;
    assert_eq!(mp.ring().enqueue_burst(&hs), n as usize);
    let mut out = vec![Obj::empty(); n as usize];
    assert_eq!(mp.get_bulk(&mut out), 0);
    assert_eq!(mp.stats().violations, 1);
    assert_eq!(
        mp.avail_count(),
        n - 1,
        "everything but the bad handle is back"
    );
    let mut out = vec![Obj::empty(); n as usize - 1];
    assert_eq!(mp.get_bulk(&mut out), out.len());
    assert_in_pool(&mp, &out);
}

/// An index a peer wrote into a transfer ring that names no object is dropped: `receive`
/// returns only real objects, at the front of `out`, never a slot it did not fill.
#[test]
fn receive_returns_only_the_objects_it_received() {
    for flags in [MempoolFlags::empty(), MempoolFlags::TRACK] {
        let zones = LocalZones::new();
        let mp = Mempool::create(&zones, "recv", MempoolParams::new(16, 64).flags(flags)).unwrap();
        let link = Ring::<u32>::create(&zones, "link", 16, RingFlags::empty()).unwrap();
        let mut objs = [Obj::empty(); 3];
        assert_eq!(mp.get_bulk(&mut objs), 3);
        assert_eq!(mp.send(&link, &objs[..2]), 2);
        assert_eq!(link.enqueue(999), Ok(()), "a peer's garbage");
        assert_eq!(mp.send(&link, &objs[2..]), 1);
        let mut out = [Obj::empty(); 8];
        let mut got = Vec::new();
        for _ in 0..4 {
            let r = mp.receive(&link, &mut out);
            assert_in_pool(&mp, &out[..r]);
            got.extend_from_slice(&out[..r]);
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got.iter().collect::<HashSet<_>>(),
            objs.iter().collect::<HashSet<_>>()
        );
        assert_eq!(mp.stats().violations, 1);
        mp.put_bulk(&got);
        assert!(mp.is_full());
    }
}

/// A cache's owner word a peer set to a lock held by a live member (here, this one) does not
/// make `local` wait forever: after a while it does without the cache.
#[test]
fn a_cache_locked_for_ever_is_given_up() {
    let zones = LocalZones::new().with_lcore(Some(4));
    let mp = Mempool::create(&zones, "locked", MempoolParams::new(64, 64).cache_size(8)).unwrap();
    let lock = 3u64 << 62 | u64::from(std::process::id());
    rawio::write(&header(&zones, "locked"), CACHES + 4 * CACHE_SLOT, lock);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = mp.local(&zones);
        let lcore = l.lcore();
        let o = l.get();
        tx.send((lcore, o.is_some())).unwrap();
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("local() returned");
    assert_eq!(r, (None, true), "no cache, gets still work");
}
