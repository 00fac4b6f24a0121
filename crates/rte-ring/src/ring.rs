//! [`Ring`]: the handle, creation and lookup, and the enqueue/dequeue protocol.

use std::fmt;
use std::sync::Arc;

use shmconfig::{Liveness, MemberId, MemberState, Zone, ZoneError, ZoneKind, ZoneRequest, Zones};

use crate::bias;
use crate::element::RingElement;
use crate::error::RingError;
use crate::layout::{
    fingerprint, pack, unpack, zone_len, Meta, Shared, Side, MAGIC, MAX_REVOKES, NHOLES,
    RING_NAME_MAX, RING_ZONE_ALIGN, SLOTS_OFFSET, VERSION,
};
use crate::raw::{self, Claim, Mem, WIDE_HELD, WIDE_SHARED};
use crate::single::{SingleConsumer, SingleProducer};
use crate::sync::{self, AtomicU32, Ordering::*};

bitflags::bitflags! {
    /// Creation flags, with DPDK's values and meanings (`RING_F_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RingFlags: u32 {
        /// The default enqueue is single-producer: the members promise that at most one
        /// producer runs at a time (no atomic read-modify-write on the fast path).
        const SP_ENQ = 0x1;
        /// The default dequeue is single-consumer (see [`RingFlags::SP_ENQ`]).
        const SC_DEQ = 0x2;
        /// The ring holds exactly `count` elements (its slot array is the next power of two
        /// above `count`), instead of `count - 1` with `count` a power of two.
        const EXACT_SZ = 0x4;
        /// Producers use the relaxed tail sync mode ([`SyncMode::Rts`]).
        const MP_RTS_ENQ = 0x8;
        /// Consumers use the relaxed tail sync mode ([`SyncMode::Rts`]).
        const MC_RTS_DEQ = 0x10;
        /// Producers are serialised, one operation in flight at a time ([`SyncMode::Hts`]).
        const MP_HTS_ENQ = 0x20;
        /// Consumers are serialised, one operation in flight at a time ([`SyncMode::Hts`]).
        const MC_HTS_DEQ = 0x40;
    }
}

/// How the members of one side (producers or consumers) synchronise with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// Many members at once: reserve by CAS on the head, publish in reservation order. A side
    /// used by one thread at a time is biased to it, and that thread's calls take the
    /// single-member path until another thread's call revokes the bias (see the crate docs,
    /// "Biased sides").
    Mt,
    /// One member at a time: the side is used through a [`SingleProducer`] or
    /// [`SingleConsumer`] handle that holds it (plain loads and stores, no read-modify-write).
    /// The shared [`Ring`] calls given this mode, or on a side created with
    /// [`RingFlags::SP_ENQ`]/[`RingFlags::SC_DEQ`], run [`SyncMode::Mt`]: a promise made in
    /// safe code cannot be checked across processes, so it is never taken on trust.
    St,
    /// Head/tail sync: a member waits until no operation of its side is in flight, then
    /// reserves; one operation in flight at a time.
    Hts,
    /// Relaxed tail sync, for overcommitted or preemptible CPUs: a member that finishes before
    /// an earlier reservation of its side does not wait for it; it leaves a completion mark and
    /// returns, and whoever brings the tail to its reservation moves the tail over it. The head
    /// runs at most `htd_max` (capacity / 8) positions ahead of the tail: a member that finds it
    /// further ahead waits (and looks for dead members while it does). RTS belongs to a side:
    /// every call on a side created with [`RingFlags::MP_RTS_ENQ`]/[`RingFlags::MC_RTS_DEQ`]
    /// runs as RTS, and an RTS call on another side runs as [`SyncMode::Mt`].
    Rts,
}

/// Whether an operation moves all the elements asked for or as many as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behavior {
    /// All or nothing (DPDK's "bulk").
    Fixed,
    /// As many as fit, or as many as there are (DPDK's "burst").
    Variable,
}

/// What an operation did: how many elements it moved, and how many remain free (after an
/// enqueue) or available (after a dequeue), as seen by the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Elements moved.
    pub n: usize,
    /// Free slots left after an enqueue, or entries left after a dequeue, counted from the
    /// other side's tail as this side last read it. Consumers read the producer tail on every
    /// call; producers (the shared calls and a [`SingleProducer`]) keep the consumer tail
    /// between calls and read it again only when their copy shows too little room, so after an
    /// enqueue the count can be lower than the ring's free space at the time (DPDK reads the
    /// tail every call): a lower bound as far as this side is concerned, and, as in DPDK,
    /// others' calls may change it at once.
    pub left: u32,
}

/// The most elements one reservation of the shared [`Ring`] calls moves (the head word holds the
/// length in 16 bits, and its top four values mark a held, biased, revoking or fresh side). A burst
/// above it is done as several reservations; a bulk above it moves nothing. The single-member
/// handles ([`SingleProducer`], [`SingleConsumer`]) have no such limit.
pub const MAX_OP: usize = u16::MAX as usize - 4;

/// The length field of a head word whose side is held by a single-member handle; the member
/// field names the holder and the position is not kept up to date (the tail is).
pub(crate) const HELD: u16 = u16::MAX;

/// The length field of a head word whose side is biased to one thread: the position field holds
/// the thread's tag, the member field its member (the side's position is its tail).
pub(crate) const BIASED: u16 = u16::MAX - 1;

/// The length field of a head word whose bias is being revoked: the position field holds the
/// revoking member (low 16 bits) and the bias generation (above), the member field the member
/// the side was biased to.
pub(crate) const REVOKING: u16 = u16::MAX - 2;

/// The length field of the head word of an idle side that the next MT call may bias to its
/// thread (a new ring's MT sides, and a side whose bias ended while it may still be biased
/// again); the position field is the side's position, the member field the generation the next
/// bias takes (the number of biases ended so far). With the generation in the word, a fresh word
/// read before a revocation never matches the one written after it, even when the side did not
/// move meanwhile: a thread that read the old one cannot take the bias under a generation whose
/// in-flight word a revoked holder may still write (see [`Ring::leave_fresh`]).
pub(crate) const FRESH: u16 = u16::MAX - 3;

/// The bias generation bits of a biased head word (the top of its position field).
const GEN_BITS: u64 = 0xF << bias::TAG_BITS;

/// Largest `count` accepted (DPDK's `RTE_RING_SZ_MASK`).
pub const RING_COUNT_MAX: u32 = 0x7fff_ffff;

/// What [`Ring::recover`] did and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Elements of dead producers abandoned by this call.
    pub producer_abandoned: u64,
    /// Elements of dead consumers abandoned by this call.
    pub consumer_abandoned: u64,
    /// A dead member's [`SingleProducer`] hold on the producer side, released by this call.
    pub producer_released: Option<MemberId>,
    /// A dead member's [`SingleConsumer`] hold on the consumer side, released by this call.
    pub consumer_released: Option<MemberId>,
    /// A live member still has a producer operation in flight at the tail, or holds the side
    /// with a [`SingleProducer`].
    pub producer_busy: Option<MemberId>,
    /// A live member still has a consumer operation in flight at the tail.
    pub consumer_busy: Option<MemberId>,
    /// Something could not be decided yet (a reservation record not yet visible, or the table of
    /// abandoned ranges full until consumers pass them); calling again later finishes it.
    pub pending: bool,
}

/// A snapshot of a ring for diagnostics (what `proc_info` dumps). Counters are read one by one,
/// so a busy ring may show a mix of moments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingInfo {
    /// The ring's name.
    pub name: String,
    /// The zone it lives in.
    pub zone: String,
    /// Creation flags.
    pub flags: RingFlags,
    /// Slots (a power of two).
    pub size: u32,
    /// Most elements it holds.
    pub capacity: u32,
    /// Elements in it now (abandoned ranges not yet passed by consumers included).
    pub count: u32,
    /// Free slots now.
    pub free: u32,
    /// Element size in bytes.
    pub elem_size: u32,
    /// Element type identifier.
    pub type_id: u64,
    /// Producer head position, and the member and length of the last producer reservation.
    pub prod_head: (u32, MemberId, u16),
    /// Producer tail position.
    pub prod_tail: u32,
    /// Consumer head position, and the member and length of the last consumer reservation.
    pub cons_head: (u32, MemberId, u16),
    /// Consumer tail position.
    pub cons_tail: u32,
    /// Elements abandoned because their producer died before publishing them.
    pub abandoned_enq: u64,
    /// Elements abandoned because their consumer died before finishing.
    pub abandoned_deq: u64,
    /// Abandoned ranges consumers have not yet stepped over.
    pub holes_pending: u32,
    /// Default producer and consumer modes.
    pub sync: (SyncMode, SyncMode),
    /// The member whose [`SingleProducer`] holds the producer side now, if any.
    pub producer_holder: Option<MemberId>,
    /// The member whose [`SingleConsumer`] holds the consumer side now, if any.
    pub consumer_holder: Option<MemberId>,
    /// The member one of whose threads the producer side is biased to now, if any (see the
    /// crate docs, "Biased sides").
    pub producer_bias: Option<MemberId>,
    /// The member one of whose threads the consumer side is biased to now, if any.
    pub consumer_bias: Option<MemberId>,
    /// How many times each side's bias was revoked (producers, consumers); from
    /// 4 on, the side is not biased again.
    pub revokes: (u32, u32),
}

impl fmt::Display for RingInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ring <{}>@zone {}", self.name, self.zone)?;
        writeln!(f, "  flags={:#x} ({:?})", self.flags.bits(), self.flags)?;
        writeln!(f, "  size={}", self.size)?;
        writeln!(f, "  capacity={}", self.capacity)?;
        writeln!(
            f,
            "  elem_size={} type_id={:#018x}",
            self.elem_size, self.type_id
        )?;
        writeln!(f, "  sync prod={:?} cons={:?}", self.sync.0, self.sync.1)?;
        if let Some(m) = self.producer_holder {
            writeln!(f, "  producer side held by {m} (SingleProducer)")?;
        }
        if let Some(m) = self.consumer_holder {
            writeln!(f, "  consumer side held by {m} (SingleConsumer)")?;
        }
        if let Some(m) = self.producer_bias {
            writeln!(f, "  producer side biased to a thread of {m}")?;
        }
        if let Some(m) = self.consumer_bias {
            writeln!(f, "  consumer side biased to a thread of {m}")?;
        }
        writeln!(
            f,
            "  bias revoked prod={} cons={}",
            self.revokes.0, self.revokes.1
        )?;
        writeln!(
            f,
            "  ct={} ch={} (last {} n={})",
            self.cons_tail, self.cons_head.0, self.cons_head.1, self.cons_head.2
        )?;
        writeln!(
            f,
            "  pt={} ph={} (last {} n={})",
            self.prod_tail, self.prod_head.0, self.prod_head.1, self.prod_head.2
        )?;
        writeln!(f, "  used={}", self.count)?;
        writeln!(f, "  avail={}", self.free)?;
        write!(
            f,
            "  abandoned enq={} deq={} holes_pending={}",
            self.abandoned_enq, self.abandoned_deq, self.holes_pending
        )
    }
}

/// A lock-free FIFO of `T` in shared memory, found by name: a handle, cheap to clone, that keeps
/// the ring's zone mapped and a [`Liveness`] handle to tell slow peers from dead ones.
///
/// ```
/// use rte_ring::{Ring, RingFlags};
/// use shmconfig::LocalZones;
/// let zones = LocalZones::new();
/// let r = Ring::<u64>::create(&zones, "rx 0", 1024, RingFlags::empty()).unwrap();
/// assert_eq!(r.capacity(), 1023);
/// assert_eq!(r.enqueue_bulk(&[1, 2, 3]), 3);
/// let other = Ring::<u64>::lookup(&zones, "rx 0").unwrap();
/// let mut out = [0u64; 8];
/// assert_eq!(other.dequeue_burst(&mut out), 3);
/// assert_eq!(&out[..3], &[1, 2, 3]);
/// ```
pub struct Ring<T> {
    pub(crate) mem: Mem<T>,
    pub(crate) name: Arc<str>,
    mask: u32,
    pub(crate) capacity: u32,
    flags: RingFlags,
    prod_sync: SyncMode,
    cons_sync: SyncMode,
    htd_max: u32,
    type_id: u64,
    pub(crate) me: u16,
    /// `pack(0, me, BIASED)`: this handle's biased head word but for the thread's tag.
    bias_base: u64,
    liveness: Arc<dyn Liveness>,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Self {
            mem: self.mem.clone(),
            name: self.name.clone(),
            mask: self.mask,
            capacity: self.capacity,
            flags: self.flags,
            prod_sync: self.prod_sync,
            cons_sync: self.cons_sync,
            htd_max: self.htd_max,
            type_id: self.type_id,
            me: self.me,
            bias_base: self.bias_base,
            liveness: self.liveness.clone(),
        }
    }
}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.name)
            .field("size", &(self.mask + 1))
            .field("capacity", &self.capacity)
            .field("flags", &self.flags)
            .field("member", &self.me)
            .finish_non_exhaustive()
    }
}

/// The room reported when consumers must step over abandoned ranges (never a real count).
const HOLES: u32 = u32::MAX;

/// The room [`Ring::reserve_plain`] reports when the side is now biased to the calling thread:
/// the caller goes the biased way (never a real count).
const OWN_BIAS: u32 = u32::MAX - 1;

/// The room [`Ring::claim_biased`] reports when the bias was revoked before the claim was made
/// (the caller goes the shared way; never a real count).
#[cfg(not(hugeshare_loom))]
const REVOKED: u32 = u32::MAX - 2;

/// A room (free slots for producers, entries for consumers) computed from the other side's
/// tail, brought within `0..=capacity`. Below 0 is a stale view (a copy of the other side's tail
/// older than this side's head): nothing, and the caller reads the tail itself. Above
/// `capacity` is a stale head (its CAS will fail) or a tail that a peer wrote and no ring can
/// have: at most `capacity`, so no reservation runs past the slot array or the
/// [`HOLES`]/[`OWN_BIAS`] codes (see the crate docs, "Untrusted peers"). A `max` and a `min`
/// (`capacity` is below 2^31): conditional moves, or a branch that always goes the same way.
#[inline(always)]
pub(crate) fn clamp_room(r: u32, capacity: u32) -> u32 {
    (r as i32).max(0).min(capacity as i32) as u32
}

