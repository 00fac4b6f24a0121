//! `cargo xtask bench mempool`: objects got and put back per second, in the shape of DPDK's
//! `mempool_perf_autotest` (each lcore gets `keep` objects in bulks of `bulk`, then puts them
//! back, in a loop), for a pool of 4,095 objects of 2,048 bytes without cache and with a
//! 512-object per-lcore cache, on one and two cores; bulk 1/4/8/32, keep 32/128.
//!
//! DPDK 22.11's `rte_mempool` (default `ring_mp_mc` ops) runs the same loop in the same process
//! through `bench/csrc/mempool.c` (EAL: `-l 0-1 --no-huge -m 256 --no-pci --no-shconf`; 22.11 refuses `--in-memory` with `--no-huge`). Each
//! round measures every row for both, ours then DPDK's; the table shows medians over
//! `--rounds` (default 5) and the ratio ours / DPDK's. Our threads are pinned to CPUs 0 and 1,
//! as DPDK's lcores are. Our pool lives in `LocalZones` (heap memory): the data structure is the
//! same code that runs over hugepages.
//!
//! Options: `--rounds N` (default 5), `--secs S` per point (default 0.2), `--pool cache|nocache`,
//! `--cores 1|2` and `--bulk 1|4|8|32` (only those rows), `--side ours|dpdk` (one side only,
//! for profiling).
use std::sync::{Arc, Barrier};
use std::time::Instant;

use hugeshare_bench::median;
use rte_mempool::{Mempool, MempoolParams, Obj};
use shmconfig::LocalZones;

#[cfg(have_dpdk)]
extern "C" {
    fn mempool_dpdk_init() -> libc::c_int;
    fn mempool_dpdk_run(
        cache: libc::c_int,
        cores: libc::c_uint,
        bulk: libc::c_uint,
        keep: libc::c_uint,
        secs: f64,
    ) -> f64;
    fn mempool_dpdk_cleanup();
}

