//! Worst-case inputs for the bounce analysis, 16 KiB to 1 MiB of each hostile
//! shape, next to a normal bounce, with the most generous limits the config
//! accepts (max_text 4 MiB, 10,000 parts and headers, 1,000 recipients). Prints
//! µs per KiB for every shape and size, the steps counted per KiB, and the growth
//! ratio (µs/KiB at 1 MiB over µs/KiB at 16 KiB): about 1 when the cost is linear.
//! Times are CPU time of the benchmark thread (best of several runs).
//! Run: cargo bench --bench worstcase

use backscatter_milter::dsn::{self, Limits, budget};
use std::hint::black_box;

/// This thread's CPU time in seconds: time spent waiting for a busy CPU is not
/// counted (the figures hold on a shared machine).
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

const SIZES_KIB: [usize; 4] = [16, 64, 256, 1024];

/// `unit` repeated to `bytes`, after `head`.
fn fill(head: &str, unit: &str, tail: &str, bytes: usize) -> Vec<u8> {
    let mut s = String::with_capacity(bytes + unit.len() + tail.len());
    s.push_str(head);
    while s.len() + unit.len() + tail.len() <= bytes {
        s.push_str(unit);
    }
    s.push_str(tail);
    s.into_bytes()
}

const BOUNCE_HEAD: &str = "From: MAILER-DAEMON@mx.remote.example (Mail Delivery System)\n\
    To: alice@ours.example\nSubject: Undelivered Mail Returned to Sender\n\
    Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <b1@mx.remote.example>\n";

fn shape(name: &str, bytes: usize) -> Vec<u8> {
    let text_head = format!("{BOUNCE_HEAD}Content-Type: text/plain\n\n");
    match name {
        "header-like lines" => fill(&text_head, "x-a: b\n", "", bytes),
        "indented header lines" => fill(&text_head, "  x-a: b\n", "", bytes),
        "quoted header lines" => fill(&text_head, "> Received: from x\n", "", bytes),
        "marker + header lines" => fill(
            &format!("{text_head}This is a copy of the message, including all the headers.\n"),
            "x-a: b\n",
            "",
            bytes,
        ),
        "boundaries" => fill(
            &format!("{BOUNCE_HEAD}Content-Type: multipart/mixed; boundary=\"b\"\n\n"),
            "--b\nContent-Type: text/plain\n\nuser unknown\n",
            "--b--\n",
            bytes,
        ),
        "mismatched boundary" => fill(
            &format!(
                "{BOUNCE_HEAD}Content-Type: multipart/mixed; boundary=\"{}\"\n\n",
                "d".repeat(70)
            ),
            "--real\nContent-Type: text/plain\n\n--\n",
            "--real--\n",
            bytes,
        ),
        "nested messages" => {
            // message/rfc822 inside message/rfc822 ..., as deep as the size allows.
            let open = "Content-Type: multipart/mixed; boundary=\"n\"\n\n--n\n\
                        Content-Type: message/rfc822\n\nFrom: a@b.example\n";
            let mut s = String::from(BOUNCE_HEAD);
            while s.len() + open.len() < bytes / 2 {
                s.push_str(open);
            }
            s.push_str("Content-Type: text/plain\n\nuser unknown\n");
            while s.len() + 6 < bytes {
                s.push_str("--n--\n");
            }
            s.into_bytes()
        }
        "many addresses" => {
            let mut s = text_head.clone();
            let mut i = 0;
            while s.len() < bytes {
                s.push_str(&format!("<user{i}@remote{i}.example>: user unknown\n"));
                i += 1;
            }
            s.into_bytes()
        }
        "status lines" => fill(
            &text_head,
            "550 5.1.1 4.4.7 #5.0.0 status: 5.2.2 (4.0.0)\n",
            "",
            bytes,
        ),
        "long line" => fill(&text_head, "undeliverable a@b.example 550 ", "", bytes),
        "many Final-Recipient" => {
            let mut s = format!(
                "{BOUNCE_HEAD}Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\n\n\
                 --r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.remote.example\n\n"
            );
            let mut i = 0;
            while s.len() < bytes {
                s.push_str(&format!(
                    "Final-Recipient: rfc822; u{i}@remote.example\nAction: failed\nStatus: 5.1.1\n\n"
                ));
                i += 1;
            }
            s.push_str("--r--\n");
            s.into_bytes()
        }
        "pasted Final-Recipient" => fill(
            &text_head,
            "\nFinal-Recipient: rfc822; u@remote.example\nAction: failed\nStatus: 5.1.1\n",
            "",
            bytes,
        ),
        "html tags" => fill(
            &format!("{BOUNCE_HEAD}Content-Type: text/html\n\n"),
            "<b>user unknown</b>&nbsp;&lt;",
            "",
            bytes,
        ),
        _ => unreachable!(),
    }
}

