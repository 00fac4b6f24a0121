//! `-h`/`--help` of the sample programs: the usage on standard output, exit status 0, and no
//! group joined or created (no runtime directory, no segment file).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("hugeshare-help-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Files in /dev/shm whose name starts with `prefix`.
fn shm_files(prefix: &str) -> Vec<String> {
    entries(Path::new("/dev/shm"))
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn every_program_prints_its_usage_and_joins_nothing() {
    let programs = [
        (
            env!("CARGO_BIN_EXE_simple_mp"),
            "usage: simple_mp",
            "sendn <count>",
        ),
        (
            env!("CARGO_BIN_EXE_symmetric_mp"),
            "usage: symmetric_mp",
            "--num-procs N",
        ),
        (
            env!("CARGO_BIN_EXE_client_server_mp"),
            "usage: client_server_mp",
            "--client-id I",
        ),
        (
            env!("CARGO_BIN_EXE_proc_info"),
            "usage: proc_info",
            "--interval-ms MS",
        ),
    ];
    let rt = Scratch::new("rt");
    for (i, (exe, usage, own)) in programs.iter().enumerate() {
        // In the group's options, alone or among others, and among the program's own.
        let prefix = format!("help{}p{i}", std::process::id());
        let variants: [Vec<String>; 4] = [
            vec!["--help".into()],
            vec!["-h".into()],
            vec![
                "--proc-type=auto".into(),
                "--no-huge".into(),
                "-m".into(),
                "8".into(),
                "--help".into(),
            ],
            vec![
                "--proc-type=auto".into(),
                "--no-huge".into(),
                "-m".into(),
                "8".into(),
                "--".into(),
                "--help".into(),
            ],
        ];
        for args in variants {
            let out = Command::new(exe)
                .arg(format!("--file-prefix={prefix}"))
                .args(&args)
                .env("HUGESHARE_RUNTIME_DIR", &rt.0)
                .env("HUGESHARE_QUIET", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{exe} {args:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.starts_with(usage), "{exe} {args:?}: {text}");
            for line in [
                *own,
                "--file-prefix NAME",
                "--proc-type primary|secondary|auto",
            ] {
                assert!(text.contains(line), "{exe} {args:?}: no {line:?} in {text}");
            }
            assert!(
                entries(&rt.0).is_empty(),
                "{exe} {args:?} created {:?} in the runtime directory",
                entries(&rt.0)
            );
            assert!(shm_files(&prefix).is_empty(), "{:?}", shm_files(&prefix));
        }
    }
}
