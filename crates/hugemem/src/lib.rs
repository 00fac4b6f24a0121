//! Hugepage memory for hugeshare: what the machine has, and segments other processes (and
//! VMs) can map.
//!
//! * Discovery: [`HugepageInfo::discover`] reads page sizes, per-node pools and hugetlbfs
//!   mounts; the parsers are pure functions ([`parse_mounts`], [`parse_meminfo_default`], ...).
//! * Choosing: [`choose_backing`] applies the "fall back or fail" rule (hugetlbfs, `/dev/shm`
//!   with a notice, or a memfd) and runs the pre-flight page check.
//! * Segments: [`SegmentSource`] ([`Hugetlbfs`], [`ShmFallback`], [`Memfd`]) creates a
//!   [`Segment`]; another process attaches with [`Segment::open_path`] or [`Segment::open_fd`].
//!   Each process holds `flock(LOCK_SH)` on a segment file while it maps it, so
//!   [`stale_segments`] / [`remove_stale`] can tell a dead group's files from a live one's.
//! * Fixed addresses: [`VaWindow`] reserves address space; [`MapOptions::addr`] maps inside it
//!   with `MAP_FIXED_NOREPLACE`, naming what occupies the range when that fails.
//! * [`phys_addr`] reads `/proc/self/pagemap` (root only).
//! * [`admin`]: reserve and give back pages, mount and unmount hugetlbfs (root only).
//!
//! ```no_run
//! use hugemem::{choose_backing, source_for, BackingRequest, HugepageInfo, MapOptions, SegmentSpec};
//! # fn main() -> Result<(), hugemem::HugememError> {
//! let info = HugepageInfo::discover()?;
//! let choice = choose_backing(&info, &BackingRequest { bytes: 64 << 20, ..Default::default() })?;
//! if let Some(n) = &choice.notice {
//!     eprintln!("{n}");
//! }
//! let source = source_for(&choice.backing);
//! let seg = source.create(&SegmentSpec {
//!     prefix: "demo_",
//!     index: 0,
//!     len: 64 << 20,
//!     pow2: false,
//!     map: MapOptions::default(),
//! })?;
//! println!("{} bytes of {} memory at {:p}", seg.len(), seg.kind(), seg.as_ptr());
//! seg.remove()?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

pub mod admin;
mod backing;
mod discover;
mod error;
mod phys;
mod segment;
mod stale;
mod window;

pub use backing::{choose_backing, source_for, Backing, BackingChoice, BackingRequest};
pub use discover::{
    fmt_size, parse_counter, parse_meminfo_default, parse_mounts, parse_size, parse_size_dir_name,
    pool_dir, read_sizes, short_size, HugepageInfo, HugetlbfsMount, MountEntry, NodePages,
    PageSizeInfo, SYS_HUGEPAGES, SYS_NODES,
};
pub use error::{HugememError, PhysAddrUnavailable};
pub use phys::phys_addr;
pub use segment::{
    base_page_size, check_prefix, maps_occupants, parse_smaps_kernel_page_size, segment_file_name,
    segment_index, BackingKind, Hugetlbfs, MapOptions, Memfd, Segment, SegmentSource, SegmentSpec,
    ShmFallback, HUGETLBFS_MAGIC,
};
pub use stale::{remove_stale, stale_segments};
pub use window::{VaWindow, WINDOW_ALIGN};

#[cfg(test)]
mod send_sync {
    /// Segments and windows are shared between threads (a `Zone` keeps its segment alive and
    /// is `Send + Sync`).
    #[test]
    fn segment_and_window_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Segment>();
        check::<crate::VaWindow>();
        check::<Box<dyn crate::SegmentSource + Send + Sync>>();
        check::<crate::HugememError>();
    }
}
