//! `hash-worker`: one writer and several readers on one `rte-hash-with-hash` table, as separate
//! processes, for `cargo xtask test-mp`.
//!
//! `hash-worker <group options> -- <role> ...`:
//! * `create TABLE ENTRIES STABLE` — creates the table, adds keys `0..STABLE` (the stable keys,
//!   present for the whole run), prints `READY`, then serves commands on stdin (below);
//! * `write TABLE STABLE MILLIS` — for MILLIS ms, fills the rest of the table with other keys until
//!   it is full (forcing cuckoo displacements of the stable keys), deletes them, and again;
//! * `read TABLE STABLE MILLIS` — for MILLIS ms, looks every stable key up (single and bulk);
//!   a miss, or a wrong value, is a failure;
//! * `die TABLE` — starts adding a key and stops once its key slot is filled, holding the
//!   writer lock (as a writer killed there would), prints `READY stopped member=ID`, then waits
//!   to be killed;
//! * `idle TABLE STABLE` — opens the table, prints `READY member=ID` (the member slot the group
//!   gave it), then serves commands on stdin.
//!
//! Commands (`create` and `idle`): `check` — adds and deletes a key of its own, failing if the
//! writer lock took more than 2 s to get, then checks the table (consistent, exactly the STABLE
//! stable keys, each with its value) and prints `RESULT ok lock_ms=N count=N`; `exit` (or the
//! end of stdin) — exits.
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use hugeshare_agent::fail;
use procctl::Process;
use rte_hash_with_hash::{Crc32c, Hash, Params, StopAt};
use shmconfig::Zones;

type Table = Hash<u64, u64, Crc32c>;

fn value_of(k: u64) -> u64 {
    k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabcd
}

/// Serve `check` and `exit` on stdin (see the module documentation).
fn serve(t: &Table, stable: u64) {
    let mut line = String::new();
    let mut checks = 0u64;
    while std::io::stdin()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        match line.trim() {
            "exit" => return,
            "check" => {
                checks += 1;
                check(t, stable, (u64::from(std::process::id()) << 32) | checks);
            }
            "" => {}
            other => fail(&format!("unknown command {other:?}")),
        }
        line.clear();
    }
}

/// Add and delete key `k` (not a stable key), timing the wait for the writer lock, then check
/// the table holds exactly the stable keys, consistently.
fn check(t: &Table, stable: u64, k: u64) {
    let start = Instant::now();
    let w = t.writer();
    let lock = start.elapsed();
    w.add_with_hash(&k, t.hash(&k), &value_of(k))
        .unwrap_or_else(|_| fail("table full"));
    drop(w);
    if lock > Duration::from_secs(2) {
        fail(&format!("the writer lock took {lock:?} to get"));
    }
    if t.delete_with_hash(&k, t.hash(&k)).is_none() {
        fail(&format!("key {k} just added is missing"));
    }
    if let Err(e) = t.check_consistency() {
        fail(&format!("inconsistent table: {e}"));
    }
    if u64::from(t.count()) != stable {
        fail(&format!(
            "count is {}, expected the {stable} stable keys",
            t.count()
        ));
    }
    for k in 0..stable {
        match t.lookup_data_with_hash(&k, t.hash(&k)) {
            Some((_, v)) if v == value_of(k) => {}
            other => fail(&format!("stable key {k}: {other:?}")),
        }
    }
    println!("RESULT ok lock_ms={} count={}", lock.as_millis(), t.count());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (p, rest) = Process::from_args(args).unwrap_or_else(|e| fail(&format!("{e}")));
    let rest = hugeshare_agent::RoleArgs(rest);
    let arg = |i: usize| rest.arg(i);
    let num = |i: usize| rest.num(i);
    let hasher = Crc32c::new(7);
    match arg(0).as_str() {
        "create" => {
            let (name, entries, stable) = (arg(1), num(2) as u32, num(3));
            let t = Table::create(&p, &name, Params::new(entries), hasher)
                .unwrap_or_else(|e| fail(&format!("{e}")));
            for k in 0..stable {
                t.add_with_hash(&k, t.hash(&k), &value_of(k))
                    .unwrap_or_else(|_| fail("table full while adding stable keys"));
            }
            println!("READY created {name} with {stable} stable keys");
            serve(&t, stable);
        }
        "die" => {
            let t = Table::lookup(&p, &arg(1), hasher).unwrap_or_else(|e| fail(&format!("{e}")));
            let k = 1u64 << 40;
            if !t.debug_add_and_stop(&k, t.hash(&k), &value_of(k), StopAt::AfterSlotFill) {
                fail("the add did not stop after filling its key slot");
            }
            println!("READY stopped member={}", p.member().0);
            hugeshare_agent::wait_for_exit();
        }
        "idle" => {
            let (name, stable) = (arg(1), num(2));
            let t = Table::lookup(&p, &name, hasher).unwrap_or_else(|e| fail(&format!("{e}")));
            println!("READY member={}", p.member().0);
            serve(&t, stable);
        }
        "write" => {
            let (name, stable, ms) = (arg(1), num(2), num(3));
            let t = Table::lookup(&p, &name, hasher).unwrap_or_else(|e| fail(&format!("{e}")));
            println!("READY writer");
            let end = Instant::now() + Duration::from_millis(ms);
            let (mut rounds, mut added) = (0u64, 0u64);
            let mut next = 1u64 << 32;
            while Instant::now() < end {
                let mut mine = Vec::new();
                loop {
                    let k = next;
                    next += 1;
                    match t.add_with_hash(&k, t.hash(&k), &value_of(k)) {
                        Ok(_) => mine.push(k),
                        Err(_) => break,
                    }
                    if mine.len() > 1 << 20 {
                        fail("the table never filled up");
                    }
                }
                added += mine.len() as u64;
                for k in mine {
                    if t.delete_with_hash(&k, t.hash(&k)).is_none() {
                        fail(&format!("key {k} that the writer added is missing"));
                    }
                }
                rounds += 1;
            }
            if t.count() as u64 != stable {
                fail(&format!(
                    "count is {}, expected the {stable} stable keys",
                    t.count()
                ));
            }
            println!("RESULT ok rounds={rounds} added_and_deleted={added}");
        }
        "read" => {
            let (name, stable, ms) = (arg(1), num(2), num(3));
            let t = Table::lookup(&p, &name, hasher).unwrap_or_else(|e| fail(&format!("{e}")));
            println!("READY reader");
            let end = Instant::now() + Duration::from_millis(ms);
            let (mut lookups, mut misses) = (0u64, 0u64);
            let keys: Vec<u64> = (0..stable).collect();
            let hashes: Vec<u32> = keys.iter().map(|k| t.hash(k)).collect();
            while Instant::now() < end {
                for (k, h) in keys.iter().zip(&hashes) {
                    match t.lookup_data_with_hash(k, *h) {
                        Some((_, v)) if v == value_of(*k) => {}
                        Some((_, v)) => fail(&format!("key {k} has value {v:#x}")),
                        None => misses += 1,
                    }
                    lookups += 1;
                }
            }
            if misses > 0 {
                fail(&format!(
                    "{misses} of {lookups} lookups missed a key present for the whole run"
                ));
            }
            println!("RESULT ok lookups={lookups} misses=0");
        }
        other => fail(&format!("unknown role {other:?}")),
    }
}
