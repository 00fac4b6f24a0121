//! Errors of table creation and lookup, and the "table full" result of an add.

use shmconfig::ZoneError;

use crate::hashfn::HashFnId;

/// Why a table could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The requested number of entries is out of range.
    #[error("hash table {name:?}: {entries} entries is invalid: {why}")]
    BadEntries {
        /// Table name.
        name: String,
        /// The number asked for.
        entries: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The key type has size zero.
    #[error("hash table {name:?}: the key type has size 0; use a key of at least one byte")]
    ZeroKeySize {
        /// Table name.
        name: String,
    },
    /// The table would not fit in a zone (more than the address space).
    #[error("hash table {name:?}: {entries} entries of {slot_bytes} bytes do not fit in memory")]
    TooLarge {
        /// Table name.
        name: String,
        /// Entries asked for.
        entries: u32,
        /// Bytes per key slot.
        slot_bytes: usize,
    },
    /// The hash function's name is empty or longer than [`crate::HASH_NAME_MAX`] bytes.
    #[error("hash function name {0:?} must be 1 to 32 bytes long")]
    BadHashName(&'static str),
    /// Reserving or finding the table's zone failed (a duplicate name is reported as
    /// [`ZoneError::Exists`], an unknown one as [`ZoneError::NotFound`]).
    #[error("hash table zone: {0}")]
    Zone(#[from] ZoneError),
    /// The zone does not hold a hash table of this layout version.
    #[error("zone {name:?} does not hold a hash table this build understands: {why}")]
    BadHeader {
        /// Table name.
        name: String,
        /// What did not match (magic, version or layout fingerprint, with both values).
        why: String,
    },
    /// The table was created but its creator has not finished writing its header.
    #[error("hash table {name:?} is still being created by another member; retry shortly")]
    NotReady {
        /// Table name.
        name: String,
    },
    /// The key or value type has another size than the table's.
    #[error("hash table {name:?} holds {what} of {stored} bytes, but this program uses {given} bytes; open it with the same key and value types as its creator")]
    TypeMismatch {
        /// Table name.
        name: String,
        /// `"keys"` or `"values"`.
        what: &'static str,
        /// Size recorded in the table.
        stored: usize,
        /// Size of the caller's type.
        given: usize,
    },
    /// The key or value type is another type than the table's, of the same size (their
    /// [`crate::Plain::TYPE_ID`]s differ).
    #[error("hash table {name:?} holds {what} of type {table} (type id {table_id:#018x}), but this program uses {given} (type id {given_id:#018x}); open it with the same key and value types as its creator")]
    WrongType {
        /// Table name.
        name: String,
        /// `"keys"` or `"values"`.
        what: &'static str,
        /// The name of the type recorded in the table (as its creator's build spelled it, at
        /// most 32 bytes).
        table: String,
        /// The identifier recorded in the table.
        table_id: u64,
        /// The name of the caller's type.
        given: String,
        /// The caller's type's identifier.
        given_id: u64,
    },
    /// The table was built with another hash function (or seed) than the one given.
    #[error("hash table {name:?} was built with hash function {table}, but lookup was given {given}; open it with the same function and seed, or its keys will not be found")]
    WrongHashFunction {
        /// Table name.
        name: String,
        /// The function recorded in the table.
        table: HashFnId,
        /// The function the caller gave.
        given: HashFnId,
    },
    /// The table's header holds values that cannot be right.
    #[error("hash table {name:?} is corrupt: {why}")]
    Corrupt {
        /// Table name.
        name: String,
        /// What is inconsistent.
        why: String,
    },
}

/// The result of an add when no entry is free: every key slot is used, or the key's two
/// buckets (and its extendable chain, if enabled) are full and no cuckoo displacement frees one.
///
/// Delete keys, or create the table with more entries or with
/// [`crate::Params::extendable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hash table is full: no free key slot or bucket entry for this key; delete keys, or create the table with more entries or with extendable buckets")]
pub struct TableFull;
