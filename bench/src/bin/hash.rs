//! `cargo xtask bench hash`: `rte-hash-with-hash` beside DPDK's `rte_hash` in the shape of
//! DPDK's `hash_perf_autotest`: TSC cycles per add, lookup, bulk lookup (bursts of 16, per key)
//! and delete, with precomputed hashes, for 4-, 16- and 64-byte keys, 2^19 entries 75 % full.
//!
//! Like with like: DPDK runs with lock-free readers (`RW_CONCURRENCY_LF`), ours always has
//! lock-free readers (and its writer takes its shared-memory lock on every add and delete).
//! DPDK's default mode (no LF) is printed too, for reference to `dpdk-baseline.md`. Both sides
//! get the same keys, hashes and lookup order; each table is warmed by one untimed round, then
//! rounds alternate ours / DPDK-LF / DPDK and each row is the median over rounds.
//!
//! Options: `--rounds N` (default 7), `--entries-log2 N` (default 19), `--lookups N` per round
//! (default 2^20), `--keys 4,16,64`.
//!
//! Target (issue 6): ours ≤ 0.9 × DPDK-LF on every row.
#![deny(unsafe_code)]

use std::hint::black_box;

use anyhow::{bail, Context, Result};
use hugeshare_bench::{median, no_dpdk_notice, DPDK_AVAILABLE};
use rte_hash_with_hash::{Crc32c, Hash, HashFn, Params};
use shmconfig::LocalZones;

