//! `cargo xtask test-mp`: multi-process scenarios run as real OS processes.
//!
//! Each scenario is a TOML file in `tests/scenarios/`: a list of steps that start
//! `hugeshare-agent` processes (a group member obeying line commands), send them commands, expect
//! their answers, kill them with signals and check how they exit. Every scenario runs once per
//! memory mode: on real hugepages (`huge`: as root the runner reserves pages and mounts a private
//! hugetlbfs, and gives both back at the end) and with `--no-huge` (`/dev/shm`). The backing each
//! scenario used is read from `/proc/<pid>/smaps` of its processes; when hugepages were reserved
//! but a scenario's memory is not on 2 MiB pages, the scenario fails.
//!
//! Step keys: `proc` (a name), `start` (arguments; `{prefix}`, `{prefix2}`, `{mem}` (the mode's
//! memory option) and `{mem-inmem}` (the same for `--in-memory`) are replaced,
//! and `--file-prefix={prefix}` is added when absent), `binary = "variant"` (the agent built with a
//! different shared layout), `send` (a command line), `expect` (substrings that one output line
//! must all contain; other lines are skipped, an `ERR` line fails unless expected), `timeout_ms`,
//! `signal` (`KILL`, `TERM`, ...), `exit` (expected exit code), `close` (close its stdin, so it
//! leaves cleanly), `capture` (names whose `name=value` in the matched line become `{name}` in
//! later steps), `env` (`["NAME=value"]` for a started process), `sleep_ms`, `repeat` (run the steps in `[[repeat.step]]` N times),
//! `remove_rundir` (delete the group's runtime directory), `edit_config` (`"FIELD=VALUE"`: overwrite
//! one field of the live group's `config` file in place, as a hand edit or a damaged file would;
//! FIELD is a header field such as `window_len` or a segment's such as `segments[0].path`, see
//! [`config_field`]) and `restore_config` (put back every field edited so far).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::{run, workspace_root};

/// Arguments of `cargo xtask test-mp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run only scenarios whose file name or title contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Memory modes: `huge`, `nohuge`, or `all` (default: all; `huge` is skipped with a notice
    /// when hugepages cannot be had, and fails when HUGESHARE_REQUIRE_HUGEPAGES=1).
    #[arg(long, default_value = "all")]
    mode: String,
    /// Print every line the processes write.
    #[arg(long, short)]
    verbose: bool,
    /// Hugepages (2 MiB) to reserve for the run when running as root.
    #[arg(long, default_value_t = 512)]
    pages: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    title: String,
    #[serde(default)]
    modes: Option<Vec<String>>,
    step: Vec<Step>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Step {
    proc: Option<String>,
    start: Option<String>,
    binary: Option<String>,
    send: Option<String>,
    expect: Option<Expect>,
    timeout_ms: Option<u64>,
    signal: Option<String>,
    exit: Option<i32>,
    close: Option<bool>,
    sleep_ms: Option<u64>,
    repeat: Option<Repeat>,
    note: Option<String>,
    capture: Option<Vec<String>>,
    env: Option<Vec<String>>,
    /// Delete the group's runtime directory (`rm -rf` by a user or a tmp cleaner).
    remove_rundir: Option<bool>,
    /// Overwrite one field of the live group's configuration: `"FIELD=VALUE"`.
    edit_config: Option<String>,
    /// Put back every field `edit_config` changed, in reverse order.
    restore_config: Option<bool>,
}

/// How a configuration field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    U32,
    U64,
    /// A NUL-padded string of this many bytes.
    Str(usize),
}

