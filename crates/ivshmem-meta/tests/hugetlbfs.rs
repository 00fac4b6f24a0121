//! A metadata device on hugepages: the backing file in a hugetlbfs mount (as a group that uses
//! hugepages gets it), read by a guest through a fake sysfs. Needs root (pages are reserved and a
//! private hugetlbfs mounted, then given back); skips loudly otherwise, and fails instead when
//! `HUGESHARE_REQUIRE_HUGEPAGES=1`.

use hugemem::admin;
use hugemem::BackingKind;
use ivshmem_meta::{GroupInfo, GuestZones, MetaOptions, Metadata};
use rte_ring::{Ring, RingFlags};

const P2M: u64 = 2 << 20;

fn skip(why: &str) {
    let msg = format!("metadata on hugetlbfs: {why}; run as root (cargo xtask test does)");
    if std::env::var("HUGESHARE_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1") {
        panic!("HUGESHARE_REQUIRE_HUGEPAGES=1 but {msg}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {msg} ***\n");
}

#[test]
fn a_device_on_hugepages() {
    if !admin::is_root() {
        return skip("not root");
    }
    let _pool = admin::lock_pool().expect("hugepage pool lock");
    let res = match admin::reserve_pages(P2M, 4, None) {
        Ok(r) => r,
        Err(e) => return skip(&format!("cannot reserve 4 pages: {e}")),
    };
    let dir = std::env::temp_dir().join(format!("ivshmem-meta-huge-{}", std::process::id()));
    let mount = match admin::mount_private(&dir, P2M) {
        Ok(m) => m,
        Err(e) => return skip(&format!("cannot mount hugetlbfs: {e}")),
    };
    let info = GroupInfo {
        prefix: "h".into(),
        generation: 9,
        dir: dir.clone(),
        backing: BackingKind::Hugetlbfs,
        page_size: P2M,
        segments: Vec::new(),
    };
    let group = shmconfig::LocalZones::new();
    {
        // 3 MiB asked: a power of two of whole pages is made (4 MiB).
        let opts = MetaOptions {
            device_len: 3 << 20,
            ..MetaOptions::default()
        };
        let m = Metadata::create_in(&group, &info, "huge", &opts).unwrap();
        assert_eq!(m.device_len(), 4 << 20);
        assert!(m.path().starts_with(&dir));
        let r = Ring::<u64>::create(&m.zones(), "r", 64, RingFlags::empty()).unwrap();
        m.add_ring(&r).unwrap();
        r.enqueue(7).unwrap();

        let sys = dir.with_extension("sysfs");
        let d = sys.join("0000:00:10.0");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x1af4\n").unwrap();
        std::fs::write(d.join("device"), "0x1110\n").unwrap();
        std::os::unix::fs::symlink(m.path(), d.join("resource2")).unwrap();
        let guest = GuestZones::scan_dir(&sys).unwrap();
        let g = Ring::<u64>::lookup(&guest, "r").unwrap();
        assert_eq!(g.dequeue(), Some(7));
        drop(g);
        drop(guest);
        let _ = std::fs::remove_dir_all(&sys);
        drop(r);
        drop(m);
    }
    mount.unmount().unwrap();
    res.release().unwrap();
}
