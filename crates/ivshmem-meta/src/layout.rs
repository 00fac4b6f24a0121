//! The metadata block at offset 0 of every device (layout version 1), and its validation.
//!
//! All integers are little-endian. The block is [`META_LEN`] bytes: a [`HEADER_LEN`]-byte header
//! followed by [`MAX_ENTRIES`] entries of [`ENTRY_LEN`] bytes. The data area (where the zones
//! live) starts at [`META_LEN`] and runs to the end of the device. `docs/ivshmem.md` draws it.
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | magic `HSIVSHMD` | `[u8; 8]` |
//! | 8 | version (1) | u32 |
//! | 12 | header length (256) | u32 |
//! | 16 | layout fingerprint | u64 |
//! | 24 | generation of the host group | u64 |
//! | 32 | device length (a power of two) | u64 |
//! | 40 | data offset ([`META_LEN`]) | u64 |
//! | 48 | entry table offset (256) | u32 |
//! | 52 | entry length (128) | u32 |
//! | 56 | entry slots (128) | u32 |
//! | 60 | entries in use (high-water mark, atomic) | u32 |
//! | 64 | sealed (atomic; 1 once QEMU arguments were generated) | u32 |
//! | 68 | retired (atomic; 1 once the host dropped the metadata) | u32 |
//! | 72 | name length | u32 |
//! | 80 | name (UTF-8, zero padded) | `[u8; 64]` |
//! | 144 | host pid | u32 |
//! | 152 | exposed group segments (0..=4) | u32 |
//! | 160 | exposed segment records: length u64, group segment index u32, reserved u32 | `[[u8; 16]; 4]` |
//!
//! An entry: name `[u8; 64]` @0, name length u32 @64, kind u32 @68 (`shmconfig::ZoneKind`),
//! offset from the start of its device u64 @72, length u64 @80, alignment u32 @88, state u32 @92
//! (0 empty, 1 reserved by the host, 2 published to guests, 3 freed), element size u32 @96,
//! element count u32 @100, element type id u64 @104, device u32 @112 (0: this device; k: the
//! k-th exposed group segment, which QEMU gives the guest as the device in the next PCI slot
//! but k-1). Guests see only published entries.

use shmconfig::{ZoneKind, ZONE_NAME_MAX};

use crate::error::MetaError;

/// The magic at offset 0 of a device that carries hugeshare metadata.
pub const MAGIC: [u8; 8] = *b"HSIVSHMD";
/// The layout version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 256;
/// Length of one entry.
pub const ENTRY_LEN: usize = 128;
/// Entry slots in a block: the most zones one metadata can hold.
pub const MAX_ENTRIES: usize = 128;
/// Length of the whole metadata block; the data area starts here.
pub const META_LEN: usize = 32 * 1024;
/// Longest metadata name in bytes.
pub const META_NAME_MAX: usize = 31;
/// Smallest device: the block plus as much data area.
pub const MIN_DEVICE_LEN: u64 = 2 * META_LEN as u64;
/// Largest alignment an entry may claim (a 1 GiB page).
pub const MAX_ALIGN: u64 = 1 << 30;
/// Smallest alignment an entry may claim: a cache line, on which every zone of a group starts
/// and which the objects in them rely on (a mempool's header and objects, for one).
pub const MIN_ALIGN: u64 = 64;
/// Most group segments one metadata may expose whole (see `Metadata::add_exposing_segment`).
pub const MAX_EXPOSED: usize = 4;
/// Largest device (1 TiB).
pub const MAX_DEVICE_LEN: u64 = 1 << 40;

const _: () = assert!(HEADER_LEN + MAX_ENTRIES * ENTRY_LEN <= META_LEN);
const _: () = assert!(hdr::EXPOSED + MAX_EXPOSED * hdr::EXPOSED_LEN <= HEADER_LEN);

/// Header field offsets.
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_LEN: usize = 12;
    pub const FINGERPRINT: usize = 16;
    pub const GENERATION: usize = 24;
    pub const DEVICE_LEN: usize = 32;
    pub const DATA_OFFSET: usize = 40;
    pub const ENTRY_OFFSET: usize = 48;
    pub const ENTRY_LEN: usize = 52;
    pub const ENTRY_SLOTS: usize = 56;
    pub const ENTRY_COUNT: usize = 60;
    pub const SEALED: usize = 64;
    pub const RETIRED: usize = 68;
    pub const NAME_LEN: usize = 72;
    pub const NAME: usize = 80;
    pub const HOST_PID: usize = 144;
    pub const EXPOSED_COUNT: usize = 152;
    pub const EXPOSED: usize = 160;
    pub const EXPOSED_LEN: usize = 16;
}

