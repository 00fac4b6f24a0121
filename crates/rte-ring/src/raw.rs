//! The unsafe code of `rte-ring`, kept in one place: the view of a zone as a ring (header,
//! records, slots) and the copies in and out of reserved slots.

use std::ptr::NonNull;

use shmconfig::Zone;

#[cfg(not(hugeshare_loom))]
use crate::layout::SHARED_OFFSET;
use crate::layout::{Meta, Shared, RECORD_WORDS, SLOTS_OFFSET};
use crate::sync::{AtomicU64, Ordering};

/// A slot as the ring stores it: the element itself, or loom's checked cell in the model build.
#[cfg(not(hugeshare_loom))]
pub(crate) type Slot<T> = T;
/// A slot as the ring stores it: the element itself, or loom's checked cell in the model build.
#[cfg(hugeshare_loom)]
pub(crate) type Slot<T> = loom::cell::UnsafeCell<T>;

/// Memory owned by a model ring (loom build): header by value, records and slots on the heap.
#[cfg(hugeshare_loom)]
struct Model<T> {
    shared: Box<Shared>,
    records: Box<[AtomicU64]>,
    slots: Box<[Slot<T>]>,
}

/// A ring's memory as mapped in this process: pointers derived from its zone, which the value
/// keeps alive.
pub(crate) struct Mem<T> {
    view: View<T>,
    zone: Option<Zone>,
    #[cfg(hugeshare_loom)]
    _model: Option<std::sync::Arc<Model<T>>>,
}

/// The pointers of a [`Mem`] without the zone that keeps them valid: a plain copyable value, so
/// that a single-member handle can keep it in registers across calls. Whoever holds a `View`
/// holds the `Mem` (through its `Ring`) for at least as long: [`Mem::view`] is the only way to
/// get one, and the handles keep their ring beside it.
pub(crate) struct View<T> {
    shared: NonNull<Shared>,
    records: NonNull<AtomicU64>,
    slots: NonNull<Slot<T>>,
    size: u32,
}

impl<T> Clone for View<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for View<T> {}

impl<T> Clone for Mem<T> {
    fn clone(&self) -> Self {
        Self {
            view: self.view,
            zone: self.zone.clone(),
            #[cfg(hugeshare_loom)]
            _model: self._model.clone(),
        }
    }
}

impl<T> std::ops::Deref for Mem<T> {
    type Target = View<T>;
    #[inline(always)]
    fn deref(&self) -> &View<T> {
        &self.view
    }
}

impl<T> Mem<T> {
    /// The zone, if the ring lives in one.
    pub(crate) fn zone(&self) -> Option<&Zone> {
        self.zone.as_ref()
    }

    /// The pointers alone (see [`View`]: the caller keeps this `Mem` alive while it uses them).
    #[inline(always)]
    pub(crate) fn view(&self) -> View<T> {
        self.view
    }
}

// SAFETY: `Mem` is pointers into memory kept alive by `zone` (Send + Sync) or by the model `Arc`;
// the header is made of atomics and slots are only touched inside reservations the protocol
// grants to one thread at a time, so handing the pointers to another thread is sound for
// `T: Send` elements.
unsafe impl<T: Send> Send for Mem<T> {}
// SAFETY: as for `Send`: shared access goes through atomics and exclusive reservations only.
unsafe impl<T: Send> Sync for Mem<T> {}
// SAFETY: as for `Mem`: a `View` is used only beside the `Mem` it came from, whose memory is
// shared through atomics and exclusive reservations only.
unsafe impl<T: Send> Send for View<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for View<T> {}

