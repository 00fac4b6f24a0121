//! Stable identifiers of the element, key and value types that shared structures record in
//! their headers (a ring's elements, a hash's keys and values), so that a process opening a
//! structure with another type of the same size is refused. One function for every crate, so
//! that the same type gets the same identifier everywhere.

/// A stable 64-bit identifier for a type name: FNV-1a of its UTF-8 bytes.
///
/// ```
/// use shmconfig::typeid::type_id_of;
/// assert_eq!(type_id_of("u64"), type_id_of("u64"));
/// assert_ne!(type_id_of("u64"), type_id_of("f64"));
/// ```
pub const fn type_id_of(name: &str) -> u64 {
    type_id_extend(0xcbf2_9ce4_8422_2325, name.as_bytes())
}

/// Continue identifier `h` over `bytes` (FNV-1a): how a composite type folds its parts'
/// identifiers into its own.
pub const fn type_id_extend(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}
