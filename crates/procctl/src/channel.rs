//! Messages between members: named messages with a small payload and optional file
//! descriptors, over Unix datagram sockets in the group's runtime directory.
//!
//! Every member binds `<runtime dir>/member_<slot>.sock` when it joins. A message goes to one
//! member ([`Process::send`](crate::Process::send)), to every live member ([`Process::broadcast`](crate::Process::broadcast)), or asks for a reply
//! ([`Process::request`](crate::Process::request), answered by a handler the receiver registered with
//! [`Process::on_request`](crate::Process::on_request), or by an error reply when it has none, so that a requester never waits
//! for a handler that does not exist). Sending never blocks: a dead peer is reported at once
//! ([`ChannelError::PeerGone`]), a peer whose queue is full likewise ([`ChannelError::PeerBusy`]).
//! Received datagrams are checked (magic, kind, lengths, descriptor count, UTF-8 name); anything
//! else is dropped and counted ([`Process::rejected_messages`](crate::Process::rejected_messages)).
//!
//! DPDK says interrupts such as a link-status change reach only the primary and applications
//! must forward them themselves; here that is:
//!
//! ```no_run
//! # use procctl::Process;
//! # fn f(primary: &Process, secondary: &Process) -> Result<(), Box<dyn std::error::Error>> {
//! // in the primary, when the event happens:
//! let report = primary.broadcast("link-status", b"port 0 up", &[]);
//! assert!(report.failed.is_empty());
//! // in each secondary:
//! if let Some(m) = secondary.next_message(std::time::Duration::from_secs(1)) {
//!     println!("{} from {}: {}", m.name, m.from, String::from_utf8_lossy(&m.payload));
//! }
//! # Ok(()) }
//! ```
//!
//! Wire format (native endian): `magic u32 "HSM1"`, `kind u8` (1 message, 2 request, 3 reply,
//! 4 error reply), `name_len u8`, `from u16`, `id u64`, `payload_len u32`, `nfds u8`, 3 zero
//! bytes, then the name and the payload; descriptors travel as `SCM_RIGHTS`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmconfig::MemberId;

use crate::sys;

/// Longest message name, in bytes.
pub const MAX_NAME: usize = 63;
/// Largest payload, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Most descriptors one message carries.
pub const MAX_MSG_FDS: usize = 8;
const MAGIC: u32 = u32::from_le_bytes(*b"HSM1");
const HEADER: usize = 24;
const KIND_MSG: u8 = 1;
const KIND_REQ: u8 = 2;
const KIND_REP: u8 = 3;
const KIND_ERR: u8 = 4;

/// A message received from another member.
#[derive(Debug)]
pub struct Message {
    /// The sender.
    pub from: MemberId,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Descriptors it carried (now owned by this process).
    pub fds: Vec<OwnedFd>,
    kind: u8,
    id: u64,
}

impl Message {
    /// Whether the sender waits for a reply (a request nobody handled is answered with an error
    /// automatically).
    pub fn is_request(&self) -> bool {
        self.kind == KIND_REQ
    }
}

/// Why a message could not be sent or answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The name is empty or longer than [`MAX_NAME`].
    #[error("message name {0:?} must have 1 to {MAX_NAME} bytes")]
    BadName(String),
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes is larger than the {MAX_PAYLOAD}-byte limit; put bulk data in a memzone and send its name")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
    },
    /// More descriptors than [`MAX_MSG_FDS`].
    #[error("{0} descriptors given, at most {MAX_MSG_FDS} per message")]
    TooManyFds(usize),
    /// The member is not in the group (or is this process).
    #[error("{0} is not a live member of the group")]
    NoSuchMember(MemberId),
    /// The member died or left: nobody reads its socket.
    #[error("{member} is gone ({why}); nothing was sent")]
    PeerGone {
        /// The member.
        member: MemberId,
        /// What the kernel said.
        why: String,
    },
    /// The member's queue is full: it is not reading. Nothing was sent; try again later.
    #[error("{0} is not reading its messages (its queue is full); nothing was sent")]
    PeerBusy(MemberId),
    /// No reply in time.
    #[error("no reply to {name:?} from {member} within {waited:?}")]
    Timeout {
        /// The member asked.
        member: MemberId,
        /// The request's name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The receiver answered with an error.
    #[error("{member} answered {name:?} with an error: {message}")]
    Remote {
        /// The member.
        member: MemberId,
        /// The request's name.
        name: String,
        /// Its message.
        message: String,
    },
    /// Another system error.
    #[error("sending to {member}: {source}")]
    Io {
        /// The member.
        member: MemberId,
        /// The error.
        source: std::io::Error,
    },
}

