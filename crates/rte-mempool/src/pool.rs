//! [`Mempool`], [`LocalPool`] and [`Obj`]: creation, lookup, get/put, transfers, recovery, audit.

use std::fmt;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use rte_ring::{Dequeue, Enqueue, Ring, RingError, RingFlags};
use shmconfig::{Liveness, MemberId, MemberState, Zone, ZoneError, ZoneKind, ZoneRequest, Zones};

use crate::cache::{self, Got};
use crate::error::MempoolError;
use crate::layout::{
    fingerprint, holder, kind_of, locked, member_of, word, CacheSlot, Meta, CACHE_OBJS, FREE,
    KIND_HELD, KIND_TRANSIT, MAGIC, VERSION,
};
use crate::obj::{Conv, Obj};
use crate::raw::{self, PoolMem};

/// Largest cache size (DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`); larger sizes are refused.
pub const CACHE_MAX_SIZE: u32 = 512;
/// Longest pool name in bytes (DPDK's `RTE_MEMPOOL_NAMESIZE - 1`).
pub const MEMPOOL_NAME_MAX: usize = 25;
/// Most objects in one pool.
pub const MEMPOOL_COUNT_MAX: u32 = 1 << 30;

bitflags::bitflags! {
    /// Creation flags. The DPDK ones keep DPDK's values; any other bit is refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MempoolFlags: u32 {
        /// Accepted for DPDK compatibility; objects are not spread over memory channels here.
        const NO_SPREAD = 0x1;
        /// Objects are not padded to a cache line (the stride is rounded to 8 bytes only).
        const NO_CACHE_ALIGN = 0x2;
        /// Puts to the free ring are single-producer: the members promise that one put to the
        /// ring runs at a time (cache flushes included).
        const SP_PUT = 0x4;
        /// Gets from the free ring are single-consumer (see [`MempoolFlags::SP_PUT`]).
        const SC_GET = 0x8;
        /// Accepted for DPDK compatibility (memory is never IOVA-contiguous here anyway).
        const NO_IOVA_CONTIG = 0x20;
        /// Object tracking: an owner word per object records who holds it, so that objects a
        /// dead member held are returned, and [`Mempool::audit`] can account for every object.
        const TRACK = 0x1000;
    }
}

/// What a pool is made of: object count and size, cache size, private area, flags.
///
/// ```
/// use rte_mempool::{MempoolFlags, MempoolParams};
/// let p = MempoolParams::new(4095, 2048).cache_size(256).priv_size(64).flags(MempoolFlags::TRACK);
/// assert_eq!(p.n, 4095);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolParams {
    /// Number of objects (1..=[`MEMPOOL_COUNT_MAX`]).
    pub n: u32,
    /// Size of an object in bytes.
    pub elt_size: u32,
    /// Objects each per-lcore cache keeps (0..=[`CACHE_MAX_SIZE`], and 1.5 × it ≤ `n`).
    pub cache_size: u32,
    /// Bytes of private area per object, after the object ([`Mempool::private_ptr`]).
    pub priv_size: u32,
    /// Creation flags.
    pub flags: MempoolFlags,
}

impl MempoolParams {
    /// `n` objects of `elt_size` bytes, no cache, no private area, default flags.
    pub fn new(n: u32, elt_size: u32) -> Self {
        Self {
            n,
            elt_size,
            cache_size: 0,
            priv_size: 0,
            flags: MempoolFlags::empty(),
        }
    }
    /// With per-lcore caches of `cache_size` objects.
    pub fn cache_size(mut self, cache_size: u32) -> Self {
        self.cache_size = cache_size;
        self
    }
    /// With a private area of `priv_size` bytes per object.
    pub fn priv_size(mut self, priv_size: u32) -> Self {
        self.priv_size = priv_size;
        self
    }
    /// With `flags`.
    pub fn flags(mut self, flags: MempoolFlags) -> Self {
        self.flags = flags;
        self
    }
}

struct Inner {
    name: String,
    mem: PoolMem,
    ring: Ring<u32>,
    n: u32,
    elt_size: u32,
    priv_size: u32,
    stride: usize,
    cache_size: u32,
    flushthresh: u32,
    flags: MempoolFlags,
    tracked: bool,
    conv: Conv,
    /// stride >> conv.shift (odd): handle = index × stride_units.
    stride_units: u32,
    /// The inverse of stride_units modulo 2^32: index = handle × inv.
    inv: u32,
    obj_base: usize,
    obj_end: usize,
    me: u16,
    token: u32,
    liveness: Arc<dyn Liveness>,
}

/// A pool of fixed-size objects in shared memory, found by name: a handle, cheap to clone,
/// `Send + Sync`.
///
/// Its own `get`/`put` calls go straight to the ring of free objects (what DPDK does for a
/// thread without an lcore); [`Mempool::local`] gives the calling thread a [`LocalPool`] that
/// goes through its lcore's cache.
///
/// ```
/// use rte_mempool::{Mempool, MempoolParams};
/// use shmconfig::LocalZones;
/// let zones = LocalZones::new();
/// let mp = Mempool::create(&zones, "pkts", MempoolParams::new(1023, 2048).cache_size(32)).unwrap();
/// let mut objs = [rte_mempool::Obj::empty(); 4];
/// assert_eq!(mp.get_bulk(&mut objs), 4);
/// assert_eq!(mp.avail_count(), 1019);
/// mp.put_bulk(&objs);
/// assert!(mp.is_full());
/// let same = Mempool::lookup(&zones, "pkts").unwrap();
/// assert_eq!(same.size(), 1023);
/// ```
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Mempool")
            .field("name", &i.name)
            .field("n", &i.n)
            .field("elt_size", &i.elt_size)
            .field("cache_size", &i.cache_size)
            .field("flags", &i.flags)
            .field("member", &i.me)
            .finish()
    }
}

/// The cache slots a [`LocalPool`] of this process uses now (by address): one user at a time.
static CLAIMED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The pools mapped in this process, for [`Mempool::from_ptr`].
static REGISTRY: Mutex<Vec<(usize, usize, Weak<Inner>)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn register_hook() {
    HOOK.call_once(|| shmconfig::hooks::register_for(ZoneKind::Mempool, cleanup_hook));
}

/// The group's clean-up hook: flush the caches of, and (tracked pools) reclaim the objects held
/// by, every member that is not alive, in every pool of the group.
fn cleanup_hook(zones: &dyn Zones, dead: MemberId) -> Option<String> {
    shmconfig::hooks::recover_each(zones, dead, ZoneKind::Mempool, "MP_", |_, name| {
        let r = Mempool::open(&zones, name, false)
            .ok()?
            .recover_dead_members();
        r.did_something().then(|| format!("mempool {name}: {r}"))
    })
}

