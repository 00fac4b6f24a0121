//! The admin module: exact give-back of reserved pages, its typed refusals, and a hugepage
//! mapping the kernel refuses becoming an error rather than a crash.

mod common;

use std::path::Path;

use common::{skip, HugeEnv, MIB2};
use hugemem::{admin, HugememError, Hugetlbfs, MapOptions, SegmentSource, SegmentSpec};

fn nr_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn reservations_give_back_exactly_what_they_added() {
    if !admin::is_root() {
        // Without root every change is refused with the file it would need.
        let e = admin::reserve_pages(MIB2, 1, None).unwrap_err();
        assert!(matches!(e, HugememError::NotRoot { .. }), "{e}");
        assert!(e.to_string().contains("nr_hugepages"), "{e}");
        let e = admin::mount_private(Path::new("/tmp/hugemem-never"), MIB2).unwrap_err();
        assert!(matches!(e, HugememError::NotRoot { .. }), "{e}");
        skip("admin", "changing the pool needs root");
        return;
    }
    let _pool = admin::lock_pool().unwrap();
    // Re-entrant within the thread: reserve_pages takes the lock again inside.
    let before = nr_hugepages();
    let r = admin::reserve_pages(MIB2, 3, None).unwrap();
    assert_eq!((r.added(), r.page_size(), r.node()), (3, MIB2, None));
    assert_eq!(nr_hugepages(), before + 3);
    if Path::new("/sys/devices/system/node/node0/hugepages/hugepages-2048kB").is_dir() {
        let r0 = admin::reserve_pages(MIB2, 1, Some(0)).unwrap();
        assert_eq!(nr_hugepages(), before + 4);
        drop(r0); // dropping gives back too
        assert_eq!(nr_hugepages(), before + 3);
    }
    r.release().unwrap();
    assert_eq!(nr_hugepages(), before);

    let e = admin::reserve_pages(3 << 20, 1, None).unwrap_err();
    assert!(matches!(e, HugememError::UnknownPageSize { .. }), "{e}");
    let e = admin::reserve_pages(MIB2, 1, Some(4000)).unwrap_err();
    assert!(
        matches!(e, HugememError::NoSuchNode { node: 4000, .. }),
        "{e}"
    );
    // Mounting on a non-empty directory, unmounting what is not hugetlbfs: refused.
    let e = admin::mount_private(Path::new("/etc"), MIB2).unwrap_err();
    assert!(matches!(e, HugememError::InvalidRequest { .. }), "{e}");
    let e = admin::unmount(Path::new("/tmp")).unwrap_err();
    assert!(matches!(e, HugememError::NotHugetlbfs { .. }), "{e}");
    assert_eq!(nr_hugepages(), before);
}

#[test]
fn a_mapping_the_kernel_refuses_is_an_error_not_a_crash() {
    if !admin::is_root() {
        skip(
            "kernel-refusal",
            "mounting a size-limited hugetlbfs needs root",
        );
        return;
    }
    // Free pages exist (the pre-flight check passes) but the mount allows only one page.
    let Some(_env) = HugeEnv::setup("refuse", 4) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("hugemem-test-{}-limited", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = std::ffi::CString::new("pagesize=2M,size=2M,mode=0700").unwrap();
    rustix::mount::mount(
        "nodev",
        &dir,
        "hugetlbfs",
        rustix::mount::MountFlags::empty(),
        opts.as_c_str(),
    )
    .unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::empty());
            let _ = std::fs::remove_dir(self.0);
        }
    }
    let _u = Unmount(&dir);
    let src = Hugetlbfs::new(&dir, MIB2);
    for populate in [false, true] {
        let e = src
            .create(&SegmentSpec {
                prefix: "limited_",
                index: 0,
                len: 2 * MIB2,
                pow2: false,
                map: MapOptions {
                    populate,
                    addr: None,
                },
            })
            .unwrap_err();
        assert!(
            matches!(
                e,
                HugememError::KernelRefusedPages { needed: 2, .. }
                    | HugememError::NotEnoughPages { .. }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("size="),
            "the message points at the mount limit: {e}"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing left behind"
        );
    }
    // One page fits.
    let seg = src
        .create(&SegmentSpec {
            prefix: "limited_",
            index: 1,
            len: MIB2,
            pow2: false,
            map: MapOptions::default(),
        })
        .unwrap();
    assert_eq!(seg.smaps_kernel_page_size(), Some(MIB2));
    seg.remove().unwrap();
}

