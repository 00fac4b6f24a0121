//! Real processes (this test binary re-executed with `HUGEMEM_TEST_CHILD` set): stale clean-up
//! after SIGKILL, and a second process mapping a segment by path and by passed descriptor.

mod common;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::{child_role, report, wait_to_be_killed, ChildProc, HugeEnv, ShmDir, MIB2};
use hugemem::{
    remove_stale, stale_segments, BackingKind, Hugetlbfs, MapOptions, Memfd, Segment,
    SegmentSource, SegmentSpec, ShmFallback,
};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

const STALE_TEST: &str = "sigkilled_holder_leaves_stale_files_that_only_its_prefix_cleanup_removes";
const SHARE_TEST: &str = "second_process_sees_writes_by_path_and_by_descriptor";

fn source(kind: &str, dir: &Path) -> Box<dyn SegmentSource> {
    match kind {
        "hugetlbfs" => Box::new(Hugetlbfs::new(dir, MIB2)),
        _ => Box::new(ShmFallback::in_dir(dir)),
    }
}

fn spec(prefix: &str, index: u32, len: u64) -> SegmentSpec<'_> {
    SegmentSpec {
        prefix,
        index,
        len,
        pow2: false,
        map: MapOptions::default(),
    }
}

/// Child: create `N` segments of `PREFIX` in `DIR`, report, and hold them until killed.
fn holder_child() -> ! {
    let dir = PathBuf::from(std::env::var("DIR").unwrap());
    let prefix = std::env::var("PREFIX").unwrap();
    let n: u32 = std::env::var("N").unwrap().parse().unwrap();
    let src = source(&std::env::var("KIND").unwrap(), &dir);
    let segs: Vec<Segment> = (0..n)
        .map(|i| {
            src.create(&spec(&prefix, i, src.page_size()))
                .expect("child creates its segment")
        })
        .collect();
    for s in &segs {
        s.atomic_u64(0)
            .store(u64::from(std::process::id()), Ordering::Release);
    }
    report("READY");
    wait_to_be_killed()
}

fn stale_case(kind: &str, dir: &Path) {
    let tag = format!("{}{}", kind, std::process::id());
    let (pa, pb, pc) = (format!("a{tag}_"), format!("b{tag}_"), format!("c{tag}_"));
    let env = |prefix: &str, n: u32| {
        vec![
            ("DIR", dir.display().to_string()),
            ("PREFIX", prefix.to_string()),
            ("N", n.to_string()),
            ("KIND", kind.to_string()),
        ]
    };
    let mut a = ChildProc::spawn(STALE_TEST, "holder", &env(&pa, 2));
    let mut b = ChildProc::spawn(STALE_TEST, "holder", &env(&pb, 1));
    let mut c = ChildProc::spawn(STALE_TEST, "holder", &env(&pc, 1));
    for ch in [&mut a, &mut b, &mut c] {
        assert_eq!(ch.expect_line(), "READY");
    }
    let a_files = vec![
        dir.join(format!("{pa}map_0")),
        dir.join(format!("{pa}map_1")),
    ];
    // While A lives, nothing of its prefix is stale, and clean-up removes nothing.
    assert_eq!(stale_segments(dir, &pa).unwrap(), Vec::<PathBuf>::new());
    assert_eq!(remove_stale(dir, &pa).unwrap(), Vec::<PathBuf>::new());
    // Attach to one of A's segments: we see A's pid in it.
    let seg = Segment::open_path(&a_files[1], &MapOptions::default()).unwrap();
    assert_eq!(
        seg.atomic_u64(0).load(Ordering::Acquire),
        u64::from(a.pid())
    );
    drop(seg);

    a.kill();
    c.kill();
    assert_eq!(
        stale_segments(dir, &pa).unwrap(),
        a_files,
        "{kind}: A's files are stale after SIGKILL"
    );
    assert_eq!(
        remove_stale(dir, &pa).unwrap(),
        a_files,
        "{kind}: exactly A's files are removed"
    );
    assert!(a_files.iter().all(|f| !f.exists()));
    // B (alive, another prefix) and C (dead, another prefix) are untouched.
    let b_file = dir.join(format!("{pb}map_0"));
    let c_file = dir.join(format!("{pc}map_0"));
    assert!(
        b_file.exists() && c_file.exists(),
        "{kind}: other prefixes untouched"
    );
    assert_eq!(
        remove_stale(dir, &pb).unwrap(),
        Vec::<PathBuf>::new(),
        "{kind}: B is alive"
    );
    assert!(b_file.exists());
    assert_eq!(stale_segments(dir, &pc).unwrap(), vec![c_file.clone()]);

    // Clean up the rest.
    b.kill();
    assert_eq!(remove_stale(dir, &pb).unwrap(), vec![b_file]);
    assert_eq!(remove_stale(dir, &pc).unwrap(), vec![c_file]);
}

