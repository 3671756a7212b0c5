//! End-to-end throughput through a real Postfix (Debian's package, a throwaway
//! instance on loopback): messages per second from Postfix's smtp-source to its
//! smtp-sink, without a milter and with the milter on each transport. Needs root and
//! postfix; prints figures, asserts nothing about time.
//!
//! Run: cargo bench --bench postfix   (BENCH_MESSAGES=N to change the count)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Rig, TestMilter, Transport};
use std::time::Instant;

fn run(rig: &Rig, n: usize, sessions: usize, already: usize) -> f64 {
    let t = Instant::now();
    rig.smtp_source(n, sessions, 2048);
    rig.wait_delivered(already + n);
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/sbin/postfix").exists() {
        println!("postfix throughput: skipped (needs root and Debian's postfix)");
        return;
    }
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cfg = "[log]\nlevel = \"warn\"\n";
    let dir = common::temp_dir();
    let cases: Vec<(&str, Option<Transport>)> = vec![
        ("no milter", None),
        (
            "milter, plain TCP (Nagle, delayed ACKs)",
            Some(Transport::PlainTcp("127.0.0.1:0".parse().unwrap())),
        ),
        (
            "milter, TCP_NODELAY + TCP_QUICKACK",
            Some(Transport::Tcp("127.0.0.1:0".parse().unwrap())),
        ),
        (
            "milter, unix socket",
            Some(Transport::Unix(dir.path().join("m.sock"))),
        ),
    ];
    println!(
        "postfix throughput, messages of 2 KiB, msg/s (one SMTP session at a time | 20 in parallel):"
    );
    for (name, transport) in cases {
        let milter = transport.map(|t| TestMilter::start_on(cfg, t));
        let rig = Rig::start(milter.as_ref().map_or("", |m| m.socket_ref()), &[]);
        let serial = run(&rig, n / 4, 1, 0);
        let parallel = run(&rig, n, 20, n / 4);
        println!("  {name:<42} {serial:>7.0} | {parallel:>7.0}");
        drop(rig);
        drop(milter);
    }
    // Peak resident memory of this process (the in-process milters and the harness).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        println!(
            "  peak resident memory of the bench process: {}",
            hwm.trim_start_matches("VmHWM:").trim()
        );
    }
}
