//! [`Hash`]: the table, its readers, its writer and its repair.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use shmconfig::{Liveness, MemberId, MemberState, ZoneKind, ZoneRequest, Zones};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{HashError, TableFull};
use crate::hashfn::{HashFn, HashFnId, HASH_NAME_MAX};
use crate::layout::*;
use crate::raw::Mem;
use crate::sync::{fence, spin_loop, yield_now, Ordering::*};

/// Most keys one bulk lookup handles at once (as DPDK's `RTE_HASH_LOOKUP_BULK_MAX`); longer
/// slices are processed in chunks of this size.
pub const LOOKUP_BULK_MAX: usize = 64;

/// Keys a bulk lookup handles in one set of passes (prefetch buckets, match signatures and
/// prefetch key slots, compare keys).
const BULK_STRIDE: usize = 16;

/// Longest cuckoo search, in buckets visited (as DPDK's `RTE_HASH_BFS_QUEUE_MAX_LEN`).
const BFS_MAX: usize = 1000;

/// Lock word value meaning "free, but the last holder panicked: repair before use".
const LOCK_REPAIR: u64 = 1 << 32;

/// Plain fixed-size data that can live in shared memory: no pointers, no padding, any bit
/// pattern valid. Implemented for every type with zerocopy's `FromBytes + IntoBytes + Immutable`
/// (integers, arrays of them, and `#[repr(C)]` structs deriving those traits).
pub trait Plain: FromBytes + IntoBytes + Immutable + Copy {}
impl<T: FromBytes + IntoBytes + Immutable + Copy> Plain for T {}

/// Creation parameters of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Number of keys the table can hold (8 to 2^30). Buckets are sized for the next power of
    /// two, as DPDK does; adds can fail with [`TableFull`] before `entries` keys are in unless
    /// [`Params::extendable`] is set.
    pub entries: u32,
    /// Add extendable buckets (DPDK's `EXT_TABLE`): keys whose two buckets are full go into a
    /// chain hanging off their secondary bucket, so exactly `entries` keys always fit.
    pub extendable: bool,
}

impl Params {
    /// `entries` keys, no extendable buckets.
    pub fn new(entries: u32) -> Self {
        Self {
            entries,
            extendable: false,
        }
    }

    /// The same parameters with extendable buckets on or off.
    pub fn extendable(mut self, on: bool) -> Self {
        self.extendable = on;
        self
    }
}

/// Where a cuckoo add, a delete or a value update may stop, in tests that simulate a writer
/// dying in the middle of it. Not part of the stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Add: the key slot is filled but not yet in a bucket.
    AfterSlotFill,
    /// Add: the first displaced key has been copied to its alternate bucket but is still in
    /// its old place too (only when the add displaces; otherwise the add completes).
    MidDisplacement,
    /// Delete: the bucket entry is cleared, the key slot not yet freed.
    MidDelete,
    /// Re-add (update): half of the new value is written to the spare copy.
    MidUpdate,
}

enum Outcome {
    Done(u32),
    Full,
    Stopped,
}

/// A cuckoo hash table in shared memory, used with precomputed hashes.
///
/// * Keys `K` and values `V` are fixed-size plain data ([`Plain`]), compared by bytes.
/// * Buckets of 8 entries with 16-bit signatures, a primary and an alternate bucket per key,
///   cuckoo displacement on insert, optional extendable buckets ([`Params::extendable`]).
/// * The hash function `H` is a type parameter, never a pointer in shared memory: the table
///   records its [`HashFnId`] and [`Hash::lookup`] refuses another function. Compute hashes with
///   [`Hash::hash`] (or `H` itself) and pass them to the `*_with_hash` calls.
/// * Positions are as DPDK's: the key-slot index minus one, in `0..entries`, stable while the
///   key is present (re-adding a present key updates its value and returns the same position).
///
/// # Concurrency
/// Lookups, bulk lookups, iteration and `count` take no lock: they are correct while one writer
/// adds, moves and deletes. A key present for the whole of a lookup is always found, even while
/// a displacement moves it; a lookup that races with a move retries (DPDK's `tbl_chng_cnt`).
/// Writers (`add`, `delete`, `reset`) are serialised by a lock word in shared memory holding
/// the holder's [`MemberId`]; a waiter that finds the holder dead takes the lock over and
/// repairs whatever the dead writer left half-done (see the crate documentation for the rule
/// that makes every half-done step repairable).
///
/// ```
/// use rte_hash_with_hash::{Crc32c, Hash, Params};
/// use shmconfig::LocalZones;
///
/// let zones = LocalZones::new();
/// let t: Hash<u64, u32, Crc32c> =
///     Hash::create(&zones, "flows", Params::new(1024), Crc32c::new(0)).unwrap();
/// let h = t.hash(&42);
/// let pos = t.add_with_hash(&42, h, &7).unwrap();
/// assert_eq!(t.lookup_data_with_hash(&42, h), Some((pos, 7)));
///
/// // Another process (here: another handle) opens it by name with the same function.
/// let u: Hash<u64, u32, Crc32c> = Hash::lookup(&zones, "flows", Crc32c::new(0)).unwrap();
/// assert_eq!(u.lookup_with_hash(&42, h), Some(pos));
/// assert_eq!(u.delete_with_hash(&42, h), Some(pos));
/// assert_eq!(t.lookup_with_hash(&42, h), None);
/// ```
pub struct Hash<K, V, H> {
    mem: Mem,
    g: Geometry,
    hasher: H,
    liveness: Arc<dyn Liveness>,
    me: MemberId,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V, H: fmt::Debug> fmt::Debug for Hash<K, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hash")
            .field("name", &self.mem.zone().name())
            .field("entries", &self.g.entries)
            .field("buckets", &self.g.nb)
            .field("ext_buckets", &self.g.n_ext)
            .field("hasher", &self.hasher)
            .field("member", &self.me)
            .finish()
    }
}

