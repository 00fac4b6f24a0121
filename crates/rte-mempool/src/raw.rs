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
    /// start when `tracked`); `None` unless both zones are long enough and 64-aligned (zones
    /// found through a guest's metadata may be anywhere: the caller reports it).
    pub(crate) fn new(
        header: Zone,
        objects: Zone,
        ncaches: usize,
        nobjs: usize,
        tracked: bool,
    ) -> Option<Self> {
        wide_init();
        if header.len() < header_len(ncaches)
            || header.as_ptr() as usize % 64 != 0
            || (tracked && nobjs.checked_mul(8).is_none_or(|l| objects.len() < l))
            || objects.as_ptr() as usize % 64 != 0
        {
            return None;
        }
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
        Some(Self {
            counters: counters.cast(),
            caches,
            ncaches,
            owners,
            nobjs,
            _header: header,
            _objects: objects,
        })
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
/// pointer ([`std::ptr::with_exposed_provenance_mut`]); `None` if `off` is past the zone.
pub(crate) fn exposed_addr(zone: &Zone, off: usize) -> Option<usize> {
    (off <= zone.len()).then(|| zone.as_ptr().wrapping_add(off).expose_provenance())
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

/// `out[k] = the object at c.objs[from + k]`. Returns false if an offset read is above
/// `conv.max_off` (a peer wrote into the cache): `out` then holds addresses that are no objects,
/// which the caller must not hand out.
#[inline(always)]
#[must_use]
pub(crate) fn load_objs(c: &CacheSlot, from: usize, out: &mut [Obj], conv: Conv) -> bool {
    let n = out.len();
    assert!(from + n <= CACHE_OBJS);
    // SAFETY: [from, from + n) lies inside the array (asserted) and is read by this thread
    // alone (above); `out` is n writable `Obj`s, which have `usize`'s layout (repr
    // transparent), and does not overlap the cache (a `&mut` borrow).
    unsafe {
        offsets_to_addrs(
            out.as_mut_ptr().cast::<usize>(),
            c.objs.as_ptr().cast::<u64>().add(from),
            n,
            conv.base,
            conv.max_off,
        )
    }
}

/// `c.objs[at + k] = the offset of objs[k]`.
#[inline(always)]
pub(crate) fn store_objs(c: &CacheSlot, at: usize, objs: &[Obj], conv: Conv) {
    let n = objs.len();
    assert!(at + n <= CACHE_OBJS);
    // SAFETY: [at, at + n) lies inside the array (asserted), writable through the atomics'
    // interior mutability, and touched by this thread alone (above); `objs` is n readable
    // `Obj`s (`usize` layout), not overlapping the cache.
    unsafe {
        addrs_to_offsets(
            c.objs.as_ptr().cast::<u64>().cast_mut().add(at),
            objs.as_ptr().cast::<usize>(),
            n,
            conv.base,
        )
    }
}

/// Run `pair(k)` over `[0, n)` two by two (`n ≥ 2`), always with `k + 2 ≤ n`, the last pairs
/// overlapping earlier ones when `n` is not a multiple of their step; straight-line code up
/// to 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pairs(n: usize, mut pair: impl FnMut(usize)) {
    debug_assert!(n >= 2);
    if n <= 4 {
        pair(0);
        pair(n - 2);
    } else if n <= 8 {
        pair(0);
        pair(2);
        pair(n - 4);
        pair(n - 2);
    } else {
        // Eight at a time, then what is left (1 to 8) the same way as above, ending at n.
        let mut k = 0;
        while k + 8 <= n {
            pair(k);
            pair(k + 2);
            pair(k + 4);
            pair(k + 6);
            k += 8;
        }
        let r = n - k;
        if r == 0 {
        } else if r <= 2 {
            pair(n - 2);
        } else if r <= 4 {
            pair(k);
            pair(n - 2);
        } else {
            pair(k);
            pair(k + 2);
            pair(n - 4);
            pair(n - 2);
        }
    }
}

/// `dst[k] = base + src[k]` for `k < n`: two objects per SSE2 instruction on x86-64 (the
/// baseline of the target), the last pair overlapping the one before it when `n` is odd (so no
/// single-object tail), one scalar for `n == 1`. Returns whether every `src[k] ≤ max_off`
/// (`max_off < 2^63`), checked on the very value converted (the cache is shared memory: a
/// second read could differ).
///
/// The check costs two vector operations per pair (no branch in the loop): `max_off - v` has
/// its sign bit set when `max_off < v < 2^63`, and `v` has it when `v ≥ 2^63`; their OR is
/// accumulated and its sign bits tested once at the end.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, not overlapping; no other thread writes them.
#[inline(always)]
unsafe fn offsets_to_addrs(
    dst: *mut usize,
    src: *const u64,
    n: usize,
    base: usize,
    max_off: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if n >= 2 {
            #[cfg(not(miri))]
            if n > 8 {
                // SAFETY: n > 8; the caller's ranges.
                return unsafe { offsets_to_addrs_large(dst, src, n, base, max_off) };
            }
            // SAFETY: n >= 2; the caller's ranges.
            return unsafe { offsets_to_addrs_sse(dst, src, n, base, max_off) };
        }
    }
    if n == 1 {
        // SAFETY: n == 1: one element inside the caller's ranges.
        let off = unsafe { src.read() } as usize;
        // SAFETY: as above.
        unsafe { dst.write(base.wrapping_add(off)) };
        return off <= max_off;
    }
    let mut ok = true;
    for k in 0..n {
        // SAFETY: k < n: inside the caller's ranges.
        let off = unsafe { src.add(k).read() } as usize;
        ok &= off <= max_off;
        // SAFETY: as above.
        unsafe { dst.add(k).write(base.wrapping_add(off)) };
    }
    ok
}

