//! A small test-only [`Zones`] over one file in `/dev/shm`, shared by real processes, with
//! member liveness from `flock` (each member holds an exclusive lock on its own file for its
//! lifetime; the kernel drops it when the process dies, whatever killed it). A member writes its
//! process id into its file: the incarnation of its member slot, so that a process that takes
//! the slot of a dead one is told apart from it (as procctl's slot generation does).
//!
//! Limits (fine for tests): zones are reserved by one process (the test's parent) before the
//! others open them; zones are never freed; at most [`MAX_ZONES`] zones.
#![allow(dead_code, unsafe_code)]

use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::MmapRaw;
use rustix::fs::{flock, FlockOperation};
use shmconfig::{
    check_zone_name, Liveness, MemberId, MemberState, ShmOffset, Zone, ZoneError, ZoneInfo,
    ZoneKind, ZoneRequest, Zones,
};

/// Size of the whole file.
pub const FILE_LEN: u64 = 256 << 20;
/// Zones the table can list.
pub const MAX_ZONES: usize = 16;
const TABLE_WORDS: usize = 2 + MAX_ZONES * 12;
const DATA_START: u64 = 64 << 10;

/// Zones in a shared file. Word 0: next free offset; word 1: zone count; then per zone 12
/// words: name (8 words, NUL-padded), kind, len, offset, reserved.
pub struct ShmZones {
    path: PathBuf,
    map: Arc<MmapRaw>,
    member: MemberId,
    _lock: File,
    reserve_lock: Mutex<()>,
}

impl std::fmt::Debug for ShmZones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmZones")
            .field("path", &self.path)
            .field("member", &self.member)
            .finish()
    }
}

fn member_lock_path(path: &Path, m: MemberId) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".member-{}", m.0));
    PathBuf::from(p)
}

impl ShmZones {
    /// Create the file (truncating any old one) and join as `member`.
    pub fn create(path: &Path, member: MemberId) -> Self {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        f.set_len(FILE_LEN).unwrap();
        let z = Self::map(path, &f, member);
        z.word(0).store(DATA_START, Ordering::Release);
        z
    }

    /// Open an existing file as `member`.
    pub fn open(path: &Path, member: MemberId) -> Self {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        Self::map(path, &f, member)
    }

    fn map(path: &Path, f: &File, member: MemberId) -> Self {
        let map = MmapRaw::map_raw(f).unwrap();
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(member_lock_path(path, member))
            .unwrap();
        flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .unwrap_or_else(|e| panic!("member {} is already taken: {e}", member.0));
        lock.set_len(0).unwrap();
        (&lock)
            .write_all(std::process::id().to_string().as_bytes())
            .unwrap();
        Self {
            path: path.to_owned(),
            map: Arc::new(map),
            member,
            _lock: lock,
            reserve_lock: Mutex::new(()),
        }
    }

    /// Remove the file and the member lock files.
    pub fn remove_files(path: &Path, members: u16) {
        let _ = std::fs::remove_file(path);
        for m in 0..members {
            let _ = std::fs::remove_file(member_lock_path(path, MemberId(m)));
        }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < TABLE_WORDS);
        // SAFETY: the table words are inside the mapping (FILE_LEN >> TABLE_WORDS * 8), 8-byte
        // aligned (mmap is page aligned), and only ever accessed as atomics.
        unsafe { &*self.map.as_mut_ptr().cast::<AtomicU64>().add(i) }
    }

    fn entry(&self, i: usize) -> (String, u32, u64, u64) {
        let base = 2 + i * 12;
        let mut name = Vec::new();
        for j in 0..8 {
            name.extend_from_slice(&self.word(base + j).load(Ordering::Acquire).to_le_bytes());
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        name.truncate(end);
        (
            String::from_utf8_lossy(&name).into_owned(),
            self.word(base + 8).load(Ordering::Acquire) as u32,
            self.word(base + 9).load(Ordering::Acquire),
            self.word(base + 10).load(Ordering::Acquire),
        )
    }

    fn zone(&self, name: &str, kind: u32, len: u64, off: u64) -> Result<Zone, ZoneError> {
        let kind = ZoneKind::from_u32(kind)
            .ok_or_else(|| ZoneError::Corrupt(format!("zone {name:?} has kind {kind}")))?;
        // SAFETY: `off + len <= FILE_LEN` (checked at reserve), so the range is inside the
        // mapping, which the keep-alive handle keeps mapped; the table accesses it through
        // atomics only.
        let base = unsafe { NonNull::new_unchecked(self.map.as_mut_ptr().add(off as usize)) };
        let keep: Arc<dyn Any + Send + Sync> = self.map.clone();
        // SAFETY: as above: mapped, writable, never handed out as a reference.
        Ok(unsafe {
            Zone::from_raw_parts(name, kind, base, len as usize, ShmOffset::new(0, off), keep)
        })
    }
}

