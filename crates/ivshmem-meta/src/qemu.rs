//! [`QemuArgs`]: the `-object memory-backend-file` and `-device ivshmem-plain` arguments of one
//! or more metadata devices, with stable PCI addresses.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use shmconfig::Zones;

use crate::error::MetaError;
use crate::host::{registered, Metadata};
use crate::layout::{self, hdr, META_LEN};
use crate::raw::Mapping;

/// The PCI slot (device number on bus 0) of the first ivshmem device: devices get
/// `0x10`, `0x11`, ... in the order given, so the guest sees `0000:00:10.0`, `0000:00:11.0`, ...
pub const FIRST_PCI_SLOT: u8 = 0x10;
/// The last usable slot on bus 0.
pub const LAST_PCI_SLOT: u8 = 0x1f;

/// One ivshmem device of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuDevice {
    /// The metadata name (the memdev id is `hs_<name>`).
    pub name: String,
    /// The backing file.
    pub path: PathBuf,
    /// Its length in bytes (a power of two).
    pub size: u64,
    /// The PCI slot on bus 0.
    pub slot: u8,
}

impl QemuDevice {
    /// The memory backend id: `hs_<name>`.
    pub fn memdev_id(&self) -> String {
        format!("hs_{}", self.name)
    }
    /// The guest's sysfs name of the device, e.g. `0000:00:10.0`.
    pub fn pci_address(&self) -> String {
        format!("0000:00:{:02x}.0", self.slot)
    }
}

/// The QEMU arguments giving a VM one `ivshmem-plain` device per metadata.
///
/// ```
/// use ivshmem_meta::QemuArgs;
/// let a = QemuArgs::new(vec![("vm0".into(), "/dev/shm/g.ivshmem.vm0.map_0".into(), 1 << 22)], 0x10).unwrap();
/// assert_eq!(a.args(), [
///     "-object", "memory-backend-file,id=hs_vm0,size=4194304,mem-path=/dev/shm/g.ivshmem.vm0.map_0,share=on",
///     "-device", "ivshmem-plain,memdev=hs_vm0,addr=0x10",
/// ]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgs {
    devices: Vec<QemuDevice>,
}