/// A room computed by a caller whose position is its side's own tail (a single-member handle,
/// or a side biased to the caller): never stale, so a legitimate room is always within
/// `0..=capacity`, and a value out of it (a tail a peer wrote) counts as none. One compare,
/// where [`clamp_room`] needs two.
#[inline(always)]
pub(crate) fn own_room(r: u32, capacity: u32) -> u32 {
    if r <= capacity {
        r
    } else {
        0
    }
}

/// Which side of the ring an internal routine works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Prod = 0,
    Cons = 1,
}

fn check_name(name: &str) -> Result<(), RingError> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > RING_NAME_MAX {
        format!(
            "it is {} bytes long; at most {RING_NAME_MAX} are allowed",
            name.len()
        )
    } else if name.contains('\0') {
        "it contains a NUL byte".to_string()
    } else {
        return Ok(());
    };
    Err(RingError::BadName {
        name: name.into(),
        why,
    })
}

fn side_modes(name: &str, flags: RingFlags) -> Result<(SyncMode, SyncMode), RingError> {
    let bad = |why| RingError::BadFlags {
        name: name.into(),
        flags: flags.bits(),
        why,
    };
    if RingFlags::from_bits(flags.bits()).is_none() {
        return Err(bad("unknown bits (known: 0x1 to 0x40)"));
    }
    let p = [
        RingFlags::SP_ENQ,
        RingFlags::MP_RTS_ENQ,
        RingFlags::MP_HTS_ENQ,
    ];
    let c = [
        RingFlags::SC_DEQ,
        RingFlags::MC_RTS_DEQ,
        RingFlags::MC_HTS_DEQ,
    ];
    if p.iter().filter(|f| flags.contains(**f)).count() > 1 {
        return Err(bad(
            "more than one producer mode (SP_ENQ, MP_RTS_ENQ, MP_HTS_ENQ)",
        ));
    }
    if c.iter().filter(|f| flags.contains(**f)).count() > 1 {
        return Err(bad(
            "more than one consumer mode (SC_DEQ, MC_RTS_DEQ, MC_HTS_DEQ)",
        ));
    }
    let mode = |st, rts, hts| {
        if flags.contains(st) {
            SyncMode::St
        } else if flags.contains(rts) {
            SyncMode::Rts
        } else if flags.contains(hts) {
            SyncMode::Hts
        } else {
            SyncMode::Mt
        }
    };
    Ok((
        mode(
            RingFlags::SP_ENQ,
            RingFlags::MP_RTS_ENQ,
            RingFlags::MP_HTS_ENQ,
        ),
        mode(
            RingFlags::SC_DEQ,
            RingFlags::MC_RTS_DEQ,
            RingFlags::MC_HTS_DEQ,
        ),
    ))
}

/// `(size, capacity)` for a requested count.
fn sizes(name: &str, count: u32, flags: RingFlags) -> Result<(u32, u32), RingError> {
    let bad = |why| RingError::BadCount {
        name: name.into(),
        count,
        why,
    };
    if count > RING_COUNT_MAX {
        return Err(bad("it is above RING_COUNT_MAX (0x7fffffff)"));
    }
    if flags.contains(RingFlags::EXACT_SZ) {
        if count == 0 {
            return Err(bad("an exact-size ring holds at least 1 element"));
        }
        Ok(((count + 1).next_power_of_two(), count))
    } else {
        if !count.is_power_of_two() || count < 2 {
            return Err(bad(
                "it must be a power of two of at least 2 (or pass RingFlags::EXACT_SZ)",
            ));
        }
        Ok((count, count - 1))
    }
}

fn check_element<T: RingElement>(name: &str) -> Result<(), RingError> {
    let (size, align) = (core::mem::size_of::<T>(), core::mem::align_of::<T>());
    let why = if size == 0 {
        "zero-sized elements carry nothing"
    } else if size % 4 != 0 {
        "the size must be a multiple of 4 bytes (as DPDK's rings require)"
    } else if size > 1 << 16 {
        "elements above 64 KiB are not supported"
    } else if align > 128 {
        "alignment above 128 is not supported"
    } else {
        return Ok(());
    };
    Err(RingError::BadElement {
        name: name.into(),
        size,
        align,
        why,
    })
}

/// Check a ring zone's header (everything but the element type) and return it.
fn check_header(zone: &Zone, zname: &str, name: &str) -> Result<Meta, RingError> {
    let bad = |field: &'static str, found: String, expected: String| RingError::BadHeader {
        zone: zname.to_string(),
        field,
        found,
        expected,
    };
    if zone.kind() != ZoneKind::Ring {
        return Err(bad("zone kind", zone.kind().to_string(), "ring".into()));
    }
    if zone.len() < SLOTS_OFFSET || zone.as_ptr() as usize % RING_ZONE_ALIGN != 0 {
        return Err(bad(
            "zone length/alignment",
            format!("{} bytes at {:p}", zone.len(), zone.as_ptr()),
            format!("at least {SLOTS_OFFSET} bytes, {RING_ZONE_ALIGN}-aligned"),
        ));
    }
    // The creator writes the header right after reserving the zone: give it a moment.
    let mut meta = raw::read_meta(zone);
    for _ in 0..200 {
        if meta.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        meta = raw::read_meta(zone);
    }
    let meta = meta.ok_or_else(|| RingError::NotReady(name.into()))?;
    let hex = |v: u64| format!("{v:#x}");
    if meta.magic != MAGIC {
        return Err(bad("magic", hex(meta.magic), hex(MAGIC)));
    }
    if meta.version != VERSION {
        return Err(bad(
            "version",
            meta.version.to_string(),
            VERSION.to_string(),
        ));
    }
    if meta.header_len != SLOTS_OFFSET as u32 || meta.fingerprint != fingerprint() {
        return Err(bad(
            "layout fingerprint",
            format!("{}/{:#x}", meta.header_len, meta.fingerprint),
            format!("{SLOTS_OFFSET}/{:#x}", fingerprint()),
        ));
    }
    let flags = RingFlags::from_bits(meta.flags)
        .ok_or_else(|| bad("flags", hex(meta.flags.into()), "bits 0x1..0x40".into()))?;
    side_modes(name, flags)
        .map_err(|_| bad("flags", hex(meta.flags.into()), "one mode per side".into()))?;
    let cap_ok = if flags.contains(RingFlags::EXACT_SZ) {
        meta.capacity < meta.size && meta.capacity > 0
    } else {
        meta.capacity == meta.size.wrapping_sub(1)
    };
    if !meta.size.is_power_of_two() || meta.size > 1 << 31 || !cap_ok {
        return Err(bad(
            "size/capacity",
            format!("{}/{}", meta.size, meta.capacity),
            "a power-of-two size and a capacity below it".into(),
        ));
    }
    let stored_name = meta
        .name
        .get(..meta.name_len as usize)
        .and_then(|b| std::str::from_utf8(b).ok());
    if stored_name != Some(name) {
        return Err(bad("name", format!("{stored_name:?}"), format!("{name:?}")));
    }
    let esize = meta.elem_size as usize;
    if esize < 4 || esize % 4 != 0 || esize > 1 << 16 {
        return Err(bad(
            "element size",
            esize.to_string(),
            "a multiple of 4 from 4 to 65536".into(),
        ));
    }
    let (len, records) = zone_len(meta.size, esize);
    if meta.records_offset as usize != records || zone.len() < len {
        return Err(bad(
            "records offset / zone length",
            format!("{}/{}", meta.records_offset, zone.len()),
            format!("{records}/at least {len}"),
        ));
    }
    Ok(meta)
}

/// A new ring's MT sides start fresh: the first MT call may bias each to its thread (see the
/// crate docs, "Biased sides"). Before the header is published, so nobody else looks yet.
fn fresh_sides(sh: &Shared, flags: RingFlags) {
    let (p, c) = side_modes("", flags).unwrap_or((SyncMode::Mt, SyncMode::Mt));
    for (side, mode) in [(&sh.prod, p), (&sh.cons, c)] {
        if matches!(mode, SyncMode::Mt | SyncMode::St) {
            side.head.store(pack(0, 0, FRESH), Release);
        }
    }
}

/// [`Ring::disable_bias`] for the ring named `name` in `zones`, whatever its element type: for
/// code that publishes a ring's zone without a typed handle (`ivshmem-meta`). Fails as
/// [`Ring::lookup`] does when the ring is missing or its header is damaged or foreign.
///
/// ```
/// use rte_ring::{disable_bias_of, Ring, RingFlags};
/// use shmconfig::LocalZones;
/// let zones = LocalZones::new();
/// let r = Ring::<[u8; 24]>::create(&zones, "to a VM", 64, RingFlags::empty()).unwrap();
/// r.enqueue([0; 24]).unwrap();
/// disable_bias_of(&zones, "to a VM").unwrap();
/// assert_eq!(r.info().producer_bias, None);
/// assert!(disable_bias_of(&zones, "missing").is_err());
/// ```
pub fn disable_bias_of(zones: &impl Zones, name: &str) -> Result<(), RingError> {
    check_name(name)?;
    let zname = Ring::<u32>::zone_name(name);
    let zone = zones.lookup(&zname).map_err(|e| match e {
        ZoneError::NotFound(_) => RingError::NotFound(name.into()),
        source => RingError::Zone {
            name: name.into(),
            source,
        },
    })?;
    let meta = check_header(&zone, &zname, name)?;
    // Viewed as 4-byte slots, as the clean-up hook does: the bias words are in the header, and
    // the slots are never touched here.
    let records = meta.records_offset as usize;
    Ring::<u32>::from_parts(zones, Mem::from_zone(zone, meta.size, records), &meta).disable_bias();
    Ok(())
}

static HOOK: std::sync::Once = std::sync::Once::new();

fn register_hook() {
    HOOK.call_once(|| shmconfig::hooks::register_for(ZoneKind::Ring, cleanup_hook));
}

/// The group's clean-up hook: in every ring of the group, abandon the dead members' operations
/// in flight and release the sides they held ([`Ring::recover`]). Rings are opened by their
/// header alone (the hook does not know element types; recovery never touches the slots).
fn cleanup_hook(zones: &dyn Zones, dead: MemberId) -> Option<String> {
    shmconfig::hooks::recover_each(zones, dead, ZoneKind::Ring, "RG_", |zname, name| {
        let zone = zones.lookup(zname).ok()?;
        let meta = check_header(&zone, zname, name).ok()?;
        // Viewed as 4-byte slots (check_header checked the element size and the records offset):
        // within the real slot array, and never read or written here.
        let records = meta.records_offset as usize;
        let r = Ring::<u32>::from_parts(&zones, Mem::from_zone(zone, meta.size, records), &meta);
        let rep = r.recover();
        let mut did = Vec::new();
        if rep.producer_abandoned + rep.consumer_abandoned > 0 {
            did.push(format!(
                "abandoned {} enqueued / {} dequeued elements",
                rep.producer_abandoned, rep.consumer_abandoned
            ));
        }
        if let Some(m) = rep.producer_released {
            did.push(format!("released the producer side held by {m}"));
        }
        if let Some(m) = rep.consumer_released {
            did.push(format!("released the consumer side held by {m}"));
        }
        // A reservation of the dead member behind a live member's cannot be abandoned before
        // the tail reaches it: until then the dead member's slot must not be given to a
        // newcomer, or the reservation would look like the newcomer's.
        for (w, side) in [(Which::Prod, "producer"), (Which::Cons, "consumer")] {
            if let Some(at) = r.reservation_of(w, dead) {
                shmconfig::hooks::unfinished(format!(
                    "ring {name}: {dead}'s {side} reservation at {at} waits behind a live member's"
                ));
            }
        }
        (!did.is_empty()).then(|| format!("ring {name}: {}", did.join(", ")))
    })
}

impl<T: RingElement> Ring<T> {
    /// The zone a ring named `name` lives in (`RG_<name>`, as in DPDK).
    pub fn zone_name(name: &str) -> String {
        format!("RG_{name}")
    }

