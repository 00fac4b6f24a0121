//! All of the crate's unsafe code: the CPU instructions (`cpuid`, `rdtsc`, `rdtscp`, `lfence`),
//! the mapping of the HPET's registers (`/dev/hpet`, read-only), the anonymous test page laid out
//! like them, and [`Hpet::from_registers`].
//!
//! Register memory is never turned into a Rust reference: the device's registers are read with
//! volatile loads, the test page (which a test writes while others read) with atomic loads and
//! stores.

use std::ffi::c_void;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::HpetUnavailable;
use crate::hpet::{Hpet, WINDOW_NEEDED};

/// `cpuid` of `leaf`/`subleaf`: `[eax, ebx, ecx, edx]`, or `None` on other architectures.
#[cfg(target_arch = "x86_64")]
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
    // `__cpuid_count` became a safe function in recent Rust; the block keeps older compilers
    // (the workspace's rust-version) happy.
    #[allow(unused_unsafe)]
    // SAFETY: every x86_64 CPU implements CPUID; it reads identification registers and has no
    // effect on memory. Leaves above the maximum return data of the highest leaf, never fault,
    // and callers check the maximum leaf first.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    Some([r.eax, r.ebx, r.ecx, r.edx])
}

/// `cpuid` of `leaf`/`subleaf`: `[eax, ebx, ecx, edx]`, or `None` on other architectures.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn cpuid(_leaf: u32, _subleaf: u32) -> Option<[u32; 4]> {
    None
}

/// A bare `rdtsc`: the time-stamp counter, not ordered against surrounding instructions (as
/// DPDK's `rte_rdtsc`). Returns 0 on other architectures, where [`crate::Tsc`] cannot be built.
#[inline(always)]
pub(crate) fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC exists on every x86_64 CPU; Linux leaves CR4.TSD clear (user space may
        // execute it), and it only reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// `rdtscp`: the time-stamp counter read after every earlier instruction has executed, and the
/// `IA32_TSC_AUX` value (Linux stores the CPU and node number there).
#[inline(always)]
pub(crate) fn rdtscp() -> (u64, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut aux = 0u32;
        // SAFETY: callers only reach this after CPUID 0x80000001 EDX bit 27 (RDTSCP) was checked
        // (see `Tsc::new`); the instruction only reads the counter and TSC_AUX, and writes `aux`,
        // a local we own.
        let tsc = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
        (tsc, aux)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0, 0)
    }
}

/// `lfence; rdtsc`: the counter, read after every earlier instruction has completed (used to
/// pair TSC readings tightly with `clock_gettime` while calibrating).
#[inline(always)]
pub(crate) fn rdtsc_fenced() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: LFENCE is part of SSE2, which every x86_64 CPU has; it only orders execution.
        unsafe { core::arch::x86_64::_mm_lfence() };
        rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Who keeps a register window's memory alive.
