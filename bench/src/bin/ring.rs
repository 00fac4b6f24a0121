//! `cargo xtask bench ring`: `rte-ring` beside DPDK's `rte_ring`, in the rows of DPDK's
//! `ring_perf_autotest` (same loop shapes and definitions; TSC cycles):
//!
//! * one core: single element (enqueue + dequeue), burst and bulk of 8 and 32 (enqueue + dequeue
//!   of the whole burst), SP/SC and MP/MC; an empty bulk dequeue (per call);
//! * two cores (CPU 0 enqueues, CPU 1 dequeues): bulk 8 and 32, per element, enqueue side plus
//!   dequeue side;
//! * two **processes** (a forked child on CPU 1 dequeues and checks the order): burst 32, cycles
//!   per object, SP/SC and MP/MC;
//! * a one-element ping-pong round trip between two processes through two SP/SC rings, beside a
//!   raw shared cache-line ping-pong (one line bounced, and ping and pong on two lines);
//! * floors measured in the same run, with no ring: two locked read-modify-writes (what any
//!   MP/MC enqueue + dequeue pays), and the bulk rows' copies alone (16-byte moves, and 8-byte
//!   moves for bulk 8), with the bulk 8 targets in cycles printed beside them;
//! * RTS and HTS rings on one core (single, bulk 8 and 32), beside DPDK's RTS and HTS rings
//!   (no targets: DPDK's test has no such rows).
//!
//! DPDK's side (`csrc/ring.c`) is DPDK's own ring from `rte_ring.h` inlined into the same loops,
//! with no EAL (`rte_ring_init` on aligned or shared memory), the fair peer described in
//! `dpdk-baseline.md` §8. Element = 8 bytes (`u64`, as DPDK's pointer API). Each round measures
//! every row on both sides; a round's figure for a row is the best of several short sub-runs
//! (8 on one core, 4 across cores or processes) in which ours and DPDK's alternate, so that
//! other load on the machine spoils a sub-run rather than a round; rows print the median over
//! rounds, and the best round beside it.
//!
//! Options: `--rounds N` (default 5), `--quick` (fewer iterations), `--row TEXT` (only the rows
//! whose name contains TEXT, and the floors printed beside them; repeatable).
#![deny(unsafe_code)]

use std::hint::black_box;

use anyhow::{bail, Result};
use hugeshare_bench::{median, no_dpdk_notice, DPDK_AVAILABLE};
use rte_ring::{Ring, RingFlags};
use shmconfig::LocalZones;

/// The bench's only unsafe code: the TSC, CPU pinning, fork and shared mappings, DPDK's C side.
#[allow(unsafe_code)]
mod raw {
    use std::ptr::NonNull;
    use std::sync::Arc;

    use shmconfig::{
        AlwaysAlive, Liveness, MemberId, ShmOffset, Zone, ZoneError, ZoneInfo, ZoneKind,
        ZoneRequest, Zones,
    };

