//! The guest side: [`GuestZones`] finds `ivshmem-plain` devices (PCI `1af4:1110`) through sysfs,
//! maps their BAR2, validates their metadata block and serves the published zones.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shmconfig::{
    AlwaysAlive, Liveness, MemberId, ShmOffset, Zone, ZoneError, ZoneInfo, ZoneRequest, Zones,
};

use crate::error::MetaError;
use crate::layout::{self, hdr, BlockInfo, EntryInfo, META_LEN};
use crate::raw::Mapping;

/// Where Linux lists PCI devices.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// PCI vendor id of ivshmem (Red Hat, Inc.).
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
/// PCI device id of ivshmem.
pub const IVSHMEM_DEVICE: u16 = 0x1110;

/// An ivshmem device carrying hugeshare metadata, as found by [`GuestZones::scan`].
#[derive(Debug)]
pub struct GuestDevice {
    pci: String,
    info: BlockInfo,
    map: Arc<Mapping>,
    /// BAR2 of the devices holding the exposed group segments, in order.
    exposed: Vec<(String, Arc<Mapping>)>,
}

impl GuestDevice {
    /// The PCI address (sysfs name), e.g. `0000:00:10.0`.
    pub fn pci(&self) -> &str {
        &self.pci
    }
    /// The validated metadata block, as read at scan time.
    pub fn info(&self) -> &BlockInfo {
        &self.info
    }
    /// The PCI addresses of the devices holding the group segments this metadata exposes.
    pub fn exposed_pci(&self) -> Vec<&str> {
        self.exposed.iter().map(|(p, _)| p.as_str()).collect()
    }
    /// Whether the host has dropped this metadata since (its data is stale: the host group
    /// ended or restarted). Read live from the device.
    pub fn is_retired(&self) -> bool {
        self.map.atomic_u32(hdr::RETIRED).load(Ordering::Acquire) != 0
    }
}

/// An ivshmem device that was not used, and why (another program's device, no BAR2, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDevice {
    /// The PCI address.
    pub pci: String,
    /// Why it was skipped.
    pub why: String,
}

/// The zones the host published to this VM, over every hugeshare ivshmem device: a [`Zones`]
/// for lookups, so `Ring::lookup(&guest, "rx")` works unchanged in the guest.
///
/// A guest is an outsider to the host's group: [`Zones::member`] is [`MemberId::OUTSIDER`], its
/// liveness is [`AlwaysAlive`], it has no lcore (no per-lcore caches), and it cannot reserve or
/// free zones (the host creates every object before the VM starts).
///
/// ```no_run
/// use ivshmem_meta::GuestZones;
/// use rte_ring::Ring;
/// let guest = GuestZones::scan()?;
/// let rx = Ring::<u64>::lookup(&guest, "rx")?;
/// while let Some(v) = rx.dequeue() {
///     println!("{v}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GuestZones {
    devices: Vec<GuestDevice>,
    skipped: Vec<SkippedDevice>,
}

fn read_hex(path: &Path) -> Option<u16> {
    let s = std::fs::read_to_string(path).ok()?;
    u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

fn open_bar(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::SYNC.bits() as i32)
        .open(path)
}

impl GuestZones {
    /// Scan `/sys/bus/pci/devices`.
    ///
    /// Devices of another kind, and ivshmem devices without the hugeshare magic, are skipped
    /// (see [`GuestZones::skipped`]). A device with the magic whose block fails validation is an
    /// error: nothing of a damaged or hostile block is used.
    pub fn scan() -> Result<GuestZones, MetaError> {
        Self::scan_dir(Path::new(SYSFS_PCI_DEVICES))
    }

    /// Scan a directory laid out as `/sys/bus/pci/devices` (each entry with `vendor`, `device`
    /// and `resource2`), in name order.
    pub fn scan_dir(dir: &Path) -> Result<GuestZones, MetaError> {
        let rd = std::fs::read_dir(dir).map_err(|source| MetaError::Io {
            what: "listing",
            path: dir.into(),
            source,
        })?;
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let mut g = GuestZones {
            devices: Vec::new(),
            skipped: Vec::new(),
        };
        for d in names {
            if read_hex(&d.join("vendor")) != Some(IVSHMEM_VENDOR)
                || read_hex(&d.join("device")) != Some(IVSHMEM_DEVICE)
            {
                continue;
            }
            let pci = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match Self::open_device(&pci, &d.join("resource2"))? {
                Ok(dev) => g.devices.push(dev),
                Err(why) => g.skipped.push(SkippedDevice { pci, why }),
            }
        }
        // Exposed group segments: the devices in the PCI slots right after their metadata's.
        for dev in &mut g.devices {
            for (k, x) in dev.info.exposed.iter().enumerate() {
                let want = next_slot(&dev.pci, k + 1).ok_or_else(|| {
                    MetaError::corrupt(&dev.pci, "PCI address", &dev.pci, "not DDDD:BB:SS.F")
                })?;
                let Some(i) = g.skipped.iter().position(|s| s.pci == want) else {
                    return Err(MetaError::corrupt(
                        &dev.pci,
                        "exposed segment",
                        k + 1,
                        format!("its device {want} is missing; give the VM every device qemu-cmdline prints, in order"),
                    ));
                };
                let bar = dir.join(&want).join("resource2");
                let map = open_bar(&bar)
                    .and_then(|f| {
                        let len = f.metadata()?.len();
                        if len != x.len {
                            return Err(std::io::Error::other(format!(
                                "BAR2 is {len} bytes, the metadata says {}",
                                x.len
                            )));
                        }
                        Mapping::map_file(&f, len as usize)
                    })
                    .map_err(|e| {
                        MetaError::corrupt(&dev.pci, "exposed segment", &want, e.to_string())
                    })?;
                g.skipped.remove(i);
                dev.exposed.push((want, Arc::new(map)));
            }
        }
        Ok(g)
    }