fn zone_err(name: &str, zone: &str, source: ZoneError) -> MempoolError {
    MempoolError::Zone {
        name: name.into(),
        zone: zone.into(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), MempoolError> {
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MEMPOOL_NAME_MAX {
        format!("it is longer than {MEMPOOL_NAME_MAX} bytes")
    } else if name.contains('\0') {
        "it contains a NUL byte".to_string()
    } else {
        return Ok(());
    };
    Err(MempoolError::BadName {
        name: name.into(),
        why,
    })
}

fn stride_of(p: &MempoolParams) -> usize {
    let s = (p.elt_size as usize + p.priv_size as usize)
        .next_multiple_of(8)
        .max(8);
    if p.flags.contains(MempoolFlags::NO_CACHE_ALIGN) {
        s
    } else {
        s.next_multiple_of(64)
    }
}

fn owners_len(n: u32, tracked: bool) -> usize {
    if tracked {
        (n as usize * 8).next_multiple_of(64)
    } else {
        0
    }
}

/// Where a pool's objects go, as [`Mempool::create`] lays them out (and [`Mempool::lookup`]
/// expects them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Bytes from one object to the next.
    stride: usize,
    /// Where the first object starts in the object zone (after the owner words).
    objects_offset: usize,
    /// Bytes of the object zone.
    obj_len: usize,
}

/// The layout of a pool of `p` (whose `n` and flags are valid), or `None` if its objects do not
/// fit: one zone below 1 TiB, a stride that fits in 32 bits, and every handle (`n` times the
/// stride's odd part) in 32 bits.
fn layout_of(p: &MempoolParams) -> Option<Layout> {
    let stride = stride_of(p);
    let objects_offset = owners_len(p.n, p.flags.contains(MempoolFlags::TRACK));
    let obj_len = (p.n as usize)
        .checked_mul(stride)?
        .checked_add(objects_offset)?;
    let units = (stride >> stride.trailing_zeros()) as u64;
    (obj_len < 1 << 40 && stride <= u32::MAX as usize && p.n as u64 * units <= u32::MAX as u64)
        .then_some(Layout {
            stride,
            objects_offset,
            obj_len,
        })
}

impl Mempool {
    /// The zone of a pool's header (`MP_<name>`, as in DPDK).
    pub fn zone_name(name: &str) -> String {
        format!("MP_{name}")
    }
    /// The zone of a pool's objects (`MP_<name>_0`).
    pub fn objects_zone_name(name: &str) -> String {
        format!("MP_{name}_0")
    }
    /// The name of a pool's ring of free objects (`MP_<name>`; its zone is `RG_MP_<name>`).
    pub fn ring_name(name: &str) -> String {
        format!("MP_{name}")
    }

    /// Create a pool named `name`: reserve its zones, create its ring of free objects and put
    /// every object in it. Fails on a bad name, count, cache size (above [`CACHE_MAX_SIZE`], or
    /// 1.5 × it above `n`) or flag bits, or when the name is taken ([`MempoolError::Exists`]).
    pub fn create(
        zones: &impl Zones,
        name: &str,
        params: MempoolParams,
    ) -> Result<Mempool, MempoolError> {
        register_hook();
        check_name(name)?;
        let p = params;
        if p.n == 0 || p.n > MEMPOOL_COUNT_MAX {
            return Err(MempoolError::BadCount {
                name: name.into(),
                n: p.n,
            });
        }
        if p.cache_size > CACHE_MAX_SIZE || p.cache_size as u64 * 3 / 2 > p.n as u64 {
            return Err(MempoolError::BadCacheSize {
                name: name.into(),
                cache_size: p.cache_size,
                n: p.n,
            });
        }
        if MempoolFlags::from_bits(p.flags.bits()).is_none() {
            return Err(MempoolError::BadFlags {
                name: name.into(),
                bits: p.flags.bits(),
                valid: MempoolFlags::all().bits(),
            });
        }
        let Layout {
            stride,
            objects_offset,
            obj_len,
        } = layout_of(&p).ok_or(MempoolError::TooLarge {
            name: name.into(),
            n: p.n,
            stride: stride_of(&p),
        })?;
        let ncaches = if p.cache_size > 0 {
            shmconfig::layout::MAX_LCORES
        } else {
            0
        };
        let hname = Self::zone_name(name);
        let oname = Self::objects_zone_name(name);
        let header = zones
            .reserve(&ZoneRequest::new(
                &hname,
                raw::header_len(ncaches),
                ZoneKind::Mempool,
            ))
            .map_err(|e| match e {
                ZoneError::Exists(_) => MempoolError::Exists(name.into()),
                e => zone_err(name, &hname, e),
            })?;
        let objects =
            match zones.reserve(&ZoneRequest::new(&oname, obj_len, ZoneKind::MempoolObjects)) {
                Ok(z) => z,
                Err(e) => {
                    let _ = zones.free(&hname);
                    return Err(match e {
                        ZoneError::Exists(_) => MempoolError::Exists(name.into()),
                        e => zone_err(name, &oname, e),
                    });
                }
            };
        let mut rflags = RingFlags::EXACT_SZ;
        if p.flags.contains(MempoolFlags::SP_PUT) {
            rflags |= RingFlags::SP_ENQ;
        }
        if p.flags.contains(MempoolFlags::SC_GET) {
            rflags |= RingFlags::SC_DEQ;
        }
        let ring = match Ring::<u32>::create(zones, &Self::ring_name(name), p.n, rflags) {
            Ok(r) => r,
            Err(e) => {
                let _ = zones.free(&oname);
                let _ = zones.free(&hname);
                return Err(match e {
                    RingError::Exists(_) => MempoolError::Exists(name.into()),
                    source => MempoolError::Ring {
                        name: name.into(),
                        source,
                    },
                });
            }
        };
        let mut name_bytes = [0u8; 32];
        name_bytes[..name.len()].copy_from_slice(name.as_bytes());
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            header_len: raw::header_len(ncaches) as u32,
            fingerprint: fingerprint(),
            n: p.n,
            elt_size: p.elt_size,
            priv_size: p.priv_size,
            stride: stride as u32,
            cache_size: p.cache_size,
            flags: p.flags.bits(),
            objects_offset: objects_offset as u64,
            name_len: name.len() as u32,
            _pad: 0,
            name: name_bytes,
            _reserved: [0; 160],
        };
        raw::write_meta(&header, &meta);
        let mp = match Self::from_parts(zones, name, &meta, header, objects, ring) {
            Ok(mp) => mp,
            Err(e) => {
                let _ = zones.free(&Ring::<u32>::zone_name(&Self::ring_name(name)));
                let _ = zones.free(&oname);
                let _ = zones.free(&hname);
                return Err(e);
            }
        };
        // Populate: every object starts free, in the ring.
        let mut buf = Vec::with_capacity(4096);
        let mut i = 0u32;
        while i < p.n {
            buf.clear();
            let end = (i as u64 + 4096).min(p.n as u64) as u32;
            buf.extend((i..end).map(|x| mp.inner.handle_of_index(x)));
            let done = mp.inner.ring.enqueue_bulk(&buf);
            assert_eq!(
                done,
                buf.len(),
                "a new ring sized for the pool takes every object"
            );
            i = end;
        }
        mp.inner.mem.counters().ready.store(1, Release);
        Ok(mp)
    }

    /// Find the pool named `name`, check its header, and finish any clean-up of dead members
    /// that is still due (see [`Mempool::recover_dead_members`]).
    ///
    /// The header is shared memory that a peer or a guest may have written: every field is
    /// checked against what [`Mempool::create`] writes (object count, sizes and stride, cache
    /// size, flags, name, where the objects start, the zones' lengths and alignment, the free
    /// ring's capacity), and a pool that differs is refused with [`MempoolError::BadHeader`].
    pub fn lookup(zones: &impl Zones, name: &str) -> Result<Mempool, MempoolError> {
        let mp = Self::open(zones, name, true)?;
        mp.recover_dead_members();
        Ok(mp)
    }

    fn open(zones: &impl Zones, name: &str, wait: bool) -> Result<Mempool, MempoolError> {
        register_hook();
        check_name(name)?;
        let hname = Self::zone_name(name);
        let header = zones
            .lookup_kind(&hname, ZoneKind::Mempool)
            .map_err(|e| match e {
                ZoneError::NotFound(_) => MempoolError::NotFound(name.into()),
                e => zone_err(name, &hname, e),
            })?;
        let bad = |field: &'static str, found: String, expected: String| MempoolError::BadHeader {
            name: name.into(),
            zone: hname.clone(),
            field,
            found,
            expected,
        };
        let ready = raw::ready_word(&header).ok_or_else(|| {
            bad(
                "zone length/alignment",
                format!("{} bytes at {:p}", header.len(), header.as_ptr()),
                "at least 512 bytes, 64-aligned".into(),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(if wait { 2 } else { 0 });
        while ready.load(Acquire) == 0 {
            if Instant::now() >= deadline {
                return Err(MempoolError::NotReady(name.into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let meta = raw::read_meta(&header).expect("length checked by ready_word");
        // Every field is checked against what `create` writes: the header is shared memory,
        // which a peer or a guest may have overwritten, and its values size every access.
        if meta.magic != MAGIC {
            return Err(bad(
                "magic",
                format!("{:#x}", meta.magic),
                format!("{MAGIC:#x}"),
            ));
        }
        if meta.version != VERSION {
            return Err(bad(
                "version",
                meta.version.to_string(),
                VERSION.to_string(),
            ));
        }
        if meta.fingerprint != fingerprint() {
            return Err(bad(
                "layout fingerprint",
                format!("{:#x}", meta.fingerprint),
                format!("{:#x}", fingerprint()),
            ));
        }
        let stored_name = meta
            .name
            .get(..meta.name_len as usize)
            .map(String::from_utf8_lossy);
        if stored_name.as_deref() != Some(name) {
            return Err(bad(
                "name",
                stored_name.map_or_else(
                    || format!("{} bytes long", meta.name_len),
                    |s| format!("{s:?}"),
                ),
                format!("{name:?}"),
            ));
        }
        if meta.n == 0 || meta.n > MEMPOOL_COUNT_MAX {
            return Err(bad(
                "object count n",
                meta.n.to_string(),
                format!("1..={MEMPOOL_COUNT_MAX}"),
            ));
        }
        let flags = MempoolFlags::from_bits(meta.flags).ok_or_else(|| {
            bad(
                "flags",
                format!("{:#x}", meta.flags),
                format!("bits of {:#x} only", MempoolFlags::all().bits()),
            )
        })?;
        if meta.cache_size > CACHE_MAX_SIZE || meta.cache_size as u64 * 3 / 2 > meta.n as u64 {
            return Err(bad(
                "cache size",
                meta.cache_size.to_string(),
                format!(
                    "0..={CACHE_MAX_SIZE} with 1.5 × cache size ≤ n ({})",
                    meta.n
                ),
            ));
        }
        let params = MempoolParams {
            n: meta.n,
            elt_size: meta.elt_size,
            cache_size: meta.cache_size,
            priv_size: meta.priv_size,
            flags,
        };
        let layout = layout_of(&params).ok_or_else(|| {
            bad(
                "elt_size/priv_size",
                format!("{}/{}", meta.elt_size, meta.priv_size),
                format!(
                    "sizes create accepts for {} objects (a stride below 4 GiB, all below 1 TiB)",
                    meta.n
                ),
            )
        })?;
        if meta.stride as usize != layout.stride {
            return Err(bad(
                "stride",
                meta.stride.to_string(),
                format!(
                    "{} (for elt_size {}, priv_size {}, flags {flags:?})",
                    layout.stride, meta.elt_size, meta.priv_size
                ),
            ));
        }
        if meta.objects_offset != layout.objects_offset as u64 {
            return Err(bad(
                "objects offset",
                meta.objects_offset.to_string(),
                format!(
                    "{} (for n {}, flags {flags:?})",
                    layout.objects_offset, meta.n
                ),
            ));
        }
        let ncaches = if meta.cache_size > 0 {
            shmconfig::layout::MAX_LCORES
        } else {
            0
        };
        if meta.header_len as usize != raw::header_len(ncaches) {
            return Err(bad(
                "header length",
                meta.header_len.to_string(),
                raw::header_len(ncaches).to_string(),
            ));
        }
        if header.len() < raw::header_len(ncaches) {
            return Err(bad(
                "zone length",
                header.len().to_string(),
                raw::header_len(ncaches).to_string(),
            ));
        }
        let oname = Self::objects_zone_name(name);
        let objects = zones
            .lookup_kind(&oname, ZoneKind::MempoolObjects)
            .map_err(|e| zone_err(name, &oname, e))?;
        let bad_obj =
            |field: &'static str, found: String, expected: String| MempoolError::BadHeader {
                name: name.into(),
                zone: oname.clone(),
                field,
                found,
                expected,
            };
        if objects.len() < layout.obj_len {
            return Err(bad_obj(
                "zone length",
                objects.len().to_string(),
                format!("at least {}", layout.obj_len),
            ));
        }
        if objects.as_ptr() as usize % 64 != 0 {
            return Err(bad_obj(
                "zone alignment",
                format!("{:p}", objects.as_ptr()),
                "a multiple of 64".into(),
            ));
        }
        let ring = Ring::<u32>::lookup(zones, &Self::ring_name(name)).map_err(|source| {
            MempoolError::Ring {
                name: name.into(),
                source,
            }
        })?;
        if ring.capacity() != meta.n {
            return Err(MempoolError::BadHeader {
                name: name.into(),
                zone: Ring::<u32>::zone_name(&Self::ring_name(name)),
                field: "ring capacity",
                found: ring.capacity().to_string(),
                expected: format!("{} (the pool's object count)", meta.n),
            });
        }
        Self::from_parts(zones, name, &meta, header, objects, ring)
    }

    /// A handle on a pool whose header `meta` was written by `create` or checked by `open`.
    fn from_parts(
        zones: &impl Zones,
        name: &str,
        meta: &Meta,
        header: Zone,
        objects: Zone,
        ring: Ring<u32>,
    ) -> Result<Mempool, MempoolError> {
        let flags = MempoolFlags::from_bits_truncate(meta.flags);
        let tracked = flags.contains(MempoolFlags::TRACK);
        let ncaches = if meta.cache_size > 0 {
            shmconfig::layout::MAX_LCORES
        } else {
            0
        };
        let bad_zone = |zone: &Zone| MempoolError::BadHeader {
            name: name.into(),
            zone: zone.name().into(),
            field: "zone length/alignment",
            found: format!("{} bytes at {:p}", zone.len(), zone.as_ptr()),
            expected: "room for the pool, 64-aligned".into(),
        };
        let obj_base = raw::exposed_addr(&objects, meta.objects_offset as usize)
            .ok_or_else(|| bad_zone(&objects))?;
        let obj_end = obj_base + meta.n as usize * meta.stride as usize;
        let shift = meta.stride.trailing_zeros();
        let stride_units = meta.stride >> shift;
        // Newton's iteration for the inverse of an odd number modulo 2^32.
        let mut inv = stride_units;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(stride_units.wrapping_mul(inv)));
        }
        debug_assert_eq!(stride_units.wrapping_mul(inv), 1);
        let mem = match PoolMem::new(
            header.clone(),
            objects.clone(),
            ncaches,
            meta.n as usize,
            tracked,
        ) {
            Some(mem) => mem,
            None if header.len() < raw::header_len(ncaches)
                || header.as_ptr() as usize % 64 != 0 =>
            {
                return Err(bad_zone(&header))
            }
            None => return Err(bad_zone(&objects)),
        };
        let inner = Arc::new(Inner {
            name: name.into(),
            mem,
            ring,
            n: meta.n,
            elt_size: meta.elt_size,
            priv_size: meta.priv_size,
            stride: meta.stride as usize,
            cache_size: meta.cache_size,
            flushthresh: meta.cache_size * 3 / 2,
            flags,
            tracked,
            conv: Conv {
                base: obj_base,
                shift,
                max_off: (meta.n as usize - 1) * meta.stride as usize,
            },
            stride_units,
            inv,
            obj_base,
            obj_end,
            me: zones.member().0,
            token: std::process::id(),
            liveness: zones.liveness(),
        });
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|(_, _, w)| w.strong_count() > 0);
        reg.push((obj_base, obj_end, Arc::downgrade(&inner)));
        Ok(Mempool { inner })
    }

    /// The names of the pools of the group, in creation order (DPDK's `rte_mempool_walk`).
    pub fn list(zones: &impl Zones) -> Vec<String> {
        zones
            .list()
            .into_iter()
            .filter(|z| z.kind == ZoneKind::Mempool)
            .filter_map(|z| z.name.strip_prefix("MP_").map(String::from))
            .collect()
    }

    /// Free the pool's zones (header, objects, ring). Every member must have stopped using it:
    /// the memory may be reused.
    pub fn destroy(self, zones: &impl Zones) -> Result<(), MempoolError> {
        let name = self.inner.name.clone();
        drop(self);
        let r = zones.free(&Ring::<u32>::zone_name(&Self::ring_name(&name)));
        let o = zones.free(&Self::objects_zone_name(&name));
        let h = zones.free(&Self::zone_name(&name));
        for (res, z) in [
            (r, Ring::<u32>::zone_name(&Self::ring_name(&name))),
            (o, Self::objects_zone_name(&name)),
            (h, Self::zone_name(&name)),
        ] {
            res.map_err(|e| zone_err(&name, &z, e))?;
        }
        Ok(())
    }

    // ----- description -----

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Number of objects.
    pub fn size(&self) -> u32 {
        self.inner.n
    }
    /// Size of an object in bytes.
    pub fn elt_size(&self) -> u32 {
        self.inner.elt_size
    }
    /// Bytes of private area per object.
    pub fn priv_size(&self) -> u32 {
        self.inner.priv_size
    }
    /// Bytes from one object to the next.
    pub fn stride(&self) -> usize {
        self.inner.stride
    }
    /// Objects each per-lcore cache keeps (0: no cache).
    pub fn cache_size(&self) -> u32 {
        self.inner.cache_size
    }
    /// The cache length above which a put flushes the cache (1.5 × cache size, as DPDK).
    pub fn flush_threshold(&self) -> u32 {
        self.inner.flushthresh
    }
    /// Creation flags.
    pub fn flags(&self) -> MempoolFlags {
        self.inner.flags
    }
    /// The ring of free objects.
    pub fn ring(&self) -> &Ring<u32> {
        &self.inner.ring
    }
    /// The member this handle acts as.
    pub fn member(&self) -> MemberId {
        MemberId(self.inner.me)
    }

    // ----- counts -----

    /// Objects in the pool: in the ring of free objects plus in every per-lcore cache (DPDK's
    /// `rte_mempool_avail_count`). A snapshot: busy members make it move.
    pub fn avail_count(&self) -> u32 {
        let i = &self.inner;
        let mut c = i.ring.count() as u64;
        for l in 0..i.mem.ncaches() {
            if let Some(s) = i.mem.cache(l) {
                c += s.len.load(Relaxed).min(CACHE_OBJS as u32) as u64;
            }
        }
        c.min(i.n as u64) as u32
    }
    /// Objects out of the pool: held by members, in rings, or lost with dead members
    /// (`size - avail_count`).
    pub fn in_use_count(&self) -> u32 {
        self.inner.n - self.avail_count()
    }
    /// Whether every object is in the pool.
    pub fn is_full(&self) -> bool {
        self.avail_count() == self.inner.n
    }
    /// Whether no object is in the pool.
    pub fn is_empty(&self) -> bool {
        self.avail_count() == 0
    }
    /// Objects in the cache of `lcore` now (0 without caches).
    pub fn cache_count(&self, lcore: u32) -> u32 {
        self.inner
            .mem
            .cache(lcore as usize)
            .map_or(0, |s| s.len.load(Relaxed))
    }
    /// Statistics kept in shared memory.
    pub fn stats(&self) -> MempoolStats {
        let c = self.inner.mem.counters();
        let (ae, ad) = self.inner.ring.abandoned();
        MempoolStats {
            caches_flushed: c.caches_flushed.load(Relaxed),
            cache_objs_flushed: c.cache_objs_flushed.load(Relaxed),
            reclaimed: c.reclaimed.load(Relaxed),
            repaired: c.repaired.load(Relaxed),
            violations: c.violations.load(Relaxed),
            ring_abandoned_put: ae,
            ring_abandoned_get: ad,
        }
    }

    // ----- objects -----

    /// The object with index `index`.
    #[inline(always)]
    pub fn obj(&self, index: u32) -> Option<Obj> {
        (index < self.inner.n).then(|| self.inner.obj(index))
    }
    /// The index of `obj` in this pool (`None` if it is not one of its objects).
    pub fn index_of(&self, obj: Obj) -> Option<u32> {
        let i = &self.inner;
        let a = obj.as_ptr() as usize;
        (a >= i.obj_base && a < i.obj_end && (a - i.obj_base) % i.stride == 0)
            .then(|| i.index_of_handle(i.conv.handle(obj)))
    }
    /// The object `ptr` points into (anywhere inside its element or private area).
    pub fn obj_from_ptr(&self, ptr: *const u8) -> Option<Obj> {
        let a = ptr as usize;
        let i = &self.inner;
        if a < i.obj_base || a >= i.obj_end {
            return None;
        }
        Some(i.obj(((a - i.obj_base) / i.stride) as u32))
    }
    /// The pool, mapped in this process, whose object `ptr` points into (DPDK's
    /// `rte_mempool_from_obj`).
    pub fn from_ptr(ptr: *const u8) -> Option<Mempool> {
        let a = ptr as usize;
        let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.iter()
            .filter(|(s, e, _)| a >= *s && a < *e)
            .find_map(|(_, _, w)| w.upgrade())
            .map(|inner| Mempool { inner })
    }
    /// The private area of `obj` (`priv_size` bytes after the element).
    pub fn private_ptr(&self, obj: Obj) -> *mut u8 {
        obj.as_ptr().wrapping_add(self.inner.elt_size as usize)
    }
    /// Every object, in index order (DPDK's `rte_mempool_obj_iter`).
    pub fn iter(&self) -> impl Iterator<Item = Obj> + '_ {
        (0..self.inner.n).map(|i| self.inner.obj(i))
    }

    // ----- get and put (straight to the ring) -----

    /// Get one object from the ring of free objects (`None`: the ring is empty, or held a value
    /// naming no object, see [`Mempool::get_bulk`]).
    #[inline]
    pub fn get(&self) -> Option<Obj> {
        let mut o = [Obj::empty()];
        (self.get_bulk(&mut o) == 1).then_some(o[0])
    }
    /// Fill all of `out` from the ring of free objects, or nothing; returns `out.len()` or 0.
    ///
    /// Any size works: more than [`rte_ring::MAX_OP`] objects (65,531, what one operation of
    /// the ring moves) are taken in several operations, all or nothing (if a later one fails,
    /// the objects of the earlier ones go back); meanwhile other members may find the ring
    /// emptier than the pool is.
    ///
    /// A value in the ring that names no object of the pool (a peer or a guest wrote it) is
    /// never handed out: it is dropped and counted in [`MempoolStats::violations`], the other
    /// objects of the same ring operation go back to the ring, and the get returns 0.
    #[inline]
    pub fn get_bulk(&self, out: &mut [Obj]) -> usize {
        let mut scratch = [0u32; 64];
        let i = &self.inner;
        match cache::get_direct(&i.ring, out, &mut scratch, &i.conv) {
            Got::All => {
                i.mark_got(out);
                out.len()
            }
            g => i.failed(g),
        }
    }
    /// Put one object back into the ring of free objects.
    #[inline]
    pub fn put(&self, obj: Obj) {
        self.put_bulk(std::slice::from_ref(&obj))
    }
    /// Put objects back into the ring of free objects (any number: more than
    /// [`rte_ring::MAX_OP`] go in several ring operations).
    #[inline]
    pub fn put_bulk(&self, objs: &[Obj]) {
        let mut scratch = [0u32; 64];
        let i = &self.inner;
        i.mark_put(objs);
        let refused = cache::put_direct(&i.ring, objs, &mut scratch, &i.conv);
        i.note_refused(refused);
    }

    /// The calling thread's view of the pool: through the cache of the lcore it runs as
    /// (`zones.current_lcore()`) when the pool has caches and the caller is a member owning an
    /// lcore; straight to the ring otherwise (no lcore, or a VM guest).
    ///
    /// The returned value stays on this thread (it is neither `Send` nor `Sync`): the cache it
    /// uses belongs to the lcore, which one thread runs as. One `LocalPool` per cache at a time
    /// in a process: while one lives, another asked for the same lcore's cache (another thread
    /// claiming the same lcore, say) goes straight to the ring; [`LocalPool::lcore`] tells.
    pub fn local(&self, zones: &impl Zones) -> LocalPool {
        let i = &self.inner;
        let lcore = zones
            .current_lcore()
            .filter(|_| zones.member() != MemberId::OUTSIDER && i.me != MemberId::OUTSIDER.0);
        let mut cache = lcore.and_then(|l| i.mem.cache(l as usize));
        if let Some(c) = cache {
            // One LocalPool per cache in this process at a time (two threads claiming the same
            // lcore, or two views in one thread, would corrupt it): a second one gets none.
            let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
            let key = c as *const CacheSlot as usize;
            if claimed.contains(&key) {
                cache = None;
            } else {
                claimed.push(key);
            }
        }
        let mut len = 0;
        if let Some(c) = cache {
            let liveness = i.liveness.clone();
            if cache::claim(c, holder(i.me, i.token), |m| alive(&*liveness, m)) {
                len = c.len.load(Acquire).min(CACHE_OBJS as u32);
            } else {
                // Locked by a live member for far longer than a flush takes: do without it.
                unclaim(c as *const CacheSlot as usize);
                cache = None;
            }
        }
        LocalPool {
            fast: cache.filter(|_| !i.tracked).map(std::ptr::NonNull::from),
            len,
            direct: cache.is_none() && !i.tracked,
            conv: i.conv,
            cache_size: i.cache_size,
            flushthresh: i.flushthresh,
            pool: raw::ByValue::new(self.clone()),
            cache: cache.map(std::ptr::NonNull::from),
            lcore: cache.and(lcore),
            scratch: vec![0u32; CACHE_OBJS].into_boxed_slice(),
        }
    }

    // ----- transfers through rings -----

    /// Send held objects through `ring` (of object indexes) to another member: in a tracked
    /// pool each object is marked "in transit" (sent by this member) before the enqueue, and
    /// belongs to the ring until a receiver adopts it. All or nothing: returns `objs.len()` or
    /// 0 (ring full; the objects stay held).
    ///
    /// `ring` is a shared ring (`&ring`) or a held producer side (`&mut producer`, a
    /// [`rte_ring::SingleProducer`]: the fast single-producer path).
    pub fn send(&self, mut ring: impl Enqueue<u32>, objs: &[Obj]) -> usize {
        let i = &self.inner;
        let mut idx = [0u32; 64];
        let mut big;
        let buf = if objs.len() <= 64 {
            &mut idx[..objs.len()]
        } else {
            big = vec![0u32; objs.len()];
            &mut big[..]
        };
        for (b, o) in buf.iter_mut().zip(objs) {
            *b = i.index_of_handle(i.conv.handle(*o));
        }
        if i.tracked {
            let t = word(KIND_TRANSIT, i.me, i.token);
            for &x in buf.iter() {
                i.swap_owner(x, t, holder(i.me, i.token));
            }
        }
        let n = ring.enqueue_bulk(buf);
        if n == 0 && i.tracked {
            let h = holder(i.me, i.token);
            for &x in buf.iter() {
                if let Some(w) = i.mem.owner(x) {
                    w.store(h, Release);
                }
            }
        }
        n
    }

    /// Receive up to `out.len()` objects from `ring` (of object indexes) and adopt them (a
    /// tracked pool records this member as their holder). Returns how many, at the front of
    /// `out`. An index that names no object (a peer wrote it) is dropped and counted in
    /// [`MempoolStats::violations`], and the call returns what it has received so far.
    pub fn receive(&self, mut ring: impl Dequeue<u32>, out: &mut [Obj]) -> usize {
        let i = &self.inner;
        let mut idx = [0u32; 64];
        let mut done = 0;
        while done < out.len() {
            let m = (out.len() - done).min(64);
            let got = ring.dequeue_burst(&mut idx[..m]);
            // An index out of range (a peer wrote it) is dropped and counted; the objects
            // received are packed at the front of `out`.
            let mut kept = 0;
            for &v in &idx[..got] {
                if v >= i.n {
                    i.mem.counters().violations.fetch_add(1, Relaxed);
                    continue;
                }
                out[done + kept] = i.obj(v);
                kept += 1;
                if i.tracked {
                    let old = i
                        .mem
                        .owner(v)
                        .map(|w| w.swap(holder(i.me, i.token), AcqRel));
                    if old.is_some_and(|w| kind_of(w) != KIND_TRANSIT) {
                        i.mem.counters().violations.fetch_add(1, Relaxed);
                    }
                }
            }
            done += kept;
            // Stop at an empty ring, and after dropping anything (a peer feeding the ring
            // garbage must not keep this call going).
            if got < m || kept < got {
                break;
            }
        }
        done
    }

    // ----- recovery -----

    /// Return what members that are no longer alive left behind: flush their per-lcore caches
    /// to the ring, finish their interrupted ring operations ([`Ring::recover`]) and, in a
    /// tracked pool, return the objects they held. Idempotent; safe to call from any member at
    /// any time, while others keep working. The group's clean-up runs it (the hook is
    /// registered when a process first creates or looks up a pool), and so does
    /// [`Mempool::lookup`], for groups whose cleaner never linked this crate.
    pub fn recover_dead_members(&self) -> RecoveryReport {
        let i = &self.inner;
        let mut rep = RecoveryReport {
            ring: i.ring.recover(),
            ..RecoveryReport::default()
        };
        let liveness = i.liveness.clone();
        let is_alive = |m: u16| alive(&*liveness, m);
        let mut scratch = vec![0u32; CACHE_OBJS];
        let lock = locked(i.me, i.token);
        for l in 0..i.mem.ncaches() {
            let Some(c) = i.mem.cache(l) else { continue };
            if let Some(f) = cache::recover(c, &i.ring, lock, &mut scratch, i.conv, is_alive) {
                rep.caches_flushed += 1;
                rep.cache_objs_flushed += f.moved as u64;
                i.note_refused(f.refused);
            }
        }
        if i.tracked {
            let mut batch = Vec::with_capacity(256);
            // Liveness per incarnation (member and token), asked once per pass, and only after
            // a word naming it was read: an incarnation seen not alive then is dead for good; one
            // seen alive is left alone for this pass.
            let mut memo: Vec<(u64, bool)> = Vec::new();
            for idx in 0..i.n {
                let Some(w) = i.mem.owner(idx) else { break };
                let v = w.load(Acquire);
                if kind_of(v) != KIND_HELD {
                    continue;
                }
                let who = v & !(3 << 62);
                let live = match memo.iter().find(|(k, _)| *k == who) {
                    Some(&(_, l)) => l,
                    None => {
                        let l = is_alive(member_of(v));
                        memo.push((who, l));
                        l
                    }
                };
                if live {
                    continue;
                }
                // The exact incarnation that held it is gone: take it back with a CAS on the
                // word read, so a newer holder is never robbed.
                if w.compare_exchange(v, FREE, AcqRel, Acquire).is_ok() {
                    batch.push(i.handle_of_index(idx));
                    if batch.len() == 256 {
                        rep.reclaimed += batch.len() as u64;
                        i.note_refused(batch.len() - i.ring.enqueue_bulk(&batch));
                        batch.clear();
                    }
                }
            }
            rep.reclaimed += batch.len() as u64;
            i.note_refused(batch.len() - i.ring.enqueue_bulk(&batch));
        }
        let c = i.mem.counters();
        c.caches_flushed.fetch_add(rep.caches_flushed, Relaxed);
        c.cache_objs_flushed
            .fetch_add(rep.cache_objs_flushed, Relaxed);
        c.reclaimed.fetch_add(rep.reclaimed, Relaxed);
        rep
    }

    /// Account for every object of a tracked pool; the caller guarantees quiescence: no member
    /// gets, puts, sends or receives objects of this pool, or uses `rings`, during the audit.
    ///
    /// Each object is found in exactly one place: the ring of free objects, a per-lcore cache,
    /// one of `rings` (transfer rings carrying object indexes), or the hands of a member (its
    /// owner word). Objects in no place are *orphans*, reported with the reason their owner
    /// word gives (a member killed between two steps of a get, a put or a transfer); with
    /// `repair`, orphans and objects held by members that are not alive are put back in the
    /// pool. Objects in two places are reported as duplicates (must never happen).
    ///
    /// Untracked pools are audited by place only (holders are unknown).
    pub fn audit(&self, rings: &[&Ring<u32>], repair: bool) -> AuditReport {
        let i = &self.inner;
        let n = i.n as usize;
        // where[i]: bit 0 free ring, bit 1 cache, bit 2 a transfer ring; count of sightings.
        let mut seen = vec![0u8; n];
        let mut rep = AuditReport {
            total: i.n,
            ..AuditReport::default()
        };
        // Rings are read in place (nothing taken out): a transfer ring's sides may be held by
        // its single producer and consumer, which stay idle during the audit.
        let mut drain = |r: &Ring<u32>, place: u8, handles: bool, rep: &mut AuditReport| -> u32 {
            let all = r.snapshot();
            for &h in &all {
                let v = if handles { i.index_of_handle(h) } else { h };
                if (v as usize) < n && (!handles || i.handle_of_index(v) == h) {
                    if seen[v as usize] != 0 {
                        rep.duplicates += 1;
                    }
                    seen[v as usize] |= place;
                } else {
                    rep.bad_indexes += 1;
                }
            }
            all.len() as u32
        };
        rep.in_free_ring = drain(&i.ring, 1, true, &mut rep);
        for r in rings {
            rep.in_rings += drain(r, 4, false, &mut rep);
        }
        for l in 0..i.mem.ncaches() {
            let Some(c) = i.mem.cache(l) else { continue };
            let len = (c.len.load(Acquire) as usize).min(CACHE_OBJS);
            for k in 0..len {
                let off = c.objs[k].load(Relaxed);
                let h = (off >> i.conv.shift) as u32;
                let v = i.index_of_handle(h) as usize;
                if v < n && i.handle_of_index(v as u32) == h && (h as u64) << i.conv.shift == off {
                    if seen[v] != 0 {
                        rep.duplicates += 1;
                    }
                    seen[v] |= 2;
                } else {
                    rep.bad_indexes += 1;
                }
            }
            rep.in_caches += len as u32;
        }
        let liveness = i.liveness.clone();
        let mut back = Vec::new();
        for (idx, &place) in seen.iter().enumerate() {
            let w = if i.tracked {
                i.mem.owner(idx as u32).map_or(FREE, |w| w.load(Acquire))
            } else {
                FREE
            };
            if place != 0 {
                // In a place: its word must agree (free in the pool, in transit in a ring).
                let ok = match place {
                    1 | 2 => w == FREE,
                    4 => kind_of(w) == KIND_TRANSIT,
                    _ => false,
                };
                if i.tracked && !ok {
                    rep.mismatched += 1;
                }
                continue;
            }
            if !i.tracked {
                rep.out_untracked += 1;
                continue;
            }
            let why = match kind_of(w) {
                KIND_HELD if alive(&*liveness, member_of(w)) => {
                    rep.held_by_live += 1;
                    continue;
                }
                KIND_HELD => OrphanReason::HolderDead,
                KIND_TRANSIT => OrphanReason::LostInTransit,
                _ if w == FREE => OrphanReason::LostInPool,
                _ => OrphanReason::BadWord,
            };
            rep.orphans.push(Orphan {
                index: idx as u32,
                reason: why,
                last: MemberId(member_of(w)),
            });
            if repair {
                if let Some(o) = i.mem.owner(idx as u32) {
                    o.store(FREE, Release);
                }
                back.push(i.handle_of_index(idx as u32));
            }
        }
        if repair && !back.is_empty() {
            let done = i.ring.enqueue_burst(&back);
            rep.repaired = done as u32;
            i.mem.counters().repaired.fetch_add(done as u64, Relaxed);
            i.note_refused(back.len() - done);
        }
        rep.violations = i.mem.counters().violations.load(Relaxed);
        rep
    }
}

fn alive(l: &dyn Liveness, m: u16) -> bool {
    l.member_state(MemberId(m)) == MemberState::Alive
}

impl Inner {
    #[inline(always)]
    fn obj(&self, index: u32) -> Obj {
        self.conv.obj(self.handle_of_index(index))
    }
    #[inline(always)]
    fn handle_of_index(&self, index: u32) -> u32 {
        index.wrapping_mul(self.stride_units)
    }
    #[inline(always)]
    fn index_of_handle(&self, h: u32) -> u32 {
        h.wrapping_mul(self.inv)
    }

    /// Tracked pools: record this member as the holder of objects it just got.
    #[inline(always)]
    fn mark_got(&self, objs: &[Obj]) {
        if self.tracked {
            self.set_owners(objs, holder(self.me, self.token), FREE);
        }
    }

    /// Tracked pools: mark objects free before they go back (killed before they reach the
    /// ring or cache, they are orphans an audit finds, never in two places).
    #[inline(always)]
    fn mark_put(&self, objs: &[Obj]) {
        if self.tracked {
            self.set_owners(objs, FREE, holder(self.me, self.token));
        }
    }

    /// Store `new` into the owner words of `objs`, counting a violation for each that was not
    /// `expect` (kept out of line: the untracked fast paths only test the flag).
    #[inline(never)]
    fn set_owners(&self, objs: &[Obj], new: u64, expect: u64) {
        for o in objs {
            self.swap_owner(self.index_of_handle(self.conv.handle(*o)), new, expect);
        }
    }

    /// Store `new` into object `idx`'s owner word; count a violation if it was not `expect`.
    #[inline(always)]
    fn swap_owner(&self, idx: u32, new: u64, expect: u64) {
        if let Some(w) = self.mem.owner(idx) {
            if w.swap(new, AcqRel) != expect {
                self.mem.counters().violations.fetch_add(1, Relaxed);
            }
        }
    }

    /// A get that did not fill its output: 0, after counting the objects it dropped (values
    /// in shared memory that named no object, or objects the ring refused back) as violations.
    #[inline(always)]
    fn failed(&self, g: Got) -> usize {
        if let Got::Dropped(k) = g {
            self.count_violations(k);
        }
        0
    }

    #[inline(always)]
    fn note_refused(&self, refused: usize) {
        if refused != 0 {
            self.count_violations(refused);
        }
    }

    #[cold]
    #[inline(never)]
    fn count_violations(&self, k: usize) {
        self.mem.counters().violations.fetch_add(k as u64, Relaxed);
    }
}

/// A thread's view of a pool (from [`Mempool::local`]): get and put go through the per-lcore
/// cache of the lcore the thread runs as, or straight to the ring without one.
///
/// The cache follows DPDK's rules: a get is served from the top of the cache (a LIFO stack);
/// when it holds too few, it is refilled from the ring with `cache_size + remaining` objects in
/// one bulk; if that fails the remainder comes straight from the ring, and if that fails too the
/// get takes nothing. A put appends to the cache while its length stays at or under the flush
/// threshold (1.5 × cache size); otherwise the cache is flushed to the ring and the new objects
/// become the cache; a put of more than the threshold goes straight to the ring. Requests of
/// more than 512 objects bypass the cache.
pub struct LocalPool {
    // Copies of the pool's hot constants, so the fast paths read nothing but this value and
    // the cache.
    //
    // Nothing is ever given the address of a `LocalPool` (its out-of-line paths take values,
    // its drop is inlined, its `Mempool` is dropped by value): a caller's `LocalPool` can then
    // live in registers, where its length, cache pointer and constants stay across the gets
    // and puts of a loop. Given its address once (its `Arc`'s drop did, and the scrub path),
    // the compiler kept it in memory, and each get and put loaded and stored its fields again
    // (`cargo xtask bench mempool`, a build with only this change: one core without cache,
    // bulk 4, 390-400 M objects/s before, 450 M after; bulk 8, 670-700 M, 750-765 M. With the
    // split of `raw::offsets_to_addrs_large` made after it, those rows measured 390 M and
    // 650-670 M again, with the same instructions: code placement).
    /// The cache, when the pool is untracked: the inlined fast paths serve a get or put from
    /// it alone (tracked pools take the out-of-line path, which marks owner words too).
    fast: Option<std::ptr::NonNull<CacheSlot>>,
    /// This owner's copy of the cache's length (it is the only writer while it lives).
    len: u32,
    /// No cache and untracked: the inlined paths go straight to the ring.
    direct: bool,
    conv: Conv,
    cache: Option<std::ptr::NonNull<CacheSlot>>,
    cache_size: u32,
    flushthresh: u32,
    pool: raw::ByValue<Mempool>,
    lcore: Option<u32>,
    scratch: Box<[u32]>,
}

impl fmt::Debug for LocalPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPool")
            .field("pool", &self.pool.inner.name)
            .field("lcore", &self.lcore)
            .finish()
    }
}

