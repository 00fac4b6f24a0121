//! Lock-free rings of fixed-size elements in shared memory, found by name, as DPDK's `rte_ring`,
//! and safe against a member killed in the middle of an operation.
//!
//! A [`Ring<T>`] lives in one zone (`RG_<name>`) reserved through [`shmconfig::Zones`]; any
//! member of the group, or a guest, maps it at an address of its own: the ring holds positions
//! and counts, never pointers. The header records a magic, a layout version and fingerprint, and
//! the element's size, alignment and [`RingElement::TYPE_ID`]; [`Ring::lookup`] checks them all
//! and names the mismatch.
//!
//! # The protocol
//!
//! Each side (producers, consumers) has a *head* (where the next reservation starts) and a
//! *tail* (everything before it is published to the other side), both 32-bit free-running
//! positions masked only to index a slot, as in DPDK. The head is a 64-bit word:
//!
//! ```text
//! head = pos (32 bits) | member (16 bits) | n (16 bits)     -- n, member: the LAST reservation
//! ```
//!
//! Each side's head and tail share a cache line, as in DPDK (an MT operation writes both). A
//! member computes its room (free slots for a producer, entries for a consumer) from a copy
//! of the other side's tail cached on that line, and reads that tail itself, keeping it as the
//! new copy, only when the copy shows less than it asks (a consumer on a side biased to it
//! reads the producer tail every time; see "Biased sides"). The operation then reserves
//! `[pos, pos + n)` by moving the head with a CAS (a side held by a single-member handle is
//! not reserved at all: see "Single-member modes"). It copies the elements, then
//! publishes by storing the tail with release ordering; in [`SyncMode::Mt`] it first waits until
//! the tail reaches its own start, so reservations publish in order. [`SyncMode::Hts`] waits
//! *before* reserving until no operation of its side is in flight (head == tail), so one
//! operation at a time is in flight and none waits after reserving. [`SyncMode::Rts`] (relaxed
//! tail sync) never waits after reserving either: a member that finishes while an earlier
//! reservation is still in flight stores a *completion mark* (`start | member | n`, one u64 per
//! slot per side) and returns; whoever moves the tail to a marked start moves it on over the
//! marked reservation, and so on (the mark and the tail form a Dekker pair, each side storing
//! its word, then a sequentially consistent fence, then reading the other's; a mark is cleared
//! when taken). Its head runs at most `htd_max` (capacity / 8) positions ahead of its tail, as
//! in DPDK; a member that finds it further ahead waits. Every waiter spins, and yields the CPU
//! every few thousand spins.
//!
//! A reservation of the shared calls moves at most [`MAX_OP`] (65,531) elements (`n` is 16
//! bits wide and its top four values mark a held, biased, revoking or fresh side): longer
//! bursts are split into several reservations, longer bulks move nothing. The single-member
//! handles have no such limit.
//!
//! Copies move whole elements with 16-byte moves; on x86-64 CPUs with AVX2 (asked once, when
//! a ring's memory is first viewed), the single-member handles move runs of 128 bytes or more
//! 32 bytes at a time (inline assembly, so the rest of the code needs no AVX2). Shorter runs
//! stay on 16-byte moves (a bulk of 8 is bound by store-to-load forwarding, slower through
//! 32-byte moves), and so do the shared calls: their consumers' 32-byte loads of lines another
//! core just wrote made the cross-core rows of `cargo xtask bench ring` slower.
//!
//! Zero copy: the handles offer [`SingleProducer::reserve`] / [`Reserved::commit`] and
//! [`SingleConsumer::peek`] / [`Peeked::finish`] (DPDK's `*_zc_*` and peek calls); the shared
//! calls offer [`Ring::enqueue_bulk_in_place`] and [`Ring::dequeue_bulk_in_place`], which hand
//! a closure the claimed slots (a closure that panics abandons its claim, counted, never
//! delivered). [`Ring::snapshot`] reads a quiet ring's elements without taking them (audits).
//!
//! **In-place claims.** The closure of an in-place call makes no other call on the same side
//! of the same ring: finish the claim (return) first. A second in-place call there panics
//! when the side is biased to the thread (it would cover the same slots: for producers, two
//! `&mut` views of them); a call through the multi-member protocol that must publish after
//! the held claim would wait for it forever; and a copying call on a biased side would start
//! at the claim's slots (its elements then delivered twice or overwritten; the copying calls
//! do not check, as that would cost every call, about three instructions). The other side,
//! and other rings, are free to use from the closure.
//!
//! # Dead members
//!
//! With DPDK's algorithm, a producer killed after moving the head and before publishing stalls
//! every later producer forever (they wait for the tail to reach their start). Here:
//!
//! 1. **Every reservation is attributable.** The head word names the last reservation (member
//!    and length). Before its CAS, a multi-mode member writes the reservation the head word
//!    currently names (its predecessor) into a *record* array indexed by start position
//!    (`start | member | n`, one u64 per slot per side), unless the tail shows it published
//!    already (then nobody will ever look it up, and the store is saved). All contenders write
//!    the same value, so whichever wins the CAS, an unpublished predecessor's record was written
//!    before the head moved past it: for any unpublished position between tail and head, either
//!    the head word or a record names the reservation starting there. A record is trusted only
//!    if its position matches exactly.
//! 2. **Dead reservations are abandoned at the tail.** A waiter that has spun a while, and
//!    [`Ring::recover`] at any time, look at the reservation starting at the tail; if its member
//!    is not alive (per the [`shmconfig::Liveness`] handle the ring keeps), and the tail still
//!    equals that start (the owner is dead, so it never will publish), they move the tail over
//!    it with a CAS. Several helpers may race; the CAS picks one. Reservations are resolved one
//!    after the other, so a chain of dead members unwinds.
//! 3. **Abandoned producer ranges are never delivered.** Before moving the producer tail over a
//!    dead range, the helper enters it in a small table of abandoned ranges and bumps a counter
//!    on the producer tail's cache line. Consumers read that counter (on the line they read the
//!    tail from) whenever they read the tail and there is something to take, so the fast path
//!    costs one load of a line already in cache; when it is non-zero they claim spans that
//!    step over the abandoned ranges, copy out only published elements, and retire the ranges
//!    they passed. The shared calls' consumers keep a copy of the producer tail only when the
//!    counter was 0 after reading it, and take from the copy without reading either: a range
//!    is entered before the tail moves over it, starting at that tail, so every range entered
//!    later lies at or above the copy. Abandoned elements are counted ([`Ring::abandoned`],
//!    [`RingInfo`]).
//! 4. **Dead consumers' reservations** are abandoned the same way on the consumer side: those
//!    elements were handed to the dead member, so they are lost with it; they are counted, and
//!    the slots become free again.
//! 5. **RTS sides** have no waiter behind a dead member (later members leave completion marks
//!    and return), so the dead reservation is abandoned by the first member that finds the head
//!    `htd_max` ahead of the tail and waits, by [`Ring::recover`], or by the group's clean-up
//!    hook; whoever abandons it then takes the marks behind it. A member that died after
//!    leaving its mark had finished: its elements are delivered.
//!
//! Residual limits, stated plainly: a contender whose CAS *fails* may write its (correct but by
//! then old) predecessor record late. If it stalled for a whole lap of the ring between two
//! instructions, that late write can hide the record of a newer reservation. While that
//! reservation's successor is alive and waiting, the successor writes the record again (a waiter
//! rewrites its predecessor's record whenever it looks for dead members), so nothing is lost;
//! but if the owner and its successor both die, that side's tail stays where it is for good. It
//! is never moved wrongly: a record must match the position exactly to be used. If more than 16
//! dead ranges are waiting for consumers to pass them, further abandonment waits until
//! consumers make room. A dead consumer's span that stepped over abandoned producer ranges is
//! counted in full.
//!
//! # Single-member modes
//!
//! DPDK's single-producer/consumer modes are a promise the members make to each other; broken,
//! they deliver elements twice or mixed up. Here the fast path is a handle that *holds* the side:
//! [`Ring::single_producer`] and [`Ring::single_consumer`] mark the side's head word held by this
//! member (a CAS, once no operation of the side is in flight) and return a [`SingleProducer`] or
//! [`SingleConsumer`] whose calls take `&mut self` and use plain loads and stores only (no
//! head store either: the handle keeps its position and publishes with one tail store). A second
//! claim fails with [`RingError::Held`]; the shared [`Ring`] calls on a held side wait until the
//! handle is dropped. [`RingFlags::SP_ENQ`]/[`RingFlags::SC_DEQ`] record the intent (reported by
//! [`RingInfo`]); the shared calls on such a side run the multi-member protocol, which is correct
//! for any number of callers.
//!
//! A holder that dies is released by whoever finds it dead (next claimer, a waiter,
//! [`Ring::recover`], the group's clean-up hook): the head goes back to the holder's tail, which
//! names exactly what it published. Nothing is abandoned: a dying single producer's unpublished
//! copies are never seen, a dying single consumer's unfinished copies stay for the next one.
//!
//! # Biased sides
//!
//! Most MT sides are used by one thread at a time for long stretches (a ring created with DPDK's
//! default flags and fed by one producer, a mempool used by one lcore). Such a side pays a
//! locked read-modify-write per operation for nothing. Here an MT side is *biased* to the first
//! thread that uses it, and that thread's calls run the single-member path: plain loads and
//! stores, as a [`SingleProducer`]/[`SingleConsumer`] would, with no handle to hold. A call from
//! any other thread (or member) *revokes* the bias first, and the side runs the MT protocol from
//! there on. It is the biased locking of managed runtimes, made safe across processes by
//! `membarrier(2)`:
//!
//! * A new ring's MT sides start *fresh*. The first MT call that finds a side fresh replaces
//!   the head word with `tag | member | BIASED` (a CAS; a fresh side has nothing in flight).
//!   The tag names the thread (28 bits, handed out once per thread) and 4 bits above it the
//!   *bias generation*.
//! * The holder's call stores 1 in its generation's *in-flight* word, then (a compiler fence)
//!   looks at the head word again; if the bias still stands it works at the side's tail, copies,
//!   publishes with a release store of the tail, and stores 0. No read-modify-write.
//! * A revoker replaces the head word with `REVOKING` (a CAS), then runs
//!   `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes every CPU running a thread of a
//!   registered process execute a full fence; then it waits until the in-flight word is 0 (or
//!   the holder's member is dead), and sets the head to the tail. The in-flight word and the
//!   head word are a Dekker pair whose holder half is the compiler fence and whose revoker half
//!   is the membarrier: either the holder sees `REVOKING` before it starts, or the revoker sees
//!   its flag and waits. Only processes that registered for the expedited global membarrier
//!   take a bias; without it (an old kernel, a seccomp filter, Miri) every call runs MT.
//! * After a revocation the side is fresh again, up to 4 biases in all: each generation has its
//!   own in-flight word (so a holder that was revoked and still runs a stale check cannot clear
//!   the flag of the next holder; the fresh head word carries the generation the next bias
//!   takes, so that a thread that read the word before a revocation cannot take the bias under
//!   the old generation even when the side did not move), and a side that keeps changing hands
//!   stops paying a membarrier (a few microseconds) per change and stays MT. [`RingInfo`]
//!   reports the holder and the revocation counts.
//! * **A dead holder** loses nothing and wedges nothing: whoever finds its member dead (the
//!   next caller of another thread, a waiter, [`Ring::recover`], the group's clean-up hook)
//!   revokes without waiting, and the side goes on at its tail. As with a dead
//!   [`SingleProducer`], a producer's unpublished copies are never seen and a consumer's
//!   unfinished elements stay for the next consumer (its call never returned).
//! * **Guests** cannot take part in the host's membarrier, so an outsider (a guest, or a
//!   handle without a member slot) never takes a bias, and `ivshmem-meta` stops biasing
//!   ([`disable_bias_of`]) every ring zone it publishes to a VM, so no guest meets a biased side.
//!   An outsider that does meet one revokes it like a member; that is sound from the host's
//!   kernel, not from a VM's (whose membarrier does not reach the host's CPUs): a ring shared
//!   with a VM some other way than through `ivshmem-meta` must call [`Ring::disable_bias`].
//! * HTS and RTS sides are never biased; an HTS call on a biased MT side revokes first. A
//!   process forked without `exec` must not use its parent's ring handles (its threads would
//!   carry the parent's tags).
//!
//! `cargo xtask bench ring` shows both: the MP/MC rows are a ring whose sides are biased to the
//! thread using each, the "bias off" rows the MT protocol itself.
//!
//! # Untrusted peers
//!
//! Every member of the group, and every guest a ring is shared with, can write anything into
//! its zone. Whatever they write, a call of this process reads and writes only inside the
//! zone and does not panic: the header is checked once, by [`Ring::lookup`], and every count
//! a call computes from a word the other side writes is brought within bounds before it sizes
//! a reservation.
//!
//! * **Tails.** The room of a producer (from the consumer tail, or the producers' copy of it
//!   beside their head word, which is shared memory too) and the entries of a consumer (from
//!   the producer tail, or in the shared calls the consumers' copy of it beside theirs) are
//!   brought within `0..=capacity`, in the shared calls and in the single-member handles
//!   alike. A tail behind this side's position counts as nothing: the ring looks full to
//!   producers and empty to consumers. A value above the capacity, which no
//!   ring can have, counts as the capacity in the shared calls and for a producer handle: a
//!   consumer then takes up to a full ring of whatever the slots hold (any bytes are a valid
//!   [`RingElement`]), a producer writes over slots it takes for free. For a
//!   [`SingleConsumer`], and for a call on a side biased to its thread (see "Biased sides"),
//!   it counts as nothing, like a tail behind: their position is their side's own tail, never
//!   stale, so no legitimate value is out of range, and one compare does (an ordinary shared
//!   call's head may be stale, which can make a legitimate room look larger than the
//!   capacity: it must go on to its CAS, which fails, rather than report a full ring). Either
//!   way this is a `max` and a `min`, or one compare, on a value every call computes anyway
//!   (conditional moves, or a branch that always goes the same way where the compiler prefers
//!   one; no load of shared memory). It is not counted in [`RingInfo`]: that would cost a
//!   branch and a store on the fastest path. [`Ring::count`] was clamped to the capacity
//!   already, and [`RingInfo`] shows the raw tails.
//! * **Abandoned ranges.** An entry of the table that runs past the producer tail, or overlaps
//!   another, is cut there: consumers never take a span longer than what is published.
//! * **What is not prevented.** Damaged shared words damage the data: elements lost, delivered
//!   twice or made of garbage. And a peer can stall a side, as a stopped one does: a waiter
//!   (an MT member publishing after an earlier reservation, an HTS or RTS member waiting for
//!   its turn) waits until the tail it watches moves.
//!
//! # Checking the protocol
//!
//! * Model tests run the same code over loom's atomics (module `sync` switches them); the
//!   biased sides' models fail when either half of their fence is weakened:
//!   `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg hugeshare_loom" cargo test -p rte-ring --release --test loom`.
//! * Threaded tests shrink under Miri: `cargo +nightly miri test -p rte-ring --test threads`;
//!   the behaviour tests run under Miri too, but for the 4096-slot sweeps and the sweep of
//!   every copy length and offset (too slow there):
//!   `cargo +nightly miri test -p rte-ring --test behaviour -- --skip behaviours_ --skip long_bursts --skip every_length`;
//!   the tests of damaged shared words ("Untrusted peers") run there whole:
//!   `cargo +nightly miri test -p rte-ring --test untrusted`.
//! * `tests/processes.rs` runs producers and consumers as real processes over a file in
//!   `/dev/shm`, and kills producers with SIGKILL at random points (a lone producer on a side
//!   biased to it among them).
#![deny(unsafe_code)]

mod bias;
mod element;
mod error;
mod layout;
#[allow(unsafe_code)]
mod raw;
mod ring;
mod single;
mod sync;

pub use element::{type_id_of, RingElement};
pub use error::RingError;
pub use layout::{RING_NAME_MAX, RING_ZONE_ALIGN};
pub use ring::{
    disable_bias_of, Behavior, Outcome, RecoveryReport, Ring, RingFlags, RingInfo, SyncMode,
    MAX_OP, RING_COUNT_MAX,
};
pub use single::{Dequeue, Enqueue, SingleConsumer, SingleProducer};
#[cfg(not(hugeshare_loom))]
pub use single::{Peeked, Reserved};
