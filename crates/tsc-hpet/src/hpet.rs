//! The HPET: `/dev/hpet` mapped read-only, its period, and its main counter (64-bit where the
//! hardware says so, otherwise extended across 32-bit wraps without a background thread).

use std::path::Path;
use std::sync::Arc;

use crate::error::HpetUnavailable;
use crate::raw::{self, RegisterWindow, TestPage};
use crate::sync::{AtomicU64, Ordering};
use crate::{Clock, ClockKind, FrequencySource};

/// Offset of the General Capabilities and ID register.
pub const REG_CAPABILITIES: usize = 0x000;
/// Offset of the General Configuration register.
pub const REG_CONFIG: usize = 0x010;
/// Offset of the Main Counter Value register.
pub const REG_COUNTER: usize = 0x0F0;
/// Bytes of register window needed to read every register above.
pub const WINDOW_NEEDED: usize = REG_COUNTER + 8;
/// `COUNT_SIZE_CAP`, bit 13 of the capabilities register: the main counter is 64 bits wide.
pub const CAP_COUNT_SIZE: u64 = 1 << 13;
/// `ENABLE_CNF`, bit 0 of the configuration register: the main counter runs.
pub const CONFIG_ENABLE: u64 = 1;
/// The largest period the HPET specification allows: 100 ns, in femtoseconds.
pub const MAX_PERIOD_FS: u64 = 100_000_000;
/// The device node.
pub const DEVICE: &str = "/dev/hpet";

/// What the capabilities register says, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpetCapabilities {
    /// Femtoseconds per counter tick (bits 63:32).
    pub period_fs: u64,
    /// Whether the main counter is 64 bits wide (`COUNT_SIZE_CAP`, bit 13).
    pub counter_64bit: bool,
    /// Ticks per second: 10^15 / period, rounded to the nearest Hz.
    pub hz: u64,
    /// Vendor ID (bits 31:16).
    pub vendor: u16,
    /// Number of comparators (timers), from `NUM_TIM_CAP` (bits 12:8) + 1.
    pub timers: u8,
}

impl HpetCapabilities {
    /// Decode the capabilities register (offset 0x000), checking the period.
    ///
    /// ```
    /// // QEMU's HPET: 10 ns period (100 MHz), 64-bit counter, vendor 0x8086, 3 timers.
    /// let caps = tsc_hpet::HpetCapabilities::decode(0x0098_9680_8086_a201).unwrap();
    /// assert_eq!((caps.hz, caps.counter_64bit, caps.timers), (100_000_000, true, 3));
    /// ```
    pub fn decode(capabilities: u64) -> Result<HpetCapabilities, HpetUnavailable> {
        let period_fs = capabilities >> 32;
        if period_fs == 0 || period_fs > MAX_PERIOD_FS {
            return Err(HpetUnavailable::BadPeriod {
                capabilities,
                period_fs,
            });
        }
        Ok(HpetCapabilities {
            period_fs,
            counter_64bit: capabilities & CAP_COUNT_SIZE != 0,
            hz: period_to_hz(period_fs),
            vendor: (capabilities >> 16) as u16,
            timers: ((capabilities >> 8) & 0x1f) as u8 + 1,
        })
    }
}

/// 10^15 / `period_fs`, rounded to the nearest Hz (`period_fs` must be non-zero).
///
/// ```
/// assert_eq!(tsc_hpet::hpet::period_to_hz(69_841_279), 14_318_180); // the classic 14.31818 MHz
/// assert_eq!(tsc_hpet::hpet::period_to_hz(10_000_000), 100_000_000);
/// ```
pub fn period_to_hz(period_fs: u64) -> u64 {
    const FS_PER_S: u64 = 1_000_000_000_000_000;
    (FS_PER_S + period_fs / 2) / period_fs
}

/// Extend a 32-bit counter reading `low` to 64 bits, given `state`, the last extended value any
/// reader returned (shared by all readers of one counter).
///
/// The reading is placed within half a wrap (2^31 ticks) of `state`: ahead of it when the
/// counter moved on (including across a wrap, when `low` is numerically smaller), behind it when
/// another reader stored a later value after this reading was taken. `state` only moves forward
/// (compare-and-swap), so concurrent readers never make it go backwards and each reader's values
/// are monotonic.
///
/// Correct as long as the counter is read (by anyone sharing `state`) at least once every 2^31
/// ticks: 150 s at 14.318 MHz, 21.4 s at 100 MHz. No background thread does it for you.
pub fn extend_32(state: &AtomicU64, low: u32) -> u64 {
    let mut last = state.load(Ordering::Acquire);
    loop {
        // Signed distance from the last stored reading, in [-2^31, 2^31).
        let delta = i64::from(low.wrapping_sub(last as u32) as i32);
        let value = last.wrapping_add_signed(delta);
        if delta <= 0 {
            // Same as or older than what another reader already stored: don't move it back.
            return value;
        }
        match state.compare_exchange_weak(last, value, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return value,
            Err(now) => last = now,
        }
    }
}