impl LocalPool {
    /// The pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }
    /// The lcore whose cache this view uses, if any.
    pub fn lcore(&self) -> Option<u32> {
        self.lcore
    }

    #[inline(always)]
    fn slot(&self) -> Option<&CacheSlot> {
        // The pointer came from `PoolMem::cache`, inside a zone `self.pool` keeps alive.
        self.cache
            .and_then(|_| self.pool.inner.mem.cache(self.lcore? as usize))
    }

    /// Get one object (`None`: the pool is empty, or a value naming no object was met, see
    /// [`LocalPool::get_bulk`]).
    #[inline]
    pub fn get(&mut self) -> Option<Obj> {
        let mut o = [Obj::empty()];
        (self.get_bulk(&mut o) == 1).then_some(o[0])
    }

    /// Fill all of `out`, or nothing; returns `out.len()` or 0.
    ///
    /// Any size works: requests above 512 objects bypass the cache, and above
    /// [`rte_ring::MAX_OP`] they take several ring operations (see [`Mempool::get_bulk`]). A
    /// value in the cache or the ring that names no object of the pool (a peer or a guest wrote
    /// it) is never handed out: it is dropped and counted in [`MempoolStats::violations`], the
    /// other objects stay in (or go back to) the pool, and the get returns 0.
    #[inline]
    pub fn get_bulk(&mut self, out: &mut [Obj]) -> usize {
        let n = out.len();
        if let Some(p) = self.fast {
            // The common case, inlined: the cache holds enough.
            let len = self.len as usize;
            if n <= len {
                let c = slot_ref(p, &self.pool.inner);
                let rest = len - n;
                if !raw::load_objs(c, rest, out, self.conv) {
                    // Only a peer writing into this member's cache gets here (`get_scrub` is cold).
                    let (n, l) = get_scrub(&self.pool.inner, p, self.len, out, self.conv);
                    self.len = l;
                    return n;
                }
                self.len = rest as u32;
                c.len.store(rest as u32, Relaxed);
                return n;
            }
        } else if self.direct {
            let i = &*self.pool.inner;
            return match cache::get_direct(&i.ring, out, &mut self.scratch, &self.conv) {
                Got::All => n,
                g => i.failed(g),
            };
        }
        self.get_bulk_slow(out)
    }