    /// Create a ring named `name` with room for `count - 1` elements (`count` a power of two),
    /// or exactly `count` with [`RingFlags::EXACT_SZ`].
    ///
    /// Fails if the name is taken ([`RingError::Exists`]), the name, count, flags or element type
    /// are invalid, or the zone cannot be reserved.
    pub fn create(
        zones: &impl Zones,
        name: &str,
        count: u32,
        flags: RingFlags,
    ) -> Result<Self, RingError> {
        register_hook();
        check_name(name)?;
        side_modes(name, flags)?;
        let (size, capacity) = sizes(name, count, flags)?;
        check_element::<T>(name)?;
        let esize = core::mem::size_of::<T>();
        let (len, records) = zone_len(size, esize);
        let zname = Self::zone_name(name);
        let zone = zones
            .reserve(&ZoneRequest::new(&zname, len, ZoneKind::Ring).align(RING_ZONE_ALIGN))
            .map_err(|e| match e {
                ZoneError::Exists(_) => RingError::Exists(name.into()),
                source => RingError::Zone {
                    name: name.into(),
                    source,
                },
            })?;
        let mut name_bytes = [0u8; 64];
        name_bytes[..name.len()].copy_from_slice(name.as_bytes());
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            header_len: SLOTS_OFFSET as u32,
            fingerprint: fingerprint(),
            flags: flags.bits(),
            size,
            capacity,
            elem_size: esize as u32,
            elem_align: core::mem::align_of::<T>() as u32,
            htd_max: (capacity / 8).max(1),
            type_id: T::TYPE_ID,
            records_offset: records as u32,
            name_len: name.len() as u32,
            name: name_bytes,
        };
        let mem = Mem::from_zone(zone, size, records);
        fresh_sides(mem.shared(), flags);
        raw::write_meta(mem.zone().expect("a zone-backed ring"), &meta);
        Ok(Self::from_parts(zones, mem, &meta))
    }

    /// Find the ring named `name`, checking its header: layout version and fingerprint, and the
    /// element type's size, alignment and [`RingElement::TYPE_ID`].
    pub fn lookup(zones: &impl Zones, name: &str) -> Result<Self, RingError> {
        register_hook();
        check_name(name)?;
        let zname = Self::zone_name(name);
        let zone = zones.lookup(&zname).map_err(|e| match e {
            ZoneError::NotFound(_) => RingError::NotFound(name.into()),
            source => RingError::Zone {
                name: name.into(),
                source,
            },
        })?;
        let meta = check_header(&zone, &zname, name)?;
        let (want_size, want_align) = (
            core::mem::size_of::<T>() as u32,
            core::mem::align_of::<T>() as u32,
        );
        if meta.elem_size != want_size
            || meta.elem_align != want_align
            || meta.type_id != T::TYPE_ID
        {
            return Err(RingError::WrongElement {
                name: name.into(),
                found_size: meta.elem_size,
                found_align: meta.elem_align,
                found_type: meta.type_id,
                want_size,
                want_align,
                want_type: T::TYPE_ID,
            });
        }
        // check_header checked the records offset against the recorded element size, which is
        // this type's.
        let records = meta.records_offset as usize;
        Ok(Self::from_parts(
            zones,
            Mem::from_zone(zone, meta.size, records),
            &meta,
        ))
    }

    fn from_parts(zones: &impl Zones, mem: Mem<T>, meta: &Meta) -> Self {
        let flags = RingFlags::from_bits_truncate(meta.flags);
        let (prod_sync, cons_sync) = side_modes("", flags).unwrap_or((SyncMode::Mt, SyncMode::Mt));
        let name = std::str::from_utf8(&meta.name[..meta.name_len as usize]).unwrap_or("?");
        Self {
            mem,
            name: name.into(),
            mask: meta.size - 1,
            capacity: meta.capacity,
            flags,
            prod_sync,
            cons_sync,
            htd_max: meta.htd_max.max(1),
            type_id: meta.type_id,
            me: zones.member().0,
            bias_base: pack(0, zones.member().0, BIASED),
            liveness: zones.liveness(),
        }
    }

    /// A ring in memory of its own, for the loom model tests (`cfg(hugeshare_loom)` only).
    #[cfg(hugeshare_loom)]
    pub fn model(
        count: u32,
        flags: RingFlags,
        member: MemberId,
        liveness: Arc<dyn Liveness>,
    ) -> Self {
        let (size, capacity) = sizes("model", count, flags).expect("model ring count");
        let mut name = [0u8; 64];
        name[..5].copy_from_slice(b"model");
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            header_len: SLOTS_OFFSET as u32,
            fingerprint: fingerprint(),
            flags: flags.bits(),
            size,
            capacity,
            elem_size: core::mem::size_of::<T>() as u32,
            elem_align: core::mem::align_of::<T>() as u32,
            htd_max: (capacity / 8).max(1),
            type_id: T::TYPE_ID,
            records_offset: 0,
            name_len: 5,
            name,
        };
        let (prod_sync, cons_sync) = side_modes("model", flags).expect("model ring flags");
        let mem = Mem::model(size);
        fresh_sides(mem.shared(), flags);
        Self {
            mem,
            name: "model".into(),
            mask: size - 1,
            capacity,
            flags,
            prod_sync,
            cons_sync,
            htd_max: meta.htd_max,
            type_id: meta.type_id,
            me: member.0,
            bias_base: pack(0, member.0, BIASED),
            liveness,
        }
    }

    /// Another handle on the same ring acting as `member` (model tests of dead members).
    #[cfg(hugeshare_loom)]
    pub fn as_member(&self, member: MemberId) -> Self {
        let mut r = self.clone();
        r.me = member.0;
        r.bias_base = pack(0, member.0, BIASED);
        r
    }
}

/// `by_mode!(ring, w, (sync, h) => op)`: `op`, an expression of `sync` and `h`, for side `w` of
/// `ring` in the ring's default mode for that side, `h` being the head word it starts from. A
/// side biased to this thread is an MT side (HTS and RTS sides are never biased), so the head
/// word is read first and such a call goes without looking at the mode: `op` is inlined once
/// for it, knowing the side biased, and once per mode knowing it is not. About five
/// instructions fewer per call of the mempool's no-cache rows than matching the mode first
/// (callgrind, get+put of 4: 231 -> 221). A macro rather than a function taking a closure:
/// through the closure the compiler read the zone's address again on the hot path (225
/// instead of 221 for the same get+put).
macro_rules! by_mode {
    ($ring:expr, $w:expr, ($sync:ident, $h:ident) => $op:expr) => {{
        let ring = $ring;
        let $h = ring.head_word($w);
        if ring.is_own_bias($h) {
            let $sync = SyncMode::Mt;
            $op
        } else {
            let side = match $w {
                Which::Prod => ring.prod_sync,
                Which::Cons => ring.cons_sync,
            };
            match side {
                SyncMode::St | SyncMode::Mt => {
                    let $sync = SyncMode::Mt;
                    $op
                }
                SyncMode::Hts => {
                    let $sync = SyncMode::Hts;
                    $op
                }
                SyncMode::Rts => {
                    let $sync = SyncMode::Rts;
                    $op
                }
            }
        }
    }};
}

impl<T: RingElement> Ring<T> {
    // ----- the public operations -----

