//! The bytes of a ring in its zone: a read-only header ([`Meta`]), the shared counters
//! ([`Shared`]), the slots and the reservation records.
//!
//! ```text
//! offset 0     Meta (128 B): magic, version, layout fingerprint, flags, size, capacity,
//!              element size/align/type id, name            (written once, before the magic)
//! offset 128   Shared: producer side (256 B: one line with the head word, the cached consumer
//!              tail, the bias words, the tail and the hole count), consumer side (256 B),
//!              statistics (64 B), abandoned-range table (128 B)
//! offset 896   slots: size × element size
//! then         reservation records: size × u64 per side (producers, then consumers), then
//!              RTS completion marks: size × u64 per side (producers, then consumers)
//! ```
//!
//! Everything is a position or a count: no pointer is stored, so the zone may be mapped at any
//! address by any member or guest.

use crate::sync::{AtomicU32, AtomicU64};

/// "HSRING" + format byte, little-endian: the first 8 bytes of every ring zone.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"HSRING\x01\x00");
/// Version of the layout below; bumped on any change of meaning.
pub(crate) const VERSION: u32 = 7;
/// Bias generations per side: after this many biases ended, a side is never biased again (each
/// revocation costs a membarrier call, a few microseconds; a side that keeps changing hands is
/// left to the multi-member protocol).
pub(crate) const MAX_REVOKES: u32 = 4;
/// Number of abandoned-range entries (see the crate docs, "Dead members").
pub(crate) const NHOLES: usize = 16;
/// Where [`Shared`] starts.
pub(crate) const SHARED_OFFSET: usize = 128;
/// Where the slots start.
pub(crate) const SLOTS_OFFSET: usize = SHARED_OFFSET + core::mem::size_of::<SharedLayout>();
/// Longest ring name: the zone is called `RG_<name>` and zone names have at most 63 bytes.
pub const RING_NAME_MAX: usize = shmconfig::ZONE_NAME_MAX - 3;
/// The alignment of a ring's zone: [`Ring::create`](crate::Ring::create) reserves it so
/// aligned, and [`Ring::lookup`](crate::Ring::lookup) refuses a zone that is not (its shared
/// counters sit on lines of their own, 128 bytes apart).
pub const RING_ZONE_ALIGN: usize = 128;

/// The read-only header at offset 0, written by the creator before it publishes the magic.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Meta {
    pub magic: u64,
    pub version: u32,
    pub header_len: u32,
    pub fingerprint: u64,
    pub flags: u32,
    pub size: u32,
    pub capacity: u32,
    pub elem_size: u32,
    pub elem_align: u32,
    pub htd_max: u32,
    pub type_id: u64,
    pub records_offset: u32,
    pub name_len: u32,
    pub name: [u8; 64],
}

const _: () = assert!(core::mem::size_of::<Meta>() == SHARED_OFFSET);
const _: () = assert!(SHARED_OFFSET % core::mem::align_of::<SharedLayout>() == 0);
const _: () = assert!(core::mem::align_of::<SharedLayout>() <= RING_ZONE_ALIGN);

/// One side (producers or consumers) of the ring, on one cache line (the next one is padding,
/// past the adjacent-line prefetch): the head, the cached copy of the other side's tail, the
/// bias words and the tail, as DPDK keeps a side's head and tail together. An MT operation
/// moves the head and then the tail, so with both on one line it takes one line from the
/// previous member instead of two (layout 6 kept the tail on a line of its own: the mempool's
/// no-cache two-core rows went from 18 to 22 M objects/s at bulk 1, 66 to 70 M at bulk 4; the
/// ring bench's two-core rows, one producer thread and one consumer thread, showed no
/// consistent difference).
#[derive(Debug)]
#[repr(C, align(128))]
pub(crate) struct Side {
    /// `pos | member << 32 | n << 48`: where the next reservation starts, and who made the last
    /// one and how long it is (so a waiter knows whose work it waits for).
    pub head: AtomicU64,
    /// The other side's tail as last seen by a member of this side.
    pub cached_other: AtomicU32,
    /// How many biases of this side ended (revoked or dropped); a bias taken when it was `g`
    /// is bias generation `g`, and from [`MAX_REVOKES`] on the side is never biased again.
    pub revokes: AtomicU32,
    /// Per bias generation: non-zero while the thread the side is biased to has an operation in
    /// flight (see the crate docs, "Biased sides"). Written by that generation's holder only.
    pub busy: [AtomicU32; MAX_REVOKES as usize],
    /// Everything before this position is published to the other side.
    pub tail: AtomicU32,
    /// Producer side: the number of abandoned ranges consumers have not yet stepped over.
    pub holes: AtomicU32,
    _pad: [u32; 24],
}

