//! [`Hash`]: the table, its creation and opening, and its public operations.
//!
//! The machinery lives in submodules: `read` (the lock-free readers and [`Iter`]), `write`
//! (the writer lock, adds, cuckoo displacement, deletes, [`Writer`]) and `repair` (what a
//! writer that takes over a dead one's lock runs, and the consistency check).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use shmconfig::{Liveness, MemberId, Zone, ZoneKind, ZoneRequest, Zones};

use crate::error::{HashError, TableFull};
use crate::hashfn::{HashFn, HashFnId, HASH_NAME_MAX};
use crate::layout::*;
use crate::plain::{short_type_name, Plain, TYPE_NAME_MAX};
use crate::raw::Mem;
use crate::sync::{fence, spin_loop, yield_now, Ordering::*};

/// Most keys one bulk lookup handles at once (as DPDK's `RTE_HASH_LOOKUP_BULK_MAX`); longer
/// slices are processed in chunks of this size.
pub const LOOKUP_BULK_MAX: usize = 64;

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

/// A cuckoo hash table in shared memory, used with precomputed hashes.
///
/// * Keys `K` and values `V` are fixed-size plain data ([`Plain`]), compared by bytes. The table
///   records their sizes and [`Plain::TYPE_ID`]s; [`Hash::lookup`] refuses other types.
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
/// the holder's [`MemberId`] and incarnation ([`Liveness::incarnation`]); a waiter that finds
/// the holder dead (even once a newcomer has its slot) takes the lock over and repairs whatever
/// the dead writer left half-done (see the crate documentation for the rule that makes every
/// half-done step repairable).
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
    /// What this handle stores in the lock word while it holds the lock (see [`H_LOCK`]).
    lock_word: u64,
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

mod read;
mod repair;
mod write;

use read::read_words;
pub use read::Iter;
use shmconfig::lockword::{self, lock_word_of};
pub use write::Writer;
use write::{write_words, Outcome};

impl<K: Plain, V: Plain, H: HashFn> Hash<K, V, H> {
    /// Words of a key (the geometry's `key_words`, known at compile time).
    const KW: usize = size_of::<K>().div_ceil(8);

    /// Words of one value copy (the geometry's `val_words`).
    const VW: usize = size_of::<V>().div_ceil(8);

    /// Words of a key slot (the geometry's `slot_words`), known at compile time so that a
    /// slot's address is a shift or two away from its index, not a multiplication.
    const SW: usize = (1 + Self::KW + 2 * Self::VW).next_multiple_of(2);

