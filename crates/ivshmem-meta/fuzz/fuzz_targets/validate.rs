//! Feed arbitrary bytes to the guest's validation of a metadata block: it must never panic, and
//! whatever it accepts must lie inside the device.
#![no_main]

use ivshmem_meta::layout::{validate, META_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let device_len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut block = data[8..].to_vec();
    // Give most inputs the magic and constants so the fuzzer reaches the entry table.
    if block.len() < META_LEN {
        block.resize(META_LEN, 0);
    }
    if let Ok(info) = validate("fuzz", &block, device_len) {
        for e in &info.entries {
            assert!(e.offset >= META_LEN as u64);
            assert!(e.offset.checked_add(e.len).is_some_and(|end| end <= device_len));
        }
    }
});
