//! The unsafe code of `procctl`: OFD byte-range locks, shared mappings, CPU affinity, memfds and
//! descriptor passing. Everything else in the crate is safe code over these functions.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;

/// The kind of an OFD lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    Write,
}

fn flock_struct(byte: u64, kind: Option<LockKind>) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Some(LockKind::Write) => libc::F_WRLCK as _,
        None => libc::F_UNLCK as _,
    };
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = byte as _;
    fl.l_len = 1;
    fl.l_pid = 0; // required for OFD locks
    fl
}

/// Take an open-file-description lock on one byte without waiting. `Ok(false)` when another open
/// file description holds a conflicting lock. OFD locks belong to the open file description, so
/// they vanish when the process dies, whatever its pid file says.
pub(crate) fn ofd_try_lock(file: &File, byte: u64, kind: LockKind) -> io::Result<bool> {
    let fl = flock_struct(byte, Some(kind));
    // SAFETY: valid fd and a pointer to a properly initialised `flock` for F_OFD_SETLK.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Release an OFD lock on one byte.
pub(crate) fn ofd_unlock(file: &File, byte: u64) -> io::Result<()> {
    let fl = flock_struct(byte, None);
    // SAFETY: as in `ofd_try_lock`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether another open file description holds any lock on `byte`.
pub(crate) fn ofd_is_locked(file: &File, byte: u64) -> io::Result<bool> {
    let mut fl = flock_struct(byte, Some(LockKind::Write));
    // SAFETY: valid fd; F_OFD_GETLK writes into the `flock` we pass, which is ours and valid.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as _)
}

/// A shared read-write mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics or is
// synchronised by the table lock (see shmconfig::tables).
unsafe impl Send for SharedMap {}
// SAFETY: see `Send`.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Map `len` bytes of `fd` shared, readable and writable.
    pub(crate) fn new(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address), of a file we hold open.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copy the first `n` bytes (for header checks before trusting the mapping).
    pub(crate) fn copy_prefix(&self, n: usize) -> Vec<u8> {
        let n = n.min(self.len);
        let mut v = vec![0u8; n];
        // SAFETY: `n <= len` bytes of our mapping; `v` is a fresh buffer that does not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), v.as_mut_ptr(), n) };
        v
    }

    /// Write bytes at an offset (only while nobody else can see the mapping: the primary's
    /// initialisation before publication).
    pub(crate) fn write_at(&self, off: usize, bytes: &[u8]) {
        assert!(
            off + bytes.len() <= self.len,
            "write past the end of the mapping"
        );
        // SAFETY: in bounds (asserted); the caller guarantees no concurrent access.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(off), bytes.len())
        };
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we created; nobody uses it after drop (every
        // user holds an `Arc` to the owner of this value).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Bind the calling thread to `cpus`.
pub(crate) fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is a plain bit set; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} is out of range"),
            ));
        }
        // SAFETY: CPU_SET writes one bit inside `set`; `c` is below CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 = calling thread; `set` is a valid cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A memfd (for the configuration in `--in-memory` mode).
pub(crate) fn memfd(name: &str) -> io::Result<File> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: `c` is a valid NUL-terminated string; flags are valid for memfd_create.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 64;

/// `sendmsg` of `data` with `fds` as SCM_RIGHTS, to `dest` (a datagram peer) or to the connected
/// peer (`None`).
fn sendmsg_fds(
    fd: RawFd,
    dest: Option<&std::path::Path>,
    data: &[u8],
    fds: &[RawFd],
    flags: libc::c_int,
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS);
    let mut addr = match dest {
        Some(p) => Some(sockaddr_un(p)?),
        None => None,
    };
    let space = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let cap = unsafe { libc::CMSG_SPACE(space) } as usize;
    let mut cbuf = vec![0u64; cap.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    // SAFETY: `msghdr` is a plain C struct; zeroed is valid before we fill it in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some((a, len)) = addr.as_mut() {
        msg.msg_name = (a as *mut libc::sockaddr_un).cast();
        msg.msg_namelen = *len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cap as _;
        // SAFETY: msg_control points at `cap` bytes we own; CMSG_FIRSTHDR returns a pointer into
        // it (non-null since cap >= CMSG_SPACE(space)); the header and the `fds` payload fit in
        // CMSG_SPACE(space) bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(space) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: every pointer in `msg` refers to live buffers for the duration of the call.
    let r = unsafe { libc::sendmsg(fd, &msg, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `recvmsg` of at most `max` bytes and the descriptors that came with them; also says whether
/// data or descriptors were truncated.
fn recvmsg_fds(fd: RawFd, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>, bool)> {
    let mut data = vec![0u8; max];
    // SAFETY: pure size computation.
    let cap = unsafe { libc::CMSG_SPACE((std::mem::size_of::<RawFd>() * MAX_FDS) as u32) } as usize;
    let mut cbuf = vec![0u64; cap.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zeroed `msghdr` is valid before we fill it in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cap as _;
    // SAFETY: buffers are valid for the call; received descriptors are marked close-on-exec.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    data.truncate(r as usize);
    let mut fds = Vec::new();
    // SAFETY: we walk the control messages the kernel wrote into `cbuf` with the CMSG macros,
    // which stay inside `msg_controllen`; each SCM_RIGHTS payload holds whole RawFds that are new
    // descriptors now owned by this process.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok((data, fds, truncated))
}

/// Send `data` and `fds` over a connected Unix stream socket (SCM_RIGHTS).
pub(crate) fn send_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(!data.is_empty());
    let n = sendmsg_fds(sock.as_raw_fd(), None, data, fds, libc::MSG_NOSIGNAL)?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short send of a group message",
        ));
    }
    Ok(())
}

