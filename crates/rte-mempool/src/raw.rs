//! The unsafe code of `rte-mempool`, kept in one place: views of a pool's zones as its header,
//! counters, caches and owner words.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use shmconfig::Zone;

use crate::layout::{
    CacheSlot, Counters, Meta, CACHES_OFFSET, CACHE_OBJS, CACHE_SLOT_LEN, COUNTERS_OFFSET,
};
use crate::obj::{Conv, Obj};

/// A pool's shared memory as mapped in this process. The zones it points into are kept alive
/// by the [`Zone`] handles stored next to it.
#[derive(Debug)]
pub(crate) struct PoolMem {
    counters: NonNull<Counters>,
    caches: Option<NonNull<CacheSlot>>,
    ncaches: usize,
    owners: Option<NonNull<AtomicU64>>,
    nobjs: usize,
    _header: Zone,
    _objects: Zone,
}

// SAFETY: `PoolMem` is pointers into zones it keeps alive (Zone is Send + Sync); everything it
// hands out is made of atomics, so sharing it between threads is sound.
unsafe impl Send for PoolMem {}
// SAFETY: as for `Send`: all access goes through atomics.
unsafe impl Sync for PoolMem {}

/// Bytes the header zone needs for `ncaches` caches.
pub(crate) fn header_len(ncaches: usize) -> usize {
    CACHES_OFFSET + ncaches * CACHE_SLOT_LEN
}

impl PoolMem {
    /// A view of `header` (with `ncaches` caches) and `objects` (with `nobjs` owner words at its
    /// start when `tracked`). The caller checked both zones are long enough and 64-aligned.
    pub(crate) fn new(
        header: Zone,
        objects: Zone,
        ncaches: usize,
        nobjs: usize,
        tracked: bool,
    ) -> Self {
        assert!(header.len() >= header_len(ncaches) && header.as_ptr() as usize % 64 == 0);
        assert!(!tracked || objects.len() >= nobjs * 8);
        assert!(objects.as_ptr() as usize % 64 == 0);
        // SAFETY: the header zone is at least CACHES_OFFSET bytes (checked), so the counters lie
        // inside it; zones are 64-aligned (checked), as `Counters` requires.
        let counters = unsafe { NonNull::new_unchecked(header.as_ptr().add(COUNTERS_OFFSET)) };
        let caches = (ncaches > 0).then(|| {
            // SAFETY: `ncaches` slots fit in the zone (checked above) after CACHES_OFFSET.
            unsafe { NonNull::new_unchecked(header.as_ptr().add(CACHES_OFFSET)) }.cast()
        });
        let owners = tracked.then(|| {
            // SAFETY: the zone pointer is non-null; the owner words start the object zone.
            unsafe { NonNull::new_unchecked(objects.as_ptr()) }.cast()
        });
        Self {
            counters: counters.cast(),
            caches,
            ncaches,
            owners,
            nobjs,
            _header: header,
            _objects: objects,
        }
    }

    /// The shared counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> &Counters {
        // SAFETY: points inside the header zone, kept alive by `self`; zeroed memory is a valid
        // `Counters` (atomics only), and it is only accessed through atomics.
        unsafe { self.counters.as_ref() }
    }

    /// Cache slot `i` (`i < ncaches`; none when the pool has no cache).
    #[inline(always)]
    pub(crate) fn cache(&self, i: usize) -> Option<&CacheSlot> {
        let base = self.caches?;
        if i >= self.ncaches {
            return None;
        }
        // SAFETY: slot `i` lies inside the header zone (i < ncaches, size checked at `new`);
        // a zeroed slot is valid (atomics only) and it is only accessed through atomics.
        Some(unsafe { base.add(i).as_ref() })
    }

    /// Number of cache slots.
    pub(crate) fn ncaches(&self) -> usize {
        self.ncaches
    }

    /// Owner word of object `i` (tracked pools only, `i < nobjs`).
    #[inline(always)]
    pub(crate) fn owner(&self, i: u32) -> Option<&AtomicU64> {
        let base = self.owners?;
        if i as usize >= self.nobjs {
            return None;
        }
        // SAFETY: word `i` lies in the object zone (nobjs words checked at `new`), 8-aligned
        // (zone 64-aligned); accessed only atomically.
        Some(unsafe { base.add(i as usize).as_ref() })
    }
}

