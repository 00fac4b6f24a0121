//! The lock-free readers: single and bulk lookups, slot reads, and [`Iter`].

use super::*;

/// Keys a bulk lookup handles in one set of passes (prefetch buckets, match signatures and
/// prefetch key slots, compare keys).
const BULK_STRIDE: usize = 16;

/// What a reader found for one key.
pub(super) enum Probe {
    /// The key is in slot `idx`.
    Hit(u32),
    /// Not found here.
    Miss,
    /// A slot changed while it was read: search again.
    Changed,
}

/// The 64-bit word `j` of a key, zero-padded past its end (keys are stored the same way).
#[inline(always)]
pub(super) fn key_word(kb: &[u8], j: usize) -> u64 {
    let start = j * 8;
    if start + 8 <= kb.len() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&kb[start..start + 8]);
        u64::from_le_bytes(b)
    } else {
        let mut b = [0u8; 8];
        let n = kb.len() - start;
        b[..n].copy_from_slice(&kb[start..]);
        u64::from_le_bytes(b)
    }
}

/// Do the words `s` hold key `kb` (zero-padded to whole words)?
///
/// Word by word, leaving at the first difference: each word is one load, one compare with the
/// key's word in memory and one branch, with nothing held in registers between words (the
/// signature already filtered out almost every other key, so the whole key is compared in the
/// common case and every branch is predicted).
#[inline(always)]
pub(super) fn key_eq(s: &[crate::sync::AtomicU64], kb: &[u8]) -> bool {
    for (j, w) in s.iter().enumerate() {
        if w.load(Relaxed) != key_word(kb, j) {
            return false;
        }
    }
    true
}

/// Read `out.len()` bytes from the words at `at`.
#[inline(always)]
pub(super) fn read_words(mem: &Mem, at: usize, out: &mut [u8]) {
    for (j, ch) in out.chunks_mut(8).enumerate() {
        let w = mem.w(at + j).load(Relaxed).to_le_bytes();
        ch.copy_from_slice(&w[..ch.len()]);
    }
}

/// The lane of the lowest candidate of a mask from [`sig_match`] (not zero); clear it with
/// `m &= m - 1`.
#[inline(always)]
pub(super) fn lane_of(m: u32) -> usize {
    m.trailing_zeros() as usize >> 1
}

impl<K: Plain, V: Plain, H: HashFn> Hash<K, V, H> {
    /// Up to [`LOOKUP_BULK_MAX`] keys, in three passes so that the memory accesses of all keys
    /// overlap: (1) prefetch both buckets of every key; (2) match signatures and prefetch the
    /// candidate key slots; (3) compare keys. A change-counter check around passes 2 and 3
    /// sends the misses of a pass that raced with a displacement through [`Hash::find`] again.
    pub(super) fn bulk_chunk(&self, keys: &[K], hashes: &[u32], out: &mut [Option<u32>]) -> usize {
        let mut found = 0;
        for ((k, h), o) in keys
            .chunks(BULK_STRIDE)
            .zip(hashes.chunks(BULK_STRIDE))
            .zip(out.chunks_mut(BULK_STRIDE))
        {
            found += self.bulk_stride(k, h, o);
        }
        found
    }

