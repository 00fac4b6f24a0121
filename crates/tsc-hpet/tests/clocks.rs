//! The TSC and Monotonic on this machine: frequency, calibration, the kernel's view,
//! monotonicity, delays, and the group agreement (choose / record / from_record).
#![cfg(not(loom))] // these use std atomics; `tests/loom_wrap.rs` is the loom model

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tsc_hpet::tsc::{calibrate, CalibrationPlan, ClocksourceInfo, CpuidFrequencies, TscTrust};
use tsc_hpet::{
    choose, compare, from_record, Clock, ClockError, ClockKind, ClockRecord, FrequencySource,
    Monotonic, Tsc,
};

#[test]
fn clocksource_parsing() {
    let cs = ClocksourceInfo::parse("tsc\n", "tsc kvm-clock \n");
    assert_eq!(cs.current, "tsc");
    assert_eq!(cs.available, ["tsc", "kvm-clock"]);
    assert_eq!(cs.tsc_trust(), TscTrust::InUse);
    let cs = ClocksourceInfo::parse("kvm-clock\n", "kvm-clock tsc acpi_pm \n");
    assert_eq!(
        cs.tsc_trust(),
        TscTrust::Listed {
            current: "kvm-clock".into()
        }
    );
    // The kernel marked the TSC unstable: it is gone from the available list.
    let cs = ClocksourceInfo::parse("hpet\n", "hpet acpi_pm \n");
    assert_eq!(
        cs.tsc_trust(),
        TscTrust::Dropped {
            current: "hpet".into()
        }
    );
    // "tsc-early" is not the TSC clocksource the kernel settled on.
    let cs = ClocksourceInfo::parse("jiffies", "tsc-early jiffies");
    assert!(matches!(cs.tsc_trust(), TscTrust::Dropped { .. }));
    assert_eq!(ClocksourceInfo::parse("", "").available.len(), 0);
}