/// What a broadcast reached.
#[derive(Debug, Default)]
pub struct BroadcastReport {
    /// Members the message was queued for.
    pub sent: Vec<MemberId>,
    /// Members it could not be sent to, and why.
    pub failed: Vec<(MemberId, ChannelError)>,
}

type Handler = Arc<dyn Fn(&Message) -> Result<Vec<u8>, String> + Send + Sync>;

/// One member's end of the channel.
pub(crate) struct Channel {
    sock: UnixDatagram,
    dir: PathBuf,
    me: MemberId,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Sender<Message>>>,
    handlers: Mutex<HashMap<String, Handler>>,
    inbox_tx: Mutex<Sender<Message>>,
    pub(crate) inbox_rx: Mutex<Receiver<Message>>,
    pub(crate) rejected: AtomicU64,
    pub(crate) stop: AtomicBool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("me", &self.me)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The socket path of a member.
pub(crate) fn socket_path(dir: &Path, m: MemberId) -> PathBuf {
    dir.join(format!("member_{}.sock", m.0))
}

/// Whether the member socket at `path` is a leftover: a file that no live process has bound
/// (connecting to it is refused). A socket a live process holds, an orphaned member of an
/// earlier group's included, is not one.
fn is_stale_socket(path: &Path) -> bool {
    let Ok(probe) = UnixDatagram::unbound() else {
        return false;
    };
    matches!(
        probe.connect(path),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Remove every member socket file in `dir` that no live process holds (left by members of an
/// earlier group that died by a signal). Returns how many were removed.
pub(crate) fn remove_stale_sockets(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("member_") && n.ends_with(".sock")
        })
        .filter(|e| is_stale_socket(&e.path()) && std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn check(name: &str, payload: &[u8], nfds: usize) -> Result<(), ChannelError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ChannelError::BadName(name.into()));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(ChannelError::PayloadTooLarge { len: payload.len() });
    }
    if nfds > MAX_MSG_FDS {
        return Err(ChannelError::TooManyFds(nfds));
    }
    Ok(())
}

fn encode(kind: u8, from: MemberId, id: u64, name: &str, payload: &[u8], nfds: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + name.len() + payload.len());
    b.extend_from_slice(&MAGIC.to_ne_bytes());
    b.push(kind);
    b.push(name.len() as u8);
    b.extend_from_slice(&from.0.to_ne_bytes());
    b.extend_from_slice(&id.to_ne_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    b.push(nfds as u8);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(payload);
    b
}

/// Decode and check a datagram; `None` for anything malformed.
fn decode(b: &[u8], fds: Vec<OwnedFd>) -> Option<Message> {
    if b.len() < HEADER || u32::from_ne_bytes(b[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    let kind = b[4];
    let name_len = b[5] as usize;
    let from = u16::from_ne_bytes(b[6..8].try_into().ok()?);
    let id = u64::from_ne_bytes(b[8..16].try_into().ok()?);
    let plen = u32::from_ne_bytes(b[16..20].try_into().ok()?) as usize;
    let nfds = b[20] as usize;
    if !(KIND_MSG..=KIND_ERR).contains(&kind)
        || name_len == 0
        || name_len > MAX_NAME
        || plen > MAX_PAYLOAD
        || nfds != fds.len()
        || b[21..24] != [0, 0, 0]
        || b.len() != HEADER + name_len + plen
    {
        return None;
    }
    let name = std::str::from_utf8(&b[HEADER..HEADER + name_len])
        .ok()?
        .to_string();
    Some(Message {
        from: MemberId(from),
        name,
        payload: b[HEADER + name_len..].to_vec(),
        fds,
        kind,
        id,
    })
}

impl Channel {
    /// Bind this member's socket (replacing a stale file: we hold the slot, so it is ours).
    pub(crate) fn bind(dir: &Path, me: MemberId) -> std::io::Result<Arc<Channel>> {
        let path = socket_path(dir, me);
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (tx, rx) = mpsc::channel();
        Ok(Arc::new(Channel {
            sock,
            dir: dir.to_path_buf(),
            me,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            handlers: Mutex::new(HashMap::new()),
            inbox_tx: Mutex::new(tx),
            inbox_rx: Mutex::new(rx),
            rejected: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }))
    }

    pub(crate) fn send_raw(
        &self,
        to: MemberId,
        kind: u8,
        id: u64,
        name: &str,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        check(name, payload, fds.len())?;
        let bytes = encode(kind, self.me, id, name, payload, fds.len());
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        sys::dgram_send_to(&self.sock, &socket_path(&self.dir, to), &bytes, &raw).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::WouldBlock => ChannelError::PeerBusy(to),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                    ChannelError::PeerGone {
                        member: to,
                        why: e.to_string(),
                    }
                }
                _ => ChannelError::Io {
                    member: to,
                    source: e,
                },
            }
        })
    }

    pub(crate) fn send(
        &self,
        to: MemberId,
        name: &str,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        self.send_raw(to, KIND_MSG, 0, name, payload, fds)
    }

    pub(crate) fn request(
        &self,
        to: MemberId,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Message, ChannelError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let r = self
            .send_raw(to, KIND_REQ, id, name, payload, &[])
            .and_then(|()| {
                rx.recv_timeout(timeout).map_err(|_| ChannelError::Timeout {
                    member: to,
                    name: name.into(),
                    waited: timeout,
                })
            });
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let m = r?;
        if m.kind == KIND_ERR {
            return Err(ChannelError::Remote {
                member: to,
                name: name.into(),
                message: String::from_utf8_lossy(&m.payload).into(),
            });
        }
        Ok(m)
    }

    pub(crate) fn on_request(&self, name: &str, h: Handler) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), h);
    }

    /// The receiving loop (its own thread).
    pub(crate) fn run(self: Arc<Self>) {
        while !self.stop.load(Ordering::Acquire) {
            let (bytes, fds, truncated) =
                match sys::dgram_recv(&self.sock, HEADER + MAX_NAME + MAX_PAYLOAD + 1) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
            let msg = if truncated { None } else { decode(&bytes, fds) };
            let Some(msg) = msg else {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match msg.kind {
                KIND_REP | KIND_ERR => {
                    let tx = self
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&msg.id);
                    match tx {
                        Some(tx) => {
                            let _ = tx.send(msg);
                        }
                        None => {
                            // A reply nobody waits for (it came after the timeout): dropped.
                        }
                    }
                }
                KIND_REQ => {
                    let h = self
                        .handlers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&msg.name)
                        .cloned();
                    let (kind, reply) = match h {
                        Some(h) => match h(&msg) {
                            Ok(r) => (KIND_REP, r),
                            Err(e) => (KIND_ERR, e.into_bytes()),
                        },
                        None => (
                            KIND_ERR,
                            format!("no handler for {:?} in {}", msg.name, self.me).into_bytes(),
                        ),
                    };
                    let mut reply = reply;
                    reply.truncate(MAX_PAYLOAD);
                    let _ = self.send_raw(msg.from, kind, msg.id, &msg.name, &reply, &[]);
                }
                _ => {
                    let _ = self
                        .inbox_tx
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .send(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_no_live_process_holds_are_removed_as_stale() {
        let dir = std::env::temp_dir().join(format!("hs-stale-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A member that died: its socket file stays after the socket is closed.
        drop(UnixDatagram::bind(socket_path(&dir, MemberId(1))).unwrap());
        // A live member (an orphan of an earlier group, say).
        let live = UnixDatagram::bind(socket_path(&dir, MemberId(2))).unwrap();
        // Not a member socket.
        std::fs::write(dir.join("other.sock"), b"").unwrap();
        assert_eq!(remove_stale_sockets(&dir), 1);
        assert!(!socket_path(&dir, MemberId(1)).exists());
        assert!(socket_path(&dir, MemberId(2)).exists());
        assert!(dir.join("other.sock").exists());
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn encode_decode_and_reject() {
        let b = encode(KIND_MSG, MemberId(3), 9, "link", b"up", 0);
        let m = decode(&b, vec![]).unwrap();
        assert_eq!(
            (m.from, m.name.as_str(), m.payload.as_slice(), m.id),
            (MemberId(3), "link", &b"up"[..], 9)
        );
        // truncated, bad magic, fd count mismatch, bad kind, trailing garbage
        assert!(decode(&b[..10], vec![]).is_none());
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(decode(&bad, vec![]).is_none());
        let with_fd = encode(KIND_MSG, MemberId(3), 9, "link", b"up", 1);
        assert!(decode(&with_fd, vec![]).is_none());
        let mut bad = b.clone();
        bad[4] = 9;
        assert!(decode(&bad, vec![]).is_none());
        let mut bad = b.clone();
        bad.push(0);
        assert!(decode(&bad, vec![]).is_none());
        let mut bad = b;
        bad[HEADER] = 0xff; // invalid UTF-8 name
        assert!(decode(&bad, vec![]).is_none());
    }

    #[test]
    fn limits() {
        assert!(matches!(check("", b"", 0), Err(ChannelError::BadName(_))));
        assert!(matches!(
            check(&"n".repeat(64), b"", 0),
            Err(ChannelError::BadName(_))
        ));
        assert!(matches!(
            check("n", &vec![0; MAX_PAYLOAD + 1], 0),
            Err(ChannelError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            check("n", b"", 9),
            Err(ChannelError::TooManyFds(9))
        ));
        assert!(check("n", &vec![0; MAX_PAYLOAD], 8).is_ok());
    }

    #[test]
    fn request_reply_and_dead_peer() {
        let dir = std::env::temp_dir().join(format!("hs-chan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Channel::bind(&dir, MemberId(1)).unwrap();
        let b = Channel::bind(&dir, MemberId(2)).unwrap();
        b.on_request(
            "echo",
            Arc::new(|m: &Message| Ok([b"re:".as_slice(), &m.payload].concat())),
        );
        let (ta, tb) = (a.clone(), b.clone());
        let h1 = std::thread::spawn(move || ta.run());
        let h2 = std::thread::spawn(move || tb.run());
        let r = a
            .request(MemberId(2), "echo", b"hi", Duration::from_secs(5))
            .unwrap();
        assert_eq!(r.payload, b"re:hi");
        assert!(matches!(
            a.request(MemberId(2), "nope", b"", Duration::from_secs(5)),
            Err(ChannelError::Remote { .. })
        ));
        // a member that never existed: refused at once, not after a timeout
        let t = std::time::Instant::now();
        assert!(matches!(
            a.send(MemberId(7), "x", b"", &[]),
            Err(ChannelError::PeerGone { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(1));
        // garbage is counted and dropped
        let raw = UnixDatagram::unbound().unwrap();
        raw.send_to(b"garbage", socket_path(&dir, MemberId(2)))
            .unwrap();
        a.send(MemberId(2), "after", b"ok", &[]).unwrap();
        let m = b
            .inbox_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(m.name, "after");
        assert_eq!(b.rejected.load(Ordering::Relaxed), 1);
        a.stop.store(true, Ordering::Release);
        b.stop.store(true, Ordering::Release);
        h1.join().unwrap();
        h2.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
