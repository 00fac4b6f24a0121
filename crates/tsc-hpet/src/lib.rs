//! One clock for a whole hugeshare group: the TSC, the HPET, or `CLOCK_MONOTONIC`, behind
//! [`trait Clock`](Clock).
//!
//! * [`Tsc`]: `rdtsc`/`rdtscp`; the frequency from CPUID leaf 0x15 (computed as
//!   `crystal * numerator / denominator` in u128, not DPDK's truncating
//!   `crystal * (numerator / denominator)`), else leaf 0x16, else the hypervisor leaf
//!   0x40000010, else calibrated against `CLOCK_MONOTONIC_RAW` over several short windows with
//!   the spread reported and no rounding ([`tsc::calibrate`]). [`Tsc::invariant`] reads CPUID
//!   0x80000007 EDX bit 8; [`Tsc::kernel_trusts`] reads
//!   `/sys/devices/system/clocksource/clocksource0`.
//! * [`Hpet`]: `/dev/hpet` mapped read-only; the period from the capabilities register, the main
//!   counter 64-bit where the hardware says so, otherwise extended across 32-bit wraps without a
//!   background thread ([`hpet::extend_32`]). When it cannot be used, [`HpetUnavailable`] says
//!   exactly why. [`HpetTestPage`] is a page laid out like its registers, for tests.
//! * [`Monotonic`]: `clock_gettime(CLOCK_MONOTONIC)`, the last resort, 1 tick = 1 ns.
//! * [`compare()`]: two clocks side by side over a known delay (the IVSHMEM guest's HPET-vs-TSC
//!   check).
//!
//! # How a group shares one clock
//!
//! 1. **The primary chooses** with [`choose`]: the TSC if it is invariant and the kernel still
//!    trusts it, otherwise `CLOCK_MONOTONIC` (with a warning saying why); `choose(Some(kind))`
//!    forces a kind, and fails with a typed reason if it is unavailable (the HPET is never
//!    chosen automatically: it is slow to read and usually missing). The primary prints the
//!    returned warnings.
//! 2. **The primary records** the returned [`ClockRecord`] (kind, frequency, frequency source;
//!    [`ClockRecord::to_raw`] gives the three integers) in the shared configuration.
//! 3. **Every secondary uses the record** with [`from_record`]: same kind, and for the TSC the
//!    **recorded** frequency. Secondaries never recalibrate, so every member converts cycles to
//!    time with the same number, and TSC timestamps taken in one member can be compared with
//!    another's.
//! 4. **Fallback rule**, when a secondary cannot open the recorded source (it returns a notice
//!    to print, and `kind()` tells the truth, so `proc_info` can show what each member uses):
//!    * recorded `Hpet`, but `/dev/hpet` cannot be opened or mapped here (only one process may
//!      hold the HPET; a VM may have none): this member uses **`Monotonic`** (1 GHz). The record
//!      carries no TSC frequency and secondaries do not calibrate, so the TSC is not an option.
//!      Durations measured by this member agree with the group's; its raw cycle counts are
//!      nanoseconds, not HPET ticks, so exchange durations (or nanoseconds), not raw counts,
//!      with it.
//!    * recorded `Tsc`, but this member has no usable TSC (another architecture, or a bad
//!      record): `Monotonic`, same caveat. If the TSC is present but the kernel here has
//!      dropped it, the member keeps the group's TSC (so timestamps stay comparable) and the
//!      notice warns.
//!    * recorded `Monotonic`: always available.
//!
//! A QEMU guest sharing memory over IVSHMEM has its own TSC offset (and its own kernel), so TSC
//! readings taken in a guest are not comparable with the host's, even at the same frequency.
//!
//! ```
//! use tsc_hpet::{choose, from_record, Clock, ClockRecord};
//! // primary
//! let (clock, record, warnings) = choose(None).unwrap();
//! for w in &warnings { eprintln!("warning: {w}"); }
//! let (kind, hz, source) = record.to_raw(); // stored in the shared config
//! // secondary
//! let record = ClockRecord::from_raw(kind, hz, source).unwrap();
//! let (theirs, notice) = from_record(&record);
//! assert!(notice.is_none());
//! assert_eq!((theirs.kind(), theirs.hz()), (clock.kind(), clock.hz()));
//! ```
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

