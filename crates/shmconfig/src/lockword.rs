//! Lock words that name their holder, as the zone-table lock and the hash tables' writer lock
//! write them: the holder's member id + 1 in the low half (0: nobody), the holder's incarnation
//! ([`Liveness::incarnation`], 0 if unknown) in the high half. A waiter asks [`holder_gone`]
//! whether the process that wrote a word is gone, and may then take the lock over with a
//! compare-and-swap on that exact word.

use crate::zones::{Liveness, MemberId, MemberState};

/// The lock word of member `me` in the process `liveness` answers for.
pub fn lock_word_of(me: MemberId, liveness: &dyn Liveness) -> u64 {
    let inc = liveness.incarnation(me).unwrap_or(0);
    u64::from(inc) << 32 | (u64::from(me.0) + 1)
}

/// The member a held lock word names; `None` if its low half names no member (a damaged word).
pub fn holder_of(word: u64) -> Option<MemberId> {
    let low = (word & 0xffff_ffff).checked_sub(1)?;
    u16::try_from(low).ok().map(MemberId)
}

/// Whether the incarnation recorded in `word` and the current one of its slot are both known.
pub(crate) fn incarnation_known(word: u64, liveness: &dyn Liveness) -> bool {
    (word >> 32) as u32 != 0 && holder_of(word).is_some_and(|h| liveness.incarnation(h).is_some())
}

/// Whether the process that wrote the held lock word `word` is gone: the word names no member,
/// the member is not alive, or (both incarnations known) its slot now holds another
/// incarnation (the dead holder's slot was cleaned up and given to a newcomer). A dead
/// incarnation never comes back, so the answer stays true for this exact word.
pub fn holder_gone(word: u64, liveness: &dyn Liveness) -> bool {
    let Some(holder) = holder_of(word) else {
        return true; // names nobody: nobody can release it
    };
    if liveness.member_state(holder) != MemberState::Alive {
        return true;
    }
    let recorded = (word >> 32) as u32;
    recorded != 0
        && liveness
            .incarnation(holder)
            .is_some_and(|now| now != recorded)
}
