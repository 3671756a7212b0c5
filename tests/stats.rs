//! The stats endpoint over real HTTP, after real mail through Postfix: counters move
//! by exactly what was sent; the exposition passes promtool; the token is enforced;
//! hostile clients get limits; the page renders in headless Chromium; no secret
//! appears anywhere.

mod common;

use common::{Rig, TestMilter, batv_config, http_get, http_raw, postfix_available, temp_dir};
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const TOKEN: &str = "s3cret-token-for-the-stats-endpoint";

fn token_file(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("stats.token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// The value of one sample in the exposition, e.g. `backscatter_inbound_total{kind="bounce"}`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn world(dir: &Path, extra: &str) -> (TestMilter, Rig) {
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n[stats]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{extra}",
        batv_config(dir, "trusted_networks = []"),
        dir.join("state").display(),
        token_file(dir)
    );
    let milter = TestMilter::start(&cfg);
    let rig = Rig::start(&milter.socket(), &[]);
    (milter, rig)
}

#[test]
fn counters_move_by_exactly_what_was_sent() {
    if !postfix_available() {
        return;
    }
    let dir = temp_dir();
    let (milter, rig) = world(dir.path(), "");
    let stats = milter.stats_addr.unwrap();
    let (code, before) = http_get(stats, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    assert_eq!(
        sample(&before, "backscatter_inbound_total{kind=\"bounce\"}"),
        0.0
    );

    // 3 signed outbound, 1 unsigned (exempt: not our domain).
    for i in 0..3 {
        let (ok, t) = rig.swaks_port(
            rig.submission_port,
            &[
                "--from",
                "user@example.org",
                "--to",
                &format!("o{i}@remote.example"),
            ],
        );
        assert!(ok, "{t}");
    }
    let (ok, t) = rig.swaks_port(
        rig.submission_port,
        &["--from", "user@other.example", "--to", "x@remote.example"],
    );
    assert!(ok, "{t}");
    // 2 forged bounces (rejected), 1 ordinary inbound message.
    let data = format!("@{FIX}/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml");
    for _ in 0..2 {
        let (ok, t) = rig.swaks(&["--from", "<>", "--to", "user@example.org", "--data", &data]);
        assert!(!ok && t.contains("550 5.7.1"), "{t}");
    }
    let (ok, t) = rig.swaks(&[
        "--from",
        "friend@remote.example",
        "--to",
        "user@example.org",
    ]);
    assert!(ok, "{t}");
    // 1 bad tag at RCPT.
    let (ok, _) = rig.swaks(&["--from", "<>", "--to", "prvs=1000abcdef=user@example.org"]);
    assert!(!ok);
    rig.wait_delivered(5);

    let (code, m) = http_get(stats, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &m,
            "backscatter_messages_total{direction=\"outbound_signed\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "backscatter_messages_total{direction=\"outbound_unsigned\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "backscatter_outbound_unsigned_total{reason=\"foreign_domain\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "backscatter_messages_total{direction=\"inbound\"}"),
        3.0
    );
    assert_eq!(
        sample(&m, "backscatter_inbound_total{kind=\"bounce\"}"),
        2.0
    );
    assert_eq!(sample(&m, "backscatter_inbound_total{kind=\"other\"}"), 1.0);
    assert_eq!(
        sample(
            &m,
            "backscatter_verdicts_total{action=\"reject\",mode=\"enforce\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "backscatter_verdict_reasons_total{reason=\"foreign_original\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&m, "backscatter_bounce_status_total{class=\"5.1.x\"}"),
        2.0
    );
    assert!(
        sample(&m, "backscatter_tags_total{result=\"bad_mac\"}")
            + sample(&m, "backscatter_tags_total{result=\"expired\"}")
            == 1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "backscatter_tags_total{result=\"missing\"}"),
        2.0
    );
    assert_eq!(sample(&m, "backscatter_ledger_entries"), 3.0);
    assert_eq!(sample(&m, "backscatter_processing_seconds_count"), 7.0);
    assert!(m.contains("backscatter_build_info{version=\""), "{m}");

    let (code, s) = http_get(stats, "/stats", Some(TOKEN));
    assert_eq!(code, 200);
    let j: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(j["mode"], "enforce");
    assert_eq!(j["thresholds"]["reject"], 10);
    assert_eq!(j["messages"]["outbound_signed"], 3);
    assert_eq!(j["decisions"]["reject"], 2);
    assert_eq!(j["top_rejected_sources"]["ips"][0]["source"], "127.0.0.1");
    assert_eq!(j["top_rejected_sources"]["ips"][0]["count"], 2);
    assert_eq!(
        j["top_rejected_sources"]["reporting_mtas"][0]["source"],
        "smtpgw.example.jp"
    );
    assert_eq!(j["ledger"]["entries"], 3);
    assert!(j["uptime_seconds"].as_u64().is_some());

    // The exposition passes an independent parser: promtool from Debian's prometheus.
    if Path::new("/usr/bin/promtool").exists() {
        let mut c = Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(m.replace("# EOF\n", "").as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        let text = common::transcript(&out);
        // promtool parses Prometheus' classic text format; our exposition is
        // OpenMetrics, whose counters carry HELP on the family name (`x`) while the
        // sample is `x_total`: promtool's linter then says "x_total no help text".
        // That, and only that, is tolerated: any parse error or other lint fails.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let family = line
                .strip_suffix("_total no help text")
                .unwrap_or_else(|| panic!("promtool: {text}"));
            assert!(m.contains(&format!("# HELP {family} ")), "promtool: {line}");
        }
    } else {
        assert!(
            std::env::var("BACKSCATTER_REQUIRE_POSTFIX").is_err(),
            "promtool missing"
        );
        eprintln!("SKIPPED promtool check: apt-get install prometheus");
    }

    // Health: 200 while the milter accepts (503 without: its own test below).
    assert_eq!(http_get(stats, "/healthz", Some(TOKEN)).0, 200);
    assert_eq!(http_get(stats, "/nope", Some(TOKEN)).0, 404);
}

#[test]
fn token_limits_and_slow_clients() {
    let dir = temp_dir();
    let cfg = format!(
        "[stats]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token_file(dir.path())
    );
    let milter = TestMilter::start(&cfg);
    let stats = milter.stats_addr.unwrap();
    assert_eq!(http_get(stats, "/metrics", None).0, 401);
    assert_eq!(
        http_get(stats, "/metrics", Some("wrong-token-wrong-token")).0,
        401
    );
    assert_eq!(http_get(stats, "/", None).0, 401);
    assert_eq!(http_get(stats, "/metrics", Some(TOKEN)).0, 200);
    // A request body is refused; so are huge headers.
    let (code, _) = http_raw(
        stats,
        &format!(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5\r\n\r\nhello"
        ),
    );
    assert_eq!(code, 405);
    let (code, _) = http_raw(
        stats,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5\r\n\r\nhello"
        ),
    );
    assert_eq!(code, 413);
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let (code, _) = http_raw(stats, &big);
    // 431, or (racing) a reset: the server closes with our unread bytes in its
    // buffer, and the kernel's RST can beat the reply to our read. Either way the
    // request is refused, and the endpoint goes on serving (checked below).
    assert!(code == 431 || code == 0, "oversize headers: {code}");
    // Slow clients (half a request line, then nothing) do not block anyone.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(stats).unwrap();
            use std::io::Write;
            s.write_all(b"GET /met").unwrap();
            s
        })
        .collect();
    let t = std::time::Instant::now();
    assert_eq!(http_get(stats, "/healthz", Some(TOKEN)).0, 200);
    assert!(t.elapsed() < Duration::from_secs(3));
    drop(slow);
    // The milter meanwhile still answers (healthz connects to it).
    drop(milter);
}

#[test]
fn config_refuses_an_open_endpoint_without_a_token() {
    let e = backscatter_milter::config::Config::parse("[stats]\nlisten = \"0.0.0.0:8895\"\n", "m")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "m:2: stats.listen: a non-loopback address needs token_file (or allow_unauthenticated = true)"
    );
    assert!(
        backscatter_milter::config::Config::parse(
            "[stats]\nlisten = \"0.0.0.0:8895\"\nallow_unauthenticated = true\n",
            "m"
        )
        .is_ok()
    );
}

