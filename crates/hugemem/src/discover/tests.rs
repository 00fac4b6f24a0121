//! Unit tests of the discovery parsers, over samples captured from real machines.
use super::*;
use crate::backing::{choose_backing, Backing, BackingRequest};
use crate::error::HugememError;

const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;

/// `/proc/meminfo` of this build machine (hugetlb compiled in, no pages reserved).
const MEMINFO_NO_PAGES: &str = "\
MemTotal:       24684084 kB
MemFree:        23760000 kB
AnonHugePages:         0 kB
ShmemHugePages:        0 kB
FileHugePages:         0 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
";

/// `/proc/meminfo` of a kernel built without CONFIG_HUGETLBFS.
const MEMINFO_NO_HUGETLB: &str = "MemTotal:        2000000 kB\nMemFree:         1000000 kB\n";

/// `/proc/mounts` of a DPDK host: two 2 MiB mounts (one read-only), one 1 GiB mount, and the
/// systemd default mount without a `pagesize=` option (old kernels did not print it).
const MOUNTS_SEVERAL: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0
nodev /mnt/huge hugetlbfs rw,relatime,pagesize=2M 0 0
nodev /mnt/huge-ro hugetlbfs ro,relatime,pagesize=2M 0 0
nodev /mnt/huge_1G hugetlbfs rw,relatime,mode=700,pagesize=1024M 0 0
nodev /mnt/huge\\040space hugetlbfs rw,relatime,pagesize=1G 0 0
";

/// `/proc/mounts` of this build machine: no hugetlbfs at all.
const MOUNTS_NONE: &str = "\
proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24684084k 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
";

#[test]
fn meminfo_default_size() {
    assert_eq!(parse_meminfo_default(MEMINFO_NO_PAGES), Some(MIB2));
    assert_eq!(parse_meminfo_default(MEMINFO_NO_HUGETLB), None);
    assert_eq!(
        parse_meminfo_default("Hugepagesize:    1048576 kB\n"),
        Some(GIB1)
    );
    assert_eq!(parse_meminfo_default("Hugepagesize: lots\n"), None);
}

#[test]
fn size_dir_names() {
    assert_eq!(parse_size_dir_name("hugepages-2048kB"), Some(MIB2));
    assert_eq!(parse_size_dir_name("hugepages-1048576kB"), Some(GIB1));
    assert_eq!(parse_size_dir_name("hugepages-64kB"), Some(64 << 10));
    assert_eq!(parse_size_dir_name("hugepages-0kB"), None);
    assert_eq!(parse_size_dir_name("hugepages-2048"), None);
    assert_eq!(parse_size_dir_name("demote_size"), None);
}

#[test]
fn several_mounts_per_size_and_default_size_for_bare_mounts() {
    let m = parse_mounts(MOUNTS_SEVERAL, Some(MIB2));
    let got: Vec<(&str, Option<u64>, bool)> = m
        .iter()
        .map(|e| (e.path.to_str().unwrap(), e.page_size, e.read_only))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/dev/hugepages", Some(MIB2), false),
            ("/mnt/huge", Some(MIB2), false),
            ("/mnt/huge-ro", Some(MIB2), true),
            ("/mnt/huge_1G", Some(GIB1), false),
            ("/mnt/huge space", Some(GIB1), false),
        ]
    );
    // Without a known default, a bare mount has no page size and is dropped by `assemble`.
    let m = parse_mounts(MOUNTS_SEVERAL, None);
    assert_eq!(m[0].page_size, None);
    let info = HugepageInfo::assemble(None, vec![], m, |_| true);
    assert_eq!(info.mounts.len(), 4);
    assert!(info
        .mounts
        .iter()
        .all(|m| m.path != Path::new("/dev/hugepages")));
}

#[test]
fn no_hugetlbfs_mounts() {
    assert!(parse_mounts(MOUNTS_NONE, Some(MIB2)).is_empty());
}

#[test]
fn mount_for_picks_the_first_writable_mount_of_the_size() {
    let entries = parse_mounts(MOUNTS_SEVERAL, Some(MIB2));
    // Pretend /dev/hugepages is not writable by us (e.g. root-owned 0700 and we are a user).
    let info = HugepageInfo::assemble(Some(MIB2), vec![], entries, |p| {
        p != Path::new("/dev/hugepages")
    });
    assert_eq!(info.mount_for(MIB2).unwrap().path, Path::new("/mnt/huge"));
    assert_eq!(
        info.mount_for(GIB1).unwrap().path,
        Path::new("/mnt/huge_1G")
    );
    assert!(info.mount_for(64 << 10).is_none());
    // The read-only mount is never writable, whatever the access check says.
    assert!(
        !info
            .mounts
            .iter()
            .find(|m| m.path == Path::new("/mnt/huge-ro"))
            .unwrap()
            .writable
    );
    // Longest mount prefix wins, on a component boundary.
    assert_eq!(
        info.mount_containing(Path::new("/mnt/huge_1G/group"))
            .unwrap()
            .path,
        Path::new("/mnt/huge_1G")
    );
    assert!(info.mount_containing(Path::new("/mnt/hugeX")).is_none());
}