pub mod compare;
pub mod error;
pub mod hpet;
pub mod monotonic;
mod sync;
pub mod tsc;

use std::time::Duration;

pub use compare::{compare, ClockComparison};
pub use error::{ClockError, HpetUnavailable};
pub use hpet::{Hpet, HpetCapabilities, HpetTestPage};
pub use monotonic::Monotonic;
pub use tsc::{Tsc, TscFrequency};

/// A source of cycles at a known frequency.
///
/// Implementations: [`Tsc`], [`Hpet`], [`Monotonic`]. Conversions use u128 arithmetic and round
/// to the nearest unit, so they neither overflow in the middle nor drift low; results that do
/// not fit in u64 saturate to `u64::MAX`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current count. Cheap; not ordered against surrounding loads and stores (a bare
    /// `rdtsc` for the TSC).
    fn cycles(&self) -> u64;

    /// The current count, read after every earlier instruction has executed (`rdtscp` for the
    /// TSC). Use it to time short sections precisely.
    fn cycles_ordered(&self) -> u64 {
        self.cycles()
    }

    /// Cycles per second (never zero).
    fn hz(&self) -> u64;

    /// Which kind of clock this is.
    fn kind(&self) -> ClockKind;

    /// Where [`Clock::hz`] came from.
    fn source(&self) -> FrequencySource;

    /// What a primary records for this clock.
    fn record(&self) -> ClockRecord {
        ClockRecord {
            kind: self.kind(),
            hz: self.hz(),
            source: self.source(),
        }
    }

    /// `cycles` in nanoseconds, rounded to nearest (saturating at `u64::MAX`).
    fn cycles_to_ns(&self, cycles: u64) -> u64 {
        cycles_to_ns(cycles, self.hz())
    }

    /// `ns` nanoseconds in cycles, rounded to nearest (saturating at `u64::MAX`).
    fn ns_to_cycles(&self, ns: u64) -> u64 {
        ns_to_cycles(ns, self.hz())
    }

    /// `cycles` as a [`Duration`], rounded to the nearest nanosecond.
    fn cycles_to_duration(&self, cycles: u64) -> Duration {
        Duration::from_nanos(cycles_to_ns(cycles, self.hz()))
    }

    /// A [`Duration`] in cycles, rounded up (so waiting that many cycles waits at least `d`).
    fn duration_to_cycles(&self, d: Duration) -> u64 {
        duration_to_cycles_ceil(d, self.hz())
    }

    /// Spin (with `pause`) until at least `d` has passed by this clock.
    fn delay_busy(&self, d: Duration) {
        let n = self.duration_to_cycles(d);
        let start = self.cycles();
        while self.cycles().wrapping_sub(start) < n {
            std::hint::spin_loop();
        }
    }

    /// Sleep (`nanosleep`) for at least `d`, giving the CPU away.
    fn delay_sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Convert `cycles` at `hz` to nanoseconds: `round(cycles * 10^9 / hz)` in u128, saturating.
///
/// # Panics
/// If `hz` is zero.
///
/// ```
/// // 2.9 GHz: 2_900_000_000 cycles are exactly one second, and 3 cycles are 1.03 ns -> 1.
/// assert_eq!(tsc_hpet::cycles_to_ns(2_900_000_000, 2_900_000_000), 1_000_000_000);
/// assert_eq!(tsc_hpet::cycles_to_ns(3, 2_900_000_000), 1);
/// // No overflow in the middle: u64::MAX cycles at 2.9 GHz are 6.36e18 ns.
/// assert_eq!(tsc_hpet::cycles_to_ns(u64::MAX, 2_900_000_000), 6_360_946_232_313_638_488);
/// ```
pub fn cycles_to_ns(cycles: u64, hz: u64) -> u64 {
    assert!(hz != 0, "a clock frequency of 0 Hz");
    let hz = u128::from(hz);
    saturate((u128::from(cycles) * 1_000_000_000 + hz / 2) / hz)
}

