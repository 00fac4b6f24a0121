//! The cache protocol over loom's atomics, for `tests/loom.rs` (built only with
//! `--cfg hugeshare_loom`): one cache slot on the heap, objects named by their handles.

use rte_ring::Ring;

use crate::cache;
use crate::layout::{holder, locked, CacheSlot, CACHE_OBJS};
use crate::obj::{Conv, Obj};
use crate::sync::Ordering::*;

const CONV: Conv = Conv {
    base: 0,
    shift: 0,
    max_off: usize::MAX,
};

/// One per-lcore cache, as the pool keeps it in its header zone.
#[derive(Debug)]
pub struct ModelCache(Box<CacheSlot>);

impl ModelCache {
    /// A cache owned by `owner` (process token 1) holding `objs`.
    pub fn new(owner: u16, objs: &[u32]) -> Self {
        let c = CacheSlot::boxed();
        c.owner.store(holder(owner, 1), Relaxed);
        for (i, &h) in objs.iter().enumerate() {
            c.objs[i].store(h as u64, Relaxed);
        }
        c.len.store(objs.len() as u32, Relaxed);
        Self(c)
    }
    /// The member named by the owner word (`None`: nobody).
    pub fn owner(&self) -> Option<u16> {
        let w = self.0.owner.load(Acquire);
        (w != 0).then_some(crate::layout::member_of(w))
    }
    /// The objects in the cache.
    pub fn contents(&self) -> Vec<u32> {
        let len = (self.0.len.load(Acquire) as usize).min(CACHE_OBJS);
        (0..len)
            .map(|i| self.0.objs[i].load(Relaxed) as u32)
            .collect()
    }
    /// What the group's clean-up does: flush the cache if its owner is not alive. Returns the
    /// number of objects moved.
    pub fn recover(&self, ring: &Ring<u32>, me: u16, alive: impl Fn(u16) -> bool) -> Option<usize> {
        let mut scratch = [0u32; CACHE_OBJS];
        cache::recover(&self.0, ring, locked(me, 1), &mut scratch, CONV, alive).map(|f| f.moved)
    }
    /// What the lcore's new owner does first (false: it gave up waiting for a recoverer).
    pub fn claim(&self, me: u16, alive: impl Fn(u16) -> bool) -> bool {
        cache::claim(&self.0, holder(me, 1), alive)
    }
    /// A get of `n` objects through the cache (refilled with `size + remaining` from `ring`).
    pub fn get(&self, ring: &Ring<u32>, size: u32, n: usize) -> Option<Vec<u32>> {
        let mut scratch = [0u32; CACHE_OBJS];
        let mut out = vec![Obj::empty(); n];
        let mut len = self.0.len.load(Relaxed);
        (cache::get(&self.0, &mut len, ring, size, &mut out, &mut scratch, CONV) == cache::Got::All)
            .then(|| out.iter().map(|o| CONV.handle(*o)).collect())
    }
    /// A put of `objs` through the cache (flushed to `ring` above `flushthresh`).
    pub fn put(&self, ring: &Ring<u32>, flushthresh: u32, objs: &[u32]) -> usize {
        let mut scratch = [0u32; CACHE_OBJS];
        let objs: Vec<Obj> = objs.iter().map(|&h| CONV.obj(h)).collect();
        let mut len = self.0.len.load(Relaxed);
        cache::put(
            &self.0,
            &mut len,
            ring,
            flushthresh,
            &objs,
            &mut scratch,
            CONV,
        )
    }
}
