//! Options of a group member, with DPDK's names (`--proc-type`, `--file-prefix`, `-m`,
//! `--socket-mem`, `-l`/`-c`/`--lcores`, `--no-huge`, `--in-memory`, `--huge-dir`,
//! `--base-virtaddr`) and the same settings from a TOML file.
//!
//! ```
//! use procctl::{Options, ProcType};
//! let (o, rest) = Options::parse_args(["--proc-type=auto", "--file-prefix", "g1", "-m", "64", "--", "app-arg"]).unwrap();
//! assert_eq!(o.proc_type, ProcType::Auto);
//! assert_eq!(o.file_prefix, "g1");
//! assert_eq!(o.memory_mb, Some(64));
//! assert_eq!(rest, vec!["app-arg".to_string()]);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::lcores::LcoreMap;

/// The prefix used when `--file-prefix` is not given. Secondaries and `auto` started without
/// options find a primary started without options.
pub const DEFAULT_PREFIX: &str = "hugeshare";
/// Memory a primary takes when neither `-m` nor `--socket-mem` is given, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// The most memory a group may ask for (`-m`, or `--socket-mem` in all), in MiB: 64 TiB.
pub const MAX_MEMORY_MB: u64 = 64 << 20;
/// How long a secondary waits for the primary to be ready, by default.
pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// The options that set up a new group: its memory (`-m`, `--socket-mem`, `--no-huge`,
/// `--huge-dir`, `--in-memory`, `--lazy-pages`), where it is mapped (`--base-virtaddr`), its
/// zone table (`--max-zones`) and its clock (`--clock`). Only a primary uses them: a secondary
/// maps the memory, at the address, with the zone table and the clock its primary set up and
/// recorded. `--proc-type=secondary` refuses them; `--proc-type=auto` uses them if it becomes
/// the primary and otherwise ignores them, saying so in a notice.
pub const PRIMARY_ONLY_OPTIONS: [&str; 9] = [
    "-m",
    "--socket-mem",
    "--no-huge",
    "--huge-dir",
    "--in-memory",
    "--base-virtaddr",
    "--lazy-pages",
    "--max-zones",
    "--clock",
];

/// The options [`Options::parse_args`] accepts, one line each, for a program's `--help` (see
/// [`wants_help`]).
pub const USAGE: &str = "\
group options (before `--`; also from a TOML file with the same names, `_` for `-`):
  --proc-type primary|secondary|auto  create the group, join it, or join it if its primary runs
                                      (default primary)
  --file-prefix NAME                  the group's name (default hugeshare)
  -m MB                               the group's memory in MiB (primary only; default 64)
  --socket-mem MB[,MB..]              the group's memory per NUMA node in MiB (primary only)
  --no-huge                           4 KiB pages in /dev/shm, not hugepages (primary only)
  --huge-dir DIR                      the hugetlbfs mount to use (primary only)
  --in-memory                         no files: secondaries get the memory by descriptor
                                      (primary only)
  -l LIST | -c MASK | --lcores MAP    the lcores this process claims (default: one free lcore)
  --base-virtaddr HEX                 where to place the group's memory (primary only)
  --lazy-pages                        do not populate hugepages at start (primary only)
  --attach-timeout MS                 how long a secondary waits for its primary (default 5000)
  --runtime-dir DIR                   base of the runtime directories (or HUGESHARE_RUNTIME_DIR)
  --max-zones N                       size of the zone table, 16 to 1048576 (primary only;
                                      default 2560)
  --monitor-interval MS               how often members look at each other (default 10)
  --clock tsc|hpet|monotonic          force the group's clock (primary only; default the best)
  -h, --help                          print this help and exit, joining nothing
A secondary refuses the primary-only options: a group is set up by its primary.
";

/// Whether `args` ask for help: `-h` or `--help` among the group's options (before `--`) or the
/// program's own (after it). A program checks this before it joins anything, prints its usage
/// and [`USAGE`], and exits.
///
/// ```
/// assert!(procctl::options::wants_help(&["--file-prefix=a", "--", "--help"]));
/// assert!(!procctl::options::wants_help(&["--file-prefix=a", "-m", "8"]));
/// ```
pub fn wants_help<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().any(|a| matches!(a.as_ref(), "-h" | "--help"))
}

/// The role a process asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcType {
    /// Create the group; refused if a live primary exists.
    Primary,
    /// Attach to a live primary; refused if there is none.
    Secondary,
    /// Secondary if a live primary exists, primary otherwise.
    Auto,
}

