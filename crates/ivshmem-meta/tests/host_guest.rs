//! Host metadata and guest discovery in one process: the host writes a backing file, a fake
//! sysfs directory points a "PCI device" at it, and `GuestZones` reads it as a guest reads BAR2.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hugemem::BackingKind;
use ivshmem_meta::layout::{self, META_LEN};
use ivshmem_meta::{registered, GroupInfo, GuestZones, MetaError, MetaOptions, Metadata, QemuArgs};
use rte_ring::{Ring, RingFlags};
use shmconfig::{LocalZones, MemberId, ZoneError, ZoneKind, ZoneRequest, Zones};

static N: AtomicU32 = AtomicU32::new(0);

/// A scratch directory in /dev/shm, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!(
            "/dev/shm/hs-ivtest-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn info(&self) -> GroupInfo {
        GroupInfo {
            prefix: "t".into(),
            generation: 77,
            dir: self.0.clone(),
            backing: BackingKind::Shm,
            page_size: 4096,
            segments: Vec::new(),
        }
    }
    /// A fake /sys/bus/pci/devices with `files` as ivshmem devices 0000:00:10.0, 11.0, ...
    fn sysfs(&self, files: &[&Path]) -> PathBuf {
        let root = self.0.join("sysfs");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // A non-ivshmem device, to be ignored.
        let other = root.join("0000:00:01.0");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("vendor"), "0x8086\n").unwrap();
        std::fs::write(other.join("device"), "0x7000\n").unwrap();
        for (i, f) in files.iter().enumerate() {
            let d = root.join(format!("0000:00:{:02x}.0", 0x10 + i));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), "0x1af4\n").unwrap();
            std::fs::write(d.join("device"), "0x1110\n").unwrap();
            std::os::unix::fs::symlink(f, d.join("resource2")).unwrap();
        }
        root
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A primary of group `prefix` on 8 MiB of ordinary memory, its runtime directory in `rt`.
fn start_primary(rt: &Scratch, prefix: &str) -> procctl::Process {
    let (primary, _) = procctl::Process::from_args([
        "--proc-type=primary".to_string(),
        format!("--file-prefix={prefix}"),
        "--no-huge".into(),
        "-m".into(),
        "8".into(),
        format!("--runtime-dir={}", rt.0.display()),
    ])
    .unwrap();
    primary
}

fn small() -> MetaOptions {
    MetaOptions {
        device_len: 1 << 20,
        ..MetaOptions::default()
    }
}

#[test]
fn create_writes_a_versioned_block_and_registers_the_name() {
    let s = Scratch::new("create");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    assert_eq!(m.device_len(), 1 << 20);
    assert_eq!(m.path(), s.0.join("t.ivshmem.vm0.map_0"));
    let bytes = std::fs::read(m.path()).unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(&bytes[..8], b"HSIVSHMD");
    let info = layout::validate("file", &bytes[..META_LEN], 1 << 20).unwrap();
    assert_eq!(info.name, "vm0");
    assert_eq!(info.generation, 77);
    assert!(info.entries.is_empty());
    assert!(!info.sealed && !info.retired);
    let r = registered(&group, "t", "vm0").unwrap();
    assert_eq!(r.path, m.path());
    assert_eq!(r.device_len, 1 << 20);
    assert_eq!(r.pid, std::process::id());
    // Odd sizes are rounded up to a power of two.
    let m2 = Metadata::create_in(
        &group,
        &s.info(),
        "vm1",
        &MetaOptions {
            device_len: 300_000,
            ..small()
        },
    )
    .unwrap();
    assert_eq!(m2.device_len(), 512 * 1024);
}