/// Read the header of a zone once its creator published it (the caller checked `ready`).
pub(crate) fn read_meta(zone: &Zone) -> Option<Meta> {
    if zone.len() < CACHES_OFFSET || zone.as_ptr() as usize % 64 != 0 {
        return None;
    }
    // SAFETY: `Meta` is 256 plain bytes at the aligned start of the zone (length checked); its
    // creator wrote them before storing `ready` with release ordering, which the caller read
    // with acquire ordering, and no one writes them afterwards. Any bit pattern is valid.
    Some(unsafe { zone.as_ptr().cast::<Meta>().read_volatile() })
}

/// The `ready` word of a header zone (the first counter).
pub(crate) fn ready_word(zone: &Zone) -> Option<&std::sync::atomic::AtomicU32> {
    if zone.len() < CACHES_OFFSET || zone.as_ptr() as usize % 64 != 0 {
        return None;
    }
    // SAFETY: COUNTERS_OFFSET + 4 ≤ zone length (checked), 4-aligned; accessed atomically only;
    // the borrow is tied to `zone`, which keeps the mapping alive.
    Some(unsafe {
        std::sync::atomic::AtomicU32::from_ptr(zone.as_ptr().add(COUNTERS_OFFSET).cast())
    })
}

/// Write the header into a zone this caller has just reserved (no one reads it before `ready`).
pub(crate) fn write_meta(zone: &Zone, meta: &Meta) {
    assert!(zone.len() >= CACHES_OFFSET && zone.as_ptr() as usize % 64 == 0);
    // SAFETY: in bounds and aligned (checked); the zone was just reserved by us and is not
    // published (ready is 0), so no one else reads or writes these bytes.
    unsafe { zone.as_ptr().cast::<Meta>().write_volatile(*meta) };
}

/// The address of byte `off` of `zone`, exposed so that object handles can turn it back into a
/// pointer ([`std::ptr::with_exposed_provenance_mut`]).
pub(crate) fn exposed_addr(zone: &Zone, off: usize) -> usize {
    assert!(off <= zone.len());
    zone.as_ptr().wrapping_add(off).expose_provenance()
}

/// The cache slot `p` points to, which [`PoolMem::cache`] gave out for `mem`.
#[inline(always)]
pub(crate) fn slot_ref(p: NonNull<CacheSlot>, mem: &PoolMem) -> &CacheSlot {
    debug_assert!(mem.caches.is_some_and(
        |b| p.as_ptr() >= b.as_ptr() && p.as_ptr() < b.as_ptr().wrapping_add(mem.ncaches)
    ));
    // SAFETY: `p` came from `mem.cache(i)` of the same pool (callers keep the pool alongside
    // the pointer), so it points to a slot inside the header zone `mem` keeps mapped; slots are
    // atomics only. The borrow is tied to `mem`.
    unsafe { p.as_ref() }
}

// ----- copies in and out of a cache -----
//
// A cache's array is touched by one thread at a time: the thread running as its lcore (the
// group gives an lcore to one live member, and `LocalPool` is neither Send nor Sync), or a
// recoverer that took the owner word from a member that is no longer alive. So these copies are
// plain (vectorisable) reads and writes of the `AtomicU32` array, which has `u32`'s layout; they
// never race with another access.

