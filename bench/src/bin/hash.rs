//! `cargo xtask bench hash`: `rte-hash-with-hash` beside DPDK's `rte_hash` in the shape of
//! DPDK's `hash_perf_autotest`: TSC cycles per add, lookup, bulk lookup (bursts of 16, per key)
//! and delete, with precomputed hashes, for 4-, 16- and 64-byte keys, 2^19 entries 75 % full.
//!
//! Like with like: DPDK runs with lock-free readers (`RW_CONCURRENCY_LF`), ours always has
//! lock-free readers. DPDK-LF's writer takes no lock (its user promises a single writer); ours
//! as a single writer holds `Hash::writer()` (the `add/writer` and `delete/writer` rows, the
//! like-for-like ones), and the `add` and `delete` rows show ours taking its shared-memory lock
//! on every call, which DPDK-LF never pays.
//! DPDK's default mode (no LF) is printed too, for reference to `dpdk-baseline.md`. All sides
//! get the same keys, hashes and lookup order; each table is warmed by one untimed round; within
//! every phase the sides take turns chunk by chunk (16384 operations), and each row is the median
//! over rounds of the per-round average. The `add/writer` and `delete/writer` rows are ours
//! holding one `Hash::writer()` per turn instead of locking on every call: ours takes its add and
//! delete turns alternately each way, on the same table.
//!
//! Options: `--rounds N` (default 7), `--entries-log2 N` (default 19), `--lookups N` per round
//! (default 2^20), `--keys 4,16,64`, `--alternate chunk|phase` (default chunk: the sides take
//! turns every 16384 operations, so machine noise falls on all alike but every table is cold;
//! phase: each side runs a whole phase in turn, as hash_perf_autotest runs one table at a time),
//! `--memory huge|heap` (default huge).
//!
//! Memory, like for like: by default both sides run on 2 MiB hugepages, as the product does and
//! as `hash_perf_autotest` does. The bench reserves pages and mounts hugetlbfs on a private
//! mount point (it must run as root); ours lives in the memory of a real primary process of a
//! group on that mount (`--huge-dir`), DPDK's EAL takes its memory from the same mount
//! (`--huge-dir`, `--in-memory`). Pages, mount and group are removed at the end. Without root or
//! free pages, or with `--memory heap`, both sides run on 4 KiB pages (ours in heap memory, DPDK
//! with `--no-huge`), and the bench says so: there a lookup pays a TLB miss per random access on
//! both sides.
//!
//! Target (issue 6): ours ≤ 0.9 × DPDK-LF on every row.
#![deny(unsafe_code)]

use std::hint::black_box;

