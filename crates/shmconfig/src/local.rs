//! [`LocalZones`]: zones in heap memory, for unit tests and benchmarks of the data structures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::raw::HeapBlock;
use crate::zones::{
    check_zone_name, Liveness, MemberId, MemberState, ShmOffset, Zone, ZoneError, ZoneInfo,
    ZoneRequest, Zones,
};

#[derive(Debug)]
struct Entry {
    info: ZoneInfo,
    block: Arc<HeapBlock>,
}

#[derive(Debug, Default)]
struct Inner {
    zones: Vec<Entry>,
    next_offset: u64,
    states: HashMap<u16, MemberState>,
}

/// Heap-backed [`Zones`] in one process.
///
/// Several views can share one set of zones while acting as different members
/// ([`LocalZones::as_member`]), and a test can declare a member dead
/// ([`LocalZones::set_member_state`]) to exercise the recovery paths of a data structure without
/// killing a process. Multi-process behaviour itself is tested with real processes elsewhere.
///
/// ```
/// use shmconfig::{LocalZones, MemberId, MemberState, Zones};
/// let a = LocalZones::new();
/// let b = a.as_member(MemberId(1));
/// assert_eq!(a.member_state(MemberId(1)), MemberState::Alive);
/// a.set_member_state(MemberId(1), MemberState::Dead);
/// assert_eq!(b.member_state(MemberId(1)), MemberState::Dead);
/// ```
#[derive(Debug, Clone)]
pub struct LocalZones {
    inner: Arc<Mutex<Inner>>,
    member: MemberId,
    lcore: Option<u32>,
}

impl Default for LocalZones {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalZones {
    /// An empty set of zones, viewed as member 0.
    pub fn new() -> Self {
        let mut inner = Inner::default();
        inner.states.insert(0, MemberState::Alive);
        Self {
            inner: Arc::new(Mutex::new(inner)),
            member: MemberId(0),
            lcore: None,
        }
    }

    /// Another view of the same zones acting as `member` (marked alive).
    pub fn as_member(&self, member: MemberId) -> Self {
        self.lock().states.insert(member.0, MemberState::Alive);
        Self {
            inner: self.inner.clone(),
            member,
            lcore: self.lcore,
        }
    }

    /// The same view, claiming to run as `lcore` (for per-lcore caches).
    pub fn with_lcore(&self, lcore: Option<u32>) -> Self {
        Self {
            inner: self.inner.clone(),
            member: self.member,
            lcore,
        }
    }