/// Convert `ns` nanoseconds to cycles at `hz`: `round(ns * hz / 10^9)` in u128, saturating.
///
/// ```
/// // 14.31818 MHz HPET: 1 ms is 14318.18 ticks -> 14318.
/// assert_eq!(tsc_hpet::ns_to_cycles(1_000_000, 14_318_180), 14_318);
/// ```
pub fn ns_to_cycles(ns: u64, hz: u64) -> u64 {
    saturate((u128::from(ns) * u128::from(hz) + 500_000_000) / 1_000_000_000)
}

/// `d` in cycles at `hz`, rounded up, saturating.
pub fn duration_to_cycles_ceil(d: Duration, hz: u64) -> u64 {
    // as_nanos() < 2^94 and hz < 2^64 would overflow u128 only for absurd durations: saturate.
    match d.as_nanos().checked_mul(u128::from(hz)) {
        Some(p) => saturate(p.div_ceil(1_000_000_000)),
        None => u64::MAX,
    }
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The kinds of clock. The numbers are stored in shared memory: never renumber them.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockKind {
    /// The time-stamp counter.
    Tsc = 1,
    /// The HPET's main counter.
    Hpet = 2,
    /// `CLOCK_MONOTONIC` in nanoseconds.
    Monotonic = 3,
}

impl ClockKind {
    /// The kind stored as `v`, if it is one.
    ///
    /// ```
    /// use tsc_hpet::ClockKind;
    /// assert_eq!(ClockKind::from_u32(ClockKind::Hpet as u32), Some(ClockKind::Hpet));
    /// assert_eq!(ClockKind::from_u32(0), None);
    /// ```
    pub fn from_u32(v: u32) -> Option<ClockKind> {
        match v {
            1 => Some(ClockKind::Tsc),
            2 => Some(ClockKind::Hpet),
            3 => Some(ClockKind::Monotonic),
            _ => None,
        }
    }

    /// A short lower-case name: `tsc`, `hpet`, `monotonic`.
    pub fn name(self) -> &'static str {
        match self {
            ClockKind::Tsc => "tsc",
            ClockKind::Hpet => "hpet",
            ClockKind::Monotonic => "monotonic",
        }
    }
}

impl std::fmt::Display for ClockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ClockKind {
    type Err = ClockError;

    /// Parse `tsc`, `hpet` or `monotonic` (for a `--clock` option).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tsc" => Ok(ClockKind::Tsc),
            "hpet" => Ok(ClockKind::Hpet),
            "monotonic" => Ok(ClockKind::Monotonic),
            _ => Err(ClockError::UnknownKind { name: s.to_owned() }),
        }
    }
}

/// Where a clock's frequency came from. The numbers are stored in shared memory.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrequencySource {
    /// CPUID leaf 0x15 (crystal × numerator / denominator): exact.
    Cpuid15 = 1,
    /// CPUID leaf 0x16 (base frequency, 1 MHz granularity).
    Cpuid16 = 2,
    /// The hypervisor leaf 0x40000010 (1 kHz granularity).
    Hypervisor = 3,
    /// Calibrated against `CLOCK_MONOTONIC_RAW` (see [`tsc::Calibration`] for the spread).
    Calibrated = 4,
    /// The HPET's capabilities register.
    Hpet = 5,
    /// Fixed by definition (`CLOCK_MONOTONIC`: 1 GHz).
    Fixed = 6,
}

impl FrequencySource {
    /// The source stored as `v`, if it is one.
    pub fn from_u32(v: u32) -> Option<FrequencySource> {
        Some(match v {
            1 => FrequencySource::Cpuid15,
            2 => FrequencySource::Cpuid16,
            3 => FrequencySource::Hypervisor,
            4 => FrequencySource::Calibrated,
            5 => FrequencySource::Hpet,
            6 => FrequencySource::Fixed,
            _ => return None,
        })
    }

    /// A short description: `cpuid-0x15`, `cpuid-0x16`, `hypervisor-0x40000010`, `calibrated`,
    /// `hpet-capabilities`, `fixed`.
    pub fn name(self) -> &'static str {
        match self {
            FrequencySource::Cpuid15 => "cpuid-0x15",
            FrequencySource::Cpuid16 => "cpuid-0x16",
            FrequencySource::Hypervisor => "hypervisor-0x40000010",
            FrequencySource::Calibrated => "calibrated",
            FrequencySource::Hpet => "hpet-capabilities",
            FrequencySource::Fixed => "fixed",
        }
    }
}

