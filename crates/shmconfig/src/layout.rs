//! The bytes of the shared configuration: `repr(C)` layouts, their fingerprint, and checks.
//!
//! The configuration is one mapping (a file `<runtime dir>/<prefix>/config`, or a memfd with
//! `--in-memory`) laid out as:
//!
//! ```text
//! offset 0           ConfigHeader   magic, versions, fingerprint, state, group settings,
//!                                   table lock, clock record, segment table, member table,
//!                                   lcore table
//! header.zones_off   [ZoneEntry; header.max_zones]   the memzone table, which is also the
//!                                   named-object registry (kind + name + place)
//! ```
//!
//! Every field that changes after the group is published (`state == Ready`) is an atomic and is
//! read and written through atomic operations only. Plain fields are written by the primary before
//! publication (or under the table lock, for zone names) and never change while others may read
//! them.
//!
//! [`FINGERPRINT`] hashes the size and the offset of every field of every shared layout, plus the
//! limits; a secondary built with any other layout is refused before it trusts a byte.

use std::sync::atomic::{AtomicU32, AtomicU64};

use zerocopy::{FromBytes, KnownLayout};

/// The first eight bytes of a hugeshare configuration.
pub const MAGIC: [u8; 8] = *b"HUGESHR\x01";
/// Version of the configuration layout; bumped on any change of meaning (2: the table lock word
/// is 64 bits and records its holder's incarnation, see [`ConfigHeader::table_lock`]; member
/// slots have a JOINING state, see [`member_state`]).
pub const LAYOUT_VERSION: u32 = 2;
/// The most segments a group can have.
pub const MAX_SEGMENTS: usize = 64;
/// The most members (processes) a group can have at once.
pub const MAX_MEMBERS: usize = 128;
/// The most logical cores (lcores) a group can hand out; lcore ids are `0..MAX_LCORES`.
pub const MAX_LCORES: usize = 128;
/// The default size of the zone table.
pub const DEFAULT_MAX_ZONES: u32 = 2560;
/// Length of a zone name buffer (names are at most 63 bytes).
pub const NAME_LEN: usize = 64;
/// Length of a path buffer.
pub const PATH_LEN: usize = 256;

/// Lifecycle of a configuration, in [`ConfigHeader::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ConfigState {
    /// Being written by the primary: do not trust anything else yet.
    Creating = 1,
    /// Published: secondaries may attach.
    Ready = 2,
    /// The primary left cleanly; the group is over.
    Closed = 3,
}

impl ConfigState {
    /// Decode.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Creating,
            2 => Self::Ready,
            3 => Self::Closed,
            _ => return None,
        })
    }
}

/// Group-wide flags in [`ConfigHeader::flags`], fixed by the primary and inherited by
/// secondaries (they never re-specify them).
pub mod group_flags {
    /// Memory is 4 KiB pages in `/dev/shm` (`--no-huge`).
    pub const NO_HUGE: u32 = 1 << 0;
    /// Nothing on disk: segments and the config are memfds passed over the group socket.
    pub const IN_MEMORY: u32 = 1 << 1;
    /// Hugepages were not populated at start (faulted on first touch).
    pub const LAZY: u32 = 1 << 2;
}

/// Backing of a segment, in [`SegmentEntry::backing`].
pub mod backing {
    /// A file in a hugetlbfs mount.
    pub const HUGETLBFS: u32 = 1;
    /// A file in `/dev/shm` (4 KiB pages).
    pub const SHM: u32 = 2;
    /// A memfd (passed by descriptor).
    pub const MEMFD: u32 = 3;
}

/// States of a member slot, in [`MemberEntry::state`].
pub mod member_state {
    /// Never used, or cleaned up.
    pub const FREE: u32 = 0;
    /// In use by a live member (which holds the slot's lock).
    pub const ALIVE: u32 = 1;
    /// Left cleanly (transient: becomes FREE).
    pub const LEFT: u32 = 2;
    /// Taken by a process that is joining: it holds the slot's lock and may hold the table
    /// lock, but is not a member yet (becomes ALIVE, or FREE if the join fails). A slot in this
    /// state whose lock nobody holds is free (its joiner died).
    pub const JOINING: u32 = 3;
}

/// States of a zone entry, in [`ZoneEntry::state`].
pub mod zone_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// In use.
    pub const USED: u32 = 2;
}

/// The group's clock, as chosen by the primary (filled in by `procctl` from `tsc-hpet`).
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct ClockRecordRaw {
    /// `tsc_hpet::ClockKind` as u32; 0 = not recorded.
    pub kind: AtomicU32,
    /// Where the frequency came from (`tsc_hpet::FrequencySource` as u32).
    pub source: AtomicU32,
    /// Cycles per second.
    pub hz: AtomicU64,
}

