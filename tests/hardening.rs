//! Issue 10, the analysis side: the end of message runs off the async workers,
//! within a time budget, and a panic there costs one message only.

mod common;

use common::{Rig, TestMilter, postfix_available};
use std::sync::atomic::Ordering;

/// A panic in the end-of-message analysis (on its blocking thread) tempfails that
/// message; the next messages on the same milter pass.
#[test]
fn panic_at_end_of_message_tempfails_only_that_message() {
    if !postfix_available() {
        return;
    }
    let _ = backscatter_milter::milter::PANIC_AT_EOM_FROM.set("boom@example.org".into());
    let milter = TestMilter::start("[log]\nlevel = \"info\"\n");
    let rig = Rig::start(&milter.socket(), &[]);
    let (ok, t) = rig.swaks(&["--from", "boom@example.org", "--to", "p@remote.example"]);
    assert!(!ok && t.contains("451 4.7.1"), "{t}");
    for i in 0..3 {
        let (ok, t) = rig.swaks(&[
            "--from",
            "a@example.org",
            "--to",
            &format!("ok{i}@remote.example"),
        ]);
        assert!(ok, "{t}");
    }
    assert_eq!(rig.wait_delivered(3).len(), 3);
    let rt = milter.shared.current();
    assert_eq!(rt.counters.errors.load(Ordering::Relaxed), 1);
    assert_eq!(rt.counters.tempfails.load(Ordering::Relaxed), 1);
}

/// A message whose analysis passes `analysis.time_budget_ms` is still decided (and
/// delivered, in observe mode), and counted in the budget metric.
#[test]
fn analysis_over_budget_is_decided_and_counted() {
    if !postfix_available() {
        return;
    }
    let milter = TestMilter::start(
        "[analysis]\ntime_budget_ms = 1\nmax_text = 1048576\n[batv]\ntrusted_networks = []\n",
    );
    let rig = Rig::start(&milter.socket(), &[]);
    // A null-sender "bounce" whose text is 100 KiB of header-like lines.
    let mut body = String::from("This is the mail system at host mx.remote.example.\n\n");
    while body.len() < 100 * 1024 {
        body.push_str("x-a: b\n> Received: from x\n  user unknown <a@remote.example>\n");
    }
    let (ok, t) = rig.swaks(&[
        "--from",
        "<>",
        "--to",
        "alice@example.org",
        "--header",
        "Subject: Undelivered Mail Returned to Sender",
        "--body",
        &body,
    ]);
    assert!(ok, "{}", &t[..t.len().min(2000)]);
    let got = rig.wait_delivered(1);
    assert!(!got[0].header("X-Backscatter").is_empty());
    let rt = milter.shared.current();
    assert!(rt.counters.analysis_over_budget.load(Ordering::Relaxed) >= 1);
    let metrics = rt.stats.metrics_text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("backscatter_analysis_budget_exceeded_total "))
        .unwrap_or_else(|| panic!("no budget metric in:\n{metrics}"));
    assert_ne!(line, "backscatter_analysis_budget_exceeded_total 0");
}

/// Absurd caps are refused at check time, by table, key and line.
#[test]
fn absurd_limits_are_refused() {
    use backscatter_milter::config::Config;
    for (text, key) in [
        ("[analysis]\nmax_text = 1000000000\n", "analysis.max_text"),
        (
            "[analysis]\nmax_bytes = 1099511627776\n",
            "analysis.max_bytes",
        ),
        (
            "[analysis]\nmax_recipients = 1000000\n",
            "analysis.max_recipients",
        ),
        (
            "[analysis]\ntime_budget_ms = 0\n",
            "analysis.time_budget_ms",
        ),
        ("[analysis]\nconcurrency = 100000\n", "analysis.concurrency"),
        (
            "[limits]\nmax_body_bytes = 1099511627776\n",
            "limits.max_body_bytes",
        ),
    ] {
        let e = Config::parse(text, "m.toml").expect_err(text).to_string();
        assert!(e.starts_with(&format!("m.toml:2: {key}: must be")), "{e}");
    }
    let c = Config::parse(
        "[analysis]\ntime_budget_ms = 100\nconcurrency = 3\n",
        "m.toml",
    )
    .unwrap();
    assert_eq!(
        c.analysis.time_budget,
        std::time::Duration::from_millis(100)
    );
    assert_eq!(c.analysis.concurrency, 3);
}

/// Real mail never reaches the analysis time budget: every message in
/// tests/fixtures (and ../shared/corpus, when present) is analysed within the
/// default `analysis.time_budget_ms` (in a release build the slowest, a 3 MB
/// message, takes about 20 ms of the 250).
#[test]
fn real_mail_never_hits_the_time_budget() {
    use backscatter_milter::dsn::{self, Limits, budget};
    use std::{path::Path, time::Instant};
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if !p
                .extension()
                .is_some_and(|x| x == "tsv" || x == "md" || x == "txt")
                && p.file_name().is_none_or(|n| n != "LICENSE")
            {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("tests/fixtures"), &mut files);
    walk(&root.join("../shared/corpus"), &mut files);
    assert!(files.len() > 150, "{} files", files.len());
    let limits = Limits::default();
    let (mut slowest, mut slowest_file, mut most_steps) = (0.0f64, String::new(), 0u64);
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let t = Instant::now();
        let (_, usage) = budget::run(Some(t + limits.time_budget), || {
            dsn::analyze(&raw, None, &limits)
        });
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(!usage.exceeded, "{} hit the time budget", f.display());
        most_steps = most_steps.max(usage.steps);
        if ms > slowest {
            slowest = ms;
            slowest_file = f.display().to_string();
        }
    }
    println!(
        "{} messages; slowest {slowest:.2} ms ({slowest_file}); most steps {most_steps}; budget {} ms",
        files.len(),
        limits.time_budget.as_millis()
    );
}
