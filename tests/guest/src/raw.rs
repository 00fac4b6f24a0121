//! The unsafe code of the guest's init: mounts, the console, and QEMU's isa-debug-exit port.

use std::ffi::CString;

/// Mount `fstype` at `target` (created if missing). Returns the error text on failure.
pub fn mount(fstype: &str, target: &str) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let src = CString::new(fstype).expect("no NUL");
    let tgt = CString::new(target).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call; no
    // data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Make `/dev/console` (or the serial port) stdout and stderr.
pub fn console() {
    use std::os::fd::IntoRawFd;
    for p in ["/dev/console", "/dev/ttyS0"] {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(p) {
            let fd = f.into_raw_fd();
            // SAFETY: `fd` is an open descriptor we own; dup2 onto 1 and 2 replaces them.
            unsafe {
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
            return;
        }
    }
}

/// Report `value` to QEMU through `-device isa-debug-exit,iobase=0xf4,iosize=0x04` (QEMU exits
/// with status `2 * value + 1`), then power off in case the device is missing.
pub fn exit_qemu(value: u32) -> ! {
    // SAFETY: ioperm only changes this process's I/O permission bitmap (we are root, PID 1).
    let ok = unsafe { libc::ioperm(0xf4, 4, 1) } == 0;
    if ok {
        // SAFETY: port 0xf4 is QEMU's isa-debug-exit device in this VM (the host adds it); the
        // write makes QEMU exit and touches no memory.
        unsafe {
            std::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") value, options(nomem, nostack));
        }
    }
    // SAFETY: sync and power off: the VM stops; the host reads exit 0 as a failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