/// [`offsets_to_addrs`] for `n >= 2`, with SSE2 pairs (see [`pairs`]).
///
/// # Safety
/// As for [`offsets_to_addrs`], and `n >= 2`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn offsets_to_addrs_sse(
    dst: *mut usize,
    src: *const u64,
    n: usize,
    base: usize,
    max_off: usize,
) -> bool {
    use std::arch::x86_64::{
        _mm_add_epi64, _mm_castsi128_pd, _mm_loadu_si128, _mm_movemask_pd, _mm_or_si128,
        _mm_set1_epi64x, _mm_setzero_si128, _mm_storeu_si128, _mm_sub_epi64,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, always present; these take no pointer.
    let (b, m, mut bad) = unsafe {
        (
            _mm_set1_epi64x(base as i64),
            _mm_set1_epi64x(max_off as i64),
            _mm_setzero_si128(),
        )
    };
    // SAFETY: `pairs` calls this with k + 2 ≤ n only: both 16-byte accesses lie inside the
    // caller's ranges (unaligned accesses allowed).
    let pair = |k: usize| unsafe {
        let v = _mm_loadu_si128(src.add(k).cast());
        bad = _mm_or_si128(bad, _mm_or_si128(_mm_sub_epi64(m, v), v));
        _mm_storeu_si128(dst.add(k).cast(), _mm_add_epi64(v, b));
    };
    pairs(n, pair);
    // SAFETY: SSE2 (baseline); no pointer.
    unsafe { _mm_movemask_pd(_mm_castsi128_pd(bad)) == 0 }
}

/// [`offsets_to_addrs`] for more than 8 objects: AVX2 when the CPU has it, SSE2 pairs
/// otherwise. Out of line, so that the code the short gets and puts inline (in the caller's
/// loop) is only the 1-to-8 cases; the call is paid many times over by 9 objects or more.
/// Measured in full runs of `cargo xtask bench mempool` (one core, cache 512): with only the
/// AVX2 path out of line (its test and the SSE2 loop inlined), bulk 4 ran at 0.87-0.96 G
/// objects/s (0.80-0.84 without a cold hint on that call) and bulk 32, keep 128, at 2.5-2.75
/// G with the hint; with this split, 1.13-1.18 G and 2.9-3.2 G.
///
/// # Safety
/// As for [`offsets_to_addrs`], and `n > 8`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(never)]
unsafe fn offsets_to_addrs_large(
    dst: *mut usize,
    src: *const u64,
    n: usize,
    base: usize,
    max_off: usize,
) -> bool {
    if wide() {
        // SAFETY: the CPU has AVX2 (just checked); n > 8; the caller's ranges.
        return unsafe { offsets_to_addrs_wide(dst, src, n, base, max_off) };
    }
    // SAFETY: n > 8; the caller's ranges.
    unsafe { offsets_to_addrs_sse(dst, src, n, base, max_off) }
}

/// `dst[k] = src[k] - base` for `k < n` (see [`offsets_to_addrs`]).
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, not overlapping; no other thread touches them.
#[inline(always)]
unsafe fn addrs_to_offsets(dst: *mut u64, src: *const usize, n: usize, base: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if n >= 2 {
            #[cfg(not(miri))]
            if n > 8 {
                // SAFETY: n > 8; the caller's ranges.
                return unsafe { addrs_to_offsets_large(dst, src, n, base) };
            }
            // SAFETY: n >= 2; the caller's ranges.
            return unsafe { addrs_to_offsets_sse(dst, src, n, base) };
        }
    }
    if n == 1 {
        // SAFETY: n == 1: one element inside the caller's ranges.
        unsafe { dst.write(src.read().wrapping_sub(base) as u64) };
        return;
    }
    for k in 0..n {
        // SAFETY: k < n: inside the caller's ranges.
        unsafe {
            dst.add(k)
                .write(src.add(k).read().wrapping_sub(base) as u64)
        };
    }
}

