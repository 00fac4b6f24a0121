//! Checking the values a member takes from a live configuration before it uses any of them.
//!
//! [`layout::check_header_bytes`] proves that a configuration was written with this build's
//! layout; it says nothing of the values in it. A configuration damaged, edited by hand or written
//! by a hostile process can name a window of zero bytes, a page size of zero, an unknown backing,
//! or a segment "file" such as `/etc/passwd` that a secondary would then map writable.
//! [`read_group_memory`] reads every field a member relies on to map the group's memory from a
//! *copy* of the header (so nothing can change between the check and the use), checks each
//! against what a primary of this build writes, and refuses the first one that is out of range
//! or inconsistent with the others, naming it ([`BadField`]).
//!
//! What cannot be checked from the bytes alone (that a segment file really is on hugetlbfs or
//! tmpfs, and that its page size is the recorded one) is for the caller to check on the opened
//! file; `procctl` does, before it maps anything.

use std::mem::{offset_of, size_of};
use std::path::{Component, Path, PathBuf};

use crate::layout::{
    self, backing, group_flags, ConfigHeader, SegmentEntry, ZoneEntry, MAX_SEGMENTS, NAME_LEN,
    PATH_LEN,
};

/// The smallest page size a segment can have (the base page of every supported machine).
pub const MIN_PAGE_SIZE: u64 = 4096;
/// The largest page size a segment can have (16 GiB, the largest hugepage any Linux machine
/// offers; x86-64's largest is 1 GiB).
pub const MAX_PAGE_SIZE: u64 = 16 << 30;
/// The largest address window a group can have: 128 TiB, all the user address space of an
/// x86-64 process with 4-level page tables (and more than any `-m` a primary accepts).
pub const MAX_WINDOW_LEN: u64 = 1 << 47;
/// No address window lies above this (57-bit virtual addresses, 5-level page tables).
pub const MAX_WINDOW_END: u64 = 1 << 57;
/// The largest zone table a configuration can have (as `--max-zones` allows).
pub const MAX_ZONES_LIMIT: u32 = 1 << 20;

/// One segment of the group, as the configuration describes it (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDesc {
    /// Its index in the segment table.
    pub index: usize,
    /// One of [`backing`].
    pub backing: u32,
    /// Page size in bytes: a power of two in `MIN_PAGE_SIZE..=MAX_PAGE_SIZE`.
    pub page_size: u64,
    /// Length in bytes: non-zero, a multiple of `page_size`.
    pub len: u64,
    /// Offset in the window: a multiple of `page_size`, right after the previous segment.
    pub window_offset: u64,
    /// NUMA node it was asked from (`u32::MAX` = any).
    pub node: u32,
    /// Index N of its file name `<prefix>map_<N>`.
    pub file_index: u32,
    /// The backing file: an absolute path in the group's segment directory, named
    /// `<prefix>map_<file_index>`. `None` for a memfd.
    pub path: Option<PathBuf>,
}

/// The group's memory as its configuration describes it: every value checked by
/// [`read_group_memory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemory {
    /// [`group_flags`] (no unknown bit set).
    pub flags: u32,
    /// Size of the zone table (the table fits in the configuration).
    pub max_zones: u32,
    /// The memory the primary was given (`-m` or `--socket-mem` in all), in bytes; for messages.
    pub mem_limit: u64,
    /// The directory of the segment files (`None` for memfds).
    pub seg_dir: Option<PathBuf>,
    /// Base of the primary's address window (page-aligned).
    pub window_base: u64,
    /// Length of the window: the segments' lengths added up.
    pub window_len: u64,
    /// The segments, at least one, all with the same backing and page size.
    pub segments: Vec<SegmentDesc>,
}

impl GroupMemory {
    /// The backing of the group's segments (one of [`backing`]).
    pub fn backing(&self) -> u32 {
        self.segments[0].backing
    }
    /// The page size of the group's segments.
    pub fn page_size(&self) -> u64 {
        self.segments[0].page_size
    }
}

