//! [`SingleProducer`] and [`SingleConsumer`]: one side of a ring held by one handle, which is
//! what makes DPDK's single-producer/consumer fast path sound in safe code.
//!
//! Holding a side ([`Ring::single_producer`], [`Ring::single_consumer`]) marks its head word
//! `HELD` by this member, with a CAS taken only when no operation of the side is in flight. From
//! then on the holder alone moves the side: it keeps its position in the handle, writes or reads
//! the slots and publishes with one release store of the side's tail — no read-modify-write, no
//! head store. The shared [`Ring`] calls of that side see the mark and wait; a second claim fails
//! with [`RingError::Held`](crate::RingError::Held). The handle's methods take `&mut self`, so
//! within a process the borrow checker keeps it to one thread at a time; across processes the
//! mark does.
//!
//! A holder that dies leaves a tail that names exactly what it published. Whoever finds the
//! holder dead (the next claimer, a waiter, [`Ring::recover`]) sets the head back to that tail:
//! a producer's unpublished copies are never seen, a consumer's unfinished copies stay in the
//! ring for the next consumer. Nothing is abandoned and nothing is delivered twice (the dead
//! consumer's call never returned).

use std::fmt;

use crate::element::RingElement;
use crate::raw::{Claim, View, WIDE_HELD};
use crate::ring::{clamp_room, own_room, Outcome, Ring, Which};
use crate::sync::Ordering::{Acquire, Release};

/// The producer side of a ring, held by this handle alone (see [`Ring::single_producer`]).
/// Dropping it gives the side back.
pub struct SingleProducer<T: RingElement> {
    /// The ring's pointers, copied here so the hot path reads nothing else of the handle.
    view: View<T>,
    capacity: u32,
    /// Where the next element goes (this side's tail, kept here: only the holder moves it).
    pos: u32,
    /// The consumer tail as last read (or the position that gives the room it was clamped to,
    /// see [`SingleProducer::room`]): room is computed from it until it looks too small.
    cons_tail: u32,
    /// Keeps the zone behind `view` mapped. Boxed: the cold paths borrow it, and a borrow of the
    /// heap does not make the handle's own fields look shared to the optimiser.
    ring: Box<Ring<T>>,
}

/// The consumer side of a ring, held by this handle alone (see [`Ring::single_consumer`]).
/// Dropping it gives the side back.
pub struct SingleConsumer<T: RingElement> {
    /// The ring's pointers (see [`SingleProducer`]).
    view: View<T>,
    /// The next element to take (this side's tail, kept here: only the holder moves it).
    pos: u32,
    /// The ring's capacity: what is available is never more (whatever a peer wrote).
    capacity: u32,
    /// Keeps the zone behind `view` mapped (see [`SingleProducer`]).
    ring: Box<Ring<T>>,
}

impl<T: RingElement> fmt::Debug for SingleProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleProducer")
            .field("ring", &self.ring.name())
            .field("pos", &self.pos)
            .finish()
    }
}

impl<T: RingElement> fmt::Debug for SingleConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleConsumer")
            .field("ring", &self.ring.name())
            .field("pos", &self.pos)
            .finish()
    }
}

impl<T: RingElement> SingleProducer<T> {
    pub(crate) fn new(ring: Ring<T>, pos: u32) -> Self {
        let t = ring.mem.shared().cons.tail.load(Acquire);
        let capacity = ring.capacity;
        let (_, cons_tail) = Self::room_from(capacity, pos, t);
        Self {
            view: ring.mem.view(),
            capacity,
            pos,
            cons_tail,
            ring: Box::new(ring),
        }
    }

    /// The room at position `pos` given consumer tail `t`, clamped to `0..=capacity`
    /// ([`clamp_room`]), and the copy of the tail to keep: `t` itself, unless a peer wrote a
    /// tail no ring can have; then the position that gives the clamped room. From a copy kept
    /// this way the room stays within `0..=capacity` as the handle moves on (by at most the
    /// room each time), so the fast path, which computes from the copy, needs no clamp.
    #[inline(always)]
    fn room_from(capacity: u32, pos: u32, t: u32) -> (u32, u32) {
        let room = clamp_room(capacity.wrapping_add(t).wrapping_sub(pos), capacity);
        (room, pos.wrapping_add(room).wrapping_sub(capacity))
    }

