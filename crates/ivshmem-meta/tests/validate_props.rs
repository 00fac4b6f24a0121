//! Property tests: `layout::validate` never panics, whatever the bytes of a metadata block, and
//! whatever it accepts is safe to use: every published zone inside the device's data area,
//! aligned as its kind needs, no overlaps, valid names; and a guest that opens an accepted block
//! and looks up the rings and mempools its entries name gets them or an error, never a panic. A
//! cargo-fuzz target (`fuzz/`) runs the validation for longer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use hugemem::BackingKind;
use ivshmem_meta::layout::{self, BlockInfo, HEADER_LEN, META_LEN};
use ivshmem_meta::{GroupInfo, GuestZones, MetaError, MetaOptions, Metadata};
use proptest::prelude::*;
use rte_mempool::{Mempool, MempoolParams};
use rte_ring::{Ring, RingFlags};
use shmconfig::{LocalZones, ZoneKind, ZoneRequest, Zones};

const DEV: u64 = 1 << 20;

/// Entry field offsets (layout v1: docs/ivshmem.md).
const ENTRY_LEN: usize = 128;
const E_NAME_LEN: usize = 64;
const E_OFFSET: usize = 72;
const E_ALIGN: usize = 88;

/// The byte the valid device's free data area is filled with: a ring or pool header an entry
/// is moved to there is refused at once (a zero magic or ready word would make the lookup wait
/// for a creator).
const FILL: u8 = 0xa5;

static N: AtomicU32 = AtomicU32::new(0);

/// A directory in /dev/shm, removed on drop (also when a case panics).
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = PathBuf::from(format!(
            "/dev/shm/hs-ivprop-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_accepted(b: &BlockInfo, device_len: u64) {
    assert_eq!(b.device_len, device_len);
    assert!(!b.name.is_empty() && b.name.len() <= layout::META_NAME_MAX);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for e in &b.entries {
        assert!(!e.name.is_empty() && e.name.len() <= shmconfig::ZONE_NAME_MAX);
        assert!(e.offset >= META_LEN as u64);
        assert!(e.len > 0 && e.offset + e.len <= device_len);
        assert!(e.align.is_power_of_two() && e.align >= 64, "{e:?}");
        if e.kind == ZoneKind::Ring {
            assert!(e.align >= 128, "{e:?}");
        }
        assert_eq!(e.offset % e.align, 0);
        for &(o, l) in &ranges {
            assert!(
                e.offset + e.len <= o || o + l <= e.offset,
                "overlap accepted"
            );
        }
        ranges.push((e.offset, e.len));
    }
}

/// A valid device with a few rings and memzones and a mempool published, read back from its
/// file (the free part of its data area filled with [`FILL`]).
fn valid_device() -> Vec<u8> {
    let dir = Scratch::new("valid");
    let info = GroupInfo {
        prefix: "p".into(),
        generation: 5,
        dir: dir.0.clone(),
        backing: BackingKind::Shm,
        page_size: 4096,
        segments: Vec::new(),
    };
    let group = LocalZones::new();
    let opts = MetaOptions {
        device_len: DEV,
        ..MetaOptions::default()
    };
    let m = Metadata::create_in(&group, &info, "prop", &opts).unwrap();
    for i in 0..4 {
        let r = Ring::<u64>::create(&m.zones(), &format!("r{i}"), 64, RingFlags::empty()).unwrap();
        m.add_ring(&r).unwrap();
        let z = m
            .zones()
            .reserve(&ZoneRequest::new(
                &format!("z{i}"),
                100 + i * 50,
                ZoneKind::Memzone,
            ))
            .unwrap();
        m.add_memzone(&z).unwrap();
    }
    let mp = Mempool::create(&m.zones(), "pool", MempoolParams::new(15, 64)).unwrap();
    m.add_mempool(&mp).unwrap();
    let mut bytes = std::fs::read(m.path()).unwrap();
    drop(mp);
    drop(m);
    let end = data_end(&bytes);
    bytes[end as usize..].fill(FILL);
    bytes
}

/// Where the zones of a block end (the free part of the data area starts).
fn data_end(block: &[u8]) -> u64 {
    let b = layout::validate("dev", &block[..META_LEN], DEV).unwrap();
    b.entries.iter().map(|e| e.offset + e.len).max().unwrap()
}

fn device() -> &'static [u8] {
    static V: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    V.get_or_init(valid_device)
}

fn valid() -> &'static [u8] {
    &device()[..META_LEN]
}

/// Open `block` as a guest does (written over the valid device, behind a fake sysfs) and look
/// up every ring and mempool its entries name: getting them or an error is fine, a panic is
/// not. A ring found is used once.
fn check_usable(block: &[u8]) {
    let s = Scratch::new("guest");
    let file = s.0.join("device");
    let mut dev = device().to_vec();
    dev[..META_LEN].copy_from_slice(&block[..META_LEN]);
    std::fs::write(&file, &dev).unwrap();
    let pci = s.0.join("sysfs").join("0000:00:10.0");
    std::fs::create_dir_all(&pci).unwrap();
    std::fs::write(pci.join("vendor"), "0x1af4\n").unwrap();
    std::fs::write(pci.join("device"), "0x1110\n").unwrap();
    std::os::unix::fs::symlink(&file, pci.join("resource2")).unwrap();
    let guest = GuestZones::scan_dir(&s.0.join("sysfs")).expect("the block was validated");
    let entries = guest.devices()[0].info().entries.clone();
    for e in &entries {
        match e.kind {
            ZoneKind::Ring => {
                if let Some(Ok(r)) = e
                    .name
                    .strip_prefix("RG_")
                    .map(|n| Ring::<u64>::lookup(&guest, n))
                {
                    r.dequeue_burst(&mut [0; 64]);
                }
            }
            ZoneKind::Mempool => {
                if let Some(n) = e.name.strip_prefix("MP_") {
                    let _ = Mempool::lookup(&guest, n);
                }
            }
            _ => {}
        }
    }
}

