//! `cargo xtask hugepages`: not built yet (issue 2).
use anyhow::{bail, Result};

/// Arguments of `cargo xtask hugepages`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn main(_a: Args) -> Result<()> {
    bail!("`cargo xtask hugepages` is not built yet")
}
