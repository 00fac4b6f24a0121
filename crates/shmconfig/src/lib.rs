//! The shared configuration of a hugeshare group, and the [`Zones`] trait every data structure
//! is built on.
//!
//! * [`zones`]: [`Zones`], [`Zone`], [`ShmOffset`], [`MemberId`]: the narrow waist between memory
//!   and data structures.
//! * [`LocalZones`]: heap-backed zones for unit tests and benchmarks.
//! * [`validate`]: the checks a member runs on a live configuration's values before it uses them.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod raw;

pub mod hooks;
pub mod layout;
pub mod local;
pub mod lockword;
pub mod tables;
pub mod typeid;
pub mod validate;
pub mod zones;

pub use local::LocalZones;
pub use tables::{TableGuard, Tables, ZonePlace};
pub use zones::{
    check_zone_name, AlwaysAlive, Liveness, MemberId, MemberState, ShmOffset, Zone, ZoneError,
    ZoneInfo, ZoneKind, ZoneRequest, Zones, ZONE_NAME_MAX,
};