/// Entry field offsets.
pub(crate) mod ent {
    pub const NAME: usize = 0;
    pub const NAME_LEN: usize = 64;
    pub const KIND: usize = 68;
    pub const OFFSET: usize = 72;
    pub const LEN: usize = 80;
    pub const ALIGN: usize = 88;
    pub const STATE: usize = 92;
    pub const ELEM_SIZE: usize = 96;
    pub const ELEM_COUNT: usize = 100;
    pub const TYPE_ID: usize = 104;
    pub const DEVICE: usize = 112;
}

/// Entry states.
pub(crate) mod state {
    pub const EMPTY: u32 = 0;
    pub const RESERVED: u32 = 1;
    pub const PUBLISHED: u32 = 2;
    pub const FREED: u32 = 3;
}

/// Byte offset of entry `i` in the block.
pub(crate) const fn entry_at(i: usize) -> usize {
    HEADER_LEN + i * ENTRY_LEN
}

/// A fingerprint of this layout: FNV-1a over a description of every field's place, so a reader
/// built from a different layout with the same version number is still refused.
pub const fn fingerprint() -> u64 {
    const DESC: &[u8] = b"HSIVSHMD v1 hdr256 magic0 ver8 hlen12 fp16 gen24 dlen32 doff40 eoff48 elen52 eslots56 ecount60 sealed64 retired68 nlen72 name80/64 pid144 xcount152 x160/16x4(len0 seg8) | entry128 name0/64 nlen64 kind68 off72 len80 align88 state92 esize96 ecount100 type104 dev112 | slots128 meta32768";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < DESC.len() {
        h ^= DESC[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The smallest alignment an entry of `kind` may claim: [`MIN_ALIGN`], and for a ring what
/// `Ring::lookup` requires of its zone ([`rte_ring::RING_ZONE_ALIGN`], 128). The host never
/// records less, and [`validate`] refuses less.
///
/// ```
/// use ivshmem_meta::layout::min_align;
/// use shmconfig::ZoneKind;
/// assert_eq!(min_align(ZoneKind::Ring), 128);
/// assert_eq!(min_align(ZoneKind::MempoolObjects), 64);
/// ```
pub fn min_align(kind: ZoneKind) -> u64 {
    match kind {
        ZoneKind::Ring => (rte_ring::RING_ZONE_ALIGN as u64).max(MIN_ALIGN),
        _ => MIN_ALIGN,
    }
}

/// What an object says about its elements (recorded in its entry, for tools and checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElementInfo {
    /// Element size in bytes (0: not applicable).
    pub size: u32,
    /// Number of elements (slots of a ring, objects of a mempool; 0: not applicable).
    pub count: u32,
    /// A stable identifier of the element type (0: none).
    pub type_id: u64,
}

/// A group segment exposed whole by a metadata (it becomes another ivshmem device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposedSegment {
    /// Its length (a power of two).
    pub len: u64,
    /// Its index in the host group's segment table.
    pub segment: u32,
}

/// One zone of a device, as recorded in its entry table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The zone's name.
    pub name: String,
    /// Which device holds it: 0 for the metadata's own, `k` for the k-th exposed segment.
    pub device: u32,
    /// What it holds.
    pub kind: ZoneKind,
    /// Byte offset from the start of the device (BAR2).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Alignment of `offset`.
    pub align: u64,
    /// Element information.
    pub elem: ElementInfo,
}

/// A validated metadata block: what a guest trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    /// The metadata's name.
    pub name: String,
    /// The host group's generation when the metadata was created.
    pub generation: u64,
    /// The device length.
    pub device_len: u64,
    /// Whether the host had generated the QEMU arguments (sealed the metadata).
    pub sealed: bool,
    /// Whether the host had dropped the metadata (its data is stale).
    pub retired: bool,
    /// The host process that created it.
    pub host_pid: u32,
    /// Group segments exposed whole, in order (entry `device` k is `exposed[k - 1]`).
    pub exposed: Vec<ExposedSegment>,
    /// The published entries, in table order.
    pub entries: Vec<EntryInfo>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