/// [`addrs_to_offsets`] for `n >= 2`, with SSE2 pairs (see [`pairs`]).
///
/// # Safety
/// As for [`addrs_to_offsets`], and `n >= 2`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn addrs_to_offsets_sse(dst: *mut u64, src: *const usize, n: usize, base: usize) {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_set1_epi64x, _mm_storeu_si128, _mm_sub_epi64};
    // SAFETY: SSE2 is part of the x86-64 baseline, always present.
    let b = unsafe { _mm_set1_epi64x(base as i64) };
    // SAFETY: `pairs` calls this with k + 2 ≤ n only: inside the caller's ranges.
    let pair = |k: usize| unsafe {
        let v = _mm_loadu_si128(src.add(k).cast());
        _mm_storeu_si128(dst.add(k).cast(), _mm_sub_epi64(v, b));
    };
    pairs(n, pair);
}

/// [`addrs_to_offsets`] for more than 8 objects, out of line (see [`offsets_to_addrs_large`]).
///
/// # Safety
/// As for [`addrs_to_offsets`], and `n > 8`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(never)]
unsafe fn addrs_to_offsets_large(dst: *mut u64, src: *const usize, n: usize, base: usize) {
    if wide() {
        // SAFETY: the CPU has AVX2 (just checked); n > 8; the caller's ranges.
        return unsafe { addrs_to_offsets_wide(dst, src, n, base) };
    }
    // SAFETY: n > 8; the caller's ranges.
    unsafe { addrs_to_offsets_sse(dst, src, n, base) }
}

/// Whether this CPU has AVX2: 1 no, 2 yes, 0 not yet asked (asked once, when a pool is viewed,
/// so that the conversions never call anything).
#[cfg(all(target_arch = "x86_64", not(miri)))]
static WIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn wide() -> bool {
    WIDE.load(std::sync::atomic::Ordering::Relaxed) == 2
}

