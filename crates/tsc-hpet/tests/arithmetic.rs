//! Cycle/time arithmetic with awkward frequencies, and the CPUID frequency formulas as pure
//! functions (the values VMs report).
#![cfg(not(loom))] // these use std atomics; `tests/loom_wrap.rs` is the loom model

use std::time::Duration;

use tsc_hpet::tsc::{hypervisor_leaf_hz, leaf15_hz, leaf16_hz};
use tsc_hpet::{cycles_to_ns, duration_to_cycles_ceil, ns_to_cycles};

/// 2.9 GHz (the VM of the DPDK bug), 1 GHz, 100 MHz (QEMU's HPET), 14.31818 MHz (classic HPET),
/// and this machine's 2596.1 MHz.
const FREQS: [u64; 5] = [
    2_900_000_000,
    1_000_000_000,
    100_000_000,
    14_318_180,
    2_596_100_000,
];

/// An independent exact computation of `round(a * b / c)` by long division in u64 pieces,
/// to check the u128 formula against.
fn round_mul_div(a: u64, b: u64, c: u64) -> u64 {
    // a*b/c = (a/c)*b + (a%c)*b/c, with the second term done in u128 by hand-split.
    let q = a / c;
    let r = a % c;
    let rb = u128::from(r) * u128::from(b);
    let whole = u128::from(q) * u128::from(b) + rb / u128::from(c);
    let rem = rb % u128::from(c);
    let rounded = whole + u128::from(2 * rem >= u128::from(c));
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

#[test]
fn one_second_is_exactly_hz_cycles() {
    for hz in FREQS {
        assert_eq!(cycles_to_ns(hz, hz), 1_000_000_000, "hz={hz}");
        assert_eq!(ns_to_cycles(1_000_000_000, hz), hz, "hz={hz}");
        assert_eq!(
            ns_to_cycles(1_000_000, hz),
            round_mul_div(1_000_000, hz, 1_000_000_000)
        );
    }
}

#[test]
fn conversions_match_an_exact_long_division() {
    let samples = [
        0u64,
        1,
        2,
        3,
        999,
        1_000_000_007,
        1 << 32,
        (1 << 32) + 1,
        u64::from(u32::MAX),
        1 << 40,
        1 << 50,
        1 << 62,
        u64::MAX / 1_000_000_000,
        u64::MAX / 3,
    ];
    for hz in FREQS {
        for &c in &samples {
            assert_eq!(
                cycles_to_ns(c, hz),
                round_mul_div(c, 1_000_000_000, hz),
                "cycles_to_ns({c}, {hz})"
            );
            assert_eq!(
                ns_to_cycles(c, hz),
                round_mul_div(c, hz, 1_000_000_000),
                "ns_to_cycles({c}, {hz})"
            );
        }
    }
}

#[test]
fn no_overflow_and_saturation_at_the_top() {
    // u64::MAX cycles at 2.9 GHz fit in u64 nanoseconds (6.36e18): no overflow in the middle.
    assert_eq!(
        cycles_to_ns(u64::MAX, 2_900_000_000),
        6_360_946_232_313_638_488
    );
    // ... at 14.318 MHz they do not (1.29e21 ns): saturate instead of wrapping.
    assert_eq!(cycles_to_ns(u64::MAX, 14_318_180), u64::MAX);
    assert_eq!(ns_to_cycles(u64::MAX, 2_900_000_000), u64::MAX);
    // The naive u64 `cycles * 1e9 / hz` would overflow after 18.4 s of cycles at 1 GHz:
    let ten_years_at_2_9ghz = 2_900_000_000u64 * 3600 * 24 * 3650;
    assert_eq!(
        cycles_to_ns(ten_years_at_2_9ghz, 2_900_000_000),
        3600 * 24 * 3650 * 1_000_000_000
    );
}

#[test]
fn rounding_has_no_bias() {
    // Truncation would make the mean error about -0.5 ns; rounding to nearest keeps it ~0.
    for hz in [2_900_000_000u64, 14_318_180, 100_000_000] {
        let mut err_sum = 0f64;
        let n = 100_000u64;
        for c in 1..=n {
            let c = c * 7919; // spread the samples
            let exact = c as f64 * 1e9 / hz as f64;
            let got = cycles_to_ns(c, hz) as f64;
            assert!(
                (got - exact).abs() <= 0.5 + 1e-6,
                "c={c} hz={hz} got={got} exact={exact}"
            );
            err_sum += got - exact;
        }
        let mean = err_sum / n as f64;
        assert!(mean.abs() < 0.01, "mean rounding error {mean} at {hz} Hz");
    }
}

#[test]
fn round_trips_stay_within_one_unit() {
    for hz in FREQS {
        for ns in [1u64, 17, 1_000, 123_456_789, 86_400_000_000_000] {
            let back = cycles_to_ns(ns_to_cycles(ns, hz), hz);
            // one cycle is at most 70 ns (14.3 MHz): the round trip is within half a cycle.
            let half_cycle_ns = 1_000_000_000 / hz / 2 + 1;
            assert!(
                back.abs_diff(ns) <= half_cycle_ns,
                "hz={hz} ns={ns} back={back}"
            );
        }
    }
}

#[test]
fn durations_round_up_for_delays() {
    // 1 ns at 14.318 MHz is 0.0143 ticks: a delay must wait at least one tick, not zero.
    assert_eq!(
        duration_to_cycles_ceil(Duration::from_nanos(1), 14_318_180),
        1
    );
    assert_eq!(duration_to_cycles_ceil(Duration::ZERO, 14_318_180), 0);
    assert_eq!(
        duration_to_cycles_ceil(Duration::from_secs(1), 2_900_000_000),
        2_900_000_000
    );
    assert_eq!(
        duration_to_cycles_ceil(Duration::from_nanos(1), 2_900_000_000),
        3
    );
    assert_eq!(
        duration_to_cycles_ceil(Duration::MAX, 2_900_000_000),
        u64::MAX
    );
}

#[test]
fn leaf15_multiplies_before_dividing() {
    // The VM values of pktgen#371 / bugs.dpdk.org 1869: crystal 1 GHz, ratio 29/10.
    let (den, num, crystal) = (10u32, 29u32, 1_000_000_000u32);
    assert_eq!(leaf15_hz(den, num, crystal), Some(2_900_000_000));
    // DPDK's integer division would give 2 GHz: make sure we are not computing that.
    let dpdk = u64::from(crystal) * u64::from(num / den);
    assert_eq!(dpdk, 2_000_000_000);
    assert_ne!(leaf15_hz(den, num, crystal), Some(dpdk));
    // More VM-style and real values.
    assert_eq!(leaf15_hz(2, 5, 1_000_000_000), Some(2_500_000_000));
    assert_eq!(leaf15_hz(1, 3, 1_000_000_000), Some(3_000_000_000));
    assert_eq!(leaf15_hz(2, 242, 24_000_000), Some(2_904_000_000)); // Skylake client
    assert_eq!(leaf15_hz(2, 176, 25_000_000), Some(2_200_000_000)); // Skylake-SP
    assert_eq!(leaf15_hz(3, 7, 1_000_000_000), Some(2_333_333_333)); // rounds, not truncates
    assert_eq!(leaf15_hz(3, 8, 1_000_000_000), Some(2_666_666_667));
}

#[test]
fn leaf15_rejects_missing_and_absurd_values() {
    assert_eq!(leaf15_hz(0, 29, 1_000_000_000), None);
    assert_eq!(leaf15_hz(10, 0, 1_000_000_000), None);
    assert_eq!(leaf15_hz(2, 242, 0), None); // crystal not enumerated
    assert_eq!(leaf15_hz(u32::MAX, 1, 1), None); // ~0 Hz
    assert_eq!(leaf15_hz(1, u32::MAX, u32::MAX), None); // 1.8e19 Hz
}

#[test]
fn leaf16_and_hypervisor_leaf() {
    assert_eq!(leaf16_hz(2900), Some(2_900_000_000));
    assert_eq!(leaf16_hz(0x0001_0b54), Some(2_900_000_000)); // upper bits are not the frequency
    assert_eq!(leaf16_hz(0), None);
    assert_eq!(hypervisor_leaf_hz(2_596_100), Some(2_596_100_000));
    assert_eq!(hypervisor_leaf_hz(0), None);
}
