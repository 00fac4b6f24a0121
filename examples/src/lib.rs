//! The sample applications of hugeshare, after DPDK's `examples/multi_process`, and the pieces
//! they share.
//!
//! | program | model | what it shows |
//! |---|---|---|
//! | `simple_mp` | a primary and a secondary | two rings, a message pool, an interactive prompt |
//! | `symmetric_mp` | N peers | each peer's own queue fed by a synthetic source; a peer killed with SIGKILL does not stop the others |
//! | `client_server_mp` | a server and K clients | packets (pool objects) distributed by flow hash through rings; per-second Mpps |
//! | `proc_info` | an observer | members, zones, rings, pools, hashes and the clock of a running group |
//!
//! Every program takes the group's options first (EAL style: `--proc-type`, `--file-prefix`,
//! `-l`, `--no-huge`, `-m`, ...), then `--` and its own options. Each prints
//! `READY role=<role> member=<slot> lcores=[..]` once it has joined, and reads commands from
//! standard input (a terminal or a pipe). The programs' logic lives in this library
//! ([`simple`], [`symmetric`], [`client_server`], [`proc_info`]) so that the pipeline benchmark
//! can start the same code as separate processes.
//!
//! The synthetic traffic source stands in for DPDK's `net_null` device: per packet it takes an
//! object from the pool, writes a small header ([`PacketHeader`]: a 5-tuple, a length, a
//! sequence number) and hands it on; the consumer reads the header and frees the object.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

pub mod client_server;
pub mod proc_info;
pub mod simple;
pub mod symmetric;

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procctl::{Process, Role};
use rte_mempool::{Mempool, Obj};
use shmconfig::{MemberId, MemberState, Zone, ZoneKind, ZoneRequest, Zones};

/// Why a sample application stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// An application option (after `--`) is wrong.
    #[error("option {option}: {why} (got {value:?}); see --help")]
    Args {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// Joining the group failed.
    #[error("joining the group: {0}")]
    Group(#[from] procctl::ProcError),
    /// A ring could not be created or found.
    #[error("ring: {0}")]
    Ring(#[from] rte_ring::RingError),
    /// A pool could not be created or found.
    #[error("mempool: {0}")]
    Mempool(#[from] rte_mempool::MempoolError),
    /// A memzone could not be reserved or found.
    #[error("memzone: {0}")]
    Zone(#[from] shmconfig::ZoneError),
    /// Something the application needs is not there (the primary has not created it, or it
    /// belongs to another application).
    #[error("{0}")]
    Missing(String),
}

/// Result of the examples.
pub type Result<T, E = ExampleError> = std::result::Result<T, E>;

/// Join the group with the EAL-style options in `args` (up to `--`; procctl prints its banner
/// on standard error unless `HUGESHARE_QUIET` is set), and return the process and the arguments
/// after `--`.
pub fn join(args: Vec<String>) -> Result<(Arc<Process>, Vec<String>)> {
    let (p, rest) = Process::from_args(args)?;
    // Record which clock this member uses (proc_info shows it); a group whose clock is not
    // chosen yet is not an error here.
    let _ = p.clock(Duration::from_millis(500));
    Ok((Arc::new(p), rest))
}

/// If `args` ask for help (`-h` or `--help`, among the group's options or the program's own
/// after `--`), print `usage` (the program's own usage and options) and the group's options
/// ([`procctl::options::USAGE`]) on standard output and return true: the caller exits 0 without
/// joining or creating anything.
pub fn help(args: &[String], usage: &str) -> bool {
    if !procctl::options::wants_help(args) {
        return false;
    }
    say(format!(
        "{}\n\n{}",
        usage.trim_end(),
        procctl::options::USAGE.trim_end()
    ));
    true
}

/// The line every sample prints once it is ready: `READY role=.. member=.. lcores=[..]`.
pub fn ready_line(p: &Process) -> String {
    let role = match p.role() {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    };
    format!(
        "READY role={role} member={} lcores={:?}",
        p.member().0,
        p.lcores()
    )
}

/// Print a line on standard output and flush it (the test runner reads lines from a pipe).
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Run `f`, printing `ERROR <message>` and returning exit code 1 if it fails.
pub fn exit_code(f: impl FnOnce() -> Result<()>) -> i32 {
    match f() {
        Ok(()) => 0,
        Err(e) => {
            say(format!("ERROR {e}"));
            1
        }
    }
}

/// Application options after `--`: `--name value` pairs and `--flag`s.
#[derive(Debug, Default)]
pub struct AppArgs {
    pairs: Vec<(String, Option<String>)>,
}

impl AppArgs {
    /// Parse `args`; every option in `with_value` takes the next argument (or `=value`), every
    /// one in `flags` takes none; anything else is refused.
    pub fn parse(args: &[String], with_value: &[&str], flags: &[&str]) -> Result<AppArgs> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            if with_value.contains(&name.as_str()) {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| ExampleError::Args {
                        option: name.clone(),
                        value: String::new(),
                        why: "it needs a value".into(),
                    })?,
                };
                pairs.push((name, Some(v)));
            } else if flags.contains(&name.as_str()) && inline.is_none() {
                pairs.push((name, None));
            } else {
                let mut known: Vec<&str> = with_value.to_vec();
                known.extend_from_slice(flags);
                return Err(ExampleError::Args {
                    option: name,
                    value: a.clone(),
                    why: format!("unknown option; this program knows {known:?}"),
                });
            }
        }
        Ok(AppArgs { pairs })
    }

    /// Whether `flag` was given.
    pub fn flag(&self, flag: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == flag)
    }

    /// The value of `option`, if given.
    pub fn value(&self, option: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == option)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value of `option` as a number, `default` if absent.
    pub fn num<T: std::str::FromStr>(&self, option: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(option) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ExampleError::Args {
                option: option.into(),
                value: v.into(),
                why: e.to_string(),
            }),
        }
    }
}

