//! [`Process`]: this process as a member of a group.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hugemem::{BackingKind, HugepageInfo, MapOptions, Segment, SegmentSpec, VaWindow};
use shmconfig::layout::{
    self, backing, group_flags, member_state, ConfigHeader, ConfigState, SegmentEntry, MAX_MEMBERS,
    MAX_SEGMENTS,
};
use shmconfig::{
    Liveness, MemberId, MemberState, Tables, Zone, ZoneError, ZoneInfo, ZoneRequest, Zones,
};

use crate::channel::{self, BroadcastReport, Channel, ChannelError, Message};
use crate::error::{ProcError, Result};
use crate::lcores::LcoreMap;
use crate::options::{Options, ProcType, DEFAULT_PREFIX};
use crate::rundir;
use crate::sys::{self, LockKind, SharedMap};

/// Where the primary asks to place the group's memory when `--base-virtaddr` is not given: high,
/// far from the heap, the stacks and the shared libraries.
pub const DEFAULT_BASE_VIRTADDR: u64 = 0x2000_0000_0000;
/// Byte of the lock file the primary holds; member slot `s` holds byte `1 + s`.
const PRIMARY_BYTE: u64 = 0;
const TABLE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The role this process plays in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Created the group.
    Primary,
    /// Attached to it.
    Secondary,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        })
    }
}

/// Something that happened to the group, as seen by this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member joined.
    MemberJoined {
        /// Its slot.
        member: MemberId,
        /// Its pid.
        pid: u32,
    },
    /// A member left cleanly.
    MemberLeft {
        /// Its slot.
        member: MemberId,
        /// Its pid.
        pid: u32,
    },
    /// A member died (its lifetime lock vanished) and its slot and lcores were freed.
    MemberDied {
        /// Its slot.
        member: MemberId,
        /// Its pid.
        pid: u32,
        /// Whether this process did the clean-up (exactly one member does).
        cleaned_here: bool,
        /// What the clean-up freed or reported (lcores, and what cleanup hooks said).
        report: Vec<String>,
    },
    /// The primary died without leaving cleanly. The memory stays mapped in this process; the
    /// group can no longer admit members. A new primary started now creates a new group.
    PrimaryDied {
        /// Its pid.
        pid: u32,
    },
    /// The primary left cleanly.
    PrimaryExited {
        /// Its pid.
        pid: u32,
    },
}

pub use shmconfig::hooks::CleanupHook;

/// Register a clean-up hook (see [`shmconfig::hooks`]; a hook registered twice runs once).
pub fn register_cleanup_hook(hook: CleanupHook) {
    shmconfig::hooks::register(hook);
}

thread_local! {
    static CURRENT_LCORE: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The group's memory as mapped in this process; zones keep it alive.
#[derive(Debug)]
struct Memory {
    // Field order is drop order: segments are unmapped before the window they sit in.
    segments: Vec<Segment>,
    _window: Option<VaWindow>,
    config: SharedMap,
    tables: Tables,
    seg_bases: Vec<(usize, usize)>,
}

/// Liveness from the kernel's locks: a member whose slot is in use is alive exactly while some
/// open file description holds its byte of the lock file.
#[derive(Debug)]
struct GroupLiveness {
    probe: File,
    mem: Arc<Memory>,
}

impl Liveness for GroupLiveness {
    fn member_state(&self, member: MemberId) -> MemberState {
        if member == MemberId::OUTSIDER {
            return MemberState::Alive;
        }
        let i = member.0 as usize;
        if i >= MAX_MEMBERS {
            return MemberState::Free;
        }
        let st = self.mem.tables.header().members[i]
            .state
            .load(Ordering::Acquire);
        if st == member_state::JOINING {
            // A joiner holds the table lock before it is a member: alive while it holds its
            // slot's byte (a waiter must not take the lock from it), free once it died.
            return match sys::ofd_is_locked(&self.probe, 1 + i as u64) {
                Ok(true) | Err(_) => MemberState::Alive,
                Ok(false) => MemberState::Free,
            };
        }
        if st != member_state::ALIVE {
            return MemberState::Free;
        }
        match sys::ofd_is_locked(&self.probe, 1 + i as u64) {
            Ok(true) | Err(_) => MemberState::Alive,
            Ok(false) => MemberState::Dead,
        }
    }

    /// The slot's generation, raised by each process that takes the slot (before it first takes
    /// the table lock, and before it marks the slot alive): a live member's stays what it was
    /// when it joined.
    fn incarnation(&self, member: MemberId) -> Option<u32> {
        let m = self
            .mem
            .tables
            .header()
            .members
            .get(usize::from(member.0))?;
        Some(m.generation.load(Ordering::Acquire)).filter(|&g| g != 0)
    }
}

/// What a member is made of; shared with the monitor thread.
#[derive(Debug)]
struct Shared {
    prefix: String,
    dir: PathBuf,
    role: Role,
    slot: MemberId,
    mem: Arc<Memory>,
    liveness: Arc<GroupLiveness>,
    lock_file: File,
    _config_file: Option<File>,
    config_path: Option<PathBuf>,
    lcores: Vec<u32>,
    lcore_map: Option<LcoreMap>,
    backing: BackingKind,
    page_size: u64,
    same_address: bool,
    in_memory: bool,
    notices: Vec<String>,
    stop: AtomicBool,
    primary_pid: u32,
    /// The primary's anchor (see [`crate::anchor`]); `None` in secondaries.
    anchor: Option<UnixListener>,
    /// How often the monitor thread looks at the other members (`--monitor-interval`).
    monitor_interval: Duration,
    clock: std::sync::OnceLock<Box<dyn tsc_hpet::Clock>>,
    clock_notice: Mutex<Option<String>>,
}

/// This process as a member (primary or secondary) of a group.
///
/// `Process` implements [`Zones`], so rings, mempools and hashes are created and found through it.
/// Dropping it leaves the group cleanly (a primary's files are removed).
///
/// ```no_run
/// use procctl::{Options, Process};
/// use shmconfig::{ZoneKind, ZoneRequest, Zones};
/// let (opts, _rest) = Options::parse_args(["--proc-type=auto", "--no-huge", "-m", "16"])?;
/// let p = Process::init(opts)?;
/// let z = match p.lookup("counters") {
///     Ok(z) => z,
///     Err(_) => p.reserve(&ZoneRequest::new("counters", 4096, ZoneKind::Memzone))?,
/// };
/// println!("{} sees {} at {:p}", p.role(), z.name(), z.as_ptr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Process {
    shared: Arc<Shared>,
    events: Mutex<Receiver<Event>>,
    monitor: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    channel: Arc<Channel>,
    receiver: Option<JoinHandle<()>>,
}

