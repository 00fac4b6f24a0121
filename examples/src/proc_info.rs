//! `proc_info`: what a running group holds, seen from inside it (DPDK's `dpdk-proc-info`).
//!
//! ```text
//! proc_info --file-prefix=demo            # one snapshot
//! proc_info --file-prefix=demo -- --watch # a snapshot every second until interrupted
//! ```
//!
//! It attaches as a secondary (`--proc-type=secondary` is implied; it takes one lcore and marks
//! itself `(this proc_info)` in the listing) and prints, one item per line:
//!
//! * `group prefix=.. generation=.. primary_pid=.. primary_alive=..`
//! * `member slot=S pid=P role=.. name=.. lcores=[..] alive=true|false clock=..` for every
//!   occupied slot;
//! * `zone name=.. kind=.. len=.. owner=..` for every memzone;
//! * `ring name=.. count=C capacity=N size=.. elem_size=..` for every ring whose elements are
//!   4 or 8 bytes (rings of object indexes and the pools' free rings), `ring name=.. ?` for others;
//! * `mempool name=.. size=N avail=A in_use=U cache_size=.. caches=[lcore:count,..]
//!   tracked=.. violations=..`;
//! * `hash name=.. count=.. entries=.. key_size=.. value_size=.. extendable=.. function=..`;
//! * `clock kind=.. hz=.. source=..` (the group's clock record);
//! * `END members=M alive=A zones=Z` (members: occupied slots, including ones whose occupant
//!   left or died and was not cleaned up yet).
//!
//! Options after `--`: `--watch` (repeat every `--interval-ms`, default 1000), `--count N`
//! (stop after N snapshots in watch mode).

use std::sync::atomic::Ordering;
use std::time::Duration;

use procctl::Process;
use rte_mempool::{Mempool, MempoolFlags};
use rte_ring::Ring;
use shmconfig::{MemberId, MemberState, ZoneKind, Zones};

use crate::{join, say, AppArgs};

/// `proc_info --help`.
pub const USAGE: &str = "\
usage: proc_info [GROUP OPTIONS] [-- [--watch] [--interval-ms MS] [--count N]]
What a running group holds: members, zones, rings, pools, hashes and its clock (DPDK's
dpdk-proc-info). It joins as a secondary (--proc-type=secondary is implied).
options (after `--`):
  --watch            print a snapshot every --interval-ms until interrupted
  --interval-ms MS   the interval of --watch (default 1000)
  --count N          stop after N snapshots with --watch";

/// Run `proc_info`; returns the exit code.
pub fn main(mut args: Vec<String>) -> i32 {
    if crate::help(&args, USAGE) {
        return 0;
    }
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    if !args[..end].iter().any(|a| a.starts_with("--proc-type")) {
        args.insert(0, "--proc-type=secondary".into());
    }
    crate::exit_code(|| {
        let (p, rest) = join(args)?;
        let a = AppArgs::parse(&rest, &["--interval-ms", "--count"], &["--watch"])?;
        let interval = Duration::from_millis(a.num("--interval-ms", 1000u64)?.max(10));
        let count: u64 = a.num("--count", 0)?;
        let mut n = 0u64;
        loop {
            for l in snapshot(&p) {
                say(l);
            }
            n += 1;
            if !a.flag("--watch") || (count > 0 && n >= count) {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
    })
}

/// One snapshot of the group, as lines.
pub fn snapshot(p: &Process) -> Vec<String> {
    let mut out = Vec::new();
    let t = p.tables();
    let h = t.header();
    out.push(format!(
        "group prefix={} generation={} primary_pid={} primary_alive={}",
        p.prefix(),
        p.generation(),
        p.primary_pid(),
        p.primary_alive()
    ));
    let members = t.occupied_members();
    for &m in &members {
        let e = &h.members[m.0 as usize];
        let role = match e.role.load(Ordering::Acquire) {
            1 => "primary",
            2 => "secondary",
            _ => "unknown",
        };
        let clock = tsc_hpet::ClockKind::from_u32(e.clock_kind.load(Ordering::Acquire))
            .map_or("unknown".to_string(), |k| k.to_string());
        let me = if m == p.member() {
            " (this proc_info)"
        } else {
            ""
        };
        out.push(format!(
            "member slot={} pid={} role={role} name={} lcores={:?} alive={} clock={clock}{me}",
            m.0,
            e.pid.load(Ordering::Acquire),
            t.member_name(m),
            t.member_lcores(m),
            p.member_state(m) == MemberState::Alive,
        ));
    }
    let zones = p.list();
    for z in &zones {
        out.push(format!(
            "zone name={} kind={} len={} owner={}",
            z.name,
            z.kind,
            z.len,
            owner(z.owner)
        ));
    }
    for z in zones.iter().filter(|z| z.kind == ZoneKind::Ring) {
        let name = z.name.strip_prefix("RG_").unwrap_or(&z.name);
        let info = Ring::<u32>::lookup(p, name)
            .map(|r| r.info())
            .or_else(|_| Ring::<u64>::lookup(p, name).map(|r| r.info()));
        out.push(match info {
            Ok(i) => format!(
                "ring name={} count={} capacity={} size={} elem_size={} free={}",
                i.name, i.count, i.capacity, i.size, i.elem_size, i.free
            ),
            Err(e) => format!("ring name={name} ? ({e})"),
        });
    }
    for z in zones.iter().filter(|z| z.kind == ZoneKind::Mempool) {
        let name = z.name.strip_prefix("MP_").unwrap_or(&z.name);
        out.push(match Mempool::lookup(p, name) {
            Ok(mp) => {
                let caches: Vec<String> = (0..shmconfig::layout::MAX_LCORES as u32)
                    .filter_map(|l| {
                        let c = mp.cache_count(l);
                        (c > 0).then(|| format!("{l}:{c}"))
                    })
                    .collect();
                format!(
                    "mempool name={} size={} avail={} in_use={} elt_size={} cache_size={} caches=[{}] tracked={} violations={}",
                    mp.name(),
                    mp.size(),
                    mp.avail_count(),
                    mp.in_use_count(),
                    mp.elt_size(),
                    mp.cache_size(),
                    caches.join(","),
                    mp.flags().contains(MempoolFlags::TRACK),
                    mp.stats().violations
                )
            }
            Err(e) => format!("mempool name={name} ? ({e})"),
        });
    }
    for z in zones.iter().filter(|z| z.kind == ZoneKind::Hash) {
        out.push(match p.lookup(&z.name).map_err(|e| e.to_string()).and_then(|zone| {
            rte_hash_with_hash::inspect(&zone).map_err(|e| e.to_string())
        }) {
            Ok(h) => format!(
                "hash name={} count={} entries={} key_size={} value_size={} extendable={} function={}/seed {}",
                h.name, h.count, h.entries, h.key_size, h.value_size, h.extendable, h.hash_fn.name, h.hash_fn.seed
            ),
            Err(e) => format!("hash name={} zone_len={} ? ({e})", z.name, z.len),
        });
    }
    out.push(match p.clock_record() {
        Some(r) => format!("clock kind={} hz={} source={:?}", r.kind, r.hz, r.source),
        None => "clock none (the primary has not recorded the group's clock yet)".into(),
    });
    let alive = members
        .iter()
        .filter(|&&m| p.member_state(m) == MemberState::Alive)
        .count();
    out.push(format!(
        "END members={} alive={alive} zones={}",
        members.len(),
        zones.len()
    ));
    out
}

fn owner(m: MemberId) -> String {
    if m == MemberId::OUTSIDER {
        "outsider".into()
    } else {
        m.0.to_string()
    }
}