    /// Up to [`BULK_STRIDE`] keys: the three passes of [`Hash::bulk_chunk`].
    #[inline]
    pub(super) fn bulk_stride(&self, keys: &[K], hashes: &[u32], out: &mut [Option<u32>]) -> usize {
        let g = &self.g;
        let n = keys.len().min(BULK_STRIDE);
        let (keys, hashes, out) = (&keys[..n], &hashes[..n], &mut out[..n]);
        // Pass 1: prefetch both buckets of every key (as DPDK: a key that sits in its
        // secondary bucket then costs no extra round trip to memory in pass 2). The bucket
        // offsets are recomputed from the hashes where needed: a few register operations are
        // cheaper than storing and reloading them.
        for &h in hashes {
            let (_, prim, sec) = g.split(h);
            self.mem.prefetch(g.main(prim));
            self.mem.prefetch(g.main(sec));
        }
        let chng = self.mem.w(H_CHNG);
        let c1 = chng.load(Acquire);
        // Pass 2: candidate lanes in the primary bucket, or, with none there, in the
        // secondary; read the first candidate's key-slot index and prefetch the slot.
        let mut cand = [0u32; BULK_STRIDE];
        let mut first = [0u32; BULK_STRIDE];
        let mut in_sec = 0u32;
        for (i, &h) in hashes.iter().enumerate() {
            let (sig, prim, _) = g.split(h);
            let b = g.main(prim);
            let c = self.sig_candidates(b, sig);
            let (idx, rest) = if c != 0 {
                (self.entry_idx(b, lane_of(c), Acquire), c & (c - 1))
            } else {
                in_sec |= 1 << i;
                self.bulk_first_in_sec(h)
            };
            self.prefetch_slot(idx);
            first[i] = idx;
            cand[i] = rest;
        }
        // Pass 3: compare each key with its first candidate. The keys it misses go on with
        // the rest of their search (further candidates, the secondary bucket, the chain) in
        // `bulk_rest`, after the loop, which then stays short for the common case.
        let (mut missed, mut changed) = (0u32, 0u32);
        let mut none = None;
        for i in 0..n {
            out[i] = match self.probe_slot(first[i], keys[i].as_bytes(), &mut none) {
                Probe::Hit(idx) => Some(idx - 1),
                Probe::Miss => {
                    missed |= 1 << i;
                    None
                }
                Probe::Changed => {
                    changed |= 1 << i;
                    None
                }
            };
        }
        let mut found = n - (missed | changed).count_ones() as usize;
        let mut misses = 0u32;
        while missed != 0 {
            let i = missed.trailing_zeros() as usize;
            missed &= missed - 1;
            let kb = keys[i].as_bytes();
            match self.bulk_rest(in_sec & (1 << i) != 0, cand[i], hashes[i], kb) {
                Probe::Hit(idx) => {
                    found += 1;
                    out[i] = Some(idx - 1);
                }
                Probe::Miss => misses |= 1 << i,
                Probe::Changed => changed |= 1 << i,
            }
        }
        // Keys whose slot changed while read are looked up again; so are the misses if a key
        // moved during the passes.
        let mut redo = changed;
        if misses != 0 {
            fence(Acquire);
            if chng.load(Relaxed) != c1 {
                redo |= misses;
            }
        }
        while redo != 0 {
            let i = redo.trailing_zeros() as usize;
            redo &= redo - 1;
            out[i] = self.find(keys[i].as_bytes(), hashes[i], None);
            found += usize::from(out[i].is_some());
        }
        found
    }

    /// Pass 2 of a bulk lookup for a key with no candidate in its primary bucket (a few per
    /// cent of keys; out of line, so that the loop for the others stays short): the first
    /// candidate's slot index in the secondary bucket (0 if none) and the other candidates.
    #[inline(never)]
    fn bulk_first_in_sec(&self, hash: u32) -> (u32, u32) {
        let (sig, _, sec) = self.g.split(hash);
        let b = self.g.main(sec);
        let c = self.sig_candidates(b, sig);
        if c == 0 {
            return (0, 0);
        }
        (self.entry_idx(b, lane_of(c), Acquire), c & (c - 1))
    }

    /// The rest of a bulk lookup's search for one key whose first candidate missed: the other
    /// candidates `cand` of the bucket searched first (the secondary if `sec`), then the
    /// secondary bucket in full (unless searched first) and its chain.
    #[inline(never)]
    fn bulk_rest(&self, sec: bool, cand: u32, hash: u32, kb: &[u8]) -> Probe {
        let (sig, prim, sec_b) = self.g.split(hash);
        let (pb, sb) = (self.g.main(prim), self.g.main(sec_b));
        let mut none = None;
        let b = if sec { sb } else { pb };
        let mut m = cand;
        while m != 0 {
            let lane = lane_of(m);
            m &= m - 1;
            match self.probe_slot(self.entry_idx(b, lane, Acquire), kb, &mut none) {
                Probe::Miss => {}
                r => return r,
            }
        }
        if !sec {
            match self.probe_bucket(sb, sig, kb, &mut none) {
                Probe::Miss => {}
                r => return r,
            }
        }
        if self.g.n_ext != 0 {
            return self.probe_chain(sb, sig, kb, &mut none);
        }
        Probe::Miss
    }

