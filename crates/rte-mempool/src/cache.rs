//! The per-lcore cache algorithm (DPDK's, over object indexes), the claim of a cache by its
//! lcore's owner and the flush of a dead owner's cache by a recoverer.
//!
//! Every move of an object between places (ring, cache, caller) removes it from its source
//! before it adds it to its destination, so a member killed between two steps can lose objects
//! (they are then in no place; a tracked pool's audit finds them) but never makes one appear in
//! two places.

use rte_ring::Ring;

use crate::layout::{kind_of, member_of, CacheSlot, CACHE_OBJS, KIND_LOCKED};
use crate::sync::{yield_now, Ordering::*};

/// Largest request the cache serves (larger ones go straight to the ring).
pub(crate) const CACHE_REQ_MAX: usize = CACHE_OBJS / 2;

/// Take `n` objects for the caller: from the top of the cache, refilling it from the ring with
/// `size + remaining` objects in one bulk when it holds too few; if the refill fails, the
/// remainder comes straight from the ring; if that fails too, nothing is taken (all or nothing).
/// `emit(k, index)` receives the k-th object. `scratch` has at least `CACHE_OBJS` entries.
#[inline(always)]
pub(crate) fn get(
    c: &CacheSlot,
    ring: &Ring<u32>,
    size: u32,
    n: usize,
    scratch: &mut [u32],
    mut emit: impl FnMut(usize, u32),
) -> bool {
    let len = c.len.load(Relaxed) as usize;
    if n <= len {
        for k in 0..n {
            emit(k, c.objs[len - 1 - k].load(Relaxed));
        }
        c.len.store((len - n) as u32, Relaxed);
        return true;
    }
    get_refill(c, ring, size, n, len, scratch, emit)
}

#[inline(never)]
fn get_refill(
    c: &CacheSlot,
    ring: &Ring<u32>,
    size: u32,
    n: usize,
    len: usize,
    scratch: &mut [u32],
    mut emit: impl FnMut(usize, u32),
) -> bool {
    if n > CACHE_REQ_MAX {
        return get_direct(ring, n, scratch, emit);
    }
    let remaining = n - len;
    let want = size as usize + remaining;
    if ring.dequeue_bulk(&mut scratch[..want]) == want {
        for (i, &v) in scratch[..want].iter().enumerate() {
            c.objs[len + i].store(v, Relaxed);
        }
        let total = len + want;
        for k in 0..n {
            emit(k, c.objs[total - 1 - k].load(Relaxed));
        }
        c.len.store((total - n) as u32, Relaxed);
        return true;
    }
    if ring.dequeue_bulk(&mut scratch[..remaining]) != remaining {
        return false;
    }
    for k in 0..len {
        emit(k, c.objs[len - 1 - k].load(Relaxed));
    }
    c.len.store(0, Relaxed);
    for (k, &v) in scratch[..remaining].iter().enumerate() {
        emit(len + k, v);
    }
    true
}

/// Take `n` objects straight from the ring, all or nothing.
pub(crate) fn get_direct(
    ring: &Ring<u32>,
    n: usize,
    scratch: &mut [u32],
    mut emit: impl FnMut(usize, u32),
) -> bool {
    let mut big;
    let buf = if n <= scratch.len() {
        &mut scratch[..n]
    } else {
        big = vec![0u32; n];
        &mut big[..]
    };
    if ring.dequeue_bulk(buf) != n {
        return false;
    }
    for (k, &v) in buf.iter().enumerate() {
        emit(k, v);
    }
    true
}

/// Give `n` objects back (`idx(k)` is the k-th one's index): appended to the cache while it
/// stays at or under `flushthresh`; otherwise the whole cache is flushed to the ring and the new
/// objects become the cache; more than `flushthresh` at once go straight to the ring. Returns
/// how many objects the ring refused (0 unless objects were put twice).
#[inline(always)]
pub(crate) fn put(
    c: &CacheSlot,
    ring: &Ring<u32>,
    flushthresh: u32,
    n: usize,
    scratch: &mut [u32],
    idx: impl Fn(usize) -> u32,
) -> usize {
    let len = c.len.load(Relaxed) as usize;
    if len + n <= flushthresh as usize {
        for k in 0..n {
            c.objs[len + k].store(idx(k), Relaxed);
        }
        c.len.store((len + n) as u32, Relaxed);
        return 0;
    }
    put_flush(c, ring, flushthresh, n, len, scratch, idx)
}

#[inline(never)]
fn put_flush(
    c: &CacheSlot,
    ring: &Ring<u32>,
    flushthresh: u32,
    n: usize,
    len: usize,
    scratch: &mut [u32],
    idx: impl Fn(usize) -> u32,
) -> usize {
    if n > flushthresh as usize {
        return put_direct(ring, n, scratch, idx);
    }
    for (i, s) in scratch[..len].iter_mut().enumerate() {
        *s = c.objs[i].load(Relaxed);
    }
    // Empty the cache before the objects reach the ring: killed in between, they are lost,
    // never in two places.
    c.len.store(0, Release);
    let refused = len - ring.enqueue_bulk(&scratch[..len]);
    for k in 0..n {
        c.objs[k].store(idx(k), Relaxed);
    }
    c.len.store(n as u32, Relaxed);
    refused
}

/// Give `n` objects straight to the ring; returns how many it refused.
pub(crate) fn put_direct(
    ring: &Ring<u32>,
    n: usize,
    scratch: &mut [u32],
    idx: impl Fn(usize) -> u32,
) -> usize {
    let mut refused = 0;
    let mut k = 0;
    while k < n {
        let m = (n - k).min(scratch.len());
        for (i, s) in scratch[..m].iter_mut().enumerate() {
            *s = idx(k + i);
        }
        refused += m - ring.enqueue_bulk(&scratch[..m]);
        k += m;
    }
    refused
}

/// Move every object of the cache to the ring (its owner, or a recoverer holding its lock).
/// Returns (moved, refused by the ring).
pub(crate) fn flush_all(c: &CacheSlot, ring: &Ring<u32>, scratch: &mut [u32]) -> (usize, usize) {
    let len = (c.len.load(Acquire) as usize).min(CACHE_OBJS);
    for (i, s) in scratch[..len].iter_mut().enumerate() {
        *s = c.objs[i].load(Relaxed);
    }
    c.len.store(0, Release);
    let done = ring.enqueue_bulk(&scratch[..len]);
    (len, len - done)
}

/// Make `me` the owner of the cache: the caller runs as the cache's lcore, which the group gives
/// to one live member at a time, so whoever the word names no longer uses the cache; its objects
/// (free objects) are adopted. Waits while a live recoverer flushes it.
pub(crate) fn claim(c: &CacheSlot, me: u64, alive: impl Fn(u16) -> bool) {
    loop {
        let w = c.owner.load(Acquire);
        if w == me {
            return;
        }
        if kind_of(w) == KIND_LOCKED && alive(member_of(w)) {
            yield_now();
            continue;
        }
        if c.owner.compare_exchange(w, me, AcqRel, Acquire).is_ok() {
            return;
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
    let (moved, refused) = flush_all(c, ring, scratch);
    c.owner.store(0, Release);
    Some(Flushed { moved, refused })
}
