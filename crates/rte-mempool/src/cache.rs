//! The per-lcore cache algorithm (DPDK's, over object handles), the claim of a cache by its
//! lcore's owner and the flush of a dead owner's cache by a recoverer.
//!
//! Every move of an object between places (ring, cache, caller) removes it from its source
//! before it adds it to its destination, so a member killed between two steps can lose objects
//! (they are then in no place; a tracked pool's audit finds them) but never makes one appear in
//! two places.

use rte_ring::Ring;

use crate::layout::{kind_of, member_of, CacheSlot, CACHE_OBJS, KIND_LOCKED};
use crate::obj::{Conv, Obj};
use crate::sync::{yield_now, Ordering::*};

#[cfg(not(hugeshare_loom))]
use crate::raw::{
    handles_of_runs, load_h, load_objs, objs_of_handles, objs_of_runs, store_h, store_objs,
};

/// Largest request the cache serves (larger ones go straight to the ring).
pub(crate) const CACHE_REQ_MAX: usize = CACHE_OBJS / 2;

// The copies in and out of a cache: plain copies over the owner's cache in the normal build
// (`raw`), atomic loops in the model build.
#[cfg(hugeshare_loom)]
fn load_objs(c: &CacheSlot, from: usize, out: &mut [Obj], conv: Conv) -> bool {
    let mut ok = true;
    for (k, o) in out.iter_mut().enumerate() {
        let off = c.objs[from + k].load(Relaxed);
        ok &= conv.offset_ok(off);
        *o = conv.obj_at(off);
    }
    ok
}
#[cfg(hugeshare_loom)]
fn store_objs(c: &CacheSlot, at: usize, objs: &[Obj], conv: Conv) {
    for (k, o) in objs.iter().enumerate() {
        c.objs[at + k].store(conv.offset(*o), Relaxed);
    }
}
#[cfg(hugeshare_loom)]
fn load_h(c: &CacheSlot, from: usize, out: &mut [u32], conv: Conv) {
    for (k, o) in out.iter_mut().enumerate() {
        *o = conv.handle_of_offset(c.objs[from + k].load(Relaxed));
    }
}
#[cfg(hugeshare_loom)]
fn store_h(c: &CacheSlot, at: usize, src: &[u32], conv: Conv) {
    for (k, v) in src.iter().enumerate() {
        c.objs[at + k].store(conv.offset_of_handle(*v), Relaxed);
    }
}
#[cfg(hugeshare_loom)]
fn objs_of_handles(out: &mut [Obj], src: &[u32], conv: Conv) -> bool {
    let mut ok = true;
    for (o, &h) in out.iter_mut().zip(src) {
        ok &= conv.checked_obj(h).is_some();
        *o = conv.obj(h);
    }
    ok
}
#[cfg(hugeshare_loom)]
fn handles_of_objs(out: &mut [u32], objs: &[Obj], conv: Conv) {
    for (h, &o) in out.iter_mut().zip(objs) {
        *h = conv.handle(o);
    }
}

/// How a get ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Got {
    /// `out` is filled.
    All,
    /// Too few objects: nothing was taken.
    Short,
    /// Values read from shared memory (the free ring or the cache) named no object: they were
    /// dropped, and this many objects are lost (those, and any the ring refused back), to be
    /// counted as violations. Nothing was handed out (`out` is cleared); the valid objects of
    /// the same claim are back in the pool (the ring, or the cache they came from).
    Dropped(usize),
}

