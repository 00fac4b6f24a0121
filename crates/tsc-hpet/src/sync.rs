//! The atomics of the 32-bit counter extension, from `loom` under `cfg(loom)` so that the
//! model in `tests/loom_wrap.rs` checks the very code that runs.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering};
