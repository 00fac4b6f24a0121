//! `symmetric_mp`: N peer processes, each running the same loop on its own queue, as DPDK's
//! `symmetric_mp`.
//!
//! ```text
//! symmetric_mp --proc-type=primary   -l 0 --file-prefix=sym -- --num-procs 2 --proc-id 0
//! symmetric_mp --proc-type=secondary -l 1 --file-prefix=sym -- --num-procs 2 --proc-id 1
//! ```
//!
//! The primary creates the packet pool `sym_pool`, one queue (`sym_q_<i>`, a ring of object
//! indexes) per peer and the registry `sym_procs` in which each peer records its member slot.
//! Each peer's lcore thread runs, burst after burst, what DPDK's `net_null` device and the
//! sample's forwarding loop do per packet: take an object from the pool (through the lcore's
//! cache), write a small header ([`crate::PacketHeader`]), hand it on through the peer's queue,
//! take it out, check it (sequence numbers must follow each other: nothing lost, nothing
//! duplicated) and free it.
//!
//! Every `--interval-ms` (default 1000) a peer prints
//! `proc I: rx=R tx=T drop=D alloc_fail=F seq_errors=E rate=X.XX Mpps pool_in_use=U`.
//! A peer killed with SIGKILL does not stop the others: the pool's clean-up returns its cache
//! (and, in a tracked pool, the objects it held) and the first survivor to notice drains its
//! queue back into the pool, printing `peer J (member M) died: drained K objects ...`.
//! On `quit` (or the end of input without `--seconds`, or after `--seconds`) a peer stops and
//! prints `FINAL proc=I tx=T rx=R drop=D seq_errors=E balanced=true|false pool_in_use=U
//! audit=[..]`; the last peer of the group audits the quiet pool first (repairing orphans that a
//! peer killed between two steps of a get, put or transfer leaves), so its `pool_in_use` is 0
//! when nothing was lost.
//!
//! Options after `--`: `--num-procs N`, `--proc-id I`, `--seconds S`, `--burst B` (32),
//! `--pool-size N` (8191), `--elt-size BYTES` (2048), `--cache N` (256), `--ring-size N` (1024),
//! `--interval-ms MS`, `--no-track` (an untracked pool: faster; a dead peer's held objects are
//! then not returned, only its cache).

use std::sync::Arc;
use std::time::{Duration, Instant};

use procctl::{Event, Process, Role};
use rte_mempool::{Mempool, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags, SingleConsumer, SingleProducer};
use shmconfig::Zones;

use crate::{
    join, mpps, ready_line, retry, say, stdin_lines, AppArgs, Counter, ExampleError, FlowGen,
    PacketHeader, Registry, Result, Stop,
};

/// The pool's name.
pub const POOL: &str = "sym_pool";
/// The registry's name.
pub const REGISTRY: &str = "sym_procs";

/// The queue of peer `i`.
pub fn queue_name(i: usize) -> String {
    format!("sym_q_{i}")
}

#[derive(Debug, Default)]
struct Counters {
    tx: Counter,
    rx: Counter,
    drop: Counter,
    alloc_fail: Counter,
    seq_errors: Counter,
}

/// Run `symmetric_mp`; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    if crate::help(&args, USAGE) {
        return 0;
    }
    crate::exit_code(|| run(args))
}

