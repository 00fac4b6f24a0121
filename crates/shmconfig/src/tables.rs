//! Operations on a mapped configuration: the table lock, zones, members and lcores.
//!
//! [`Tables`] is a view over a mapped [`ConfigHeader`] and its zone table. It knows nothing of
//! files or processes: `procctl` maps the configuration, tells it who the caller is, and answers
//! liveness questions through [`Liveness`].
//!
//! # The table lock survives its holder
//! The lock word ([`ConfigHeader::table_lock`]) holds the holder's member slot + 1 in its low
//! half and the holder's incarnation ([`Liveness::incarnation`]: which process occupies the slot;
//! procctl's slot generation) in its high half, as the hash table's writer lock does. A waiter
//! that has spun for a while asks the [`Liveness`] handle about the holder; the holder is gone
//! when its member is not alive, or when its slot is alive but now holds another incarnation (a
//! newcomer was given the dead holder's slot), and the waiter then takes the lock over with a
//! compare-and-swap on the word it read. Another thread of the holder's own process (same slot,
//! same incarnation) waits like any other member.
//!
//! When the incarnation is not known (the [`Liveness`] returns `None`, or the holder recorded 0),
//! only [`Liveness::member_state`] decides, as before incarnations were recorded: a slot reused
//! by a newcomer looks like the holder, alive, and a word naming the waiter's own slot is taken
//! for a previous occupant's.
//!
//! Every update made under the lock is written so that a holder dying halfway leaves nothing
//! harmful: a zone entry is filled in completely before its `state` is set to `USED` (release),
//! so a half-written entry is still `FREE` and is simply overwritten later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::layout::{
    self, member_state, zone_state, ConfigHeader, ZoneEntry, MAX_LCORES, MAX_MEMBERS,
};
use crate::lockword::{self, holder_of, lock_word_of};
use crate::raw::ConfigView;
use crate::zones::{
    check_zone_name, Liveness, MemberId, MemberState, ShmOffset, ZoneError, ZoneInfo, ZoneKind,
    ZoneRequest,
};

/// A view over a mapped configuration.
///
/// Built by `procctl` (and tests) from a mapping that stays valid for the view's lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    view: ConfigView,
}

/// Where a zone is, as the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZonePlace {
    /// Entry index in the zone table.
    pub index: usize,
    /// Kind.
    pub kind: ZoneKind,
    /// Segment and offset.
    pub offset: ShmOffset,
    /// Length.
    pub len: usize,
}

impl Tables {
    /// A view over a configuration mapped at `base` with `len` bytes.
    ///
    /// # Safety
    /// `base..base+len` must stay mapped, readable and writable for the view's lifetime, hold a
    /// configuration laid out by this build (checked with [`layout::check_header_bytes`], or
    /// zeroed and about to be initialised by the caller), and be 8-byte aligned. `max_zones`
    /// must be the table's size.
    #[allow(unsafe_code)]
    pub unsafe fn new(base: *mut u8, len: usize, max_zones: u32) -> Result<Self, ZoneError> {
        // SAFETY: this function's contract is exactly `ConfigView::new`'s.
        let view = unsafe { ConfigView::new(base, len, max_zones)? };
        Ok(Self { view })
    }

    /// The header.
    pub fn header(&self) -> &ConfigHeader {
        self.view.header()
    }

    fn zone(&self, i: usize) -> &ZoneEntry {
        self.view.zone(i)
    }

    fn zone_name(&self, i: usize) -> String {
        layout::from_fixed(&self.view.zone_name(i))
    }

    fn set_zone_name(&self, i: usize, name: &[u8; layout::NAME_LEN]) {
        self.view.set_zone_name(i, name)
    }

    fn max_zones(&self) -> usize {
        self.view.max_zones
    }

