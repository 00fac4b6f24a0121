//! Administering the hugepage pool and hugetlbfs mounts (root only): used by
//! `cargo xtask hugepages`, by CI, and by tests that need hugepages.
//!
//! Every change to the pool is a read-modify-write of `nr_hugepages` made under an exclusive
//! `flock` on [`POOL_LOCK`], so hugeshare tools and tests running at the same time (threads
//! or processes) never lose each other's pages. A test that needs the pool to stay as it is
//! for a while holds a [`PoolLock`] from [`lock_pool`]; the functions here may be called
//! while the same thread holds it.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::FlockOperation;

use crate::discover::{
    fmt_size, list_nodes, parse_mounts, pool_dir, read_counter, read_text, short_size, SYS_NODES,
};
use crate::error::HugememError;

/// The lock file that serialises changes to the hugepage pool.
pub const POOL_LOCK: &str = "/run/hugeshare-hugepages.lock";

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn need_root(action: &str, file: &str) -> Result<(), HugememError> {
    if is_root() {
        Ok(())
    } else {
        Err(HugememError::NotRoot {
            action: action.into(),
            file: file.into(),
        })
    }
}

static POOL_MUTEX: Mutex<()> = Mutex::new(());
thread_local! {
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// Exclusive use of the hugepage pool among hugeshare tools and tests (threads of this
/// process and other processes). Re-entrant within a thread. Released on drop.
#[derive(Debug)]
pub struct PoolLock {
    inner: Option<(MutexGuard<'static, ()>, fs::File)>,
}

/// Takes the pool lock, waiting for other holders.
pub fn lock_pool() -> Result<PoolLock, HugememError> {
    if HELD.with(|h| h.get()) > 0 {
        HELD.with(|h| h.set(h.get() + 1));
        return Ok(PoolLock { inner: None });
    }
    let guard = POOL_MUTEX.lock().unwrap_or_else(|e| e.into_inner());
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(POOL_LOCK)
        .map_err(|e| HugememError::io(format!("open {POOL_LOCK}"), e))?;
    rustix::fs::flock(&f, FlockOperation::LockExclusive)
        .map_err(|e| HugememError::sys(format!("flock {POOL_LOCK}"), e))?;
    HELD.with(|h| h.set(1));
    Ok(PoolLock {
        inner: Some((guard, f)),
    })
}

impl Drop for PoolLock {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        // Dropping `inner` closes the file (releasing the flock) and then the mutex.
        if let Some((g, f)) = self.inner.take() {
            drop(f);
            drop(g);
        }
    }
}

/// Pages this process added to the pool. Dropping it gives them back (so a failing test
/// still returns its pages); [`keep`](Reservation::keep) leaves them in the pool.
#[derive(Debug)]
pub struct Reservation {
    page_size: u64,
    node: Option<u32>,
    added: u64,
    released: bool,
}

impl Reservation {
    /// The page size, in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
    /// The node, if the pages were added to one node's pool.
    pub fn node(&self) -> Option<u32> {
        self.node
    }
    /// How many pages were added.
    pub fn added(&self) -> u64 {
        self.added
    }
    /// Gives back exactly the pages added (`nr_hugepages -= added`). Pages still in use
    /// become surplus pages and return to the kernel when freed.
    pub fn release(mut self) -> Result<(), HugememError> {
        self.released = true;
        give_back(self.page_size, self.node, self.added)
    }
    /// Leaves the pages in the pool (for `cargo xtask hugepages --reserve`); returns how many.
    pub fn keep(mut self) -> u64 {
        self.released = true;
        self.added
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = give_back(self.page_size, self.node, self.added) {
                eprintln!("hugemem: could not give back {} hugepages: {e}", self.added);
            }
        }
    }
}

fn give_back(page_size: u64, node: Option<u32>, pages: u64) -> Result<(), HugememError> {
    if pages == 0 {
        return Ok(());
    }
    let _l = lock_pool()?;
    let file = pool_dir(page_size, node).join("nr_hugepages");
    let cur = read_counter(&file)?;
    write_counter(&file, cur.saturating_sub(pages))
}

fn write_counter(file: &Path, n: u64) -> Result<(), HugememError> {
    fs::write(file, format!("{n}\n"))
        .map_err(|e| HugememError::io(format!("write {n} to {}", file.display()), e))
}

