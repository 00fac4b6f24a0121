//! `/init` of the QEMU guests that `cargo xtask vm-test` boots: it finds the host's ivshmem
//! devices with `ivshmem_meta::GuestZones`, uses the host's rings (and the other guest's) through
//! them, reads the HPET, prints one `HSCHECK <name> PASS|FAIL <detail>` line per check on the
//! serial console, and reports the verdict through QEMU's isa-debug-exit port.
//!
//! Kernel command line: `hugeshare.role=a|b`, `hugeshare.gen=<host generation>`,
//! `hugeshare.n=<messages from the host>`, `hugeshare.m=<messages between guests>`,
//! `hugeshare.pool=<objects in the host's mempool>`, `hugeshare.tsc_hz=<the host's TSC frequency>`,
//! `hugeshare.mp=<values to enqueue into the multi-producer ring beside a host producer>`.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ivshmem_meta::GuestZones;
use rte_mempool::{Mempool, Obj};
use rte_ring::Ring;
use shmconfig::{ZoneError, ZoneKind, ZoneRequest, Zones};

/// Exit value for "every check passed" (QEMU exits with 2*0x10+1 = 33).
const PASS: u32 = 0x10;
/// Exit value for "a check failed" (QEMU exits with 65).
const FAIL: u32 = 0x20;
/// How long a guest waits for a peer.
const WAIT: Duration = Duration::from_secs(40);

/// What the host says on the kernel command line.
#[derive(Clone, Copy)]
struct Params {
    generation: u64,
    n: usize,
    m: usize,
    pool_n: usize,
    tsc_hz: u64,
    mp_n: u64,
}

struct Report {
    failed: bool,
}

impl Report {
    fn check(&mut self, name: &str, r: Result<String, String>) -> bool {
        match r {
            Ok(d) => {
                println!("HSCHECK {name} PASS {d}");
                true
            }
            Err(d) => {
                println!("HSCHECK {name} FAIL {d}");
                self.failed = true;
                false
            }
        }
    }
}