    /// The TSC (no fence, as DPDK's `rte_rdtsc`).
    #[inline(always)]
    pub fn rdtsc() -> u64 {
        // SAFETY: RDTSC exists on every x86_64 CPU and only reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// `*d = *s` with one 8-byte load and one 8-byte store (volatile: never merged into wider
    /// moves).
    #[inline(always)]
    pub fn copy_word(d: &mut u64, s: &u64) {
        // SAFETY: both are references: valid, aligned and not overlapping (one is `&mut`).
        unsafe { std::ptr::write_volatile(d, std::ptr::read_volatile(s)) }
    }

    /// Pin the calling thread to `cpu`.
    pub fn pin(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity(0)
        // affects only the calling thread and reads the set we pass.
        unsafe {
            let mut s: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut s);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &s) == 0
        }
    }

    /// Run `child` in a forked process; returns its pid. The child exits with `_exit`.
    pub fn fork(child: impl FnOnce()) -> i32 {
        // SAFETY: the bench is single-threaded when it forks (no other thread holds locks the
        // child could need); the child runs `child` and leaves with `_exit`, never returning.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                child();
                libc::_exit(0);
            }
            pid
        }
    }

    /// Wait for a forked child; true if it exited with status 0.
    pub fn wait(pid: i32) -> bool {
        let mut st = 0;
        // SAFETY: waits for our own child; `st` is a valid out-pointer.
        unsafe {
            libc::waitpid(pid, &mut st, 0) == pid
                && libc::WIFEXITED(st)
                && libc::WEXITSTATUS(st) == 0
        }
    }

    /// An anonymous MAP_SHARED mapping, shared with forked children.
    #[derive(Debug)]
    struct SharedMap {
        ptr: NonNull<u8>,
        len: usize,
    }
    // SAFETY: plain shared memory, accessed through the ring's atomics and reservations only.
    unsafe impl Send for SharedMap {}
    // SAFETY: see Send.
    unsafe impl Sync for SharedMap {}
    impl Drop for SharedMap {
        fn drop(&mut self) {
            // SAFETY: exactly the mapping made in `SharedZones::new`, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }

    /// Zones in one anonymous shared mapping (bump-allocated; reserve before forking).
    #[derive(Debug)]
    pub struct SharedZones {
        map: Arc<SharedMap>,
        next: std::sync::Mutex<Vec<(String, usize, usize)>>,
    }

    impl SharedZones {
        /// `len` bytes of shared memory.
        pub fn new(len: usize) -> Self {
            // SAFETY: a fresh anonymous shared mapping at an address the kernel picks.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED, "mmap failed");
            SharedZones {
                map: Arc::new(SharedMap {
                    ptr: NonNull::new(p.cast()).unwrap(),
                    len,
                }),
                next: Default::default(),
            }
        }
        fn zone(&self, name: &str, off: usize, len: usize) -> Zone {
            let keep: Arc<dyn std::any::Any + Send + Sync> = self.map.clone();
            // SAFETY: off..off+len is inside the mapping (checked by `reserve`), kept mapped by
            // `keep`; the ring touches it through raw pointers and atomics only.
            unsafe {
                Zone::from_raw_parts(
                    name,
                    ZoneKind::Ring,
                    NonNull::new_unchecked(self.map.ptr.as_ptr().add(off)),
                    len,
                    ShmOffset::new(0, off as u64),
                    keep,
                )
            }
        }
    }

    impl Zones for SharedZones {
        fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
            let mut v = self.next.lock().unwrap();
            let start = v.last().map_or(0, |(_, o, l)| o + l).next_multiple_of(4096);
            if start + req.len > self.map.len {
                return Err(ZoneError::NoMemory {
                    name: req.name.into(),
                    len: req.len,
                    free: 0,
                });
            }
            v.push((req.name.into(), start, req.len));
            Ok(self.zone(req.name, start, req.len))
        }
        fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
            let v = self.next.lock().unwrap();
            let (n, o, l) = v
                .iter()
                .find(|e| e.0 == name)
                .ok_or_else(|| ZoneError::NotFound(name.into()))?;
            Ok(self.zone(n, *o, *l))
        }
        fn free(&self, _: &str) -> Result<(), ZoneError> {
            Err(ZoneError::Unsupported("bench zones are never freed"))
        }
        fn list(&self) -> Vec<ZoneInfo> {
            vec![]
        }
        fn member(&self) -> MemberId {
            MemberId(0)
        }
        fn liveness(&self) -> Arc<dyn Liveness> {
            Arc::new(AlwaysAlive)
        }
    }

    #[cfg(have_dpdk)]
    mod ffi {
        extern "C" {
            pub fn ring_dpdk_init() -> i32;
            pub fn ring_dpdk_single(mp: i32, iters: u32) -> f64;
            pub fn ring_dpdk_bulk(mp: i32, kind: i32, n: u32, iters: u32) -> f64;
            pub fn ring_dpdk_empty(mp: i32, iters: u32) -> f64;
            pub fn ring_dpdk_sync(mode: i32, n: u32, iters: u32) -> f64;
            pub fn ring_dpdk_two_cores(mp: i32, n: u32, iters: u32) -> f64;
            pub fn ring_dpdk_xproc(mp: i32, burst: u32, count: u64) -> f64;
            pub fn ring_dpdk_pingpong(iters: u64) -> f64;
            pub fn ring_raw_pingpong(lines: i32, iters: u64) -> f64;
        }
    }

    /// DPDK's side (each function runs one measurement and returns cycles).
    #[cfg(have_dpdk)]
    pub mod dpdk {
        use super::ffi;
        // SAFETY (all below): the C functions take plain integers, touch only memory they
        // allocate, and are called from the bench's main thread only (the two-core and
        // cross-process ones start and join their own thread or child).
        pub fn init() -> bool {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_init() == 0 }
        }
        pub fn single(mp: bool, iters: u32) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_single(mp as i32, iters) }
        }
        pub fn bulk(mp: bool, burst: bool, n: u32, iters: u32) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_bulk(mp as i32, burst as i32, n, iters) }
        }
        /// RTS (`rts`) or HTS ring, `n` elements a call (1: single).
        pub fn sync(rts: bool, n: u32, iters: u32) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_sync(if rts { 1 } else { 2 }, n, iters) }
        }
        pub fn empty(mp: bool, iters: u32) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_empty(mp as i32, iters) }
        }
        pub fn two_cores(mp: bool, n: u32, iters: u32) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_two_cores(mp as i32, n, iters) }
        }
        pub fn xproc(mp: bool, burst: u32, count: u64) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_xproc(mp as i32, burst, count) }
        }
        pub fn pingpong(iters: u64) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_dpdk_pingpong(iters) }
        }
        pub fn raw_pingpong(lines: i32, iters: u64) -> f64 {
            // SAFETY: see above.
            unsafe { ffi::ring_raw_pingpong(lines, iters) }
        }
    }
}

use raw::{pin, rdtsc, SharedZones};

struct Rings {
    sp: Ring<u64>,
    rts: Ring<u64>,
    hts: Ring<u64>,
}

