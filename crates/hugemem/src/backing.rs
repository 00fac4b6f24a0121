//! Choosing a backing: the issue's "fall back or fail" rule, in one place.
//!
//! * `--no-huge` (or a machine with no usable hugepages at all: no pages reserved in any
//!   size, or no hugetlbfs mount we may write) gives `/dev/shm` (or a plain memfd with
//!   `--in-memory`) **and a notice saying why**.
//! * When hugepages exist but too few are free, the request **fails** with the pre-flight
//!   message (needed, free, the command that reserves more). The two are never mixed silently.
//! * An explicit page size or hugetlbfs directory is a demand, not a wish: if it cannot be met
//!   the request fails with the reason.

use std::path::{Path, PathBuf};

use crate::discover::{dir_writable, fmt_size, short_size, HugepageInfo, PageSizeInfo};
use crate::error::HugememError;
use crate::segment::{not_enough, Hugetlbfs, Memfd, SegmentSource, ShmFallback};

/// Where a group's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Files in a hugetlbfs directory.
    Hugetlbfs {
        /// The directory (a hugetlbfs mount, or a directory inside one).
        dir: PathBuf,
        /// Its page size, in bytes.
        page_size: u64,
    },
    /// Files in a tmpfs directory (normally `/dev/shm`), 4 KiB pages.
    Shm {
        /// The directory.
        dir: PathBuf,
    },
    /// Anonymous memfds (`--in-memory`).
    Memfd {
        /// The hugepage size (`MFD_HUGETLB`), or `None` for 4 KiB pages.
        page_size: Option<u64>,
    },
}

/// What the user asked for (EAL-style options).
#[derive(Debug, Clone, Copy, Default)]
pub struct BackingRequest<'a> {
    /// `--no-huge`: ordinary pages in `/dev/shm` (or a memfd with `in_memory`).
    pub no_huge: bool,
    /// `--in-memory`: memfds, nothing on disk.
    pub in_memory: bool,
    /// `--huge-dir`: use this hugetlbfs directory.
    pub huge_dir: Option<&'a Path>,
    /// `--huge-page-size`/`--pagesize`: use this page size, in bytes.
    pub page_size: Option<u64>,
    /// `-m`: bytes in total (0: no pre-flight check of the total).
    pub bytes: u64,
    /// `--socket-mem`: bytes per NUMA node, by node number. The total needed is the larger of
    /// `bytes` and the sum of these.
    pub per_node: Option<&'a [u64]>,
}

/// The chosen backing, and the notice to show the user (set when falling back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingChoice {
    /// Where the memory comes from.
    pub backing: Backing,
    /// A clear message when we did not use hugepages although the user did not ask for that.
    pub notice: Option<String>,
}

