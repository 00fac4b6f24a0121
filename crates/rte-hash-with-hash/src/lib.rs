//! A cuckoo hash table in shared memory, used with precomputed hashes: DPDK's `rte_hash` and its
//! `*_with_hash` calls, made safe to share between processes built differently.
//!
//! * [`Hash<K, V, H>`](struct@Hash): create it in a [`shmconfig::Zones`] by name, open it by
//!   name from any member with [`Hash::lookup`], add, look up (single and bulk) and delete with
//!   precomputed hashes, iterate, count, reset.
//! * [`HashFn`]: the hash function is a type parameter, never a code pointer in shared memory.
//!   The table records the function's [`HashFnId`] (name, seed, and a check value from hashing
//!   fixed test vectors) and refuses to be opened with another one. [`Crc32c`] (SSE4.2 `crc32`
//!   where the CPU has it, a table otherwise, same values) and [`Murmur3`] ship with the crate.
//!
//! # Concurrency and the write protocol
//!
//! Readers take no lock. A lookup first searches the key's primary bucket alone (where most
//! keys are): a hit there is final, as every hit is (the key slot's state word vouches for
//! it, see below). Otherwise it reads a change counter, searches the primary bucket, the
//! secondary bucket and the secondary's extendable chain, and, if it missed, reads the counter
//! again and retries if it moved. A bulk lookup prefetches both buckets of all its keys,
//! matches signatures and prefetches each key's first candidate slot, then compares keys,
//! under one counter check. Every word of the table is read and written through atomics.
//!
//! Writers hold a lock word in shared memory recording the holder's `MemberId` and incarnation
//! ([`shmconfig::Liveness::incarnation`]: which process occupies that member slot; procctl's
//! slot generation): each `add_with_hash`/`delete_with_hash` takes it for one operation,
//! [`Hash::writer`] for a batch. A waiter that finds the holder dead (per
//! [`shmconfig::Liveness`]: its member is not alive, or its slot now holds another incarnation,
//! a newcomer the group gave the dead holder's cleaned-up slot) takes the lock over and
//! **repairs** the table before its own operation. The write protocol keeps one rule that makes
//! every state a dying writer can leave repairable and invisible to readers:
//!
//! > **A key is never absent from the buckets while it is in the table, and a key slot is only
//! > reachable from a bucket once it is completely written.**
//!
//! * *Add* fills a free key slot completely (state `FILLING`, then key and value, then `LIVE`
//!   with release) before storing its index in a bucket entry (release). A writer dying before
//!   the store leaves a filled slot no bucket references: repair frees it.
//! * *Cuckoo displacement* moves keys last first, each as **copy, then bump the change counter,
//!   then overwrite the old entry**: a key in mid-move is in two places, never in none. A writer
//!   dying mid-path leaves duplicates: repair keeps one copy of each key (bumping the counter
//!   before it clears the others).
//! * *Delete* clears the bucket entry, then pushes the slot on the free stack without writing
//!   the slot (as DPDK's lock-free mode, which only clears the entry: the slot's lines stay
//!   clean). A freed slot keeps its last key and state word until an add refills it; the
//!   refill's new generation is what a reader still holding the old index notices. Dying in
//!   between leaves a slot that is neither referenced nor on the free stack: repair frees it.
//!   With extendable buckets, the chain's last key is then moved into the hole (copy, bump,
//!   clear) and an emptied last bucket is unlinked.
//! * *Update* (re-adding a present key) writes the spare copy of the value and flips to it with
//!   one store of the slot's state word, so a value is never seen half-written. Dying before the
//!   flip leaves the old value.
//! * The free stacks and the count are the writer's private bookkeeping; repair rebuilds them
//!   from the buckets.
//!
//! Readers check each key slot's state word before and after reading it: a slot that is being
//! refilled or updated while read is detected (new generation) and read again, so a reader
//! never matches a half-written key or returns a torn value. The generation counter has 29 bits:
//! a reader stalled for 2^29 changes of one slot could be fooled, which is not a practical risk.
//!
//! With a [`shmconfig::Liveness`] that cannot tell incarnations apart (its `incarnation` is
//! `None`: [`shmconfig::LocalZones`], custom ones), a member slot reused by a new process before
//! anyone took over a dead holder's lock looks like the holder, alive: writers then wait until
//! that process leaves. procctl's liveness tells them apart.
//!
//! Keys and values are [`Plain`] types; the table records their sizes and [`Plain::TYPE_ID`]s,
//! and [`Hash::lookup`] refuses other types, naming both ([`HashError::WrongType`]).
//!
//! ```
//! use rte_hash_with_hash::{Crc32c, Hash, Murmur3, Params, HashError};
//! use shmconfig::LocalZones;
//!
//! let zones = LocalZones::new();
//! let t: Hash<[u8; 16], u64, Crc32c> =
//!     Hash::create(&zones, "sessions", Params::new(4096), Crc32c::new(7)).unwrap();
//! let key = *b"0123456789abcdef";
//! let h = t.hash(&key);
//! t.add_with_hash(&key, h, &99).unwrap();
//!
//! // Opening it with another function (or seed) is refused, naming both.
//! let err = Hash::<[u8; 16], u64, Murmur3>::lookup(&zones, "sessions", Murmur3::new(7))
//!     .unwrap_err();
//! assert!(matches!(err, HashError::WrongHashFunction { .. }));
//! assert!(err.to_string().contains("crc32c") && err.to_string().contains("murmur3-32"));
//! ```
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

mod error;
mod hashfn;
mod inspect;
mod layout;
mod plain;
mod sync;
mod table;

pub use error::{HashError, TableFull};
pub use hashfn::{Crc32c, HashFn, HashFnId, Murmur3, CHECK_VECTORS, HASH_NAME_MAX};
pub use inspect::{inspect, HashInfo};
pub use layout::{BUCKET_ENTRIES, ENTRIES_MAX};
pub use plain::{type_id_of, Plain};
#[doc(hidden)]
pub use table::StopAt;
pub use table::{Hash, Iter, Params, Writer, LOOKUP_BULK_MAX};
