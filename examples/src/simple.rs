//! `simple_mp`: a primary and a secondary passing text messages, as DPDK's `simple_mp`.
//!
//! The primary creates two rings (`PRI_2_SEC`, `SEC_2_PRI`) and a pool of message buffers
//! (`MSG_POOL`, tracked, so a member killed while holding a message does not lose it); the
//! secondary looks them up. Each process runs a receiver thread on its lcore that takes messages
//! from its incoming ring, prints `core N: Received '<text>'` and returns the buffer to the pool.
//! The main thread reads commands (a terminal prompt, or lines from a pipe):
//!
//! | command | effect |
//! |---|---|
//! | `send <text>` | put `<text>` in a buffer and send it to the other process |
//! | `sendn <count> <text>` | send `<text> 1` .. `<text> <count>` (non-interactive tests) |
//! | `stats` | `STATS sent=S received=R pool_avail=A pool_size=N` |
//! | `help` | the commands |
//! | `quit` | leave (also at the end of input) |
//!
//! Group events (members joining, leaving, dying) are printed as `EVENT ...` lines.
//!
//! ```text
//! simple_mp --proc-type=primary --file-prefix=demo
//! simple_mp --proc-type=secondary --file-prefix=demo
//! simple_mp > send hello
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procctl::{Event, Process, Role};
use rte_mempool::{Mempool, MempoolFlags, MempoolParams, Obj};
use rte_ring::{Ring, RingFlags};

use crate::{join, read_text, ready_line, retry, say, stdin_lines, write_text, Result, Stop};

/// Ring from the primary to the secondary.
pub const PRI_2_SEC: &str = "PRI_2_SEC";
/// Ring from the secondary to the primary.
pub const SEC_2_PRI: &str = "SEC_2_PRI";
/// The pool of message buffers.
pub const MSG_POOL: &str = "MSG_POOL";
/// Buffers in the pool (and slots in each ring).
pub const POOL_SIZE: u32 = 1024;
/// Bytes per buffer (a 2-byte length, then the text).
pub const STRING_SIZE: u32 = 64;

const HELP: &str = "commands: send <text> | sendn <count> <text> | stats | help | quit";

/// `simple_mp --help`.
pub const USAGE: &str = "\
usage: simple_mp [GROUP OPTIONS]
A primary and a secondary passing text messages through two rings and a pool (DPDK's
simple_mp). simple_mp takes no options of its own; it reads commands on standard input:
send <text> | sendn <count> <text> | stats | help | quit";

/// Run `simple_mp` with the process's arguments; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    if crate::help(&args, USAGE) {
        return 0;
    }
    crate::exit_code(|| run(args))
}

fn run(args: Vec<String>) -> Result<()> {
    let (p, rest) = join(args)?;
    if !rest.is_empty() {
        return Err(crate::ExampleError::Args {
            option: rest[0].clone(),
            value: rest.join(" "),
            why: "simple_mp takes no options of its own".into(),
        });
    }
    let (tx_name, rx_name) = match p.role() {
        Role::Primary => (PRI_2_SEC, SEC_2_PRI),
        Role::Secondary => (SEC_2_PRI, PRI_2_SEC),
    };
    let (mp, tx, rx) = if p.role() == Role::Primary {
        let mp = Mempool::create(
            &*p,
            MSG_POOL,
            MempoolParams::new(POOL_SIZE, STRING_SIZE)
                .cache_size(32)
                .flags(MempoolFlags::TRACK),
        )?;
        let a = Ring::<u32>::create(&*p, tx_name, POOL_SIZE, RingFlags::EXACT_SZ)?;
        let b = Ring::<u32>::create(&*p, rx_name, POOL_SIZE, RingFlags::EXACT_SZ)?;
        (mp, a, b)
    } else {
        retry(Duration::from_secs(5), || {
            Ok((
                Mempool::lookup(&*p, MSG_POOL)?,
                Ring::<u32>::lookup(&*p, tx_name)?,
                Ring::<u32>::lookup(&*p, rx_name)?,
            ))
        })?
    };
    let lines = stdin_lines("simple_mp > ");
    let stop = Stop::new();
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (p, mp, rx, stop, received) = (
            p.clone(),
            mp.clone(),
            rx.clone(),
            stop.clone(),
            received.clone(),
        );
        std::thread::spawn(move || receive_loop(&p, &mp, &rx, &stop, &received))
    };
    say(ready_line(&p));
    let mut sent = 0u64;
    let send = |text: &str, sent: &mut u64| {
        let Some(o) = mp.get() else {
            say("ERR the message pool is empty (the other process is not taking its messages?)");
            return;
        };
        write_text(&mp, o, text);
        if mp.send(&tx, &[o]) == 1 {
            *sent += 1;
        } else {
            mp.put(o);
            say(format!("ERR ring {tx_name} is full; message dropped"));
        }
    };
    for line in lines.iter() {
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "" => {}
            "send" => send(arg, &mut sent),
            "sendn" => {
                let (n, text) = arg.split_once(' ').unwrap_or((arg, "msg"));
                match n.parse::<u32>() {
                    Ok(n) => {
                        for i in 1..=n {
                            send(&format!("{text} {i}"), &mut sent);
                        }
                        say(format!("SENT {n}"));
                    }
                    Err(e) => say(format!("ERR sendn needs a count, got {n:?}: {e}")),
                }
            }
            "stats" => say(format!(
                "STATS sent={sent} received={} pool_avail={} pool_size={}",
                received.load(Ordering::Acquire),
                mp.avail_count(),
                mp.size()
            )),
            "help" => say(HELP),
            "quit" => break,
            other => say(format!("ERR unknown command {other:?}; {HELP}")),
        }
    }
    stop.raise();
    let _ = receiver.join();
    say(format!(
        "BYE sent={sent} received={}",
        received.load(Ordering::Acquire)
    ));
    Ok(())
}

fn receive_loop(p: &Process, mp: &Mempool, rx: &Ring<u32>, stop: &Stop, received: &AtomicU64) {
    let lcore = p.lcores().first().copied().unwrap_or(0);
    if let Err(e) = p.bind_thread(lcore) {
        say(format!("ERR binding the receiver to lcore {lcore}: {e}"));
    }
    let mut buf = [Obj::empty(); 32];
    while !stop.is_raised() {
        let n = mp.receive(rx, &mut buf);
        for o in &buf[..n] {
            let text = read_text(mp, *o);
            mp.put(*o);
            received.fetch_add(1, Ordering::AcqRel);
            say(format!("core {lcore}: Received '{text}'"));
        }
        while let Some(e) = p.try_event() {
            say(event_line(&e));
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// One line for a group event: `EVENT member-joined member=1 pid=..`, etc.
pub fn event_line(e: &Event) -> String {
    match e {
        Event::MemberJoined { member, pid } => {
            format!("EVENT member-joined member={} pid={pid}", member.0)
        }
        Event::MemberLeft { member, pid } => {
            format!("EVENT member-left member={} pid={pid}", member.0)
        }
        Event::MemberDied {
            member,
            pid,
            cleaned_here,
            report,
        } => format!(
            "EVENT member-died member={} pid={pid} cleaned_here={cleaned_here} report={report:?}",
            member.0
        ),
        Event::PrimaryDied { pid } => format!("EVENT primary-died pid={pid}"),
        Event::PrimaryExited { pid } => format!("EVENT primary-exited pid={pid}"),
    }
}