    /// The ring this handle produces into.
    pub fn ring(&self) -> &Ring<T> {
        &self.ring
    }

    /// Enqueue one element; gives it back if the ring is full.
    #[inline]
    pub fn enqueue(&mut self, v: T) -> Result<(), T> {
        if self.enq(std::slice::from_ref(&v), true).n == 1 {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Enqueue all of `items` or none; returns `items.len()` or 0.
    #[inline]
    pub fn enqueue_bulk(&mut self, items: &[T]) -> usize {
        self.enq(items, true).n
    }

    /// Enqueue as many of `items` as fit; returns how many.
    #[inline]
    pub fn enqueue_burst(&mut self, items: &[T]) -> usize {
        self.enq(items, false).n
    }

    /// Bulk enqueue, reporting the free space left.
    #[inline]
    pub fn enqueue_bulk_free(&mut self, items: &[T]) -> Outcome {
        self.enq(items, true)
    }

    /// Burst enqueue, reporting the free space left.
    #[inline]
    pub fn enqueue_burst_free(&mut self, items: &[T]) -> Outcome {
        self.enq(items, false)
    }

    #[inline(always)]
    fn enq(&mut self, items: &[T], fixed: bool) -> Outcome {
        let v = self.view;
        let want = items.len().min(u32::MAX as usize) as u32;
        let room = self.room(v, want);
        let n = Ring::<T>::decide(want, room, fixed);
        if n == 0 {
            return Outcome { n: 0, left: room };
        }
        let claim = Claim::held(self.pos, n);
        v.write::<WIDE_HELD>(&claim, &items[..n as usize]);
        self.publish(v, n);
        Outcome {
            n: n as usize,
            left: room - n,
        }
    }
}

#[cfg(not(hugeshare_loom))]
impl<T: RingElement> SingleProducer<T> {
    /// Zero-copy enqueue (DPDK's `rte_ring_enqueue_zc_*_start`): reserve `n` free slots (all
    /// or nothing with [`Behavior::Fixed`](crate::Behavior::Fixed), as many as are free with
    /// `Variable`) and write the elements in place through the returned [`Reserved`]; nothing
    /// is visible to consumers until [`Reserved::commit`].
    ///
    /// ```
    /// use rte_ring::{Behavior, Ring, RingFlags};
    /// use shmconfig::LocalZones;
    /// let zones = LocalZones::new();
    /// let r = Ring::<u64>::create(&zones, "zc", 8, RingFlags::empty()).unwrap();
    /// let mut tx = r.single_producer().unwrap();
    /// let mut slots = tx.reserve(3, Behavior::Fixed).unwrap();
    /// let (a, b) = slots.slices();
    /// for (i, s) in a.iter_mut().chain(b.iter_mut()).enumerate() {
    ///     *s = 10 + i as u64;
    /// }
    /// slots.commit(3);
    /// let mut rx = r.single_consumer().unwrap();
    /// let peek = rx.peek(8, Behavior::Variable).unwrap();
    /// assert_eq!(peek.slices().0, &[10, 11, 12]);
    /// peek.finish(2); // take two, leave the third in the ring
    /// assert_eq!(rx.dequeue(), Some(12));
    /// ```
    pub fn reserve(&mut self, n: usize, how: crate::Behavior) -> Option<Reserved<'_, T>> {
        let want = n.min(u32::MAX as usize) as u32;
        let room = self.room(self.view, want);
        let n = Ring::<T>::decide(want, room, how == crate::Behavior::Fixed);
        (n != 0).then_some(Reserved {
            claim: Claim::held(self.pos, n),
            owner: self,
        })
    }
}

/// Free slots reserved by [`SingleProducer::reserve`], written in place. Dropping it without
/// [`Reserved::commit`] publishes nothing.
#[cfg(not(hugeshare_loom))]
#[derive(Debug)]
pub struct Reserved<'a, T: RingElement> {
    claim: Claim,
    owner: &'a mut SingleProducer<T>,
}