/// Ask the CPU once (see [`WIDE`]).
#[cold]
fn wide_init() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if WIDE.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        let yes = std::arch::is_x86_feature_detected!("avx2");
        WIDE.store(
            if yes { 2 } else { 1 },
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// [`offsets_to_addrs`] with 32-byte AVX2 moves, four objects a step, the last step placed at
/// `n - 4` (overlapping the one before it when `n` is not a multiple of 4: those objects are
/// converted twice, from the same source values). Inline assembly (the crate is built for the
/// x86-64 baseline), inlined only into [`offsets_to_addrs_large`] (out of line: inlined into
/// the gets and puts, its code made the short ones slower, cache bulk 4 by 10 to 20 percent,
/// while for 32 objects the call is paid many times over, cache bulk 32 on one core going
/// from 1.0-1.05 to 1.2-1.3 times DPDK's rate). Ends with `vzeroupper` in a build without
/// AVX.
///
/// # Safety
/// The CPU supports AVX2; `n >= 4`; `src..src+n` readable, `dst..dst+n` writable, not
/// overlapping; no other thread writes them.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn offsets_to_addrs_wide(
    dst: *mut usize,
    src: *const u64,
    n: usize,
    base: usize,
    max_off: usize,
) -> bool {
    let bad: u32;
    // SAFETY: every step reads and writes 32 bytes at a byte offset <= 8 * (n - 4), inside both
    // ranges (caller's contract, n >= 4); unaligned moves need no alignment; the CPU has AVX2
    // (caller's contract). Only ymm0-ymm4, the flags and the named registers are written
    // besides the destination.
    unsafe {
        core::arch::asm!(
            "vmovq xmm2, {b}",
            "vpbroadcastq ymm2, xmm2",
            "vmovq xmm3, {m}",
            "vpbroadcastq ymm3, xmm3",
            "vpxor xmm4, xmm4, xmm4",
            "xor {i:e}, {i:e}",
            "cmp {i}, {last}",
            "jae 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{s} + {i}]",
            "vpsubq ymm1, ymm3, ymm0",
            "vpor ymm1, ymm1, ymm0",
            "vpor ymm4, ymm4, ymm1",
            "vpaddq ymm0, ymm0, ymm2",
            "vmovdqu ymmword ptr [{d} + {i}], ymm0",
            "add {i}, 32",
            "cmp {i}, {last}",
            "jb 2b",
            "3:",
            "vmovdqu ymm0, ymmword ptr [{s} + {last}]",
            "vpsubq ymm1, ymm3, ymm0",
            "vpor ymm1, ymm1, ymm0",
            "vpor ymm4, ymm4, ymm1",
            "vpaddq ymm0, ymm0, ymm2",
            "vmovdqu ymmword ptr [{d} + {last}], ymm0",
            "vmovmskpd {bad:e}, ymm4",
            s = in(reg) src,
            d = in(reg) dst,
            last = in(reg) (n - 4) * 8,
            b = in(reg) base,
            m = in(reg) max_off,
            i = out(reg) _,
            bad = lateout(reg) bad,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            options(nostack),
        );
    }
    upper_clear();
    bad == 0
}

/// [`addrs_to_offsets`] with 32-byte AVX2 moves (as [`offsets_to_addrs_wide`]).
///
/// # Safety
/// As [`offsets_to_addrs_wide`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn addrs_to_offsets_wide(dst: *mut u64, src: *const usize, n: usize, base: usize) {
    // SAFETY: as in `offsets_to_addrs_wide`: every step lies inside both ranges; only ymm0,
    // ymm2, the flags and the named registers are written besides the destination.
    unsafe {
        core::arch::asm!(
            "vmovq xmm2, {b}",
            "vpbroadcastq ymm2, xmm2",
            "xor {i:e}, {i:e}",
            "cmp {i}, {last}",
            "jae 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{s} + {i}]",
            "vpsubq ymm0, ymm0, ymm2",
            "vmovdqu ymmword ptr [{d} + {i}], ymm0",
            "add {i}, 32",
            "cmp {i}, {last}",
            "jb 2b",
            "3:",
            "vmovdqu ymm0, ymmword ptr [{s} + {last}]",
            "vpsubq ymm0, ymm0, ymm2",
            "vmovdqu ymmword ptr [{d} + {last}], ymm0",
            s = in(reg) src,
            d = in(reg) dst,
            last = in(reg) (n - 4) * 8,
            b = in(reg) base,
            i = out(reg) _,
            out("ymm0") _,
            out("ymm2") _,
            options(nostack),
        );
    }
    upper_clear();
}

/// After 256-bit code: clear the upper halves of the vector registers, only where the compiler
/// emits SSE code (in a build for AVX it may keep 256-bit values in other registers across this
/// point, and its VEX code pays no transition cost anyway).
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn upper_clear() {
    #[cfg(not(target_feature = "avx"))]
    // SAFETY: clears the upper halves of the vector registers, which code compiled without AVX
    // never uses; touches no memory, the stack or the flags.
    unsafe {
        core::arch::asm!("vzeroupper", options(nomem, nostack, preserves_flags));
    }
}

