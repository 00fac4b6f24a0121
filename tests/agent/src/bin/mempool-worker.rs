//! `mempool-worker`: a group member that runs mempool traffic, for the `test-mp` mempool
//! scenarios (a SIGKILLed member loses nothing; no object is handed out twice).
//!
//! Started with EAL-style arguments; prints `READY role=... member=... lcores=[..]`, then obeys
//! line commands on stdin:
//!
//! | command | answer |
//! |---|---|
//! | `create NAME N ELT CACHE [track]` | `OK` (the pool, and a transfer ring `NAME-link`) |
//! | `start NAME` | `OK lcore=L` (a thread bound to this process's first lcore runs traffic) |
//! | `stop` | `STOPPED ops=.. gets=.. puts=.. sent=.. received=.. dups=D` |
//! | `audit NAME` | `AUDIT <report> stats=..` (recover, audit with repair; the pool must be quiet) |
//! | `drain NAME` | `DRAINED avail=A total=N full=B` (objects in the link ring back to the pool) |
//! | `exit` | leaves cleanly |
//!
//! Traffic: random bulk gets (1..=32) through the lcore's cache, puts, sends of held objects
//! through the link ring and receives from it. Each object's first 8 bytes hold a stamp: the
//! holder (member and pid) or "in transit"; a holder checks its stamp is intact before it puts or
//! sends an object, and a receiver checks it received an object in transit, so an object handed
//! out twice is seen (`dups`), besides the pool's own violation counter.
#![deny(unsafe_code)]

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use procctl::Process;
use rte_mempool::{Mempool, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags};
use shmconfig::Zones;

#[allow(unsafe_code)]
mod raw {
    use std::sync::atomic::AtomicU64;

    /// The stamp word at the start of an object (objects are at least 8 bytes, 64-aligned).
    pub fn stamp(mp: &rte_mempool::Mempool, o: rte_mempool::Obj) -> &AtomicU64 {
        assert!(mp.index_of(o).is_some() && mp.elt_size() >= 8);
        // SAFETY: `o` is an object of `mp` (checked): 8-aligned (strides are multiples of 8
        // from a 64-aligned start) with at least 8 bytes (checked), in a zone `mp` keeps mapped
        // for the borrow's lifetime. Only atomics touch the word.
        unsafe { AtomicU64::from_ptr(o.as_ptr().cast()) }
    }
}

const TRANSIT: u64 = 1 << 63;

struct Traffic {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<String>,
}

