//! The errors of `tsc-hpet`: [`ClockError`] for choosing and describing clocks, and
//! [`HpetUnavailable`], the typed reason why the HPET cannot be used on this machine.

use std::path::PathBuf;

/// Why the HPET cannot be read here. Every variant names what was tried and what to do.
///
/// DPDK requires HPET enabled in the firmware, a kernel built with `CONFIG_HPET_MMAP`, read
/// access to `/dev/hpet`, and a free HPET timer; most distributions and VMs miss at least one, so
/// this is an ordinary outcome, not a failure of the group: use the TSC or `CLOCK_MONOTONIC`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HpetUnavailable {
    /// The device node does not exist: the machine (or VM) has no HPET, it is disabled in the
    /// firmware, or the kernel was built without `CONFIG_HPET`.
    #[error(
        "{path} does not exist: this machine has no HPET, or it is disabled in the firmware, or the \
         kernel lacks CONFIG_HPET (QEMU: do not pass `-machine hpet=off`); use the TSC or \
         CLOCK_MONOTONIC instead"
    )]
    NoDevice {
        /// The device node that was opened.
        path: PathBuf,
    },
    /// The device exists but this process may not open it for reading.
    #[error(
        "{path} exists but cannot be opened for reading ({errno}): run as root, or give this user \
         read access (e.g. a udev rule `KERNEL==\"hpet\", MODE=\"0444\"`)"
    )]
    Permission {
        /// The device node that was opened.
        path: PathBuf,
        /// The error the kernel returned.
        errno: rustix::io::Errno,
    },
    /// Every HPET timer the kernel offers to user space is already open (the kernel's
    /// `hpet_open` returns `EBUSY`); typically another member of the group holds it.
    #[error(
        "{path} is busy: every HPET timer the kernel offers to user space is already open, \
         probably by another member of the group; only one process may hold the HPET, so this \
         member must use the group's TSC or CLOCK_MONOTONIC"
    )]
    Busy {
        /// The device node that was opened.
        path: PathBuf,
    },
    /// Opening the device failed for another reason.
    #[error("cannot open {path}: {errno}")]
    Open {
        /// The device node that was opened.
        path: PathBuf,
        /// The error the kernel returned.
        errno: rustix::io::Errno,
    },
    /// The device opened, but the kernel refused to map its registers.
    #[error(
        "{path} opened but mmap of its registers was refused ({errno}): the kernel was built \
         without CONFIG_HPET_MMAP, or with CONFIG_HPET_MMAP_DEFAULT=n and booted without \
         `hpet_mmap=1`; rebuild or boot with `hpet_mmap=1`, or use the TSC"
    )]
    MmapRefused {
        /// The device node that was mapped.
        path: PathBuf,
        /// The error the kernel returned.
        errno: rustix::io::Errno,
    },
    /// The HPET's register window is smaller than the registers this crate reads (the main
    /// counter ends at offset 0x0F8).
    #[error(
        "the HPET register window at {at} is {len} bytes, smaller than the {needed} bytes needed \
         to reach the main counter (offset 0x0F0); this HPET cannot be used, use the TSC"
    )]
    RegionTooSmall {
        /// Where the size came from (`/proc/iomem` or the caller of `from_registers`).
        at: String,
        /// The size found.
        len: usize,
        /// The size needed.
        needed: usize,
    },
    /// The capabilities register's period (bits 63:32, femtoseconds per tick) is not a valid
    /// HPET period: zero, above the specification's 100 ns (10^8 fs), or all ones (the device
    /// does not answer).
    #[error(
        "the HPET's capabilities register {capabilities:#018x} gives a counter period of \
         {period_fs} fs, outside the specification's 1..=100000000 fs: the device is absent or \
         not answering; use the TSC"
    )]
    BadPeriod {
        /// The whole capabilities register (offset 0x000).
        capabilities: u64,
        /// Bits 63:32 of it.
        period_fs: u64,
    },
    /// The main counter is halted: `ENABLE_CNF` (bit 0 of the configuration register at 0x010)
    /// is clear, so the counter does not advance.
    #[error(
        "the HPET main counter is halted (configuration register {config:#018x} has ENABLE_CNF, \
         bit 0, clear): the kernel is not running it; use the TSC"
    )]
    CounterHalted {
        /// The configuration register (offset 0x010).
        config: u64,
    },
    /// This build has no access to the HPET (only x86_64 Linux is supported).
    #[error("HPET access is only supported on x86_64 Linux")]
    Unsupported,
}

/// Errors of `tsc-hpet` outside the HPET's own ([`HpetUnavailable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The HPET was asked for and cannot be used; the reason says why.
    #[error("HPET unavailable: {0}")]
    HpetUnavailable(#[from] HpetUnavailable),
    /// The TSC was asked for and this CPU has none (or this is not an x86_64 build).
    #[error("no TSC: {reason}; use `ClockKind::Monotonic` (CLOCK_MONOTONIC) instead")]
    NoTsc {
        /// What is missing.
        reason: &'static str,
    },
    /// A file of the kernel's clocksource view could not be read.
    #[error(
        "cannot read {path}: {source} (is /sys mounted? in a container, bind-mount \
         /sys/devices/system/clocksource)"
    )]
    Clocksource {
        /// The sysfs file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Calibrating the TSC against `CLOCK_MONOTONIC_RAW` failed.
    #[error("TSC calibration against CLOCK_MONOTONIC_RAW failed: {reason}")]
    Calibration {
        /// What went wrong, with the values seen.
        reason: String,
    },
    /// A clock kind given by name (e.g. a `--clock` option) is not one of ours.
    #[error("unknown clock {name:?}: use tsc, hpet or monotonic")]
    UnknownKind {
        /// The name given.
        name: String,
    },
    /// A stored clock record holds a value this version does not know.
    #[error(
        "the group's clock record has {field} = {value}, which this version of tsc-hpet does not \
         know (valid: {valid}); the primary may run a newer version"
    )]
    BadRecord {
        /// The field (`kind`, `source` or `hz`).
        field: &'static str,
        /// The value found.
        value: u64,
        /// The values accepted.
        valid: &'static str,
    },
}
