//! The host side: [`Metadata`] (a device of its own, objects created inside it, published
//! entries) and the group-wide registry of metadata names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hugemem::{BackingKind, HugememError, MapOptions, SegmentSource, SegmentSpec};
use rte_ring::{Ring, RingElement};
use shmconfig::{
    check_zone_name, Liveness, MemberId, ShmOffset, Zone, ZoneError, ZoneInfo, ZoneKind,
    ZoneRequest, Zones,
};

use crate::error::MetaError;
use crate::layout::{
    self, ent, entry_at, hdr, state, ElementInfo, EntryInfo, ExposedSegment, ENTRY_LEN,
    MAX_ENTRIES, MAX_EXPOSED, META_LEN, META_NAME_MAX, MIN_DEVICE_LEN,
};
use crate::qemu::QemuArgs;
use crate::raw::{self, Mapping};

/// Default most metadata per group.
pub const DEFAULT_MAX_PER_GROUP: u32 = 32;
/// Default device length (4 MiB): the metadata block and the data area.
pub const DEFAULT_DEVICE_LEN: u64 = 4 << 20;

/// Registry record layout (in the group zone `IVSHMEM_<name>`).
pub(crate) mod reg {
    pub const MAGIC: [u8; 8] = *b"HSIVREG1";
    pub const LEN: usize = 512;
    pub const O_MAGIC: usize = 0;
    pub const O_SLOT: usize = 8;
    pub const O_DEVICE_LEN: usize = 16;
    pub const O_GENERATION: usize = 24;
    pub const O_PID: usize = 32;
    pub const O_PATH_LEN: usize = 36;
    pub const O_PATH: usize = 40;
    pub const PATH_MAX: usize = LEN - O_PATH;
}

/// The registry zone of metadata `name` in the group.
pub fn registry_zone(name: &str) -> String {
    format!("IVSHMEM_{name}")
}

fn slot_zone(i: u32) -> String {
    format!("IVSHMEM_SLOT_{i}")
}

