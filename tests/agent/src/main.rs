//! `hugeshare-agent`: a member of a group that obeys line commands, for multi-process scenarios.
//!
//! Started with EAL-style arguments (`--proc-type`, `--file-prefix`, `-m`, ...). On success it
//! prints `READY role=... member=... pid=...`; on failure `ERROR <message>` and exits 1. Then it
//! reads commands from standard input, one per line, and answers each with one line:
//!
//! | command | answer |
//! |---|---|
//! | `reserve NAME LEN` | `OK` or `ERR <message>` |
//! | `lookup NAME` | `OK len=N` or `ERR <message>` |
//! | `write NAME OFFSET TEXT` / `read NAME OFFSET LEN` | `OK` / `DATA <text>` |
//! | `free NAME` | `OK` |
//! | `list` | `ZONES a,b,...` |
//! | `event TIMEOUT_MS [KIND]` | `EVENT <kind> member=N pid=P [cleaned_here=B] [report=...]` or `TIMEOUT` |
//! | `event-at TIMEOUT_MS [KIND]` | as `event`, with ` at_ns=<CLOCK_MONOTONIC ns>` |
//! | `clock` | `CLOCK kind=K hz=N record=...` (the group's clock as this member uses it) |
//! | `send N NAME TEXT` / `send-big N LEN` | `OK` or `ERR <message>` |
//! | `broadcast NAME TEXT` | `SENT to=[..] failed=[..]` |
//! | `request N NAME TIMEOUT_MS TEXT` | `REPLY from=N <payload>` or `ERR <message>` |
//! | `serve NAME` | `OK` (answers requests NAME with `member M answers <payload>`) |
//! | `recv TIMEOUT_MS` | `MSG from=N name=.. payload=..` or `TIMEOUT` |
//! | `smaps` | `BACKING <kind> kernel_page_kb=N` read from /proc/self/smaps |
//! | `info` | `INFO ...` |
//! | `notices` | `NOTICES n=N` and the process's notices (fallbacks, options ignored), ` | `-separated |
//! | `ping` | `PONG` |
//! | `exit` | leaves the group cleanly and exits 0 |
#![deny(unsafe_code)]

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use procctl::{Event, Process};
use shmconfig::{ZoneKind, ZoneRequest, Zones};

#[allow(unsafe_code)]
mod raw {
    use shmconfig::Zone;

    /// Copy `bytes` into the zone at `off`.
    pub fn write(z: &Zone, off: usize, bytes: &[u8]) -> Result<(), String> {
        if off.checked_add(bytes.len()).is_none_or(|e| e > z.len()) {
            return Err(format!(
                "write of {} bytes at {off} is outside zone {} ({} bytes)",
                bytes.len(),
                z.name(),
                z.len()
            ));
        }
        // SAFETY: the range is inside the zone (checked), which stays mapped while `z` lives;
        // concurrent access by other processes is the scenario's business (plain bytes).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), z.as_ptr().add(off), bytes.len()) };
        Ok(())
    }

    /// Copy `len` bytes out of the zone at `off`.
    pub fn read(z: &Zone, off: usize, len: usize) -> Result<Vec<u8>, String> {
        if off.checked_add(len).is_none_or(|e| e > z.len()) {
            return Err(format!(
                "read of {len} bytes at {off} is outside zone {} ({} bytes)",
                z.name(),
                z.len()
            ));
        }
        let mut v = vec![0u8; len];
        // SAFETY: inside the zone (checked); `v` is our own buffer.
        unsafe { std::ptr::copy_nonoverlapping(z.as_ptr().add(off), v.as_mut_ptr(), len) };
        Ok(v)
    }
}

fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::MemberJoined { .. } => "member-joined",
        Event::MemberLeft { .. } => "member-left",
        Event::MemberDied { .. } => "member-died",
        Event::PrimaryDied { .. } => "primary-died",
        Event::PrimaryExited { .. } => "primary-exited",
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::MemberJoined { member, pid } | Event::MemberLeft { member, pid } => {
            format!("EVENT {} member={} pid={pid}", event_kind(e), member.0)
        }
        Event::MemberDied {
            member,
            pid,
            cleaned_here,
            report,
        } => format!(
            "EVENT member-died member={} pid={pid} cleaned_here={cleaned_here} report={}",
            member.0,
            report.join(";")
        ),
        Event::PrimaryDied { pid } | Event::PrimaryExited { pid } => {
            format!("EVENT {} pid={pid}", event_kind(e))
        }
    }
}

