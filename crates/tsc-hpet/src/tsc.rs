//! The time-stamp counter: reading it, its frequency (CPUID leaves 0x15, 0x16, the hypervisor
//! leaf 0x40000010, or calibration against `CLOCK_MONOTONIC_RAW`), whether it is invariant, and
//! whether the kernel still trusts it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::ClockError;
use crate::raw;
use crate::{Clock, ClockKind, FrequencySource};

/// The sysfs directory of the kernel's clocksource.
pub const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// Frequencies outside 1 MHz..=100 GHz from CPUID are treated as garbage and ignored.
const PLAUSIBLE_HZ: std::ops::RangeInclusive<u64> = 1_000_000..=100_000_000_000;

/// The TSC frequency from CPUID leaf 0x15 (EAX = denominator, EBX = numerator, ECX = crystal
/// Hz): `crystal * numerator / denominator`, computed in u128 with the division **last** and
/// rounded to the nearest Hz. `None` when a value is zero (not enumerated) or the result is not
/// a plausible TSC frequency.
///
/// DPDK computes `crystal * (numerator / denominator)`; with a VM's 1 GHz crystal and a ratio of
/// 29/10 that gives 2 GHz instead of 2.9 GHz:
/// ```
/// assert_eq!(tsc_hpet::tsc::leaf15_hz(10, 29, 1_000_000_000), Some(2_900_000_000));
/// ```
pub fn leaf15_hz(eax_denominator: u32, ebx_numerator: u32, ecx_crystal_hz: u32) -> Option<u64> {
    if eax_denominator == 0 || ebx_numerator == 0 || ecx_crystal_hz == 0 {
        return None;
    }
    let num = u128::from(ecx_crystal_hz) * u128::from(ebx_numerator);
    let den = u128::from(eax_denominator);
    let hz = u64::try_from((num + den / 2) / den).ok()?;
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// The TSC frequency from CPUID leaf 0x16 (EAX bits 15:0 = processor base frequency in MHz,
/// which is the TSC rate on the CPUs that report it). Granularity 1 MHz.
///
/// ```
/// assert_eq!(tsc_hpet::tsc::leaf16_hz(2900), Some(2_900_000_000));
/// assert_eq!(tsc_hpet::tsc::leaf16_hz(0), None);
/// ```
pub fn leaf16_hz(eax: u32) -> Option<u64> {
    let hz = u64::from(eax & 0xffff) * 1_000_000;
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// The TSC frequency from the hypervisor timing leaf 0x40000010 (EAX = TSC kHz, as VMware,
/// ACRN, Cloud Hypervisor and KVM with `-cpu ...,+vmware-cpuid-freq` report it). Granularity
/// 1 kHz.
///
/// ```
/// assert_eq!(tsc_hpet::tsc::hypervisor_leaf_hz(2_596_100), Some(2_596_100_000));
/// ```
pub fn hypervisor_leaf_hz(eax_khz: u32) -> Option<u64> {
    let hz = u64::from(eax_khz) * 1000;
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// What CPUID says about the TSC frequency, leaf by leaf (for diagnostics and `proc_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidFrequencies {
    /// From leaf 0x15, if the leaf exists and enumerates the crystal.
    pub leaf15: Option<u64>,
    /// From leaf 0x16, if the leaf exists and is non-zero.
    pub leaf16: Option<u64>,
    /// From leaf 0x40000010, if a hypervisor is present and offers the leaf.
    pub hypervisor: Option<u64>,
}

impl CpuidFrequencies {
    /// Query this CPU.
    pub fn query() -> CpuidFrequencies {
        let Some([max_basic, ..]) = raw::cpuid(0, 0) else {
            return CpuidFrequencies::default();
        };
        let leaf15 = (max_basic >= 0x15)
            .then(|| raw::cpuid(0x15, 0))
            .flatten()
            .and_then(|[a, b, c, _]| leaf15_hz(a, b, c));
        let leaf16 = (max_basic >= 0x16)
            .then(|| raw::cpuid(0x16, 0))
            .flatten()
            .and_then(|[a, ..]| leaf16_hz(a));
        let hypervisor_present =
            raw::cpuid(1, 0).is_some_and(|[_, _, ecx, _]| ecx & (1 << 31) != 0);
        let hypervisor = if hypervisor_present {
            raw::cpuid(0x4000_0000, 0)
                .filter(|&[max, ..]| max >= 0x4000_0010)
                .and_then(|_| raw::cpuid(0x4000_0010, 0))
                .and_then(|[a, ..]| hypervisor_leaf_hz(a))
        } else {
            None
        };
        CpuidFrequencies {
            leaf15,
            leaf16,
            hypervisor,
        }
    }

    /// The first valid value, in the order 0x15, 0x16, hypervisor leaf.
    pub fn best(&self) -> Option<(u64, FrequencySource)> {
        self.leaf15
            .map(|hz| (hz, FrequencySource::Cpuid15))
            .or(self.leaf16.map(|hz| (hz, FrequencySource::Cpuid16)))
            .or(self.hypervisor.map(|hz| (hz, FrequencySource::Hypervisor)))
    }
}

/// How the TSC frequency was calibrated against `CLOCK_MONOTONIC_RAW`, window by window.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The rate measured in each window, Hz (in the order measured).
    pub windows_hz: Vec<u64>,
    /// The median of `windows_hz`: the frequency used.
    pub hz: u64,
    /// The smallest window rate.
    pub min_hz: u64,
    /// The largest window rate.
    pub max_hz: u64,
    /// `(max - min) / median`, in parts per million.
    pub spread_ppm: f64,
    /// The largest uncertainty of one clock pairing (the `rdtsc` bracket around
    /// `clock_gettime`), in TSC cycles.
    pub worst_bracket_cycles: u64,
    /// How long the calibration took.
    pub elapsed: Duration,
}

/// Calibration settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationPlan {
    /// How many windows to measure (at least 1).
    pub windows: usize,
    /// How long each window sleeps between its two clock pairings.
    pub window: Duration,
    /// A bound on the whole calibration: no new window starts after it (at least one runs).
    pub budget: Duration,
}