#[test]
fn names_are_unique_across_the_group_and_limited_in_number() {
    let s = Scratch::new("unique");
    let group = LocalZones::new();
    let other_member = group.as_member(MemberId(1));
    let opts = MetaOptions {
        max_per_group: 3,
        ..small()
    };
    let a = Metadata::create_in(&group, &s.info(), "a", &opts).unwrap();
    let e = Metadata::create_in(&other_member, &s.info(), "a", &opts).unwrap_err();
    assert!(matches!(e, MetaError::Exists { .. }), "{e}");
    let _b = Metadata::create_in(&other_member, &s.info(), "b", &opts).unwrap();
    let _c = Metadata::create_in(&group, &s.info(), "c", &opts).unwrap();
    let e = Metadata::create_in(&group, &s.info(), "d", &opts).unwrap_err();
    assert!(matches!(e, MetaError::TooMany { max: 3 }), "{e}");
    // A failed create leaves nothing behind: the name is free once a slot is.
    drop(a);
    let _d = Metadata::create_in(&group, &s.info(), "d", &opts).unwrap();
    assert!(!s.0.join("t.ivshmem.a.map_0").exists());
    for bad in ["", "with space", "dots.are.out", &"x".repeat(32)] {
        let e = Metadata::create_in(&group, &s.info(), bad, &opts).unwrap_err();
        assert!(matches!(e, MetaError::BadName { .. }), "{bad:?}: {e}");
    }
}

#[test]
fn the_default_limit_is_32_per_group() {
    let s = Scratch::new("limit");
    let group = LocalZones::new();
    let opts = MetaOptions {
        device_len: 64 * 1024,
        ..MetaOptions::default()
    };
    let all: Vec<_> = (0..32)
        .map(|i| Metadata::create_in(&group, &s.info(), &format!("m{i}"), &opts).unwrap())
        .collect();
    let e = Metadata::create_in(&group, &s.info(), "m32", &opts).unwrap_err();
    assert!(matches!(e, MetaError::TooMany { max: 32 }), "{e}");
    drop(all);
}

#[test]
fn a_guest_finds_the_ring_and_both_sides_use_it() {
    let s = Scratch::new("ring");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    let h2g = Ring::<u64>::create(&m.zones(), "h2g", 256, RingFlags::empty()).unwrap();
    let g2h = Ring::<u64>::create(&m.zones(), "g2h", 256, RingFlags::empty()).unwrap();
    let hidden = m
        .zones()
        .reserve(&ZoneRequest::new("hidden", 4096, ZoneKind::Memzone))
        .unwrap();
    // Used before it is published: the host thread's bias on the producer side must go.
    assert_eq!(h2g.enqueue_bulk(&[1]), 1);
    m.add_ring(&h2g).unwrap();
    m.add_ring(&g2h).unwrap();
    assert_eq!(h2g.enqueue_bulk(&[2, 3]), 2);
    for r in [&h2g, &g2h] {
        let i = r.info();
        assert_eq!((i.producer_bias, i.consumer_bias), (None, None), "{i}");
        assert!(
            i.revokes.0 >= 4 && i.revokes.1 >= 4,
            "never biased again\n{i}"
        );
    }
    // The host still finds everything it reserved, published or not.
    assert!(Ring::<u64>::lookup(&m.zones(), "h2g").is_ok());
    assert_eq!(
        m.zones().lookup("hidden").unwrap().as_ptr(),
        hidden.as_ptr()
    );

    let sys = s.sysfs(&[m.path()]);
    let guest = GuestZones::scan_dir(&sys).unwrap();
    assert_eq!(guest.devices().len(), 1);
    assert_eq!(guest.devices()[0].pci(), "0000:00:10.0");
    assert_eq!(guest.devices()[0].info().generation, 77);
    let names: Vec<_> = guest.list().into_iter().map(|z| z.name).collect();
    assert_eq!(names, ["RG_h2g", "RG_g2h"]);
    // Only what was added is visible.
    assert!(matches!(
        guest.lookup("hidden"),
        Err(ZoneError::NotFound(_))
    ));
    let rx = Ring::<u64>::lookup(&guest, "h2g").unwrap();
    let tx = Ring::<u64>::lookup(&guest, "g2h").unwrap();
    let mut got = [0u64; 8];
    assert_eq!(rx.dequeue_burst(&mut got), 3);
    assert_eq!(&got[..3], &[1, 2, 3]);
    assert_eq!(tx.enqueue_bulk(&[10, 20]), 2);
    assert_eq!(g2h.dequeue(), Some(10));
    assert_eq!(g2h.dequeue(), Some(20));
    // Element info of the ring is recorded for tools.
    let e = &guest.devices()[0].info().entries[0];
    assert_eq!((e.elem.size, e.elem.count), (8, 256));
}