const SHAPES: &[&str] = &[
    "header-like lines",
    "indented header lines",
    "quoted header lines",
    "marker + header lines",
    "boundaries",
    "mismatched boundary",
    "nested messages",
    "many addresses",
    "status lines",
    "long line",
    "many Final-Recipient",
    "pasted Final-Recipient",
    "html tags",
];

/// Seconds per analysis (the best of several runs) and the steps counted.
fn measure(raw: &[u8], limits: &Limits) -> (f64, u64) {
    let ((), usage) = budget::run(None, || {
        black_box(dsn::analyze(raw, Some(""), limits));
    });
    let mut best = f64::MAX;
    let started = cpu_now();
    let mut runs = 0;
    while runs < 3 || (cpu_now() - started < 0.2 && runs < 200) {
        let t = cpu_now();
        black_box(dsn::analyze(black_box(raw), Some(""), limits));
        best = best.min(cpu_now() - t);
        runs += 1;
    }
    (best, usage.steps)
}

fn main() {
    // The most generous limits `--check-config` accepts for the text passes.
    let limits = Limits {
        max_bytes: 2 << 20,
        max_parts: 10_000,
        max_headers: 10_000,
        max_recipients: 1000,
        max_text: 4 << 20,
        ..Limits::default()
    };
    let normal = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/own/bounce-of-bounce.eml"
    ))
    .expect("fixture");
    let (t, steps) = measure(&normal, &limits);
    let kib = normal.len() as f64 / 1024.0;
    let baseline = t * 1e6 / kib;
    println!(
        "normal bounce ({:.1} KiB): {:.1} us, {baseline:.2} us/KiB, {:.0} steps/KiB\n",
        kib,
        t * 1e6,
        steps as f64 / kib
    );
    print!("{:<24}", "shape \\ size (us/KiB)");
    for s in SIZES_KIB {
        print!("{:>10}", format!("{s} KiB"));
    }
    println!("{:>10}{:>12}{:>14}", "growth", "vs normal", "steps/KiB");
    let mut worst = (0.0f64, "");
    let mut worst_growth = (0.0f64, "");
    for name in SHAPES {
        print!("{name:<24}");
        let mut per_kib = Vec::new();
        let mut steps_per_kib = Vec::new();
        for s in SIZES_KIB {
            let raw = shape(name, s * 1024);
            let (t, steps) = measure(&raw, &limits);
            let k = raw.len() as f64 / 1024.0;
            per_kib.push(t * 1e6 / k);
            steps_per_kib.push(steps as f64 / k);
            print!("{:>10.2}", t * 1e6 / k);
        }
        let growth = per_kib[per_kib.len() - 1] / per_kib[0];
        let top = per_kib.iter().cloned().fold(0.0, f64::max);
        println!(
            "{:>9.2}x{:>11.1}x{:>8.0}..{:<5.0}",
            growth,
            top / baseline,
            steps_per_kib[0],
            steps_per_kib[steps_per_kib.len() - 1]
        );
        if top > worst.0 {
            worst = (top, name);
        }
        if growth > worst_growth.0 {
            worst_growth = (growth, name);
        }
    }
    println!(
        "\nworst cost: {:.2} us/KiB ({}), {:.1}x the normal bounce; largest growth 16 KiB -> 1 MiB: {:.2}x ({})",
        worst.0,
        worst.1,
        worst.0 / baseline,
        worst_growth.0,
        worst_growth.1
    );
}