/// `symmetric_mp --help`.
pub const USAGE: &str = "\
usage: symmetric_mp [GROUP OPTIONS] -- --num-procs N --proc-id I [OPTIONS]
N peers, each forwarding packets through its own queue (DPDK's symmetric_mp).
options (after `--`):
  --num-procs N      the number of peers (N >= 1)
  --proc-id I        this peer's id, 0 to N-1
  --seconds S        stop after S seconds (default: at the end of input or on `quit`)
  --burst B          packets per burst, 1 to 256 (default 32)
  --pool-size N      objects in the packet pool (default 8191)
  --elt-size BYTES   bytes per packet (default 2048)
  --cache N          per-lcore cache of the pool (default 256)
  --ring-size N      slots per queue (default 1024)
  --interval-ms MS   how often a peer prints its counters (default 1000)
  --no-track         an untracked pool (faster; a dead peer's held objects are not returned)";

fn run(args: Vec<String>) -> Result<()> {
    let (p, rest) = join(args)?;
    let a = AppArgs::parse(
        &rest,
        &[
            "--num-procs",
            "--proc-id",
            "--seconds",
            "--burst",
            "--pool-size",
            "--elt-size",
            "--cache",
            "--ring-size",
            "--interval-ms",
        ],
        &["--no-track"],
    )?;
    let nprocs: usize = a.num("--num-procs", 0)?;
    let me: usize = a.num("--proc-id", usize::MAX)?;
    if nprocs == 0 || me >= nprocs {
        return Err(ExampleError::Args {
            option: "--num-procs/--proc-id".into(),
            value: format!("{nprocs}/{me}"),
            why: "give --num-procs N (N >= 1) and --proc-id I with I < N".into(),
        });
    }
    let burst: usize = a.num("--burst", 32usize)?.clamp(1, 256);
    let seconds: f64 = a.num("--seconds", 0.0)?;
    let interval = Duration::from_millis(a.num("--interval-ms", 1000u64)?.max(10));
    let (mp, reg) = if p.role() == Role::Primary {
        let flags = if a.flag("--no-track") {
            MempoolFlags::empty()
        } else {
            MempoolFlags::TRACK
        };
        let mp = Mempool::create(
            &*p,
            POOL,
            MempoolParams::new(a.num("--pool-size", 8191)?, a.num("--elt-size", 2048)?)
                .cache_size(a.num("--cache", 256)?)
                .flags(flags),
        )?;
        let ring_size = a.num("--ring-size", 1024u32)?;
        for i in 0..nprocs {
            Ring::<u32>::create(
                &*p,
                &queue_name(i),
                ring_size,
                RingFlags::SP_ENQ | RingFlags::SC_DEQ,
            )?;
        }
        (mp, Registry::create(&*p, REGISTRY, nprocs)?)
    } else {
        retry(Duration::from_secs(5), || {
            Ok((
                Mempool::lookup(&*p, POOL)?,
                Registry::lookup(&*p, REGISTRY)?,
            ))
        })?
    };
    if reg.len() != nprocs {
        return Err(ExampleError::Args {
            option: "--num-procs".into(),
            value: nprocs.to_string(),
            why: format!("the primary was started with --num-procs {}", reg.len()),
        });
    }
    let queues: Vec<Ring<u32>> = (0..nprocs)
        .map(|i| {
            retry(Duration::from_secs(5), || {
                Ok(Ring::<u32>::lookup(&*p, &queue_name(i))?)
            })
        })
        .collect::<Result<_>>()?;
    reg.claim(me, &*p)?;
    // This peer is its queue's only producer and consumer: hold both sides (the single-member
    // fast paths). A survivor holds the consumer side for a moment while it drains the queue of
    // a peer that died with this id: wait for that.
    let tx = retry(Duration::from_secs(5), || Ok(queues[me].single_producer()?))?;
    let rx = retry(Duration::from_secs(5), || Ok(queues[me].single_consumer()?))?;
    let lines = stdin_lines("symmetric_mp > ");
    let stop = Stop::new();
    let counters = Arc::new(Counters::default());
    let worker = {
        let (p, mp, stop, c) = (p.clone(), mp.clone(), stop.clone(), counters.clone());
        std::thread::spawn(move || forward_loop(&p, &mp, (tx, rx), me, burst, &stop, &c))
    };
    say(ready_line(&p));
    say(format!(
        "proc {me} of {nprocs}: queue {} pool {} ({} objects, tracked={})",
        queue_name(me),
        POOL,
        mp.size(),
        mp.flags().contains(MempoolFlags::TRACK)
    ));
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
                Ok(l) if l.trim() == "quit" || l.trim() == "stop" => break,
                Ok(l) if l.trim() == "stats" => say(status(me, &counters, &mp, None)),
                Ok(l) if l.trim() == "check" => say(crate::moving_line(
                    &format!("proc={me}"),
                    || counters.rx.get(),
                    Duration::from_millis(200),
                )),
                Ok(l) if l.trim().is_empty() => {}
                Ok(l) => say(format!(
                    "ERR unknown command {l:?}; commands: stats | check | quit"
                )),
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
            if let Event::MemberDied { member, .. } = &e {
                if let Some(j) = reg.slot_of(*member) {
                    if j != me && reg.release_if(j, *member) {
                        let n = crate::drain_dead_ring(&mp, &queues[j]);
                        say(format!(
                            "peer {j} (member {}) died: drained {n} objects from its queue {}; pool in_use={} avail={}",
                            member.0,
                            queue_name(j),
                            mp.in_use_count(),
                            mp.avail_count()
                        ));
                    }
                }
            }
            say(crate::simple::event_line(&e));
        }
        if Instant::now() >= next_print {
            next_print += interval;
            let rx = counters.rx.get();
            let rate = mpps(rx - last.1, last.0.elapsed());
            last = (Instant::now(), rx);
            say(status(me, &counters, &mp, Some(rate)));
        }
    }
    stop.raise();
    let _ = worker.join();
    let c = &counters;
    // The last peer out accounts for every object of the quiet pool: in the pool, in a queue,
    // or an orphan left by a peer killed between two steps of a get, put or transfer (which
    // the audit's repair puts back; see rte_mempool's "Dead members").
    let others_alive = p
        .tables()
        .occupied_members()
        .into_iter()
        .any(|m| m != p.member() && p.member_state(m) == shmconfig::MemberState::Alive);
    let audit = if others_alive {
        "skipped (other peers still run)".to_string()
    } else {
        let _ = mp.recover_dead_members();
        let refs: Vec<&Ring<u32>> = queues.iter().collect();
        mp.audit(&refs, true).to_string()
    };
    say(format!(
        "FINAL proc={me} tx={} rx={} drop={} alloc_fail={} seq_errors={} balanced={} avg_rate={:.2} Mpps pool_in_use={} audit=[{audit}]",
        c.tx.get(),
        c.rx.get(),
        c.drop.get(),
        c.alloc_fail.get(),
        c.seq_errors.get(),
        c.tx.get() == c.rx.get(),
        mpps(c.rx.get(), start.elapsed()),
        mp.in_use_count()
    ));
    let _ = reg.release_if(me, p.member());
    Ok(())
}