/// One memory segment of the group.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct SegmentEntry {
    /// 0 = unused, 1 = in use. Written before `n_segments` is raised.
    pub used: u32,
    /// One of [`backing`].
    pub backing: u32,
    /// Page size in bytes.
    pub page_size: u64,
    /// Length in bytes.
    pub len: u64,
    /// Offset of the segment in the primary's virtual-address window.
    pub window_offset: u64,
    /// NUMA node the memory was asked from (`u32::MAX` = any).
    pub node: u32,
    /// Index N of the file name `<prefix>map_<N>`.
    pub file_index: u32,
    /// Path of the backing file (empty for memfd), NUL-padded.
    pub path: [u8; PATH_LEN],
}

/// One member (process) slot.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct MemberEntry {
    /// One of [`member_state`].
    pub state: AtomicU32,
    /// 1 = primary, 2 = secondary.
    pub role: AtomicU32,
    /// Process id (in the primary's pid namespace, for display).
    pub pid: AtomicU32,
    /// Raised each time the slot is taken, so a watcher can tell two occupants apart.
    pub generation: AtomicU32,
    /// Lcores owned, as a bitmap.
    pub lcores: [AtomicU64; MAX_LCORES / 64],
    /// When it joined (CLOCK_REALTIME nanoseconds).
    pub joined_ns: AtomicU64,
    /// The clock this member uses (`tsc_hpet::ClockKind` as u32, 0 = unknown).
    pub clock_kind: AtomicU32,
    /// How the previous occupant ended: 0 = unknown, 1 = left cleanly, 2 = died.
    pub exit_kind: AtomicU32,
    /// Process name (first 16 bytes of `comm`), for messages; written by the member while it
    /// holds the slot's lock, before it sets `state` to ALIVE.
    pub name: [AtomicU64; 2],
}

/// One named zone: a region of a segment, and the object it holds.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct ZoneEntry {
    /// One of [`zone_state`].
    pub state: AtomicU32,
    /// `ZoneKind` as u32.
    pub kind: AtomicU32,
    /// Segment index.
    pub segment: AtomicU32,
    /// Member slot that reserved it.
    pub owner: AtomicU32,
    /// Offset in the segment.
    pub offset: AtomicU64,
    /// Length in bytes.
    pub len: AtomicU64,
    /// Alignment asked for.
    pub align: AtomicU64,
    /// Name, NUL-padded. Written and read only under the table lock.
    pub name: [u8; NAME_LEN],
}

/// The header of the shared configuration (offset 0).
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct ConfigHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// `size_of::<ConfigHeader>()`.
    pub header_size: u32,
    /// [`FINGERPRINT`].
    pub fingerprint: u64,
    /// The primary's build version (`CARGO_PKG_VERSION` of shmconfig), NUL-padded.
    pub build_version: [u8; 32],
    /// A [`ConfigState`].
    pub state: AtomicU32,
    /// [`group_flags`].
    pub flags: u32,
    /// A number unique to this primary's run (time-based), so that a guest or a tool can tell a
    /// restarted group from the one it saw.
    pub generation: u64,
    /// The primary's pid.
    pub primary_pid: AtomicU32,
    /// Size of the zone table.
    pub max_zones: u32,
    /// Offset of the zone table from the start of the configuration.
    pub zones_off: u64,
    /// Length of the whole configuration in bytes.
    pub total_len: u64,
    /// The memory limit the primary was given, in bytes.
    pub mem_limit: u64,
    /// Base of the primary's virtual-address window (segments are mapped inside it).
    pub window_base: u64,
    /// Length of that window.
    pub window_len: u64,
    /// The group's prefix, NUL-padded.
    pub prefix: [u8; NAME_LEN],
    /// Directory of the segment files, NUL-padded (empty for memfd).
    pub seg_dir: [u8; PATH_LEN],
    /// Lock over the zone, member and lcore tables: 0 = free; held: the holder's member slot + 1
    /// in the low half, its incarnation (`Liveness::incarnation`, procctl's slot generation; 0
    /// if unknown) in the high half. A holder found dead, or whose slot now holds another
    /// incarnation, is replaced (see `Tables::lock`).
    pub table_lock: AtomicU64,
    /// Zone reservations since start (for tools).
    pub zone_ops: AtomicU64,
    /// Number of segments in use.
    pub n_segments: AtomicU32,
    /// Reserved, zero.
    pub _pad0: u32,
    /// The group's clock.
    pub clock: ClockRecordRaw,
    /// Segments.
    pub segments: [SegmentEntry; MAX_SEGMENTS],
    /// Member slots.
    pub members: [MemberEntry; MAX_MEMBERS],
    /// Lcore owners: 0 = free, else owner's member slot + 1.
    pub lcores: [AtomicU32; MAX_LCORES],
    /// A field that exists only in builds with the test-only feature `layout-test-extra-field`,
    /// so that the layout-mismatch scenario runs a really different layout.
    #[cfg(feature = "layout-test-extra-field")]
    pub test_extra: AtomicU64,
}