/// The table slot of the entry named `name`.
fn slot_of(block: &[u8], name: &str) -> usize {
    (0..layout::MAX_ENTRIES)
        .find(|&i| {
            let e = &block[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
            let len = u32::from_le_bytes(e[E_NAME_LEN..E_NAME_LEN + 4].try_into().unwrap());
            e[..len as usize] == *name.as_bytes()
        })
        .unwrap()
}

/// `block` with the entry in `slot` moved to `offset`, claiming alignment `align`.
fn moved(block: &[u8], slot: usize, offset: u64, align: u32) -> Vec<u8> {
    let mut b = block.to_vec();
    let e = HEADER_LEN + slot * ENTRY_LEN;
    b[e + E_OFFSET..e + E_OFFSET + 8].copy_from_slice(&offset.to_le_bytes());
    b[e + E_ALIGN..e + E_ALIGN + 4].copy_from_slice(&align.to_le_bytes());
    b
}

#[test]
fn the_valid_block_is_accepted() {
    let b = layout::validate("dev", valid(), DEV).unwrap();
    assert_eq!(b.entries.len(), 11);
    check_accepted(&b, DEV);
    check_usable(valid());
    // The wrong device length is refused.
    assert!(layout::validate("dev", valid(), DEV * 2).is_err());
    assert!(layout::validate("dev", &valid()[..META_LEN - 1], DEV).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes (mostly rejected at the magic).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..META_LEN + 64), len in any::<u64>()) {
        if let Ok(b) = layout::validate("dev", &bytes, len) {
            check_accepted(&b, len);
        }
    }

    /// A valid header with an arbitrary entry table, entry count and flags.
    #[test]
    fn arbitrary_entries_never_panic(
        table in proptest::collection::vec(any::<u8>(), 128 * 128),
        count in 0u32..200,
        sealed in 0u32..3,
    ) {
        let mut b = valid().to_vec();
        b[layout::HEADER_LEN..layout::HEADER_LEN + table.len()].copy_from_slice(&table);
        b[60..64].copy_from_slice(&count.to_le_bytes());
        b[64..68].copy_from_slice(&sealed.to_le_bytes());
        if let Ok(info) = layout::validate("dev", &b, DEV) {
            check_accepted(&info, DEV);
            check_usable(&b);
        }
    }

    /// A valid block with a few words overwritten anywhere (the likely damage).
    #[test]
    fn mutated_valid_blocks_never_panic(
        edits in proptest::collection::vec((0usize..layout::HEADER_LEN + 8 * 128, any::<u64>()), 1..6),
    ) {
        let mut b = valid().to_vec();
        for (at, v) in edits {
            let at = at & !3;
            let n = 8.min(b.len() - at);
            b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
        if let Ok(info) = layout::validate("dev", &b, DEV) {
            check_accepted(&info, DEV);
            check_usable(&b);
        }
    }

    /// A valid block with one entry moved (into the free part of the data area, to an offset
    /// that is a multiple of `1 << shift`, or a few words from where it was) and claiming an
    /// alignment of `1 << align_log`: what a hostile host would write to make a guest's objects
    /// misaligned.
    #[test]
    fn moved_entries_are_refused_or_usable(
        slot in 0usize..11,
        into_free in any::<bool>(),
        k in 0u64..8,
        shift in 0u32..13,
        step in -32i64..32,
        align_log in 0u32..13,
    ) {
        let to = if into_free {
            data_end(valid()).next_multiple_of(4096) + (k << shift)
        } else {
            let e = HEADER_LEN + slot * ENTRY_LEN + E_OFFSET;
            u64::from_le_bytes(valid()[e..e + 8].try_into().unwrap()).wrapping_add_signed(8 * step)
        };
        let b = moved(valid(), slot, to, 1 << align_log);
        if let Ok(info) = layout::validate("dev", &b, DEV) {
            check_accepted(&info, DEV);
            check_usable(&b);
        }
    }
}

/// The audit's case: a pool's objects moved to an offset 8 bytes past a page, claiming 8-byte
/// alignment, were accepted, and the guest's `Mempool::lookup` then panicked. Such entries are
/// refused, naming the entry and the value; aligned as their object needs, they are accepted.
#[test]
fn entries_aligned_below_what_their_object_needs_are_refused() {
    let free = data_end(valid()).next_multiple_of(4096);
    for (name, offset, align, need) in [
        ("MP_pool_0", free + 8, 8, 64),
        ("MP_pool", free + 32, 32, 64),
        ("RG_r1", free + 64, 64, 128),
        ("z2", free + 1, 1, 64),
    ] {
        let b = moved(valid(), slot_of(valid(), name), offset, align);
        let e = layout::validate("dev", &b, DEV).unwrap_err();
        assert!(
            matches!(
                e,
                MetaError::Corrupt {
                    field: "entry alignment",
                    ..
                }
            ),
            "{name}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(name)
                && msg.contains(&format!("= {align} "))
                && msg.contains(&format!("at least {need}")),
            "{msg}"
        );
        // The same entry at an offset aligned as it needs is accepted, and usable.
        let b = moved(valid(), slot_of(valid(), name), free, need);
        let info = layout::validate("dev", &b, DEV).unwrap();
        check_accepted(&info, DEV);
        check_usable(&b);
    }
}