/// Checks a metadata name: 1 to [`META_NAME_MAX`] characters from `A-Z a-z 0-9 _ -`.
pub fn check_meta_name(name: &str) -> Result<(), MetaError> {
    let bad = |why| {
        Err(MetaError::BadName {
            name: name.into(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > META_NAME_MAX {
        return bad("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("it has a character outside A-Z a-z 0-9 _ -");
    }
    Ok(())
}

/// Options of [`Metadata::create_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaOptions {
    /// Device length in bytes; rounded up to a power of two (and to the page size). The first
    /// [`META_LEN`] bytes hold the metadata block, the rest the zones.
    pub device_len: u64,
    /// The most metadata the group may hold (counted across all its processes).
    pub max_per_group: u32,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            device_len: DEFAULT_DEVICE_LEN,
            max_per_group: DEFAULT_MAX_PER_GROUP,
        }
    }
}

/// What a metadata needs to know of the group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's file prefix (part of the backing file's name).
    pub prefix: String,
    /// The group's generation (a number unique to the primary's run).
    pub generation: u64,
    /// Directory for the backing file: the group's hugetlbfs directory, or a tmpfs.
    pub dir: PathBuf,
    /// What backs the file: [`BackingKind::Hugetlbfs`] or [`BackingKind::Shm`].
    pub backing: BackingKind,
    /// Page size of `dir`.
    pub page_size: u64,
    /// The group's segment files, by segment index (`ShmOffset::segment`): what
    /// [`Metadata::add_exposing_segment`] may expose. Empty: nothing can be exposed.
    pub segments: Vec<PathBuf>,
}

impl GroupInfo {
    /// The group of a running process: its segments' directory and backing (a group kept
    /// `--in-memory` gets its device files in `/dev/shm`, since QEMU needs a path).
    pub fn of(process: &procctl::Process) -> GroupInfo {
        let seg_dir = process
            .segment_paths()
            .first()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let (dir, backing, page_size) = match (process.backing(), seg_dir) {
            (BackingKind::Hugetlbfs, Some(d)) => (d, BackingKind::Hugetlbfs, process.page_size()),
            (BackingKind::Shm, Some(d)) => (d, BackingKind::Shm, 4096),
            _ => (PathBuf::from("/dev/shm"), BackingKind::Shm, 4096),
        };
        GroupInfo {
            prefix: process.prefix().to_string(),
            generation: process.generation(),
            dir,
            backing,
            page_size,
            segments: if process.in_memory() {
                Vec::new()
            } else {
                process.segment_paths()
            },
        }
    }
}

/// An object that lives in zones: what [`Metadata::add`] needs to know of it.
///
/// This is the narrow waist between this crate and the data-structure crates: a ring occupies
/// one zone, a mempool several (header, objects, its ring).
pub trait Occupant {
    /// Every zone the object occupies, the one holding its header first.
    fn occupied_zones(&self) -> Vec<Zone>;
    /// What it says about its elements (recorded in the entry of its first zone).
    fn element_info(&self) -> ElementInfo {
        ElementInfo::default()
    }
}

impl Occupant for Zone {
    fn occupied_zones(&self) -> Vec<Zone> {
        vec![self.clone()]
    }
}

impl<T: RingElement> Occupant for Ring<T> {
    fn occupied_zones(&self) -> Vec<Zone> {
        self.zone().cloned().into_iter().collect()
    }
    fn element_info(&self) -> ElementInfo {
        ElementInfo {
            size: std::mem::size_of::<T>() as u32,
            count: self.size(),
            type_id: T::TYPE_ID,
        }
    }
}

/// A set of zones offered as one object.
struct ZoneSet {
    zones: Vec<Zone>,
    elem: ElementInfo,
}

impl Occupant for ZoneSet {
    fn occupied_zones(&self) -> Vec<Zone> {
        self.zones.clone()
    }
    fn element_info(&self) -> ElementInfo {
        self.elem
    }
}

#[derive(Debug, Clone)]
struct LocalEntry {
    info: EntryInfo,
    published: bool,
}

#[derive(Debug, Default)]
struct Local {
    /// Entry slots as the host knows them (index = slot in the shared table).
    slots: Vec<Option<LocalEntry>>,
    /// Group segments exposed whole, with their files (device k = `exposed[k - 1]`).
    exposed: Vec<(ExposedSegment, PathBuf)>,
}

impl Local {
    /// The live entries of the metadata's own device.
    fn own(&self) -> impl Iterator<Item = &LocalEntry> {
        self.slots.iter().flatten().filter(|e| e.info.device == 0)
    }
}

/// A named IVSHMEM metadata: one device (a power-of-two backing file) holding a versioned
/// metadata block and a data area in which the objects a VM may use are created.
///
/// ```no_run
/// use ivshmem_meta::Metadata;
/// use rte_ring::{Ring, RingFlags};
/// let (process, _) = procctl::Process::from_args(["--proc-type=primary", "--no-huge", "-m", "16"])?;
/// let meta = Metadata::create(&process, "vm0")?;
/// let rx = Ring::<u64>::create(&meta.zones(), "rx", 1024, RingFlags::empty())?;
/// meta.add_ring(&rx)?;
/// for arg in meta.qemu_args()?.args() {
///     println!("{arg}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Metadata<'g> {
    name: String,
    group: &'g (dyn Zones + Sync),
    map: Arc<Mapping>,
    path: PathBuf,
    file_id: Option<(u64, u64)>,
    generation: u64,
    member: MemberId,
    liveness: Arc<dyn Liveness>,
    slot_zone: String,
    segments: Vec<PathBuf>,
    local: Mutex<Local>,
}

