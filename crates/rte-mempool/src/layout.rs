//! The bytes of a pool in its zones, and the encoding of owner words.
//!
//! ```text
//! header zone MP_<name> (kind mempool)
//!   offset 0      Meta (256 B): magic, version, fingerprint, sizes, flags, name   (read-only)
//!   offset 256    Counters (256 B): ready flag and statistics                     (atomics)
//!   offset 512    CacheSlot × MAX_LCORES (only when cache_size > 0), 8,256 B each  (atomics)
//! object zone MP_<name>_0 (kind mempool-objects)
//!   offset 0      owner words: n × u64 (only with MempoolFlags::TRACK)           (atomics)
//!   then          n objects of `stride` bytes: element, then the private area
//! ring zone RG_MP_<name>: rte-ring of u32 object indexes, the free objects
//! ```
//!
//! Objects are named by their index everywhere in shared memory: no pointer is stored.

use crate::sync::{AtomicU32, AtomicU64};

/// "HSMPOOL" + format byte.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"HSMPOOL\x01");
/// Version of the layout below.
pub(crate) const VERSION: u32 = 1;
/// Where the counters start.
pub(crate) const COUNTERS_OFFSET: usize = 256;
/// Where the caches start.
pub(crate) const CACHES_OFFSET: usize = 512;
/// Entries of a cache's array: twice the largest cache (DPDK's `2 × RTE_MEMPOOL_CACHE_MAX_SIZE`),
/// room for a full cache plus a refill of `size + remaining`.
#[cfg(not(hugeshare_loom))]
pub(crate) const CACHE_OBJS: usize = 1024;
/// Entries of a cache's array in the model build (small, so loom's state stays small).
#[cfg(hugeshare_loom)]
pub(crate) const CACHE_OBJS: usize = 8;

/// The read-only header, written by the creator before the pool is marked ready.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Meta {
    pub magic: u64,
    pub version: u32,
    pub header_len: u32,
    pub fingerprint: u64,
    pub n: u32,
    pub elt_size: u32,
    pub priv_size: u32,
    pub stride: u32,
    pub cache_size: u32,
    pub flags: u32,
    pub objects_offset: u64,
    pub name_len: u32,
    pub _pad: u32,
    pub name: [u8; 32],
    pub _reserved: [u8; 160],
}

const _: () = assert!(core::mem::size_of::<Meta>() == COUNTERS_OFFSET);

/// Shared counters (statistics and the ready flag). Std's atomics in every build: the model
/// tests do not use them.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Counters {
    /// 0 while the creator populates the pool, 1 once it is usable.
    pub ready: std::sync::atomic::AtomicU32,
    pub _pad: std::sync::atomic::AtomicU32,
    /// Caches of dead members flushed back by recovery.
    pub caches_flushed: std::sync::atomic::AtomicU64,
    /// Objects those flushes returned.
    pub cache_objs_flushed: std::sync::atomic::AtomicU64,
    /// Objects held by dead members and returned (tracked pools).
    pub reclaimed: std::sync::atomic::AtomicU64,
    /// Objects found by an audit in no place at all and returned with `repair`.
    pub repaired: std::sync::atomic::AtomicU64,
    /// Times a tracked get found an object not marked free, or a put found one the putter did
    /// not hold: a broken ownership rule; and values read from the free ring, a cache or a
    /// transfer ring that named no object, dropped (must stay 0).
    pub violations: std::sync::atomic::AtomicU64,
    pub _more: [std::sync::atomic::AtomicU64; 26],
}

const _: () = assert!(core::mem::size_of::<Counters>() == CACHES_OFFSET - COUNTERS_OFFSET);

/// One per-lcore cache: its owner word, its length and a LIFO stack of object indexes.
///
/// Only the member owning the lcore touches `len` and `objs` (the group never gives an lcore to
/// two live members); a recoverer touches them only after taking the owner word from a member
/// that is no longer alive.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct CacheSlot {
    /// 0: nobody; otherwise an owner word ([`holder`]) or a recoverer's lock ([`locked`]).
    pub owner: AtomicU64,
    pub len: AtomicU32,
    pub _pad0: AtomicU32,
    pub _pad: [AtomicU64; 6],
    /// Objects as byte offsets from the pool's first object (`handle << shift`), so that a
    /// get is one add and a put one subtract per object.
    pub objs: [AtomicU64; CACHE_OBJS],
}

#[cfg(not(hugeshare_loom))]
const _: () = assert!(core::mem::size_of::<CacheSlot>() == 64 + 8 * CACHE_OBJS);

impl CacheSlot {
    /// An empty slot on the heap (model tests).
    #[cfg(hugeshare_loom)]
    pub(crate) fn boxed() -> Box<Self> {
        Box::new(Self {
            owner: AtomicU64::new(0),
            len: AtomicU32::new(0),
            _pad0: AtomicU32::new(0),
            _pad: std::array::from_fn(|_| AtomicU64::new(0)),
            objs: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }
}

/// Size of one cache slot in the header zone.
pub(crate) const CACHE_SLOT_LEN: usize = core::mem::size_of::<CacheSlot>();

/// A layout fingerprint: changes whenever a struct above changes size.
pub(crate) fn fingerprint() -> u64 {
    let parts = [
        core::mem::size_of::<Meta>() as u64,
        core::mem::size_of::<Counters>() as u64,
        CACHE_SLOT_LEN as u64,
        shmconfig::layout::MAX_LCORES as u64,
        VERSION as u64,
    ];
    parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
        (h ^ p).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ----- owner words -----
//
// An owner word is a u64: `kind << 62 | member << 32 | token`, where token is the process id of
// the incarnation that wrote it. 0 means "free / nobody". The token tells two incarnations of one
// member slot apart: a recoverer that saw member M not alive may replace a word naming M only
// with a compare-and-swap on the exact word it read, so it never touches what a later
// incarnation of M wrote.

/// Kind bits of a word naming a holder (object held, or cache owned).
pub(crate) const KIND_HELD: u64 = 1;
/// Kind bits of an object in transit through a ring (the word names the sender).
pub(crate) const KIND_TRANSIT: u64 = 2;
/// Kind bits of a cache locked by a recoverer.
pub(crate) const KIND_LOCKED: u64 = 3;
/// The free word.
pub(crate) const FREE: u64 = 0;

/// An owner word of `kind` for `member`, incarnation `token`.
#[inline(always)]
pub(crate) const fn word(kind: u64, member: u16, token: u32) -> u64 {
    (kind << 62) | ((member as u64) << 32) | token as u64
}
/// The word of a holder.
#[inline(always)]
pub(crate) const fn holder(member: u16, token: u32) -> u64 {
    word(KIND_HELD, member, token)
}
/// The word of a recoverer's lock.
#[inline(always)]
pub(crate) const fn locked(member: u16, token: u32) -> u64 {
    word(KIND_LOCKED, member, token)
}
/// The kind of a word.
#[inline(always)]
pub(crate) const fn kind_of(w: u64) -> u64 {
    w >> 62
}
/// The member a word names.
#[inline(always)]
pub(crate) const fn member_of(w: u64) -> u16 {
    (w >> 32) as u16
}