impl std::str::FromStr for ProcType {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, OptionsError> {
        match s.to_ascii_lowercase().as_str() {
            "primary" => Ok(Self::Primary),
            "secondary" => Ok(Self::Secondary),
            "auto" => Ok(Self::Auto),
            _ => Err(OptionsError::Invalid {
                option: "--proc-type",
                value: s.into(),
                why: "expected primary, secondary or auto".into(),
            }),
        }
    }
}

/// Everything a member can be told at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--proc-type`.
    pub proc_type: ProcType,
    /// `--file-prefix`: the group's name (default [`DEFAULT_PREFIX`]).
    pub file_prefix: String,
    /// `-m`: total memory in MiB (primary).
    pub memory_mb: Option<u64>,
    /// `--socket-mem`: MiB per NUMA node (primary).
    pub socket_mem: Option<Vec<u64>>,
    /// `-l`, `-c` or `--lcores`: the lcores this process claims. `None`: one free lcore, chosen
    /// by the group, not bound to a CPU.
    pub lcores: Option<LcoreMap>,
    /// `--no-huge`: 4 KiB pages in `/dev/shm`.
    pub no_huge: bool,
    /// `--in-memory`: nothing on disk; memory handed to secondaries by descriptor.
    pub in_memory: bool,
    /// `--huge-dir`: the hugetlbfs directory to use.
    pub huge_dir: Option<PathBuf>,
    /// `--base-virtaddr`: where the primary asks to place the group's memory (primary; a
    /// secondary asks for the primary's address).
    pub base_virtaddr: Option<u64>,
    /// `--lazy-pages`: do not populate hugepages at start (faster start, pages faulted on first
    /// touch; the pre-flight check still runs). Primary: a secondary never populates.
    pub lazy_pages: bool,
    /// `--attach-timeout MS`: how long a secondary waits for the primary to be ready.
    pub attach_timeout: Duration,
    /// `--runtime-dir`: overrides the runtime directory base (also `HUGESHARE_RUNTIME_DIR`).
    pub runtime_dir: Option<PathBuf>,
    /// `--max-zones`: size of the zone table (primary; `None`:
    /// [`shmconfig::layout::DEFAULT_MAX_ZONES`]). A secondary uses the group's.
    pub max_zones: Option<u32>,
    /// `--monitor-interval MS`: how often members check each other (default 10 ms).
    pub monitor_interval: Duration,
    /// `--clock tsc|hpet|monotonic`: force the group's clock (primary; default: the best one).
    /// A secondary uses the clock its primary recorded.
    pub clock: Option<tsc_hpet::ClockKind>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            proc_type: ProcType::Primary,
            file_prefix: DEFAULT_PREFIX.into(),
            memory_mb: None,
            socket_mem: None,
            lcores: None,
            no_huge: false,
            in_memory: false,
            huge_dir: None,
            base_virtaddr: None,
            lazy_pages: false,
            attach_timeout: DEFAULT_ATTACH_TIMEOUT,
            runtime_dir: None,
            max_zones: None,
            monitor_interval: Duration::from_millis(10),
            clock: None,
        }
    }
}