fn status(me: usize, c: &Counters, mp: &Mempool, rate: Option<f64>) -> String {
    format!(
        "proc {me}: rx={} tx={} drop={} alloc_fail={} seq_errors={} rate={:.2} Mpps pool_in_use={}",
        c.rx.get(),
        c.tx.get(),
        c.drop.get(),
        c.alloc_fail.get(),
        c.seq_errors.get(),
        rate.unwrap_or(0.0),
        mp.in_use_count()
    )
}

fn forward_loop(
    p: &Process,
    mp: &Mempool,
    (mut tx, mut rx): (SingleProducer<u32>, SingleConsumer<u32>),
    me: usize,
    burst: usize,
    stop: &Stop,
    c: &Counters,
) {
    let lcore = p.lcores().first().copied().unwrap_or(0);
    if let Err(e) = p.bind_thread(lcore) {
        say(format!("ERR binding to lcore {lcore}: {e}"));
    }
    let mut local = mp.local(p);
    let mut gen = FlowGen::new(1024, 0x5eed ^ ((me as u64) << 20), me as u16);
    let mut expect = 1u64;
    let mut pkts = vec![Obj::empty(); burst];
    let mut out = vec![Obj::empty(); burst];
    loop {
        let last_round = stop.is_raised();
        if !last_round {
            // rx: what the null device does per packet
            if local.get_bulk(&mut pkts) == 0 {
                c.alloc_fail.add(burst as u64);
            } else {
                for o in &pkts {
                    gen.next_header().write(mp, *o);
                }
                // hand on through this peer's queue
                let sent = local.send(&mut tx, &pkts);
                if sent < burst {
                    local.put_bulk(&pkts[sent..]);
                    gen.rewind((burst - sent) as u64);
                    c.drop.add((burst - sent) as u64);
                }
                c.tx.add(sent as u64);
            }
        }
        // consume and free
        let n = local.receive(&mut rx, &mut out);
        let mut bad = 0;
        for o in &out[..n] {
            let h = PacketHeader::read(mp, *o);
            if h.seq != expect || h.port != me as u16 {
                bad += 1;
            }
            expect = h.seq + 1;
        }
        local.put_bulk(&out[..n]);
        c.rx.add(n as u64);
        if bad > 0 {
            c.seq_errors.add(bad);
        }
        if last_round && n == 0 {
            break;
        }
    }
    local.flush();
}