const _: () = {
    // The tables must need no padding-sensitive tricks: every entry is 8-byte aligned.
    assert!(std::mem::size_of::<ZoneEntry>() % 8 == 0);
    assert!(std::mem::size_of::<MemberEntry>() % 8 == 0);
    assert!(std::mem::size_of::<SegmentEntry>() % 8 == 0);
    assert!(std::mem::size_of::<ConfigHeader>() % 8 == 0);
};

/// Bytes needed for a configuration with `max_zones` zones, rounded up to 4 KiB.
pub const fn config_len(max_zones: u32) -> usize {
    let raw = zones_off() + max_zones as usize * std::mem::size_of::<ZoneEntry>();
    raw.div_ceil(4096) * 4096
}

/// Offset of the zone table: right after the header, 64-byte aligned.
pub const fn zones_off() -> usize {
    std::mem::size_of::<ConfigHeader>().div_ceil(64) * 64
}

const fn fnv(mut h: u64, v: u64) -> u64 {
    let mut i = 0;
    while i < 8 {
        h ^= (v >> (i * 8)) & 0xff;
        h = h.wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
}

macro_rules! fp {
    ($h:ident, $t:ty { $($f:ident),* $(,)? }) => {{
        $h = fnv($h, std::mem::size_of::<$t>() as u64);
        $h = fnv($h, std::mem::align_of::<$t>() as u64);
        $( $h = fnv($h, std::mem::offset_of!($t, $f) as u64); )*
    }};
}

const fn compute_fingerprint() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    fp!(h, ClockRecordRaw { kind, source, hz });
    fp!(
        h,
        SegmentEntry {
            used,
            backing,
            page_size,
            len,
            window_offset,
            node,
            file_index,
            path
        }
    );
    fp!(
        h,
        MemberEntry {
            state,
            role,
            pid,
            generation,
            lcores,
            joined_ns,
            clock_kind,
            exit_kind,
            name
        }
    );
    fp!(
        h,
        ZoneEntry {
            state,
            kind,
            segment,
            owner,
            offset,
            len,
            align,
            name
        }
    );
    fp!(
        h,
        ConfigHeader {
            magic,
            layout_version,
            header_size,
            fingerprint,
            build_version,
            state,
            flags,
            generation,
            primary_pid,
            max_zones,
            zones_off,
            total_len,
            mem_limit,
            window_base,
            window_len,
            prefix,
            seg_dir,
            table_lock,
            zone_ops,
            n_segments,
            _pad0,
            clock,
            segments,
            members,
            lcores
        }
    );
    h = fnv(h, MAX_SEGMENTS as u64);
    h = fnv(h, MAX_MEMBERS as u64);
    h = fnv(h, MAX_LCORES as u64);
    h = fnv(h, NAME_LEN as u64);
    h = fnv(h, PATH_LEN as u64);
    h
}

/// A hash of the size and offset of every field of every shared layout, and of the limits.
pub const FINGERPRINT: u64 = compute_fingerprint();

/// The version string recorded by the primary.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Copy `s` into a NUL-padded buffer; `None` if it does not fit (one byte stays NUL).
pub fn to_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() >= N || b.contains(&0) {
        return None;
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Some(out)
}

