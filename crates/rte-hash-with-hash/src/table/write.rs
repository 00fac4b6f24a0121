//! The writers: the lock word and its take-over, adds, cuckoo displacement, deletes, and
//! [`Writer`].

use super::*;
use crate::table::read::{key_eq, key_word, lane_of};

/// Longest cuckoo search, in buckets visited (as DPDK's `RTE_HASH_BFS_QUEUE_MAX_LEN`).
const BFS_MAX: usize = 1000;

/// Lock word value meaning "free, but the last holder panicked: repair before use" (any word
/// whose low half is 0 names no holder; a held word's low half is the holder's member id + 1).
pub(super) const LOCK_REPAIR: u64 = 1 << 32;

/// How a write under the lock ended.
pub(super) enum Outcome {
    /// Done; the position.
    Done(u32),
    /// No room (or, for a delete, no such key).
    Full,
    /// Stopped at a test hook.
    Stopped,
}

/// Store `bytes` zero-padded into `words` words from `at`.
pub(super) fn write_words(mem: &Mem, at: usize, words: usize, bytes: &[u8]) {
    for j in 0..words {
        mem.w(at + j).store(key_word(bytes, j), Relaxed);
    }
}

impl<K: Plain, V: Plain, H: HashFn> Hash<K, V, H> {
    pub(super) fn lock(&self) -> WriteGuard<'_, K, V, H> {
        if self
            .mem
            .w(H_LOCK)
            .compare_exchange(0, self.lock_word, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        WriteGuard { t: self }
    }