#[test]
fn what_a_guest_may_not_do() {
    let s = Scratch::new("guestrules");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    let z = m
        .zones()
        .reserve(&ZoneRequest::new("mz", 4096, ZoneKind::Memzone))
        .unwrap();
    m.add_memzone(&z).unwrap();
    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    assert!(matches!(
        guest.reserve(&ZoneRequest::new("new", 64, ZoneKind::Memzone)),
        Err(ZoneError::Unsupported(_))
    ));
    assert!(matches!(guest.free("mz"), Err(ZoneError::Unsupported(_))));
    assert_eq!(guest.member(), MemberId::OUTSIDER);
    assert_eq!(guest.current_lcore(), None);
    assert!(Ring::<u64>::create(&guest, "r", 16, RingFlags::empty()).is_err());
    // The memzone is the same memory on both sides.
    let gz = guest.lookup("mz").unwrap();
    assert_eq!(gz.len(), 4096);
    // SAFETY: both point at the first 8 bytes of a 4096-byte zone that both sides keep mapped;
    // atomics only.
    let (h, g) = unsafe { (AtomicU64Ref::at(z.as_ptr()), AtomicU64Ref::at(gz.as_ptr())) };
    h.store(0xfeed, Ordering::Release);
    assert_eq!(g.load(Ordering::Acquire), 0xfeed);
    // The host cannot free a published zone either: a VM may use it.
    assert!(matches!(
        m.zones().free("mz"),
        Err(ZoneError::Unsupported(_))
    ));
    // Once the host drops the metadata, the guest can tell its data is stale.
    assert!(!guest.is_stale());
    drop(m);
    assert!(guest.is_stale());
}

/// A tiny helper to reach an `AtomicU64` in test memory.
struct AtomicU64Ref;
impl AtomicU64Ref {
    /// # Safety
    /// `p` must be 8-aligned and valid for as long as the result is used.
    unsafe fn at<'a>(p: *mut u8) -> &'a std::sync::atomic::AtomicU64 {
        // SAFETY: as the caller promises.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast()) }
    }
}

#[test]
fn adding_twice_or_memory_outside_the_device_is_refused() {
    let s = Scratch::new("refuse");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    let r = Ring::<u64>::create(&m.zones(), "r", 64, RingFlags::empty()).unwrap();
    m.add_ring(&r).unwrap();
    let e = m.add_ring(&r).unwrap_err();
    assert!(matches!(e, MetaError::AlreadyAdded { .. }), "{e}");
    // A ring in the group's general memory.
    let outside = Ring::<u64>::create(&group, "out", 64, RingFlags::empty()).unwrap();
    let e = m.add_ring(&outside).unwrap_err();
    assert!(matches!(e, MetaError::NotInDevice { .. }), "{e}");
    assert!(e.to_string().contains("meta.zones()"), "{e}");
    // A zone of another metadata's device.
    let m2 = Metadata::create_in(&group, &s.info(), "vm1", &small()).unwrap();
    let z2 = m2
        .zones()
        .reserve(&ZoneRequest::new("z", 64, ZoneKind::Memzone))
        .unwrap();
    let e = m.add_memzone(&z2).unwrap_err();
    assert!(matches!(e, MetaError::NotInDevice { .. }), "{e}");
    assert_eq!(m.entries().len(), 1);
}

