//! `cargo xtask qemu-cmdline` and `cargo xtask vm-test` (issue 8): QEMU guests using the host
//! group's rings, mempools and memzones through `ivshmem-plain` devices.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ivshmem_meta::{Metadata, QemuArgs, FIRST_PCI_SLOT};
use rte_mempool::{Mempool, MempoolParams};
use rte_ring::{Ring, RingFlags};
use shmconfig::{ZoneKind, ZoneRequest, Zones};

use crate::{cargo, run, workspace_root};

/// Arguments of `cargo xtask qemu-cmdline`.
#[derive(clap::Args, Debug)]
pub struct CmdlineArgs {
    /// The group's file prefix (its primary must be running).
    #[arg(long)]
    file_prefix: String,
    /// A metadata name; repeat for several devices in one VM (PCI slots 0x10, 0x11, ... in
    /// this order).
    #[arg(long = "metadata", required = true)]
    metadata: Vec<String>,
    /// Print one shell-quoted line instead of one argument per line.
    #[arg(long)]
    one_line: bool,
    /// The runtime directory base of the group, if not the default.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// PCI slot of the first device.
    #[arg(long, default_value_t = FIRST_PCI_SLOT, value_parser = parse_slot)]
    first_slot: u8,
}

fn parse_slot(s: &str) -> Result<u8, String> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.map_err(|e| format!("{s:?}: {e}"))
}

/// Arguments of `cargo xtask vm-test`.
#[derive(clap::Args, Debug)]
pub struct VmTestArgs {
    /// Seconds each guest may run before it is killed and counted as failed.
    #[arg(long, default_value_t = 90)]
    timeout: u64,
    /// Keep the serial logs and the initramfs (printed at the end).
    #[arg(long)]
    keep: bool,
    /// Back the group and the device with /dev/shm even when hugepages could be set up.
    #[arg(long)]
    no_huge: bool,
    /// QEMU's `-smp` (keep `maxcpus` above 1 under TCG: with plain `1`, guest atomics are not
    /// atomic against the host, which the `mp` ring check is there to catch).
    #[arg(long, default_value = "1,maxcpus=2")]
    smp: String,
}

fn join_group(prefix: &str, runtime_dir: Option<&Path>) -> Result<procctl::Process> {
    std::env::set_var("HUGESHARE_QUIET", "1");
    let mut a = vec![
        "--proc-type=secondary".to_string(),
        format!("--file-prefix={prefix}"),
    ];
    if let Some(d) = runtime_dir {
        a.push(format!("--runtime-dir={}", d.display()));
    }
    let (p, _) = procctl::Process::from_args(a)
        .with_context(|| format!("joining group {prefix:?} (is its primary running?)"))?;
    Ok(p)
}

