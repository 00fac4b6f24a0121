//! `cargo xtask qemu-cmdline` and `cargo xtask vm-test` (issue 8): being written.
use anyhow::{bail, Result};

/// Arguments of `cargo xtask qemu-cmdline`.
#[derive(clap::Args, Debug)]
pub struct CmdlineArgs {}

/// Arguments of `cargo xtask vm-test`.
#[derive(clap::Args, Debug)]
pub struct VmTestArgs {}

/// `cargo xtask qemu-cmdline`.
pub fn cmdline(_a: CmdlineArgs) -> Result<()> {
    bail!("`cargo xtask qemu-cmdline` is not built yet")
}

/// `cargo xtask vm-test`.
pub fn vm_test(_a: VmTestArgs) -> Result<()> {
    bail!("`cargo xtask vm-test` is not built yet")
}