/// Files a starting primary created (segments, its configuration under its temporary and then
/// its published name): removed on drop unless the start succeeded (and emptied the list), so
/// that a start failing part-way leaves no segment holding hugepages and no half-made config.
#[derive(Default)]
struct StartGuard(Vec<PathBuf>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn same_inode(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `path` is still the file open as `fd` (not one created later under its name).
fn same_file(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> bool {
    match fd.try_clone_to_owned() {
        Ok(o) => same_inode(&File::from(o), path),
        Err(_) => false,
    }
}

fn pid_from_config(path: &Path) -> u32 {
    let Ok(mut f) = File::open(path) else {
        return 0;
    };
    let mut buf = vec![0u8; std::mem::offset_of!(ConfigHeader, primary_pid) + 4];
    if f.read_exact(&mut buf).is_err() || buf[..8] != layout::MAGIC {
        return 0;
    }
    let o = std::mem::offset_of!(ConfigHeader, primary_pid);
    u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"))
}

/// The election: open the lock file and try for the primary byte. Returns the lock file and
/// whether we hold the primary byte. Retries if the file was replaced under us.
fn open_lock(dir: &Path, create: bool) -> Result<Option<(File, bool)>> {
    let path = dir.join("lock");
    for _ in 0..100 {
        let f = match rundir::open_file(&path, create) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(ProcError::io("opening lock file", &path, e)),
        };
        let got = sys::ofd_try_lock(&f, PRIMARY_BYTE, LockKind::Write)
            .map_err(|e| ProcError::io("locking", &path, e))?;
        if same_inode(&f, &path) {
            return Ok(Some((f, got)));
        }
    }
    Err(ProcError::RuntimeDir {
        path: dir.into(),
        why: "the lock file keeps being replaced; is something deleting files in it?".into(),
    })
}

impl Process {
    /// Parse EAL-style arguments and join (or create) the group. Returns the process and the
    /// arguments after `--`.
    pub fn from_args<I, S>(args: I) -> Result<(Process, Vec<String>)>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (o, rest) = Options::parse_args(args)?;
        Ok((Self::init(o)?, rest))
    }

    /// Join the group named by `opts.file_prefix` as `opts.proc_type` asks.
    pub fn init(opts: Options) -> Result<Process> {
        opts.validate()?;
        if let Some(m) = &opts.lcores {
            m.check_cpus(sys::ncpus())?;
        }
        let dir = rundir::group_dir(opts.runtime_dir.as_deref(), &opts.file_prefix);
        let quiet = std::env::var_os("HUGESHARE_QUIET").is_some();
        // Bounded retries: a primary that dies during our attach sends `auto` back to the election.
        let mut last_err = None;
        for _ in 0..3 {
            let r = match opts.proc_type {
                ProcType::Primary => Self::init_primary(&opts, &dir),
                ProcType::Secondary => Self::init_secondary(&opts, &dir, None),
                ProcType::Auto => {
                    rundir::ensure_dir(&dir)?;
                    let (lock, got) = open_lock(&dir, true)?.expect("created");
                    if got {
                        Self::init_primary_locked(&opts, &dir, lock)
                    } else {
                        Self::init_secondary(&opts, &dir, Some(lock))
                    }
                }
            };
            match r {
                Err(ProcError::NoPrimary { .. }) if opts.proc_type == ProcType::Auto => {
                    last_err = Some(r.unwrap_err());
                    continue;
                }
                Ok(p) => {
                    if !quiet {
                        eprintln!("{}", p.banner());
                    }
                    return Ok(p);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("loop ran"))
    }

    fn init_primary(opts: &Options, dir: &Path) -> Result<Process> {
        rundir::ensure_dir(dir)?;
        let (lock, got) = open_lock(dir, true)?.expect("created");
        if !got {
            return Err(ProcError::PrimaryExists {
                prefix: opts.file_prefix.clone(),
                pid: pid_from_config(&dir.join("config")),
                lock: dir.join("lock"),
            });
        }
        Self::init_primary_locked(opts, dir, lock)
    }

    fn init_primary_locked(opts: &Options, dir: &Path, lock: File) -> Result<Process> {
        let prefix = opts.file_prefix.clone();
        // Holding the lock file's primary byte is not enough if the runtime directory was
        // deleted under a live primary (its lock file went with it): its anchor says so.
        let anchor = match crate::anchor::hold(dir) {
            crate::anchor::Hold::Held(l) => Some(l),
            crate::anchor::Hold::Taken(pid) => {
                return Err(ProcError::RuntimeDirGone {
                    prefix,
                    pid,
                    dir: dir.into(),
                })
            }
            crate::anchor::Hold::Unavailable => None,
        };
        // Until the group is up, a failure removes the files this start created (its segments
        // would otherwise keep their hugepages until the next primary of this prefix).
        let mut created = StartGuard::default();
        let mut notices = Vec::new();
        // We hold the primary byte: whatever is here was left by a dead primary of this prefix.
        for name in ["config", "socket"] {
            let p = dir.join(name);
            if std::fs::symlink_metadata(&p).is_ok() {
                std::fs::remove_file(&p).map_err(|e| ProcError::io("removing stale", &p, e))?;
            }
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("config.tmp.") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Socket files of a dead group's members that died by a signal with it (those an
        // orphaned member still holds stay: connecting to them is not refused).
        channel::remove_stale_sockets(dir);
        // Memory: what, where, how much.
        let info = HugepageInfo::discover()?;
        let page_hint = None;
        let total_mb = match (&opts.memory_mb, &opts.socket_mem) {
            (Some(m), _) => *m,
            (None, Some(v)) => v.iter().sum(),
            (None, None) => crate::options::DEFAULT_MEMORY_MB,
        };
        if let Some(v) = &opts.socket_mem {
            let nodes = count_nodes();
            if v.len() > nodes {
                return Err(crate::OptionsError::Invalid {
                    option: "--socket-mem",
                    value: v.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                    why: format!(
                        "{} values given but this machine has {nodes} NUMA node(s)",
                        v.len()
                    ),
                }
                .into());
            }
            if total_mb == 0 {
                return Err(crate::OptionsError::Invalid {
                    option: "--socket-mem",
                    value: "0".into(),
                    why: "a primary needs some memory on at least one node".into(),
                }
                .into());
            }
        }
        let per_node: Option<Vec<u64>> = opts
            .socket_mem
            .as_ref()
            .map(|v| v.iter().map(|m| m << 20).collect());
        let req = hugemem::BackingRequest {
            no_huge: opts.no_huge,
            in_memory: opts.in_memory,
            huge_dir: opts.huge_dir.as_deref(),
            page_size: page_hint,
            bytes: total_mb << 20,
            per_node: per_node.as_deref(),
        };
        let mut choice = hugemem::choose_backing(&info, &req)?;
        // Secondaries open the segment files by the paths recorded in the configuration, from
        // their own working directories, and refuse relative ones or ones with `..`: record
        // the directory's canonical path (`--huge-dir` may be given relative).
        if let hugemem::Backing::Hugetlbfs { dir, .. } | hugemem::Backing::Shm { dir } =
            &mut choice.backing
        {
            *dir = std::fs::canonicalize(&*dir)
                .map_err(|e| ProcError::io("resolving the segment directory", dir.clone(), e))?;
        }
        if let Some(n) = &choice.notice {
            notices.push(n.clone());
        }
        let source = hugemem::source_for(&choice.backing);
        let page_size = source.page_size();
        let seg_dir: Option<PathBuf> = match &choice.backing {
            hugemem::Backing::Hugetlbfs { dir, .. } | hugemem::Backing::Shm { dir } => {
                Some(dir.clone())
            }
            hugemem::Backing::Memfd { .. } => None,
        };
        if let Some(d) = &seg_dir {
            let removed = hugemem::remove_stale(d, &prefix)?;
            if !removed.is_empty() {
                notices.push(format!(
                    "removed {} stale segment file(s) of prefix {prefix:?} left by a dead primary in {}",
                    removed.len(),
                    d.display()
                ));
            }
        }
        // Segments: one per node asked with --socket-mem, otherwise one.
        let sizes: Vec<(u32, u64)> = match &per_node {
            Some(v) => v
                .iter()
                .enumerate()
                .filter(|(_, &b)| b > 0)
                .map(|(n, &b)| (n as u32, b))
                .collect(),
            None => vec![(u32::MAX, total_mb << 20)],
        };
        let sizes: Vec<(u32, u64)> = sizes
            .into_iter()
            .map(|(n, b)| (n, b.div_ceil(page_size) * page_size))
            .collect();
        if sizes.len() > MAX_SEGMENTS {
            return Err(ProcError::Full(format!(
                "{} segments asked, at most {MAX_SEGMENTS}",
                sizes.len()
            )));
        }
        let window_len: u64 = sizes.iter().map(|s| s.1).sum();
        let hint = opts.base_virtaddr.unwrap_or(DEFAULT_BASE_VIRTADDR) as usize;
        let window = VaWindow::reserve_aligned(
            window_len as usize,
            Some(hint),
            page_size.max(4096) as usize,
        )?;
        if window.base() != hint && opts.base_virtaddr.is_some() {
            notices.push(format!(
                "--base-virtaddr {hint:#x} was not free here; the group's memory is at {:#x} instead (shared structures use offsets, so nothing breaks; raw pointers stored in shared memory would)",
                window.base()
            ));
        }
        // Pick file indices that no live file of this prefix uses (an orphaned secondary of a dead
        // primary may still hold old ones).
        let mut next_index = 0u32;
        if let Some(d) = &seg_dir {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if let Some(i) =
                        hugemem::segment_index(&e.file_name().to_string_lossy(), &prefix)
                    {
                        next_index = next_index.max(i + 1);
                    }
                }
            }
        }
        let mut segments = Vec::new();
        let mut seg_bases = Vec::new();
        let mut entries = Vec::new();
        let mut off = 0u64;
        for (i, &(node, len)) in sizes.iter().enumerate() {
            let addr = window.base() + off as usize;
            let spec = SegmentSpec {
                prefix: &prefix,
                index: next_index + i as u32,
                len,
                pow2: false,
                map: MapOptions {
                    populate: !opts.lazy_pages,
                    addr: Some(addr),
                },
            };
            let seg = if node == u32::MAX {
                source.create(&spec)?
            } else {
                source.create_on_node(&spec, node)?
            };
            if let Some(p) = seg.path() {
                created.0.push(p.to_path_buf());
            }
            seg_bases.push((seg.as_ptr() as usize, seg.len()));
            entries.push((
                node,
                next_index + i as u32,
                off,
                seg.len() as u64,
                seg.path().map(Path::to_path_buf),
            ));
            off += seg.len() as u64;
            segments.push(seg);
        }
        // The configuration: written under a temporary name, locked, then renamed into place.
        let max_zones = opts.max_zones.unwrap_or(layout::DEFAULT_MAX_ZONES);
        let cfg_len = layout::config_len(max_zones);
        let (cfg_file, tmp_path) = if opts.in_memory {
            (
                sys::memfd("hugeshare-config")
                    .map_err(|e| ProcError::io("creating config memfd", dir, e))?,
                None,
            )
        } else {
            let tmp = dir.join(format!("config.tmp.{}", std::process::id()));
            let f = rundir::create_new(&tmp).map_err(|e| ProcError::io("creating", &tmp, e))?;
            created.0.push(tmp.clone());
            (f, Some(tmp))
        };
        cfg_file
            .set_len(cfg_len as u64)
            .map_err(|e| ProcError::io("sizing config", dir, e))?;
        sys::ofd_try_lock(&cfg_file, 0, LockKind::Write)
            .map_err(|e| ProcError::io("locking config", dir, e))?;
        let map = SharedMap::new(cfg_file.as_raw_fd(), cfg_len)
            .map_err(|e| ProcError::io("mapping config", dir, e))?;
        let generation = now_ns() ^ (u64::from(std::process::id()) << 32);
        {
            use std::mem::offset_of as off_of;
            type H = ConfigHeader;
            map.write_at(off_of!(H, magic), &layout::MAGIC);
            map.write_at(
                off_of!(H, layout_version),
                &layout::LAYOUT_VERSION.to_ne_bytes(),
            );
            map.write_at(
                off_of!(H, header_size),
                &(std::mem::size_of::<H>() as u32).to_ne_bytes(),
            );
            map.write_at(off_of!(H, fingerprint), &layout::FINGERPRINT.to_ne_bytes());
            let bv: [u8; 32] = layout::to_fixed(layout::BUILD_VERSION).expect("short version");
            map.write_at(off_of!(H, build_version), &bv);
            map.write_at(
                off_of!(H, state),
                &(ConfigState::Creating as u32).to_ne_bytes(),
            );
            let mut flags = 0u32;
            if matches!(choice.backing, hugemem::Backing::Shm { .. }) || opts.no_huge {
                flags |= group_flags::NO_HUGE;
            }
            if opts.in_memory {
                flags |= group_flags::IN_MEMORY;
            }
            if opts.lazy_pages {
                flags |= group_flags::LAZY;
            }
            map.write_at(off_of!(H, flags), &flags.to_ne_bytes());
            map.write_at(off_of!(H, generation), &generation.to_ne_bytes());
            map.write_at(off_of!(H, primary_pid), &std::process::id().to_ne_bytes());
            map.write_at(off_of!(H, max_zones), &max_zones.to_ne_bytes());
            map.write_at(
                off_of!(H, zones_off),
                &(layout::zones_off() as u64).to_ne_bytes(),
            );
            map.write_at(off_of!(H, total_len), &(cfg_len as u64).to_ne_bytes());
            map.write_at(off_of!(H, mem_limit), &(total_mb << 20).to_ne_bytes());
            map.write_at(
                off_of!(H, window_base),
                &(window.base() as u64).to_ne_bytes(),
            );
            map.write_at(off_of!(H, window_len), &window_len.to_ne_bytes());
            let pf: [u8; layout::NAME_LEN] = layout::to_fixed(&prefix).expect("prefix checked");
            map.write_at(off_of!(H, prefix), &pf);
            if let Some(d) = &seg_dir {
                let sd: [u8; layout::PATH_LEN] = layout::to_fixed(&d.to_string_lossy())
                    .ok_or_else(|| ProcError::RuntimeDir {
                        path: d.clone(),
                        why: "path is too long".into(),
                    })?;
                map.write_at(off_of!(H, seg_dir), &sd);
            }
            let bk = match choice.backing {
                hugemem::Backing::Hugetlbfs { .. } => backing::HUGETLBFS,
                hugemem::Backing::Shm { .. } => backing::SHM,
                hugemem::Backing::Memfd { .. } => backing::MEMFD,
            };
            for (i, (node, index, woff, len, path)) in entries.iter().enumerate() {
                let base = off_of!(H, segments) + i * std::mem::size_of::<SegmentEntry>();
                type S = SegmentEntry;
                map.write_at(base + off_of!(S, used), &1u32.to_ne_bytes());
                map.write_at(base + off_of!(S, backing), &bk.to_ne_bytes());
                map.write_at(base + off_of!(S, page_size), &page_size.to_ne_bytes());
                map.write_at(base + off_of!(S, len), &len.to_ne_bytes());
                map.write_at(base + off_of!(S, window_offset), &woff.to_ne_bytes());
                map.write_at(base + off_of!(S, node), &node.to_ne_bytes());
                map.write_at(base + off_of!(S, file_index), &index.to_ne_bytes());
                if let Some(p) = path {
                    let pb: [u8; layout::PATH_LEN] = layout::to_fixed(&p.to_string_lossy())
                        .ok_or_else(|| ProcError::RuntimeDir {
                            path: p.clone(),
                            why: "path is too long".into(),
                        })?;
                    map.write_at(base + off_of!(S, path), &pb);
                }
            }
            map.write_at(
                off_of!(H, n_segments),
                &(entries.len() as u32).to_ne_bytes(),
            );
        }
        let tables = sys::tables_over(&map, max_zones)?;
        let config_path = if let Some(tmp) = &tmp_path {
            let final_path = dir.join("config");
            std::fs::rename(tmp, &final_path)
                .map_err(|e| ProcError::io("publishing config", &final_path, e))?;
            // Renamed: the guard now removes the published name (the temporary one is gone).
            created.0.retain(|p| p != tmp);
            created.0.push(final_path.clone());
            Some(final_path)
        } else {
            None
        };
        let mem = Arc::new(Memory {
            segments,
            _window: Some(window),
            config: map,
            tables,
            seg_bases,
        });
        let backing_kind = mem
            .segments
            .first()
            .map(|s| s.kind())
            .unwrap_or(BackingKind::Shm);
        let shared = Self::join(JoinArgs {
            opts,
            dir,
            lock,
            mem,
            role: Role::Primary,
            config_file: Some(cfg_file),
            config_path,
            backing: backing_kind,
            page_size,
            same_address: true,
            notices,
            anchor,
        })?;
        shared
            .mem
            .tables
            .header()
            .state
            .store(ConfigState::Ready as u32, Ordering::Release);
        // The group's clock is chosen in the background: calibrating the TSC takes ~75 ms where
        // CPUID does not give its frequency, and nothing needs the clock to join the group.
        // `Process::clock` waits for the record.
        let s2 = shared.clone();
        let force = opts.clock;
        std::thread::Builder::new()
            .name("hugeshare-clock".into())
            .spawn(move || choose_group_clock(&s2, force))
            .map_err(|e| ProcError::io("spawning the clock thread", PathBuf::new(), e))?;
        let mut p = Self::start(shared)?;
        if opts.in_memory {
            p.server = Some(start_server(p.shared.clone())?);
        }
        created.0.clear();
        Ok(p)
    }

    fn init_secondary(opts: &Options, dir: &Path, lock: Option<File>) -> Result<Process> {
        let prefix = &opts.file_prefix;
        let no_primary = |why: String| match crate::anchor::holder(dir) {
            // The directory (and its lock file) went away under a live primary.
            Some(pid) => ProcError::RuntimeDirGone {
                prefix: prefix.clone(),
                pid,
                dir: dir.into(),
            },
            None => ProcError::NoPrimary {
                prefix: prefix.clone(),
                why,
            },
        };
        let lock = match lock {
            Some(l) => l,
            None => {
                if !dir.exists() {
                    return Err(no_primary(format!("{} does not exist", dir.display())));
                }
                match open_lock(dir, false)? {
                    None => return Err(no_primary(format!("{} has no lock file", dir.display()))),
                    Some((f, got)) => {
                        if got {
                            // We got the primary byte: nobody holds it. Give it back.
                            sys::ofd_unlock(&f, PRIMARY_BYTE)
                                .map_err(|e| ProcError::io("unlocking", dir.join("lock"), e))?;
                            return Err(no_primary(format!(
                                "the primary's lock in {} is free: a primary ran here and is gone",
                                dir.join("lock").display()
                            )));
                        }
                        f
                    }
                }
            }
        };
        let probe = rundir::open_file(&dir.join("lock"), false)
            .map_err(|e| ProcError::io("opening", dir.join("lock"), e))?;
        let start = Instant::now();
        let deadline = start + opts.attach_timeout;
        let cfg_path = dir.join("config");
        let mut waiting_for = String::from("its configuration to appear");
        let (cfg_file, map, config_path, via_socket) = loop {
            if !sys::ofd_is_locked(&probe, PRIMARY_BYTE)
                .map_err(|e| ProcError::io("probing", dir.join("lock"), e))?
            {
                return Err(no_primary(
                    "its primary died while this process was attaching".into(),
                ));
            }
            if let Ok(f) = rundir::open_file(&cfg_path, false) {
                let locked = sys::ofd_is_locked(&f, 0).unwrap_or(false);
                let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
                if locked && len >= std::mem::size_of::<ConfigHeader>() {
                    let map = SharedMap::new(f.as_raw_fd(), len)
                        .map_err(|e| ProcError::io("mapping", &cfg_path, e))?;
                    layout::check_header_bytes(
                        &map.copy_prefix(64),
                        &cfg_path.display().to_string(),
                    )?;
                    let st = Self::header_state(&map);
                    if st == Some(ConfigState::Ready) {
                        break (f, map, Some(cfg_path.clone()), None);
                    }
                    waiting_for =
                        format!("{} to be marked ready (state {st:?})", cfg_path.display());
                } else {
                    waiting_for =
                        format!("{} to be published by the live primary", cfg_path.display());
                }
            } else if let Ok(sock) = UnixStream::connect(dir.join("socket")) {
                let (f, map, segs) = fetch_in_memory(&sock, dir)?;
                layout::check_header_bytes(&map.copy_prefix(64), "the in-memory configuration")?;
                if Self::header_state(&map) == Some(ConfigState::Ready) {
                    break (f, map, None, Some(segs));
                }
                waiting_for = "the in-memory group to be ready".into();
            }
            if Instant::now() >= deadline {
                return Err(ProcError::AttachTimeout {
                    prefix: prefix.clone(),
                    waited_ms: start.elapsed().as_millis(),
                    why: format!("still waiting for {waiting_for}"),
                });
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let file_label = config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "in-memory configuration".into());
        let corrupt = |why: String| ProcError::Corrupt {
            file: file_label.clone(),
            why,
        };
        // Every value used below comes from one copy of the header, checked before any of it is
        // used: a configuration damaged or edited under a live group is refused, naming the
        // field, and cannot change between the check and the use.
        let g = shmconfig::validate::read_group_memory(
            &map.copy_prefix(std::mem::size_of::<ConfigHeader>()),
            map.len(),
            prefix,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        let tables = sys::tables_over(&map, g.max_zones).map_err(|e| corrupt(e.to_string()))?;
        let window_len = g.window_len as usize;
        let want_base = g.window_base as usize;
        if std::env::var_os("HUGESHARE_TEST_TAKE_WINDOW").is_some() {
            // Test hook: make the primary's range unavailable here, as another library's mapping
            // would, to exercise mapping the group elsewhere.
            sys::occupy_forever(want_base, window_len);
        }
        // Aligned for the group's pages (segments are mapped at fixed addresses inside).
        let align = (g.page_size() as usize).max(1 << 21);
        let window = VaWindow::reserve_aligned(window_len, Some(want_base), align)?;
        let same_address = window.base() == want_base;
        // `auto` became a secondary: the options that would have set up the group's memory
        // were not used (an explicit secondary is refused them when its options are checked).
        let group_clock =
            tsc_hpet::ClockKind::from_u32(tables.header().clock.kind.load(Ordering::Acquire));
        let mut notices = ignored_option_notices(opts, &g, group_clock);
        if !same_address {
            notices.push(format!(
                "the primary's address range {want_base:#x}..{:#x} is taken in this process; mapped the group at {:#x} instead (shared structures use offsets, so they work; raw pointers stored in shared memory would not)",
                want_base + window_len,
                window.base()
            ));
        }
        let mut segments = Vec::new();
        let mut seg_bases = Vec::new();
        let mut fds = via_socket.unwrap_or_default().into_iter();
        for e in &g.segments {
            let i = e.index;
            let addr = window.base() + e.window_offset as usize;
            let mo = MapOptions {
                populate: false,
                addr: Some(addr),
            };
            let seg = match &e.path {
                None => {
                    let fd = fds.next().ok_or_else(|| {
                        corrupt(format!("no descriptor was passed for segment {i}"))
                    })?;
                    let probe = sys::probe_fd(fd.as_fd()).map_err(|err| {
                        ProcError::io("probing a segment descriptor from", dir.join("socket"), err)
                    })?;
                    check_segment_file(e, &probe, "the descriptor the primary passed")
                        .map_err(&corrupt)?;
                    Segment::open_fd(fd, &mo)?
                }
                Some(path) => {
                    // Looked at without being opened for reading or writing: a path naming
                    // anything but a segment of this group is refused before it is mapped.
                    let probe = sys::probe_path(path)
                        .map_err(|err| ProcError::io("looking at segment file", path, err))?;
                    let what = format!("{}", path.display());
                    check_segment_file(e, &probe, &what).map_err(&corrupt)?;
                    let seg = Segment::open_path(path, &mo)?;
                    let now = sys::probe_fd(seg.fd())
                        .map_err(|err| ProcError::io("looking at segment file", path, err))?;
                    if (now.dev, now.ino) != (probe.dev, probe.ino) {
                        return Err(corrupt(format!(
                            "segments[{i}].path {what} was replaced by another file while this process attached"
                        )));
                    }
                    seg
                }
            };
            if seg.len() as u64 != e.len {
                return Err(corrupt(format!(
                    "segment {i} is {} bytes, the table says {} (segments[{i}].len)",
                    seg.len(),
                    e.len
                )));
            }
            seg_bases.push((seg.as_ptr() as usize, seg.len()));
            segments.push(seg);
        }
        let page_size = g.page_size();
        let backing_kind = segments
            .first()
            .map(|s| s.kind())
            .unwrap_or(BackingKind::Shm);
        let mem = Arc::new(Memory {
            segments,
            _window: Some(window),
            config: map,
            tables,
            seg_bases,
        });
        let shared = Self::join(JoinArgs {
            opts,
            dir,
            lock,
            mem,
            role: Role::Secondary,
            config_file: Some(cfg_file),
            config_path,
            backing: backing_kind,
            page_size,
            same_address,
            notices,
            anchor: None,
        })?;
        let _ = probe;
        Self::start(shared)
    }

    fn header_state(map: &SharedMap) -> Option<ConfigState> {
        let o = std::mem::offset_of!(ConfigHeader, state);
        let b = map.copy_prefix(o + 4);
        ConfigState::from_u32(u32::from_ne_bytes(b[o..o + 4].try_into().ok()?))
    }

    /// Take a member slot and lcores; common to both roles.
    fn join(a: JoinArgs<'_>) -> Result<Arc<Shared>> {
        let probe = rundir::open_file(&a.dir.join("lock"), false)
            .map_err(|e| ProcError::io("opening", a.dir.join("lock"), e))?;
        let liveness = Arc::new(GroupLiveness {
            probe,
            mem: a.mem.clone(),
        });
        let tables = a.mem.tables;
        let h = tables.header();
        // A slot is ours once we hold its byte; a previous occupant that did not leave is dead,
        // and holding the byte makes us its one cleaner.
        let mut slot = None;
        let first = if a.role == Role::Primary { 0 } else { 1 };
        for s in first..MAX_MEMBERS {
            if sys::ofd_try_lock(&a.lock, 1 + s as u64, LockKind::Write)
                .map_err(|e| ProcError::io("locking", a.dir.join("lock"), e))?
            {
                if h.members[s].state.load(Ordering::Acquire) == member_state::ALIVE {
                    // Its occupant died and no monitor has cleaned up yet: leave the slot to the
                    // monitors (they run the clean-up hooks) and take another.
                    let _ = sys::ofd_unlock(&a.lock, 1 + s as u64);
                    continue;
                }
                // Joining: alive to a waiter for the table lock while this process holds the
                // byte (see `GroupLiveness::member_state`).
                h.members[s]
                    .state
                    .store(member_state::JOINING, Ordering::Release);
                slot = Some(MemberId(s as u16));
                break;
            }
        }
        let slot = slot
            .ok_or_else(|| ProcError::Full(format!("all {MAX_MEMBERS} member slots are in use")))?;
        let m = &h.members[slot.0 as usize];
        m.pid.store(std::process::id(), Ordering::Relaxed);
        m.role.store(
            if a.role == Role::Primary { 1 } else { 2 },
            Ordering::Relaxed,
        );
        m.joined_ns.store(now_ns(), Ordering::Relaxed);
        m.exit_kind.store(0, Ordering::Relaxed);
        tables.set_member_name(slot, &comm());
        for w in &m.lcores {
            w.store(0, Ordering::Relaxed);
        }
        // A new incarnation of the slot, before the table lock is first taken: the lock word
        // records it, and a waiter takes a word of the slot's previous incarnation (a process
        // that died holding the lock) for a dead holder's, not for ours.
        m.generation.fetch_add(1, Ordering::AcqRel);
        // lcores
        // A join that fails from here on gives the slot back: free, and its byte released.
        let give_back = || {
            m.state.store(member_state::FREE, Ordering::Release);
            let _ = sys::ofd_unlock(&a.lock, 1 + slot.0 as u64);
        };
        let guard = match tables.lock(slot, &*liveness, TABLE_LOCK_TIMEOUT) {
            Ok(g) => g,
            Err(e) => {
                give_back();
                return Err(e.into());
            }
        };
        let wanted: Vec<u32> = match &a.opts.lcores {
            Some(map) => map.lcores(),
            None => {
                let free = (0..layout::MAX_LCORES as u32).find(|&l| {
                    let owner = h.lcores[l as usize].load(Ordering::Acquire);
                    owner == 0
                        || liveness.member_state(MemberId((owner - 1) as u16)) != MemberState::Alive
                });
                let Some(free) = free else {
                    drop(guard);
                    give_back();
                    return Err(ProcError::Full(
                        "every lcore is owned by a live member".into(),
                    ));
                };
                vec![free]
            }
        };
        if let Err((lcore, owner)) = tables.claim_lcores(&guard, slot, &wanted, &*liveness) {
            let om = &h.members[owner.0 as usize];
            let suggest = (0..layout::MAX_LCORES as u32)
                .find(|&l| h.lcores[l as usize].load(Ordering::Acquire) == 0)
                .unwrap_or(0);
            let err = ProcError::LcoreTaken {
                lcore,
                member: owner.0,
                pid: om.pid.load(Ordering::Relaxed),
                name: tables.member_name(owner),
                suggest,
            };
            drop(guard);
            give_back();
            return Err(err);
        }
        m.state.store(member_state::ALIVE, Ordering::Release);
        drop(guard);
        let primary_pid = h.primary_pid.load(Ordering::Relaxed);
        let shared = Arc::new(Shared {
            prefix: a.opts.file_prefix.clone(),
            dir: a.dir.to_path_buf(),
            role: a.role,
            slot,
            mem: a.mem,
            liveness,
            lock_file: a.lock,
            _config_file: a.config_file,
            config_path: a.config_path,
            lcores: wanted,
            lcore_map: a.opts.lcores.clone(),
            backing: a.backing,
            page_size: a.page_size,
            same_address: a.same_address,
            // The group's state, as its primary set it up (a secondary's own --in-memory, if
            // `auto` had one, was not used).
            in_memory: h.flags & group_flags::IN_MEMORY != 0,
            notices: a.notices,
            stop: AtomicBool::new(false),
            primary_pid,
            anchor: a.anchor,
            monitor_interval: a.opts.monitor_interval,
            clock: std::sync::OnceLock::new(),
            clock_notice: Mutex::new(None),
        });
        // The main thread runs as the first lcore.
        let main = shared.lcores[0];
        if let Some(cpus) = shared.lcore_map.as_ref().and_then(|m| m.cpus_of(main)) {
            let _ = sys::set_affinity(cpus);
        }
        CURRENT_LCORE.with(|c| c.set(Some(main)));
        Ok(shared)
    }

    fn start(shared: Arc<Shared>) -> Result<Process> {
        let channel = Channel::bind(&shared.dir, shared.slot).map_err(|e| {
            ProcError::io(
                "binding the member socket",
                channel::socket_path(&shared.dir, shared.slot),
                e,
            )
        })?;
        let c2 = channel.clone();
        let receiver = std::thread::Builder::new()
            .name("hugeshare-channel".into())
            .spawn(move || c2.run())
            .map_err(|e| ProcError::io("spawning the channel thread", PathBuf::new(), e))?;
        let (tx, rx) = mpsc::channel();
        let interval = shared.monitor_interval;
        let s2 = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("hugeshare-monitor".into())
            .spawn(move || monitor_loop(s2, tx, interval))
            .map_err(|e| ProcError::io("spawning the monitor thread", PathBuf::new(), e))?;
        Ok(Process {
            shared,
            events: Mutex::new(rx),
            monitor: Some(monitor),
            server: None,
            channel,
            receiver: Some(receiver),
        })
    }

    /// This process's role.
    pub fn role(&self) -> Role {
        self.shared.role
    }
    /// The group's prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }
    /// The group's runtime directory.
    pub fn runtime_dir(&self) -> &Path {
        &self.shared.dir
    }
    /// The configuration file (`None` with `--in-memory`).
    pub fn config_path(&self) -> Option<&Path> {
        self.shared.config_path.as_deref()
    }
    /// The lcores this process owns; the first is the main thread's.
    pub fn lcores(&self) -> &[u32] {
        &self.shared.lcores
    }
    /// What backs the group's memory here.
    pub fn backing(&self) -> BackingKind {
        self.shared.backing
    }
    /// The page size of the group's memory.
    pub fn page_size(&self) -> u64 {
        self.shared.page_size
    }
    /// Whether the memory is mapped at the primary's addresses in this process.
    pub fn same_address(&self) -> bool {
        self.shared.same_address
    }
    /// Messages worth showing the user (fallbacks, address changes, stale files removed).
    pub fn notices(&self) -> &[String] {
        &self.shared.notices
    }
    /// Whether the group keeps nothing on disk (`--in-memory`).
    pub fn in_memory(&self) -> bool {
        self.shared.in_memory
    }
    /// The primary's pid.
    pub fn primary_pid(&self) -> u32 {
        self.shared.primary_pid
    }
    /// A number unique to the primary's run.
    pub fn generation(&self) -> u64 {
        self.shared.mem.tables.header().generation
    }
    /// The paths of the segment files (empty with `--in-memory`).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.shared
            .mem
            .segments
            .iter()
            .filter_map(|s| s.path().map(Path::to_path_buf))
            .collect()
    }
    /// The shared tables, for inspection tools.
    pub fn tables(&self) -> &Tables {
        &self.shared.mem.tables
    }
    /// Whether the primary still holds its lock.
    pub fn primary_alive(&self) -> bool {
        sys::ofd_is_locked(&self.shared.liveness.probe, PRIMARY_BYTE).unwrap_or(true)
            || self.shared.role == Role::Primary
    }

    /// One line saying who we are (printed at start unless `HUGESHARE_QUIET` is set).
    pub fn banner(&self) -> String {
        let s = &self.shared;
        let dflt = if s.prefix == DEFAULT_PREFIX {
            " (the default prefix; --file-prefix picks another group)"
        } else {
            ""
        };
        let mut b = format!(
            "hugeshare: {} of group {:?}{dflt}, member {}, lcores {:?}, {} memory with {} KiB pages, runtime dir {}",
            s.role,
            s.prefix,
            s.slot.0,
            s.lcores,
            s.backing,
            s.page_size / 1024,
            s.dir.display()
        );
        for n in &s.notices {
            b.push_str("\nhugeshare: ");
            b.push_str(n);
        }
        b
    }

    /// Wait up to `timeout` for the next event.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let rx = self.events.lock().unwrap_or_else(|e| e.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_event(&self) -> Option<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_recv()
            .ok()
    }

    /// The group's clock: the one the primary chose and recorded (kind and frequency), so that
    /// every member counts time the same way. A secondary never recalibrates; if it cannot open
    /// the recorded source (an HPET only the primary may map, say) it falls back as
    /// [`tsc_hpet::from_record`] documents, and [`Process::clock_notice`] says so. Waits (at most
    /// `timeout`) while a new primary is still choosing.
    pub fn clock(&self, timeout: Duration) -> Result<&dyn tsc_hpet::Clock> {
        let s = &self.shared;
        if let Some(c) = s.clock.get() {
            return Ok(c.as_ref());
        }
        let h = s.mem.tables.header();
        let deadline = Instant::now() + timeout;
        loop {
            let kind = h.clock.kind.load(Ordering::Acquire);
            if kind != 0 {
                if s.role == Role::Primary {
                    // The clock thread stores the clock right after the record.
                    if let Some(c) = s.clock.get() {
                        return Ok(c.as_ref());
                    }
                } else {
                    let rec = self.clock_record().ok_or_else(|| ProcError::Corrupt {
                        file: "the group's clock record".into(),
                        why: format!(
                            "kind {kind} with frequency {} is not a valid record",
                            h.clock.hz.load(Ordering::Relaxed)
                        ),
                    })?;
                    let (clock, notice) = tsc_hpet::from_record(&rec);
                    h.members[s.slot.0 as usize]
                        .clock_kind
                        .store(clock.kind() as u32, Ordering::Release);
                    *s.clock_notice.lock().unwrap_or_else(|e| e.into_inner()) = notice;
                    let _ = s.clock.set(clock);
                    return Ok(s.clock.get().expect("just set").as_ref());
                }
            }
            if Instant::now() > deadline {
                return Err(ProcError::AttachTimeout {
                    prefix: s.prefix.clone(),
                    waited_ms: timeout.as_millis(),
                    why: "the primary has not recorded the group's clock yet".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The group's clock record, once the primary has written it.
    pub fn clock_record(&self) -> Option<tsc_hpet::ClockRecord> {
        let h = self.shared.mem.tables.header();
        let kind = h.clock.kind.load(Ordering::Acquire);
        (kind != 0)
            .then(|| {
                tsc_hpet::ClockRecord::from_raw(
                    kind,
                    h.clock.hz.load(Ordering::Relaxed),
                    h.clock.source.load(Ordering::Relaxed),
                )
                .ok()
            })
            .flatten()
    }

    /// Why this member uses another clock than the recorded one, if it does.
    pub fn clock_notice(&self) -> Option<String> {
        self.shared
            .clock_notice
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `m` is another member of the group that is alive (a possible message peer).
    fn is_live_peer(&self, m: MemberId) -> bool {
        m != self.shared.slot && self.shared.liveness.member_state(m) == MemberState::Alive
    }

    /// Send a named message (payload at most [`channel::MAX_PAYLOAD`] bytes, at most
    /// [`channel::MAX_MSG_FDS`] descriptors) to one member. Never blocks.
    pub fn send(
        &self,
        to: MemberId,
        name: &str,
        payload: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        if !self.is_live_peer(to) {
            return Err(ChannelError::NoSuchMember(to));
        }
        self.channel.send(to, name, payload, fds)
    }

    /// Send a named message to every other live member. Never blocks; the report says who got
    /// it and why the others did not.
    pub fn broadcast(
        &self,
        name: &str,
        payload: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for m in self.shared.mem.tables.occupied_members() {
            if !self.is_live_peer(m) {
                continue;
            }
            match self.channel.send(m, name, payload, fds) {
                Ok(()) => report.sent.push(m),
                Err(e) => report.failed.push((m, e)),
            }
        }
        report
    }

    /// Ask a member and wait (at most `timeout`) for its reply.
    pub fn request(
        &self,
        to: MemberId,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Message, ChannelError> {
        if !self.is_live_peer(to) {
            return Err(ChannelError::NoSuchMember(to));
        }
        self.channel.request(to, name, payload, timeout)
    }

    /// Answer requests named `name` with `handler` (run on the channel's thread; it returns the
    /// reply payload, or an error text sent back as an error reply).
    pub fn on_request(
        &self,
        name: &str,
        handler: impl Fn(&Message) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) {
        self.channel.on_request(name, Arc::new(handler));
    }

    /// The next message sent to this member (not requests, which handlers answer), waiting at
    /// most `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Option<Message> {
        self.channel
            .inbox_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(timeout)
            .ok()
    }

    /// How many malformed datagrams this member dropped.
    pub fn rejected_messages(&self) -> u64 {
        self.channel.rejected.load(Ordering::Relaxed)
    }

    /// Bind the calling thread to `lcore` (one this process owns): it runs on the lcore's CPUs and
    /// [`Zones::current_lcore`] returns `lcore` in it.
    pub fn bind_thread(&self, lcore: u32) -> Result<()> {
        if !self.shared.lcores.contains(&lcore) {
            return Err(crate::OptionsError::Invalid {
                option: "lcore",
                value: lcore.to_string(),
                why: format!("this process owns lcores {:?} only", self.shared.lcores),
            }
            .into());
        }
        if let Some(cpus) = self
            .shared
            .lcore_map
            .as_ref()
            .and_then(|m| m.cpus_of(lcore))
        {
            sys::set_affinity(cpus)
                .map_err(|e| ProcError::io("binding thread to CPUs of lcore", PathBuf::new(), e))?;
        }
        CURRENT_LCORE.with(|c| c.set(Some(lcore)));
        Ok(())
    }
}

fn choose_group_clock(s: &Shared, force: Option<tsc_hpet::ClockKind>) {
    let h = s.mem.tables.header();
    let (clock, rec, warnings) = match tsc_hpet::choose(force) {
        Ok(c) => c,
        Err(e) => {
            let fallback = tsc_hpet::choose(Some(tsc_hpet::ClockKind::Monotonic))
                .expect("CLOCK_MONOTONIC is always there");
            let mut w = fallback.2;
            w.push(format!(
                "the forced clock is unavailable ({e}); the group uses CLOCK_MONOTONIC"
            ));
            (fallback.0, fallback.1, w)
        }
    };
    for w in &warnings {
        eprintln!("hugeshare: clock: {w}");
    }
    let (kind, hz, source) = rec.to_raw();
    h.clock.hz.store(hz, Ordering::Relaxed);
    h.clock.source.store(source, Ordering::Relaxed);
    h.clock.kind.store(kind, Ordering::Release);
    h.members[s.slot.0 as usize]
        .clock_kind
        .store(kind, Ordering::Release);
    let _ = s.clock.set(clock);
}

struct JoinArgs<'a> {
    opts: &'a Options,
    dir: &'a Path,
    lock: File,
    mem: Arc<Memory>,
    role: Role,
    config_file: Option<File>,
    config_path: Option<PathBuf>,
    backing: BackingKind,
    page_size: u64,
    same_address: bool,
    notices: Vec<String>,
    anchor: Option<UnixListener>,
}

/// One notice per option of [`crate::PRIMARY_ONLY_OPTIONS`] that `opts` gives, for a process
/// that joined the running group `g` as a secondary and so did not use them; each says how the
/// group differs from what the option asked, where it does. `clock`: the group's clock as its
/// record said when this process joined (`None`: the primary had not recorded it yet).
fn ignored_option_notices(
    opts: &Options,
    g: &shmconfig::validate::GroupMemory,
    clock: Option<tsc_hpet::ClockKind>,
) -> Vec<String> {
    let base = hugemem::base_page_size();
    let on_hugepages = g.page_size() > base;
    let group_mb = g.mem_limit >> 20;
    let lead_for = |opt: &str, what: &str| {
        format!(
            "{opt} was ignored: this process joined the running group {:?} as a secondary, and \
             a secondary uses {what}",
            opts.file_prefix
        )
    };
    let lead = |opt: &str| lead_for(opt, "the memory its primary set up");
    let mut out = Vec::new();
    if let Some(m) = opts.memory_mb {
        let mut n = lead(&format!("-m {m}"));
        if m != group_mb {
            n.push_str(&format!(" (the group has {group_mb} MiB, not {m})"));
        }
        out.push(n);
    }
    if let Some(v) = &opts.socket_mem {
        let s: Vec<String> = v.iter().map(u64::to_string).collect();
        let mut n = lead(&format!("--socket-mem {}", s.join(",")));
        n.push_str(&format!(
            " (the group has {group_mb} MiB in {} segment(s))",
            g.segments.len()
        ));
        out.push(n);
    }
    if opts.no_huge {
        let mut n = lead("--no-huge");
        if on_hugepages {
            n.push_str(&format!(
                ", which conflicts: the group's memory is on hugepages ({} KiB pages), not on \
                 4 KiB pages as --no-huge asks",
                g.page_size() / 1024
            ));
        }
        out.push(n);
    }
    if let Some(d) = &opts.huge_dir {
        let mut n = lead(&format!("--huge-dir {}", d.display()));
        let same_dir = std::fs::canonicalize(d).ok() == g.seg_dir;
        if g.backing() != backing::HUGETLBFS {
            n.push_str(&format!(
                ", which conflicts: the group's memory is not in a hugetlbfs directory ({} backing)",
                shmconfig::validate::backing_name(g.backing())
            ));
        } else if !same_dir {
            n.push_str(&format!(
                ", which conflicts: the group's segment files are in {}",
                g.seg_dir.as_deref().unwrap_or(Path::new("?")).display()
            ));
        }
        out.push(n);
    }
    if opts.in_memory && g.flags & group_flags::IN_MEMORY == 0 {
        out.push(format!(
            "{}, which conflicts: the group is not in-memory, its segment files are in {}",
            lead("--in-memory"),
            g.seg_dir.as_deref().unwrap_or(Path::new("?")).display()
        ));
    } else if opts.in_memory {
        out.push(lead("--in-memory"));
    }
    if let Some(a) = opts.base_virtaddr {
        let mut n = lead(&format!("--base-virtaddr {a:#x}"));
        if a != g.window_base {
            n.push_str(&format!(
                " (the group's memory is at {:#x} in its primary, not {a:#x})",
                g.window_base
            ));
        }
        out.push(n);
    }
    if opts.lazy_pages {
        let mut n = lead("--lazy-pages");
        if g.flags & group_flags::LAZY == 0 {
            n.push_str(" (its primary populated the group's pages at start)");
        }
        out.push(n);
    }
    if let Some(z) = opts.max_zones {
        let mut n = lead_for(
            &format!("--max-zones {z}"),
            "the zone table its primary set up",
        );
        if z != g.max_zones {
            n.push_str(&format!(
                " (the group's zone table has {} entries, not {z})",
                g.max_zones
            ));
        }
        out.push(n);
    }
    if let Some(c) = opts.clock {
        let mut n = lead_for(&format!("--clock {c}"), "the clock its primary chose");
        match clock {
            Some(k) if k != c => n.push_str(&format!(" (the group's clock is {k}, not {c})")),
            Some(_) => {}
            None => n.push_str(" (its primary had not recorded the group's clock yet)"),
        }
        out.push(n);
    }
    out
}

/// Check that the file behind segment `e` (`what`: its path, or where its descriptor came from)
/// is what the configuration says: a regular file on hugetlbfs (with pages of the recorded size)
/// or on tmpfs (`/dev/shm`, a memfd: base pages), as its backing says. Anything else (a file
/// elsewhere, a device, a directory) is not a segment of a group, whatever the table claims.
fn check_segment_file(
    e: &shmconfig::validate::SegmentDesc,
    probe: &sys::FileProbe,
    what: &str,
) -> std::result::Result<(), String> {
    let i = e.index;
    if !probe.regular {
        return Err(format!(
            "segments[{i}].path: {what} is not a regular file (a directory, device, FIFO, socket \
             or symbolic link), so it cannot be a segment; nothing was mapped"
        ));
    }
    let fs = match probe.fs_type {
        sys::HUGETLBFS_MAGIC => backing::HUGETLBFS,
        sys::TMPFS_MAGIC => backing::SHM,
        other => {
            return Err(format!(
                "segments[{i}].path: {what} is on a file system of type {other:#x}, not hugetlbfs \
                 ({:#x}) or tmpfs ({:#x}), so it cannot be a segment; nothing was mapped",
                sys::HUGETLBFS_MAGIC,
                sys::TMPFS_MAGIC
            ))
        }
    };
    let name = shmconfig::validate::backing_name;
    // A memfd is on tmpfs, or on hugetlbfs when it holds hugepages.
    if e.backing != backing::MEMFD && fs != e.backing {
        return Err(format!(
            "segments[{i}].backing is {} ({}) but {what} is on {}",
            e.backing,
            name(e.backing),
            if fs == backing::SHM {
                "tmpfs"
            } else {
                "hugetlbfs"
            }
        ));
    }
    let pages = if fs == backing::HUGETLBFS {
        probe.fs_block
    } else {
        hugemem::base_page_size()
    };
    if pages != e.page_size {
        return Err(format!(
            "segments[{i}].page_size is {} but the pages of {what} are {pages} bytes",
            e.page_size
        ));
    }
    Ok(())
}

fn count_nodes() -> usize {
    std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// Free a dead member's lcores, run the clean-up hooks and, if they finished, free its slot.
/// The caller holds the slot's byte (so it is the only cleaner). Returns the report and whether
/// the slot was freed. When a hook could not finish yet (a ring reservation of the dead member
/// behind a live member's, say), or this process has no hook for a kind of zone that keeps
/// per-member state (it never used that library: a member that did should clean up), the slot
/// stays marked alive, which `join` leaves alone and liveness reports as dead (nobody holds
/// its byte), and the monitors run the hooks again. `give_up_missing`: free the slot even if
/// hooks are missing here (no member with them has cleaned up for a while).
fn cleanup_member(
    tables: &Tables,
    liveness: &dyn Liveness,
    me: MemberId,
    dead: MemberId,
    zones: &dyn Zones,
    give_up_missing: bool,
) -> (Vec<String>, bool) {
    let mut report = Vec::new();
    let h = tables.header();
    match tables.lock(me, liveness, TABLE_LOCK_TIMEOUT) {
        Ok(g) => {
            let freed = tables.release_lcores(&g, dead);
            if !freed.is_empty() {
                report.push(format!("freed lcores {freed:?}"));
            }
        }
        Err(e) => report.push(format!("could not free its lcores: {e}")),
    }
    let run = shmconfig::hooks::run_all_checked(zones, dead);
    report.extend(run.lines);
    if !run.unfinished.is_empty() {
        report.push(format!(
            "clean-up not finished, the slot stays out of use until it is: {}",
            run.unfinished.join("; ")
        ));
        return (report, false);
    }
    if !run.missing.is_empty() {
        let kinds = format!("{:?}", run.missing);
        if !give_up_missing {
            report.push(format!(
                "this member has no clean-up hook for the group's {kinds} zones: the slot stays \
                 out of use until a member that has cleans up"
            ));
            return (report, false);
        }
        report.push(format!(
            "no member with a clean-up hook for the group's {kinds} zones cleaned up: slot freed \
             without it"
        ));
    }
    let m = &h.members[dead.0 as usize];
    m.exit_kind.store(2, Ordering::Relaxed);
    m.state.store(member_state::FREE, Ordering::Release);
    (report, true)
}

/// How long a dead member's slot waits for a member with the clean-up hooks this process lacks
/// before it is freed without them.
const MISSING_HOOK_GRACE: Duration = Duration::from_secs(2);

/// The member table as the monitor last saw it: slot → (generation, pid) of live occupants.
type Seen = Vec<Option<(u32, u32)>>;

fn monitor_loop(s: Arc<Shared>, tx: Sender<Event>, interval: Duration) {
    let tables = s.mem.tables;
    let h = tables.header();
    let mut seen: Seen = vec![None; MAX_MEMBERS];
    // Slots whose clean-up could not finish (since when): retried every pass, reported once.
    let mut retrying: Vec<Option<Instant>> = vec![None; MAX_MEMBERS];
    let mut first = true;
    let mut primary_reported = s.role == Role::Primary;
    while !s.stop.load(Ordering::Acquire) {
        if let Some(a) = &s.anchor {
            crate::anchor::drain(a);
        }
        if !primary_reported {
            let alive = sys::ofd_is_locked(&s.liveness.probe, PRIMARY_BYTE).unwrap_or(true);
            if !alive {
                primary_reported = true;
                let ev = if h.state.load(Ordering::Acquire) == ConfigState::Closed as u32 {
                    Event::PrimaryExited { pid: s.primary_pid }
                } else {
                    Event::PrimaryDied { pid: s.primary_pid }
                };
                let _ = tx.send(ev);
            }
        }
        #[allow(clippy::needless_range_loop)] // `i` is the slot number, used beyond indexing
        for i in 0..MAX_MEMBERS {
            if i == s.slot.0 as usize {
                continue;
            }
            let m = &h.members[i];
            let st = m.state.load(Ordering::Acquire);
            let gen = m.generation.load(Ordering::Acquire);
            let pid = m.pid.load(Ordering::Relaxed);
            let id = MemberId(i as u16);
            if st == member_state::ALIVE {
                let locked = sys::ofd_is_locked(&s.liveness.probe, 1 + i as u64).unwrap_or(true);
                if locked {
                    if seen[i].map(|x| x.0) != Some(gen) {
                        if let Some((_, old_pid)) = seen[i] {
                            // A new occupant replaced one we never saw leave: the old one died.
                            let _ = tx.send(Event::MemberDied {
                                member: id,
                                pid: old_pid,
                                cleaned_here: false,
                                report: vec![],
                            });
                        }
                        if !first {
                            let _ = tx.send(Event::MemberJoined { member: id, pid });
                        }
                        seen[i] = Some((gen, pid));
                    }
                } else if sys::ofd_try_lock(&s.liveness.probe, 1 + i as u64, LockKind::Write)
                    .unwrap_or(false)
                {
                    // Dead, and we are its one cleaner. Re-check under the byte: it may have been
                    // cleaned and re-taken meanwhile.
                    if m.state.load(Ordering::Acquire) == member_state::ALIVE
                        && m.generation.load(Ordering::Acquire) == gen
                    {
                        let view = ZonesView(s.clone());
                        let give_up = retrying[i].is_some_and(|t| t.elapsed() > MISSING_HOOK_GRACE);
                        let (report, done) =
                            cleanup_member(&tables, &*s.liveness, s.slot, id, &view, give_up);
                        let _ = std::fs::remove_file(channel::socket_path(&s.dir, id));
                        if retrying[i].is_none() {
                            let _ = tx.send(Event::MemberDied {
                                member: id,
                                pid,
                                cleaned_here: true,
                                report,
                            });
                        }
                        retrying[i] = if done {
                            None
                        } else {
                            Some(retrying[i].unwrap_or_else(Instant::now))
                        };
                        seen[i] = None;
                    }
                    let _ = sys::ofd_unlock(&s.liveness.probe, 1 + i as u64);
                }
            } else if let Some((_, old_pid)) = seen[i].take() {
                let ev = if m.exit_kind.load(Ordering::Acquire) == 1 {
                    Event::MemberLeft {
                        member: id,
                        pid: old_pid,
                    }
                } else {
                    Event::MemberDied {
                        member: id,
                        pid: old_pid,
                        cleaned_here: false,
                        report: vec![],
                    }
                };
                let _ = tx.send(ev);
            }
        }
        first = false;
        std::thread::sleep(interval);
    }
}

/// `Zones` over a member's shared state (used by the monitor for clean-up hooks).
#[derive(Debug)]
struct ZonesView(Arc<Shared>);

fn zone_from_place(
    s: &Arc<Shared>,
    name: &str,
    p: shmconfig::ZonePlace,
) -> Result<Zone, ZoneError> {
    let (base, len) = *s
        .mem
        .seg_bases
        .get(p.offset.segment as usize)
        .ok_or_else(|| {
            ZoneError::Corrupt(format!(
                "zone {name:?} names segment {} which does not exist",
                p.offset.segment
            ))
        })?;
    // The entry is shared memory any member (or a corrupt file) may have written: no overflow.
    if (p.offset.offset as usize)
        .checked_add(p.len)
        .is_none_or(|end| end > len)
    {
        return Err(ZoneError::Corrupt(format!(
            "zone {name:?} runs past the end of its segment"
        )));
    }
    let ptr = std::ptr::NonNull::new((base + p.offset.offset as usize) as *mut u8)
        .expect("segment base is not null");
    let keep: Arc<dyn std::any::Any + Send + Sync> = s.mem.clone();
    let z = sys::zone_in_mapping(name, p.kind, ptr, p.len, p.offset, keep);
    Ok(z)
}

impl Zones for ZonesView {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        shared_reserve(&self.0, req)
    }
    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        shared_lookup(&self.0, name)
    }
    fn free(&self, name: &str) -> Result<(), ZoneError> {
        shared_free(&self.0, name)
    }
    fn list(&self) -> Vec<ZoneInfo> {
        shared_list(&self.0)
    }
    fn member(&self) -> MemberId {
        self.0.slot
    }
    fn liveness(&self) -> Arc<dyn Liveness> {
        self.0.liveness.clone()
    }
}

fn shared_reserve(s: &Arc<Shared>, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
    let t = &s.mem.tables;
    let g = t.lock(s.slot, &*s.liveness, TABLE_LOCK_TIMEOUT)?;
    let segs: Vec<(u32, u64)> = s
        .mem
        .seg_bases
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32, b.1 as u64))
        .collect();
    let p = t.reserve_zone(&g, req, s.slot, &segs)?;
    drop(g);
    zone_from_place(s, req.name, p)
}

fn shared_lookup(s: &Arc<Shared>, name: &str) -> Result<Zone, ZoneError> {
    let t = &s.mem.tables;
    let g = t.lock(s.slot, &*s.liveness, TABLE_LOCK_TIMEOUT)?;
    let p = t.find_zone(&g, name)?;
    drop(g);
    zone_from_place(s, name, p)
}

fn shared_free(s: &Arc<Shared>, name: &str) -> Result<(), ZoneError> {
    let t = &s.mem.tables;
    let g = t.lock(s.slot, &*s.liveness, TABLE_LOCK_TIMEOUT)?;
    t.free_zone(&g, name)
}

fn shared_list(s: &Arc<Shared>) -> Vec<ZoneInfo> {
    let t = &s.mem.tables;
    match t.lock(s.slot, &*s.liveness, TABLE_LOCK_TIMEOUT) {
        Ok(g) => t.list_zones(&g),
        Err(_) => Vec::new(),
    }
}

impl Zones for Process {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        shared_reserve(&self.shared, req)
    }
    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        shared_lookup(&self.shared, name)
    }
    fn free(&self, name: &str) -> Result<(), ZoneError> {
        shared_free(&self.shared, name)
    }
    fn list(&self) -> Vec<ZoneInfo> {
        shared_list(&self.shared)
    }
    fn member(&self) -> MemberId {
        self.shared.slot
    }
    fn liveness(&self) -> Arc<dyn Liveness> {
        self.shared.liveness.clone()
    }
    fn current_lcore(&self) -> Option<u32> {
        CURRENT_LCORE
            .with(|c| c.get())
            .filter(|l| self.shared.lcores.contains(l))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let s = &self.shared;
        s.stop.store(true, Ordering::Release);
        if let Some(t) = self.monitor.take() {
            let _ = t.join();
        }
        self.channel.stop.store(true, Ordering::Release);
        if let Some(t) = self.receiver.take() {
            let _ = t.join();
        }
        // Files are removed by path only while the runtime directory is still this group's (the
        // lock file we hold is the one there): one deleted and re-created under us may hold
        // another group's files of the same names.
        let dir_ours = same_inode(&s.lock_file, &s.dir.join("lock"));
        if dir_ours {
            let _ = std::fs::remove_file(channel::socket_path(&s.dir, s.slot));
        }
        if let Some(t) = self.server.take() {
            let _ = UnixStream::connect(s.dir.join("socket")); // wake the accept loop
            let _ = t.join();
        }
        let t = &s.mem.tables;
        let h = t.header();
        if let Ok(g) = t.lock(s.slot, &*s.liveness, Duration::from_secs(2)) {
            t.release_lcores(&g, s.slot);
        }
        let m = &h.members[s.slot.0 as usize];
        m.exit_kind.store(1, Ordering::Release);
        m.state.store(member_state::LEFT, Ordering::Release);
        if s.role == Role::Primary {
            h.state.store(ConfigState::Closed as u32, Ordering::Release);
            for seg in &s.mem.segments {
                if let Some(p) = seg.path() {
                    if same_file(seg.fd(), p) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            if dir_ours {
                if let Some(p) = &s.config_path {
                    let _ = std::fs::remove_file(p);
                }
                let _ = std::fs::remove_file(s.dir.join("socket"));
                // Members killed so recently that no monitor cleaned up after them yet leave
                // their socket files: those no live process holds go too.
                channel::remove_stale_sockets(&s.dir);
            }
        }
        let _ = sys::ofd_unlock(&s.lock_file, 1 + s.slot.0 as u64);
        if s.role == Role::Primary {
            let _ = sys::ofd_unlock(&s.lock_file, PRIMARY_BYTE);
        }
    }
}

// ---- --in-memory: the primary hands its descriptors to secondaries over a Unix socket ----

const HELLO: &[u8; 4] = b"HSv1";

fn start_server(s: Arc<Shared>) -> Result<JoinHandle<()>> {
    let path = s.dir.join("socket");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| ProcError::io("binding", &path, e))?;
    Ok(std::thread::Builder::new()
        .name("hugeshare-fdserver".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let mut req = [0u8; 4];
                if c.read_exact(&mut req).is_err() || &req != HELLO {
                    continue;
                }
                let mut fds = vec![s
                    ._config_file
                    .as_ref()
                    .expect("primary has its config")
                    .as_raw_fd()];
                fds.extend(s.mem.segments.iter().map(|g| g.fd().as_raw_fd()));
                let mut msg = HELLO.to_vec();
                msg.extend_from_slice(&(s.mem.config.len() as u64).to_ne_bytes());
                let _ = sys::send_fds(&c, &msg, &fds);
            }
        })
        .expect("spawning the descriptor server"))
}

fn fetch_in_memory(sock: &UnixStream, dir: &Path) -> Result<(File, SharedMap, Vec<OwnedFd>)> {
    let path = dir.join("socket");
    let io = |e| ProcError::io("talking to the primary over", &path, e);
    let mut w = sock;
    w.write_all(HELLO).map_err(io)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let (msg, mut fds) = sys::recv_fds(sock, 64).map_err(io)?;
    if msg.len() != 12 || &msg[..4] != HELLO || fds.is_empty() {
        return Err(ProcError::Corrupt {
            file: path.display().to_string(),
            why: "unexpected answer from the primary".into(),
        });
    }
    let len = u64::from_ne_bytes(msg[4..12].try_into().expect("8")) as usize;
    let cfg = File::from(fds.remove(0));
    // Mapped past its end, the descriptor would fault (SIGBUS) on the first read there.
    let size = cfg.metadata().map_err(io)?.len();
    if len as u64 > size || len < std::mem::size_of::<ConfigHeader>() {
        return Err(ProcError::Corrupt {
            file: path.display().to_string(),
            why: format!(
                "the primary announced a configuration of {len} bytes in a descriptor of {size} bytes"
            ),
        });
    }
    let map = SharedMap::new(cfg.as_raw_fd(), len).map_err(io)?;
    Ok((cfg, map, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmconfig::validate::SegmentDesc;

    fn desc(backing: u32, page_size: u64) -> SegmentDesc {
        SegmentDesc {
            index: 0,
            backing,
            page_size,
            len: page_size,
            window_offset: 0,
            node: u32::MAX,
            file_index: 0,
            path: None,
        }
    }

    fn group(backing: u32, page_size: u64, in_memory: bool) -> shmconfig::validate::GroupMemory {
        let mut seg = desc(backing, page_size);
        if !in_memory {
            seg.path = Some(PathBuf::from("/dev/hugepages/gmap_0"));
        }
        shmconfig::validate::GroupMemory {
            flags: if in_memory { group_flags::IN_MEMORY } else { 0 },
            max_zones: 16,
            mem_limit: 16 << 20,
            seg_dir: (!in_memory).then(|| PathBuf::from("/dev/hugepages")),
            window_base: 0,
            window_len: page_size,
            segments: vec![seg],
        }
    }

    /// A joiner holds the table lock before it is a member: while it holds its slot's byte, a
    /// waiter must see it alive (and not take the lock from it); once its byte is free (it
    /// died mid-join), the slot is free.
    #[test]
    fn a_joining_slot_is_alive_while_its_joiner_holds_the_byte() {
        let dir = std::env::temp_dir().join(format!("hs-joining-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = Process::init(Options {
            proc_type: ProcType::Primary,
            file_prefix: "joining".into(),
            memory_mb: Some(8),
            no_huge: true,
            in_memory: true,
            runtime_dir: Some(dir.clone()),
            ..Options::default()
        })
        .expect("primary");
        let live = p.liveness();
        let slot = 5usize;
        let m = &p.shared.mem.tables.header().members[slot];
        assert_eq!(live.member_state(MemberId(slot as u16)), MemberState::Free);
        // A joiner (here: another open file description of the lock file) takes the slot.
        let joiner = rundir::open_file(&p.shared.dir.join("lock"), false).unwrap();
        assert!(sys::ofd_try_lock(&joiner, 1 + slot as u64, LockKind::Write).unwrap());
        m.state.store(member_state::JOINING, Ordering::Release);
        assert_eq!(
            live.member_state(MemberId(slot as u16)),
            MemberState::Alive,
            "a joiner holding its byte is alive"
        );
        // The joiner dies before it became a member: its byte is released with its descriptor.
        drop(joiner);
        assert_eq!(live.member_state(MemberId(slot as u16)), MemberState::Free);
        m.state.store(member_state::FREE, Ordering::Release);
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auto_as_secondary_names_each_ignored_option_and_each_conflict() {
        let opts = Options {
            proc_type: ProcType::Auto,
            file_prefix: "g".into(),
            memory_mb: Some(32),
            no_huge: true,
            in_memory: true,
            huge_dir: Some("/nonexistent-dir".into()),
            ..Options::default()
        };
        let n = ignored_option_notices(&opts, &group(backing::HUGETLBFS, 2 << 20, false), None);
        assert_eq!(n.len(), 4, "{n:#?}");
        for (opt, conflict) in [
            ("-m 32 was ignored", "the group has 16 MiB, not 32"),
            ("--no-huge was ignored", "on hugepages (2048 KiB pages)"),
            (
                "--huge-dir /nonexistent-dir was ignored",
                "files are in /dev/hugepages",
            ),
            ("--in-memory was ignored", "the group is not in-memory"),
        ] {
            let line = n.iter().find(|l| l.starts_with(opt)).expect(opt);
            assert!(line.contains(conflict), "{line}");
            assert!(line.contains("secondary"), "{line}");
        }
        // Options that agree with the group are still named as ignored, without a conflict.
        let opts = Options {
            memory_mb: Some(16),
            no_huge: true,
            in_memory: true,
            ..opts
        };
        let base = hugemem::base_page_size();
        let n = ignored_option_notices(
            &Options {
                huge_dir: None,
                ..opts.clone()
            },
            &group(backing::MEMFD, base, true),
            None,
        );
        assert_eq!(n.len(), 3, "{n:#?}");
        assert!(
            n.iter()
                .all(|l| !l.contains("conflict") && !l.contains("not 16")),
            "{n:#?}"
        );
        // Nothing given, nothing said.
        assert!(ignored_option_notices(
            &Options::default(),
            &group(backing::SHM, base, false),
            Some(tsc_hpet::ClockKind::Tsc)
        )
        .is_empty());
    }

    #[test]
    fn auto_as_secondary_names_the_address_zone_table_and_clock_options_it_ignored() {
        use tsc_hpet::ClockKind;
        let opts = Options {
            proc_type: ProcType::Auto,
            file_prefix: "g".into(),
            base_virtaddr: Some(0x3000_0000_0000),
            lazy_pages: true,
            max_zones: Some(64),
            clock: Some(ClockKind::Hpet),
            ..Options::default()
        };
        let mut g = group(backing::HUGETLBFS, 2 << 20, false);
        g.window_base = 0x2000_0000_0000;
        let n = ignored_option_notices(&opts, &g, Some(ClockKind::Tsc));
        assert_eq!(n.len(), 4, "{n:#?}");
        for (opt, uses, differs) in [
            (
                "--base-virtaddr 0x300000000000 was ignored",
                "the memory its primary set up",
                "the group's memory is at 0x200000000000 in its primary, not 0x300000000000",
            ),
            (
                "--lazy-pages was ignored",
                "the memory its primary set up",
                "its primary populated the group's pages at start",
            ),
            (
                "--max-zones 64 was ignored",
                "the zone table its primary set up",
                "the group's zone table has 16 entries, not 64",
            ),
            (
                "--clock hpet was ignored",
                "the clock its primary chose",
                "the group's clock is tsc, not hpet",
            ),
        ] {
            let line = n.iter().find(|l| l.starts_with(opt)).expect(opt);
            assert!(
                line.contains(uses) && line.contains(differs) && line.contains("secondary"),
                "{line}"
            );
        }
        // What agrees with the group is named as ignored, with no difference; a clock not
        // recorded yet is said to be so.
        g.window_base = 0x3000_0000_0000;
        g.flags |= group_flags::LAZY;
        g.max_zones = 64;
        let n = ignored_option_notices(&opts, &g, Some(ClockKind::Hpet));
        assert_eq!(n.len(), 4, "{n:#?}");
        assert!(
            n.iter()
                .all(|l| !l.contains(" not ") && !l.contains("populated")),
            "{n:#?}"
        );
        let n = ignored_option_notices(&opts, &g, None);
        let clock = n.iter().find(|l| l.starts_with("--clock hpet")).unwrap();
        assert!(
            clock.contains("had not recorded the group's clock yet"),
            "{clock}"
        );
    }

    /// A file removed when the test ends.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn only_regular_files_on_hugetlbfs_or_tmpfs_pass_as_segments() {
        let base = hugemem::base_page_size();
        // A file elsewhere (the issue's /etc/passwd): refused, naming the field.
        let p = sys::probe_path(Path::new("/etc/passwd")).unwrap();
        if p.fs_type != sys::TMPFS_MAGIC && p.fs_type != sys::HUGETLBFS_MAGIC {
            let e = check_segment_file(&desc(backing::SHM, base), &p, "/etc/passwd").unwrap_err();
            assert!(
                e.contains("segments[0].path") && e.contains("not hugetlbfs"),
                "{e}"
            );
        }
        // A file in /dev/shm: a segment of 4 KiB pages on tmpfs, nothing else.
        let f = Scratch(PathBuf::from(format!(
            "/dev/shm/procctl-test-seg-{}",
            std::process::id()
        )));
        std::fs::write(&f.0, vec![0u8; base as usize]).unwrap();
        let p = sys::probe_path(&f.0).unwrap();
        assert!(p.regular);
        check_segment_file(&desc(backing::SHM, base), &p, "f").unwrap();
        check_segment_file(&desc(backing::MEMFD, base), &p, "f").unwrap();
        let e = check_segment_file(&desc(backing::HUGETLBFS, base), &p, "f").unwrap_err();
        assert!(e.contains("segments[0].backing"), "{e}");
        let e = check_segment_file(&desc(backing::SHM, 2 << 20), &p, "f").unwrap_err();
        assert!(e.contains("segments[0].page_size is 2097152"), "{e}");
        // A symbolic link to it is not followed, and a directory is no segment.
        let l = Scratch(PathBuf::from(format!(
            "/dev/shm/procctl-test-link-{}",
            std::process::id()
        )));
        std::os::unix::fs::symlink(&f.0, &l.0).unwrap();
        for path in [&l.0, &PathBuf::from("/dev/shm")] {
            let p = sys::probe_path(path).unwrap();
            assert!(!p.regular, "{}", path.display());
            let e = check_segment_file(&desc(backing::SHM, base), &p, "x").unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }
}