#[test]
fn entries_are_limited_to_128() {
    let s = Scratch::new("entries");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    for i in 0..128 {
        let z = m
            .zones()
            .reserve(&ZoneRequest::new(&format!("z{i}"), 64, ZoneKind::Memzone))
            .unwrap();
        m.add_memzone(&z).unwrap();
    }
    let e = m
        .zones()
        .reserve(&ZoneRequest::new("z128", 64, ZoneKind::Memzone))
        .unwrap_err();
    assert_eq!(e, ZoneError::TableFull(128));
    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    assert_eq!(guest.list().len(), 128);
    // Zones are distinct, aligned and inside the data area.
    let z0 = guest.lookup("z0").unwrap();
    let z127 = guest.lookup("z127").unwrap();
    assert_ne!(z0.as_ptr(), z127.as_ptr());
    assert_eq!(z0.offset().offset as usize, META_LEN);
    assert_eq!(z127.offset().offset % 64, 0);
}

#[test]
fn reserve_reuses_freed_space_and_reports_a_full_device() {
    let s = Scratch::new("space");
    let group = LocalZones::new();
    let m = Metadata::create_in(
        &group,
        &s.info(),
        "vm0",
        &MetaOptions {
            device_len: 64 * 1024,
            ..small()
        },
    )
    .unwrap();
    let zs = m.zones();
    let a = zs
        .reserve(&ZoneRequest::new("a", 16 * 1024, ZoneKind::Memzone))
        .unwrap();
    let _b = zs
        .reserve(&ZoneRequest::new("b", 16 * 1024, ZoneKind::Memzone))
        .unwrap();
    let e = zs
        .reserve(&ZoneRequest::new("c", 64, ZoneKind::Memzone))
        .unwrap_err();
    assert!(matches!(e, ZoneError::NoMemory { .. }), "{e}");
    assert!(matches!(
        zs.reserve(&ZoneRequest::new("a", 64, ZoneKind::Memzone)),
        Err(ZoneError::Exists(_))
    ));
    let a_ptr = a.as_ptr();
    zs.free("a").unwrap();
    let c = zs
        .reserve(&ZoneRequest::new("c", 64, ZoneKind::Memzone))
        .unwrap();
    assert_eq!(c.as_ptr(), a_ptr);
    // A freed, never-published zone is invisible to guests.
    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    assert!(guest.list().is_empty());
}

#[test]
fn qemu_args_seal_the_metadata() {
    let s = Scratch::new("seal");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    let r = Ring::<u64>::create(&m.zones(), "r", 64, RingFlags::empty()).unwrap();
    let q = Ring::<u64>::create(&m.zones(), "q", 64, RingFlags::empty()).unwrap();
    m.add_ring(&r).unwrap();
    assert!(!m.is_sealed());
    let args = m.qemu_args().unwrap();
    let path = m.path().display().to_string();
    assert_eq!(
        args.args(),
        [
            "-object".to_string(),
            format!("memory-backend-file,id=hs_vm0,size=1048576,mem-path={path},share=on"),
            "-device".to_string(),
            "ivshmem-plain,memdev=hs_vm0,addr=0x10".to_string(),
        ]
    );
    assert!(m.is_sealed());
    let e = m.add_ring(&q).unwrap_err();
    assert!(matches!(e, MetaError::Sealed { .. }), "{e}");
    assert!(matches!(
        m.zones()
            .reserve(&ZoneRequest::new("late", 64, ZoneKind::Memzone)),
        Err(ZoneError::Unsupported(_))
    ));
    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    assert!(guest.devices()[0].info().sealed);
}

