//! `cargo xtask bench clock`: nanoseconds per read of each clock source beside a bare `rdtsc`
//! and DPDK's `rte_rdtsc`/`rte_rdtsc_precise`/`rte_get_timer_cycles` (same run, alternating
//! rounds, medians), then the spread of our TSC calibration beside DPDK's estimate
//! (`rte_eal_init` + `rte_get_tsc_hz`) and the kernel's.
//!
//! Options: `--rounds N` (default 21), `--reads N` per round and source (default 200000),
//! `--calibrations N` (default 7), `--no-eal` (skip DPDK's frequency estimate).
//!
//! Target (issue 7): a TSC read through `tsc_hpet` within 10 % of a bare `rdtsc`.
#![deny(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hugeshare_bench::{median, DPDK_AVAILABLE};
use tsc_hpet::tsc::{calibrate, CalibrationPlan};
use tsc_hpet::{Clock, Hpet, Monotonic, Tsc};

/// The bench's only unsafe code: the bare instruction and DPDK's C side.
#[allow(unsafe_code)]
mod raw {
    /// A bare `rdtsc`, the baseline.
    #[inline(always)]
    pub fn bare_rdtsc() -> u64 {
        // SAFETY: RDTSC exists on every x86_64 CPU and Linux lets user space run it; it only
        // reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    #[cfg(have_dpdk)]
    mod ffi {
        extern "C" {
            pub fn clock_dpdk_rdtsc_loop(n: u64) -> u64;
            pub fn clock_dpdk_rdtsc_precise_loop(n: u64) -> u64;
            pub fn clock_dpdk_timer_cycles_loop(n: u64) -> u64;
            pub fn clock_dpdk_eal_tsc_hz(hz: *mut u64, init_ms: *mut f64) -> i32;
        }
    }

    /// `n` reads of DPDK's `rte_rdtsc()` in a C loop.
    #[cfg(have_dpdk)]
    pub fn dpdk_rdtsc_loop(n: u64) -> u64 {
        // SAFETY: plain C function over integers (bench/csrc/clock.c).
        unsafe { ffi::clock_dpdk_rdtsc_loop(n) }
    }

    /// `n` reads of DPDK's `rte_rdtsc_precise()` in a C loop.
    #[cfg(have_dpdk)]
    pub fn dpdk_rdtsc_precise_loop(n: u64) -> u64 {
        // SAFETY: plain C function over integers (bench/csrc/clock.c).
        unsafe { ffi::clock_dpdk_rdtsc_precise_loop(n) }
    }

    /// `n` reads of DPDK's `rte_get_timer_cycles()` in a C loop.
    #[cfg(have_dpdk)]
    pub fn dpdk_timer_cycles_loop(n: u64) -> u64 {
        // SAFETY: plain C function over integers (bench/csrc/clock.c).
        unsafe { ffi::clock_dpdk_timer_cycles_loop(n) }
    }

    /// DPDK's TSC frequency after `rte_eal_init` (`--no-huge --in-memory --no-pci`), and the
    /// init time in ms. Once per process.
    #[cfg(have_dpdk)]
    pub fn dpdk_eal_tsc_hz() -> Option<(u64, f64)> {
        let (mut hz, mut ms) = (0u64, 0f64);
        // SAFETY: the C function writes the two out-parameters, which point to live locals, and
        // is called once per process (the caller's contract, kept by `main`).
        let rc = unsafe { ffi::clock_dpdk_eal_tsc_hz(&mut hz, &mut ms) };
        (rc == 0).then_some((hz, ms))
    }
}

struct Opts {
    rounds: usize,
    reads: u64,
    calibrations: usize,
    eal: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rounds: 21,
        reads: 200_000,
        calibrations: 7,
        eal: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = num("--rounds")?.max(1) as usize,
            "--reads" => o.reads = num("--reads")?.max(1000),
            "--calibrations" => o.calibrations = num("--calibrations")?.max(1) as usize,
            "--no-eal" => o.eal = false,
            other => bail!(
                "unknown option {other:?}; known: --rounds N --reads N --calibrations N --no-eal"
            ),
        }
    }
    Ok(o)
}