/// The zone's header, read by value, if the zone is long enough to hold one and its creator has
/// published it (the magic is stored last, with release ordering).
pub(crate) fn read_meta(zone: &Zone) -> Option<Meta> {
    if zone.len() < SLOTS_OFFSET || zone.as_ptr() as usize % 128 != 0 {
        return None;
    }
    // SAFETY: the zone is at least SLOTS_OFFSET bytes and 128-aligned, so its first 8 bytes are
    // an aligned, mapped u64; all members access them atomically only.
    let magic = unsafe { std::sync::atomic::AtomicU64::from_ptr(zone.as_ptr().cast::<u64>()) };
    if magic.load(Ordering::Acquire) == 0 {
        return None;
    }
    // SAFETY: `Meta` is 128 plain bytes at the aligned start of the zone; after the acquire load
    // of a non-zero magic its creator no longer writes them (it wrote them before the magic), and
    // any bit pattern is a valid `Meta`.
    Some(unsafe { zone.as_ptr().cast::<Meta>().read_volatile() })
}

/// Write `meta` into a zone this caller has just reserved, publishing the magic last.
pub(crate) fn write_meta(zone: &Zone, meta: &Meta) {
    assert!(zone.len() >= SLOTS_OFFSET && zone.as_ptr() as usize % 128 == 0);
    let base = zone.as_ptr().cast::<Meta>();
    let mut unpublished = *meta;
    let magic = unpublished.magic;
    unpublished.magic = 0;
    // SAFETY: the zone was reserved by the caller a moment ago (zeroed, at least SLOTS_OFFSET
    // bytes, 128-aligned); other members read it only after seeing the magic, which is still 0.
    unsafe { base.write_volatile(unpublished) };
    // SAFETY: the first 8 bytes are an aligned u64 accessed atomically by every member.
    let m = unsafe { std::sync::atomic::AtomicU64::from_ptr(zone.as_ptr().cast::<u64>()) };
    m.store(magic, Ordering::Release);
}

impl<T: Copy> Mem<T> {
    /// View `zone` as a ring of `size` slots of `T`, records at `records_offset`.
    ///
    /// The caller has checked the header: `zone.len()` covers the slots and both record arrays,
    /// `size` is a power of two, and `T`'s size and alignment are those recorded.
    #[cfg(hugeshare_loom)]
    pub(crate) fn from_zone(_zone: Zone, _size: u32, _records_offset: usize) -> Self {
        panic!("zone-backed rings do not exist in the loom build: use the model ring");
    }

    /// View `zone` as a ring of `size` slots of `T`, records at `records_offset`.
    ///
    /// The caller has checked the header: `zone.len()` covers the slots and both record arrays,
    /// `size` is a power of two, and `T`'s size and alignment are those recorded.
    #[cfg(not(hugeshare_loom))]
    pub(crate) fn from_zone(zone: Zone, size: u32, records_offset: usize) -> Self {
        let need = records_offset + RECORD_WORDS * size as usize * 8;
        assert!(size.is_power_of_two() && zone.len() >= need);
        assert!(records_offset >= SLOTS_OFFSET + size as usize * core::mem::size_of::<T>());
        assert!(zone.as_ptr() as usize % 128 == 0 && core::mem::align_of::<T>() <= 128);
        assert!(records_offset % 8 == 0);
        wide_init();
        let base = zone.as_ptr();
        // SAFETY: the offsets were checked against `zone.len()` just above, so each pointer stays
        // inside the zone; the base is non-null because it comes from a `Zone`.
        let (shared, slots, records) = unsafe {
            (
                NonNull::new_unchecked(base.add(SHARED_OFFSET).cast::<Shared>()),
                NonNull::new_unchecked(base.add(SLOTS_OFFSET).cast::<Slot<T>>()),
                NonNull::new_unchecked(base.add(records_offset).cast::<AtomicU64>()),
            )
        };
        Self {
            view: View {
                shared,
                records,
                slots,
                size,
            },
            zone: Some(zone),
            #[cfg(hugeshare_loom)]
            _model: None,
        }
    }