impl std::fmt::Debug for Metadata<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("device_len", &self.map.len())
            .field("generation", &self.generation)
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl<'g> Metadata<'g> {
    /// Create metadata `name` for the group `process` belongs to, with default options.
    pub fn create(process: &'g procctl::Process, name: &str) -> Result<Self, MetaError> {
        Self::create_with(process, name, &MetaOptions::default())
    }

    /// Create metadata `name` with `opts`.
    pub fn create_with(
        process: &'g procctl::Process,
        name: &str,
        opts: &MetaOptions,
    ) -> Result<Self, MetaError> {
        Self::create_in(process, &GroupInfo::of(process), name, opts)
    }

    /// Create metadata `name` registered in `group` (any [`Zones`] of a group: a
    /// `procctl::Process`, or `shmconfig::LocalZones` in tests), its backing file described by
    /// `info`.
    ///
    /// The name is registered in the group's zone table as `IVSHMEM_<name>` (so a second create
    /// anywhere in the group fails with [`MetaError::Exists`]) together with a slot zone
    /// `IVSHMEM_SLOT_<n>`, `n < opts.max_per_group` ([`MetaError::TooMany`] past it). The
    /// backing file is `<dir>/<prefix>.ivshmem.<name>.map_0`.
    pub fn create_in(
        group: &'g (dyn Zones + Sync),
        info: &GroupInfo,
        name: &str,
        opts: &MetaOptions,
    ) -> Result<Self, MetaError> {
        check_meta_name(name)?;
        HOOK.call_once(|| shmconfig::hooks::register(cleanup_dead_member));
        if opts.max_per_group == 0 {
            return Err(MetaError::BadOptions("max_per_group is 0".into()));
        }
        if opts.device_len < MIN_DEVICE_LEN || opts.device_len > 1 << 40 {
            return Err(MetaError::BadOptions(format!(
                "device_len {} is outside {MIN_DEVICE_LEN}..=1 TiB",
                opts.device_len
            )));
        }
        let rname = registry_zone(name);
        let rzone = group
            .reserve(&ZoneRequest::new(&rname, reg::LEN, ZoneKind::IvshmemMeta))
            .map_err(|e| match e {
                ZoneError::Exists(_) => MetaError::Exists {
                    name: name.into(),
                    zone: rname.clone(),
                },
                source => MetaError::Group {
                    what: format!("reserving {rname}"),
                    source,
                },
            })?;
        let mut undo = Undo {
            group,
            zones: vec![rname.clone()],
        };
        let mut slot = None;
        for i in 0..opts.max_per_group {
            match group.reserve(&ZoneRequest::new(&slot_zone(i), 64, ZoneKind::IvshmemMeta)) {
                Ok(_) => {
                    slot = Some(i);
                    break;
                }
                Err(ZoneError::Exists(_)) => continue,
                Err(source) => {
                    return Err(MetaError::Group {
                        what: format!("reserving {}", slot_zone(i)),
                        source,
                    })
                }
            }
        }
        let slot = slot.ok_or(MetaError::TooMany {
            max: opts.max_per_group,
        })?;
        undo.zones.push(slot_zone(slot));

        let source: Box<dyn SegmentSource> = match info.backing {
            BackingKind::Hugetlbfs => Box::new(hugemem::Hugetlbfs::new(&info.dir, info.page_size)),
            _ => Box::new(hugemem::ShmFallback::in_dir(&info.dir)),
        };
        let prefix = format!("{}.ivshmem.{name}.", info.prefix);
        let spec = SegmentSpec {
            prefix: &prefix,
            index: 0,
            len: opts.device_len,
            pow2: true,
            map: MapOptions {
                populate: true,
                addr: None,
            },
        };
        let seg = match source.create(&spec) {
            Err(HugememError::SegmentExists { path, live: false }) => {
                // Left by a host that died: nobody holds it; replace it.
                let _ = std::fs::remove_file(&path);
                source.create(&spec)
            }
            r => r,
        }
        .map_err(|source| MetaError::Segment {
            name: name.into(),
            source,
        })?;
        let path = seg
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| info.dir.join(spec.file_name()));
        let map = Arc::new(Mapping::from_segment(seg));
        let device_len = map.len() as u64;
        let pid = std::process::id();
        let header = layout::encode_header(name, info.generation, device_len, pid);
        map.write(8, &header[8..]);
        fence(Ordering::Release);
        map.write(0, &header[..8]);

        let path_bytes = path.as_os_str().as_encoded_bytes();
        if path_bytes.len() > reg::PATH_MAX {
            let _ = std::fs::remove_file(&path);
            return Err(MetaError::BadOptions(format!(
                "backing file path {} is longer than {} bytes",
                path.display(),
                reg::PATH_MAX
            )));
        }
        let mut rec = vec![0u8; reg::LEN];
        layout::put_u32(&mut rec, reg::O_SLOT, slot);
        layout::put_u64(&mut rec, reg::O_DEVICE_LEN, device_len);
        layout::put_u64(&mut rec, reg::O_GENERATION, info.generation);
        layout::put_u32(&mut rec, reg::O_PID, pid);
        layout::put_u32(&mut rec, reg::O_PATH_LEN, path_bytes.len() as u32);
        rec[reg::O_PATH..reg::O_PATH + path_bytes.len()].copy_from_slice(path_bytes);
        raw::write_zone(&rzone, 8, &rec[8..]);
        fence(Ordering::Release);
        raw::write_zone(&rzone, reg::O_MAGIC, &reg::MAGIC);

        undo.zones.clear();
        Ok(Metadata {
            name: name.into(),
            group,
            file_id: file_id(&path),
            path,
            map,
            generation: info.generation,
            member: group.member(),
            liveness: group.liveness(),
            slot_zone: slot_zone(slot),
            segments: info.segments.clone(),
            local: Mutex::new(Local {
                slots: vec![None; MAX_ENTRIES],
                exposed: Vec::new(),
            }),
        })
    }

    /// The metadata's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The backing file (what QEMU's `mem-path=` names).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The device length in bytes (a power of two; QEMU's `size=`).
    pub fn device_len(&self) -> u64 {
        self.map.len() as u64
    }
    /// The group generation recorded in the block.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Whether the QEMU arguments were generated (here or by another process through the
    /// registry): additions are then refused.
    pub fn is_sealed(&self) -> bool {
        self.map.atomic_u32(hdr::SEALED).load(Ordering::Acquire) != 0
    }
    /// Seal the metadata: no more additions or reservations. Generating QEMU arguments does it.
    pub fn seal(&self) {
        self.map.atomic_u32(hdr::SEALED).store(1, Ordering::Release);
    }

    /// A [`Zones`] over the device's data area: objects created through it live inside the
    /// device, e.g. `Ring::create(&meta.zones(), "rx", 1024, flags)`. Lookups see every zone
    /// reserved in the device; guests see only what was added. Reservations are refused once the
    /// metadata is sealed; zones already published cannot be freed. Its `current_lcore()` is
    /// `None`: objects shared with guests are used without per-lcore caches.
    pub fn zones(&self) -> MetaZones<'_> {
        MetaZones { meta: self }
    }

    /// The published entries (what a guest will see), in table order.
    pub fn entries(&self) -> Vec<EntryInfo> {
        self.lock()
            .slots
            .iter()
            .flatten()
            .filter(|e| e.published)
            .map(|e| e.info.clone())
            .collect()
    }

    /// Publish a memzone reserved through [`Metadata::zones`].
    pub fn add_memzone(&self, zone: &Zone) -> Result<(), MetaError> {
        self.add(zone)
    }

    /// Publish a ring created through [`Metadata::zones`].
    pub fn add_ring<T: RingElement>(&self, ring: &Ring<T>) -> Result<(), MetaError> {
        self.add(ring)
    }

    /// Publish a mempool created through [`Metadata::zones`]: its header zone (`MP_<name>`),
    /// its objects (`MP_<name>_0`) and its ring of free objects (`RG_MP_<name>`), all or
    /// nothing. Guests take and return its objects without per-lcore caches.
    pub fn add_mempool(&self, mp: &rte_mempool::Mempool) -> Result<(), MetaError> {
        let not_in = |zone: String| MetaError::NotInDevice {
            name: self.name.clone(),
            zone,
        };
        let hname = rte_mempool::Mempool::zone_name(mp.name());
        let oname = rte_mempool::Mempool::objects_zone_name(mp.name());
        let header = self
            .zones()
            .lookup(&hname)
            .map_err(|_| not_in(hname.clone()))?;
        let objects = self
            .zones()
            .lookup(&oname)
            .map_err(|_| not_in(oname.clone()))?;
        // The names match; make sure the pool really is the one in this device.
        let first = mp.obj(0).map(|o| o.as_ptr());
        if !first.is_some_and(|p| objects.contains(p)) {
            return Err(not_in(oname));
        }
        let mut zones = vec![header, objects];
        zones.extend(mp.ring().zone().cloned());
        self.add(&ZoneSet {
            zones,
            elem: ElementInfo {
                size: mp.elt_size(),
                count: mp.size(),
                type_id: 0,
            },
        })
    }

    /// Publish every zone of `obj`. All or nothing: refused if the metadata is sealed
    /// ([`MetaError::Sealed`]), if a zone does not live in this device
    /// ([`MetaError::NotInDevice`]: memory of the group's general segments is exposed only by
    /// [`Metadata::add_exposing_segment`]), or if a zone was added before
    /// ([`MetaError::AlreadyAdded`]).
    ///
    /// The sides of every ring among the zones are first made never to be biased again
    /// ([`rte_ring::disable_bias_of`]: a guest must never meet a side biased to a host
    /// thread); if that fails (a zone of kind ring that holds no valid ring), nothing is added
    /// ([`MetaError::Bias`]).
    pub fn add(&self, obj: &(impl Occupant + ?Sized)) -> Result<(), MetaError> {
        self.add_inner(obj, false)
    }

    /// Like [`Metadata::add`], and a zone that lives in one of the group's general segments
    /// exposes **that whole segment** to the VM as another ivshmem device (given to QEMU right
    /// after this metadata's device): the VM can then read and write everything in it, every
    /// other process's zones included. Only for callers who mean it.
    ///
    /// Refused when the segment has no file (`--in-memory`), when its size is not a power of
    /// two (QEMU aborts on such a BAR; start the group with a power-of-two `-m`), past
    /// [`layout::MAX_EXPOSED`] segments per metadata, or when a zone is less aligned in its
    /// segment than guests accept ([`layout::min_align`]). A ring of the group is made never
    /// to be biased again, as by [`Metadata::add`], through the group's zones.
    pub fn add_exposing_segment(&self, obj: &(impl Occupant + ?Sized)) -> Result<(), MetaError> {
        self.add_inner(obj, true)
    }

    /// The group segments this metadata exposes whole: `(file, length)` in device order.
    pub fn exposed_segments(&self) -> Vec<(PathBuf, u64)> {
        self.lock()
            .exposed
            .iter()
            .map(|(x, p)| (p.clone(), x.len))
            .collect()
    }

    fn add_inner(&self, obj: &(impl Occupant + ?Sized), expose: bool) -> Result<(), MetaError> {
        let zones = obj.occupied_zones();
        if zones.is_empty() {
            return Err(MetaError::NoZones {
                name: self.name.clone(),
            });
        }
        // A ring a guest may use must not stay biased to a host thread: a guest's membarrier
        // does not reach the host's CPUs (see rte-ring's "Biased sides"). Through the zones
        // that hold it: this device's, or (when its segment is to be exposed) the group's.
        // Before the lock (a lookup in this device takes it); harmless if the add is refused
        // below. A failure refuses the add: the ring could be biased later.
        for z in &zones {
            let (ZoneKind::Ring, Some(ring)) = (z.kind(), z.name().strip_prefix("RG_")) else {
                continue;
            };
            let done = if self.in_device(z) {
                rte_ring::disable_bias_of(&self.zones(), ring)
            } else if expose && self.is_group_zone(z) {
                rte_ring::disable_bias_of(&self.group, ring)
            } else {
                // Refused below (not in this device, nor a zone of the group).
                continue;
            };
            match done {
                // Not this device's zone of that name: refused below.
                Ok(()) | Err(rte_ring::RingError::NotFound(_)) => {}
                Err(source) => {
                    return Err(MetaError::Bias {
                        name: self.name.clone(),
                        zone: z.name().into(),
                        source: Box::new(source),
                    })
                }
            }
        }
        let mut local = self.lock();
        if self.is_sealed() {
            return Err(MetaError::Sealed {
                name: self.name.clone(),
            });
        }
        let already = |z: &Zone| MetaError::AlreadyAdded {
            name: self.name.clone(),
            zone: z.name().into(),
        };
        // Plan first (nothing changes until every zone is accepted).
        let mut publish: Vec<usize> = Vec::new();
        let mut new_exposed: Vec<(ExposedSegment, PathBuf)> = Vec::new();
        let mut new_entries: Vec<EntryInfo> = Vec::new();
        for z in &zones {
            let not_in = || MetaError::NotInDevice {
                name: self.name.clone(),
                zone: z.name().into(),
            };
            if self.in_device(z) {
                let off = (z.as_ptr() as usize - self.map.base() as usize) as u64;
                let i = local
                    .slots
                    .iter()
                    .position(|e| {
                        e.as_ref().is_some_and(|e| {
                            e.info.device == 0
                                && e.info.name == z.name()
                                && e.info.offset == off
                                && e.info.len == z.len() as u64
                        })
                    })
                    .ok_or_else(not_in)?;
                if local.slots[i].as_ref().is_some_and(|e| e.published) || publish.contains(&i) {
                    return Err(already(z));
                }
                publish.push(i);
                continue;
            }
            if !expose {
                return Err(not_in());
            }
            // It must be a zone of the group (not of another metadata's device, say).
            if !self.is_group_zone(z) {
                return Err(not_in());
            }
            let seg = z.offset().segment;
            let path = self
                .segments
                .get(seg as usize)
                .cloned()
                .ok_or_else(|| MetaError::CannotExpose {
                    name: self.name.clone(),
                    zone: z.name().into(),
                    why: format!("segment {seg} of the group has no backing file (an --in-memory group, or not a group zone)"),
                })?;
            let len = std::fs::metadata(&path)
                .map_err(|source| MetaError::Io {
                    what: "inspecting segment",
                    path: path.clone(),
                    source,
                })?
                .len();
            if !len.is_power_of_two() {
                return Err(MetaError::CannotExpose {
                    name: self.name.clone(),
                    zone: z.name().into(),
                    why: format!("its segment {} is {len} bytes, not a power of two, and QEMU refuses such a BAR; start the group with a power-of-two -m", path.display()),
                });
            }
            let off = z.offset().offset;
            if off.checked_add(z.len() as u64).is_none_or(|e| e > len) {
                return Err(not_in());
            }
            let known: Vec<u32> = local
                .exposed
                .iter()
                .chain(new_exposed.iter())
                .map(|(x, _)| x.segment)
                .collect();
            let device = match known.iter().position(|&k| k == seg) {
                Some(k) => k as u32 + 1,
                None if known.len() < MAX_EXPOSED => {
                    new_exposed.push((ExposedSegment { len, segment: seg }, path));
                    (known.len() + 1) as u32
                }
                None => {
                    return Err(MetaError::CannotExpose {
                        name: self.name.clone(),
                        zone: z.name().into(),
                        why: format!("the metadata already exposes {MAX_EXPOSED} segments"),
                    })
                }
            };
            let dup = |e: &EntryInfo| e.device == device && e.offset == off && e.name == z.name();
            if local.slots.iter().flatten().any(|e| dup(&e.info)) || new_entries.iter().any(dup) {
                return Err(already(z));
            }
            let align = if off == 0 {
                4096
            } else {
                (1u64 << off.trailing_zeros()).min(4096)
            };
            // Guests refuse a block with a less aligned entry (layout::validate).
            if align < layout::min_align(z.kind()) {
                return Err(MetaError::CannotExpose {
                    name: self.name.clone(),
                    zone: z.name().into(),
                    why: format!(
                        "it is at offset {off} of its segment, and a zone of kind {} must be {}-aligned",
                        z.kind(),
                        layout::min_align(z.kind())
                    ),
                });
            }
            new_entries.push(EntryInfo {
                name: z.name().into(),
                device,
                kind: z.kind(),
                offset: off,
                len: z.len() as u64,
                align,
                elem: ElementInfo::default(),
            });
        }
        let free: Vec<usize> = local
            .slots
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_none())
            .map(|(i, _)| i)
            .take(new_entries.len())
            .collect();
        if free.len() < new_entries.len() {
            return Err(MetaError::EntriesFull {
                name: self.name.clone(),
                max: MAX_ENTRIES,
            });
        }
        // Commit.
        let elem = obj.element_info();
        for (x, path) in new_exposed {
            let k = local.exposed.len();
            let (o, b) = layout::encode_exposed(k, &x);
            self.map.write(o, &b);
            local.exposed.push((x, path));
            self.map
                .atomic_u32(hdr::EXPOSED_COUNT)
                .store(local.exposed.len() as u32, Ordering::Release);
        }
        let first_zone = zones[0].name().to_string();
        for (mut info, i) in new_entries.into_iter().zip(free) {
            if info.name == first_zone && elem != ElementInfo::default() {
                info.elem = elem;
            }
            self.write_entry(i, &info, state::PUBLISHED);
            local.slots[i] = Some(LocalEntry {
                info,
                published: true,
            });
        }
        for &i in &publish {
            let e = local.slots[i].as_mut().expect("checked above");
            if e.info.name == first_zone && elem != ElementInfo::default() {
                e.info.elem = elem;
                let eb = layout::encode_entry(&e.info);
                let o = entry_at(i) + ent::ELEM_SIZE;
                self.map.write(o, &eb[ent::ELEM_SIZE..ENTRY_LEN]);
            }
            e.published = true;
            self.map
                .atomic_u32(entry_at(i) + ent::STATE)
                .store(state::PUBLISHED, Ordering::Release);
        }
        Ok(())
    }

    /// The QEMU arguments of this device alone, at the first ivshmem PCI slot; seals the
    /// metadata. Use [`QemuArgs::for_metadata`] for several devices in one VM.
    pub fn qemu_args(&self) -> Result<QemuArgs, MetaError> {
        QemuArgs::for_metadata(&[self])
    }

    /// Whether `z` lives in this metadata's data area.
    fn in_device(&self, z: &Zone) -> bool {
        let base = self.map.base() as usize;
        let p = z.as_ptr() as usize;
        p >= base + META_LEN && p < base + self.map.len()
    }

    /// Whether `z` is the group's zone of its name (not another metadata's, say).
    fn is_group_zone(&self, z: &Zone) -> bool {
        self.group.lookup(z.name()).is_ok_and(|g| {
            g.as_ptr() == z.as_ptr() && g.len() == z.len() && g.offset() == z.offset()
        })
    }

    fn lock(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_entry(&self, i: usize, info: &EntryInfo, st: u32) {
        let st_word = self.map.atomic_u32(entry_at(i) + ent::STATE);
        st_word.store(state::EMPTY, Ordering::Release);
        let b = layout::encode_entry(info);
        self.map.write(entry_at(i), &b[..ent::STATE]);
        self.map
            .write(entry_at(i) + ent::STATE + 4, &b[ent::STATE + 4..]);
        st_word.store(st, Ordering::Release);
        self.map
            .atomic_u32(hdr::ENTRY_COUNT)
            .fetch_max(i as u32 + 1, Ordering::AcqRel);
    }

    fn zone_of(&self, info: &EntryInfo) -> Zone {
        self.map.zone(
            &info.name,
            info.kind,
            info.offset as usize,
            info.len as usize,
            ShmOffset::new(0, info.offset),
        )
    }
}

