//! `cargo xtask bench attach`: how long a whole process takes to join a group, beside DPDK, and
//! how soon secondaries hear of their primary's death.
//!
//! Rows (medians over `--rounds`, ours and DPDK's alternating within each round):
//! * primary, 512 MiB of 2 MiB pages populated at start (DPDK: `-m 512`);
//! * primary with `--lazy-pages` (pages faulted on first touch; DPDK: its default dynamic mode);
//! * secondary attaching to a live primary;
//! * SIGKILL of the primary to each of 3 secondaries' `PrimaryDied` event (DPDK has no such
//!   event: its secondaries keep running without being told).
//!
//! "Whole process" is exec to the first `READY` line on standard output, measured by this
//! program. DPDK's side is `bench/csrc/attach.c` (rte_eal_init), run by this same binary
//! re-executed with `--dpdk-child`.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hugeshare_bench::median;

#[cfg(have_dpdk)]
extern "C" {
    fn attach_dpdk_main(argc: libc::c_int, argv: *mut *mut libc::c_char) -> libc::c_int;
}

struct Started {
    child: Child,
    stdin: Option<ChildStdin>,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
    ms: f64,
}

fn start(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Result<Started> {
    let t0 = Instant::now();
    let mut c = Command::new(bin);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        match out.next() {
            Some(Ok(l)) if l.starts_with("READY") => break,
            Some(Ok(l)) if l.starts_with("ERROR") => bail!("{} {args:?}: {l}", bin.display()),
            Some(Ok(_)) => continue,
            _ => bail!("{} {args:?} exited before READY", bin.display()),
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let stdin = child.stdin.take();
    Ok(Started {
        child,
        stdin,
        out,
        ms,
    })
}

fn stop(mut s: Started) {
    drop(s.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = s.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
}

fn mono_ns() -> u128 {
    let t = rustix_time();
    t.0 as u128 * 1_000_000_000 + t.1 as u128
}

fn rustix_time() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass, which is valid.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts)
    };
    (ts.tv_sec, ts.tv_nsec)
}

