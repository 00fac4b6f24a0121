//! Biased sides: the process-wide pieces (which thread is which, and the asymmetric fence).
//!
//! A side of a multi-member ring used by one thread at a time is *biased* to that thread: its
//! head word names the thread (`tag | member | BIASED`) and the thread's calls run the
//! single-member path, with plain loads and stores. Any other caller *revokes* the bias before it
//! goes on (see the crate docs, "Biased sides"). The bias and the holder's in-flight flag are a
//! Dekker pair whose two fences are unequal: the holder's side is a compiler fence, the
//! revoker's is `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs a full fence on every
//! CPU that runs a thread of a registered process. A process may take a bias only once it has
//! registered (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`); without membarrier (an old kernel, a
//! seccomp filter, Miri) nothing is ever biased and every call runs the multi-member protocol.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Tags fit in the low 28 bits of a head word's position field; the top 4 hold the bias
/// generation.
pub(crate) const TAG_BITS: u32 = 28;

/// Tags handed to threads, from 1 (0 means "none yet").
static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

#[cfg(not(hugeshare_loom))]
std::thread_local! {
    static TAG: Cell<u32> = const { Cell::new(0) };
}
#[cfg(hugeshare_loom)]
loom::thread_local! {
    static TAG: Cell<u32> = Cell::new(0);
}

/// This thread's tag: 0 if it has none yet, `u32::MAX` if it may not hold a bias (the hot
/// path: no allocation, no registration).
#[inline(always)]
pub(crate) fn tag() -> u32 {
    TAG.with(|t| t.get())
}

/// This thread's tag, given on first use; `None` when this process may not take a bias (no
/// membarrier, or the tags ran out).
#[cold]
pub(crate) fn tag_for_bias() -> Option<u32> {
    if !capable() {
        TAG.with(|t| t.set(u32::MAX));
        return None;
    }
    let t = TAG.with(|t| {
        if t.get() == 0 {
            let n = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
            // u32::MAX: the tags ran out (no tag is handed out twice).
            t.set(if n == 0 || n >= 1 << TAG_BITS {
                u32::MAX
            } else {
                n
            });
        }
        t.get()
    });
    (t != u32::MAX).then_some(t)
}

/// 0: not asked yet; 1: registered for expedited global membarrier; 2: not available.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether this process may hold a bias: it registered for the expedited global membarrier
/// (asked once).
fn capable() -> bool {
    match STATE.load(Ordering::Acquire) {
        1 => true,
        2 => false,
        _ => {
            let ok = register();
            STATE.store(if ok { 1 } else { 2 }, Ordering::Release);
            ok
        }
    }
}

#[cfg(all(not(hugeshare_loom), not(miri), target_os = "linux"))]
fn register() -> bool {
    use rustix::thread::{membarrier, membarrier_query, MembarrierCommand, MembarrierQuery};
    let q = membarrier_query();
    q.contains(MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED)
        && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
}

#[cfg(any(miri, not(target_os = "linux")))]
#[cfg(not(hugeshare_loom))]
fn register() -> bool {
    false
}

#[cfg(hugeshare_loom)]
fn register() -> bool {
    true
}

/// The holder's half of the asymmetric fence: orders its in-flight store before its reload of
/// the head word. A compiler fence suffices because the revoker's membarrier runs a full fence
/// on the holder's CPU (or the holder is not running, and a context switch is a full fence).
#[inline(always)]
pub(crate) fn light_fence() {
    #[cfg(hugeshare_loom)]
    crate::sync::fence(crate::sync::Ordering::SeqCst);
    #[cfg(not(hugeshare_loom))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The revoker's half: a full fence on every CPU running a thread of a registered process. Only
/// called when a bias was taken, so this process's kernel has the command.
#[cold]
pub(crate) fn heavy_fence() {
    #[cfg(hugeshare_loom)]
    crate::sync::fence(crate::sync::Ordering::SeqCst);
    #[cfg(all(not(hugeshare_loom), not(miri), target_os = "linux"))]
    {
        use rustix::thread::{membarrier, MembarrierCommand};
        std::sync::atomic::fence(Ordering::SeqCst);
        if membarrier(MembarrierCommand::GlobalExpedited).is_err() {
            // Never seen: a holder registered, so the kernel has the command. The slow global
            // barrier (an RCU grace period) gives the same guarantee without registration.
            if let Err(e) = membarrier(MembarrierCommand::Global) {
                panic!("rte-ring: membarrier failed ({e}); a biased ring side cannot be revoked");
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}