impl Drop for Metadata<'_> {
    fn drop(&mut self) {
        // Guests still mapping the device see it retired (their data is stale from now on).
        self.map
            .atomic_u32(hdr::RETIRED)
            .store(1, Ordering::Release);
        if self.file_id.is_some() && file_id(&self.path) == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.group.free(&registry_zone(&self.name));
        let _ = self.group.free(&self.slot_zone);
    }
}

/// Frees registry zones if creation fails half-way.
struct Undo<'a> {
    group: &'a (dyn Zones + Sync),
    zones: Vec<String>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for z in &self.zones {
            let _ = self.group.free(z);
        }
    }
}

/// The [`Zones`] of a metadata's data area (see [`Metadata::zones`]).
#[derive(Debug, Clone, Copy)]
pub struct MetaZones<'a> {
    meta: &'a Metadata<'a>,
}

impl Zones for MetaZones<'_> {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        check_zone_name(req.name)?;
        if req.len == 0 {
            return Err(ZoneError::BadRequest {
                name: req.name.into(),
                why: "length is zero".into(),
            });
        }
        if !req.align.is_power_of_two() || req.align as u64 > layout::MAX_ALIGN {
            return Err(ZoneError::BadRequest {
                name: req.name.into(),
                why: format!(
                    "alignment {} is not a power of two of at most 1 GiB",
                    req.align
                ),
            });
        }
        let m = self.meta;
        let mut local = m.lock();
        if m.is_sealed() {
            return Err(ZoneError::Unsupported(
                "the metadata is sealed (its QEMU arguments were generated): create objects before generating them",
            ));
        }
        if local
            .slots
            .iter()
            .flatten()
            .any(|e| e.info.name == req.name)
        {
            return Err(ZoneError::Exists(req.name.into()));
        }
        let slot = local
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(ZoneError::TableFull(MAX_ENTRIES))?;
        // Never less than guests accept (layout::validate).
        let align = (req.align as u64).max(layout::min_align(req.kind));
        let len = req.len as u64;
        let mut live: Vec<(u64, u64)> = local.own().map(|e| (e.info.offset, e.info.len)).collect();
        live.sort_unstable();
        let end = m.map.len() as u64;
        let mut cursor = META_LEN as u64;
        let mut largest = 0u64;
        let mut place = None;
        for &(o, l) in live.iter().chain(std::iter::once(&(end, 0))) {
            let at = cursor.next_multiple_of(align);
            if at.checked_add(len).is_some_and(|e| e <= o) {
                place = Some(at);
                break;
            }
            largest = largest.max(o.saturating_sub(at));
            cursor = cursor.max(o + l);
        }
        let Some(offset) = place else {
            return Err(ZoneError::NoMemory {
                name: req.name.into(),
                len: req.len,
                free: largest as usize,
            });
        };
        m.map.zero(offset as usize, req.len);
        let info = EntryInfo {
            name: req.name.into(),
            device: 0,
            kind: req.kind,
            offset,
            len,
            align,
            elem: ElementInfo::default(),
        };
        m.write_entry(slot, &info, state::RESERVED);
        let z = m.zone_of(&info);
        local.slots[slot] = Some(LocalEntry {
            info,
            published: false,
        });
        Ok(z)
    }

    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        let local = self.meta.lock();
        let z = local
            .own()
            .find(|e| e.info.name == name)
            .map(|e| self.meta.zone_of(&e.info));
        z.ok_or_else(|| ZoneError::NotFound(name.into()))
    }

    fn free(&self, name: &str) -> Result<(), ZoneError> {
        let m = self.meta;
        let mut local = m.lock();
        let i = local
            .slots
            .iter()
            .position(|e| {
                e.as_ref()
                    .is_some_and(|e| e.info.device == 0 && e.info.name == name)
            })
            .ok_or_else(|| ZoneError::NotFound(name.into()))?;
        if local.slots[i].as_ref().is_some_and(|e| e.published) {
            return Err(ZoneError::Unsupported(
                "a zone published to guests cannot be freed: a VM may be using it",
            ));
        }
        m.map
            .atomic_u32(entry_at(i) + ent::STATE)
            .store(state::FREED, Ordering::Release);
        local.slots[i] = None;
        Ok(())
    }

    fn list(&self) -> Vec<ZoneInfo> {
        let mut v: Vec<&LocalEntry> = Vec::new();
        let local = self.meta.lock();
        v.extend(local.own());
        v.sort_by_key(|e| e.info.offset);
        v.iter()
            .map(|e| ZoneInfo {
                name: e.info.name.clone(),
                kind: e.info.kind,
                len: e.info.len as usize,
                offset: ShmOffset::new(0, e.info.offset),
                owner: self.meta.member,
            })
            .collect()
    }

    fn member(&self) -> MemberId {
        self.meta.member
    }

    fn liveness(&self) -> Arc<dyn Liveness> {
        self.meta.liveness.clone()
    }

    fn current_lcore(&self) -> Option<u32> {
        None
    }
}

