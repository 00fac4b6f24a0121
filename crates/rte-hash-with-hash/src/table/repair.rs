//! What a writer that takes over a dead (or panicked) one's lock runs, and the consistency
//! check the tests use.

use super::*;

impl<K: Plain, V: Plain, H: HashFn> Hash<K, V, H> {
    /// Check every invariant the writer keeps (run with writers stopped): each key in exactly
    /// one place, in one of its two buckets or its secondary's chain, signatures right, slots
    /// live when referenced, none half-filled, free lists and count consistent. Returns what is
    /// wrong.
    pub fn check_consistency(&self) -> Result<(), String> {
        let g = &self.g;
        let mut seen = vec![false; g.entries as usize + 1];
        let mut n = 0u32;
        let mut chained = vec![false; g.n_ext as usize + 1];
        for b in 0..g.nb {
            let head = g.main(b);
            let mut bws = vec![head];
            let mut e = self.next_ext(head, Acquire);
            while e != 0 {
                if e > g.n_ext || chained[e as usize] {
                    return Err(format!("bucket {b}: bad or repeated ext bucket {e}"));
                }
                chained[e as usize] = true;
                bws.push(g.ext(e));
                e = self.next_ext(g.ext(e), Acquire);
            }
            for (pos, &bw) in bws.iter().enumerate() {
                for lane in 0..BUCKET_ENTRIES {
                    let idx = self.entry_idx(bw, lane, Acquire);
                    if idx == 0 {
                        continue;
                    }
                    if idx > g.entries || seen[idx as usize] {
                        return Err(format!("slot index {idx} out of range or in two places"));
                    }
                    seen[idx as usize] = true;
                    n += 1;
                    let s = self.mem.w(g.slot(idx)).load(Acquire);
                    if s & (S_LIVE | S_FILLING) != S_LIVE {
                        return Err(format!("slot {idx} referenced but not live"));
                    }
                    let (sig, prim, sec) = g.split(s as u32);
                    if self.entry_sig(bw, lane) != sig {
                        return Err(format!("slot {idx}: signature mismatch"));
                    }
                    let ok = if pos == 0 {
                        b == prim || b == sec
                    } else {
                        b == sec
                    };
                    if !ok {
                        return Err(format!("slot {idx} in bucket {b} (chain {pos}), its buckets are {prim} and {sec}"));
                    }
                }
            }
        }
        for idx in 1..=g.entries {
            let s = self.mem.w(g.slot(idx)).load(Acquire);
            if !seen[idx as usize] && s & S_FILLING != 0 {
                return Err(format!("slot {idx} half-filled and in no bucket"));
            }
        }
        if n != self.count() {
            return Err(format!(
                "count says {} but {n} keys are in buckets",
                self.count()
            ));
        }
        let top = self.mem.w(H_FREE_TOP).load(Relaxed) as u32;
        if top != g.entries - n {
            return Err(format!(
                "free stack holds {top}, expected {}",
                g.entries - n
            ));
        }
        for i in 0..top as usize {
            let e = self.mem.w(g.free_off + i).load(Relaxed);
            let idx = e as u32;
            if idx == 0 || idx > g.entries || seen[idx as usize] {
                return Err(format!(
                    "free stack entry {i}: slot {idx} is in use, repeated or out of range"
                ));
            }
            seen[idx as usize] = true;
            let state = self.mem.w(g.slot(idx)).load(Relaxed) & !0xffff_ffff;
            if e & !0xffff_ffff != state {
                return Err(format!(
                    "free stack entry {i}: slot {idx}'s recorded state differs from its state word"
                ));
            }
        }
        let ext_used = chained.iter().filter(|&&c| c).count() as u32;
        let ext_top = self.mem.w(H_EXT_TOP).load(Relaxed) as u32;
        if ext_top != g.n_ext - ext_used {
            return Err(format!(
                "ext free stack holds {ext_top}, expected {}",
                g.n_ext - ext_used
            ));
        }
        Ok(())
    }

