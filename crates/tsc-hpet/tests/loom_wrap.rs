//! A loom model of the 32-bit HPET counter extension (`extend_32`): two readers race each other
//! and a counter that wraps; every interleaving must give each reader exactly the 64-bit value
//! it read, and `state` must never move backwards.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p tsc-hpet --release --test loom_wrap`
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use tsc_hpet::hpet::extend_32;

/// Starts 16 ticks before a wrap, advances in steps that cross it; total advance stays well
/// under half a wrap, the documented requirement.
fn model(steps: &'static [u64], reads_per_reader: usize) {
    loom::model(move || {
        let start = 0xffff_fff0u64;
        let hw = Arc::new(AtomicU64::new(start));
        let state = Arc::new(AtomicU64::new(start));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (hw, state) = (hw.clone(), state.clone());
                thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..reads_per_reader {
                        let full = hw.load(Ordering::SeqCst);
                        let got = extend_32(&state, full as u32);
                        assert_eq!(got, full, "read {full:#x}, extended to {got:#x}");
                        assert!(got >= last, "a reader went backwards");
                        last = got;
                    }
                })
            })
            .collect();
        for &s in steps {
            hw.fetch_add(s, Ordering::SeqCst);
        }
        for r in readers {
            r.join().unwrap();
        }
        let end = hw.load(Ordering::SeqCst);
        assert_eq!(extend_32(&state, end as u32), end);
        assert!(state.load(Ordering::SeqCst) <= end);
    });
}

#[test]
fn two_readers_across_one_wrap() {
    model(&[0x20], 2);
}

#[test]
fn two_readers_across_a_wrap_and_a_large_step() {
    model(&[0x10, 0x10, 0x7000_0000], 2);
}