/// `cargo xtask qemu-cmdline`.
pub fn cmdline(a: CmdlineArgs) -> Result<()> {
    let p = join_group(&a.file_prefix, a.runtime_dir.as_deref())?;
    let names: Vec<&str> = a.metadata.iter().map(String::as_str).collect();
    let q = QemuArgs::from_process(&p, &names, a.first_slot)?;
    if a.one_line {
        println!("{}", q.shell_line());
    } else {
        for arg in q.args() {
            println!("{arg}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- vm-test

/// Messages from the host to guest a (and replies back).
const N_HOST: usize = 200;
/// Messages between the two guests.
const N_VM: usize = 200;
/// The word the host puts in the ring `grp`, which lives in the group's general segment.
const GRP_WORD: u64 = 0x5345_474d;
/// Values guest a enqueues into the multi-producer ring `mp` while a host thread does too.
const MP_GUEST_N: u64 = 20_000;
/// Tags of the producers in `mp` values (the low 40 bits are a sequence number).
const MP_GUEST_TAG: u64 = 1 << 40;
const MP_HOST_TAG: u64 = 2 << 40;
const MP_SEQ: u64 = (1 << 40) - 1;
/// Objects of the host's mempool.
const POOL_N: u32 = 63;
/// The word the host writes in the `ctl` memzone, and the one guest a writes back.
const HOST_WORD: u64 = 0x4853_4956_5348_4d44;
const GUEST_WORD: u64 = 0x6775_6573_7421;
/// isa-debug-exit: the guest writes 0x10 for "all passed", QEMU exits with 2*0x10+1.
const QEMU_PASS: i32 = 0x10 * 2 + 1;

struct Row {
    who: String,
    check: String,
    ok: bool,
    detail: String,
}

/// Removes files and directories on drop.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// A QEMU process, killed by pid if still running when dropped.
struct Vm {
    role: &'static str,
    child: Child,
    log: PathBuf,
    status: Option<Result<i32, String>>,
}
impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        crate::test_mp::untrack_child(self.child.id());
    }
}

/// `cargo xtask vm-test`.
pub fn vm_test(a: VmTestArgs) -> Result<()> {
    let t0 = Instant::now();
    let qemu = "qemu-system-x86_64";
    if Command::new(qemu).arg("--version").output().is_err() {
        bail!(
            "{qemu} is not installed: apt-get install -y --no-install-recommends qemu-system-x86"
        );
    }
    let root = workspace_root();
    let cache = root.join("target").join("vm");
    std::fs::create_dir_all(&cache)?;
    let vmlinux = fetch_kernel(&cache).context("getting the guest kernel")?;
    println!(
        "vm-test: kernel {} ({:.1?})",
        vmlinux.display(),
        t0.elapsed()
    );
    let guest = build_guest(&root).context("building the guest program")?;
    println!("vm-test: guest {} ({:.1?})", guest.display(), t0.elapsed());

    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("hugeshare-vmtest-{pid}"));
    std::fs::create_dir_all(&work)?;
    let mut cleanup = Cleanup(vec![work.clone()]);
    let initrd = work.join("initramfs.cpio");
    write_initramfs(&initrd, &std::fs::read(&guest)?)?;

    // The host primary, its metadata, the objects inside.
    // Hugepages for the group and the device when this process may set them up (as root: 16
    // pages reserved and a private hugetlbfs mounted, given back at the end).
    let require = std::env::var("HUGESHARE_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    let huge = if a.no_huge {
        None
    } else {
        match crate::test_mp::HugeSetup::acquire(16, "vmtest")? {
            Ok(h) => Some(h),
            Err(why) if require => bail!("HUGESHARE_REQUIRE_HUGEPAGES=1 but {why}"),
            Err(why) => {
                println!("NOTICE: {why}; the device is backed by /dev/shm instead of hugepages");
                None
            }
        }
    };
    std::env::set_var("HUGESHARE_QUIET", "1");
    let prefix = format!("hsvm{pid}");
    let rundir = work.join("run");
    let mut pargs = vec![
        "--proc-type=primary".to_string(),
        format!("--file-prefix={prefix}"),
        "-m".into(),
        "16".into(),
        format!("--runtime-dir={}", rundir.display()),
    ];
    match &huge {
        Some(h) => pargs.push(format!("--huge-dir={}", h.dir.display())),
        None => pargs.push("--no-huge".into()),
    }
    let (process, _) = procctl::Process::from_args(pargs).context("starting the host primary")?;
    let meta = Metadata::create(&process, "vmtest")?;
    let mut rows: Vec<Row> = Vec::new();
    let mut host = |check: &str, ok: bool, detail: String| {
        rows.push(Row {
            who: "host".into(),
            check: check.into(),
            ok,
            detail,
        })
    };
    let zones = meta.zones();
    let h2g = Ring::<u64>::create(&zones, "h2g", 1024, RingFlags::empty())?;
    let g2h = Ring::<u64>::create(&zones, "g2h", 1024, RingFlags::empty())?;
    let a2b = Ring::<u64>::create(&zones, "a2b", 256, RingFlags::empty())?;
    let b2a = Ring::<u64>::create(&zones, "b2a", 256, RingFlags::empty())?;
    let ctl = zones.reserve(&ZoneRequest::new("ctl", 64, ZoneKind::Memzone))?;
    let pool = Mempool::create(
        &zones,
        "pool",
        MempoolParams::new(POOL_N, 256).cache_size(8),
    )?;
    let held = Ring::<u32>::create(&zones, "held", 64, RingFlags::empty())?;
    let mpr = Ring::<u64>::create(&zones, "mp", 1024, RingFlags::empty())?;
    for r in [&h2g, &g2h, &a2b, &b2a] {
        meta.add_ring(r)?;
    }
    meta.add_ring(&held)?;
    meta.add_ring(&mpr)?;
    meta.add_memzone(&ctl)?;
    meta.add_mempool(&pool)?;
    ivshmem_meta::atomic_u64(&ctl, 0).store(HOST_WORD, Ordering::Release);
    let sent: Vec<u64> = (0..N_HOST as u64).map(|i| 1000 + i).collect();
    let k = h2g.enqueue_bulk(&sent);
    host(
        "enqueue for guest",
        k == N_HOST,
        format!("{k} of {N_HOST} messages in h2g"),
    );
    // A ring in the group's general memory: refused, unless its whole segment is exposed.
    let grp = Ring::<u64>::create(&process, "grp", 64, RingFlags::empty())?;
    let refused = meta.add_ring(&grp);
    host(
        "group memory refused",
        matches!(refused, Err(ivshmem_meta::MetaError::NotInDevice { .. })),
        refused
            .err()
            .map(|e| e.to_string())
            .unwrap_or("accepted!".into()),
    );
    let exposed = meta.add_exposing_segment(&grp);
    host(
        "segment exposed on request",
        exposed.is_ok() && grp.enqueue(GRP_WORD).is_ok(),
        match exposed {
            Ok(()) => format!("{:?}", meta.exposed_segments()),
            Err(e) => e.to_string(),
        },
    );

    let backing = format!(
        "{} ({} bytes, {:?})",
        meta.path().display(),
        meta.device_len(),
        process.backing()
    );
    host(
        "device backing",
        huge.is_none() || process.backing() == hugemem::BackingKind::Hugetlbfs,
        backing,
    );

    // The QEMU arguments exactly as `cargo xtask qemu-cmdline` prints them (this program, run
    // as another process of the group), one per line; the one-line form must say the same.
    let exe = std::env::current_exe()?;
    let printed = |extra: &[&str]| -> Result<String> {
        let out = Command::new(&exe)
            .args([
                "qemu-cmdline",
                "--file-prefix",
                &prefix,
                "--metadata",
                "vmtest",
            ])
            .arg("--runtime-dir")
            .arg(&rundir)
            .args(extra)
            .output()?;
        if !out.status.success() {
            bail!(
                "cargo xtask qemu-cmdline failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let lines: Vec<String> = printed(&[])?.lines().map(str::to_string).collect();
    let one = printed(&["--one-line"])?;
    // What they must be: this device, then the exposed segment, in the next slot.
    let mut devs = vec![(
        "vmtest".into(),
        meta.path().to_path_buf(),
        meta.device_len(),
    )];
    for (k, (p, len)) in meta.exposed_segments().into_iter().enumerate() {
        devs.push((format!("vmtest_s{}", k + 1), p, len));
    }
    let expected = QemuArgs::new(devs, FIRST_PCI_SLOT)?;
    let late = meta.add_memzone(&ctl);
    let same = lines == expected.args() && one.trim_end() == expected.shell_line();
    host(
        "qemu-cmdline output",
        same,
        if same {
            one.trim_end().to_string()
        } else {
            format!(
                "printed {lines:?} / {one:?}, expected {:?}",
                expected.args()
            )
        },
    );
    host(
        "sealed by qemu-cmdline",
        meta.is_sealed() && matches!(late, Err(ivshmem_meta::MetaError::Sealed { .. })),
        late.err()
            .map(|e| e.to_string())
            .unwrap_or("an addition was accepted".into()),
    );

    let generation = process.generation();
    // The host's TSC frequency: under TCG the guest's RDTSC reads the host's TSC, while its HPET
    // runs on QEMU's virtual clock, so the guest checks one against the other with a frequency
    // it did not calibrate against its own (HPET-driven) clocks.
    let tsc_hz = tsc_hpet::Tsc::frequency().map(|f| f.hz).unwrap_or(0);
    // Host threads on the ring `mp`: a producer enqueueing while guest a enqueues too (a
    // multi-producer CAS race between a host thread and a vCPU), and a consumer checking that
    // each producer's values arrive complete and in order.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (r, c, stop) = (mpr.clone(), ctl.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = ivshmem_meta::atomic_u64(&c, 16);
            let done = ivshmem_meta::atomic_u64(&c, 24);
            while started.load(Ordering::Acquire) == 0 && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(100));
            }
            let mut n = 0u64;
            let mut during = 0u64;
            while done.load(Ordering::Acquire) == 0 && !stop.load(Ordering::Acquire) {
                if r.enqueue(MP_HOST_TAG | n).is_ok() {
                    n += 1;
                    during += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            (n, during)
        })
    };
    let consumer = {
        let (r, stop) = (mpr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = [0u64; 2];
            let mut errors = Vec::new();
            let mut buf = [0u64; 64];
            loop {
                let k = r.dequeue_burst(&mut buf);
                for &v in &buf[..k] {
                    let (i, seq) = match v & !MP_SEQ {
                        MP_GUEST_TAG => (0, v & MP_SEQ),
                        MP_HOST_TAG => (1, v & MP_SEQ),
                        _ => {
                            errors.push(format!("foreign value {v:#x}"));
                            continue;
                        }
                    };
                    if seq != next[i] && errors.len() < 5 {
                        errors.push(format!(
                            "{} value {seq} where {} was due",
                            ["guest", "host"][i],
                            next[i]
                        ));
                    }
                    next[i] = seq + 1;
                }
                if k == 0 {
                    if stop.load(Ordering::Acquire) && r.count() == 0 {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            (next, errors)
        })
    };
    let mut vms = Vec::new();
    for role in ["a", "b"] {
        let log = work.join(format!("serial-{role}.log"));
        let out = File::create(work.join(format!("qemu-{role}.out")))?;
        let mut c = Command::new(qemu);
        c.args(["-accel", "tcg", "-machine", "pc", "-smp", &a.smp, "-m", "256M"])
            .args(["-nographic", "-nodefaults", "-no-reboot", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(&vmlinux)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 quiet hugeshare.role={role} hugeshare.gen={generation} hugeshare.n={N_HOST} hugeshare.m={N_VM} hugeshare.pool={POOL_N} hugeshare.tsc_hz={tsc_hz} hugeshare.mp={MP_GUEST_N}"
            ))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(&lines)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = c.spawn().with_context(|| format!("starting {qemu}"))?;
        crate::test_mp::track_child(child.id());
        println!("vm-test: guest {role} started (QEMU pid {})", child.id());
        vms.push(Vm {
            role,
            child,
            log,
            status: None,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    while vms.iter().any(|v| v.status.is_none()) {
        for v in vms.iter_mut().filter(|v| v.status.is_none()) {
            match v.child.try_wait()? {
                Some(st) => {
                    v.status = Some(Ok(st.code().unwrap_or(-1)));
                    println!(
                        "vm-test: guest {} exited ({st}) at {:.1?}",
                        v.role,
                        t0.elapsed()
                    );
                }
                None if Instant::now() > deadline => {
                    let _ = v.child.kill();
                    let _ = v.child.wait();
                    v.status = Some(Err(format!("killed after {} s", a.timeout)));
                }
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    stop.store(true, Ordering::Release);
    // A thread can be stuck inside the ring for good (a reservation that is never published,
    // which is what non-atomic guest atomics produce): never wait for it forever.
    let until = Instant::now() + Duration::from_secs(15);
    while !(producer.is_finished() && consumer.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if producer.is_finished() && consumer.is_finished() {
        let (host_sent, during) = producer.join().expect("producer thread");
        let (seen, errors) = consumer.join().expect("consumer thread");
        host(
            "mp ring: host and guest",
            errors.is_empty() && seen[0] == MP_GUEST_N && seen[1] == host_sent && during > 0,
            format!(
                "guest enqueued {} of {MP_GUEST_N}, host {host_sent} at the same time; all in order: {}{}",
                seen[0],
                errors.is_empty(),
                if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
            ),
        );
    } else {
        host(
            "mp ring: host and guest",
            false,
            format!(
                "a host thread is stuck inside ring mp (producer finished: {}, consumer: {}): a reservation was never published; are the guest's atomics atomic (-smp {})?",
                producer.is_finished(),
                consumer.is_finished(),
                a.smp
            ),
        );
    }

    // Host-side checks of what the guests did.
    let mut got = vec![0u64; N_HOST + 1];
    let k = g2h.dequeue_burst(&mut got);
    let expect: Vec<u64> = sent.iter().map(|v| v * 3).collect();
    host(
        "replies from guest",
        k == N_HOST && got[..k] == expect[..],
        format!(
            "{k} of {N_HOST} replies, {}",
            if got[..k] == expect[..k.min(N_HOST)] {
                "values right"
            } else {
                "values WRONG"
            }
        ),
    );
    let avail = pool.avail_count();
    let mut idx = [0u32; 16];
    let k = held.dequeue_burst(&mut idx);
    for &i in &idx[..k] {
        if let Some(o) = pool.obj(i) {
            pool.put(o);
        }
    }
    host(
        "mempool objects from guest",
        avail == POOL_N - 8 && k == 8 && pool.is_full(),
        format!(
            "{avail} of {POOL_N} available after the guest, {k} handed over by index and put back: full {}",
            pool.is_full()
        ),
    );
    let gw = ivshmem_meta::atomic_u64(&ctl, 8).load(Ordering::Acquire);
    host(
        "memzone written by guest",
        gw == GUEST_WORD,
        format!("{gw:#x}"),
    );
    let back = grp.dequeue();
    host(
        "exposed segment used by guest",
        back == Some(GRP_WORD + 1),
        format!(
            "ring grp holds {back:x?} (the guest replaces {GRP_WORD:#x} by {:#x})",
            GRP_WORD + 1
        ),
    );
    host(
        "rings drained",
        [&h2g, &a2b, &b2a, &grp, &mpr]
            .iter()
            .all(|r| r.count() == 0),
        format!(
            "h2g {} a2b {} b2a {} grp {}",
            h2g.count(),
            a2b.count(),
            b2a.count(),
            grp.count()
        ),
    );

    let mut guest_rows = Vec::new();
    for v in &vms {
        let log = std::fs::read_to_string(&v.log).unwrap_or_default();
        let mut checks = 0;
        for line in log.lines() {
            if let Some(rest) = line.trim().strip_prefix("HSCHECK ") {
                let mut it = rest.splitn(3, ' ');
                let (name, verdict, detail) = (
                    it.next().unwrap_or(""),
                    it.next().unwrap_or(""),
                    it.next().unwrap_or(""),
                );
                checks += 1;
                guest_rows.push(Row {
                    who: format!("guest {}", v.role),
                    check: name.into(),
                    ok: verdict == "PASS",
                    detail: detail.into(),
                });
            }
        }
        let (ok, detail) = match &v.status {
            Some(Ok(c)) if *c == QEMU_PASS => {
                (true, format!("QEMU exit {c} (isa-debug-exit 0x10)"))
            }
            Some(Ok(0)) => (
                false,
                "QEMU exit 0: the guest never reported (kernel panic or power-off)".to_string(),
            ),
            Some(Ok(c)) => (false, format!("QEMU exit {c}")),
            Some(Err(e)) => (false, e.clone()),
            None => (false, "not run".into()),
        };
        guest_rows.push(Row {
            who: format!("guest {}", v.role),
            check: "verdict".into(),
            ok: ok && checks > 0,
            detail: format!("{detail}; {checks} checks reported"),
        });
    }
    rows.extend(guest_rows);
    drop(vms);
    drop(h2g);
    drop(g2h);
    drop(a2b);
    drop(b2a);
    drop(ctl);
    drop(pool);
    drop(held);
    drop(grp);
    drop(mpr);
    let meta_path = meta.path().to_path_buf();
    drop(meta);
    drop(process);
    drop(huge);

    println!();
    println!("{:<8} {:<30} {:<5} detail", "who", "check", "");
    let mut failed = 0;
    for r in &rows {
        if !r.ok {
            failed += 1;
        }
        println!(
            "{:<8} {:<30} {:<5} {}",
            r.who,
            r.check,
            if r.ok { "PASS" } else { "FAIL" },
            r.detail
        );
    }
    println!();
    let gone = !meta_path.exists();
    println!(
        "vm-test: {} checks, {failed} failed, {:.1?}; device file removed: {gone}",
        rows.len(),
        t0.elapsed()
    );
    if a.keep || failed > 0 {
        let keep = cache.join(format!("last-run-{pid}"));
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::create_dir_all(&keep)?;
        for f in std::fs::read_dir(&work)?.flatten() {
            let p = f.path();
            if p.is_file() {
                let _ = std::fs::copy(&p, keep.join(f.file_name()));
            }
        }
        println!("vm-test: logs kept in {}", keep.display());
    }
    drop(cleanup.0.drain(..).collect::<Cleanup>());
    if failed > 0 || !gone {
        bail!("vm-test failed");
    }
    Ok(())
}

impl FromIterator<PathBuf> for Cleanup {
    fn from_iter<I: IntoIterator<Item = PathBuf>>(it: I) -> Self {
        Cleanup(it.into_iter().collect())
    }
}

/// The guest kernel: Debian's `linux-image-amd64` (and the versioned package it depends on),
/// fetched with `apt-get download`, its xz-compressed payload turned into a plain `vmlinux`
/// that QEMU boots through PVH. Cached in `target/vm/vmlinux`.
fn fetch_kernel(cache: &Path) -> Result<PathBuf> {
    let vmlinux = cache.join("vmlinux");
    if vmlinux.exists() {
        return Ok(vmlinux);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let find = |prefix: &str| -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy().starts_with(prefix) && n.to_string_lossy().ends_with(".deb")
                })
            })
    };
    if find("linux-image-amd64_").is_none() {
        run(Command::new("apt-get")
            .args(["download", "linux-image-amd64"])
            .current_dir(&debs))?;
    }
    let meta =
        find("linux-image-amd64_").context("apt-get download left no linux-image-amd64 .deb")?;
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&meta)
        .arg("Depends")
        .output()?;
    let deps = String::from_utf8_lossy(&out.stdout);
    let image = deps
        .split(',')
        .map(|d| d.trim().split(' ').next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .with_context(|| format!("no versioned linux-image in {deps:?}"))?
        .to_string();
    if find(&format!("{image}_")).is_none() {
        run(Command::new("apt-get")
            .args(["download", &image])
            .current_dir(&debs))?;
    }
    let deb = find(&format!("{image}_")).context("apt-get download left no kernel .deb")?;
    let tree = debs.join("tree");
    std::fs::create_dir_all(&tree)?;
    run(Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" ./boot")
        .arg("sh")
        .arg(&deb)
        .arg(&tree))?;
    let vmlinuz = std::fs::read_dir(tree.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no /boot/vmlinuz-* in the kernel package")?;
    let bz = std::fs::read(&vmlinuz)?;
    const XZ: [u8; 6] = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
    let at = bz
        .windows(6)
        .position(|w| w == XZ)
        .with_context(|| format!("no xz stream in {}", vmlinuz.display()))?;
    let tmp = cache.join("vmlinux.tmp");
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(File::create(&tmp)?)
        .spawn()
        .context("running xz (apt-get install xz-utils)")?;
    // xz stops reading at the end of the stream: the bytes after it (a broken pipe) are not ours.
    match xz.stdin.take().expect("piped").write_all(&bz[at..]) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let st = xz.wait()?;
    let mut head = [0u8; 4];
    File::open(&tmp)?.read_exact(&mut head)?;
    if !st.success() || head != *b"\x7fELF" {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "decompressing {} gave no ELF vmlinux (xz: {st})",
            vmlinuz.display()
        );
    }
    std::fs::rename(&tmp, &vmlinux)?;
    // Only the vmlinux is kept; the packages (~70 MB) are fetched again if it is ever removed.
    let _ = std::fs::remove_dir_all(&debs);
    Ok(vmlinux)
}

/// Build the guest program statically (`+crt-static`, explicit `--target` so the flag stays off
/// build scripts).
fn build_guest(root: &Path) -> Result<PathBuf> {
    let triple = "x86_64-unknown-linux-gnu";
    run(cargo()
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "hugeshare-guest",
            "--target",
            triple,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join(triple).join("release").join("hugeshare-guest");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// A `newc` cpio archive holding `/init` (the guest program), the directories it mounts on and
/// a `/dev/console` node.
fn write_initramfs(path: &Path, init: &[u8]) -> Result<()> {
    let mut out = Vec::with_capacity(init.len() + 4096);
    let mut ino = 1;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)| {
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0,
            0,
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        ino += 1;
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    for d in ["dev", "proc", "sys"] {
        entry(&mut out, d, 0o040755, &[], (0, 0));
    }
    entry(&mut out, "dev/console", 0o020600, &[], (5, 1));
    entry(&mut out, "init", 0o100755, init, (0, 0));
    entry(&mut out, "TRAILER!!!", 0, &[], (0, 0));
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
