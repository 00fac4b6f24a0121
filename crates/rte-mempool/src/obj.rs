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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv {
    pub base: usize,
    pub shift: u32,
}

impl Conv {
    #[inline(always)]
    pub fn obj(self, h: u32) -> Obj {
        Obj {
            addr: self.base.wrapping_add((h as usize) << self.shift),
        }
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