/// Why options were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// An option this program does not know.
    #[error("unknown option {0:?}; see the procctl documentation for the accepted options")]
    Unknown(String),
    /// An option without its value.
    #[error("option {0} needs a value")]
    MissingValue(&'static str),
    /// A bad value.
    #[error("invalid value {value:?} for {option}: {why}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// Two options that cannot go together.
    #[error("{a} cannot be combined with {b}: {why}")]
    Conflict {
        /// One option.
        a: &'static str,
        /// The other.
        b: &'static str,
        /// Why.
        why: &'static str,
    },
    /// Options that only set up a new group (its memory, address, zone table or clock: see
    /// [`PRIMARY_ONLY_OPTIONS`]), given to a process that can only be a secondary.
    #[error("{} only set up a new group (its memory, address, zone table or clock), but --proc-type=secondary joins a running group, whose settings come from its primary; remove {} from this process's options, or use --proc-type=auto (which uses {} only when it becomes the primary)", .options.join(", "), if .options.len() == 1 { "it" } else { "them" }, if .options.len() == 1 { "it" } else { "them" })]
    PrimaryOnly {
        /// The options given, as on the command line (`--no-huge`, `-m 64`, ...).
        options: Vec<String>,
    },
    /// `-h` or `--help` among the options: the caller should print [`USAGE`] and stop (see
    /// [`wants_help`]); nothing was joined or created.
    #[error("-h/--help asks for the usage, not for a group:\n{USAGE}")]
    HelpRequested,
    /// A TOML file that could not be read or parsed.
    #[error("options file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

fn parse_u64(option: &'static str, v: &str) -> Result<u64, OptionsError> {
    v.parse::<u64>().map_err(|_| OptionsError::Invalid {
        option,
        value: v.into(),
        why: "expected a whole number".into(),
    })
}

/// Parse `--socket-mem`: comma-separated MiB per node, every field a number, no empty field.
pub fn parse_socket_mem(v: &str) -> Result<Vec<u64>, OptionsError> {
    let bad = |why: &str| OptionsError::Invalid {
        option: "--socket-mem",
        value: v.into(),
        why: why.into(),
    };
    if v.is_empty() {
        return Err(bad("it is empty; give MiB per NUMA node, e.g. 512,512"));
    }
    v.split(',')
        .map(|f| {
            if f.is_empty() {
                Err(bad("a field is empty"))
            } else if !f.bytes().all(|c| c.is_ascii_digit()) {
                Err(bad("every field must be a whole number of MiB"))
            } else {
                f.parse::<u64>().map_err(|_| bad("a field is too large"))
            }
        })
        .collect()
}

fn check_prefix(p: &str) -> Result<(), OptionsError> {
    let bad = |why: &str| OptionsError::Invalid {
        option: "--file-prefix",
        value: p.into(),
        why: why.into(),
    };
    if p.is_empty() {
        return Err(bad("it is empty"));
    }
    if p.len() > 48 {
        return Err(bad("it is longer than 48 bytes"));
    }
    if !p
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        || p.starts_with('.')
    {
        return Err(bad(
            "use letters, digits, '_', '-' and '.' only, not starting with '.'",
        ));
    }
    Ok(())
}

impl Options {
    /// Parse EAL-style arguments up to `--`; returns the options and the arguments after `--`.
    /// Accepts `--opt=value` and `--opt value`.
    pub fn parse_args<I, S>(args: I) -> Result<(Options, Vec<String>), OptionsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut o = Options::default();
        let mut it = args.into_iter().map(Into::into).peekable();
        let mut rest = Vec::new();
        let mut lcore_opt: Option<&'static str> = None;
        while let Some(arg) = it.next() {
            if arg == "--" {
                rest.extend(it);
                break;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            macro_rules! value {
                ($opt:expr) => {
                    match inline.clone() {
                        Some(v) => v,
                        None => it.next().ok_or(OptionsError::MissingValue($opt))?,
                    }
                };
            }
            let mut set_lcores = |opt: &'static str, map: LcoreMap| -> Result<(), OptionsError> {
                if let Some(prev) = lcore_opt {
                    return Err(OptionsError::Conflict {
                        a: prev,
                        b: opt,
                        why: "give the lcores once",
                    });
                }
                lcore_opt = Some(opt);
                o.lcores = Some(map);
                Ok(())
            };
            match name.as_str() {
                "--proc-type" => o.proc_type = value!("--proc-type").parse()?,
                "--file-prefix" => {
                    let v = value!("--file-prefix");
                    check_prefix(&v)?;
                    o.file_prefix = v;
                }
                "-m" => {
                    let v = value!("-m");
                    o.memory_mb = Some(parse_u64("-m", &v)?);
                }
                "--socket-mem" => {
                    let v = value!("--socket-mem");
                    o.socket_mem = Some(parse_socket_mem(&v)?);
                }
                "-l" => {
                    let v = value!("-l");
                    set_lcores(
                        "-l",
                        LcoreMap::parse_list(&v).map_err(|e| as_given(e, "-l", &v))?,
                    )?;
                }
                "-c" => {
                    let v = value!("-c");
                    set_lcores(
                        "-c",
                        LcoreMap::parse_mask(&v).map_err(|e| as_given(e, "-c", &v))?,
                    )?;
                }
                "--lcores" => {
                    let v = value!("--lcores");
                    set_lcores("--lcores", LcoreMap::parse_lcores(&v)?)?;
                }
                "--no-huge" => o.no_huge = true,
                "--in-memory" => o.in_memory = true,
                "--lazy-pages" => o.lazy_pages = true,
                "--huge-dir" => {
                    let v = value!("--huge-dir");
                    if v.is_empty() {
                        return Err(OptionsError::Invalid {
                            option: "--huge-dir",
                            value: v,
                            why: "it is empty; give a hugetlbfs mount or a directory inside one"
                                .into(),
                        });
                    }
                    o.huge_dir = Some(v.into());
                }
                "--base-virtaddr" => {
                    let v = value!("--base-virtaddr");
                    let digits = v.trim_start_matches("0x").trim_start_matches("0X");
                    let a = u64::from_str_radix(digits, 16).map_err(|_| OptionsError::Invalid {
                        option: "--base-virtaddr",
                        value: v.clone(),
                        why: "expected a hexadecimal address such as 0x200000000000".into(),
                    })?;
                    o.base_virtaddr = Some(a);
                }
                "--attach-timeout" => {
                    let v = value!("--attach-timeout");
                    o.attach_timeout = Duration::from_millis(parse_u64("--attach-timeout", &v)?);
                }
                "--monitor-interval" => {
                    let v = value!("--monitor-interval");
                    let ms = parse_u64("--monitor-interval", &v)?;
                    if ms == 0 {
                        return Err(OptionsError::Invalid {
                            option: "--monitor-interval",
                            value: v,
                            why: "must be at least 1 ms".into(),
                        });
                    }
                    o.monitor_interval = Duration::from_millis(ms);
                }
                "--clock" => {
                    let v = value!("--clock");
                    o.clock = Some(match v.to_ascii_lowercase().as_str() {
                        "tsc" => tsc_hpet::ClockKind::Tsc,
                        "hpet" => tsc_hpet::ClockKind::Hpet,
                        "monotonic" => tsc_hpet::ClockKind::Monotonic,
                        _ => {
                            return Err(OptionsError::Invalid {
                                option: "--clock",
                                value: v,
                                why: "expected tsc, hpet or monotonic".into(),
                            })
                        }
                    });
                }
                "-h" | "--help" => return Err(OptionsError::HelpRequested),
                "--runtime-dir" => o.runtime_dir = Some(value!("--runtime-dir").into()),
                "--max-zones" => {
                    let v = value!("--max-zones");
                    let n = parse_u64("--max-zones", &v)?;
                    if !(16..=1 << 20).contains(&n) {
                        return Err(OptionsError::Invalid {
                            option: "--max-zones",
                            value: v,
                            why: "must be between 16 and 1048576".into(),
                        });
                    }
                    o.max_zones = Some(n as u32);
                }
                _ => return Err(OptionsError::Unknown(arg)),
            }
        }
        o.validate()?;
        Ok((o, rest))
    }

    /// The options of [`PRIMARY_ONLY_OPTIONS`] that these options give, each as the command line
    /// names it, with its value (`-m 64`, `--no-huge`).
    ///
    /// ```
    /// use procctl::Options;
    /// let (o, _) = Options::parse_args(["--proc-type=auto", "-m", "64", "--no-huge"]).unwrap();
    /// assert_eq!(o.primary_only_given(), vec!["-m 64", "--no-huge"]);
    /// ```
    pub fn primary_only_given(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(m) = self.memory_mb {
            v.push(format!("-m {m}"));
        }
        if let Some(s) = &self.socket_mem {
            let s: Vec<String> = s.iter().map(u64::to_string).collect();
            v.push(format!("--socket-mem {}", s.join(",")));
        }
        if self.no_huge {
            v.push("--no-huge".into());
        }
        if let Some(d) = &self.huge_dir {
            v.push(format!("--huge-dir {}", d.display()));
        }
        if self.in_memory {
            v.push("--in-memory".into());
        }
        if let Some(a) = self.base_virtaddr {
            v.push(format!("--base-virtaddr {a:#x}"));
        }
        if self.lazy_pages {
            v.push("--lazy-pages".into());
        }
        if let Some(n) = self.max_zones {
            v.push(format!("--max-zones {n}"));
        }
        if let Some(c) = self.clock {
            v.push(format!("--clock {c}"));
        }
        v
    }

    /// Check combinations (as DPDK's own tests expect).
    pub fn validate(&self) -> Result<(), OptionsError> {
        check_prefix(&self.file_prefix)?;
        if self.proc_type == ProcType::Secondary {
            let given = self.primary_only_given();
            if !given.is_empty() {
                return Err(OptionsError::PrimaryOnly { options: given });
            }
        }
        if self.memory_mb.is_some() && self.socket_mem.is_some() {
            return Err(OptionsError::Conflict {
                a: "-m",
                b: "--socket-mem",
                why: "give the total (-m) or the amount per node (--socket-mem), not both",
            });
        }
        if self.no_huge && self.socket_mem.is_some() {
            return Err(OptionsError::Conflict {
                a: "--no-huge",
                b: "--socket-mem",
                why: "memory without hugepages is not placed per NUMA node; use -m",
            });
        }
        if self.no_huge && self.huge_dir.is_some() {
            return Err(OptionsError::Conflict {
                a: "--no-huge",
                b: "--huge-dir",
                why: "--no-huge uses /dev/shm",
            });
        }
        if self
            .runtime_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(OptionsError::Invalid {
                option: "--runtime-dir",
                value: String::new(),
                why: "an empty path would put the group's files in the working directory; name a directory, or leave the option out for the default".into(),
            });
        }
        if self.memory_mb == Some(0) {
            return Err(OptionsError::Invalid {
                option: "-m",
                value: "0".into(),
                why: "a group needs some memory".into(),
            });
        }
        // Megabytes become bytes by a shift: refuse what would overflow it (or exceed any
        // machine's address space) rather than wrap to a small or absurd amount.
        if let Some(m) = self.memory_mb.filter(|&m| m > MAX_MEMORY_MB) {
            return Err(OptionsError::Invalid {
                option: "-m",
                value: m.to_string(),
                why: format!("at most {MAX_MEMORY_MB} MiB (64 TiB)"),
            });
        }
        if let Some(v) = &self.socket_mem {
            let total = v.iter().try_fold(0u64, |a, &m| a.checked_add(m));
            if total.is_none_or(|t| t > MAX_MEMORY_MB) {
                return Err(OptionsError::Invalid {
                    option: "--socket-mem",
                    value: v.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                    why: format!("at most {MAX_MEMORY_MB} MiB (64 TiB) in all"),
                });
            }
        }
        Ok(())
    }

    /// Read options from a TOML file (same names without dashes, `_` for `-`):
    ///
    /// ```toml
    /// proc_type = "auto"
    /// file_prefix = "g1"
    /// memory_mb = 256
    /// lcores = "(0-3)@0"
    /// ```
    pub fn from_toml_file(path: &std::path::Path) -> Result<Options, OptionsError> {
        let text = std::fs::read_to_string(path).map_err(|e| OptionsError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            OptionsError::File { why, .. } => OptionsError::File {
                path: path.display().to_string(),
                why,
            },
            other => other,
        })
    }

    /// Parse options from TOML text (see [`Options::from_toml_file`]).
    pub fn from_toml_str(text: &str) -> Result<Options, OptionsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            proc_type: Option<ProcType>,
            file_prefix: Option<String>,
            memory_mb: Option<u64>,
            socket_mem: Option<Vec<u64>>,
            lcores: Option<String>,
            no_huge: Option<bool>,
            in_memory: Option<bool>,
            huge_dir: Option<PathBuf>,
            base_virtaddr: Option<String>,
            lazy_pages: Option<bool>,
            attach_timeout_ms: Option<u64>,
            runtime_dir: Option<PathBuf>,
            max_zones: Option<u32>,
            monitor_interval_ms: Option<u64>,
            clock: Option<String>,
        }
        let f: File = toml::from_str(text).map_err(|e| OptionsError::File {
            path: "<text>".into(),
            why: e.to_string(),
        })?;
        // Re-use the argument parser so both forms follow exactly the same rules.
        let mut args: Vec<String> = Vec::new();
        if let Some(p) = f.proc_type {
            args.push(format!(
                "--proc-type={}",
                match p {
                    ProcType::Primary => "primary",
                    ProcType::Secondary => "secondary",
                    ProcType::Auto => "auto",
                }
            ));
        }
        if let Some(v) = f.file_prefix {
            args.push(format!("--file-prefix={v}"));
        }
        if let Some(v) = f.memory_mb {
            args.extend(["-m".into(), v.to_string()]);
        }
        if let Some(v) = f.socket_mem {
            let s: Vec<String> = v.iter().map(u64::to_string).collect();
            args.push(format!("--socket-mem={}", s.join(",")));
        }
        if let Some(v) = f.lcores {
            args.push(format!("--lcores={v}"));
        }
        if f.no_huge == Some(true) {
            args.push("--no-huge".into());
        }
        if f.in_memory == Some(true) {
            args.push("--in-memory".into());
        }
        if f.lazy_pages == Some(true) {
            args.push("--lazy-pages".into());
        }
        if let Some(v) = f.huge_dir {
            args.push(format!("--huge-dir={}", v.display()));
        }
        if let Some(v) = f.base_virtaddr {
            args.push(format!("--base-virtaddr={v}"));
        }
        if let Some(v) = f.attach_timeout_ms {
            args.push(format!("--attach-timeout={v}"));
        }
        if let Some(v) = f.runtime_dir {
            args.push(format!("--runtime-dir={}", v.display()));
        }
        if let Some(v) = f.max_zones {
            args.push(format!("--max-zones={v}"));
        }
        if let Some(v) = f.clock {
            args.push(format!("--clock={v}"));
        }
        if let Some(v) = f.monitor_interval_ms {
            args.push(format!("--monitor-interval={v}"));
        }
        // Errors name the file's keys, not the command-line options they became.
        Self::parse_args(args).map(|r| r.0).map_err(|e| {
            let why = match e {
                OptionsError::Invalid { option, value, why } => {
                    format!("{} = {value:?}: {why}", toml_key(option))
                }
                OptionsError::Conflict { a, b, why } => {
                    format!(
                        "{} cannot be combined with {}: {why}",
                        toml_key(a),
                        toml_key(b)
                    )
                }
                other => other.to_string(),
            };
            OptionsError::File {
                path: "<text>".into(),
                why,
            }
        })
    }
}

