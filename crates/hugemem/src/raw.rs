//! The only module of `hugemem` with `unsafe` code: creating and destroying mappings, and the
//! registry of reserved virtual-address windows that makes fixed mappings safe.
//!
//! Invariants kept here:
//! * A [`Mapped`] owns its range `addr..addr+len`: it was returned by `mmap` for a file
//!   descriptor, nobody else unmaps it, and it is unmapped (or replaced by a window
//!   placeholder) exactly once, in `Drop`.
//! * A window registered in [`WINDOWS`] owns its range: it is a `PROT_NONE`, `MAP_NORESERVE`
//!   anonymous reservation except for the sub-ranges listed in `occupied`, each owned by one
//!   live `Mapped`. Fixed mappings are only ever placed over such placeholder ranges, under the
//!   registry lock, so they can never replace memory that someone else uses.
//!
//! Addresses are kept as `usize` with exposed provenance, so the types that hold them are
//! `Send` and `Sync` without an `unsafe impl`; the memory itself is only ever touched by the
//! users of `Segment::as_ptr`, through raw pointers.

use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// One reserved window: `base..base+len`, with the sub-ranges mapped by segments.
#[derive(Debug)]
struct WindowRec {
    id: u64,
    base: usize,
    len: usize,
    occupied: Vec<(usize, usize)>,
}

/// Every window this process has reserved and not yet released.
static WINDOWS: Mutex<Vec<WindowRec>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn windows() -> MutexGuard<'static, Vec<WindowRec>> {
    // A panic while holding the lock cannot leave the list inconsistent (each update is a
    // single push/remove), so a poisoned lock is still usable.
    WINDOWS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a fixed mapping inside a window failed.
#[derive(Debug)]
pub(crate) enum FixedError {
    /// No registered window contains the range.
    OutsideWindow,
    /// The range overlaps a segment already mapped in the window.
    Occupied,
    /// The kernel refused with `EEXIST` (something else sits there) or another error.
    Sys(Errno),
    /// Binding to a NUMA node (or populating after it) failed.
    Bind(u32, Errno),
}

/// A shared mapping of a file descriptor, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapped {
    addr: usize,
    len: usize,
    /// The window this mapping sits in, if it was placed at a fixed address.
    window: Option<u64>,
}