fn row(name: &str, ours: &mut [f64], dpdk: Option<&mut [f64]>, target: &str) {
    let o = median(ours);
    match dpdk {
        Some(d) if !d.is_empty() => {
            let dm = median(d);
            println!(
                "{name:<46} {o:>9.2} ms {dm:>9.2} ms {:>7.3}   {target}",
                o / dm
            );
        }
        _ => println!("{name:<46} {o:>9.2} ms {:>12} {:>7}   {target}", "-", "-"),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--dpdk-child") {
        #[cfg(have_dpdk)]
        {
            let mut cargs: Vec<std::ffi::CString> = std::iter::once(args[0].clone())
                .chain(args[2..].iter().cloned())
                .map(|a| std::ffi::CString::new(a).expect("no NUL in arguments"))
                .collect();
            let mut ptrs: Vec<*mut libc::c_char> =
                cargs.iter_mut().map(|c| c.as_ptr().cast_mut()).collect();
            ptrs.push(std::ptr::null_mut());
            // SAFETY: argv is a NULL-terminated array of valid C strings that outlive the call.
            #[allow(unsafe_code)]
            let r = unsafe { attach_dpdk_main((ptrs.len() - 1) as libc::c_int, ptrs.as_mut_ptr()) };
            std::process::exit(r);
        }
        #[cfg(not(have_dpdk))]
        bail!("built without DPDK");
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "hugeshare-agent"])
        .status()?;
    if !st.success() {
        bail!("building hugeshare-agent failed");
    }
    let agent = root.join("target/release/hugeshare-agent");
    let me = std::env::current_exe()?;
    if !hugemem::admin::is_root() {
        bail!("this benchmark reserves hugepages and mounts hugetlbfs: run it as root");
    }
    const P2M: u64 = 2 << 20;
    let res =
        hugemem::admin::reserve_pages(P2M, 700, None).context("reserving 700 x 2 MiB pages")?;
    let dir = std::env::temp_dir().join(format!("hugeshare-bench-attach-{}", std::process::id()));
    let mount = hugemem::admin::mount_private(&dir, P2M).context("mounting hugetlbfs")?;
    let rundir =
        std::env::temp_dir().join(format!("hugeshare-bench-attach-rt-{}", std::process::id()));
    let rd = rundir.to_string_lossy().to_string();
    let env = [
        ("HUGESHARE_RUNTIME_DIR", rd.as_str()),
        ("HUGESHARE_QUIET", "1"),
    ];
    let hd = format!("--huge-dir={}", dir.display());
    let dpdk = hugeshare_bench::DPDK_AVAILABLE;
    if !dpdk {
        println!("{}", hugeshare_bench::no_dpdk_notice());
    }
    let (mut p_pop, mut p_lazy, mut sec, mut death) = (vec![], vec![], vec![], vec![]);
    let (mut d_pop, mut d_dyn, mut d_sec) = (vec![], vec![], vec![]);
    let result = (|| -> Result<()> {
        for r in 0..rounds {
            let pf = format!("--file-prefix=ba{r}");
            // ours: primary populated, then a secondary
            let p = start(
                &agent,
                &[
                    "--proc-type=primary".into(),
                    "-m".into(),
                    "512".into(),
                    hd.clone(),
                    pf.clone(),
                    "--lcores=0@0".into(),
                ],
                &env,
            )?;
            p_pop.push(p.ms);
            let s = start(
                &agent,
                &[
                    "--proc-type=secondary".into(),
                    pf.clone(),
                    "--lcores=1@1".into(),
                ],
                &env,
            )?;
            sec.push(s.ms);
            stop(s);
            // primary death -> 3 secondaries' events
            let mut ss = Vec::new();
            for k in 0..3 {
                let mut s = start(
                    &agent,
                    &[
                        "--proc-type=secondary".into(),
                        pf.clone(),
                        format!("--lcores={}@1", 10 + k),
                    ],
                    &env,
                )?;
                writeln!(
                    s.stdin.as_mut().expect("stdin"),
                    "event-at 10000 primary-died"
                )?;
                ss.push(s);
            }
            std::thread::sleep(Duration::from_millis(30));
            let mut p = p;
            let t_kill = mono_ns();
            p.child.kill()?;
            let _ = p.child.wait();
            for mut s in ss {
                let line = s.out.next().transpose()?.unwrap_or_default();
                let at: u128 = line
                    .rsplit("at_ns=")
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if at == 0 {
                    bail!("a secondary did not report the primary's death: {line:?}");
                }
                death.push((at.saturating_sub(t_kill)) as f64 / 1e6);
                stop(s);
            }
            // ours: primary with lazy pages
            let pf2 = format!("--file-prefix=bl{r}");
            let p = start(
                &agent,
                &[
                    "--proc-type=primary".into(),
                    "-m".into(),
                    "512".into(),
                    "--lazy-pages".into(),
                    hd.clone(),
                    pf2,
                ],
                &env,
            )?;
            p_lazy.push(p.ms);
            stop(p);
            if dpdk {
                let dp = format!("--file-prefix=bd{r}");
                let base = vec![
                    "--dpdk-child".to_string(),
                    "--no-pci".into(),
                    dp.clone(),
                    hd.clone(),
                ];
                let mut a = base.clone();
                a.extend(["-l".into(), "0".into(), "-m".into(), "512".into()]);
                let p = start(&me, &a, &[])?;
                d_pop.push(p.ms);
                let mut a = base.clone();
                a.extend(["-l".into(), "1".into(), "--proc-type=secondary".into()]);
                let s = start(&me, &a, &[])?;
                d_sec.push(s.ms);
                stop(s);
                stop(p);
                let mut a = base.clone();
                a[2] = format!("--file-prefix=be{r}");
                a.extend(["-l".into(), "0".into()]);
                let p = start(&me, &a, &[])?;
                d_dyn.push(p.ms);
                stop(p);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&rundir);
    let _ = mount.unmount();
    let _ = std::fs::remove_dir(&dir);
    let _ = res.release();
    for d in ["/var/run/dpdk"] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with("bd") || n.starts_with("be") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    result?;
    println!("\nattach benchmark: whole process, exec to ready; medians of {rounds} alternating rounds; 2 MiB pages");
    println!(
        "{:<46} {:>12} {:>12} {:>7}   target",
        "case", "hugeshare", "DPDK 22.11", "ratio"
    );
    row(
        "primary, 512 MiB populated (DPDK -m 512)",
        &mut p_pop,
        dpdk.then_some(&mut d_pop[..]),
        "<= 0.5x DPDK",
    );
    row(
        "primary, lazy pages (DPDK default dynamic)",
        &mut p_lazy,
        dpdk.then_some(&mut d_dyn[..]),
        "<= 15 ms",
    );
    row(
        "secondary attach",
        &mut sec,
        dpdk.then_some(&mut d_sec[..]),
        "<= 5 ms",
    );
    row(
        "primary SIGKILL -> secondary event (3 each)",
        &mut death,
        None,
        "<= 100 ms (DPDK: no event)",
    );
    Ok(())
}