/// The page, rendered by headless Chromium: DOM has the numbers and the chart;
/// a screenshot is taken.
#[test]
fn page_renders_in_headless_chromium() {
    if !common::chromium_available() || !postfix_available() {
        return;
    }
    let chromium = Path::new(common::CHROMIUM);
    let dir = temp_dir();
    let cfg = format!(
        "{}\n[ledger]\nstate_dir = \"{}\"\n[verdict]\nmode = \"enforce\"\n[stats]\nlisten = \"127.0.0.1:0\"\n",
        batv_config(dir.path(), "trusted_networks = []"),
        dir.path().join("state").display()
    );
    let milter = TestMilter::start(&cfg);
    let rig = Rig::start(&milter.socket(), &[]);
    let data = format!("@{FIX}/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml");
    for _ in 0..3 {
        let (ok, _) = rig.swaks(&["--from", "<>", "--to", "user@example.org", "--data", &data]);
        assert!(!ok);
    }
    let url = format!("http://{}/", milter.stats_addr.unwrap());
    let profile = dir.path().join("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ];
    let out = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<svg id=\"chart\""), "{dom}");
    assert!(
        dom.contains("class=\"stopped\""),
        "the chart has a stopped bar: {dom}"
    );
    assert!(dom.contains("data-decision=\"reject\">3<"), "{dom}");
    assert!(dom.contains("data-metric=\"bounces\">3<"), "{dom}");
    let shot = dir.path().join("page.png");
    let out = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=900,900", &url])
        .output()
        .unwrap();
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", common::transcript(&out)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot, {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("BACKSCATTER_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// Every metric the shipped Grafana dashboard queries exists in the exposition.
#[test]
fn grafana_dashboard_uses_real_metrics() {
    use backscatter_milter::{Counters, ledger::FileLedger, stats::Stats};
    use std::sync::Arc;
    let ledger: Arc<dyn backscatter_milter::ledger::Ledger> = Arc::new(FileLedger::memory(10, 10));
    let s = Stats::new(Arc::new(Counters::default()), Some(ledger));
    s.outbound(None);
    s.outbound(Some("srs"));
    s.tag("valid");
    s.processing_time(0.001);
    let v = backscatter_milter::verdict::decide(
        &backscatter_milter::verdict::Evidence {
            kind: backscatter_milter::dsn::Kind::Bounce,
            untagged: true,
            signing_mature: true,
            original_present: true,
            ..Default::default()
        },
        &Default::default(),
    );
    s.inbound(
        backscatter_milter::dsn::Kind::Bounce,
        &v,
        [backscatter_milter::dsn::Status::new(5, 1, 1)].into_iter(),
        None,
        None,
    );
    let text = s.metrics_text();
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/backscatter-milter.json"
    ))
    .unwrap();
    let re = regex::Regex::new(r"backscatter_[a-z_]+").unwrap();
    let mut n = 0;
    for m in re.find_iter(&dash) {
        let name = m.as_str();
        if name == "backscatter_milter" {
            continue; // the dashboard's title and uid
        }
        n += 1;
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name)),
            "{name} is not exported:\n{text}"
        );
    }
    assert!(n >= 12, "{n}");
}

/// /healthz says 503 when nothing accepts on the milter socket.
#[test]
fn healthz_is_503_without_a_milter() {
    use backscatter_milter::{
        Counters, Runtime, SharedRuntime,
        config::{Config, SocketSpec},
        http,
    };
    use std::sync::Arc;
    let rt = Runtime::load(Config::default(), Arc::new(Counters::default())).unwrap();
    let shared = SharedRuntime::new(rt);
    let dead = common::free_port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = runtime.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let endpoint = http::Endpoint {
            runtime: shared,
            milter: SocketSpec::Inet(format!("127.0.0.1:{dead}").parse().unwrap()),
            token: None,
        };
        tokio::spawn(http::serve(l, endpoint, async {
            let _ = stopped.await;
        }));
        addr
    });
    let (code, body) = http_get(addr, "/healthz", None);
    assert_eq!(
        (code, body.as_str()),
        (503, "milter socket not accepting\n")
    );
    assert_eq!(
        http_get(addr, "/metrics", None).0,
        200,
        "no token configured: open"
    );
    let _ = stop.send(());
}
