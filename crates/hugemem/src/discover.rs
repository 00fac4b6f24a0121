//! Discovery: what hugepage memory the machine has.
//!
//! The parsing is done by pure functions over text (`/proc/meminfo`, `/proc/mounts`, the
//! counter files of `/sys/kernel/mm/hugepages`), so it is unit-tested with captured samples;
//! [`HugepageInfo::discover`] reads the real files and assembles the result.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::HugememError;

/// Where the kernel publishes hugepage pools per page size.
pub const SYS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";
/// Where the kernel publishes NUMA nodes (each with its own `hugepages/` directory).
pub const SYS_NODES: &str = "/sys/devices/system/node";

/// Everything `hugemem` knows about the machine's hugepages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageInfo {
    /// The default hugepage size (`Hugepagesize:` in `/proc/meminfo`), in bytes; `None` on a
    /// kernel without hugetlb support.
    pub default_page_size: Option<u64>,
    /// One entry per page size the kernel offers, smallest first.
    pub sizes: Vec<PageSizeInfo>,
    /// The hugetlbfs mounts, in `/proc/mounts` order.
    pub mounts: Vec<HugetlbfsMount>,
}

/// The pool of one page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSizeInfo {
    /// The page size, in bytes.
    pub page_size: u64,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not in use (`free_hugepages`); some of them may be reserved by mappings.
    pub free: u64,
    /// Free pages already promised to existing shared mappings (`resv_hugepages`).
    pub reserved: u64,
    /// Pages above `nr_hugepages` from overcommit (`surplus_hugepages`).
    pub surplus: u64,
    /// The same per NUMA node (empty on a kernel without NUMA), by node number.
    pub per_node: Vec<NodePages>,
}

/// The pool of one page size on one NUMA node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePages {
    /// The node number.
    pub node: u32,
    /// Pages in the node's pool.
    pub total: u64,
    /// Free pages on the node.
    pub free: u64,
    /// Surplus pages on the node.
    pub surplus: u64,
}

/// A hugetlbfs mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbfsMount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// Its page size (the `pagesize=` option, or the default page size), in bytes.
    pub page_size: u64,
    /// Whether this process may create files there (mounted read-write and permitted).
    pub writable: bool,
}

/// One hugetlbfs line of `/proc/mounts`, before the writability check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point (octal escapes such as `\040` decoded).
    pub path: PathBuf,
    /// The page size: `pagesize=` if present, else the default; `None` when neither is known.
    pub page_size: Option<u64>,
    /// Mounted with `ro`.
    pub read_only: bool,
}

impl PageSizeInfo {
    /// Pages that a new mapping can still get: free minus those promised to other mappings.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }

    /// The pool of `node`, if the node has a directory for this size.
    pub fn node(&self, node: u32) -> Option<&NodePages> {
        self.per_node.iter().find(|n| n.node == node)
    }
}

impl HugepageInfo {
    /// Reads the real files: `/proc/meminfo`, `/sys/kernel/mm/hugepages`,
    /// `/sys/devices/system/node/node*/hugepages` and `/proc/mounts`.
    ///
    /// A kernel without hugetlb support gives an empty `sizes` list, not an error.
    pub fn discover() -> Result<HugepageInfo, HugememError> {
        let meminfo = read_text(Path::new("/proc/meminfo"))?;
        let default_page_size = parse_meminfo_default(&meminfo);
        let sizes = read_sizes(Path::new(SYS_HUGEPAGES), Path::new(SYS_NODES))?;
        let mounts_text = read_text(Path::new("/proc/mounts"))?;
        let entries = parse_mounts(&mounts_text, default_page_size);
        Ok(Self::assemble(default_page_size, sizes, entries, |p| {
            dir_writable(p)
        }))
    }

    /// Builds the result from parsed parts; `writable` decides whether a read-write mount
    /// may be written by this process (`discover` asks the kernel with `access(2)`).
    /// Mounts whose page size is unknown are dropped.
    pub fn assemble(
        default_page_size: Option<u64>,
        mut sizes: Vec<PageSizeInfo>,
        entries: Vec<MountEntry>,
        writable: impl Fn(&Path) -> bool,
    ) -> HugepageInfo {
        sizes.sort_by_key(|s| s.page_size);
        let mounts = entries
            .into_iter()
            .filter_map(|e| {
                let page_size = e.page_size?;
                let writable = !e.read_only && writable(&e.path);
                Some(HugetlbfsMount {
                    path: e.path,
                    page_size,
                    writable,
                })
            })
            .collect();
        HugepageInfo {
            default_page_size,
            sizes,
            mounts,
        }
    }