impl Mapped {
    /// Maps `len` bytes of `fd` (from offset 0) shared and read-write, wherever the kernel
    /// chooses.
    pub(crate) fn anywhere(fd: BorrowedFd<'_>, len: usize, populate: bool) -> Result<Self, Errno> {
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a null address lets the kernel choose a free range, so no existing memory
        // is affected; the new range becomes owned by the returned `Mapped`.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )?
        };
        Ok(Mapped {
            addr: p.expose_provenance(),
            len,
            window: None,
        })
    }

    /// Maps `len` bytes of `fd` shared and read-write at exactly `addr`, which must lie in a
    /// window reserved by this process and not overlap another segment there.
    ///
    /// The placeholder is removed and the file mapped with `MAP_FIXED_NOREPLACE`, so if
    /// anything else has appeared in the range the kernel refuses (`EEXIST`) instead of
    /// replacing it. On failure the placeholder is put back.
    pub(crate) fn in_window(
        fd: BorrowedFd<'_>,
        addr: usize,
        len: usize,
        populate: bool,
    ) -> Result<Self, FixedError> {
        let mut ws = windows();
        let end = addr.checked_add(len).ok_or(FixedError::OutsideWindow)?;
        let w = ws
            .iter_mut()
            .find(|w| w.base <= addr && end <= w.base + w.len)
            .ok_or(FixedError::OutsideWindow)?;
        if w.occupied.iter().any(|&(a, l)| addr < a + l && a < end) {
            return Err(FixedError::Occupied);
        }
        // SAFETY: `addr..end` lies in a window registered above and overlaps no segment of
        // it, so it is our own PROT_NONE placeholder that nothing in the process uses; we hold
        // the registry lock, so no other thread maps there through this crate meanwhile.
        unsafe { rustix::mm::munmap(std::ptr::with_exposed_provenance_mut(addr), len) }
            .map_err(FixedError::Sys)?;
        let mut flags = MapFlags::SHARED | MapFlags::FIXED_NOREPLACE;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: FIXED_NOREPLACE never replaces an existing mapping: if another thread has
        // mapped something into the hole since the munmap, the kernel fails with EEXIST.
        let r = unsafe {
            rustix::mm::mmap(
                std::ptr::with_exposed_provenance_mut(addr),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )
        };
        match r {
            Ok(p) if p.addr() == addr => {
                w.occupied.push((addr, len));
                Ok(Mapped {
                    addr: p.expose_provenance(),
                    len,
                    window: Some(w.id),
                })
            }
            Ok(p) => {
                // A kernel older than 4.17 treats FIXED_NOREPLACE as a hint: undo.
                // SAFETY: `p..p+len` was just returned by mmap and is used by nobody else.
                let _ = unsafe { rustix::mm::munmap(p, len) };
                placeholder_noreplace(addr, len);
                Err(FixedError::Sys(Errno::EXIST))
            }
            Err(e) => {
                placeholder_noreplace(addr, len);
                Err(FixedError::Sys(e))
            }
        }
    }

    /// The `AtomicU64` at byte `offset` of the mapping.
    ///
    /// # Panics
    /// If `offset` is not 8-byte aligned or `offset + 8` exceeds the mapping.
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset.checked_add(8).is_some_and(|e| e <= self.len),
            "atomic_u64: offset {offset} is misaligned or outside the {} bytes of the segment",
            self.len
        );
        // SAFETY: the address is inside this live mapping (checked above), 8-byte aligned (the
        // mapping is page-aligned and `offset` is a multiple of 8), readable and writable. The
        // reference cannot outlive `self`, which keeps the mapping. Other processes may change
        // the bytes at any time, which `AtomicU64` permits: all access goes through atomic
        // operations, never through a plain reference to the bytes.
        unsafe { AtomicU64::from_ptr(std::ptr::with_exposed_provenance_mut(self.addr + offset)) }
    }

    /// Binds the mapping's pages to NUMA `node` (`mbind(MPOL_BIND)`), then, if `populate`,
    /// faults them all in with `MADV_POPULATE_WRITE`, which reports a failure as an error
    /// instead of a SIGBUS. Call it before anything has touched the mapping.
    pub(crate) fn bind_to_node(&self, node: u32, populate: bool) -> Result<(), Errno> {
        const MPOL_BIND: libc::c_long = 2;
        let words = node as usize / 64 + 1;
        let mut mask = vec![0u64; words];
        mask[node as usize / 64] |= 1 << (node % 64);
        // The kernel reads `maxnode - 1` bits.
        let maxnode = (words * 64 + 1) as libc::c_ulong;
        // SAFETY: mbind only changes the memory policy of our own mapping `addr..addr+len`
        // (owned by `self`); `mask` is a live buffer of `words` u64s, which covers the
        // `maxnode - 1` bits the kernel reads. No memory is accessed through Rust references.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                self.addr as libc::c_ulong,
                self.len as libc::c_ulong,
                MPOL_BIND,
                mask.as_ptr(),
                maxnode,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return Err(
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL)
            );
        }
        if populate {
            // SAFETY: populating only faults in pages of our own shared mapping; it does not
            // change their contents or the mapping's extent.
            unsafe {
                rustix::mm::madvise(
                    std::ptr::with_exposed_provenance_mut(self.addr),
                    self.len,
                    rustix::mm::Advice::LinuxPopulateWrite,
                )?
            };
        }
        Ok(())
    }

    /// The start address (exposed provenance).
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(id) = self.window {
            let mut ws = windows();
            if let Some(w) = ws.iter_mut().find(|w| w.id == id) {
                w.occupied.retain(|&(a, _)| a != self.addr);
                // SAFETY: the range is this mapping's own (see the module invariants); MAP_FIXED
                // atomically replaces it with a placeholder, so the window stays reserved and
                // no other thread can slip a mapping into a hole.
                let r = unsafe {
                    rustix::mm::mmap_anonymous(
                        std::ptr::with_exposed_provenance_mut(self.addr),
                        self.len,
                        ProtFlags::empty(),
                        MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
                    )
                };
                if r.is_ok() {
                    return;
                }
            }
        }
        // SAFETY: the range is owned by this `Mapped` (module invariants) and is unmapped once.
        let _ = unsafe {
            rustix::mm::munmap(std::ptr::with_exposed_provenance_mut(self.addr), self.len)
        };
    }
}