/// A field of a configuration that a member cannot use: which one (as `window_len` or
/// `segments[2].page_size`), the value found and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field} is {value}: {why}")]
pub struct BadField {
    /// The field, named as in [`ConfigHeader`] (`segments[i].name` for a segment's).
    pub field: String,
    /// The value found, as text.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

fn bad(field: impl Into<String>, value: impl ToString, why: impl Into<String>) -> BadField {
    BadField {
        field: field.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// The name of a backing constant, for messages.
pub fn backing_name(b: u32) -> &'static str {
    match b {
        backing::HUGETLBFS => "hugetlbfs",
        backing::SHM => "shm",
        backing::MEMFD => "memfd",
        _ => "unknown",
    }
}

/// A NUL-padded string field: it must hold a NUL (a primary always leaves one) and be UTF-8.
fn fixed_str(field: &str, b: &[u8]) -> Result<String, BadField> {
    let Some(end) = b.iter().position(|&c| c == 0) else {
        return Err(bad(
            field,
            format!("{:?}…", String::from_utf8_lossy(&b[..32.min(b.len())])),
            "it is not NUL-terminated",
        ));
    };
    std::str::from_utf8(&b[..end])
        .map(str::to_owned)
        .map_err(|_| bad(field, format!("{:02x?}", &b[..end]), "it is not UTF-8"))
}

/// Read and check, from `bytes` (a copy of at least the header of a configuration whose header
/// [`layout::check_header_bytes`] accepted), every field a member uses to map the group's
/// memory: the flags, the zone table's size and place, `n_segments`, the address window and each
/// segment in use (its backing, page size, length, place in the window, and path). `map_len` is
/// the length of the configuration as mapped; `prefix` is the group the caller meant to join,
/// which the configuration must name.
///
/// ```
/// use shmconfig::validate::read_group_memory;
/// // An all-zero header is refused, naming the first field that is wrong.
/// let bytes = vec![0u8; std::mem::size_of::<shmconfig::layout::ConfigHeader>()];
/// let e = read_group_memory(&bytes, 1 << 20, "g").unwrap_err();
/// assert_eq!(e.field, "zones_off");
/// ```
pub fn read_group_memory(
    bytes: &[u8],
    map_len: usize,
    prefix: &str,
) -> Result<GroupMemory, BadField> {
    type H = ConfigHeader;
    type S = SegmentEntry;
    if bytes.len() < size_of::<H>() {
        return Err(bad(
            "total_len",
            bytes.len(),
            format!("the header alone needs {} bytes", size_of::<H>()),
        ));
    }
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));

    // The zone table: where the layout puts it, and inside the configuration.
    let zones_off = u64_at(offset_of!(H, zones_off));
    if zones_off != layout::zones_off() as u64 {
        return Err(bad(
            "zones_off",
            zones_off,
            format!("this layout puts the zone table at {}", layout::zones_off()),
        ));
    }
    let total_len = u64_at(offset_of!(H, total_len));
    if total_len > map_len as u64 || total_len < size_of::<H>() as u64 {
        return Err(bad(
            "total_len",
            total_len,
            format!(
                "the configuration is {map_len} bytes long and its header {} bytes",
                size_of::<H>()
            ),
        ));
    }
    let max_zones = u32_at(offset_of!(H, max_zones));
    if max_zones == 0 || max_zones > MAX_ZONES_LIMIT {
        return Err(bad(
            "max_zones",
            max_zones,
            format!("a zone table has 1 to {MAX_ZONES_LIMIT} entries"),
        ));
    }
    let table_end = zones_off + u64::from(max_zones) * size_of::<ZoneEntry>() as u64;
    if table_end > total_len {
        return Err(bad(
            "max_zones",
            max_zones,
            format!("a table of {max_zones} zones ends at byte {table_end}, past the configuration's {total_len} bytes"),
        ));
    }

    let flags = u32_at(offset_of!(H, flags));
    let known = group_flags::NO_HUGE | group_flags::IN_MEMORY | group_flags::LAZY;
    if flags & !known != 0 {
        return Err(bad(
            "flags",
            format!("{flags:#x}"),
            format!("only NO_HUGE, IN_MEMORY and LAZY ({known:#x}) exist"),
        ));
    }
    let header_prefix = fixed_str("prefix", &bytes[offset_of!(H, prefix)..][..NAME_LEN])?;
    if header_prefix != prefix {
        return Err(bad(
            "prefix",
            format!("{header_prefix:?}"),
            format!(
                "this process joins group {prefix:?}; the configuration belongs to another group"
            ),
        ));
    }
    let seg_dir = fixed_str("seg_dir", &bytes[offset_of!(H, seg_dir)..][..PATH_LEN])?;