    /// Outer error: a device of ours that fails validation. Inner error: a device to skip.
    fn open_device(pci: &str, bar: &Path) -> Result<Result<GuestDevice, String>, MetaError> {
        let file = match open_bar(bar) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("cannot open {}: {e}", bar.display()))),
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Ok(Err(format!("cannot stat {}: {e}", bar.display()))),
        };
        if len < META_LEN as u64 {
            return Ok(Err(format!(
                "BAR2 is {len} bytes, too small for hugeshare metadata"
            )));
        }
        let Ok(ulen) = usize::try_from(len) else {
            return Ok(Err(format!(
                "BAR2 is {len} bytes, more than this address space"
            )));
        };
        let map = match Mapping::map_file(&file, ulen) {
            Ok(m) => Arc::new(m),
            Err(e) => return Ok(Err(format!("cannot map {}: {e}", bar.display()))),
        };
        if !layout::has_magic(&map.read(0, 8)) {
            return Ok(Err("no hugeshare magic: another program's device".into()));
        }
        // Everything after this point is checked against a private copy, so the host (or
        // anything else writing the BAR) cannot change a value between check and use.
        let _ = map.atomic_u32(hdr::ENTRY_COUNT).load(Ordering::Acquire);
        let block = map.read(0, META_LEN);
        let info = layout::validate(pci, &block, len)?;
        Ok(Ok(GuestDevice {
            pci: pci.into(),
            info,
            map,
            exposed: Vec::new(),
        }))
    }

    /// The hugeshare devices found, in PCI address order.
    pub fn devices(&self) -> &[GuestDevice] {
        &self.devices
    }

    /// The ivshmem devices not used, and why.
    pub fn skipped(&self) -> &[SkippedDevice] {
        &self.skipped
    }

    /// Whether any device was retired by its host since the scan (its data is stale).
    pub fn is_stale(&self) -> bool {
        self.devices.iter().any(GuestDevice::is_retired)
    }

    fn find(&self, name: &str) -> Result<(usize, &EntryInfo), ZoneError> {
        let mut found = None;
        for (i, d) in self.devices.iter().enumerate() {
            if let Some(e) = d.info.entries.iter().find(|e| e.name == name) {
                if let Some((j, _)) = found {
                    let first: &GuestDevice = &self.devices[j];
                    return Err(ZoneError::Corrupt(format!(
                        "zone {name:?} is offered by two devices, {} and {}; give the VM only one of them",
                        first.pci, d.pci
                    )));
                }
                found = Some((i, e));
            }
        }
        found.ok_or_else(|| ZoneError::NotFound(name.into()))
    }
}

/// Where a zone lives, as a guest numbers devices: metadata `i`'s own device is segment
/// `i * 5`, its exposed segments `i * 5 + k`.
fn shm_offset(i: usize, e: &EntryInfo) -> ShmOffset {
    ShmOffset::new(
        (i * (crate::layout::MAX_EXPOSED + 1)) as u32 + e.device,
        e.offset,
    )
}

/// `DDDD:BB:SS.F` with the slot moved on by `k`.
fn next_slot(pci: &str, k: usize) -> Option<String> {
    let (head, rest) = pci.rsplit_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    let s = usize::from_str_radix(slot, 16).ok()? + k;
    (s < 32).then(|| format!("{head}:{s:02x}.{func}"))
}

impl Zones for GuestZones {
    /// Refused: a guest cannot reserve zones.
    fn reserve(&self, _req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        Err(ZoneError::Unsupported(
            "a guest cannot reserve zones: the host creates every object in the metadata before the VM starts",
        ))
    }

    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        let (i, e) = self.find(name)?;
        let d = &self.devices[i];
        let map = match e.device {
            0 => &d.map,
            k => &d.exposed[k as usize - 1].1,
        };
        // Validated: offset + len <= the device's length == its mapping's length, all fit usize.
        Ok(map.zone(
            &e.name,
            e.kind,
            e.offset as usize,
            e.len as usize,
            shm_offset(i, e),
        ))
    }

    /// Refused: zones belong to the host.
    fn free(&self, _name: &str) -> Result<(), ZoneError> {
        Err(ZoneError::Unsupported(
            "a guest cannot free zones: they belong to the host",
        ))
    }

    fn list(&self) -> Vec<ZoneInfo> {
        self.devices
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                d.info.entries.iter().map(move |e| ZoneInfo {
                    name: e.name.clone(),
                    kind: e.kind,
                    len: e.len as usize,
                    offset: shm_offset(i, e),
                    owner: MemberId::OUTSIDER,
                })
            })
            .collect()
    }

    fn member(&self) -> MemberId {
        MemberId::OUTSIDER
    }

    fn liveness(&self) -> Arc<dyn Liveness> {
        Arc::new(AlwaysAlive)
    }

    fn current_lcore(&self) -> Option<u32> {
        None
    }
}
