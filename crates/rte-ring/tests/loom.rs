//! loom models of the MP/MC, HTS and RTS protocols, of biased sides and their revocation, and
//! of the dead-member rule, over the same code that ships (the crate's `sync` module switches to
//! loom's atomics; the asymmetric fence of a biased side is modelled as a sequentially
//! consistent fence on both of its halves, which is what membarrier provides).
//!
//! `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg hugeshare_loom" cargo test -p rte-ring --release --test loom`
#![cfg(hugeshare_loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use rte_ring::{Ring, RingFlags};
use shmconfig::{Liveness, MemberId, MemberState};

/// Members 0..4, each alive until `kill`.
#[derive(Debug)]
struct Lives([AtomicBool; 4]);

impl Lives {
    fn new() -> Arc<Self> {
        Arc::new(Lives(std::array::from_fn(|_| AtomicBool::new(true))))
    }
    fn kill(&self, m: u16) {
        self.0[m as usize].store(false, Ordering::Release);
    }
}

impl Liveness for Lives {
    fn member_state(&self, m: MemberId) -> MemberState {
        match self.0.get(m.0 as usize) {
            Some(a) if a.load(Ordering::Acquire) => MemberState::Alive,
            Some(_) => MemberState::Dead,
            None => MemberState::Alive,
        }
    }
}

/// A model ring whose sides are never biased: the models below check the multi-member
/// protocols themselves (the biased sides have models of their own, at the end).
fn ring(count: u32, flags: RingFlags, lives: &Arc<Lives>) -> Ring<u64> {
    let r = Ring::model(count, flags, MemberId(0), lives.clone());
    r.disable_bias();
    r
}

fn two_producers_one_consumer(flags: RingFlags) {
    loom::model(move || {
        let lives = Lives::new();
        let r = ring(4, flags, &lives);
        let p: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|v| {
                let r = r.as_member(MemberId(v as u16));
                thread::spawn(move || assert_eq!(r.enqueue_bulk(&[v]), 1))
            })
            .collect();
        let mut got = vec![];
        let mut buf = [0u64; 2];
        let n = r.dequeue_burst(&mut buf);
        got.extend_from_slice(&buf[..n]);
        for h in p {
            h.join().unwrap();
        }
        loop {
            let n = r.dequeue_burst(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert!(r.is_empty());
    });
}

#[test]
fn mp_enqueue() {
    two_producers_one_consumer(RingFlags::empty());
}

#[test]
fn hts_enqueue() {
    two_producers_one_consumer(RingFlags::MP_HTS_ENQ | RingFlags::MC_HTS_DEQ);
}

/// RTS: a producer that finishes before its predecessor leaves a completion mark instead of
/// waiting; whoever publishes up to it takes the mark. Both elements must be published once
/// both producers have returned, whatever the interleaving.
#[test]
fn rts_enqueue() {
    two_producers_one_consumer(RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ);
}

fn two_consumers(flags: RingFlags) {
    loom::model(move || {
        let lives = Lives::new();
        let r = ring(4, flags, &lives);
        assert_eq!(r.enqueue_bulk(&[1, 2]), 2);
        let c: Vec<_> = (1..3u16)
            .map(|m| {
                let r = r.as_member(MemberId(m));
                thread::spawn(move || r.dequeue())
            })
            .collect();
        let mut got: Vec<u64> = c.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![1, 2]);
        // Both consumers returned: their slots are given back to producers.
        assert!(r.is_empty());
        assert_eq!(r.free_count(), r.capacity());
    });
}

#[test]
fn rts_dequeue() {
    two_consumers(RingFlags::MP_RTS_ENQ | RingFlags::MC_RTS_DEQ);
}

#[test]
fn mc_dequeue() {
    two_consumers(RingFlags::empty());
}

#[test]
fn hts_dequeue() {
    two_consumers(RingFlags::MP_HTS_ENQ | RingFlags::MC_HTS_DEQ);
}

/// A producer and a consumer wrap around a ring of 2 slots: the consumer sees 1, 2, 3 in order.
#[test]
fn mp_mc_wrap_fifo() {
    loom::model(|| {
        let lives = Lives::new();
        let r = ring(2, RingFlags::empty(), &lives);
        let p = {
            let r = r.as_member(MemberId(1));
            thread::spawn(move || {
                for v in 1..=3u64 {
                    while r.enqueue(v).is_err() {
                        thread::yield_now();
                    }
                }
            })
        };
        for want in 1..=3u64 {
            loop {
                if let Some(v) = r.dequeue() {
                    assert_eq!(v, want);
                    break;
                }
                thread::yield_now();
            }
        }
        p.join().unwrap();
    });
}

