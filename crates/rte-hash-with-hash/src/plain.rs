//! [`Plain`]: what keys and values may be, and the type identifiers a table records for them.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Plain fixed-size data that can live in shared memory: no pointers, no padding, any bit
/// pattern valid (zerocopy's `FromBytes + IntoBytes + Immutable`), with a stable identifier.
///
/// `TYPE_ID` is declared by the type, as a ring's element type declares its own
/// (`rte_ring::RingElement`): a table records its key type's and its value type's identifiers
/// (with their sizes) in its header, and [`crate::Hash::lookup`] refuses to open it with other
/// types, so two types of the same size (`u64` and `f64`, `u64` and `[u8; 8]`) are told apart.
/// Integers, floats, `()` and arrays of `Plain` types have identifiers already (a scalar's is
/// [`type_id_of`] its name, as for rings); a struct declares one, a name that says what its
/// bytes mean (change it when they change meaning):
///
/// ```
/// use rte_hash_with_hash::{type_id_of, Plain};
/// #[derive(Clone, Copy, zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
/// #[repr(C)]
/// struct FlowKey { src: u32, dst: u32, ports: u32, proto: u32 }
/// impl Plain for FlowKey {
///     const TYPE_ID: u64 = type_id_of("myapp::FlowKey v1");
/// }
/// assert_ne!(<[u8; 8]>::TYPE_ID, u64::TYPE_ID);
/// assert_ne!(f64::TYPE_ID, u64::TYPE_ID);
/// ```
pub trait Plain: FromBytes + IntoBytes + Immutable + Copy {
    /// The type's stable identifier (see [`type_id_of`]).
    const TYPE_ID: u64;
}

use shmconfig::typeid::type_id_extend;
/// A stable 64-bit identifier for a type name (FNV-1a of its UTF-8 bytes, the same function
/// as `rte_ring::type_id_of`), for [`Plain::TYPE_ID`].
pub use shmconfig::typeid::type_id_of;

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            const TYPE_ID: u64 = type_id_of(stringify!($t));
        }
    )*};
}
scalar!(u8, u16, u32, u64, u128, usize);
scalar!(i8, i16, i32, i64, i128, isize);
scalar!(f32, f64, ());

/// `[T; N]`: its element's identifier and its length, folded into `"[T; N]"`'s.
impl<T: Plain, const N: usize> Plain for [T; N] {
    const TYPE_ID: u64 = type_id_extend(
        type_id_extend(type_id_of("[T; N]"), &T::TYPE_ID.to_le_bytes()),
        &(N as u64).to_le_bytes(),
    );
}

/// Up to 32 bytes of `T`'s name, for the header (messages only: identity is [`Plain::TYPE_ID`]),
/// cut at a character boundary.
pub(crate) fn short_type_name<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    let mut end = n.len().min(TYPE_NAME_MAX);
    while !n.is_char_boundary(end) {
        end -= 1;
    }
    &n[..end]
}

/// Bytes of a type name a table records.
pub(crate) const TYPE_NAME_MAX: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_tell_same_sized_types_apart() {
        let ids = [
            u64::TYPE_ID,
            i64::TYPE_ID,
            f64::TYPE_ID,
            <[u8; 8]>::TYPE_ID,
            <[u32; 2]>::TYPE_ID,
            <[u16; 4]>::TYPE_ID,
            <[[u8; 4]; 2]>::TYPE_ID,
            <[u8; 16]>::TYPE_ID,
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(u64::TYPE_ID, type_id_of("u64"));
        assert_eq!(short_type_name::<[u8; 8]>(), "[u8; 8]");
        assert!(short_type_name::<[[[u64; 100]; 100]; 100]>().len() <= TYPE_NAME_MAX);
    }
}