    /// Every other get: refills, tracked pools.
    #[inline(always)]
    fn get_bulk_slow(&mut self, out: &mut [Obj]) -> usize {
        let (n, len) = get_slow(
            &self.pool.inner,
            self.cache,
            self.len,
            self.cache_size,
            out,
            &mut self.scratch[..],
            self.conv,
        );
        self.len = len;
        n
    }

    /// Put one object back.
    #[inline]
    pub fn put(&mut self, obj: Obj) {
        self.put_bulk(std::slice::from_ref(&obj))
    }

    /// Put objects back (any number: above the flush threshold they go straight to the ring,
    /// in several ring operations above [`rte_ring::MAX_OP`]).
    #[inline]
    pub fn put_bulk(&mut self, objs: &[Obj]) {
        let n = objs.len();
        if let Some(p) = self.fast {
            // The common case, inlined: the objects fit in the cache.
            let len = self.len as usize;
            if len + n <= self.flushthresh as usize {
                let c = slot_ref(p, &self.pool.inner);
                raw::store_objs(c, len, objs, self.conv);
                self.len = (len + n) as u32;
                c.len.store((len + n) as u32, Relaxed);
                return;
            }
        } else if self.direct {
            let i = &*self.pool.inner;
            let refused = cache::put_direct(&i.ring, objs, &mut self.scratch, &self.conv);
            i.note_refused(refused);
            return;
        }
        self.put_bulk_slow(objs)
    }