#[test]
fn several_metadata_from_the_group_registry() {
    let s = Scratch::new("registry");
    let group = LocalZones::new();
    let a = Metadata::create_in(&group, &s.info(), "a", &small()).unwrap();
    let b = Metadata::create_in(&group, &s.info(), "b", &small()).unwrap();
    // Another member of the group (here: another view) generates the arguments.
    let other = group.as_member(MemberId(3));
    let args = QemuArgs::from_group(&other, "t", &["a", "b"], 0x10).unwrap();
    let devs = args.devices();
    assert_eq!(devs.len(), 2);
    assert_eq!((devs[0].slot, devs[1].slot), (0x10, 0x11));
    assert_eq!(devs[1].pci_address(), "0000:00:11.0");
    assert_eq!(devs[0].path, a.path());
    assert!(args
        .shell_line()
        .contains("ivshmem-plain,memdev=hs_b,addr=0x11"));
    // Sealed through the shared block, seen by the owner.
    assert!(a.is_sealed() && b.is_sealed());
    let e = QemuArgs::from_group(&other, "t", &["nope"], 0x10).unwrap_err();
    assert!(matches!(e, MetaError::NotRegistered { .. }), "{e}");
    let e = QemuArgs::new(
        (0..17)
            .map(|i| (format!("d{i}"), PathBuf::from("/x"), 1 << 20))
            .collect(),
        0x10,
    )
    .unwrap_err();
    assert!(matches!(e, MetaError::NoPciAddress { .. }), "{e}");
    // Two devices in one guest: zones from both.
    let ra = Ring::<u32>::create(&a.zones(), "ra", 16, RingFlags::empty());
    assert!(ra.is_err(), "sealed metadata must refuse new rings");
}

#[test]
fn a_refused_qemu_args_call_seals_nothing() {
    let s = Scratch::new("refused");
    let group = LocalZones::new();
    let a = Metadata::create_in(&group, &s.info(), "a", &small()).unwrap();
    // A known name, then an unknown one: refused, and `a` may still grow.
    let e = QemuArgs::from_group(&group, "t", &["a", "nope"], 0x10).unwrap_err();
    assert!(matches!(e, MetaError::NotRegistered { .. }), "{e}");
    assert!(
        !a.is_sealed(),
        "a refused call must not seal the devices it checked first"
    );
    // The same device twice would give QEMU two objects with one id: refused, nothing sealed.
    let e = QemuArgs::from_group(&group, "t", &["a", "a"], 0x10).unwrap_err();
    assert!(e.to_string().contains("named twice"), "{e}");
    assert!(!a.is_sealed());
    assert!(Ring::<u32>::create(&a.zones(), "still", 16, RingFlags::empty()).is_ok());
    // A good call seals.
    QemuArgs::from_group(&group, "t", &["a"], 0x10).unwrap();
    assert!(a.is_sealed());
}

#[test]
fn two_devices_and_foreign_and_damaged_ones() {
    let s = Scratch::new("devices");
    let group = LocalZones::new();
    let a = Metadata::create_in(&group, &s.info(), "a", &small()).unwrap();
    let b = Metadata::create_in(&group, &s.info(), "b", &small()).unwrap();
    let ra = Ring::<u64>::create(&a.zones(), "ra", 16, RingFlags::empty()).unwrap();
    let rb = Ring::<u64>::create(&b.zones(), "rb", 16, RingFlags::empty()).unwrap();
    a.add_ring(&ra).unwrap();
    b.add_ring(&rb).unwrap();
    let foreign = s.0.join("foreign");
    std::fs::write(&foreign, vec![0x5au8; 1 << 16]).unwrap();
    let sys = s.sysfs(&[a.path(), &foreign, b.path()]);
    let guest = GuestZones::scan_dir(&sys).unwrap();
    assert_eq!(guest.devices().len(), 2);
    assert_eq!(guest.skipped().len(), 1);
    assert_eq!(guest.skipped()[0].pci, "0000:00:11.0");
    assert!(Ring::<u64>::lookup(&guest, "ra").is_ok());
    let rb_g = Ring::<u64>::lookup(&guest, "rb").unwrap();
    assert_eq!(rb_g.zone().unwrap().offset().segment, 5);

    // Same zone name on two devices: refused as ambiguous.
    let c = Metadata::create_in(&group, &s.info(), "c", &small()).unwrap();
    let rc = Ring::<u64>::create(&c.zones(), "ra", 16, RingFlags::empty()).unwrap();
    c.add_ring(&rc).unwrap();
    let guest2 = GuestZones::scan_dir(&s.sysfs(&[a.path(), c.path()])).unwrap();
    assert!(matches!(guest2.lookup("RG_ra"), Err(ZoneError::Corrupt(_))));

    // A damaged block (entry offset pointing past the device) is an error naming the field.
    let mut bytes = std::fs::read(b.path()).unwrap();
    let off = layout::HEADER_LEN + 72;
    bytes[off..off + 8].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    let bad = s.0.join("bad");
    std::fs::write(&bad, &bytes).unwrap();
    let e = GuestZones::scan_dir(&s.sysfs(&[a.path(), &bad])).unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Corrupt {
                field: "entry offset",
                ..
            } | MetaError::Corrupt {
                field: "entry length",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("0000:00:11.0"), "{e}");
}

