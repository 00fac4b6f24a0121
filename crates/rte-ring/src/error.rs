//! [`RingError`]: why creating or finding a ring failed.

use shmconfig::ZoneError;

/// Why [`crate::Ring::create`] or [`crate::Ring::lookup`] failed. Operations on a ring never
/// fail with an error: they return counts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The name is empty, longer than [`crate::RING_NAME_MAX`] bytes, or contains NUL.
    #[error("ring name {name:?} is invalid: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The count is not acceptable for the flags given.
    #[error("ring {name:?}: count {count} is invalid: {why}")]
    BadCount {
        /// The ring's name.
        name: String,
        /// The count given.
        count: u32,
        /// What is wrong, and what would be accepted.
        why: &'static str,
    },
    /// Unknown flag bits, or two producer (or two consumer) modes at once.
    #[error("ring {name:?}: flags {flags:#x} are invalid: {why}")]
    BadFlags {
        /// The ring's name.
        name: String,
        /// The raw flag bits given.
        flags: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// The element type cannot be stored (size not a multiple of 4, zero, or too large; or
    /// alignment above 128).
    #[error(
        "ring {name:?}: element type of size {size} and alignment {align} is not accepted: {why}"
    )]
    BadElement {
        /// The ring's name.
        name: String,
        /// `size_of` the element type.
        size: usize,
        /// `align_of` the element type.
        align: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A ring (or another zone) of that name exists already.
    #[error("a ring or zone named {0:?} exists already; pick another name or look the ring up")]
    Exists(String),
    /// No ring has that name.
    #[error("no ring named {0:?} (it was never created in this group, or was freed)")]
    NotFound(String),
    /// The ring exists but carries another element type.
    #[error("ring {name:?} carries elements of size {found_size}, align {found_align}, type id {found_type:#018x}; \
             this lookup asked for size {want_size}, align {want_align}, type id {want_type:#018x}: \
             look it up with the element type it was created with")]
    WrongElement {
        /// The ring's name.
        name: String,
        /// Element size recorded in the header.
        found_size: u32,
        /// Element alignment recorded in the header.
        found_align: u32,
        /// Type identifier recorded in the header.
        found_type: u64,
        /// Size of the type asked for.
        want_size: u32,
        /// Alignment of the type asked for.
        want_align: u32,
        /// Identifier of the type asked for.
        want_type: u64,
    },
    /// The zone does not hold a valid ring header of this version.
    #[error("zone {zone:?} does not hold a usable ring: header field {field} is {found}, expected {expected}; \
             it was written by another version of rte-ring, or is not a ring")]
    BadHeader {
        /// The zone's name.
        zone: String,
        /// The header field that failed the check.
        field: &'static str,
        /// What was found.
        found: String,
        /// What this build expects.
        expected: String,
    },
    /// The zone exists but its creator has not finished writing the header.
    #[error("ring {0:?} exists but is not initialised yet (its creator is still writing it, or died doing so); retry, or free the zone")]
    NotReady(String),
    /// A [`crate::SingleProducer`] or [`crate::SingleConsumer`] holds that side of the ring.
    #[error("ring {name:?}: the {side} side is held by {holder}{} (a single-{side} handle); \
             drop that handle first, or use the ring's shared calls",
             if *mine { ", this member" } else { "" })]
    Held {
        /// The ring's name.
        name: String,
        /// `"producer"` or `"consumer"`.
        side: &'static str,
        /// The member holding it.
        holder: shmconfig::MemberId,
        /// Whether the holder is the calling member (another handle in this process).
        mine: bool,
    },
    /// Any other failure of the underlying [`shmconfig::Zones`].
    #[error("zone operation for ring {name:?} failed: {source}")]
    Zone {
        /// The ring's name.
        name: String,
        /// What the zone layer said.
        #[source]
        source: ZoneError,
    },
}
