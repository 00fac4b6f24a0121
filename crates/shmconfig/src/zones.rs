//! The narrow waist between memory and data structures: [`Zones`], [`Zone`] and [`ShmOffset`].
//!
//! A data structure (ring, mempool, hash) knows shared memory only through this trait. The same
//! `Ring::lookup(&zones, "rx0")` works over a running process group (`procctl::Process`), over a
//! QEMU guest's IVSHMEM BARs (`ivshmem_meta::GuestZones`) and over heap memory in unit tests
//! ([`crate::LocalZones`]).

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// Longest zone name in bytes (UTF-8). Longer names are refused with [`ZoneError::NameTooLong`].
pub const ZONE_NAME_MAX: usize = 63;

/// The identity of a member (process) of a group: its slot in the process table.
///
/// Data structures record it next to work in progress (a ring reservation, a mempool cache), so
/// that the group can finish or undo that work when the member dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u16);

impl MemberId {
    /// The id used by callers that are not members of a group (a QEMU guest, for example).
    /// Work recorded under it is never considered dead.
    pub const OUTSIDER: MemberId = MemberId(u16::MAX);
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::OUTSIDER {
            f.write_str("outsider")
        } else {
            write!(f, "member {}", self.0)
        }
    }
}

/// What the group knows about a member, as seen by [`Zones::member_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The member holds its lifetime lock (or we cannot tell otherwise): its work may still finish.
    Alive,
    /// The member is gone: the kernel released its lifetime lock. Its unfinished work will never
    /// finish, so whoever waits on it may complete or abandon it.
    Dead,
    /// The slot is free (never used, or cleaned up). Nothing recorded under it can be in flight.
    Free,
}

/// Answers "is this member alive?" for data structures that wait on another member's work.
///
/// A ring or hash keeps an `Arc<dyn Liveness>` (from [`Zones::liveness`]) so that its slow paths can
/// tell a slow peer from a dead one without holding on to the `Zones` value itself.
pub trait Liveness: Send + Sync + fmt::Debug {
    /// What the group knows of `member`. Cheap: a read of shared memory, or one syscall at most.
    fn member_state(&self, member: MemberId) -> MemberState;

    /// Which process occupies `member`'s slot: a number that changes each time a process takes
    /// the slot (procctl: the slot's generation), never 0 for an occupant this liveness can
    /// tell apart. A data structure records it next to the member id (as the group's table lock,
    /// [`crate::Tables::lock`], and the hash table's writer lock do), so that work of a dead
    /// process is not taken for a newcomer's once the newcomer has the same slot: the recorded
    /// occupant is gone when `member_state` says `Alive` but this returns another number. Cheap,
    /// as [`Liveness::member_state`].
    ///
    /// `None` (the default) when this liveness cannot tell occupants apart (a single process, a
    /// guest, [`crate::LocalZones`]), or for [`MemberId::OUTSIDER`]: then only
    /// [`Liveness::member_state`] is known, and work recorded under a slot that a newcomer took
    /// looks like the newcomer's.
    ///
    /// ```
    /// use shmconfig::{AlwaysAlive, Liveness, MemberId};
    /// assert_eq!(AlwaysAlive.incarnation(MemberId(3)), None);
    /// ```
    fn incarnation(&self, member: MemberId) -> Option<u32> {
        let _ = member;
        None
    }
}

/// A [`Liveness`] for memory no member of a group can die in the middle of (a single process, or
/// a guest that sees only finished work): every member is reported alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAlive;

impl Liveness for AlwaysAlive {
    fn member_state(&self, _member: MemberId) -> MemberState {
        MemberState::Alive
    }
}

/// Where a zone lives inside the group's memory: which segment, and where in it.
///
/// This is what shared structures store instead of pointers: every process, and every guest, maps
/// segments at an address of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ShmOffset {
    /// Index of the segment in the group's segment table.
    pub segment: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// Byte offset from the start of that segment.
    pub offset: u64,
}

impl ShmOffset {
    /// A new offset into `segment`.
    pub const fn new(segment: u32, offset: u64) -> Self {
        Self {
            segment,
            _pad: 0,
            offset,
        }
    }
}

/// The kind of object a zone holds; recorded in the zone table so that a lookup of the wrong
/// kind is refused and tools can list objects by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ZoneKind {
    /// Plain memory reserved by the application.
    Memzone = 1,
    /// An `rte-ring` ring.
    Ring = 2,
    /// An `rte-mempool` pool header (its objects may live in further zones).
    Mempool = 3,
    /// Object storage belonging to a mempool.
    MempoolObjects = 4,
    /// An `rte-hash-with-hash` table.
    Hash = 5,
    /// IVSHMEM metadata.
    IvshmemMeta = 6,
    /// Anything else a library registers.
    Other = 15,
}