impl Default for CalibrationPlan {
    /// 5 windows of 15 ms, within 500 ms.
    fn default() -> Self {
        CalibrationPlan {
            windows: 5,
            window: Duration::from_millis(15),
            budget: Duration::from_millis(500),
        }
    }
}

/// `CLOCK_MONOTONIC_RAW` in nanoseconds.
fn monotonic_raw_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicRaw);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// One pairing of the TSC with `CLOCK_MONOTONIC_RAW`: the best of a few tries of
/// `rdtsc; clock_gettime; rdtsc`, keeping the narrowest bracket. Returns (ns, tsc at the middle
/// of the bracket, bracket width in cycles).
fn pair() -> (u64, u64, u64) {
    let mut best = (0, 0, u64::MAX);
    for _ in 0..8 {
        let a = raw::rdtsc_fenced();
        let ns = monotonic_raw_ns();
        let b = raw::rdtsc_fenced();
        let width = b.wrapping_sub(a);
        if width < best.2 {
            best = (ns, a + width / 2, width);
        }
    }
    best
}

/// Calibrate the TSC against `CLOCK_MONOTONIC_RAW` over `plan.windows` windows (no rounding
/// of the result).
pub fn calibrate(plan: CalibrationPlan) -> Result<Calibration, ClockError> {
    if raw::cpuid(0, 0).is_none() {
        return Err(ClockError::NoTsc {
            reason: "not an x86_64 build",
        });
    }
    let started = Instant::now();
    let mut windows_hz = Vec::with_capacity(plan.windows.max(1));
    let mut worst_bracket = 0;
    while windows_hz.len() < plan.windows.max(1) {
        if !windows_hz.is_empty() && started.elapsed() >= plan.budget {
            break;
        }
        let (ns0, tsc0, w0) = pair();
        std::thread::sleep(plan.window);
        let (ns1, tsc1, w1) = pair();
        worst_bracket = worst_bracket.max(w0).max(w1);
        let dns = ns1.saturating_sub(ns0);
        let dtsc = tsc1.wrapping_sub(tsc0);
        if dns == 0 || dtsc == 0 || dtsc > u64::MAX / 2 {
            return Err(ClockError::Calibration {
                reason: format!(
                    "over one {:?} window CLOCK_MONOTONIC_RAW advanced {dns} ns and the TSC {dtsc} \
                     cycles; one of them is not running",
                    plan.window
                ),
            });
        }
        let hz = (u128::from(dtsc) * 1_000_000_000 + u128::from(dns) / 2) / u128::from(dns);
        windows_hz.push(u64::try_from(hz).unwrap_or(u64::MAX));
    }
    let mut sorted = windows_hz.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let hz = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (u128::from(sorted[n / 2 - 1]) + u128::from(sorted[n / 2])).div_ceil(2) as u64
    };
    let (min_hz, max_hz) = (sorted[0], sorted[n - 1]);
    if !PLAUSIBLE_HZ.contains(&hz) {
        return Err(ClockError::Calibration {
            reason: format!("the median rate {hz} Hz is not a plausible TSC frequency"),
        });
    }
    Ok(Calibration {
        spread_ppm: (max_hz - min_hz) as f64 * 1e6 / hz as f64,
        windows_hz,
        hz,
        min_hz,
        max_hz,
        worst_bracket_cycles: worst_bracket,
        elapsed: started.elapsed(),
    })
}

