//! Stale clean-up: segment files of a prefix that no live process holds.
//!
//! A segment file is stale exactly when `flock(LOCK_EX|LOCK_NB)` succeeds on it (every process
//! that maps it holds `LOCK_SH`). Both functions hold the directory's exclusive lock, which
//! creators take shared until their new file is locked, so a file being born is never taken
//! for a stale one. Unlike DPDK, which removes every unlocked `*map_*` file in the mount, only
//! the exact names `<prefix>map_<N>` of the given prefix are considered.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::error::HugememError;
use crate::segment::{check_prefix, open_dir, segment_index};

/// The segment files `<prefix>map_<N>` in `dir` that no process holds a lock on, sorted.
/// Other prefixes' files, symlinks and non-regular files are never listed.
///
/// Holds the directory's exclusive lock while it looks (as [`remove_stale`] does), so a file
/// whose creator has not yet locked it is never reported.
pub fn stale_segments(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, HugememError> {
    check_prefix(prefix)?;
    let dirfd = open_dir(dir)?;
    rustix::fs::flock(&dirfd, FlockOperation::LockExclusive)
        .map_err(|e| HugememError::sys(format!("flock directory {}", dir.display()), e))?;
    let mut out = Vec::new();
    for name in candidate_names(dir, prefix)? {
        if let Some(_locked) = lock_if_stale(dirfd.as_fd(), &name)? {
            out.push(dir.join(&name));
        }
    }
    Ok(out)
}

/// Removes the stale segment files of `prefix` in `dir` (see [`stale_segments`]) and returns
/// them. Holds the directory's exclusive lock meanwhile, so no segment being created is touched.
pub fn remove_stale(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, HugememError> {
    check_prefix(prefix)?;
    let dirfd = open_dir(dir)?;
    rustix::fs::flock(&dirfd, FlockOperation::LockExclusive)
        .map_err(|e| HugememError::sys(format!("flock directory {}", dir.display()), e))?;
    let mut out = Vec::new();
    for name in candidate_names(dir, prefix)? {
        if let Some(_locked) = lock_if_stale(dirfd.as_fd(), &name)? {
            let p = dir.join(&name);
            match rustix::fs::unlinkat(&dirfd, name.as_str(), AtFlags::empty()) {
                Ok(()) => out.push(p),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(HugememError::sys(format!("unlink {}", p.display()), e)),
            }
        }
    }
    Ok(out)
}

fn candidate_names(dir: &Path, prefix: &str) -> Result<Vec<String>, HugememError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| HugememError::io(format!("list {}", dir.display()), e))?;
    let mut names: Vec<(u32, String)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let i = segment_index(&n, prefix)?;
            Some((i, n))
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// Opens `name` (no symlinks) and takes `LOCK_EX|LOCK_NB`; `Some(fd)` (holding the lock) if it
/// is a regular file nobody holds and the name still refers to it.
fn lock_if_stale(dirfd: BorrowedFd<'_>, name: &str) -> Result<Option<OwnedFd>, HugememError> {
    let fd = match rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(HugememError::sys(format!("open {name}"), e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| HugememError::sys(format!("fstat {name}"), e))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(None);
    }
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(HugememError::sys(format!("flock {name}"), e)),
    }
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => Ok(Some(fd)),
        _ => Ok(None),
    }
}