    /// Prefetch the line(s) of key slot `idx` that hold its state and key: the first word and,
    /// where state and key may cross a line, the last key word (slots of 2, 4 or 8 words never
    /// cross one; a slot of 16-byte keys and 8-byte values is 6 words, and one in four crosses).
    /// Whatever `idx` is: an invalid index read from a racing bucket only wastes a prefetch.
    #[inline(always)]
    pub(super) fn prefetch_slot(&self, idx: u32) {
        let sw = self.slot_at(idx);
        self.mem.prefetch(sw);
        if Self::KW > 6 || (Self::KW >= 2 && 8 % Self::SW != 0) {
            self.mem.prefetch(sw + Self::KW);
        }
    }

    #[inline(always)]
    pub(super) fn sig_candidates(&self, bw: usize, sig: u16) -> u32 {
        self.mem.sig_candidates(bw, sig)
    }

    #[inline(always)]
    pub(super) fn entry_idx(&self, bw: usize, lane: usize, o: crate::sync::Ordering) -> u32 {
        if matches!(o, Acquire) {
            // Readers: one 4-byte load.
            return self.mem.entry_idx_acquire(bw, lane);
        }
        let b = self.mem.eight(bw);
        (b[(2 + lane / 2) & 7].load(o) >> ((lane & 1) * 32)) as u32
    }

    #[inline(always)]
    pub(super) fn entry_sig(&self, bw: usize, lane: usize) -> u16 {
        let b = self.mem.eight(bw);
        (b[(lane / 4) & 7].load(Relaxed) >> ((lane & 3) * 16)) as u16
    }

    #[inline(always)]
    pub(super) fn next_ext(&self, bw: usize, o: crate::sync::Ordering) -> u32 {
        self.mem.eight(bw)[B_NEXT].load(o) as u32
    }

    /// Does slot `idx` hold `kb`? On a hit, copies the current value into `val` and checks
    /// that the slot did not change while it was read.
    #[inline(always)]
    pub(super) fn probe_slot(&self, idx: u32, kb: &[u8], val: &mut Option<&mut [u8]>) -> Probe {
        let g = &self.g;
        if idx == 0 || idx > g.entries {
            return Probe::Miss;
        }
        let s = self
            .mem
            .range(self.slot_at(idx), 1 + Self::KW + 2 * Self::VW);
        let s1 = s[0].load(Acquire);
        if s1 & (S_FILLING | S_LIVE) != S_LIVE {
            return Probe::Miss;
        }
        if !key_eq(&s[1..1 + Self::KW], kb) {
            // Key words change only when a freed slot is refilled, so the key we look for was
            // deleted during this lookup if it was here at all: a miss is right.
            return Probe::Miss;
        }
        if let Some(v) = val.as_deref_mut() {
            let buf = usize::from(s1 & S_BUF != 0);
            let vs = &s[1 + Self::KW + buf * Self::VW..];
            for (ch, w) in v.chunks_mut(8).zip(vs) {
                ch.copy_from_slice(&w.load(Relaxed).to_le_bytes()[..ch.len()]);
            }
        }
        fence(Acquire);
        if s[0].load(Relaxed) == s1 {
            Probe::Hit(idx)
        } else {
            Probe::Changed
        }
    }