#[test]
fn sigkilled_holder_leaves_stale_files_that_only_its_prefix_cleanup_removes() {
    if let Some(role) = child_role() {
        assert_eq!(role, "holder");
        holder_child();
    }
    let shm = ShmDir::new("stale");
    stale_case("shm", shm.path());
    if let Some(env) = HugeEnv::setup("stale", 4) {
        stale_case("hugetlbfs", &env.dir);
    }
}

/// Child: attach to `SEG` by path and to the descriptors received on `SOCK`, check the
/// parent's values, write replies.
fn attacher_child() {
    let path = PathBuf::from(std::env::var("SEG").unwrap());
    let expect: u64 = std::env::var("EXPECT").unwrap().parse().unwrap();
    let by_path = Segment::open_path(&path, &MapOptions::default()).unwrap();
    assert_eq!(by_path.atomic_u64(0).load(Ordering::Acquire), expect);
    assert_eq!(
        by_path
            .atomic_u64(by_path.len() - 8)
            .load(Ordering::Acquire),
        expect + 1
    );
    by_path
        .atomic_u64(64)
        .store(1000 + expect, Ordering::Release);
    report(&format!(
        "path kind={} kps={:?}",
        by_path.kind(),
        by_path.smaps_kernel_page_size()
    ));

    let sock = UnixStream::connect(std::env::var("SOCK").unwrap()).unwrap();
    let fds = recv_fds(&sock);
    assert_eq!(fds.len(), 2);
    for (i, fd) in fds.into_iter().enumerate() {
        let seg = Segment::open_fd(fd, &MapOptions::default()).unwrap();
        // fd0 is the memfd (the parent wrote expect + 10), fd1 the file (expect).
        let want = if i == 0 { expect + 10 } else { expect };
        assert_eq!(seg.atomic_u64(0).load(Ordering::Acquire), want);
        seg.atomic_u64(128)
            .store(2000 + i as u64, Ordering::Release);
        report(&format!(
            "fd{i} kind={} path={:?} kps={:?}",
            seg.kind(),
            seg.path(),
            seg.smaps_kernel_page_size()
        ));
    }
    report("DONE");
}

fn send_fds(sock: &UnixStream, fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut buf = SendAncillaryBuffer::new(&mut space);
    assert!(buf.push(SendAncillaryMessage::ScmRights(fds)));
    let n = rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(b"x")],
        &mut buf,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, 1);
}

fn recv_fds(sock: &UnixStream) -> Vec<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut buf = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let r = rustix::net::recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut buf,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    assert_eq!(r.bytes, 1);
    let mut out = Vec::new();
    for msg in buf.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            out.extend(fds);
        }
    }
    out
}

