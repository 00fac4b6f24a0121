//! `cargo xtask bench pipeline`: packets per second through the sample applications, ours beside
//! DPDK's, in the same invocation.
//!
//! Rows (each the median over `--rounds` rounds, default 5, of `--secs` seconds each, default 3;
//! configurations alternate within a round):
//!
//! * **client/server**: our `client_server_mp` (server on lcore/CPU 0, one client on lcore/CPU 1,
//!   synthetic source, 1,024 flows hashed with CRC32-C; the figure is the packets the client
//!   received per second, the median of its half-second readings after the first) beside DPDK's
//!   `client_server_mp` (`mp_server -l 0-1 --vdev net_null0 --vdev net_null1 -- -p 3 -n 1`,
//!   `mp_client -l 1 -- -n 0`; the figure is the client's received count per one-second
//!   snapshot of the server's display, first and last snapshots dropped);
//! * **symmetric**: our `symmetric_mp` with two peers (CPUs 0 and 1; per-process rate: the mean
//!   of the two peers' median half-second readings) beside DPDK's `symmetric_mp` with two
//!   processes (`--vdev net_null0 --vdev net_null1 -- -p 3 --num-procs=2`; its counters, printed
//!   at SIGINT, divided by each process's lifetime, as in `dpdk-baseline.md` §4).
//!
//! Ours runs twice: with a tracked pool (`MempoolFlags::TRACK`: every object's holder recorded,
//! so a SIGKILLed member's objects come back; what the test-mp scenarios check) and untracked
//! (`--no-track`, DPDK's own guarantees: a dead member's cache comes back, objects in its hands
//! do not).
//!
//! DPDK's samples are built from Debian's `dpdk-doc` examples
//! (`/usr/share/dpdk/examples/multi_process`, copied to a temporary directory and built with
//! `make`, pkg-config `libdpdk`), when present; otherwise the DPDK rows say why they are absent.
//! Both sides run on 2 MiB hugepages when the benchmark runs as root: it reserves pages and
//! mounts a private hugetlbfs for the run, and gives both back at the end (DPDK's secondaries
//! cannot attach without hugepages). Without root, ours runs with `--no-huge` and DPDK's rows
//! are skipped.
//!
//! Caveat, stated in the output: DPDK's `net_null` receive allocates mbufs in bulk and sets their
//! length fields; our synthetic source takes objects in bulk from the pool through the lcore's
//! cache and writes a 32-byte header (5-tuple, length, port, sequence number) into each, and the
//! server also hashes the 5-tuple. The per-packet work is alike, not identical.
//!
//! Options: `--rounds N`, `--secs S`, `--only cs|sym`.
//!
//! The binary also runs the sample applications themselves (`pipeline --as-cs ARGS`,
//! `pipeline --as-sym ARGS`), so the benchmark starts the very same code as separate processes.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hugeshare_bench::median;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--as-cs") => {
            std::process::exit(hugeshare_examples::client_server::main(args[1..].to_vec()))
        }
        Some("--as-sym") => {
            std::process::exit(hugeshare_examples::symmetric::main(args[1..].to_vec()))
        }
        _ => {}
    }
    let mut rounds = 5usize;
    let mut secs = 3.0f64;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--secs" => secs = it.next().context("--secs S")?.parse()?,
            "--only" => only = Some(it.next().context("--only cs|sym")?.clone()),
            other => bail!("unknown option {other:?}; options: --rounds N --secs S --only cs|sym"),
        }
    }
    let run_cs = only.as_deref() != Some("sym");
    let run_sym = only.as_deref() != Some("cs");
    let rt = std::env::temp_dir().join(format!("hugeshare-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&rt)?;
    let huge = Huge::setup(1024);
    let mem: Vec<String> = match &huge {
        Ok(h) => vec!["--huge-dir".into(), h.dir.display().to_string()],
        Err(why) => {
            println!("note: no hugepages for this run ({why}); ours runs with --no-huge");
            vec!["--no-huge".into()]
        }
    };
    let dpdk = match (&huge, hugeshare_bench::DPDK_AVAILABLE) {
        (Err(_), _) => Err("DPDK's secondaries need hugepages, which this run has none of".into()),
        (_, false) => Err(hugeshare_bench::no_dpdk_notice().to_string()),
        (Ok(_), true) => build_dpdk(),
    };
    if let Err(why) = &dpdk {
        println!("note: DPDK's samples are not run: {why}");
    }
    let ctx = Ctx {
        exe: std::env::current_exe()?,
        rt: rt.clone(),
        mem,
        secs,
        huge_dir: huge.as_ref().ok().map(|h| h.dir.clone()),
    };
    let mut cs_ours_t = vec![];
    let mut cs_ours_u = vec![];
    let mut cs_dpdk = vec![];
    let mut sym_ours_t = vec![];
    let mut sym_ours_u = vec![];
    let mut sym_dpdk = vec![];
    for r in 0..rounds {
        let tag = |what: &str| format!("hspl{}r{r}{what}", std::process::id());
        if run_cs {
            push(
                &mut cs_ours_t,
                "ours c/s tracked",
                ctx.ours_cs(&tag("ct"), true),
            );
            if let Ok(d) = &dpdk {
                push(&mut cs_dpdk, "DPDK c/s", ctx.dpdk_cs(d, &tag("dc")));
            }
            push(
                &mut cs_ours_u,
                "ours c/s untracked",
                ctx.ours_cs(&tag("cu"), false),
            );
        }
        if run_sym {
            push(
                &mut sym_ours_t,
                "ours sym tracked",
                ctx.ours_sym(&tag("st"), true),
            );
            if let Ok(d) = &dpdk {
                push(&mut sym_dpdk, "DPDK sym", ctx.dpdk_sym(d, &tag("ds")));
            }
            push(
                &mut sym_ours_u,
                "ours sym untracked",
                ctx.ours_sym(&tag("su"), false),
            );
        }
        println!("round {}/{rounds} done", r + 1);
    }
    drop(huge);
    let _ = std::fs::remove_dir_all(&rt);
    println!();
    println!(
        "pipeline: Mpps, median of {rounds} rounds of {secs} s (hugepages: {})",
        if ctx.huge_dir.is_some() {
            "2 MiB"
        } else {
            "no, 4 KiB pages in /dev/shm"
        }
    );
    println!(
        "{:<46} {:>10} {:>10} {:>8} {:>8}   [best: ours / DPDK]",
        "row", "ours", "DPDK", "ratio", "target"
    );
    let best = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let row = |name: &str, ours: &mut Vec<f64>, d: &mut Vec<f64>, target: f64| {
        if ours.is_empty() {
            return;
        }
        let ob = best(ours);
        let o = median(ours);
        if d.is_empty() {
            println!(
                "{name:<46} {o:>10.2} {:>10} {:>8} {:>7.1}x   [best: {ob:.2}]",
                "-", "-", target
            );
        } else {
            let db = best(d);
            let dd = median(d);
            println!(
                "{name:<46} {o:>10.2} {dd:>10.2} {:>7.2}x {:>7.1}x{}   [best: {ob:.2} / {db:.2} = {:.2}x]",
                o / dd,
                target,
                if o / dd >= target { "" } else { "  (missed)" },
                ob / db
            );
        }
    };
    let raw_ours = format!(
        "ours c/s tracked {cs_ours_t:.2?}, untracked {cs_ours_u:.2?}; sym tracked \
         {sym_ours_t:.2?}, untracked {sym_ours_u:.2?}"
    );
    let mut cs_d2 = cs_dpdk.clone();
    let mut sym_d2 = sym_dpdk.clone();
    row(
        "client/server, client rx (tracked pool)",
        &mut cs_ours_t,
        &mut cs_dpdk,
        1.5,
    );
    row(
        "client/server, client rx (untracked pool)",
        &mut cs_ours_u,
        &mut cs_d2,
        1.5,
    );
    row(
        "symmetric, per process (tracked pool)",
        &mut sym_ours_t,
        &mut sym_dpdk,
        1.2,
    );
    row(
        "symmetric, per process (untracked pool)",
        &mut sym_ours_u,
        &mut sym_d2,
        1.2,
    );
    println!(
        "raw rounds: DPDK c/s {cs_d2:.2?}, DPDK sym {sym_d2:.2?}; {raw_ours}\n\
         Rates jump between levels from one round to the next: DPDK's client/server shares\n\
         lcore 1 between the server and the client (as dpdk-baseline.md §4 runs it: 12-44 Mpps\n\
         there), and on this VM the two vCPUs move between near and distant host cores (both\n\
         sides): read the rounds and the best of each side as well as the medians.\n\
         caveat: DPDK's rows use its net_null device (bulk mbuf allocation, length fields set);\n\
         ours use a synthetic source doing the same kind of per-packet work (bulk get through the\n\
         lcore cache, a 32-byte header written; the server also hashes the 5-tuple with CRC32-C)."
    );
    Ok(())
}

fn push(v: &mut Vec<f64>, what: &str, r: Result<f64>) {
    match r {
        Ok(x) => {
            println!("  {what}: {x:.2} Mpps");
            v.push(x);
        }
        Err(e) => println!("  {what}: failed: {e:#}"),
    }
}

struct Ctx {
    exe: PathBuf,
    rt: PathBuf,
    mem: Vec<String>,
    secs: f64,
    huge_dir: Option<PathBuf>,
}

fn spawn(cmd: &mut Command) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))
}