    /// A ring in memory of its own (the loom build).
    #[cfg(hugeshare_loom)]
    pub(crate) fn model(size: u32) -> Self
    where
        T: zerocopy::FromZeros,
    {
        let model = std::sync::Arc::new(Model {
            shared: Box::new(Shared::new()),
            records: (0..RECORD_WORDS as u32 * size)
                .map(|_| AtomicU64::new(0))
                .collect(),
            slots: (0..size)
                .map(|_| loom::cell::UnsafeCell::new(T::new_zeroed()))
                .collect(),
        });
        Self {
            view: View {
                shared: NonNull::from(&*model.shared),
                records: NonNull::from(&model.records[0]),
                slots: NonNull::from(&model.slots[0]),
                size,
            },
            zone: None,
            _model: Some(model),
        }
    }
}

impl<T: Copy> View<T> {
    /// The shared header.
    #[inline(always)]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: `shared` points at a `Shared` inside memory kept alive by `self`; it is made of
        // atomics only (valid when zeroed), so a shared reference to it is sound.
        unsafe { self.shared.as_ref() }
    }

    /// The number of slots.
    #[inline(always)]
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// The reservation record for position `pos` of the producer (`side` 0) or consumer (1) side.
    #[inline(always)]
    pub(crate) fn record(&self, side: usize, pos: u32) -> &AtomicU64 {
        let i = side * self.size as usize + (pos & (self.size - 1)) as usize;
        // SAFETY: `i < 2 * size`, and the records array holds 2 × size atomics inside the memory
        // kept alive by `self`.
        unsafe { &*self.records.as_ptr().add(i) }
    }

    /// The RTS completion mark for position `pos` of the producer (`side` 0) or consumer (1)
    /// side: `pack(pos, member, n)` left by a member that finished its reservation `[pos, pos +
    /// n)` before its turn to publish came (see the crate docs, "RTS"); 0 or another position
    /// otherwise.
    #[inline(always)]
    pub(crate) fn done_mark(&self, side: usize, pos: u32) -> &AtomicU64 {
        let i = (2 + side) * self.size as usize + (pos & (self.size - 1)) as usize;
        // SAFETY: `i < 4 * size`, and the records region holds RECORD_WORDS (4) × size atomics
        // inside the memory kept alive by `self`.
        unsafe { &*self.records.as_ptr().add(i) }
    }

    /// Move `side`'s head from `old` to `new` with a CAS (the multi-member modes). On success the
    /// caller owns the slots between the two positions until it publishes them.
    ///
    /// The protocol (crate docs) computes `new` so that the range is free space (producers) or
    /// published entries (consumers); that is what makes the returned [`Claim`] exclusive.
    #[inline(always)]
    pub(crate) fn claim_cas(&self, head: &AtomicU64, old: u64, new: u64) -> Result<Claim, u64> {
        head.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Claim::between(old, new))
    }

    /// Copy `src` into the claimed slots (the whole claim); runs of `WIDE_FROM` bytes or more
    /// with 32-byte moves where the CPU has them (see [`WIDE_SHARED`]).
    #[inline(always)]
    pub(crate) fn write<const WIDE_FROM: usize>(&self, c: &Claim, src: &[T]) {
        assert!(src.len() == c.n as usize);
        let n = src.len();
        let idx = (c.pos & (self.size - 1)) as usize;
        let size = self.size as usize;
        // SAFETY: the runs lie inside the slot array (idx + n <= size in the first case;
        // idx + first == size and n - first <= size in the second, n <= size asserted there),
        // and the claim gives this thread the slots [pos, pos + n) until it publishes them.
        unsafe {
            if idx + n <= size {
                copy_in::<T, WIDE_FROM>(self.slots.as_ptr().add(idx), src.as_ptr(), n);
            } else {
                // (Only here: in the first case `idx + n <= size` says it already.)
                assert!(n <= size);
                let first = size - idx;
                copy_in::<T, WIDE_FROM>(self.slots.as_ptr().add(idx), src.as_ptr(), first);
                copy_in::<T, WIDE_FROM>(self.slots.as_ptr(), src.as_ptr().add(first), n - first);
            }
        }
    }

    /// Copy `dst.len()` elements out of the claimed slots, starting `rel` positions into the
    /// claim (`WIDE_FROM` as in [`View::write`]).
    #[inline(always)]
    pub(crate) fn read<const WIDE_FROM: usize>(&self, c: &Claim, rel: u32, dst: &mut [T]) {
        assert!(rel as usize + dst.len() <= c.n as usize);
        let n = dst.len();
        let idx = (c.pos.wrapping_add(rel) & (self.size - 1)) as usize;
        let size = self.size as usize;
        // SAFETY: as in `write` (n <= size asserted in the wrapping case): the runs are inside
        // the slot array, inside the caller's claim on the consumer side, and the producers
        // published them (the consumer saw their tail past them with acquire ordering before
        // it claimed them).
        unsafe {
            if idx + n <= size {
                copy_out::<T, WIDE_FROM>(dst.as_mut_ptr(), self.slots.as_ptr().add(idx), n);
            } else {
                assert!(n <= size);
                let first = size - idx;
                copy_out::<T, WIDE_FROM>(dst.as_mut_ptr(), self.slots.as_ptr().add(idx), first);
                copy_out::<T, WIDE_FROM>(
                    dst.as_mut_ptr().add(first),
                    self.slots.as_ptr(),
                    n - first,
                );
            }
        }
    }

    /// The first element of a consumer claim, by value.
    #[inline(always)]
    pub(crate) fn read_one(&self, c: &Claim) -> T {
        assert!(c.n >= 1);
        let idx = (c.pos & (self.size - 1)) as usize;
        // SAFETY: `idx < size`, inside the slot array; the slot is in the caller's consumer
        // claim and was published by the producers (see `read`).
        unsafe { read_slot(self.slots.as_ptr().add(idx)) }
    }

    /// The slots of a claim, in place: the run up to the end of the slot array and the run
    /// that wraps to its start (empty when the claim does not wrap).
    ///
    /// Only the single-member handles call this, for claims they hold for the lifetime of the
    /// returned slices (the borrow of the handle outlives them): a producer's free slots, which
    /// no consumer reads until the producer publishes them, or a consumer's published slots,
    /// which no producer writes until the consumer releases them.
    #[cfg(not(hugeshare_loom))]
    pub(crate) fn slots<'a>(&self, c: &Claim) -> (&'a [T], &'a [T]) {
        let (idx, first, second) = self.runs(c);
        // SAFETY: as in `slots_mut`, read-only: the runs are inside the slot array and the
        // caller's claim keeps every writer away from them while 'a lasts.
        unsafe {
            (
                std::slice::from_raw_parts(self.slots.as_ptr().add(idx), first),
                std::slice::from_raw_parts(self.slots.as_ptr(), second),
            )
        }
    }

    /// As [`View::slots`], writable (a producer's reserved free slots).
    #[cfg(not(hugeshare_loom))]
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn slots_mut<'a>(&self, c: &Claim) -> (&'a mut [T], &'a mut [T]) {
        let (idx, first, second) = self.runs(c);
        // SAFETY: both runs lie inside the slot array ([idx, idx + first) and [0, second),
        // disjoint because first + second = n <= size); the claim gives the caller exclusive
        // use of these slots for as long as it holds them (see above), which bounds 'a; any
        // bytes are a valid `T` (ring elements are `FromBytes`) and the slots are aligned for
        // `T`.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.slots.as_ptr().add(idx), first),
                std::slice::from_raw_parts_mut(self.slots.as_ptr(), second),
            )
        }
    }

    /// A claim's slots as two runs: (start index, length up to the end of the array, length of
    /// the part that wraps to its start).
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn runs(&self, c: &Claim) -> (usize, usize, usize) {
        let idx = (c.pos & (self.size - 1)) as usize;
        let n = c.n as usize;
        let to_end = self.size as usize - idx;
        if n <= to_end {
            // The usual case, apart: the caller's code for one run needs no second one.
            return (idx, n, 0);
        }
        assert!(c.n <= self.size);
        (idx, to_end, n - to_end)
    }
}