#[cfg(not(hugeshare_loom))]
impl<T: RingElement> Reserved<'_, T> {
    /// How many slots are reserved.
    pub fn len(&self) -> usize {
        self.claim.n as usize
    }

    /// Whether no slot is reserved (never true for a value [`SingleProducer::reserve`] returned).
    pub fn is_empty(&self) -> bool {
        self.claim.n == 0
    }

    /// The reserved slots, in ring order: the run up to the end of the slot array, then the run
    /// that wraps to its start (often empty). Their contents are stale until written.
    pub fn slices(&mut self) -> (&mut [T], &mut [T]) {
        self.owner.view.slots_mut(&self.claim)
    }

    /// Publish the first `k` reserved slots (`k` at most [`Reserved::len`]; the rest are given
    /// back unpublished).
    pub fn commit(self, k: usize) {
        assert!(
            k <= self.claim.n as usize,
            "commit of {k} > {} reserved",
            self.claim.n
        );
        let p = self.owner;
        p.publish(p.view, k as u32);
    }
}

impl<T: RingElement> SingleProducer<T> {
    /// Free slots, from the cached consumer tail while it shows at least `want`, else from the
    /// consumer tail itself (which then becomes the cached one, as [`SingleProducer::room_from`]
    /// keeps it: the room is within `0..=capacity` either way).
    #[inline(always)]
    fn room(&mut self, v: View<T>, want: u32) -> u32 {
        let mut room = self
            .capacity
            .wrapping_add(self.cons_tail)
            .wrapping_sub(self.pos);
        if room < want {
            let t = v.shared().cons.tail.load(Acquire);
            (room, self.cons_tail) = Self::room_from(self.capacity, self.pos, t);
        }
        room
    }

    /// Publish the next `n` slots (written already) to the consumers.
    #[inline(always)]
    fn publish(&mut self, v: View<T>, n: u32) {
        self.pos = self.pos.wrapping_add(n);
        v.shared().prod.tail.store(self.pos, Release);
    }
}

impl<T: RingElement> Drop for SingleProducer<T> {
    fn drop(&mut self) {
        self.ring.unhold(Which::Prod, self.pos);
    }
}

impl<T: RingElement> SingleConsumer<T> {
    pub(crate) fn new(ring: Ring<T>, pos: u32) -> Self {
        Self {
            view: ring.mem.view(),
            pos,
            capacity: ring.capacity,
            ring: Box::new(ring),
        }
    }

    /// The ring this handle consumes from.
    pub fn ring(&self) -> &Ring<T> {
        &self.ring
    }

    /// Dequeue one element, if there is one.
    #[inline]
    pub fn dequeue(&mut self) -> Option<T> {
        let view = self.view;
        let sh = view.shared();
        let t = sh.prod.tail.load(Acquire);
        // Nothing, or a tail behind this position or more than the capacity ahead of it (which
        // a peer wrote): nothing to take, as `own_room` makes it in `deq`, here in one compare
        // (`own_room` itself cost 0.2 cycle on the SP/SC single row).
        if t.wrapping_sub(self.pos).wrapping_sub(1) >= self.capacity {
            return None;
        }
        if sh.prod.holes.load(Acquire) != 0 {
            let mut v = T::new_zeroed();
            let (o, pos) = deq_holes(&self.ring, self.pos, std::slice::from_mut(&mut v), true, t);
            self.pos = pos;
            return (o.n == 1).then_some(v);
        }
        let claim = Claim::held(self.pos, 1);
        let v = view.read_one(&claim);
        self.release(view, 1);
        Some(v)
    }

    /// Fill all of `out` or nothing; returns `out.len()` or 0.
    #[inline]
    pub fn dequeue_bulk(&mut self, out: &mut [T]) -> usize {
        self.deq(out, true).n
    }