/// Applies the rule (see the module docs) to the discovered `info`, including the pre-flight
/// check of free pages.
///
/// ```
/// use hugemem::{choose_backing, Backing, BackingRequest, HugepageInfo};
/// // A machine without hugepages falls back, and says so.
/// let info = HugepageInfo { default_page_size: Some(2 << 20), sizes: vec![], mounts: vec![] };
/// let c = choose_backing(&info, &BackingRequest { bytes: 64 << 20, ..Default::default() }).unwrap();
/// assert!(matches!(c.backing, Backing::Shm { .. }));
/// assert!(c.notice.unwrap().contains("falling back to /dev/shm"));
/// ```
pub fn choose_backing(
    info: &HugepageInfo,
    req: &BackingRequest<'_>,
) -> Result<BackingChoice, HugememError> {
    let invalid = |d: &str| Err(HugememError::InvalidRequest { detail: d.into() });
    if req.no_huge {
        if req.per_node.is_some() {
            return invalid("--socket-mem cannot be combined with --no-huge (there are no per-node hugepages to count)");
        }
        if req.huge_dir.is_some() {
            return invalid("--huge-dir cannot be combined with --no-huge");
        }
        if req.page_size.is_some() {
            return invalid("a hugepage size cannot be combined with --no-huge");
        }
        let backing = if req.in_memory {
            Backing::Memfd { page_size: None }
        } else {
            Backing::Shm {
                dir: PathBuf::from("/dev/shm"),
            }
        };
        let notice = format!(
            "--no-huge: using {} with 4 KiB pages, not hugepages",
            if req.in_memory { "a memfd" } else { "/dev/shm" }
        );
        return Ok(BackingChoice {
            backing,
            notice: Some(notice),
        });
    }
    if req.in_memory && req.huge_dir.is_some() {
        return invalid(
            "--huge-dir cannot be combined with --in-memory (memfds live in no directory)",
        );
    }
    if let Some(ps) = req.page_size {
        if info.size(ps).is_none() {
            return Err(HugememError::UnknownPageSize {
                page_size: ps,
                supported: info.supported_sizes(),
            });
        }
    }

    if let Some(dir) = req.huge_dir {
        if !dir.is_dir() {
            return Err(HugememError::io(
                format!("--huge-dir {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let m = info
            .mount_containing(dir)
            .ok_or_else(|| HugememError::NotHugetlbfs {
                path: dir.to_path_buf(),
            })?;
        if let Some(ps) = req.page_size {
            if ps != m.page_size {
                return invalid(&format!(
                    "{} holds {} pages but {} pages were asked for",
                    dir.display(),
                    fmt_size(m.page_size),
                    fmt_size(ps)
                ));
            }
        }
        if !m.writable || !dir_writable(dir) {
            return Err(HugememError::NotWritable {
                path: dir.to_path_buf(),
            });
        }
        let s = info
            .size(m.page_size)
            .ok_or_else(|| HugememError::UnknownPageSize {
                page_size: m.page_size,
                supported: info.supported_sizes(),
            })?;
        check_pages(s, req)?;
        return Ok(BackingChoice {
            backing: Backing::Hugetlbfs {
                dir: dir.to_path_buf(),
                page_size: m.page_size,
            },
            notice: None,
        });
    }

    // Candidate sizes: the one asked for, or the default size first, then the others.
    let mut candidates: Vec<&PageSizeInfo> = match req.page_size {
        Some(ps) => info.size(ps).into_iter().collect(),
        None => info.sizes.iter().collect(),
    };
    candidates.sort_by_key(|s| (Some(s.page_size) != info.default_page_size, s.page_size));
    let has_pages = |s: &PageSizeInfo| s.total + s.surplus > 0;
    let usable: Vec<&PageSizeInfo> = candidates
        .iter()
        .copied()
        .filter(|s| has_pages(s) && (req.in_memory || info.mount_for(s.page_size).is_some()))
        .collect();

    if usable.is_empty() {
        if let Some(ps) = req.page_size {
            let s = info.size(ps).expect("checked above");
            if !has_pages(s) {
                let needed = req_pages(s.page_size, req).max(1);
                return Err(not_enough(ps, None, needed, 0, s.total));
            }
            return Err(HugememError::NoMount { page_size: ps });
        }
        let reason = if !info.sizes.iter().any(has_pages) {
            let counts: Vec<String> = info
                .sizes
                .iter()
                .map(|s| format!("{}: {}", fmt_size(s.page_size), s.total))
                .collect();
            if counts.is_empty() {
                "this kernel offers no hugepages".to_string()
            } else {
                format!("no hugepages are reserved ({})", counts.join(", "))
            }
        } else {
            let with: Vec<String> = info
                .sizes
                .iter()
                .filter(|s| has_pages(s))
                .map(|s| format!("{} x {}", s.total, fmt_size(s.page_size)))
                .collect();
            format!(
                "hugepages are reserved ({}) but no hugetlbfs mount of that size is writable by this process",
                with.join(", ")
            )
        };
        let ps = info.default_page_size.unwrap_or(2 << 20);
        let (backing, what) = if req.in_memory {
            (Backing::Memfd { page_size: None }, "a plain memfd")
        } else {
            (
                Backing::Shm {
                    dir: PathBuf::from("/dev/shm"),
                },
                "/dev/shm",
            )
        };
        // Suggest only what is missing: pages of the default size, and (for files) a hugetlbfs
        // mount of that size; one that exists but that this process may not write is root's.
        let need_pages = info.size(ps).is_none_or(|s| !has_pages(s));
        let existing_mount = info.mounts.iter().find(|m| m.page_size == ps);
        let need_mount = !req.in_memory && existing_mount.is_none();
        let mut command = String::new();
        if need_pages {
            command.push_str(&format!(
                " --reserve {} --pagesize {}",
                short_size(req.bytes.max(64 << 20).div_ceil(ps) * ps),
                short_size(ps)
            ));
        }
        if need_mount {
            // /dev/hugepages may already hold a mount of another page size.
            let taken = info
                .mounts
                .iter()
                .any(|m| m.path == Path::new("/dev/hugepages"));
            let dir = if taken {
                format!("/dev/hugepages-{}", short_size(ps))
            } else {
                "/dev/hugepages".to_string()
            };
            if !need_pages {
                command.push_str(&format!(" --pagesize {}", short_size(ps)));
            }
            command.push_str(&format!(" --mount {dir}"));
        }
        let hint = if command.is_empty() {
            match existing_mount {
                Some(m) if !req.in_memory => format!(
                    "run as root (the hugetlbfs mount {} is not writable by this process), or give \
                     --huge-dir a hugetlbfs mount this process may write",
                    m.path.display()
                ),
                _ => "run as root".to_string(),
            }
        } else {
            format!("run as root `cargo xtask hugepages{command}`")
        };
        let notice = format!(
            "falling back to {what} with 4 KiB pages because {reason}; for hugepages {hint}"
        );
        return Ok(BackingChoice {
            backing,
            notice: Some(notice),
        });
    }

    let mut first_err = None;
    for s in usable {
        match check_pages(s, req) {
            Ok(()) => {
                let backing = if req.in_memory {
                    Backing::Memfd {
                        page_size: Some(s.page_size),
                    }
                } else {
                    let m = info
                        .mount_for(s.page_size)
                        .expect("usable sizes have a mount");
                    Backing::Hugetlbfs {
                        dir: m.path.clone(),
                        page_size: s.page_size,
                    }
                };
                return Ok(BackingChoice {
                    backing,
                    notice: None,
                });
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.expect("at least one usable size was tried"))
}

/// Pages of `page_size` needed by the request in total.
fn req_pages(page_size: u64, req: &BackingRequest<'_>) -> u64 {
    let per_node: u64 = req
        .per_node
        .unwrap_or(&[])
        .iter()
        .map(|b| b.div_ceil(page_size))
        .sum();
    req.bytes.div_ceil(page_size).max(per_node)
}

/// The pre-flight check: enough free pages per node and in total.
fn check_pages(s: &PageSizeInfo, req: &BackingRequest<'_>) -> Result<(), HugememError> {
    let ps = s.page_size;
    if let Some(per_node) = req.per_node {
        for (node, &b) in per_node.iter().enumerate() {
            if b == 0 {
                continue;
            }
            let node = node as u32;
            let np = s.node(node).ok_or_else(|| HugememError::NoSuchNode {
                node,
                page_size: ps,
                present: s
                    .per_node
                    .iter()
                    .map(|n| n.node.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            let need = b.div_ceil(ps);
            if np.free < need {
                return Err(not_enough(ps, Some(node), need, np.free, np.total));
            }
        }
    }
    let needed = req_pages(ps, req);
    if s.available() < needed {
        return Err(not_enough(ps, None, needed, s.available(), s.total));
    }
    Ok(())
}

/// The segment source for a backing.
pub fn source_for(backing: &Backing) -> Box<dyn SegmentSource + Send + Sync> {
    match backing {
        Backing::Hugetlbfs { dir, page_size } => Box::new(Hugetlbfs::new(dir, *page_size)),
        Backing::Shm { dir } => Box::new(ShmFallback::in_dir(dir)),
        Backing::Memfd { page_size } => Box::new(Memfd::new(*page_size)),
    }
}