/// A new MP/MC ring (its sides biased to the first thread that uses each, see rte-ring's
/// "Biased sides"); with `bias_off`, one that runs the multi-member protocol for good
/// ([`Ring::disable_bias`]), as a side that changed hands does.
fn fresh_mp(bias_off: bool) -> Ring<u64> {
    let r = Ring::create(&LocalZones::new(), "perf mp", 4096, RingFlags::empty()).unwrap();
    if bias_off {
        r.disable_bias();
    }
    r
}

fn rings() -> Rings {
    let z = LocalZones::new();
    Rings {
        sp: Ring::create(&z, "perf sp", 4096, RingFlags::SP_ENQ | RingFlags::SC_DEQ).unwrap(),
        rts: Ring::create(
            &z,
            "perf rts",
            4096,
            RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ,
        )
        .unwrap(),
        hts: Ring::create(
            &z,
            "perf hts",
            4096,
            RingFlags::MP_HTS_ENQ | RingFlags::MC_HTS_DEQ,
        )
        .unwrap(),
    }
}

/// An RTS or HTS ring through its default (shared) calls, `n` elements a bulk (1: the single
/// element calls), as DPDK's `rte_ring_m[pc]_{rts,hts}_*_bulk`.
#[inline(never)]
fn ours_sync(r: &Ring<u64>, n: usize, iters: u32) -> f64 {
    let mut buf = black_box(vec![0u64; 32]);
    let n = black_box(n);
    let t0 = rdtsc();
    if n == 1 {
        let slot = &mut buf[0];
        for _ in 0..iters {
            let _ = r.enqueue(*slot);
            if let Some(v) = r.dequeue() {
                *slot = v;
            }
        }
    } else {
        for _ in 0..iters {
            r.enqueue_bulk(&buf[..n]);
            r.dequeue_bulk(&mut buf[..n]);
        }
    }
    let t1 = rdtsc();
    black_box(&buf);
    (t1 - t0) as f64 / iters as f64
}

/// The SP/SC rows hold both sides of the ring with the single-member handles (DPDK's SP/SC
/// calls are a promise; ours is a hold the ring enforces).
fn handles(r: &Ring<u64>) -> (rte_ring::SingleProducer<u64>, rte_ring::SingleConsumer<u64>) {
    (
        r.single_producer().expect("the producer side is free"),
        r.single_consumer().expect("the consumer side is free"),
    )
}

#[inline(never)]
fn ours_single<const MP: bool>(r: &Ring<u64>, iters: u32) -> f64 {
    // As DPDK's loop: the object comes from and goes back to a heap buffer.
    // (One index check before the loop, none per iteration, as in C.)
    let mut burst = black_box(vec![0u64; 32]);
    let slot = &mut burst[0];
    let t0 = rdtsc();
    if MP {
        for _ in 0..iters {
            let _ = r.mp_enqueue(*slot);
            if let Some(v) = r.mc_dequeue() {
                *slot = v;
            }
        }
    } else {
        let (mut p, mut c) = handles(r);
        for _ in 0..iters {
            let _ = p.enqueue(*slot);
            if let Some(v) = c.dequeue() {
                *slot = v;
            }
        }
    }
    let t1 = rdtsc();
    black_box(&burst);
    (t1 - t0) as f64 / iters as f64
}

#[inline(never)]
fn ours_bulk<const MP: bool, const BURST: bool>(r: &Ring<u64>, n: usize, iters: u32) -> f64 {
    let mut buf = black_box(vec![0u64; 32]);
    let n = black_box(n);
    let t0 = rdtsc();
    match (MP, BURST) {
        (false, true) => {
            let (mut p, mut c) = handles(r);
            for _ in 0..iters {
                p.enqueue_burst(&buf[..n]);
                c.dequeue_burst(&mut buf[..n]);
            }
        }
        (false, false) => {
            let (mut p, mut c) = handles(r);
            for _ in 0..iters {
                p.enqueue_bulk(&buf[..n]);
                c.dequeue_bulk(&mut buf[..n]);
            }
        }
        (true, true) => {
            for _ in 0..iters {
                r.mp_enqueue_burst(&buf[..n]);
                r.mc_dequeue_burst(&mut buf[..n]);
            }
        }
        (true, false) => {
            for _ in 0..iters {
                r.mp_enqueue_bulk(&buf[..n]);
                r.mc_dequeue_bulk(&mut buf[..n]);
            }
        }
    }
    let t1 = rdtsc();
    black_box(&buf);
    (t1 - t0) as f64 / iters as f64
}

#[inline(never)]
fn ours_empty<const MP: bool>(r: &Ring<u64>, iters: u32) -> f64 {
    let mut buf = [0u64; 8];
    let n = black_box(8);
    let t0 = rdtsc();
    if MP {
        for _ in 0..iters {
            let _ = r.mc_dequeue_bulk(&mut buf[..n]);
        }
    } else {
        let mut c = r.single_consumer().expect("the consumer side is free");
        for _ in 0..iters {
            let _ = c.dequeue_bulk(&mut buf[..n]);
        }
    }
    let t1 = rdtsc();
    (t1 - t0) as f64 / iters as f64
}

