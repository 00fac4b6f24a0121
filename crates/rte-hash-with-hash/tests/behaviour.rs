//! The behaviours DPDK's `test_hash.c` checks (dpdk-facts §7.3) that apply to this table, plus
//! the hash-function identity check and the lock take-over of a dead writer.

use rte_hash_with_hash::{
    type_id_of, Crc32c, Hash, HashError, HashFn, Murmur3, Params, Plain, StopAt, TableFull,
    ENTRIES_MAX,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmconfig::{
    Liveness, LocalZones, MemberId, MemberState, Zone, ZoneError, ZoneInfo, ZoneRequest, Zones,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// DPDK's test key: a packed 5-tuple of 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct FlowKey {
    ip_src: u32,
    ip_dst: u32,
    port_src: u16,
    port_dst: u16,
    proto: u32,
}

impl Plain for FlowKey {
    const TYPE_ID: u64 = type_id_of("test_hash::FlowKey");
}

fn flow(i: u32) -> FlowKey {
    FlowKey {
        ip_src: 0x0a00_0000 + i,
        ip_dst: 0xc0a8_0000 + i * 7,
        port_src: (1000 + i) as u16,
        port_dst: (2000 + i * 3) as u16,
        proto: 6 + (i & 1) * 11,
    }
}

/// A hash function that always returns 3, as in test_hash.c: signature 0, so the primary and
/// the alternate bucket are the same bucket.
#[derive(Debug, Clone, Copy)]
struct Always3;
impl HashFn for Always3 {
    const NAME: &'static str = "always-3";
    fn hash(&self, _key: &[u8]) -> u32 {
        3
    }
    fn seed(&self) -> u32 {
        0
    }
}

type Table = Hash<FlowKey, u64, Crc32c>;

fn table(zones: &LocalZones, name: &str, entries: u32) -> Table {
    Hash::create(zones, name, Params::new(entries), Crc32c::new(0)).unwrap()
}

#[test]
fn add_lookup_delete_give_the_same_position() {
    let z = LocalZones::new();
    let t = table(&z, "t", 64);
    let k = flow(1);
    let h = t.hash(&k);
    assert_eq!(h, Crc32c::new(0).hash(k.as_bytes()));
    let pos = t.add_with_hash(&k, h, &10).unwrap();
    assert!(pos < 64);
    assert_eq!(t.lookup_with_hash(&k, h), Some(pos));
    assert_eq!(t.lookup_data_with_hash(&k, h), Some((pos, 10)));
    assert_eq!(t.delete_with_hash(&k, h), Some(pos));
    assert_eq!(t.lookup_with_hash(&k, h), None);
    assert_eq!(t.count(), 0);
    t.check_consistency().unwrap();
}

#[test]
fn delete_missing_readd_updates_second_delete_misses() {
    let z = LocalZones::new();
    let t = table(&z, "t", 64);
    let k = flow(2);
    let h = t.hash(&k);
    assert_eq!(t.delete_with_hash(&k, h), None, "deleting a missing key");
    let pos = t.add_with_hash(&k, h, &1).unwrap();
    assert_eq!(
        t.add_with_hash(&k, h, &2),
        Ok(pos),
        "re-add returns the same position"
    );
    assert_eq!(
        t.lookup_data_with_hash(&k, h),
        Some((pos, 2)),
        "re-add updates the value"
    );
    assert_eq!(t.count(), 1);
    assert_eq!(t.delete_with_hash(&k, h), Some(pos));
    assert_eq!(t.delete_with_hash(&k, h), None, "second delete");
}

#[test]
fn slots_are_recycled_over_entries_plus_one_rounds() {
    let z = LocalZones::new();
    let t = table(&z, "t", 64);
    for i in 0..=64u32 {
        let k = flow(i);
        let h = t.hash(&k);
        let pos = t
            .add_with_hash(&k, h, &u64::from(i))
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert_eq!(t.delete_with_hash(&k, h), Some(pos), "round {i}");
    }
    assert_eq!(t.count(), 0);
    t.check_consistency().unwrap();
}

#[test]
fn get_key_with_position_until_delete() {
    let z = LocalZones::new();
    let t = table(&z, "t", 64);
    let k = flow(3);
    let h = t.hash(&k);
    let pos = t.add_with_hash(&k, h, &0).unwrap();
    assert_eq!(t.get_key_with_position(pos), Some(k));
    t.delete_with_hash(&k, h).unwrap();
    assert_eq!(t.get_key_with_position(pos), None);
    assert_eq!(t.get_key_with_position(64), None, "out of range");
    assert_eq!(t.get_key_with_position(u32::MAX), None);
}

#[test]
fn lookup_by_name_finds_the_same_table_and_refuses_unknown_names() {
    let z = LocalZones::new();
    let t = table(&z, "existing", 64);
    let k = flow(4);
    let pos = t.add_with_hash(&k, t.hash(&k), &44).unwrap();
    let u: Table = Hash::lookup(&z, "existing", Crc32c::new(0)).unwrap();
    assert_eq!(u.lookup_data_with_hash(&k, u.hash(&k)), Some((pos, 44)));
    // And from another member.
    let other = z.as_member(MemberId(3));
    let v: Table = Hash::lookup(&other, "existing", Crc32c::new(0)).unwrap();
    assert_eq!(v.lookup_with_hash(&k, v.hash(&k)), Some(pos));
    assert!(matches!(
        Table::lookup(&z, "unknown", Crc32c::new(0)),
        Err(HashError::Zone(ZoneError::NotFound(_)))
    ));
}

#[test]
fn five_keys_bulk() {
    let z = LocalZones::new();
    let t = table(&z, "t", 64);
    let keys: Vec<FlowKey> = (10..15).map(flow).collect();
    let hashes: Vec<u32> = keys.iter().map(|k| t.hash(k)).collect();
    let pos: Vec<u32> = keys
        .iter()
        .zip(&hashes)
        .map(|(k, &h)| t.add_with_hash(k, h, &1).unwrap())
        .collect();
    let mut out = [None; 5];
    assert_eq!(t.lookup_bulk_with_hash(&keys, &hashes, &mut out), 5);
    assert_eq!(
        out.to_vec(),
        pos.iter().map(|&p| Some(p)).collect::<Vec<_>>()
    );
    for (i, (k, &h)) in keys.iter().zip(&hashes).enumerate() {
        assert_eq!(
            t.add_with_hash(k, h, &2),
            Ok(pos[i]),
            "re-add keeps the position"
        );
    }
    for (i, (k, &h)) in keys.iter().zip(&hashes).enumerate() {
        assert_eq!(t.delete_with_hash(k, h), Some(pos[i]));
    }
    assert_eq!(t.lookup_bulk_with_hash(&keys, &hashes, &mut out), 0);
    assert_eq!(out, [None; 5]);
}

#[test]
fn bulk_lookup_of_more_than_64_keys_mixed_hits_and_misses() {
    let z = LocalZones::new();
    let t = table(&z, "t", 1024);
    let keys: Vec<FlowKey> = (0..200).map(flow).collect();
    let hashes: Vec<u32> = keys.iter().map(|k| t.hash(k)).collect();
    let mut expect = vec![None; 200];
    for i in (0..200).step_by(3) {
        expect[i] = Some(t.add_with_hash(&keys[i], hashes[i], &0).unwrap());
    }
    let mut out = vec![None; 200];
    let n = t.lookup_bulk_with_hash(&keys, &hashes, &mut out);
    assert_eq!(n, expect.iter().filter(|p| p.is_some()).count());
    assert_eq!(out, expect);
}

/// In a table filled until it refuses a key, many keys sit in their secondary bucket, most
/// with no signature match in their primary one (a path of its own in the bulk lookup): a
/// bulk lookup finds every key at the position a single lookup gives, and misses the keys
/// never added.
#[test]
fn bulk_lookup_finds_keys_in_their_secondary_buckets() {
    let z = LocalZones::new();
    let t = table(&z, "full", 1024);
    let mut keys = Vec::new();
    let mut i = 0;
    loop {
        let k = flow(i);
        match t.add_with_hash(&k, t.hash(&k), &(i as u64)) {
            Ok(_) => keys.push(k),
            Err(_) => break,
        }
        i += 1;
    }
    assert!(keys.len() > 900, "filled to {} of 1024", keys.len());
    // and as many that were never added, interleaved
    let probe: Vec<FlowKey> = (0..2 * keys.len() as u32)
        .map(|j| {
            if j % 2 == 0 {
                keys[j as usize / 2]
            } else {
                flow(100_000 + j)
            }
        })
        .collect();
    let hashes: Vec<u32> = probe.iter().map(|k| t.hash(k)).collect();
    let mut out = vec![None; probe.len()];
    let n = t.lookup_bulk_with_hash(&probe, &hashes, &mut out);
    assert_eq!(n, keys.len());
    for (j, k) in probe.iter().enumerate() {
        assert_eq!(out[j], t.lookup_with_hash(k, hashes[j]), "key {j}");
        assert_eq!(out[j].is_some(), j % 2 == 0, "key {j}");
    }
}

#[test]
fn colliding_keys_share_one_bucket() {
    let z = LocalZones::new();
    let t: Hash<FlowKey, u64, Always3> = Hash::create(&z, "t3", Params::new(64), Always3).unwrap();
    let keys: Vec<FlowKey> = (0..5).map(flow).collect();
    let pos: Vec<u32> = keys
        .iter()
        .map(|k| t.add_with_hash(k, t.hash(k), &7).unwrap())
        .collect();
    for (k, &p) in keys.iter().zip(&pos) {
        assert_eq!(t.lookup_with_hash(k, 3), Some(p));
    }
    assert_eq!(t.delete_with_hash(&keys[2], 3), Some(pos[2]));
    for (i, (k, &p)) in keys.iter().zip(&pos).enumerate() {
        let want = (i != 2).then_some(p);
        assert_eq!(t.lookup_with_hash(k, 3), want, "key {i}");
    }
    let again = t.add_with_hash(&keys[2], 3, &8).unwrap();
    assert_eq!(t.lookup_data_with_hash(&keys[2], 3), Some((again, 8)));
    // A ninth colliding key does not fit in the one bucket without extendable buckets.
    for i in 5..8 {
        t.add_with_hash(&flow(i), 3, &0).unwrap();
    }
    assert_eq!(t.add_with_hash(&flow(8), 3, &0), Err(TableFull));
    assert_eq!(t.count(), 8);
    t.check_consistency().unwrap();
}

#[test]
fn extendable_table_takes_all_64_colliding_keys() {
    let z = LocalZones::new();
    let t: Hash<FlowKey, u64, Always3> =
        Hash::create(&z, "ext", Params::new(64).extendable(true), Always3).unwrap();
    let keys: Vec<FlowKey> = (0..64).map(flow).collect();
    let mut pos = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        pos.push(
            t.add_with_hash(k, 3, &(i as u64))
                .unwrap_or_else(|e| panic!("key {i}: {e}")),
        );
    }
    assert_eq!(t.count(), 64);
    assert_eq!(
        t.add_with_hash(&flow(64), 3, &0),
        Err(TableFull),
        "65th key"
    );
    t.check_consistency().unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            t.lookup_data_with_hash(k, 3),
            Some((pos[i], i as u64)),
            "lookup {i}"
        );
    }
    // Bulk lookups find the keys in the extendable chain too.
    let mut out = vec![None; 64];
    assert_eq!(t.lookup_bulk_with_hash(&keys, &[3; 64], &mut out), 64);
    assert_eq!(out, pos.iter().map(|&p| Some(p)).collect::<Vec<_>>());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            t.add_with_hash(k, 3, &(i as u64 + 100)),
            Ok(pos[i]),
            "update {i}"
        );
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            t.lookup_data_with_hash(k, 3),
            Some((pos[i], i as u64 + 100))
        );
    }
    // Delete from the front so that the chain compacts, checking the rest stay findable.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(t.delete_with_hash(k, 3), Some(pos[i]), "delete {i}");
        t.check_consistency()
            .unwrap_or_else(|e| panic!("after delete {i}: {e}"));
        for k2 in &keys[i + 1..] {
            assert!(t.lookup_with_hash(k2, 3).is_some());
        }
    }
    assert_eq!(t.count(), 0);
    for (i, k) in keys.iter().enumerate() {
        t.add_with_hash(k, 3, &0)
            .unwrap_or_else(|e| panic!("re-insert {i}: {e}"));
    }
    assert_eq!(t.count(), 64);
    t.check_consistency().unwrap();
}