/// Where field `name` of a configuration is (byte offset) and how it is stored. Header fields
/// by their names in `ConfigHeader`, a segment's as `segments[I].NAME`.
fn config_field(name: &str) -> Result<(usize, FieldKind)> {
    use shmconfig::layout::{ConfigHeader as H, SegmentEntry as S, PATH_LEN};
    use std::mem::{offset_of, size_of};
    if let Some(rest) = name.strip_prefix("segments[") {
        let (i, field) = rest
            .split_once("].")
            .ok_or_else(|| anyhow!("{name:?}: expected segments[I].FIELD"))?;
        let i: usize = i
            .parse()
            .with_context(|| format!("segment index in {name:?}"))?;
        if i >= shmconfig::layout::MAX_SEGMENTS {
            bail!(
                "{name:?}: a configuration has {} segment entries",
                shmconfig::layout::MAX_SEGMENTS
            );
        }
        let (o, k) = match field {
            "used" => (offset_of!(S, used), FieldKind::U32),
            "backing" => (offset_of!(S, backing), FieldKind::U32),
            "page_size" => (offset_of!(S, page_size), FieldKind::U64),
            "len" => (offset_of!(S, len), FieldKind::U64),
            "window_offset" => (offset_of!(S, window_offset), FieldKind::U64),
            "node" => (offset_of!(S, node), FieldKind::U32),
            "file_index" => (offset_of!(S, file_index), FieldKind::U32),
            "path" => (offset_of!(S, path), FieldKind::Str(PATH_LEN)),
            other => bail!("unknown segment field {other:?}"),
        };
        return Ok((offset_of!(H, segments) + i * size_of::<S>() + o, k));
    }
    Ok(match name {
        "flags" => (offset_of!(H, flags), FieldKind::U32),
        "max_zones" => (offset_of!(H, max_zones), FieldKind::U32),
        "zones_off" => (offset_of!(H, zones_off), FieldKind::U64),
        "total_len" => (offset_of!(H, total_len), FieldKind::U64),
        "window_base" => (offset_of!(H, window_base), FieldKind::U64),
        "window_len" => (offset_of!(H, window_len), FieldKind::U64),
        "seg_dir" => (offset_of!(H, seg_dir), FieldKind::Str(PATH_LEN)),
        "n_segments" => (offset_of!(H, n_segments), FieldKind::U32),
        other => bail!("unknown configuration field {other:?}"),
    })
}