/// Read one slot.
///
/// # Safety
/// `src` is a published slot the caller owns exclusively.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
unsafe fn read_slot<T: Copy>(src: *const Slot<T>) -> T {
    // SAFETY: forwarded from the caller.
    unsafe { src.read() }
}

/// Read one loom-checked slot.
///
/// # Safety
/// As for the non-loom version.
#[cfg(hugeshare_loom)]
unsafe fn read_slot<T: Copy>(src: *const Slot<T>) -> T {
    // SAFETY: forwarded from the caller; loom checks the access.
    unsafe { (*src).with(|p| p.read()) }
}

/// Exclusive use of the slots `[pos, pos + n)`, obtained by moving a head over them (`n` is 0
/// for "no claim": the reservation calls return one with the room they saw).
///
/// Sixteen bytes and no padding, on purpose: a claim with a `bool` beside the words was copied
/// by LLVM with overlapping narrow moves of its padding, a store-forwarding stall that doubled
/// the cost of a one-element MT enqueue and dequeue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) pos: u32,
    pub(crate) n: u32,
    /// 0 when the side's tail was at `pos` when the claim was made (nothing earlier to wait
    /// for); otherwise the head word this claim replaced, which names the predecessor
    /// reservation. For a claim of the thread a side is biased to, the side's (biased) head word
    /// (such a claim never waits).
    pub(crate) prev: u64,
}