/// Receive one message of at most `max` bytes and its descriptors from a stream socket.
pub(crate) fn recv_fds(sock: &UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let (data, fds, truncated) = recvmsg_fds(sock.as_raw_fd(), max)?;
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in a group message",
        ));
    }
    Ok((data, fds))
}

/// Number of CPUs online.
pub(crate) fn ncpus() -> usize {
    // SAFETY: sysconf with a valid name has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn sockaddr_un(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is a plain C struct; all-zero is valid before we fill it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as _;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Send one datagram with descriptors to the socket bound at `path`, without blocking: a peer
/// whose queue is full gives `WouldBlock`, a dead one `ConnectionRefused` or `NotFound`.
pub(crate) fn dgram_send_to(
    sock: &std::os::unix::net::UnixDatagram,
    path: &std::path::Path,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    sendmsg_fds(
        sock.as_raw_fd(),
        Some(path),
        data,
        fds,
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    )
    .map(|_| ())
}

/// Receive one datagram (blocking up to the socket's read timeout) with its descriptors.
/// Returns the bytes, the descriptors, and whether anything was truncated.
pub(crate) fn dgram_recv(
    sock: &std::os::unix::net::UnixDatagram,
    max: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>, bool)> {
    recvmsg_fds(sock.as_raw_fd(), max)
}

/// A view of the shared tables over a configuration mapping.
///
/// Crate invariant: the view is stored next to `map` (in `process::Memory`) and never used after
/// `map` is dropped; `map` holds a whole configuration of `max_zones` zones, written by this build
/// or checked with `layout::check_header_bytes` before this call.
pub(crate) fn tables_over(
    map: &SharedMap,
    max_zones: u32,
) -> Result<shmconfig::Tables, shmconfig::ZoneError> {
    // SAFETY: `map` is a live, page-aligned shared mapping of `map.len()` bytes, and by the crate
    // invariant above it outlives the view and holds a configuration of this layout.
    unsafe { shmconfig::Tables::new(map.as_ptr(), map.len(), max_zones) }
}

/// Describe a zone inside one of the group's segment mappings.
///
/// Crate invariant: `ptr..ptr+len` lies inside a segment mapping owned by `keep` (the caller
/// checks the range against the segment's length), which stays mapped while `keep` lives.
pub(crate) fn zone_in_mapping(
    name: &str,
    kind: shmconfig::ZoneKind,
    ptr: NonNull<u8>,
    len: usize,
    offset: shmconfig::ShmOffset,
    keep: std::sync::Arc<dyn std::any::Any + Send + Sync>,
) -> shmconfig::Zone {
    // SAFETY: by the crate invariant, the range is mapped for as long as `keep` lives, and the
    // crate never hands shared memory out as references.
    unsafe { shmconfig::Zone::from_raw_parts(name, kind, ptr, len, offset, keep) }
}

/// Test hook: occupy `len` bytes at `addr` with an inaccessible mapping, for the rest of the
/// process's life, so that the group cannot be mapped at the primary's addresses here.
pub(crate) fn occupy_forever(addr: usize, len: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; on success we own a new,
    // inaccessible anonymous mapping that is intentionally never unmapped.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    p != libc::MAP_FAILED && p as usize == addr
}

/// The pid of the process at the other end of a connected Unix stream socket (`SO_PEERCRED`).
pub(crate) fn peer_pid(sock: &UnixStream) -> io::Result<u32> {
    // SAFETY: `ucred` is a plain C struct for which all-zero bytes are a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor, and a pointer to a `ucred` of the length we pass, which
    // the kernel fills in.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.pid as u32)
}

/// `f_type` of a hugetlbfs file system (hugemem's, which tells segment kinds by it too).
pub(crate) use hugemem::HUGETLBFS_MAGIC;
/// `f_type` of a tmpfs (`TMPFS_MAGIC`): `/dev/shm`, and the memfds of non-hugepage memory.
pub(crate) const TMPFS_MAGIC: u64 = 0x0102_1994;

/// What a segment file is, from `fstat` and `fstatfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileProbe {
    /// A regular file (not a directory, device, FIFO, socket or symbolic link).
    pub(crate) regular: bool,
    /// `f_type` of its file system.
    pub(crate) fs_type: u64,
    /// `f_bsize` of its file system (the page size, on hugetlbfs).
    pub(crate) fs_block: u64,
    /// Device and inode, to tell it from a file put in its place later.
    pub(crate) dev: u64,
    /// See `dev`.
    pub(crate) ino: u64,
}

/// `fstat` and `fstatfs` of an open descriptor.
pub(crate) fn probe_fd(fd: BorrowedFd<'_>) -> io::Result<FileProbe> {
    // SAFETY: `stat` and `statfs` are plain C structs for which all-zero bytes are valid values.
    let (mut st, mut sfs): (libc::stat, libc::statfs) = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor (borrowed for the call), and a pointer to our own `stat`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, with our own `statfs`.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileProbe {
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        // `f_type` is a signed word; the magic numbers are 32-bit.
        fs_type: (sfs.f_type as u64) & 0xffff_ffff,
        fs_block: sfs.f_bsize as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Probe the file at `path` without opening it for reading or writing (`O_PATH`, symbolic links
/// not followed), so that looking at a device or a file outside the group has no effect on it.
pub(crate) fn probe_path(path: &std::path::Path) -> io::Result<FileProbe> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: a NUL-terminated path that lives across the call; O_PATH opens no file contents.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    probe_fd(fd.as_fd())
}