    #[cold]
    pub(super) fn lock_slow(&self) {
        let me = self.lock_word;
        let lw = self.mem.w(H_LOCK);
        let mut spins = 0u32;
        loop {
            let cur = lw.load(Relaxed);
            if cur == 0 {
                if lw.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
                    return;
                }
            } else if cur as u32 == 0
                || (spins % 64 == 0 && lockword::holder_gone(cur, &*self.liveness))
            {
                // Free but to be repaired (a holder panicked), or held by a process that is
                // gone: take it over with a CAS on the word read (a newer holder wins) and
                // repair what the last holder may have left half-done.
                if lw.compare_exchange(cur, me, Acquire, Relaxed).is_ok() {
                    self.repair();
                    return;
                }
            }
            spins = spins.wrapping_add(1);
            if spins < 100 {
                spin_loop();
            } else {
                yield_now();
            }
        }
    }

    /// Tell readers that an entry holding a key that also sits elsewhere is about to be
    /// overwritten or cleared: a reader that raced with it sees the counter move and retries.
    #[inline]
    pub(super) fn bump_change(&self) {
        let w = self.mem.w(H_CHNG);
        w.store(w.load(Relaxed).wrapping_add(1), Release);
        fence(Release);
    }

    #[inline]
    pub(super) fn set_entry(&self, bw: usize, lane: usize, sig: u16, idx: u32) {
        let b = self.mem.eight(bw);
        let sw = &b[(lane / 4) & 7];
        let sh = (lane & 3) * 16;
        let v = sw.load(Relaxed);
        sw.store((v & !(0xffff << sh)) | u64::from(sig) << sh, Relaxed);
        let iw = &b[(2 + lane / 2) & 7];
        let sh = (lane & 1) * 32;
        let v = iw.load(Relaxed);
        iw.store((v & !(0xffff_ffff << sh)) | u64::from(idx) << sh, Release);
    }

    #[inline]
    pub(super) fn clear_entry(&self, bw: usize, lane: usize) {
        let iw = &self.mem.eight(bw)[(2 + lane / 2) & 7];
        let sh = (lane & 1) * 32;
        let v = iw.load(Relaxed);
        iw.store(v & !(0xffff_ffff << sh), Release);
    }

    #[inline]
    pub(super) fn empty_lane(&self, bw: usize) -> Option<usize> {
        let b = self.mem.eight(bw);
        for j in 0..4 {
            let w = b[2 + j].load(Relaxed);
            if w as u32 == 0 {
                return Some(2 * j);
            }
            if (w >> 32) as u32 == 0 {
                return Some(2 * j + 1);
            }
        }
        None
    }

    /// Writer-side search of one bucket: the lane and slot index holding `kb`, and the slot's
    /// state word (read while comparing, so that a delete can record it on the free stack
    /// without reading it again).
    #[inline(always)]
    fn locate_in(&self, bw: usize, kb: &[u8], sig: u16) -> Option<(usize, u32, u64)> {
        let mut m = self.sig_candidates(bw, sig);
        while m != 0 {
            let lane = lane_of(m);
            m &= m - 1;
            let idx = self.entry_idx(bw, lane, Relaxed);
            if let Some(state) = self.slot_holds(idx, kb) {
                return Some((lane, idx, state));
            }
        }
        None
    }

    /// Does slot `idx` hold `kb`? Its state word if so. The writer's check: with the lock held
    /// no one else changes a slot, so the reader's re-check of the state word is not needed.
    #[inline(always)]
    fn slot_holds(&self, idx: u32, kb: &[u8]) -> Option<u64> {
        if idx == 0 || idx > self.g.entries {
            return None;
        }
        let s = self.mem.range(self.slot_at(idx), 1 + Self::KW);
        let state = s[0].load(Relaxed);
        if state & (S_FILLING | S_LIVE) != S_LIVE || !key_eq(&s[1..], kb) {
            return None;
        }
        Some(state)
    }

    /// Writer-side search: the bucket word, lane and slot index holding `kb`, and the slot's
    /// state word.
    #[inline(always)]
    pub(super) fn locate(
        &self,
        kb: &[u8],
        sig: u16,
        prim: u32,
        sec: u32,
    ) -> Option<(usize, usize, u32, u64)> {
        let g = &self.g;
        for bw in [g.main(prim), g.main(sec)] {
            if let Some((lane, idx, state)) = self.locate_in(bw, kb, sig) {
                return Some((bw, lane, idx, state));
            }
        }
        if g.n_ext == 0 {
            return None;
        }
        self.locate_chain(kb, sig, sec)
    }

    /// [`Hash::locate`] in the extendable chain of main bucket `sec`.
    #[inline(never)]
    fn locate_chain(&self, kb: &[u8], sig: u16, sec: u32) -> Option<(usize, usize, u32, u64)> {
        let g = &self.g;
        let mut e = self.next_ext(g.main(sec), Relaxed);
        let mut hops = 0;
        while e != 0 && e <= g.n_ext && hops <= g.n_ext {
            let bw = g.ext(e);
            if let Some((lane, idx, state)) = self.locate_in(bw, kb, sig) {
                return Some((bw, lane, idx, state));
            }
            e = self.next_ext(g.ext(e), Relaxed);
            hops += 1;
        }
        None
    }

    /// A free key slot: its index and its state word as it was freed (so that an add writes
    /// the slot without first reading it: the line is only written, never waited for).
    pub(super) fn pop_free(&self) -> Option<(u32, u64)> {
        let tw = self.mem.w(H_FREE_TOP);
        let top = tw.load(Relaxed);
        if top == 0 {
            return None;
        }
        let e = self.mem.w(self.g.free_off + top as usize - 1).load(Relaxed);
        tw.store(top - 1, Relaxed);
        Some((e as u32, e & !0xffff_ffff))
    }

    /// Push key slot `idx`, whose state word is now `state`, on the free stack, and prefetch
    /// the entry the next push writes: deletes push one after another, and a store that misses
    /// would hold up the next call's lock (its atomic instruction waits for earlier stores).
    pub(super) fn push_free(&self, idx: u32, state: u64) {
        let tw = self.mem.w(H_FREE_TOP);
        let top = tw.load(Relaxed);
        self.mem
            .w(self.g.free_off + top as usize)
            .store(u64::from(idx) | (state & !0xffff_ffff), Relaxed);
        tw.store(top + 1, Relaxed);
        self.mem.prefetch(self.g.free_off + top as usize + 1);
    }

    pub(super) fn pop_ext(&self) -> Option<u32> {
        let tw = self.mem.w(H_EXT_TOP);
        let top = tw.load(Relaxed);
        if top == 0 {
            return None;
        }
        let e = self
            .mem
            .w(self.g.extfree_off + top as usize - 1)
            .load(Relaxed) as u32;
        tw.store(top - 1, Relaxed);
        Some(e)
    }

    pub(super) fn push_ext(&self, e: u32) {
        let tw = self.mem.w(H_EXT_TOP);
        let top = tw.load(Relaxed);
        self.mem
            .w(self.g.extfree_off + top as usize)
            .store(u64::from(e), Relaxed);
        tw.store(top + 1, Relaxed);
    }

    /// Write key and value into free slot `idx` and mark it live. Readers holding a stale
    /// index to it see `FILLING` or a new generation and ignore it.
    pub(super) fn fill_slot(&self, idx: u32, freed_state: u64, hash: u32, kb: &[u8], vb: &[u8]) {
        let sl = self
            .mem
            .range(self.slot_at(idx), 1 + Self::KW + 2 * Self::VW);
        let filling = next_state(freed_state, S_FILLING, hash);
        sl[0].store(filling, Relaxed);
        fence(Release);
        for j in 0..Self::KW {
            sl[1 + j].store(key_word(kb, j), Relaxed);
        }
        for j in 0..Self::VW {
            sl[1 + Self::KW + j].store(key_word(vb, j), Relaxed);
        }
        sl[0].store(next_state(filling, S_LIVE, hash), Release);
    }

    /// Push key slot `idx`, which no bucket references any more, on the free stack. The slot
    /// itself is not written (its line stays clean): its state word keeps the key it last
    /// held until an add refills it, and the refill bumps the generation (see
    /// [`Hash::fill_slot`]), which is what a reader still holding the index notices.
    pub(super) fn release_slot(&self, idx: u32) {
        let s = self.mem.w(self.slot_at(idx)).load(Relaxed);
        self.push_free(idx, s);
    }

    #[inline]
    pub(super) fn add_locked(
        &self,
        kb: &[u8],
        hash: u32,
        vb: &[u8],
        stop: Option<StopAt>,
    ) -> Outcome {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        // Start the three memory accesses an add of a new key needs (primary bucket, secondary
        // bucket, a free key slot) at once instead of one after the other.
        self.mem.prefetch(g.main(prim));
        self.mem.prefetch(g.main(sec));
        let free = self.pop_free();
        if let Some((idx, _)) = free {
            let sw = self.slot_at(idx);
            self.mem.prefetch(sw);
            self.mem.prefetch(sw + 1 + Self::KW + Self::VW - 1);
        }
        if let Some((_, _, idx, s)) = self.locate(kb, sig, prim, sec) {
            if let Some((f, state)) = free {
                self.push_free(f, state);
            }
            // Update: write the spare value copy, then flip to it in one store.
            if g.val_words != 0 {
                let sw = self.slot_at(idx);
                let spare = usize::from(s & S_BUF == 0);
                fence(Release);
                let at = sw + 1 + Self::KW + spare * Self::VW;
                if stop == Some(StopAt::MidUpdate) {
                    write_words(&self.mem, at, Self::VW.div_ceil(2), vb);
                    return Outcome::Stopped;
                }
                write_words(&self.mem, at, Self::VW, vb);
                let buf = if spare == 1 { S_BUF } else { 0 };
                self.mem
                    .w(sw)
                    .store(next_state(s, S_LIVE | buf, s as u32), Release);
            }
            return Outcome::Done(idx - 1);
        }
        let Some((idx, freed_state)) = free else {
            return Outcome::Full;
        };
        self.fill_slot(idx, freed_state, hash, kb, vb);
        if stop == Some(StopAt::AfterSlotFill) {
            return Outcome::Stopped;
        }
        // As DPDK: the primary bucket, else make room in it by displacement, else the secondary
        // (its search starts with the secondary itself), so that most keys stay in their
        // primary bucket and most lookups read one bucket.
        let placed = if let Some(l) = self.empty_lane(g.main(prim)) {
            self.set_entry(g.main(prim), l, sig, idx);
            Ok(())
        } else {
            match self.cuckoo(prim, sig, idx, stop) {
                Ok(false) => match self.cuckoo(sec, sig, idx, stop) {
                    Ok(false) => {
                        if g.n_ext != 0 && self.place_ext(sec, sig, idx) {
                            Ok(())
                        } else {
                            Err(Outcome::Full)
                        }
                    }
                    Ok(true) => Ok(()),
                    Err(()) => Err(Outcome::Stopped),
                },
                Ok(true) => Ok(()),
                Err(()) => Err(Outcome::Stopped),
            }
        };
        match placed {
            Ok(()) => {
                let c = self.mem.w(H_COUNT);
                c.store(c.load(Relaxed) + 1, Relaxed);
                Outcome::Done(idx - 1)
            }
            Err(Outcome::Full) => {
                self.release_slot(idx);
                Outcome::Full
            }
            Err(o) => o,
        }
    }

    /// Breadth-first search for a chain of moves from main bucket `start` to a bucket with a
    /// free entry, then the moves, last first, so that every key is always in at least one
    /// place: copy a key to its alternate bucket, bump the change counter, then overwrite its
    /// old entry. `Ok(false)` if no chain exists within [`BFS_MAX`] buckets.
    pub(super) fn cuckoo(
        &self,
        start: u32,
        sig: u16,
        idx: u32,
        stop: Option<StopAt>,
    ) -> Result<bool, ()> {
        #[derive(Clone, Copy)]
        struct Node {
            bkt: u32,
            prev: u32,
            prev_lane: u8,
        }
        const NONE: u32 = u32::MAX;
        let g = &self.g;
        let mut q: Vec<Node> = Vec::with_capacity(64);
        q.push(Node {
            bkt: start,
            prev: NONE,
            prev_lane: 0,
        });
        let mut head = 0;
        let found = loop {
            if head >= q.len() {
                return Ok(false);
            }
            let cur = q[head];
            let bw = g.main(cur.bkt);
            if let Some(lane) = self.empty_lane(bw) {
                break (head, lane);
            }
            if q.len() + BUCKET_ENTRIES <= BFS_MAX {
                for lane in 0..BUCKET_ENTRIES {
                    let s = self.entry_sig(bw, lane);
                    let alt = (cur.bkt ^ u32::from(s)) & g.mask;
                    if alt != cur.bkt {
                        q.push(Node {
                            bkt: alt,
                            prev: head as u32,
                            prev_lane: lane as u8,
                        });
                    }
                }
            }
            head += 1;
        };
        let (mut cur, mut cur_lane) = found;
        let mut first = true;
        while q[cur].prev != NONE {
            let p = q[cur].prev as usize;
            let pl = q[cur].prev_lane as usize;
            let pbw = g.main(q[p].bkt);
            let (s, i) = (self.entry_sig(pbw, pl), self.entry_idx(pbw, pl, Relaxed));
            if !first {
                self.bump_change();
            }
            self.set_entry(g.main(q[cur].bkt), cur_lane, s, i);
            if first && stop == Some(StopAt::MidDisplacement) {
                return Err(());
            }
            first = false;
            cur = p;
            cur_lane = pl;
        }
        self.bump_change();
        self.set_entry(g.main(q[cur].bkt), cur_lane, sig, idx);
        Ok(true)
    }

    /// Put `idx` in the first free entry of main bucket `sec`'s chain, linking a new
    /// extendable bucket at its end if needed.
    pub(super) fn place_ext(&self, sec: u32, sig: u16, idx: u32) -> bool {
        let g = &self.g;
        let mut last = g.main(sec);
        let mut e = self.next_ext(last, Relaxed);
        let mut hops = 0;
        while e != 0 && e <= g.n_ext && hops <= g.n_ext {
            let bw = g.ext(e);
            if let Some(l) = self.empty_lane(bw) {
                self.set_entry(bw, l, sig, idx);
                return true;
            }
            last = bw;
            e = self.next_ext(bw, Relaxed);
            hops += 1;
        }
        let Some(e) = self.pop_ext() else {
            return false;
        };
        let bw = g.ext(e);
        self.set_entry(bw, 0, sig, idx);
        // Link it: a reader that sees the link (acquire) sees the entry.
        self.mem.w(last + B_NEXT).store(u64::from(e), Release);
        true
    }

    /// Delete `kb` under the lock: prefetch both of its buckets (a key in its secondary bucket
    /// then costs no second round trip), then [`Hash::delete_prefetched`].
    #[inline(always)]
    pub(super) fn delete_locked(&self, kb: &[u8], hash: u32, stop: Option<StopAt>) -> Outcome {
        self.prefetch_buckets(hash);
        self.delete_prefetched(kb, hash, stop)
    }

    /// Delete `kb` under the lock, its buckets already prefetched. The common case (the key in
    /// its primary bucket at the first lane whose signature matches, no extendable buckets) is
    /// inline and short, with no loop: few instructions and loads per delete, and few registers
    /// spilled in a caller's loop. Anything else is [`Hash::delete_slow`].
    #[inline(always)]
    pub(super) fn delete_prefetched(&self, kb: &[u8], hash: u32, stop: Option<StopAt>) -> Outcome {
        let g = &self.g;
        let (sig, prim, _) = g.split(hash);
        let pb = g.main(prim);
        let m = self.sig_candidates(pb, sig);
        if m != 0 && stop.is_none() && g.n_ext == 0 {
            let lane = lane_of(m);
            let idx = self.entry_idx(pb, lane, Relaxed);
            if let Some(state) = self.slot_holds(idx, kb) {
                self.clear_entry(pb, lane);
                self.forget_slot(idx, state);
                return Outcome::Done(idx - 1);
            }
        }
        self.delete_slow(kb, hash, stop)
    }

    /// The end of a delete, once no bucket references key slot `idx` (state word `state`): the
    /// slot goes on the free stack and the table counts one key fewer.
    #[inline(always)]
    fn forget_slot(&self, idx: u32, state: u64) {
        self.push_free(idx, state);
        let c = self.mem.w(H_COUNT);
        c.store(c.load(Relaxed) - 1, Relaxed);
    }

    /// Every other delete: the key in its secondary bucket or chain, a table with extendable
    /// buckets (which compacts the chain after), a missing key, or a test hook.
    #[inline(never)]
    pub(super) fn delete_slow(&self, kb: &[u8], hash: u32, stop: Option<StopAt>) -> Outcome {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        let Some((bw, lane, idx, state)) = self.locate(kb, sig, prim, sec) else {
            return Outcome::Full;
        };
        self.clear_entry(bw, lane);
        if stop == Some(StopAt::MidDelete) {
            return Outcome::Stopped;
        }
        self.forget_slot(idx, state);
        if g.n_ext != 0 {
            let head = if g.ext_index(bw).is_some() {
                g.main(sec)
            } else {
                bw
            };
            self.compact(head, bw, lane);
        }
        Outcome::Done(idx - 1)
    }

    /// After a delete left a hole at (`hole`, `hole_lane`) in the chain of main bucket `head`,
    /// move the chain's last key into it (copy, bump, clear) and unlink an emptied last
    /// extendable bucket.
    pub(super) fn compact(&self, head: usize, hole: usize, hole_lane: usize) {
        let g = &self.g;
        let mut pred = head;
        let mut last = head;
        let mut e = self.next_ext(head, Relaxed);
        let mut hops = 0;
        while e != 0 && e <= g.n_ext && hops <= g.n_ext {
            pred = last;
            last = g.ext(e);
            e = self.next_ext(last, Relaxed);
            hops += 1;
        }
        if last == head {
            return;
        }
        if last != hole {
            let occupied = (0..BUCKET_ENTRIES)
                .rev()
                .find(|&l| self.entry_idx(last, l, Relaxed) != 0);
            if let Some(l) = occupied {
                let (s, i) = (self.entry_sig(last, l), self.entry_idx(last, l, Relaxed));
                self.set_entry(hole, hole_lane, s, i);
                self.bump_change();
                self.clear_entry(last, l);
            }
        }
        if self.empty_lane_count(last) == BUCKET_ENTRIES {
            self.mem.w(pred + B_NEXT).store(0, Release);
            if let Some(e) = g.ext_index(last) {
                self.push_ext(e);
            }
        }
    }

    pub(super) fn empty_lane_count(&self, bw: usize) -> usize {
        (0..BUCKET_ENTRIES)
            .filter(|&l| self.entry_idx(bw, l, Relaxed) == 0)
            .count()
    }
}