    /// Word offset of key slot `idx` (1..=entries): [`Geometry::slot`] with a constant stride.
    #[inline(always)]
    fn slot_at(&self, idx: u32) -> usize {
        debug_assert_eq!(Self::SW, self.g.slot_words);
        self.g.slot_off + idx as usize * Self::SW
    }

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
        let t = Self::handle(zones, mem, g, hasher);
        t.init_header(params.extendable);
        Ok(t)
    }

    /// A handle on a table whose zone and geometry are known.
    fn handle(zones: &impl Zones, mem: Mem, g: Geometry, hasher: H) -> Self {
        let liveness = zones.liveness();
        let me = zones.member();
        Self {
            mem,
            g,
            hasher,
            lock_word: lock_word_of(me, &*liveness),
            liveness,
            me,
            _kv: PhantomData,
        }
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
        m.w(H_KEY_TYPE).store(K::TYPE_ID, Relaxed);
        m.w(H_VAL_TYPE).store(V::TYPE_ID, Relaxed);
        for (at, tn) in [
            (H_KEY_NAME, short_type_name::<K>()),
            (H_VAL_NAME, short_type_name::<V>()),
        ] {
            let mut n = [0u8; TYPE_NAME_MAX];
            n[..tn.len()].copy_from_slice(tn.as_bytes());
            write_words(m, at, TYPE_NAME_MAX / 8, &n);
        }
        self.rebuild_free_lists(&vec![false; g.entries as usize + 1], &[]);
        // Publish: whoever sees the magic (acquire) sees everything above.
        m.w(H_MAGIC).store(MAGIC, Release);
    }

    /// Open the table `name` created (by any member) with the same `K`, `V` and hash function.
    ///
    /// Refused, with a message naming both functions, when the table was built with another
    /// hash function or seed ([`HashError::WrongHashFunction`]); refused when the key or value
    /// size differs ([`HashError::TypeMismatch`]), when the key or value type is another type
    /// ([`HashError::WrongType`], naming both: [`Plain::TYPE_ID`] differs), or when the zone
    /// holds something else.
    pub fn lookup(zones: &impl Zones, name: &str, hasher: H) -> Result<Self, HashError> {
        let zone = zones.lookup_kind(name, ZoneKind::Hash)?;
        let Header {
            mem,
            key_size: ks,
            value_size: vs,
            hash_fn: stored,
            key_type,
            value_type,
        } = open_header(name, zone)?;
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
        for (what, (stored_id, stored_name), given_id, given_name) in [
            ("keys", key_type, K::TYPE_ID, std::any::type_name::<K>()),
            ("values", value_type, V::TYPE_ID, std::any::type_name::<V>()),
        ] {
            if stored_id != given_id {
                return Err(HashError::WrongType {
                    name: name.into(),
                    what,
                    table: stored_name,
                    table_id: stored_id,
                    given: given_name.into(),
                    given_id,
                });
            }
        }
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
        Ok(Self::handle(zones, mem, g, hasher))
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

    /// The key stored at `position`, if that position holds a key now (as DPDK's
    /// `rte_hash_get_key_with_position`: the key the slot holds, confirmed by looking it up,
    /// since a freed slot keeps its last key until it is refilled).
    pub fn get_key_with_position(&self, position: u32) -> Option<K> {
        let idx = position.checked_add(1)?;
        if idx > self.g.entries {
            return None;
        }
        let (k, _, state) = self.read_slot(idx)?;
        (self.find(k.as_bytes(), state as u32, None) == Some(position)).then_some(k)
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

    /// Add `key` with `value`, or update the value if `key` is present (returning its existing
    /// position). Returns the key's position, or [`TableFull`].
    #[inline]
    pub fn add_with_hash(&self, key: &K, hash: u32, value: &V) -> Result<u32, TableFull> {
        // Start fetching the key's buckets and the slot the add will probably use before taking
        // the lock: the lock's atomic instruction waits for earlier stores, the fetches need not.
        self.prefetch_buckets(hash);
        let top = self.mem.w(H_FREE_TOP).load(Relaxed);
        if top != 0 && top <= u64::from(self.g.entries) {
            let e = self.mem.w(self.g.free_off + top as usize - 1).load(Relaxed);
            self.prefetch_slot(e as u32);
        }
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
    #[inline(always)]
    pub fn delete_with_hash(&self, key: &K, hash: u32) -> Option<u32> {
        self.prefetch_buckets(hash);
        let guard = self.lock();
        let r = self.delete_prefetched(key.as_bytes(), hash, None);
        drop(guard);
        match r {
            Outcome::Done(pos) => Some(pos),
            _ => None,
        }
    }

    /// Bring both buckets of `hash` towards the cache.
    #[inline(always)]
    fn prefetch_buckets(&self, hash: u32) {
        let (_, prim, sec) = self.g.split(hash);
        self.mem.prefetch(self.g.main(prim));
        self.mem.prefetch(self.g.main(sec));
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
        let w = self.mem.w(H_LOCK).load(Relaxed) as u32;
        (w != 0).then(|| MemberId((w - 1) as u16))
    }

    /// Test hook: the incarnation recorded in the lock word, if the lock is held (0 when the
    /// holder's liveness could not tell).
    #[doc(hidden)]
    pub fn debug_lock_incarnation(&self) -> Option<u32> {
        let w = self.mem.w(H_LOCK).load(Relaxed);
        (w as u32 != 0).then_some((w >> 32) as u32)
    }

    /// Test hook: the change counter (how many times readers were told a key moved).
    #[doc(hidden)]
    pub fn debug_change_count(&self) -> u64 {
        self.mem.w(H_CHNG).load(Relaxed)
    }
}

/// What a table's header records about its contents, from [`open_header`].
pub(crate) struct Header {
    pub mem: Mem,
    pub key_size: usize,
    pub value_size: usize,
    pub hash_fn: HashFnId,
    /// The key type's [`Plain::TYPE_ID`] and name.
    pub key_type: (u64, String),
    /// The value type's [`Plain::TYPE_ID`] and name.
    pub value_type: (u64, String),
}

/// The NUL-padded name of up to `N` bytes stored in the words at `at` (bytes that are not
/// UTF-8 shown as U+FFFD).
fn read_name<const N: usize>(mem: &Mem, at: usize) -> String {
    let mut b = [0u8; N];
    read_words(mem, at, &mut b);
    let end = b.iter().position(|&c| c == 0).unwrap_or(N);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Check a table's header (magic, layout version and fingerprint) and read what it records:
/// key and value sizes and types, and the hash function. Shared by [`Hash::lookup`] and
/// [`crate::inspect`].
pub(crate) fn open_header(name: &str, zone: Zone) -> Result<Header, HashError> {
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
    let seedw = mem.w(H_FN_SEED).load(Relaxed);
    let stored = HashFnId {
        name: read_name::<HASH_NAME_MAX>(&mem, H_FN_NAME),
        seed: seedw as u32,
        check: (seedw >> 32) as u32,
    };
    let type_at = |id: usize, at: usize| {
        (
            mem.w(id).load(Relaxed),
            read_name::<TYPE_NAME_MAX>(&mem, at),
        )
    };
    let key_type = type_at(H_KEY_TYPE, H_KEY_NAME);
    let value_type = type_at(H_VAL_TYPE, H_VAL_NAME);
    Ok(Header {
        mem,
        key_size: ks,
        value_size: vs,
        hash_fn: stored,
        key_type,
        value_type,
    })
}