/// What the group's registry says of a metadata (read by `cargo xtask qemu-cmdline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The metadata name.
    pub name: String,
    /// Its slot among the group's metadata.
    pub slot: u32,
    /// Device length.
    pub device_len: u64,
    /// The group generation at creation.
    pub generation: u64,
    /// The creating process.
    pub pid: u32,
    /// The backing file.
    pub path: PathBuf,
}

static HOOK: std::sync::Once = std::sync::Once::new();

/// The group's clean-up hook (registered when this process first creates a metadata): the
/// metadata of a member that died without dropping them are retired (guests mapping them see
/// [`crate::GuestZones::is_stale`]), their backing files removed and their registry and slot
/// zones freed, so their names and slots can be used again.
pub fn cleanup_dead_member(zones: &dyn Zones, dead: MemberId) -> Option<String> {
    let mut done = Vec::new();
    for z in zones.list() {
        if z.kind != ZoneKind::IvshmemMeta || z.owner != dead {
            continue;
        }
        if z.name.starts_with("IVSHMEM_SLOT_") {
            let _ = zones.free(&z.name);
            continue;
        }
        let Some(name) = z.name.strip_prefix("IVSHMEM_") else {
            continue;
        };
        if let Ok(r) = registered(zones, "", name) {
            if retire_file(&r) {
                let _ = std::fs::remove_file(&r.path);
            }
        }
        if zones.free(&z.name).is_ok() {
            done.push(name.to_string());
        }
    }
    (!done.is_empty()).then(|| {
        format!(
            "ivshmem metadata of {dead} retired and removed: {}",
            done.join(", ")
        )
    })
}