fn run_traffic(p: Arc<Process>, name: String, stop: Arc<AtomicBool>) -> Result<String, String> {
    let lcore = *p.lcores().first().ok_or("this process owns no lcore")?;
    p.bind_thread(lcore).map_err(|e| e.to_string())?;
    let mp = Mempool::lookup(&*p, &name).map_err(|e| e.to_string())?;
    let link = Ring::<u32>::lookup(&*p, &format!("{name}-link")).map_err(|e| e.to_string())?;
    let mut local = mp.local(&*p);
    let me = ((p.member().0 as u64) << 32) | std::process::id() as u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((std::process::id() as u64) << 17);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut held: Vec<Obj> = Vec::new();
    let mut buf = vec![Obj::empty(); 32];
    let (mut ops, mut gets, mut puts, mut sent, mut received, mut dups) = (0u64, 0, 0, 0, 0, 0);
    let check_release = |objs: &[Obj], new: u64, dups: &mut u64| {
        for o in objs {
            if raw::stamp(&mp, *o)
                .compare_exchange(me, new, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                *dups += 1;
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        let r = next();
        let k = (r >> 8) as usize % 32 + 1;
        match r % 8 {
            0..=2 => {
                if local.get_bulk(&mut buf[..k]) == k {
                    for o in &buf[..k] {
                        raw::stamp(&mp, *o).swap(me, Ordering::AcqRel);
                    }
                    held.extend_from_slice(&buf[..k]);
                    gets += k as u64;
                }
            }
            3 | 4 => {
                let k = k.min(held.len());
                let at = held.len() - k;
                check_release(&held[at..], 0, &mut dups);
                local.put_bulk(&held[at..]);
                held.truncate(at);
                puts += k as u64;
            }
            5 => {
                let k = k.min(held.len());
                let at = held.len() - k;
                check_release(&held[at..], TRANSIT | me, &mut dups);
                if local.send(&link, &held[at..]) == k {
                    held.truncate(at);
                    sent += k as u64;
                } else {
                    for o in &held[at..] {
                        raw::stamp(&mp, *o).store(me, Ordering::Release);
                    }
                }
            }
            6 => {
                let n = local.receive(&link, &mut buf[..k]);
                for o in &buf[..n] {
                    if raw::stamp(&mp, *o).swap(me, Ordering::AcqRel) & TRANSIT == 0 {
                        dups += 1;
                    }
                }
                held.extend_from_slice(&buf[..n]);
                received += n as u64;
            }
            _ => {
                if held.len() > 256 {
                    let at = held.len() / 2;
                    check_release(&held[at..], 0, &mut dups);
                    local.put_bulk(&held[at..]);
                    puts += (held.len() - at) as u64;
                    held.truncate(at);
                }
            }
        }
    }
    check_release(&held, 0, &mut dups);
    local.put_bulk(&held);
    puts += held.len() as u64;
    Ok(format!(
        "STOPPED ops={ops} gets={gets} puts={puts} sent={sent} received={received} dups={dups} violations={}",
        mp.stats().violations
    ))
}

fn run(p: &Arc<Process>, traffic: &mut Option<Traffic>, line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["create", name, n, elt, cache, rest @ ..] => {
            let parse = |s: &str| {
                s.parse::<u32>()
                    .map_err(|e| format!("ERR bad number {s:?}: {e}"))
            };
            let (n, elt, cache) = match (parse(n), parse(elt), parse(cache)) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
            };
            let flags = if rest.contains(&"track") {
                MempoolFlags::TRACK
            } else {
                MempoolFlags::empty()
            };
            let params = MempoolParams::new(n, elt.max(8))
                .cache_size(cache)
                .flags(flags);
            if let Err(e) = Mempool::create(&**p, name, params) {
                return format!("ERR {e}");
            }
            match Ring::<u32>::create(&**p, &format!("{name}-link"), n, RingFlags::EXACT_SZ) {
                Ok(_) => "OK".into(),
                Err(e) => format!("ERR {e}"),
            }
        }
        ["start", name] => {
            if traffic.is_some() {
                return "ERR traffic runs already".into();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (p2, s2, n2) = (p.clone(), stop.clone(), name.to_string());
            let handle = std::thread::spawn(move || {
                run_traffic(p2, n2, s2).unwrap_or_else(|e| format!("ERR {e}"))
            });
            *traffic = Some(Traffic { stop, handle });
            format!("OK lcore={:?}", p.lcores().first())
        }
        ["stop"] => match traffic.take() {
            Some(t) => {
                t.stop.store(true, Ordering::Relaxed);
                t.handle
                    .join()
                    .unwrap_or_else(|_| "ERR traffic thread panicked".into())
            }
            None => "ERR no traffic".into(),
        },
        ["audit", name] => {
            let mp = match Mempool::lookup(&**p, name) {
                Ok(m) => m,
                Err(e) => return format!("ERR {e}"),
            };
            let link = match Ring::<u32>::lookup(&**p, &format!("{name}-link")) {
                Ok(r) => r,
                Err(e) => return format!("ERR {e}"),
            };
            let rec = mp.recover_dead_members();
            let a = mp.audit(&[&link], true);
            let s = mp.stats();
            format!(
                "AUDIT {a} recovered_now=[{rec}] stats=[caches_flushed={} cache_objs_flushed={} reclaimed={} repaired={} ring_abandoned_put={} ring_abandoned_get={}]",
                s.caches_flushed, s.cache_objs_flushed, s.reclaimed, s.repaired, s.ring_abandoned_put, s.ring_abandoned_get
            )
        }
        ["drain", name] => {
            let mp = match Mempool::lookup(&**p, name) {
                Ok(m) => m,
                Err(e) => return format!("ERR {e}"),
            };
            let link = match Ring::<u32>::lookup(&**p, &format!("{name}-link")) {
                Ok(r) => r,
                Err(e) => return format!("ERR {e}"),
            };
            let mut buf = vec![Obj::empty(); 64];
            loop {
                let n = mp.receive(&link, &mut buf);
                if n == 0 {
                    break;
                }
                for o in &buf[..n] {
                    raw::stamp(&mp, *o).store(0, Ordering::Release);
                }
                mp.put_bulk(&buf[..n]);
            }
            format!(
                "DRAINED avail={} total={} full={} violations={}",
                mp.avail_count(),
                mp.size(),
                mp.is_full(),
                mp.stats().violations
            )
        }
        _ => format!("ERR unknown command {line:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let p = match Process::from_args(args) {
        Ok((p, _)) => Arc::new(p),
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "READY role={} member={} pid={} lcores={:?}",
        p.role(),
        p.member().0,
        std::process::id(),
        p.lcores()
    );
    let _ = out.flush();
    let mut traffic = None;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            break;
        }
        let answer = run(&p, &mut traffic, line);
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    if let Some(t) = traffic.take() {
        t.stop.store(true, Ordering::Relaxed);
        let _ = t.handle.join();
    }
    drop(p);
    let _ = writeln!(out, "BYE");
}