/// Member 1 dies between its reservation and its publication; member 2 enqueues behind it and
/// must not wedge: its wait abandons the dead range; the consumer never sees the dead slot.
fn dead_producer(flags: RingFlags) {
    loom::model(move || {
        let lives = Lives::new();
        let r = ring(4, flags, &lives);
        let victim = {
            let r = r.as_member(MemberId(1));
            let lives = lives.clone();
            thread::spawn(move || {
                assert_eq!(r.test_reserve_and_vanish(false, 1), 1);
                lives.kill(1);
            })
        };
        let live = {
            let r = r.as_member(MemberId(2));
            thread::spawn(move || assert_eq!(r.enqueue_bulk(&[7]), 1))
        };
        victim.join().unwrap();
        live.join().unwrap();
        r.recover();
        let mut buf = [0u64; 4];
        assert_eq!(r.dequeue_burst(&mut buf), 1);
        assert_eq!(buf[0], 7);
        assert_eq!(r.abandoned(), (1, 0));
        assert!(r.is_empty());
    });
}

#[test]
fn dead_producer_mp() {
    dead_producer(RingFlags::empty());
}

#[test]
fn dead_producer_hts() {
    dead_producer(RingFlags::MP_HTS_ENQ);
}

/// A consumer dies holding a reservation while another consumer dequeues behind it.
#[test]
fn dead_consumer_mc() {
    loom::model(|| {
        let lives = Lives::new();
        let r = ring(4, RingFlags::empty(), &lives);
        assert_eq!(r.enqueue_bulk(&[1, 2]), 2);
        let victim = {
            let r = r.as_member(MemberId(1));
            let lives = lives.clone();
            thread::spawn(move || {
                assert_eq!(r.test_reserve_and_vanish(true, 1), 1);
                lives.kill(1);
            })
        };
        let live = {
            let r = r.as_member(MemberId(2));
            thread::spawn(move || r.dequeue())
        };
        victim.join().unwrap();
        let got = live.join().unwrap();
        r.recover();
        // the live consumer got whichever element the dead one did not reserve
        assert!(matches!(got, Some(1) | Some(2)));
        assert_eq!(r.abandoned(), (0, 1));
        assert!(r.is_empty());
        assert_eq!(r.free_count(), 3);
    });
}

/// A waiting consumer and a recovering helper race to step over an abandoned range.
#[test]
fn consumer_steps_over_hole_while_producer_recovers() {
    loom::model(|| {
        let lives = Lives::new();
        let r = ring(4, RingFlags::empty(), &lives);
        assert_eq!(
            r.as_member(MemberId(1)).test_reserve_and_vanish(false, 1),
            1
        );
        lives.kill(1);
        let p = {
            let r = r.as_member(MemberId(2));
            thread::spawn(move || assert_eq!(r.enqueue_bulk(&[5]), 1))
        };
        let c = {
            let r = r.as_member(MemberId(3));
            thread::spawn(move || r.dequeue())
        };
        p.join().unwrap();
        let first = c.join().unwrap();
        let rest = r.dequeue();
        assert_eq!(first.or(rest), Some(5));
        assert!(first.is_none() || rest.is_none());
        assert_eq!(r.abandoned(), (1, 0));
    });
}

/// Two members die one after the other with reservations in flight, racing each other; a third
/// enqueues behind them: the chain unwinds through the reservation records.
#[test]
fn chain_of_dead_producers() {
    loom::model(|| {
        let lives = Lives::new();
        let r = ring(8, RingFlags::empty(), &lives);
        let victims: Vec<_> = [1u16, 2]
            .into_iter()
            .map(|m| {
                let r = r.as_member(MemberId(m));
                let lives = lives.clone();
                thread::spawn(move || {
                    assert_eq!(r.test_reserve_and_vanish(false, m as u32), m as u32);
                    lives.kill(m);
                })
            })
            .collect();
        for v in victims {
            v.join().unwrap();
        }
        let live = r.as_member(MemberId(3));
        assert_eq!(live.enqueue_bulk(&[9]), 1);
        let mut buf = [0u64; 8];
        assert_eq!(r.dequeue_burst(&mut buf), 1);
        assert_eq!(buf[0], 9);
        assert_eq!(r.abandoned(), (3, 0));
    });
}