fn param(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

fn dequeue_n(ring: &Ring<u64>, n: usize) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::with_capacity(n);
    let mut buf = [0u64; 64];
    while got.len() < n {
        let want = (n - got.len()).min(buf.len());
        let k = ring.dequeue_burst(&mut buf[..want]);
        got.extend_from_slice(&buf[..k]);
        if k == 0 {
            if Instant::now() > deadline {
                return Err(format!("only {} of {n} messages after {WAIT:?}", got.len()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(got)
}

fn enqueue_all(ring: &Ring<u64>, vals: &[u64]) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let mut done = 0;
    while done < vals.len() {
        let k = ring.enqueue_burst(&vals[done..]);
        done += k;
        if k == 0 {
            if Instant::now() > deadline {
                return Err(format!("ring full: {done} of {} enqueued", vals.len()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

fn main() {
    let mut notes = Vec::new();
    for (fs, at) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        if let Err(e) = raw::mount(fs, at) {
            notes.push(e);
        }
    }
    raw::console();
    println!("HSGUEST started");
    for n in notes {
        println!("HSNOTE {n}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let role = param(&cmdline, "hugeshare.role").unwrap_or_default();
    let mut rep = Report { failed: false };
    run(&mut rep, &role, &cmdline);
    println!("HSVERDICT {}", if rep.failed { "FAIL" } else { "PASS" });
    raw::exit_qemu(if rep.failed { FAIL } else { PASS });
}

fn run(rep: &mut Report, role: &str, cmdline: &str) {
    let num = |k: &str| -> u64 { param(cmdline, k).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let p = Params {
        generation: num("hugeshare.gen"),
        n: num("hugeshare.n") as usize,
        m: num("hugeshare.m") as usize,
        pool_n: num("hugeshare.pool") as usize,
        tsc_hz: num("hugeshare.tsc_hz"),
        mp_n: num("hugeshare.mp"),
    };
    let (generation, m) = (p.generation, p.m);
    let t = Instant::now();
    let guest = match GuestZones::scan() {
        Ok(g) => g,
        Err(e) => {
            rep.check("scan", Err(e.to_string()));
            return;
        }
    };
    let devs: Vec<String> = guest
        .devices()
        .iter()
        .map(|d| format!("{}={}", d.pci(), d.info().name))
        .collect();
    if !rep.check(
        "scan",
        if devs.is_empty() {
            Err(format!(
                "no hugeshare ivshmem device (skipped: {:?})",
                guest.skipped()
            ))
        } else {
            Ok(format!("{} in {:?}", devs.join(","), t.elapsed()))
        },
    ) {
        return;
    }
    let info = guest.devices()[0].info();
    rep.check(
        "generation",
        if info.generation == generation && info.sealed && !guest.is_stale() {
            Ok(format!("{} (sealed, not retired)", info.generation))
        } else {
            Err(format!(
                "block says generation {} sealed {} retired {}, host said {generation}",
                info.generation, info.sealed, info.retired
            ))
        },
    );
    rep.check(
        "guest-cannot-reserve",
        match guest.reserve(&ZoneRequest::new("x", 64, ZoneKind::Memzone)) {
            Err(ZoneError::Unsupported(_)) => Ok("reserve refused".into()),
            other => Err(format!("{other:?}")),
        },
    );
    match role {
        "a" => role_a(rep, &guest, &p),
        "b" => role_b(rep, &guest, m),
        other => {
            rep.check("role", Err(format!("unknown role {other:?}")));
        }
    }
}

fn role_a(rep: &mut Report, guest: &GuestZones, p: &Params) {
    let Params {
        n,
        m,
        pool_n,
        tsc_hz,
        mp_n,
        ..
    } = *p;
    // Host <-> guest through rings the host created in the metadata.
    let rings = (|| -> Result<_, String> {
        Ok((
            Ring::<u64>::lookup(guest, "h2g").map_err(|e| e.to_string())?,
            Ring::<u64>::lookup(guest, "g2h").map_err(|e| e.to_string())?,
        ))
    })();
    let ok = rep.check(
        "ring-lookup",
        rings
            .as_ref()
            .map(|_| "h2g, g2h".to_string())
            .map_err(Clone::clone),
    );
    if ok {
        let (h2g, g2h) = rings.expect("checked");
        let got = dequeue_n(&h2g, n);
        let expect: Vec<u64> = (0..n as u64).map(|i| 1000 + i).collect();
        let good = rep.check(
            "host-to-guest",
            match got {
                Ok(v) if v == expect => Ok(format!("{n} messages in order")),
                Ok(v) => Err(format!("wrong values: first {:?}", &v[..v.len().min(4)])),
                Err(e) => Err(e),
            },
        );
        if good {
            let replies: Vec<u64> = expect.iter().map(|v| v * 3).collect();
            rep.check(
                "guest-to-host",
                enqueue_all(&g2h, &replies).map(|_| format!("{n} replies enqueued")),
            );
        }
    }
    // A memzone: read the host's word, write ours.
    rep.check(
        "memzone",
        (|| -> Result<String, String> {
            let z = guest
                .lookup_kind("ctl", ZoneKind::Memzone)
                .map_err(|e| e.to_string())?;
            let (host, _) = raw_words(&z);
            if host != 0x4853_4956_5348_4d44 {
                return Err(format!("host word {host:#x}"));
            }
            set_guest_word(&z, 0x6775_6573_7421);
            Ok("read the host's word, wrote ours".into())
        })(),
    );
    // A mempool: take objects, return some, hand the others to the host by index.
    rep.check(
        "mempool",
        (|| -> Result<String, String> {
            let mp = Mempool::lookup(guest, "pool").map_err(|e| e.to_string())?;
            let held = Ring::<u32>::lookup(guest, "held").map_err(|e| e.to_string())?;
            if let Some(l) = mp.local(guest).lcore() {
                return Err(format!("a guest got lcore {l}'s cache"));
            }
            let before = mp.avail_count();
            if before as usize != pool_n {
                return Err(format!(
                    "{before} objects available, the host made {pool_n}"
                ));
            }
            let mut objs = [Obj::empty(); 16];
            if mp.get_bulk(&mut objs) != 16 {
                return Err("could not take 16 objects".into());
            }
            let mut idx: Vec<u32> = objs.iter().filter_map(|o| mp.index_of(*o)).collect();
            idx.sort_unstable();
            idx.dedup();
            if idx.len() != 16 {
                return Err(format!("{} distinct objects of 16", idx.len()));
            }
            mp.put_bulk(&objs[..8]);
            let keep: Vec<u32> = objs[8..].iter().filter_map(|o| mp.index_of(*o)).collect();
            if held.enqueue_bulk(&keep) != 8 {
                return Err("could not hand 8 objects to the host".into());
            }
            let after = mp.avail_count();
            if after as usize != pool_n - 8 {
                return Err(format!("{after} available after taking 16 and returning 8"));
            }
            Ok(format!(
                "took 16 of {pool_n}, returned 8, handed 8 to the host; no lcore cache"
            ))
        })(),
    );
    // The multi-producer ring `mp`: enqueue while a host thread enqueues too (the host checks
    // that every value of each producer arrives once, in order).
    rep.check(
        "mp-ring-with-host",
        (|| -> Result<String, String> {
            let r = Ring::<u64>::lookup(guest, "mp").map_err(|e| e.to_string())?;
            let ctl = guest.lookup("ctl").map_err(|e| e.to_string())?;
            let t = Instant::now();
            ivshmem_meta::atomic_u64(&ctl, 16).store(1, Ordering::Release);
            let deadline = t + WAIT;
            for i in 0..mp_n {
                while r.enqueue((1 << 40) | i).is_err() {
                    if Instant::now() > deadline {
                        ivshmem_meta::atomic_u64(&ctl, 24).store(1, Ordering::Release);
                        return Err(format!("ring full for {WAIT:?} after {i} values"));
                    }
                    std::hint::spin_loop();
                }
            }
            ivshmem_meta::atomic_u64(&ctl, 24).store(1, Ordering::Release);
            Ok(format!(
                "{mp_n} values enqueued in {:?} beside a host producer",
                t.elapsed()
            ))
        })(),
    );
    // A ring in the host group's general segment, which the host exposed on purpose.
    rep.check(
        "exposed-segment",
        (|| -> Result<String, String> {
            let grp = Ring::<u64>::lookup(guest, "grp").map_err(|e| e.to_string())?;
            let v = dequeue_n(&grp, 1)?[0];
            if v != 0x5345_474d {
                return Err(format!("got {v:#x}"));
            }
            grp.enqueue(v + 1).map_err(|_| "ring full".to_string())?;
            let pci = guest.devices()[0].exposed_pci().join(",");
            Ok(format!(
                "ring grp in the group segment at {pci}: read {v:#x}, answered"
            ))
        })(),
    );
    // Guest to guest.
    rep.check(
        "vm-to-vm",
        (|| -> Result<String, String> {
            let a2b = Ring::<u64>::lookup(guest, "a2b").map_err(|e| e.to_string())?;
            let b2a = Ring::<u64>::lookup(guest, "b2a").map_err(|e| e.to_string())?;
            let t = Instant::now();
            let msgs: Vec<u64> = (1..=m as u64).collect();
            enqueue_all(&a2b, &msgs)?;
            let back = dequeue_n(&b2a, m)?;
            let expect: Vec<u64> = msgs.iter().map(|v| v + 1_000_000).collect();
            if back != expect {
                return Err(format!("b answered {:?}", &back[..back.len().min(4)]));
            }
            Ok(format!("{m} round trips with guest b in {:?}", t.elapsed()))
        })(),
    );
    hpet(rep, tsc_hz);
}

fn role_b(rep: &mut Report, guest: &GuestZones, m: usize) {
    rep.check(
        "vm-to-vm",
        (|| -> Result<String, String> {
            let a2b = Ring::<u64>::lookup(guest, "a2b").map_err(|e| e.to_string())?;
            let b2a = Ring::<u64>::lookup(guest, "b2a").map_err(|e| e.to_string())?;
            let mut n = 0;
            let deadline = Instant::now() + WAIT;
            let mut buf = [0u64; 32];
            while n < m {
                let k = a2b.dequeue_burst(&mut buf);
                for (i, v) in buf[..k].iter().enumerate() {
                    if *v != (n + i + 1) as u64 {
                        return Err(format!("message {} is {v}", n + i));
                    }
                }
                let replies: Vec<u64> = buf[..k].iter().map(|v| v + 1_000_000).collect();
                enqueue_all(&b2a, &replies)?;
                n += k;
                if k == 0 {
                    if Instant::now() > deadline {
                        return Err(format!("only {n} of {m} messages from guest a"));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Ok(format!("answered {m} messages from guest a"))
        })(),
    );
}

fn hpet(rep: &mut Report, host_tsc_hz: u64) {
    use tsc_hpet::Clock;
    rep.check(
        "hpet-vs-tsc",
        (|| -> Result<String, String> {
            let hpet = tsc_hpet::Hpet::open().map_err(|e| e.to_string())?;
            if hpet.period_fs() != 10_000_000 {
                return Err(format!(
                    "period {} fs, expected 10000000 (100 MHz)",
                    hpet.period_fs()
                ));
            }
            // The TSC at the host's frequency (under TCG, RDTSC reads the host's TSC), not at
            // one calibrated in here against the kernel's clock, which is the HPET itself.
            if host_tsc_hz == 0 {
                return Err("the host gave no TSC frequency (hugeshare.tsc_hz)".into());
            }
            let tsc = tsc_hpet::Tsc::with_hz(host_tsc_hz, tsc_hpet::FrequencySource::Calibrated)
                .map_err(|e| e.to_string())?;
            let clocksource = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_default();
            let over = Duration::from_millis(500);
            let cmp = tsc_hpet::compare(&hpet, &tsc, over);
            // Both come from the host (HPET: QEMU's virtual clock, CLOCK_MONOTONIC; TSC: the
            // host's counter at its calibrated rate): 1000 ppm tells a broken clock (wrong
            // period, stuck or wrapping counter) from a working one, with room for NTP slew.
            if cmp.agrees_within(1000.0) {
                Ok(format!(
                    "HPET {} Hz vs TSC at the host's {} Hz over {over:?}: {:.1} ppm (guest clocksource {})",
                    hpet.hz(),
                    tsc.hz(),
                    cmp.difference_ppm,
                    clocksource.trim()
                ))
            } else {
                Err(format!("{cmp:?}"))
            }
        })(),
    );
}

/// The host's word (offset 0) and the guest's word (offset 8) of the `ctl` memzone.
fn raw_words(z: &shmconfig::Zone) -> (u64, u64) {
    (
        ivshmem_meta::atomic_u64(z, 0).load(Ordering::Acquire),
        ivshmem_meta::atomic_u64(z, 8).load(Ordering::Acquire),
    )
}

fn set_guest_word(z: &shmconfig::Zone, v: u64) {
    ivshmem_meta::atomic_u64(z, 8).store(v, Ordering::Release);
}