impl std::fmt::Display for FrequencySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the primary stores in the shared configuration so that every member uses the same clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockRecord {
    /// The kind of clock.
    pub kind: ClockKind,
    /// Its frequency in Hz (secondaries use this; they never recalibrate).
    pub hz: u64,
    /// Where the frequency came from.
    pub source: FrequencySource,
}

impl ClockRecord {
    /// The record as three integers for a `repr(C)` layout: (kind, hz, source).
    pub fn to_raw(&self) -> (u32, u64, u32) {
        (self.kind as u32, self.hz, self.source as u32)
    }

    /// Read a record from its three integers, checking each.
    ///
    /// ```
    /// use tsc_hpet::{ClockError, ClockRecord};
    /// assert!(ClockRecord::from_raw(1, 2_596_100_000, 4).is_ok());
    /// assert!(matches!(ClockRecord::from_raw(9, 1, 4), Err(ClockError::BadRecord { field: "kind", .. })));
    /// ```
    pub fn from_raw(kind: u32, hz: u64, source: u32) -> Result<ClockRecord, ClockError> {
        let kind = ClockKind::from_u32(kind).ok_or(ClockError::BadRecord {
            field: "kind",
            value: u64::from(kind),
            valid: "1 (tsc), 2 (hpet), 3 (monotonic)",
        })?;
        let source = FrequencySource::from_u32(source).ok_or(ClockError::BadRecord {
            field: "source",
            value: u64::from(source),
            valid: "1..=6",
        })?;
        if hz == 0 {
            return Err(ClockError::BadRecord {
                field: "hz",
                value: 0,
                valid: "a non-zero frequency",
            });
        }
        Ok(ClockRecord { kind, hz, source })
    }
}

impl std::fmt::Display for ClockRecord {
    /// `tsc at 2596100000 Hz (calibrated)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {} Hz ({})", self.kind, self.hz, self.source)
    }
}

/// A chosen clock, its record, and warnings to print.
pub type Chosen = (Box<dyn Clock>, ClockRecord, Vec<String>);

/// The primary's choice: with `force = None`, the TSC if it is invariant and the kernel still
/// trusts it, otherwise `CLOCK_MONOTONIC`; with `Some(kind)`, that kind, or a typed reason why
/// it is unavailable ([`ClockError::HpetUnavailable`], [`ClockError::NoTsc`]). A forced TSC that
/// is not invariant or not trusted is used anyway, with warnings.
///
/// The warnings (to print once, loudly) explain a fallback to `CLOCK_MONOTONIC`, a TSC the
/// kernel has dropped, or a calibration with a wide spread.
pub fn choose(force: Option<ClockKind>) -> Result<Chosen, ClockError> {
    let mut warnings = Vec::new();
    let clock: Box<dyn Clock> = match force {
        Some(ClockKind::Monotonic) => Box::new(Monotonic),
        Some(ClockKind::Hpet) => Box::new(Hpet::open()?),
        Some(ClockKind::Tsc) => {
            let tsc = Tsc::new()?;
            if let Some(why) = tsc_doubts(&mut warnings) {
                warnings.push(format!("the TSC was forced although {why}"));
            }
            note_calibration(&mut warnings);
            Box::new(tsc)
        }
        None => {
            if !Tsc::present() {
                warnings.push(
                    "no TSC on this CPU/architecture: the group uses CLOCK_MONOTONIC".to_owned(),
                );
                Box::new(Monotonic)
            } else if let Some(why) = tsc_doubts(&mut warnings) {
                warnings.push(format!(
                    "the group uses CLOCK_MONOTONIC instead of the TSC because {why}"
                ));
                Box::new(Monotonic)
            } else {
                match Tsc::new() {
                    Ok(tsc) => {
                        note_calibration(&mut warnings);
                        Box::new(tsc)
                    }
                    Err(e) => {
                        warnings.push(format!(
                            "the group uses CLOCK_MONOTONIC because the TSC frequency is unknown: {e}"
                        ));
                        Box::new(Monotonic)
                    }
                }
            }
        }
    };
    let record = clock.record();
    Ok((clock, record, warnings))
}

