//! Group agreement across real processes: a primary chooses and records the clock, a secondary
//! process (this test binary run again) builds its clock from the record alone, and timestamps
//! taken in one process compare correctly with the other's.
#![cfg(not(loom))] // these use std atomics; `tests/loom_wrap.rs` is the loom model

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tsc_hpet::{choose, from_record, ClockKind, ClockRecord};

const CHILD_ENV: &str = "TSC_HPET_TEST_SECONDARY";

/// The secondary's side: read "kind hz source stamp" lines from stdin, answer with
/// "kind hz source notice? now" for each; stop at EOF.
fn secondary() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let rec = ClockRecord::from_raw(v[0] as u32, v[1], v[2] as u32).unwrap();
        let started = std::time::Instant::now();
        let (clock, notice) = from_record(&rec);
        let built_us = started.elapsed().as_micros();
        let now = clock.cycles_ordered();
        let (k, hz, s) = clock.record().to_raw();
        writeln!(
            out,
            "{k} {hz} {s} {} {built_us} {now} {}",
            notice.is_some(),
            v[3]
        )
        .unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_secondary_process_uses_the_primarys_record_and_shares_its_timeline() {
    if std::env::var_os(CHILD_ENV).is_some() {
        secondary();
        return;
    }
    let (clock, record, warnings) = choose(None).unwrap();
    eprintln!("primary chose {record}; warnings: {warnings:?}");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_secondary_process_uses_the_primarys_record_and_shares_its_timeline",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let (k, hz, s) = record.to_raw();
    let mut answers = 0;
    for _ in 0..20 {
        let stamp = clock.cycles_ordered();
        writeln!(to_child, "{k} {hz} {s} {stamp}").unwrap();
        to_child.flush().unwrap();
        // The answer line (skip the test harness's own lines, if any).
        let fields: Vec<String> = loop {
            let mut line = String::new();
            assert!(
                from_child.read_line(&mut line).unwrap() > 0,
                "secondary exited early"
            );
            let f: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if f.len() == 7
                && f.iter()
                    .all(|x| x.parse::<u64>().is_ok() || x == "true" || x == "false")
            {
                break f;
            }
        };
        let back = clock.cycles_ordered();
        let num = |i: usize| fields[i].parse::<u64>().unwrap();
        // Same clock, same frequency, no fallback.
        assert_eq!((num(0), num(1), num(2)), (u64::from(k), hz, u64::from(s)));
        assert_eq!(
            fields[3], "false",
            "no fallback notice expected on this machine"
        );
        // Built from the record without calibrating (a calibration takes ~75 ms).
        assert!(
            num(4) < 20_000,
            "from_record took {} us: did it recalibrate?",
            num(4)
        );
        assert_eq!(num(6), stamp);
        // One timeline: the secondary's reading lies between the primary's send and receive.
        let theirs = num(5);
        if record.kind != ClockKind::Hpet {
            assert!(
                stamp <= theirs && theirs <= back,
                "{}: primary {stamp} <= secondary {theirs} <= primary {back} fails",
                record.kind
            );
            assert!(clock.cycles_to_ns(back - stamp) < Duration::from_secs(5).as_nanos() as u64);
        }
        answers += 1;
    }
    drop(to_child);
    assert!(child.wait().unwrap().success());
    assert_eq!(answers, 20);
}
