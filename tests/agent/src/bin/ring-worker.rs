//! `ring-worker`: processes that share one `rte-ring` for `cargo xtask test-mp`.
//!
//! `ring-worker <group options> -- <role> ...`:
//! * `create RING COUNT PRODUCERS PER_PRODUCER` — creates the ring and an audit zone (one bit per
//!   element to be sent, and counters), prints `READY`, then waits for `exit` on stdin;
//! * `produce RING ID PER_PRODUCER BURST` — enqueues elements `[ID << 40 | seq, checksum]`;
//! * `consume RING TIMEOUT_MS` — dequeues until every element of every producer was received
//!   (counted in the audit zone), checking each checksum and setting its bit (a bit already set
//!   is a duplicate);
//! * `audit RING` — checks that every bit is set: nothing lost, nothing duplicated, nothing
//!   corrupt;
//! * `stall RING N` — reserves `N` producer slots and never publishes them (a producer stopped,
//!   or killed, between the two), prints `READY stalled member=ID`, waits for `exit`;
//! * `whoami` — prints `READY member=ID` (the member slot the group gave it), waits for `exit`.
//!
//! Each prints one `RESULT ...` line and exits 0 when its checks hold, 1 otherwise.
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use hugeshare_agent::fail;
use procctl::Process;
use rte_ring::{Ring, RingFlags};
use shmconfig::{Zone, ZoneKind, ZoneRequest, Zones};

#[allow(unsafe_code)]
mod raw {
    use std::sync::atomic::AtomicU64;

    use shmconfig::Zone;

    /// The `i`-th 64-bit word of a zone, as an atomic.
    pub fn word(z: &Zone, i: usize) -> &AtomicU64 {
        assert!((i + 1) * 8 <= z.len(), "word {i} outside zone {}", z.name());
        // SAFETY: in bounds (asserted); zones are 64-byte aligned, so every word is 8-aligned;
        // the zone stays mapped while `z` lives, and every access to it is atomic.
        unsafe { &*(z.as_ptr().add(i * 8).cast::<AtomicU64>()) }
    }
}

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

// audit zone layout (u64 words): 0 producers, 1 per_producer, 2 received, 3 duplicates,
// 4 corrupt, 5.. bitmap
const HDR: usize = 8;

fn checksum(v: u64) -> u64 {
    v.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555_aaaa_5555_aaaa
}

