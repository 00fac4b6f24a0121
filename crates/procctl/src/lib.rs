//! Being a member of a hugeshare process group.
#![deny(unsafe_code)]

pub mod lcores;
pub mod options;

pub use lcores::LcoreMap;
pub use options::{Options, OptionsError, ProcType, DEFAULT_PREFIX};