/// Why the TSC should not be the group's clock, if it should not; minor remarks go to `notes`.
fn tsc_doubts(notes: &mut Vec<String>) -> Option<String> {
    if !Tsc::invariant() {
        return Some(
            "the TSC is not invariant (CPUID 0x80000007 EDX bit 8 is clear): its rate may change \
             with power states, or a VM hides the flag (QEMU: start the guest with \
             `-cpu host,+invtsc`)"
                .to_owned(),
        );
    }
    match tsc::ClocksourceInfo::read() {
        Ok(cs) => match cs.tsc_trust() {
            tsc::TscTrust::InUse => None,
            tsc::TscTrust::Listed { current } => {
                notes.push(format!(
                    "the kernel's clocksource is {current}, not tsc; the TSC is still listed as \
                     usable, so the group uses it"
                ));
                None
            }
            tsc::TscTrust::Dropped { current } => Some(format!(
                "the kernel no longer trusts the TSC (it is missing from {}/available_clocksource; \
                 current clocksource: {current}): it probably saw the TSC warp or stop (check \
                 `dmesg | grep -i tsc`)",
                tsc::CLOCKSOURCE_DIR
            )),
        },
        Err(e) => {
            notes.push(format!(
                "cannot tell whether the kernel trusts the TSC ({e}); using it because CPUID says \
                 it is invariant"
            ));
            None
        }
    }
}

/// Above this calibration spread, the primary warns.
const CALIBRATION_WARN_PPM: f64 = 500.0;

fn note_calibration(warnings: &mut Vec<String>) {
    if let Ok(TscFrequency {
        calibration: Some(c),
        ..
    }) = Tsc::frequency()
    {
        if c.spread_ppm > CALIBRATION_WARN_PPM {
            warnings.push(format!(
                "TSC frequency calibrated to {} Hz, but its {} windows spread over {:.0} ppm \
                 ({}..={} Hz): the machine was busy; timings may be off by that much",
                c.hz,
                c.windows_hz.len(),
                c.spread_ppm,
                c.min_hz,
                c.max_hz
            ));
        }
    }
}

/// A secondary's clock from the group's record: the recorded kind at the **recorded**
/// frequency, never recalibrated. When the recorded source cannot be used here, the documented
/// fallback (see the crate docs: `Monotonic`) is returned with a notice to print.
pub fn from_record(rec: &ClockRecord) -> (Box<dyn Clock>, Option<String>) {
    match rec.kind {
        ClockKind::Monotonic => {
            let notice = (rec.hz != Monotonic::HZ).then(|| {
                format!(
                    "the group's clock record says monotonic at {} Hz; CLOCK_MONOTONIC counts \
                     nanoseconds, so this member uses 1000000000 Hz",
                    rec.hz
                )
            });
            (Box::new(Monotonic), notice)
        }
        ClockKind::Tsc => match Tsc::with_hz(rec.hz, rec.source) {
            Ok(tsc) => {
                let mut ignored = Vec::new();
                let notice = tsc_doubts(&mut ignored).map(|why| {
                    format!(
                        "the group's clock is the TSC ({rec}), and this member keeps it so that \
                         timestamps stay comparable, although here {why}"
                    )
                });
                (Box::new(tsc), notice)
            }
            Err(e) => (
                Box::new(Monotonic),
                Some(format!(
                    "the group's clock is {rec}, which this member cannot use ({e}); it falls \
                     back to CLOCK_MONOTONIC (1 GHz): its durations agree with the group's, its \
                     raw cycle counts do not"
                )),
            ),
        },
        ClockKind::Hpet => match Hpet::open() {
            Ok(hpet) => {
                let notice = (hpet.hz() != rec.hz).then(|| {
                    format!(
                        "the group's clock record says hpet at {} Hz but this HPET's period gives \
                         {} Hz; using the hardware's value",
                        rec.hz,
                        hpet.hz()
                    )
                });
                (Box::new(hpet), notice)
            }
            Err(why) => (
                Box::new(Monotonic),
                Some(format!(
                    "the group's clock is {rec}, but this member cannot use the HPET: {why}. It \
                     falls back to CLOCK_MONOTONIC (1 GHz): its durations agree with the group's, \
                     its raw cycle counts are nanoseconds, not HPET ticks"
                )),
            ),
        },
    }
}