/// A flow's 5-tuple, as the synthetic source writes it into a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FiveTuple {
    /// Source IPv4 address.
    pub src_ip: u32,
    /// Destination IPv4 address.
    pub dst_ip: u32,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol (17: UDP).
    pub proto: u8,
}

impl FiveTuple {
    /// The 13 bytes hashed to pick a flow's client.
    pub fn key(&self) -> [u8; 13] {
        let mut k = [0u8; 13];
        k[0..4].copy_from_slice(&self.src_ip.to_be_bytes());
        k[4..8].copy_from_slice(&self.dst_ip.to_be_bytes());
        k[8..10].copy_from_slice(&self.src_port.to_be_bytes());
        k[10..12].copy_from_slice(&self.dst_port.to_be_bytes());
        k[12] = self.proto;
        k
    }
}

/// The header the synthetic source writes at the start of each packet (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketHeader {
    /// The flow.
    pub flow: FiveTuple,
    /// Packet length in bytes (as a NIC would report it).
    pub len: u16,
    /// The port (or source) it came in on.
    pub port: u16,
    /// Sequence number in its source.
    pub seq: u64,
}

/// Bytes of [`PacketHeader`] in a packet.
pub const HEADER_LEN: usize = 32;

impl PacketHeader {
    /// Encode.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..13].copy_from_slice(&self.flow.key());
        b[14..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..18].copy_from_slice(&self.port.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// Decode.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> PacketHeader {
        let u32at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16be = |i: usize| u16::from_be_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        let u16le = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        PacketHeader {
            flow: FiveTuple {
                src_ip: u32at(0),
                dst_ip: u32at(4),
                src_port: u16be(8),
                dst_port: u16be(10),
                proto: b[12],
            },
            len: u16le(14),
            port: u16le(16),
            seq: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        }
    }