/// The bench's only unsafe code: the TSC and DPDK's C side.
#[allow(unsafe_code)]
mod raw {
    /// TSC, ordered after earlier instructions.
    #[inline(always)]
    pub fn rdtsc() -> u64 {
        // SAFETY: LFENCE and RDTSC exist on every x86_64 CPU and only order/read the counter.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }

    #[cfg(have_dpdk)]
    mod ffi {
        use std::ffi::{c_char, c_void};
        extern "C" {
            pub fn hash_dpdk_eal_init() -> i32;
            pub fn hash_dpdk_eal_cleanup();
            pub fn hash_dpdk_create(
                name: *const c_char,
                entries: u32,
                key_len: u32,
                lf: i32,
            ) -> *mut c_void;
            pub fn hash_dpdk_free(h: *mut c_void);
            pub fn hash_dpdk_reset(h: *mut c_void);
            pub fn hash_dpdk_round(
                h: *mut c_void,
                key_len: u32,
                keys: *const u8,
                sigs: *const u32,
                n: u32,
                lk_keys: *const u8,
                lk_ptrs: *const *const c_void,
                lk_sigs: *const u32,
                nl: u32,
                out: *mut f64,
                fails: *mut u64,
            );
        }
    }

    /// Initialise DPDK's EAL (once per process).
    #[cfg(have_dpdk)]
    pub fn eal_init() -> bool {
        // SAFETY: called once, from the main thread, before any other DPDK call.
        unsafe { ffi::hash_dpdk_eal_init() == 0 }
    }

    /// Tear the EAL down (after every table is freed).
    #[cfg(have_dpdk)]
    pub fn eal_cleanup() {
        // SAFETY: called once at the end, after `DpdkTable`s are dropped.
        unsafe { ffi::hash_dpdk_eal_cleanup() }
    }

    /// An `rte_hash` (freed on drop).
    #[cfg(have_dpdk)]
    pub struct DpdkTable(*mut std::ffi::c_void, u32);

    #[cfg(have_dpdk)]
    impl DpdkTable {
        pub fn new(name: &str, entries: u32, key_len: u32, lf: bool) -> Option<Self> {
            let name = std::ffi::CString::new(name).ok()?;
            // SAFETY: `name` is a valid C string that outlives the call (DPDK copies it).
            let h = unsafe { ffi::hash_dpdk_create(name.as_ptr(), entries, key_len, i32::from(lf)) };
            (!h.is_null()).then_some(Self(h, key_len))
        }

        pub fn reset(&self) {
            // SAFETY: `self.0` is a live table.
            unsafe { ffi::hash_dpdk_reset(self.0) }
        }

        /// One round; see `hash_dpdk_round` in csrc/hash.c.
        pub fn round(
            &self,
            keys: &[u8],
            sigs: &[u32],
            lk_keys: &[u8],
            lk_sigs: &[u32],
        ) -> ([f64; 4], u64) {
            let kl = self.1 as usize;
            assert_eq!(keys.len(), sigs.len() * kl);
            assert_eq!(lk_keys.len(), lk_sigs.len() * kl);
            let ptrs: Vec<*const std::ffi::c_void> =
                lk_keys.chunks(kl).map(|k| k.as_ptr().cast()).collect();
            let mut out = [0f64; 4];
            let mut fails = 0u64;
            // SAFETY: every pointer/length pair describes a live slice checked above; `ptrs`
            // points into `lk_keys`, alive for the call; `out` has 4 elements.
            unsafe {
                ffi::hash_dpdk_round(
                    self.0,
                    self.1,
                    keys.as_ptr(),
                    sigs.as_ptr(),
                    sigs.len() as u32,
                    lk_keys.as_ptr(),
                    ptrs.as_ptr(),
                    lk_sigs.as_ptr(),
                    lk_sigs.len() as u32,
                    out.as_mut_ptr(),
                    &mut fails,
                )
            };
            (out, fails)
        }
    }

    #[cfg(have_dpdk)]
    impl Drop for DpdkTable {
        fn drop(&mut self) {
            // SAFETY: `self.0` is a live table, freed once.
            unsafe { ffi::hash_dpdk_free(self.0) }
        }
    }
}

struct Opts {
    rounds: usize,
    entries_log2: u32,
    lookups: usize,
    key_sizes: Vec<usize>,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rounds: 7,
        entries_log2: 19,
        lookups: 1 << 20,
        key_sizes: vec![4, 16, 64],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = val()?.parse()?,
            "--entries-log2" => o.entries_log2 = val()?.parse()?,
            "--lookups" => o.lookups = val()?.parse()?,
            "--keys" => {
                o.key_sizes = val()?
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            _ => bail!("unknown option {a:?}; options: --rounds N --entries-log2 N --lookups N --keys 4,16,64"),
        }
    }
    if o.rounds == 0 || o.lookups < 16 {
        bail!("--rounds must be at least 1 and --lookups at least 16");
    }
    for &k in &o.key_sizes {
        if ![4, 16, 64].contains(&k) {
            bail!("key size {k} not built in; use 4, 16 or 64");
        }
    }
    Ok(o)
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` distinct random keys of `KL` bytes (the first 4 bytes are a bijection of the index).
fn make_keys<const KL: usize>(n: usize, rng: &mut Rng) -> Vec<[u8; KL]> {
    (0..n)
        .map(|i| {
            let mut k = [0u8; KL];
            for ch in k.chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                ch.copy_from_slice(&r[..ch.len()]);
            }
            // Invertible 32-bit mix of i: distinct for distinct i.
            let mut x = i as u32;
            x = (x ^ (x >> 16)).wrapping_mul(0x7feb_352d);
            x = (x ^ (x >> 15)).wrapping_mul(0x846c_a68b);
            x ^= x >> 16;
            k[..4].copy_from_slice(&x.to_le_bytes());
            k
        })
        .collect()
}

/// Cycles per add, lookup, bulk-looked-up key, delete; and the number of failed operations.
fn ours_round<const KL: usize>(
    t: &Hash<[u8; KL], (), Crc32c>,
    keys: &[[u8; KL]],
    sigs: &[u32],
    lk_keys: &[[u8; KL]],
    lk_sigs: &[u32],
) -> ([f64; 4], u64) {
    let mut bad = 0u64;
    let t0 = raw::rdtsc();
    for (k, &h) in keys.iter().zip(sigs) {
        bad += u64::from(t.add_with_hash(k, h, &()).is_err());
    }
    let t1 = raw::rdtsc();
    let add = (t1 - t0) as f64 / keys.len() as f64;

    let t0 = raw::rdtsc();
    for (k, &h) in lk_keys.iter().zip(lk_sigs) {
        bad += u64::from(black_box(t.lookup_with_hash(k, h)).is_none());
    }
    let t1 = raw::rdtsc();
    let lookup = (t1 - t0) as f64 / lk_keys.len() as f64;

    let nb = lk_keys.len() / 16 * 16;
    let mut pos = [None; 16];
    let t0 = raw::rdtsc();
    for (k, h) in lk_keys[..nb].chunks(16).zip(lk_sigs[..nb].chunks(16)) {
        bad += 16 - t.lookup_bulk_with_hash(k, h, &mut pos) as u64;
        black_box(&pos);
    }
    let t1 = raw::rdtsc();
    let bulk = (t1 - t0) as f64 / nb as f64;

    let t0 = raw::rdtsc();
    for (k, &h) in keys.iter().zip(sigs) {
        bad += u64::from(t.delete_with_hash(k, h).is_none());
    }
    let t1 = raw::rdtsc();
    let del = (t1 - t0) as f64 / keys.len() as f64;
    ([add, lookup, bulk, del], bad)
}

struct Row {
    key: usize,
    ours: [Vec<f64>; 4],
    lf: [Vec<f64>; 4],
    plain: [Vec<f64>; 4],
}

fn run_size<const KL: usize>(o: &Opts, zones: &LocalZones) -> Result<Row> {
    let entries = 1u32 << o.entries_log2;
    let n = (entries as usize) * 3 / 4;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ KL as u64);
    let keys = make_keys::<KL>(n, &mut rng);
    let hasher = Crc32c::new(0);
    let sigs: Vec<u32> = keys.iter().map(|k| hasher.hash(k)).collect();
    let order: Vec<usize> = (0..o.lookups).map(|_| (rng.next() % n as u64) as usize).collect();
    let lk_keys: Vec<[u8; KL]> = order.iter().map(|&i| keys[i]).collect();
    let lk_sigs: Vec<u32> = order.iter().map(|&i| sigs[i]).collect();

    let ours: Hash<[u8; KL], (), Crc32c> = Hash::create(
        zones,
        &format!("bench-{KL}"),
        Params::new(entries),
        hasher,
    )?;
    let mut row = Row {
        key: KL,
        ours: Default::default(),
        lf: Default::default(),
        plain: Default::default(),
    };
    let push = |dst: &mut [Vec<f64>; 4], r: [f64; 4]| {
        for (d, v) in dst.iter_mut().zip(r) {
            d.push(v);
        }
    };

    #[cfg(have_dpdk)]
    let dpdk = if DPDK_AVAILABLE {
        let lf = raw::DpdkTable::new(&format!("hslf{KL}"), entries, KL as u32, true)
            .context("rte_hash_create (LF) failed")?;
        let plain = raw::DpdkTable::new(&format!("hs{KL}"), entries, KL as u32, false)
            .context("rte_hash_create failed")?;
        Some((lf, plain))
    } else {
        None
    };
    let flat = |v: &[[u8; KL]]| -> Vec<u8> { v.iter().flatten().copied().collect() };
    let (keys_flat, lk_flat) = (flat(&keys), flat(&lk_keys));

    // Round 0 warms every table (first touch of its pages) and is not counted.
    for round in 0..=o.rounds {
        let (r, bad) = ours_round(&ours, &keys, &sigs, &lk_keys, &lk_sigs);
        if bad != 0 {
            bail!("ours: {bad} operations failed with {KL}-byte keys");
        }
        if round > 0 {
            push(&mut row.ours, r);
        }
        #[cfg(have_dpdk)]
        if let Some((lf, plain)) = &dpdk {
            for (t, dst) in [(lf, &mut row.lf), (plain, &mut row.plain)] {
                t.reset();
                let (r, bad) = t.round(&keys_flat, &sigs, &lk_flat, &lk_sigs);
                if bad != 0 {
                    bail!("DPDK: {bad} operations failed with {KL}-byte keys");
                }
                if round > 0 {
                    push(dst, r);
                }
            }
        }
        let _ = (&keys_flat, &lk_flat);
    }
    ours.destroy(zones)?;
    Ok(row)
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    let entries = 1u32 << o.entries_log2;
    println!(
        "hash: {} entries, {} keys added (75 %), {} lookups per round, precomputed hashes, {} rounds (+1 warm-up), medians; CRC32-C instruction: {}",
        entries,
        entries as usize * 3 / 4,
        o.lookups,
        o.rounds,
        Crc32c::new(0).uses_cpu_instruction()
    );
    #[cfg(have_dpdk)]
    let have = DPDK_AVAILABLE && {
        let ok = raw::eal_init();
        if !ok {
            println!("rte_eal_init failed: printing hugeshare's figures alone");
        }
        ok
    };
    #[cfg(not(have_dpdk))]
    let have = false;
    if !DPDK_AVAILABLE {
        println!("{}", no_dpdk_notice());
    }
    let zones = LocalZones::new();
    let mut rows = Vec::new();
    for &k in &o.key_sizes {
        rows.push(match k {
            4 => run_size::<4>(&o, &zones)?,
            16 => run_size::<16>(&o, &zones)?,
            _ => run_size::<64>(&o, &zones)?,
        });
    }
    #[cfg(have_dpdk)]
    if have {
        raw::eal_cleanup();
    }
    println!();
    println!(
        "{:>4} {:<8} {:>9} {:>9} {:>7} {:>7}  {:>9}",
        "key", "op", "ours", "DPDK-LF", "ratio", "target", "DPDK"
    );
    let mut misses = 0;
    for mut r in rows {
        for (i, op) in ["add", "lookup", "bulk16", "delete"].iter().enumerate() {
            let ours = median(&mut r.ours[i]);
            if have && !r.lf[i].is_empty() {
                let lf = median(&mut r.lf[i]);
                let plain = median(&mut r.plain[i]);
                let ratio = ours / lf;
                let ok = ratio <= 0.9;
                misses += usize::from(!ok);
                println!(
                    "{:>4} {:<8} {:>9.1} {:>9.1} {:>7.2} {:>7}  {:>9.1}",
                    r.key,
                    op,
                    ours,
                    lf,
                    ratio,
                    if ok { "met" } else { "MISSED" },
                    plain
                );
            } else {
                println!("{:>4} {:<8} {:>9.1}", r.key, op, ours);
            }
        }
    }
    println!();
    println!("cycles per operation (bulk16: per key, bursts of 16); ratio = ours / DPDK-LF; target ≤ 0.90; DPDK = DPDK's default mode (no LF), for reference");
    if have {
        println!("rows missing the target: {misses}");
    }
    Ok(())
}