/// One side of a two-core row: `iters` bulks of `n`, retried until each goes through (as
/// DPDK's `ring_side_run`); cycles per element. One function per side and mode, so that each
/// loop is compiled on its own: compiled as one closure with the four loops behind a match, the
/// SP/SC bulk 8 row moved by 25 % with changes to the MP/MC calls that it never runs.
#[inline(never)]
fn ours_side<const ENQ: bool, const MP: bool>(r: &Ring<u64>, n: usize, iters: u32) -> f64 {
    let mut buf = [0u64; 32];
    let n = black_box(n);
    let t0;
    if MP {
        t0 = rdtsc();
        for _ in 0..iters {
            if ENQ {
                while r.mp_enqueue_bulk(&buf[..n]) == 0 {
                    std::hint::spin_loop();
                }
            } else {
                while r.mc_dequeue_bulk(&mut buf[..n]) == 0 {
                    std::hint::spin_loop();
                }
            }
        }
    } else if ENQ {
        let mut p = r.single_producer().expect("producer side free");
        t0 = rdtsc();
        for _ in 0..iters {
            while p.enqueue_bulk(&buf[..n]) == 0 {
                std::hint::spin_loop();
            }
        }
    } else {
        let mut c = r.single_consumer().expect("consumer side free");
        t0 = rdtsc();
        for _ in 0..iters {
            while c.dequeue_bulk(&mut buf[..n]) == 0 {
                std::hint::spin_loop();
            }
        }
    }
    let t1 = rdtsc();
    black_box(&buf);
    (t1 - t0) as f64 / (iters as f64 * n as f64)
}

fn ours_two_cores<const MP: bool>(r: &Ring<u64>, n: usize, iters: u32) -> f64 {
    let ready = std::sync::atomic::AtomicU32::new(0);
    let start = || {
        ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        while ready.load(std::sync::atomic::Ordering::Acquire) != 2 {
            std::hint::spin_loop();
        }
    };
    pin(0);
    std::thread::scope(|s| {
        let d = s.spawn(|| {
            pin(1);
            start();
            ours_side::<false, MP>(r, n, iters)
        });
        start();
        let e = ours_side::<true, MP>(r, n, iters);
        e + d.join().unwrap()
    })
}

/// Cross-process: parent on CPU 0 enqueues `count` sequence numbers in bursts, a forked child on
/// CPU 1 dequeues them and checks the order. Cycles per object, from the start signal to the
/// child's last dequeue.
fn ours_xproc(mp: bool, burst: usize, count: u64) -> f64 {
    let z = SharedZones::new(1 << 20);
    let flags = if mp {
        RingFlags::empty()
    } else {
        RingFlags::SP_ENQ | RingFlags::SC_DEQ
    };
    let r = Ring::<u64>::create(&z, "xproc", 4096, flags).unwrap();
    let ctl = Ring::<u64>::create(&z, "ctl", 4, RingFlags::empty()).unwrap();
    let back = Ring::<u64>::create(&z, "back", 4, RingFlags::empty()).unwrap();
    let pid = raw::fork(|| {
        pin(1);
        let (end, errs) = if mp {
            xproc_consumer::<true>(&r, &ctl, burst, count)
        } else {
            xproc_consumer::<false>(&r, &ctl, burst, count)
        };
        back.enqueue_bulk(&[end, errs]);
    });
    pin(0);
    let t0 = if mp {
        xproc_producer::<true>(&r, &ctl, burst, count)
    } else {
        xproc_producer::<false>(&r, &ctl, burst, count)
    };
    let mut res = [0u64; 2];
    while back.dequeue_bulk(&mut res) == 0 {
        std::hint::spin_loop();
    }
    assert!(raw::wait(pid), "cross-process child failed");
    assert_eq!(
        res[1], 0,
        "cross-process: the child saw elements out of order"
    );
    (res[0] - t0) as f64 / count as f64
}

/// The consumer of [`ours_xproc`] (one function per mode, as the two-core sides): says it is
/// ready on `ctl`, takes `count` elements in bursts and checks their order. Returns the TSC
/// after the last one and the number out of order.
#[inline(never)]
fn xproc_consumer<const MP: bool>(
    r: &Ring<u64>,
    ctl: &Ring<u64>,
    burst: usize,
    count: u64,
) -> (u64, u64) {
    let mut c = (!MP).then(|| r.single_consumer().expect("consumer side free"));
    ctl.enqueue(1).unwrap();
    let mut buf = [0u64; 64];
    let mut next = 0u64;
    let mut errs = 0u64;
    while next < count {
        let k = match c.as_mut() {
            Some(c) => c.dequeue_burst(&mut buf[..burst]),
            None => r.mc_dequeue_burst(&mut buf[..burst]),
        };
        for &v in &buf[..k] {
            errs += (v != next) as u64;
            next += 1;
        }
        if k == 0 {
            std::hint::spin_loop();
        }
    }
    (rdtsc(), errs)
}