/// The next event (of kind `want`, if given) within `timeout_ms`.
fn wait_event(p: &Process, timeout_ms: usize, want: Option<&str>) -> Option<Event> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    loop {
        let e = p.next_event(deadline.saturating_duration_since(Instant::now()))?;
        if want.is_none_or(|w| w == event_kind(&e)) {
            return Some(e);
        }
    }
}

fn smaps_backing(p: &Process) -> String {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let paths = p.segment_paths();
    let mut kps = None;
    let mut in_seg = false;
    for line in text.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 && !line.ends_with(" kB") {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            in_seg = if paths.is_empty() {
                path.starts_with("/memfd:") && !path.contains("hugeshare-config")
            } else {
                paths.iter().any(|q| q.to_string_lossy() == path)
            };
        } else if in_seg && line.starts_with("KernelPageSize:") {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            kps = Some(kps.map_or(kb, |k: u64| k.min(kb)));
        }
    }
    format!(
        "BACKING {} kernel_page_kb={}",
        p.backing(),
        kps.unwrap_or(0)
    )
}

fn run(p: &Process, line: &str) -> Option<String> {
    let mut it = line.split_whitespace();
    let cmd = it.next()?;
    let args: Vec<&str> = it.collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or("");
    let num = |i: usize| {
        arg(i)
            .parse::<usize>()
            .map_err(|_| format!("ERR argument {} of {cmd} must be a number", i + 1))
    };
    Some(match cmd {
        "ping" => "PONG".into(),
        "reserve" => match num(1) {
            Err(e) => e,
            Ok(len) => match p.reserve(&ZoneRequest::new(arg(0), len, ZoneKind::Memzone)) {
                Ok(_) => "OK".into(),
                Err(e) => format!("ERR {e}"),
            },
        },
        "lookup" => match p.lookup(arg(0)) {
            Ok(z) => format!("OK len={}", z.len()),
            Err(e) => format!("ERR {e}"),
        },
        "free" => match p.free(arg(0)) {
            Ok(()) => "OK".into(),
            Err(e) => format!("ERR {e}"),
        },
        "list" => {
            let names: Vec<String> = p.list().into_iter().map(|z| z.name).collect();
            format!("ZONES {}", names.join(","))
        }
        "write" => {
            let text = args.get(2..).map(|t| t.join(" ")).unwrap_or_default();
            match (p.lookup(arg(0)), num(1)) {
                (Ok(z), Ok(off)) => match raw::write(&z, off, text.as_bytes()) {
                    Ok(()) => "OK".into(),
                    Err(e) => format!("ERR {e}"),
                },
                (Err(e), _) => format!("ERR {e}"),
                (_, Err(e)) => e,
            }
        }
        "read" => match (p.lookup(arg(0)), num(1), num(2)) {
            (Ok(z), Ok(off), Ok(len)) => match raw::read(&z, off, len) {
                Ok(v) => format!("DATA {}", String::from_utf8_lossy(&v).trim_end_matches('\0')),
                Err(e) => format!("ERR {e}"),
            },
            (Err(e), _, _) => format!("ERR {e}"),
            (_, Err(e), _) | (_, _, Err(e)) => e,
        },
        "event" => match wait_event(p, num(0).unwrap_or(1000), args.get(1).copied()) {
            Some(e) => describe(&e),
            None => "TIMEOUT".into(),
        },
        "event-at" => match wait_event(p, num(0).unwrap_or(1000), args.get(1).copied()) {
            // Says when the event arrived on CLOCK_MONOTONIC (comparable across processes), for
            // the attach benchmark.
            Some(e) => {
                let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                let ns = t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128;
                format!("{} at_ns={ns}", describe(&e))
            }
            None => "TIMEOUT".into(),
        },
        "clock" => match p.clock(Duration::from_secs(5)) {
            Ok(c) => format!(
                "CLOCK kind={} hz={} record={} notice={}",
                c.kind(),
                c.hz(),
                p.clock_record().map(|r| r.to_string()).unwrap_or_default(),
                p.clock_notice().unwrap_or_default()
            ),
            Err(e) => format!("ERR {e}"),
        },
        "send" => match num(0) {
            Err(e) => e,
            Ok(to) => {
                let text = args.get(2..).map(|t| t.join(" ")).unwrap_or_default();
                match p.send(shmconfig::MemberId(to as u16), arg(1), text.as_bytes(), &[]) {
                    Ok(()) => "OK".into(),
                    Err(e) => format!("ERR {e}"),
                }
            }
        },
        "send-big" => match num(0) {
            Err(e) => e,
            Ok(to) => match p.send(shmconfig::MemberId(to as u16), "big", &vec![b'x'; num(1).unwrap_or(5000)], &[]) {
                Ok(()) => "OK".into(),
                Err(e) => format!("ERR {e}"),
            },
        },
        "broadcast" => {
            let text = args.get(1..).map(|t| t.join(" ")).unwrap_or_default();
            let r = p.broadcast(arg(0), text.as_bytes(), &[]);
            let sent: Vec<String> = r.sent.iter().map(|m| m.0.to_string()).collect();
            let failed: Vec<String> = r.failed.iter().map(|(m, e)| format!("{}:{e}", m.0)).collect();
            format!("SENT to=[{}] failed=[{}]", sent.join(","), failed.join(";"))
        }
        "request" => match (num(0), num(2)) {
            (Ok(to), Ok(ms)) => {
                let text = args.get(3..).map(|t| t.join(" ")).unwrap_or_default();
                match p.request(shmconfig::MemberId(to as u16), arg(1), text.as_bytes(), Duration::from_millis(ms as u64)) {
                    Ok(m) => format!("REPLY from={} {}", m.from.0, String::from_utf8_lossy(&m.payload)),
                    Err(e) => format!("ERR {e}"),
                }
            }
            (Err(e), _) | (_, Err(e)) => e,
        },
        "serve" => {
            let me = p.member().0;
            p.on_request(arg(0), move |m| Ok(format!("member {me} answers {}", String::from_utf8_lossy(&m.payload)).into_bytes()));
            "OK".into()
        }
        "recv" => match p.next_message(Duration::from_millis(num(0).unwrap_or(1000) as u64)) {
            Some(m) => format!("MSG from={} name={} payload={}", m.from.0, m.name, String::from_utf8_lossy(&m.payload)),
            None => "TIMEOUT".into(),
        },
        "smaps" => smaps_backing(p),
        "info" => format!(
            "INFO role={} member={} lcores={:?} backing={} page_size={} same_address={} primary_pid={} in_memory={}",
            p.role(),
            p.member().0,
            p.lcores(),
            p.backing(),
            p.page_size(),
            p.same_address(),
            p.primary_pid(),
            p.in_memory()
        ),
        "notices" => {
            let n = p.notices();
            let mut line = format!("NOTICES n={}", n.len());
            for t in n {
                line.push_str(" | ");
                line.push_str(t);
            }
            line
        }
        "sleep" => {
            std::thread::sleep(Duration::from_millis(num(0).unwrap_or(0) as u64));
            "OK".into()
        }
        other => format!("ERR unknown command {other:?}"),
    })
}