#[derive(Debug)]
enum Owner {
    /// Our read-only mapping of `/dev/hpet`, unmapped on drop (`len` bytes at `base`).
    Device { map_len: usize },
    /// A test page; reads are atomic, because a test may write the page while others read.
    TestPage(#[allow(dead_code)] Arc<TestPage>),
    /// Memory the caller of [`Hpet::from_registers`] keeps mapped.
    Caller,
}

/// A read-only view of HPET-style registers: the hardware's (volatile reads) or a test page's
/// (atomic reads).
#[derive(Debug)]
pub(crate) struct RegisterWindow {
    base: NonNull<u8>,
    len: usize,
    owner: Owner,
}

// SAFETY: the window only reads its memory (volatile or atomic loads, never references); the
// mapping it may own is unmapped exactly once, on drop; the test page it may share is itself
// Send + Sync. Reading device registers from any thread is what the hardware allows.
unsafe impl Send for RegisterWindow {}
// SAFETY: as for `Send`: `&RegisterWindow` only permits loads.
unsafe impl Sync for RegisterWindow {}

impl RegisterWindow {
    /// The window's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Read the 32-bit register (or half of a 64-bit register) at `offset` with one 32-bit
    /// access. Every register access of this crate is 32 bits wide: the HPET specification
    /// allows it everywhere, and QEMU's HPET (before 64-bit access support) accepts nothing
    /// wider. Panics if `offset` lies outside the window or is not 4-byte aligned (offsets are
    /// this crate's constants, so that would be a bug here).
    #[inline]
    pub(crate) fn read_u32(&self, offset: usize) -> u32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "register {offset:#x} out of window"
        );
        match self.owner {
            Owner::TestPage(_) => {
                // The test page holds u64 atomics (little-endian, as x86_64): load the whole
                // word and keep the half asked for.
                let word_offset = offset & !7;
                // SAFETY: `word_offset + 8 <= len` (the window and page lengths are multiples of
                // 8, and `offset + 4 <= len`), and the window's memory stays mapped while its
                // owner (a field of `self`) lives.
                let p = unsafe { self.base.as_ptr().add(word_offset) };
                // SAFETY: `p` is valid and 8-aligned (page base plus a multiple of 8), and the
                // test page is only ever accessed through atomics.
                let word = unsafe { AtomicU64::from_ptr(p.cast::<u64>()) };
                (word.load(Ordering::SeqCst) >> ((offset & 4) * 8)) as u32
            }
            _ => {
                // SAFETY: `offset + 4 <= len` (asserted) and the window's `len` bytes stay mapped
                // while the owner lives (a field of `self`).
                let p = unsafe { self.base.as_ptr().add(offset) };
                // SAFETY: `p` is valid and 4-aligned (the base is 8-aligned, checked when the
                // window was built); a device register is read with one volatile access.
                unsafe { ptr::read_volatile(p.cast::<u32>()) }
            }
        }
    }

    /// A 64-bit register that does not change while read (capabilities, configuration), as two
    /// 32-bit accesses, low half first.
    pub(crate) fn read_static_u64(&self, offset: usize) -> u64 {
        u64::from(self.read_u32(offset)) | (u64::from(self.read_u32(offset + 4)) << 32)
    }

    /// A running 64-bit counter as 32-bit accesses: high, low, high again, retried until both
    /// highs agree, so a carry between the halves is never torn.
    #[inline]
    pub(crate) fn read_counter_u64(&self, offset: usize) -> u64 {
        loop {
            let hi = self.read_u32(offset + 4);
            let lo = self.read_u32(offset);
            if self.read_u32(offset + 4) == hi {
                return (u64::from(hi) << 32) | u64::from(lo);
            }
        }
    }
}

impl Drop for RegisterWindow {
    fn drop(&mut self) {
        if let Owner::Device { map_len } = self.owner {
            // SAFETY: `base..base+map_len` is the mapping `map_device` made and nothing else
            // unmaps it; no reference into it exists (reads are by value).
            let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), map_len) };
        }
    }
}

/// Open `path` read-only and map its first page read-only and shared, as DPDK does for
/// `/dev/hpet`. Each failure is mapped to its typed reason.
pub(crate) fn map_device(path: &Path) -> Result<RegisterWindow, HpetUnavailable> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
        |errno| match errno {
            Errno::NOENT | Errno::NODEV | Errno::NXIO | Errno::NOTDIR => {
                HpetUnavailable::NoDevice {
                    path: path.to_owned(),
                }
            }
            Errno::ACCESS | Errno::PERM => HpetUnavailable::Permission {
                path: path.to_owned(),
                errno,
            },
            Errno::BUSY => HpetUnavailable::Busy {
                path: path.to_owned(),
            },
            errno => HpetUnavailable::Open {
                path: path.to_owned(),
                errno,
            },
        },
    )?;
    let map_len = rustix::param::page_size();
    // A regular file laid out like the registers (tests, or a copy in a VM image) must be long
    // enough: reading past its end through the mapping would raise SIGBUS.
    let mut window_len = map_len.min(1024);
    if let Ok(st) = rustix::fs::fstat(&fd) {
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
            let size = usize::try_from(st.st_size).unwrap_or(0);
            if size < WINDOW_NEEDED {
                return Err(HpetUnavailable::RegionTooSmall {
                    at: path.display().to_string(),
                    len: size,
                    needed: WINDOW_NEEDED,
                });
            }
            window_len = window_len.min(size);
        }
    }
    // SAFETY: a fresh read-only shared mapping chosen by the kernel (null hint, no MAP_FIXED), so
    // it overlaps nothing of ours; the fd stays valid for the call (the mapping outlives it, as
    // mmap allows).
    let base = unsafe {
        rustix::mm::mmap(
            ptr::null_mut(),
            map_len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            &fd,
            0,
        )
    }
    .map_err(|errno| HpetUnavailable::MmapRefused {
        path: path.to_owned(),
        errno,
    })?;
    let base = NonNull::new(base.cast::<u8>()).ok_or(HpetUnavailable::MmapRefused {
        path: path.to_owned(),
        errno: rustix::io::Errno::FAULT,
    })?;
    Ok(RegisterWindow {
        base,
        // The hardware window is at least 1024 bytes by the specification (AMD's newer parts:
        // 512); `Hpet::open` checks /proc/iomem for the real size. We read below 0x100.
        len: window_len,
        owner: Owner::Device { map_len },
    })
}

