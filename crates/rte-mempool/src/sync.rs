//! The atomics facade: std's atomics normally, loom's under `cfg(hugeshare_loom)`, so that the
//! model test checks the cache code that ships.

#[cfg(hugeshare_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(hugeshare_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// Give the CPU away while waiting on a live peer.
#[inline(never)]
pub(crate) fn yield_now() {
    #[cfg(hugeshare_loom)]
    loom::thread::yield_now();
    #[cfg(not(hugeshare_loom))]
    std::thread::yield_now();
}
