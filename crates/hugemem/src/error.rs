//! The errors of `hugemem`: one enum, each variant naming the file or value at fault and the
//! remedy.

use std::io;
use std::path::PathBuf;

use crate::fmt_size;

/// Everything that can go wrong while discovering hugepages, choosing a backing, creating,
/// opening, mapping or cleaning up segments, or administering the hugepage pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HugememError {
    /// A system call or file operation failed for a reason not covered by a more precise
    /// variant.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file (for example `open /dev/hugepages/rtemap_0`).
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The operating system refused an operation for lack of permission.
    #[error("{what}: permission denied; {remedy}")]
    PermissionDenied {
        /// What was being done, naming the file.
        what: String,
        /// What to do about it.
        remedy: String,
    },

    /// A kernel file had content we could not parse.
    #[error("cannot parse {file}: {detail}")]
    Parse {
        /// The file (for example `/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages`).
        file: PathBuf,
        /// What was wrong with it.
        detail: String,
    },

    /// A size given by the user could not be understood.
    #[error("invalid size {text:?}: {detail} (write a number of bytes with an optional K, M or G suffix, e.g. 512M)")]
    BadSize {
        /// The text given.
        text: String,
        /// What was wrong.
        detail: String,
    },

    /// A page size the kernel does not offer was requested.
    #[error("unknown hugepage size {}: this machine offers {supported} (see /sys/kernel/mm/hugepages)", fmt_size(*page_size))]
    UnknownPageSize {
        /// The page size asked for, in bytes.
        page_size: u64,
        /// The sizes the kernel offers, formatted.
        supported: String,
    },

    /// No hugetlbfs mount of the wanted page size exists.
    #[error("no hugetlbfs mount for {} pages; mount one as root with `cargo xtask hugepages --mount DIR --pagesize {}` or `mount -t hugetlbfs -o pagesize={} nodev DIR`", fmt_size(*page_size), fmt_size(*page_size), fmt_size(*page_size))]
    NoMount {
        /// The page size, in bytes.
        page_size: u64,
    },

    /// A directory given as a hugetlbfs directory is not on a hugetlbfs mount.
    #[error("{path} is not on a hugetlbfs mount (see /proc/mounts); give a directory inside a hugetlbfs mount, or mount one with `cargo xtask hugepages --mount DIR`")]
    NotHugetlbfs {
        /// The directory.
        path: PathBuf,
    },

    /// A directory we must create files in is read-only or not writable by us.
    #[error("{path} is not writable by this process (read-only mount or permissions); remount it read-write, fix its owner/mode, or choose another directory")]
    NotWritable {
        /// The directory.
        path: PathBuf,
    },

    /// Too few free hugepages for a request (the pre-flight check, or the kernel refusing a
    /// mapping).
    #[error("not enough free {} hugepages{}: {needed} needed, {free} free; reserve more as root with {command}. (Segment files that a dead group left in a hugetlbfs mount, named <prefix>map_<n>, hold pages until that prefix's next primary starts; `cargo xtask hugepages --remove-stale <prefix>` frees them now.)", fmt_size(*page_size), node.map(|n| format!(" on NUMA node {n}")).unwrap_or_default())]
    NotEnoughPages {
        /// The page size, in bytes.
        page_size: u64,
        /// The NUMA node, when the request was per node.
        node: Option<u32>,
        /// Pages needed.
        needed: u64,
        /// Pages free (not yet reserved by a mapping).
        free: u64,
        /// The command that reserves the missing pages.
        command: String,
    },

    /// The kernel refused to back a hugepage mapping although the pool has enough free pages:
    /// a `size=`/`nr_inodes=` limit on the hugetlbfs mount, a hugetlb cgroup limit, or a NUMA
    /// memory policy.
    #[error("the kernel refused to reserve {needed} {} hugepages for {what} although {free} are free: check the `size=` limit of the hugetlbfs mount (/proc/mounts), the hugetlb cgroup limit (hugetlb.*.limit_in_bytes) and the NUMA policy", fmt_size(*page_size))]
    KernelRefusedPages {
        /// The segment.
        what: String,
        /// The page size, in bytes.
        page_size: u64,
        /// Pages needed.
        needed: u64,
        /// Pages free in the pool.
        free: u64,
    },

    /// Not enough space left in a tmpfs (such as `/dev/shm`) for a fallback segment.
    #[error("not enough space in {dir}: {} needed, {} available; free space there (stale segments: `remove_stale`) or enlarge the tmpfs", fmt_size(*needed), fmt_size(*available))]
    NotEnoughSpace {
        /// The directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },

    /// A NUMA node that does not exist (or has no hugepage directory) was named.
    #[error("NUMA node {node} has no {} hugepages directory under /sys/devices/system/node; nodes present: {present}", fmt_size(*page_size))]
    NoSuchNode {
        /// The node.
        node: u32,
        /// The page size, in bytes.
        page_size: u64,
        /// The nodes that exist, formatted.
        present: String,
    },

    /// A segment length that is not a whole number of pages.
    #[error("segment length {len} is not a multiple of the page size {}; round it up to {} or set `pow2`", fmt_size(*page_size), len.div_ceil(*page_size) * page_size)]
    NotPageMultiple {
        /// The length asked for.
        len: u64,
        /// The page size, in bytes.
        page_size: u64,
    },

    /// A segment of zero bytes was requested or found.
    #[error("segment {what} has length 0; a segment must hold at least one page")]
    EmptySegment {
        /// The segment (path, or a description).
        what: String,
    },

    /// A segment file prefix that could escape the directory or be confused with another.
    #[error(
        "invalid segment prefix {prefix:?}: use 1 to 64 characters from A-Z a-z 0-9 _ - . (no '/')"
    )]
    BadPrefix {
        /// The prefix given.
        prefix: String,
    },

    /// The segment file to create already exists.
    #[error("{path} already exists and {}", if *live { "is held by a live process (another group uses this prefix: choose another prefix)" } else { "nobody holds it (a stale segment: remove it with `hugemem::remove_stale` or `rm`)" })]
    SegmentExists {
        /// The file.
        path: PathBuf,
        /// Whether a live process holds its lock.
        live: bool,
    },

    /// A segment file is held exclusively (its creator is still initialising it, or a clean-up
    /// is removing it).
    #[error("{path} is locked exclusively by another process (still being created, or being removed); retry later")]
    SegmentBusy {
        /// The file.
        path: PathBuf,
    },

    /// The segment file was removed (or replaced) while we were opening it.
    #[error("{path} was removed or replaced while it was being opened; its group has gone")]
    SegmentGone {
        /// The file.
        path: PathBuf,
    },

    /// The path to open is not a regular file (a symlink, a directory, ...).
    #[error("{path} is not a regular file; segment files are never followed through symlinks")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },

    /// A fixed mapping address outside every window this process reserved.
    #[error("fixed address {addr:#x}..{:#x} does not lie inside a VaWindow reserved by this process; reserve one with VaWindow::reserve first", addr + len)]
    OutsideWindow {
        /// The start address.
        addr: usize,
        /// The length.
        len: usize,
    },

    /// A fixed mapping address that is not aligned to the page size.
    #[error("fixed address {addr:#x} is not aligned to the page size {}", fmt_size(*page_size))]
    Unaligned {
        /// The address.
        addr: usize,
        /// The page size, in bytes.
        page_size: u64,
    },

    /// A fixed mapping could not be placed because the range is in use.
    #[error("cannot map {start:#x}..{end:#x}: the range is occupied by {occupants} (per /proc/self/maps)")]
    AddressInUse {
        /// Start of the range.
        start: usize,
        /// End of the range (exclusive).
        end: usize,
        /// What occupies it, from `/proc/self/maps`.
        occupants: String,
    },

    /// The request given to `choose_backing` is contradictory.
    #[error("invalid memory request: {detail}")]
    InvalidRequest {
        /// What is wrong.
        detail: String,
    },

    /// An administrative operation was attempted without root.
    #[error("{action} needs root (it writes {file}); rerun as root, e.g. `sudo -E cargo xtask hugepages ...`")]
    NotRoot {
        /// What was attempted.
        action: String,
        /// The file or system call that needs the privilege.
        file: String,
    },

    /// The kernel added fewer hugepages than asked (memory fragmented or too little free RAM).
    #[error("the kernel added only {added} of {requested} {} pages{}; memory is short or fragmented: free memory (e.g. `echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory`) or reserve at boot (hugepages= kernel argument); nothing was kept", fmt_size(*page_size), node.map(|n| format!(" on node {n}")).unwrap_or_default())]
    PoolShort {
        /// The page size, in bytes.
        page_size: u64,
        /// The node, if one was named.
        node: Option<u32>,
        /// Pages asked for.
        requested: u64,
        /// Pages the kernel added.
        added: u64,
    },
}

