//! The atomics facade: std's atomics normally, loom's under `cfg(hugeshare_loom)`, so that the
//! model tests check the same protocol code that ships.

#[cfg(hugeshare_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(hugeshare_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

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

/// How many spins a waiter makes between two looks at its peers' liveness (a power of two).
pub(crate) const SPINS_PER_CHECK: u32 = if cfg!(hugeshare_loom) { 1 } else { 1 << 12 };