/// The producer of [`ours_xproc`]: waits for the consumer on `ctl`, then enqueues `count`
/// sequence numbers in bursts. Returns the TSC at the start.
#[inline(never)]
fn xproc_producer<const MP: bool>(r: &Ring<u64>, ctl: &Ring<u64>, burst: usize, count: u64) -> u64 {
    let mut p = (!MP).then(|| r.single_producer().expect("producer side free"));
    while ctl.dequeue().is_none() {
        std::hint::spin_loop();
    }
    let mut buf = [0u64; 64];
    let mut seq = 0u64;
    let t0 = rdtsc();
    while seq < count {
        let b = (burst as u64).min(count - seq) as usize;
        for (i, v) in buf[..b].iter_mut().enumerate() {
            *v = seq + i as u64;
        }
        let k = match p.as_mut() {
            Some(p) => p.enqueue_burst(&buf[..b]),
            None => r.mp_enqueue_burst(&buf[..b]),
        } as u64;
        seq += k;
        if k == 0 {
            std::hint::spin_loop();
        }
    }
    t0
}

/// One-element ping-pong through two SP/SC rings between two processes; cycles per round trip.
fn ours_pingpong(iters: u64) -> f64 {
    let z = SharedZones::new(1 << 20);
    let f = RingFlags::SP_ENQ | RingFlags::SC_DEQ;
    let ping = Ring::<u64>::create(&z, "ping", 64, f).unwrap();
    let pong = Ring::<u64>::create(&z, "pong", 64, f).unwrap();
    let ready = Ring::<u64>::create(&z, "ready", 4, f).unwrap();
    let pid = raw::fork(|| {
        pin(1);
        let mut rx = ping.single_consumer().expect("ping consumer side free");
        let mut tx = pong.single_producer().expect("pong producer side free");
        ready.enqueue(1).unwrap();
        for _ in 0..iters {
            let v = loop {
                if let Some(v) = rx.dequeue() {
                    break v;
                }
            };
            while tx.enqueue(v).is_err() {}
        }
    });
    pin(0);
    let mut tx = ping.single_producer().expect("ping producer side free");
    let mut rx = pong.single_consumer().expect("pong consumer side free");
    while ready.dequeue().is_none() {}
    let mut v = 1u64;
    let t0 = rdtsc();
    for _ in 0..iters {
        while tx.enqueue(v).is_err() {}
        v = loop {
            if let Some(v) = rx.dequeue() {
                break v;
            }
        };
    }
    let t1 = rdtsc();
    assert!(raw::wait(pid));
    black_box(v);
    (t1 - t0) as f64 / iters as f64
}

/// One row: our samples, DPDK's, and the target for ours ÷ DPDK.
struct Row {
    name: &'static str,
    unit: &'static str,
    ours: Vec<f64>,
    dpdk: Vec<f64>,
    target: Option<f64>,
}

/// Two 128-byte-aligned counters, as a ring's producer and consumer heads are.
#[repr(C, align(128))]
struct Line(std::sync::atomic::AtomicU64);

/// The floor under every MP/MC single row: one locked read-modify-write on each side's head
/// per enqueue + dequeue (any multi-producer, multi-consumer ring needs one per side), with no
/// ring around them. Cycles per pair.
#[inline(never)]
fn floor_locked_pair(iters: u32) -> f64 {
    use std::sync::atomic::Ordering::AcqRel;
    let (a, b) = (Line(0.into()), Line(0.into()));
    let (a, b) = (black_box(&a), black_box(&b));
    let t0 = rdtsc();
    for _ in 0..iters {
        a.0.fetch_add(1, AcqRel);
        b.0.fetch_add(1, AcqRel);
    }
    (rdtsc() - t0) as f64 / iters as f64
}

/// The floor under the bulk rows' data movement: the same loop's copies (the caller's buffer
/// into slots and back, `n` elements of 8 bytes, 16-byte moves) with no ring protocol at all.
/// Cycles per bulk.
#[inline(never)]
fn floor_copies(n: usize, iters: u32) -> f64 {
    let mut slots = black_box(vec![0u64; 4096]);
    let mut buf = black_box(vec![0u64; 32]);
    let n = black_box(n) & !3;
    let mut pos = 0usize;
    let t0 = rdtsc();
    for _ in 0..iters {
        let run = &mut slots[pos..pos + n];
        for (d, s) in run.chunks_exact_mut(4).zip(buf[..n].chunks_exact(4)) {
            d.copy_from_slice(s);
        }
        let run = black_box(&slots[pos..pos + n]);
        for (d, s) in buf[..n].chunks_exact_mut(4).zip(run.chunks_exact(4)) {
            d.copy_from_slice(s);
        }
        pos = (pos + n) & 4095 & !(n - 1);
    }
    let t1 = rdtsc();
    black_box(&buf);
    (t1 - t0) as f64 / iters as f64
}

