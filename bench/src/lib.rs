//! Shared helpers of the benchmark binaries (`src/bin/*.rs`), which `cargo xtask bench <name>`
//! runs in release mode. DPDK's side is C code in `csrc/`, built by `build.rs` when libdpdk is
//! installed; `DPDK_AVAILABLE` tells whether it was.

/// Whether DPDK's side of the benchmarks was built into this binary.
pub const DPDK_AVAILABLE: bool = cfg!(have_dpdk);

/// The median of a non-empty slice of measurements.
///
/// ```
/// assert_eq!(hugeshare_bench::median(&mut [3.0, 1.0, 2.0]), 2.0);
/// ```
pub fn median(xs: &mut [f64]) -> f64 {
    assert!(!xs.is_empty(), "median of no measurements");
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The message printed when DPDK's side is missing.
pub fn no_dpdk_notice() -> &'static str {
    "DPDK's side not built (libdpdk not found by pkg-config at build time): printing hugeshare's figures alone. Install it with `apt-get install dpdk-dev libdpdk-dev` and run again."
}

/// How both sides' code was placed in this build, for the first lines of a benchmark's output.
/// One-core rows move by up to about 20 % on either side with where the linker puts a hot loop
/// in its cache line; `cargo xtask bench ring|mempool|hash` builds both sides with their loops
/// at 64-byte boundaries, so that figures do not depend on that.
pub fn placement_notice() -> &'static str {
    if cfg!(bench_aligned) {
        "code placement: both sides' loops at 64-byte boundaries (cargo xtask bench)"
    } else {
        "code placement: as the linker left it (run through `cargo xtask bench` for both sides' loops at 64-byte boundaries; one-core rows move by up to about 20 % between builds otherwise)"
    }
}
