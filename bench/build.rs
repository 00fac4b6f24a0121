//! Builds DPDK's side of the benchmarks: every `csrc/*.c` file is compiled against Debian's
//! `libdpdk-dev` when `pkg-config libdpdk` finds it, and `cfg(have_dpdk)` is set. Without it the
//! benchmarks say so and print our figures alone.
use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_dpdk)");
    println!("cargo::rustc-check-cfg=cfg(bench_aligned)");
    println!("cargo::rerun-if-changed=csrc");
    println!("cargo::rerun-if-env-changed=HUGESHARE_NO_DPDK");
    println!("cargo::rerun-if-env-changed=HUGESHARE_BENCH_ALIGN");
    // `cargo xtask bench` sets HUGESHARE_BENCH_ALIGN=64 (and builds our side with its loops at
    // 64-byte boundaries): both sides' hot loops then sit at the same place in a cache line
    // whatever the linker does, see the README's "Benchmarks".
    let aligned = std::env::var("HUGESHARE_BENCH_ALIGN").is_ok_and(|v| v == "64");
    if aligned {
        println!("cargo::rustc-cfg=bench_aligned");
    }
    if std::env::var_os("HUGESHARE_NO_DPDK").is_some() {
        return;
    }
    let (Some(cflags), Some(libs)) = (pkg_config(&["--cflags"]), pkg_config(&["--libs"])) else {
        println!("cargo::warning=libdpdk not found by pkg-config: benchmarks will print hugeshare's figures without DPDK's (apt-get install dpdk-dev libdpdk-dev)");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir("csrc")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "c"));
    files.sort();
    if files.is_empty() {
        return;
    }
    let mut build = cc::Build::new();
    build.opt_level(3).warnings(false);
    if aligned {
        // The same placement policy as our side's `-C llvm-args=-align-loops=64`.
        build.flag("-falign-functions=64").flag("-falign-loops=64");
    }
    for f in cflags.split_whitespace() {
        build.flag(f);
    }
    for f in &files {
        println!("cargo::rerun-if-changed={}", f.display());
        build.file(f);
    }
    build.compile("hugeshare_dpdk_side");
    for l in libs.split_whitespace() {
        if let Some(dir) = l.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(lib) = l.strip_prefix("-l") {
            println!("cargo::rustc-link-lib={lib}");
        }
    }
    println!("cargo::rustc-link-lib=pthread");
    println!("cargo::rustc-cfg=have_dpdk");
}