impl ZoneKind {
    /// Decode the value stored in shared memory.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Memzone,
            2 => Self::Ring,
            3 => Self::Mempool,
            4 => Self::MempoolObjects,
            5 => Self::Hash,
            6 => Self::IvshmemMeta,
            15 => Self::Other,
            _ => return None,
        })
    }

    /// A short lower-case name, as shown by tools.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memzone => "memzone",
            Self::Ring => "ring",
            Self::Mempool => "mempool",
            Self::MempoolObjects => "mempool-objects",
            Self::Hash => "hash",
            Self::IvshmemMeta => "ivshmem-meta",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for a new named zone.
#[derive(Debug, Clone)]
pub struct ZoneRequest<'a> {
    /// Unique name within the group (at most [`ZONE_NAME_MAX`] bytes, not empty, no NUL).
    pub name: &'a str,
    /// Length in bytes (not zero).
    pub len: usize,
    /// Alignment of the start, a power of two; at least 64 is used.
    pub align: usize,
    /// What the zone will hold.
    pub kind: ZoneKind,
}

impl<'a> ZoneRequest<'a> {
    /// A request for `len` bytes named `name`, 64-byte aligned.
    pub fn new(name: &'a str, len: usize, kind: ZoneKind) -> Self {
        Self {
            name,
            len,
            align: 64,
            kind,
        }
    }

    /// The same request with another alignment.
    pub fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }
}

/// A named region of shared memory as mapped in this process.
///
/// `Zone` keeps the mapping it points into alive (it holds a reference-counted handle to it), so
/// a data structure may keep a `Zone` for as long as it likes. The memory behind it is shared:
/// read and write it through raw pointers and atomics, never through `&mut [u8]`.
#[derive(Clone)]
pub struct Zone {
    pub(crate) name: String,
    pub(crate) kind: ZoneKind,
    pub(crate) base: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) offset: ShmOffset,
    pub(crate) _keepalive: Arc<dyn Any + Send + Sync>,
}

impl Zone {
    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the zone holds.
    pub fn kind(&self) -> ZoneKind {
        self.kind
    }
    /// Start of the zone in this process's address space.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the zone is empty (never true for a reserved zone).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Where the zone lives in the group's memory (address-independent).
    pub fn offset(&self) -> ShmOffset {
        self.offset
    }
    /// Whether `ptr` points inside this zone.
    pub fn contains(&self, ptr: *const u8) -> bool {
        let start = self.base.as_ptr() as usize;
        let p = ptr as usize;
        p >= start && p < start + self.len
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zone")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base", &self.base)
            .field("len", &self.len)
            .field("offset", &self.offset)
            .finish()
    }
}

/// A zone as listed by [`Zones::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInfo {
    /// Name.
    pub name: String,
    /// What it holds.
    pub kind: ZoneKind,
    /// Length in bytes.
    pub len: usize,
    /// Where it lives.
    pub offset: ShmOffset,
    /// The member that reserved it.
    pub owner: MemberId,
}

/// Why a zone operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneError {
    /// No zone has that name.
    #[error("no zone named {0:?} (it was never created, or was freed)")]
    NotFound(String),
    /// A zone of that name exists already.
    #[error("a zone named {0:?} exists already; pick another name or look the existing one up")]
    Exists(String),
    /// The name is empty, too long or contains NUL.
    #[error("zone name {name:?} is invalid: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The name is longer than [`ZONE_NAME_MAX`].
    #[error("zone name {0:?} is longer than {ZONE_NAME_MAX} bytes")]
    NameTooLong(String),
    /// Length zero, or alignment not a power of two.
    #[error("invalid zone request for {name:?}: {why}")]
    BadRequest {
        /// The name given.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Not enough free memory in the group's segments.
    #[error("no room for zone {name:?} ({len} bytes): {free} bytes free in the largest gap; start the primary with more memory (-m) or free zones")]
    NoMemory {
        /// The name given.
        name: String,
        /// Bytes requested.
        len: usize,
        /// Largest free gap.
        free: usize,
    },
    /// The zone table is full.
    #[error(
        "the zone table is full ({0} zones); free zones or raise the limit when creating the group"
    )]
    TableFull(usize),
    /// The zone exists but holds another kind of object.
    #[error("zone {name:?} holds a {found}, not a {wanted}")]
    WrongKind {
        /// The name given.
        name: String,
        /// The kind asked for.
        wanted: ZoneKind,
        /// The kind found.
        found: ZoneKind,
    },
    /// This view of memory is read-only or does not allow the operation (a guest cannot reserve).
    #[error("operation not supported here: {0}")]
    Unsupported(&'static str),
    /// The shared tables are damaged.
    #[error("the shared zone table is corrupt: {0}")]
    Corrupt(String),
    /// A live member has held the group's table lock for too long (a member that dies holding
    /// it is replaced at once; this one is alive but not letting go).
    #[error("the group's zone table lock has been held for over {waited:?} by {holder} (pid {pid}), which is alive but not letting go: is it stopped (SIGSTOP, a debugger)? Resume it and try again, or kill it and its lock is taken over")]
    LockHeld {
        /// The member holding the lock.
        holder: MemberId,
        /// Its pid (0 if not known).
        pid: u32,
        /// How long this caller waited.
        waited: std::time::Duration,
    },
}