#[test]
fn sizes_and_suffixes() {
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("2048k").unwrap(), MIB2);
    assert_eq!(parse_size("1GiB").unwrap(), GIB1);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(matches!(parse_size("M"), Err(HugememError::BadSize { .. })));
    assert!(matches!(
        parse_size("12Q"),
        Err(HugememError::BadSize { .. })
    ));
    assert!(parse_size("99999999999999999999").is_err());
    assert_eq!(fmt_size(MIB2), "2 MiB");
    assert_eq!(fmt_size(GIB1), "1 GiB");
    assert_eq!(fmt_size(4096), "4 KiB");
    assert_eq!(fmt_size(1000), "1000 B");
    assert_eq!(short_size(MIB2), "2M");
    assert_eq!(short_size(GIB1), "1G");
}

/// A fake `/sys` tree in a fresh temporary directory, removed on drop.
struct FakeSys {
    root: PathBuf,
}

impl FakeSys {
    fn new(tag: &str) -> FakeSys {
        let root =
            std::env::temp_dir().join(format!("hugemem-fakesys-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("hugepages")).unwrap();
        fs::create_dir_all(root.join("node")).unwrap();
        FakeSys { root }
    }
    fn hp(&self) -> PathBuf {
        self.root.join("hugepages")
    }
    fn nodes(&self) -> PathBuf {
        self.root.join("node")
    }
    /// Writes the counters of one global pool: nr, free, resv, surplus.
    fn size(&self, kb: u64, c: [u64; 4]) {
        let d = self.hp().join(format!("hugepages-{kb}kB"));
        fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            "nr_hugepages",
            "free_hugepages",
            "resv_hugepages",
            "surplus_hugepages",
        ]
        .iter()
        .zip(c)
        {
            fs::write(d.join(f), format!("{v}\n")).unwrap();
        }
        fs::write(d.join("nr_overcommit_hugepages"), "0\n").unwrap();
    }
    /// Writes the counters of one node's pool: nr, free, surplus.
    fn node(&self, node: u32, kb: u64, c: [u64; 3]) {
        let d = self
            .nodes()
            .join(format!("node{node}/hugepages/hugepages-{kb}kB"));
        fs::create_dir_all(&d).unwrap();
        for (f, v) in ["nr_hugepages", "free_hugepages", "surplus_hugepages"]
            .iter()
            .zip(c)
        {
            fs::write(d.join(f), format!("{v}\n")).unwrap();
        }
    }
}

impl Drop for FakeSys {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn sysfs_without_any_pages() {
    // Captured from this build machine: both sizes offered, nothing reserved, one node.
    let s = FakeSys::new("nopages");
    s.size(2048, [0, 0, 0, 0]);
    s.size(1048576, [0, 0, 0, 0]);
    s.node(0, 2048, [0, 0, 0]);
    s.node(0, 1048576, [0, 0, 0]);
    let sizes = read_sizes(&s.hp(), &s.nodes()).unwrap();
    assert_eq!(
        sizes.iter().map(|s| s.page_size).collect::<Vec<_>>(),
        vec![MIB2, GIB1]
    );
    assert!(sizes
        .iter()
        .all(|s| s.total == 0 && s.free == 0 && s.per_node.len() == 1));
    // With no mounts either, choosing falls back to /dev/shm and says why.
    let info = HugepageInfo::assemble(
        Some(MIB2),
        sizes,
        parse_mounts(MOUNTS_NONE, Some(MIB2)),
        |_| true,
    );
    let c = choose_backing(
        &info,
        &BackingRequest {
            bytes: 64 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Shm {
            dir: "/dev/shm".into()
        }
    );
    let n = c.notice.unwrap();
    assert!(
        n.contains("falling back to /dev/shm") && n.contains("no hugepages are reserved"),
        "{n}"
    );
}

/// The fallback notice suggests only what is missing: never `--mount /dev/hugepages` where a
/// hugetlbfs of that page size is already mounted, never `--reserve` where pages are.
#[test]
fn fallback_notice_suggests_only_what_is_missing() {
    const MOUNT_2M: &str = "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n";
    const MOUNT_1G: &str = "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1G 0 0\n";
    let notice = |pages: u64, mounts: &str, writable: bool| {
        let s = FakeSys::new(&format!("hint{pages}{}{writable}", mounts.len()));
        s.size(2048, [pages, pages, 0, 0]);
        s.node(0, 2048, [pages, pages, 0]);
        let info = HugepageInfo::assemble(
            Some(MIB2),
            read_sizes(&s.hp(), &s.nodes()).unwrap(),
            parse_mounts(mounts, Some(MIB2)),
            |_| writable,
        );
        let req = BackingRequest {
            bytes: 64 << 20,
            ..Default::default()
        };
        choose_backing(&info, &req).unwrap().notice.unwrap()
    };
    // Pages reserved and /dev/hugepages mounted, but not writable here (not root).
    let n = notice(512, MOUNT_2M, false);
    assert!(!n.contains("--mount") && !n.contains("--reserve"), "{n}");
    assert!(n.contains("/dev/hugepages is not writable"), "{n}");
    // No pages, the mount is there: reserve only.
    let n = notice(0, MOUNT_2M, true);
    assert!(n.contains("--reserve 64M --pagesize 2M`"), "{n}");
    assert!(!n.contains("--mount"), "{n}");
    // Pages, no mount at all: mount only.
    let n = notice(512, MOUNTS_NONE, true);
    assert!(
        n.contains("`cargo xtask hugepages --pagesize 2M --mount /dev/hugepages`"),
        "{n}"
    );
    // Neither, and /dev/hugepages holds 1 GiB pages: both, on another directory.
    let n = notice(0, MOUNT_1G, true);
    assert!(
        n.contains("--reserve 64M --pagesize 2M --mount /dev/hugepages-2M`"),
        "{n}"
    );
}

#[test]
fn sysfs_two_nodes_one_with_zero_pages_and_1g_pages() {
    // A two-socket host: 1024 x 2 MiB all on node 0, 4 x 1 GiB split 2/2, node 1 has no 2 MiB.
    let s = FakeSys::new("numa");
    s.size(2048, [1024, 1000, 8, 0]);
    s.size(1048576, [4, 3, 0, 0]);
    s.node(0, 2048, [1024, 1000, 0]);
    s.node(1, 2048, [0, 0, 0]);
    s.node(0, 1048576, [2, 1, 0]);
    s.node(1, 1048576, [2, 2, 0]);
    // Not a node: ignored.
    fs::create_dir_all(s.nodes().join("power")).unwrap();
    let sizes = read_sizes(&s.hp(), &s.nodes()).unwrap();
    let two = &sizes[0];
    assert_eq!(
        (
            two.page_size,
            two.total,
            two.free,
            two.reserved,
            two.available()
        ),
        (MIB2, 1024, 1000, 8, 992)
    );
    assert_eq!(
        two.per_node,
        vec![
            NodePages {
                node: 0,
                total: 1024,
                free: 1000,
                surplus: 0
            },
            NodePages {
                node: 1,
                total: 0,
                free: 0,
                surplus: 0
            }
        ]
    );
    let one = &sizes[1];
    assert_eq!((one.page_size, one.total, one.free), (GIB1, 4, 3));
    assert_eq!(one.node(1).unwrap().free, 2);

    let info = HugepageInfo::assemble(
        Some(MIB2),
        sizes,
        parse_mounts(MOUNTS_SEVERAL, Some(MIB2)),
        |_| true,
    );
    // Default size first: 2 MiB in /dev/hugepages.
    let c = choose_backing(
        &info,
        &BackingRequest {
            bytes: 512 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Hugetlbfs {
            dir: "/dev/hugepages".into(),
            page_size: MIB2
        }
    );
    assert_eq!(c.notice, None);
    // --socket-mem 0,64M: node 1 has no 2 MiB pages, and 1 GiB pages satisfy it instead.
    let per = [0, 64 << 20];
    let c = choose_backing(
        &info,
        &BackingRequest {
            per_node: Some(&per),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Hugetlbfs {
            dir: "/mnt/huge_1G".into(),
            page_size: GIB1
        }
    );
    // ... but asking for 2 MiB pages there fails with the pre-flight message for node 1.
    let e = choose_backing(
        &info,
        &BackingRequest {
            per_node: Some(&per),
            page_size: Some(MIB2),
            ..Default::default()
        },
    )
    .unwrap_err();
    match &e {
        HugememError::NotEnoughPages {
            page_size,
            node,
            needed,
            free,
            command,
        } => {
            assert_eq!((*page_size, *node, *needed, *free), (MIB2, Some(1), 32, 0));
            assert!(
                command.contains("--reserve 64M --pagesize 2M --node 1"),
                "{command}"
            );
        }
        e => panic!("unexpected {e}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("32 needed, 0 free") && msg.contains("node 1"),
        "{msg}"
    );
    // A node that does not exist.
    let per = [0, 0, 2 << 20];
    let e = choose_backing(
        &info,
        &BackingRequest {
            per_node: Some(&per),
            page_size: Some(MIB2),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, HugememError::NoSuchNode { node: 2, .. }), "{e}");
}

#[test]
fn too_few_free_pages_fail_instead_of_falling_back() {
    let s = FakeSys::new("few");
    s.size(2048, [16, 4, 0, 0]);
    let sizes = read_sizes(&s.hp(), &s.nodes()).unwrap();
    assert!(
        sizes[0].per_node.is_empty(),
        "no node directories: no per-node data"
    );
    let info = HugepageInfo::assemble(
        Some(MIB2),
        sizes,
        parse_mounts(MOUNTS_SEVERAL, Some(MIB2)),
        |_| true,
    );
    let e = choose_backing(
        &info,
        &BackingRequest {
            bytes: 64 << 20,
            ..Default::default()
        },
    )
    .unwrap_err();
    match e {
        HugememError::NotEnoughPages {
            needed: 32,
            free: 4,
            node: None,
            ref command,
            ..
        } => {
            assert!(command.contains("--reserve 56M --pagesize 2M"), "{command}");
            assert!(command.contains("echo 44 >"), "{command}");
        }
        e => panic!("unexpected {e}"),
    }
    // Enough for 8 MiB.
    let c = choose_backing(
        &info,
        &BackingRequest {
            bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(c.backing, Backing::Hugetlbfs { .. }));
    // In memory: a hugetlb memfd of the same size, no mount needed.
    let c = choose_backing(
        &info,
        &BackingRequest {
            bytes: 8 << 20,
            in_memory: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Memfd {
            page_size: Some(MIB2)
        }
    );
}

#[test]
fn pages_but_no_writable_mount_falls_back_with_the_reason() {
    let s = FakeSys::new("nomount");
    s.size(2048, [16, 16, 0, 0]);
    let sizes = read_sizes(&s.hp(), &s.nodes()).unwrap();
    let info = HugepageInfo::assemble(
        Some(MIB2),
        sizes,
        parse_mounts(MOUNTS_SEVERAL, Some(MIB2)),
        |_| false,
    );
    let c = choose_backing(
        &info,
        &BackingRequest {
            bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Shm {
            dir: "/dev/shm".into()
        }
    );
    assert!(c
        .notice
        .unwrap()
        .contains("no hugetlbfs mount of that size is writable"));
    // An explicit page size is a demand: no silent fallback.
    let e = choose_backing(
        &info,
        &BackingRequest {
            bytes: 8 << 20,
            page_size: Some(MIB2),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, HugememError::NoMount { page_size: MIB2 }),
        "{e}"
    );
    // An unknown page size names the sizes there are.
    let e = choose_backing(
        &info,
        &BackingRequest {
            page_size: Some(16 << 20),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("offers 2 MiB"), "{e}");
}

#[test]
fn no_huge_and_contradictions() {
    let info = HugepageInfo::assemble(Some(MIB2), vec![], vec![], |_| true);
    let c = choose_backing(
        &info,
        &BackingRequest {
            no_huge: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.backing,
        Backing::Shm {
            dir: "/dev/shm".into()
        }
    );
    assert!(c.notice.unwrap().contains("--no-huge"));
    let c = choose_backing(
        &info,
        &BackingRequest {
            no_huge: true,
            in_memory: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.backing, Backing::Memfd { page_size: None });
    let per = [1 << 20];
    let e = choose_backing(
        &info,
        &BackingRequest {
            no_huge: true,
            per_node: Some(&per),
            ..Default::default()
        },
    );
    assert!(matches!(e, Err(HugememError::InvalidRequest { .. })));
}

#[test]
fn missing_sysfs_means_no_sizes() {
    let s = FakeSys::new("missing");
    let sizes = read_sizes(&s.root.join("nope"), &s.root.join("nope")).unwrap();
    assert!(sizes.is_empty());
}

#[test]
fn garbage_counter_is_a_parse_error_naming_the_file() {
    let s = FakeSys::new("garbage");
    s.size(2048, [1, 1, 0, 0]);
    fs::write(s.hp().join("hugepages-2048kB/free_hugepages"), "lots\n").unwrap();
    let e = read_sizes(&s.hp(), &s.nodes()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("hugepages-2048kB/free_hugepages") && msg.contains("\"lots\""),
        "{msg}"
    );
}

#[test]
fn real_discovery_is_consistent() {
    // Whatever this machine has, the result must agree with /proc/meminfo.
    let info = HugepageInfo::discover().unwrap();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(info.default_page_size, parse_meminfo_default(&meminfo));
    if let Some(d) = info.default_page_size {
        let total: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("HugePages_Total:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert_eq!(info.size(d).map(|s| s.total), Some(total));
    }
}