/// `hugeshare-agent --help`.
const USAGE: &str = "\
usage: hugeshare-agent [GROUP OPTIONS]
A group member driven by line commands on standard input, for multi-process scenarios
(`cargo xtask test-mp`). It prints READY role=.. member=.. pid=.. once it has joined (ERROR
<message> and exit status 1 if it cannot), then answers each command with one line:
  reserve NAME LEN | lookup NAME | free NAME | list | write NAME OFFSET TEXT |
  read NAME OFFSET LEN | event TIMEOUT_MS [KIND] | event-at TIMEOUT_MS [KIND] | clock |
  send N NAME TEXT | send-big N LEN | broadcast NAME TEXT | request N NAME TIMEOUT_MS TEXT |
  serve NAME | recv TIMEOUT_MS | smaps | info | notices | sleep MS | ping | exit";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if procctl::options::wants_help(&args) {
        println!("{USAGE}\n\n{}", procctl::options::USAGE.trim_end());
        return;
    }
    let p = match Process::from_args(args) {
        Ok((p, _)) => p,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "READY role={} member={} pid={} lcores={:?} backing={} same_address={}",
        p.role(),
        p.member().0,
        std::process::id(),
        p.lcores(),
        p.backing(),
        p.same_address()
    );
    let _ = out.flush();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            break;
        }
        if let Some(answer) = run(&p, line) {
            let _ = writeln!(out, "{answer}");
            let _ = out.flush();
        }
    }
    drop(p);
    let _ = writeln!(out, "BYE");
}
