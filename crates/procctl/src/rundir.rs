//! The runtime directory of a group: `/var/run/hugeshare/<prefix>` as root,
//! `$XDG_RUNTIME_DIR/hugeshare/<prefix>` otherwise (or `/tmp/hugeshare-<uid>/<prefix>`), unless
//! `--runtime-dir` or `HUGESHARE_RUNTIME_DIR` names another base. Directories are 0700 and files
//! 0600; files are opened without following symbolic links.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{ProcError, Result};
use crate::sys;

/// The base directory under which each prefix has its own directory.
pub fn base_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("HUGESHARE_RUNTIME_DIR") {
        return PathBuf::from(p);
    }
    let uid = sys::euid();
    if uid == 0 {
        return PathBuf::from("/var/run/hugeshare");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("hugeshare"),
        _ => PathBuf::from(format!("/tmp/hugeshare-{uid}")),
    }
}

/// The directory of `prefix`.
pub fn group_dir(explicit: Option<&Path>, prefix: &str) -> PathBuf {
    base_dir(explicit).join(prefix)
}

/// Create `dir` (and the base) with mode 0700 if missing; refuse one that is a symlink, not a
/// directory, or not ours.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(dir)
        .map_err(|e| ProcError::io("creating runtime directory", dir, e))?;
    let md = fs::symlink_metadata(dir)
        .map_err(|e| ProcError::io("inspecting runtime directory", dir, e))?;
    if !md.is_dir() {
        return Err(ProcError::RuntimeDir {
            path: dir.into(),
            why: "is not a directory (a symbolic link?); remove it".into(),
        });
    }
    if md.uid() != sys::euid() {
        return Err(ProcError::RuntimeDir {
            path: dir.into(),
            why: format!(
                "belongs to uid {}, not to us (uid {}); use --runtime-dir or another prefix",
                md.uid(),
                sys::euid()
            ),
        });
    }
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| ProcError::io("restricting runtime directory to 0700", dir, e))?;
    }
    Ok(())
}

/// Open (and maybe create) a file in the runtime directory: 0600, no symlink following.
pub(crate) fn open_file(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Create a new file exclusively: 0600, no symlink following.
pub(crate) fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}
