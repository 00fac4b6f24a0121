//! Reserved virtual-address windows, so a group can lay its segments out at a known base.

use crate::error::HugememError;
use crate::raw;
use crate::segment::base_page_size;

/// The alignment of a window placed by the kernel: 1 GiB, enough for any hugepage size on x86.
pub const WINDOW_ALIGN: usize = 1 << 30;

/// A range of address space reserved by this process (`PROT_NONE`, `MAP_NORESERVE`: it costs
/// no memory). Segments are mapped inside it with [`MapOptions::addr`](crate::MapOptions);
/// dropping a segment puts the reservation back, and dropping the window releases the parts
/// no segment occupies (segments still mapped stay mapped until they are dropped).
///
/// ```
/// # fn main() -> Result<(), hugemem::HugememError> {
/// let w = hugemem::VaWindow::reserve(64 << 20, None)?;
/// assert_eq!(w.base() % hugemem::WINDOW_ALIGN, 0);
/// assert_eq!(w.len(), 64 << 20);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct VaWindow {
    id: u64,
    base: usize,
    len: usize,
}

impl VaWindow {
    /// Reserves `len` bytes (rounded up to the base page size): at `hint` if that range is
    /// free, otherwise wherever the kernel finds room, aligned to [`WINDOW_ALIGN`]. Check
    /// [`base`](VaWindow::base) to learn which.
    pub fn reserve(len: usize, hint: Option<usize>) -> Result<VaWindow, HugememError> {
        Self::reserve_aligned(len, hint, WINDOW_ALIGN)
    }

    /// Like [`reserve`](VaWindow::reserve) with another alignment (a power of two) for the
    /// kernel-chosen base.
    pub fn reserve_aligned(
        len: usize,
        hint: Option<usize>,
        align: usize,
    ) -> Result<VaWindow, HugememError> {
        let ps = base_page_size() as usize;
        if len == 0 || !align.is_power_of_two() {
            return Err(HugememError::InvalidRequest {
                detail: format!(
                    "a window needs a length > 0 and a power-of-two alignment (got {len}, {align})"
                ),
            });
        }
        let len = len.div_ceil(ps) * ps;
        let align = align.max(ps);
        let (id, base) = raw::reserve_window(len, hint, align)
            .map_err(|e| HugememError::sys(format!("reserve {len} bytes of address space"), e))?;
        Ok(VaWindow { id, base, len })
    }

    /// The first address of the window.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a window is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr..addr+len` lies inside the window.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.base
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= self.base + self.len)
    }
}

impl Drop for VaWindow {
    fn drop(&mut self) {
        raw::release_window(self.id);
    }
}