    /// The pool of `page_size`, if the kernel offers that size.
    pub fn size(&self, page_size: u64) -> Option<&PageSizeInfo> {
        self.sizes.iter().find(|s| s.page_size == page_size)
    }

    /// The first writable hugetlbfs mount of `page_size`.
    pub fn mount_for(&self, page_size: u64) -> Option<&HugetlbfsMount> {
        self.mounts
            .iter()
            .find(|m| m.page_size == page_size && m.writable)
    }

    /// The hugetlbfs mount that contains `dir` (the longest mount point that is a path prefix
    /// of it, on a `/` boundary), as DPDK does for `--huge-dir`.
    pub fn mount_containing(&self, dir: &Path) -> Option<&HugetlbfsMount> {
        self.mounts
            .iter()
            .filter(|m| dir.starts_with(&m.path))
            .max_by_key(|m| m.path.as_os_str().len())
    }

    /// The supported page sizes, formatted for messages ("2 MiB, 1 GiB", or "none").
    pub fn supported_sizes(&self) -> String {
        if self.sizes.is_empty() {
            return "no hugepage sizes (kernel without hugetlb support?)".into();
        }
        self.sizes
            .iter()
            .map(|s| fmt_size(s.page_size))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether this process may create files in `dir` (write and search permission).
pub(crate) fn dir_writable(dir: &Path) -> bool {
    use rustix::fs::{access, Access};
    access(dir, Access::WRITE_OK | Access::EXEC_OK).is_ok()
}

pub(crate) fn read_text(path: &Path) -> Result<String, HugememError> {
    fs::read_to_string(path).map_err(|e| HugememError::io(format!("read {}", path.display()), e))
}

/// Reads a counter file such as `free_hugepages`.
pub(crate) fn read_counter(path: &Path) -> Result<u64, HugememError> {
    parse_counter(&read_text(path)?, path)
}

/// Parses a sysfs counter (a decimal number and a newline).
pub fn parse_counter(text: &str, file: &Path) -> Result<u64, HugememError> {
    text.trim().parse().map_err(|_| HugememError::Parse {
        file: file.to_path_buf(),
        detail: format!("expected a decimal count, found {:?}", text.trim()),
    })
}

/// The `Hugepagesize:` line of `/proc/meminfo`, in bytes.
///
/// ```
/// let text = "MemTotal: 1000 kB\nHugepagesize:       2048 kB\n";
/// assert_eq!(hugemem::parse_meminfo_default(text), Some(2 << 20));
/// ```
pub fn parse_meminfo_default(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("Hugepagesize:")?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => Some(n * 1024),
            _ => None,
        }
    })
}

/// The page size named by a `/sys/kernel/mm/hugepages` entry such as `hugepages-2048kB`.
///
/// ```
/// assert_eq!(hugemem::parse_size_dir_name("hugepages-1048576kB"), Some(1 << 30));
/// assert_eq!(hugemem::parse_size_dir_name("demote"), None);
/// ```
pub fn parse_size_dir_name(name: &str) -> Option<u64> {
    let kb: u64 = name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    (kb > 0).then_some(kb * 1024)
}