/// `out[k] = the handle at c.objs[from + k]` (for the ring).
pub(crate) fn load_h(c: &CacheSlot, from: usize, out: &mut [u32], conv: Conv) {
    let n = out.len();
    assert!(from <= CACHE_OBJS && n <= CACHE_OBJS - from);
    // SAFETY: [from, from + n) lies inside the array (asserted), read by this thread alone
    // (above); `out` is n writable u32s, not overlapping the cache.
    unsafe {
        addrs_to_handles(
            out.as_mut_ptr(),
            c.objs.as_ptr().cast::<usize>().add(from),
            n,
            Conv { base: 0, ..conv },
        )
    }
}

/// `c.objs[at + k] = the offset of handle src[k]` (from the ring). Not checked here: every
/// offset is checked when it leaves the cache ([`load_objs`]), which a peer can write anyway.
pub(crate) fn store_h(c: &CacheSlot, at: usize, src: &[u32], conv: Conv) {
    let n = src.len();
    assert!(at <= CACHE_OBJS && n <= CACHE_OBJS - at);
    // SAFETY: [at, at + n) lies inside the array (asserted), writable through the atomics'
    // interior mutability, touched by this thread alone (above); `src` does not overlap it.
    unsafe {
        handles_to_addrs(
            c.objs.as_ptr().cast::<usize>().cast_mut().add(at),
            src.as_ptr(),
            n,
            Conv { base: 0, ..conv },
        )
    };
}

/// `out[k] = the object of handle src[k]` (`out.len() == src.len()`, checked). Returns false
/// if a handle names no place in the objects area (see [`Conv`]): `out` must then not be handed
/// out.
#[inline(always)]
#[must_use]
pub(crate) fn objs_of_handles(out: &mut [Obj], src: &[u32], conv: Conv) -> bool {
    assert!(out.len() == src.len());
    // SAFETY: both are n elements long (asserted), distinct borrows (one `&mut`).
    unsafe {
        handles_to_addrs(
            out.as_mut_ptr().cast::<usize>(),
            src.as_ptr(),
            src.len(),
            conv,
        )
    }
}

/// `out[k] = the handle of objs[k]` (`out.len() == objs.len()`, checked).
#[inline(always)]
pub(crate) fn handles_of_objs(out: &mut [u32], objs: &[Obj], conv: Conv) {
    assert!(out.len() == objs.len());
    // SAFETY: both are n elements long (asserted), distinct borrows (one `&mut`).
    unsafe {
        addrs_to_handles(
            out.as_mut_ptr(),
            objs.as_ptr().cast::<usize>(),
            objs.len(),
            conv,
        )
    }
}

// The handle buffers these two fill or read are copied by the ring right before or after, with
// 16-byte moves of four handles at 16-byte steps from the buffer's start. They move handles
// four at a time at the same offsets, so that each load of the ring or of ours is exactly one
// earlier store of the other (a load spanning several smaller in-flight stores cannot be
// forwarded and waits for them to reach the cache: that stall cost more than the copy).