/// Puts a placeholder back over `addr..addr+len` after a failed fixed mapping, without
/// replacing anything that may have appeared there (best effort).
fn placeholder_noreplace(addr: usize, len: usize) {
    // SAFETY: FIXED_NOREPLACE cannot replace an existing mapping; the range is in our window.
    let _ = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::with_exposed_provenance_mut(addr),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
        )
    };
}

/// Reserves `len` bytes of address space (`PROT_NONE`, `MAP_NORESERVE`), at `hint` if the
/// kernel can, otherwise anywhere with the base aligned to `align` (a power of two). Returns
/// the window's id and base.
pub(crate) fn reserve_window(
    len: usize,
    hint: Option<usize>,
    align: usize,
) -> Result<(u64, usize), Errno> {
    let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
    let mut base = None;
    if let Some(h) = hint {
        // SAFETY: without MAP_FIXED the address is only a hint; the kernel never replaces an
        // existing mapping and returns a free range that becomes ours.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::with_exposed_provenance_mut(h),
                len,
                ProtFlags::empty(),
                flags,
            )?
        };
        if p.addr() == h {
            base = Some(p.expose_provenance());
        } else {
            // SAFETY: `p..p+len` was just returned by mmap and is used by nobody.
            unsafe { rustix::mm::munmap(p, len)? };
        }
    }
    let base = match base {
        Some(b) => b,
        None => {
            let total = len.checked_add(align).ok_or(Errno::NOMEM)?;
            // SAFETY: as above, the kernel chooses a free range that becomes ours.
            let p = unsafe {
                rustix::mm::mmap_anonymous(std::ptr::null_mut(), total, ProtFlags::empty(), flags)?
            };
            let start = p.expose_provenance();
            let aligned = (start + align - 1) & !(align - 1);
            let head = aligned - start;
            let tail = total - head - len;
            if head > 0 {
                // SAFETY: the head `start..aligned` is part of the range just mapped, unused.
                unsafe { rustix::mm::munmap(p, head)? };
            }
            if tail > 0 {
                // SAFETY: the tail after `aligned+len` is part of the range just mapped, unused.
                unsafe {
                    rustix::mm::munmap(std::ptr::with_exposed_provenance_mut(aligned + len), tail)?
                };
            }
            aligned
        }
    };
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    windows().push(WindowRec {
        id,
        base,
        len,
        occupied: Vec::new(),
    });
    Ok((id, base))
}

/// Releases the window `id`: unmaps its placeholder parts. Segments still mapped inside it stay
/// mapped and are unmapped by their own drop.
pub(crate) fn release_window(id: u64) {
    let mut ws = windows();
    let Some(i) = ws.iter().position(|w| w.id == id) else {
        return;
    };
    let w = ws.swap_remove(i);
    let mut occ = w.occupied;
    occ.sort_unstable();
    let mut cur = w.base;
    let end = w.base + w.len;
    for (a, l) in occ.into_iter().chain(std::iter::once((end, 0))) {
        if a > cur {
            // SAFETY: `cur..a` is a placeholder part of the window being released (module
            // invariants), used by nothing else.
            let _ =
                unsafe { rustix::mm::munmap(std::ptr::with_exposed_provenance_mut(cur), a - cur) };
        }
        cur = cur.max(a + l);
    }
}
