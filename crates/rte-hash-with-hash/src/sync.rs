//! The atomics the table uses, from one place: `std` normally, `loom` under
//! `cfg(hugeshare_loom)` so that the model in `tests/loom.rs` checks the shipping code.

#[cfg(hugeshare_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(hugeshare_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Called in every busy-wait loop.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(hugeshare_loom)]
    loom::thread::yield_now();
    #[cfg(not(hugeshare_loom))]
    std::hint::spin_loop();
}

/// Called when a wait has lasted long enough to give the CPU away.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(hugeshare_loom)]
    loom::thread::yield_now();
    #[cfg(not(hugeshare_loom))]
    std::thread::yield_now();
}
