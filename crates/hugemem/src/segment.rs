//! Segments: shared memory that other processes can map, behind [`SegmentSource`].
//!
//! # Locking
//! Every process that maps a segment file holds `flock(LOCK_SH)` on it for as long as it is
//! mapped. The creator takes `LOCK_EX` while it creates and sizes the file, then downgrades to
//! `LOCK_SH` before [`SegmentSource::create`] returns. A segment file is stale exactly when
//! `flock(LOCK_EX|LOCK_NB)` succeeds on it; [`remove_stale`] removes only such files, and only
//! those named `<prefix>map_<N>` for the prefix it is given.
//!
//! Creation and clean-up also lock the directory itself: creators take it shared while a new
//! file is not yet locked (and during the non-atomic `LOCK_EX` to `LOCK_SH` downgrade), and
//! [`remove_stale`] takes it exclusive, so a clean-up can never remove a file that is being
//! born.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::discover::{pool_dir, read_counter, short_size};
use crate::error::HugememError;
use crate::raw::{FixedError, Mapped};

/// `f_type` of a hugetlbfs file system (`HUGETLBFS_MAGIC` in `linux/magic.h`).
pub const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
/// How long [`Segment::open_path`] waits for a creator to finish (its `LOCK_EX`).
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// The kind of memory behind a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackingKind {
    /// A file in a hugetlbfs mount.
    Hugetlbfs,
    /// A file in a tmpfs such as `/dev/shm` (4 KiB pages).
    Shm,
    /// An anonymous `memfd` (hugepages with `MFD_HUGETLB`, or 4 KiB pages).
    Memfd,
}

impl fmt::Display for BackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackingKind::Hugetlbfs => "hugetlbfs",
            BackingKind::Shm => "shm",
            BackingKind::Memfd => "memfd",
        })
    }
}

/// How to map a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Fault every page in at mapping time (`MAP_POPULATE`).
    pub populate: bool,
    /// Map at exactly this address, which must lie inside a [`VaWindow`](crate::VaWindow)
    /// reserved by this process and be aligned to the page size. `None`: anywhere.
    pub addr: Option<usize>,
}

/// What segment to create.
#[derive(Debug, Clone, Copy)]
pub struct SegmentSpec<'a> {
    /// The group's file prefix: the file is `<prefix>map_<index>`.
    pub prefix: &'a str,
    /// The segment number.
    pub index: u32,
    /// The length in bytes: a multiple of the page size, unless `pow2` is set.
    pub len: u64,
    /// Round `len` up to a power of two (at least one page), as an IVSHMEM BAR needs.
    pub pow2: bool,
    /// How to map it.
    pub map: MapOptions,
}

impl SegmentSpec<'_> {
    /// The file name of this segment: `<prefix>map_<index>`.
    pub fn file_name(&self) -> String {
        segment_file_name(self.prefix, self.index)
    }

    /// The length the segment will have with pages of `page_size` bytes.
    pub fn effective_len(&self, page_size: u64) -> Result<u64, HugememError> {
        if self.len == 0 {
            return Err(HugememError::EmptySegment {
                what: self.file_name(),
            });
        }
        if self.pow2 {
            let l = self
                .len
                .checked_next_power_of_two()
                .ok_or(HugememError::InvalidRequest {
                    detail: format!("segment length {} is too large", self.len),
                })?;
            return Ok(l.max(page_size));
        }
        if self.len % page_size != 0 {
            return Err(HugememError::NotPageMultiple {
                len: self.len,
                page_size,
            });
        }
        Ok(self.len)
    }
}

/// The file name of segment `index` of `prefix`: `<prefix>map_<index>`.
pub fn segment_file_name(prefix: &str, index: u32) -> String {
    format!("{prefix}map_{index}")
}

/// The index `N` if `name` is exactly `<prefix>map_<N>`.
pub fn segment_index(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?.strip_prefix("map_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a file prefix: 1 to 64 characters from `A-Z a-z 0-9 _ - .`.
pub fn check_prefix(prefix: &str) -> Result<(), HugememError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(HugememError::BadPrefix {
            prefix: prefix.to_string(),
        })
    }
}