    /// Take the table lock as `me`, replacing a holder that `liveness` reports gone: not alive,
    /// or its slot now occupied by another incarnation (see the module documentation). Gives up
    /// after `timeout` (a live holder that never lets go is a bug elsewhere; nothing hangs).
    ///
    /// `me` must already hold its slot, with the incarnation `liveness` reports for it (procctl
    /// raises the slot's generation before its first lock).
    pub fn lock<'a>(
        &'a self,
        me: MemberId,
        liveness: &dyn Liveness,
        timeout: Duration,
    ) -> Result<TableGuard<'a>, ZoneError> {
        let word: &AtomicU64 = &self.header().table_lock;
        let mine = lock_word_of(me, liveness);
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur == 0 {
                if word
                    .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(TableGuard { word, mine });
                }
                continue;
            }
            spins += 1;
            if spins < 200 {
                std::hint::spin_loop();
                continue;
            }
            // Slow path: is the holder still with us? A CAS on the exact word read: a newer
            // holder (another waiter that took over first) wins.
            if holder_gone(cur, me, liveness)
                && word
                    .compare_exchange(cur, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(TableGuard { word, mine });
            }
            if start.elapsed() > timeout {
                let holder = holder_of(cur).unwrap_or(MemberId::OUTSIDER);
                let pid = self
                    .header()
                    .members
                    .get(usize::from(holder.0))
                    .map_or(0, |m| m.pid.load(Ordering::Relaxed));
                return Err(ZoneError::LockHeld {
                    holder,
                    pid,
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Reserve a zone of `req.len` bytes in one of `segments` (segment index and length),
    /// first fit, aligned as asked. The caller holds the lock.
    pub fn reserve_zone(
        &self,
        _guard: &TableGuard<'_>,
        req: &ZoneRequest<'_>,
        owner: MemberId,
        segments: &[(u32, u64)],
    ) -> Result<ZonePlace, ZoneError> {
        let (name, kind, len, align) = (req.name, req.kind, req.len, req.align);
        check_zone_name(name)?;
        if len == 0 {
            return Err(ZoneError::BadRequest {
                name: name.into(),
                why: "length is zero".into(),
            });
        }
        if !align.is_power_of_two() {
            return Err(ZoneError::BadRequest {
                name: name.into(),
                why: format!("alignment {align} is not a power of two"),
            });
        }
        let align = align.max(64) as u64;
        let fixed: [u8; layout::NAME_LEN] =
            layout::to_fixed(name).ok_or_else(|| ZoneError::NameTooLong(name.into()))?;
        let mut free_slot = None;
        let mut used: Vec<(u32, u64, u64)> = Vec::new();
        for i in 0..self.max_zones() {
            let z = self.zone(i);
            if z.state.load(Ordering::Acquire) == zone_state::USED {
                if self.zone_name(i) == name {
                    return Err(ZoneError::Exists(name.into()));
                }
                used.push((
                    z.segment.load(Ordering::Relaxed),
                    z.offset.load(Ordering::Relaxed),
                    z.len.load(Ordering::Relaxed),
                ));
            } else if free_slot.is_none() {
                free_slot = Some(i);
            }
        }
        let slot = free_slot.ok_or(ZoneError::TableFull(self.max_zones()))?;
        used.sort_unstable();
        let mut largest = 0u64;
        for &(seg, seg_len) in segments {
            let mut cursor = 0u64;
            let mut found = None;
            // Entries are shared memory: arithmetic on them saturates rather than wraps, so a
            // corrupt entry can make a reservation fail but never overlap another zone.
            for &(s, off, l) in used.iter().filter(|u| u.0 == seg) {
                let start = cursor.checked_next_multiple_of(align).unwrap_or(u64::MAX);
                if start.checked_add(len as u64).is_some_and(|end| end <= off) {
                    found = Some(start);
                    break;
                }
                largest = largest.max(off.saturating_sub(cursor));
                cursor = cursor.max(off.saturating_add(l));
                let _ = s;
            }
            if found.is_none() {
                let start = cursor.checked_next_multiple_of(align).unwrap_or(u64::MAX);
                if start
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= seg_len)
                {
                    found = Some(start);
                } else {
                    largest = largest.max(seg_len.saturating_sub(cursor));
                }
            }
            if let Some(off) = found {
                let z = self.zone(slot);
                z.kind.store(kind as u32, Ordering::Relaxed);
                z.segment.store(seg, Ordering::Relaxed);
                z.owner.store(u32::from(owner.0), Ordering::Relaxed);
                z.offset.store(off, Ordering::Relaxed);
                z.len.store(len as u64, Ordering::Relaxed);
                z.align.store(align, Ordering::Relaxed);
                self.set_zone_name(slot, &fixed);
                z.state.store(zone_state::USED, Ordering::Release);
                self.header().zone_ops.fetch_add(1, Ordering::Relaxed);
                return Ok(ZonePlace {
                    index: slot,
                    kind,
                    offset: ShmOffset::new(seg, off),
                    len,
                });
            }
        }
        Err(ZoneError::NoMemory {
            name: name.into(),
            len,
            free: largest as usize,
        })
    }

    /// Find a zone by name. The caller holds the lock.
    pub fn find_zone(&self, _guard: &TableGuard<'_>, name: &str) -> Result<ZonePlace, ZoneError> {
        check_zone_name(name)?;
        for i in 0..self.max_zones() {
            let z = self.zone(i);
            if z.state.load(Ordering::Acquire) == zone_state::USED && self.zone_name(i) == name {
                let kind = ZoneKind::from_u32(z.kind.load(Ordering::Relaxed)).ok_or_else(|| {
                    ZoneError::Corrupt(format!("zone {name:?} has an unknown kind"))
                })?;
                return Ok(ZonePlace {
                    index: i,
                    kind,
                    offset: ShmOffset::new(
                        z.segment.load(Ordering::Relaxed),
                        z.offset.load(Ordering::Relaxed),
                    ),
                    len: z.len.load(Ordering::Relaxed) as usize,
                });
            }
        }
        Err(ZoneError::NotFound(name.into()))
    }

    /// Free a zone by name. The caller holds the lock.
    pub fn free_zone(&self, guard: &TableGuard<'_>, name: &str) -> Result<(), ZoneError> {
        let p = self.find_zone(guard, name)?;
        self.zone(p.index)
            .state
            .store(zone_state::FREE, Ordering::Release);
        Ok(())
    }

    /// Every zone in use. The caller holds the lock.
    pub fn list_zones(&self, _guard: &TableGuard<'_>) -> Vec<ZoneInfo> {
        let mut out = Vec::new();
        for i in 0..self.max_zones() {
            let z = self.zone(i);
            if z.state.load(Ordering::Acquire) == zone_state::USED {
                out.push(ZoneInfo {
                    name: self.zone_name(i),
                    kind: ZoneKind::from_u32(z.kind.load(Ordering::Relaxed))
                        .unwrap_or(ZoneKind::Other),
                    len: z.len.load(Ordering::Relaxed) as usize,
                    offset: ShmOffset::new(
                        z.segment.load(Ordering::Relaxed),
                        z.offset.load(Ordering::Relaxed),
                    ),
                    owner: MemberId(z.owner.load(Ordering::Relaxed) as u16),
                });
            }
        }
        out
    }

    /// Claim `lcores` for member `me`, all or none. On conflict, returns the lcore and its owner.
    /// An owner that `liveness` reports not alive loses its claim. The caller holds the lock.
    pub fn claim_lcores(
        &self,
        _guard: &TableGuard<'_>,
        me: MemberId,
        lcores: &[u32],
        liveness: &dyn Liveness,
    ) -> Result<(), (u32, MemberId)> {
        let h = self.header();
        let mine = u32::from(me.0) + 1;
        for &l in lcores {
            let cur = h.lcores[l as usize].load(Ordering::Acquire);
            if cur != 0 && cur != mine {
                let owner = MemberId((cur - 1) as u16);
                if liveness.member_state(owner) == MemberState::Alive {
                    return Err((l, owner));
                }
            }
        }
        let m = &h.members[me.0 as usize];
        for &l in lcores {
            h.lcores[l as usize].store(mine, Ordering::Release);
            m.lcores[l as usize / 64].fetch_or(1 << (l % 64), Ordering::AcqRel);
        }
        Ok(())
    }

    /// Release every lcore `member` owns. The caller holds the lock.
    pub fn release_lcores(&self, _guard: &TableGuard<'_>, member: MemberId) -> Vec<u32> {
        let h = self.header();
        let theirs = u32::from(member.0) + 1;
        let mut freed = Vec::new();
        for l in 0..MAX_LCORES {
            if h.lcores[l]
                .compare_exchange(theirs, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                freed.push(l as u32);
            }
        }
        for w in &h.members[member.0 as usize].lcores {
            w.store(0, Ordering::Release);
        }
        freed
    }

    /// The lcores a member owns, from its slot's bitmap.
    pub fn member_lcores(&self, member: MemberId) -> Vec<u32> {
        let m = &self.header().members[member.0 as usize];
        let mut out = Vec::new();
        for (w, word) in m.lcores.iter().enumerate() {
            let bits = word.load(Ordering::Acquire);
            for b in 0..64 {
                if bits & (1 << b) != 0 {
                    out.push((w * 64 + b) as u32);
                }
            }
        }
        out
    }

    /// The member slots whose state is not FREE.
    pub fn occupied_members(&self) -> Vec<MemberId> {
        (0..MAX_MEMBERS)
            .filter(|&i| {
                self.header().members[i].state.load(Ordering::Acquire) != member_state::FREE
            })
            .map(|i| MemberId(i as u16))
            .collect()
    }

    /// A member's process name, as it recorded it.
    pub fn member_name(&self, member: MemberId) -> String {
        let m = &self.header().members[member.0 as usize];
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&m.name[0].load(Ordering::Acquire).to_ne_bytes());
        b[8..].copy_from_slice(&m.name[1].load(Ordering::Acquire).to_ne_bytes());
        layout::from_fixed(&b)
    }

    /// Record a member's process name (first 15 bytes).
    pub fn set_member_name(&self, member: MemberId, name: &str) {
        let mut b = [0u8; 16];
        let n = name.len().min(15);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        let m = &self.header().members[member.0 as usize];
        m.name[0].store(
            u64::from_ne_bytes(b[..8].try_into().expect("8")),
            Ordering::Release,
        );
        m.name[1].store(
            u64::from_ne_bytes(b[8..].try_into().expect("8")),
            Ordering::Release,
        );
    }
}