    /// Every other put: flushes, tracked pools.
    #[inline(always)]
    fn put_bulk_slow(&mut self, objs: &[Obj]) {
        self.len = put_slow(
            &self.pool.inner,
            self.cache,
            self.len,
            self.flushthresh,
            objs,
            &mut self.scratch[..],
            self.conv,
        );
    }

    /// Move every object of this lcore's cache back to the ring (DPDK's
    /// `rte_mempool_cache_flush`); the cache stays this member's.
    pub fn flush(&mut self) {
        if let Some(p) = self.cache {
            let i = &*self.pool.inner;
            let (_, refused) =
                cache::flush_all(slot_ref(p, i), &i.ring, &mut self.scratch, self.conv);
            self.len = 0;
            i.note_refused(refused);
        }
    }

    /// Objects in this lcore's cache.
    pub fn cache_len(&self) -> u32 {
        self.slot().map_or(0, |_| self.len)
    }

    /// See [`Mempool::send`].
    pub fn send(&self, ring: impl Enqueue<u32>, objs: &[Obj]) -> usize {
        self.pool.send(ring, objs)
    }
    /// See [`Mempool::receive`].
    pub fn receive(&self, ring: impl Dequeue<u32>, out: &mut [Obj]) -> usize {
        self.pool.receive(ring, out)
    }
}