use anyhow::{bail, Context, Result};
use hugeshare_bench::{median, no_dpdk_notice, DPDK_AVAILABLE};
use rte_hash_with_hash::{Crc32c, Hash, HashFn, Params};
use shmconfig::{LocalZones, Zones};

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
            pub fn hash_dpdk_eal_init(huge_dir: *const c_char, mem_mb: u32) -> i32;
            pub fn hash_dpdk_eal_cleanup();
            pub fn hash_dpdk_create(
                name: *const c_char,
                entries: u32,
                key_len: u32,
                lf: i32,
            ) -> *mut c_void;
            pub fn hash_dpdk_free(h: *mut c_void);
            pub fn hash_dpdk_reset(h: *mut c_void);
            pub fn hash_dpdk_add(
                h: *mut c_void,
                key_len: u32,
                keys: *const u8,
                sigs: *const u32,
                n: u32,
                fails: *mut u64,
            ) -> f64;
            pub fn hash_dpdk_lookup(
                h: *mut c_void,
                key_len: u32,
                keys: *const u8,
                sigs: *const u32,
                n: u32,
                fails: *mut u64,
            ) -> f64;
            pub fn hash_dpdk_bulk(
                h: *mut c_void,
                ptrs: *const *const c_void,
                sigs: *const u32,
                n: u32,
                fails: *mut u64,
            ) -> f64;
            pub fn hash_dpdk_del(
                h: *mut c_void,
                key_len: u32,
                keys: *const u8,
                sigs: *const u32,
                n: u32,
                free_pos: i32,
                fails: *mut u64,
            ) -> f64;
        }
    }

    /// Initialise DPDK's EAL (once per process): with `mem_mb` MiB of the 2 MiB pages of the
    /// hugetlbfs mount `huge_dir`, or without hugepages.
    #[cfg(have_dpdk)]
    pub fn eal_init(huge_dir: Option<&std::path::Path>, mem_mb: u32) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let dir = match huge_dir.map(|d| std::ffi::CString::new(d.as_os_str().as_bytes())) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return false,
        };
        let p = dir.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: called once, from the main thread, before any other DPDK call; `p` is null or
        // a valid C string that outlives the call (the EAL copies what it keeps).
        unsafe { ffi::hash_dpdk_eal_init(p, mem_mb) == 0 }
    }

    /// Tear the EAL down (after every table is freed).
    #[cfg(have_dpdk)]
    pub fn eal_cleanup() {
        // SAFETY: called once at the end, after `DpdkTable`s are dropped.
        unsafe { ffi::hash_dpdk_eal_cleanup() }
    }

    /// An `rte_hash` (freed on drop).
    #[cfg(have_dpdk)]
    pub struct DpdkTable(*mut std::ffi::c_void, u32, bool);

    #[cfg(have_dpdk)]
    impl DpdkTable {
        pub fn new(name: &str, entries: u32, key_len: u32, lf: bool) -> Option<Self> {
            let name = std::ffi::CString::new(name).ok()?;
            // SAFETY: `name` is a valid C string that outlives the call (DPDK copies it).
            let h =
                unsafe { ffi::hash_dpdk_create(name.as_ptr(), entries, key_len, i32::from(lf)) };
            (!h.is_null()).then_some(Self(h, key_len, lf))
        }

        pub fn reset(&self) {
            // SAFETY: `self.0` is a live table.
            unsafe { ffi::hash_dpdk_reset(self.0) }
        }

        /// One timed phase (see csrc/hash.c): cycles per operation; failures added to `fails`.
        /// `keys` holds `sigs.len()` packed keys; `ptrs` (for `Bulk`) points to each of them.
        pub fn phase(
            &self,
            phase: super::Phase,
            keys: &[u8],
            ptrs: &[*const std::ffi::c_void],
            sigs: &[u32],
            fails: &mut u64,
        ) -> f64 {
            let kl = self.1 as usize;
            assert_eq!(keys.len(), sigs.len() * kl);
            let n = sigs.len() as u32;
            // SAFETY: `keys` holds `n` keys of `kl` bytes and `sigs` `n` hashes (checked above);
            // `ptrs`, when used, has `n` pointers into `keys` (checked below), all alive for
            // the call; `self.0` is a live table of `kl`-byte keys.
            unsafe {
                match phase {
                    super::Phase::Add => {
                        ffi::hash_dpdk_add(self.0, self.1, keys.as_ptr(), sigs.as_ptr(), n, fails)
                    }
                    super::Phase::Lookup => ffi::hash_dpdk_lookup(
                        self.0,
                        self.1,
                        keys.as_ptr(),
                        sigs.as_ptr(),
                        n,
                        fails,
                    ),
                    super::Phase::Bulk => {
                        assert_eq!(ptrs.len(), sigs.len());
                        ffi::hash_dpdk_bulk(self.0, ptrs.as_ptr(), sigs.as_ptr(), n, fails)
                    }
                    super::Phase::Delete => {
                        let free_pos = i32::from(self.2);
                        let (k, s) = (keys.as_ptr(), sigs.as_ptr());
                        ffi::hash_dpdk_del(self.0, self.1, k, s, n, free_pos, fails)
                    }
                }
            }
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
    /// Operations per turn when the sides alternate within a phase (usize::MAX: whole phases).
    chunk: usize,
    /// Both sides on 2 MiB hugepages (the default), or both on 4 KiB heap pages.
    huge: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rounds: 7,
        entries_log2: 19,
        lookups: 1 << 20,
        key_sizes: vec![4, 16, 64],
        chunk: 16 * 1024,
        huge: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = val()?.parse()?,
            "--entries-log2" => o.entries_log2 = val()?.parse()?,
            "--lookups" => o.lookups = val()?.parse()?,
            "--alternate" => {
                o.chunk = match val()?.as_str() {
                    "chunk" => 16 * 1024,
                    "phase" => usize::MAX,
                    v => bail!("--alternate takes chunk or phase, not {v:?}"),
                }
            }
            "--memory" => {
                o.huge = match val()?.as_str() {
                    "huge" => true,
                    "heap" => false,
                    v => bail!("--memory takes huge or heap, not {v:?}"),
                }
            }
            "--keys" => {
                o.key_sizes = val()?
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            _ => bail!("unknown option {a:?}; options: --rounds N --entries-log2 N --lookups N --keys 4,16,64 --alternate chunk|phase --memory huge|heap"),
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

/// The timed phases of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Add,
    Lookup,
    Bulk,
    Delete,
}

const PHASES: [Phase; 4] = [Phase::Add, Phase::Lookup, Phase::Bulk, Phase::Delete];

/// Our side of one phase: cycles per operation; failures added to `bad`.
fn ours_phase<const KL: usize>(
    t: &Hash<[u8; KL], (), Crc32c>,
    phase: Phase,
    batch: bool,
    keys: &[[u8; KL]],
    sigs: &[u32],
    bad: &mut u64,
) -> f64 {
    let t0 = raw::rdtsc();
    match (phase, batch) {
        (Phase::Add, false) => {
            for (k, &h) in keys.iter().zip(sigs) {
                *bad += u64::from(t.add_with_hash(k, h, &()).is_err());
            }
        }
        (Phase::Add, true) => {
            let w = t.writer();
            for (k, &h) in keys.iter().zip(sigs) {
                *bad += u64::from(w.add_with_hash(k, h, &()).is_err());
            }
        }
        (Phase::Lookup, _) => {
            for (k, &h) in keys.iter().zip(sigs) {
                *bad += u64::from(black_box(t.lookup_with_hash(k, h)).is_none());
            }
        }
        (Phase::Bulk, _) => {
            let mut pos = [None; 16];
            for (k, h) in keys.chunks_exact(16).zip(sigs.chunks_exact(16)) {
                *bad += 16 - t.lookup_bulk_with_hash(k, h, &mut pos) as u64;
                black_box(&pos);
            }
        }
        (Phase::Delete, false) => {
            for (k, &h) in keys.iter().zip(sigs) {
                *bad += u64::from(t.delete_with_hash(k, h).is_none());
            }
        }
        (Phase::Delete, true) => {
            let w = t.writer();
            for (k, &h) in keys.iter().zip(sigs) {
                *bad += u64::from(w.delete_with_hash(k, h).is_none());
            }
        }
    }
    let t1 = raw::rdtsc();
    let n = if phase == Phase::Bulk {
        keys.len() / 16 * 16
    } else {
        keys.len()
    };
    (t1 - t0) as f64 / n as f64
}

/// Medians per phase: ours (per-call lock), ours with one `writer()` per phase (add and
/// delete only), DPDK with lock-free readers, DPDK's default mode.
struct Row {
    key: usize,
    ours: [Vec<f64>; 4],
    batch: [Vec<f64>; 4],
    lf: [Vec<f64>; 4],
    plain: [Vec<f64>; 4],
}

fn run_size<const KL: usize>(o: &Opts, zones: &impl Zones, have_dpdk: bool) -> Result<Row> {
    let entries = 1u32 << o.entries_log2;
    let n = (entries as usize) * 3 / 4;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ KL as u64);
    let keys = make_keys::<KL>(n, &mut rng);
    let hasher = Crc32c::new(0);
    let sigs: Vec<u32> = keys.iter().map(|k| hasher.hash(k)).collect();
    let order: Vec<usize> = (0..o.lookups)
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let lk_keys: Vec<[u8; KL]> = order.iter().map(|&i| keys[i]).collect();
    let lk_sigs: Vec<u32> = order.iter().map(|&i| sigs[i]).collect();

    let ours: Hash<[u8; KL], (), Crc32c> =
        Hash::create(zones, &format!("bench-{KL}"), Params::new(entries), hasher)?;
    let mut row = Row {
        key: KL,
        ours: Default::default(),
        batch: Default::default(),
        lf: Default::default(),
        plain: Default::default(),
    };

    #[cfg(have_dpdk)]
    let dpdk = if have_dpdk {
        let lf = raw::DpdkTable::new(&format!("hslf{KL}"), entries, KL as u32, true)
            .context("rte_hash_create (RW_CONCURRENCY_LF) failed")?;
        let plain = raw::DpdkTable::new(&format!("hs{KL}"), entries, KL as u32, false)
            .context("rte_hash_create failed")?;
        Some([lf, plain])
    } else {
        None
    };
    #[cfg(not(have_dpdk))]
    let _ = have_dpdk;
    #[cfg(have_dpdk)]
    let flat = |v: &[[u8; KL]]| -> Vec<u8> { v.iter().flatten().copied().collect() };
    #[cfg(have_dpdk)]
    let (keys_flat, lk_flat) = (flat(&keys), flat(&lk_keys));
    #[cfg(have_dpdk)]
    let lk_ptrs: Vec<*const std::ffi::c_void> =
        lk_flat.chunks(KL).map(|k| k.as_ptr().cast()).collect();

    // Sides: 0 ours, 2 DPDK-LF, 3 DPDK. In the add and delete phases, ours takes its turns
    // alternately calling add/delete directly and through writer(); those are recorded as side 1
    // (same table, so both variants see the same table state).
    let dpdk_sides = if cfg!(have_dpdk) && have_dpdk { 2 } else { 0 };
    let mut bad = 0u64;
    // Round 0 warms every table (first touch of its pages) and is not counted. Within a phase
    // the sides take turns chunk by chunk (CHUNK operations each), in an order that rotates,
    // so that noise from other work on the machine falls on all of them alike.
    let chunk = o.chunk;
    for round in 0..=o.rounds {
        #[cfg(have_dpdk)]
        if let Some(d) = &dpdk {
            for t in d {
                t.reset();
            }
        }
        for (pi, &phase) in PHASES.iter().enumerate() {
            let lookups = matches!(phase, Phase::Lookup | Phase::Bulk);
            let (pk, ps) = if lookups {
                (&lk_keys[..], &lk_sigs[..])
            } else {
                (&keys[..], &sigs[..])
            };
            let mut sides: Vec<usize> = vec![0];
            sides.extend((0..dpdk_sides).map(|d| 2 + d));
            let mut total = [0f64; 4];
            let mut ops = [0usize; 4];
            // Adds and deletes come in at least two turns, one per variant of ours.
            let step = if lookups {
                chunk
            } else {
                chunk.min(pk.len().div_ceil(2))
            };
            for (ci, start) in (0..pk.len()).step_by(step).enumerate() {
                let end = start.saturating_add(step).min(pk.len());
                let (ck, cs) = (&pk[start..end], &ps[start..end]);
                let n_ops = if phase == Phase::Bulk {
                    ck.len() / 16 * 16
                } else {
                    ck.len()
                };
                for j in 0..sides.len() {
                    let mut side = sides[(j + ci + round) % sides.len()];
                    if side == 0 && !lookups && (ci + round) % 2 == 1 {
                        side = 1;
                    }
                    let per_op = match side {
                        0 => ours_phase(&ours, phase, false, ck, cs, &mut bad),
                        1 => ours_phase(&ours, phase, true, ck, cs, &mut bad),
                        #[cfg(have_dpdk)]
                        s => {
                            let t = &dpdk.as_ref().expect("DPDK tables")[s - 2];
                            let (fk, fp) = if lookups {
                                (&lk_flat[start * KL..end * KL], &lk_ptrs[start..end])
                            } else {
                                (&keys_flat[start * KL..end * KL], &[][..])
                            };
                            t.phase(phase, fk, fp, cs, &mut bad)
                        }
                        #[cfg(not(have_dpdk))]
                        _ => unreachable!(),
                    };
                    total[side] += per_op * n_ops as f64;
                    ops[side] += n_ops;
                }
            }
            if round > 0 {
                for side in 0..4 {
                    if ops[side] == 0 {
                        continue;
                    }
                    let v = total[side] / ops[side] as f64;
                    [&mut row.ours, &mut row.batch, &mut row.lf, &mut row.plain][side][pi].push(v);
                }
            }
        }
        if bad != 0 {
            bail!("{bad} operations failed with {KL}-byte keys in round {round}");
        }
    }
    ours.destroy(zones)?;
    Ok(row)
}

/// 2 MiB pages for both sides: a reservation, a private hugetlbfs mount, and a primary process
/// of a hugeshare group with its memory on that mount. Given back in the reverse order: the
/// group (and its runtime directory) in `drop`, then the mount and the pages, as fields.
struct HugeMem {
    /// Always `Some` until `drop` takes it, so that it goes before the mount.
    group: Option<procctl::Process>,
    mount: hugemem::admin::Mount,
    _pages: hugemem::admin::Reservation,
    rundir: std::path::PathBuf,
}

/// Hugepage memory for each side, in MiB: 1 KiB per entry, at least 512 (2^19 entries of
/// 64-byte keys take about 50 MiB in ours, and DPDK holds two such tables, LF and default, at
/// once).
fn side_mb(entries: u32) -> u32 {
    (entries >> 10).max(512)
}

impl HugeMem {
    fn setup(mb: u32) -> Result<HugeMem> {
        const P2M: u64 = 2 << 20;
        if !hugemem::admin::is_root() {
            bail!("not root: cannot reserve hugepages or mount hugetlbfs");
        }
        // Both sides' memory, and a few pages for the group's own tables.
        let want = u64::from(mb) + 16;
        let pages = hugemem::admin::reserve_pages(P2M, want, None)
            .with_context(|| format!("reserving {want} pages of 2 MiB"))?;
        let pid = std::process::id();
        let tmp = std::env::temp_dir();
        let dir = tmp.join(format!("hugeshare-bench-hash-{pid}"));
        let mount = hugemem::admin::mount_private(&dir, P2M).context("mounting hugetlbfs")?;
        let rundir = tmp.join(format!("hugeshare-bench-hash-rt-{pid}"));
        let args = [
            "--proc-type=primary".to_string(),
            format!("--file-prefix=hash-bench-{pid}"),
            format!("--runtime-dir={}", rundir.display()),
            format!("--huge-dir={}", dir.display()),
            "-m".into(),
            mb.to_string(),
        ];
        let started =
            procctl::Process::from_args(args).context("starting a primary on the hugetlbfs mount");
        let group = match started {
            Ok((p, _)) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&rundir);
                return Err(e);
            }
        };
        Ok(HugeMem {
            group: Some(group),
            mount,
            _pages: pages,
            rundir,
        })
    }

    fn dir(&self) -> &std::path::Path {
        self.mount.path()
    }

    /// The group's zones, where our tables live.
    fn zones(&self) -> &procctl::Process {
        self.group.as_ref().expect("taken only by drop")
    }
}