    /// Dequeue up to `out.len()` elements; returns how many.
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut [T]) -> usize {
        self.deq(out, false).n
    }

    /// Bulk dequeue, reporting the entries left.
    #[inline]
    pub fn dequeue_bulk_avail(&mut self, out: &mut [T]) -> Outcome {
        self.deq(out, true)
    }

    /// Burst dequeue, reporting the entries left.
    #[inline]
    pub fn dequeue_burst_avail(&mut self, out: &mut [T]) -> Outcome {
        self.deq(out, false)
    }

    #[inline(always)]
    fn deq(&mut self, out: &mut [T], fixed: bool) -> Outcome {
        let view = self.view;
        let sh = view.shared();
        let t = sh.prod.tail.load(Acquire);
        let avail = own_room(t.wrapping_sub(self.pos), self.capacity);
        // (The holes word tested first: the usual case pays one branch.)
        if sh.prod.holes.load(Acquire) != 0 && avail != 0 {
            let (o, pos) = deq_holes(&self.ring, self.pos, out, fixed, t);
            self.pos = pos;
            return o;
        }
        let want = out.len().min(u32::MAX as usize) as u32;
        let n = Ring::<T>::decide(want, avail, fixed);
        if n == 0 {
            return Outcome { n: 0, left: avail };
        }
        let claim = Claim::held(self.pos, n);
        view.read::<WIDE_HELD>(&claim, 0, &mut out[..n as usize]);
        self.release(view, n);
        Outcome {
            n: n as usize,
            left: avail - n,
        }
    }
}

#[cfg(not(hugeshare_loom))]
impl<T: RingElement> SingleConsumer<T> {
    /// Peek (DPDK's `rte_ring_dequeue_*_start` and zero-copy dequeue): look at up to `n`
    /// published elements in place (all `n` or nothing with
    /// [`Behavior::Fixed`](crate::Behavior::Fixed)); they stay in the ring until
    /// [`Peeked::finish`] takes some. `None` when there is nothing to show, or when producers
    /// left abandoned ranges ahead (use [`SingleConsumer::dequeue_burst`], which steps over
    /// them).
    pub fn peek(&mut self, n: usize, how: crate::Behavior) -> Option<Peeked<'_, T>> {
        let sh = self.view.shared();
        let t = sh.prod.tail.load(Acquire);
        let avail = own_room(t.wrapping_sub(self.pos), self.capacity);
        if sh.prod.holes.load(Acquire) != 0 && avail != 0 {
            return None;
        }
        let want = n.min(u32::MAX as usize) as u32;
        let n = Ring::<T>::decide(want, avail, how == crate::Behavior::Fixed);
        (n != 0).then_some(Peeked {
            claim: Claim::held(self.pos, n),
            owner: self,
        })
    }
}

/// Published elements shown in place by [`SingleConsumer::peek`]. Dropping it without
/// [`Peeked::finish`] takes nothing.
#[cfg(not(hugeshare_loom))]
#[derive(Debug)]
pub struct Peeked<'a, T: RingElement> {
    claim: Claim,
    owner: &'a mut SingleConsumer<T>,
}

#[cfg(not(hugeshare_loom))]
impl<T: RingElement> Peeked<'_, T> {
    /// How many elements are shown.
    pub fn len(&self) -> usize {
        self.claim.n as usize
    }

    /// Whether none is shown (never true for a value [`SingleConsumer::peek`] returned).
    pub fn is_empty(&self) -> bool {
        self.claim.n == 0
    }

    /// The elements, in ring order: the run up to the end of the slot array, then the run that
    /// wraps to its start (often empty).
    pub fn slices(&self) -> (&[T], &[T]) {
        self.owner.view.slots(&self.claim)
    }

    /// Take the first `k` elements shown (at most [`Peeked::len`]); the rest stay in the ring.
    pub fn finish(self, k: usize) {
        assert!(
            k <= self.claim.n as usize,
            "finish of {k} > {} shown",
            self.claim.n
        );
        let c = self.owner;
        c.release(c.view, k as u32);
    }
}

impl<T: RingElement> SingleConsumer<T> {
    /// Give the next `n` slots (read already) back to the producers.
    #[inline(always)]
    fn release(&mut self, v: View<T>, n: u32) {
        self.pos = self.pos.wrapping_add(n);
        v.shared().cons.tail.store(self.pos, Release);
    }
}

