//! `client_server_mp`: a server distributing packets to K client processes by flow hash, as
//! DPDK's `client_server_mp` (`mp_server` and `mp_client`).
//!
//! ```text
//! client_server_mp --proc-type=primary   -l 0 --file-prefix=cs -- --role server --clients 2
//! client_server_mp --proc-type=secondary -l 1 --file-prefix=cs -- --role client --client-id 0
//! ```
//!
//! The server creates the packet pool `cs_pool`, one ring per client (`cs_rx_<i>`, object
//! indexes, single producer and single consumer) and the registry `cs_clients` in which each
//! client records its member slot. Its lcore thread is the synthetic source: it takes a burst of
//! objects from the pool, writes each a header with one of `--flows` flows' 5-tuple, hashes the
//! 5-tuple with CRC32-C ([`rte_hash_with_hash::Crc32c`]) to pick the client, and sends each
//! client its share (objects for a client that is not attached, or whose ring is full, are
//! freed and counted as drops, as DPDK's server does). A client's lcore thread receives its
//! packets, reads their headers and frees them to the pool through its lcore's cache.
//!
//! Output: the server prints `server: tx=[..] drop=[..] pool_in_use=U` every second, a client
//! `client I: rx=R rate=X.XX Mpps` every second (`--interval-ms` changes it).
//!
//! A client killed (SIGKILL) mid-run: the server keeps serving the others. The group's clean-up
//! returns the client's cache and the objects it held (the pool is tracked), and the server's
//! source thread drains the dead client's ring back to the pool, printing
//! `client I gone: drained K objects from cs_rx_I; pool in_use=U`. A new client may take the id.
//!
//! Server commands: `stop` stops the source, waits for live clients to empty their rings and
//! prints `STOPPED tx=T drop=D in_use_before_audit=B avail=A size=N in_use=U audit=[..]` (an
//! audit of every object, repairing the orphans a client killed between two steps of a receive
//! or put leaves: with the source stopped and clients idle, `in_use` is then 0: nothing was
//! lost, and the audit says how many orphans it put back); `start` resumes;
//! `stats`; `check` (`MOVING server delta=N moving=..`: packets sent, sampled 200 ms apart);
//! `quit` (or the end of input without `--seconds`) leaves. Client commands: `stats`, `check`
//! (`MOVING client=I delta=N moving=..`), `quit`.
//!
//! Options after `--`: `--role server|client`; server: `--clients K`, `--flows F` (1024),
//! `--burst B` (32), `--pool-size N` (16383), `--elt-size BYTES` (2048), `--cache N` (256),
//! `--ring-size N` (2048), `--no-track`; client: `--client-id I`; both: `--seconds S`,
//! `--interval-ms MS`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procctl::{Event, Process, Role};
use rte_hash_with_hash::{Crc32c, HashFn};
use rte_mempool::{Mempool, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags, SingleProducer};

use crate::{
    join, mpps, ready_line, retry, say, stdin_lines, AppArgs, Counter, ExampleError, FlowGen,
    PacketHeader, Registry, Result, Stop,
};

/// The pool's name.
pub const POOL: &str = "cs_pool";
/// The registry's name.
pub const REGISTRY: &str = "cs_clients";

/// The ring of client `i`.
pub fn ring_name(i: usize) -> String {
    format!("cs_rx_{i}")
}

const VALUE_OPTS: &[&str] = &[
    "--role",
    "--clients",
    "--client-id",
    "--flows",
    "--burst",
    "--pool-size",
    "--elt-size",
    "--cache",
    "--ring-size",
    "--seconds",
    "--interval-ms",
];

/// `client_server_mp --help`.
pub const USAGE: &str = "\
usage: client_server_mp [GROUP OPTIONS] -- --role server --clients K [OPTIONS]
       client_server_mp [GROUP OPTIONS] -- --role client --client-id I [OPTIONS]