    /// Rebuild both free stacks: slot `i` is in use when `used[i]`, extendable bucket `e` when
    /// `ext_used[e]` (an empty slice means none).
    pub(super) fn rebuild_free_lists(&self, used: &[bool], ext_used: &[bool]) {
        let g = &self.g;
        let mut top = 0usize;
        for idx in (1..=g.entries).rev() {
            if !used[idx as usize] {
                let state = self.mem.w(g.slot(idx)).load(Relaxed) & !0xffff_ffff;
                self.mem
                    .w(g.free_off + top)
                    .store(u64::from(idx) | state, Relaxed);
                top += 1;
            }
        }
        self.mem.w(H_FREE_TOP).store(top as u64, Relaxed);
        let mut top = 0usize;
        for e in (1..=g.n_ext).rev() {
            if !ext_used.get(e as usize).copied().unwrap_or(false) {
                let bw = g.ext(e);
                for j in 2..BUCKET_WORDS {
                    self.mem.w(bw + j).store(0, Release);
                }
                self.mem.w(g.extfree_off + top).store(u64::from(e), Relaxed);
                top += 1;
            }
        }
        self.mem.w(H_EXT_TOP).store(top as u64, Relaxed);
    }

    /// Make the table consistent after a writer died (or panicked) holding the lock. Run with
    /// the lock held. Idempotent, and safe to interrupt: it only removes duplicate or invalid
    /// entries (a key always keeps one place), unlinks empty trailing extendable buckets and
    /// rebuilds private bookkeeping.
    #[cold]
    pub(super) fn repair(&self) {
        let g = &self.g;
        let mut used = vec![false; g.entries as usize + 1];
        let mut ext_used = vec![false; g.n_ext as usize + 1];
        let mut clear: Vec<(usize, usize)> = Vec::new();
        let mut n = 0u64;
        // 1. Scan every chain; keep the first copy of each key, mark the rest for clearing.
        for b in 0..g.nb {
            let head = g.main(b);
            let mut chain = vec![(head, 0usize)];
            let mut e = self.next_ext(head, Acquire);
            let mut pos = 1;
            while e != 0 && e <= g.n_ext && !ext_used[e as usize] {
                ext_used[e as usize] = true;
                chain.push((g.ext(e), pos));
                e = self.next_ext(g.ext(e), Acquire);
                pos += 1;
            }
            if e != 0 {
                // A bad or repeated link (cannot come from the write protocol): cut it.
                let (last, _) = *chain.last().expect("chain has its head");
                self.mem.w(last + B_NEXT).store(0, Release);
            }
            for &(bw, pos) in &chain {
                for lane in 0..BUCKET_ENTRIES {
                    let idx = self.entry_idx(bw, lane, Acquire);
                    if idx == 0 {
                        continue;
                    }
                    let valid = idx <= g.entries && !used[idx as usize] && {
                        let s = self.mem.w(g.slot(idx)).load(Acquire);
                        let (sig, prim, sec) = g.split(s as u32);
                        s & (S_LIVE | S_FILLING) == S_LIVE
                            && self.entry_sig(bw, lane) == sig
                            && if pos == 0 {
                                b == prim || b == sec
                            } else {
                                b == sec
                            }
                    };
                    if valid {
                        used[idx as usize] = true;
                        n += 1;
                    } else {
                        clear.push((bw, lane));
                    }
                }
            }
        }
        // 2. Remove the extra copies; readers that raced with a copy retry.
        if !clear.is_empty() {
            self.bump_change();
            for (bw, lane) in clear {
                self.clear_entry(bw, lane);
            }
        }
        // 3. Unlink empty trailing extendable buckets.
        for b in 0..g.nb {
            loop {
                let head = g.main(b);
                let (mut pred, mut last) = (head, head);
                let mut e = self.next_ext(head, Relaxed);
                while e != 0 {
                    pred = last;
                    last = g.ext(e);
                    e = self.next_ext(last, Relaxed);
                }
                if last == head || self.empty_lane_count(last) != BUCKET_ENTRIES {
                    break;
                }
                self.mem.w(pred + B_NEXT).store(0, Release);
                if let Some(e) = g.ext_index(last) {
                    ext_used[e as usize] = false;
                }
            }
        }
        // 4. Slots a dead add left half-filled: not filling any more, new generation. (Other
        // unreferenced slots keep their state, as freed slots do; the free stack records it.)
        for idx in 1..=g.entries {
            let sw = g.slot(idx);
            let s = self.mem.w(sw).load(Relaxed);
            if !used[idx as usize] && s & S_FILLING != 0 {
                self.mem.w(sw).store(next_state(s, 0, s as u32), Release);
            }
        }
        self.rebuild_free_lists(&used, &ext_used);
        self.mem.w(H_COUNT).store(n, Relaxed);
    }
}