/// Checks a zone name as every [`Zones`] implementation does.
pub fn check_zone_name(name: &str) -> Result<(), ZoneError> {
    if name.is_empty() {
        return Err(ZoneError::BadName {
            name: name.into(),
            why: "it is empty",
        });
    }
    if name.len() > ZONE_NAME_MAX {
        return Err(ZoneError::NameTooLong(name.into()));
    }
    if name.contains('\0') {
        return Err(ZoneError::BadName {
            name: name.into(),
            why: "it contains a NUL byte",
        });
    }
    Ok(())
}

/// Named regions of shared memory, and who is using them.
///
/// Implemented by `procctl::Process` (a member of a running group), by
/// `ivshmem_meta::GuestZones` (a QEMU guest) and by [`crate::LocalZones`] (heap memory, for unit
/// tests and benchmarks). Zones are zeroed when reserved.
///
/// ```
/// use shmconfig::{LocalZones, ZoneKind, ZoneRequest, Zones};
/// let zones = LocalZones::new();
/// let z = zones.reserve(&ZoneRequest::new("counters", 4096, ZoneKind::Memzone)).unwrap();
/// assert_eq!(zones.lookup("counters").unwrap().as_ptr(), z.as_ptr());
/// ```
pub trait Zones {
    /// Reserve a new zone; fails with [`ZoneError::Exists`] if the name is taken. Safe to call
    /// from several members at once.
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError>;
    /// Find a zone by name.
    fn lookup(&self, name: &str) -> Result<Zone, ZoneError>;
    /// Free a zone by name. Memory of a freed zone may be reused; the caller must know nobody
    /// still uses it.
    fn free(&self, name: &str) -> Result<(), ZoneError>;
    /// Every zone, in reservation order.
    fn list(&self) -> Vec<ZoneInfo>;
    /// The calling member's identity.
    fn member(&self) -> MemberId;
    /// What the group knows of another member. Must be cheap (a read of shared memory, or a
    /// syscall at most): it is called from slow paths of lock-free code while waiting.
    fn member_state(&self, member: MemberId) -> MemberState {
        self.liveness().member_state(member)
    }
    /// A shareable handle answering [`Zones::member_state`], for data structures to keep.
    fn liveness(&self) -> Arc<dyn Liveness>;
    /// The lcore the calling thread runs as, if it owns one (used for per-lcore caches).
    fn current_lcore(&self) -> Option<u32> {
        None
    }

    /// Find a zone by name and check it holds `kind`.
    fn lookup_kind(&self, name: &str, kind: ZoneKind) -> Result<Zone, ZoneError> {
        let z = self.lookup(name)?;
        if z.kind() != kind {
            return Err(ZoneError::WrongKind {
                name: name.into(),
                wanted: kind,
                found: z.kind(),
            });
        }
        Ok(z)
    }
}

/// `Zones` through a reference or a shared pointer: every method forwards to the target.
macro_rules! forward_zones {
    ($($ty:ty),*) => {$(
        impl<Z: Zones + ?Sized> Zones for $ty {
            fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
                (**self).reserve(req)
            }
            fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
                (**self).lookup(name)
            }
            fn free(&self, name: &str) -> Result<(), ZoneError> {
                (**self).free(name)
            }
            fn list(&self) -> Vec<ZoneInfo> {
                (**self).list()
            }
            fn member(&self) -> MemberId {
                (**self).member()
            }
            fn member_state(&self, member: MemberId) -> MemberState {
                (**self).member_state(member)
            }
            fn liveness(&self) -> Arc<dyn Liveness> {
                (**self).liveness()
            }
            fn current_lcore(&self) -> Option<u32> {
                (**self).current_lcore()
            }
        }
    )*};
}

forward_zones!(&Z, Arc<Z>);