    /// Enqueue one element; gives it back if the ring is full.
    #[inline]
    pub fn enqueue(&self, v: T) -> Result<(), T> {
        if self.enq_default(std::slice::from_ref(&v), true).n == 1 {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Dequeue one element, if there is one.
    #[inline]
    pub fn dequeue(&self) -> Option<T> {
        by_mode!(self, Which::Cons, (sync, h) => self.deq_one(sync, h))
    }

    /// Multi-producer enqueue of one element.
    #[inline]
    pub fn mp_enqueue(&self, v: T) -> Result<(), T> {
        if self.enq(std::slice::from_ref(&v), true, SyncMode::Mt).n == 1 {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Multi-consumer dequeue of one element.
    #[inline]
    pub fn mc_dequeue(&self) -> Option<T> {
        self.deq_one(SyncMode::Mt, self.head_word(Which::Cons))
    }

    /// Enqueue all of `items` or none; returns `items.len()` or 0.
    #[inline]
    pub fn enqueue_bulk(&self, items: &[T]) -> usize {
        self.enq_default(items, true).n
    }

    /// Enqueue as many of `items` as fit; returns how many.
    #[inline]
    pub fn enqueue_burst(&self, items: &[T]) -> usize {
        self.enq_default(items, false).n
    }

    /// Fill all of `out` or nothing; returns `out.len()` or 0.
    #[inline]
    pub fn dequeue_bulk(&self, out: &mut [T]) -> usize {
        self.deq_default(out, true).n
    }

    /// Dequeue up to `out.len()` elements; returns how many.
    #[inline]
    pub fn dequeue_burst(&self, out: &mut [T]) -> usize {
        self.deq_default(out, false).n
    }

    /// Enqueue with the ring's producer mode, reporting the free space left.
    #[inline]
    pub fn enqueue_bulk_free(&self, items: &[T]) -> Outcome {
        self.enq_default(items, true)
    }

    /// Burst enqueue with the ring's producer mode, reporting the free space left.
    #[inline]
    pub fn enqueue_burst_free(&self, items: &[T]) -> Outcome {
        self.enq_default(items, false)
    }

    /// Bulk dequeue with the ring's consumer mode, reporting the entries left.
    #[inline]
    pub fn dequeue_bulk_avail(&self, out: &mut [T]) -> Outcome {
        self.deq_default(out, true)
    }

    /// Burst dequeue with the ring's consumer mode, reporting the entries left.
    #[inline]
    pub fn dequeue_burst_avail(&self, out: &mut [T]) -> Outcome {
        self.deq_default(out, false)
    }

    /// Multi-producer bulk enqueue, whatever the ring's default.
    #[inline]
    pub fn mp_enqueue_bulk(&self, items: &[T]) -> usize {
        self.enq(items, true, SyncMode::Mt).n
    }
    /// Multi-producer burst enqueue.
    #[inline]
    pub fn mp_enqueue_burst(&self, items: &[T]) -> usize {
        self.enq(items, false, SyncMode::Mt).n
    }
    /// Multi-consumer bulk dequeue.
    #[inline]
    pub fn mc_dequeue_bulk(&self, out: &mut [T]) -> usize {
        self.deq(out, true, SyncMode::Mt).n
    }
    /// Multi-consumer burst dequeue.
    #[inline]
    pub fn mc_dequeue_burst(&self, out: &mut [T]) -> usize {
        self.deq(out, false, SyncMode::Mt).n
    }

    /// Elements in the ring (abandoned ranges not yet passed by consumers included).
    pub fn count(&self) -> u32 {
        let sh = self.mem.shared();
        let c = sh.cons.tail.load(Acquire);
        let p = sh.prod.tail.load(Acquire);
        p.wrapping_sub(c).min(self.capacity)
    }

    /// Free slots.
    pub fn free_count(&self) -> u32 {
        self.capacity - self.count()
    }

    /// Most elements the ring holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots in the ring (a power of two, larger than the capacity).
    pub fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Whether the ring is full.
    pub fn is_full(&self) -> bool {
        self.free_count() == 0
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creation flags.
    pub fn flags(&self) -> RingFlags {
        self.flags
    }

    /// The zone the ring lives in (`None` only for model rings in the loom build).
    pub fn zone(&self) -> Option<&Zone> {
        self.mem.zone()
    }

    /// Elements lost with dead members so far: `(producers', consumers')`.
    pub fn abandoned(&self) -> (u64, u64) {
        let s = &self.mem.shared().stats;
        (s.abandoned_enq.load(Relaxed), s.abandoned_deq.load(Relaxed))
    }

    /// A diagnostic snapshot (see [`RingInfo`]; its `Display` is a DPDK-like dump).
    pub fn info(&self) -> RingInfo {
        let sh = self.mem.shared();
        // A biased side's position is its tail (its head word's position field holds a tag);
        // the bias is reported apart, with length 0 here.
        let head_of = |s: &Side| {
            let (p, m, n) = unpack(s.head.load(Acquire));
            match n {
                BIASED | REVOKING => (s.tail.load(Acquire), m, 0, true),
                FRESH => (p, 0, 0, false),
                _ => (p, m, n, false),
            }
        };
        let (ph, pm, pn, pb) = head_of(&sh.prod);
        let (ch, cm, cn, cb) = head_of(&sh.cons);
        let count = self.count();
        let (ae, ad) = self.abandoned();
        RingInfo {
            name: self.name.to_string(),
            zone: Self::zone_name(&self.name),
            flags: self.flags,
            size: self.mask + 1,
            capacity: self.capacity,
            count,
            free: self.capacity - count,
            elem_size: core::mem::size_of::<T>() as u32,
            type_id: self.type_id,
            prod_head: (ph, MemberId(pm), pn),
            prod_tail: sh.prod.tail.load(Acquire),
            cons_head: (ch, MemberId(cm), cn),
            cons_tail: sh.cons.tail.load(Acquire),
            abandoned_enq: ae,
            abandoned_deq: ad,
            holes_pending: sh.prod.holes.load(Acquire),
            sync: (self.prod_sync, self.cons_sync),
            producer_holder: (pn == HELD).then_some(MemberId(pm)),
            consumer_holder: (cn == HELD).then_some(MemberId(cm)),
            producer_bias: pb.then_some(MemberId(pm)),
            consumer_bias: cb.then_some(MemberId(cm)),
            revokes: (sh.prod.revokes.load(Relaxed), sh.cons.revokes.load(Relaxed)),
        }
    }

    /// The elements in the ring now, oldest first, copied without taking them (ranges abandoned
    /// by dead producers are skipped). For audits and diagnostics of a *quiet* ring: with
    /// operations running meanwhile, elements may be missed or seen twice. Works whoever holds
    /// the sides (it takes nothing).
    pub fn snapshot(&self) -> Vec<T> {
        let sh = self.mem.shared();
        let mut pos = sh.cons.tail.load(Acquire);
        let tail = sh.prod.tail.load(Acquire);
        let mut out = Vec::new();
        let total = tail.wrapping_sub(pos);
        if total > self.capacity {
            return out;
        }
        while pos != tail {
            let want = tail.wrapping_sub(pos).min(MAX_OP as u32);
            let plan = self.plan(pos, tail, want, false);
            if plan.span == 0 {
                break;
            }
            let claim = Claim::at(pos, plan.span);
            let start = out.len();
            out.resize(start + want as usize, T::new_zeroed());
            let got = self.copy_planned(&claim, &plan, &mut out[start..]);
            out.truncate(start + got);
            pos = pos.wrapping_add(plan.span);
        }
        out
    }

    /// Finish the clean-up of dead members' operations on both sides: a reservation at the tail
    /// whose owner is dead is abandoned (counted, never delivered) and the tail moves on. Any
    /// member may call it at any time; waiters do the same by themselves after spinning a while.
    pub fn recover(&self) -> RecoveryReport {
        let mut rep = RecoveryReport::default();
        let p = self.resolve(Which::Prod);
        let c = self.resolve(Which::Cons);
        rep.producer_abandoned = p.abandoned;
        rep.consumer_abandoned = c.abandoned;
        rep.producer_released = p.released;
        rep.consumer_released = c.released;
        rep.producer_busy = p.busy;
        rep.consumer_busy = c.busy;
        rep.pending = p.pending || c.pending;
        rep
    }

    /// Enqueue with an explicit behaviour and producer mode.
    ///
    /// [`SyncMode::St`] runs as [`SyncMode::Mt`] here (the single-member fast path belongs to the
    /// [`SingleProducer`] handle, which holds the side). [`SyncMode::Mt`] and [`SyncMode::Hts`]
    /// may be mixed (each is safe against the other), though only [`SyncMode::Hts`] used by
    /// every producer gives the one-in-flight guarantee; RTS is the side's mode or none (see
    /// [`SyncMode::Rts`]). While a [`SingleProducer`] holds the producer side, this call
    /// waits for it to be dropped (or for its member to die), as for any operation in flight.
    #[inline]
    pub fn enqueue_with(&self, items: &[T], how: Behavior, sync: SyncMode) -> Outcome {
        let fixed = how == Behavior::Fixed;
        match self.call_mode(self.prod_sync, sync) {
            SyncMode::St | SyncMode::Mt => self.enq(items, fixed, SyncMode::Mt),
            SyncMode::Hts => self.enq(items, fixed, SyncMode::Hts),
            SyncMode::Rts => self.enq(items, fixed, SyncMode::Rts),
        }
    }

    /// The mode a call asking for `asked` runs in on a side created in mode `side`. RTS is a
    /// property of the side (its publishers leave completion marks and every publisher takes
    /// them, see the crate docs): on an RTS side every call runs as RTS, and elsewhere an RTS
    /// call runs as MT. The other modes may be mixed.
    #[inline(always)]
    fn call_mode(&self, side: SyncMode, asked: SyncMode) -> SyncMode {
        match (side, asked) {
            (SyncMode::Rts, _) => SyncMode::Rts,
            (_, SyncMode::Rts) => SyncMode::Mt,
            (_, m) => m,
        }
    }

    /// In the ring's default mode for this side.
    #[inline(always)]
    fn enq_default(&self, items: &[T], fixed: bool) -> Outcome {
        by_mode!(self, Which::Prod, (sync, h) => self.enq_from(items, fixed, sync, h))
    }

    /// The operation, for a mode known where it is inlined.
    #[inline(always)]
    fn enq(&self, items: &[T], fixed: bool, sync: SyncMode) -> Outcome {
        self.enq_from(items, fixed, sync, self.head_word(Which::Prod))
    }

    /// [`Ring::enq`] from head word `h`, read by the caller.
    #[inline(always)]
    fn enq_from(&self, items: &[T], fixed: bool, sync: SyncMode, mut h: u64) -> Outcome {
        if items.len() > MAX_OP {
            let how = if fixed {
                Behavior::Fixed
            } else {
                Behavior::Variable
            };
            return self.enqueue_long(items, how, sync);
        }
        if sync == SyncMode::Mt && self.is_own_bias(h) {
            if let Some(o) = self.enq_biased(items, fixed, h) {
                return o;
            }
            h = self.head_word(Which::Prod);
        }
        let want = items.len() as u32;
        let (claim, free) = self.reserve_plain(Which::Prod, want, fixed, sync, h);
        if claim.n == 0 {
            if free == OWN_BIAS {
                return self.enq_now_biased(items, fixed);
            }
            return Outcome { n: 0, left: free };
        }
        let n = claim.n as usize;
        self.mem.write::<WIDE_SHARED>(&claim, &items[..n]);
        self.publish::<false>(Which::Prod, &claim, sync);
        Outcome {
            n,
            left: free - claim.n,
        }
    }

    /// The enqueue again, once the side was biased to this thread while it tried.
    #[cold]
    #[inline(never)]
    fn enq_now_biased(&self, items: &[T], fixed: bool) -> Outcome {
        self.enq(items, fixed, SyncMode::Mt)
    }

    /// The dequeue again, once the side was biased to this thread while it tried.
    #[cold]
    #[inline(never)]
    fn deq_now_biased(&self, out: &mut [T], fixed: bool) -> Outcome {
        self.deq(out, fixed, SyncMode::Mt)
    }

    #[cold]
    fn enqueue_long(&self, items: &[T], how: Behavior, sync: SyncMode) -> Outcome {
        if how == Behavior::Fixed {
            return Outcome {
                n: 0,
                left: self.free_count(),
            };
        }
        let mut done = 0;
        let mut left = 0;
        for chunk in items.chunks(MAX_OP) {
            let o = self.enqueue_with(chunk, how, sync);
            done += o.n;
            left = o.left;
            if o.n < chunk.len() {
                break;
            }
        }
        Outcome { n: done, left }
    }

    /// Zero-copy bulk enqueue through the shared (multi-producer) protocol: reserve `n` free
    /// slots, all or nothing, and let `f` write the elements in place (the run up to the end of
    /// the slot array, then the run that wraps to its start), then publish them. Returns `n`,
    /// or 0 if they do not fit. `f` runs while the reservation is held, so later producers
    /// wait for it: keep it short. If `f` panics, the reservation is abandoned (counted in
    /// [`Ring::abandoned`], never delivered) and the panic goes on.
    ///
    /// ```
    /// use rte_ring::{Ring, RingFlags};
    /// use shmconfig::LocalZones;
    /// let zones = LocalZones::new();
    /// let r = Ring::<u32>::create(&zones, "in place", 16, RingFlags::empty()).unwrap();
    /// let src = [7u32, 8, 9];
    /// let n = r.enqueue_bulk_in_place(3, |a, b| {
    ///     let (x, y) = src.split_at(a.len());
    ///     a.copy_from_slice(x);
    ///     b.copy_from_slice(y);
    /// });
    /// assert_eq!(n, 3);
    /// let mut sum = 0;
    /// assert_eq!(r.dequeue_bulk_in_place(3, |a, b| sum = a.iter().chain(b).sum()), 3);
    /// assert_eq!(sum, 24);
    /// ```
    #[cfg(not(hugeshare_loom))]
    #[inline]
    pub fn enqueue_bulk_in_place(&self, n: usize, f: impl FnOnce(&mut [T], &mut [T])) -> usize {
        let h = self.head_word(Which::Prod);
        // `1 <= n <= MAX_OP` as one compare: written as a range's `contains`, it added 23
        // instructions to the mempool bench's no-cache get + put of 4.
        if self.is_own_bias(h) && n.wrapping_sub(1) < MAX_OP {
            match self.claim_biased(Which::Prod, n as u32, h) {
                Ok((claim, busy)) => {
                    self.fill_claim(&claim, SyncMode::Mt, Some(busy), f);
                    return n;
                }
                Err(REVOKED) => {}
                Err(_) => return 0,
            }
        }
        self.enq_in_place_shared(n, f)
    }

    /// Zero-copy bulk dequeue through the shared (multi-consumer) protocol: take `n` elements,
    /// all or nothing, and show them to `f` in place before their slots are given back (see
    /// [`Ring::enqueue_bulk_in_place`]). Returns `n`, or 0 if there are fewer. If `f` panics,
    /// the elements are taken (counted as abandoned) and the panic goes on.
    #[cfg(not(hugeshare_loom))]
    #[inline]
    pub fn dequeue_bulk_in_place(&self, n: usize, f: impl FnOnce(&[T], &[T])) -> usize {
        let h = self.head_word(Which::Cons);
        // As in `enqueue_bulk_in_place`.
        if self.is_own_bias(h) && n.wrapping_sub(1) < MAX_OP {
            match self.claim_biased(Which::Cons, n as u32, h) {
                Ok((claim, busy)) => {
                    self.drain_claim(&claim, SyncMode::Mt, Some(busy), f);
                    return n;
                }
                Err(REVOKED | HOLES) => {}
                Err(_) => return 0,
            }
        }
        self.deq_in_place_shared(n, f)
    }

    /// Every in-place call but a biased side's claim: shared sides in each mode, a bias lost
    /// or taken on the way, abandoned ranges to step over. Out of line, so that a caller's
    /// loop inlines the biased claim alone (before, it inlined the claims of all four ways).
    /// On the mempool bench's worker (one core, alternating runs against the build before),
    /// cache bulk 4 and 8 went from 0.88-1.03 × DPDK to 1.12-1.20, cache bulk 1 from 1.16 to
    /// 1.33, no-cache bulk 8 from 1.08-1.12 to 1.16-1.19; on two cores, where this path runs
    /// and is now a call, no-cache bulk 32 keep 32 measured 0.87-0.99 before and 0.90-0.93
    /// after, and the cache rows went up with the one-core ones.
    #[cfg(not(hugeshare_loom))]
    #[inline(never)]
    fn enq_in_place_shared(&self, n: usize, f: impl FnOnce(&mut [T], &mut [T])) -> usize {
        by_mode!(self, Which::Prod, (sync, h) => self.enq_in_place(n, f, sync, h))
    }

    /// See [`Ring::enq_in_place_shared`].
    #[cfg(not(hugeshare_loom))]
    #[inline(never)]
    fn deq_in_place_shared(&self, n: usize, f: impl FnOnce(&[T], &[T])) -> usize {
        by_mode!(self, Which::Cons, (sync, h) => self.deq_in_place(n, f, sync, h))
    }

    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn enq_in_place(
        &self,
        n: usize,
        f: impl FnOnce(&mut [T], &mut [T]),
        sync: SyncMode,
        h: u64,
    ) -> usize {
        if n == 0 || n > MAX_OP {
            return 0;
        }
        let (claim, _, busy) = self.claim_in_place(Which::Prod, n as u32, sync, h);
        if claim.n == 0 {
            return 0;
        }
        self.fill_claim(&claim, sync, busy, f);
        n
    }

    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn deq_in_place(&self, n: usize, f: impl FnOnce(&[T], &[T]), sync: SyncMode, h: u64) -> usize {
        if n == 0 || n > MAX_OP {
            return 0;
        }
        let (claim, avail, busy) = self.claim_in_place(Which::Cons, n as u32, sync, h);
        if claim.n == 0 {
            if avail == HOLES {
                // The closure is called here rather than handed to the out-of-line path: handed
                // over, it had to be built on the stack on every call.
                return match self.deq_copy_over_holes(n, sync) {
                    Some(tmp) => {
                        f(&tmp, &[]);
                        n
                    }
                    None => 0,
                };
            }
            return 0;
        }
        self.drain_claim(&claim, sync, busy, f);
        n
    }

    /// Show a producer's in-place claim to `f` (its free slots, as two runs), then publish it
    /// ([`Ring::run_claim`]).
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn fill_claim(
        &self,
        claim: &Claim,
        sync: SyncMode,
        busy: Option<&AtomicU32>,
        f: impl FnOnce(&mut [T], &mut [T]),
    ) {
        self.run_claim(Which::Prod, claim, sync, busy, || {
            let (a, b) = self.mem.slots_mut(claim);
            f(a, b);
        });
    }

    /// Show a consumer's in-place claim to `f` (its elements, as two runs), then publish it
    /// ([`Ring::run_claim`]).
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn drain_claim(
        &self,
        claim: &Claim,
        sync: SyncMode,
        busy: Option<&AtomicU32>,
        f: impl FnOnce(&[T], &[T]),
    ) {
        self.run_claim(
            Which::Cons,
            claim,
            sync,
            busy,
            // Forced: this is instantiated for the biased claim and for each sync mode (in
            // `deq_in_place_shared`; when it was measured, all in `dequeue_bulk_in_place`
            // itself), and with the caller's closure grown past LLVM's threshold for a function
            // called from three places this became an out-of-line call (mempool no-cache bulk
            // 4 on one core: 0.80 -> 0.95-1.0 x DPDK with the attribute, here and on the
            // caller's closure).
            #[inline(always)]
            || {
                let (a, b) = self.mem.slots(claim);
                f(a, b);
            },
        );
    }

    /// [`Ring::deq_in_place`] with abandoned ranges ahead: step over them the copying way (out of
    /// line: rare, and it keeps the in-place path short). `None` if fewer than `n` are there.
    #[cfg(not(hugeshare_loom))]
    #[cold]
    #[inline(never)]
    fn deq_copy_over_holes(&self, n: usize, sync: SyncMode) -> Option<Vec<T>> {
        let mut tmp = vec![T::new_zeroed(); n];
        (self.dequeue_slow(&mut tmp, true, sync).n == n).then_some(tmp)
    }

    /// The claim of an in-place call, from head word `h` (read by the caller): the biased way,
    /// inline, on a side biased to this thread; else the shared reservation (which may still
    /// bias the side, and then makes a biased claim out of line). The biased claim is written
    /// out here, as in [`Ring::enq_biased`] and its twins, rather than taken from
    /// [`Ring::reserve_biased`]: returning the raised flag through that one function measured 1
    /// to 1.5 cycles slower on the one-core MP/MC rows and 5% slower on the mempool's no-cache
    /// bulk 4.
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn claim_in_place(
        &self,
        w: Which,
        n: u32,
        sync: SyncMode,
        mut h: u64,
    ) -> (Claim, u32, Option<&AtomicU32>) {
        if sync == SyncMode::Mt && self.is_own_bias(h) {
            match self.claim_biased(w, n, h) {
                Ok((claim, busy)) => return (claim, n, Some(busy)),
                Err(REVOKED) => h = self.head_word(w),
                Err(room) => return (Claim::NONE, room, None),
            }
        }
        let (c, room) = self.reserve::<true, true>(w, n, true, sync, h);
        (c, room, None)
    }

    /// The biased claim of `n` elements for an in-place call, on a side biased to this thread
    /// (head word `h`, checked by the caller): the claim and its raised in-flight flag, or the
    /// room when it is less than `n` ([`HOLES`]: consumers must step over abandoned ranges;
    /// [`REVOKED`]: the bias was revoked meanwhile).
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn claim_biased(&self, w: Which, n: u32, h: u64) -> Result<(Claim, &AtomicU32), u32> {
        let (mine, other) = self.side(w);
        Self::no_claim_held(mine, h);
        let Some((busy, pos)) = Self::begin_biased(mine, h) else {
            return Err(REVOKED);
        };
        let Some(room) = self.room_at::<true>(w, mine, other, pos, n) else {
            busy.store(0, Release);
            return Err(HOLES);
        };
        if room < n {
            busy.store(0, Release);
            return Err(room);
        }
        Ok((Claim::biased(pos, n, h), busy))
    }

    /// Run `body` on an in-place claim, then publish the claim; if `body` unwinds, the claim is
    /// abandoned instead ([`Ring::abandon_own`]).
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn run_claim(
        &self,
        w: Which,
        claim: &Claim,
        sync: SyncMode,
        busy: Option<&AtomicU32>,
        body: impl FnOnce(),
    ) {
        let guard = Unwinding {
            ring: self,
            claim: *claim,
            sync,
            w,
        };
        body();
        std::mem::forget(guard);
        match busy {
            // A biased claim made inline: publish it without looking at it again.
            Some(busy) => self.end_biased(w, claim, busy),
            None => self.publish::<true>(w, claim, sync),
        }
    }

    /// [`Ring::abandon_own`] for the unwinding guard of an in-place call, the claim by value.
    #[cfg(not(hugeshare_loom))]
    #[cold]
    #[inline(never)]
    fn abandon_claim(&self, w: Which, c: Claim, sync: SyncMode) {
        self.abandon_own(w, &c, sync);
    }

    /// Give up this member's own claim (a closure given an in-place claim panicked): wait for
    /// its turn, then a producer's range is abandoned as a dead producer's would be, and a
    /// consumer's is published (its elements were taken, not delivered): both are counted.
    #[cfg(not(hugeshare_loom))]
    #[cold]
    fn abandon_own(&self, w: Which, c: &Claim, sync: SyncMode) {
        let (mine, _) = self.side(w);
        let sh = self.mem.shared();
        if let Some(busy) = self.bias_flag(w, c) {
            // Nobody else moves a biased side: a producer's range is simply not published, a
            // consumer's is (its elements were taken).
            match w {
                Which::Prod => sh.stats.abandoned_enq.fetch_add(c.n as u64, Relaxed),
                Which::Cons => {
                    mine.tail.store(c.pos.wrapping_add(c.n), Release);
                    sh.stats.abandoned_deq.fetch_add(c.n as u64, Relaxed)
                }
            };
            busy.store(0, Release);
            return;
        }
        self.await_turn(w, c, sync);
        match w {
            Which::Prod => {
                let mut spins = 0u32;
                while self.add_hole(c.pos, c.n).is_none() {
                    self.wait_step(Which::Cons, &mut spins, 0);
                }
                sh.stats.abandoned_enq.fetch_add(c.n as u64, Relaxed);
            }
            Which::Cons => {
                sh.stats.abandoned_deq.fetch_add(c.n as u64, Relaxed);
            }
        }
        let end = c.pos.wrapping_add(c.n);
        mine.tail.store(end, Release);
        if sync == SyncMode::Rts {
            self.take_marks(w, end);
        }
    }

    /// Dequeue with an explicit behaviour and consumer mode (see [`Ring::enqueue_with`] for
    /// what mixing modes means).
    #[inline]
    pub fn dequeue_with(&self, out: &mut [T], how: Behavior, sync: SyncMode) -> Outcome {
        let fixed = how == Behavior::Fixed;
        match self.call_mode(self.cons_sync, sync) {
            SyncMode::St | SyncMode::Mt => self.deq(out, fixed, SyncMode::Mt),
            SyncMode::Hts => self.deq(out, fixed, SyncMode::Hts),
            SyncMode::Rts => self.deq(out, fixed, SyncMode::Rts),
        }
    }

    /// In the ring's default mode for this side.
    #[inline(always)]
    fn deq_default(&self, out: &mut [T], fixed: bool) -> Outcome {
        by_mode!(self, Which::Cons, (sync, h) => self.deq_from(out, fixed, sync, h))
    }

    /// The operation, for a mode known where it is inlined.
    #[inline(always)]
    fn deq(&self, out: &mut [T], fixed: bool, sync: SyncMode) -> Outcome {
        self.deq_from(out, fixed, sync, self.head_word(Which::Cons))
    }

    /// [`Ring::deq`] from head word `h`, read by the caller.
    #[inline(always)]
    fn deq_from(&self, out: &mut [T], fixed: bool, sync: SyncMode, mut h: u64) -> Outcome {
        if out.len() > MAX_OP {
            let how = if fixed {
                Behavior::Fixed
            } else {
                Behavior::Variable
            };
            return self.dequeue_long(out, how, sync);
        }
        if sync == SyncMode::Mt && self.is_own_bias(h) {
            if let Some(o) = self.deq_biased(out, fixed, h) {
                return o;
            }
            h = self.head_word(Which::Cons);
        }
        let want = out.len() as u32;
        let (claim, avail) = self.reserve_plain(Which::Cons, want, fixed, sync, h);
        if claim.n == 0 {
            if avail == HOLES {
                return self.dequeue_slow(out, fixed, sync);
            }
            if avail == OWN_BIAS {
                return self.deq_now_biased(out, fixed);
            }
            return Outcome { n: 0, left: avail };
        }
        let n = claim.n as usize;
        self.mem.read::<WIDE_SHARED>(&claim, 0, &mut out[..n]);
        self.publish::<false>(Which::Cons, &claim, sync);
        Outcome {
            n,
            left: avail - claim.n,
        }
    }

    /// One element, returned by value (no buffer in memory between the slot and the caller).
    #[inline(always)]
    fn deq_one(&self, sync: SyncMode, mut h: u64) -> Option<T> {
        if sync == SyncMode::Mt && self.is_own_bias(h) {
            if let Some(v) = self.deq_one_biased(h) {
                return v;
            }
            h = self.head_word(Which::Cons);
        }
        let (claim, avail) = self.reserve_plain(Which::Cons, 1, true, sync, h);
        if claim.n == 0 {
            if avail == OWN_BIAS {
                let mut v = T::new_zeroed();
                let got = self.deq_now_biased(std::slice::from_mut(&mut v), true).n;
                return (got == 1).then_some(v);
            }
            if avail == HOLES {
                let mut v = T::new_zeroed();
                let got = self
                    .dequeue_slow(std::slice::from_mut(&mut v), true, sync)
                    .n;
                return (got == 1).then_some(v);
            }
            return None;
        }
        let v = self.mem.read_one(&claim);
        self.publish::<false>(Which::Cons, &claim, sync);
        Some(v)
    }

    #[cold]
    fn dequeue_long(&self, out: &mut [T], how: Behavior, sync: SyncMode) -> Outcome {
        if how == Behavior::Fixed {
            return Outcome {
                n: 0,
                left: self.count(),
            };
        }
        let mut done = 0;
        let mut left = 0;
        for chunk in out.chunks_mut(MAX_OP) {
            let len = chunk.len();
            let o = self.dequeue_with(chunk, how, sync);
            done += o.n;
            left = o.left;
            if o.n < len {
                break;
            }
        }
        Outcome { n: done, left }
    }

    /// Take the producer side for this handle alone: the returned [`SingleProducer`] enqueues
    /// with plain loads and stores (DPDK's single-producer path) and no other producer of any
    /// member can run until it is dropped. The ring's own enqueue calls wait meanwhile (do not
    /// call them from the thread that holds the handle); if the holder's member dies, the group
    /// (or the next caller) releases the side, and nothing it had published is lost.
    ///
    /// Fails with [`RingError::Held`] if another handle holds the side now. Waits for producer
    /// operations in flight to finish first.
    ///
    /// ```
    /// use rte_ring::{Ring, RingFlags};
    /// use shmconfig::LocalZones;
    /// let zones = LocalZones::new();
    /// let r = Ring::<u64>::create(&zones, "spsc", 64, RingFlags::SP_ENQ | RingFlags::SC_DEQ).unwrap();
    /// let mut tx = r.single_producer().unwrap();
    /// let mut rx = r.single_consumer().unwrap();
    /// assert!(r.single_producer().is_err()); // one holder at a time
    /// assert_eq!(tx.enqueue_bulk(&[1, 2, 3]), 3);
    /// assert_eq!(rx.dequeue(), Some(1));
    /// drop(tx); // the side is free again
    /// assert_eq!(r.enqueue_burst(&[4]), 1);
    /// ```
    pub fn single_producer(&self) -> Result<SingleProducer<T>, RingError> {
        let pos = self.hold(Which::Prod, "producer")?;
        Ok(SingleProducer::new(self.clone(), pos))
    }

    /// Take the consumer side for this handle alone (see [`Ring::single_producer`]). A consumer
    /// that dies while holding the side loses nothing: what it was copying out when it died was
    /// not taken from the ring and goes to the next consumer.
    pub fn single_consumer(&self) -> Result<SingleConsumer<T>, RingError> {
        let pos = self.hold(Which::Cons, "consumer")?;
        Ok(SingleConsumer::new(self.clone(), pos))
    }

    /// Mark side `w` held by this member once no operation of the side is in flight; returns the
    /// position the side is at.
    fn hold(&self, w: Which, side: &'static str) -> Result<u32, RingError> {
        let (mine, _) = self.side(w);
        let mut spins = 0u32;
        loop {
            let h = mine.head.load(Acquire);
            let (pos, m, n) = unpack(h);
            if n == BIASED || n == REVOKING {
                self.unbias(w, false);
                continue;
            }
            if n == HELD {
                if self.is_dead(m) {
                    self.resolve(w);
                    continue;
                }
                return Err(RingError::Held {
                    name: self.name.to_string(),
                    side,
                    holder: MemberId(m),
                    mine: m == self.me,
                });
            }
            // Every reservation before `pos` must be published (or abandoned) first: from
            // then on, only the holder moves this side.
            if mine.tail.load(Acquire) != pos {
                self.wait_step(w, &mut spins, 0);
                continue;
            }
            if mine
                .head
                .compare_exchange(h, pack(pos, self.me, HELD), AcqRel, Acquire)
                .is_ok()
            {
                return Ok(pos);
            }
        }
    }

    /// Give side `w` back, at position `pos` (the holder's own tail).
    pub(crate) fn unhold(&self, w: Which, pos: u32) {
        let (mine, _) = self.side(w);
        mine.head.store(pack(pos, self.me, 0), Release);
    }

    // ----- the protocol -----

    #[inline(always)]
    pub(crate) fn side(&self, w: Which) -> (&Side, &Side) {
        let sh: &Shared = self.mem.shared();
        match w {
            Which::Prod => (&sh.prod, &sh.cons),
            Which::Cons => (&sh.cons, &sh.prod),
        }
    }

    /// Room for this side at head position `pos` given the other side's tail `other` (or a
    /// copy of it), within `0..=capacity` whatever `other` is ([`clamp_room`]).
    #[inline(always)]
    pub(crate) fn room(&self, w: Which, pos: u32, other: u32) -> u32 {
        clamp_room(self.raw_room(w, pos, other), self.capacity)
    }

    /// The room at `pos` given the other side's tail `other`, a room outside `0..=capacity`
    /// counting as none: [`own_room`]. For a caller whose `pos` is its side's own tail (a side
    /// biased to it), where no legitimate room lies outside, and for a side's cached copy of
    /// the other tail, where such a room sends the caller to the tail itself (see
    /// [`Ring::room_at`]).
    #[inline(always)]
    fn room_own(&self, w: Which, pos: u32, other: u32) -> u32 {
        own_room(self.raw_room(w, pos, other), self.capacity)
    }

    /// The room at `pos` given the other side's tail `other`, unbounded (wrapping).
    #[inline(always)]
    fn raw_room(&self, w: Which, pos: u32, other: u32) -> u32 {
        match w {
            Which::Prod => self.capacity.wrapping_add(other).wrapping_sub(pos),
            Which::Cons => other.wrapping_sub(pos),
        }
    }

    /// Room at `pos`. A shared call uses its side's cached copy of the other side's tail when
    /// it is enough, else that tail itself (and keeps it as the new copy whenever it shows
    /// something); a biased consumer reads the producer tail every time. `None` when consumers
    /// must go the slow way because producers left abandoned ranges. `OWN`: `pos` is the side's
    /// own tail (a biased side; see [`Ring::room_own`]); else a head that may be stale, whose
    /// room can legitimately look larger than the capacity (the CAS that follows fails), so it
    /// is clamped.
    ///
    /// Consumers taking from their copy do not look at the abandoned-range count: a copy is
    /// kept only when the count was 0 after its tail was read, and a range is entered in the
    /// table before the producer tail moves over it, starting at that tail, so every range
    /// entered later lies at or above the copy. The consumers' copy is what a pool's gets want:
    /// its ring is mostly full, and reading the producer tail on every get took the line that
    /// every put moves. On the mempool bench's no-cache 2-core rows, against reading it every
    /// time (alternating runs, host in its fast state): bulk 32 keep 128, 517-543 M objects/s
    /// against 413-430 (four pairs); keep 32, 359-383 against 345-374; bulk 1 keep 32,
    /// 26.3-27.5 against 21.2-21.3 (two pairs). A biased consumer keeps reading the tail: it
    /// shares its side with nobody, and with the copy there too the one-core rows ran no
    /// faster (bulk 1: 139-142 against 140-143 without it).
    #[inline(always)]
    fn room_at<const OWN: bool>(
        &self,
        w: Which,
        mine: &Side,
        other: &Side,
        pos: u32,
        want: u32,
    ) -> Option<u32> {
        let room_of = |t: u32| {
            if OWN {
                self.room_own(w, pos, t)
            } else {
                self.room(w, pos, t)
            }
        };
        if OWN && w == Which::Cons {
            // A biased consumer: the producer tail, and the abandoned-range count beside it
            // only when there is something to take.
            let t = other.tail.load(Acquire);
            let room = room_of(t);
            if room != 0 && other.holes.load(Acquire) != 0 {
                return None;
            }
            return Some(room);
        }
        // A copy is a tail some member read earlier, so its room is at most the real one: a
        // room out of `0..=capacity` means the copy is older than half the position space (or
        // damaged), not that there is room. It counts as none, and the tail itself is read.
        let room = self.room_own(w, pos, mine.cached_other.load(Acquire));
        if room >= want {
            return Some(room);
        }
        let t = other.tail.load(Acquire);
        let room = room_of(t);
        if room == 0 {
            return Some(0);
        }
        if w == Which::Cons && other.holes.load(Acquire) != 0 {
            // Abandoned ranges to step over (and no copy kept while there are).
            return None;
        }
        // Kept every time the tail is read with something there: a copy kept only when it
        // showed more than asked was never refreshed by calls that always find exactly what
        // they ask or less (a producer filling the ring, say), and grew old without bound.
        mine.cached_other.store(t, Release);
        Some(room)
    }

    #[inline(always)]
    pub(crate) fn decide(want: u32, room: u32, fixed: bool) -> u32 {
        if want <= room {
            want
        } else if fixed {
            0
        } else {
            room
        }
    }

    /// Multi-member reservation (MT, HTS, RTS): CAS on the head word, after recording the
    /// previous reservation (see the crate docs); on a side biased to this thread, the biased
    /// reservation instead (see "Biased sides" there).
    #[inline(always)]
    fn reserve_mt(&self, w: Which, want: u32, fixed: bool, sync: SyncMode) -> (Claim, u32) {
        self.reserve::<true, true>(w, want, fixed, sync, self.head_word(w))
    }

    /// [`Ring::reserve_mt`] for callers with a biased way of their own (the copying enqueue and
    /// dequeue): never returns a biased claim, but [`OWN_BIAS`] when the side is (now) biased to
    /// this thread. Their publish then needs no look at the claim's kind.
    #[inline(always)]
    fn reserve_plain(
        &self,
        w: Which,
        want: u32,
        fixed: bool,
        sync: SyncMode,
        h: u64,
    ) -> (Claim, u32) {
        self.reserve::<true, false>(w, want, fixed, sync, h)
    }

    /// [`Ring::reserve_mt`]; with `BIAS` false it never takes a bias (a test's unfinished
    /// reservation must stay visible); with `CLAIMS` false see [`Ring::reserve_plain`].
    #[inline(always)]
    fn reserve<const BIAS: bool, const CLAIMS: bool>(
        &self,
        w: Which,
        want: u32,
        fixed: bool,
        sync: SyncMode,
        mut h: u64,
    ) -> (Claim, u32) {
        let (mine, other) = self.side(w);
        let mut spins = 0u32;
        loop {
            let (pos, pm, pn) = unpack(h);
            if pn >= FRESH {
                if let Some(r) = self.special::<BIAS, CLAIMS>(w, h, want, fixed, sync, &mut spins) {
                    return r;
                }
                h = mine.head.load(Acquire);
                continue;
            }
            if sync == SyncMode::Hts || sync == SyncMode::Rts {
                let limit = if sync == SyncMode::Hts {
                    0
                } else {
                    self.htd_max
                };
                let t = mine.tail.load(Acquire);
                if pos.wrapping_sub(t) > limit {
                    self.wait_step(w, &mut spins, 0);
                    h = mine.head.load(Acquire);
                    continue;
                }
            }
            let Some(room) = self.room_at::<false>(w, mine, other, pos, want) else {
                return (Claim::NONE, HOLES);
            };
            let n = Self::decide(want, room, fixed);
            if n == 0 {
                return (Claim::NONE, room);
            }
            let alone = self.record_pred(w, mine, pos, pm, pn);
            match self
                .mem
                .claim_cas(&mine.head, h, pack(pos.wrapping_add(n), self.me, n as u16))
            {
                Ok(mut c) => {
                    if alone {
                        c.prev = 0;
                    }
                    return (c, room);
                }
                Err(x) => h = x,
            }
        }
    }

    /// Record the reservation the head word names (it ends at `pos`), before a CAS moves the
    /// head past it, so that it stays attributable while unpublished. Once the tail has reached
    /// `pos`, it and everything before it are published and nobody will look it up: no store.
    /// Returns whether the tail was at `pos`: then a claim starting there has no earlier
    /// reservation to wait for when it publishes.
    ///
    /// What it costs: the store often misses (its line was last written by another core), and
    /// the locked CAS right after waits for it. On the mempool bench's no-cache row at 2 cores,
    /// bulk 32, keep 32, a build without it ran at 387–413 M objects/s against 366–370 (three
    /// alternating pairs, host in its fast state): 6–13%. Also measured there, both slower:
    /// taking the record's line early with `PREFETCHW` at the top of the reservation (322–338
    /// against 346–357, four pairs), and prefetching the claim's slots before the CAS, for
    /// writing on puts (326–350 against 362–370 in three of four pairs; the fourth ran in
    /// another host state). Written after the CAS instead, the record would leave a window in
    /// which a predecessor that dies unpublished cannot be attributed if its successor dies
    /// too; the protocol does not accept that window. Nor did a predecessor word beside the
    /// head word, moved with it by one 16-byte CAS (`CMPXCHG16B`; the array written only with
    /// three reservations in flight) pay on this host: in its fast state it ran at 366-380
    /// against 354-363 at keep 32 (three pairs), but in its slow state, where the row is near
    /// its target, at 90-93 against 106-111 (three pairs; keep 128: 117-125 against 130-144):
    /// the 16-byte locked CAS costs more there than the store it saves.
    #[inline(always)]
    fn record_pred(&self, w: Which, mine: &Side, pos: u32, pm: u16, pn: u16) -> bool {
        let at_tail = mine.tail.load(Acquire) == pos;
        if pn != 0 && !at_tail {
            let s = pos.wrapping_sub(pn as u32);
            self.mem
                .record(w as usize, s)
                .store(pack(s, pm, pn), Relaxed);
        }
        at_tail
    }

    /// Publish a claim: in MT mode wait for earlier reservations of this side first; in RTS
    /// mode publish without waiting ([`Ring::publish_rts`]).
    #[inline(always)]
    fn publish<const MAYBE_BIASED: bool>(&self, w: Which, c: &Claim, sync: SyncMode) {
        if !MAYBE_BIASED {
        } else if let Some(busy) = self.bias_flag(w, c) {
            return self.end_biased(w, c, busy);
        }
        if sync == SyncMode::Rts {
            return self.publish_rts(w, c);
        }
        self.await_turn(w, c, sync);
        let (mine, _) = self.side(w);
        mine.tail.store(c.pos.wrapping_add(c.n), Release);
    }

    /// RTS publish: never waits for earlier reservations. If the tail is at the claim's start,
    /// move it to the claim's end; otherwise leave a completion mark at the claim's start for
    /// whoever brings the tail there, and look once more. The mark and the tail are a Dekker
    /// pair: each side stores its word, then a sequentially consistent fence, then loads the
    /// other's word, so at least one of them sees the other. Whoever moves the tail then takes
    /// the marks it reaches ([`Ring::take_marks`]).
    #[inline(never)]
    fn publish_rts(&self, w: Which, c: &Claim) {
        let (mine, _) = self.side(w);
        if !c.alone() && mine.tail.load(Acquire) != c.pos {
            let v = pack(c.pos, self.me, c.n as u16);
            self.mem.done_mark(w as usize, c.pos).store(v, Release);
            sync::fence(SeqCst);
            if mine.tail.load(Acquire) == c.pos {
                // The tail reached us meanwhile: take our own mark (and any after it), unless
                // a taker already did.
                self.take_marks(w, c.pos);
            }
            // Otherwise whoever brings the tail to `c.pos` will see the mark.
            return;
        }
        // Our turn: nobody else moves the tail from `c.pos` (no mark is there for it).
        let end = c.pos.wrapping_add(c.n);
        mine.tail.store(end, Release);
        self.take_marks(w, end);
    }

    /// RTS: the tail is at `t` (this caller just moved it there, or found it there); move it
    /// on over every reservation whose owner left a completion mark, clearing each mark taken
    /// (so that no stale mark is found a lap, or 2^32 positions, later). Stops at the first
    /// reservation without a mark, or when another taker moved the tail first.
    pub(crate) fn take_marks(&self, w: Which, mut t: u32) {
        let (mine, _) = self.side(w);
        loop {
            // The other half of the Dekker pair in `publish_rts`: tail stored, fence, mark read.
            sync::fence(SeqCst);
            let Some((v, n)) = self.mark_at(w, t) else {
                return;
            };
            let end = t.wrapping_add(n);
            if mine.tail.compare_exchange(t, end, AcqRel, Relaxed).is_err() {
                return;
            }
            let _ = self
                .mem
                .done_mark(w as usize, t)
                .compare_exchange(v, 0, Relaxed, Relaxed);
            t = end;
        }
    }

    /// In MT/RTS mode, wait until the tail reaches the claim's start (earlier reservations of
    /// this side published or abandoned). A claim made when the tail was at its start (`alone`)
    /// has nothing to wait for: every earlier position was published, and only this claim's
    /// owner publishes at `c.pos`.
    #[inline(always)]
    fn await_turn(&self, w: Which, c: &Claim, sync: SyncMode) {
        let (mine, _) = self.side(w);
        if matches!(sync, SyncMode::Mt | SyncMode::Rts)
            && !c.alone()
            && mine.tail.load(Acquire) != c.pos
        {
            self.wait_turn(w, c);
        }
    }

    /// Wait until earlier reservations of this side are published (or abandoned).
    #[cold]
    #[inline(never)]
    fn wait_turn(&self, w: Which, c: &Claim) {
        let (mine, _) = self.side(w);
        let mut spins = 0u32;
        while mine.tail.load(Acquire) != c.pos {
            self.wait_step(w, &mut spins, c.prev);
        }
    }

    /// One step of a wait on this side's peers; every so often, look for dead ones. `pred` is
    /// the head word the waiter's own claim replaced (0 when it has none yet): its record is
    /// written again while that reservation sits unpublished at the tail, which repairs a
    /// record a stalled contender's late write may have hidden (see the crate docs).
    #[inline(never)]
    pub(crate) fn wait_step(&self, w: Which, spins: &mut u32, pred: u64) {
        *spins = spins.wrapping_add(1);
        if sync::time_to_check(*spins) {
            let (pp, pm, pn) = unpack(pred);
            let s = pp.wrapping_sub(pn as u32);
            let (mine, _) = self.side(w);
            if pn != 0 && mine.tail.load(Acquire) == s {
                self.mem
                    .record(w as usize, s)
                    .store(pack(s, pm, pn), Release);
            }
            self.resolve(w);
            sync::yield_now();
        } else {
            sync::spin();
        }
    }

    // ----- biased sides (see the crate docs, "Biased sides") -----

    /// The head word of a side biased to this thread, generation bits clear (never a real head
    /// word while the thread has no tag; never matches when it may not hold a bias).
    #[inline(always)]
    fn bias_word(&self) -> u64 {
        self.bias_base | bias::tag() as u64
    }

    /// An MT call found side `w` fresh (idle, biasable; head word `h`): bias it to this thread
    /// and reserve the biased way, when this thread may hold a bias (a group member whose
    /// process has the expedited membarrier; a guest cannot take part in the host's) and the
    /// side has not changed hands too often; otherwise make the side ordinary. `None`: look at
    /// the head word again.
    #[cold]
    #[inline(never)]
    fn leave_fresh<const BIAS: bool, const CLAIMS: bool>(
        &self,
        w: Which,
        h: u64,
        want: u32,
        fixed: bool,
        sync: SyncMode,
    ) -> Option<(Claim, u32)> {
        let (mine, other) = self.side(w);
        // The generation comes from the fresh word itself, not from the revocation count: a
        // count read here could be older than `h` (another thread biased the side and had the
        // bias revoked in between, which leaves the same position). The CAS below then checks
        // generation and position at once. `revokes` still says whether biasing was stopped
        // ([`Ring::disable_bias`]).
        let (pos, gen, _) = unpack(h);
        let gen = gen as u32;
        let tag = if BIAS
            && sync == SyncMode::Mt
            && self.me != MemberId::OUTSIDER.0
            && gen < MAX_REVOKES
            && mine.revokes.load(Acquire) < MAX_REVOKES
        {
            bias::tag_for_bias()
        } else {
            None
        };
        // A fresh side has no operation in flight: whichever word replaces `h` first decides.
        let Some(tag) = tag else {
            let _ = mine
                .head
                .compare_exchange(h, pack(pos, 0, 0), AcqRel, Acquire);
            return None;
        };
        let bw = pack(tag | gen << bias::TAG_BITS, self.me, BIASED);
        if mine.head.compare_exchange(h, bw, AcqRel, Acquire).is_err() {
            return None;
        }
        if !CLAIMS {
            return Some((Claim::NONE, OWN_BIAS));
        }
        self.reserve_biased(w, mine, other, want, fixed, bw)
    }

    /// The reservation when side `w`'s head word `h` is not an ordinary one: biased to this
    /// thread (reserve the single-member way), held by a single-member handle (wait a step),
    /// fresh (bias it to this thread, or make it ordinary), or biased to another thread or being
    /// revoked (revoke, or wait). `None`: look at the head word again.
    #[cold]
    #[inline(never)]
    fn special<const BIAS: bool, const CLAIMS: bool>(
        &self,
        w: Which,
        h: u64,
        want: u32,
        fixed: bool,
        sync: SyncMode,
        spins: &mut u32,
    ) -> Option<(Claim, u32)> {
        let (mine, other) = self.side(w);
        let (_, _, n) = unpack(h);
        if BIAS && sync == SyncMode::Mt && h & !GEN_BITS == self.bias_word() {
            if !CLAIMS {
                return Some((Claim::NONE, OWN_BIAS));
            }
            self.reserve_biased(w, mine, other, want, fixed, h)
        } else if n == HELD {
            self.wait_step(w, spins, 0);
            None
        } else if n == FRESH {
            self.leave_fresh::<BIAS, CLAIMS>(w, h, want, fixed, sync)
        } else {
            self.unbias(w, true);
            None
        }
    }

    /// The whole enqueue of the thread the producer side is biased to (head word `h`), as the
    /// single-member handle's: `None` when the bias was revoked meanwhile.
    #[inline(always)]
    fn enq_biased(&self, items: &[T], fixed: bool, h: u64) -> Option<Outcome> {
        let (mine, other) = self.side(Which::Prod);
        let (busy, pos) = Self::begin_biased(mine, h)?;
        let want = items.len() as u32;
        let room = self
            .room_at::<true>(Which::Prod, mine, other, pos, want)
            .unwrap_or(0);
        let n = Self::decide(want, room, fixed);
        if n != 0 {
            self.mem
                .write::<WIDE_HELD>(&Claim::biased(pos, n, h), &items[..n as usize]);
            mine.tail.store(pos.wrapping_add(n), Release);
        }
        busy.store(0, Release);
        Some(Outcome {
            n: n as usize,
            left: room - n,
        })
    }

    /// The whole dequeue of the thread the consumer side is biased to (see
    /// [`Ring::enq_biased`]); `None` when the bias was revoked meanwhile. When producers left
    /// abandoned ranges, the slow dequeue steps over them (and drops the bias).
    #[inline(always)]
    fn deq_biased(&self, out: &mut [T], fixed: bool, h: u64) -> Option<Outcome> {
        let (mine, other) = self.side(Which::Cons);
        let (busy, pos) = Self::begin_biased(mine, h)?;
        let want = out.len() as u32;
        let Some(room) = self.room_at::<true>(Which::Cons, mine, other, pos, want) else {
            // Abandoned producer ranges to step over: the slow way (it drops the bias).
            busy.store(0, Release);
            return Some(self.dequeue_slow(out, fixed, SyncMode::Mt));
        };
        let n = Self::decide(want, room, fixed);
        if n != 0 {
            self.mem
                .read::<WIDE_HELD>(&Claim::biased(pos, n, h), 0, &mut out[..n as usize]);
            mine.tail.store(pos.wrapping_add(n), Release);
        }
        busy.store(0, Release);
        Some(Outcome {
            n: n as usize,
            left: room - n,
        })
    }

    /// One element by value, on a consumer side biased to this thread (see
    /// [`Ring::deq_biased`]).
    #[inline(always)]
    fn deq_one_biased(&self, h: u64) -> Option<Option<T>> {
        let (mine, other) = self.side(Which::Cons);
        let (busy, pos) = Self::begin_biased(mine, h)?;
        let Some(room) = self.room_at::<true>(Which::Cons, mine, other, pos, 1) else {
            busy.store(0, Release);
            let mut v = T::new_zeroed();
            let got = self
                .dequeue_slow(std::slice::from_mut(&mut v), true, SyncMode::Mt)
                .n;
            return Some((got == 1).then_some(v));
        };
        let v = (room != 0).then(|| {
            let v = self.mem.read_one(&Claim::biased(pos, 1, h));
            mine.tail.store(pos.wrapping_add(1), Release);
            v
        });
        busy.store(0, Release);
        Some(v)
    }

    /// The end of a biased claim made out of line or in place: publish it with a release store of
    /// the tail, then lower the in-flight flag its start raised ([`Ring::begin_biased`]).
    #[inline(always)]
    fn end_biased(&self, w: Which, c: &Claim, busy: &AtomicU32) {
        self.side(w).0.tail.store(c.pos.wrapping_add(c.n), Release);
        busy.store(0, Release);
    }

    /// The start of every operation on a side biased to this thread (head word `h`): raise the
    /// generation's in-flight flag, then (the holder's half of the asymmetric Dekker pair with
    /// [`Ring::finish_revoke`]) check that the bias still stands. Returns the flag, to lower
    /// when done, and the side's position (its tail); `None`, flag lowered, when the bias was
    /// revoked meanwhile.
    #[inline(always)]
    fn begin_biased(mine: &Side, h: u64) -> Option<(&AtomicU32, u32)> {
        let busy = busy_flag(mine, bias_gen(h));
        busy.store(1, Relaxed);
        bias::light_fence();
        if mine.head.load(Relaxed) != h {
            busy.store(0, Release);
            return None;
        }
        Some((busy, mine.tail.load(Relaxed)))
    }

    /// Before an in-place claim on a side biased to this thread (head word `h`): panic if this
    /// thread holds one already (its in-flight flag is raised, and only the thread the side is
    /// biased to raises it; see [`nested_claim`]). The copying calls, which run no caller code
    /// while they hold a claim, do not pay for this check.
    #[cfg(not(hugeshare_loom))]
    #[inline(always)]
    fn no_claim_held(mine: &Side, h: u64) {
        if busy_flag(mine, bias_gen(h)).load(Relaxed) != 0 {
            nested_claim();
        }
    }

    /// The in-flight flag of a claim made the biased way (its `prev` is the biased head word).
    #[inline(always)]
    fn bias_flag(&self, w: Which, c: &Claim) -> Option<&AtomicU32> {
        (unpack(c.prev).2 == BIASED).then(|| busy_flag(self.side(w).0, bias_gen(c.prev)))
    }

    /// Side `w`'s head word now (a reservation starts from it).
    #[inline(always)]
    fn head_word(&self, w: Which) -> u64 {
        self.side(w).0.head.load(Acquire)
    }

    /// Whether head word `h` says its side is biased to this thread. One compare with the
    /// thread's biased word (whose length field is `BIASED`: no ordinary word matches). Testing
    /// for a special word first, so that an ordinary MT call would not read the thread's tag,
    /// cost the biased calls three instructions and saved the ordinary ones (which take a
    /// locked CAS next) two.
    #[inline(always)]
    fn is_own_bias(&self, h: u64) -> bool {
        h & !GEN_BITS == self.bias_word()
    }

    /// A reservation on side `w`, biased to this thread (head word `bw`): flag the operation in
    /// flight in its generation's word, check that the bias still stands (the holder's half of
    /// the asymmetric Dekker pair with [`Ring::finish_revoke`]), then reserve at the tail with
    /// plain loads. `None` when the bias was revoked meanwhile.
    #[inline(always)]
    fn reserve_biased(
        &self,
        w: Which,
        mine: &Side,
        other: &Side,
        want: u32,
        fixed: bool,
        bw: u64,
    ) -> Option<(Claim, u32)> {
        let (busy, pos) = Self::begin_biased(mine, bw)?;
        let Some(room) = self.room_at::<true>(w, mine, other, pos, want) else {
            busy.store(0, Release);
            return Some((Claim::NONE, HOLES));
        };
        let n = Self::decide(want, room, fixed);
        if n == 0 {
            busy.store(0, Release);
            return Some((Claim::NONE, room));
        }
        Some((Claim::biased(pos, n, bw), room))
    }

    /// Make side `w` an ordinary (unbiased) side: drop this thread's own bias, revoke another
    /// thread's, wait for a revocation another member is making, or turn a fresh side ordinary
    /// (unless `keep_fresh`: the MT call that revoked may then bias the side to itself).
    /// Returns once the head word is none of these.
    #[cold]
    #[inline(never)]
    fn unbias(&self, w: Which, keep_fresh: bool) {
        let (mine, _) = self.side(w);
        let mut spins = 0u32;
        loop {
            let h = mine.head.load(Acquire);
            let (p, _, n) = unpack(h);
            match n {
                BIASED if h & !GEN_BITS == self.bias_word() => {
                    // This thread's own bias, and no operation of it in flight (it is here).
                    mine.revokes.fetch_add(1, AcqRel);
                    let t = mine.tail.load(Relaxed);
                    let _ = mine
                        .head
                        .compare_exchange(h, pack(t, 0, 0), AcqRel, Acquire);
                }
                BIASED => {
                    self.revoke_from(w, h);
                }
                REVOKING if p as u16 != self.me && self.is_dead(p as u16) => {
                    // Its revoker died: finish the revocation in its place.
                    self.revoke_from(w, h);
                }
                REVOKING => self.wait_step(w, &mut spins, 0),
                FRESH if keep_fresh => return,
                FRESH => {
                    let _ = mine
                        .head
                        .compare_exchange(h, pack(p, 0, 0), AcqRel, Acquire);
                }
                _ => return,
            }
        }
    }

    /// Start (or take over) the revocation of the bias head word `h` names, and finish it.
    /// Returns false if the head word changed first.
    fn revoke_from(&self, w: Which, h: u64) -> bool {
        let (mine, _) = self.side(w);
        let (p, holder, n) = unpack(h);
        // A revoking word keeps the generation above the revoker's member.
        let gen = if n == BIASED { bias_gen(h) } else { p >> 16 };
        let rv = self.revoking_word(holder, gen);
        if mine.head.compare_exchange(h, rv, AcqRel, Acquire).is_err() {
            return false;
        }
        self.finish_revoke(w, rv, holder, gen);
        true
    }

    /// The head word of this member revoking `holder`'s bias of generation `gen`: the revoker
    /// in the low half of the position field, the generation above it.
    #[inline]
    fn revoking_word(&self, holder: u16, gen: u32) -> u64 {
        pack(self.me as u32 | gen << 16, holder, REVOKING)
    }

    /// The revoker's half of the Dekker pair: the head word says REVOKING (`rv`); the heavy
    /// fence makes sure the holder either sees that before its next operation or has its
    /// in-flight flag visible here; wait for the flag to drop (or the holder to die), then the
    /// side is ordinary again, at its tail (a dead holder's unpublished work is not seen: a
    /// producer's copies are overwritten, a consumer's elements stay for the next consumer).
    #[cold]
    fn finish_revoke(&self, w: Which, rv: u64, holder: u16, gen: u32) {
        let (mine, _) = self.side(w);
        let busy = busy_flag(mine, gen);
        let mut dead = self.is_dead(holder);
        if !dead {
            bias::heavy_fence();
        }
        let mut spins = 0u32;
        while !dead && busy.load(Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if sync::time_to_check(spins) {
                dead = self.is_dead(holder);
                sync::yield_now();
            } else {
                sync::spin();
            }
        }
        let ended = mine.revokes.fetch_add(1, AcqRel) + 1;
        let t = mine.tail.load(Acquire);
        // Fresh again, carrying the next bias's generation (see [`FRESH`]), or ordinary for good.
        let next = if ended < MAX_REVOKES {
            pack(t, ended as u16, FRESH)
        } else {
            pack(t, 0, 0)
        };
        let _ = mine.head.compare_exchange(rv, next, AcqRel, Acquire);
    }

    /// Stop side biasing on this ring for good, revoking any bias now held: for a ring that
    /// members outside the group's membarrier domain use (a VM guest), which could not revoke a
    /// host thread's bias. `ivshmem-meta` calls it (through [`disable_bias_of`]) for every ring
    /// zone it publishes to a VM. Idempotent.
    ///
    /// ```
    /// use rte_ring::{Ring, RingFlags};
    /// use shmconfig::LocalZones;
    /// let zones = LocalZones::new();
    /// let r = Ring::<u64>::create(&zones, "shared with a VM", 64, RingFlags::empty()).unwrap();
    /// r.enqueue(1).unwrap(); // may bias the producer side to this thread
    /// r.disable_bias();
    /// r.enqueue(2).unwrap();
    /// assert_eq!(r.info().producer_bias, None);
    /// ```
    pub fn disable_bias(&self) {
        for w in [Which::Prod, Which::Cons] {
            let (mine, _) = self.side(w);
            mine.revokes.fetch_max(MAX_REVOKES, AcqRel);
            self.unbias(w, false);
        }
    }

    pub(crate) fn is_dead(&self, m: u16) -> bool {
        let id = MemberId(m);
        id != MemberId::OUTSIDER && self.liveness.member_state(id) != MemberState::Alive
    }

    /// Abandon the reservations of dead members at this side's tail, one after the other.
    pub(crate) fn resolve(&self, w: Which) -> Resolved {
        let (mine, _) = self.side(w);
        let sh = self.mem.shared();
        let mut out = Resolved::default();
        loop {
            let t = mine.tail.load(Acquire);
            let hw = mine.head.load(Acquire);
            let (hp, hm, hn) = unpack(hw);
            if hn == BIASED || hn == REVOKING {
                // A revocation under way is its revoker's to finish, unless the revoker died;
                // a bias is revoked here only if its holder died (a live holder's ends when a
                // caller of another thread needs the side).
                let who = if hn == REVOKING { hp as u16 } else { hm };
                if !self.is_dead(who) {
                    // An idle bias is no work in flight.
                    if hn == REVOKING || busy_flag(mine, bias_gen(hw)).load(Acquire) != 0 {
                        out.busy = Some(MemberId(who));
                    }
                    return out;
                }
                if self.revoke_from(w, hw) && hn == BIASED {
                    out.released = Some(MemberId(hm));
                }
                continue;
            }
            if hn == HELD {
                if !self.is_dead(hm) {
                    out.busy = Some(MemberId(hm));
                    return out;
                }
                // The holder is dead, so its tail is final: everything before it was published,
                // and whatever it was copying when it died was never published (a producer's
                // elements are not seen; a consumer's stay in the ring for the next one).
                let t = mine.tail.load(Acquire);
                if mine
                    .head
                    .compare_exchange(hw, pack(t, 0, 0), AcqRel, Acquire)
                    .is_ok()
                {
                    out.released = Some(MemberId(hm));
                }
                continue;
            }
            if hp == t {
                return out;
            }
            // RTS: a reservation at the tail whose owner finished it left a mark; take it (and
            // any after it) rather than look for its owner.
            if self.mark_at(w, t).is_some() {
                self.take_marks(w, t);
                continue;
            }
            let Some((m, n)) = self.owner_at(w, t, (hp, hm, hn)) else {
                out.pending = true;
                return out;
            };
            if !self.is_dead(m) {
                out.busy = Some(MemberId(m));
                return out;
            }
            // The owner is dead, so if the tail is still `t` now, it will never publish.
            if mine.tail.load(Acquire) != t {
                continue;
            }
            let end = t.wrapping_add(n as u32);
            match w {
                Which::Prod => {
                    let Some(slot) = self.add_hole(t, n as u32) else {
                        out.pending = true;
                        return out;
                    };
                    if mine.tail.compare_exchange(t, end, AcqRel, Acquire).is_ok() {
                        sh.stats.abandoned_enq.fetch_add(n as u64, Relaxed);
                        out.abandoned += n as u64;
                    } else {
                        self.remove_hole(slot, t, n as u32);
                    }
                }
                Which::Cons => {
                    if mine.tail.compare_exchange(t, end, AcqRel, Acquire).is_ok() {
                        sh.stats.abandoned_deq.fetch_add(n as u64, Relaxed);
                        out.abandoned += n as u64;
                    }
                }
            }
        }
    }

    /// The completion mark for a reservation starting at `t` on side `w`, if its owner left
    /// one: (the mark's word, the reservation's length).
    #[inline]
    fn mark_at(&self, w: Which, t: u32) -> Option<(u64, u32)> {
        let v = self.mem.done_mark(w as usize, t).load(Acquire);
        let (mp, _, mn) = unpack(v);
        (v != 0 && mp == t && mn != 0).then_some((v, mn as u32))
    }

    /// Who made the reservation starting at `t` (not published, no completion mark), and its
    /// length: the head word names the last reservation, a record every earlier one (see the
    /// crate docs). `None` when the record is missing.
    fn owner_at(&self, w: Which, t: u32, head: (u32, u16, u16)) -> Option<(u16, u16)> {
        let (hp, hm, hn) = head;
        if hn != 0 && hp.wrapping_sub(hn as u32) == t {
            return Some((hm, hn));
        }
        let (rp, rm, rn) = unpack(self.mem.record(w as usize, t).load(Acquire));
        (rp == t && rn != 0).then_some((rm, rn))
    }

    /// Where member `m` has a reservation in flight on side `w` (or holds the side), found by
    /// walking the reservations from the tail to the head (each named by the head word or its
    /// record; a completion mark means finished). `None` when it has none, or when a record is
    /// missing (nothing can be told then). A snapshot: the side may have moved on meanwhile.
    pub(crate) fn reservation_of(&self, w: Which, m: MemberId) -> Option<u32> {
        let (mine, _) = self.side(w);
        let (hp, hm, hn) = unpack(mine.head.load(Acquire));
        if hn == HELD {
            return (hm == m.0).then_some(hp);
        }
        if hn == BIASED || hn == REVOKING {
            return (hm == m.0).then(|| mine.tail.load(Acquire));
        }
        let mut t = mine.tail.load(Acquire);
        for _ in 0..self.mem.size() {
            if t == hp {
                return None;
            }
            if let Some((_, n)) = self.mark_at(w, t) {
                t = t.wrapping_add(n);
                continue;
            }
            let (om, n) = self.owner_at(w, t, (hp, hm, hn))?;
            if om == m.0 {
                return Some(t);
            }
            t = t.wrapping_add(n as u32);
        }
        None
    }

    fn add_hole(&self, start: u32, n: u32) -> Option<usize> {
        let sh = self.mem.shared();
        let v = start as u64 | (n as u64) << 32;
        for (i, e) in sh.holes.iter().enumerate() {
            if e.load(Relaxed) == 0 && e.compare_exchange(0, v, AcqRel, Relaxed).is_ok() {
                sh.prod.holes.fetch_add(1, AcqRel);
                return Some(i);
            }
        }
        None
    }

    fn remove_hole(&self, slot: usize, start: u32, n: u32) {
        let sh = self.mem.shared();
        let v = start as u64 | (n as u64) << 32;
        if sh.holes[slot]
            .compare_exchange(v, 0, AcqRel, Relaxed)
            .is_ok()
        {
            sh.prod.holes.fetch_sub(1, AcqRel);
        }
    }

    /// The dequeue when producers left abandoned ranges: claim a span that steps over them and
    /// copy out only the published elements.
    #[cold]
    #[inline(never)]
    fn dequeue_slow(&self, out: &mut [T], fixed: bool, sync: SyncMode) -> Outcome {
        let (mine, other) = self.side(Which::Cons);
        let want = out.len() as u32;
        let mut spins = 0u32;
        let mut h = mine.head.load(Acquire);
        loop {
            let (pos, pm, pn) = unpack(h);
            if pn >= FRESH {
                if pn == HELD {
                    self.wait_step(Which::Cons, &mut spins, 0);
                } else {
                    self.unbias(Which::Cons, false);
                }
                h = mine.head.load(Acquire);
                continue;
            }
            if sync == SyncMode::Hts || sync == SyncMode::Rts {
                let limit = if sync == SyncMode::Hts {
                    0
                } else {
                    self.htd_max
                };
                if pos.wrapping_sub(mine.tail.load(Acquire)) > limit {
                    self.wait_step(Which::Cons, &mut spins, 0);
                    h = mine.head.load(Acquire);
                    continue;
                }
            }
            let tail = other.tail.load(Acquire);
            let plan = self.plan(pos, tail, want, fixed);
            let room = self.room(Which::Cons, pos, tail);
            if plan.span == 0 {
                return Outcome { n: 0, left: room };
            }
            let new = pack(pos.wrapping_add(plan.span), self.me, plan.span as u16);
            self.record_pred(Which::Cons, mine, pos, pm, pn);
            let claim = match self.mem.claim_cas(&mine.head, h, new) {
                Ok(c) => c,
                Err(x) => {
                    h = x;
                    continue;
                }
            };
            let got = self.copy_planned(&claim, &plan, out);
            self.publish::<true>(Which::Cons, &claim, sync);
            self.retire_holes(claim.pos.wrapping_add(claim.n));
            return Outcome {
                n: got,
                left: room.saturating_sub(plan.span),
            };
        }
    }

    /// Copy the published parts of a span planned by [`Ring::plan`] out of `claim`.
    pub(crate) fn copy_planned(&self, claim: &Claim, plan: &Plan, out: &mut [T]) -> usize {
        let mut got = 0usize;
        for &(rel, len) in &plan.segs[..plan.nsegs] {
            self.mem
                .read::<WIDE_SHARED>(claim, rel, &mut out[got..got + len as usize]);
            got += len as usize;
        }
        got
    }

    /// Which positions of `[pos, tail)` to take for `want` elements, stepping over holes.
    pub(crate) fn plan(&self, pos: u32, tail: u32, want: u32, fixed: bool) -> Plan {
        let sh = self.mem.shared();
        let avail = self.room(Which::Cons, pos, tail);
        let mut holes = [(0u32, 0u32); NHOLES];
        let mut nh = 0;
        for e in &sh.holes {
            let v = e.load(Acquire);
            if v == 0 {
                continue;
            }
            let (hs, hn) = (v as u32, (v >> 32) as u32);
            let rel = hs.wrapping_sub(pos);
            if rel < avail && !holes[..nh].iter().any(|x| x.0 == rel) {
                // A range ends before the producer tail (it is entered before the tail moves
                // over it); a longer one was written by a peer: cut it there, so that no span
                // runs past what is published.
                holes[nh] = (rel, hn.min(avail - rel));
                nh += 1;
            }
        }
        holes[..nh].sort_unstable();
        // The span is recorded in the head word's 16-bit length: keep it within MAX_OP.
        let limit = MAX_OP as u32;
        let mut p = Plan::default();
        let mut cur = 0u32;
        let mut got = 0u32;
        for &(rel, hn) in &holes[..nh] {
            // Ranges never overlap (`rel < cur`), unless a peer wrote them: stop there.
            if got == want || cur == limit || rel < cur {
                break;
            }
            let take = (rel - cur).min(want - got).min(limit - cur);
            if take > 0 {
                p.segs[p.nsegs] = (cur, take);
                p.nsegs += 1;
                got += take;
                cur += take;
            }
            if got == want || cur != rel || rel + hn > limit {
                break;
            }
            cur = rel + hn;
        }
        if got < want && p.nsegs < p.segs.len() {
            let take = (avail.saturating_sub(cur)).min(want - got).min(limit - cur);
            if take > 0
                && holes[..nh]
                    .iter()
                    .all(|&(rel, _)| rel < cur || rel >= cur + take)
            {
                p.segs[p.nsegs] = (cur, take);
                p.nsegs += 1;
                got += take;
                cur += take;
            }
        }
        if fixed && got < want {
            // Not enough for the bulk: only step over the abandoned ranges at the front.
            p = Plan::default();
            let mut front = 0u32;
            for &(rel, hn) in &holes[..nh] {
                if rel == front && front + hn <= limit {
                    front += hn;
                }
            }
            p.span = front;
            return p;
        }
        p.span = cur;
        p
    }

    /// Free the abandoned-range entries consumers have stepped over (all before `head`).
    pub(crate) fn retire_holes(&self, head: u32) {
        let sh = self.mem.shared();
        for e in &sh.holes {
            let v = e.load(Acquire);
            if v == 0 {
                continue;
            }
            let end = (v as u32).wrapping_add((v >> 32) as u32);
            if (head.wrapping_sub(end) as i32) >= 0
                && e.compare_exchange(v, 0, AcqRel, Relaxed).is_ok()
            {
                sh.prod.holes.fetch_sub(1, AcqRel);
            }
        }
    }

    /// Reserve `n` slots as producer (`Which::Prod`) or consumer and never finish: what a member
    /// killed between its reservation and its publication leaves behind. For tests of the
    /// recovery paths in one process; returns the number reserved.
    #[doc(hidden)]
    pub fn test_reserve_and_vanish(&self, consumer: bool, n: u32) -> u32 {
        let w = if consumer { Which::Cons } else { Which::Prod };
        let sync = if consumer {
            self.cons_sync
        } else {
            self.prod_sync
        };
        let sync = if sync == SyncMode::St {
            SyncMode::Mt
        } else {
            sync
        };
        let (c, _) = self.reserve::<false, true>(w, n, true, sync, self.head_word(w));
        c.n
    }

    /// Start revoking the bias of the producer side (or the consumer side) and never finish:
    /// what a member killed in the middle of a revocation leaves behind. Returns whether the
    /// side was biased to another thread (and is now being revoked by this member).
    #[doc(hidden)]
    pub fn test_start_revoke_and_vanish(&self, consumer: bool) -> bool {
        let w = if consumer { Which::Cons } else { Which::Prod };
        let h = self.head_word(w);
        let (_, holder, n) = unpack(h);
        if n != BIASED || h & !GEN_BITS == self.bias_word() {
            return false;
        }
        let rv = self.revoking_word(holder, bias_gen(h));
        self.side(w)
            .0
            .head
            .compare_exchange(h, rv, AcqRel, Acquire)
            .is_ok()
    }

    /// Like [`Ring::test_reserve_and_vanish`], through the call that biases an idle side to the
    /// calling thread (so the unfinished reservation is a biased one when the side was idle and
    /// biasable). Returns the number reserved and whether the reservation was biased.
    #[doc(hidden)]
    pub fn test_reserve_and_vanish_biased(&self, consumer: bool, n: u32) -> (u32, bool) {
        let w = if consumer { Which::Cons } else { Which::Prod };
        let (c, _) = self.reserve_mt(w, n, true, SyncMode::Mt);
        (c.n, c.n != 0 && self.bias_flag(w, &c).is_some())
    }
}

/// The bias generation of a biased head word `h` (the top bits of its position field).
#[inline(always)]
fn bias_gen(h: u64) -> u32 {
    (h as u32) >> bias::TAG_BITS
}

/// The in-flight flag of bias generation `gen` on side `mine` (see the crate docs, "Biased
/// sides").
#[inline(always)]
fn busy_flag(mine: &Side, gen: u32) -> &AtomicU32 {
    &mine.busy[gen as usize % MAX_REVOKES as usize]
}

/// A second in-place claim on a side biased to this thread, made from inside the closure of
/// an in-place call on that side ([`Ring::enqueue_bulk_in_place`],
/// [`Ring::dequeue_bulk_in_place`]): it would start at the same tail and cover the first
/// claim's slots (for producers, two `&mut` views of them), so it panics. See "In-place
/// claims" in the crate docs for the rule.
#[cfg(not(hugeshare_loom))]
#[cold]
#[inline(never)]
fn nested_claim() -> ! {
    panic!(
        "an in-place call on one side of a ring from inside the closure of another on the same \
         side: finish the first (return from its closure) before the next"
    )
}

/// Abandons an in-place claim if the closure given it unwinds (see [`Ring::abandon_own`]).
#[cfg(not(hugeshare_loom))]
struct Unwinding<'a, T: RingElement> {
    ring: &'a Ring<T>,
    // A copy, handed on by value to the out-of-line abandon (which takes it by reference):
    // measured 2 instructions fewer per mempool no-cache get + put than a reference, which
    // made the guard's claim an address-taken value. (When the claim still had a `bool`, a
    // copy stored it as a byte and read it back as part of a wider word, a store-forwarding
    // stall.)
    claim: Claim,
    sync: SyncMode,
    w: Which,
}

#[cfg(not(hugeshare_loom))]
impl<T: RingElement> Drop for Unwinding<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.ring.abandon_claim(self.w, self.claim, self.sync);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Resolved {
    abandoned: u64,
    released: Option<MemberId>,
    busy: Option<MemberId>,
    pending: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) span: u32,
    segs: [(u32, u32); NHOLES + 1],
    nsegs: usize,
}

#[cfg(all(test, not(hugeshare_loom), not(miri)))]
mod tests {
    use super::*;
    use shmconfig::LocalZones;

    /// A side whose bias is revoked before its holder moved it is fresh again at the same
    /// position, but its fresh word is not the one a thread may have read before the
    /// revocation: that thread's bias attempt fails instead of taking the bias under a
    /// generation whose in-flight word the revoked holder may still write (a stale `busy`
    /// store of the old holder would then hide the new holder's operation from its revoker).
    /// Fails with a fresh word that carries no generation.
    #[test]
    fn a_fresh_word_read_before_a_revocation_never_matches_after_it() {
        let zones = LocalZones::new();
        let r = Ring::<u64>::create(&zones, "aba", 16, RingFlags::empty()).unwrap();
        let before = r.head_word(Which::Cons);
        assert_eq!(
            unpack(before).2,
            FRESH,
            "a new ring's consumer side starts fresh"
        );
        // Another thread takes the bias on the empty ring (the side does not move)...
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(r.dequeue(), None));
        });
        if r.info().consumer_bias.is_none() {
            eprintln!("no membarrier here: sides are never biased; nothing to check");
            return;
        }
        // ...and loses it: fresh again at position 0, one bias ended.
        assert!(r.revoke_from(Which::Cons, r.head_word(Which::Cons)));
        let after = r.head_word(Which::Cons);
        assert_eq!(unpack(after), (0, 1, FRESH));
        assert_ne!(after, before);
        // A thread that read the side's word before the revocation cannot bias it now.
        std::thread::scope(|s| {
            s.spawn(|| {
                let got = r.leave_fresh::<true, true>(Which::Cons, before, 1, false, SyncMode::Mt);
                assert!(got.is_none(), "a stale fresh word took the bias");
            });
        });
        assert_eq!(r.head_word(Which::Cons), after);
        // One that reads it now takes generation 1.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(r.dequeue(), None));
        });
        let h = r.head_word(Which::Cons);
        assert_eq!((unpack(h).2, bias_gen(h)), (BIASED, 1));
    }
}
