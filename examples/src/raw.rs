//! The only unsafe code of the examples: reading and writing the bytes of pool objects this
//! process holds, and viewing words of a memzone as atomics.

use std::sync::atomic::AtomicU64;

use rte_mempool::{Mempool, Obj};
use shmconfig::Zone;

/// Copy `src` into the object `o` at byte `at`. Panics unless `o` is an object of `mp` and the
/// bytes fit in it.
pub(crate) fn write_obj(mp: &Mempool, o: Obj, at: usize, src: &[u8]) {
    assert!(
        mp.index_of(o).is_some(),
        "{o:?} is not an object of pool {}",
        mp.name()
    );
    assert!(
        at + src.len() <= mp.elt_size() as usize,
        "write past the object's end"
    );
    // SAFETY: `o` is an object of `mp` (checked) whose `elt_size` bytes lie in a zone `mp` keeps
    // mapped; the range is inside them (checked). The caller holds `o` (it got it from the pool
    // or received it), so by the pool's protocol no other process uses these bytes now; we write
    // through a raw pointer, never through a reference to shared memory.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), o.as_ptr().add(at), src.len()) }
}

/// Copy bytes of the object `o` from byte `at` into `dst`. Panics as [`write_obj`].
pub(crate) fn read_obj(mp: &Mempool, o: Obj, at: usize, dst: &mut [u8]) {
    assert!(
        mp.index_of(o).is_some(),
        "{o:?} is not an object of pool {}",
        mp.name()
    );
    assert!(
        at + dst.len() <= mp.elt_size() as usize,
        "read past the object's end"
    );
    // SAFETY: as in `write_obj`: the range lies inside an object of `mp` this process holds,
    // mapped while `mp` lives; we copy out through a raw pointer into our own buffer.
    unsafe { std::ptr::copy_nonoverlapping(o.as_ptr().add(at), dst.as_mut_ptr(), dst.len()) }
}

/// Word `i` of `zone` as an atomic. Panics if the word is not inside the zone.
pub(crate) fn zone_word(zone: &Zone, i: usize) -> &AtomicU64 {
    assert!(
        (i + 1) * 8 <= zone.len(),
        "word {i} is outside zone {}",
        zone.name()
    );
    assert!(
        (zone.as_ptr() as usize).is_multiple_of(8),
        "zone {} is not 8-aligned",
        zone.name()
    );
    // SAFETY: the word is inside the zone (checked) and 8-aligned (zones start aligned, checked),
    // the zone stays mapped while the borrow of `zone` lives, and every process touches these
    // words through atomics only.
    unsafe { AtomicU64::from_ptr(zone.as_ptr().add(i * 8).cast()) }
}