    /// Declare what the group knows of `member`.
    pub fn set_member_state(&self, member: MemberId, state: MemberState) {
        self.lock().states.insert(member.0, state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain bookkeeping behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The [`Liveness`] of a [`LocalZones`]: what `set_member_state` declared.
#[derive(Debug)]
struct LocalLiveness(Arc<Mutex<Inner>>);

impl Liveness for LocalLiveness {
    fn member_state(&self, member: MemberId) -> MemberState {
        if member == MemberId::OUTSIDER {
            return MemberState::Alive;
        }
        let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .states
            .get(&member.0)
            .copied()
            .unwrap_or(MemberState::Free)
    }
}

impl Zones for LocalZones {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        check_zone_name(req.name)?;
        if req.len == 0 {
            return Err(ZoneError::BadRequest {
                name: req.name.into(),
                why: "length is zero".into(),
            });
        }
        if !req.align.is_power_of_two() {
            return Err(ZoneError::BadRequest {
                name: req.name.into(),
                why: format!("alignment {} is not a power of two", req.align),
            });
        }
        let mut inner = self.lock();
        if inner.zones.iter().any(|e| e.info.name == req.name) {
            return Err(ZoneError::Exists(req.name.into()));
        }
        let align = req.align.max(64);
        let block = HeapBlock::new(req.len, align).ok_or_else(|| ZoneError::NoMemory {
            name: req.name.into(),
            len: req.len,
            free: 0,
        })?;
        let block = Arc::new(block);
        let offset = ShmOffset::new(0, inner.next_offset);
        inner.next_offset += (req.len as u64).next_multiple_of(align as u64);
        let info = ZoneInfo {
            name: req.name.into(),
            kind: req.kind,
            len: req.len,
            offset,
            owner: self.member,
        };
        let zone = block.zone(req.name, req.kind, offset);
        inner.zones.push(Entry { info, block });
        Ok(zone)
    }

    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        check_zone_name(name)?;
        let inner = self.lock();
        let e = inner
            .zones
            .iter()
            .find(|e| e.info.name == name)
            .ok_or_else(|| ZoneError::NotFound(name.into()))?;
        Ok(e.block.zone(&e.info.name, e.info.kind, e.info.offset))
    }

    fn free(&self, name: &str) -> Result<(), ZoneError> {
        let mut inner = self.lock();
        let i = inner
            .zones
            .iter()
            .position(|e| e.info.name == name)
            .ok_or_else(|| ZoneError::NotFound(name.into()))?;
        inner.zones.remove(i);
        Ok(())
    }

    fn list(&self) -> Vec<ZoneInfo> {
        self.lock().zones.iter().map(|e| e.info.clone()).collect()
    }

    fn member(&self) -> MemberId {
        self.member
    }

    fn liveness(&self) -> Arc<dyn Liveness> {
        Arc::new(LocalLiveness(self.inner.clone()))
    }

    fn member_state(&self, member: MemberId) -> MemberState {
        if member == MemberId::OUTSIDER {
            return MemberState::Alive;
        }
        self.lock()
            .states
            .get(&member.0)
            .copied()
            .unwrap_or(MemberState::Free)
    }

    fn current_lcore(&self) -> Option<u32> {
        self.lcore
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ZoneKind;

    #[test]
    fn reserve_lookup_free() {
        let z = LocalZones::new();
        let a = z
            .reserve(&ZoneRequest::new("a b", 100, ZoneKind::Ring).align(4096))
            .unwrap();
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        assert_eq!(a.len(), 100);
        assert_eq!(
            z.reserve(&ZoneRequest::new("a b", 8, ZoneKind::Ring))
                .unwrap_err(),
            ZoneError::Exists("a b".into())
        );
        assert_eq!(z.lookup("a b").unwrap().as_ptr(), a.as_ptr());
        assert!(matches!(
            z.lookup_kind("a b", ZoneKind::Hash),
            Err(ZoneError::WrongKind {
                wanted: ZoneKind::Hash,
                found: ZoneKind::Ring,
                ..
            })
        ));
        assert_eq!(z.list().len(), 1);
        z.free("a b").unwrap();
        assert!(matches!(z.lookup("a b"), Err(ZoneError::NotFound(_))));
        // the freed zone stays valid while a handle holds it
        assert_eq!(a.len(), 100);
    }

    #[test]
    fn bad_requests() {
        let z = LocalZones::new();
        assert!(matches!(
            z.reserve(&ZoneRequest::new("", 8, ZoneKind::Memzone)),
            Err(ZoneError::BadName { .. })
        ));
        assert!(matches!(
            z.reserve(&ZoneRequest::new(&"x".repeat(64), 8, ZoneKind::Memzone)),
            Err(ZoneError::NameTooLong(_))
        ));
        assert!(matches!(
            z.reserve(&ZoneRequest::new("x", 0, ZoneKind::Memzone)),
            Err(ZoneError::BadRequest { .. })
        ));
        assert!(matches!(
            z.reserve(&ZoneRequest::new("x", 8, ZoneKind::Memzone).align(3)),
            Err(ZoneError::BadRequest { .. })
        ));
    }

    #[test]
    fn members() {
        let a = LocalZones::new();
        assert_eq!(a.member_state(MemberId(7)), MemberState::Free);
        let b = a.as_member(MemberId(7));
        assert_eq!(b.member(), MemberId(7));
        assert_eq!(a.member_state(MemberId(7)), MemberState::Alive);
        let kept = b.liveness();
        a.set_member_state(MemberId(7), MemberState::Dead);
        assert_eq!(b.member_state(MemberId(7)), MemberState::Dead);
        assert_eq!(kept.member_state(MemberId(7)), MemberState::Dead);
        assert_eq!(a.member_state(MemberId::OUTSIDER), MemberState::Alive);
    }
}
