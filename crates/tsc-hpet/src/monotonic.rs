//! `CLOCK_MONOTONIC` as a [`Clock`]: the last resort, always available.

use crate::{Clock, ClockKind, FrequencySource};

/// `clock_gettime(CLOCK_MONOTONIC)` (through the vDSO) as a clock of 1 GHz: one cycle is one
/// nanosecond. Every process on the machine shares its epoch, and the kernel keeps it right
/// whatever its clocksource is, so it is the safe choice when the TSC is not trusted.
///
/// ```
/// use tsc_hpet::{Clock, Monotonic};
/// let m = Monotonic;
/// let t0 = m.cycles();
/// m.delay_busy(std::time::Duration::from_micros(20));
/// assert!(m.cycles() - t0 >= 20_000);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic;

impl Monotonic {
    /// The frequency: one tick per nanosecond.
    pub const HZ: u64 = 1_000_000_000;
}

impl Clock for Monotonic {
    #[inline]
    fn cycles(&self) -> u64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn hz(&self) -> u64 {
        Monotonic::HZ
    }

    fn kind(&self) -> ClockKind {
        ClockKind::Monotonic
    }

    fn source(&self) -> FrequencySource {
        FrequencySource::Fixed
    }

    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        cycles
    }

    fn ns_to_cycles(&self, ns: u64) -> u64 {
        ns
    }
}