/// `dst[k] = base + (src[k] << shift)` for `k < n`. Returns whether every offset
/// `src[k] << shift` is at most `conv.max_off` (`< 2^63`), checked on the value converted.
///
/// The offsets are below 2^63 (a handle is 32 bits, `shift < 32`), so `max_off - off` has its
/// sign bit set exactly when `off > max_off`: one subtract and one OR per two objects, the
/// sign bits tested once at the end.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, not overlapping; no other thread writes them.
#[inline(always)]
unsafe fn handles_to_addrs(dst: *mut usize, src: *const u32, n: usize, conv: Conv) -> bool {
    let mut k = 0;
    let mut ok = true;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_add_epi64, _mm_castsi128_pd, _mm_cvtsi32_si128, _mm_loadu_si128, _mm_movemask_pd,
            _mm_or_si128, _mm_set1_epi64x, _mm_setzero_si128, _mm_sll_epi64, _mm_storeu_si128,
            _mm_sub_epi64, _mm_unpackhi_epi32, _mm_unpacklo_epi32,
        };
        if n >= 4 {
            // SAFETY: SSE2 is part of the x86-64 baseline, always present; these take no
            // pointer.
            let (b, sh, z, m, mut bad) = unsafe {
                (
                    _mm_set1_epi64x(conv.base as i64),
                    _mm_cvtsi32_si128(conv.shift as i32),
                    _mm_setzero_si128(),
                    _mm_set1_epi64x(conv.max_off as i64),
                    _mm_setzero_si128(),
                )
            };
            while k + 4 <= n {
                // SAFETY: k + 4 ≤ n: the 16-byte load covers src[k..k+4] and the two 16-byte
                // stores dst[k..k+4], inside the caller's ranges (unaligned accesses allowed).
                unsafe {
                    let h = _mm_loadu_si128(src.add(k).cast());
                    let lo = _mm_sll_epi64(_mm_unpacklo_epi32(h, z), sh);
                    let hi = _mm_sll_epi64(_mm_unpackhi_epi32(h, z), sh);
                    bad = _mm_or_si128(
                        bad,
                        _mm_or_si128(_mm_sub_epi64(m, lo), _mm_sub_epi64(m, hi)),
                    );
                    _mm_storeu_si128(dst.add(k).cast(), _mm_add_epi64(lo, b));
                    _mm_storeu_si128(dst.add(k + 2).cast(), _mm_add_epi64(hi, b));
                }
                k += 4;
            }
            // SAFETY: SSE2 (baseline); no pointer.
            ok = unsafe { _mm_movemask_pd(_mm_castsi128_pd(bad)) } == 0;
        }
    }
    while k < n {
        // SAFETY: k < n: inside the caller's ranges.
        let h = unsafe { src.add(k).read() };
        ok &= ((h as usize) << conv.shift) <= conv.max_off;
        // SAFETY: as above.
        unsafe { dst.add(k).write(conv.obj(h).addr) };
        k += 1;
    }
    ok
}

/// `dst[k] = (src[k] - base) >> shift` for `k < n`.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, not overlapping; no other thread writes them.
#[inline(always)]
unsafe fn addrs_to_handles(dst: *mut u32, src: *const usize, n: usize, conv: Conv) {
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_castps_si128, _mm_castsi128_ps, _mm_cvtsi32_si128, _mm_loadu_si128,
            _mm_set1_epi64x, _mm_shuffle_ps, _mm_srl_epi64, _mm_storeu_si128, _mm_sub_epi64,
        };
        if n >= 4 {
            // SAFETY: SSE2 is part of the x86-64 baseline, always present; these take no
            // pointer.
            let (b, sh) = unsafe {
                (
                    _mm_set1_epi64x(conv.base as i64),
                    _mm_cvtsi32_si128(conv.shift as i32),
                )
            };
            while k + 4 <= n {
                // SAFETY: k + 4 ≤ n: the two 16-byte loads cover src[k..k+4] and the 16-byte
                // store dst[k..k+4], inside the caller's ranges.
                unsafe {
                    let a = _mm_srl_epi64(_mm_sub_epi64(_mm_loadu_si128(src.add(k).cast()), b), sh);
                    let c =
                        _mm_srl_epi64(_mm_sub_epi64(_mm_loadu_si128(src.add(k + 2).cast()), b), sh);
                    // The low 32 bits of each 64-bit lane: lanes 0 and 2 of a, then of c.
                    let h = _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(
                        _mm_castsi128_ps(a),
                        _mm_castsi128_ps(c),
                    ));
                    _mm_storeu_si128(dst.add(k).cast(), h);
                }
                k += 4;
            }
        }
    }
    while k < n {
        // SAFETY: k < n: inside the caller's ranges.
        unsafe {
            dst.add(k).write(conv.handle(Obj {
                addr: src.add(k).read(),
            }))
        };
        k += 1;
    }
}

// ----- conversions straight between a ring claim's slots and the caller's objects -----
//
// The ring shows a claim as two runs (up to the end of its slot array, then from its start);
// the second is empty unless the claim wraps. For 4 to 8 objects in one run these convert with
// straight-line code, no loop: the first four, then (n > 4) the last four, overlapping the
// first when n < 8. Measured on Zen 4 (`cargo xtask bench mempool`, no cache, 1 core), against
// the loops of `objs_of_handles`/`handles_of_objs` over both runs: bulk 4 0.80 → 1.02 × DPDK,
// bulk 8 0.86 → 1.15; converting the same four twice when n == 4 cost 6% of bulk 4 (every
// store before the next CAS counts).