/// The bytes of `value` for a field stored as `kind` (numbers in decimal or 0x-hex).
fn field_bytes(kind: FieldKind, value: &str) -> Result<Vec<u8>> {
    let num = || -> Result<u64> {
        match value.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => value.parse(),
        }
        .with_context(|| format!("{value:?} is not a number"))
    };
    Ok(match kind {
        FieldKind::U32 => u32::try_from(num()?)
            .context("a 32-bit field")?
            .to_ne_bytes()
            .to_vec(),
        FieldKind::U64 => num()?.to_ne_bytes().to_vec(),
        FieldKind::Str(n) => {
            if value.len() >= n {
                bail!("{value:?} does not fit in {n} bytes");
            }
            let mut b = value.as_bytes().to_vec();
            b.resize(n, 0);
            b
        }
    })
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Repeat {
    times: u32,
    step: Vec<Step>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum Expect {
    One(String),
    All(Vec<String>),
}

impl Expect {
    fn parts(&self) -> Vec<String> {
        match self {
            Expect::One(s) => vec![s.clone()],
            Expect::All(v) => v.clone(),
        }
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    transcript: Vec<String>,
}

struct Ctx<'a> {
    mode: &'a Mode,
    prefix: String,
    prefix2: String,
    rundir: PathBuf,
    agent: PathBuf,
    variant: PathBuf,
    verbose: bool,
    procs: BTreeMap<String, Proc>,
    started: usize,
    backing: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
    /// Bytes `edit_config` overwrote (offset, original), oldest first.
    config_saved: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct Mode {
    name: &'static str,
    mem: String,
    huge_dir: Option<PathBuf>,
}

fn subst(ctx: &Ctx<'_>, s: &str) -> String {
    let inmem = if ctx.mode.huge_dir.is_some() {
        ""
    } else {
        "--no-huge"
    };
    let mut s = s.to_string();
    for (k, v) in &ctx.vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s.replace("{prefix}", &ctx.prefix)
        .replace("{prefix2}", &ctx.prefix2)
        .replace("{mem-inmem}", inmem)
        .replace("{mem}", &ctx.mode.mem)
}

/// KernelPageSize of the group's segment mappings in `/proc/<pid>/smaps`.
fn smaps_backing(pid: u32, prefixes: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut found: Option<(String, u64)> = None;
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 && f[0].contains('-') && !line.ends_with(" kB") {
            cur = f.get(5).and_then(|path| {
                let name = Path::new(path).file_name()?.to_string_lossy().to_string();
                let is_seg = prefixes
                    .iter()
                    .any(|p| name.starts_with(&format!("{p}map_")))
                    || (path.starts_with("/memfd:") && !path.contains("config"));
                is_seg.then(|| {
                    if path.starts_with("/memfd:") {
                        "memfd".to_string()
                    } else if path.starts_with("/dev/shm") {
                        "shm".to_string()
                    } else {
                        "hugetlbfs".to_string()
                    }
                })
            });
        } else if let (Some(kind), true) = (&cur, line.starts_with("KernelPageSize:")) {
            let kb: u64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            found = Some((kind.clone(), kb));
        }
    }
    found.map(|(k, kb)| format!("{k} {kb}kB"))
}

impl Ctx<'_> {
    /// The live group's configuration file.
    fn config_path(&self) -> PathBuf {
        self.rundir.join(&self.prefix).join("config")
    }

    fn proc_mut(&mut self, name: &str) -> Result<&mut Proc> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| anyhow!("no process named {name:?} was started"))
    }

    fn step(&mut self, s: &Step) -> Result<()> {
        if let Some(r) = &s.repeat {
            for _ in 0..r.times {
                for st in &r.step {
                    self.step(st)?;
                }
            }
            return Ok(());
        }
        if let Some(ms) = s.sleep_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if s.remove_rundir == Some(true) {
            let d = self.rundir.join(&self.prefix);
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        if let Some(edit) = &s.edit_config {
            let edit = subst(self, edit);
            let (field, value) = edit
                .split_once('=')
                .ok_or_else(|| anyhow!("edit_config {edit:?}: expected FIELD=VALUE"))?;
            let (off, kind) = config_field(field)?;
            let bytes = field_bytes(kind, value)?;
            let path = self.config_path();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut old = vec![0u8; bytes.len()];
            f.read_exact_at(&mut old, off as u64)
                .and_then(|_| f.write_all_at(&bytes, off as u64))
                .with_context(|| format!("editing {field} of {}", path.display()))?;
            self.config_saved.push((off as u64, old));
        }
        if s.restore_config == Some(true) {
            let path = self.config_path();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            while let Some((off, old)) = self.config_saved.pop() {
                f.write_all_at(&old, off)
                    .with_context(|| format!("restoring {}", path.display()))?;
            }
        }
        let timeout = Duration::from_millis(s.timeout_ms.unwrap_or(10_000));
        let Some(name) = s.proc.clone() else {
            return Ok(());
        };
        if let Some(args) = &s.start {
            let mut argv: Vec<String> = subst(self, args)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !argv.iter().any(|a| a.starts_with("--file-prefix")) {
                // before a `--` that starts the program's own arguments
                let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
                argv.insert(at, format!("--file-prefix={}", self.prefix));
            }
            let other;
            let bin = match s.binary.as_deref() {
                None | Some("agent") => &self.agent,
                Some("variant") => &self.variant,
                Some(b) => {
                    other = self.agent.with_file_name(b);
                    &other
                }
            };
            let mut cmd = Command::new(bin);
            for kv in s.env.iter().flatten() {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                cmd.env(k, v);
            }
            let mut child = cmd
                .args(&argv)
                .env("HUGESHARE_RUNTIME_DIR", &self.rundir)
                .env("HUGESHARE_QUIET", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            self.started += 1;
            track_child(child.id());
            let stdout = child.stdout.take().expect("piped");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            let stdin = child.stdin.take();
            if let Some(old) = self.procs.insert(
                name.clone(),
                Proc {
                    child,
                    stdin,
                    lines: rx,
                    transcript: vec![],
                },
            ) {
                let mut old = old;
                let _ = old.child.kill();
                let _ = old.child.wait();
                untrack_child(old.child.id());
            }
        }
        if let Some(cmd) = &s.send {
            let cmd = subst(self, cmd);
            let p = self.proc_mut(&name)?;
            let w = p
                .stdin
                .as_mut()
                .ok_or_else(|| anyhow!("stdin of {name} is closed"))?;
            writeln!(w, "{cmd}")
                .and_then(|_| w.flush())
                .with_context(|| format!("sending {cmd:?} to {name}"))?;
            p.transcript.push(format!("> {cmd}"));
        }
        if let Some(exp) = &s.expect {
            let parts: Vec<String> = exp.parts().iter().map(|x| subst(self, x)).collect();
            let verbose = self.verbose;
            let p = self.proc_mut(&name)?;
            let deadline = Instant::now() + timeout;
            let matched = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match p.lines.recv_timeout(left) {
                    Ok(l) => {
                        if verbose {
                            println!("      [{name}] {l}");
                        }
                        p.transcript.push(l.clone());
                        if parts.iter().all(|x| l.contains(x.as_str())) {
                            break l;
                        }
                        let expects_err = parts.iter().any(|x| x.starts_with("ERR"));
                        if (l.starts_with("ERR") || l.starts_with("ERROR")) && !expects_err {
                            bail!("{name}: expected a line with {parts:?}, got {l:?}");
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        bail!("{name}: no line with {parts:?} within {timeout:?}")
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        bail!("{name}: exited before printing a line with {parts:?}")
                    }
                }
            };
            let is_ready = parts.iter().any(|x| x.starts_with("READY"));
            let pid = p.child.id();
            for key in s.capture.iter().flatten() {
                let v = matched
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix(&format!("{key}=")))
                    .ok_or_else(|| anyhow!("{name}: no {key}=... in {matched:?} to capture"))?;
                self.vars.insert(key.clone(), v.to_string());
            }
            // The first READY of a process: record which memory backs it.
            if is_ready {
                let prefixes = [self.prefix.as_str(), self.prefix2.as_str()];
                if let Some(b) = smaps_backing(pid, &prefixes) {
                    self.backing.insert(name.clone(), b);
                }
            }
        }
        if let Some(sig) = &s.signal {
            let signo = match sig.as_str() {
                "KILL" => libc::SIGKILL,
                "TERM" => libc::SIGTERM,
                "INT" => libc::SIGINT,
                "STOP" => libc::SIGSTOP,
                "CONT" => libc::SIGCONT,
                other => bail!("unknown signal {other:?}"),
            };
            let p = self.proc_mut(&name)?;
            let pid = p.child.id() as libc::pid_t;
            // SAFETY: sending a signal to a child we started and have not reaped.
            #[allow(unsafe_code)]
            let r = unsafe { libc::kill(pid, signo) };
            if r != 0 {
                bail!(
                    "kill({pid}, {sig}) failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        if s.close == Some(true) {
            let p = self.proc_mut(&name)?;
            p.stdin.take();
        }
        if let Some(code) = s.exit {
            let p = self.proc_mut(&name)?;
            p.stdin.take();
            let deadline = Instant::now() + timeout;
            let status = loop {
                if let Some(st) = p.child.try_wait()? {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    bail!("{name}: did not exit within {timeout:?} (killed it)");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            // drain output into the transcript
            while let Ok(l) = p.lines.recv_timeout(Duration::from_millis(50)) {
                p.transcript.push(l);
            }
            untrack_child(p.child.id());
            let got = status.code().unwrap_or(-1);
            if got != code {
                bail!("{name}: exited with {status}, expected code {code}");
            }
        }
        Ok(())
    }

    fn teardown(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.procs) {
            if p.child.try_wait().ok().flatten().is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            untrack_child(p.child.id());
        }
        // Files of these prefixes that nobody holds any more.
        let dirs: Vec<PathBuf> = self
            .mode
            .huge_dir
            .iter()
            .cloned()
            .chain([PathBuf::from("/dev/shm")])
            .collect();
        for d in dirs {
            for pf in [&self.prefix, &self.prefix2] {
                let _ = hugemem::remove_stale(&d, pf);
            }
        }
        let _ = std::fs::remove_dir_all(&self.rundir);
    }
}

struct Row {
    title: String,
    mode: &'static str,
    procs: usize,
    ok: bool,
    secs: f64,
    backing: String,
    detail: String,
}

fn build_agents(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo).current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "hugeshare-agent",
        "-p",
        "hugeshare-examples",
        "--bins",
    ]))?;
    // Cargo puts the binaries under CARGO_TARGET_DIR when it is set (a relative value is
    // relative to the workspace root).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let vdir = target.join("layout-variant");
    run(Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "hugeshare-agent",
            "--bin",
            "hugeshare-agent",
            "--features",
            "layout-test-extra-field",
            "--target-dir",
        ])
        .arg(&vdir))?;
    Ok((
        target.join("release/hugeshare-agent"),
        vdir.join("release/hugeshare-agent"),
    ))
}

