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

use crate::zones::{MemberId, ZoneKind, Zones};

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

/// The common shape of a library's hook: call `recover(zone name, object name)` for every zone of
/// `kind` named `<prefix><object name>`, and gather the lines it returns into the report line
/// for `dead` (`None` when no object needed anything).
///
/// ```
/// use shmconfig::{hooks, LocalZones, MemberId, ZoneKind, ZoneRequest, Zones};
/// let zones = LocalZones::new();
/// zones.reserve(&ZoneRequest::new("RG_a", 64, ZoneKind::Ring)).unwrap();
/// zones.reserve(&ZoneRequest::new("RG_b", 64, ZoneKind::Ring)).unwrap();
/// let line = hooks::recover_each(&zones, MemberId(3), ZoneKind::Ring, "RG_", |_, name| {
///     (name == "b").then(|| format!("ring {name}: fixed"))
/// });
/// assert_eq!(line.as_deref(), Some("after member 3: ring b: fixed"));
/// ```
pub fn recover_each(
    zones: &dyn Zones,
    dead: MemberId,
    kind: ZoneKind,
    prefix: &str,
    mut recover: impl FnMut(&str, &str) -> Option<String>,
) -> Option<String> {
    let lines: Vec<String> = zones
        .list()
        .iter()
        .filter(|z| z.kind == kind)
        .filter_map(|z| recover(&z.name, z.name.strip_prefix(prefix)?))
        .collect();
    (!lines.is_empty()).then(|| format!("after {dead}: {}", lines.join("; ")))
}
