//! Shared pools of fixed-size objects with per-lcore caches, as DPDK's `rte_mempool`, where a
//! member that dies never makes an object be handed out twice: its caches come back to the
//! pool; in pools with [`MempoolFlags::TRACK`] the objects it held come back too, and those it
//! was moving when it died (see the limits under *Dead members*) come back through an
//! [`Mempool::audit`] with `repair`; in untracked pools both are lost.
//!
//! A [`Mempool`] lives in zones reserved through [`shmconfig::Zones`]: a header zone
//! `MP_<name>` (header, statistics, one cache per lcore), an object zone `MP_<name>_0`, and an
//! [`rte_ring::Ring`] of free object *handles* (`MP_<name>`, zone `RG_MP_<name>`). Nothing in
//! shared memory is a pointer: the free ring holds handles (an object's offset from the first
//! object, in units of the largest power of two dividing the stride), caches hold byte offsets,
//! transfer rings ([`Mempool::send`]) hold object indexes. This process sees an object as an
//! [`Obj`] (its address here, 8 bytes like DPDK's `void *`); [`Mempool::index_of`],
//! [`Mempool::obj`], [`Mempool::from_ptr`] and [`Mempool::obj_from_ptr`] convert.
//!
//! ```
//! use rte_mempool::{Mempool, MempoolParams, Obj};
//! use shmconfig::LocalZones;
//! let zones = LocalZones::new().with_lcore(Some(3));
//! let mp = Mempool::create(&zones, "mbufs", MempoolParams::new(1535, 2048).cache_size(64)).unwrap();
//! let mut local = mp.local(&zones); // through lcore 3's cache
//! let mut objs = [Obj::empty(); 32];
//! assert_eq!(local.get_bulk(&mut objs), 32);
//! assert_eq!(mp.avail_count(), 1535 - 32); // the cache's objects count as available
//! local.put_bulk(&objs);
//! assert!(mp.is_full());
//! ```
//!
//! # Caches
//!
//! Each lcore (`0..MAX_LCORES`) has a cache in the header zone when `cache_size > 0`. A thread
//! gets a [`LocalPool`] with [`Mempool::local`]: it uses the cache of the lcore the thread runs
//! as (`zones.current_lcore()`), which the group gives to one live member at a time; a thread
//! without an lcore, and a VM guest ([`shmconfig::MemberId::OUTSIDER`]), go straight to the
//! ring. Thresholds are DPDK's: at most [`CACHE_MAX_SIZE`] (512) objects (larger is refused,
//! as is a size whose 1.5× exceeds the count); a put flushes the whole cache to the ring when
//! its length would pass `1.5 × cache_size`; a get refills it with `cache_size + remaining`
//! objects in one bulk. Each cache records its owner (member and process id), so that a dead
//! owner's cache is flushed back to the ring by the clean-up. The owner keeps a private copy of
//! its cache's length (it is the only writer) and writes the shared one after every change, for
//! counts and for recovery; one [`LocalPool`] per cache lives in a process at a time (a second
//! one asked for the same lcore goes straight to the ring).
//!
//! # Dead members
//!
//! *One rule for every move*: an object leaves its place (ring, cache, caller) before it enters
//! the next. A member killed between two steps can therefore make objects disappear from every
//! place, but never appear in two: **an object is never handed out twice**.
//!
//! When a member dies, the one survivor that cleans up after it runs the clean-up hooks
//! registered in its process ([`shmconfig::hooks`]); this crate registers one when a process
//! first creates or looks up a pool. It calls [`Mempool::recover_dead_members`] on every pool of
//! the group, which anyone may also call at any time (and [`Mempool::lookup`] does), so a group
//! whose cleaner never linked this crate is repaired by the next member that opens the pool:
//!
//! * caches whose owner is not alive are locked (a compare-and-swap on the exact owner word read,
//!   so a new owner of the lcore wins any race), flushed to the ring and left ownerless;
//! * interrupted operations on the free ring are finished or abandoned ([`rte_ring::Ring::recover`]);
//! * in a pool created with [`MempoolFlags::TRACK`], objects whose recorded holder is not alive
//!   are returned to the ring.
//!
//! # Ownership of tracked objects
//!
//! With [`MempoolFlags::TRACK`] each object has an owner word: *free* (in the pool: the ring or a
//! cache), *held by* a member (and the process id of that incarnation of it), or *in transit*
//! (sent by a member). The rules:
//!
//! 1. A get records the getter as holder; a put marks the object free *before* returning it.
//! 2. An object handed to another member goes through a ring of indexes with
//!    [`Mempool::send`] (marked in transit, then enqueued) and [`Mempool::receive`] (dequeued,
//!    then adopted: the receiver becomes the holder). **Objects in transit belong to the ring**:
//!    they are never reclaimed, whoever sent them, since a live receiver may take them.
//! 3. **Only objects whose recorded holder is not alive are reclaimed**, and only with a
//!    compare-and-swap on the word as read, which names one incarnation of the member: a dead
//!    incarnation never comes back, so nothing a live member holds is ever taken.
//! 4. Objects passed between members in any other way (their index written in some memzone)
//!    stay recorded under the sender: if it dies they are reclaimed while the other member may
//!    use them. Use `send`/`receive` for tracked pools.
//!
//! After a SIGKILL in the middle of traffic, [`Mempool::audit`] (run while the pool is quiet)
//! accounts for every object: in the pool, in a ring, held by a live member, or an orphan with
//! its reason (a member killed between two steps of a get, put or transfer), which `repair`
//! puts back. A tracked get also checks the word it replaces is *free* and counts a violation
//! otherwise ([`MempoolStats::violations`]; never expected).
//!
//! Limits, stated plainly: objects a member held when it died are returned only in tracked
//! pools (untracked pools return its caches only). Objects a member was moving when it was
//! killed (in the middle of a get, a put, a cache flush or refill, a send or a receive, or of a
//! ring operation the ring then abandons) are orphans until an audit with `repair` (quiet pool)
//! returns them: in the SIGKILL scenario that is a few dozen objects per kill, since a member
//! spends much of its time inside ring operations. If a member slot is reused before any
//! recovery ran, objects the old incarnation held look held by a live member until the new one
//! dies too (leaked for a while, never handed out twice). If a recoverer dies in the middle of a
//! flush, the objects it was moving are orphans.
//!
//! # Shared memory written by others
//!
//! A peer process or a QEMU guest can write anything into a pool's zones. What this process
//! reads from them never makes it touch memory outside the pool, panic or loop:
//!
//! * [`Mempool::lookup`] checks every field of the header against what [`Mempool::create`]
//!   writes (count, sizes, stride, cache size, flags, name, where the objects start, the
//!   zones' lengths and alignment, the ring's capacity) and refuses a pool that differs with
//!   [`MempoolError::BadHeader`], naming the pool, the field and the value found.
//! * A handle read from the free ring, or an offset read from a per-lcore cache, becomes an
//!   [`Obj`] only if the object it names lies whole inside the pool's objects area (one
//!   compare per object, folded into the conversion). One that does not is dropped and counted
//!   in [`MempoolStats::violations`]; the get that met it takes nothing (returns 0 or `None`),
//!   and the other objects of the same ring operation go back to the ring (or stay in the
//!   cache). A value inside the area but not at an object's start is let through: it is still
//!   pool memory (a corrupt pool, not a memory-safety hole), and [`Mempool::index_of`] refuses
//!   it.
//! * [`Mempool::receive`] drops an index that names no object (counted the same way) and
//!   returns only the objects it received.
//! * [`Mempool::local`] waits for a live recoverer that holds a cache's lock, but gives the
//!   cache up (the [`LocalPool`] goes straight to the ring) if the lock outlasts any flush.
//! * A value that names a real object twice (a peer enqueueing a handle it does not own) cannot
//!   be told from a sound one: the pool then hands that object out twice, as a peer that
//!   writes into objects it does not hold corrupts them.
//!
//! # Checking it
//!
//! * `tests/behaviour.rs`: DPDK's `test_mempool.c` behaviours that apply; recovery of dead
//!   members over `LocalZones`; the audit.
//! * `tests/hostile.rs`: bad handles in the free ring and in caches, corrupt headers and zones,
//!   gets larger than one ring operation.
//! * `tests/threads.rs`: threaded stress (caches, ring, transfers, a member declared dead).
//! * `tests/loom.rs`: a loom model of a dead owner's cache flush racing a new owner's get:
//!   `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg hugeshare_loom" cargo test -p rte-mempool --release --test loom`.
//! * `tests/scenarios/3*-mempool-*.toml`: real processes, one SIGKILLed at random points, then
//!   an audit (`cargo xtask test-mp --filter mempool`).
#![deny(unsafe_code)]
#![cfg_attr(hugeshare_loom, allow(dead_code))]

mod cache;
mod layout;
mod obj;
mod sync;

#[cfg(not(hugeshare_loom))]
mod error;
#[cfg(not(hugeshare_loom))]
mod pool;
#[cfg(not(hugeshare_loom))]
#[allow(unsafe_code)]
mod raw;

#[cfg(not(hugeshare_loom))]
pub use error::MempoolError;
#[cfg(not(hugeshare_loom))]
pub use pool::{
    AuditReport, LocalPool, Mempool, MempoolFlags, MempoolParams, MempoolStats, Orphan,
    OrphanReason, RecoveryReport, CACHE_MAX_SIZE, MEMPOOL_COUNT_MAX, MEMPOOL_NAME_MAX,
};

/// The cache protocol over loom's atomics, for the model test (`cfg(hugeshare_loom)` only).
#[cfg(hugeshare_loom)]
pub mod model;
pub use obj::Obj;
