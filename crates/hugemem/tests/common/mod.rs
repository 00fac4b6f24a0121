//! Helpers shared by the integration tests: a private hugepage environment (pages reserved and
//! a private hugetlbfs mounted through `hugemem::admin`, given back on drop even when the test
//! fails), loud skipping, and re-executing this test binary as a child process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use hugemem::admin::{self, Mount, PoolLock, Reservation};
use hugemem::HugepageInfo;

pub const MIB2: u64 = 2 << 20;
/// Env var naming the role of a re-executed child.
pub const CHILD_ENV: &str = "HUGEMEM_TEST_CHILD";

/// Whether CI demands hugepages (`HUGESHARE_REQUIRE_HUGEPAGES=1`): then skipping is failing.
pub fn hugepages_required() -> bool {
    std::env::var("HUGESHARE_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1")
}

/// Skips loudly, or fails when hugepages are required.
pub fn skip(test: &str, why: &str) {
    let msg = format!(
        "{test}: needs 2 MiB hugepages: {why}. Run as root (the test reserves pages and mounts a \
         private hugetlbfs itself), or reserve pages and mount a hugetlbfs writable by you \
         (`sudo cargo xtask hugepages --reserve 64M --pagesize 2M --mount DIR`)"
    );
    if hugepages_required() {
        panic!("HUGESHARE_REQUIRE_HUGEPAGES=1 but {msg}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and a
    // skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {msg} ***\n");
}

/// 2 MiB hugepages for one test: `pages` pages added to the pool and a private hugetlbfs
/// mount (as root), or an existing writable mount with enough free pages (not root).
/// Drop order gives back the mount, then the pages, then the pool lock.
pub struct HugeEnv {
    mount: Option<Mount>,
    reservation: Option<Reservation>,
    _pool: Option<PoolLock>,
    pub dir: PathBuf,
}

impl HugeEnv {
    /// `None` after a loud skip (or a panic when hugepages are required).
    pub fn setup(test: &str, pages: u64) -> Option<HugeEnv> {
        if admin::is_root() {
            let pool = admin::lock_pool().expect("take the hugepage pool lock");
            let reservation = match admin::reserve_pages(MIB2, pages, None) {
                Ok(r) => r,
                Err(e) => {
                    skip(test, &format!("could not reserve {pages} pages: {e}"));
                    return None;
                }
            };
            let dir =
                std::env::temp_dir().join(format!("hugemem-test-{}-{test}", std::process::id()));
            let mount = match admin::mount_private(&dir, MIB2) {
                Ok(m) => m,
                Err(e) => {
                    skip(
                        test,
                        &format!("could not mount hugetlbfs on {}: {e}", dir.display()),
                    );
                    return None;
                }
            };
            return Some(HugeEnv {
                mount: Some(mount),
                reservation: Some(reservation),
                _pool: Some(pool),
                dir,
            });
        }
        let info = HugepageInfo::discover().expect("discover hugepages");
        let free = info.size(MIB2).map(|s| s.available()).unwrap_or(0);
        match info.mount_for(MIB2) {
            Some(m) if free >= pages => Some(HugeEnv {
                mount: None,
                reservation: None,
                _pool: None,
                dir: m.path.clone(),
            }),
            _ => {
                skip(test, &format!("not root, and no writable 2 MiB hugetlbfs mount with {pages} free pages ({free} free)"));
                None
            }
        }
    }

    /// Free 2 MiB pages not promised to a mapping, read now.
    pub fn available_pages(&self) -> u64 {
        let info = HugepageInfo::discover().unwrap();
        info.size(MIB2).unwrap().available()
    }
}

impl Drop for HugeEnv {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if let Err(e) = m.unmount() {
                eprintln!("could not unmount {}: {e}", self.dir.display());
            }
        }
        if let Some(r) = self.reservation.take() {
            if let Err(e) = r.release() {
                eprintln!("could not give back hugepages: {e}");
            }
        }
    }
}

/// A fresh directory under /dev/shm for one test, removed on drop.
pub struct ShmDir(pub PathBuf);

impl ShmDir {
    pub fn new(tag: &str) -> ShmDir {
        let d = PathBuf::from(format!(
            "/dev/shm/hugemem-test-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        ShmDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The role given to this process when it was re-executed as a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A child process running this test binary's test `test` with `role`; killed on drop.
pub struct ChildProc {
    pub child: Child,
    out: BufReader<ChildStdout>,
}

impl ChildProc {
    pub fn spawn(test: &str, role: &str, envs: &[(&str, String)]) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("re-execute the test binary");
        let out = BufReader::new(child.stdout.take().unwrap());
        ChildProc { child, out }
    }

    /// Reads lines until one starting with `CHILD:`; returns the rest. Panics at EOF.
    pub fn expect_line(&mut self) -> String {
        loop {
            let mut l = String::new();
            let n = self.out.read_line(&mut l).unwrap();
            if n == 0 {
                let st = self.child.wait().unwrap();
                panic!("child exited ({st}) without reporting");
            }
            // libtest may have printed "test name ... " on the same line first.
            if let Some(i) = l.find("CHILD:") {
                return l[i + "CHILD:".len()..].trim_end().to_string();
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child's report line.
pub fn report(s: &str) {
    use std::io::Write;
    println!("CHILD:{s}");
    std::io::stdout().flush().unwrap();
}

/// Keeps a child alive (holding what it holds) until it is killed; gives up after 2 minutes
/// so an abandoned child cannot linger.
pub fn wait_to_be_killed() -> ! {
    std::thread::sleep(std::time::Duration::from_secs(120));
    std::process::exit(3)
}