/// A single-producer handle claimed, used and given back while a member enqueues through the
/// shared multi-producer call and the consumer (a handle too) takes what is published: both
/// elements arrive once, and the side ends free. Breaks if the claim does not wait for the
/// multi-producer reservation in flight, or the shared call does not wait for the holder.
#[test]
fn single_producer_hold_races_a_shared_enqueue() {
    loom::model(|| {
        let lives = Lives::new();
        let r = ring(4, RingFlags::empty(), &lives);
        let a = r.as_member(MemberId(1));
        let ta = thread::spawn(move || {
            let mut h = a.single_producer().expect("only one claimer");
            assert_eq!(h.enqueue_bulk(&[1]), 1);
        });
        let b = r.as_member(MemberId(2));
        let tb = thread::spawn(move || assert_eq!(b.enqueue_bulk(&[2]), 1));
        let mut rx = r.single_consumer().unwrap();
        let mut got = vec![];
        let mut buf = [0u64; 2];
        let n = rx.dequeue_burst(&mut buf);
        got.extend_from_slice(&buf[..n]);
        ta.join().unwrap();
        tb.join().unwrap();
        loop {
            let n = rx.dequeue_burst(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(r.info().producer_holder, None);
    });
}

/// The main thread biases the producer side (its first enqueue); a second member's producer
/// revokes the bias while the main thread enqueues again. Every element is delivered once, and
/// the main thread's two in order.
#[test]
fn biased_producer_revoked_by_a_second_one() {
    loom::model(|| {
        let lives = Lives::new();
        let r = Ring::<u64>::model(4, RingFlags::empty(), MemberId(0), lives.clone());
        assert_eq!(r.enqueue_bulk(&[1]), 1);
        assert_eq!(r.info().producer_bias, Some(MemberId(0)));
        let other = {
            let r = r.as_member(MemberId(1));
            thread::spawn(move || assert_eq!(r.enqueue_bulk(&[2]), 1))
        };
        assert_eq!(r.enqueue_bulk(&[3]), 1);
        other.join().unwrap();
        let mut buf = [0u64; 4];
        assert_eq!(r.dequeue_burst(&mut buf), 3);
        let mine: Vec<u64> = buf[..3].iter().copied().filter(|&v| v != 2).collect();
        assert_eq!(mine, vec![1, 3]);
        assert!(buf[..3].contains(&2));
        assert!(r.is_empty());
        assert_eq!(r.abandoned(), (0, 0));
    });
}

/// The consumer side is biased to the main thread; a second member's consumer revokes it while
/// the main thread dequeues. Each element goes to exactly one of them.
#[test]
fn biased_consumer_revoked_by_a_second_one() {
    loom::model(|| {
        let lives = Lives::new();
        let r = Ring::<u64>::model(4, RingFlags::empty(), MemberId(0), lives.clone());
        assert_eq!(r.enqueue_bulk(&[1, 2, 3]), 3);
        assert_eq!(r.dequeue(), Some(1));
        assert_eq!(r.info().consumer_bias, Some(MemberId(0)));
        let other = {
            let r = r.as_member(MemberId(1));
            thread::spawn(move || r.dequeue())
        };
        let a = r.dequeue();
        let b = other.join().unwrap();
        let mut got: Vec<u64> = [a, b].into_iter().flatten().collect();
        got.sort();
        assert_eq!(got, vec![2, 3]);
        assert!(r.is_empty());
    });
}

/// The thread the producer side is biased to dies in the middle of an enqueue (its member is
/// dead, its in-flight flag still up): another member's enqueue revokes the bias without
/// waiting, and the dead enqueue is never seen.
#[test]
fn biased_producer_dies_mid_enqueue() {
    loom::model(|| {
        let lives = Lives::new();
        let r = Ring::<u64>::model(4, RingFlags::empty(), MemberId(0), lives.clone());
        let victim = {
            let r = r.as_member(MemberId(1));
            let lives = lives.clone();
            thread::spawn(move || {
                let (n, biased) = r.test_reserve_and_vanish_biased(false, 1);
                lives.kill(1);
                (n, biased)
            })
        };
        let live = {
            let r = r.as_member(MemberId(2));
            thread::spawn(move || assert_eq!(r.enqueue_bulk(&[7]), 1))
        };
        let (n, _) = victim.join().unwrap();
        assert_eq!(n, 1);
        live.join().unwrap();
        r.recover();
        let mut buf = [0u64; 4];
        assert_eq!(r.dequeue_burst(&mut buf), 1);
        assert_eq!(buf[0], 7);
        assert!(r.is_empty());
    });
}