/// What a reader found for one key.
enum Probe {
    Hit(u32),
    Miss,
    Changed,
}

/// The 64-bit word `j` of a key, zero-padded past its end (keys are stored the same way).
#[inline(always)]
fn key_word(kb: &[u8], j: usize) -> u64 {
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

/// Store `bytes` zero-padded into `words` words from `at`.
fn write_words(mem: &Mem, at: usize, words: usize, bytes: &[u8]) {
    for j in 0..words {
        mem.w(at + j).store(key_word(bytes, j), Relaxed);
    }
}

/// Read `out.len()` bytes from the words at `at`.
#[inline(always)]
fn read_words(mem: &Mem, at: usize, out: &mut [u8]) {
    for (j, ch) in out.chunks_mut(8).enumerate() {
        let w = mem.w(at + j).load(Relaxed).to_le_bytes();
        ch.copy_from_slice(&w[..ch.len()]);
    }
}

/// Bit `i` set when 16-bit lane `i` of `x` may be zero (never misses a zero lane; may report
/// a lane above a zero lane too, which the key comparison then rejects).
#[inline(always)]
fn zero_lanes(x: u64) -> u32 {
    let t = x.wrapping_sub(0x0001_0001_0001_0001) & !x & 0x8000_8000_8000_8000;
    let m = t >> 15;
    ((m | (m >> 15) | (m >> 30) | (m >> 45)) & 0xf) as u32
}

impl<K: Plain, V: Plain, H: HashFn> Hash<K, V, H> {
    /// Words of a key (the geometry's `key_words`, known at compile time).
    const KW: usize = size_of::<K>().div_ceil(8);
    /// Words of one value copy (the geometry's `val_words`).
    const VW: usize = size_of::<V>().div_ceil(8);

    /// Create a table named `name` (also the name of its zone, of kind [`ZoneKind::Hash`]).
    ///
    /// Fails if `params.entries` is below 8 (one bucket) or above 2^30, if `K` has size zero,
    /// if the name is taken ([`shmconfig::ZoneError::Exists`]) or if memory is short.
    pub fn create(
        zones: &impl Zones,
        name: &str,
        params: Params,
        hasher: H,
    ) -> Result<Self, HashError> {
        let entries = params.entries;
        if entries < BUCKET_ENTRIES as u32 {
            return Err(HashError::BadEntries {
                name: name.into(),
                entries,
                why: "fewer than one bucket (8); ask for at least 8",
            });
        }
        if entries > ENTRIES_MAX {
            return Err(HashError::BadEntries {
                name: name.into(),
                entries,
                why: "more than 2^30 (1073741824)",
            });
        }
        let (ks, vs) = (size_of::<K>(), size_of::<V>());
        if ks == 0 {
            return Err(HashError::ZeroKeySize { name: name.into() });
        }
        if H::NAME.is_empty() || H::NAME.len() > HASH_NAME_MAX {
            return Err(HashError::BadHashName(H::NAME));
        }
        let g = Geometry::new(entries, ks, vs, params.extendable).ok_or_else(|| {
            HashError::TooLarge {
                name: name.into(),
                entries,
                slot_bytes: (1 + ks.div_ceil(8) + 2 * vs.div_ceil(8)) * 8,
            }
        })?;
        let zone = zones.reserve(&ZoneRequest::new(name, g.total_words * 8, ZoneKind::Hash))?;
        let mem = Mem::new(zone).ok_or_else(|| HashError::Corrupt {
            name: name.into(),
            why: "the zone is not 8-byte aligned".into(),
        })?;
        let t = Self {
            mem,
            g,
            hasher,
            liveness: zones.liveness(),
            me: zones.member(),
            _kv: PhantomData,
        };
        t.init_header(params.extendable);
        Ok(t)
    }

    fn init_header(&self, extendable: bool) {
        let m = &self.mem;
        let g = &self.g;
        m.w(H_VERSION)
            .store(u64::from(VERSION) | u64::from(FINGERPRINT) << 32, Relaxed);
        m.w(H_SIZES)
            .store(g.key_size as u64 | (g.value_size as u64) << 32, Relaxed);
        m.w(H_ENTRIES)
            .store(u64::from(g.entries) | u64::from(g.nb) << 32, Relaxed);
        let flags = if extendable { FLAG_EXT } else { 0 };
        m.w(H_EXT)
            .store(u64::from(g.n_ext) | u64::from(flags) << 32, Relaxed);
        let id = self.hasher.id();
        let mut name = [0u8; HASH_NAME_MAX];
        name[..id.name.len()].copy_from_slice(id.name.as_bytes());
        write_words(m, H_FN_NAME, 4, &name);
        m.w(H_FN_SEED)
            .store(u64::from(id.seed) | u64::from(id.check) << 32, Relaxed);
        self.rebuild_free_lists(&vec![false; g.entries as usize + 1], &[]);
        // Publish: whoever sees the magic (acquire) sees everything above.
        m.w(H_MAGIC).store(MAGIC, Release);
    }

    /// Open the table `name` created (by any member) with the same `K`, `V` and hash function.
    ///
    /// Refused, with a message naming both functions, when the table was built with another
    /// hash function or seed ([`HashError::WrongHashFunction`]); refused when the key or value
    /// size differs, or the zone holds something else.
    pub fn lookup(zones: &impl Zones, name: &str, hasher: H) -> Result<Self, HashError> {
        let zone = zones.lookup_kind(name, ZoneKind::Hash)?;
        let bad = |why: String| HashError::BadHeader {
            name: name.into(),
            why,
        };
        if zone.len() < HEADER_WORDS * 8 {
            return Err(bad(format!(
                "the zone is {} bytes, smaller than a header",
                zone.len()
            )));
        }
        let mem = Mem::new(zone).ok_or_else(|| bad("the zone is not 8-byte aligned".into()))?;
        // Wait a little for a creator that is still writing the header.
        let mut magic = mem.w(H_MAGIC).load(Acquire);
        for _ in 0..1000 {
            if magic != 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            magic = mem.w(H_MAGIC).load(Acquire);
        }
        if magic == 0 {
            return Err(HashError::NotReady { name: name.into() });
        }
        if magic != MAGIC {
            return Err(bad(format!(
                "magic is {magic:#018x}, expected {MAGIC:#018x}"
            )));
        }
        let v = mem.w(H_VERSION).load(Relaxed);
        if v as u32 != VERSION || (v >> 32) as u32 != FINGERPRINT {
            return Err(bad(format!(
                "layout version {} fingerprint {:#010x}, this build has version {VERSION} fingerprint {FINGERPRINT:#010x}",
                v as u32,
                (v >> 32) as u32
            )));
        }
        let sizes = mem.w(H_SIZES).load(Relaxed);
        let (ks, vs) = ((sizes as u32) as usize, ((sizes >> 32) as u32) as usize);
        if ks != size_of::<K>() {
            return Err(HashError::TypeMismatch {
                name: name.into(),
                what: "keys",
                stored: ks,
                given: size_of::<K>(),
            });
        }
        if vs != size_of::<V>() {
            return Err(HashError::TypeMismatch {
                name: name.into(),
                what: "values",
                stored: vs,
                given: size_of::<V>(),
            });
        }
        let mut fname = [0u8; HASH_NAME_MAX];
        read_words(&mem, H_FN_NAME, &mut fname);
        let end = fname.iter().position(|&b| b == 0).unwrap_or(HASH_NAME_MAX);
        let seedw = mem.w(H_FN_SEED).load(Relaxed);
        let stored = HashFnId {
            name: String::from_utf8_lossy(&fname[..end]).into_owned(),
            seed: seedw as u32,
            check: (seedw >> 32) as u32,
        };
        let given = hasher.id();
        if stored != given {
            return Err(HashError::WrongHashFunction {
                name: name.into(),
                table: stored,
                given,
            });
        }
        let e = mem.w(H_ENTRIES).load(Relaxed);
        let x = mem.w(H_EXT).load(Relaxed);
        let entries = e as u32;
        let extendable = (x >> 32) as u32 & FLAG_EXT != 0;
        let corrupt = |why: String| HashError::Corrupt {
            name: name.into(),
            why,
        };
        if !(BUCKET_ENTRIES as u32..=ENTRIES_MAX).contains(&entries) {
            return Err(corrupt(format!("entries {entries} out of range")));
        }
        let g = Geometry::new(entries, ks, vs, extendable)
            .ok_or_else(|| corrupt(format!("entries {entries} overflow")))?;
        if g.nb != (e >> 32) as u32 || g.n_ext != x as u32 || g.total_words > mem.len() {
            return Err(corrupt(format!(
                "{entries} entries need {} buckets, {} extendable buckets and {} bytes; the header says {} and {} and the zone has {} bytes",
                g.nb,
                g.n_ext,
                g.total_words * 8,
                (e >> 32) as u32,
                x as u32,
                mem.len() * 8
            )));
        }
        Ok(Self {
            mem,
            g,
            hasher,
            liveness: zones.liveness(),
            me: zones.member(),
            _kv: PhantomData,
        })
    }

    /// Free the table's zone. Every handle (in every process) must be gone or unused.
    pub fn destroy(self, zones: &impl Zones) -> Result<(), HashError> {
        let name = self.name().to_owned();
        drop(self);
        zones.free(&name)?;
        Ok(())
    }

    /// The table's name (its zone's name).
    pub fn name(&self) -> &str {
        self.mem.zone().name()
    }

    /// The number of entries it was created with.
    pub fn capacity(&self) -> u32 {
        self.g.entries
    }

    /// The hash function this handle uses (the one the table was built with).
    pub fn hasher(&self) -> &H {
        &self.hasher
    }

    /// The hash the table expects for `key`: pass it to the `*_with_hash` calls.
    #[inline]
    pub fn hash(&self, key: &K) -> u32 {
        self.hasher.hash(key.as_bytes())
    }

    /// The number of keys in the table.
    pub fn count(&self) -> u32 {
        self.mem.w(H_COUNT).load(Relaxed) as u32
    }

    // ----------------------------------------------------------------------------------------
    // Readers (lock-free)

    /// The position of `key` (whose hash is `hash`), or `None` if it is not in the table.
    #[inline]
    pub fn lookup_with_hash(&self, key: &K, hash: u32) -> Option<u32> {
        self.find(key.as_bytes(), hash, None)
    }

    /// The position and value of `key`, or `None`.
    #[inline]
    pub fn lookup_data_with_hash(&self, key: &K, hash: u32) -> Option<(u32, V)> {
        let mut v = V::new_zeroed();
        let pos = self.find(key.as_bytes(), hash, Some(v.as_mut_bytes()))?;
        Some((pos, v))
    }

    /// Look up `keys` (with their `hashes`), writing each one's position (or `None`) into
    /// `positions`. Returns the number found. Keys are processed in chunks of
    /// [`LOOKUP_BULK_MAX`], with their buckets prefetched first.
    ///
    /// # Panics
    /// If the three slices have different lengths.
    pub fn lookup_bulk_with_hash(
        &self,
        keys: &[K],
        hashes: &[u32],
        positions: &mut [Option<u32>],
    ) -> usize {
        assert!(
            keys.len() == hashes.len() && keys.len() == positions.len(),
            "lookup_bulk_with_hash: {} keys, {} hashes and {} positions; give as many of each",
            keys.len(),
            hashes.len(),
            positions.len()
        );
        let mut found = 0;
        for ((k, h), p) in keys
            .chunks(LOOKUP_BULK_MAX)
            .zip(hashes.chunks(LOOKUP_BULK_MAX))
            .zip(positions.chunks_mut(LOOKUP_BULK_MAX))
        {
            found += self.bulk_chunk(k, h, p);
        }
        found
    }

    /// Up to [`LOOKUP_BULK_MAX`] keys, in three passes so that the memory accesses of all keys
    /// overlap: (1) prefetch both buckets of every key; (2) match signatures and prefetch the
    /// candidate key slots; (3) compare keys. A change-counter check around passes 2 and 3
    /// sends the misses of a pass that raced with a displacement through [`Hash::find`] again.
    fn bulk_chunk(&self, keys: &[K], hashes: &[u32], out: &mut [Option<u32>]) -> usize {
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
    fn bulk_stride(&self, keys: &[K], hashes: &[u32], out: &mut [Option<u32>]) -> usize {
        let g = &self.g;
        let n = keys.len().min(BULK_STRIDE);
        let (keys, hashes, out) = (&keys[..n], &hashes[..n], &mut out[..n]);
        let mut bkt = [(0usize, 0usize); BULK_STRIDE];
        for (b, &h) in bkt.iter_mut().zip(hashes) {
            let (_, prim, sec) = g.split(h);
            *b = (g.main(prim), g.main(sec));
            self.mem.prefetch(b.0);
        }
        let chng = self.mem.w(H_CHNG);
        let c1 = chng.load(Acquire);
        // Pass 2: candidate lanes in the primary bucket; prefetch the key slot of the first,
        // or, with none, the secondary bucket (most keys sit in their primary bucket, so the
        // secondary is fetched only for the others).
        let mut cand = [0u32; BULK_STRIDE];
        let mut in_sec = 0u32;
        for (i, (c, &(pb, sb))) in cand.iter_mut().zip(&bkt).enumerate().take(n) {
            let sig = (hashes[i] >> 16) as u16;
            *c = self.sig_candidates(pb, sig);
            if *c != 0 {
                self.prefetch_slot(self.entry_idx(pb, c.trailing_zeros() as usize, Relaxed));
            } else {
                self.mem.prefetch(sb);
                in_sec |= 1 << i;
            }
        }
        // Pass 2b: the same in the secondary buckets, for keys with no primary candidate.
        let mut m = in_sec;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let sb = bkt[i].1;
            let c = self.sig_candidates(sb, (hashes[i] >> 16) as u16);
            cand[i] = c << 8;
            if c != 0 {
                self.prefetch_slot(self.entry_idx(sb, c.trailing_zeros() as usize, Relaxed));
            }
        }
        // Pass 3: compare keys; a key not among its primary candidates is searched in its
        // secondary bucket (and chain) in full.
        let (mut misses, mut changed) = (0u32, 0u32);
        let mut none = None;
        let mut found = 0;
        for i in 0..n {
            let (pb, sb) = bkt[i];
            let sig = (hashes[i] >> 16) as u16;
            let kb = keys[i].as_bytes();
            let mut m = cand[i];
            let mut r = Probe::Miss;
            while m != 0 {
                let bit = m.trailing_zeros() as usize;
                m &= m - 1;
                let (b, lane) = if bit < 8 { (pb, bit) } else { (sb, bit - 8) };
                let idx = self.entry_idx(b, lane, Acquire);
                r = self.probe_slot(idx, kb, &mut none);
                if !matches!(r, Probe::Miss) {
                    break;
                }
            }
            if matches!(r, Probe::Miss) && cand[i] & 0xff != 0 {
                r = self.probe_bucket(sb, sig, kb, &mut none);
            }
            if matches!(r, Probe::Miss) && g.n_ext != 0 {
                r = self.probe_chain(sb, sig, kb, &mut none);
            }
            out[i] = match r {
                Probe::Hit(idx) => {
                    found += 1;
                    Some(idx - 1)
                }
                Probe::Miss => {
                    misses |= 1 << i;
                    None
                }
                Probe::Changed => {
                    changed |= 1 << i;
                    None
                }
            };
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

    /// Prefetch the first cache line(s) of key slot `idx`, if it is a valid index.
    #[inline(always)]
    fn prefetch_slot(&self, idx: u32) {
        if idx != 0 && idx <= self.g.entries {
            let sw = self.g.slot(idx);
            self.mem.prefetch(sw);
            if Self::KW > 6 {
                self.mem.prefetch(sw + Self::KW);
            }
        }
    }

    /// The key stored at `position`, if that position holds a key now (as DPDK's
    /// `rte_hash_get_key_with_position`).
    pub fn get_key_with_position(&self, position: u32) -> Option<K> {
        let idx = position.checked_add(1)?;
        if idx > self.g.entries {
            return None;
        }
        self.read_slot(idx).map(|(k, _)| k)
    }

    /// Every key in the table with its position and value, bucket by bucket (as DPDK's
    /// `rte_hash_iterate`). Each key present for the whole iteration is visited; while a
    /// writer moves keys concurrently a key may be visited twice, so iterate with writers
    /// stopped when that matters.
    pub fn iter(&self) -> Iter<'_, K, V, H> {
        Iter {
            t: self,
            bucket: 0,
            lane: 0,
        }
    }

    #[inline(always)]
    fn sig_candidates(&self, bw: usize, sig: u16) -> u32 {
        let b = self.mem.eight(bw);
        let pat = u64::from(sig).wrapping_mul(0x0001_0001_0001_0001);
        let w0 = b[0].load(Relaxed) ^ pat;
        let w1 = b[1].load(Relaxed) ^ pat;
        zero_lanes(w0) | zero_lanes(w1) << 4
    }

    #[inline(always)]
    fn entry_idx(&self, bw: usize, lane: usize, o: crate::sync::Ordering) -> u32 {
        let b = self.mem.eight(bw);
        (b[(2 + lane / 2) & 7].load(o) >> ((lane & 1) * 32)) as u32
    }

    #[inline(always)]
    fn entry_sig(&self, bw: usize, lane: usize) -> u16 {
        let b = self.mem.eight(bw);
        (b[(lane / 4) & 7].load(Relaxed) >> ((lane & 3) * 16)) as u16
    }

    #[inline(always)]
    fn next_ext(&self, bw: usize, o: crate::sync::Ordering) -> u32 {
        self.mem.eight(bw)[B_NEXT].load(o) as u32
    }

    /// Does slot `idx` hold `kb`? On a hit, copies the current value into `val` and checks
    /// that the slot did not change while it was read.
    #[inline(always)]
    fn probe_slot(&self, idx: u32, kb: &[u8], val: &mut Option<&mut [u8]>) -> Probe {
        let g = &self.g;
        if idx == 0 || idx > g.entries {
            return Probe::Miss;
        }
        let s = self.mem.range(g.slot(idx), 1 + Self::KW + 2 * Self::VW);
        let s1 = s[0].load(Acquire);
        if s1 & (S_FILLING | S_LIVE) != S_LIVE {
            return Probe::Miss;
        }
        for j in 0..Self::KW {
            if s[1 + j].load(Relaxed) != key_word(kb, j) {
                // Key words change only when a freed slot is refilled, so the key we look for
                // was deleted during this lookup if it was here at all: a miss is right.
                return Probe::Miss;
            }
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
    fn probe_bucket(&self, bw: usize, sig: u16, kb: &[u8], val: &mut Option<&mut [u8]>) -> Probe {
        let mut m = self.sig_candidates(bw, sig);
        while m != 0 {
            let lane = m.trailing_zeros() as usize;
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
    fn probe_chain(&self, head: usize, sig: u16, kb: &[u8], val: &mut Option<&mut [u8]>) -> Probe {
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

    /// The reader: search the primary bucket, the secondary, then the secondary's chain; if
    /// that missed and the change counter moved meanwhile (a key was displaced), search again.
    #[inline(always)]
    fn find(&self, kb: &[u8], hash: u32, mut val: Option<&mut [u8]>) -> Option<u32> {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        let (pb, sb) = (g.main(prim), g.main(sec));
        self.mem.prefetch(sb);
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

    /// A consistent copy of slot `idx`'s key and value, if it holds a key.
    fn read_slot(&self, idx: u32) -> Option<(K, V)> {
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
                return Some((k, v));
            }
            spin_loop();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Writers (serialised by the lock word)

    /// Add `key` with `value`, or update the value if `key` is present (returning its existing
    /// position). Returns the key's position, or [`TableFull`].
    #[inline]
    pub fn add_with_hash(&self, key: &K, hash: u32, value: &V) -> Result<u32, TableFull> {
        let guard = self.lock();
        let r = self.add_locked(key.as_bytes(), hash, value.as_bytes(), None);
        drop(guard);
        match r {
            Outcome::Done(pos) => Ok(pos),
            Outcome::Full | Outcome::Stopped => Err(TableFull),
        }
    }

    /// Delete `key`; returns the position it had, or `None` if it was not in the table. The
    /// position may be reused by the next add.
    #[inline]
    pub fn delete_with_hash(&self, key: &K, hash: u32) -> Option<u32> {
        let guard = self.lock();
        let r = self.delete_locked(key.as_bytes(), hash, None);
        drop(guard);
        match r {
            Outcome::Done(pos) => Some(pos),
            _ => None,
        }
    }

    /// Take the writer lock for a batch of adds and deletes, paying for it once (DPDK's
    /// single-writer mode, made explicit). Readers are not blocked; other writers wait until
    /// the [`Writer`] is dropped, and take over if this process dies holding it.
    ///
    /// ```
    /// use rte_hash_with_hash::{Crc32c, Hash, Params};
    /// let zones = shmconfig::LocalZones::new();
    /// let t: Hash<u32, u32, Crc32c> =
    ///     Hash::create(&zones, "batch", Params::new(64), Crc32c::new(0)).unwrap();
    /// let w = t.writer();
    /// for k in 0..10u32 {
    ///     w.add_with_hash(&k, t.hash(&k), &(k * 2)).unwrap();
    /// }
    /// assert_eq!(w.delete_with_hash(&3, t.hash(&3)).is_some(), true);
    /// drop(w);
    /// assert_eq!(t.count(), 9);
    /// ```
    pub fn writer(&self) -> Writer<'_, K, V, H> {
        Writer { guard: self.lock() }
    }

    /// Remove every key.
    pub fn reset(&self) {
        let _guard = self.lock();
        let g = &self.g;
        self.bump_change();
        for b in 0..(g.nb + g.n_ext) {
            let bw = g.bkt_off + b as usize * BUCKET_WORDS;
            for j in 2..BUCKET_WORDS {
                self.mem.w(bw + j).store(0, Release);
            }
        }
        for idx in 1..=g.entries {
            let sw = g.slot(idx);
            let s = self.mem.w(sw).load(Relaxed);
            if s & (S_LIVE | S_FILLING) != 0 {
                self.mem.w(sw).store(next_state(s, 0, 0), Release);
            }
        }
        self.rebuild_free_lists(&vec![false; g.entries as usize + 1], &[]);
        self.mem.w(H_COUNT).store(0, Relaxed);
    }

    /// Test hook: run an add and stop at `at`, leaving the lock held and the work half-done,
    /// as a writer that dies there would. Not part of the stable API.
    #[doc(hidden)]
    pub fn debug_add_and_stop(&self, key: &K, hash: u32, value: &V, at: StopAt) -> bool {
        let guard = self.lock();
        let r = self.add_locked(key.as_bytes(), hash, value.as_bytes(), Some(at));
        if matches!(r, Outcome::Stopped) {
            std::mem::forget(guard);
            true
        } else {
            false
        }
    }

    /// Test hook: run a delete and stop at `at` (only [`StopAt::MidDelete`] stops), leaving the
    /// lock held. Not part of the stable API.
    #[doc(hidden)]
    pub fn debug_delete_and_stop(&self, key: &K, hash: u32, at: StopAt) -> bool {
        let guard = self.lock();
        let r = self.delete_locked(key.as_bytes(), hash, Some(at));
        if matches!(r, Outcome::Stopped) {
            std::mem::forget(guard);
            true
        } else {
            false
        }
    }

    /// Test hook: the member recorded in the lock word, if the lock is held.
    #[doc(hidden)]
    pub fn debug_lock_holder(&self) -> Option<MemberId> {
        let w = self.mem.w(H_LOCK).load(Relaxed);
        (w != 0 && w != LOCK_REPAIR).then(|| MemberId(((w & 0xffff_ffff) - 1) as u16))
    }

    /// Test hook: the change counter (how many times readers were told a key moved).
    #[doc(hidden)]
    pub fn debug_change_count(&self) -> u64 {
        self.mem.w(H_CHNG).load(Relaxed)
    }

    /// Check every invariant the writer keeps (run with writers stopped): each key in exactly
    /// one place, in one of its two buckets or its secondary's chain, signatures right, slots
    /// live exactly when referenced, free lists and count consistent. Returns what is wrong.
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
            if !seen[idx as usize] && s & (S_LIVE | S_FILLING) != 0 {
                return Err(format!("slot {idx} live but in no bucket"));
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

    fn lock(&self) -> WriteGuard<'_, K, V, H> {
        let me = u64::from(self.me.0) + 1;
        if self
            .mem
            .w(H_LOCK)
            .compare_exchange(0, me, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow(me);
        }
        WriteGuard { t: self }
    }

    #[cold]
    fn lock_slow(&self, me: u64) {
        let lw = self.mem.w(H_LOCK);
        let mut spins = 0u32;
        loop {
            let cur = lw.load(Relaxed);
            if cur == 0 {
                if lw.compare_exchange(0, me, Acquire, Relaxed).is_ok() {
                    return;
                }
            } else if cur == LOCK_REPAIR {
                if lw.compare_exchange(cur, me, Acquire, Relaxed).is_ok() {
                    self.repair();
                    return;
                }
            } else if spins % 64 == 0 {
                let holder = (cur & 0xffff_ffff).wrapping_sub(1);
                let state = if holder > u64::from(u16::MAX) {
                    MemberState::Dead // not a member id: nobody can hold it
                } else {
                    self.liveness.member_state(MemberId(holder as u16))
                };
                if state != MemberState::Alive
                    && lw.compare_exchange(cur, me, Acquire, Relaxed).is_ok()
                {
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
    fn bump_change(&self) {
        let w = self.mem.w(H_CHNG);
        w.store(w.load(Relaxed).wrapping_add(1), Release);
        fence(Release);
    }

    #[inline]
    fn set_entry(&self, bw: usize, lane: usize, sig: u16, idx: u32) {
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
    fn clear_entry(&self, bw: usize, lane: usize) {
        let iw = &self.mem.eight(bw)[(2 + lane / 2) & 7];
        let sh = (lane & 1) * 32;
        let v = iw.load(Relaxed);
        iw.store(v & !(0xffff_ffff << sh), Release);
    }

    #[inline]
    fn empty_lane(&self, bw: usize) -> Option<usize> {
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

    /// Writer-side search: the bucket word, lane and slot index holding `kb`.
    #[inline]
    fn locate(&self, kb: &[u8], sig: u16, prim: u32, sec: u32) -> Option<(usize, usize, u32)> {
        let g = &self.g;
        let mut none = None;
        let mut check = |bw: usize| -> Option<(usize, usize, u32)> {
            let mut m = self.sig_candidates(bw, sig);
            while m != 0 {
                let lane = m.trailing_zeros() as usize;
                m &= m - 1;
                let idx = self.entry_idx(bw, lane, Relaxed);
                if let Probe::Hit(idx) = self.probe_slot(idx, kb, &mut none) {
                    return Some((bw, lane, idx));
                }
            }
            None
        };
        if let Some(r) = check(g.main(prim)) {
            return Some(r);
        }
        if let Some(r) = check(g.main(sec)) {
            return Some(r);
        }
        if g.n_ext == 0 {
            return None;
        }
        let mut e = self.next_ext(g.main(sec), Relaxed);
        let mut hops = 0;
        while e != 0 && e <= g.n_ext && hops <= g.n_ext {
            if let Some(r) = check(g.ext(e)) {
                return Some(r);
            }
            e = self.next_ext(g.ext(e), Relaxed);
            hops += 1;
        }
        None
    }

    /// A free key slot: its index and its state word as it was freed (so that an add writes
    /// the slot without first reading it: the line is only written, never waited for).
    fn pop_free(&self) -> Option<(u32, u64)> {
        let tw = self.mem.w(H_FREE_TOP);
        let top = tw.load(Relaxed);
        if top == 0 {
            return None;
        }
        let e = self.mem.w(self.g.free_off + top as usize - 1).load(Relaxed);
        tw.store(top - 1, Relaxed);
        Some((e as u32, e & !0xffff_ffff))
    }

    /// Push key slot `idx`, whose state word is now `state`, on the free stack.
    fn push_free(&self, idx: u32, state: u64) {
        let tw = self.mem.w(H_FREE_TOP);
        let top = tw.load(Relaxed);
        self.mem
            .w(self.g.free_off + top as usize)
            .store(u64::from(idx) | (state & !0xffff_ffff), Relaxed);
        tw.store(top + 1, Relaxed);
    }

    fn pop_ext(&self) -> Option<u32> {
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

    fn push_ext(&self, e: u32) {
        let tw = self.mem.w(H_EXT_TOP);
        let top = tw.load(Relaxed);
        self.mem
            .w(self.g.extfree_off + top as usize)
            .store(u64::from(e), Relaxed);
        tw.store(top + 1, Relaxed);
    }

    /// Write key and value into free slot `idx` and mark it live. Readers holding a stale
    /// index to it see `FILLING` or a new generation and ignore it.
    fn fill_slot(&self, idx: u32, freed_state: u64, hash: u32, kb: &[u8], vb: &[u8]) {
        let sl = self
            .mem
            .range(self.g.slot(idx), 1 + Self::KW + 2 * Self::VW);
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

    /// Mark slot `idx` free (not live, new generation) and push it on the free stack.
    fn release_slot(&self, idx: u32) {
        let sw = self.g.slot(idx);
        let s = self.mem.w(sw).load(Relaxed);
        let freed = next_state(s, 0, s as u32);
        self.mem.w(sw).store(freed, Release);
        self.push_free(idx, freed);
    }

    #[inline]
    fn add_locked(&self, kb: &[u8], hash: u32, vb: &[u8], stop: Option<StopAt>) -> Outcome {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        // Start the three memory accesses an add of a new key needs (primary bucket, secondary
        // bucket, a free key slot) at once instead of one after the other.
        self.mem.prefetch(g.main(sec));
        let free = self.pop_free();
        if let Some((idx, _)) = free {
            let sw = g.slot(idx);
            self.mem.prefetch(sw);
            self.mem.prefetch(sw + 1 + Self::KW + Self::VW - 1);
        }
        if let Some((_, _, idx)) = self.locate(kb, sig, prim, sec) {
            if let Some((f, state)) = free {
                self.push_free(f, state);
            }
            // Update: write the spare value copy, then flip to it in one store.
            if g.val_words != 0 {
                let sw = g.slot(idx);
                let s = self.mem.w(sw).load(Relaxed);
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
    fn cuckoo(&self, start: u32, sig: u16, idx: u32, stop: Option<StopAt>) -> Result<bool, ()> {
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
    fn place_ext(&self, sec: u32, sig: u16, idx: u32) -> bool {
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

    #[inline]
    fn delete_locked(&self, kb: &[u8], hash: u32, stop: Option<StopAt>) -> Outcome {
        let g = &self.g;
        let (sig, prim, sec) = g.split(hash);
        self.mem.prefetch(g.main(sec));
        let Some((bw, lane, idx)) = self.locate(kb, sig, prim, sec) else {
            return Outcome::Full;
        };
        self.clear_entry(bw, lane);
        if stop == Some(StopAt::MidDelete) {
            return Outcome::Stopped;
        }
        self.release_slot(idx);
        let c = self.mem.w(H_COUNT);
        c.store(c.load(Relaxed) - 1, Relaxed);
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
    fn compact(&self, head: usize, hole: usize, hole_lane: usize) {
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

    fn empty_lane_count(&self, bw: usize) -> usize {
        (0..BUCKET_ENTRIES)
            .filter(|&l| self.entry_idx(bw, l, Relaxed) == 0)
            .count()
    }

    /// Rebuild both free stacks: slot `i` is in use when `used[i]`, extendable bucket `e` when
    /// `ext_used[e]` (an empty slice means none).
    fn rebuild_free_lists(&self, used: &[bool], ext_used: &[bool]) {
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
    fn repair(&self) {
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
        // 4. Slots: live exactly when referenced.
        for idx in 1..=g.entries {
            let sw = g.slot(idx);
            let s = self.mem.w(sw).load(Relaxed);
            if !used[idx as usize] && s & (S_LIVE | S_FILLING) != 0 {
                self.mem.w(sw).store(next_state(s, 0, s as u32), Release);
            }
        }
        self.rebuild_free_lists(&used, &ext_used);
        self.mem.w(H_COUNT).store(n, Relaxed);
    }
}

/// Holds the writer lock; releases it on drop (marking the table for repair if the holder
/// panicked in the middle of an operation).
struct WriteGuard<'a, K, V, H> {
    t: &'a Hash<K, V, H>,
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
    guard: WriteGuard<'a, K, V, H>,
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
    #[inline]
    pub fn delete_with_hash(&self, key: &K, hash: u32) -> Option<u32> {
        match self.guard.t.delete_locked(key.as_bytes(), hash, None) {
            Outcome::Done(pos) => Some(pos),
            _ => None,
        }
    }
}

/// Iterator over a table's keys: `(position, key, value)`, from [`Hash::iter`].
pub struct Iter<'a, K, V, H> {
    t: &'a Hash<K, V, H>,
    bucket: u32,
    lane: usize,
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
                if let Some((k, v)) = t.read_slot(idx) {
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

    #[test]
    fn zero_lanes_finds_every_zero_lane() {
        for x in [
            0u64,
            0xffff_ffff_ffff_ffff,
            0x0001_0000_ffff_0000,
            0x0000_0001_0000_0100,
            0x8000_0000_0001_0000,
        ] {
            let got = zero_lanes(x);
            for i in 0..4 {
                if (x >> (16 * i)) as u16 == 0 {
                    assert!(got & (1 << i) != 0, "{x:#x} lane {i}");
                }
            }
        }
        assert_eq!(zero_lanes(0xffff_ffff_ffff_ffff), 0);
        assert_eq!(zero_lanes(0), 0xf);
    }

    #[test]
    fn atomics_have_u64_layout() {
        assert_eq!(size_of::<crate::sync::AtomicU64>(), 8);
    }
}