fn share_case(kind: &str, file_src: &dyn SegmentSource, memfd_page: Option<u64>, sock_dir: &Path) {
    let prefix = format!("share{kind}{}_", std::process::id());
    let expect = 0x5eed_0000 + u64::from(std::process::id());
    let file_seg = file_src
        .create(&spec(&prefix, 0, 2 * file_src.page_size()))
        .unwrap();
    let mem_seg = Memfd::new(memfd_page)
        .create(&spec(&prefix, 1, memfd_page.unwrap_or(4096) * 2))
        .unwrap();
    file_seg.atomic_u64(0).store(expect, Ordering::Release);
    file_seg
        .atomic_u64(file_seg.len() - 8)
        .store(expect + 1, Ordering::Release);
    mem_seg.atomic_u64(0).store(expect + 10, Ordering::Release);

    let sock_path = sock_dir.join(format!("{kind}.sock"));
    let listener = UnixListener::bind(&sock_path).unwrap();
    let mut child = ChildProc::spawn(
        SHARE_TEST,
        "attacher",
        &[
            ("SEG", file_seg.path().unwrap().display().to_string()),
            ("EXPECT", expect.to_string()),
            ("SOCK", sock_path.display().to_string()),
        ],
    );
    let line = child.expect_line();
    let hps = file_src.page_size();
    assert_eq!(
        line,
        format!("path kind={kind} kps=Some({hps})"),
        "the child maps by path with the same pages"
    );
    // The child's write through its mapping by path is visible here.
    assert_eq!(
        file_seg.atomic_u64(64).load(Ordering::Acquire),
        1000 + expect
    );

    let (conn, _) = listener.accept().unwrap();
    send_fds(&conn, &[mem_seg.fd(), file_seg.fd()]);
    let mps = memfd_page.unwrap_or(4096);
    assert_eq!(
        child.expect_line(),
        format!("fd0 kind=memfd path=None kps=Some({mps})")
    );
    assert_eq!(
        child.expect_line(),
        format!(
            "fd1 kind={kind} path={:?} kps=Some({hps})",
            Some(file_seg.path().unwrap())
        )
    );
    assert_eq!(child.expect_line(), "DONE");
    let st = child.child.wait().unwrap();
    assert!(st.success(), "child failed: {st}");
    assert_eq!(mem_seg.atomic_u64(128).load(Ordering::Acquire), 2000);
    assert_eq!(file_seg.atomic_u64(128).load(Ordering::Acquire), 2001);
    assert_eq!(
        file_seg.kind(),
        if kind == "hugetlbfs" {
            BackingKind::Hugetlbfs
        } else {
            BackingKind::Shm
        }
    );
    file_seg.remove().unwrap();
    drop(mem_seg);
    let _ = std::fs::remove_file(&sock_path);
    // The child's descriptors are gone with it: nothing of this prefix is left.
    assert_eq!(
        stale_segments(file_src.dir().unwrap(), &prefix).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn second_process_sees_writes_by_path_and_by_descriptor() {
    if let Some(role) = child_role() {
        assert_eq!(role, "attacher");
        attacher_child();
        return;
    }
    let shm = ShmDir::new("share");
    share_case("shm", &ShmFallback::in_dir(shm.path()), None, shm.path());
    if let Some(env) = HugeEnv::setup("share", 4) {
        share_case(
            "hugetlbfs",
            &Hugetlbfs::new(&env.dir, MIB2),
            Some(MIB2),
            shm.path(),
        );
    }
}

#[test]
fn held_exclusively_by_a_creator_means_busy() {
    // A file locked LOCK_EX (as by a creator still initialising it) cannot be attached, and
    // is not stale.
    let dir = ShmDir::new("busy");
    let p = dir.path().join("busy_map_0");
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive).unwrap();
    let t = std::time::Instant::now();
    let e = Segment::open_path(&p, &MapOptions::default()).unwrap_err();
    assert!(
        matches!(e, hugemem::HugememError::SegmentBusy { .. }),
        "{e}"
    );
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(4),
        "it waited for the creator"
    );
    assert!(stale_segments(dir.path(), "busy_").unwrap().is_empty());
    drop(f);
    assert_eq!(stale_segments(dir.path(), "busy_").unwrap(), vec![p]);
}