// The drop is small and inlined, and gives nothing the handle's address: the claim is released
// by key, and the pool is held in a `raw::ByValue` (see the struct's fields).
impl Drop for LocalPool {
    #[inline]
    fn drop(&mut self) {
        if let Some(p) = self.cache {
            unclaim(p.as_ptr() as usize);
        }
    }
}

/// Release this process's claim on the cache at `key` (see `CLAIMED`).
#[inline(never)]
fn unclaim(key: usize) {
    CLAIMED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&k| k != key);
}

/// The cache held an offset that names no object: drop it (see [`cache::scrub`]). Given values
/// and returning (objects got, the cache's new length), as [`get_slow`].
#[cold]
#[inline(never)]
fn get_scrub(
    i: &Inner,
    p: std::ptr::NonNull<CacheSlot>,
    mut len: u32,
    out: &mut [Obj],
    conv: Conv,
) -> (usize, u32) {
    let n = i.failed(cache::scrub(slot_ref(p, i), &mut len, out, conv));
    (n, len)
}

/// The get of [`LocalPool`] that is not served by its inlined fast path (refills, tracked
/// pools). Out of line and given values, not the `LocalPool`: a call that borrowed the handle
/// would make the compiler keep its fields in memory (and reload them) around every operation
/// of a caller's loop. Returns (objects got, the cache's new length).
#[inline(never)]
fn get_slow(
    i: &Inner,
    cache: Option<std::ptr::NonNull<CacheSlot>>,
    mut len: u32,
    cache_size: u32,
    out: &mut [Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> (usize, u32) {
    let got = match cache {
        Some(p) => cache::get(
            slot_ref(p, i),
            &mut len,
            &i.ring,
            cache_size,
            out,
            scratch,
            conv,
        ),
        None => cache::get_direct(&i.ring, out, scratch, &conv),
    };
    if got != Got::All {
        return (i.failed(got), len);
    }
    i.mark_got(out);
    (out.len(), len)
}

/// The put of [`LocalPool`] that its inlined fast path does not serve (flushes, tracked pools);
/// see [`get_slow`]. Returns the cache's new length.
#[inline(never)]
fn put_slow(
    i: &Inner,
    cache: Option<std::ptr::NonNull<CacheSlot>>,
    mut len: u32,
    flushthresh: u32,
    objs: &[Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> u32 {
    i.mark_put(objs);
    let refused = match cache {
        Some(p) => cache::put(
            slot_ref(p, i),
            &mut len,
            &i.ring,
            flushthresh,
            objs,
            scratch,
            conv,
        ),
        None => cache::put_direct(&i.ring, objs, scratch, &conv),
    };
    i.note_refused(refused);
    len
}

#[inline(always)]
fn slot_ref(p: std::ptr::NonNull<CacheSlot>, i: &Inner) -> &CacheSlot {
    raw::slot_ref(p, &i.mem)
}

/// What [`Mempool::recover_dead_members`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Caches of members no longer alive, flushed to the ring.
    pub caches_flushed: u64,
    /// Objects those caches held.
    pub cache_objs_flushed: u64,
    /// Objects held by members no longer alive, returned (tracked pools).
    pub reclaimed: u64,
    /// What the ring's own recovery did (interrupted gets and puts of dead members: their
    /// objects are counted as abandoned by the ring; an audit of a tracked pool finds them).
    pub ring: rte_ring::RecoveryReport,
}

impl RecoveryReport {
    /// Whether anything was returned or abandoned.
    pub fn did_something(&self) -> bool {
        self.caches_flushed > 0
            || self.reclaimed > 0
            || self.ring.producer_abandoned > 0
            || self.ring.consumer_abandoned > 0
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flushed {} caches ({} objects), reclaimed {} held objects, ring abandoned put={} get={}",
            self.caches_flushed,
            self.cache_objs_flushed,
            self.reclaimed,
            self.ring.producer_abandoned,
            self.ring.consumer_abandoned
        )
    }
}

/// Statistics of a pool, kept in shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MempoolStats {
    /// Caches of dead members flushed back.
    pub caches_flushed: u64,
    /// Objects those flushes returned.
    pub cache_objs_flushed: u64,
    /// Objects held by dead members returned (tracked pools).
    pub reclaimed: u64,
    /// Orphans put back by [`Mempool::audit`] with `repair`.
    pub repaired: u64,
    /// Broken ownership rules seen (a tracked get of an object not free, a put or send of one
    /// the caller did not hold, an object the ring refused), and values found in the free ring,
    /// a cache or a transfer ring that name no object (dropped): must stay 0.
    pub violations: u64,
    /// Objects the free ring abandoned because a member died in the middle of putting them.
    pub ring_abandoned_put: u64,
    /// Objects the free ring abandoned because a member died in the middle of getting them.
    pub ring_abandoned_get: u64,
}

/// Why an audit found an object in no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    /// Marked free but in neither the ring nor a cache: a member died between taking it from
    /// the pool and recording itself as its holder, or between marking it free and returning it.
    LostInPool,
    /// Marked in transit but in none of the rings given: a sender died between marking and
    /// enqueueing, or a receiver between dequeueing and adopting (or it sits in a ring the
    /// audit was not given).
    LostInTransit,
    /// Held by a member that is not alive, and not yet reclaimed.
    HolderDead,
    /// Its owner word is not one this crate writes.
    BadWord,
}