fn pool_file(page_size: u64, node: Option<u32>) -> Result<PathBuf, HugememError> {
    let dir = pool_dir(page_size, node);
    if !dir.is_dir() {
        if let Some(n) = node {
            if pool_dir(page_size, None).is_dir() {
                let present = list_nodes(Path::new(SYS_NODES))?
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(HugememError::NoSuchNode {
                    node: n,
                    page_size,
                    present,
                });
            }
        }
        let supported = crate::HugepageInfo::discover()
            .map(|i| i.supported_sizes())
            .unwrap_or_default();
        return Err(HugememError::UnknownPageSize {
            page_size,
            supported,
        });
    }
    Ok(dir.join("nr_hugepages"))
}

/// Adds `pages` pages of `page_size` to the pool (of `node`, or the kernel's choice of nodes),
/// under the pool lock. Fails, keeping nothing, if the kernel could not add them all.
pub fn reserve_pages(
    page_size: u64,
    pages: u64,
    node: Option<u32>,
) -> Result<Reservation, HugememError> {
    let file = pool_file(page_size, node)?;
    need_root("reserving hugepages", &file.display().to_string())?;
    let _l = lock_pool()?;
    let before = read_counter(&file)?;
    write_counter(&file, before + pages)?;
    let after = read_counter(&file)?;
    let added = after.saturating_sub(before);
    if added < pages {
        let _ = write_counter(&file, after.saturating_sub(added));
        return Err(HugememError::PoolShort {
            page_size,
            node,
            requested: pages,
            added,
        });
    }
    Ok(Reservation {
        page_size,
        node,
        added,
        released: false,
    })
}

/// Sets the pool of `page_size` (of `node`, or global) to exactly `pages` pages; returns the
/// previous count. `cargo xtask hugepages --clear` uses it with 0: pages in use stay (as
/// surplus) until their files are removed.
pub fn set_pages(page_size: u64, pages: u64, node: Option<u32>) -> Result<u64, HugememError> {
    let file = pool_file(page_size, node)?;
    need_root("changing the hugepage pool", &file.display().to_string())?;
    let _l = lock_pool()?;
    let before = read_counter(&file)?;
    write_counter(&file, pages)?;
    Ok(before)
}

/// The name of the file [`mount_private`] leaves in a mount point it created, under the mount
/// (hidden while mounted): [`unmount`] finds it once the hugetlbfs is gone and removes the
/// directory it marks, even from another process (`cargo xtask hugepages --unmount`).
pub const CREATED_MARKER: &str = ".hugeshare-created-mountpoint";

/// If `dir` (no longer a mount point) holds nothing but [`CREATED_MARKER`], remove both: the
/// directory was created by [`mount_private`] for its mount. Returns whether it was removed.
fn remove_created_mountpoint(dir: &Path) -> bool {
    let only_marker = fs::read_dir(dir).is_ok_and(|rd| {
        let names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        names.len() == 1 && names[0] == CREATED_MARKER
    });
    only_marker && fs::remove_file(dir.join(CREATED_MARKER)).is_ok() && fs::remove_dir(dir).is_ok()
}

/// A hugetlbfs mount made by [`mount_private`]. Dropping it unmounts (and removes the
/// directory if `mount_private` created it); [`keep`](Mount::keep) leaves it mounted.
#[derive(Debug)]
pub struct Mount {
    dir: PathBuf,
    done: bool,
}

impl Mount {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// Unmounts it (and removes the directory if we created it).
    pub fn unmount(mut self) -> Result<(), HugememError> {
        self.done = true;
        unmount(&self.dir)
    }
    /// Leaves it mounted.
    pub fn keep(mut self) -> PathBuf {
        self.done = true;
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.done {
            // `unmount` also removes the directory if `mount_private` created it.
            if let Err(e) = unmount(&self.dir) {
                eprintln!("hugemem: could not unmount {}: {e}", self.dir.display());
            }
        }
    }
}

/// Whether `dir` is a mount point listed in `/proc/mounts` as hugetlbfs.
fn is_hugetlbfs_mount(dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    read_text(Path::new("/proc/mounts"))
        .map(|t| parse_mounts(&t, None).iter().any(|m| m.path == dir))
        .unwrap_or(false)
}

