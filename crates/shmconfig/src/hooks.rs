//! Clean-up hooks: what the group runs when a member dies.
//!
//! A library that keeps per-member state in shared memory (a mempool's per-lcore caches, a ring's
//! reservations) registers a hook once per process, typically on first use. When a member dies,
//! the one survivor that cleans up after it (see `procctl`) calls every hook registered in its
//! own process with its [`Zones`] and the dead member's id. A hook must be idempotent and safe to
//! run while other members keep working; it returns a line for the report when it did something.
//!
//! ```
//! use shmconfig::{hooks, MemberId, Zones};
//! fn flush(_z: &dyn Zones, dead: MemberId) -> Option<String> {
//!     Some(format!("flushed nothing of {dead}"))
//! }
//! hooks::register(flush);
//! hooks::register(flush); // once only
//! assert_eq!(hooks::registered().len(), 1);
//! ```

use std::sync::Mutex;

use crate::zones::{MemberId, Zones};

/// A clean-up hook: runs in the cleaning member with its zones and the dead member's id.
pub type CleanupHook = fn(&dyn Zones, MemberId) -> Option<String>;

static HOOKS: Mutex<Vec<CleanupHook>> = Mutex::new(Vec::new());

/// Register a hook in this process (a hook registered twice runs once).
pub fn register(hook: CleanupHook) {
    let mut v = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    if !v.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        v.push(hook);
    }
}

/// The hooks registered in this process, in registration order.
pub fn registered() -> Vec<CleanupHook> {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Run every registered hook for `dead`, collecting their report lines.
pub fn run_all(zones: &dyn Zones, dead: MemberId) -> Vec<String> {
    registered()
        .into_iter()
        .filter_map(|h| h(zones, dead))
        .collect()
}