#[test]
fn with_a_real_process_group() {
    let rt = Scratch::new("rt");
    let prefix = format!("ivt{}", std::process::id());
    let primary = start_primary(&rt, &prefix);
    let m = Metadata::create_with(&primary, "vm0", &small()).unwrap();
    assert_eq!(m.generation(), primary.generation());
    assert!(m.path().starts_with("/dev/shm"), "{}", m.path().display());
    // No memory options: a secondary takes them from the primary.
    let (secondary, _) = procctl::Process::from_args([
        "--proc-type=secondary".to_string(),
        format!("--file-prefix={prefix}"),
        format!("--runtime-dir={}", rt.0.display()),
    ])
    .unwrap();
    let e = Metadata::create(&secondary, "vm0").unwrap_err();
    assert!(matches!(e, MetaError::Exists { .. }), "{e}");
    let a = QemuArgs::from_group(&secondary, &prefix, &["vm0"], 0x10).unwrap();
    assert_eq!(a.devices()[0].path, m.path());
    assert!(m.is_sealed());
    let path = m.path().to_path_buf();
    drop(m);
    assert!(!path.exists());
    assert!(QemuArgs::from_group(&secondary, &prefix, &["vm0"], 0x10).is_err());
    drop(secondary);
    drop(primary);
}

#[test]
fn a_guest_takes_and_returns_mempool_objects_without_caches() {
    use rte_mempool::{Mempool, MempoolParams, Obj};
    let s = Scratch::new("mempool");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &MetaOptions::default()).unwrap();
    let mp = Mempool::create(
        &m.zones(),
        "pool",
        MempoolParams::new(63, 128).cache_size(8),
    )
    .unwrap();
    m.add_mempool(&mp).unwrap();
    let e = m.add_mempool(&mp).unwrap_err();
    assert!(matches!(e, MetaError::AlreadyAdded { .. }), "{e}");
    let names: Vec<_> = m.entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["MP_pool", "MP_pool_0", "RG_MP_pool"]);
    // A pool in the group's general memory is refused.
    let outside = Mempool::create(&group, "out", MempoolParams::new(15, 64)).unwrap();
    let e = m.add_mempool(&outside).unwrap_err();
    assert!(matches!(e, MetaError::NotInDevice { .. }), "{e}");

    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    let gp = Mempool::lookup(&guest, "pool").unwrap();
    assert_eq!(gp.size(), 63);
    let local = gp.local(&guest);
    assert_eq!(local.lcore(), None, "a guest has no lcore cache");
    let mut objs = [Obj::empty(); 16];
    assert_eq!(gp.get_bulk(&mut objs), 16);
    assert_eq!(mp.avail_count(), 63 - 16, "the host sees the guest's gets");
    let mut idx: Vec<u32> = objs.iter().map(|o| gp.index_of(*o).unwrap()).collect();
    idx.sort_unstable();
    idx.dedup();
    assert_eq!(idx.len(), 16, "distinct objects");
    gp.put_bulk(&objs[..8]);
    assert_eq!(mp.avail_count(), 63 - 8);
    // The host returns the rest by index (what the guest would send it through a ring).
    for o in &objs[8..] {
        mp.put(mp.obj(gp.index_of(*o).unwrap()).unwrap());
    }
    assert!(mp.is_full());
}