/// Set the `retired` word of the block in `r.path` if it is the registered metadata; whether it
/// was.
fn retire_file(r: &Registered) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&r.path)
    else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    if len != r.device_len || usize::try_from(len).is_err() {
        return false;
    }
    let Ok(map) = Mapping::map_file(&file, len as usize) else {
        return false;
    };
    match layout::validate(&r.path.display().to_string(), &map.read(0, META_LEN), len) {
        Ok(b) if b.name == r.name && b.host_pid == r.pid => {
            map.atomic_u32(hdr::RETIRED).store(1, Ordering::Release);
            true
        }
        _ => false,
    }
}

/// Read the registry record of metadata `name` in `group`.
pub fn registered(group: &dyn Zones, prefix: &str, name: &str) -> Result<Registered, MetaError> {
    check_meta_name(name)?;
    let rname = registry_zone(name);
    let z = group
        .lookup_kind(&rname, ZoneKind::IvshmemMeta)
        .map_err(|e| match e {
            ZoneError::NotFound(_) => MetaError::NotRegistered {
                prefix: prefix.into(),
                name: name.into(),
            },
            source => MetaError::Group {
                what: format!("looking up {rname}"),
                source,
            },
        })?;
    if z.len() < reg::LEN {
        return Err(MetaError::corrupt(
            &rname,
            "zone length",
            z.len(),
            format!("a registry record is {} bytes", reg::LEN),
        ));
    }
    let b = raw::read_zone(&z, 0, reg::LEN);
    if b[..8] != reg::MAGIC {
        return Err(MetaError::corrupt(
            &rname,
            "magic",
            format!("{:02x?}", &b[..8]),
            "not a registry record (or its creator is still writing it)",
        ));
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let plen = u32_at(reg::O_PATH_LEN) as usize;
    if plen == 0 || plen > reg::PATH_MAX {
        return Err(MetaError::corrupt(&rname, "path length", plen, "1 to 472"));
    }
    let path = std::str::from_utf8(&b[reg::O_PATH..reg::O_PATH + plen])
        .map_err(|_| MetaError::corrupt(&rname, "path", "(bytes)", "not UTF-8"))?;
    Ok(Registered {
        name: name.into(),
        slot: u32_at(reg::O_SLOT),
        device_len: u64_at(reg::O_DEVICE_LEN),
        generation: u64_at(reg::O_GENERATION),
        pid: u32_at(reg::O_PID),
        path: PathBuf::from(path),
    })
}