/// An error of the `--lcores` parser, which `-l` and `-c` go through, told in the terms of the
/// option and value the user gave.
fn as_given(e: OptionsError, option: &'static str, value: &str) -> OptionsError {
    match e {
        OptionsError::Invalid {
            option: "--lcores",
            why,
            ..
        } => OptionsError::Invalid {
            option,
            value: value.into(),
            why,
        },
        other => other,
    }
}

/// The options-file key of command-line option `option`.
fn toml_key(option: &str) -> String {
    match option {
        "-m" => "memory_mb".into(),
        "--lcores" | "-l" | "-c" => "lcores".into(),
        "--attach-timeout" => "attach_timeout_ms".into(),
        "--monitor-interval" => "monitor_interval_ms".into(),
        o => o.trim_start_matches('-').replace('-', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Options, OptionsError> {
        Options::parse_args(a.iter().copied()).map(|(o, _)| o)
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.file_prefix, DEFAULT_PREFIX);
        assert_eq!(o.proc_type, ProcType::Primary);
        assert!(o.lcores.is_none());
    }

    #[test]
    fn proc_type() {
        assert_eq!(
            parse(&["--proc-type=SECONDARY"]).unwrap().proc_type,
            ProcType::Secondary
        );
        assert_eq!(
            parse(&["--proc-type", "auto"]).unwrap().proc_type,
            ProcType::Auto
        );
        assert!(matches!(
            parse(&["--proc-type=ERROR"]),
            Err(OptionsError::Invalid {
                option: "--proc-type",
                ..
            })
        ));
        assert!(matches!(
            parse(&["--proc-type"]),
            Err(OptionsError::MissingValue("--proc-type"))
        ));
    }

    #[test]
    fn a_secondary_refuses_the_options_of_a_primary_naming_each() {
        for (opts, named) in [
            (&["--no-huge"][..], "--no-huge"),
            (&["-m", "64"][..], "-m 64"),
            (&["--socket-mem=64,64"][..], "--socket-mem 64,64"),
            (&["--huge-dir", "/mnt/huge"][..], "--huge-dir /mnt/huge"),
            (&["--in-memory"][..], "--in-memory"),
            (
                &["--base-virtaddr=0x300000000000"][..],
                "--base-virtaddr 0x300000000000",
            ),
            (&["--lazy-pages"][..], "--lazy-pages"),
            (&["--max-zones", "64"][..], "--max-zones 64"),
            // The default's value, given: refused as well (the group's table may differ).
            (&["--max-zones=2560"][..], "--max-zones 2560"),
            (&["--clock", "HPET"][..], "--clock hpet"),
        ] {
            let mut a = vec!["--proc-type=secondary"];
            a.extend_from_slice(opts);
            let e = parse(&a).unwrap_err();
            assert_eq!(
                e,
                OptionsError::PrimaryOnly {
                    options: vec![named.to_string()]
                }
            );
            let text = e.to_string();
            assert!(
                text.starts_with(named) && text.contains("--proc-type=auto"),
                "{text}"
            );
            // The same options are fine where they may be used: a primary, or auto.
            for t in ["primary", "auto"] {
                a[0] = if t == "primary" {
                    "--proc-type=primary"
                } else {
                    "--proc-type=auto"
                };
                assert!(parse(&a).is_ok(), "{a:?}");
            }
        }
        let e = parse(&["--proc-type=secondary", "--in-memory", "-m", "8"]).unwrap_err();
        assert!(e.to_string().starts_with("-m 8, --in-memory only"), "{e}");
        // Options a secondary uses are not primary-only.
        parse(&[
            "--proc-type=secondary",
            "-l",
            "1",
            "--attach-timeout",
            "100",
            "--file-prefix=x",
        ])
        .unwrap();
        let e = Options::from_toml_str("proc_type = \"secondary\"\nno_huge = true").unwrap_err();
        assert!(e.to_string().contains("--no-huge only"), "{e}");
        // The options file's keys for the others too.
        for (key, named) in [
            (
                "base_virtaddr = \"0x300000000000\"",
                "--base-virtaddr 0x300000000000",
            ),
            ("lazy_pages = true", "--lazy-pages"),
            ("max_zones = 64", "--max-zones 64"),
            ("clock = \"monotonic\"", "--clock monotonic"),
        ] {
            let e =
                Options::from_toml_str(&format!("proc_type = \"secondary\"\n{key}")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("{named} only")),
                "{key}: {e}"
            );
            let o = Options::from_toml_str(&format!("proc_type = \"auto\"\n{key}")).unwrap();
            assert_eq!(o.primary_only_given(), vec![named.to_string()], "{key}");
        }
        // `lazy_pages = false` gives nothing.
        Options::from_toml_str("proc_type = \"secondary\"\nlazy_pages = false").unwrap();
        // Every primary-only option is named in the list, and each is refused.
        let all = parse(&[
            "--proc-type=auto",
            "-m",
            "8",
            "--no-huge",
            "--in-memory",
            "--base-virtaddr=0x1000",
            "--lazy-pages",
            "--max-zones=16",
            "--clock=tsc",
        ])
        .unwrap();
        let given = all.primary_only_given();
        assert_eq!(given.len(), 7, "{given:?}");
        for g in &given {
            let opt = g.split(' ').next().unwrap();
            assert!(PRIMARY_ONLY_OPTIONS.contains(&opt), "{opt}");
        }
        assert_eq!(
            parse(&[]).unwrap().primary_only_given(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn usage_names_every_option_the_parser_accepts() {
        // Each option with a value it accepts; the usage text must name each one.
        let all: &[&[&str]] = &[
            &["--proc-type", "auto"],
            &["--file-prefix", "x"],
            &["-m", "8"],
            &["--socket-mem", "8"],
            &["--no-huge"],
            &["--huge-dir", "/mnt"],
            &["--in-memory"],
            &["-l", "0"],
            &["-c", "0x1"],
            &["--lcores", "0@0"],
            &["--base-virtaddr", "0x100000"],
            &["--lazy-pages"],
            &["--attach-timeout", "10"],
            &["--runtime-dir", "/tmp/x"],
            &["--max-zones", "16"],
            &["--monitor-interval", "5"],
            &["--clock", "monotonic"],
        ];
        for a in all {
            parse(a).unwrap_or_else(|e| panic!("{a:?}: {e}"));
            let shown = format!("{} ", a[0]);
            assert!(
                USAGE.lines().any(
                    |l| l.trim_start().starts_with(&shown) || l.contains(&format!("| {shown}"))
                ),
                "USAGE does not name {}",
                a[0]
            );
        }
        for h in ["-h", "--help"] {
            assert_eq!(parse(&["-m", "8", h]), Err(OptionsError::HelpRequested));
            assert!(wants_help(&["--", h]));
        }
        assert!(OptionsError::HelpRequested
            .to_string()
            .contains("--file-prefix NAME"));
        assert!(!wants_help(&["--proc-type=auto", "--", "--count", "3"]));
    }

    #[test]
    fn file_errors_name_the_key() {
        let e = Options::from_toml_str("memory_mb = 0").unwrap_err();
        assert!(e.to_string().contains("memory_mb = \"0\""), "{e}");
        let e = Options::from_toml_str("memory_mb = 8\nsocket_mem = [8]").unwrap_err();
        assert!(
            e.to_string()
                .contains("memory_mb cannot be combined with socket_mem"),
            "{e}"
        );
        let e = Options::from_toml_str("runtime_dir = \"\"").unwrap_err();
        assert!(e.to_string().contains("runtime_dir"), "{e}");
        assert!(parse(&["--runtime-dir", ""]).is_err());
    }

    #[test]
    fn lcore_errors_name_the_option_and_value_given() {
        for (opt, v) in [("-l", "5000"), ("-l", "3-1"), ("-c", "0x0")] {
            let e = parse(&[opt, v]).unwrap_err().to_string();
            assert!(e.contains(&format!("{v:?} for {opt}")), "{opt} {v}: {e}");
        }
        let e = parse(&["-c", &format!("0x1{}", "0".repeat(33))]).unwrap_err();
        assert!(e.to_string().contains("at most 128 lcores"), "{e}");
    }

    #[test]
    fn memory_that_would_overflow_is_refused() {
        // 2^44 MiB << 20 wraps to 0, 2^44 + 1 to 1 MiB: both must be refused, naming the option.
        for m in ["17592186044416", "17592186044417", "99999999999999"] {
            let e = parse(&["-m", m]).unwrap_err();
            assert!(
                matches!(e, OptionsError::Invalid { option: "-m", .. }),
                "{m}: {e}"
            );
        }
        let e = parse(&["--socket-mem", "17592186044416,1"]).unwrap_err();
        assert!(
            matches!(
                e,
                OptionsError::Invalid {
                    option: "--socket-mem",
                    ..
                }
            ),
            "{e}"
        );
        let max = MAX_MEMORY_MB.to_string();
        assert!(parse(&["-m", &max]).is_ok());
    }

    #[test]
    fn dpdk_memory_rules() {
        // all zeros is valid
        assert_eq!(
            parse(&["--socket-mem=0,0"]).unwrap().socket_mem,
            Some(vec![0, 0])
        );
        assert_eq!(
            parse(&["--socket-mem=512"]).unwrap().socket_mem,
            Some(vec![512])
        );
        for bad in ["2,", "2,Fred", "2,Fred0", "2,,2", ""] {
            assert!(
                matches!(
                    parse(&[&format!("--socket-mem={bad}")]),
                    Err(OptionsError::Invalid {
                        option: "--socket-mem",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            parse(&["-m", "64", "--socket-mem=64"]),
            Err(OptionsError::Conflict {
                a: "-m",
                b: "--socket-mem",
                ..
            })
        ));
        assert!(matches!(
            parse(&["--no-huge", "--socket-mem=64"]),
            Err(OptionsError::Conflict { .. })
        ));
        assert!(parse(&["--no-huge", "-m", "64"]).is_ok());
        assert!(matches!(
            parse(&["-m", "x"]),
            Err(OptionsError::Invalid { option: "-m", .. })
        ));
    }

    #[test]
    fn misc_rules() {
        assert!(matches!(
            parse(&["--huge-dir="]),
            Err(OptionsError::Invalid {
                option: "--huge-dir",
                ..
            })
        ));
        assert!(matches!(
            parse(&["--file-prefix="]),
            Err(OptionsError::Invalid {
                option: "--file-prefix",
                ..
            })
        ));
        assert!(matches!(
            parse(&["--file-prefix=a%b"]),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            parse(&["--file-prefix=../x"]),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(parse(&["--bogus"]), Err(OptionsError::Unknown(_))));
        assert_eq!(
            parse(&["--base-virtaddr=0x23456789"])
                .unwrap()
                .base_virtaddr,
            Some(0x23456789)
        );
        assert!(parse(&["--base-virtaddr=zz"]).is_err());
        assert!(matches!(
            parse(&["-l", "0", "-c", "0x1"]),
            Err(OptionsError::Conflict { .. })
        ));
    }

    #[test]
    fn rest_after_double_dash() {
        let (_, rest) = Options::parse_args(["-m", "8", "--", "-m", "x"]).unwrap();
        assert_eq!(rest, vec!["-m", "x"]);
    }

    #[test]
    fn toml_equivalent() {
        let o = Options::from_toml_str(
            "proc_type = \"auto\"\nfile_prefix = \"g1\"\nmemory_mb = 128\nlcores = \"(0-3)@0\"\nlazy_pages = true\n",
        )
        .unwrap();
        assert_eq!(o.proc_type, ProcType::Auto);
        assert_eq!(o.file_prefix, "g1");
        assert_eq!(o.memory_mb, Some(128));
        assert_eq!(o.lcores.as_ref().unwrap().lcores(), vec![0, 1, 2, 3]);
        assert!(o.lazy_pages);
        assert!(matches!(
            Options::from_toml_str("nonsense = 1"),
            Err(OptionsError::File { .. })
        ));
        assert!(matches!(
            Options::from_toml_str("memory_mb = 1\nsocket_mem = [1]"),
            Err(OptionsError::File { .. })
        ));
    }
}
