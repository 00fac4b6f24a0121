//! Logical cores (lcores): ids a member owns, each mapped to one or more CPUs.
//!
//! As in DPDK's `--lcores`, an lcore is a logical id (`0..MAX_LCORES`), not a CPU: many members
//! can own distinct lcores on a machine with two CPUs (`--lcores '(0-7)@0'`). Two live members
//! never own the same lcore (per-lcore caches in shared memory rely on it).
//!
//! ```
//! use procctl::LcoreMap;
//! let m = LcoreMap::parse_lcores("(0-2)@0,5@(0,1),7").unwrap();
//! assert_eq!(m.lcores(), vec![0, 1, 2, 5, 7]);
//! assert_eq!(m.cpus_of(5), Some(&[0usize, 1][..]));
//! assert_eq!(m.cpus_of(7), Some(&[7usize][..]));
//! ```

use shmconfig::layout::MAX_LCORES;

use crate::options::OptionsError;

/// The lcores a member asks for, and the CPUs each runs on (empty = any CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreMap {
    entries: Vec<(u32, Vec<usize>)>,
}

fn bad(option: &'static str, v: &str, why: impl Into<String>) -> OptionsError {
    OptionsError::Invalid {
        option,
        value: v.into(),
        why: why.into(),
    }
}

/// Parse `a`, `a-b`, or a comma list of those, as numbers.
fn parse_set(option: &'static str, whole: &str, s: &str) -> Result<Vec<u32>, OptionsError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| bad(option, whole, format!("{t:?} is not a number")))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(bad(option, whole, format!("range {a}-{b} is backwards")));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

impl LcoreMap {
    /// A map from (lcore, CPUs) pairs, checked.
    pub fn new(entries: Vec<(u32, Vec<usize>)>) -> Result<Self, OptionsError> {
        let mut seen = std::collections::BTreeSet::new();
        for (l, _) in &entries {
            if *l as usize >= MAX_LCORES {
                return Err(bad(
                    "--lcores",
                    &l.to_string(),
                    format!("lcore ids go from 0 to {}", MAX_LCORES - 1),
                ));
            }
            if !seen.insert(*l) {
                return Err(bad("--lcores", &l.to_string(), "an lcore is given twice"));
            }
        }
        if entries.is_empty() {
            return Err(bad("--lcores", "", "no lcore given"));
        }
        Ok(Self { entries })
    }

    /// `-l 0-3,5`: lcore i runs on CPU i.
    pub fn parse_list(v: &str) -> Result<Self, OptionsError> {
        if v.is_empty() {
            return Err(bad("-l", v, "it is empty"));
        }
        let ids = parse_set("-l", v, v)?;
        Self::new(ids.into_iter().map(|l| (l, vec![l as usize])).collect())
    }

    /// `-c 0xf`: a hexadecimal mask of lcores, lcore i on CPU i.
    pub fn parse_mask(v: &str) -> Result<Self, OptionsError> {
        let digits = v.trim_start_matches("0x").trim_start_matches("0X");
        let mask = u128::from_str_radix(digits, 16).map_err(|_| {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                bad(
                    "-c",
                    v,
                    "at most 128 lcores: a mask of up to 32 hexadecimal digits",
                )
            } else {
                bad("-c", v, "expected a hexadecimal mask such as 0x3")
            }
        })?;
        let ids: Vec<u32> = (0..128).filter(|i| mask & (1u128 << i) != 0).collect();
        Self::new(ids.into_iter().map(|l| (l, vec![l as usize])).collect())
    }

    /// `--lcores '(0-7)@0,8@(0,1),9'`: groups of lcores, each group optionally `@` CPUs.
    pub fn parse_lcores(v: &str) -> Result<Self, OptionsError> {
        if v.is_empty() {
            return Err(bad("--lcores", v, "it is empty"));
        }
        // Split at top-level commas (not inside parentheses).
        let mut items = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in v.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&v[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            if depth < 0 {
                return Err(bad("--lcores", v, "unbalanced parentheses"));
            }
        }
        if depth != 0 {
            return Err(bad("--lcores", v, "unbalanced parentheses"));
        }
        items.push(&v[start..]);
        let unwrap = |s: &str| {
            s.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string()
        };
        let mut entries = Vec::new();
        for item in items {
            let (ls, cs) = match item.split_once('@') {
                Some((l, c)) => (unwrap(l), Some(unwrap(c))),
                None => (unwrap(item), None),
            };
            let lcores = parse_set("--lcores", v, &ls)?;
            for l in lcores {
                let cpus = match &cs {
                    Some(c) => parse_set("--lcores", v, c)?
                        .into_iter()
                        .map(|c| c as usize)
                        .collect(),
                    None => vec![l as usize],
                };
                entries.push((l, cpus));
            }
        }
        Self::new(entries)
    }

    /// The lcore ids, in the order given (the first is the main lcore).
    pub fn lcores(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.0).collect()
    }

    /// The CPUs an lcore runs on.
    pub fn cpus_of(&self, lcore: u32) -> Option<&[usize]> {
        self.entries
            .iter()
            .find(|e| e.0 == lcore)
            .map(|e| e.1.as_slice())
    }

    /// Check every CPU exists on this machine (`ncpus` CPUs online).
    pub fn check_cpus(&self, ncpus: usize) -> Result<(), OptionsError> {
        for (l, cpus) in &self.entries {
            if let Some(c) = cpus.iter().find(|&&c| c >= ncpus) {
                return Err(bad(
                    "-l/-c/--lcores",
                    &format!("lcore {l} on CPU {c}"),
                    format!("CPU {c} does not exist (this machine has {ncpus}, 0-{}); -l and -c put lcore i on CPU i: give fewer lcores, or map them to CPUs with --lcores '(0-7)@0'", ncpus.saturating_sub(1)),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_mask() {
        assert_eq!(
            LcoreMap::parse_list("0-2,5").unwrap().lcores(),
            vec![0, 1, 2, 5]
        );
        assert_eq!(LcoreMap::parse_mask("0x5").unwrap().lcores(), vec![0, 2]);
        assert!(LcoreMap::parse_mask("0x0").is_err());
        assert!(LcoreMap::parse_list("3-1").is_err());
        assert!(LcoreMap::parse_list("a").is_err());
        assert!(LcoreMap::parse_list("128").is_err());
        assert!(LcoreMap::parse_list("1,1").is_err());
    }

    #[test]
    fn lcores_groups() {
        let m = LcoreMap::parse_lcores("(0-7)@0").unwrap();
        assert_eq!(m.lcores().len(), 8);
        assert_eq!(m.cpus_of(7), Some(&[0usize][..]));
        let m = LcoreMap::parse_lcores("1@(0-1),(2,3)@1").unwrap();
        assert_eq!(m.cpus_of(1), Some(&[0usize, 1][..]));
        assert_eq!(m.cpus_of(3), Some(&[1usize][..]));
        assert!(LcoreMap::parse_lcores("(0-1@0").is_err());
        assert!(LcoreMap::parse_lcores("").is_err());
        assert!(m.check_cpus(2).is_ok());
        assert!(LcoreMap::parse_list("0-3").unwrap().check_cpus(2).is_err());
    }
}
