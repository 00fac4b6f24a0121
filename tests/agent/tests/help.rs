//! `hugeshare-agent --help`: the usage and the group's options on standard output, exit status
//! 0, and no group joined or created.

use std::path::PathBuf;
use std::process::Command;

/// The runtime directory base of the test, removed when it ends (also when it fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_prints_the_usage_and_joins_nothing() {
    let rt =
        Scratch(std::env::temp_dir().join(format!("hugeshare-agent-help-{}", std::process::id())));
    let prefix = format!("agenthelp{}", std::process::id());
    for args in [
        &["--help"][..],
        &["-h"][..],
        &["--proc-type=auto", "--no-huge", "-m", "8", "--help"][..],
    ] {
        let _ = std::fs::remove_dir_all(&rt.0);
        std::fs::create_dir_all(&rt.0).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hugeshare-agent"))
            .arg(format!("--file-prefix={prefix}"))
            .args(args)
            .env("HUGESHARE_RUNTIME_DIR", &rt.0)
            .env("HUGESHARE_QUIET", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        assert!(text.starts_with("usage: hugeshare-agent"), "{text}");
        assert!(
            text.contains("reserve NAME LEN") && text.contains("--file-prefix NAME"),
            "{text}"
        );
        let leftover: Vec<_> = std::fs::read_dir(&rt.0).unwrap().flatten().collect();
        assert!(leftover.is_empty(), "{args:?} created {leftover:?}");
        let shm: Vec<_> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(shm.is_empty(), "{args:?} created {shm:?}");
    }
}