    /// Write this header at the start of `o`, an object of `mp` the caller holds.
    #[inline]
    pub fn write(&self, mp: &Mempool, o: Obj) {
        raw::write_obj(mp, o, 0, &self.to_bytes());
    }

    /// Read the header at the start of `o`, an object of `mp` the caller holds.
    #[inline]
    pub fn read(mp: &Mempool, o: Obj) -> PacketHeader {
        let mut b = [0u8; HEADER_LEN];
        raw::read_obj(mp, o, 0, &mut b);
        PacketHeader::from_bytes(&b)
    }
}

/// Write a text message (length, then bytes, cut at the object's size) into `o`.
pub fn write_text(mp: &Mempool, o: Obj, text: &str) -> usize {
    let room = (mp.elt_size() as usize).saturating_sub(2);
    let mut n = text.len().min(room);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    raw::write_obj(mp, o, 0, &(n as u16).to_le_bytes());
    raw::write_obj(mp, o, 2, &text.as_bytes()[..n]);
    n
}

/// Read a text message written by [`write_text`].
pub fn read_text(mp: &Mempool, o: Obj) -> String {
    let mut l = [0u8; 2];
    raw::read_obj(mp, o, 0, &mut l);
    let n = (u16::from_le_bytes(l) as usize).min((mp.elt_size() as usize).saturating_sub(2));
    let mut b = vec![0u8; n];
    raw::read_obj(mp, o, 2, &mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// A synthetic traffic source: `flows` distinct UDP flows, visited in a pseudo-random order.
#[derive(Debug, Clone)]
pub struct FlowGen {
    state: u64,
    flows: u32,
    seq: u64,
    port: u16,
}

impl FlowGen {
    /// A source of `flows` flows (at least 1), seeded with `seed`, stamping packets with `port`.
    pub fn new(flows: u32, seed: u64, port: u16) -> FlowGen {
        FlowGen {
            state: seed | 1,
            flows: flows.max(1),
            seq: 0,
            port,
        }
    }

    /// Take back the last `n` sequence numbers (packets that were not sent after all).
    pub fn rewind(&mut self, n: u64) {
        self.seq -= n.min(self.seq);
    }

    /// The next packet's header.
    #[inline]
    pub fn next_header(&mut self) -> PacketHeader {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let f = ((self.state >> 16) % self.flows as u64) as u32;
        self.seq += 1;
        PacketHeader {
            flow: FiveTuple {
                src_ip: 0x0a00_0000 | f,
                dst_ip: 0xc0a8_0001,
                src_port: 1024 + (f % 50_000) as u16,
                dst_port: 4789,
                proto: 17,
            },
            len: 64,
            port: self.port,
            seq: self.seq,
        }
    }
}

/// A table of slots in a memzone, one word per slot, where processes record which member
/// plays which part (peer `i` of symmetric_mp, client `i` of client_server_mp). A slot holds
/// `pid << 32 | (member + 1)`, or 0 when free.
#[derive(Debug)]
pub struct Registry {
    zone: Zone,
    slots: usize,
}

impl Registry {
    /// Reserve (primary) the registry `name` with `slots` slots.
    pub fn create(zones: &impl Zones, name: &str, slots: usize) -> Result<Registry> {
        let zone = zones.reserve(&ZoneRequest::new(name, slots * 8, ZoneKind::Memzone))?;
        Ok(Registry { zone, slots })
    }

    /// Find the registry `name`.
    pub fn lookup(zones: &impl Zones, name: &str) -> Result<Registry> {
        let zone = zones.lookup(name)?;
        let slots = zone.len() / 8;
        Ok(Registry { zone, slots })
    }

    /// How many slots.
    pub fn len(&self) -> usize {
        self.slots
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// The word of a member.
    pub fn word(member: MemberId) -> u64 {
        ((std::process::id() as u64) << 32) | (member.0 as u64 + 1)
    }

    /// The member recorded in slot `i`, if any.
    pub fn member(&self, i: usize) -> Option<MemberId> {
        let w = raw::zone_word(&self.zone, i).load(Ordering::Acquire);
        (w != 0).then(|| MemberId(((w & 0xffff) - 1) as u16))
    }

    /// Take slot `i` for `member`. Refused if a live member holds it (a dead one's is taken).
    pub fn claim(&self, i: usize, zones: &impl Zones) -> Result<()> {
        if i >= self.slots {
            return Err(ExampleError::Missing(format!(
                "slot {i} does not exist: the primary made {} slots",
                self.slots
            )));
        }
        let w = raw::zone_word(&self.zone, i);
        let mine = Self::word(zones.member());
        loop {
            let cur = w.load(Ordering::Acquire);
            if cur != 0 {
                let m = MemberId(((cur & 0xffff) - 1) as u16);
                if zones.member_state(m) == MemberState::Alive && m != zones.member() {
                    return Err(ExampleError::Missing(format!(
                        "slot {i} is taken by live member {} (pid {}); pick another id",
                        m.0,
                        cur >> 32
                    )));
                }
            }
            if w.compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Free slot `i` if it still holds `member`'s word; returns whether this call freed it (so
    /// exactly one caller cleans up after a member).
    pub fn release_if(&self, i: usize, member: MemberId) -> bool {
        let w = raw::zone_word(&self.zone, i);
        let cur = w.load(Ordering::Acquire);
        cur != 0
            && (cur & 0xffff_ffff) == member.0 as u64 + 1
            && w.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The slot `member` holds, if any.
    pub fn slot_of(&self, member: MemberId) -> Option<usize> {
        (0..self.slots).find(|&i| self.member(i) == Some(member))
    }
}

/// Take every object out of the ring of a member that died (or left) and give it back to the
/// pool; returns how many. The ring's consumer side is held meanwhile (which releases the dead
/// member's hold), so a new member taking the ring waits until the drain is over; if a live
/// member holds it already, that member empties it and nothing is drained here.
pub fn drain_dead_ring(mp: &Mempool, q: &rte_ring::Ring<u32>) -> u64 {
    q.recover();
    let Ok(mut rx) = q.single_consumer() else {
        return 0;
    };
    let mut buf = [Obj::empty(); 64];
    let mut n = 0;
    loop {
        let got = mp.receive(&mut rx, &mut buf);
        if got == 0 {
            return n;
        }
        mp.put_bulk(&buf[..got]);
        n += got as u64;
    }
}

/// Wait up to `timeout` for `f` to succeed (objects the primary creates after a secondary
/// started looking), returning its last error otherwise.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A stop flag raised by `quit`/`stop` on standard input, by its end (unless the program runs
/// for a fixed time), or by a deadline.
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// A flag nobody raised yet.
    pub fn new() -> Stop {
        Stop {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }
    /// Raise it.
    pub fn raise(&self) {
        self.flag.store(true, Ordering::Release);
    }
    /// Whether it is raised.
    #[inline]
    pub fn is_raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Read lines from standard input on a thread and hand them over a channel; the channel closes
/// at the end of input. A prompt is shown when standard input is a terminal.
pub fn stdin_lines(prompt: &'static str) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tty = std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        loop {
            if tty {
                print!("{prompt}");
                let _ = std::io::stdout().flush();
            }
            let mut l = String::new();
            match stdin.lock().read_line(&mut l) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(l.trim_end().to_string()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// A counter one thread adds to and others read (its own cache line).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n` (single writer: a load and a store, no locked instruction).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Millions per second from a count difference over `d`.
pub fn mpps(count: u64, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// Sample a counter twice, `gap` apart: the `MOVING delta=N moving=true|false` line the
/// samples print for their `check` command (the scenarios' proof that traffic flows *now*).
pub fn moving_line(what: &str, read: impl Fn() -> u64, gap: Duration) -> String {
    let a = read();
    std::thread::sleep(gap);
    let d = read().saturating_sub(a);
    format!("MOVING {what} delta={d} moving={}", d > 0)
}