/// Whether the process that wrote the held table lock word `cur` is gone, as `me` sees it through
/// `liveness`: as [`lockword::holder_gone`] decides; besides, when the incarnations are not both
/// known (as before they were recorded), a word naming `me`'s own slot is a previous occupant's
/// (a slot is only taken after its previous occupant is gone). With them known, a word of `me`'s
/// own slot and incarnation is another thread of this process, alive.
fn holder_gone(cur: u64, me: MemberId, liveness: &dyn Liveness) -> bool {
    lockword::holder_gone(cur, liveness)
        || (holder_of(cur) == Some(me) && !lockword::incarnation_known(cur, liveness))
}

/// The table lock, held. Released on drop.
#[derive(Debug)]
pub struct TableGuard<'a> {
    word: &'a AtomicU64,
    mine: u64,
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        // Only release what is still ours (a dead-holder takeover never happens to a live holder).
        let _ = self
            .word
            .compare_exchange(self.mine, 0, Ordering::Release, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::LocalZones;
    use crate::Zones;

    struct Heap(Vec<u64>);

    fn tables(max_zones: u32) -> (Heap, Tables) {
        let len = layout::config_len(max_zones);
        let mut heap = Heap(vec![0u64; len / 8]);
        // SAFETY: the buffer is `len` zeroed bytes, 8-aligned, and outlives the view in each test
        // (it is returned alongside it and kept alive).
        let t = unsafe { Tables::new(heap.0.as_mut_ptr().cast(), len, max_zones) }.unwrap();
        (heap, t)
    }

    #[test]
    fn zones_first_fit_aligned() {
        let (_h, t) = tables(16);
        let lz = LocalZones::new();
        let live = lz.liveness();
        let g = t.lock(MemberId(0), &*live, Duration::from_secs(1)).unwrap();
        let segs = [(0u32, 4096u64), (1u32, 1 << 20)];
        let a = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("a", 100, ZoneKind::Ring).align(64),
                MemberId(0),
                &segs,
            )
            .unwrap();
        assert_eq!(a.offset, ShmOffset::new(0, 0));
        let b = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("b", 100, ZoneKind::Memzone).align(1024),
                MemberId(0),
                &segs,
            )
            .unwrap();
        assert_eq!(b.offset, ShmOffset::new(0, 1024));
        // does not fit in segment 0 any more: goes to segment 1
        let c = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("c", 4000, ZoneKind::Memzone).align(64),
                MemberId(0),
                &segs,
            )
            .unwrap();
        assert_eq!(c.offset.segment, 1);
        assert_eq!(
            t.reserve_zone(
                &g,
                &ZoneRequest::new("a", 8, ZoneKind::Ring).align(64),
                MemberId(0),
                &segs
            ),
            Err(ZoneError::Exists("a".into()))
        );
        assert!(matches!(
            t.reserve_zone(
                &g,
                &ZoneRequest::new("huge", 2 << 20, ZoneKind::Memzone).align(64),
                MemberId(0),
                &segs
            ),
            Err(ZoneError::NoMemory { .. })
        ));
        assert_eq!(t.find_zone(&g, "b").unwrap(), b);
        t.free_zone(&g, "a").unwrap();
        assert!(matches!(t.find_zone(&g, "a"), Err(ZoneError::NotFound(_))));
        // the freed gap is reused
        let d = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("d", 64, ZoneKind::Memzone).align(64),
                MemberId(0),
                &segs,
            )
            .unwrap();
        assert_eq!(d.offset, ShmOffset::new(0, 0));
        assert_eq!(t.list_zones(&g).len(), 3);
    }

    #[test]
    fn a_corrupt_zone_entry_cannot_make_reserve_overflow() {
        let (_h, t) = tables(16);
        let live = LocalZones::new().liveness();
        let g = t.lock(MemberId(0), &*live, Duration::from_secs(1)).unwrap();
        let segs = [(0u32, 1u64 << 20), (1u32, 1 << 20)];
        let a = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("a", 64, ZoneKind::Memzone),
                MemberId(0),
                &segs,
            )
            .unwrap();
        // A damaged entry: its end lies past the end of the address space.
        t.zone(a.index)
            .offset
            .store(u64::MAX - 100, Ordering::Relaxed);
        t.zone(a.index).len.store(u64::MAX - 100, Ordering::Relaxed);
        let b = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("b", 4096, ZoneKind::Memzone),
                MemberId(0),
                &segs,
            )
            .unwrap();
        // It went before the damaged entry, inside segment 0, overlapping nothing.
        assert_eq!(b.offset, ShmOffset::new(0, 0));
        t.zone(a.index).offset.store(64, Ordering::Relaxed);
        let c = t
            .reserve_zone(
                &g,
                &ZoneRequest::new("c", 4096, ZoneKind::Memzone),
                MemberId(0),
                &segs,
            )
            .unwrap();
        assert_eq!(c.offset.segment, 1, "segment 0 is taken up to its end");
    }

    #[test]
    fn table_full() {
        let (_h, t) = tables(16);
        let live = LocalZones::new().liveness();
        let g = t.lock(MemberId(0), &*live, Duration::from_secs(1)).unwrap();
        for i in 0..16 {
            t.reserve_zone(
                &g,
                &ZoneRequest::new(&format!("z{i}"), 64, ZoneKind::Memzone).align(64),
                MemberId(0),
                &[(0, 1 << 20)],
            )
            .unwrap();
        }
        assert_eq!(
            t.reserve_zone(
                &g,
                &ZoneRequest::new("z16", 64, ZoneKind::Memzone).align(64),
                MemberId(0),
                &[(0, 1 << 20)]
            ),
            Err(ZoneError::TableFull(16))
        );
    }

    #[test]
    fn dead_lock_holder_is_replaced() {
        let (_h, t) = tables(16);
        let lz = LocalZones::new();
        let _b = lz.as_member(MemberId(3));
        let live = lz.liveness();
        let g = t.lock(MemberId(3), &*live, Duration::from_secs(1)).unwrap();
        std::mem::forget(g); // member 3 "dies" holding the lock
        t.header().members[3].pid.store(4242, Ordering::Relaxed);
        // Alive: a waiter times out instead of hanging, and is told who holds the lock.
        let e = t
            .lock(MemberId(0), &*live, Duration::from_millis(50))
            .unwrap_err();
        assert_held_by_3(&e, "a waiter");
        assert!(e.to_string().contains("member 3 (pid 4242)"), "{e}");
        lz.set_member_state(MemberId(3), MemberState::Dead);
        let g = t.lock(MemberId(0), &*live, Duration::from_secs(1)).unwrap();
        drop(g);
        assert_eq!(t.header().table_lock.load(Ordering::Relaxed), 0);
    }

    /// `e` says the lock is held by member 3, whose process is pid 4242 (`who` waited).
    fn assert_held_by_3(e: &ZoneError, who: &str) {
        assert!(
            matches!(
                e,
                ZoneError::LockHeld {
                    holder: MemberId(3),
                    pid: 4242,
                    ..
                }
            ),
            "{who}: {e}"
        );
    }

    /// Member slots with a state and an incarnation each, as procctl's liveness has them.
    #[derive(Debug, Default)]
    struct Slots(std::sync::Mutex<std::collections::HashMap<u16, (MemberState, Option<u32>)>>);

    impl Slots {
        fn set(&self, m: u16, st: MemberState, inc: Option<u32>) {
            self.0.lock().unwrap().insert(m, (st, inc));
        }
    }

    impl Liveness for Slots {
        fn member_state(&self, member: MemberId) -> MemberState {
            self.0
                .lock()
                .unwrap()
                .get(&member.0)
                .map_or(MemberState::Free, |s| s.0)
        }
        fn incarnation(&self, member: MemberId) -> Option<u32> {
            self.0.lock().unwrap().get(&member.0).and_then(|s| s.1)
        }
    }

    #[test]
    fn a_dead_holder_whose_slot_a_newcomer_took_is_replaced() {
        let (_h, t) = tables(16);
        let live = Slots::default();
        live.set(3, MemberState::Alive, Some(7));
        live.set(5, MemberState::Alive, Some(1));
        std::mem::forget(t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap());
        // Slot 3's process died holding the lock; slot 3 was cleaned up and given to a newcomer
        // (another incarnation, alive). A waiter in slot 5 sees the holder is gone.
        live.set(3, MemberState::Alive, Some(8));
        let g = t
            .lock(MemberId(5), &live, Duration::from_secs(2))
            .expect("the lock of a dead incarnation is taken over");
        drop(g);
        assert_eq!(t.header().table_lock.load(Ordering::Relaxed), 0);
        // The newcomer itself (slot 3, incarnation 8) takes over a word of its slot's previous
        // incarnation too.
        live.set(3, MemberState::Alive, Some(7));
        std::mem::forget(t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap());
        live.set(3, MemberState::Alive, Some(8));
        drop(t.lock(MemberId(3), &live, Duration::from_secs(2)).unwrap());
        assert_eq!(t.header().table_lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_live_holder_is_waited_for_by_other_members_and_its_own_threads() {
        let (_h, t) = tables(16);
        let live = Slots::default();
        live.set(3, MemberState::Alive, Some(7));
        live.set(5, MemberState::Alive, Some(1));
        t.header().members[3].pid.store(4242, Ordering::Relaxed);
        let g = t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap();
        // Another member, and another thread of the holder's own process (same slot, same
        // incarnation): both wait, neither takes the lock from a live holder.
        for waiter in [MemberId(5), MemberId(3)] {
            let e = t
                .lock(waiter, &live, Duration::from_millis(50))
                .unwrap_err();
            assert_held_by_3(&e, &waiter.to_string());
        }
        drop(g);
        assert_eq!(t.header().table_lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_incarnations_the_lock_behaves_as_before() {
        let (_h, t) = tables(16);
        let live = Slots::default();
        live.set(3, MemberState::Alive, None);
        live.set(5, MemberState::Alive, None);
        std::mem::forget(t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap());
        assert_eq!(t.header().table_lock.load(Ordering::Relaxed), 4);
        // A reused slot cannot be told from its previous occupant: the holder looks alive.
        assert!(matches!(
            t.lock(MemberId(5), &live, Duration::from_millis(50)),
            Err(ZoneError::LockHeld {
                holder: MemberId(3),
                ..
            })
        ));
        // A word naming the waiter's own slot is taken for a previous occupant's.
        drop(t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap());
        // A holder that recorded no incarnation is judged by its state alone, even once its slot
        // has one.
        std::mem::forget(t.lock(MemberId(3), &live, Duration::from_secs(1)).unwrap());
        live.set(3, MemberState::Alive, Some(9));
        assert!(t
            .lock(MemberId(5), &live, Duration::from_millis(50))
            .is_err());
        live.set(3, MemberState::Dead, Some(9));
        drop(t.lock(MemberId(5), &live, Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn lcore_claims_conflict_and_release() {
        let (_h, t) = tables(16);
        let lz = LocalZones::new();
        let _b = lz.as_member(MemberId(1));
        let live = lz.liveness();
        let g = t.lock(MemberId(0), &*live, Duration::from_secs(1)).unwrap();
        t.claim_lcores(&g, MemberId(0), &[0, 1, 70], &*live)
            .unwrap();
        assert_eq!(t.member_lcores(MemberId(0)), vec![0, 1, 70]);
        assert_eq!(
            t.claim_lcores(&g, MemberId(1), &[2, 70], &*live),
            Err((70, MemberId(0)))
        );
        // all or none: lcore 2 was not taken
        assert_eq!(t.member_lcores(MemberId(1)), Vec::<u32>::new());
        lz.set_member_state(MemberId(0), MemberState::Dead);
        t.claim_lcores(&g, MemberId(1), &[2, 70], &*live).unwrap();
        assert_eq!(t.release_lcores(&g, MemberId(1)), vec![2, 70]);
        t.set_member_name(MemberId(1), "a-very-long-process-name");
        assert_eq!(t.member_name(MemberId(1)), "a-very-long-pro");
    }
}
