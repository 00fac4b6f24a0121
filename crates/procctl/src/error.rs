//! Errors of `procctl`.

use std::path::PathBuf;

use crate::options::OptionsError;

/// Why joining or using a group failed. Messages name the file, the value and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// Bad options.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A live primary holds the prefix.
    #[error("a primary is already running for prefix {prefix:?} (pid {pid}, lock {lock}); start this process with --proc-type=secondary or auto to join it, or pick another --file-prefix")]
    PrimaryExists {
        /// The prefix.
        prefix: String,
        /// The live primary's pid (0 if unknown).
        pid: u32,
        /// The lock file.
        lock: PathBuf,
    },
    /// A primary of this prefix is alive, but the group's runtime directory was deleted or
    /// replaced under it: nobody can join its group, and no second primary may start beside it.
    #[error("a primary of prefix {prefix:?} is still running (pid {pid}) but its runtime directory {dir} was deleted or replaced (rm -rf, a tmp cleaner, a logout?), so no process can join its group and no second primary may start under the same name; stop that primary (kill {pid}) and start the group again")]
    RuntimeDirGone {
        /// The prefix.
        prefix: String,
        /// The live primary's pid (0 if it could not be asked).
        pid: u32,
        /// The group's runtime directory.
        dir: PathBuf,
    },
    /// No live primary for a secondary to join.
    #[error("no primary is running for prefix {prefix:?} ({why}); start a primary first (--proc-type=primary), or use --proc-type=auto")]
    NoPrimary {
        /// The prefix.
        prefix: String,
        /// What was found.
        why: String,
    },
    /// The primary did not become ready in time.
    #[error("timed out after {waited_ms} ms waiting for the primary of prefix {prefix:?}: {why}; raise --attach-timeout if the primary is slow to start")]
    AttachTimeout {
        /// The prefix.
        prefix: String,
        /// How long we waited.
        waited_ms: u128,
        /// What we were waiting for.
        why: String,
    },
    /// The configuration is of another layout or version, or corrupt.
    #[error(transparent)]
    Layout(#[from] shmconfig::layout::LayoutError),
    /// Something in the configuration is inconsistent, out of range, or names a file that is
    /// not one of the group's segments (a damaged or hand-edited configuration). Nothing it
    /// describes was used.
    #[error("the group's configuration {file} is corrupt: {why}; this process did not use it. Stop every member of the group and start the primary again (if no process uses the group any more, remove the runtime directory that holds the configuration)")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// Another live member owns an lcore this process asked for.
    #[error("lcore {lcore} is owned by member {member} ({name}, pid {pid}); give this process other lcores (for example --lcores '{suggest}@0')")]
    LcoreTaken {
        /// The lcore.
        lcore: u32,
        /// The owner's slot.
        member: u16,
        /// The owner's pid.
        pid: u32,
        /// The owner's process name.
        name: String,
        /// A free lcore to suggest.
        suggest: u32,
    },
    /// Every lcore or member slot is in use.
    #[error("the group is full: {0}")]
    Full(String),
    /// Hugepage memory could not be provided.
    #[error(transparent)]
    Memory(#[from] hugemem::HugememError),
    /// A zone-table operation failed.
    #[error(transparent)]
    Zone(#[from] shmconfig::ZoneError),
    /// A system call on a named file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something is unsafe about the runtime directory.
    #[error("runtime directory {path}: {why}")]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl ProcError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`ProcError`].
pub type Result<T, E = ProcError> = std::result::Result<T, E>;