/// The TSC frequency and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TscFrequency {
    /// Cycles per second.
    pub hz: u64,
    /// Where `hz` came from.
    pub source: FrequencySource,
    /// The calibration's windows and spread, when `source` is [`FrequencySource::Calibrated`].
    pub calibration: Option<Calibration>,
}

/// How the kernel sees its clocksources (`current_clocksource`, `available_clocksource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClocksourceInfo {
    /// The clocksource the kernel uses now (`tsc`, `kvm-clock`, `hpet`, `acpi_pm`, ...).
    pub current: String,
    /// The clocksources the kernel offers. An unstable TSC is removed from this list.
    pub available: Vec<String>,
}

/// The kernel's opinion of the TSC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TscTrust {
    /// The kernel's current clocksource is the TSC.
    InUse,
    /// The kernel uses another clocksource (e.g. `kvm-clock`) but still lists the TSC as usable.
    Listed {
        /// The clocksource in use.
        current: String,
    },
    /// The kernel does not list the TSC: it marked it unstable (or never trusted it).
    Dropped {
        /// The clocksource in use.
        current: String,
    },
}

impl ClocksourceInfo {
    /// Parse the contents of `current_clocksource` and `available_clocksource`.
    ///
    /// ```
    /// use tsc_hpet::tsc::{ClocksourceInfo, TscTrust};
    /// let cs = ClocksourceInfo::parse("kvm-clock\n", "kvm-clock hpet acpi_pm \n");
    /// assert_eq!(cs.tsc_trust(), TscTrust::Dropped { current: "kvm-clock".into() });
    /// ```
    pub fn parse(current: &str, available: &str) -> ClocksourceInfo {
        ClocksourceInfo {
            current: current.trim().to_owned(),
            available: available.split_whitespace().map(str::to_owned).collect(),
        }
    }

    /// Read the kernel's files under [`CLOCKSOURCE_DIR`].
    pub fn read() -> Result<ClocksourceInfo, ClockError> {
        ClocksourceInfo::read_from(Path::new(CLOCKSOURCE_DIR))
    }

    /// Read `current_clocksource` and `available_clocksource` in `dir`.
    pub fn read_from(dir: &Path) -> Result<ClocksourceInfo, ClockError> {
        let read = |name: &str| {
            let path: PathBuf = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| ClockError::Clocksource { path, source })
        };
        Ok(ClocksourceInfo::parse(
            &read("current_clocksource")?,
            &read("available_clocksource")?,
        ))
    }

    /// What the kernel thinks of the TSC.
    pub fn tsc_trust(&self) -> TscTrust {
        if self.current == "tsc" {
            TscTrust::InUse
        } else if self.available.iter().any(|s| s == "tsc") {
            TscTrust::Listed {
                current: self.current.clone(),
            }
        } else {
            TscTrust::Dropped {
                current: self.current.clone(),
            }
        }
    }
}

/// The time-stamp counter as a [`Clock`]: `cycles()` is a bare `rdtsc`, `hz()` the frequency
/// it was built with (detected by [`Tsc::new`], or the group's recorded one with
/// [`Tsc::with_hz`]).
///
/// ```
/// use tsc_hpet::{Clock, Tsc};
/// let tsc = Tsc::new().unwrap(); // CPUID, else a ~75 ms calibration (cached)
/// let t0 = tsc.cycles();
/// tsc.delay_busy(std::time::Duration::from_micros(50));
/// assert!(tsc.cycles_to_ns(tsc.cycles() - t0) >= 50_000);
/// ```
#[derive(Debug, Clone)]
pub struct Tsc {
    hz: u64,
    source: FrequencySource,
    rdtscp: bool,
}

static FREQUENCY: OnceLock<TscFrequency> = OnceLock::new();

impl Tsc {
    /// A TSC clock at the detected frequency ([`Tsc::frequency`]).
    pub fn new() -> Result<Tsc, ClockError> {
        let f = Tsc::frequency()?;
        Tsc::with_hz(f.hz, f.source)
    }