/// `out[k] = the object of handle k` of the runs `a` then `b` (`a.len() + b.len() ==
/// out.len()`, checked). Returns false if a handle names no place in the objects area (see
/// [`handles_to_addrs`]): `out` must then not be handed out.
#[inline(always)]
#[must_use]
pub(crate) fn objs_of_runs(out: &mut [Obj], a: &[u32], b: &[u32], conv: Conv) -> bool {
    let n = a.len();
    assert!(n + b.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if b.is_empty() && (4..=8).contains(&n) {
        // SAFETY: 4 ≤ n ≤ 8: both groups of four, [0, 4) and [n - 4, n), lie inside `a` and
        // `out` (n elements each, distinct borrows).
        unsafe {
            let (dst, src) = (out.as_mut_ptr().cast::<usize>(), a.as_ptr());
            let ok = four_to_addrs(dst, src, conv);
            if n > 4 {
                return four_to_addrs(dst.add(n - 4), src.add(n - 4), conv) & ok;
            }
            return ok;
        }
    }
    let (x, y) = out.split_at_mut(n);
    objs_of_handles(x, a, conv) & objs_of_handles(y, b, conv)
}

/// The handles of `objs` into the runs `a` then `b` (`a.len() + b.len() == objs.len()`,
/// checked).
#[inline(always)]
pub(crate) fn handles_of_runs(a: &mut [u32], b: &mut [u32], objs: &[Obj], conv: Conv) {
    let n = a.len();
    assert!(n + b.len() == objs.len());
    #[cfg(target_arch = "x86_64")]
    if b.is_empty() && (4..=8).contains(&n) {
        // SAFETY: 4 ≤ n ≤ 8: both groups of four lie inside `a` and `objs` (n elements each,
        // distinct borrows).
        unsafe {
            let (dst, src) = (a.as_mut_ptr(), objs.as_ptr().cast::<usize>());
            four_to_handles(dst, src, conv);
            if n > 4 {
                four_to_handles(dst.add(n - 4), src.add(n - 4), conv);
            }
        }
        return;
    }
    let (x, y) = objs.split_at(n);
    handles_of_objs(a, x, conv);
    handles_of_objs(b, y, conv);
}

/// `dst[k] = base + (src[k] << shift)` for `k < 4`. (The loop of [`handles_to_addrs`] has
/// the same body with its constants set up once outside the loop; calling this from that loop
/// measured 12% slower on cache bulk 32, so the two stay apart. The same for
/// [`four_to_handles`].)
///
/// Returns whether the four offsets are at most `conv.max_off` (checked as in
/// [`handles_to_addrs`]).
///
/// # Safety
/// `src..src+4` readable, `dst..dst+4` writable, not overlapping.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn four_to_addrs(dst: *mut usize, src: *const u32, conv: Conv) -> bool {
    use std::arch::x86_64::{
        _mm_add_epi64, _mm_castsi128_pd, _mm_cvtsi32_si128, _mm_loadu_si128, _mm_movemask_pd,
        _mm_or_si128, _mm_set1_epi64x, _mm_setzero_si128, _mm_sll_epi64, _mm_storeu_si128,
        _mm_sub_epi64, _mm_unpackhi_epi32, _mm_unpacklo_epi32,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline; the 16-byte load covers src[0..4] and the
    // two 16-byte stores dst[0..4], inside the caller's ranges (unaligned accesses allowed).
    unsafe {
        let b = _mm_set1_epi64x(conv.base as i64);
        let sh = _mm_cvtsi32_si128(conv.shift as i32);
        let m = _mm_set1_epi64x(conv.max_off as i64);
        let z = _mm_setzero_si128();
        let h = _mm_loadu_si128(src.cast());
        let lo = _mm_sll_epi64(_mm_unpacklo_epi32(h, z), sh);
        let hi = _mm_sll_epi64(_mm_unpackhi_epi32(h, z), sh);
        let bad = _mm_or_si128(_mm_sub_epi64(m, lo), _mm_sub_epi64(m, hi));
        _mm_storeu_si128(dst.cast(), _mm_add_epi64(lo, b));
        _mm_storeu_si128(dst.add(2).cast(), _mm_add_epi64(hi, b));
        _mm_movemask_pd(_mm_castsi128_pd(bad)) == 0
    }
}

/// `dst[k] = (src[k] - base) >> shift` for `k < 4`.
///
/// # Safety
/// `src..src+4` readable, `dst..dst+4` writable, not overlapping.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn four_to_handles(dst: *mut u32, src: *const usize, conv: Conv) {
    use std::arch::x86_64::{
        _mm_castps_si128, _mm_castsi128_ps, _mm_cvtsi32_si128, _mm_loadu_si128, _mm_set1_epi64x,
        _mm_shuffle_ps, _mm_srl_epi64, _mm_storeu_si128, _mm_sub_epi64,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline; the two 16-byte loads cover src[0..4] and
    // the 16-byte store dst[0..4], inside the caller's ranges.
    unsafe {
        let b = _mm_set1_epi64x(conv.base as i64);
        let sh = _mm_cvtsi32_si128(conv.shift as i32);
        let a = _mm_srl_epi64(_mm_sub_epi64(_mm_loadu_si128(src.cast()), b), sh);
        let c = _mm_srl_epi64(_mm_sub_epi64(_mm_loadu_si128(src.add(2).cast()), b), sh);
        let h = _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(
            _mm_castsi128_ps(a),
            _mm_castsi128_ps(c),
        ));
        _mm_storeu_si128(dst.cast(), h);
    }
}

