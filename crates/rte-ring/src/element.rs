//! [`RingElement`]: what a ring may carry, and how the header names it.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A fixed-size element a ring can carry.
///
/// The zerocopy bounds say that every bit pattern is a valid value and that the value has no
/// padding, so an element can be copied through shared memory as plain bytes whoever wrote them.
/// `TYPE_ID` is a stable identifier the caller declares; it is recorded in the ring's header with
/// the element's size and alignment, and [`crate::Ring::lookup`] refuses a ring whose recorded
/// type differs (two types of the same size are told apart).
///
/// ```
/// use rte_ring::{type_id_of, RingElement};
/// #[derive(Clone, Copy, zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
/// #[repr(C)]
/// struct Packet { port: u32, len: u32, addr: u64 }
/// impl RingElement for Packet {
///     const TYPE_ID: u64 = type_id_of("myapp::Packet v1");
/// }
/// ```
pub trait RingElement: Copy + FromBytes + IntoBytes + Immutable + Send + Sync + 'static {
    /// The caller's identifier for this type (see [`type_id_of`]).
    const TYPE_ID: u64;
}

/// A stable 64-bit identifier for a type name (FNV-1a of its UTF-8 bytes), for
/// [`RingElement::TYPE_ID`]: shmconfig's, so a type has the same identifier in every crate.
pub use shmconfig::typeid::type_id_of;

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl RingElement for $t {
            const TYPE_ID: u64 = type_id_of(stringify!($t));
        }
    )*};
}
scalar!(u32, i32, u64, i64, u128, i128, f32, f64);

impl<const N: usize> RingElement for [u8; N] {
    const TYPE_ID: u64 = type_id_of("[u8; N]") ^ (N as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
}
impl<const N: usize> RingElement for [u32; N] {
    const TYPE_ID: u64 = type_id_of("[u32; N]") ^ (N as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
}
impl<const N: usize> RingElement for [u64; N] {
    const TYPE_ID: u64 = type_id_of("[u64; N]") ^ (N as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
}
