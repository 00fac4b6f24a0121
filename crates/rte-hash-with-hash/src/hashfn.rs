//! Hash functions the table can be built with, named by a stable identifier instead of a code
//! pointer.
//!
//! DPDK's `rte_hash` stores the address of its hash function in shared memory, which is garbage
//! in any other binary (or the same binary under ASLR). Here the function is a type parameter
//! ([`HashFn`]) and the table records its [`HashFnId`]: its name, its seed and a check value
//! computed by hashing fixed test vectors. Opening a table with a function whose identifier
//! differs is refused, so two different functions can never pass as one.

use std::fmt;

use crate::raw;

/// Longest [`HashFn::NAME`] in bytes.
pub const HASH_NAME_MAX: usize = 32;

/// A 32-bit hash function over key bytes.
///
/// Implementations must be pure: the same bytes and seed give the same value in every process,
/// on every machine, in every build. The table stores [`HashFnId`] (name, seed, check value) and
/// refuses to open with another function.
///
/// ```
/// use rte_hash_with_hash::{Crc32c, HashFn};
/// let h = Crc32c::new(0);
/// assert_eq!(h.hash(b"123456789"), Crc32c::portable(0).hash(b"123456789"));
/// ```
pub trait HashFn {
    /// Stable name of the function (at most [`HASH_NAME_MAX`] bytes), such as `"crc32c"`.
    const NAME: &'static str;
    /// Hash `key`.
    fn hash(&self, key: &[u8]) -> u32;
    /// The seed (initial value) this instance uses.
    fn seed(&self) -> u32;
    /// The identifier a table records for this function and seed.
    fn id(&self) -> HashFnId {
        HashFnId {
            name: Self::NAME.to_owned(),
            seed: self.seed(),
            check: check_value(|k| self.hash(k)),
        }
    }
}

/// The stable identifier of a hash function, as recorded in a table's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashFnId {
    /// [`HashFn::NAME`].
    pub name: String,
    /// [`HashFn::seed`].
    pub seed: u32,
    /// The function's values over [`CHECK_VECTORS`], folded into one number.
    pub check: u32,
}

impl fmt::Display for HashFnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (seed {:#010x}, check value {:#010x})",
            self.name, self.seed, self.check
        )
    }
}

/// The fixed test vectors hashed to compute [`HashFnId::check`].
pub const CHECK_VECTORS: [&[u8]; 8] = [
    b"",
    b"a",
    b"hugeshare",
    &[0, 0, 0, 0],
    &[0xff; 16],
    b"123456789",
    b"rte-hash-with-hash check vector, 48 bytes long!!",
    &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
        48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    ],
];

/// Fold the hashes of [`CHECK_VECTORS`] into one value.
fn check_value(h: impl Fn(&[u8]) -> u32) -> u32 {
    CHECK_VECTORS.iter().fold(0x811c_9dc5u32, |acc, v| {
        (acc ^ h(v)).rotate_left(13).wrapping_mul(0x0100_0193)
    })
}

/// CRC32-C (Castagnoli) over the key bytes, starting from the seed, as DPDK's `rte_hash_crc`
/// does: 8 bytes at a time, then 4, then single bytes, no inversion.
///
/// Uses the SSE4.2 `crc32` instruction when the CPU has it (detected at run time, once, in
/// [`Crc32c::new`]) and a table otherwise; both give the same values (tested).
#[derive(Debug, Clone, Copy)]
pub struct Crc32c {
    seed: u32,
    hw: bool,
}

impl Crc32c {
    /// CRC32-C with `seed`, using the CPU instruction if present.
    pub fn new(seed: u32) -> Self {
        Self {
            seed,
            hw: raw::has_crc32_instruction(),
        }
    }

    /// CRC32-C with `seed`, always computed with the portable table.
    pub fn portable(seed: u32) -> Self {
        Self { seed, hw: false }
    }