#[test]
fn a_general_segment_is_exposed_only_when_asked() {
    let rt = Scratch::new("expose");
    let prefix = format!("ivx{}", std::process::id());
    let primary = start_primary(&rt, &prefix);
    let m = Metadata::create_with(&primary, "vm0", &small()).unwrap();
    let grp = Ring::<u64>::create(&primary, "grp", 64, RingFlags::empty()).unwrap();
    let e = m.add_ring(&grp).unwrap_err();
    assert!(matches!(e, MetaError::NotInDevice { .. }), "{e}");
    let seg_len = std::fs::metadata(&primary.segment_paths()[0])
        .unwrap()
        .len();
    if !seg_len.is_power_of_two() {
        let e = m.add_exposing_segment(&grp).unwrap_err();
        assert!(matches!(e, MetaError::CannotExpose { .. }), "{e}");
        eprintln!("NOTICE: the group's segment is {seg_len} bytes (not a power of two): only the refusal was tested");
        return;
    }
    m.add_exposing_segment(&grp).unwrap();
    let e = m.add_exposing_segment(&grp).unwrap_err();
    assert!(matches!(e, MetaError::AlreadyAdded { .. }), "{e}");
    // A zone of another metadata is not a group segment.
    let other = Metadata::create_with(&primary, "vm1", &small()).unwrap();
    let oz = other
        .zones()
        .reserve(&ZoneRequest::new("oz", 64, ZoneKind::Memzone))
        .unwrap();
    let e = m.add_exposing_segment(&oz).unwrap_err();
    assert!(matches!(e, MetaError::NotInDevice { .. }), "{e}");
    let seg = primary.segment_paths()[0].clone();
    assert_eq!(m.exposed_segments(), [(seg.clone(), seg_len)]);

    // The arguments give the segment as the next device.
    let q = QemuArgs::from_process(&primary, &["vm0"], 0x10).unwrap();
    let d = q.devices();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[1].name.as_str(), d[1].slot, d[1].size),
        ("vm0_s1", 0x11, seg_len)
    );
    assert_eq!(d[1].path, seg);
    assert!(QemuArgs::from_group(&primary, &prefix, &["vm0"], 0x10).is_err());

    grp.enqueue(41).unwrap();
    let guest = GuestZones::scan_dir(&rt.sysfs(&[m.path(), &seg])).unwrap();
    assert_eq!(guest.devices()[0].exposed_pci(), ["0000:00:11.0"]);
    assert!(guest.skipped().is_empty());
    let g = Ring::<u64>::lookup(&guest, "grp").unwrap();
    assert_eq!(g.dequeue(), Some(41));
    g.enqueue(42).unwrap();
    assert_eq!(grp.dequeue(), Some(42));
    // Without the segment's device, the guest says which one is missing.
    let e = GuestZones::scan_dir(&rt.sysfs(&[m.path()])).unwrap_err();
    assert!(e.to_string().contains("0000:00:11.0"), "{e}");
    drop(other);
    drop(m);
    drop(grp);
    drop(primary);
}

/// Whether this kernel lets a process bias a ring's sides (expedited global membarrier).
fn membarrier_available() -> bool {
    use rustix::thread::{membarrier_query, MembarrierQuery};
    membarrier_query()
        .contains(MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED)
}