/// `out[k] = the object at c.objs[from + k]`.
#[inline(always)]
pub(crate) fn load_objs(c: &CacheSlot, from: usize, out: &mut [Obj], conv: Conv) {
    assert!(from + out.len() <= CACHE_OBJS);
    // SAFETY: from + out.len() ≤ CACHE_OBJS (asserted): every read below stays inside the
    // array; exclusive access (above).
    let src = unsafe { c.objs.as_ptr().cast::<u64>().add(from) };
    let n = out.len();
    if n <= 8 {
        // Short bulks, the common case: a plain loop of at most 8 (no vector set-up).
        let mut k = 0;
        while k < n && k < 8 {
            // SAFETY: k < out.len(): inside the range asserted above.
            out[k] = conv.obj_at(unsafe { src.add(k).read() });
            k += 1;
        }
        return;
    }
    for (k, o) in out.iter_mut().enumerate() {
        // SAFETY: k < out.len(): inside the range asserted above.
        *o = conv.obj_at(unsafe { src.add(k).read() });
    }
}

/// `c.objs[at + k] = the offset of objs[k]`.
#[inline(always)]
pub(crate) fn store_objs(c: &CacheSlot, at: usize, objs: &[Obj], conv: Conv) {
    assert!(at + objs.len() <= CACHE_OBJS);
    // SAFETY: at + objs.len() ≤ CACHE_OBJS (asserted): every write below stays inside the
    // array, writable through the atomics' interior mutability; exclusive access (above).
    let dst = unsafe { c.objs.as_ptr().cast::<u64>().cast_mut().add(at) };
    let n = objs.len();
    if n <= 8 {
        let mut k = 0;
        while k < n && k < 8 {
            // SAFETY: k < objs.len(): inside the range asserted above.
            unsafe { dst.add(k).write(conv.offset(objs[k])) };
            k += 1;
        }
        return;
    }
    for (k, o) in objs.iter().enumerate() {
        // SAFETY: k < objs.len(): inside the range asserted above.
        unsafe { dst.add(k).write(conv.offset(*o)) };
    }
}

/// `out[k] = the handle at c.objs[from + k]` (for the ring).
pub(crate) fn load_h(c: &CacheSlot, from: usize, out: &mut [u32], conv: Conv) {
    assert!(from + out.len() <= CACHE_OBJS);
    let src = c.objs.as_ptr().cast::<u64>();
    for (k, o) in out.iter_mut().enumerate() {
        // SAFETY: from + k < CACHE_OBJS (asserted); exclusive access (above).
        *o = conv.handle_of_offset(unsafe { src.add(from + k).read() });
    }
}

/// `c.objs[at + k] = the offset of handle src[k]` (from the ring).
pub(crate) fn store_h(c: &CacheSlot, at: usize, src: &[u32], conv: Conv) {
    assert!(at + src.len() <= CACHE_OBJS);
    let dst = c.objs.as_ptr().cast::<u64>().cast_mut();
    for (k, h) in src.iter().enumerate() {
        // SAFETY: at + k < CACHE_OBJS (asserted), writable through the atomics' interior
        // mutability; exclusive access (above).
        unsafe { dst.add(at + k).write(conv.offset_of_handle(*h)) };
    }
}

/// The object at `c.objs[at]` (`at < CACHE_OBJS`, checked).
#[inline(always)]
pub(crate) fn load_one(c: &CacheSlot, at: usize, conv: Conv) -> Obj {
    assert!(at < CACHE_OBJS);
    // SAFETY: inside the array (asserted); exclusive access (above).
    conv.obj_at(unsafe { c.objs.as_ptr().cast::<u64>().add(at).read() })
}

/// `c.objs[at] = the offset of o` (`at < CACHE_OBJS`, checked).
#[inline(always)]
pub(crate) fn store_one(c: &CacheSlot, at: usize, o: Obj, conv: Conv) {
    assert!(at < CACHE_OBJS);
    // SAFETY: inside the array (asserted), writable through the atomics' interior mutability;
    // exclusive access (above).
    unsafe {
        c.objs
            .as_ptr()
            .cast::<u64>()
            .cast_mut()
            .add(at)
            .write(conv.offset(o))
    }
}