    /// A TSC clock at a known frequency (a secondary uses the group's recorded one; it never
    /// recalibrates). Fails only where there is no TSC or `hz` is zero.
    pub fn with_hz(hz: u64, source: FrequencySource) -> Result<Tsc, ClockError> {
        if !Tsc::present() {
            return Err(ClockError::NoTsc {
                reason: "CPUID.1:EDX bit 4 (TSC) is clear, or this is not an x86_64 build",
            });
        }
        if hz == 0 {
            return Err(ClockError::BadRecord {
                field: "hz",
                value: 0,
                valid: "a non-zero frequency",
            });
        }
        let rdtscp = raw::cpuid(0x8000_0000, 0).is_some_and(|[max, ..]| max >= 0x8000_0001)
            && raw::cpuid(0x8000_0001, 0).is_some_and(|[_, _, _, edx]| edx & (1 << 27) != 0);
        Ok(Tsc { hz, source, rdtscp })
    }

    /// Whether this CPU has a TSC (CPUID.1:EDX bit 4).
    pub fn present() -> bool {
        raw::cpuid(1, 0).is_some_and(|[_, _, _, edx]| edx & (1 << 4) != 0)
    }

    /// Whether the TSC is invariant: it runs at a constant rate in every P-, C- and T-state
    /// (CPUID 0x80000007 EDX bit 8). VMs show it only when asked (QEMU: `-cpu host,+invtsc`).
    pub fn invariant() -> bool {
        raw::cpuid(0x8000_0000, 0).is_some_and(|[max, ..]| max >= 0x8000_0007)
            && raw::cpuid(0x8000_0007, 0).is_some_and(|[_, _, _, edx]| edx & (1 << 8) != 0)
    }

    /// Whether the kernel still trusts the TSC: it is the current clocksource, or still listed
    /// as available (the kernel removes a TSC it marked unstable). See [`Tsc::kernel_view`].
    pub fn kernel_trusts() -> Result<bool, ClockError> {
        Ok(!matches!(
            ClocksourceInfo::read()?.tsc_trust(),
            TscTrust::Dropped { .. }
        ))
    }

    /// The kernel's clocksources.
    pub fn kernel_view() -> Result<ClocksourceInfo, ClockError> {
        ClocksourceInfo::read()
    }

    /// The TSC frequency: CPUID leaf 0x15, else 0x16, else the hypervisor leaf 0x40000010,
    /// else calibration against `CLOCK_MONOTONIC_RAW` ([`CalibrationPlan::default`]: 5 windows
    /// of 15 ms, bounded by 500 ms). Computed once per process and cached.
    pub fn frequency() -> Result<TscFrequency, ClockError> {
        if let Some(f) = FREQUENCY.get() {
            return Ok(f.clone());
        }
        let f = Tsc::detect_frequency()?;
        Ok(FREQUENCY.get_or_init(|| f).clone())
    }

    /// [`Tsc::frequency`] without the cache (calibrates again when CPUID has nothing).
    pub fn detect_frequency() -> Result<TscFrequency, ClockError> {
        if !Tsc::present() {
            return Err(ClockError::NoTsc {
                reason: "CPUID.1:EDX bit 4 (TSC) is clear, or this is not an x86_64 build",
            });
        }
        if let Some((hz, source)) = CpuidFrequencies::query().best() {
            return Ok(TscFrequency {
                hz,
                source,
                calibration: None,
            });
        }
        let calibration = calibrate(CalibrationPlan::default())?;
        Ok(TscFrequency {
            hz: calibration.hz,
            source: FrequencySource::Calibrated,
            calibration: Some(calibration),
        })
    }

    /// `rdtscp`: the counter after all earlier instructions executed, and the `TSC_AUX` value
    /// (Linux: CPU number in bits 11:0, NUMA node above).
    #[inline]
    pub fn read_with_cpu(&self) -> (u64, u32) {
        if self.rdtscp {
            raw::rdtscp()
        } else {
            (raw::rdtsc_fenced(), u32::MAX)
        }
    }
}

impl Clock for Tsc {
    #[inline(always)]
    fn cycles(&self) -> u64 {
        raw::rdtsc()
    }

    #[inline]
    fn cycles_ordered(&self) -> u64 {
        self.read_with_cpu().0
    }

    #[inline]
    fn hz(&self) -> u64 {
        self.hz
    }

    fn kind(&self) -> ClockKind {
        ClockKind::Tsc
    }

    fn source(&self) -> FrequencySource {
        self.source
    }
}
