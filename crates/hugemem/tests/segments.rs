//! Segments in one process: hugepage backing proved through /proc/self/smaps, the fallback to
//! /dev/shm with its notice, memfds, fixed addresses in a window, and bad input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use common::{HugeEnv, ShmDir, MIB2};
use hugemem::{
    choose_backing, source_for, Backing, BackingKind, BackingRequest, HugememError, HugepageInfo,
    Hugetlbfs, MapOptions, Memfd, Segment, SegmentSource, SegmentSpec, ShmFallback, VaWindow,
};

fn spec(prefix: &str, index: u32, len: u64) -> SegmentSpec<'_> {
    SegmentSpec {
        prefix,
        index,
        len,
        pow2: false,
        map: MapOptions::default(),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn hugetlbfs_segment_is_backed_by_2mib_kernel_pages() {
    let Some(env) = HugeEnv::setup("smaps2m", 4) else {
        return;
    };
    let info = HugepageInfo::discover().unwrap();
    // Our private mount is discovered, with its page size, as writable.
    let m = info
        .mount_containing(&env.dir)
        .expect("private mount discovered");
    assert_eq!((m.page_size, m.writable), (MIB2, true));
    let choice = choose_backing(
        &info,
        &BackingRequest {
            huge_dir: Some(&env.dir),
            bytes: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        choice.backing,
        Backing::Hugetlbfs {
            dir: env.dir.clone(),
            page_size: MIB2
        }
    );
    assert_eq!(choice.notice, None);
    let source = source_for(&choice.backing);
    assert_eq!(
        (source.kind(), source.page_size()),
        (BackingKind::Hugetlbfs, MIB2)
    );

    let before = env.available_pages();
    let seg = source.create(&spec("smaps_", 0, 4 << 20)).unwrap();
    assert_eq!(
        before - env.available_pages(),
        2,
        "a shared hugetlbfs mapping reserves its pages"
    );
    assert_eq!(
        (seg.len(), seg.page_size(), seg.kind()),
        (4 << 20, MIB2, BackingKind::Hugetlbfs)
    );
    let path = env.dir.join("smaps_map_0");
    assert_eq!(seg.path(), Some(path.as_path()));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    seg.atomic_u64(0).store(0xfeed, Ordering::Relaxed);
    seg.atomic_u64(seg.len() - 8)
        .store(0xbeef, Ordering::Relaxed);
    // The proof: the kernel maps it with 2048 kB pages.
    assert_eq!(seg.smaps_kernel_page_size(), Some(2048 * 1024));
    // As root, the physical address of a touched hugepage is readable and 2 MiB aligned at
    // the start of the segment.
    match hugemem::phys_addr(seg.as_ptr()) {
        Ok(pa) => assert_eq!(pa % MIB2, 0, "hugepage physical address {pa:#x}"),
        Err(e) => {
            assert!(!hugemem::admin::is_root(), "root should read pagemap: {e}");
            assert!(
                matches!(e, hugemem::PhysAddrUnavailable::NotPermitted),
                "{e}"
            );
        }
    }
    // Creating it again: the file exists and is held by a live process (us).
    let e = source.create(&spec("smaps_", 0, 4 << 20)).unwrap_err();
    assert!(
        matches!(e, HugememError::SegmentExists { live: true, .. }),
        "{e}"
    );
    seg.remove().unwrap();
    assert!(!path.exists());
    assert_eq!(
        env.available_pages(),
        before,
        "pages come back after remove"
    );
}

#[test]
fn hugetlbfs_bad_input_leaves_nothing_behind() {
    let Some(env) = HugeEnv::setup("badinput", 2) else {
        return;
    };
    let src = Hugetlbfs::new(&env.dir, MIB2);
    // Not a page multiple.
    let e = src.create(&spec("bad_", 0, 3 << 20)).unwrap_err();
    assert!(
        matches!(e, HugememError::NotPageMultiple { len, page_size: MIB2 } if len == 3 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("round it up to 4194304"), "{e}");
    // Too many pages: the pre-flight check names needed, free and the command.
    let avail = env.available_pages();
    let e = src
        .create(&spec("bad_", 1, (avail + 1) * MIB2))
        .unwrap_err();
    match &e {
        HugememError::NotEnoughPages {
            needed,
            free,
            command,
            ..
        } => {
            assert_eq!((*needed, *free), (avail + 1, avail));
            assert!(
                command.contains("cargo xtask hugepages --reserve 2M --pagesize 2M"),
                "{command}"
            );
        }
        e => panic!("unexpected {e}"),
    }
    // pow2 rounds 3 pages up to 4, which do not fit in the 2 free pages we own if nothing
    // else is free; 1.5 pages round to 2 and fit.
    let mut s = spec("bad_", 2, 3 << 20);
    s.pow2 = true;
    let seg = src.create(&s).unwrap();
    assert_eq!(seg.len(), 4 << 20);
    drop(seg);
    std::fs::remove_file(env.dir.join("bad_map_2")).unwrap();
    // A bad prefix.
    let e = src.create(&spec("../evil", 0, MIB2)).unwrap_err();
    assert!(matches!(e, HugememError::BadPrefix { .. }), "{e}");
    // Wrong page size for the directory.
    let e = Hugetlbfs::new(&env.dir, 1 << 30)
        .create(&spec("bad_", 3, 1 << 30))
        .unwrap_err();
    assert!(
        matches!(
            e,
            HugememError::NotEnoughPages { .. } | HugememError::InvalidRequest { .. }
        ),
        "{e}"
    );
    // Not a hugetlbfs directory.
    let shm = ShmDir::new("nothuge");
    let e = Hugetlbfs::new(shm.path(), MIB2)
        .create(&spec("bad_", 4, MIB2))
        .unwrap_err();
    assert!(matches!(e, HugememError::NotHugetlbfs { .. }), "{e}");
    assert_eq!(
        files_in(&env.dir),
        Vec::<String>::new(),
        "nothing left behind"
    );
}

#[test]
fn hugetlbfs_segment_at_a_fixed_address_in_a_window() {
    let Some(env) = HugeEnv::setup("fixed", 2) else {
        return;
    };
    let w = VaWindow::reserve(64 << 20, None).unwrap();
    let addr = w.base() + (4 << 20);
    let mut s = spec("fixed_", 0, 2 * MIB2);
    s.map = MapOptions {
        populate: true,
        addr: Some(addr),
    };
    let seg = Hugetlbfs::new(&env.dir, MIB2).create(&s).unwrap();
    assert_eq!(seg.as_ptr().addr(), addr);
    assert_eq!(seg.smaps_kernel_page_size(), Some(2048 * 1024));
    // A second process-local mapping of the same file at another fixed address, by path.
    let other = Segment::open_path(
        seg.path().unwrap(),
        &MapOptions {
            populate: false,
            addr: Some(w.base() + (16 << 20)),
        },
    )
    .unwrap();
    seg.atomic_u64(4096).store(77, Ordering::Release);
    assert_eq!(other.atomic_u64(4096).load(Ordering::Acquire), 77);
    // Unaligned for 2 MiB pages.
    let e = Segment::open_path(
        seg.path().unwrap(),
        &MapOptions {
            populate: false,
            addr: Some(w.base() + 4096),
        },
    )
    .unwrap_err();
    assert!(matches!(e, HugememError::Unaligned { .. }), "{e}");
    drop(other);
    seg.remove().unwrap();
    drop(w);
    assert_eq!(files_in(&env.dir), Vec::<String>::new());
}

#[test]
fn falls_back_to_dev_shm_with_a_notice_when_no_hugepages_are_usable() {
    let real = HugepageInfo::discover().unwrap();
    // The machine's own pools, but no hugetlbfs mount we may write: no usable hugepages.
    let mut no_mount = real.clone();
    no_mount.mounts.clear();
    // The machine's own mounts, but no pages reserved in any size.
    let mut no_pages = real.clone();
    for s in &mut no_pages.sizes {
        s.total = 0;
        s.free = 0;
        s.surplus = 0;
    }
    let mut cases = vec![("no writable mount", no_mount), ("no pages", no_pages)];
    if real.sizes.iter().all(|s| s.total + s.surplus == 0) {
        eprintln!("this machine has no hugepages reserved: checking the real discovery too");
        cases.push(("this machine", real.clone()));
    }
    for (what, info) in cases {
        let req = BackingRequest {
            bytes: 8 << 20,
            ..Default::default()
        };
        let c = choose_backing(&info, &req).unwrap();
        assert_eq!(
            c.backing,
            Backing::Shm {
                dir: "/dev/shm".into()
            },
            "{what}"
        );
        let notice = c.notice.expect("a fallback always says so");
        assert!(
            notice.contains("falling back to /dev/shm"),
            "{what}: {notice}"
        );
        // It suggests what is missing: pages of the default size, a mount, or both.
        assert!(
            notice.contains("`cargo xtask hugepages "),
            "{what}: {notice}"
        );
        let ps = info.default_page_size.unwrap_or(2 << 20);
        let has_pages = info.size(ps).is_some_and(|s| s.total + s.surplus > 0);
        assert_eq!(notice.contains("--reserve"), !has_pages, "{what}: {notice}");
        assert_eq!(
            notice.contains("--mount"),
            !info.mounts.iter().any(|m| m.page_size == ps),
            "{what}: {notice}"
        );
        // The same API then gives a working /dev/shm segment with ordinary pages.
        let src = source_for(&c.backing);
        assert_eq!(src.kind(), BackingKind::Shm);
        let prefix = format!("fallback{}_", std::process::id());
        let seg = src.create(&spec(&prefix, 0, 8 << 20)).unwrap();
        assert!(seg.path().unwrap().starts_with("/dev/shm"));
        assert_eq!(seg.smaps_kernel_page_size(), Some(4096), "{what}");
        seg.atomic_u64(0).store(1, Ordering::Relaxed);
        seg.remove().unwrap();
        // In memory: memfds need no mount, so only "no pages" falls back to a plain memfd.
        let in_mem = BackingRequest {
            in_memory: true,
            bytes: 0,
            ..req
        };
        let c = choose_backing(&info, &in_mem).unwrap();
        if info.sizes.iter().any(|s| s.total + s.surplus > 0) {
            assert!(
                matches!(c.backing, Backing::Memfd { page_size: Some(_) }),
                "{what}: {c:?}"
            );
            assert_eq!(c.notice, None, "{what}");
        } else {
            assert_eq!(c.backing, Backing::Memfd { page_size: None }, "{what}");
            assert!(c.notice.unwrap().contains("falling back to a plain memfd"));
        }
    }
}

#[test]
fn hugetlb_memfd_segment() {
    let Some(_env) = HugeEnv::setup("memfd", 2) else {
        return;
    };
    let seg = Memfd::new(Some(MIB2))
        .create(&spec("memfd_", 0, 2 * MIB2))
        .unwrap();
    assert_eq!(
        (seg.kind(), seg.page_size(), seg.path()),
        (BackingKind::Memfd, MIB2, None)
    );
    assert_eq!(seg.smaps_kernel_page_size(), Some(2048 * 1024));
    seg.atomic_u64(8).store(5, Ordering::Relaxed);
    // The descriptor is a memfd: reopening it by descriptor in this process maps the same pages.
    let again =
        Segment::open_fd(rustix::io::dup(seg.fd()).unwrap(), &MapOptions::default()).unwrap();
    assert_eq!(
        (again.kind(), again.page_size(), again.len()),
        (BackingKind::Memfd, MIB2, seg.len())
    );
    assert_eq!(again.atomic_u64(8).load(Ordering::Relaxed), 5);
}

#[test]
fn plain_memfd_and_shm_segments() {
    let seg = Memfd::new(None)
        .create(&spec("plain_", 0, 1 << 20))
        .unwrap();
    assert_eq!((seg.kind(), seg.page_size()), (BackingKind::Memfd, 4096));
    assert_eq!(seg.smaps_kernel_page_size(), Some(4096));
    let dir = ShmDir::new("plain");
    let src = ShmFallback::in_dir(dir.path());
    let mut s = spec("plain_", 7, 5000);
    let e = src.create(&s).unwrap_err();
    assert!(
        matches!(
            e,
            HugememError::NotPageMultiple {
                len: 5000,
                page_size: 4096
            }
        ),
        "{e}"
    );
    s.pow2 = true;
    s.map.populate = true;
    let seg = src.create(&s).unwrap();
    assert_eq!(seg.len(), 8192);
    assert_eq!(files_in(dir.path()), vec!["plain_map_7".to_string()]);
    // Too big for the tmpfs: a clean error, nothing left behind.
    let e = src.create(&spec("plain_", 8, 1 << 50)).unwrap_err();
    assert!(matches!(e, HugememError::NotEnoughSpace { .. }), "{e}");
    seg.remove().unwrap();
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn existing_files_symlinks_and_stale_files_are_refused_with_the_reason() {
    let dir = ShmDir::new("exists");
    let src = ShmFallback::in_dir(dir.path());
    // A stale file (nobody holds it).
    std::fs::write(dir.path().join("ex_map_0"), b"").unwrap();
    let e = src.create(&spec("ex_", 0, 4096)).unwrap_err();
    assert!(
        matches!(e, HugememError::SegmentExists { live: false, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("remove_stale"), "{e}");
    // A symlink in the segment's place is never followed.
    let target = dir.path().join("target");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("ex_map_1")).unwrap();
    let e = src.create(&spec("ex_", 1, 4096)).unwrap_err();
    assert!(matches!(e, HugememError::SegmentExists { .. }), "{e}");
    let e = Segment::open_path(&dir.path().join("ex_map_1"), &MapOptions::default()).unwrap_err();
    assert!(matches!(e, HugememError::NotRegularFile { .. }), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // remove_stale removes the stale regular file, not the symlink, not other names.
    let removed = hugemem::remove_stale(dir.path(), "ex_").unwrap();
    assert_eq!(removed, vec![dir.path().join("ex_map_0")]);
    assert_eq!(
        files_in(dir.path()),
        vec!["ex_map_1".to_string(), "target".to_string()]
    );
    // Opening a missing segment names the file.
    let e = Segment::open_path(&dir.path().join("ex_map_9"), &MapOptions::default()).unwrap_err();
    assert!(e.to_string().contains("ex_map_9"), "{e}");
}

#[test]
fn fixed_addresses_must_lie_in_a_window_and_not_overlap() {
    let dir = ShmDir::new("window");
    let src = ShmFallback::in_dir(dir.path());
    let w = VaWindow::reserve(1 << 20, None).unwrap();
    assert_eq!(w.base() % hugemem::WINDOW_ALIGN, 0);
    let mut s = spec("win_", 0, 64 << 10);
    s.map.addr = Some(w.base() + (64 << 10));
    let a = src.create(&s).unwrap();
    assert_eq!(a.as_ptr().addr(), w.base() + (64 << 10));
    // Overlapping the first segment.
    s.index = 1;
    s.map.addr = Some(w.base() + (96 << 10));
    let e = src.create(&s).unwrap_err();
    assert!(matches!(e, HugememError::AddressInUse { .. }), "{e}");
    // Outside the window.
    s.map.addr = Some(w.base() + (1 << 20));
    let e = src.create(&s).unwrap_err();
    assert!(matches!(e, HugememError::OutsideWindow { .. }), "{e}");
    assert_eq!(
        files_in(dir.path()),
        vec!["win_map_0".to_string()],
        "failed creations leave nothing"
    );
    // Once the first is gone, its range is a reservation again and can be reused.
    let addr = a.as_ptr().addr();
    a.remove().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let occ = hugemem::maps_occupants(&maps, addr, addr + (64 << 10));
    assert_eq!(occ.len(), 1, "{occ:?}");
    assert!(occ[0].contains("---p"), "the placeholder is back: {occ:?}");
    s.map.addr = Some(addr);
    let b = src.create(&s).unwrap();
    assert_eq!(b.as_ptr().addr(), addr);
    // A window can be asked for at an address: here, right after the first one, if free.
    let hint = w.base() + w.len() + (1 << 30);
    let w2 = VaWindow::reserve(1 << 20, Some(hint)).unwrap();
    assert!(w2.base() == hint || w2.base() % hugemem::WINDOW_ALIGN == 0);
    b.remove().unwrap();
}

/// The `/proc/self/numa_maps` line of the mapping starting at `addr`.
fn numa_maps_line(addr: usize) -> String {
    let text = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{addr:x} ")))
        .unwrap_or_else(|| panic!("no numa_maps line for {addr:#x}"))
        .to_string()
}

#[test]
fn segments_placed_on_a_numa_node() {
    // Ordinary pages: bound to node 0 and populated there.
    let dir = ShmDir::new("numa");
    let mut s = spec("numa_", 0, 64 << 10);
    s.map.populate = true;
    let seg = ShmFallback::in_dir(dir.path())
        .create_on_node(&s, 0)
        .unwrap();
    let l = numa_maps_line(seg.as_ptr().addr());
    assert!(l.contains("bind:0") && l.contains("N0=16"), "{l}");
    s.index = 1;
    let e = ShmFallback::in_dir(dir.path())
        .create_on_node(&s, 4000)
        .unwrap_err();
    assert!(
        matches!(e, HugememError::NoSuchNode { node: 4000, .. }),
        "{e}"
    );
    assert_eq!(files_in(dir.path()), vec!["numa_map_0".to_string()]);
    seg.remove().unwrap();

    let Some(env) = HugeEnv::setup("numa", 4) else {
        return;
    };
    let mut s = spec("numa_", 0, 2 * MIB2);
    s.map.populate = true;
    let seg = Hugetlbfs::new(&env.dir, MIB2)
        .create_on_node(&s, 0)
        .unwrap();
    let l = numa_maps_line(seg.as_ptr().addr());
    assert!(
        l.contains("bind:0")
            && l.contains("huge")
            && l.contains("N0=2")
            && l.contains("kernelpagesize_kB=2048"),
        "{l}"
    );
    let mfd = Memfd::new(Some(MIB2)).create_on_node(&s, 0).unwrap();
    let l = numa_maps_line(mfd.as_ptr().addr());
    assert!(l.contains("bind:0") && l.contains("N0=2"), "{l}");
    // The node's pool is counted by the pre-flight check: 5 pages are more than node 0 has
    // free now (unless someone else reserved many; then the message still names node 0).
    let free0 = std::fs::read_to_string(
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages",
    )
    .unwrap()
    .trim()
    .parse::<u64>()
    .unwrap();
    let e = Hugetlbfs::new(&env.dir, MIB2)
        .create_on_node(&spec("numa_", 1, (free0 + 1) * MIB2), 0)
        .unwrap_err();
    assert!(matches!(e, HugememError::NotEnoughPages { .. }), "{e}");
    seg.remove().unwrap();
    assert_eq!(files_in(&env.dir), Vec::<String>::new());
}