#[test]
fn exposing_a_segment_ends_the_bias_of_a_group_ring_on_it() {
    let rt = Scratch::new("expose-bias");
    let prefix = format!("ivb{}", std::process::id());
    let primary = start_primary(&rt, &prefix);
    let m = Metadata::create_with(&primary, "vm0", &small()).unwrap();
    let grp = Ring::<u64>::create(&primary, "grp", 64, RingFlags::empty()).unwrap();
    // Used by this thread before it is offered: both sides biased to it.
    assert_eq!(grp.enqueue_bulk(&[1, 2]), 2);
    assert_eq!(grp.dequeue(), Some(1));
    let i = grp.info();
    if !membarrier_available() {
        assert_eq!((i.producer_bias, i.consumer_bias), (None, None), "{i}");
        eprintln!("NOTICE: no expedited membarrier here: rings are never biased, nothing to test");
        return;
    }
    assert!(
        i.producer_bias.is_some() && i.consumer_bias.is_some(),
        "{i}"
    );
    let seg_len = std::fs::metadata(&primary.segment_paths()[0])
        .unwrap()
        .len();
    if !seg_len.is_power_of_two() {
        eprintln!("NOTICE: the group's segment is {seg_len} bytes (not a power of two): cannot be exposed");
        return;
    }
    m.add_exposing_segment(&grp).unwrap();
    // A guest (whose membarrier does not reach the host's CPUs) never meets a biased side.
    let i = grp.info();
    assert_eq!((i.producer_bias, i.consumer_bias), (None, None), "{i}");
    assert_eq!(grp.enqueue_bulk(&[3]), 1);
    assert_eq!(grp.dequeue_burst(&mut [0; 4]), 2);
    let i = grp.info();
    assert_eq!(
        (i.producer_bias, i.consumer_bias),
        (None, None),
        "never biased again\n{i}"
    );
    drop(m);
    drop(grp);
    drop(primary);
}

#[test]
fn a_ring_zone_whose_bias_cannot_be_ended_is_not_added() {
    let s = Scratch::new("not-a-ring");
    let group = LocalZones::new();
    let m = Metadata::create_in(&group, &s.info(), "vm0", &small()).unwrap();
    // A zone of kind ring that holds no ring: its bias, if it had one, could not be ended.
    let z = m
        .zones()
        .reserve(&ZoneRequest::new("RG_fake", 4096, ZoneKind::Ring).align(128))
        .unwrap();
    let e = m.add_memzone(&z).unwrap_err();
    assert!(matches!(e, MetaError::Bias { .. }), "{e}");
    assert!(e.to_string().contains("RG_fake"), "{e}");
    assert!(m.entries().is_empty(), "nothing was published");
    let guest = GuestZones::scan_dir(&s.sysfs(&[m.path()])).unwrap();
    assert!(guest.list().is_empty(), "a guest sees nothing");
}

#[test]
fn the_metadata_of_a_dead_member_are_retired_and_removed() {
    let s = Scratch::new("dead");
    let group = LocalZones::new();
    let member = group.as_member(MemberId(4));
    let m = Metadata::create_in(&member, &s.info(), "gone", &small()).unwrap();
    let keep = Metadata::create_in(&group, &s.info(), "kept", &small()).unwrap();
    let path = m.path().to_path_buf();
    let guest = GuestZones::scan_dir(&s.sysfs(&[&path])).unwrap();
    // Member 4 dies without dropping its metadata.
    std::mem::forget(m);
    assert!(!guest.is_stale());
    let report = ivshmem_meta::cleanup_dead_member(&group, MemberId(4)).unwrap();
    assert!(report.contains("gone"), "{report}");
    assert!(guest.is_stale(), "a guest mapping it sees it retired");
    assert!(!path.exists());
    assert!(keep.path().exists(), "a live member's metadata stays");
    assert!(ivshmem_meta::cleanup_dead_member(&group, MemberId(4)).is_none());
    // The name and the slot are free again.
    let again = Metadata::create_in(&group, &s.info(), "gone", &small()).unwrap();
    assert!(again.path().exists());
}
