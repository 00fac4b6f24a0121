//! The unsafe code of `ivshmem-meta`, kept in one place: a mapping of a device's memory (a
//! backing file on the host, BAR2 in the guest), read and written only through volatile accesses
//! and atomics, and zones described over it.

use std::any::Any;
use std::fs::File;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use shmconfig::{ShmOffset, Zone, ZoneKind};

/// A mapping of a whole device, kept alive by its owner (a `hugemem::Segment` or a
/// `memmap2::MmapRaw`). Others (QEMU guests, other processes) may write it at any time.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    _owner: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: a `Mapping` is an address range plus an owner that is itself Send + Sync; it never
// hands out references to the bytes (only volatile copies and atomics, which any thread may use).
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The mapping of a segment this process created.
    pub(crate) fn from_segment(seg: hugemem::Segment) -> Mapping {
        let ptr = NonNull::new(seg.as_ptr()).expect("a mapped segment is not at address 0");
        let len = seg.len();
        Mapping {
            ptr,
            len,
            _owner: Box::new(seg),
        }
    }

    /// Map `len` bytes of `file` shared, read-write (a backing file, or a BAR's `resource2`).
    pub(crate) fn map_file(file: &File, len: usize) -> std::io::Result<Mapping> {
        let map = memmap2::MmapOptions::new().len(len).map_raw(file)?;
        let ptr = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| std::io::Error::other("mmap returned address 0"))?;
        Ok(Mapping {
            ptr,
            len,
            _owner: Box::new(map),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// A private copy of `len` bytes at `off`.
    ///
    /// # Panics
    /// If the range is outside the mapping (a bug in this crate: callers check ranges first).
    pub(crate) fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        let mut out = vec![0u8; len];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `off + i < self.len` (asserted above), inside the mapping that `_owner`
            // keeps alive; a volatile byte read of shared memory is never torn and creates no
            // reference to it.
            *b = unsafe { self.ptr.as_ptr().add(off + i).read_volatile() };
        }
        out
    }

    /// Store `bytes` at `off`.
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub(crate) fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off.checked_add(bytes.len()).is_some_and(|e| e <= self.len));
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: inside the mapping (asserted above), which is writable (mapped read-write
            // shared); a volatile byte store creates no reference to shared memory.
            unsafe { self.ptr.as_ptr().add(off + i).write_volatile(b) };
        }
    }

    /// The 32-bit atomic at `off`.
    ///
    /// # Panics
    /// If `off` is not 4-aligned or outside the mapping.
    pub(crate) fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off.checked_add(4).is_some_and(|e| e <= self.len));
        // SAFETY: the address is inside the mapping, 4-aligned (the mapping is page-aligned),
        // and lives as long as `&self`; `AtomicU32` has the layout of `u32` and every access
        // through it is atomic, so concurrent writers elsewhere are fine.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast::<u32>()) }
    }

    /// A zone over `off..off + len`, keeping the mapping alive.
    ///
    /// # Panics
    /// If the range is empty or outside the mapping.
    pub(crate) fn zone(
        self: &Arc<Self>,
        name: &str,
        kind: ZoneKind,
        off: usize,
        len: usize,
        offset: ShmOffset,
    ) -> Zone {
        assert!(len > 0 && off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: `off < self.len`, so the pointer is inside the mapping and not null.
        let ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(off)) };
        let keep: Arc<dyn Any + Send + Sync> = self.clone();
        // SAFETY: `ptr..ptr+len` lies inside this read-write mapping (asserted above), which the
        // zone keeps mapped through `keep`; this crate never makes references to the bytes.
        unsafe { Zone::from_raw_parts(name, kind, ptr, len, offset, keep) }
    }
}

impl Mapping {
    /// Zero `len` bytes at `off` (memory of a zone being reserved, which nobody else uses yet).
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub(crate) fn zero(&self, off: usize, len: usize) {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: inside the writable mapping (asserted above); the range belongs to a zone
        // that is not yet handed out, so no one else accesses it; no reference is created.
        unsafe { self.ptr.as_ptr().add(off).write_bytes(0, len) };
    }
}

/// A private copy of `len` bytes at `off` of a zone of the group (a registry record).
///
/// # Panics
/// If the range is outside the zone.
pub(crate) fn read_zone(zone: &Zone, off: usize, len: usize) -> Vec<u8> {
    assert!(off.checked_add(len).is_some_and(|e| e <= zone.len()));
    (0..len)
        // SAFETY: inside the zone (asserted above), which `zone` keeps mapped; volatile byte
        // reads of shared memory, no reference made.
        .map(|i| unsafe { zone.as_ptr().add(off + i).read_volatile() })
        .collect()
}

/// Store `bytes` at `off` of a zone of the group.
///
/// # Panics
/// If the range is outside the zone.
pub(crate) fn write_zone(zone: &Zone, off: usize, bytes: &[u8]) {
    assert!(off
        .checked_add(bytes.len())
        .is_some_and(|e| e <= zone.len()));
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: inside the zone (asserted above), which `zone` keeps mapped read-write;
        // volatile byte stores, no reference made.
        unsafe { zone.as_ptr().add(off + i).write_volatile(b) };
    }
}

/// The 64-bit atomic at byte `offset` of `zone`: a safe way to share words through a memzone
/// (the host and guests may change them at any moment).
///
/// ```
/// use shmconfig::{LocalZones, ZoneKind, ZoneRequest, Zones};
/// use std::sync::atomic::Ordering;
/// let zones = LocalZones::new();
/// let z = zones.reserve(&ZoneRequest::new("ctl", 64, ZoneKind::Memzone)).unwrap();
/// ivshmem_meta::atomic_u64(&z, 8).store(7, Ordering::Release);
/// assert_eq!(ivshmem_meta::atomic_u64(&z, 8).load(Ordering::Acquire), 7);
/// ```
///
/// # Panics
/// If `offset + 8` is past the end of the zone or the address is not 8-aligned.
pub fn atomic_u64(zone: &Zone, offset: usize) -> &std::sync::atomic::AtomicU64 {
    assert!(
        offset.checked_add(8).is_some_and(|e| e <= zone.len()),
        "offset {offset} is outside zone {:?} ({} bytes)",
        zone.name(),
        zone.len()
    );
    let p = zone.as_ptr().wrapping_add(offset);
    assert!(
        p as usize % 8 == 0,
        "offset {offset} of zone {:?} is not 8-aligned",
        zone.name()
    );
    // SAFETY: the 8 bytes lie inside the zone (checked), are 8-aligned (checked), and stay
    // mapped for as long as `zone` is borrowed (a `Zone` keeps its mapping alive); the memory is
    // only accessed through the atomic, so concurrent writers elsewhere are fine.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast::<u64>()) }
}