fn output(mut c: Child, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    while c.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.wait();
    let mut s = String::new();
    if let Some(mut o) = c.stdout.take() {
        let _ = o.read_to_string(&mut s);
    }
    Ok(s)
}

/// Rates in lines containing `marker` and `rate=X Mpps`, the first dropped.
fn rates(text: &str, marker: &str) -> Vec<f64> {
    let v: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let r = l.split("rate=").nth(1)?;
            r.split_whitespace().next()?.parse().ok()
        })
        .collect();
    v.into_iter().skip(1).collect()
}

impl Ctx {
    fn ours(&self, prefix: &str, lcore: u32, primary: bool, app: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg(if app.contains(&"--role") {
            "--as-cs"
        } else {
            "--as-sym"
        })
        .arg(format!(
            "--proc-type={}",
            if primary { "primary" } else { "secondary" }
        ))
        .arg(format!("--file-prefix={prefix}"))
        .args(["-l", &lcore.to_string()]);
        if primary {
            c.args(&self.mem).args(["-m", "256"]);
        }
        c.arg("--")
            .args(app)
            .env("HUGESHARE_RUNTIME_DIR", &self.rt)
            .env("HUGESHARE_QUIET", "1");
        c
    }

    fn ours_cs(&self, prefix: &str, tracked: bool) -> Result<f64> {
        let secs = format!("{}", self.secs + 1.0);
        let mut sargs = vec!["--role", "server", "--clients", "1", "--seconds", &secs];
        if !tracked {
            sargs.push("--no-track");
        }
        let server = spawn(&mut self.ours(prefix, 0, true, &sargs))?;
        std::thread::sleep(Duration::from_millis(300));
        let csecs = format!("{}", self.secs);
        let client = spawn(&mut self.ours(
            prefix,
            1,
            false,
            &[
                "--role",
                "client",
                "--client-id",
                "0",
                "--seconds",
                &csecs,
                "--interval-ms",
                "500",
            ],
        ))?;
        let out = output(client, Duration::from_secs_f64(self.secs + 10.0))?;
        let _ = output(server, Duration::from_secs_f64(self.secs + 10.0))?;
        let mut r = rates(&out, "client 0:");
        if r.is_empty() {
            bail!("no rate lines from the client: {out}");
        }
        Ok(median(&mut r))
    }