pub(crate) fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// The header bytes of a new block (entries empty, not sealed, not retired).
pub(crate) fn encode_header(name: &str, generation: u64, device_len: u64, pid: u32) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[hdr::MAGIC..hdr::MAGIC + 8].copy_from_slice(&MAGIC);
    put_u32(&mut b, hdr::VERSION, VERSION);
    put_u32(&mut b, hdr::HEADER_LEN, HEADER_LEN as u32);
    put_u64(&mut b, hdr::FINGERPRINT, fingerprint());
    put_u64(&mut b, hdr::GENERATION, generation);
    put_u64(&mut b, hdr::DEVICE_LEN, device_len);
    put_u64(&mut b, hdr::DATA_OFFSET, META_LEN as u64);
    put_u32(&mut b, hdr::ENTRY_OFFSET, HEADER_LEN as u32);
    put_u32(&mut b, hdr::ENTRY_LEN, ENTRY_LEN as u32);
    put_u32(&mut b, hdr::ENTRY_SLOTS, MAX_ENTRIES as u32);
    put_u32(&mut b, hdr::NAME_LEN, name.len() as u32);
    b[hdr::NAME..hdr::NAME + name.len()].copy_from_slice(name.as_bytes());
    put_u32(&mut b, hdr::HOST_PID, pid);
    b
}

/// A whole block ([`META_LEN`] bytes) as the host writes it at creation: header filled in, no
/// entries. For tools and for fuzzing [`validate`] past its header checks.
///
/// ```
/// use ivshmem_meta::layout::{empty_block, validate};
/// let b = empty_block("vm0", 1, 1 << 20);
/// assert_eq!(validate("t", &b, 1 << 20).unwrap().name, "vm0");
/// ```
///
/// # Panics
/// If `name` is longer than 64 bytes.
pub fn empty_block(name: &str, generation: u64, device_len: u64) -> Vec<u8> {
    let mut b = encode_header(name, generation, device_len, 0);
    b.resize(META_LEN, 0);
    b
}

/// The bytes of an entry, state excluded (the state word is stored separately, last).
pub(crate) fn encode_entry(e: &EntryInfo) -> Vec<u8> {
    let mut b = vec![0u8; ENTRY_LEN];
    b[ent::NAME..ent::NAME + e.name.len()].copy_from_slice(e.name.as_bytes());
    put_u32(&mut b, ent::NAME_LEN, e.name.len() as u32);
    put_u32(&mut b, ent::KIND, e.kind as u32);
    put_u64(&mut b, ent::OFFSET, e.offset);
    put_u64(&mut b, ent::LEN, e.len);
    put_u32(&mut b, ent::ALIGN, e.align as u32);
    put_u32(&mut b, ent::ELEM_SIZE, e.elem.size);
    put_u32(&mut b, ent::ELEM_COUNT, e.elem.count);
    put_u64(&mut b, ent::TYPE_ID, e.elem.type_id);
    put_u32(&mut b, ent::DEVICE, e.device);
    b
}

/// The bytes of exposed-segment record `k` (0-based) and its offset in the header.
pub(crate) fn encode_exposed(k: usize, x: &ExposedSegment) -> (usize, Vec<u8>) {
    let mut b = vec![0u8; hdr::EXPOSED_LEN];
    put_u64(&mut b, 0, x.len);
    put_u32(&mut b, 8, x.segment);
    (hdr::EXPOSED + k * hdr::EXPOSED_LEN, b)
}

/// Whether `bytes` starts with the hugeshare magic (a device of ours, or a foreign one).
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..8] == MAGIC
}

fn name_of(
    device: &str,
    field: &'static str,
    raw: &[u8],
    len: u32,
    max: usize,
) -> Result<String, MetaError> {
    let len = len as usize;
    if len == 0 || len > max {
        return Err(MetaError::corrupt(
            device,
            field,
            len,
            format!("a name length must be 1 to {max}"),
        ));
    }
    let bytes = &raw[..len];
    let s = std::str::from_utf8(bytes)
        .map_err(|_| MetaError::corrupt(device, field, format!("{bytes:?}"), "not UTF-8"))?;
    if s.contains('\0') {
        return Err(MetaError::corrupt(
            device,
            field,
            format!("{s:?}"),
            "contains NUL",
        ));
    }
    if raw[len..].iter().any(|&b| b != 0) {
        return Err(MetaError::corrupt(
            device,
            field,
            format!("{s:?}"),
            "bytes after the name are not zero",
        ));
    }
    Ok(s.to_string())
}

