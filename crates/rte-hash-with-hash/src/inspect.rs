//! Reading a table without knowing its key and value types, for inspection tools
//! (`proc_info`): what [`inspect`] returns.

use std::sync::atomic::Ordering::Relaxed;

use shmconfig::Zone;

use crate::layout::{FLAG_EXT, H_COUNT, H_ENTRIES, H_EXT};
use crate::{HashError, HashFnId};

/// What a table records about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashInfo {
    /// The table's name (its zone's name).
    pub name: String,
    /// The number of keys it was created for.
    pub entries: u32,
    /// Keys in it now.
    pub count: u32,
    /// Key size in bytes.
    pub key_size: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Whether it has extendable buckets.
    pub extendable: bool,
    /// The hash function it was built with.
    pub hash_fn: HashFnId,
}

/// Read a table's header from its zone (of kind `ZoneKind::Hash`), checking magic, version and
/// layout as [`crate::Hash::lookup`] does, without knowing its key and value types.
///
/// ```
/// use rte_hash_with_hash::{inspect, Crc32c, Hash, Params};
/// use shmconfig::{LocalZones, Zones};
/// let zones = LocalZones::new();
/// let h = Hash::<u32, u64, _>::create(&zones, "flows", Params::new(64), Crc32c::new(0)).unwrap();
/// h.add_with_hash(&7, h.hash(&7), &70).unwrap();
/// let info = inspect(&zones.lookup("flows").unwrap()).unwrap();
/// assert_eq!((info.count, info.entries, info.key_size, info.value_size), (1, 64, 4, 8));
/// ```
pub fn inspect(zone: &Zone) -> Result<HashInfo, HashError> {
    let crate::table::Header {
        mem,
        key_size,
        value_size,
        hash_fn,
        ..
    } = crate::table::open_header(zone.name(), zone.clone())?;
    Ok(HashInfo {
        name: zone.name().to_string(),
        entries: mem.w(H_ENTRIES).load(Relaxed) as u32,
        count: mem.w(H_COUNT).load(Relaxed) as u32,
        key_size,
        value_size,
        extendable: (mem.w(H_EXT).load(Relaxed) >> 32) as u32 & FLAG_EXT != 0,
        hash_fn,
    })
}