/// A value dropped by value: its drop moves it out of its place, then drops it in a call of its
/// own, so that no drop code (an `Arc`'s `drop_slow`, say) is given the address of the struct
/// that holds it. A local variable whose address reaches a call the compiler does not see
/// through stays in memory for its whole life: every use of its fields in a caller's loop is a
/// load or a store (see `LocalPool`, which holds its `Mempool` in one).
pub(crate) struct ByValue<T>(std::mem::ManuallyDrop<T>);

impl<T> ByValue<T> {
    #[inline(always)]
    pub(crate) fn new(v: T) -> Self {
        Self(std::mem::ManuallyDrop::new(v))
    }
}

impl<T> std::ops::Deref for ByValue<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for ByValue<T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and the value is not used after it: taking it out leaves
        // nothing behind that is read or dropped again.
        let v = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        drop_value(v);
    }
}

/// Drop `v`, out of line: the caller's drop code is then a copy and a call, small enough to be
/// inlined wherever the holder is dropped.
#[inline(never)]
fn drop_value<T>(v: T) {
    drop(v);
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The SSE2 conversions every size goes through on a CPU without AVX2 (this machine's
    /// gets and puts of more than 8 take the AVX2 path), against a plain loop: every size from
    /// 2 to 70, a bad offset at every position.
    #[test]
    fn sse_conversions_match_a_plain_loop_and_find_every_bad_offset() {
        let (base, max_off) = (0x7000_0000_0000usize, 4095 * 2048);
        for n in 2..=70usize {
            let src: Vec<u64> = (0..n as u64).map(|k| k * 2048 + 64).collect();
            let mut dst = vec![0usize; n];
            // SAFETY: n ≥ 2; both vectors hold n elements and do not overlap.
            let ok =
                unsafe { offsets_to_addrs_sse(dst.as_mut_ptr(), src.as_ptr(), n, base, max_off) };
            assert!(ok, "n {n}");
            let want: Vec<usize> = src.iter().map(|&o| base + o as usize).collect();
            assert_eq!(dst, want, "n {n}");
            let mut back = vec![0u64; n];
            // SAFETY: as above.
            unsafe { addrs_to_offsets_sse(back.as_mut_ptr(), dst.as_ptr(), n, base) };
            assert_eq!(back, src, "n {n}");
            for bad_at in 0..n {
                for bad in [max_off as u64 + 1, u64::MAX, 1 << 63] {
                    let mut s = src.clone();
                    s[bad_at] = bad;
                    // SAFETY: as above.
                    let ok = unsafe {
                        offsets_to_addrs_sse(dst.as_mut_ptr(), s.as_ptr(), n, base, max_off)
                    };
                    assert!(!ok, "n {n}, {bad:#x} at {bad_at} not found");
                }
            }
        }
    }
}
