//! Where everything lives in the table's zone, in 64-bit words.
//!
//! ```text
//! header  (HEADER_WORDS)   magic, version+fingerprint, sizes, hash-function id, key and value
//!                          type ids, lock word (own cache line), change counter (own cache
//!                          line), count and free-stack tops (own cache line), key and value
//!                          type names (for messages)
//! buckets (nb × 8)         one 64-byte bucket per cache line
//! ext     (n_ext × 8)      extendable buckets, indexes 1..=n_ext (0 means "none")
//! slots   (slots × sw)     key slots; slot 0 is a dummy so that entry index 0 means "empty"
//! free    (entries)        stack of free key slots: index in the low half of each word, the
//!                          slot's state word (high half) as it was freed above it
//! extfree (n_ext)          stack of free extendable-bucket indexes
//! ```
//!
//! A bucket: words 0–1 hold the eight 16-bit signatures (four per word), words 2–5 the eight
//! 32-bit key-slot indexes (two per word, 0 = empty), word 6 the index of the next extendable
//! bucket of its chain (0 = none), word 7 is padding.
//!
//! A key slot: word 0 is its state (`hash` in the low 32 bits; `FILLING`, `LIVE`, `BUF` flags and
//! a generation counter above), then the key zero-padded to whole words, then two copies of the
//! value (the one `BUF` names is current; updates write the other and flip `BUF`). A free slot
//! keeps the state and key it had when its key was deleted; the free stack records that state.

/// `"HSHASH01"`: the first word of every table.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"HSHASH01");
/// Bumped when the meaning of any word changes (3: the lock word records the holder's
/// incarnation; the key and value types are recorded).
pub(crate) const VERSION: u32 = 3;
/// FNV-1a of the description of the layout, so that two builds with different layouts cannot
/// open each other's tables even if someone forgets to bump `VERSION`.
pub(crate) const FINGERPRINT: u32 = fnv1a(
    b"hdr:magic,ver+fp,ksz+vsz,entries+nb,next+flags,fn[4],seed+check,ktype,vtype;lock(member+1|inc<<32)@16;chng@24;count,freetop,exttop@32;kname[4]@40,vname[4]@44;\
      bucket:sig[2]x4x16,idx[4]x2x32,next,pad;slot:state(hash32,fill,live,buf,gen29),key[kw],val[2][vw];free:idx32|state32;freed-slot:state-kept",
);

