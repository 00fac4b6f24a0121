//! Feed arbitrary bytes to the guest's validation of a metadata block: it must never panic, and
//! whatever it accepts must lie inside its device, aligned as its kind needs.
//!
//! Input: byte 0 picks the mode. Mode 0: the rest is a raw block (first 8 bytes: the device
//! length). Otherwise: a valid header ([`empty_block`]) with the entry count from bytes 1..5,
//! the exposed-segment records from bytes 5..69, and the entry table from the rest, so the
//! fuzzer spends its time past the header checks.
#![no_main]

use ivshmem_meta::layout::{empty_block, min_align, validate, HEADER_LEN, META_LEN};
use libfuzzer_sys::fuzz_target;

const DEV: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (block, device_len) = if mode == 0 {
        if rest.len() < 8 {
            return;
        }
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap());
        let mut b = rest[8..].to_vec();
        b.resize(META_LEN, 0);
        (b, len)
    } else {
        if rest.len() < 68 {
            return;
        }
        let mut b = empty_block("fuzz", 1, DEV);
        let count = u32::from_le_bytes(rest[..4].try_into().unwrap()) % 200;
        b[60..64].copy_from_slice(&count.to_le_bytes());
        b[152..156].copy_from_slice(&u32::from(rest[4] % 6).to_le_bytes());
        b[160..224].copy_from_slice(&rest[4..68]);
        let table = &rest[68..];
        let n = table.len().min(META_LEN - HEADER_LEN);
        b[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&table[..n]);
        (b, DEV)
    };
    if let Ok(info) = validate("fuzz", &block, device_len) {
        for e in &info.entries {
            let end = e.offset.checked_add(e.len).expect("accepted an overflowing range");
            assert!(e.align >= min_align(e.kind) && e.offset % e.align == 0);
            if e.device == 0 {
                assert!(e.offset >= META_LEN as u64 && end <= device_len);
            } else {
                let x = info.exposed[e.device as usize - 1];
                assert!(end <= x.len);
            }
        }
    }
});