/// A way of creating segments: hugetlbfs files, `/dev/shm` files, or memfds.
pub trait SegmentSource: fmt::Debug {
    /// Creates, sizes, locks and maps a new segment. Nothing is left behind on failure.
    fn create(&self, spec: &SegmentSpec<'_>) -> Result<Segment, HugememError>;
    /// Like [`create`](SegmentSource::create), with the pages taken from NUMA `node`
    /// (`mbind(MPOL_BIND)` before any page is touched; with `populate`, the pages are faulted
    /// in with `MADV_POPULATE_WRITE`, so a node without enough pages is an error, not a
    /// SIGBUS). The pre-flight check counts the node's free pages.
    fn create_on_node(&self, spec: &SegmentSpec<'_>, node: u32) -> Result<Segment, HugememError> {
        let _ = spec;
        Err(HugememError::InvalidRequest {
            detail: format!("{self:?} cannot place segments on NUMA node {node}"),
        })
    }
    /// The page size of the segments it creates, in bytes.
    fn page_size(&self) -> u64;
    /// The kind of segments it creates.
    fn kind(&self) -> BackingKind;
    /// The directory its files go to (`None` for memfds).
    fn dir(&self) -> Option<&Path> {
        None
    }
}

/// Segments as files in a hugetlbfs mount.
#[derive(Debug, Clone)]
pub struct Hugetlbfs {
    dir: PathBuf,
    page_size: u64,
}

impl Hugetlbfs {
    /// Files in `dir` (inside a hugetlbfs mount of `page_size` pages).
    pub fn new(dir: &Path, page_size: u64) -> Self {
        Hugetlbfs {
            dir: dir.to_path_buf(),
            page_size,
        }
    }
}

impl Hugetlbfs {
    fn create_impl(
        &self,
        spec: &SegmentSpec<'_>,
        node: Option<u32>,
    ) -> Result<Segment, HugememError> {
        check_prefix(spec.prefix)?;
        let len = spec.effective_len(self.page_size)?;
        check_fixed(spec.map.addr, self.page_size)?;
        preflight_pages(self.page_size, len / self.page_size, node)?;
        let fs = statfs_dir(&self.dir)?;
        if fs.0 != HUGETLBFS_MAGIC {
            return Err(HugememError::NotHugetlbfs {
                path: self.dir.clone(),
            });
        }
        if fs.1 != self.page_size {
            return Err(HugememError::InvalidRequest {
                detail: format!(
                    "{} holds {} pages, not {} pages",
                    self.dir.display(),
                    short_size(fs.1),
                    short_size(self.page_size)
                ),
            });
        }
        create_file(
            &self.dir,
            spec,
            len,
            self.page_size,
            BackingKind::Hugetlbfs,
            node,
        )
    }
}

impl SegmentSource for Hugetlbfs {
    fn create(&self, spec: &SegmentSpec<'_>) -> Result<Segment, HugememError> {
        self.create_impl(spec, None)
    }
    fn create_on_node(&self, spec: &SegmentSpec<'_>, node: u32) -> Result<Segment, HugememError> {
        self.create_impl(spec, Some(node))
    }
    fn page_size(&self) -> u64 {
        self.page_size
    }
    fn kind(&self) -> BackingKind {
        BackingKind::Hugetlbfs
    }
    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Segments as files in a tmpfs (`/dev/shm` by default), with ordinary pages: for `--no-huge`
/// and machines without hugepages.
#[derive(Debug, Clone)]
pub struct ShmFallback {
    dir: PathBuf,
}

impl ShmFallback {
    /// Files in `/dev/shm`.
    pub fn new() -> Self {
        Self::in_dir(Path::new("/dev/shm"))
    }
    /// Files in `dir` (normally a directory on a tmpfs).
    pub fn in_dir(dir: &Path) -> Self {
        ShmFallback {
            dir: dir.to_path_buf(),
        }
    }
}

impl Default for ShmFallback {
    fn default() -> Self {
        Self::new()
    }
}

impl ShmFallback {
    fn create_impl(
        &self,
        spec: &SegmentSpec<'_>,
        node: Option<u32>,
    ) -> Result<Segment, HugememError> {
        check_prefix(spec.prefix)?;
        if let Some(n) = node {
            check_node(n)?;
        }
        let ps = base_page_size();
        let len = spec.effective_len(ps)?;
        check_fixed(spec.map.addr, ps)?;
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| HugememError::sys(format!("statvfs {}", self.dir.display()), e))?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        if available < len {
            return Err(HugememError::NotEnoughSpace {
                dir: self.dir.clone(),
                needed: len,
                available,
            });
        }
        create_file(&self.dir, spec, len, ps, BackingKind::Shm, node)
    }
}

impl SegmentSource for ShmFallback {
    fn create(&self, spec: &SegmentSpec<'_>) -> Result<Segment, HugememError> {
        self.create_impl(spec, None)
    }
    fn create_on_node(&self, spec: &SegmentSpec<'_>, node: u32) -> Result<Segment, HugememError> {
        self.create_impl(spec, Some(node))
    }
    fn page_size(&self) -> u64 {
        base_page_size()
    }
    fn kind(&self) -> BackingKind {
        BackingKind::Shm
    }
    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

/// Segments as anonymous memfds (`--in-memory`): nothing on disk; hand the descriptor
/// ([`Segment::fd`]) to another process over a Unix socket (`SCM_RIGHTS`).
#[derive(Debug, Clone)]
pub struct Memfd {
    page_size: Option<u64>,
}

impl Memfd {
    /// Hugepages of `page_size` (`MFD_HUGETLB` with the size flag), or 4 KiB pages with `None`.
    pub fn new(page_size: Option<u64>) -> Self {
        Memfd { page_size }
    }
}

impl Memfd {
    fn create_impl(
        &self,
        spec: &SegmentSpec<'_>,
        node: Option<u32>,
    ) -> Result<Segment, HugememError> {
        use rustix::fs::{memfd_create, MemfdFlags};
        check_prefix(spec.prefix)?;
        if let Some(n) = node {
            check_node(n)?;
        }
        let ps = self.page_size();
        let len = spec.effective_len(ps)?;
        check_fixed(spec.map.addr, ps)?;
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if let Some(hps) = self.page_size {
            if !hps.is_power_of_two() {
                return Err(HugememError::UnknownPageSize {
                    page_size: hps,
                    supported: "powers of two only".into(),
                });
            }
            preflight_pages(hps, len / hps, node)?;
            // MFD_HUGE_SHIFT is 26: the size flag is log2(page size) in bits 26..31.
            flags |= MemfdFlags::HUGETLB | MemfdFlags::from_bits_retain(hps.trailing_zeros() << 26);
        }
        let name = spec.file_name();
        let fd = memfd_create(&name, flags).map_err(|e| match e {
            Errno::INVAL if self.page_size.is_some() => HugememError::UnknownPageSize {
                page_size: ps,
                supported: "see /sys/kernel/mm/hugepages".into(),
            },
            e => HugememError::sys(format!("memfd_create {name}"), e),
        })?;
        rustix::fs::ftruncate(&fd, len)
            .map_err(|e| HugememError::sys(format!("ftruncate memfd {name} to {len}"), e))?;
        // Best effort: forbid shrinking or growing, so a receiver can never SIGBUS on a
        // truncated segment (older kernels cannot seal hugetlb memfds).
        let _ = rustix::fs::fcntl_add_seals(
            &fd,
            rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
        );
        let map = map_fd(fd.as_fd(), len, ps, &spec.map, &name, node)?;
        Ok(Segment {
            map,
            fd,
            page_size: ps,
            kind: BackingKind::Memfd,
            path: None,
        })
    }
}

impl SegmentSource for Memfd {
    fn create(&self, spec: &SegmentSpec<'_>) -> Result<Segment, HugememError> {
        self.create_impl(spec, None)
    }
    fn create_on_node(&self, spec: &SegmentSpec<'_>, node: u32) -> Result<Segment, HugememError> {
        self.create_impl(spec, Some(node))
    }
    fn page_size(&self) -> u64 {
        self.page_size.unwrap_or_else(base_page_size)
    }
    fn kind(&self) -> BackingKind {
        BackingKind::Memfd
    }
}

/// A mapped segment. It owns its descriptor, its mapping and (for files) its `LOCK_SH`; drop
/// unmaps and closes. Dropping does not unlink the file (other processes may still attach);
/// the creator's clean exit calls [`Segment::remove`].
///
/// The memory may be written by other processes at any time: use it through
/// [`as_ptr`](Segment::as_ptr) with raw-pointer or atomic accesses, never as a slice.
#[derive(Debug)]
pub struct Segment {
    // Field order matters: the mapping is dropped before the descriptor (and its lock).
    map: Mapped,
    fd: OwnedFd,
    page_size: u64,
    kind: BackingKind,
    path: Option<PathBuf>,
}

impl Segment {
    /// Attaches to an existing segment file by path (its size from `fstat`), taking
    /// `LOCK_SH`; waits up to 5 seconds for a creator that still holds `LOCK_EX`.
    /// Symlinks are not followed.
    pub fn open_path(path: &Path, map: &MapOptions) -> Result<Segment, HugememError> {
        let what = || format!("open segment {}", path.display());
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => HugememError::NotRegularFile {
                path: path.to_path_buf(),
            },
            e => HugememError::sys(what(), e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| HugememError::sys(what(), e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(HugememError::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        let deadline = Instant::now() + ATTACH_WAIT;
        loop {
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared) {
                Ok(()) => {
                    // Size 0: we slipped in between the creator's O_EXCL open and its LOCK_EX.
                    let st = rustix::fs::fstat(&fd).map_err(|e| HugememError::sys(what(), e))?;
                    if st.st_size != 0 || Instant::now() >= deadline {
                        break;
                    }
                    let _ = rustix::fs::flock(&fd, FlockOperation::Unlock);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(HugememError::SegmentBusy {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => return Err(HugememError::sys(format!("flock {}", path.display()), e)),
            }
        }
        // The file may have been removed by a clean-up between our open and our lock.
        let st = rustix::fs::fstat(&fd).map_err(|e| HugememError::sys(what(), e))?;
        match rustix::fs::lstat(path) {
            Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => {}
            _ => {
                return Err(HugememError::SegmentGone {
                    path: path.to_path_buf(),
                })
            }
        }
        let (kind, page_size) = fd_kind(fd.as_fd(), &path.display().to_string())?;
        let kind = if kind == BackingKind::Memfd {
            BackingKind::Shm
        } else {
            kind
        };
        Self::finish_open(
            fd,
            st.st_size as u64,
            kind,
            page_size,
            Some(path.to_path_buf()),
            map,
        )
    }

    /// Attaches to a segment through a descriptor received from its creator (a memfd over
    /// `SCM_RIGHTS`, or an inherited file descriptor). A file-backed descriptor gets
    /// `LOCK_SH` on its open file description.
    pub fn open_fd(fd: OwnedFd, map: &MapOptions) -> Result<Segment, HugememError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let what = format!("segment descriptor {raw}");
        let st =
            rustix::fs::fstat(&fd).map_err(|e| HugememError::sys(format!("fstat {what}"), e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(HugememError::NotRegularFile {
                path: PathBuf::from(format!("/proc/self/fd/{raw}")),
            });
        }
        let (kind, page_size) = fd_kind(fd.as_fd(), &what)?;
        let mut path = None;
        if kind != BackingKind::Memfd {
            rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared).map_err(|e| match e {
                Errno::WOULDBLOCK => HugememError::SegmentBusy {
                    path: PathBuf::from(format!("/proc/self/fd/{raw}")),
                },
                e => HugememError::sys(format!("flock {what}"), e),
            })?;
            path = fd_path(fd.as_fd()).filter(|p| !p.to_string_lossy().ends_with(" (deleted)"));
        }
        Self::finish_open(fd, st.st_size as u64, kind, page_size, path, map)
    }

    fn finish_open(
        fd: OwnedFd,
        size: u64,
        kind: BackingKind,
        page_size: u64,
        path: Option<PathBuf>,
        map: &MapOptions,
    ) -> Result<Segment, HugememError> {
        let name = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{kind} segment"));
        if size == 0 {
            return Err(HugememError::EmptySegment { what: name });
        }
        if size % page_size != 0 {
            return Err(HugememError::NotPageMultiple {
                len: size,
                page_size,
            });
        }
        check_fixed(map.addr, page_size)?;
        let mapped = map_fd(fd.as_fd(), size, page_size, map, &name, None)?;
        Ok(Segment {
            map: mapped,
            fd,
            page_size,
            kind,
            path,
        })
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        std::ptr::with_exposed_provenance_mut(self.map.addr())
    }
    /// The 64-bit atomic at byte `offset`: a safe way to read and write the shared bytes
    /// (other processes may change them at any moment).
    ///
    /// ```
    /// # use hugemem::{Memfd, SegmentSource, SegmentSpec, MapOptions};
    /// use std::sync::atomic::Ordering;
    /// let seg = Memfd::new(None)
    ///     .create(&SegmentSpec { prefix: "doc_", index: 0, len: 4096, pow2: false, map: MapOptions::default() })
    ///     .unwrap();
    /// seg.atomic_u64(8).store(42, Ordering::Release);
    /// assert_eq!(seg.atomic_u64(8).load(Ordering::Acquire), 42);
    /// ```
    ///
    /// # Panics
    /// If `offset` is not a multiple of 8 or `offset + 8 > len()`.
    pub fn atomic_u64(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        self.map.atomic_u64(offset)
    }

    /// The length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Always false: a segment holds at least one page.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
    /// The page size, in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
    /// The kind of memory behind it.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }
    /// The file, for file-backed segments.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// The descriptor (to pass to another process, or to give QEMU).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Unmaps, unlinks the file (if it is still this segment's file) and closes: the
    /// creator's clean exit. Processes still attached keep their mapping.
    pub fn remove(self) -> Result<(), HugememError> {
        if let Some(p) = &self.path {
            let st = rustix::fs::fstat(&self.fd)
                .map_err(|e| HugememError::sys(format!("fstat {}", p.display()), e))?;
            match rustix::fs::lstat(p) {
                Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => {
                    rustix::fs::unlink(p)
                        .map_err(|e| HugememError::sys(format!("unlink {}", p.display()), e))?;
                }
                // Already removed (or replaced by someone else's file, which we leave alone).
                _ => {}
            }
        }
        Ok(())
    }

    /// The kernel page size backing this mapping, from `KernelPageSize:` in
    /// `/proc/self/smaps`: the proof of hugepage backing (2 MiB for 2 MiB hugepages).
    pub fn smaps_kernel_page_size(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
        parse_smaps_kernel_page_size(&text, self.map.addr())
    }
}

/// The `KernelPageSize:` (in bytes) of the mapping starting at `addr` in `/proc/<pid>/smaps`
/// text.
pub fn parse_smaps_kernel_page_size(smaps: &str, addr: usize) -> Option<u64> {
    let mut in_it = false;
    for line in smaps.lines() {
        if let Some((start, _end)) = parse_maps_range(line) {
            in_it = start == addr;
            continue;
        }
        if in_it {
            if let Some(rest) = line.strip_prefix("KernelPageSize:") {
                let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
}

/// The address range of a `/proc/self/maps` (or smaps header) line.
fn parse_maps_range(line: &str) -> Option<(usize, usize)> {
    let range = line.split_whitespace().next()?;
    let (a, b) = range.split_once('-')?;
    let a = usize::from_str_radix(a, 16).ok()?;
    let b = usize::from_str_radix(b, 16).ok()?;
    Some((a, b))
}

/// The lines of `/proc/self/maps` text that overlap `start..end`, formatted as
/// `start-end perms name`.
pub fn maps_occupants(maps: &str, start: usize, end: usize) -> Vec<String> {
    maps.lines()
        .filter_map(|line| {
            let (a, b) = parse_maps_range(line)?;
            if a < end && start < b {
                let f: Vec<&str> = line.split_whitespace().collect();
                let name = if f.len() > 5 {
                    f[5..].join(" ")
                } else {
                    "[anonymous]".into()
                };
                Some(format!("{a:#x}-{b:#x} {} {name}", f.get(1).unwrap_or(&"")))
            } else {
                None
            }
        })
        .collect()
}

/// The page size of ordinary memory (4 KiB on x86-64).
pub fn base_page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn check_fixed(addr: Option<usize>, page_size: u64) -> Result<(), HugememError> {
    match addr {
        Some(a) if (a as u64) % page_size != 0 => {
            Err(HugememError::Unaligned { addr: a, page_size })
        }
        _ => Ok(()),
    }
}

/// `(f_type, f_bsize)` of the file system holding `dir`.
fn statfs_dir(dir: &Path) -> Result<(u64, u64), HugememError> {
    let st = rustix::fs::statfs(dir)
        .map_err(|e| HugememError::sys(format!("statfs {}", dir.display()), e))?;
    Ok((st.f_type as u64, st.f_bsize as u64))
}

/// The kind and page size behind a descriptor.
fn fd_kind(fd: BorrowedFd<'_>, what: &str) -> Result<(BackingKind, u64), HugememError> {
    let st =
        rustix::fs::fstatfs(fd).map_err(|e| HugememError::sys(format!("fstatfs {what}"), e))?;
    let memfd = fd_path(fd).is_some_and(|p| p.to_string_lossy().starts_with("/memfd:"));
    let kind = if memfd {
        BackingKind::Memfd
    } else if st.f_type as u64 == HUGETLBFS_MAGIC {
        BackingKind::Hugetlbfs
    } else {
        BackingKind::Shm
    };
    let page_size = if st.f_type as u64 == HUGETLBFS_MAGIC {
        st.f_bsize as u64
    } else {
        base_page_size()
    };
    Ok((kind, page_size))
}

/// What `/proc/self/fd/<fd>` points at.
fn fd_path(fd: BorrowedFd<'_>) -> Option<PathBuf> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    std::fs::read_link(format!("/proc/self/fd/{raw}")).ok()
}

/// Checks that `needed` pages of `page_size` are free and not promised to other mappings.
pub(crate) fn preflight_pages(
    page_size: u64,
    needed: u64,
    node: Option<u32>,
) -> Result<(), HugememError> {
    let dir = pool_dir(page_size, None);
    if !dir.is_dir() {
        let supported = crate::HugepageInfo::discover()
            .map(|i| i.supported_sizes())
            .unwrap_or_else(|_| "unknown sizes".into());
        return Err(HugememError::UnknownPageSize {
            page_size,
            supported,
        });
    }
    let free = read_counter(&dir.join("free_hugepages"))?;
    let resv = read_counter(&dir.join("resv_hugepages"))?;
    let total = read_counter(&dir.join("nr_hugepages"))?;
    let available = free.saturating_sub(resv);
    if available < needed {
        return Err(not_enough(page_size, None, needed, available, total));
    }
    if let Some(n) = node {
        let nd = pool_dir(page_size, Some(n));
        if !nd.is_dir() {
            check_node(n)?;
            return Err(HugememError::NoSuchNode {
                node: n,
                page_size,
                present: present_nodes(),
            });
        }
        let free = read_counter(&nd.join("free_hugepages"))?;
        let total = read_counter(&nd.join("nr_hugepages"))?;
        if free < needed {
            return Err(not_enough(page_size, Some(n), needed, free, total));
        }
    }
    Ok(())
}

fn present_nodes() -> String {
    crate::discover::list_nodes(Path::new(crate::discover::SYS_NODES))
        .map(|v| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Checks that NUMA `node` exists (has a directory under `/sys/devices/system/node`).
fn check_node(node: u32) -> Result<(), HugememError> {
    if Path::new(crate::discover::SYS_NODES)
        .join(format!("node{node}"))
        .is_dir()
    {
        Ok(())
    } else {
        Err(HugememError::NoSuchNode {
            node,
            page_size: base_page_size(),
            present: present_nodes(),
        })
    }
}

/// The `NotEnoughPages` error, with the command that reserves the missing pages.
pub(crate) fn not_enough(
    page_size: u64,
    node: Option<u32>,
    needed: u64,
    free: u64,
    total: u64,
) -> HugememError {
    let missing = needed - free.min(needed);
    let node_arg = node.map(|n| format!(" --node {n}")).unwrap_or_default();
    let command = format!(
        "`cargo xtask hugepages --reserve {} --pagesize {}{node_arg}` (or `echo {} > {}/nr_hugepages`)",
        short_size(missing * page_size),
        short_size(page_size),
        total + missing,
        pool_dir(page_size, node).display()
    );
    HugememError::NotEnoughPages {
        page_size,
        node,
        needed,
        free,
        command,
    }
}

/// Maps `fd` as the options say, turning the kernel's refusals into typed errors.
fn map_fd(
    fd: BorrowedFd<'_>,
    len: u64,
    page_size: u64,
    opts: &MapOptions,
    name: &str,
    node: Option<u32>,
) -> Result<Mapped, HugememError> {
    let len_usize = usize::try_from(len).map_err(|_| HugememError::InvalidRequest {
        detail: format!("segment length {len} does not fit the address space"),
    })?;
    // With a node, populate only after the memory policy is set.
    let populate_now = opts.populate && node.is_none();
    let r = match opts.addr {
        None => Mapped::anywhere(fd, len_usize, populate_now).map_err(FixedError::Sys),
        Some(a) => Mapped::in_window(fd, a, len_usize, populate_now),
    };
    let r = r.and_then(|m| match node {
        None => Ok(m),
        Some(n) => match m.bind_to_node(n, opts.populate) {
            Ok(()) => Ok(m),
            Err(e) => Err(FixedError::Bind(n, e)),
        },
    });
    r.map_err(|e| match e {
        FixedError::OutsideWindow => HugememError::OutsideWindow {
            addr: opts.addr.unwrap_or(0),
            len: len_usize,
        },
        FixedError::Occupied => HugememError::AddressInUse {
            start: opts.addr.unwrap_or(0),
            end: opts.addr.unwrap_or(0) + len_usize,
            occupants: "another Segment of this process".into(),
        },
        FixedError::Sys(Errno::EXIST) => {
            let start = opts.addr.unwrap_or(0);
            let end = start + len_usize;
            let occ = std::fs::read_to_string("/proc/self/maps")
                .map(|m| maps_occupants(&m, start, end).join("; "))
                .unwrap_or_else(|e| format!("(cannot read /proc/self/maps: {e})"));
            HugememError::AddressInUse {
                start,
                end,
                occupants: if occ.is_empty() {
                    "an unknown mapping".into()
                } else {
                    occ
                },
            }
        }
        FixedError::Sys(Errno::NOMEM) if page_size > base_page_size() => {
            // The kernel could not reserve the hugepages (or a hugetlbfs size= limit).
            let dir = pool_dir(page_size, None);
            let free = read_counter(&dir.join("free_hugepages")).unwrap_or(0);
            let resv = read_counter(&dir.join("resv_hugepages")).unwrap_or(0);
            let total = read_counter(&dir.join("nr_hugepages")).unwrap_or(0);
            let (needed, free) = (len / page_size, free.saturating_sub(resv));
            if free >= needed {
                HugememError::KernelRefusedPages {
                    what: name.to_string(),
                    page_size,
                    needed,
                    free,
                }
            } else {
                not_enough(page_size, None, needed, free, total)
            }
        }
        FixedError::Bind(n, e)
            if page_size > base_page_size() && matches!(e, Errno::NOMEM | Errno::FAULT) =>
        {
            let nd = pool_dir(page_size, Some(n));
            let free = read_counter(&nd.join("free_hugepages")).unwrap_or(0);
            let total = read_counter(&nd.join("nr_hugepages")).unwrap_or(0);
            not_enough(page_size, Some(n), len / page_size, free, total)
        }
        FixedError::Bind(n, e) => HugememError::sys(
            format!("place {name} ({len} bytes) on NUMA node {n} (mbind, populate)"),
            e,
        ),
        FixedError::Sys(e) => HugememError::sys(format!("mmap {name} ({len} bytes)"), e),
    })
}

/// Removes a half-created file unless disarmed.
struct Unlinker<'a> {
    dirfd: BorrowedFd<'a>,
    name: &'a str,
    armed: bool,
}

impl Drop for Unlinker<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rustix::fs::unlinkat(self.dirfd, self.name, AtFlags::empty());
        }
    }
}

pub(crate) fn open_dir(dir: &Path) -> Result<OwnedFd, HugememError> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| HugememError::sys(format!("open directory {}", dir.display()), e))
}

/// Creates `<dir>/<prefix>map_<N>` (O_EXCL, mode 0600, no symlinks), sizes, maps and locks it.
fn create_file(
    dir: &Path,
    spec: &SegmentSpec<'_>,
    len: u64,
    page_size: u64,
    kind: BackingKind,
    node: Option<u32>,
) -> Result<Segment, HugememError> {
    let name = spec.file_name();
    let path = dir.join(&name);
    let dirfd = open_dir(dir)?;
    rustix::fs::flock(&dirfd, FlockOperation::LockShared)
        .map_err(|e| HugememError::sys(format!("flock directory {}", dir.display()), e))?;
    let fd = match rustix::fs::openat(
        &dirfd,
        name.as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => {
            let live = match rustix::fs::openat(
                &dirfd,
                name.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(f) => rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err(),
                Err(_) => true,
            };
            return Err(HugememError::SegmentExists { path, live });
        }
        Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) => {
            return Err(HugememError::NotWritable {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(HugememError::sys(format!("create {}", path.display()), e)),
    };
    let mut guard = Unlinker {
        dirfd: dirfd.as_fd(),
        name: &name,
        armed: true,
    };
    // Blocking: an attacher may hold LOCK_SH for a moment (it then sees size 0 and retries).
    rustix::fs::flock(&fd, FlockOperation::LockExclusive)
        .map_err(|e| HugememError::sys(format!("flock {}", path.display()), e))?;
    rustix::fs::ftruncate(&fd, len).map_err(|e| {
        HugememError::sys(format!("ftruncate {} to {len} bytes", path.display()), e)
    })?;
    if kind == BackingKind::Shm && spec.map.populate && node.is_none() {
        // Allocate now so a full tmpfs is a clean error here, not a SIGBUS later.
        rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len).map_err(
            |e| match e {
                Errno::NOSPC => HugememError::NotEnoughSpace {
                    dir: dir.to_path_buf(),
                    needed: len,
                    available: 0,
                },
                e => HugememError::sys(format!("fallocate {}", path.display()), e),
            },
        )?;
    }
    let map = map_fd(
        fd.as_fd(),
        len,
        page_size,
        &spec.map,
        &path.display().to_string(),
        node,
    )?;
    rustix::fs::flock(&fd, FlockOperation::LockShared)
        .map_err(|e| HugememError::sys(format!("flock {}", path.display()), e))?;
    guard.armed = false;
    drop(guard);
    drop(dirfd);
    Ok(Segment {
        map,
        fd,
        page_size,
        kind,
        path: Some(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `/proc/self/maps` of a test process (abridged).
    const MAPS: &str = "\
55d0c8a00000-55d0c8a3c000 r--p 00000000 fd:00 1318 /work/target/debug/deps/segments
7f2a40000000-7f2a40400000 rw-s 00000000 00:3a 2 /tmp/hugemem-test-1-fixed/fixed_map_0 (deleted)
7f2a40400000-7f2a44000000 ---p 00000000 00:00 0
7f2a44000000-7f2a44021000 rw-p 00000000 00:00 0
7ffd1c3e0000-7ffd1c401000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn occupants_name_every_overlapping_mapping() {
        let occ = maps_occupants(MAPS, 0x7f2a_403f_f000, 0x7f2a_4400_1000);
        assert_eq!(
            occ,
            vec![
                "0x7f2a40000000-0x7f2a40400000 rw-s /tmp/hugemem-test-1-fixed/fixed_map_0 (deleted)",
                "0x7f2a40400000-0x7f2a44000000 ---p [anonymous]",
                "0x7f2a44000000-0x7f2a44021000 rw-p [anonymous]",
            ]
        );
        assert!(maps_occupants(MAPS, 0x1000, 0x2000).is_empty());
        // Ends are exclusive.
        assert!(maps_occupants(MAPS, 0x7ffd_1c40_1000, 0x7ffd_1c50_0000).is_empty());
        let stack = maps_occupants(MAPS, 0x7ffd_1c40_0000, 0x7ffd_1c40_1000);
        assert_eq!(stack, vec!["0x7ffd1c3e0000-0x7ffd1c401000 rw-p [stack]"]);
    }

    #[test]
    fn kernel_page_size_of_the_right_mapping() {
        let smaps = "\
7f2a40000000-7f2a40400000 rw-s 00000000 00:3a 2 /tmp/h/fixed_map_0
Size:               4096 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
7f2a44000000-7f2a44021000 rw-p 00000000 00:00 0
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
";
        assert_eq!(
            parse_smaps_kernel_page_size(smaps, 0x7f2a_4000_0000),
            Some(2 << 20)
        );
        assert_eq!(
            parse_smaps_kernel_page_size(smaps, 0x7f2a_4400_0000),
            Some(4096)
        );
        assert_eq!(parse_smaps_kernel_page_size(smaps, 0x7f2a_4000_1000), None);
    }

    #[test]
    fn segment_names_and_prefixes() {
        assert_eq!(segment_file_name("rte", 3), "rtemap_3");
        assert_eq!(segment_index("rtemap_3", "rte"), Some(3));
        // Another prefix that shares the beginning is never matched.
        assert_eq!(segment_index("rte2map_3", "rte"), None);
        assert_eq!(segment_index("amap_1map_0", "a"), None);
        assert_eq!(segment_index("rtemap_", "rte"), None);
        assert_eq!(segment_index("rtemap_+3", "rte"), None);
        assert_eq!(segment_index("rtemap_3.tmp", "rte"), None);
        for bad in ["", "a/b", "..", "x y", &"p".repeat(65)] {
            let bad_ok = bad == "..";
            assert_eq!(check_prefix(bad).is_ok(), bad_ok, "{bad:?}");
        }
        let s = SegmentSpec {
            prefix: "p",
            index: 0,
            len: 3 << 20,
            pow2: true,
            map: MapOptions::default(),
        };
        assert_eq!(s.effective_len(2 << 20).unwrap(), 4 << 20);
        let s = SegmentSpec { len: 4096, ..s };
        assert_eq!(
            s.effective_len(1 << 30).unwrap(),
            1 << 30,
            "at least one page"
        );
        let s = SegmentSpec { len: 0, ..s };
        assert!(matches!(
            s.effective_len(4096),
            Err(HugememError::EmptySegment { .. })
        ));
    }
}