/// Holds the writer lock; releases it on drop (marking the table for repair if the holder
/// panicked in the middle of an operation).
pub(super) struct WriteGuard<'a, K, V, H> {
    pub(super) t: &'a Hash<K, V, H>,
}

impl<K, V, H> Drop for WriteGuard<'_, K, V, H> {
    fn drop(&mut self) {
        let v = if std::thread::panicking() {
            LOCK_REPAIR
        } else {
            0
        };
        self.t.mem.w(H_LOCK).store(v, Release);
    }
}

/// The writer lock held for a batch of writes, from [`Hash::writer`]; released on drop.
pub struct Writer<'a, K, V, H> {
    pub(super) guard: WriteGuard<'a, K, V, H>,
}

impl<K, V, H> fmt::Debug for Writer<'_, K, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("table", &self.guard.t.mem.zone().name())
            .finish()
    }
}

impl<K: Plain, V: Plain, H: HashFn> Writer<'_, K, V, H> {
    /// As [`Hash::add_with_hash`], under the lock this writer holds.
    #[inline]
    pub fn add_with_hash(&self, key: &K, hash: u32, value: &V) -> Result<u32, TableFull> {
        match self
            .guard
            .t
            .add_locked(key.as_bytes(), hash, value.as_bytes(), None)
        {
            Outcome::Done(pos) => Ok(pos),
            Outcome::Full | Outcome::Stopped => Err(TableFull),
        }
    }

    /// As [`Hash::delete_with_hash`], under the lock this writer holds.
    #[inline(always)]
    pub fn delete_with_hash(&self, key: &K, hash: u32) -> Option<u32> {
        match self.guard.t.delete_locked(key.as_bytes(), hash, None) {
            Outcome::Done(pos) => Some(pos),
            _ => None,
        }
    }
}