/// What a run reserved and mounted: given back when its [`HugeSetup`] is dropped, or by the
/// signal handler ([`install_signal_cleanup`]) when the run is interrupted.
struct Acquired {
    id: u64,
    reservation: Option<hugemem::admin::Reservation>,
    mount: Option<hugemem::admin::Mount>,
    dir: PathBuf,
}

impl Drop for Acquired {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if let Err(e) = m.unmount() {
                eprintln!("warning: could not unmount {}: {e}", self.dir.display());
            }
            let _ = std::fs::remove_dir(&self.dir);
        }
        if let Some(r) = self.reservation.take() {
            if let Err(e) = r.release() {
                eprintln!("warning: could not give back the reserved hugepages: {e}");
            }
        }
    }
}

static ACQUIRED: std::sync::Mutex<Vec<Acquired>> = std::sync::Mutex::new(Vec::new());
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
static TEMP_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Remember a child process this run started, so an interrupted run can stop it.
pub fn track_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Forget a child that was reaped.
pub fn untrack_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// On SIGINT, SIGTERM or SIGHUP: stop the children this run started (by pid), unmount what it
/// mounted, give back the hugepages it reserved, and exit with status 130.
pub fn install_signal_cleanup() {
    let _ = ctrlc::set_handler(|| {
        let pids: Vec<u32> = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for pid in pids {
            // SAFETY: sending SIGKILL to a child process we started; at worst it is already gone.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL)
            };
        }
        std::thread::sleep(Duration::from_millis(200));
        let acquired = std::mem::take(&mut *ACQUIRED.lock().unwrap_or_else(|e| e.into_inner()));
        let n = acquired.len();
        drop(acquired);
        for d in TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = std::fs::remove_dir_all(d);
        }
        eprintln!("interrupted: stopped the processes this run started and gave back {n} hugepage set-up(s)");
        std::process::exit(130);
    });
}

