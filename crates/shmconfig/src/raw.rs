//! The unsafe code of `shmconfig`, kept in one place.

use std::alloc::{self, Layout};
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::zones::{ShmOffset, Zone, ZoneKind};

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