const fn fnv1a(s: &[u8]) -> u32 {
    let mut h = 0x811c_9dc5u32;
    let mut i = 0;
    while i < s.len() {
        h ^= s[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 1;
pub(crate) const H_SIZES: usize = 2;
pub(crate) const H_ENTRIES: usize = 3;
pub(crate) const H_EXT: usize = 4;
pub(crate) const H_FN_NAME: usize = 5; // 4 words
pub(crate) const H_FN_SEED: usize = 9;
/// The key type's [`crate::Plain::TYPE_ID`].
pub(crate) const H_KEY_TYPE: usize = 10;
/// The value type's [`crate::Plain::TYPE_ID`].
pub(crate) const H_VAL_TYPE: usize = 11;
/// The writer lock: 0 when free; `LOCK_REPAIR` (in `table::write`) when free but to be repaired;
/// held: the holder's member id + 1 in the low half, its incarnation
/// ([`shmconfig::Liveness::incarnation`], 0 if unknown) in the high half.
pub(crate) const H_LOCK: usize = 16;
pub(crate) const H_CHNG: usize = 24;
pub(crate) const H_COUNT: usize = 32;
pub(crate) const H_FREE_TOP: usize = 33;
pub(crate) const H_EXT_TOP: usize = 34;
/// The key type's name (4 words, NUL-padded; for messages only).
pub(crate) const H_KEY_NAME: usize = 40;
/// The value type's name (4 words).
pub(crate) const H_VAL_NAME: usize = 44;
pub(crate) const HEADER_WORDS: usize = 48;

/// Flag in `H_EXT`'s high half: extendable buckets are enabled.
pub(crate) const FLAG_EXT: u32 = 1;

/// Entries per bucket.
pub const BUCKET_ENTRIES: usize = 8;
/// Words per bucket.
pub(crate) const BUCKET_WORDS: usize = 8;
/// Word of a bucket holding the next extendable bucket's index.
pub(crate) const B_NEXT: usize = 6;

/// Largest number of entries a table may have (as DPDK's `RTE_HASH_ENTRIES_MAX`).
pub const ENTRIES_MAX: u32 = 1 << 30;

/// Slot state: the key and value are being written; the slot is not in any bucket.
pub(crate) const S_FILLING: u64 = 1 << 32;
/// Slot state: the slot holds a complete key: one in the table while a bucket references the
/// slot, else the last key of a freed slot (a delete does not write the slot; only a refill,
/// which bumps the generation, changes its state).
pub(crate) const S_LIVE: u64 = 1 << 33;
/// Slot state: which value copy is current.
pub(crate) const S_BUF: u64 = 1 << 34;
const GEN_SHIFT: u32 = 35;

/// The state word that follows `old` with `flags` set and `hash` recorded: the generation is
/// bumped, so that a reader that saw `old` notices any change.
#[inline]
pub(crate) fn next_state(old: u64, flags: u64, hash: u32) -> u64 {
    let gen = (old >> GEN_SHIFT).wrapping_add(1) << GEN_SHIFT;
    gen | flags | u64::from(hash)
}

/// Sizes and word offsets of one table, computed from its parameters alone (so an opener
/// recomputes them and checks them against the zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub entries: u32,
    pub nb: u32,
    pub mask: u32,
    pub n_ext: u32,
    pub key_size: usize,
    pub value_size: usize,
    pub key_words: usize,
    pub val_words: usize,
    pub slot_words: usize,
    pub bkt_off: usize,
    pub ext_off: usize,
    pub slot_off: usize,
    pub free_off: usize,
    pub extfree_off: usize,
    pub total_words: usize,
}

impl Geometry {
    /// `None` if the sizes overflow.
    pub(crate) fn new(
        entries: u32,
        key_size: usize,
        value_size: usize,
        extendable: bool,
    ) -> Option<Self> {
        let nb = (entries.checked_next_power_of_two()? / BUCKET_ENTRIES as u32).max(1);
        let n_ext = if extendable { nb } else { 0 };
        let key_words = key_size.div_ceil(8);
        let val_words = value_size.div_ceil(8);
        let slot_words = (1 + key_words + 2 * val_words).next_multiple_of(2);
        let slots = entries as usize + 1;
        let bkt_off = HEADER_WORDS;
        let ext_off = bkt_off + nb as usize * BUCKET_WORDS;
        let slot_off = ext_off + n_ext as usize * BUCKET_WORDS;
        let free_off = slot_off.checked_add(slots.checked_mul(slot_words)?)?;
        let extfree_off = free_off.checked_add(entries as usize)?;
        let total_words = extfree_off.checked_add(n_ext as usize)?;
        total_words.checked_mul(8)?;
        Some(Self {
            entries,
            nb,
            mask: nb - 1,
            n_ext,
            key_size,
            value_size,
            key_words,
            val_words,
            slot_words,
            bkt_off,
            ext_off,
            slot_off,
            free_off,
            extfree_off,
            total_words,
        })
    }

    /// Word offset of main bucket `b` (`b <= mask`).
    #[inline(always)]
    pub(crate) fn main(&self, b: u32) -> usize {
        self.bkt_off + (b & self.mask) as usize * BUCKET_WORDS
    }

    /// Word offset of extendable bucket `e` (1..=n_ext).
    #[inline(always)]
    pub(crate) fn ext(&self, e: u32) -> usize {
        self.ext_off + (e as usize - 1) * BUCKET_WORDS
    }

    /// The extendable-bucket index of the bucket at word `bw`, if it is one.
    pub(crate) fn ext_index(&self, bw: usize) -> Option<u32> {
        (bw >= self.ext_off && bw < self.slot_off)
            .then(|| ((bw - self.ext_off) / BUCKET_WORDS) as u32 + 1)
    }

    /// Word offset of key slot `idx` (1..=entries).
    #[inline(always)]
    pub(crate) fn slot(&self, idx: u32) -> usize {
        self.slot_off + idx as usize * self.slot_words
    }

    /// Signature, primary and secondary bucket of `hash` (as DPDK: `sig = hash >> 16`,
    /// `prim = hash & mask`, `sec = (prim ^ sig) & mask`).
    #[inline(always)]
    pub(crate) fn split(&self, hash: u32) -> (u16, u32, u32) {
        let sig = (hash >> 16) as u16;
        let prim = hash & self.mask;
        (sig, prim, (prim ^ u32::from(sig)) & self.mask)
    }
}