impl Drop for HugeMem {
    fn drop(&mut self) {
        drop(self.group.take());
        let _ = std::fs::remove_dir_all(&self.rundir);
    }
}

fn main() -> Result<()> {
    let o = parse_opts()?;
    let entries = 1u32 << o.entries_log2;
    let mb = side_mb(entries);
    let huge = if o.huge {
        match HugeMem::setup(mb) {
            Ok(h) => Some(h),
            Err(e) => {
                println!(
                    "note: no hugepages for this run ({e:#}); both sides run on 4 KiB pages (--memory heap)"
                );
                None
            }
        }
    } else {
        None
    };
    println!(
        "hash: {} entries, {} keys added (75 %), {} lookups per round, precomputed hashes, {} rounds (+1 warm-up), medians; sides alternate every {}; CRC32-C instruction: {}",
        entries,
        entries as usize * 3 / 4,
        o.lookups,
        o.rounds,
        if o.chunk == usize::MAX { "phase".to_string() } else { format!("{} operations", o.chunk) },
        Crc32c::new(0).uses_cpu_instruction()
    );
    #[cfg(have_dpdk)]
    let have = DPDK_AVAILABLE && {
        let ok = raw::eal_init(huge.as_ref().map(|h| h.dir()), mb);
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
    println!("{}", hugeshare_bench::placement_notice());
    println!(
        "memory: {}",
        match &huge {
            Some(h) => format!(
                "2 MiB hugepages on {} for both sides (ours: a primary's group memory; DPDK: --huge-dir, --in-memory)",
                h.dir().display()
            ),
            None => "4 KiB pages for both sides (ours: heap; DPDK: --no-huge)".into(),
        }
    );
    let heap = LocalZones::new();
    let zones: &dyn Zones = match &huge {
        Some(h) => h.zones(),
        None => &heap,
    };
    let mut rows = Vec::new();
    for &k in &o.key_sizes {
        rows.push(match k {
            4 => run_size::<4>(&o, &zones, have)?,
            16 => run_size::<16>(&o, &zones, have)?,
            _ => run_size::<64>(&o, &zones, have)?,
        });
    }
    #[cfg(have_dpdk)]
    if have {
        raw::eal_cleanup();
    }
    println!();
    println!(
        "{:>4} {:<13} {:>9} {:>9} {:>7} {:>7}  {:>9}",
        "key", "op", "ours", "DPDK-LF", "ratio", "target", "DPDK"
    );
    let mut misses = 0;
    let names = ["add", "lookup", "bulk16", "delete"];
    for mut r in rows {
        let mut lines = Vec::new();
        for (i, name) in names.iter().enumerate() {
            lines.push((name.to_string(), median(&mut r.ours[i]), i));
            if !r.batch[i].is_empty() {
                lines.push((format!("{name}/writer"), median(&mut r.batch[i]), i));
            }
        }
        let lf: Vec<f64> = (0..4)
            .map(|i| {
                if r.lf[i].is_empty() {
                    f64::NAN
                } else {
                    median(&mut r.lf[i])
                }
            })
            .collect();
        let plain: Vec<f64> = (0..4)
            .map(|i| {
                if r.plain[i].is_empty() {
                    f64::NAN
                } else {
                    median(&mut r.plain[i])
                }
            })
            .collect();
        for (name, ours, i) in lines {
            if have {
                let ratio = ours / lf[i];
                let ok = ratio <= 0.9;
                misses += usize::from(!ok);
                println!(
                    "{:>4} {:<13} {:>9.1} {:>9.1} {:>7.2} {:>7}  {:>9.1}",
                    r.key,
                    name,
                    ours,
                    lf[i],
                    ratio,
                    if ok { "met" } else { "MISSED" },
                    plain[i]
                );
            } else {
                println!("{:>4} {:<13} {:>9.1}", r.key, name, ours);
            }
        }
    }
    println!();
    println!("TSC cycles per operation (bulk16: per key, bursts of 16); ratio = ours / DPDK-LF (target <= 0.90); DPDK = DPDK's default mode (no LF), for reference.");
    println!("delete, DPDK-LF: rte_hash_del_key_with_hash and then rte_hash_free_key_with_position, since in LF mode the delete alone leaves the key's slot allocated; ours frees the slot in the delete (DPDK's default mode does too).");
    println!("add/writer, delete/writer: ours as the single writer, holding Hash::writer() for each turn: like for like with DPDK-LF, which takes no lock and trusts its user to be the only writer.");
    println!("add, delete: ours taking its shared-memory writer lock on every call (safe with several writers, which DPDK-LF is not); stricter than DPDK-LF, shown against it too.");
    if have {
        println!("rows missing the target: {misses}");
    }
    Ok(())
}