/// An anonymous, zeroed, read-write page laid out like the HPET's registers; written and read
/// with atomics only.
#[derive(Debug)]
pub(crate) struct TestPage {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the page is only accessed through atomic loads and stores at aligned u64 offsets.
unsafe impl Send for TestPage {}
// SAFETY: as for `Send`.
unsafe impl Sync for TestPage {}

impl TestPage {
    /// Map a fresh page.
    pub(crate) fn new() -> std::io::Result<TestPage> {
        let len = rustix::param::page_size();
        // SAFETY: a fresh private anonymous mapping chosen by the kernel (null hint, no
        // MAP_FIXED), overlapping nothing.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }?;
        let base = NonNull::new(base.cast::<u8>()).ok_or(std::io::ErrorKind::OutOfMemory)?;
        Ok(TestPage { base, len })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % 8 == 0 && offset + 8 <= self.len,
            "register {offset:#x} out of page"
        );
        // SAFETY: the address is inside the mapping (asserted), 8-aligned (page base + multiple
        // of 8), lives as long as `self`, and every access to the page is atomic, so an
        // `&AtomicU64` to it is sound.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast::<u64>()) }
    }

    /// Store `value` in the register at `offset`.
    pub(crate) fn store(&self, offset: usize, value: u64) {
        self.word(offset).store(value, Ordering::SeqCst);
    }

    /// Load the register at `offset`.
    pub(crate) fn load(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::SeqCst)
    }

    /// Add `delta` to the register at `offset` (wrapping), returning the new value.
    pub(crate) fn fetch_add(&self, offset: usize, delta: u64) -> u64 {
        self.word(offset)
            .fetch_add(delta, Ordering::SeqCst)
            .wrapping_add(delta)
    }

    /// A read-only register window over the first `len` bytes of the page (at most the page).
    pub(crate) fn window(self: &Arc<Self>, len: usize) -> RegisterWindow {
        RegisterWindow {
            base: self.base,
            len: len.min(self.len),
            owner: Owner::TestPage(Arc::clone(self)),
        }
    }
}

impl Drop for TestPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; windows over it hold an `Arc` to
        // this page, so none outlives it.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) };
    }
}

impl Hpet {
    /// Read HPET registers the caller has mapped (for instance a guest's own mapping, or a file
    /// laid out like the hardware). `len` is the size of the window at `base`; at least 0x100
    /// bytes are needed. The counter is decoded exactly as for [`Hpet::open`].
    ///
    /// For a page you advance by hand in a test, [`crate::HpetTestPage`] needs no unsafe code.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned, and `base..base + len` must stay mapped and readable for
    /// as long as the returned `Hpet` (and anything it is moved into) lives. The memory must be
    /// device registers or memory nobody in this program writes while the `Hpet` lives (reads
    /// are volatile, not atomic).
    pub unsafe fn from_registers(base: NonNull<u8>, len: usize) -> Result<Hpet, HpetUnavailable> {
        assert!(
            base.as_ptr().align_offset(8) == 0,
            "HPET register window must be 8-byte aligned"
        );
        Hpet::from_window(
            RegisterWindow {
                base,
                len,
                owner: Owner::Caller,
            },
            "the window given to Hpet::from_registers",
        )
    }
}