/// Take `out.len()` objects for the caller: the top of the cache (a stack); when it holds too
/// few, it is refilled from the ring with `size + remaining` objects in one bulk; if that
/// fails, the remainder comes straight from the ring; if that fails too, nothing is taken (all
/// or nothing). `scratch` has at least `CACHE_OBJS` entries.
///
/// `mirror` is the owner's private copy of the cache's length (the shared `len` is written
/// after every change, for counts and for recovery, but never read here: the owner is its only
/// writer, and a value a peer wrote there must not size a copy).
#[inline(always)]
pub(crate) fn get(
    c: &CacheSlot,
    mirror: &mut u32,
    ring: &Ring<u32>,
    size: u32,
    out: &mut [Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> Got {
    let n = out.len();
    let len = *mirror as usize;
    if n <= len {
        let rest = len - n;
        if !load_objs(c, rest, out, conv) {
            return scrub(c, mirror, out, conv);
        }
        *mirror = rest as u32;
        c.len.store(rest as u32, Relaxed);
        return Got::All;
    }
    get_refill(c, mirror, ring, size, out, scratch, conv)
}

#[inline(never)]
fn get_refill(
    c: &CacheSlot,
    mirror: &mut u32,
    ring: &Ring<u32>,
    size: u32,
    out: &mut [Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> Got {
    let n = out.len();
    let len = *mirror as usize;
    if n > CACHE_REQ_MAX {
        return get_direct(ring, out, scratch, &conv);
    }
    let remaining = n - len;
    let want = size as usize + remaining;
    if ring.dequeue_bulk(&mut scratch[..want]) == want {
        // The new handles enter the cache unchecked: every offset is checked as it leaves it.
        store_h(c, len, &scratch[..want], conv);
        let total = len + want;
        *mirror = total as u32;
        if !load_objs(c, total - n, out, conv) {
            return scrub(c, mirror, out, conv);
        }
        *mirror = (total - n) as u32;
        c.len.store((total - n) as u32, Relaxed);
        return Got::All;
    }
    if ring.dequeue_bulk(&mut scratch[..remaining]) != remaining {
        return Got::Short;
    }
    let (from_cache, from_ring) = out.split_at_mut(len);
    let cache_ok = load_objs(c, 0, from_cache, conv);
    if !objs_of_handles(from_ring, &scratch[..remaining], conv) {
        // The cache is left as it was (`len` unchanged): only the ring's claim is dropped or
        // put back.
        out.fill(Obj::empty());
        return Got::Dropped(put_back_valid(ring, &scratch[..remaining], conv));
    }
    if !cache_ok {
        let refused = put_direct(ring, from_ring, scratch, &conv);
        return match scrub(c, mirror, out, conv) {
            Got::Dropped(k) => Got::Dropped(k + refused),
            g => g,
        };
    }
    *mirror = 0;
    c.len.store(0, Relaxed);
    Got::All
}

/// The cache's first `*mirror` entries held an offset naming no object (only a peer writing
/// into this member's cache puts one there): keep the valid entries (in order), drop the
/// others, clear `out` (the caller hands nothing out). Returns [`Got::Dropped`] with the
/// number dropped (at least 1).
#[cold]
#[inline(never)]
pub(crate) fn scrub(c: &CacheSlot, mirror: &mut u32, out: &mut [Obj], conv: Conv) -> Got {
    let len = (*mirror as usize).min(CACHE_OBJS);
    let mut kept = 0;
    for k in 0..len {
        let off = c.objs[k].load(Relaxed);
        if off <= conv.max_off as u64 {
            c.objs[kept].store(off, Relaxed);
            kept += 1;
        }
    }
    *mirror = kept as u32;
    c.len.store(kept as u32, Relaxed);
    out.fill(Obj::empty());
    Got::Dropped((len - kept).max(1))
}

/// A claim from the ring held handles naming no object: put the valid ones back, drop the
/// others. Returns how many objects are lost (dropped, or refused by the ring).
#[cold]
#[inline(never)]
fn put_back_valid(ring: &Ring<u32>, handles: &[u32], conv: Conv) -> usize {
    let valid: Vec<u32> = handles
        .iter()
        .copied()
        .filter(|&h| conv.checked_obj(h).is_some())
        .collect();
    let mut lost = handles.len() - valid.len();
    for chunk in valid.chunks(rte_ring::MAX_OP) {
        lost += chunk.len() - ring.enqueue_bulk(chunk);
    }
    lost.max(1)
}

/// [`put_back_valid`] for a claim already converted into `out` (the in-place get): the
/// objects inside the objects area go back to the ring, `out` is cleared.
#[cold]
#[inline(never)]
fn put_back_valid_objs(ring: &Ring<u32>, out: &mut [Obj], conv: Conv) -> Got {
    let valid: Vec<u32> = out
        .iter()
        .filter(|o| conv.contains(**o))
        .map(|o| conv.handle(*o))
        .collect();
    let mut lost = out.len() - valid.len();
    for chunk in valid.chunks(rte_ring::MAX_OP) {
        lost += chunk.len() - ring.enqueue_bulk(chunk);
    }
    out.fill(Obj::empty());
    Got::Dropped(lost.max(1))
}

/// Take `out.len()` objects straight from the ring, all or nothing. A handle read from the
/// ring that names no object is never handed out: the get takes nothing and returns
/// [`Got::Dropped`] (the claim's valid objects go back to the ring). Requests above the ring's
/// [`rte_ring::MAX_OP`] are taken in several claims ([`get_direct_large`]).
///
/// `conv` is taken by reference so that its fields are read where the handles are converted,
/// after the ring's CAS: by value, the compiler copied them to the stack before the CAS, two
/// more stores for the locked instruction to wait on (the same for [`put_direct`]).
#[inline(always)]
pub(crate) fn get_direct(
    ring: &Ring<u32>,
    out: &mut [Obj],
    scratch: &mut [u32],
    conv: &Conv,
) -> Got {
    if let [o] = out {
        // One object: the ring's single dequeue, by value (no buffer, no copy loop).
        return match ring.dequeue() {
            Some(h) => match conv.checked_obj(h) {
                Some(x) => {
                    *o = x;
                    Got::All
                }
                None => Got::Dropped(1),
            },
            None => Got::Short,
        };
    }
    if out.len() > rte_ring::MAX_OP {
        return get_direct_large(ring, out, scratch, *conv);
    }
    get_direct_bulk(ring, out, scratch, conv)
}

/// A get of more than [`rte_ring::MAX_OP`] objects (more than one claim of the ring can move):
/// claims of up to `MAX_OP` in a row; if one fails, the objects of the earlier ones go back to
/// the ring and nothing is taken. Other members may meanwhile see the ring emptier than the
/// pool is (it is not one atomic step), and a member killed in the middle loses what it held,
/// as for any move.
#[cold]
#[inline(never)]
fn get_direct_large(ring: &Ring<u32>, out: &mut [Obj], scratch: &mut [u32], conv: Conv) -> Got {
    // `conv` by value: the caller's is a field of `LocalPool`, whose address must not reach a
    // call (see its fields).
    let conv = &conv;
    let n = out.len();
    let mut done = 0;
    while done < n {
        let m = (n - done).min(rte_ring::MAX_OP);
        match get_direct_bulk(ring, &mut out[done..done + m], scratch, conv) {
            Got::All => done += m,
            failed => {
                let refused = put_direct(ring, &out[..done], scratch, conv);
                out[..done].fill(Obj::empty());
                return match failed {
                    Got::Dropped(k) => Got::Dropped(k + refused),
                    _ if refused > 0 => Got::Dropped(refused),
                    g => g,
                };
            }
        }
    }
    Got::All
}

/// Without the loom build: the handles are converted in place, straight out of the ring's
/// slots (no buffer between the ring and `out`), and checked on the way (`out.len() ≤
/// MAX_OP`).
#[cfg(not(hugeshare_loom))]
#[inline(always)]
fn get_direct_bulk(ring: &Ring<u32>, out: &mut [Obj], _scratch: &mut [u32], conv: &Conv) -> Got {
    let n = out.len();
    let mut ok = true;
    if ring.dequeue_bulk_in_place(
        n,
        // Forced (see `rte_ring`'s `drain_claim`): left to LLVM, this closure, which the ring
        // instantiates for its biased claim and once per sync mode in its shared path, was
        // called out of line (one-core bulk 4: -20%).
        #[inline(always)]
        |a, b| ok = objs_of_runs(out, a, b, *conv),
    ) != n
    {
        return Got::Short;
    }
    if !ok {
        return put_back_valid_objs(ring, out, *conv);
    }
    Got::All
}

#[cfg(hugeshare_loom)]
#[inline(always)]
fn get_direct_bulk(ring: &Ring<u32>, out: &mut [Obj], scratch: &mut [u32], conv: &Conv) -> Got {
    let n = out.len();
    let mut big;
    let buf = if n <= scratch.len() {
        &mut scratch[..n]
    } else {
        big = vec![0u32; n];
        &mut big[..]
    };
    if ring.dequeue_bulk(buf) != n {
        return Got::Short;
    }
    if !objs_of_handles(out, buf, *conv) {
        return put_back_valid_objs(ring, out, *conv);
    }
    Got::All
}

/// Give objects back: appended to the cache while it stays at or under `flushthresh`;
/// otherwise the whole cache is flushed to the ring and the new objects become the cache; more
/// than `flushthresh` at once go straight to the ring. Returns how many objects the ring refused
/// (0 unless objects were put twice).
#[inline(always)]
pub(crate) fn put(
    c: &CacheSlot,
    mirror: &mut u32,
    ring: &Ring<u32>,
    flushthresh: u32,
    objs: &[Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> usize {
    let n = objs.len();
    let len = *mirror as usize;
    if len + n <= flushthresh as usize {
        store_objs(c, len, objs, conv);
        *mirror = (len + n) as u32;
        c.len.store((len + n) as u32, Relaxed);
        return 0;
    }
    put_flush(c, mirror, ring, flushthresh, objs, scratch, conv)
}

#[inline(never)]
fn put_flush(
    c: &CacheSlot,
    mirror: &mut u32,
    ring: &Ring<u32>,
    flushthresh: u32,
    objs: &[Obj],
    scratch: &mut [u32],
    conv: Conv,
) -> usize {
    let n = objs.len();
    let len = *mirror as usize;
    if n > flushthresh as usize {
        return put_direct(ring, objs, scratch, &conv);
    }
    load_h(c, 0, &mut scratch[..len], conv);
    // Empty the cache before the objects reach the ring: killed in between, they are lost,
    // never in two places.
    c.len.store(0, Release);
    let refused = len - ring.enqueue_bulk(&scratch[..len]);
    store_objs(c, 0, objs, conv);
    *mirror = n as u32;
    c.len.store(n as u32, Relaxed);
    refused
}

/// Give objects straight to the ring; returns how many it refused.
#[inline(always)]
pub(crate) fn put_direct(
    ring: &Ring<u32>,
    objs: &[Obj],
    scratch: &mut [u32],
    conv: &Conv,
) -> usize {
    if let [o] = objs {
        // One object: the ring's single enqueue.
        return ring.enqueue(conv.handle(*o)).is_err() as usize;
    }
    put_direct_bulk(ring, objs, scratch, conv)
}

/// Without the loom build: the handles are written in place, straight into the ring's slots.
#[cfg(not(hugeshare_loom))]
#[inline(always)]
fn put_direct_bulk(ring: &Ring<u32>, objs: &[Obj], _scratch: &mut [u32], conv: &Conv) -> usize {
    let n = objs.len();
    if n <= rte_ring::MAX_OP {
        return n - ring.enqueue_bulk_in_place(n, |a, b| handles_of_runs(a, b, objs, *conv));
    }
    let mut refused = 0;
    for chunk in objs.chunks(rte_ring::MAX_OP) {
        let done =
            ring.enqueue_bulk_in_place(chunk.len(), |a, b| handles_of_runs(a, b, chunk, *conv));
        refused += chunk.len() - done;
    }
    refused
}

#[cfg(hugeshare_loom)]
#[inline(always)]
fn put_direct_bulk(ring: &Ring<u32>, objs: &[Obj], scratch: &mut [u32], conv: &Conv) -> usize {
    let mut refused = 0;
    for chunk in objs.chunks(scratch.len()) {
        let buf = &mut scratch[..chunk.len()];
        handles_of_objs(buf, chunk, *conv);
        refused += chunk.len() - ring.enqueue_bulk(buf);
    }
    refused
}

/// Move every object of the cache to the ring (its owner, or a recoverer holding its lock).
/// Returns (moved, refused by the ring).
pub(crate) fn flush_all(
    c: &CacheSlot,
    ring: &Ring<u32>,
    scratch: &mut [u32],
    conv: Conv,
) -> (usize, usize) {
    let len = (c.len.load(Acquire) as usize).min(CACHE_OBJS);
    load_h(c, 0, &mut scratch[..len], conv);
    c.len.store(0, Release);
    let done = ring.enqueue_bulk(&scratch[..len]);
    (len, len - done)
}

/// How many times [`claim`] yields to a live recoverer holding the cache's lock before giving
/// up (a flush takes microseconds; about a second of yields).
const CLAIM_YIELDS: u32 = 1 << 20;

/// Make `me` the owner of the cache: the caller runs as the cache's lcore, which the group gives
/// to one live member at a time, so whoever the word names no longer uses the cache; its objects
/// (free objects) are adopted. Waits while a live recoverer flushes it, but not forever: returns
/// false if the lock is still held after [`CLAIM_YIELDS`] yields (no flush takes that long: the
/// word was written by a peer, or the recoverer is stopped), and the caller does without the
/// cache.
pub(crate) fn claim(c: &CacheSlot, me: u64, alive: impl Fn(u16) -> bool) -> bool {
    let mut yields = 0;
    loop {
        let w = c.owner.load(Acquire);
        if w == me {
            return true;
        }
        if kind_of(w) == KIND_LOCKED && alive(member_of(w)) {
            if yields == CLAIM_YIELDS {
                return false;
            }
            yields += 1;
            yield_now();
            continue;
        }
        if c.owner.compare_exchange(w, me, AcqRel, Acquire).is_ok() {
            return true;
        }
    }
}

/// What a recoverer did to one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Objects moved to the ring.
    pub moved: usize,
    /// Objects the ring refused (lost; never expected).
    pub refused: usize,
}

/// If the cache's owner (or the recoverer that locked it) is not alive, lock it as `my_lock`,
/// flush it to the ring and leave it ownerless. `None` when there was nothing to do.
pub(crate) fn recover(
    c: &CacheSlot,
    ring: &Ring<u32>,
    my_lock: u64,
    scratch: &mut [u32],
    conv: Conv,
    alive: impl Fn(u16) -> bool,
) -> Option<Flushed> {
    loop {
        let w = c.owner.load(Acquire);
        if w == 0 || alive(member_of(w)) {
            return None;
        }
        // The word names an incarnation that is gone (a member is alive while any incarnation
        // of its slot is, and a dead incarnation never comes back): only a CAS on this exact
        // word, so a new owner that claimed the cache meanwhile wins.
        if c.owner
            .compare_exchange(w, my_lock, AcqRel, Acquire)
            .is_ok()
        {
            break;
        }
    }
    let (moved, refused) = flush_all(c, ring, scratch, conv);
    c.owner.store(0, Release);
    Some(Flushed { moved, refused })
}
