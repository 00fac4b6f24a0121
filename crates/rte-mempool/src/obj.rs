//! [`Obj`]: an object as this process sees it, and the conversion between objects and the
//! handles shared memory holds.

use std::fmt;

/// One object of a pool, as handed to this process: its address here (8 bytes, like DPDK's
/// `void *`). Shared memory never holds it: rings and caches hold *handles* (the object's
/// offset from the pool's first object, in units of the largest power of two dividing the
/// stride), and the pool converts; [`crate::Mempool::index_of`] gives the object's index.
///
/// ```
/// # use rte_mempool::{Mempool, MempoolParams};
/// # let zones = shmconfig::LocalZones::new();
/// let mp = Mempool::create(&zones, "objs", MempoolParams::new(8, 64)).unwrap();
/// let o = mp.get().unwrap();
/// let i = mp.index_of(o).unwrap();
/// assert_eq!(mp.obj(i), Some(o));
/// assert_eq!(mp.obj_from_ptr(o.as_ptr().wrapping_add(10)), Some(o));
/// mp.put(o);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Obj {
    pub(crate) addr: usize,
}

impl Obj {
    /// The object's first byte in this process. Reading or writing through it is the caller's
    /// business (`unsafe`): the object is shared memory, which its holder alone should use.
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut u8 {
        std::ptr::with_exposed_provenance_mut(self.addr)
    }
    /// A placeholder used to fill output arrays before a get (its pointer is null).
    pub const fn empty() -> Obj {
        Obj { addr: 0 }
    }
}

impl Default for Obj {
    fn default() -> Self {
        Obj::empty()
    }
}

impl fmt::Debug for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Obj@{:#x}", self.addr)
    }
}

/// Object ↔ handle: `addr = base + (handle << shift)`.
///
/// `max_off` is the byte offset of the pool's last object, `(n - 1) × stride`. A handle or
/// byte offset read from shared memory becomes an [`Obj`] only if its offset is at most
/// `max_off` ([`Conv::checked_obj`], and the checked copies of `raw`): the object then lies
/// whole inside the pool's objects area (`n × stride` bytes from `base`, which the lookup
/// checked against the zone's length), whatever a peer wrote. A *misaligned* value in that
/// range (not a multiple of the stride) passes: rejecting it would cost a multiply per object
/// on the hot paths, and it is still memory-safe (its `stride` bytes lie inside the objects
/// area); it only names bytes of one or two objects, as a corrupt pool would anyway, and
/// [`crate::Mempool::index_of`] refuses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv {
    pub base: usize,
    pub shift: u32,
    pub max_off: usize,
}

impl Conv {
    /// The object of a handle this process computed itself from an index below `n`; a handle
    /// read from shared memory goes through [`Conv::checked_obj`].
    #[inline(always)]
    pub fn obj(self, h: u32) -> Obj {
        Obj {
            addr: self.base.wrapping_add((h as usize) << self.shift),
        }
    }
    /// The object of a handle read from shared memory, or `None` if it names no place inside
    /// the objects area (see [`Conv`]).
    #[inline(always)]
    pub fn checked_obj(self, h: u32) -> Option<Obj> {
        let off = (h as usize) << self.shift;
        (off <= self.max_off).then_some(Obj {
            addr: self.base.wrapping_add(off),
        })
    }
    /// Whether `o` lies inside the objects area (what [`Conv::checked_obj`] lets through).
    #[inline(always)]
    pub fn contains(self, o: Obj) -> bool {
        o.addr.wrapping_sub(self.base) <= self.max_off
    }
    #[inline(always)]
    pub fn handle(self, o: Obj) -> u32 {
        (o.addr.wrapping_sub(self.base) >> self.shift) as u32
    }
    /// The object at byte offset `off` (what caches hold; the normal build converts in `raw`).
    #[cfg(hugeshare_loom)]
    #[inline(always)]
    pub fn obj_at(self, off: u64) -> Obj {
        Obj {
            addr: self.base.wrapping_add(off as usize),
        }
    }
    /// Whether a byte offset read from a cache names a place inside the objects area.
    #[cfg(hugeshare_loom)]
    #[inline(always)]
    pub fn offset_ok(self, off: u64) -> bool {
        off <= self.max_off as u64
    }
    /// The byte offset of `o` from the first object.
    #[cfg(hugeshare_loom)]
    #[inline(always)]
    pub fn offset(self, o: Obj) -> u64 {
        o.addr.wrapping_sub(self.base) as u64
    }
    #[cfg(hugeshare_loom)]
    #[inline(always)]
    pub fn offset_of_handle(self, h: u32) -> u64 {
        (h as u64) << self.shift
    }
    #[cfg(hugeshare_loom)]
    #[inline(always)]
    pub fn handle_of_offset(self, off: u64) -> u32 {
        (off >> self.shift) as u32
    }
}