/// The string in a NUL-padded buffer (lossy for invalid UTF-8, which only a corrupt file has).
pub fn from_fixed(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Check that `bytes` (the first bytes of a file or mapping) are a configuration this build can
/// use, naming the first field that differs. `what` names the file in messages.
pub fn check_header_bytes(bytes: &[u8], what: &str) -> Result<(), LayoutError> {
    let need = std::mem::size_of::<ConfigHeader>().min(8 + 4 + 4 + 8 + 32);
    if bytes.len() < 8 {
        return Err(LayoutError::TooShort {
            what: what.into(),
            len: bytes.len(),
            need,
        });
    }
    if bytes[..8] != MAGIC {
        return Err(LayoutError::Foreign {
            what: what.into(),
            found: bytes[..8].to_vec(),
        });
    }
    if bytes.len() < need {
        return Err(LayoutError::TooShort {
            what: what.into(),
            len: bytes.len(),
            need,
        });
    }
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let version = from_fixed(&bytes[24..56]);
    let lv = u32_at(8);
    if lv != LAYOUT_VERSION {
        return Err(LayoutError::Mismatch {
            what: what.into(),
            field: "layout_version",
            primary: lv.to_string(),
            ours: LAYOUT_VERSION.to_string(),
            primary_version: version,
        });
    }
    let hs = u32_at(12);
    if hs as usize != std::mem::size_of::<ConfigHeader>() {
        return Err(LayoutError::Mismatch {
            what: what.into(),
            field: "header_size",
            primary: hs.to_string(),
            ours: std::mem::size_of::<ConfigHeader>().to_string(),
            primary_version: version,
        });
    }
    let fpv = u64_at(16);
    if fpv != FINGERPRINT {
        return Err(LayoutError::Mismatch {
            what: what.into(),
            field: "fingerprint",
            primary: format!("{fpv:#018x}"),
            ours: format!("{FINGERPRINT:#018x}"),
            primary_version: version,
        });
    }
    if version != BUILD_VERSION {
        return Err(LayoutError::Mismatch {
            what: what.into(),
            field: "build_version",
            primary: version.clone(),
            ours: BUILD_VERSION.into(),
            primary_version: version,
        });
    }
    Ok(())
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// Not a hugeshare configuration at all.
    #[error("{what} is not a hugeshare configuration (first bytes {found:02x?}, expected {MAGIC:02x?}); check --file-prefix and the runtime directory, or remove the file if nothing uses it")]
    Foreign {
        /// The file.
        what: String,
        /// The bytes found.
        found: Vec<u8>,
    },
    /// Truncated.
    #[error("{what} is truncated ({len} bytes, at least {need} needed); the primary may have died while creating it: start the primary again")]
    TooShort {
        /// The file.
        what: String,
        /// Its length.
        len: usize,
        /// Needed.
        need: usize,
    },
    /// A different layout or version.
    #[error("{what}: {field} differs: primary has {primary}, this process has {ours} (primary built from hugeshare {primary_version}, this process from {BUILD_VERSION}); rebuild this program against the same hugeshare version and features as the primary")]
    Mismatch {
        /// The file.
        what: String,
        /// The field that differs first.
        field: &'static str,
        /// The primary's value.
        primary: String,
        /// Ours.
        ours: String,
        /// The primary's build version.
        primary_version: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_header_bytes() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
        b[12..16].copy_from_slice(&(std::mem::size_of::<ConfigHeader>() as u32).to_ne_bytes());
        b[16..24].copy_from_slice(&FINGERPRINT.to_ne_bytes());
        b[24..24 + BUILD_VERSION.len()].copy_from_slice(BUILD_VERSION.as_bytes());
        b
    }

    #[test]
    fn header_offsets_match_the_checker() {
        assert_eq!(std::mem::offset_of!(ConfigHeader, layout_version), 8);
        assert_eq!(std::mem::offset_of!(ConfigHeader, header_size), 12);
        assert_eq!(std::mem::offset_of!(ConfigHeader, fingerprint), 16);
        assert_eq!(std::mem::offset_of!(ConfigHeader, build_version), 24);
    }

    #[test]
    fn accepts_own_header() {
        check_header_bytes(&good_header_bytes(), "cfg").unwrap();
    }

    #[test]
    fn names_the_field_that_differs() {
        let mut b = good_header_bytes();
        b[0] = b'X';
        assert!(matches!(
            check_header_bytes(&b, "cfg"),
            Err(LayoutError::Foreign { .. })
        ));
        let mut b = good_header_bytes();
        b[8] ^= 1;
        match check_header_bytes(&b, "cfg") {
            Err(LayoutError::Mismatch { field, .. }) => assert_eq!(field, "layout_version"),
            other => panic!("{other:?}"),
        }
        let mut b = good_header_bytes();
        b[16] ^= 1;
        let e = check_header_bytes(&b, "/run/x/config").unwrap_err();
        assert!(matches!(
            e,
            LayoutError::Mismatch {
                field: "fingerprint",
                ..
            }
        ));
        assert!(e.to_string().contains("/run/x/config"), "{e}");
        let mut b = good_header_bytes();
        b[24] = b'9';
        assert!(matches!(
            check_header_bytes(&b, "cfg"),
            Err(LayoutError::Mismatch {
                field: "build_version",
                ..
            })
        ));
        assert!(matches!(
            check_header_bytes(&b[..20], "cfg"),
            Err(LayoutError::TooShort { .. })
        ));
        assert!(matches!(
            check_header_bytes(&[], "cfg"),
            Err(LayoutError::TooShort { .. })
        ));
    }

    #[test]
    fn fixed_strings() {
        let b: [u8; 8] = to_fixed("abc").unwrap();
        assert_eq!(from_fixed(&b), "abc");
        assert!(to_fixed::<4>("abcd").is_none());
        assert!(to_fixed::<8>("a\0b").is_none());
    }

    #[test]
    fn layout_is_reasonable() {
        assert!(
            config_len(DEFAULT_MAX_ZONES) < 2 << 20,
            "{}",
            config_len(DEFAULT_MAX_ZONES)
        );
        assert_eq!(zones_off() % 64, 0);
    }
}