A server spreading packets over K client processes by flow hash (DPDK's client_server_mp).
options (after `--`):
  --role server|client  which side this process is
  --clients K           server: the number of clients
  --flows F             server: the number of flows (default 1024)
  --burst B             server: packets per burst (default 32)
  --pool-size N         server: objects in the packet pool (default 16383)
  --elt-size BYTES      server: bytes per packet (default 2048)
  --cache N             server: per-lcore cache of the pool (default 256)
  --ring-size N         server: slots per client ring (default 2048)
  --no-track            server: an untracked pool
  --client-id I         client: this client's id, 0 to K-1
  --seconds S           stop after S seconds (default: at the end of input or on `quit`)
  --interval-ms MS      how often counters are printed (default 1000)";

/// Run `client_server_mp` (server or client, by `--role`); returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    if crate::help(&args, USAGE) {
        return 0;
    }
    crate::exit_code(|| {
        let (p, rest) = join(args)?;
        let a = AppArgs::parse(&rest, VALUE_OPTS, &["--no-track"])?;
        match a.value("--role") {
            Some("server") => server(p, a),
            Some("client") => client(p, a),
            other => Err(ExampleError::Args {
                option: "--role".into(),
                value: other.unwrap_or("").into(),
                why: "say --role server or --role client".into(),
            }),
        }
    })
}

struct ClientStats {
    tx: Counter,
    drop: Counter,
    /// Of `drop`: dropped because no live client had the id.
    unattached: Counter,
}

/// What the source thread shares with the main thread.
struct Shared {
    stats: Vec<ClientStats>,
    /// Set (member + 1) by the main thread when client `i`'s member died or left; the source
    /// thread frees its slot and drains its ring.
    died: Vec<AtomicU32>,
    /// The source runs while this is false.
    paused: AtomicBool,
    /// Set by the source thread when it has seen `paused` and holds no object.
    idle: AtomicBool,
}

fn server(p: Arc<Process>, a: AppArgs) -> Result<()> {
    if p.role() != Role::Primary {
        return Err(ExampleError::Args {
            option: "--role".into(),
            value: "server".into(),
            why: "the server creates the pool and rings: start it with --proc-type=primary".into(),
        });
    }
    let k: usize = a.num("--clients", 0)?;
    if k == 0 {
        return Err(ExampleError::Args {
            option: "--clients".into(),
            value: a.value("--clients").unwrap_or("").into(),
            why: "the server needs --clients K, K >= 1".into(),
        });
    }
    let flags = if a.flag("--no-track") {
        MempoolFlags::empty()
    } else {
        MempoolFlags::TRACK
    };
    let mp = Mempool::create(
        &*p,
        POOL,
        MempoolParams::new(a.num("--pool-size", 16383)?, a.num("--elt-size", 2048)?)
            .cache_size(a.num("--cache", 256)?)
            .flags(flags),
    )?;
    let ring_size: u32 = a.num("--ring-size", 2048)?;
    let rings: Vec<Ring<u32>> = (0..k)
        .map(|i| {
            Ring::<u32>::create(
                &*p,
                &ring_name(i),
                ring_size,
                RingFlags::SP_ENQ | RingFlags::SC_DEQ,
            )
        })
        .collect::<std::result::Result<_, _>>()?;
    let reg = Arc::new(Registry::create(&*p, REGISTRY, k)?);
    let flows: u32 = a.num("--flows", 1024)?;
    let burst: usize = a.num("--burst", 32usize)?.clamp(1, 256);
    let seconds: f64 = a.num("--seconds", 0.0)?;
    let interval = Duration::from_millis(a.num("--interval-ms", 1000u64)?.max(10));
    let shared = Arc::new(Shared {
        stats: (0..k)
            .map(|_| ClientStats {
                tx: Counter::default(),
                drop: Counter::default(),
                unattached: Counter::default(),
            })
            .collect(),
        died: (0..k).map(|_| AtomicU32::new(0)).collect(),
        paused: AtomicBool::new(false),
        idle: AtomicBool::new(false),
    });
    let lines = stdin_lines("mp_server > ");
    let stop = Stop::new();
    let source = {
        let (p, mp, rings, reg, shared, stop) = (
            p.clone(),
            mp.clone(),
            rings.clone(),
            reg.clone(),
            shared.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || source_loop(&p, &mp, &rings, &reg, &shared, flows, burst, &stop))
    };
    say(ready_line(&p));
    say(format!(
        "server: {k} clients, pool {POOL} ({} objects, tracked={}), {flows} flows, burst {burst}",
        mp.size(),
        mp.flags().contains(MempoolFlags::TRACK)
    ));
    let start = Instant::now();
    let mut next_print = Instant::now() + interval;
    let mut input_open = true;
    let line = |shared: &Shared, mp: &Mempool| {
        let tx: Vec<u64> = shared.stats.iter().map(|s| s.tx.get()).collect();
        let drop: Vec<u64> = shared.stats.iter().map(|s| s.drop.get()).collect();
        let unatt: Vec<u64> = shared.stats.iter().map(|s| s.unattached.get()).collect();
        format!(
            "server: tx={tx:?} drop={drop:?} (no client: {unatt:?}) pool_in_use={} avail={}",
            mp.in_use_count(),
            mp.avail_count()
        )
    };
    loop {
        if seconds > 0.0 && start.elapsed().as_secs_f64() >= seconds {
            break;
        }
        if input_open {
            match lines.try_recv() {
                Ok(l) => match l.trim() {
                    "quit" => break,
                    "stats" => say(line(&shared, &mp)),
                    "check" => say(crate::moving_line(
                        "server",
                        || shared.stats.iter().map(|s| s.tx.get()).sum(),
                        Duration::from_millis(200),
                    )),
                    "stop" => say(stop_and_audit(&p, &mp, &rings, &reg, &shared)),
                    "start" => {
                        shared.idle.store(false, Ordering::Release);
                        shared.paused.store(false, Ordering::Release);
                        say("OK started");
                    }
                    "" => {}
                    other => say(format!(
                        "ERR unknown command {other:?}; commands: stats | check | stop | start | quit"
                    )),
                },
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    input_open = false;
                    if seconds <= 0.0 {
                        break;
                    }
                }
            }
        }
        if let Some(e) = p.next_event(Duration::from_millis(20)) {
            // A client that died, or left without emptying its ring: the source thread gives
            // the objects in its ring back to the pool.
            note_event(&e, &reg, &shared);
        }
        if Instant::now() >= next_print {
            next_print += interval;
            say(line(&shared, &mp));
        }
    }
    stop.raise();
    let _ = source.join();
    say(format!("BYE {}", line(&shared, &mp)));
    Ok(())
}