/// One object an audit found in no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// The object's index.
    pub index: u32,
    /// Why it is nowhere.
    pub reason: OrphanReason,
    /// The member its owner word names last (its holder or sender; member 0 for a free word).
    pub last: MemberId,
}

/// What [`Mempool::audit`] found. For a sound pool, `in_free_ring + in_caches + in_rings +
/// held_by_live + orphans.len() == total` and `duplicates == mismatched == violations == 0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Objects in the pool.
    pub total: u32,
    /// In the ring of free objects.
    pub in_free_ring: u32,
    /// In per-lcore caches.
    pub in_caches: u32,
    /// In the transfer rings given.
    pub in_rings: u32,
    /// Held by live members (tracked pools).
    pub held_by_live: u32,
    /// Out of every place, untracked pool (held by someone, or lost: unknown).
    pub out_untracked: u32,
    /// Objects in no place, with the reason.
    pub orphans: Vec<Orphan>,
    /// Orphans put back in the pool (`repair`).
    pub repaired: u32,
    /// Sightings of an object already seen in another place.
    pub duplicates: u32,
    /// Objects whose place and owner word disagree (free word in a transfer ring, ...).
    pub mismatched: u32,
    /// Indexes out of range found in rings or caches.
    pub bad_indexes: u32,
    /// The pool's violation counter.
    pub violations: u64,
}

