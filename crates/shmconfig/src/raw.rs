//! The unsafe code of `shmconfig`, kept in one place.

use std::alloc::{self, Layout};
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::layout::{self, ConfigHeader, ZoneEntry};
use crate::zones::{ShmOffset, Zone, ZoneError, ZoneKind};

// SAFETY: `Zone` is a description of shared memory (a pointer and a length) plus a keep-alive
// handle that is itself Send + Sync. It never hands out references to the memory; all access goes
// through raw pointers and atomics in the data-structure crates, which synchronise themselves.
unsafe impl Send for Zone {}
// SAFETY: as for `Send`: `&Zone` only gives out the pointer value, name and length.
unsafe impl Sync for Zone {}

impl Zone {
    /// Describe a zone. Used by implementations of [`crate::Zones`].
    ///
    /// # Safety
    /// `base..base+len` must be mapped, readable and writable for as long as `keepalive` lives,
    /// and must not be handed out as a Rust reference (`&`/`&mut`) anywhere.
    pub unsafe fn from_raw_parts(
        name: &str,
        kind: ZoneKind,
        base: NonNull<u8>,
        len: usize,
        offset: ShmOffset,
        keepalive: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            base,
            len,
            offset,
            _keepalive: keepalive,
        }
    }
}

/// Pointers to a mapped configuration's header and zone table (see `tables::Tables`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigView {
    hdr: *const ConfigHeader,
    zones: *const ZoneEntry,
    pub(crate) max_zones: usize,
}

// SAFETY: the pointed-to memory is shared memory whose mutable parts are atomics (and zone names,
// touched only under the table lock); the view can be used from any thread.
unsafe impl Send for ConfigView {}
// SAFETY: see `Send`.
unsafe impl Sync for ConfigView {}

impl ConfigView {
    /// # Safety
    /// As `Tables::new`.
    pub(crate) unsafe fn new(base: *mut u8, len: usize, max_zones: u32) -> Result<Self, ZoneError> {
        let zones_off = layout::zones_off();
        let need = zones_off + max_zones as usize * std::mem::size_of::<ZoneEntry>();
        if len < need || (base as usize) % 8 != 0 {
            return Err(ZoneError::Corrupt(format!(
                "configuration mapping of {len} bytes at {base:p} cannot hold a zone table of {max_zones} entries ({need} bytes needed)"
            )));
        }
        Ok(Self {
            hdr: base.cast::<ConfigHeader>(),
            // SAFETY: `zones_off + max_zones * size` is within the mapping (checked above).
            zones: unsafe { base.add(zones_off) }.cast::<ZoneEntry>(),
            max_zones: max_zones as usize,
        })
    }

    pub(crate) fn header(&self) -> &ConfigHeader {
        // SAFETY: `new`'s contract: the mapping holds a header and outlives the view. Every field
        // that changes after publication is an atomic, so a shared reference is sound.
        unsafe { &*self.hdr }
    }

    pub(crate) fn zone(&self, i: usize) -> &ZoneEntry {
        assert!(i < self.max_zones, "zone index {i} out of range");
        // SAFETY: `i < max_zones` and the table lies inside the mapping (checked in `new`).
        unsafe { &*self.zones.add(i) }
    }

    /// Read a zone's name. Callers hold the table lock (names change only under it).
    pub(crate) fn zone_name(&self, i: usize) -> [u8; layout::NAME_LEN] {
        assert!(i < self.max_zones, "zone index {i} out of range");
        // SAFETY: in bounds; the name is written only under the table lock, which the caller
        // holds, so this read does not race with a write.
        unsafe { std::ptr::addr_of!((*self.zones.add(i)).name).read() }
    }

    /// Write a zone's name. Callers hold the table lock.
    pub(crate) fn set_zone_name(&self, i: usize, name: &[u8; layout::NAME_LEN]) {
        assert!(i < self.max_zones, "zone index {i} out of range");
        // SAFETY: in bounds; the caller holds the table lock, so no other access races.
        unsafe {
            std::ptr::addr_of!((*self.zones.add(i)).name)
                .cast_mut()
                .write(*name)
        }
    }
}

/// A zeroed, aligned heap allocation that frees itself on drop (the memory of a `LocalZones`
/// zone).
#[derive(Debug)]
pub(crate) struct HeapBlock {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block is plain memory owned by this value; access to its contents is synchronised by
// the data structures that use it (atomics), never through references.
unsafe impl Send for HeapBlock {}
// SAFETY: see `Send`.
unsafe impl Sync for HeapBlock {}

impl HeapBlock {
    /// Allocate `len` zeroed bytes aligned to `align` (a power of two; `len` > 0).
    pub(crate) fn new(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len, align).ok()?;
        // SAFETY: `layout` has a non-zero size (callers check `len > 0`).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| Self { ptr, layout })
    }

    /// A `Zone` describing this whole block.
    pub(crate) fn zone(self: &Arc<Self>, name: &str, kind: ZoneKind, offset: ShmOffset) -> Zone {
        let keep: Arc<dyn Any + Send + Sync> = self.clone();
        // SAFETY: the block is `layout.size()` bytes, allocated and writable until the last `Arc`
        // (held by the zone as its keep-alive) is dropped; nobody takes references into it.
        unsafe { Zone::from_raw_parts(name, kind, self.ptr, self.layout.size(), offset, keep) }
    }
}

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly `layout`, and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_block_is_zeroed_and_aligned() {
        let b = HeapBlock::new(4096, 4096).unwrap();
        assert_eq!(b.ptr.as_ptr() as usize % 4096, 0);
        // SAFETY: the block is 4096 bytes we own; we read through raw pointers only.
        let all_zero = (0..4096).all(|i| unsafe { b.ptr.as_ptr().add(i).read() } == 0);
        assert!(all_zero);
    }
}