/// The dequeue of a consumer holder at `pos` when producers left abandoned ranges: step over
/// them and copy out the rest. Returns the outcome and the holder's new position. A free
/// function over the boxed ring, so the hot path's handle is never borrowed by a call.
#[cold]
#[inline(never)]
fn deq_holes<T: RingElement>(
    r: &Ring<T>,
    pos: u32,
    out: &mut [T],
    fixed: bool,
    tail: u32,
) -> (Outcome, u32) {
    let avail = r.room(Which::Cons, pos, tail);
    let want = out.len().min(u32::MAX as usize) as u32;
    let plan = r.plan(pos, tail, want, fixed);
    if plan.span == 0 {
        return (Outcome { n: 0, left: avail }, pos);
    }
    let claim = Claim::held(pos, plan.span);
    let got = r.copy_planned(&claim, &plan, out);
    let pos = pos.wrapping_add(plan.span);
    r.mem.shared().cons.tail.store(pos, Release);
    r.retire_holes(pos);
    (
        Outcome {
            n: got,
            left: avail.saturating_sub(plan.span),
        },
        pos,
    )
}

impl<T: RingElement> Drop for SingleConsumer<T> {
    fn drop(&mut self) {
        self.ring.unhold(Which::Cons, self.pos);
    }
}

/// Somewhere elements can be enqueued: a shared ring (`&Ring<T>`, the multi-member protocol)
/// or a held producer side (`&mut SingleProducer<T>`), so that code built on rings (a mempool's
/// `send`, say) works with either.
///
/// ```
/// use rte_ring::{Enqueue, Ring, RingFlags};
/// use shmconfig::LocalZones;
/// fn push_all(mut to: impl Enqueue<u32>, v: &[u32]) -> usize {
///     to.enqueue_burst(v)
/// }
/// let zones = LocalZones::new();
/// let r = Ring::<u32>::create(&zones, "either", 16, RingFlags::SP_ENQ).unwrap();
/// assert_eq!(push_all(&r, &[1, 2]), 2);
/// let mut tx = r.single_producer().unwrap();
/// assert_eq!(push_all(&mut tx, &[3]), 1);
/// ```
pub trait Enqueue<T> {
    /// Enqueue all of `items` or none; returns `items.len()` or 0.
    fn enqueue_bulk(&mut self, items: &[T]) -> usize;
    /// Enqueue as many of `items` as fit; returns how many.
    fn enqueue_burst(&mut self, items: &[T]) -> usize;
}

/// Somewhere elements can be dequeued from: a shared ring (`&Ring<T>`) or a held consumer side
/// (`&mut SingleConsumer<T>`) (see [`Enqueue`]).
pub trait Dequeue<T> {
    /// Fill all of `out` or nothing; returns `out.len()` or 0.
    fn dequeue_bulk(&mut self, out: &mut [T]) -> usize;
    /// Dequeue up to `out.len()` elements; returns how many.
    fn dequeue_burst(&mut self, out: &mut [T]) -> usize;
}

impl<T: RingElement> Enqueue<T> for &Ring<T> {
    #[inline]
    fn enqueue_bulk(&mut self, items: &[T]) -> usize {
        Ring::enqueue_bulk(self, items)
    }
    #[inline]
    fn enqueue_burst(&mut self, items: &[T]) -> usize {
        Ring::enqueue_burst(self, items)
    }
}

impl<T: RingElement> Enqueue<T> for &mut SingleProducer<T> {
    #[inline]
    fn enqueue_bulk(&mut self, items: &[T]) -> usize {
        SingleProducer::enqueue_bulk(self, items)
    }
    #[inline]
    fn enqueue_burst(&mut self, items: &[T]) -> usize {
        SingleProducer::enqueue_burst(self, items)
    }
}

impl<T: RingElement> Dequeue<T> for &Ring<T> {
    #[inline]
    fn dequeue_bulk(&mut self, out: &mut [T]) -> usize {
        Ring::dequeue_bulk(self, out)
    }
    #[inline]
    fn dequeue_burst(&mut self, out: &mut [T]) -> usize {
        Ring::dequeue_burst(self, out)
    }
}

impl<T: RingElement> Dequeue<T> for &mut SingleConsumer<T> {
    #[inline]
    fn dequeue_bulk(&mut self, out: &mut [T]) -> usize {
        SingleConsumer::dequeue_bulk(self, out)
    }
    #[inline]
    fn dequeue_burst(&mut self, out: &mut [T]) -> usize {
        SingleConsumer::dequeue_burst(self, out)
    }
}