impl Claim {
    /// No claim.
    pub(crate) const NONE: Claim = Claim {
        pos: 0,
        n: 0,
        prev: 0,
    };

    /// Whether the claim has nothing earlier to wait for.
    #[inline(always)]
    pub(crate) fn alone(&self) -> bool {
        self.prev == 0
    }

    /// The claim of a single-member handle at `pos` (no head word: nothing to wait for).
    pub(crate) fn held(pos: u32, n: u32) -> Self {
        Claim { pos, n, prev: 0 }
    }

    /// A span to read at `pos` (a snapshot's: nothing to wait for or publish).
    pub(crate) fn at(pos: u32, n: u32) -> Self {
        Claim { pos, n, prev: 0 }
    }

    /// The claim of the thread a side is biased to (its head word `bw`), at `pos` (the tail).
    #[inline(always)]
    pub(crate) fn biased(pos: u32, n: u32, bw: u64) -> Self {
        Claim { pos, n, prev: bw }
    }

    fn between(old: u64, new: u64) -> Self {
        let pos = old as u32;
        Claim {
            pos,
            n: (new as u32).wrapping_sub(pos),
            prev: old,
        }
    }
}

/// Copy `n` elements into slots.
///
/// # Safety
/// `dst..dst+n` are slots the caller owns exclusively; `src..src+n` is readable.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
unsafe fn copy_in<T: Copy, const WIDE_FROM: usize>(dst: *mut Slot<T>, src: *const T, n: usize) {
    // SAFETY: forwarded from the caller; slots and elements have the same type here.
    unsafe { copy_elems::<T, WIDE_FROM>(dst, src, n) }
}

/// Copy `n` elements out of slots.
///
/// # Safety
/// `src..src+n` are published slots the caller owns exclusively; `dst..dst+n` is writable.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
unsafe fn copy_out<T: Copy, const WIDE_FROM: usize>(dst: *mut T, src: *const Slot<T>, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { copy_elems::<T, WIDE_FROM>(dst, src, n) }
}

