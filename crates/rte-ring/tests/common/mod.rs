//! A test-only `Zones` over one shared file in `/dev/shm`, for rings shared by real processes.
//!
//! Layout of the file: a control page (member pid table, flags and counters the tests use to
//! talk to their children), a tiny zone table, then zones (128-aligned, bump-allocated). Only
//! one process reserves zones (the parent, before it starts children). A member's liveness is
//! the kernel's: each member holds an exclusive `flock` on its own lock file for its lifetime;
//! `member_state` tries to take that lock without blocking.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{flock, FlockOperation};
use shmconfig::{
    Liveness, MemberId, MemberState, ShmOffset, Zone, ZoneError, ZoneInfo, ZoneKind, ZoneRequest,
    Zones,
};

const FILE_LEN: usize = 8 << 20;
const TABLE: usize = 2048;
const ENTRY: usize = 128;
const ENTRIES: usize = 8;
const DATA: usize = 4096;
/// Members 0..MAX_MEMBERS have a pid slot.
pub const MAX_MEMBERS: usize = 16;

/// The mapping of the shared file.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    path: PathBuf,
}

// SAFETY: the mapping is plain shared memory accessed through atomics and the ring's protocol;
// the pointer stays valid until `Drop` unmaps it, when no `Arc` to it is left.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `FileZones::open`; this is the last
        // owner, and no `Zone` (which holds an `Arc<Mapping>`) is left.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl Mapping {
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= DATA);
        // SAFETY: `off` is an aligned offset inside the control page of the mapping, which lives
        // as long as `self`; every process accesses these words atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= DATA);
        // SAFETY: as for `u64_at`.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }
}

/// Zones in a shared file, as member `member`.
#[derive(Debug, Clone)]
pub struct FileZones {
    map: Arc<Mapping>,
    member: MemberId,
}

impl FileZones {
    /// Create (truncate) the shared file at `path`, zeroed, and join as member 0.
    pub fn create(path: &str) -> Self {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create the shared file in /dev/shm");
        f.set_len(FILE_LEN as u64).unwrap();
        Self::open_file(path, f, MemberId(0))
    }

    /// Open the existing shared file as `member`, and take that member's lifetime lock.
    pub fn open(path: &str, member: MemberId) -> Self {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        Self::open_file(path, f, member)
    }

    fn open_file(path: &str, f: File, member: MemberId) -> Self {
        // SAFETY: a fresh shared mapping of the whole file, at an address the kernel picks; it is
        // unmapped only by `Mapping::drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                FILE_LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &f,
                0,
            )
            .expect("mmap the shared file")
        };
        let map = Arc::new(Mapping {
            ptr: NonNull::new(ptr.cast()).unwrap(),
            len: FILE_LEN,
            path: path.into(),
        });
        let z = FileZones { map, member };
        z.register();
        z
    }

    fn lock_path(&self, m: u16) -> String {
        format!("{}.m{m}.lock", self.map.path.display())
    }

    /// Take this member's lifetime lock (kept until the process exits) and publish its pid.
    fn register(&self) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.lock_path(self.member.0))
            .unwrap();
        flock(&f, FlockOperation::LockExclusive).unwrap();
        std::mem::forget(f); // the lock lives as long as the process
        self.pid_slot(self.member.0)
            .store(std::process::id(), Ordering::Release);
    }

    fn pid_slot(&self, m: u16) -> &AtomicU32 {
        assert!((m as usize) < MAX_MEMBERS);
        self.map.u32_at(64 + 4 * m as usize)
    }

    /// A control word the tests use (index 0..64, offset 512 onwards of the control page).
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 64);
        self.map.u64_at(512 + 8 * i)
    }

    /// Remove the file and lock files now, and again when the returned guard drops (also when
    /// the test fails), so that a failed run leaves nothing in `/dev/shm`.
    pub fn removed_at_end(path: &str) -> RemoveOnDrop {
        Self::remove_files(path);
        RemoveOnDrop(path.to_string())
    }

    /// Remove the file and lock files.
    pub fn remove_files(path: &str) {
        let _ = std::fs::remove_file(path);
        for m in 0..MAX_MEMBERS {
            let _ = std::fs::remove_file(format!("{path}.m{m}.lock"));
        }
    }

    fn entry(&self, i: usize) -> *mut u8 {
        assert!(i < ENTRIES);
        // SAFETY: the zone table lies inside the control page of the mapping.
        unsafe { self.map.ptr.as_ptr().add(TABLE + i * ENTRY) }
    }

    /// `(name, kind, offset, len)` of table entry `i`, if used.
    fn read_entry(&self, i: usize) -> Option<(String, u32, u64, u64)> {
        let e = self.entry(i);
        // SAFETY: 128 bytes of the table entry inside the mapping; entries are written once by
        // the parent before any child starts, so nobody writes them concurrently.
        let bytes: [u8; ENTRY] = unsafe { e.cast::<[u8; ENTRY]>().read_volatile() };
        let len = u64::from_le_bytes(bytes[80..88].try_into().unwrap());
        if len == 0 {
            return None;
        }
        let nlen = bytes[64] as usize;
        let name = String::from_utf8_lossy(&bytes[..nlen]).into_owned();
        let kind = u32::from_le_bytes(bytes[68..72].try_into().unwrap());
        let off = u64::from_le_bytes(bytes[72..80].try_into().unwrap());
        Some((name, kind, off, len))
    }

    fn zone(&self, name: &str, kind: u32, off: u64, len: u64) -> Zone {
        let keep: Arc<dyn std::any::Any + Send + Sync> = self.map.clone();
        // SAFETY: `off..off+len` lies inside the mapping (checked at reserve), which `keep` keeps
        // mapped; the ring accesses it through raw pointers and atomics only.
        unsafe {
            Zone::from_raw_parts(
                name,
                ZoneKind::from_u32(kind).unwrap_or(ZoneKind::Other),
                NonNull::new(self.map.ptr.as_ptr().add(off as usize)).unwrap(),
                len as usize,
                ShmOffset::new(0, off),
                keep,
            )
        }
    }
}