/// Print an event; a client that died, or left without emptying its ring, is marked for the
/// source thread, which gives the objects in its ring back to the pool.
fn note_event(e: &Event, reg: &Registry, shared: &Shared) {
    if let Event::MemberDied { member, .. } | Event::MemberLeft { member, .. } = e {
        if let Some(i) = reg.slot_of(*member) {
            shared.died[i].store(member.0 as u32 + 1, Ordering::Release);
        }
    }
    say(crate::simple::event_line(e));
}

/// Pause the source, let live clients empty their rings, and account for every object.
fn stop_and_audit(
    p: &Process,
    mp: &Mempool,
    rings: &[Ring<u32>],
    reg: &Registry,
    shared: &Shared,
) -> String {
    shared.paused.store(true, Ordering::Release);
    // wait for the source to be idle (it holds nothing then) ...
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shared.idle.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // ... for live clients to empty their rings, and dead ones' rings to be drained
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline
        && (rings.iter().any(|r| r.count() > 0)
            || shared.died.iter().any(|d| d.load(Ordering::Acquire) != 0))
    {
        // A ring no client ever took keeps its objects (the audit counts them as in rings).
        // A ring whose client died or left is drained by the source thread once the event
        // arrives: wait for that.
        let all_stuck = rings
            .iter()
            .enumerate()
            .all(|(i, r)| r.count() == 0 || reg.member(i).is_none());
        if all_stuck && !shared.died.iter().any(|d| d.load(Ordering::Acquire) != 0) {
            break;
        }
        // the events that tell which clients left or died arrive here meanwhile
        if let Some(e) = p.next_event(Duration::from_millis(10)) {
            note_event(&e, reg, shared);
        }
    }
    // clients free what they received right away; give them a moment to finish a burst
    std::thread::sleep(Duration::from_millis(100));
    let _ = mp.recover_dead_members();
    let before = mp.in_use_count();
    // Orphans (objects a client killed between two steps of a receive or put left in no place)
    // are put back by the audit's repair: the pool is quiet now.
    let refs: Vec<&Ring<u32>> = rings.iter().collect();
    let audit = mp.audit(&refs, true);
    let tx: u64 = shared.stats.iter().map(|s| s.tx.get()).sum();
    let drop: u64 = shared.stats.iter().map(|s| s.drop.get()).sum();
    format!(
        "STOPPED tx={tx} drop={drop} in_use_before_audit={before} avail={} size={} in_use={} audit=[{audit}]",
        mp.avail_count(),
        mp.size(),
        mp.in_use_count()
    )
}