impl AuditReport {
    /// Whether every object is in exactly one place or accounted for as an orphan, and no rule
    /// was broken.
    pub fn is_sound(&self) -> bool {
        let placed = self.in_free_ring as u64
            + self.in_caches as u64
            + self.in_rings as u64
            + self.held_by_live as u64
            + self.out_untracked as u64
            + self.orphans.len() as u64;
        placed == self.total as u64
            && self.duplicates == 0
            && self.mismatched == 0
            && self.bad_indexes == 0
            && self.violations == 0
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |r: OrphanReason| self.orphans.iter().filter(|o| o.reason == r).count();
        write!(
            f,
            "total={} free_ring={} caches={} rings={} held_live={} untracked_out={} orphans={} (lost_in_pool={} lost_in_transit={} holder_dead={} bad_word={}) repaired={} duplicates={} mismatched={} bad_indexes={} violations={} sound={}",
            self.total,
            self.in_free_ring,
            self.in_caches,
            self.in_rings,
            self.held_by_live,
            self.out_untracked,
            self.orphans.len(),
            count(OrphanReason::LostInPool),
            count(OrphanReason::LostInTransit),
            count(OrphanReason::HolderDead),
            count(OrphanReason::BadWord),
            self.repaired,
            self.duplicates,
            self.mismatched,
            self.bad_indexes,
            self.violations,
            self.is_sound()
        )
    }
}
