//! Share zones, rings and mempools with QEMU guests through `ivshmem-plain` devices, as DPDK's
//! IVSHMEM library did, with the QEMU in today's distributions.
//!
//! **Host.** [`Metadata::create`] gives a named device: one power-of-two backing file (in the
//! group's hugetlbfs directory, or `/dev/shm`) holding a versioned metadata block ([`layout`])
//! and a data area. Objects meant for a VM are created *inside* it through
//! [`Metadata::zones`] and published with [`Metadata::add`] (or `add_ring`, `add_memzone`), so
//! the VM sees exactly what was added and nothing of the rest of the group. An object living in
//! the group's general memory is refused, unless the caller asks for its whole segment to be
//! exposed ([`Metadata::add_exposing_segment`]).
//! [`Metadata::qemu_args`] (or `cargo xtask qemu-cmdline`, through the group's registry) gives
//! the QEMU arguments and seals the metadata.
//!
//! **Guest.** [`GuestZones::scan`] finds the devices through sysfs, maps BAR2, validates every
//! field of the block (a damaged or hostile block is an error, never a crash) and implements
//! [`shmconfig::Zones`] for lookups: `Ring::lookup(&guest, "rx")` works unchanged in the VM.
//!
//! **What a guest may do with host objects.** Enqueue and dequeue on rings in every mode
//! (multi-producer/consumer modes need a VM whose vCPUs run their atomics atomically against
//! the host: `-smp 1,maxcpus=2` or more under TCG); take and return mempool objects (always
//! without per-lcore caches: [`GuestZones`] has no lcore); read and write published memzones.
//! It may not reserve or free zones (refused), is an outsider to the host group
//! ([`shmconfig::MemberId::OUTSIDER`]: its work in flight is never recovered as a dead member's,
//! so a guest killed mid-operation can stall a multi-producer ring), and must stop using the
//! objects once [`GuestZones::is_stale`] says the host dropped the metadata. `docs/ivshmem.md`
//! has the details.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

pub mod error;
pub mod guest;
pub mod host;
pub mod layout;
pub mod qemu;

pub use error::MetaError;
pub use guest::{GuestDevice, GuestZones, SkippedDevice};
pub use host::{
    check_meta_name, cleanup_dead_member, registered, registry_zone, GroupInfo, MetaOptions,
    MetaZones, Metadata, Occupant, Registered,
};
pub use layout::{BlockInfo, ElementInfo, EntryInfo, ExposedSegment};
pub use qemu::{QemuArgs, QemuDevice, FIRST_PCI_SLOT};
pub use raw::atomic_u64;