    fn ours_sym(&self, prefix: &str, tracked: bool) -> Result<f64> {
        let secs0 = format!("{}", self.secs + 0.5);
        let secs1 = format!("{}", self.secs);
        let mut a0 = vec![
            "--num-procs",
            "2",
            "--proc-id",
            "0",
            "--seconds",
            &secs0,
            "--interval-ms",
            "500",
        ];
        if !tracked {
            a0.push("--no-track");
        }
        let p0 = spawn(&mut self.ours(prefix, 0, true, &a0))?;
        std::thread::sleep(Duration::from_millis(300));
        let p1 = spawn(&mut self.ours(
            prefix,
            1,
            false,
            &[
                "--num-procs",
                "2",
                "--proc-id",
                "1",
                "--seconds",
                &secs1,
                "--interval-ms",
                "500",
            ],
        ))?;
        let o1 = output(p1, Duration::from_secs_f64(self.secs + 10.0))?;
        let o0 = output(p0, Duration::from_secs_f64(self.secs + 10.0))?;
        let (mut r0, mut r1) = (rates(&o0, "proc 0:"), rates(&o1, "proc 1:"));
        if r0.is_empty() || r1.is_empty() {
            bail!("no rate lines from the peers: {o0} {o1}");
        }
        Ok((median(&mut r0) + median(&mut r1)) / 2.0)
    }

