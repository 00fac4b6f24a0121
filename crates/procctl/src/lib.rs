//! Being a member of a hugeshare process group.
//!
//! A **primary** discovers hugepages, creates the group's memory segments and its shared
//! configuration, and publishes them in a runtime directory per prefix. **Secondaries** attach to
//! it and can create objects too. `--proc-type=auto` becomes secondary when a live primary exists.
//!
//! # Liveness comes from the kernel
//! Every decision about who is alive is taken from open-file-description (OFD) locks on
//! `<runtime dir>/<prefix>/lock`, never from whether a file exists:
//! * byte 0 is held by the primary for its lifetime: the election (`primary`, `auto`) is a
//!   non-blocking attempt to take it; a secondary checks it to know its primary lives;
//! * byte `1 + s` is held by the member in slot `s` for its lifetime. A member whose slot is in use
//!   but whose byte nobody holds is dead. Cleaning up after it requires taking that byte, so
//!   exactly one survivor does it;
//! * the configuration file is written under a temporary name, locked by the primary (byte 0 of
//!   the file), and renamed into place; a `config` file nobody locks was left by a dead primary
//!   and is never trusted. The next primary removes it, and the stale segment files of its prefix
//!   (only those nobody holds), without manual clean-up.
//!
//! Each member runs a monitor thread (every 10 ms; `--monitor-interval MS` to change) that reports
//! [`Event`]s: members joining, leaving and dying, and the primary dying or exiting.
//!
//! # A runtime directory deleted under a live group
//! Members find the primary through the lock file in the group's runtime directory, which a user
//! or a cleaner may delete (`rm -rf /var/run/hugeshare/<prefix>`). The primary also holds an
//! *anchor*, a Unix socket in the abstract namespace named after that directory, which no file
//! operation can remove: a process that would otherwise start a second primary under the same
//! name, or a secondary that finds no directory, is refused with
//! [`ProcError::RuntimeDirGone`], naming the live primary's pid. A member leaving removes files
//! only while the directory still holds the lock file it opened, so the old primary's exit never
//! removes another group's files.
//!
//! # A new primary while an orphaned secondary still runs
//! When the primary dies, its secondaries are told ([`Event::PrimaryDied`]) and keep their
//! mappings of the old memory: nothing they do hangs (the table lock of the old group replaces
//! dead holders), but the old group can admit no new member. A new primary started on the same
//! prefix creates a **new** group: fresh configuration, fresh segment files whose indices do not
//! collide with the files the orphan still holds (those are removed by the first primary that
//! finds them unheld). The orphan and the new group never share memory; the orphan should exit
//! (or restart and attach to the new primary). DPDK, in the same situation, fails with
//! `Cannot init memzone` and later secondaries hang forever.
//!
//! # A damaged or edited configuration
//! A secondary checks every value it takes from the live configuration before it uses any
//! ([`shmconfig::validate`]), and looks at each segment file without opening it for reading or
//! writing: it must be a regular file on hugetlbfs or tmpfs, as the configuration says. A
//! configuration that fails is refused with [`ProcError::Corrupt`], naming the field; nothing in
//! it is mapped, and the members already attached keep working.
//!
//! # Options only a primary uses
//! The options that set up a new group ([`PRIMARY_ONLY_OPTIONS`]: its memory, `-m`,
//! `--socket-mem`, `--no-huge`, `--huge-dir`, `--in-memory`, `--lazy-pages`; its address,
//! `--base-virtaddr`; its zone table, `--max-zones`; its clock, `--clock`) are refused by
//! `--proc-type=secondary` ([`OptionsError::PrimaryOnly`]) and ignored, with a notice per option
//! ([`Process::notices`]) that says how the group differs where it does, by `--proc-type=auto`
//! when it joins a running group. `-h`/`--help`
//! is [`OptionsError::HelpRequested`]; programs check [`options::wants_help`] first and print
//! [`options::USAGE`].
//!
//! # Messages between members
//! See [`channel`]: named messages with small payloads and descriptors, sent to one member,
//! broadcast, or as requests with replies and timeouts; a dead peer never blocks a sender.
#![deny(unsafe_code)]

mod anchor;
pub mod channel;
pub mod error;
pub mod lcores;
pub mod options;
pub mod process;
pub mod rundir;
#[allow(unsafe_code)]
mod sys;

pub use channel::{BroadcastReport, ChannelError, Message};
pub use error::{ProcError, Result};
pub use lcores::LcoreMap;
pub use options::{Options, OptionsError, ProcType, DEFAULT_PREFIX, PRIMARY_ONLY_OPTIONS};
pub use process::{
    register_cleanup_hook, CleanupHook, Event, Process, Role, DEFAULT_BASE_VIRTADDR,
};