#[test]
fn clocksource_files_are_read_and_missing_ones_named() {
    let dir = std::env::temp_dir().join(format!("tsc-hpet-cs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("current_clocksource"), "kvm-clock\n").unwrap();
    std::fs::write(dir.join("available_clocksource"), "kvm-clock acpi_pm \n").unwrap();
    let cs = ClocksourceInfo::read_from(&dir).unwrap();
    assert!(matches!(cs.tsc_trust(), TscTrust::Dropped { current } if current == "kvm-clock"));
    std::fs::remove_file(dir.join("available_clocksource")).unwrap();
    let err = ClocksourceInfo::read_from(&dir).unwrap_err();
    assert!(
        matches!(&err, ClockError::Clocksource { path, .. } if path.ends_with("available_clocksource")),
        "{err:?}"
    );
    assert!(err.to_string().contains("available_clocksource"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn this_machines_kernel_view_matches_sysfs() {
    let dir = Path::new(tsc_hpet::tsc::CLOCKSOURCE_DIR);
    if !dir.exists() {
        eprintln!("SKIPPED this_machines_kernel_view_matches_sysfs: {dir:?} does not exist here");
        return;
    }
    let cs = Tsc::kernel_view().unwrap();
    let current = std::fs::read_to_string(dir.join("current_clocksource")).unwrap();
    assert_eq!(cs.current, current.trim());
    assert_eq!(
        Tsc::kernel_trusts().unwrap(),
        !matches!(cs.tsc_trust(), TscTrust::Dropped { .. })
    );
}

fn tsc_or_skip(test: &str) -> Option<Tsc> {
    if !Tsc::present() {
        eprintln!("SKIPPED {test}: no TSC on this machine/architecture");
        return None;
    }
    Some(Tsc::new().expect("TSC frequency"))
}

#[test]
fn calibration_reports_windows_and_spread_and_is_bounded() {
    if !Tsc::present() {
        eprintln!("SKIPPED calibration test: no TSC");
        return;
    }
    let plan = CalibrationPlan {
        windows: 5,
        window: Duration::from_millis(10),
        budget: Duration::from_millis(500),
    };
    let c = calibrate(plan).unwrap();
    assert_eq!(c.windows_hz.len(), 5);
    assert!(c.min_hz <= c.hz && c.hz <= c.max_hz);
    assert!(c.spread_ppm >= 0.0);
    // Not rounded to 10 MHz (DPDK's habit): with 5 windows, a value on a 10 MHz boundary would
    // be a one-in-ten-thousand coincidence, and all five on it impossible.
    assert!(
        c.windows_hz.iter().any(|hz| hz % 10_000_000 != 0),
        "{:?}",
        c.windows_hz
    );
    // It agrees with the frequency the crate uses (CPUID or the cached calibration) within
    // 0.1 % (a busy machine still calibrates within a few ppm when the pairing is bracketed).
    let f = Tsc::frequency().unwrap();
    let ppm = (c.hz as f64 - f.hz as f64).abs() * 1e6 / f.hz as f64;
    assert!(
        ppm < 1000.0,
        "calibrated {} vs {} ({:?}): {ppm} ppm",
        c.hz,
        f.hz,
        f.source
    );

    // The budget bounds the whole calibration: 100 windows of 10 ms within 40 ms run ~4.
    let started = Instant::now();
    let c = calibrate(CalibrationPlan {
        windows: 100,
        window: Duration::from_millis(10),
        budget: Duration::from_millis(40),
    })
    .unwrap();
    assert!(c.windows_hz.len() < 100, "{} windows", c.windows_hz.len());
    assert!(!c.windows_hz.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn frequency_source_follows_cpuid() {
    let Some(tsc) = tsc_or_skip("frequency_source_follows_cpuid") else {
        return;
    };
    let cpuid = CpuidFrequencies::query();
    let f = Tsc::frequency().unwrap();
    match cpuid.best() {
        Some((hz, source)) => {
            assert_eq!((f.hz, f.source), (hz, source));
            assert!(f.calibration.is_none());
        }
        None => {
            eprintln!("note: CPUID gives no TSC frequency here ({cpuid:?}): calibrated");
            assert_eq!(f.source, FrequencySource::Calibrated);
            let c = f.calibration.as_ref().expect("calibration details");
            assert_eq!(c.hz, f.hz);
        }
    }
    assert_eq!(tsc.hz(), f.hz);
    assert_eq!(tsc.source(), f.source);
}

/// Each available clock never goes backwards, in one thread and handed between threads (which
/// the scheduler may put on different CPUs).
#[test]
fn clocks_are_monotonic() {
    let mut clocks: Vec<Box<dyn Clock>> = vec![Box::new(Monotonic)];
    if let Some(tsc) = tsc_or_skip("clocks_are_monotonic (TSC part)") {
        clocks.push(Box::new(tsc));
    }
    match tsc_hpet::Hpet::open() {
        Ok(h) => clocks.push(Box::new(h)),
        Err(why) => eprintln!("SKIPPED the real-HPET part of clocks_are_monotonic: {why}"),
    }
    for clock in clocks {
        let clock: std::sync::Arc<dyn Clock> = clock.into();
        let mut last = clock.cycles();
        for i in 0..200_000 {
            let now = if i % 2 == 0 {
                clock.cycles()
            } else {
                clock.cycles_ordered()
            };
            assert!(now >= last, "{:?}: {now} after {last}", clock.kind());
            last = now;
        }
        // Ping-pong between two threads: each reading is taken after the other's.
        let (to_b, from_a) = mpsc::channel::<u64>();
        let (to_a, from_b) = mpsc::channel::<u64>();
        let c2 = clock.clone();
        let b = std::thread::spawn(move || {
            for t in from_a {
                let now = c2.cycles_ordered();
                assert!(
                    now >= t,
                    "{:?}: thread B read {now} after A's {t}",
                    c2.kind()
                );
                if to_a.send(now).is_err() {
                    break;
                }
            }
        });
        let mut t = clock.cycles_ordered();
        for _ in 0..2_000 {
            to_b.send(t).unwrap();
            let theirs = from_b.recv().unwrap();
            t = clock.cycles_ordered();
            assert!(
                t >= theirs,
                "{:?}: thread A read {t} after B's {theirs}",
                clock.kind()
            );
        }
        drop(to_b);
        b.join().unwrap();
    }
}

#[test]
fn delays_wait_at_least_what_was_asked() {
    let mut clocks: Vec<Box<dyn Clock>> = vec![Box::new(Monotonic)];
    if let Some(tsc) = tsc_or_skip("delays (TSC part)") {
        clocks.push(Box::new(tsc));
    }
    for clock in clocks {
        for d in [Duration::from_micros(1), Duration::from_micros(300)] {
            let t0 = Instant::now();
            let c0 = clock.cycles();
            clock.delay_busy(d);
            let by_clock = clock.cycles_to_ns(clock.cycles() - c0);
            assert!(
                by_clock as u128 >= d.as_nanos(),
                "{:?} busy {d:?}: {by_clock} ns",
                clock.kind()
            );
            // Against std's clock, allow the TSC frequency's uncertainty (0.1 %).
            assert!(
                t0.elapsed().as_nanos() * 1001 / 1000 >= d.as_nanos(),
                "{:?}",
                clock.kind()
            );
            let t0 = Instant::now();
            clock.delay_sleep(d);
            assert!(t0.elapsed() >= d);
        }
    }
}

#[test]
fn tsc_agrees_with_monotonic() {
    let Some(tsc) = tsc_or_skip("tsc_agrees_with_monotonic") else {
        return;
    };
    let cmp = compare(&tsc, &Monotonic, Duration::from_millis(100));
    assert_eq!(cmp.a.kind, ClockKind::Tsc);
    assert_eq!(cmp.b.kind, ClockKind::Monotonic);
    assert!(cmp.b_ns >= 100_000_000);
    // Within 0.1 %: a frequency wrong the way DPDK's VM bug makes it (30 %) or rounded to 10 MHz
    // on a 2596.1 MHz part (0.15 %) would fail.
    assert!(cmp.agrees_within(1000.0), "{cmp:#?}");
    // A TSC clock told a wrong frequency is caught by the same comparison.
    let wrong = Tsc::with_hz(tsc.hz() / 10 * 7, FrequencySource::Cpuid15).unwrap();
    let cmp = compare(&wrong, &Monotonic, Duration::from_millis(30));
    assert!(!cmp.agrees_within(1000.0), "{cmp:#?}");
    assert!(cmp.difference_ppm > 400_000.0, "{cmp:#?}");
}

#[test]
fn choose_picks_the_tsc_when_trusted_else_monotonic() {
    let (clock, record, warnings) = choose(None).unwrap();
    assert_eq!(record, clock.record());
    let trusted = Tsc::present()
        && Tsc::invariant()
        && !matches!(
            ClocksourceInfo::read().map(|c| c.tsc_trust()),
            Ok(TscTrust::Dropped { .. })
        );
    if trusted {
        assert_eq!(record.kind, ClockKind::Tsc, "warnings: {warnings:?}");
        assert_eq!(record.hz, Tsc::frequency().unwrap().hz);
    } else {
        assert_eq!(record.kind, ClockKind::Monotonic);
        assert!(
            warnings.iter().any(|w| w.contains("CLOCK_MONOTONIC")),
            "falling back must be said loudly: {warnings:?}"
        );
    }
    eprintln!("this machine's group clock: {record}; warnings: {warnings:?}");

    let (m, rec, w) = choose(Some(ClockKind::Monotonic)).unwrap();
    assert_eq!(
        (m.kind(), rec.hz, rec.source),
        (ClockKind::Monotonic, 1_000_000_000, FrequencySource::Fixed)
    );
    assert!(w.is_empty());
    if Tsc::present() {
        let (t, rec, _) = choose(Some(ClockKind::Tsc)).unwrap();
        assert_eq!((t.kind(), rec.kind), (ClockKind::Tsc, ClockKind::Tsc));
    }
}

#[test]
fn secondaries_use_the_recorded_frequency_never_recalibrating() {
    if !Tsc::present() {
        eprintln!("SKIPPED secondaries_use_the_recorded_frequency: no TSC");
        return;
    }
    // A record with a frequency no detection would produce: the secondary must use it as is.
    let rec = ClockRecord::from_raw(
        ClockKind::Tsc as u32,
        2_900_000_001,
        FrequencySource::Cpuid15 as u32,
    )
    .unwrap();
    let started = Instant::now();
    let (clock, notice) = from_record(&rec);
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "no calibration: {:?}",
        started.elapsed()
    );
    assert_eq!(clock.record(), rec);
    if let Some(n) = notice {
        eprintln!("notice (kernel here does not trust the TSC): {n}");
    }
    // Round trip of the raw form the primary stores.
    let (k, hz, s) = rec.to_raw();
    assert_eq!((k, hz, s), (1, 2_900_000_001, 1));
    assert_eq!(ClockRecord::from_raw(k, hz, s).unwrap(), rec);
}

#[test]
fn secondary_without_the_recorded_hpet_falls_back_to_monotonic_with_a_notice() {
    if Path::new("/dev/hpet").exists() {
        eprintln!("SKIPPED the HPET fallback test: this machine has /dev/hpet");
        return;
    }
    let rec = ClockRecord {
        kind: ClockKind::Hpet,
        hz: 14_318_180,
        source: FrequencySource::Hpet,
    };
    let (clock, notice) = from_record(&rec);
    assert_eq!(
        clock.kind(),
        ClockKind::Monotonic,
        "kind() must tell what this member uses"
    );
    assert_eq!(clock.hz(), 1_000_000_000);
    let notice = notice.expect("a fallback must come with a notice");
    assert!(notice.contains("/dev/hpet"), "{notice}");
    assert!(notice.contains("CLOCK_MONOTONIC"), "{notice}");
    assert!(
        notice.contains("14318180"),
        "the notice names the group's clock: {notice}"
    );
}

#[test]
fn monotonic_record_with_a_wrong_frequency_is_noticed() {
    let rec = ClockRecord {
        kind: ClockKind::Monotonic,
        hz: 1_000_000,
        source: FrequencySource::Fixed,
    };
    let (clock, notice) = from_record(&rec);
    assert_eq!(
        (clock.kind(), clock.hz()),
        (ClockKind::Monotonic, 1_000_000_000)
    );
    assert!(notice.is_some());
    let (_, notice) = from_record(&ClockRecord {
        hz: 1_000_000_000,
        ..rec
    });
    assert!(notice.is_none());
}

#[test]
fn records_and_kinds_decode_strictly() {
    for k in [ClockKind::Tsc, ClockKind::Hpet, ClockKind::Monotonic] {
        assert_eq!(ClockKind::from_u32(k as u32), Some(k));
        assert_eq!(k.name().parse::<ClockKind>().unwrap(), k);
    }
    assert_eq!(
        (
            ClockKind::Tsc as u32,
            ClockKind::Hpet as u32,
            ClockKind::Monotonic as u32
        ),
        (1, 2, 3)
    );
    assert_eq!(ClockKind::from_u32(0), None);
    assert_eq!(ClockKind::from_u32(4), None);
    let err = "rdtsc".parse::<ClockKind>().unwrap_err();
    assert!(matches!(&err, ClockError::UnknownKind { name } if name == "rdtsc"));
    assert!(err.to_string().contains("tsc, hpet or monotonic"));
    assert_eq!("TSC".parse::<ClockKind>().unwrap(), ClockKind::Tsc);
    for v in 1..=6 {
        assert_eq!(FrequencySource::from_u32(v).unwrap() as u32, v);
    }
    assert_eq!(FrequencySource::from_u32(7), None);
    let err = ClockRecord::from_raw(1, 0, 1).unwrap_err();
    assert!(matches!(err, ClockError::BadRecord { field: "hz", .. }));
    let err = ClockRecord::from_raw(1, 5, 0).unwrap_err();
    assert!(matches!(
        err,
        ClockError::BadRecord {
            field: "source",
            value: 0,
            ..
        }
    ));
    assert!(err.to_string().contains("source"));
}

/// The IVSHMEM issue's VM check: a real HPET (QEMU's runs at 100 MHz) read against the TSC over
/// a known delay. This machine has no HPET, so it is ignored here and run in the guest.
#[test]
#[ignore = "needs a real, mappable /dev/hpet (none on this machine); the IVSHMEM VM test runs it with `-- --ignored`"]
fn real_hpet_agrees_with_the_tsc() {
    let hpet = tsc_hpet::Hpet::open().expect("this test needs a real /dev/hpet");
    let caps = hpet.capabilities();
    eprintln!("HPET: {caps:?}");
    let mut last = hpet.cycles();
    for _ in 0..10_000 {
        let now = hpet.cycles();
        assert!(now >= last);
        last = now;
    }
    let tsc = Tsc::new().unwrap();
    let cmp = compare(&hpet, &tsc, Duration::from_secs(1));
    eprintln!("{cmp:#?}");
    assert!(cmp.agrees_within(500.0), "HPET and TSC disagree: {cmp:#?}");
    let cmp = compare(&hpet, &Monotonic, Duration::from_millis(200));
    assert!(
        cmp.agrees_within(500.0),
        "HPET and CLOCK_MONOTONIC disagree: {cmp:#?}"
    );
}
