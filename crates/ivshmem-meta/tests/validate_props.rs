//! Property tests: `layout::validate` never panics, whatever the bytes of a metadata block, and
//! whatever it accepts is safe to use (every published zone inside the device's data area, no
//! overlaps, valid names). A cargo-fuzz target (`fuzz/`) runs the same check for longer.

use std::sync::atomic::{AtomicU32, Ordering};

use hugemem::BackingKind;
use ivshmem_meta::layout::{self, BlockInfo, META_LEN};
use ivshmem_meta::{GroupInfo, MetaOptions, Metadata};
use proptest::prelude::*;
use rte_ring::{Ring, RingFlags};
use shmconfig::{LocalZones, ZoneKind, ZoneRequest, Zones};

const DEV: u64 = 1 << 20;

fn check_accepted(b: &BlockInfo, device_len: u64) {
    assert_eq!(b.device_len, device_len);
    assert!(!b.name.is_empty() && b.name.len() <= layout::META_NAME_MAX);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for e in &b.entries {
        assert!(!e.name.is_empty() && e.name.len() <= shmconfig::ZONE_NAME_MAX);
        assert!(e.offset >= META_LEN as u64);
        assert!(e.len > 0 && e.offset + e.len <= device_len);
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

/// A valid block with a few rings and memzones published, read back from its file.
fn valid_block() -> Vec<u8> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::PathBuf::from(format!(
        "/dev/shm/hs-ivprop-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let info = GroupInfo {
        prefix: "p".into(),
        generation: 5,
        dir: dir.clone(),
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
    let bytes = std::fs::read(m.path()).unwrap();
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    bytes[..META_LEN].to_vec()
}

fn valid() -> &'static [u8] {
    static V: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    V.get_or_init(valid_block)
}

#[test]
fn the_valid_block_is_accepted() {
    let b = layout::validate("dev", valid(), DEV).unwrap();
    assert_eq!(b.entries.len(), 8);
    check_accepted(&b, DEV);
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
        }
    }
}
