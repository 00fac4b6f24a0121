//! The unsafe code of the crate, kept in one place: the view of a zone as an array of 64-bit
//! atomic words, a cache prefetch, and the SSE4.2 CRC32-C instruction.

#[cfg(not(hugeshare_loom))]
use std::ptr::NonNull;

use shmconfig::Zone;

use crate::sync::AtomicU64;

/// A zone seen as `len` 64-bit atomic words. Every byte of the table in shared memory is read
/// and written through these atomics (never through `&[u8]`/`&mut [u8]`), so that concurrent
/// access from other threads, processes or guests is never a data race.
///
/// Under `cfg(hugeshare_loom)` the words are loom atomics on the heap (loom cannot track raw
/// memory); the zone is still reserved and kept, so the shipping code paths are the same.
pub(crate) struct Mem {
    #[cfg(not(hugeshare_loom))]
    base: NonNull<AtomicU64>,
    #[cfg(hugeshare_loom)]
    words: Box<[AtomicU64]>,
    len: usize,
    zone: Zone,
}

// SAFETY: `Mem` only hands out `&AtomicU64` into memory that the `Zone` it owns keeps mapped;
// atomics are safe to share between threads.
#[cfg(not(hugeshare_loom))]
unsafe impl Send for Mem {}
// SAFETY: as for `Send`.
#[cfg(not(hugeshare_loom))]
unsafe impl Sync for Mem {}

impl std::fmt::Debug for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mem")
            .field("zone", &self.zone)
            .field("words", &self.len)
            .finish()
    }
}

impl Mem {
    /// View `zone` as words. `None` if the zone is not 8-byte aligned.
    pub(crate) fn new(zone: Zone) -> Option<Self> {
        let len = zone.len() / 8;
        if zone.as_ptr() as usize % 8 != 0 {
            return None;
        }
        #[cfg(not(hugeshare_loom))]
        {
            let base = NonNull::new(zone.as_ptr().cast::<AtomicU64>())?;
            Some(Self { base, len, zone })
        }
        #[cfg(hugeshare_loom)]
        {
            let words = (0..len).map(|_| AtomicU64::new(0)).collect();
            Some(Self { words, len, zone })
        }
    }

    /// The zone behind the words.
    pub(crate) fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Number of words.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Word `i`. Panics if `i` is out of range (the table checks indexes read from shared memory
    /// before it uses them, so this only fires on a bug).
    #[inline(always)]
    pub(crate) fn w(&self, i: usize) -> &AtomicU64 {
        &self.range(i, 1)[0]
    }

    /// Words `start..start + n`. Panics if that is out of range.
    #[inline(always)]
    pub(crate) fn range(&self, start: usize, n: usize) -> &[AtomicU64] {
        // `n > len` is the same for every call with a constant `n` (hoisted out of loops),
        // leaving one comparison per call.
        if n > self.len || start > self.len - n {
            out_of_range();
        }
        #[cfg(not(hugeshare_loom))]
        {
            // SAFETY: `start + n <= len` (checked above) and the zone (kept alive by
            // `self.zone`) is `len * 8` bytes, 8-byte aligned (checked in `new`), mapped and
            // writable; `AtomicU64` has the size and alignment of `u64`, and this memory is only
            // ever accessed atomically (atomics may be shared: `&AtomicU64` is the right view).
            unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), n) }
        }
        #[cfg(hugeshare_loom)]
        {
            &self.words[start..start + n]
        }
    }

    /// The eight words from `start` (one bucket). Panics if out of range.
    #[inline(always)]
    pub(crate) fn eight(&self, start: usize) -> &[AtomicU64; 8] {
        self.range(start, 8)
            .try_into()
            .unwrap_or_else(|_| out_of_range())
    }

    /// Hint the CPU to bring word `i`'s cache line in. Any `i` is harmless (a prefetch of an
    /// address outside the zone, or of no mapped memory at all, does nothing), so callers need
    /// not check it: a prefetch costs no compare and no branch.
    #[inline(always)]
    pub(crate) fn prefetch(&self, i: usize) {
        #[cfg(all(target_arch = "x86_64", not(hugeshare_loom)))]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // Wrapping arithmetic: computing the address is always defined, even far outside
            // the zone; it is only ever used as a hint.
            let p = self.base.as_ptr().wrapping_add(i).cast::<i8>();
            // SAFETY: PREFETCHT0 (SSE, part of the x86_64 baseline) reads nothing
            // architecturally and never faults, whatever the address; it only hints the cache.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p)
            };
        }
        #[cfg(not(all(target_arch = "x86_64", not(hugeshare_loom))))]
        let _ = i;
    }
}