/// Liveness from the members' lifetime locks.
#[derive(Debug)]
struct FileLiveness(FileZones);

impl Liveness for FileLiveness {
    fn member_state(&self, m: MemberId) -> MemberState {
        if m == MemberId::OUTSIDER || m.0 as usize >= MAX_MEMBERS {
            return MemberState::Alive;
        }
        if m == self.0.member {
            return MemberState::Alive;
        }
        if self.0.pid_slot(m.0).load(Ordering::Acquire) == 0 {
            return MemberState::Free;
        }
        let Ok(f) = File::open(self.0.lock_path(m.0)) else {
            return MemberState::Free;
        };
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => MemberState::Dead, // the holder is gone; our lock goes with `f`
            Err(_) => MemberState::Alive,
        }
    }
}

impl Zones for FileZones {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        shmconfig::check_zone_name(req.name)?;
        let mut free = None;
        for i in 0..ENTRIES {
            match self.read_entry(i) {
                Some((n, ..)) if n == req.name => return Err(ZoneError::Exists(req.name.into())),
                None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let i = free.ok_or(ZoneError::TableFull(ENTRIES))?;
        let bump = self.map.u64_at(8);
        let align = req.align.max(128) as u64;
        let start = bump
            .load(Ordering::Acquire)
            .max(DATA as u64)
            .next_multiple_of(align);
        let end = start + req.len as u64;
        if end > FILE_LEN as u64 {
            return Err(ZoneError::NoMemory {
                name: req.name.into(),
                len: req.len,
                free: FILE_LEN - start as usize,
            });
        }
        bump.store(end, Ordering::Release);
        let mut bytes = [0u8; ENTRY];
        bytes[..req.name.len()].copy_from_slice(req.name.as_bytes());
        bytes[64] = req.name.len() as u8;
        bytes[68..72].copy_from_slice(&(req.kind as u32).to_le_bytes());
        bytes[72..80].copy_from_slice(&start.to_le_bytes());
        bytes[80..88].copy_from_slice(&(req.len as u64).to_le_bytes());
        // SAFETY: the entry is inside the control page; only this process reserves, before any
        // child looks the table up.
        unsafe { self.entry(i).cast::<[u8; ENTRY]>().write_volatile(bytes) };
        Ok(self.zone(req.name, req.kind as u32, start, req.len as u64))
    }

    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        (0..ENTRIES)
            .filter_map(|i| self.read_entry(i))
            .find(|e| e.0 == name)
            .map(|(n, k, o, l)| self.zone(&n, k, o, l))
            .ok_or_else(|| ZoneError::NotFound(name.into()))
    }

    fn free(&self, _name: &str) -> Result<(), ZoneError> {
        Err(ZoneError::Unsupported("the test file zones never free"))
    }

    fn list(&self) -> Vec<ZoneInfo> {
        (0..ENTRIES)
            .filter_map(|i| self.read_entry(i))
            .map(|(name, k, o, l)| ZoneInfo {
                name,
                kind: ZoneKind::from_u32(k).unwrap_or(ZoneKind::Other),
                len: l as usize,
                offset: ShmOffset::new(0, o),
                owner: MemberId(0),
            })
            .collect()
    }

    fn member(&self) -> MemberId {
        self.member
    }

    fn liveness(&self) -> Arc<dyn Liveness> {
        Arc::new(FileLiveness(self.clone()))
    }
}

/// A small xorshift generator (tests only).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded from the clock and pid.
    pub fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(t ^ (std::process::id() as u64) << 32 | 1)
    }
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Removes a [`FileZones`] file and its lock files when dropped.
pub struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        FileZones::remove_files(&self.0);
    }
}