/// Counters of elements lost with dead members.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Stats {
    /// Elements reserved by producers that died before publishing them (never delivered).
    pub abandoned_enq: AtomicU64,
    /// Elements reserved by consumers that died before finishing (lost with them).
    pub abandoned_deq: AtomicU64,
}

/// The shared, mutable part of the header.
#[derive(Debug)]
#[repr(C, align(128))]
pub(crate) struct Shared {
    pub prod: Side,
    pub cons: Side,
    pub stats: Stats,
    /// Abandoned producer ranges: `start | n << 32`, 0 when free.
    pub holes: [AtomicU64; NHOLES],
}

/// The layout the zone uses (std atomics; a loom build constructs [`Shared`] by value instead).
#[allow(dead_code)]
#[repr(C, align(128))]
pub(crate) struct SharedLayout {
    prod: [u8; 256],
    cons: [u8; 256],
    stats: [u8; 64],
    holes: [u64; NHOLES],
}

#[cfg(not(hugeshare_loom))]
const _: () = assert!(core::mem::size_of::<Shared>() == core::mem::size_of::<SharedLayout>());
#[cfg(not(hugeshare_loom))]
const _: () = assert!(core::mem::align_of::<Shared>() == core::mem::align_of::<SharedLayout>());

impl Side {
    #[cfg(hugeshare_loom)]
    fn new() -> Self {
        Side {
            head: AtomicU64::new(0),
            cached_other: AtomicU32::new(0),
            revokes: AtomicU32::new(0),
            busy: core::array::from_fn(|_| AtomicU32::new(0)),
            _pad: [0; 24],
            tail: AtomicU32::new(0),
            holes: AtomicU32::new(0),
        }
    }
}

impl Shared {
    /// A fresh header by value (the loom build: its atomics cannot live in zeroed bytes).
    #[cfg(hugeshare_loom)]
    pub(crate) fn new() -> Self {
        Shared {
            prod: Side::new(),
            cons: Side::new(),
            stats: Stats {
                abandoned_enq: AtomicU64::new(0),
                abandoned_deq: AtomicU64::new(0),
            },
            holes: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A fingerprint of the layout constants, recorded in [`Meta`] and checked on lookup.
pub(crate) const fn fingerprint() -> u64 {
    let parts = [
        core::mem::size_of::<Meta>() as u64,
        SHARED_OFFSET as u64,
        SLOTS_OFFSET as u64,
        256,
        64,
        NHOLES as u64,
        RECORD_WORDS as u64,
        MAX_REVOKES as u64,
        VERSION as u64,
    ];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < parts.len() {
        h ^= parts[i];
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Words per slot after the slots: a reservation record and an RTS completion mark, per side.
pub(crate) const RECORD_WORDS: usize = 4;

/// Zone bytes for a ring of `size` slots of `esize` bytes: header, slots, then the record
/// arrays and the completion-mark arrays ([`RECORD_WORDS`] words per slot). Returns (zone
/// length, offset of the records).
pub(crate) fn zone_len(size: u32, esize: usize) -> (usize, usize) {
    let slots_end = SLOTS_OFFSET + size as usize * esize;
    let records = slots_end.next_multiple_of(64);
    (records + RECORD_WORDS * size as usize * 8, records)
}

/// Pack a head word or a reservation record.
#[inline(always)]
pub(crate) const fn pack(pos: u32, member: u16, n: u16) -> u64 {
    pos as u64 | (member as u64) << 32 | (n as u64) << 48
}

/// Unpack a head word or a reservation record: `(pos, member, n)`.
#[inline(always)]
pub(crate) const fn unpack(w: u64) -> (u32, u16, u16) {
    (w as u32, (w >> 32) as u16, (w >> 48) as u16)
}