    fn dpdk_cmd(&self, bin: &Path, prefix: &str) -> Command {
        // DPDK's samples print with stdio: line-buffer their output into our pipe (stdbuf), or
        // what they print before a signal ends them is lost.
        let mut c = if Path::new("/usr/bin/stdbuf").exists() {
            let mut c = Command::new("/usr/bin/stdbuf");
            c.arg("-oL").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        c.args(["--no-pci", &format!("--file-prefix={prefix}")]);
        if let Some(d) = &self.huge_dir {
            c.args(["--huge-dir", &d.display().to_string()]);
        }
        c
    }

    fn dpdk_cs(&self, d: &DpdkBins, prefix: &str) -> Result<f64> {
        let mut s = self.dpdk_cmd(&d.server, prefix);
        s.args([
            "-l",
            "0-1",
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--",
            "-p",
            "3",
            "-n",
            "1",
        ]);
        let server = spawn(&mut s)?;
        std::thread::sleep(Duration::from_millis(1500));
        let mut c = self.dpdk_cmd(&d.client, prefix);
        c.args(["-l", "1", "--proc-type=secondary", "--", "-n", "0"]);
        let client = spawn(&mut c)?;
        let t_client = Instant::now();
        // mp_server's display thread shares lcore 1 with the busy client and is often late:
        // run long enough (10 s, as dpdk-baseline.md) for several displays.
        std::thread::sleep(Duration::from_secs_f64((self.secs + 1.0).max(10.0)));
        signal(&client, libc::SIGTERM);
        let client_life = t_client.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        signal(&server, libc::SIGINT);
        let _ = output(client, Duration::from_secs(5))?;
        let out = output(server, Duration::from_secs(5))?;
        cleanup_dpdk_rundir(prefix);
        // cumulative client rx in each display
        let snaps: Vec<u64> = out
            .split("Client")
            .skip(1)
            .filter_map(|blk| {
                let b = blk.trim_start();
                let b = b.strip_prefix('0')?.trim_start().strip_prefix("- rx:")?;
                b.split(|c: char| c == ',' || c.is_whitespace())
                    .find(|t| !t.is_empty())?
                    .parse()
                    .ok()
            })
            .collect();
        let mut deltas: Vec<f64> = snaps
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6)
            .filter(|&d| d > 0.0)
            .collect();
        if deltas.len() > 2 {
            deltas = deltas[1..deltas.len() - 1].to_vec();
        }
        if deltas.is_empty() {
            if let Some(&last) = snaps.last() {
                // One display only: the client's count over its whole life (a lower bound).
                println!("  (DPDK c/s: one display only; rate = client rx / client lifetime, a lower bound)");
                return Ok(last as f64 / client_life / 1e6);
            }
            bail!(
                "no client counters in mp_server's output ({} bytes): {:?}",
                out.len(),
                &out[..out.len().min(600)]
            );
        }
        Ok(median(&mut deltas))
    }

