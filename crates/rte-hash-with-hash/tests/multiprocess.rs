//! Real processes sharing one table through a `/dev/shm` file (`tests/common`): this test binary
//! re-executes itself as a writer process and reader processes.
//!
//! * `writer_and_two_reader_processes`: readers never miss a key present for the whole run,
//!   nor see a value that was never stored, while the writer process adds, displaces, updates
//!   and deletes.
//! * `writer_killed_mid_operation_is_taken_over`: a writer process stops in the middle of an
//!   add, a displacement, a delete or an update, holding the lock; it is SIGKILLed; another
//!   process's writer takes the lock over, repairs, and the table is consistent.
//! * `writer_killed_holding_the_lock_is_taken_over_after_its_slot_is_reused`: the same, but a
//!   new process takes the dead writer's member slot before anyone writes: it is not the
//!   holder (another incarnation of the slot), and writers take the lock over promptly.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{shm_path, Cleanup, ShmZones};
use rte_hash_with_hash::{Crc32c, Hash, Params, StopAt};
use shmconfig::MemberId;

type Table = Hash<[u8; 16], [u64; 2], Crc32c>;
type Ctl = Hash<u32, u64, Crc32c>;

const ROLE: &str = "HUGESHARE_HASH_MP_ROLE";
const PATH: &str = "HUGESHARE_HASH_MP_PATH";
const MEMBER: &str = "HUGESHARE_HASH_MP_MEMBER";
/// Control-table key: readers stop when it is present.
const STOP: u32 = 1;
const STABLE: u64 = 1500;
const ENTRIES: u32 = 4096;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k
}

fn valid(i: u64, v: [u64; 2]) -> bool {
    v[0] == v[1] && (v[0] == i || v[0] == !i)
}