/// The hugetlbfs lines of `/proc/mounts`; `default_page_size` applies to mounts without a
/// `pagesize=` option.
pub fn parse_mounts(text: &str, default_page_size: Option<u64>) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _source = f.next()?;
            let path = f.next()?;
            let fstype = f.next()?;
            let opts = f.next().unwrap_or("");
            if fstype != "hugetlbfs" {
                return None;
            }
            let mut page_size = None;
            let mut read_only = false;
            for o in opts.split(',') {
                if o == "ro" {
                    read_only = true;
                } else if let Some(v) = o.strip_prefix("pagesize=") {
                    page_size = parse_size(v).ok();
                }
            }
            Some(MountEntry {
                path: PathBuf::from(unescape_mount_path(path)),
                page_size: page_size.or(default_page_size),
                read_only,
            })
        })
        .collect()
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash)
/// that `/proc/mounts` uses in paths.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads every page size under `hugepages_dir` (normally `/sys/kernel/mm/hugepages`), with
/// its per-node pools under `nodes_dir` (normally `/sys/devices/system/node`).
///
/// A missing `hugepages_dir` (no hugetlb support) gives an empty list; a missing `nodes_dir`
/// (no NUMA) gives empty `per_node` lists.
pub fn read_sizes(
    hugepages_dir: &Path,
    nodes_dir: &Path,
) -> Result<Vec<PageSizeInfo>, HugememError> {
    let mut sizes = Vec::new();
    let rd = match fs::read_dir(hugepages_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sizes),
        Err(e) => {
            return Err(HugememError::io(
                format!("list {}", hugepages_dir.display()),
                e,
            ))
        }
    };
    let nodes = list_nodes(nodes_dir)?;
    for ent in rd {
        let ent =
            ent.map_err(|e| HugememError::io(format!("list {}", hugepages_dir.display()), e))?;
        let name = ent.file_name();
        let Some(page_size) = name.to_str().and_then(parse_size_dir_name) else {
            continue;
        };
        let d = ent.path();
        let mut per_node = Vec::new();
        for &node in &nodes {
            let nd = nodes_dir
                .join(format!("node{node}"))
                .join("hugepages")
                .join(&name);
            if !nd.is_dir() {
                continue;
            }
            per_node.push(NodePages {
                node,
                total: read_counter(&nd.join("nr_hugepages"))?,
                free: read_counter(&nd.join("free_hugepages"))?,
                surplus: read_counter(&nd.join("surplus_hugepages"))?,
            });
        }
        sizes.push(PageSizeInfo {
            page_size,
            total: read_counter(&d.join("nr_hugepages"))?,
            free: read_counter(&d.join("free_hugepages"))?,
            reserved: read_counter(&d.join("resv_hugepages"))?,
            surplus: read_counter(&d.join("surplus_hugepages"))?,
            per_node,
        });
    }
    sizes.sort_by_key(|s| s.page_size);
    Ok(sizes)
}

/// The node numbers under `nodes_dir` (`node0`, `node1`, ...), sorted.
pub(crate) fn list_nodes(nodes_dir: &Path) -> Result<Vec<u32>, HugememError> {
    let mut nodes = Vec::new();
    let rd = match fs::read_dir(nodes_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(nodes),
        Err(e) => return Err(HugememError::io(format!("list {}", nodes_dir.display()), e)),
    };
    for ent in rd.flatten() {
        if let Some(n) = ent
            .file_name()
            .to_str()
            .and_then(|s| s.strip_prefix("node"))
            .and_then(|s| s.parse::<u32>().ok())
        {
            nodes.push(n);
        }
    }
    nodes.sort_unstable();
    Ok(nodes)
}

/// The sysfs directory of the pool of `page_size` (global, or of `node`).
pub fn pool_dir(page_size: u64, node: Option<u32>) -> PathBuf {
    let name = format!("hugepages-{}kB", page_size / 1024);
    match node {
        None => Path::new(SYS_HUGEPAGES).join(name),
        Some(n) => Path::new(SYS_NODES)
            .join(format!("node{n}"))
            .join("hugepages")
            .join(name),
    }
}

/// Parses a size such as `2M`, `1G`, `2048k`, `2048kB`, `512MiB` or `4096` into bytes.
///
/// ```
/// assert_eq!(hugemem::parse_size("2M").unwrap(), 2 << 20);
/// assert_eq!(hugemem::parse_size("1G").unwrap(), 1 << 30);
/// assert_eq!(hugemem::parse_size("2048kB").unwrap(), 2 << 20);
/// assert!(hugemem::parse_size("2X").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, HugememError> {
    let bad = |detail: &str| HugememError::BadSize {
        text: text.to_string(),
        detail: detail.to_string(),
    };
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad("no number"));
    }
    let n: u64 = t[..digits_end]
        .parse()
        .map_err(|_| bad("number too large"))?;
    let unit = t[digits_end..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    n.checked_mul(mult).ok_or_else(|| bad("too large"))
}

/// Formats a byte count the way people write page sizes: `4 KiB`, `2 MiB`, `1 GiB`, or bytes.
pub fn fmt_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (m, u) in UNITS {
        if bytes >= m && bytes % m == 0 {
            return format!("{} {u}", bytes / m);
        }
    }
    format!("{bytes} B")
}

/// A size in the short form `cargo xtask hugepages` and `mount -o pagesize=` accept (`2M`, `1G`).
pub fn short_size(bytes: u64) -> String {
    for (m, u) in [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")] {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{u}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests;