#[test]
fn creation_parameters_are_validated() {
    let z = LocalZones::new();
    for (entries, what) in [(3, "fewer than one bucket"), (ENTRIES_MAX + 1, "2^30")] {
        let e = Table::create(&z, "bad", Params::new(entries), Crc32c::new(0)).unwrap_err();
        assert!(matches!(e, HashError::BadEntries { .. }), "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    let e =
        Hash::<(), u64, Crc32c>::create(&z, "zero", Params::new(64), Crc32c::new(0)).unwrap_err();
    assert!(matches!(e, HashError::ZeroKeySize { .. }), "{e}");
    let _t = table(&z, "dup", 64);
    let e = Table::create(&z, "dup", Params::new(64), Crc32c::new(0)).unwrap_err();
    assert!(matches!(e, HashError::Zone(ZoneError::Exists(_))), "{e}");
    assert!(e.to_string().contains("dup"));
    // Exactly one bucket is fine.
    table(&z, "eight", 8);
}

fn random_keys(n: usize, mut seed: u64) -> Vec<[u8; 16]> {
    let mut keys = std::collections::HashSet::new();
    while keys.len() < n {
        let mut k = [0u8; 16];
        for b in k.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.copy_from_slice(&seed.to_le_bytes());
        }
        keys.insert(k);
    }
    keys.into_iter().collect()
}

#[test]
fn fill_until_full_then_reset() {
    let z = LocalZones::new();
    for ext in [false, true] {
        let name = if ext { "fill-ext" } else { "fill" };
        let t: Hash<[u8; 16], u32, Crc32c> =
            Hash::create(&z, name, Params::new(64).extendable(ext), Crc32c::new(1)).unwrap();
        let keys = random_keys(65536, 0x1234_5678_9abc_def1);
        let mut added = 0u32;
        let mut full = false;
        for k in &keys {
            match t.add_with_hash(k, t.hash(k), &added) {
                Ok(_) => added += 1,
                Err(TableFull) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "65536 keys never filled a 64-entry table");
        assert_eq!(t.count(), added);
        if ext {
            assert_eq!(
                added, 64,
                "with extendable buckets exactly `entries` keys fit"
            );
        } else {
            assert!(added >= 32, "only {added} keys fit before a failure");
        }
        t.check_consistency().unwrap();
        for (i, k) in keys[..added as usize].iter().enumerate() {
            assert_eq!(
                t.lookup_data_with_hash(k, t.hash(k)).map(|x| x.1),
                Some(i as u32)
            );
        }
        t.reset();
        assert_eq!(t.count(), 0);
        t.check_consistency().unwrap();
        assert_eq!(t.iter().count(), 0);
        for k in &keys[..added as usize] {
            assert_eq!(t.lookup_with_hash(k, t.hash(k)), None);
        }
        // Usable again after reset.
        let k = &keys[0];
        assert!(t.add_with_hash(k, t.hash(k), &5).is_ok());
    }
}

#[test]
fn iterate_visits_every_key_once_with_its_data() {
    let z = LocalZones::new();
    for ext in [false, true] {
        let name = if ext { "it-ext" } else { "it" };
        let t: Hash<FlowKey, u64, Crc32c> =
            Hash::create(&z, name, Params::new(256).extendable(ext), Crc32c::new(0)).unwrap();
        let mut expect = std::collections::HashMap::new();
        for i in 0..200 {
            let k = flow(i);
            if let Ok(p) = t.add_with_hash(&k, t.hash(&k), &u64::from(i * 10)) {
                expect.insert(k, (p, u64::from(i * 10)));
            }
        }
        assert!(expect.len() >= 150);
        let mut seen = std::collections::HashMap::new();
        for (p, k, v) in t.iter() {
            assert!(seen.insert(k, (p, v)).is_none(), "{k:?} visited twice");
        }
        assert_eq!(seen, expect);
    }
}

#[test]
fn a_large_table_at_high_load_keeps_every_key() {
    let z = LocalZones::new();
    let n = 1 << 14;
    let t: Hash<[u8; 16], u32, Crc32c> =
        Hash::create(&z, "big", Params::new(n), Crc32c::new(0)).unwrap();
    let keys = random_keys(n as usize, 77);
    let mut added = Vec::new();
    for k in &keys {
        if t.add_with_hash(k, t.hash(k), &(added.len() as u32)).is_ok() {
            added.push(*k);
        }
    }
    // Cuckoo displacement lets a table of 8-entry buckets fill well past 90 %.
    assert!(
        added.len() as u32 > n * 9 / 10,
        "only {} of {n} fit",
        added.len()
    );
    t.check_consistency().unwrap();
    for (i, k) in added.iter().enumerate() {
        assert_eq!(
            t.lookup_data_with_hash(k, t.hash(k)).map(|x| x.1),
            Some(i as u32)
        );
    }
    for k in added.iter().step_by(2) {
        assert!(t.delete_with_hash(k, t.hash(k)).is_some());
    }
    t.check_consistency().unwrap();
    for (i, k) in added.iter().enumerate() {
        assert_eq!(t.lookup_with_hash(k, t.hash(k)).is_some(), i % 2 == 1);
    }
}

#[test]
fn opening_with_another_hash_function_is_refused_naming_both() {
    let z = LocalZones::new();
    let _t = table(&z, "crc", 64);
    let e = Hash::<FlowKey, u64, Murmur3>::lookup(&z, "crc", Murmur3::new(0)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HashError::WrongHashFunction { .. }), "{msg}");
    assert!(
        msg.contains("\"crc32c\"") && msg.contains("\"murmur3-32\""),
        "{msg}"
    );
    // Same function, other seed.
    let e = Table::lookup(&z, "crc", Crc32c::new(1)).unwrap_err();
    assert!(matches!(e, HashError::WrongHashFunction { .. }), "{e}");
    // The portable CRC32-C is the same function: accepted.
    Table::lookup(&z, "crc", Crc32c::portable(0)).unwrap();
    // A function that merely claims the name is caught by the check value.
    #[derive(Debug)]
    struct FakeCrc;
    impl HashFn for FakeCrc {
        const NAME: &'static str = "crc32c";
        fn hash(&self, key: &[u8]) -> u32 {
            key.len() as u32
        }
        fn seed(&self) -> u32 {
            0
        }
    }
    let e = Hash::<FlowKey, u64, FakeCrc>::lookup(&z, "crc", FakeCrc).unwrap_err();
    assert!(matches!(e, HashError::WrongHashFunction { .. }), "{e}");
}

#[test]
fn opening_with_other_key_or_value_types_is_refused() {
    let z = LocalZones::new();
    let _t = table(&z, "typed", 64);
    let e = Hash::<[u8; 8], u64, Crc32c>::lookup(&z, "typed", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(
            e,
            HashError::TypeMismatch {
                what: "keys",
                stored: 16,
                given: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = Hash::<FlowKey, u32, Crc32c>::lookup(&z, "typed", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(e, HashError::TypeMismatch { what: "values", .. }),
        "{e}"
    );
    z.reserve(&shmconfig::ZoneRequest::new(
        "ring",
        4096,
        shmconfig::ZoneKind::Ring,
    ))
    .unwrap();
    let e = Table::lookup(&z, "ring", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(e, HashError::Zone(ZoneError::WrongKind { .. })),
        "{e}"
    );
}

#[test]
fn opening_with_other_types_of_the_same_sizes_is_refused_naming_both() {
    let z = LocalZones::new();
    let t: Hash<u64, u64, Crc32c> =
        Hash::create(&z, "u64s", Params::new(64), Crc32c::new(0)).unwrap();
    t.add_with_hash(&1, t.hash(&1), &2).unwrap();
    // Same sizes, other key type and other value type: refused, the keys first.
    let e = Hash::<[u8; 8], f64, Crc32c>::lookup(&z, "u64s", Crc32c::new(0)).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            HashError::WrongType { what: "keys", table, given, .. }
                if table == "u64" && given == "[u8; 8]"
        ),
        "{msg}"
    );
    assert!(msg.contains("u64") && msg.contains("[u8; 8]"), "{msg}");
    // Right key type, a value type of the same size that is not the table's.
    let e = Hash::<u64, f64, Crc32c>::lookup(&z, "u64s", Crc32c::new(0)).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            &e,
            HashError::WrongType { what: "values", table, given, .. }
                if table == "u64" && given == "f64"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("of type u64") && msg.contains("uses f64"),
        "{msg}"
    );
    let e = Hash::<i64, u64, Crc32c>::lookup(&z, "u64s", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(e, HashError::WrongType { what: "keys", .. }),
        "{e}"
    );
    // A struct and a byte array of its size are told apart, both ways.
    let _f = table(&z, "flows", 64);
    let e = Hash::<[u8; 16], u64, Crc32c>::lookup(&z, "flows", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(&e, HashError::WrongType { what: "keys", table, .. } if table.ends_with("FlowKey")),
        "{e}"
    );
    let e = Hash::<FlowKey, u64, Crc32c>::lookup(&z, "u64s", Crc32c::new(0)).unwrap_err();
    assert!(
        matches!(e, HashError::TypeMismatch { what: "keys", .. }),
        "{e}"
    );
    // The right types open it and see its keys.
    let u: Hash<u64, u64, Crc32c> = Hash::lookup(&z, "u64s", Crc32c::new(0)).unwrap();
    assert_eq!(
        u.lookup_data_with_hash(&1, u.hash(&1)).map(|x| x.1),
        Some(2)
    );
}

/// Fill a 64-entry table so that the next add of a key hashing to `h` must displace.
fn table_needing_displacement(
    z: &impl Zones,
    name: &str,
) -> (Hash<u32, u64, Crc32c>, Vec<(u32, u32)>) {
    let t: Hash<u32, u64, Crc32c> = Hash::create(z, name, Params::new(64), Crc32c::new(0)).unwrap();
    let mut keys = Vec::new();
    for k in 0..10_000u32 {
        let h = t.hash(&k);
        if t.add_with_hash(&k, h, &u64::from(k)).is_ok() {
            keys.push((k, h));
        }
        if t.count() >= 56 {
            break;
        }
    }
    (t, keys)
}

#[test]
fn a_dead_writer_is_taken_over_and_its_half_done_work_repaired() {
    let stops = [
        StopAt::AfterSlotFill,
        StopAt::MidDisplacement,
        StopAt::MidDelete,
        StopAt::MidUpdate,
    ];
    for (n, stop) in stops.into_iter().enumerate() {
        let z = LocalZones::new();
        let (t, mut keys) = table_needing_displacement(&z, &format!("dead{n}"));
        let dying_view = z.as_member(MemberId(1));
        let dying: Hash<u32, u64, Crc32c> =
            Hash::lookup(&dying_view, &format!("dead{n}"), Crc32c::new(0)).unwrap();
        let mut before = t.count();
        // The key of the add that stopped half-way (add stops only).
        let mut half_added = None;
        let stopped = match stop {
            StopAt::MidDelete => {
                let (k, h) = keys[5];
                dying.debug_delete_and_stop(&k, h, stop)
            }
            StopAt::MidUpdate => {
                let (k, h) = keys[5];
                dying.debug_add_and_stop(&k, h, &u64::MAX, stop)
            }
            _ => {
                // Add new keys until one stops where asked: an add that does not displace
                // completes normally (and its key joins the ones checked below).
                let mut stopped = false;
                for k in 100_000..200_000u32 {
                    let h = dying.hash(&k);
                    before = t.count();
                    if dying.debug_add_and_stop(&k, h, &u64::from(k), stop) {
                        stopped = true;
                        half_added = Some((k, h));
                        break;
                    }
                    if t.lookup_with_hash(&k, h).is_some() {
                        keys.push((k, h));
                    }
                }
                stopped
            }
        };
        assert!(stopped, "{stop:?}: the writer did not stop where asked");
        assert_eq!(t.debug_lock_holder(), Some(MemberId(1)));
        if stop != StopAt::MidUpdate {
            // The dead writer really left the table inconsistent (a duplicate, or a live slot
            // in no bucket): what follows tests the repair.
            assert!(t.check_consistency().is_err(), "{stop:?}");
        }
        // Readers are not blocked by the dead writer, and find every key it did not touch.
        for &(k, h) in &keys[6..] {
            assert_eq!(
                t.lookup_data_with_hash(&k, h),
                Some((t.lookup_with_hash(&k, h).unwrap(), u64::from(k))),
                "{stop:?} key {k}"
            );
        }
        z.set_member_state(MemberId(1), MemberState::Dead);
        // The next writer takes over and repairs.
        let (k, h) = keys[0];
        assert!(t.delete_with_hash(&k, h).is_some(), "{stop:?}");
        assert_eq!(t.debug_lock_holder(), None);
        t.check_consistency()
            .unwrap_or_else(|e| panic!("{stop:?}: {e}"));
        // `before` keys, minus the one deleted above, minus the half-deleted one, plus the
        // half-added one if the repair kept it (then with its value and position).
        let kept = half_added.is_some_and(|(k, h)| {
            let got = t.lookup_data_with_hash(&k, h);
            if let Some((pos, v)) = got {
                assert_eq!(v, u64::from(k), "{stop:?}: the half-added key's value");
                assert_eq!(t.get_key_with_position(pos), Some(k), "{stop:?}");
            }
            got.is_some()
        });
        let expect_count = match stop {
            StopAt::MidDelete => before - 2,
            _ => before - 1 + u32::from(kept),
        };
        assert_eq!(t.count(), expect_count, "{stop:?}");
        assert_eq!(
            t.iter().count(),
            expect_count as usize,
            "{stop:?}: the count is the number of keys"
        );
        for &(k, h) in &keys[6..] {
            assert_eq!(
                t.lookup_data_with_hash(&k, h).map(|x| x.1),
                Some(u64::from(k)),
                "{stop:?} key {k}"
            );
        }
        if stop == StopAt::MidUpdate {
            let (k, h) = keys[5];
            assert_eq!(
                t.lookup_data_with_hash(&k, h).map(|x| x.1),
                Some(u64::from(k)),
                "the half-written value is never seen"
            );
        }
    }
}

/// [`LocalZones`] whose liveness also tells the occupants of a member slot apart, as procctl's
/// does (its slot generation): slot `m` holds incarnation `incs[m]` (1 unless set).
#[derive(Debug, Clone)]
struct Slots {
    zones: LocalZones,
    incs: Arc<Mutex<HashMap<u16, u32>>>,
}

#[derive(Debug)]
struct SlotsLiveness {
    inner: Arc<dyn Liveness>,
    incs: Arc<Mutex<HashMap<u16, u32>>>,
}

impl Liveness for SlotsLiveness {
    fn member_state(&self, member: MemberId) -> MemberState {
        self.inner.member_state(member)
    }
    fn incarnation(&self, member: MemberId) -> Option<u32> {
        Some(*self.incs.lock().unwrap().get(&member.0).unwrap_or(&1))
    }
}

impl Zones for Slots {
    fn reserve(&self, req: &ZoneRequest<'_>) -> Result<Zone, ZoneError> {
        self.zones.reserve(req)
    }
    fn lookup(&self, name: &str) -> Result<Zone, ZoneError> {
        self.zones.lookup(name)
    }
    fn free(&self, name: &str) -> Result<(), ZoneError> {
        self.zones.free(name)
    }
    fn list(&self) -> Vec<ZoneInfo> {
        self.zones.list()
    }
    fn member(&self) -> MemberId {
        self.zones.member()
    }
    fn liveness(&self) -> Arc<dyn Liveness> {
        Arc::new(SlotsLiveness {
            inner: self.zones.liveness(),
            incs: self.incs.clone(),
        })
    }
}

#[test]
fn a_dead_writers_lock_is_taken_over_once_a_newcomer_has_its_slot() {
    let incs = Arc::new(Mutex::new(HashMap::new()));
    let base = LocalZones::new();
    let z0 = Slots {
        zones: base.clone(),
        incs: incs.clone(),
    };
    let z1 = Slots {
        zones: base.as_member(MemberId(1)),
        incs: incs.clone(),
    };
    let (t, keys) = table_needing_displacement(&z0, "reused");
    let before = t.count();
    let dying: Hash<u32, u64, Crc32c> = Hash::lookup(&z1, "reused", Crc32c::new(0)).unwrap();
    let k = 100_000u32;
    assert!(dying.debug_add_and_stop(&k, dying.hash(&k), &1, StopAt::AfterSlotFill));
    assert_eq!(t.debug_lock_holder(), Some(MemberId(1)));
    assert_eq!(t.debug_lock_incarnation(), Some(1));
    // Another member's writer waits while the holder lives.
    let t = Arc::new(t);
    let (tx, rx) = std::sync::mpsc::channel();
    let t2 = t.clone();
    let (k0, h0) = keys[0];
    std::thread::spawn(move || tx.send(t2.delete_with_hash(&k0, h0)).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a live holder's lock was taken"
    );
    assert_eq!(t.debug_lock_holder(), Some(MemberId(1)));
    // The holder dies; the group cleans its slot up and gives it to a newcomer: member 1 is
    // alive again, as another incarnation.
    drop(dying);
    incs.lock().unwrap().insert(1, 2);
    let deleted = rx.recv_timeout(Duration::from_secs(10)).expect(
        "the dead writer's lock was never taken over: its member slot's newcomer looks like it",
    );
    assert!(deleted.is_some());
    assert_eq!(t.debug_lock_holder(), None);
    t.check_consistency().unwrap();
    assert_eq!(t.count(), before - 1);
    assert_eq!(
        t.lookup_with_hash(&k, t.hash(&k)),
        None,
        "the half-added key"
    );
    for &(k, h) in &keys[1..] {
        assert_eq!(
            t.lookup_data_with_hash(&k, h).map(|x| x.1),
            Some(u64::from(k))
        );
    }
    // The newcomer writes, under its own incarnation.
    let newcomer: Hash<u32, u64, Crc32c> = Hash::lookup(&z1, "reused", Crc32c::new(0)).unwrap();
    let w = newcomer.writer();
    assert_eq!(t.debug_lock_holder(), Some(MemberId(1)));
    assert_eq!(t.debug_lock_incarnation(), Some(2));
    w.add_with_hash(&k, newcomer.hash(&k), &7).unwrap();
    drop(w);
    assert_eq!(
        t.lookup_data_with_hash(&k, t.hash(&k)).map(|x| x.1),
        Some(7)
    );
    assert_eq!(t.count(), before);
    t.check_consistency().unwrap();
}

#[test]
fn a_writer_that_panics_does_not_wedge_the_lock() {
    let z = LocalZones::new();
    let t = table(&z, "panicky", 64);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let w = t.writer();
        let k = flow(1);
        w.add_with_hash(&k, t.hash(&k), &1).unwrap();
        panic!("user code panics while holding the writer lock");
    }));
    assert!(r.is_err());
    assert_eq!(
        t.debug_lock_holder(),
        None,
        "the lock is released (marked for repair)"
    );
    let k = flow(2);
    let pos = t.add_with_hash(&k, t.hash(&k), &2).unwrap();
    assert_eq!(t.lookup_with_hash(&k, t.hash(&k)), Some(pos));
    assert!(t.lookup_with_hash(&flow(1), t.hash(&flow(1))).is_some());
    assert_eq!(t.count(), 2);
    t.check_consistency().unwrap();
}

