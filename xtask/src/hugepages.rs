//! `cargo xtask hugepages`: show the machine's hugepages; as root, reserve, mount, unmount and
//! clear them (like DPDK's `dpdk-hugepages.py`).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hugemem::{admin, fmt_size, parse_size, short_size, HugepageInfo};

/// Arguments of `cargo xtask hugepages`.
///
/// Actions run in this order: `--unmount`, `--clear`, `--reserve`, `--mount`; then the
/// table is shown.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ADD this much memory in hugepages to the pool, e.g. 512M or 2G (root). The pages stay
    /// reserved after the command; give them back with --clear.
    #[arg(long, value_name = "SIZE")]
    reserve: Option<String>,
    /// The page size for --reserve and --mount, e.g. 2M or 1G (default: the kernel's default).
    #[arg(long, value_name = "SIZE")]
    pagesize: Option<String>,
    /// Reserve on this NUMA node only (default: the kernel spreads them).
    #[arg(long, value_name = "N")]
    node: Option<u32>,
    /// Mount a private hugetlbfs (mode 0700) of the page size at DIR, creating DIR (root).
    #[arg(long, value_name = "DIR")]
    mount: Option<PathBuf>,
    /// Unmount the hugetlbfs at DIR (root); files left in it are destroyed. A directory that
    /// --mount created is removed too.
    #[arg(long, value_name = "DIR")]
    unmount: Option<PathBuf>,
    /// Give back every hugepage: set nr_hugepages to 0 for every page size (root). Pages still
    /// used by files in hugetlbfs mounts stay (as surplus) until those files are removed.
    #[arg(long)]
    clear: bool,
    /// Remove the stale segment files (`<PREFIX>map_<N>` that no live process holds) of this
    /// prefix from every hugetlbfs mount and /dev/shm. Other prefixes and live files are never
    /// touched.
    #[arg(long, value_name = "PREFIX")]
    remove_stale: Option<String>,
}

/// Entry point.
pub fn main(a: Args) -> Result<()> {
    let info = HugepageInfo::discover().context("reading the machine's hugepages")?;
    let acting = a.reserve.is_some() || a.mount.is_some() || a.unmount.is_some() || a.clear;
    if acting && !admin::is_root() {
        print_table(&info);
        bail!(
            "this needs root: --reserve and --clear write /sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages \
             (or the per-node file under /sys/devices/system/node/node<N>/hugepages), and --mount/--unmount call \
             mount(2)/umount(2). Rerun as root, e.g. `sudo -E cargo xtask hugepages ...` (-E keeps your cargo/rustup)"
        );
    }
    let page_size = match &a.pagesize {
        Some(s) => parse_size(s)?,
        None => info.default_page_size.context(
            "this kernel has no default hugepage size (no hugetlb support?); give --pagesize",
        )?,
    };
    if (a.reserve.is_some() || a.mount.is_some()) && info.size(page_size).is_none() {
        bail!(
            "unknown page size {}: this machine offers {}",
            fmt_size(page_size),
            info.supported_sizes()
        );
    }
    if a.node.is_some() && a.reserve.is_none() {
        bail!("--node only applies to --reserve");
    }

    if let Some(dir) = &a.unmount {
        admin::unmount(dir)?;
        if dir.exists() {
            println!("unmounted {}", dir.display());
        } else {
            println!(
                "unmounted {} and removed the directory (--mount had created it)",
                dir.display()
            );
        }
    }
    if a.clear {
        for s in &info.sizes {
            let before = admin::set_pages(s.page_size, 0, None)?;
            let now = HugepageInfo::discover()?;
            let after = now
                .size(s.page_size)
                .map(|n| (n.total, n.surplus))
                .unwrap_or((0, 0));
            print!(
                "{}: nr_hugepages {before} -> {}",
                fmt_size(s.page_size),
                after.0
            );
            if after.1 > 0 {
                print!(
                    " ({} pages still in use stay as surplus until their files are removed)",
                    after.1
                );
            }
            println!();
        }
    }
    if let Some(size) = &a.reserve {
        let bytes = parse_size(size)?;
        if bytes == 0 {
            bail!("--reserve 0 reserves nothing; give a size such as 512M");
        }
        let pages = bytes.div_ceil(page_size);
        let before = HugepageInfo::discover()?
            .size(page_size)
            .map(|s| s.total)
            .unwrap_or(0);
        let r = admin::reserve_pages(page_size, pages, a.node)?;
        let added = r.keep();
        let after = HugepageInfo::discover()?
            .size(page_size)
            .map(|s| s.total)
            .unwrap_or(0);
        println!(
            "added {added} x {} pages{} ({}): nr_hugepages {before} -> {after}",
            fmt_size(page_size),
            a.node.map(|n| format!(" on node {n}")).unwrap_or_default(),
            fmt_size(added * page_size),
        );
    }
    if let Some(dir) = &a.mount {
        let m = admin::mount_private(dir, page_size)?;
        let p = m.keep();
        println!(
            "mounted hugetlbfs ({} pages, mode 0700) on {}; unmount with `cargo xtask hugepages --unmount {}`",
            short_size(page_size),
            p.display(),
            p.display()
        );
    }
    if let Some(prefix) = &a.remove_stale {
        let mut dirs: Vec<PathBuf> = info.mounts.iter().map(|m| m.path.clone()).collect();
        dirs.push(PathBuf::from("/dev/shm"));
        for d in dirs {
            match hugemem::remove_stale(&d, prefix) {
                Ok(v) if v.is_empty() => println!("{}: no stale {prefix}map_* files", d.display()),
                Ok(v) => {
                    for f in v {
                        println!("removed stale {}", f.display());
                    }
                }
                Err(e) => println!("{}: {e}", d.display()),
            }
        }
    }
    let info = if acting {
        HugepageInfo::discover()?
    } else {
        info
    };
    print_table(&info);
    if !acting && !admin::is_root() {
        println!(
            "\nNot root: showing only. As root this command can --reserve SIZE [--pagesize 2M] [--node N], \
             --mount DIR, --unmount DIR and --clear."
        );
    }
    Ok(())
}