impl HugememError {
    /// An `Io` (or `PermissionDenied`) error for `what`, from a `rustix` error number.
    pub(crate) fn sys(what: impl Into<String>, e: rustix::io::Errno) -> Self {
        Self::io(what, io::Error::from(e))
    }

    /// An `Io` (or `PermissionDenied`) error for `what`.
    pub(crate) fn io(what: impl Into<String>, e: io::Error) -> Self {
        let what = what.into();
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Self::PermissionDenied {
                what,
                remedy: "run as root, or give this user access (owner/mode of the file or mount)"
                    .into(),
            };
        }
        Self::Io { what, source: e }
    }
}

/// Why a physical address could not be read from `/proc/self/pagemap`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhysAddrUnavailable {
    /// The kernel hides page frame numbers from processes without `CAP_SYS_ADMIN` (since Linux
    /// 4.0).
    #[error("physical addresses are unavailable: /proc/self/pagemap shows no page frame numbers without CAP_SYS_ADMIN (run as root)")]
    NotPermitted,
    /// The page is not present in memory (never touched, or swapped out).
    #[error("the page at {addr:#x} is not present in memory (touch it first)")]
    NotPresent {
        /// The virtual address asked about.
        addr: usize,
    },
    /// `/proc/self/pagemap` could not be read.
    #[error("cannot read /proc/self/pagemap: {0}")]
    Io(#[source] io::Error),
}
