//! Clean-up hooks: what the group runs when a member dies.
//!
//! A library that keeps per-member state in shared memory (a mempool's per-lcore caches, a ring's
//! reservations) registers a hook once per process, typically on first use. When a member dies,
//! the one survivor that cleans up after it (see `procctl`) calls every hook registered in its
//! own process with its [`Zones`] and the dead member's id. A hook must be idempotent and safe to
//! run while other members keep working; it returns a line for the report when it did something.
//!
//! A hook that finds state of the dead member it cannot clean yet (a ring reservation that waits
//! behind a live member's) calls [`unfinished`]: the cleaner then keeps the dead member's slot
//! out of use and runs the hooks again later, so that nothing of the dead member is ever taken
//! for a newcomer's in the same slot ([`run_all_checked`]).
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
static KINDS: Mutex<Vec<ZoneKind>> = Mutex::new(Vec::new());

/// Zone kinds whose objects keep per-member state (ring reservations and held sides, mempool
/// caches) that only their library's hook can clean. A cleaner whose process has no hook for a
/// kind present in the group reports it in [`HookRun::missing`]: a member that has used the
/// library must clean up instead.
pub const KINDS_WITH_MEMBER_STATE: [ZoneKind; 2] = [ZoneKind::Ring, ZoneKind::Mempool];

/// Register a hook that cleans the zones of `kind` (see [`KINDS_WITH_MEMBER_STATE`]).
///
/// ```
/// use shmconfig::{hooks, LocalZones, MemberId, ZoneKind, ZoneRequest, Zones};
/// let zones = LocalZones::new();
/// zones.reserve(&ZoneRequest::new("RG_x", 64, ZoneKind::Ring)).unwrap();
/// // No ring hook in this process: it must leave the clean-up to a member that has one.
/// let run = hooks::run_all_checked(&zones, MemberId(1));
/// assert_eq!(run.missing, vec![ZoneKind::Ring]);
/// assert!(!run.finished());
/// fn rings(_z: &dyn Zones, _dead: MemberId) -> Option<String> {
///     None
/// }
/// hooks::register_for(ZoneKind::Ring, rings);
/// assert!(hooks::run_all_checked(&zones, MemberId(1)).finished());
/// ```
pub fn register_for(kind: ZoneKind, hook: CleanupHook) {
    register(hook);
    let mut k = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    if !k.contains(&kind) {
        k.push(kind);
    }
}

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
    run_all_checked(zones, dead).lines
}

/// What [`run_all_checked`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// The hooks' report lines.
    pub lines: Vec<String>,
    /// Why the clean-up is not complete yet ([`unfinished`] calls); empty when it is.
    pub unfinished: Vec<String>,
    /// Kinds of [`KINDS_WITH_MEMBER_STATE`] the group has zones of but this process has no
    /// hook for (it never used their library): another member should clean up.
    pub missing: Vec<ZoneKind>,
}

impl HookRun {
    /// Nothing left to do for the dead member.
    pub fn finished(&self) -> bool {
        self.unfinished.is_empty() && self.missing.is_empty()
    }
}

thread_local! {
    static UNFINISHED: std::cell::RefCell<Option<Vec<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by a hook (inside [`run_all_checked`] on this thread): the dead member still has state
/// this hook could not clean yet, for `why`. Outside a run it does nothing.
pub fn unfinished(why: impl Into<String>) {
    UNFINISHED.with(|u| {
        if let Some(v) = u.borrow_mut().as_mut() {
            v.push(why.into());
        }
    });
}

/// Run every registered hook for `dead`: their report lines, and the reasons hooks gave (through
/// [`unfinished`]) why the clean-up must run again later.
///
/// ```
/// use shmconfig::{hooks, LocalZones, MemberId, Zones};
/// fn waits(_z: &dyn Zones, dead: MemberId) -> Option<String> {
///     hooks::unfinished(format!("{dead} still owns something"));
///     None
/// }
/// hooks::register(waits);
/// let run = hooks::run_all_checked(&LocalZones::new(), MemberId(2));
/// assert_eq!(run.unfinished, vec!["member 2 still owns something".to_string()]);
/// ```
pub fn run_all_checked(zones: &dyn Zones, dead: MemberId) -> HookRun {
    UNFINISHED.with(|u| *u.borrow_mut() = Some(Vec::new()));
    let lines = registered()
        .into_iter()
        .filter_map(|h| h(zones, dead))
        .collect();
    let unfinished = UNFINISHED
        .with(|u| u.borrow_mut().take())
        .unwrap_or_default();
    let have = KINDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let present = zones.list();
    let missing = KINDS_WITH_MEMBER_STATE
        .into_iter()
        .filter(|k| !have.contains(k) && present.iter().any(|z| z.kind == *k))
        .collect();
    HookRun {
        lines,
        unfinished,
        missing,
    }
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