#[test]
fn a_batch_writer_adds_and_deletes_under_one_lock() {
    let z = LocalZones::new();
    let t = table(&z, "batch", 256);
    let other = z.as_member(MemberId(2));
    let u: Table = Hash::lookup(&other, "batch", Crc32c::new(0)).unwrap();
    {
        let w = t.writer();
        assert_eq!(u.debug_lock_holder(), Some(MemberId(0)));
        for i in 0..100 {
            let k = flow(i);
            w.add_with_hash(&k, t.hash(&k), &u64::from(i)).unwrap();
        }
        // Readers in another member see the writes while the batch goes on.
        assert_eq!(
            u.lookup_data_with_hash(&flow(7), u.hash(&flow(7)))
                .unwrap()
                .1,
            7
        );
        for i in 0..50 {
            let k = flow(i);
            assert!(w.delete_with_hash(&k, t.hash(&k)).is_some());
        }
    }
    assert_eq!(u.debug_lock_holder(), None);
    assert_eq!(u.count(), 50);
    t.check_consistency().unwrap();
}

/// Deletes of keys that share one bucket and one signature, in an order where the key is
/// rarely the first candidate (a delete's short path checks the first candidate only), with
/// and without a batch writer: every other key stays, positions come back, the free stack and
/// count stay consistent.
#[test]
fn deletes_among_colliding_keys_in_any_lane() {
    let z = LocalZones::new();
    let t: Hash<FlowKey, u64, Always3> = Hash::create(&z, "dc", Params::new(64), Always3).unwrap();
    for round in 0..3u32 {
        let keys: Vec<FlowKey> = (0..8).map(|i| flow(i + 8 * round)).collect();
        let pos: Vec<u32> = keys
            .iter()
            .map(|k| t.add_with_hash(k, 3, &1).unwrap())
            .collect();
        let mut gone = [false; 8];
        for (n, &i) in [5usize, 0, 7, 2, 6, 1, 4, 3].iter().enumerate() {
            let got = if n % 2 == round as usize % 2 {
                t.delete_with_hash(&keys[i], 3)
            } else {
                t.writer().delete_with_hash(&keys[i], 3)
            };
            assert_eq!(got, Some(pos[i]), "round {round} key {i}");
            assert_eq!(t.delete_with_hash(&keys[i], 3), None);
            gone[i] = true;
            for (j, k) in keys.iter().enumerate() {
                assert_eq!(t.lookup_with_hash(k, 3), (!gone[j]).then_some(pos[j]));
            }
            assert_eq!(t.count(), 7 - n as u32);
            t.check_consistency().unwrap();
        }
    }
}