    #[inline(always)]
    pub(super) fn probe_bucket(
        &self,
        bw: usize,
        sig: u16,
        kb: &[u8],
        val: &mut Option<&mut [u8]>,
    ) -> Probe {
        let mut m = self.sig_candidates(bw, sig);
        while m != 0 {
            let lane = lane_of(m);
            m &= m - 1;
            let idx = self.entry_idx(bw, lane, Acquire);
            match self.probe_slot(idx, kb, val) {
                Probe::Miss => {}
                r => return r,
            }
        }
        Probe::Miss
    }

    #[inline(never)]
    pub(super) fn probe_chain(
        &self,
        head: usize,
        sig: u16,
        kb: &[u8],
        val: &mut Option<&mut [u8]>,
    ) -> Probe {
        let mut e = self.next_ext(head, Acquire);
        let mut hops = 0;
        while e != 0 && e <= self.g.n_ext && hops <= self.g.n_ext {
            let bw = self.g.ext(e);
            match self.probe_bucket(bw, sig, kb, val) {
                Probe::Miss => {}
                r => return r,
            }
            e = self.next_ext(bw, Acquire);
            hops += 1;
        }
        Probe::Miss
    }

    /// The reader. The fast path (most keys sit in their primary bucket) searches the primary
    /// bucket alone: a hit there is verified by the key slot's state word and needs nothing
    /// else. Anything else goes to [`Hash::find_full`].
    #[inline(always)]
    pub(super) fn find(&self, kb: &[u8], hash: u32, mut val: Option<&mut [u8]>) -> Option<u32> {
        let g = &self.g;
        let (sig, prim, _) = g.split(hash);
        if let Probe::Hit(idx) = self.probe_bucket(g.main(prim), sig, kb, &mut val) {
            return Some(idx - 1);
        }
        self.find_full(kb, hash, val)
    }

    /// The full reader: search the primary bucket, the secondary, then the secondary's chain;
    /// if that missed and the change counter moved meanwhile (a key was displaced), search
    /// again.
    #[inline(never)]
    pub(super) fn find_full(
        &self,
        kb: &[u8],
        hash: u32,
        mut val: Option<&mut [u8]>,
    ) -> Option<u32> {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        let (pb, sb) = (g.main(prim), g.main(sec));
        let chng = self.mem.w(H_CHNG);
        loop {
            let c1 = chng.load(Acquire);
            let mut r = self.probe_bucket(pb, sig, kb, &mut val);
            if let Probe::Miss = r {
                r = self.probe_bucket(sb, sig, kb, &mut val);
            }
            if let Probe::Miss = r {
                if g.n_ext != 0 {
                    r = self.probe_chain(sb, sig, kb, &mut val);
                }
            }
            match r {
                Probe::Hit(idx) => return Some(idx - 1),
                Probe::Changed => spin_loop(),
                Probe::Miss => {
                    fence(Acquire);
                    if chng.load(Relaxed) == c1 {
                        return None;
                    }
                }
            }
        }
    }

    /// A consistent copy of slot `idx`'s key and value, with the state word they were read
    /// under, if it holds a complete key (a freed slot still does: see [`S_LIVE`]).
    pub(super) fn read_slot(&self, idx: u32) -> Option<(K, V, u64)> {
        let g = &self.g;
        let sw = g.slot(idx);
        loop {
            let s1 = self.mem.w(sw).load(Acquire);
            if s1 & (S_FILLING | S_LIVE) != S_LIVE {
                return None;
            }
            let mut k = K::new_zeroed();
            let mut v = V::new_zeroed();
            read_words(&self.mem, sw + 1, k.as_mut_bytes());
            let buf = usize::from(s1 & S_BUF != 0);
            read_words(
                &self.mem,
                sw + 1 + g.key_words + buf * g.val_words,
                v.as_mut_bytes(),
            );
            fence(Acquire);
            if self.mem.w(sw).load(Relaxed) == s1 {
                return Some((k, v, s1));
            }
            spin_loop();
        }
    }
}

/// Iterator over a table's keys: `(position, key, value)`, from [`Hash::iter`].
pub struct Iter<'a, K, V, H> {
    pub(super) t: &'a Hash<K, V, H>,
    pub(super) bucket: u32,
    pub(super) lane: usize,
}

