//! The ledger under a crash: a process recording as fast as it can is killed with
//! SIGKILL; every record it had acknowledged is there after a restart (the write
//! reaches the kernel before `record` returns; only a power loss can take the last
//! unsynced records, at most 64).

use backscatter_milter::ledger::{FileLedger, Ledger};
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

const CHILD: &str = "BSM_LEDGER_CRASH_CHILD";

/// In the child: record until killed, printing each acknowledged index.
#[test]
fn ledger_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let l = FileLedger::open(std::path::Path::new(&dir), 1_000_000, 1 << 40, 1).unwrap();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        l.record(
            &format!("<m{i}@example.org>"),
            "a@example.org",
            &[format!("r{i}@x.example")],
            1 + i,
        )
        .unwrap();
        writeln!(out, "{i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ledger_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Ok(i) = line.trim().parse::<u64>() {
            last = Some(i);
            if i >= 3000 {
                break;
            }
        }
    }
    // SIGKILL mid-stream: the child is still recording.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let acked = last.expect("the child recorded");
    let l = FileLedger::open(dir.path(), 1_000_000, 1 << 40, 1).unwrap();
    let lost: Vec<u64> = (0..=acked)
        .filter(|i| l.lookup(&format!("m{i}@example.org"), 1).is_none())
        .collect();
    println!(
        "acknowledged {} records before SIGKILL, {} present after restart, {} lost",
        acked + 1,
        l.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(l.len() as u64 > acked, "nothing acknowledged is missing");
    // One write per record: a SIGKILL never tears a line (a power loss could; replay
    // would skip it and the next open starts a fresh line).
    assert_eq!(l.skipped(), 0, "no torn line at the end");
    assert!(
        l.lookup("m0@example.org", 1)
            .unwrap()
            .has_rcpt("r0@x.example"),
        "entries keep their recipients"
    );
}
