//! `cargo xtask`: project automation for hugeshare.
//!
//! * `cargo xtask test-mp`: the multi-process scenarios (the README's main command).
//! * `cargo xtask test`: every test of the workspace.
//! * `cargo xtask hugepages`: show, reserve, mount, unmount and clear hugepages.
//! * `cargo xtask bench <name>`: a benchmark beside DPDK (`ring`, `hash`, `clock`, `attach`, ...).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;

mod hugepages;
mod test_mp;
mod vm;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "hugeshare project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the multi-process scenarios as real processes and print a table of results.
    TestMp(test_mp::Args),
    /// Run every test of the workspace (`cargo test --workspace`).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Show hugepage memory; as root, reserve, mount, unmount or clear it.
    Hugepages(hugepages::Args),
    /// Print the QEMU arguments that give a VM the IVSHMEM devices of metadata files.
    QemuCmdline(vm::CmdlineArgs),
    /// Boot QEMU guests that use the host group's rings and mempools through IVSHMEM.
    VmTest(vm::VmTestArgs),
    /// Run a benchmark (in release mode) beside DPDK's figures measured in the same run.
    Bench {
        /// Which benchmark: ring, hash, clock, attach, mempool, pipeline.
        name: String,
        /// Arguments for the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Run a command, failing with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// `cargo xtask test`: every test of the workspace, on real hugepages when this process may set
/// them up (as root: pages reserved and a private hugetlbfs mounted for the run, given back after).
fn test(rest: Vec<String>) -> Result<()> {
    let require = std::env::var("HUGESHARE_REQUIRE_HUGEPAGES").is_ok_and(|v| v == "1");
    let setup = match test_mp::HugeSetup::acquire(256, "test")? {
        Ok(h) => {
            println!("hugepages: reserved 256 x 2 MiB and mounted a private hugetlbfs at {} for the tests", h.dir.display());
            Some(h)
        }
        Err(why) if require => bail!("HUGESHARE_REQUIRE_HUGEPAGES=1 but {why}"),
        Err(why) => {
            println!("NOTICE: {why}; tests that need hugepages will say they were skipped");
            None
        }
    };
    let mut c = cargo();
    c.args(["test", "--workspace"]).args(rest);
    if let Some(h) = &setup {
        c.env("HUGESHARE_HUGE_DIR", &h.dir);
    }
    let r = run(&mut c);
    drop(setup);
    r
}

fn main() {
    if let Err(e) = real_main() {
        // One clear line per cause, no backtrace noise (RUST_BACKTRACE may be set).
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    test_mp::install_signal_cleanup();
    match cli.cmd {
        Cmd::TestMp(a) => test_mp::main(a),
        Cmd::Test { rest } => test(rest),
        Cmd::Hugepages(a) => hugepages::main(a),
        Cmd::QemuCmdline(a) => vm::cmdline(a),
        Cmd::VmTest(a) => vm::vm_test(a),
        Cmd::Bench { name, rest } => {
            let known = ["ring", "hash", "clock", "attach", "mempool", "pipeline"];
            if !known.contains(&name.as_str()) {
                bail!("unknown benchmark {name:?}; known: {}", known.join(", "));
            }
            let mut c = cargo();
            if ["ring", "mempool", "hash"].contains(&name.as_str()) {
                // Code placement moves one-core rows by up to about 20 % on either side from
                // one build to the next (the linker puts a hot loop at another offset in its
                // cache line). These benches build both sides with their loops at 64-byte
                // boundaries (bench/build.rs passes GCC the same policy), in a target directory
                // of their own so that ordinary builds keep theirs.
                let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
                flags.push_str(" -C llvm-args=-align-loops=64");
                c.env("RUSTFLAGS", flags.trim())
                    .env("HUGESHARE_BENCH_ALIGN", "64");
                if std::env::var_os("CARGO_TARGET_DIR").is_none() {
                    c.env(
                        "CARGO_TARGET_DIR",
                        workspace_root().join("target/bench-aligned"),
                    );
                }
            }
            run(c
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "-p",
                    "hugeshare-bench",
                    "--bin",
                    &name,
                    "--",
                ])
                .args(rest))
        }
    }
}