fn print_table(info: &HugepageInfo) {
    let default = info
        .default_page_size
        .map(fmt_size)
        .unwrap_or_else(|| "none".into());
    println!("Hugepage pools (default page size {default}):");
    if info.sizes.is_empty() {
        println!("  (none: this kernel offers no hugepages)");
    } else {
        println!(
            "  {:<8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>12}",
            "size", "total", "free", "reserved", "surplus", "available", "memory"
        );
        for s in &info.sizes {
            println!(
                "  {:<8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>12}",
                fmt_size(s.page_size),
                s.total,
                s.free,
                s.reserved,
                s.surplus,
                s.available(),
                if s.total == 0 {
                    "0".to_string()
                } else {
                    fmt_size(s.total * s.page_size)
                },
            );
        }
    }
    let any_nodes = info.sizes.iter().any(|s| !s.per_node.is_empty());
    if any_nodes {
        println!("\nPer NUMA node:");
        println!(
            "  {:<5} {:<8} {:>8} {:>8} {:>8}",
            "node", "size", "total", "free", "surplus"
        );
        for s in &info.sizes {
            for n in &s.per_node {
                println!(
                    "  {:<5} {:<8} {:>8} {:>8} {:>8}",
                    n.node,
                    fmt_size(s.page_size),
                    n.total,
                    n.free,
                    n.surplus
                );
            }
        }
    }
    println!("\nHugetlbfs mounts:");
    if info.mounts.is_empty() {
        println!(
            "  (none: as root, `cargo xtask hugepages --mount /dev/hugepages --pagesize {}`)",
            short_size(info.default_page_size.unwrap_or(2 << 20))
        );
    } else {
        println!(
            "  {:<40} {:<9} {:<8} {:>6}",
            "path", "pages", "writable", "files"
        );
        for m in &info.mounts {
            let files = std::fs::read_dir(&m.path)
                .map(|d| d.count().to_string())
                .unwrap_or_else(|_| "?".into());
            println!(
                "  {:<40} {:<9} {:<8} {:>6}",
                m.path.display(),
                fmt_size(m.page_size),
                if m.writable { "yes" } else { "no" },
                files
            );
        }
    }
}
