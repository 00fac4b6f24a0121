//! The one error type of `ivshmem-meta`.

use std::path::PathBuf;

use shmconfig::ZoneError;

/// Everything that can go wrong on the host (creating metadata, adding objects, generating QEMU
/// arguments) or in the guest (finding devices, validating their metadata block).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// A metadata name is empty, too long or uses characters outside `A-Z a-z 0-9 _ -`.
    #[error("metadata name {name:?} is invalid: {why} (use 1 to {max} characters from A-Z a-z 0-9 _ -)", max = crate::layout::META_NAME_MAX)]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Another metadata of this name exists in the group (in this process or another one).
    #[error("a metadata named {name:?} exists already in this group (zone {zone}); pick another name or use the existing one")]
    Exists {
        /// The metadata name.
        name: String,
        /// The registry zone that holds it.
        zone: String,
    },
    /// The group holds the most metadata it may.
    #[error("the group already holds {max} IVSHMEM metadata (the limit); drop one, or raise MetaOptions::max_per_group")]
    TooMany {
        /// The limit in force.
        max: u32,
    },
    /// The group's zone table refused an operation on the metadata registry.
    #[error("the group's zone table refused {what}: {source}")]
    Group {
        /// What was being done (naming the zone).
        what: String,
        /// The zone table's error.
        #[source]
        source: ZoneError,
    },
    /// The backing file of the device could not be created.
    #[error("cannot create the backing file of metadata {name:?}: {source}")]
    Segment {
        /// The metadata name.
        name: String,
        /// What `hugemem` said.
        #[source]
        source: hugemem::HugememError,
    },
    /// The options are invalid (device size not usable, limits out of range).
    #[error("invalid metadata options: {0}")]
    BadOptions(String),
    /// The QEMU arguments of this metadata were generated: it is sealed and refuses additions.
    #[error("metadata {name:?} is sealed (its QEMU arguments were generated and QEMU has no hot plug for ivshmem devices); add objects before generating the command line, or create another metadata")]
    Sealed {
        /// The metadata name.
        name: String,
    },
    /// The zone was already added to this metadata.
    #[error("zone {zone:?} is already in metadata {name:?}; each object is added once")]
    AlreadyAdded {
        /// The metadata name.
        name: String,
        /// The zone added twice.
        zone: String,
    },
    /// The zone does not live in this metadata's device: adding it would expose memory the VM
    /// cannot see (or, for a general group segment, the whole segment).
    #[error("zone {zone:?} does not live in the device of metadata {name:?}; create the object through metadata.zones() (e.g. Ring::create(&meta.zones(), ..)) so it lives inside the device")]
    NotInDevice {
        /// The metadata name.
        name: String,
        /// The zone refused.
        zone: String,
    },
    /// A zone in a general group segment cannot be exposed (see
    /// `Metadata::add_exposing_segment`).
    #[error("cannot expose zone {zone:?} through metadata {name:?}: {why}")]
    CannotExpose {
        /// The metadata name.
        name: String,
        /// The zone.
        zone: String,
        /// Why.
        why: String,
    },
    /// A ring offered for a VM could not be made unbiasable: its zone (of kind ring, named
    /// `RG_<ring>`) is not a valid ring, or its header could not be read. Nothing was added: a
    /// guest must never meet a side biased to a host thread (see `rte_ring`'s "Biased sides").
    #[error("cannot disable the bias of ring zone {zone:?} for metadata {name:?} (a guest must never meet a biased side): {source}")]
    Bias {
        /// The metadata name.
        name: String,
        /// The ring's zone.
        zone: String,
        /// What `rte_ring::disable_bias_of` said (boxed: a ring error is large).
        #[source]
        source: Box<rte_ring::RingError>,
    },
    /// An object offered no zone at all.
    #[error("the object offered to metadata {name:?} occupies no zone (a ring built with Ring::model, for example); only objects in shared memory can be added")]
    NoZones {
        /// The metadata name.
        name: String,
    },
    /// The entry table is full.
    #[error("metadata {name:?} already has {max} entries (the most a layout-v1 block holds)")]
    EntriesFull {
        /// The metadata name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// No metadata of this name is registered in the group.
    #[error("no metadata named {name:?} in group {prefix:?}; the host process must create it (Metadata::create) and still be running")]
    NotRegistered {
        /// The group's file prefix.
        prefix: String,
        /// The metadata name.
        name: String,
    },
    /// Too many devices for the PCI slots reserved for them.
    #[error("{count} ivshmem devices do not fit in PCI slots {first:#04x}..=0x1f of bus 0; pass fewer metadata or a lower first address")]
    NoPciAddress {
        /// Devices asked for.
        count: usize,
        /// First slot used.
        first: u8,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A metadata block (in a registry zone, a backing file or a guest's BAR) failed validation:
    /// it was damaged, written by something else, or hostile. Nothing of it was used.
    #[error("invalid IVSHMEM metadata in {device}: {field} = {value}: {why}")]
    Corrupt {
        /// The device (PCI address or file).
        device: String,
        /// The field at fault.
        field: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        why: String,
    },
    /// The block was written by another version of this library.
    #[error("IVSHMEM metadata in {device} has layout version {found}, this program reads version {expected}; run the same hugeshare version on host and guest")]
    Version {
        /// The device.
        device: String,
        /// The version found.
        found: u32,
        /// The version understood.
        expected: u32,
    },
}

impl MetaError {
    pub(crate) fn corrupt(
        device: &str,
        field: &'static str,
        value: impl std::fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        MetaError::Corrupt {
            device: device.to_string(),
            field,
            value: value.to_string(),
            why: why.into(),
        }
    }
}