/// [`floor_copies`] with 8-byte moves (one element per load and store; volatile, so that the
/// compiler cannot merge them into wider moves): the copies' floor does not depend on the move
/// width. Cycles per bulk. (Kept apart from [`floor_copies`]: one function taking the copy as a
/// closure measured 27.8 cycles instead of 12.9 for the 16-byte floor, other code for the loop.)
#[inline(never)]
fn floor_copies_words(n: usize, iters: u32) -> f64 {
    let mut slots = black_box(vec![0u64; 4096]);
    let mut buf = black_box(vec![0u64; 32]);
    let n = black_box(n);
    let mut pos = 0usize;
    let t0 = rdtsc();
    for _ in 0..iters {
        for (d, s) in slots[pos..pos + n].iter_mut().zip(&buf[..n]) {
            raw::copy_word(d, s);
        }
        for (d, s) in buf[..n].iter_mut().zip(&slots[pos..pos + n]) {
            raw::copy_word(d, s);
        }
        pos = (pos + n) & 4095 & !(n - 1);
    }
    let t1 = rdtsc();
    black_box(&buf);
    (t1 - t0) as f64 / iters as f64
}

fn main() -> Result<()> {
    let mut rounds = 5;
    let mut quick = false;
    let mut only: Vec<String> = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().unwrap_or_default().parse()?,
            "--quick" => quick = true,
            "--row" => match args.next() {
                Some(t) if !t.is_empty() => only.push(t),
                _ => bail!("--row needs the text of a row's name, e.g. --row \"two cores SP/SC\""),
            },
            _ => bail!("unknown option {a:?}; options: --rounds N, --quick, --row TEXT"),
        }
    }
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let dpdk = DPDK_AVAILABLE;
    println!("# {}", hugeshare_bench::placement_notice());
    if !dpdk {
        println!("# {}", no_dpdk_notice());
    }
    #[cfg(have_dpdk)]
    if !raw::dpdk::init() {
        bail!("rte_ring_init failed");
    }
    let s = if quick { 4 } else { 1 };
    let single_iters = (1u32 << 24) / s;
    let bulk_iters = (1u32 << 23) / s;
    let two_iters = (1u32 << 17) / s;
    let xproc_count = (1u64 << 24) / s as u64;
    let pp_iters = (1u64 << 18) / s as u64;

    let names: Vec<(&'static str, &'static str, Option<f64>)> = vec![
        ("SP/SC single (enq+deq)", "cyc", Some(0.9)),
        ("MP/MC single (enq+deq)", "cyc", Some(0.9)),
        ("MP/MC single, bias off (enq+deq)", "cyc", None),
        ("SP/SC burst 8 (per burst)", "cyc", None),
        ("SP/SC burst 32 (per burst)", "cyc", None),
        ("SP/SC bulk 8 (per bulk)", "cyc", Some(0.85)),
        ("SP/SC bulk 32 (per bulk)", "cyc", Some(0.5)),
        ("MP/MC burst 8 (per burst)", "cyc", None),
        ("MP/MC burst 32 (per burst)", "cyc", None),
        ("MP/MC bulk 8 (per bulk)", "cyc", Some(0.85)),
        ("MP/MC bulk 32 (per bulk)", "cyc", Some(0.5)),
        ("MP/MC bulk 8, bias off (per bulk)", "cyc", None),
        ("MP/MC bulk 32, bias off (per bulk)", "cyc", None),
        ("SC empty dequeue (per call)", "cyc", None),
        ("MC empty dequeue (per call)", "cyc", None),
        ("RTS single (enq+deq)", "cyc", None),
        ("RTS bulk 8 (per bulk)", "cyc", None),
        ("RTS bulk 32 (per bulk)", "cyc", None),
        ("HTS single (enq+deq)", "cyc", None),
        ("HTS bulk 8 (per bulk)", "cyc", None),
        ("HTS bulk 32 (per bulk)", "cyc", None),
        ("two cores SP/SC bulk 8 (per elem)", "cyc", Some(0.8)),
        ("two cores MP/MC bulk 8 (per elem)", "cyc", Some(0.8)),
        ("two cores MP/MC bulk 8, bias off (per elem)", "cyc", None),
        ("two cores SP/SC bulk 32 (per elem)", "cyc", Some(1.0)),
        ("two cores MP/MC bulk 32 (per elem)", "cyc", Some(1.0)),
        ("two cores MP/MC bulk 32, bias off (per elem)", "cyc", None),
        ("two procs SP/SC burst 32 (per obj)", "cyc", Some(0.9)),
        ("two procs MP/MC burst 32 (per obj)", "cyc", Some(0.9)),
        ("two procs ping-pong 1 elem (round trip)", "cyc", Some(1.3)),
    ];
    let mut rows: Vec<Row> = names
        .iter()
        .map(|&(name, unit, target)| Row {
            name,
            unit,
            ours: vec![],
            dpdk: vec![],
            target,
        })
        .collect();
    for t in &only {
        if !names.iter().any(|n| n.0.contains(t.as_str())) {
            let all: Vec<&str> = names.iter().map(|n| n.0).collect();
            bail!(
                "--row {t:?} names no row; the rows are:\n  {}",
                all.join("\n  ")
            );
        }
    }
    let want = |name: &str| only.is_empty() || only.iter().any(|t| name.contains(t.as_str()));
    // The floors are measured with the rows printed beside them.
    let want_lock = want("MP/MC single (enq+deq)");
    let want_copy8 = want("SP/SC bulk 8 (per bulk)") || want("MP/MC bulk 8 (per bulk)");
    let want_copy32 = want("SP/SC bulk 32 (per bulk)") || want("MP/MC bulk 32 (per bulk)");
    let mut floor_lock: Vec<f64> = vec![];
    let mut floor_copy8: Vec<f64> = vec![];
    let mut floor_copy8w: Vec<f64> = vec![];
    let mut floor_copy32: Vec<f64> = vec![];
    let mut floor1: Vec<f64> = vec![];
    #[cfg_attr(not(have_dpdk), allow(unused_mut))]
    let mut floor2: Vec<f64> = vec![];

    let r = rings();
    for round in 0..rounds {
        let mut i = 0;
        macro_rules! d {
            ($e:expr) => {{
                #[cfg(have_dpdk)]
                let v = Some($e);
                #[cfg(not(have_dpdk))]
                let v: Option<f64> = None;
                v
            }};
        }
        // Each round's figure is the best of K short sub-runs, ours and DPDK's alternating, so
        // that a preemption by other load on the machine spoils one sub-run, not the round.
        macro_rules! alt {
            ($k:expr, $ours:expr, $dpdk:expr) => {{
                let mut o = f64::INFINITY;
                let mut d: Option<f64> = None;
                for _ in 0..$k {
                    o = o.min($ours);
                    if let Some(x) = $dpdk {
                        d = Some(d.map_or(x, |y: f64| y.min(x)));
                    }
                }
                (o, d)
            }};
        }
        // The next row in `names`' order: measured (`alt!`) if wanted, skipped otherwise.
        macro_rules! row {
            ($k:expr, $ours:expr, $dpdk:expr) => {{
                if want(rows[i].name) {
                    let (o, d) = alt!($k, $ours, $dpdk);
                    rows[i].ours.push(o);
                    rows[i].dpdk.extend(d);
                }
                i += 1;
            }};
        }
        const K1: u32 = 8;
        const K2: u32 = 4;
        // one core
        for (mp, bias_off) in [(false, false), (true, false), (true, true)] {
            let fresh = fresh_mp(bias_off);
            let rr = if mp { &fresh } else { &r.sp };
            let it = single_iters / K1;
            row!(
                K1,
                if mp {
                    ours_single::<true>(rr, it)
                } else {
                    ours_single::<false>(rr, it)
                },
                d!(raw::dpdk::single(mp, it))
            );
        }
        for (mp, bias_off) in [(false, false), (true, false), (true, true)] {
            let fresh = fresh_mp(bias_off);
            let rr = if mp { &fresh } else { &r.sp };
            for burst in [true, false] {
                for n in [8usize, 32] {
                    if bias_off && burst {
                        continue;
                    }
                    let it = bulk_iters / K1;
                    row!(
                        K1,
                        match (mp, burst) {
                            (false, false) => ours_bulk::<false, false>(rr, n, it),
                            (false, true) => ours_bulk::<false, true>(rr, n, it),
                            (true, false) => ours_bulk::<true, false>(rr, n, it),
                            (true, true) => ours_bulk::<true, true>(rr, n, it),
                        },
                        d!(raw::dpdk::bulk(mp, burst, n as u32, it))
                    );
                }
            }
        }
        for mp in [false, true] {
            let fresh = fresh_mp(false);
            let rr = if mp { &fresh } else { &r.sp };
            let it = single_iters / K1;
            row!(
                K1,
                if mp {
                    ours_empty::<true>(rr, it)
                } else {
                    ours_empty::<false>(rr, it)
                },
                d!(raw::dpdk::empty(mp, it))
            );
        }
        for rts in [true, false] {
            let rr = if rts { &r.rts } else { &r.hts };
            for n in [1usize, 8, 32] {
                let it = if n == 1 { single_iters } else { bulk_iters } / K1;
                row!(
                    K1,
                    ours_sync(rr, n, it),
                    d!(raw::dpdk::sync(rts, n as u32, it))
                );
            }
        }
        let best = |f: &dyn Fn() -> f64| (0..K1).map(|_| f()).fold(f64::INFINITY, f64::min);
        if want_lock {
            floor_lock.push(best(&|| floor_locked_pair(single_iters / K1)));
        }
        if want_copy8 {
            floor_copy8.push(best(&|| floor_copies(8, bulk_iters / K1)));
            floor_copy8w.push(best(&|| floor_copies_words(8, bulk_iters / K1)));
        }
        if want_copy32 {
            floor_copy32.push(best(&|| floor_copies(32, bulk_iters / K1)));
        }
        // two cores
        for n in [8usize, 32] {
            for (mp, bias_off) in [(false, false), (true, false), (true, true)] {
                let it = two_iters * 32 / n as u32 / K2;
                row!(
                    K2,
                    if mp {
                        // A new ring each sub-run: one thread uses each side.
                        ours_two_cores::<true>(&fresh_mp(bias_off), n, it)
                    } else {
                        ours_two_cores::<false>(&r.sp, n, it)
                    },
                    d!(raw::dpdk::two_cores(mp, n as u32, it))
                );
            }
        }
        pin(0);
        // two processes
        for mp in [false, true] {
            let c = xproc_count / K2 as u64;
            row!(K2, ours_xproc(mp, 32, c), d!(raw::dpdk::xproc(mp, 32, c)));
        }
        let c = pp_iters / K2 as u64;
        row!(K2, ours_pingpong(c), d!(raw::dpdk::pingpong(c)));
        assert_eq!(i, rows.len(), "every row of `names` measured in its order");
        #[cfg(have_dpdk)]
        {
            let c = pp_iters / K2 as u64;
            let (f1, f2) = alt!(
                K2,
                raw::dpdk::raw_pingpong(1, c),
                Some(raw::dpdk::raw_pingpong(2, c))
            );
            floor1.push(f1);
            floor2.push(f2.unwrap_or(f64::NAN));
        }
        eprintln!(
            "# round {round}: raw ping-pong 1 line {:.0}, 2 lines {:.0} cycles",
            floor1.last().copied().unwrap_or(f64::NAN),
            floor2.last().copied().unwrap_or(f64::NAN)
        );
    }

    println!("# rte-ring vs DPDK 22.11 rte_ring inlined, TSC cycles, median of {rounds} rounds");
    println!(
        "# [best: ours / DPDK] is the minimum over rounds, for a machine shared with other load"
    );
    println!(
        "{:<42} {:>9} {:>9} {:>7} {:>7} target",
        "row", "ours", "DPDK", "ratio", "unit"
    );
    let f2 = if floor2.is_empty() {
        f64::NAN
    } else {
        median(&mut floor2.clone())
    };
    for row in rows.iter_mut().filter(|r| !r.ours.is_empty()) {
        let o = median(&mut row.ours);
        let d = if row.dpdk.is_empty() {
            f64::NAN
        } else {
            median(&mut row.dpdk)
        };
        let (ratio, what) = if row.name.contains("ping-pong") {
            (o / f2, "÷ 2-line floor")
        } else {
            (o / d, "")
        };
        let verdict = match row.target {
            Some(t) if ratio.is_finite() => {
                if ratio <= t {
                    format!("≤ {t} met")
                } else {
                    format!("≤ {t} MISSED")
                }
            }
            Some(t) => format!("≤ {t} (no DPDK)"),
            None => "-".into(),
        };
        let min = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::min);
        println!(
            "{:<42} {:>9.2} {:>9.2} {:>7.2} {:>7} {} {}   [best: {:.2} / {:.2}]",
            row.name,
            o,
            d,
            ratio,
            row.unit,
            verdict,
            what,
            min(&row.ours),
            min(&row.dpdk)
        );
    }
    if want_lock {
        println!(
            "{:<42} {:>9.2}   (floor under MP/MC single: one locked RMW per side, no ring)",
            "2 locked RMW (per pair)",
            median(&mut floor_lock)
        );
    }
    if want_copy8 {
        let copy8 = median(&mut floor_copy8);
        let copy8w = median(&mut floor_copy8w);
        println!(
            "{:<42} {:>9.2}   (floor under bulk 8: the copies alone, 16-byte moves, no ring)",
            "bulk 8 copies in and out (per bulk)", copy8
        );
        println!(
            "{:<42} {:>9.2}   (the same with 8-byte moves)",
            "bulk 8 copies in and out, 8-byte (per bulk)", copy8w
        );
        // The bulk 8 targets in cycles beside that floor: any ring copies the elements in and
        // out through the same buffer (DPDK's loop), so its bulk 8 figure cannot go below it.
        for row in rows
            .iter_mut()
            .filter(|r| r.name.ends_with("C bulk 8 (per bulk)"))
        {
            if let (Some(t), false) = (row.target, row.dpdk.is_empty()) {
                let goal = t * median(&mut row.dpdk);
                println!(
                    "{:<42} {:>9.2}   (target {t} × DPDK in cycles: {:.2} above the copies alone)",
                    format!("{} goal", row.name.trim_end_matches(" (per bulk)")),
                    goal,
                    goal - copy8.min(copy8w)
                );
            }
        }
    }
    if want_copy32 {
        println!(
            "{:<42} {:>9.2}   (the same for bulk 32)",
            "bulk 32 copies in and out (per bulk)",
            median(&mut floor_copy32)
        );
    }
    if !floor1.is_empty() {
        println!(
            "{:<42} {:>9.2}   (floor: one cache line bounced, round trip)",
            "raw ping-pong, 1 line",
            median(&mut floor1)
        );
        println!(
            "{:<42} {:>9.2}   (floor: ping and pong on two lines, round trip)",
            "raw ping-pong, 2 lines", f2
        );
    }
    Ok(())
}