/// Validate a snapshot of a metadata block taken from a device of `device_len` bytes.
///
/// `bytes` must hold at least [`META_LEN`] bytes (the start of the device). Every field is
/// checked before use: the constants of the layout, the device length (equal to the real one, a
/// power of two), the entry count, and for each published entry its name (UTF-8, no NUL, unique),
/// kind, alignment (a power of two from [`min_align`] of its kind to [`MAX_ALIGN`], which the
/// offset honours), and range (inside the data area, no overflow, no overlap with another
/// entry). Any failure is an error naming the field; nothing here panics or trusts a value it has
/// not checked, whatever the bytes.
///
/// ```
/// use ivshmem_meta::layout::{validate, META_LEN};
/// let zeros = vec![0u8; META_LEN];
/// assert!(validate("test", &zeros, 1 << 20).is_err());
/// ```
pub fn validate(device: &str, bytes: &[u8], device_len: u64) -> Result<BlockInfo, MetaError> {
    if bytes.len() < META_LEN {
        return Err(MetaError::corrupt(
            device,
            "block length",
            bytes.len(),
            format!("the metadata block needs {META_LEN} bytes"),
        ));
    }
    if !has_magic(bytes) {
        return Err(MetaError::corrupt(
            device,
            "magic",
            format!("{:02x?}", &bytes[..8]),
            "not a hugeshare IVSHMEM device",
        ));
    }
    let version = u32_at(bytes, hdr::VERSION);
    if version != VERSION {
        return Err(MetaError::Version {
            device: device.into(),
            found: version,
            expected: VERSION,
        });
    }
    let want = |field: &'static str, found: u64, expected: u64| {
        if found == expected {
            Ok(())
        } else {
            Err(MetaError::corrupt(
                device,
                field,
                found,
                format!("layout v{VERSION} has {expected}"),
            ))
        }
    };
    want(
        "header length",
        u32_at(bytes, hdr::HEADER_LEN).into(),
        HEADER_LEN as u64,
    )?;
    let fp = u64_at(bytes, hdr::FINGERPRINT);
    if fp != fingerprint() {
        return Err(MetaError::corrupt(
            device,
            "fingerprint",
            format!("{fp:#018x}"),
            format!(
                "layout v{VERSION} of this build has {:#018x}",
                fingerprint()
            ),
        ));
    }
    want(
        "data offset",
        u64_at(bytes, hdr::DATA_OFFSET),
        META_LEN as u64,
    )?;
    want(
        "entry offset",
        u32_at(bytes, hdr::ENTRY_OFFSET).into(),
        HEADER_LEN as u64,
    )?;
    want(
        "entry length",
        u32_at(bytes, hdr::ENTRY_LEN).into(),
        ENTRY_LEN as u64,
    )?;
    want(
        "entry slots",
        u32_at(bytes, hdr::ENTRY_SLOTS).into(),
        MAX_ENTRIES as u64,
    )?;
    let dlen = u64_at(bytes, hdr::DEVICE_LEN);
    if dlen != device_len || !dlen.is_power_of_two() || dlen < MIN_DEVICE_LEN {
        return Err(MetaError::corrupt(
            device,
            "device length",
            dlen,
            format!("the device is {device_len} bytes; the length must equal it, be a power of two and at least {MIN_DEVICE_LEN}"),
        ));
    }
    let count = u32_at(bytes, hdr::ENTRY_COUNT) as usize;
    if count > MAX_ENTRIES {
        return Err(MetaError::corrupt(
            device,
            "entries in use",
            count,
            format!("at most {MAX_ENTRIES}"),
        ));
    }
    let flag = |field: &'static str, o: usize| match u32_at(bytes, o) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(MetaError::corrupt(device, field, v, "must be 0 or 1")),
    };
    let sealed = flag("sealed", hdr::SEALED)?;
    let retired = flag("retired", hdr::RETIRED)?;
    let name = name_of(
        device,
        "name",
        &bytes[hdr::NAME..hdr::NAME + 64],
        u32_at(bytes, hdr::NAME_LEN),
        META_NAME_MAX,
    )?;
    let nexp = u32_at(bytes, hdr::EXPOSED_COUNT) as usize;
    if nexp > MAX_EXPOSED {
        return Err(MetaError::corrupt(
            device,
            "exposed segments",
            nexp,
            format!("at most {MAX_EXPOSED}"),
        ));
    }
    let mut exposed = Vec::with_capacity(nexp);
    for k in 0..nexp {
        let o = hdr::EXPOSED + k * hdr::EXPOSED_LEN;
        let len = u64_at(bytes, o);
        if !len.is_power_of_two() || !(4096..=MAX_DEVICE_LEN).contains(&len) {
            return Err(MetaError::corrupt(
                device,
                "exposed segment length",
                format!("{len} (record {k})"),
                "must be a power of two from 4 KiB to 1 TiB",
            ));
        }
        exposed.push(ExposedSegment {
            len,
            segment: u32_at(bytes, o + 8),
        });
    }
    let mut entries: Vec<EntryInfo> = Vec::new();
    for i in 0..count {
        let e = &bytes[entry_at(i)..entry_at(i) + ENTRY_LEN];
        let st = u32_at(e, ent::STATE);
        match st {
            state::PUBLISHED => {}
            state::EMPTY | state::RESERVED | state::FREED => continue,
            v => {
                return Err(MetaError::corrupt(
                    device,
                    "entry state",
                    format!("{v} (entry {i})"),
                    "must be 0 to 3",
                ))
            }
        }
        let ename = name_of(
            device,
            "entry name",
            &e[ent::NAME..ent::NAME + 64],
            u32_at(e, ent::NAME_LEN),
            ZONE_NAME_MAX,
        )?;
        let at = |f: &'static str, v: u64, why: &str| {
            MetaError::corrupt(device, f, format!("{v} (entry {i}, {ename:?})"), why)
        };
        let kind_raw = u32_at(e, ent::KIND);
        let kind = ZoneKind::from_u32(kind_raw)
            .ok_or_else(|| at("entry kind", kind_raw.into(), "not a known zone kind"))?;
        let offset = u64_at(e, ent::OFFSET);
        let len = u64_at(e, ent::LEN);
        let dev = u32_at(e, ent::DEVICE);
        if dev as usize > nexp {
            return Err(at(
                "entry device",
                dev.into(),
                "names an exposed segment the header does not list",
            ));
        }
        let (start, dev_end) = if dev == 0 {
            (META_LEN as u64, dlen)
        } else {
            (0, exposed[dev as usize - 1].len)
        };
        let align = u64::from(u32_at(e, ent::ALIGN));
        if !align.is_power_of_two() || align > MAX_ALIGN {
            return Err(at(
                "entry alignment",
                align,
                "must be a power of two of at most 1 GiB",
            ));
        }
        let need = min_align(kind);
        if align < need {
            return Err(at(
                "entry alignment",
                align,
                &format!("must be at least {need} for a zone of kind {kind}"),
            ));
        }
        if len == 0 {
            return Err(at("entry length", len, "must not be zero"));
        }
        if offset < start {
            return Err(at(
                "entry offset",
                offset,
                "points into the metadata block, not the data area",
            ));
        }
        if offset % align != 0 {
            return Err(at(
                "entry offset",
                offset,
                "is not a multiple of its alignment",
            ));
        }
        match offset.checked_add(len) {
            Some(end) if end <= dev_end => {}
            _ => {
                return Err(at(
                    "entry length",
                    len,
                    "the zone runs past the end of the device",
                ))
            }
        }
        if usize::try_from(offset + len).is_err() {
            return Err(at("entry length", len, "does not fit this address space"));
        }
        if entries.iter().any(|x| x.name == ename) {
            return Err(at("entry name", i as u64, "the name appears twice"));
        }
        if let Some(x) = entries
            .iter()
            .find(|x| x.device == dev && offset < x.offset + x.len && x.offset < offset + len)
        {
            return Err(MetaError::corrupt(
                device,
                "entry range",
                format!("{offset}+{len} ({ename:?})"),
                format!("overlaps {:?} at {}+{}", x.name, x.offset, x.len),
            ));
        }
        entries.push(EntryInfo {
            name: ename,
            device: dev,
            kind,
            offset,
            len,
            align,
            elem: ElementInfo {
                size: u32_at(e, ent::ELEM_SIZE),
                count: u32_at(e, ent::ELEM_COUNT),
                type_id: u64_at(e, ent::TYPE_ID),
            },
        });
    }
    Ok(BlockInfo {
        name,
        generation: u64_at(bytes, hdr::GENERATION),
        device_len: dlen,
        sealed,
        retired,
        host_pid: u32_at(bytes, hdr::HOST_PID),
        exposed,
        entries,
    })
}
