//! The HPET: the typed reasons on this machine (no /dev/hpet), and the register decoding over a
//! page (anonymous, or a file) laid out like the hardware, with a counter advanced by hand.
#![cfg(not(loom))] // these use std atomics; `tests/loom_wrap.rs` is the loom model

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tsc_hpet::hpet::{
    extend_32, parse_iomem_hpet_len, CAP_COUNT_SIZE, CONFIG_ENABLE, REG_CAPABILITIES, REG_CONFIG,
    REG_COUNTER, WINDOW_NEEDED,
};
use tsc_hpet::{choose, Clock, ClockError, ClockKind, Hpet, HpetTestPage, HpetUnavailable};

const PERIOD_14MHZ: u64 = 69_841_279; // 14.31818 MHz
const PERIOD_100MHZ: u64 = 10_000_000; // QEMU

#[test]
fn no_hpet_here_gives_the_typed_reason_and_a_useful_message() {
    if Path::new("/dev/hpet").exists() {
        eprintln!(
            "SKIPPED no_hpet_here_gives_the_typed_reason_and_a_useful_message: this machine HAS \
             /dev/hpet; the no-device path is checked with a missing path below instead"
        );
        return;
    }
    let err = Hpet::open().expect_err("no /dev/hpet on this machine, open must fail");
    assert!(
        matches!(&err, HpetUnavailable::NoDevice { path } if path == Path::new("/dev/hpet")),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("/dev/hpet"), "{msg}");
    assert!(
        msg.contains("TSC"),
        "the message must say what to use instead: {msg}"
    );

    // Forcing the HPET as the group's clock fails with the same reason.
    let err = choose(Some(ClockKind::Hpet)).expect_err("forced HPET must fail here");
    assert!(
        matches!(
            err,
            ClockError::HpetUnavailable(HpetUnavailable::NoDevice { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn missing_device_path_is_no_device() {
    let err = Hpet::open_path(Path::new("/nonexistent/hpet")).unwrap_err();
    assert!(matches!(err, HpetUnavailable::NoDevice { .. }), "{err:?}");
}

#[test]
fn device_that_refuses_mmap_is_mmap_refused() {
    // /dev/null is a character device, like /dev/hpet on a kernel without HPET_MMAP: it opens
    // but cannot be mapped.
    let err = Hpet::open_path(Path::new("/dev/null")).unwrap_err();
    assert!(
        matches!(err, HpetUnavailable::MmapRefused { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("CONFIG_HPET_MMAP") && msg.contains("hpet_mmap=1"),
        "{msg}"
    );
}

/// A file laid out like the hardware's register block.
fn register_file(caps: u64, config: u64, counter: u64, len: usize) -> tempfile_lite::TempFile {
    let mut bytes = vec![0u8; len];
    let mut put = |off: usize, v: u64| {
        if off + 8 <= len {
            bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
    };
    put(REG_CAPABILITIES, caps);
    put(REG_CONFIG, config);
    put(REG_COUNTER, counter);
    tempfile_lite::TempFile::with_contents(&bytes)
}

#[test]
fn a_file_laid_out_like_the_hardware_is_decoded() {
    // QEMU's capabilities: 10 ns period, 64-bit counter, vendor 8086, 3 timers.
    let f = register_file(0x0098_9680_8086_a201, CONFIG_ENABLE, 0x1234_5678_9abc, 1024);
    let hpet = Hpet::open_path(f.path()).expect("file laid out like an HPET");
    assert_eq!(hpet.hz(), 100_000_000);
    assert_eq!(hpet.period_fs(), 10_000_000);
    assert!(hpet.capabilities().counter_64bit);
    assert_eq!(hpet.capabilities().vendor, 0x8086);
    assert_eq!(hpet.capabilities().timers, 3);
    assert_eq!(hpet.cycles(), 0x1234_5678_9abc);
    assert_eq!(hpet.kind(), ClockKind::Hpet);

    // A file too short to hold the main counter is refused before anything is read (a read past
    // its end through the mapping would be SIGBUS).
    let short = register_file(0x0098_9680_8086_a201, CONFIG_ENABLE, 0, 0x80);
    let err = Hpet::open_path(short.path()).unwrap_err();
    assert!(
        matches!(err, HpetUnavailable::RegionTooSmall { len: 0x80, needed, .. } if needed == WINDOW_NEEDED),
        "{err:?}"
    );
}

#[test]
fn test_page_64bit_counter_at_100mhz() {
    let page = HpetTestPage::new(PERIOD_100MHZ, true).unwrap();
    page.set_counter(0xffff_fff0);
    let hpet = page.hpet().unwrap();
    assert_eq!(hpet.hz(), 100_000_000);
    assert_eq!(hpet.cycles(), 0xffff_fff0);
    page.advance(0x20);
    // A 64-bit counter carries into the high word by itself.
    assert_eq!(hpet.cycles(), 0x1_0000_0010);
    page.set_counter(u64::MAX - 5);
    assert_eq!(hpet.cycles(), u64::MAX - 5);
    // 1 ms at 100 MHz.
    page.set_counter(0);
    page.advance(100_000);
    assert_eq!(hpet.cycles_to_ns(hpet.cycles()), 1_000_000);
}

#[test]
fn test_page_32bit_counter_is_extended_across_wraps() {
    let page = HpetTestPage::new(PERIOD_14MHZ, false).unwrap();
    page.set_counter(0xf000_0000);
    let hpet = page.hpet().unwrap();
    assert_eq!(hpet.hz(), 14_318_180);
    assert!(!hpet.capabilities().counter_64bit);
    let mut expected = 0xf000_0000u64;
    assert_eq!(hpet.cycles(), expected);
    // Ten wraps, read at steps just under half a wrap (the documented requirement), and one
    // read exactly on a wrap boundary.
    for step in [0x1000_0000u64, 0x7fff_ffff, 0x7fff_ffff, 0x7fff_ffff, 0x1]
        .iter()
        .cycle()
        .take(50)
    {
        page.advance(*step);
        expected += step;
        assert!(
            page.counter() <= u64::from(u32::MAX),
            "the page must look 32-bit"
        );
        assert_eq!(hpet.cycles(), expected, "after +{step:#x}");
    }
    assert!(
        expected > 10 * (1u64 << 32),
        "must have wrapped many times: {expected:#x}"
    );
    page.set_counter(0);
    expected = expected.next_multiple_of(1 << 32);
    assert_eq!(hpet.cycles(), expected, "landing exactly on a wrap");
}

#[test]
fn bad_registers_give_typed_reasons() {
    for period in [0u64, 100_000_001, 0xffff_ffff] {
        let page = HpetTestPage::new(period, true).unwrap();
        let err = page.hpet().unwrap_err();
        assert!(
            matches!(err, HpetUnavailable::BadPeriod { period_fs, .. } if period_fs == period),
            "period {period}: {err:?}"
        );
    }
    // All ones: a device that does not answer.
    let page = HpetTestPage::new(PERIOD_14MHZ, true).unwrap();
    page.set_register(REG_CAPABILITIES, u64::MAX);
    assert!(matches!(
        page.hpet().unwrap_err(),
        HpetUnavailable::BadPeriod { .. }
    ));
    // Halted counter.
    let page = HpetTestPage::new(PERIOD_14MHZ, true).unwrap();
    page.set_register(REG_CONFIG, 0);
    let err = page.hpet().unwrap_err();
    assert!(
        matches!(err, HpetUnavailable::CounterHalted { config: 0 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ENABLE_CNF"));
    // A 512-byte window is enough (newer AMD parts); 0x80 bytes is not.
    let page = HpetTestPage::new(PERIOD_14MHZ, true).unwrap();
    assert!(page.hpet_with_window(512).is_ok());
    assert!(matches!(
        page.hpet_with_window(0x80).unwrap_err(),
        HpetUnavailable::RegionTooSmall { len: 0x80, .. }
    ));
    // The capability bit decides the width, whatever is in the page.
    let page = HpetTestPage::new(PERIOD_14MHZ, false).unwrap();
    page.set_register(REG_CAPABILITIES, (PERIOD_14MHZ << 32) | CAP_COUNT_SIZE);
    page.set_register(REG_COUNTER, 0x5_0000_0001);
    assert_eq!(page.hpet().unwrap().cycles(), 0x5_0000_0001);
}

#[test]
fn iomem_parsing() {
    let root = "fec00000-fec003ff : IOAPIC 0\nfed00000-fed003ff : HPET 0\n  fed00000-fed003ff : PNP0103:00\n";
    assert_eq!(parse_iomem_hpet_len(root), Some(1024));
    let amd = "fed00000-fed001ff : HPET 0\n";
    assert_eq!(parse_iomem_hpet_len(amd), Some(512));
    let unprivileged = "00000000-00000000 : HPET 0\n";
    assert_eq!(parse_iomem_hpet_len(unprivileged), None);
    assert_eq!(parse_iomem_hpet_len("00000000-00000fff : Reserved\n"), None);
}

/// Readers publish the last full value they finished reading; the advancing thread waits for
/// the slowest before moving more than a quarter wrap ahead. This models the documented
/// requirement (every reader reads at least once per half wrap) on a busy 2-CPU machine, where
/// a reader can otherwise sleep through many wraps.
fn wait_for_readers(seen: &[AtomicU64], now: u64) {
    while seen
        .iter()
        .any(|s| now.saturating_sub(s.load(Ordering::SeqCst)) > 1 << 30)
    {
        std::thread::yield_now();
    }
}

/// `extend_32` under concurrent readers while the "hardware" counter runs on through many
/// wraps: every reader gets exactly the full 64-bit value it read, never a value off by 2^32.
#[test]
fn extend_32_is_exact_for_concurrent_readers() {
    const READERS: usize = 3;
    let steps: u64 = if cfg!(miri) { 200 } else { 10_000 };
    let start = 0xffff_0000u64;
    let hw = Arc::new(AtomicU64::new(start));
    let state = Arc::new(AtomicU64::new(start));
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(start)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (hw, state, seen, done) = (hw.clone(), state.clone(), seen.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let full = hw.load(Ordering::SeqCst);
                    let got = extend_32(&state, full as u32);
                    assert_eq!(got, full, "reader got {got:#x} for {full:#x}");
                    assert!(got >= last);
                    last = got;
                    seen[i].store(full, Ordering::SeqCst);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Pseudo-random steps of up to 2^27 ticks.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let now = hw.fetch_add(x & 0x7ff_ffff, Ordering::SeqCst) + (x & 0x7ff_ffff);
        wait_for_readers(&seen, now);
    }
    done.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let end = hw.load(Ordering::SeqCst);
    assert!(
        end >> 32 > 100,
        "the counter must have wrapped many times: {end:#x}"
    );
    assert_eq!(extend_32(&state, end as u32), end);
    assert!(reads >= steps / 64, "{reads} reads");
}

/// An `Hpet` over a 32-bit test page shared by several threads while one advances it.
#[test]
fn hpet_32bit_is_monotonic_across_threads() {
    const READERS: usize = 2;
    let start = 0xfff0_0000u64;
    let page = HpetTestPage::new(PERIOD_14MHZ, false).unwrap();
    page.set_counter(start);
    let hpet = Arc::new(page.hpet().unwrap());
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(start)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (hpet, seen, done) = (hpet.clone(), seen.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !done.load(Ordering::SeqCst) {
                    let now = hpet.cycles();
                    assert!(now >= last, "went back from {last:#x} to {now:#x}");
                    last = now;
                    seen[i].store(now, Ordering::SeqCst);
                }
                last
            })
        })
        .collect();
    let mut total = start;
    for _ in 0..10_000 {
        page.advance(0x20_0000);
        total += 0x20_0000;
        wait_for_readers(&seen, total);
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() <= total);
    }
    assert_eq!(hpet.cycles(), total);
    assert!(total >> 32 >= 4);
}

/// A tiny self-deleting temporary file (no extra dependency).
mod tempfile_lite {
    use super::*;
    use std::path::PathBuf;

    pub struct TempFile(PathBuf);

    impl TempFile {
        pub fn with_contents(bytes: &[u8]) -> TempFile {
            static N: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "tsc-hpet-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(bytes).unwrap();
            TempFile(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A 64-bit counter is read as 32-bit halves (high, low, high): while another thread carries
/// the low half into the high half over and over, no reader ever sees a torn value (one that
/// goes backwards, or runs 2^32 ahead of the counter).
#[test]
fn hpet_64bit_reads_are_never_torn_by_a_carry() {
    let page = HpetTestPage::new(PERIOD_100MHZ, true).unwrap();
    page.set_counter((1 << 32) - 0x40);
    let hpet = Arc::new(page.hpet().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (hpet, page, done) = (hpet.clone(), page.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let now = hpet.cycles();
                    let after = page.counter();
                    assert!(now >= last, "went back from {last:#x} to {now:#x}");
                    assert!(now <= after, "read {now:#x} beyond the counter {after:#x}");
                    let low = now as u32;
                    assert!(low >= 0xffff_ffc0 || low <= 0x40, "unexpected {now:#x}");
                    last = now;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // 2000 carries: each time walk from 2^32*k - 0x40 to 2^32*k + 0x40 one tick at a time.
    for k in 1..=2000u64 {
        page.set_counter((k << 32) - 0x40);
        for _ in 0..0x80 {
            page.advance(1);
        }
    }
    done.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(hpet.cycles(), (2000 << 32) + 0x40);
}