/// Readers' bucket accessors, each one assembly load on x86_64. The loom and Miri builds (and
/// other targets) use the atomics they stand for, in the `impl` below, so that the models
/// check the same protocol.
#[cfg(all(target_arch = "x86_64", not(hugeshare_loom), not(miri)))]
impl Mem {
    /// The candidate lanes of the bucket at word `bw` for `sig`: [`sig_match`] of its words 0
    /// and 1 (relaxed), read with one 16-byte load.
    #[inline(always)]
    pub(crate) fn sig_candidates(&self, bw: usize, sig: u16) -> u32 {
        use std::arch::x86_64::{__m128i, _mm_cmpeq_epi16, _mm_movemask_epi8, _mm_set1_epi16};
        let b = self.eight(bw);
        let lanes: __m128i;
        // SAFETY: `b` is the bucket's eight words inside the zone (bounds checked by `eight`),
        // so the 16 bytes read stay inside the mapping. An assembly load is outside Rust's
        // memory model, like the writers' atomic stores it may race with; the CPU reads each
        // 8-byte-aligned half (`Mem::new` checks the alignment) atomically, which is what the
        // two relaxed loads it stands for promise, and nothing more is assumed.
        unsafe {
            core::arch::asm!(
                "movdqu {x}, xmmword ptr [{p}]",
                p = in(reg) b.as_ptr(),
                x = lateout(xmm_reg) lanes,
                options(nostack, preserves_flags, readonly)
            );
        }
        // SAFETY: SSE2 is part of the x86_64 baseline; register-only intrinsics.
        #[allow(unused_unsafe)]
        let bytes =
            unsafe { _mm_movemask_epi8(_mm_cmpeq_epi16(lanes, _mm_set1_epi16(sig as i16))) as u32 };
        bytes & 0x5555
    }

    /// The key-slot index in lane `lane` (0..8) of the bucket at word `bw`, read with acquire
    /// ordering (a reader then reads the slot it names): one 4-byte load of the lane's half of
    /// its word.
    #[inline(always)]
    pub(crate) fn entry_idx_acquire(&self, bw: usize, lane: usize) -> u32 {
        let b = self.eight(bw);
        let idx: u32;
        // SAFETY: byte 16 + 4 × (lane & 7) lies in words 2 to 5 of the bucket's eight words,
        // inside the zone (bounds checked by `eight`), and is 4-byte aligned. The load is outside
        // Rust's memory model like the writers' 8-byte atomic stores of that word: the CPU reads
        // the aligned 4 bytes atomically, from one store or another, which is the half of the
        // word that the atomic load and shift it stands for would return.
        unsafe {
            core::arch::asm!(
                "mov {i:e}, dword ptr [{p} + {l} * 4 + 16]",
                p = in(reg) b.as_ptr(),
                l = in(reg) lane & 7,
                i = lateout(reg) idx,
                options(nostack, preserves_flags, readonly)
            );
        }
        // x86 loads are acquire loads; this keeps the compiler from moving later reads (of the
        // slot) above the assembly one.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Acquire);
        idx
    }
}

/// The readers' bucket accessors with atomics (see the `impl` above).
#[cfg(not(all(target_arch = "x86_64", not(hugeshare_loom), not(miri))))]
impl Mem {
    #[inline(always)]
    pub(crate) fn sig_candidates(&self, bw: usize, sig: u16) -> u32 {
        let b = self.eight(bw);
        sig_match(
            b[0].load(crate::sync::Ordering::Relaxed),
            b[1].load(crate::sync::Ordering::Relaxed),
            sig,
        )
    }

    #[inline(always)]
    pub(crate) fn entry_idx_acquire(&self, bw: usize, lane: usize) -> u32 {
        let w = &self.eight(bw)[2 + (lane & 7) / 2];
        (w.load(crate::sync::Ordering::Acquire) >> ((lane & 1) * 32)) as u32
    }
}

#[cold]
#[inline(never)]
fn out_of_range() -> ! {
    panic!("rte-hash-with-hash: word index outside the table's zone (a bug, or a corrupt table)")
}

/// The lanes of a bucket's eight 16-bit signatures (lanes 0–3 in `w0`, 4–7 in `w1`, lowest
/// first) that equal `sig`: bit `2 * lane` set for each, every other bit clear.
#[inline(always)]
#[cfg_attr(
    all(target_arch = "x86_64", not(hugeshare_loom), not(miri), not(test)),
    allow(dead_code) // the fallback of `Mem::sig_candidates`, and its reference in a test
)]
pub(crate) fn sig_match(w0: u64, w1: u64, sig: u16) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi16, _mm_movemask_epi8, _mm_set1_epi16, _mm_set_epi64x,
        };
        // SAFETY: SSE2 is enabled for this build (the `cfg` above; it is part of the x86_64
        // baseline); these intrinsics only compute on values in registers, touching no memory.
        #[allow(unused_unsafe)]
        let bytes = unsafe {
            let lanes = _mm_set_epi64x(w1 as i64, w0 as i64);
            _mm_movemask_epi8(_mm_cmpeq_epi16(lanes, _mm_set1_epi16(sig as i16))) as u32
        };
        bytes & 0x5555
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let mut m = 0;
        for lane in 0..8 {
            let w = if lane < 4 { w0 } else { w1 };
            if (w >> ((lane & 3) * 16)) as u16 == sig {
                m |= 1 << (2 * lane);
            }
        }
        m
    }
}

/// Whether this CPU has the SSE4.2 CRC32 instruction.
pub(crate) fn has_crc32_instruction() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sse4.2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// CRC32-C of `data` from state `crc` (no inversion before or after), with the CPU instruction.
/// Must only be called when [`has_crc32_instruction`] returned true (it panics otherwise).
#[inline]
pub(crate) fn crc32c_hw(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            has_crc32_instruction(),
            "crc32c_hw called on a CPU without SSE4.2"
        );
        // SAFETY: the CPU supports SSE4.2 (checked just above; the check is a cached load).
        unsafe { crc32c_sse42(crc, data) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (crc, data);
        unreachable!("crc32c_hw called on a CPU without SSE4.2")
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(crc);
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(ch);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        c = _mm_crc32_u32(c, u32::from_le_bytes(b));
        rest = &rest[4..];
    }
    for &b in rest {
        c = _mm_crc32_u8(c, b);
    }
    c
}