/// The HPET's main counter as a [`Clock`].
///
/// `cycles()` is the main counter. Every register access is 32 bits wide (the specification
/// allows it on all hardware; QEMU's HPET long accepted nothing wider). Where `COUNT_SIZE_CAP`
/// says the counter is 64 bits wide it is read high, low, high (retried if the high half moved,
/// so a carry never tears the value); otherwise the 32-bit counter is read once and extended
/// with [`extend_32`] over state
/// kept in this `Hpet` (shared by all threads using it). **A 32-bit HPET must be read at least
/// once every 2^31 ticks** (150 s at 14.318 MHz) for the extension to stay right, and its upper
/// 32 bits count wraps seen since this process opened it, so absolute readings of a 32-bit HPET
/// are comparable between threads of one process, not between processes (durations are right
/// everywhere). A 64-bit HPET (QEMU's, and most modern chipsets) has none of these limits.
///
/// An HPET register read is an uncached MMIO load (in a VM, an exit to the hypervisor): about
/// 0.5-1 µs or more, and a 64-bit reading takes three. Far slower than the TSC: use it as a
/// reference (see [`compare`](crate::compare())) rather than for per-packet timestamps.
#[derive(Debug)]
pub struct Hpet {
    regs: RegisterWindow,
    caps: HpetCapabilities,
    /// Last extended value of a 32-bit counter (unused for 64-bit counters).
    wrap: AtomicU64,
}

impl Hpet {
    /// Open `/dev/hpet` read-only, map its registers read-only, and check them.
    ///
    /// On this kind of machine (no HPET) it returns [`HpetUnavailable::NoDevice`]:
    /// ```
    /// match tsc_hpet::Hpet::open() {
    ///     Ok(hpet) => println!("HPET at {} Hz", tsc_hpet::Clock::hz(&hpet)),
    ///     Err(why) => println!("no HPET: {why}"),
    /// }
    /// ```
    pub fn open() -> Result<Hpet, HpetUnavailable> {
        Hpet::open_path(Path::new(DEVICE))
    }

    /// [`Hpet::open`] with another device node (for tests of the failure reasons).
    pub fn open_path(path: &Path) -> Result<Hpet, HpetUnavailable> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err(HpetUnavailable::Unsupported);
        }
        let window = raw::map_device(path)?;
        if let Some(len) = iomem_hpet_len() {
            if len < WINDOW_NEEDED {
                return Err(HpetUnavailable::RegionTooSmall {
                    at: "/proc/iomem".into(),
                    len,
                    needed: WINDOW_NEEDED,
                });
            }
        }
        Hpet::from_window(window, &path.display().to_string())
    }

    /// Check and decode a register window.
    pub(crate) fn from_window(regs: RegisterWindow, at: &str) -> Result<Hpet, HpetUnavailable> {
        if regs.len() < WINDOW_NEEDED {
            return Err(HpetUnavailable::RegionTooSmall {
                at: at.to_owned(),
                len: regs.len(),
                needed: WINDOW_NEEDED,
            });
        }
        let caps = HpetCapabilities::decode(regs.read_static_u64(REG_CAPABILITIES))?;
        let config = regs.read_static_u64(REG_CONFIG);
        if config & CONFIG_ENABLE == 0 {
            return Err(HpetUnavailable::CounterHalted { config });
        }
        let wrap = AtomicU64::new(if caps.counter_64bit {
            0
        } else {
            u64::from(regs.read_u32(REG_COUNTER))
        });
        Ok(Hpet { regs, caps, wrap })
    }

    /// The decoded capabilities register.
    pub fn capabilities(&self) -> HpetCapabilities {
        self.caps
    }

    /// The counter period in femtoseconds.
    pub fn period_fs(&self) -> u64 {
        self.caps.period_fs
    }
}

impl Clock for Hpet {
    #[inline]
    fn cycles(&self) -> u64 {
        if self.caps.counter_64bit {
            self.regs.read_counter_u64(REG_COUNTER)
        } else {
            extend_32(&self.wrap, self.regs.read_u32(REG_COUNTER))
        }
    }

    fn hz(&self) -> u64 {
        self.caps.hz
    }