#[derive(Clone, Copy, Debug)]
struct Row {
    cache: bool,
    cores: u32,
    bulk: usize,
    keep: usize,
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (0 or 1 here).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        eprintln!(
            "warning: could not pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One lcore's loop: (objects got and put, seconds).
fn worker(
    mp: &Mempool,
    zones: &LocalZones,
    lcore: u32,
    r: Row,
    secs: f64,
    go: &Barrier,
) -> (u64, f64) {
    pin(lcore as usize);
    let z = zones.with_lcore(Some(lcore));
    let mut local = mp.local(&z);
    let mut tab = vec![Obj::empty(); 512];
    go.wait();
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..64 {
            // As DPDK's loop: `keep` objects got in bulks of `bulk` into a table, then put back
            // (chunks of the table, so no index is checked per call, as in C).
            for chunk in tab[..r.keep].chunks_exact_mut(r.bulk) {
                if local.get_bulk(chunk) != r.bulk {
                    panic!("get of {} failed (row {r:?})", r.bulk);
                }
            }
            for chunk in tab[..r.keep].chunks_exact(r.bulk) {
                local.put_bulk(chunk);
            }
            n += r.keep as u64;
        }
        let t = t0.elapsed().as_secs_f64();
        if t >= secs {
            return (n, t);
        }
    }
}

/// A new pool for one measurement, as the rows' lcores find it when they start: its ring's
/// sides are biased to the first thread that uses each, and revoked when another one comes (see
/// rte-ring's "Biased sides"); a pool shared by every row would have stopped biasing after its
/// first few rows' threads.
fn pool(zones: &LocalZones, cache: bool) -> Mempool {
    let params = MempoolParams::new(4095, 2048);
    let params = if cache {
        params.cache_size(512)
    } else {
        params
    };
    Mempool::create(zones, "mpb", params).expect("pool")
}

fn ours(r: Row, secs: f64) -> f64 {
    let zones = &LocalZones::new();
    let mp = &pool(zones, r.cache);
    let go = Arc::new(Barrier::new(r.cores as usize));
    let res: Vec<(u64, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..r.cores)
            .map(|l| {
                let go = go.clone();
                s.spawn(move || worker(mp, zones, l, r, secs, &go))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let tot: u64 = res.iter().map(|x| x.0).sum();
    let mean_secs = res.iter().map(|x| x.1).sum::<f64>() / r.cores as f64;
    tot as f64 / mean_secs
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else {
        format!("{:.1} M", x / 1e6)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds: usize = get("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let secs: f64 = get("--secs").and_then(|v| v.parse().ok()).unwrap_or(0.2);
    let only_pool = get("--pool"); // "cache" or "nocache"
    let only_cores: Option<u32> = get("--cores").and_then(|v| v.parse().ok());
    let only_bulk: Option<usize> = get("--bulk").and_then(|v| v.parse().ok());
    // `--side ours|dpdk`: measure one side only (for profiling one of them).
    let side = get("--side");
    let run_ours = side.as_deref() != Some("dpdk");
    let run_dpdk = side.as_deref() != Some("ours");

    // Before the EAL pins this thread to CPU 0.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(have_dpdk)]
    // SAFETY: called once, before any other DPDK call, from the main thread.
    let dpdk_lcores = unsafe { mempool_dpdk_init() };
    #[cfg(not(have_dpdk))]
    let dpdk_lcores = -1;
    println!("{}", hugeshare_bench::placement_notice());
    if !hugeshare_bench::DPDK_AVAILABLE {
        println!("{}", hugeshare_bench::no_dpdk_notice());
    } else if dpdk_lcores < 0 {
        println!("DPDK's EAL failed to initialise (-l 0-1 --no-huge -m 256 --no-pci --no-shconf): printing hugeshare's figures alone");
    }

    let mut rows = Vec::new();
    for cache in [false, true] {
        if only_pool
            .as_deref()
            .is_some_and(|p| (p == "cache") != cache)
        {
            continue;
        }
        for cores in [1u32, 2] {
            if cores as usize > cpus || only_cores.is_some_and(|c| c != cores) {
                continue;
            }
            for bulk in [1usize, 4, 8, 32] {
                if only_bulk.is_some_and(|b| b != bulk) {
                    continue;
                }
                for keep in [32usize, 128] {
                    rows.push(Row {
                        cache,
                        cores,
                        bulk,
                        keep,
                    });
                }
            }
        }
    }
    let mut our_v = vec![Vec::new(); rows.len()];
    let mut dpdk_v = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (k, r) in rows.iter().enumerate() {
            if run_ours {
                our_v[k].push(ours(*r, secs));
            }
            #[cfg(have_dpdk)]
            if run_dpdk && dpdk_lcores >= r.cores as i32 {
                // SAFETY: the EAL was initialised above; the pools exist; one call at a time.
                let x = unsafe {
                    mempool_dpdk_run(r.cache as i32, r.cores, r.bulk as u32, r.keep as u32, secs)
                };
                if x > 0.0 {
                    dpdk_v[k].push(x);
                }
            }
        }
    }
    println!(
        "mempool get+put, objects per second (all cores), 4095 × 2048 B, median of {rounds} alternating rounds of {secs} s per point"
    );
    println!(
        "{:<10} {:>5} {:>5} {:>5} {:>12} {:>12} {:>7}  target ≥ 1.1",
        "pool", "cores", "bulk", "keep", "hugeshare", "DPDK 22.11", "ratio"
    );
    let mut misses = 0;
    for (k, r) in rows.iter().enumerate() {
        let o = if our_v[k].is_empty() {
            0.0
        } else {
            median(&mut our_v[k])
        };
        let (d, ratio, mark) = if dpdk_v[k].is_empty() {
            ("-".to_string(), "-".to_string(), "")
        } else {
            let d = median(&mut dpdk_v[k]);
            let ratio = o / d;
            if ratio < 1.1 {
                misses += 1;
            }
            (
                fmt_rate(d),
                format!("{ratio:.2}"),
                if ratio >= 1.1 { "met" } else { "MISSED" },
            )
        };
        println!(
            "{:<10} {:>5} {:>5} {:>5} {:>12} {:>12} {:>7}  {mark}",
            if r.cache { "cache 512" } else { "no cache" },
            r.cores,
            r.bulk,
            r.keep,
            fmt_rate(o),
            d,
            ratio
        );
    }
    #[cfg(have_dpdk)]
    if dpdk_lcores > 0 {
        // SAFETY: the EAL was initialised and no DPDK call runs any more.
        unsafe { mempool_dpdk_cleanup() };
    }
    if hugeshare_bench::DPDK_AVAILABLE && dpdk_lcores > 0 {
        println!("rows below 1.1 × DPDK: {misses} of {}", rows.len());
    }
}