use shmconfig::{MemberId, Zones};

#[allow(clippy::too_many_arguments)]
fn source_loop(
    p: &Process,
    mp: &Mempool,
    rings: &[Ring<u32>],
    reg: &Registry,
    shared: &Shared,
    flows: u32,
    burst: usize,
    stop: &Stop,
) {
    let lcore = p.lcores().first().copied().unwrap_or(0);
    if let Err(e) = p.bind_thread(lcore) {
        say(format!("ERR binding the source to lcore {lcore}: {e}"));
    }
    let k = rings.len();
    // The source thread is the only producer of every client ring: it holds their producer
    // sides (the single-producer fast path, enforced by the rings) while it runs, and gives
    // them back while paused (the audit takes objects out of the rings and puts them back).
    let mut txs: Vec<SingleProducer<u32>> = Vec::new();
    let mut local = mp.local(p);
    let crc = Crc32c::new(0);
    let mut gen = FlowGen::new(flows, 0x1234_5678_9abc_def1, 0);
    let mut pkts = vec![Obj::empty(); burst];
    let mut per: Vec<Vec<Obj>> = (0..k).map(|_| Vec::with_capacity(burst)).collect();
    let mut attached = vec![false; k];
    let mut round = 0u32;
    while !stop.is_raised() {
        if round.is_multiple_of(64) {
            for i in 0..k {
                let d = shared.died[i].load(Ordering::Acquire);
                if d != 0 {
                    shared.died[i].store(0, Ordering::Release);
                    let gone = MemberId((d - 1) as u16);
                    // Drain only a ring no live client consumes (a new client may have taken
                    // the id already: then it empties the ring itself).
                    if reg.release_if(i, gone) || reg.member(i).is_none() {
                        let n = crate::drain_dead_ring(mp, &rings[i]);
                        say(format!(
                            "client {i} gone: drained {n} objects from {}; pool in_use={} avail={}",
                            ring_name(i),
                            mp.in_use_count(),
                            mp.avail_count()
                        ));
                    }
                }
                attached[i] = reg
                    .member(i)
                    .is_some_and(|m| p.member_state(m) == shmconfig::MemberState::Alive);
            }
        }
        if shared.paused.load(Ordering::Acquire) {
            txs.clear();
            local.flush();
            shared.idle.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(1));
            round = 0;
            continue;
        }
        if txs.is_empty() {
            match rings.iter().map(|r| r.single_producer()).collect() {
                Ok(v) => txs = v,
                Err(e) => {
                    say(format!("ERR the source cannot hold the client rings: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        shared.idle.store(false, Ordering::Relaxed);
        round = round.wrapping_add(1);
        if local.get_bulk(&mut pkts) == 0 {
            continue;
        }
        for o in &pkts {
            let h = gen.next_header();
            h.write(mp, *o);
            let c = (crc.hash(&h.flow.key()) as usize) % k;
            per[c].push(*o);
        }
        for (i, v) in per.iter_mut().enumerate() {
            if v.is_empty() {
                continue;
            }
            let sent = if attached[i] {
                local.send(&mut txs[i], v)
            } else {
                0
            };
            if sent < v.len() {
                local.put_bulk(&v[sent..]);
                shared.stats[i].drop.add((v.len() - sent) as u64);
                if !attached[i] {
                    shared.stats[i].unattached.add(v.len() as u64);
                }
            }
            shared.stats[i].tx.add(sent as u64);
            v.clear();
        }
    }
    local.flush();
}

fn client(p: Arc<Process>, a: AppArgs) -> Result<()> {
    let id: usize = a.num("--client-id", usize::MAX)?;
    let seconds: f64 = a.num("--seconds", 0.0)?;
    let interval = Duration::from_millis(a.num("--interval-ms", 1000u64)?.max(10));
    let (mp, reg) = retry(Duration::from_secs(5), || {
        Ok((
            Mempool::lookup(&*p, POOL)?,
            Registry::lookup(&*p, REGISTRY)?,
        ))
    })?;
    if id >= reg.len() {
        return Err(ExampleError::Args {
            option: "--client-id".into(),
            value: a.value("--client-id").unwrap_or("").into(),
            why: format!("the server serves clients 0..{}", reg.len()),
        });
    }
    let ring = Ring::<u32>::lookup(&*p, &ring_name(id))?;
    reg.claim(id, &*p)?;
    // This client is its ring's only consumer: hold the consumer side (the single-consumer fast
    // path). The server holds it for a moment while it drains the ring of a client that died
    // with this id: wait for that.
    let mut hold = retry(Duration::from_secs(5), || Ok(ring.single_consumer()?))?;
    let lines = stdin_lines("mp_client > ");
    let stop = Stop::new();
    let rx = Arc::new((Counter::default(), Counter::default()));
    let worker = {
        let (p, mp, stop, rx) = (p.clone(), mp.clone(), stop.clone(), rx.clone());
        std::thread::spawn(move || {
            let lcore = p.lcores().first().copied().unwrap_or(0);
            if let Err(e) = p.bind_thread(lcore) {
                say(format!("ERR binding to lcore {lcore}: {e}"));
            }
            let mut local = mp.local(&*p);
            let mut buf = vec![Obj::empty(); 64];
            let mut idle = 0u32;
            while !stop.is_raised() {
                let n = local.receive(&mut hold, &mut buf);
                if n == 0 {
                    idle += 1;
                    if idle > 1024 {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                idle = 0;
                let mut bytes = 0u64;
                for o in &buf[..n] {
                    bytes += PacketHeader::read(&mp, *o).len as u64;
                }
                local.put_bulk(&buf[..n]);
                rx.0.add(n as u64);
                rx.1.add(bytes);
            }
            local.flush();
        })
    };
    say(ready_line(&p));
    say(format!("client {id}: ring {}", ring_name(id)));
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut next_print = Instant::now() + interval;
    let mut input_open = true;
    loop {
        if seconds > 0.0 && start.elapsed().as_secs_f64() >= seconds {
            break;
        }
        if input_open {
            match lines.try_recv() {
                Ok(l) => match l.trim() {
                    "quit" | "stop" => break,
                    "stats" => say(format!(
                        "client {id}: rx={} bytes={}",
                        rx.0.get(),
                        rx.1.get()
                    )),
                    "check" => say(crate::moving_line(
                        &format!("client={id}"),
                        || rx.0.get(),
                        Duration::from_millis(200),
                    )),
                    "" => {}
                    other => say(format!(
                        "ERR unknown command {other:?}; commands: stats | check | quit"
                    )),
                },
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    input_open = false;
                    if seconds <= 0.0 {
                        break;
                    }
                }
            }
        }
        if let Some(e) = p.next_event(Duration::from_millis(20)) {
            say(crate::simple::event_line(&e));
        }
        if Instant::now() >= next_print {
            next_print += interval;
            let n = rx.0.get();
            say(format!(
                "client {id}: rx={n} rate={:.2} Mpps",
                mpps(n - last.1, last.0.elapsed())
            ));
            last = (Instant::now(), n);
        }
    }
    stop.raise();
    let _ = worker.join();
    say(format!(
        "FINAL client={id} rx={} avg_rate={:.2} Mpps",
        rx.0.get(),
        mpps(rx.0.get(), start.elapsed())
    ));
    Ok(())
}