fn spawn(role: &str, path: &Path, member: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(PATH, path)
        .env(MEMBER, member.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Not a test by itself: the entry point of the re-executed child processes (does nothing
/// when run by the test harness directly).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH).unwrap());
    let member = MemberId(std::env::var(MEMBER).unwrap().parse().unwrap());
    let z = ShmZones::open(&path, member);
    let t: Table = Hash::lookup(&z, "mp", Crc32c::new(0)).unwrap();
    match role.as_str() {
        "writer" => writer(&t),
        "newcomer" => {
            println!("\nJOINED");
            std::thread::sleep(Duration::from_secs(120));
        }
        "reader" => reader(&t, &Hash::lookup(&z, "ctl", Crc32c::new(0)).unwrap()),
        other => die(&t, other.strip_prefix("die:").unwrap().parse().unwrap()),
    }
}

fn writer(t: &Table) {
    let run = Duration::from_millis(if cfg!(debug_assertions) { 1500 } else { 2500 });
    let start = Instant::now();
    let mut next = STABLE;
    let mut live = std::collections::VecDeque::new();
    let (mut adds, mut updates, mut round) = (0u64, 0u64, 0u64);
    while start.elapsed() < run {
        for _ in 0..64 {
            let k = key(next);
            if t.add_with_hash(&k, t.hash(&k), &[next, 0]).is_ok() {
                live.push_back(next);
                adds += 1;
            }
            next += 1;
            if t.count() > ENTRIES * 95 / 100 || live.len() > 2400 {
                for _ in 0..32 {
                    if let Some(d) = live.pop_front() {
                        let k = key(d);
                        assert!(t.delete_with_hash(&k, t.hash(&k)).is_some());
                    }
                }
            }
        }
        let i = round % STABLE;
        let k = key(i);
        let v = if (round / STABLE) % 2 == 0 {
            [!i, !i]
        } else {
            [i, i]
        };
        t.add_with_hash(&k, t.hash(&k), &v).unwrap();
        updates += 1;
        round += 1;
    }
    println!(
        "\nWRITER adds={adds} updates={updates} moves={}",
        t.debug_change_count()
    );
}

fn reader(t: &Table, ctl: &Ctl) {
    let keys: Vec<[u8; 16]> = (0..STABLE).map(key).collect();
    let hashes: Vec<u32> = keys.iter().map(|k| t.hash(k)).collect();
    let stop_hash = ctl.hash(&STOP);
    let mut out = [None; 16];
    let mut n = 0u64;
    let mut i = std::process::id() as usize;
    loop {
        if n % 1024 == 0 && ctl.lookup_with_hash(&STOP, stop_hash).is_some() {
            break;
        }
        let j = i % STABLE as usize;
        match t.lookup_data_with_hash(&keys[j], hashes[j]) {
            Some((_, v)) => assert!(valid(j as u64, v), "key {j}: value {v:?} never stored"),
            None => panic!("stable key {j} missed after {n} lookups"),
        }
        let b = j / 16 * 16;
        if b + 16 <= STABLE as usize {
            let hits = t.lookup_bulk_with_hash(&keys[b..b + 16], &hashes[b..b + 16], &mut out);
            assert_eq!(hits, 16, "bulk lookup missed a stable key");
        }
        n += 2;
        i += 1;
    }
    println!("\nREADER lookups={n}");
}

fn stop_kind(n: usize) -> StopAt {
    [
        StopAt::AfterSlotFill,
        StopAt::MidDisplacement,
        StopAt::MidDelete,
        StopAt::MidUpdate,
    ][n]
}

fn die(t: &Table, kind: usize) {
    let stop = stop_kind(kind);
    let stopped = match stop {
        StopAt::MidDelete => t.debug_delete_and_stop(&key(5), t.hash(&key(5)), stop),
        StopAt::MidUpdate => t.debug_add_and_stop(&key(5), t.hash(&key(5)), &[9, 9], stop),
        _ => (1_000_000..1_100_000u64).any(|i| {
            let k = key(i);
            t.debug_add_and_stop(&k, t.hash(&k), &[i, i], stop)
        }),
    };
    assert!(stopped, "{stop:?}: never stopped");
    println!("\nSTOPPED");
    std::thread::sleep(Duration::from_secs(120));
}

/// A child process killed (and reaped) when the test ends, also when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `child` prints `line` alone on a line.
fn wait_for_line(child: &mut Child, line: &str) -> bool {
    let out = child.stdout.take().unwrap();
    BufReader::new(out)
        .lines()
        .any(|l| l.map(|l| l.trim() == line).unwrap_or(false))
}

fn output_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn field(out: &str, line: &str, name: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?} line of:\n{out}"))
}

#[test]
fn writer_and_two_reader_processes() {
    let path = shm_path("rw");
    let _cleanup = Cleanup(path.clone(), 4);
    let z = ShmZones::create(&path, MemberId(0));
    let t: Table = Hash::create(&z, "mp", Params::new(ENTRIES), Crc32c::new(0)).unwrap();
    let ctl: Ctl = Hash::create(&z, "ctl", Params::new(8), Crc32c::new(0)).unwrap();
    for i in 0..STABLE {
        let k = key(i);
        t.add_with_hash(&k, t.hash(&k), &[i, i]).unwrap();
    }
    let readers: Vec<Child> = (2..4).map(|m| spawn("reader", &path, m)).collect();
    let writer = spawn("writer", &path, 1);
    let (ws, wout) = output_of(writer);
    ctl.add_with_hash(&STOP, ctl.hash(&STOP), &1).unwrap();
    let routs: Vec<_> = readers.into_iter().map(output_of).collect();
    assert!(ws.success(), "writer failed: {ws:?}\n{wout}");
    for (s, out) in &routs {
        assert!(s.success(), "reader failed: {s:?}\n{out}");
        assert!(field(out, "READER", "lookups") > 1000, "{out}");
    }
    let moves = field(&wout, "WRITER", "moves");
    eprintln!(
        "{}; readers: {}",
        wout.lines().find(|l| l.starts_with("WRITER")).unwrap(),
        routs
            .iter()
            .map(|(_, o)| field(o, "READER", "lookups").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        moves > 100,
        "only {moves} displacements: the run did not race moves"
    );
    t.check_consistency().unwrap();
    for i in 0..STABLE {
        let k = key(i);
        assert!(valid(i, t.lookup_data_with_hash(&k, t.hash(&k)).unwrap().1));
    }
}

/// Table "mp" of 64 entries in `z`, filled with keys `key(i)` (value `[i, i]`) until it holds at
/// least 56; returns it and the `i` of the keys it took.
fn nearly_full_table(z: &ShmZones) -> (Table, Vec<u64>) {
    let t: Table = Hash::create(z, "mp", Params::new(64), Crc32c::new(0)).unwrap();
    let mut keys = Vec::new();
    for i in 0..1000u64 {
        let k = key(i);
        if t.add_with_hash(&k, t.hash(&k), &[i, i]).is_ok() {
            keys.push(i);
        }
        if t.count() >= 56 {
            break;
        }
    }
    (t, keys)
}

#[test]
fn writer_killed_mid_operation_is_taken_over() {
    for kind in 0..4 {
        let stop = stop_kind(kind);
        let path = shm_path(&format!("kill{kind}"));
        let _cleanup = Cleanup(path.clone(), 2);
        let z = ShmZones::create(&path, MemberId(0));
        let (t, keys) = nearly_full_table(&z);
        assert!(keys.len() >= 56 && keys[..6] == [0, 1, 2, 3, 4, 5]);
        let mut child = spawn(&format!("die:{kind}"), &path, 1);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.any(|l| l.map(|l| l.trim() == "STOPPED").unwrap_or(false));
        assert!(ready, "{stop:?}: the child did not stop mid-operation");
        assert_eq!(t.debug_lock_holder(), Some(MemberId(1)), "{stop:?}");
        // Readers go on while the writer is stopped.
        for &i in &keys[6..] {
            let k = key(i);
            assert_eq!(
                t.lookup_data_with_hash(&k, t.hash(&k)).map(|x| x.1),
                Some([i, i])
            );
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{stop:?}: {status:?}");
        // Another process (this one) writes: it must take the lock over and repair.
        let t = Arc::new(t);
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = t.clone();
        std::thread::spawn(move || {
            let k = key(0);
            tx.send(t2.delete_with_hash(&k, t2.hash(&k))).unwrap();
        });
        let deleted = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{stop:?}: the dead writer's lock was never taken over"));
        assert!(deleted.is_some(), "{stop:?}");
        assert_eq!(t.debug_lock_holder(), None);
        t.check_consistency()
            .unwrap_or_else(|e| panic!("{stop:?}: inconsistent after take-over: {e}"));
        for &i in &keys[1..] {
            let k = key(i);
            let got = t.lookup_data_with_hash(&k, t.hash(&k)).map(|x| x.1);
            if i == 5 && stop == StopAt::MidDelete {
                assert_eq!(got, None, "the half-deleted key is gone");
            } else {
                assert_eq!(got, Some([i, i]), "{stop:?}: key {i}");
            }
        }
        // Still fully usable.
        let k = key(5000);
        let p = t.add_with_hash(&k, t.hash(&k), &[1, 1]).unwrap();
        assert_eq!(t.lookup_with_hash(&k, t.hash(&k)), Some(p));
    }
}

#[test]
fn writer_killed_holding_the_lock_is_taken_over_after_its_slot_is_reused() {
    for kind in [0, 1] {
        let stop = stop_kind(kind);
        let path = shm_path(&format!("reuse{kind}"));
        let _cleanup = Cleanup(path.clone(), 2);
        let z = ShmZones::create(&path, MemberId(0));
        let (t, keys) = nearly_full_table(&z);
        let before = t.count();
        let mut dying = KillOnDrop(spawn(&format!("die:{kind}"), &path, 1));
        assert!(
            wait_for_line(&mut dying.0, "STOPPED"),
            "{stop:?}: the child did not stop mid-operation"
        );
        assert_eq!(t.debug_lock_holder(), Some(MemberId(1)), "{stop:?}");
        dying.0.kill().unwrap();
        let status = dying.0.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{stop:?}: {status:?}");
        // A new process takes member slot 1 (free again: the dead one's lock went with it) and
        // stays: the lock word still names member 1, alive, but another process.
        let mut newcomer = KillOnDrop(spawn("newcomer", &path, 1));
        assert!(wait_for_line(&mut newcomer.0, "JOINED"), "{stop:?}");
        assert_eq!(t.debug_lock_holder(), Some(MemberId(1)), "{stop:?}");
        // This process writes: it must see that the holder is gone and take over promptly.
        let t = Arc::new(t);
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = t.clone();
        let started = Instant::now();
        let k0 = key(keys[0]);
        std::thread::spawn(move || {
            tx.send(t2.delete_with_hash(&k0, t2.hash(&k0))).unwrap();
        });
        let deleted = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            panic!("{stop:?}: the lock was never taken over once a newcomer had the dead writer's member slot")
        });
        let took = started.elapsed();
        assert!(deleted.is_some(), "{stop:?}");
        assert!(
            took < Duration::from_secs(2),
            "{stop:?}: take-over took {took:?}"
        );
        assert_eq!(t.debug_lock_holder(), None, "{stop:?}");
        t.check_consistency()
            .unwrap_or_else(|e| panic!("{stop:?}: inconsistent after take-over: {e}"));
        if stop == StopAt::AfterSlotFill {
            // (Before a displacing add stopped, the child's adds that did not displace went in.)
            assert_eq!(
                t.count(),
                before - 1,
                "{stop:?}: the half-added key is not in"
            );
        }
        for &i in &keys[1..] {
            let k = key(i);
            assert_eq!(
                t.lookup_data_with_hash(&k, t.hash(&k)).map(|x| x.1),
                Some([i, i]),
                "{stop:?}: key {i}"
            );
        }
        drop(newcomer);
    }
}