impl Zones for ShmZones {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        check_zone_name(req.name)?;
        let _g = self.reserve_lock.lock().unwrap();
        let n = self.word(1).load(Ordering::Acquire) as usize;
        if (0..n).any(|i| self.entry(i).0 == req.name) {
            return Err(ZoneError::Exists(req.name.into()));
        }
        if n == MAX_ZONES {
            return Err(ZoneError::TableFull(MAX_ZONES));
        }
        let align = req.align.max(64) as u64;
        let off = self.word(0).load(Ordering::Acquire).next_multiple_of(align);
        let len = req.len as u64;
        if off + len > FILE_LEN {
            return Err(ZoneError::NoMemory {
                name: req.name.into(),
                len: req.len,
                free: (FILE_LEN - off) as usize,
            });
        }
        let base = 2 + n * 12;
        let mut name = [0u8; 64];
        name[..req.name.len()].copy_from_slice(req.name.as_bytes());
        for j in 0..8 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&name[j * 8..j * 8 + 8]);
            self.word(base + j)
                .store(u64::from_le_bytes(w), Ordering::Release);
        }
        self.word(base + 8)
            .store(req.kind as u64, Ordering::Release);
        self.word(base + 9).store(len, Ordering::Release);
        self.word(base + 10).store(off, Ordering::Release);
        self.word(0).store(off + len, Ordering::Release);
        self.word(1).store(n as u64 + 1, Ordering::Release);
        self.zone(req.name, req.kind as u32, len, off)
    }

    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        let n = self.word(1).load(Ordering::Acquire) as usize;
        for i in 0..n.min(MAX_ZONES) {
            let (zn, kind, len, off) = self.entry(i);
            if zn == name {
                return self.zone(&zn, kind, len, off);
            }
        }
        Err(ZoneError::NotFound(name.into()))
    }

    fn free(&self, _name: &str) -> Result<(), ZoneError> {
        Err(ZoneError::Unsupported("the test zones never free"))
    }

    fn list(&self) -> Vec<ZoneInfo> {
        let n = self.word(1).load(Ordering::Acquire) as usize;
        (0..n.min(MAX_ZONES))
            .map(|i| {
                let (name, kind, len, off) = self.entry(i);
                ZoneInfo {
                    name,
                    kind: ZoneKind::from_u32(kind).unwrap_or(ZoneKind::Other),
                    len: len as usize,
                    offset: ShmOffset::new(0, off),
                    owner: MemberId(0),
                }
            })
            .collect()
    }

    fn member(&self) -> MemberId {
        self.member
    }

    fn liveness(&self) -> Arc<dyn Liveness> {
        Arc::new(FlockLiveness {
            path: self.path.clone(),
        })
    }
}

/// Liveness from the member lock files: a member whose file nobody holds locked is dead.
#[derive(Debug)]
pub struct FlockLiveness {
    path: PathBuf,
}

impl Liveness for FlockLiveness {
    fn member_state(&self, member: MemberId) -> MemberState {
        if member == MemberId::OUTSIDER {
            return MemberState::Alive;
        }
        let Ok(f) = File::open(member_lock_path(&self.path, member)) else {
            return MemberState::Free;
        };
        match flock(&f, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {
                let _ = flock(&f, FlockOperation::Unlock);
                MemberState::Dead
            }
            Err(_) => MemberState::Alive,
        }
    }

    /// The process id the slot's occupant wrote in its file.
    fn incarnation(&self, member: MemberId) -> Option<u32> {
        let mut s = String::new();
        File::open(member_lock_path(&self.path, member))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        s.trim().parse().ok().filter(|&p| p != 0)
    }
}

/// A unique path in `/dev/shm` for one test.
pub fn shm_path(test: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/hugeshare-hash-test-{}-{test}",
        std::process::id()
    ))
}

/// Removes a test's files when dropped (also when the test fails).
#[derive(Debug)]
pub struct Cleanup(pub PathBuf, pub u16);

impl Drop for Cleanup {
    fn drop(&mut self) {
        ShmZones::remove_files(&self.0, self.1);
    }
}