/// The element copy: whole elements, in straight-line runs of 8, 4, 2 and 1, so the compiler
/// emits moves (vector moves where it can) rather than a call to `memcpy` for these short runs.
/// Measured (`cargo xtask bench ring`, Zen 4): a loop of 4 with a tail of 2 and 1 took about 27
/// instructions to copy 8 elements, where these take 13; one-core bulk 8 went from 14.9 to
/// 12.9 cycles for SP/SC and from 19.9 to 16.4 for MP/MC (with the checks moved off the fast
/// path in `write`, `read` and the consumer handle).
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, both aligned for `T`, not overlapping.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
unsafe fn copy_elems<T: Copy, const WIDE_FROM: usize>(dst: *mut T, src: *const T, n: usize) {
    const { assert!(WIDE_FROM >= 64, "copy_wide needs at least 64 bytes") };
    // (`WIDE_FROM == usize::MAX`: never; the test below is then constant-folded away.)
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if n * core::mem::size_of::<T>() >= WIDE_FROM && wide() {
        // SAFETY: the CPU has AVX2 (checked just above); the byte ranges are those of the
        // caller's contract.
        unsafe {
            copy_wide(
                dst.cast::<u8>(),
                src.cast::<u8>(),
                n * core::mem::size_of::<T>(),
            )
        };
        return;
    }
    // SAFETY: every index used is below `n`, inside both ranges by the caller's contract.
    unsafe {
        // Runs of 8, then the 0-7 left over by the bits of `n` (what the runs left is `n % 8`),
        // spelled out: as a loop, LLVM turns them into a call to `memcpy`. Below 16 there is
        // no loop at all (a bulk of 8 is four branches around its eight moves).
        let mut i = 0;
        if n >= 16 {
            while i + 8 <= n {
                copy_run::<T, 8>(dst, src, i);
                i += 8;
            }
        } else if n & 8 != 0 {
            copy_run::<T, 8>(dst, src, 0);
        }
        let i = n & !7;
        if n & 4 != 0 {
            copy_run::<T, 4>(dst, src, i);
        }
        let i = n & !3;
        if n & 2 != 0 {
            copy_run::<T, 2>(dst, src, i);
        }
        if n & 1 != 0 {
            copy_run::<T, 1>(dst, src, n - 1);
        }
    }
}

/// Copy elements `at..at + K` (all read, then all written: straight-line moves).
///
/// # Safety
/// As [`copy_elems`], for the range `at..at + K`.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
unsafe fn copy_run<T: Copy, const K: usize>(dst: *mut T, src: *const T, at: usize) {
    // SAFETY: the caller's contract: `at..at + K` lies inside both ranges.
    unsafe {
        let v: [T; K] = src.add(at).cast::<[T; K]>().read_unaligned();
        dst.add(at).cast::<[T; K]>().write_unaligned(v);
    }
}

/// The shared (multi-member) calls never copy with 32-byte moves. Measured on Zen 4 (`cargo
/// xtask bench ring`, the two builds alternating): 32-byte moves from 64 bytes on made the
/// one-core MP/MC rows faster (bulk 8 22 → 19 cycles, bulk 32 35 → 23) but the rows where
/// producers and consumers run on different cores slower (two cores, bulk 8: 32 → 40 cycles
/// per element; two processes, burst 32: 4.9 → 5.6), and those are how the shared calls are
/// used. The cost is in the consumer's 32-byte loads of lines another core just wrote (with
/// 32-byte stores and 16-byte loads the cross-core rows stayed fast, but one-core store-to-load
/// forwarding failed between the two widths).
pub(crate) const WIDE_SHARED: usize = usize::MAX;

/// From this many bytes on, the single-member handles copy with 32-byte AVX2 moves when the CPU
/// has them ([`copy_wide`]). Their bulk 8 is bound by store-to-load forwarding from the
/// caller's buffer to the slot and back, which is slower through 32-byte moves (13.6 → 14.6
/// cycles), so only longer runs take them: one core, bulk 32 24.7 → 19 cycles; two cores, bulk
/// 32 about 5% faster; two processes, burst 32 about 7% slower (see [`WIDE_SHARED`] for why).
pub(crate) const WIDE_HELD: usize = 128;

/// Whether this CPU has AVX2: 1 no, 2 yes, 0 not yet asked (`std`'s detection is a call and
/// a few branches, too much for a copy of 16 elements).
#[cfg(all(target_arch = "x86_64", not(miri), not(hugeshare_loom)))]
static WIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether [`copy_wide`] may be used here.
#[cfg(all(target_arch = "x86_64", not(miri), not(hugeshare_loom)))]
#[inline(always)]
fn wide() -> bool {
    WIDE.load(std::sync::atomic::Ordering::Relaxed) == 2
}

