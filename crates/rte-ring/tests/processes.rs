//! Rings shared by real processes: this test binary re-executes itself as producer and consumer
//! children (the `RTE_RING_MP_ROLE` variable selects the role) over a file in `/dev/shm` that
//! each maps at an address of its own (see `common/mod.rs`).
//!
//! * `exactly_once_*`: several producers and consumers; every element arrives exactly once
//!   (per-producer sequence, count, sum and sum of squares) and none is garbage (checksum).
//! * `producers_killed_at_random_points`: producers are SIGKILLed at random moments, many rounds
//!   (MT, HTS and RTS producer sides);
//!   the survivors and the consumer finish, the consumer gets every element of every producer in
//!   order with no gap except the killed producers' last reservation, and the ring's accounting
//!   balances: positions used = elements delivered + elements abandoned.
//!
//! Not under Miri: it maps files and starts processes, which Miri cannot do.
#![cfg(not(miri))]

mod common;

use std::process::{Child, Command};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use common::{FileZones, Rng};
use rte_ring::{Ring, RingFlags};
use shmconfig::MemberId;

type Elem = [u64; 2];

const STOP: usize = 0;
const DONE: usize = 1;
const GARBAGE: usize = 2;
const ERRORS: usize = 3;
/// The first element out of order, for the failure message: its word, and what the consumer
/// expected at least (`next`), and the consumer's process id.
const FIRST_BAD: usize = 4;
const FIRST_BAD_NEXT: usize = 5;
const FIRST_BAD_BY: usize = 6;
fn sent(p: usize) -> usize {
    8 + p
}
fn attempt_start(p: usize) -> usize {
    16 + p
}
fn attempt_len(p: usize) -> usize {
    24 + p
}
fn received(p: usize) -> usize {
    32 + p
}
fn seq_sum(p: usize) -> usize {
    40 + p
}
fn seq_sq(p: usize) -> usize {
    48 + p
}

fn mix(w: u64) -> u64 {
    let mut x = w ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The producer and the sequence number in an element's first word (see [`elem`]).
fn producer_and_seq(w: u64) -> (u64, u64) {
    (w >> 48, w & ((1 << 48) - 1))
}

fn elem(p: usize, seq: u64) -> Elem {
    let w = (p as u64) << 48 | seq;
    [w, mix(w)]
}

fn shm_path(tag: &str) -> String {
    format!("/dev/shm/rte-ring-test-{}-{tag}", std::process::id())
}

fn spawn(path: &str, role: &str, member: u16, extra: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env("RTE_RING_MP_ROLE", role)
        .env("RTE_RING_MP_PATH", path)
        .env("RTE_RING_MP_MEMBER", member.to_string());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::null());
    c.spawn().expect("re-execute the test binary as a child")
}