    fn kind(&self) -> ClockKind {
        ClockKind::Hpet
    }

    fn source(&self) -> FrequencySource {
        FrequencySource::Hpet
    }
}

/// The size of the HPET's MMIO window from `/proc/iomem` (`fed00000-fed003ff : HPET 0`), when
/// it is listed with real addresses (root sees them; others see zeros, which tell nothing).
fn iomem_hpet_len() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/iomem").ok()?;
    parse_iomem_hpet_len(&text)
}

/// Parse the length of the first `HPET` region of `/proc/iomem`'s text; `None` when absent or
/// when the addresses are hidden (all zeros).
pub fn parse_iomem_hpet_len(iomem: &str) -> Option<usize> {
    iomem.lines().find_map(|line| {
        let (range, name) = line.split_once(" : ")?;
        if !name.trim().starts_with("HPET") {
            return None;
        }
        let (start, end) = range.trim().split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        if start == 0 && end == 0 {
            return None;
        }
        usize::try_from(end.checked_sub(start)? + 1).ok()
    })
}

/// An anonymous page laid out like the HPET's registers, with a main counter you advance by
/// hand: for tests of the register decoding and of the 32-bit wrap extension on machines
/// without an HPET. All accesses are atomic, so a test may advance it while other threads read.
///
/// ```
/// use tsc_hpet::{Clock, HpetTestPage};
/// let page = HpetTestPage::new(69_841_279, false).unwrap(); // 14.31818 MHz, 32-bit counter
/// page.set_counter(0xffff_fff0);
/// let hpet = page.hpet().unwrap();
/// assert_eq!(hpet.cycles(), 0xffff_fff0);
/// page.advance(0x20); // wraps to 0x10
/// assert_eq!(hpet.cycles(), 0x1_0000_0010);
/// ```
#[derive(Debug, Clone)]
pub struct HpetTestPage {
    page: Arc<TestPage>,
}

impl HpetTestPage {
    /// A page whose capabilities register says `period_fs` and a 64-bit counter if
    /// `counter_64bit`, with the counter enabled and at zero. Vendor 0x8086, 3 timers, as QEMU.
    pub fn new(period_fs: u64, counter_64bit: bool) -> std::io::Result<HpetTestPage> {
        let page = HpetTestPage {
            page: Arc::new(TestPage::new()?),
        };
        let caps = (period_fs << 32)
            | (0x8086 << 16)
            | (2 << 8)
            | if counter_64bit { CAP_COUNT_SIZE } else { 0 }
            | 1;
        page.set_register(REG_CAPABILITIES, caps);
        page.set_register(REG_CONFIG, CONFIG_ENABLE);
        Ok(page)
    }

    /// Write any register (e.g. a bad capabilities value, or a halted configuration).
    pub fn set_register(&self, offset: usize, value: u64) {
        self.page.store(offset, value);
    }

    /// Set the main counter. For a 32-bit counter only the low 32 bits are visible.
    pub fn set_counter(&self, value: u64) {
        self.page.store(REG_COUNTER, self.mask(value));
    }

    /// Advance the main counter by `ticks`, wrapping as the hardware would; returns the new
    /// value.
    pub fn advance(&self, ticks: u64) -> u64 {
        if self.is_64bit() {
            self.page.fetch_add(REG_COUNTER, ticks)
        } else {
            // Keep the upper half zero, as a 32-bit counter reads.
            let new = self.mask(self.page.fetch_add(REG_COUNTER, ticks));
            self.page.store(REG_COUNTER, new);
            new
        }
    }

    /// The main counter as the hardware holds it.
    pub fn counter(&self) -> u64 {
        self.page.load(REG_COUNTER)
    }

    /// An [`Hpet`] reading this page (the page stays mapped while it lives).
    pub fn hpet(&self) -> Result<Hpet, HpetUnavailable> {
        self.hpet_with_window(WINDOW_NEEDED.max(1024))
    }

    /// An [`Hpet`] over only the first `len` bytes of the page (to exercise
    /// [`HpetUnavailable::RegionTooSmall`]).
    pub fn hpet_with_window(&self, len: usize) -> Result<Hpet, HpetUnavailable> {
        Hpet::from_window(self.page.window(len), "the HPET test page")
    }

    fn is_64bit(&self) -> bool {
        self.page.load(REG_CAPABILITIES) & CAP_COUNT_SIZE != 0
    }

    fn mask(&self, v: u64) -> u64 {
        if self.is_64bit() {
            v
        } else {
            v & 0xffff_ffff
        }
    }
}
