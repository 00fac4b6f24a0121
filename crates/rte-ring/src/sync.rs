//! The atomics facade: std's atomics normally, loom's under `cfg(hugeshare_loom)`, so that the
//! model tests check the same protocol code that ships.

#[cfg(hugeshare_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(hugeshare_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// One step of a wait loop.
#[inline(always)]
pub(crate) fn spin() {
    #[cfg(hugeshare_loom)]
    loom::thread::yield_now();
    #[cfg(not(hugeshare_loom))]
    core::hint::spin_loop();
}

/// Give the CPU away (a waiter that spun long may be waiting on a preempted peer).
#[inline(never)]
pub(crate) fn yield_now() {
    #[cfg(hugeshare_loom)]
    loom::thread::yield_now();
    #[cfg(not(hugeshare_loom))]
    std::thread::yield_now();
}

/// Whether a waiter that has spun `spins` times should look at its peers' liveness now (every
/// 4096 spins; every time in the loom build).
#[inline(always)]
pub(crate) fn time_to_check(spins: u32) -> bool {
    cfg!(hugeshare_loom) || spins % 4096 == 0
}