/// ns per call of `f`, over `n` calls, summing the results so none is optimised away.
#[inline(never)]
fn per_read(n: u64, mut f: impl FnMut() -> u64) -> f64 {
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        acc = acc.wrapping_add(f());
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// ns per read of a C loop doing `n` reads itself.
#[allow(dead_code)]
fn per_read_c(n: u64, f: impl Fn(u64) -> u64) -> f64 {
    let t = Instant::now();
    black_box(f(black_box(n)));
    t.elapsed().as_nanos() as f64 / n as f64
}

/// A named source measured each round.
struct Row {
    name: &'static str,
    side: &'static str,
    samples: Vec<f64>,
    run: Box<dyn Fn(u64) -> f64>,
}

/// The kernel's TSC frequency from `dmesg` ("tsc: Detected 2596.130 MHz processor"), if
/// readable: a reference with kHz resolution.
fn kernel_tsc_hz() -> Option<u64> {
    let out = std::process::Command::new("dmesg").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rfind(|l| {
        l.contains("tsc: Refined TSC clocksource calibration") || l.contains("tsc: Detected")
    })?;
    let mhz = line
        .split_whitespace()
        .skip_while(|w| !w.ends_with("calibration:") && *w != "Detected")
        .nth(1)?;
    let (int, frac) = mhz.split_once('.').unwrap_or((mhz, "0"));
    let frac = format!("{frac:0<6}");
    Some(int.parse::<u64>().ok()? * 1_000_000 + frac[..6].parse::<u64>().ok()?)
}

fn ppm(a: u64, reference: u64) -> f64 {
    (a as f64 - reference as f64) * 1e6 / reference as f64
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    let tsc = Tsc::new().context("the TSC")?;
    let freq = Tsc::frequency()?;
    println!(
        "# bench clock: {} rounds x {} reads per source (alternating), medians",
        o.rounds, o.reads
    );
    println!(
        "# TSC: {} Hz from {} ; invariant: {} ; kernel clocksource: {}",
        freq.hz,
        freq.source,
        Tsc::invariant(),
        Tsc::kernel_view()
            .map(|c| c.current)
            .unwrap_or_else(|e| e.to_string())
    );
    if !DPDK_AVAILABLE {
        println!("# {}", hugeshare_bench::no_dpdk_notice());
    }

    let tsc_dyn: std::sync::Arc<dyn Clock> = std::sync::Arc::new(tsc.clone());
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |name, side, run: Box<dyn Fn(u64) -> f64>| {
        rows.push(Row {
            name,
            side,
            samples: Vec::new(),
            run,
        })
    };
    add(
        "bare rdtsc (core::arch _rdtsc)",
        "baseline",
        Box::new(|n| per_read(n, raw::bare_rdtsc)),
    );
    {
        let t = tsc.clone();
        add(
            "Tsc::cycles (rdtsc)",
            "hugeshare",
            Box::new(move |n| per_read(n, || t.cycles())),
        );
    }
    {
        let t = tsc_dyn.clone();
        add(
            "&dyn Clock -> Tsc::cycles",
            "hugeshare",
            Box::new(move |n| per_read(n, || t.cycles())),
        );
    }
    {
        let t = tsc.clone();
        add(
            "Tsc::cycles_ordered (rdtscp)",
            "hugeshare",
            Box::new(move |n| per_read(n, || t.cycles_ordered())),
        );
    }
    add(
        "Monotonic::cycles (vDSO)",
        "hugeshare",
        Box::new(|n| per_read(n, || Monotonic.cycles())),
    );
    add(
        "std Instant::now (reference)",
        "std",
        Box::new(|n| {
            per_read(n, || {
                black_box(Instant::now());
                0
            })
        }),
    );
    match Hpet::open() {
        Ok(h) => {
            let h = std::sync::Arc::new(h);
            add(
                "Hpet::cycles (MMIO)",
                "hugeshare",
                Box::new(move |n| per_read(n / 100, || h.cycles())),
            );
        }
        Err(why) => println!("# HPET row skipped: {why}"),
    }
    #[cfg(have_dpdk)]
    {
        add(
            "rte_rdtsc",
            "DPDK",
            Box::new(|n| per_read_c(n, raw::dpdk_rdtsc_loop)),
        );
        add(
            "rte_rdtsc_precise",
            "DPDK",
            Box::new(|n| per_read_c(n, raw::dpdk_rdtsc_precise_loop)),
        );
        add(
            "rte_get_timer_cycles",
            "DPDK",
            Box::new(|n| per_read_c(n, raw::dpdk_timer_cycles_loop)),
        );
    }

    // Warm up, then alternate: every round measures every source once, in rotating order.
    for r in &rows {
        (r.run)(o.reads / 10);
    }
    for round in 0..o.rounds {
        let k = rows.len();
        for i in 0..k {
            let r = &mut rows[(i + round) % k];
            let v = (r.run)(o.reads);
            r.samples.push(v);
        }
    }

    // Ratios are taken round by round (the sources of one round ran back to back), then the
    // median of those ratios is reported: robust against the machine's noise.
    let base_samples = rows[0].samples.clone();
    let ratio = |r: &Row| {
        let mut v: Vec<f64> = r
            .samples
            .iter()
            .zip(&base_samples)
            .map(|(x, b)| x / b)
            .collect();
        median(&mut v)
    };
    println!();
    println!("| source | side | ns/read median | [min - max] | vs bare rdtsc (median of per-round ratios) |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let m = median(&mut r.samples.clone());
        let (lo, hi) = r
            .samples
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        println!(
            "| {} | {} | {m:.2} | [{lo:.2} - {hi:.2}] | {:+.1} % |",
            r.name,
            r.side,
            (ratio(r) - 1.0) * 100.0
        );
    }
    let ours = ratio(&rows[1]);
    let dynamic = ratio(&rows[2]);
    let verdict = |x: f64| if x <= 1.10 { "MET" } else { "MISSED" };
    println!(
        "\ntarget: a TSC read within 10 % of a bare rdtsc: Tsc::cycles {:+.1} % ({}); through &dyn Clock {:+.1} % ({})",
        (ours - 1.0) * 100.0,
        verdict(ours),
        (dynamic - 1.0) * 100.0,
        verdict(dynamic)
    );

    // Calibration spread.
    println!(
        "\n## TSC calibration against CLOCK_MONOTONIC_RAW (default plan: 5 x 15 ms, budget 500 ms)"
    );
    println!("| run | hz (median of windows) | spread ppm | min..max Hz | elapsed ms |");
    println!("|---|---|---|---|---|");
    let mut hzs = Vec::new();
    let mut spreads = Vec::new();
    for i in 0..o.calibrations {
        let c = calibrate(CalibrationPlan::default())?;
        println!(
            "| {} | {} | {:.1} | {}..{} | {:.1} |",
            i + 1,
            c.hz,
            c.spread_ppm,
            c.min_hz,
            c.max_hz,
            c.elapsed.as_secs_f64() * 1e3
        );
        hzs.push(c.hz as f64);
        spreads.push(c.spread_ppm);
    }
    let med_hz = median(&mut hzs.clone()) as u64;
    let (lo, hi) = hzs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "\nours: median {med_hz} Hz over {} runs; run-to-run range {:.2} ppm; median in-run spread {:.1} ppm",
        hzs.len(),
        (hi - lo) * 1e6 / med_hz as f64,
        median(&mut spreads)
    );
    let kernel = kernel_tsc_hz();
    match kernel {
        Some(k) => println!(
            "kernel (dmesg, kHz resolution): {k} Hz; ours differs by {:+.1} ppm",
            ppm(med_hz, k)
        ),
        None => println!("kernel's TSC frequency: not readable from dmesg"),
    }

    #[cfg(have_dpdk)]
    if o.eal {
        // rte_eal_init once, at the end (it starts threads; our measurements are done).
        std::thread::sleep(Duration::from_millis(1));
        match raw::dpdk_eal_tsc_hz() {
            Some((hz, ms)) => {
                println!(
                    "DPDK rte_get_tsc_hz after rte_eal_init ({ms:.0} ms): {hz} Hz; vs ours {:+.1} ppm{}",
                    ppm(hz, med_hz),
                    kernel
                        .map(|k| format!(", vs kernel {:+.1} ppm", ppm(hz, k)))
                        .unwrap_or_default()
                );
            }
            None => println!("DPDK rte_eal_init failed: no DPDK frequency estimate in this run"),
        }
    }
    #[cfg(not(have_dpdk))]
    let _ = (o.eal, Duration::ZERO);
    Ok(())
}