fn audit_zone(p: &Process, ring: &str) -> Zone {
    p.lookup(&format!("{ring}.audit"))
        .unwrap_or_else(|e| fail(&format!("audit zone: {e}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (p, rest) = Process::from_args(args).unwrap_or_else(|e| fail(&format!("{e}")));
    let rest = hugeshare_agent::RoleArgs(rest);
    let arg = |i: usize| rest.arg(i);
    let num = |i: usize| rest.num(i);
    match arg(0).as_str() {
        "create" => {
            let (name, count, producers, per) = (arg(1), num(2) as u32, num(3), num(4));
            Ring::<[u64; 2]>::create(&p, &name, count, RingFlags::empty())
                .unwrap_or_else(|e| fail(&format!("{e}")));
            let bits = (producers * per).div_ceil(64) as usize;
            let z = p
                .reserve(&ZoneRequest::new(
                    &format!("{name}.audit"),
                    (HDR + bits) * 8,
                    ZoneKind::Memzone,
                ))
                .unwrap_or_else(|e| fail(&format!("{e}")));
            raw::word(&z, 0).store(producers, Relaxed);
            raw::word(&z, 1).store(per, Relaxed);
            println!("READY created {name}");
            hugeshare_agent::wait_for_exit();
        }
        "produce" => {
            let (name, id, per, burst) = (arg(1), num(2), num(3), num(4) as usize);
            let ring =
                Ring::<[u64; 2]>::lookup(&p, &name).unwrap_or_else(|e| fail(&format!("{e}")));
            println!("READY producer {id}");
            let mut seq = 0u64;
            let mut buf = Vec::with_capacity(burst);
            let t0 = Instant::now();
            while seq < per {
                buf.clear();
                for k in 0..(burst as u64).min(per - seq) {
                    let v = id << 40 | (seq + k);
                    buf.push([v, checksum(v)]);
                }
                let mut off = 0;
                while off < buf.len() {
                    off += ring.enqueue_burst(&buf[off..]);
                    if off < buf.len() {
                        std::hint::spin_loop();
                        if t0.elapsed() > Duration::from_secs(60) {
                            fail("ring stayed full for a minute");
                        }
                    }
                }
                seq += buf.len() as u64;
            }
            println!("RESULT ok sent={per}");
        }
        "consume" => {
            let (name, timeout) = (arg(1), Duration::from_millis(num(2)));
            let ring =
                Ring::<[u64; 2]>::lookup(&p, &name).unwrap_or_else(|e| fail(&format!("{e}")));
            let z = audit_zone(&p, &name);
            let (producers, per) = (
                raw::word(&z, 0).load(Acquire),
                raw::word(&z, 1).load(Acquire),
            );
            let total = producers * per;
            println!("READY consumer");
            let mut buf = [[0u64; 2]; 32];
            let (mut got, mut dups, mut bad) = (0u64, 0u64, 0u64);
            let t0 = Instant::now();
            while raw::word(&z, 2).load(Acquire) < total {
                let n = ring.dequeue_burst(&mut buf);
                if n == 0 {
                    if t0.elapsed() > timeout {
                        fail(&format!(
                            "timed out: {} of {total} received in all",
                            raw::word(&z, 2).load(Acquire)
                        ));
                    }
                    std::hint::spin_loop();
                    continue;
                }
                for e in &buf[..n] {
                    let (id, seq) = (e[0] >> 40, e[0] & ((1 << 40) - 1));
                    if e[1] != checksum(e[0]) || id >= producers || seq >= per {
                        bad += 1;
                        raw::word(&z, 4).fetch_add(1, AcqRel);
                        continue;
                    }
                    let bit = id * per + seq;
                    let prev =
                        raw::word(&z, HDR + (bit / 64) as usize).fetch_or(1 << (bit % 64), AcqRel);
                    if prev & (1 << (bit % 64)) != 0 {
                        dups += 1;
                        raw::word(&z, 3).fetch_add(1, AcqRel);
                    }
                }
                got += n as u64;
                raw::word(&z, 2).fetch_add(n as u64, AcqRel);
            }
            if dups > 0 || bad > 0 {
                fail(&format!("got={got} duplicates={dups} corrupt={bad}"));
            }
            println!("RESULT ok got={got}");
        }
        "audit" => {
            let name = arg(1);
            let z = audit_zone(&p, &name);
            let (producers, per) = (
                raw::word(&z, 0).load(Acquire),
                raw::word(&z, 1).load(Acquire),
            );
            let mut missing = 0u64;
            for bit in 0..producers * per {
                if raw::word(&z, HDR + (bit / 64) as usize).load(Acquire) & (1 << (bit % 64)) == 0 {
                    missing += 1;
                }
            }
            let (recv, dups, bad) = (
                raw::word(&z, 2).load(Acquire),
                raw::word(&z, 3).load(Acquire),
                raw::word(&z, 4).load(Acquire),
            );
            let ring =
                Ring::<[u64; 2]>::lookup(&p, &name).unwrap_or_else(|e| fail(&format!("{e}")));
            let left = ring.count();
            if missing > 0 || dups > 0 || bad > 0 || recv != producers * per || left != 0 {
                fail(&format!("missing={missing} duplicates={dups} corrupt={bad} received={recv} left_in_ring={left}"));
            }
            println!(
                "RESULT ok elements={} missing=0 duplicates=0 corrupt=0",
                producers * per
            );
        }
        "stall" => {
            let (name, n) = (arg(1), num(2) as u32);
            let ring =
                Ring::<[u64; 2]>::lookup(&p, &name).unwrap_or_else(|e| fail(&format!("{e}")));
            if ring.test_reserve_and_vanish(false, n) != n {
                fail(&format!("could not reserve {n} slots of {name}"));
            }
            println!("READY stalled member={}", p.member().0);
            hugeshare_agent::wait_for_exit();
        }
        "stall-biased" => {
            // The producer side is fresh: this call biases it to this thread and stops in the
            // middle of the enqueue, its in-flight flag up (what a kill there leaves behind).
            let (name, n) = (arg(1), num(2) as u32);
            let ring =
                Ring::<[u64; 2]>::lookup(&p, &name).unwrap_or_else(|e| fail(&format!("{e}")));
            if ring.test_reserve_and_vanish_biased(false, n) != (n, true) {
                fail(&format!(
                    "could not reserve {n} slots of {name} on a side biased to this thread"
                ));
            }
            println!("READY stalled biased member={}", p.member().0);
            hugeshare_agent::wait_for_exit();
        }
        "whoami" => {
            println!("READY member={}", p.member().0);
            hugeshare_agent::wait_for_exit();
        }
        other => fail(&format!("unknown role {other:?}")),
    }
}