    /// Whether this instance uses the CPU instruction.
    pub fn uses_cpu_instruction(&self) -> bool {
        self.hw
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new(0)
    }
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C_TABLE: [u32; 256] = crc32c_table();

fn crc32c_sw(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

impl HashFn for Crc32c {
    const NAME: &'static str = "crc32c";
    #[inline]
    fn hash(&self, key: &[u8]) -> u32 {
        if self.hw {
            raw::crc32c_hw(self.seed, key)
        } else {
            crc32c_sw(self.seed, key)
        }
    }
    fn seed(&self) -> u32 {
        self.seed
    }
}

/// MurmurHash3, 32-bit variant (`MurmurHash3_x86_32`): a portable hash with good mixing on
/// every CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct Murmur3 {
    seed: u32,
}

impl Murmur3 {
    /// Murmur3 with `seed`.
    pub fn new(seed: u32) -> Self {
        Self { seed }
    }
}

impl HashFn for Murmur3 {
    const NAME: &'static str = "murmur3-32";
    fn hash(&self, key: &[u8]) -> u32 {
        const C1: u32 = 0xcc9e_2d51;
        const C2: u32 = 0x1b87_3593;
        let mut h = self.seed;
        let mut chunks = key.chunks_exact(4);
        for ch in &mut chunks {
            let mut k = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
            k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
            h ^= k;
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut k = 0u32;
            for (i, &b) in rest.iter().enumerate() {
                k |= u32::from(b) << (8 * i);
            }
            k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
            h ^= k;
        }
        h ^= key.len() as u32;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
    fn seed(&self) -> u32 {
        self.seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_values() {
        // The standard CRC-32C check value: inverted before and after, "123456789" → e3069283.
        assert_eq!(!crc32c_sw(!0, b"123456789"), 0xe306_9283);
        if Crc32c::new(0).uses_cpu_instruction() {
            assert_eq!(!raw::crc32c_hw(!0, b"123456789"), 0xe306_9283);
        } else {
            eprintln!("NOTE: this CPU has no SSE4.2 crc32 instruction; only the table was checked");
        }
    }

    #[test]
    fn crc32c_instruction_and_table_agree() {
        let hw = Crc32c::new(0x1234_5678);
        let sw = Crc32c::portable(0x1234_5678);
        if !hw.uses_cpu_instruction() {
            eprintln!("NOTE: this CPU has no SSE4.2 crc32 instruction; nothing to compare");
            return;
        }
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            for start in 0..3 {
                let d = &data[start..start + len.min(data.len() - start)];
                assert_eq!(hw.hash(d), sw.hash(d), "length {} start {start}", d.len());
            }
        }
        assert_eq!(hw.id(), sw.id());
    }

    #[test]
    fn murmur3_matches_reference_vectors() {
        // Published MurmurHash3_x86_32 test vectors.
        assert_eq!(Murmur3::new(0).hash(b""), 0);
        assert_eq!(Murmur3::new(1).hash(b""), 0x514e_28b7);
        assert_eq!(Murmur3::new(0xffff_ffff).hash(b""), 0x81f1_6f39);
        assert_eq!(Murmur3::new(0).hash(b"test"), 0xba6b_d213);
        assert_eq!(
            Murmur3::new(0x9747_b28c).hash(b"Hello, world!"),
            0x2488_4cba
        );
        assert_eq!(Murmur3::new(0).hash(&[0, 0, 0, 0]), 0x2362_f9de);
    }

    #[test]
    fn ids_tell_functions_and_seeds_apart() {
        let a = Crc32c::new(0).id();
        let b = Crc32c::new(1).id();
        let c = Murmur3::new(0).id();
        assert_ne!(a, b);
        assert_ne!(a.check, b.check);
        assert_ne!(a, c);
        assert_ne!(a.check, c.check);
        assert_eq!(a.name, "crc32c");
        assert!(a.to_string().contains("crc32c"));
    }
}
