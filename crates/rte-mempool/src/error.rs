//! [`MempoolError`]: why creating or finding a pool failed.

use shmconfig::ZoneError;

/// Why a pool could not be created or found. The hot paths (get, put) never return it: they
/// return counts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// The name is empty, too long or contains NUL.
    #[error("mempool name {name:?} is invalid: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The object count is zero or above [`crate::MEMPOOL_COUNT_MAX`].
    #[error("mempool {name:?}: object count {n} is invalid; use 1..={max}", max = crate::MEMPOOL_COUNT_MAX)]
    BadCount {
        /// The name given.
        name: String,
        /// The count given.
        n: u32,
    },
    /// The cache size is above [`crate::CACHE_MAX_SIZE`], or 1.5 times it exceeds the count.
    #[error("mempool {name:?}: cache size {cache_size} is invalid for {n} objects; use 0..={max} with 1.5 × cache size ≤ object count", max = crate::CACHE_MAX_SIZE)]
    BadCacheSize {
        /// The name given.
        name: String,
        /// The cache size given.
        cache_size: u32,
        /// The object count given.
        n: u32,
    },
    /// Unknown flag bits.
    #[error("mempool {name:?}: flags {bits:#x} include bits outside the valid flags {valid:#x}")]
    BadFlags {
        /// The name given.
        name: String,
        /// The bits given.
        bits: u32,
        /// The valid bits.
        valid: u32,
    },
    /// The objects would not fit in one zone.
    #[error("mempool {name:?}: {n} objects of {stride} bytes do not fit in one zone; use fewer or smaller objects")]
    TooLarge {
        /// The name given.
        name: String,
        /// The object count.
        n: u32,
        /// Bytes per object, header and padding included.
        stride: usize,
    },
    /// A pool (or one of its zones) of that name exists already.
    #[error("a mempool named {0:?} exists already; pick another name or look the existing one up")]
    Exists(String),
    /// No pool has that name.
    #[error("no mempool named {0:?} (it was never created, or was freed)")]
    NotFound(String),
    /// The pool's creator has not finished populating it (or died while doing so).
    #[error("mempool {0:?} exists but its creator has not finished populating it; retry, or free it if its creator died")]
    NotReady(String),
    /// A zone operation failed.
    #[error("mempool {name:?}: zone {zone:?}: {source}")]
    Zone {
        /// The pool's name.
        name: String,
        /// The zone concerned.
        zone: String,
        /// What the zones said.
        #[source]
        source: ZoneError,
    },
    /// The free-object ring could not be created or found.
    #[error("mempool {name:?}: its ring of free objects: {source}")]
    Ring {
        /// The pool's name.
        name: String,
        /// What the ring said.
        #[source]
        source: rte_ring::RingError,
    },
    /// A pool's header (or one of its zones) is not what `create` writes: it was written by
    /// another build or layout version, overwritten (by a peer or a guest: the header is shared
    /// memory), or the zone is not a mempool's. Nothing of the pool was used.
    #[error("mempool {name:?}: zone {zone:?}: {field} is {found}, expected {expected}; the pool was created by another build or layout version, or its header was overwritten: use one build everywhere, or free the pool's zones (MP_<name>, MP_<name>_0, RG_MP_<name>) and create it again")]
    BadHeader {
        /// The pool's name.
        name: String,
        /// The zone.
        zone: String,
        /// The field that differs.
        field: &'static str,
        /// What was found.
        found: String,
        /// What was expected.
        expected: String,
    },
}