/// Hugepages for the run: reserved and mounted as root, given back on drop (or by the signal
/// handler if the run is interrupted).
#[derive(Debug)]
pub struct HugeSetup {
    id: u64,
    /// The hugetlbfs directory to use.
    pub dir: PathBuf,
}

impl HugeSetup {
    /// Reserve `pages` 2 MiB pages and mount a private hugetlbfs, when this process may.
    pub fn acquire(pages: u64, tag: &str) -> Result<Result<HugeSetup, String>> {
        const P2M: u64 = 2 << 20;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if !hugemem::admin::is_root() {
            return Ok(Err(
                "not running as root: cannot reserve hugepages or mount hugetlbfs".into(),
            ));
        }
        let res = match hugemem::admin::reserve_pages(P2M, pages, None) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("cannot reserve {pages} hugepages: {e}"))),
        };
        let dir =
            std::env::temp_dir().join(format!("hugeshare-hugetlbfs-{tag}-{}", std::process::id()));
        let mount = match hugemem::admin::mount_private(&dir, P2M) {
            Ok(m) => m,
            Err(e) => {
                let _ = res.release();
                return Ok(Err(format!(
                    "cannot mount hugetlbfs on {}: {e}",
                    dir.display()
                )));
            }
        };
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ACQUIRED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Acquired {
                id,
                reservation: Some(res),
                mount: Some(mount),
                dir: dir.clone(),
            });
        Ok(Ok(HugeSetup { id, dir }))
    }
}

impl Drop for HugeSetup {
    fn drop(&mut self) {
        let mine = {
            let mut v = ACQUIRED.lock().unwrap_or_else(|e| e.into_inner());
            v.iter().position(|a| a.id == self.id).map(|i| v.remove(i))
        };
        drop(mine);
    }
}