    fn dpdk_sym(&self, d: &DpdkBins, prefix: &str) -> Result<f64> {
        let app = |id: &str| {
            vec![
                "--".to_string(),
                "-p".into(),
                "3".into(),
                "--num-procs=2".into(),
                format!("--proc-id={id}"),
            ]
        };
        let mut c0 = self.dpdk_cmd(&d.sym, prefix);
        c0.args([
            "-l",
            "0",
            "--proc-type=primary",
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
        ])
        .args(app("0"));
        let t0 = Instant::now();
        let p0 = spawn(&mut c0)?;
        std::thread::sleep(Duration::from_millis(1500));
        let mut c1 = self.dpdk_cmd(&d.sym, prefix);
        c1.args(["-l", "1", "--proc-type=secondary"]).args(app("1"));
        let t1 = Instant::now();
        let p1 = spawn(&mut c1)?;
        std::thread::sleep(Duration::from_secs_f64(self.secs));
        signal(&p1, libc::SIGINT);
        let l1 = t1.elapsed().as_secs_f64();
        signal(&p0, libc::SIGINT);
        let l0 = t0.elapsed().as_secs_f64();
        let o1 = output(p1, Duration::from_secs(5))?;
        let o0 = output(p0, Duration::from_secs(5))?;
        cleanup_dpdk_rundir(prefix);
        let rx = |o: &str| -> u64 {
            o.lines()
                .filter_map(|l| {
                    let r = l.split("RX - ").nth(1)?;
                    r.split(',').next()?.trim().parse::<u64>().ok()
                })
                .sum()
        };
        let (r0, r1) = (rx(&o0), rx(&o1));
        if r0 == 0 || r1 == 0 {
            bail!("no port counters from symmetric_mp (outputs: {o0:?} {o1:?})");
        }
        Ok((r0 as f64 / l0 + r1 as f64 / l1) / 2.0 / 1e6)
    }
}

fn signal(c: &Child, sig: libc::c_int) {
    // SAFETY: sending a signal to a child we started and have not reaped yet.
    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
}

fn cleanup_dpdk_rundir(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

struct DpdkBins {
    server: PathBuf,
    client: PathBuf,
    sym: PathBuf,
}

/// Build DPDK's client_server_mp and symmetric_mp from Debian's dpdk-doc examples.
fn build_dpdk() -> Result<DpdkBins, String> {
    let src = Path::new("/usr/share/dpdk/examples/multi_process");
    if !src.is_dir() {
        return Err(format!(
            "{} is missing: install Debian's dpdk-doc (apt-get install dpdk-doc)",
            src.display()
        ));
    }
    let dir = std::env::temp_dir().join("hugeshare-pipeline-dpdk");
    let bins = DpdkBins {
        server: dir.join("client_server_mp/mp_server/build/mp_server"),
        client: dir.join("client_server_mp/mp_client/build/mp_client"),
        sym: dir.join("symmetric_mp/build/symmetric_mp"),
    };
    if bins.server.exists() && bins.client.exists() && bins.sym.exists() {
        return Ok(bins);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("cp")
        .args(["-r", &src.display().to_string(), &dir.display().to_string()])
        .status()
        .map_err(|e| format!("cp: {e}"))?
        .success();
    if !ok {
        return Err("copying the examples failed".into());
    }
    for sub in ["client_server_mp", "symmetric_mp"] {
        println!("building DPDK's {sub} (make, pkg-config libdpdk)...");
        let out = Command::new("make")
            .arg("-C")
            .arg(dir.join(sub))
            .output()
            .map_err(|e| format!("make: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "make -C {sub} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(bins)
}

/// 2 MiB pages reserved and a private hugetlbfs mounted for the run; both given back on drop.
struct Huge {
    dir: PathBuf,
    old: u64,
}

const NR: &str = "/proc/sys/vm/nr_hugepages";

impl Huge {
    fn setup(pages: u64) -> Result<Huge, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot reserve hugepages".into());
        }
        let read = || -> u64 {
            std::fs::read_to_string(NR)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let old = read();
        std::fs::write(NR, (old + pages).to_string()).map_err(|e| format!("writing {NR}: {e}"))?;
        let got = read();
        let dir =
            std::env::temp_dir().join(format!("hugeshare-pipeline-huge-{}", std::process::id()));
        let h = Huge { dir, old };
        if got < old + pages / 2 {
            return Err(format!("asked for {pages} hugepages, got {}", got - old));
        }
        std::fs::create_dir_all(&h.dir).map_err(|e| e.to_string())?;
        let ok = Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev"])
            .arg(&h.dir)
            .status()
            .map_err(|e| format!("mount: {e}"))?
            .success();
        if !ok {
            return Err(format!("mounting hugetlbfs on {} failed", h.dir.display()));
        }
        Ok(h)
    }
}

impl Drop for Huge {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::write(NR, self.old.to_string());
    }
}
