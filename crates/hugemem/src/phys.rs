//! Physical addresses from `/proc/self/pagemap`.

use crate::segment::base_page_size;

/// The physical address of the byte at `ptr`, from `/proc/self/pagemap` (needs
/// `CAP_SYS_ADMIN`; the page must be present, so touch it first).
pub fn phys_addr(ptr: *const u8) -> Result<u64, crate::PhysAddrUnavailable> {
    use crate::PhysAddrUnavailable as E;
    use std::io::{Read, Seek, SeekFrom};
    let addr = ptr.addr();
    let ps = base_page_size() as usize;
    let mut f = std::fs::File::open("/proc/self/pagemap").map_err(E::Io)?;
    f.seek(SeekFrom::Start(((addr / ps) * 8) as u64))
        .map_err(E::Io)?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(E::Io)?;
    let entry = u64::from_ne_bytes(b);
    if entry & (1 << 63) == 0 {
        return Err(E::NotPresent { addr });
    }
    let pfn = entry & ((1 << 55) - 1);
    if pfn == 0 {
        return Err(E::NotPermitted);
    }
    Ok(pfn * ps as u64 + (addr % ps) as u64)
}
