//! Comparing two clocks over a known delay (the IVSHMEM guest runs its real HPET against the TSC
//! with this).

use std::time::Duration;

use crate::{cycles_to_ns, Clock, ClockRecord};

/// What [`compare`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockComparison {
    /// The first clock's kind, frequency and frequency source.
    pub a: ClockRecord,
    /// The second clock's.
    pub b: ClockRecord,
    /// Ticks of `a` over the interval.
    pub a_ticks: u64,
    /// Ticks of `b` over the same interval.
    pub b_ticks: u64,
    /// The interval in nanoseconds by `a` (its ticks at its own `hz`).
    pub a_ns: u64,
    /// The interval in nanoseconds by `b`.
    pub b_ns: u64,
    /// `a`'s frequency as measured against `b`: `a_ticks * b.hz / b_ticks`.
    pub a_hz_by_b: u64,
    /// `(a_ns - b_ns) / b_ns` in parts per million: how far `a`'s idea of time is from `b`'s.
    pub difference_ppm: f64,
    /// The uncertainty of pairing the clocks, in `b`'s nanoseconds: the widest bracket of
    /// `b` reads around an `a` read, at start or end (the two HPET reads are ~1 µs each).
    pub pairing_ns: u64,
}

impl ClockComparison {
    /// Whether the clocks agree within `ppm` parts per million, once the pairing uncertainty
    /// is allowed for.
    pub fn agrees_within(&self, ppm: f64) -> bool {
        let slack = if self.b_ns == 0 {
            f64::INFINITY
        } else {
            self.pairing_ns as f64 * 1e6 / self.b_ns as f64
        };
        self.difference_ppm.abs() <= ppm + slack
    }
}

/// Read `a` between two reads of `b`, a few times, and keep the narrowest bracket: (a, b at the
/// middle of the bracket, bracket width in b ticks).
fn pair(a: &dyn Clock, b: &dyn Clock) -> (u64, u64, u64) {
    let mut best = (0, 0, u64::MAX);
    for _ in 0..5 {
        let b0 = b.cycles_ordered();
        let at = a.cycles_ordered();
        let b1 = b.cycles_ordered();
        let width = b1.wrapping_sub(b0);
        if width < best.2 {
            best = (at, b0.wrapping_add(width / 2), width);
        }
    }
    best
}

/// Run `a` and `b` side by side for `over` (sleeping) and compare their ideas of the elapsed
/// time.
///
/// ```
/// use std::time::Duration;
/// use tsc_hpet::{compare, Clock, Monotonic, Tsc};
/// let tsc = Tsc::new().unwrap();
/// let cmp = compare(&tsc, &Monotonic, Duration::from_millis(50));
/// assert!(cmp.agrees_within(1000.0), "{cmp:?}"); // within 0.1 %
/// ```
pub fn compare(a: &dyn Clock, b: &dyn Clock, over: Duration) -> ClockComparison {
    let (a0, b0, w0) = pair(a, b);
    std::thread::sleep(over);
    let (a1, b1, w1) = pair(a, b);
    let a_ticks = a1.wrapping_sub(a0);
    let b_ticks = b1.wrapping_sub(b0);
    let a_ns = cycles_to_ns(a_ticks, a.hz());
    let b_ns = cycles_to_ns(b_ticks, b.hz());
    let a_hz_by_b = if b_ticks == 0 {
        0
    } else {
        u64::try_from(
            (u128::from(a_ticks) * u128::from(b.hz()) + u128::from(b_ticks) / 2)
                / u128::from(b_ticks),
        )
        .unwrap_or(u64::MAX)
    };
    let difference_ppm = if b_ns == 0 {
        f64::INFINITY
    } else {
        (a_ns as f64 - b_ns as f64) * 1e6 / b_ns as f64
    };
    ClockComparison {
        a: a.record(),
        b: b.record(),
        a_ticks,
        b_ticks,
        a_ns,
        b_ns,
        a_hz_by_b,
        difference_ppm,
        pairing_ns: cycles_to_ns(w0.max(w1), b.hz()),
    }
}