/// Creates `dir` (mode 0700; it may exist if empty) and mounts a private hugetlbfs of
/// `page_size` pages there (`mount -t hugetlbfs -o pagesize=..,mode=0700 nodev dir`, made
/// with the mount(2) system call). A directory it creates is marked ([`CREATED_MARKER`], under
/// the mount) so that [`unmount`] removes it again, in this process or another.
pub fn mount_private(dir: &Path, page_size: u64) -> Result<Mount, HugememError> {
    need_root("mounting hugetlbfs", "mount(2)")?;
    if !pool_dir(page_size, None).is_dir() {
        let supported = crate::HugepageInfo::discover()
            .map(|i| i.supported_sizes())
            .unwrap_or_default();
        return Err(HugememError::UnknownPageSize {
            page_size,
            supported,
        });
    }
    let created;
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            if is_hugetlbfs_mount(dir) {
                return Err(HugememError::InvalidRequest {
                    detail: format!("{} is already a hugetlbfs mount", dir.display()),
                });
            }
            let names: Vec<_> = fs::read_dir(dir)
                .map_err(|e| HugememError::io(format!("list {}", dir.display()), e))?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            // A directory an earlier `mount_private` created (unmounted by other means since)
            // holds only its marker: still ours.
            created = names.len() == 1 && names[0] == CREATED_MARKER;
            if !names.is_empty() && !created {
                return Err(HugememError::InvalidRequest {
                    detail: format!(
                        "{} is not empty; mount hugetlbfs on an empty directory",
                        dir.display()
                    ),
                });
            }
        }
        Ok(_) => {
            return Err(HugememError::InvalidRequest {
                detail: format!("{} exists and is not a directory", dir.display()),
            })
        }
        Err(_) => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| HugememError::io(format!("create {}", parent.display()), e))?;
            }
            rustix::fs::mkdir(dir, rustix::fs::Mode::from_raw_mode(0o700))
                .map_err(|e| HugememError::sys(format!("mkdir {}", dir.display()), e))?;
            created = true;
            if let Err(e) = fs::write(dir.join(CREATED_MARKER), b"") {
                let _ = fs::remove_dir(dir);
                return Err(HugememError::io(
                    format!("mark {} as created for the mount", dir.display()),
                    e,
                ));
            }
        }
    }
    let data = format!("pagesize={},mode=0700", short_size(page_size));
    let data_c = std::ffi::CString::new(data).expect("no NUL in mount options");
    let r = rustix::mount::mount(
        "nodev",
        dir,
        "hugetlbfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        data_c.as_c_str(),
    );
    if let Err(e) = r {
        if created {
            remove_created_mountpoint(dir);
        }
        return Err(match e {
            rustix::io::Errno::INVAL => HugememError::InvalidRequest {
                detail: format!(
                    "the kernel refused to mount hugetlbfs with {} pages on {}",
                    fmt_size(page_size),
                    dir.display()
                ),
            },
            e => HugememError::sys(format!("mount hugetlbfs on {}", dir.display()), e),
        });
    }
    Ok(Mount {
        dir: dir.to_path_buf(),
        done: false,
    })
}

/// Unmounts the hugetlbfs at `dir` (files left in it are destroyed and their pages freed;
/// fails if a process still has one open or mapped), and removes `dir` if [`mount_private`]
/// created it (a directory that existed before is left).
pub fn unmount(dir: &Path) -> Result<(), HugememError> {
    need_root("unmounting hugetlbfs", "umount(2)")?;
    if !is_hugetlbfs_mount(dir) {
        return Err(HugememError::NotHugetlbfs {
            path: dir.to_path_buf(),
        });
    }
    rustix::mount::unmount(dir, rustix::mount::UnmountFlags::empty()).map_err(|e| match e {
        rustix::io::Errno::BUSY => HugememError::InvalidRequest {
            detail: format!(
                "{} is busy: a process still has a segment there open or mapped (stop it, or remove stale segments)",
                dir.display()
            ),
        },
        e => HugememError::sys(format!("umount {}", dir.display()), e),
    })?;
    remove_created_mountpoint(dir);
    Ok(())
}