/// Ask the CPU once, when a ring's memory is first viewed (so the copies never call anything).
#[cfg(not(hugeshare_loom))]
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

/// Copy `len` bytes (at least 64) with 32-byte AVX2 moves, 64 bytes a step, the last step
/// placed at `len - 64` (overlapping the one before it when `len` is not a multiple of 64).
/// Written as inline assembly, not as a function compiled for AVX2: a call would make every
/// caller save its registers around it (measured: slower on every bulk size), while this
/// clobbers two vector registers only. In a build without AVX it ends with `vzeroupper`, so
/// the SSE code around it pays no AVX transition cost.
///
/// # Safety
/// The CPU supports AVX2; `src..src+len` readable, `dst..dst+len` writable, not overlapping;
/// `len >= 64`.
#[cfg(all(target_arch = "x86_64", not(miri), not(hugeshare_loom)))]
#[inline(always)]
unsafe fn copy_wide(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: every 64-byte step starts at an offset <= len - 64, inside both ranges (caller's
    // contract); unaligned moves need no alignment; the CPU has AVX2 (caller's contract). Only
    // ymm0/ymm1 and the flags are written besides the destination; `vzeroupper` leaves the low
    // 128 bits of every vector register (all the non-AVX code around it uses) untouched.
    unsafe {
        core::arch::asm!(
            "xor {i:e}, {i:e}",
            "cmp {i}, {last}",
            "jae 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{s} + {i}]",
            "vmovdqu ymm1, ymmword ptr [{s} + {i} + 32]",
            "vmovdqu ymmword ptr [{d} + {i}], ymm0",
            "vmovdqu ymmword ptr [{d} + {i} + 32], ymm1",
            "add {i}, 64",
            "cmp {i}, {last}",
            "jb 2b",
            "3:",
            "vmovdqu ymm0, ymmword ptr [{s} + {last}]",
            "vmovdqu ymm1, ymmword ptr [{s} + {last} + 32]",
            "vmovdqu ymmword ptr [{d} + {last}], ymm0",
            "vmovdqu ymmword ptr [{d} + {last} + 32], ymm1",
            s = in(reg) src,
            d = in(reg) dst,
            last = in(reg) len - 64,
            i = out(reg) _,
            out("ymm0") _,
            out("ymm1") _,
            options(nostack),
        );
    }
    // Only where the compiler emits SSE code: in a build for AVX (`-C target-cpu=native`, say)
    // it may keep 256-bit values in other registers across this point, which `vzeroupper`
    // would clear, and its VEX code pays no transition cost anyway.
    #[cfg(not(target_feature = "avx"))]
    // SAFETY: clears the upper halves of the vector registers, which code compiled without AVX
    // never uses; touches no memory, the stack or the flags.
    unsafe {
        core::arch::asm!("vzeroupper", options(nomem, nostack, preserves_flags));
    }
}

/// Copy `n` elements into loom-checked slots.
///
/// # Safety
/// As for the non-loom version.
#[cfg(hugeshare_loom)]
unsafe fn copy_in<T: Copy, const WIDE_FROM: usize>(dst: *mut Slot<T>, src: *const T, n: usize) {
    for i in 0..n {
        // SAFETY: forwarded from the caller; loom checks that no other thread touches the slot
        // at the same time.
        unsafe { (*dst.add(i)).with_mut(|p| p.write(src.add(i).read())) }
    }
}

/// Copy `n` elements out of loom-checked slots.
///
/// # Safety
/// As for the non-loom version.
#[cfg(hugeshare_loom)]
unsafe fn copy_out<T: Copy, const WIDE_FROM: usize>(dst: *mut T, src: *const Slot<T>, n: usize) {
    for i in 0..n {
        // SAFETY: forwarded from the caller; loom checks the access.
        unsafe { dst.add(i).write((*src.add(i)).with(|p| p.read())) }
    }
}
