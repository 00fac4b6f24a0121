//! `cargo xtask test-mp`: not built yet (issue 3).
use anyhow::{bail, Result};

/// Arguments of `cargo xtask test-mp`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn main(_a: Args) -> Result<()> {
    bail!("`cargo xtask test-mp` is not built yet")
}