/// Entry point.
pub fn main(a: Args) -> Result<()> {
    let root = workspace_root();
    let require_huge = std::env::var("HUGESHARE_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    println!("building the scenario agent (and its different-layout variant)...");
    let (agent, variant) = build_agents(&root)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/scenarios"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut scenarios = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let sc: Scenario =
            toml::from_str(&text).with_context(|| format!("parsing scenario {}", f.display()))?;
        let stem = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if a.filter
            .as_ref()
            .is_none_or(|flt| stem.contains(flt.as_str()) || sc.title.contains(flt.as_str()))
        {
            scenarios.push((stem, sc));
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario matches");
    }
    let want_huge = matches!(a.mode.as_str(), "all" | "huge");
    let want_nohuge = matches!(a.mode.as_str(), "all" | "nohuge");
    if !want_huge && !want_nohuge {
        bail!("--mode must be huge, nohuge or all");
    }
    let mut huge = None;
    let mut notes = Vec::new();
    if want_huge {
        match HugeSetup::acquire(a.pages, "test-mp")? {
            Ok(h) => {
                println!(
                    "hugepages: reserved {} x 2 MiB and mounted a private hugetlbfs at {}",
                    a.pages,
                    h.dir.display()
                );
                huge = Some(h);
            }
            Err(why) if require_huge => bail!("HUGESHARE_REQUIRE_HUGEPAGES=1 but {why}"),
            Err(why) => {
                let n = format!(
                    "NOTICE: skipping the hugepage mode: {why}; the scenarios run on /dev/shm only"
                );
                println!("{n}");
                notes.push(n);
            }
        }
    }
    let mut modes = Vec::new();
    if let Some(h) = &huge {
        modes.push(Mode {
            name: "huge",
            mem: format!("--huge-dir={}", h.dir.display()),
            huge_dir: Some(h.dir.clone()),
        });
    }
    if want_nohuge {
        modes.push(Mode {
            name: "nohuge",
            mem: "--no-huge".into(),
            huge_dir: None,
        });
    }
    let base_rundir =
        std::env::temp_dir().join(format!("hugeshare-test-mp-{}", std::process::id()));
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(base_rundir.clone());
    let mut rows = Vec::new();
    let mut n = 0;
    for mode in &modes {
        for (stem, sc) in &scenarios {
            if let Some(m) = &sc.modes {
                if !m.iter().any(|x| x == mode.name) {
                    continue;
                }
            }
            n += 1;
            let prefix = format!("t{}s{n}", std::process::id());
            let mut ctx = Ctx {
                mode,
                prefix2: format!("{prefix}b"),
                prefix,
                rundir: base_rundir.join(format!("{n}")),
                agent: agent.clone(),
                variant: variant.clone(),
                verbose: a.verbose,
                procs: BTreeMap::new(),
                started: 0,
                backing: BTreeMap::new(),
                vars: BTreeMap::new(),
                config_saved: Vec::new(),
            };
            print!("  [{:>6}] {:<62} ", mode.name, truncate(&sc.title, 62));
            let _ = std::io::stdout().flush();
            let t0 = Instant::now();
            let mut result = Ok(());
            for (i, st) in sc.step.iter().enumerate() {
                if let Err(e) = ctx.step(st) {
                    let what = st.note.clone().unwrap_or_default();
                    result = Err(anyhow!("step {} {what}: {e:#}", i + 1));
                    break;
                }
            }
            let backing = ctx
                .backing
                .values()
                .next()
                .cloned()
                .unwrap_or_else(|| "-".into());
            if result.is_ok() && mode.name == "huge" && !ctx.backing.is_empty() {
                if let Some((p, b)) = ctx.backing.iter().find(|(_, b)| !b.ends_with("2048kB")) {
                    result = Err(anyhow!("hugepages were reserved but process {p}'s memory is {b}, not 2048 kB pages"));
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let ok = result.is_ok();
            println!(
                "{} {:>6.2}s  {}",
                if ok { "ok  " } else { "FAIL" },
                secs,
                backing
            );
            let mut detail = String::new();
            if let Err(e) = &result {
                detail = format!("{e:#}");
                println!("      {detail}");
                for (name, p) in &ctx.procs {
                    for l in p.transcript.iter().rev().take(8).rev() {
                        println!("      [{name}] {l}");
                    }
                }
            }
            ctx.teardown();
            rows.push(Row {
                title: format!("{} ({stem})", sc.title),
                mode: mode.name,
                procs: ctx.started,
                ok,
                secs,
                backing,
                detail,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&base_rundir);
    drop(huge);
    println!();
    println!(
        "{:<74} {:>6} {:>5} {:>6} {:>8}  backing",
        "scenario", "mode", "procs", "result", "time"
    );
    for r in &rows {
        println!(
            "{:<74} {:>6} {:>5} {:>6} {:>7.2}s  {}",
            truncate(&r.title, 74),
            r.mode,
            r.procs,
            if r.ok { "ok" } else { "FAIL" },
            r.secs,
            r.backing
        );
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    for n in &notes {
        println!("{n}");
    }
    println!("{} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        for r in rows.iter().filter(|r| !r.ok) {
            eprintln!("FAILED: [{}] {}: {}", r.mode, r.title, r.detail);
        }
        bail!("{failed} scenario(s) failed");
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}