impl QemuArgs {
    /// Arguments for devices `(name, backing file, size)`, in slots `first_slot`, `first_slot + 1`, ...
    /// Does not seal anything (use [`QemuArgs::for_metadata`] or [`QemuArgs::from_group`]).
    pub fn new(devices: Vec<(String, PathBuf, u64)>, first_slot: u8) -> Result<Self, MetaError> {
        let n = devices.len();
        if first_slot == 0 || usize::from(first_slot) + n > usize::from(LAST_PCI_SLOT) + 1 {
            return Err(MetaError::NoPciAddress {
                count: n,
                first: first_slot,
            });
        }
        for (i, (name, _, size)) in devices.iter().enumerate() {
            if devices[..i].iter().any(|d| d.0 == *name) {
                return Err(MetaError::BadName {
                    name: name.clone(),
                    why: "named twice: each device is given once (QEMU refuses two objects with one id)",
                });
            }
            if name.is_empty()
                || name.len() > 48
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(MetaError::BadName {
                    name: name.clone(),
                    why: "a device name is 1 to 48 characters from A-Z a-z 0-9 _ -",
                });
            }
            if !size.is_power_of_two() {
                return Err(MetaError::BadOptions(format!(
                    "device {name}: size {size} is not a power of two (QEMU aborts on such a BAR)"
                )));
            }
        }
        Ok(QemuArgs {
            devices: devices
                .into_iter()
                .enumerate()
                .map(|(i, (name, path, size))| QemuDevice {
                    name,
                    path,
                    size,
                    slot: first_slot + i as u8,
                })
                .collect(),
        })
    }

    /// The arguments of metadata created in this process, sealing each. A metadata's exposed
    /// group segments follow its own device, named `<name>_s1`, `<name>_s2`, ...
    pub fn for_metadata(metas: &[&Metadata<'_>]) -> Result<Self, MetaError> {
        let mut devs = Vec::new();
        for m in metas {
            devs.push((m.name().to_string(), m.path().to_path_buf(), m.device_len()));
            for (k, (path, len)) in m.exposed_segments().into_iter().enumerate() {
                devs.push((format!("{}_s{}", m.name(), k + 1), path, len));
            }
        }
        let a = Self::new(devs, FIRST_PCI_SLOT)?;
        for m in metas {
            m.seal();
        }
        Ok(a)
    }

    /// The arguments of metadata registered in the running group `process` belongs to (created
    /// by any of its processes), found through the group's registry; each device's block is
    /// checked and sealed, so its creator refuses further additions. What `cargo xtask
    /// qemu-cmdline` prints.
    pub fn from_process(
        process: &procctl::Process,
        names: &[&str],
        first_slot: u8,
    ) -> Result<Self, MetaError> {
        let segs = if process.in_memory() {
            Vec::new()
        } else {
            process.segment_paths()
        };
        Self::from_registry(process, process.prefix(), names, first_slot, &segs)
    }

    /// Like [`QemuArgs::from_process`] for any [`Zones`] of a group (tests use
    /// `shmconfig::LocalZones`); a metadata that exposes group segments is refused here, since
    /// their files are not known.
    pub fn from_group(
        group: &dyn Zones,
        prefix: &str,
        names: &[&str],
        first_slot: u8,
    ) -> Result<Self, MetaError> {
        Self::from_registry(group, prefix, names, first_slot, &[])
    }

    fn from_registry(
        group: &dyn Zones,
        prefix: &str,
        names: &[&str],
        first_slot: u8,
        segments: &[PathBuf],
    ) -> Result<Self, MetaError> {
        let mut devs = Vec::new();
        // Sealed only once every device checked out: a refused call changes nothing.
        let mut to_seal = Vec::new();
        for name in names {
            let r = registered(group, prefix, name)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&r.path)
                .map_err(|source| MetaError::Io {
                    what: "opening the backing file of",
                    path: r.path.clone(),
                    source,
                })?;
            let len = file
                .metadata()
                .map_err(|source| MetaError::Io {
                    what: "inspecting",
                    path: r.path.clone(),
                    source,
                })?
                .len();
            let dev = r.path.display().to_string();
            if len != r.device_len || usize::try_from(len).is_err() {
                return Err(MetaError::corrupt(
                    &dev,
                    "file length",
                    len,
                    format!("the registry says {}", r.device_len),
                ));
            }
            let map = Mapping::map_file(&file, len as usize).map_err(|source| MetaError::Io {
                what: "mapping",
                path: r.path.clone(),
                source,
            })?;
            let block = map.read(0, META_LEN);
            let info = layout::validate(&dev, &block, len)?;
            if info.name != *name {
                return Err(MetaError::corrupt(
                    &dev,
                    "name",
                    info.name,
                    format!("the registry names it {name:?}"),
                ));
            }
            let mut extra = Vec::new();
            for (k, x) in info.exposed.iter().enumerate() {
                let path = segments.get(x.segment as usize).ok_or_else(|| {
                    MetaError::corrupt(
                        &dev,
                        "exposed segment",
                        x.segment,
                        "the group has no such segment file here",
                    )
                })?;
                let flen = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                if flen != x.len {
                    return Err(MetaError::corrupt(
                        &dev,
                        "exposed segment length",
                        x.len,
                        format!("{} is {flen} bytes", path.display()),
                    ));
                }
                extra.push((format!("{name}_s{}", k + 1), path.clone(), x.len));
            }
            to_seal.push(map);
            devs.push((name.to_string(), r.path, len));
            devs.extend(extra);
        }
        let args = Self::new(devs, first_slot)?;
        for map in &to_seal {
            map.atomic_u32(hdr::SEALED).store(1, Ordering::Release);
        }
        Ok(args)
    }

    /// The devices, in slot order.
    pub fn devices(&self) -> &[QemuDevice] {
        &self.devices
    }

    /// The arguments, one per element: `-object`, `memory-backend-file,...`, `-device`,
    /// `ivshmem-plain,...` per device.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for d in &self.devices {
            let path = d.path.display().to_string().replace(',', ",,");
            v.push("-object".into());
            v.push(format!(
                "memory-backend-file,id={},size={},mem-path={path},share=on",
                d.memdev_id(),
                d.size
            ));
            v.push("-device".into());
            v.push(format!(
                "ivshmem-plain,memdev={},addr={:#04x}",
                d.memdev_id(),
                d.slot
            ));
        }
        v
    }

    /// The arguments as one line, each quoted for a POSIX shell where needed.
    pub fn shell_line(&self) -> String {
        self.args()
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quote `s` for a POSIX shell (unchanged if it has only safe characters).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=,:+@%".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
