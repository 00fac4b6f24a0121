//! What the scenario binaries of `hugeshare-agent` (`src/bin/*.rs`) share.

/// Print `RESULT FAIL <msg>` (the line scenarios look for) and exit with status 1.
pub fn fail(msg: &str) -> ! {
    println!("RESULT FAIL {msg}");
    std::process::exit(1)
}

/// Block until standard input says `exit` (or closes): how a process that only holds an object
/// (a ring, a table) for the others stays alive until the scenario is done with it.
pub fn wait_for_exit() {
    let mut line = String::new();
    while std::io::stdin()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        if line.trim() == "exit" {
            break;
        }
        line.clear();
    }
}

/// A worker's role arguments (what follows `--`).
#[derive(Debug)]
pub struct RoleArgs(pub Vec<String>);

impl RoleArgs {
    /// Argument `i`, or an empty string.
    pub fn arg(&self, i: usize) -> String {
        self.0.get(i).cloned().unwrap_or_default()
    }

    /// Argument `i` as a number; fails the worker when it is not one.
    pub fn num(&self, i: usize) -> u64 {
        self.arg(i)
            .parse()
            .unwrap_or_else(|_| fail(&format!("argument {i} must be a number")))
    }
}