    let n = u32_at(offset_of!(H, n_segments));
    if n == 0 || n as usize > MAX_SEGMENTS {
        return Err(bad(
            "n_segments",
            n,
            format!("a group has 1 to {MAX_SEGMENTS} segments"),
        ));
    }
    let window_base = u64_at(offset_of!(H, window_base));
    let window_len = u64_at(offset_of!(H, window_len));
    if window_len == 0 || window_len > MAX_WINDOW_LEN {
        return Err(bad(
            "window_len",
            window_len,
            format!("a group's address window is 1 byte to {MAX_WINDOW_LEN} bytes (128 TiB)"),
        ));
    }
    if window_base % MIN_PAGE_SIZE != 0
        || window_base
            .checked_add(window_len)
            .is_none_or(|end| end > MAX_WINDOW_END)
    {
        return Err(bad(
            "window_base",
            format!("{window_base:#x}"),
            format!("a window of {window_len} bytes cannot start there (page-aligned, ending below {MAX_WINDOW_END:#x})"),
        ));
    }

    let mut segments = Vec::with_capacity(n as usize);
    let mut next_offset = 0u64;
    for i in 0..n as usize {
        let base = offset_of!(H, segments) + i * size_of::<S>();
        let f = |name: &str| format!("segments[{i}].{name}");
        let used = u32_at(base + offset_of!(S, used));
        if used != 1 {
            return Err(bad(
                f("used"),
                used,
                format!("n_segments is {n}, so segment {i} must be in use (1)"),
            ));
        }
        let bk = u32_at(base + offset_of!(S, backing));
        if !matches!(bk, backing::HUGETLBFS | backing::SHM | backing::MEMFD) {
            return Err(bad(
                f("backing"),
                bk,
                format!(
                    "the backings are {} (hugetlbfs), {} (shm) and {} (memfd)",
                    backing::HUGETLBFS,
                    backing::SHM,
                    backing::MEMFD
                ),
            ));
        }
        let in_memory = flags & group_flags::IN_MEMORY != 0;
        if in_memory != (bk == backing::MEMFD) {
            return Err(bad(
                f("backing"),
                format!("{bk} ({})", backing_name(bk)),
                if in_memory {
                    "the group's flags say in-memory, whose segments are memfds"
                } else {
                    "a memfd segment needs an in-memory group (its flags say it is not)"
                },
            ));
        }
        let ps = u64_at(base + offset_of!(S, page_size));
        if !ps.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps) {
            return Err(bad(
                f("page_size"),
                ps,
                format!(
                    "a page size is a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE} bytes"
                ),
            ));
        }
        if let Some(first) = segments.first() {
            let first: &SegmentDesc = first;
            if bk != first.backing {
                return Err(bad(
                    f("backing"),
                    bk,
                    format!(
                        "segment 0's is {}: a group's segments share one backing",
                        first.backing
                    ),
                ));
            }
            if ps != first.page_size {
                return Err(bad(
                    f("page_size"),
                    ps,
                    format!(
                        "segment 0's is {}: a group's segments share one page size",
                        first.page_size
                    ),
                ));
            }
        }
        let len = u64_at(base + offset_of!(S, len));
        if len == 0 || len % ps != 0 {
            return Err(bad(
                f("len"),
                len,
                format!("a segment is a non-zero multiple of its page size ({ps})"),
            ));
        }
        let woff = u64_at(base + offset_of!(S, window_offset));
        if woff != next_offset {
            return Err(bad(
                f("window_offset"),
                woff,
                format!("segments follow each other from offset 0 of the window: segment {i} starts at {next_offset}"),
            ));
        }
        next_offset = match woff.checked_add(len) {
            Some(end) if end <= window_len => end,
            _ => {
                return Err(bad(
                    f("len"),
                    len,
                    format!("at offset {woff} it runs past the window's {window_len} bytes"),
                ))
            }
        };
        let file_index = u32_at(base + offset_of!(S, file_index));
        let raw_path = &bytes[base + offset_of!(S, path)..][..PATH_LEN];
        let path = fixed_str(&f("path"), raw_path)?;
        let path = if bk == backing::MEMFD {
            if !path.is_empty() {
                return Err(bad(
                    f("path"),
                    format!("{path:?}"),
                    "a memfd segment has no file",
                ));
            }
            None
        } else {
            Some(check_segment_path(
                &f("path"),
                &path,
                &seg_dir,
                prefix,
                file_index,
            )?)
        };
        segments.push(SegmentDesc {
            index: i,
            backing: bk,
            page_size: ps,
            len,
            window_offset: woff,
            node: u32_at(base + offset_of!(S, node)),
            file_index,
            path,
        });
    }
    if next_offset != window_len {
        return Err(bad(
            "window_len",
            window_len,
            format!("the {n} segment(s) cover {next_offset} bytes"),
        ));
    }
    Ok(GroupMemory {
        flags,
        max_zones,
        mem_limit: u64_at(offset_of!(H, mem_limit)),
        seg_dir: (!seg_dir.is_empty()).then(|| PathBuf::from(seg_dir)),
        window_base,
        window_len,
        segments,
    })
}

