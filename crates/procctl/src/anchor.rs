//! The primary's *anchor*: a listening Unix socket in the abstract namespace, named after the
//! group's runtime directory.
//!
//! The lock file in the runtime directory is how members find and elect a primary, but a file can
//! be deleted under a live group (`rm -rf` of the runtime directory, a tmp cleaner, systemd-logind
//! clearing `$XDG_RUNTIME_DIR`). An abstract socket has no file: only the kernel holds its name,
//! for as long as the primary lives. A process that wins the election on a new lock file while
//! the anchor is held knows that the group's directory was deleted under a live primary, and
//! refuses to start a second group under the same name (a split brain) with that primary's pid.
//! Abstract names are per network namespace; across namespaces the lock file alone decides.

use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;

use crate::sys;

/// The abstract name of the anchor of the group whose runtime directory is `dir`.
fn name(dir: &Path) -> Vec<u8> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let path = abs.as_os_str().as_encoded_bytes();
    let mut n = b"hugeshare-primary:".to_vec();
    // The abstract namespace takes 107 bytes; a longer path is named by its FNV-1a hash.
    if n.len() + path.len() <= 100 {
        n.extend_from_slice(path);
    } else {
        let h = path.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        n.extend_from_slice(format!("#{h:016x}").as_bytes());
    }
    n
}

/// What [`hold`] found.
pub(crate) enum Hold {
    /// This process now holds the anchor (non-blocking; drain it with [`drain`]).
    Held(UnixListener),
    /// A live process holds it: its pid (0 if it could not be asked).
    Taken(u32),
    /// Abstract sockets are not available here: the lock file alone decides.
    Unavailable,
}

/// Take the anchor of the group at `dir`: the new primary calls this once it holds the primary
/// byte of the lock file.
pub(crate) fn hold(dir: &Path) -> Hold {
    let Ok(addr) = SocketAddr::from_abstract_name(name(dir)) else {
        return Hold::Unavailable;
    };
    match UnixListener::bind_addr(&addr) {
        Ok(l) => {
            if l.set_nonblocking(true).is_err() {
                return Hold::Unavailable;
            }
            Hold::Held(l)
        }
        Err(e) if e.kind() == ErrorKind::AddrInUse => Hold::Taken(holder(dir).unwrap_or(0)),
        Err(_) => Hold::Unavailable,
    }
}

/// The pid of the live primary holding the anchor of the group at `dir`, if any.
pub(crate) fn holder(dir: &Path) -> Option<u32> {
    let addr = SocketAddr::from_abstract_name(name(dir)).ok()?;
    let s = UnixStream::connect_addr(&addr).ok()?;
    Some(sys::peer_pid(&s).unwrap_or(0))
}

/// Accept and drop the connections [`holder`] made (so that its queue never fills).
pub(crate) fn drain(l: &UnixListener) {
    while l.accept().is_ok() {}
}