fn wait_all(children: &mut [Child], deadline: Instant, what: &str, ring: &Ring<Elem>) {
    for c in children.iter_mut() {
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert!(st.success(), "{what}: child exited with {st}");
                break;
            }
            if Instant::now() > deadline {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "{what}: children did not finish in time: the ring is wedged?\n{}",
                    ring.info()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The child side: runs when the test binary is re-executed with a role, else does nothing.
#[test]
fn child() {
    let Ok(role) = std::env::var("RTE_RING_MP_ROLE") else {
        return;
    };
    let path = std::env::var("RTE_RING_MP_PATH").unwrap();
    let member: u16 = std::env::var("RTE_RING_MP_MEMBER")
        .unwrap()
        .parse()
        .unwrap();
    let zones = FileZones::open(&path, MemberId(member));
    let ring = Ring::<Elem>::lookup(&zones, "mp").expect("child finds the ring");
    let mut rng = Rng::seeded();
    match role.as_str() {
        "producer" => {
            let p = member as usize;
            let count: u64 = std::env::var("RTE_RING_MP_COUNT").unwrap().parse().unwrap();
            let maxb: u64 = std::env::var("RTE_RING_MP_BURST").unwrap().parse().unwrap();
            let mut seq = 0u64;
            let mut items = Vec::with_capacity(maxb as usize);
            // On a single-producer ring, hold the side (a dead holder is released by the claim).
            let mut single = ring.flags().contains(RingFlags::SP_ENQ).then(|| loop {
                match ring.single_producer() {
                    Ok(h) => break h,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            });
            while (count == 0 || seq < count) && zones.word(STOP).load(Acquire) == 0 {
                let mut b = 1 + rng.below(maxb);
                if count != 0 {
                    b = b.min(count - seq);
                }
                items.clear();
                items.extend((seq..seq + b).map(|s| elem(p, s)));
                zones.word(attempt_start(p)).store(seq, Release);
                zones.word(attempt_len(p)).store(b, Release);
                let n = match single.as_mut() {
                    Some(h) => h.enqueue_bulk(&items),
                    None => ring.enqueue_bulk(&items),
                } as u64;
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                seq += n;
                zones.word(sent(p)).store(seq, Release);
            }
        }
        "consumer" => {
            let strict = std::env::var("RTE_RING_MP_STRICT").is_ok();
            let mut next = [0u64; 16];
            let mut buf = [[0u64; 2]; 32];
            let mut single = ring
                .flags()
                .contains(RingFlags::SC_DEQ)
                .then(|| ring.single_consumer().expect("the consumer side is free"));
            let mut take = |buf: &mut [Elem]| match single.as_mut() {
                Some(h) => h.dequeue_burst(buf),
                None => ring.dequeue_burst(buf),
            };
            loop {
                let n = take(&mut buf);
                if n == 0 {
                    if zones.word(DONE).load(Acquire) != 0 {
                        ring.recover();
                        match take(&mut buf[..1]) {
                            // Nothing left, and no other consumer's claim in flight.
                            0 if ring.count() == 0 => break,
                            // Another consumer's claim is still in flight: look again. (`buf`
                            // holds this consumer's last burst here, already checked.)
                            0 => {}
                            // An element came out after all.
                            _ => check(&zones, &buf[0], &mut next, strict),
                        }
                    }
                    std::hint::spin_loop();
                    continue;
                }
                for e in &buf[..n] {
                    check(&zones, e, &mut next, strict);
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn check(zones: &FileZones, e: &Elem, next: &mut [u64; 16], strict: bool) {
    if e[1] != mix(e[0]) || (e[0] >> 48) as usize >= 16 {
        zones.word(GARBAGE).fetch_add(1, Relaxed);
        return;
    }
    let (p, s) = producer_and_seq(e[0]);
    let p = p as usize;
    let in_order = if strict { s == next[p] } else { s >= next[p] };
    if !in_order && zones.word(ERRORS).fetch_add(1, Relaxed) == 0 {
        zones.word(FIRST_BAD_NEXT).store(next[p], Relaxed);
        zones
            .word(FIRST_BAD_BY)
            .store(std::process::id().into(), Relaxed);
        zones.word(FIRST_BAD).store(e[0], Release);
    }
    next[p] = s + 1;
    zones.word(received(p)).fetch_add(1, Relaxed);
    zones.word(seq_sum(p)).fetch_add(s, Relaxed);
    zones.word(seq_sq(p)).fetch_add(s.wrapping_mul(s), Relaxed);
}

/// What the consumers counted: no element arrived corrupt, and each producer's elements arrived
/// in order with no gap or repeat.
fn assert_delivered_clean(zones: &FileZones, what: &str) {
    assert_eq!(
        zones.word(GARBAGE).load(Acquire),
        0,
        "{what}: garbage delivered"
    );
    let (bad_p, bad_s) = producer_and_seq(zones.word(FIRST_BAD).load(Acquire));
    assert_eq!(
        zones.word(ERRORS).load(Acquire),
        0,
        "{what}: a gap, a repeat or a reordering in some producer's sequence; the first: \
         producer {}, seq {} where consumer process {} expected at least {}",
        bad_p,
        bad_s,
        zones.word(FIRST_BAD_BY).load(Relaxed),
        zones.word(FIRST_BAD_NEXT).load(Relaxed),
    );
}

fn exactly_once(tag: &str, flags: RingFlags, producers: u16, consumers: u16, per: u64) {
    let path = shm_path(tag);
    let _files = FileZones::removed_at_end(&path);
    let zones = FileZones::create(&path);
    let ring = Ring::<Elem>::create(&zones, "mp", 512, flags).unwrap();
    let mut cons: Vec<Child> = (0..consumers)
        .map(|i| spawn(&path, "consumer", 8 + i, &[]))
        .collect();
    let mut prods: Vec<Child> = (1..=producers)
        .map(|m| {
            spawn(
                &path,
                "producer",
                m,
                &[
                    ("RTE_RING_MP_COUNT", per.to_string()),
                    ("RTE_RING_MP_BURST", "32".into()),
                ],
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_all(&mut prods, deadline, "producers", &ring);
    zones.word(DONE).store(1, Release);
    wait_all(&mut cons, deadline, "consumers", &ring);
    let mut counts = String::new();
    for p in 1..=producers as usize {
        counts += &format!(
            "producer {p}: {} received of {per}, sum {} (expected {})\n",
            zones.word(received(p)).load(Acquire),
            zones.word(seq_sum(p)).load(Acquire),
            per * (per - 1) / 2
        );
    }
    eprintln!("{tag}: {counts}{}", ring.info());
    assert_delivered_clean(&zones, tag);
    for p in 1..=producers as usize {
        assert_eq!(
            zones.word(received(p)).load(Acquire),
            per,
            "producer {p}: count"
        );
        assert_eq!(
            zones.word(seq_sum(p)).load(Acquire),
            per * (per - 1) / 2,
            "producer {p}: sum"
        );
        let sq = (0..per).fold(0u64, |a, s| a.wrapping_add(s.wrapping_mul(s)));
        assert_eq!(
            zones.word(seq_sq(p)).load(Acquire),
            sq,
            "producer {p}: sum of squares"
        );
    }
    assert!(ring.is_empty());
    assert_eq!(ring.abandoned(), (0, 0));
    drop(ring);
    drop(zones);
    FileZones::remove_files(&path);
}

#[test]
fn exactly_once_mp_mc() {
    exactly_once("mpmc", RingFlags::empty(), 3, 2, 100_000);
}

#[test]
fn exactly_once_hts() {
    exactly_once(
        "hts",
        RingFlags::MP_HTS_ENQ | RingFlags::MC_HTS_DEQ,
        2,
        2,
        50_000,
    );
}

#[test]
fn exactly_once_rts() {
    exactly_once(
        "rts",
        RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ,
        3,
        2,
        100_000,
    );
}

#[test]
fn exactly_once_sp_sc() {
    exactly_once("spsc", RingFlags::SP_ENQ | RingFlags::SC_DEQ, 1, 1, 200_000);
}

/// A single producer holding the producer side is SIGKILLed at a random moment; a replacement
/// claims the side (releasing the dead holder) and goes on. Nothing is abandoned, nothing of the
/// dead holder's arrives partially, every published element arrives once, in order.
#[test]
fn single_producer_killed_at_random_points() {
    lone_producer_killed("spkill", RingFlags::SP_ENQ | RingFlags::SC_DEQ);
}

/// The same through the shared calls of an MT ring: the lone producer's side is biased to it
/// (see the crate docs, "Biased sides"), so it is killed in the middle of biased enqueues; the
/// replacement revokes the dead holder's bias (without waiting for it) and goes on, with the same
/// guarantees.
#[test]
fn biased_producer_killed_at_random_points() {
    lone_producer_killed("biaskill", RingFlags::empty());
}

fn lone_producer_killed(tag: &str, flags: RingFlags) {
    let rounds: usize = std::env::var("RTE_RING_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(40, |r: usize| r.div_ceil(4));
    let mut rng = Rng::seeded();
    for round in 0..rounds {
        let path = shm_path(&format!("{tag}{round}"));
        let _files = FileZones::removed_at_end(&path);
        let zones = FileZones::create(&path);
        let ring = Ring::<Elem>::create(&zones, "mp", 64, flags).unwrap();
        let strict = [("RTE_RING_MP_STRICT", "1".to_string())];
        let mut cons = vec![spawn(&path, "consumer", 8, &strict)];
        let prod_env = [
            ("RTE_RING_MP_COUNT", "0".to_string()),
            ("RTE_RING_MP_BURST", "16".to_string()),
        ];
        let mut first = spawn(&path, "producer", 1, &prod_env);
        let t0 = Instant::now();
        while zones.word(sent(1)).load(Acquire) == 0 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(200 + rng.below(5000)));
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = vec![spawn(&path, "producer", 2, &prod_env)];
        let t1 = Instant::now();
        while zones.word(sent(2)).load(Acquire) < 1000 && t1.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_micros(200));
        }
        zones.word(STOP).store(1, Release);
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_all(&mut second, deadline, "replacement producer", &ring);
        zones.word(DONE).store(1, Release);
        wait_all(&mut cons, deadline, "consumer", &ring);
        assert_delivered_clean(&zones, &format!("round {round}"));
        let (r1, s1) = (
            zones.word(received(1)).load(Acquire),
            zones.word(sent(1)).load(Acquire),
        );
        let (a, l) = (
            zones.word(attempt_start(1)).load(Acquire),
            zones.word(attempt_len(1)).load(Acquire),
        );
        assert!(
            r1 == s1 || (s1 == a && r1 == a + l),
            "round {round}: killed holder: received {r1}, sent {s1}, attempt {a}+{l}"
        );
        let (r2, s2) = (
            zones.word(received(2)).load(Acquire),
            zones.word(sent(2)).load(Acquire),
        );
        assert_eq!(r2, s2, "round {round}: the replacement's elements");
        assert!(
            s2 >= 1000,
            "round {round}: the replacement could not take over"
        );
        assert_eq!(
            ring.abandoned(),
            (0, 0),
            "round {round}: a holder abandons nothing"
        );
        let info = ring.info();
        assert_eq!(info.prod_tail as u64, r1 + r2, "round {round}\n{info}");
        assert_eq!(info.cons_tail, info.prod_tail);
        if flags.is_empty() {
            // The first producer's side was biased to it, and the replacement revoked that (the
            // consumer's final recover may revoke the replacement's, once it has exited).
            assert!((1..=2).contains(&info.revokes.0), "round {round}\n{info}");
        }
        drop(ring);
        drop(zones);
        FileZones::remove_files(&path);
    }
}

#[test]
fn producers_killed_at_random_points() {
    let rounds: usize = std::env::var("RTE_RING_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut rng = Rng::seeded();
    let mut rounds_with_abandon = 0;
    let mut killed_total = 0;
    let mut rts_recovered = 0;
    for round in 0..rounds {
        let flags = match round % 4 {
            3 => RingFlags::MP_HTS_ENQ,
            1 => RingFlags::MP_RTS_ENQ,
            _ => RingFlags::empty(),
        };
        // On an RTS side nobody waits behind a dead producer once the others stop: the group's
        // clean-up hook abandons it (procctl runs it when it sees the death); here the test
        // plays the hook with `recover` once the survivors are done.
        let rts = flags == RingFlags::MP_RTS_ENQ;
        let path = shm_path(&format!("kill{round}"));
        let _files = FileZones::removed_at_end(&path);
        let zones = FileZones::create(&path);
        let ring = Ring::<Elem>::create(&zones, "mp", 64, flags).unwrap();
        let mut cons = vec![spawn(
            &path,
            "consumer",
            8,
            &[("RTE_RING_MP_STRICT", "1".into())],
        )];
        let mut prods: Vec<(u16, Child)> = (1..=3u16)
            .map(|m| {
                let c = spawn(
                    &path,
                    "producer",
                    m,
                    &[
                        ("RTE_RING_MP_COUNT", "0".into()),
                        ("RTE_RING_MP_BURST", "16".into()),
                    ],
                );
                (m, c)
            })
            .collect();
        // let them get going, then kill one or two producers at random moments
        let t0 = Instant::now();
        while (1..=3).any(|p| zones.word(sent(p)).load(Acquire) == 0)
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        let kills = 1 + rng.below(2) as usize;
        let mut killed = vec![];
        for _ in 0..kills {
            std::thread::sleep(Duration::from_micros(500 + rng.below(8000)));
            let i = rng.below(prods.len() as u64) as usize;
            let (m, mut c) = prods.remove(i);
            c.kill().unwrap();
            c.wait().unwrap();
            killed.push(m as usize);
        }
        killed_total += killed.len();
        std::thread::sleep(Duration::from_millis(3));
        zones.word(STOP).store(1, Release);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut survivors: Vec<Child> = prods.into_iter().map(|(_, c)| c).collect();
        wait_all(&mut survivors, deadline, "surviving producers", &ring);
        if rts {
            let rep = ring.recover();
            assert!(
                rep.producer_busy.is_none() && !rep.pending,
                "round {round}: RTS recover left work: {rep:?}"
            );
            if rep.producer_abandoned > 0 {
                rts_recovered += 1;
            }
        }
        zones.word(DONE).store(1, Release);
        wait_all(&mut cons, deadline, "consumer", &ring);

        let info = ring.info();
        assert_delivered_clean(&zones, &format!("round {round}"));
        let mut delivered = 0;
        let mut lost_max = 0;
        for p in 1..=3usize {
            let r = zones.word(received(p)).load(Acquire);
            let s = zones.word(sent(p)).load(Acquire);
            let (a, l) = (
                zones.word(attempt_start(p)).load(Acquire),
                zones.word(attempt_len(p)).load(Acquire),
            );
            delivered += r;
            if killed.contains(&p) {
                // everything it published arrived: what it counted as sent, plus possibly the
                // burst it published just before it could count it
                assert!(
                    r == s || (s == a && r == a + l),
                    "round {round}: killed producer {p}: received {r}, sent {s}, attempt {a}+{l}"
                );
                if r == a {
                    lost_max += l;
                }
            } else {
                assert_eq!(r, s, "round {round}: live producer {p} lost elements");
            }
        }
        let (ab_enq, ab_deq) = ring.abandoned();
        assert_eq!(ab_deq, 0);
        assert!(
            ab_enq <= lost_max,
            "round {round}: abandoned {ab_enq} > possible {lost_max}"
        );
        assert_eq!(
            info.prod_tail as u64,
            delivered + ab_enq,
            "round {round}: positions used != delivered + abandoned\n{info}"
        );
        assert_eq!(
            info.cons_tail, info.prod_tail,
            "round {round}: consumer did not finish\n{info}"
        );
        assert_eq!(info.holes_pending, 0);
        if ab_enq > 0 {
            rounds_with_abandon += 1;
        }
        drop(ring);
        drop(zones);
        FileZones::remove_files(&path);
    }
    eprintln!(
        "{rounds} rounds, {killed_total} producers killed, {rounds_with_abandon} rounds where a \
         killed producer's reservation was abandoned mid-operation ({rts_recovered} RTS rounds \
         where the recover played as the clean-up hook abandoned one)"
    );
}