/// A file-backed segment's path: absolute, without `.` or `..`, in the segment directory the
/// header names, and named `<prefix>map_<file_index>` as a primary names its files.
fn check_segment_path(
    field: &str,
    path: &str,
    seg_dir: &str,
    prefix: &str,
    file_index: u32,
) -> Result<PathBuf, BadField> {
    let p = Path::new(path);
    let shown = format!("{path:?}");
    if path.is_empty() {
        return Err(bad(
            field,
            shown,
            "a file-backed segment needs its file's path",
        ));
    }
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(bad(
            field,
            shown,
            "a segment's path is absolute, without '.' or '..'",
        ));
    }
    if p.parent() != Some(Path::new(seg_dir)) {
        return Err(bad(
            field,
            shown,
            format!("the group's segment files are in seg_dir {seg_dir:?}"),
        ));
    }
    let name = format!("{prefix}map_{file_index}");
    if p.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) {
        return Err(bad(
            field,
            shown,
            format!("this segment's file is named {name:?} (<prefix>map_<file_index>)"),
        ));
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    type H = ConfigHeader;
    type S = SegmentEntry;

    /// The header of a good file-backed group of two 2 MiB-page segments, as bytes.
    fn good() -> Vec<u8> {
        let mut b = vec![0u8; size_of::<H>()];
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        put(
            offset_of!(H, zones_off),
            &(layout::zones_off() as u64).to_ne_bytes(),
        );
        put(
            offset_of!(H, total_len),
            &(layout::config_len(16) as u64).to_ne_bytes(),
        );
        put(offset_of!(H, max_zones), &16u32.to_ne_bytes());
        put(offset_of!(H, prefix), b"g1");
        put(offset_of!(H, seg_dir), b"/dev/hugepages");
        put(offset_of!(H, n_segments), &2u32.to_ne_bytes());
        put(
            offset_of!(H, window_base),
            &0x2000_0000_0000u64.to_ne_bytes(),
        );
        put(offset_of!(H, window_len), &(8u64 << 20).to_ne_bytes());
        for i in 0..2usize {
            let s = offset_of!(H, segments) + i * size_of::<S>();
            put(s + offset_of!(S, used), &1u32.to_ne_bytes());
            put(
                s + offset_of!(S, backing),
                &backing::HUGETLBFS.to_ne_bytes(),
            );
            put(s + offset_of!(S, page_size), &(2u64 << 20).to_ne_bytes());
            put(s + offset_of!(S, len), &(4u64 << 20).to_ne_bytes());
            put(
                s + offset_of!(S, window_offset),
                &(i as u64 * (4 << 20)).to_ne_bytes(),
            );
            put(s + offset_of!(S, file_index), &(i as u32 + 3).to_ne_bytes());
            let path = format!("/dev/hugepages/g1map_{}", i + 3);
            put(s + offset_of!(S, path), path.as_bytes());
        }
        b
    }

    fn set(b: &mut [u8], o: usize, v: &[u8]) {
        b[o..o + v.len()].copy_from_slice(v);
    }

    fn seg(i: usize, o: usize) -> usize {
        offset_of!(H, segments) + i * size_of::<S>() + o
    }

    fn refused(b: &[u8]) -> BadField {
        read_group_memory(b, layout::config_len(16), "g1").unwrap_err()
    }

    #[test]
    fn accepts_what_a_primary_writes() {
        let g = read_group_memory(&good(), layout::config_len(16), "g1").unwrap();
        assert_eq!(g.segments.len(), 2);
        assert_eq!(g.window_len, 8 << 20);
        assert_eq!(g.page_size(), 2 << 20);
        assert_eq!(g.backing(), backing::HUGETLBFS);
        assert_eq!(
            g.segments[1].path.as_deref(),
            Some(Path::new("/dev/hugepages/g1map_4"))
        );
        assert_eq!(g.segments[1].window_offset, 4 << 20);
    }

    /// Each hand edit of the issue, and its neighbours, is refused naming the field.
    #[test]
    fn refuses_each_bad_field_naming_it() {
        let path = |p: &[u8]| {
            let mut b = vec![0u8; PATH_LEN];
            b[..p.len()].copy_from_slice(p);
            b
        };
        let u32b = |v: u32| v.to_ne_bytes().to_vec();
        let u64b = |v: u64| v.to_ne_bytes().to_vec();
        // (the field the refusal must name, where to write, what)
        let cases: Vec<(&str, usize, Vec<u8>)> = vec![
            ("window_len", offset_of!(H, window_len), u64b(0)),
            ("window_len", offset_of!(H, window_len), u64b(u64::MAX)),
            ("window_len", offset_of!(H, window_len), u64b(10 << 20)),
            ("n_segments", offset_of!(H, n_segments), u32b(0)),
            ("n_segments", offset_of!(H, n_segments), u32b(65)),
            ("segments[2].used", offset_of!(H, n_segments), u32b(3)),
            (
                "segments[0].page_size",
                seg(0, offset_of!(S, page_size)),
                u64b(0),
            ),
            (
                "segments[1].page_size",
                seg(1, offset_of!(S, page_size)),
                u64b(3000),
            ),
            (
                "segments[1].page_size",
                seg(1, offset_of!(S, page_size)),
                u64b(4096),
            ),
            (
                "segments[0].backing",
                seg(0, offset_of!(S, backing)),
                u32b(99),
            ),
            (
                "segments[1].backing",
                seg(1, offset_of!(S, backing)),
                u32b(backing::SHM),
            ),
            (
                "segments[0].backing",
                seg(0, offset_of!(S, backing)),
                u32b(backing::MEMFD),
            ),
            ("segments[0].len", seg(0, offset_of!(S, len)), u64b(4096)),
            (
                "segments[1].len",
                seg(1, offset_of!(S, len)),
                u64b(u64::MAX),
            ),
            (
                "segments[1].window_offset",
                seg(1, offset_of!(S, window_offset)),
                u64b(0),
            ),
            (
                "segments[0].path",
                seg(0, offset_of!(S, path)),
                path(b"/etc/passwd"),
            ),
            (
                "segments[0].path",
                seg(0, offset_of!(S, path)),
                path(b"g1map_3"),
            ),
            (
                "segments[0].path",
                seg(0, offset_of!(S, path)),
                path(b"/dev/hugepages/../hugepages/g1map_3"),
            ),
            ("segments[1].path", seg(1, offset_of!(S, path)), path(b"")),
            (
                "segments[1].path",
                seg(1, offset_of!(S, path)),
                vec![b'a'; PATH_LEN],
            ),
            (
                "segments[1].path",
                seg(1, offset_of!(S, file_index)),
                u32b(9),
            ),
            ("window_base", offset_of!(H, window_base), u64b(u64::MAX)),
            ("window_base", offset_of!(H, window_base), u64b(0x1001)),
            ("flags", offset_of!(H, flags), u32b(0x80)),
            (
                "segments[0].backing",
                offset_of!(H, flags),
                u32b(group_flags::IN_MEMORY),
            ),
            ("max_zones", offset_of!(H, max_zones), u32b(0)),
            ("max_zones", offset_of!(H, max_zones), u32b(4096)),
            ("total_len", offset_of!(H, total_len), u64b(1 << 40)),
            ("zones_off", offset_of!(H, zones_off), u64b(8)),
            ("prefix", offset_of!(H, prefix), b"g2".to_vec()),
        ];
        for (field, at, bytes) in cases {
            let mut b = good();
            set(&mut b, at, &bytes);
            let e = refused(&b);
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn memfd_segments_have_no_path() {
        let mut b = good();
        set(
            &mut b,
            offset_of!(H, flags),
            &group_flags::IN_MEMORY.to_ne_bytes(),
        );
        set(&mut b, offset_of!(H, seg_dir), &[0u8; PATH_LEN]);
        for i in 0..2 {
            set(
                &mut b,
                seg(i, offset_of!(S, backing)),
                &backing::MEMFD.to_ne_bytes(),
            );
        }
        assert_eq!(refused(&b).field, "segments[0].path");
        for i in 0..2 {
            set(&mut b, seg(i, offset_of!(S, path)), &[0u8; PATH_LEN]);
        }
        let g = read_group_memory(&b, layout::config_len(16), "g1").unwrap();
        assert!(g.segments.iter().all(|s| s.path.is_none()));
    }

    #[test]
    fn a_short_copy_is_refused() {
        let b = good();
        assert_eq!(
            read_group_memory(&b[..100], 1 << 20, "g1")
                .unwrap_err()
                .field,
            "total_len"
        );
    }
}