impl<K, V, H> fmt::Debug for Iter<'_, K, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("bucket", &self.bucket)
            .field("lane", &self.lane)
            .finish()
    }
}

impl<K: Plain, V: Plain, H: HashFn> Iterator for Iter<'_, K, V, H> {
    type Item = (u32, K, V);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.t;
        let g = &t.g;
        // Main buckets, then every extendable bucket (free ones are empty).
        while self.bucket < g.nb + g.n_ext {
            let bw = g.bkt_off + self.bucket as usize * BUCKET_WORDS;
            while self.lane < BUCKET_ENTRIES {
                let lane = self.lane;
                self.lane += 1;
                let idx = t.entry_idx(bw, lane, Acquire);
                if idx == 0 || idx > g.entries {
                    continue;
                }
                if let Some((k, v, _)) = t.read_slot(idx) {
                    return Some((idx - 1, k, v));
                }
            }
            self.bucket += 1;
            self.lane = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::sig_match;

    #[test]
    fn sig_match_finds_exactly_the_matching_lanes() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sig = (x >> 5) as u16;
            let mut lanes = [0u16; 8];
            for (l, v) in lanes.iter_mut().enumerate() {
                let r = (x >> (l * 7)) as u16;
                // Plenty of matches, near-misses (one bit off) and zero lanes.
                *v = match r % 5 {
                    0 => sig,
                    1 => sig ^ (1 << (r % 16)),
                    2 => 0,
                    3 => sig.wrapping_add(1),
                    _ => r,
                };
            }
            let w =
                |h: usize| (0..4).fold(0u64, |a, j| a | u64::from(lanes[4 * h + j]) << (16 * j));
            let mut m = sig_match(w(0), w(1), sig);
            let mut got = 0u32;
            while m != 0 {
                got |= 1 << lane_of(m);
                m &= m - 1;
            }
            let want = (0..8).fold(0u32, |a, l| a | u32::from(lanes[l] == sig) << l);
            assert_eq!(got, want, "lanes {lanes:x?} sig {sig:#x}");
        }
    }

    /// The readers' bucket accessors (assembly loads on x86_64) agree with the atomic words
    /// they read: candidate lanes as `sig_match` finds them, and each lane's slot index, for
    /// buckets at a 64-byte boundary and at 8-byte offsets from it.
    #[test]
    fn bucket_accessors_read_what_the_words_hold() {
        use shmconfig::{LocalZones, ZoneKind, ZoneRequest, Zones};
        let zone = LocalZones::new()
            .reserve(&ZoneRequest::new("acc", 64 * 8, ZoneKind::Hash))
            .unwrap();
        let mem = Mem::new(zone).unwrap();
        let mut x = 0x0bad_cafe_f00d_d00du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let bw = 8 * (round % 4) + (round / 4) % 8;
            let sig = next() as u16;
            for j in 0..8 {
                let mut w = next();
                if j < 2 && w % 3 == 0 {
                    // Put the signature in one of the word's lanes.
                    let sh = (w >> 8) % 4 * 16;
                    w = (w & !(0xffff << sh)) | u64::from(sig) << sh;
                }
                mem.w(bw + j).store(w, Relaxed);
            }
            let (w0, w1) = (mem.w(bw).load(Relaxed), mem.w(bw + 1).load(Relaxed));
            assert_eq!(
                mem.sig_candidates(bw, sig),
                sig_match(w0, w1, sig),
                "bucket at {bw}"
            );
            for lane in 0..8 {
                let w = mem.w(bw + 2 + lane / 2).load(Relaxed);
                let want = (w >> ((lane & 1) * 32)) as u32;
                assert_eq!(
                    mem.entry_idx_acquire(bw, lane),
                    want,
                    "bucket at {bw}, lane {lane}"
                );
            }
        }
    }

    #[test]
    fn atomics_have_u64_layout() {
        assert_eq!(size_of::<crate::sync::AtomicU64>(), 8);
    }
}