#[test]
fn read_only_places_are_refused_with_the_remedy() {
    use hugemem::{choose_backing, BackingRequest, HugepageInfo, ShmFallback};
    use std::os::unix::fs::PermissionsExt;
    let spec = SegmentSpec {
        prefix: "ro_",
        index: 0,
        len: MIB2,
        pow2: false,
        map: MapOptions::default(),
    };
    if !admin::is_root() {
        // A directory we may not write: permission bits (root would bypass them).
        let dir = common::ShmDir::new("ro");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let e = ShmFallback::in_dir(dir.path()).create(&spec).unwrap_err();
        assert!(matches!(e, HugememError::NotWritable { .. }), "{e}");
        assert!(
            e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        skip(
            "read-only-mount",
            "mounting a read-only hugetlbfs needs root",
        );
        return;
    }
    let Some(_env) = HugeEnv::setup("ro", 2) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("hugemem-test-{}-ro", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = std::ffi::CString::new("pagesize=2M").unwrap();
    rustix::mount::mount(
        "nodev",
        &dir,
        "hugetlbfs",
        rustix::mount::MountFlags::RDONLY,
        opts.as_c_str(),
    )
    .unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::empty());
            let _ = std::fs::remove_dir(self.0);
        }
    }
    let _u = Unmount(&dir);
    let info = HugepageInfo::discover().unwrap();
    let m = info
        .mounts
        .iter()
        .find(|m| m.path == dir)
        .expect("read-only mount discovered");
    assert!(!m.writable);
    let e = choose_backing(
        &info,
        &BackingRequest {
            huge_dir: Some(&dir),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, HugememError::NotWritable { .. }), "{e}");
    assert!(e.to_string().contains("remount it read-write"), "{e}");
    let e = Hugetlbfs::new(&dir, MIB2).create(&spec).unwrap_err();
    assert!(matches!(e, HugememError::NotWritable { .. }), "{e}");
}

/// `cargo xtask hugepages --mount DIR` then, in another run, `--unmount DIR`: a directory the
/// mount created is removed with it; one that existed before is left.
#[test]
fn unmount_removes_the_directory_mount_private_created() {
    if !admin::is_root() {
        skip("unmount-dir", "mounting hugetlbfs needs root");
        return;
    }
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir() {
        skip("unmount-dir", "no 2 MiB hugepages on this kernel");
        return;
    }
    let base = std::env::temp_dir().join(format!("hugemem-test-{}-unmount", std::process::id()));
    let created = base.join("created");
    let existing = base.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    // Made and kept, as `--mount` does; unmounted by path, as a later `--unmount` does.
    let kept = admin::mount_private(&created, MIB2).unwrap().keep();
    assert_eq!(kept, created);
    // The marker is under the mount: the hugetlbfs looks empty.
    assert_eq!(std::fs::read_dir(&created).unwrap().count(), 0);
    admin::unmount(&created).unwrap();
    assert!(!created.exists(), "{} was left behind", created.display());
    // A directory that was there before the mount stays.
    admin::mount_private(&existing, MIB2).unwrap().keep();
    admin::unmount(&existing).unwrap();
    assert!(existing.is_dir());
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
    // Dropping a mount removes the directory it created too.
    drop(admin::mount_private(&created, MIB2).unwrap());
    assert!(!created.exists());
    std::fs::remove_dir_all(&base).unwrap();
}
